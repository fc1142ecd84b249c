/* runtime/reference.c -- placeholder, being written. */
typedef int sfa_placeholder_reference;
