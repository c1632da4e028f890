/* router_verify(): recomputes every index and counter from the records and compares. For
 * tests and debug builds; O(everything). */
#include "router_internal.h"

#include <stdlib.h>

#define CHECK(cond, what)                                                                          \
	do {                                                                                       \
		if (!(cond)) {                                                                     \
			*error_r = what;                                                           \
			return -1;                                                                 \
		}                                                                                  \
	} while (0)

static bool in_heap(const struct router_heap *h, const struct router_hnode *x)
{
	return x->idx >= 0 && x->idx < h->n && h->v[x->idx] == x;
}

static bool expect_serve(const struct router_agent *a, const struct router_queue *q)
{
	for (int j = 0; j < q->nskills; j++) {
		bool ok = false;
		for (int i = 0; i < a->nskills; i++) {
			if (a->skills[i].skill_id == q->skills[j].skill_id &&
			    a->skills[i].level >= q->skills[j].level)
				ok = true;
		}
		if (!ok)
			return false;
	}
	return true;
}

/* The next time-driven change of waiting C after NOW (INT64_MAX when none). */
static int64_t next_change(const struct router_conv *c, int64_t now_ms)
{
	int64_t at = INT64_MAX;
	for (int i = 0; i < c->ncd; i++) {
		if (c->cd[i].until_ms > now_ms && c->cd[i].until_ms < at)
			at = c->cd[i].until_ms;
	}
	int hi = router_window_hi(c, now_ms);
	for (int i = 0; i < c->q->nsteps; i++) {
		int64_t t = c->enqueued_at + (int64_t)c->q->steps[i].after_s * 1000;
		if (c->q->steps[i].tier > hi && t > now_ms && t < at)
			at = t;
	}
	return at;
}

static int verify_queue(const struct router *r, const struct router_queue *q, const char **error_r)
{
	CHECK(router_treap_check(q->line, NULL, NULL) >= 0, "queue line treap broken");
	long nb = 0;
	for (int cls = 0; cls < ROUTER_NCLASS; cls++) {
		for (int j = 0; j < q->nbuckets[cls]; j++) {
			const struct router_bucket *b = q->buckets[cls][j];
			long n = router_treap_check(b->root, NULL, NULL);
			CHECK(n > 0, "bucket empty or broken");
			nb += n;
			if (j) {
				const struct router_bucket *p = q->buckets[cls][j - 1];
				CHECK(p->priority > b->priority ||
					  (p->priority == b->priority && p->tier < b->tier),
				      "buckets out of order");
			}
		}
		CHECK(router_treap_check(q->free_agents[cls], NULL, NULL) >= 0,
		      "free agent treap broken");
	}
	CHECK(nb == (long)router_treap_size(q->line), "buckets and line disagree");
	int slots[ROUTER_NCLASS] = {0}, avail = 0;
	long in_tree[ROUTER_NCLASS] = {0};
	for (size_t i = 0; i < r->agents.cap; i++) {
		const struct router_agent *a = r->agents.vals[i];
		if (!r->agents.keys[i])
			continue;
		const struct router_member *m = router_member_of(a, q);
		CHECK(!m == !expect_serve(a, q), "membership does not match skills");
		if (!m)
			continue;
		bool on = a->status == ROUTER_AGENT_AVAILABLE;
		avail += on;
		for (int cls = 0; cls < ROUTER_NCLASS; cls++) {
			slots[cls] += on ? a->capacity[cls] : 0;
			in_tree[cls] += m->in_tree[cls];
		}
	}
	CHECK(avail == q->members_available, "members_available wrong");
	for (int cls = 0; cls < ROUTER_NCLASS; cls++) {
		CHECK(slots[cls] == q->slots[cls], "queue slots wrong");
		CHECK(in_tree[cls] == (long)router_treap_size(q->free_agents[cls]),
		      "free agent tree size wrong");
	}
	return 0;
}

static int verify_agent(const struct router *r, const struct router_agent *a, const char **error_r)
{
	int load[ROUTER_NCLASS] = {0}, noff = 0, nass = 0;
	const struct router_conv *prev = NULL;
	for (const struct router_conv *c = a->held; c; prev = c, c = c->hnext) {
		CHECK(c->agent == a && c->hprev == prev, "held list broken");
		CHECK(c->state != ROUTER_CONV_WAITING, "waiting conversation held");
		load[c->cls]++;
		noff += c->state == ROUTER_CONV_OFFERED;
		nass += c->state == ROUTER_CONV_ASSIGNED;
	}
	CHECK(noff == a->noffered && nass == a->nassigned, "agent offered/assigned counts");
	bool avail = a->status == ROUTER_AGENT_AVAILABLE;
	for (int i = 0; i < a->nmembers; i++) {
		const struct router_member *m = a->members[i];
		CHECK(m->a == a && router_map_get(&r->queues, m->q->id) == m->q, "member broken");
		for (int j = 0; j < i; j++)
			CHECK(a->members[j]->q != m->q, "member twice");
		for (int cls = 0; cls < ROUTER_NCLASS; cls++) {
			bool want = avail && load[cls] < a->capacity[cls];
			CHECK(m->in_tree[cls] == want, "free tree membership wrong");
			if (!want)
				continue;
			const struct router_tnode *n = &m->node[cls];
			CHECK(n->k[0] == a->tier && n->k[1] == a->idle_since && n->k[2] == a->id,
			      "free tree key stale");
			CHECK(router_treap_lower(m->q->free_agents[cls], n->k) == n,
			      "agent not in its free tree");
			CHECK(m->slots[cls] == (avail ? a->capacity[cls] : 0), "member slots");
		}
		CHECK(m->available == avail, "member availability");
	}
	for (int cls = 0; cls < ROUTER_NCLASS; cls++)
		CHECK(load[cls] == a->load[cls], "agent load wrong");
	CHECK(a->counted_status == (int)a->status, "agent status not counted");
	CHECK(a->counted_busy == (avail && noff + nass > 0), "agent busy not counted");
	CHECK(a->item.h.idx < 0 || in_heap(&r->work, &a->item.h), "agent work item");
	return 0;
}

