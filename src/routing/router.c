/* router: records and inputs. Every input updates the records and all their indexes before
 * it returns, and marks what may have gained an eligible pair (a waiting conversation, an
 * agent with a free slot) in the work heap; router_route.c takes decisions from there. */
#include "router_internal.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

static int fail(enum router_error *error_r, enum router_error e)
{
	if (error_r)
		*error_r = e;
	return -1;
}

/* ---- names ---- */

static const char *const error_names[ROUTER_E__COUNT] = {
    [ROUTER_OK] = "ok",
    [ROUTER_E_INVALID] = "invalid",
    [ROUTER_E_EXISTS] = "exists",
    [ROUTER_E_UNKNOWN_QUEUE] = "unknown_queue",
    [ROUTER_E_UNKNOWN_AGENT] = "unknown_agent",
    [ROUTER_E_UNKNOWN_CONVERSATION] = "unknown_conversation",
    [ROUTER_E_UNKNOWN_OFFER] = "unknown_offer",
    [ROUTER_E_STATE] = "state",
    [ROUTER_E_BUSY] = "busy",
};

static const char *const channel_names[ROUTER_CHANNEL__COUNT] = {
    "chat", "email", "voice", "sms", "whatsapp", "social", "web", "api",
};

static const char *const status_names[] = {"offline", "available", "away"};
static const char *const state_names[] = {"waiting", "offered", "assigned"};
static const char *const pick_names[] = {"only", "sticky", "lowest_tier", "longest_idle"};
static const char *const revoke_names[] = {
    "timeout", "agent_unavailable", "agent_removed", "ineligible", "transferred", "taken", "closed",
};

#define NAME(table, i)                                                                             \
	((unsigned)(i) < sizeof(table) / sizeof(table[0]) ? table[(unsigned)(i)] : "unknown")

const char *router_error_name(enum router_error e)
{
	return NAME(error_names, e);
}

const char *router_channel_name(enum router_channel ch)
{
	return NAME(channel_names, ch);
}

int router_channel_parse(const char *name)
{
	for (int i = 0; name && i < ROUTER_CHANNEL__COUNT; i++) {
		if (strcmp(name, channel_names[i]) == 0)
			return i;
	}
	return -1;
}

enum router_class router_channel_class(enum router_channel ch)
{
	if (ch == ROUTER_CHANNEL_EMAIL)
		return ROUTER_CLASS_EMAIL;
	if (ch == ROUTER_CHANNEL_VOICE)
		return ROUTER_CLASS_VOICE;
	return ROUTER_CLASS_CHAT;
}

const char *router_agent_status_name(enum router_agent_status st)
{
	return NAME(status_names, st);
}

int router_agent_status_parse(const char *name)
{
	for (int i = 0; name && i < 3; i++) {
		if (strcmp(name, status_names[i]) == 0)
			return i;
	}
	return -1;
}

const char *router_conv_state_name(enum router_conv_state st)
{
	return NAME(state_names, st);
}

const char *router_pick_name(enum router_pick p)
{
	return NAME(pick_names, p);
}

const char *router_revoke_reason_name(enum router_revoke_reason reason)
{
	return NAME(revoke_names, reason);
}

const char *router_revoke_reason_wire(enum router_revoke_reason reason)
{
	if (reason == ROUTER_REVOKE_TIMEOUT)
		return "timeout";
	if (reason == ROUTER_REVOKE_TAKEN)
		return "taken";
	return "cancelled";
}

/* ---- heaps' orders ---- */

bool router_key_before(const struct router_key *a, const struct router_key *b)
{
	if (a->priority != b->priority)
		return a->priority > b->priority;
	if (a->queue_priority != b->queue_priority)
		return a->queue_priority > b->queue_priority;
	if (a->enqueued_at != b->enqueued_at)
		return a->enqueued_at < b->enqueued_at;
	return a->id < b->id;
}

static int64_t item_id(const struct router_item *it)
{
	return it->is_agent ? ((const struct router_agent *)it->owner)->id
			    : ((const struct router_conv *)it->owner)->id;
}

bool router_work_before(const struct router_hnode *a, const struct router_hnode *b)
{
	const struct router_item *x = (const struct router_item *)a;
	const struct router_item *y = (const struct router_item *)b;
	if (x->inf != y->inf)
		return x->inf;
	if (!x->inf) {
		if (router_key_before(&x->key, &y->key))
			return true;
		if (router_key_before(&y->key, &x->key))
			return false;
	}
	if (x->is_agent != y->is_agent)
		return !x->is_agent;
	return item_id(x) < item_id(y);
}

static bool wait_before(const struct router_hnode *a, const struct router_hnode *b)
{
	const struct router_conv *x = ROUTER_CONV_OF_TIMER(a), *y = ROUTER_CONV_OF_TIMER(b);
	if (x->timer_at != y->timer_at)
		return x->timer_at < y->timer_at;
	return x->id < y->id;
}

static bool offer_before(const struct router_hnode *a, const struct router_hnode *b)
{
	const struct router_conv *x = ROUTER_CONV_OF_TIMER(a), *y = ROUTER_CONV_OF_TIMER(b);
	if (x->expires_at != y->expires_at)
		return x->expires_at < y->expires_at;
	return x->offer_id < y->offer_id;
}

/* ---- lifecycle ---- */

void router_config_defaults(struct router_config *cfg)
{
	cfg->offer_timeout_s = 20;
	cfg->reject_cooldown_s = 300;
	cfg->sticky_agent_s = 600;
	cfg->default_handle_s = 300;
}

static int64_t secs(int s)
{
	return s > 0 ? (int64_t)s * 1000 : 0;
}

void router_set_config(struct router *r, const struct router_config *cfg)
{
	r->cfg = *cfg;
	r->offer_timeout_ms = secs(cfg->offer_timeout_s);
	r->cooldown_ms = secs(cfg->reject_cooldown_s);
	r->sticky_ms = secs(cfg->sticky_agent_s);
	r->default_handle_ms = secs(cfg->default_handle_s);
}

