/* routing: the glue between the pure router (router.h), the store and the sessions. It
 * rebuilds the router from PostgreSQL (cd_router_snapshot) when the store is ready, feeds it
 * every routing input, records each decision in the store before anyone hears of it, tells
 * the agents and customers through callbacks, and keeps one timer at the router's next
 * deadline. One instance per process (one router leader: see DESIGN "Several machines").
 * Every function accepts R == NULL (no routing service) and then does nothing. */
#ifndef CONTACTD_ROUTING_H
#define CONTACTD_ROUTING_H

#include <jansson.h>
#include <stdbool.h>
#include <stdint.h>

struct app;
struct routing;

/* Where events go: the chat channel implements these. EVENT is stolen. */
struct routing_notify {
	void (*to_agent)(void *arg, int64_t agent_id, json_t *event);
	void (*to_customer)(void *arg, int64_t customer_id, json_t *event);
	void *arg;
};

struct routing *routing_new(struct app *app, const struct routing_notify *notify);
void routing_free(struct routing **r);

/* Call when the store is up with a current schema (again): loads the snapshot once. */
void routing_store_ready(struct routing *r);
/* SIGHUP: offer timeout, cooldown, stickiness. */
void routing_reload(struct routing *r);
/* Queues, agents or skills changed (admin API): re-reads them from the store. */
void routing_resync(struct routing *r);
bool routing_loaded(const struct routing *r);

/* A conversation entered routing: ROUTE is cd_route_info's object (borrowed). */
void routing_conversation_opened(struct routing *r, const json_t *route);

/* Pre-routing of a call the phone channel is about to store (a PBX's `queued`): the router
 * gets a stand-in for it (queue QUEUE, a name or an id as the PBX gave it, NULL or "" for
 * DEFAULT_QUEUE, then the first queue; tier 1, the queue's priority, no customer) and
 * routes at once. When it offers the stand-in to an agent, that agent's slot is held and
 * the pick is returned in *OFFER_R (new reference: {queue, agent, expires_at, reason,
 * sticky_s}, cd_phone_event's p_offer) with a handle > 0; the caller must then call
 * routing_preroute_done() exactly once with that handle. Returns 0 (and *OFFER_R NULL)
 * when routing is not loaded or paused, the queue is not known, or no agent was free. */
int64_t routing_preroute(struct routing *r, const json_t *queue, const char *default_queue,
			 json_t **offer_r);
/* The stored call's answer RES (borrowed; NULL when the store failed). When RES carries
 * an offer (cd_phone_event made the pick), the conversation enters routing offered to the
 * agent, who gets the `offer`; returns true: the caller must not add it again. Else the
 * stand-in goes and the caller routes the call as usual (false). */
bool routing_preroute_done(struct routing *r, int64_t handle, const json_t *res);
/* It ended (resolved: the agent becomes the customer's last agent; else removed). */
void routing_conversation_resolved(struct routing *r, int64_t conv_id);
void routing_conversation_removed(struct routing *r, int64_t conv_id);
/* It went back to waiting (transfer): ROUTE as above. */
void routing_conversation_requeued(struct routing *r, const json_t *route);

/* A transfer to an agent: assigned to AGENT_ID at once (ROUTE: cd_route_info's object,
 * borrowed, used when the router did not hold it). */
void routing_conversation_handed(struct routing *r, const json_t *route, int64_t agent_id);

/* Called after every committed accept with cd_offer_decide's answer (borrowed; it has
 * conversation, channel, agent, agent_login, extension, offer): the phone channel pushes
 * `route` to the PBX from it. One hook; FN NULL removes it. */
void routing_set_assign_hook(struct routing *r, void (*fn)(void *arg, const json_t *res),
			     void *arg);

/* Escalation (SLA breach or a manual escalate): its new tier and priority. A waiting
 * conversation moves in its line; an offer to an agent now below its tier is revoked. */
void routing_conversation_escalated(struct routing *r, int64_t conv_id, int tier, int priority);

/* Presence of an agent (available, away, offline). */
void routing_agent_status(struct routing *r, int64_t agent_id, const char *status);

/* An agent's answer to offer OFFER_ID (the store's offers.id). Calls DONE(arg, code,
 * message) exactly once: code NULL on success, else a protocol error code. */
typedef void (*routing_done_cb)(void *arg, const char *code, const char *message);
void routing_offer_answer(struct routing *r, int64_t agent_id, const char *agent_name,
			  int64_t offer_id, bool accept, const char *reason, routing_done_cb done,
			  void *arg);

/* The conversation's agent (assigned or offered; 0 when waiting) and customer, per the
 * router. Returns -1 when the router does not hold it. */
int routing_conversation_parties(const struct routing *r, int64_t conv_id, int64_t *agent_r,
				 int64_t *customer_r);

/* Counts for /metrics and realtime stats (all zero until loaded). */
struct routing_stats {
	int waiting, offered, assigned;
	int agents_available, agents_away, agents_offline, agents_busy;
	unsigned long long offers, accepts, rejects, timeouts;
};
void routing_get_stats(const struct routing *r, struct routing_stats *st);

/* The realtime picture as JSON (new reference): {queues:[{queue, waiting, offered,
 * assigned, longest_wait_s, agents_available}], agents:{available, busy, away, offline}}. */
json_t *routing_stats_json(const struct routing *r);

/* Position and estimated wait (seconds, -1 unknown) of a waiting conversation, or -1. */
int routing_position(const struct routing *r, int64_t conv_id, int *position_r, int64_t *wait_s_r);

#endif
