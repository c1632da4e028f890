/* Inbound events and customers over HTTP (SPEC §4): POST /v1/events (sms, whatsapp, social,
 * web, api), POST /v1/phone/events (SPEC §2 over HTTP), GET /v1/customers/{id}, POST
 * /v1/customers/{id}/merge {into} and POST /v1/customers/{id}/unmerge. Validation,
 * Idempotency-Key replay and the writes are one store call each (sql/0011, cd_api_post);
 * after the commit this file does what the other channels do after theirs: put a new
 * conversation into routing, tell the conversation's agent about the customer's message,
 * apply a call's effects on routing. */
#include "events.h"

#include "contactd/app.h"
#include "contactd/chat.h"
#include "contactd/config.h"
#include "contactd/log.h"
#include "contactd/phone.h"
#include "contactd/routing.h"
#include "contactd/sla.h"
#include "contactd/store.h"

#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EVENTS_IDEM_KEY_MAX 255

enum events_op { OP_EVENTS, OP_PHONE, OP_MERGE, OP_UNMERGE };
static const char *const op_names[] = {"events", "phone_events", "merge", "unmerge"};

/* A positive id of at most 18 digits, or -1. */
static long long parse_id(const char *s)
{
	if (!s || !*s || strlen(s) > 18)
		return -1;
	long long v = 0;
	for (const char *p = s; *p; p++) {
		if (*p < '0' || *p > '9')
			return -1;
		v = v * 10 + (*p - '0');
	}
	return v > 0 ? v : -1;
}

static enum events_op op_of(const struct api_req *r)
{
	if (strcmp(r->segs[1], "events") == 0)
		return OP_EVENTS;
	if (strcmp(r->segs[1], "phone") == 0)
		return OP_PHONE;
	return strcmp(r->segs[3], "merge") == 0 ? OP_MERGE : OP_UNMERGE;
}

/* After a committed inbound event: routing and the agent's desktop. */
static void after_event(struct app *app, const json_t *res)
{
	if (!json_is_true(json_object_get(res, "created")))
		return;
	json_t *route = json_object_get(res, "route");
	if (json_is_true(json_object_get(res, "opened")) && json_is_object(route)) {
		routing_conversation_opened(app->routing, route);
		sla_kick_route(app->sla, route); /* its SLA clocks, if it has a policy */
	}
	int64_t agent = json_integer_value(json_object_get(res, "agent"));
	if (agent > 0) {
		chat_notify_agent(app->chat, agent,
				  json_pack("{s:s, s:O, s:O, s:{s:s, s:O}}", "type", "message",
					    "conversation", json_object_get(res, "conversation"),
					    "message", json_object_get(res, "message"), "author",
					    "kind", "customer", "id",
					    json_object_get(res, "customer")));
		sla_kick(app->sla);
	}
}

static void post_cb(void *arg, const struct store_reply *rep)
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
		log_error("api_post_bad_reply", "path=%s", evhttp_request_get_uri(r->req));
		api_reply_error(r, 500, "internal", "internal error (logged)", NULL);
		return;
	}
	struct app *app = r->app;
	enum events_op op = op_of(r);
	bool replay = json_is_true(json_object_get(res, "replay"));
	const char *token = json_string_value(json_object_get(r->token, "name"));
	log_info("api_post", "op=%s status=%d replay=%s conversation=%lld token=%s", op_names[op],
		 status, replay ? "yes" : "no",
		 (long long)json_integer_value(json_object_get(body, "conversation")),
		 token ? token : "-");
	if (replay)
		evhttp_add_header(evhttp_request_get_output_headers(r->req), "Idempotent-Replayed",
				  "true");
	api_reply_json(r, status, json_incref(body)); /* frees R */
	json_t *result = json_object_get(res, "result");
	if (!replay && json_is_object(result)) {
		if (op == OP_EVENTS)
			after_event(app, result);
		else if (op == OP_PHONE)
			phone_after_event(app->phone, result);
	}
	json_decref(res);
}

/* One item of a group-committed POST /v1/events (no Idempotency-Key): its own answer
 * {ok, result} or {ok:false, sqlstate, message, field}. */
static void batch_cb(void *arg, const struct store_reply *rep)
{
	struct api_req *r = arg;
	if (rep->status != STORE_OK) {
		api_reply_store_error(r, rep);
		return;
	}
	json_t *item = rep->value ? json_loads(rep->value, 0, NULL) : NULL;
	json_t *res = json_object_get(item, "result");
	if (!json_is_true(json_object_get(item, "ok")) || !json_is_object(res)) {
		const char *state = json_string_value(json_object_get(item, "sqlstate"));
		const char *msg = json_string_value(json_object_get(item, "message"));
		const char *field = json_string_value(json_object_get(item, "field"));
		if (state && strncmp(state, "22", 2) == 0)
			api_reply_error(r, 400, "invalid", msg, field);
		else if (state && strcmp(state, "23505") == 0)
			api_reply_error(r, 409, "conflict", msg, field);
		else if (state && strcmp(state, "P0002") == 0)
			api_reply_error(r, 404, "not_found", msg, field);
		else {
			log_error("api_events_failed", "sqlstate=%s", state ? state : "-");
			api_reply_error(r, 500, "internal", "internal error (logged)", NULL);
		}
		json_decref(item);
		return;
	}
	struct app *app = r->app;
	bool created = json_is_true(json_object_get(res, "created"));
	log_debug("api_post", "op=events status=%d conversation=%lld", created ? 201 : 200,
		  (long long)json_integer_value(json_object_get(res, "conversation")));
	api_reply_json(r, created ? 201 : 200,
		       json_pack("{s:O, s:O, s:O}", "conversation",
				 json_object_get(res, "conversation"), "message",
				 json_object_get(res, "message"), "customer",
				 json_object_get(res, "customer"))); /* frees R */
	after_event(app, res);
	json_decref(item);
}

