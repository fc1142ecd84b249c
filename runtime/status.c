/* runtime/status.c -- placeholder, being written. */
typedef int sfa_placeholder_status;
