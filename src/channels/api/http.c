#include "contactd/http.h"

#include "api_internal.h"
#include "conversations.h"
#include "events.h"
#include "contactd/app.h"
#include "contactd/config.h"
#include "contactd/log.h"
#include "contactd/metrics.h"
#include "contactd/secret.h"
#include "contactd/store.h"
#include "contactd/stream.h"
#include "contactd/tls.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/http.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <strings.h>
#include <sys/queue.h>

#define HTTP_MAX_HEADERS_BYTES 16384
#define HTTP_MAX_PATH	       2048

enum { L_PLAIN, L_TLS, L_COUNT };

struct http_listener {
	struct http_server *srv;
	bool tls;
	struct evhttp *http;
	struct evhttp_bound_socket *bound;
	char *addr; /* what it is bound to, "" when off */
};

/* Tokens looked up lately, so that a busy integrator's every request does not cost a store
 * round trip. An entry lives TOKEN_CACHE_TTL_MS; an api-tokens write through this process
 * empties the cache (another node's revocation takes effect within the TTL). One lookup per
 * token at a time: requests that find it under way wait for its answer (at expiry, every
 * connection of a busy integrator would otherwise send its own), and an entry in its last
 * TOKEN_REFRESH_MS is looked up again in the background while it still answers. */
#define TOKEN_CACHE_SIZE   64
#define TOKEN_CACHE_TTL_MS 5000
#define TOKEN_REFRESH_MS   1000

struct token_entry {
	char hash[SECRET_SHA256_HEXLEN + 1];
	json_t *token; /* {id, name, scopes}; NULL: empty slot */
	int64_t expires_ms;
	bool looking_up;	 /* a lookup of HASH is under way */
	struct api_req *waiters; /* requests for HASH waiting for it (linked by next_waiter) */
};

struct http_server {
	struct app *app;
	struct http_listener l[L_COUNT];
	SSL_CTX *tls_ctx;
	unsigned in_flight;
	struct http_stats stats;
	struct token_entry tokens[TOKEN_CACHE_SIZE];
	unsigned token_gen; /* bumped by api_token_cache_clear: older lookups are not cached */
};

/* ---- replies ---------------------------------------------------------------------------- */

static void api_req_free(struct api_req *r)
{
	r->srv->in_flight--;
	if (r->data_free)
		r->data_free(r->data);
	json_decref(r->token);
	evhttp_clear_headers(&r->query);
	free(r->pathbuf);
	free(r);
}

/* GET /v1/stream took R->req over (stream.c): its 200 is counted here. */
void api_req_detach(struct api_req *r)
{
	r->srv->stats.responses_by_class[2]++;
	api_req_free(r);
}

static void send_and_free(struct api_req *r, int status, struct evbuffer *buf)
{
	struct evkeyvalq *h = evhttp_request_get_output_headers(r->req);
	if (!evhttp_find_header(h, "Content-Type"))
		evhttp_add_header(h, "Content-Type", "application/json");
	evhttp_add_header(h, "Cache-Control", "no-store");
	if (status / 100 >= 1 && status / 100 <= 5)
		r->srv->stats.responses_by_class[status / 100]++;
	evhttp_send_reply(r->req, status, NULL, buf);
	api_req_free(r);
}

void api_reply_text(struct api_req *r, int status, const char *text)
{
	struct evbuffer *buf = evbuffer_new();
	if (text) {
		evbuffer_add(buf, text, strlen(text));
		evbuffer_add(buf, "\n", 1);
	}
	send_and_free(r, status, buf);
	evbuffer_free(buf);
}

void api_reply_json(struct api_req *r, int status, json_t *body)
{
	char *text = body ? json_dumps(body, JSON_COMPACT) : NULL;
	json_decref(body);
	api_reply_text(r, status, text);
	free(text);
}

void api_reply_error(struct api_req *r, int status, const char *code, const char *message,
		     const char *field)
{
	json_t *err = json_pack("{s:s, s:s}", "code", code, "message", message ? message : code);
	if (field && *field)
		json_object_set_new(err, "field", json_string(field));
	api_reply_json(r, status, json_pack("{s:o}", "error", err));
}

