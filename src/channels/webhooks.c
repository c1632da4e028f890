/* Webhook delivery (see webhooks.h): one target per configured URL, each a small state
 * machine: read a page of events after its cursor -> POST the next one -> on 2xx move the
 * durable cursor (cd_webhook_ack) -> next; on failure back off and POST the same event. */
#include "contactd/webhooks.h"

#include "contactd/app.h"
#include "contactd/config.h"
#include "contactd/log.h"
#include "contactd/outbound.h"
#include "contactd/store.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <inttypes.h>
#include <jansson.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/queue.h>

#define WH_MAX_URLS	  64
#define WH_MAX_URL_LEN	  2048
#define WH_READ_LIMIT	  100	      /* events per read of the log */
#define WH_READ_BYTES	  (256 << 10) /* ... and about this much data */
#define WH_IDLE_POLL_MS	  250	      /* a caught-up target looks for new events this often */
#define WH_STORE_RETRY_MS 1000	      /* a store call that could not run is retried after this */
#define WH_BACKOFF_MIN_MS 1000
#define WH_BACKOFF_MAX_MS 300000
#define WH_CONNECT_TMO_MS 5000
#define WH_TOTAL_TMO_MS	  15000
#define WH_MAX_RESPONSE	  65536 /* response bodies are read and dropped up to this */
#define WH_SIG_HEADER_MAX 128

enum target_state {
	T_IDLE,	   /* waiting on its timer (poll, backoff, store retry) */
	T_READING, /* cd_stream_read at the store */
	T_SENDING, /* a POST in flight */
	T_ACKING,  /* cd_webhook_ack at the store */
};

struct webhooks;

struct target {
	struct webhooks *w;
	TAILQ_ENTRY(target) link;
	char *url;
	enum target_state state;
	bool at_store;	  /* a read or an ack is at the store */
	bool orphan;	  /* removed while at_store: the store callback frees it */
	int64_t cursor;	  /* durable: the newest event acknowledged by the receiver */
	int64_t read_pos; /* where the next read of the log starts (>= cursor) */
	json_t *page;	  /* events read and not yet delivered */
	size_t next;	  /* index into page of the event being delivered */
	int attempts;	  /* consecutive failures of the current event */
	struct event *timer;
	CURL *easy;
	struct curl_slist *headers;
	char *body;
	size_t response_bytes;
};
TAILQ_HEAD(target_list, target);

struct sockinfo {
	struct webhooks *w;
	struct event *ev;
	curl_socket_t fd;
	LIST_ENTRY(sockinfo) link;
};

LIST_HEAD(sock_list, sockinfo);

struct webhooks {
	struct app *app;
	CURLM *multi;
	struct event *curl_timer;
	struct event *start_timer; /* retries cd_webhook_start */
	struct sock_list socks;
	struct target_list targets;
	char *urls[WH_MAX_URLS]; /* the configured list */
	int nurls;
	char *secret;
	bool ready, starting, draining;
	bool warned_no_urls; /* outbound_no_webhooks logged (once while no URL is set) */
	bool had_urls;	     /* some URL was configured since start: cd_webhook_start owns
			      * the cursors (removing every URL deletes them) */
	unsigned acks_in_flight, posts_in_flight;
	unsigned long long delivered, failed_attempts, replies;
};

/* The channels whose conversations are opened by POST /v1/events: the integrator delivers
 * agent replies on them, from the message.out events of the log (sql/0010_stream.sql). */
static const char *const api_channels[] = {"sms", "whatsapp", "social", "web", "api"};

struct webhooks_reload {
	char *urls[WH_MAX_URLS];
	int nurls;
	char *secret;
};

static void add_after_ms(struct event *ev, long ms)
{
	struct timeval tv = {ms / 1000, (ms % 1000) * 1000};
	evtimer_add(ev, &tv);
}

/* Splits webhooks.urls (comma separated, blanks around items ignored) into URLS (strdup'd);
 * returns the count (at most WH_MAX_URLS; duplicates dropped). */
