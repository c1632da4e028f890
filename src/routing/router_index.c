/* router indexes: a treap with ranks, an indexed binary heap and an int64 hash map. Small,
 * allocation-free where they can be (nodes are embedded in the router's records). */
#include "router_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *router_xcalloc(size_t n, size_t size)
{
	void *p = calloc(n ? n : 1, size ? size : 1);
	if (!p) {
		fputs("contactd: out of memory (router)\n", stderr);
		abort();
	}
	return p;
}

void *router_xrealloc(void *p, size_t n, size_t size)
{
	if (size && n > SIZE_MAX / size) {
		fputs("contactd: out of memory (router)\n", stderr);
		abort();
	}
	size_t bytes = n * size;
	void *q = realloc(p, bytes ? bytes : 1);
	if (!q) {
		fputs("contactd: out of memory (router)\n", stderr);
		abort();
	}
	return q;
}

/* ---- treap ---- */

int router_key_cmp(const int64_t a[3], const int64_t b[3])
{
	for (int i = 0; i < 3; i++) {
		if (a[i] != b[i])
			return a[i] < b[i] ? -1 : 1;
	}
	return 0;
}

static void tupdate(struct router_tnode *t)
{
	t->size = 1;
	t->min1 = t->k[1];
	if (t->l) {
		t->size += t->l->size;
		if (t->l->min1 < t->min1)
			t->min1 = t->l->min1;
	}
	if (t->r) {
		t->size += t->r->size;
		if (t->r->min1 < t->min1)
			t->min1 = t->r->min1;
	}
}

/* L gets the nodes < KEY, R the others. */
static void tsplit(struct router_tnode *t, const int64_t key[3], struct router_tnode **l,
		   struct router_tnode **r)
{
	if (!t) {
		*l = *r = NULL;
		return;
	}
	if (router_key_cmp(t->k, key) < 0) {
		tsplit(t->r, key, &t->r, r);
		*l = t;
	} else {
		tsplit(t->l, key, l, &t->l);
		*r = t;
	}
	tupdate(t);
}

static struct router_tnode *tmerge(struct router_tnode *l, struct router_tnode *r)
{
	if (!l)
		return r;
	if (!r)
		return l;
	if (l->pri > r->pri) {
		l->r = tmerge(l->r, r);
		tupdate(l);
		return l;
	}
	r->l = tmerge(l, r->l);
	tupdate(r);
	return r;
}

static struct router_tnode *tinsert(struct router_tnode *t, struct router_tnode *n)
{
	if (!t)
		return n;
	if (n->pri > t->pri) {
		tsplit(t, n->k, &n->l, &n->r);
		tupdate(n);
		return n;
	}
	if (router_key_cmp(n->k, t->k) < 0)
		t->l = tinsert(t->l, n);
	else
		t->r = tinsert(t->r, n);
	tupdate(t);
	return t;
}

void router_treap_insert(struct router_tnode **root, struct router_tnode *n, uint32_t pri)
{
	n->l = n->r = NULL;
	n->pri = pri;
	tupdate(n);
	*root = tinsert(*root, n);
}

static struct router_tnode *tremove(struct router_tnode *t, const struct router_tnode *n)
{
	if (!t)
		return NULL; /* not found: the caller's bug, caught by router_verify */
	int c = router_key_cmp(n->k, t->k);
	if (c == 0)
		return tmerge(t->l, t->r);
	if (c < 0)
		t->l = tremove(t->l, n);
	else
		t->r = tremove(t->r, n);
	tupdate(t);
	return t;
}

void router_treap_remove(struct router_tnode **root, struct router_tnode *n)
{
	*root = tremove(*root, n);
	n->l = n->r = NULL;
}

struct router_tnode *router_treap_first(struct router_tnode *t)
{
	while (t && t->l)
		t = t->l;
	return t;
}

struct router_tnode *router_treap_lower(struct router_tnode *t, const int64_t key[3])
{
	struct router_tnode *best = NULL;
	while (t) {
		if (router_key_cmp(t->k, key) >= 0) {
			best = t;
			t = t->l;
		} else {
			t = t->r;
		}
	}
	return best;
}

struct router_tnode *router_treap_upper(struct router_tnode *t, const int64_t key[3])
{
	struct router_tnode *best = NULL;
	while (t) {
		if (router_key_cmp(t->k, key) > 0) {
			best = t;
			t = t->l;
		} else {
			t = t->r;
		}
	}
	return best;
}

uint32_t router_treap_rank(const struct router_tnode *t, const int64_t key[3])
{
	uint32_t n = 0;
	while (t) {
		if (router_key_cmp(t->k, key) < 0) {
			n += 1 + router_treap_size(t->l);
			t = t->r;
		} else {
			t = t->l;
		}
	}
	return n;
}

long router_treap_check(const struct router_tnode *t, const int64_t *lo, const int64_t *hi)
{
	if (!t)
		return 0;
	if ((lo && router_key_cmp(t->k, lo) <= 0) || (hi && router_key_cmp(t->k, hi) >= 0))
		return -1;
	if ((t->l && t->l->pri > t->pri) || (t->r && t->r->pri > t->pri))
		return -1;
	long nl = router_treap_check(t->l, lo, t->k);
	long nr = router_treap_check(t->r, t->k, hi);
	if (nl < 0 || nr < 0 || (long)t->size != nl + nr + 1)
		return -1;
	int64_t m = t->k[1];
	if (t->l && t->l->min1 < m)
		m = t->l->min1;
	if (t->r && t->r->min1 < m)
		m = t->r->min1;
	return m == t->min1 ? (long)t->size : -1;
}

