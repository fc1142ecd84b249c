/*
** generator.c -- renders a kernel spec into CUDA C++ source. Owns a lua_State
** per call, loads the template engine (gen/template.lua) and the templates
** (templates/NAME.lt), both embedded at build time; SFA_TEMPLATE_DIR names a
** directory whose files take their place during development.
**
** The Lua state is a sandbox, since every process that links libsfa reads
** SFA_TEMPLATE_DIR (templates are data, not code the user chose to run):
**  - only the base, string, table and math libraries are opened, without
**    dofile, loadfile, collectgarbage, print, warn and string.dump; load
**    compiles text only (the engine uses it; templates do not see it);
**  - a template is a plain file name (letters, digits, '_', '-', '.', not
**    first) of a regular file in the directory, never a path or a symlink;
**  - a count hook raises after a budget of VM instructions or past a
**    wall-clock limit; library calls that work outside the VM (pattern
**    matching, table.move/insert/remove, load) charge their steps to the same
**    budget first, and string.rep of nothing returns at once;
**  - the allocator caps the Lua heap and the bytes handed out over the render;
**    the engine caps the output and refuses a NUL byte, which would end the C
**    string that sfa_generate returns (and every strlen after it);
**  - pcall cannot catch a limit, and __gc metamethods (which could run past
**    the render, in lua_close) are refused.
** Each limit is SFA_ERR_GENERATOR naming the template file:line where Lua
** knows it; the limits (gen/gen_internal.h) are 20x what real renders use.
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
#include <time.h>
#include <unistd.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "gen/gen_internal.h"

/* VM instructions between two calls of the count hook. */
#define HOOK_EVERY 1000
/* Heap the error handler may use past the cap, to say which limit was hit. */
#define HANDLER_SLACK ((size_t)64 << 10)
/* The engine's chunk names: embedded, and from SFA_TEMPLATE_DIR. */
#define ENGINE_EMBEDDED "@template.lua"
#define ENGINE_FROM_DIR "@SFA_TEMPLATE_DIR/template.lua"

const struct sfa_embedded_file *sfa__embedded_find(const char *name) {
  for (const struct sfa_embedded_file *f = sfa__embedded_files; f->name; f++)
    if (strcmp(f->name, name) == 0) return f;
  return NULL;
}

/* ------------------------------------------------------------ the sandbox */

enum { SPENT_NO, SPENT_INSTRUCTIONS, SPENT_TIME, SPENT_ALLOCATED };

/* The limits and what has been used of them; the allocator's user data, so
** that every C function of the state finds it with lua_getallocf. */
typedef struct sandbox {
  lua_State *L;
  sfa__render_limits lim;
  size_t used;           /* heap bytes in use */
  size_t cap;            /* lim.heap, plus HANDLER_SLACK once the handler runs */
  size_t allocated;      /* bytes handed out so far */
  int heap_hit;          /* an allocation was refused for the cap */
  long long work;        /* instructions run and steps charged */
  int spent;             /* SPENT_*: which limit ran out (then every hook raises) */
  double deadline;       /* CLOCK_MONOTONIC seconds */
  const char *engine;    /* the engine's chunk name, to tell its frames apart */
} sandbox;

static sandbox *sandbox_of(lua_State *L) {
  void *ud = NULL;
  lua_getallocf(L, &ud);
  return ud;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void limit_hook(lua_State *L, lua_Debug *ar);

/* lua_Alloc with the heap cap. Past the allocation limit it lets the
** allocation through but makes the hook run at the next instruction (an
** allocator may not raise; lua_sethook may be called at any time). */
static void *sandbox_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  sandbox *sb = ud;
  if (!ptr) osize = 0;
  if (nsize == 0) {
    free(ptr);
    sb->used -= osize;
    return NULL;
  }
  if (nsize > osize && nsize - osize > sb->cap - sb->used) {
    sb->heap_hit = 1;
    return NULL;
  }
  void *p = realloc(ptr, nsize);
  if (!p) return NULL;
  sb->used = sb->used - osize + nsize;
  sb->allocated += nsize;
  if (sb->allocated > sb->lim.allocated && !sb->spent && sb->L) {
    sb->spent = SPENT_ALLOCATED;
    lua_sethook(sb->L, limit_hook, LUA_MASKCOUNT, 1);
  }
  return p;
}

