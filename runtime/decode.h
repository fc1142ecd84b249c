/*
** decode.h -- internal: sfa_decode's split-KV rule (runtime/decode.c), apart
** so that tests can check it without a GPU.
*/
#ifndef SFA_RUNTIME_DECODE_H
#define SFA_RUNTIME_DECODE_H

#include <stdint.h>

#include "runtime/kernel_abi_fields.h" /* SFA__DECODE_MAX_SPLITS, the kernel's bound */
#define SFA__DECODE_WAVES 2       /* the splits aim at this many CTAs per SM */
/* Counters at the head of every split-KV workspace (sfa_decode_with_workspace):
** a grid of more row tiles than this is not split (it fills the GPU anyway). */
#define SFA__DECODE_COUNTERS 1024

/* The splits of each row tile's keys for a grid of `ctas` row tiles (B * Hkv
** * tiles per kv head) over a cache of `capacity` positions on a GPU of `sms`
** SMs, with key tiles of block_n: as many as fit SFA__DECODE_WAVES CTAs per
** SM (rounded down: whole waves), no more than the cache has key tiles, at
** most SFA__DECODE_MAX_SPLITS, at least 1; 1 for more than SFA__DECODE_COUNTERS
** row tiles. Host facts only (never the lengths in use, which stay on the
** device), so the launch is the same for every step of a CUDA graph. */
int sfa__decode_splits(int64_t ctas, int64_t capacity, int sms, int block_n);

#endif
