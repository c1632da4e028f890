#include "contactd/store.h"

#include "contactd/log.h"
#include "contactd/migrate.h"

#include <event2/event.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define STORE_MAX_POOL	 64
#define STORE_MAX_PARAMS 8
#define STORE_MAX_QUEUED 10000
#define STORE_BATCH_MAX	 100 /* items per group commit (bench: ~50k rows/s at 100) */
/* Batches of one query in the queue or running at once (a full one, STORE_BATCH_MAX items,
 * goes out regardless). While one runs, new items wait and go out together: on 2 cores a
 * batch's fixed cost (plans, statement triggers, its commit) paid once for many items
 * beat two smaller batches overlapping one's commit with the other's work
 * (bench/run-events-load.sh: 5,387 against 4,963 requests/s at 48 connections, p99 22.0
 * against 23.0 ms). */
#define STORE_BATCH_INFLIGHT 1
#define STORE_CONNECT_TMO_S  10
#define STORE_BACKOFF_MIN_MS 250
#define STORE_BACKOFF_MAX_MS 5000

/* Every statement the daemon runs: the SQL lives here and in sql/, nowhere else. */
static const struct {
	const char *name;
	const char *sql;
	int nparams;
	bool batch; /* takes a JSON array of items, returns one result per item */
} queries[STORE_Q__COUNT] = {
    [STORE_Q_SCHEMA_VERSION] = {"schema_version",
				"SELECT coalesce(max(version), 0)::text FROM schema_migrations", 0,
				false},
    [STORE_Q_TOKEN_LOOKUP] = {"token_lookup", "SELECT cd_token_lookup($1)::text", 1, false},
    [STORE_Q_ADMIN_LIST] = {"admin_list", "SELECT cd_admin_list($1, $2, $3::int)::text", 3, false},
    [STORE_Q_ADMIN_GET] = {"admin_get", "SELECT cd_admin_get($1, $2)::text", 2, false},
    [STORE_Q_ADMIN_CREATE] = {"admin_create", "SELECT cd_admin_create($1, $2::jsonb)::text", 2,
			      false},
    [STORE_Q_ADMIN_UPDATE] = {"admin_update", "SELECT cd_admin_update($1, $2, $3::jsonb)::text", 3,
			      false},
    [STORE_Q_ADMIN_DELETE] = {"admin_delete", "SELECT cd_admin_delete($1, $2)::text", 2, false},
    [STORE_Q_CHAT_HELLO] = {"chat_hello", "SELECT cd_chat_customer_hello($1::jsonb)::text", 1,
			    false},
    [STORE_Q_CHAT_MESSAGES] = {"chat_messages", "SELECT cd_chat_customer_messages($1::jsonb)::text",
			       1, true},
    [STORE_Q_CHAT_CLOSE] = {"chat_close", "SELECT cd_chat_customer_close($1::jsonb)::text", 1,
			    false},
    [STORE_Q_CHAT_SURVEY] = {"chat_survey", "SELECT cd_chat_survey($1::jsonb)::text", 1, false},
    [STORE_Q_AGENT_AUTH] = {"agent_auth", "SELECT cd_agent_auth($1::jsonb)::text", 1, false},
    [STORE_Q_AGENT_PRESENCE] = {"agent_presence", "SELECT cd_agent_presence($1::jsonb)::text", 1,
				false},
    [STORE_Q_AGENT_MESSAGE] = {"agent_message", "SELECT cd_agent_message($1::jsonb)::text", 1,
			       false},
    [STORE_Q_CONV_RESOLVE] = {"conv_resolve", "SELECT cd_conversation_resolve($1::jsonb)::text", 1,
			      false},
    [STORE_Q_CONV_TRANSFER] = {"conv_transfer", "SELECT cd_conversation_transfer($1::jsonb)::text",
			       1, false},
    /* An offer commits without waiting for its WAL flush: a crash may forget an offer an
     * agent saw (the conversation is offered again after the restart, the late accept gets
     * not_found), never an assignment -- the accept's own durable commit flushes the WAL up
     * to and past the offer. One fsync less between a contact arriving and its offer. */
    [STORE_Q_OFFER_CREATE] = {"offer_create",
			      "SELECT cd_offer_create($1::jsonb)::text"
			      " FROM set_config('synchronous_commit', 'off', true)",
			      1, false},
    /* with the agent's login and extension: the phone channel's `route` needs them */
    [STORE_Q_OFFER_DECIDE] =
	{"offer_decide",
	 "SELECT (d || jsonb_build_object('agent_login', a.login, 'extension', "
	 "a.extension))::text FROM cd_offer_decide($1::jsonb) d "
	 "LEFT JOIN agents a ON a.id = (d ->> 'agent')::bigint",
	 1, false},
    [STORE_Q_ROUTER_SNAPSHOT] = {"router_snapshot", "SELECT cd_router_snapshot()::text", 0, false},
    [STORE_Q_PHONE_EVENT] = {"phone_event", "SELECT cd_phone_event($1::jsonb)::text", 1, false},
    [STORE_Q_PHONE_EVENT_OFFER] = {"phone_event_offer",
				   "SELECT cd_phone_event($1::jsonb, $2::jsonb)::text", 2, false},
    /* cd_store_flush: a durable commit that wrote WAL (an xid alone would commit without
     * a flush); its flush covers every commit before it. All items of one call share it. */
    [STORE_Q_FLUSH] = {"flush",
		       "SELECT (SELECT jsonb_agg(f.done) FROM jsonb_array_elements($1::jsonb),"
		       " (SELECT cd_store_flush() AS done) f)::text",
		       1, true},
    [STORE_Q_API_POST] = {"api_post", "SELECT cd_api_post($1::jsonb)::text", 1, false},
    [STORE_Q_API_EVENTS] = {"api_events", "SELECT cd_api_events_batch($1::jsonb)::text", 1, true},
    [STORE_Q_CUSTOMER_GET] = {"customer_get", "SELECT cd_customer_get($1::bigint)::text", 1, false},
    [STORE_Q_SLA_UPCOMING] = {"sla_upcoming", "SELECT cd_sla_upcoming($1::jsonb)::text", 1, false},
    [STORE_Q_SLA_FIRE] = {"sla_fire", "SELECT cd_sla_fire($1::jsonb)::text", 1, false},
    [STORE_Q_CONV_ESCALATE] = {"conv_escalate", "SELECT cd_conversation_escalate($1::jsonb)::text",
			       1, false},
    [STORE_Q_CONV_PENDING] = {"conv_pending", "SELECT cd_conversation_pending($1::jsonb)::text", 1,
			      false},
    [STORE_Q_API_CONV_LIST] = {"api_conv_list", "SELECT cd_api_conversation_list($1::jsonb)::text",
			       1, false},
    [STORE_Q_API_CONV_GET] = {"api_conv_get", "SELECT cd_api_conversation_get($1::jsonb)::text", 1,
			      false},
    [STORE_Q_API_CONV_ACTION] = {"api_conv_action",
				 "SELECT cd_api_conversation_action($1::jsonb)::text", 1, false},
    [STORE_Q_API_REALTIME] = {"api_realtime", "SELECT cd_api_realtime()::text", 0, false},
    [STORE_Q_STREAM_HEAD] = {"stream_head", "SELECT cd_stream_head()::text", 0, false},
    [STORE_Q_STREAM_READ] = {"stream_read",
			     "SELECT cd_stream_read($1::bigint, $2::integer, $3::integer)::text", 3,
			     false},
    [STORE_Q_EVENTS_PRUNE] = {"events_prune", "SELECT cd_events_prune($1::jsonb)::text", 1, false},
    [STORE_Q_WEBHOOK_START] = {"webhook_start", "SELECT cd_webhook_start($1::jsonb)::text", 1,
			       false},
    [STORE_Q_WEBHOOK_ACK] = {"webhook_ack", "SELECT cd_webhook_ack($1::jsonb)::text", 1, false},
    [STORE_Q_WEBHOOK_FAILED] = {"webhook_failed", "SELECT cd_webhook_failed($1::jsonb)::text", 1,
				false},
    [STORE_Q_EMAIL_RCPT] = {"email_rcpt", "SELECT cd_email_rcpt($1)::text", 1, false},
    [STORE_Q_EMAIL_INGEST] = {"email_ingest", "SELECT cd_email_ingest_batch($1::jsonb)::text", 1,
			      true},
    [STORE_Q_EMAIL_INGEST_ONE] =
	{"email_ingest_one",
	 "SELECT (cd_email_ingest_batch(jsonb_build_array($1::jsonb)) -> 0)::text", 1, false},
    [STORE_Q_EMAIL_CLAIM] = {"email_claim", "SELECT cd_email_outbox_claim($1::int, $2::int)::text",
			     2, false},
    [STORE_Q_EMAIL_DONE] = {"email_done", "SELECT cd_email_outbox_done($1::jsonb)::text", 1, false},
    [STORE_Q_EMAIL_STAGE_CHUNK] = {"email_stage_chunk", "SELECT cd_email_stage_chunk($1::bytea)", 1,
				   false},
    [STORE_Q_EMAIL_CHUNKS_PRUNE] = {"email_chunks_prune",
				    "SELECT cd_email_chunks_prune($1::int, $2::int)::text", 2,
				    false},
};