void api_reply_unavailable(struct api_req *r)
{
	evhttp_add_header(evhttp_request_get_output_headers(r->req), "Retry-After", "1");
	api_reply_error(r, 503, "unavailable",
			"the store cannot take requests now; retry later (nothing was recorded)",
			NULL);
}

void api_reply_store_error(struct api_req *r, const struct store_reply *rep)
{
	switch (rep->status) {
	case STORE_NOT_FOUND:
		api_reply_error(r, 404, "not_found", rep->message, rep->field);
		break;
	case STORE_CONFLICT:
		api_reply_error(r, 409, "conflict", rep->message, rep->field);
		break;
	case STORE_INVALID:
		api_reply_error(r, 400, "invalid", rep->message, rep->field);
		break;
	case STORE_FORBIDDEN:
		api_reply_error(r, 403, "forbidden", rep->message, NULL);
		break;
	case STORE_UNAVAILABLE:
		api_reply_unavailable(r);
		break;
	default:
		api_reply_error(r, 500, "internal", "internal error (logged)", NULL);
		break;
	}
}

json_t *api_read_object(struct api_req *r)
{
	struct evbuffer *in = evhttp_request_get_input_buffer(r->req);
	size_t len = evbuffer_get_length(in);
	if (len == 0) {
		api_reply_error(r, 400, "invalid", "body: a JSON object is required", "body");
		return NULL;
	}
	const char *data = (const char *)evbuffer_pullup(in, -1);
	json_error_t jerr;
	json_t *v = json_loadb(data, len, JSON_REJECT_DUPLICATES, &jerr);
	if (!v) {
		char msg[256];
		snprintf(msg, sizeof(msg), "body: invalid JSON at line %d column %d: %s", jerr.line,
			 jerr.column, jerr.text);
		api_reply_error(r, 400, "invalid", msg, "body");
		return NULL;
	}
	if (!json_is_object(v)) {
		json_decref(v);
		api_reply_error(r, 400, "invalid", "body: must be a JSON object", "body");
		return NULL;
	}
	return v;
}

const char *api_query(struct api_req *r, const char *name)
{
	return evhttp_find_header(&r->query, name);
}

/* ---- health and metrics ---------------------------------------------------------------- */

static void handle_healthz(struct api_req *r)
{
	api_reply_json(r, 200, json_pack("{s:s}", "status", "ok"));
}

static void handle_readyz(struct api_req *r)
{
	const char *why = NULL;
	if (app_ready(r->app, &why)) {
		api_reply_json(r, 200, json_pack("{s:s}", "status", "ready"));
		return;
	}
	evhttp_add_header(evhttp_request_get_output_headers(r->req), "Retry-After", "1");
	api_reply_json(r, 503, json_pack("{s:s, s:s}", "status", "not_ready", "reason", why));
}

static void handle_metrics(struct api_req *r)
{
	struct evbuffer *buf = evbuffer_new();
	metrics_render(r->app, buf);
	evhttp_add_header(evhttp_request_get_output_headers(r->req), "Content-Type",
			  "text/plain; version=0.0.4; charset=utf-8");
	send_and_free(r, 200, buf);
	evbuffer_free(buf);
}

/* ---- authentication ---------------------------------------------------------------------- */

static bool token_has_scope(json_t *token, const char *scope)
{
	size_t i;
	json_t *v;
	json_array_foreach(json_object_get(token, "scopes"), i, v)
	{
		const char *s = json_string_value(v);
		if (s && (strcmp(s, scope) == 0 || strcmp(s, "admin") == 0))
			return true;
	}
	return false;
}

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

/* The slot of HASH (hex SHA-256: its last 8 digits are as good as any). */
static struct token_entry *token_slot(struct http_server *srv, const char *hash)
{
	unsigned long v = strtoul(hash + SECRET_SHA256_HEXLEN - 8, NULL, 16);
	return &srv->tokens[v % TOKEN_CACHE_SIZE];
}

void api_token_cache_clear(struct http_server *srv)
{
	srv->token_gen++;
	for (size_t i = 0; i < TOKEN_CACHE_SIZE; i++) {
		json_decref(srv->tokens[i].token);
		srv->tokens[i].token = NULL;
	}
}

