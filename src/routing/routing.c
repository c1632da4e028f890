/* The routing service: router + store + notifications (see routing.h). */
#include "contactd/routing.h"

#include "contactd/app.h"
#include "contactd/config.h"
#include "contactd/idmap.h"
#include "contactd/log.h"
#include "contactd/router.h"
#include "contactd/store.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define DECISIONS_PER_CALL   64
#define PAUSE_AFTER_ERROR_MS 1000
#define ANNOUNCE_MS	     5000 /* customers waiting hear their new place this often */
/* Ids of the router's stand-ins for calls being stored (routing_preroute): far above any
 * conversations.id. */
#define PREROUTE_BASE (INT64_C(1) << 62)

/* A waiting conversation whose customer was told its place in line. */
struct announced {
	int64_t customer;
	int position;
};

/* One offer: the router's id and the store's (offers.id) once recorded. */
struct offer_link {
	int64_t rt_id, db_id;
	int64_t conv, agent;
	bool revoked; /* the router revoked it before the store recorded it */
	char revoke_wire[16];
	char revoke_decision[16];
	struct offer_link *then; /* an offer of the same conversation, sent once this is done */
	int64_t expires_at_ms;
	json_t *reason; /* why this agent, until the offer is sent */
	bool silent;	/* the agent never got it: no offer_revoked when it is revoked */
};

/* A call being stored whose stand-in the router offered to an agent (routing_preroute). */
struct preroute {
	int64_t prov;  /* the stand-in's id (>= PREROUTE_BASE) */
	int64_t rt_id; /* the router's offer id */
	int64_t agent;
	int64_t expires_at_ms;
	bool gone;		       /* the router revoked it meanwhile (the stand-in is gone) */
	enum router_revoke_reason why; /* then: why */
};

struct routing {
	struct app *app;
	struct routing_notify n;
	struct router *router;
	bool loaded, loading, resyncing;
	int64_t paused_until_ms;
	struct event *timer;
	struct event *kick;
	struct idmap *by_rt;	       /* router offer id -> offer_link */
	struct idmap *by_db;	       /* store offer id -> offer_link */
	struct idmap *queues, *agents; /* ids the router knows (value: non-NULL marker) */
	/* conversation -> its offer_link whose decision is being recorded: a new offer of the
	 * same conversation waits for it, so the store sees them in the router's order */
	struct idmap *deciding;
	json_t *early;		 /* routes opened before the snapshot was loaded */
	struct idmap *announced; /* conversation -> struct announced, while waiting */
	struct idmap *preroutes; /* stand-in id -> struct preroute, while its call is stored */
	int64_t prov_seq;
	int64_t prov_conv;	       /* the stand-in routing_preroute() is routing, or 0 */
	bool prov_hit;		       /* ... and the router offered it: */
	struct router_decision prov_d; /* that offer */
	json_t *snap_queues;	       /* the queues of the last snapshot (id, name, priority) */
	struct event *announce_timer;
	unsigned long long n_offers, n_accepts, n_rejects, n_timeouts;
	void (*assign_hook)(void *arg, const json_t *res);
	void *assign_hook_arg;
};

static int64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void kick(struct routing *r)
{
	event_active(r->kick, EV_TIMEOUT, 0);
}

static void config_of(const struct app *app, struct router_config *rc)
{
	router_config_defaults(rc);
	rc->offer_timeout_s = (int)app->cfg->offer_timeout_s;
	rc->reject_cooldown_s = (int)app->cfg->reject_cooldown_s;
	rc->sticky_agent_s = (int)app->cfg->sticky_agent_s;
}

static int64_t jint(const json_t *o, const char *key)
{
	return (int64_t)json_integer_value(json_object_get(o, key));
}

/* ---- decisions ------------------------------------------------------------------------ */

struct offer_ctx {
	struct routing *r;
	struct offer_link *link;
};

static void link_forget(struct routing *r, struct offer_link *l)
{
	idmap_set(r->by_rt, l->rt_id, NULL);
	if (l->db_id)
		idmap_set(r->by_db, l->db_id, NULL);
	if (idmap_get(r->deciding, l->conv) == l)
		idmap_set(r->deciding, l->conv, NULL);
	json_decref(l->reason);
	free(l);
}

static void pause_routing(struct routing *r, const char *why)
{
	r->paused_until_ms = now_ms() + PAUSE_AFTER_ERROR_MS;
	log_warn("routing_paused", "ms=%d reason=%s", PAUSE_AFTER_ERROR_MS, why);
}

static void send_offer(struct routing *r, struct offer_link *l);

static void decide_cb(void *arg, const struct store_reply *rep)
{
	struct offer_ctx *oc = arg;
	struct routing *r = oc->r;
	struct offer_link *l = oc->link;
	free(oc);
	if (idmap_get(r->deciding, l->conv) == l)
		idmap_set(r->deciding, l->conv, NULL);
	if (l->then) {
		send_offer(r, l->then);
		l->then = NULL;
	}
	if (rep->status != STORE_OK && rep->status != STORE_CONFLICT)
		log_warn("offer_decision_not_recorded", "offer=%lld decision=%s status=%d",
			 (long long)l->db_id, l->revoke_decision, rep->status);
	if (!l->silent)
		r->n.to_agent(r->n.arg, l->agent,
			      json_pack("{s:s, s:I, s:I, s:s}", "type", "offer_revoked", "offer",
					(json_int_t)l->db_id, "conversation", (json_int_t)l->conv,
					"reason", l->revoke_wire));
	link_forget(r, l);
}

