/*
** sfa.h -- the one public header of sfa, sparse flash attention for NVIDIA GPUs.
**
** sfa renders CUDA C++ kernels from Lua templates (one variant per kernel spec),
** compiles them with NVRTC into a content-addressed on-disk cache, loads them
** through the CUDA driver API and launches them on the caller's stream.
**
** Conventions
** - Every function returns an sfa_status. Functions that take a context leave a
**   message in it (sfa_last_error); context-free functions take a caller-owned
**   buffer `err` of `errlen` bytes (may be NULL) for the message.
** - Ownership: strings and buffers returned through `char **` / `void **` are
**   allocated by sfa and released by the caller with sfa_free(). Kernels returned
**   by sfa_compile belong to the context and live until sfa_context_destroy.
** - Tensors are device memory described by sfa_tensor (element strides, the last
**   dimension contiguous). sfa never allocates device memory behind the caller's
**   back except small workspaces owned by the context.
*/
#ifndef SFA_H
#define SFA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Every function of this header is exported from libsfa.so; nothing else is
** (the library is built with -fvisibility=hidden). */
#if defined(__GNUC__) || defined(__clang__)
#define SFA_API __attribute__((visibility("default")))
#else
#define SFA_API
#endif

/* The version this header belongs to. CMakeLists.txt reads these three lines:
** they are the one place the version is written. */
#define SFA_VERSION_MAJOR 0
#define SFA_VERSION_MINOR 4
#define SFA_VERSION_PATCH 0
#define SFA_VERSION_STRING "0.4.0"
#define SFA_VERSION_NUMBER (SFA_VERSION_MAJOR * 10000 + SFA_VERSION_MINOR * 100 + SFA_VERSION_PATCH)

/* ---------------------------------------------------------------- version and ABI */

/* The library's own version, e.g. "0.4.0", and as MAJOR * 10000 + MINOR * 100 +
** PATCH. A program compares them with SFA_VERSION_STRING / SFA_VERSION_NUMBER
** of the header it was built with; bindings that copy the structs below (the
** Python binding's ctypes) check them at load time with sfa_abi_size and
** sfa_abi_offset. */
SFA_API const char *sfa_version(void);
SFA_API int sfa_version_number(void);

/* The public structs whose layout a binding copies. */
typedef enum sfa_abi_struct {
  SFA_ABI_TENSOR = 0,     /* sfa_tensor */
  SFA_ABI_PARAMS,         /* sfa_attention_params */
  SFA_ABI_EXTRAS,         /* sfa_extras */
  SFA_ABI_OPTIONS,        /* sfa_options */
  SFA_ABI_KERNEL_SPEC,    /* sfa_kernel_spec */
  SFA_ABI_HOST_EXTRAS,    /* sfa_host_extras */
  SFA_ABI_KV_CACHE        /* sfa_kv_cache */
} sfa_abi_struct;

/* sizeof the struct in this library; 0 for an unknown kind. */
SFA_API size_t sfa_abi_size(sfa_abi_struct kind);

/* offsetof the member named `field` (e.g. "window_left") in this library, or
** -1 where the struct has no such member or the kind is unknown. */
SFA_API long sfa_abi_offset(sfa_abi_struct kind, const char *field);

/* ---------------------------------------------------------------- status */

typedef enum sfa_status {
  SFA_OK = 0,
  SFA_ERR_INVALID_ARGUMENT, /* a caller-supplied value is wrong; message names it */
  SFA_ERR_UNSUPPORTED,      /* valid request that this build/arch cannot serve */
  SFA_ERR_NO_DRIVER,        /* libcuda.so.1 missing or no device */
  SFA_ERR_CUDA,             /* a CUDA driver call failed */
  SFA_ERR_COMPILE,          /* NVRTC rejected the generated source (log in message) */
  SFA_ERR_GENERATOR,        /* the Lua template engine failed (file:line in message) */
  SFA_ERR_IO,               /* file system error */
  SFA_ERR_CORRUPT,          /* a file failed verification */
  SFA_ERR_NOT_FOUND,        /* lookup missed */
  SFA_ERR_OUT_OF_MEMORY,
  SFA_ERR_INTERNAL
} sfa_status;

/* Static English name of a status, e.g. "invalid argument". */
SFA_API const char *sfa_status_string(sfa_status s);

/* Release anything sfa returned through a char ** or void ** out-parameter. */
SFA_API void sfa_free(void *p);

/* ---------------------------------------------------------------- kernel specs */

typedef enum sfa_pass {
  SFA_PASS_FWD = 0,
  SFA_PASS_BWD_DQ,    /* backward, deterministic dq: one CTA per query tile */
  SFA_PASS_BWD,       /* backward: dk, dv (and dbias) per key tile; dq by float
                         atomic adds (instructions, or the copy engine's
                         reduce-add) unless SFA_FEAT_DETERMINISTIC */
  /* The utility kernels, variants like the attention passes (one name, cache,
  ** manifest and AOT path). Their specs: mode SFA_MODE_DENSE, flags 0,
  ** head_dim, block_m, block_n and num_stages 0, num_warps the fixed block
  ** size / 32 (sfa_spec_default fills it); the dtype as noted, which the
  ** name spells where the pass takes more than one, e.g. sfa_topk_fp32_sm90,
  ** sfa_hashsort_sm90. */
  SFA_PASS_BWD_PRE,   /* sfa_backward's preprocess (delta, lse * log2 e, dq
                         zeroing); dtype of q: fp16 or bf16 */
  SFA_PASS_CONVERT,   /* sfa_backward's float -> fp16 / bf16 copies (dq,
                         dbias); dtype of q: fp16 or bf16 */
  SFA_PASS_HASH_SORT, /* sfa_hash_prepare's bucket sort; dtype int32 */
  SFA_PASS_PERMUTE,   /* sfa_hash_prepare / sfa_hash_unsort's row gather and
                         scatter (any row dtype); dtype uint8 */
  SFA_PASS_TOPK,      /* sfa_topk_mask; dtype of the bias: fp16, bf16 or fp32 */
  SFA_PASS_MERGE,     /* sfa_merge_attention; dtype fp32 (its accumulation; the
                         tensors' dtypes are launch arguments), sfa_merge_sm90 */
  SFA_PASS_DECODE,    /* sfa_decode: an attention pass (mode, dtype, head_dim and tiles
                         like fwd): block_m 16 rows of (query head, new token) pairs of one
                         kv head, block_n keys per step split over the warps (16 or 32 per
                         warp), mma sync; modes dense and window (flag causal) and hash
                         (flag strict), each with or without gather, e.g.
                         sfa_decode_dense_causal_bf16_d128_m16n64_w4s2_sm90 */
  SFA_PASS_KV_APPEND  /* sfa_kv_append's row copies into the cache (any row dtype); dtype
                         uint8, sfa_kvappend_sm90 */
} sfa_pass;

typedef enum sfa_mode {
  SFA_MODE_DENSE = 0, /* optional causal (bottom-right aligned) */
  SFA_MODE_QK_DROP,   /* SCFA QK-sparse: compacted q/k/v + q_idx/k_idx */
  SFA_MODE_HASH,      /* SCFA hash-sparse: sorted by (bucket, position) */
  SFA_MODE_WINDOW     /* sliding window + optional bias and dynamic mask */
} sfa_mode;

