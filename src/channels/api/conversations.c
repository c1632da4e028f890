/* The conversation API of SPEC §4: list and read conversations, act on them (message,
 * transfer, escalate, resolve, survey) and the realtime statistics. Validation and the
 * Idempotency-Key replay live in the store (sql/0008_conversation_api.sql, one transaction
 * per request); this file turns HTTP into those calls and, after a committed action, does
 * what the client protocol does after the same store call: tell the router, deliver an
 * agent's message to the customer, tell the agents concerned (see chat_agent.c). */
#include "conversations.h"

#include "contactd/app.h"
#include "contactd/chat.h"
#include "contactd/log.h"
#include "contactd/outbound.h"
#include "contactd/routing.h"
#include "contactd/sla.h"
#include "contactd/store.h"

#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#define CONV_DEFAULT_LIMIT 50
#define CONV_MAX_LIMIT	   500
#define CONV_MAX_ID_DIGITS 18
#define IDEM_KEY_MAX	   255
#define FILTER_MAX	   200

enum conv_action { ACT_MESSAGES, ACT_TRANSFER, ACT_ESCALATE, ACT_RESOLVE, ACT_SURVEY, ACT__COUNT };

static const char *const action_names[ACT__COUNT] = {"messages", "transfer", "escalate", "resolve",
						     "survey"};

static const char *const list_params[] = {"limit", "after",    "status", "queue",
					  "agent", "customer", "channel"};

/* The action named SEG, or -1. */
static int action_of(const char *seg)
{
	for (int i = 0; i < ACT__COUNT; i++)
		if (strcmp(seg, action_names[i]) == 0)
			return i;
	return -1;
}

/* A conversation id from a path segment: 1 to 18 digits, not zero. Returns 0 when SEG is
 * not one. */
static long long parse_id(const char *seg)
{
	size_t n = strlen(seg);
	if (n == 0 || n > CONV_MAX_ID_DIGITS || strspn(seg, "0123456789") != n)
		return 0;
	return strtoll(seg, NULL, 10);
}

static bool is_get(const struct api_req *r)
{
	return r->method == EVHTTP_REQ_GET || r->method == EVHTTP_REQ_HEAD;
}

/* ---- replies from the store -------------------------------------------------------------- */

/* The store's JSON value as the 200 body; no value = 404. */
static void value_cb(void *arg, const struct store_reply *rep)
{
	struct api_req *r = arg;
	if (rep->status != STORE_OK)
		api_reply_store_error(r, rep);
	else if (!rep->value)
		api_reply_error(r, 404, "not_found", "not found", NULL);
	else
		api_reply_text(r, 200, rep->value);
}

static void call_json(struct api_req *r, enum store_query q, json_t *p, store_cb cb)
{
	if (store_call_json(r->app->store, q, p, cb, r) < 0)
		api_reply_unavailable(r);
}

/* ---- GET /v1/conversations --------------------------------------------------------------- */

static void handle_list(struct api_req *r)
{
	json_t *p = json_object();
	struct evkeyval *kv;
	TAILQ_FOREACH(kv, &r->query, next)
	{
		bool known = false;
		for (size_t i = 0; i < sizeof(list_params) / sizeof(list_params[0]); i++)
			known = known || strcmp(kv->key, list_params[i]) == 0;
		const char *why = NULL;
		if (!known)
			why = "unknown query parameter";
		else if (json_object_get(p, kv->key))
			why = "given twice";
		else if (!*kv->value || strlen(kv->value) > FILTER_MAX)
			why = "must be 1 to 200 characters";
		if (why) {
			char field[65], msg[160];
			snprintf(field, sizeof(field), "%s", kv->key);
			snprintf(msg, sizeof(msg), "%s: %s", field, why);
			json_decref(p);
			api_reply_error(r, 400, "invalid", msg, field);
			return;
		}
		json_object_set_new(p, kv->key, json_string(kv->value));
	}
	const char *lim = json_string_value(json_object_get(p, "limit"));
	if (lim) {
		char *end;
		long n = strtol(lim, &end, 10);
		if (*end || n < 1 || n > CONV_MAX_LIMIT) {
			json_decref(p);
			api_reply_error(r, 400, "invalid",
					"limit: must be an integer from 1 to 500", "limit");
			return;
		}
	}
	call_json(r, STORE_Q_API_CONV_LIST, p, value_cb);
}

