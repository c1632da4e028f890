/* The client listeners and session life cycle; the protocol lives in chat_customer.c and
 * chat_agent.c. */
#include "contactd/chat.h"

#include "chat_internal.h"
#include "contactd/app.h"
#include "contactd/config.h"
#include "contactd/idmap.h"
#include "contactd/listener.h"
#include "contactd/log.h"
#include "contactd/ndjson.h"
#include "contactd/outbound.h"
#include "contactd/routing.h"
#include "contactd/tls.h"

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { L_PLAIN, L_TLS, L_COUNT };

struct chat {
	struct app *app;
	struct listener *l[L_COUNT];
	char *addr[L_COUNT];
	SSL_CTX *tls_ctx;
	struct ndjson_limits limits;
	struct idmap *customers; /* id -> struct session list */
	struct idmap *agents;
	unsigned in_flight;
	bool draining;
	struct event *stats_timer; /* pushes `stats` to subscribed supervisors */
};

#define STATS_EVERY_S 5

static const char *const lname[L_COUNT] = {"client", "client_tls"};

struct app *chat_app(const struct chat *c)
{
	return c->app;
}

/* ---- sessions ------------------------------------------------------------------------ */

static void registry_remove(struct session *s)
{
	struct idmap *m = s->role == ROLE_CUSTOMER ? s->chat->customers
			  : s->role == ROLE_AGENT  ? s->chat->agents
						   : NULL;
	if (!m || s->id == 0)
		return;
	struct session *head = idmap_get(m, s->id), **pp = &head;
	while (*pp && *pp != s)
		pp = &(*pp)->next_same;
	if (*pp)
		*pp = s->next_same;
	idmap_set(m, s->id, head);
	s->next_same = NULL;
}

void chat_register(struct session *s)
{
	struct idmap *m = s->role == ROLE_CUSTOMER ? s->chat->customers : s->chat->agents;
	s->next_same = idmap_get(m, s->id);
	idmap_set(m, s->id, s);
}

static void session_maybe_free(struct session *s)
{
	if (s->conn || s->pending > 0)
		return;
	json_decref(s->agent);
	free(s->queue);
	free(s);
}

static void push_list(struct session *head, json_t *event)
{
	for (struct session *s = head; s; s = s->next_same)
		if (s->conn)
			ndjson_send(s->conn, json_incref(event));
	json_decref(event);
}

void chat_push_customer(struct chat *c, int64_t customer_id, json_t *event)
{
	push_list(idmap_get(c->customers, customer_id), event);
}

void chat_push_agent(struct chat *c, int64_t agent_id, json_t *event)
{
	push_list(idmap_get(c->agents, agent_id), event);
}

void chat_notify_agent(void *chat, int64_t agent_id, json_t *event)
{
	chat_push_agent(chat, agent_id, event);
}

void chat_notify_customer(void *chat, int64_t customer_id, json_t *event)
{
	chat_push_customer(chat, customer_id, event);
}

struct topic_push {
	const char *topic;
	json_t *event;
};

static void push_topic_one(int64_t id, void *value, void *arg)
{
	struct topic_push *tp = arg;
	bool sla = strcmp(tp->topic, "sla") == 0;
	for (struct session *s = value; s; s = s->next_same)
		if (s->conn && (sla ? s->sub_sla : s->sub_stats))
			ndjson_send(s->conn, json_incref(tp->event));
}

void chat_notify_topic(void *chat, const char *topic, json_t *event)
{
	struct chat *c = chat;
	struct topic_push tp = {topic, event};
	if (c && event)
		idmap_each(c->agents, push_topic_one, &tp);
	json_decref(event);
}

/* ---- requests ------------------------------------------------------------------------ */

struct chat_op *chat_op_new(struct session *s, json_t *frame, const json_t *ref)
{
	struct chat_op *op = calloc(1, sizeof(*op));
	if (!op)
		abort();
	op->s = s;
	op->frame = json_incref(frame);
	op->ref = ref ? json_deep_copy(ref) : NULL;
	s->pending++;
	s->chat->in_flight++;
	return op;
}

