/*
** test_cache.c -- the on-disk kernel store (cache/store.h) and the sfa-cache
** tool: keys, verified loads (corrupt, truncated, colliding and garbage files
** are misses), atomic replacement, concurrent writers in several processes,
** the memory-only fallback and its single warning, directory resolution, scans;
** and the hardening of every file access: symbolic links are never followed
** when walking or deleting, only the store's own file names are deleted, FIFOs
** and devices never block a reader, oversized entries are refused unread, the
** cache directory is made 0700 and refused when others may write it.
*/
#include "cache/store.h"
#include "testutil.h"

#define XXH_INLINE_ALL
#include <xxhash.h>

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* build/cache/sfa-cache (testutil.h: found from this test's own path). */
#define TOOL tu_build_path("cache/sfa-cache")

static char g_dir[512]; /* fresh per test */

static void setup(void) { snprintf(g_dir, sizeof g_dir, "%s", tu_mkdtemp()); }
static void teardown(void) { tu_rm_rf(g_dir); }

/* ---------------------------------------------------------------- helpers */

/* Key material as the runtime builds it: a name line, then the rest. */
static size_t material(char *buf, size_t n, const char *name, int variant) {
  int len = name ? snprintf(buf, n, "name=%s\nnvrtc=12.4\nopts=-arch=sm_90\nsrc=kernel %d\n", name,
                            variant)
                 : snprintf(buf, n, "nvrtc=12.4\nopts=-arch=sm_90\nsrc=kernel %d\n", variant);
  return (size_t)len;
}

static unsigned char *payload(size_t n, uint64_t seed) {
  unsigned char *p = malloc(n ? n : 1);
  uint64_t s = seed * 7919 + 1;
  for (size_t i = 0; i < n; i++) p[i] = (unsigned char)tu_rand_u64(&s);
  return p;
}

static sfa_store *open_store(const char *dir) {
  sfa_store *st = NULL;
  char err[512];
  ck_assert_int_eq(sfa_store_open(&st, dir, 1, err, sizeof err), SFA_OK);
  ck_assert_ptr_nonnull(st);
  return st;
}

static void file_path(const char *dir, const void *m, size_t mlen, char *out, size_t n) {
  char key[SFA_STORE_KEY_HEX];
  sfa_store_key(m, mlen, key);
  snprintf(out, n, "%s/kernels/%.2s/%s.cubin", dir, key, key);
}

static unsigned char *read_file(const char *path, size_t *n) {
  FILE *f = fopen(path, "rb");
  ck_assert_msg(f != NULL, "cannot open %s", path);
  fseek(f, 0, SEEK_END);
  long len = ftell(f);
  fseek(f, 0, SEEK_SET);
  unsigned char *b = malloc((size_t)len + 1);
  ck_assert_int_eq(fread(b, 1, (size_t)len, f), (size_t)len);
  fclose(f);
  *n = (size_t)len;
  return b;
}

static void write_file(const char *path, const void *b, size_t n) {
  char dir[1024];
  snprintf(dir, sizeof dir, "%s", path);
  *strrchr(dir, '/') = '\0';
  char cmd[1100];
  snprintf(cmd, sizeof cmd, "mkdir -p '%s'", dir);
  ck_assert_int_eq(system(cmd), 0);
  FILE *f = fopen(path, "wb");
  ck_assert_msg(f != NULL, "cannot create %s", path);
  ck_assert_int_eq(fwrite(b, 1, n, f), n);
  ck_assert_int_eq(fclose(f), 0);
}

/* Put material/payload and check that it is a hit. */
static void put_ok(sfa_store *st, const char *m, size_t mlen, const void *p, size_t plen) {
  char err[512] = "";
  ck_assert_msg(sfa_store_put(st, m, mlen, p, plen, err, sizeof err) == SFA_OK, "put: %s", err);
}

static void expect_hit(sfa_store *st, const char *m, size_t mlen, const void *p, size_t plen) {
  char err[512] = "";
  void *got = NULL;
  size_t glen = 0;
  sfa_status rc = sfa_store_get(st, m, mlen, &got, &glen, err, sizeof err);
  ck_assert_msg(rc == SFA_OK, "expected a hit, got %d: %s", rc, err);
  ck_assert_uint_eq(glen, plen);
  ck_assert(plen == 0 || memcmp(got, p, plen) == 0);
  sfa_free(got);
}

/* Expect a miss whose reason contains want (NULL: any). */
static void expect_miss(sfa_store *st, const char *m, size_t mlen, const char *want) {
  char err[512] = "";
  void *got = (void *)1;
  size_t glen = 1;
  sfa_status rc = sfa_store_get(st, m, mlen, &got, &glen, err, sizeof err);
  ck_assert_msg(rc == SFA_ERR_NOT_FOUND, "expected a miss, got %d (%s)", rc, err);
  ck_assert_ptr_null(got);
  ck_assert_uint_eq(glen, 0);
  ck_assert_msg(strstr(err, "kernels/") != NULL, "reason names the file: %s", err);
  if (want) ck_assert_msg(strstr(err, want) != NULL, "reason '%s' lacks '%s'", err, want);
}

static int count_files(const char *dir, const char *substr) {
  char cmd[1200];
  snprintf(cmd, sizeof cmd, "find '%s' -type f -name '*%s*' | wc -l", dir, substr);
  FILE *f = popen(cmd, "r");
  int n = -1;
  ck_assert_int_eq(fscanf(f, "%d", &n), 1);
  pclose(f);
  return n;
}

/* ---------------------------------------------------------------- keys */

START_TEST(key_is_deterministic_and_distinct) {
  char a[256], b[256], k1[SFA_STORE_KEY_HEX], k2[SFA_STORE_KEY_HEX], k3[SFA_STORE_KEY_HEX];
  size_t la = material(a, sizeof a, "sfa_fwd_dense_bf16_d128_m128n64_w4s2_sm90", 1);
  size_t lb = material(b, sizeof b, "sfa_fwd_dense_bf16_d128_m128n64_w4s2_sm90", 2);
  sfa_store_key(a, la, k1);
  sfa_store_key(a, la, k2);
  sfa_store_key(b, lb, k3);
  ck_assert_str_eq(k1, k2);
  ck_assert_str_ne(k1, k3);
  ck_assert_uint_eq(strlen(k1), 32);
  for (int i = 0; i < 32; i++) ck_assert(strchr("0123456789abcdef", k1[i]) != NULL);
  /* It is the canonical XXH3-128 of the material. */
  XXH128_canonical_t c;
  char want[33];
  XXH128_canonicalFromHash(&c, XXH3_128bits(a, la));
  for (int i = 0; i < 16; i++) snprintf(want + 2 * i, 3, "%02x", c.digest[i]);
  ck_assert_str_eq(k1, want);
  /* One byte more or less changes it too; empty material has a key. */
  sfa_store_key(a, la - 1, k2);
  ck_assert_str_ne(k1, k2);
  sfa_store_key("", 0, k2);
  ck_assert_uint_eq(strlen(k2), 32);
}
END_TEST

/* ---------------------------------------------------------------- put / get */

START_TEST(put_then_get_round_trips) {
  sfa_store *st = open_store(g_dir);
  ck_assert_str_eq(sfa_store_dir(st), g_dir);
  ck_assert_int_eq(sfa_store_is_memory_only(st), 0);
  size_t sizes[] = {0, 1, 4096, 300000};
  for (int i = 0; i < 4; i++) {
    char m[256], path[1024];
    size_t ml = material(m, sizeof m, "k", i);
    unsigned char *p = payload(sizes[i], (uint64_t)i);
    put_ok(st, m, ml, p, sizes[i]);
    expect_hit(st, m, ml, p, sizes[i]);
    file_path(g_dir, m, ml, path, sizeof path);
    size_t fl;
    unsigned char *f = read_file(path, &fl);
    ck_assert_uint_eq(fl, SFA_STORE_HEADER_BYTES + ml + sizes[i]);
    ck_assert(memcmp(f, "SFACUBIN", 8) == 0);
    ck_assert(f[8] == 1 && f[9] == 0 && f[10] == 0 && f[11] == 0); /* version 1, LE */
    ck_assert(memcmp(f + SFA_STORE_HEADER_BYTES, m, ml) == 0);
    free(f);
    free(p);
  }
  sfa_store_close(st);
  /* A second store (another process in real life) sees the files. */
  st = open_store(g_dir);
  char m[256];
  size_t ml = material(m, sizeof m, "k", 3);
  unsigned char *p = payload(sizes[3], 3);
  expect_hit(st, m, ml, p, sizes[3]);
  free(p);
  sfa_store_close(st);
}
END_TEST

START_TEST(get_absent_is_not_found) {
  sfa_store *st = open_store(g_dir);
  char m[256];
  size_t ml = material(m, sizeof m, "absent", 0);
  expect_miss(st, m, ml, "not cached");
  sfa_store_close(st);
}
END_TEST

START_TEST(flipped_payload_byte_is_a_miss) {
  sfa_store *st = open_store(g_dir);
  char m[256], path[1024];
  size_t ml = material(m, sizeof m, "flip", 0), fl;
  unsigned char *p = payload(5000, 1);
  put_ok(st, m, ml, p, 5000);
  file_path(g_dir, m, ml, path, sizeof path);
  unsigned char *f = read_file(path, &fl);
  f[fl - 100] ^= 0x01;
  write_file(path, f, fl);
  expect_miss(st, m, ml, "payload checksum");
  /* A flipped byte in the key material is caught by the header checksum. */
  f[fl - 100] ^= 0x01;
  f[SFA_STORE_HEADER_BYTES + 3] ^= 0x20;
  write_file(path, f, fl);
  expect_miss(st, m, ml, "header checksum");
  /* And one in the length fields. */
  f[SFA_STORE_HEADER_BYTES + 3] ^= 0x20;
  f[28] ^= 0x80;
  write_file(path, f, fl);
  expect_miss(st, m, ml, "checksum");
  free(f);
  free(p);
  sfa_store_close(st);
}
END_TEST

START_TEST(truncated_file_is_a_miss) {
  sfa_store *st = open_store(g_dir);
  char m[256], path[1024], want[128];
  size_t ml = material(m, sizeof m, "trunc", 0), fl;
  unsigned char *p = payload(5678, 2);
  put_ok(st, m, ml, p, 5678);
  file_path(g_dir, m, ml, path, sizeof path);
  unsigned char *f = read_file(path, &fl);
  write_file(path, f, fl - 1000);
  snprintf(want, sizeof want, "truncated (payload 4678 of 5678 bytes)");
  expect_miss(st, m, ml, want);
  write_file(path, f, SFA_STORE_HEADER_BYTES + 5); /* inside the material */
  expect_miss(st, m, ml, "truncated (key material");
  write_file(path, f, 20); /* inside the header */
  expect_miss(st, m, ml, "truncated (header 20 of 44 bytes)");
  write_file(path, f, 0);
  expect_miss(st, m, ml, "truncated");
  /* Extra bytes at the end are rejected as well. */
  unsigned char *g = malloc(fl + 3);
  memcpy(g, f, fl);
  memset(g + fl, 0, 3);
  write_file(path, g, fl + 3);
  expect_miss(st, m, ml, "3 unexpected bytes");
  free(g);
  free(f);
  free(p);
  sfa_store_close(st);
}
END_TEST

START_TEST(colliding_material_is_a_miss) {
  sfa_store *st = open_store(g_dir);
  char a[256], b[256], c[300], pa[1024], pb[1024], pc[1024];
  size_t la = material(a, sizeof a, "alpha", 1), fl;
  size_t lb = material(b, sizeof b, "alpha", 2); /* same length, other bytes */
  size_t lc = material(c, sizeof c, "alpha_longer_name", 3);
  ck_assert_uint_eq(la, lb);
  unsigned char *p = payload(1000, 3);
  put_ok(st, a, la, p, 1000);
  file_path(g_dir, a, la, pa, sizeof pa);
  file_path(g_dir, b, lb, pb, sizeof pb);
  file_path(g_dir, c, lc, pc, sizeof pc);
  unsigned char *f = read_file(pa, &fl);
  write_file(pb, f, fl); /* a valid file for A under B's key */
  write_file(pc, f, fl); /* and under C's, whose material differs in length */
  expect_miss(st, b, lb, "key material differs");
  expect_miss(st, c, lc, "key material differs");
  expect_hit(st, a, la, p, 1000);
  free(f);
  free(p);
  sfa_store_close(st);
}
END_TEST

START_TEST(garbage_file_is_a_miss) {
  sfa_store *st = open_store(g_dir);
  char m[256], path[1024];
  size_t ml = material(m, sizeof m, "garbage", 0);
  file_path(g_dir, m, ml, path, sizeof path);
  unsigned char *g = payload(3000, 4);
  write_file(path, g, 3000);
  expect_miss(st, m, ml, "bad magic");
  /* The right magic followed by garbage: absurd lengths never allocate. */
  memcpy(g, "SFACUBIN\x01\0\0\0", 12);
  memset(g + 12, 0xff, 16);
  write_file(path, g, 3000);
  expect_miss(st, m, ml, "truncated");
  memcpy(g, "SFACUBIN\x07\0\0\0", 12);
  write_file(path, g, 3000);
  expect_miss(st, m, ml, "version 7");
  /* A directory where the file should be. */
  unlink(path);
  ck_assert_int_eq(mkdir(path, 0755), 0);
  expect_miss(st, m, ml, NULL);
  free(g);
  sfa_store_close(st);
}
END_TEST

START_TEST(put_replaces_a_bad_file) {
  sfa_store *st = open_store(g_dir);
  char m[256], path[1024];
  size_t ml = material(m, sizeof m, "replace", 0);
  unsigned char *p = payload(2000, 5), *q = payload(2500, 6);
  put_ok(st, m, ml, p, 2000);
  file_path(g_dir, m, ml, path, sizeof path);
  write_file(path, "junk", 4);
  expect_miss(st, m, ml, NULL);
  put_ok(st, m, ml, q, 2500);
  expect_hit(st, m, ml, q, 2500);
  ck_assert_int_eq(sfa_store_is_memory_only(st), 0);
  /* Replacing a good file works too. */
  put_ok(st, m, ml, p, 2000);
  expect_hit(st, m, ml, p, 2000);
  free(p);
  free(q);
  sfa_store_close(st);
}
END_TEST

START_TEST(no_temp_file_remains) {
  sfa_store *st = open_store(g_dir);
  unsigned char *p = payload(10000, 7);
  for (int i = 0; i < 20; i++) {
    char m[256];
    size_t ml = material(m, sizeof m, "tmp", i);
    put_ok(st, m, ml, p, 10000);
    put_ok(st, m, ml, p, 10000);
  }
  ck_assert_int_eq(count_files(g_dir, ".tmp."), 0);
  ck_assert_int_eq(count_files(g_dir, ".probe."), 0);
  ck_assert_int_eq(count_files(g_dir, ".cubin"), 20);
  /* A failing rename (a directory in the way) removes its temporary file. */
  char m[256], path[1024];
  size_t ml = material(m, sizeof m, "blocked", 0);
  file_path(g_dir, m, ml, path, sizeof path);
  write_file(path, "x", 1);
  unlink(path);
  ck_assert_int_eq(mkdir(path, 0755), 0);
  char sub[1100];
  snprintf(sub, sizeof sub, "%s/x", path);
  write_file(sub, "x", 1); /* non-empty, so rename cannot replace it */
  put_ok(st, m, ml, p, 10000);
  ck_assert_int_eq(count_files(g_dir, ".tmp."), 0);
  expect_hit(st, m, ml, p, 10000); /* served from memory */
  ck_assert_int_eq(sfa_store_is_memory_only(st), 1);
  free(p);
  sfa_store_close(st);
}
END_TEST

/* ---------------------------------------------------------------- concurrency */

START_TEST(two_processes_put_same_key) {
  enum { SIZE = 1 << 20, PUTS = 50 };
  char m[256], path[1024];
  size_t ml = material(m, sizeof m, "race", 0);
  unsigned char *p[2] = {payload(SIZE, 100), payload(SIZE, 101)};
  pid_t pid[2];
  for (int c = 0; c < 2; c++) {
    pid[c] = fork();
    ck_assert_int_ge(pid[c], 0);
    if (pid[c] == 0) {
      sfa_store *st = NULL;
      int bad = sfa_store_open(&st, g_dir, 1, NULL, 0) != SFA_OK;
      for (int i = 0; i < PUTS && !bad; i++)
        bad = sfa_store_put(st, m, ml, p[c], SIZE, NULL, 0) != SFA_OK;
      bad |= sfa_store_is_memory_only(st);
      sfa_store_close(st);
      _exit(bad);
    }
  }
  sfa_store *st = open_store(g_dir);
  int running = 2, hits = 0, misses = 0, status[2] = {-1, -1};
  while (running > 0) {
    void *got = NULL;
    size_t glen = 0;
    char err[512];
    sfa_status rc = sfa_store_get(st, m, ml, &got, &glen, err, sizeof err);
    if (rc == SFA_OK) {
      ck_assert_uint_eq(glen, SIZE);
      ck_assert_msg(memcmp(got, p[0], SIZE) == 0 || memcmp(got, p[1], SIZE) == 0,
                    "a hit returned a mixed payload");
      hits++;
    } else {
      ck_assert_int_eq(rc, SFA_ERR_NOT_FOUND);
      ck_assert_msg(strstr(err, "not cached") != NULL, "a reader saw a bad file: %s", err);
      misses++;
    }
    sfa_free(got);
    for (int c = 0; c < 2; c++)
      if (status[c] == -1 && waitpid(pid[c], &status[c], WNOHANG) == pid[c]) running--;
  }
  for (int c = 0; c < 2; c++) {
    ck_assert(WIFEXITED(status[c]));
    ck_assert_int_eq(WEXITSTATUS(status[c]), 0);
  }
  ck_assert_int_gt(hits, 0);
  size_t fl;
  file_path(g_dir, m, ml, path, sizeof path);
  unsigned char *f = read_file(path, &fl);
  ck_assert_uint_eq(fl, SFA_STORE_HEADER_BYTES + ml + SIZE);
  free(f);
  void *got = NULL;
  size_t glen = 0;
  ck_assert_int_eq(sfa_store_get(st, m, ml, &got, &glen, NULL, 0), SFA_OK);
  ck_assert(memcmp(got, p[0], SIZE) == 0 || memcmp(got, p[1], SIZE) == 0);
  sfa_free(got);
  ck_assert_int_eq(count_files(g_dir, ".tmp."), 0);
  fprintf(stderr, "two_processes_put_same_key: %d hits, %d misses while writing\n", hits, misses);
  free(p[0]);
  free(p[1]);
  sfa_store_close(st);
}
END_TEST

START_TEST(four_processes_put_different_keys) {
  enum { PROCS = 4, KEYS = 25 };
  pid_t pid[PROCS];
  for (int c = 0; c < PROCS; c++) {
    pid[c] = fork();
    ck_assert_int_ge(pid[c], 0);
    if (pid[c] == 0) {
      sfa_store *st = NULL;
      int bad = sfa_store_open(&st, g_dir, 1, NULL, 0) != SFA_OK;
      for (int i = 0; i < KEYS && !bad; i++) {
        char m[256];
        size_t ml = material(m, sizeof m, "many", c * 1000 + i);
        unsigned char *p = payload(20000 + (size_t)i, (uint64_t)(c * 1000 + i));
        bad = sfa_store_put(st, m, ml, p, 20000 + (size_t)i, NULL, 0) != SFA_OK;
        free(p);
      }
      bad |= sfa_store_is_memory_only(st);
      sfa_store_close(st);
      _exit(bad);
    }
  }
  for (int c = 0; c < PROCS; c++) {
    int status;
    ck_assert_int_eq(waitpid(pid[c], &status, 0), pid[c]);
    ck_assert(WIFEXITED(status) && WEXITSTATUS(status) == 0);
  }
  sfa_store *st = open_store(g_dir);
  for (int c = 0; c < PROCS; c++)
    for (int i = 0; i < KEYS; i++) {
      char m[256];
      size_t ml = material(m, sizeof m, "many", c * 1000 + i);
      unsigned char *p = payload(20000 + (size_t)i, (uint64_t)(c * 1000 + i));
      expect_hit(st, m, ml, p, 20000 + (size_t)i);
      free(p);
    }
  ck_assert_int_eq(count_files(g_dir, ".cubin"), PROCS * KEYS);
  ck_assert_int_eq(count_files(g_dir, ".tmp."), 0);
  sfa_store_close(st);
}
END_TEST

typedef struct thread_arg {
  sfa_store *st;
  int id;
  int failures;
} thread_arg;

static void *thread_main(void *arg) {
  thread_arg *t = arg;
  for (int i = 0; i < 50; i++) {
    char m[256];
    size_t ml = material(m, sizeof m, "thread", t->id * 100 + i % 10);
    unsigned char *p = payload(3000, (uint64_t)(t->id * 100 + i % 10));
    void *got = NULL;
    size_t glen = 0;
    if (sfa_store_put(t->st, m, ml, p, 3000, NULL, 0) != SFA_OK) t->failures++;
    if (sfa_store_get(t->st, m, ml, &got, &glen, NULL, 0) != SFA_OK || glen != 3000 ||
        memcmp(got, p, 3000) != 0)
      t->failures++;
    sfa_free(got);
    free(p);
  }
  return NULL;
}

START_TEST(threads_share_a_store) {
  char dirs[2][1024];
  snprintf(dirs[0], sizeof dirs[0], "%s", g_dir);
  snprintf(dirs[1], sizeof dirs[1], "%s/file", g_dir);
  write_file(dirs[1], "x", 1);
  strcat(dirs[1], "/cache"); /* unwritable: memory only */
  for (int d = 0; d < 2; d++) {
    sfa_store *st = open_store(dirs[d]);
    ck_assert_int_eq(sfa_store_is_memory_only(st), d);
    pthread_t th[4];
    thread_arg ta[4];
    for (int i = 0; i < 4; i++) {
      ta[i] = (thread_arg){st, i, 0};
      ck_assert_int_eq(pthread_create(&th[i], NULL, thread_main, &ta[i]), 0);
    }
    for (int i = 0; i < 4; i++) {
      pthread_join(th[i], NULL);
      ck_assert_int_eq(ta[i].failures, 0);
    }
    sfa_store_close(st);
  }
}
END_TEST

/* ---------------------------------------------------------------- memory-only mode */

START_TEST(unwritable_dir_is_memory_only_with_one_warning) {
  char file[1024], dir[1100], errpath[1100], m[256];
  snprintf(file, sizeof file, "%s/a-file", g_dir);
  write_file(file, "x", 1);
  snprintf(dir, sizeof dir, "%s/cache", file); /* parent is a regular file: ENOTDIR */
  snprintf(errpath, sizeof errpath, "%s/stderr.txt", g_dir);
  int saved = tu_capture_stderr(errpath);
  sfa_store *st = NULL;
  sfa_status rc = sfa_store_open(&st, dir, 0, NULL, 0);
  size_t ml = material(m, sizeof m, "mem", 0);
  unsigned char *p = payload(4000, 8), *q = payload(100, 9);
  if (rc == SFA_OK) {
    put_ok(st, m, ml, p, 4000);
    put_ok(st, m, ml, q, 100); /* replace */
    char m2[256];
    size_t ml2 = material(m2, sizeof m2, "mem", 1);
    put_ok(st, m2, ml2, p, 4000);
    expect_hit(st, m2, ml2, p, 4000);
  }
  tu_restore_stderr(saved);
  ck_assert_int_eq(rc, SFA_OK);
  ck_assert_int_eq(sfa_store_is_memory_only(st), 1);
  expect_hit(st, m, ml, q, 100);
  char m3[256];
  size_t ml3 = material(m3, sizeof m3, "mem", 2);
  expect_miss(st, m3, ml3, NULL);
  size_t n;
  char *text = (char *)read_file(errpath, &n);
  text[n] = '\0';
  ck_assert_int_eq(tu_count_substr(text, "sfa: warning"), 1);
  ck_assert_msg(strstr(text, "cache directory") && strstr(text, "is not writable") &&
                    strstr(text, "Not a directory") && strstr(text, "memory only"),
                "warning text: %s", text);
  free(text);
  free(p);
  free(q);
  sfa_store_close(st);
  /* A path under /proc cannot be created either; quiet means no warning. */
  saved = tu_capture_stderr(errpath);
  rc = sfa_store_open(&st, "/proc/sfa-test-no-such-dir/cache", 1, NULL, 0);
  tu_restore_stderr(saved);
  ck_assert_int_eq(rc, SFA_OK);
  ck_assert_int_eq(sfa_store_is_memory_only(st), 1);
  sfa_store_close(st);
  text = (char *)read_file(errpath, &n);
  ck_assert_uint_eq(n, 0);
  free(text);
}
END_TEST

START_TEST(failing_put_switches_to_memory_only) {
  char m[256], m2[256], errpath[1100], key[SFA_STORE_KEY_HEX], block[1100];
  size_t ml = material(m, sizeof m, "later", 0), ml2 = material(m2, sizeof m2, "later", 1);
  unsigned char *p = payload(4000, 10);
  snprintf(errpath, sizeof errpath, "%s/stderr.txt", g_dir);
  sfa_store *st = NULL;
  int saved = tu_capture_stderr(errpath);
  sfa_status rc = sfa_store_open(&st, g_dir, 0, NULL, 0);
  int mem_after_open = rc == SFA_OK ? sfa_store_is_memory_only(st) : -1;
  /* The subdirectory for this key is a regular file: the write fails the way
  ** a full disk would, after a successful open. */
  sfa_store_key(m, ml, key);
  snprintf(block, sizeof block, "%s/kernels/%.2s", g_dir, key);
  write_file(block, "x", 1);
  put_ok(st, m, ml, p, 4000);
  put_ok(st, m2, ml2, p, 4000);
  put_ok(st, m, ml, p, 4000);
  tu_restore_stderr(saved);
  ck_assert_int_eq(rc, SFA_OK);
  ck_assert_int_eq(mem_after_open, 0);
  ck_assert_int_eq(sfa_store_is_memory_only(st), 1);
  expect_hit(st, m, ml, p, 4000);
  expect_hit(st, m2, ml2, p, 4000);
  size_t n;
  char *text = (char *)read_file(errpath, &n);
  text[n] = '\0';
  ck_assert_msg(tu_count_substr(text, "sfa: warning") == 1, "stderr: %s", text);
  ck_assert(strstr(text, "memory only") != NULL);
  free(text);
  free(p);
  sfa_store_close(st);
}
END_TEST

/* ---------------------------------------------------------------- directory resolution */

START_TEST(dir_resolution_order) {
  char out[512], err[256];
  unsetenv("SFA_CACHE_DIR");
  unsetenv("XDG_CACHE_HOME");
  unsetenv("HOME");
  ck_assert_int_eq(sfa_store_resolve_dir(NULL, out, sizeof out, err, sizeof err),
                   SFA_ERR_NOT_FOUND);
  ck_assert(strstr(err, "SFA_CACHE_DIR") != NULL);
  setenv("HOME", "/home/u", 1);
  ck_assert_int_eq(sfa_store_resolve_dir(NULL, out, sizeof out, NULL, 0), SFA_OK);
  ck_assert_str_eq(out, "/home/u/.cache/sfa");
  setenv("XDG_CACHE_HOME", "", 1); /* empty is ignored */
  ck_assert_int_eq(sfa_store_resolve_dir(NULL, out, sizeof out, NULL, 0), SFA_OK);
  ck_assert_str_eq(out, "/home/u/.cache/sfa");
  setenv("XDG_CACHE_HOME", "/xdg", 1);
  ck_assert_int_eq(sfa_store_resolve_dir(NULL, out, sizeof out, NULL, 0), SFA_OK);
  ck_assert_str_eq(out, "/xdg/sfa");
  setenv("SFA_CACHE_DIR", "", 1);
  ck_assert_int_eq(sfa_store_resolve_dir(NULL, out, sizeof out, NULL, 0), SFA_OK);
  ck_assert_str_eq(out, "/xdg/sfa");
  setenv("SFA_CACHE_DIR", "/sfa/cache//", 1); /* trailing slashes dropped */
  ck_assert_int_eq(sfa_store_resolve_dir(NULL, out, sizeof out, NULL, 0), SFA_OK);
  ck_assert_str_eq(out, "/sfa/cache");
  ck_assert_int_eq(sfa_store_resolve_dir("", out, sizeof out, NULL, 0), SFA_OK);
  ck_assert_str_eq(out, "/sfa/cache");
  ck_assert_int_eq(sfa_store_resolve_dir("/explicit", out, sizeof out, NULL, 0), SFA_OK);
  ck_assert_str_eq(out, "/explicit");
  ck_assert_int_eq(sfa_store_resolve_dir("/explicit", out, 5, err, sizeof err),
                   SFA_ERR_INVALID_ARGUMENT);
  ck_assert(strstr(err, "too long") != NULL);
  /* sfa_store_open with no dir uses the environment. */
  setenv("SFA_CACHE_DIR", g_dir, 1);
  sfa_store *st = open_store(NULL);
  ck_assert_str_eq(sfa_store_dir(st), g_dir);
  ck_assert_int_eq(sfa_store_is_memory_only(st), 0);
  sfa_store_close(st);
  /* Nothing resolvable: memory only, not a failure. */
  unsetenv("SFA_CACHE_DIR");
  unsetenv("XDG_CACHE_HOME");
  unsetenv("HOME");
  st = open_store(NULL);
  ck_assert_int_eq(sfa_store_is_memory_only(st), 1);
  ck_assert_str_eq(sfa_store_dir(st), "");
  char m[256];
  size_t ml = material(m, sizeof m, "nodir", 0);
  put_ok(st, m, ml, "abc", 3);
  expect_hit(st, m, ml, "abc", 3);
  sfa_store_close(st);
}
END_TEST

/* ---------------------------------------------------------------- scans */

typedef struct scan_result {
  int n, valid, stop_after;
  char names[16][160];
  char keys[16][SFA_STORE_KEY_HEX];
  int valids[16];
  char reasons[16][256];
} scan_result;

static int scan_visit(const sfa_store_entry *e, void *user) {
  scan_result *r = user;
  if (r->n < 16) {
    snprintf(r->names[r->n], sizeof r->names[0], "%s", e->name);
    snprintf(r->keys[r->n], sizeof r->keys[0], "%s", e->key);
    snprintf(r->reasons[r->n], sizeof r->reasons[0], "%s", e->reason);
    r->valids[r->n] = e->valid;
  }
  ck_assert_int_gt(e->size, 0);
  ck_assert_int_gt(e->mtime, 0);
  ck_assert(strncmp(e->path, g_dir, strlen(g_dir)) == 0);
  r->n++;
  r->valid += e->valid;
  return r->stop_after && r->n >= r->stop_after;
}

static int find_key(const scan_result *r, const char *key) {
  for (int i = 0; i < r->n && i < 16; i++)
    if (strcmp(r->keys[i], key) == 0) return i;
  return -1;
}

START_TEST(scan_lists_valid_and_invalid_files) {
  sfa_store *st = open_store(g_dir);
  char m[4][256], k[4][SFA_STORE_KEY_HEX], path[1024];
  size_t ml[4];
  ml[0] = material(m[0], sizeof m[0], "sfa_fwd_dense_fp16_d64_m128n64_w4s2_sm80", 0);
  ml[1] = material(m[1], sizeof m[1], "sfa_fwd_dense_bf16_d128_m128n64_w4s2_sm90", 1);
  ml[2] = material(m[2], sizeof m[2], NULL, 2);
  /* name= not at a line start does not count; the first line that is wins */
  ml[3] = (size_t)snprintf(m[3], sizeof m[3], "src=xname=no\nname=first\nname=second\n");
  unsigned char *p = payload(777, 11);
  for (int i = 0; i < 4; i++) {
    put_ok(st, m[i], ml[i], p, 777);
    sfa_store_key(m[i], ml[i], k[i]);
  }
  /* corrupt #1 */
  file_path(g_dir, m[1], ml[1], path, sizeof path);
  size_t fl;
  unsigned char *f = read_file(path, &fl);
  f[fl - 1] ^= 0xff;
  write_file(path, f, fl);
  free(f);
  /* a garbage file, a valid file under a wrong name, a temp file, a stray file */
  snprintf(path, sizeof path, "%s/kernels/00/00000000000000000000000000000000.cubin", g_dir);
  write_file(path, "garbage!", 8);
  char src[1024];
  file_path(g_dir, m[0], ml[0], src, sizeof src);
  f = read_file(src, &fl);
  snprintf(path, sizeof path, "%s/kernels/ff/ffffffffffffffffffffffffffffffff.cubin", g_dir);
  write_file(path, f, fl);
  snprintf(path, sizeof path, "%s/kernels/%.2s/%s.cubin.tmp.AbC123", g_dir, k[0], k[0]);
  write_file(path, f, fl / 2);
  snprintf(path, sizeof path, "%s/kernels/%.2s/README", g_dir, k[0]);
  write_file(path, "hello", 5);
  free(f);

  scan_result r;
  memset(&r, 0, sizeof r);
  char err[512] = "";
  ck_assert_msg(sfa_store_scan(st, scan_visit, &r, err, sizeof err) == SFA_OK, "%s", err);
  ck_assert_int_eq(r.n, 6);
  ck_assert_int_eq(r.valid, 3);
  int i0 = find_key(&r, k[0]), i1 = find_key(&r, k[1]), i2 = find_key(&r, k[2]),
      i3 = find_key(&r, k[3]);
  int ig = find_key(&r, "00000000000000000000000000000000");
  int iw = find_key(&r, "ffffffffffffffffffffffffffffffff");
  ck_assert(i0 >= 0 && i1 >= 0 && i2 >= 0 && i3 >= 0 && ig >= 0 && iw >= 0);
  ck_assert(r.valids[i0] && !r.valids[i1] && r.valids[i2] && r.valids[i3]);
  ck_assert(!r.valids[ig] && !r.valids[iw]);
  ck_assert_str_eq(r.names[i0], "sfa_fwd_dense_fp16_d64_m128n64_w4s2_sm80");
  ck_assert_str_eq(r.names[i2], "");
  ck_assert_str_eq(r.names[i3], "first");
  ck_assert_str_eq(r.reasons[i0], "");
  ck_assert(strstr(r.reasons[i1], "checksum") != NULL);
  ck_assert(strstr(r.reasons[ig], "magic") != NULL);
  ck_assert(strstr(r.reasons[iw], "does not match") != NULL);
  ck_assert_str_eq(r.names[iw], "sfa_fwd_dense_fp16_d64_m128n64_w4s2_sm80");

  /* Temporary files are listed separately. */
  memset(&r, 0, sizeof r);
  ck_assert_int_eq(sfa_store_scan_temp(st, scan_visit, &r, NULL, 0), SFA_OK);
  ck_assert_int_eq(r.n, 1);
  ck_assert_str_eq(r.keys[0], k[0]);
  ck_assert_int_eq(r.valid, 0);

  /* A nonzero return stops the scan. */
  memset(&r, 0, sizeof r);
  r.stop_after = 2;
  ck_assert_int_eq(sfa_store_scan(st, scan_visit, &r, NULL, 0), SFA_OK);
  ck_assert_int_eq(r.n, 2);
  free(p);
  sfa_store_close(st);
}
END_TEST

/* ---------------------------------------------------------------- sfa-cache tool */

/* Run the tool (args appended) after the shell prefix pre, stdout and stderr
** into out; returns the exit status. */
static int run_tool_after(const char *pre, char *out, size_t n, const char *args) {
  char cmd[2048];
  snprintf(cmd, sizeof cmd, "%s'%s' %s 2>&1", pre, TOOL, args);
  FILE *f = popen(cmd, "r");
  ck_assert_ptr_nonnull(f);
  size_t len = fread(out, 1, n - 1, f);
  out[len] = '\0';
  int st = pclose(f);
  ck_assert_msg(WIFEXITED(st), "%s did not exit", cmd);
  return WEXITSTATUS(st);
}

static int run_tool(char *out, size_t n, const char *args) { return run_tool_after("", out, n, args); }

/* Three kernels (one corrupt) with the given ages in days. */
static void populate(char keys[3][SFA_STORE_KEY_HEX], const double age_days[3], size_t psize) {
  sfa_store *st = open_store(g_dir);
  unsigned char *p = payload(psize, 12);
  time_t now = time(NULL);
  for (int i = 0; i < 3; i++) {
    char m[256], path[1024];
    size_t ml = material(m, sizeof m, i == 0 ? "sfa_fwd_dense_bf16_d64_m64n64_w4s1_sm90" : "k", i);
    put_ok(st, m, ml, p, psize);
    sfa_store_key(m, ml, keys[i]);
    file_path(g_dir, m, ml, path, sizeof path);
    if (i == 2) {
      size_t fl;
      unsigned char *f = read_file(path, &fl);
      f[fl - 1] ^= 1;
      write_file(path, f, fl);
      free(f);
    }
    struct timespec ts[2];
    ts[0].tv_sec = ts[1].tv_sec = now - (time_t)(age_days[i] * 86400);
    ts[0].tv_nsec = ts[1].tv_nsec = 0;
    ck_assert_int_eq(utimensat(AT_FDCWD, path, ts, 0), 0);
  }
  free(p);
  sfa_store_close(st);
}

START_TEST(tool_path_and_usage) {
  char out[8192], args[1024];
  snprintf(args, sizeof args, "--dir '%s/' path", g_dir);
  ck_assert_int_eq(run_tool(out, sizeof out, args), 0);
  char want[600];
  snprintf(want, sizeof want, "%s\n", g_dir);
  ck_assert_str_eq(out, want);
  setenv("SFA_CACHE_DIR", "/somewhere/sfa", 1);
  ck_assert_int_eq(run_tool(out, sizeof out, "path"), 0);
  ck_assert_str_eq(out, "/somewhere/sfa\n");
  ck_assert_int_eq(run_tool(out, sizeof out, "--help"), 0);
  ck_assert(strstr(out, "usage: sfa-cache") && strstr(out, "prune"));
  ck_assert_int_eq(run_tool(out, sizeof out, ""), 2);
  ck_assert(strstr(out, "sfa-cache: ") != NULL);
  ck_assert_int_eq(run_tool(out, sizeof out, "frobnicate"), 2);
  ck_assert(strstr(out, "sfa-cache: unknown command frobnicate") != NULL);
  ck_assert_int_eq(run_tool(out, sizeof out, "list --fix"), 2);
  ck_assert_int_eq(run_tool(out, sizeof out, "prune --older-than -3"), 2);
  ck_assert_int_eq(run_tool(out, sizeof out, "prune --max-size"), 2);
  ck_assert_int_eq(run_tool(out, sizeof out, "list --bogus"), 2);
}
END_TEST

START_TEST(tool_list) {
  char keys[3][SFA_STORE_KEY_HEX], out[8192], args[1024];
  const double ages[3] = {3, 0, 0};
  populate(keys, ages, 2048);
  snprintf(args, sizeof args, "--dir '%s' list", g_dir);
  ck_assert_int_eq(run_tool(out, sizeof out, args), 0);
  ck_assert_msg(strncmp(out, "KEY", 3) == 0 && strstr(out, "SIZE") && strstr(out, "AGE") &&
                    strstr(out, "VALID") && strstr(out, "NAME"),
                "%s", out);
  for (int i = 0; i < 3; i++) ck_assert(strstr(out, keys[i]) != NULL);
  ck_assert(strstr(out, "sfa_fwd_dense_bf16_d64_m64n64_w4s1_sm90") != NULL);
  ck_assert_msg(strstr(out, " 3d  ") != NULL, "%s", out); /* the age column */
  ck_assert_int_eq(tu_count_substr(out, " yes "), 2);
  ck_assert_int_eq(tu_count_substr(out, " no "), 1);
  ck_assert_msg(strstr(out, "total: 3 kernels,") && strstr(out, "1 invalid"), "%s", out);
  /* An absent directory lists as empty and is not created. */
  snprintf(args, sizeof args, "--dir '%s/absent' list", g_dir);
  ck_assert_int_eq(run_tool(out, sizeof out, args), 0);
  ck_assert(strstr(out, "total: 0 kernels") != NULL);
  char absent[1024];
  snprintf(absent, sizeof absent, "%s/absent", g_dir);
  ck_assert_int_ne(access(absent, F_OK), 0);
}
END_TEST

START_TEST(tool_verify) {
  char keys[3][SFA_STORE_KEY_HEX], out[8192], args[1024];
  const double ages[3] = {0, 0, 0};
  populate(keys, ages, 1024);
  snprintf(args, sizeof args, "--dir '%s' verify", g_dir);
  ck_assert_int_eq(run_tool(out, sizeof out, args), 1);
  ck_assert_msg(strstr(out, "bad: kernels/") && strstr(out, keys[2]) && strstr(out, "checksum") &&
                    strstr(out, "checked 3 files: 1 bad"),
                "%s", out);
  ck_assert(strstr(out, keys[0]) == NULL);
  snprintf(args, sizeof args, "--dir '%s' verify --fix", g_dir);
  ck_assert_int_eq(run_tool(out, sizeof out, args), 0);
  ck_assert_msg(strstr(out, "1 bad, 1 removed") != NULL, "%s", out);
  ck_assert_int_eq(count_files(g_dir, ".cubin"), 2);
  snprintf(args, sizeof args, "--dir '%s' verify", g_dir);
  ck_assert_int_eq(run_tool(out, sizeof out, args), 0);
  ck_assert_msg(strstr(out, "checked 2 files: 0 bad") != NULL, "%s", out);
}
END_TEST

START_TEST(tool_prune) {
  char keys[3][SFA_STORE_KEY_HEX], out[8192], args[1024], path[1024];
  const double ages[3] = {10, 5, 1};
  populate(keys, ages, 400 * 1024);
  /* stray temp files: one two hours old, one fresh */
  snprintf(path, sizeof path, "%s/kernels/%.2s/%s.cubin.tmp.OLD123", g_dir, keys[0], keys[0]);
  write_file(path, "partial", 7);
  struct timespec ts[2] = {{time(NULL) - 7200, 0}, {time(NULL) - 7200, 0}};
  ck_assert_int_eq(utimensat(AT_FDCWD, path, ts, 0), 0);
  snprintf(path, sizeof path, "%s/kernels/%.2s/%s.cubin.tmp.NEW123", g_dir, keys[1], keys[1]);
  write_file(path, "partial", 7);

  snprintf(args, sizeof args, "--dir '%s' prune --older-than 7", g_dir);
  ck_assert_int_eq(run_tool(out, sizeof out, args), 0);
  ck_assert_msg(strstr(out, "removed 1 kernel ") && strstr(out, "1 stale temporary file;") &&
                    strstr(out, "2 kernels"),
                "%s", out);
  ck_assert_int_eq(count_files(g_dir, ".tmp.OLD"), 0);
  ck_assert_int_eq(count_files(g_dir, ".tmp.NEW"), 1);
  ck_assert_int_eq(count_files(g_dir, keys[0]), 0);
  /* 2 x ~400 KiB left; a 0.5 MB limit removes the older one. */
  snprintf(args, sizeof args, "--dir '%s' prune --max-size 0.5", g_dir);
  ck_assert_int_eq(run_tool(out, sizeof out, args), 0);
  ck_assert_msg(strstr(out, "removed 1 kernel ") && strstr(out, "1 kernel ("), "%s", out);
  ck_assert_int_eq(count_files(g_dir, keys[1]), 1); /* only its fresh temp file */
  ck_assert_int_eq(count_files(g_dir, keys[2]), 1);
  /* Both at once; nothing old enough, size already fine. */
  snprintf(args, sizeof args, "--dir '%s' prune --older-than 30 --max-size 100", g_dir);
  ck_assert_int_eq(run_tool(out, sizeof out, args), 0);
  ck_assert_msg(strstr(out, "removed 0 kernels") != NULL, "%s", out);
  ck_assert_int_eq(count_files(g_dir, ".cubin"), 2); /* keys[2] and the fresh temp */
}
END_TEST

START_TEST(tool_clear) {
  char keys[3][SFA_STORE_KEY_HEX], out[8192], args[1024];
  const double ages[3] = {0, 1, 2};
  populate(keys, ages, 100);
  snprintf(args, sizeof args, "--dir '%s' clear", g_dir);
  ck_assert_int_eq(run_tool(out, sizeof out, args), 0);
  ck_assert_msg(strstr(out, "removed 3 kernel files") != NULL, "%s", out);
  ck_assert_int_eq(count_files(g_dir, ".cubin"), 0);
  snprintf(args, sizeof args, "--dir '%s' list", g_dir);
  ck_assert_int_eq(run_tool(out, sizeof out, args), 0);
  ck_assert(strstr(out, "total: 0 kernels") != NULL);
  /* The store still works after a clear. */
  sfa_store *st = open_store(g_dir);
  char m[256];
  size_t ml = material(m, sizeof m, "after", 0);
  put_ok(st, m, ml, "xyz", 3);
  expect_hit(st, m, ml, "xyz", 3);
  sfa_store_close(st);
}
END_TEST

/* ---------------------------------------------------------------- hardening */

/* "timeout 30 TOOL args": a tool that blocks fails instead of hanging. */
static int run_tool_bounded(char *out, size_t n, const char *args) {
  return run_tool_after("timeout 30 ", out, n, args);
}

static int is_regular(const char *path) {
  struct stat sb;
  return lstat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

static int is_symlink(const char *path) {
  struct stat sb;
  return lstat(path, &sb) == 0 && S_ISLNK(sb.st_mode);
}

static void set_old(const char *path, int days) {
  struct timespec ts[2];
  ts[0].tv_sec = ts[1].tv_sec = time(NULL) - (time_t)days * 86400;
  ts[0].tv_nsec = ts[1].tv_nsec = 0;
  ck_assert_int_eq(utimensat(AT_FDCWD, path, ts, AT_SYMLINK_NOFOLLOW), 0);
}

/* A valid cache file for material m written outside the cache, at path. */
static void valid_file_at(const char *path, const char *m, size_t ml) {
  char tmp[1024], src[1100];
  snprintf(tmp, sizeof tmp, "%s/scratch-store", g_dir);
  sfa_store *st = open_store(tmp);
  put_ok(st, m, ml, "payload!", 8);
  sfa_store_close(st);
  file_path(tmp, m, ml, src, sizeof src);
  size_t fl;
  unsigned char *f = read_file(src, &fl);
  write_file(path, f, fl);
  free(f);
  tu_rm_rf(tmp);
}

/* kernels/ab is a symbolic link to a directory outside the cache that holds a
** bad file with a cache file's name: verify --fix, prune and clear never
** delete it, and say that the link is not followed. */
START_TEST(verify_fix_does_not_follow_a_symlinked_subdir) {
  char cache[1024], outside[1024], victim[1100], link[1100], out[8192], args[1200];
  snprintf(cache, sizeof cache, "%s/cache", g_dir);
  snprintf(outside, sizeof outside, "%s/outside", g_dir);
  snprintf(victim, sizeof victim, "%s/ab000000000000000000000000000000.cubin", outside);
  write_file(victim, "not a cache file", 16);
  set_old(victim, 30);
  sfa_store_close(open_store(cache));
  snprintf(link, sizeof link, "%s/kernels/ab", cache);
  ck_assert_int_eq(symlink(outside, link), 0);
  const char *cmds[] = {"verify --fix", "prune --older-than 1 --max-size 0", "clear", "list"};
  for (int i = 0; i < 4; i++) {
    snprintf(args, sizeof args, "--dir '%s' %s", cache, cmds[i]);
    int rc = run_tool_bounded(out, sizeof out, args);
    ck_assert_msg(is_regular(victim), "'%s' deleted %s through the link: %s", cmds[i], victim,
                  out);
    ck_assert_msg(rc == 0, "'%s' exited %d: %s", cmds[i], rc, out);
    ck_assert_msg(strstr(out, "kernels/ab") && strstr(out, "symbolic link"),
                  "'%s' does not say that kernels/ab is skipped: %s", cmds[i], out);
  }
  ck_assert(is_symlink(link));
}
END_TEST

/* kernels itself is a symbolic link to another cache's kernels: clear (and
** the others) delete nothing there. */
START_TEST(clear_does_not_follow_a_symlinked_kernels_dir) {
  char keys[3][SFA_STORE_KEY_HEX], cache[1024], link[1100], target[1100], out[8192], args[1200];
  const double ages[3] = {40, 40, 40};
  populate(keys, ages, 100); /* g_dir is the other cache */
  snprintf(cache, sizeof cache, "%s/second", g_dir);
  ck_assert_int_eq(mkdir(cache, 0700), 0);
  snprintf(link, sizeof link, "%s/kernels", cache);
  snprintf(target, sizeof target, "%s/kernels", g_dir);
  ck_assert_int_eq(symlink(target, link), 0);
  const char *cmds[] = {"clear", "verify --fix", "prune --older-than 1 --max-size 0", "list"};
  for (int i = 0; i < 4; i++) {
    snprintf(args, sizeof args, "--dir '%s' %s", cache, cmds[i]);
    int rc = run_tool_bounded(out, sizeof out, args);
    ck_assert_msg(count_files(g_dir, ".cubin") == 3, "'%s' deleted files through the link: %s",
                  cmds[i], out);
    ck_assert_msg(rc == 0, "'%s' exited %d: %s", cmds[i], rc, out);
    ck_assert_msg(strstr(out, "symbolic link") != NULL, "'%s': %s", cmds[i], out);
    ck_assert_msg(strstr(out, "total: 0 kernels") || strstr(out, "removed 0") ||
                      strstr(out, "checked 0 files"), "'%s' listed files through the link: %s",
                  cmds[i], out);
  }
  ck_assert(is_symlink(link));
}
END_TEST

/* A symbolic link with a cache file's name is neither read, nor listed as a
** kernel, nor deleted (nor its target). */
START_TEST(a_symlinked_entry_is_never_read_or_deleted) {
  char m[256], key[SFA_STORE_KEY_HEX], target[1024], link[1100], out[8192], args[1200];
  size_t ml = material(m, sizeof m, "linked", 0);
  sfa_store_key(m, ml, key);
  snprintf(target, sizeof target, "%s/elsewhere/file.cubin", g_dir);
  valid_file_at(target, m, ml);
  set_old(target, 30);
  sfa_store *st = open_store(g_dir);
  file_path(g_dir, m, ml, link, sizeof link);
  write_file(link, "x", 1); /* makes kernels/<xx> */
  ck_assert_int_eq(unlink(link), 0);
  ck_assert_int_eq(symlink(target, link), 0);
  set_old(link, 30);
  expect_miss(st, m, ml, "symbolic link");
  sfa_store_close(st);
  const char *cmds[] = {"verify --fix", "prune --older-than 1", "clear"};
  for (int i = 0; i < 3; i++) {
    snprintf(args, sizeof args, "--dir '%s' %s", g_dir, cmds[i]);
    ck_assert_int_eq(run_tool_bounded(out, sizeof out, args), 0);
    ck_assert_msg(is_symlink(link) && is_regular(target), "'%s' removed the link or its target: %s",
                  cmds[i], out);
    ck_assert_msg(strstr(out, key) && strstr(out, "symbolic link"), "'%s': %s", cmds[i], out);
  }
}
END_TEST

/* Files whose names are not the store's own (<key>.cubin, <key>.cubin.tmp.XXXXXX)
** are neither listed nor deleted. */
START_TEST(only_the_stores_own_file_names_are_deleted) {
  char keys[3][SFA_STORE_KEY_HEX], out[8192], args[1200], path[1024];
  const double ages[3] = {40, 40, 40};
  populate(keys, ages, 100);
  const char *foreign[] = {"notes.cubin", "ABCDEF00000000000000000000000000.cubin",
                           "0123.cubin", "my.cubin.tmp.backup",
                           "00000000000000000000000000000000.cubin.tmp.toolong1"};
  for (int i = 0; i < 5; i++) {
    snprintf(path, sizeof path, "%s/kernels/%.2s/%s", g_dir, keys[0], foreign[i]);
    write_file(path, "user data", 9);
    set_old(path, 30);
  }
  snprintf(path, sizeof path, "%s/kernels/%.2s/%s.cubin.tmp.Ab12Cd", g_dir, keys[0], keys[0]);
  write_file(path, "partial", 7);
  set_old(path, 30);
  snprintf(args, sizeof args, "--dir '%s' list", g_dir);
  ck_assert_int_eq(run_tool_bounded(out, sizeof out, args), 0);
  ck_assert_msg(strstr(out, "total: 3 kernels") != NULL, "%s", out);
  snprintf(args, sizeof args, "--dir '%s' verify --fix", g_dir);
  ck_assert_int_eq(run_tool_bounded(out, sizeof out, args), 0);
  ck_assert_msg(strstr(out, "checked 3 files: 1 bad, 1 removed") != NULL, "%s", out);
  snprintf(args, sizeof args, "--dir '%s' clear", g_dir);
  ck_assert_int_eq(run_tool_bounded(out, sizeof out, args), 0);
  ck_assert_msg(strstr(out, "removed 2 kernel files and 1 stale temporary file") != NULL, "%s",
                out);
  for (int i = 0; i < 5; i++) {
    snprintf(path, sizeof path, "%s/kernels/%.2s/%s", g_dir, keys[0], foreign[i]);
    ck_assert_msg(is_regular(path), "%s was deleted", foreign[i]);
  }
  ck_assert_int_eq(count_files(g_dir, ".tmp.Ab12Cd"), 0);
}
END_TEST

/* A FIFO with a cache file's name: gets and the tool never block on it; it is
** reported, not deleted. */
START_TEST(a_fifo_entry_never_blocks) {
  char m[256], key[SFA_STORE_KEY_HEX], path[1024], out[8192], args[1200];
  size_t ml = material(m, sizeof m, "fifo", 0);
  sfa_store_key(m, ml, key);
  sfa_store *st = open_store(g_dir);
  file_path(g_dir, m, ml, path, sizeof path);
  write_file(path, "x", 1);
  ck_assert_int_eq(unlink(path), 0);
  ck_assert_int_eq(mkfifo(path, 0600), 0);
  expect_miss(st, m, ml, "FIFO");
  sfa_store_close(st);
  const char *cmds[] = {"list", "verify --fix", "clear"};
  for (int i = 0; i < 3; i++) {
    snprintf(args, sizeof args, "--dir '%s' %s", g_dir, cmds[i]);
    ck_assert_msg(run_tool_bounded(out, sizeof out, args) == 0, "'%s': %s", cmds[i], out);
    ck_assert_msg(strstr(out, key) && strstr(out, "FIFO"), "'%s': %s", cmds[i], out);
    struct stat sb;
    ck_assert_int_eq(lstat(path, &sb), 0);
    ck_assert(S_ISFIFO(sb.st_mode));
  }
}
END_TEST

/* A 15 GB (sparse) entry whose header is consistent is refused by its size
** before anything is allocated or read. */
START_TEST(a_huge_entry_is_refused_unread) {
  char m[256], path[1024];
  size_t ml = material(m, sizeof m, "huge", 0);
  const uint64_t total = 15ull << 30, plen = total - SFA_STORE_HEADER_BYTES - ml;
  unsigned char hdr[SFA_STORE_HEADER_BYTES];
  memcpy(hdr, "SFACUBIN\x01\0\0\0", 12);
  for (int i = 0; i < 8; i++) {
    hdr[12 + i] = (unsigned char)((uint64_t)ml >> (8 * i));
    hdr[20 + i] = (unsigned char)(plen >> (8 * i));
    hdr[28 + i] = 0;
  }
  XXH3_state_t s;
  XXH3_64bits_reset(&s);
  XXH3_64bits_update(&s, hdr, 36);
  XXH3_64bits_update(&s, m, ml);
  uint64_t hs = XXH3_64bits_digest(&s);
  for (int i = 0; i < 8; i++) hdr[36 + i] = (unsigned char)(hs >> (8 * i));
  sfa_store *st = open_store(g_dir);
  file_path(g_dir, m, ml, path, sizeof path);
  write_file(path, hdr, sizeof hdr);
  FILE *f = fopen(path, "ab");
  ck_assert_int_eq(fwrite(m, 1, ml, f), ml);
  fclose(f);
  ck_assert_int_eq(truncate(path, (off_t)total), 0);
  tu_limit_memory();
  double t0 = tu_now_ms();
  expect_miss(st, m, ml, "more than");
  ck_assert_double_lt(tu_now_ms() - t0, 5000);
  sfa_store_close(st);
}
END_TEST

static int mode_of(const char *path) {
  struct stat sb;
  ck_assert_msg(stat(path, &sb) == 0, "%s: %s", path, strerror(errno));
  return (int)(sb.st_mode & 07777);
}

START_TEST(the_cache_dir_is_created_with_mode_0700) {
  char dir[1024], sub[1100], m[256];
  snprintf(dir, sizeof dir, "%s/new/cache", g_dir);
  sfa_store *st = open_store(dir);
  ck_assert_int_eq(sfa_store_is_memory_only(st), 0);
  size_t ml = material(m, sizeof m, "mode", 0);
  put_ok(st, m, ml, "abc", 3);
  char key[SFA_STORE_KEY_HEX];
  sfa_store_key(m, ml, key);
  snprintf(sub, sizeof sub, "%s/new", g_dir);
  ck_assert_int_eq(mode_of(sub), 0700);
  ck_assert_int_eq(mode_of(dir), 0700);
  snprintf(sub, sizeof sub, "%s/kernels", dir);
  ck_assert_int_eq(mode_of(sub), 0700);
  snprintf(sub, sizeof sub, "%s/kernels/%.2s", dir, key);
  ck_assert_int_eq(mode_of(sub), 0700);
  sfa_store_close(st);
}
END_TEST

/* dir holds a valid entry for m; opening it must refuse it: one warning naming
** it and want, memory only, the entry not read, nothing written there. */
static void expect_refused(const char *dir, const char *m, size_t ml, const char *want) {
  char errpath[1100];
  snprintf(errpath, sizeof errpath, "%s/stderr.txt", g_dir);
  int before = count_files(dir, ".cubin");
  int saved = tu_capture_stderr(errpath);
  sfa_store *st = NULL;
  sfa_status rc = sfa_store_open(&st, dir, 0, NULL, 0);
  if (rc == SFA_OK) {
    char m2[256];
    size_t ml2 = material(m2, sizeof m2, "refused-put", 0);
    put_ok(st, m2, ml2, "xyz", 3);
    put_ok(st, m2, ml2, "xyz", 3);
    expect_hit(st, m2, ml2, "xyz", 3); /* from memory */
  }
  tu_restore_stderr(saved);
  ck_assert_int_eq(rc, SFA_OK);
  size_t n;
  char *text = (char *)read_file(errpath, &n);
  text[n] = '\0';
  ck_assert_msg(sfa_store_is_memory_only(st) == 1, "%s was used: %s", dir, text);
  ck_assert_msg(tu_count_substr(text, "sfa: warning") == 1, "stderr: %s", text);
  ck_assert_msg(strstr(text, dir) && strstr(text, want) && strstr(text, "memory only"),
                "warning lacks '%s': %s", want, text);
  free(text);
  expect_miss(st, m, ml, NULL); /* the planted entry is not read */
  ck_assert_int_eq(count_files(dir, ".cubin"), before);
  sfa_store_close(st);
}

START_TEST(a_cache_dir_writable_by_others_is_refused) {
  char dir[1024], m[256];
  snprintf(dir, sizeof dir, "%s/shared", g_dir);
  size_t ml = material(m, sizeof m, "planted", 0);
  sfa_store *st = open_store(dir);
  put_ok(st, m, ml, "evil", 4);
  sfa_store_close(st);
  ck_assert_int_eq(chmod(dir, 01777), 0); /* like /tmp */
  expect_refused(dir, m, ml, "writable");
  ck_assert_int_eq(chmod(dir, 0770), 0); /* group-writable */
  expect_refused(dir, m, ml, "writable");
  ck_assert_int_eq(chmod(dir, 0755), 0); /* fine */
  st = open_store(dir);
  ck_assert_int_eq(sfa_store_is_memory_only(st), 0);
  expect_hit(st, m, ml, "evil", 4);
  sfa_store_close(st);
  /* kernels/ writable by others is refused as well */
  char kernels[1100];
  snprintf(kernels, sizeof kernels, "%s/kernels", dir);
  ck_assert_int_eq(chmod(kernels, 0777), 0);
  expect_refused(dir, m, ml, "writable");
}
END_TEST

START_TEST(a_cache_dir_of_another_user_is_refused) {
  char dir[1024], m[256];
  snprintf(dir, sizeof dir, "%s/theirs", g_dir);
  size_t ml = material(m, sizeof m, "planted", 1);
  sfa_store *st = open_store(dir);
  put_ok(st, m, ml, "evil", 4);
  sfa_store_close(st);
  if (geteuid() != 0) {
    printf("a_cache_dir_of_another_user_is_refused: not root, cannot give %s to another user; "
           "the ownership check is not exercised\n", dir);
    return;
  }
  ck_assert_int_eq(chown(dir, 12345, 12345), 0);
  expect_refused(dir, m, ml, "owned by uid 12345");
}
END_TEST

/* sfa-cache on an empty or absent cache: no sanitizer report (qsort(NULL, 0)). */
START_TEST(tool_on_an_empty_cache_reports_no_runtime_error) {
  char out[8192], args[1200];
  const char *cmds[] = {"list", "verify", "verify --fix", "prune --older-than 1 --max-size 1",
                        "clear"};
  for (int absent = 0; absent < 2; absent++)
    for (int i = 0; i < 5; i++) {
      snprintf(args, sizeof args, "--dir '%s%s' %s", g_dir, absent ? "/absent" : "", cmds[i]);
      ck_assert_msg(run_tool_bounded(out, sizeof out, args) == 0, "'%s': %s", args, out);
      ck_assert_msg(strstr(out, "runtime error") == NULL && strstr(out, "Sanitizer") == NULL,
                    "'%s': %s", args, out);
    }
}
END_TEST

/* ---------------------------------------------------------------- suite */

static Suite *cache_suite(void) {
  Suite *s = suite_create("cache");
  struct {
    const char *name;
    const TTest *test;
  } tests[] = {
      {"key", key_is_deterministic_and_distinct},
      {"roundtrip", put_then_get_round_trips},
      {"absent", get_absent_is_not_found},
      {"flipped_byte", flipped_payload_byte_is_a_miss},
      {"truncated", truncated_file_is_a_miss},
      {"collision", colliding_material_is_a_miss},
      {"garbage", garbage_file_is_a_miss},
      {"replace", put_replaces_a_bad_file},
      {"no_temp", no_temp_file_remains},
      {"race_same_key", two_processes_put_same_key},
      {"race_many_keys", four_processes_put_different_keys},
      {"threads", threads_share_a_store},
      {"memory_only", unwritable_dir_is_memory_only_with_one_warning},
      {"put_failure", failing_put_switches_to_memory_only},
      {"dir_resolution", dir_resolution_order},
      {"scan", scan_lists_valid_and_invalid_files},
      {"tool_path_usage", tool_path_and_usage},
      {"tool_list", tool_list},
      {"tool_verify", tool_verify},
      {"tool_prune", tool_prune},
      {"tool_clear", tool_clear},
      {"symlinked_subdir", verify_fix_does_not_follow_a_symlinked_subdir},
      {"symlinked_kernels", clear_does_not_follow_a_symlinked_kernels_dir},
      {"symlinked_entry", a_symlinked_entry_is_never_read_or_deleted},
      {"own_names_only", only_the_stores_own_file_names_are_deleted},
      {"fifo_entry", a_fifo_entry_never_blocks},
      {"huge_entry", a_huge_entry_is_refused_unread},
      {"mode_0700", the_cache_dir_is_created_with_mode_0700},
      {"writable_by_others", a_cache_dir_writable_by_others_is_refused},
      {"other_owner", a_cache_dir_of_another_user_is_refused},
      {"tool_empty_cache", tool_on_an_empty_cache_reports_no_runtime_error},
  };
  for (size_t i = 0; i < sizeof tests / sizeof tests[0]; i++) {
    TCase *tc = tcase_create(tests[i].name);
    tcase_add_checked_fixture(tc, setup, teardown);
    tcase_set_timeout(tc, 120); /* a reader that blocks fails the test, never hangs it */
    tcase_add_test(tc, tests[i].test);
    suite_add_tcase(s, tc);
  }
  return s;
}

int main(void) { return tu_run_suite(cache_suite()); }
