/* listener: evconnlistener + bufferevent (plain or openssl) per accepted socket, and the
 * global connection limit. See include/contactd/listener.h. */
#include "contactd/listener.h"

#include "contactd/config.h"
#include "contactd/log.h"
#include "contactd/tls.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/util.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

#define LISTENER_BACKLOG	   1024
#define LISTENER_RETRY_S	   1  /* pause after an accept() error such as EMFILE */
#define LISTENER_MAX_TLS_REFUSALS  64 /* TLS handshakes in flight only to say "unavailable" */
#define LISTENER_REFUSAL_TIMEOUT_S 5

struct listener {
	struct event_base *base;
	struct evconnlistener *lev;
	struct event *ev_retry; /* re-enables accepting after an accept() error */
	SSL_CTX *tls_ctx;	/* our reference, NULL for plain */
	listener_accept_cb cb;
	void *arg;
	bool disabled; /* listener_disable(): never re-enable */
	int port;
	char *name, *addr;
	struct listener_stats stats;
};

static long max_conns;	      /* <= 0: no limit */
static long open_conns;	      /* accepted, not yet reported closed */
static unsigned tls_refusals; /* refusal bufferevents alive */
static time_t refusal_logged_at;
static unsigned long long refusals_unlogged;

static const char refusal_line[] =
    "{\"type\":\"error\",\"code\":\"unavailable\",\"message\":\"too many connections\"}\n";

