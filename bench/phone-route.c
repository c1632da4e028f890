/* phone-route: time from a PBX's `queued` call event to the `route` it gets back, with an
 * available agent whose desktop accepts every offer at once (SPEC §2).
 *
 *   phone-route --port CLIENT_PORT --phone PHONE_PORT --http HTTP_PORT --token ADMIN_TOKEN
 *               [--calls 2000] [--warmup 100] [--samples FILE]
 *
 * Creates a queue and an agent (voice capacity 1) over HTTP, logs the agent in on the client
 * listener and a PBX in on the phone listener. Then, one call at a time: the PBX queues it,
 * the agent accepts the offer it gets, the PBX waits for the `route`; then the PBX sends
 * `answered`, waits for its `ok`, sends `ended` (which frees the agent) and waits for its
 * `ok`, as a PBX would (a call is answered, then it ends). Sent back to back, the two could
 * be stored in either order, and a late `answered` still running alongside the next call's
 * `queued` made that call wait for it (10 ms tails in ~1 % of the calls). Prints
 * one JSON line: latency queued -> route (p50, p90, p99, max, in ms) and calls per second.
 * --samples FILE writes every measured latency (ms), one a line, in call order.
 *
 * Written in C with blocking sockets so that the client's own time stays out of the figure
 * (bench/phone-route.py, the first version, added 0.1-0.2 ms a call and its own pauses). */
#include <errno.h>
#include <getopt.h>
#include <jansson.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#define LINE_MAX_BYTES (1 << 20)

struct conn {
	int fd;
	char *buf;
	size_t len;
};

static double now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

static void die(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	fputs("phone-route: ", stderr);
	vfprintf(stderr, fmt, ap);
	fputc('\n', stderr);
	va_end(ap);
	exit(1);
}

static int dial(int port)
{
	int fd = socket(AF_INET, SOCK_STREAM, 0);
	struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
	sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
		die("connect to port %d: %s", port, strerror(errno));
	int one = 1;
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	struct timeval tv = {10, 0};
	setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
	return fd;
}

static void send_all(int fd, const char *p, size_t n)
{
	while (n > 0) {
		ssize_t w = send(fd, p, n, MSG_NOSIGNAL);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			die("send: %s", strerror(errno));
		p += w;
		n -= (size_t)w;
	}
}

static void send_line(struct conn *c, const char *fmt, ...)
{
	char line[1024];
	va_list ap;
	va_start(ap, fmt);
	int n = vsnprintf(line, sizeof(line) - 1, fmt, ap);
	va_end(ap);
	if (n < 0 || n >= (int)sizeof(line) - 1)
		die("frame too long");
	line[n++] = '\n';
	send_all(c->fd, line, (size_t)n);
}

/* The next frame from C, parsed (the caller owns it). */
static json_t *next_frame(struct conn *c)
{
	for (;;) {
		char *nl = c->len ? memchr(c->buf, '\n', c->len) : NULL;
		if (nl) {
			size_t n = (size_t)(nl - c->buf);
			json_error_t err;
			json_t *f = json_loadb(c->buf, n, 0, &err);
			memmove(c->buf, nl + 1, c->len - n - 1);
			c->len -= n + 1;
			if (!f)
				die("bad frame from the daemon: %s", err.text);
			return f;
		}
		if (c->len == LINE_MAX_BYTES)
			die("frame over %d bytes", LINE_MAX_BYTES);
		ssize_t r = recv(c->fd, c->buf + c->len, LINE_MAX_BYTES - c->len, 0);
		if (r < 0 && errno == EINTR)
			continue;
		if (r == 0)
			die("connection closed by the daemon");
		if (r < 0)
			die("recv: %s", strerror(errno));
		c->len += (size_t)r;
	}
}

static const char *str_of(const json_t *f, const char *key)
{
	return json_string_value(json_object_get(f, key));
}

/* Frames until one of TYPE (and, if REF, with that string ref); an `error` reply to REF ends
 * the run. */
static json_t *wait_for(struct conn *c, const char *type, const char *ref)
{
	for (;;) {
		json_t *f = next_frame(c);
		const char *t = str_of(f, "type"), *r = str_of(f, "ref");
		if (ref && r && strcmp(r, ref) == 0 && t && strcmp(t, "error") == 0)
			die("request %s failed: %s %s", ref, str_of(f, "code"),
			    str_of(f, "message"));
		if (t && strcmp(t, type) == 0 && (!ref || (r && strcmp(r, ref) == 0)))
			return f;
		json_decref(f);
	}
}

