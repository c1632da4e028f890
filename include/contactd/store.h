/* store: the only module that speaks SQL. A pool of asynchronous libpq connections on the
 * event loop; every query is a prepared statement named by enum store_query; it reconnects
 * by itself with backoff and reports unavailable while PostgreSQL is away. */
#ifndef CONTACTD_STORE_H
#define CONTACTD_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct event_base;
struct json_t;
struct store;

enum store_query {
	STORE_Q_SCHEMA_VERSION,	    /* () -> version */
	STORE_Q_TOKEN_LOOKUP,	    /* (token_hash) -> json {id,name,scopes} or no row */
	STORE_Q_ADMIN_LIST,	    /* (kind, after, limit) -> json {items,next} */
	STORE_Q_ADMIN_GET,	    /* (kind, key) -> json */
	STORE_Q_ADMIN_CREATE,	    /* (kind, body) -> json */
	STORE_Q_ADMIN_UPDATE,	    /* (kind, key, body) -> json */
	STORE_Q_ADMIN_DELETE,	    /* (kind, key) -> json */
	STORE_Q_CHAT_HELLO,	    /* (json) -> json: cd_chat_customer_hello */
	STORE_Q_CHAT_MESSAGES,	    /* batch: cd_chat_customer_messages */
	STORE_Q_CHAT_CLOSE,	    /* (json) -> json */
	STORE_Q_CHAT_SURVEY,	    /* (json) -> json */
	STORE_Q_AGENT_AUTH,	    /* (json) -> json or no value */
	STORE_Q_AGENT_PRESENCE,	    /* (json) -> json */
	STORE_Q_AGENT_MESSAGE,	    /* (json) -> json */
	STORE_Q_CONV_RESOLVE,	    /* (json) -> json */
	STORE_Q_CONV_TRANSFER,	    /* (json) -> json */
	STORE_Q_OFFER_CREATE,	    /* (json) -> json */
	STORE_Q_OFFER_DECIDE,	    /* (json) -> json */
	STORE_Q_ROUTER_SNAPSHOT,    /* () -> json */
	STORE_Q_PHONE_EVENT,	    /* (json) -> json: cd_phone_event */
	STORE_Q_PHONE_EVENT_OFFER,  /* (json, offer json) -> json: cd_phone_event(p, p_offer) */
	STORE_Q_API_POST,	    /* (json) -> json: cd_api_post */
	STORE_Q_API_EVENTS,	    /* batch: cd_api_events_batch */
	STORE_Q_CUSTOMER_GET,	    /* (id) -> json or NULL: cd_customer_get */
	STORE_Q_SLA_UPCOMING,	    /* (json) -> json: cd_sla_upcoming */
	STORE_Q_SLA_FIRE,	    /* (json) -> json: cd_sla_fire */
	STORE_Q_CONV_ESCALATE,	    /* (json) -> json */
	STORE_Q_CONV_PENDING,	    /* (json) -> json */
	STORE_Q_API_CONV_LIST,	    /* (json) -> json: cd_api_conversation_list */
	STORE_Q_API_CONV_GET,	    /* (json) -> json: cd_api_conversation_get */
	STORE_Q_API_CONV_ACTION,    /* (json) -> json: cd_api_conversation_action */
	STORE_Q_API_REALTIME,	    /* () -> json: cd_api_realtime */
	STORE_Q_STREAM_HEAD,	    /* () -> bigint: cd_stream_head */
	STORE_Q_STREAM_READ,	    /* (after, limit, max_bytes) -> json: cd_stream_read */
	STORE_Q_EVENTS_PRUNE,	    /* (json) -> json: cd_events_prune */
	STORE_Q_WEBHOOK_START,	    /* (json) -> json: cd_webhook_start */
	STORE_Q_WEBHOOK_ACK,	    /* (json) -> json: cd_webhook_ack */
	STORE_Q_WEBHOOK_FAILED,	    /* (json) -> json: cd_webhook_failed */
	STORE_Q_EMAIL_RCPT,	    /* (address) -> json or NULL: cd_email_rcpt */
	STORE_Q_EMAIL_INGEST,	    /* batch: cd_email_ingest_batch */
	STORE_Q_EMAIL_INGEST_ONE,   /* (json) -> one item of cd_email_ingest_batch (large mails) */
	STORE_Q_EMAIL_CLAIM,	    /* (limit, lease_s) -> json array: cd_email_outbox_claim */
	STORE_Q_EMAIL_DONE,	    /* (json) -> json: cd_email_outbox_done */
	STORE_Q_EMAIL_STAGE_CHUNK,  /* (bytea, binary) -> sha256 hex: cd_email_stage_chunk */
	STORE_Q_EMAIL_CHUNKS_PRUNE, /* (older_than_s, batch) -> json: cd_email_chunks_prune */
	STORE_Q_FLUSH,		    /* batch: a durable commit (store_flush) */
	STORE_Q__COUNT
};

