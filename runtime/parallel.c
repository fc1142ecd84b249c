/*
** parallel.c -- sfa__parallel_for (parallel.h): pthreads taking units from a
** mutex-guarded counter until none are left or one fails.
*/
#include <pthread.h>
#include <stdlib.h>
#include <unistd.h>

#include "runtime/parallel.h"

#define MAX_THREADS 32

typedef struct job {
  pthread_mutex_t lock;
  int next, n, failed;
  int (*fn)(void *user, void *scratch, int unit);
  void *user;
} job;

typedef struct worker {
  job *j;
  void *scratch;
} worker;

static void *run(void *arg) {
  worker *w = arg;
  job *j = w->j;
  for (;;) {
    pthread_mutex_lock(&j->lock);
    int u = j->failed ? j->n : j->next++;
    pthread_mutex_unlock(&j->lock);
    if (u >= j->n) return NULL;
    int rc = j->fn(j->user, w->scratch, u);
    if (rc) {
      pthread_mutex_lock(&j->lock);
      if (!j->failed) j->failed = rc;
      pthread_mutex_unlock(&j->lock);
    }
  }
}

int sfa__parallel_threads(int n, double work) {
  long t = 0;
  if (work < (double)(1 << 24)) return 1;
  const char *e = getenv("SFA_REF_THREADS");
  if (e && *e) t = strtol(e, NULL, 10);
  if (t < 1) t = sysconf(_SC_NPROCESSORS_ONLN);
  if (t < 1) t = 1;
  if (t > MAX_THREADS) t = MAX_THREADS;
  if (t > n) t = n;
  return t < 1 ? 1 : (int)t;
}

int sfa__parallel_for(int n, int nthreads, int (*fn)(void *user, void *scratch, int unit),
                      void *user, void **scratch) {
  job j = {.next = 0, .n = n, .failed = 0, .fn = fn, .user = user};
  worker w[MAX_THREADS];
  pthread_t th[MAX_THREADS];
  int started = 0, rc = 0;
  if (nthreads > MAX_THREADS) nthreads = MAX_THREADS;
  if (nthreads < 1) nthreads = 1;
  if (pthread_mutex_init(&j.lock, NULL) != 0) return -1;
  for (int t = 1; t < nthreads; t++) { /* the calling thread is worker 0 */
    w[t].j = &j, w[t].scratch = scratch[t];
    if (pthread_create(&th[t], NULL, run, &w[t]) != 0) break;
    started = t;
  }
  w[0].j = &j, w[0].scratch = scratch[0];
  run(&w[0]);
  for (int t = 1; t <= started; t++) pthread_join(th[t], NULL);
  pthread_mutex_destroy(&j.lock);
  rc = j.failed;
  return rc;
}
