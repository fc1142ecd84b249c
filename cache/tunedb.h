/*
** tunedb.h -- the tuning database: the autotuner's winners, one human-readable
** TSV file per GPU model at <cache_dir>/tuning/<gpu>_sm<cc>.tsv, where <gpu> is
** the device name with every byte outside [A-Za-z0-9_-] replaced by '_'
** (e.g. "NVIDIA_H100_80GB_HBM3_sm90.tsv").
**
** File format (fields separated by one TAB, lines end with LF):
**   # sfa tuning db v2 gpu=<device name> cc=<cc>
**   gpu cc pass mode dtype head_dim flags size_bucket block_m block_n num_warps
**       num_stages mma time_us default_time_us date    (the column header, TABs)
**   one row per key, sorted by (pass, mode, dtype, head_dim, flags, tq, tk, bh)
** Columns: gpu = the device name as reported (TAB-free), cc = compute
** capability * 10 + minor, pass = fwd|bwddq|bwd, mode = dense|qk_drop|hash|
** window, dtype = fp16|bf16, flags = the canonical flag tokens in name order
** joined by '+' (causal, bias, mask, det) or "-" for none, size_bucket = see
** sfa_tunedb_bucket, then the winning configuration (mma = the spec's mma:
** sync or wgmma), the winner's median time and
** the heuristic default's median time in microseconds (written "%.9g", e.g.
** 123.456789, 0.000123 or 1e-07, so that every time in (0,
** SFA_TUNEDB_TIME_MAX] reads back to 9 significant digits; older files with 3
** decimals read as before), and the UTC date of the measurement
** (YYYY-MM-DDTHH:MM:SSZ).
**
** Reading is tolerant and never fatal:
** - a missing file (or directory on its path) is an empty database, silently;
** - the file is read with cache/fileio.h: a FIFO, device, directory or other
**   non-regular file, a file larger than SFA__FILE_MAX_TEXT (16 MiB), or (for
**   the cache's own db, sfa_tunedb_open) a symbolic link is never read (never
**   blocks) and counts as a file that cannot be read (below);
** - a v1 file (the same without the mma column) is read as mma sync, and the
**   next save writes v2;
** - a file that cannot be read, or whose first line is not the header of v1 or
**   v2, or names another gpu or cc, or whose second line is not the column
**   header of its version, is ignored entirely (the database starts empty);
** - otherwise bad rows (wrong field count, unknown names, bad numbers, a row of
**   another gpu or cc, over-long lines, binary garbage) are skipped one by one
**   and the good rows are kept (a line may have SFA__FILE_MAX_LINE = 4096
**   bytes); empty lines and lines starting with '#' are
**   skipped silently (and are not written back);
** - either way ONE warning per read goes to stderr (unless quiet), naming the
**   file, the first bad line and the number of skipped lines;
** - two rows of one key keep the faster time.
** Saving rewrites the whole file: the rows in memory, plus the rows of the file
** now on disk whose keys are not in memory (so that processes that tune
** different keys do not lose each other's rows); written to a temporary file in
** the same directory and renamed into place, under an flock of the directory
** (best effort). A file that was ignored is thus replaced by the next save,
** unless it is not a regular file (a FIFO, a link, ...): save and export never
** replace one. The cache's tuning/ directory is created with mode 0700.
**
** Thread safety: every function may be called from several threads on one
** database (a mutex guards the rows).
*/
#ifndef SFA_CACHE_TUNEDB_H
#define SFA_CACHE_TUNEDB_H

#include <stddef.h>
#include <stdint.h>
#include "sfa.h"

#define SFA_TUNEDB_VERSION 2 /* v2 added the mma column; v1 files are read as mma sync */
#define SFA_TUNEDB_GPU_MAX 128   /* device name bytes incl. NUL */
#define SFA_TUNEDB_BUCKET_MAX 64 /* size bucket bytes incl. NUL */
#define SFA_TUNEDB_DATE_MAX 32   /* date bytes incl. NUL */
#define SFA_TUNEDB_TIME_MAX 1e15 /* the largest time_us or default_time_us (31 years) */

/* What a tuned config is measured for. Compared field by field, exactly. */
typedef struct sfa_tune_key {
  char gpu[SFA_TUNEDB_GPU_MAX];       /* device name, printable, no TAB */
  int cc;                             /* compute capability * 10 + minor, e.g. 90 */
  sfa_pass pass;
  sfa_mode mode;
  sfa_dtype dtype;                    /* fp16 or bf16 */
  int head_dim;
  unsigned flags;                     /* SFA_FEAT_* */
  char bucket[SFA_TUNEDB_BUCKET_MAX]; /* sfa_tunedb_bucket, e.g. "tq16384_tk16384_bh64" */
} sfa_tune_key;

/* The configuration of a spec that the tuner chooses (sfa.h: the
** configuration fields of sfa_kernel_spec). */
typedef struct sfa_tune_config {
  int block_m, block_n, num_warps, num_stages;
  sfa_spec_mma mma; /* column mma: "sync" or "wgmma" */
} sfa_tune_config;

typedef struct sfa_tune_row {
  sfa_tune_key key;
  sfa_tune_config cfg;
  double time_us;            /* the winner's median, in (0, SFA_TUNEDB_TIME_MAX] */
  double default_time_us;    /* the heuristic default's median, in (0, SFA_TUNEDB_TIME_MAX] */
  char date[SFA_TUNEDB_DATE_MAX]; /* "" on put: filled with the current UTC time */
} sfa_tune_row;

typedef struct sfa_tunedb sfa_tunedb;

/* ------------------------------------------------------------ keys and paths */

