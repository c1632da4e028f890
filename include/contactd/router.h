/* router: the routing decision core (SPEC §5, §1.2 offers). A pure in-memory model of queues,
 * agents, conversations and offers in flight that decides who is offered what, and when an
 * offer times out. No sockets, no SQL, no timers, no clock: every function that needs the
 * time takes now_ms (milliseconds since any fixed epoch; it must not decrease from call to
 * call). A glue module feeds it from the store and the agent sessions, calls router_route()
 * after every event, records each decision it returns (conversation timeline, offers
 * table), and keeps one timer armed at router_next_deadline_ms(). The router never calls
 * out; on a leader change (DESIGN "Several machines") the new leader rebuilds one from the
 * store with the same calls (router_*_set, router_conversation_add, _restore_offer,
 * _restore_cooldown, router_conversation_assign).
 *
 * Rules
 * - A queue requires skills with minimum levels; an agent can serve it when it has every one
 *   at that level or higher. A queue requiring nothing can be served by every agent.
 * - Capacity is per class: chat, email, voice. The channels sms, whatsapp, social, web and
 *   api are live text conversations and count as chat (router_channel_class()).
 * - An agent is eligible for a waiting conversation when it is available, can serve the
 *   queue, has a free slot in the conversation's class, is not in a reject cooldown for
 *   that conversation, and its tier is within the window: at least the conversation's tier
 *   and, when the queue has overflow steps, at most max(conversation tier, the highest step
 *   tier whose after_s the conversation has waited, counted from enqueued_at). A queue
 *   without steps has no upper bound.
 * - Waiting conversations are served in the order (priority desc, queue priority desc,
 *   enqueued_at asc, id asc): the conversation's own priority first (escalation raises it),
 *   the queue's priority breaks ties between queues. router_route() decides like this
 *   reference: repeatedly take the first conversation in that order that has an eligible
 *   agent and offer it to the best eligible agent, until none has one. The best agent is
 *   the customer's last agent (from a resolve in this router, or last_agent_id given at
 *   add) when it is eligible and now - last_agent_at <= sticky_agent_s (any channel);
 *   otherwise the lowest tier, then the longest idle (smallest idle_since), then the
 *   lowest id. Conversations are never held back for a last agent who is not free.
 * - An offer reserves its slot until accepted (the slot stays taken: assigned), rejected,
 *   timed out or revoked. Reject and timeout both put the conversation back in its line at
 *   its old place (enqueued_at kept) and exclude that agent from it for reject_cooldown_s:
 *   an agent that lets an offer ring out is as unlikely to take it seconds later as one who
 *   declined it, and the cooldown stops the same offer bouncing back to it.
 * - idle_since is set to now when an agent becomes available (from offline or away) and
 *   when a conversation it held ends (resolve, remove, transfer away); offers and accepts
 *   leave it alone, so with chat capacity > 1 the longest-idle agent fills its slots first.
 * - An agent going away or offline loses its pending offers (revoked, the conversations go
 *   back to waiting without cooldown); its assigned conversations stay assigned (it still
 *   answers them; a supervisor transfers them if needed). A removed agent loses its offers
 *   too and its assigned conversations re-enter their queues (enqueued_at = now).
 * - A raise of a conversation's tier or priority (escalation), a change to an agent's tier
 *   or skills, or to a queue's skills or steps revokes pending offers whose agent is no
 *   longer eligible by skills and tier window (status, capacity and cooldown are not
 *   re-checked: the offer holds its slot).
 *
 * Decisions come out of router_route() in this order: revocations and re-queues caused by
 * earlier inputs (in input order; within one input, revocations by offer id, then re-queues
 * by conversation id), offer timeouts due by now (by expires_at, then offer id), then new
 * offers. It returns only new work: once returned, a decision is never returned again.
 * One thread (the event loop) owns a router; nothing in it is locked.
 *
 * Complexity (W waiting conversations in a queue, A agents, Q_a queues an agent can serve,
 * B buckets = distinct (tier, priority) among the waiting conversations of one queue and
 * class, S overflow steps of a queue, k_c active cooldowns of a conversation, k_a active
 * cooldowns naming an agent; all expected, from treaps with random priorities):
 * - offering a conversation that arrives or returns: O(log A + k_c log A) to find its agent
 *   (plus O(log A) for the eligible count in the reason), O(log W) to index it;
 * - an agent freeing a slot: O(sum over its Q_a queues of (B log W + S) + k_a log W) to find
 *   its conversation; a slot or idle_since change re-keys the agent in O(Q_a log A);
 * - so, but for log factors, a decision does not grow with the number of waiting
 *   conversations nor with agents who cannot serve the queue; none scans waiting
 *   conversations x agents.
 * - When more than max(32, sqrt(all waiting)) agents changed between two router_route()
 *   calls (e.g. after a rebuild), that call makes one ordered pass over every waiting
 *   conversation instead, O(W log W + W log A), the cheaper of the two there.
 * - Queue changes cost O(A + conversations); agent skill changes O(queues).
 * - position O(log W); queue stats O(1); router_stats O(1); router_verify O(everything).
 * Out of memory aborts (as elsewhere in contactd): no function leaves indexes half-updated.
 */
