/* Unit tests for the NDJSON connection engine (ndjson) and the TCP/TLS listener (listener):
 * real sockets (socketpair, loopback TCP) and a real event_base, bytes written by the test
 * as a misbehaving peer would. */
#include "contactd/config.h"
#include "contactd/listener.h"
#include "contactd/log.h"
#include "contactd/ndjson.h"
#include "contactd/tls.h"

#include <arpa/inet.h>
#include <check.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/event.h>
#include <fcntl.h>
#include <jansson.h>
#include <netinet/in.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

/* ---- harness ------------------------------------------------------------------------------ */

/* One server-side conn and the test's end of its socket. */
struct rec {
	struct ndjson_conn *conn; /* NULL once on_close ran */
	int fd;			  /* the peer's socket (test side), -1 when none */
	char *in;		  /* bytes the peer received */
	size_t in_len, in_cap;
	bool eof;	/* the peer saw EOF (or a reset) */
	json_t *frames; /* [{frame, ref, order}] in on_frame order */
	int closes;	/* on_close calls */
	char reason[200];
	bool auto_ready; /* "hello" -> set_ready + ok */
	size_t pad;	 /* "big" -> ok with this many bytes of padding */
	bool counted;	 /* accepted by a listener: report the close */
};

#define MAX_RECS 8
static struct rec recs[MAX_RECS];
static int n_recs;
static struct event_base *base;
static int order; /* on_frame calls over every conn */
static struct listener *lsts[2];

static struct rec *rec_new(void)
{
	ck_assert_int_lt(n_recs, MAX_RECS);
	struct rec *r = &recs[n_recs++];
	memset(r, 0, sizeof(*r));
	r->fd = -1;
	r->frames = json_array();
	r->auto_ready = true;
	return r;
}

static void on_frame(struct ndjson_conn *conn, json_t *frame, const json_t *ref, void *ctx)
{
	struct rec *r = ctx;
	ck_assert_ptr_eq(r->conn, conn);
	json_t *e = json_object();
	json_object_set_new(e, "frame", json_deep_copy(frame));
	json_object_set_new(e, "ref", ref ? json_deep_copy(ref) : json_null());
	json_object_set_new(e, "order", json_integer(++order));
	json_array_append_new(r->frames, e);

	const char *type = json_string_value(json_object_get(frame, "type"));
	if (strcmp(type, "hello") == 0 && r->auto_ready) {
		ndjson_conn_set_ready(conn);
		ndjson_reply_ok(conn, ref, json_pack("{s:b}", "hello", 1));
	} else if (strcmp(type, "ping") == 0) {
		ndjson_reply_ok(conn, ref, NULL);
	} else if (strcmp(type, "big") == 0) {
		char *pad = malloc(r->pad + 1);
		memset(pad, 'x', r->pad);
		pad[r->pad] = '\0';
		ndjson_reply_ok(conn, ref, json_pack("{s:s}", "pad", pad));
		free(pad);
	} else if (strcmp(type, "quit") == 0) {
		ndjson_reply_ok(conn, ref, NULL);
		ndjson_conn_close(conn, "quit");
		ndjson_conn_close(conn, "quit again"); /* no-op */
		ck_assert(ndjson_conn_is_closing(conn));
		ck_assert_int_eq(ndjson_send(conn, json_pack("{s:s}", "type", "late")), -1);
	}
}

static void on_close(struct ndjson_conn *conn, const char *reason, void *ctx)
{
	struct rec *r = ctx;
	ck_assert_ptr_eq(r->conn, conn);
	r->closes++;
	snprintf(r->reason, sizeof(r->reason), "%s", reason);
	r->conn = NULL;
	if (r->counted)
		listener_conn_closed();
}

static const struct ndjson_handlers handlers = {on_frame, on_close};

static void set_nonblock(int fd)
{
	ck_assert_int_ge(fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK), 0);
}

/* A conn over a socketpair; LIM may be NULL. SNDBUF > 0 shrinks the server's send buffer
 * and the peer's receive buffer so that output piles up in the conn. */
static struct rec *pair_new(const struct ndjson_limits *lim, int sndbuf)
{
	struct rec *r = rec_new();
	int sv[2];
	ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
	if (sndbuf > 0) {
		ck_assert_int_eq(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &sndbuf, sizeof(sndbuf)),
				 0);
		ck_assert_int_eq(setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &sndbuf, sizeof(sndbuf)),
				 0);
	}
	set_nonblock(sv[0]);
	set_nonblock(sv[1]);
	struct bufferevent *bev =
	    bufferevent_socket_new(base, sv[0], BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	ck_assert_ptr_nonnull(bev);
	r->conn = ndjson_conn_new(bev, lim, &handlers, r, "test", "pair");
	ck_assert_ptr_nonnull(r->conn);
	r->fd = sv[1];
	return r;
}

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* Reads what the peer side can read now. */
static void peer_read(struct rec *r)
{
	if (r->fd < 0 || r->eof)
		return;
	for (;;) {
		if (r->in_cap - r->in_len < 4096) {
			r->in_cap = r->in_cap ? 2 * r->in_cap : 65536;
			r->in = realloc(r->in, r->in_cap);
		}
		ssize_t n = recv(r->fd, r->in + r->in_len, r->in_cap - r->in_len - 1, 0);
		if (n > 0) {
			r->in_len += (size_t)n;
			continue;
		}
		if (n == 0 || (errno != EAGAIN && errno != EWOULDBLOCK && errno != EINTR))
			r->eof = true;
		return;
	}
}

/* Runs the loop for about 5 ms. */
static void pump_once(void)
{
	struct timeval tv = {0, 5000};
	event_base_loopexit(base, &tv);
	event_base_dispatch(base);
}

/* Runs the loop (the peers reading when READING) until *FLAG or MS pass. */
static void pump_until(const bool *flag, int ms, bool reading)
{
	double end = now_s() + ms / 1000.0;
	while ((!flag || !*flag) && now_s() < end) {
		pump_once();
		for (int i = 0; reading && i < n_recs; i++)
			peer_read(&recs[i]);
	}
}

static void pump_ms(int ms)
{
	pump_until(NULL, ms, true);
}

static void peer_write(struct rec *r, const char *data, size_t len)
{
	size_t off = 0;
	double end = now_s() + 10;
	while (off < len) {
		ssize_t n = send(r->fd, data + off, len - off, MSG_NOSIGNAL);
		if (n > 0) {
			off += (size_t)n;
			continue;
		}
		ck_assert_msg(errno == EAGAIN || errno == EWOULDBLOCK, "send: %s", strerror(errno));
		ck_assert_msg(now_s() < end, "peer_write stalled");
		pump_once();
	}
}

