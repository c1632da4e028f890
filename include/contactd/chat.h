/* chat: the client listeners (listen.client, listen.client_tls) and the customer and agent
 * sessions of SPEC §1 over them. */
#ifndef CONTACTD_CHAT_H
#define CONTACTD_CHAT_H

#include <stdint.h>

struct app;
struct json_t;
struct config;
struct chat;

/* Binds the client listeners of APP->cfg (either may be off). Returns NULL with *error_r
 * (malloc'd) when one cannot be bound or its TLS context cannot be built. */
struct chat *chat_new(struct app *app, char **error_r);
/* Closes the listeners and every session. */
void chat_free(struct chat **c);

/* SIGHUP in two steps, like http_server_reload_*: prepare (new TLS context, new listeners;
 * NULL with *error_r and nothing changed), then commit (cannot fail) or abort. Live
 * sessions keep their TLS context and limits. */
struct chat_reload;
struct chat_reload *chat_reload_prepare(struct chat *c, const struct config *cfg, char **error_r);
void chat_reload_commit(struct chat *c, struct chat_reload *rl);
void chat_reload_abort(struct chat *c, struct chat_reload *rl);

/* Drain: stop accepting; sessions are told with an error frame "unavailable" and closed once
 * their writes in flight are answered. */
void chat_stop_accepting(struct chat *c);
/* Event pushes for the routing service (struct routing_notify): CHAT is the struct chat;
 * EVENT is stolen and goes to every session of that agent / customer. */
void chat_notify_agent(void *chat, int64_t agent_id, struct json_t *event);
void chat_notify_customer(void *chat, int64_t customer_id, struct json_t *event);
/* EVENT (stolen) to every supervisor / admin session subscribed to TOPIC ("stats", "sla"). */
void chat_notify_topic(void *chat, const char *topic, struct json_t *event);

/* Requests waiting on the store or a worker. */
unsigned chat_in_flight(const struct chat *c);

#endif