static const double latency_bounds[] = {0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05,
					0.1,	0.25,  0.5,    1,     2.5,  5,	   10};
#define NBOUNDS ((int)(sizeof(latency_bounds) / sizeof(latency_bounds[0])))

/* One caller's part of a batched (group-committed) call. */
struct store_item {
	store_cb cb;
	void *arg;
	json_t *payload;
};

struct store_req {
	enum store_query q;
	int nparams;
	char *params[STORE_MAX_PARAMS];
	bool bin; /* params[0] is binary, bin_len bytes (store_call_bytes) */
	int bin_len;
	store_cb cb;
	void *arg;
	struct store_item *items; /* a batch: params[0] is the JSON array of their payloads */
	int nitems;
	struct timespec started;
	struct store_req *next;
};

/* Items waiting for the next batch of one query. */
struct batch_acc {
	struct store_item *items;
	int n;
};

enum conn_state { SC_DOWN, SC_CONNECTING, SC_IDLE, SC_WARMING, SC_PREPARING, SC_BUSY };

/* Run by every connection once it is up and the schema is current, before it takes work
 * (once per connection; a connection warming is busy): the chat path's functions -- a
 * customer hello, then six chat batches whose one item names no customer, which run every
 * statement of the ingest (and its statement triggers) but write no row -- inside a
 * subtransaction that is always rolled back. Nothing is kept. No message, conversation or
 * events_log id is taken: a rolled-back events_log id is a gap that GET /v1/stream and the
 * webhooks wait on for 2 s (0010_stream.sql); only a customer id is skipped. A backend's
 * first calls of a PL/pgSQL function load its catalog entries and plan each statement --
 * 20 to 45 ms for the set-based chat ingest, 5 custom plans before a generic one -- and
 * that would otherwise be paid by the first real batches that land on it, long after
 * start-up when a busy pool first spills onto a connection. Best effort: any other error
 * (an older schema) is logged and only ends the warm-up. */