static void record_revoke(struct routing *r, struct offer_link *l)
{
	struct offer_ctx *oc = malloc(sizeof(*oc));
	oc->r = r;
	oc->link = l;
	json_t *p = json_pack("{s:I, s:s, s:s}", "offer", (json_int_t)l->db_id, "decision",
			      l->revoke_decision, "reason", l->revoke_wire);
	idmap_set(r->deciding, l->conv, l);
	if (store_call_json(r->app->store, STORE_Q_OFFER_DECIDE, p, decide_cb, oc) < 0) {
		struct store_reply rep = {.status = STORE_UNAVAILABLE};
		decide_cb(oc, &rep);
	}
}

/* The `offer` event to L's agent; ROUTE: cd_route_info's object of its conversation. */
static void push_offer(struct routing *r, const struct offer_link *l, const json_t *route)
{
	int64_t expires = jint(route, "offer_expires_at");
	int64_t left = (expires - now_ms() + 999) / 1000;
	r->n.to_agent(r->n.arg, l->agent,
		      json_pack("{s:s, s:I, s:I, s:O, s:O, s:O, s:O, s:{s:O}, s:n, s:I}", "type",
				"offer", "offer", (json_int_t)l->db_id, "conversation",
				(json_int_t)l->conv, "channel", json_object_get(route, "channel"),
				"queue", json_object_get(route, "queue"), "priority",
				json_object_get(route, "priority"), "tier",
				json_object_get(route, "tier"), "customer", "id",
				json_object_get(route, "customer"), "preview", "expires_in_s",
				(json_int_t)(left > 0 ? left : 0)));
}

static void offer_cb(void *arg, const struct store_reply *rep)
{
	struct offer_ctx *oc = arg;
	struct routing *r = oc->r;
	struct offer_link *l = oc->link;
	free(oc);
	json_t *res =
	    rep->status == STORE_OK && rep->value ? json_loads(rep->value, 0, NULL) : NULL;
	if (!res) {
		enum router_error e;
		if (l->revoked) {
			struct offer_link *then = l->then;
			link_forget(r, l);
			if (then)
				send_offer(r, then);
		} else if (rep->status == STORE_CONFLICT || rep->status == STORE_NOT_FOUND) {
			/* the conversation is no longer waiting (closed meanwhile) */
			log_info("routing_drop", "conversation=%lld reason=not_queued_in_store",
				 (long long)l->conv);
			router_conversation_remove(r->router, l->conv, now_ms(), &e);
			link_forget(r, l);
		} else {
			router_offer_cancel(r->router, l->rt_id, now_ms(), &e);
			link_forget(r, l);
			pause_routing(r, "offer_not_recorded");
		}
		kick(r);
		return;
	}
	l->db_id = jint(res, "offer");
	idmap_set(r->by_db, l->db_id, l);
	if (l->revoked)
		record_revoke(r, l);
	else
		push_offer(r, l, json_object_get(res, "route"));
	json_decref(res);
}

static void handle_offer(struct routing *r, const struct router_decision *d)
{
	if (d->conversation_id >= PREROUTE_BASE) {
		enum router_error e;
		if (d->conversation_id == r->prov_conv && !r->prov_hit) {
			/* routing_preroute's stand-in: the pick goes to the call's transaction */
			r->prov_hit = true;
			r->prov_d = *d;
			r->n_offers++;
			return;
		}
		/* a stand-in leaves the router when its offer ends: not reached */
		router_conversation_remove(r->router, d->conversation_id, now_ms(), &e);
		return;
	}
	struct offer_link *l = calloc(1, sizeof(*l));
	r->n_offers++;
	l->rt_id = d->offer_id;
	l->conv = d->conversation_id;
	l->agent = d->agent_id;
	idmap_set(r->by_rt, l->rt_id, l);
	log_info("offer",
		 "conversation=%lld agent=%lld pick=%s eligible=%d tier=%d idle_ms=%lld "
		 "waited_ms=%lld",
		 (long long)d->conversation_id, (long long)d->agent_id,
		 router_pick_name(d->why.pick), d->why.eligible, d->why.agent_tier,
		 (long long)d->why.idle_ms, (long long)d->why.waited_ms);
	json_t *reason =
	    json_pack("{s:s, s:i, s:i, s:i, s:I, s:I}", "pick", router_pick_name(d->why.pick),
		      "agent_tier", d->why.agent_tier, "eligible", d->why.eligible,
		      "eligible_same_tier", d->why.eligible_same_tier, "idle_ms",
		      (json_int_t)d->why.idle_ms, "waited_ms", (json_int_t)d->why.waited_ms);
	l->expires_at_ms = d->expires_at_ms;
	l->reason = reason;
	struct offer_link *busy = idmap_get(r->deciding, l->conv);
	if (busy) {
		busy->then = l; /* after the revocation before it is recorded */
		return;
	}
	send_offer(r, l);
}

static void send_offer(struct routing *r, struct offer_link *l)
{
	json_t *reason = l->reason;
	l->reason = NULL;
	json_t *p = json_pack("{s:I, s:I, s:I, s:o}", "conversation", (json_int_t)l->conv, "agent",
			      (json_int_t)l->agent, "expires_at", (json_int_t)l->expires_at_ms,
			      "reason", reason ? reason : json_null());
	struct offer_ctx *oc = malloc(sizeof(*oc));
	oc->r = r;
	oc->link = l;
	if (store_call_json(r->app->store, STORE_Q_OFFER_CREATE, p, offer_cb, oc) < 0) {
		struct store_reply rep = {.status = STORE_UNAVAILABLE};
		offer_cb(oc, &rep);
	}
}

