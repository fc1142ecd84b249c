/*
** generator.c -- renders a kernel spec into CUDA C++ source. Owns a lua_State
** per call, loads the template engine (gen/template.lua) and the templates
** (templates/NAME.lt), both embedded at build time; SFA_TEMPLATE_DIR names a
** directory whose files take their place during development. Hands the
** templates the tables `spec` (the variant's fields), `V` (its descriptor,
** gen/variant.c: block, tile geometry, shared-memory layout, grid, plan entry,
** utility constants; templates compute none of it again) and `ABI` (the
** kernel parameter blocks and shared constants, gen/abi.c).
**
** The Lua state is a sandbox (gen/sandbox.c), since every process that links
** libsfa reads SFA_TEMPLATE_DIR (templates are data, not code the user chose
** to run). Here: a template from the directory is a regular file, never a
** symlink, of at most SFA__TEMPLATE_MAX_FILE bytes, and the rendered text may
** not pass the output limit nor hold a NUL byte, which would end the C string
** that sfa_generate returns (and every strlen after it).
**
** Every Lua call runs under lua_pcall: the whole render is one protected C
** function, so a Lua error never longjmps through C frames that own memory.
*/
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>

#include "gen/flag.h"
#include "gen/gen_internal.h"
#include "gen/sandbox.h"
#include "gen/variant.h"

/* The engine's chunk names: embedded, and from SFA_TEMPLATE_DIR. */
#define ENGINE_EMBEDDED "@template.lua"
#define ENGINE_FROM_DIR "@SFA_TEMPLATE_DIR/template.lua"

const struct sfa_embedded_file *sfa__embedded_find(const char *name) {
  for (const struct sfa_embedded_file *f = sfa__embedded_files; f->name; f++)
    if (strcmp(f->name, name) == 0) return f;
  return NULL;
}

/* ------------------------------------------------------------ templates */

/* What the protected render function needs. */
typedef struct render_job {
  const sfa__template *extra;
  const char *dir;                /* SFA_TEMPLATE_DIR or NULL */
  const char *entry;
  const sfa_kernel_spec *spec;
  const char *text_name;          /* sfa__render_string's template, or NULL */
  const char *text;
  size_t text_len;
  const sfa__abi_struct *abi;     /* sfa__render_with_abi's structs, or NULL */
  size_t nabi;
  sfa__sandbox sb;
} render_job;

/* Pushes nil and a message; returns 2. */
static int push_fail(lua_State *L, const char *fmt, ...) {
  va_list ap;
  lua_pushnil(L);
  va_start(ap, fmt);
  lua_pushvfstring(L, fmt, ap);
  va_end(ap);
  return 2;
}

/* Pushes the contents of dir/name, or nil and a message: only a regular file
** (not a symbolic link) of at most SFA__TEMPLATE_MAX_FILE bytes. Runs inside
** Lua: the buffer is a userdata allocated before the file is opened, so no Lua
** call, which might raise, happens while it is open. */
static int push_file(lua_State *L, const char *dir, const char *name) {
  const char *path = lua_pushfstring(L, "%s/%s", dir, name);
  struct stat sb;
  if (lstat(path, &sb) != 0)
    return push_fail(L, "template '%s' not found: %s: %s", name, path, strerror(errno));
  if (S_ISLNK(sb.st_mode))
    return push_fail(L, "template '%s': %s is a symbolic link; templates are regular files in "
                        "the template directory", name, path);
  if (!S_ISREG(sb.st_mode))
    return push_fail(L, "template '%s': %s is not a regular file", name, path);
  if ((unsigned long long)sb.st_size > SFA__TEMPLATE_MAX_FILE)
    return push_fail(L, "template '%s': %s is larger than %I bytes", name, path,
                     (lua_Integer)SFA__TEMPLATE_MAX_FILE);
  size_t len = (size_t)sb.st_size, got = 0;
  char *buf = lua_newuserdatauv(L, len + 1, 0);
  int fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC), e = 0;
  if (fd < 0) return push_fail(L, "template '%s': %s: %s", name, path, strerror(errno));
  struct stat fsb;
  int regular = fstat(fd, &fsb) == 0 && S_ISREG(fsb.st_mode);
  while (regular && got < len) {
    ssize_t r = read(fd, buf + got, len - got);
    if (r < 0 && errno == EINTR) continue;
    if (r < 0) e = errno;
    if (r <= 0) break;
    got += (size_t)r;
  }
  close(fd);
  if (!regular) return push_fail(L, "template '%s': %s is not a regular file", name, path);
  if (e) return push_fail(L, "template '%s': %s: %s", name, path, strerror(e));
  lua_pushlstring(L, buf, got);
  return 1;
}

