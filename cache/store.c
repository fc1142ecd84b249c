/*
** store.c -- the content-addressed kernel store (see store.h): keys, the
** verified file format, atomic puts by rename, the memory-only fallback and
** directory scans for sfa-cache.
**
** Ownership: payloads returned by sfa_store_get are malloc'd; callers release
** them with sfa_free (which is free). The store owns copies of everything it
** keeps in memory.
**
** Files are read through sfa__file_read (cache/fileio.h: never blocks on a
** FIFO or device, bounded size, no symbolic link followed); scans and removals
** walk from a descriptor of the cache directory with openat/fstatat and
** O_NOFOLLOW, so that a symbolic link under it is never followed.
*/
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "store.h"
#include "cache/fileio.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>
#include <unistd.h>

#define DIR_MAX 900   /* longest cache directory; leaves room for kernels/xx/<key>... */
#define PATH_BUF 1024 /* any path the store builds */

static const char MAGIC[8] = {'S', 'F', 'A', 'C', 'U', 'B', 'I', 'N'};

/* One entry of the in-process list used in memory-only mode. */
typedef struct mem_entry {
  struct mem_entry *next;
  void *material;
  size_t mlen;
  void *payload;
  size_t plen;
} mem_entry;

struct sfa_store {
  char dir[DIR_MAX];     /* resolved directory; "" when none could be resolved */
  int quiet;
  int refused;           /* set by open only: the directory is not safe, never read */
  int memory_only;       /* guarded by lock */
  int warned;            /* guarded by lock */
  char warning[DIR_MAX + PATH_BUF + 512]; /* why memory only, "" if not; guarded by lock */
  pthread_mutex_t lock;
  mem_entry *mem;        /* guarded by lock */
};

/* ---------------------------------------------------------------- helpers */

static void seterr(char *err, size_t n, const char *fmt, ...) {
  va_list ap;
  if (!err || n == 0) return;
  va_start(ap, fmt);
  vsnprintf(err, n, fmt, ap);
  va_end(ap);
}

static void *xmalloc(size_t n) { return malloc(n ? n : 1); }

