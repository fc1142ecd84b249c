/*
** fuzz_manifest.c -- fuzz target of the AOT manifest loader (gen/manifest.c):
** the input becomes DIR/manifest.tsv of a private directory that also holds
** one small file, k.cubin, and sfa__manifest_load reads it. Every entry of a
** manifest that loads must be found by its name, and reading its cubin either
** gives exactly cubin_bytes bytes with the listed XXH3-64 or fails with a
** message; a failed load must come with a message.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gen/manifest.h"
#include "fuzz_util.h"

/* k.cubin: tests/fuzz/corpus/manifest/ lists it with this size and XXH3-64. */
static const char cubin[] = "sfa fuzz: the bytes of a cubin that a manifest can list\n";

static char dir[600];

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  char path[700];
  snprintf(dir, sizeof dir, "%s", fz_tmpdir());
  fz_path(path, sizeof path, "k.cubin");
  fz_write_file(path, cubin, sizeof cubin - 1);
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char path[700], err[1024] = "";
  if (!dir[0]) LLVMFuzzerInitialize(NULL, NULL);
  fz_path(path, sizeof path, SFA__MANIFEST_FILE);
  fz_write_file(path, data, size);
  sfa__manifest *m = NULL;
  sfa_status st = sfa__manifest_load(dir, &m, err, sizeof err);
  if (st != SFA_OK) {
    if (m) fz_fail("sfa__manifest_load failed (%d) but returned a manifest", (int)st);
    if (!err[0]) fz_fail("sfa__manifest_load failed (%d) without a message", (int)st);
    return 0;
  }
  for (size_t i = 0; i < m->count; i++) {
    const sfa__manifest_entry *e = &m->entries[i];
    if (sfa__manifest_find(m, e->name) != e)
      fz_fail("sfa__manifest_find does not find %s (entry %zu)", e->name, i);
    void *buf = NULL;
    size_t len = 0;
    err[0] = '\0';
    st = sfa__manifest_read_cubin(e, &buf, &len, err, sizeof err);
    if (st == SFA_OK) {
      if (len != e->cubin_bytes || sfa__cubin_xxh3(buf, len) != e->cubin_xxh3)
        fz_fail("the cubin of %s was read with the wrong size or checksum", e->name);
      free(buf);
    } else if (buf || len || !err[0]) {
      fz_fail("sfa__manifest_read_cubin failed (%d) with a buffer or without a message",
              (int)st);
    }
  }
  sfa__manifest_free(m);
  return 0;
}
