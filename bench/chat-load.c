/* chat-load: N customer connections send chat messages to contactd's client listener and
 * time each acknowledgement (an `ok` is sent only after the message is committed). Prints
 * one JSON line: acknowledged messages/s and ack latency percentiles.
 *
 *   chat-load [--host H] [--port P] [--customers N] [--window W] [--seconds S]
 *             [--rate R] [--warmup S] [--label TEXT] [--samples FILE]
 *
 * --samples FILE writes every measured ack as "SENT LATENCY_MS", SENT in CLOCK_MONOTONIC
 * seconds (Python's time.monotonic()), to pick out a window afterwards.
 *
 * Closed loop by default: every customer keeps W messages in flight. With --rate R the
 * customers together send R messages/s (open loop, paced every millisecond), for latency
 * at a fixed load. */
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <getopt.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct cust {
	int idx;
	struct bufferevent *bev;
	int ready;
	uint64_t next_ref;
	int inflight;
	double *sent_at; /* by ref % window_cap */
};

static struct event_base *base;
static const char *host = "127.0.0.1";
static int port = 7400, ncust = 100, window = 1, seconds = 10, warmup = 2;
static double rate = 0;
static const char *label = "chat-load";
static struct cust *custs;
static double t_start, t_measure, t_end;
static uint64_t acked, errors, sent;
static double *lat, *lat_sent;
static size_t nlat, caplat;
static const char *samples_path;
static double tokens;
static int ready_count;

#define WINDOW_CAP 1024

static double now_s(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

static void send_msg(struct cust *c)
{
	uint64_t ref = c->next_ref++;
	c->sent_at[ref % WINDOW_CAP] = now_s();
	c->inflight++;
	sent++;
	evbuffer_add_printf(bufferevent_get_output(c->bev),
			    "{\"type\":\"message\",\"ref\":%llu,\"client_msg_id\":\"l%d-%llu\","
			    "\"body\":\"benchmark message %llu from customer %d: my invoice is "
			    "wrong\"}\n",
			    (unsigned long long)ref, c->idx, (unsigned long long)ref,
			    (unsigned long long)ref, c->idx);
}

static void read_cb(struct bufferevent *bev, void *arg)
{
	struct cust *c = arg;
	char *line;
	size_t n;
	while ((line = evbuffer_readln(bufferevent_get_input(bev), &n, EVBUFFER_EOL_LF))) {
		double t = now_s();
		if (!c->ready) {
			if (strstr(line, "\"type\":\"ok\"")) {
				c->ready = 1;
				ready_count++;
				if (rate == 0)
					for (int i = 0; i < window; i++)
						send_msg(c);
			} else {
				fprintf(stderr, "chat-load: hello refused: %s\n", line);
				exit(1);
			}
			free(line);
			continue;
		}
		char *r = strstr(line, "\"ref\":");
		if (!r) { /* a pushed event */
			free(line);
			continue;
		}
		uint64_t ref = strtoull(r + 6, NULL, 10);
		c->inflight--;
		if (strstr(line, "\"type\":\"ok\"")) {
			if (t >= t_measure && t < t_end) {
				acked++;
				if (nlat == caplat) {
					caplat = caplat ? caplat * 2 : 1 << 16;
					lat = realloc(lat, caplat * sizeof(*lat));
					lat_sent = realloc(lat_sent, caplat * sizeof(*lat_sent));
				}
				lat_sent[nlat] = c->sent_at[ref % WINDOW_CAP];
				lat[nlat++] = t - c->sent_at[ref % WINDOW_CAP];
			}
		} else {
			errors++;
		}
		free(line);
		if (rate == 0 && t < t_end)
			send_msg(c);
	}
}

static void event_cb(struct bufferevent *bev, short what, void *arg)
{
	if (what & (BEV_EVENT_ERROR | BEV_EVENT_EOF)) {
		fprintf(stderr, "chat-load: connection lost (%s)\n",
			what & BEV_EVENT_EOF ? "eof" : strerror(errno));
		exit(1);
	}
	if (what & BEV_EVENT_CONNECTED) {
		struct cust *c = arg;
		evbuffer_add_printf(bufferevent_get_output(bev),
				    "{\"type\":\"hello\",\"role\":\"customer\",\"name\":\"Load "
				    "%d\",\"ref\":0}\n",
				    c->idx);
	}
}

static void pace_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	static double last;
	double t = now_s();
	if (last == 0)
		last = t;
	tokens += rate * (t - last);
	last = t;
	static int rr;
	while (tokens >= 1 && t < t_end) {
		struct cust *c = &custs[rr++ % ncust];
		if (!c->ready || c->inflight >= WINDOW_CAP / 2)
			break;
		send_msg(c);
		tokens -= 1;
	}
}

