/* chat: the client listeners (listen.client, listen.client_tls) and the customer and agent
 * sessions of SPEC §1 over them. */
#ifndef CONTACTD_CHAT_H
#define CONTACTD_CHAT_H

struct app;
struct config;
struct chat;

/* Binds the client listeners of APP->cfg (either may be off). Returns NULL with *error_r
 * (malloc'd) when one cannot be bound or its TLS context cannot be built. */
struct chat *chat_new(struct app *app, char **error_r);
/* Closes the listeners and every session. */
void chat_free(struct chat **c);

/* SIGHUP: new addresses, TLS files and limits. Everything is prepared first; on error
 * nothing changes and -1 is returned with *error_r (malloc'd). Live sessions keep theirs. */
int chat_reload(struct chat *c, const struct config *cfg, char **error_r);

/* Drain: stop accepting; sessions are told with an error frame "unavailable" and closed once
 * their writes in flight are answered. */
void chat_stop_accepting(struct chat *c);
/* Requests waiting on the store or a worker. */
unsigned chat_in_flight(const struct chat *c);

#endif
