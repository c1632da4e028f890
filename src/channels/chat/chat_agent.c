/* Agent sessions (SPEC §1.2): hello with login and password (Argon2id verified on a worker;
 * repeated failures from one address or login are slowed down), presence, message, resolve. */
#include "chat_internal.h"
#include "contactd/app.h"
#include "contactd/log.h"
#include "contactd/ndjson.h"
#include "contactd/outbound.h"
#include "contactd/routing.h"
#include "contactd/secret.h"
#include "contactd/sla.h"
#include "contactd/store.h"
#include "contactd/worker.h"

#include <event2/event.h>
#include <openssl/crypto.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define MAX_LOGIN	   64
#define MAX_PASSWORD	   1024
#define FAIL_SLOTS	   1024 /* remembered failure sources (addresses and logins) */
#define FAIL_WINDOW_S	   900	/* failures older than this are forgotten */
#define FAIL_FREE_ATTEMPTS 3	/* failures before replies slow down */
#define FAIL_MAX_DELAY_MS  8000

/* Failed logins by source ("ip:1.2.3.4" or "login:alice"): a small table, oldest replaced. */
static struct fail_slot {
	char key[96];
	unsigned count;
	time_t last;
} fails[FAIL_SLOTS];

static struct fail_slot *fail_find(const char *key, bool create)
{
	time_t now = time(NULL);
	struct fail_slot *oldest = &fails[0];
	for (int i = 0; i < FAIL_SLOTS; i++) {
		struct fail_slot *f = &fails[i];
		if (f->count && now - f->last > FAIL_WINDOW_S)
			f->count = 0;
		if (f->count && strcmp(f->key, key) == 0)
			return f;
		if (!f->count || f->last < oldest->last)
			oldest = f->count ? oldest : f;
	}
	if (!create)
		return NULL;
	snprintf(oldest->key, sizeof(oldest->key), "%s", key);
	oldest->count = 0;
	return oldest;
}

static void fail_note(const char *kind, const char *value)
{
	char key[96];
	snprintf(key, sizeof(key), "%s:%s", kind, value);
	struct fail_slot *f = fail_find(key, true);
	f->count++;
	f->last = time(NULL);
}

static unsigned fail_count(const char *kind, const char *value)
{
	char key[96];
	snprintf(key, sizeof(key), "%s:%s", kind, value);
	struct fail_slot *f = fail_find(key, false);
	return f ? f->count : 0;
}

static void fail_clear(const char *kind, const char *value)
{
	char key[96];
	snprintf(key, sizeof(key), "%s:%s", kind, value);
	struct fail_slot *f = fail_find(key, false);
	if (f)
		f->count = 0;
}

/* 250 ms doubling per failure beyond the free ones, at most 8 s. */
static int fail_delay_ms(unsigned failures)
{
	if (failures < FAIL_FREE_ATTEMPTS)
		return 0;
	unsigned shift = failures - FAIL_FREE_ATTEMPTS;
	int ms = shift >= 6 ? FAIL_MAX_DELAY_MS : 250 << shift;
	return ms > FAIL_MAX_DELAY_MS ? FAIL_MAX_DELAY_MS : ms;
}

struct login {
	struct chat_op *op;
	char login[MAX_LOGIN + 1];
	char *password;
	json_t *profile; /* from the store, with password_hash */
	bool by_token;	 /* an API token instead of a password */
	bool ok;
	struct event *delay;
};

static void login_free(void *p)
{
	struct login *l = p;
	if (l->password) {
		OPENSSL_cleanse(l->password, strlen(l->password));
		free(l->password);
	}
	json_decref(l->profile);
	if (l->delay)
		event_free(l->delay);
	free(l);
}

static void refuse_now(struct login *l)
{
	struct chat_op *op = l->op;
	chat_reply_error(op, "unauthorized", "wrong login or password");
	if (op->s->conn)
		ndjson_conn_close(op->s->conn, "unauthorized");
	chat_op_free(op);
}

