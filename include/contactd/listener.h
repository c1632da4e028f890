/* listener: a TCP listener for one address, plain or TLS, that turns every accepted socket
 * into a bufferevent (an openssl one on TLS listeners) and hands it to its owner. It also
 * keeps the global connection limit (limits.max_connections) over every listener. */
#ifndef CONTACTD_LISTENER_H
#define CONTACTD_LISTENER_H

#include <stdbool.h>

struct bufferevent;
struct event_base;
struct listener;
typedef struct ssl_ctx_st SSL_CTX;

/* Called from the loop for each accepted connection. The callee owns BEV (made with
 * BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS; on TLS listeners the handshake is under
 * way and dirty shutdowns are allowed), e.g. passes it to ndjson_conn_new(). The connection
 * counts towards the global limit until listener_conn_closed() is called for it, exactly
 * once, also when the callee drops BEV at once. PEER is "a.b.c.d:port" or "[v6]:port",
 * valid during the call. */
typedef void (*listener_accept_cb)(struct bufferevent *bev, const char *peer, void *arg);

/* Binds ADDR ("host:port", "[v6]:port") and starts accepting. NAME ("client", "client_tls",
 * "phone", "phone_tls") is for logs and errors. TLS_CTX NULL makes a plain listener;
 * otherwise the listener takes its own reference (SSL_CTX_up_ref), the caller keeps its.
 * Returns NULL with *error_r (malloc'd, caller frees) when ADDR is bad or cannot be bound. */
struct listener *listener_new(struct event_base *base, const char *name, const char *addr,
			      SSL_CTX *tls_ctx, listener_accept_cb cb, void *arg, char **error_r);
/* Closes the listening socket; accepted connections are not affected. L may be NULL. */
void listener_free(struct listener **l);

/* Swaps the TLS context used for new connections (SIGHUP certificate reload); existing
 * connections keep theirs. Takes a reference to CTX and drops the old one. NULL makes the
 * listener plain. */
void listener_set_tls_ctx(struct listener *l, SSL_CTX *ctx);

/* Stops accepting for good (drain); the socket stays bound until listener_free(). */
void listener_disable(struct listener *l);

const char *listener_name(const struct listener *l);
const char *listener_addr(const struct listener *l); /* as given to listener_new() */
int listener_port(const struct listener *l);	     /* the bound port, -1 if unknown */
bool listener_is_tls(const struct listener *l);

/* The global limit over every listener: beyond N open connections, new ones are answered
 * with a one-line NDJSON error "unavailable" (best effort; on TLS listeners only while few
 * such refusals are in flight) and closed. N <= 0: no limit (the default). */
void listener_set_max_connections(long n);
/* One accepted connection ended (see listener_accept_cb). */
void listener_conn_closed(void);
/* Accepted connections not yet reported closed. */
long listener_conn_count(void);

struct listener_stats {
	unsigned long long accepted;	  /* handed to the accept callback */
	unsigned long long refused;	  /* over the connection limit */
	unsigned long long accept_errors; /* accept() failures (EMFILE...) */
};
void listener_get_stats(const struct listener *l, struct listener_stats *st);

#endif
