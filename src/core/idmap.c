#include "contactd/idmap.h"

#include <stdbool.h>
#include <stdlib.h>

/* Open addressing with linear probing and backward-shift deletion; load factor <= 1/2. */
struct slot {
	int64_t key;
	void *value; /* NULL: empty */
};

struct idmap {
	struct slot *slots;
	size_t cap; /* a power of two */
	size_t count;
};

static size_t hash(int64_t key, size_t cap)
{
	uint64_t x = (uint64_t)key * 0x9E3779B97F4A7C15ULL;
	return (size_t)(x ^ (x >> 29)) & (cap - 1);
}

struct idmap *idmap_new(void)
{
	struct idmap *m = calloc(1, sizeof(*m));
	if (!m)
		abort();
	m->cap = 64;
	m->slots = calloc(m->cap, sizeof(*m->slots));
	if (!m->slots)
		abort();
	return m;
}

void idmap_free(struct idmap **mp)
{
	if (!*mp)
		return;
	free((*mp)->slots);
	free(*mp);
	*mp = NULL;
}

static size_t find(const struct idmap *m, int64_t key)
{
	size_t i = hash(key, m->cap);
	while (m->slots[i].value && m->slots[i].key != key)
		i = (i + 1) & (m->cap - 1);
	return i;
}

void *idmap_get(const struct idmap *m, int64_t key)
{
	return m->slots[find(m, key)].value;
}

static void grow(struct idmap *m)
{
	struct slot *old = m->slots;
	size_t oldcap = m->cap;
	m->cap *= 2;
	m->slots = calloc(m->cap, sizeof(*m->slots));
	if (!m->slots)
		abort();
	for (size_t i = 0; i < oldcap; i++)
		if (old[i].value)
			m->slots[find(m, old[i].key)] = old[i];
	free(old);
}

void idmap_set(struct idmap *m, int64_t key, void *value)
{
	size_t i = find(m, key);
	if (value) {
		if (!m->slots[i].value) {
			if (2 * (m->count + 1) > m->cap) {
				grow(m);
				i = find(m, key);
			}
			m->count++;
		}
		m->slots[i].key = key;
		m->slots[i].value = value;
		return;
	}
	if (!m->slots[i].value)
		return;
	m->slots[i].value = NULL;
	m->count--;
	/* backward shift: move later members of the run into the hole */
	size_t hole = i, j = i;
	for (;;) {
		j = (j + 1) & (m->cap - 1);
		if (!m->slots[j].value)
			break;
		size_t home = hash(m->slots[j].key, m->cap);
		/* can slot j move to the hole? only if its home is not in (hole, j] cyclically */
		int in_range = hole <= j ? (home > hole && home <= j) : (home > hole || home <= j);
		if (!in_range) {
			m->slots[hole] = m->slots[j];
			m->slots[j].value = NULL;
			hole = j;
		}
	}
}

size_t idmap_count(const struct idmap *m)
{
	return m->count;
}

void idmap_each(const struct idmap *m, void (*fn)(int64_t key, void *value, void *arg), void *arg)
{
	for (size_t i = 0; i < m->cap; i++)
		if (m->slots[i].value)
			fn(m->slots[i].key, m->slots[i].value, arg);
}