/* loader(name) for the engine: upvalue 1 = render_job light userdata. */
static int template_loader(lua_State *L) {
  const render_job *job = lua_touserdata(L, lua_upvalueindex(1));
  size_t len;
  const char *name = luaL_checklstring(L, 1, &len);
  const char *why = sfa__template_name_problem(name, len);
  if (why) return push_fail(L, "template name '%s' is not allowed: %s", name, why);
  if (job->text_name && strcmp(job->text_name, name) == 0) {
    lua_pushlstring(L, job->text ? job->text : "", job->text_len);
    return 1;
  }
  if (job->extra)
    for (const sfa__template *t = job->extra; t->name; t++)
      if (strcmp(t->name, name) == 0) {
        lua_pushstring(L, t->text);
        return 1;
      }
  if (job->dir) return push_file(L, job->dir, name);
  const struct sfa_embedded_file *f = sfa__embedded_find(name);
  if (!f) return push_fail(L, "template '%s' not found among the embedded templates", name);
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

/* Pushes the Lua table `spec` that templates see: the spec's fields, its
** name, and smem_bytes and threads (the same as V.smem.bytes and V.threads). */
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
  size_t nf;
  const sfa__flag *ft = sfa__flag_table(&nf);
  for (size_t i = 0; i < nf; i++) set_bool(L, ft[i].lua, (s->flags & ft[i].bit) != 0);
  set_bool(L, "wgmma", sfa__spec_is_wgmma(s));
  set_bool(L, "ws", sfa__spec_is_ws(s));
  if (sfa_spec_name(s, name, sizeof name) == SFA_OK) set_str(L, "name", name);
  set_int(L, "smem_bytes", (lua_Integer)sfa_spec_smem_bytes(s));
  set_int(L, "threads", 32 * s->num_warps);
}

static void set_size(lua_State *L, const char *k, size_t v) { set_int(L, k, (lua_Integer)v); }

/* Pushes the grid rule g as a table (see push_variant). */
static void push_grid(lua_State *L, const sfa__grid *g) {
  lua_createtable(L, 0, 7);
  set_str(L, "rule", sfa__grid_rule_name(g->rule));
  lua_pushboolean(L, g->varlen);
  lua_setfield(L, -2, "varlen");
  set_int(L, "tile", g->tile);
  set_int(L, "split", g->split);
  set_int(L, "per_block", g->per_block);
  set_int(L, "max_x", (lua_Integer)g->max_x);
  set_str(L, "item", g->item);
}