/* L is being revoked for WHY: the reason sent to its agent and the decision recorded. */
static void link_revoking(struct offer_link *l, enum router_revoke_reason why)
{
	snprintf(l->revoke_wire, sizeof(l->revoke_wire), "%s", router_revoke_reason_wire(why));
	snprintf(l->revoke_decision, sizeof(l->revoke_decision), "%s",
		 why == ROUTER_REVOKE_TIMEOUT ? "expired" : "revoked");
}

static void handle_revoke(struct routing *r, const struct router_decision *d)
{
	if (d->conversation_id >= PREROUTE_BASE) {
		/* a stand-in's offer: its call is being stored with it (or was: then this is
		 * the stand-in leaving, nothing to do) */
		struct preroute *pr = idmap_get(r->preroutes, d->conversation_id);
		if (pr && !pr->gone && pr->rt_id == d->offer_id) {
			enum router_error e;
			pr->gone = true;
			pr->why = d->revoke_reason;
			router_conversation_remove(r->router, pr->prov, now_ms(), &e);
		}
		return;
	}
	struct offer_link *l = idmap_get(r->by_rt, d->offer_id);
	if (!l)
		return;
	link_revoking(l, d->revoke_reason);
	if (d->revoke_reason == ROUTER_REVOKE_TIMEOUT)
		r->n_timeouts++;
	log_info("offer_revoked", "offer=%lld conversation=%lld agent=%lld reason=%s",
		 (long long)l->db_id, (long long)l->conv, (long long)l->agent,
		 router_revoke_reason_name(d->revoke_reason));
	if (!l->db_id) {
		l->revoked = true; /* offer_cb records the revocation once the offer exists */
		idmap_set(r->deciding, l->conv, l);
		return;
	}
	record_revoke(r, l);
}

static void route_now(struct routing *r)
{
	if (!r->loaded)
		return;
	int64_t now = now_ms();
	if (now >= r->paused_until_ms) {
		struct router_decision d[DECISIONS_PER_CALL];
		int n;
		do {
			n = router_route(r->router, now, d, DECISIONS_PER_CALL);
			for (int i = 0; i < n; i++) {
				if (d[i].kind == ROUTER_DECISION_OFFER)
					handle_offer(r, &d[i]);
				else if (d[i].kind == ROUTER_DECISION_REVOKE)
					handle_revoke(r, &d[i]);
				else
					log_warn("routing_requeue", "conversation=%lld",
						 (long long)d[i].conversation_id);
			}
		} while (n == DECISIONS_PER_CALL);
	}
	int64_t next = router_next_deadline_ms(r->router);
	if (r->paused_until_ms > now && (next == INT64_MAX || next < r->paused_until_ms))
		next = r->paused_until_ms;
	if (next == INT64_MAX) {
		evtimer_del(r->timer);
		return;
	}
	int64_t wait = next > now ? next - now : 0;
	struct timeval tv = {(time_t)(wait / 1000), (suseconds_t)(wait % 1000) * 1000};
	evtimer_add(r->timer, &tv);
}

static void timer_cb(evutil_socket_t fd, short what, void *arg)
{
	route_now(arg);
}

/* ---- inputs --------------------------------------------------------------------------- */

static int add_route(struct routing *r, const json_t *route, int64_t now)
{
	int ch = router_channel_parse(json_string_value(json_object_get(route, "channel")));
	struct router_conversation_info ci = {
	    .id = jint(route, "id"),
	    .queue_id = jint(route, "queue"),
	    .customer_id = jint(route, "customer"),
	    .channel = ch < 0 ? ROUTER_CHANNEL_CHAT : (enum router_channel)ch,
	    .tier = (int)jint(route, "tier") > 0 ? (int)jint(route, "tier") : 1,
	    .priority = (int)jint(route, "priority"),
	    .enqueued_at_ms = jint(route, "enqueued_at"),
	    .last_agent_id = jint(route, "last_agent"),
	    .last_agent_at_ms = jint(route, "last_agent_at"),
	};
	enum router_error e = ROUTER_OK;
	if (router_conversation_add(r->router, &ci, now, &e) < 0 && e != ROUTER_E_EXISTS) {
		log_warn("routing_add_failed", "conversation=%lld queue=%lld error=%s",
			 (long long)ci.id, (long long)ci.queue_id, router_error_name(e));
		return -1;
	}
	return e == ROUTER_E_EXISTS ? 1 : 0;
}

static void send_position(struct routing *r, int64_t conv, int64_t customer, int pos,
			  int64_t wait_s)
{
	r->n.to_customer(r->n.arg, customer,
			 json_pack("{s:s, s:I, s:i, s:o}", "type", "queued", "conversation",
				   (json_int_t)conv, "position", pos, "estimated_wait_s",
				   wait_s >= 0 ? json_integer(wait_s) : json_null()));
}

static void tell_position(struct routing *r, const json_t *route)
{
	int pos;
	int64_t wait_s;
	int64_t conv = jint(route, "id");
	if (routing_position(r, conv, &pos, &wait_s) < 0)
		return;
	int64_t customer = jint(route, "customer");
	send_position(r, conv, customer, pos, wait_s);
	struct announced *an = idmap_get(r->announced, conv);
	if (!an && (an = malloc(sizeof(*an))) != NULL)
		idmap_set(r->announced, conv, an);
	if (an) {
		an->customer = customer;
		an->position = pos;
	}
}

