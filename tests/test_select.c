/*
** test_select.c -- the tuning policy of a launch (sfa__select_spec,
** runtime/select.c) with a fake device name and a fake tuner (the real
** sfa__tune_run on a fake timer): "off" is the heuristic default and touches
** nothing; "cached" takes the db's row and the default on a miss, never
** tunes; "on" tunes a miss once, records and saves the winner, and a fresh
** context reads it back; passes the tuner cannot launch behave as "cached";
** a failing tuner warns once and gives the default; choices are memoized per
** key (no db or file access after the first call), per device and per size
** bucket; concurrent first calls tune once. No GPU.
*/
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "runtime/autotune.h"
#include "runtime/internal.h"
#include "gen/gen_internal.h"
#include "testutil.h"

/* ------------------------------------------------------------ the fakes */

typedef struct fakes {
  pthread_mutex_t lock;
  int names, tunes;      /* calls */
  int fail;              /* the tuner fails */
  int sleep_us;          /* the tuner takes this long */
  sfa_kernel_spec last_base;
  sfa__problem last_prob;
} fakes;

static fakes F;

static sfa_status fake_name(void *user, const sfa__device *dev, char *buf, size_t n, char *err,
                            size_t errlen) {
  fakes *f = user;
  pthread_mutex_lock(&f->lock);
  f->names++;
  pthread_mutex_unlock(&f->lock);
  snprintf(buf, n, "Fake GPU %d", (int)dev->dev);
  return SFA_OK;
}

/* The fake timer: the last candidate is the fastest by far. */
typedef struct timer {
  const sfa_kernel_spec *target;
} timer;

/* The tile and the mma kind (a wgmma candidate can share its tile with a sync one). */
static int same_tile(const sfa_kernel_spec *a, const sfa_kernel_spec *b) {
  return a->block_m == b->block_m && a->block_n == b->block_n &&
         a->num_warps == b->num_warps && a->num_stages == b->num_stages && a->mma == b->mma;
}

static int ft_run(void *u, const sfa_kernel_spec *s, float *ms) {
  timer *t = u;
  *ms = same_tile(s, t->target) ? 1.0f : 2.0f;
  return 0;
}

static sfa_status fake_tune(void *user, sfa_context *ctx, const sfa__device *dev,
                            const sfa_kernel_spec *base, const sfa__problem *prob,
                            sfa__tune_result *res, char *err, size_t errlen) {
  fakes *f = user;
  pthread_mutex_lock(&f->lock);
  f->tunes++;
  f->last_base = *base;
  f->last_prob = *prob;
  int fail = f->fail, us = f->sleep_us;
  pthread_mutex_unlock(&f->lock);
  if (us) usleep((useconds_t)us);
  memset(res, 0, sizeof *res);
  if (fail) return sfa__fail(err, errlen, SFA_ERR_CUDA, "fake CUDA failure");
  sfa_kernel_spec *c = NULL;
  int n = 0;
  sfa_status st = sfa__tune_candidates(base, &c, &n, err, errlen);
  if (st != SFA_OK) return st;
  timer t = {&c[n - 1]};
  sfa__tune_ops ops = {NULL, ft_run, NULL, 0.0, 1, 3, NULL};
  st = sfa__tune_run(c, n, &ops, &t, res, err, errlen);
  free(c);
  return st;
}

static const sfa__select_hooks HOOKS = {fake_name, fake_tune, &F};

/* ------------------------------------------------------------ set-up */

static char cache[512];

static void setup(void) {
  pthread_mutex_init(&F.lock, NULL);
  F.names = F.tunes = F.fail = F.sleep_us = 0;
  snprintf(cache, sizeof cache, "%s", tu_mkdtemp());
}

static void teardown(void) { tu_rm_rf(cache); }

static sfa_context *make_ctx(sfa_tune_policy policy) {
  sfa_options o;
  sfa_options_init(&o);
  o.cache_dir = cache;
  o.tune = policy;
  sfa_context *ctx = NULL;
  ck_assert_int_eq(sfa_context_create(&ctx, &o), SFA_OK);
  sfa__select_set_hooks(ctx, &HOOKS);
  return ctx;
}

static sfa__device fake_dev(int ordinal, int cc) {
  sfa__device d;
  memset(&d, 0, sizeof d);
  d.dev = ordinal;
  d.cc = cc;
  d.arch = cc > 90 ? 90 : cc;
  d.smem_optin = 227 * 1024;
  return d;
}

