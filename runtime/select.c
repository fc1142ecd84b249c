/*
** select.c -- the tuning policy (sfa_options.tune) applied to a launch:
** sfa__select_spec (contract in autotune.h). The context keeps a memo of the
** chosen tile config per key, so that after the first call of a key a call
** is one hash lookup; the tuning dbs (one per device model, opened on first
** use); and the hooks to the outside world (device name, the GPU tuner),
** which tests replace with fakes.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/autotune.h"
#include "runtime/internal.h"
#include "runtime/tune_gpu.h"
#include "gen/gen_internal.h"

/* The memo key: everything a choice depends on, as plain ints (compared with
** memcmp; always built from a zeroed struct). */
typedef struct mkey {
  int dev, cc, arch;
  int pass, mode, dtype, head_dim;
  unsigned flags;
  int lq, lk, lbh; /* log2 of the size bucket's powers of two */
  int lkmax;       /* log2 of the longest sequence's keys (sfa__problem.keys_max) */
} mkey;

typedef struct mslot {
  int used;
  mkey k;
  sfa_tune_config cfg;
} mslot;

/* The tuning db of one device (NULL db: could not be opened; not retried). */
typedef struct tdb {
  int dev, cc;
  sfa_tunedb *db;
  char gpu[SFA_TUNEDB_GPU_MAX];
  int save_warned;
} tdb;

struct sfa__select {
  pthread_mutex_t lock;      /* memo, dbs, stats */
  pthread_mutex_t tune_lock; /* one tuning run at a time */
  mslot *slots;
  size_t nslots, n;
  tdb *dbs;
  size_t ndbs, cap_dbs;
  sfa__select_hooks hooks;
  sfa__select_stats stats;
};

/* ------------------------------------------------------------ the real hooks */

static sfa_status real_gpu_name(void *user, const sfa__device *dev, char *buf, size_t n,
                                char *err, size_t errlen) {
  const sfa_driver *d;
  sfa_status st = sfa__driver_load(&d, err, errlen);
  if (st != SFA_OK) return st;
  CUresult r = d->cuDeviceGetName(buf, (int)n, dev->dev);
  if (r != CUDA_SUCCESS) return sfa__cuda_error(r, "cuDeviceGetName", err, errlen);
  return SFA_OK;
}

/* Per-candidate lines on stderr under verbose. */
static void verbose_progress(void *user, int i, int n, const sfa__tune_entry *e) {
  char name[SFA__NAME_MAX];
  if (sfa_spec_name(&e->spec, name, sizeof name) != SFA_OK) snprintf(name, sizeof name, "?");
  if (e->status == SFA__TUNE_OK)
    fprintf(stderr, "sfa: tune [%d/%d] %s: %.4f ms\n", i + 1, n, name, e->median_ms);
  else
    fprintf(stderr, "sfa: tune [%d/%d] %s: %s: %s\n", i + 1, n, name,
            sfa__tune_status_name(e->status), e->reason);
}

static sfa_status real_tune(void *user, sfa_context *ctx, const sfa__device *dev,
                            const sfa_kernel_spec *base, const sfa__problem *prob,
                            sfa__tune_result *res, char *err, size_t errlen) {
  return sfa__tune_gpu(ctx, dev, base, prob, SFA__TUNE_WARMUP, SFA__TUNE_REPS, 0,
                       ctx->opts.verbose ? verbose_progress : NULL, NULL, res, err, errlen);
}

static const sfa__select_hooks REAL_HOOKS = {real_gpu_name, real_tune, NULL};

/* ------------------------------------------------------------ state */

sfa_status sfa__select_create(sfa__select **out) {
  *out = NULL;
  sfa__select *s = calloc(1, sizeof *s);
  if (!s) return SFA_ERR_OUT_OF_MEMORY;
  if (pthread_mutex_init(&s->lock, NULL) != 0) {
    free(s);
    return SFA_ERR_INTERNAL;
  }
  if (pthread_mutex_init(&s->tune_lock, NULL) != 0) {
    pthread_mutex_destroy(&s->lock);
    free(s);
    return SFA_ERR_INTERNAL;
  }
  s->hooks = REAL_HOOKS;
  *out = s;
  return SFA_OK;
}

