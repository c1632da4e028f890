/* router decisions: eligibility, the two searches (best agent for a conversation, best
 * conversation for an agent) and router_route().
 *
 * The work heap holds what may have an eligible pair: waiting conversations keyed by their
 * serving key, and agents with a free slot keyed by an upper bound of the key of their best
 * conversation (unknown = first). Invariant: every eligible (conversation, agent) pair has
 * its conversation in the heap, or its agent in the heap with a key no later than the
 * conversation's. Inputs keep it by marking what they may have made eligible; time keeps
 * it through the wait timers (overflow steps, cooldown ends), fired before deciding.
 * Deciding only removes pairs, so stored agent keys stay upper bounds, and the top of the
 * heap, once its key is exact, is the first conversation in serving order that has an
 * eligible agent: the reference rule of the header, found without scanning. */
#include "router_internal.h"

#include <limits.h>
#include <string.h>

/* Over this many marked agents (and more than sqrt(waiting)), one ordered pass over the
 * waiting conversations is cheaper than re-searching each agent after every offer. */
#define ROUTER_BULK_AGENTS 32

int router_window_hi(const struct router_conv *c, int64_t now_ms)
{
	const struct router_queue *q = c->q;
	if (!q->nsteps)
		return INT32_MAX;
	int hi = c->tier;
	int64_t waited = now_ms - c->enqueued_at;
	for (int i = 0; i < q->nsteps && (int64_t)q->steps[i].after_s * 1000 <= waited; i++) {
		if (q->steps[i].tier > hi)
			hi = q->steps[i].tier;
	}
	return hi;
}

bool router_cooled(const struct router_conv *c, int64_t agent_id, int64_t now_ms)
{
	for (int i = 0; i < c->ncd; i++) {
		if (c->cd[i].agent_id == agent_id && c->cd[i].until_ms > now_ms)
			return true;
	}
	return false;
}

/* A is in C's queue's free tree for C's class: available, serves the queue, a free slot. */
static bool agent_free_for(const struct router_agent *a, const struct router_conv *c)
{
	const struct router_member *m = router_member_of(a, c->q);
	return m && m->in_tree[c->cls];
}

struct router_agent *router_sticky_agent(const struct router *r, const struct router_conv *c,
					 int64_t now_ms)
{
	if (r->sticky_ms <= 0 || c->customer_id <= 0)
		return NULL;
	const struct router_customer *e = router_map_get(&r->customers, c->customer_id);
	if (!e || now_ms - e->at_ms > r->sticky_ms)
		return NULL;
	struct router_agent *a = router_map_get(&r->agents, e->agent_id);
	if (!a || !agent_free_for(a, c) || a->tier < c->tier ||
	    a->tier > router_window_hi(c, now_ms) || router_cooled(c, a->id, now_ms))
		return NULL;
	return a;
}

/* Free agents for C with a tier in [LO, HI], less those in a cooldown for C. */
static int count_eligible(const struct router *r, const struct router_conv *c, int lo, int hi,
			  int64_t now_ms)
{
	const struct router_tnode *t = c->q->free_agents[c->cls];
	int64_t klo[3] = {lo, INT64_MIN, INT64_MIN};
	int64_t khi[3] = {(int64_t)hi + 1, INT64_MIN, INT64_MIN};
	int n = (int)(router_treap_rank(t, khi) - router_treap_rank(t, klo));
	for (int i = 0; i < c->ncd; i++) {
		if (c->cd[i].until_ms <= now_ms)
			continue;
		const struct router_agent *a = router_map_get(&r->agents, c->cd[i].agent_id);
		if (a && a->tier >= lo && a->tier <= hi && agent_free_for(a, c))
			n--;
	}
	return n;
}

