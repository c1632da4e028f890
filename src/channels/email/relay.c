/* Agent replies on e-mail conversations: the outbox (sql/0012_email.sql) sent through
 * email.relay with libcurl's SMTP client, driven by the event loop (curl multi socket API on
 * libevent). See email_internal.h. */
#include "contactd/app.h"
#include "contactd/chat.h"
#include "contactd/config.h"
#include "contactd/email.h"
#include "contactd/log.h"
#include "contactd/outbound.h"
#include "contactd/store.h"
#include "email_internal.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define RELAY_PARALLEL	   16	/* sends in flight at most */
#define RELAY_POLL_MS	   1000 /* outbox poll */
#define RELAY_LEASE_S	   300	/* a claimed send not reported by then is tried again */
#define RELAY_TIMEOUT_S	   120	/* one SMTP transaction */
#define RELAY_MAX_MAIL	   (4 * 1024 * 1024)
#define RELAY_MAX_REFS	   20
#define RELAY_MAX_ID_CHARS 250

struct send;

struct email_relay {
	struct app *app;
	CURLM *multi;
	struct event *curl_timer; /* curl's own timeout */
	struct event *poll;	  /* claims due rows */
	bool claiming, kicked, warned_off;
	unsigned sending;
	struct send *sends; /* in flight */
	char hostname[256];
};

struct send {
	struct email_relay *r;
	struct send *prev, *next;
	CURL *easy;
	struct curl_slist *rcpt;
	char *data;
	size_t len, off;
	int64_t id, conversation, message;
	long attempts;
	char to[330];
	char errbuf[CURL_ERROR_SIZE];
};

/* ---- formatting --------------------------------------------------------------------------- */

static bool plain_ascii(const char *s)
{
	for (const unsigned char *p = (const unsigned char *)s; *p; p++)
		if (*p < 0x20 || *p > 0x7e)
			return false;
	return true;
}

/* S as RFC 2047 encoded words (UTF-8, base64), folded: each word at most 75 characters. */
static void put_encoded(FILE *f, const char *s)
{
	size_t n = strlen(s), i = 0;
	bool first = true;
	while (i < n) {
		size_t k = n - i < 45 ? n - i : 45;
		/* never split a UTF-8 sequence */
		while (k > 0 && i + k < n && ((unsigned char)s[i + k] & 0xc0) == 0x80)
			k--;
		if (k == 0)
			k = n - i < 45 ? n - i : 45;
		unsigned char b64[64];
		EVP_EncodeBlock(b64, (const unsigned char *)s + i, (int)k);
		fprintf(f, "%s=?UTF-8?B?%s?=", first ? "" : "\r\n ", b64);
		first = false;
		i += k;
	}
}

static void put_text_header(FILE *f, const char *name, const char *value)
{
	fprintf(f, "%s: ", name);
	if (plain_ascii(value) && strlen(value) < 900)
		fputs(value, f);
	else
		put_encoded(f, value);
	fputs("\r\n", f);
}

/* A Message-ID we may write between <>: no white space, controls or angle brackets. */
static bool id_ok(const char *id)
{
	if (!id || !*id || strlen(id) > RELAY_MAX_ID_CHARS)
		return false;
	for (const unsigned char *p = (const unsigned char *)id; *p; p++)
		if (*p <= 0x20 || *p >= 0x7f || *p == '<' || *p == '>')
			return false;
	return true;
}

/* An address we may write between <> (the store normalised it; this is a last check). */
static bool addr_ok(const char *a)
{
	return a && *a && strlen(a) <= 320 && strchr(a, '@') && id_ok(a);
}