/* What the limit that ran out was (formatted in C: also used after the
** protected call, where a Lua allocation could not be caught). */
static void spent_text(const sandbox *sb, char *buf, size_t n) {
  if (sb->spent == SPENT_TIME)
    snprintf(buf, n, "time limit of %g seconds exceeded", sb->lim.seconds);
  else if (sb->spent == SPENT_ALLOCATED)
    snprintf(buf, n, "allocated more than %zu bytes of Lua heap in all", sb->lim.allocated);
  else
    snprintf(buf, n, "instruction budget of %lld exceeded", sb->lim.instructions);
}

/* Raises the error of the limit that ran out, at the running function's line. */
static void raise_spent(lua_State *L, lua_Debug *ar) {
  char what[128];
  spent_text(sandbox_of(L), what, sizeof what);
  if (lua_getinfo(L, "Sl", ar) && ar->currentline > 0)
    lua_pushfstring(L, "%s:%d: %s", ar->short_src, ar->currentline, what);
  else
    lua_pushstring(L, what);
  lua_error(L);
}

/* The count hook: HOOK_EVERY more instructions ran. Once a limit has run
** out it raises at every call, so no pcall, __close or loop can go on. */
static void limit_hook(lua_State *L, lua_Debug *ar) {
  sandbox *sb = sandbox_of(L);
  if (!sb->spent) {
    sb->work += HOOK_EVERY;
    if (sb->work > sb->lim.instructions)
      sb->spent = SPENT_INSTRUCTIONS;
    else if (now_s() > sb->deadline)
      sb->spent = SPENT_TIME;
    else
      return;
  }
  raise_spent(L, ar);
}

/* Charges n steps of work done outside the VM before it is done; raises
** (at the caller's line) if they would exceed the budget. */
static void charge(lua_State *L, double n, const char *what) {
  sandbox *sb = sandbox_of(L);
  if (n <= 0) return;
  if (sb->spent) {
    char text[128];
    spent_text(sb, text, sizeof text);
    luaL_error(L, "%s", text);
  }
  if (n > (double)(sb->lim.instructions - sb->work)) {
    sb->spent = SPENT_INSTRUCTIONS;
    luaL_error(L, "%s: %f more steps would exceed the instruction budget of %I", what,
               (lua_Number)n, (lua_Integer)sb->lim.instructions);
  }
  sb->work += (long long)n;
}

/* x^e, saturating at 1e300. */
static double pow_sat(double x, int e) {
  double r = 1;
  while (e-- > 0 && r < 1e300) r *= x;
  return r < 1e300 ? r : 1e300;
}

/* The end of the set that starts at p[i] == '[' (as Lua reads it: a ']' right
** after '[' or '[^' is a member). */
static size_t set_end(const char *p, size_t m, size_t i) {
  i++;
  if (i < m && p[i] == '^') i++;
  do {
    if (i >= m) return m;
    if (p[i] == '%') i++;
    i++;
  } while (i < m && p[i] != ']');
  return i + 1;
}

/* How Lua's matcher can backtrack on pattern p: *k counts what may scan the
** subject once per try (the repetitions *, + and -, %b, back-references),
** *q the optional items '?'. Over-counting is safe, under-counting is not. */
static void pattern_shape(const char *p, size_t m, int *k, int *q) {
  size_t i = m > 0 && p[0] == '^' ? 1 : 0;
  *k = *q = 0;
  while (i < m) {
    int item = 1; /* a single-character class, which a quantifier may follow */
    if (p[i] == '(' || p[i] == ')') {
      i++;
      item = 0;
    } else if (p[i] == '%' && i + 1 < m) {
      char d = p[i + 1];
      if (d == 'b') {
        (*k)++, i += 4, item = 0;
      } else if (d == 'f') {
        i += 2;
        if (i < m && p[i] == '[') i = set_end(p, m, i);
        item = 0;
      } else if (d >= '0' && d <= '9') {
        (*k)++, i += 2, item = 0;
      } else {
        i += 2;
      }
    } else if (p[i] == '[') {
      i = set_end(p, m, i);
    } else {
      i++;
    }
    if (item && i < m) {
      if (p[i] == '*' || p[i] == '+' || p[i] == '-')
        (*k)++, i++;
      else if (p[i] == '?')
        (*q)++, i++;
    }
  }
}

enum { PAT_FIND, PAT_MATCH, PAT_GMATCH, PAT_GSUB };
static const char *const pat_names[] = {"string.find", "string.match", "string.gmatch",
                                        "string.gsub"};

