/* ndjson: the NDJSON connection engine (SPEC §1). See include/contactd/ndjson.h.
 *
 * One conn is a small state machine (HELLO -> READY -> CLOSING) over a bufferevent. Input:
 * lines are cut out of the bufferevent's input buffer, parsed, checked and dispatched, at
 * most frames_per_event per turn; the rest waits for a zero-timeout event so that the loop
 * polls other sockets in between. Output: ndjson_send() serialises into the output buffer;
 * above the high-water mark the conn stops handling input (and reading), below half of it
 * it resumes; above four times it is closed. The conn is never freed from inside its own
 * callbacks: closing marks it and the deferred event calls on_close and frees it. */
#include "contactd/ndjson.h"

#include "contactd/config.h"
#include "contactd/log.h"
#include "contactd/tls.h"

#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <event2/util.h>
#include <inttypes.h>
#include <openssl/err.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Input beyond the frame limit that may sit in the input buffer before reading pauses. */
#define NDJSON_READ_SLACK 16384

enum ndjson_state {
	NDJSON_ST_HELLO,   /* waiting for a hello: only "hello" frames pass */
	NDJSON_ST_READY,   /* every frame passes */
	NDJSON_ST_CLOSING, /* flushing output; on_close pending or done */
};

static const char *const state_names[] = {"hello", "ready", "closing"};

struct proto_stats {
	char name[16];
	struct ndjson_stats st;
};

struct ndjson_conn {
	struct ndjson_conn *prev, *next; /* every live conn, for ndjson_conn_free_all() */
	struct bufferevent *bev;
	struct event *ev_defer;	  /* more input, on_close and free: always from the loop */
	struct event *ev_hello;	  /* hello deadline */
	struct event *ev_linger;  /* flush deadline while closing */
	struct evbuffer *scratch; /* one serialised frame before it joins the output */
	struct ndjson_limits lim;
	struct ndjson_handlers h;
	void *ctx;
	struct proto_stats *stats;
	uint64_t id;
	size_t scanned;	     /* input bytes already searched for "\n" */
	unsigned bad_in_row; /* consecutive bad frames */
	enum ndjson_state state;
	bool paused;	 /* the application (or a pending hello) holds input */
	bool out_paused; /* output above the high-water mark */
	bool eof;	 /* the peer closed its side */
	bool notified;	 /* on_close was called */
	bool flushed;	 /* closing: output written, given up on, or the peer is gone */
	char proto[16];
	char peer[64];
	char reason[160];
};

static struct ndjson_conn *all_conns;
static uint64_t last_id;
#define MAX_PROTOS 8
static struct proto_stats proto_table[MAX_PROTOS];
static unsigned n_protos;

static const struct timeval tv_zero = {0, 0};

/* ---- helpers ------------------------------------------------------------------------------ */

static struct proto_stats *stats_for(const char *proto)
{
	for (unsigned i = 0; i < n_protos; i++)
		if (strcmp(proto_table[i].name, proto) == 0)
			return &proto_table[i];
	if (n_protos == MAX_PROTOS)
		return &proto_table[MAX_PROTOS - 1]; /* more protocols than expected: share */
	struct proto_stats *ps = &proto_table[n_protos++];
	snprintf(ps->name, sizeof(ps->name), "%s", proto);
	return ps;
}

static void conn_log(const struct ndjson_conn *conn, enum log_level level, const char *event,
		     const char *fmt, ...) __attribute__((format(printf, 4, 5)));
static void conn_log(const struct ndjson_conn *conn, enum log_level level, const char *event,
		     const char *fmt, ...)
{
	if (!log_enabled(level))
		return;
	char rest[1024] = "";
	if (fmt && *fmt) {
		va_list ap;
		va_start(ap, fmt);
		vsnprintf(rest, sizeof(rest), fmt, ap);
		va_end(ap);
	}
	char qpeer[80];
	log_msg(level, event, "conn=%" PRIu64 " proto=%s peer=%s%s%s", conn->id, conn->proto,
		log_quote(qpeer, sizeof(qpeer), conn->peer), *rest ? " " : "", rest);
}

static void set_state(struct ndjson_conn *conn, enum ndjson_state st)
{
	conn_log(conn, LOG_LEVEL_DEBUG, "conn_state", "from=%s to=%s", state_names[conn->state],
		 state_names[st]);
	conn->state = st;
}

/* Runs defer_cb on a later loop turn, after the loop has polled the sockets again. */
static void schedule(struct ndjson_conn *conn)
{
	event_add(conn->ev_defer, &tv_zero);
}

