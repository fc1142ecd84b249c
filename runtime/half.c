/*
** half.c -- float <-> fp16 / bf16 bit conversions on the host (round to
** nearest even; NaN stays NaN, overflow goes to infinity). Used by programs
** that fill or read device tensors, the tests and examples among them.
*/
#include <math.h>
#include <string.h>

#include "sfa.h"

static uint16_t to_bf16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  if ((x & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((x >> 16) | 0x40);
  return (uint16_t)((x + 0x7fffu + ((x >> 16) & 1u)) >> 16);
}

static float from_bf16(uint16_t h) {
  uint32_t x = (uint32_t)h << 16;
  float f;
  memcpy(&f, &x, 4);
  return f;
}

static uint16_t to_fp16(float f) {
  uint32_t x;
  memcpy(&x, &f, 4);
  uint16_t sign = (uint16_t)((x >> 16) & 0x8000u);
  uint32_t ax = x & 0x7fffffffu;
  if (ax > 0x7f800000u) return sign | 0x7e00u;
  if (ax >= 0x477ff000u) return sign | 0x7c00u;
  if (ax < 0x38800000u) {
    float a;
    memcpy(&a, &ax, 4);
    return sign | (uint16_t)rintf(a * 16777216.0f);
  }
  return sign | (uint16_t)((ax - 0x38000000u + 0xfffu + ((ax >> 13) & 1u)) >> 13);
}

static float from_fp16(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu, x;
  if (e == 0) {
    float f = ldexpf((float)m, -24);
    return sign ? -f : f;
  }
  x = e == 31 ? sign | 0x7f800000u | (m << 13) : sign | ((e + 112) << 23) | (m << 13);
  float f;
  memcpy(&f, &x, 4);
  return f;
}

uint16_t sfa_float_to_half(sfa_dtype dtype, float f) {
  return dtype == SFA_DTYPE_BF16 ? to_bf16(f) : to_fp16(f);
}

float sfa_half_to_float(sfa_dtype dtype, uint16_t h) {
  return dtype == SFA_DTYPE_BF16 ? from_bf16(h) : from_fp16(h);
}