static void peer_puts(struct rec *r, const char *s)
{
	peer_write(r, s, strlen(s));
}

/* The next line the peer received (malloc'd, without "\n"), waiting up to MS. */
static char *next_raw(struct rec *r, int ms)
{
	double end = now_s() + ms / 1000.0;
	for (;;) {
		peer_read(r);
		char *nl = r->in_len ? memchr(r->in, '\n', r->in_len) : NULL;
		if (nl) {
			size_t len = (size_t)(nl - r->in);
			char *line = strndup(r->in, len);
			memmove(r->in, nl + 1, r->in_len - len - 1);
			r->in_len -= len + 1;
			return line;
		}
		ck_assert_msg(!r->eof, "EOF while waiting for a line");
		ck_assert_msg(now_s() < end, "no line within %d ms", ms);
		pump_once();
	}
}

static json_t *next_reply(struct rec *r, int ms)
{
	char *line = next_raw(r, ms);
	json_error_t jerr;
	json_t *v = json_loads(line, 0, &jerr);
	ck_assert_msg(json_is_object(v), "not a JSON object: %s", line);
	free(line);
	return v;
}

/* The next line is an error with CODE and REF (JSON text, NULL: no "ref"). */
static void expect_error(struct rec *r, const char *code, const char *ref)
{
	json_t *v = next_reply(r, 2000);
	ck_assert_str_eq(json_string_value(json_object_get(v, "type")), "error");
	ck_assert_str_eq(json_string_value(json_object_get(v, "code")), code);
	ck_assert(json_is_string(json_object_get(v, "message")));
	json_t *got = json_object_get(v, "ref");
	if (!ref) {
		ck_assert_msg(got == NULL, "unexpected ref");
	} else {
		json_t *want = json_loads(ref, JSON_DECODE_ANY, NULL);
		ck_assert_msg(json_equal(got, want), "ref differs from %s", ref);
		json_decref(want);
	}
	json_decref(v);
}

static void expect_ok(struct rec *r, const char *ref)
{
	json_t *v = next_reply(r, 2000);
	ck_assert_str_eq(json_string_value(json_object_get(v, "type")), "ok");
	if (ref) {
		json_t *want = json_loads(ref, JSON_DECODE_ANY, NULL);
		ck_assert_msg(json_equal(json_object_get(v, "ref"), want), "ref differs from %s",
			      ref);
		json_decref(want);
	}
	json_decref(v);
}

/* Nothing more arrives, then EOF. */
static void expect_eof(struct rec *r)
{
	pump_until(&r->eof, 8000, true);
	ck_assert_msg(r->eof, "no EOF");
	ck_assert_msg(r->in_len == 0, "unexpected bytes before EOF: %.*s", (int)r->in_len, r->in);
}

static void wait_closed(struct rec *r)
{
	double end = now_s() + 8;
	while (r->closes == 0 && now_s() < end)
		pump_ms(5);
	ck_assert_int_eq(r->closes, 1);
}

static size_t n_frames(const struct rec *r)
{
	return json_array_size(r->frames);
}

static const json_t *frame_at(const struct rec *r, size_t i)
{
	return json_object_get(json_array_get(r->frames, i), "frame");
}

static void wait_frames(struct rec *r, size_t n, int ms)
{
	double end = now_s() + ms / 1000.0;
	while (n_frames(r) < n && now_s() < end)
		pump_ms(5);
	ck_assert_uint_eq(n_frames(r), n);
}

/* Sends a hello and waits for its ok. */
static void say_hello(struct rec *r)
{
	peer_puts(r, "{\"type\":\"hello\",\"ref\":\"h\"}\n");
	expect_ok(r, "\"h\"");
	ck_assert(ndjson_conn_is_ready(r->conn));
}

static void setup(void)
{
	signal(SIGPIPE, SIG_IGN);
	log_setup(getenv("TEST_DEBUG") ? LOG_LEVEL_DEBUG : LOG_LEVEL_ERROR, LOG_TARGET_STDERR);
	base = event_base_new();
	ck_assert_ptr_nonnull(base);
	n_recs = 0;
	order = 0;
}

static void teardown(void)
{
	for (int i = 0; i < 2; i++)
		listener_free(&lsts[i]);
	ndjson_conn_free_all();
	for (int i = 0; i < n_recs; i++) {
		struct rec *r = &recs[i];
		ck_assert_int_le(r->closes, 1);
		if (r->fd >= 0)
			close(r->fd);
		free(r->in);
		json_decref(r->frames);
	}
	n_recs = 0;
	/* let deferred frees (TLS refusals) run */
	pump_once();
	event_base_free(base);
	base = NULL;
}

/* ---- framing ------------------------------------------------------------------------------ */

START_TEST(hello_and_replies)
{
	struct rec *r = pair_new(NULL, 0);
	ck_assert(!ndjson_conn_is_ready(r->conn));
	ck_assert_uint_gt(ndjson_conn_id(r->conn), 0);
	ck_assert_str_eq(ndjson_conn_peer(r->conn), "pair");
	ck_assert_str_eq(ndjson_conn_proto(r->conn), "test");
	ck_assert_ptr_eq(ndjson_conn_ctx(r->conn), r);
	say_hello(r);
	peer_puts(r, "{\"type\":\"ping\",\"ref\":7}\n");
	expect_ok(r, "7");
	peer_puts(r, "{\"type\":\"ping\"}\n");
	char *line = next_raw(r, 2000);
	ck_assert_str_eq(line, "{\"type\":\"ok\"}"); /* no ref when the request had none */
	free(line);
	ck_assert_uint_eq(n_frames(r), 3);
	ck_assert(json_is_null(json_object_get(json_array_get(r->frames, 2), "ref")));
	ck_assert_int_eq(r->closes, 0);
}
END_TEST

START_TEST(split_bytes)
{
	struct rec *r = pair_new(NULL, 0);
	const char *s = "{\"type\":\"hello\",\"ref\":\"split\"}\n{\"type\":\"ping\",\"ref\":2}\n";
	for (size_t i = 0; s[i]; i++) {
		peer_write(r, s + i, 1);
		pump_once();
	}
	expect_ok(r, "\"split\"");
	expect_ok(r, "2");
	ck_assert_uint_eq(n_frames(r), 2);
	ck_assert_str_eq(json_string_value(json_object_get(frame_at(r, 0), "ref")), "split");
}
END_TEST

