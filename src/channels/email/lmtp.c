/* The lmtp and smtp listeners: one protocol engine for both (see email.h). */
#include "contactd/app.h"
#include "contactd/chat.h"
#include "contactd/config.h"
#include "contactd/email.h"
#include "contactd/listener.h"
#include "contactd/log.h"
#include "contactd/routing.h"
#include "contactd/sla.h"
#include "contactd/store.h"
#include "contactd/tls.h"
#include "contactd/worker.h"
#include "email_internal.h"

#include <ctype.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <inttypes.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <openssl/ssl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

enum { L_LMTP, L_SMTP, L_COUNT };
static const char *const lname[L_COUNT] = {"lmtp", "smtp"};

#define DATA_CHUNK 65536 /* a DATA line longer than this is moved in pieces */

#define EMAIL_BATCH_MAX_BYTES (256 * 1024) /* larger mails are committed alone */
/* An attachment above EMAIL_STAGE_MIN_BYTES is staged before the ingest in chunks of
 * EMAIL_CHUNK_BYTES, each in its own transaction (cd_email_stage_chunk), so that no
 * transaction writes megabytes of WAL that every other commit would wait behind: a commit
 * waits at most for one chunk's flush (64 KB: a few ms on a slow disk). */
#define EMAIL_STAGE_MIN_BYTES (256 * 1024)
#define EMAIL_CHUNK_BYTES     (64 * 1024)
/* Chunks are staged at most this fast (bytes/s; a 25 MB mail's ~19 MB of attachment in
 * about 1.2 s): every commit flushes the WAL written before it, so an unpaced stage adds
 * its megabytes to the flushes chat's acks wait for. */
#define EMAIL_STAGE_BYTES_PER_S (16 * 1024 * 1024)
#define EMAIL_PRUNE_AGE_S	3600 /* staged chunks no mail links: removed after an hour */
#define EMAIL_PRUNE_EVERY_S	600
#define EMAIL_PRUNE_FIRST_MS	1000
#define EMAIL_PRUNE_BATCH	1000

#define RCPT_CACHE_SLOTS 256
#define RCPT_CACHE_TTL_S 5 /* an inbox deleted is still accepted at RCPT for this long */

struct econn;

/* One inbox address found by cd_email_rcpt (a direct-mapped cache slot). */
struct rcpt_slot {
	char addr[128];
	int64_t inbox;
	time_t expires; /* CLOCK_MONOTONIC seconds */
};

struct email {
	struct app *app;
	struct listener *l[L_COUNT];
	char *addr[L_COUNT];
	SSL_CTX *tls_ctx;	    /* STARTTLS; NULL when no certificate is configured */
	bool tls_required[L_COUNT]; /* tls.require_client_cert names the listener */
	size_t max_bytes;	    /* limits.max_email_bytes */
	struct econn *conns;	    /* open connections */
	unsigned in_flight;	    /* mails waiting on a worker or the store */
	unsigned long long next_id;
	char hostname[256];
	struct email_relay *relay; /* agent replies */
	struct rcpt_slot rcpt_cache[RCPT_CACHE_SLOTS];
	struct event *prune_timer; /* cd_email_chunks_prune */
	struct prune *pruning;	   /* the call in flight, if any */
};

/* One cd_email_chunks_prune call; EM is NULL once the listeners are freed before it ends. */
struct prune {
	struct email *em;
};

struct mail;

struct rcpt {
	char *addr;
	int64_t inbox;
	struct mail *m;
	json_t *payload; /* built on the worker: cd_email_ingest's item (small mails) */
	char *text;	 /* or already serialised there (large mails: kept off the loop) */
	int code;	 /* 0 while its store call runs */
	char reply[160];
	int64_t conversation;
	bool duplicate;
};

/* One connection. Freed once closed and nothing refers to it (pending). */
struct econn {
	struct email *em;
	struct econn *prev, *next;
	struct bufferevent *bev; /* NULL once closed */
	int kind;		 /* L_LMTP or L_SMTP */
	unsigned long long id;
	unsigned pending;
	bool tls, greeted, in_mail, in_data, data_bol, overflow, busy, closing, starttls;
	struct timespec data_t0; /* when DATA was answered 354 */
	int bad;
	char peer[64];
	char *mail_from;
	struct rcpt *rcpts;
	size_t nrcpt;
	struct evbuffer *data;
};

/* One piece of a large attachment, staged before the mail's ingest. */
struct chunk {
	char *data; /* malloc'd; handed to the store when sent */
	size_t len;
	char key[65]; /* its sha256 (hex), as the ingest item names it */
};

/* A mail after its DATA: parsed on a worker, its large attachments staged in chunks, then
 * stored per recipient. */
struct mail {
	struct econn *c;
	struct email *em;
	struct evbuffer *data; /* as received, until the parse is done (freed on the loop) */
	char *raw;
	size_t len, max_att;
	json_t *rec;
	char *mail_from;
	struct rcpt *rcpts;
	size_t nrcpt, waiting;
	struct timespec t0, stage_t0, store_t0; /* end of DATA, first chunk, ingest */
	double data_ms, parse_ms, stage_ms;
	struct chunk *chunks;
	size_t nchunks, next_chunk;
	size_t staged_bytes;
	struct event *pace; /* the next chunk, when staging is ahead of its rate */
};

struct lookup {
	struct econn *c;
	char *addr;
};

static void process(struct econn *c);

static double ms_since(const struct timespec *t0)
{
	struct timespec t1;
	clock_gettime(CLOCK_MONOTONIC, &t1);
	return (double)(t1.tv_sec - t0->tv_sec) * 1e3 + (double)(t1.tv_nsec - t0->tv_nsec) / 1e6;
}

/* ---- connection basics --------------------------------------------------------------------- */

