/*
** testutil.h -- small helpers shared by the Check suites: temporary
** directories, a seeded RNG, and the run-a-suite main.
*/
#ifndef SFA_TESTUTIL_H
#define SFA_TESTUTIL_H

#include <check.h>
#include <stdint.h>

/* A case `name` of suite s without a time limit (the GPU suites' cases
** compile kernels on a cold cache), holding test t; more tests may be added
** to the case returned. */
TCase *tu_untimed_case(Suite *s, const char *name, const TTest *t);

/* Create a fresh temporary directory (under $TMPDIR or /tmp); returns a static
** copy of its path, valid until the next call. */
const char *tu_mkdtemp(void);

/* Remove a directory tree (best effort). */
void tu_rm_rf(const char *path);

/* xorshift64* random numbers. */
uint64_t tu_rand_u64(uint64_t *state);
double tu_rand_uniform(uint64_t *state); /* [0, 1) */
double tu_rand_normal(uint64_t *state);

/* Redirect fd 2 into the file at path; returns the saved descriptor for
** tu_restore_stderr. */
int tu_capture_stderr(const char *path);
void tu_restore_stderr(int saved);

/* Monotonic wall-clock time in milliseconds. */
double tu_now_ms(void);

/* Occurrences of sub in s. */
int tu_count_substr(const char *s, const char *sub);

/* Is libcuda.so.1 already loaded in this process / could dlopen find it? */
int tu_driver_loaded(void);
int tu_driver_present(void);

/* Paths of the build and the source tree, found from this test's own
** executable (/proc/self/exe: <build>/tests/test_x), so that a build
** directory copied or moved elsewhere still finds its tools and sources:
** tu_build_path("gen/sfa-gen") is <build>/gen/sfa-gen (../gen/sfa-gen from
** the working directory where the executable's path cannot be read);
** tu_source_path("templates") is <build>/../templates where that is a
** source tree (it holds include/sfa.h: the usual build/ inside the
** checkout), else under the source dir the test was configured from. The
** strings live until the process ends. */
const char *tu_build_path(const char *rel);
const char *tu_source_path(const char *rel);

/* TU_ASAN is 1 in an AddressSanitizer build (gcc defines
** __SANITIZE_ADDRESS__, clang 14 only answers __has_feature). */
#if defined(__SANITIZE_ADDRESS__)
#define TU_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define TU_ASAN 1
#endif
#endif
#ifndef TU_ASAN
#define TU_ASAN 0
#endif

/* Bound this process's address space to 3 GiB, so that code that reads or
** allocates without bound fails with ENOMEM instead of eating the machine;
** a no-op under ASan, which reserves terabytes of shadow memory. */
void tu_limit_memory(void);

/* Run the suite with CK_NORMAL output; returns the process exit status. */
int tu_run_suite(Suite *s);

#endif