START_TEST(many_in_one_write_crlf_empty_lines)
{
	struct rec *r = pair_new(NULL, 0);
	peer_puts(r, "\n\r\n{\"type\":\"hello\",\"ref\":0}\r\n\n"
		     "{\"type\":\"ping\",\"ref\":1}\n{\"type\":\"ping\",\"ref\":2}\r\n\r\n"
		     "{\"type\":\"ping\",\"ref\":3}\n");
	expect_ok(r, "0");
	expect_ok(r, "1");
	expect_ok(r, "2");
	expect_ok(r, "3");
	ck_assert_uint_eq(n_frames(r), 4);
	pump_ms(50);
	ck_assert_uint_eq(r->in_len, 0); /* empty lines got no answer */
	/* a frame may also carry UTF-8 and escaped characters */
	peer_puts(r,
		  "{\"type\":\"ping\",\"ref\":\"\xc3\xa9\\u00e9\\n\",\"body\":\"\xe2\x82\xac\"}\n");
	expect_ok(r, "\"\xc3\xa9\xc3\xa9\\n\"");
}
END_TEST

/* A line of exactly N content bytes: {"type":"ping","ref":R,"pad":"xxx"} */
static char *line_of(size_t n, int ref, const char *eol)
{
	char head[64];
	int h = snprintf(head, sizeof(head), "{\"type\":\"ping\",\"ref\":%d,\"pad\":\"", ref);
	ck_assert_uint_ge(n, (size_t)h + 2);
	char *s = malloc(n + 3);
	memcpy(s, head, (size_t)h);
	memset(s + h, 'x', n - (size_t)h - 2);
	memcpy(s + n - 2, "\"}", 2);
	strcpy(s + n, eol);
	return s;
}

START_TEST(frame_size_limit)
{
	struct ndjson_limits lim = {.max_frame_bytes = 256};
	struct rec *r = pair_new(&lim, 0);
	say_hello(r);
	char *s = line_of(256, 1, "\n");
	peer_puts(r, s);
	free(s);
	expect_ok(r, "1");
	s = line_of(256, 2, "\r\n"); /* the "\r" does not count */
	peer_puts(r, s);
	free(s);
	expect_ok(r, "2");
	s = line_of(257, 3, "\n");
	peer_puts(r, s);
	free(s);
	expect_error(r, "frame_too_large", NULL);
	expect_eof(r);
	wait_closed(r);
	ck_assert_str_eq(r->reason, "frame too large");
	ck_assert_uint_eq(n_frames(r), 3);
}
END_TEST

START_TEST(frame_too_large_without_newline)
{
	struct ndjson_limits lim = {.max_frame_bytes = 256};
	struct ndjson_stats before, st;
	ndjson_get_stats("test", &before);
	struct rec *r = pair_new(&lim, 0);
	say_hello(r);
	char junk[100000];
	memset(junk, '{', sizeof(junk));
	/* the peer keeps sending: the conn answers once and closes */
	ssize_t n = send(r->fd, junk, sizeof(junk), MSG_NOSIGNAL);
	ck_assert_int_gt(n, 257);
	expect_error(r, "frame_too_large", NULL);
	expect_eof(r);
	wait_closed(r);
	ck_assert_str_eq(r->reason, "frame too large");
	ndjson_get_stats("test", &st);
	ck_assert_uint_eq(st.too_large - before.too_large, 1);
}
END_TEST

START_TEST(bad_frames)
{
	struct ndjson_stats before, st;
	ndjson_get_stats("test", &before);
	struct rec *r = pair_new(NULL, 0);
	say_hello(r);
	peer_puts(r, "not json\n");
	expect_error(r, "bad_frame", NULL);
	peer_puts(r, "[1,2]\n");
	expect_error(r, "bad_frame", NULL);
	peer_puts(r, "\"hello\"\n");
	expect_error(r, "bad_frame", NULL);
	peer_puts(r, "{\"ref\":\"a\"}\n"); /* no type: the valid ref is echoed */
	expect_error(r, "bad_frame", "\"a\"");
	peer_puts(r, "{\"type\":5,\"ref\":7}\n");
	expect_error(r, "bad_frame", "7");
	peer_puts(r, "{\"type\":\"\",\"ref\":8}\n");
	expect_error(r, "bad_frame", "8");
	peer_puts(r, "{\"type\":\"ping\",\"ref\":1.5}\n"); /* bad refs are not echoed */
	expect_error(r, "bad_frame", NULL);
	peer_puts(r, "{\"type\":\"ping\",\"ref\":[1]}\n");
	expect_error(r, "bad_frame", NULL);
	peer_puts(r, "{\"type\":\"ping\",\"ref\":null}\n");
	expect_error(r, "bad_frame", NULL);
	/* nine bad frames in a row so far: a valid one resets the count */
	peer_puts(r, "{\"type\":\"ping\",\"ref\":\"reset\"}\n");
	expect_ok(r, "\"reset\"");
	char ref65[200];
	snprintf(ref65, sizeof(ref65), "{\"type\":\"ping\",\"ref\":\"%065d\"}\n", 0);
	peer_puts(r, ref65);
	expect_error(r, "bad_frame", NULL);
	peer_puts(r, "{\"type\":\"ping\"} trailing\n");
	expect_error(r, "bad_frame", NULL);
	peer_puts(r, "{\"type\":\"ping\",\"type\":\"ping\"}\n"); /* duplicate keys */
	expect_error(r, "bad_frame", NULL);
	peer_puts(r, "{\"type\":\"ping\",\"ref\":\"ok\"}\n");
	expect_ok(r, "\"ok\"");
	/* NUL bytes and invalid UTF-8 */
	peer_write(r, "{\"type\":\"a\0b\"}\n", 15);
	expect_error(r, "bad_frame", NULL);
	peer_puts(r, "{\"type\":\"ping\",\"x\":\"\\u0000\"}\n");
	expect_error(r, "bad_frame", NULL);
	peer_puts(r, "{\"type\":\"\xff\xfe\"}\n");
	expect_error(r, "bad_frame", NULL);
	peer_puts(r, "{\"type\":\"ping\",\"x\":\"\xc3\x28\"}\n");
	expect_error(r, "bad_frame", NULL);
	/* 64 characters (128 bytes of UTF-8) is a valid ref; 64 digits too */
	char ref64[400];
	int n = snprintf(ref64, sizeof(ref64), "{\"type\":\"ping\",\"ref\":\"");
	for (int i = 0; i < 64; i++)
		n += snprintf(ref64 + n, sizeof(ref64) - (size_t)n, "\xc3\xa9");
	snprintf(ref64 + n, sizeof(ref64) - (size_t)n, "\"}\n");
	peer_puts(r, ref64);
	json_t *v = next_reply(r, 2000);
	ck_assert_str_eq(json_string_value(json_object_get(v, "type")), "ok");
	ck_assert_uint_eq(json_string_length(json_object_get(v, "ref")), 128);
	json_decref(v);
	peer_puts(r, "{\"type\":\"ping\",\"ref\":-9007199254740993}\n");
	expect_ok(r, "-9007199254740993");
	ck_assert_int_eq(r->closes, 0);
	ck_assert(!r->eof);
	ck_assert_uint_eq(n_frames(r), 5); /* hello, reset, ok, the two refs */
	ndjson_get_stats("test", &st);
	ck_assert_uint_eq(st.bad_frames - before.bad_frames, 16);
}
END_TEST

