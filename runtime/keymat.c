/*
** keymat.c -- the cache key material of a kernel (format in keymat.h): the
** canonical name, arch, NVRTC version and options, and the generated source.
*/
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gen/gen_internal.h"
#include "runtime/keymat.h"
#include "runtime/nvrtc.h"

sfa_status sfa__key_material_nv(const sfa_kernel_spec *spec, const char *name,
                                const char *source, int maj, int min, char **material,
                                size_t *len) {
  if (material) *material = NULL;
  if (len) *len = 0;
  if (!spec || !name || !source || !material || !len) return SFA_ERR_INVALID_ARGUMENT;
  const char *opts = sfa__nvrtc_options_string(spec);
  const char *fmt =
      "sfa=" SFA_VERSION_STRING "\nname=%s\narch=%d\nnvrtc=%d.%d\noptions=%s\n--\n";
  int head = snprintf(NULL, 0, fmt, name, spec->arch, maj, min, opts ? opts : "");
  if (head < 0) return SFA_ERR_INTERNAL;
  size_t slen = strlen(source);
  char *m = malloc((size_t)head + slen + 1);
  if (!m) return SFA_ERR_OUT_OF_MEMORY;
  snprintf(m, (size_t)head + 1, fmt, name, spec->arch, maj, min, opts ? opts : "");
  memcpy(m + head, source, slen + 1);
  *material = m;
  *len = (size_t)head + slen;
  return SFA_OK;
}

sfa_status sfa__key_material_named(const sfa_kernel_spec *spec, const char *name,
                                   const char *source, char **material, size_t *len) {
  int maj = 0, min = 0;
  sfa__nvrtc_version(&maj, &min);
  return sfa__key_material_nv(spec, name, source, maj, min, material, len);
}

sfa_status sfa__kernel_key_material(const sfa_kernel_spec *spec, const char *source,
                                    char **material, size_t *len) {
  char name[SFA__NAME_MAX];
  if (material) *material = NULL;
  if (len) *len = 0;
  if (!spec || sfa_spec_name(spec, name, sizeof name) != SFA_OK) return SFA_ERR_INVALID_ARGUMENT;
  return sfa__key_material_named(spec, name, source, material, len);
}

sfa_status sfa__kernel_key(const sfa_kernel_spec *spec, const char *source,
                           char key[SFA_STORE_KEY_HEX]) {
  int maj = 0, min = 0;
  sfa__nvrtc_version(&maj, &min);
  return sfa__kernel_key_nv(spec, source, maj, min, key);
}

sfa_status sfa__kernel_key_nv(const sfa_kernel_spec *spec, const char *source, int maj, int min,
                              char key[SFA_STORE_KEY_HEX]) {
  char *m = NULL, name[SFA__NAME_MAX];
  size_t len = 0;
  if (key) key[0] = '\0';
  if (!key || !spec || sfa_spec_name(spec, name, sizeof name) != SFA_OK)
    return SFA_ERR_INVALID_ARGUMENT;
  sfa_status st = sfa__key_material_nv(spec, name, source, maj, min, &m, &len);
  if (st != SFA_OK) return st;
  sfa_store_key(m, len, key);
  free(m);
  return SFA_OK;
}