static void reply(struct econn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void reply(struct econn *c, const char *fmt, ...)
{
	if (!c->bev)
		return;
	struct evbuffer *out = bufferevent_get_output(c->bev);
	va_list ap;
	va_start(ap, fmt);
	evbuffer_add_vprintf(out, fmt, ap);
	va_end(ap);
	evbuffer_add(out, "\r\n", 2);
}

static void txn_reset(struct econn *c)
{
	free(c->mail_from);
	c->mail_from = NULL;
	for (size_t i = 0; i < c->nrcpt; i++)
		free(c->rcpts[i].addr);
	free(c->rcpts);
	c->rcpts = NULL;
	c->nrcpt = 0;
	c->in_mail = c->in_data = c->overflow = false;
	if (c->data)
		evbuffer_drain(c->data, evbuffer_get_length(c->data));
}

static void conn_maybe_free(struct econn *c)
{
	if (c->bev || c->pending)
		return;
	txn_reset(c);
	if (c->data)
		evbuffer_free(c->data);
	free(c);
}

static void conn_close(struct econn *c, const char *reason)
{
	if (!c->bev)
		return;
	log_debug("email_conn_closed", "listener=%s conn=%llu reason=%s", lname[c->kind], c->id,
		  reason);
	bufferevent_free(c->bev);
	c->bev = NULL;
	listener_conn_closed();
	if (c->prev)
		c->prev->next = c->next;
	else
		c->em->conns = c->next;
	if (c->next)
		c->next->prev = c->prev;
	c->prev = c->next = NULL;
	conn_maybe_free(c);
}

/* Closes once what was written has gone out. */
static void close_after_flush(struct econn *c)
{
	if (!c->bev)
		return;
	c->closing = true;
	bufferevent_disable(c->bev, EV_READ);
	bufferevent_enable(c->bev, EV_WRITE); /* a timeout disabled it */
	if (evbuffer_get_length(bufferevent_get_output(c->bev)) == 0)
		conn_close(c, "closed");
}

static void on_read(struct bufferevent *bev, void *arg);
static void on_write(struct bufferevent *bev, void *arg);
static void on_event(struct bufferevent *bev, short what, void *arg);

static void set_callbacks(struct econn *c)
{
	struct timeval idle = {EMAIL_IDLE_TIMEOUT_S, 0};
	bufferevent_setcb(c->bev, on_read, on_write, on_event, c);
	bufferevent_set_timeouts(c->bev, &idle, &idle);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
}

/* After "220 Ready to start TLS" went out: the same socket continues as a TLS server. */
static void start_tls(struct econn *c)
{
	c->starttls = false;
	evutil_socket_t fd = bufferevent_getfd(c->bev);
	int nfd = fd >= 0 ? dup(fd) : -1;
	SSL *ssl = nfd >= 0 ? SSL_new(c->em->tls_ctx) : NULL;
	bufferevent_free(c->bev); /* closes FD, not NFD */
	c->bev = NULL;
	if (ssl)
		c->bev = bufferevent_openssl_socket_new(
		    c->em->app->base, nfd, ssl, BUFFEREVENT_SSL_ACCEPTING,
		    BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (!c->bev) {
		if (ssl)
			SSL_free(ssl);
		if (nfd >= 0)
			close(nfd);
		/* conn_close needs a bev: account for the connection by hand */
		listener_conn_closed();
		if (c->prev)
			c->prev->next = c->next;
		else
			c->em->conns = c->next;
		if (c->next)
			c->next->prev = c->prev;
		log_warn("email_starttls_failed", "listener=%s conn=%llu", lname[c->kind], c->id);
		conn_maybe_free(c);
		return;
	}
	bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
	c->tls = true;
	c->greeted = false; /* RFC 3207 §4.2: forget everything the client said before */
	c->bad = 0;
	txn_reset(c);
	set_callbacks(c);
	log_debug("email_starttls", "listener=%s conn=%llu", lname[c->kind], c->id);
}

static void on_write(struct bufferevent *bev, void *arg)
{
	struct econn *c = arg;
	if (evbuffer_get_length(bufferevent_get_output(bev)) != 0)
		return;
	if (c->closing)
		conn_close(c, "closed");
	else if (c->starttls)
		start_tls(c);
}

static void on_event(struct bufferevent *bev, short what, void *arg)
{
	struct econn *c = arg;
	if (what & BEV_EVENT_TIMEOUT) {
		reply(c, "421 4.4.2 %s idle for too long, closing", c->em->hostname);
		close_after_flush(c);
		/* the write timeout may be what fired: do not wait for a stuck peer */
		if (c->bev && (what & BEV_EVENT_WRITING))
			conn_close(c, "timeout");
		return;
	}
	if (what & BEV_EVENT_ERROR) {
		tls_log_errors("email_tls_error");
		conn_close(c, "error");
	} else if (what & BEV_EVENT_EOF) {
		conn_close(c, "eof");
	}
}

static void on_read(struct bufferevent *bev, void *arg)
{
	process(arg);
}

/* ---- per-mail work -------------------------------------------------------------------------- */

static void mail_free(struct mail *m)
{
	if (m->pace)
		event_free(m->pace);
	for (size_t i = 0; i < m->nrcpt; i++) {
		free(m->rcpts[i].addr);
		json_decref(m->rcpts[i].payload);
		free(m->rcpts[i].text);
	}
	free(m->rcpts);
	free(m->mail_from);
	free(m->raw);
	if (m->data)
		evbuffer_free(m->data);
	json_decref(m->rec);
	for (size_t i = 0; i < m->nchunks; i++)
		free(m->chunks[i].data);
	free(m->chunks);
	free(m);
}

static void mail_finish(struct mail *m)
{
	struct econn *c = m->c;
	struct email *em = m->em;
	int stored = 0, dups = 0, failed = 0;
	char convs[256] = "";
	size_t cl = 0;
	for (size_t i = 0; i < m->nrcpt; i++) {
		struct rcpt *r = &m->rcpts[i];
		if (r->code == 250) {
			r->duplicate ? dups++ : stored++;
			if (cl + 24 < sizeof(convs))
				cl += (size_t)snprintf(convs + cl, sizeof(convs) - cl, "%s%" PRId64,
						       cl ? "," : "", r->conversation);
		} else {
			failed++;
		}
	}
	if (c->bev) {
		if (c->kind == L_LMTP) {
			for (size_t i = 0; i < m->nrcpt; i++)
				reply(c, "%s", m->rcpts[i].reply);
		} else {
			/* one reply for all: a temporary failure of any recipient asks for a retry
			 * (recipients already stored are deduplicated then) */
			const struct rcpt *worst = &m->rcpts[0];
			for (size_t i = 0; i < m->nrcpt; i++) {
				const struct rcpt *r = &m->rcpts[i];
				if ((r->code / 100 == 4) ||
				    (r->code / 100 == 5 && worst->code / 100 != 4))
					worst = r;
			}
			reply(c, "%s", worst->reply);
		}
	}
	char qid[300], qfrom[300];
	const char *mid = json_string_value(json_object_get(m->rec, "message_id"));
	const char *from =
	    json_string_value(json_object_get(json_object_get(m->rec, "from"), "email"));
	log_info("email_received",
		 "listener=%s conn=%llu message_id=%s from=%s size=%zu recipients=%zu stored=%d "
		 "duplicate=%d failed=%d conversations=%s attachments=%zu chunks=%zu malformed=%s "
		 "data_ms=%.1f parse_ms=%.1f stage_ms=%.1f store_ms=%.1f",
		 lname[c->kind], c->id, log_quote(qid, sizeof(qid), mid ? mid : "-"),
		 log_quote(qfrom, sizeof(qfrom), from ? from : "-"), m->len, m->nrcpt, stored, dups,
		 failed, cl ? convs : "-", json_array_size(json_object_get(m->rec, "attachments")),
		 m->nchunks, json_is_true(json_object_get(m->rec, "malformed")) ? "true" : "false",
		 m->data_ms, m->parse_ms, m->stage_ms,
		 m->store_t0.tv_sec ? ms_since(&m->store_t0) : 0.0);
	em->in_flight--;
	mail_free(m);
	c->busy = false;
	c->pending--;
	if (c->bev)
		process(c);
	else
		conn_maybe_free(c);
}

/* What a committed mail changes: routing for a new conversation, the agent's desktop. */
static void after_commit(struct email *em, const json_t *res)
{
	struct app *app = em->app;
	if (json_is_true(json_object_get(res, "duplicate")))
		return;
	const json_t *route = json_object_get(res, "route");
	if (json_is_true(json_object_get(res, "opened")) && json_is_object(route)) {
		routing_conversation_opened(app->routing, route);
		sla_kick_route(app->sla, route); /* its SLA clocks, if it has a policy */
	}
	int64_t agent = json_integer_value(json_object_get(res, "agent"));
	if (agent > 0 && app->chat) {
		chat_notify_agent(app->chat, agent,
				  json_pack("{s:s, s:O, s:O, s:{s:s, s:O}}", "type", "message",
					    "conversation", json_object_get(res, "conversation"),
					    "message", json_object_get(res, "message"), "author",
					    "kind", "customer", "id",
					    json_object_get(res, "customer")));
		sla_kick(app->sla);
	}
}

static void rcpt_done(struct rcpt *r)
{
	struct mail *m = r->m;
	if (--m->waiting == 0)
		mail_finish(m);
}

/* One recipient's item of a group-committed cd_email_ingest_batch: {ok, result} or
 * {ok:false, sqlstate, message}. */
static void ingest_cb(void *arg, const struct store_reply *rep)
{
	struct rcpt *r = arg;
	json_t *item =
	    rep->status == STORE_OK && rep->value ? json_loads(rep->value, 0, NULL) : NULL;
	json_t *res = json_object_get(item, "result");
	const char *state = json_string_value(json_object_get(item, "sqlstate"));
	if (json_is_true(json_object_get(item, "ok")) && json_is_object(res)) {
		r->code = 250;
		r->conversation = json_integer_value(json_object_get(res, "conversation"));
		r->duplicate = json_is_true(json_object_get(res, "duplicate"));
		snprintf(r->reply, sizeof(r->reply), "250 2.0.0 <%s> %s as conversation %" PRId64,
			 r->addr, r->duplicate ? "already stored" : "stored", r->conversation);
		after_commit(r->m->em, res);
	} else if (rep->status == STORE_NOT_FOUND || (state && strcmp(state, "P0002") == 0)) {
		/* the inbox went away between RCPT and DATA */
		r->code = 550;
		snprintf(r->reply, sizeof(r->reply), "550 5.1.1 <%s> no such inbox", r->addr);
	} else {
		/* unavailable, a lock conflict, anything unexpected: nothing was committed for
		 * this recipient; the MTA retries */
		if (rep->status != STORE_UNAVAILABLE)
			log_error("email_store_failed", "rcpt=%s status=%d sqlstate=%s message=%s",
				  r->addr, (int)rep->status, state ? state : "-",
				  json_string_value(json_object_get(item, "message"))
				      ? json_string_value(json_object_get(item, "message"))
				  : rep->message ? rep->message
						 : "-");
		r->code = 451;
		snprintf(r->reply, sizeof(r->reply),
			 "451 4.3.0 <%s> temporarily unable to store the message; try again later",
			 r->addr);
	}
	json_decref(item);
	rcpt_done(r);
}

static void set_failed(struct rcpt *r, int code, const char *text)
{
	r->code = code;
	snprintf(r->reply, sizeof(r->reply), "%d %s", code, text);
}

/* On the worker: every attachment above EMAIL_STAGE_MIN_BYTES loses its base64 "data" for
 * "chunks" (the sha256 of each piece, in order); the pieces go to M->chunks, to be staged.
 * Returns the bytes moved out of the mail's JSON. */
static size_t split_attachments(struct mail *m)
{
	size_t moved = 0;
	json_t *atts = json_object_get(m->rec, "attachments");
	size_t i;
	json_t *a;
	json_array_foreach(atts, i, a)
	{
		const char *b64 = json_string_value(json_object_get(a, "data"));
		json_int_t size = json_integer_value(json_object_get(a, "size"));
		if (!b64 || size <= EMAIL_STAGE_MIN_BYTES)
			continue;
		size_t blen = strlen(b64);
		unsigned char *raw = malloc(blen / 4 * 3 + 3);
		if (!raw)
			abort();
		int n = EVP_DecodeBlock(raw, (const unsigned char *)b64, (int)blen);
		/* EVP_DecodeBlock counts the padding's zero bytes; the size is the truth */
		if (n < 0 || (size_t)n < (size_t)size || (size_t)n > (size_t)size + 2) {
			free(raw);
			continue; /* cannot happen for mime.c's base64: stays inline */
		}
		size_t len = (size_t)size, nc = (len + EMAIL_CHUNK_BYTES - 1) / EMAIL_CHUNK_BYTES;
		m->chunks = realloc(m->chunks, (m->nchunks + nc) * sizeof(*m->chunks));
		if (!m->chunks)
			abort();
		json_t *keys = json_array();
		for (size_t k = 0; k < nc; k++) {
			struct chunk *ch = &m->chunks[m->nchunks++];
			size_t off = k * EMAIL_CHUNK_BYTES;
			ch->len = len - off < EMAIL_CHUNK_BYTES ? len - off : EMAIL_CHUNK_BYTES;
			ch->data = malloc(ch->len);
			if (!ch->data)
				abort();
			memcpy(ch->data, raw + off, ch->len);
			unsigned char md[SHA256_DIGEST_LENGTH];
			SHA256(raw + off, ch->len, md);
			for (int j = 0; j < SHA256_DIGEST_LENGTH; j++)
				snprintf(ch->key + j * 2, 3, "%02x", md[j]);
			json_array_append_new(keys, json_string(ch->key));
		}
		free(raw);
		json_object_set_new(a, "chunks", keys);
		json_object_del(a, "data");
		moved += blen;
	}
	return moved;
}

/* On the worker: one cd_email_ingest item per recipient. A large mail's items are
 * serialised here too, so that the event loop never formats megabytes of JSON. */
static void build_payloads(struct mail *m)
{
	if (!m->rec)
		m->rec = json_object();
	/* no address in From: the envelope sender stands in */
	json_t *from = json_object_get(m->rec, "from");
	if (!json_is_object(from)) {
		from = json_object();
		json_object_set_new(m->rec, "from", from);
	}
	if (!json_string_value(json_object_get(from, "email")) && m->mail_from && *m->mail_from)
		json_object_set_new(from, "email", json_string(m->mail_from));
	json_object_set_new(m->rec, "size", json_integer((json_int_t)m->len));
	size_t moved = split_attachments(m);
	for (size_t i = 0; i < m->nrcpt; i++) {
		struct rcpt *r = &m->rcpts[i];
		json_t *p = json_copy(m->rec);
		json_object_set_new(p, "inbox", json_integer(r->inbox));
		json_object_set_new(p, "envelope",
				    json_pack("{s:s, s:s}", "mail_from",
					      m->mail_from ? m->mail_from : "", "rcpt", r->addr));
		if (m->len - (moved < m->len ? moved : m->len) <= EMAIL_BATCH_MAX_BYTES) {
			r->payload = p;
		} else {
			r->text = json_dumps(p, JSON_COMPACT);
			json_decref(p);
		}
	}
}

static void parse_work(void *arg)
{
	struct mail *m = arg;
	m->raw = malloc(m->len + 1);
	if (!m->raw)
		abort();
	/* copied, not drained: the buffer's chains were allocated on the loop's thread, and
	 * freeing them here would take the loop's malloc arena lock thousands of times from a
	 * nice +10 thread, which, preempted while holding it, would stall the loop (and every
	 * chat ack). parse_done frees the buffer on the loop. */
	evbuffer_copyout(m->data, m->raw, m->len);
	m->raw[m->len] = 0;
	m->rec = email_mime_parse(m->raw, m->len, m->max_att);
	build_payloads(m);
	m->parse_ms = ms_since(&m->t0);
}

/* Every recipient's ingest; the mail is finished when the last one answered. */
static void submit_ingest(struct mail *m)
{
	struct email *em = m->em;
	m->waiting = m->nrcpt;
	for (size_t i = 0; i < m->nrcpt; i++) {
		struct rcpt *r = &m->rcpts[i];
		/* small mails are group-committed; a large one goes alone (its JSON holds the
		 * attachments, and a batch of a hundred of those would be one huge query) */
		int rc = -1;
		if (r->payload) {
			rc = store_batch_add(em->app->store, STORE_Q_EMAIL_INGEST, r->payload,
					     ingest_cb, r);
			r->payload = NULL; /* stolen */
		} else if (r->text) {
			const char *params[1] = {r->text};
			rc = store_call(em->app->store, STORE_Q_EMAIL_INGEST_ONE, 1, params,
					ingest_cb, r);
			free(r->text);
			r->text = NULL;
		}
		if (rc < 0) {
			set_failed(r, 451,
				   "4.3.0 temporarily unable to store the message; try again "
				   "later");
			if (--m->waiting == 0) {
				mail_finish(m);
				return;
			}
		}
	}
}

static void fail_all(struct mail *m)
{
	for (size_t i = 0; i < m->nrcpt; i++)
		set_failed(&m->rcpts[i], 451,
			   "4.3.0 temporarily unable to store the message; try again later");
	mail_finish(m);
}

static void stage_next(struct mail *m);

static void pace_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	stage_next(arg);
}

/* A chunk staged (committed): the next, or the ingest after the last. */
static void stage_cb(void *arg, const struct store_reply *rep)
{
	struct mail *m = arg;
	const struct chunk *ch = &m->chunks[m->next_chunk];
	if (rep->status != STORE_OK || !rep->value || strcmp(rep->value, ch->key) != 0) {
		/* nothing of the mail is acknowledged; what was staged is pruned unless the
		 * MTA's retry links it */
		if (rep->status != STORE_UNAVAILABLE)
			log_error("email_stage_failed", "conn=%llu chunk=%zu status=%d message=%s",
				  m->c->id, m->next_chunk, (int)rep->status,
				  rep->message ? rep->message
				  : rep->value ? "sha256 differs"
					       : "-");
		fail_all(m);
		return;
	}
	m->staged_bytes += ch->len;
	m->next_chunk++;
	double ahead_ms =
	    (double)m->staged_bytes * 1e3 / EMAIL_STAGE_BYTES_PER_S - ms_since(&m->stage_t0);
	if (m->next_chunk < m->nchunks && ahead_ms >= 1.0) {
		if (!m->pace)
			m->pace = evtimer_new(m->em->app->base, pace_cb, m);
		long us = (long)(ahead_ms * 1e3);
		struct timeval tv = {us / 1000000, us % 1000000};
		if (m->pace && evtimer_add(m->pace, &tv) == 0)
			return;
	}
	stage_next(m);
}

/* One chunk at a time, each its own short transaction: commits of other work (chat) are
 * never queued behind more than one chunk's WAL. */
static void stage_next(struct mail *m)
{
	if (m->next_chunk == m->nchunks) {
		if (m->nchunks)
			m->stage_ms = ms_since(&m->stage_t0);
		clock_gettime(CLOCK_MONOTONIC, &m->store_t0);
		submit_ingest(m);
		return;
	}
	if (m->next_chunk == 0)
		clock_gettime(CLOCK_MONOTONIC, &m->stage_t0);
	struct chunk *ch = &m->chunks[m->next_chunk];
	if (store_call_bytes(m->em->app->store, STORE_Q_EMAIL_STAGE_CHUNK, ch->data, ch->len,
			     stage_cb, m) < 0) {
		fail_all(m);
		return;
	}
	ch->data = NULL; /* the store's now */
}

static void parse_done(void *arg)
{
	struct mail *m = arg;
	free(m->raw);
	m->raw = NULL;
	evbuffer_free(m->data);
	m->data = NULL;
	stage_next(m);
}

/* ---- staged chunks nobody linked ------------------------------------------------------------ */

static void prune_cb(void *arg, const struct store_reply *rep)
{
	struct prune *pr = arg;
	struct email *em = pr->em;
	free(pr);
	if (!em)
		return;
	em->pruning = NULL;
	json_t *res =
	    rep->status == STORE_OK && rep->value ? json_loads(rep->value, 0, NULL) : NULL;
	json_int_t n = json_integer_value(json_object_get(res, "deleted"));
	json_decref(res);
	if (!res && rep->status != STORE_UNAVAILABLE)
		log_warn("email_chunks_prune_failed", "status=%d retry_in_s=%d", (int)rep->status,
			 EMAIL_PRUNE_EVERY_S);
	if (n > 0)
		log_info("email_chunks_pruned", "deleted=%lld", (long long)n);
	struct timeval tv = {n >= EMAIL_PRUNE_BATCH ? 1 : EMAIL_PRUNE_EVERY_S, 0};
	evtimer_add(em->prune_timer, &tv);
}

static void prune_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct email *em = arg;
	if (em->pruning)
		return;
	char age[16], batch[16];
	snprintf(age, sizeof(age), "%d", EMAIL_PRUNE_AGE_S);
	snprintf(batch, sizeof(batch), "%d", EMAIL_PRUNE_BATCH);
	const char *params[2] = {age, batch};
	struct prune *pr = calloc(1, sizeof(*pr));
	if (!pr)
		abort();
	pr->em = em;
	if (store_call(em->app->store, STORE_Q_EMAIL_CHUNKS_PRUNE, 2, params, prune_cb, pr) == 0) {
		em->pruning = pr;
	} else {
		free(pr);
		struct timeval tv = {10, 0}; /* the store is down: soon again */
		evtimer_add(em->prune_timer, &tv);
	}
}