static void refuse_timer(evutil_socket_t fd, short what, void *arg)
{
	refuse_now(arg);
}

/* A failed login: counted, then answered after the delay its source has earned. */
static void refuse(struct login *l)
{
	struct session *s = l->op->s;
	fail_note("ip", s->peer_ip);
	fail_note("login", l->login);
	unsigned n = fail_count("ip", s->peer_ip);
	unsigned m = fail_count("login", l->login);
	int ms = fail_delay_ms(n > m ? n : m);
	log_warn("agent_login_failed", "peer=%s login_len=%zu failures=%u delay_ms=%d", s->peer_ip,
		 strlen(l->login), n > m ? n : m, ms);
	if (ms == 0) {
		refuse_now(l);
		return;
	}
	l->delay = evtimer_new(chat_app(s->chat)->base, refuse_timer, l);
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	evtimer_add(l->delay, &tv);
}

/* A hash verified for unknown logins, so that they take as long as known ones. */
static char dummy_hash[SECRET_HASH_MAX];
static pthread_once_t dummy_once = PTHREAD_ONCE_INIT;

static void make_dummy_hash(void)
{
	if (secret_password_hash("not-a-password", dummy_hash) < 0)
		dummy_hash[0] = '\0';
}

static void verify_work(void *arg)
{
	struct login *l = arg;
	const char *hash = json_string_value(json_object_get(l->profile, "password_hash"));
	if (!hash) {
		pthread_once(&dummy_once, make_dummy_hash);
		secret_password_verify(dummy_hash, l->password);
		l->ok = false;
		return;
	}
	l->ok = secret_password_verify(hash, l->password);
}

static void verify_done(void *arg)
{
	struct login *l = arg;
	struct chat_op *op = l->op;
	struct session *s = op->s;
	if (!l->ok) {
		refuse(l);
		return;
	}
	fail_clear("ip", s->peer_ip);
	fail_clear("login", l->login);
	if (chat_op_live(op)) {
		json_t *agent = json_deep_copy(l->profile);
		json_object_del(agent, "password_hash");
		s->role = ROLE_AGENT;
		s->id = json_integer_value(json_object_get(agent, "id"));
		s->agent = agent;
		s->hello_busy = false;
		chat_register(s);
		chat_reply_ok(op, json_pack("{s:O}", "agent", agent));
		ndjson_conn_set_ready(s->conn);
		log_info("agent_hello", "conn=%llu agent=%lld",
			 (unsigned long long)ndjson_conn_id(s->conn), (long long)s->id);
	}
	chat_op_free(op);
}

static void auth_cb(void *arg, const struct store_reply *rep)
{
	struct login *l = arg;
	struct chat_op *op = l->op;
	if (rep->status != STORE_OK) {
		chat_reply_store_error(op, rep);
		op->s->hello_busy = false;
		if (op->s->conn)
			ndjson_conn_resume(op->s->conn);
		chat_op_free(op);
		return;
	}
	l->profile = rep->value ? json_loads(rep->value, 0, NULL) : NULL;
	if (!json_is_object(l->profile)) {
		json_decref(l->profile);
		l->profile = json_object(); /* unknown login: verify_work spends the same time */
	}
	if (l->by_token) {
		/* the token was checked already; the login only has to exist */
		l->ok = json_object_get(l->profile, "id") != NULL;
		verify_done(l);
		return;
	}
	if (worker_submit(chat_app(op->s->chat)->workers, verify_work, verify_done, l) < 0) {
		chat_reply_error(op, "unavailable", "too many logins at once; retry");
		op->s->hello_busy = false;
		if (op->s->conn)
			ndjson_conn_resume(op->s->conn);
		chat_op_free(op);
	}
}