/* Every ANNOUNCE_MS: customers whose place in line changed hear the new one; entries of
 * conversations no longer waiting go. O(waiting x log waiting). */
struct announce_pass {
	struct routing *r;
	int64_t *gone;
	size_t ngone, cap;
};

static void announce_one(int64_t conv, void *value, void *arg)
{
	struct announce_pass *ap = arg;
	struct announced *an = value;
	int pos;
	int64_t wait_s;
	if (routing_position(ap->r, conv, &pos, &wait_s) < 0) {
		if (ap->ngone == ap->cap) {
			size_t cap = ap->cap ? ap->cap * 2 : 64;
			int64_t *g = realloc(ap->gone, cap * sizeof(*g));
			if (!g)
				return; /* the next pass retries */
			ap->gone = g;
			ap->cap = cap;
		}
		ap->gone[ap->ngone++] = conv;
		return;
	}
	if (pos == an->position)
		return;
	an->position = pos;
	send_position(ap->r, conv, an->customer, pos, wait_s);
}

static void announce_cb(evutil_socket_t fd, short what, void *arg)
{
	struct routing *r = arg;
	if (!r->loaded)
		return;
	struct announce_pass ap = {r, NULL, 0, 0};
	idmap_each(r->announced, announce_one, &ap);
	for (size_t i = 0; i < ap.ngone; i++) {
		free(idmap_get(r->announced, ap.gone[i]));
		idmap_set(r->announced, ap.gone[i], NULL);
	}
	free(ap.gone);
}

void routing_conversation_opened(struct routing *r, const json_t *route)
{
	if (!r)
		return;
	if (!r->loaded) {
		json_array_append(r->early, (json_t *)route);
		return;
	}
	if (add_route(r, route, now_ms()) == 0)
		tell_position(r, route);
	kick(r);
}

/* The queue a PBX's `queued` names, as cd_phone_event resolves it: a name (not all digits),
 * an id, else DEFAULT_QUEUE by name, else the lowest id. 0: not known here. */
static int64_t preroute_queue(const struct routing *r, const json_t *queue,
			      const char *default_queue, int *priority_r)
{
	const char *name = NULL;
	int64_t id = 0;
	if (json_is_integer(queue)) {
		id = json_integer_value(queue);
	} else if (json_is_string(queue) && json_string_length(queue) > 0) {
		const char *q = json_string_value(queue);
		if (strspn(q, "0123456789") == strlen(q)) {
			if (strlen(q) > 18)
				return 0;
			id = strtoll(q, NULL, 10);
		} else {
			name = q;
		}
	} else if (queue && !json_is_null(queue)) {
		return 0;
	} else if (default_queue && *default_queue) {
		name = default_queue;
	}
	size_t i;
	json_t *q;
	int64_t best = 0;
	int prio = 0;
	json_array_foreach(r->snap_queues, i, q)
	{
		int64_t qid = jint(q, "id");
		const char *qname = json_string_value(json_object_get(q, "name"));
		bool match = id	    ? qid == id
			     : name ? qname && strcasecmp(qname, name) == 0
				    : !best || qid < best;
		if (match) {
			best = qid;
			prio = (int)jint(q, "priority");
			if (id || name)
				break;
		}
	}
	if (best && !idmap_get(r->queues, best))
		return 0;
	*priority_r = prio;
	return best;
}

int64_t routing_preroute(struct routing *r, const json_t *queue, const char *default_queue,
			 json_t **offer_r)
{
	*offer_r = NULL;
	int64_t now = now_ms();
	if (!r || !r->loaded || now < r->paused_until_ms)
		return 0;
	int priority = 0;
	int64_t qid = preroute_queue(r, queue, default_queue, &priority);
	if (!qid)
		return 0;
	int64_t prov = PREROUTE_BASE + ++r->prov_seq;
	struct router_conversation_info ci = {
	    .id = prov,
	    .queue_id = qid,
	    .channel = ROUTER_CHANNEL_VOICE,
	    .tier = 1,
	    .priority = priority,
	    .enqueued_at_ms = now,
	};
	enum router_error e;
	if (router_conversation_add(r->router, &ci, now, &e) < 0)
		return 0;
	r->prov_conv = prov;
	r->prov_hit = false;
	route_now(r); /* everything due is routed as usual; the stand-in's offer is kept */
	r->prov_conv = 0;
	if (!r->prov_hit) {
		router_conversation_remove(r->router, prov, now, &e);
		return 0;
	}
	const struct router_decision *d = &r->prov_d;
	struct preroute *pr = calloc(1, sizeof(*pr));
	pr->prov = prov;
	pr->rt_id = d->offer_id;
	pr->agent = d->agent_id;
	pr->expires_at_ms = d->expires_at_ms;
	idmap_set(r->preroutes, prov, pr);
	log_info("offer",
		 "conversation=new agent=%lld pick=%s eligible=%d tier=%d idle_ms=%lld "
		 "waited_ms=0 with=call_event",
		 (long long)d->agent_id, router_pick_name(d->why.pick), d->why.eligible,
		 d->why.agent_tier, (long long)d->why.idle_ms);
	*offer_r = json_pack(
	    "{s:I, s:I, s:I, s:{s:s, s:i, s:i, s:i, s:I, s:I}, s:i}", "queue", (json_int_t)qid,
	    "agent", (json_int_t)d->agent_id, "expires_at", (json_int_t)d->expires_at_ms, "reason",
	    "pick", router_pick_name(d->why.pick), "agent_tier", d->why.agent_tier, "eligible",
	    d->why.eligible, "eligible_same_tier", d->why.eligible_same_tier, "idle_ms",
	    (json_int_t)d->why.idle_ms, "waited_ms", (json_int_t)0, "sticky_s",
	    (int)r->app->cfg->sticky_agent_s);
	return prov;
}

