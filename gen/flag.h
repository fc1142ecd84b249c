/*
** flag.h -- the one table of the feature flags of a kernel spec (SFA_FEAT_*,
** gen/flag.c): the bit, the token that canonical names, AOT manifests and the
** tuning db spell, the macro that messages name, and the boolean of the Lua
** spec table that the templates read. Which modes take a flag is the mode
** table's (gen/mode.c); which passes, spec.c's rules. A new flag is a bit in
** sfa.h, a row here (in name order) and the modes that take it.
*/
#ifndef SFA_GEN_FLAG_H
#define SFA_GEN_FLAG_H

#include <stddef.h>

typedef struct sfa__flag {
  unsigned bit;      /* SFA_FEAT_* */
  const char *token; /* in names, manifests and the tuning db: "causal" */
  const char *macro; /* in messages: "SFA_FEAT_CAUSAL" */
  const char *lua;   /* spec.<lua> in the templates: "causal" */
  const char *what;  /* what it asks of the kernel, in help texts: "causal mask" */
} sfa__flag;

/* Every flag in canonical name order; *n gets their count. */
const sfa__flag *sfa__flag_table(size_t *n);

/* The OR of every flag's bit. */
unsigned sfa__flag_all(void);

/* The flag whose token is the first len bytes of s, or NULL. */
const sfa__flag *sfa__flag_named(const char *s, size_t len);

/* The tokens (macros with macros = 1) of the flags set in bits, in name
** order, joined with sep, into buf (NUL-terminated; "" for none); returns
** the number of flags listed. */
int sfa__flag_list(char *buf, size_t n, unsigned bits, int macros, const char *sep);

#endif
