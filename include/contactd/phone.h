/* phone: the phone listeners (listen.phone, listen.phone_tls) and the PBX sessions of SPEC
 * §2 over them. A PBX says hello with an API token holding events:write (or admin) — or,
 * on a TLS listener named in tls.require_client_cert, with its client certificate alone —
 * then sends `call` events (stored by cd_phone_event, answered `ok` after the commit).
 * Queued calls are routed on channel voice; when an agent accepts, the PBX connection that
 * queued the call gets `route` {call_id, agent, extension, offer}.
 *
 * A PBX connection that drops leaves its waiting calls "orphaned" for
 * PHONE_ORPHAN_GRACE_S: a PBX that says hello with the same token (or, for certificate
 * logins, any certificate login) within that time adopts them, and routes that came
 * meanwhile are sent to it then. After the grace period, orphaned calls still waiting are
 * recorded as abandoned (reason pbx_lost) and leave the line; routes nobody could take are
 * logged (`route_undelivered`). */
#ifndef CONTACTD_PHONE_H
#define CONTACTD_PHONE_H

#include <jansson.h>

struct app;
struct config;
struct phone;

#define PHONE_ORPHAN_GRACE_S 30

/* Binds the phone listeners of APP->cfg (either may be off). NULL with *error_r (malloc'd)
 * when one cannot be bound or its TLS context cannot be built. */
struct phone *phone_new(struct app *app, char **error_r);
void phone_free(struct phone **p);

/* SIGHUP, like chat_reload_*: prepare (NULL with *error_r, nothing changed), then commit
 * or abort. */
struct phone_reload;
struct phone_reload *phone_reload_prepare(struct phone *p, const struct config *cfg,
					  char **error_r);
void phone_reload_commit(struct phone *p, struct phone_reload *rl);
void phone_reload_abort(struct phone *p, struct phone_reload *rl);

/* Drain: stop accepting new PBX connections. */
void phone_stop_accepting(struct phone *p);

/* The routing effects of a call event that came over HTTP (RES: cd_phone_event's answer,
 * borrowed). Such calls have no PBX connection: their route is not pushed (integrators see
 * the assignment in the conversation, the stream and webhooks). */
void phone_after_event(struct phone *ph, const json_t *res);

/* Routing's accept hook (routing_set_assign_hook): RES is cd_offer_decide's answer with
 * agent_login and extension (borrowed). Pushes `route` for voice conversations. */
void phone_on_assigned(void *phone, const json_t *res);

#endif