static sfa_attention_params P; /* dense */

static sfa__problem problem(int64_t B, int64_t H, int64_t T) {
  sfa__problem p;
  memset(&p, 0, sizeof p);
  p.params = &P;
  p.B = B, p.Hq = p.Hkv = H, p.Tq = p.Tk = T;
  p.has_lse = 1;
  return p;
}

static sfa_kernel_spec cls(sfa_pass pass, int d, int arch, unsigned flags) {
  sfa_kernel_spec s;
  memset(&s, 0, sizeof s);
  s.pass = pass, s.mode = SFA_MODE_DENSE, s.dtype = SFA_DTYPE_BF16, s.head_dim = d;
  s.arch = arch, s.flags = flags;
  return s;
}

static sfa_kernel_spec dflt(sfa_kernel_spec s) {
  ck_assert_int_eq(sfa_spec_default(&s, NULL, 0), SFA_OK);
  return s;
}

/* The default of problem p: for its key length (sfa__spec_for_keys). */
static sfa_kernel_spec dflt_for(sfa_kernel_spec s, const sfa__problem *p) {
  s = dflt(s);
  sfa__spec_for_keys(&s, p->Tk);
  return s;
}

/* The last of the tuning candidates: what the fake tuner makes win. */
static sfa_kernel_spec target_of(sfa_kernel_spec s) {
  sfa_kernel_spec *c = NULL, t;
  int n = 0;
  ck_assert_int_eq(sfa__tune_candidates(&s, &c, &n, NULL, 0), SFA_OK);
  ck_assert_int_ge(n, 2);
  t = c[n - 1];
  free(c);
  return t;
}

static sfa_kernel_spec select_ok(sfa_context *ctx, const sfa__device *d, sfa_kernel_spec s,
                                 const sfa__problem *p) {
  sfa_status st = sfa__select_spec(ctx, d, &s, p);
  ck_assert_msg(st == SFA_OK, "select: %s", sfa_last_error(ctx));
  ck_assert_int_eq(sfa_spec_validate(&s, NULL, 0), SFA_OK);
  return s;
}

static void assert_tile(const sfa_kernel_spec *a, const sfa_kernel_spec *b) {
  char x[128], y[128];
  sfa_spec_name(a, x, sizeof x);
  sfa_spec_name(b, y, sizeof y);
  ck_assert_msg(memcmp(a, b, sizeof *a) == 0, "got %s, want %s", x, y);
}

/* A db row for (dev name, cc, class, problem) with config cfg, saved. */
static void put_row(const char *gpu, int cc, const sfa_kernel_spec *cls_, const sfa__problem *p,
                    sfa_tune_config cfg) {
  sfa_tunedb *db = NULL;
  char err[512] = "";
  ck_assert_msg(sfa_tunedb_open(&db, cache, gpu, cc, 1, err, sizeof err) == SFA_OK, "%s", err);
  sfa_tune_row row;
  memset(&row, 0, sizeof row);
  ck_assert_int_eq(sfa_tunedb_make_key(&row.key, gpu, cc, cls_, p->Tq, p->Tk, p->B * p->Hq, err,
                                       sizeof err), SFA_OK);
  row.cfg = cfg;
  row.time_us = 100, row.default_time_us = 120;
  ck_assert_msg(sfa_tunedb_put(db, &row, err, sizeof err) == SFA_OK, "%s", err);
  ck_assert_msg(sfa_tunedb_save(db, err, sizeof err) == SFA_OK, "%s", err);
  sfa_tunedb_close(db);
}

static int db_file_exists(const char *gpu, int cc) {
  char name[256], path[1024];
  struct stat sb;
  ck_assert_int_eq(sfa_tunedb_file_name(gpu, cc, name, sizeof name, NULL, 0), SFA_OK);
  snprintf(path, sizeof path, "%s/tuning/%s", cache, name);
  return stat(path, &sb) == 0;
}

/* ------------------------------------------------------------ off */