/* Scope check, then the handler. R->token is set. */
static void authorized(struct api_req *r)
{
	if (!token_has_scope(r->token, r->scope)) {
		char msg[128];
		snprintf(msg, sizeof(msg), "this token lacks the %s scope", r->scope);
		api_reply_error(r, 403, "forbidden", msg, NULL);
		return;
	}
	r->handler(r);
}

/* One lookup of a token: its answer goes to the cache (unless the cache was cleared since)
 * and to the requests waiting for it; or, for a request whose slot is busy with another
 * token's lookup, to that request ALONE only. */
struct token_lookup {
	struct http_server *srv;
	char hash[SECRET_SHA256_HEXLEN + 1];
	unsigned gen;
	struct api_req *alone;
};

static void token_cb(void *arg, const struct store_reply *rep)
{
	struct token_lookup *lk = arg;
	struct http_server *srv = lk->srv;
	struct token_entry *e = token_slot(srv, lk->hash);
	struct api_req *w = lk->alone;
	if (!lk->alone && e->looking_up && strcmp(e->hash, lk->hash) == 0) {
		w = e->waiters;
		e->looking_up = false;
		e->waiters = NULL;
		if (rep->status == STORE_OK) {
			json_decref(e->token);
			e->token = NULL;
		}
	} else {
		e = NULL; /* not the slot's lookup: nothing is cached */
	}
	json_t *tok =
	    rep->status == STORE_OK && rep->value ? json_loads(rep->value, 0, NULL) : NULL;
	if (e && json_is_object(tok) && lk->gen == srv->token_gen) {
		e->token = json_incref(tok);
		e->expires_ms = mono_ms() + TOKEN_CACHE_TTL_MS;
	}
	while (w) {
		struct api_req *r = w;
		w = r->next_waiter;
		r->next_waiter = NULL;
		if (rep->status != STORE_OK) {
			api_reply_store_error(r, rep);
		} else if (!json_is_object(tok)) {
			api_reply_error(r, 401, "unauthorized", "unknown or revoked API token",
					NULL);
		} else {
			r->token = json_incref(tok);
			authorized(r);
		}
	}
	json_decref(tok);
	free(lk);
}

/* Looks up HASH: for the cache slot E (the slot's lookup, ALONE NULL) or for ALONE only.
 * Returns -1 when the store cannot take it (nothing changed). */
static int token_lookup_start(struct http_server *srv, struct token_entry *e, const char *hash,
			      struct api_req *alone)
{
	struct token_lookup *lk = malloc(sizeof(*lk));
	if (!lk)
		return -1;
	lk->srv = srv;
	memcpy(lk->hash, hash, sizeof(lk->hash));
	lk->gen = srv->token_gen;
	lk->alone = alone;
	const char *params[1] = {lk->hash};
	if (store_call(srv->app->store, STORE_Q_TOKEN_LOOKUP, 1, params, token_cb, lk) < 0) {
		free(lk);
		return -1;
	}
	if (alone) {
		alone->next_waiter = NULL;
		return 0;
	}
	if (strcmp(e->hash, hash) != 0) {
		/* the slot goes to this token: another one's entry is forgotten */
		json_decref(e->token);
		e->token = NULL;
		memcpy(e->hash, hash, sizeof(e->hash));
	}
	e->looking_up = true;
	return 0;
}

