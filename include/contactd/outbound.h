/* outbound: how an agent's public message reaches the customer — one implementation per
 * channel (chat pushes to the customer's sessions; email and webhooks register theirs when
 * they exist). The message is already committed when outbound_deliver() is called; an
 * implementation that needs durability (an e-mail relay, a webhook) keeps its own outbox
 * in the store. One registry per process, owned by main.c. */
#ifndef CONTACTD_OUTBOUND_H
#define CONTACTD_OUTBOUND_H

#include <stdint.h>

struct outbound;

struct outbound_msg {
	int64_t conversation, message, customer;
	const char *channel;	 /* the conversation's channel: chat, email, sms, ... */
	const char *author_name; /* the agent's display name */
	const char *body;
	const char *at; /* ISO 8601 UTC */
};

/* Returns 0 when handed over, -1 when it could not be (logged by the implementation). */
typedef int (*outbound_fn)(void *arg, const struct outbound_msg *m);

struct outbound *outbound_new(void);
void outbound_free(struct outbound **o);
/* CHANNEL's implementation (replaces an earlier one). CHANNEL is copied. */
int outbound_register(struct outbound *o, const char *channel, outbound_fn fn, void *arg);
/* Hands M to its channel's implementation. Returns its result, or -1 (logged
 * `outbound_unserved`) when no implementation serves that channel. */
int outbound_deliver(struct outbound *o, const struct outbound_msg *m);

#endif