struct router_agent *router_best_agent(const struct router *r, const struct router_conv *c,
				       int64_t now_ms, struct router_reason *why)
{
	struct router_tnode *t = c->q->free_agents[c->cls];
	int lo = c->tier, hi = router_window_hi(c, now_ms);
	int64_t key[3] = {lo, INT64_MIN, INT64_MIN};
	struct router_agent *first = NULL;
	/* skips only agents in a cooldown for C: at most c->ncd of them */
	for (struct router_tnode *n = router_treap_lower(t, key); n && n->k[0] <= hi;
	     n = router_treap_upper(t, n->k)) {
		struct router_agent *a = n->owner;
		if (!router_cooled(c, a->id, now_ms)) {
			first = a;
			break;
		}
	}
	if (!first)
		return NULL;
	struct router_agent *sticky = router_sticky_agent(r, c, now_ms);
	struct router_agent *a = sticky ? sticky : first;
	if (why) {
		memset(why, 0, sizeof(*why));
		why->agent_tier = a->tier;
		why->tier_min = lo;
		why->tier_max = hi;
		why->eligible = count_eligible(r, c, lo, hi, now_ms);
		why->eligible_same_tier = count_eligible(r, c, a->tier, a->tier, now_ms);
		why->idle_ms = now_ms - a->idle_since;
		why->waited_ms = now_ms - c->enqueued_at;
		if (sticky)
			why->pick = ROUTER_PICK_STICKY;
		else if (why->eligible == 1)
			why->pick = ROUTER_PICK_ONLY;
		else if (why->eligible_same_tier < why->eligible)
			why->pick = ROUTER_PICK_LOWEST_TIER;
		else
			why->pick = ROUTER_PICK_LONGEST_IDLE;
	}
	return a;
}

/* The shortest wait after which Q's steps let TIER take a lower-tier conversation. */
static int64_t wait_needed(const struct router_queue *q, int tier)
{
	for (int i = 0; i < q->nsteps; i++) {
		if (q->steps[i].tier >= tier)
			return (int64_t)q->steps[i].after_s * 1000;
	}
	return INT64_MAX;
}

struct router_conv *router_best_conv(const struct router *r, const struct router_agent *a,
				     int64_t now_ms)
{
	struct router_conv *best = NULL;
	struct router_key bk = {0}, ck;
	if (a->status != ROUTER_AGENT_AVAILABLE)
		return NULL;
	for (int i = 0; i < a->nmembers; i++) {
		const struct router_member *m = a->members[i];
		const struct router_queue *q = m->q;
		int64_t need = q->nsteps ? wait_needed(q, a->tier) : 0;
		for (int cls = 0; cls < ROUTER_NCLASS; cls++) {
			if (!m->in_tree[cls])
				continue;
			/* buckets by priority desc: stop at the first that cannot beat BEST */
			for (int j = 0; j < q->nbuckets[cls]; j++) {
				struct router_bucket *b = q->buckets[cls][j];
				if (best && (b->priority < bk.priority ||
					     (b->priority == bk.priority &&
					      q->priority < bk.queue_priority)))
					break;
				if (b->tier > a->tier)
					continue;
				bool aged = q->nsteps && b->tier < a->tier;
				if (aged && need == INT64_MAX)
					continue;
				/* oldest first; skips only conversations cooling down for A */
				for (struct router_tnode *n = router_treap_first(b->root); n;
				     n = router_treap_upper(b->root, n->k)) {
					struct router_conv *c = n->owner;
					if (aged && now_ms - c->enqueued_at < need)
						break;
					router_conv_key(c, &ck);
					if (best && !router_key_before(&ck, &bk))
						break;
					if (router_cooled(c, a->id, now_ms))
						continue;
					best = c;
					bk = ck;
					break;
				}
			}
		}
	}
	return best;
}

/* ---- route ---- */

static void make_offer(struct router *r, struct router_conv *c, struct router_agent *a,
		       const struct router_reason *why, int64_t now_ms, struct router_decision *d)
{
	int64_t id = r->next_offer_id;
	while (router_map_get(&r->offers, id))
		id++;
	memset(d, 0, sizeof(*d));
	d->kind = ROUTER_DECISION_OFFER;
	d->conversation_id = c->id;
	d->agent_id = a->id;
	d->queue_id = c->q->id;
	d->offer_id = id;
	d->at_ms = now_ms;
	d->expires_at_ms = now_ms + r->offer_timeout_ms;
	d->why = *why;
	router_conv_offer(r, c, a, id, d->expires_at_ms);
}

