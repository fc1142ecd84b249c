/* gen/spec.c -- placeholder, being written. */
typedef int sfa_placeholder_spec;
