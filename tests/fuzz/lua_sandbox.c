/*
** lua_sandbox.c -- the Lua states of the template fuzz target, bounded: linked
** with -Wl,--wrap=luaL_newstate,--wrap=luaL_openlibs, so the states that
** gen/generator.c makes get
**   - an allocator capped at SFA_FUZZ_LUA_MIB MiB (default 32): beyond it Lua
**     sees out-of-memory, which the generator reports as SFA_ERR_OUT_OF_MEMORY;
**   - a budget of SFA_FUZZ_LUA_STEPS VM instructions per state (default 2
**     million; rendering a real kernel takes under 100 thousand): a count
**     hook raises an error past it, and then after every instruction, so
**     that no pcall in the input can swallow it for long;
**   - only the base (without dofile, loadfile and print), coroutine, table,
**     string, math and utf8 libraries: no io, os, package or debug.
** Fuzz input is template text, i.e. Lua code: without this it could run
** os.execute, loop for ever (a tail call is a loop, so stripping the loop
** keywords is not enough) or allocate all memory. This stands in for the
** sandboxed in-memory render that the generator is getting; once that lands,
** fuzz_template.c calls it and this file goes. What it cannot bound: time
** spent inside one C library call (e.g. a pattern with exponential
** backtracking in string.find), since hooks run only between instructions.
*/
#include <stdio.h>
#include <stdlib.h>

#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>

lua_State *__wrap_luaL_newstate(void);
void __wrap_luaL_openlibs(lua_State *L);

#define STEP 1000 /* instructions between two calls of the hook */

static size_t used, cap;
static long long steps, budget;

static double env_num(const char *name, double def) {
  const char *s = getenv(name);
  return s && *s ? strtod(s, NULL) : def;
}

static void *alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
  (void)ud;
  size_t old = ptr ? osize : 0;
  if (nsize == 0) {
    free(ptr);
    used -= old;
    return NULL;
  }
  if (nsize > old && nsize - old > cap - used) return NULL;
  void *p = realloc(ptr, nsize);
  if (p) used = used - old + nsize;
  return p;
}

static void hook(lua_State *L, lua_Debug *ar) {
  (void)ar;
  steps += STEP;
  if (steps > budget) {
    lua_sethook(L, hook, LUA_MASKCOUNT, 1);
    luaL_error(L, "fuzz sandbox: more than %I Lua instructions", (lua_Integer)budget);
  }
}

static int panic(lua_State *L) {
  fprintf(stderr, "fuzz sandbox: Lua panic: %s\n", lua_tostring(L, -1));
  abort();
}

lua_State *__wrap_luaL_newstate(void) {
  cap = (size_t)(env_num("SFA_FUZZ_LUA_MIB", 32) * 1048576);
  budget = (long long)env_num("SFA_FUZZ_LUA_STEPS", 2e6);
  used = 0;
  steps = 0;
  lua_State *L = lua_newstate(alloc, NULL);
  if (L) {
    lua_atpanic(L, panic);
    lua_sethook(L, hook, LUA_MASKCOUNT, STEP);
  }
  return L;
}

void __wrap_luaL_openlibs(lua_State *L) {
  static const luaL_Reg libs[] = {
    {LUA_GNAME, luaopen_base},        {LUA_COLIBNAME, luaopen_coroutine},
    {LUA_TABLIBNAME, luaopen_table},  {LUA_STRLIBNAME, luaopen_string},
    {LUA_MATHLIBNAME, luaopen_math},  {LUA_UTF8LIBNAME, luaopen_utf8},
    {NULL, NULL}};
  for (const luaL_Reg *l = libs; l->func; l++) {
    luaL_requiref(L, l->name, l->func, 1);
    lua_pop(L, 1);
  }
  static const char *const dropped[] = {"dofile", "loadfile", "print"};
  for (size_t i = 0; i < sizeof dropped / sizeof dropped[0]; i++) {
    lua_pushnil(L);
    lua_setglobal(L, dropped[i]);
  }
}
