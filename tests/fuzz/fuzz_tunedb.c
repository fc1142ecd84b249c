/*
** fuzz_tunedb.c -- fuzz target of the tuning db reader (cache/tunedb.c): the
** input is the file of the db of one gpu and cc, opened with
** sfa_tunedb_open_path (which never fails on content). Every row it keeps
** must be found by its key and put back unchanged; a new row is put; then the
** db is exported to another file and saved over its own, and both files must
** read back cleanly (no warning) with the same rows: what the db writes, it
** reads.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cache/tunedb.h"
#include "fuzz_util.h"

#define GPU "NVIDIA H100 80GB HBM3"
#define CC 90

static char db_path[700], export_path[700];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  fz_path(db_path, sizeof db_path, "NVIDIA_H100_80GB_HBM3_sm90.tsv");
  fz_path(export_path, sizeof export_path, "export/db.tsv");
  return 0;
}

static int same_row(const sfa_tune_row *a, const sfa_tune_row *b, int exact_times) {
  const sfa_tune_key *p = &a->key, *q = &b->key;
  const sfa_tune_config *c = &a->cfg, *d = &b->cfg;
  if (strcmp(p->gpu, q->gpu) || p->cc != q->cc || p->pass != q->pass || p->mode != q->mode ||
      p->dtype != q->dtype || p->head_dim != q->head_dim || p->flags != q->flags ||
      strcmp(p->bucket, q->bucket) || c->block_m != d->block_m || c->block_n != d->block_n ||
      c->num_warps != d->num_warps || c->num_stages != d->num_stages || c->mma != d->mma ||
      strcmp(a->date, b->date))
    return 0;
  /* A time read back differs by the rounding of the file: 3 decimals, or
  ** since "%.9g" 9 significant digits. */
  double tol = exact_times ? 0 : 0.0005 * (1 + 1e-9) + 1e-8 * fabs(a->time_us);
  double dtol = exact_times ? 0 : 0.0005 * (1 + 1e-9) + 1e-8 * fabs(a->default_time_us);
  return fabs(a->time_us - b->time_us) <= tol &&
         fabs(a->default_time_us - b->default_time_us) <= dtol;
}

static sfa_tunedb *open_db(const char *path) {
  sfa_tunedb *db = NULL;
  char err[512] = "";
  if (sfa_tunedb_open_path(&db, path, GPU, CC, 1, err, sizeof err) != SFA_OK || !db)
    fz_fail("sfa_tunedb_open_path(%s) fails: %s", path, err);
  return db;
}

/* Every row of a is in b (same key, config, date; times up to the rounding). */
static void check_read_back(sfa_tunedb *a, const char *path, const char *what) {
  sfa_tunedb *b = open_db(path);
  if (sfa_tunedb_warning(b)[0])
    fz_fail("the db %s reads back with a warning: %s", what, sfa_tunedb_warning(b));
  if (sfa_tunedb_count(b) != sfa_tunedb_count(a))
    fz_fail("the db %s reads back with %zu rows, %zu were written", what, sfa_tunedb_count(b),
            sfa_tunedb_count(a));
  for (size_t i = 0; i < sfa_tunedb_count(a); i++) {
    sfa_tune_row r, back;
    if (sfa_tunedb_row(a, i, &r) != SFA_OK) fz_fail("sfa_tunedb_row(%zu) fails", i);
    if (sfa_tunedb_lookup(b, &r.key, &back) != SFA_OK || !same_row(&r, &back, 0))
      fz_fail("row %zu (bucket %s, time %.17g) of the db %s reads back %s", i, r.key.bucket,
              r.time_us, what, sfa_tunedb_lookup(b, &r.key, NULL) == SFA_OK ? "changed" : "lost");
  }
  sfa_tunedb_close(b);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char err[2048] = "";
  if (!db_path[0]) LLVMFuzzerInitialize(NULL, NULL);
  fz_write_file(db_path, data, size);
  sfa_tunedb *db = open_db(db_path);

  /* the rows kept: found by key, and accepted by put as they are */
  size_t n = sfa_tunedb_count(db);
  for (size_t i = 0; i < n; i++) {
    sfa_tune_row r, hit;
    if (sfa_tunedb_row(db, i, &r) != SFA_OK) fz_fail("sfa_tunedb_row(%zu) of %zu fails", i, n);
    if (sfa_tunedb_lookup(db, &r.key, &hit) != SFA_OK || !same_row(&r, &hit, 1))
      fz_fail("row %zu (bucket %s) is not found by its own key", i, r.key.bucket);
    if (sfa_tunedb_put(db, &r, err, sizeof err) != SFA_OK)
      fz_fail("row %zu, read from the file, is refused by put: %s", i, err);
  }
  if (sfa_tunedb_count(db) != n) fz_fail("putting the rows back changed their number");

  /* one more row */
  sfa_kernel_spec spec = {SFA_PASS_FWD, SFA_MODE_DENSE, SFA_DTYPE_BF16, 128, 0, 0, 0, 0, CC,
                          SFA_FEAT_CAUSAL, SFA_SPEC_MMA_SYNC};
  sfa_tune_row row;
  memset(&row, 0, sizeof row);
  if (sfa_spec_default(&spec, err, sizeof err) != SFA_OK ||
      sfa_tunedb_make_key(&row.key, GPU, CC, &spec, 4096, 4096, 32, err, sizeof err) != SFA_OK)
    fz_fail("cannot make the key of the new row: %s", err);
  row.cfg = sfa_tunedb_config_of(&spec);
  row.time_us = 123.456;
  row.default_time_us = 150;
  if (sfa_tunedb_put(db, &row, err, sizeof err) != SFA_OK) fz_fail("put of a new row: %s", err);

  if (sfa_tunedb_export(db, export_path, err, sizeof err) != SFA_OK)
    fz_fail("export fails: %s", err);
  check_read_back(db, export_path, "exported");
  if (sfa_tunedb_save(db, err, sizeof err) != SFA_OK) fz_fail("save fails: %s", err);
  check_read_back(db, db_path, "saved");
  sfa_tunedb_close(db);
  return 0;
}
