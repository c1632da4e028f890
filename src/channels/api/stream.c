/* GET /v1/stream: Server-Sent Events of events_log (see stream.h). */
#include "contactd/stream.h"

#include "api_internal.h"
#include "contactd/app.h"
#include "contactd/config.h"
#include "contactd/log.h"
#include "contactd/store.h"

#include <ctype.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/http.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>
#include <time.h>

#define STREAM_POLL_MS	   100	       /* the shared poller reads the log this often */
#define STREAM_READ_LIMIT  200	       /* events per read (poller and catch-up) */
#define STREAM_READ_BYTES  (256 << 10) /* ... and about this much data */
#define STREAM_KEEPALIVE_S 15	       /* ": keepalive" comment this often */
#define STREAM_MAX_QUEUED  (1 << 20)   /* a client with more unsent output is dropped */
#define STREAM_CATCHUP_LOW                                                                         \
	(256 << 10)		    /* a live client with more falls back to catch-up;             \
				     * catch-up reads wait until it has less */
#define STREAM_STALL_MS	      10000 /* catch-up waiting this long for that: dropped */
#define STREAM_RETRY_MS	      100   /* catch-up retry (store busy, waiting on a gap) */
#define STREAM_WRITE_TMO_S    60    /* no write progress this long: the client is gone */
#define STREAM_MAX_CLIENTS    10000
#define STREAM_PRUNE_EVERY_S  3600
#define STREAM_PRUNE_FIRST_S  60
#define STREAM_PRUNE_AGE_S    (7 * 24 * 3600)
#define STREAM_PRUNE_BATCH    10000
#define STREAM_PRUNE_PAUSE_MS 200 /* between two full batches */

enum client_state {
	C_WAIT_HEAD, /* no Last-Event-ID: starts at the poller's head once it is known */
	C_CATCHUP,   /* reads of its own until it reaches the poller's head */
	C_LIVE,	     /* gets the poller's events */
};

struct client {
	struct stream *s;
	TAILQ_ENTRY(client) link;
	struct evhttp_request *req;
	struct evhttp_connection *evcon;
	struct event *retry; /* catch-up pacing */
	enum client_state state;
	int64_t last;	       /* the newest event id this client has been sent */
	bool reading;	       /* a catch-up read is at the store */
	bool orphan;	       /* gone while reading: the read's callback frees it */
	int64_t stalled_since; /* CLOCK_MONOTONIC ms since its output stayed over the mark */
	char peer[64];	       /* host:port, for logs */
	unsigned long long sent;
};
TAILQ_HEAD(client_list, client);

struct stream {
	struct app *app;
	struct client_list clients;
	unsigned nclients;
	int64_t head; /* the poller's position: every event <= head went to the live clients */
	bool head_valid, polling, draining, ready, pruning;
	struct event *poll_timer, *keepalive_timer, *prune_timer;
	unsigned long long events_sent, dropped_slow, pruned;
};

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void add_after_ms(struct event *ev, long ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	evtimer_add(ev, &tv);
}

/* ---- clients ------------------------------------------------------------------------- */

static size_t queued_bytes(const struct client *c)
{
	struct bufferevent *bev = evhttp_connection_get_bufferevent(c->evcon);
	return bev ? evbuffer_get_length(bufferevent_get_output(bev)) : 0;
}

static void client_unlink(struct client *c)
{
	TAILQ_REMOVE(&c->s->clients, c, link);
	c->s->nclients--;
	if (c->s->nclients == 0)
		c->s->head_valid = false; /* re-read the head when someone connects again */
	evhttp_connection_set_closecb(c->evcon, NULL, NULL);
	c->req = NULL;
	c->evcon = NULL;
}

static void client_free(struct client *c)
{
	if (c->reading) {
		c->orphan = true;
		return;
	}
	if (c->retry)
		event_free(c->retry);
	free(c);
}

/* HOW: 0 = the peer went away (libevent frees the connection), 1 = drop it now (slow, or
 * shutting down without a goodbye), 2 = end it cleanly with the final chunk. */
static void client_close(struct client *c, int how, const char *why)
{
	struct evhttp_request *req = c->req;
	struct evhttp_connection *evcon = c->evcon;
	log_info("stream_closed", "peer=%s reason=%s last_id=%" PRId64 " sent=%llu queued=%zu",
		 c->peer, why, c->last, c->sent, how ? queued_bytes(c) : (size_t)0);
	client_unlink(c);
	if (how == 1)
		evhttp_connection_free(evcon); /* frees REQ too */
	else if (how == 2)
		evhttp_send_reply_end(req);
	client_free(c);
}

