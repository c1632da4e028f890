/* ndjson: one NDJSON connection (SPEC §1), the transport and framing engine shared by the
 * client and phone listeners. It splits lines, parses and checks frames, enforces the hello
 * order, the frame size limit and output backpressure, and hands each valid frame to a
 * handlers struct; it knows nothing about chat or phone semantics.
 *
 * Everything runs on the event loop thread. Handlers are only ever called from the loop,
 * never from inside an ndjson_* call made by the application. */
#ifndef CONTACTD_NDJSON_H
#define CONTACTD_NDJSON_H

#include <jansson.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct bufferevent;
struct config;
struct ndjson_conn;

#define NDJSON_DEFAULT_MAX_FRAME_BYTES	65536
#define NDJSON_DEFAULT_HELLO_TIMEOUT_S	10
#define NDJSON_DEFAULT_OUTPUT_HWM_BYTES (1024 * 1024)
#define NDJSON_DEFAULT_FRAMES_PER_EVENT 64
#define NDJSON_MAX_BAD_FRAMES		10 /* bad frames in a row before the conn closes */
#define NDJSON_MAX_REF_CHARS		64
#define NDJSON_LINGER_S			5 /* how long a closing conn may flush its output */

/* Limits of one connection; a field left 0 takes its NDJSON_DEFAULT_*. */
struct ndjson_limits {
	size_t max_frame_bytes;	   /* per line, without the "\r\n" / "\n" */
	unsigned hello_timeout_s;  /* from accept until ndjson_conn_set_ready() */
	size_t output_hwm_bytes;   /* above: stop reading; 4x above: close (slow consumer) */
	unsigned frames_per_event; /* frames handled per read event before yielding */
};

/* Fills LIM from the [limits] section of CFG (other fields take their defaults). */
void ndjson_limits_from_config(struct ndjson_limits *lim, const struct config *cfg);

struct ndjson_handlers {
	/* A valid frame: FRAME is a JSON object with a non-empty string "type"; REF is its
	 * "ref" (a string of at most 64 characters or an integer) or NULL. Both are borrowed
	 * for the duration of the call: json_incref() what must live longer. Before the conn
	 * is ready only "hello" frames arrive here, and after one the conn holds further
	 * input until ndjson_conn_set_ready() or ndjson_conn_resume(). */
	void (*on_frame)(struct ndjson_conn *conn, json_t *frame, const json_t *ref, void *ctx);
	/* Called exactly once per conn, from the loop, once the conn is closing (for any
	 * reason: ndjson_conn_close(), peer EOF or error, a protocol violation, hello timeout,
	 * slow consumer). REASON is a short text for logs. After it returns CONN must not be
	 * used again: the engine flushes what was queued and frees it by itself. */
	void (*on_close)(struct ndjson_conn *conn, const char *reason, void *ctx);
};

/* A connection over BEV, which it takes over in every case (also when it returns NULL): a
 * connected socket bufferevent or an openssl socket bufferevent, made with
 * BEV_OPT_CLOSE_ON_FREE; the conn replaces its callbacks, watermarks and timeouts, and
 * frees it (closing the socket, and for TLS the SSL) when the conn is freed. LIMITS may be
 * NULL (all defaults) and is copied; HANDLERS is copied, both callbacks are required. PROTO
 * ("client", "phone"; at most 15 chars) and PEER (printable address; at most 63) are copied
 * for logs and stats. The hello timer starts now. Returns NULL only when out of memory. */
struct ndjson_conn *ndjson_conn_new(struct bufferevent *bev, const struct ndjson_limits *limits,
				    const struct ndjson_handlers *handlers, void *ctx,
				    const char *proto, const char *peer);

/* Starts closing: no more frames are handled and later sends are dropped; what is already
 * queued is flushed for at most NDJSON_LINGER_S, then the conn frees itself. on_close runs
 * from the loop soon after. No-op when already closing. Safe from inside on_frame. */
void ndjson_conn_close(struct ndjson_conn *conn, const char *reason);

/* Queues OBJ (stolen) as one compact line. Returns 0, or -1 when it was dropped (the conn
 * is closing, or OBJ cannot be serialised). May start closing the conn (slow consumer). */
int ndjson_send(struct ndjson_conn *conn, json_t *obj);
/* {"type":"ok","ref":REF,...FIELDS}: REF is borrowed and may be NULL (then no "ref");
 * FIELDS is stolen and may be NULL; its "type" and "ref" keys are ignored. */
int ndjson_reply_ok(struct ndjson_conn *conn, const json_t *ref, json_t *fields);
/* {"type":"error","ref":REF,"code":CODE,"message":MESSAGE}; REF as above, MESSAGE NULL
 * means CODE. Does not close: call ndjson_conn_close() after it when the code requires. */
int ndjson_reply_error(struct ndjson_conn *conn, const json_t *ref, const char *code,
		       const char *message);

/* Hello done: stops the hello timer, lets every frame type through and resumes input. */
void ndjson_conn_set_ready(struct ndjson_conn *conn);
bool ndjson_conn_is_ready(const struct ndjson_conn *conn);

/* Holds / resumes the handling of further frames (e.g. while a request must finish before
 * the next is read). Reading from the socket stops once the input buffer is full. A hello
 * before ready pauses the conn by itself; resume it when the hello was refused but the
 * peer may try again. */
void ndjson_conn_pause(struct ndjson_conn *conn);
void ndjson_conn_resume(struct ndjson_conn *conn);

bool ndjson_conn_is_closing(const struct ndjson_conn *conn);
void *ndjson_conn_ctx(const struct ndjson_conn *conn);
void ndjson_conn_set_ctx(struct ndjson_conn *conn, void *ctx);
uint64_t ndjson_conn_id(const struct ndjson_conn *conn); /* unique in this process, from 1 */
const char *ndjson_conn_peer(const struct ndjson_conn *conn);
const char *ndjson_conn_proto(const struct ndjson_conn *conn);
/* Bytes queued for the peer and not yet written to the socket. */
size_t ndjson_conn_queued_bytes(const struct ndjson_conn *conn);

/* Frees every conn at once without flushing, calling on_close ("shutdown") for those not
 * yet told. For the very end of the process, before event_base_free(). */
void ndjson_conn_free_all(void);

/* Per-protocol counters for metrics. */
struct ndjson_stats {
	unsigned long long open;	   /* conns alive now (including those still flushing) */
	unsigned long long opened;	   /* since start */
	unsigned long long frames_in;	   /* valid frames handed to on_frame */
	unsigned long long frames_out;	   /* lines queued by ndjson_send() */
	unsigned long long bad_frames;	   /* answered with bad_frame */
	unsigned long long too_large;	   /* closed for frame_too_large */
	unsigned long long slow_consumers; /* closed for slow consumer */
};
/* Fills *ST for PROTO, or summed over every protocol when PROTO is NULL. */
void ndjson_get_stats(const char *proto, struct ndjson_stats *st);
/* Conns alive for PROTO (NULL: all). */
unsigned long long ndjson_conn_count(const char *proto);

#endif
