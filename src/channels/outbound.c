/* The registry of per-channel outbound implementations (see outbound.h). */
#include "contactd/outbound.h"

#include "contactd/log.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OUTBOUND_MAX 16

struct outbound {
	struct {
		char channel[16];
		outbound_fn fn;
		void *arg;
	} impl[OUTBOUND_MAX];
	int n;
};

struct outbound *outbound_new(void)
{
	return calloc(1, sizeof(struct outbound));
}

void outbound_free(struct outbound **o)
{
	free(*o);
	*o = NULL;
}

int outbound_register(struct outbound *o, const char *channel, outbound_fn fn, void *arg)
{
	if (!o || !channel || strlen(channel) >= sizeof(o->impl[0].channel))
		return -1;
	int i = 0;
	while (i < o->n && strcmp(o->impl[i].channel, channel) != 0)
		i++;
	if (i == o->n) {
		if (o->n == OUTBOUND_MAX)
			return -1;
		o->n++;
	}
	snprintf(o->impl[i].channel, sizeof(o->impl[i].channel), "%s", channel);
	o->impl[i].fn = fn;
	o->impl[i].arg = arg;
	return 0;
}

int outbound_deliver(struct outbound *o, const struct outbound_msg *m)
{
	for (int i = 0; o && m->channel && i < o->n; i++)
		if (strcmp(o->impl[i].channel, m->channel) == 0)
			return o->impl[i].fn(o->impl[i].arg, m);
	log_warn("outbound_unserved", "channel=%s conversation=%lld message=%lld",
		 m->channel ? m->channel : "-", (long long)m->conversation, (long long)m->message);
	return -1;
}