struct router *router_new(const struct router_config *cfg)
{
	struct router *r = router_xcalloc(1, sizeof(*r));
	struct router_config def;
	router_config_defaults(&def);
	router_set_config(r, cfg ? cfg : &def);
	router_map_init(&r->queues);
	router_map_init(&r->agents);
	router_map_init(&r->convs);
	router_map_init(&r->offers);
	router_map_init(&r->customers);
	router_heap_init(&r->work, router_work_before);
	router_heap_init(&r->wait_timers, wait_before);
	router_heap_init(&r->offer_timers, offer_before);
	r->next_offer_id = 1;
	r->now_seen = INT64_MIN;
	r->rng = 0x9e3779b9u;
	return r;
}

static void free_map_values(struct router_map *m, void (*fn)(void *))
{
	for (size_t i = 0; i < m->cap; i++) {
		if (m->keys[i])
			fn(m->vals[i]);
	}
	router_map_fini(m);
}

static void free_conv(void *p)
{
	struct router_conv *c = p;
	free(c->cd);
	free(c);
}

static void free_agent(void *p)
{
	struct router_agent *a = p;
	for (int i = 0; i < a->nmembers; i++)
		free(a->members[i]);
	free(a->members);
	free(a->skills);
	free(a);
}

static void free_queue(void *p)
{
	struct router_queue *q = p;
	for (int cls = 0; cls < ROUTER_NCLASS; cls++) {
		for (int i = 0; i < q->nbuckets[cls]; i++)
			free(q->buckets[cls][i]);
		free(q->buckets[cls]);
	}
	free(q->skills);
	free(q->steps);
	free(q);
}

void router_free(struct router **rp)
{
	struct router *r = rp ? *rp : NULL;
	if (!r)
		return;
	free_map_values(&r->convs, free_conv);
	free_map_values(&r->agents, free_agent);
	free_map_values(&r->queues, free_queue);
	free_map_values(&r->customers, free);
	router_map_fini(&r->offers);
	router_heap_fini(&r->work);
	router_heap_fini(&r->wait_timers);
	router_heap_fini(&r->offer_timers);
	free(r->outbox);
	free(r);
	*rp = NULL;
}

void router_set_next_offer_id(struct router *r, int64_t next_id)
{
	r->next_offer_id = next_id > 0 ? next_id : 1;
}

uint32_t router_rand(struct router *r)
{
	/* xorshift32: deterministic, so a run can be replayed */
	uint32_t x = r->rng;
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	r->rng = x;
	return x;
}

void router_seen(struct router *r, int64_t now_ms)
{
	if (now_ms > r->now_seen)
		r->now_seen = now_ms;
}

void router_outbox_push(struct router *r, const struct router_decision *d)
{
	if (r->outbox_head == r->outbox_n)
		r->outbox_head = r->outbox_n = 0;
	if (r->outbox_n == r->outbox_cap) {
		r->outbox_cap = r->outbox_cap ? r->outbox_cap * 2 : 16;
		r->outbox = router_xrealloc(r->outbox, (size_t)r->outbox_cap, sizeof(*r->outbox));
	}
	r->outbox[r->outbox_n++] = *d;
}

/* ---- validation and skills ---- */

static int cmp_skill(const void *a, const void *b)
{
	const struct router_skill *x = a, *y = b;
	return x->skill_id < y->skill_id ? -1 : x->skill_id > y->skill_id;
}

static int cmp_step(const void *a, const void *b)
{
	const struct router_overflow *x = a, *y = b;
	return x->after_s < y->after_s ? -1 : x->after_s > y->after_s;
}

/* A sorted copy of SKILLS, or NULL with *ok false when invalid. */
static struct router_skill *copy_skills(const struct router_skill *skills, int n, bool *ok)
{
	*ok = n >= 0 && n <= ROUTER_MAX_LIST && (n == 0 || skills);
	if (!*ok)
		return NULL;
	struct router_skill *s = router_xcalloc((size_t)n, sizeof(*s));
	if (n)
		memcpy(s, skills, (size_t)n * sizeof(*s));
	qsort(s, (size_t)n, sizeof(*s), cmp_skill);
	for (int i = 0; i < n && *ok; i++) {
		if (s[i].skill_id <= 0 || s[i].level < 1 ||
		    (i && s[i].skill_id == s[i - 1].skill_id))
			*ok = false;
	}
	if (!*ok) {
		free(s);
		return NULL;
	}
	return s;
}

static struct router_overflow *copy_steps(const struct router_overflow *steps, int n, bool *ok)
{
	*ok = n >= 0 && n <= ROUTER_MAX_LIST && (n == 0 || steps);
	if (!*ok)
		return NULL;
	struct router_overflow *s = router_xcalloc((size_t)n, sizeof(*s));
	if (n)
		memcpy(s, steps, (size_t)n * sizeof(*s));
	qsort(s, (size_t)n, sizeof(*s), cmp_step);
	for (int i = 0; i < n && *ok; i++) {
		if (s[i].after_s < 0 || s[i].tier < 1 || (i && s[i].after_s == s[i - 1].after_s))
			*ok = false;
	}
	if (!*ok) {
		free(s);
		return NULL;
	}
	return s;
}

static bool can_serve(const struct router_agent *a, const struct router_queue *q)
{
	int i = 0;
	for (int j = 0; j < q->nskills; j++) {
		while (i < a->nskills && a->skills[i].skill_id < q->skills[j].skill_id)
			i++;
		if (i == a->nskills || a->skills[i].skill_id != q->skills[j].skill_id ||
		    a->skills[i].level < q->skills[j].level)
			return false;
	}
	return true;
}

/* ---- agents: memberships and slots ---- */

struct router_member *router_member_of(const struct router_agent *a, const struct router_queue *q)
{
	for (int i = 0; i < a->nmembers; i++) {
		if (a->members[i]->q == q)
			return a->members[i];
	}
	return NULL;
}