/* Pushes the Lua table `V` that templates see: the variant descriptor of s
** (gen/variant.h), empty where s is NULL or does not validate. Every field of
** sfa__variant under its own name (0 where it does not apply), except:
**   V.smem = {bytes =, slack =, base_align =, regions = {{name =, offset =,
**             size =, align =}, ... in order}, [name] = the same region}
**   V.grid = {rule = "query_tiles" | "key_tiles" | "key_tile_items" | "decode" | "items",
**             varlen =, tile =, split =, per_block =, max_x =, item =}
**   V.plan = {suffix =, warps =, threads =, min_blocks =, smem_bytes =, grid =}
**            or nil where the variant has no plan kernel
**   V.util = the sfa__util_geom fields */
static void push_variant(lua_State *L, const sfa_kernel_spec *s) {
  sfa__variant v;
  lua_createtable(L, 0, 32);
  if (!s || sfa__variant_describe(s, &v, NULL, 0) != SFA_OK) return;
  set_str(L, "pass", sfa__pass_name(s->pass));
  set_bool(L, "attention", v.attention);
  set_bool(L, "wgmma", v.wgmma);
  set_bool(L, "ws", v.ws);
  set_int(L, "warps", v.warps);
  set_int(L, "threads", v.threads);
  set_int(L, "min_blocks", v.min_blocks);
  set_int(L, "row_tiles", v.row_tiles);
  set_int(L, "warpgroups", v.warpgroups);
  set_int(L, "row_bytes", v.row_bytes);
  set_int(L, "row_chunks", v.row_chunks);
  set_int(L, "ds_row_bytes", v.ds_row_bytes);
  set_int(L, "cols", v.cols);
  set_int(L, "nsplit", v.nsplit);
  set_int(L, "dq_units", v.dq_units);
  set_int(L, "dq_units_per_warp", v.dq_units_per_warp);
  set_int(L, "dq_stage_warp", v.dq_stage_warp);
  set_bool(L, "dq_tma", v.dq_tma);
  set_bool(L, "dp_early", v.dp_early);
  set_int(L, "lse_rows", v.lse_rows);
  set_int(L, "qmeta_ints", v.qmeta_ints);
  set_int(L, "acc_registers", v.acc_registers);
  set_int(L, "consumers", v.consumers);
  set_int(L, "producer_regs", v.producer_regs);
  set_int(L, "consumer_regs", v.consumer_regs);
  set_int(L, "box_cols", v.box_cols);
  set_int(L, "plan_ints", v.plan_ints);
  set_int(L, "keys_per_warp", v.keys_per_warp);
  set_size(L, "comb_offset", v.comb_offset);
  set_size(L, "comb_bytes", v.comb_bytes);
  set_size(L, "comb_room", v.comb_room);

  lua_createtable(L, 0, 4 + v.nregions);
  set_size(L, "bytes", v.smem_bytes);
  set_size(L, "slack", v.smem_slack);
  set_size(L, "base_align", v.smem_base_align);
  lua_createtable(L, v.nregions, 0);
  for (int i = 0; i < v.nregions; i++) {
    const sfa__smem_region *r = &v.regions[i];
    lua_createtable(L, 0, 4);
    set_str(L, "name", r->name);
    set_size(L, "offset", r->offset);
    set_size(L, "size", r->size);
    set_size(L, "align", r->align);
    lua_pushvalue(L, -1);
    lua_setfield(L, -4, r->name); /* smem[name] */
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_setfield(L, -2, "regions");
  lua_setfield(L, -2, "smem");

  push_grid(L, &v.grid);
  lua_setfield(L, -2, "grid");
  if (v.has_plan) {
    lua_createtable(L, 0, 6);
    set_str(L, "suffix", v.plan.suffix);
    set_int(L, "warps", v.plan.warps);
    set_int(L, "threads", v.plan.threads);
    set_int(L, "min_blocks", v.plan.min_blocks);
    set_size(L, "smem_bytes", v.plan.smem_bytes);
    push_grid(L, &v.plan.grid);
    lua_setfield(L, -2, "grid");
    lua_setfield(L, -2, "plan");
  }

  const sfa__util_geom *u = &v.util;
  lua_createtable(L, 0, 12);
  set_int(L, "row_threads", u->row_threads);
  set_int(L, "rows_per_block", u->rows_per_block);
  set_int(L, "chunk_elems", u->chunk_elems);
  set_int(L, "unroll", u->unroll);
  set_int(L, "tile_vectors", u->tile_vectors);
  set_int(L, "hist_bins", u->hist_bins);
  set_int(L, "hist_copies", u->hist_copies);
  set_size(L, "hist_bytes", u->hist_bytes);
  set_int(L, "small_threads", u->small_threads);
  set_int(L, "small_below", u->small_below);
  set_size(L, "smem_max", u->smem_max);
  set_int(L, "min_warp_items", u->min_warp_items);
  lua_setfield(L, -2, "util");
}

/* Pushes the field list of st (see push_abi). */
static void push_abi_struct(lua_State *L, const sfa__abi_struct *st) {
  lua_createtable(L, 0, 5);
  set_str(L, "name", st->name);
  set_str(L, "c_name", st->c_name);
  set_int(L, "size", (lua_Integer)st->size);
  set_int(L, "align", (lua_Integer)st->align);
  lua_createtable(L, (int)st->nfields, 0);
  for (size_t i = 0; i < st->nfields; i++) {
    const sfa__abi_field *f = &st->fields[i];
    lua_createtable(L, 0, 8);
    set_str(L, "name", f->name);
    set_str(L, "type", f->type);
    set_str(L, "ctype", f->ctype);
    set_str(L, "doc", f->doc);
    set_int(L, "offset", (lua_Integer)f->offset);
    set_int(L, "size", (lua_Integer)f->size);
    int varlen = 0, cols = 0;
    for (size_t k = 0; k < sfa__abi_nvarlen; k++)
      varlen |= strcmp(f->name, sfa__abi_varlen_fields[k]) == 0;
    for (size_t k = 0; k < sfa__abi_nvarlen_cols; k++)
      cols |= strcmp(f->name, sfa__abi_varlen_cols_fields[k]) == 0;
    lua_pushboolean(L, varlen);
    lua_setfield(L, -2, "varlen");
    lua_pushboolean(L, cols);
    lua_setfield(L, -2, "varlen_cols");
    lua_rawseti(L, -2, (lua_Integer)i + 1);
  }
  lua_setfield(L, -2, "fields");
}

/* Pushes the Lua table `ABI` that templates see (gen/gen_internal.h): every
** struct of sfa__abi_structs, then job's extra ones, and the constants. */
static void push_abi(lua_State *L, const render_job *job) {
  lua_createtable(L, 0, 2);
  lua_createtable(L, 0, (int)(sfa__abi_nstructs + job->nabi));
  for (size_t i = 0; i < sfa__abi_nstructs + job->nabi; i++) {
    const sfa__abi_struct *st =
        i < sfa__abi_nstructs ? &sfa__abi_structs[i] : &job->abi[i - sfa__abi_nstructs];
    push_abi_struct(L, st);
    lua_setfield(L, -2, st->name);
  }
  lua_setfield(L, -2, "structs");
  lua_createtable(L, 0, (int)sfa__abi_nconsts);
  for (size_t i = 0; i < sfa__abi_nconsts; i++)
    set_int(L, sfa__abi_consts[i].name, (lua_Integer)sfa__abi_consts[i].value);
  lua_setfield(L, -2, "const");
}

/* Loads the engine module: SFA_TEMPLATE_DIR/template.lua if it exists (read
** as a template is, and run in the same sandbox), else the embedded copy.
** Leaves the module table on the stack. */
static void push_engine_module(lua_State *L, render_job *job) {
  struct stat st;
  const char *src = NULL;
  size_t len = 0;
  if (job->dir) {
    const char *path = lua_pushfstring(L, "%s/template.lua", job->dir);
    int present = lstat(path, &st) == 0;
    lua_pop(L, 1);
    if (present) {
      if (push_file(L, job->dir, "template.lua") != 1) lua_error(L);
      src = lua_tolstring(L, -1, &len);
      job->sb.engine = ENGINE_FROM_DIR;
    }
  }
  if (!src) {
    const struct sfa_embedded_file *f = sfa__embedded_find("template.lua");
    if (!f) luaL_error(L, "template.lua is not embedded in this build");
    src = (const char *)f->data;
    len = f->size;
    job->sb.engine = ENGINE_EMBEDDED;
  }
  if (luaL_loadbufferx(L, src, len, job->sb.engine, "t") != LUA_OK) lua_error(L);
  lua_call(L, 0, 1);
  if (!lua_istable(L, -1)) luaL_error(L, "template.lua did not return a module table");
}

/* The protected body: arg 1 = render_job. Returns the rendered string. */
static int render_main(lua_State *L) {
  render_job *job = lua_touserdata(L, 1);
  sfa__sandbox_open(L);
  push_engine_module(L, job);                   /* M */
  lua_getfield(L, -1, "new");                   /* M, M.new */
  lua_pushlightuserdata(L, (void *)job);
  lua_pushcclosure(L, template_loader, 1);
  lua_createtable(L, 0, 1);                     /* opts */
  lua_pushinteger(L, (lua_Integer)job->sb.lim.output);
  lua_setfield(L, -2, "max_output");
  lua_call(L, 2, 1);                            /* M, eng */
  lua_getfield(L, -1, "render");                /* M, eng, render */
  lua_pushvalue(L, -2);                         /* self */
  lua_pushstring(L, job->entry);
  lua_createtable(L, 0, 3);                     /* vars */
  push_spec(L, job->spec);
  lua_setfield(L, -2, "spec");
  push_variant(L, job->spec);
  lua_setfield(L, -2, "V");
  push_abi(L, job);
  lua_setfield(L, -2, "ABI");
  lua_pushstring(L, SFA_VERSION_STRING), lua_setfield(L, -2, "SFA_VERSION");
  lua_call(L, 3, 1);
  if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "render did not return a string");
  return 1;
}

