/*
** manifest.h -- internal: the manifest of ahead-of-time compiled kernels that
** sfa-gen writes (DIR/manifest.tsv) and the runtime loads instead of compiling.
**
** manifest.tsv is UTF-8 text, one header line naming the columns (any order;
** every column below is required, an unknown one is an error), then one kernel
** per line, fields separated by single tabs. Lines that are empty or start with
** '#' are skipped. Columns:
**   name        canonical kernel name (also the entry symbol)
**   arch pass mode dtype head_dim block_m block_n num_warps num_stages
**               the spec, spelled as sfa_spec_name does; must agree with name
**   flags       "-" or a comma list in name order: causal,bias,mask,det, then wg
**               for mma wgmma (the spec's mma field, spelled as in the name)
**   smem_bytes  sfa_spec_smem_bytes of the spec
**   nvrtc       the NVRTC version M.m that compiled the cubin and made the key
**   key         the 32-hex-digit disk-cache key (runtime/keymat.h) with that
**               NVRTC version; the runtime recomputes it from the row's spec,
**               its own templates and sfa version and the row's nvrtc, so a
**               row made from other templates or options is refused, while a
**               runtime with another NVRTC (or none) still uses the cubin
**   cubin       file name of the cubin in DIR, or "-" when none was written
**   cubin_bytes its size (0 with "-")
**   cubin_xxh3  XXH3-64 of the cubin, 16 lowercase hex digits ("-" with "-")
*/
#ifndef SFA_GEN_MANIFEST_H
#define SFA_GEN_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

#include "sfa.h"
#include "cache/store.h"
#include "gen/gen_internal.h"

#define SFA__MANIFEST_FILE "manifest.tsv"

typedef struct sfa__manifest_entry {
  char name[SFA__NAME_MAX];
  sfa_kernel_spec spec;      /* valid (sfa_spec_validate) */
  int arch;                  /* spec.arch */
  int nvrtc_major, nvrtc_minor; /* the NVRTC that made key and cubin */
  char key[SFA_STORE_KEY_HEX];
  char *path;                /* DIR/<cubin>, or NULL when the manifest lists none */
  size_t cubin_bytes;
  uint64_t cubin_xxh3;
  int line;                  /* its line in manifest.tsv */
} sfa__manifest_entry;

typedef struct sfa__manifest {
  char *dir;                     /* as given to sfa__manifest_load */
  char *file;                    /* DIR/manifest.tsv */
  sfa__manifest_entry *entries;  /* sorted by name; names are unique */
  size_t count;
} sfa__manifest;

/* Reads and checks DIR/manifest.tsv (the cubins are not read here).
** SFA_ERR_NOT_FOUND when it does not exist, SFA_ERR_IO when it cannot be read,
** SFA_ERR_CORRUPT for malformed content with "FILE:LINE: what is wrong",
** SFA_ERR_INVALID_ARGUMENT for NULL arguments. Free with sfa__manifest_free. */
sfa_status sfa__manifest_load(const char *dir, sfa__manifest **m, char *err, size_t errlen);
void sfa__manifest_free(sfa__manifest *m);

/* The entry called name, or NULL (binary search). */
const sfa__manifest_entry *sfa__manifest_find(const sfa__manifest *m, const char *name);

/* Reads the entry's cubin and verifies its size and XXH3-64; *buf is
** malloc'ed (free or sfa_free). SFA_ERR_NOT_FOUND when the manifest lists no
** cubin or the file does not exist, SFA_ERR_IO when it cannot be read,
** SFA_ERR_CORRUPT when it is truncated, longer or altered; the message names
** the file and the problem. */
sfa_status sfa__manifest_read_cubin(const sfa__manifest_entry *e, void **buf, size_t *len,
                                    char *err, size_t errlen);

/* ---- writing (sfa-gen) */

/* The header line, ending in '\n'. */
const char *sfa__manifest_header(void);

/* The line of one kernel, ending in '\n', into buf (n bytes); key was made
** with NVRTC nvrtc_major.nvrtc_minor; cubin is the file name or NULL for
** none. Returns the length, or -1 if the spec is not valid or buf is too
** small. */
int sfa__manifest_line(char *buf, size_t n, const sfa_kernel_spec *spec, int nvrtc_major,
                       int nvrtc_minor, const char key[SFA_STORE_KEY_HEX], const char *cubin,
                       size_t cubin_bytes, uint64_t cubin_xxh3);

/* XXH3-64 of a cubin, as the manifest records it. */
uint64_t sfa__cubin_xxh3(const void *data, size_t len);

#endif
