/* route: the cost of one routing decision (router_route returning an offer), with W waiting
 * conversations and A agents across 50 skills. Each sample makes one agent available and
 * times the router_route() call that offers it a conversation; the agent then accepts,
 * goes offline, the conversation is resolved and a new one joins, so W and A stay put.
 * Prints one JSON line per (W, A): median and p99 in microseconds.
 *
 *   route [--samples N] [--seed S]      (defaults: 20000 samples, seed 1) */
#include "contactd/router.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NSKILLS 50
#define NQUEUES 50

static double now_us(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e6 + (double)ts.tv_nsec / 1e3;
}

static int cmp(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;
	return x < y ? -1 : x > y;
}

static int64_t next_conv = 1;

static void add_conv(struct router *r, int64_t now)
{
	struct router_conversation_info ci = {
	    .id = next_conv,
	    .queue_id = 1 + random() % NQUEUES,
	    .customer_id = next_conv,
	    .channel = ROUTER_CHANNEL_CHAT,
	    .tier = 1,
	    .priority = (int)(random() % 3),
	    .enqueued_at_ms = now - (random() % 60000),
	};
	next_conv++;
	enum router_error e;
	if (router_conversation_add(r, &ci, now, &e) < 0) {
		fprintf(stderr, "route: add: %s\n", router_error_name(e));
		exit(1);
	}
}

static void run(int waiting, int agents, int samples)
{
	struct router_config cfg;
	router_config_defaults(&cfg);
	struct router *r = router_new(&cfg);
	int64_t now = 1000000000;
	enum router_error e;
	for (int q = 1; q <= NQUEUES; q++) {
		struct router_skill sk[2] = {{1 + random() % NSKILLS, 1 + (int)(random() % 2)},
					     {1 + random() % NSKILLS, 1}};
		int nsk = sk[0].skill_id == sk[1].skill_id ? 1 : 2;
		struct router_overflow of[1] = {{60, 2}};
		struct router_queue_info qi = {.id = q,
					       .priority = (int)(random() % 3),
					       .skills = sk,
					       .nskills = nsk,
					       .overflow = of,
					       .noverflow = q % 2};
		router_queue_set(r, &qi, now, &e);
	}
	for (int a = 1; a <= agents; a++) {
		struct router_skill sk[8];
		int n = 0;
		for (int k = 0; k < 8; k++) {
			int64_t id = 1 + random() % NSKILLS;
			bool dup = false;
			for (int j = 0; j < n; j++)
				dup |= sk[j].skill_id == id;
			if (!dup)
				sk[n++] = (struct router_skill){id, 1 + (int)(random() % 5)};
		}
		struct router_agent_info ai = {.id = a,
					       .tier = 1 + (int)(random() % 3),
					       .skills = sk,
					       .nskills = n,
					       .capacity = {1, 0, 0}};
		router_agent_set(r, &ai, now, &e);
	}
	for (int i = 0; i < waiting; i++)
		add_conv(r, now);
	double *lat = malloc(sizeof(double) * (size_t)samples);
	int got = 0, tries = 0;
	struct router_decision d[8];
	while (got < samples && tries < samples * 20) {
		tries++;
		now += 10;
		int64_t agent = 1 + random() % agents;
		router_agent_set_status(r, agent, ROUTER_AGENT_AVAILABLE, now, &e);
		double t0 = now_us();
		int n = router_route(r, now, d, 8);
		double t1 = now_us();
		router_agent_set_status(r, agent, ROUTER_AGENT_OFFLINE, now, &e);
		int offers = 0;
		for (int i = 0; i < n; i++) {
			if (d[i].kind != ROUTER_DECISION_OFFER)
				continue;
			offers++;
			router_offer_accept(r, d[i].offer_id, now, &e);
			router_conversation_resolve(r, d[i].conversation_id, now, &e);
			add_conv(r, now);
		}
		/* drain what going offline revoked */
		while (router_route(r, now, d, 8) > 0)
			;
		if (offers == 1)
			lat[got++] = t1 - t0;
	}
	qsort(lat, (size_t)got, sizeof(double), cmp);
	printf("{\"bench\":\"route\",\"waiting\":%d,\"agents\":%d,\"skills\":%d,\"samples\":%d,"
	       "\"median_us\":%.2f,\"p99_us\":%.2f}\n",
	       waiting, agents, NSKILLS, got, got ? lat[got / 2] : 0.0,
	       got ? lat[(size_t)got * 99 / 100] : 0.0);
	fflush(stdout);
	free(lat);
	router_free(&r);
}

int main(int argc, char **argv)
{
	int samples = 20000;
	unsigned seed = 1;
	static const struct option opts[] = {
	    {"samples", 1, 0, 'n'}, {"seed", 1, 0, 's'}, {0, 0, 0, 0}};
	int o;
	while ((o = getopt_long(argc, argv, "", opts, NULL)) != -1) {
		if (o == 'n')
			samples = atoi(optarg);
		else if (o == 's')
			seed = (unsigned)atoi(optarg);
		else
			return 2;
	}
	srandom(seed);
	const int W[] = {10, 1000, 100000}, A[] = {10, 1000, 10000};
	for (int i = 0; i < 3; i++)
		for (int j = 0; j < 3; j++)
			run(W[i], A[j], samples);
	return 0;
}
