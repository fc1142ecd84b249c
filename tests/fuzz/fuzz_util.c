/*
** fuzz_util.c -- helpers shared by the fuzz targets (see fuzz_util.h).
*/
#include "fuzz_util.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static char tmpdir[512];

/* Removes path and, for a directory, what it holds (no symlink is followed). */
static void remove_tree(const char *path) {
  struct stat sb;
  if (lstat(path, &sb) != 0) return;
  if (S_ISDIR(sb.st_mode)) {
    DIR *d = opendir(path);
    for (struct dirent *e; d && (e = readdir(d));) {
      char sub[1024];
      if (strcmp(e->d_name, ".") == 0 || strcmp(e->d_name, "..") == 0) continue;
      if (snprintf(sub, sizeof sub, "%s/%s", path, e->d_name) < (int)sizeof sub) remove_tree(sub);
    }
    if (d) closedir(d);
    rmdir(path);
  } else {
    unlink(path);
  }
}

static void remove_tmpdir(void) {
  if (tmpdir[0]) remove_tree(tmpdir);
}

const char *fz_tmpdir(void) {
  if (!tmpdir[0]) {
    const char *base = getenv("SFA_FUZZ_TMPDIR");
    if (!base || !*base) base = getenv("TMPDIR");
    if (!base || !*base) base = "/tmp";
    int len = snprintf(tmpdir, sizeof tmpdir, "%s/sfa-fuzz-XXXXXX", base);
    if (len < 0 || (size_t)len >= sizeof tmpdir || !mkdtemp(tmpdir)) {
      fprintf(stderr, "fuzz: cannot make a temporary directory under %s\n", base);
      abort();
    }
    atexit(remove_tmpdir);
  }
  return tmpdir;
}

void fz_path(char *buf, size_t n, const char *name) {
  int len = snprintf(buf, n, "%s/%s", fz_tmpdir(), name);
  if (len < 0 || (size_t)len >= n) fz_fail("path %s/%s is too long", fz_tmpdir(), name);
}

void fz_write_file(const char *path, const void *data, size_t size) {
  /* A new file, not a truncated one: ext4 flushes a file truncated and
  ** rewritten when it is closed (auto_da_alloc), which costs more than a run. */
  unlink(path);
  FILE *f = fopen(path, "wb");
  if (!f || (size && fwrite(data, 1, size, f) != size) || fclose(f) != 0)
    fz_fail("cannot write %s", path);
}

char *fz_strndup(const uint8_t *data, size_t size) {
  char *s = malloc(size + 1);
  if (!s) fz_fail("out of memory copying %zu bytes of input", size);
  if (size) memcpy(s, data, size);
  s[size] = '\0';
  return s;
}

void fz_fail(const char *fmt, ...) {
  va_list ap;
  va_start(ap, fmt);
  fputs("fuzz invariant broken: ", stderr);
  vfprintf(stderr, fmt, ap);
  fputc('\n', stderr);
  va_end(ap);
  remove_tmpdir(); /* abort skips the atexit handlers */
  abort();
}