static const char warm_sql[] =
    "DO $warm$ BEGIN BEGIN "
    "PERFORM cd_chat_customer_hello(jsonb_build_object('name', 'contactd warm-up', "
    "'new_resume_hash', encode(sha256(gen_random_uuid()::text::bytea), 'hex'))); "
    "PERFORM cd_chat_customer_messages(jsonb_build_array(jsonb_build_object('customer', 0, "
    "'body', 'warm-up', 'client_msg_id', 'warm-up-' || g))) FROM generate_series(1, 6) g; "
    "RAISE EXCEPTION USING ERRCODE = 'CDWRM', MESSAGE = 'rolled back'; "
    "EXCEPTION WHEN SQLSTATE 'CDWRM' THEN NULL; END; END $warm$";

struct store_conn {
	struct store *s;
	int idx;
	enum conn_state state;
	PGconn *pg;
	struct event *ev_io;	/* connect phase: one-shot; afterwards persistent EV_READ */
	struct event *ev_write; /* one-shot, while PQflush has more to send */
	struct event *ev_retry;
	int backoff_ms;
	bool prepared[STORE_Q__COUNT];
	struct store_req *cur;
	PGresult *first; /* the first result of the current command */
	bool cold;	 /* has not run warm_sql since it connected */
	struct timespec warm_t0;
};

struct store {
	struct event_base *base;
	char *conninfo;
	int pool_size;
	struct store_conn conns[STORE_MAX_POOL];
	struct store_req *head, *tail;
	unsigned queued; /* requests in the queue plus items in accumulators */
	struct batch_acc acc[STORE_Q__COUNT];
	int batches_out[STORE_Q__COUNT]; /* batch requests queued or running, per query */
	int up;
	int schema_version;
	struct event *ev_dispatch;
	void (*state_cb)(void *arg, bool up);
	void *state_arg;
	unsigned long long nqueries, nerrors;
	unsigned long long buckets[NBOUNDS];
	double sum_s;
};

static void conn_connect(struct store_conn *c);
static void conn_io_cb(evutil_socket_t fd, short what, void *arg);
static void conn_dispatch(struct store_conn *c);
static void conn_flush(struct store_conn *c);
static void schedule_dispatch(struct store *s);

static double since(const struct timespec *t0)
{
	struct timespec t;
	clock_gettime(CLOCK_MONOTONIC, &t);
	return (double)(t.tv_sec - t0->tv_sec) + (double)(t.tv_nsec - t0->tv_nsec) / 1e9;
}

static void req_free(struct store_req *r)
{
	for (int i = 0; i < r->nparams; i++)
		free(r->params[i]);
	for (int i = 0; i < r->nitems; i++)
		json_decref(r->items[i].payload);
	free(r->items);
	free(r);
}

static void enqueue_req(struct store *s, struct store_req *r, bool front)
{
	if (front) {
		r->next = s->head;
		s->head = r;
		if (!s->tail)
			s->tail = r;
	} else {
		r->next = NULL;
		if (s->tail)
			s->tail->next = r;
		else
			s->head = r;
		s->tail = r;
	}
	s->queued++;
}

/* A new request of Q, started now; NULL when out of memory. */
static struct store_req *req_new(enum store_query q, store_cb cb, void *arg)
{
	struct store_req *r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	r->q = q;
	r->cb = cb;
	r->arg = arg;
	clock_gettime(CLOCK_MONOTONIC, &r->started);
	return r;
}

/* A request for ITEMS[0..N) (taken over), its payloads joined into one JSON array. */
static struct store_req *batch_req(struct store *s, enum store_query q, struct store_item *items,
				   int n)
{
	struct store_req *r = calloc(1, sizeof(*r));
	s->batches_out[q]++;
	json_t *arr = json_array();
	for (int i = 0; i < n; i++)
		json_array_append(arr, items[i].payload);
	r->q = q;
	r->nparams = 1;
	r->params[0] = json_dumps(arr, JSON_COMPACT);
	json_decref(arr);
	r->items = items;
	r->nitems = n;
	clock_gettime(CLOCK_MONOTONIC, &r->started);
	return r;
}