/* Puts A in or out of the free-agent trees, slot sums and counters its fields call for. */
static void agent_sync(struct router *r, struct router_agent *a)
{
	bool avail = a->status == ROUTER_AGENT_AVAILABLE;
	for (int i = 0; i < a->nmembers; i++) {
		struct router_member *m = a->members[i];
		struct router_queue *q = m->q;
		for (int cls = 0; cls < ROUTER_NCLASS; cls++) {
			struct router_tnode *n = &m->node[cls];
			bool want = avail && a->load[cls] < a->capacity[cls];
			if (m->in_tree[cls] &&
			    (!want || n->k[0] != a->tier || n->k[1] != a->idle_since)) {
				router_treap_remove(&q->free_agents[cls], n);
				m->in_tree[cls] = false;
			}
			if (want && !m->in_tree[cls]) {
				n->k[0] = a->tier;
				n->k[1] = a->idle_since;
				n->k[2] = a->id;
				n->owner = a;
				router_treap_insert(&q->free_agents[cls], n, router_rand(r));
				m->in_tree[cls] = true;
			}
			int s = avail ? a->capacity[cls] : 0;
			q->slots[cls] += s - m->slots[cls];
			m->slots[cls] = s;
		}
		if (m->available != avail) {
			q->members_available += avail ? 1 : -1;
			m->available = avail;
		}
	}
	if (a->counted_status != (int)a->status) {
		r->agents_by_status[a->counted_status]--;
		r->agents_by_status[a->status]++;
		a->counted_status = (int)a->status;
	}
	bool busy = avail && a->noffered + a->nassigned > 0;
	if (busy != a->counted_busy) {
		r->agents_busy += busy ? 1 : -1;
		a->counted_busy = busy;
	}
}

static void member_add(struct router *r, struct router_agent *a, struct router_queue *q)
{
	struct router_member *m = router_xcalloc(1, sizeof(*m));
	m->q = q;
	m->a = a;
	if (a->nmembers == a->mcap) {
		a->mcap = a->mcap ? a->mcap * 2 : 4;
		a->members = router_xrealloc(a->members, (size_t)a->mcap, sizeof(*a->members));
	}
	a->members[a->nmembers++] = m;
}

static void member_remove(struct router_agent *a, int i)
{
	struct router_member *m = a->members[i];
	struct router_queue *q = m->q;
	for (int cls = 0; cls < ROUTER_NCLASS; cls++) {
		if (m->in_tree[cls])
			router_treap_remove(&q->free_agents[cls], &m->node[cls]);
		q->slots[cls] -= m->slots[cls];
	}
	if (m->available)
		q->members_available--;
	a->members[i] = a->members[--a->nmembers];
	free(m);
}

/* Makes A's memberships of Q match its skills; the caller syncs. */
static void member_refresh(struct router *r, struct router_agent *a, struct router_queue *q)
{
	bool can = can_serve(a, q);
	for (int i = 0; i < a->nmembers; i++) {
		if (a->members[i]->q == q) {
			if (!can)
				member_remove(a, i);
			return;
		}
	}
	if (can)
		member_add(r, a, q);
}

void router_mark_agent(struct router *r, struct router_agent *a)
{
	if (a->status != ROUTER_AGENT_AVAILABLE)
		return;
	a->item.inf = true;
	if (a->item.h.idx >= 0) {
		router_heap_fix(&r->work, &a->item.h);
	} else {
		router_heap_push(&r->work, &a->item.h);
		r->work_agents++;
	}
}

void router_unmark(struct router *r, struct router_item *it)
{
	if (it->h.idx < 0)
		return;
	router_heap_remove(&r->work, &it->h);
	if (it->is_agent)
		r->work_agents--;
}

static void agent_hold(struct router *r, struct router_agent *a, struct router_conv *c)
{
	c->agent = a;
	c->hprev = NULL;
	c->hnext = a->held;
	if (a->held)
		a->held->hprev = c;
	a->held = c;
	a->load[c->cls]++;
	if (c->state == ROUTER_CONV_OFFERED)
		a->noffered++;
	else
		a->nassigned++;
	agent_sync(r, a);
}

/* Unlinks C from its agent (C's state still says offered or assigned). */
static void agent_release(struct router *r, struct router_conv *c)
{
	struct router_agent *a = c->agent;
	if (c->hprev)
		c->hprev->hnext = c->hnext;
	else
		a->held = c->hnext;
	if (c->hnext)
		c->hnext->hprev = c->hprev;
	c->hprev = c->hnext = NULL;
	a->load[c->cls]--;
	if (c->state == ROUTER_CONV_OFFERED)
		a->noffered--;
	else
		a->nassigned--;
	c->agent = NULL;
	agent_sync(r, a);
	router_mark_agent(r, a);
}

/* ---- conversations ---- */

void router_conv_key(const struct router_conv *c, struct router_key *k)
{
	k->priority = c->priority;
	k->queue_priority = c->q->priority;
	k->enqueued_at = c->enqueued_at;
	k->id = c->id;
}

void router_mark_conv(struct router *r, struct router_conv *c)
{
	c->item.inf = false;
	router_conv_key(c, &c->item.key);
	if (c->item.h.idx >= 0)
		router_heap_fix(&r->work, &c->item.h);
	else
		router_heap_push(&r->work, &c->item.h);
}

static void cooldown_prune(struct router_conv *c, int64_t now_ms)
{
	int n = 0;
	for (int i = 0; i < c->ncd; i++) {
		if (c->cd[i].until_ms > now_ms)
			c->cd[n++] = c->cd[i];
	}
	c->ncd = n;
}

static void cooldown_set(struct router_conv *c, int64_t agent_id, int64_t until_ms)
{
	for (int i = 0; i < c->ncd; i++) {
		if (c->cd[i].agent_id == agent_id) {
			c->cd[i].until_ms = until_ms;
			return;
		}
	}
	if (c->ncd == c->cdcap) {
		c->cdcap = c->cdcap ? c->cdcap * 2 : 2;
		c->cd = router_xrealloc(c->cd, (size_t)c->cdcap, sizeof(*c->cd));
	}
	c->cd[c->ncd].agent_id = agent_id;
	c->cd[c->ncd].until_ms = until_ms;
	c->ncd++;
}

void router_conv_schedule(struct router *r, struct router_conv *c, int64_t now_ms)
{
	int64_t at = INT64_MAX;
	/* a due timer replaced before it fired must not lose its change */
	if (c->timer.idx >= 0 && c->timer_at <= now_ms)
		router_mark_conv(r, c);
	cooldown_prune(c, now_ms);
	for (int i = 0; i < c->ncd; i++) {
		if (c->cd[i].until_ms > now_ms && c->cd[i].until_ms < at)
			at = c->cd[i].until_ms;
	}
	if (c->q->nsteps) {
		int hi = router_window_hi(c, now_ms);
		for (int i = 0; i < c->q->nsteps; i++) {
			int64_t t = c->enqueued_at + (int64_t)c->q->steps[i].after_s * 1000;
			if (c->q->steps[i].tier > hi && t > now_ms && t < at)
				at = t;
		}
	}
	if (at == INT64_MAX) {
		if (c->timer.idx >= 0)
			router_heap_remove(&r->wait_timers, &c->timer);
		return;
	}
	c->timer_at = at;
	if (c->timer.idx >= 0)
		router_heap_fix(&r->wait_timers, &c->timer);
	else
		router_heap_push(&r->wait_timers, &c->timer);
}

