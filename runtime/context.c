/* runtime/context.c -- placeholder, being written. */
typedef int sfa_placeholder_context;