static void lookup_agent(struct login *l)
{
	struct chat_op *op = l->op;
	struct session *s = op->s;
	if (store_call_json(chat_app(s->chat)->store, STORE_Q_AGENT_AUTH,
			    json_pack("{s:s}", "login", l->login), auth_cb, l) < 0) {
		chat_reply_error(op, "unavailable", "the store is unavailable; retry later");
		s->hello_busy = false;
		if (s->conn)
			ndjson_conn_resume(s->conn);
		chat_op_free(op);
	}
}

/* An API token may log in as any agent when it carries conversations:write or admin: it
 * stands for an integration (an SSO gateway, a softphone) acting for its agents. */
static void token_cb(void *arg, const struct store_reply *rep)
{
	struct login *l = arg;
	struct chat_op *op = l->op;
	if (rep->status != STORE_OK) {
		chat_reply_store_error(op, rep);
		op->s->hello_busy = false;
		if (op->s->conn)
			ndjson_conn_resume(op->s->conn);
		chat_op_free(op);
		return;
	}
	json_t *tok = rep->value ? json_loads(rep->value, 0, NULL) : NULL;
	bool allowed = false;
	size_t i;
	json_t *v;
	json_array_foreach(json_object_get(tok, "scopes"), i, v)
	{
		const char *sc = json_string_value(v);
		if (sc && (strcmp(sc, "conversations:write") == 0 || strcmp(sc, "admin") == 0))
			allowed = true;
	}
	json_decref(tok);
	if (!allowed) {
		refuse(l);
		return;
	}
	lookup_agent(l);
}

void chat_agent_hello(struct session *s, json_t *frame, const json_t *ref)
{
	struct chat_op *op = chat_op_new(s, frame, ref);
	struct login *l = calloc(1, sizeof(*l));
	l->op = op;
	op->data = l;
	op->data_free = login_free;
	s->hello_busy = true;
	json_t *login = json_object_get(frame, "login");
	json_t *password = json_object_get(frame, "password");
	json_t *token = json_object_get(frame, "token");
	if (!password && json_is_string(token)) {
		password = token;
		l->by_token = true;
	}
	if (!json_is_string(login) || !json_is_string(password)) {
		chat_reply_error(op, "bad_frame",
				 "login and password (or token): strings are required");
		s->hello_busy = false;
		ndjson_conn_resume(s->conn);
		chat_op_free(op);
		return;
	}
	if (json_string_length(login) > MAX_LOGIN || json_string_length(password) > MAX_PASSWORD) {
		refuse(l);
		return;
	}
	snprintf(l->login, sizeof(l->login), "%s", json_string_value(login));
	if (!l->by_token) {
		l->password = strdup(json_string_value(password));
		lookup_agent(l);
		return;
	}
	char hash[SECRET_SHA256_HEXLEN + 1];
	secret_sha256_hex(json_string_value(password), json_string_length(password), hash);
	const char *params[1] = {hash};
	if (store_call(chat_app(s->chat)->store, STORE_Q_TOKEN_LOOKUP, 1, params, token_cb, l) <
	    0) {
		chat_reply_error(op, "unavailable", "the store is unavailable; retry later");
		s->hello_busy = false;
		ndjson_conn_resume(s->conn);
		chat_op_free(op);
	}
}

/* ---- requests after hello -------------------------------------------------------------- */

/* After cd_conversation_escalate: the answer, then the router and whoever is affected. */
static void agent_escalated(struct chat_op *op, json_t *res)
{
	struct app *app = chat_app(op->s->chat);
	json_t *conv = json_object_get(res, "conversation");
	chat_reply_ok(op, json_pack("{s:O, s:O, s:O, s:O}", "conversation", conv, "tier",
				    json_object_get(res, "tier"), "priority",
				    json_object_get(res, "priority"), "status",
				    json_object_get(res, "status")));
	if (json_is_true(json_object_get(res, "duplicate")))
		return;
	int64_t id = json_integer_value(conv);
	int tier = (int)json_integer_value(json_object_get(res, "tier"));
	int64_t released = json_integer_value(json_object_get(res, "released_agent"));
	int64_t holder =
	    released > 0 ? released : json_integer_value(json_object_get(res, "agent"));
	log_info("escalated", "conversation=%lld by_agent=%lld tier=%d released=%s", (long long)id,
		 (long long)op->s->id, tier, released > 0 ? "yes" : "no");
	sla_tell_escalated(app->sla, id, holder, tier,
			   json_string_value(json_object_get(res, "reason")));
	json_t *route = json_object_get(res, "route");
	if (released > 0 && json_is_object(route))
		routing_conversation_requeued(app->routing, route); /* frees the holder's slot */
	routing_conversation_escalated(app->routing, id, tier,
				       (int)json_integer_value(json_object_get(res, "priority")));
}

