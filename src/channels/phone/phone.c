/* The phone listeners and PBX sessions (see phone.h). */
#include "contactd/phone.h"

#include "contactd/app.h"
#include "contactd/config.h"
#include "contactd/idmap.h"
#include "contactd/listener.h"
#include "contactd/log.h"
#include "contactd/ndjson.h"
#include "contactd/routing.h"
#include "contactd/secret.h"
#include "contactd/sla.h"
#include "contactd/store.h"
#include "contactd/tls.h"

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { L_PLAIN, L_TLS, L_COUNT };
static const char *const lname[L_COUNT] = {"phone", "phone_tls"};

#define ORPHAN_CHECK_MS 1000

/* One PBX connection. Freed once its conn closed and no store call of it is pending. */
struct pbx {
	struct phone *ph;
	struct ndjson_conn *conn; /* NULL once closed */
	unsigned pending;
	bool hello_busy, ready;
	bool cert_ok;	  /* accepted on a TLS listener that requires client certificates */
	int64_t token_id; /* 0: logged in with its certificate */
	char name[80];
};

/* A queued call waiting for its route: which PBX gets it. */
struct call_link {
	int64_t conv;
	char call_id[208];
	int64_t token_id;
	struct pbx *pbx; /* NULL while orphaned */
	int64_t orphaned_at_ms;
	json_t *pending_route; /* a route that came while orphaned */
};

struct phone {
	struct app *app;
	struct listener *l[L_COUNT];
	char *addr[L_COUNT];
	SSL_CTX *tls_ctx;
	bool cert_required; /* phone_tls requires client certificates */
	struct ndjson_limits limits;
	struct idmap *links; /* conversation -> struct call_link */
	struct event *orphan_timer;
	unsigned long long routes_sent;
};

/* A request of a PBX waiting on the store. */
struct pbx_op {
	struct pbx *pbx;
	json_t *ref;
	bool system; /* made by contactd itself (pbx_lost): no reply */
	struct phone *ph;
	int64_t preroute; /* routing_preroute's handle for a `queued` stored with its offer */
};

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void pbx_maybe_free(struct pbx *x)
{
	if (!x->conn && x->pending == 0)
		free(x);
}

static struct pbx_op *op_new(struct pbx *x, const json_t *ref)
{
	struct pbx_op *op = calloc(1, sizeof(*op));
	if (!op)
		abort();
	op->pbx = x;
	op->ph = x ? x->ph : NULL;
	op->ref = ref ? json_incref((json_t *)ref) : NULL;
	if (x)
		x->pending++;
	return op;
}

static void op_free(struct pbx_op *op)
{
	if (op->preroute && op->ph) /* never answered: the held agent is let go */
		routing_preroute_done(op->ph->app->routing, op->preroute, NULL);
	json_decref(op->ref);
	if (op->pbx) {
		op->pbx->pending--;
		pbx_maybe_free(op->pbx);
	}
	free(op);
}

static struct ndjson_conn *op_conn(const struct pbx_op *op)
{
	return op->pbx ? op->pbx->conn : NULL;
}

static void reply_store_error(struct pbx_op *op, const struct store_reply *rep)
{
	struct ndjson_conn *conn = op_conn(op);
	if (!conn)
		return;
	switch (rep->status) {
	case STORE_UNAVAILABLE:
		ndjson_reply_error(conn, op->ref, "unavailable", "the store is unavailable; retry");
		break;
	case STORE_INVALID:
		ndjson_reply_error(conn, op->ref, "invalid", rep->message);
		break;
	case STORE_NOT_FOUND:
		ndjson_reply_error(conn, op->ref, "not_found", rep->message);
		break;
	case STORE_CONFLICT:
		ndjson_reply_error(conn, op->ref, "conflict", rep->message);
		break;
	case STORE_FORBIDDEN:
		ndjson_reply_error(conn, op->ref, "forbidden", rep->message);
		break;
	default:
		ndjson_reply_error(conn, op->ref, "internal", "the event could not be recorded");
	}
}

/* ---- call links ------------------------------------------------------------------------ */

static void link_drop(struct phone *ph, int64_t conv)
{
	struct call_link *l = idmap_get(ph->links, conv);
	if (!l)
		return;
	idmap_set(ph->links, conv, NULL);
	json_decref(l->pending_route);
	free(l);
}