static void authenticate(struct api_req *r)
{
	const char *h =
	    evhttp_find_header(evhttp_request_get_input_headers(r->req), "Authorization");
	if (!h || strncasecmp(h, "Bearer ", 7) != 0) {
		evhttp_add_header(evhttp_request_get_output_headers(r->req), "WWW-Authenticate",
				  "Bearer");
		api_reply_error(r, 401, "unauthorized",
				"an Authorization: Bearer token is required", NULL);
		return;
	}
	const char *tok = h + 7;
	while (*tok == ' ')
		tok++;
	size_t len = strlen(tok);
	if (len == 0 || len > 256) {
		api_reply_error(r, 401, "unauthorized", "unknown or revoked API token", NULL);
		return;
	}
	secret_sha256_hex(tok, len, r->token_hash);
	struct http_server *srv = r->srv;
	struct token_entry *e = token_slot(srv, r->token_hash);
	bool same = strcmp(e->hash, r->token_hash) == 0;
	int64_t now = mono_ms();
	if (same && e->token && now < e->expires_ms) {
		/* near its end: looked up again meanwhile, so that nobody waits at expiry */
		if (!e->looking_up && e->expires_ms - now <= TOKEN_REFRESH_MS)
			(void)token_lookup_start(srv, e, r->token_hash, NULL);
		r->token = json_incref(e->token);
		authorized(r);
		return;
	}
	if (same && e->looking_up) {
		r->next_waiter = e->waiters;
		e->waiters = r;
		return;
	}
	if (e->looking_up) {
		/* the slot is busy with another token's lookup */
		if (token_lookup_start(srv, e, r->token_hash, r) < 0)
			api_reply_unavailable(r);
		return;
	}
	if (token_lookup_start(srv, e, r->token_hash, NULL) < 0) {
		api_reply_unavailable(r);
		return;
	}
	r->next_waiter = NULL;
	e->waiters = r;
}

/* ---- dispatch ---------------------------------------------------------------------------- */

static int split_path(struct api_req *r)
{
	char *p = r->pathbuf;
	r->nsegs = 0;
	while (*p) {
		while (*p == '/')
			p++;
		if (!*p)
			break;
		if (r->nsegs == API_MAX_SEGS)
			return -1;
		r->segs[r->nsegs++] = p;
		while (*p && *p != '/')
			p++;
		if (*p)
			*p++ = '\0';
	}
	return 0;
}

static bool is_method(struct api_req *r, enum evhttp_cmd_type m)
{
	return r->method == m || (m == EVHTTP_REQ_GET && r->method == EVHTTP_REQ_HEAD);
}

static void on_request(struct evhttp_request *req, void *arg)
{
	struct http_listener *l = arg;
	struct http_server *srv = l->srv;
	srv->stats.requests++;
	struct api_req *r = calloc(1, sizeof(*r));
	if (!r) {
		evhttp_send_error(req, 500, NULL);
		return;
	}
	r->srv = srv;
	r->app = srv->app;
	r->req = req;
	r->method = evhttp_request_get_command(req);
	TAILQ_INIT(&r->query);
	srv->in_flight++;

	const struct evhttp_uri *uri = evhttp_request_get_evhttp_uri(req);
	const char *path = uri ? evhttp_uri_get_path(uri) : NULL;
	const char *qs = uri ? evhttp_uri_get_query(uri) : NULL;
	if (!path || strlen(path) > HTTP_MAX_PATH) {
		api_reply_error(r, 400, "invalid", "bad request path", NULL);
		return;
	}
	r->pathbuf = evhttp_uridecode(path, 0, NULL);
	if (!r->pathbuf || split_path(r) < 0) {
		api_reply_error(r, 404, "not_found", "no such resource", NULL);
		return;
	}
	long max_body = r->app->cfg->max_http_body_bytes;
	if ((long)evbuffer_get_length(evhttp_request_get_input_buffer(req)) > max_body) {
		char msg[96];
		snprintf(msg, sizeof(msg), "body: larger than the limit of %ld bytes", max_body);
		api_reply_error(r, 413, "too_large", msg, "body");
		return;
	}
	if (qs && evhttp_parse_query_str(qs, &r->query) < 0) {
		api_reply_error(r, 400, "invalid", "malformed query string", NULL);
		return;
	}

	if (r->nsegs == 1 &&
	    (strcmp(r->segs[0], "healthz") == 0 || strcmp(r->segs[0], "readyz") == 0 ||
	     strcmp(r->segs[0], "metrics") == 0)) {
		if (!is_method(r, EVHTTP_REQ_GET)) {
			evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET");
			api_reply_error(r, 405, "method_not_allowed", "use GET", NULL);
			return;
		}
		if (r->segs[0][0] == 'h')
			handle_healthz(r);
		else if (r->segs[0][0] == 'r')
			handle_readyz(r);
		else
			handle_metrics(r);
		return;
	}
	if (r->nsegs >= 2 && r->nsegs <= 3 && strcmp(r->segs[0], "v1") == 0 &&
	    admin_is_kind(r->segs[1])) {
		r->scope = "admin";
		r->handler = admin_handle;
		authenticate(r);
		return;
	}
	if (r->nsegs == 2 && strcmp(r->segs[0], "v1") == 0 && strcmp(r->segs[1], "stream") == 0) {
		if (r->method != EVHTTP_REQ_GET) {
			evhttp_add_header(evhttp_request_get_output_headers(req), "Allow", "GET");
			api_reply_error(r, 405, "method_not_allowed", "use GET", NULL);
			return;
		}
		r->scope = "conversations:read";
		r->handler = stream_http_handle;
		authenticate(r);
		return;
	}
	switch (conv_api_claim(r)) {
	case CONV_API_AUTHENTICATE:
		authenticate(r);
		return;
	case CONV_API_ANSWERED:
		return;
	case CONV_API_NOT_MINE:
		break;
	}
	switch (events_api_claim(r)) {
	case EVENTS_API_AUTHENTICATE:
		authenticate(r);
		return;
	case EVENTS_API_ANSWERED:
		return;
	case EVENTS_API_NOT_MINE:
		break;
	}
	api_reply_error(r, 404, "not_found", "no such resource", NULL);
}