static char *errorf(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *errorf(const char *fmt, ...)
{
	char buf[512];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	return strdup(buf);
}

/* A new SSL for an accepted socket. OpenSSL 3 reports a peer that closes without
 * close_notify as an error that libevent 2.1 does not take for a (dirty) EOF; NDJSON lines
 * end in "\n", so a truncated stream only loses a partial line, which is dropped anyway. */
static SSL *ssl_new(SSL_CTX *ctx)
{
	SSL *ssl = SSL_new(ctx);
#ifdef SSL_OP_IGNORE_UNEXPECTED_EOF
	if (ssl)
		SSL_set_options(ssl, SSL_OP_IGNORE_UNEXPECTED_EOF);
#endif
	return ssl;
}

static void format_peer(const struct sockaddr *sa, int salen, char *buf, size_t bufsz)
{
	char ip[INET6_ADDRSTRLEN] = "?";
	if (sa->sa_family == AF_INET && (size_t)salen >= sizeof(struct sockaddr_in)) {
		struct sockaddr_in in;
		memcpy(&in, sa, sizeof(in));
		evutil_inet_ntop(AF_INET, &in.sin_addr, ip, sizeof(ip));
		snprintf(buf, bufsz, "%s:%u", ip, (unsigned)ntohs(in.sin_port));
	} else if (sa->sa_family == AF_INET6 && (size_t)salen >= sizeof(struct sockaddr_in6)) {
		struct sockaddr_in6 in6;
		memcpy(&in6, sa, sizeof(in6));
		evutil_inet_ntop(AF_INET6, &in6.sin6_addr, ip, sizeof(ip));
		snprintf(buf, bufsz, "[%s]:%u", ip, (unsigned)ntohs(in6.sin6_port));
	} else {
		snprintf(buf, bufsz, "unknown");
	}
}

/* ---- refusals over the connection limit --------------------------------------------------- */

static void log_refusal(const struct listener *l, const char *peer)
{
	time_t now = time(NULL);
	if (now == refusal_logged_at) {
		refusals_unlogged++;
		return;
	}
	log_warn("conn_refused",
		 "listener=%s peer=%s reason=too_many_connections max=%ld open=%ld "
		 "suppressed=%llu",
		 l->name, peer, max_conns, open_conns, refusals_unlogged);
	refusal_logged_at = now;
	refusals_unlogged = 0;
}

static void refusal_free_cb(evutil_socket_t fd, short what, void *arg)
{
	bufferevent_free(arg);
	tls_refusals--;
}

/* Done with a TLS refusal: free it from a fresh loop callback, not from its own. */
static void refusal_done(struct bufferevent *bev)
{
	static const struct timeval now = {0, 0};
	while (bufferevent_get_openssl_error(bev))
		;
	ERR_clear_error();
	bufferevent_setcb(bev, NULL, NULL, NULL, NULL);
	bufferevent_disable(bev, EV_READ | EV_WRITE);
	if (event_base_once(bufferevent_get_base(bev), -1, EV_TIMEOUT, refusal_free_cb, bev, &now) <
	    0)
		refusal_free_cb(-1, 0, bev); /* out of memory: no callback of it is running now */
}

static void refusal_write_cb(struct bufferevent *bev, void *arg)
{
	if (evbuffer_get_length(bufferevent_get_output(bev)) == 0)
		refusal_done(bev);
}

static void refusal_event_cb(struct bufferevent *bev, short what, void *arg)
{
	if (what & BEV_EVENT_CONNECTED)
		return;
	refusal_done(bev); /* error, EOF or timeout */
}

/* Answers FD (over the limit) with the refusal line and closes it. On TLS listeners that
 * takes a handshake: done while few are in flight, otherwise the socket is just closed. */
static void refuse(struct listener *l, evutil_socket_t fd, const char *peer)
{
	l->stats.refused++;
	log_refusal(l, peer);
	if (!l->tls_ctx) {
		/* best effort: one non-blocking send; read what the peer already sent so that
		 * close() sends FIN rather than RST, which could discard our line */
		char discard[4096];
		ssize_t r =
		    send(fd, refusal_line, sizeof(refusal_line) - 1, MSG_NOSIGNAL | MSG_DONTWAIT);
		(void)r;
		r = recv(fd, discard, sizeof(discard), MSG_DONTWAIT);
		(void)r;
		evutil_closesocket(fd);
		return;
	}
	if (tls_refusals >= LISTENER_MAX_TLS_REFUSALS) {
		evutil_closesocket(fd);
		return;
	}
	SSL *ssl = ssl_new(l->tls_ctx);
	struct bufferevent *bev =
	    ssl ? bufferevent_openssl_socket_new(l->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
						 BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS)
		: NULL;
	if (!bev) {
		/* out of memory (see accept_cb on what libevent frees then) */
		tls_log_errors("listener_refusal_failed");
		evutil_closesocket(fd);
		return;
	}
	tls_refusals++;
	bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	struct timeval tmo = {LISTENER_REFUSAL_TIMEOUT_S, 0};
	bufferevent_set_timeouts(bev, &tmo, &tmo);
	bufferevent_setcb(bev, NULL, refusal_write_cb, refusal_event_cb, NULL);
	bufferevent_write(bev, refusal_line, sizeof(refusal_line) - 1);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
}

/* ---- accepting ---------------------------------------------------------------------------- */

static void accept_cb(struct evconnlistener *lev, evutil_socket_t fd, struct sockaddr *sa,
		      int salen, void *arg)
{
	struct listener *l = arg;
	char peer[80];
	format_peer(sa, salen, peer, sizeof(peer));
	if (max_conns > 0 && open_conns >= max_conns) {
		refuse(l, fd, peer);
		return;
	}
	int one = 1;
	if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) < 0)
		log_debug("tcp_nodelay_failed", "listener=%s peer=%s errno=%d", l->name, peer,
			  errno);

	const int opts = BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS;
	struct bufferevent *bev;
	if (l->tls_ctx) {
		SSL *ssl = ssl_new(l->tls_ctx);
		if (!ssl) {
			tls_log_errors("listener_tls_new_failed");
			log_error("accept_dropped", "listener=%s peer=%s reason=ssl_new", l->name,
				  peer);
			evutil_closesocket(fd);
			return;
		}
		/* on failure (out of memory) libevent may or may not have freed the SSL; we
		 * close the socket and accept leaking the SSL rather than risk a double free */
		bev = bufferevent_openssl_socket_new(l->base, fd, ssl, BUFFEREVENT_SSL_ACCEPTING,
						     opts);
		if (bev)
			bufferevent_openssl_set_allow_dirty_shutdown(bev, 1);
	} else {
		bev = bufferevent_socket_new(l->base, fd, opts);
	}
	if (!bev) {
		log_error("accept_dropped", "listener=%s peer=%s reason=bufferevent", l->name,
			  peer);
		evutil_closesocket(fd);
		return;
	}
	open_conns++;
	l->stats.accepted++;
	l->cb(bev, peer, l->arg);
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
	struct listener *l = arg;
	if (!l->disabled)
		evconnlistener_enable(l->lev);
}

static void error_cb(struct evconnlistener *lev, void *arg)
{
	struct listener *l = arg;
	int err = EVUTIL_SOCKET_ERROR();
	char q[160];
	l->stats.accept_errors++;
	log_warn("accept_failed", "listener=%s addr=%s error=%s retry_in_s=%d", l->name, l->addr,
		 log_quote(q, sizeof(q), evutil_socket_error_to_string(err)), LISTENER_RETRY_S);
	/* EMFILE, ENFILE, ENOBUFS...: the socket stays readable, so waiting is the only way
	 * not to spin */
	evconnlistener_disable(lev);
	struct timeval tv = {LISTENER_RETRY_S, 0};
	evtimer_add(l->ev_retry, &tv);
}

