/*
** fuzz_driver.c -- main() for a fuzz target where libFuzzer is not linked
** (gcc builds): runs every seed through LLVMFuzzerTestOneInput, then mutated
** copies of them (bit flips, byte changes, inserts, deletes, copies, splices of
** two seeds, dictionary tokens, numbers) chosen by a seeded random generator,
** for a bounded time or number of runs. Without coverage feedback this finds
** less than libFuzzer does, but it runs the same targets and invariants on
** every build.
**
**   fuzz_NAME [-seconds=S] [-runs=N] [-seed=X] [-max_len=L] [-dict=FILE] PATH...
**
** PATH is a seed file or a directory of seed files. The defaults come from the
** environment: SFA_FUZZ_SECONDS (3), SFA_FUZZ_RUNS (0: no limit), SFA_FUZZ_SEED
** (0: from the clock; printed, so a failing run can be repeated); the mutants
** stop at whichever limit comes first, and -runs without -seconds runs exactly
** that many (with -seed, the same ones). Files alone, without a directory or
** a limit, are just run (a reproducer). A crash
** (a signal, e.g. the abort of a broken invariant) writes the input to
** crash-<pid> in $SFA_FUZZ_ARTIFACTS (default: the working directory) and
** prints its path; running the target on that file alone reproduces it.
*/
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "fuzz_util.h"

int LLVMFuzzerInitialize(int *argc, char ***argv) __attribute__((weak));

typedef struct buf {
  unsigned char *data;
  size_t len;
} buf;

typedef struct bufs {
  buf *v;
  size_t n, cap;
} bufs;

static bufs seeds, dict;

/* ------------------------------------------------------------ crash capture */

static const unsigned char *cur_data;
static size_t cur_len;
static char crash_path[1024];

