/* quickstart.c -- causal attention on the GPU with sfa, checked against the
** float64 CPU reference. Build against an installed sfa and the CUDA runtime:
**   cc -std=c11 quickstart.c $(pkg-config --cflags --libs sfa) \
**      -I/usr/local/cuda/include -L/usr/local/cuda/lib64 -lcudart -lm -o quickstart */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>

#include <cuda_runtime_api.h>
#include <sfa.h>

enum { B = 1, H = 4, T = 512, D = 64 };

int main(void) {
  const size_t n = (size_t)B * H * T * D;
  float *x = malloc(3 * n * sizeof *x), *ref = malloc(n * sizeof *ref);
  uint16_t *h = malloc(3 * n * sizeof *h), *out = malloc(n * sizeof *out);
  for (size_t i = 0; i < 3 * n; i++) {  /* q, k, v: random, rounded to bf16 */
    h[i] = sfa_float_to_half(SFA_DTYPE_BF16, (float)rand() / RAND_MAX * 2.f - 1.f);
    x[i] = sfa_half_to_float(SFA_DTYPE_BF16, h[i]);
  }
  void *dev = NULL;  /* q, k, v and o in one allocation */
  if (cudaMalloc(&dev, 4 * n * sizeof *h) != cudaSuccess) {
    fprintf(stderr, "quickstart: no usable CUDA device\n");
    return 1;
  }
  cudaMemcpy(dev, h, 3 * n * sizeof *h, cudaMemcpyHostToDevice);

  sfa_context *ctx = NULL;
  sfa_options opts;
  sfa_options_init(&opts);
  sfa_status st = sfa_context_create(&ctx, &opts);
  int64_t shape[4] = {B, H, T, D};
  sfa_tensor q, k, v, o;
  sfa_tensor_init(&q, (uint16_t *)dev, SFA_DTYPE_BF16, 4, shape);
  sfa_tensor_init(&k, (uint16_t *)dev + n, SFA_DTYPE_BF16, 4, shape);
  sfa_tensor_init(&v, (uint16_t *)dev + 2 * n, SFA_DTYPE_BF16, 4, shape);
  sfa_tensor_init(&o, (uint16_t *)dev + 3 * n, SFA_DTYPE_BF16, 4, shape);
  sfa_attention_params p;
  sfa_params_init(&p);
  p.causal = 1;
  if (st == SFA_OK) st = sfa_forward(ctx, &p, &q, &k, &v, NULL, &o, NULL, NULL);
  if (st != SFA_OK) {
    fprintf(stderr, "quickstart: %s: %s\n", sfa_status_string(st), sfa_last_error(ctx));
    return 1;
  }
  cudaMemcpy(out, (uint16_t *)dev + 3 * n, n * sizeof *out, cudaMemcpyDeviceToHost);

  char err[256];
  st = sfa_reference_forward(&p, B, H, H, T, T, D, x, x + n, x + 2 * n, NULL, ref, NULL, err,
                             sizeof err);
  double diff = 0, norm = 0;
  for (size_t i = 0; i < n; i++) {
    double d = sfa_half_to_float(SFA_DTYPE_BF16, out[i]) - ref[i];
    diff += d * d;
    norm += (double)ref[i] * ref[i];
  }
  printf("sfa %s: causal attention [%d, %d, %d, %d] bf16, relative error %.2e\n", sfa_version(),
         B, H, T, D, sqrt(diff / norm));
  sfa_context_destroy(ctx);
  cudaFree(dev);
  return st == SFA_OK && sqrt(diff / norm) < 1e-2 ? 0 : 1;
}