#ifndef CONTACTD_ROUTER_H
#define CONTACTD_ROUTER_H

#include <stdbool.h>
#include <stdint.h>

struct router;

enum router_error {
	ROUTER_OK = 0,
	ROUTER_E_INVALID,	       /* a bad argument (id <= 0, tier < 1, ...) */
	ROUTER_E_EXISTS,	       /* a conversation or offer id already known */
	ROUTER_E_UNKNOWN_QUEUE,	       /* no such queue */
	ROUTER_E_UNKNOWN_AGENT,	       /* no such agent */
	ROUTER_E_UNKNOWN_CONVERSATION, /* no such conversation */
	ROUTER_E_UNKNOWN_OFFER,	       /* no pending offer with that id */
	ROUTER_E_STATE,		       /* the conversation is not in the state this needs */
	ROUTER_E_BUSY,		       /* a queue still holds conversations */
	ROUTER_E__COUNT
};
const char *router_error_name(enum router_error e);

enum router_channel {
	ROUTER_CHANNEL_CHAT,
	ROUTER_CHANNEL_EMAIL,
	ROUTER_CHANNEL_VOICE,
	ROUTER_CHANNEL_SMS,
	ROUTER_CHANNEL_WHATSAPP,
	ROUTER_CHANNEL_SOCIAL,
	ROUTER_CHANNEL_WEB,
	ROUTER_CHANNEL_API,
	ROUTER_CHANNEL__COUNT
};
/* Capacity classes: every channel counts against one. */
enum router_class {
	ROUTER_CLASS_CHAT,
	ROUTER_CLASS_EMAIL,
	ROUTER_CLASS_VOICE,
	ROUTER_CLASS__COUNT
};

/* "chat", "email", ... as in conversations.channel; parse returns -1 for anything else. */
const char *router_channel_name(enum router_channel ch);
int router_channel_parse(const char *name);
/* email -> email, voice -> voice, every other channel -> chat. */
enum router_class router_channel_class(enum router_channel ch);

enum router_agent_status { ROUTER_AGENT_OFFLINE, ROUTER_AGENT_AVAILABLE, ROUTER_AGENT_AWAY };
const char *router_agent_status_name(enum router_agent_status st);
int router_agent_status_parse(const char *name);

enum router_conv_state { ROUTER_CONV_WAITING, ROUTER_CONV_OFFERED, ROUTER_CONV_ASSIGNED };
const char *router_conv_state_name(enum router_conv_state st);

struct router_config {
	int offer_timeout_s;   /* routing.offer_timeout_s (default 20) */
	int reject_cooldown_s; /* routing.reject_cooldown_s (default 300) */
	int sticky_agent_s;    /* routing.sticky_agent_s (default 600); 0 turns stickiness off */
	int default_handle_s;  /* handle time assumed by estimates before any is recorded (300) */
};
void router_config_defaults(struct router_config *cfg);

/* Makes an empty router; CFG NULL means defaults. Never fails (aborts without memory). */
struct router *router_new(const struct router_config *cfg);
/* Frees everything and clears *R; R or *R may be NULL. */
void router_free(struct router **r);
/* SIGHUP: applies to offers, cooldowns and resolves from now on (pending offers keep their
 * expires_at, running cooldowns their end). Negative values count as 0. */
void router_set_config(struct router *r, const struct router_config *cfg);

/* The router numbers offers itself: 1, 2, ... by default. The glue may start the numbering
 * anywhere (e.g. past max(offers.id) after a rebuild) to use them as offers.id;
 * router_conversation_restore_offer() moves it past restored ids by itself. */
