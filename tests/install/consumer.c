/*
** consumer.c -- the smallest program a user of an installed sfa writes: it
** checks that the library it runs with is the one whose header it was built
** with, and that a bad argument comes back as an error with a message, on a
** machine without a GPU. Built by tests/install/run.sh against the installed
** copy, through find_package(sfa), FetchContent and pkg-config.
*/
#include <stdio.h>
#include <string.h>

#include <sfa.h>

int main(void) {
  if (strcmp(sfa_version(), SFA_VERSION_STRING) != 0 || sfa_version_number() != SFA_VERSION_NUMBER) {
    fprintf(stderr, "consumer: header %s, library %s\n", SFA_VERSION_STRING, sfa_version());
    return 1;
  }
  if (sfa_abi_size(SFA_ABI_TENSOR) != sizeof(sfa_tensor) ||
      sfa_abi_size(SFA_ABI_PARAMS) != sizeof(sfa_attention_params)) {
    fprintf(stderr, "consumer: struct sizes differ between header and library\n");
    return 1;
  }
  /* A head dim the generator rejects: the message names the field. */
  sfa_kernel_spec spec = {SFA_PASS_FWD, SFA_MODE_DENSE, SFA_DTYPE_BF16, 7, 64, 64, 4, 2, 90, 0,
                          SFA_SPEC_MMA_SYNC};
  char err[512] = "";
  sfa_status st = sfa_spec_validate(&spec, err, sizeof err);
  if (st != SFA_ERR_INVALID_ARGUMENT || !strstr(err, "head_dim")) {
    fprintf(stderr, "consumer: head_dim 7 gave %s: '%s'\n", sfa_status_string(st), err);
    return 1;
  }
  /* sfa_forward without q: rejected before the driver is touched. */
  sfa_context *ctx = NULL;
  sfa_options opts;
  sfa_options_init(&opts);
  if (sfa_context_create(&ctx, &opts) != SFA_OK) {
    fprintf(stderr, "consumer: context: %s\n", ctx ? sfa_last_error(ctx) : "?");
    sfa_context_destroy(ctx);
    return 1;
  }
  sfa_attention_params p;
  sfa_params_init(&p);
  st = sfa_forward(ctx, &p, NULL, NULL, NULL, NULL, NULL, NULL, NULL);
  int ok = st == SFA_ERR_INVALID_ARGUMENT && strstr(sfa_last_error(ctx), "q") != NULL;
  if (!ok)
    fprintf(stderr, "consumer: sfa_forward(q = NULL) gave %s: '%s'\n", sfa_status_string(st),
            sfa_last_error(ctx));
  else
    printf("consumer: sfa %s; bad input rejected: %s\n", sfa_version(), sfa_last_error(ctx));
  sfa_context_destroy(ctx);
  return ok ? 0 : 1;
}