/* string.find/match/gmatch/gsub (upvalue 1 the library's function, 2 which):
** Lua's matcher backtracks without running VM instructions, so its worst
** case -- (r+1)^k * 2^q * (m+1) steps from each of the r+1 starts (one when
** anchored), r the subject bytes from init, m the pattern's -- must fit the
** budget. It is charged, except for a find without repetitions, which is
** charged for the starts it tried. */
static int metered_pattern(lua_State *L) {
  lua_CFunction orig = lua_tocfunction(L, lua_upvalueindex(1));
  int kind = (int)lua_tointeger(L, lua_upvalueindex(2));
  size_t n, m;
  luaL_checklstring(L, 1, &n);
  const char *p = luaL_checklstring(L, 2, &m);
  lua_Integer init = 1;
  if (kind != PAT_GSUB) {
    init = luaL_optinteger(L, 3, 1);
    if (init < 0) init = init < -(lua_Integer)n ? 1 : (lua_Integer)n + init + 1;
    if (init == 0) init = 1;
  }
  double r = init > (lua_Integer)n + 1 ? 0 : (double)n - (double)init + 1;
  int plain = kind == PAT_FIND && lua_toboolean(L, 4), k = 0, q = 0;
  if (!plain) pattern_shape(p, m, &k, &q);
  int anchored = !plain && kind != PAT_GMATCH && m > 0 && p[0] == '^';
  double cost = pow_sat(r + 1, k) * pow_sat(2, q) * ((double)m + 1);
  if (!anchored) cost *= r + 1;
  if (kind != PAT_FIND || k > 0 || q > 0) {
    charge(L, cost, pat_names[kind]);
    return orig(L);
  }
  sandbox *sb = sandbox_of(L);
  if (cost > (double)(sb->lim.instructions - sb->work)) charge(L, cost, pat_names[kind]);
  int nres = orig(L);
  double tried = r + 1;
  if (nres > 0 && lua_isinteger(L, -nres)) tried = (double)(lua_tointeger(L, -nres) - init + 1);
  charge(L, tried * ((double)m + 1), pat_names[kind]);
  return nres;
}

/* string.rep: with nothing to repeat Lua still loops count times; a result
** the heap cannot hold is refused here, at the caller's line (the allocator's
** refusal would be a memory error, which carries no line). */
static int sandbox_rep(lua_State *L) {
  size_t l, lsep = 0;
  luaL_checklstring(L, 1, &l);
  lua_Integer count = luaL_checkinteger(L, 2);
  luaL_optlstring(L, 3, "", &lsep);
  if (count > 0 && l + lsep == 0) {
    lua_pushliteral(L, "");
    return 1;
  }
  const sandbox *sb = sandbox_of(L);
  double bytes = count > 0 ? (double)count * (double)l + (double)(count - 1) * (double)lsep : 0;
  if (bytes > (double)(sb->cap - sb->used))
    return luaL_error(L, "string.rep: a string of %I bytes would grow the Lua heap past %I bytes",
                      (lua_Integer)(bytes < 9e18 ? bytes : 9e18), (lua_Integer)sb->lim.heap);
  return lua_tocfunction(L, lua_upvalueindex(1))(L);
}

/* table.move: charged for the elements it copies (nils included). */
static int sandbox_tmove(lua_State *L) {
  lua_Integer f = luaL_checkinteger(L, 2), e = luaL_checkinteger(L, 3);
  if (e >= f) charge(L, (double)e - (double)f + 1, "table.move");
  return lua_tocfunction(L, lua_upvalueindex(1))(L);
}

/* table.insert(t, [pos,] v) as Lua 5.4 defines it, for tables only; the length
** (#t or __len, which may be anything) is read once and the shift charged. */
static int sandbox_tinsert(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer end = (lua_Integer)((lua_Unsigned)luaL_len(L, 1) + 1u); /* first empty slot */
  lua_Integer pos = end;
  switch (lua_gettop(L)) {
    case 2:
      break;
    case 3:
      pos = luaL_checkinteger(L, 2);
      luaL_argcheck(L, (lua_Unsigned)pos - 1u < (lua_Unsigned)end, 2, "position out of bounds");
      charge(L, (double)end - (double)pos, "table.insert");
      for (lua_Integer i = end; i > pos; i--) {
        lua_geti(L, 1, i - 1);
        lua_seti(L, 1, i);
      }
      break;
    default:
      return luaL_error(L, "wrong number of arguments to 'insert'");
  }
  lua_seti(L, 1, pos);
  return 0;
}

