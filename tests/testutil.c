/*
** testutil.c -- helpers shared by the Check suites (see testutil.h).
*/
#include "testutil.h"

#include <dlfcn.h>
#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

const char *tu_mkdtemp(void) {
  static char path[512];
  const char *base = getenv("TMPDIR");
  if (!base || !*base) base = "/tmp";
  snprintf(path, sizeof path, "%s/sfa-test-XXXXXX", base);
  if (!mkdtemp(path)) {
    perror("mkdtemp");
    abort();
  }
  return path;
}

void tu_rm_rf(const char *path) {
  char cmd[1200];
  if (!path || !*path || strcmp(path, "/") == 0) return;
  snprintf(cmd, sizeof cmd, "rm -rf '%s'", path);
  if (system(cmd) != 0) fprintf(stderr, "warning: could not remove %s\n", path);
}

uint64_t tu_rand_u64(uint64_t *s) {
  uint64_t x = *s ? *s : 0x9E3779B97F4A7C15ull;
  x ^= x >> 12;
  x ^= x << 25;
  x ^= x >> 27;
  *s = x;
  return x * 0x2545F4914F6CDD1Dull;
}

double tu_rand_uniform(uint64_t *s) { return (double)(tu_rand_u64(s) >> 11) * (1.0 / 9007199254740992.0); }

double tu_rand_normal(uint64_t *s) {
  double u1 = tu_rand_uniform(s), u2 = tu_rand_uniform(s);
  if (u1 < 1e-300) u1 = 1e-300;
  return sqrt(-2.0 * log(u1)) * cos(6.283185307179586 * u2);
}

double tu_now_ms(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

void tu_limit_memory(void) {
#if !TU_ASAN
  struct rlimit rl = {(rlim_t)3 << 30, (rlim_t)3 << 30};
  ck_assert_int_eq(setrlimit(RLIMIT_AS, &rl), 0);
#endif
}

TCase *tu_untimed_case(Suite *s, const char *name, const TTest *t) {
  TCase *c = tcase_create(name);
  tcase_set_timeout(c, 0);
  tcase_add_test(c, t);
  suite_add_tcase(s, c);
  return c;
}

int tu_run_suite(Suite *s) {
  /* Failure messages may carry an NVRTC log (up to 4000 bytes) after their
  ** own text; Check's default limit (4096) would abort the run instead. */
  check_set_max_msg_size(16384);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? 0 : 1;
}

int tu_capture_stderr(const char *path) {
  fflush(stderr);
  int saved = dup(2);
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0644);
  ck_assert_int_ge(fd, 0);
  dup2(fd, 2);
  close(fd);
  return saved;
}

void tu_restore_stderr(int saved) {
  fflush(stderr);
  dup2(saved, 2);
  close(saved);
}

int tu_count_substr(const char *s, const char *sub) {
  int n = 0;
  for (const char *p = strstr(s, sub); p; p = strstr(p + 1, sub)) n++;
  return n;
}

int tu_driver_loaded(void) {
  void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_NOLOAD);
  if (h) dlclose(h);
  return h != NULL;
}

int tu_driver_present(void) {
  void *h = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (h) dlclose(h);
  return h != NULL;
}

/* ------------------------------------------------------------ paths */

/* The directory of this executable into buf; 0 when /proc/self/exe cannot be
** read. */
static int exe_dir(char *buf, size_t n) {
  ssize_t len = readlink("/proc/self/exe", buf, n - 1);
  if (len <= 0) return 0;
  buf[len] = '\0';
  char *slash = strrchr(buf, '/');
  if (!slash) return 0;
  *slash = '\0';
  return 1;
}

/* Paths handed out so far: each is made once and kept. */
#define MAX_PATHS 32
static struct { int source; char rel[256], path[1400]; } paths[MAX_PATHS];
static int npaths;
static pthread_mutex_t paths_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *tu_path(const char *rel, int source) {
  char dir[1024], probe[1200];
  const char *out = NULL;
  pthread_mutex_lock(&paths_lock);
  for (int i = 0; i < npaths && !out; i++)
    if (paths[i].source == source && strcmp(paths[i].rel, rel) == 0) out = paths[i].path;
  if (!out) {
    if (npaths == MAX_PATHS || strlen(rel) >= sizeof paths[0].rel) {
      fprintf(stderr, "testutil: too many or too long paths (%s)\n", rel);
      abort();
    }
    char *path = paths[npaths].path;
    const size_t n = sizeof paths[0].path;
    const int have = exe_dir(dir, sizeof dir);
    if (!source) {
      snprintf(path, n, "%s/../%s", have ? dir : ".", rel);
    } else {
      if (have) snprintf(probe, sizeof probe, "%s/../../include/sfa.h", dir);
      if (have && access(probe, R_OK) == 0)
        snprintf(path, n, "%s/../../%s", dir, rel);
      else
        snprintf(path, n, "%s/%s", SFA_SOURCE_DIR, rel);
    }
    paths[npaths].source = source;
    snprintf(paths[npaths].rel, sizeof paths[0].rel, "%s", rel);
    out = paths[npaths++].path;
  }
  pthread_mutex_unlock(&paths_lock);
  return out;
}

const char *tu_build_path(const char *rel) { return tu_path(rel, 0); }
const char *tu_source_path(const char *rel) { return tu_path(rel, 1); }
