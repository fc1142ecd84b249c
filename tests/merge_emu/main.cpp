// main.cpp -- tests/merge_emu: runs the merge kernel's generated source (emulated on
// the host by emu.h) on random partials against sfa_reference_merge (run.sh).
#include "emu.h"
#include <thread>
#include <vector>
#include <random>
thread_local emu_dim threadIdx, blockIdx;
emu_dim blockDim, gridDim;
thread_local emu_group *emu_g;
std::barrier<> *emu_block;
#include "kernel.inc"
extern "C" int sfa_reference_merge(int N, int64_t rows, int D, const float *o_parts,
                                   const float *lse_parts, float *o, float *lse, char *err, size_t errlen);

static void launch(const sfa_merge_args &a, unsigned grid) {
  blockDim = {256, 1, 1};
  gridDim = {grid, 1, 1};
  const int G = a.group;
  for (unsigned b = 0; b < grid; b++)
    for (int t0 = 0; t0 < 256; t0 += G) {
      std::barrier<> bar(G);
      emu_group g;
      g.bar = &bar, g.width = G, g.base = t0 & 31;
      g.mask = G == 32 ? 0xffffffffu : ((1u << G) - 1u) << (t0 & 31);
      std::vector<std::thread> th;
      for (int l = 0; l < G; l++)
        th.emplace_back([&, l] {
          threadIdx = {(unsigned)(t0 + l), 0, 0};
          blockIdx = {b, 0, 0};
          emu_g = &g;
          sfa_merge_sm90(a);
        });
      for (auto &t : th) t.join();
    }
}

static size_t es(int dt) { return dt == 2 ? 4 : 2; }
static void put(void *buf, int dt, size_t i, float f) {
  if (dt == 2) memcpy((char *)buf + 4 * i, &f, 4);
  else ((uint16_t *)buf)[i] = sfa_float_to_half(dt, f);
}
static float get(const void *buf, int dt, size_t i) {
  if (dt == 2) { float f; memcpy(&f, (const char *)buf + 4 * i, 4); return f; }
  return sfa_half_to_float(dt, ((const uint16_t *)buf)[i]);
}
static float rnd(int dt, float f) { return dt == 2 ? f : sfa_half_to_float(dt, sfa_float_to_half(dt, f)); }

struct ten {  // [A, H, T(, D)] in a poisoned byte buffer
  std::vector<unsigned char> buf;
  int64_t st[4];
  size_t off;  // elements
  int dt;
  char *data() { return (char *)buf.data() + 16 + off * es(dt); }  // buf is 16-aligned + 16
};
static void make(ten &x, int dt, int rank, int64_t A, int64_t H, int64_t T, int64_t D, int layout, int pad, int off) {
  const int64_t last = rank == 4 ? D : T, lp = last + pad;
  if (rank == 4) {
    x.st[3] = 1;
    if (layout) x.st[1] = lp, x.st[2] = H * lp, x.st[0] = T * H * lp;
    else x.st[2] = lp, x.st[1] = T * lp, x.st[0] = H * T * lp;
  } else x.st[2] = 1, x.st[1] = lp, x.st[0] = H * lp;
  x.dt = dt, x.off = off;
  x.buf.assign(32 + (off + A * x.st[0]) * es(dt) + 32, 0xff);
}
static int aligned_rows(ten &x) {
  // buf.data() from std::vector<unsigned char> is 16-aligned on glibc; the +16 keeps it
  if ((uintptr_t)x.data() % 16) return 0;
  for (int i = 0; i < 3; i++) if (x.st[i] * (int64_t)es(x.dt) % 16) return 0;
  return 1;
}