static void link_set(struct phone *ph, int64_t conv, const char *call_id, struct pbx *x)
{
	struct call_link *l = idmap_get(ph->links, conv);
	if (!l) {
		l = calloc(1, sizeof(*l));
		if (!l)
			return;
		l->conv = conv;
		idmap_set(ph->links, conv, l);
	}
	snprintf(l->call_id, sizeof(l->call_id), "%s", call_id);
	l->token_id = x->token_id;
	l->pbx = x;
	l->orphaned_at_ms = 0;
}

static void send_route(struct phone *ph, struct call_link *l, json_t *route)
{
	if (l->pbx && l->pbx->conn && ndjson_send(l->pbx->conn, json_incref(route)) == 0) {
		ph->routes_sent++;
		log_info("route_sent", "conversation=%lld call_id=%s pbx=%s", (long long)l->conv,
			 l->call_id, l->pbx->name);
		link_drop(ph, l->conv); /* frees ROUTE's holder, not ROUTE */
		return;
	}
	json_decref(l->pending_route);
	l->pending_route = json_incref(route); /* sent when a PBX adopts the call */
}

void phone_on_assigned(void *arg, const json_t *res)
{
	struct phone *ph = arg;
	const char *channel = json_string_value(json_object_get(res, "channel"));
	if (!ph || !channel || strcmp(channel, "voice") != 0)
		return;
	int64_t conv = json_integer_value(json_object_get(res, "conversation"));
	struct call_link *l = idmap_get(ph->links, conv);
	if (!l) {
		log_warn("route_undelivered", "conversation=%lld reason=no_pbx_for_call",
			 (long long)conv);
		return;
	}
	json_t *route =
	    json_pack("{s:s, s:s, s:O, s:O, s:O}", "type", "route", "call_id", l->call_id, "agent",
		      json_object_get(res, "agent_login") ?: json_null(), "extension",
		      json_object_get(res, "extension") ?: json_null(), "offer",
		      json_object_get(res, "offer") ?: json_null());
	if (route)
		send_route(ph, l, route);
	json_decref(route);
}

struct adopt {
	struct pbx *pbx;
	int64_t *ready;
	size_t n, cap;
};

static void adopt_one(int64_t conv, void *value, void *arg)
{
	struct adopt *a = arg;
	struct call_link *l = value;
	if (l->pbx || l->token_id != a->pbx->token_id)
		return;
	l->pbx = a->pbx;
	l->orphaned_at_ms = 0;
	if (l->pending_route && a->n < a->cap)
		a->ready[a->n++] = conv;
}

/* A PBX logged in: it takes over the orphaned calls of its token. */
static void adopt_orphans(struct phone *ph, struct pbx *x)
{
	int64_t ready[256];
	struct adopt a = {x, ready, 0, 256};
	idmap_each(ph->links, adopt_one, &a);
	for (size_t i = 0; i < a.n; i++) {
		struct call_link *l = idmap_get(ph->links, ready[i]);
		if (!l)
			continue;
		json_t *route = l->pending_route;
		l->pending_route = NULL;
		send_route(ph, l, route);
		json_decref(route);
	}
}

struct orphaning {
	const struct pbx *pbx;
	int n;
};

static void orphan_one(int64_t conv, void *value, void *arg)
{
	struct orphaning *o = arg;
	struct call_link *l = value;
	if (l->pbx == o->pbx) {
		l->pbx = NULL;
		l->orphaned_at_ms = mono_ms();
		o->n++;
	}
}

static void event_cb(void *arg, const struct store_reply *rep);

struct expired {
	int64_t conv[128];
	size_t n;
};

static void expired_one(int64_t conv, void *value, void *arg)
{
	struct expired *e = arg;
	struct call_link *l = value;
	if (!l->pbx && l->orphaned_at_ms &&
	    mono_ms() - l->orphaned_at_ms >= (int64_t)PHONE_ORPHAN_GRACE_S * 1000 &&
	    e->n < sizeof(e->conv) / sizeof(e->conv[0]))
		e->conv[e->n++] = conv;
}