static int parse_urls(const char *list, char **urls)
{
	int n = 0;
	const char *p = list;
	while (p && *p && n < WH_MAX_URLS) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);
		const char *a = p;
		while (len > 0 && (*a == ' ' || *a == '\t')) {
			a++;
			len--;
		}
		while (len > 0 && (a[len - 1] == ' ' || a[len - 1] == '\t'))
			len--;
		if (len > 0 && len <= WH_MAX_URL_LEN) {
			bool dup = false;
			for (int i = 0; i < n && !dup; i++)
				dup = strlen(urls[i]) == len && strncmp(urls[i], a, len) == 0;
			if (!dup)
				urls[n++] = strndup(a, len);
		}
		p = end ? end + 1 : NULL;
	}
	return n;
}

/* URL as a quoted log value, without what may be a credential: user:password@ becomes
 * ***@ and a query string ?*** (the host and path still tell URLs apart). */
static const char *log_url(char *buf, unsigned n, const char *url)
{
	char tmp[WH_MAX_URL_LEN + 16];
	const char *p = strstr(url, "://");
	size_t host = p ? (size_t)(p - url) + 3 : 0;
	size_t auth_end = host + strcspn(url + host, "/?#");
	const char *at = memchr(url + host, '@', auth_end - host);
	size_t len = 0;
	if (at) {
		len = (size_t)snprintf(tmp, sizeof(tmp), "%.*s***%s", (int)host, url, at);
	} else {
		len = (size_t)snprintf(tmp, sizeof(tmp), "%s", url);
	}
	if (len >= sizeof(tmp))
		len = sizeof(tmp) - 1;
	char *q = memchr(tmp, '?', len);
	if (q)
		snprintf(q, sizeof(tmp) - (size_t)(q - tmp), "?***");
	return log_quote(buf, n, tmp);
}

static bool url_configured(const struct webhooks *w, const char *url)
{
	for (int i = 0; i < w->nurls; i++)
		if (strcmp(w->urls[i], url) == 0)
			return true;
	return false;
}

static struct target *find_target(struct webhooks *w, const char *url)
{
	for (struct target *t = TAILQ_FIRST(&w->targets); t; t = TAILQ_NEXT(t, link))
		if (strcmp(t->url, url) == 0)
			return t;
	return NULL;
}

/* ---- libcurl on the event loop ------------------------------------------------------- */

static void check_done(struct webhooks *w);

static void sock_event_cb(evutil_socket_t fd, short what, void *arg)
{
	struct sockinfo *si = arg;
	struct webhooks *w = si->w;
	int flags =
	    ((what & EV_READ) ? CURL_CSELECT_IN : 0) | ((what & EV_WRITE) ? CURL_CSELECT_OUT : 0);
	int running = 0;
	curl_multi_socket_action(w->multi, fd, flags, &running); /* may free SI */
	check_done(w);
}

/* CURLMOPT_SOCKETFUNCTION: keeps one libevent event per socket libcurl wants watched. */
static int sock_cb(CURL *easy, curl_socket_t fd, int what, void *userp, void *socketp)
{
	struct webhooks *w = userp;
	struct sockinfo *si = socketp;
	if (what == CURL_POLL_REMOVE) {
		if (si) {
			if (si->ev)
				event_free(si->ev);
			LIST_REMOVE(si, link);
			free(si);
			curl_multi_assign(w->multi, fd, NULL);
		}
		return 0;
	}
	short kind = (short)(EV_PERSIST | ((what & CURL_POLL_IN) ? EV_READ : 0) |
			     ((what & CURL_POLL_OUT) ? EV_WRITE : 0));
	if (!si) {
		si = calloc(1, sizeof(*si));
		if (!si)
			return -1;
		si->w = w;
		si->fd = fd;
		LIST_INSERT_HEAD(&w->socks, si, link);
		curl_multi_assign(w->multi, fd, si);
	} else if (si->ev) {
		event_free(si->ev);
	}
	si->ev = event_new(w->app->base, fd, kind, sock_event_cb, si);
	if (!si->ev)
		return -1;
	event_add(si->ev, NULL);
	return 0;
}

static void curl_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct webhooks *w = arg;
	int running = 0;
	curl_multi_socket_action(w->multi, CURL_SOCKET_TIMEOUT, 0, &running);
	check_done(w);
}

