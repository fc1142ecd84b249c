// kernel_probe.cu -- development harness: times one generated forward kernel
// without the runtime and checks it against a naive fp32 GPU reference.
// Build on the GPU machine (the kernel source is #included, name via -D):
//   nvcc -O2 -arch=sm_90 -DKSRC='"k.cu"' -DKNAME=sfa_fwd_... -DBM=128 -DNW=4 \
//        -DSMEM=... -DBF16=1 -DCAUSAL=1 bench/kernel_probe.cu -o probe
//   ./probe B H T D
#include KSRC
#include <cstdio>
#include <cstdlib>
#include <cmath>
#include <vector>
#include <algorithm>
#include <cuda_runtime.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>

#if BF16
typedef __nv_bfloat16 elem;
__host__ __device__ inline float tof(elem x) { return __bfloat162float(x); }
inline elem fromf(float x) { return __float2bfloat16(x); }
#else
typedef __half elem;
__host__ __device__ inline float tof(elem x) { return __half2float(x); }
inline elem fromf(float x) { return __float2half(x); }
#endif

#define CK(x) do { cudaError_t e = (x); if (e != cudaSuccess) { printf("CUDA %s at %d\n", cudaGetErrorString(e), __LINE__); exit(1); } } while (0)

// one thread per query row, fp32
__global__ void ref_kernel(const elem *q, const elem *k, const elem *v, float *o, float *lse,
                           int H, int Hkv, int T, int Tk, int D, float scale, int causal) {
  int row = blockIdx.x * blockDim.x + threadIdx.x;
  int bh = blockIdx.y;
  if (row >= T) return;
  int b = bh / H, h = bh % H, hk = h / (H / Hkv);
  const elem *qr = q + ((size_t)bh * T + row) * D;
  const elem *kb = k + ((size_t)(b * Hkv + hk) * Tk) * D;
  const elem *vb = v + ((size_t)(b * Hkv + hk) * Tk) * D;
  float m = -INFINITY, l = 0;
  float acc[256];
  for (int d = 0; d < D; ++d) acc[d] = 0;
  int kend = causal ? min(Tk, row + Tk - T + 1) : Tk;
  for (int j = 0; j < kend; ++j) {
    float s = 0;
    for (int d = 0; d < D; ++d) s += tof(qr[d]) * tof(kb[(size_t)j * D + d]);
    s *= scale;
    float mn = fmaxf(m, s), al = expf(m - mn), p = expf(s - mn);
    l = l * al + p;
    for (int d = 0; d < D; ++d) acc[d] = acc[d] * al + p * tof(vb[(size_t)j * D + d]);
    m = mn;
  }
  for (int d = 0; d < D; ++d) o[((size_t)bh * T + row) * D + d] = l > 0 ? acc[d] / l : 0;
  lse[(size_t)bh * T + row] = l > 0 ? m + logf(l) : -INFINITY;
}