static void put_u32(unsigned char *p, uint32_t v) {
  for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static void put_u64(unsigned char *p, uint64_t v) {
  for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p) {
  uint32_t v = 0;
  for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

static uint64_t get_u64(const unsigned char *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

/* XXH3-64 of the first 36 header bytes followed by the key material. */
static uint64_t header_sum(const unsigned char *hdr, const void *mat, size_t mlen) {
  XXH3_state_t s;
  XXH3_INITSTATE(&s);
  XXH3_64bits_reset(&s);
  XXH3_64bits_update(&s, hdr, 36);
  XXH3_64bits_update(&s, mat, mlen);
  return XXH3_64bits_digest(&s);
}

static int write_full(int fd, const void *buf, size_t n) {
  size_t done = 0;
  while (done < n) {
    ssize_t w = write(fd, (const char *)buf + done, n - done);
    if (w < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    done += (size_t)w;
  }
  return 0;
}

/* mkdir -p, each directory made with mode 0700; 0 or -1 with errno set. path
** is modified temporarily. */
static int mkdir_p(char *path) {
  struct stat sb;
  for (char *p = path + 1;; p++) {
    if (*p != '/' && *p != '\0') continue;
    char c = *p;
    *p = '\0';
    if (mkdir(path, 0700) != 0) {
      int e = errno;
      if (e != EEXIST || stat(path, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        *p = c;
        errno = (e == EEXIST) ? ENOTDIR : e;
        return -1;
      }
    }
    *p = c;
    if (c == '\0') return 0;
  }
}

static int is_hex(const char *s, size_t n) {
  for (size_t i = 0; i < n; i++)
    if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'a' && s[i] <= 'f'))) return 0;
  return 1;
}

/* The store's own file names: <key>.cubin (NAME_KERNEL) and the temporary
** files of puts, <key>.cubin.tmp.XXXXXX (NAME_TEMP, mkstemp's six letters or
** digits); anything else is NAME_OTHER and never touched. */
enum { NAME_OTHER, NAME_KERNEL, NAME_TEMP };
#define TEMP_INFIX ".cubin.tmp."

static int name_kind(const char *name) {
  size_t n = strlen(name);
  if (n < 32 || !is_hex(name, 32)) return NAME_OTHER;
  if (strcmp(name + 32, ".cubin") == 0) return NAME_KERNEL;
  if (n != 32 + sizeof TEMP_INFIX - 1 + 6 || memcmp(name + 32, TEMP_INFIX, sizeof TEMP_INFIX - 1))
    return NAME_OTHER;
  for (const char *p = name + n - 6; *p; p++)
    if (!((*p >= '0' && *p <= '9') || (*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z')))
      return NAME_OTHER;
  return NAME_TEMP;
}

/* The first "name=...\n" line of the material (at its start or after a
** newline), non-printable bytes replaced by '?'. */
static void material_name(const unsigned char *m, size_t n, char *out, size_t outn) {
  out[0] = '\0';
  for (size_t i = 0; i + 5 <= n; i++) {
    if ((i == 0 || m[i - 1] == '\n') && memcmp(m + i, "name=", 5) == 0) {
      size_t j = i + 5, k = 0;
      while (j < n && m[j] != '\n' && k + 1 < outn) {
        out[k++] = (m[j] >= 0x20 && m[j] < 0x7f) ? (char)m[j] : '?';
        j++;
      }
      out[k] = '\0';
      return;
    }
  }
}

/* ---------------------------------------------------------------- keys and paths */

void sfa_store_key(const void *material, size_t len, char key[SFA_STORE_KEY_HEX]) {
  static const char hex[] = "0123456789abcdef";
  XXH128_canonical_t c;
  XXH128_canonicalFromHash(&c, XXH3_128bits(material, len));
  for (int i = 0; i < 16; i++) {
    key[2 * i] = hex[c.digest[i] >> 4];
    key[2 * i + 1] = hex[c.digest[i] & 15];
  }
  key[32] = '\0';
}

/* "kernels/ab/<key>.cubin", the path relative to the store directory. */
static void rel_path(const char *key, char *out, size_t n) {
  snprintf(out, n, "kernels/%.2s/%s.cubin", key, key);
}

sfa_status sfa_store_resolve_dir(const char *dir, char *out, size_t n, char *err, size_t errlen) {
  const char *e;
  int len;
  if (!out || n == 0) {
    seterr(err, errlen, "sfa_store_resolve_dir: out is NULL or empty");
    return SFA_ERR_INVALID_ARGUMENT;
  }
  out[0] = '\0';
  if (dir && *dir)
    len = snprintf(out, n, "%s", dir);
  else if ((e = getenv("SFA_CACHE_DIR")) && *e)
    len = snprintf(out, n, "%s", e);
  else if ((e = getenv("XDG_CACHE_HOME")) && *e)
    len = snprintf(out, n, "%s/sfa", e);
  else if ((e = getenv("HOME")) && *e)
    len = snprintf(out, n, "%s/.cache/sfa", e);
  else {
    seterr(err, errlen, "no cache directory: set SFA_CACHE_DIR, XDG_CACHE_HOME or HOME");
    return SFA_ERR_NOT_FOUND;
  }
  if (len < 0 || (size_t)len >= n) {
    out[0] = '\0';
    seterr(err, errlen, "cache directory path too long (%d bytes, at most %zu)", len, n - 1);
    return SFA_ERR_INVALID_ARGUMENT;
  }
  while (len > 1 && out[len - 1] == '/') out[--len] = '\0';
  return SFA_OK;
}

/* ---------------------------------------------------------------- memory-only mode */

/* Switch to memory only; warn once. how: DEGRADE_UNWRITABLE (reason is why the
** directory cannot be written), DEGRADE_REFUSED (reason is why it is not safe),
** DEGRADE_NO_DIR (reason says why there is none). */
enum { DEGRADE_UNWRITABLE, DEGRADE_REFUSED, DEGRADE_NO_DIR };

static void degrade(sfa_store *st, int how, const char *reason) {
  pthread_mutex_lock(&st->lock);
  st->memory_only = 1;
  if (!st->warned) {
    st->warned = 1;
    if (how == DEGRADE_NO_DIR || !st->dir[0])
      snprintf(st->warning, sizeof st->warning, "%s; kernels are cached in memory only", reason);
    else if (how == DEGRADE_REFUSED)
      snprintf(st->warning, sizeof st->warning,
               "cache directory %s is not used: %s; kernels are cached in memory only", st->dir,
               reason);
    else
      snprintf(st->warning, sizeof st->warning,
               "cache directory %s is not writable (%s); kernels are cached in memory only",
               st->dir, reason);
    if (!st->quiet) fprintf(stderr, "sfa: warning: %s\n", st->warning);
  }
  pthread_mutex_unlock(&st->lock);
}

static mem_entry *mem_find(sfa_store *st, const void *material, size_t mlen) {
  for (mem_entry *e = st->mem; e; e = e->next)
    if (e->mlen == mlen && (mlen == 0 || memcmp(e->material, material, mlen) == 0)) return e;
  return NULL;
}

static sfa_status mem_put(sfa_store *st, const void *material, size_t mlen, const void *payload,
                          size_t plen, char *err, size_t errlen) {
  void *p = xmalloc(plen);
  if (!p) goto oom;
  if (plen) memcpy(p, payload, plen);
  pthread_mutex_lock(&st->lock);
  mem_entry *e = mem_find(st, material, mlen);
  if (e) {
    free(e->payload);
    e->payload = p;
    e->plen = plen;
    pthread_mutex_unlock(&st->lock);
    return SFA_OK;
  }
  pthread_mutex_unlock(&st->lock);
  e = calloc(1, sizeof *e);
  void *m = xmalloc(mlen);
  if (!e || !m) {
    free(e);
    free(m);
    free(p);
    goto oom;
  }
  if (mlen) memcpy(m, material, mlen);
  e->material = m;
  e->mlen = mlen;
  e->payload = p;
  e->plen = plen;
  pthread_mutex_lock(&st->lock);
  mem_entry *old = mem_find(st, material, mlen); /* another thread may have added it */
  if (old) {
    free(old->payload);
    old->payload = p;
    old->plen = plen;
    free(m);
    free(e);
  } else {
    e->next = st->mem;
    st->mem = e;
  }
  pthread_mutex_unlock(&st->lock);
  return SFA_OK;
oom:
  seterr(err, errlen, "out of memory (%zu-byte cache entry)", plen);
  return SFA_ERR_OUT_OF_MEMORY;
}

/* 1 and a copy of the payload on a hit, 0 on a miss, -1 out of memory. */
static int mem_get(sfa_store *st, const void *material, size_t mlen, void **payload, size_t *plen) {
  int r = 0;
  pthread_mutex_lock(&st->lock);
  mem_entry *e = mem_find(st, material, mlen);
  if (e) {
    void *p = xmalloc(e->plen);
    if (!p) {
      r = -1;
    } else {
      if (e->plen) memcpy(p, e->payload, e->plen);
      *payload = p;
      *plen = e->plen;
      r = 1;
    }
  }
  pthread_mutex_unlock(&st->lock);
  return r;
}

/* ---------------------------------------------------------------- open / close */

/* 0 if the directory name (relative to dirfd) may hold cache files: a
** directory (not a symbolic link when nofollow), owned by this user and not
** writable by group or others, as a shared /tmp path would be. Else -1 with
** the reason in why. shown names it in the reason. */
static int check_safe(int dirfd, const char *name, const char *shown, int nofollow, char *why,
                      size_t n) {
  struct stat sb;
  if (fstatat(dirfd, name, &sb, nofollow ? AT_SYMLINK_NOFOLLOW : 0) != 0) {
    seterr(why, n, "cannot stat %s: %s", shown, strerror(errno));
    return -1;
  }
  if (S_ISLNK(sb.st_mode)) {
    seterr(why, n, "%s is a symbolic link, which is not followed", shown);
    return -1;
  }
  if (!S_ISDIR(sb.st_mode)) {
    seterr(why, n, "%s is not a directory", shown);
    return -1;
  }
  if (sb.st_uid != geteuid()) {
    seterr(why, n, "%s is owned by uid %u, not by this user (uid %u)", shown,
           (unsigned)sb.st_uid, (unsigned)geteuid());
    return -1;
  }
  if (sb.st_mode & (S_IWGRP | S_IWOTH)) {
    seterr(why, n, "%s is writable by group or others (mode %04o)", shown,
           (unsigned)(sb.st_mode & 07777));
    return -1;
  }
  return 0;
}

sfa_status sfa_store_open(sfa_store **out, const char *dir, int quiet, char *err, size_t errlen) {
  char why[PATH_BUF + 128], path[PATH_BUF];
  struct stat sb;
  if (!out) {
    seterr(err, errlen, "sfa_store_open: st is NULL");
    return SFA_ERR_INVALID_ARGUMENT;
  }
  *out = NULL;
  sfa_store *st = calloc(1, sizeof *st);
  if (!st) {
    seterr(err, errlen, "out of memory (cache store)");
    return SFA_ERR_OUT_OF_MEMORY;
  }
  if (pthread_mutex_init(&st->lock, NULL) != 0) {
    free(st);
    seterr(err, errlen, "cannot initialise the cache store mutex");
    return SFA_ERR_INTERNAL;
  }
  st->quiet = quiet;
  *out = st;
  if (sfa_store_resolve_dir(dir, st->dir, sizeof st->dir, why, sizeof why) != SFA_OK) {
    st->dir[0] = '\0';
    degrade(st, DEGRADE_NO_DIR, why);
    return SFA_OK;
  }
  /* Create kernels/ (mode 0700), then check what exists: a directory that is
  ** not safe is refused even when it could not be written, since gets would
  ** still read it. */
  snprintf(path, sizeof path, "%s/kernels", st->dir);
  int made = mkdir_p(path), made_errno = errno;
  if (stat(st->dir, &sb) == 0) {
    if (check_safe(AT_FDCWD, st->dir, "it", 0, why, sizeof why) != 0 ||
        (fstatat(AT_FDCWD, path, &sb, AT_SYMLINK_NOFOLLOW) == 0 &&
         check_safe(AT_FDCWD, path, "its kernels/", 1, why, sizeof why) != 0)) {
      st->refused = 1;
      degrade(st, DEGRADE_REFUSED, why);
      return SFA_OK;
    }
  }
  if (made != 0) {
    seterr(why, sizeof why, "cannot create %s: %s", path, strerror(made_errno));
    degrade(st, DEGRADE_UNWRITABLE, why);
    return SFA_OK;
  }
  /* Probe: a temporary file in kernels/. */
  snprintf(path, sizeof path, "%s/kernels/.probe.XXXXXX", st->dir);
  int fd = mkstemp(path);
  if (fd < 0) {
    seterr(why, sizeof why, "cannot create a file in %s/kernels: %s", st->dir, strerror(errno));
    degrade(st, DEGRADE_UNWRITABLE, why);
    return SFA_OK;
  }
  close(fd);
  unlink(path);
  return SFA_OK;
}

void sfa_store_close(sfa_store *st) {
  if (!st) return;
  mem_entry *e = st->mem;
  while (e) {
    mem_entry *next = e->next;
    free(e->material);
    free(e->payload);
    free(e);
    e = next;
  }
  pthread_mutex_destroy(&st->lock);
  free(st);
}

const char *sfa_store_dir(const sfa_store *st) { return st ? st->dir : ""; }

const char *sfa_store_warning(const sfa_store *st) {
  if (!st) return "";
  pthread_mutex_lock((pthread_mutex_t *)&st->lock);
  const char *w = st->warning; /* written once, under the lock, before warned is set */
  pthread_mutex_unlock((pthread_mutex_t *)&st->lock);
  return w;
}

int sfa_store_is_refused(const sfa_store *st) { return st ? st->refused : 0; }

int sfa_store_is_memory_only(const sfa_store *st) {
  if (!st) return 1;
  pthread_mutex_lock((pthread_mutex_t *)&st->lock);
  int m = st->memory_only;
  pthread_mutex_unlock((pthread_mutex_t *)&st->lock);
  return m;
}

/* ---------------------------------------------------------------- reading a file */

/* Verify the cache file held in buf (fsize bytes). want (wantlen bytes) is the
** expected key material, or NULL to accept any. On success returns 0 and
** points *mat_out and *pay_out (where not NULL) into buf. Otherwise -1 with the reason in
** why. Never trusts a length before checking it against the file size. */
static int parse_verified(const unsigned char *buf, size_t fsize, const void *want,
                          size_t wantlen, const unsigned char **mat_out, size_t *mlen_out,
                          const unsigned char **pay_out, size_t *plen_out, char *why,
                          size_t whylen) {
  const unsigned char *hdr = buf;
  size_t n = fsize < SFA_STORE_HEADER_BYTES ? fsize : SFA_STORE_HEADER_BYTES;
  if (memcmp(hdr, MAGIC, n < sizeof MAGIC ? n : sizeof MAGIC) != 0) {
    seterr(why, whylen, "not a cache file (bad magic)");
    return -1;
  }
  if (n < SFA_STORE_HEADER_BYTES) {
    seterr(why, whylen, "truncated (header %zu of %d bytes)", n, SFA_STORE_HEADER_BYTES);
    return -1;
  }
  uint32_t version = get_u32(hdr + 8);
  uint64_t mlen = get_u64(hdr + 12), plen = get_u64(hdr + 20);
  uint64_t psum = get_u64(hdr + 28), hsum = get_u64(hdr + 36);
  if (version != SFA_STORE_FORMAT) {
    seterr(why, whylen, "unsupported format version %u (expected %u)", version, SFA_STORE_FORMAT);
    return -1;
  }
  uint64_t after_hdr = (uint64_t)fsize - SFA_STORE_HEADER_BYTES;
  if (mlen > after_hdr) {
    seterr(why, whylen, "truncated (key material %llu of %llu bytes)",
           (unsigned long long)after_hdr, (unsigned long long)mlen);
    return -1;
  }
  if (want && mlen != wantlen) {
    seterr(why, whylen,
           "key material differs (%llu bytes, expected %zu): hash collision or foreign file",
           (unsigned long long)mlen, wantlen);
    return -1;
  }
  const unsigned char *mat = buf + SFA_STORE_HEADER_BYTES;
  if (header_sum(hdr, mat, (size_t)mlen) != hsum) {
    seterr(why, whylen, "header checksum mismatch");
    return -1;
  }
  if (want && mlen && memcmp(mat, want, (size_t)mlen) != 0) {
    seterr(why, whylen, "key material differs: hash collision or foreign file");
    return -1;
  }
  uint64_t remain = after_hdr - mlen;
  if (remain < plen) {
    seterr(why, whylen, "truncated (payload %llu of %llu bytes)", (unsigned long long)remain,
           (unsigned long long)plen);
    return -1;
  }
  if (remain > plen) {
    seterr(why, whylen, "%llu unexpected bytes after the payload",
           (unsigned long long)(remain - plen));
    return -1;
  }
  const unsigned char *pay = mat + mlen;
  if (XXH3_64bits(pay, (size_t)plen) != psum) {
    seterr(why, whylen, "payload checksum mismatch");
    return -1;
  }
  if (mat_out) *mat_out = mat, *mlen_out = (size_t)mlen;
  if (pay_out) *pay_out = pay, *plen_out = (size_t)plen;
  return 0;
}

sfa_status sfa_store_get(sfa_store *st, const void *material, size_t mlen, void **payload,
                         size_t *plen, char *err, size_t errlen) {
  char key[SFA_STORE_KEY_HEX], rel[80], path[PATH_BUF], why[256];
  if (!st || !payload || !plen || (!material && mlen)) {
    seterr(err, errlen, "sfa_store_get: NULL argument");
    return SFA_ERR_INVALID_ARGUMENT;
  }
  *payload = NULL;
  *plen = 0;
  int m = mem_get(st, material, mlen, payload, plen);
  if (m < 0) {
    seterr(err, errlen, "out of memory");
    return SFA_ERR_OUT_OF_MEMORY;
  }
  if (m > 0) return SFA_OK;
  sfa_store_key(material, mlen, key);
  rel_path(key, rel, sizeof rel);
  if (!st->dir[0]) {
    seterr(err, errlen, "%s: not cached (no cache directory)", rel);
    return SFA_ERR_NOT_FOUND;
  }
  if (st->refused) {
    seterr(err, errlen, "%s: not cached (the cache directory is not used)", rel);
    return SFA_ERR_NOT_FOUND;
  }
  snprintf(path, sizeof path, "%s/%s", st->dir, rel);
  char *buf = NULL;
  size_t blen = 0;
  sfa_status rc = sfa__file_read(AT_FDCWD, path, rel, SFA__READ_NOFOLLOW, SFA__FILE_MAX_BINARY,
                                 &buf, &blen, err, errlen);
  if (rc == SFA_ERR_NOT_FOUND) {
    seterr(err, errlen, "%s: not cached", rel);
    return rc;
  }
  if (rc != SFA_OK) return rc == SFA_ERR_OUT_OF_MEMORY ? rc : SFA_ERR_NOT_FOUND;
  const unsigned char *pay = NULL;
  size_t n = 0;
  if (parse_verified((const unsigned char *)buf, blen, material, mlen, NULL, NULL, &pay, &n, why,
                     sizeof why) != 0) {
    free(buf);
    seterr(err, errlen, "%s: %s", rel, why);
    return SFA_ERR_NOT_FOUND;
  }
  void *p = xmalloc(n);
  if (!p) {
    free(buf);
    seterr(err, errlen, "out of memory (%zu-byte cache entry)", n);
    return SFA_ERR_OUT_OF_MEMORY;
  }
  if (n) memcpy(p, pay, n);
  free(buf);
  *payload = p;
  *plen = n;
  return SFA_OK;
}

/* ---------------------------------------------------------------- writing a file */

/* Write the file through a temporary file and rename; 0, or -1 with the
** reason in why (the temporary file is removed). */
static int disk_put(sfa_store *st, const char *key, const void *material, size_t mlen,
                    const void *payload, size_t plen, char *why, size_t whylen) {
  char path[PATH_BUF], tmp[PATH_BUF];
  unsigned char hdr[SFA_STORE_HEADER_BYTES];
  snprintf(path, sizeof path, "%s/kernels/%.2s", st->dir, key);
  if (mkdir_p(path) != 0) {
    seterr(why, whylen, "cannot create %s: %s", path, strerror(errno));
    return -1;
  }
  snprintf(tmp, sizeof tmp, "%s/kernels/%.2s/%s.cubin.tmp.XXXXXX", st->dir, key, key);
  snprintf(path, sizeof path, "%s/kernels/%.2s/%s.cubin", st->dir, key, key);
  int fd = mkstemp(tmp);
  if (fd < 0) {
    seterr(why, whylen, "cannot create a temporary file in %s/kernels/%.2s: %s", st->dir, key,
           strerror(errno));
    return -1;
  }
  (void)fcntl(fd, F_SETFD, FD_CLOEXEC);
  (void)fchmod(fd, 0644); /* mkstemp makes 0600; cached kernels are not secret */
  memcpy(hdr, MAGIC, 8);
  put_u32(hdr + 8, SFA_STORE_FORMAT);
  put_u64(hdr + 12, (uint64_t)mlen);
  put_u64(hdr + 20, (uint64_t)plen);
  put_u64(hdr + 28, XXH3_64bits(payload, plen));
  put_u64(hdr + 36, header_sum(hdr, material, mlen));
  if (write_full(fd, hdr, sizeof hdr) != 0 || write_full(fd, material, mlen) != 0 ||
      write_full(fd, payload, plen) != 0) {
    seterr(why, whylen, "writing %s: %s", tmp, strerror(errno));
    close(fd);
    unlink(tmp);
    return -1;
  }
  if (close(fd) != 0) {
    seterr(why, whylen, "writing %s: %s", tmp, strerror(errno));
    unlink(tmp);
    return -1;
  }
  if (rename(tmp, path) != 0) {
    seterr(why, whylen, "renaming into %s: %s", path, strerror(errno));
    unlink(tmp);
    return -1;
  }
  return 0;
}

sfa_status sfa_store_put(sfa_store *st, const void *material, size_t mlen, const void *payload,
                         size_t plen, char *err, size_t errlen) {
  char key[SFA_STORE_KEY_HEX], why[PATH_BUF + 128];
  if (!st || (!material && mlen) || (!payload && plen)) {
    seterr(err, errlen, "sfa_store_put: NULL argument");
    return SFA_ERR_INVALID_ARGUMENT;
  }
  if (!material) material = "";
  if (!payload) payload = "";
  /* An entry larger than a reader accepts (SFA__FILE_MAX_BINARY) would never be
  ** read back: it stays in memory, without switching the store. */
  int fits = mlen <= SFA__FILE_MAX_BINARY && plen <= SFA__FILE_MAX_BINARY - mlen &&
             SFA__FILE_MAX_BINARY - mlen - plen >= SFA_STORE_HEADER_BYTES;
  if (fits && !sfa_store_is_memory_only(st)) {
    sfa_store_key(material, mlen, key);
    if (disk_put(st, key, material, mlen, payload, plen, why, sizeof why) == 0) return SFA_OK;
    degrade(st, DEGRADE_UNWRITABLE, why);
  }
  return mem_put(st, material, mlen, payload, plen, err, errlen);
}

/* ---------------------------------------------------------------- scans */

/* Fill e for the file name in the directory sfd (kernels/<sub>), of kind
** NAME_KERNEL or NAME_TEMP, whose lstat is sb; verifies a kernel file. */
static void scan_file(sfa_store *st, int sfd, const char *sub, const char *name, int kind,
                      const struct stat *sb, sfa_store_entry *e) {
  memset(e, 0, sizeof *e);
  snprintf(e->rel, sizeof e->rel, "kernels/%.2s/%.64s", sub, name); /* names of <= 49 bytes */
  snprintf(e->path, sizeof e->path, "%s/%s", st->dir, e->rel);
  snprintf(e->key, sizeof e->key, "%.32s", name);
  e->size = (size_t)sb->st_size;
  e->mtime = (long)sb->st_mtime;
  if (!S_ISREG(sb->st_mode)) {
    e->skipped = 1;
    if (S_ISLNK(sb->st_mode))
      snprintf(e->reason, sizeof e->reason, "is a symbolic link, which is not followed");
    else
      snprintf(e->reason, sizeof e->reason, "is %s, not a regular file",
               sfa__file_kind((unsigned)sb->st_mode));
    return;
  }
  if (kind == NAME_TEMP) {
    snprintf(e->reason, sizeof e->reason, "temporary file");
    return;
  }
  char *buf = NULL, msg[PATH_BUF + 256];
  size_t blen = 0;
  if (sfa__file_read(sfd, name, e->rel, SFA__READ_NOFOLLOW, SFA__FILE_MAX_BINARY, &buf, &blen,
                     msg, sizeof msg) != SFA_OK) {
    size_t rl = strlen(e->rel); /* the reason without the "<rel>: " the reader put first */
    const char *r = strncmp(msg, e->rel, rl) == 0 && msg[rl] == ':' ? msg + rl + 2 : msg;
    snprintf(e->reason, sizeof e->reason, "%.255s", r);
    return;
  }
  e->size = blen;
  const unsigned char *mat = NULL;
  size_t mlen = 0;
  if (parse_verified((const unsigned char *)buf, blen, NULL, 0, &mat, &mlen, NULL, NULL,
                     e->reason, sizeof e->reason) != 0) {
    free(buf);
    return;
  }
  char key[SFA_STORE_KEY_HEX];
  sfa_store_key(mat, mlen, key);
  material_name(mat, mlen, e->name, sizeof e->name);
  free(buf);
  if (strcmp(key, e->key) != 0) {
    snprintf(e->reason, sizeof e->reason, "file name does not match its key material (%s)", key);
    return;
  }
  e->valid = 1;
}

/* A "not followed" entry for a symbolic link at rel (a directory of the walk). */
static int visit_link(sfa_store *st, const char *rel, const struct stat *sb,
                      sfa_store_entry *e, sfa_store_visit visit, void *user) {
  memset(e, 0, sizeof *e);
  snprintf(e->rel, sizeof e->rel, "%s", rel);
  snprintf(e->path, sizeof e->path, "%s/%s", st->dir, rel);
  e->size = (size_t)sb->st_size;
  e->mtime = (long)sb->st_mtime;
  e->skipped = 1;
  snprintf(e->reason, sizeof e->reason, "is a symbolic link, which is not followed");
  return visit(e, user) != 0;
}

/* Visit kernels/<xx>/ files: the kernel files, or the temporary ones. Walks
** from a descriptor of the cache directory; kernels/ and kernels/<xx> are
** opened with O_NOFOLLOW, so no symbolic link is ever followed: one in their
** place, or one (or another non-regular file) with a store file's name, is
** visited as skipped on the kernel walk and passed over on the temp walk. */
static sfa_status walk(sfa_store *st, int temp, sfa_store_visit visit, void *user, char *err,
                       size_t errlen) {
  sfa_status rc = SFA_OK;
  struct stat sb;
  if (!st || !visit) {
    seterr(err, errlen, "sfa_store_scan: NULL argument");
    return SFA_ERR_INVALID_ARGUMENT;
  }
  if (!st->dir[0]) return SFA_OK;
  sfa_store_entry *e = malloc(sizeof *e);
  if (!e) {
    seterr(err, errlen, "out of memory");
    return SFA_ERR_OUT_OF_MEMORY;
  }
  int dfd = open(st->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (dfd < 0) {
    if (errno != ENOENT && errno != ENOTDIR) {
      seterr(err, errlen, "cannot read %s: %s", st->dir, strerror(errno));
      rc = SFA_ERR_IO;
    }
    free(e);
    return rc;
  }
  int kfd = openat(dfd, "kernels", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  int kerr = errno;
  DIR *d = kfd >= 0 ? fdopendir(kfd) : NULL;
  if (!d) {
    if (kfd >= 0) {
      kerr = errno;
      close(kfd);
    }
    if (fstatat(dfd, "kernels", &sb, AT_SYMLINK_NOFOLLOW) == 0 && S_ISLNK(sb.st_mode)) {
      if (!temp) visit_link(st, "kernels", &sb, e, visit, user);
    } else if (kerr != ENOENT && kerr != ENOTDIR) {
      seterr(err, errlen, "cannot read %s/kernels: %s", st->dir, strerror(kerr));
      rc = SFA_ERR_IO;
    }
    close(dfd);
    free(e);
    return rc;
  }
  int stop = 0;
  struct dirent *de;
  while (!stop && (de = readdir(d)) != NULL) {
    char sub[3], rel[16];
    if (strlen(de->d_name) != 2 || !is_hex(de->d_name, 2)) continue;
    memcpy(sub, de->d_name, 3);
    if (fstatat(kfd, sub, &sb, AT_SYMLINK_NOFOLLOW) != 0) continue; /* vanished */
    snprintf(rel, sizeof rel, "kernels/%s", sub);
    if (S_ISLNK(sb.st_mode)) {
      if (!temp) stop = visit_link(st, rel, &sb, e, visit, user);
      continue;
    }
    if (!S_ISDIR(sb.st_mode)) continue;
    int sfd = openat(kfd, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    DIR *sd = sfd >= 0 ? fdopendir(sfd) : NULL;
    if (!sd) {
      int e2 = errno;
      if (sfd >= 0) close(sfd);
      if (e2 == ENOENT || e2 == ENOTDIR || e2 == ELOOP) continue; /* replaced meanwhile */
      seterr(err, errlen, "cannot read %s/%s: %s", st->dir, rel, strerror(e2));
      rc = SFA_ERR_IO;
      break;
    }
    struct dirent *fe;
    while (!stop && (fe = readdir(sd)) != NULL) {
      int kind = name_kind(fe->d_name);
      if (kind != (temp ? NAME_TEMP : NAME_KERNEL)) continue;
      if (fstatat(sfd, fe->d_name, &sb, AT_SYMLINK_NOFOLLOW) != 0) continue; /* vanished */
      if (temp && !S_ISREG(sb.st_mode)) continue;
      scan_file(st, sfd, sub, fe->d_name, kind, &sb, e);
      stop = visit(e, user) != 0;
    }
    closedir(sd);
  }
  closedir(d);
  close(dfd);
  free(e);
  return rc;
}

sfa_status sfa_store_scan(sfa_store *st, sfa_store_visit visit, void *user, char *err,
                          size_t errlen) {
  return walk(st, 0, visit, user, err, errlen);
}

sfa_status sfa_store_scan_temp(sfa_store *st, sfa_store_visit visit, void *user, char *err,
                               size_t errlen) {
  return walk(st, 1, visit, user, err, errlen);
}

/* ---------------------------------------------------------------- removal */

sfa_status sfa_store_remove(sfa_store *st, const char *rel, char *err, size_t errlen) {
  struct stat sb;
  if (!st || !rel) {
    seterr(err, errlen, "sfa_store_remove: NULL argument");
    return SFA_ERR_INVALID_ARGUMENT;
  }
  /* kernels/<xx>/<name>, name one of the store's own */
  const char *name = rel + 11;
  if (strncmp(rel, "kernels/", 8) != 0 || strlen(rel) < 12 || !is_hex(rel + 8, 2) ||
      rel[10] != '/' || name_kind(name) == NAME_OTHER) {
    seterr(err, errlen, "%s: not a file name of the kernel cache; not removed", rel);
    return SFA_ERR_INVALID_ARGUMENT;
  }
  if (!st->dir[0]) return SFA_OK;
  char sub[3] = {rel[8], rel[9], '\0'};
  sfa_status rc = SFA_OK;
  int dfd = open(st->dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), kfd = -1, sfd = -1;
  if (dfd >= 0) kfd = openat(dfd, "kernels", O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (kfd >= 0) sfd = openat(kfd, sub, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (sfd < 0) {
    if (errno == ELOOP || errno == ENOTDIR)
      seterr(err, errlen, "%s: kernels/ or kernels/%s is not a directory (a symbolic link is "
             "not followed); not removed", rel, sub), rc = SFA_ERR_IO;
    else if (errno != ENOENT)
      seterr(err, errlen, "cannot remove %s: %s", rel, strerror(errno)), rc = SFA_ERR_IO;
  } else if (fstatat(sfd, name, &sb, AT_SYMLINK_NOFOLLOW) != 0) {
    if (errno != ENOENT)
      seterr(err, errlen, "cannot remove %s: %s", rel, strerror(errno)), rc = SFA_ERR_IO;
  } else if (!S_ISREG(sb.st_mode)) {
    seterr(err, errlen, "%s: is %s, not a regular file; not removed", rel,
           sfa__file_kind((unsigned)sb.st_mode));
    rc = SFA_ERR_IO;
  } else if (unlinkat(sfd, name, 0) != 0 && errno != ENOENT) {
    /* unlinkat removes the entry itself: were it swapped for a link since the
    ** fstatat, the link would go, never what it points to */
    seterr(err, errlen, "cannot remove %s: %s", rel, strerror(errno));
    rc = SFA_ERR_IO;
  }
  if (sfd >= 0) close(sfd);
  if (kfd >= 0) close(kfd);
  if (dfd >= 0) close(dfd);
  return rc;
}