typedef enum sfa_dtype {
  SFA_DTYPE_FP16 = 0,
  SFA_DTYPE_BF16,
  SFA_DTYPE_FP32,
  SFA_DTYPE_INT32,
  SFA_DTYPE_UINT8
} sfa_dtype;

/* The lower-case name of a mode ("dense", "qk_drop", "hash", "window") or of a
** dtype ("fp16", "bf16", "fp32", "int32", "uint8"); NULL for a value outside
** the enum, so `for (i = 0; sfa_mode_name(i); i++)` lists every mode. */
SFA_API const char *sfa_mode_name(int mode);
SFA_API const char *sfa_dtype_name(int dtype);

/* Feature flags of a kernel spec: what the kernel computes. (Bit 1u << 4, the
** mma kind in sfa before 0.2, is not a flag: it is sfa_kernel_spec.mma.) */
#define SFA_FEAT_CAUSAL        (1u << 0) /* dense, window: causal mask (qk_drop and hash take no
                                            causal flag: their causality is intrinsic) */
#define SFA_FEAT_BIAS          (1u << 1) /* window: additive bias */
#define SFA_FEAT_MASK          (1u << 2) /* window: dynamic uint8 mask */
#define SFA_FEAT_DETERMINISTIC (1u << 3) /* bwd: no dq (a bwddq pass makes it), no float atomics */
#define SFA_FEAT_STRICT        (1u << 5) /* qk_drop, hash: strict causality q_idx > k_idx
                                            (params.strict_causal; hash decode: key position
                                            < the token's) */
#define SFA_FEAT_SOFTCAP       (1u << 6) /* every mode: scores softcapped, c tanh(s / c)
                                            (params.softcap) */
#define SFA_FEAT_ALIBI         (1u << 7) /* dense, window: ALiBi slopes (extras->alibi_slopes) */
#define SFA_FEAT_VARLEN        (1u << 8) /* every mode, passes fwd, bwddq, bwd: packed sequences of
                                            their own lengths (sfa_extras.cu_seqlens_q/_k) */
#define SFA_FEAT_GATHER        (1u << 9) /* decode (every mode it serves): the keys of an
                                            index list (sfa_kv_cache.kv_indices) */

/* The tensor-core instructions of one kernel (sfa_kernel_spec.mma), a
** configuration choice like the tiles. 0 is mma.sync, so a zeroed spec is an
** mma.sync kernel. (sfa_mma_kind below is the option that asks for one.) */
typedef enum sfa_spec_mma {
  SFA_SPEC_MMA_SYNC = 0, /* mma.sync, on every arch */
  SFA_SPEC_MMA_WGMMA,    /* warpgroup MMA from swizzled shared memory: sm_90 (compiled for
                            sm_90a), passes fwd and bwd, head_dim 64 or 128 (bwd also 256,
                            num_warps 8), block_n 64 or 128; fwd: block_m == 16 * num_warps
                            (a warpgroup of 4 warps per 64 query rows); bwd: block_n == 16 *
                            num_warps (64 keys per warpgroup) and block_m 64. The name
                            spells it "_wg" after the flags */
  SFA_SPEC_MMA_WS        /* warp-specialized wgmma: forward, a producer warpgroup loads Q, K
                            and V with the tensor copy engine (TMA) into num_stages (2..4)
                            buffers, 1 to 3 consumer warpgroups of 64 query rows
                            compute; sm_90 (sm_90a), pass fwd, head_dim 64, 128 or
                            256, block_n 64 or 128, block_m == 64 * (num_warps / 4 - 1)
                            (num_warps 8, 12 or 16; 16 at head_dim 64 only, 12 only at
                            256), no mask flag. Pass bwd: the producer loads K and V
                            once and Q and dO per query tile, two consumer warpgroups
                            of 64 keys compute; every mode, head_dim 64 or
                            128, block_m 64, block_n 128, num_warps 12, num_stages 2..4
                            (as shared memory allows); dense and window also at
                            head_dim 256 with block_n 64 and num_stages 2 (the two
                            consumers share the 64 keys, a column half of dK and dV
                            each); without bias, mask or det, and at head_dim 256
                            not varlen. The runtime uses it only for tensors the copy
                            engine can address (16-byte aligned base and strides,
                            contiguous rows) and the wgmma default otherwise. The name
                            spells it "_ws" after the flags */
} sfa_spec_mma;

/* One kernel variant: the problem it computes (pass, mode, dtype, head_dim,
** arch, flags) and the configuration that computes it (block_m, block_n,
** num_warps, num_stages, mma), which sfa_spec_default or the tuner choose for
** a problem. Every field is spelled in its canonical name, e.g.
** sfa_fwd_dense_causal_bf16_d128_m128n64_w4s1_sm90; that name is also the
** kernel's entry symbol. */
typedef struct sfa_kernel_spec {
  sfa_pass pass;      /* problem */
  sfa_mode mode;      /* problem */
  sfa_dtype dtype;    /* problem: SFA_DTYPE_FP16 or SFA_DTYPE_BF16 (utility passes: see sfa_pass) */
  int head_dim;       /* problem: multiple of 16, 32..256 (utility passes: 0) */
  int block_m;        /* configuration: query rows per CTA: 64 or 128 (192: mma ws) */
  int block_n;        /* configuration: key rows per inner tile */
  int num_warps;      /* configuration: 4 or 8 (12, 16: mma ws) */
  int num_stages;     /* configuration: K/V shared-memory buffers: 1 (interleaved) or 2;
                         decode 1..4; mma ws 2..4 */
  int arch;           /* problem: compute capability * 10 + minor, e.g. 80, 86, 89, 90 */
  unsigned flags;     /* problem: SFA_FEAT_* */
  sfa_spec_mma mma;   /* configuration: the tensor-core instructions (utility passes: sync) */
} sfa_kernel_spec;

/* Checks every field; on failure the message names the field and the allowed
** values. */
SFA_API sfa_status sfa_spec_validate(const sfa_kernel_spec *spec, char *err, size_t errlen);

/* Canonical name into buf (NUL-terminated). Names exist for every well-formed
** spec, also one that sfa_spec_validate rejects as unsupported or too large;
** SFA_ERR_INVALID_ARGUMENT for a field outside its domain or a short buf. */
SFA_API sfa_status sfa_spec_name(const sfa_kernel_spec *spec, char *buf, size_t n);

/* Inverse of sfa_spec_name. */
SFA_API sfa_status sfa_spec_parse(const char *name, sfa_kernel_spec *spec, char *err, size_t errlen);

/* The heuristic default configuration for a problem class: fills block_m,
** block_n, num_warps, num_stages and mma of *spec from its problem fields.
** The defaults are the configurations measured fastest on an H100
** (bench/NOTES.md): on sm_90 wgmma at head dims 64 and 128 (fwd and bwd)
** and 256 (bwd), except where the warp-specialized kernels (mma ws) were
** measured faster: the forward of dense, qk_drop and a window without a
** bias (D 64, 128 and 256; not the window at D 64 with softcap or ALiBi),
** and the backward of every mode at D 64 and 128 (packed sequences too) and
** of dense and window at D 256 (not packed), without a bias, mask or det
** (which ws does not serve). A utility pass gets its fixed
** num_warps and no tiles (0). */
SFA_API sfa_status sfa_spec_default(sfa_kernel_spec *spec, char *err, size_t errlen);

/* Dynamic shared memory, in bytes, that the variant needs at launch (0 for
** the utility passes, whose launches size it from the problem). */
SFA_API size_t sfa_spec_smem_bytes(const sfa_kernel_spec *spec);

/* Render the CUDA C++ source of a variant (self-contained: no #include).
** *source is NUL-terminated; release with sfa_free. */
SFA_API sfa_status sfa_generate(const sfa_kernel_spec *spec, char **source, char *err, size_t errlen);

/* Compile a variant with NVRTC for spec->arch, without a GPU. If source is NULL
** it is generated. *cubin (release with sfa_free) receives the binary; if log is
** not NULL it receives the NVRTC log (release with sfa_free). */
SFA_API sfa_status sfa_compile_cubin(const sfa_kernel_spec *spec, const char *source,
                             void **cubin, size_t *cubin_size, char **log,
                             char *err, size_t errlen);

/* ---------------------------------------------------------------- tensors */

#define SFA_MAX_RANK 4

typedef struct sfa_tensor {
  void *data;                      /* device pointer (a CUdeviceptr) */
  sfa_dtype dtype;
  int rank;
  int64_t shape[SFA_MAX_RANK];
  int64_t strides[SFA_MAX_RANK];   /* in elements */
} sfa_tensor;

/* Host conversions between float and the bits of a dtype of SFA_DTYPE_FP16 or
** SFA_DTYPE_BF16 (any other dtype is treated as fp16): round to nearest even,
** NaN stays NaN, overflow gives infinity. */
SFA_API uint16_t sfa_float_to_half(sfa_dtype dtype, float f);
SFA_API float sfa_half_to_float(sfa_dtype dtype, uint16_t h);

/* Fill a contiguous (row-major) tensor description. */
SFA_API void sfa_tensor_init(sfa_tensor *t, void *data, sfa_dtype dtype, int rank,
                     const int64_t *shape);

/* ---------------------------------------------------------------- context */

typedef struct sfa_context sfa_context;

typedef enum sfa_tune_policy {
  SFA_TUNE_OFF = 0, /* heuristic default */
  SFA_TUNE_CACHED,  /* tuning db, heuristic on miss */
  SFA_TUNE_ON       /* tune on miss */
} sfa_tune_policy;

/* Which tensor-core instructions the kernels use (sfa_options.mma). */
typedef enum sfa_mma_kind {
  SFA_MMA_AUTO = 0, /* the default's choice per kernel (on sm_90 wgmma where allowed, the
                       warp-specialized kernels where they were measured faster) */
  SFA_MMA_SYNC,     /* mma.sync everywhere, with its default tiles; no tuning */
  SFA_MMA_WGMMA,    /* wgmma where the pass, arch and head dim allow it (sm_90, fwd
                       and bwd, D 64 and 128, bwd also D 256), with its default tiles;
                       no tuning */
  SFA_MMA_WS        /* as SFA_MMA_WGMMA, and the warp-specialized TMA forward and
                       backward (SFA_SPEC_MMA_WS) where they are allowed, with their
                       default tiles */
} sfa_mma_kind;

typedef struct sfa_options {
  const char *cache_dir;  /* NULL: SFA_CACHE_DIR, $XDG_CACHE_HOME/sfa, ~/.cache/sfa */
  int device;             /* device ordinal used when the thread has no current context */
  int verbose;            /* 1: progress and cache notes on stderr */
  sfa_tune_policy tune;
  sfa_mma_kind mma;       /* not AUTO: for A/B comparisons; the tuning policy is then unused */
} sfa_options;

/* Fill *opts with the defaults: no cache_dir (the environment decides), device
** 0, quiet, tune from $SFA_TUNE ("off", "cached" or "on"; unset: off; any
** other value: off, with a warning on stderr) and mma from $SFA_MMA ("auto",
** "sync", "wgmma" or "ws"; unset: auto; any other value: auto, with a warning). */
SFA_API void sfa_options_init(sfa_options *opts);

/* Create a context. Creation does not touch the GPU: the driver is loaded on the
** first call that needs it, so argument validation works on machines without
** one. On failure *ctx may still be set so that sfa_last_error can be read; it
** must then be destroyed. */
SFA_API sfa_status sfa_context_create(sfa_context **ctx, const sfa_options *opts);
SFA_API void sfa_context_destroy(sfa_context *ctx);

/* The message of the last failed call on ctx ("" if none). Valid until the next
** call on ctx. */
SFA_API const char *sfa_last_error(const sfa_context *ctx);

/* Compile (through the disk cache) and load a variant in the calling thread's
** current CUDA context. The kernel handle is owned by ctx. */
typedef struct sfa_kernel sfa_kernel;
SFA_API sfa_status sfa_compile(sfa_context *ctx, const sfa_kernel_spec *spec, sfa_kernel **kernel);

/* Add a directory of ahead-of-time kernels written by sfa-gen (DIR/manifest.tsv
** and the cubins it lists). Kernels the context needs later are looked up
** there first, by canonical name (which spells the arch), before the disk
** cache and NVRTC; a kernel found there is never compiled. Directories are
** searched in the order added, after those of the environment variable
** SFA_KERNEL_DIR (':'-separated; read by sfa_context_create, where a bad entry
** only warns on stderr). The manifest is read and checked now: a directory
** that does not exist or has no manifest.tsv is SFA_ERR_NOT_FOUND, an
** unreadable one SFA_ERR_IO, a malformed one SFA_ERR_CORRUPT (the message
** names FILE:LINE), and nothing is added. Cubins are read when needed and
** verified (size, XXH3-64); one that is missing, altered or that the driver
** rejects is skipped with one warning on stderr naming the file, and that
** kernel is compiled through the cache as if the directory did not list it.
** The directory must come from sfa-gen of the same sfa version. Adding a
** directory twice is a no-op; kernels already loaded are not replaced. */
SFA_API sfa_status sfa_context_add_kernel_dir(sfa_context *ctx, const char *dir);

/* ---------------------------------------------------------------- attention */

typedef struct sfa_attention_params {
  sfa_mode mode;
  int causal;         /* dense and window: 1 = causal (bottom-right aligned); in window
                         mode it replaces window_right. qk_drop, hash: ignored, their
                         causality q_idx >= k_idx is intrinsic */
  float scale;        /* 0: 1/sqrt(head_dim) */
  int window_left;    /* window, with off = Tk - Tq: keys j >= i + off - window_left are
                         seen; -1 unbounded; must be -1 in other modes */
  int window_right;   /* window: keys j <= i + off + window_right; -1 unbounded; ignored
                         with causal; must be -1 in other modes */
  int deterministic;  /* backward: no float atomics */
  int strict_causal;  /* qk_drop, hash: 1 = a query sees key j iff q_idx > k_idx (not
                         its own position); 0 (default) = q_idx >= k_idx. Must be 0 in
                         the other modes */
  float softcap;      /* 0 = off; c > 0 (finite): each score s = scale * q.k becomes
                         c * tanh(s / c), before ALiBi, the bias and the mask (Gemma 2).
                         Every mode */
} sfa_attention_params;

SFA_API void sfa_params_init(sfa_attention_params *p);

/* Mode-specific inputs. Members the mode does not read must be NULL (they are
** rejected, not ignored). Index arrays are contiguous along time and 4-byte
** aligned; q_hash/k_hash must have the batch and head strides of q_idx/k_idx.
** bias has q's dtype and shape [B|1, Hq|Hkv|1, Tq|1, Tk]; mask is uint8 with the
** same shape rules, 16-byte aligned data and batch/head/row strides that are
** multiples of 16 bytes (pad Tk).
**
** Packed variable-length batches (every mode): cu_seqlens_q and cu_seqlens_k,
** both or neither, int32 [B + 1], contiguous, the prefix sums of the B
** sequences' lengths: sequence b has the query rows [cu_seqlens_q[b],
** cu_seqlens_q[b + 1]) and the keys [cu_seqlens_k[b], cu_seqlens_k[b + 1]);
** cu_seqlens_*[0] = 0, non-decreasing (a sequence may be empty), the last
** entry the total (q.shape[0], k.shape[0]; each total >= 1). With them q is
** [total_q, Hq, D], k and v [total_k, Hkv, D] (any strides, the last dim
** contiguous), o like q, lse float32 [Hq, total_q] contiguous along time;
** q_idx / q_hash are [Hq, total_q] and k_idx / k_hash [Hkv, total_k],
** contiguous along time, each sequence's entries by the fixed-length
** contract of that sequence alone (positions within the sequence). Each
** sequence is its own problem: causal and window alignment use its own
** lengths (off = len_k - len_q). The grid follows from the totals and B alone
** (no maximum length is needed, and nothing is read back from the device, so
** the call can be captured in a graph); work is scheduled per query tile (per
** key tile in the backward) of each sequence, so a batch of very uneven
** lengths costs its real work. The values of cu_seqlens are not checked by
** sfa_forward / sfa_backward (they are read on the device only; wrong values
** give wrong output, never an access out of bounds): sfa_check_indices checks
** them. max_seqlen_k, where given, lets the forward pick the tile of short keys
** (a hint, never read on the device).
** Window mode's bias and mask with packed sequences: bias [Hb, total_q|1,
** Kmax] in q's dtype, mask uint8 [Hb, total_q|1, Kmax] (Hb = Hq, Hkv or 1;
** a row count of 1 broadcasts one row to every query of every sequence; any
** strides >= 0 with the last dimension contiguous; the mask's alignment
** rules as above). Column j of row i is key j of row i's own sequence.
** Kmax should be at least the longest key length of the batch; the host
** cannot check that without reading cu_seqlens, so keys at or past Kmax
** (the smaller of the two where both are given) are masked, never read.
** sfa_backward's dbias then has the bias's layout [Hb, total_q|1, Kmax]
** (summed over the heads and rows the bias broadcasts, as in the
** fixed-length case), and its columns at or past a sequence's key length
** are 0. A bias of one row is shared by every sequence: its dbias is summed
** across sequences with float atomics, so with params.deterministic = 1 it
** is SFA_ERR_UNSUPPORTED (give the bias total_q rows). */
typedef struct sfa_extras {
  const sfa_tensor *q_idx;  /* int32 [B, Hq, Tq]  (qk_drop, hash) */
  const sfa_tensor *k_idx;  /* int32 [B, Hkv, Tk] (qk_drop, hash) */
  const sfa_tensor *q_hash; /* int32 [B, Hq, Tq]  (hash) */
  const sfa_tensor *k_hash; /* int32 [B, Hkv, Tk] (hash) */
  const sfa_tensor *bias;   /* q dtype [B, Hb, Tq|1, Tk] (window); packed [Hb, total_q|1, Kmax] */
  const sfa_tensor *mask;   /* uint8 [B, Hb, Tq|1, Tk] (window); packed [Hb, total_q|1, Kmax] */
  const sfa_tensor *alibi_slopes; /* float32 [Hq] or [B, Hq], contiguous (dense, window):
                                     the score of query i and key j gets
                                     - slope[b, h] * |i + Tk - Tq - j| (no gradient) */
  const sfa_tensor *cu_seqlens_q; /* int32 [B + 1]: packed sequences (any mode), with */
  const sfa_tensor *cu_seqlens_k; /* int32 [B + 1]   both or neither */
  int64_t max_seqlen_k;     /* packed sequences: the longest key length of the batch, where
                               the caller knows it (flash-attn's max_seqlen_k), else 0. Only
                               the forward's tile choice reads it (sequences of at most 4096
                               keys take smaller tiles); any value gives the same output.
                               Must be 0 without cu_seqlens, >= 0 */
} sfa_extras;

/* o = attention(q, k, v). q [B, Hq, Tq, D], k and v [B, Hkv, Tk, D] (fp16 or
** bf16), o like q, lse float32 [B, Hq, Tq] (may be NULL). stream is a CUstream
** (NULL = the legacy default stream). extras may be NULL for dense and window.
** o and lse must not share memory with an input (q, k, v, extras) or with
** each other. params->causal and params->deterministic are 0 or 1.
** Index values are not checked here (a wrong layout gives wrong output, never
** an out-of-bounds access); sfa_check_indices checks the contract.
** Packed sequences: extras->cu_seqlens_q / _k (see sfa_extras) change the
** layouts to q [total_q, Hq, D], k and v [total_k, Hkv, D], lse [Hq, total_q];
** their values are not checked here (sfa_check_indices does). */
SFA_API sfa_status sfa_forward(sfa_context *ctx, const sfa_attention_params *params,
                       const sfa_tensor *q, const sfa_tensor *k, const sfa_tensor *v,
                       const sfa_extras *extras, const sfa_tensor *o,
                       const sfa_tensor *lse, void *stream);

/* Gradients of sfa_forward. q, k, v, extras and params as given to the
** forward; o and lse its outputs (lse is required here); dout = dL/do, like o.
** Outputs: dq like q; dk, dv like k, v (for GQA/MQA summed over the query heads
** of each group); dbias NULL or, in window mode with a bias, a tensor of the
** bias's dtype and shape (the gradient summed over the dims the bias
** broadcasts). Every output is overwritten; none may overlap an input or
** another output. Rows with no allowed key contribute nothing.
** params->deterministic = 1: dq comes from a second pass over the key tiles
** instead of float atomic adds (atomic instructions, or on sm_90 at head dim
** 128 the copy engine's reduce-add), so two calls give bitwise identical
** results (dk, dv and dbias are always deterministic).
** Workspace: float32 buffers from a stream-ordered memory pool of the
** context (one per device; allocated and freed on stream): 8 bytes per query
** row, plus 4 * D per query row without deterministic, plus 4 bytes per dbias
** element when the bias broadcasts over query rows, heads or batch. The pool
** keeps that memory between calls (so that a step does not map it again) and
** gives it back at sfa_context_destroy. Asynchronous on stream.
** Head dims: multiples of 16 up to 128, and 160, 192, 224, 256 (two CTAs per
** key tile, each making half the columns; on sm_90 dense and window at 256
** take one CTA whose two consumer warpgroups split the work);
** SFA_ERR_UNSUPPORTED otherwise.
** Packed sequences (extras->cu_seqlens_q / _k): dq like q [total_q, Hq, D], dk
** and dv like k and v [total_k, Hkv, D], dbias like the bias [Hb, total_q|1,
** Kmax] (see sfa_extras); the workspace counts total_q + 128 query rows per
** head in place of B * Tq, and Kmax columns in place of Tk. */
SFA_API sfa_status sfa_backward(sfa_context *ctx, const sfa_attention_params *params,
                        const sfa_tensor *q, const sfa_tensor *k, const sfa_tensor *v,
                        const sfa_extras *extras, const sfa_tensor *o, const sfa_tensor *lse,
                        const sfa_tensor *dout, const sfa_tensor *dq, const sfa_tensor *dk,
                        const sfa_tensor *dv, const sfa_tensor *dbias, void *stream);

/* sfa_backward when the forward's lse also receives a gradient (lse used
** downstream, e.g. by sfa_merge_attention): dlse = dL/dlse, float32
** [B, Hq, Tq] (strides >= 0, the last dimension contiguous), or NULL
** (then exactly sfa_backward). Since dlse_i / ds_ij = P_ij, its share of
** the score gradient is dS_ij += P_ij * dlse_i; the preprocess folds it into
** delta_i = rowsum(dout_i * o_i) - dlse_i at no extra cost. No output may
** overlap dlse. Rows with no allowed key still contribute nothing. */
SFA_API sfa_status sfa_backward_dlse(sfa_context *ctx, const sfa_attention_params *params,
                                     const sfa_tensor *q, const sfa_tensor *k,
                                     const sfa_tensor *v, const sfa_extras *extras,
                                     const sfa_tensor *o, const sfa_tensor *lse,
                                     const sfa_tensor *dout, const sfa_tensor *dlse,
                                     const sfa_tensor *dq, const sfa_tensor *dk,
                                     const sfa_tensor *dv, const sfa_tensor *dbias,
                                     void *stream);

/* The validation call of the index contract of modes qk_drop and hash
** (docs/semantics.md), which sfa_forward relies on without checking. Per
** (batch, head), along time: positions are >= 0; qk_drop: q_idx and k_idx
** strictly increase; hash: buckets are >= 0 and (q_hash, q_idx) and (k_hash,
** k_idx) strictly increase; padding is a suffix: q_idx = -1 (hash: with
** q_hash = INT32_MAX), k_idx = INT32_MAX (hash: with k_hash = INT32_MAX).
** extras is validated as by sfa_forward for q of length Tq and k of length Tk.
** Synchronizes stream and copies the arrays to the host: a debugging and
** input-checking aid, not for every call. Tq and Tk are limited as in
** sfa_forward; arrays too large to copy to host memory are refused before
** anything is allocated. On a violation returns
** SFA_ERR_INVALID_ARGUMENT with a message that names the array, the
** [b, h, t] position and the values.
** Packed sequences (extras->cu_seqlens_q / _k, in any mode; Tq and Tk the
** totals): the prefix sums are checked too (cu_seqlens_*[0] = 0, never
** decreasing, the last entry Tq resp. Tk), and in qk_drop and hash the index
** arrays [Hq, Tq] / [Hkv, Tk] by the contract per sequence: a message names
** ARRAY[b, h, t] with b the sequence and t the position within it. A packed
** window bias or mask is not read or checked here (it holds no index; its
** heads are q's, which this call does not see): sfa_forward checks it. */
SFA_API sfa_status sfa_check_indices(sfa_context *ctx, const sfa_attention_params *params,
                             const sfa_extras *extras, int64_t Tq, int64_t Tk, void *stream);

/* ---------------------------------------------------------------- sparse helpers */

/* Largest num_buckets of sfa_hash_prepare. */
#define SFA_HASH_MAX_BUCKETS 4096

/* From unsorted tensors and bucket ids to the sorted layout of mode hash
** (docs/semantics.md). Per (batch, head), tokens are sorted by (bucket,
** position), a stable sort, and
**   idx[b, h, i]       = the original position of the i-th sorted token,
**   hash[b, h, i]      = its bucket,
**   x_sorted[b, h, i]  = x[b, h, idx[b, h, i]]   (a whole row of D elements),
**   x2_sorted[b, h, i] = x2[b, h, idx[b, h, i]].
** Call it once for q with the query buckets (idx, hash -> q_idx, q_hash) and
** once for k with x2 = v (-> k_idx, k_hash, k and v sorted alike).
**   bucket     int32 [B, H, T].
**   num_buckets in [1, SFA_HASH_MAX_BUCKETS]. A bucket id outside
**              [0, num_buckets) never makes the call fail or write out of
**              bounds: such tokens go after all others, in position order,
**              with hash = INT32_MAX and idx = their position. In mode hash
**              they then form one extra bucket: such queries see such keys
**              (causally) and nothing else.
**   x, x_sorted    [B, H, T, D] fp16, bf16 or fp32, the same dtype and shape.
**              Both may be NULL (only idx and hash are made).
**   x2, x2_sorted  likewise, [B, H, T, D2] (D2 and dtype may differ from x's).
**   idx, hash  int32 [B, H, T] outputs.
** Every tensor: strides >= 0, the last dimension contiguous. T <= 2^30.
** Outputs must not share memory with the inputs or with each other (x_sorted
** and x2_sorted may interleave, e.g. in one packed buffer, as long as no
** element is shared). Runs asynchronously on stream (a CUstream; NULL = the
** legacy default stream): a sort kernel (one CTA per (b, h)) and a gather per
** tensor. */
SFA_API sfa_status sfa_hash_prepare(sfa_context *ctx, const sfa_tensor *bucket, int num_buckets,
                            const sfa_tensor *x, const sfa_tensor *x_sorted,
                            const sfa_tensor *x2, const sfa_tensor *x2_sorted,
                            const sfa_tensor *idx, const sfa_tensor *hash, void *stream);

/* The inverse row permutation: o[b, h, idx[b, h, i], :] = o_sorted[b, h, i, :]
** for every i with 0 <= idx[b, h, i] < T; rows of o that no idx names are left
** as they are, and other idx values are skipped. o_sorted [B, H, T', D] and o
** [B, H, T, D] (fp16, bf16 or fp32, one dtype; last dimension contiguous),
** idx int32 [B, H, T'] (e.g. q_idx from sfa_hash_prepare, where T' = T). If
** idx names a row twice, which copy lands there is unspecified. o must not
** share memory with o_sorted or idx. Asynchronous on stream. */
SFA_API sfa_status sfa_hash_unsort(sfa_context *ctx, const sfa_tensor *o_sorted, const sfa_tensor *idx,
                           const sfa_tensor *o, void *stream);

/* The dynamic mask of mode window (flash-sparse-attn's top-k): for every query
** row i of bias [B, Hb, Tq, Tk] (fp16, bf16 or fp32; any strides >= 0 with the
** last dimension contiguous, e.g. stride 0 to broadcast), mask[b, h, i, j] = 1
** for the w keys j with the largest bias among the allowed ones, 0 for every
** other j < Tk. Allowed: every key, or when causal is 1 the keys
** j <= i + Tk - Tq (bottom-right aligned). Values compare as numbers (-0 ==
** +0; -inf is a number); equal values go to the lower j, so the result is
** deterministic; NaN is never selected. A row with at most w allowed non-NaN
** keys selects them all; w = 0 selects none.
**   mask  uint8 [B, Hb, Tq, Tk]: data 16-byte aligned, strides of the first
**         three dimensions multiples of 16 (like sfa_forward's mask), last
**         dimension contiguous. Only columns [0, Tk) are written.
**   Tq, Tk <= 2^30; w >= 0; causal 0 or 1. mask must not share memory with bias.
** One CTA per row; the row's keys stay in shared memory when they fit (Tk up
** to about 99k for fp16/bf16 on sm_90, 65k on sm_80, half that for fp32),
** else they are re-read for each pass. Asynchronous on stream. */
SFA_API sfa_status sfa_topk_mask(sfa_context *ctx, const sfa_tensor *bias, int w, int causal,
                         const sfa_tensor *mask, void *stream);

/* The sparse helpers on packed variable-length batches, making exactly the
** index arrays of sfa_forward's packed layout (sfa_extras). cu_seqlens (and
** cu_seqlens_q / _k) are int32 [B + 1], contiguous, with sfa_extras' prefix-
** sum contract: sequence b is the rows [cu_seqlens[b], cu_seqlens[b + 1]);
** sequences may be empty. Their VALUES are read on the device only (nothing
** is synchronized; the calls can be captured in a graph) and are not checked:
** wrong values give wrong output, never an access out of bounds (entries are
** clamped to [0, total], a sequence's end to at least its start; a row that
** then lies in no sequence is not written, or, in sfa_topk_mask_varlen, gets
** a row of zeros). sfa_check_indices checks such arrays. */

/* sfa_hash_prepare per sequence: for each (sequence b, head h) a stable sort
** of the sequence's tokens by (bucket, position), positions counted from the
** sequence's start, so that idx and hash are q_idx / q_hash (or k_idx /
** k_hash) of sfa_forward's packed hash mode:
**   idx[h, s + i]      = the position within the sequence of its i-th sorted
**                        token (s = cu_seqlens[b], 0 <= i < its length),
**   hash[h, s + i]     = its bucket (INT32_MAX for one outside
**                        [0, num_buckets), sorted last as in sfa_hash_prepare),
**   x_sorted[s + i, h] = x[s + idx[h, s + i], h], x2_sorted likewise.
**   bucket     int32 [H, total];
**   x, x_sorted    [total, H, D] (q's packed layout), or both NULL;
**   x2, x2_sorted  [total, H, D2], or both NULL;
**   idx, hash  int32 [H, total] outputs.
** total <= 2^30, B * H < 2^31; every other rule (dtypes, strides, overlaps)
** as sfa_hash_prepare's. One sort CTA per (sequence, head): a long sequence
** gets the block's warps, a short one a warp per 64 tokens. */
SFA_API sfa_status sfa_hash_prepare_varlen(sfa_context *ctx, const sfa_tensor *cu_seqlens,
                                           const sfa_tensor *bucket, int num_buckets,
                                           const sfa_tensor *x, const sfa_tensor *x_sorted,
                                           const sfa_tensor *x2, const sfa_tensor *x2_sorted,
                                           const sfa_tensor *idx, const sfa_tensor *hash,
                                           void *stream);

/* The inverse of sfa_hash_prepare_varlen: o[s + idx[h, r], h] = o_sorted[r, h]
** for every row r of sequence b (s = cu_seqlens[b]) with 0 <= idx[h, r] <
** the sequence's length; other rows of o are left as they are. o_sorted and
** o [total, H, D] (one dtype), idx int32 [H, total]; rules as
** sfa_hash_unsort's. */
SFA_API sfa_status sfa_hash_unsort_varlen(sfa_context *ctx, const sfa_tensor *cu_seqlens,
                                          const sfa_tensor *o_sorted, const sfa_tensor *idx,
                                          const sfa_tensor *o, void *stream);

/* sfa_topk_mask per sequence, on the packed bias layout of window mode:
**   bias  [Hb, total_q, Kmax] (fp16, bf16 or fp32; strides >= 0, the last
**         dimension contiguous): row r of query sequence b has its keys in
**         the columns [0, len_k) (key position j within sequence b at column
**         j), len_k = cu_seqlens_k[b + 1] - cu_seqlens_k[b]; Kmax >= the
**         longest len_k (a longer sequence counts only its first Kmax keys).
**   mask  uint8 [Hb, total_q, Kmax], alignment as sfa_topk_mask's mask.
** Per row: the w largest allowed keys of [0, len_k), as sfa_topk_mask; with
** causal 1 the keys j <= i + len_k - len_q (i the row within its sequence).
** Every column [0, Kmax) of the mask is written: the columns [len_k, Kmax)
** get 0, so a consumer may read whole rows. total_q, Kmax <= 2^30. */
SFA_API sfa_status sfa_topk_mask_varlen(sfa_context *ctx, const sfa_tensor *cu_seqlens_q,
                                        const sfa_tensor *cu_seqlens_k, const sfa_tensor *bias,
                                        int w, int causal, const sfa_tensor *mask,
                                        void *stream);

/* ---------------------------------------------------------------- merging partial attentions */

/* Merges N partial attentions of the same queries over disjoint key sets (the
** chunks of ring / context parallelism, the splits of split-KV decoding) into
** the attention over their union, from each part's output and lse:
**   lse[r] = log(sum_n exp(lse_n[r])),   o[r, :] = sum_n exp(lse_n[r] - lse[r]) * o_n[r, :]
** for every row r = (b, h, t), in float32 (each row's lse_n are read once,
** rescaled online as in the attention kernels).
** - A part with lse_n[r] = -inf (it saw no key) weighs 0: its o_n row is not
**   read. If every part is -inf: o = 0 and lse = -inf (sfa_forward's
**   convention for a row with no allowed key), so merging sfa_forward's
**   outputs over a split of the keys gives sfa_forward over all of them.
** - NaN in, NaN out: a NaN (or +inf) lse_n gives o = NaN and lse = NaN for
**   that row; a NaN in an o_n row that weighs gives NaN in o's row.
** Shapes: the N parts are stacked along the batch dimension, part n's batch
** b at index n * B + b (a contiguous [N, B, H, T, D] buffer viewed as
** [N * B, H, T, D]; any strides that make that one dimension work):
**   o_parts    [N * B, H, T, D]  fp16, bf16 or fp32
**   lse_parts  [N * B, H, T]     fp32 (natural log, as sfa_forward writes it)
**   o          [B, H, T, D]      fp16, bf16 or fp32 (need not be o_parts' dtype)
**   lse        [B, H, T]         fp32, or NULL
** N = o_parts->shape[0] / B >= 1 (o_parts->shape[0] must be a multiple of B).
** D <= 256; H, T <= 2^30. Strides are element strides >= 0 with the last
** dimension contiguous; rows whose data are 16-byte aligned (data and the
** byte strides of the first three dims multiples of 16) are moved with
** 16-byte vectors, others element by element. o and lse must not share
** memory with o_parts, lse_parts or each other (checked on the byte ranges
** they span). One group of up to 32 threads per row (a thread per 16 bytes
** of a row, a warp for D 128 fp32 or D 256 fp16). Asynchronous on stream
** (a CUstream; NULL = the legacy default stream). */
SFA_API sfa_status sfa_merge_attention(sfa_context *ctx, const sfa_tensor *o_parts,
                                       const sfa_tensor *lse_parts, const sfa_tensor *o,
                                       const sfa_tensor *lse, void *stream);
/* ---------------------------------------------------------------- decoding with a KV cache */

/* The keys and values a decode step reads: a cache that is either
** contiguous or paged.
**   contiguous (page_table NULL): k, v [B, Hkv, capacity, D];
**   paged: k, v [num_pages, page_size, Hkv, D] (a page holds page_size
**     consecutive positions of one sequence, every kv head), and
**     page_table int32 [B, max_pages] (contiguous along pages): sequence b's
**     position j lives in page page_table[b, j / page_size] at row
**     j % page_size; capacity = max_pages * page_size.
**   capacity <= 2^30 positions per sequence.
**   kv_indices (optional, sfa_decode) int32 [B, Hkv, K] (contiguous along K,
**     1 <= K <= 2^30): sequence b's kv head h reads only the positions
**     kv_indices[b, h, :] (every query head of the group and every new token
**     alike; the mode's rule and seqused still apply to each). Entries
**     outside [0, seqused[b]) are skipped (-1 pads a short list); an entry
**     listed twice counts twice. sfa_kv_append ignores it.
**   k_hash (mode hash; sfa_kv_append_hash writes it) int32, the bucket of
**     every cached key in the cache's own layout minus D: [B, Hkv, capacity]
**     for a contiguous cache, [num_pages, page_size, Hkv] for a paged one
**     (position j of sequence b, kv head h at [page_table[b, j / page_size],
**     j % page_size, h]); any strides >= 0 with the last dimension contiguous.
**   q_hash (sfa_decode, mode hash) int32 [B, Hq, Tn] (contiguous along Tn):
**     the new tokens' buckets. Both are required in mode hash and must be
**     NULL in the other modes; sfa_kv_append and sfa_check_kv_cache check
**     k_hash's layout where it is given and do not write it
**     (sfa_kv_append_hash writes it), and they ignore q_hash.
**     Buckets are any int32 values, compared for equality only (no range:
**     sfa_hash_prepare's rule "ids outside [0, num_buckets) form one extra
**     bucket" is the caller's to apply, e.g. by mapping them to INT32_MAX).
**   seqused int32 [B] (contiguous): the positions in use per sequence, the
**     new tokens' own included (0 <= seqused[b] <= capacity); NULL: every
**     sequence uses the whole capacity.
** k and v have one dtype (q's), the same shape, and any strides >= 0 with
** the last dimension contiguous and 16-byte aligned rows. The values of
** seqused and page_table are not checked by sfa_decode (as index arrays are
** not by sfa_forward): a value out of range gives wrong output, never an
** access outside k, v or the page table (positions at or past
** min(seqused[b], capacity) are never read, and a page index outside
** [0, num_pages) is read as a page of zeros that no query sees); use
** sfa_check_kv_cache to check them. */
typedef struct sfa_kv_cache {
  const sfa_tensor *k, *v;
  const sfa_tensor *page_table; /* int32 [B, max_pages], or NULL: contiguous */
  const sfa_tensor *seqused;    /* int32 [B], or NULL: every sequence is full */
  const sfa_tensor *kv_indices; /* sfa_decode only: int32 [B, Hkv, K], the positions that
                                   kv head reads (DSA/NSA-style selection), or NULL: all */
  const sfa_tensor *k_hash;     /* mode hash: int32 bucket of every cached key, [B, Hkv,
                                   capacity] (contiguous cache) or [num_pages, page_size,
                                   Hkv] (paged); NULL in the other modes */
  const sfa_tensor *q_hash;     /* sfa_decode, mode hash: int32 [B, Hq, Tn], the new tokens'
                                   buckets; NULL in the other modes */
} sfa_kv_cache;

/* One decode step: o = attention(q, cache) for Tn new tokens per sequence.
** q [B, Hq, Tn, D] (fp16 or bf16, Tn in 1..16, Hq a multiple of Hkv), o like
** q, lse float32 [B, Hq, Tn] or NULL. New token t of sequence b sits at
** position p = seqused[b] - Tn + t (so the caller has written its k and v
** at p first, e.g. with sfa_kv_append); params as for sfa_forward:
**   mode dense: causal 1 sees keys j <= p, causal 0 every j < seqused[b];
**   mode window: window_left / window_right around p (off = seqused[b] - Tn),
**     causal replacing window_right; no bias or mask;
**   mode hash (SCFA's hash-sparse attention on the cache, which stays in
**     position order): token t of query head hq sees key j of its kv head h
**     iff k_hash[b, h, j] == q_hash[b, hq, t] and j <= p (j < p with
**     params.strict_causal; params.causal is ignored, as in sfa_forward). A
**     key tile is matched against the buckets of its row tile first: the K
**     and V rows of keys that no row of the tile may see are not read, and a
**     key tile no row may see is skipped whole.
** No softcap (params.softcap > 0 gives SFA_ERR_UNSUPPORTED). With kv_indices
** every mode applies its rule to the listed positions.
** Rows that see no key get o = 0 and lse = -inf. The query heads of one kv
** head are computed together (their new tokens fill one 16-row tile, or
** several where Hq / Hkv * Tn > 16), so each key and value row is read once
** per kv head and tile. The keys are split over CTAs (split-KV) as the grid
** of (B * Hkv * tiles) CTAs needs to fill the GPU; the splits' partial
** outputs (float32, 4 * (D + 1) bytes per (split, query head, token), after
** 4096 bytes of counters) are merged as by sfa_merge_attention, in the same
** kernel, by the CTA that finishes a row tile's last split: a step is one
** launch. sfa_decode takes that workspace from the context's stream-ordered
** pool and zeroes its counters with a memset on stream (an allocation, a
** memset and a free node where a graph captures the call);
** sfa_decode_with_workspace takes the caller's instead. The split count
** depends only on B, Hkv, Hq / Hkv * Tn, the capacity (K with kv_indices) and
** the GPU (never on seqused, which stays on the device): the call does not
** synchronize, allocates only from the stream-ordered pool, and may be
** captured in a CUDA graph. Asynchronous on stream. */
SFA_API sfa_status sfa_decode(sfa_context *ctx, const sfa_attention_params *params,
                              const sfa_tensor *q, const sfa_kv_cache *cache,
                              const sfa_tensor *o, const sfa_tensor *lse, void *stream);

/* The bytes of workspace that sfa_decode_with_workspace needs for a call
** with these arguments (o and lse do not matter) on the context's current
** device, into *bytes: 0 where the call does not split its keys. It
** validates the arguments as sfa_decode does and selects (so may compile)
** the kernel; no device memory is touched. */
SFA_API sfa_status sfa_decode_workspace_size(sfa_context *ctx,
                                             const sfa_attention_params *params,
                                             const sfa_tensor *q, const sfa_kv_cache *cache,
                                             size_t *bytes);

/* sfa_decode in the caller's workspace: device memory of workspace_size
** bytes at workspace (16-byte aligned), at least what
** sfa_decode_workspace_size says (where that is 0, workspace may be NULL),
** on the context's current device. Its first
** 4096 bytes must be zero before the first call (e.g. one cuMemsetD8 when
** it is allocated), and every call leaves them zero again once its kernel
** has finished, so one workspace serves every later call whose size it
** covers, any shape, with no memset: the step is one kernel node in a CUDA
** graph. Calls that share a workspace must be ordered (one stream, or
** events); calls that may run at the same time need a workspace each. The
** bytes a call uses must not overlap any of its tensors. A
** call whose kernel did not complete (a device fault) leaves the workspace
** undefined. The caller owns and frees it. */
SFA_API sfa_status sfa_decode_with_workspace(sfa_context *ctx, const sfa_attention_params *params,
                                             const sfa_tensor *q, const sfa_kv_cache *cache,
                                             const sfa_tensor *o, const sfa_tensor *lse,
                                             void *workspace, size_t workspace_size,
                                             void *stream);

/* Writes the keys and values of the Tn new tokens of a step into the cache,
** at the positions sfa_decode gives them: k_new[b, h, t] and v_new[b, h, t]
** go to position p = seqused[b] - Tn + t of sequence b (cache->seqused
** already counts the new tokens; without it, the last Tn positions of the
** capacity). k_new, v_new [B, Hkv, Tn, D] in the cache's dtype, any strides
** >= 0 with the last dimension contiguous and 16-byte aligned rows, Tn in
** 1..16; they must not share memory with the cache. A row whose position is
** negative or whose page index is outside [0, num_pages) is not written (as
** sfa_decode never reads it). One thread per 16 bytes; asynchronous on
** stream, no synchronization: a decode step of sfa_kv_append then
** sfa_decode can be captured in a CUDA graph. */
SFA_API sfa_status sfa_kv_append(sfa_context *ctx, const sfa_kv_cache *cache,
                                 const sfa_tensor *k_new, const sfa_tensor *v_new, void *stream);

/* sfa_kv_append for mode hash: also writes the new keys' buckets,
** k_hash_new[b, h, t] (int32 [B, Hkv, Tn], contiguous along Tn) to
** cache->k_hash (required) at the same position p (the same rows are
** skipped), in the same kernel. k_hash_new must not share memory with the
** cache. */
SFA_API sfa_status sfa_kv_append_hash(sfa_context *ctx, const sfa_kv_cache *cache,
                                      const sfa_tensor *k_new, const sfa_tensor *v_new,
                                      const sfa_tensor *k_hash_new, void *stream);

/* Checks the values sfa_decode relies on without checking: seqused[b] in
** [Tn, capacity] (Tn: the new tokens of the step, 1..16) and, for a paged
** cache, page_table[b, i] in [0, num_pages) for every page i that holds a
** position below seqused[b]. Synchronizes stream and copies seqused and the
** page table to the host. On a violation SFA_ERR_INVALID_ARGUMENT with a
** message naming the array, the index and the value. */
SFA_API sfa_status sfa_check_kv_cache(sfa_context *ctx, const sfa_kv_cache *cache, int Tn,
                                      void *stream);

/* ---------------------------------------------------------------- CPU reference */

/* Host-side mode inputs of the CPU reference; unused members NULL. All arrays
** are contiguous. bias and mask are [batches, heads, rows, Tk] with batches = B
** or 1 (0 means B), heads = Hq, Hkv or 1 and rows = Tq or 1 (broadcast), like
** the GPU's. */
typedef struct sfa_host_extras {
  const int32_t *q_idx, *k_idx;   /* [B, Hq, Tq], [B, Hkv, Tk] */
  const int32_t *q_hash, *k_hash; /* [B, Hq, Tq], [B, Hkv, Tk] */
  const float *bias;
  int bias_heads, bias_rows;
  const uint8_t *mask;
  int mask_heads, mask_rows;
  int bias_batches, mask_batches; /* B or 1; 0 = B */
  const float *alibi_slopes;      /* [alibi_batches, Hq] (dense, window) */
  int alibi_batches;              /* B or 1; 0 = B */
} sfa_host_extras;

/* Float64 reference of the forward pass on host arrays in float32, contiguous
** [B, H, T, D]. Semantics exactly as docs/semantics.md (the modes' rules, the
** score options strict_causal, softcap and ALiBi): rows with no allowed key
** get o = 0 and lse = -inf. lse and ex may be NULL (dense needs none). */
SFA_API sfa_status sfa_reference_forward(const sfa_attention_params *params, int B, int Hq,
                                 int Hkv, int Tq, int Tk, int D, const float *q,
                                 const float *k, const float *v, const sfa_host_extras *ex,
                                 float *o, float *lse, char *err, size_t errlen);

/* Float64 reference of the backward pass, on the arrays of
** sfa_reference_forward plus dout [B, Hq, Tq, D] (float32, contiguous).
** Writes dq [B, Hq, Tq, D], dk and dv [B, Hkv, Tk, D] (summed over the query
** heads of a group) and, when dbias is not NULL (ex->bias required), dbias in
** the shape of ex->bias (summed over its broadcast dims). The gradient goes
** through the softcap; the ALiBi slopes get none. Rows with no allowed
** key contribute nothing. Both references spread large problems over
** threads ($SFA_REF_THREADS, default the online CPUs); the results do not
** depend on the thread count. */
SFA_API sfa_status sfa_reference_backward(const sfa_attention_params *params, int B, int Hq,
                                  int Hkv, int Tq, int Tk, int D, const float *q,
                                  const float *k, const float *v, const sfa_host_extras *ex,
                                  const float *dout, float *dq, float *dk, float *dv,
                                  float *dbias, char *err, size_t errlen);

/* sfa_reference_backward with the gradient of lse too (sfa_backward_dlse):
** dlse [B, Hq, Tq] float32, contiguous, or NULL (then exactly
** sfa_reference_backward). */
SFA_API sfa_status sfa_reference_backward_dlse(const sfa_attention_params *params, int B,
                                               int Hq, int Hkv, int Tq, int Tk, int D,
                                               const float *q, const float *k, const float *v,
                                               const sfa_host_extras *ex, const float *dout,
                                               const float *dlse, float *dq, float *dk,
                                               float *dv, float *dbias, char *err,
                                               size_t errlen);

/* Float64 reference of sfa_merge_attention on host arrays in float32,
** contiguous: o_parts [N, rows, D], lse_parts [N, rows], o [rows, D], lse
** [rows] (lse may be NULL). The same semantics: -inf parts weigh 0 (their o
** is not read), all -inf gives o = 0 and lse = -inf, NaN or +inf in an lse
** gives NaN. N >= 1, rows >= 0, D >= 1. */
SFA_API sfa_status sfa_reference_merge(int N, int64_t rows, int D, const float *o_parts,
                                       const float *lse_parts, float *o, float *lse, char *err,
                                       size_t errlen);

#ifdef __cplusplus
}
#endif
#endif /* SFA_H */