/* The end of DATA: hand the mail to a worker (or answer at once). */
static void end_of_data(struct econn *c)
{
	struct email *em = c->em;
	c->in_data = false;
	if (c->overflow) {
		for (size_t i = 0; i < (c->kind == L_LMTP ? c->nrcpt : 1); i++)
			reply(
			    c,
			    "552 5.3.4 message size exceeds fixed maximum message size (%zu bytes)",
			    em->max_bytes);
		log_info("email_rejected", "listener=%s conn=%llu reason=too_large max_bytes=%zu",
			 lname[c->kind], c->id, em->max_bytes);
		txn_reset(c);
		return;
	}
	struct mail *m = calloc(1, sizeof(*m));
	if (!m)
		abort();
	m->c = c;
	m->em = em;
	m->max_att = em->max_bytes;
	/* the received bytes move to the mail as they are; copying them out (25 MB at most) is
	 * the worker's job */
	m->len = evbuffer_get_length(c->data);
	m->data = c->data;
	c->data = evbuffer_new();
	if (!c->data)
		abort();
	m->mail_from = c->mail_from;
	m->rcpts = c->rcpts;
	m->nrcpt = c->nrcpt;
	c->mail_from = NULL;
	c->rcpts = NULL;
	c->nrcpt = 0;
	txn_reset(c);
	for (size_t i = 0; i < m->nrcpt; i++)
		m->rcpts[i].m = m;
	clock_gettime(CLOCK_MONOTONIC, &m->t0);
	m->data_ms = ms_since(&c->data_t0);
	c->busy = true;
	c->pending++;
	em->in_flight++;
	if (!store_available(em->app->store) ||
	    worker_submit(em->app->workers, parse_work, parse_done, m) < 0) {
		for (size_t i = 0; i < m->nrcpt; i++)
			set_failed(
			    &m->rcpts[i], 451,
			    "4.3.0 temporarily unable to store the message; try again later");
		m->rec = json_object();
		mail_finish(m);
	}
}