START_TEST(off_is_the_default_and_touches_nothing) {
  sfa_context *ctx = make_ctx(SFA_TUNE_OFF);
  sfa__device d = fake_dev(0, 90);
  sfa__problem p = problem(4, 16, 4096);
  sfa_kernel_spec c = cls(SFA_PASS_FWD, 128, 90, SFA_FEAT_CAUSAL);
  put_row("Fake GPU 0", 90, &c, &p, (sfa_tune_config){64, 32, 4, 1, 0});
  sfa_kernel_spec s = select_ok(ctx, &d, c, &p);
  sfa_kernel_spec want = dflt(c);
  assert_tile(&s, &want);
  sfa__select_stats st;
  sfa__select_get_stats(ctx, &st);
  ck_assert_int_eq(F.names, 0);
  ck_assert_int_eq(F.tunes, 0);
  ck_assert_uint_eq(st.calls, 0);
  ck_assert_uint_eq(st.db_opens, 0);
  sfa_context_destroy(ctx);
}
END_TEST

START_TEST(an_invalid_class_is_an_error_naming_the_field) {
  const sfa_tune_policy pol[3] = {SFA_TUNE_OFF, SFA_TUNE_CACHED, SFA_TUNE_ON};
  for (int i = 0; i < 3; i++) {
    sfa_context *ctx = make_ctx(pol[i]);
    sfa__device d = fake_dev(0, 90);
    sfa__problem p = problem(1, 2, 128);
    sfa_kernel_spec s = cls(SFA_PASS_FWD, 72, 90, 0);
    ck_assert_int_eq(sfa__select_spec(ctx, &d, &s, &p), SFA_ERR_INVALID_ARGUMENT);
    ck_assert_msg(strstr(sfa_last_error(ctx), "head_dim") &&
                  strstr(sfa_last_error(ctx), "no dense fwd kernel"), "%s", sfa_last_error(ctx));
    ck_assert_int_eq(F.tunes, 0);
    sfa_context_destroy(ctx);
  }
}
END_TEST

/* ------------------------------------------------------------ cached */

START_TEST(cached_uses_the_db_and_the_default_on_a_miss) {
  sfa__device d = fake_dev(0, 90);
  sfa__problem p = problem(4, 16, 4096);
  sfa_kernel_spec c = cls(SFA_PASS_FWD, 64, 90, SFA_FEAT_CAUSAL);
  const sfa_tune_config cfg = {64, 32, 4, 1, 0};
  put_row("Fake GPU 0", 90, &c, &p, cfg);
  sfa_context *ctx = make_ctx(SFA_TUNE_CACHED);

  sfa_kernel_spec s = select_ok(ctx, &d, c, &p), want = c;
  sfa_tunedb_config_apply(&cfg, &want);
  assert_tile(&s, &want);
  /* the same size bucket (T 3000 -> 4096, B*H 60 -> 64): the memo answers */
  sfa__problem p2 = problem(3, 20, 3000);
  s = select_ok(ctx, &d, c, &p2);
  assert_tile(&s, &want);
  /* another bucket, flags or head dim: the default, no tuning */
  sfa__problem p3 = problem(4, 16, 8192);
  s = select_ok(ctx, &d, c, &p3);
  want = dflt(c);
  assert_tile(&s, &want);
  sfa_kernel_spec c2 = cls(SFA_PASS_FWD, 64, 90, 0);
  s = select_ok(ctx, &d, c2, &p);
  want = dflt_for(c2, &p);
  assert_tile(&s, &want);

  sfa__select_stats st;
  sfa__select_get_stats(ctx, &st);
  ck_assert_int_eq(F.tunes, 0);
  ck_assert_int_eq(F.names, 1);
  ck_assert_uint_eq(st.db_opens, 1);
  ck_assert_uint_eq(st.calls, 4);
  ck_assert_uint_eq(st.memo_hits, 1);
  ck_assert_uint_eq(st.db_hits, 1);
  ck_assert_uint_eq(st.db_saves, 0);
  sfa_context_destroy(ctx);
}
END_TEST

/* After the first call of a key nothing is read again: the db file can go. */
START_TEST(cached_lookups_are_memoized) {
  sfa__device d = fake_dev(0, 90);
  sfa__problem p = problem(2, 8, 1024);
  sfa_kernel_spec c = cls(SFA_PASS_FWD, 128, 90, 0);
  const sfa_tune_config cfg = {64, 64, 4, 2, 0};
  put_row("Fake GPU 0", 90, &c, &p, cfg);
  sfa_context *ctx = make_ctx(SFA_TUNE_CACHED);
  sfa_kernel_spec want = c;
  sfa_tunedb_config_apply(&cfg, &want);
  sfa_kernel_spec s = select_ok(ctx, &d, c, &p);
  assert_tile(&s, &want);
  tu_rm_rf(cache); /* the db file and its directory are gone */
  for (int i = 0; i < 1000; i++) {
    s = select_ok(ctx, &d, c, &p);
    assert_tile(&s, &want);
  }
  sfa__select_stats st;
  sfa__select_get_stats(ctx, &st);
  ck_assert_uint_eq(st.memo_hits, 1000);
  ck_assert_uint_eq(st.db_opens, 1);
  ck_assert_int_eq(F.names, 1);
  sfa_context_destroy(ctx);
  mkdir(cache, 0700);
}
END_TEST