static void handle_post(struct api_req *r)
{
	enum events_op op = op_of(r);
	long long customer = 0;
	if (op == OP_MERGE || op == OP_UNMERGE) {
		customer = parse_id(r->segs[2]);
		if (customer <= 0) {
			api_reply_error(r, 404, "not_found", "no such customer", NULL);
			return;
		}
	}
	const char *key =
	    evhttp_find_header(evhttp_request_get_input_headers(r->req), "Idempotency-Key");
	if (key) {
		size_t n = strlen(key);
		bool ok = n >= 1 && n <= EVENTS_IDEM_KEY_MAX;
		for (size_t i = 0; ok && i < n; i++)
			ok = key[i] >= 0x20 && key[i] <= 0x7e;
		if (!ok) {
			api_reply_error(
			    r, 400, "invalid",
			    "Idempotency-Key: must be 1 to 255 visible ASCII characters",
			    "Idempotency-Key");
			return;
		}
	}
	json_t *body =
	    evbuffer_get_length(evhttp_request_get_input_buffer(r->req)) == 0 && op == OP_UNMERGE
		? json_object()
		: api_read_object(r);
	if (!body)
		return;
	if (op == OP_EVENTS && !key) {
		/* the common case: group-committed with other requests */
		const char *dq = r->app->cfg->routing_default_queue;
		json_object_set_new(body, "default_queue", json_string(dq));
		if (store_batch_add(r->app->store, STORE_Q_API_EVENTS, body, batch_cb, r) < 0)
			api_reply_unavailable(r);
		return;
	}
	char path[96];
	if (op == OP_MERGE || op == OP_UNMERGE)
		snprintf(path, sizeof(path), "/v1/customers/%lld/%s", customer, r->segs[3]);
	else
		snprintf(path, sizeof(path), "/v1/%s", op == OP_EVENTS ? "events" : "phone/events");
	json_t *p = json_pack("{s:s, s:o, s:O, s:s?, s:s, s:s, s:I}", "op", op_names[op], "body",
			      body, "token", json_object_get(r->token, "id"), "idempotency_key",
			      key, "path", path, "default_queue",
			      r->app->cfg->routing_default_queue, "customer", (json_int_t)customer);
	if (!p || store_call_json(r->app->store, STORE_Q_API_POST, p, post_cb, r) < 0)
		api_reply_unavailable(r);
}

static void get_cb(void *arg, const struct store_reply *rep)
{
	struct api_req *r = arg;
	if (rep->status != STORE_OK)
		api_reply_store_error(r, rep);
	else if (!rep->value)
		api_reply_error(r, 404, "not_found", "no such customer", NULL);
	else
		api_reply_text(r, 200, rep->value);
}

static void handle_get(struct api_req *r)
{
	long long id = parse_id(r->segs[2]);
	if (id <= 0) {
		api_reply_error(r, 404, "not_found", "no such customer", NULL);
		return;
	}
	char buf[24];
	snprintf(buf, sizeof(buf), "%lld", id);
	const char *params[1] = {buf};
	if (store_call(r->app->store, STORE_Q_CUSTOMER_GET, 1, params, get_cb, r) < 0)
		api_reply_unavailable(r);
}

/* 405 naming the method ALLOW; R is freed. */
static enum events_api_claim only(struct api_req *r, const char *allow)
{
	evhttp_add_header(evhttp_request_get_output_headers(r->req), "Allow", allow);
	char msg[32];
	snprintf(msg, sizeof(msg), "use %s", allow);
	api_reply_error(r, 405, "method_not_allowed", msg, NULL);
	return EVENTS_API_ANSWERED;
}

enum events_api_claim events_api_claim(struct api_req *r)
{
	if (r->nsegs < 2 || strcmp(r->segs[0], "v1") != 0)
		return EVENTS_API_NOT_MINE;
	bool events = r->nsegs == 2 && strcmp(r->segs[1], "events") == 0;
	bool phone =
	    r->nsegs == 3 && strcmp(r->segs[1], "phone") == 0 && strcmp(r->segs[2], "events") == 0;
	if (events || phone) {
		if (r->method != EVHTTP_REQ_POST)
			return only(r, "POST");
		r->scope = "events:write";
		r->handler = handle_post;
		return EVENTS_API_AUTHENTICATE;
	}
	if (strcmp(r->segs[1], "customers") != 0 || r->nsegs < 3 || r->nsegs > 4)
		return EVENTS_API_NOT_MINE;
	if (r->nsegs == 3) {
		if (r->method != EVHTTP_REQ_GET)
			return only(r, "GET");
		r->scope = "conversations:read";
		r->handler = handle_get;
		return EVENTS_API_AUTHENTICATE;
	}
	if (strcmp(r->segs[3], "merge") != 0 && strcmp(r->segs[3], "unmerge") != 0)
		return EVENTS_API_NOT_MINE;
	if (r->method != EVHTTP_REQ_POST)
		return only(r, "POST");
	r->scope = "conversations:write";
	r->handler = handle_post;
	return EVENTS_API_AUTHENTICATE;
}