/* ---- listeners --------------------------------------------------------------------------- */

static struct bufferevent *bev_plain(struct event_base *base, void *arg)
{
	struct http_listener *l = arg;
	l->srv->stats.accepted_plain++;
	return bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
}

static struct bufferevent *bev_tls(struct event_base *base, void *arg)
{
	struct http_listener *l = arg;
	l->srv->stats.accepted_tls++;
	SSL *ssl = SSL_new(l->srv->tls_ctx);
	if (!ssl) {
		tls_log_errors("http_tls_new_failed");
		return NULL;
	}
	return bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_ACCEPTING,
					      BEV_OPT_CLOSE_ON_FREE);
}

static void apply_limits(struct evhttp *http, const struct config *cfg)
{
	evhttp_set_max_headers_size(http, HTTP_MAX_HEADERS_BYTES);
	/* evhttp answers bodies over its limit itself, with an HTML page: give it twice ours so
	 * that most oversized bodies get our JSON 413 (on_request), and memory stays bounded */
	evhttp_set_max_body_size(http, 2 * cfg->max_http_body_bytes);
	evhttp_set_timeout(http, (int)cfg->http_timeout_s);
	evhttp_set_allowed_methods(http, EVHTTP_REQ_GET | EVHTTP_REQ_HEAD | EVHTTP_REQ_POST |
					     EVHTTP_REQ_PUT | EVHTTP_REQ_DELETE);
	evhttp_set_default_content_type(http, "application/json");
}

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

/* Binds ADDR; returns the bound socket or NULL with *error_r. */
static struct evhttp_bound_socket *bind_addr(struct evhttp *http, const char *name,
					     const char *addr, char **error_r)
{
	char host[256];
	int port;
	if (config_parse_address(addr, host, sizeof(host), &port) < 0) {
		*error_r = errorf("listen.%s: bad address %s", name, addr);
		return NULL;
	}
	struct evhttp_bound_socket *b =
	    evhttp_bind_socket_with_handle(http, host, (ev_uint16_t)port);
	if (!b)
		*error_r = errorf("listen.%s: cannot bind %s (in use, or not a local address?)",
				  name, addr);
	return b;
}

static const char *listener_name(int i)
{
	return i == L_TLS ? "https" : "http";
}

static const char *cfg_addr(const struct config *cfg, int i)
{
	return i == L_TLS ? cfg->listen_https : cfg->listen_http;
}

