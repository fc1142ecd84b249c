/*
** fuzz_template.c -- fuzz target of the template engine (gen/template.lua run
** by gen/generator.c): the input is rendered as the entry template kernel.lt
** (in place of the embedded one; the other templates stay the embedded ones,
** so the input can include them) for one of three specs. A render that fails
** must say why, with SFA_ERR_GENERATOR or SFA_ERR_OUT_OF_MEMORY; text without
** tags must render to itself.
**
** The input is Lua code, so it runs through the generator's own sandbox,
** sfa__render_string (no io/os, an instruction budget, a memory cap), under
** tighter limits than its defaults so that loops cost little.
*/
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gen/gen_internal.h"
#include "fuzz_util.h"

/* The spec that the templates see: one of three, by the input's length. */
static sfa_kernel_spec specs[3] = {
  {SFA_PASS_FWD, SFA_MODE_DENSE, SFA_DTYPE_BF16, 128, 0, 0, 0, 0, 90, SFA_FEAT_CAUSAL,
   SFA_SPEC_MMA_SYNC},
  {SFA_PASS_BWD, SFA_MODE_HASH, SFA_DTYPE_FP16, 64, 0, 0, 0, 0, 80, 0, SFA_SPEC_MMA_SYNC},
  {SFA_PASS_BWD_DQ, SFA_MODE_WINDOW, SFA_DTYPE_BF16, 64, 0, 0, 0, 0, 90,
   SFA_FEAT_CAUSAL | SFA_FEAT_MASK, SFA_SPEC_MMA_SYNC}};
static int ready, verbose;

int LLVMFuzzerInitialize(int *argc, char ***argv) {
  char err[512];
  unsetenv("SFA_TEMPLATE_DIR"); /* the embedded templates, never files */
  verbose = getenv("SFA_FUZZ_VERBOSE") != NULL; /* say what each input rendered to */
  for (int i = 0; i < 3; i++)
    if (sfa_spec_default(&specs[i], err, sizeof err) != SFA_OK ||
        sfa_spec_validate(&specs[i], err, sizeof err) != SFA_OK)
      fz_fail("spec %d of fuzz_template: %s", i, err);
  ready = 1;
  return 0;
}

/* 1 if text opens a tag somewhere: "{{", "{%" or "{#" and then a blank (the
** engine's pattern "{[{%%#]%s"). */
static int has_tag(const char *text) {
  for (const char *p = text; (p = strchr(p, '{')); p++)
    if ((p[1] == '{' || p[1] == '%' || p[1] == '#') && p[2] && isspace((unsigned char)p[2]))
      return 1;
  return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
  if (!ready) LLVMFuzzerInitialize(NULL, NULL);
  const sfa_kernel_spec *spec = &specs[size % 3];
  char *text = fz_strndup(data, size), *out = NULL, err[2048] = "";
  const size_t len = size; /* the template text that is rendered: any bytes */
  const char *steps = getenv("SFA_FUZZ_LUA_STEPS");
  sfa__render_limits limits = {.instructions = steps ? atoll(steps) : 5000000,
                               .heap = (size_t)32 << 20, .seconds = 5};
  sfa_status st = sfa__render_string("kernel.lt", (const char *)data, size, spec, &limits, &out,
                                     err, sizeof err);
  if (verbose)
    fprintf(stderr, "fuzz_template: status %d, %zu bytes out; %s\n", (int)st,
            out ? strlen(out) : 0, st == SFA_OK ? "" : err);
  if (st == SFA_OK) {
    if (!out) fz_fail("the render succeeded without output");
    if (len == strlen(text) && !has_tag(text) && strcmp(out, text) != 0)
      fz_fail("text without tags rendered to %zu bytes that differ from its %zu", strlen(out),
              strlen(text));
  } else {
    if (out) fz_fail("the render failed (%d) but set its output", (int)st);
    if (!err[0]) fz_fail("the render failed (%d) without a message", (int)st);
    if (st != SFA_ERR_GENERATOR && st != SFA_ERR_OUT_OF_MEMORY)
      fz_fail("the render failed with status %d: %s", (int)st, err);
  }
  free(out);
  free(text);
  return 0;
}