static int bad_total = 0;
static void run(int N, int B, int H, int T, int D, int in, int out, int layout, int pad, int off, double pninf,
                int with_lse, unsigned seed, int small_grid) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> nd;
  std::uniform_real_distribution<double> ud;
  const size_t rows = (size_t)B * H * T;
  std::vector<float> rop((size_t)N * rows * D), rlp((size_t)N * rows), ro(rows * D), rl(rows);
  ten op, lp, o, l;
  make(op, in, 4, (int64_t)N * B, H, T, D, layout, pad, off);
  make(lp, 2, 3, (int64_t)N * B, H, T, 0, 0, pad ? 3 : 0, 0);
  make(o, out, 4, B, H, T, D, layout, pad, off);
  make(l, 2, 3, B, H, T, 0, 0, pad ? 1 : 0, 0);
  for (int n = 0; n < N; n++)
    for (int b = 0; b < B; b++)
      for (int h = 0; h < H; h++)
        for (int t = 0; t < T; t++) {
          const size_t r = ((size_t)b * H + h) * T + t, ri = (size_t)n * rows + r;
          float lv = 3 * nd(rng);
          if (ud(rng) < pninf) lv = -INFINITY;
          if (r % 17 == 3) lv = -INFINITY;
          if (r % 29 == 5 && n == N / 2) lv = NAN;
          if (r % 31 == 7 && n == 0) lv = INFINITY;
          rlp[ri] = lv;
          const int64_t a = (int64_t)n * B + b;
          ((float *)lp.data())[a * lp.st[0] + h * lp.st[1] + t] = lv;
          for (int d = 0; d < D; d++) {
            float v = rnd(in, nd(rng));
            if (lv == -INFINITY) v = NAN;
            rop[ri * D + d] = v;
            put(op.data(), in, a * op.st[0] + h * op.st[1] + t * op.st[2] + d, v);
          }
        }
  char err[256];
  if (sfa_reference_merge(N, rows, D, rop.data(), rlp.data(), ro.data(), rl.data(), err, sizeof err)) abort();
  sfa_merge_args a;
  memset(&a, 0, sizeof a);
  a.op = (u64)op.data(), a.op_sb = op.st[0], a.op_sh = op.st[1], a.op_st = op.st[2];
  a.lp = (u64)lp.data(), a.lp_sb = lp.st[0], a.lp_sh = lp.st[1];
  a.o = (u64)o.data(), a.o_sb = o.st[0], a.o_sh = o.st[1], a.o_st = o.st[2];
  if (with_lse) a.lse = (u64)l.data(), a.l_sb = l.st[0], a.l_sh = l.st[1];
  a.batch = B, a.rows = rows, a.parts = N, a.heads = H, a.t = T, a.d = D, a.in_dt = in, a.out_dt = out;
  const int64_t chunks = (D * (int64_t)es(in) + 15) / 16;
  int g = 1;
  while (g < 32 && g < chunks) g *= 2;
  a.group = g;
  a.vec = aligned_rows(op) | aligned_rows(o) << 1;
  unsigned grid = (unsigned)((rows * g + 255) / 256);
  if (small_grid) grid = 1;
  launch(a, grid);
  const double eps = out == 2 ? 2e-6 : out == 0 ? 1.0 / 1024 : 1.0 / 128;
  std::vector<unsigned char> touched(o.buf.size(), 0);
  long bad = 0;
  for (int b = 0; b < B; b++)
    for (int h = 0; h < H; h++)
      for (int t = 0; t < T; t++) {
        const size_t r = ((size_t)b * H + h) * T + t;
        for (int d = 0; d < D; d++) {
          const size_t i = b * o.st[0] + h * o.st[1] + t * o.st[2] + d;
          memset(touched.data() + (o.data() - (char *)o.buf.data()) + i * es(out), 1, es(out));
          const float gv = get(o.data(), out, i), w = ro[r * D + d];
          const bool ok = std::isnan(w) ? std::isnan(gv) : fabs((double)gv - w) <= eps * fabs(w) + 4e-6 * (1 + fabs(w));
          if (!ok && bad++ < 5) fprintf(stderr, "o[%d,%d,%d,%d] = %.8g want %.8g\n", b, h, t, d, gv, w);
        }
        const float gl = ((float *)l.data())[b * l.st[0] + h * l.st[1] + t], wl = rl[r];
        if (with_lse) {
          const bool ok = std::isnan(wl) ? std::isnan(gl) : std::isinf(wl) ? gl == wl : fabs(gl - wl) <= 2e-6 * (1 + fabs(wl));
          if (!ok && bad++ < 5) fprintf(stderr, "lse[%d,%d,%d] = %.8g want %.8g\n", b, h, t, gl, wl);
        } else {
          uint32_t u; memcpy(&u, &gl, 4);
          if (u != 0xffffffffu && bad++ < 5) fprintf(stderr, "lse written\n");
        }
      }
  for (size_t i = 0; i < o.buf.size(); i++)
    if (!touched[i] && o.buf[i] != 0xff && bad++ < 5) fprintf(stderr, "byte %zu outside o written\n", i);
  printf("%s N=%d B=%d H=%d T=%d D=%d %d->%d layout %d pad %d off %d vec %d group %d grid %u: %ld bad\n",
         bad ? "FAIL" : "ok  ", N, B, H, T, D, in, out, layout, pad, off, a.vec, g, grid, bad);
  bad_total += bad != 0;
}

int main() {
  for (int i = 0; i < 3; i++)
    for (int j = 0; j < 3; j++) {
      run(3, 2, 3, 17, 64, i, j, 0, 0, 0, 0.25, 1, 10 * i + j, 0);
      run(2, 2, 3, 17, 128, i, j, 1, 0, 0, 0.25, 1, 100 + 10 * i + j, 0);
      run(5, 1, 2, 9, 40, i, j, 0, 3, 0, 0.25, (i + j) % 2, 200 + 10 * i + j, 1);
    }
  const int Ns[] = {1, 2, 64, 100, 5, 4, 3, 3, 2, 33};
  const int Ds[] = {64, 128, 128, 32, 7, 256, 40, 64, 1, 24};
  const int L[] = {0, 1, 0, 0, 0, 0, 0, 1, 0, 1}, P[] = {0, 0, 0, 0, 0, 0, 3, 8, 0, 1}, O[] = {0, 0, 0, 0, 0, 0, 0, 4, 0, 1};
  for (int k = 0; k < 10; k++)
    for (int dt = 0; dt < 2; dt++)
      run(Ns[k], 2, 3, 11, Ds[k], dt ? 2 : 1, dt ? 1 : 0, L[k], P[k], O[k], 0.3, (k + dt) % 3 != 2, 1000 + 2 * k + dt, k % 2);
  printf("%d failing cases\n", bad_total);
  return bad_total != 0;
}