static void on_conn_close(struct evhttp_connection *evcon, void *arg)
{
	struct client *c = arg;
	struct evhttp_request *req = c->req;
	client_close(c, 0, "peer_closed");
	/* libevent detached the request from the failed connection and left it to us */
	if (req && !evhttp_request_get_connection(req))
		evhttp_send_reply_end(req);
}

/* Sends TEXT (LEN bytes) to C; drops C and returns false when its output is over the
 * limit. */
static bool client_send(struct client *c, const char *text, size_t len)
{
	if (queued_bytes(c) + len > STREAM_MAX_QUEUED) {
		c->s->dropped_slow++;
		log_warn("stream_client_dropped",
			 "peer=%s reason=slow_consumer queued=%zu limit=%d", c->peer,
			 queued_bytes(c), STREAM_MAX_QUEUED);
		client_close(c, 1, "slow_consumer");
		return false;
	}
	struct evbuffer *b = evbuffer_new();
	if (!b)
		return true;
	evbuffer_add(b, text, len);
	evhttp_send_reply_chunk(c->req, b);
	evbuffer_free(b);
	return true;
}

/* Formats EV ({id, kind, at, data}) as one SSE event into BUF; returns its id, or -1 when
 * it does not look like an event. */
static int64_t render(json_t *ev, struct evbuffer *buf)
{
	json_t *id = json_object_get(ev, "id");
	const char *kind = json_string_value(json_object_get(ev, "kind"));
	if (!json_is_integer(id) || !kind)
		return -1;
	char *data = json_dumps(ev, JSON_COMPACT);
	if (!data)
		return -1;
	/* kinds come from the schema ([a-z0-9_.]); never let one break the framing */
	char k[128];
	size_t n = 0;
	for (const char *p = kind; *p && n < sizeof(k) - 1; p++)
		k[n++] = (*p == '\n' || *p == '\r') ? '_' : *p;
	k[n] = '\0';
	evbuffer_add_printf(buf, "id: %" PRId64 "\nevent: %s\ndata: %s\n\n",
			    (int64_t)json_integer_value(id), k, data);
	free(data);
	return (int64_t)json_integer_value(id);
}

/* Sends the events of a cd_stream_read answer with id > C->last to C; returns false when C
 * was dropped. */
static bool client_send_events(struct client *c, json_t *events)
{
	size_t i;
	json_t *ev;
	json_array_foreach(events, i, ev)
	{
		int64_t id = json_integer_value(json_object_get(ev, "id"));
		if (id <= c->last)
			continue;
		struct evbuffer *b = evbuffer_new();
		if (!b || render(ev, b) < 0) {
			if (b)
				evbuffer_free(b);
			continue;
		}
		size_t len = evbuffer_get_length(b);
		bool ok = client_send(c, (const char *)evbuffer_pullup(b, -1), len);
		evbuffer_free(b);
		if (!ok)
			return false;
		c->last = id;
		c->sent++;
		c->s->events_sent++;
	}
	return true;
}

/* ---- catch-up ------------------------------------------------------------------------ */

static void catchup_step(struct client *c);

static void catchup_cb(void *arg, const struct store_reply *rep)
{
	struct client *c = arg;
	c->reading = false;
	if (c->orphan) {
		client_free(c);
		return;
	}
	json_t *res =
	    rep->status == STORE_OK && rep->value ? json_loads(rep->value, 0, NULL) : NULL;
	if (!res) {
		if (rep->status != STORE_UNAVAILABLE)
			log_warn("stream_read_failed", "peer=%s status=%d", c->peer, rep->status);
		add_after_ms(c->retry, STREAM_RETRY_MS);
		return;
	}
	json_t *events = json_object_get(res, "events");
	int64_t last = json_integer_value(json_object_get(res, "last"));
	bool more = json_is_true(json_object_get(res, "more"));
	if (!client_send_events(c, events)) {
		json_decref(res);
		return;
	}
	json_decref(res);
	if (last > c->last)
		c->last = last;
	struct stream *s = c->s;
	if (s->head_valid && c->last >= s->head) {
		c->state = C_LIVE;
		log_debug("stream_live", "peer=%s last_id=%" PRId64, c->peer, c->last);
		return;
	}
	/* more to read: at once while there is, else after a pause (waiting on a gap, or on
	 * the poller's head) */
	add_after_ms(c->retry, more ? 0 : STREAM_RETRY_MS);
}