void router_set_next_offer_id(struct router *r, int64_t next_id);

/* ---- inputs --------------------------------------------------------------------------
 * Every function below returns 0, or -1 and sets *error_r (when error_r is not NULL); on
 * -1 nothing changed. Arrays in the info structs are copied. */

struct router_skill {
	int64_t skill_id; /* > 0 */
	int level;	  /* agent: its level; queue: the minimum level. >= 1 */
};

struct router_overflow {
	int after_s; /* >= 0: waiting at least this long ... */
	int tier;    /* ... lets agents up to this tier take it (>= 1) */
};

struct router_queue_info {
	int64_t id; /* > 0 */
	int priority;
	const struct router_skill *skills; /* required; no skill twice */
	int nskills;
	const struct router_overflow *overflow; /* any order; no after_s twice */
	int noverflow;
};

/* Creates or replaces a queue. A change re-indexes which agents can serve it, re-evaluates
 * its waiting conversations and revokes offers no longer eligible (see Rules). */
int router_queue_set(struct router *r, const struct router_queue_info *info, int64_t now_ms,
		     enum router_error *error_r);
/* Fails with ROUTER_E_BUSY while any conversation (any state) is in it. */
int router_queue_remove(struct router *r, int64_t queue_id, enum router_error *error_r);
/* Feeds one handle time (accept to resolve, in ms) into the queue's running mean, an
 * exponential moving average with weight 1/8 for the newest sample. */
int router_queue_add_handle_time(struct router *r, int64_t queue_id, int64_t handle_ms,
				 enum router_error *error_r);

struct router_agent_info {
	int64_t id; /* > 0 */
	int tier;   /* >= 1 */
	const struct router_skill *skills;
	int nskills;
	int capacity[ROUTER_CLASS__COUNT]; /* >= 0 each */
};

/* Creates (offline, idle since now, nothing held) or updates an agent. Status and held
 * conversations survive an update; a capacity below the current load just leaves no free
 * slot. */
int router_agent_set(struct router *r, const struct router_agent_info *info, int64_t now_ms,
		     enum router_error *error_r);
/* Presence. Becoming available sets idle_since = now; going away or offline revokes the
 * agent's pending offers (reported by router_route, reason agent_unavailable). */
int router_agent_set_status(struct router *r, int64_t agent_id, enum router_agent_status st,
			    int64_t now_ms, enum router_error *error_r);
/* Rebuild: the idle_since the store knows (e.g. agents.status_at or the last resolve). */
int router_agent_set_idle_since(struct router *r, int64_t agent_id, int64_t idle_since_ms,
				enum router_error *error_r);
/* Revokes its offers and re-queues its assigned conversations (both reported by
 * router_route), then forgets it. */
int router_agent_remove(struct router *r, int64_t agent_id, int64_t now_ms,
			enum router_error *error_r);

struct router_conversation_info {
	int64_t id;	     /* > 0 */
	int64_t queue_id;    /* an existing queue */
	int64_t customer_id; /* 0 = unknown (no stickiness) */
	enum router_channel channel;
	int tier; /* >= 1 */
	int priority;
	int64_t enqueued_at_ms;	  /* when it (re-)entered its queue */
	int64_t last_agent_id;	  /* the customer's previous agent per the store; 0 = none */
	int64_t last_agent_at_ms; /* when that conversation ended */
};

/* Adds a waiting conversation (ROUTER_E_EXISTS if the id is known). last_agent_* update
 * the customer's record when newer than what the router has. */
int router_conversation_add(struct router *r, const struct router_conversation_info *info,
			    int64_t now_ms, enum router_error *error_r);
/* Escalation: new tier and priority. A waiting conversation moves in its line (keeping
 * enqueued_at); an offer whose agent falls outside the new tier window is revoked (reason
 * ineligible) and the conversation waits again. */
int router_conversation_update(struct router *r, int64_t conv_id, int tier, int priority,
			       int64_t now_ms, enum router_error *error_r);
/* Moves it to QUEUE_ID (the same queue re-queues it), waiting, enqueued_at = now. A pending
 * offer is revoked (reason transferred); an assigned agent's slot is freed. */
int router_conversation_transfer(struct router *r, int64_t conv_id, int64_t queue_id,
				 int64_t now_ms, enum router_error *error_r);
