/* Customer sessions (SPEC §1.1): hello with identity_hmac or a resume token, message
 * (group-committed), typing, close, survey. */
#include "chat_internal.h"
#include "contactd/app.h"
#include "contactd/config.h"
#include "contactd/log.h"
#include "contactd/ndjson.h"
#include "contactd/routing.h"
#include "contactd/secret.h"
#include "contactd/sla.h"
#include "contactd/store.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FIELD     512
#define MAX_CLIENT_ID 200

/* hex HMAC-SHA256(KEY, MSG) into OUT (65 bytes). */
static void hmac_hex(const char *key, const char *msg, char out[65])
{
	unsigned char md[32];
	unsigned int len = 0;
	HMAC(EVP_sha256(), key, (int)strlen(key), (const unsigned char *)msg, strlen(msg), md,
	     &len);
	for (unsigned i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

static bool hmac_ok(const char *secret, const char *msg, const char *given)
{
	char want[65];
	hmac_hex(secret, msg, want);
	if (strlen(given) != 64)
		return false;
	char lower[65];
	for (int i = 0; i < 64; i++)
		lower[i] = (char)(given[i] >= 'A' && given[i] <= 'F' ? given[i] + 32 : given[i]);
	lower[64] = '\0';
	return secret_equal(want, lower, 64);
}

struct hello_data {
	char token[SECRET_TOKEN_LEN + 1];
	char *queue;
};

static void hello_data_free(void *p)
{
	struct hello_data *h = p;
	OPENSSL_cleanse(h->token, sizeof(h->token));
	free(h->queue);
	free(h);
}

static void hello_refused(struct chat_op *op, const char *code, const char *message, bool close)
{
	chat_reply_error(op, code, message);
	struct session *s = op->s;
	s->hello_busy = false;
	if (!s->conn)
		return;
	if (close)
		ndjson_conn_close(s->conn, "unauthorized");
	else
		ndjson_conn_resume(s->conn);
}

static void hello_cb(void *arg, const struct store_reply *rep)
{
	struct chat_op *op = arg;
	struct session *s = op->s;
	struct hello_data *h = op->data;
	if (rep->status != STORE_OK || !rep->value) {
		if (rep->status == STORE_INVALID)
			hello_refused(op, "invalid", rep->message, false);
		else if (rep->status == STORE_UNAVAILABLE)
			hello_refused(op, "unavailable", "the store is unavailable; retry later",
				      false);
		else
			hello_refused(op, "internal", "internal error (logged)", false);
		chat_op_free(op);
		return;
	}
	json_t *res = json_loads(rep->value, 0, NULL);
	json_int_t customer = json_integer_value(json_object_get(res, "customer"));
	if (chat_op_live(op) && customer > 0) {
		s->role = ROLE_CUSTOMER;
		s->id = customer;
		s->conversation = json_integer_value(json_object_get(res, "conversation"));
		s->queue = h->queue;
		h->queue = NULL;
		s->hello_busy = false;
		chat_register(s);
		json_t *conv = json_object_get(res, "conversation");
		chat_reply_ok(op, json_pack("{s:I, s:O, s:s}", "customer", customer, "conversation",
					    conv ? conv : json_null(), "resume", h->token));
		ndjson_conn_set_ready(s->conn);
		log_info("customer_hello", "conn=%llu customer=%lld via=%s",
			 (unsigned long long)ndjson_conn_id(s->conn), (long long)customer,
			 json_string_value(json_object_get(res, "via")));
	}
	json_decref(res);
	chat_op_free(op);
}

void chat_customer_hello(struct session *s, json_t *frame, const json_t *ref)
{
	struct chat_op *op = chat_op_new(s, frame, ref);
	struct hello_data *h = calloc(1, sizeof(*h));
	op->data = h;
	op->data_free = hello_data_free;
	s->hello_busy = true;
	const char *name, *email, *phone, *external_id, *hmac, *queue, *language, *resume;
	if (!chat_opt_string(op, "name", &name, MAX_FIELD) ||
	    !chat_opt_string(op, "email", &email, MAX_FIELD) ||
	    !chat_opt_string(op, "phone", &phone, 64) ||
	    !chat_opt_string(op, "external_id", &external_id, MAX_FIELD) ||
	    !chat_opt_string(op, "identity_hmac", &hmac, 128) ||
	    !chat_opt_string(op, "queue", &queue, 128) ||
	    !chat_opt_string(op, "language", &language, 35) ||
	    !chat_opt_string(op, "resume", &resume, 128)) {
		s->hello_busy = false;
		ndjson_conn_resume(s->conn);
		chat_op_free(op);
		return;
	}
	const char *verified = NULL;
	if (hmac) {
		const char *secret = chat_app(s->chat)->cfg->chat_identity_secret;
		const char *subject = external_id ? external_id : email;
		if (!*secret || !subject || !hmac_ok(secret, subject, hmac)) {
			log_warn("customer_hello_refused", "peer=%s reason=bad_identity_hmac",
				 s->peer_ip);
			hello_refused(op, "unauthorized", "identity_hmac does not match", true);
			chat_op_free(op);
			return;
		}
		verified = external_id ? "external" : "email";
	}
	char resume_hash[SECRET_SHA256_HEXLEN + 1], new_hash[SECRET_SHA256_HEXLEN + 1];
	if (resume)
		secret_sha256_hex(resume, strlen(resume), resume_hash);
	if (secret_token_new(h->token) < 0) {
		hello_refused(op, "internal", "no randomness", false);
		chat_op_free(op);
		return;
	}
	secret_sha256_hex(h->token, strlen(h->token), new_hash);
	h->queue = queue ? strdup(queue) : NULL;
	json_t *p = json_pack("{s:s?, s:s?, s:s?, s:s?, s:s?, s:s?, s:s?, s:s}", "verified",
			      verified, "external_id", external_id, "email", email, "phone", phone,
			      "name", name, "language", language, "resume_hash",
			      resume ? resume_hash : NULL, "new_resume_hash", new_hash);
	if (store_call_json(chat_app(s->chat)->store, STORE_Q_CHAT_HELLO, p, hello_cb, op) < 0) {
		hello_refused(op, "unavailable", "the store is unavailable; retry later", false);
		chat_op_free(op);
	}
}

/* ---- requests after hello -------------------------------------------------------------- */

static void message_cb(void *arg, const struct store_reply *rep)
{
	struct chat_op *op = arg;
	struct session *s = op->s;
	json_t *res =
	    rep->status == STORE_OK && rep->value ? json_loads(rep->value, 0, NULL) : NULL;
	if (!res) {
		chat_reply_store_error(op, rep);
	} else if (!json_is_true(json_object_get(res, "ok"))) {
		const char *code = json_string_value(json_object_get(res, "code"));
		chat_reply_error(op, code ? code : "invalid",
				 json_string_value(json_object_get(res, "message")));
	} else {
		json_t *msg = json_object_get(res, "message");
		json_t *conv = json_object_get(res, "conversation");
		chat_reply_ok(op, json_pack("{s:O, s:O}", "message", msg, "conversation", conv));
		s->conversation = json_integer_value(conv);
		json_t *route = json_object_get(res, "route");
		bool dup = json_is_true(json_object_get(res, "duplicate"));
		if (json_is_true(json_object_get(res, "opened")) && json_is_object(route) && !dup) {
			json_t *full = json_copy(route);
			json_object_set(full, "id", conv);
			json_object_set(full, "queue", json_object_get(res, "queue"));
			json_object_set(full, "customer", json_object_get(res, "customer"));
			json_object_set_new(full, "channel", json_string("chat"));
			routing_conversation_opened(chat_app(s->chat)->routing, full);
			json_decref(full);
		}
		json_int_t agent = json_integer_value(json_object_get(res, "agent"));
		/* a new conversation starts its SLA clocks, a message after an answer the
		 * next-response clock: have the SLA service look soon */
		if (!dup && (agent > 0 || json_is_true(json_object_get(res, "opened"))))
			sla_kick(chat_app(s->chat)->sla);
		if (agent > 0 && !dup) {
			json_t *body = json_object_get(op->frame, "body");
			chat_push_agent(s->chat, agent,
					json_pack("{s:s, s:O, s:O, s:{s:s, s:I}, s:O, s:O}", "type",
						  "message", "conversation", conv, "message", msg,
						  "author", "kind", "customer", "id",
						  (json_int_t)s->id, "body", body, "at",
						  json_object_get(res, "created_at")));
		}
	}
	json_decref(res);
	chat_op_free(op);
}

static void customer_message(struct chat_op *op)
{
	struct session *s = op->s;
	json_t *body = json_object_get(op->frame, "body");
	if (!json_is_string(body)) {
		chat_reply_error(op, "bad_frame", "body: a string is required");
		chat_op_free(op);
		return;
	}
	json_t *cmid = json_object_get(op->frame, "client_msg_id");
	if (cmid && !json_is_null(cmid) &&
	    (!json_is_string(cmid) || json_string_length(cmid) == 0 ||
	     json_string_length(cmid) > MAX_CLIENT_ID)) {
		chat_reply_error(op, "invalid",
				 "client_msg_id: must be a string of 1 to 200 bytes");
		chat_op_free(op);
		return;
	}
	const struct config *cfg = chat_app(s->chat)->cfg;
	json_t *item = json_pack("{s:I, s:O, s:O, s:s?, s:s?}", "customer", (json_int_t)s->id,
				 "body", body, "client_msg_id", cmid ? cmid : json_null(), "queue",
				 s->queue, "default_queue",
				 *cfg->routing_default_queue ? cfg->routing_default_queue : NULL);
	if (store_batch_add(chat_app(s->chat)->store, STORE_Q_CHAT_MESSAGES, item, message_cb, op) <
	    0) {
		struct store_reply rep = {.status = STORE_UNAVAILABLE};
		chat_reply_store_error(op, &rep);
		chat_op_free(op);
	}
}

static void close_cb(void *arg, const struct store_reply *rep)
{
	struct chat_op *op = arg;
	json_t *res =
	    rep->status == STORE_OK && rep->value ? json_loads(rep->value, 0, NULL) : NULL;
	if (!res) {
		chat_reply_store_error(op, rep);
	} else {
		json_t *conv = json_object_get(res, "conversation");
		chat_reply_ok(op, json_pack("{s:O, s:O}", "conversation", conv, "status",
					    json_object_get(res, "status")));
		if (!json_is_true(json_object_get(res, "duplicate"))) {
			routing_conversation_resolved(chat_app(op->s->chat)->routing,
						      json_integer_value(conv));
			chat_push_customer(op->s->chat, op->s->id,
					   json_pack("{s:s, s:O, s:b}", "type", "closed",
						     "conversation", conv, "survey",
						     json_is_true(json_object_get(res, "survey"))));
			json_int_t agent = json_integer_value(json_object_get(res, "agent"));
			if (agent > 0)
				chat_push_agent(op->s->chat, agent,
						json_pack("{s:s, s:O, s:s}", "type", "closed",
							  "conversation", conv, "by", "customer"));
		}
	}
	json_decref(res);
	chat_op_free(op);
}

static void survey_cb(void *arg, const struct store_reply *rep)
{
	struct chat_op *op = arg;
	json_t *res =
	    rep->status == STORE_OK && rep->value ? json_loads(rep->value, 0, NULL) : NULL;
	if (!res)
		chat_reply_store_error(op, rep);
	else
		chat_reply_ok(op, json_pack("{s:O}", "survey", json_object_get(res, "survey")));
	json_decref(res);
	chat_op_free(op);
}

void chat_customer_request(struct session *s, const char *type, json_t *frame, const json_t *ref)
{
	struct chat_op *op = chat_op_new(s, frame, ref);
	if (strcmp(type, "message") == 0) {
		customer_message(op);
		return;
	}
	if (strcmp(type, "typing") == 0) {
		/* relayed to the conversation's assigned agent, never stored */
		int64_t agent = 0, customer = 0;
		if (s->conversation &&
		    routing_conversation_parties(chat_app(s->chat)->routing, s->conversation,
						 &agent, &customer) == 0 &&
		    agent > 0)
			chat_push_agent(s->chat, agent,
					json_pack("{s:s, s:I}", "type", "typing", "conversation",
						  (json_int_t)s->conversation));
		if (ref)
			chat_reply_ok(op, NULL);
		chat_op_free(op);
		return;
	}
	if (strcmp(type, "close") == 0 || strcmp(type, "survey") == 0) {
		int64_t conv;
		if (!chat_id_field(op, "conversation", strcmp(type, "survey") == 0, &conv)) {
			chat_op_free(op);
			return;
		}
		json_t *p = json_deep_copy(frame);
		json_object_del(p, "type");
		json_object_del(p, "ref");
		json_object_set_new(p, "customer", json_integer(s->id));
		if (conv)
			json_object_set_new(p, "conversation", json_integer(conv));
		chat_call(op, strcmp(type, "close") == 0 ? STORE_Q_CHAT_CLOSE : STORE_Q_CHAT_SURVEY,
			  p, strcmp(type, "close") == 0 ? close_cb : survey_cb);
		return;
	}
	chat_reply_error(op, "bad_frame", "unknown request type for a customer");
	chat_op_free(op);
}