void sfa__select_free(sfa__select *s) {
  if (!s) return;
  for (size_t i = 0; i < s->ndbs; i++) sfa_tunedb_close(s->dbs[i].db);
  free(s->dbs);
  free(s->slots);
  pthread_mutex_destroy(&s->tune_lock);
  pthread_mutex_destroy(&s->lock);
  free(s);
}

void sfa__select_set_hooks(sfa_context *ctx, const sfa__select_hooks *hooks) {
  if (!ctx || !ctx->select) return;
  pthread_mutex_lock(&ctx->select->lock);
  ctx->select->hooks = hooks ? *hooks : REAL_HOOKS;
  pthread_mutex_unlock(&ctx->select->lock);
}

void sfa__select_get_stats(sfa_context *ctx, sfa__select_stats *out) {
  memset(out, 0, sizeof *out);
  if (!ctx || !ctx->select) return;
  pthread_mutex_lock(&ctx->select->lock);
  *out = ctx->select->stats;
  pthread_mutex_unlock(&ctx->select->lock);
}

int sfa__tune_can_launch(sfa_pass pass) { return pass == SFA_PASS_FWD || pass == SFA_PASS_BWD; }

/* ------------------------------------------------------------ the memo */

static int lg2ceil(int64_t v) {
  int l = 0;
  while (l < 62 && ((int64_t)1 << l) < v) l++;
  return l;
}

static void make_mkey(mkey *k, const sfa__device *dev, const sfa_kernel_spec *s,
                      const sfa__problem *p) {
  memset(k, 0, sizeof *k);
  k->dev = (int)dev->dev;
  k->cc = dev->cc;
  k->arch = s->arch;
  k->pass = (int)s->pass;
  k->mode = (int)s->mode;
  k->dtype = (int)s->dtype;
  k->head_dim = s->head_dim;
  k->flags = s->flags; /* the problem; the configuration (tiles, mma) is what the memo holds */
  k->lq = lg2ceil(p->Tq);
  k->lk = lg2ceil(p->Tk);
  k->lkmax = lg2ceil(sfa__problem_keys(p)); /* packed: the hint that sfa__spec_for_keys reads */
  k->lbh = lg2ceil(p->B * p->Hq);
}

static size_t mhash(const mkey *k) {
  const unsigned char *b = (const unsigned char *)k;
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < sizeof *k; i++) h = (h ^ b[i]) * 0x100000001b3ull;
  return (size_t)(h ^ (h >> 31));
}

/* Call with the lock held. */
static mslot *memo_find(sfa__select *s, const mkey *k) {
  if (!s->nslots) return NULL;
  size_t mask = s->nslots - 1;
  for (size_t i = mhash(k) & mask;; i = (i + 1) & mask) {
    mslot *e = &s->slots[i];
    if (!e->used) return NULL;
    if (memcmp(&e->k, k, sizeof *k) == 0) return e;
  }
}

/* Call with the lock held. Keeps the load factor at most 1/2; a failure to
** grow only loses the memo entry (the choice is made again next time). */
static void memo_put(sfa__select *s, const mkey *k, const sfa_tune_config *cfg) {
  mslot *e = memo_find(s, k);
  if (e) {
    e->cfg = *cfg;
    return;
  }
  if (2 * (s->n + 1) > s->nslots) {
    size_t n = s->nslots ? 2 * s->nslots : 64;
    mslot *v = calloc(n, sizeof *v);
    if (!v) return;
    for (size_t i = 0; i < s->nslots; i++) {
      if (!s->slots[i].used) continue;
      size_t j = mhash(&s->slots[i].k) & (n - 1);
      while (v[j].used) j = (j + 1) & (n - 1);
      v[j] = s->slots[i];
    }
    free(s->slots);
    s->slots = v;
    s->nslots = n;
  }
  size_t j = mhash(k) & (s->nslots - 1);
  while (s->slots[j].used) j = (j + 1) & (s->nslots - 1);
  s->slots[j].used = 1;
  s->slots[j].k = *k;
  s->slots[j].cfg = *cfg;
  s->n++;
}

/* ------------------------------------------------------------ dbs */

