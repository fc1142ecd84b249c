/*
** sfa_cache_main.c -- the sfa-cache tool: list, verify, prune and clear the
** on-disk kernel cache (cache/store.h), or print where it is.
**
** Exit status: 0 success, 1 failure (or bad files found by verify without
** --fix), 2 usage error. Messages go to stderr as "sfa-cache: <message>".
**
** Removals go through sfa_store_remove: relative to the cache directory,
** never through a symbolic link, only regular files with the store's own
** names. A symbolic link or other special file met on the way is reported
** ("sfa-cache: warning: kernels/ab is a symbolic link, which is not followed;
** skipped") and left alone.
*/
#include "cache/store.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define TEMP_MAX_AGE 3600 /* stray temporary files older than this are removed */

static const char USAGE[] =
    "usage: sfa-cache [--dir DIR] COMMAND [OPTIONS]\n"
    "Inspect and maintain the sfa kernel cache.\n"
    "\n"
    "Commands:\n"
    "  list                 table of cached kernels: key, size, age, valid, name\n"
    "  verify [--fix]       check every file and print the bad ones; --fix removes\n"
    "                       them (exit status 1 if any is bad without --fix)\n"
    "  prune [--older-than DAYS] [--max-size MB]\n"
    "                       remove kernels not written for DAYS days, then the\n"
    "                       oldest until the cache holds at most MB megabytes;\n"
    "                       also removes stray temporary files older than an hour\n"
    "  clear                remove every cached kernel (and stray temporary files\n"
    "                       older than an hour)\n"
    "  path                 print the cache directory\n"
    "\n"
    "Options:\n"
    "  --dir DIR            the cache directory (default: $SFA_CACHE_DIR, else\n"
    "                       $XDG_CACHE_HOME/sfa, else $HOME/.cache/sfa)\n"
    "  -h, --help           print this help\n"
    "\n"
    "Only regular files named <key>.cubin or <key>.cubin.tmp.XXXXXX under\n"
    "kernels/<key[0:2]>/ are ever removed; symbolic links are never followed.\n"
    "Exit status: 0 success, 1 failure or bad files found by verify, 2 usage error.\n";

typedef struct entries {
  sfa_store_entry *v;
  size_t n, cap;
  int oom;
} entries;

typedef struct args {
  const char *dir;
  const char *cmd;
  int fix;
  double older_than_days; /* < 0: not given */
  double max_size_mb;     /* < 0: not given */
} args;

static char g_dir[1024];

static int usage_error(const char *msg, const char *what) {
  fprintf(stderr, "sfa-cache: %s%s\n", msg, what ? what : "");
  fprintf(stderr, "Try 'sfa-cache --help'.\n");
  return 2;
}

static int collect(const sfa_store_entry *e, void *user) {
  entries *es = user;
  if (e->skipped) { /* reported, never listed or removed */
    fprintf(stderr, "sfa-cache: warning: %s %s; skipped\n", e->rel, e->reason);
    return 0;
  }
  if (es->n == es->cap) {
    size_t cap = es->cap ? es->cap * 2 : 64;
    sfa_store_entry *v = realloc(es->v, cap * sizeof *v);
    if (!v) {
      es->oom = 1;
      return 1;
    }
    es->v = v;
    es->cap = cap;
  }
  es->v[es->n++] = *e;
  return 0;
}

static int by_key(const void *a, const void *b) {
  return strcmp(((const sfa_store_entry *)a)->key, ((const sfa_store_entry *)b)->key);
}

static int by_age(const void *a, const void *b) { /* oldest first; ties by key */
  long x = ((const sfa_store_entry *)a)->mtime, y = ((const sfa_store_entry *)b)->mtime;
  return x != y ? (x < y ? -1 : 1) : by_key(a, b);
}

/* Sorts n entries (qsort is never given a NULL array, even for n = 0). */
static void sort_entries(entries *es, int (*cmp)(const void *, const void *)) {
  if (es->n > 1) qsort(es->v, es->n, sizeof *es->v, cmp);
}