START_TEST(ten_bad_frames_close)
{
	struct rec *r = pair_new(NULL, 0);
	say_hello(r);
	for (int i = 0; i < 9; i++)
		peer_puts(r, "nope\n");
	peer_puts(r, "{\"type\":\"ping\",\"ref\":1}\n");
	for (int i = 0; i < 9; i++)
		expect_error(r, "bad_frame", NULL);
	expect_ok(r, "1");
	for (int i = 0; i < 9; i++)
		peer_puts(r, "{\"ref\":2}\n");
	for (int i = 0; i < 9; i++)
		expect_error(r, "bad_frame", "2");
	pump_ms(50);
	ck_assert_int_eq(r->closes, 0);
	/* the tenth in a row: answered, then the conn closes; what follows is not handled */
	peer_puts(r, "[]\n{\"type\":\"ping\",\"ref\":3}\n");
	expect_error(r, "bad_frame", NULL);
	expect_eof(r);
	wait_closed(r);
	ck_assert_str_eq(r->reason, "too many bad frames");
	ck_assert_uint_eq(n_frames(r), 2);
}
END_TEST

/* ---- hello -------------------------------------------------------------------------------- */

START_TEST(hello_timeout)
{
	struct ndjson_limits lim = {.hello_timeout_s = 1};
	struct rec *r = pair_new(&lim, 0);
	double t0 = now_s();
	json_t *v = next_reply(r, 3000);
	double waited = now_s() - t0;
	ck_assert_str_eq(json_string_value(json_object_get(v, "code")), "unauthorized");
	ck_assert_str_eq(json_string_value(json_object_get(v, "message")), "hello timeout");
	ck_assert_ptr_null(json_object_get(v, "ref"));
	json_decref(v);
	ck_assert_msg(waited > 0.8 && waited < 2.5, "waited %.2f s", waited);
	expect_eof(r);
	wait_closed(r);
	ck_assert_str_eq(r->reason, "hello timeout");
}
END_TEST

START_TEST(ready_stops_hello_timer)
{
	struct ndjson_limits lim = {.hello_timeout_s = 1};
	struct rec *r = pair_new(&lim, 0);
	say_hello(r);
	pump_ms(1500);
	ck_assert_int_eq(r->closes, 0);
	ck_assert_uint_eq(r->in_len, 0);
	peer_puts(r, "{\"type\":\"ping\",\"ref\":1}\n");
	expect_ok(r, "1");
}
END_TEST

START_TEST(frame_before_hello)
{
	struct rec *r = pair_new(NULL, 0);
	peer_puts(r, "{\"type\":\"ping\",\"ref\":\"r\"}\n{\"type\":\"hello\"}\n");
	json_t *v = next_reply(r, 2000);
	ck_assert_str_eq(json_string_value(json_object_get(v, "code")), "unauthorized");
	ck_assert_str_eq(json_string_value(json_object_get(v, "message")), "hello first");
	ck_assert_str_eq(json_string_value(json_object_get(v, "ref")), "r");
	json_decref(v);
	expect_eof(r);
	wait_closed(r);
	ck_assert_str_eq(r->reason, "frame before hello");
	ck_assert_uint_eq(n_frames(r), 0);
}
END_TEST

/* A hello whose answer takes a while (a store lookup): frames behind it wait for it. */
START_TEST(hello_holds_input_until_ready)
{
	struct rec *r = pair_new(NULL, 0);
	r->auto_ready = false;
	peer_puts(r, "{\"type\":\"hello\",\"ref\":1}\n{\"type\":\"ping\",\"ref\":2}\n");
	wait_frames(r, 1, 2000);
	pump_ms(100);
	ck_assert_uint_eq(n_frames(r), 1); /* the ping waits */
	ck_assert_int_eq(r->closes, 0);
	ndjson_reply_ok(r->conn, NULL, NULL);
	ndjson_conn_set_ready(r->conn);
	expect_ok(r, NULL);
	expect_ok(r, "2");
	ck_assert_uint_eq(n_frames(r), 2);
}
END_TEST

/* A refused hello may be retried when the application resumes the conn. */
START_TEST(hello_refused_then_retried)
{
	struct rec *r = pair_new(NULL, 0);
	r->auto_ready = false;
	peer_puts(r, "{\"type\":\"hello\",\"ref\":1}\n{\"type\":\"hello\",\"ref\":2}\n");
	wait_frames(r, 1, 2000);
	ndjson_reply_error(r->conn, json_object_get(frame_at(r, 0), "ref"), "invalid", "role?");
	ndjson_conn_resume(r->conn);
	expect_error(r, "invalid", "1");
	wait_frames(r, 2, 2000);
	ck_assert(!ndjson_conn_is_ready(r->conn));
	ndjson_conn_set_ready(r->conn);
	ck_assert(ndjson_conn_is_ready(r->conn));
}
END_TEST

START_TEST(pause_and_resume)
{
	struct rec *r = pair_new(NULL, 0);
	say_hello(r);
	ndjson_conn_pause(r->conn);
	peer_puts(r, "{\"type\":\"ping\",\"ref\":1}\n{\"type\":\"ping\",\"ref\":2}\n");
	pump_ms(100);
	ck_assert_uint_eq(n_frames(r), 1);
	ndjson_conn_resume(r->conn);
	ck_assert_uint_eq(n_frames(r), 1); /* never from inside the call */
	expect_ok(r, "1");
	expect_ok(r, "2");
	ck_assert_uint_eq(n_frames(r), 3);
}
END_TEST

/* ---- replies ------------------------------------------------------------------------------ */