/* ---- GET /v1/conversations/{id} ---------------------------------------------------------- */

static void not_found(struct api_req *r)
{
	api_reply_error(r, 404, "not_found", "no such conversation", NULL);
}

static void handle_get(struct api_req *r)
{
	long long id = parse_id(r->segs[2]);
	if (id <= 0) {
		not_found(r);
		return;
	}
	call_json(r, STORE_Q_API_CONV_GET, json_pack("{s:I}", "conversation", (json_int_t)id),
		  value_cb);
}

/* ---- after a committed action: what the client protocol does after the same call ---------- */

static int64_t jint(const json_t *o, const char *key)
{
	return json_integer_value(json_object_get(o, key));
}

/* A message: to the customer over the conversation's channel unless internal, and to the
 * conversation's agent when someone else wrote it. */
static void after_message(struct app *app, json_t *res)
{
	json_t *author = json_object_get(res, "author");
	bool internal = json_is_true(json_object_get(res, "internal"));
	const char *name = json_string_value(json_object_get(author, "name"));
	const char *kind = json_string_value(json_object_get(author, "kind"));
	int64_t author_agent = kind && strcmp(kind, "agent") == 0 ? jint(author, "id") : 0;
	if (!internal) {
		struct outbound_msg m = {
		    .conversation = jint(res, "conversation"),
		    .message = jint(res, "message"),
		    .customer = jint(res, "customer"),
		    .channel = json_string_value(json_object_get(res, "channel")),
		    .author_name = name ? name : "api",
		    .body = json_string_value(json_object_get(res, "body")),
		    .at = json_string_value(json_object_get(res, "created_at")),
		};
		outbound_deliver(app->outbound, &m);
	}
	int64_t assigned = jint(res, "assigned_agent");
	if (assigned > 0 && assigned != author_agent && app->chat)
		chat_notify_agent(
		    app->chat, assigned,
		    json_pack("{s:s, s:O, s:O, s:O, s:O, s:O, s:b}", "type", "message",
			      "conversation", json_object_get(res, "conversation"), "message",
			      json_object_get(res, "message"), "author", author, "body",
			      json_object_get(res, "body"), "at",
			      json_object_get(res, "created_at"), "internal", internal));
}

/* A transfer: back in a queue (the router offers it), or handed to an agent at once. */
static void after_transfer(struct app *app, json_t *res)
{
	json_t *route = json_object_get(res, "route");
	json_t *to = json_object_get(res, "agent");
	if (!json_is_object(route))
		return;
	if (!json_is_integer(to)) {
		routing_conversation_requeued(app->routing, route);
		return;
	}
	int64_t agent = json_integer_value(to);
	if (agent == jint(res, "from_agent"))
		return; /* it had that agent already */
	routing_conversation_handed(app->routing, route, agent);
	if (!app->chat)
		return;
	json_t *conv = json_object_get(res, "conversation");
	chat_notify_agent(
	    app->chat, agent,
	    json_pack("{s:s, s:O, s:O, s:O, s:O, s:s, s:O}", "type", "assigned", "conversation",
		      conv, "customer", json_object_get(res, "customer"), "channel",
		      json_object_get(res, "channel"), "queue", json_object_get(res, "queue"),
		      "reason", "transfer", "from_agent", json_object_get(res, "from_agent")));
	chat_notify_customer(app->chat, jint(res, "customer"),
			     json_pack("{s:s, s:O, s:{s:O}}", "type", "assigned", "conversation",
				       conv, "agent", "name", json_object_get(res, "agent_name")));
}

/* An escalation: the holder and supervisors hear of it; the router moves it in its line,
 * or back to the queue when its agent is now below its tier. */
static void after_escalate(struct app *app, json_t *res)
{
	int64_t id = jint(res, "conversation");
	int tier = (int)jint(res, "tier");
	int64_t released = jint(res, "released_agent");
	int64_t holder = released > 0 ? released : jint(res, "agent");
	sla_tell_escalated(app->sla, id, holder, tier,
			   json_string_value(json_object_get(res, "reason")));
	json_t *route = json_object_get(res, "route");
	if (released > 0 && json_is_object(route))
		routing_conversation_requeued(app->routing, route); /* frees the holder's slot */
	routing_conversation_escalated(app->routing, id, tier, (int)jint(res, "priority"));
}