static void stop_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	(void)arg;
	event_base_loopexit(base, NULL);
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
	static const struct option opts[] = {{"host", 1, 0, 'h'},      {"port", 1, 0, 'p'},
					     {"customers", 1, 0, 'n'}, {"window", 1, 0, 'w'},
					     {"seconds", 1, 0, 's'},   {"rate", 1, 0, 'r'},
					     {"warmup", 1, 0, 'W'},    {"label", 1, 0, 'l'},
					     {"samples", 1, 0, 'S'},   {0, 0, 0, 0}};
	int o;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'h':
			host = optarg;
			break;
		case 'p':
			port = atoi(optarg);
			break;
		case 'n':
			ncust = atoi(optarg);
			break;
		case 'w':
			window = atoi(optarg);
			break;
		case 's':
			seconds = atoi(optarg);
			break;
		case 'r':
			rate = atof(optarg);
			break;
		case 'W':
			warmup = atoi(optarg);
			break;
		case 'l':
			label = optarg;
			break;
		case 'S':
			samples_path = optarg;
			break;
		default:
			fprintf(stderr, "usage: chat-load [--host H] [--port P] [--customers N] "
					"[--window W] [--seconds S] [--rate R] [--warmup S] "
					"[--label TEXT] [--samples FILE]\n");
			return 2;
		}
	}
	if (window < 1 || window > WINDOW_CAP / 2 || ncust < 1)
		return 2;
	base = event_base_new();
	custs = calloc((size_t)ncust, sizeof(*custs));
	for (int i = 0; i < ncust; i++) {
		struct cust *c = &custs[i];
		c->idx = i;
		c->sent_at = calloc(WINDOW_CAP, sizeof(double));
		c->bev = bufferevent_socket_new(base, -1, BEV_OPT_CLOSE_ON_FREE);
		bufferevent_setcb(c->bev, read_cb, NULL, event_cb, c);
		bufferevent_enable(c->bev, EV_READ | EV_WRITE);
		if (bufferevent_socket_connect_hostname(c->bev, NULL, AF_INET, host, port) < 0) {
			fprintf(stderr, "chat-load: cannot connect\n");
			return 1;
		}
	}
	/* wait for every hello */
	double deadline = now_s() + 30;
	while (ready_count < ncust && now_s() < deadline)
		event_base_loop(base, EVLOOP_ONCE);
	if (ready_count < ncust) {
		fprintf(stderr, "chat-load: only %d of %d hellos answered\n", ready_count, ncust);
		return 1;
	}
	t_start = now_s();
	t_measure = t_start + warmup;
	t_end = t_measure + seconds;
	struct timeval stop = {warmup + seconds + 2, 0};
	event_base_once(base, -1, EV_TIMEOUT, stop_cb, NULL, &stop);
	struct event *pace = NULL;
	if (rate > 0) {
		pace = event_new(base, -1, EV_PERSIST, pace_cb, NULL);
		struct timeval ms = {0, 1000};
		event_add(pace, &ms);
	}
	event_base_dispatch(base);
	if (samples_path) {
		FILE *f = fopen(samples_path, "w");
		if (!f) {
			fprintf(stderr, "chat-load: cannot write %s\n", samples_path);
			return 1;
		}
		for (size_t i = 0; i < nlat; i++)
			fprintf(f, "%.6f %.3f\n", lat_sent[i], lat[i] * 1000);
		fclose(f);
	}
	qsort(lat, nlat, sizeof(*lat), cmp);
	double p50 = nlat ? lat[nlat / 2] * 1000 : 0, p99 = nlat ? lat[nlat * 99 / 100] * 1000 : 0;
	double pmax = nlat ? lat[nlat - 1] * 1000 : 0;
	printf("{\"bench\":\"%s\",\"customers\":%d,\"window\":%d,\"rate\":%.0f,\"seconds\":%d,"
	       "\"acked\":%llu,\"errors\":%llu,\"msgs_per_s\":%.1f,\"p50_ms\":%.3f,"
	       "\"p99_ms\":%.3f,\"max_ms\":%.3f}\n",
	       label, ncust, window, rate, seconds, (unsigned long long)acked,
	       (unsigned long long)errors, (double)acked / seconds, p50, p99, pmax);
	return errors ? 1 : 0;
}