/* Moves the items accumulated for Q into one request in the queue. */
static void seal_batch(struct store *s, enum store_query q)
{
	struct batch_acc *a = &s->acc[q];
	if (a->n == 0)
		return;
	struct store_req *r = batch_req(s, q, a->items, a->n);
	s->queued -= (unsigned)a->n;
	a->items = NULL;
	a->n = 0;
	enqueue_req(s, r, false);
}

static void notify_state(struct store *s)
{
	if (s->state_cb)
		s->state_cb(s->state_arg, s->up > 0);
}

static bool json_space(char ch)
{
	return ch == ' ' || ch == '\t' || ch == '\n' || ch == '\r';
}

/* Splits TEXT, a JSON array as PostgreSQL prints it, into its top-level elements without
 * parsing them: element i is TEXT[START[i] .. START[i] + LEN[i]). Only strings and nesting are
 * followed; each element is parsed by the caller it goes to. Returns false unless TEXT is an
 * array of exactly N elements. */
static bool split_array(const char *text, int n, size_t *start, size_t *len)
{
	const char *p = text;
	while (json_space(*p))
		p++;
	if (*p++ != '[')
		return false;
	int count = 0, depth = 0;
	const char *el = NULL;
	for (;; p++) {
		char ch = *p;
		if (ch == '\0')
			return false;
		if (json_space(ch))
			continue;
		if (depth == 0 && (ch == ',' || ch == ']')) {
			if (el) {
				if (count == n)
					return false;
				const char *e = p;
				while (json_space(e[-1]))
					e--;
				start[count] = (size_t)(el - text);
				len[count] = (size_t)(e - el);
				count++;
				el = NULL;
			} else if (ch == ',' || count > 0) {
				return false; /* an empty element */
			}
			if (ch == ']')
				break;
			continue;
		}
		if (!el)
			el = p;
		if (ch == '"') {
			for (p++; *p != '"'; p++) {
				if (*p == '\0')
					return false;
				if (*p == '\\' && p[1] != '\0')
					p++;
			}
		} else if (ch == '[' || ch == '{') {
			depth++;
		} else if (ch == ']' || ch == '}') {
			if (--depth < 0)
				return false;
		}
	}
	for (p++; json_space(*p); p++)
		;
	return *p == '\0' && count == n;
}

/* Hands each item of a batch its own result. A batch that failed as a whole is tried again
 * item by item, so that one bad item cannot fail the others. The answer array is only split
 * here, not parsed: each item's callback parses its own element. */
static void finish_batch(struct store *s, struct store_req *r, const struct store_reply *rep)
{
	size_t *start = NULL, *len = NULL;
	bool split = false;
	if (rep->status == STORE_OK && rep->value) {
		start = malloc(sizeof(*start) * (size_t)r->nitems);
		len = malloc(sizeof(*len) * (size_t)r->nitems);
		split = start && len && split_array(rep->value, r->nitems, start, len);
	}
	if (rep->status == STORE_OK && !split)
		log_error("store_batch_mismatch", "query=%s items=%d", queries[r->q].name,
			  r->nitems);
	if (rep->status != STORE_OK && rep->status != STORE_UNAVAILABLE && r->nitems > 1 &&
	    s->up > 0) {
		log_warn("store_batch_retry_alone", "query=%s items=%d", queries[r->q].name,
			 r->nitems);
		for (int i = r->nitems - 1; i >= 0; i--) {
			struct store_item *one = malloc(sizeof(*one));
			*one = r->items[i];
			r->items[i].payload = NULL;
			enqueue_req(s, batch_req(s, r->q, one, 1), true);
		}
		schedule_dispatch(s);
		free(start);
		free(len);
		return;
	}
	for (int i = 0; i < r->nitems; i++) {
		struct store_reply one = *rep;
		char *text = NULL;
		if (rep->status == STORE_OK) {
			if (split) {
				text = malloc(len[i] + 1);
				if (text) {
					memcpy(text, rep->value + start[i], len[i]);
					text[len[i]] = '\0';
				}
			}
			one.value = text;
			if (!text)
				one.status = STORE_ERROR;
		}
		if (r->items[i].cb)
			r->items[i].cb(r->items[i].arg, &one);
		free(text);
	}
	free(start);
	free(len);
}

static void finish(struct store *s, struct store_req *r, struct store_reply *rep)
{
	rep->elapsed_s = since(&r->started);
	log_debug("store_query", "query=%s items=%d status=%d ms=%.3f", queries[r->q].name,
		  r->nitems, (int)rep->status, rep->elapsed_s * 1e3);
	s->nqueries++;
	s->sum_s += rep->elapsed_s;
	for (int i = 0; i < NBOUNDS; i++)
		if (rep->elapsed_s <= latency_bounds[i])
			s->buckets[i]++;
	if (rep->status == STORE_ERROR || rep->status == STORE_UNAVAILABLE)
		s->nerrors++;
	if (r->nitems > 0) {
		/* items held back while it ran go out now, on any idle connection */
		if (s->batches_out[r->q]-- >= STORE_BATCH_INFLIGHT && s->acc[r->q].n > 0)
			schedule_dispatch(s);
		finish_batch(s, r, rep);
	} else if (r->cb)
		r->cb(r->arg, rep);
	req_free(r);
}

