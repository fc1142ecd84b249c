// main.cpp -- tests/helpers_emu: runs the generated hash_sort, permute and
// topk (fp32) kernels on the host (builtins emulated by tests/merge_emu/emu.h:
// a block's threads as std::threads) on packed batches against host
// computations: the stable sort per (sequence, head), the gathers and
// scatters, the top-k mask per sequence with causal alignment and zeros past
// a sequence's keys; the fixed-length path of the sort once; and prefix sums
// that break their contract (built with ASan by run.sh: no access out of
// bounds).
#include "emu.h"
#include <algorithm>
#include <memory>
#include <random>
#include <thread>
#include <vector>
thread_local emu_dim threadIdx, blockIdx;
emu_dim blockDim, gridDim;
thread_local emu_group *emu_g;
std::barrier<> *emu_block;
alignas(16) static unsigned char emu_dyn_smem[256 * 1024];
namespace ks {
#include "sort.inc"
}
namespace kp {
#include "permute.inc"
}
namespace kt {
#include "topk.inc"
}

// Every block of the grid, one after another, its threads as std::threads.
template <typename F> static void launch(unsigned grid, unsigned block, F kernel) {
  blockDim = {block, 1, 1};
  gridDim = {grid, 1, 1};
  for (unsigned b = 0; b < grid; b++) {
    std::barrier<> bar(block);
    std::vector<std::unique_ptr<std::barrier<>>> wb;
    std::vector<emu_group> gs(block / 32);
    for (unsigned w = 0; w < block / 32; w++) {
      wb.push_back(std::make_unique<std::barrier<>>(32));
      gs[w].bar = wb[w].get(), gs[w].mask = 0xffffffffu, gs[w].base = 0, gs[w].width = 32;
    }
    emu_block = &bar;
    std::vector<std::thread> th;
    for (unsigned t = 0; t < block; t++)
      th.emplace_back([&, t] {
        threadIdx = {t, 0, 0};
        blockIdx = {b, 0, 0};
        emu_g = &gs[t / 32];
        kernel();
      });
    for (auto &x : th) x.join();
    emu_block = nullptr;
  }
}

static int fails = 0;
#define CHECK(c, ...)                          \
  do {                                         \
    if (!(c)) {                                \
      fprintf(stderr, "FAIL: " __VA_ARGS__);   \
      fprintf(stderr, "\n");                   \
      if (++fails > 10) exit(1);               \
    }                                          \
  } while (0)

// Packed hash sort + gather + scatter of lengths len, H heads, nb buckets,
// rows of D floats; the sort's block has `warps` warps.
static void hash_case(const std::vector<int> &len, int H, int nb, int D, int warps, unsigned seed) {
  std::mt19937 rng(seed);
  const int B = (int)len.size();
  std::vector<int> cu(B + 1, 0);
  for (int b = 0; b < B; b++) cu[b + 1] = cu[b] + len[b];
  const int T = cu[B];
  std::vector<int> bucket((size_t)H * T), idx((size_t)H * T, -7), hash((size_t)H * T, -7);
  for (auto &v : bucket) v = (int)(rng() % (unsigned)(nb + 2)) - (rng() % 8 == 0 ? 5 : 0);
  ks::sfa_hash_sort_args a;
  memset(&a, 0, sizeof a);
  a.bucket = (ks::u64)bucket.data(), a.bk_sh = T, a.bk_st = 1;
  a.idx = (ks::u64)idx.data(), a.ix_sh = T, a.ix_st = 1;
  a.hash = (ks::u64)hash.data(), a.hs_sh = T, a.hs_st = 1;
  a.heads = H, a.t = T, a.nb = nb, a.cu = (ks::u64)cu.data(), a.batch = B;
  launch((unsigned)(B * H), 32u * warps, [&] { ks::sfa_hashsort_sm90(a); });
  for (int h = 0; h < H; h++)
    for (int b = 0; b < B; b++) {
      std::vector<int> ord(len[b]);
      for (int t = 0; t < len[b]; t++) ord[t] = t;
      auto bin = [&](int t) {
        int v = bucket[(size_t)h * T + cu[b] + t];
        return v >= 0 && v < nb ? v : nb;
      };
      std::stable_sort(ord.begin(), ord.end(), [&](int x, int y) { return bin(x) < bin(y); });
      for (int i = 0; i < len[b]; i++) {
        const size_t at = (size_t)h * T + cu[b] + i;
        CHECK(idx[at] == ord[i], "sort B=%d h=%d seq %d i=%d: idx %d, want %d", B, h, b, i, idx[at], ord[i]);
        const int want = bin(ord[i]) == nb ? 0x7fffffff : bin(ord[i]);
        CHECK(hash[at] == want, "sort seq %d i=%d: hash %d, want %d", b, i, hash[at], want);
      }
    }
  // gather x [T, H, D] -> xs, then scatter back -> o
  std::vector<float> x((size_t)T * H * D), xs(x.size(), -1.f), o(x.size(), -1.f);
  for (auto &v : x) v = (float)(rng() % 100000);
  for (int scatter = 0; scatter < 2; scatter++) {
    kp::sfa_permute_args p;
    memset(&p, 0, sizeof p);
    const std::vector<float> &src = scatter ? xs : x;
    std::vector<float> &dst = scatter ? o : xs;
    p.src = (kp::u64)src.data(), p.s_sh = D * 4, p.s_st = (kp::i64)H * D * 4;
    p.dst = (kp::u64)dst.data(), p.d_sh = D * 4, p.d_st = (kp::i64)H * D * 4;
    p.idx = (kp::u64)idx.data(), p.i_sh = T, p.i_st = 1;
    p.vbytes = 4, p.nvec = D, p.rows_per_tile = D >= 8 ? 1 : 8 / D;
    p.heads = H, p.rows = T, p.limit = T, p.tiles_per_bh = (T + p.rows_per_tile - 1) / p.rows_per_tile;
    p.tiles = (kp::i64)H * p.tiles_per_bh, p.scatter = scatter, p.cu = (kp::u64)cu.data(), p.batch = B;
    launch(3, 64, [&] { kp::sfa_permute_sm90(p); });  // 3 CTAs: the grid-stride loop
  }
  for (int b = 0; b < B; b++)
    for (int i = 0; i < len[b]; i++)
      for (int h = 0; h < H; h++)
        for (int e = 0; e < D; e++) {
          const size_t r = ((size_t)(cu[b] + i) * H + h) * D + e;
          const size_t s = ((size_t)(cu[b] + idx[(size_t)h * T + cu[b] + i]) * H + h) * D + e;
          CHECK(xs[r] == x[s], "gather seq %d row %d h %d", b, i, h);
          CHECK(o[r] == x[r], "scatter seq %d row %d h %d", b, i, h);
        }
}