static int bucket_cmp(int tier, int priority, const struct router_bucket *b)
{
	if (priority != b->priority)
		return priority > b->priority ? -1 : 1;
	return tier < b->tier ? -1 : tier > b->tier;
}

static struct router_bucket *bucket_get(struct router_queue *q, int cls, int tier, int priority)
{
	int n = q->nbuckets[cls], i = 0;
	struct router_bucket **v = q->buckets[cls];
	while (i < n && bucket_cmp(tier, priority, v[i]) > 0)
		i++;
	if (i < n && bucket_cmp(tier, priority, v[i]) == 0)
		return v[i];
	if (n == q->bcap[cls]) {
		q->bcap[cls] = q->bcap[cls] ? q->bcap[cls] * 2 : 4;
		q->buckets[cls] = v = router_xrealloc(v, (size_t)q->bcap[cls], sizeof(*v));
	}
	memmove(&v[i + 1], &v[i], (size_t)(n - i) * sizeof(*v));
	v[i] = router_xcalloc(1, sizeof(**v));
	v[i]->tier = tier;
	v[i]->priority = priority;
	q->nbuckets[cls]++;
	return v[i];
}

static void bucket_drop_if_empty(struct router_queue *q, int cls, struct router_bucket *b)
{
	if (b->root)
		return;
	struct router_bucket **v = q->buckets[cls];
	int n = q->nbuckets[cls], i = 0;
	while (v[i] != b)
		i++;
	memmove(&v[i], &v[i + 1], (size_t)(n - i - 1) * sizeof(*v));
	q->nbuckets[cls]--;
	free(b);
}

void router_conv_enter_waiting(struct router *r, struct router_conv *c, int64_t now_ms)
{
	struct router_queue *q = c->q;
	c->state = ROUTER_CONV_WAITING;
	c->agent = NULL;
	c->offer_id = 0;
	c->expires_at = 0;
	c->line_node.k[0] = -(int64_t)c->priority;
	c->line_node.k[1] = c->enqueued_at;
	c->line_node.k[2] = c->id;
	c->line_node.owner = c;
	router_treap_insert(&q->line, &c->line_node, router_rand(r));
	c->bucket = bucket_get(q, c->cls, c->tier, c->priority);
	c->bucket_node.k[0] = c->enqueued_at;
	c->bucket_node.k[1] = c->id;
	c->bucket_node.k[2] = 0;
	c->bucket_node.owner = c;
	router_treap_insert(&c->bucket->root, &c->bucket_node, router_rand(r));
	r->nwaiting++;
	router_conv_schedule(r, c, now_ms);
	router_mark_conv(r, c);
}

static void conv_leave_waiting(struct router *r, struct router_conv *c)
{
	struct router_queue *q = c->q;
	router_treap_remove(&q->line, &c->line_node);
	router_treap_remove(&c->bucket->root, &c->bucket_node);
	bucket_drop_if_empty(q, c->cls, c->bucket);
	c->bucket = NULL;
	if (c->timer.idx >= 0)
		router_heap_remove(&r->wait_timers, &c->timer);
	router_unmark(r, &c->item);
	r->nwaiting--;
}

void router_conv_offer(struct router *r, struct router_conv *c, struct router_agent *a,
		       int64_t offer_id, int64_t expires_at)
{
	conv_leave_waiting(r, c);
	c->state = ROUTER_CONV_OFFERED;
	c->offer_id = offer_id;
	c->expires_at = expires_at;
	router_map_put(&r->offers, offer_id, c);
	router_heap_push(&r->offer_timers, &c->timer);
	c->q->noffered++;
	r->noffered++;
	if (offer_id >= r->next_offer_id)
		r->next_offer_id = offer_id + 1;
	agent_hold(r, a, c);
}

/* Ends C's pending offer and frees the agent's slot; C is then in no state's indexes. */
static void end_offer(struct router *r, struct router_conv *c)
{
	router_map_del(&r->offers, c->offer_id);
	router_heap_remove(&r->offer_timers, &c->timer);
	c->q->noffered--;
	r->noffered--;
	agent_release(r, c);
	c->offer_id = 0;
	c->expires_at = 0;
}

void router_conv_unoffer(struct router *r, struct router_conv *c, bool cooldown, int64_t now_ms)
{
	int64_t agent_id = c->agent->id;
	end_offer(r, c);
	if (cooldown)
		cooldown_set(c, agent_id, now_ms + r->cooldown_ms);
	router_conv_enter_waiting(r, c, now_ms);
}

static void revoke(struct router *r, struct router_conv *c, enum router_revoke_reason reason,
		   int64_t now_ms, bool requeue)
{
	struct router_decision d = {
	    .kind = ROUTER_DECISION_REVOKE,
	    .conversation_id = c->id,
	    .agent_id = c->agent->id,
	    .queue_id = c->q->id,
	    .offer_id = c->offer_id,
	    .at_ms = now_ms,
	    .revoke_reason = reason,
	};
	router_outbox_push(r, &d);
	if (requeue)
		router_conv_unoffer(r, c, false, now_ms);
	else
		end_offer(r, c);
}

static void conv_accept(struct router *r, struct router_conv *c)
{
	struct router_agent *a = c->agent;
	router_map_del(&r->offers, c->offer_id);
	router_heap_remove(&r->offer_timers, &c->timer);
	c->state = ROUTER_CONV_ASSIGNED;
	c->offer_id = 0;
	c->expires_at = 0;
	c->q->noffered--;
	c->q->nassigned++;
	r->noffered--;
	r->nassigned++;
	a->noffered--;
	a->nassigned++;
}

static void conv_assign(struct router *r, struct router_conv *c, struct router_agent *a)
{
	c->state = ROUTER_CONV_ASSIGNED;
	c->q->nassigned++;
	r->nassigned++;
	agent_hold(r, a, c);
}