static void fail_req(struct store *s, struct store_req *r, enum store_status st)
{
	struct store_reply rep = {.status = st};
	finish(s, r, &rep);
}

static void conn_down(struct store_conn *c, const char *why)
{
	struct store *s = c->s;
	bool was_up = c->state >= SC_IDLE;
	if (c->pg) {
		char q[256];
		log_msg(strcmp(why, "shutdown") == 0 ? LOG_LEVEL_INFO : LOG_LEVEL_WARN,
			"store_disconnected", "conn=%d reason=%s", c->idx,
			log_quote(q, sizeof(q), why));
	}
	if (c->ev_io) {
		event_free(c->ev_io);
		c->ev_io = NULL;
	}
	if (c->ev_write) {
		event_free(c->ev_write);
		c->ev_write = NULL;
	}
	if (c->first) {
		PQclear(c->first);
		c->first = NULL;
	}
	if (c->pg) {
		PQfinish(c->pg);
		c->pg = NULL;
	}
	memset(c->prepared, 0, sizeof(c->prepared));
	c->state = SC_DOWN;
	if (was_up)
		s->up--;
	struct store_req *r = c->cur;
	c->cur = NULL;
	if (r)
		fail_req(s, r, STORE_UNAVAILABLE);
	if (s->up == 0) {
		/* nothing left to run the queue: callers must hear "unavailable" now */
		for (int q = 0; q < STORE_Q__COUNT; q++)
			seal_batch(s, (enum store_query)q);
		while (s->head) {
			struct store_req *q = s->head;
			s->head = q->next;
			s->queued--;
			fail_req(s, q, STORE_UNAVAILABLE);
		}
		s->tail = NULL;
	}
	if (was_up && s->up == 0)
		notify_state(s);
	c->backoff_ms = c->backoff_ms ? c->backoff_ms * 2 : STORE_BACKOFF_MIN_MS;
	if (c->backoff_ms > STORE_BACKOFF_MAX_MS)
		c->backoff_ms = STORE_BACKOFF_MAX_MS;
	/* jitter so that a pool does not reconnect in lock step */
	int ms = c->backoff_ms / 2 + rand() % (c->backoff_ms / 2 + 1);
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	event_add(c->ev_retry, &tv);
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
	conn_connect(arg);
}

static void want_io(struct store_conn *c, short what, int timeout_s)
{
	if (c->ev_io)
		event_free(c->ev_io);
	c->ev_io = event_new(c->s->base, PQsocket(c->pg), what, conn_io_cb, c);
	struct timeval tv = {timeout_s, 0};
	event_add(c->ev_io, timeout_s ? &tv : NULL);
}

static void version_cb(void *arg, const struct store_reply *rep)
{
	struct store *s = arg;
	if (rep->status == STORE_OK && rep->value)
		s->schema_version = atoi(rep->value);
	else if (rep->status != STORE_UNAVAILABLE)
		s->schema_version = 0; /* no schema_migrations table yet */
	notify_state(s);
	schedule_dispatch(s); /* cold connections warm up once the schema is current */
}

static void notice_cb(void *arg, const PGresult *res)
{
	struct store_conn *c = arg;
	char q[512];
	log_debug("store_notice", "conn=%d msg=%s", c->idx,
		  log_quote(q, sizeof(q), PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY)));
}

static void conn_connected(struct store_conn *c)
{
	struct store *s = c->s;
	c->state = SC_IDLE;
	c->backoff_ms = 0;
	c->cold = true;
	s->up++;
	log_info("store_connected", "conn=%d server_version=%d up=%d", c->idx,
		 PQserverVersion(c->pg), s->up);
	PQsetNoticeReceiver(c->pg, notice_cb, c);
	want_io(c, EV_READ | EV_PERSIST, 0);
	if (s->up == 1)
		store_call(s, STORE_Q_SCHEMA_VERSION, 0, NULL, version_cb, s);
	conn_dispatch(c);
	schedule_dispatch(s);
}

/* The warm-up of an idle cold connection, once the schema is the one this build wants. */
static bool conn_warm(struct store_conn *c)
{
	if (!c->cold || c->s->schema_version < migrate_latest_version())
		return false;
	c->cold = false;
	clock_gettime(CLOCK_MONOTONIC, &c->warm_t0);
	if (!PQsendQuery(c->pg, warm_sql)) {
		conn_down(c, PQerrorMessage(c->pg));
		return true;
	}
	c->state = SC_WARMING;
	conn_flush(c);
	return true;
}

static void conn_warmed(struct store_conn *c)
{
	c->state = SC_IDLE;
	log_info("store_warmed", "conn=%d ms=%.1f", c->idx, since(&c->warm_t0) * 1e3);
	conn_dispatch(c);
}