START_TEST(reply_shapes)
{
	struct rec *r = pair_new(NULL, 0);
	say_hello(r);
	json_t *ref = json_string("abc");
	ndjson_reply_ok(r->conn, ref,
			json_pack("{s:i, s:s, s:s}", "x", 1, "type", "bad", "ref", "z"));
	json_decref(ref);
	ref = json_integer(5);
	ndjson_reply_error(r->conn, ref, "not_found", "no such conversation");
	json_decref(ref);
	ndjson_reply_ok(r->conn, NULL, NULL);
	ndjson_reply_error(r->conn, NULL, "internal", NULL);
	ndjson_send(r->conn, json_pack("{s:s, s:i, s:s}", "type", "queued", "conversation", 42,
				       "note", "line\nbreak \xe2\x82\xac"));
	const char *want[] = {
	    "{\"type\":\"ok\",\"ref\":\"abc\",\"x\":1}",
	    ("{\"type\":\"error\",\"ref\":5,\"code\":\"not_found\",\"message\":\"no such "
	     "conversation\"}"),
	    "{\"type\":\"ok\"}",
	    "{\"type\":\"error\",\"code\":\"internal\",\"message\":\"internal\"}",
	    "{\"type\":\"queued\",\"conversation\":42,\"note\":\"line\\nbreak \xe2\x82\xac\"}",
	};
	for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
		char *line = next_raw(r, 2000);
		ck_assert_str_eq(line, want[i]);
		free(line);
	}
	ck_assert_int_eq(ndjson_send(r->conn, NULL), -1);
}
END_TEST

/* ---- fairness and backpressure ------------------------------------------------------------ */

START_TEST(frames_per_event_cap)
{
	struct rec *a = pair_new(NULL, 0);
	struct rec *b = pair_new(NULL, 0);
	say_hello(a);
	say_hello(b);
	json_array_clear(a->frames);
	json_array_clear(b->frames);
	/* 1000 frames in one write to A, then one frame to B */
	size_t cap = 1000 * 40, len = 0;
	char *buf = malloc(cap);
	for (int i = 0; i < 1000; i++)
		len +=
		    (size_t)snprintf(buf + len, cap - len, "{\"type\":\"note\",\"seq\":%d}\n", i);
	peer_write(a, buf, len);
	free(buf);
	peer_puts(b, "{\"type\":\"note\",\"seq\":0}\n");
	wait_frames(a, 1000, 5000);
	wait_frames(b, 1, 1000);
	for (size_t i = 0; i < 1000; i++)
		ck_assert_int_eq(json_integer_value(json_object_get(frame_at(a, i), "seq")),
				 (json_int_t)i);
	/* B was not starved: its frame came before A's last ones */
	json_int_t b_at =
	    json_integer_value(json_object_get(json_array_get(b->frames, 0), "order"));
	json_int_t a_last =
	    json_integer_value(json_object_get(json_array_get(a->frames, 999), "order"));
	ck_assert_msg(b_at < a_last - 64, "B's frame came at %lld, A's last at %lld",
		      (long long)b_at, (long long)a_last);
}
END_TEST

START_TEST(backpressure_stops_reading)
{
	struct ndjson_limits lim = {.output_hwm_bytes = 4096};
	struct rec *r = pair_new(&lim, 4096);
	r->pad = 1024;
	say_hello(r);
	json_array_clear(r->frames);
	/* 300 requests whose answers (300 KiB) the peer does not read */
	char *buf = malloc(300 * 40);
	size_t len = 0;
	for (int i = 0; i < 300; i++)
		len += (size_t)snprintf(buf + len, 40, "{\"type\":\"big\",\"ref\":%d}\n", i);
	peer_write(r, buf, len);
	free(buf);
	pump_until(NULL, 300, false);
	size_t handled = n_frames(r);
	ck_assert_msg(handled > 0 && handled < 300, "handled %zu", handled);
	ck_assert_uint_le(ndjson_conn_queued_bytes(r->conn), 4096 + 1100);
	pump_until(NULL, 200, false);
	ck_assert_uint_eq(n_frames(r), handled); /* stalled while the peer does not read */
	ck_assert_int_eq(r->closes, 0);
	/* the peer reads: everything is handled, in order */
	for (int i = 0; i < 300; i++) {
		char ref[16];
		snprintf(ref, sizeof(ref), "%d", i);
		expect_ok(r, ref);
	}
	ck_assert_uint_eq(n_frames(r), 300);
	ck_assert_int_eq(r->closes, 0);
}
END_TEST

START_TEST(slow_consumer)
{
	struct ndjson_limits lim = {.output_hwm_bytes = 4096};
	struct ndjson_stats before, st;
	ndjson_get_stats("test", &before);
	struct rec *r = pair_new(&lim, 4096);
	say_hello(r);
	char pad[1025];
	memset(pad, 'y', 1024);
	pad[1024] = '\0';
	size_t max_queued = 0;
	int sent = 0;
	/* server pushes to a peer that never reads */
	for (int i = 0; i < 1000 && r->closes == 0; i++) {
		if (r->conn && !ndjson_conn_is_closing(r->conn)) {
			ck_assert_int_eq(ndjson_send(r->conn, json_pack("{s:s, s:s}", "type",
									"event", "pad", pad)),
					 0);
			sent++;
			size_t q = ndjson_conn_queued_bytes(r->conn);
			if (q > max_queued)
				max_queued = q;
		}
		pump_until(NULL, 1, false);
	}
	wait_closed(r);
	ck_assert_str_eq(r->reason, "slow consumer");
	ck_assert_uint_le(max_queued, 4 * 4096 + 1100);
	ck_assert_int_lt(sent, 200);
	ndjson_get_stats("test", &st);
	ck_assert_uint_eq(st.slow_consumers - before.slow_consumers, 1);
	/* the conn is gone: the peer sees EOF once it reads */
	double end = now_s() + 5;
	while (!r->eof && now_s() < end) {
		r->in_len = 0;
		peer_read(r);
		pump_once();
	}
	ck_assert(r->eof);
}
END_TEST

/* ---- closing ------------------------------------------------------------------------------ */

START_TEST(close_flushes_then_eof)
{
	struct rec *r = pair_new(NULL, 0);
	say_hello(r);
	peer_puts(r, "{\"type\":\"quit\",\"ref\":1}\n{\"type\":\"ping\",\"ref\":2}\n");
	expect_ok(r, "1");
	expect_eof(r);
	wait_closed(r);
	ck_assert_str_eq(r->reason, "quit");
	ck_assert_uint_eq(n_frames(r), 2); /* hello, quit: the ping after it is dropped */
	pump_ms(50);
	ck_assert_int_eq(r->closes, 1);
}
END_TEST

