/*
** indices.h -- the host-side checker of the index contract of modes qk_drop
** and hash (docs/semantics.md), used by sfa_check_indices (runtime/indices.c)
** after it copies the arrays from the device, and testable without a GPU.
*/
#ifndef SFA_RUNTIME_INDICES_H
#define SFA_RUNTIME_INDICES_H

#include <stddef.h>
#include <stdint.h>

#include "sfa.h"

/* Checks contiguous host arrays q_idx, q_hash [B, Hq, Tq] and k_idx, k_hash
** [B, Hkv, Tk] (mode qk_drop reads the idx arrays, hash all four). Per
** (b, h), along time:
**   qk_drop  q_idx: values >= 0 strictly increasing, then a suffix of -1;
**            k_idx: values >= 0 strictly increasing, then a suffix of INT32_MAX.
**   hash     the same padding, where q padding also has q_hash = INT32_MAX and
**            k padding k_hash = INT32_MAX; before it, buckets >= 0 and
**            (hash, idx) strictly increasing lexicographically.
** SFA_OK, or SFA_ERR_INVALID_ARGUMENT with a message in err that names the
** array, the [b, h, t] position and the values, e.g.
** "extras->k_idx[0, 3, 17] = 40 is not greater than k_idx[0, 3, 16] = 41
** (indices must strictly increase)". */
sfa_status sfa__check_index_arrays(sfa_mode mode, int64_t B, int64_t Hq, int64_t Hkv,
                                   int64_t Tq, int64_t Tk, const int32_t *q_idx,
                                   const int32_t *k_idx, const int32_t *q_hash,
                                   const int32_t *k_hash, char *err, size_t errlen);

#endif
