/* idmap: a hash map from int64 ids to pointers (sessions by customer or agent id). */
#ifndef CONTACTD_IDMAP_H
#define CONTACTD_IDMAP_H

#include <stddef.h>
#include <stdint.h>

struct idmap;

struct idmap *idmap_new(void);
/* Frees the map, not the values; M may be NULL. */
void idmap_free(struct idmap **m);
/* The value for KEY, or NULL. */
void *idmap_get(const struct idmap *m, int64_t key);
/* Sets KEY to VALUE (NULL removes it). */
void idmap_set(struct idmap *m, int64_t key, void *value);
size_t idmap_count(const struct idmap *m);
/* Calls FN for every entry; FN must not change M. */
void idmap_each(const struct idmap *m, void (*fn)(int64_t key, void *value, void *arg), void *arg);

#endif