char *email_reply_format(const json_t *p, long long now, size_t *len_r)
{
	const char *from = json_string_value(json_object_get(p, "from"));
	const char *to = json_string_value(json_object_get(p, "to"));
	const char *mid = json_string_value(json_object_get(p, "message_id"));
	if (!addr_ok(from) || !addr_ok(to) || !id_ok(mid))
		return NULL;
	const char *from_name = json_string_value(json_object_get(p, "from_name"));
	const char *to_name = json_string_value(json_object_get(p, "to_name"));
	const char *subject = json_string_value(json_object_get(p, "subject"));
	const char *irt = json_string_value(json_object_get(p, "in_reply_to"));
	const char *body = json_string_value(json_object_get(p, "body"));
	char *out = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&out, &len);
	if (!f)
		abort();
	if (from_name && *from_name && plain_ascii(from_name) && !strpbrk(from_name, "\"\\"))
		fprintf(f, "From: \"%s\" <%s>\r\n", from_name, from);
	else if (from_name && *from_name) {
		fputs("From: ", f);
		put_encoded(f, from_name);
		fprintf(f, " <%s>\r\n", from);
	} else
		fprintf(f, "From: <%s>\r\n", from);
	if (to_name && *to_name && plain_ascii(to_name) && !strpbrk(to_name, "\"\\"))
		fprintf(f, "To: \"%s\" <%s>\r\n", to_name, to);
	else if (to_name && *to_name) {
		fputs("To: ", f);
		put_encoded(f, to_name);
		fprintf(f, " <%s>\r\n", to);
	} else
		fprintf(f, "To: <%s>\r\n", to);
	put_text_header(f, "Subject", subject ? subject : "");
	time_t t = (time_t)now;
	struct tm tm;
	gmtime_r(&t, &tm);
	static const char *const wd[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
	static const char *const mo[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
					 "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
	fprintf(f, "Date: %s, %02d %s %04d %02d:%02d:%02d +0000\r\n", wd[tm.tm_wday], tm.tm_mday,
		mo[tm.tm_mon], tm.tm_year + 1900, tm.tm_hour, tm.tm_min, tm.tm_sec);
	fprintf(f, "Message-ID: <%s>\r\n", mid);
	if (id_ok(irt))
		fprintf(f, "In-Reply-To: <%s>\r\n", irt);
	const json_t *refs = json_object_get(p, "references");
	size_t nref = json_array_size(refs), written = 0;
	for (size_t i = nref > RELAY_MAX_REFS ? nref - RELAY_MAX_REFS : 0; i < nref; i++) {
		const char *id = json_string_value(json_array_get(refs, i));
		if (!id_ok(id))
			continue;
		fprintf(f, "%s<%s>", written ? "\r\n " : "References: ", id);
		written++;
	}
	if (written)
		fputs("\r\n", f);
	fputs("MIME-Version: 1.0\r\nContent-Type: text/plain; charset=utf-8\r\n"
	      "Content-Transfer-Encoding: base64\r\n\r\n",
	      f);
	/* the body with CRLF line ends, base64 in lines of 76 */
	const char *b = body ? body : "";
	size_t bl = strlen(b), extra = 0;
	for (size_t i = 0; i < bl; i++)
		extra += b[i] == '\n' && (i == 0 || b[i - 1] != '\r');
	char *crlf = malloc(bl + extra + 1);
	if (!crlf)
		abort();
	size_t o = 0;
	for (size_t i = 0; i < bl; i++) {
		if (b[i] == '\n' && (i == 0 || b[i - 1] != '\r'))
			crlf[o++] = '\r';
		crlf[o++] = b[i];
	}
	for (size_t i = 0; i < o; i += 57) {
		unsigned char line[80];
		EVP_EncodeBlock(line, (const unsigned char *)crlf + i,
				(int)(o - i < 57 ? o - i : 57));
		fprintf(f, "%s\r\n", line);
	}
	free(crlf);
	fclose(f);
	*len_r = len;
	return out;
}

/* ---- curl on the loop ---------------------------------------------------------------------- */

static void check_done(struct email_relay *r);

static void on_socket_event(evutil_socket_t fd, short what, void *arg)
{
	struct email_relay *r = arg;
	int action =
	    ((what & EV_READ) ? CURL_CSELECT_IN : 0) | ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
	int running = 0;
	curl_multi_socket_action(r->multi, fd, action, &running);
	check_done(r);
}

static int sock_cb(CURL *easy, curl_socket_t s, int what, void *userp, void *socketp)
{
	struct email_relay *r = userp;
	struct event *ev = socketp;
	if (what == CURL_POLL_REMOVE) {
		if (ev) {
			event_free(ev);
			curl_multi_assign(r->multi, s, NULL);
		}
		return 0;
	}
	short kind = (short)(((what & CURL_POLL_IN) ? EV_READ : 0) |
			     ((what & CURL_POLL_OUT) ? EV_WRITE : 0) | EV_PERSIST);
	if (ev) {
		event_del(ev);
		event_assign(ev, r->app->base, s, kind, on_socket_event, r);
	} else {
		ev = event_new(r->app->base, s, kind, on_socket_event, r);
		if (!ev)
			abort();
		curl_multi_assign(r->multi, s, ev);
	}
	event_add(ev, NULL);
	return 0;
}

static void on_curl_timer(evutil_socket_t fd, short what, void *arg)
{
	struct email_relay *r = arg;
	int running = 0;
	curl_multi_socket_action(r->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_done(r);
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	struct email_relay *r = userp;
	if (timeout_ms < 0) {
		evtimer_del(r->curl_timer);
		return 0;
	}
	struct timeval tv = {timeout_ms / 1000, (timeout_ms % 1000) * 1000};
	evtimer_add(r->curl_timer, &tv);
	return 0;
}

/* ---- the outbox ------------------------------------------------------------------------------ */

static void send_free(struct send *s)
{
	struct email_relay *r = s->r;
	if (s->prev)
		s->prev->next = s->next;
	else
		r->sends = s->next;
	if (s->next)
		s->next->prev = s->prev;
	if (s->easy) {
		curl_multi_remove_handle(r->multi, s->easy);
		curl_easy_cleanup(s->easy);
	}
	curl_slist_free_all(s->rcpt);
	free(s->data);
	free(s);
	r->sending--;
}

static void done_cb(void *arg, const struct store_reply *rep)
{
	struct email_relay *r = arg;
	json_t *res =
	    rep->status == STORE_OK && rep->value ? json_loads(rep->value, 0, NULL) : NULL;
	if (!res) {
		/* the row stays 'sending' until its lease ends; then it is tried again */
		log_warn("email_reply_unrecorded", "status=%d", (int)rep->status);
		return;
	}
	const char *state = json_string_value(json_object_get(res, "state"));
	int64_t agent = json_integer_value(json_object_get(res, "agent"));
	if (state && strcmp(state, "failed") == 0 && agent > 0 && r->app->chat) {
		chat_notify_agent(r->app->chat, agent,
				  json_pack("{s:s, s:O, s:O, s:s, s:O}", "type", "delivery_failed",
					    "conversation", json_object_get(res, "conversation"),
					    "message", json_object_get(res, "message"), "channel",
					    "email", "error", json_object_get(res, "error")));
	}
	json_decref(res);
}

static void report(struct email_relay *r, struct send *s, bool ok, bool permanent,
		   const char *error)
{
	const struct config *cfg = r->app->cfg;
	if (ok) {
		log_info("email_reply_sent",
			 "outbox=%" PRId64 " conversation=%" PRId64 " message=%" PRId64
			 " attempts=%ld",
			 s->id, s->conversation, s->message, s->attempts);
	} else {
		char q[300];
		log_warn("email_reply_failed",
			 "outbox=%" PRId64 " conversation=%" PRId64 " attempts=%ld permanent=%s "
			 "error=%s",
			 s->id, s->conversation, s->attempts, permanent ? "true" : "false",
			 log_quote(q, sizeof(q), error ? error : "-"));
	}
	json_t *p = json_pack("{s:I, s:b, s:b, s:s?, s:I, s:I}", "id", (json_int_t)s->id, "ok", ok,
			      "permanent", permanent, "error", error, "retry_base_s",
			      (json_int_t)cfg->email_retry_base_s, "max_attempts",
			      (json_int_t)cfg->email_max_attempts);
	if (store_call_json(r->app->store, STORE_Q_EMAIL_DONE, p, done_cb, r) < 0)
		log_warn("email_reply_unrecorded", "outbox=%" PRId64 " status=unavailable", s->id);
}

static void check_done(struct email_relay *r)
{
	CURLMsg *msg;
	int left = 0;
	while ((msg = curl_multi_info_read(r->multi, &left))) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		char *priv = NULL;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &priv);
		struct send *s = (struct send *)priv;
		CURLcode res = msg->data.result;
		long code = 0;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_RESPONSE_CODE, &code);
		if (res == CURLE_OK) {
			report(r, s, true, false, NULL);
		} else {
			char err[400];
			snprintf(err, sizeof(err), "%s%s%s (smtp %ld)", curl_easy_strerror(res),
				 s->errbuf[0] ? ": " : "", s->errbuf, code);
			/* a 5xx answer is the relay's final word; anything else may pass later */
			report(r, s, false, code >= 500 && code < 600, err);
		}
		send_free(s);
	}
}