/* The db entry of dev, opened on first use (a failure warns once and leaves
** db NULL). Returns a copy of the entry's fields; the db pointer stays valid
** until the context is destroyed. */
static tdb get_db(sfa_context *ctx, const sfa__device *dev) {
  sfa__select *s = ctx->select;
  tdb out;
  memset(&out, 0, sizeof out);
  pthread_mutex_lock(&s->lock);
  for (size_t i = 0; i < s->ndbs; i++)
    if (s->dbs[i].dev == (int)dev->dev && s->dbs[i].cc == dev->cc) {
      out = s->dbs[i];
      pthread_mutex_unlock(&s->lock);
      return out;
    }
  sfa__select_hooks h = s->hooks;
  pthread_mutex_unlock(&s->lock);

  char why[1024] = "";
  out.dev = (int)dev->dev;
  out.cc = dev->cc;
  sfa_status st = h.gpu_name(h.user, dev, out.gpu, sizeof out.gpu, why, sizeof why);
  if (st == SFA_OK)
    st = sfa_tunedb_open(&out.db, ctx->opts.cache_dir, out.gpu, dev->cc, 0, why, sizeof why);
  if (st != SFA_OK) {
    out.db = NULL;
    fprintf(stderr, "sfa: warning: no tuning db for device %d: %s; using the heuristic "
            "default tiles\n", (int)dev->dev, why);
  } else if (ctx->opts.verbose) {
    fprintf(stderr, "sfa: tuning db %s: %zu rows\n", sfa_tunedb_path(out.db),
            sfa_tunedb_count(out.db));
  }

  pthread_mutex_lock(&s->lock);
  for (size_t i = 0; i < s->ndbs; i++) /* another thread was quicker */
    if (s->dbs[i].dev == out.dev && s->dbs[i].cc == out.cc) {
      sfa_tunedb_close(out.db);
      out = s->dbs[i];
      pthread_mutex_unlock(&s->lock);
      return out;
    }
  if (s->ndbs == s->cap_dbs) {
    size_t cap = s->cap_dbs ? 2 * s->cap_dbs : 4;
    tdb *p = realloc(s->dbs, cap * sizeof *p);
    if (p) s->dbs = p, s->cap_dbs = cap;
  }
  if (s->ndbs < s->cap_dbs) {
    s->dbs[s->ndbs++] = out;
    if (out.db) s->stats.db_opens++;
  } else {
    sfa_tunedb_close(out.db); /* out of memory: no db this time */
    out.db = NULL;
  }
  pthread_mutex_unlock(&s->lock);
  return out;
}

/* Save after a tuning run; a failure warns once per db. */
static void save_db(sfa_context *ctx, const tdb *t) {
  char why[1200];
  sfa__select *s = ctx->select;
  if (sfa_tunedb_save(t->db, why, sizeof why) == SFA_OK) {
    pthread_mutex_lock(&s->lock);
    s->stats.db_saves++;
    pthread_mutex_unlock(&s->lock);
    return;
  }
  int warn = 0;
  pthread_mutex_lock(&s->lock);
  for (size_t i = 0; i < s->ndbs; i++)
    if (s->dbs[i].db == t->db && !s->dbs[i].save_warned) s->dbs[i].save_warned = warn = 1;
  pthread_mutex_unlock(&s->lock);
  if (warn) fprintf(stderr, "sfa: warning: %s; tuned configs are kept in memory only\n", why);
}

/* ------------------------------------------------------------ tuning */

