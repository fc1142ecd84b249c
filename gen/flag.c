/*
** flag.c -- the table of the feature flags of a kernel spec (flag.h) and its
** queries.
*/
#include <stdio.h>
#include <string.h>

#include "gen/flag.h"
#include "sfa.h"

#define F(bit, token, lua, what) {bit, token, #bit, lua, what}

static const sfa__flag flags[] = {
  F(SFA_FEAT_CAUSAL, "causal", "causal", "causal mask (bottom-right aligned)"),
  F(SFA_FEAT_BIAS, "bias", "bias", "additive bias"),
  F(SFA_FEAT_MASK, "mask", "mask", "dynamic uint8 mask"),
  F(SFA_FEAT_DETERMINISTIC, "det", "deterministic", "pass bwd: no dq atomics"),
  F(SFA_FEAT_STRICT, "strict", "strict", "strict causality: q_idx > k_idx"),
  F(SFA_FEAT_SOFTCAP, "softcap", "softcap", "softcapped scores"),
  F(SFA_FEAT_ALIBI, "alibi", "alibi", "ALiBi slopes"),
  F(SFA_FEAT_VARLEN, "varlen", "varlen", "packed sequences (cu_seqlens)"),
  F(SFA_FEAT_GATHER, "gather", "gather", "pass decode: the keys of an index list"),
};
#define NFLAGS (sizeof flags / sizeof flags[0])

const sfa__flag *sfa__flag_table(size_t *n) {
  if (n) *n = NFLAGS;
  return flags;
}

unsigned sfa__flag_all(void) {
  unsigned all = 0;
  for (size_t i = 0; i < NFLAGS; i++) all |= flags[i].bit;
  return all;
}

const sfa__flag *sfa__flag_named(const char *s, size_t len) {
  for (size_t i = 0; s && i < NFLAGS; i++)
    if (strlen(flags[i].token) == len && strncmp(s, flags[i].token, len) == 0) return &flags[i];
  return NULL;
}

int sfa__flag_list(char *buf, size_t n, unsigned bits, int macros, const char *sep) {
  int k = 0;
  size_t at = 0;
  if (buf && n) buf[0] = '\0';
  for (size_t i = 0; i < NFLAGS; i++) {
    if (!(bits & flags[i].bit)) continue;
    if (buf && at < n) {
      int w = snprintf(buf + at, n - at, "%s%s", k ? sep : "", macros ? flags[i].macro : flags[i].token);
      at = w < 0 ? n : at + (size_t)w;
    }
    k++;
  }
  return k;
}