/* ---- life cycle --------------------------------------------------------------------------- */

static int bound_port(struct evconnlistener *lev)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	if (getsockname(evconnlistener_get_fd(lev), (struct sockaddr *)&ss, &len) < 0)
		return -1;
	if (ss.ss_family == AF_INET)
		return ntohs(((struct sockaddr_in *)&ss)->sin_port);
	if (ss.ss_family == AF_INET6)
		return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
	return -1;
}

struct listener *listener_new(struct event_base *base, const char *name, const char *addr,
			      SSL_CTX *tls_ctx, listener_accept_cb cb, void *arg, char **error_r)
{
	char host[256], portstr[8];
	int port;
	if (config_parse_address(addr, host, sizeof(host), &port) < 0) {
		*error_r = errorf("listen.%s: bad address %s", name, addr);
		return NULL;
	}
	snprintf(portstr, sizeof(portstr), "%d", port);

	struct listener *l = calloc(1, sizeof(*l));
	if (!l) {
		*error_r = errorf("listen.%s: out of memory", name);
		return NULL;
	}
	l->base = base;
	l->cb = cb;
	l->arg = arg;
	l->port = -1;
	l->name = strdup(name);
	l->addr = strdup(addr);
	l->ev_retry = evtimer_new(base, retry_cb, l);
	if (!l->name || !l->addr || !l->ev_retry) {
		*error_r = errorf("listen.%s: out of memory", name);
		goto fail;
	}

	struct evutil_addrinfo hints, *res = NULL;
	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_protocol = IPPROTO_TCP;
	hints.ai_flags = EVUTIL_AI_PASSIVE | EVUTIL_AI_NUMERICSERV;
	int gai = evutil_getaddrinfo(host, portstr, &hints, &res);
	if (gai != 0) {
		*error_r = errorf("listen.%s: cannot resolve %s: %s", name, addr,
				  evutil_gai_strerror(gai));
		goto fail;
	}
	int err = 0;
	const unsigned flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC | LEV_OPT_REUSEABLE;
	for (struct evutil_addrinfo *ai = res; ai && !l->lev; ai = ai->ai_next) {
		l->lev = evconnlistener_new_bind(base, accept_cb, l, flags, LISTENER_BACKLOG,
						 ai->ai_addr, (int)ai->ai_addrlen);
		if (!l->lev)
			err = EVUTIL_SOCKET_ERROR();
	}
	evutil_freeaddrinfo(res);
	if (!l->lev) {
		*error_r = errorf("listen.%s: cannot bind %s: %s (in use, or not a local address?)",
				  name, addr, evutil_socket_error_to_string(err));
		goto fail;
	}
	evconnlistener_set_error_cb(l->lev, error_cb);
	l->port = bound_port(l->lev);
	listener_set_tls_ctx(l, tls_ctx);
	log_info("listening", "listener=%s addr=%s tls=%s", name, addr, tls_ctx ? "yes" : "no");
	return l;
fail:
	listener_free(&l);
	return NULL;
}

void listener_free(struct listener **lp)
{
	struct listener *l = *lp;
	if (!l)
		return;
	*lp = NULL;
	if (l->lev)
		evconnlistener_free(l->lev);
	if (l->ev_retry)
		event_free(l->ev_retry);
	if (l->tls_ctx)
		SSL_CTX_free(l->tls_ctx);
	free(l->name);
	free(l->addr);
	free(l);
}

void listener_set_tls_ctx(struct listener *l, SSL_CTX *ctx)
{
	if (ctx)
		SSL_CTX_up_ref(ctx);
	if (l->tls_ctx)
		SSL_CTX_free(l->tls_ctx); /* live connections hold their own reference */
	l->tls_ctx = ctx;
}

void listener_disable(struct listener *l)
{
	l->disabled = true;
	evtimer_del(l->ev_retry);
	evconnlistener_disable(l->lev);
}

const char *listener_name(const struct listener *l)
{
	return l->name;
}

const char *listener_addr(const struct listener *l)
{
	return l->addr;
}

int listener_port(const struct listener *l)
{
	return l->port;
}

bool listener_is_tls(const struct listener *l)
{
	return l->tls_ctx != NULL;
}

void listener_get_stats(const struct listener *l, struct listener_stats *st)
{
	*st = l->stats;
}

/* ---- the global limit --------------------------------------------------------------------- */

void listener_set_max_connections(long n)
{
	max_conns = n;
}

void listener_conn_closed(void)
{
	if (open_conns > 0)
		open_conns--;
}

long listener_conn_count(void)
{
	return open_conns;
}