/* Policy "on" after a db miss: tune, record and save. 1 and *spec = the
** winner when a run succeeded, else 0 (one warning). */
static int tune_miss(sfa_context *ctx, const sfa__device *dev, const tdb *t,
                     const sfa_tune_key *key, sfa_kernel_spec *spec, const sfa__problem *prob) {
  sfa__select *s = ctx->select;
  char why[1024] = "", name[SFA__NAME_MAX];
  pthread_mutex_lock(&s->lock);
  sfa__select_hooks h = s->hooks;
  s->stats.tunes++;
  pthread_mutex_unlock(&s->lock);
  if (sfa_spec_name(spec, name, sizeof name) != SFA_OK) snprintf(name, sizeof name, "?");
  if (ctx->opts.verbose)
    fprintf(stderr, "sfa: tuning %s for %s (B=%lld Hq=%lld Hkv=%lld Tq=%lld Tk=%lld)\n", name,
            key ? key->bucket : "?", (long long)prob->B, (long long)prob->Hq,
            (long long)prob->Hkv, (long long)prob->Tq, (long long)prob->Tk);
  sfa__tune_result res;
  memset(&res, 0, sizeof res);
  sfa_status st = h.tune(h.user, ctx, dev, spec, prob, &res, why, sizeof why);
  if (st != SFA_OK) {
    sfa__tune_result_free(&res);
    pthread_mutex_lock(&s->lock);
    s->stats.tune_failures++;
    pthread_mutex_unlock(&s->lock);
    fprintf(stderr, "sfa: warning: autotuning %s (%s) failed: %s; using the heuristic "
            "default tiles\n", name, key ? key->bucket : "no size bucket", why);
    return 0;
  }
  *spec = res.best;
  if (ctx->opts.verbose && sfa_spec_name(&res.best, name, sizeof name) == SFA_OK)
    fprintf(stderr, "sfa: tuned: %s, %.4f ms (heuristic default %.4f ms)\n", name, res.best_ms,
            res.default_ms);
  if (t->db && key) {
    sfa_tune_row row;
    sfa__tune_make_row(key, &res, &row);
    if (sfa_tunedb_put(t->db, &row, why, sizeof why) == SFA_OK) save_db(ctx, t);
    else fprintf(stderr, "sfa: warning: tuning result not recorded: %s\n", why);
  }
  sfa__tune_result_free(&res);
  return 1;
}

/* ------------------------------------------------------------ the policy */

static sfa_status no_default(sfa_context *ctx, sfa_status st, const sfa_kernel_spec *spec,
                             const char *why) {
  const char *mode = sfa__mode_name(spec->mode), *pass = sfa__pass_name(spec->pass);
  return sfa__error(ctx, st, "no %s %s kernel for %s head dim %d on sm_%d: %s",
                    mode ? mode : "?", pass ? pass : "?", sfa__dtype_str(spec->dtype),
                    spec->head_dim, spec->arch, why);
}

static sfa_status select_spec(sfa_context *ctx, const sfa__device *dev, sfa_kernel_spec *spec,
                              const sfa__problem *prob);

sfa_status sfa__select_spec(sfa_context *ctx, const sfa__device *dev, sfa_kernel_spec *spec,
                            const sfa__problem *prob) {
  if (!ctx) return SFA_ERR_INVALID_ARGUMENT;
  if (!dev || !spec || !prob)
    return sfa__error(ctx, SFA_ERR_INTERNAL, "sfa__select_spec: NULL argument");
  const sfa_kernel_spec asked = *spec;
  sfa_status st = select_spec(ctx, dev, spec, prob);
  /* The warp-specialized kernels read q, k and v (and dout) through tensor
  ** maps: where the copy engine cannot address them, the wgmma default serves
  ** instead. */
  if (st == SFA_OK && spec->mma == SFA_SPEC_MMA_WS && prob->no_tma) {
    char why[1024];
    *spec = asked;
    if ((st = sfa__spec_default_mma(spec, 1, why, sizeof why)) != SFA_OK)
      return no_default(ctx, st, spec, why);
  }
  return st;
}

