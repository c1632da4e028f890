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

/* SIGHUP: applies NEW_CFG (listener addresses, TLS files, limits). Everything is prepared
 * first; on any error nothing changes and -1 is returned with *error_r (malloc'd). */
int http_server_reload(struct http_server *srv, const struct config *new_cfg, char **error_r);

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
