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
** Safety: directories are created with mode 0700. A cache directory (or its
** kernels/) that is group- or world-writable or not owned by the effective
** user, as a shared /tmp path would be, or a kernels/ that is a symbolic link,
** is refused: one warning, memory only, and nothing is read from or written to
** it. Files are read with cache/fileio.h (regular files only, never blocking,
** at most SFA__FILE_MAX_BINARY = 64 MiB, no symbolic link followed); scans and
** removals never follow a symbolic link and touch only the store's own names:
** <key>.cubin and <key>.cubin.tmp.XXXXXX under kernels/<key[0:2]>/.
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

/* Open (creating directories as needed, mode 0700). Never fails for an
** unwritable, unresolvable or refused (unsafe, see above) directory: it then
** works in memory and warns once (unless quiet); gets still read files that
** exist in an unwritable directory, never in a refused one. Fails only for a
** NULL st or out of memory. Close with sfa_store_close. */
sfa_status sfa_store_open(sfa_store **st, const char *dir, int quiet, char *err, size_t errlen);
void sfa_store_close(sfa_store *st);
const char *sfa_store_dir(const sfa_store *st);
int sfa_store_is_memory_only(const sfa_store *st);

/* The warning of the switch to memory only (without "sfa: warning: "), or ""
** while the store uses its directory; given even when quiet. */
const char *sfa_store_warning(const sfa_store *st);

/* 1 when open refused the directory as unsafe (see above), else 0. */
int sfa_store_is_refused(const sfa_store *st);

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
** entry in memory: the put still returns SFA_OK. An entry larger than a read
** accepts (64 MiB with its header) is kept in memory only, silently. Errors
** only for bad arguments or out of memory. */
sfa_status sfa_store_put(sfa_store *st, const void *material, size_t mlen,
                         const void *payload, size_t plen, char *err, size_t errlen);

/* Maintenance used by sfa-cache. */
typedef struct sfa_store_entry {
  char key[SFA_STORE_KEY_HEX]; /* from the file name; "" for a skipped directory */
  char rel[80];     /* the path below the cache directory: kernels/ab/<name> */
  char path[1024];  /* <cache dir>/<rel>, for messages */
  size_t size;      /* file bytes (of the link itself when skipped) */
  long mtime;       /* seconds since the epoch */
  int valid;        /* header, key and checksum verified */
  int skipped;      /* not a regular file (a symbolic link, FIFO, ...) or a
                    ** symbolically linked kernels/ or kernels/<xx>: not read, not
                    ** followed, never to be removed; reason says what it is */
  char name[160];   /* kernel name from the key material ("name=..." line), or "" */
  char reason[256]; /* why the file is not valid or was skipped, or "" */
} sfa_store_entry;

typedef int (*sfa_store_visit)(const sfa_store_entry *e, void *user);
/* Calls visit for every <key>.cubin file (32 lowercase hex digits) under
** kernels/<xx>/ (verified: valid, reason, name), and for every entry skipped
** (see skipped) on the way; stops when visit returns nonzero. Reads the
** directory even when the store is memory only (refused included); a missing
** kernels/ directory is an empty scan. */
sfa_status sfa_store_scan(sfa_store *st, sfa_store_visit visit, void *user, char *err, size_t errlen);

/* Calls visit for every temporary file (<key>.cubin.tmp.XXXXXX, a regular
** file) under kernels/<xx>/, e.g. left by a killed writer: key, rel, path,
** size and mtime are set, valid is 0. Nothing is skipped-visited here. */
sfa_status sfa_store_scan_temp(sfa_store *st, sfa_store_visit visit, void *user, char *err, size_t errlen);

/* Removes the file rel (an entry's rel: kernels/<xx>/<key>.cubin or a
** temporary file of that name) relative to a descriptor of the cache
** directory, never through a symbolic link, and only when it is a regular
** file. SFA_OK also when it is already gone; SFA_ERR_INVALID_ARGUMENT for a
** name that is not the store's; SFA_ERR_IO (the message names rel and why)
** when it is not a regular file, a directory on the way is a symbolic link, or
** unlinking fails. Works on a memory-only (refused included) store. */
sfa_status sfa_store_remove(sfa_store *st, const char *rel, char *err, size_t errlen);

#endif