/* Orphans past their grace period: a call still waiting is recorded as abandoned. */
static void orphan_cb(evutil_socket_t fd, short what, void *arg)
{
	struct phone *ph = arg;
	struct expired e = {.n = 0};
	idmap_each(ph->links, expired_one, &e);
	for (size_t i = 0; i < e.n; i++) {
		struct call_link *l = idmap_get(ph->links, e.conv[i]);
		if (l->pending_route) {
			log_warn("route_undelivered",
				 "conversation=%lld call_id=%s reason=pbx_lost", (long long)l->conv,
				 l->call_id);
			link_drop(ph, l->conv);
			continue;
		}
		json_t *p = json_pack("{s:s, s:s, s:s, s:{s:s}}", "call_id", l->call_id, "event",
				      "abandoned", "event_id", "contactd:pbx_lost", "ivr", "reason",
				      "pbx_lost");
		log_warn("call_orphan_abandoned", "conversation=%lld call_id=%s grace_s=%d",
			 (long long)l->conv, l->call_id, PHONE_ORPHAN_GRACE_S);
		link_drop(ph, e.conv[i]);
		struct pbx_op *op = op_new(NULL, NULL);
		op->system = true;
		op->ph = ph;
		if (store_call_json(ph->app->store, STORE_Q_PHONE_EVENT, p, event_cb, op) < 0)
			op_free(op); /* the next restart's snapshot still has it waiting */
	}
}

/* ---- requests ---------------------------------------------------------------------------- */

/* What a committed call event changes in routing (RES: cd_phone_event's answer). X: the
 * PBX connection that sent it, which gets the route of a call it queued (NULL: over HTTP,
 * or contactd itself). */
static void apply_effects(struct phone *ph, const json_t *res, struct pbx *x, bool offered)
{
	if (json_is_true(json_object_get(res, "duplicate")))
		return;
	struct routing *r = ph->app->routing;
	int64_t id = json_integer_value(json_object_get(res, "conversation"));
	const json_t *route = json_object_get(res, "route");
	int64_t handed = json_integer_value(json_object_get(res, "handed_to"));
	if (json_is_true(json_object_get(res, "removed"))) {
		routing_conversation_removed(r, id);
		link_drop(ph, id);
	} else if (json_is_true(json_object_get(res, "resolved"))) {
		routing_conversation_resolved(r, id);
		link_drop(ph, id);
	} else if (handed > 0 && json_is_object(route)) {
		routing_conversation_handed(r, route, handed);
		link_drop(ph, id);
	} else if (json_is_object(route)) {
		if (x)
			link_set(ph, id, json_string_value(json_object_get(res, "call_id")), x);
		if (!offered) /* else routing_preroute_done() put it in, offered */
			routing_conversation_opened(r, route);
		/* SLA clocks started: they may fire before the poller's next round. Without a
		 * policy there is nothing to look for (a poll per call competed with the next
		 * calls' offers for the 2 cores of a small box, bench/run-phone-route.sh). */
		sla_kick_route(ph->app->sla, route);
	}
}

static void event_cb(void *arg, const struct store_reply *rep)
{
	struct pbx_op *op = arg;
	struct phone *ph = op->ph;
	json_t *res =
	    rep->status == STORE_OK && rep->value ? json_loads(rep->value, 0, NULL) : NULL;
	if (!res) {
		if (!op->system)
			reply_store_error(op, rep);
		op_free(op); /* lets a pre-routed agent go */
		return;
	}
	json_t *conv = json_object_get(res, "conversation");
	struct ndjson_conn *conn = op_conn(op);
	if (conn && !op->system)
		ndjson_reply_ok(conn, op->ref,
				json_pack("{s:O, s:O, s:O}", "conversation", conv, "state",
					  json_object_get(res, "state"), "duplicate",
					  json_object_get(res, "duplicate")));
	bool offered = false;
	if (op->preroute) {
		offered = routing_preroute_done(ph->app->routing, op->preroute, res);
		op->preroute = 0;
	}
	apply_effects(ph, res, op->pbx && op->pbx->conn ? op->pbx : NULL, offered);
	json_decref(res);
	op_free(op);
}

void phone_after_event(struct phone *ph, const json_t *res)
{
	if (ph)
		apply_effects(ph, res, NULL, false);
}