static void after_action(struct app *app, int action, json_t *res)
{
	if (json_is_true(json_object_get(res, "duplicate")))
		return;
	switch (action) {
	case ACT_MESSAGES:
		after_message(app, res);
		break;
	case ACT_TRANSFER:
		after_transfer(app, res);
		break;
	case ACT_ESCALATE:
		after_escalate(app, res);
		break;
	case ACT_RESOLVE:
		routing_conversation_resolved(app->routing, jint(res, "conversation"));
		break;
	default:
		break;
	}
}

/* ---- POST /v1/conversations/{id}/{action} ------------------------------------------------- */

static void action_cb(void *arg, const struct store_reply *rep)
{
	struct api_req *r = arg;
	if (rep->status != STORE_OK) {
		api_reply_store_error(r, rep);
		return;
	}
	json_t *res = rep->value ? json_loads(rep->value, 0, NULL) : NULL;
	json_t *body = json_object_get(res, "body");
	int status = (int)json_integer_value(json_object_get(res, "status"));
	if (!json_is_object(body) || status < 200 || status > 299) {
		json_decref(res);
		log_error("api_action_bad_reply", "path=%s", evhttp_request_get_uri(r->req));
		api_reply_error(r, 500, "internal", "internal error (logged)", NULL);
		return;
	}
	struct app *app = r->app;
	int action = action_of(r->segs[3]);
	bool replay = json_is_true(json_object_get(res, "replay"));
	const char *token = json_string_value(json_object_get(r->token, "name"));
	log_info("api_conversation_action",
		 "action=%s conversation=%s status=%d replay=%s token=%s", r->segs[3], r->segs[2],
		 status, replay ? "yes" : "no", token ? token : "-");
	if (replay)
		evhttp_add_header(evhttp_request_get_output_headers(r->req), "Idempotent-Replayed",
				  "true");
	api_reply_json(r, status, json_incref(body)); /* frees R */
	json_t *result = json_object_get(res, "result");
	if (!replay && json_is_object(result))
		after_action(app, action, result);
	json_decref(res);
}

/* The body as a JSON object; an empty body is {}. NULL after replying 400. */
static json_t *read_body(struct api_req *r)
{
	if (evbuffer_get_length(evhttp_request_get_input_buffer(r->req)) == 0)
		return json_object();
	return api_read_object(r);
}

/* The Idempotency-Key header: 1 to 255 visible ASCII characters. Sets *key_r (NULL when
 * absent); false after replying 400. */
static bool idempotency_key(struct api_req *r, const char **key_r)
{
	const char *k =
	    evhttp_find_header(evhttp_request_get_input_headers(r->req), "Idempotency-Key");
	*key_r = k;
	if (!k)
		return true;
	size_t n = strlen(k);
	bool ok = n >= 1 && n <= IDEM_KEY_MAX;
	for (size_t i = 0; ok && i < n; i++)
		ok = k[i] >= 0x20 && k[i] <= 0x7e;
	if (!ok)
		api_reply_error(r, 400, "invalid",
				"Idempotency-Key: must be 1 to 255 visible ASCII characters",
				"Idempotency-Key");
	return ok;
}

static void handle_action(struct api_req *r)
{
	long long id = parse_id(r->segs[2]);
	if (id <= 0) {
		not_found(r);
		return;
	}
	const char *key;
	if (!idempotency_key(r, &key))
		return;
	json_t *body = read_body(r);
	if (!body)
		return;
	char path[96];
	snprintf(path, sizeof(path), "/v1/conversations/%lld/%s", id, r->segs[3]);
	json_t *p = json_pack(
	    "{s:s, s:I, s:o, s:O, s:O, s:s?, s:s}", "action", r->segs[3], "conversation",
	    (json_int_t)id, "body", body, "token", json_object_get(r->token, "id"), "token_name",
	    json_object_get(r->token, "name"), "idempotency_key", key, "path", path);
	if (!p) {
		api_reply_error(r, 500, "internal", "cannot encode the request", NULL);
		return;
	}
	call_json(r, STORE_Q_API_CONV_ACTION, p, action_cb);
}

/* ---- GET /v1/stats/realtime -------------------------------------------------------------- */

