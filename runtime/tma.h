/*
** tma.h -- internal: tensor maps (CUtensorMap) for the warp-specialized
** forward and backward (templates/fwd_ws.lt, bwd_ws.lt), which load q, k, v
** (and dout) tiles with the tensor copy engine, and with which the backward
** adds its dQ rows to the float workspace. A map describes one [B, H, T, D]
** tensor (D innermost, strides in elements) and a box of box_cols x box_rows
** elements (box_cols x the element size: 128 bytes), 128-byte swizzled, rows
** past T read as zeros and not written. Implemented in runtime/tma.c.
*/
#ifndef SFA_RUNTIME_TMA_H
#define SFA_RUNTIME_TMA_H

#include <stdint.h>

#include "runtime/driver.h"

/* One tensor as the kernel's parameter block has it. */
typedef struct sfa__tma_tensor {
  uint64_t data;                /* device address */
  sfa_dtype dtype;              /* SFA_DTYPE_FP16, SFA_DTYPE_BF16 or SFA_DTYPE_FP32 */
  int64_t B, H, T, D;
  int64_t sb, sh, st;           /* strides of B, H, T in elements; D's is 1 */
} sfa__tma_tensor;

/* 1 where the copy engine can address t: a dtype of the maps, a 16-byte
** aligned base, and every stride of a dimension longer than 1 a positive
** multiple of 16 bytes below 2^40 (D's stride is 1 by the caller's checks). */
int sfa__tma_addressable(const sfa__tma_tensor *t);

/* The map of t with a box of box_cols x box_rows into *map. Maps are kept in
** a small per-thread cache keyed by shape, strides, dtype and box: the same
** tensor again is a copy of its map; another tensor of a cached shape (a
** training loop's next activations) is that map with its address replaced
** (cuTensorMapReplaceAddress, where the driver has it); anything else is
** encoded. Errors: the driver lacks cuTensorMapEncodeTiled
** (SFA_ERR_UNSUPPORTED), the driver refuses (SFA_ERR_CUDA); the message goes
** to err. */
sfa_status sfa__tma_map(const sfa_driver *d, const sfa__tma_tensor *t, int box_cols,
                        int box_rows, CUtensorMap *map, char *err, size_t errlen);

/* 1 where the copy engine can address every one of t[0..n). */
int sfa__tma_all_addressable(const sfa__tma_tensor *t, int n);

/* The maps of t[0..n) (boxes of box_cols x rows[i]) into maps[0..n), and
** their addresses into params[0..n): a warp-specialized kernel's parameters
** after its block. Errors as sfa__tma_map's. */
sfa_status sfa__tma_params(const sfa_driver *d, const sfa__tma_tensor *t, const int *rows, int n,
                           int box_cols, CUtensorMap *maps, void **params, char *err,
                           size_t errlen);

#endif