static void conn_poll(struct store_conn *c)
{
	switch (PQconnectPoll(c->pg)) {
	case PGRES_POLLING_READING:
		want_io(c, EV_READ, STORE_CONNECT_TMO_S);
		break;
	case PGRES_POLLING_WRITING:
		want_io(c, EV_WRITE, STORE_CONNECT_TMO_S);
		break;
	case PGRES_POLLING_OK:
		if (PQsetnonblocking(c->pg, 1) != 0) {
			conn_down(c, "cannot set non-blocking");
			return;
		}
		conn_connected(c);
		break;
	default:
		conn_down(c, PQerrorMessage(c->pg));
		break;
	}
}

static void conn_connect(struct store_conn *c)
{
	static const char *const keys[] = {"application_name", "options", "connect_timeout",
					   "dbname", NULL};
	const char *vals[] = {"contactd", "-c statement_timeout=30s", "10", c->s->conninfo, NULL};
	c->pg = PQconnectStartParams(keys, vals, 1);
	if (!c->pg || PQstatus(c->pg) == CONNECTION_BAD) {
		conn_down(c, c->pg ? PQerrorMessage(c->pg) : "out of memory");
		return;
	}
	c->state = SC_CONNECTING;
	want_io(c, EV_WRITE, STORE_CONNECT_TMO_S);
}

static void flush_cb(evutil_socket_t fd, short what, void *arg)
{
	struct store_conn *c = arg;
	int rc = PQflush(c->pg);
	if (rc < 0)
		conn_down(c, PQerrorMessage(c->pg));
	else if (rc > 0)
		event_add(c->ev_write, NULL);
}

static void conn_flush(struct store_conn *c)
{
	int rc = PQflush(c->pg);
	if (rc < 0) {
		conn_down(c, PQerrorMessage(c->pg));
		return;
	}
	if (rc > 0) {
		if (!c->ev_write)
			c->ev_write = event_new(c->s->base, PQsocket(c->pg), EV_WRITE, flush_cb, c);
		event_add(c->ev_write, NULL);
	}
}

static void conn_send(struct store_conn *c)
{
	struct store_req *r = c->cur;
	int ok;
	if (!c->prepared[r->q]) {
		c->state = SC_PREPARING;
		ok = PQsendPrepare(c->pg, queries[r->q].name, queries[r->q].sql,
				   queries[r->q].nparams, NULL);
	} else {
		c->state = SC_BUSY;
		const int fmt[1] = {1};
		ok = PQsendQueryPrepared(c->pg, queries[r->q].name, r->nparams,
					 (const char *const *)r->params,
					 r->bin ? &r->bin_len : NULL, r->bin ? fmt : NULL, 0);
	}
	if (!ok) {
		conn_down(c, PQerrorMessage(c->pg));
		return;
	}
	conn_flush(c);
}

static void conn_dispatch(struct store_conn *c)
{
	struct store *s = c->s;
	if (c->state != SC_IDLE || conn_warm(c))
		return;
	/* group commit: what accumulated while every connection was busy, or while enough
	 * batches of its query were running, goes out together */
	for (int q = 0; !s->head && q < STORE_Q__COUNT; q++)
		if (s->batches_out[q] < STORE_BATCH_INFLIGHT)
			seal_batch(s, (enum store_query)q);
	if (!s->head)
		return;
	c->cur = s->head;
	s->head = c->cur->next;
	if (!s->head)
		s->tail = NULL;
	s->queued--;
	conn_send(c);
}

static enum store_status classify(const char *sqlstate)
{
	if (!sqlstate)
		return STORE_UNAVAILABLE;
	if (strcmp(sqlstate, "P0002") == 0)
		return STORE_NOT_FOUND;
	if (strcmp(sqlstate, "23505") == 0 || strcmp(sqlstate, "23503") == 0 ||
	    strcmp(sqlstate, "55000") == 0)
		return STORE_CONFLICT;
	if (strcmp(sqlstate, "42501") == 0)
		return STORE_FORBIDDEN;
	if (strncmp(sqlstate, "22", 2) == 0 || strcmp(sqlstate, "23514") == 0 ||
	    strcmp(sqlstate, "23502") == 0)
		return STORE_INVALID;
	if (strncmp(sqlstate, "08", 2) == 0 || strncmp(sqlstate, "53", 2) == 0 ||
	    strncmp(sqlstate, "57P", 3) == 0 || strcmp(sqlstate, "25006") == 0)
		return STORE_UNAVAILABLE;
	return STORE_ERROR;
}

