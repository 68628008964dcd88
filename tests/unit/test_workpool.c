/* Unit tests for core/workpool: every job runs once, the queue is bounded (a full queue
 * refuses at once), and freeing the pool runs what was queued. */
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <setjmp.h>
#include <cmocka.h>

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdlib.h>

#include "core/workpool.h"

struct counted {
  struct workpool_job job;
  atomic_int *runs;
};

static void count_run(struct workpool_job *job) {
  atomic_fetch_add(((struct counted *)job)->runs, 1);
}

static void test_every_job_runs_once(void **state) {
  (void)state;
  enum { N = 1000 };
  atomic_int runs = 0;
  struct counted *jobs = calloc(N, sizeof *jobs);
  assert_non_null(jobs);
  struct workpool *p = workpool_new(4, N);
  assert_non_null(p);
  for (int i = 0; i < N; i++) {
    jobs[i].job.run = count_run;
    jobs[i].runs = &runs;
    assert_true(workpool_submit(p, &jobs[i].job));
  }
  workpool_free(p); /* drains the queue first */
  assert_int_equal(atomic_load(&runs), N);
  free(jobs);
}

/* A job that holds its thread until released. */
struct gate {
  struct workpool_job job;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  bool started, open;
};

static void gate_run(struct workpool_job *job) {
  struct gate *g = (struct gate *)job;
  pthread_mutex_lock(&g->mu);
  g->started = true;
  pthread_cond_broadcast(&g->cv);
  while (!g->open) pthread_cond_wait(&g->cv, &g->mu);
  pthread_mutex_unlock(&g->mu);
}

static void test_full_queue_refuses_then_accepts_again(void **state) {
  (void)state;
  struct gate g = {.job.run = gate_run};
  pthread_mutex_init(&g.mu, NULL);
  pthread_cond_init(&g.cv, NULL);
  struct workpool *p = workpool_new(1, 2);
  assert_non_null(p);
  assert_true(workpool_submit(p, &g.job));
  pthread_mutex_lock(&g.mu);
  while (!g.started) pthread_cond_wait(&g.cv, &g.mu);
  pthread_mutex_unlock(&g.mu);
  /* The one thread is busy: two jobs may wait, the third is refused. */
  atomic_int runs = 0;
  struct counted c[4] = {{{count_run, NULL}, &runs},
                         {{count_run, NULL}, &runs},
                         {{count_run, NULL}, &runs},
                         {{count_run, NULL}, &runs}};
  assert_true(workpool_submit(p, &c[0].job));
  assert_true(workpool_submit(p, &c[1].job));
  assert_false(workpool_submit(p, &c[2].job));
  pthread_mutex_lock(&g.mu);
  g.open = true;
  pthread_cond_broadcast(&g.cv);
  pthread_mutex_unlock(&g.mu);
  /* Once the queue moves, jobs are accepted again. */
  while (atomic_load(&runs) < 2) sched_yield();
  assert_true(workpool_submit(p, &c[3].job));
  workpool_free(p);
  assert_int_equal(atomic_load(&runs), 3);
  pthread_cond_destroy(&g.cv);
  pthread_mutex_destroy(&g.mu);
}

/* Work already admitted (a streamed answer's next piece) is queued past the limit, and a
 * new job is still refused while the queue is over it. */
static void test_admitted_work_passes_a_full_queue(void **state) {
  (void)state;
  struct gate g = {.job.run = gate_run};
  pthread_mutex_init(&g.mu, NULL);
  pthread_cond_init(&g.cv, NULL);
  struct workpool *p = workpool_new(1, 1);
  assert_non_null(p);
  assert_true(workpool_submit(p, &g.job));
  pthread_mutex_lock(&g.mu);
  while (!g.started) pthread_cond_wait(&g.cv, &g.mu);
  pthread_mutex_unlock(&g.mu);
  atomic_int runs = 0;
  struct counted c[4] = {{{count_run, NULL}, &runs},
                         {{count_run, NULL}, &runs},
                         {{count_run, NULL}, &runs},
                         {{count_run, NULL}, &runs}};
  assert_true(workpool_submit(p, &c[0].job));
  assert_false(workpool_submit(p, &c[1].job)); /* full */
  assert_true(workpool_submit_admitted(p, &c[2].job));
  assert_true(workpool_submit_admitted(p, &c[3].job));
  assert_false(workpool_submit(p, &c[1].job)); /* still full for new work */
  pthread_mutex_lock(&g.mu);
  g.open = true;
  pthread_cond_broadcast(&g.cv);
  pthread_mutex_unlock(&g.mu);
  workpool_free(p);
  assert_int_equal(atomic_load(&runs), 3);
  pthread_cond_destroy(&g.cv);
  pthread_mutex_destroy(&g.mu);
}

static void test_no_threads_or_queue_is_refused(void **state) {
  (void)state;
  assert_null(workpool_new(0, 4));
  assert_null(workpool_new(4, 0));
  workpool_free(NULL);
}

int main(void) {
  const struct CMUnitTest tests[] = {
      cmocka_unit_test(test_every_job_runs_once),
      cmocka_unit_test(test_full_queue_refuses_then_accepts_again),
      cmocka_unit_test(test_admitted_work_passes_a_full_queue),
      cmocka_unit_test(test_no_threads_or_queue_is_refused),
  };
  return cmocka_run_group_tests(tests, NULL, NULL);
}