static sfa_status select_spec(sfa_context *ctx, const sfa__device *dev, sfa_kernel_spec *spec,
                              const sfa__problem *prob) {
  char why[1024];
  sfa_tune_policy policy = ctx->opts.tune;
  sfa__select *s = ctx->select;
  if (ctx->opts.mma != SFA_MMA_AUTO) { /* a forced kind: its default tiles, untuned */
    int wg = ctx->opts.mma == SFA_MMA_WS ? 2 : ctx->opts.mma == SFA_MMA_WGMMA;
    sfa_status st = sfa__spec_default_mma(spec, wg, why, sizeof why);
    return st == SFA_OK ? SFA_OK : no_default(ctx, st, spec, why);
  }
  if (policy == SFA_TUNE_OFF || !s) {
    sfa_status st = sfa_spec_default(spec, why, sizeof why);
    if (st != SFA_OK) return no_default(ctx, st, spec, why);
    sfa__spec_for_keys(spec, sfa__problem_keys(prob));
    return SFA_OK;
  }

  mkey mk;
  make_mkey(&mk, dev, spec, prob);
  pthread_mutex_lock(&s->lock);
  s->stats.calls++;
  mslot *e = memo_find(s, &mk);
  if (e) {
    sfa_tunedb_config_apply(&e->cfg, spec);
    s->stats.memo_hits++;
  }
  pthread_mutex_unlock(&s->lock);
  if (e) return SFA_OK;

  /* First call of this key: the default (which also checks the class), the db,
  ** then maybe a tuning run. */
  sfa_kernel_spec def = *spec;
  sfa_status st = sfa_spec_default(&def, why, sizeof why);
  if (st != SFA_OK) return no_default(ctx, st, spec, why);
  tdb t = get_db(ctx, dev);
  sfa_tune_key key;
  int have_key = t.db && sfa_tunedb_make_key(&key, t.gpu, dev->cc, spec, prob->Tq, prob->Tk,
                                             prob->B * prob->Hq, NULL, 0) == SFA_OK;
  sfa_kernel_spec pick = *spec;
  int from_db = 0;
  if ((st = sfa__tune_pick(have_key ? t.db : NULL, have_key ? &key : NULL, &pick, &from_db,
                           why, sizeof why)) != SFA_OK)
    return no_default(ctx, st, spec, why);
  if (!from_db) sfa__spec_for_keys(&pick, sfa__problem_keys(prob)); /* as under policy off */

  int locked = 0;
  /* The tuner's synthetic calls are fixed-length: packed sequences take the
  ** db or the default. */
  if (!from_db && policy == SFA_TUNE_ON && sfa__tune_can_launch(spec->pass) &&
      !(spec->flags & SFA_FEAT_VARLEN)) {
    /* One tuning run at a time; another thread may have tuned this key. */
    pthread_mutex_lock(&s->tune_lock);
    locked = 1;
    pthread_mutex_lock(&s->lock);
    e = memo_find(s, &mk);
    if (e) sfa_tunedb_config_apply(&e->cfg, spec);
    pthread_mutex_unlock(&s->lock);
    if (e) {
      pthread_mutex_unlock(&s->tune_lock);
      return SFA_OK;
    }
    sfa_kernel_spec tuned = def;
    if (tune_miss(ctx, dev, &t, have_key ? &key : NULL, &tuned, prob)) pick = tuned;
  } else if (from_db) {
    pthread_mutex_lock(&s->lock);
    s->stats.db_hits++;
    pthread_mutex_unlock(&s->lock);
    if (ctx->opts.verbose && sfa_spec_name(&pick, why, sizeof why) == SFA_OK)
      fprintf(stderr, "sfa: %s: tuned tiles from %s\n", why, sfa_tunedb_path(t.db));
  }

  sfa_tune_config cfg = sfa_tunedb_config_of(&pick);
  pthread_mutex_lock(&s->lock);
  memo_put(s, &mk, &cfg);
  pthread_mutex_unlock(&s->lock);
  if (locked) pthread_mutex_unlock(&s->tune_lock);
  *spec = pick;
  return SFA_OK;
}

sfa_status sfa__select_launch_spec(sfa_context *ctx, const sfa__device *dev, sfa_pass pass,
                                   sfa_dtype dtype, int head_dim, unsigned flags,
                                   const sfa__problem *prob, sfa_kernel_spec *spec) {
  memset(spec, 0, sizeof *spec);
  spec->pass = pass;
  spec->mode = prob->params->mode;
  spec->dtype = dtype;
  spec->head_dim = head_dim;
  spec->arch = dev->arch;
  spec->flags = flags;
  return sfa__select_spec(ctx, dev, spec, prob);
}

sfa_status sfa__select_kernel(sfa_context *ctx, const sfa__device *dev, sfa_pass pass,
                              sfa_dtype dtype, int head_dim, unsigned flags,
                              const sfa__problem *prob, sfa_kernel **kernel) {
  sfa_kernel_spec spec;
  sfa_status st = sfa__select_launch_spec(ctx, dev, pass, dtype, head_dim, flags, prob, &spec);
  return st != SFA_OK ? st : sfa__kernel_get(ctx, dev, &spec, kernel);
}