/* CURLMOPT_TIMERFUNCTION: one libevent timer stands for libcurl's single timeout. */
static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	struct webhooks *w = userp;
	if (timeout_ms < 0)
		evtimer_del(w->curl_timer);
	else
		add_after_ms(w->curl_timer, timeout_ms);
	return 0;
}

static size_t discard_cb(char *ptr, size_t size, size_t nmemb, void *userdata)
{
	struct target *t = userdata;
	size_t n = size * nmemb;
	t->response_bytes += n;
	return t->response_bytes > WH_MAX_RESPONSE ? 0 : n; /* 0 aborts an endless reply */
}

/* ---- one target ---------------------------------------------------------------------- */

static void step(struct target *t);

static void target_end_transfer(struct target *t)
{
	if (t->easy) {
		t->w->posts_in_flight--;
		curl_multi_remove_handle(t->w->multi, t->easy);
		curl_easy_cleanup(t->easy);
		t->easy = NULL;
	}
	curl_slist_free_all(t->headers);
	t->headers = NULL;
	free(t->body);
	t->body = NULL;
}

/* Frees T now, or marks it for the store callback that still holds it. */
static void target_free(struct target *t)
{
	target_end_transfer(t);
	evtimer_del(t->timer);
	if (t->at_store) {
		t->orphan = true;
		return;
	}
	event_free(t->timer);
	json_decref(t->page);
	free(t->url);
	free(t);
}

static void target_remove(struct target *t)
{
	TAILQ_REMOVE(&t->w->targets, t, link);
	target_free(t);
}

static void timer_fire(evutil_socket_t fd, short what, void *arg)
{
	step(arg);
}

static long backoff_ms(int attempts)
{
	long ms = WH_BACKOFF_MIN_MS;
	for (int i = 1; i < attempts && ms < WH_BACKOFF_MAX_MS; i++)
		ms *= 2;
	if (ms > WH_BACKOFF_MAX_MS)
		ms = WH_BACKOFF_MAX_MS;
	unsigned r = 0;
	if (RAND_bytes((unsigned char *)&r, sizeof(r)) != 1)
		r = 0;
	long jitter = ms / 5; /* +-20 % */
	return ms - jitter + (long)(r % (unsigned)(2 * jitter + 1));
}

static void failed_cb(void *arg, const struct store_reply *rep)
{
	/* bookkeeping only (the backoff survives a restart); nothing waits on it */
}

static void attempt_failed(struct target *t, long status, const char *error)
{
	struct webhooks *w = t->w;
	t->attempts++;
	w->failed_attempts++;
	long delay = backoff_ms(t->attempts);
	int64_t id = json_integer_value(json_object_get(json_array_get(t->page, t->next), "id"));
	char q[300];
	log_warn("webhook_failed",
		 "url=%s event=%" PRId64 " status=%ld attempt=%d retry_in_ms=%ld%s%s",
		 log_url(q, sizeof(q), t->url), id, status, t->attempts, delay,
		 error ? " error=" : "", error ? error : "");
	json_t *p =
	    json_pack("{s:s, s:i, s:I, s:i, s:s?}", "url", t->url, "attempts", t->attempts,
		      "retry_in_ms", (json_int_t)delay, "status", (int)status, "error", error);
	if (p)
		store_call_json(w->app->store, STORE_Q_WEBHOOK_FAILED, p, failed_cb, NULL);
	t->state = T_IDLE;
	add_after_ms(t->timer, delay);
}

static void ack_cb(void *arg, const struct store_reply *rep)
{
	struct target *t = arg;
	struct webhooks *w = t->w;
	w->acks_in_flight--;
	t->at_store = false;
	t->state = T_IDLE;
	if (t->orphan) {
		target_free(t);
		return;
	}
	if (rep->status == STORE_NOT_FOUND) { /* the URL was removed meanwhile */
		target_remove(t);
		return;
	}
	if (rep->status != STORE_OK) {
		/* the receiver has it; only the cursor is behind: ack again (POST not resent) */
		t->state = T_ACKING;
		add_after_ms(t->timer, WH_STORE_RETRY_MS);
		return;
	}
	int64_t id = json_integer_value(json_object_get(json_array_get(t->page, t->next), "id"));
	t->cursor = id;
	t->attempts = 0;
	t->next++;
	w->delivered++;
	step(t);
}

