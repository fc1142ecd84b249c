/*
** generator.c -- renders a kernel spec into CUDA C++ source. Owns a lua_State
** per call, loads the template engine (gen/template.lua) and the templates
** (templates/NAME.lt), both embedded at build time; SFA_TEMPLATE_DIR names a
** directory whose files take their place during development.
**
** Every Lua call runs under lua_pcall: the whole render is one protected C
** function, so a Lua error never longjmps through C frames that own memory.
*/
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "gen/gen_internal.h"

const struct sfa_embedded_file *sfa__embedded_find(const char *name) {
  for (const struct sfa_embedded_file *f = sfa__embedded_files; f->name; f++)
    if (strcmp(f->name, name) == 0) return f;
  return NULL;
}

/* What the protected render function needs and returns. */
typedef struct render_job {
  const sfa__template *extra;
  const char *dir;                /* SFA_TEMPLATE_DIR or NULL */
  const char *entry;
  const sfa_kernel_spec *spec;
} render_job;

/* Pushes the contents of dir/name, or nil and a message. Runs inside Lua: the
** buffer is a userdata (Lua owns it) allocated before the file is opened, so no
** Lua call, which might raise, happens while the FILE is open. */
static int push_file(lua_State *L, const char *dir, const char *name) {
  const char *path = lua_pushfstring(L, "%s/%s", dir, name);
  struct stat sb;
  int found = stat(path, &sb) == 0;
  if (!found || !S_ISREG(sb.st_mode)) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, found ? "not a regular file" : strerror(errno));
    return 2;
  }
  size_t len = (size_t)sb.st_size;
  char *buf = lua_newuserdatauv(L, len + 1, 0);
  FILE *f = fopen(path, "rb");
  int e = errno;
  size_t got = f ? fread(buf, 1, len, f) : 0;
  int bad = !f || ferror(f);
  if (f) fclose(f);
  if (bad) {
    lua_pushnil(L);
    lua_pushfstring(L, "%s: %s", path, f ? "read error" : strerror(e));
    return 2;
  }
  lua_pushlstring(L, buf, got);
  return 1;
}

/* loader(name) for the engine: upvalue 1 = render_job light userdata. */
static int template_loader(lua_State *L) {
  const render_job *job = lua_touserdata(L, lua_upvalueindex(1));
  const char *name = luaL_checkstring(L, 1);
  if (job->extra)
    for (const sfa__template *t = job->extra; t->name; t++)
      if (strcmp(t->name, name) == 0) {
        lua_pushstring(L, t->text);
        return 1;
      }
  if (job->dir) return push_file(L, job->dir, name);
  const struct sfa_embedded_file *f = sfa__embedded_find(name);
  if (!f) {
    lua_pushnil(L);
    lua_pushfstring(L, "no embedded template '%s'", name);
    return 2;
  }
  lua_pushlstring(L, (const char *)f->data, f->size);
  return 1;
}

static void set_int(lua_State *L, const char *k, lua_Integer v) {
  lua_pushinteger(L, v);
  lua_setfield(L, -2, k);
}
static void set_bool(lua_State *L, const char *k, int v) {
  lua_pushboolean(L, v);
  lua_setfield(L, -2, k);
}
static void set_str(lua_State *L, const char *k, const char *v) {
  if (!v) return;
  lua_pushstring(L, v);
  lua_setfield(L, -2, k);
}

/* Pushes the Lua table `spec` that templates see. */
static void push_spec(lua_State *L, const sfa_kernel_spec *s) {
  char name[SFA__NAME_MAX];
  lua_createtable(L, 0, 20);
  if (!s) return;
  set_str(L, "pass", sfa__pass_name(s->pass));
  set_str(L, "mode", sfa__mode_name(s->mode));
  set_str(L, "dtype", sfa__dtype_name(s->dtype));
  set_int(L, "head_dim", s->head_dim);
  set_int(L, "block_m", s->block_m);
  set_int(L, "block_n", s->block_n);
  set_int(L, "num_warps", s->num_warps);
  set_int(L, "num_stages", s->num_stages);
  set_int(L, "arch", s->arch);
  set_bool(L, "causal", (s->flags & SFA_FEAT_CAUSAL) != 0);
  set_bool(L, "bias", (s->flags & SFA_FEAT_BIAS) != 0);
  set_bool(L, "mask", (s->flags & SFA_FEAT_MASK) != 0);
  set_bool(L, "deterministic", (s->flags & SFA_FEAT_DETERMINISTIC) != 0);
  set_bool(L, "wgmma", (s->flags & SFA_FEAT_WGMMA) != 0);
  set_bool(L, "plan", sfa__bwd_plan(s));
  set_int(L, "plan_ints", SFA__BWD_PLAN_INTS);
  if (sfa_spec_name(s, name, sizeof name) == SFA_OK) set_str(L, "name", name);
  set_int(L, "smem_bytes", (lua_Integer)sfa_spec_smem_bytes(s));
  set_int(L, "threads", 32 * s->num_warps);
}