static void catchup_step(struct client *c)
{
	if (c->state != C_CATCHUP || c->reading)
		return;
	if (queued_bytes(c) > STREAM_CATCHUP_LOW) {
		/* let it read what it has first; a consumer that takes in nothing is dropped */
		int64_t now = mono_ms();
		if (!c->stalled_since)
			c->stalled_since = now;
		if (now - c->stalled_since >= STREAM_STALL_MS) {
			c->s->dropped_slow++;
			log_warn("stream_client_dropped",
				 "peer=%s reason=slow_consumer queued=%zu stalled_ms=%lld", c->peer,
				 queued_bytes(c), (long long)(now - c->stalled_since));
			client_close(c, 1, "slow_consumer");
			return;
		}
		add_after_ms(c->retry, STREAM_RETRY_MS);
		return;
	}
	c->stalled_since = 0;
	c->reading = true;
	if (store_stream_read(c->s->app->store, c->last, STREAM_READ_LIMIT, STREAM_READ_BYTES,
			      catchup_cb, c) < 0) {
		c->reading = false;
		add_after_ms(c->retry, STREAM_RETRY_MS);
	}
}

static void retry_cb(evutil_socket_t fd, short what, void *arg)
{
	catchup_step(arg);
}

/* ---- the shared poller --------------------------------------------------------------- */

static void poll_now(struct stream *s);

static void head_cb(void *arg, const struct store_reply *rep)
{
	struct stream *s = arg;
	s->polling = false;
	if (rep->status != STORE_OK || !rep->value)
		return;
	s->head = strtoll(rep->value, NULL, 10);
	s->head_valid = true;
	for (struct client *c = TAILQ_FIRST(&s->clients); c; c = TAILQ_NEXT(c, link)) {
		if (c->state == C_WAIT_HEAD) {
			c->last = s->head;
			c->state = C_LIVE;
		}
	}
}

static void read_cb(void *arg, const struct store_reply *rep)
{
	struct stream *s = arg;
	s->polling = false;
	json_t *res =
	    rep->status == STORE_OK && rep->value ? json_loads(rep->value, 0, NULL) : NULL;
	if (!res) {
		if (rep->status != STORE_UNAVAILABLE)
			log_warn("stream_read_failed", "peer=poller status=%d", rep->status);
		return;
	}
	json_t *events = json_object_get(res, "events");
	int64_t last = json_integer_value(json_object_get(res, "last"));
	int64_t skipped = json_integer_value(json_object_get(res, "skipped"));
	if (skipped > 0)
		log_info("stream_gap_skipped", "after=%" PRId64 " ids=%" PRId64, s->head, skipped);
	if (json_integer_value(json_object_get(res, "stale_skips")) > 0)
		log_warn("stream_gap_stale",
			 "after=%" PRId64 " reason=\"a transaction open over 60 s "
			 "kept a gap; skipped\"",
			 s->head);
	if (s->head_valid) {
		/* render each event once, then hand the bytes to every live client */
		size_t i;
		json_t *ev;
		json_array_foreach(events, i, ev)
		{
			struct evbuffer *b = evbuffer_new();
			int64_t id = b ? render(ev, b) : -1;
			if (id < 0) {
				if (b)
					evbuffer_free(b);
				continue;
			}
			size_t len = evbuffer_get_length(b);
			const char *text = (const char *)evbuffer_pullup(b, -1);
			struct client *c, *next;
			for (c = TAILQ_FIRST(&s->clients); c; c = next) {
				next = TAILQ_NEXT(c, link);
				if (c->state != C_LIVE || id <= c->last)
					continue;
				if (queued_bytes(c) > STREAM_CATCHUP_LOW) {
					/* behind: it reads on at its own pace (catch-up) */
					c->state = C_CATCHUP;
					log_debug("stream_lagging", "peer=%s last_id=%" PRId64,
						  c->peer, c->last);
					add_after_ms(c->retry, STREAM_RETRY_MS);
					continue;
				}
				if (client_send(c, text, len)) {
					c->last = id;
					c->sent++;
					s->events_sent++;
				}
			}
			evbuffer_free(b);
		}
		if (last > s->head)
			s->head = last;
	}
	bool more = json_is_true(json_object_get(res, "more"));
	json_decref(res);
	if (!more)
		return;
	/* more is ready: read on at once while a live client takes it */
	for (struct client *c = TAILQ_FIRST(&s->clients); c; c = TAILQ_NEXT(c, link)) {
		if (c->state == C_LIVE) {
			poll_now(s);
			return;
		}
	}
}

