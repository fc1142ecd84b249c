/*
** parallel.h -- internal: a blocking parallel for over n independent work
** units on a few POSIX threads, for the CPU references (they are the slow
** part of the GPU test suites). Units are handed out in order from a shared
** counter; each thread gets its own scratch pointer.
*/
#ifndef SFA_RUNTIME_PARALLEL_H
#define SFA_RUNTIME_PARALLEL_H

/* Threads to use for n units of `work` multiply-adds in all: 1 below 2^24
** (starting threads would cost more), else SFA_REF_THREADS if set (>= 1), else
** the online CPUs; at most 32 and at most n. */
int sfa__parallel_threads(int n, double work);

/* Calls fn(user, scratch[t], u) for every unit u in [0, n) on up to nthreads
** threads, the calling one included (scratch has nthreads entries; a thread
** that cannot be started leaves its units to the others). Returns 0, or the
** first nonzero value an fn returned (units not yet started are then
** skipped), or -1 when no mutex could be made. */
int sfa__parallel_for(int n, int nthreads, int (*fn)(void *user, void *scratch, int unit),
                      void *user, void **scratch);

#endif