/* Ends C's assignment: the agent finished it at NOW. */
static void conv_unassign(struct router *r, struct router_conv *c, int64_t now_ms)
{
	c->agent->idle_since = now_ms;
	c->q->nassigned--;
	r->nassigned--;
	agent_release(r, c);
}

/* Takes C out of whatever state it is in; a pending offer is revoked for REASON. */
static void conv_detach(struct router *r, struct router_conv *c, enum router_revoke_reason reason,
			int64_t now_ms)
{
	switch (c->state) {
	case ROUTER_CONV_WAITING:
		conv_leave_waiting(r, c);
		break;
	case ROUTER_CONV_OFFERED:
		revoke(r, c, reason, now_ms, false);
		break;
	case ROUTER_CONV_ASSIGNED:
		conv_unassign(r, c, now_ms);
		break;
	}
}

/* Whether C's pending offer may stand: its agent still serves the queue within the window. */
static bool offer_ok(const struct router_conv *c, int64_t now_ms)
{
	const struct router_agent *a = c->agent;
	return router_member_of(a, c->q) && a->tier >= c->tier &&
	       a->tier <= router_window_hi(c, now_ms);
}

static int cmp_conv_offer(const void *a, const void *b)
{
	const struct router_conv *x = *(struct router_conv *const *)a;
	const struct router_conv *y = *(struct router_conv *const *)b;
	return x->offer_id < y->offer_id ? -1 : x->offer_id > y->offer_id;
}

static int cmp_conv_id(const void *a, const void *b)
{
	const struct router_conv *x = *(struct router_conv *const *)a;
	const struct router_conv *y = *(struct router_conv *const *)b;
	return x->id < y->id ? -1 : x->id > y->id;
}

/* A's held conversations in STATE, sorted (by offer id, or by id when assigned). */
static struct router_conv **held_sorted(const struct router_agent *a, enum router_conv_state st,
					int *n_r)
{
	int n = 0;
	for (const struct router_conv *c = a->held; c; c = c->hnext)
		n++;
	struct router_conv **v = router_xcalloc((size_t)n, sizeof(*v));
	n = 0;
	for (struct router_conv *c = a->held; c; c = c->hnext) {
		if (c->state == st)
			v[n++] = c;
	}
	qsort(v, (size_t)n, sizeof(*v), st == ROUTER_CONV_OFFERED ? cmp_conv_offer : cmp_conv_id);
	*n_r = n;
	return v;
}

/* ---- customers (stickiness) ---- */

static void customer_prune(struct router *r, int64_t now_ms)
{
	struct router_map *m = &r->customers;
	int64_t *dead = router_xcalloc(m->n, sizeof(*dead));
	size_t n = 0;
	for (size_t i = 0; i < m->cap; i++) {
		const struct router_customer *e = m->vals[i];
		if (m->keys[i] && now_ms - e->at_ms > r->sticky_ms)
			dead[n++] = m->keys[i];
	}
	for (size_t i = 0; i < n; i++) {
		free(router_map_get(m, dead[i]));
		router_map_del(m, dead[i]);
	}
	free(dead);
	r->customers_pruned_n = m->n;
}

static void customer_record(struct router *r, int64_t customer_id, int64_t agent_id, int64_t at_ms,
			    int64_t now_ms)
{
	if (customer_id <= 0 || agent_id <= 0)
		return;
	struct router_customer *e = router_map_get(&r->customers, customer_id);
	if (!e) {
		e = router_xcalloc(1, sizeof(*e));
		router_map_put(&r->customers, customer_id, e);
	} else if (at_ms < e->at_ms) {
		return;
	}
	e->agent_id = agent_id;
	e->at_ms = at_ms;
	/* entries past the window are useless: drop them when the map has doubled */
	if (r->customers.n >= 4096 && r->customers.n > 2 * r->customers_pruned_n)
		customer_prune(r, now_ms);
}

/* ---- queues ---- */

static void collect_line(struct router_tnode *t, struct router_conv **v, int *n)
{
	if (!t)
		return;
	collect_line(t->l, v, n);
	v[(*n)++] = t->owner;
	collect_line(t->r, v, n);
}

int router_queue_set(struct router *r, const struct router_queue_info *info, int64_t now_ms,
		     enum router_error *error_r)
{
	bool ok_skills, ok_steps;
	if (!info || info->id <= 0)
		return fail(error_r, ROUTER_E_INVALID);
	struct router_skill *skills = copy_skills(info->skills, info->nskills, &ok_skills);
	struct router_overflow *steps = copy_steps(info->overflow, info->noverflow, &ok_steps);
	if (!ok_skills || !ok_steps) {
		free(skills);
		free(steps);
		return fail(error_r, ROUTER_E_INVALID);
	}
	router_seen(r, now_ms);
	struct router_queue *q = router_map_get(&r->queues, info->id);
	bool is_new = !q;
	if (is_new) {
		q = router_xcalloc(1, sizeof(*q));
		q->id = info->id;
		router_map_put(&r->queues, q->id, q);
	}
	free(q->skills);
	free(q->steps);
	q->priority = info->priority;
	q->skills = skills;
	q->nskills = info->nskills;
	q->steps = steps;
	q->nsteps = info->noverflow;

	/* who can serve it now */
	for (size_t i = 0; i < r->agents.cap; i++) {
		struct router_agent *a = r->agents.vals[i];
		if (!r->agents.keys[i])
			continue;
		member_refresh(r, a, q);
		agent_sync(r, a);
	}
	if (is_new)
		return 0;

	/* offers that no longer fit, then every waiting conversation afresh */
	int n = 0;
	struct router_conv **v = router_xcalloc((size_t)(q->noffered + q->nconv), sizeof(*v));
	for (size_t i = 0; i < r->convs.cap; i++) {
		struct router_conv *c = r->convs.vals[i];
		if (r->convs.keys[i] && c->q == q && c->state == ROUTER_CONV_OFFERED &&
		    !offer_ok(c, now_ms))
			v[n++] = c;
	}
	qsort(v, (size_t)n, sizeof(*v), cmp_conv_offer);
	for (int i = 0; i < n; i++)
		revoke(r, v[i], ROUTER_REVOKE_INELIGIBLE, now_ms, true);
	n = 0;
	collect_line(q->line, v, &n);
	for (int i = 0; i < n; i++) {
		router_conv_schedule(r, v[i], now_ms);
		router_mark_conv(r, v[i]);
	}
	free(v);
	return 0;
}

