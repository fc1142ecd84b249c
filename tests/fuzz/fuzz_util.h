/*
** fuzz_util.h -- helpers shared by the fuzz targets (tests/fuzz/fuzz_*.c): a
** private temporary directory per process, whole-file writes, and the abort
** that turns a broken invariant into a fuzzer crash.
*/
#ifndef SFA_FUZZ_UTIL_H
#define SFA_FUZZ_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* libFuzzer's entry points; fuzz_driver.c calls them where libFuzzer is not
** linked. */
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);
int LLVMFuzzerInitialize(int *argc, char ***argv);

/* A directory of this process's own, made on the first call under
** $SFA_FUZZ_TMPDIR, else $TMPDIR, else /tmp, and removed with its contents at
** exit or by fz_fail. Aborts if it cannot be made. (fuzz_tunedb runs some 50
** times faster on a tmpfs such as /dev/shm: the db fsyncs what it saves.) */
const char *fz_tmpdir(void);

/* fz_tmpdir()/name into buf (aborts if it does not fit). */
void fz_path(char *buf, size_t n, const char *name);

/* Writes exactly data[0..size) to path (created or truncated); aborts on failure. */
void fz_write_file(const char *path, const void *data, size_t size);

/* A malloc'ed NUL-terminated copy of data[0..size) (aborts when out of memory). */
char *fz_strndup(const uint8_t *data, size_t size);

/* Prints "fuzz invariant broken: ..." to stderr and aborts: the fuzzer (or
** fuzz_driver.c) reports the input as a crash. */
void fz_fail(const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 1, 2), noreturn))
#endif
    ;

#endif
