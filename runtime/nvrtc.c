/* runtime/nvrtc.c -- placeholder, being written. */
typedef int sfa_placeholder_nvrtc;
