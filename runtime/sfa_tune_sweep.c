/*
** sfa_tune_sweep.c -- sfa-tune's sweep: every shape of the grid is tuned on
** the GPU (sfa__tune_gpu), its winner recorded in the db (saved after each
** shape, so an interrupted sweep keeps what it did), a progress line per
** shape on stderr and a table of winners and their speedup over the heuristic
** default on stdout.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gen/gen_internal.h"
#include "gen/mode.h"
#include "runtime/autotune.h"
#include "runtime/sfa_tune.h"
#include "runtime/tune_gpu.h"

typedef struct shape_row {
  sfa_kernel_spec spec; /* the winner (tile fields), or the class when failed */
  long T, B, H;
  double ms, default_ms;
  const char *how;      /* "tuned", "in db", "failed" */
} shape_row;

long sfa__tune_batch(const sfa__tune_opts *o, long T) {
  if (o->batch > 0) return o->batch;
  long b = 65536 / T;
  return b < 1 ? 1 : b;
}

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

typedef struct prog {
  int verbose;
  int ok, skipped, rejected;
} prog;

static void on_candidate(void *user, int i, int n, const sfa__tune_entry *e) {
  prog *p = user;
  char name[SFA__NAME_MAX] = "?";
  sfa_spec_name(&e->spec, name, sizeof name);
  if (e->status == SFA__TUNE_OK) p->ok++;
  else if (e->status == SFA__TUNE_SKIPPED) p->skipped++;
  else p->rejected++;
  if (!p->verbose) return;
  if (e->status == SFA__TUNE_OK)
    fprintf(stderr, "    [%d/%d] %s: %.4f ms (rel diff %.2g)\n", i + 1, n, name, e->median_ms,
            e->rel_diff);
  else
    fprintf(stderr, "    [%d/%d] %s: %s: %s\n", i + 1, n, name, sfa__tune_status_name(e->status),
            e->reason);
}

void sfa__tune_tiles_str(int block_m, int block_n, int num_warps, int num_stages,
                         sfa_spec_mma mma, char *buf, size_t n) {
  const char *tok = sfa__mma_token(mma);
  snprintf(buf, n, "m%dn%d_w%ds%d%s%s", block_m, block_n, num_warps, num_stages,
           tok && *tok ? "_" : "", tok ? tok : "");
}

/* The class and problem of one grid point: the grid's causal, window, bias
** and mask where the mode's row takes them. */
static void make_shape(const sfa__tune_opts *o, const sfa__device *dev, sfa_mode mode,
                       sfa_dtype dt, int D, long T, sfa_attention_params *p,
                       sfa_kernel_spec *spec, sfa__problem *prob) {
  sfa_params_init(p);
  p->mode = mode;
  memset(spec, 0, sizeof *spec);
  spec->pass = o->pass;
  spec->mode = mode;
  spec->dtype = dt;
  spec->head_dim = D;
  spec->arch = dev->arch;
  memset(prob, 0, sizeof *prob);
  prob->params = p;
  prob->B = sfa__tune_batch(o, T);
  prob->Hq = o->heads;
  prob->Hkv = o->kv_heads;
  prob->Tq = prob->Tk = T;
  prob->has_lse = 1;
  prob->hash_buckets = o->buckets;
  prob->qk_keep = o->keep;
  const sfa__mode *m = sfa__mode_find(mode);
  if (m->flags & SFA_FEAT_CAUSAL) {
    p->causal = o->causal;
    if (o->causal) spec->flags |= SFA_FEAT_CAUSAL;
  }
  if (m->window) {
    p->window_left = o->window;
    if (!o->causal) p->window_right = o->window;
  }
  const int64_t shape[4] = {1, 1, T, T};
  if (o->bias && (m->flags & SFA_FEAT_BIAS))
    spec->flags |= SFA_FEAT_BIAS, memcpy(prob->bias_shape, shape, sizeof shape);
  if (o->mask && (m->flags & SFA_FEAT_MASK))
    spec->flags |= SFA_FEAT_MASK, memcpy(prob->mask_shape, shape, sizeof shape);
}

static void print_table(const shape_row *rows, int n) {
  printf("%-4s %-7s %-5s %-4s %-7s %-4s %-4s %-5s %-18s %11s %11s %8s\n", "pass", "mode", "dtype",
         "D", "T", "B", "H", "flags", "winner", "time_ms", "default_ms", "speedup");
  for (int i = 0; i < n; i++) {
    const shape_row *r = &rows[i];
    char tiles[48], fl[8];
    sfa__tune_tiles_str(r->spec.block_m, r->spec.block_n, r->spec.num_warps, r->spec.num_stages,
                        r->spec.mma, tiles, sizeof tiles);
    snprintf(fl, sizeof fl, "%s%s%s", r->spec.flags & SFA_FEAT_CAUSAL ? "c" : "",
             r->spec.flags & SFA_FEAT_BIAS ? "b" : "", r->spec.flags & SFA_FEAT_MASK ? "m" : "");
    if (!fl[0]) snprintf(fl, sizeof fl, "-");
    if (r->how[0] == 'f') {
      printf("%-4s %-7s %-5s %-4d %-7ld %-4ld %-4ld %-5s %-18s %11s %11s %8s\n",
             sfa__pass_name(r->spec.pass), sfa__mode_name(r->spec.mode), sfa__dtype_str(r->spec.dtype), r->spec.head_dim,
             r->T, r->B, r->H, fl, "(failed)", "-", "-", "-");
      continue;
    }
    printf("%-4s %-7s %-5s %-4d %-7ld %-4ld %-4ld %-5s %-18s %11.4f %11.4f %7.3fx%s\n",
           sfa__pass_name(r->spec.pass), sfa__mode_name(r->spec.mode), sfa__dtype_str(r->spec.dtype), r->spec.head_dim, r->T,
           r->B, r->H, fl, tiles, r->ms, r->default_ms, r->default_ms / r->ms,
           r->how[0] == 'i' ? "  (from the db)" : "");
  }
}

