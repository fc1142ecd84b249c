/*
** gpucase.h -- what the GPU suites share (tests/gpucase.c): the driver, device
** 0, one sfa context with a private kernel cache (tg_open / tg_close), half
** conversions, uploads, and the sparse-mode cases with their CPU-reference
** copies. A suite calls tg_open in main (0: go on; 77: skip, reason printed;
** 1: fail) and runs its tests in one process (CK_FORK=no).
*/
#ifndef SFA_TESTS_GPUCASE_H
#define SFA_TESTS_GPUCASE_H

#include <stddef.h>
#include <stdint.h>

#include "sfa.h"
#include "runtime/driver.h"
#include "testutil.h"

extern const sfa_driver *tg_drv;
extern CUdevice tg_device;
extern CUcontext tg_cuctx;
extern sfa_context *tg_ctx;
extern uint64_t tg_seed;  /* SFA_TEST_SEED or the suite's default */
extern int tg_cc;         /* compute capability * 10 + minor of device 0 */
extern char *tg_tmpdir;   /* the private kernel cache dir of tg_ctx (NULL: SFA_CACHE_DIR) */

/* Abort the test with the CUDA error name when call fails. */
#define TG_CU(call)                                                           \
  do {                                                                        \
    CUresult r_ = (call);                                                     \
    if (r_ != CUDA_SUCCESS) {                                                 \
      const char *n_ = "?";                                                   \
      tg_drv->cuGetErrorName(r_, &n_);                                        \
      ck_abort_msg("%s:%d: %s failed: %s", __FILE__, __LINE__, #call, n_);     \
    }                                                                         \
  } while (0)

int tg_open(const char *suite, uint64_t default_seed);
void tg_close(void);

/* tg_ctx becomes a context that forces an mma kind (e.g. SFA_MMA_SYNC, the
** same kernel cache dir); the one it replaces is returned, for
** tg_pop_context, which destroys the forcing context and puts it back. */
sfa_context *tg_push_mma(sfa_mma_kind kind);
void tg_pop_context(sfa_context *saved);

/* The bounds of the GPU suites: relative L2 error of a forward output (o) and
** of a gradient (dq, dk, dv, dbias) against the float64 reference, per dtype;
** lse within TG_LSE_TOL (absolute) where finite. */
double tg_tol_fwd(sfa_dtype t); /* bf16 1e-2, fp16 5e-3 */
double tg_tol_bwd(sfa_dtype t); /* bf16 2e-2, fp16 1e-2 */
#define TG_LSE_TOL 1e-2

uint16_t tg_to_half(sfa_dtype t, float f);
float tg_from_half(sfa_dtype t, uint16_t h);

/* Relative L2 error of got (16-bit values of dtype dt) against want; NaN in
** either counts in *nan and is left out of the norms. */
double tg_rel_err(sfa_dtype dt, const uint16_t *got, const float *want, size_t n, long *nan);

/* cuMemAlloc + copy; the caller frees. */
CUdeviceptr tg_upload(const void *host, size_t bytes);

/* ------------------------------------------------------------ sparse cases */

enum { BIAS_NONE, BIAS_HEAD, BIAS_KV, BIAS_ROW, BIAS_BATCH };
enum { MASK_NONE, MASK_HEAD, MASK_KV, MASK_ROW };

typedef struct scase {
  sfa_mode mode;
  int B, Hq, Hkv, Tq, Tk, D;
  sfa_dtype dtype;
  int T0;                   /* qk_drop: positions before compaction */
  double keep;              /* qk_drop: probability that a position is kept */
  int buckets;              /* hash: 1..64 */
  int left, right, causal;  /* window */
  int bias, mask;           /* window: BIAS_*, MASK_* */
  double density;           /* window mask: probability of a nonzero byte */
  int idx_pad;              /* index arrays: unused elements after each (b, h) row */
  uint64_t seed;
} scase;

extern const char *const tg_bias_names[], *const tg_mask_names[];

typedef struct srun {
  scase c;
  char desc[320];
  size_t nq, nk, nrows;
  float *rq, *rk, *rv, *ro, *rl;       /* reference inputs and outputs, [B, H, T, D] */
  uint16_t *hq, *hk, *hv, *ho;
  float *hl;
  int32_t *qi, *ki, *qh, *kh;          /* host index arrays, contiguous [B, H, T] */
  float *rbias;                        /* reference bias [B, heads, rows, Tk] */
  uint8_t *rmask;                      /* reference mask [B, heads, rows, Tk] */
  CUdeviceptr dq, dk, dv, dout, dl, dqi, dki, dqh, dkh, dbias, dmask;
  sfa_tensor tq, tk, tv, to, tl, tqi, tki, tqh, tkh, tbias, tmask;
  sfa_extras ex;
  int has_ex;
  sfa_host_extras hx;
  sfa_attention_params p;
} srun;

/* A case of mode with B = 2, Hq = 4 and no window. */
scase tg_case(sfa_mode mode, int Hkv, int Tq, int Tk, int D, sfa_dtype dt);

/* A window case in one line of a table: window, causal, sizes, dtype, kv
** heads, BIAS_* and MASK_* and the mask density. */
typedef struct tg_wspec {
  int left, right, causal, Tq, Tk, D, bf16, Hkv, bias, mask;
  double density;
} tg_wspec;
scase tg_window_case(const tg_wspec *w, uint64_t seed);

/* One line naming every field of the case that its mode uses (and its seed). */
void tg_case_describe(const scase *c, char *buf, size_t n);

/* An int32 [B, H, T] array on the device with `pad` poisoned elements after
** each row; *t describes it. */
CUdeviceptr tg_upload_index(const int32_t *host, int B, int H, int T, int pad, sfa_tensor *t);

/* Random inputs of the case (uploaded), its index arrays / bias / mask, the
** params, and device buffers for o and lse; tg_case_free releases it all. */
void tg_case_setup(srun *R, const scase *c);
void tg_case_free(srun *R);

/* The case through sfa_forward on tg_ctx (outputs poisoned with NaN first;
** qk_drop and hash indices checked) against the float64 reference: o within
** the dtype's bound, lse within TG_LSE_TOL, rows that see nothing o = 0 and
** lse = -inf; prints one "ok" line. tg_case_run is setup, launch, verify and
** free; tg_case_launch (poison, sfa_forward, synchronize) and tg_case_verify
** (against the reference of R's host copies) are its steps. */
void tg_case_run(const scase *c);
void tg_case_launch(srun *R);
void tg_case_verify(srun *R);

/* The kernel that sfa_forward (pass SFA_PASS_FWD) or sfa_backward
** (SFA_PASS_BWD) on tg_ctx takes for the case on sm_90 (sfa__call_kernels'
** first spec), so that a suite can check which kind serves it. */
sfa_kernel_spec tg_case_kernel(sfa_pass pass, const scase *c);

/* ------------------------------------------------------------ gradients */

/* The gradients of one case: device buffers and host copies. */
typedef struct tg_grads {
  CUdeviceptr ddo, ddq, ddk, ddv, ddb;
  sfa_tensor tdo, tdq, tdk, tdv, tdb;
  float *rdo;                     /* dout as the reference sees it */
  uint16_t *hdq, *hdk, *hdv, *hdb; /* downloaded results */
  size_t nb;                      /* dbias elements (0: none) */
} tg_grads;

/* dout random (normal, rounded to the case's dtype; rdo its reference copy)
** from rng, dq, dk, dv (and dbias where R has a bias: contiguous, its shape)
** allocated, host buffers for their downloads; tg_grads_free releases all. */
void tg_grads_setup(tg_grads *G, const srun *R, uint64_t *rng);
void tg_grads_free(tg_grads *G);

#endif