/* Assigns it to AGENT_ID at once (a transfer to an agent, or a rebuild): no eligibility
 * check, the slot is taken even beyond capacity. A pending offer to another agent is
 * revoked (reason taken); an offer to that same agent becomes the assignment. */
int router_conversation_assign(struct router *r, int64_t conv_id, int64_t agent_id, int64_t now_ms,
			       enum router_error *error_r);
/* Ends it: frees its slot; when assigned, the agent becomes the customer's last agent at
 * now (stickiness). A pending offer is revoked (reason closed). Then forgets it. */
int router_conversation_resolve(struct router *r, int64_t conv_id, int64_t now_ms,
				enum router_error *error_r);
/* Like resolve without recording a last agent (abandoned, merged, deleted). */
int router_conversation_remove(struct router *r, int64_t conv_id, int64_t now_ms,
			       enum router_error *error_r);
/* Rebuild: a waiting conversation was offered to AGENT_ID (the offers row). No eligibility
 * check; the slot is taken even beyond capacity. ROUTER_E_EXISTS if OFFER_ID is pending. */
int router_conversation_restore_offer(struct router *r, int64_t conv_id, int64_t agent_id,
				      int64_t offer_id, int64_t expires_at_ms, int64_t now_ms,
				      enum router_error *error_r);
/* Rebuild: AGENT_ID rejected it or let it time out; excluded until UNTIL_MS. */
int router_conversation_restore_cooldown(struct router *r, int64_t conv_id, int64_t agent_id,
					 int64_t until_ms, int64_t now_ms,
					 enum router_error *error_r);

/* Offers are pending until one of these, a revocation, or a timeout reported by
 * router_route()/router_expire(). A late accept that no timeout has reported yet still
 * succeeds (the timer is only as late as the loop). */
int router_offer_accept(struct router *r, int64_t offer_id, int64_t now_ms,
			enum router_error *error_r);
/* Back to waiting at its old place; the agent is excluded for reject_cooldown_s. */
int router_offer_reject(struct router *r, int64_t offer_id, int64_t now_ms,
			enum router_error *error_r);
/* Withdraws an offer without a cooldown (e.g. its offer could not be recorded). */
int router_offer_cancel(struct router *r, int64_t offer_id, int64_t now_ms,
			enum router_error *error_r);

/* ---- decisions ----------------------------------------------------------------------- */

enum router_decision_kind {
	ROUTER_DECISION_OFFER,	 /* offer conversation to agent: record it, send `offer` */
	ROUTER_DECISION_REVOKE,	 /* the offer is gone: record it, send `offer_revoked` */
	ROUTER_DECISION_REQUEUE, /* an assigned conversation went back to waiting */
};

/* Why this agent: the first rule that told the eligible agents apart. */
enum router_pick {
	ROUTER_PICK_ONLY,	  /* the only eligible agent */
	ROUTER_PICK_STICKY,	  /* the customer's last agent, within sticky_agent_s */
	ROUTER_PICK_LOWEST_TIER,  /* eligible agents of a higher tier were kept free */
	ROUTER_PICK_LONGEST_IDLE, /* the longest idle among eligible agents of one tier */
};
const char *router_pick_name(enum router_pick p);

enum router_revoke_reason {
	ROUTER_REVOKE_TIMEOUT,		 /* not accepted within offer_timeout_s (cooldown set) */
	ROUTER_REVOKE_AGENT_UNAVAILABLE, /* the agent went away or offline */
	ROUTER_REVOKE_AGENT_REMOVED,	 /* the agent was removed */
	ROUTER_REVOKE_INELIGIBLE,	 /* tier, skills or queue changed under it */
	ROUTER_REVOKE_TRANSFERRED,	 /* the conversation moved to a queue */
	ROUTER_REVOKE_TAKEN,		 /* the conversation was assigned to another agent */
	ROUTER_REVOKE_CLOSED,		 /* the conversation was resolved or removed */
};
/* "timeout", "agent_unavailable", ... (for the timeline). */
const char *router_revoke_reason_name(enum router_revoke_reason reason);
/* The SPEC §1.2 offer_revoked reason: "timeout", "taken" or "cancelled". */
const char *router_revoke_reason_wire(enum router_revoke_reason reason);

