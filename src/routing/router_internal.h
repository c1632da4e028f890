/* router internals, shared by router.c (inputs, reading), router_route.c (decisions) and
 * router_index.c (treap, heap, hash map). Nothing here is for other modules. */
#ifndef CONTACTD_ROUTER_INTERNAL_H
#define CONTACTD_ROUTER_INTERNAL_H

#include "contactd/router.h"

#include <stddef.h>

#define ROUTER_NCLASS ROUTER_CLASS__COUNT
/* Largest skill or step list accepted from the glue. */
#define ROUTER_MAX_LIST 1024

/* ---- treap: an ordered set with subtree sizes (rank) and the subtree minimum of k[1] ----
 * Keys are three int64 compared in order and unique per tree (the last is an id). */
struct router_tnode {
	struct router_tnode *l, *r;
	void *owner;
	int64_t k[3];
	int64_t min1; /* smallest k[1] in the subtree */
	uint32_t pri;
	uint32_t size;
};

int router_key_cmp(const int64_t a[3], const int64_t b[3]);
void router_treap_insert(struct router_tnode **root, struct router_tnode *n, uint32_t pri);
void router_treap_remove(struct router_tnode **root, struct router_tnode *n);
struct router_tnode *router_treap_first(struct router_tnode *t);
/* The first node with a key >= KEY (lower) or > KEY (upper); NULL when none. */
struct router_tnode *router_treap_lower(struct router_tnode *t, const int64_t key[3]);
struct router_tnode *router_treap_upper(struct router_tnode *t, const int64_t key[3]);
/* How many nodes have a key < KEY. */
uint32_t router_treap_rank(const struct router_tnode *t, const int64_t key[3]);
static inline uint32_t router_treap_size(const struct router_tnode *t)
{
	return t ? t->size : 0;
}
/* Checks order, heap property, sizes and minima; returns the node count or -1. */
long router_treap_check(const struct router_tnode *t, const int64_t *lo, const int64_t *hi);

/* ---- indexed binary heap: nodes know their slot, so any node can be removed or moved ---- */
struct router_hnode {
	int idx; /* -1 when not in a heap */
};
typedef bool (*router_before_fn)(const struct router_hnode *a, const struct router_hnode *b);
struct router_heap {
	struct router_hnode **v;
	int n, cap;
	router_before_fn before; /* true when A must come out first */
};
void router_heap_init(struct router_heap *h, router_before_fn before);
void router_heap_fini(struct router_heap *h);
void router_heap_push(struct router_heap *h, struct router_hnode *x);
void router_heap_remove(struct router_heap *h, struct router_hnode *x);
void router_heap_fix(struct router_heap *h, struct router_hnode *x); /* after a key change */
static inline struct router_hnode *router_heap_top(const struct router_heap *h)
{
	return h->n ? h->v[0] : NULL;
}
bool router_heap_check(const struct router_heap *h);

/* ---- hash map int64 (> 0) -> pointer, open addressing ---- */
struct router_map {
	int64_t *keys; /* 0 = empty */
	void **vals;
	size_t cap, n;
};
void router_map_init(struct router_map *m);
void router_map_fini(struct router_map *m);
void *router_map_get(const struct router_map *m, int64_t key);
void router_map_put(struct router_map *m, int64_t key, void *val); /* KEY must be absent */
void router_map_del(struct router_map *m, int64_t key);		   /* KEY must be present */

void *router_xcalloc(size_t n, size_t size);
void *router_xrealloc(void *p, size_t n, size_t size);

/* ---- records ---- */

/* Serving order of waiting conversations, see the header. */
struct router_key {
	int priority, queue_priority;
	int64_t enqueued_at, id;
};

/* An entry of the work heap: a waiting conversation to place (exact key), or an agent with a
 * free slot to fill (key = an upper bound of its best conversation's key; inf = unknown). */
struct router_item {
	struct router_hnode h;
	bool is_agent;
	bool inf;
	struct router_key key;
	void *owner;
};

/* Waiting conversations of one queue and class with one (tier, priority), oldest first:
 * key (enqueued_at, id, 0). */
struct router_bucket {
	int tier, priority;
	struct router_tnode *root;
};

struct router_queue {
	int64_t id;
	int priority;
	struct router_skill *skills; /* sorted by skill_id */
	int nskills;
	struct router_overflow *steps; /* sorted by after_s */
	int nsteps;
	/* every waiting conversation, in serving order: key (-priority, enqueued_at, id) */
	struct router_tnode *line;
	/* per class: (priority desc, tier asc), empty buckets dropped */
	struct router_bucket **buckets[ROUTER_NCLASS];
	int nbuckets[ROUTER_NCLASS], bcap[ROUTER_NCLASS];
	/* per class: available members with a free slot: key (tier, idle_since, id) */
	struct router_tnode *free_agents[ROUTER_NCLASS];
	int nconv, noffered, nassigned;
	int members_available;
	int slots[ROUTER_NCLASS];
	int64_t mean_handle_ms; /* 0 = none yet */
};

