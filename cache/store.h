/*
** store.h -- content-addressed on-disk store of compiled kernels (cubins).
**
** Layout: <dir>/kernels/<key[0:2]>/<key>.cubin where key is the 32-hex-digit
** XXH3-128 of the key material (generated source, NVRTC version, compile options,
** arch, sfa version). Each file is a header (magic, format version, key material
** length and bytes, payload length, payload checksum) followed by the payload.
** Loading verifies everything; a file that fails is a miss (and is replaced on
** the next put), never loaded. Puts write a temporary file in the same directory
** and rename it into place, so concurrent writers of one key both succeed. When
** the directory cannot be created or written, the store degrades to memory only
** and warns once on stderr.
**
** File format (all integers little-endian, written byte by byte):
**   "SFACUBIN"  8 bytes magic
**   u32         format version (SFA_STORE_FORMAT)
**   u64         key material length M
**   u64         payload length P
**   u64         XXH3-64 of the payload
**   u64         XXH3-64 of the 36 bytes above followed by the material
**   M bytes     key material
**   P bytes     payload
**
** Thread safety: every function may be called from several threads on one
** store; the in-memory list is guarded by a mutex, files are replaced by rename.
*/
#ifndef SFA_CACHE_STORE_H
#define SFA_CACHE_STORE_H

#include <stddef.h>
#include "sfa.h"

#define SFA_STORE_KEY_HEX 33 /* 32 hex digits + NUL */
#define SFA_STORE_FORMAT 1u
#define SFA_STORE_HEADER_BYTES 44

typedef struct sfa_store sfa_store;

/* Resolve the cache directory: dir if not NULL, else $SFA_CACHE_DIR, else
** $XDG_CACHE_HOME/sfa, else $HOME/.cache/sfa (empty values are ignored;
** trailing slashes are dropped). Writes into out (n bytes). SFA_ERR_NOT_FOUND
** when none is set, SFA_ERR_INVALID_ARGUMENT when the path does not fit. */
sfa_status sfa_store_resolve_dir(const char *dir, char *out, size_t n, char *err, size_t errlen);

/* Open (creating directories as needed). Never fails for an unwritable or
** unresolvable directory: it then works in memory and warns once (unless
** quiet); gets still read files that exist there. Fails only for a NULL st or
** out of memory. Close with sfa_store_close. */
sfa_status sfa_store_open(sfa_store **st, const char *dir, int quiet, char *err, size_t errlen);
void sfa_store_close(sfa_store *st);
const char *sfa_store_dir(const sfa_store *st);
int sfa_store_is_memory_only(const sfa_store *st);

/* key = hex XXH3-128 of material. */
void sfa_store_key(const void *material, size_t len, char key[SFA_STORE_KEY_HEX]);

/* Look up (the in-memory list first, then the file). SFA_OK and *payload
** (malloc'd; release with sfa_free) on a verified hit;
** SFA_ERR_NOT_FOUND on a miss, including a corrupt, truncated or mismatched file
** (whose reason goes to err). */
sfa_status sfa_store_get(sfa_store *st, const void *material, size_t mlen,
                         void **payload, size_t *plen, char *err, size_t errlen);

/* Insert or replace atomically. A write that fails (disk full, read-only,
** anything) switches the store to memory only with one warning and keeps the
** entry in memory: the put still returns SFA_OK. Errors only for bad arguments
** or out of memory. */
sfa_status sfa_store_put(sfa_store *st, const void *material, size_t mlen,
                         const void *payload, size_t plen, char *err, size_t errlen);

/* Maintenance used by sfa-cache. */
typedef struct sfa_store_entry {
  char key[SFA_STORE_KEY_HEX];
  char path[1024];
  size_t size;      /* file bytes */
  long mtime;       /* seconds since the epoch */
  int valid;        /* header, key and checksum verified */
  char name[160];   /* kernel name from the key material ("name=..." line), or "" */
  char reason[256]; /* why the file is not valid, or "" */
} sfa_store_entry;

typedef int (*sfa_store_visit)(const sfa_store_entry *e, void *user);
/* Calls visit for every <key>.cubin file under kernels/ (verified: valid,
** reason, name); stops when visit returns nonzero. Reads the directory even when
** the store is memory only; a missing kernels/ directory is an empty scan. */
sfa_status sfa_store_scan(sfa_store *st, sfa_store_visit visit, void *user, char *err, size_t errlen);

/* Calls visit for every temporary file (<key>.cubin.tmp.XXXXXX) under kernels/,
** e.g. left by a killed writer: key, path, size and mtime are set, valid is 0. */
sfa_status sfa_store_scan_temp(sfa_store *st, sfa_store_visit visit, void *user, char *err, size_t errlen);

#endif