int sfa__tune_sweep(sfa_context *ctx, const sfa__device *dev, sfa_tunedb *db,
                    const sfa__tune_opts *o) {
  int total = o->nmodes * o->ndtypes * o->ndims * o->nlens, k = 0, failures = 0;
  shape_row *rows = calloc((size_t)total, sizeof *rows);
  if (!rows) {
    fputs("sfa-tune: out of memory\n", stderr);
    return 1;
  }
  char err[2048], name[SFA__NAME_MAX], gpu[SFA_TUNEDB_GPU_MAX];
  snprintf(gpu, sizeof gpu, "%s", sfa_tunedb_gpu(db));
  for (int mi = 0; mi < o->nmodes; mi++)
    for (int ti = 0; ti < o->ndtypes; ti++)
      for (int di = 0; di < o->ndims; di++)
        for (int li = 0; li < o->nlens; li++, k++) {
          sfa_attention_params p;
          sfa_kernel_spec spec;
          sfa__problem prob;
          long T = o->lens[li];
          make_shape(o, dev, o->modes[mi], o->dtypes[ti], o->dims[di], T, &p, &spec, &prob);
          shape_row *r = &rows[k];
          r->spec = spec, r->T = T, r->B = (long)prob.B, r->H = (long)prob.Hq;
          r->how = "failed";
          fprintf(stderr, "[%d/%d] %s %s %s d%d T=%ld B=%lld H=%lld/%lld: ", k + 1, total,
                  sfa__pass_name(spec.pass), sfa__mode_name(spec.mode), sfa__dtype_str(spec.dtype), spec.head_dim, T,
                  (long long)prob.B, (long long)prob.Hq, (long long)prob.Hkv);
          sfa_tune_key key;
          sfa_tune_row row;
          if (sfa_tunedb_make_key(&key, gpu, dev->cc, &spec, prob.Tq, prob.Tk,
                                  prob.B * prob.Hq, err, sizeof err) != SFA_OK) {
            fprintf(stderr, "%s\n", err);
            failures++;
            continue;
          }
          if (!o->force && sfa_tunedb_lookup(db, &key, &row) == SFA_OK) {
            sfa_tunedb_config_apply(&row.cfg, &r->spec);
            r->ms = row.time_us / 1000, r->default_ms = row.default_time_us / 1000;
            r->how = "in db";
            fprintf(stderr, "in the db (%s); --force re-tunes\n", key.bucket);
            continue;
          }
          if (o->verbose) fputc('\n', stderr);
          prog pg = {o->verbose, 0, 0, 0};
          sfa__tune_result res;
          double t0 = now_s();
          sfa_status st = sfa__tune_gpu(ctx, dev, &spec, &prob, o->warmup, o->reps, o->kinds,
                                        on_candidate,
                                        &pg, &res, err, sizeof err);
          if (st != SFA_OK) {
            if (o->verbose) fprintf(stderr, "    ");
            fprintf(stderr, "failed: %s\n", err);
            sfa__tune_result_free(&res);
            failures++;
            continue;
          }
          r->spec = res.best, r->ms = res.best_ms, r->default_ms = res.default_ms;
          r->how = "tuned";
          sfa_spec_name(&res.best, name, sizeof name);
          if (o->verbose) fprintf(stderr, "    ");
          fprintf(stderr, "%d candidates (%d ok, %d skipped, %d rejected) in %.1f s: %s %.4f ms, "
                  "default %.4f ms (%.3fx)\n", res.n, pg.ok, pg.skipped, pg.rejected,
                  now_s() - t0, name, res.best_ms, res.default_ms, res.default_ms / res.best_ms);
          sfa__tune_make_row(&key, &res, &row);
          sfa__tune_result_free(&res);
          if (sfa_tunedb_put(db, &row, err, sizeof err) != SFA_OK ||
              sfa_tunedb_save(db, err, sizeof err) != SFA_OK) {
            fprintf(stderr, "sfa-tune: %s\n", err);
            failures++;
          }
        }
  print_table(rows, total);
  free(rows);
  if (failures) fprintf(stderr, "sfa-tune: %d of %d shapes failed\n", failures, total);
  return failures ? 1 : 0;
}