static void call_event(struct pbx *x, json_t *frame, const json_t *ref)
{
	struct phone *ph = x->ph;
	json_t *p = json_deep_copy(frame);
	json_object_del(p, "type");
	json_object_del(p, "ref");
	json_object_set_new(p, "default_queue", json_string(ph->app->cfg->routing_default_queue));
	struct pbx_op *op = op_new(x, ref);
	/* a call queued with an agent free: offered in the call's own transaction */
	json_t *offer = NULL;
	const char *event = json_string_value(json_object_get(p, "event"));
	if (event && strcmp(event, "queued") == 0)
		op->preroute = routing_preroute(ph->app->routing, json_object_get(p, "queue"),
						ph->app->cfg->routing_default_queue, &offer);
	int rc;
	if (offer) {
		char *pt = json_dumps(p, JSON_COMPACT), *ot = json_dumps(offer, JSON_COMPACT);
		const char *params[2] = {pt, ot};
		rc = pt && ot ? store_call(ph->app->store, STORE_Q_PHONE_EVENT_OFFER, 2, params,
					   event_cb, op)
			      : -1;
		free(pt);
		free(ot);
		json_decref(offer);
		json_decref(p);
	} else {
		rc = store_call_json(ph->app->store, STORE_Q_PHONE_EVENT, p, event_cb, op);
	}
	if (rc < 0) {
		ndjson_reply_error(x->conn, ref, "unavailable", "the store is unavailable; retry");
		op_free(op);
	}
}

/* ---- hello --------------------------------------------------------------------------------- */

static void hello_done(struct pbx *x, const json_t *ref)
{
	x->ready = true;
	x->hello_busy = false;
	ndjson_conn_set_ready(x->conn);
	ndjson_reply_ok(x->conn, ref, json_pack("{s:s}", "pbx", x->name));
	log_info("pbx_hello", "conn=%llu pbx=%s via=%s",
		 (unsigned long long)ndjson_conn_id(x->conn), x->name,
		 x->token_id ? "token" : "certificate");
	adopt_orphans(x->ph, x);
}

static void hello_refused(struct pbx *x, const json_t *ref, const char *why)
{
	x->hello_busy = false;
	ndjson_reply_error(x->conn, ref, "unauthorized", why);
	log_warn("pbx_hello_refused", "conn=%llu peer=%s",
		 (unsigned long long)ndjson_conn_id(x->conn), ndjson_conn_peer(x->conn));
	ndjson_conn_close(x->conn, "unauthorized");
}

static void token_cb(void *arg, const struct store_reply *rep)
{
	struct pbx_op *op = arg;
	struct pbx *x = op->pbx;
	if (!x->conn) {
		op_free(op);
		return;
	}
	if (rep->status != STORE_OK) {
		x->hello_busy = false;
		reply_store_error(op, rep);
		ndjson_conn_resume(x->conn);
		op_free(op);
		return;
	}
	json_t *tok = rep->value ? json_loads(rep->value, 0, NULL) : NULL;
	bool allowed = false;
	size_t i;
	json_t *v;
	json_array_foreach(json_object_get(tok, "scopes"), i, v)
	{
		const char *sc = json_string_value(v);
		if (sc && (strcmp(sc, "events:write") == 0 || strcmp(sc, "admin") == 0))
			allowed = true;
	}
	if (allowed) {
		x->token_id = json_integer_value(json_object_get(tok, "id"));
		snprintf(x->name, sizeof(x->name), "%s",
			 json_string_value(json_object_get(tok, "name")) ?: "pbx");
		hello_done(x, op->ref);
	} else {
		hello_refused(x, op->ref, "a token with the events:write scope is required");
	}
	json_decref(tok);
	op_free(op);
}