/* ---- commands -------------------------------------------------------------------------------- */

static void bad_command(struct econn *c)
{
	if (++c->bad > EMAIL_MAX_BAD_COMMANDS) {
		reply(c, "421 4.7.0 %s too many errors, closing", c->em->hostname);
		close_after_flush(c);
	}
}

/* "<addr>" (or a bare address) at *P; returns a malloc'd copy without <> and moves *P past
 * it, or NULL when malformed. */
static char *parse_path(const char **p)
{
	const char *s = *p;
	while (*s == ' ')
		s++;
	const char *e;
	char *out;
	if (*s == '<') {
		e = strchr(s, '>');
		if (!e)
			return NULL;
		out = strndup(s + 1, (size_t)(e - s - 1));
		e++;
	} else {
		e = s;
		while (*e && *e != ' ')
			e++;
		out = strndup(s, (size_t)(e - s));
	}
	if (!out)
		abort();
	/* a source route (<@a,@b:user@c>) is ignored (RFC 5321 §4.1.2) */
	char *colon = out[0] == '@' ? strchr(out, ':') : NULL;
	if (colon)
		memmove(out, colon + 1, strlen(colon + 1) + 1);
	for (const char *q = out; *q; q++)
		if ((unsigned char)*q < 0x20 || *q == '<' || *q == '>') {
			free(out);
			return NULL;
		}
	*p = e;
	return out;
}