struct router_reason {
	enum router_pick pick;
	int agent_tier;
	int tier_min, tier_max; /* the window; tier_max INT32_MAX when unbounded */
	int eligible;		/* eligible agents at that moment, the chosen one included */
	int eligible_same_tier; /* of them, at the chosen agent's tier */
	int64_t idle_ms;	/* now - the agent's idle_since */
	int64_t waited_ms;	/* now - the conversation's enqueued_at */
};

struct router_decision {
	enum router_decision_kind kind;
	int64_t conversation_id;
	int64_t agent_id;
	int64_t queue_id;
	int64_t offer_id;			 /* OFFER and REVOKE; 0 for REQUEUE */
	int64_t at_ms;				 /* when it was decided */
	int64_t expires_at_ms;			 /* OFFER: at_ms + offer_timeout_s */
	enum router_revoke_reason revoke_reason; /* REVOKE */
	struct router_reason why;		 /* OFFER */
};

/* Everything due at NOW_MS, at most MAX decisions into OUT (in the order given at the top).
 * Returns how many; when it returns MAX, more may be due: call again. */
int router_route(struct router *r, int64_t now_ms, struct router_decision *out, int max);
/* Only the revocations and timeouts of router_route(), no new offers. */
int router_expire(struct router *r, int64_t now_ms, struct router_decision *out, int max);
/* The earliest time at which router_route() has something new to do without any further
 * input: an offer expiring, a waiting conversation reaching an overflow step that widens
 * its tier window, or a reject cooldown ending on a waiting conversation. A value <= the
 * latest now_ms seen means work is due already (a router_route() that returned MAX, or
 * inputs since the last call); INT64_MAX means nothing is scheduled. */
int64_t router_next_deadline_ms(const struct router *r);

/* ---- reading ------------------------------------------------------------------------- */

struct router_conversation_view {
	enum router_conv_state state;
	int64_t queue_id, customer_id;
	enum router_channel channel;
	int tier, priority;
	int64_t enqueued_at_ms;
	int64_t agent_id;      /* OFFERED / ASSIGNED */
	int64_t offer_id;      /* OFFERED */
	int64_t expires_at_ms; /* OFFERED */
};
int router_conversation_get(const struct router *r, int64_t conv_id,
			    struct router_conversation_view *v, enum router_error *error_r);
/* 1-based place in its queue's line of waiting conversations (all channels, in serving
 * order); ROUTER_E_STATE unless waiting. */
int router_conversation_position(const struct router *r, int64_t conv_id, int *position_r,
				 enum router_error *error_r);
/* Estimated wait for the `queued` event: ceil(position x mean handle time / slots), where
 * the mean is the queue's (router_queue_add_handle_time, else default_handle_s) and slots
 * is the capacity in the conversation's class summed over available agents who can serve
 * the queue. -1 when slots is 0 (no one to estimate from). ROUTER_E_STATE unless waiting. */
int router_conversation_estimate(const struct router *r, int64_t conv_id, int64_t *wait_ms_r,
				 enum router_error *error_r);

struct router_agent_view {
	enum router_agent_status status;
	int tier;
	int capacity[ROUTER_CLASS__COUNT];
	int load[ROUTER_CLASS__COUNT]; /* offered + assigned conversations per class */
	int offered, assigned;
	int64_t idle_since_ms;
};
int router_agent_get(const struct router *r, int64_t agent_id, struct router_agent_view *v,
		     enum router_error *error_r);

struct router_queue_stats {
	int waiting, offered, assigned;
	int64_t longest_wait_ms;	/* now - oldest enqueued_at among waiting; 0 when none */
	int agents_available;		/* available agents who can serve it */
	int slots[ROUTER_CLASS__COUNT]; /* their capacity per class */
	int64_t mean_handle_ms;		/* 0 until a handle time is recorded */
};
int router_queue_stats(const struct router *r, int64_t queue_id, int64_t now_ms,
		       struct router_queue_stats *st, enum router_error *error_r);

struct router_stats {
	int queues, agents;
	int waiting, offered, assigned;
	int agents_offline, agents_available, agents_away;
	int agents_busy; /* available agents holding at least one conversation */
};
void router_stats(const struct router *r, struct router_stats *st);

/* Walks every index and checks it against the records (tests, debug builds). Returns 0, or
 * -1 with *error_r naming the first inconsistency (static text). */
int router_verify(const struct router *r, const char **error_r);

#endif