static void pbx_hello(struct pbx *x, json_t *frame, const json_t *ref)
{
	const char *role = json_string_value(json_object_get(frame, "role"));
	if (!role || strcmp(role, "pbx") != 0) {
		ndjson_reply_error(x->conn, ref, "invalid",
				   "role: must be pbx on the phone listener");
		ndjson_conn_resume(x->conn);
		return;
	}
	json_t *token = json_object_get(frame, "token");
	if (!token || json_is_null(token)) {
		if (x->cert_ok) {
			snprintf(x->name, sizeof(x->name), "client-certificate");
			x->token_id = 0;
			hello_done(x, ref);
		} else {
			hello_refused(x, ref, "token: is required");
		}
		return;
	}
	if (!json_is_string(token) || json_string_length(token) > 256) {
		hello_refused(x, ref, "token: must be an API token");
		return;
	}
	char hash[SECRET_SHA256_HEXLEN + 1];
	secret_sha256_hex(json_string_value(token), json_string_length(token), hash);
	const char *params[1] = {hash};
	x->hello_busy = true;
	struct pbx_op *op = op_new(x, ref);
	if (store_call(x->ph->app->store, STORE_Q_TOKEN_LOOKUP, 1, params, token_cb, op) < 0) {
		x->hello_busy = false;
		ndjson_reply_error(x->conn, ref, "unavailable", "the store is unavailable; retry");
		ndjson_conn_resume(x->conn);
		op_free(op);
	}
}

/* ---- the NDJSON engine's callbacks ------------------------------------------------------- */

static void on_frame(struct ndjson_conn *conn, json_t *frame, const json_t *ref, void *ctx)
{
	struct pbx *x = ctx;
	const char *type = json_string_value(json_object_get(frame, "type"));
	if (!x->ready) {
		pbx_hello(x, frame, ref);
		return;
	}
	if (strcmp(type, "hello") == 0)
		ndjson_reply_error(conn, ref, "conflict", "hello was already done");
	else if (strcmp(type, "call") == 0)
		call_event(x, frame, ref);
	else
		ndjson_reply_error(conn, ref, "bad_frame", "unknown request type for a pbx");
}

static void on_close(struct ndjson_conn *conn, const char *reason, void *ctx)
{
	struct pbx *x = ctx;
	if (x->ready) {
		struct orphaning o = {x, 0};
		idmap_each(x->ph->links, orphan_one, &o);
		log_info("pbx_gone", "pbx=%s reason=%s waiting_calls=%d grace_s=%d", x->name,
			 reason, o.n, PHONE_ORPHAN_GRACE_S);
	}
	x->conn = NULL;
	listener_conn_closed();
	pbx_maybe_free(x);
}

static const struct ndjson_handlers handlers = {on_frame, on_close};

static void accept_any(struct phone *ph, struct bufferevent *bev, const char *peer, bool cert_ok)
{
	struct pbx *x = calloc(1, sizeof(*x));
	if (!x)
		abort();
	x->ph = ph;
	x->cert_ok = cert_ok;
	snprintf(x->name, sizeof(x->name), "-");
	x->conn = ndjson_conn_new(bev, &ph->limits, &handlers, x, "phone", peer);
	if (!x->conn) {
		listener_conn_closed();
		free(x);
	}
}

static void on_accept_plain(struct bufferevent *bev, const char *peer, void *arg)
{
	accept_any(arg, bev, peer, false);
}

static void on_accept_tls(struct bufferevent *bev, const char *peer, void *arg)
{
	struct phone *ph = arg;
	/* the handshake verifies the certificate before any frame is read */
	accept_any(ph, bev, peer, ph->cert_required);
}

static listener_accept_cb accept_cb[L_COUNT] = {on_accept_plain, on_accept_tls};

/* ---- life ---------------------------------------------------------------------------------- */

static const char *cfg_addr(const struct config *cfg, int i)
{
	return i == L_TLS ? cfg->listen_phone_tls : cfg->listen_phone;
}

struct phone *phone_new(struct app *app, char **error_r)
{
	struct phone *ph = calloc(1, sizeof(*ph));
	if (!ph)
		abort();
	ph->app = app;
	ph->links = idmap_new();
	ph->orphan_timer = event_new(app->base, -1, EV_PERSIST, orphan_cb, ph);
	struct timeval every = {ORPHAN_CHECK_MS / 1000, (ORPHAN_CHECK_MS % 1000) * 1000};
	event_add(ph->orphan_timer, &every);
	const struct config *cfg = app->cfg;
	ndjson_limits_from_config(&ph->limits, cfg);
	ph->cert_required = config_requires_client_cert(cfg, "phone_tls");
	if (*cfg->listen_phone_tls) {
		ph->tls_ctx = tls_server_ctx_new(cfg, ph->cert_required, error_r);
		if (!ph->tls_ctx)
			goto fail;
	}
	for (int i = 0; i < L_COUNT; i++) {
		const char *addr = cfg_addr(cfg, i);
		ph->addr[i] = strdup(addr);
		if (!*addr)
			continue;
		ph->l[i] = listener_new(app->base, lname[i], addr, i == L_TLS ? ph->tls_ctx : NULL,
					accept_cb[i], ph, error_r);
		if (!ph->l[i])
			goto fail;
	}
	routing_set_assign_hook(app->routing, phone_on_assigned, ph);
	return ph;
fail:
	phone_free(&ph);
	return NULL;
}