static void cmd_hello(struct econn *c, const char *verb, const char *arg)
{
	bool lhlo = strcasecmp(verb, "LHLO") == 0;
	if ((c->kind == L_LMTP) != lhlo) {
		reply(c, "500 5.5.1 %s", c->kind == L_LMTP ? "this is LMTP: use LHLO" : "use EHLO");
		bad_command(c);
		return;
	}
	if (!*arg) {
		reply(c, "501 5.5.4 %s needs a domain", verb);
		bad_command(c);
		return;
	}
	txn_reset(c);
	c->greeted = true;
	if (strcasecmp(verb, "HELO") == 0) {
		reply(c, "250 %s", c->em->hostname);
		return;
	}
	reply(c, "250-%s", c->em->hostname);
	reply(c, "250-PIPELINING");
	reply(c, "250-SIZE %zu", c->em->max_bytes);
	reply(c, "250-8BITMIME");
	if (c->em->tls_ctx && !c->tls)
		reply(c, "250-STARTTLS");
	reply(c, "250 ENHANCEDSTATUSCODES");
}

static void cmd_mail(struct econn *c, const char *arg)
{
	if (!c->greeted) {
		reply(c, "503 5.5.1 say %s first", c->kind == L_LMTP ? "LHLO" : "EHLO");
		bad_command(c);
		return;
	}
	if (c->in_mail) {
		reply(c, "503 5.5.1 nested MAIL command");
		bad_command(c);
		return;
	}
	if (c->em->tls_required[c->kind] && !c->tls) {
		reply(c, "530 5.7.0 must issue a STARTTLS command first");
		return;
	}
	if (strncasecmp(arg, "FROM:", 5) != 0) {
		reply(c, "501 5.5.4 syntax: MAIL FROM:<address>");
		bad_command(c);
		return;
	}
	const char *p = arg + 5;
	char *from = parse_path(&p);
	if (!from) {
		reply(c, "501 5.1.7 bad sender address syntax");
		bad_command(c);
		return;
	}
	/* parameters */
	char *params = strdup(p);
	if (!params)
		abort();
	char *save = NULL;
	for (char *t = strtok_r(params, " ", &save); t; t = strtok_r(NULL, " ", &save)) {
		if (strncasecmp(t, "SIZE=", 5) == 0) {
			char *end;
			errno = 0;
			unsigned long long n = strtoull(t + 5, &end, 10);
			if (*end || errno) {
				reply(c, "501 5.5.4 bad SIZE value");
				goto fail;
			}
			if (n > c->em->max_bytes) {
				reply(c,
				      "552 5.3.4 message size exceeds fixed maximum message size "
				      "(%zu bytes)",
				      c->em->max_bytes);
				goto fail;
			}
		} else if (strncasecmp(t, "BODY=", 5) == 0) {
			if (strcasecmp(t + 5, "7BIT") != 0 && strcasecmp(t + 5, "8BITMIME") != 0) {
				reply(c, "501 5.5.4 BODY must be 7BIT or 8BITMIME");
				goto fail;
			}
		} else {
			reply(c, "555 5.5.4 unsupported parameter %.40s", t);
			goto fail;
		}
	}
	free(params);
	free(c->mail_from);
	c->mail_from = from;
	c->in_mail = true;
	reply(c, "250 2.1.0 sender ok");
	return;
fail:
	free(params);
	free(from);
	bad_command(c);
}