/* Reading from the socket is on unless the peer is gone or (before closing) our output is
 * over the high-water mark. A paused conn keeps reading until the input buffer reaches its
 * watermark, so that EOF is still seen. A closing conn reads and discards while it flushes,
 * so that close() does not find unread data and reset the connection, which could destroy
 * the error line we just sent (a lingering close). */
static void update_read(struct ndjson_conn *conn)
{
	if (conn->eof || (conn->out_paused && conn->state != NDJSON_ST_CLOSING))
		bufferevent_disable(conn->bev, EV_READ);
	else
		bufferevent_enable(conn->bev, EV_READ);
}

/* Starts closing. DISCARD drops queued output instead of flushing it (the peer cannot or
 * will not read it). */
static void close_conn(struct ndjson_conn *conn, const char *reason, bool discard)
{
	if (conn->state == NDJSON_ST_CLOSING)
		return;
	set_state(conn, NDJSON_ST_CLOSING);
	snprintf(conn->reason, sizeof(conn->reason), "%s", reason && *reason ? reason : "closed");
	evtimer_del(conn->ev_hello);
	update_read(conn);
	struct evbuffer *in = bufferevent_get_input(conn->bev);
	struct evbuffer *out = bufferevent_get_output(conn->bev);
	evbuffer_drain(in, evbuffer_get_length(in));
	if (discard)
		evbuffer_drain(out, evbuffer_get_length(out));
	if (evbuffer_get_length(out) == 0) {
		conn->flushed = true;
	} else {
		struct timeval linger = {NDJSON_LINGER_S, 0};
		bufferevent_setwatermark(conn->bev, EV_WRITE, 0, 0); /* write_cb when empty */
		evtimer_add(conn->ev_linger, &linger);
	}
	event_active(conn->ev_defer, EV_TIMEOUT, 0);
}

static void conn_free(struct ndjson_conn *conn)
{
	if (conn->prev)
		conn->prev->next = conn->next;
	else
		all_conns = conn->next;
	if (conn->next)
		conn->next->prev = conn->prev;
	conn->stats->st.open--;
	bufferevent_free(conn->bev); /* BEV_OPT_CLOSE_ON_FREE: closes the socket (and SSL) */
	event_free(conn->ev_defer);
	event_free(conn->ev_hello);
	event_free(conn->ev_linger);
	evbuffer_free(conn->scratch);
	free(conn);
}

static void notify_close(struct ndjson_conn *conn)
{
	if (conn->notified)
		return;
	conn->notified = true;
	char q[200];
	conn_log(conn, LOG_LEVEL_INFO, "conn_closed", "reason=%s",
		 log_quote(q, sizeof(q), conn->reason));
	conn->h.on_close(conn, conn->reason, conn->ctx);
}

/* ---- output ------------------------------------------------------------------------------- */

static int dump_cb(const char *buffer, size_t size, void *data)
{
	return evbuffer_add(data, buffer, size);
}

static void check_output(struct ndjson_conn *conn)
{
	size_t queued = evbuffer_get_length(bufferevent_get_output(conn->bev));
	if (queued > 4 * conn->lim.output_hwm_bytes) {
		conn->stats->st.slow_consumers++;
		conn_log(conn, LOG_LEVEL_WARN, "slow_consumer", "queued=%zu hwm=%zu", queued,
			 conn->lim.output_hwm_bytes);
		close_conn(conn, "slow consumer", true);
		return;
	}
	if (queued > conn->lim.output_hwm_bytes && !conn->out_paused) {
		conn->out_paused = true;
		update_read(conn);
		conn_log(conn, LOG_LEVEL_DEBUG, "backpressure_on", "queued=%zu", queued);
	}
}

int ndjson_send(struct ndjson_conn *conn, json_t *obj)
{
	if (!obj)
		return -1;
	if (conn->state == NDJSON_ST_CLOSING) {
		json_decref(obj);
		return -1;
	}
	int r = json_dump_callback(obj, dump_cb, conn->scratch, JSON_COMPACT);
	json_decref(obj);
	if (r != 0 || evbuffer_add(conn->scratch, "\n", 1) != 0) {
		evbuffer_drain(conn->scratch, evbuffer_get_length(conn->scratch));
		conn_log(conn, LOG_LEVEL_ERROR, "send_failed", "why=serialise");
		return -1;
	}
	if (bufferevent_write_buffer(conn->bev, conn->scratch) != 0) {
		evbuffer_drain(conn->scratch, evbuffer_get_length(conn->scratch));
		conn_log(conn, LOG_LEVEL_ERROR, "send_failed", "why=buffer");
		return -1;
	}
	conn->stats->st.frames_out++;
	check_output(conn);
	return 0;
}