static void poll_now(struct stream *s)
{
	if (s->polling || s->draining || s->nclients == 0 || !store_available(s->app->store))
		return;
	s->polling = true;
	int rc;
	if (!s->head_valid) {
		rc = store_call(s->app->store, STORE_Q_STREAM_HEAD, 0, NULL, head_cb, s);
	} else {
		rc = store_stream_read(s->app->store, s->head, STREAM_READ_LIMIT, STREAM_READ_BYTES,
				       read_cb, s);
	}
	if (rc < 0)
		s->polling = false;
}

static void poll_cb(evutil_socket_t fd, short what, void *arg)
{
	poll_now(arg);
}

static void keepalive_cb(evutil_socket_t fd, short what, void *arg)
{
	struct stream *s = arg;
	static const char ka[] = ": keepalive\n\n";
	struct client *c, *next;
	for (c = TAILQ_FIRST(&s->clients); c; c = next) {
		next = TAILQ_NEXT(c, link);
		client_send(c, ka, sizeof(ka) - 1);
	}
}

/* ---- pruning ------------------------------------------------------------------------- */

static void prune_cb(void *arg, const struct store_reply *rep)
{
	struct stream *s = arg;
	s->pruning = false;
	json_t *res =
	    rep->status == STORE_OK && rep->value ? json_loads(rep->value, 0, NULL) : NULL;
	if (!res) {
		log_warn("events_prune_failed", "status=%d retry_in_s=%d", rep->status,
			 STREAM_PRUNE_EVERY_S);
		return;
	}
	json_int_t n = json_integer_value(json_object_get(res, "deleted"));
	json_decref(res);
	s->pruned += (unsigned long long)n;
	if (n > 0)
		log_info("events_pruned", "deleted=%lld", (long long)n);
	if (n >= STREAM_PRUNE_BATCH && !s->draining)
		add_after_ms(s->prune_timer, STREAM_PRUNE_PAUSE_MS); /* more: next batch soon */
	else
		add_after_ms(s->prune_timer, STREAM_PRUNE_EVERY_S * 1000L);
}

static void prune_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct stream *s = arg;
	if (s->draining || s->pruning)
		return;
	json_t *p = json_pack("{s:i, s:i}", "older_than_s", STREAM_PRUNE_AGE_S, "batch",
			      STREAM_PRUNE_BATCH);
	s->pruning = true;
	if (!p || store_call_json(s->app->store, STORE_Q_EVENTS_PRUNE, p, prune_cb, s) < 0) {
		s->pruning = false;
		add_after_ms(s->prune_timer, STREAM_PRUNE_EVERY_S * 1000L);
	}
}

/* ---- HTTP ---------------------------------------------------------------------------- */

/* Parses a resume id: 1..18 digits. Returns 0 and *id, or -1. */
static int parse_id(const char *text, int64_t *id)
{
	size_t n = strlen(text);
	if (n == 0 || n > 18)
		return -1;
	for (size_t i = 0; i < n; i++)
		if (!isdigit((unsigned char)text[i]))
			return -1;
	*id = strtoll(text, NULL, 10);
	return 0;
}