bool chat_op_live(const struct chat_op *op)
{
	return op->s->conn != NULL;
}

void chat_op_free(struct chat_op *op)
{
	struct session *s = op->s;
	if (op->data_free)
		op->data_free(op->data);
	json_decref(op->frame);
	json_decref(op->ref);
	free(op);
	s->pending--;
	s->chat->in_flight--;
	session_maybe_free(s);
}

void chat_reply_ok(struct chat_op *op, json_t *fields)
{
	if (op->s->conn)
		ndjson_reply_ok(op->s->conn, op->ref, fields);
	else
		json_decref(fields);
}

void chat_reply_error(struct chat_op *op, const char *code, const char *message)
{
	if (op->s->conn)
		ndjson_reply_error(op->s->conn, op->ref, code, message);
}

void chat_reply_store_error(struct chat_op *op, const struct store_reply *rep)
{
	switch (rep->status) {
	case STORE_NOT_FOUND:
		chat_reply_error(op, "not_found", rep->message);
		break;
	case STORE_CONFLICT:
		chat_reply_error(op, "conflict", rep->message);
		break;
	case STORE_INVALID:
		chat_reply_error(op, "invalid", rep->message);
		break;
	case STORE_FORBIDDEN:
		chat_reply_error(op, "forbidden", rep->message);
		break;
	case STORE_UNAVAILABLE:
		chat_reply_error(
		    op, "unavailable",
		    "the store cannot take writes now; retry later (nothing was recorded)");
		break;
	default:
		chat_reply_error(op, "internal", "internal error (logged)");
		break;
	}
}

void chat_call(struct chat_op *op, enum store_query q, json_t *p, store_cb cb)
{
	if (store_call_json(op->s->chat->app->store, q, p, cb, op) < 0) {
		struct store_reply rep = {.status = STORE_UNAVAILABLE};
		chat_reply_store_error(op, &rep);
		chat_op_free(op);
	}
}

bool chat_opt_string(struct chat_op *op, const char *key, const char **out, size_t max)
{
	json_t *v = json_object_get(op->frame, key);
	*out = NULL;
	if (!v || json_is_null(v))
		return true;
	if (!json_is_string(v) || json_string_length(v) > max) {
		char msg[128];
		snprintf(msg, sizeof(msg), "%s: must be a string of at most %zu bytes", key, max);
		chat_reply_error(op, "invalid", msg);
		return false;
	}
	*out = json_string_value(v);
	return true;
}

bool chat_id_field(struct chat_op *op, const char *key, bool required, int64_t *out)
{
	json_t *v = json_object_get(op->frame, key);
	*out = 0;
	if (!v || json_is_null(v)) {
		if (!required)
			return true;
		char msg[96];
		snprintf(msg, sizeof(msg), "%s: is required", key);
		chat_reply_error(op, "bad_frame", msg);
		return false;
	}
	if (json_is_integer(v) && json_integer_value(v) > 0) {
		*out = json_integer_value(v);
		return true;
	}
	if (json_is_string(v)) {
		char *end;
		long long n = strtoll(json_string_value(v), &end, 10);
		if (n > 0 && *end == '\0' && end != json_string_value(v)) {
			*out = n;
			return true;
		}
	}
	char msg[96];
	snprintf(msg, sizeof(msg), "%s: must be an id", key);
	chat_reply_error(op, "invalid", msg);
	return false;
}

/* ---- the NDJSON engine's callbacks ----------------------------------------------------- */

