#include "contactd/worker.h"

#include "contactd/log.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <unistd.h>

#define WORKER_MAX_THREADS 16
#define WORKER_MAX_QUEUED  1024
/* Worker threads yield the CPU to the event loop (and to PostgreSQL on the same machine):
 * parsing a 25 MB mail takes a core for a second or more, which otherwise delays every
 * chat acknowledgement of that second on a small machine. */
#define WORKER_NICE 10

struct worker_job {
	worker_fn work;
	worker_done_fn done;
	void *arg;
	struct worker_job *next;
};

struct worker_pool {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	bool stopping;
	struct worker_job *todo_head, *todo_tail; /* guarded by mu */
	struct worker_job *done_head, *done_tail; /* guarded by mu */
	unsigned queued;			  /* todo + running + done, guarded by mu */
	int nthreads;
	pthread_t threads[WORKER_MAX_THREADS];
	int wake_fd[2]; /* workers write a byte to [1]; the loop reads [0] */
	struct event *wake_ev;
};

static void push(struct worker_job **head, struct worker_job **tail, struct worker_job *j)
{
	j->next = NULL;
	if (*tail)
		(*tail)->next = j;
	else
		*head = j;
	*tail = j;
}

static void *worker_main(void *p)
{
	struct worker_pool *pool = p;
	/* Linux: a thread's nice value is its own (setpriority on its thread id); elsewhere
	 * this would renice the whole process, so it is left alone there */
#ifdef __linux__
	if (setpriority(PRIO_PROCESS, (id_t)syscall(SYS_gettid), WORKER_NICE) < 0)
		log_warn("worker_nice_failed", "errno=%d", errno);
#endif
	pthread_mutex_lock(&pool->mu);
	for (;;) {
		while (!pool->stopping && !pool->todo_head)
			pthread_cond_wait(&pool->cv, &pool->mu);
		if (pool->stopping)
			break;
		struct worker_job *j = pool->todo_head;
		pool->todo_head = j->next;
		if (!pool->todo_head)
			pool->todo_tail = NULL;
		pthread_mutex_unlock(&pool->mu);
		j->work(j->arg);
		pthread_mutex_lock(&pool->mu);
		push(&pool->done_head, &pool->done_tail, j);
		char b = 1;
		ssize_t w = write(pool->wake_fd[1], &b, 1);
		(void)w; /* a full pipe already holds a wake-up */
	}
	pthread_mutex_unlock(&pool->mu);
	return NULL;
}

static void wake_cb(evutil_socket_t fd, short what, void *arg)
{
	struct worker_pool *pool = arg;
	char buf[256];
	while (read(fd, buf, sizeof(buf)) > 0)
		;
	pthread_mutex_lock(&pool->mu);
	struct worker_job *j = pool->done_head;
	pool->done_head = pool->done_tail = NULL;
	pthread_mutex_unlock(&pool->mu);
	while (j) {
		struct worker_job *next = j->next;
		j->done(j->arg);
		pthread_mutex_lock(&pool->mu);
		pool->queued--;
		pthread_mutex_unlock(&pool->mu);
		free(j);
		j = next;
	}
}

struct worker_pool *worker_pool_new(struct event_base *base, int threads)
{
	if (threads < 1)
		threads = 1;
	if (threads > WORKER_MAX_THREADS)
		threads = WORKER_MAX_THREADS;
	struct worker_pool *pool = calloc(1, sizeof(*pool));
	if (!pool)
		return NULL;
	pthread_mutex_init(&pool->mu, NULL);
	pthread_cond_init(&pool->cv, NULL);
	if (pipe2(pool->wake_fd, O_NONBLOCK | O_CLOEXEC) < 0) {
		free(pool);
		return NULL;
	}
	pool->wake_ev = event_new(base, pool->wake_fd[0], EV_READ | EV_PERSIST, wake_cb, pool);
	event_add(pool->wake_ev, NULL);
	for (int i = 0; i < threads; i++) {
		if (pthread_create(&pool->threads[i], NULL, worker_main, pool) != 0) {
			log_error("worker_start_failed", "errno=%d", errno);
			break;
		}
		pool->nthreads++;
	}
	return pool;
}

void worker_pool_free(struct worker_pool **poolp)
{
	struct worker_pool *pool = *poolp;
	if (!pool)
		return;
	*poolp = NULL;
	pthread_mutex_lock(&pool->mu);
	pool->stopping = true;
	pthread_cond_broadcast(&pool->cv);
	pthread_mutex_unlock(&pool->mu);
	for (int i = 0; i < pool->nthreads; i++)
		pthread_join(pool->threads[i], NULL);
	/* finished jobs still get their completion, so their owners are released */
	wake_cb(pool->wake_fd[0], EV_READ, pool);
	while (pool->todo_head) {
		struct worker_job *next = pool->todo_head->next;
		free(pool->todo_head);
		pool->todo_head = next;
	}
	event_free(pool->wake_ev);
	close(pool->wake_fd[0]);
	close(pool->wake_fd[1]);
	pthread_mutex_destroy(&pool->mu);
	pthread_cond_destroy(&pool->cv);
	free(pool);
}

int worker_submit(struct worker_pool *pool, worker_fn work, worker_done_fn done, void *arg)
{
	struct worker_job *j = malloc(sizeof(*j));
	if (!j)
		return -1;
	j->work = work;
	j->done = done;
	j->arg = arg;
	pthread_mutex_lock(&pool->mu);
	if (pool->queued >= WORKER_MAX_QUEUED || pool->stopping) {
		pthread_mutex_unlock(&pool->mu);
		free(j);
		return -1;
	}
	pool->queued++;
	push(&pool->todo_head, &pool->todo_tail, j);
	pthread_cond_signal(&pool->cv);
	pthread_mutex_unlock(&pool->mu);
	return 0;
}