void stream_http_handle(struct api_req *r)
{
	struct stream *s = r->app->stream;
	if (!s || s->draining) {
		evhttp_add_header(evhttp_request_get_output_headers(r->req), "Retry-After", "1");
		api_reply_error(r, 503, "unavailable", "shutting down", NULL);
		return;
	}
	if (s->nclients >= STREAM_MAX_CLIENTS) {
		evhttp_add_header(evhttp_request_get_output_headers(r->req), "Retry-After", "5");
		api_reply_error(r, 503, "unavailable", "too many streams", NULL);
		return;
	}
	const char *resume =
	    evhttp_find_header(evhttp_request_get_input_headers(r->req), "Last-Event-ID");
	const char *field = "Last-Event-ID";
	if (!resume || !*resume) {
		resume = api_query(r, "after");
		field = "after";
	}
	int64_t after = -1;
	if (resume && *resume && parse_id(resume, &after) < 0) {
		api_reply_error(r, 400, "invalid", "must be an event id (digits)", field);
		return;
	}
	struct client *c = calloc(1, sizeof(*c));
	if (!c) {
		api_reply_error(r, 500, "internal", "out of memory", NULL);
		return;
	}
	c->retry = evtimer_new(s->app->base, retry_cb, c);
	if (!c->retry) {
		free(c);
		api_reply_error(r, 500, "internal", "out of memory", NULL);
		return;
	}
	c->s = s;
	c->req = r->req;
	c->evcon = evhttp_request_get_connection(r->req);
	char *host = NULL;
	ev_uint16_t port = 0;
	evhttp_connection_get_peer(c->evcon, &host, &port);
	snprintf(c->peer, sizeof(c->peer), "%s:%u", host ? host : "-", (unsigned)port);
	struct evkeyvalq *h = evhttp_request_get_output_headers(r->req);
	evhttp_add_header(h, "Content-Type", "text/event-stream");
	evhttp_add_header(h, "Cache-Control", "no-store");
	evhttp_add_header(h, "X-Accel-Buffering", "no");
	const char *who = json_string_value(json_object_get(r->token, "name"));
	log_info("stream_opened", "peer=%s token=%s after=%" PRId64, c->peer, who ? who : "-",
		 after);
	api_req_detach(r); /* the request is ours now */
	evhttp_send_reply_start(c->req, 200, "OK");
	/* an idle stream is normal: no read timeout; a peer that stops reading while output is
	 * pending is gone after STREAM_WRITE_TMO_S */
	struct bufferevent *bev = evhttp_connection_get_bufferevent(c->evcon);
	struct timeval wtv = {STREAM_WRITE_TMO_S, 0};
	if (bev)
		bufferevent_set_timeouts(bev, NULL, &wtv);
	evhttp_connection_set_closecb(c->evcon, on_conn_close, c);
	TAILQ_INSERT_TAIL(&s->clients, c, link);
	s->nclients++;
	static const char hello[] = "retry: 1000\n\n";
	if (!client_send(c, hello, sizeof(hello) - 1))
		return;
	if (after >= 0) {
		c->state = C_CATCHUP;
		c->last = after;
		catchup_step(c);
	} else if (s->head_valid) {
		c->state = C_LIVE;
		c->last = s->head;
	} else {
		c->state = C_WAIT_HEAD;
		poll_now(s);
	}
}

/* ---- life ---------------------------------------------------------------------------- */

struct stream *stream_new(struct app *app)
{
	struct stream *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->app = app;
	TAILQ_INIT(&s->clients);
	s->poll_timer = event_new(app->base, -1, EV_PERSIST, poll_cb, s);
	s->keepalive_timer = event_new(app->base, -1, EV_PERSIST, keepalive_cb, s);
	s->prune_timer = evtimer_new(app->base, prune_timer_cb, s);
	if (!s->poll_timer || !s->keepalive_timer || !s->prune_timer) {
		stream_free(&s);
		return NULL;
	}
	struct timeval every = {0, STREAM_POLL_MS * 1000};
	event_add(s->poll_timer, &every);
	struct timeval ka = {STREAM_KEEPALIVE_S, 0};
	event_add(s->keepalive_timer, &ka);
	return s;
}

void stream_store_ready(struct stream *s)
{
	if (!s || s->ready)
		return;
	s->ready = true;
	add_after_ms(s->prune_timer, STREAM_PRUNE_FIRST_S * 1000L);
}

void stream_drain(struct stream *s)
{
	if (!s || s->draining)
		return;
	s->draining = true;
	struct client *c;
	while ((c = TAILQ_FIRST(&s->clients)) != NULL)
		client_close(c, 2, "shutdown");
}

void stream_free(struct stream **sp)
{
	struct stream *s = *sp;
	if (!s)
		return;
	*sp = NULL;
	struct client *c;
	while ((c = TAILQ_FIRST(&s->clients)) != NULL) {
		c->reading = false; /* the store was freed first: no callback will come */
		client_close(c, 1, "exit");
	}
	if (s->poll_timer)
		event_free(s->poll_timer);
	if (s->keepalive_timer)
		event_free(s->keepalive_timer);
	if (s->prune_timer)
		event_free(s->prune_timer);
	free(s);
}

void stream_get_stats(const struct stream *s, struct stream_stats *st)
{
	memset(st, 0, sizeof(*st));
	if (!s)
		return;
	st->clients = s->nclients;
	st->events_sent = s->events_sent;
	st->dropped_slow = s->dropped_slow;
	st->pruned = s->pruned;
}