/* POST BODY to PATH on the HTTP listener; a non-2xx answer ends the run. */
static void http_post(int port, const char *token, const char *path, const char *body)
{
	int fd = dial(port);
	char req[2048];
	int n = snprintf(req, sizeof(req),
			 "POST %s HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer %s\r\n"
			 "Content-Type: application/json\r\nContent-Length: %zu\r\n"
			 "Connection: close\r\n\r\n%s",
			 path, token, strlen(body), body);
	if (n < 0 || n >= (int)sizeof(req))
		die("request too long");
	send_all(fd, req, (size_t)n);
	char resp[4096];
	size_t len = 0;
	ssize_t r;
	while (len < sizeof(resp) - 1 && (r = recv(fd, resp + len, sizeof(resp) - 1 - len, 0)) > 0)
		len += (size_t)r;
	resp[len] = '\0';
	close(fd);
	int status = 0;
	if (sscanf(resp, "HTTP/1.%*d %d", &status) != 1 || status / 100 != 2)
		die("POST %s: %.200s", path, resp);
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static double pct(const double *sorted, int n, double p)
{
	int i = (int)(p / 100.0 * (n - 1) + 0.5);
	return sorted[i < n ? i : n - 1];
}

int main(int argc, char **argv)
{
	int cport = 0, pport = 0, hport = 0, calls = 2000, warmup = 100;
	const char *token = NULL, *samples = NULL;
	static const struct option opts[] = {
	    {"port", required_argument, 0, 'c'},    {"phone", required_argument, 0, 'p'},
	    {"http", required_argument, 0, 'h'},    {"token", required_argument, 0, 't'},
	    {"calls", required_argument, 0, 'n'},   {"warmup", required_argument, 0, 'w'},
	    {"samples", required_argument, 0, 's'}, {0, 0, 0, 0}};
	int o;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		switch (o) {
		case 'c':
			cport = atoi(optarg);
			break;
		case 'p':
			pport = atoi(optarg);
			break;
		case 'h':
			hport = atoi(optarg);
			break;
		case 't':
			token = optarg;
			break;
		case 'n':
			calls = atoi(optarg);
			break;
		case 'w':
			warmup = atoi(optarg);
			break;
		case 's':
			samples = optarg;
			break;
		default:
			return 2;
		}
	}
	if (!cport || !pport || !hport || !token || calls < 1 || warmup < 0) {
		fprintf(stderr, "usage: phone-route --port P --phone P --http P --token T "
				"[--calls N] [--warmup N] [--samples FILE]\n");
		return 2;
	}
	http_post(hport, token, "/v1/queues", "{\"name\":\"benchphone\"}");
	http_post(hport, token, "/v1/agents",
		  "{\"login\":\"benchagent\",\"name\":\"Bench\",\"password\":\"bench-agent-pw\","
		  "\"extension\":\"100\",\"capacity\":{\"voice\":1}}");

	struct conn agent = {dial(cport), malloc(LINE_MAX_BYTES), 0};
	struct conn pbx = {dial(pport), malloc(LINE_MAX_BYTES), 0};
	send_line(&agent, "{\"type\":\"hello\",\"role\":\"agent\",\"login\":\"benchagent\","
			  "\"password\":\"bench-agent-pw\",\"ref\":\"h\"}");
	json_decref(wait_for(&agent, "ok", "h"));
	send_line(&agent, "{\"type\":\"presence\",\"status\":\"available\",\"ref\":\"p\"}");
	json_decref(wait_for(&agent, "ok", "p"));
	send_line(&pbx, "{\"type\":\"hello\",\"role\":\"pbx\",\"token\":\"%s\",\"ref\":\"h\"}",
		  token);
	json_decref(wait_for(&pbx, "ok", "h"));

	double *lat = malloc(sizeof(*lat) * (size_t)calls);
	double t_start = 0;
	for (int i = 0; i < warmup + calls; i++) {
		if (i == warmup)
			t_start = now_ms();
		char cid[32], ref[32];
		snprintf(cid, sizeof(cid), "bench-%d", i);
		double t0 = now_ms();
		send_line(&pbx,
			  "{\"type\":\"call\",\"event\":\"queued\",\"call_id\":\"%s\","
			  "\"queue\":\"benchphone\",\"from\":\"+1555%07d\",\"ref\":\"q%d\"}",
			  cid, i, i);
		json_t *offer = wait_for(&agent, "offer", NULL);
		send_line(&agent, "{\"type\":\"accept\",\"offer\":%lld}",
			  (long long)json_integer_value(json_object_get(offer, "offer")));
		json_decref(offer);
		for (;;) {
			json_t *f = wait_for(&pbx, "route", NULL);
			const char *got = str_of(f, "call_id");
			int mine = got && strcmp(got, cid) == 0;
			json_decref(f);
			if (mine)
				break;
		}
		if (i >= warmup)
			lat[i - warmup] = now_ms() - t0;
		snprintf(ref, sizeof(ref), "a%d", i);
		send_line(
		    &pbx,
		    "{\"type\":\"call\",\"event\":\"answered\",\"call_id\":\"%s\",\"ref\":\"%s\"}",
		    cid, ref);
		json_decref(wait_for(&pbx, "ok", ref));
		snprintf(ref, sizeof(ref), "e%d", i);
		send_line(
		    &pbx,
		    "{\"type\":\"call\",\"event\":\"ended\",\"call_id\":\"%s\",\"ref\":\"%s\"}",
		    cid, ref);
		json_decref(wait_for(&pbx, "ok", ref));
	}
	double elapsed_s = (now_ms() - t_start) / 1e3;
	if (samples) {
		FILE *f = fopen(samples, "w");
		if (!f)
			die("%s: %s", samples, strerror(errno));
		for (int i = 0; i < calls; i++)
			fprintf(f, "%.3f\n", lat[i]);
		fclose(f);
	}
	qsort(lat, (size_t)calls, sizeof(*lat), cmp_double);
	double sum = 0;
	for (int i = 0; i < calls; i++)
		sum += lat[i];
	printf("{\"label\": \"phone-route\", \"calls\": %d, \"route_ms_p50\": %.3f, "
	       "\"route_ms_p90\": %.3f, \"route_ms_p99\": %.3f, \"route_ms_max\": %.3f, "
	       "\"route_ms_mean\": %.3f, \"calls_per_s\": %.1f}\n",
	       calls, pct(lat, calls, 50), pct(lat, calls, 90), pct(lat, calls, 99), lat[calls - 1],
	       sum / calls, calls / elapsed_s);
	free(lat);
	free(agent.buf);
	free(pbx.buf);
	close(agent.fd);
	close(pbx.fd);
	return 0;
}