/* ---- recipient cache: inboxes found in the last RCPT_CACHE_TTL_S seconds ------------------ */

static uint32_t rcpt_hash(const char *addr)
{
	uint32_t h = 2166136261u; /* FNV-1a over the lower-cased address */
	for (const unsigned char *p = (const unsigned char *)addr; *p; p++)
		h = (h ^ (uint32_t)tolower(*p)) * 16777619u;
	return h;
}

static time_t mono_now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec;
}

/* The inbox ADDR named within the TTL, or 0 (unknown addresses are never cached). */
static int64_t rcpt_cache_get(const struct email *em, const char *addr)
{
	const struct rcpt_slot *e = &em->rcpt_cache[rcpt_hash(addr) % RCPT_CACHE_SLOTS];
	if (e->inbox > 0 && e->expires > mono_now() && strcasecmp(e->addr, addr) == 0)
		return e->inbox;
	return 0;
}

static void rcpt_cache_put(struct email *em, const char *addr, int64_t inbox)
{
	if (strlen(addr) >= sizeof(em->rcpt_cache[0].addr))
		return;
	struct rcpt_slot *e = &em->rcpt_cache[rcpt_hash(addr) % RCPT_CACHE_SLOTS];
	snprintf(e->addr, sizeof(e->addr), "%s", addr);
	e->inbox = inbox;
	e->expires = mono_now() + RCPT_CACHE_TTL_S;
}

/* Accepts recipient ADDR (taken) of inbox INBOX into C's transaction. */
static void rcpt_accept(struct econn *c, char *addr, int64_t inbox)
{
	struct rcpt *n = realloc(c->rcpts, (c->nrcpt + 1) * sizeof(*n));
	if (!n)
		abort();
	c->rcpts = n;
	memset(&n[c->nrcpt], 0, sizeof(*n));
	n[c->nrcpt].addr = addr;
	n[c->nrcpt].inbox = inbox;
	c->nrcpt++;
	reply(c, "250 2.1.5 recipient ok");
}

static void lookup_cb(void *arg, const struct store_reply *rep)
{
	struct lookup *lk = arg;
	struct econn *c = lk->c;
	c->pending--;
	c->busy = false;
	if (!c->bev) {
		free(lk->addr);
		free(lk);
		conn_maybe_free(c);
		return;
	}
	json_t *res =
	    rep->status == STORE_OK && rep->value ? json_loads(rep->value, 0, NULL) : NULL;
	int64_t inbox = json_integer_value(json_object_get(res, "inbox"));
	if (inbox > 0) {
		rcpt_cache_put(c->em, lk->addr, inbox);
		rcpt_accept(c, lk->addr, inbox);
		lk->addr = NULL;
	} else if (rep->status == STORE_OK) {
		reply(c, "550 5.1.1 <%s>: no such inbox here", lk->addr);
	} else {
		reply(c, "451 4.3.0 temporarily unable to look the recipient up; try again later");
	}
	json_decref(res);
	free(lk->addr);
	free(lk);
	process(c);
}

static void cmd_rcpt(struct econn *c, const char *arg)
{
	if (!c->in_mail) {
		reply(c, "503 5.5.1 need MAIL before RCPT");
		bad_command(c);
		return;
	}
	if (strncasecmp(arg, "TO:", 3) != 0) {
		reply(c, "501 5.5.4 syntax: RCPT TO:<address>");
		bad_command(c);
		return;
	}
	const char *p = arg + 3;
	char *to = parse_path(&p);
	if (!to || !*to || strlen(to) > 320) {
		free(to);
		reply(c, "501 5.1.3 bad recipient address syntax");
		bad_command(c);
		return;
	}
	while (*p == ' ')
		p++;
	if (*p) {
		free(to);
		reply(c, "555 5.5.4 RCPT parameters are not supported");
		bad_command(c);
		return;
	}
	if (c->nrcpt >= EMAIL_MAX_RECIPIENTS) {
		free(to);
		reply(c, "452 4.5.3 too many recipients");
		return;
	}
	/* the cache saves a round trip; while the store is down the mail could not be stored
	 * anyway, so the answer is 451 at once */
	int64_t cached = store_available(c->em->app->store) ? rcpt_cache_get(c->em, to) : 0;
	if (cached > 0) {
		rcpt_accept(c, to, cached);
		return;
	}
	struct lookup *lk = calloc(1, sizeof(*lk));
	if (!lk)
		abort();
	lk->c = c;
	lk->addr = to;
	const char *params[1] = {to};
	if (store_call(c->em->app->store, STORE_Q_EMAIL_RCPT, 1, params, lookup_cb, lk) < 0) {
		reply(c, "451 4.3.0 temporarily unable to look the recipient up; try again later");
		free(to);
		free(lk);
		return;
	}
	c->busy = true;
	c->pending++;
}

static void cmd_data(struct econn *c, const char *arg)
{
	if (*arg) {
		reply(c, "501 5.5.4 DATA takes no arguments");
		bad_command(c);
		return;
	}
	if (!c->in_mail || c->nrcpt == 0) {
		reply(c, "503 5.5.1 %s", c->in_mail ? "no valid recipients" : "need MAIL command");
		bad_command(c);
		return;
	}
	c->in_data = true;
	clock_gettime(CLOCK_MONOTONIC, &c->data_t0);
	c->data_bol = true;
	c->overflow = false;
	reply(c, "354 2.0.0 start mail input; end with <CRLF>.<CRLF>");
}

static void cmd_starttls(struct econn *c, const char *arg)
{
	if (*arg) {
		reply(c, "501 5.5.4 STARTTLS takes no arguments");
		bad_command(c);
		return;
	}
	if (!c->em->tls_ctx || c->tls) {
		reply(c, "%s",
		      c->tls ? "503 5.5.1 TLS already active" : "454 4.7.0 TLS not available");
		return;
	}
	reply(c, "220 2.0.0 ready to start TLS");
	/* what the client pipelined after STARTTLS is discarded (RFC 3207 §5) */
	struct evbuffer *in = bufferevent_get_input(c->bev);
	evbuffer_drain(in, evbuffer_get_length(in));
	bufferevent_disable(c->bev, EV_READ);
	c->starttls = true;
}