int router_queue_remove(struct router *r, int64_t queue_id, enum router_error *error_r)
{
	struct router_queue *q = router_map_get(&r->queues, queue_id);
	if (!q)
		return fail(error_r, ROUTER_E_UNKNOWN_QUEUE);
	if (q->nconv)
		return fail(error_r, ROUTER_E_BUSY);
	for (size_t i = 0; i < r->agents.cap; i++) {
		struct router_agent *a = r->agents.vals[i];
		if (!r->agents.keys[i])
			continue;
		for (int j = 0; j < a->nmembers; j++) {
			if (a->members[j]->q == q) {
				member_remove(a, j);
				break;
			}
		}
	}
	router_map_del(&r->queues, queue_id);
	free_queue(q);
	return 0;
}

int router_queue_add_handle_time(struct router *r, int64_t queue_id, int64_t handle_ms,
				 enum router_error *error_r)
{
	struct router_queue *q = router_map_get(&r->queues, queue_id);
	if (!q)
		return fail(error_r, ROUTER_E_UNKNOWN_QUEUE);
	if (handle_ms < 0)
		return fail(error_r, ROUTER_E_INVALID);
	if (!q->mean_handle_ms)
		q->mean_handle_ms = handle_ms > 0 ? handle_ms : 1;
	else
		q->mean_handle_ms += (handle_ms - q->mean_handle_ms) / 8;
	if (q->mean_handle_ms < 1)
		q->mean_handle_ms = 1;
	return 0;
}

/* ---- agents ---- */

/* Revokes A's offers that no longer fit (by offer id). */
static void revoke_unfit(struct router *r, struct router_agent *a, int64_t now_ms)
{
	int n;
	struct router_conv **v = held_sorted(a, ROUTER_CONV_OFFERED, &n);
	for (int i = 0; i < n; i++) {
		if (!offer_ok(v[i], now_ms))
			revoke(r, v[i], ROUTER_REVOKE_INELIGIBLE, now_ms, true);
	}
	free(v);
}

int router_agent_set(struct router *r, const struct router_agent_info *info, int64_t now_ms,
		     enum router_error *error_r)
{
	bool ok;
	if (!info || info->id <= 0 || info->tier < 1)
		return fail(error_r, ROUTER_E_INVALID);
	for (int cls = 0; cls < ROUTER_NCLASS; cls++) {
		if (info->capacity[cls] < 0)
			return fail(error_r, ROUTER_E_INVALID);
	}
	struct router_skill *skills = copy_skills(info->skills, info->nskills, &ok);
	if (!ok)
		return fail(error_r, ROUTER_E_INVALID);
	router_seen(r, now_ms);
	struct router_agent *a = router_map_get(&r->agents, info->id);
	if (!a) {
		a = router_xcalloc(1, sizeof(*a));
		a->id = info->id;
		a->status = ROUTER_AGENT_OFFLINE;
		a->idle_since = now_ms;
		a->counted_status = ROUTER_AGENT_OFFLINE;
		r->agents_by_status[ROUTER_AGENT_OFFLINE]++;
		a->item.h.idx = -1;
		a->item.is_agent = true;
		a->item.owner = a;
		router_map_put(&r->agents, a->id, a);
	}
	free(a->skills);
	a->skills = skills;
	a->nskills = info->nskills;
	a->tier = info->tier;
	memcpy(a->capacity, info->capacity, sizeof(a->capacity));
	for (size_t i = 0; i < r->queues.cap; i++) {
		if (r->queues.keys[i])
			member_refresh(r, a, r->queues.vals[i]);
	}
	agent_sync(r, a);
	revoke_unfit(r, a, now_ms);
	router_mark_agent(r, a);
	return 0;
}

int router_agent_set_status(struct router *r, int64_t agent_id, enum router_agent_status st,
			    int64_t now_ms, enum router_error *error_r)
{
	if ((unsigned)st > ROUTER_AGENT_AWAY)
		return fail(error_r, ROUTER_E_INVALID);
	struct router_agent *a = router_map_get(&r->agents, agent_id);
	if (!a)
		return fail(error_r, ROUTER_E_UNKNOWN_AGENT);
	router_seen(r, now_ms);
	if (a->status == st)
		return 0;
	a->status = st;
	if (st == ROUTER_AGENT_AVAILABLE) {
		a->idle_since = now_ms;
		agent_sync(r, a);
		router_mark_agent(r, a);
		return 0;
	}
	agent_sync(r, a);
	router_unmark(r, &a->item);
	int n;
	struct router_conv **v = held_sorted(a, ROUTER_CONV_OFFERED, &n);
	for (int i = 0; i < n; i++)
		revoke(r, v[i], ROUTER_REVOKE_AGENT_UNAVAILABLE, now_ms, true);
	free(v);
	return 0;
}

int router_agent_set_idle_since(struct router *r, int64_t agent_id, int64_t idle_since_ms,
				enum router_error *error_r)
{
	struct router_agent *a = router_map_get(&r->agents, agent_id);
	if (!a)
		return fail(error_r, ROUTER_E_UNKNOWN_AGENT);
	a->idle_since = idle_since_ms;
	agent_sync(r, a);
	return 0;
}

int router_agent_remove(struct router *r, int64_t agent_id, int64_t now_ms,
			enum router_error *error_r)
{
	struct router_agent *a = router_map_get(&r->agents, agent_id);
	if (!a)
		return fail(error_r, ROUTER_E_UNKNOWN_AGENT);
	router_seen(r, now_ms);
	int n;
	struct router_conv **v = held_sorted(a, ROUTER_CONV_OFFERED, &n);
	for (int i = 0; i < n; i++)
		revoke(r, v[i], ROUTER_REVOKE_AGENT_REMOVED, now_ms, true);
	free(v);
	v = held_sorted(a, ROUTER_CONV_ASSIGNED, &n);
	for (int i = 0; i < n; i++) {
		struct router_conv *c = v[i];
		struct router_decision d = {
		    .kind = ROUTER_DECISION_REQUEUE,
		    .conversation_id = c->id,
		    .agent_id = a->id,
		    .queue_id = c->q->id,
		    .at_ms = now_ms,
		};
		router_outbox_push(r, &d);
		conv_unassign(r, c, now_ms);
		c->enqueued_at = now_ms;
		router_conv_enter_waiting(r, c, now_ms);
	}
	free(v);
	router_unmark(r, &a->item);
	while (a->nmembers)
		member_remove(a, a->nmembers - 1);
	r->agents_by_status[a->counted_status]--;
	if (a->counted_busy)
		r->agents_busy--;
	router_map_del(&r->agents, a->id);
	free_agent(a);
	return 0;
}

