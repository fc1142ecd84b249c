/*
** kernel_dir.h -- internal: the directories of ahead-of-time kernels that a
** context searches before its disk cache and NVRTC. Each directory is what
** sfa-gen writes: DIR/manifest.tsv (format in gen/manifest.h) and the cubins
** it lists. Independent of the driver, so the lookup and the cubin checks are
** testable on any machine.
**
** Rules:
** - A directory is added whole: its manifest is read and checked when it is
**   added (a malformed manifest is an error then); cubins are read only when
**   a kernel is needed, and verified (size and XXH3-64) before use.
** - A kernel is found by its canonical name, which spells every spec field
**   including the arch: an sm_80 row never serves an sm_86 or sm_90 spec.
**   Directories are searched in the order they were added; rows without a
**   cubin (sfa-gen --no-cubin) are passed over.
** - A listed cubin that is missing, unreadable (a FIFO or device is refused
**   without blocking, cache/fileio.h), truncated, longer or altered, a row
**   whose key column is not the key this runtime computes for the kernel, or a
**   cubin that the caller rejects (sfa__kdirs_reject: the driver would not
**   load it), marks that row bad: ONE warning naming the file and the problem
**   goes to stderr (unless quiet) and the row is passed over from then on, so
**   the caller falls back to its cache/NVRTC path.
** - The key (runtime/keymat.h) covers the sfa version, the generated source
**   (templates), and the NVRTC version and options: a directory is used only
**   when it comes from sfa-gen of the same sfa version linked against the
**   same NVRTC version as the runtime. Checking it renders the kernel's source
**   once per cubin read (milliseconds, against the seconds of NVRTC).
**
** Thread safety: every function may be called from several threads on one
** set (a mutex guards the list and the bad marks; cubins are read without it).
*/
#ifndef SFA_RUNTIME_KERNEL_DIR_H
#define SFA_RUNTIME_KERNEL_DIR_H

#include <stddef.h>

#include "sfa.h"
#include "gen/manifest.h"

/* The environment variable: directories separated by ':' (empty items are
** skipped). */
#define SFA__KERNEL_DIR_ENV "SFA_KERNEL_DIR"

typedef struct sfa__kernel_dirs sfa__kernel_dirs;

/* An empty set; quiet = 1 keeps the bad-row warnings off stderr. */
sfa_status sfa__kdirs_create(sfa__kernel_dirs **kd, int quiet, char *err, size_t errlen);
void sfa__kdirs_free(sfa__kernel_dirs *kd);

/* Add dir (trailing slashes dropped). SFA_ERR_INVALID_ARGUMENT for an empty
** name; SFA_ERR_NOT_FOUND when dir does not exist, is not a directory or has
** no manifest.tsv; SFA_ERR_IO when the manifest cannot be read; SFA_ERR_CORRUPT
** for a malformed manifest ("FILE:LINE: what"); the message names the path.
** Nothing is added on failure. A directory already in the set is not added
** again (SFA_OK). *added (may be NULL) receives the manifest's kernel count. */
sfa_status sfa__kdirs_add(sfa__kernel_dirs *kd, const char *dir, size_t *added, char *err,
                          size_t errlen);

/* Add every directory of a ':'-separated list (e.g. $SFA_KERNEL_DIR); one that
** fails is skipped with a warning on stderr naming it (unless quiet).
** Returns the number of directories added. */
int sfa__kdirs_add_list(sfa__kernel_dirs *kd, const char *list, int quiet);

/* Number of directories and of kernels (rows) in the set. */
size_t sfa__kdirs_count(sfa__kernel_dirs *kd);
size_t sfa__kdirs_kernels(sfa__kernel_dirs *kd);

/* The first usable row called name (not bad, with a cubin), or NULL. Rows are
** never freed before sfa__kdirs_free, so the pointer stays valid. */
const sfa__manifest_entry *sfa__kdirs_find(sfa__kernel_dirs *kd, const char *name);

/* The verified cubin of kernel name (size, XXH3-64 and the row's key checked):
** *cubin is malloc'ed (free), *hit (may be NULL) the row it came from.
** SFA_ERR_NOT_FOUND when no usable row lists the name; a row whose cubin or key
** fails verification is marked bad (one warning) and
** the next directory that lists the name is tried. When every listing row
** failed, err holds the last failure's message ("" when none was listed). */
sfa_status sfa__kdirs_cubin(sfa__kernel_dirs *kd, const char *name, void **cubin, size_t *size,
                            const sfa__manifest_entry **hit, char *err, size_t errlen);

/* Mark a row bad after its verified cubin proved unusable (why: e.g. the
** driver's error); warns once like a failed verification. */
void sfa__kdirs_reject(sfa__kernel_dirs *kd, const sfa__manifest_entry *hit, const char *why);

#endif