static json_t *reply_new(const char *type, const json_t *ref)
{
	json_t *o = json_object();
	json_object_set_new(o, "type", json_string(type));
	if (ref)
		json_object_set_new(o, "ref", json_deep_copy(ref));
	return o;
}

int ndjson_reply_ok(struct ndjson_conn *conn, const json_t *ref, json_t *fields)
{
	json_t *o = reply_new("ok", ref);
	if (fields) {
		json_object_update_missing(o, fields); /* "type" and "ref" stay ours */
		json_decref(fields);
	}
	return ndjson_send(conn, o);
}

int ndjson_reply_error(struct ndjson_conn *conn, const json_t *ref, const char *code,
		       const char *message)
{
	json_t *o = reply_new("error", ref);
	json_object_set_new(o, "code", json_string(code));
	json_object_set_new(o, "message", json_string(message ? message : code));
	return ndjson_send(conn, o);
}

/* ---- input -------------------------------------------------------------------------------- */

static bool ref_valid(const json_t *ref)
{
	if (json_is_integer(ref))
		return true;
	if (!json_is_string(ref))
		return false;
	size_t len = json_string_length(ref);
	if (len <= NDJSON_MAX_REF_CHARS)
		return true;
	if (len > 4 * NDJSON_MAX_REF_CHARS)
		return false;
	/* jansson guarantees UTF-8: count the bytes that start a character */
	const char *s = json_string_value(ref);
	size_t chars = 0;
	for (size_t i = 0; i < len; i++)
		if (((unsigned char)s[i] & 0xc0) != 0x80)
			chars++;
	return chars <= NDJSON_MAX_REF_CHARS;
}

static void bad_frame(struct ndjson_conn *conn, const json_t *ref, const char *why)
{
	conn->stats->st.bad_frames++;
	conn->bad_in_row++;
	char q[300];
	conn_log(conn, LOG_LEVEL_DEBUG, "bad_frame", "in_row=%u why=%s", conn->bad_in_row,
		 log_quote(q, sizeof(q), why));
	ndjson_reply_error(conn, ref, "bad_frame", why);
	if (conn->bad_in_row >= NDJSON_MAX_BAD_FRAMES)
		close_conn(conn, "too many bad frames", false);
}

static void frame_too_large(struct ndjson_conn *conn, size_t seen)
{
	conn->stats->st.too_large++;
	conn_log(conn, LOG_LEVEL_INFO, "frame_too_large", "bytes=%zu max=%zu", seen,
		 conn->lim.max_frame_bytes);
	char msg[96];
	snprintf(msg, sizeof(msg), "a frame may hold at most %zu bytes", conn->lim.max_frame_bytes);
	ndjson_reply_error(conn, NULL, "frame_too_large", msg);
	close_conn(conn, "frame too large", false);
}

/* One parsed line: FRAME (owned, NULL when the line was not JSON). */
static void dispatch(struct ndjson_conn *conn, json_t *frame, const json_error_t *jerr)
{
	if (!frame) {
		char msg[220];
		snprintf(msg, sizeof(msg), "not JSON: %s", jerr->text);
		bad_frame(conn, NULL, msg);
		return;
	}
	if (!json_is_object(frame)) {
		bad_frame(conn, NULL, "a frame must be a JSON object");
		goto out;
	}
	const json_t *ref = json_object_get(frame, "ref");
	if (ref && !ref_valid(ref)) {
		bad_frame(conn, NULL,
			  "\"ref\" must be an integer or a string of at most 64 characters");
		goto out;
	}
	const char *type = json_string_value(json_object_get(frame, "type"));
	if (!type || !*type) {
		bad_frame(conn, ref, "a frame needs a string \"type\"");
		goto out;
	}
	conn->bad_in_row = 0;
	if (conn->state == NDJSON_ST_HELLO) {
		if (strcmp(type, "hello") != 0) {
			ndjson_reply_error(conn, ref, "unauthorized", "hello first");
			close_conn(conn, "frame before hello", false);
			goto out;
		}
		conn->paused = true; /* until set_ready() or resume() */
	}
	conn->stats->st.frames_in++;
	conn->h.on_frame(conn, frame, ref, conn->ctx);
out:
	json_decref(frame);
}