/* An agent's membership of a queue it can serve. */
struct router_member {
	struct router_queue *q;
	struct router_agent *a;
	struct router_tnode node[ROUTER_NCLASS];
	bool in_tree[ROUTER_NCLASS];
	int slots[ROUTER_NCLASS]; /* what it adds to q->slots */
	bool available;		  /* counted in q->members_available */
};

struct router_conv;

struct router_agent {
	int64_t id;
	int tier;
	struct router_skill *skills; /* sorted by skill_id */
	int nskills;
	int capacity[ROUTER_NCLASS];
	int load[ROUTER_NCLASS];
	enum router_agent_status status;
	int64_t idle_since;
	struct router_member **members;
	int nmembers, mcap;
	struct router_conv *held; /* offered and assigned conversations */
	int noffered, nassigned;
	struct router_item item;
	/* what router_stats counts it as */
	int counted_status;
	bool counted_busy;
};

struct router_cooldown {
	int64_t agent_id, until_ms;
};

struct router_conv {
	int64_t id, customer_id, enqueued_at;
	struct router_queue *q;
	enum router_channel channel;
	int cls;
	int tier, priority;
	enum router_conv_state state;
	struct router_agent *agent; /* OFFERED / ASSIGNED */
	int64_t offer_id, expires_at;
	struct router_conv *hprev, *hnext; /* agent->held */
	struct router_tnode line_node, bucket_node;
	struct router_bucket *bucket;
	struct router_cooldown *cd;
	int ncd, cdcap;
	/* in r->wait_timers while waiting (next overflow step or cooldown end), in
	 * r->offer_timers while offered (expires_at) */
	struct router_hnode timer;
	int64_t timer_at;
	struct router_item item;
};

#define ROUTER_CONV_OF_TIMER(h)                                                                    \
	((struct router_conv *)((char *)(h)-offsetof(struct router_conv, timer)))

struct router_customer {
	int64_t agent_id, at_ms;
};

struct router {
	struct router_config cfg;
	int64_t offer_timeout_ms, cooldown_ms, sticky_ms, default_handle_ms;
	struct router_map queues, agents, convs, offers, customers;
	size_t customers_pruned_n;
	struct router_heap work; /* router_item: conversations and agents to look at */
	int work_agents;	 /* agents in it */
	struct router_heap wait_timers, offer_timers;
	struct router_decision *outbox;
	int outbox_head, outbox_n, outbox_cap;
	int64_t next_offer_id, now_seen;
	uint32_t rng;
	int nwaiting, noffered, nassigned;
	int agents_by_status[3], agents_busy;
};

/* router.c: shared mutations */
uint32_t router_rand(struct router *r);
void router_seen(struct router *r, int64_t now_ms);
struct router_member *router_member_of(const struct router_agent *a, const struct router_queue *q);
void router_conv_key(const struct router_conv *c, struct router_key *k);
bool router_key_before(const struct router_key *a, const struct router_key *b);
void router_conv_enter_waiting(struct router *r, struct router_conv *c, int64_t now_ms);
void router_conv_offer(struct router *r, struct router_conv *c, struct router_agent *a,
		       int64_t offer_id, int64_t expires_at);
/* Ends a pending offer: back to waiting, with a cooldown for its agent when COOLDOWN. */
void router_conv_unoffer(struct router *r, struct router_conv *c, bool cooldown, int64_t now_ms);
/* Drops ended cooldowns and (re)arms C's wait timer at its next overflow step that widens
 * the window or the end of its next cooldown, whichever comes first. */
void router_conv_schedule(struct router *r, struct router_conv *c, int64_t now_ms);
void router_mark_conv(struct router *r, struct router_conv *c);
void router_mark_agent(struct router *r, struct router_agent *a);
void router_unmark(struct router *r, struct router_item *it);
void router_outbox_push(struct router *r, const struct router_decision *d);
bool router_work_before(const struct router_hnode *a, const struct router_hnode *b);

/* router_route.c: eligibility and search */
/* The top of the tier window at NOW: INT32_MAX for a queue without steps. */
int router_window_hi(const struct router_conv *c, int64_t now_ms);
bool router_cooled(const struct router_conv *c, int64_t agent_id, int64_t now_ms);
/* The customer's last agent when it is eligible for C now and within the sticky window. */
struct router_agent *router_sticky_agent(const struct router *r, const struct router_conv *c,
					 int64_t now_ms);
/* The best eligible agent for waiting C, filling WHY when not NULL; NULL when none. */
struct router_agent *router_best_agent(const struct router *r, const struct router_conv *c,
				       int64_t now_ms, struct router_reason *why);
/* The first waiting conversation in serving order that A is eligible for; NULL when none. */
struct router_conv *router_best_conv(const struct router *r, const struct router_agent *a,
				     int64_t now_ms);

#endif