static void send_ack(struct target *t)
{
	struct webhooks *w = t->w;
	int64_t id = json_integer_value(json_object_get(json_array_get(t->page, t->next), "id"));
	json_t *p = json_pack("{s:s, s:I}", "url", t->url, "id", (json_int_t)id);
	t->state = T_ACKING;
	t->at_store = true;
	w->acks_in_flight++;
	if (!p || store_call_json(w->app->store, STORE_Q_WEBHOOK_ACK, p, ack_cb, t) < 0) {
		t->at_store = false;
		w->acks_in_flight--;
		add_after_ms(t->timer, WH_STORE_RETRY_MS); /* state stays T_ACKING: step acks */
	}
}

static void transfer_done(struct target *t, CURLcode rc)
{
	long status = 0;
	curl_easy_getinfo(t->easy, CURLINFO_RESPONSE_CODE, &status);
	char err[CURL_ERROR_SIZE + 4];
	snprintf(err, sizeof(err), "\"%s\"", curl_easy_strerror(rc));
	target_end_transfer(t);
	if (rc == CURLE_OK && status >= 200 && status <= 299) {
		send_ack(t);
		return;
	}
	attempt_failed(t, status, rc == CURLE_OK ? NULL : err);
}

static void check_done(struct webhooks *w)
{
	CURLMsg *msg;
	int left;
	while ((msg = curl_multi_info_read(w->multi, &left)) != NULL) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		struct target *t = NULL;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, (char **)&t);
		if (t)
			transfer_done(t, msg->data.result);
	}
}

/* Hex HMAC-SHA256 of BODY with the secret into OUT (65 bytes). */
static void sign(const struct webhooks *w, const char *body, char out[65])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned len = 0;
	HMAC(EVP_sha256(), w->secret, (int)strlen(w->secret), (const unsigned char *)body,
	     strlen(body), md, &len);
	static const char hex[] = "0123456789abcdef";
	for (unsigned i = 0; i < len && i < 32; i++) {
		out[2 * i] = hex[md[i] >> 4];
		out[2 * i + 1] = hex[md[i] & 15];
	}
	out[64] = '\0';
}

static void send_event(struct target *t)
{
	struct webhooks *w = t->w;
	json_t *ev = json_array_get(t->page, t->next);
	int64_t id = json_integer_value(json_object_get(ev, "id"));
	t->body = json_dumps(ev, JSON_COMPACT);
	CURL *easy = curl_easy_init();
	if (!t->body || !easy) {
		if (easy)
			curl_easy_cleanup(easy);
		target_end_transfer(t);
		attempt_failed(t, 0, "\"out of memory\"");
		return;
	}
	char sig[65], h1[WH_SIG_HEADER_MAX], h2[64];
	sign(w, t->body, sig);
	snprintf(h1, sizeof(h1), "X-Contactd-Signature: sha256=%s", sig);
	snprintf(h2, sizeof(h2), "X-Contactd-Event-Id: %" PRId64, id);
	struct curl_slist *h = curl_slist_append(NULL, "Content-Type: application/json");
	h = h ? curl_slist_append(h, h1) : NULL;
	h = h ? curl_slist_append(h, h2) : NULL;
	h = h ? curl_slist_append(h, "Expect:") : NULL; /* no 100-continue round trip */
	h = h ? curl_slist_append(h, "User-Agent: contactd/" CONTACTD_VERSION) : NULL;
	t->headers = h;
	if (!h) {
		curl_easy_cleanup(easy);
		target_end_transfer(t);
		attempt_failed(t, 0, "\"out of memory\"");
		return;
	}
	t->response_bytes = 0;
	t->easy = easy;
	CURL *e = easy;
	curl_easy_setopt(e, CURLOPT_URL, t->url);
	curl_easy_setopt(e, CURLOPT_PROTOCOLS_STR, "http,https");
	curl_easy_setopt(e, CURLOPT_NOSIGNAL, 1L);
	curl_easy_setopt(e, CURLOPT_POST, 1L);
	curl_easy_setopt(e, CURLOPT_POSTFIELDS, t->body);
	curl_easy_setopt(e, CURLOPT_POSTFIELDSIZE, (long)strlen(t->body));
	curl_easy_setopt(e, CURLOPT_HTTPHEADER, t->headers);
	curl_easy_setopt(e, CURLOPT_CONNECTTIMEOUT_MS, (long)WH_CONNECT_TMO_MS);
	curl_easy_setopt(e, CURLOPT_TIMEOUT_MS, (long)WH_TOTAL_TMO_MS);
	curl_easy_setopt(e, CURLOPT_WRITEFUNCTION, discard_cb);
	curl_easy_setopt(e, CURLOPT_WRITEDATA, t);
	curl_easy_setopt(e, CURLOPT_PRIVATE, t);
	if (log_enabled(LOG_LEVEL_DEBUG)) {
		char q[300];
		log_debug("webhook_post", "url=%s event=%" PRId64 " attempt=%d bytes=%zu",
			  log_url(q, sizeof(q), t->url), id, t->attempts + 1, strlen(t->body));
	}
	t->state = T_SENDING;
	w->posts_in_flight++;
	if (curl_multi_add_handle(w->multi, e) != CURLM_OK) {
		target_end_transfer(t);
		attempt_failed(t, 0, "\"curl_multi_add_handle failed\"");
	}
}