/* Handles complete lines from the input buffer, at most frames_per_event of them. */
static void process_input(struct ndjson_conn *conn)
{
	struct evbuffer *in = bufferevent_get_input(conn->bev);
	size_t max = conn->lim.max_frame_bytes;
	for (unsigned n = 0;; n++) {
		if (conn->state == NDJSON_ST_CLOSING || conn->paused)
			return;
		if (conn->out_paused) {
			if (conn->eof) /* it will not read what we owe it: flush and go */
				close_conn(conn, "peer closed", false);
			return;
		}
		size_t avail = evbuffer_get_length(in);
		if (n == conn->lim.frames_per_event) {
			if (avail > 0)
				schedule(conn);
			return;
		}
		struct evbuffer_ptr eol;
		eol.pos = -1;
		if (conn->scanned < avail) {
			struct evbuffer_ptr start;
			evbuffer_ptr_set(in, &start, conn->scanned, EVBUFFER_PTR_SET);
			eol = evbuffer_search_eol(in, &start, NULL, EVBUFFER_EOL_LF);
		}
		if (eol.pos < 0) {
			conn->scanned = avail;
			if (avail > max + 1) /* + 1: the line may still end in "\r\n" */
				frame_too_large(conn, avail);
			else if (conn->eof)
				close_conn(conn, "peer closed", false);
			return;
		}
		conn->scanned = 0;
		size_t linelen = (size_t)eol.pos;
		if (linelen > max + 1) {
			frame_too_large(conn, linelen);
			return;
		}
		const char *p = (const char *)evbuffer_pullup(in, (ev_ssize_t)linelen + 1);
		size_t len = linelen;
		if (len > 0 && p[len - 1] == '\r')
			len--;
		if (len > max) {
			frame_too_large(conn, len);
			return;
		}
		if (len == 0) {
			evbuffer_drain(in, linelen + 1);
			continue;
		}
		json_error_t jerr;
		json_t *frame = json_loadb(p, len, JSON_REJECT_DUPLICATES, &jerr);
		evbuffer_drain(in, linelen + 1); /* before dispatch: handlers may close the conn */
		dispatch(conn, frame, &jerr);
	}
}

/* ---- callbacks ---------------------------------------------------------------------------- */

static void read_cb(struct bufferevent *bev, void *arg)
{
	struct ndjson_conn *conn = arg;
	if (conn->state == NDJSON_ST_CLOSING) {
		struct evbuffer *in = bufferevent_get_input(bev);
		evbuffer_drain(in, evbuffer_get_length(in));
		return;
	}
	process_input(conn);
}

static void write_cb(struct bufferevent *bev, void *arg)
{
	struct ndjson_conn *conn = arg;
	size_t queued = evbuffer_get_length(bufferevent_get_output(bev));
	if (conn->state == NDJSON_ST_CLOSING) {
		if (queued == 0 && !conn->flushed) {
			conn->flushed = true;
			event_active(conn->ev_defer, EV_TIMEOUT, 0);
		}
		return;
	}
	if (conn->out_paused && queued <= conn->lim.output_hwm_bytes / 2) {
		conn->out_paused = false;
		conn_log(conn, LOG_LEVEL_DEBUG, "backpressure_off", "queued=%zu", queued);
		update_read(conn);
		schedule(conn); /* lines may be waiting in the input buffer */
	}
}

/* Describes a bufferevent error into BUF, emptying the TLS error queues. */
static void describe_error(struct ndjson_conn *conn, short what, char *buf, size_t bufsz)
{
	int err = EVUTIL_SOCKET_ERROR();
	unsigned long e = bufferevent_get_openssl_error(conn->bev);
	if (e) {
		char reason[128];
		ERR_error_string_n(e, reason, sizeof(reason));
		snprintf(buf, bufsz, "tls error: %s", reason);
		while (bufferevent_get_openssl_error(conn->bev))
			;
	} else if (err) {
		snprintf(buf, bufsz, "%s error: %s", what & BEV_EVENT_WRITING ? "write" : "read",
			 evutil_socket_error_to_string(err));
	} else {
		snprintf(buf, bufsz, "%s error", what & BEV_EVENT_WRITING ? "write" : "read");
	}
	tls_log_errors("ndjson_tls_error");
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct ndjson_conn *conn = arg;
	if (what & BEV_EVENT_CONNECTED) {
		conn_log(conn, LOG_LEVEL_DEBUG, "tls_established", "%s", "");
		return;
	}
	if (conn->state == NDJSON_ST_CLOSING) {
		if (what & BEV_EVENT_ERROR) { /* nothing more can be flushed */
			char why[200];
			describe_error(conn, what, why, sizeof(why));
			conn->flushed = true;
			event_active(conn->ev_defer, EV_TIMEOUT, 0);
		} else if (what & BEV_EVENT_EOF) { /* it may still read what we flush */
			conn->eof = true;
			update_read(conn);
		}
		return;
	}
	if (what & BEV_EVENT_ERROR) {
		char why[200];
		describe_error(conn, what, why, sizeof(why));
		close_conn(conn, why, true);
		return;
	}
	if (what & BEV_EVENT_EOF) {
		/* lines already received are still handled, then the conn closes */
		conn->eof = true;
		update_read(conn);
		schedule(conn);
	}
}