START_TEST(close_from_outside)
{
	struct rec *r = pair_new(NULL, 0);
	say_hello(r);
	ndjson_send(r->conn, json_pack("{s:s}", "type", "bye"));
	ndjson_conn_close(r->conn, "shutting down");
	ndjson_conn_close(r->conn, "again");
	ck_assert_int_eq(r->closes, 0); /* never from inside the call */
	char *line = next_raw(r, 2000);
	ck_assert_str_eq(line, "{\"type\":\"bye\"}");
	free(line);
	expect_eof(r);
	wait_closed(r);
	ck_assert_str_eq(r->reason, "shutting down");
}
END_TEST

START_TEST(peer_half_close)
{
	struct rec *r = pair_new(NULL, 0);
	peer_puts(r,
		  "{\"type\":\"hello\",\"ref\":0}\n{\"type\":\"ping\",\"ref\":1}\n{\"type\":\"pi");
	shutdown(r->fd, SHUT_WR);
	expect_ok(r, "0");
	expect_ok(r, "1");
	expect_eof(r);
	wait_closed(r);
	ck_assert_str_eq(r->reason, "peer closed");
	ck_assert_uint_eq(n_frames(r), 2);
}
END_TEST

START_TEST(peer_vanishes)
{
	struct ndjson_stats before, st;
	ndjson_get_stats(NULL, &before);
	struct rec *r = pair_new(NULL, 0);
	say_hello(r);
	ck_assert_uint_eq(ndjson_conn_count("test"), 1);
	close(r->fd);
	r->fd = -1;
	wait_closed(r);
	pump_ms(20);
	ck_assert_uint_eq(ndjson_conn_count("test"), 0);
	ndjson_get_stats(NULL, &st);
	ck_assert_uint_eq(st.opened - before.opened, 1);
	ck_assert_uint_eq(st.open, 0);
	ck_assert_uint_ge(st.frames_in - before.frames_in, 1);
	ck_assert_uint_ge(st.frames_out - before.frames_out, 1);
}
END_TEST

START_TEST(free_all_at_shutdown)
{
	struct rec *a = pair_new(NULL, 0);
	struct rec *b = pair_new(NULL, 0);
	say_hello(a);
	ndjson_send(b->conn, json_pack("{s:s}", "type", "unflushed"));
	ndjson_conn_free_all();
	ck_assert_int_eq(a->closes, 1);
	ck_assert_int_eq(b->closes, 1);
	ck_assert_str_eq(a->reason, "shutdown");
	ck_assert_uint_eq(ndjson_conn_count(NULL), 0);
}
END_TEST

/* ---- listener ----------------------------------------------------------------------------- */

static int free_port(void)
{
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bind(s, (struct sockaddr *)&sin, sizeof(sin)), 0);
	socklen_t len = sizeof(sin);
	ck_assert_int_eq(getsockname(s, (struct sockaddr *)&sin, &len), 0);
	close(s);
	return ntohs(sin.sin_port);
}

static void on_accept(struct bufferevent *bev, const char *peer, void *arg)
{
	ck_assert(strncmp(peer, "127.0.0.1:", 10) == 0);
	struct rec *r = rec_new();
	r->counted = true;
	r->conn = ndjson_conn_new(bev, NULL, &handlers, r, (const char *)arg, peer);
	ck_assert_ptr_nonnull(r->conn);
}

static struct listener *listen_on(int i, const char *name, SSL_CTX *ctx)
{
	char *error = NULL;
	char addr[64];
	for (int tries = 0; tries < 5 && !lsts[i]; tries++) {
		snprintf(addr, sizeof(addr), "127.0.0.1:%d", free_port());
		free(error);
		error = NULL;
		lsts[i] = listener_new(base, name, addr, ctx, on_accept, (void *)name, &error);
	}
	ck_assert_msg(lsts[i] != NULL, "listener_new: %s", error ? error : "");
	ck_assert_str_eq(listener_addr(lsts[i]), addr);
	ck_assert_str_eq(listener_name(lsts[i]), name);
	return lsts[i];
}

static int tcp_connect(int port)
{
	int s = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sin;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(connect(s, (struct sockaddr *)&sin, sizeof(sin)), 0);
	set_nonblock(s);
	return s;
}

/* Connects a plain peer and waits until the listener made its conn: the rec. */
static struct rec *accept_one(struct listener *l)
{
	int before = n_recs;
	int fd = tcp_connect(listener_port(l));
	double end = now_s() + 5;
	while (n_recs == before && now_s() < end)
		pump_once();
	ck_assert_int_eq(n_recs, before + 1);
	recs[before].fd = fd;
	return &recs[before];
}

START_TEST(listener_plain)
{
	char *error = NULL;
	ck_assert_ptr_null(listener_new(base, "client", "nonsense", NULL, on_accept, NULL, &error));
	ck_assert_str_eq(error, "listen.client: bad address nonsense");
	free(error);

	struct listener *l = listen_on(0, "client", NULL);
	ck_assert(!listener_is_tls(l));
	ck_assert_int_gt(listener_port(l), 0);
	/* the same address twice cannot be bound */
	error = NULL;
	ck_assert_ptr_null(
	    listener_new(base, "phone", listener_addr(l), NULL, on_accept, NULL, &error));
	ck_assert_ptr_nonnull(strstr(error, "listen.phone: cannot bind"));
	free(error);

	struct rec *r = accept_one(l);
	ck_assert_str_eq(ndjson_conn_proto(r->conn), "client");
	ck_assert_int_eq(listener_conn_count(), 1);
	say_hello(r);
	peer_puts(r, "{\"type\":\"ping\",\"ref\":\"tcp\"}\n");
	expect_ok(r, "\"tcp\"");
	struct listener_stats st;
	listener_get_stats(l, &st);
	ck_assert_uint_eq(st.accepted, 1);
	ck_assert_uint_eq(st.refused, 0);
	close(r->fd);
	r->fd = -1;
	wait_closed(r);
	ck_assert_int_eq(listener_conn_count(), 0);

	/* drain: no more accepts */
	listener_disable(l);
	int fd = tcp_connect(listener_port(l)); /* the kernel backlog still takes it */
	pump_ms(100);
	ck_assert_int_eq(n_recs, 1);
	close(fd);
}
END_TEST

START_TEST(listener_max_connections)
{
	struct listener *l = listen_on(0, "client", NULL);
	listener_set_max_connections(1);
	struct rec *a = accept_one(l);
	say_hello(a);

	/* over the limit: one line, then EOF */
	struct rec *b = rec_new();
	b->fd = tcp_connect(listener_port(l));
	char *line = next_raw(b, 3000);
	ck_assert_str_eq(
	    line,
	    "{\"type\":\"error\",\"code\":\"unavailable\",\"message\":\"too many connections\"}");
	free(line);
	expect_eof(b);
	ck_assert_int_eq(n_recs, 2); /* no conn was made for it */
	struct listener_stats st;
	listener_get_stats(l, &st);
	ck_assert_uint_eq(st.refused, 1);

	/* once A is gone there is room again */
	ndjson_conn_close(a->conn, "bye");
	wait_closed(a);
	ck_assert_int_eq(listener_conn_count(), 0);
	struct rec *c = accept_one(l);
	say_hello(c);
	listener_set_max_connections(0);
}
END_TEST

