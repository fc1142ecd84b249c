/*
** fuzz_spec.c -- fuzz target of the canonical kernel names: sfa_spec_parse on
** the input; a name it accepts must come back unchanged from sfa_spec_name
** (parse accepts canonical names only), and sfa_spec_validate,
** sfa_spec_smem_bytes and sfa_spec_default must not crash on the spec. A
** failure must come with a message.
*/
#include <stdlib.h>
#include <string.h>

#include "sfa.h"
#include "fuzz_util.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  char *name = fz_strndup(data, size); /* an embedded NUL ends the name */
  char err[512] = "", back[256];
  sfa_kernel_spec spec;
  memset(&spec, 0, sizeof spec);
  sfa_status st = sfa_spec_parse(name, &spec, err, sizeof err);
  if (st != SFA_OK) {
    if (!err[0]) fz_fail("sfa_spec_parse('%s') failed (%d) without a message", name, (int)st);
  } else {
    st = sfa_spec_name(&spec, back, sizeof back);
    if (st != SFA_OK) fz_fail("sfa_spec_name fails (%d) on the spec parsed from '%s'", (int)st, name);
    if (strcmp(back, name) != 0)
      fz_fail("sfa_spec_parse accepts '%s', whose canonical name is '%s'", name, back);
    err[0] = '\0';
    if (sfa_spec_validate(&spec, err, sizeof err) != SFA_OK && !err[0])
      fz_fail("sfa_spec_validate rejects %s without a message", name);
    (void)sfa_spec_smem_bytes(&spec);
    sfa_kernel_spec def = spec;
    err[0] = '\0';
    if (sfa_spec_default(&def, err, sizeof err) != SFA_OK && !err[0])
      fz_fail("sfa_spec_default fails on %s without a message", name);
  }
  free(name);
  return 0;
}