static void read_cb(void *arg, const struct store_reply *rep)
{
	struct target *t = arg;
	t->state = T_IDLE;
	t->at_store = false;
	if (t->orphan) {
		target_free(t);
		return;
	}
	json_t *res =
	    rep->status == STORE_OK && rep->value ? json_loads(rep->value, 0, NULL) : NULL;
	if (!res) {
		if (rep->status != STORE_UNAVAILABLE)
			log_warn("webhook_read_failed", "status=%d", rep->status);
		add_after_ms(t->timer, WH_STORE_RETRY_MS);
		return;
	}
	json_t *events = json_object_get(res, "events");
	int64_t last = json_integer_value(json_object_get(res, "last"));
	if (json_integer_value(json_object_get(res, "stale_skips")) > 0) {
		char q[300];
		log_warn("webhook_gap_stale",
			 "url=%s after=%" PRId64
			 " reason=\"a transaction open over 60 s kept a gap; skipped\"",
			 log_url(q, sizeof(q), t->url), t->read_pos);
	}
	if (last > t->read_pos)
		t->read_pos = last;
	json_decref(t->page);
	t->page = json_is_array(events) ? json_incref(events) : NULL;
	t->next = 0;
	json_decref(res);
	if (json_array_size(t->page) == 0) {
		add_after_ms(t->timer, WH_IDLE_POLL_MS);
		return;
	}
	step(t);
}

/* Moves T on from T_IDLE (or a T_ACKING that must be retried). */
static void step(struct target *t)
{
	struct webhooks *w = t->w;
	if (w->draining)
		return;
	if (t->state == T_ACKING) {
		send_ack(t);
		return;
	}
	if (t->state != T_IDLE)
		return;
	if (t->next < json_array_size(t->page)) {
		send_event(t);
		return;
	}
	t->state = T_READING;
	t->at_store = true;
	if (store_stream_read(w->app->store, t->read_pos, WH_READ_LIMIT, WH_READ_BYTES, read_cb,
			      t) < 0) {
		t->at_store = false;
		t->state = T_IDLE;
		add_after_ms(t->timer, WH_STORE_RETRY_MS);
	}
}

/* ---- start and reload ---------------------------------------------------------------- */

static void start(struct webhooks *w);