static size_t read_cb(char *buf, size_t size, size_t nmemb, void *arg)
{
	struct send *s = arg;
	size_t n = size * nmemb;
	if (n > s->len - s->off)
		n = s->len - s->off;
	memcpy(buf, s->data + s->off, n);
	s->off += n;
	return n;
}

static void start_send(struct email_relay *r, const json_t *row)
{
	const char *relay = r->app->cfg->email_relay;
	struct send *s = calloc(1, sizeof(*s));
	if (!s)
		abort();
	s->r = r;
	s->id = json_integer_value(json_object_get(row, "id"));
	s->conversation = json_integer_value(json_object_get(row, "conversation"));
	s->message = json_integer_value(json_object_get(row, "message"));
	s->attempts = (long)json_integer_value(json_object_get(row, "attempts"));
	s->next = r->sends;
	if (r->sends)
		r->sends->prev = s;
	r->sends = s;
	r->sending++;
	const json_t *p = json_object_get(row, "payload");
	s->data = email_reply_format(p, (long long)time(NULL), &s->len);
	if (!s->data || s->len > RELAY_MAX_MAIL) {
		report(r, s, false, true, "the reply cannot be formatted (address or Message-ID)");
		send_free(s);
		return;
	}
	snprintf(s->to, sizeof(s->to), "<%s>", json_string_value(json_object_get(p, "to")));
	char from[330], url[600];
	snprintf(from, sizeof(from), "<%s>", json_string_value(json_object_get(p, "from")));
	/* the URL's path is the EHLO name */
	snprintf(url, sizeof(url), "%s/%s", relay, r->hostname);
	s->rcpt = curl_slist_append(NULL, s->to);
	s->easy = curl_easy_init();
	if (!s->easy || !s->rcpt) {
		report(r, s, false, false, "out of memory");
		send_free(s);
		return;
	}
	CURL *e = s->easy;
	curl_easy_setopt(e, CURLOPT_URL, url);
	curl_easy_setopt(e, CURLOPT_MAIL_FROM, from);
	curl_easy_setopt(e, CURLOPT_MAIL_RCPT, s->rcpt);
	curl_easy_setopt(e, CURLOPT_UPLOAD, 1L);
	curl_easy_setopt(e, CURLOPT_INFILESIZE_LARGE, (curl_off_t)s->len);
	curl_easy_setopt(e, CURLOPT_READFUNCTION, read_cb);
	curl_easy_setopt(e, CURLOPT_READDATA, s);
	/* smtp://: STARTTLS when the relay offers it; smtps://: TLS from the first byte */
	curl_easy_setopt(e, CURLOPT_USE_SSL, (long)CURLUSESSL_TRY);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT, 30L);
	curl_easy_setopt(e, CURLOPT_TIMEOUT, (long)RELAY_TIMEOUT_S);
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_ERRORBUFFER, s->errbuf);
	curl_easy_setopt(e, CURLOPT_PRIVATE, s);
	if (curl_multi_add_handle(r->multi, e) != CURLM_OK) {
		curl_easy_cleanup(e);
		s->easy = NULL;
		report(r, s, false, false, "curl_multi_add_handle failed");
		send_free(s);
		return;
	}
	log_debug("email_reply_sending", "outbox=%" PRId64 " conversation=%" PRId64 " attempt=%ld",
		  s->id, s->conversation, s->attempts);
}