static void fmt_size(double bytes, char *out, size_t n) {
  static const char *units[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  int u = 0;
  while (bytes >= 1024 && u < 4) {
    bytes /= 1024;
    u++;
  }
  if (u == 0)
    snprintf(out, n, "%.0f %s", bytes, units[u]);
  else
    snprintf(out, n, "%.1f %s", bytes, units[u]);
}

static void fmt_age(long secs, char *out, size_t n) {
  if (secs < 0) secs = 0;
  if (secs < 60)
    snprintf(out, n, "%lds", secs);
  else if (secs < 3600)
    snprintf(out, n, "%ldm", secs / 60);
  else if (secs < 86400)
    snprintf(out, n, "%ldh", secs / 3600);
  else
    snprintf(out, n, "%ldd", secs / 86400);
}

/* Remove one entry's file (sfa_store_remove: no link followed, regular files
** with the store's names only); 0 on success or if it is already gone. */
static int remove_file(sfa_store *st, const sfa_store_entry *e) {
  char err[1200];
  if (sfa_store_remove(st, e->rel, err, sizeof err) == SFA_OK) return 0;
  fprintf(stderr, "sfa-cache: %s\n", err);
  return -1;
}

/* Scan kernel files (temp = 0) or temporary files (temp = 1) into es. A cache
** directory that does not exist yet is empty; it is not created. */
static int load(sfa_store *st, int temp, entries *es) {
  char err[1200];
  memset(es, 0, sizeof *es);
  if (!st) return 0;
  sfa_status rc = temp ? sfa_store_scan_temp(st, collect, es, err, sizeof err)
                       : sfa_store_scan(st, collect, es, err, sizeof err);
  if (es->oom) {
    fprintf(stderr, "sfa-cache: out of memory\n");
    return -1;
  }
  if (rc != SFA_OK) {
    fprintf(stderr, "sfa-cache: %s\n", err);
    return -1;
  }
  return 0;
}

/* Remove temporary files older than TEMP_MAX_AGE; returns the count removed
** and sets *failed if a scan or a removal failed. */
static int remove_stale_temps(sfa_store *st, time_t now, int *failed) {
  entries ts;
  int removed = 0;
  if (load(st, 1, &ts) != 0) {
    *failed = 1;
    return 0;
  }
  for (size_t i = 0; i < ts.n; i++) {
    if (now - ts.v[i].mtime <= TEMP_MAX_AGE) continue;
    if (remove_file(st, &ts.v[i]) == 0)
      removed++;
    else
      *failed = 1;
  }
  free(ts.v);
  return removed;
}

/* ---------------------------------------------------------------- commands */

static int cmd_list(sfa_store *st) {
  entries es;
  char size[32], age[32];
  double total = 0;
  size_t bad = 0;
  if (load(st, 0, &es) != 0) return 1;
  sort_entries(&es, by_key);
  time_t now = time(NULL);
  printf("%-32s  %10s  %5s  %-5s  %s\n", "KEY", "SIZE", "AGE", "VALID", "NAME");
  for (size_t i = 0; i < es.n; i++) {
    const sfa_store_entry *e = &es.v[i];
    fmt_size((double)e->size, size, sizeof size);
    fmt_age((long)(now - e->mtime), age, sizeof age);
    printf("%-32s  %10s  %5s  %-5s  %s\n", e->key, size, age, e->valid ? "yes" : "no",
           e->name[0] ? e->name : "-");
    total += (double)e->size;
    bad += !e->valid;
  }
  fmt_size(total, size, sizeof size);
  printf("total: %zu kernel%s, %s, %zu invalid\n", es.n, es.n == 1 ? "" : "s", size, bad);
  free(es.v);
  return 0;
}

static int cmd_verify(sfa_store *st, int fix) {
  entries es;
  size_t bad = 0, removed = 0;
  int failed = 0;
  if (load(st, 0, &es) != 0) return 1;
  sort_entries(&es, by_key);
  for (size_t i = 0; i < es.n; i++) {
    const sfa_store_entry *e = &es.v[i];
    if (e->valid) continue;
    bad++;
    printf("bad: %s: %s\n", e->rel, e->reason);
    if (fix) {
      if (remove_file(st, e) == 0)
        removed++;
      else
        failed = 1;
    }
  }
  printf("checked %zu file%s: %zu bad", es.n, es.n == 1 ? "" : "s", bad);
  if (fix) printf(", %zu removed", removed);
  printf("\n");
  free(es.v);
  if (failed) return 1;
  return (bad && !fix) ? 1 : 0;
}

static int cmd_prune(sfa_store *st, double days, double max_mb) {
  entries es;
  char s1[32], s2[32];
  size_t removed = 0, kept = 0;
  double removed_bytes = 0, total = 0;
  int failed = 0;
  time_t now = time(NULL);
  if (load(st, 0, &es) != 0) return 1;
  sort_entries(&es, by_age);
  char *gone = calloc(es.n ? es.n : 1, 1);
  if (!gone) {
    free(es.v);
    fprintf(stderr, "sfa-cache: out of memory\n");
    return 1;
  }
  for (size_t i = 0; i < es.n; i++) {
    const sfa_store_entry *e = &es.v[i];
    if (days >= 0 && (double)(now - e->mtime) > days * 86400.0) {
      if (remove_file(st, e) == 0) {
        gone[i] = 1;
        removed++;
        removed_bytes += (double)e->size;
      } else {
        failed = 1;
      }
    }
    if (!gone[i]) total += (double)e->size;
  }
  if (max_mb >= 0) {
    double limit = max_mb * 1024.0 * 1024.0;
    for (size_t i = 0; i < es.n && total > limit; i++) { /* oldest first */
      if (gone[i]) continue;
      if (remove_file(st, &es.v[i]) == 0) {
        gone[i] = 1;
        removed++;
        removed_bytes += (double)es.v[i].size;
        total -= (double)es.v[i].size;
      } else {
        failed = 1;
      }
    }
  }
  for (size_t i = 0; i < es.n; i++) kept += !gone[i];
  int temps = remove_stale_temps(st, now, &failed);
  fmt_size(removed_bytes, s1, sizeof s1);
  fmt_size(total, s2, sizeof s2);
  printf("removed %zu kernel%s (%s) and %d stale temporary file%s; %zu kernel%s (%s) remain\n",
         removed, removed == 1 ? "" : "s", s1, temps, temps == 1 ? "" : "s", kept,
         kept == 1 ? "" : "s", s2);
  free(gone);
  free(es.v);
  return failed ? 1 : 0;
}

static int cmd_clear(sfa_store *st) {
  entries es;
  size_t removed = 0;
  int failed = 0;
  if (load(st, 0, &es) != 0) return 1;
  for (size_t i = 0; i < es.n; i++) {
    if (remove_file(st, &es.v[i]) == 0)
      removed++;
    else
      failed = 1;
  }
  int temps = remove_stale_temps(st, time(NULL), &failed);
  printf("removed %zu kernel file%s", removed, removed == 1 ? "" : "s");
  if (temps) printf(" and %d stale temporary file%s", temps, temps == 1 ? "" : "s");
  printf("\n");
  free(es.v);
  return failed ? 1 : 0;
}

/* ---------------------------------------------------------------- main */

static int parse_number(const char *opt, const char *s, double *out) {
  char *end;
  errno = 0;
  double v = s ? strtod(s, &end) : 0;
  if (!s || !*s || *end || errno || !(v >= 0) || isinf(v)) {
    fprintf(stderr, "sfa-cache: %s needs a non-negative number, got '%s'\n", opt, s ? s : "");
    fprintf(stderr, "Try 'sfa-cache --help'.\n");
    return -1;
  }
  *out = v;
  return 0;
}

/* The value of an option given as "--opt VALUE" or "--opt=VALUE"; NULL if the
** argument is not this option. */
static const char *opt_value(const char *opt, int argc, char **argv, int *i, int *missing) {
  size_t n = strlen(opt);
  if (strncmp(argv[*i], opt, n) != 0) return NULL;
  if (argv[*i][n] == '=') return argv[*i] + n + 1;
  if (argv[*i][n] != '\0') return NULL;
  if (*i + 1 >= argc) {
    *missing = 1;
    return opt;
  }
  return argv[++*i];
}

int main(int argc, char **argv) {
  args a = {NULL, NULL, 0, -1, -1};
  char err[1200];
  for (int i = 1; i < argc; i++) {
    const char *v;
    int missing = 0;
    if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
      fputs(USAGE, stdout);
      return 0;
    } else if ((v = opt_value("--dir", argc, argv, &i, &missing))) {
      if (missing) return usage_error("missing value for ", "--dir");
      a.dir = v;
    } else if ((v = opt_value("--older-than", argc, argv, &i, &missing))) {
      if (missing) return usage_error("missing value for ", "--older-than");
      if (parse_number("--older-than", v, &a.older_than_days) != 0) return 2;
    } else if ((v = opt_value("--max-size", argc, argv, &i, &missing))) {
      if (missing) return usage_error("missing value for ", "--max-size");
      if (parse_number("--max-size", v, &a.max_size_mb) != 0) return 2;
    } else if (strcmp(argv[i], "--fix") == 0) {
      a.fix = 1;
    } else if (argv[i][0] == '-') {
      return usage_error("unknown option ", argv[i]);
    } else if (a.cmd) {
      return usage_error("unexpected argument ", argv[i]);
    } else {
      a.cmd = argv[i];
    }
  }
  if (!a.cmd) return usage_error("no command given", NULL);
  int is_list = strcmp(a.cmd, "list") == 0, is_verify = strcmp(a.cmd, "verify") == 0;
  int is_prune = strcmp(a.cmd, "prune") == 0, is_clear = strcmp(a.cmd, "clear") == 0;
  int is_path = strcmp(a.cmd, "path") == 0;
  if (!is_list && !is_verify && !is_prune && !is_clear && !is_path)
    return usage_error("unknown command ", a.cmd);
  if (a.fix && !is_verify) return usage_error("--fix applies to verify only", NULL);
  if ((a.older_than_days >= 0 || a.max_size_mb >= 0) && !is_prune)
    return usage_error("--older-than and --max-size apply to prune only", NULL);

  if (sfa_store_resolve_dir(a.dir, g_dir, sizeof g_dir, err, sizeof err) != SFA_OK) {
    fprintf(stderr, "sfa-cache: %s\n", err);
    return 1;
  }
  if (is_path) {
    printf("%s\n", g_dir);
    return 0;
  }

  /* Do not create a cache directory just to report that it is empty. */
  sfa_store *st = NULL;
  struct stat sb;
  if (stat(g_dir, &sb) == 0) {
    if (!S_ISDIR(sb.st_mode)) {
      fprintf(stderr, "sfa-cache: %s is not a directory\n", g_dir);
      return 1;
    }
    if (sfa_store_open(&st, g_dir, 1, err, sizeof err) != SFA_OK) {
      fprintf(stderr, "sfa-cache: %s\n", err);
      return 1;
    }
    /* A directory the library refuses (writable by others, another owner, a
    ** linked kernels/) is still listed and cleaned, without following links. */
    if (sfa_store_is_refused(st))
      fprintf(stderr, "sfa-cache: warning: %s\n", sfa_store_warning(st));
  } else if (errno != ENOENT) {
    fprintf(stderr, "sfa-cache: %s: %s\n", g_dir, strerror(errno));
    return 1;
  }

  int rc;
  if (is_list)
    rc = cmd_list(st);
  else if (is_verify)
    rc = cmd_verify(st, a.fix);
  else if (is_prune)
    rc = cmd_prune(st, a.older_than_days, a.max_size_mb);
  else
    rc = cmd_clear(st);
  sfa_store_close(st);
  return rc;
}