/* A row whose tiles do not fit the arch (sm_86 shared memory) is not used. */
START_TEST(cached_row_invalid_for_the_arch_gives_the_default) {
  sfa__device d = fake_dev(0, 86);
  sfa__problem p = problem(1, 8, 1024);
  sfa_kernel_spec c = cls(SFA_PASS_FWD, 256, 86, 0);
  sfa_kernel_spec bad = c;
  sfa_tunedb_config_apply(&(sfa_tune_config){64, 128, 4, 2, 0}, &bad);
  ck_assert_int_ne(sfa_spec_validate(&bad, NULL, 0), SFA_OK);
  put_row("Fake GPU 0", 86, &c, &p, (sfa_tune_config){64, 128, 4, 2, 0});
  sfa_context *ctx = make_ctx(SFA_TUNE_CACHED);
  sfa_kernel_spec s = select_ok(ctx, &d, c, &p), want = dflt(c);
  assert_tile(&s, &want);
  sfa_context_destroy(ctx);
}
END_TEST

/* A tuned backward row of either mma kind is used on sm_90: a wgmma row with
** other tiles than the default, and an mma.sync row in place of the wgmma
** default. */
START_TEST(cached_bwd_rows_of_either_mma_kind_are_used) {
  sfa__device d = fake_dev(0, 90);
  sfa__problem p = problem(2, 8, 2048);
  sfa_kernel_spec c = cls(SFA_PASS_BWD, 128, 90, SFA_FEAT_CAUSAL);
  put_row("Fake GPU 0", 90, &c, &p, (sfa_tune_config){64, 64, 4, 1, SFA_SPEC_MMA_WGMMA});
  sfa_context *ctx = make_ctx(SFA_TUNE_CACHED);
  sfa_kernel_spec s = select_ok(ctx, &d, c, &p);
  ck_assert(s.block_m == 64 && s.block_n == 64 && s.num_warps == 4 && s.num_stages == 1 &&
            s.mma == SFA_SPEC_MMA_WGMMA);
  sfa_context_destroy(ctx);
  put_row("Fake GPU 0", 90, &c, &p, (sfa_tune_config){64, 128, 8, 2, SFA_SPEC_MMA_SYNC});
  ctx = make_ctx(SFA_TUNE_CACHED);
  s = select_ok(ctx, &d, c, &p);
  ck_assert(s.block_m == 64 && s.block_n == 128 && s.num_warps == 8 && s.num_stages == 2 &&
            s.mma == SFA_SPEC_MMA_SYNC);
  sfa_context_destroy(ctx);
}
END_TEST

