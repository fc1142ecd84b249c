/*
** kernel_dir.c -- the set of ahead-of-time kernel directories a context
** searches before its disk cache and NVRTC (rules in kernel_dir.h): adding a
** directory (its manifest checked whole), finding a kernel by canonical name,
** reading and verifying its cubin and the row's key, and marking rows whose
** cubin failed so that each failure is reported once and then passed over.
*/
#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "runtime/kernel_dir.h"
#include "runtime/keymat.h"

typedef struct kdir {
  sfa__manifest *m;
  unsigned char *bad; /* one mark per row of m */
} kdir;

struct sfa__kernel_dirs {
  pthread_mutex_t lock; /* guards v, n, cap and the marks */
  int quiet;
  kdir *v;
  size_t n, cap;
};

sfa_status sfa__kdirs_create(sfa__kernel_dirs **out, int quiet, char *err, size_t errlen) {
  if (!out) return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "kernel dirs: NULL");
  *out = NULL;
  sfa__kernel_dirs *kd = calloc(1, sizeof *kd);
  if (!kd) return sfa__fail(err, errlen, SFA_ERR_OUT_OF_MEMORY, "out of memory (kernel dirs)");
  if (pthread_mutex_init(&kd->lock, NULL) != 0) {
    free(kd);
    return sfa__fail(err, errlen, SFA_ERR_INTERNAL, "cannot initialise the kernel dirs mutex");
  }
  kd->quiet = quiet;
  *out = kd;
  return SFA_OK;
}

void sfa__kdirs_free(sfa__kernel_dirs *kd) {
  if (!kd) return;
  for (size_t i = 0; i < kd->n; i++) {
    sfa__manifest_free(kd->v[i].m);
    free(kd->v[i].bad);
  }
  free(kd->v);
  pthread_mutex_destroy(&kd->lock);
  free(kd);
}

/* ------------------------------------------------------------ adding */

sfa_status sfa__kdirs_add(sfa__kernel_dirs *kd, const char *dir, size_t *added, char *err,
                          size_t errlen) {
  const sfa_status bad = SFA_ERR_INVALID_ARGUMENT;
  if (added) *added = 0;
  if (!kd) return sfa__fail(err, errlen, bad, "kernel dirs: NULL");
  if (!dir || !*dir) return sfa__fail(err, errlen, bad, "dir: is NULL or empty");
  size_t len = strlen(dir);
  if (len >= 4096) return sfa__fail(err, errlen, bad, "dir: a path of %zu bytes is too long", len);
  char path[4096];
  memcpy(path, dir, len + 1);
  while (len > 1 && path[len - 1] == '/') path[--len] = '\0';

  struct stat sb;
  if (stat(path, &sb) != 0)
    return sfa__fail(err, errlen,
                     errno == ENOENT || errno == ENOTDIR ? SFA_ERR_NOT_FOUND : SFA_ERR_IO,
                     "kernel dir %s: %s", path, strerror(errno));
  if (!S_ISDIR(sb.st_mode))
    return sfa__fail(err, errlen, SFA_ERR_NOT_FOUND, "kernel dir %s: not a directory", path);

  pthread_mutex_lock(&kd->lock);
  int dup = 0;
  for (size_t i = 0; i < kd->n && !dup; i++) dup = strcmp(kd->v[i].m->dir, path) == 0;
  pthread_mutex_unlock(&kd->lock);
  if (dup) return SFA_OK;

  sfa__manifest *m = NULL;
  char why[1024];
  sfa_status st = sfa__manifest_load(path, &m, why, sizeof why);
  if (st == SFA_ERR_NOT_FOUND)
    return sfa__fail(err, errlen, st, "kernel dir %s has no %s (%s)", path, SFA__MANIFEST_FILE,
                     why);
  if (st != SFA_OK) return sfa__fail(err, errlen, st, "kernel dir %s: %s", path, why);
  unsigned char *marks = calloc(m->count ? m->count : 1, 1);
  if (!marks) {
    sfa__manifest_free(m);
    return sfa__fail(err, errlen, SFA_ERR_OUT_OF_MEMORY, "out of memory (kernel dir %s)", path);
  }

  pthread_mutex_lock(&kd->lock);
  dup = 0;
  for (size_t i = 0; i < kd->n && !dup; i++) dup = strcmp(kd->v[i].m->dir, path) == 0;
  if (!dup && kd->n == kd->cap) {
    size_t cap = kd->cap ? 2 * kd->cap : 4;
    kdir *p = realloc(kd->v, cap * sizeof *p);
    if (p) kd->v = p, kd->cap = cap;
    else st = SFA_ERR_OUT_OF_MEMORY;
  }
  size_t count = m->count;
  if (!dup && st == SFA_OK) {
    kd->v[kd->n].m = m;
    kd->v[kd->n].bad = marks;
    kd->n++;
    m = NULL, marks = NULL;
  }
  pthread_mutex_unlock(&kd->lock);
  sfa__manifest_free(m);
  free(marks);
  if (st != SFA_OK) return sfa__fail(err, errlen, st, "out of memory (kernel dir %s)", path);
  if (added && !dup) *added = count;
  return SFA_OK;
}