/* ---- conversations: inputs ---- */

int router_conversation_add(struct router *r, const struct router_conversation_info *info,
			    int64_t now_ms, enum router_error *error_r)
{
	if (!info || info->id <= 0 || info->tier < 1 ||
	    (unsigned)info->channel >= ROUTER_CHANNEL__COUNT)
		return fail(error_r, ROUTER_E_INVALID);
	if (router_map_get(&r->convs, info->id))
		return fail(error_r, ROUTER_E_EXISTS);
	struct router_queue *q = router_map_get(&r->queues, info->queue_id);
	if (!q)
		return fail(error_r, ROUTER_E_UNKNOWN_QUEUE);
	router_seen(r, now_ms);
	struct router_conv *c = router_xcalloc(1, sizeof(*c));
	c->id = info->id;
	c->customer_id = info->customer_id;
	c->enqueued_at = info->enqueued_at_ms;
	c->q = q;
	c->channel = info->channel;
	c->cls = (int)router_channel_class(info->channel);
	c->tier = info->tier;
	c->priority = info->priority;
	c->timer.idx = -1;
	c->item.h.idx = -1;
	c->item.owner = c;
	router_map_put(&r->convs, c->id, c);
	q->nconv++;
	customer_record(r, c->customer_id, info->last_agent_id, info->last_agent_at_ms, now_ms);
	router_conv_enter_waiting(r, c, now_ms);
	return 0;
}

int router_conversation_update(struct router *r, int64_t conv_id, int tier, int priority,
			       int64_t now_ms, enum router_error *error_r)
{
	if (tier < 1)
		return fail(error_r, ROUTER_E_INVALID);
	struct router_conv *c = router_map_get(&r->convs, conv_id);
	if (!c)
		return fail(error_r, ROUTER_E_UNKNOWN_CONVERSATION);
	router_seen(r, now_ms);
	bool waiting = c->state == ROUTER_CONV_WAITING;
	if (waiting)
		conv_leave_waiting(r, c);
	c->tier = tier;
	c->priority = priority;
	if (waiting)
		router_conv_enter_waiting(r, c, now_ms);
	else if (c->state == ROUTER_CONV_OFFERED && !offer_ok(c, now_ms))
		revoke(r, c, ROUTER_REVOKE_INELIGIBLE, now_ms, true);
	return 0;
}

int router_conversation_transfer(struct router *r, int64_t conv_id, int64_t queue_id,
				 int64_t now_ms, enum router_error *error_r)
{
	struct router_conv *c = router_map_get(&r->convs, conv_id);
	if (!c)
		return fail(error_r, ROUTER_E_UNKNOWN_CONVERSATION);
	struct router_queue *q = router_map_get(&r->queues, queue_id);
	if (!q)
		return fail(error_r, ROUTER_E_UNKNOWN_QUEUE);
	router_seen(r, now_ms);
	conv_detach(r, c, ROUTER_REVOKE_TRANSFERRED, now_ms);
	c->q->nconv--;
	c->q = q;
	q->nconv++;
	c->enqueued_at = now_ms;
	router_conv_enter_waiting(r, c, now_ms);
	return 0;
}

int router_conversation_assign(struct router *r, int64_t conv_id, int64_t agent_id, int64_t now_ms,
			       enum router_error *error_r)
{
	struct router_conv *c = router_map_get(&r->convs, conv_id);
	if (!c)
		return fail(error_r, ROUTER_E_UNKNOWN_CONVERSATION);
	struct router_agent *a = router_map_get(&r->agents, agent_id);
	if (!a)
		return fail(error_r, ROUTER_E_UNKNOWN_AGENT);
	router_seen(r, now_ms);
	if (c->agent == a) {
		if (c->state == ROUTER_CONV_OFFERED)
			conv_accept(r, c);
		return 0;
	}
	conv_detach(r, c, ROUTER_REVOKE_TAKEN, now_ms);
	conv_assign(r, c, a);
	return 0;
}

static int conv_end(struct router *r, int64_t conv_id, int64_t now_ms, bool sticky,
		    enum router_error *error_r)
{
	struct router_conv *c = router_map_get(&r->convs, conv_id);
	if (!c)
		return fail(error_r, ROUTER_E_UNKNOWN_CONVERSATION);
	router_seen(r, now_ms);
	if (sticky && c->state == ROUTER_CONV_ASSIGNED)
		customer_record(r, c->customer_id, c->agent->id, now_ms, now_ms);
	conv_detach(r, c, ROUTER_REVOKE_CLOSED, now_ms);
	c->q->nconv--;
	router_map_del(&r->convs, c->id);
	free_conv(c);
	return 0;
}

int router_conversation_resolve(struct router *r, int64_t conv_id, int64_t now_ms,
				enum router_error *error_r)
{
	return conv_end(r, conv_id, now_ms, true, error_r);
}

int router_conversation_remove(struct router *r, int64_t conv_id, int64_t now_ms,
			       enum router_error *error_r)
{
	return conv_end(r, conv_id, now_ms, false, error_r);
}

int router_conversation_restore_offer(struct router *r, int64_t conv_id, int64_t agent_id,
				      int64_t offer_id, int64_t expires_at_ms, int64_t now_ms,
				      enum router_error *error_r)
{
	if (offer_id <= 0)
		return fail(error_r, ROUTER_E_INVALID);
	struct router_conv *c = router_map_get(&r->convs, conv_id);
	if (!c)
		return fail(error_r, ROUTER_E_UNKNOWN_CONVERSATION);
	struct router_agent *a = router_map_get(&r->agents, agent_id);
	if (!a)
		return fail(error_r, ROUTER_E_UNKNOWN_AGENT);
	if (c->state != ROUTER_CONV_WAITING)
		return fail(error_r, ROUTER_E_STATE);
	if (router_map_get(&r->offers, offer_id))
		return fail(error_r, ROUTER_E_EXISTS);
	router_seen(r, now_ms);
	router_conv_offer(r, c, a, offer_id, expires_at_ms);
	return 0;
}