/* A warp-specialized forward (mma ws) reads q, k and v through tensor maps:
** its db row is used where the copy engine can address them (no_tma 0) and
** gives way to the wgmma default where it cannot; forcing the kind (SFA_MMA_WS)
** likewise. */
START_TEST(ws_gives_way_to_wgmma_where_the_copy_engine_cannot_address) {
  sfa__device d = fake_dev(0, 90);
  sfa__problem p = problem(2, 8, 4096);
  sfa_kernel_spec c = cls(SFA_PASS_FWD, 128, 90, SFA_FEAT_CAUSAL);
  put_row("Fake GPU 0", 90, &c, &p, (sfa_tune_config){128, 128, 12, 3, SFA_SPEC_MMA_WS});
  sfa_context *ctx = make_ctx(SFA_TUNE_CACHED);
  sfa_kernel_spec s = select_ok(ctx, &d, c, &p);
  ck_assert(s.block_m == 128 && s.num_warps == 12 && s.num_stages == 3 &&
            s.mma == SFA_SPEC_MMA_WS);
  p.no_tma = 1;
  s = select_ok(ctx, &d, c, &p);
  sfa_kernel_spec want = c;
  ck_assert_int_eq(sfa__spec_default_mma(&want, 1, NULL, 0), SFA_OK);
  assert_tile(&s, &want);
  sfa_context_destroy(ctx);

  sfa_options o;
  sfa_options_init(&o);
  o.cache_dir = cache;
  o.mma = SFA_MMA_WS;
  ck_assert_int_eq(sfa_context_create(&ctx, &o), SFA_OK);
  p.no_tma = 0;
  s = select_ok(ctx, &d, c, &p);
  ck_assert_int_eq(s.mma, SFA_SPEC_MMA_WS);
  p.no_tma = 1;
  s = select_ok(ctx, &d, c, &p);
  assert_tile(&s, &want);
  /* the ws backward likewise (hash too); and where it serves no class (a
  ** window bias), wgmma */
  sfa_kernel_spec b = cls(SFA_PASS_BWD, 128, 90, SFA_FEAT_CAUSAL);
  p.no_tma = 0;
  s = select_ok(ctx, &d, b, &p);
  ck_assert_int_eq(s.mma, SFA_SPEC_MMA_WS);
  p.no_tma = 1;
  s = select_ok(ctx, &d, b, &p);
  ck_assert_int_eq(s.mma, SFA_SPEC_MMA_WGMMA);
  b.mode = SFA_MODE_HASH, b.flags = 0, p.no_tma = 0;
  s = select_ok(ctx, &d, b, &p);
  ck_assert_int_eq(s.mma, SFA_SPEC_MMA_WS);
  b.mode = SFA_MODE_WINDOW, b.flags = SFA_FEAT_CAUSAL | SFA_FEAT_BIAS;
  s = select_ok(ctx, &d, b, &p);
  ck_assert_int_eq(s.mma, SFA_SPEC_MMA_WGMMA);
  sfa_context_destroy(ctx);
}
END_TEST

/* Each device (ordinal, cc) has its own db; memo entries do not leak across. */
START_TEST(devices_have_their_own_db_and_memo) {
  sfa__device d0 = fake_dev(0, 90), d1 = fake_dev(1, 90);
  sfa__problem p = problem(4, 16, 4096);
  sfa_kernel_spec c = cls(SFA_PASS_FWD, 64, 90, 0);
  const sfa_tune_config cfg = {64, 32, 4, 1, 0};
  put_row("Fake GPU 1", 90, &c, &p, cfg);
  sfa_context *ctx = make_ctx(SFA_TUNE_CACHED);
  sfa_kernel_spec s0 = select_ok(ctx, &d0, c, &p), s1 = select_ok(ctx, &d1, c, &p);
  sfa_kernel_spec want1 = c, want0 = dflt_for(c, &p);
  sfa_tunedb_config_apply(&cfg, &want1);
  assert_tile(&s0, &want0);
  assert_tile(&s1, &want1);
  s0 = select_ok(ctx, &d0, c, &p);
  assert_tile(&s0, &want0);
  sfa__select_stats st;
  sfa__select_get_stats(ctx, &st);
  ck_assert_uint_eq(st.db_opens, 2);
  ck_assert_uint_eq(st.memo_hits, 1);
  sfa_context_destroy(ctx);
}
END_TEST