bool routing_preroute_done(struct routing *r, int64_t handle, const json_t *res)
{
	struct preroute *pr = r ? idmap_get(r->preroutes, handle) : NULL;
	if (!pr)
		return false;
	idmap_set(r->preroutes, handle, NULL);
	int64_t now = now_ms();
	enum router_error e;
	if (!pr->gone)
		router_conversation_remove(r->router, pr->prov, now, &e); /* frees the slot */
	int64_t offer = res ? jint(res, "offer") : 0;
	const json_t *route = res ? json_object_get(res, "route") : NULL;
	bool taken = false;
	if (offer > 0 && json_is_object(route)) {
		/* the store has the conversation offered: the router gets it so, and the agent
		 * its `offer` -- unless the router took the pick back meanwhile (the agent went
		 * away...): then the offer is recorded as revoked and the call waits */
		int64_t conv = jint(route, "id");
		taken = add_route(r, route, now) >= 0;
		struct offer_link *l = calloc(1, sizeof(*l));
		l->rt_id = pr->rt_id;
		l->db_id = offer;
		l->conv = conv;
		l->agent = pr->agent;
		l->expires_at_ms = pr->expires_at_ms;
		if (!pr->gone && taken &&
		    router_conversation_restore_offer(r->router, conv, pr->agent, pr->rt_id,
						      pr->expires_at_ms, now, &e) == 0) {
			idmap_set(r->by_rt, l->rt_id, l);
			idmap_set(r->by_db, l->db_id, l);
			push_offer(r, l, route);
		} else {
			log_info("offer_revoked",
				 "offer=%lld conversation=%lld agent=%lld reason=%s",
				 (long long)offer, (long long)conv, (long long)pr->agent,
				 pr->gone ? router_revoke_reason_name(pr->why) : "not_routable");
			/* not routable: what a closed conversation's offer gets */
			link_revoking(l, pr->gone ? pr->why : ROUTER_REVOKE_CLOSED);
			l->rt_id = 0; /* not the router's any more */
			l->silent = true;
			record_revoke(r, l);
		}
	}
	if (offer <= 0)
		r->n_offers--; /* the pick was not used: no offer was made */
	free(pr);
	kick(r);
	return taken;
}

void routing_conversation_requeued(struct routing *r, const json_t *route)
{
	if (!r)
		return;
	if (!r->loaded)
		return;
	enum router_error e;
	int64_t conv = jint(route, "id");
	if (router_conversation_transfer(r->router, conv, jint(route, "queue"), now_ms(), &e) < 0)
		add_route(r, route, now_ms());
	tell_position(r, route);
	kick(r);
}

void routing_conversation_resolved(struct routing *r, int64_t conv_id)
{
	if (!r)
		return;
	enum router_error e;
	if (r->loaded && router_conversation_resolve(r->router, conv_id, now_ms(), &e) == 0)
		kick(r);
}

void routing_conversation_removed(struct routing *r, int64_t conv_id)
{
	if (!r)
		return;
	enum router_error e;
	if (r->loaded && router_conversation_remove(r->router, conv_id, now_ms(), &e) == 0)
		kick(r);
}

void routing_set_assign_hook(struct routing *r, void (*fn)(void *arg, const json_t *res), void *arg)
{
	if (!r)
		return;
	r->assign_hook = fn;
	r->assign_hook_arg = arg;
}

void routing_conversation_handed(struct routing *r, const json_t *route, int64_t agent_id)
{
	if (!r || !r->loaded)
		return;
	enum router_error e;
	int64_t conv = jint(route, "id");
	int64_t now = now_ms();
	if (router_conversation_assign(r->router, conv, agent_id, now, &e) < 0 &&
	    (add_route(r, route, now) < 0 ||
	     router_conversation_assign(r->router, conv, agent_id, now, &e) < 0))
		log_warn("routing_assign_failed", "conversation=%lld agent=%lld error=%s",
			 (long long)conv, (long long)agent_id, router_error_name(e));
	kick(r);
}

void routing_conversation_escalated(struct routing *r, int64_t conv_id, int tier, int priority)
{
	if (!r)
		return;
	enum router_error e;
	if (r->loaded &&
	    router_conversation_update(r->router, conv_id, tier, priority, now_ms(), &e) == 0)
		kick(r);
}

void routing_agent_status(struct routing *r, int64_t agent_id, const char *status)
{
	if (!r)
		return;
	int st = router_agent_status_parse(status);
	enum router_error e;
	if (!r->loaded || st < 0)
		return;
	if (router_agent_set_status(r->router, agent_id, (enum router_agent_status)st, now_ms(),
				    &e) < 0) {
		log_warn("routing_agent_unknown", "agent=%lld error=%s", (long long)agent_id,
			 router_error_name(e));
		routing_resync(r);
		return;
	}
	kick(r);
}

struct answer_ctx {
	struct routing *r;
	struct offer_link *link;
	bool accept;
	char agent_name[128];
	routing_done_cb done;
	void *arg;
};

