/*
** sandbox.c -- the Lua state that templates run in (gen/sandbox.h). Every
** process that links libsfa reads SFA_TEMPLATE_DIR, so templates are data,
** not code the user chose to run:
**  - only the base, string, table and math libraries are opened, without
**    dofile, loadfile, collectgarbage, print, warn and string.dump; load
**    compiles text only (the engine uses it; templates do not see it);
**  - a template is a plain file name (letters, digits, '_', '-', '.', not
**    first) of a regular file in the directory, never a path or a symlink
**    (the name rule is here, the file checks in gen/generator.c);
**  - a count hook raises after a budget of VM instructions or past a
**    wall-clock limit; library calls that work outside the VM (pattern
**    matching, table.move/insert/remove, load) charge their steps to the same
**    budget first, and string.rep of nothing returns at once;
**  - the allocator caps the Lua heap and the bytes handed out over the render;
**    the engine caps the output and refuses a NUL byte (gen/generator.c);
**  - pcall cannot catch a limit, and __gc metamethods (which could run past
**    the render, in lua_close) are refused.
** Each limit is SFA_ERR_GENERATOR naming the template file:line where Lua
** knows it; the limits (gen/gen_internal.h) are 20x what real renders use.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

#include "gen/sandbox.h"

/* VM instructions between two calls of the count hook. */
#define HOOK_EVERY 1000
/* Heap the error handler may use past the cap, to say which limit was hit. */
#define HANDLER_SLACK ((size_t)64 << 10)

/* Which limit ran out (sfa__sandbox.spent). */
enum { SPENT_NO, SPENT_INSTRUCTIONS, SPENT_TIME, SPENT_ALLOCATED };

/* ------------------------------------------------------------ limits */

typedef sfa__sandbox sandbox;

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

/* Opens the libraries templates may use and nothing else (see the top), and
** starts the count hook. */
void sfa__sandbox_open(lua_State *L) {
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
  lua_sethook(L, limit_hook, LUA_MASKCOUNT, HOOK_EVERY);
}

static int is_name_char(char c) {
  return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
         c == '_' || c == '-' || c == '.';
}

const char *sfa__template_name_problem(const char *name, size_t len) {
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
int sfa__sandbox_msgh(lua_State *L) {
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

/* ------------------------------------------------------------ a render's state */

static const sfa__render_limits default_limits = {
    SFA__TEMPLATE_MAX_INSTRUCTIONS, SFA__TEMPLATE_MAX_HEAP, SFA__TEMPLATE_MAX_ALLOCATED,
    SFA__TEMPLATE_MAX_OUTPUT, SFA__TEMPLATE_MAX_SECONDS};

void sfa__sandbox_init(sfa__sandbox *sb, const sfa__render_limits *limits) {
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
}

lua_State *sfa__sandbox_state(sfa__sandbox *sb) {
  lua_State *L = lua_newstate(sandbox_alloc, sb);
  sb->L = L;
  return L;
}

sfa_status sfa__sandbox_result(const sfa__sandbox *sb, lua_State *L, int rc, char *err,
                               size_t errlen) {
  if (rc == LUA_OK && (sb->spent || sb->heap_hit)) {
    /* a limit ran out in the last C call, with no instruction after it to raise */
    char what[128] = "the Lua heap reached its limit";
    if (sb->spent) spent_text(sb, what, sizeof what);
    return sfa__fail(err, errlen, SFA_ERR_GENERATOR, "template error: %s", what);
  }
  if (rc == LUA_OK) return SFA_OK;
  const char *msg = lua_tostring(L, -1);
  if (rc == LUA_ERRMEM && sb->heap_hit)
    return sfa__fail(err, errlen, SFA_ERR_GENERATOR,
                     "template error: the Lua heap would grow past %zu bytes (a memory error "
                     "does not say at which template line)", sb->lim.heap);
  if (rc == LUA_ERRMEM)
    return sfa__fail(err, errlen, SFA_ERR_OUT_OF_MEMORY, "template error: out of memory");
  return sfa__fail(err, errlen, SFA_ERR_GENERATOR, "template error: %s",
                   msg ? msg : "(error object is not a string)");
}