/* The router's entry for queue ID in routing_stats_json's queues, or NULL. */
static json_t *router_queue(json_t *rqueues, int64_t id)
{
	size_t i;
	json_t *q;
	json_array_foreach(rqueues, i, q)
	{
		if (jint(q, "queue") == id)
			return q;
	}
	return NULL;
}

/* The router's estimate for a contact arriving now at the end of the line: the estimate of
 * the conversation last in line (LAST, 0 when none waits) scaled by one place more; 0 when
 * nobody waits and an agent of the queue is available; null when it cannot tell. */
static json_t *estimate_new(const struct routing *rt, int64_t last, int waiting, int available)
{
	int pos;
	int64_t wait_s;
	if (last > 0 && routing_position(rt, last, &pos, &wait_s) == 0 && pos > 0 && wait_s >= 0)
		return json_integer((wait_s * (pos + 1) + pos - 1) / pos);
	if (waiting == 0 && available > 0)
		return json_integer(0);
	return json_null();
}

static void realtime_cb(void *arg, const struct store_reply *rep)
{
	struct api_req *r = arg;
	if (rep->status != STORE_OK) {
		api_reply_store_error(r, rep);
		return;
	}
	json_t *db = rep->value ? json_loads(rep->value, 0, NULL) : NULL;
	json_t *stats = routing_stats_json(r->app->routing);
	json_t *rqueues = json_object_get(stats, "queues");
	json_t *out = json_array();
	size_t i;
	json_t *q;
	json_array_foreach(json_object_get(db, "queues"), i, q)
	{
		json_t *rq = router_queue(rqueues, jint(q, "id"));
		int waiting = (int)jint(rq, "waiting");
		json_array_append_new(
		    out, json_pack("{s:O, s:i, s:I, s:O, s:o}", "name", json_object_get(q, "name"),
				   "waiting", waiting, "longest_wait_s",
				   (json_int_t)jint(rq, "longest_wait_s"), "sla_at_risk",
				   json_object_get(q, "sla_at_risk"), "estimated_wait_s",
				   estimate_new(r->app->routing, jint(q, "last_waiting"), waiting,
						(int)jint(rq, "agents_available"))));
	}
	json_t *body =
	    json_pack("{s:o, s:O}", "queues", out, "agents", json_object_get(stats, "agents"));
	json_decref(stats);
	json_decref(db);
	api_reply_json(r, 200, body);
}

static void handle_realtime(struct api_req *r)
{
	if (!routing_loaded(r->app->routing)) {
		api_reply_unavailable(r); /* the router is still loading from the store */
		return;
	}
	if (store_call(r->app->store, STORE_Q_API_REALTIME, 0, NULL, realtime_cb, r) < 0)
		api_reply_unavailable(r);
}

/* ---- routing ----------------------------------------------------------------------------- */

static enum conv_api_claim method_not_allowed(struct api_req *r, const char *allow)
{
	evhttp_add_header(evhttp_request_get_output_headers(r->req), "Allow", allow);
	api_reply_error(r, 405, "method_not_allowed", "method not allowed here", NULL);
	return CONV_API_ANSWERED;
}

enum conv_api_claim conv_api_claim(struct api_req *r)
{
	if (r->nsegs < 2 || strcmp(r->segs[0], "v1") != 0)
		return CONV_API_NOT_MINE;
	if (r->nsegs == 3 && strcmp(r->segs[1], "stats") == 0 &&
	    strcmp(r->segs[2], "realtime") == 0) {
		if (!is_get(r))
			return method_not_allowed(r, "GET");
		r->scope = "reports:read";
		r->handler = handle_realtime;
		return CONV_API_AUTHENTICATE;
	}
	if (strcmp(r->segs[1], "conversations") != 0 || r->nsegs > 4)
		return CONV_API_NOT_MINE;
	if (r->nsegs == 4) {
		if (action_of(r->segs[3]) < 0)
			return CONV_API_NOT_MINE;
		if (r->method != EVHTTP_REQ_POST)
			return method_not_allowed(r, "POST");
		r->scope = "conversations:write";
		r->handler = handle_action;
		return CONV_API_AUTHENTICATE;
	}
	if (!is_get(r))
		return method_not_allowed(r, "GET");
	r->scope = "conversations:read";
	r->handler = r->nsegs == 2 ? handle_list : handle_get;
	return CONV_API_AUTHENTICATE;
}