static void command(struct econn *c, char *line)
{
	size_t n = strlen(line);
	while (n && (line[n - 1] == ' ' || line[n - 1] == '\t' || line[n - 1] == '\r'))
		line[--n] = 0;
	char *arg = line;
	while (*arg && *arg != ' ')
		arg++;
	if (*arg)
		*arg++ = 0;
	while (*arg == ' ')
		arg++;
	const char *verb = line;
	if (!strcasecmp(verb, "LHLO") || !strcasecmp(verb, "EHLO") || !strcasecmp(verb, "HELO"))
		cmd_hello(c, verb, arg);
	else if (!strcasecmp(verb, "MAIL"))
		cmd_mail(c, arg);
	else if (!strcasecmp(verb, "RCPT"))
		cmd_rcpt(c, arg);
	else if (!strcasecmp(verb, "DATA"))
		cmd_data(c, arg);
	else if (!strcasecmp(verb, "RSET")) {
		txn_reset(c);
		reply(c, "250 2.0.0 ok");
	} else if (!strcasecmp(verb, "NOOP"))
		reply(c, "250 2.0.0 ok");
	else if (!strcasecmp(verb, "QUIT")) {
		reply(c, "221 2.0.0 %s closing connection", c->em->hostname);
		close_after_flush(c);
	} else if (!strcasecmp(verb, "STARTTLS"))
		cmd_starttls(c, arg);
	else if (!strcasecmp(verb, "VRFY"))
		reply(c, "252 2.5.2 cannot VRFY; send the mail and it will be tried");
	else if (!strcasecmp(verb, "HELP"))
		reply(c, "214 2.0.0 see RFC 2033 / RFC 5321");
	else {
		reply(c, "500 5.5.2 command not recognized");
		bad_command(c);
	}
}

/* ---- input ----------------------------------------------------------------------------------- */

static void data_take(struct econn *c, struct evbuffer *in, size_t n)
{
	if (c->overflow || evbuffer_get_length(c->data) + n > c->em->max_bytes) {
		c->overflow = true; /* keep reading, keep nothing */
		evbuffer_drain(in, n);
		return;
	}
	evbuffer_remove_buffer(in, c->data, n);
}

/* One step of DATA; false when more input is needed. A line that starts with a dot is taken
 * alone (dot-unstuffing, the end); everything up to the next such line is moved in one
 * piece, so that a 25 MB mail is not a third of a million steps on the event loop. */
static bool data_step(struct econn *c, struct evbuffer *in)
{
	size_t avail = evbuffer_get_length(in);
	char first[2] = {0, 0};
	if (avail == 0)
		return false;
	evbuffer_copyout(in, first, 2);
	if (!c->data_bol || first[0] != '.') {
		/* up to and including the line end before the next line starting with a dot
		 * (LF or CRLF, like evbuffer_search_eol below), else everything: when it ends
		 * with an LF, data_bol makes the next step look at a dot after it. Whole chains
		 * move without a copy. */
		struct evbuffer_ptr d = evbuffer_search(in, "\n.", 2, NULL);
		size_t n = d.pos >= 0 ? (size_t)d.pos + 1 : avail;
		char last = 0;
		struct evbuffer_ptr lp;
		if (evbuffer_ptr_set(in, &lp, n - 1, EVBUFFER_PTR_SET) == 0)
			evbuffer_copyout_from(in, &lp, &last, 1);
		data_take(c, in, n);
		c->data_bol = last == '\n';
		return true;
	}
	size_t eol_len = 0;
	struct evbuffer_ptr p = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_CRLF);
	if (p.pos < 0) {
		if (avail < DATA_CHUNK)
			return false;
		evbuffer_drain(in, 1); /* dot-unstuffing */
		data_take(c, in, DATA_CHUNK - 1);
		c->data_bol = false;
		return true;
	}
	size_t total = (size_t)p.pos + eol_len;
	if (p.pos == 1) {
		evbuffer_drain(in, total);
		end_of_data(c);
		return true;
	}
	evbuffer_drain(in, 1); /* dot-unstuffing */
	data_take(c, in, total - 1);
	c->data_bol = true;
	return true;
}

static void process(struct econn *c)
{
	/* draining: a session between mails is told and closed (RFC 5321 4.3.2: 421); a mail
	 * being received or stored is finished first */
	if (c->bev && c->em->app->draining && !c->busy && !c->in_data && !c->closing &&
	    !c->starttls) {
		reply(c, "421 4.3.2 %s shutting down", c->em->hostname);
		close_after_flush(c);
		return;
	}
	while (c->bev && !c->busy && !c->closing && !c->starttls) {
		struct evbuffer *in = bufferevent_get_input(c->bev);
		if (c->in_data) {
			if (!data_step(c, in))
				break;
			continue;
		}
		size_t eol_len = 0;
		struct evbuffer_ptr p = evbuffer_search_eol(in, NULL, &eol_len, EVBUFFER_EOL_CRLF);
		if (p.pos < 0) {
			if (evbuffer_get_length(in) > EMAIL_MAX_LINE) {
				reply(c, "500 5.5.2 line too long");
				close_after_flush(c);
			}
			break;
		}
		if ((size_t)p.pos > EMAIL_MAX_LINE) {
			evbuffer_drain(in, (size_t)p.pos + eol_len);
			reply(c, "500 5.5.2 line too long");
			bad_command(c);
			continue;
		}
		char *line = malloc((size_t)p.pos + 1);
		if (!line)
			abort();
		evbuffer_remove(in, line, (size_t)p.pos);
		line[p.pos] = 0;
		evbuffer_drain(in, eol_len);
		if (memchr(line, 0, (size_t)p.pos)) {
			reply(c, "500 5.5.2 NUL in command");
			bad_command(c);
		} else {
			command(c, line);
		}
		free(line);
	}
	if (!c->bev)
		return;
	if (c->busy || c->closing || c->starttls)
		bufferevent_disable(c->bev, EV_READ);
	else
		bufferevent_enable(c->bev, EV_READ);
}

/* ---- accept ---------------------------------------------------------------------------------- */

static void accept_any(struct email *em, int kind, struct bufferevent *bev, const char *peer)
{
	struct econn *c = calloc(1, sizeof(*c));
	if (!c)
		abort();
	c->em = em;
	c->kind = kind;
	c->bev = bev;
	c->id = ++em->next_id;
	c->data = evbuffer_new();
	snprintf(c->peer, sizeof(c->peer), "%s", peer);
	c->next = em->conns;
	if (em->conns)
		em->conns->prev = c;
	em->conns = c;
	set_callbacks(c);
	log_debug("email_conn", "listener=%s conn=%llu peer=%s", lname[kind], c->id, c->peer);
	if (em->app->draining) {
		reply(c, "421 4.3.2 %s shutting down", em->hostname);
		close_after_flush(c);
		return;
	}
	reply(c, "220 %s %s contactd ready", em->hostname, kind == L_LMTP ? "LMTP" : "ESMTP");
}

