/* Private interface between the email listeners (lmtp.c) and the reply relay (relay.c). */
#ifndef CONTACTD_EMAIL_INTERNAL_H
#define CONTACTD_EMAIL_INTERNAL_H

#include <stddef.h>

struct app;
struct email_relay;

/* The outbox sender: registers the "email" outbound implementation with APP->outbound,
 * polls cd_email_outbox_claim every second (at once after an agent's reply) and sends what
 * it claims through APP->cfg->email_relay (read at each send, so SIGHUP applies). Never
 * fails. */
struct email_relay *email_relay_new(struct app *app, const char *hostname);
/* Abandons sends in flight (their lease expires and they are tried again). R may be NULL. */
void email_relay_free(struct email_relay **r);

#endif
