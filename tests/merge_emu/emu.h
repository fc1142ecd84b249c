// emu.h -- tests/merge_emu: a host emulation of the CUDA builtins that the merge
// kernel (templates/util_merge.lt) uses: each group of G lanes runs as G
// std::threads; shuffles and __any_sync go through per-group slots with a
// barrier (a deadlock or a mask mismatch is a bug of the kernel). Also the
// block-wide builtins of tests/helpers_emu (the hash and top-k kernels).
#include <algorithm>
#include <barrier>
#include <cassert>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <cstdio>
#include <cstdlib>
#define __device__
#define __global__
#define __forceinline__ inline
#define __launch_bounds__(x)
struct emu_dim { unsigned x, y, z; };
extern thread_local emu_dim threadIdx, blockIdx;
extern emu_dim blockDim, gridDim;
struct emu_group {
  std::barrier<> *bar;
  unsigned long long slot[32];
  unsigned mask;   /* the lanes of the group */
  int base, width;
};
extern thread_local emu_group *emu_g;
static inline int emu_lane() { return threadIdx.x & 31; }
static inline void emu_check(unsigned mask, int width) {
  if (mask != emu_g->mask) { fprintf(stderr, "shuffle mask %08x, group %08x\n", mask, emu_g->mask); abort(); }
  if (width != emu_g->width) { fprintf(stderr, "shuffle width %d, group %d\n", width, emu_g->width); abort(); }
}
template <typename T> static inline T emu_xchg(T v, int src) {
  unsigned long long x = 0;
  memcpy(&x, &v, sizeof v);
  emu_g->slot[emu_lane()] = x;
  emu_g->bar->arrive_and_wait();
  unsigned long long y = emu_g->slot[src];
  emu_g->bar->arrive_and_wait();
  T r;
  memcpy(&r, &y, sizeof r);
  return r;
}
template <typename T> static inline T __shfl_xor_sync(unsigned mask, T v, int o, int width = 32) {
  emu_check(mask, width);
  const int l = emu_lane();
  const int src = (l & ~(width - 1)) + ((l ^ o) & (width - 1));
  return emu_xchg(v, src);
}
template <typename T> static inline T __shfl_sync(unsigned mask, T v, int s, int width = 32) {
  emu_check(mask, width);
  return emu_xchg(v, (emu_lane() & ~(width - 1)) + (s & (width - 1)));
}
static inline int __any_sync(unsigned mask, int pred) {
  if (mask != emu_g->mask) abort();
  emu_g->slot[emu_lane()] = pred != 0;
  emu_g->bar->arrive_and_wait();
  int any = 0;
  for (int i = 0; i < 32; i++) if ((mask >> i) & 1u) any |= (int)emu_g->slot[i];
  emu_g->bar->arrive_and_wait();
  return any;
}
static inline float __int_as_float(int x) { float f; memcpy(&f, &x, 4); return f; }
static inline float __uint_as_float(unsigned x) { float f; memcpy(&f, &x, 4); return f; }
static inline unsigned __float_as_uint(float f) { unsigned x; memcpy(&x, &f, 4); return x; }
extern "C" uint16_t sfa_float_to_half(int dtype, float f);
extern "C" float sfa_half_to_float(int dtype, uint16_t h);
static inline float emu_h2f(unsigned short x) { return sfa_half_to_float(0, x); }
static inline unsigned short emu_f2h(float f) { return sfa_float_to_half(0, f); }
static inline unsigned emu_f2bf(float f) { return sfa_float_to_half(1, f); }
/* Block-wide builtins (util_common.lt's block scan, the hash and top-k
   kernels of tests/helpers_emu): a launch that runs whole blocks sets
   emu_block, the barrier of the block's threads, and gives every warp a
   group of 32; without it (the merge kernel's groups) they abort. */
extern std::barrier<> *emu_block;
static inline void __syncthreads() {
  if (!emu_block) abort();
  emu_block->arrive_and_wait();
}
static inline void __syncwarp(unsigned mask = 0xffffffffu) {
  if (!emu_block || mask != emu_g->mask) abort();
  emu_g->bar->arrive_and_wait();
}
template <typename T> static inline T __shfl_up_sync(unsigned mask, T v, int o, int width = 32) {
  emu_check(mask, width);
  const int l = emu_lane();
  return emu_xchg(v, (l & (width - 1)) >= o ? l - o : l);
}
static inline unsigned __ballot_sync(unsigned mask, int pred) {
  if (mask != emu_g->mask) abort();
  emu_g->slot[emu_lane()] = pred != 0;
  emu_g->bar->arrive_and_wait();
  unsigned m = 0;
  for (int i = 0; i < 32; i++) if ((mask >> i) & 1u) m |= (unsigned)emu_g->slot[i] << i;
  emu_g->bar->arrive_and_wait();
  return m;
}
static inline unsigned __match_any_sync(unsigned mask, int v) {
  if (mask != emu_g->mask) abort();
  emu_g->slot[emu_lane()] = (unsigned)v;
  emu_g->bar->arrive_and_wait();
  unsigned m = 0;
  for (int i = 0; i < 32; i++)
    if (((mask >> i) & 1u) && emu_g->slot[i] == (unsigned)v) m |= 1u << i;
  emu_g->bar->arrive_and_wait();
  return m;
}
static inline int __popc(unsigned x) { return __builtin_popcount(x); }
static inline int __ffs(int x) { return __builtin_ffs(x); }
template <typename T> static inline T atomicAdd(T *p, T v) { return __atomic_fetch_add(p, v, __ATOMIC_SEQ_CST); }
using std::max;
using std::min;
#define __shared__ static
#define __align__(x) alignas(x)