static void on_frame(struct ndjson_conn *conn, json_t *frame, const json_t *ref, void *ctx)
{
	struct session *s = ctx;
	const char *type = json_string_value(json_object_get(frame, "type"));
	if (s->role == ROLE_NONE) {
		const char *role = json_string_value(json_object_get(frame, "role"));
		if (!role) {
			ndjson_reply_error(conn, ref, "bad_frame", "role: is required");
			ndjson_conn_resume(conn);
		} else if (strcmp(role, "customer") == 0) {
			chat_customer_hello(s, frame, ref);
		} else if (strcmp(role, "agent") == 0) {
			chat_agent_hello(s, frame, ref);
		} else {
			ndjson_reply_error(conn, ref, "invalid", "role: must be customer or agent");
			ndjson_conn_resume(conn);
		}
		return;
	}
	if (strcmp(type, "hello") == 0) {
		ndjson_reply_error(conn, ref, "conflict", "hello was already done");
		return;
	}
	if (s->role == ROLE_CUSTOMER)
		chat_customer_request(s, type, frame, ref);
	else
		chat_agent_request(s, type, frame, ref);
}

static void on_close(struct ndjson_conn *conn, const char *reason, void *ctx)
{
	struct session *s = ctx;
	registry_remove(s);
	if (s->role == ROLE_AGENT && !idmap_get(s->chat->agents, s->id))
		chat_agent_gone(s); /* its last session: offline for routing */
	s->conn = NULL;
	listener_conn_closed();
	session_maybe_free(s);
}

static const struct ndjson_handlers handlers = {on_frame, on_close};

static void on_accept(struct bufferevent *bev, const char *peer, void *arg)
{
	struct chat *c = arg;
	struct session *s = calloc(1, sizeof(*s));
	if (!s)
		abort();
	s->chat = c;
	snprintf(s->peer_ip, sizeof(s->peer_ip), "%s", peer);
	char *colon = strrchr(s->peer_ip, ':');
	if (colon)
		*colon = '\0';
	s->conn = ndjson_conn_new(bev, &c->limits, &handlers, s, "client", peer);
	if (!s->conn) {
		listener_conn_closed();
		free(s);
	}
}

/* ---- supervisor stats ------------------------------------------------------------------ */

struct stats_push {
	json_t *event;
};

static void push_stats_one(int64_t id, void *value, void *arg)
{
	struct stats_push *sp = arg;
	for (struct session *s = value; s; s = s->next_same) {
		if (!s->sub_stats || !s->conn)
			continue;
		if (!sp->event) {
			sp->event = routing_stats_json(chat_app(s->chat)->routing);
			json_object_set_new(sp->event, "type", json_string("stats"));
		}
		ndjson_send(s->conn, json_incref(sp->event));
	}
}

static void stats_cb(evutil_socket_t fd, short what, void *arg)
{
	struct chat *c = arg;
	struct stats_push sp = {NULL};
	idmap_each(c->agents, push_stats_one, &sp);
	json_decref(sp.event);
}

/* ---- listeners ----------------------------------------------------------------------- */

static const char *cfg_addr(const struct config *cfg, int i)
{
	return i == L_TLS ? cfg->listen_client_tls : cfg->listen_client;
}

/* The chat channel's outbound: the agent's message to every session of the customer. A
 * customer who is not connected reads it in the conversation later (resume). */
static int chat_outbound(void *arg, const struct outbound_msg *m)
{
	json_t *ev = json_pack("{s:s, s:I, s:I, s:{s:s, s:s?}, s:s, s:s?}", "type", "message",
			       "conversation", (json_int_t)m->conversation, "message",
			       (json_int_t)m->message, "author", "kind", "agent", "name",
			       m->author_name, "body", m->body ? m->body : "", "at", m->at);
	if (!ev)
		return -1;
	chat_push_customer(arg, m->customer, ev);
	return 0;
}

