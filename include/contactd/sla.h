/* sla: fires the SLA timers that PostgreSQL keeps (sql/0005_sla.sql). It polls the store
 * for timers about to fire (cd_sla_upcoming, every SLA_POLL_MS and soon after sla_kick),
 * arms one libevent timer per imminent firing, and at its time asks the store to fire it
 * (cd_sla_fire: exactly once, under the conversation's row lock). A fired warning or breach
 * goes to the conversation's agent and to supervisors subscribed to `sla`; a breach's
 * escalation goes to the router (routing_conversation_escalated). Timers already due after
 * a restart fire at once. One instance per process; every function accepts NULL. */
#ifndef CONTACTD_SLA_H
#define CONTACTD_SLA_H

#include <jansson.h>
#include <stdint.h>

struct app;
struct sla;

/* Where events go (the chat channel implements these). EVENT is stolen. */
struct sla_notify {
	void (*to_agent)(void *arg, int64_t agent_id, json_t *event);
	/* every supervisor session subscribed to TOPIC ("sla") */
	void (*to_topic)(void *arg, const char *topic, json_t *event);
	void *arg;
};

struct sla *sla_new(struct app *app, const struct sla_notify *notify);
/* Stops the timers; firings in flight finish without telling anyone. */
void sla_free(struct sla **s);

/* The store is up with a current schema: start polling. */
void sla_store_ready(struct sla *s);
/* Timers may have started (a conversation opened, a customer wrote): poll soon. */
void sla_kick(struct sla *s);
/* A conversation opened with ROUTE (cd_route_info's object): sla_kick when its `sla`
 * names a policy; without one no timer started and there is nothing to look for. */
void sla_kick_route(struct sla *s, const json_t *route);

struct sla_stats {
	unsigned long long warnings, breaches, escalations;
	int armed; /* firings waiting on their time */
};
void sla_get_stats(const struct sla *s, struct sla_stats *st);

/* Tells the conversation's agent (AGENT_ID, 0 = none) and the `sla` subscribers that it
 * was escalated: {type:"escalated", conversation, tier, reason}. */
void sla_tell_escalated(struct sla *s, int64_t conv_id, int64_t agent_id, int tier,
			const char *reason);

#endif