static void schedule(struct email_relay *r, long ms);

static void claim_cb(void *arg, const struct store_reply *rep)
{
	struct email_relay *r = arg;
	r->claiming = false;
	json_t *rows =
	    rep->status == STORE_OK && rep->value ? json_loads(rep->value, 0, NULL) : NULL;
	size_t n = json_array_size(rows);
	for (size_t i = 0; i < n; i++)
		start_send(r, json_array_get(rows, i));
	json_decref(rows);
	/* a full batch: more may be due */
	if (r->kicked || (n > 0 && r->sending < RELAY_PARALLEL))
		schedule(r, 0);
}

static void on_poll(evutil_socket_t fd, short what, void *arg)
{
	struct email_relay *r = arg;
	const struct config *cfg = r->app->cfg;
	schedule(r, RELAY_POLL_MS);
	if (!cfg->email_relay || !*cfg->email_relay) {
		if (r->kicked && !r->warned_off)
			log_warn("email_relay_off",
				 "reason=email.relay_empty action=replies_wait_in_outbox");
		r->warned_off = r->warned_off || r->kicked;
		r->kicked = false;
		return;
	}
	r->warned_off = false;
	if (r->claiming || r->sending >= RELAY_PARALLEL || !store_available(r->app->store) ||
	    r->app->draining)
		return;
	r->kicked = false;
	char lim[16], lease[16];
	snprintf(lim, sizeof(lim), "%u", RELAY_PARALLEL - r->sending);
	snprintf(lease, sizeof(lease), "%d", RELAY_LEASE_S);
	const char *params[2] = {lim, lease};
	if (store_call(r->app->store, STORE_Q_EMAIL_CLAIM, 2, params, claim_cb, r) == 0)
		r->claiming = true;
}