/* table.remove(t [, pos]) likewise. */
static int sandbox_tremove(lua_State *L) {
  luaL_checktype(L, 1, LUA_TTABLE);
  lua_Integer size = luaL_len(L, 1);
  lua_Integer pos = luaL_optinteger(L, 2, size);
  if (pos != size)
    luaL_argcheck(L, (lua_Unsigned)pos - 1u <= (lua_Unsigned)size, 2, "position out of bounds");
  charge(L, (double)size - (double)pos, "table.remove");
  lua_geti(L, 1, pos);
  for (; pos < size; pos++) {
    lua_geti(L, 1, pos + 1);
    lua_seti(L, 1, pos);
  }
  lua_pushnil(L);
  lua_seti(L, 1, pos);
  return 1;
}

/* load(chunk [, name [, mode [, env]]]): text only (binary chunks can break
** the VM), strings only, charged a step per byte. */
static int sandbox_load(lua_State *L) {
  size_t len;
  const char *s = luaL_checklstring(L, 1, &len);
  const char *name = luaL_optstring(L, 2, s);
  int env = !lua_isnone(L, 4);
  charge(L, (double)len, "load");
  if (luaL_loadbufferx(L, s, len, name, "t") != LUA_OK) {
    luaL_pushfail(L);
    lua_insert(L, -2);
    return 2;
  }
  if (env) {
    lua_pushvalue(L, 4);
    if (!lua_setupvalue(L, -2, 1)) lua_pop(L, 1);
  }
  return 1;
}

/* setmetatable: a __gc metamethod would run when the state closes, after the
** render and its limits. */
static int sandbox_setmetatable(lua_State *L) {
  if (lua_type(L, 2) == LUA_TTABLE) {
    lua_pushliteral(L, "__gc");
    int gc = lua_rawget(L, 2) != LUA_TNIL;
    lua_pop(L, 1);
    if (gc) return luaL_error(L, "setmetatable: __gc metamethods are not allowed in templates");
  }
  return lua_tocfunction(L, lua_upvalueindex(1))(L);
}

/* The results of a pcall/xpcall that ran in slots from..top: the error of a
** limit goes on (the limits are not for templates to catch); the heap's, as a
** memory error is re-raised, would lose the line, so it goes on as an error
** at the line of the call. */
static int protected_results(lua_State *L, int status, int from) {
  const sandbox *sb = sandbox_of(L);
  if (status == LUA_ERRMEM && sb->heap_hit)
    return luaL_error(L, "the Lua heap would grow past %I bytes", (lua_Integer)sb->lim.heap);
  if (status != LUA_OK && (sb->spent || sb->heap_hit)) return lua_error(L);
  luaL_checkstack(L, 1, NULL);
  lua_pushboolean(L, status == LUA_OK);
  lua_replace(L, from);
  return lua_gettop(L) - from + 1;
}

/* pcall(f, ...) */
static int sandbox_pcall(lua_State *L) {
  luaL_checkany(L, 1);
  lua_pushnil(L); /* the slot of the status */
  lua_insert(L, 1);
  return protected_results(L, lua_pcall(L, lua_gettop(L) - 2, LUA_MULTRET, 0), 1);
}

/* xpcall(f, msgh, ...) */
static int sandbox_xpcall(lua_State *L) {
  int n = lua_gettop(L);
  luaL_checktype(L, 2, LUA_TFUNCTION);
  lua_pushvalue(L, 1); /* f, msgh, args..., f */
  lua_copy(L, 2, 1);   /* msgh, msgh, args..., f */
  lua_replace(L, 2);   /* msgh, f, args... */
  return protected_results(L, lua_pcall(L, n - 2, LUA_MULTRET, 1), 1);
}

/* t[name] := closure of f over the current t[name] and kind (t on top). */
static void wrap_field(lua_State *L, const char *name, lua_CFunction f, int kind) {
  lua_getfield(L, -1, name);
  lua_pushinteger(L, kind);
  lua_pushcclosure(L, f, 2);
  lua_setfield(L, -2, name);
}

static void set_function(lua_State *L, const char *name, lua_CFunction f) {
  lua_pushcfunction(L, f);
  lua_setfield(L, -2, name);
}