int main(int argc, char **argv) {
  int B = atoi(argv[1]), H = atoi(argv[2]), T = atoi(argv[3]), D = atoi(argv[4]);
  int Tk = argc > 5 ? atoi(argv[5]) : T, Hkv = argc > 6 ? atoi(argv[6]) : H;
  int check = argc > 7 ? atoi(argv[7]) : 1;
  size_t nq = (size_t)B * H * T * D, nk = (size_t)B * Hkv * Tk * D;
  std::vector<elem> hq(nq), hk(nk), hv(nk);
  srand(1234);
  for (auto &x : hq) x = fromf((rand() / (float)RAND_MAX - 0.5f) * 4);
  for (auto &x : hk) x = fromf((rand() / (float)RAND_MAX - 0.5f) * 4);
  for (auto &x : hv) x = fromf(rand() / (float)RAND_MAX - 0.5f);
  elem *q, *k, *v, *o; float *lse, *ro, *rl;
  CK(cudaMalloc(&q, nq * 2)); CK(cudaMalloc(&k, nk * 2)); CK(cudaMalloc(&v, nk * 2)); CK(cudaMalloc(&o, nq * 2));
  CK(cudaMalloc(&lse, (size_t)B * H * T * 4));
  CK(cudaMemcpy(q, hq.data(), nq * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(k, hk.data(), nk * 2, cudaMemcpyHostToDevice));
  CK(cudaMemcpy(v, hv.data(), nk * 2, cudaMemcpyHostToDevice));
  CK(cudaMemset(o, 0xff, nq * 2));
  sfa_fwd_args a = {};
  a.q = (u64)q; a.k = (u64)k; a.v = (u64)v; a.o = (u64)o; a.lse = (u64)lse;
  a.q_st = D; a.q_sh = (i64)T * D; a.q_sb = (i64)H * T * D;
  a.o_st = D; a.o_sh = (i64)T * D; a.o_sb = (i64)H * T * D;
  a.k_st = D; a.k_sh = (i64)Tk * D; a.k_sb = (i64)Hkv * Tk * D;
  a.v_st = a.k_st; a.v_sh = a.k_sh; a.v_sb = a.k_sb;
  a.lse_sh = T; a.lse_sb = (i64)H * T;
  a.batch = B; a.hq = H; a.hkv = Hkv; a.tq = T; a.tk = Tk; a.window_left = a.window_right = -1;
  a.scale = 1.f / sqrtf((float)D); a.scale_log2 = a.scale * 1.4426950408889634f;
  CK(cudaFuncSetAttribute(KNAME, cudaFuncAttributeMaxDynamicSharedMemorySize, SMEM));
  dim3 grid((T + BM - 1) / BM, H, B);
  KNAME<<<grid, NW * 32, SMEM>>>(a);
  CK(cudaGetLastError()); CK(cudaDeviceSynchronize());
  if (check) {
    CK(cudaMalloc(&ro, nq * 4)); CK(cudaMalloc(&rl, (size_t)B * H * T * 4));
    ref_kernel<<<dim3((T + 127) / 128, B * H), 128>>>(q, k, v, ro, rl, H, Hkv, T, Tk, D, a.scale, CAUSAL);
    CK(cudaGetLastError()); CK(cudaDeviceSynchronize());
    std::vector<elem> ho(nq); std::vector<float> hro(nq), hl(B * H * T), hrl(B * H * T);
    CK(cudaMemcpy(ho.data(), o, nq * 2, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(hro.data(), ro, nq * 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(hl.data(), lse, hl.size() * 4, cudaMemcpyDeviceToHost));
    CK(cudaMemcpy(hrl.data(), rl, hl.size() * 4, cudaMemcpyDeviceToHost));
    double num = 0, den = 0, lmax = 0; size_t nan = 0;
    for (size_t i = 0; i < nq; ++i) { double x = tof(ho[i]), r = hro[i]; if (!std::isfinite(x)) ++nan; num += (x - r) * (x - r); den += r * r; }
    for (size_t i = 0; i < hl.size(); ++i) { if (std::isinf(hrl[i]) && hl[i] == hrl[i]) continue; lmax = std::max(lmax, (double)fabsf(hl[i] - hrl[i])); }
    double rel = sqrt(num / (den > 0 ? den : 1));
    printf("check B=%d H=%d Hkv=%d T=%d Tk=%d D=%d: rel=%.3e lse_max=%.3e nonfinite=%zu %s\n", B, H, Hkv, T, Tk, D, rel, lmax, nan,
           (rel < 1e-2 && lmax < 1e-2 && nan == 0) ? "PASS" : "FAIL");
  }
  cudaEvent_t e0, e1; cudaEventCreate(&e0); cudaEventCreate(&e1);
  std::vector<float> ts;
  for (int i = 0; i < 3; ++i) KNAME<<<grid, NW * 32, SMEM>>>(a);
  for (int i = 0; i < 20; ++i) {
    cudaEventRecord(e0); KNAME<<<grid, NW * 32, SMEM>>>(a); cudaEventRecord(e1); cudaEventSynchronize(e1);
    float ms; cudaEventElapsedTime(&ms, e0, e1); ts.push_back(ms);
  }
  CK(cudaGetLastError());
  std::sort(ts.begin(), ts.end());
  double pairs = CAUSAL ? 0 : (double)T * Tk;
  if (CAUSAL) for (int i = 0; i < T; ++i) pairs += std::max(0, std::min(Tk, i + Tk - T + 1));
  double fl = 4.0 * B * H * D * pairs;
  printf("time %s B=%d H=%d T=%d D=%d: median %.3f ms  %.1f TF/s\n", KSRC, B, H, T, D, ts[10], fl / ts[10] / 1e9);
  return 0;
}
