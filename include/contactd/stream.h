/* stream: GET /v1/stream, Server-Sent Events of the durable event log (events_log,
 * sql/0010_stream.sql). One shared poller reads the log in id order (cd_stream_read, every
 * STREAM_POLL_MS while clients are connected) and fans every event out to the live
 * clients; a client resuming with Last-Event-ID (or ?after=) first catches up with reads of
 * its own, then joins the live fan-out. Each client's queued output is bounded: a live client
 * with more than 256 KiB unsent falls back to catch-up reads at its own pace (reads wait
 * until its output is under that mark again); one whose output stays over the mark for
 * 10 s, or reaches 1 MiB, is dropped (it reconnects with Last-Event-ID, losing nothing). The
 * module also prunes old events_log rows (hourly, in batches). One instance per process;
 * every function accepts NULL. */
#ifndef CONTACTD_STREAM_H
#define CONTACTD_STREAM_H

struct app;
struct stream;
struct api_req;

struct stream *stream_new(struct app *app);
/* Closes every stream at once (no final chunk) and frees the module. Call before the HTTP
 * server is freed; store calls in flight must have been answered (store_free) first. */
void stream_free(struct stream **s);

/* The store is up with a current schema: start pruning. */
void stream_store_ready(struct stream *s);
/* SIGTERM: ends every stream cleanly (final chunk) and refuses new ones. */
void stream_drain(struct stream *s);

struct stream_stats {
	unsigned clients;
	unsigned long long events_sent, dropped_slow, pruned;
};
void stream_get_stats(const struct stream *s, struct stream_stats *st);

/* ---- HTTP glue (src/channels/api) ---- */

/* The handler of an authenticated GET /v1/stream: answers 400 / 503 itself, or takes the
 * request over as a stream and releases R with api_req_detach. */
void stream_http_handle(struct api_req *r);
/* Implemented by http.c: frees R without replying (counted as a 2xx); the caller has taken
 * over R->req and must end it. */
void api_req_detach(struct api_req *r);

#endif
