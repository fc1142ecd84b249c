/*
** testutil.c -- helpers shared by the Check suites (see testutil.h).
*/
#include "testutil.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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

int tu_run_suite(Suite *s) {
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? 0 : 1;
}
