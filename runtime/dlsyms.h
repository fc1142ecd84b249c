/*
** dlsyms.h -- internal: fills a table of function pointers from a shared
** library opened with dlopen, the one mechanism behind the libcuda loader
** (runtime/driver.c) and the libnvrtc loader (runtime/nvrtc_lib.c).
*/
#ifndef SFA_RUNTIME_DLSYMS_H
#define SFA_RUNTIME_DLSYMS_H

#include <stddef.h>

/* One member of a table: its offset and the symbol names to try in order
** (e.g. a versioned name, then the original); optional ones may stay NULL. */
typedef struct sfa__dlsym {
  size_t offset;
  const char *names[3];
  int optional;
} sfa__dlsym;

/* dlopen(file) and resolve every entry of syms into table (which is written
** only when every required symbol is there). Returns the handle, or NULL with
** the reason in why: dlerror's text, or "FILE has no symbol NAME". */
void *sfa__dlopen_table(const char *file, const sfa__dlsym *syms, size_t nsyms, void *table,
                        size_t table_size, char *why, size_t n);

#endif