/* After cd_conversation_transfer: back in a queue, or handed to an agent at once. */
static void agent_transferred(struct chat_op *op, json_t *res)
{
	struct chat *c = op->s->chat;
	json_t *conv = json_object_get(res, "conversation");
	json_t *to = json_object_get(res, "agent");
	chat_reply_ok(op, json_pack("{s:O, s:O, s:O, s:O}", "conversation", conv, "queue",
				    json_object_get(res, "queue"), "agent", to, "status",
				    json_object_get(res, "status")));
	json_t *route = json_object_get(res, "route");
	if (json_is_true(json_object_get(res, "duplicate")) || !json_is_object(route))
		return;
	int64_t from = json_integer_value(json_object_get(res, "from_agent"));
	if (!json_is_integer(to)) {
		routing_conversation_requeued(chat_app(c)->routing, route);
		return;
	}
	int64_t agent = json_integer_value(to);
	if (agent == from)
		return; /* it had that agent already */
	routing_conversation_handed(chat_app(c)->routing, route, agent);
	chat_push_agent(
	    c, agent,
	    json_pack("{s:s, s:O, s:O, s:O, s:O, s:s, s:O}", "type", "assigned", "conversation",
		      conv, "customer", json_object_get(res, "customer"), "channel",
		      json_object_get(res, "channel"), "queue", json_object_get(res, "queue"),
		      "reason", "transfer", "from_agent", json_object_get(res, "from_agent")));
	chat_push_customer(c, json_integer_value(json_object_get(res, "customer")),
			   json_pack("{s:s, s:O, s:{s:O}}", "type", "assigned", "conversation",
				     conv, "agent", "name", json_object_get(res, "agent_name")));
}

static void simple_cb(void *arg, const struct store_reply *rep)
{
	struct chat_op *op = arg;
	json_t *res =
	    rep->status == STORE_OK && rep->value ? json_loads(rep->value, 0, NULL) : NULL;
	if (!res) {
		chat_reply_store_error(op, rep);
		chat_op_free(op);
		return;
	}
	const char *type = json_string_value(json_object_get(op->frame, "type"));
	struct chat *c = op->s->chat;
	if (strcmp(type, "message") == 0) {
		json_t *conv = json_object_get(res, "conversation");
		json_t *msg = json_object_get(res, "message");
		chat_reply_ok(op, json_pack("{s:O, s:O}", "message", msg, "conversation", conv));
		if (!json_is_true(json_object_get(res, "duplicate")) &&
		    !json_is_true(json_object_get(res, "internal"))) {
			struct outbound_msg m = {
			    .conversation = json_integer_value(conv),
			    .message = json_integer_value(msg),
			    .customer = json_integer_value(json_object_get(res, "customer")),
			    .channel = json_string_value(json_object_get(res, "channel")),
			    .author_name = json_string_value(json_object_get(op->s->agent, "name")),
			    .body = json_string_value(json_object_get(op->frame, "body")),
			    .at = json_string_value(json_object_get(res, "created_at")),
			};
			outbound_deliver(chat_app(c)->outbound, &m);
		}
	} else if (strcmp(type, "transfer") == 0) {
		agent_transferred(op, res);
	} else if (strcmp(type, "escalate") == 0) {
		agent_escalated(op, res);
	} else if (strcmp(type, "pending") == 0) {
		chat_reply_ok(op, json_pack("{s:O, s:O}", "conversation",
					    json_object_get(res, "conversation"), "status",
					    json_object_get(res, "status")));
	} else if (strcmp(type, "resolve") == 0) {
		chat_reply_ok(
		    op, json_pack("{s:O}", "conversation", json_object_get(res, "conversation")));
		if (!json_is_true(json_object_get(res, "duplicate")))
			routing_conversation_resolved(
			    chat_app(c)->routing,
			    json_integer_value(json_object_get(res, "conversation")));
	} else {
		chat_reply_ok(op, json_pack("{s:O}", "status", json_object_get(res, "status")));
		routing_agent_status(chat_app(c)->routing, op->s->id,
				     json_string_value(json_object_get(res, "status")));
	}
	json_decref(res);
	chat_op_free(op);
}

