/* http: the HTTP/1.1 listeners (plain and TLS) with health, metrics and the JSON API. */
#ifndef CONTACTD_HTTP_H
#define CONTACTD_HTTP_H

#include <stdbool.h>

struct app;
struct config;
struct http_server;

/* Binds the http and https listeners of APP->cfg. Returns NULL with *error_r (malloc'd)
 * when a listener cannot be bound or its TLS context cannot be built. */
struct http_server *http_server_new(struct app *app, char **error_r);
void http_server_free(struct http_server **srv);

/* SIGHUP, in two steps so that several modules change together or not at all: prepare
 * builds the new TLS context and binds new addresses (NEW_CFG must outlive the commit or
 * abort); it returns NULL with *error_r (malloc'd) and nothing changed. Commit swaps them in
 * (it cannot fail); abort drops them. Either frees the reload. */
struct http_reload;
struct http_reload *http_server_reload_prepare(struct http_server *srv,
					       const struct config *new_cfg, char **error_r);
void http_server_reload_commit(struct http_server *srv, struct http_reload *rl);
void http_server_reload_abort(struct http_server *srv, struct http_reload *rl);

/* Stops accepting new connections (drain). */
void http_server_stop_accepting(struct http_server *srv);

/* Requests that are waiting on the store or a worker. */
unsigned http_server_in_flight(const struct http_server *srv);

struct http_stats {
	unsigned long long accepted_plain, accepted_tls;
	unsigned long long requests;
	unsigned long long responses_by_class[6]; /* index 1..5 = 1xx..5xx */
};
void http_server_get_stats(const struct http_server *srv, struct http_stats *st);

#endif