/* The default depends on the key length where short rows were measured
** faster on other tiles (sfa__spec_for_keys): the D 64 ws forward of dense
** and qk_drop on sm_90 takes one consumer (m64n128w8s2) up to 4096 keys and
** three (m192n128w16s4) above; under policy off and on a db miss alike, not
** with softcap (two consumers at every length), D 128 or sm_80. Packed
** sequences: the longest one's keys decide, sfa_extras.max_seqlen_k
** (sfa__problem.keys_max) where given, else the total; the memo keeps the two
** apart. */
START_TEST(short_rows_take_one_consumer_up_to_4096_keys) {
  sfa__device d = fake_dev(0, 90), d80 = fake_dev(1, 80);
  sfa__problem p4k = problem(16, 16, 4096), p4k1 = problem(16, 16, 4097),
               p1k = problem(4, 16, 1024);
  p4k1.Tq = 100; /* the key length decides */
  for (int policy = 0; policy < 2; policy++) {
    sfa_context *ctx = make_ctx(policy ? SFA_TUNE_CACHED : SFA_TUNE_OFF);
    for (int mode = 0; mode < 2; mode++) {
      sfa_kernel_spec c = cls(SFA_PASS_FWD, 64, 90, mode ? 0 : SFA_FEAT_CAUSAL);
      c.mode = mode ? SFA_MODE_QK_DROP : SFA_MODE_DENSE;
      const sfa__problem *ps[] = {&p1k, &p4k, &p4k1};
      for (int i = 0; i < 3; i++) {
        sfa_kernel_spec s = select_ok(ctx, &d, c, ps[i]);
        const int one = ps[i]->Tk <= 4096;
        ck_assert_int_eq(s.mma, SFA_SPEC_MMA_WS);
        ck_assert_msg(s.block_m == (one ? 64 : 192) && s.block_n == 128 &&
                          s.num_warps == (one ? 8 : 16) && s.num_stages == (one ? 2 : 4),
                      "policy %d mode %d Tk %lld: m%dn%dw%ds%d", policy, mode,
                      (long long)ps[i]->Tk, s.block_m, s.block_n, s.num_warps, s.num_stages);
      }
      /* softcap, D 128, sm_80: the default at 1024 keys too */
      sfa_kernel_spec o = c;
      o.flags = SFA_FEAT_SOFTCAP;
      sfa_kernel_spec s = select_ok(ctx, &d, o, &p1k), want = dflt(o);
      assert_tile(&s, &want);
      /* packed: 65536 keys in all, sequences of at most 4096 (given), of
         at most 8192 (given), of unknown lengths */
      o = c;
      o.flags |= SFA_FEAT_VARLEN;
      const int64_t hint[] = {4096, 0, 8192, 4096};
      for (int h = 0; h < 4; h++) {
        sfa__problem pv = problem(1, 16, 65536);
        pv.keys_max = hint[h];
        s = select_ok(ctx, &d, o, &pv);
        const int one = hint[h] == 4096;
        ck_assert_msg(s.block_m == (one ? 64 : 192) && s.num_warps == (one ? 8 : 16),
                      "policy %d mode %d packed, max_seqlen_k %lld: m%dn%dw%ds%d", policy,
                      mode, (long long)hint[h], s.block_m, s.block_n, s.num_warps,
                      s.num_stages);
      }
      o = c;
      o.head_dim = 128;
      s = select_ok(ctx, &d, o, &p1k), want = dflt(o);
      assert_tile(&s, &want);
      o = c;
      o.arch = 80;
      s = select_ok(ctx, &d80, o, &p1k), want = dflt(o);
      assert_tile(&s, &want);
    }
    sfa_context_destroy(ctx);
  }
}
END_TEST

/* ------------------------------------------------------------ on */

START_TEST(on_tunes_a_miss_once_and_records_it) {
  sfa__device d = fake_dev(0, 90);
  sfa__problem p = problem(2, 16, 16384);
  sfa_kernel_spec c = cls(SFA_PASS_FWD, 128, 90, SFA_FEAT_CAUSAL);
  sfa_kernel_spec want = target_of(c);
  sfa_kernel_spec def = dflt(c);
  ck_assert(!same_tile(&want, &def) && !db_file_exists("Fake GPU 0", 90));
  ck_assert(want.mma == SFA_SPEC_MMA_WS); /* so the db round trip carries mma ws */

  sfa_context *ctx = make_ctx(SFA_TUNE_ON);
  sfa_kernel_spec s = select_ok(ctx, &d, c, &p);
  assert_tile(&s, &want);
  ck_assert_int_eq(F.tunes, 1);
  ck_assert_int_eq(F.last_prob.Tq, 16384);
  ck_assert_int_eq(F.last_prob.B, 2);
  ck_assert(F.last_prob.params == &P);
  ck_assert_int_eq(F.last_base.head_dim, 128);
  /* the class's flags; the mma kind is a configuration choice, not a flag */
  ck_assert_uint_eq(F.last_base.flags, SFA_FEAT_CAUSAL);
  for (int i = 0; i < 10; i++) {
    s = select_ok(ctx, &d, c, &p);
    assert_tile(&s, &want);
  }
  ck_assert_int_eq(F.tunes, 1);
  sfa__select_stats st;
  sfa__select_get_stats(ctx, &st);
  ck_assert_uint_eq(st.tunes, 1);
  ck_assert_uint_eq(st.db_saves, 1);
  ck_assert_uint_eq(st.memo_hits, 10);
  ck_assert(db_file_exists("Fake GPU 0", 90));
  sfa_context_destroy(ctx);

  /* the recorded row: winner and both times */
  sfa_tunedb *db = NULL;
  ck_assert_int_eq(sfa_tunedb_open(&db, cache, "Fake GPU 0", 90, 1, NULL, 0), SFA_OK);
  ck_assert_uint_eq(sfa_tunedb_count(db), 1);
  sfa_tune_row row;
  ck_assert_int_eq(sfa_tunedb_row(db, 0, &row), SFA_OK);
  ck_assert_str_eq(row.key.bucket, "tq16384_tk16384_bh32");
  ck_assert_int_eq(row.cfg.block_m, want.block_m);
  ck_assert_int_eq(row.cfg.block_n, want.block_n);
  ck_assert_int_eq(row.cfg.mma, want.mma);
  ck_assert_double_eq_tol(row.time_us, 1000.0, 1e-6);
  ck_assert_double_eq_tol(row.default_time_us, 2000.0, 1e-6);
  sfa_tunedb_close(db);

  /* a new context (a new process) reads it: cached and on, without tuning */
  const sfa_tune_policy pol[2] = {SFA_TUNE_CACHED, SFA_TUNE_ON};
  for (int i = 0; i < 2; i++) {
    ctx = make_ctx(pol[i]);
    s = select_ok(ctx, &d, c, &p);
    assert_tile(&s, &want);
    sfa_context_destroy(ctx);
  }
  ck_assert_int_eq(F.tunes, 1);
}
END_TEST