/* The current command has produced all its results; C->first holds the first one. */
static void conn_complete(struct store_conn *c)
{
	struct store *s = c->s;
	struct store_req *r = c->cur;
	PGresult *res = c->first;
	c->first = NULL;
	ExecStatusType st = res ? PQresultStatus(res) : PGRES_FATAL_ERROR;
	bool ok = st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK;

	if (c->state == SC_PREPARING && ok) {
		PQclear(res);
		c->prepared[r->q] = true;
		conn_send(c);
		return;
	}
	c->cur = NULL;
	c->state = SC_IDLE;
	struct store_reply rep = {.status = STORE_OK};
	if (ok) {
		rep.rows = PQntuples(res);
		if (rep.rows > 0 && PQnfields(res) > 0 && !PQgetisnull(res, 0, 0))
			rep.value = PQgetvalue(res, 0, 0);
	} else {
		const char *state = res ? PQresultErrorField(res, PG_DIAG_SQLSTATE) : NULL;
		rep.status = classify(state);
		if (r->q == STORE_Q_SCHEMA_VERSION && state && strcmp(state, "42P01") == 0)
			rep.status = STORE_NOT_FOUND; /* no schema_migrations yet: version 0 */
		rep.message = res ? PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY) : NULL;
		rep.field = res ? PQresultErrorField(res, PG_DIAG_COLUMN_NAME) : NULL;
		if (rep.status == STORE_ERROR || rep.status == STORE_UNAVAILABLE) {
			char q[512];
			log_error("store_query_failed", "conn=%d query=%s sqlstate=%s error=%s",
				  c->idx, queries[r->q].name, state ? state : "-",
				  log_quote(q, sizeof(q),
					    rep.message ? rep.message : PQerrorMessage(c->pg)));
		}
		if (c->state == SC_PREPARING)
			rep.status =
			    rep.status == STORE_UNAVAILABLE ? STORE_UNAVAILABLE : STORE_ERROR;
	}
	finish(s, r, &rep);
	PQclear(res);
	if (c->pg && PQstatus(c->pg) == CONNECTION_BAD) {
		conn_down(c, PQerrorMessage(c->pg));
		return;
	}
	conn_dispatch(c);
}

static void conn_io_cb(evutil_socket_t fd, short what, void *arg)
{
	struct store_conn *c = arg;
	if (c->state == SC_CONNECTING) {
		if (what & EV_TIMEOUT) {
			conn_down(c, "connect timeout");
			return;
		}
		conn_poll(c);
		return;
	}
	if (!PQconsumeInput(c->pg)) {
		conn_down(c, PQerrorMessage(c->pg));
		return;
	}
	while (c->state == SC_WARMING) {
		if (PQisBusy(c->pg))
			return;
		PGresult *res = PQgetResult(c->pg);
		if (!res) {
			conn_warmed(c);
			break;
		}
		if (PQresultStatus(res) != PGRES_COMMAND_OK) {
			char q[256];
			log_info("store_warm_failed", "conn=%d error=%s", c->idx,
				 log_quote(q, sizeof(q), PQresultErrorMessage(res)));
		}
		PQclear(res);
	}
	while (c->state == SC_PREPARING || c->state == SC_BUSY) {
		if (PQisBusy(c->pg))
			return;
		PGresult *res = PQgetResult(c->pg);
		if (!res) {
			conn_complete(c);
			continue; /* a prepare may have sent the real query */
		}
		if (!c->first)
			c->first = res;
		else
			PQclear(res);
	}
	if (!c->pg)
		return; /* conn_down ran inside a callback */
	/* idle: drop notices and notifications; a closed socket shows up as an error */
	PGnotify *n;
	while ((n = PQnotifies(c->pg)) != NULL)
		PQfreemem(n);
	if (PQstatus(c->pg) == CONNECTION_BAD)
		conn_down(c, PQerrorMessage(c->pg));
}

static void dispatch_cb(evutil_socket_t fd, short what, void *arg)
{
	struct store *s = arg;
	for (int i = 0; i < s->pool_size; i++)
		conn_dispatch(&s->conns[i]);
}

static void schedule_dispatch(struct store *s)
{
	event_active(s->ev_dispatch, EV_TIMEOUT, 0);
}

struct store *store_new(struct event_base *base, const char *conninfo, int pool_size)
{
	struct store *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->base = base;
	s->conninfo = strdup(conninfo);
	s->pool_size = pool_size < 1 ? 1 : pool_size > STORE_MAX_POOL ? STORE_MAX_POOL : pool_size;
	s->schema_version = -1;
	s->ev_dispatch = event_new(base, -1, 0, dispatch_cb, s);
	for (int i = 0; i < s->pool_size; i++) {
		struct store_conn *c = &s->conns[i];
		c->s = s;
		c->idx = i;
		c->ev_retry = evtimer_new(base, retry_cb, c);
		conn_connect(c);
	}
	return s;
}

void store_free(struct store **sp)
{
	struct store *s = *sp;
	if (!s)
		return;
	*sp = NULL;
	s->state_cb = NULL;
	for (int i = 0; i < s->pool_size; i++) {
		struct store_conn *c = &s->conns[i];
		if (c->state != SC_DOWN)
			conn_down(c, "shutdown");
		event_free(c->ev_retry);
	}
	for (int q = 0; q < STORE_Q__COUNT; q++)
		seal_batch(s, (enum store_query)q);
	while (s->head) {
		struct store_req *r = s->head;
		s->head = r->next;
		fail_req(s, r, STORE_UNAVAILABLE);
	}
	event_free(s->ev_dispatch);
	free(s->conninfo);
	free(s);
}