static void free_link(int64_t key, void *value, void *arg)
{
	struct call_link *l = value;
	json_decref(l->pending_route);
	free(l);
}

void phone_free(struct phone **pp)
{
	struct phone *ph = *pp;
	if (!ph)
		return;
	*pp = NULL;
	routing_set_assign_hook(ph->app->routing, NULL, NULL);
	for (int i = 0; i < L_COUNT; i++) {
		listener_free(&ph->l[i]);
		free(ph->addr[i]);
	}
	if (ph->tls_ctx)
		SSL_CTX_free(ph->tls_ctx);
	if (ph->links) {
		idmap_each(ph->links, free_link, NULL);
		idmap_free(&ph->links);
	}
	if (ph->orphan_timer)
		event_free(ph->orphan_timer);
	free(ph);
}

struct phone_reload {
	const struct config *cfg;
	SSL_CTX *ctx;
	bool cert_required;
	bool rebind[L_COUNT];
	struct listener *nl[L_COUNT];
};

struct phone_reload *phone_reload_prepare(struct phone *ph, const struct config *cfg,
					  char **error_r)
{
	struct phone_reload *rl = calloc(1, sizeof(*rl));
	if (!rl)
		abort();
	rl->cfg = cfg;
	rl->cert_required = config_requires_client_cert(cfg, "phone_tls");
	if (*cfg->listen_phone_tls) {
		rl->ctx = tls_server_ctx_new(cfg, rl->cert_required, error_r);
		if (!rl->ctx) {
			free(rl);
			return NULL;
		}
	}
	for (int i = 0; i < L_COUNT; i++) {
		const char *addr = cfg_addr(cfg, i);
		rl->rebind[i] = strcmp(addr, ph->addr[i]) != 0;
		if (!rl->rebind[i] || !*addr)
			continue;
		rl->nl[i] = listener_new(ph->app->base, lname[i], addr, i == L_TLS ? rl->ctx : NULL,
					 accept_cb[i], ph, error_r);
		if (!rl->nl[i]) {
			phone_reload_abort(ph, rl);
			return NULL;
		}
	}
	return rl;
}

void phone_reload_abort(struct phone *ph, struct phone_reload *rl)
{
	for (int i = 0; i < L_COUNT; i++)
		listener_free(&rl->nl[i]);
	if (rl->ctx)
		SSL_CTX_free(rl->ctx);
	free(rl);
}

void phone_reload_commit(struct phone *ph, struct phone_reload *rl)
{
	const struct config *cfg = rl->cfg;
	for (int i = 0; i < L_COUNT; i++) {
		if (!rl->rebind[i])
			continue;
		listener_free(&ph->l[i]);
		ph->l[i] = rl->nl[i];
		log_info("listener_moved", "listener=%s from=%s to=%s", lname[i],
			 *ph->addr[i] ? ph->addr[i] : "off",
			 *cfg_addr(cfg, i) ? cfg_addr(cfg, i) : "off");
		free(ph->addr[i]);
		ph->addr[i] = strdup(cfg_addr(cfg, i));
	}
	if (ph->l[L_TLS])
		listener_set_tls_ctx(ph->l[L_TLS], rl->ctx);
	if (ph->tls_ctx)
		SSL_CTX_free(ph->tls_ctx);
	ph->tls_ctx = rl->ctx;
	ph->cert_required = rl->cert_required;
	ndjson_limits_from_config(&ph->limits, cfg);
	free(rl);
}

void phone_stop_accepting(struct phone *ph)
{
	for (int i = 0; ph && i < L_COUNT; i++)
		if (ph->l[i])
			listener_disable(ph->l[i]);
}