/* Passes the tuner cannot launch: "on" behaves as "cached". */
START_TEST(on_for_a_pass_it_cannot_launch_is_cached) {
  ck_assert_int_eq(sfa__tune_can_launch(SFA_PASS_FWD), 1);
  ck_assert_int_eq(sfa__tune_can_launch(SFA_PASS_BWD), 1);
  ck_assert_int_eq(sfa__tune_can_launch(SFA_PASS_BWD_DQ), 0); /* the deterministic dq pass */
  sfa_kernel_spec c = cls(SFA_PASS_BWD_DQ, 64, 90, 0);
  if (sfa_spec_default(&c, NULL, 0) != SFA_OK) c.pass = (sfa_pass)1;
  if (sfa_spec_default(&c, NULL, 0) != SFA_OK) {
    printf("on_for_a_pass_it_cannot_launch_is_cached: no backward spec in this build, "
           "checked with a stand-in\n");
    return;
  }
  c = cls(c.pass, 64, 90, 0);
  sfa__device d = fake_dev(0, 90);
  sfa__problem hit = problem(1, 4, 2048), miss = problem(1, 4, 512);
  sfa_kernel_spec rowspec = dflt(c), want = c;
  sfa_tune_config cfg = sfa_tunedb_config_of(&rowspec);
  cfg.num_stages = cfg.num_stages == 1 ? 2 : 1; /* not the default */
  sfa_tunedb_config_apply(&cfg, &want);
  int row_valid = sfa_spec_validate(&want, NULL, 0) == SFA_OK;
  put_row("Fake GPU 0", 90, &c, &hit, cfg);
  sfa_context *ctx = make_ctx(SFA_TUNE_ON);
  sfa_kernel_spec s = select_ok(ctx, &d, c, &hit);
  if (row_valid) assert_tile(&s, &want);
  s = select_ok(ctx, &d, c, &miss);
  sfa_kernel_spec def = dflt(c);
  assert_tile(&s, &def);
  ck_assert_int_eq(F.tunes, 0);
  sfa_context_destroy(ctx);
}
END_TEST

START_TEST(a_failing_tuner_warns_once_and_gives_the_default) {
  char log[600];
  snprintf(log, sizeof log, "%s/stderr.txt", cache);
  F.fail = 1;
  sfa__device d = fake_dev(0, 90);
  sfa__problem p = problem(1, 8, 4096);
  sfa_kernel_spec c = cls(SFA_PASS_FWD, 64, 90, 0), want = dflt_for(c, &p), s;
  sfa_context *ctx = make_ctx(SFA_TUNE_ON);
  int saved = tu_capture_stderr(log);
  for (int i = 0; i < 5; i++) {
    s = select_ok(ctx, &d, c, &p);
    assert_tile(&s, &want);
  }
  tu_restore_stderr(saved);
  FILE *f = fopen(log, "r");
  ck_assert_ptr_nonnull(f);
  char text[4096] = "";
  size_t n = fread(text, 1, sizeof text - 1, f);
  text[n] = '\0';
  fclose(f);
  ck_assert_int_eq(F.tunes, 1);
  ck_assert_int_eq(tu_count_substr(text, "autotuning"), 1);
  ck_assert_msg(strstr(text, "fake CUDA failure") && strstr(text, "heuristic default"), "%s",
                text);
  sfa__select_stats st;
  sfa__select_get_stats(ctx, &st);
  ck_assert_uint_eq(st.tune_failures, 1);
  ck_assert_uint_eq(st.db_saves, 0);
  sfa_context_destroy(ctx);
  ck_assert(!db_file_exists("Fake GPU 0", 90));
}
END_TEST