static void start_cb(void *arg, const struct store_reply *rep)
{
	struct webhooks *w = arg;
	w->starting = false;
	json_t *res =
	    rep->status == STORE_OK && rep->value ? json_loads(rep->value, 0, NULL) : NULL;
	if (!res) {
		log_warn("webhook_start_failed", "status=%d retry_in_ms=%d", rep->status,
			 WH_STORE_RETRY_MS);
		add_after_ms(w->start_timer, WH_STORE_RETRY_MS);
		return;
	}
	size_t i;
	json_t *c;
	json_array_foreach(json_object_get(res, "cursors"), i, c)
	{
		const char *url = json_string_value(json_object_get(c, "url"));
		if (!url || !url_configured(w, url) || find_target(w, url))
			continue;
		struct target *t = calloc(1, sizeof(*t));
		if (!t)
			break;
		t->timer = evtimer_new(w->app->base, timer_fire, t);
		t->url = strdup(url);
		if (!t->timer || !t->url) {
			if (t->timer)
				event_free(t->timer);
			free(t->url);
			free(t);
			break;
		}
		t->w = w;
		t->cursor = t->read_pos = json_integer_value(json_object_get(c, "last_id"));
		t->attempts = (int)json_integer_value(json_object_get(c, "attempts"));
		TAILQ_INSERT_TAIL(&w->targets, t, link);
		char q[300];
		log_info("webhook_started", "url=%s after=%" PRId64 " attempts=%d",
			 log_url(q, sizeof(q), url), t->cursor, t->attempts);
		add_after_ms(t->timer, (long)json_integer_value(json_object_get(c, "retry_in_ms")));
	}
	json_decref(res);
}

static void start(struct webhooks *w)
{
	if (w->starting || w->draining)
		return;
	/* a process that never had a URL leaves webhook_cursors alone: another node sharing
	 * the database may be the one that delivers */
	if (w->nurls == 0 && !w->had_urls)
		return;
	w->had_urls = w->had_urls || w->nurls > 0;
	json_t *urls = json_array();
	for (int i = 0; i < w->nurls; i++)
		json_array_append_new(urls, json_string(w->urls[i]));
	json_t *p = json_pack("{s:o}", "urls", urls);
	w->starting = true;
	if (!p || store_call_json(w->app->store, STORE_Q_WEBHOOK_START, p, start_cb, w) < 0) {
		w->starting = false;
		add_after_ms(w->start_timer, WH_STORE_RETRY_MS);
	}
}

static void start_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	start(arg);
}

void webhooks_store_ready(struct webhooks *w)
{
	if (!w || w->ready)
		return;
	w->ready = true;
	start(w);
}

struct webhooks_reload *webhooks_reload_prepare(struct webhooks *w, const struct config *cfg,
						char **error_r)
{
	struct webhooks_reload *rl = calloc(1, sizeof(*rl));
	if (!rl)
		abort();
	rl->nurls = parse_urls(cfg->webhooks_urls, rl->urls);
	rl->secret = strdup(cfg->webhooks_secret);
	if (!rl->secret)
		abort();
	return rl;
}

void webhooks_reload_abort(struct webhooks *w, struct webhooks_reload *rl)
{
	for (int i = 0; i < rl->nurls; i++)
		free(rl->urls[i]);
	free(rl->secret);
	free(rl);
}

void webhooks_reload_commit(struct webhooks *w, struct webhooks_reload *rl)
{
	for (int i = 0; i < w->nurls; i++)
		free(w->urls[i]);
	memcpy(w->urls, rl->urls, sizeof(w->urls));
	w->nurls = rl->nurls;
	if (w->nurls > 0)
		w->warned_no_urls = false; /* a later removal of every URL is said again */
	free(w->secret);
	w->secret = rl->secret;
	free(rl);
	struct target *t, *next;
	for (t = TAILQ_FIRST(&w->targets); t; t = next) {
		next = TAILQ_NEXT(t, link);
		if (!url_configured(w, t->url)) {
			char q[300];
			log_info("webhook_stopped", "url=%s cursor=%" PRId64,
				 log_url(q, sizeof(q), t->url), t->cursor);
			target_remove(t);
		}
	}
	if (w->ready)
		start(w); /* new URLs get a cursor at the head; removed ones lose theirs */
}

/* ---- outbound: replies on API channels --------------------------------------------------- */

/* outbound_fn for the API channels. The reply is already durable: the transaction that
 * stored it also logged its message.out event (the webhook outbox), so handing it over
 * only records that; delivery to every URL follows from the log, at least once. With no
 * URL configured the reply stays stored and visible on GET /v1/stream: said once. */
