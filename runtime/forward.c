/* runtime/forward.c -- placeholder, being written. */
typedef int sfa_placeholder_forward;