enum store_status {
	STORE_OK,
	STORE_UNAVAILABLE, /* no connection, or it broke mid-query: nothing was committed */
	STORE_NOT_FOUND,   /* SQLSTATE P0002 */
	STORE_CONFLICT,	   /* 23505 unique, 23503 foreign key, 55000 wrong state */
	STORE_FORBIDDEN,   /* 42501: the caller may not do this */
	STORE_INVALID,	   /* 22xxx and 23514: the message names the field */
	STORE_ERROR,	   /* anything else: logged by the store */
};

struct store_reply {
	enum store_status status;
	int rows;
	const char *value;   /* first column of the first row, NULL when none or NULL */
	const char *message; /* error message for NOT_FOUND / CONFLICT / INVALID */
	const char *field;   /* PG_DIAG_COLUMN_NAME when the error named one */
	double elapsed_s;
};

/* Called once per accepted query, from the event loop; REPLY lives until it returns. */
typedef void (*store_cb)(void *arg, const struct store_reply *reply);

/* Makes a pool of POOL_SIZE connections to CONNINFO (copied); connecting starts at once.
 * Never fails for an unreachable database. */
struct store *store_new(struct event_base *base, const char *conninfo, int pool_size);
/* Closes every connection; pending callbacks are called with STORE_UNAVAILABLE first. *S is
 * NULL before they run, and calls on a NULL store are refused (-1), so a callback that calls
 * the store again cannot use the store being freed. */
void store_free(struct store **s);

/* Queues query Q with text PARAMS (copied; NULL is SQL NULL). Returns 0 when accepted (CB
 * will be called exactly once, never from inside this call), or -1 when the store is
 * unavailable (or S is NULL: shut down) or its queue is full (CB is not called: answer
 * "unavailable" at once). */
int store_call(struct store *s, enum store_query q, int nparams, const char *const *params,
	       store_cb cb, void *arg);

/* store_call of a one-parameter query Q whose parameter is binary (bytea): DATA (LEN bytes,
 * malloc'd) is stolen on success and sent as is, without a text copy. Returns 0 (CB will be
 * called), or -1 like store_call (DATA stays the caller's). */
int store_call_bytes(struct store *s, enum store_query q, char *data, size_t len, store_cb cb,
		     void *arg);

/* store_call with one parameter: P (stolen) serialised as compact JSON. */
int store_call_json(struct store *s, enum store_query q, struct json_t *p, store_cb cb, void *arg);

/* Group commit. Adds PAYLOAD (stolen) as one item of the next call of batch query Q, which
 * takes a JSON array of items and returns an array with one result per item, all in one
 * transaction. Items that arrive while every connection is busy go out together (at most
 * 100 per call). CB gets its own item's result as reply->value (a JSON text), only after
 * the whole call committed; when the call failed as a whole, each item is tried again
 * alone. Returns 0, or -1 (unavailable, queue full; CB is not called). */
int store_batch_add(struct store *s, enum store_query q, struct json_t *payload, store_cb cb,
		    void *arg);

/* Durability for commits that did not wait for their WAL flush (synchronous_commit off):
 * CB is called once a commit that began after this call is durable, and with it every
 * commit whose answer arrived before this call (reply->status STORE_OK); waiters that
 * arrive together share one commit. Any other status: nothing is known to be durable (the
 * caller answers "unavailable", the client retries). Returns 0, or -1 like store_batch_add
 * (CB is not called). */
int store_flush(struct store *s, store_cb cb, void *arg);

/* STORE_Q_STREAM_READ (cd_stream_read(AFTER, LIMIT, MAX_BYTES)) for events that leave the
 * daemon (GET /v1/stream, webhooks): an answer with events reaches CB only after a
 * store_flush begun once it was in, so that no event goes out that a crash could still
 * take back (offers commit without waiting for their flush, and a lost id could be handed
 * out again after a restart); when that flush fails CB gets STORE_UNAVAILABLE (read again
 * later). An answer without events comes at once. Returns 0, or -1 like store_call. */
int store_stream_read(struct store *s, int64_t after, int limit, int max_bytes, store_cb cb,
		      void *arg);

/* True while at least one connection is up (false for NULL). */
bool store_available(const struct store *s);
/* The schema version last read from schema_migrations (-1 when unknown). */
int store_schema_version(const struct store *s);

/* Reads schema_migrations again (after migrations ran); the state callback follows. */
void store_refresh_schema_version(struct store *s);

/* Called on every change of availability (and after a schema version is read). */
void store_set_state_cb(struct store *s, void (*cb)(void *arg, bool up), void *arg);

struct store_stats {
	int connections_up;
	int pool_size;
	unsigned queued;
	unsigned long long queries, errors;
	/* query latency histogram: counts of queries at or below each bound (cumulative) */
	const double *bounds;
	int nbounds;
	const unsigned long long *buckets; /* nbounds entries */
	double sum_s;
};
void store_get_stats(const struct store *s, struct store_stats *st);

#endif