// The fixed-length path: B batches of T, no prefix sums.
static void hash_fixed_case(int B, int H, int T, int nb, int warps) {
  std::mt19937 rng(B * 1000 + T);
  std::vector<int> bucket((size_t)B * H * T), idx(bucket.size()), hash(bucket.size());
  for (auto &v : bucket) v = (int)(rng() % (unsigned)nb);
  ks::sfa_hash_sort_args a;
  memset(&a, 0, sizeof a);
  a.bucket = (ks::u64)bucket.data(), a.bk_sb = (ks::i64)H * T, a.bk_sh = T, a.bk_st = 1;
  a.idx = (ks::u64)idx.data(), a.ix_sb = (ks::i64)H * T, a.ix_sh = T, a.ix_st = 1;
  a.hash = (ks::u64)hash.data(), a.hs_sb = (ks::i64)H * T, a.hs_sh = T, a.hs_st = 1;
  a.heads = H, a.t = T, a.nb = nb;
  launch((unsigned)(B * H), 32u * warps, [&] { ks::sfa_hashsort_sm90(a); });
  for (int bh = 0; bh < B * H; bh++) {
    std::vector<int> ord(T);
    for (int t = 0; t < T; t++) ord[t] = t;
    const int *bk = bucket.data() + (size_t)bh * T;
    std::stable_sort(ord.begin(), ord.end(), [&](int x, int y) { return bk[x] < bk[y]; });
    for (int i = 0; i < T; i++) CHECK(idx[(size_t)bh * T + i] == ord[i], "fixed sort bh %d i %d", bh, i);
  }
}

// Packed top-k (fp32 bias [H, total_q, K], mask rows of ms bytes) against a host sort.
static void topk_case(const std::vector<int> &lq, const std::vector<int> &lk, int H, int K, int w, int causal,
                      int ints, unsigned seed) {
  std::mt19937 rng(seed);
  const int B = (int)lq.size();
  std::vector<int> cq(B + 1, 0), ck(B + 1, 0);
  for (int b = 0; b < B; b++) cq[b + 1] = cq[b] + lq[b], ck[b + 1] = ck[b] + lk[b];
  const int TQ = cq[B], ms = (K + 15) / 16 * 16 + 16;
  std::vector<float> bias((size_t)H * TQ * K);
  std::normal_distribution<float> nd;
  for (auto &v : bias) v = ints ? (float)(int)(rng() % 5) : nd(rng);
  std::vector<unsigned char> maskbuf((size_t)H * TQ * ms + 32, 0xEE);
  unsigned char *mask = maskbuf.data() + (16 - (uintptr_t)maskbuf.data() % 16) % 16;
  kt::sfa_topk_args a;
  memset(&a, 0, sizeof a);
  a.bias = (kt::u64)bias.data(), a.b_sh = (kt::i64)TQ * K, a.b_sq = K;
  a.mask = (kt::u64)mask, a.m_sh = (kt::i64)TQ * ms, a.m_sq = ms;
  a.rows = (kt::i64)H * TQ, a.heads = H, a.tq = TQ, a.tk = K, a.w = w, a.causal = causal;
  a.vec = 0, a.cached = 1, a.cu_rows = (kt::u64)cq.data(), a.cu_keys = (kt::u64)ck.data(), a.batch = B;
  launch(5, 256, [&] { kt::sfa_topk_fp32_sm90(a); });
  for (int h = 0; h < H; h++)
    for (int b = 0; b < B; b++)
      for (int i = 0; i < lq[b]; i++) {
        const int r = cq[b] + i, nk = std::min(lk[b], K);
        int n = nk;
        if (causal) n = std::max(0, std::min(nk, i + nk - lq[b] + 1));
        std::vector<int> js(n);
        const float *row = bias.data() + ((size_t)h * TQ + r) * K;
        for (int j = 0; j < n; j++) js[j] = j;
        std::stable_sort(js.begin(), js.end(), [&](int x, int y) { return row[x] > row[y]; });
        std::vector<int> want(K, 0);
        for (int q = 0; q < n && q < w; q++) want[js[q]] = 1;
        const unsigned char *m = mask + ((size_t)h * TQ + r) * ms;
        for (int j = 0; j < K; j++)
          CHECK(m[j] == want[j], "topk h %d seq %d row %d col %d: %d, want %d", h, b, i, j, m[j], want[j]);
        for (int j = K; j < ms; j++) CHECK(m[j] == 0xEE, "topk: padding column %d written", j);
      }
}