static void on_accept_lmtp(struct bufferevent *bev, const char *peer, void *arg)
{
	accept_any(arg, L_LMTP, bev, peer);
}

static void on_accept_smtp(struct bufferevent *bev, const char *peer, void *arg)
{
	accept_any(arg, L_SMTP, bev, peer);
}

static listener_accept_cb accept_cb[L_COUNT] = {on_accept_lmtp, on_accept_smtp};

/* ---- life ------------------------------------------------------------------------------------ */

static const char *cfg_addr(const struct config *cfg, int i)
{
	return i == L_SMTP ? cfg->listen_smtp : cfg->listen_lmtp;
}

/* STARTTLS needs a certificate and key; without them it is not offered. */
static SSL_CTX *make_tls(const struct config *cfg, char **error_r)
{
	if (!cfg->tls_cert_file || !*cfg->tls_cert_file || !cfg->tls_key_file ||
	    !*cfg->tls_key_file)
		return NULL;
	bool require = false;
	for (int i = 0; i < L_COUNT; i++)
		if (*cfg_addr(cfg, i) && config_requires_client_cert(cfg, lname[i]))
			require = true;
	return tls_server_ctx_new(cfg, require, error_r);
}

static bool wants_tls(const struct config *cfg)
{
	return (*cfg->listen_lmtp || *cfg->listen_smtp) && cfg->tls_cert_file &&
	       *cfg->tls_cert_file && cfg->tls_key_file && *cfg->tls_key_file;
}

struct email *email_new(struct app *app, char **error_r)
{
	email_mime_init();
	struct email *em = calloc(1, sizeof(*em));
	if (!em)
		abort();
	em->app = app;
	const struct config *cfg = app->cfg;
	em->max_bytes = (size_t)cfg->max_email_bytes;
	if (gethostname(em->hostname, sizeof(em->hostname) - 1) < 0 || !*em->hostname)
		snprintf(em->hostname, sizeof(em->hostname), "localhost");
	em->relay = email_relay_new(app, em->hostname);
	em->prune_timer = evtimer_new(app->base, prune_timer_cb, em);
	if (!em->prune_timer)
		abort();
	struct timeval first = {0, EMAIL_PRUNE_FIRST_MS * 1000};
	evtimer_add(em->prune_timer, &first);
	if (wants_tls(cfg)) {
		em->tls_ctx = make_tls(cfg, error_r);
		if (!em->tls_ctx)
			goto fail;
	}
	for (int i = 0; i < L_COUNT; i++) {
		const char *addr = cfg_addr(cfg, i);
		em->addr[i] = strdup(addr);
		em->tls_required[i] = config_requires_client_cert(cfg, lname[i]);
		if (!*addr)
			continue;
		em->l[i] = listener_new(app->base, lname[i], addr, NULL, accept_cb[i], em, error_r);
		if (!em->l[i])
			goto fail;
	}
	return em;
fail:
	email_free(&em);
	return NULL;
}

void email_free(struct email **pem)
{
	struct email *em = *pem;
	if (!em)
		return;
	*pem = NULL;
	while (em->conns) {
		struct econn *c = em->conns;
		/* anything still waiting on it (none after a drain) keeps C alive */
		conn_close(c, "shutdown");
	}
	for (int i = 0; i < L_COUNT; i++) {
		listener_free(&em->l[i]);
		free(em->addr[i]);
	}
	if (em->tls_ctx)
		SSL_CTX_free(em->tls_ctx);
	email_relay_free(&em->relay);
	if (em->prune_timer)
		event_free(em->prune_timer);
	if (em->pruning)
		em->pruning->em = NULL; /* its callback only frees it */
	free(em);
}

struct email_reload {
	const struct config *cfg;
	SSL_CTX *ctx;
	bool rebind[L_COUNT];
	struct listener *nl[L_COUNT];
};

struct email_reload *email_reload_prepare(struct email *em, const struct config *cfg,
					  char **error_r)
{
	struct email_reload *rl = calloc(1, sizeof(*rl));
	if (!rl)
		abort();
	rl->cfg = cfg;
	if (wants_tls(cfg)) {
		rl->ctx = make_tls(cfg, error_r);
		if (!rl->ctx) {
			free(rl);
			return NULL;
		}
	}
	for (int i = 0; i < L_COUNT; i++) {
		const char *addr = cfg_addr(cfg, i);
		rl->rebind[i] = strcmp(addr, em->addr[i]) != 0;
		if (!rl->rebind[i] || !*addr)
			continue;
		rl->nl[i] =
		    listener_new(em->app->base, lname[i], addr, NULL, accept_cb[i], em, error_r);
		if (!rl->nl[i]) {
			email_reload_abort(em, rl);
			return NULL;
		}
	}
	return rl;
}

void email_reload_abort(struct email *em, struct email_reload *rl)
{
	for (int i = 0; i < L_COUNT; i++)
		listener_free(&rl->nl[i]);
	if (rl->ctx)
		SSL_CTX_free(rl->ctx);
	free(rl);
}

void email_reload_commit(struct email *em, struct email_reload *rl)
{
	const struct config *cfg = rl->cfg;
	for (int i = 0; i < L_COUNT; i++) {
		em->tls_required[i] = config_requires_client_cert(cfg, lname[i]);
		if (!rl->rebind[i])
			continue;
		listener_free(&em->l[i]);
		em->l[i] = rl->nl[i];
		log_info("listener_moved", "listener=%s from=%s to=%s", lname[i],
			 *em->addr[i] ? em->addr[i] : "off",
			 *cfg_addr(cfg, i) ? cfg_addr(cfg, i) : "off");
		free(em->addr[i]);
		em->addr[i] = strdup(cfg_addr(cfg, i));
	}
	/* connections that already upgraded keep their SSL objects (they hold references) */
	if (em->tls_ctx)
		SSL_CTX_free(em->tls_ctx);
	em->tls_ctx = rl->ctx;
	em->max_bytes = (size_t)cfg->max_email_bytes;
	free(rl);
}

void email_stop_accepting(struct email *em)
{
	for (int i = 0; em && i < L_COUNT; i++)
		if (em->l[i])
			listener_disable(em->l[i]);
	/* idle sessions get their 421 now, the others when their mail is done (process) */
	for (struct econn *c = em ? em->conns : NULL, *next; c; c = next) {
		next = c->next;
		process(c);
	}
}

unsigned email_in_flight(const struct email *em)
{
	if (!em)
		return 0;
	unsigned n = em->in_flight;
	for (const struct econn *c = em->conns; c; c = c->next)
		n += c->in_data || c->closing; /* a mail being received is finished, and a
						* last reply (421) flushed */
	return n;
}