START_TEST(listener_accept_error_backs_off)
{
	struct listener *l = listen_on(0, "phone", NULL);
	int s = socket(AF_INET, SOCK_STREAM, 0);
	int probe = open("/dev/null", O_RDONLY); /* the lowest free descriptor */
	ck_assert_int_ge(probe, 0);
	close(probe);
	struct rlimit old, low;
	ck_assert_int_eq(getrlimit(RLIMIT_NOFILE, &old), 0);
	low = old;
	low.rlim_cur = (rlim_t)probe; /* accept() now fails with EMFILE */
	ck_assert_int_eq(setrlimit(RLIMIT_NOFILE, &low), 0);
	struct sockaddr_in sin;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)listener_port(l));
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	int rc = connect(s, (struct sockaddr *)&sin, sizeof(sin));
	double end = now_s() + 0.5;
	while (now_s() < end)
		pump_once();
	struct listener_stats st;
	listener_get_stats(l, &st);
	int accepted_low = n_recs;
	setrlimit(RLIMIT_NOFILE, &old);
	ck_assert_int_eq(rc, 0);
	ck_assert_int_eq(accepted_low, 0);
	/* one failure, then a pause: not a busy loop */
	ck_assert_uint_ge(st.accept_errors, 1);
	ck_assert_uint_le(st.accept_errors, 2);
	/* after the pause the waiting connection is taken */
	end = now_s() + 3;
	while (n_recs == 0 && now_s() < end)
		pump_once();
	ck_assert_int_eq(n_recs, 1);
	recs[0].fd = s;
	set_nonblock(s);
	say_hello(&recs[0]);
}
END_TEST

/* ---- TLS ---------------------------------------------------------------------------------- */

static char tmpdir[256];

/* Writes a self-signed certificate for CN and its key as DIR/CN.crt and DIR/CN.key. */
static void make_cert(const char *cn, long serial)
{
	EVP_PKEY *pkey = EVP_RSA_gen(2048);
	ck_assert_ptr_nonnull(pkey);
	X509 *x = X509_new();
	X509_set_version(x, 2);
	ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
	X509_gmtime_adj(X509_getm_notBefore(x), -60);
	X509_gmtime_adj(X509_getm_notAfter(x), 3600);
	X509_set_pubkey(x, pkey);
	X509_NAME *name = X509_get_subject_name(x);
	X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_ASC, (const unsigned char *)cn, -1, -1, 0);
	X509_set_issuer_name(x, name);
	ck_assert_int_gt(X509_sign(x, pkey, EVP_sha256()), 0);
	char path[512];
	snprintf(path, sizeof(path), "%s/%s.crt", tmpdir, cn);
	FILE *f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(PEM_write_X509(f, x), 1);
	fclose(f);
	snprintf(path, sizeof(path), "%s/%s.key", tmpdir, cn);
	f = fopen(path, "w");
	ck_assert_ptr_nonnull(f);
	ck_assert_int_eq(PEM_write_PrivateKey(f, pkey, NULL, NULL, 0, NULL, NULL), 1);
	fclose(f);
	X509_free(x);
	EVP_PKEY_free(pkey);
}

static SSL_CTX *server_ctx(const char *cn)
{
	struct config cfg;
	config_defaults(&cfg);
	free(cfg.tls_cert_file);
	free(cfg.tls_key_file);
	char path[512];
	snprintf(path, sizeof(path), "%s/%s.crt", tmpdir, cn);
	cfg.tls_cert_file = strdup(path);
	snprintf(path, sizeof(path), "%s/%s.key", tmpdir, cn);
	cfg.tls_key_file = strdup(path);
	char *error = NULL;
	SSL_CTX *ctx = tls_server_ctx_new(&cfg, false, &error);
	ck_assert_msg(ctx != NULL, "tls_server_ctx_new: %s", error ? error : "");
	config_free(&cfg);
	return ctx;
}

static void tls_setup(void)
{
	setup();
	const char *t = getenv("TMPDIR");
	snprintf(tmpdir, sizeof(tmpdir), "%s/contactd-test-ndjson-XXXXXX", t && *t ? t : "/tmp");
	ck_assert_ptr_nonnull(mkdtemp(tmpdir));
}

static void tls_teardown(void)
{
	static const char *const files[] = {"one.crt", "one.key", "two.crt", "two.key"};
	for (size_t i = 0; i < 4; i++) {
		char path[512];
		snprintf(path, sizeof(path), "%s/%s", tmpdir, files[i]);
		unlink(path);
	}
	rmdir(tmpdir);
	teardown();
}

/* A TLS client bufferevent in the same loop. */
struct tls_client {
	struct bufferevent *bev;
	struct evbuffer *in;
	bool connected, eof;
};

static void tc_read_cb(struct bufferevent *bev, void *arg)
{
	struct tls_client *c = arg;
	evbuffer_add_buffer(c->in, bufferevent_get_input(bev));
}

static void tc_event_cb(struct bufferevent *bev, short what, void *arg)
{
	struct tls_client *c = arg;
	if (what & BEV_EVENT_CONNECTED)
		c->connected = true;
	else if (what & (BEV_EVENT_EOF | BEV_EVENT_ERROR)) {
		tc_read_cb(bev, arg);
		c->eof = true;
	}
}

static void tls_client_connect(struct tls_client *c, SSL_CTX *cctx, int port)
{
	memset(c, 0, sizeof(*c));
	c->in = evbuffer_new();
	SSL *ssl = SSL_new(cctx);
	c->bev = bufferevent_openssl_socket_new(base, -1, ssl, BUFFEREVENT_SSL_CONNECTING,
						BEV_OPT_CLOSE_ON_FREE);
	ck_assert_ptr_nonnull(c->bev);
	bufferevent_openssl_set_allow_dirty_shutdown(c->bev, 1);
	bufferevent_setcb(c->bev, tc_read_cb, NULL, tc_event_cb, c);
	bufferevent_enable(c->bev, EV_READ | EV_WRITE);
	struct sockaddr_in sin;
	memset(&sin, 0, sizeof(sin));
	sin.sin_family = AF_INET;
	sin.sin_port = htons((uint16_t)port);
	sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	ck_assert_int_eq(bufferevent_socket_connect(c->bev, (struct sockaddr *)&sin, sizeof(sin)),
			 0);
}