/* Opens the libraries templates may use and nothing else (see the top). */
static void open_sandbox(lua_State *L) {
  static const luaL_Reg libs[] = {{LUA_GNAME, luaopen_base},
                                  {LUA_STRLIBNAME, luaopen_string},
                                  {LUA_TABLIBNAME, luaopen_table},
                                  {LUA_MATHLIBNAME, luaopen_math},
                                  {NULL, NULL}};
  static const char *const gone[] = {"dofile", "loadfile", "collectgarbage", "print", "warn",
                                     NULL};
  for (const luaL_Reg *l = libs; l->name; l++) {
    luaL_requiref(L, l->name, l->func, 1);
    lua_pop(L, 1);
  }
  lua_pushglobaltable(L);
  for (const char *const *g = gone; *g; g++) {
    lua_pushnil(L);
    lua_setfield(L, -2, *g);
  }
  set_function(L, "load", sandbox_load);
  set_function(L, "pcall", sandbox_pcall);
  set_function(L, "xpcall", sandbox_xpcall);
  wrap_field(L, "setmetatable", sandbox_setmetatable, 0);

  lua_getfield(L, -1, LUA_STRLIBNAME);
  lua_pushnil(L);
  lua_setfield(L, -2, "dump");
  wrap_field(L, "rep", sandbox_rep, 0);
  wrap_field(L, "find", metered_pattern, PAT_FIND);
  wrap_field(L, "match", metered_pattern, PAT_MATCH);
  wrap_field(L, "gmatch", metered_pattern, PAT_GMATCH);
  wrap_field(L, "gsub", metered_pattern, PAT_GSUB);
  lua_pop(L, 1);

  lua_getfield(L, -1, LUA_TABLIBNAME);
  set_function(L, "insert", sandbox_tinsert);
  set_function(L, "remove", sandbox_tremove);
  wrap_field(L, "move", sandbox_tmove, 0);
  lua_pop(L, 1);

  /* Strings index the (wrapped) string table; getmetatable("") says false. */
  lua_pushliteral(L, "");
  lua_getmetatable(L, -1);
  lua_pushboolean(L, 0);
  lua_setfield(L, -2, "__metatable");
  lua_pop(L, 3);
}

static int is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '_' || c == '-' || c == '.';
}

/* NULL when name (len bytes) may name a template, else why not. */
static const char *template_name_problem(const char *name, size_t len) {
  if (len == 0) return "it is empty";
  if (len > 128) return "it is longer than 128 bytes";
  for (size_t i = 0; i < len; i++)
    if (name[i] == '/' || name[i] == '\\')
      return "a template is a plain file name in the template directory, not a path";
  if (name[0] == '.') return "it starts with '.'";
  for (size_t i = 0; i < len; i++)
    if (!is_name_char(name[i])) return "it holds a byte other than letters, digits, '_', '-', '.'";
  if (strcmp(name, "template.lua") == 0) return "template.lua is the engine, not a template";
  return NULL;
}

/* 1 when msg starts with "NAME:LINE:" where NAME may name a template. */
static int starts_with_template_position(const char *msg) {
  size_t i = 0, j;
  while (is_name_char(msg[i])) i++;
  if (i == 0 || msg[i] != ':' || msg[i + 1] < '0' || msg[i + 1] > '9') return 0;
  for (j = i + 1; msg[j] >= '0' && msg[j] <= '9'; j++) {
  }
  return msg[j] == ':' && !(i == 12 && memcmp(msg, "template.lua", 12) == 0);
}

/* The message handler of the render: puts the innermost template's file:line
** in front of a message that does not start with one (an engine error such
** as a refused include name, or an error raised with level 0). Memory errors
** never come here: Lua raises them without a handler. */
static int add_position(lua_State *L) {
  sandbox *sb = sandbox_of(L);
  if (sb->cap == sb->lim.heap) sb->cap += HANDLER_SLACK;
  const char *msg = lua_tostring(L, 1);
  if (!msg) msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  if (starts_with_template_position(msg)) return 1;
  lua_Debug ar;
  for (int level = 1; lua_getstack(L, level, &ar); level++) {
    if (!lua_getinfo(L, "Sl", &ar) || ar.currentline <= 0 || ar.source[0] != '@') continue;
    if (sb->engine && strcmp(ar.source, sb->engine) == 0) continue;
    lua_pushfstring(L, "%s:%d: %s", ar.short_src, ar.currentline, msg);
    return 1;
  }
  lua_pushstring(L, msg);
  return 1;
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
  sandbox sb;
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
  const char *why = template_name_problem(name, len);
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
  open_sandbox(L);
  lua_sethook(L, limit_hook, LUA_MASKCOUNT, HOOK_EVERY);
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
  lua_createtable(L, 0, 1);                     /* vars */
  push_spec(L, job->spec);
  lua_setfield(L, -2, "spec");
  lua_call(L, 3, 1);
  if (lua_type(L, -1) != LUA_TSTRING) luaL_error(L, "render did not return a string");
  return 1;
}

