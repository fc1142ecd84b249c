/*
** dlsyms.c -- sfa__dlopen_table (dlsyms.h): dlopen a library and resolve a
** table of function pointers from it, all or nothing.
*/
#include <dlfcn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "runtime/dlsyms.h"

void *sfa__dlopen_table(const char *file, const sfa__dlsym *syms, size_t nsyms, void *table,
                        size_t table_size, char *why, size_t n) {
  void *lib = dlopen(file, RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    const char *e = dlerror();
    snprintf(why, n, "%s", e ? e : "dlopen failed");
    return NULL;
  }
  unsigned char *t = calloc(1, table_size);
  if (!t) {
    snprintf(why, n, "out of memory");
    dlclose(lib);
    return NULL;
  }
  for (size_t i = 0; i < nsyms; i++) {
    void *fn = NULL;
    for (int j = 0; j < 3 && syms[i].names[j] && !fn; j++) fn = dlsym(lib, syms[i].names[j]);
    if (!fn && !syms[i].optional) {
      snprintf(why, n, "%s has no symbol %s", file, syms[i].names[0]);
      free(t);
      dlclose(lib);
      return NULL;
    }
    /* POSIX guarantees that a data pointer from dlsym converts to a function pointer. */
    memcpy(t + syms[i].offset, &fn, sizeof fn);
  }
  memcpy(table, t, table_size);
  free(t);
  return lib;
}
