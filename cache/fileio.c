/*
** fileio.c -- the bounded, non-blocking reader of files that others may have
** put in place (see fileio.h): open without blocking, regular files only,
** size checked before anything is allocated, then read whole.
*/
#include "cache/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "gen/gen_internal.h"

const char *sfa__file_kind(unsigned mode) {
  switch (mode & S_IFMT) {
  case S_IFREG: return "a regular file";
  case S_IFDIR: return "a directory";
  case S_IFIFO: return "a FIFO";
  case S_IFCHR: return "a character device";
  case S_IFBLK: return "a block device";
  case S_IFLNK: return "a symbolic link";
  case S_IFSOCK: return "a socket";
  default: return "a special file";
  }
}

/* "15.0 GiB", "64 MiB", "512 bytes". */
static void fmt_bytes(uintmax_t n, char *buf, size_t size) {
  static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
  if (n < 1024) {
    snprintf(buf, size, "%ju bytes", n);
    return;
  }
  double v = (double)n / 1024;
  int u = 0;
  while (v >= 1024 && u < 4) v /= 1024, u++;
  if (v == (double)(uintmax_t)v)
    snprintf(buf, size, "%ju %s", (uintmax_t)v, units[u]);
  else
    snprintf(buf, size, "%.1f %s", v, units[u]);
}

sfa_status sfa__file_read(int dirfd, const char *path, const char *shown, unsigned flags,
                          size_t max, char **data, size_t *len, char *err, size_t errlen) {
  if (data) *data = NULL;
  if (len) *len = 0;
  if (!path || !data || !len)
    return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "sfa__file_read: NULL argument");
  if (!shown) shown = path;
  int oflags = O_RDONLY | O_NONBLOCK | O_CLOEXEC | O_NOCTTY;
  if (flags & SFA__READ_NOFOLLOW) oflags |= O_NOFOLLOW;
  int fd = openat(dirfd, path, oflags);
  if (fd < 0) {
    int e = errno;
    struct stat sb;
    if (e == ENOENT || e == ENOTDIR)
      return sfa__fail(err, errlen, SFA_ERR_NOT_FOUND, "%s: cannot open: %s", shown, strerror(e));
    if ((flags & SFA__READ_NOFOLLOW) && e == ELOOP &&
        fstatat(dirfd, path, &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(sb.st_mode))
      return sfa__fail(err, errlen, SFA_ERR_IO, "%s: is a symbolic link, which is not followed",
                       shown);
    return sfa__fail(err, errlen, SFA_ERR_IO, "%s: cannot open: %s", shown, strerror(e));
  }
  struct stat sb;
  sfa_status st = SFA_OK;
  char *buf = NULL;
  size_t got = 0;
  if (fstat(fd, &sb) != 0) {
    st = sfa__fail(err, errlen, SFA_ERR_IO, "%s: cannot stat: %s", shown, strerror(errno));
  } else if (!S_ISREG(sb.st_mode)) {
    st = sfa__fail(err, errlen, SFA_ERR_IO, "%s: is %s, not a regular file", shown,
                   sfa__file_kind((unsigned)sb.st_mode));
  } else if (sb.st_size < 0 || (uintmax_t)sb.st_size > (uintmax_t)max) {
    char have[32], allowed[32];
    fmt_bytes((uintmax_t)sb.st_size, have, sizeof have);
    fmt_bytes((uintmax_t)max, allowed, sizeof allowed);
    st = sfa__fail(err, errlen, SFA_ERR_CORRUPT, "%s: is %s, more than the %s allowed", shown,
                   have, allowed);
  } else {
    /* Read one byte more than fstat said, to notice a file that grows. */
    size_t want = (size_t)sb.st_size + 1;
    buf = malloc(want + 1);
    if (!buf) {
      st = sfa__fail(err, errlen, SFA_ERR_OUT_OF_MEMORY, "%s: out of memory (%zu bytes)", shown,
                     want);
    } else {
      while (got < want) {
        ssize_t r = read(fd, buf + got, want - got);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
          st = sfa__fail(err, errlen, SFA_ERR_IO, "%s: read error: %s", shown, strerror(errno));
          break;
        }
        if (r == 0) break;
        got += (size_t)r;
      }
      if (st == SFA_OK && got > (size_t)sb.st_size)
        st = sfa__fail(err, errlen, SFA_ERR_IO, "%s: grew while being read", shown);
    }
  }
  close(fd);
  if (st != SFA_OK) {
    free(buf);
    return st;
  }
  buf[got] = '\0';
  *data = buf;
  *len = got;
  return SFA_OK;
}

int sfa__file_next_line(char **pos, char *end, char **line, size_t *len) {
  char *p = *pos;
  if (!p || p >= end) return 0;
  char *nl = memchr(p, '\n', (size_t)(end - p));
  char *stop = nl ? nl : end;
  *line = p;
  *len = (size_t)(stop - p);
  if (nl) *nl = '\0';
  *pos = nl ? nl + 1 : end;
  return 1;
}