static void answer_cb(void *arg, const struct store_reply *rep)
{
	struct answer_ctx *ac = arg;
	struct routing *r = ac->r;
	struct offer_link *l = ac->link;
	json_t *res =
	    rep->status == STORE_OK && rep->value ? json_loads(rep->value, 0, NULL) : NULL;
	enum router_error e;
	if (!res) {
		struct router_conversation_view v;
		if (ac->accept &&
		    router_conversation_get(r->router, l->conv, &v, &e) == 0) /* waits again */
			router_conversation_transfer(r->router, l->conv, v.queue_id, now_ms(), &e);
		ac->done(ac->arg, rep->status == STORE_UNAVAILABLE ? "unavailable" : "conflict",
			 rep->message ? rep->message : "the answer could not be recorded");
	} else {
		ac->done(ac->arg, NULL, NULL);
		if (ac->accept) {
			r->n.to_agent(r->n.arg, l->agent,
				      json_pack("{s:s, s:I, s:O, s:O, s:O}", "type", "assigned",
						"conversation", (json_int_t)l->conv, "customer",
						json_object_get(res, "customer"), "channel",
						json_object_get(res, "channel"), "queue",
						json_object_get(res, "queue")));
			r->n.to_customer(r->n.arg, jint(res, "customer"),
					 json_pack("{s:s, s:I, s:{s:s}}", "type", "assigned",
						   "conversation", (json_int_t)l->conv, "agent",
						   "name", ac->agent_name));
			if (r->assign_hook)
				r->assign_hook(r->assign_hook_arg, res);
		}
	}
	json_decref(res);
	link_forget(r, l);
	free(ac);
	kick(r);
}

void routing_offer_answer(struct routing *r, int64_t agent_id, const char *agent_name,
			  int64_t offer_id, bool accept, const char *reason, routing_done_cb done,
			  void *arg)
{
	struct offer_link *l = r && r->loaded ? idmap_get(r->by_db, offer_id) : NULL;
	if (!l || l->agent != agent_id || l->revoked) {
		done(arg, "not_found", "no such offer (expired, taken or never yours)");
		return;
	}
	enum router_error e;
	int64_t now = now_ms();
	int rc = accept ? router_offer_accept(r->router, l->rt_id, now, &e)
			: router_offer_reject(r->router, l->rt_id, now, &e);
	if (rc < 0) {
		done(arg, "not_found", "no such offer (expired, taken or never yours)");
		return;
	}
	if (accept)
		r->n_accepts++;
	else
		r->n_rejects++;
	idmap_set(r->by_db, l->db_id, NULL); /* answered: no second answer */
	l->db_id = 0;			     /* so link_forget leaves by_db alone */
	struct answer_ctx *ac = calloc(1, sizeof(*ac));
	ac->r = r;
	ac->link = l;
	ac->accept = accept;
	snprintf(ac->agent_name, sizeof(ac->agent_name), "%s", agent_name ? agent_name : "");
	ac->done = done;
	ac->arg = arg;
	json_t *p = json_pack("{s:I, s:s, s:s?}", "offer", (json_int_t)offer_id, "decision",
			      accept ? "accepted" : "rejected", "reason", reason);
	if (store_call_json(r->app->store, STORE_Q_OFFER_DECIDE, p, answer_cb, ac) < 0) {
		struct store_reply rep = {.status = STORE_UNAVAILABLE};
		answer_cb(ac, &rep);
	}
}

int routing_conversation_parties(const struct routing *r, int64_t conv_id, int64_t *agent_r,
				 int64_t *customer_r)
{
	struct router_conversation_view v;
	enum router_error e;
	if (!r || !r->loaded || router_conversation_get(r->router, conv_id, &v, &e) < 0)
		return -1;
	*agent_r = v.state == ROUTER_CONV_ASSIGNED ? v.agent_id : 0;
	*customer_r = v.customer_id;
	return 0;
}

int routing_position(const struct routing *r, int64_t conv_id, int *position_r, int64_t *wait_s_r)
{
	enum router_error e;
	int64_t wait_ms;
	if (!r || !r->loaded ||
	    router_conversation_position(r->router, conv_id, position_r, &e) < 0)
		return -1;
	if (router_conversation_estimate(r->router, conv_id, &wait_ms, &e) < 0 || wait_ms < 0)
		*wait_s_r = -1;
	else
		*wait_s_r = (wait_ms + 999) / 1000;
	return 0;
}

/* ---- snapshot ------------------------------------------------------------------------- */

static int skills_of(const json_t *obj, struct router_skill *out, int max)
{
	const char *key;
	json_t *v;
	int n = 0;
	json_object_foreach((json_t *)obj, key, v)
	{
		if (n == max)
			break;
		out[n].skill_id = strtoll(key, NULL, 10);
		out[n].level = (int)json_integer_value(v);
		n++;
	}
	return n;
}

struct gone {
	struct idmap *seen;
	int64_t *ids;
	size_t n, cap;
};

static void collect_gone(int64_t key, void *value, void *arg)
{
	struct gone *g = arg;
	if (idmap_get(g->seen, key))
		return;
	if (g->n == g->cap) {
		g->cap = g->cap ? 2 * g->cap : 16;
		g->ids = realloc(g->ids, g->cap * sizeof(*g->ids));
	}
	g->ids[g->n++] = key;
}