/* Threads that meet a new key together: one tuning run. */
typedef struct targ {
  sfa_context *ctx;
  sfa_kernel_spec out;
  int rc;
} targ;

static void *thread_select(void *a) {
  targ *t = a;
  sfa__device d = fake_dev(0, 90);
  sfa__problem p = problem(1, 16, 8192);
  t->out = cls(SFA_PASS_FWD, 64, 90, SFA_FEAT_CAUSAL);
  t->rc = sfa__select_spec(t->ctx, &d, &t->out, &p);
  return NULL;
}

START_TEST(concurrent_first_calls_tune_once) {
  F.sleep_us = 50000;
  sfa_context *ctx = make_ctx(SFA_TUNE_ON);
  pthread_t th[6];
  targ a[6];
  for (int i = 0; i < 6; i++) {
    a[i].ctx = ctx;
    ck_assert_int_eq(pthread_create(&th[i], NULL, thread_select, &a[i]), 0);
  }
  for (int i = 0; i < 6; i++) pthread_join(th[i], NULL);
  sfa_kernel_spec want = target_of(cls(SFA_PASS_FWD, 64, 90, SFA_FEAT_CAUSAL));
  for (int i = 0; i < 6; i++) {
    ck_assert_int_eq(a[i].rc, SFA_OK);
    assert_tile(&a[i].out, &want);
  }
  ck_assert_int_eq(F.tunes, 1);
  sfa_context_destroy(ctx);
}
END_TEST

/* Without a driver the real hooks fail cleanly: a warning, then the default. */
START_TEST(real_hooks_without_a_driver) {
  if (tu_driver_present()) {
    printf("real_hooks_without_a_driver: libcuda.so.1 is present; not run\n");
    return;
  }
  char log[600];
  snprintf(log, sizeof log, "%s/stderr.txt", cache);
  sfa_context *ctx = make_ctx(SFA_TUNE_ON);
  sfa__select_set_hooks(ctx, NULL);
  sfa__device d = fake_dev(0, 90);
  sfa__problem p = problem(1, 8, 4096);
  sfa_kernel_spec c = cls(SFA_PASS_FWD, 64, 90, 0), want = dflt_for(c, &p);
  int saved = tu_capture_stderr(log);
  sfa_kernel_spec s = select_ok(ctx, &d, c, &p);
  tu_restore_stderr(saved);
  assert_tile(&s, &want);
  sfa__select_stats st;
  sfa__select_get_stats(ctx, &st);
  ck_assert_uint_eq(st.db_opens, 0);
  ck_assert_uint_eq(st.tune_failures, 1);
  sfa_context_destroy(ctx);
}
END_TEST

static Suite *select_suite(void) {
  Suite *s = suite_create("select");
  TCase *tc = tcase_create("select");
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, off_is_the_default_and_touches_nothing);
  tcase_add_test(tc, an_invalid_class_is_an_error_naming_the_field);
  tcase_add_test(tc, cached_uses_the_db_and_the_default_on_a_miss);
  tcase_add_test(tc, cached_lookups_are_memoized);
  tcase_add_test(tc, cached_row_invalid_for_the_arch_gives_the_default);
  tcase_add_test(tc, cached_bwd_rows_of_either_mma_kind_are_used);
  tcase_add_test(tc, ws_gives_way_to_wgmma_where_the_copy_engine_cannot_address);
  tcase_add_test(tc, devices_have_their_own_db_and_memo);
  tcase_add_test(tc, short_rows_take_one_consumer_up_to_4096_keys);
  tcase_add_test(tc, on_tunes_a_miss_once_and_records_it);
  tcase_add_test(tc, on_for_a_pass_it_cannot_launch_is_cached);
  tcase_add_test(tc, a_failing_tuner_warns_once_and_gives_the_default);
  tcase_add_test(tc, concurrent_first_calls_tune_once);
  tcase_add_test(tc, real_hooks_without_a_driver);
  suite_add_tcase(s, tc);
  return s;
}

int main(void) {
  sfa_params_init(&P);
  P.causal = 1;
  return tu_run_suite(select_suite());
}