struct http_server *http_server_new(struct app *app, char **error_r)
{
	struct http_server *srv = calloc(1, sizeof(*srv));
	srv->app = app;
	const struct config *cfg = app->cfg;
	if (*cfg->listen_https) {
		srv->tls_ctx =
		    tls_server_ctx_new(cfg, config_requires_client_cert(cfg, "https"), error_r);
		if (!srv->tls_ctx)
			goto fail;
	}
	for (int i = 0; i < L_COUNT; i++) {
		struct http_listener *l = &srv->l[i];
		l->srv = srv;
		l->tls = i == L_TLS;
		l->http = evhttp_new(app->base);
		apply_limits(l->http, cfg);
		evhttp_set_gencb(l->http, on_request, l);
		evhttp_set_bevcb(l->http, l->tls ? bev_tls : bev_plain, l);
		const char *addr = cfg_addr(cfg, i);
		if (*addr) {
			l->bound = bind_addr(l->http, listener_name(i), addr, error_r);
			if (!l->bound)
				goto fail;
			log_info("listening", "listener=%s addr=%s", listener_name(i), addr);
		}
		l->addr = strdup(addr);
	}
	return srv;
fail:
	http_server_free(&srv);
	return NULL;
}

void http_server_free(struct http_server **srvp)
{
	struct http_server *srv = *srvp;
	if (!srv)
		return;
	*srvp = NULL;
	for (int i = 0; i < L_COUNT; i++) {
		if (srv->l[i].http)
			evhttp_free(srv->l[i].http);
		free(srv->l[i].addr);
	}
	if (srv->tls_ctx)
		SSL_CTX_free(srv->tls_ctx);
	api_token_cache_clear(srv);
	free(srv);
}

/* What a reload will swap in, built before anything changes. */
struct http_reload {
	const struct config *cfg;
	SSL_CTX *ctx;
	bool rebind[L_COUNT];
	struct evhttp_bound_socket *nb[L_COUNT];
};

struct http_reload *http_server_reload_prepare(struct http_server *srv, const struct config *cfg,
					       char **error_r)
{
	struct http_reload *rl = calloc(1, sizeof(*rl));
	if (!rl)
		abort();
	rl->cfg = cfg;
	if (*cfg->listen_https) {
		rl->ctx =
		    tls_server_ctx_new(cfg, config_requires_client_cert(cfg, "https"), error_r);
		if (!rl->ctx) {
			free(rl);
			return NULL;
		}
	}
	for (int i = 0; i < L_COUNT; i++) {
		const char *addr = cfg_addr(cfg, i);
		rl->rebind[i] = strcmp(addr, srv->l[i].addr) != 0;
		if (rl->rebind[i] && *addr) {
			rl->nb[i] = bind_addr(srv->l[i].http, listener_name(i), addr, error_r);
			if (!rl->nb[i]) {
				http_server_reload_abort(srv, rl);
				return NULL;
			}
		}
	}
	return rl;
}

void http_server_reload_abort(struct http_server *srv, struct http_reload *rl)
{
	for (int i = 0; i < L_COUNT; i++)
		if (rl->nb[i])
			evhttp_del_accept_socket(srv->l[i].http, rl->nb[i]);
	if (rl->ctx)
		SSL_CTX_free(rl->ctx);
	free(rl);
}

void http_server_reload_commit(struct http_server *srv, struct http_reload *rl)
{
	const struct config *cfg = rl->cfg;
	for (int i = 0; i < L_COUNT; i++) {
		struct http_listener *l = &srv->l[i];
		apply_limits(l->http, cfg);
		if (!rl->rebind[i])
			continue;
		if (l->bound)
			evhttp_del_accept_socket(l->http, l->bound);
		l->bound = rl->nb[i];
		log_info("listener_moved", "listener=%s from=%s to=%s", listener_name(i),
			 *l->addr ? l->addr : "off", *cfg_addr(cfg, i) ? cfg_addr(cfg, i) : "off");
		free(l->addr);
		l->addr = strdup(cfg_addr(cfg, i));
	}
	if (srv->tls_ctx)
		SSL_CTX_free(srv->tls_ctx); /* live connections hold their own reference */
	srv->tls_ctx = rl->ctx;
	free(rl);
}

void http_server_stop_accepting(struct http_server *srv)
{
	for (int i = 0; i < L_COUNT; i++) {
		struct http_listener *l = &srv->l[i];
		if (l->bound) {
			evhttp_del_accept_socket(l->http, l->bound);
			l->bound = NULL;
		}
	}
}

unsigned http_server_in_flight(const struct http_server *srv)
{
	return srv->in_flight;
}

void http_server_get_stats(const struct http_server *srv, struct http_stats *st)
{
	*st = srv->stats;
}