static int api_outbound(void *arg, const struct outbound_msg *m)
{
	struct webhooks *w = arg;
	w->replies++;
	if (w->nurls == 0) {
		if (!w->warned_no_urls)
			log_warn("outbound_no_webhooks",
				 "channel=%s conversation=%lld message=%lld "
				 "hint=\"stored and on GET /v1/stream; set webhooks.urls to have "
				 "replies POSTed\"",
				 m->channel, (long long)m->conversation, (long long)m->message);
		w->warned_no_urls = true;
		return 0;
	}
	log_info("outbound_queued",
		 "channel=%s conversation=%lld message=%lld via=webhooks urls=%d", m->channel,
		 (long long)m->conversation, (long long)m->message, w->nurls);
	return 0;
}

/* ---- life ---------------------------------------------------------------------------- */

struct webhooks *webhooks_new(struct app *app)
{
	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		log_error("webhooks_init_failed", "reason=\"curl_global_init\"");
		return NULL;
	}
	struct webhooks *w = calloc(1, sizeof(*w));
	if (!w)
		return NULL;
	w->app = app;
	TAILQ_INIT(&w->targets);
	LIST_INIT(&w->socks);
	w->multi = curl_multi_init();
	w->curl_timer = evtimer_new(app->base, curl_timer_cb, w);
	w->start_timer = evtimer_new(app->base, start_timer_cb, w);
	if (!w->multi || !w->curl_timer || !w->start_timer) {
		log_error("webhooks_init_failed", "reason=\"curl_multi_init\"");
		webhooks_free(&w);
		return NULL;
	}
	curl_multi_setopt(w->multi, CURLMOPT_SOCKETFUNCTION, sock_cb);
	curl_multi_setopt(w->multi, CURLMOPT_SOCKETDATA, w);
	curl_multi_setopt(w->multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(w->multi, CURLMOPT_TIMERDATA, w);
	w->nurls = parse_urls(app->cfg->webhooks_urls, w->urls);
	w->secret = strdup(app->cfg->webhooks_secret);
	if (!w->secret) {
		webhooks_free(&w);
		return NULL;
	}
	for (size_t i = 0; i < sizeof(api_channels) / sizeof(api_channels[0]); i++)
		if (app->outbound &&
		    outbound_register(app->outbound, api_channels[i], api_outbound, w) < 0)
			log_warn("outbound_register_failed", "channel=%s", api_channels[i]);
	return w;
}

void webhooks_drain(struct webhooks *w)
{
	if (!w || w->draining)
		return;
	w->draining = true;
	evtimer_del(w->start_timer);
	for (struct target *t = TAILQ_FIRST(&w->targets); t; t = TAILQ_NEXT(t, link))
		evtimer_del(t->timer);
}

unsigned webhooks_in_flight(const struct webhooks *w)
{
	return w ? w->acks_in_flight + w->posts_in_flight : 0;
}

void webhooks_free(struct webhooks **wp)
{
	struct webhooks *w = *wp;
	if (!w)
		return;
	*wp = NULL;
	struct target *t;
	while ((t = TAILQ_FIRST(&w->targets)) != NULL) {
		t->at_store = false; /* the store was freed first: no callback will come */
		target_remove(t);
	}
	if (w->multi)
		curl_multi_cleanup(w->multi);
	struct sockinfo *si;
	while ((si = LIST_FIRST(&w->socks)) != NULL) {
		LIST_REMOVE(si, link);
		if (si->ev)
			event_free(si->ev);
		free(si);
	}
	if (w->start_timer)
		event_free(w->start_timer);
	if (w->curl_timer)
		event_free(w->curl_timer);
	for (int i = 0; i < w->nurls; i++)
		free(w->urls[i]);
	free(w->secret);
	free(w);
	curl_global_cleanup();
}

void webhooks_get_stats(const struct webhooks *w, struct webhooks_stats *st)
{
	memset(st, 0, sizeof(*st));
	if (!w)
		return;
	for (const struct target *t = TAILQ_FIRST(&w->targets); t; t = TAILQ_NEXT(t, link)) {
		st->urls++;
		if (t->attempts > 0)
			st->backlog_failing++;
	}
	st->delivered = w->delivered;
	st->failed_attempts = w->failed_attempts;
	st->replies = w->replies;
}