struct chat *chat_new(struct app *app, char **error_r)
{
	struct chat *c = calloc(1, sizeof(*c));
	if (!c)
		abort();
	c->app = app;
	c->customers = idmap_new();
	c->agents = idmap_new();
	c->stats_timer = event_new(app->base, -1, EV_PERSIST, stats_cb, c);
	struct timeval every = {STATS_EVERY_S, 0};
	event_add(c->stats_timer, &every);
	const struct config *cfg = app->cfg;
	ndjson_limits_from_config(&c->limits, cfg);
	listener_set_max_connections(cfg->max_connections);
	if (*cfg->listen_client_tls) {
		c->tls_ctx = tls_server_ctx_new(cfg, config_requires_client_cert(cfg, "client_tls"),
						error_r);
		if (!c->tls_ctx)
			goto fail;
	}
	for (int i = 0; i < L_COUNT; i++) {
		const char *addr = cfg_addr(cfg, i);
		c->addr[i] = strdup(addr);
		if (!*addr)
			continue;
		c->l[i] = listener_new(app->base, lname[i], addr, i == L_TLS ? c->tls_ctx : NULL,
				       on_accept, c, error_r);
		if (!c->l[i])
			goto fail;
	}
	outbound_register(app->outbound, "chat", chat_outbound, c);
	return c;
fail:
	chat_free(&c);
	return NULL;
}

void chat_free(struct chat **cp)
{
	struct chat *c = *cp;
	if (!c)
		return;
	*cp = NULL;
	for (int i = 0; i < L_COUNT; i++) {
		listener_free(&c->l[i]);
		free(c->addr[i]);
	}
	if (c->tls_ctx)
		SSL_CTX_free(c->tls_ctx);
	idmap_free(&c->customers);
	idmap_free(&c->agents);
	if (c->stats_timer)
		event_free(c->stats_timer);
	free(c);
}

struct chat_reload {
	const struct config *cfg;
	SSL_CTX *ctx;
	bool rebind[L_COUNT];
	struct listener *nl[L_COUNT];
};

struct chat_reload *chat_reload_prepare(struct chat *c, const struct config *cfg, char **error_r)
{
	struct chat_reload *rl = calloc(1, sizeof(*rl));
	if (!rl)
		abort();
	rl->cfg = cfg;
	if (*cfg->listen_client_tls) {
		rl->ctx = tls_server_ctx_new(cfg, config_requires_client_cert(cfg, "client_tls"),
					     error_r);
		if (!rl->ctx) {
			free(rl);
			return NULL;
		}
	}
	for (int i = 0; i < L_COUNT; i++) {
		const char *addr = cfg_addr(cfg, i);
		rl->rebind[i] = strcmp(addr, c->addr[i]) != 0;
		if (!rl->rebind[i] || !*addr)
			continue;
		rl->nl[i] = listener_new(c->app->base, lname[i], addr, i == L_TLS ? rl->ctx : NULL,
					 on_accept, c, error_r);
		if (!rl->nl[i]) {
			chat_reload_abort(c, rl);
			return NULL;
		}
	}
	return rl;
}

void chat_reload_abort(struct chat *c, struct chat_reload *rl)
{
	for (int i = 0; i < L_COUNT; i++)
		listener_free(&rl->nl[i]);
	if (rl->ctx)
		SSL_CTX_free(rl->ctx);
	free(rl);
}

void chat_reload_commit(struct chat *c, struct chat_reload *rl)
{
	const struct config *cfg = rl->cfg;
	for (int i = 0; i < L_COUNT; i++) {
		if (!rl->rebind[i])
			continue;
		listener_free(&c->l[i]);
		c->l[i] = rl->nl[i];
		log_info("listener_moved", "listener=%s from=%s to=%s", lname[i],
			 *c->addr[i] ? c->addr[i] : "off",
			 *cfg_addr(cfg, i) ? cfg_addr(cfg, i) : "off");
		free(c->addr[i]);
		c->addr[i] = strdup(cfg_addr(cfg, i));
	}
	if (c->l[L_TLS])
		listener_set_tls_ctx(c->l[L_TLS], rl->ctx);
	if (c->tls_ctx)
		SSL_CTX_free(c->tls_ctx);
	c->tls_ctx = rl->ctx;
	ndjson_limits_from_config(&c->limits, cfg);
	listener_set_max_connections(cfg->max_connections);
	free(rl);
}

void chat_stop_accepting(struct chat *c)
{
	c->draining = true;
	for (int i = 0; i < L_COUNT; i++)
		if (c->l[i])
			listener_disable(c->l[i]);
}

unsigned chat_in_flight(const struct chat *c)
{
	return c->in_flight;
}
