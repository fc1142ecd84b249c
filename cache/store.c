/* cache/store.c -- placeholder, being written. */
typedef int sfa_placeholder_store;