static int take_revocations(struct router *r, int64_t now_ms, struct router_decision *out, int max)
{
	int n = 0;
	while (n < max && r->outbox_head < r->outbox_n)
		out[n++] = r->outbox[r->outbox_head++];
	while (n < max) {
		struct router_hnode *h = router_heap_top(&r->offer_timers);
		struct router_conv *c = h ? ROUTER_CONV_OF_TIMER(h) : NULL;
		if (!c || c->expires_at > now_ms)
			break;
		struct router_decision *d = &out[n++];
		memset(d, 0, sizeof(*d));
		d->kind = ROUTER_DECISION_REVOKE;
		d->conversation_id = c->id;
		d->agent_id = c->agent->id;
		d->queue_id = c->q->id;
		d->offer_id = c->offer_id;
		d->at_ms = now_ms;
		d->revoke_reason = ROUTER_REVOKE_TIMEOUT;
		router_conv_unoffer(r, c, true, now_ms);
	}
	return n;
}

int router_expire(struct router *r, int64_t now_ms, struct router_decision *out, int max)
{
	router_seen(r, now_ms);
	return take_revocations(r, now_ms, out, max);
}

/* Overflow steps reached and cooldowns ended: those conversations may have agents now. */
static void fire_wait_timers(struct router *r, int64_t now_ms)
{
	struct router_hnode *h;
	while ((h = router_heap_top(&r->wait_timers)) &&
	       ROUTER_CONV_OF_TIMER(h)->timer_at <= now_ms) {
		struct router_conv *c = ROUTER_CONV_OF_TIMER(h);
		router_conv_schedule(r, c, now_ms);
		router_mark_conv(r, c);
	}
}

/* Many agents marked at once (a rebuild, a shift logging in between two calls): mark every
 * waiting conversation instead and forget the agents, which keeps the invariant. */
static void go_bulk(struct router *r)
{
	int64_t na = r->work_agents;
	if (na <= ROUTER_BULK_AGENTS || na * na <= (int64_t)r->nwaiting)
		return;
	for (size_t i = 0; i < r->agents.cap; i++) {
		if (r->agents.keys[i])
			router_unmark(r, &((struct router_agent *)r->agents.vals[i])->item);
	}
	for (size_t i = 0; i < r->convs.cap; i++) {
		struct router_conv *c = r->convs.vals[i];
		if (r->convs.keys[i] && c->state == ROUTER_CONV_WAITING && c->item.h.idx < 0)
			router_mark_conv(r, c);
	}
}

int router_route(struct router *r, int64_t now_ms, struct router_decision *out, int max)
{
	router_seen(r, now_ms);
	int n = take_revocations(r, now_ms, out, max);
	if (n >= max)
		return n;
	fire_wait_timers(r, now_ms);
	go_bulk(r);
	struct router_reason why;
	while (n < max) {
		struct router_hnode *h = router_heap_top(&r->work);
		if (!h)
			break;
		struct router_item *it = (struct router_item *)h;
		router_unmark(r, it);
		if (!it->is_agent) {
			struct router_conv *c = it->owner;
			struct router_agent *a = router_best_agent(r, c, now_ms, &why);
			if (a)
				make_offer(r, c, a, &why, now_ms, &out[n++]);
			continue;
		}
		struct router_agent *a = it->owner;
		struct router_conv *c = router_best_conv(r, a, now_ms);
		if (!c)
			continue;
		it->inf = false;
		router_conv_key(c, &it->key);
		struct router_hnode *top = router_heap_top(&r->work);
		if (!top || !router_work_before(top, &it->h)) {
			/* exact and first: C is the next conversation to serve */
			struct router_agent *b = router_best_agent(r, c, now_ms, &why);
			if (!b)
				continue; /* cannot happen: A is eligible for C */
			make_offer(r, c, b, &why, now_ms, &out[n++]);
		}
		/* A stays marked: its key is still an upper bound */
		if (it->h.idx < 0 && a->status == ROUTER_AGENT_AVAILABLE) {
			router_heap_push(&r->work, &it->h);
			r->work_agents++;
		}
	}
	return n;
}

int64_t router_next_deadline_ms(const struct router *r)
{
	if (r->outbox_head < r->outbox_n || r->work.n)
		return r->now_seen;
	int64_t t = INT64_MAX;
	const struct router_hnode *h = router_heap_top(&r->offer_timers);
	if (h)
		t = ROUTER_CONV_OF_TIMER(h)->expires_at;
	h = router_heap_top(&r->wait_timers);
	if (h && ROUTER_CONV_OF_TIMER(h)->timer_at < t)
		t = ROUTER_CONV_OF_TIMER(h)->timer_at;
	return t;
}