/* Renders job (entry, lookup) in a fresh sandboxed state under limits. */
static sfa_status render_job_run(render_job *job, const sfa__render_limits *limits, char **out,
                                 char *err, size_t errlen) {
  sfa__sandbox *sb = &job->sb;
  sfa__sandbox_init(sb, limits);
  const char *dir = getenv("SFA_TEMPLATE_DIR");
  if (dir && *dir) job->dir = dir;

  lua_State *L = sfa__sandbox_state(sb);
  if (!L) return sfa__fail(err, errlen, SFA_ERR_OUT_OF_MEMORY, "cannot create a Lua state");
  lua_pushcfunction(L, sfa__sandbox_msgh);
  lua_pushcfunction(L, render_main);
  lua_pushlightuserdata(L, job);
  int rc = lua_pcall(L, 1, 1, 1);
  sfa_status st = sfa__sandbox_result(sb, L, rc, err, errlen);
  if (st == SFA_OK) {
    size_t len;
    const char *s = lua_tolstring(L, -1, &len);
    const char *nul = memchr(s, '\0', len);
    if (len > sb->lim.output) {
      st = sfa__fail(err, errlen, SFA_ERR_GENERATOR,
                     "template error: output larger than %zu bytes", sb->lim.output);
    } else if (nul) {
      st = sfa__fail(err, errlen, SFA_ERR_GENERATOR,
                     "template error: the output holds a NUL byte at offset %zu (a C string "
                     "ends there)", (size_t)(nul - s));
    } else if (!(*out = malloc(len + 1))) {
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

sfa_status sfa__render_with_abi(const sfa__abi_struct *abi, size_t nabi,
                                const sfa__template *extra, const char *entry,
                                const sfa_kernel_spec *spec, char **out, char *err,
                                size_t errlen) {
  if (!out) return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "out: NULL");
  *out = NULL;
  if (!entry) return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "entry: NULL");
  if (!abi && nabi)
    return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "abi: NULL with nabi %zu", nabi);
  render_job job = {.extra = extra, .entry = entry, .spec = spec, .abi = abi, .nabi = nabi};
  return render_job_run(&job, NULL, out, err, errlen);
}