/* Loads the engine module: SFA_TEMPLATE_DIR/template.lua if it exists, else
** the embedded copy. Leaves the module table on the stack. */
static void push_engine_module(lua_State *L, const render_job *job) {
  int loaded = 0;
  if (job->dir) {
    lua_pushfstring(L, "%s/template.lua", job->dir);
    FILE *f = fopen(lua_tostring(L, -1), "rb");
    if (f) {
      fclose(f);
      if (luaL_loadfilex(L, lua_tostring(L, -1), "t") != LUA_OK) lua_error(L);
      loaded = 1;
    }
    lua_remove(L, loaded ? -2 : -1);
  }
  if (!loaded) {
    const struct sfa_embedded_file *f = sfa__embedded_find("template.lua");
    if (!f) luaL_error(L, "template.lua is not embedded in this build");
    if (luaL_loadbufferx(L, (const char *)f->data, f->size, "@template.lua", "t") != LUA_OK)
      lua_error(L);
  }
  lua_call(L, 0, 1);
  if (!lua_istable(L, -1)) luaL_error(L, "template.lua did not return a module table");
}

/* The protected body: arg 1 = render_job. Returns the rendered string. */
static int render_main(lua_State *L) {
  const render_job *job = lua_touserdata(L, 1);
  push_engine_module(L, job);                   /* M */
  lua_getfield(L, -1, "new");                   /* M, M.new */
  lua_pushlightuserdata(L, (void *)job);
  lua_pushcclosure(L, template_loader, 1);
  lua_call(L, 1, 1);                            /* M, eng */
  lua_getfield(L, -1, "render");                /* M, eng, render */
  lua_pushvalue(L, -2);                         /* self */
  lua_pushstring(L, job->entry);
  lua_createtable(L, 0, 1);                     /* vars */
  push_spec(L, job->spec);
  lua_setfield(L, -2, "spec");
  lua_call(L, 3, 1);
  if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "render did not return a string");
  return 1;
}

sfa_status sfa__render(const sfa__template *extra, const char *entry,
                       const sfa_kernel_spec *spec, char **out, char *err, size_t errlen) {
  if (!out) return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "source: NULL");
  *out = NULL;
  if (!entry) return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "entry: NULL");

  render_job job = {extra, NULL, entry, spec};
  const char *dir = getenv("SFA_TEMPLATE_DIR");
  if (dir && *dir) job.dir = dir;

  lua_State *L = luaL_newstate();
  if (!L) return sfa__fail(err, errlen, SFA_ERR_OUT_OF_MEMORY, "cannot create a Lua state");
  luaL_openlibs(L);
  lua_pushcfunction(L, render_main);
  lua_pushlightuserdata(L, &job);
  sfa_status st = SFA_OK;
  int rc = lua_pcall(L, 1, 1, 0);
  if (rc != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    if (rc == LUA_ERRMEM) {
      st = sfa__fail(err, errlen, SFA_ERR_OUT_OF_MEMORY, "template error: out of memory");
    } else {
      st = sfa__fail(err, errlen, SFA_ERR_GENERATOR, "template error: %s",
                     msg ? msg : "(error object is not a string)");
    }
  } else {
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    *out = malloc(len + 1);
    if (!*out) {
      st = sfa__fail(err, errlen, SFA_ERR_OUT_OF_MEMORY, "no memory for %zu bytes of source",
                     len);
    } else {
      memcpy(*out, s, len);
      (*out)[len] = '\0';
    }
  }
  lua_close(L);
  return st;
}

sfa_status sfa_generate(const sfa_kernel_spec *spec, char **source, char *err, size_t errlen) {
  if (!source) return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "source: NULL");
  *source = NULL;
  sfa_status st = sfa_spec_validate(spec, err, errlen);
  if (st != SFA_OK) return st;
  return sfa__render(NULL, "kernel.lt", spec, source, err, errlen);
}