/* Sets every queue and agent of SNAP; forgets those the store no longer has. */
static void apply_setup(struct routing *r, const json_t *snap, int64_t now)
{
	struct idmap *seen_q = idmap_new(), *seen_a = idmap_new();
	size_t i;
	json_t *q, *a;
	enum router_error e;
	json_array_foreach(json_object_get(snap, "queues"), i, q)
	{
		struct router_skill sk[64];
		struct router_overflow of[32];
		json_t *steps = json_object_get(q, "overflow");
		int nof = (int)json_array_size(steps);
		if (nof > 32)
			nof = 32;
		for (int j = 0; j < nof; j++) {
			json_t *step = json_array_get(steps, (size_t)j);
			of[j].after_s = (int)jint(step, "after_s");
			of[j].tier = (int)jint(step, "tier");
		}
		struct router_queue_info qi = {
		    .id = jint(q, "id"),
		    .priority = (int)jint(q, "priority"),
		    .skills = sk,
		    .nskills = skills_of(json_object_get(q, "skills"), sk, 64),
		    .overflow = of,
		    .noverflow = nof,
		};
		if (router_queue_set(r->router, &qi, now, &e) < 0)
			log_warn("routing_queue_rejected", "queue=%lld error=%s", (long long)qi.id,
				 router_error_name(e));
		idmap_set(seen_q, qi.id, (void *)1);
		idmap_set(r->queues, qi.id, (void *)1);
	}
	json_array_foreach(json_object_get(snap, "agents"), i, a)
	{
		struct router_skill sk[64];
		json_t *cap = json_object_get(a, "capacity");
		struct router_agent_info ai = {
		    .id = jint(a, "id"),
		    .tier = (int)jint(a, "tier") > 0 ? (int)jint(a, "tier") : 1,
		    .skills = sk,
		    .nskills = skills_of(json_object_get(a, "skills"), sk, 64),
		    .capacity = {(int)jint(cap, "chat"), (int)jint(cap, "email"),
				 (int)jint(cap, "voice")},
		};
		if (router_agent_set(r->router, &ai, now, &e) < 0)
			log_warn("routing_agent_rejected", "agent=%lld error=%s", (long long)ai.id,
				 router_error_name(e));
		idmap_set(seen_a, ai.id, (void *)1);
		idmap_set(r->agents, ai.id, (void *)1);
	}
	/* what the store no longer has goes */
	struct gone gone = {.seen = seen_a};
	idmap_each(r->agents, collect_gone, &gone);
	for (size_t k = 0; k < gone.n; k++) {
		router_agent_remove(r->router, gone.ids[k], now, &e);
		idmap_set(r->agents, gone.ids[k], NULL);
	}
	gone.n = 0;
	gone.seen = seen_q;
	idmap_each(r->queues, collect_gone, &gone);
	for (size_t k = 0; k < gone.n; k++)
		if (router_queue_remove(r->router, gone.ids[k], &e) == 0)
			idmap_set(r->queues, gone.ids[k], NULL);
	free(gone.ids);
	idmap_free(&seen_q);
	idmap_free(&seen_a);
}

static void apply_conversations(struct routing *r, const json_t *snap, int64_t now)
{
	size_t i;
	json_t *c;
	enum router_error e;
	int64_t cooldown_ms = (int64_t)r->app->cfg->reject_cooldown_s * 1000;
	json_array_foreach(json_object_get(snap, "conversations"), i, c)
	{
		if (add_route(r, c, now) < 0)
			continue;
		int64_t conv = jint(c, "id");
		size_t j;
		json_t *rej;
		json_array_foreach(json_object_get(c, "rejected"), j, rej)
		{
			int64_t until = jint(rej, "at") + cooldown_ms;
			if (until > now)
				router_conversation_restore_cooldown(
				    r->router, conv, jint(rej, "agent"), until, now, &e);
		}
		const char *status = json_string_value(json_object_get(c, "status"));
		bool held =
		    status && (strcmp(status, "assigned") == 0 ||
			       strcmp(status, "pending") == 0); /* pending: still its agent's */
		if (held && jint(c, "agent") > 0) {
			router_conversation_assign(r->router, conv, jint(c, "agent"), now, &e);
		} else if (jint(c, "offer") > 0) {
			int64_t db = jint(c, "offer");
			if (router_conversation_restore_offer(
				r->router, conv, jint(c, "offer_agent"), db,
				jint(c, "offer_expires_at"), now, &e) == 0) {
				struct offer_link *l = calloc(1, sizeof(*l));
				l->rt_id = l->db_id = db;
				l->conv = conv;
				l->agent = jint(c, "offer_agent");
				idmap_set(r->by_rt, db, l);
				idmap_set(r->by_db, db, l);
			}
		} else {
			/* waiting: its customer hears its place at the next announcement */
			struct announced *an = malloc(sizeof(*an));
			if (an) {
				an->customer = jint(c, "customer");
				an->position = 0;
				idmap_set(r->announced, conv, an);
			}
		}
	}
}

static void snapshot_cb(void *arg, const struct store_reply *rep)
{
	struct routing *r = arg;
	bool initial = !r->loaded;
	r->loading = r->resyncing = false;
	json_t *snap =
	    rep->status == STORE_OK && rep->value ? json_loads(rep->value, 0, NULL) : NULL;
	if (!snap) {
		log_error("routing_snapshot_failed", "status=%d", rep->status);
		return;
	}
	int64_t now = now_ms();
	apply_setup(r, snap, now);
	json_decref(r->snap_queues);
	r->snap_queues = json_incref(json_object_get(snap, "queues"));
	if (initial) {
		apply_conversations(r, snap, now);
		r->loaded = true;
		size_t i;
		json_t *route;
		json_array_foreach(r->early, i, route)
		{
			add_route(r, route, now);
		}
		json_array_clear(r->early);
		struct router_stats st;
		router_stats(r->router, &st);
		log_info("routing_loaded", "queues=%d agents=%d waiting=%d offered=%d assigned=%d",
			 st.queues, st.agents, st.waiting, st.offered, st.assigned);
	}
	json_decref(snap);
	kick(r);
}