static void schedule(struct email_relay *r, long ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	evtimer_add(r->poll, &tv);
}

/* outbound "email": the reply is already in the outbox (a trigger wrote it with the
 * message); send it now rather than at the next poll. */
static int relay_outbound(void *arg, const struct outbound_msg *m)
{
	struct email_relay *r = arg;
	r->kicked = true;
	if (!r->claiming)
		schedule(r, 0);
	return 0;
}

static pthread_once_t curl_once = PTHREAD_ONCE_INIT;

static void curl_init_once(void)
{
	curl_global_init(CURL_GLOBAL_DEFAULT);
}

struct email_relay *email_relay_new(struct app *app, const char *hostname)
{
	pthread_once(&curl_once, curl_init_once);
	struct email_relay *r = calloc(1, sizeof(*r));
	if (!r)
		abort();
	r->app = app;
	snprintf(r->hostname, sizeof(r->hostname), "%s", hostname);
	r->multi = curl_multi_init();
	r->curl_timer = evtimer_new(app->base, on_curl_timer, r);
	r->poll = evtimer_new(app->base, on_poll, r);
	if (!r->multi || !r->curl_timer || !r->poll)
		abort();
	curl_multi_setopt(r->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
	curl_multi_setopt(r->multi, CURLMOPT_SOCKETDATA, r);
	curl_multi_setopt(r->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(r->multi, CURLMOPT_TIMERDATA, r);
	if (app->outbound)
		outbound_register(app->outbound, "email", relay_outbound, r);
	schedule(r, RELAY_POLL_MS);
	return r;
}

void email_relay_free(struct email_relay **pr)
{
	struct email_relay *r = *pr;
	if (!r)
		return;
	*pr = NULL;
	while (r->sends)
		send_free(r->sends);
	curl_multi_cleanup(r->multi);
	event_free(r->curl_timer);
	event_free(r->poll);
	free(r);
}