// Prefix sums that break the contract: every kernel completes inside its arrays.
static void wrong_cu_case() {
  const int B = 5, H = 2, T = 40, K = 24;
  std::vector<int> cu = {-5, 30, 7, 1000000, INT32_MIN, 3};
  std::vector<int> bucket((size_t)H * T, 1), idx((size_t)H * T, 0), hash((size_t)H * T, 0);
  ks::sfa_hash_sort_args a;
  memset(&a, 0, sizeof a);
  a.bucket = (ks::u64)bucket.data(), a.bk_sh = T, a.bk_st = 1;
  a.idx = (ks::u64)idx.data(), a.ix_sh = T, a.ix_st = 1;
  a.hash = (ks::u64)hash.data(), a.hs_sh = T, a.hs_st = 1;
  a.heads = H, a.t = T, a.nb = 4, a.cu = (ks::u64)cu.data(), a.batch = B;
  launch((unsigned)(B * H), 64, [&] { ks::sfa_hashsort_sm90(a); });
  for (auto &v : idx) v = v * 7 - 3;  // any values
  std::vector<float> x((size_t)T * H * 4, 1.f), xs(x.size());
  kp::sfa_permute_args p;
  memset(&p, 0, sizeof p);
  p.src = (kp::u64)x.data(), p.s_sh = 16, p.s_st = H * 16;
  p.dst = (kp::u64)xs.data(), p.d_sh = 16, p.d_st = H * 16;
  p.idx = (kp::u64)idx.data(), p.i_sh = T, p.i_st = 1;
  p.vbytes = 4, p.nvec = 4, p.rows_per_tile = 2, p.heads = H, p.rows = T, p.limit = T;
  p.tiles_per_bh = T / 2, p.tiles = (kp::i64)H * T / 2, p.cu = (kp::u64)cu.data(), p.batch = B;
  launch(2, 64, [&] { kp::sfa_permute_sm90(p); });
  std::vector<float> bias((size_t)H * T * K, 0.5f);
  std::vector<unsigned char> mask((size_t)H * T * 32);
  kt::sfa_topk_args t;
  memset(&t, 0, sizeof t);
  t.bias = (kt::u64)bias.data(), t.b_sh = (kt::i64)T * K, t.b_sq = K;
  t.mask = (kt::u64)mask.data(), t.m_sh = (kt::i64)T * 32, t.m_sq = 32;
  t.rows = (kt::i64)H * T, t.heads = H, t.tq = T, t.tk = K, t.w = 3, t.causal = 1, t.cached = 1;
  t.cu_rows = t.cu_keys = (kt::u64)cu.data(), t.batch = B;
  launch(3, 256, [&] { kt::sfa_topk_fp32_sm90(t); });
}

int main() {
  hash_case({0, 1, 5, 0, 100, 1, 64, 65, 0}, 2, 4, 3, 2, 1);
  hash_case({1}, 1, 1, 8, 1, 2);
  hash_case({300, 2, 0, 129}, 3, 16, 1, 4, 3);
  hash_case({0, 0, 7}, 1, 1000, 2, 2, 4);
  hash_fixed_case(2, 2, 200, 8, 4);
  hash_fixed_case(1, 1, 1, 1, 1);
  topk_case({0, 1, 7, 20, 1, 3}, {3, 1, 30, 9, 0, 3}, 2, 35, 4, 1, 0, 5);
  topk_case({0, 1, 7, 20, 1, 3}, {3, 1, 30, 9, 0, 3}, 1, 30, 5, 0, 1, 6);
  topk_case({2, 5}, {40, 5}, 1, 33, 0, 1, 0, 7);
  topk_case({4}, {300}, 1, 300, 100, 1, 1, 8);
  wrong_cu_case();
  if (fails) {
    fprintf(stderr, "helpers_emu: %d failures\n", fails);
    return 1;
  }
  printf("helpers_emu: packed hash sort, permute and top-k match the host computations\n");
  return 0;
}