sfa_status sfa__render(const sfa__template *extra, const char *entry,
                       const sfa_kernel_spec *spec, char **out, char *err, size_t errlen) {
  return sfa__render_with_abi(NULL, 0, extra, entry, spec, out, err, errlen);
}

sfa_status sfa__render_string(const char *name, const char *text, size_t len,
                              const sfa_kernel_spec *spec, const sfa__render_limits *limits,
                              char **out, char *err, size_t errlen) {
  if (!out) return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "out: NULL");
  *out = NULL;
  if (!name) return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "name: NULL");
  const char *why = sfa__template_name_problem(name, strlen(name));
  if (why)
    return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "name: '%s' is not allowed: %s",
                     name, why);
  if (!text && len)
    return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "text: NULL with len %zu", len);
  render_job job = {
      .entry = name, .spec = spec, .text_name = name, .text = text, .text_len = len};
  return render_job_run(&job, limits, out, err, errlen);
}

sfa_status sfa_generate(const sfa_kernel_spec *spec, char **source, char *err, size_t errlen) {
  if (!source) return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "source: NULL");
  *source = NULL;
  sfa_status st = sfa_spec_validate(spec, err, errlen);
  if (st != SFA_OK) return st;
  return sfa__render(NULL, "kernel.lt", spec, source, err, errlen);
}
