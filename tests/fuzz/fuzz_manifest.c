/*
** fuzz_manifest.c -- fuzz target of the AOT manifest loader (gen/manifest.c):
** the input becomes DIR/manifest.tsv of a private directory that also holds
** one small file, k.cubin, and sfa__manifest_load reads it. Every entry of a
** manifest that loads must be found by its name, and reading its cubin either
** gives exactly cubin_bytes bytes with the listed XXH3-64 or fails with a
** message; a failed load must come with a message. Under the header that
** sfa-gen writes, every line read must be the line sfa__manifest_line writes
** for its entry: the reader accepts only what the writer writes.
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

/* The lines of text (modified: '\n' become NULs), in a malloc'ed array that
** ends with NULL. */
static const char **split_lines(char *text) {
  size_t n = 2;
  for (const char *p = text; (p = strchr(p, '\n')); p++) n++;
  const char **lines = malloc(n * sizeof *lines);
  if (!lines) fz_fail("out of memory");
  size_t k = 0;
  for (char *p = text;;) {
    lines[k++] = p;
    char *nl = strchr(p, '\n');
    if (!nl) break;
    *nl = '\0';
    p = nl + 1;
  }
  lines[k] = NULL;
  return lines;
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
  char *text = fz_strndup(data, size);
  const char **lines = split_lines(text);
  int canonical = 0; /* the header sfa-gen writes: then lines must be as it writes them */
  for (int ln = 1; lines[ln - 1]; ln++)
    if (lines[ln - 1][0] && lines[ln - 1][0] != '#') {
      canonical = strncmp(lines[ln - 1], sfa__manifest_header(),
                          strlen(sfa__manifest_header()) - 1) == 0 &&
                  !lines[ln - 1][strlen(sfa__manifest_header()) - 1];
      break;
    }
  for (size_t i = 0; i < m->count; i++) {
    const sfa__manifest_entry *e = &m->entries[i];
    char line[1024];
    const char *cubin_name = e->path ? e->path + strlen(dir) + 1 : NULL;
    int n = sfa__manifest_line(line, sizeof line, &e->spec, e->nvrtc_major, e->nvrtc_minor,
                               e->key, cubin_name, e->cubin_bytes, e->cubin_xxh3);
    if (n <= 0) fz_fail("sfa__manifest_line refuses entry %s, which was read", e->name);
    line[n - 1] = '\0';
    if (canonical && strcmp(line, lines[e->line - 1]) != 0)
      fz_fail("line %d was read as an entry that is written '%s'", e->line, line);
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
  free(lines);
  free(text);
  return 0;
}