int store_call(struct store *s, enum store_query q, int nparams, const char *const *params,
	       store_cb cb, void *arg)
{
	if (!s || s->up == 0 || s->queued >= STORE_MAX_QUEUED || nparams > STORE_MAX_PARAMS ||
	    nparams != queries[q].nparams)
		return -1;
	struct store_req *r = req_new(q, cb, arg);
	if (!r)
		return -1;
	r->nparams = nparams;
	for (int i = 0; i < nparams; i++)
		r->params[i] = params[i] ? strdup(params[i]) : NULL;
	enqueue_req(s, r, false);
	schedule_dispatch(s);
	return 0;
}

int store_call_bytes(struct store *s, enum store_query q, char *data, size_t len, store_cb cb,
		     void *arg)
{
	if (!s || s->up == 0 || s->queued >= STORE_MAX_QUEUED || queries[q].nparams != 1 || !data ||
	    len > INT_MAX)
		return -1;
	struct store_req *r = req_new(q, cb, arg);
	if (!r)
		return -1;
	r->nparams = 1;
	r->params[0] = data;
	r->bin = true;
	r->bin_len = (int)len;
	enqueue_req(s, r, false);
	schedule_dispatch(s);
	return 0;
}

int store_call_json(struct store *s, enum store_query q, json_t *p, store_cb cb, void *arg)
{
	char *text = json_dumps(p, JSON_COMPACT);
	json_decref(p);
	if (!text)
		return -1;
	const char *params[1] = {text};
	int rc = store_call(s, q, 1, params, cb, arg);
	free(text);
	return rc;
}

int store_batch_add(struct store *s, enum store_query q, json_t *payload, store_cb cb, void *arg)
{
	if (!s || s->up == 0 || s->queued >= STORE_MAX_QUEUED || !queries[q].batch) {
		json_decref(payload);
		return -1;
	}
	struct batch_acc *a = &s->acc[q];
	if (a->n == 0)
		a->items = malloc(sizeof(*a->items) * STORE_BATCH_MAX);
	a->items[a->n++] = (struct store_item){cb, arg, payload};
	s->queued++;
	if (a->n == STORE_BATCH_MAX)
		seal_batch(s, q);
	schedule_dispatch(s);
	return 0;
}

int store_flush(struct store *s, store_cb cb, void *arg)
{
	return store_batch_add(s, STORE_Q_FLUSH, json_true(), cb, arg);
}

/* A stream read whose events wait for a flush (store_stream_read). */
struct durable_read {
	struct store *s;
	store_cb cb;
	void *arg;
	char *value; /* the read's answer, until the flush is done */
};

static void durable_flushed(void *arg, const struct store_reply *rep)
{
	struct durable_read *d = arg;
	struct store_reply out = {.status = rep->status == STORE_OK ? STORE_OK : STORE_UNAVAILABLE,
				  .value = rep->status == STORE_OK ? d->value : NULL,
				  .elapsed_s = rep->elapsed_s};
	d->cb(d->arg, &out);
	free(d->value);
	free(d);
}

static void durable_read_cb(void *arg, const struct store_reply *rep)
{
	struct durable_read *d = arg;
	json_t *res =
	    rep->status == STORE_OK && rep->value ? json_loads(rep->value, 0, NULL) : NULL;
	bool events = json_array_size(json_object_get(res, "events")) > 0;
	json_decref(res);
	if (events) {
		d->value = strdup(rep->value);
		if (d->value && store_flush(d->s, durable_flushed, d) == 0)
			return;
		struct store_reply down = {.status = STORE_UNAVAILABLE};
		d->cb(d->arg, &down);
	} else {
		d->cb(d->arg, rep);
	}
	free(d->value);
	free(d);
}

int store_stream_read(struct store *s, int64_t after, int limit, int max_bytes, store_cb cb,
		      void *arg)
{
	struct durable_read *d = calloc(1, sizeof(*d));
	if (!d)
		return -1;
	d->s = s;
	d->cb = cb;
	d->arg = arg;
	char a[24], l[16], b[16];
	snprintf(a, sizeof(a), "%lld", (long long)after);
	snprintf(l, sizeof(l), "%d", limit);
	snprintf(b, sizeof(b), "%d", max_bytes);
	const char *params[3] = {a, l, b};
	if (store_call(s, STORE_Q_STREAM_READ, 3, params, durable_read_cb, d) < 0) {
		free(d);
		return -1;
	}
	return 0;
}

bool store_available(const struct store *s)
{
	return s && s->up > 0;
}

int store_schema_version(const struct store *s)
{
	return s->schema_version;
}

void store_set_state_cb(struct store *s, void (*cb)(void *arg, bool up), void *arg)
{
	s->state_cb = cb;
	s->state_arg = arg;
}

void store_get_stats(const struct store *s, struct store_stats *st)
{
	st->connections_up = s->up;
	st->pool_size = s->pool_size;
	st->queued = s->queued;
	st->queries = s->nqueries;
	st->errors = s->nerrors;
	st->bounds = latency_bounds;
	st->nbounds = NBOUNDS;
	st->buckets = s->buckets;
	st->sum_s = s->sum_s;
}

void store_refresh_schema_version(struct store *s)
{
	if (store_call(s, STORE_Q_SCHEMA_VERSION, 0, NULL, version_cb, s) < 0)
		log_warn("store_version_check_skipped", "reason=unavailable");
}