static void on_crash(int sig) {
  int fd = open(crash_path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  if (fd >= 0) {
    size_t off = 0;
    while (off < cur_len) {
      ssize_t w = write(fd, cur_data + off, cur_len - off);
      if (w <= 0) break;
      off += (size_t)w;
    }
    close(fd);
    static const char msg[] = "\nfuzz_driver: crashing input written to ";
    (void)!write(2, msg, sizeof msg - 1);
    (void)!write(2, crash_path, strlen(crash_path));
    (void)!write(2, "\n", 1);
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

static void catch_crashes(void) {
  const char *dir = getenv("SFA_FUZZ_ARTIFACTS");
  snprintf(crash_path, sizeof crash_path, "%s/crash-%ld", dir && *dir ? dir : ".",
           (long)getpid());
  static const int sigs[] = {SIGABRT, SIGSEGV, SIGBUS, SIGFPE, SIGILL};
  for (size_t i = 0; i < sizeof sigs / sizeof sigs[0]; i++) signal(sigs[i], on_crash);
}

static void run_one(const unsigned char *data, size_t len) {
  cur_data = data;
  cur_len = len;
  LLVMFuzzerTestOneInput(data, len);
  cur_data = NULL;
  cur_len = 0;
}

/* ------------------------------------------------------------ inputs */

static void push(bufs *b, unsigned char *data, size_t len) {
  if (b->n == b->cap) {
    b->cap = b->cap ? 2 * b->cap : 32;
    b->v = realloc(b->v, b->cap * sizeof *b->v);
    if (!b->v) fz_fail("out of memory");
  }
  b->v[b->n++] = (buf){data, len};
}

static int read_file(const char *path, unsigned char **data, size_t *len) {
  FILE *f = fopen(path, "rb");
  if (!f) return -1;
  size_t cap = 4096, n = 0;
  unsigned char *p = malloc(cap);
  while (p) {
    n += fread(p + n, 1, cap - n, f);
    if (n < cap) break;
    unsigned char *q = realloc(p, cap *= 2);
    if (!q) free(p);
    p = q;
  }
  int bad = !p || ferror(f);
  fclose(f);
  if (bad) {
    free(p);
    return -1;
  }
  *data = p;
  *len = n;
  return 0;
}

static int by_name(const void *a, const void *b) {
  return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Adds the file at path, or every regular file of the directory, to seeds. */
static void add_seeds(const char *path) {
  struct stat sb;
  if (stat(path, &sb) != 0) fz_fail("fuzz_driver: %s: %s", path, strerror(errno));
  if (!S_ISDIR(sb.st_mode)) {
    unsigned char *d;
    size_t n;
    if (read_file(path, &d, &n) != 0) fz_fail("fuzz_driver: cannot read %s", path);
    push(&seeds, d, n);
    return;
  }
  DIR *dir = opendir(path);
  if (!dir) fz_fail("fuzz_driver: cannot open %s: %s", path, strerror(errno));
  char **names = NULL;
  size_t count = 0;
  for (struct dirent *e; (e = readdir(dir));) {
    if (e->d_name[0] == '.') continue;
    names = realloc(names, (count + 1) * sizeof *names);
    if (!names || !(names[count] = strdup(e->d_name))) fz_fail("out of memory");
    count++;
  }
  closedir(dir);
  if (count) qsort(names, count, sizeof *names, by_name); /* a fixed order */
  for (size_t i = 0; i < count; i++) {
    char full[4096];
    snprintf(full, sizeof full, "%s/%s", path, names[i]);
    if (stat(full, &sb) == 0 && S_ISREG(sb.st_mode)) add_seeds(full);
    free(names[i]);
  }
  free(names);
}

/* A libFuzzer dictionary: lines name="token" or "token", with \\, \" and \xNN. */
static void load_dict(const char *path) {
  FILE *f = fopen(path, "r");
  if (!f) fz_fail("fuzz_driver: cannot read the dictionary %s", path);
  char line[1024];
  while (fgets(line, sizeof line, f)) {
    char *q = strchr(line, '"'), *end = strrchr(line, '"');
    if (line[0] == '#' || !q || end == q) continue;
    unsigned char *tok = malloc((size_t)(end - q));
    size_t n = 0;
    if (!tok) fz_fail("out of memory");
    for (char *p = q + 1; p < end; p++) {
      if (*p == '\\' && p + 1 < end && p[1] == 'x' && p + 3 < end) {
        char hex[3] = {p[2], p[3], 0};
        tok[n++] = (unsigned char)strtoul(hex, NULL, 16);
        p += 3;
      } else if (*p == '\\' && p + 1 < end) {
        tok[n++] = (unsigned char)*++p;
      } else {
        tok[n++] = (unsigned char)*p;
      }
    }
    if (n) push(&dict, tok, n);
    else free(tok);
  }
  fclose(f);
}

/* ------------------------------------------------------------ mutations */

static uint64_t rng;

static uint64_t rnd(void) { /* splitmix64 */
  uint64_t z = (rng += 0x9E3779B97F4A7C15ull);
  z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
  z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
  return z ^ (z >> 31);
}
static size_t below(size_t n) { return n ? (size_t)(rnd() % n) : 0; }

/* Inserts src[0..n) at offset at of b (b->data holds max_len bytes). */
static void insert(buf *b, size_t max_len, size_t at, const unsigned char *src, size_t n) {
  if (b->len + n > max_len) n = max_len - b->len;
  memmove(b->data + at + n, b->data + at, b->len - at);
  memcpy(b->data + at, src, n);
  b->len += n;
}

static void erase(buf *b, size_t at, size_t n) {
  memmove(b->data + at, b->data + at + n, b->len - at - n);
  b->len -= n;
}

static const char *const numbers[] = {
  "0", "1", "-1", "2", "7", "16", "32", "64", "65", "127", "128", "255", "256", "1024", "65536",
  "2147483647", "2147483648", "4294967295", "4294967296", "9223372036854775807",
  "18446744073709551616", "99999999999999999999999", "0.0001", "0.0005", "1e308", "1e-300",
  "nan", "inf", "-0", "00", "1.5"};

/* One random change of b; src is another seed for splices. */
static void mutate_once(buf *b, size_t max_len, const buf *src) {
  static const unsigned char special[] = {0, 1, 0x7f, 0x80, 0xff, '\t', '\n', '\r', ' ', '_',
                                          '-', '+', '0', '9', '{', '}', '%', '#', '"', '\\'};
  unsigned char tmp[64];
  size_t at = below(b->len + 1), n;
  switch (below(10)) {
  case 0: /* flip a bit */
    if (b->len) b->data[below(b->len)] ^= (unsigned char)(1u << below(8));
    break;
  case 1: /* a byte becomes a random or a special one */
    if (b->len)
      b->data[below(b->len)] = below(2) ? (unsigned char)rnd() : special[below(sizeof special)];
    break;
  case 2: /* insert random bytes */
    n = 1 + below(4);
    for (size_t i = 0; i < n; i++) tmp[i] = below(2) ? (unsigned char)rnd() : special[below(sizeof special)];
    insert(b, max_len, at, tmp, n);
    break;
  case 3: /* delete a range */
    if (b->len) {
      at = below(b->len);
      erase(b, at, 1 + below(b->len - at < 16 ? b->len - at : 16));
    }
    break;
  case 4: /* copy a range of itself elsewhere */
    if (b->len) {
      size_t from = below(b->len);
      n = 1 + below(b->len - from < sizeof tmp ? b->len - from : sizeof tmp);
      memcpy(tmp, b->data + from, n);
      insert(b, max_len, below(b->len + 1), tmp, n);
    }
    break;
  case 5: /* splice in a range of another seed */
  case 6:
    if (src->len) {
      size_t from = below(src->len);
      n = 1 + below(src->len - from);
      insert(b, max_len, at, src->data + from, n);
    }
    break;
  case 7: /* cut here and continue with the rest of another seed */
    if (src->len) {
      size_t from = below(src->len);
      b->len = at;
      insert(b, max_len, at, src->data + from, src->len - from);
    }
    break;
  case 8: /* a dictionary token */
    if (dict.n) {
      const buf *t = &dict.v[below(dict.n)];
      insert(b, max_len, at, t->data, t->len);
    }
    break;
  default: { /* a run of digits becomes an interesting number */
    size_t s = at;
    while (s < b->len && !(b->data[s] >= '0' && b->data[s] <= '9')) s++;
    if (s >= b->len) break;
    size_t e = s;
    while (e < b->len && b->data[e] >= '0' && b->data[e] <= '9') e++;
    const char *num = numbers[below(sizeof numbers / sizeof numbers[0])];
    erase(b, s, e - s);
    insert(b, max_len, s, (const unsigned char *)num, strlen(num));
  }
  }
}

/* ------------------------------------------------------------ main */

static double now_s(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static const char *option(const char *arg, const char *name) {
  size_t n = strlen(name);
  return strncmp(arg, name, n) == 0 && arg[n] == '=' ? arg + n + 1 : NULL;
}

static double env_num(const char *name, double def) {
  const char *s = getenv(name);
  return s && *s ? strtod(s, NULL) : def;
}

int main(int argc, char **argv) {
  double seconds = env_num("SFA_FUZZ_SECONDS", 3);
  double runs = env_num("SFA_FUZZ_RUNS", 0);
  rng = (uint64_t)env_num("SFA_FUZZ_SEED", 0);
  size_t max_len = 0;
  int npaths = 0, ndirs = 0, budget_given = 0, seconds_given = 0;

  if (LLVMFuzzerInitialize) LLVMFuzzerInitialize(&argc, &argv);
  for (int i = 1; i < argc; i++) {
    const char *v;
    struct stat sb;
    if ((v = option(argv[i], "-seconds")) || (v = option(argv[i], "-max_total_time")))
      seconds = strtod(v, NULL), budget_given = seconds_given = 1;
    else if ((v = option(argv[i], "-runs"))) {
      runs = strtod(v, NULL), budget_given = 1;
      if (!seconds_given) seconds = 0; /* runs alone, unless -seconds says otherwise */
    }
    else if ((v = option(argv[i], "-seed"))) rng = strtoull(v, NULL, 10);
    else if ((v = option(argv[i], "-max_len"))) max_len = strtoul(v, NULL, 10);
    else if ((v = option(argv[i], "-dict"))) load_dict(v);
    else if (argv[i][0] == '-') fz_fail("fuzz_driver: unknown option %s", argv[i]);
    else {
      ndirs += stat(argv[i], &sb) == 0 && S_ISDIR(sb.st_mode);
      add_seeds(argv[i]);
      npaths++;
    }
  }
  if (!npaths) {
    fprintf(stderr, "usage: %s [-seconds=S] [-runs=N] [-seed=X] [-max_len=L] [-dict=FILE] "
                    "SEED_FILE_OR_DIR...\n", argv[0]);
    return 2;
  }
  if (!rng) rng = (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 32);
  uint64_t seed = rng;
  catch_crashes();

  /* 1. the seeds as they are; files alone (no directory, no budget) reproduce */
  for (size_t i = 0; i < seeds.n; i++) run_one(seeds.v[i].data, seeds.v[i].len);
  if (!ndirs && !budget_given) {
    printf("%s: %zu inputs, no crash\n", argv[0], seeds.n);
    return 0;
  }
  if (!max_len) {
    max_len = 4096;
    for (size_t i = 0; i < seeds.n; i++)
      if (2 * seeds.v[i].len > max_len) max_len = 2 * seeds.v[i].len;
  }

  /* 2. mutants: from a seed, or (half the time) from the last mutant */
  printf("%s: %zu seeds ran; mutating them with random seed %llu\n", argv[0], seeds.n,
         (unsigned long long)seed);
  fflush(stdout);
  buf cur = {malloc(max_len), 0};
  if (!cur.data) fz_fail("out of memory");
  double t0 = now_s(), runs_done = 0;
  while ((runs <= 0 || runs_done < runs) && (seconds <= 0 || now_s() - t0 < seconds) &&
         (runs > 0 || seconds > 0) && seeds.n) {
    if (!cur.len || below(2)) {
      const buf *s = &seeds.v[below(seeds.n)];
      cur.len = s->len < max_len ? s->len : max_len;
      memcpy(cur.data, s->data, cur.len);
    }
    for (size_t k = 1 + below(4); k; k--) mutate_once(&cur, max_len, &seeds.v[below(seeds.n)]);
    run_one(cur.data, cur.len);
    runs_done++;
  }
  printf("%s: %zu seeds and %.0f mutants in %.1f s, no crash (repeat with -seed=%llu "
         "-runs=%.0f)\n", argv[0], seeds.n, runs_done, now_s() - t0, (unsigned long long)seed,
         runs_done);
  free(cur.data);
  for (size_t i = 0; i < seeds.n; i++) free(seeds.v[i].data);
  for (size_t i = 0; i < dict.n; i++) free(dict.v[i].data);
  free(seeds.v);
  free(dict.v);
  return 0;
}