void routing_store_ready(struct routing *r)
{
	if (!r)
		return;
	if (r->loaded || r->loading)
		return;
	r->loading = true;
	if (store_call(r->app->store, STORE_Q_ROUTER_SNAPSHOT, 0, NULL, snapshot_cb, r) < 0)
		r->loading = false;
}

void routing_resync(struct routing *r)
{
	if (!r)
		return;
	if (!r->loaded || r->resyncing)
		return;
	r->resyncing = true;
	if (store_call(r->app->store, STORE_Q_ROUTER_SNAPSHOT, 0, NULL, snapshot_cb, r) < 0)
		r->resyncing = false;
}

bool routing_loaded(const struct routing *r)
{
	return r->loaded;
}

void routing_reload(struct routing *r)
{
	if (!r)
		return;
	struct router_config rc;
	config_of(r->app, &rc);
	router_set_config(r->router, &rc);
}

static void kick_cb(evutil_socket_t fd, short what, void *arg)
{
	route_now(arg);
}

struct routing *routing_new(struct app *app, const struct routing_notify *notify)
{
	struct routing *r = calloc(1, sizeof(*r));
	r->app = app;
	r->n = *notify;
	struct router_config rc;
	config_of(app, &rc);
	r->router = router_new(&rc);
	r->timer = evtimer_new(app->base, timer_cb, r);
	r->kick = event_new(app->base, -1, 0, kick_cb, r);
	r->by_rt = idmap_new();
	r->by_db = idmap_new();
	r->queues = idmap_new();
	r->agents = idmap_new();
	r->deciding = idmap_new();
	r->early = json_array();
	r->announced = idmap_new();
	r->preroutes = idmap_new();
	r->announce_timer = event_new(app->base, -1, EV_PERSIST, announce_cb, r);
	struct timeval every = {ANNOUNCE_MS / 1000, (ANNOUNCE_MS % 1000) * 1000};
	event_add(r->announce_timer, &every);
	return r;
}

static void free_link(int64_t key, void *value, void *arg)
{
	struct offer_link *l = value;
	json_decref(l->reason);
	free(l);
}

static void free_links(struct routing *r)
{
	idmap_each(r->by_rt, free_link, NULL); /* every link is in by_rt */
}

static void free_value(int64_t key, void *value, void *arg)
{
	free(value);
}

void routing_free(struct routing **rp)
{
	struct routing *r = *rp;
	if (!r)
		return;
	*rp = NULL;
	free_links(r);
	event_free(r->timer);
	event_free(r->kick);
	idmap_free(&r->by_rt);
	idmap_free(&r->by_db);
	idmap_free(&r->queues);
	idmap_free(&r->agents);
	idmap_free(&r->deciding);
	json_decref(r->early);
	idmap_each(r->announced, free_value, NULL);
	idmap_free(&r->announced);
	idmap_each(r->preroutes, free_value, NULL);
	idmap_free(&r->preroutes);
	json_decref(r->snap_queues);
	event_free(r->announce_timer);
	router_free(&r->router);
	free(r);
}

void routing_get_stats(const struct routing *r, struct routing_stats *st)
{
	memset(st, 0, sizeof(*st));
	if (!r || !r->loaded)
		return;
	struct router_stats rs;
	router_stats(r->router, &rs);
	st->waiting = rs.waiting;
	st->offered = rs.offered;
	st->assigned = rs.assigned;
	st->agents_available = rs.agents_available;
	st->agents_away = rs.agents_away;
	st->agents_offline = rs.agents_offline;
	st->agents_busy = rs.agents_busy;
	st->offers = r->n_offers;
	st->accepts = r->n_accepts;
	st->rejects = r->n_rejects;
	st->timeouts = r->n_timeouts;
}

struct qstats_ctx {
	const struct routing *r;
	json_t *arr;
	int64_t now;
};

static void queue_stats_one(int64_t id, void *value, void *arg)
{
	struct qstats_ctx *q = arg;
	struct router_queue_stats st;
	enum router_error e;
	if (router_queue_stats(q->r->router, id, q->now, &st, &e) < 0)
		return;
	json_array_append_new(
	    q->arr, json_pack("{s:I, s:i, s:i, s:i, s:I, s:i}", "queue", (json_int_t)id, "waiting",
			      st.waiting, "offered", st.offered, "assigned", st.assigned,
			      "longest_wait_s", (json_int_t)(st.longest_wait_ms / 1000),
			      "agents_available", st.agents_available));
}

json_t *routing_stats_json(const struct routing *r)
{
	struct routing_stats st;
	routing_get_stats(r, &st);
	json_t *queues = json_array();
	if (r && r->loaded) {
		struct qstats_ctx q = {r, queues, now_ms()};
		idmap_each(r->queues, queue_stats_one, &q);
	}
	return json_pack("{s:o, s:{s:i, s:i, s:i, s:i}}", "queues", queues, "agents", "available",
			 st.agents_available - st.agents_busy, "busy", st.agents_busy, "away",
			 st.agents_away, "offline", st.agents_offline);
}