static void answer_done(void *arg, const char *code, const char *message)
{
	struct chat_op *op = arg;
	if (code)
		chat_reply_error(op, code, message);
	else
		chat_reply_ok(op, json_pack("{s:O}", "offer", json_object_get(op->frame, "offer")));
	chat_op_free(op);
}

void chat_agent_gone(struct session *s)
{
	struct app *app = chat_app(s->chat);
	routing_agent_status(app->routing, s->id, "offline");
	json_t *p = json_pack("{s:I, s:s}", "agent", (json_int_t)s->id, "status", "offline");
	store_call_json(app->store, STORE_Q_AGENT_PRESENCE, p, NULL, NULL); /* best effort */
}

void chat_agent_request(struct session *s, const char *type, json_t *frame, const json_t *ref)
{
	struct chat_op *op = chat_op_new(s, frame, ref);
	json_int_t agent = (json_int_t)s->id;
	if (strcmp(type, "presence") == 0) {
		const char *st = json_string_value(json_object_get(frame, "status"));
		if (!st) {
			chat_reply_error(op, "bad_frame", "status: is required");
			chat_op_free(op);
			return;
		}
		chat_call(op, STORE_Q_AGENT_PRESENCE,
			  json_pack("{s:I, s:s}", "agent", agent, "status", st), simple_cb);
		return;
	}
	if (strcmp(type, "message") == 0 || strcmp(type, "resolve") == 0) {
		int64_t conv;
		if (!chat_id_field(op, "conversation", true, &conv)) {
			chat_op_free(op);
			return;
		}
		json_t *p = json_deep_copy(frame);
		json_object_del(p, "type");
		json_object_del(p, "ref");
		json_object_set_new(p, "agent", json_integer(agent));
		json_object_set_new(p, "conversation", json_integer(conv));
		if (strcmp(type, "message") == 0 && !json_is_string(json_object_get(p, "body"))) {
			json_decref(p);
			chat_reply_error(op, "bad_frame", "body: a string is required");
			chat_op_free(op);
			return;
		}
		chat_call(
		    op, strcmp(type, "message") == 0 ? STORE_Q_AGENT_MESSAGE : STORE_Q_CONV_RESOLVE,
		    p, simple_cb);
		return;
	}
	if (strcmp(type, "subscribe") == 0) {
		const char *role = json_string_value(json_object_get(s->agent, "role"));
		json_t *topics = json_object_get(frame, "topics");
		if (!role || strcmp(role, "agent") == 0) {
			chat_reply_error(op, "forbidden",
					 "subscribe is for supervisors and admins");
		} else if (!json_is_array(topics)) {
			chat_reply_error(op, "bad_frame", "topics: an array is required");
		} else {
			bool stats = false, sla = false, bad = false;
			size_t i;
			json_t *t;
			json_array_foreach(topics, i, t)
			{
				const char *name = json_string_value(t);
				if (name && strcmp(name, "stats") == 0)
					stats = true;
				else if (name && strcmp(name, "sla") == 0)
					sla = true;
				else
					bad = true;
			}
			if (bad) {
				chat_reply_error(op, "invalid",
						 "topics: each must be stats or sla");
			} else {
				s->sub_stats = stats;
				s->sub_sla = sla;
				chat_reply_ok(op, json_pack("{s:O}", "topics", topics));
				if (stats) { /* the current picture at once, then every 5 s */
					json_t *ev = routing_stats_json(chat_app(s->chat)->routing);
					json_object_set_new(ev, "type", json_string("stats"));
					ndjson_send(s->conn, ev);
				}
			}
		}
		chat_op_free(op);
		return;
	}
	if (strcmp(type, "typing") == 0) {
		int64_t conv, assigned = 0, customer = 0;
		if (!chat_id_field(op, "conversation", true, &conv)) {
			chat_op_free(op);
			return;
		}
		if (routing_conversation_parties(chat_app(s->chat)->routing, conv, &assigned,
						 &customer) == 0 &&
		    assigned == s->id)
			chat_push_customer(s->chat, customer,
					   json_pack("{s:s, s:I}", "type", "typing", "conversation",
						     (json_int_t)conv));
		if (ref)
			chat_reply_ok(op, NULL);
		chat_op_free(op);
		return;
	}
	if (strcmp(type, "transfer") == 0) {
		int64_t conv;
		json_t *queue = json_object_get(frame, "queue");
		json_t *to = json_object_get(frame, "agent");
		if (!chat_id_field(op, "conversation", true, &conv)) {
			chat_op_free(op);
			return;
		}
		if (!queue == !to || (queue && !json_is_string(queue) && !json_is_integer(queue)) ||
		    (to && !json_is_string(to) && !json_is_integer(to))) {
			chat_reply_error(op, "invalid",
					 queue || to
					     ? "give either queue or agent (a name or an id)"
					     : "queue: is required (or agent)");
			chat_op_free(op);
			return;
		}
		json_t *cmid = json_object_get(frame, "client_msg_id");
		json_t *p =
		    json_pack("{s:I, s:I, s:O, s:O}", "conversation", (json_int_t)conv, "by_agent",
			      (json_int_t)s->id, queue ? "queue" : "agent", queue ? queue : to,
			      "client_msg_id", cmid ? cmid : json_null());
		chat_call(op, STORE_Q_CONV_TRANSFER, p, simple_cb);
		return;
	}
	if (strcmp(type, "escalate") == 0 || strcmp(type, "pending") == 0) {
		int64_t conv;
		const char *reason = NULL;
		if (!chat_id_field(op, "conversation", true, &conv) ||
		    (type[0] == 'e' && !chat_opt_string(op, "reason", &reason, 500))) {
			chat_op_free(op);
			return;
		}
		if (type[0] == 'e' && (!reason || !*reason)) {
			chat_reply_error(op, "invalid", "reason: is required");
			chat_op_free(op);
			return;
		}
		json_t *cmid = json_object_get(frame, "client_msg_id");
		json_t *p = json_pack("{s:I, s:I, s:s?, s:O}", "conversation", (json_int_t)conv,
				      "by_agent", (json_int_t)s->id, "reason", reason,
				      "client_msg_id", cmid ? cmid : json_null());
		chat_call(op, type[0] == 'e' ? STORE_Q_CONV_ESCALATE : STORE_Q_CONV_PENDING, p,
			  simple_cb);
		return;
	}
	if (strcmp(type, "accept") == 0 || strcmp(type, "reject") == 0) {
		int64_t offer;
		const char *reason;
		if (!chat_id_field(op, "offer", true, &offer) ||
		    !chat_opt_string(op, "reason", &reason, 200)) {
			chat_op_free(op);
			return;
		}
		routing_offer_answer(chat_app(s->chat)->routing, s->id,
				     json_string_value(json_object_get(s->agent, "name")), offer,
				     type[0] == 'a', reason, answer_done, op);
		return;
	}
	chat_reply_error(op, "bad_frame", "unknown request type for an agent");
	chat_op_free(op);
}