static int verify_conv(const struct router *r, const struct router_conv *c, const char **error_r)
{
	CHECK(router_map_get(&r->queues, c->q->id) == c->q, "conversation queue unknown");
	CHECK(c->cls == (int)router_channel_class(c->channel), "conversation class");
	switch (c->state) {
	case ROUTER_CONV_WAITING:
		CHECK(!c->agent && !c->offer_id, "waiting conversation has an agent");
		CHECK(router_treap_lower(c->q->line, c->line_node.k) == &c->line_node,
		      "waiting conversation not in line");
		CHECK(c->line_node.k[0] == -(int64_t)c->priority &&
			  c->line_node.k[1] == c->enqueued_at,
		      "line key stale");
		CHECK(c->bucket && c->bucket->tier == c->tier && c->bucket->priority == c->priority,
		      "wrong bucket");
		CHECK(router_treap_lower(c->bucket->root, c->bucket_node.k) == &c->bucket_node,
		      "waiting conversation not in bucket");
		if (c->timer.idx >= 0) {
			CHECK(in_heap(&r->wait_timers, &c->timer), "wait timer not in heap");
			CHECK(c->timer_at <= r->now_seen ||
				  c->timer_at == next_change(c, r->now_seen),
			      "wait timer wrong");
		} else {
			CHECK(next_change(c, r->now_seen) == INT64_MAX, "wait timer missing");
		}
		CHECK(c->item.h.idx < 0 || in_heap(&r->work, &c->item.h), "work item");
		break;
	case ROUTER_CONV_OFFERED:
		CHECK(c->agent && router_map_get(&r->agents, c->agent->id) == c->agent,
		      "offer agent unknown");
		CHECK(router_map_get(&r->offers, c->offer_id) == c, "offer not indexed");
		CHECK(in_heap(&r->offer_timers, &c->timer), "offer timer not in heap");
		CHECK(c->item.h.idx < 0 && !c->bucket, "offered conversation still waiting");
		break;
	case ROUTER_CONV_ASSIGNED:
		CHECK(c->agent && router_map_get(&r->agents, c->agent->id) == c->agent,
		      "assigned agent unknown");
		CHECK(!c->offer_id && c->timer.idx < 0 && c->item.h.idx < 0 && !c->bucket,
		      "assigned conversation still indexed");
		break;
	}
	return 0;
}

int router_verify(const struct router *r, const char **error_r)
{
	const char *dummy;
	if (!error_r)
		error_r = &dummy;
	CHECK(router_heap_check(&r->work) && router_heap_check(&r->wait_timers) &&
		  router_heap_check(&r->offer_timers),
	      "heap order broken");
	int waiting = 0, offered = 0, assigned = 0, by_status[3] = {0}, busy = 0, work_agents = 0;
	for (size_t i = 0; i < r->queues.cap; i++) {
		const struct router_queue *q = r->queues.vals[i];
		if (!r->queues.keys[i])
			continue;
		if (verify_queue(r, q, error_r) < 0)
			return -1;
		waiting += (int)router_treap_size(q->line);
		int nconv = 0, noff = 0, nass = 0;
		for (size_t j = 0; j < r->convs.cap; j++) {
			const struct router_conv *c = r->convs.vals[j];
			if (r->convs.keys[j] && c->q == q) {
				nconv++;
				noff += c->state == ROUTER_CONV_OFFERED;
				nass += c->state == ROUTER_CONV_ASSIGNED;
			}
		}
		CHECK(nconv == q->nconv && noff == q->noffered && nass == q->nassigned,
		      "queue conversation counts");
	}
	for (size_t i = 0; i < r->agents.cap; i++) {
		const struct router_agent *a = r->agents.vals[i];
		if (!r->agents.keys[i])
			continue;
		CHECK(a->id == r->agents.keys[i], "agent map key");
		if (verify_agent(r, a, error_r) < 0)
			return -1;
		by_status[a->status]++;
		busy += a->counted_busy;
		work_agents += a->item.h.idx >= 0;
	}
	for (size_t i = 0; i < r->convs.cap; i++) {
		const struct router_conv *c = r->convs.vals[i];
		if (!r->convs.keys[i])
			continue;
		CHECK(c->id == r->convs.keys[i], "conversation map key");
		if (verify_conv(r, c, error_r) < 0)
			return -1;
		offered += c->state == ROUTER_CONV_OFFERED;
		assigned += c->state == ROUTER_CONV_ASSIGNED;
	}
	CHECK(waiting == r->nwaiting && offered == r->noffered && assigned == r->nassigned,
	      "router conversation counts");
	CHECK((size_t)offered == r->offers.n && offered == r->offer_timers.n, "offer index size");
	for (int s = 0; s < 3; s++)
		CHECK(by_status[s] == r->agents_by_status[s], "agent status counts");
	CHECK(busy == r->agents_busy && work_agents == r->work_agents, "agent counters");
	for (int i = 0; i < r->work.n; i++) {
		const struct router_item *it = (const struct router_item *)r->work.v[i];
		if (it->is_agent)
			continue;
		const struct router_conv *c = it->owner;
		struct router_key k;
		router_conv_key(c, &k);
		CHECK(!it->inf && !router_key_before(&k, &it->key) &&
			  !router_key_before(&it->key, &k),
		      "conversation work key stale");
	}
	return 0;
}