int sfa__kdirs_add_list(sfa__kernel_dirs *kd, const char *list, int quiet) {
  int n = 0;
  if (!kd || !list) return 0;
  for (const char *p = list; *p;) {
    const char *colon = strchr(p, ':');
    size_t len = colon ? (size_t)(colon - p) : strlen(p);
    if (len > 0) {
      char dir[4096], why[2048];
      if (len >= sizeof dir) {
        if (!quiet)
          fprintf(stderr, "sfa: warning: " SFA__KERNEL_DIR_ENV ": a path of %zu bytes is too "
                  "long; skipped\n", len);
      } else {
        memcpy(dir, p, len);
        dir[len] = '\0';
        if (sfa__kdirs_add(kd, dir, NULL, why, sizeof why) == SFA_OK) n++;
        else if (!quiet)
          fprintf(stderr, "sfa: warning: " SFA__KERNEL_DIR_ENV ": %s; skipped\n", why);
      }
    }
    p += len + (colon != NULL);
  }
  return n;
}

size_t sfa__kdirs_count(sfa__kernel_dirs *kd) {
  if (!kd) return 0;
  pthread_mutex_lock(&kd->lock);
  size_t n = kd->n;
  pthread_mutex_unlock(&kd->lock);
  return n;
}

size_t sfa__kdirs_kernels(sfa__kernel_dirs *kd) {
  size_t n = 0;
  if (!kd) return 0;
  pthread_mutex_lock(&kd->lock);
  for (size_t i = 0; i < kd->n; i++) n += kd->v[i].m->count;
  pthread_mutex_unlock(&kd->lock);
  return n;
}

/* ------------------------------------------------------------ lookup */

/* Call with the lock held. */
static const sfa__manifest_entry *find_locked(sfa__kernel_dirs *kd, const char *name) {
  for (size_t i = 0; i < kd->n; i++) {
    const sfa__manifest_entry *e = sfa__manifest_find(kd->v[i].m, name);
    if (e && e->path && !kd->v[i].bad[e - kd->v[i].m->entries]) return e;
  }
  return NULL;
}

const sfa__manifest_entry *sfa__kdirs_find(sfa__kernel_dirs *kd, const char *name) {
  if (!kd || !name) return NULL;
  pthread_mutex_lock(&kd->lock);
  const sfa__manifest_entry *e = find_locked(kd, name);
  pthread_mutex_unlock(&kd->lock);
  return e;
}

void sfa__kdirs_reject(sfa__kernel_dirs *kd, const sfa__manifest_entry *hit, const char *why) {
  if (!kd || !hit) return;
  int first = 0;
  pthread_mutex_lock(&kd->lock);
  for (size_t i = 0; i < kd->n; i++) {
    const sfa__manifest *m = kd->v[i].m;
    if (hit >= m->entries && hit < m->entries + m->count) {
      unsigned char *mark = &kd->v[i].bad[hit - m->entries];
      first = !*mark;
      *mark = 1;
      break;
    }
  }
  pthread_mutex_unlock(&kd->lock);
  if (first && !kd->quiet)
    fprintf(stderr, "sfa: warning: ahead-of-time kernel %s rejected: %s; using the kernel "
            "cache / NVRTC instead\n", hit->name, why && *why ? why : "unusable");
}

/* SFA_OK if the row's key is the key this runtime computes for its kernel:
** that of its generated source, this sfa version and the NVRTC options, with
** the NVRTC version the row names (runtime/keymat.h), as sfa-gen computed it.
** The runtime's own NVRTC (if any) plays no part: an AOT-only process needs
** none. Else SFA_ERR_CORRUPT (or
** the generator's error) with why. Costs one render of the kernel's source. */
static sfa_status check_key(const sfa__manifest_entry *e, char *why, size_t n) {
  char *src = NULL, key[SFA_STORE_KEY_HEX], msg[1024];
  sfa_status st = sfa_generate(&e->spec, &src, msg, sizeof msg);
  if (st != SFA_OK)
    return sfa__fail(why, n, st, "%s: cannot generate %s to check its key: %s", e->path,
                     e->name, msg);
  st = sfa__kernel_key_nv(&e->spec, src, e->nvrtc_major, e->nvrtc_minor, key);
  sfa_free(src);
  if (st != SFA_OK)
    return sfa__fail(why, n, st, "%s: cannot compute the key of %s (%s)", e->path, e->name,
                     sfa_status_string(st));
  if (strcmp(key, e->key) != 0)
    return sfa__fail(why, n, SFA_ERR_CORRUPT,
                     "%s: the manifest's key %s (line %d) is not this runtime's key %s of %s: the "
                     "directory was written by another sfa version or other templates, or edited", e->path, e->key, e->line, key, e->name);
  return SFA_OK;
}

sfa_status sfa__kdirs_cubin(sfa__kernel_dirs *kd, const char *name, void **cubin, size_t *size,
                            const sfa__manifest_entry **hit, char *err, size_t errlen) {
  if (cubin) *cubin = NULL;
  if (size) *size = 0;
  if (hit) *hit = NULL;
  if (err && errlen) err[0] = '\0';
  if (!kd || !name || !cubin || !size)
    return sfa__fail(err, errlen, SFA_ERR_INVALID_ARGUMENT, "sfa__kdirs_cubin: NULL argument");
  char why[1536];
  for (;;) { /* each failed row is marked bad, so this ends */
    const sfa__manifest_entry *e = sfa__kdirs_find(kd, name);
    if (!e) return SFA_ERR_NOT_FOUND;
    why[0] = '\0';
    sfa_status st = sfa__manifest_read_cubin(e, cubin, size, why, sizeof why);
    if (st == SFA_OK && (st = check_key(e, why, sizeof why)) != SFA_OK) {
      free(*cubin);
      *cubin = NULL;
      *size = 0;
    }
    if (st == SFA_OK) {
      if (hit) *hit = e;
      return SFA_OK;
    }
    if (err && errlen) snprintf(err, errlen, "%s", why);
    sfa__kdirs_reject(kd, e, why);
  }
}