/* The size bucket of a problem: Tq, Tk and bh (= batch * query heads) each
** rounded up to a power of two, written "tq<Tq'>_tk<Tk'>_bh<bh'>", e.g. Tq =
** Tk = 10000, B = 4, Hq = 12 -> "tq16384_tk16384_bh64". Each value must be in
** 1..2^40; SFA_ERR_INVALID_ARGUMENT otherwise or when buf is short. */
sfa_status sfa_tunedb_bucket(int64_t tq, int64_t tk, int64_t bh, char *buf, size_t n,
                             char *err, size_t errlen);

/* Parses a canonical bucket string (powers of two, no leading zeros); 0 on
** success. Any of the outputs may be NULL. */
int sfa_tunedb_bucket_parse(const char *s, int64_t *tq, int64_t *tk, int64_t *bh);

/* Fills *key from a spec (pass, mode, dtype, head_dim, flags; its
** configuration fields and arch are ignored), the device and the problem
** size. SFA_ERR_INVALID_ARGUMENT for a bad gpu name, a spec field outside its
** domain or a bad size. */
sfa_status sfa_tunedb_make_key(sfa_tune_key *key, const char *gpu, int cc,
                               const sfa_kernel_spec *spec, int64_t tq, int64_t tk,
                               int64_t bh, char *err, size_t errlen);

/* The config of a spec, and a spec with a config applied (the caller then runs
** sfa_spec_validate for its arch: a db row may not suit another arch). */
sfa_tune_config sfa_tunedb_config_of(const sfa_kernel_spec *spec);
void sfa_tunedb_config_apply(const sfa_tune_config *cfg, sfa_kernel_spec *spec);

/* The file name of a gpu and cc: <sanitized gpu>_sm<cc>.tsv into out.
** SFA_ERR_INVALID_ARGUMENT for an empty or non-printable name or a short out. */
sfa_status sfa_tunedb_file_name(const char *gpu, int cc, char *out, size_t n, char *err,
                                size_t errlen);

/* ------------------------------------------------------------ open / close */

/* Open the database of (gpu, cc) in cache_dir (NULL: resolved as the kernel
** store does, see sfa_store_resolve_dir), i.e. <dir>/tuning/<file name>, and
** read it tolerantly (see above; quiet = 1 suppresses the warning). Fails only
** for bad arguments, an unresolvable directory or out of memory: an unreadable
** or corrupt file is an empty database. Close with sfa_tunedb_close. */
sfa_status sfa_tunedb_open(sfa_tunedb **db, const char *cache_dir, const char *gpu, int cc,
                           int quiet, char *err, size_t errlen);

/* The same for an explicit file path (e.g. a shipped, exported db). */
sfa_status sfa_tunedb_open_path(sfa_tunedb **db, const char *path, const char *gpu, int cc,
                                int quiet, char *err, size_t errlen);

void sfa_tunedb_close(sfa_tunedb *db);

const char *sfa_tunedb_path(const sfa_tunedb *db);
const char *sfa_tunedb_gpu(const sfa_tunedb *db);
int sfa_tunedb_cc(const sfa_tunedb *db);

/* The warning of the last read (open or merge), "" if it was clean. Valid
** until the next read; not thread safe against a concurrent read. */
const char *sfa_tunedb_warning(const sfa_tunedb *db);

/* ------------------------------------------------------------ rows */

/* SFA_OK and the row (if row is not NULL) on a hit, SFA_ERR_NOT_FOUND on a
** miss (also for a key of another gpu or cc). */
sfa_status sfa_tunedb_lookup(sfa_tunedb *db, const sfa_tune_key *key, sfa_tune_row *row);

/* Insert, or replace the row of the same key (unconditionally: a fresh
** measurement wins). The row must be of the db's gpu and cc, its fields in
** their domains, times in (0, SFA_TUNEDB_TIME_MAX]. An empty date is set to
** now (UTC). */
sfa_status sfa_tunedb_put(sfa_tunedb *db, const sfa_tune_row *row, char *err, size_t errlen);

/* Number of rows, and a copy of row i in file order (SFA_ERR_NOT_FOUND past
** the end). */
size_t sfa_tunedb_count(sfa_tunedb *db);
sfa_status sfa_tunedb_row(sfa_tunedb *db, size_t i, sfa_tune_row *row);

/* ------------------------------------------------------------ files */

/* Write the database to its path atomically (see above), creating
** directories as needed. SFA_ERR_IO with the path and the reason when it cannot
** be written; the rows stay in memory. */
sfa_status sfa_tunedb_save(sfa_tunedb *db, char *err, size_t errlen);

/* Write exactly the rows in memory to path, atomically (for shipping a db).
** Same errors as save (SFA_ERR_IO also when path exists and is not a regular
** file: a FIFO or a device is never replaced). */
sfa_status sfa_tunedb_export(sfa_tunedb *db, const char *path, char *err, size_t errlen);

/* Add the rows of another db file of the same gpu and cc; for a key in both the
** faster time_us is kept (ties keep the row in memory). *changed (may be NULL)
** receives the number of rows added or replaced. Unlike open, the file must
** exist: SFA_ERR_IO when it cannot be read (missing, not a regular file, larger
** than 16 MiB; the message names it and says why), SFA_ERR_CORRUPT for a bad header,
** SFA_ERR_INVALID_ARGUMENT when it is of another gpu or cc (nothing merged in
** these cases); bad rows are skipped with one warning as on open. */
sfa_status sfa_tunedb_merge_file(sfa_tunedb *db, const char *path, int *changed, char *err,
                                 size_t errlen);

#endif
