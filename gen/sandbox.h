/*
** sandbox.h -- internal: the restricted Lua state that templates run in
** (gen/sandbox.c): the capped allocator, the instruction and time budget, the
** metered library functions, the allowed libraries, the error handler that
** names the template line, and the template name rule. gen/generator.c
** drives a render through it:
**
**   sfa__sandbox sb;
**   sfa__sandbox_init(&sb, limits);             -- limits may be NULL
**   lua_State *L = sfa__sandbox_state(&sb);     -- NULL: no memory
**   lua_pushcfunction(L, sfa__sandbox_msgh);
**   ... lua_pcall(L, n, 1, handler) of a function that first calls
**       sfa__sandbox_open(L) ...
**   st = sfa__sandbox_result(&sb, L, rc, err, errlen);
**   lua_close(L);
*/
#ifndef SFA_GEN_SANDBOX_H
#define SFA_GEN_SANDBOX_H

#include <stddef.h>

#include <lua.h>

#include "gen/gen_internal.h"

/* The limits and what has been used of them; the allocator's user data, so
** that every C function of the state finds it with lua_getallocf. */
typedef struct sfa__sandbox {
  lua_State *L;
  sfa__render_limits lim;
  size_t used;           /* heap bytes in use */
  size_t cap;            /* lim.heap, plus the handler's slack once it runs */
  size_t allocated;      /* bytes handed out so far */
  int heap_hit;          /* an allocation was refused for the cap */
  long long work;        /* instructions run and steps charged */
  int spent;             /* which limit ran out (then every hook raises); 0: none */
  double deadline;       /* CLOCK_MONOTONIC seconds */
  const char *engine;    /* the engine's chunk name, to tell its frames apart
                            (set by the caller before the engine loads) */
} sfa__sandbox;

/* Clears sb and sets its limits: those of limits that are not 0 (limits may be
** NULL), else the defaults of gen/gen_internal.h; the wall clock starts now. */
void sfa__sandbox_init(sfa__sandbox *sb, const sfa__render_limits *limits);

/* A new Lua state whose allocator enforces sb's heap limits; NULL when Lua
** could not allocate it. Nothing is open in it yet. */
lua_State *sfa__sandbox_state(sfa__sandbox *sb);

/* Inside the protected call, before anything else runs: opens the libraries
** templates may use (base, string, table, math, with the functions removed and
** wrapped as gen/sandbox.c's top comment says) and starts the count hook. */
void sfa__sandbox_open(lua_State *L);

/* The message handler for the protected call: puts the innermost template's
** file:line in front of a message that does not start with one. */
int sfa__sandbox_msgh(lua_State *L);

/* The status of the protected call that returned rc: SFA_OK when it succeeded
** and no limit ran out; else SFA_ERR_GENERATOR "template error: ..." (a limit,
** or the error message on top of L), or SFA_ERR_OUT_OF_MEMORY. */
sfa_status sfa__sandbox_result(const sfa__sandbox *sb, lua_State *L, int rc, char *err,
                               size_t errlen);

/* NULL when name (len bytes) may name a template (letters, digits, '_', '-',
** '.', not first, at most 128 bytes, not template.lua), else why not. */
const char *sfa__template_name_problem(const char *name, size_t len);

#endif