static void defer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ndjson_conn *conn = arg;
	if (conn->state != NDJSON_ST_CLOSING) {
		process_input(conn); /* closing from here activates this event again */
		return;
	}
	notify_close(conn);
	if (conn->flushed)
		conn_free(conn);
}

static void hello_timeout_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ndjson_conn *conn = arg;
	conn_log(conn, LOG_LEVEL_INFO, "hello_timeout", "timeout_s=%u", conn->lim.hello_timeout_s);
	ndjson_reply_error(conn, NULL, "unauthorized", "hello timeout");
	close_conn(conn, "hello timeout", false);
}

static void linger_cb(evutil_socket_t fd, short what, void *arg)
{
	struct ndjson_conn *conn = arg;
	conn_log(conn, LOG_LEVEL_DEBUG, "linger_expired", "queued=%zu",
		 evbuffer_get_length(bufferevent_get_output(conn->bev)));
	conn->flushed = true;
	event_active(conn->ev_defer, EV_TIMEOUT, 0);
}

/* ---- life cycle --------------------------------------------------------------------------- */

void ndjson_limits_from_config(struct ndjson_limits *lim, const struct config *cfg)
{
	memset(lim, 0, sizeof(*lim));
	lim->max_frame_bytes = cfg->max_frame_bytes > 0 ? (size_t)cfg->max_frame_bytes : 0;
	lim->hello_timeout_s = cfg->hello_timeout_s > 0 ? (unsigned)cfg->hello_timeout_s : 0;
}

struct ndjson_conn *ndjson_conn_new(struct bufferevent *bev, const struct ndjson_limits *limits,
				    const struct ndjson_handlers *handlers, void *ctx,
				    const char *proto, const char *peer)
{
	struct event_base *base = bufferevent_get_base(bev);
	struct ndjson_conn *conn = NULL;
	if (!handlers || !handlers->on_frame || !handlers->on_close)
		goto fail;
	conn = calloc(1, sizeof(*conn));
	if (!conn)
		goto fail;
	conn->ev_defer = event_new(base, -1, 0, defer_cb, conn);
	conn->ev_hello = evtimer_new(base, hello_timeout_cb, conn);
	conn->ev_linger = evtimer_new(base, linger_cb, conn);
	conn->scratch = evbuffer_new();
	if (!conn->ev_defer || !conn->ev_hello || !conn->ev_linger || !conn->scratch)
		goto fail;

	if (limits)
		conn->lim = *limits;
	if (conn->lim.max_frame_bytes == 0)
		conn->lim.max_frame_bytes = NDJSON_DEFAULT_MAX_FRAME_BYTES;
	if (conn->lim.hello_timeout_s == 0)
		conn->lim.hello_timeout_s = NDJSON_DEFAULT_HELLO_TIMEOUT_S;
	if (conn->lim.output_hwm_bytes == 0)
		conn->lim.output_hwm_bytes = NDJSON_DEFAULT_OUTPUT_HWM_BYTES;
	if (conn->lim.frames_per_event == 0)
		conn->lim.frames_per_event = NDJSON_DEFAULT_FRAMES_PER_EVENT;
	conn->h = *handlers;
	conn->ctx = ctx;
	conn->bev = bev;
	conn->id = ++last_id;
	conn->state = NDJSON_ST_HELLO;
	snprintf(conn->proto, sizeof(conn->proto), "%s", proto && *proto ? proto : "ndjson");
	snprintf(conn->peer, sizeof(conn->peer), "%s", peer && *peer ? peer : "-");
	conn->stats = stats_for(conn->proto);
	conn->stats->st.open++;
	conn->stats->st.opened++;
	conn->next = all_conns;
	if (all_conns)
		all_conns->prev = conn;
	all_conns = conn;

	bufferevent_setcb(bev, read_cb, write_cb, event_cb, conn);
	bufferevent_set_timeouts(bev, NULL, NULL);
	/* the input buffer holds at most one whole frame and some slack: beyond that a line
	 * without "\n" is too large, so reading never stalls on a full buffer */
	bufferevent_setwatermark(bev, EV_READ, 0,
				 conn->lim.max_frame_bytes + 2 + NDJSON_READ_SLACK);
	bufferevent_setwatermark(bev, EV_WRITE, conn->lim.output_hwm_bytes / 2, 0);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	struct timeval hello = {(time_t)conn->lim.hello_timeout_s, 0};
	evtimer_add(conn->ev_hello, &hello);
	conn_log(conn, LOG_LEVEL_INFO, "conn_opened", "%s", "");
	if (evbuffer_get_length(bufferevent_get_input(bev)) > 0)
		schedule(conn);
	return conn;
fail:
	if (conn) {
		if (conn->ev_defer)
			event_free(conn->ev_defer);
		if (conn->ev_hello)
			event_free(conn->ev_hello);
		if (conn->ev_linger)
			event_free(conn->ev_linger);
		if (conn->scratch)
			evbuffer_free(conn->scratch);
		free(conn);
	}
	log_error("conn_new_failed", "proto=%s", proto ? proto : "-");
	bufferevent_free(bev);
	return NULL;
}

