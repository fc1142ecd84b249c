/*
** store.c -- the content-addressed kernel store (see store.h): keys, the
** verified file format, atomic puts by rename, the memory-only fallback and
** directory scans for sfa-cache.
**
** Ownership: payloads returned by sfa_store_get are malloc'd; callers release
** them with sfa_free (which is free). The store owns copies of everything it
** keeps in memory.
*/
#define XXH_INLINE_ALL
#include <xxhash.h>

#include "store.h"

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
  int memory_only;       /* guarded by lock */
  int warned;            /* guarded by lock */
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

/* Read up to n bytes; returns the count read (short only at end of file), or
** -1 with errno set. */
static ssize_t read_full(int fd, void *buf, size_t n) {
  size_t got = 0;
  while (got < n) {
    ssize_t r = read(fd, (char *)buf + got, n - got);
    if (r < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    if (r == 0) break;
    got += (size_t)r;
  }
  return (ssize_t)got;
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

/* mkdir -p; 0 or -1 with errno set. path is modified temporarily. */
static int mkdir_p(char *path) {
  struct stat sb;
  for (char *p = path + 1;; p++) {
    if (*p != '/' && *p != '\0') continue;
    char c = *p;
    *p = '\0';
    if (mkdir(path, 0755) != 0) {
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

static int ends_with(const char *s, const char *suffix) {
  size_t a = strlen(s), b = strlen(suffix);
  return a >= b && memcmp(s + a - b, suffix, b) == 0;
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

/* Switch to memory only; warn once. */
static void degrade(sfa_store *st, const char *reason) {
  pthread_mutex_lock(&st->lock);
  st->memory_only = 1;
  if (!st->warned) {
    st->warned = 1;
    if (!st->quiet) {
      if (st->dir[0])
        fprintf(stderr,
                "sfa: warning: cache directory %s is not writable (%s); kernels are cached in "
                "memory only\n",
                st->dir, reason);
      else
        fprintf(stderr, "sfa: warning: %s; kernels are cached in memory only\n", reason);
    }
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

sfa_status sfa_store_open(sfa_store **out, const char *dir, int quiet, char *err, size_t errlen) {
  char why[PATH_BUF + 128], path[PATH_BUF];
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
    degrade(st, why);
    return SFA_OK;
  }
  /* Probe: create kernels/ and a temporary file in it. */
  snprintf(path, sizeof path, "%s/kernels", st->dir);
  if (mkdir_p(path) != 0) {
    seterr(why, sizeof why, "cannot create %s: %s", path, strerror(errno));
    degrade(st, why);
    return SFA_OK;
  }
  snprintf(path, sizeof path, "%s/kernels/.probe.XXXXXX", st->dir);
  int fd = mkstemp(path);
  if (fd < 0) {
    seterr(why, sizeof why, "cannot create a file in %s/kernels: %s", st->dir, strerror(errno));
    degrade(st, why);
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

int sfa_store_is_memory_only(const sfa_store *st) {
  if (!st) return 1;
  pthread_mutex_lock((pthread_mutex_t *)&st->lock);
  int m = st->memory_only;
  pthread_mutex_unlock((pthread_mutex_t *)&st->lock);
  return m;
}

/* ---------------------------------------------------------------- reading a file */

/* Read and verify the cache file open on fd. want (wantlen bytes) is the
** expected key material, or NULL to accept any. On success returns SFA_OK and,
** where the out-pointers are not NULL, malloc'd copies of the material and the
** payload. Otherwise SFA_ERR_NOT_FOUND (or SFA_ERR_OUT_OF_MEMORY) with the
** reason in why. Never trusts a length before checking it against the file size. */
static sfa_status read_verified(int fd, const void *want, size_t wantlen, void **mat_out,
                                size_t *mlen_out, void **pay_out, size_t *plen_out, char *why,
                                size_t whylen) {
  unsigned char hdr[SFA_STORE_HEADER_BYTES];
  unsigned char *mat = NULL, *pay = NULL;
  struct stat sb;
  sfa_status rc = SFA_ERR_NOT_FOUND;
  if (fstat(fd, &sb) != 0) {
    seterr(why, whylen, "cannot stat: %s", strerror(errno));
    return rc;
  }
  if (!S_ISREG(sb.st_mode)) {
    seterr(why, whylen, "not a regular file");
    return rc;
  }
  uint64_t fsize = (uint64_t)sb.st_size;
  ssize_t n = read_full(fd, hdr, sizeof hdr);
  if (n < 0) {
    seterr(why, whylen, "read error: %s", strerror(errno));
    return rc;
  }
  if (memcmp(hdr, MAGIC, (size_t)n < sizeof MAGIC ? (size_t)n : sizeof MAGIC) != 0) {
    seterr(why, whylen, "not a cache file (bad magic)");
    return rc;
  }
  if ((size_t)n < sizeof hdr) {
    seterr(why, whylen, "truncated (header %zd of %d bytes)", n, SFA_STORE_HEADER_BYTES);
    return rc;
  }
  uint32_t version = get_u32(hdr + 8);
  uint64_t mlen = get_u64(hdr + 12), plen = get_u64(hdr + 20);
  uint64_t psum = get_u64(hdr + 28), hsum = get_u64(hdr + 36);
  if (version != SFA_STORE_FORMAT) {
    seterr(why, whylen, "unsupported format version %u (expected %u)", version, SFA_STORE_FORMAT);
    return rc;
  }
  uint64_t after_hdr = fsize > sizeof hdr ? fsize - sizeof hdr : 0;
  if (mlen > after_hdr) {
    seterr(why, whylen, "truncated (key material %llu of %llu bytes)",
           (unsigned long long)after_hdr, (unsigned long long)mlen);
    return rc;
  }
  if (want && mlen != wantlen) {
    seterr(why, whylen,
           "key material differs (%llu bytes, expected %zu): hash collision or foreign file",
           (unsigned long long)mlen, wantlen);
    return rc;
  }
  mat = xmalloc((size_t)mlen);
  if (!mat) goto oom;
  n = read_full(fd, mat, (size_t)mlen);
  if (n < 0 || (uint64_t)n != mlen) {
    if (n < 0)
      seterr(why, whylen, "read error: %s", strerror(errno));
    else
      seterr(why, whylen, "truncated (key material %zd of %llu bytes)", n,
             (unsigned long long)mlen);
    goto fail;
  }
  if (header_sum(hdr, mat, (size_t)mlen) != hsum) {
    seterr(why, whylen, "header checksum mismatch");
    goto fail;
  }
  if (want && mlen && memcmp(mat, want, (size_t)mlen) != 0) {
    seterr(why, whylen, "key material differs: hash collision or foreign file");
    goto fail;
  }
  uint64_t remain = after_hdr - mlen;
  if (remain < plen) {
    seterr(why, whylen, "truncated (payload %llu of %llu bytes)", (unsigned long long)remain,
           (unsigned long long)plen);
    goto fail;
  }
  if (remain > plen) {
    seterr(why, whylen, "%llu unexpected bytes after the payload",
           (unsigned long long)(remain - plen));
    goto fail;
  }
  pay = xmalloc((size_t)plen);
  if (!pay) goto oom;
  n = read_full(fd, pay, (size_t)plen);
  if (n < 0 || (uint64_t)n != plen) {
    if (n < 0)
      seterr(why, whylen, "read error: %s", strerror(errno));
    else
      seterr(why, whylen, "truncated (payload %zd of %llu bytes)", n, (unsigned long long)plen);
    goto fail;
  }
  unsigned char extra;
  if (read_full(fd, &extra, 1) != 0) {
    seterr(why, whylen, "file grew while being read");
    goto fail;
  }
  if (XXH3_64bits(pay, (size_t)plen) != psum) {
    seterr(why, whylen, "payload checksum mismatch");
    goto fail;
  }
  if (mat_out) {
    *mat_out = mat;
    *mlen_out = (size_t)mlen;
  } else {
    free(mat);
  }
  if (pay_out) {
    *pay_out = pay;
    *plen_out = (size_t)plen;
  } else {
    free(pay);
  }
  return SFA_OK;
oom:
  seterr(why, whylen, "out of memory");
  rc = SFA_ERR_OUT_OF_MEMORY;
fail:
  free(mat);
  free(pay);
  return rc;
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
  snprintf(path, sizeof path, "%s/%s", st->dir, rel);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT || errno == ENOTDIR)
      seterr(err, errlen, "%s: not cached", rel);
    else
      seterr(err, errlen, "%s: cannot open: %s", rel, strerror(errno));
    return SFA_ERR_NOT_FOUND;
  }
  sfa_status rc = read_verified(fd, material, mlen, NULL, NULL, payload, plen, why, sizeof why);
  close(fd);
  if (rc != SFA_OK) seterr(err, errlen, "%s: %s", rel, why);
  return rc;
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
  if (!sfa_store_is_memory_only(st)) {
    sfa_store_key(material, mlen, key);
    if (disk_put(st, key, material, mlen, payload, plen, why, sizeof why) == 0) return SFA_OK;
    degrade(st, why);
  }
  return mem_put(st, material, mlen, payload, plen, err, errlen);
}

/* ---------------------------------------------------------------- scans */

/* Fill e for the file at path (name is its base name); 0, or -1 if the file
** vanished (a concurrent clear or prune). */
static int scan_file(const char *path, const char *name, int temp, sfa_store_entry *e) {
  struct stat sb;
  memset(e, 0, sizeof *e);
  size_t pl = strlen(path);
  if (pl >= sizeof e->path) pl = sizeof e->path - 1; /* callers pass paths that fit */
  memcpy(e->path, path, pl);
  e->path[pl] = '\0';
  size_t klen = strcspn(name, ".");
  snprintf(e->key, sizeof e->key, "%.*s", (int)(klen < 32 ? klen : 32), name);
  if (temp) {
    if (stat(path, &sb) != 0) return -1;
    e->size = (size_t)sb.st_size;
    e->mtime = (long)sb.st_mtime;
    snprintf(e->reason, sizeof e->reason, "temporary file");
    return 0;
  }
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0) {
    if (errno == ENOENT) return -1;
    if (stat(path, &sb) == 0) {
      e->size = (size_t)sb.st_size;
      e->mtime = (long)sb.st_mtime;
    }
    snprintf(e->reason, sizeof e->reason, "cannot open: %s", strerror(errno));
    return 0;
  }
  if (fstat(fd, &sb) == 0) {
    e->size = (size_t)sb.st_size;
    e->mtime = (long)sb.st_mtime;
  }
  void *mat = NULL;
  size_t mlen = 0;
  sfa_status rc = read_verified(fd, NULL, 0, &mat, &mlen, NULL, NULL, e->reason, sizeof e->reason);
  close(fd);
  if (rc != SFA_OK) return 0;
  char key[SFA_STORE_KEY_HEX];
  sfa_store_key(mat, mlen, key);
  material_name(mat, mlen, e->name, sizeof e->name);
  free(mat);
  if (klen != 32 || strcmp(name + 32, ".cubin") != 0 || strcmp(key, e->key) != 0) {
    snprintf(e->reason, sizeof e->reason, "file name does not match its key material (%s)", key);
    return 0;
  }
  e->valid = 1;
  return 0;
}

/* Visit kernels/<xx>/ files: the *.cubin ones, or the temporary ones. */
static sfa_status walk(sfa_store *st, int temp, sfa_store_visit visit, void *user, char *err,
                       size_t errlen) {
  char top[PATH_BUF], sub[PATH_BUF + 8], path[PATH_BUF + 8 + 264];
  sfa_status rc = SFA_OK;
  if (!st || !visit) {
    seterr(err, errlen, "sfa_store_scan: NULL argument");
    return SFA_ERR_INVALID_ARGUMENT;
  }
  if (!st->dir[0]) return SFA_OK;
  snprintf(top, sizeof top, "%s/kernels", st->dir);
  DIR *d = opendir(top);
  if (!d) {
    if (errno == ENOENT || errno == ENOTDIR) return SFA_OK;
    seterr(err, errlen, "cannot read %s: %s", top, strerror(errno));
    return SFA_ERR_IO;
  }
  sfa_store_entry *e = malloc(sizeof *e);
  if (!e) {
    closedir(d);
    seterr(err, errlen, "out of memory");
    return SFA_ERR_OUT_OF_MEMORY;
  }
  int stop = 0;
  struct dirent *de;
  while (!stop && (de = readdir(d)) != NULL) {
    if (strlen(de->d_name) != 2 || !is_hex(de->d_name, 2)) continue;
    snprintf(sub, sizeof sub, "%s/%s", top, de->d_name);
    DIR *sd = opendir(sub);
    if (!sd) {
      if (errno == ENOENT || errno == ENOTDIR) continue;
      seterr(err, errlen, "cannot read %s: %s", sub, strerror(errno));
      rc = SFA_ERR_IO;
      break;
    }
    struct dirent *fe;
    while (!stop && (fe = readdir(sd)) != NULL) {
      int is_temp = strstr(fe->d_name, ".cubin.tmp.") != NULL;
      if (temp ? !is_temp : (is_temp || !ends_with(fe->d_name, ".cubin"))) continue;
      if (snprintf(path, sizeof path, "%s/%s", sub, fe->d_name) >= (int)sizeof e->path) continue;
      if (scan_file(path, fe->d_name, temp, e) != 0) continue;
      stop = visit(e, user) != 0;
    }
    closedir(sd);
  }
  closedir(d);
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