static const sfa__render_limits default_limits = {
    SFA__TEMPLATE_MAX_INSTRUCTIONS, SFA__TEMPLATE_MAX_HEAP, SFA__TEMPLATE_MAX_ALLOCATED,
    SFA__TEMPLATE_MAX_OUTPUT, SFA__TEMPLATE_MAX_SECONDS};

/* Renders job (entry, lookup) in a fresh sandboxed state under limits. */
static sfa_status render_job_run(render_job *job, const sfa__render_limits *limits, char **out,
                                 char *err, size_t errlen) {
  sandbox *sb = &job->sb;
  memset(sb, 0, sizeof *sb);
  sb->lim = default_limits;
  if (limits) {
    if (limits->instructions > 0) sb->lim.instructions = limits->instructions;
    if (limits->heap) sb->lim.heap = limits->heap;
    if (limits->allocated) sb->lim.allocated = limits->allocated;
    if (limits->output) sb->lim.output = limits->output;
    if (limits->seconds > 0) sb->lim.seconds = limits->seconds;
  }
  sb->cap = sb->lim.heap;
  sb->deadline = now_s() + sb->lim.seconds;
  const char *dir = getenv("SFA_TEMPLATE_DIR");
  if (dir && *dir) job->dir = dir;

  lua_State *L = lua_newstate(sandbox_alloc, sb);
  if (!L) return sfa__fail(err, errlen, SFA_ERR_OUT_OF_MEMORY, "cannot create a Lua state");
  sb->L = L;
  lua_pushcfunction(L, add_position);
  lua_pushcfunction(L, render_main);
  lua_pushlightuserdata(L, job);
  sfa_status st = SFA_OK;
  int rc = lua_pcall(L, 1, 1, 1);
  if (rc == LUA_OK && (sb->spent || sb->heap_hit)) {
    /* a limit ran out in the last C call, with no instruction after it to raise */
    char what[128] = "the Lua heap reached its limit";
    if (sb->spent) spent_text(sb, what, sizeof what);
    st = sfa__fail(err, errlen, SFA_ERR_GENERATOR, "template error: %s", what);
  } else if (rc != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    if (rc == LUA_ERRMEM && sb->heap_hit) {
      st = sfa__fail(err, errlen, SFA_ERR_GENERATOR,
                     "template error: the Lua heap would grow past %zu bytes (a memory error "
                     "does not say at which template line)", sb->lim.heap);
    } else if (rc == LUA_ERRMEM) {
      st = sfa__fail(err, errlen, SFA_ERR_OUT_OF_MEMORY, "template error: out of memory");
    } else {
      st = sfa__fail(err, errlen, SFA_ERR_GENERATOR, "template error: %s",
                     msg ? msg : "(error object is not a string)");
    }
  } else {
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

sfa_status sfa__render(const sfa__template *extra, const char *entry,
                       const sfa_kernel_spec *spec, char **out, char *err, size_t errlen) {
  if (!out) return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "source: NULL");
  *out = NULL;
  if (!entry) return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "entry: NULL");
  render_job job = {extra, NULL, entry, spec, NULL, NULL, 0, {0}};
  return render_job_run(&job, NULL, out, err, errlen);
}

sfa_status sfa__render_string(const char *name, const char *text, size_t len,
                              const sfa_kernel_spec *spec, const sfa__render_limits *limits,
                              char **out, char *err, size_t errlen) {
  if (!out) return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "out: NULL");
  *out = NULL;
  if (!name) return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "name: NULL");
  const char *why = template_name_problem(name, strlen(name));
  if (why)
    return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "name: '%s' is not allowed: %s",
                     name, why);
  if (!text && len)
    return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "text: NULL with len %zu", len);
  render_job job = {NULL, NULL, name, spec, name, text, len, {0}};
  return render_job_run(&job, limits, out, err, errlen);
}

sfa_status sfa_generate(const sfa_kernel_spec *spec, char **source, char *err, size_t errlen) {
  if (!source) return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "source: NULL");
  *source = NULL;
  sfa_status st = sfa_spec_validate(spec, err, errlen);
  if (st != SFA_OK) return st;
  return sfa__render(NULL, "kernel.lt", spec, source, err, errlen);
}
