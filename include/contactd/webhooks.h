/* webhooks: delivers the durable event log (events_log, sql/0010_stream.sql) to every URL
 * of webhooks.urls, one event per POST, in id order, at least once. Each URL has a cursor
 * in webhook_cursors that moves only after the receiver answered 2xx; anything else is
 * retried with exponential backoff (1 s doubling to 5 min, +-20 % jitter) until it is
 * delivered, so nothing is skipped. Bodies are signed: X-Contactd-Signature: sha256=<hex
 * HMAC-SHA256(webhooks.secret, body)>. HTTP goes through libcurl's multi interface driven
 * by the event loop (curl_multi_socket_action), nothing blocks. One instance per process;
 * every function accepts NULL. */
#ifndef CONTACTD_WEBHOOKS_H
#define CONTACTD_WEBHOOKS_H

struct app;
struct config;
struct webhooks;

/* Returns NULL (after logging) only when libcurl cannot be set up. Registers the outbound
 * implementation of the API channels (sms, whatsapp, social, web, api) in app->outbound:
 * an agent reply there is handed to the webhook outbox (its message.out event, logged by
 * the same transaction as the message; with no URL configured it is only on the stream,
 * said once with outbound_no_webhooks). app->outbound must outlive the instance. */
struct webhooks *webhooks_new(struct app *app);
/* Aborts transfers (sent again after a restart: at least once); store calls in flight must
 * have been answered (store_free) first. */
void webhooks_free(struct webhooks **w);

/* The store is up with a current schema: load the cursors (cd_webhook_start), start. */
void webhooks_store_ready(struct webhooks *w);

/* SIGHUP, two steps like the other modules: prepare parses NEW_CFG's urls and secret (it
 * cannot fail today, but keeps the shape); commit swaps them in: removed URLs stop at once,
 * added ones start at the current end of the log, the new secret signs the next POST. */
struct webhooks_reload;
struct webhooks_reload *webhooks_reload_prepare(struct webhooks *w, const struct config *new_cfg,
						char **error_r);
void webhooks_reload_commit(struct webhooks *w, struct webhooks_reload *rl);
void webhooks_reload_abort(struct webhooks *w, struct webhooks_reload *rl);

/* SIGTERM: starts no more POSTs; the ones in flight finish (at most their 15 s timeout) and
 * their cursor updates reach the store: webhooks_in_flight counts both. */
void webhooks_drain(struct webhooks *w);
unsigned webhooks_in_flight(const struct webhooks *w);

struct webhooks_stats {
	unsigned urls;
	unsigned long long delivered, failed_attempts;
	unsigned long long replies; /* agent replies on API channels handed to the outbox */
	unsigned backlog_failing;   /* URLs currently in a failure streak */
};
void webhooks_get_stats(const struct webhooks *w, struct webhooks_stats *st);

#endif