int router_conversation_restore_cooldown(struct router *r, int64_t conv_id, int64_t agent_id,
					 int64_t until_ms, int64_t now_ms,
					 enum router_error *error_r)
{
	if (agent_id <= 0)
		return fail(error_r, ROUTER_E_INVALID);
	struct router_conv *c = router_map_get(&r->convs, conv_id);
	if (!c)
		return fail(error_r, ROUTER_E_UNKNOWN_CONVERSATION);
	router_seen(r, now_ms);
	cooldown_set(c, agent_id, until_ms);
	if (c->state == ROUTER_CONV_WAITING)
		router_conv_schedule(r, c, now_ms);
	return 0;
}

/* ---- offers ---- */

static struct router_conv *pending(struct router *r, int64_t offer_id, enum router_error *error_r)
{
	struct router_conv *c = router_map_get(&r->offers, offer_id);
	if (!c)
		fail(error_r, ROUTER_E_UNKNOWN_OFFER);
	return c;
}

int router_offer_accept(struct router *r, int64_t offer_id, int64_t now_ms,
			enum router_error *error_r)
{
	struct router_conv *c = pending(r, offer_id, error_r);
	if (!c)
		return -1;
	router_seen(r, now_ms);
	conv_accept(r, c);
	return 0;
}

int router_offer_reject(struct router *r, int64_t offer_id, int64_t now_ms,
			enum router_error *error_r)
{
	struct router_conv *c = pending(r, offer_id, error_r);
	if (!c)
		return -1;
	router_seen(r, now_ms);
	router_conv_unoffer(r, c, true, now_ms);
	return 0;
}

int router_offer_cancel(struct router *r, int64_t offer_id, int64_t now_ms,
			enum router_error *error_r)
{
	struct router_conv *c = pending(r, offer_id, error_r);
	if (!c)
		return -1;
	router_seen(r, now_ms);
	router_conv_unoffer(r, c, false, now_ms);
	return 0;
}

/* ---- reading ---- */

int router_conversation_get(const struct router *r, int64_t conv_id,
			    struct router_conversation_view *v, enum router_error *error_r)
{
	const struct router_conv *c = router_map_get(&r->convs, conv_id);
	if (!c)
		return fail(error_r, ROUTER_E_UNKNOWN_CONVERSATION);
	memset(v, 0, sizeof(*v));
	v->state = c->state;
	v->queue_id = c->q->id;
	v->customer_id = c->customer_id;
	v->channel = c->channel;
	v->tier = c->tier;
	v->priority = c->priority;
	v->enqueued_at_ms = c->enqueued_at;
	v->agent_id = c->agent ? c->agent->id : 0;
	v->offer_id = c->offer_id;
	v->expires_at_ms = c->expires_at;
	return 0;
}

int router_conversation_position(const struct router *r, int64_t conv_id, int *position_r,
				 enum router_error *error_r)
{
	const struct router_conv *c = router_map_get(&r->convs, conv_id);
	if (!c)
		return fail(error_r, ROUTER_E_UNKNOWN_CONVERSATION);
	if (c->state != ROUTER_CONV_WAITING)
		return fail(error_r, ROUTER_E_STATE);
	*position_r = (int)router_treap_rank(c->q->line, c->line_node.k) + 1;
	return 0;
}

int router_conversation_estimate(const struct router *r, int64_t conv_id, int64_t *wait_ms_r,
				 enum router_error *error_r)
{
	int pos;
	if (router_conversation_position(r, conv_id, &pos, error_r) < 0)
		return -1;
	const struct router_conv *c = router_map_get(&r->convs, conv_id);
	int64_t slots = c->q->slots[c->cls];
	int64_t mean = c->q->mean_handle_ms ? c->q->mean_handle_ms : r->default_handle_ms;
	*wait_ms_r = slots > 0 ? ((int64_t)pos * mean + slots - 1) / slots : -1;
	return 0;
}

int router_agent_get(const struct router *r, int64_t agent_id, struct router_agent_view *v,
		     enum router_error *error_r)
{
	const struct router_agent *a = router_map_get(&r->agents, agent_id);
	if (!a)
		return fail(error_r, ROUTER_E_UNKNOWN_AGENT);
	memset(v, 0, sizeof(*v));
	v->status = a->status;
	v->tier = a->tier;
	memcpy(v->capacity, a->capacity, sizeof(v->capacity));
	memcpy(v->load, a->load, sizeof(v->load));
	v->offered = a->noffered;
	v->assigned = a->nassigned;
	v->idle_since_ms = a->idle_since;
	return 0;
}

int router_queue_stats(const struct router *r, int64_t queue_id, int64_t now_ms,
		       struct router_queue_stats *st, enum router_error *error_r)
{
	const struct router_queue *q = router_map_get(&r->queues, queue_id);
	if (!q)
		return fail(error_r, ROUTER_E_UNKNOWN_QUEUE);
	memset(st, 0, sizeof(*st));
	st->waiting = (int)router_treap_size(q->line);
	st->offered = q->noffered;
	st->assigned = q->nassigned;
	st->longest_wait_ms = q->line && now_ms > q->line->min1 ? now_ms - q->line->min1 : 0;
	st->agents_available = q->members_available;
	memcpy(st->slots, q->slots, sizeof(st->slots));
	st->mean_handle_ms = q->mean_handle_ms;
	return 0;
}

void router_stats(const struct router *r, struct router_stats *st)
{
	memset(st, 0, sizeof(*st));
	st->queues = (int)r->queues.n;
	st->agents = (int)r->agents.n;
	st->waiting = r->nwaiting;
	st->offered = r->noffered;
	st->assigned = r->nassigned;
	st->agents_offline = r->agents_by_status[ROUTER_AGENT_OFFLINE];
	st->agents_available = r->agents_by_status[ROUTER_AGENT_AVAILABLE];
	st->agents_away = r->agents_by_status[ROUTER_AGENT_AWAY];
	st->agents_busy = r->agents_busy;
}