void ndjson_conn_close(struct ndjson_conn *conn, const char *reason)
{
	close_conn(conn, reason, false);
}

void ndjson_conn_free_all(void)
{
	struct ndjson_conn *conn;
	while ((conn = all_conns) != NULL) {
		if (conn->state != NDJSON_ST_CLOSING)
			snprintf(conn->reason, sizeof(conn->reason), "shutdown");
		conn->state = NDJSON_ST_CLOSING;
		notify_close(conn);
		conn_free(conn);
	}
}

/* ---- accessors ---------------------------------------------------------------------------- */

void ndjson_conn_set_ready(struct ndjson_conn *conn)
{
	if (conn->state != NDJSON_ST_HELLO)
		return;
	set_state(conn, NDJSON_ST_READY);
	evtimer_del(conn->ev_hello);
	ndjson_conn_resume(conn);
}

bool ndjson_conn_is_ready(const struct ndjson_conn *conn)
{
	return conn->state == NDJSON_ST_READY;
}

void ndjson_conn_pause(struct ndjson_conn *conn)
{
	conn->paused = true;
}

void ndjson_conn_resume(struct ndjson_conn *conn)
{
	if (!conn->paused)
		return;
	conn->paused = false;
	if (conn->state != NDJSON_ST_CLOSING)
		schedule(conn); /* never from inside the caller's stack */
}

bool ndjson_conn_is_closing(const struct ndjson_conn *conn)
{
	return conn->state == NDJSON_ST_CLOSING;
}

void *ndjson_conn_ctx(const struct ndjson_conn *conn)
{
	return conn->ctx;
}

void ndjson_conn_set_ctx(struct ndjson_conn *conn, void *ctx)
{
	conn->ctx = ctx;
}

uint64_t ndjson_conn_id(const struct ndjson_conn *conn)
{
	return conn->id;
}

const char *ndjson_conn_peer(const struct ndjson_conn *conn)
{
	return conn->peer;
}

const char *ndjson_conn_proto(const struct ndjson_conn *conn)
{
	return conn->proto;
}

size_t ndjson_conn_queued_bytes(const struct ndjson_conn *conn)
{
	return evbuffer_get_length(bufferevent_get_output(conn->bev));
}

/* ---- stats -------------------------------------------------------------------------------- */

void ndjson_get_stats(const char *proto, struct ndjson_stats *st)
{
	memset(st, 0, sizeof(*st));
	for (unsigned i = 0; i < n_protos; i++) {
		const struct ndjson_stats *s = &proto_table[i].st;
		if (proto && strcmp(proto_table[i].name, proto) != 0)
			continue;
		st->open += s->open;
		st->opened += s->opened;
		st->frames_in += s->frames_in;
		st->frames_out += s->frames_out;
		st->bad_frames += s->bad_frames;
		st->too_large += s->too_large;
		st->slow_consumers += s->slow_consumers;
	}
}

unsigned long long ndjson_conn_count(const char *proto)
{
	struct ndjson_stats st;
	ndjson_get_stats(proto, &st);
	return st.open;
}
