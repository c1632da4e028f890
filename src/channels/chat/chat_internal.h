/* Private to the chat channel: sessions, the request context and shared helpers. */
#ifndef CONTACTD_CHAT_INTERNAL_H
#define CONTACTD_CHAT_INTERNAL_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

#include "contactd/store.h"

struct app;
struct chat;
struct ndjson_conn;

enum session_role { ROLE_NONE, ROLE_CUSTOMER, ROLE_AGENT };

/* One client connection after accept. Freed when its conn has closed AND no request of it
 * is still waiting (pending == 0): callbacks that arrive later find conn == NULL. */
struct session {
	struct chat *chat;
	struct ndjson_conn *conn; /* NULL once closed */
	enum session_role role;
	bool hello_busy;
	unsigned pending;
	int64_t id;	      /* customer or agent id */
	char *queue;	      /* customer: the queue named in hello */
	int64_t conversation; /* customer: its open conversation, 0 when none known */
	json_t *agent; /* agent: its profile {id, login, name, role, tier, skills, capacity} */
	bool sub_stats, sub_sla; /* supervisor subscriptions */
	char peer_ip[64];
	struct session *next_same; /* the registry's list of sessions of one id */
};

/* A request waiting on the store or a worker; holds its session alive. */
struct chat_op {
	struct session *s;
	json_t *ref;   /* the request's ref, or NULL */
	json_t *frame; /* the whole request */
	void *data;    /* the operation's own */
	void (*data_free)(void *);
};

struct chat_op *chat_op_new(struct session *s, json_t *frame, const json_t *ref);
/* Ends OP; returns false when its session's conn is gone (do not reply then). */
bool chat_op_live(const struct chat_op *op);
void chat_op_free(struct chat_op *op);

/* Replies (no-ops when the conn is gone). */
void chat_reply_ok(struct chat_op *op, json_t *fields);
void chat_reply_error(struct chat_op *op, const char *code, const char *message);
/* Runs Q with P (stolen) as its JSON parameter; CB gets OP. When the store refuses, answers
 * unavailable and frees OP. */
void chat_call(struct chat_op *op, enum store_query q, json_t *p, store_cb cb);
/* Maps a failed store reply to a protocol error. */
void chat_reply_store_error(struct chat_op *op, const struct store_reply *rep);

/* Registry of sessions by customer / agent id (for pushing events). */
void chat_register(struct session *s);
void chat_push_customer(struct chat *c, int64_t customer_id, json_t *event);
void chat_push_agent(struct chat *c, int64_t agent_id, json_t *event);

struct app *chat_app(const struct chat *c);

/* Frame field helpers: each returns false after replying bad_frame/invalid. */
bool chat_opt_string(struct chat_op *op, const char *key, const char **out, size_t max);
bool chat_id_field(struct chat_op *op, const char *key, bool required, int64_t *out);

/* Customer and agent protocol (chat_customer.c, chat_agent.c). */
void chat_customer_hello(struct session *s, json_t *frame, const json_t *ref);
void chat_customer_request(struct session *s, const char *type, json_t *frame, const json_t *ref);
void chat_agent_hello(struct session *s, json_t *frame, const json_t *ref);
void chat_agent_request(struct session *s, const char *type, json_t *frame, const json_t *ref);
/* The last session of S's agent closed. */
void chat_agent_gone(struct session *s);

#endif
