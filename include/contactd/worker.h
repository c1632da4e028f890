/* worker: a small thread pool for CPU-heavy or blocking work (password hashing, start-up
 * migrations, mail parsing) that must not stall the event loop. Results are handed back on
 * the loop. Its threads run at nice +10 (Linux), below the loop and PostgreSQL. */
#ifndef CONTACTD_WORKER_H
#define CONTACTD_WORKER_H

struct event_base;
struct worker_pool;

typedef void (*worker_fn)(void *job);	   /* runs on a worker thread */
typedef void (*worker_done_fn)(void *job); /* runs on the event loop afterwards */

struct worker_pool *worker_pool_new(struct event_base *base, int threads);
/* Waits for running jobs and calls DONE for every finished one; drops jobs that never
 * started (their DONE is not called). */
void worker_pool_free(struct worker_pool **pool);

/* Queues JOB. Returns 0, or -1 when the queue is full (limit: 1024 jobs). The caller keeps
 * ownership of JOB; DONE is called exactly once when accepted. */
int worker_submit(struct worker_pool *pool, worker_fn work, worker_done_fn done, void *job);

#endif
