/* libFuzzer target: the NDJSON engine (framing, limits, hello order, replies) fed arbitrary
 * bytes through a socketpair, with a handler that answers every frame and readies the
 * connection on hello. It must never crash, leak or hang. */
#include "contactd/ndjson.h"

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static bool closed;

static void on_frame(struct ndjson_conn *conn, json_t *frame, const json_t *ref, void *ctx)
{
	const char *type = json_string_value(json_object_get(frame, "type"));
	if (strcmp(type, "hello") == 0)
		ndjson_conn_set_ready(conn);
	if (strcmp(type, "close") == 0) {
		ndjson_conn_close(conn, "asked");
		return;
	}
	ndjson_reply_ok(conn, ref, json_pack("{s:s}", "echo", type));
}

static void on_close(struct ndjson_conn *conn, const char *reason, void *ctx)
{
	closed = true;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	int sv[2];
	if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) < 0)
		return 0;
	struct event_base *base = event_base_new();
	evutil_make_socket_nonblocking(sv[0]);
	evutil_make_socket_nonblocking(sv[1]);
	struct bufferevent *bev = bufferevent_socket_new(base, sv[0], BEV_OPT_CLOSE_ON_FREE);
	struct ndjson_limits lim = {.max_frame_bytes = 512,
				    .hello_timeout_s = 1,
				    .output_hwm_bytes = 4096,
				    .frames_per_event = 4};
	static const struct ndjson_handlers h = {on_frame, on_close};
	closed = false;
	struct ndjson_conn *conn = ndjson_conn_new(bev, &lim, &h, NULL, "fuzz", "fuzz");
	size_t off = 0;
	char sink[4096];
	for (int round = 0; round < 200 && !closed; round++) {
		if (off < size) {
			ssize_t w = write(sv[1], data + off, size - off > 1024 ? 1024 : size - off);
			if (w > 0)
				off += (size_t)w;
		} else if (off == size) {
			shutdown(sv[1], SHUT_WR); /* EOF after the input */
			off++;
		}
		event_base_loop(base, EVLOOP_NONBLOCK);
		while (read(sv[1], sink, sizeof(sink)) > 0)
			;
	}
	(void)conn;
	ndjson_conn_free_all();
	close(sv[1]);
	event_base_free(base);
	return 0;
}