/* ---- heap ---- */

void router_heap_init(struct router_heap *h, router_before_fn before)
{
	memset(h, 0, sizeof(*h));
	h->before = before;
}

void router_heap_fini(struct router_heap *h)
{
	free(h->v);
	h->v = NULL;
	h->n = h->cap = 0;
}

static void hset(struct router_heap *h, int i, struct router_hnode *x)
{
	h->v[i] = x;
	x->idx = i;
}

static void hup(struct router_heap *h, int i)
{
	struct router_hnode *x = h->v[i];
	while (i > 0) {
		int p = (i - 1) / 2;
		if (!h->before(x, h->v[p]))
			break;
		hset(h, i, h->v[p]);
		i = p;
	}
	hset(h, i, x);
}

static void hdown(struct router_heap *h, int i)
{
	struct router_hnode *x = h->v[i];
	for (;;) {
		int c = 2 * i + 1;
		if (c >= h->n)
			break;
		if (c + 1 < h->n && h->before(h->v[c + 1], h->v[c]))
			c++;
		if (!h->before(h->v[c], x))
			break;
		hset(h, i, h->v[c]);
		i = c;
	}
	hset(h, i, x);
}

void router_heap_push(struct router_heap *h, struct router_hnode *x)
{
	if (h->n == h->cap) {
		h->cap = h->cap ? h->cap * 2 : 64;
		h->v = router_xrealloc(h->v, (size_t)h->cap, sizeof(*h->v));
	}
	hset(h, h->n++, x);
	hup(h, h->n - 1);
}

void router_heap_remove(struct router_heap *h, struct router_hnode *x)
{
	int i = x->idx;
	x->idx = -1;
	h->n--;
	if (i == h->n)
		return;
	hset(h, i, h->v[h->n]);
	router_heap_fix(h, h->v[i]);
}

void router_heap_fix(struct router_heap *h, struct router_hnode *x)
{
	int i = x->idx;
	if (i > 0 && h->before(x, h->v[(i - 1) / 2]))
		hup(h, i);
	else
		hdown(h, i);
}

bool router_heap_check(const struct router_heap *h)
{
	for (int i = 0; i < h->n; i++) {
		if (h->v[i]->idx != i)
			return false;
		if (i > 0 && h->before(h->v[i], h->v[(i - 1) / 2]))
			return false;
	}
	return true;
}

/* ---- map ---- */

static size_t mhash(int64_t key, size_t cap)
{
	uint64_t x = (uint64_t)key;
	x ^= x >> 33;
	x *= 0xff51afd7ed558ccdULL;
	x ^= x >> 33;
	x *= 0xc4ceb9fe1a85ec53ULL;
	x ^= x >> 33;
	return (size_t)x & (cap - 1);
}

void router_map_init(struct router_map *m)
{
	m->cap = 16;
	m->n = 0;
	m->keys = router_xcalloc(m->cap, sizeof(*m->keys));
	m->vals = router_xcalloc(m->cap, sizeof(*m->vals));
}

void router_map_fini(struct router_map *m)
{
	free(m->keys);
	free(m->vals);
	memset(m, 0, sizeof(*m));
}

void *router_map_get(const struct router_map *m, int64_t key)
{
	if (key <= 0)
		return NULL;
	for (size_t i = mhash(key, m->cap);; i = (i + 1) & (m->cap - 1)) {
		if (m->keys[i] == key)
			return m->vals[i];
		if (m->keys[i] == 0)
			return NULL;
	}
}

static void mgrow(struct router_map *m)
{
	struct router_map old = *m;
	m->cap = old.cap * 2;
	m->n = 0;
	m->keys = router_xcalloc(m->cap, sizeof(*m->keys));
	m->vals = router_xcalloc(m->cap, sizeof(*m->vals));
	for (size_t i = 0; i < old.cap; i++) {
		if (old.keys[i])
			router_map_put(m, old.keys[i], old.vals[i]);
	}
	free(old.keys);
	free(old.vals);
}

void router_map_put(struct router_map *m, int64_t key, void *val)
{
	if ((m->n + 1) * 4 > m->cap * 3)
		mgrow(m);
	size_t i = mhash(key, m->cap);
	while (m->keys[i])
		i = (i + 1) & (m->cap - 1);
	m->keys[i] = key;
	m->vals[i] = val;
	m->n++;
}

void router_map_del(struct router_map *m, int64_t key)
{
	size_t mask = m->cap - 1;
	size_t i = mhash(key, m->cap);
	while (m->keys[i] != key) {
		if (!m->keys[i])
			return;
		i = (i + 1) & mask;
	}
	/* backward-shift deletion keeps every probe chain unbroken */
	size_t j = i;
	for (;;) {
		j = (j + 1) & mask;
		if (!m->keys[j])
			break;
		size_t home = mhash(m->keys[j], m->cap);
		/* move j into the hole at i unless its home lies cyclically in (i, j] */
		bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);
		if (stays)
			continue;
		m->keys[i] = m->keys[j];
		m->vals[i] = m->vals[j];
		i = j;
	}
	m->keys[i] = 0;
	m->vals[i] = NULL;
	m->n--;
}