static void tls_client_free(struct tls_client *c)
{
	if (c->bev)
		bufferevent_free(c->bev);
	evbuffer_free(c->in);
	memset(c, 0, sizeof(*c));
}

/* The next line the TLS client got (malloc'd). */
static char *tls_client_line(struct tls_client *c)
{
	double end = now_s() + 5;
	for (;;) {
		char *line = evbuffer_readln(c->in, NULL, EVBUFFER_EOL_LF);
		if (line)
			return line;
		ck_assert_msg(!c->eof, "TLS client: EOF while waiting for a line");
		ck_assert_msg(now_s() < end, "TLS client: no line");
		pump_once();
	}
}

/* The common name of the server certificate the client saw. */
static void tls_client_peer_cn(struct tls_client *c, char *buf, int bufsz)
{
	X509 *x = SSL_get1_peer_certificate(bufferevent_openssl_get_ssl(c->bev));
	ck_assert_ptr_nonnull(x);
	X509_NAME_get_text_by_NID(X509_get_subject_name(x), NID_commonName, buf, bufsz);
	X509_free(x);
}

static SSL_CTX *client_ctx(void)
{
	SSL_CTX *cctx = SSL_CTX_new(TLS_client_method());
	SSL_CTX_set_verify(cctx, SSL_VERIFY_NONE, NULL);
	return cctx;
}

START_TEST(listener_tls)
{
	make_cert("one", 1);
	make_cert("two", 2);
	SSL_CTX *ctx = server_ctx("one");
	struct listener *l = listen_on(0, "client_tls", ctx);
	SSL_CTX_free(ctx); /* the listener holds its own reference */
	ck_assert(listener_is_tls(l));
	SSL_CTX *cctx = client_ctx();

	struct tls_client c1;
	tls_client_connect(&c1, cctx, listener_port(l));
	bufferevent_write(c1.bev, "{\"type\":\"hello\",\"ref\":\"t\"}\n", 27);
	char *line = tls_client_line(&c1);
	ck_assert_str_eq(line, "{\"type\":\"ok\",\"ref\":\"t\",\"hello\":true}");
	free(line);
	char cn[64];
	tls_client_peer_cn(&c1, cn, sizeof(cn));
	ck_assert_str_eq(cn, "one");
	ck_assert_int_eq(n_recs, 1);
	ck_assert_str_eq(ndjson_conn_proto(recs[0].conn), "client_tls");

	/* certificate reload: new conns get the new certificate, the old conn lives on */
	ctx = server_ctx("two");
	listener_set_tls_ctx(l, ctx);
	SSL_CTX_free(ctx);
	struct tls_client c2;
	tls_client_connect(&c2, cctx, listener_port(l));
	bufferevent_write(c2.bev, "{\"type\":\"hello\",\"ref\":2}\n", 25);
	line = tls_client_line(&c2);
	ck_assert_str_eq(line, "{\"type\":\"ok\",\"ref\":2,\"hello\":true}");
	free(line);
	tls_client_peer_cn(&c2, cn, sizeof(cn));
	ck_assert_str_eq(cn, "two");
	bufferevent_write(c1.bev, "{\"type\":\"ping\",\"ref\":3}\n", 24);
	line = tls_client_line(&c1);
	ck_assert_str_eq(line, "{\"type\":\"ok\",\"ref\":3}");
	free(line);

	/* a peer that is not speaking TLS is dropped */
	struct rec *r = accept_one(l);
	peer_puts(r, "{\"type\":\"hello\"}\n");
	pump_until(&r->eof, 5000, true);
	ck_assert(r->eof);
	wait_closed(r);
	ck_assert_msg(strncmp(r->reason, "tls error: ", 11) == 0, "reason: %s", r->reason);

	/* over the limit: the refusal goes through TLS too */
	listener_set_max_connections(2);
	struct tls_client c3;
	tls_client_connect(&c3, cctx, listener_port(l));
	line = tls_client_line(&c3);
	ck_assert_str_eq(
	    line,
	    "{\"type\":\"error\",\"code\":\"unavailable\",\"message\":\"too many connections\"}");
	free(line);
	pump_until(&c3.eof, 5000, false);
	ck_assert(c3.eof);
	listener_set_max_connections(0);

	tls_client_free(&c1);
	tls_client_free(&c2);
	tls_client_free(&c3);
	SSL_CTX_free(cctx);
	wait_closed(&recs[0]);
	wait_closed(&recs[1]);
	ck_assert_str_eq(recs[0].reason, "peer closed"); /* no close_notify: still a plain EOF */
	ck_assert_int_eq(listener_conn_count(), 0);
}
END_TEST

static Suite *ndjson_suite(void)
{
	Suite *s = suite_create("ndjson");
	TCase *tc = tcase_create("framing");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, hello_and_replies);
	tcase_add_test(tc, split_bytes);
	tcase_add_test(tc, many_in_one_write_crlf_empty_lines);
	tcase_add_test(tc, frame_size_limit);
	tcase_add_test(tc, frame_too_large_without_newline);
	tcase_add_test(tc, bad_frames);
	tcase_add_test(tc, ten_bad_frames_close);
	tcase_add_test(tc, hello_timeout);
	tcase_add_test(tc, ready_stops_hello_timer);
	tcase_add_test(tc, frame_before_hello);
	tcase_add_test(tc, hello_holds_input_until_ready);
	tcase_add_test(tc, hello_refused_then_retried);
	tcase_add_test(tc, pause_and_resume);
	tcase_add_test(tc, reply_shapes);
	tcase_add_test(tc, frames_per_event_cap);
	tcase_add_test(tc, backpressure_stops_reading);
	tcase_add_test(tc, slow_consumer);
	tcase_add_test(tc, close_flushes_then_eof);
	tcase_add_test(tc, close_from_outside);
	tcase_add_test(tc, peer_half_close);
	tcase_add_test(tc, peer_vanishes);
	tcase_add_test(tc, free_all_at_shutdown);
	suite_add_tcase(s, tc);

	tc = tcase_create("listener");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 30);
	tcase_add_test(tc, listener_plain);
	tcase_add_test(tc, listener_max_connections);
	tcase_add_test(tc, listener_accept_error_backs_off);
	suite_add_tcase(s, tc);

	tc = tcase_create("tls");
	tcase_add_checked_fixture(tc, tls_setup, tls_teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, listener_tls);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(ndjson_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
