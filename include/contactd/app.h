/* app: the daemon's shared context, owned by main.c. Modules keep a pointer to it and read
 * the current config through it (SIGHUP swaps app->cfg). */
#ifndef CONTACTD_APP_H
#define CONTACTD_APP_H

#include <stdbool.h>
#include <time.h>

struct event_base;
struct config;
struct store;
struct worker_pool;
struct http_server;
struct chat;
struct routing;
struct sla;
struct outbound;
struct phone;
struct stream;
struct webhooks;
struct email;

struct app {
	struct event_base *base;
	struct config *cfg; /* current config; replaced whole on reload */
	struct store *store;
	struct worker_pool *workers;
	struct http_server *http;
	struct chat *chat;	   /* client listeners and sessions */
	struct routing *routing;   /* router + store + notifications */
	struct sla *sla;	   /* SLA timers */
	struct outbound *outbound; /* agent messages to customers, per channel */
	struct phone *phone;	   /* phone listeners and PBX sessions */
	struct stream *stream;	   /* GET /v1/stream (SSE) and events_log pruning */
	struct webhooks *webhooks; /* event POSTs to webhooks.urls */
	struct email *email;	   /* lmtp / smtp listeners */
	time_t started_at;
	bool draining;	      /* SIGTERM: stop accepting, finish in-flight work */
	bool migrating;	      /* start-up migrations running on a worker */
	int migrate_failures; /* consecutive failed migration attempts */
};

/* Ready = store reachable and its schema at this binary's version. */
bool app_ready(const struct app *app, const char **why_r);

#endif
