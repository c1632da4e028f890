/* Unit tests for the router: each rule on a small scene, then thousands of random inputs
 * checked step by step against a brute-force reference model written below (every
 * decision, record, position, estimate, count and the next deadline, plus router_verify).
 * ROUTER_TEST_SEEDS=N runs N seeds per mode; ROUTER_TEST_STATS=1 prints what each run did. */
#include "contactd/router.h"

#include <check.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- small scenes ---------------------------------------------------------------------- */

static struct router *R;
static int64_t T; /* now */

static void setup(void)
{
	R = router_new(NULL);
	T = 1000000000;
}

static void teardown(void)
{
	const char *why = NULL;
	ck_assert_msg(router_verify(R, &why) == 0, "router_verify: %s", why);
	router_free(&R);
	ck_assert_ptr_null(R);
}

static void verify(void)
{
	const char *why = NULL;
	ck_assert_msg(router_verify(R, &why) == 0, "router_verify: %s", why);
}

/* "1:3,2:1" -> {skill 1 level 3, skill 2 level 1}; returns the count. */
static int pairs(const char *s, int64_t *a, int *b, int max)
{
	int n = 0;
	while (s && *s && n < max) {
		long long x;
		int y, used;
		ck_assert_int_eq(sscanf(s, "%lld:%d%n", &x, &y, &used), 2);
		a[n] = x;
		b[n++] = y;
		s += used;
		if (*s == ',')
			s++;
	}
	return n;
}

static void queue(int64_t id, int prio, const char *skills, const char *steps)
{
	int64_t a[8];
	int b[8];
	struct router_skill sk[8];
	struct router_overflow st[8];
	int nsk = pairs(skills, a, b, 8);
	for (int i = 0; i < nsk; i++)
		sk[i] = (struct router_skill){.skill_id = a[i], .level = b[i]};
	int nst = pairs(steps, a, b, 8);
	for (int i = 0; i < nst; i++)
		st[i] = (struct router_overflow){.after_s = (int)a[i], .tier = b[i]};
	struct router_queue_info qi = {.id = id,
				       .priority = prio,
				       .skills = sk,
				       .nskills = nsk,
				       .overflow = st,
				       .noverflow = nst};
	ck_assert_int_eq(router_queue_set(R, &qi, T, NULL), 0);
}

/* Creates or updates an agent and makes it available (idle since now when it was not). */
static void agent(int64_t id, int tier, const char *skills, int chat, int email, int voice)
{
	int64_t a[8];
	int b[8];
	struct router_skill sk[8];
	int nsk = pairs(skills, a, b, 8);
	for (int i = 0; i < nsk; i++)
		sk[i] = (struct router_skill){.skill_id = a[i], .level = b[i]};
	struct router_agent_info ai = {
	    .id = id, .tier = tier, .skills = sk, .nskills = nsk, .capacity = {chat, email, voice}};
	ck_assert_int_eq(router_agent_set(R, &ai, T, NULL), 0);
	ck_assert_int_eq(router_agent_set_status(R, id, ROUTER_AGENT_AVAILABLE, T, NULL), 0);
}

static void idle_since(int64_t id, int64_t at)
{
	ck_assert_int_eq(router_agent_set_idle_since(R, id, at, NULL), 0);
}

static void conv_full(int64_t id, int64_t q, enum router_channel ch, int tier, int prio,
		      int64_t enq, int64_t customer, int64_t last_agent, int64_t last_at)
{
	struct router_conversation_info ci = {
	    .id = id,
	    .queue_id = q,
	    .customer_id = customer,
	    .channel = ch,
	    .tier = tier,
	    .priority = prio,
	    .enqueued_at_ms = enq,
	    .last_agent_id = last_agent,
	    .last_agent_at_ms = last_at,
	};
	ck_assert_int_eq(router_conversation_add(R, &ci, T, NULL), 0);
}

static void conv(int64_t id, int64_t q, enum router_channel ch, int tier, int prio)
{
	conv_full(id, q, ch, tier, prio, T, 0, 0, 0);
}

static int route(struct router_decision *d, int max)
{
	int n = router_route(R, T, d, max);
	verify();
	return n;
}

static void is_offer(const struct router_decision *d, int64_t c, int64_t a)
{
	ck_assert_int_eq(d->kind, ROUTER_DECISION_OFFER);
	ck_assert_int_eq(d->conversation_id, c);
	ck_assert_int_eq(d->agent_id, a);
	ck_assert_int_eq(d->at_ms, T);
	ck_assert_int_gt(d->offer_id, 0);
}

static void is_revoke(const struct router_decision *d, int64_t c, int64_t a,
		      enum router_revoke_reason why)
{
	ck_assert_int_eq(d->kind, ROUTER_DECISION_REVOKE);
	ck_assert_int_eq(d->conversation_id, c);
	ck_assert_int_eq(d->agent_id, a);
	ck_assert_int_eq(d->revoke_reason, why);
}

/* Routes and expects exactly one offer of C to A; returns its offer id. */
static int64_t offered(int64_t c, int64_t a)
{
	struct router_decision d[4];
	ck_assert_int_eq(route(d, 4), 1);
	is_offer(&d[0], c, a);
	return d[0].offer_id;
}

static void nothing(void)
{
	struct router_decision d[4];
	ck_assert_int_eq(route(d, 4), 0);
}

static struct router_agent_view agent_view(int64_t id)
{
	struct router_agent_view v;
	ck_assert_int_eq(router_agent_get(R, id, &v, NULL), 0);
	return v;
}

static struct router_conversation_view conv_view(int64_t id)
{
	struct router_conversation_view v;
	ck_assert_int_eq(router_conversation_get(R, id, &v, NULL), 0);
	return v;
}

static int position(int64_t id)
{
	int p = 0;
	ck_assert_int_eq(router_conversation_position(R, id, &p, NULL), 0);
	return p;
}

START_TEST(names)
{
	ck_assert_str_eq(router_channel_name(ROUTER_CHANNEL_WHATSAPP), "whatsapp");
	ck_assert_int_eq(router_channel_parse("api"), ROUTER_CHANNEL_API);
	ck_assert_int_eq(router_channel_parse("fax"), -1);
	ck_assert_int_eq(router_channel_class(ROUTER_CHANNEL_EMAIL), ROUTER_CLASS_EMAIL);
	ck_assert_int_eq(router_channel_class(ROUTER_CHANNEL_VOICE), ROUTER_CLASS_VOICE);
	const enum router_channel chatty[] = {ROUTER_CHANNEL_CHAT,     ROUTER_CHANNEL_SMS,
					      ROUTER_CHANNEL_WHATSAPP, ROUTER_CHANNEL_SOCIAL,
					      ROUTER_CHANNEL_WEB,      ROUTER_CHANNEL_API};
	for (size_t i = 0; i < sizeof(chatty) / sizeof(chatty[0]); i++)
		ck_assert_int_eq(router_channel_class(chatty[i]), ROUTER_CLASS_CHAT);
	ck_assert_int_eq(router_agent_status_parse("away"), ROUTER_AGENT_AWAY);
	ck_assert_str_eq(router_agent_status_name(ROUTER_AGENT_AVAILABLE), "available");
	ck_assert_str_eq(router_revoke_reason_wire(ROUTER_REVOKE_TIMEOUT), "timeout");
	ck_assert_str_eq(router_revoke_reason_wire(ROUTER_REVOKE_TAKEN), "taken");
	ck_assert_str_eq(router_revoke_reason_wire(ROUTER_REVOKE_INELIGIBLE), "cancelled");
	ck_assert_str_eq(router_revoke_reason_name(ROUTER_REVOKE_AGENT_UNAVAILABLE),
			 "agent_unavailable");
	ck_assert_str_eq(router_pick_name(ROUTER_PICK_LOWEST_TIER), "lowest_tier");
	ck_assert_str_eq(router_error_name(ROUTER_E_UNKNOWN_OFFER), "unknown_offer");
	ck_assert_str_eq(router_conv_state_name(ROUTER_CONV_ASSIGNED), "assigned");
}
END_TEST

START_TEST(skills_with_minimum_levels)
{
	queue(1, 0, "1:3,2:1", "");
	agent(1, 1, "1:2,2:5", 3, 0, 0); /* skill 1 too low */
	agent(2, 1, "1:5", 3, 0, 0);	 /* skill 2 missing */
	conv(10, 1, ROUTER_CHANNEL_CHAT, 1, 0);
	nothing();
	agent(3, 1, "1:3,2:1,9:1", 3, 0, 0); /* exactly the minimum, plus another skill */
	offered(10, 3);
	/* a skill change takes an agent in or out of the queue */
	conv(11, 1, ROUTER_CHANNEL_CHAT, 1, 0);
	agent(1, 1, "1:4,2:5", 3, 0, 0);
	offered(11, 1);
	/* a queue requiring nothing is open to every agent */
	queue(2, 0, "", "");
	idle_since(2, T - 1);
	conv(12, 2, ROUTER_CHANNEL_CHAT, 1, 0);
	struct router_decision d[2];
	ck_assert_int_eq(route(d, 2), 1);
	ck_assert_int_eq(d[0].agent_id, 2);
}
END_TEST

START_TEST(capacity_per_class)
{
	queue(1, 0, "", "");
	agent(1, 1, "", 1, 0, 1); /* one chat, no email, one call */
	conv(10, 1, ROUTER_CHANNEL_CHAT, 1, 0);
	int64_t o = offered(10, 1);
	ck_assert_int_eq(agent_view(1).load[ROUTER_CLASS_CHAT], 1); /* held while offered */
	ck_assert_int_eq(router_offer_accept(R, o, T, NULL), 0);
	conv(11, 1, ROUTER_CHANNEL_EMAIL, 1, 0); /* no email slot at all */
	conv(12, 1, ROUTER_CHANNEL_SMS, 1, 0);	 /* counts as chat: full */
	conv(13, 1, ROUTER_CHANNEL_WHATSAPP, 1, 0);
	nothing();
	conv(14, 1, ROUTER_CHANNEL_VOICE, 1, 0); /* the voice slot is free */
	offered(14, 1);
	ck_assert_int_eq(router_conversation_resolve(R, 10, T, NULL), 0);
	offered(12, 1); /* the freed chat slot goes to the oldest chat-class contact */
	struct router_agent_view v = agent_view(1);
	ck_assert_int_eq(v.load[ROUTER_CLASS_CHAT], 1);
	ck_assert_int_eq(v.load[ROUTER_CLASS_VOICE], 1);
	ck_assert_int_eq(v.load[ROUTER_CLASS_EMAIL], 0);
	ck_assert_int_eq(v.offered, 2);
	ck_assert_int_eq(conv_view(11).state, ROUTER_CONV_WAITING);
	ck_assert_int_eq(conv_view(13).state, ROUTER_CONV_WAITING);
	/* more capacity takes the rest */
	agent(1, 1, "", 2, 1, 1);
	struct router_decision d[4];
	ck_assert_int_eq(route(d, 4), 2);
	is_offer(&d[0], 11, 1);
	is_offer(&d[1], 13, 1);
}
END_TEST

START_TEST(longest_idle_first)
{
	queue(1, 0, "", "");
	agent(1, 1, "", 1, 0, 0);
	agent(2, 1, "", 1, 0, 0);
	agent(3, 1, "", 1, 0, 0);
	idle_since(1, T - 100);
	idle_since(2, T - 300);
	idle_since(3, T - 200);
	conv(10, 1, ROUTER_CHANNEL_CHAT, 1, 0);
	struct router_decision d[4];
	ck_assert_int_eq(route(d, 4), 1);
	is_offer(&d[0], 10, 2);
	ck_assert_int_eq(d[0].why.pick, ROUTER_PICK_LONGEST_IDLE);
	ck_assert_int_eq(d[0].why.eligible, 3);
	ck_assert_int_eq(d[0].why.eligible_same_tier, 3);
	ck_assert_int_eq(d[0].why.idle_ms, 300);
	ck_assert_int_eq(d[0].why.agent_tier, 1);
	conv(11, 1, ROUTER_CHANNEL_CHAT, 1, 0);
	ck_assert_int_eq(route(d, 4), 1);
	is_offer(&d[0], 11, 3);
	conv(12, 1, ROUTER_CHANNEL_CHAT, 1, 0);
	ck_assert_int_eq(route(d, 4), 1);
	is_offer(&d[0], 12, 1);
	ck_assert_int_eq(d[0].why.pick, ROUTER_PICK_ONLY);
	ck_assert_int_eq(d[0].why.eligible, 1);
}
END_TEST

START_TEST(lowest_sufficient_tier)
{
	queue(1, 0, "", "");
	agent(1, 3, "", 1, 0, 0); /* senior, idle for long */
	agent(2, 2, "", 1, 0, 0);
	agent(3, 1, "", 1, 0, 0); /* front line, just became free */
	idle_since(1, T - 900000);
	idle_since(2, T - 500000);
	conv(10, 1, ROUTER_CHANNEL_CHAT, 2, 0); /* needs tier 2 or more */
	struct router_decision d[4];
	ck_assert_int_eq(route(d, 4), 1);
	is_offer(&d[0], 10, 2);
	ck_assert_int_eq(d[0].why.pick, ROUTER_PICK_LOWEST_TIER);
	ck_assert_int_eq(d[0].why.eligible, 2);
	ck_assert_int_eq(d[0].why.eligible_same_tier, 1);
	ck_assert_int_eq(d[0].why.tier_min, 2);
	ck_assert_int_eq(d[0].why.tier_max, INT32_MAX);
	conv(11, 1, ROUTER_CHANNEL_CHAT, 1, 0);
	offered(11, 3); /* keep the senior free */
}
END_TEST

START_TEST(sticky_agent)
{
	queue(1, 0, "", "");
	agent(1, 1, "", 2, 2, 0);
	agent(2, 2, "", 2, 2, 0);
	idle_since(1, T - 1000);
	conv_full(10, 1, ROUTER_CHANNEL_CHAT, 1, 0, T, 7, 0, 0);
	ck_assert_int_eq(router_conversation_assign(R, 10, 2, T, NULL), 0);
	T += 5000;
	ck_assert_int_eq(router_conversation_resolve(R, 10, T, NULL), 0);
	ck_assert_int_eq(agent_view(2).idle_since_ms, T);

	/* the same customer by email 100 s later: its agent, over the lower tier */
	T += 100000;
	conv_full(11, 1, ROUTER_CHANNEL_EMAIL, 1, 0, T, 7, 0, 0);
	struct router_decision d[4];
	ck_assert_int_eq(route(d, 4), 1);
	is_offer(&d[0], 11, 2);
	ck_assert_int_eq(d[0].why.pick, ROUTER_PICK_STICKY);
	ck_assert_int_eq(d[0].why.eligible, 2);
	ck_assert_int_eq(router_offer_accept(R, d[0].offer_id, T, NULL), 0);
	ck_assert_int_eq(router_conversation_resolve(R, 11, T, NULL), 0);

	/* exactly at the end of the window it still counts, one ms later it does not */
	T += 600000;
	conv_full(12, 1, ROUTER_CHANNEL_CHAT, 1, 0, T, 7, 0, 0);
	offered(12, 2);
	T += 1;
	conv_full(13, 1, ROUTER_CHANNEL_CHAT, 1, 0, T, 7, 0, 0);
	offered(13, 1);

	/* a last agent known from the store; not held back when it is not free */
	conv_full(14, 1, ROUTER_CHANNEL_CHAT, 1, 0, T, 8, 2, T - 10000);
	offered(14, 2);
	ck_assert_int_eq(router_agent_set_status(R, 2, ROUTER_AGENT_AWAY, T, NULL), 0);
	ck_assert_int_eq(route(d, 4), 3); /* 12 and 14 revoked, 14 re-offered */
	is_revoke(&d[0], 12, 2, ROUTER_REVOKE_AGENT_UNAVAILABLE);
	is_revoke(&d[1], 14, 2, ROUTER_REVOKE_AGENT_UNAVAILABLE);
	is_offer(&d[2], 12, 1);
	ck_assert_int_eq(conv_view(14).state, ROUTER_CONV_WAITING); /* agent 1 is full */

	/* sticky_agent_s = 0 turns it off */
	struct router_config cfg;
	router_config_defaults(&cfg);
	cfg.sticky_agent_s = 0;
	router_set_config(R, &cfg);
	ck_assert_int_eq(router_agent_set_status(R, 2, ROUTER_AGENT_AVAILABLE, T, NULL), 0);
	ck_assert_int_eq(route(d, 4), 1);
	is_offer(&d[0], 14, 2);
	ck_assert_int_eq(d[0].why.pick, ROUTER_PICK_ONLY);
}
END_TEST

START_TEST(overflow_window)
{
	queue(1, 0, "", "60:2");
	agent(2, 2, "", 3, 0, 0);
	int64_t t0 = T;
	conv(10, 1, ROUTER_CHANNEL_CHAT, 1, 0);
	nothing(); /* tier 1 only for the first 60 s */
	ck_assert_int_eq(router_next_deadline_ms(R), t0 + 60000);
	T = t0 + 59999;
	nothing();
	T = t0 + 60000;
	struct router_decision d[4];
	ck_assert_int_eq(route(d, 4), 1);
	is_offer(&d[0], 10, 2);
	ck_assert_int_eq(d[0].why.tier_min, 1);
	ck_assert_int_eq(d[0].why.tier_max, 2);
	ck_assert_int_eq(d[0].why.waited_ms, 60000);

	/* once tier 1-2 are allowed, tier 1 is still preferred */
	agent(1, 1, "", 3, 0, 0);
	idle_since(1, T);
	idle_since(2, T - 100000);
	conv_full(11, 1, ROUTER_CHANNEL_CHAT, 1, 0, T - 61000, 0, 0, 0);
	offered(11, 1);

	/* tier 3 never, unless the conversation itself is tier 3 */
	ck_assert_int_eq(router_agent_set_status(R, 1, ROUTER_AGENT_AWAY, T, NULL), 0);
	ck_assert_int_eq(route(d, 4), 2);
	is_revoke(&d[0], 11, 1, ROUTER_REVOKE_AGENT_UNAVAILABLE);
	is_offer(&d[1], 11, 2);
	ck_assert_int_eq(router_agent_set_status(R, 2, ROUTER_AGENT_OFFLINE, T, NULL), 0);
	agent(3, 3, "", 3, 0, 0);
	conv_full(12, 1, ROUTER_CHANNEL_CHAT, 1, 0, T - 999000, 0, 0, 0);
	ck_assert_int_eq(route(d, 4), 2); /* 10 and 11 revoked; nothing for tier 3 */
	is_revoke(&d[0], 10, 2, ROUTER_REVOKE_AGENT_UNAVAILABLE);
	is_revoke(&d[1], 11, 2, ROUTER_REVOKE_AGENT_UNAVAILABLE);
	conv(13, 1, ROUTER_CHANNEL_CHAT, 3, 0);
	offered(13, 3);

	/* a queue without steps lets any higher tier take it at once */
	queue(2, 0, "", "");
	conv(20, 2, ROUTER_CHANNEL_CHAT, 1, 0);
	ck_assert_int_eq(route(d, 4), 1);
	is_offer(&d[0], 20, 3);
	ck_assert_int_eq(d[0].why.tier_max, INT32_MAX);

	/* dropping the steps opens the waiting ones at once */
	queue(1, 0, "", "");
	ck_assert_int_eq(route(d, 4), 1);
	ck_assert_int_eq(d[0].agent_id, 3);
	ck_assert_int_eq(d[0].conversation_id, 12); /* the oldest */
}
END_TEST

START_TEST(priority_then_age)
{
	queue(1, 0, "", "");
	queue(2, 5, "", ""); /* a higher queue priority breaks ties between queues */
	conv_full(10, 1, ROUTER_CHANNEL_CHAT, 1, 0, T - 10, 0, 0, 0);
	conv_full(11, 1, ROUTER_CHANNEL_CHAT, 1, 1, T - 5, 0, 0, 0);
	conv_full(12, 1, ROUTER_CHANNEL_CHAT, 1, 0, T - 20, 0, 0, 0);
	conv_full(13, 2, ROUTER_CHANNEL_CHAT, 1, 0, T - 1, 0, 0, 0);
	conv_full(14, 1, ROUTER_CHANNEL_CHAT, 1, 1, T - 5, 0, 0, 0); /* same age: lower id first */
	ck_assert_int_eq(position(11), 1);
	ck_assert_int_eq(position(14), 2);
	ck_assert_int_eq(position(12), 3);
	ck_assert_int_eq(position(10), 4);
	ck_assert_int_eq(position(13), 1);
	agent(1, 1, "", 1, 0, 0);
	const int64_t order[] = {11, 14, 13, 12, 10};
	for (int i = 0; i < 5; i++) {
		int64_t o = offered(order[i], 1);
		ck_assert_int_eq(router_offer_accept(R, o, T, NULL), 0);
		T += 1000;
		ck_assert_int_eq(router_conversation_resolve(R, order[i], T, NULL), 0);
	}
	nothing();
}
END_TEST

START_TEST(timeout_then_cooldown)
{
	queue(1, 0, "", "");
	agent(1, 1, "", 1, 0, 0);
	agent(2, 1, "", 1, 0, 0);
	idle_since(1, T - 100);
	conv(10, 1, ROUTER_CHANNEL_CHAT, 1, 0);
	int64_t o1 = offered(10, 1);
	ck_assert_int_eq(router_next_deadline_ms(R), T + 20000);
	T += 19999;
	nothing();
	T += 1;
	struct router_decision d[4];
	ck_assert_int_eq(route(d, 4), 2);
	is_revoke(&d[0], 10, 1, ROUTER_REVOKE_TIMEOUT);
	ck_assert_int_eq(d[0].offer_id, o1);
	is_offer(&d[1], 10, 2); /* elsewhere, though 1 is still the longest idle */
	int64_t timed_out = T;
	ck_assert_int_eq(router_offer_accept(R, o1, T, NULL), -1); /* too late */
	enum router_error err;
	ck_assert_int_eq(router_offer_reject(R, o1, T, &err), -1);
	ck_assert_int_eq(err, ROUTER_E_UNKNOWN_OFFER);

	T += 1000;
	ck_assert_int_eq(router_offer_reject(R, d[1].offer_id, T, NULL), 0);
	nothing(); /* both cool down now */
	ck_assert_int_eq(conv_view(10).state, ROUTER_CONV_WAITING);
	ck_assert_int_eq(conv_view(10).enqueued_at_ms, timed_out - 20000); /* its place kept */
	ck_assert_int_eq(router_next_deadline_ms(R), timed_out + 300000);
	/* a new contact is not held up by the cooldown */
	conv(11, 1, ROUTER_CHANNEL_CHAT, 1, 0);
	offered(11, 1);
	ck_assert_int_eq(router_conversation_remove(R, 11, T, NULL), 0);
	ck_assert_int_eq(route(d, 4), 1);
	is_revoke(&d[0], 11, 1, ROUTER_REVOKE_CLOSED);
	T = timed_out + 299999;
	nothing();
	T = timed_out + 300000;
	offered(10, 1);
}
END_TEST

START_TEST(reject_goes_elsewhere)
{
	queue(1, 0, "", "");
	agent(1, 1, "", 1, 0, 0);
	idle_since(1, T - 10);
	conv_full(10, 1, ROUTER_CHANNEL_CHAT, 1, 0, T - 50, 0, 0, 0);
	conv_full(11, 1, ROUTER_CHANNEL_CHAT, 1, 0, T - 40, 0, 0, 0);
	int64_t o = offered(10, 1);
	ck_assert_int_eq(position(11), 1);
	ck_assert_int_eq(router_offer_reject(R, o, T, NULL), 0);
	ck_assert_int_eq(position(10), 1); /* back in front */
	ck_assert_int_eq(position(11), 2);
	offered(11, 1); /* 1 is cooling down for 10 only */
	agent(2, 1, "", 1, 0, 0);
	offered(10, 2);
	ck_assert_int_eq(agent_view(1).idle_since_ms, T - 10); /* a reject is not idle time */
}
END_TEST

START_TEST(accept_holds_capacity)
{
	queue(1, 0, "", "");
	agent(1, 1, "", 2, 0, 0);
	conv(10, 1, ROUTER_CHANNEL_CHAT, 1, 0);
	conv(11, 1, ROUTER_CHANNEL_CHAT, 1, 0);
	conv(12, 1, ROUTER_CHANNEL_CHAT, 1, 0);
	struct router_decision d[4];
	ck_assert_int_eq(route(d, 4), 2);
	ck_assert_int_eq(router_offer_accept(R, d[0].offer_id, T, NULL), 0);
	ck_assert_int_eq(router_offer_accept(R, d[0].offer_id, T, NULL), -1);
	struct router_conversation_view v = conv_view(10);
	ck_assert_int_eq(v.state, ROUTER_CONV_ASSIGNED);
	ck_assert_int_eq(v.agent_id, 1);
	ck_assert_int_eq(v.offer_id, 0);
	struct router_agent_view av = agent_view(1);
	ck_assert_int_eq(av.load[ROUTER_CLASS_CHAT], 2);
	ck_assert_int_eq(av.assigned, 1);
	ck_assert_int_eq(av.offered, 1);
	nothing();
	T += 30000; /* the second offer times out, the accepted one stays */
	ck_assert_int_eq(route(d, 4), 2);
	is_revoke(&d[0], 11, 1, ROUTER_REVOKE_TIMEOUT);
	is_offer(&d[1], 12, 1);
	ck_assert_int_eq(conv_view(10).state, ROUTER_CONV_ASSIGNED);
}
END_TEST

START_TEST(resolve_frees_and_idles)
{
	queue(1, 0, "", "");
	agent(1, 1, "", 1, 0, 0);
	agent(2, 1, "", 1, 0, 0);
	idle_since(1, T - 100);
	idle_since(2, T - 50);
	conv(10, 1, ROUTER_CHANNEL_CHAT, 1, 0);
	conv(11, 1, ROUTER_CHANNEL_CHAT, 1, 0);
	struct router_decision d[4];
	ck_assert_int_eq(route(d, 4), 2);
	ck_assert_int_eq(router_offer_accept(R, d[0].offer_id, T, NULL), 0);
	ck_assert_int_eq(router_offer_accept(R, d[1].offer_id, T, NULL), 0);
	T += 60000;
	ck_assert_int_eq(router_conversation_resolve(R, 10, T, NULL), 0);
	struct router_agent_view v = agent_view(1);
	ck_assert_int_eq(v.load[ROUTER_CLASS_CHAT], 0);
	ck_assert_int_eq(v.idle_since_ms, T);
	T += 1000;
	ck_assert_int_eq(router_conversation_resolve(R, 11, T, NULL), 0);
	/* now 1 has been idle longer than 2 */
	conv(12, 1, ROUTER_CHANNEL_CHAT, 1, 0);
	offered(12, 1);
	ck_assert_int_eq(router_conversation_resolve(R, 12, T, NULL), 0); /* offered: fine */
	ck_assert_int_eq(agent_view(1).load[ROUTER_CLASS_CHAT], 0);
	ck_assert_int_eq(route(d, 4), 1);
	is_revoke(&d[0], 12, 1, ROUTER_REVOKE_CLOSED);
	/* a transfer frees the slot too, and re-queues */
	conv(13, 1, ROUTER_CHANNEL_CHAT, 1, 0);
	int64_t o = offered(13, 1); /* an offer that ended is no idle time: 1 is still first */
	ck_assert_int_eq(router_offer_accept(R, o, T, NULL), 0);
	queue(2, 0, "5:1", "");
	T += 10;
	ck_assert_int_eq(router_conversation_transfer(R, 13, 2, T, NULL), 0);
	ck_assert_int_eq(agent_view(1).load[ROUTER_CLASS_CHAT], 0);
	ck_assert_int_eq(agent_view(1).idle_since_ms, T);
	ck_assert_int_eq(conv_view(13).enqueued_at_ms, T);
	ck_assert_int_eq(conv_view(13).queue_id, 2);
	nothing(); /* nobody has skill 5 */
	/* a transfer to an agent assigns at once, beyond capacity if need be */
	ck_assert_int_eq(router_conversation_assign(R, 13, 1, T, NULL), 0);
	ck_assert_int_eq(router_conversation_assign(R, 13, 1, T, NULL), 0); /* again: no-op */
	ck_assert_int_eq(conv_view(13).state, ROUTER_CONV_ASSIGNED);
	ck_assert_int_eq(agent_view(1).load[ROUTER_CLASS_CHAT], 1);
	ck_assert_int_eq(router_conversation_assign(R, 13, 2, T, NULL), 0); /* and on */
	ck_assert_int_eq(agent_view(1).load[ROUTER_CLASS_CHAT], 0);
	ck_assert_int_eq(agent_view(2).load[ROUTER_CLASS_CHAT], 1);
}
END_TEST

START_TEST(away_revokes_offers)
{
	queue(1, 0, "", "");
	agent(1, 1, "", 3, 0, 0);
	agent(2, 1, "", 3, 0, 0);
	idle_since(1, T - 100);
	conv(10, 1, ROUTER_CHANNEL_CHAT, 1, 0);
	conv(11, 1, ROUTER_CHANNEL_CHAT, 1, 0);
	conv(12, 1, ROUTER_CHANNEL_CHAT, 1, 0);
	struct router_decision d[8];
	ck_assert_int_eq(route(d, 8), 3); /* agent 1 fills its slots first */
	for (int i = 0; i < 3; i++)
		ck_assert_int_eq(d[i].agent_id, 1);
	ck_assert_int_eq(router_offer_accept(R, d[0].offer_id, T, NULL), 0);
	ck_assert_int_eq(router_agent_set_status(R, 1, ROUTER_AGENT_AWAY, T, NULL), 0);
	ck_assert_int_eq(router_next_deadline_ms(R), T); /* work due */
	ck_assert_int_eq(route(d, 8), 4);
	is_revoke(&d[0], 11, 1, ROUTER_REVOKE_AGENT_UNAVAILABLE);
	is_revoke(&d[1], 12, 1, ROUTER_REVOKE_AGENT_UNAVAILABLE);
	is_offer(&d[2], 11, 2); /* no cooldown: not its choice */
	is_offer(&d[3], 12, 2);
	ck_assert_int_eq(conv_view(10).state, ROUTER_CONV_ASSIGNED); /* stays with agent 1 */
	ck_assert_int_eq(conv_view(10).agent_id, 1);
	struct router_stats st;
	router_stats(R, &st);
	ck_assert_int_eq(st.agents_away, 1);
	ck_assert_int_eq(st.agents_available, 1);
	ck_assert_int_eq(st.agents_busy, 1);
	ck_assert_int_eq(st.assigned, 1);
	ck_assert_int_eq(st.offered, 2);
	/* back: available again, idle from now */
	T += 5;
	ck_assert_int_eq(router_agent_set_status(R, 1, ROUTER_AGENT_AVAILABLE, T, NULL), 0);
	ck_assert_int_eq(agent_view(1).idle_since_ms, T);
	nothing();
	/* a removed agent's offers go, its assigned conversations re-enter the queue */
	ck_assert_int_eq(router_agent_remove(R, 2, T, NULL), 0);
	ck_assert_int_eq(router_agent_remove(R, 1, T, NULL), 0);
	agent(3, 1, "", 3, 0, 0);
	ck_assert_int_eq(route(d, 8), 6);
	is_revoke(&d[0], 11, 2, ROUTER_REVOKE_AGENT_REMOVED);
	is_revoke(&d[1], 12, 2, ROUTER_REVOKE_AGENT_REMOVED);
	ck_assert_int_eq(d[2].kind, ROUTER_DECISION_REQUEUE);
	ck_assert_int_eq(d[2].conversation_id, 10);
	ck_assert_int_eq(d[2].agent_id, 1);
	is_offer(&d[3], 11, 3);
	is_offer(&d[4], 12, 3);
	is_offer(&d[5], 10, 3); /* re-queued at the back */
}
END_TEST

START_TEST(escalation_revokes_ineligible)
{
	queue(1, 0, "", "");
	agent(1, 1, "", 1, 0, 0);
	agent(2, 2, "", 1, 0, 0);
	conv(10, 1, ROUTER_CHANNEL_CHAT, 1, 0);
	int64_t o = offered(10, 1);
	/* priority alone: the offer stands */
	ck_assert_int_eq(router_conversation_update(R, 10, 1, 3, T, NULL), 0);
	nothing();
	ck_assert_int_eq(conv_view(10).offer_id, o);
	/* tier 2: agent 1 is out */
	ck_assert_int_eq(router_conversation_update(R, 10, 2, 3, T, NULL), 0);
	struct router_decision d[4];
	ck_assert_int_eq(route(d, 4), 2);
	is_revoke(&d[0], 10, 1, ROUTER_REVOKE_INELIGIBLE);
	ck_assert_int_eq(d[0].offer_id, o);
	is_offer(&d[1], 10, 2);
	ck_assert_int_eq(d[1].why.tier_min, 2);
	/* a raised priority moves a waiting conversation up its line */
	conv_full(11, 1, ROUTER_CHANNEL_CHAT, 1, 0, T - 100, 0, 0, 0);
	conv_full(12, 1, ROUTER_CHANNEL_CHAT, 2, 0, T - 50, 0, 0, 0);
	ck_assert_int_eq(position(12), 2);
	ck_assert_int_eq(router_conversation_update(R, 12, 2, 1, T, NULL), 0);
	ck_assert_int_eq(position(12), 1);
	ck_assert_int_eq(conv_view(12).enqueued_at_ms, T - 50);
	/* an agent's tier dropping revokes too */
	struct router_agent_info ai = {.id = 2, .tier = 1, .capacity = {1, 0, 0}};
	ck_assert_int_eq(router_agent_set(R, &ai, T, NULL), 0);
	ck_assert_int_eq(route(d, 4), 2);
	is_revoke(&d[0], 10, 2, ROUTER_REVOKE_INELIGIBLE);
	is_offer(&d[1], 11, 1); /* the only tier-1 contact; 10 and 12 need tier 2 */
	/* and a queue's skills: agent 1 cannot serve it any more */
	queue(1, 0, "4:1", "");
	ck_assert_int_eq(route(d, 4), 1);
	is_revoke(&d[0], 11, 1, ROUTER_REVOKE_INELIGIBLE);
}
END_TEST

START_TEST(next_deadline)
{
	ck_assert_int_eq(router_next_deadline_ms(R), INT64_MAX);
	queue(1, 0, "", "30:2,90:3");
	agent(3, 3, "", 1, 0, 0);
	int64_t t0 = T;
	conv(10, 1, ROUTER_CHANNEL_CHAT, 1, 0);
	ck_assert_int_le(router_next_deadline_ms(R), T); /* an input: route first */
	nothing();
	ck_assert_int_eq(router_next_deadline_ms(R), t0 + 30000); /* the window widens */
	T = t0 + 30000;
	nothing();
	ck_assert_int_eq(router_next_deadline_ms(R), t0 + 90000);
	agent(2, 2, "", 1, 0, 0);
	int64_t o = offered(10, 2);
	ck_assert_int_eq(router_next_deadline_ms(R), T + 20000); /* the offer */
	T += 100;
	ck_assert_int_eq(router_offer_reject(R, o, T, NULL), 0);
	nothing();
	/* 2 cools down until T + 300 s, but tier 3 comes at t0 + 90 s */
	ck_assert_int_eq(router_next_deadline_ms(R), t0 + 90000);
	ck_assert_int_eq(router_agent_set_status(R, 3, ROUTER_AGENT_OFFLINE, T, NULL), 0);
	T = t0 + 90000;
	nothing();
	ck_assert_int_eq(router_next_deadline_ms(R), t0 + 30100 + 300000);
	ck_assert_int_eq(router_conversation_remove(R, 10, T, NULL), 0);
	ck_assert_int_eq(router_next_deadline_ms(R), INT64_MAX);
}
END_TEST

START_TEST(positions_estimates_stats)
{
	queue(1, 0, "", "");
	agent(1, 1, "", 2, 1, 0);
	ck_assert_int_eq(router_agent_set_status(R, 1, ROUTER_AGENT_OFFLINE, T, NULL), 0);
	conv_full(10, 1, ROUTER_CHANNEL_CHAT, 1, 0, T - 100, 0, 0, 0);
	conv_full(11, 1, ROUTER_CHANNEL_EMAIL, 1, 0, T - 300, 0, 0, 0);
	conv_full(12, 1, ROUTER_CHANNEL_CHAT, 1, 2, T - 50, 0, 0, 0);
	ck_assert_int_eq(position(12), 1);
	ck_assert_int_eq(position(11), 2);
	ck_assert_int_eq(position(10), 3);
	int64_t est;
	ck_assert_int_eq(router_conversation_estimate(R, 10, &est, NULL), 0);
	ck_assert_int_eq(est, -1); /* nobody available */
	ck_assert_int_eq(router_agent_set_status(R, 1, ROUTER_AGENT_AVAILABLE, T, NULL), 0);
	ck_assert_int_eq(router_conversation_estimate(R, 10, &est, NULL), 0);
	ck_assert_int_eq(est, 3 * 300000 / 2); /* default handle time, two chat slots */
	ck_assert_int_eq(router_conversation_estimate(R, 11, &est, NULL), 0);
	ck_assert_int_eq(est, 2 * 300000); /* one email slot */
	ck_assert_int_eq(router_queue_add_handle_time(R, 1, 120000, NULL), 0);
	ck_assert_int_eq(router_queue_add_handle_time(R, 1, 200000, NULL), 0);
	ck_assert_int_eq(router_conversation_estimate(R, 10, &est, NULL), 0);
	ck_assert_int_eq(est, 3 * 130000 / 2); /* 120 s + (200 s - 120 s) / 8 */

	struct router_queue_stats qs;
	ck_assert_int_eq(router_queue_stats(R, 1, T, &qs, NULL), 0);
	ck_assert_int_eq(qs.waiting, 3);
	ck_assert_int_eq(qs.longest_wait_ms, 300);
	ck_assert_int_eq(qs.agents_available, 1);
	ck_assert_int_eq(qs.slots[ROUTER_CLASS_CHAT], 2);
	ck_assert_int_eq(qs.mean_handle_ms, 130000);
	struct router_decision d[4];
	ck_assert_int_eq(route(d, 4), 3);
	ck_assert_int_eq(router_offer_accept(R, d[0].offer_id, T, NULL), 0);
	ck_assert_int_eq(router_queue_stats(R, 1, T, &qs, NULL), 0);
	ck_assert_int_eq(qs.waiting, 0);
	ck_assert_int_eq(qs.offered, 2);
	ck_assert_int_eq(qs.assigned, 1);
	ck_assert_int_eq(qs.longest_wait_ms, 0);
	enum router_error err;
	int pos;
	ck_assert_int_eq(router_conversation_position(R, 10, &pos, &err), -1);
	ck_assert_int_eq(err, ROUTER_E_STATE);
	struct router_stats st;
	router_stats(R, &st);
	ck_assert_int_eq(st.queues, 1);
	ck_assert_int_eq(st.agents, 1);
	ck_assert_int_eq(st.waiting, 0);
	ck_assert_int_eq(st.offered, 2);
	ck_assert_int_eq(st.assigned, 1);
	ck_assert_int_eq(st.agents_busy, 1);
}
END_TEST

START_TEST(errors)
{
	enum router_error err = ROUTER_OK;
	struct router_conversation_info ci = {.id = 1, .queue_id = 9, .tier = 1};
	ck_assert_int_eq(router_conversation_add(R, &ci, T, &err), -1);
	ck_assert_int_eq(err, ROUTER_E_UNKNOWN_QUEUE);
	ci.tier = 0;
	ck_assert_int_eq(router_conversation_add(R, &ci, T, &err), -1);
	ck_assert_int_eq(err, ROUTER_E_INVALID);
	queue(9, 0, "", "");
	ci.tier = 1;
	ck_assert_int_eq(router_conversation_add(R, &ci, T, &err), 0);
	ck_assert_int_eq(router_conversation_add(R, &ci, T, &err), -1);
	ck_assert_int_eq(err, ROUTER_E_EXISTS);
	ck_assert_int_eq(router_queue_remove(R, 9, &err), -1);
	ck_assert_int_eq(err, ROUTER_E_BUSY);
	ck_assert_int_eq(router_conversation_transfer(R, 1, 8, T, &err), -1);
	ck_assert_int_eq(err, ROUTER_E_UNKNOWN_QUEUE);
	ck_assert_int_eq(router_conversation_assign(R, 1, 8, T, &err), -1);
	ck_assert_int_eq(err, ROUTER_E_UNKNOWN_AGENT);
	ck_assert_int_eq(router_conversation_resolve(R, 2, T, &err), -1);
	ck_assert_int_eq(err, ROUTER_E_UNKNOWN_CONVERSATION);
	ck_assert_int_eq(router_agent_set_status(R, 3, ROUTER_AGENT_AWAY, T, &err), -1);
	ck_assert_int_eq(err, ROUTER_E_UNKNOWN_AGENT);
	ck_assert_int_eq(router_offer_cancel(R, 5, T, &err), -1);
	ck_assert_int_eq(err, ROUTER_E_UNKNOWN_OFFER);
	struct router_skill dup[2] = {{.skill_id = 1, .level = 1}, {.skill_id = 1, .level = 2}};
	struct router_agent_info ai = {.id = 1, .tier = 1, .skills = dup, .nskills = 2};
	ck_assert_int_eq(router_agent_set(R, &ai, T, &err), -1);
	ck_assert_int_eq(err, ROUTER_E_INVALID);
	struct router_overflow steps[2] = {{.after_s = 5, .tier = 2}, {.after_s = 5, .tier = 3}};
	struct router_queue_info qi = {.id = 9, .overflow = steps, .noverflow = 2};
	ck_assert_int_eq(router_queue_set(R, &qi, T, &err), -1);
	ck_assert_int_eq(err, ROUTER_E_INVALID);
	agent(1, 1, "", 0, 0, 0);
	ck_assert_int_eq(router_conversation_restore_offer(R, 1, 1, 0, T, T, &err), -1);
	ck_assert_int_eq(err, ROUTER_E_INVALID);
	ck_assert_int_eq(router_conversation_restore_offer(R, 1, 1, 77, T + 5000, T, NULL), 0);
	ck_assert_int_eq(router_conversation_restore_offer(R, 1, 1, 78, T + 5000, T, &err), -1);
	ck_assert_int_eq(err, ROUTER_E_STATE);
	ck_assert_int_eq(conv_view(1).offer_id, 77);
	ck_assert_int_eq(agent_view(1).load[ROUTER_CLASS_CHAT], 1); /* beyond capacity 0 */
	ck_assert_int_eq(router_queue_remove(R, 8, &err), -1);
	ck_assert_int_eq(err, ROUTER_E_UNKNOWN_QUEUE);
	ck_assert_int_eq(router_offer_cancel(R, 77, T, NULL), 0);
	ck_assert_int_eq(router_conversation_remove(R, 1, T, NULL), 0);
	ck_assert_int_eq(router_queue_remove(R, 9, NULL), 0);
	/* restored offers move the numbering on */
	queue(1, 0, "", "");
	agent(1, 1, "", 1, 0, 0);
	conv(2, 1, ROUTER_CHANNEL_CHAT, 1, 0);
	ck_assert_int_eq(offered(2, 1), 78);
}
END_TEST

START_TEST(rebuild_then_route)
{
	/* what the glue does at start: queues, agents (presence, idle), conversations, offers
	 * and assignments in flight, cooldowns; then one route over everything */
	queue(1, 0, "1:1", "");
	for (int64_t id = 1; id <= 50; id++) {
		agent(id, id <= 40 ? 1 : 2, "1:1", 1, 0, 0);
		idle_since(id, T - id * 1000); /* higher id: idle longer */
	}
	for (int64_t id = 1; id <= 30; id++)
		conv_full(id, 1, ROUTER_CHANNEL_CHAT, 1, 0, T - id * 1000, 0, 0, 0);
	ck_assert_int_eq(router_conversation_restore_offer(R, 1, 1, 500, T + 10000, T, NULL), 0);
	ck_assert_int_eq(router_conversation_assign(R, 2, 2, T, NULL), 0);
	ck_assert_int_eq(router_conversation_restore_cooldown(R, 30, 40, T + 60000, T, NULL), 0);
	struct router_decision d[64];
	ck_assert_int_eq(route(d, 64), 28);
	/* oldest first, each to the longest-idle tier-1 agent; 30 may not go to 40 */
	is_offer(&d[0], 30, 39);
	is_offer(&d[1], 29, 40);
	for (int i = 2; i < 28; i++) {
		is_offer(&d[i], 30 - i, 40 - i);
		ck_assert_int_eq(d[i].offer_id, 501 + i); /* numbering moved past 500 */
		ck_assert_int_eq(d[i].why.pick, ROUTER_PICK_LOWEST_TIER);
	}
	ck_assert_int_eq(router_next_deadline_ms(R), T + 10000);
	struct router_stats st;
	router_stats(R, &st);
	ck_assert_int_eq(st.offered, 29);
	ck_assert_int_eq(st.assigned, 1);
	ck_assert_int_eq(st.waiting, 0);
	ck_assert_int_eq(st.agents_busy, 30);
}
END_TEST

START_TEST(many_customers)
{
	/* the last-agent records are pruned as they age out; recent ones still count */
	queue(1, 0, "", "");
	agent(1, 1, "", 1, 0, 0);
	agent(2, 2, "", 1, 0, 0);
	idle_since(1, 0);
	for (int64_t id = 1; id <= 6000; id++) {
		conv_full(id, 1, ROUTER_CHANNEL_CHAT, 1, 0, T, id, 0, 0);
		ck_assert_int_eq(router_conversation_assign(R, id, 2, T, NULL), 0);
		T += 1000;
		ck_assert_int_eq(router_conversation_resolve(R, id, T, NULL), 0);
	}
	idle_since(1, 0);
	conv_full(7000, 1, ROUTER_CHANNEL_CHAT, 1, 0, T, 5990, 0, 0);
	struct router_decision d[4];
	ck_assert_int_eq(route(d, 4), 1);
	is_offer(&d[0], 7000, 2);
	ck_assert_int_eq(d[0].why.pick, ROUTER_PICK_STICKY);
	conv_full(7001, 1, ROUTER_CHANNEL_CHAT, 1, 0, T, 10, 0, 0); /* long ago */
	ck_assert_int_eq(route(d, 4), 1);
	is_offer(&d[0], 7001, 1);
}
END_TEST

/* ---- the reference model ----------------------------------------------------------------
 * Plain arrays and loops, no indexes: every rule of router.h written the obvious way. */

#define MAXQ	4
#define MAXA	80
#define MAXCUST 10
#define NSKILL	4

struct rf_queue {
	bool live;
	int prio;
	int nsk, nst;
	struct router_skill sk[4];
	struct router_overflow st[4];
	int64_t mean;
};

struct rf_agent {
	bool live;
	int tier, status;
	int nsk;
	struct router_skill sk[NSKILL];
	int cap[3], load[3];
	int64_t idle;
};

struct rf_conv {
	bool live;
	int64_t q;
	int ch, cls, tier, prio, state;
	int64_t enq, cust, agent, offer, expires;
	int ncd;
	int64_t cd_agent[MAXA + 2], cd_until[MAXA + 2];
};

static struct {
	struct rf_queue q[MAXQ + 2];
	struct rf_agent a[MAXA + 2];
	struct rf_conv *c;
	int nc; /* ids 1..nc-1 used */
	struct {
		bool set;
		int64_t agent, at;
	} cust[MAXCUST + 1];
	struct router_decision *out;
	int nout, outhead, outcap;
	int64_t next_offer;
	int64_t timeout_ms, cd_ms, sticky_ms, handle_ms;
	int na; /* agents in play: ids 1..na */
} rf;

static int rf_cls(int ch)
{
	return ch == ROUTER_CHANNEL_EMAIL ? 1 : ch == ROUTER_CHANNEL_VOICE ? 2 : 0;
}

static bool rf_serves(const struct rf_agent *a, const struct rf_queue *q)
{
	for (int j = 0; j < q->nsk; j++) {
		bool ok = false;
		for (int i = 0; i < a->nsk; i++)
			ok |= a->sk[i].skill_id == q->sk[j].skill_id &&
			      a->sk[i].level >= q->sk[j].level;
		if (!ok)
			return false;
	}
	return true;
}

static int rf_hi(const struct rf_conv *c, int64_t now)
{
	const struct rf_queue *q = &rf.q[c->q];
	if (!q->nst)
		return INT32_MAX;
	int hi = c->tier;
	for (int i = 0; i < q->nst; i++) {
		if (c->enq + q->st[i].after_s * 1000LL <= now && q->st[i].tier > hi)
			hi = q->st[i].tier;
	}
	return hi;
}

static bool rf_cooled(const struct rf_conv *c, int64_t agent, int64_t now)
{
	for (int i = 0; i < c->ncd; i++) {
		if (c->cd_agent[i] == agent && c->cd_until[i] > now)
			return true;
	}
	return false;
}

static bool rf_eligible(const struct rf_conv *c, int64_t aid, int64_t now)
{
	const struct rf_agent *a = &rf.a[aid];
	return a->live && a->status == ROUTER_AGENT_AVAILABLE && rf_serves(a, &rf.q[c->q]) &&
	       a->load[c->cls] < a->cap[c->cls] && a->tier >= c->tier && a->tier <= rf_hi(c, now) &&
	       !rf_cooled(c, aid, now);
}

static bool rf_conv_before(const struct rf_conv *x, int64_t xid, const struct rf_conv *y,
			   int64_t yid)
{
	if (x->prio != y->prio)
		return x->prio > y->prio;
	if (rf.q[x->q].prio != rf.q[y->q].prio)
		return rf.q[x->q].prio > rf.q[y->q].prio;
	if (x->enq != y->enq)
		return x->enq < y->enq;
	return xid < yid;
}

static void rf_push(const struct router_decision *d)
{
	if (rf.nout == rf.outcap) {
		rf.outcap = rf.outcap ? rf.outcap * 2 : 64;
		rf.out = realloc(rf.out, (size_t)rf.outcap * sizeof(*rf.out));
	}
	rf.out[rf.nout++] = *d;
}

static void rf_revoke_decision(int64_t cid, int reason, int64_t now, struct router_decision *d)
{
	const struct rf_conv *c = &rf.c[cid];
	memset(d, 0, sizeof(*d));
	d->kind = ROUTER_DECISION_REVOKE;
	d->conversation_id = cid;
	d->agent_id = c->agent;
	d->queue_id = c->q;
	d->offer_id = c->offer;
	d->at_ms = now;
	d->revoke_reason = reason;
}

static void rf_set_cooldown(struct rf_conv *c, int64_t agent, int64_t until)
{
	for (int i = 0; i < c->ncd; i++) {
		if (c->cd_agent[i] == agent) {
			c->cd_until[i] = until;
			return;
		}
	}
	c->cd_agent[c->ncd] = agent;
	c->cd_until[c->ncd++] = until;
}

/* Ends an offer or assignment: frees the slot (an assignment ends with idle time). */
static void rf_release(struct rf_conv *c, int64_t now)
{
	struct rf_agent *a = &rf.a[c->agent];
	a->load[c->cls]--;
	if (c->state == ROUTER_CONV_ASSIGNED)
		a->idle = now;
	c->agent = 0;
	c->offer = 0;
	c->expires = 0;
}

static void rf_unoffer(int64_t cid, bool cooldown, int64_t now)
{
	struct rf_conv *c = &rf.c[cid];
	int64_t aid = c->agent;
	rf_release(c, now);
	if (cooldown)
		rf_set_cooldown(c, aid, now + rf.cd_ms);
	c->state = ROUTER_CONV_WAITING;
}

static void rf_revoke(int64_t cid, int reason, int64_t now, bool requeue)
{
	struct router_decision d;
	rf_revoke_decision(cid, reason, now, &d);
	rf_push(&d);
	if (requeue)
		rf_unoffer(cid, false, now);
	else
		rf_release(&rf.c[cid], now);
}

static bool rf_offer_ok(const struct rf_conv *c, int64_t now)
{
	const struct rf_agent *a = &rf.a[c->agent];
	return rf_serves(a, &rf.q[c->q]) && a->tier >= c->tier && a->tier <= rf_hi(c, now);
}

/* Revokes, by offer id, the offers matching FILTER. */
static void rf_revoke_where(bool (*filter)(int64_t cid, int64_t arg, int64_t now), int64_t arg,
			    int reason, int64_t now)
{
	for (;;) {
		int64_t best = 0;
		for (int64_t i = 1; i < rf.nc; i++) {
			const struct rf_conv *c = &rf.c[i];
			if (c->live && c->state == ROUTER_CONV_OFFERED && filter(i, arg, now) &&
			    (!best || c->offer < rf.c[best].offer))
				best = i;
		}
		if (!best)
			return;
		rf_revoke(best, reason, now, true);
	}
}

static bool f_unfit_in_queue(int64_t cid, int64_t q, int64_t now)
{
	return rf.c[cid].q == q && !rf_offer_ok(&rf.c[cid], now);
}

static bool f_unfit_of_agent(int64_t cid, int64_t a, int64_t now)
{
	return rf.c[cid].agent == a && !rf_offer_ok(&rf.c[cid], now);
}

static bool f_of_agent(int64_t cid, int64_t a, int64_t now)
{
	return rf.c[cid].agent == a;
}

static void rf_customer(int64_t cust, int64_t agent, int64_t at)
{
	if (cust <= 0 || cust > MAXCUST || agent <= 0)
		return;
	if (!rf.cust[cust].set || at >= rf.cust[cust].at) {
		rf.cust[cust].set = true;
		rf.cust[cust].agent = agent;
		rf.cust[cust].at = at;
	}
}

static int64_t rf_choose(int64_t cid, int64_t now, struct router_reason *why)
{
	const struct rf_conv *c = &rf.c[cid];
	int64_t first = 0;
	for (int64_t i = 1; i <= rf.na; i++) {
		if (!rf_eligible(c, i, now))
			continue;
		const struct rf_agent *a = &rf.a[i], *b = &rf.a[first];
		if (!first || a->tier < b->tier || (a->tier == b->tier && a->idle < b->idle))
			first = i; /* ids ascend: the lowest id wins ties */
	}
	if (!first)
		return 0;
	int64_t sticky = 0;
	if (rf.sticky_ms > 0 && c->cust > 0 && rf.cust[c->cust].set &&
	    now - rf.cust[c->cust].at <= rf.sticky_ms && rf.cust[c->cust].agent <= rf.na &&
	    rf_eligible(c, rf.cust[c->cust].agent, now))
		sticky = rf.cust[c->cust].agent;
	int64_t chosen = sticky ? sticky : first;
	const struct rf_agent *a = &rf.a[chosen];
	memset(why, 0, sizeof(*why));
	for (int64_t i = 1; i <= rf.na; i++) {
		if (rf_eligible(c, i, now)) {
			why->eligible++;
			why->eligible_same_tier += rf.a[i].tier == a->tier;
		}
	}
	why->agent_tier = a->tier;
	why->tier_min = c->tier;
	why->tier_max = rf_hi(c, now);
	why->idle_ms = now - a->idle;
	why->waited_ms = now - c->enq;
	why->pick = sticky				      ? ROUTER_PICK_STICKY
		    : why->eligible == 1		      ? ROUTER_PICK_ONLY
		    : why->eligible_same_tier < why->eligible ? ROUTER_PICK_LOWEST_TIER
							      : ROUTER_PICK_LONGEST_IDLE;
	return chosen;
}

static bool rf_offer_pending(int64_t offer)
{
	for (int64_t i = 1; i < rf.nc; i++) {
		if (rf.c[i].live && rf.c[i].state == ROUTER_CONV_OFFERED && rf.c[i].offer == offer)
			return true;
	}
	return false;
}

static void rf_offer(int64_t cid, int64_t aid, int64_t offer, int64_t expires)
{
	struct rf_conv *c = &rf.c[cid];
	c->state = ROUTER_CONV_OFFERED;
	c->agent = aid;
	c->offer = offer;
	c->expires = expires;
	rf.a[aid].load[c->cls]++;
	if (offer >= rf.next_offer)
		rf.next_offer = offer + 1;
}

static int rf_route(int64_t now, struct router_decision *out, int max, bool offers)
{
	int n = 0;
	while (n < max && rf.outhead < rf.nout)
		out[n++] = rf.out[rf.outhead++];
	if (rf.outhead == rf.nout)
		rf.outhead = rf.nout = 0;
	while (n < max) {
		int64_t best = 0;
		for (int64_t i = 1; i < rf.nc; i++) {
			const struct rf_conv *c = &rf.c[i], *b = &rf.c[best];
			if (c->live && c->state == ROUTER_CONV_OFFERED && c->expires <= now &&
			    (!best || c->expires < b->expires ||
			     (c->expires == b->expires && c->offer < b->offer)))
				best = i;
		}
		if (!best)
			break;
		rf_revoke_decision(best, ROUTER_REVOKE_TIMEOUT, now, &out[n++]);
		rf_unoffer(best, true, now);
	}
	if (!offers)
		return n;
	/* the rule itself: the first conversation in serving order with an eligible agent */
	while (n < max) {
		int64_t best = 0;
		for (int64_t i = 1; i < rf.nc; i++) {
			const struct rf_conv *c = &rf.c[i];
			if (!c->live || c->state != ROUTER_CONV_WAITING)
				continue;
			if (best && !rf_conv_before(c, i, &rf.c[best], best))
				continue;
			for (int64_t a = 1; a <= rf.na; a++) {
				if (rf_eligible(c, a, now)) {
					best = i;
					break;
				}
			}
		}
		if (!best)
			break;
		struct router_decision *d = &out[n++];
		memset(d, 0, sizeof(*d));
		int64_t aid = rf_choose(best, now, &d->why);
		int64_t id = rf.next_offer;
		while (rf_offer_pending(id))
			id++;
		d->kind = ROUTER_DECISION_OFFER;
		d->conversation_id = best;
		d->agent_id = aid;
		d->queue_id = rf.c[best].q;
		d->offer_id = id;
		d->at_ms = now;
		d->expires_at_ms = now + rf.timeout_ms;
		rf_offer(best, aid, id, d->expires_at_ms);
	}
	return n;
}

static int64_t rf_next_deadline(int64_t now)
{
	int64_t t = INT64_MAX;
	for (int64_t i = 1; i < rf.nc; i++) {
		const struct rf_conv *c = &rf.c[i];
		if (!c->live)
			continue;
		if (c->state == ROUTER_CONV_OFFERED && c->expires < t)
			t = c->expires;
		if (c->state != ROUTER_CONV_WAITING)
			continue;
		for (int j = 0; j < c->ncd; j++) {
			if (c->cd_until[j] > now && c->cd_until[j] < t)
				t = c->cd_until[j];
		}
		const struct rf_queue *q = &rf.q[c->q];
		int hi = rf_hi(c, now);
		for (int j = 0; j < q->nst; j++) {
			int64_t at = c->enq + q->st[j].after_s * 1000LL;
			if (q->st[j].tier > hi && at > now && at < t)
				t = at;
		}
	}
	return t;
}

static int rf_position(int64_t cid)
{
	const struct rf_conv *c = &rf.c[cid];
	int pos = 1;
	for (int64_t i = 1; i < rf.nc; i++) {
		const struct rf_conv *o = &rf.c[i];
		if (o->live && o->state == ROUTER_CONV_WAITING && o->q == c->q &&
		    rf_conv_before(o, i, c, cid))
			pos++;
	}
	return pos;
}

static int rf_slots(int64_t q, int cls)
{
	int s = 0;
	for (int64_t i = 1; i <= rf.na; i++) {
		const struct rf_agent *a = &rf.a[i];
		if (a->live && a->status == ROUTER_AGENT_AVAILABLE && rf_serves(a, &rf.q[q]))
			s += a->cap[cls];
	}
	return s;
}

/* ---- random runs against the reference ---- */

static uint64_t rng_state;
static unsigned g_seed;
static int g_step;
static const char *g_op;

static uint32_t rnd(uint32_t n)
{
	rng_state ^= rng_state << 13;
	rng_state ^= rng_state >> 7;
	rng_state ^= rng_state << 17;
	return n ? (uint32_t)(rng_state % n) : 0;
}

/* Check records every passing ck_assert (a write per call): the random runs test quietly. */
#define SAME(cond, ...)                                                                            \
	do {                                                                                       \
		if (!(cond))                                                                       \
			ck_abort_msg("seed %u step %d op %s: " __VA_ARGS__);                       \
	} while (0)

static void same_rc(int got, enum router_error gerr, int want, enum router_error werr)
{
	SAME(got == want && (got == 0 || gerr == werr), "rc %d/%s, reference %d/%s", g_seed, g_step,
	     g_op, got, router_error_name(gerr), want, router_error_name(werr));
}

static void same_decision(const struct router_decision *g, const struct router_decision *w, int i)
{
	bool ok = g->kind == w->kind && g->conversation_id == w->conversation_id &&
		  g->agent_id == w->agent_id && g->queue_id == w->queue_id &&
		  g->offer_id == w->offer_id && g->at_ms == w->at_ms &&
		  g->expires_at_ms == w->expires_at_ms;
	if (ok && g->kind == ROUTER_DECISION_REVOKE)
		ok = g->revoke_reason == w->revoke_reason;
	if (ok && g->kind == ROUTER_DECISION_OFFER)
		ok = g->why.pick == w->why.pick && g->why.agent_tier == w->why.agent_tier &&
		     g->why.tier_min == w->why.tier_min && g->why.tier_max == w->why.tier_max &&
		     g->why.eligible == w->why.eligible &&
		     g->why.eligible_same_tier == w->why.eligible_same_tier &&
		     g->why.idle_ms == w->why.idle_ms && g->why.waited_ms == w->why.waited_ms;
	SAME(ok,
	     "decision %d: got kind %d conv %" PRId64 " agent %" PRId64 " offer %" PRId64
	     " reason %d pick %d elig %d/%d; reference kind %d conv %" PRId64 " agent %" PRId64
	     " offer %" PRId64 " reason %d pick %d elig %d/%d",
	     g_seed, g_step, g_op, i, g->kind, g->conversation_id, g->agent_id, g->offer_id,
	     g->revoke_reason, g->why.pick, g->why.eligible, g->why.eligible_same_tier, w->kind,
	     w->conversation_id, w->agent_id, w->offer_id, w->revoke_reason, w->why.pick,
	     w->why.eligible, w->why.eligible_same_tier);
}

/* Every record, position, estimate and count against the reference. */
static void same_state(int64_t now)
{
	const char *why = NULL;
	SAME(router_verify(R, &why) == 0, "router_verify: %s", g_seed, g_step, g_op, why);
	struct router_stats st;
	router_stats(R, &st);
	int waiting = 0, noffered = 0, assigned = 0, by[3] = {0}, busy = 0, agents = 0, queues = 0;
	for (int64_t i = 1; i < rf.nc; i++) {
		const struct rf_conv *c = &rf.c[i];
		struct router_conversation_view v;
		int rc = router_conversation_get(R, i, &v, NULL);
		SAME((rc == 0) == c->live, "conversation %" PRId64 " existence", g_seed, g_step,
		     g_op, i);
		if (!c->live)
			continue;
		SAME((int)v.state == c->state && v.queue_id == c->q && v.tier == c->tier &&
			 v.priority == c->prio && v.enqueued_at_ms == c->enq &&
			 v.agent_id == c->agent && v.offer_id == c->offer &&
			 v.expires_at_ms == c->expires,
		     "conversation %" PRId64 ": state %d agent %" PRId64 ", reference %d %" PRId64,
		     g_seed, g_step, g_op, i, v.state, v.agent_id, c->state, c->agent);
		waiting += c->state == ROUTER_CONV_WAITING;
		noffered += c->state == ROUTER_CONV_OFFERED;
		assigned += c->state == ROUTER_CONV_ASSIGNED;
		if (c->state != ROUTER_CONV_WAITING)
			continue;
		int pos = 0;
		int64_t est = 0;
		router_conversation_position(R, i, &pos, NULL);
		router_conversation_estimate(R, i, &est, NULL);
		int slots = rf_slots(c->q, c->cls);
		int64_t mean = rf.q[c->q].mean ? rf.q[c->q].mean : rf.handle_ms;
		int64_t west = slots ? (rf_position(i) * mean + slots - 1) / slots : -1;
		SAME(pos == rf_position(i) && est == west,
		     "conversation %" PRId64 " position %d est %" PRId64 ", reference %d %" PRId64,
		     g_seed, g_step, g_op, i, pos, est, rf_position(i), west);
	}
	for (int64_t i = 1; i <= MAXA + 1; i++) {
		const struct rf_agent *a = &rf.a[i];
		struct router_agent_view v;
		int rc = router_agent_get(R, i, &v, NULL);
		SAME((rc == 0) == a->live, "agent %" PRId64 " existence", g_seed, g_step, g_op, i);
		if (!a->live)
			continue;
		agents++;
		by[a->status]++;
		int held = 0;
		for (int64_t j = 1; j < rf.nc; j++)
			held += rf.c[j].live && rf.c[j].agent == i;
		busy += a->status == ROUTER_AGENT_AVAILABLE && held > 0;
		SAME((int)v.status == a->status && v.tier == a->tier &&
			 v.idle_since_ms == a->idle && !memcmp(v.load, a->load, sizeof(v.load)) &&
			 !memcmp(v.capacity, a->cap, sizeof(v.capacity)),
		     "agent %" PRId64 " status %d idle %" PRId64
		     " load %d/%d/%d, reference %d %" PRId64 " %d/%d/%d",
		     g_seed, g_step, g_op, i, v.status, v.idle_since_ms, v.load[0], v.load[1],
		     v.load[2], a->status, a->idle, a->load[0], a->load[1], a->load[2]);
	}
	for (int64_t q = 1; q <= MAXQ + 1; q++) {
		struct router_queue_stats qs;
		int rc = router_queue_stats(R, q, now, &qs, NULL);
		SAME((rc == 0) == rf.q[q].live, "queue %" PRId64 " existence", g_seed, g_step, g_op,
		     q);
		if (!rf.q[q].live)
			continue;
		queues++;
		int w = 0, o = 0, s = 0, avail = 0;
		int64_t oldest = INT64_MAX;
		for (int64_t i = 1; i < rf.nc; i++) {
			const struct rf_conv *c = &rf.c[i];
			if (!c->live || c->q != q)
				continue;
			w += c->state == ROUTER_CONV_WAITING;
			o += c->state == ROUTER_CONV_OFFERED;
			s += c->state == ROUTER_CONV_ASSIGNED;
			if (c->state == ROUTER_CONV_WAITING && c->enq < oldest)
				oldest = c->enq;
		}
		for (int64_t i = 1; i <= rf.na; i++) {
			const struct rf_agent *a = &rf.a[i];
			avail += a->live && a->status == ROUTER_AGENT_AVAILABLE &&
				 rf_serves(a, &rf.q[q]);
		}
		int64_t longest = oldest != INT64_MAX && now > oldest ? now - oldest : 0;
		SAME(qs.waiting == w && qs.offered == o && qs.assigned == s &&
			 qs.longest_wait_ms == longest && qs.agents_available == avail &&
			 qs.slots[0] == rf_slots(q, 0) && qs.slots[1] == rf_slots(q, 1) &&
			 qs.slots[2] == rf_slots(q, 2) && qs.mean_handle_ms == rf.q[q].mean,
		     "queue %" PRId64 " stats", g_seed, g_step, g_op, q);
	}
	SAME(st.waiting == waiting && st.offered == noffered && st.assigned == assigned &&
		 st.agents == agents && st.queues == queues && st.agents_offline == by[0] &&
		 st.agents_available == by[1] && st.agents_away == by[2] && st.agents_busy == busy,
	     "router_stats", g_seed, g_step, g_op);
}

static void random_skills(struct router_skill *sk, int *n, int max, int maxlevel)
{
	int want = (int)rnd((uint32_t)max + 1);
	*n = 0;
	for (int id = 1; id <= NSKILL && *n < want; id++) {
		if (rnd(2))
			sk[(*n)++] = (struct router_skill){
			    .skill_id = id, .level = 1 + (int)rnd((uint32_t)maxlevel)};
	}
}

static void op_queue_set(int64_t now)
{
	struct router_queue_info qi = {.id = 1 + rnd(MAXQ), .priority = (int)rnd(3) - 1};
	struct router_skill sk[4];
	struct router_overflow st[4];
	random_skills(sk, &qi.nskills, 2, 3);
	static const int afters[] = {0, 5, 10, 20, 40};
	int used = 0, nst = (int)rnd(3);
	for (int i = 0; i < nst; i++) {
		int k = (int)rnd(5);
		if (used & (1 << k))
			continue;
		used |= 1 << k;
		st[qi.noverflow++] =
		    (struct router_overflow){.after_s = afters[k], .tier = 1 + (int)rnd(3)};
	}
	bool invalid = false;
	if (rnd(40) == 0 && qi.noverflow) {
		st[0].tier = 0;
		invalid = true;
	}
	if (rnd(40) == 0) {
		qi.id = 0;
		invalid = true;
	}
	qi.skills = sk;
	qi.overflow = st;
	enum router_error e = ROUTER_OK;
	int rc = router_queue_set(R, &qi, now, &e);
	if (invalid) {
		same_rc(rc, e, -1, ROUTER_E_INVALID);
		return;
	}
	same_rc(rc, e, 0, ROUTER_OK);
	struct rf_queue *q = &rf.q[qi.id];
	bool existed = q->live;
	q->live = true;
	q->prio = qi.priority;
	q->nsk = qi.nskills;
	memcpy(q->sk, sk, sizeof(sk));
	q->nst = qi.noverflow;
	memcpy(q->st, st, sizeof(st));
	if (existed)
		rf_revoke_where(f_unfit_in_queue, qi.id, ROUTER_REVOKE_INELIGIBLE, now);
}

static void op_queue_remove(void)
{
	int64_t id = 1 + rnd(MAXQ + 1);
	enum router_error e = ROUTER_OK;
	int rc = router_queue_remove(R, id, &e);
	if (!rf.q[id].live) {
		same_rc(rc, e, -1, ROUTER_E_UNKNOWN_QUEUE);
		return;
	}
	for (int64_t i = 1; i < rf.nc; i++) {
		if (rf.c[i].live && rf.c[i].q == id) {
			same_rc(rc, e, -1, ROUTER_E_BUSY);
			return;
		}
	}
	same_rc(rc, e, 0, ROUTER_OK);
	memset(&rf.q[id], 0, sizeof(rf.q[id]));
}

static void op_agent_set(int64_t now)
{
	struct router_agent_info ai = {.id = 1 + rnd((uint32_t)rf.na), .tier = 1 + (int)rnd(3)};
	struct router_skill sk[NSKILL];
	random_skills(sk, &ai.nskills, NSKILL, 3);
	ai.skills = sk;
	ai.capacity[0] = (int)rnd(4);
	ai.capacity[1] = (int)rnd(3);
	ai.capacity[2] = (int)rnd(2);
	if (rnd(40) == 0)
		ai.tier = 0;
	enum router_error e = ROUTER_OK;
	int rc = router_agent_set(R, &ai, now, &e);
	if (ai.tier < 1) {
		same_rc(rc, e, -1, ROUTER_E_INVALID);
		return;
	}
	same_rc(rc, e, 0, ROUTER_OK);
	struct rf_agent *a = &rf.a[ai.id];
	if (!a->live) {
		memset(a, 0, sizeof(*a));
		a->live = true;
		a->status = ROUTER_AGENT_OFFLINE;
		a->idle = now;
	}
	a->tier = ai.tier;
	a->nsk = ai.nskills;
	memcpy(a->sk, sk, sizeof(sk));
	memcpy(a->cap, ai.capacity, sizeof(a->cap));
	rf_revoke_where(f_unfit_of_agent, ai.id, ROUTER_REVOKE_INELIGIBLE, now);
}

static void set_status(int64_t id, int st, int64_t now)
{
	enum router_error e = ROUTER_OK;
	int rc = router_agent_set_status(R, id, st, now, &e);
	struct rf_agent *a = &rf.a[id];
	if (!a->live) {
		same_rc(rc, e, -1, ROUTER_E_UNKNOWN_AGENT);
		return;
	}
	same_rc(rc, e, 0, ROUTER_OK);
	if (a->status == st)
		return;
	a->status = st;
	if (st == ROUTER_AGENT_AVAILABLE)
		a->idle = now;
	else
		rf_revoke_where(f_of_agent, id, ROUTER_REVOKE_AGENT_UNAVAILABLE, now);
}

static void op_agent_remove(int64_t now)
{
	int64_t id = 1 + rnd((uint32_t)rf.na + 1);
	enum router_error e = ROUTER_OK;
	int rc = router_agent_remove(R, id, now, &e);
	if (!rf.a[id].live) {
		same_rc(rc, e, -1, ROUTER_E_UNKNOWN_AGENT);
		return;
	}
	same_rc(rc, e, 0, ROUTER_OK);
	rf_revoke_where(f_of_agent, id, ROUTER_REVOKE_AGENT_REMOVED, now);
	for (int64_t i = 1; i < rf.nc; i++) {
		struct rf_conv *c = &rf.c[i];
		if (!c->live || c->agent != id)
			continue;
		struct router_decision d = {.kind = ROUTER_DECISION_REQUEUE,
					    .conversation_id = i,
					    .agent_id = id,
					    .queue_id = c->q,
					    .at_ms = now};
		rf_push(&d);
		rf_release(c, now);
		c->state = ROUTER_CONV_WAITING;
		c->enq = now;
	}
	memset(&rf.a[id], 0, sizeof(rf.a[id]));
}

static void op_conv_add(int64_t now)
{
	struct router_conversation_info ci = {
	    .id = rf.nc,
	    .queue_id = 1 + rnd(MAXQ + 1),
	    .customer_id = rnd(MAXCUST + 1),
	    .channel = (int)rnd(ROUTER_CHANNEL__COUNT),
	    .tier = 1 + (int)rnd(3),
	    .priority = (int)rnd(3),
	    .enqueued_at_ms = now - 500 * (int64_t)rnd(60),
	};
	if (rnd(3) == 0) {
		ci.last_agent_id = 1 + rnd((uint32_t)rf.na);
		ci.last_agent_at_ms = now - 1000 * (int64_t)rnd(90);
	}
	if (rnd(50) == 0)
		ci.tier = 0;
	if (rnd(50) == 0 && rf.nc > 1)
		ci.id = 1 + rnd((uint32_t)rf.nc - 1);
	enum router_error e = ROUTER_OK;
	int rc = router_conversation_add(R, &ci, now, &e);
	if (ci.tier < 1) {
		same_rc(rc, e, -1, ROUTER_E_INVALID);
		return;
	}
	if (ci.id < rf.nc) {
		/* an id used before: known while live; a dead id may come back */
		if (rf.c[ci.id].live) {
			same_rc(rc, e, -1, ROUTER_E_EXISTS);
			return;
		}
	}
	if (!rf.q[ci.queue_id].live) {
		same_rc(rc, e, -1, ROUTER_E_UNKNOWN_QUEUE);
		return;
	}
	same_rc(rc, e, 0, ROUTER_OK);
	struct rf_conv *c = &rf.c[ci.id];
	memset(c, 0, sizeof(*c));
	c->live = true;
	c->q = ci.queue_id;
	c->ch = ci.channel;
	c->cls = rf_cls(ci.channel);
	c->tier = ci.tier;
	c->prio = ci.priority;
	c->enq = ci.enqueued_at_ms;
	c->cust = ci.customer_id;
	c->state = ROUTER_CONV_WAITING;
	rf_customer(c->cust, ci.last_agent_id, ci.last_agent_at_ms);
	if (ci.id == rf.nc)
		rf.nc++;
}

/* A conversation id: mostly live ones, sometimes any. */
static int64_t pick_conv(void)
{
	if (rf.nc <= 1)
		return 1;
	for (int tries = 0; tries < 20 && rnd(6); tries++) {
		int64_t id = 1 + rnd((uint32_t)rf.nc - 1);
		if (rf.c[id].live)
			return id;
	}
	return 1 + rnd((uint32_t)rf.nc);
}

/* A pending offer id: mostly real ones. */
static int64_t pick_offer(void)
{
	for (int tries = 0; tries < 40 && rnd(8); tries++) {
		int64_t id = 1 + rnd((uint32_t)rf.nc);
		if (id < rf.nc && rf.c[id].live && rf.c[id].state == ROUTER_CONV_OFFERED)
			return rf.c[id].offer;
	}
	return 1 + rnd((uint32_t)rf.next_offer + 2);
}

static int64_t offer_conv(int64_t offer)
{
	for (int64_t i = 1; i < rf.nc; i++) {
		if (rf.c[i].live && rf.c[i].state == ROUTER_CONV_OFFERED && rf.c[i].offer == offer)
			return i;
	}
	return 0;
}

static void op_offer(int kind, int64_t now)
{
	int64_t offer = pick_offer();
	enum router_error e = ROUTER_OK;
	int rc = kind == 0   ? router_offer_accept(R, offer, now, &e)
		 : kind == 1 ? router_offer_reject(R, offer, now, &e)
			     : router_offer_cancel(R, offer, now, &e);
	int64_t cid = offer_conv(offer);
	if (!cid) {
		same_rc(rc, e, -1, ROUTER_E_UNKNOWN_OFFER);
		return;
	}
	same_rc(rc, e, 0, ROUTER_OK);
	if (kind == 0) {
		rf.c[cid].state = ROUTER_CONV_ASSIGNED;
		rf.c[cid].offer = 0;
		rf.c[cid].expires = 0;
	} else {
		rf_unoffer(cid, kind == 1, now);
	}
}

static bool conv_known(int64_t cid)
{
	return cid < rf.nc && rf.c[cid].live;
}

/* Takes C out of its state like the router's detach: revoke (REASON) or end the work. */
static void rf_detach(int64_t cid, int reason, int64_t now)
{
	struct rf_conv *c = &rf.c[cid];
	if (c->state == ROUTER_CONV_OFFERED)
		rf_revoke(cid, reason, now, false);
	else if (c->state == ROUTER_CONV_ASSIGNED)
		rf_release(c, now);
}

static void op_conv_update(int64_t now)
{
	int64_t cid = pick_conv();
	int tier = (int)rnd(4), prio = (int)rnd(4);
	enum router_error e = ROUTER_OK;
	int rc = router_conversation_update(R, cid, tier, prio, now, &e);
	if (tier < 1) {
		same_rc(rc, e, -1, ROUTER_E_INVALID);
		return;
	}
	if (!conv_known(cid)) {
		same_rc(rc, e, -1, ROUTER_E_UNKNOWN_CONVERSATION);
		return;
	}
	same_rc(rc, e, 0, ROUTER_OK);
	struct rf_conv *c = &rf.c[cid];
	c->tier = tier;
	c->prio = prio;
	if (c->state == ROUTER_CONV_OFFERED && !rf_offer_ok(c, now))
		rf_revoke(cid, ROUTER_REVOKE_INELIGIBLE, now, true);
}

static void op_conv_transfer(int64_t now)
{
	int64_t cid = pick_conv(), q = 1 + rnd(MAXQ + 1);
	enum router_error e = ROUTER_OK;
	int rc = router_conversation_transfer(R, cid, q, now, &e);
	if (!conv_known(cid)) {
		same_rc(rc, e, -1, ROUTER_E_UNKNOWN_CONVERSATION);
		return;
	}
	if (!rf.q[q].live) {
		same_rc(rc, e, -1, ROUTER_E_UNKNOWN_QUEUE);
		return;
	}
	same_rc(rc, e, 0, ROUTER_OK);
	rf_detach(cid, ROUTER_REVOKE_TRANSFERRED, now);
	struct rf_conv *c = &rf.c[cid];
	c->q = q;
	c->enq = now;
	c->state = ROUTER_CONV_WAITING;
}

static void op_conv_assign(int64_t now)
{
	int64_t cid = pick_conv(), aid = 1 + rnd((uint32_t)rf.na + 1);
	enum router_error e = ROUTER_OK;
	int rc = router_conversation_assign(R, cid, aid, now, &e);
	if (!conv_known(cid)) {
		same_rc(rc, e, -1, ROUTER_E_UNKNOWN_CONVERSATION);
		return;
	}
	if (!rf.a[aid].live) {
		same_rc(rc, e, -1, ROUTER_E_UNKNOWN_AGENT);
		return;
	}
	same_rc(rc, e, 0, ROUTER_OK);
	struct rf_conv *c = &rf.c[cid];
	if (c->agent == aid) {
		c->state = ROUTER_CONV_ASSIGNED;
		c->offer = 0;
		c->expires = 0;
		return;
	}
	rf_detach(cid, ROUTER_REVOKE_TAKEN, now);
	c->state = ROUTER_CONV_ASSIGNED;
	c->agent = aid;
	rf.a[aid].load[c->cls]++;
}

static void op_conv_end(bool resolve, int64_t now)
{
	int64_t cid = pick_conv();
	enum router_error e = ROUTER_OK;
	int rc = resolve ? router_conversation_resolve(R, cid, now, &e)
			 : router_conversation_remove(R, cid, now, &e);
	if (!conv_known(cid)) {
		same_rc(rc, e, -1, ROUTER_E_UNKNOWN_CONVERSATION);
		return;
	}
	same_rc(rc, e, 0, ROUTER_OK);
	struct rf_conv *c = &rf.c[cid];
	if (resolve && c->state == ROUTER_CONV_ASSIGNED)
		rf_customer(c->cust, c->agent, now);
	rf_detach(cid, ROUTER_REVOKE_CLOSED, now);
	c->live = false;
}

static void op_restore_offer(int64_t now)
{
	int64_t cid = pick_conv(), aid = 1 + rnd((uint32_t)rf.na + 1);
	int64_t offer = rnd(4) ? rf.next_offer + rnd(3) : pick_offer();
	if (rnd(30) == 0)
		offer = 0;
	int64_t expires = now - 5000 + 500 * (int64_t)rnd(60);
	enum router_error e = ROUTER_OK;
	int rc = router_conversation_restore_offer(R, cid, aid, offer, expires, now, &e);
	if (offer <= 0) {
		same_rc(rc, e, -1, ROUTER_E_INVALID);
		return;
	}
	if (!conv_known(cid)) {
		same_rc(rc, e, -1, ROUTER_E_UNKNOWN_CONVERSATION);
		return;
	}
	if (!rf.a[aid].live) {
		same_rc(rc, e, -1, ROUTER_E_UNKNOWN_AGENT);
		return;
	}
	if (rf.c[cid].state != ROUTER_CONV_WAITING) {
		same_rc(rc, e, -1, ROUTER_E_STATE);
		return;
	}
	if (rf_offer_pending(offer)) {
		same_rc(rc, e, -1, ROUTER_E_EXISTS);
		return;
	}
	same_rc(rc, e, 0, ROUTER_OK);
	rf_offer(cid, aid, offer, expires);
}

static void op_restore_cooldown(int64_t now)
{
	int64_t cid = pick_conv(), aid = rnd((uint32_t)rf.na + 1);
	int64_t until = now - 1000 + 500 * (int64_t)rnd(80);
	enum router_error e = ROUTER_OK;
	int rc = router_conversation_restore_cooldown(R, cid, aid, until, now, &e);
	if (aid <= 0) {
		same_rc(rc, e, -1, ROUTER_E_INVALID);
		return;
	}
	if (!conv_known(cid)) {
		same_rc(rc, e, -1, ROUTER_E_UNKNOWN_CONVERSATION);
		return;
	}
	same_rc(rc, e, 0, ROUTER_OK);
	rf_set_cooldown(&rf.c[cid], aid, until);
}

static int n_decisions, n_offers;

static void op_route(int64_t now, bool offers)
{
	struct router_decision got[80], want[80];
	int max = rnd(4) ? 64 : 1 + (int)rnd(4);
	int n = offers ? router_route(R, now, got, max) : router_expire(R, now, got, max);
	int m = rf_route(now, want, max, offers);
	SAME(n == m, "%d decisions, reference %d", g_seed, g_step, g_op, n, m);
	for (int i = 0; i < n; i++) {
		same_decision(&got[i], &want[i], i);
		n_decisions++;
		n_offers += got[i].kind == ROUTER_DECISION_OFFER;
	}
	if (offers && n < max) {
		int64_t dl = router_next_deadline_ms(R), wdl = rf_next_deadline(now);
		SAME(dl == wdl, "next deadline %" PRId64 ", reference %" PRId64, g_seed, g_step,
		     g_op, dl, wdl);
	}
}

static void set_config(int64_t now)
{
	struct router_config cfg;
	router_config_defaults(&cfg);
	static const int timeouts[] = {5, 20}, cooldowns[] = {0, 10, 30}, stickies[] = {0, 30, 60};
	cfg.offer_timeout_s = timeouts[rnd(2)];
	cfg.reject_cooldown_s = cooldowns[rnd(3)];
	cfg.sticky_agent_s = stickies[rnd(3)];
	cfg.default_handle_s = 60 + (int)rnd(240);
	router_set_config(R, &cfg);
	rf.timeout_ms = cfg.offer_timeout_s * 1000LL;
	rf.cd_ms = cfg.reject_cooldown_s * 1000LL;
	rf.sticky_ms = cfg.sticky_agent_s * 1000LL;
	rf.handle_ms = cfg.default_handle_s * 1000LL;
}

static void random_run(unsigned seed, int steps, int nagents, bool bulk)
{
	g_seed = seed;
	rng_state = 0x9e3779b97f4a7c15ULL ^ ((uint64_t)seed * 0x100000001b3ULL);
	memset(&rf, 0, sizeof(rf));
	rf.na = nagents;
	rf.c = calloc((size_t)steps + 2, sizeof(*rf.c));
	rf.nc = 1;
	rf.next_offer = 1;
	router_free(&R);
	R = router_new(NULL);
	int64_t now = 5000000;
	set_config(now);
	g_op = "warm-up";
	for (int i = 0; i < MAXQ; i++)
		op_queue_set(now);
	for (int i = 0; i < rf.na; i++)
		op_agent_set(now);
	for (g_step = 0; g_step < steps; g_step++) {
		/* half-second steps so that boundaries (deadlines, windows, ties) really occur,
		 * sometimes straight to the next deadline or just before it, sometimes far */
		uint32_t how = rnd(20);
		int64_t dl = rf_next_deadline(now);
		if (how == 0)
			now += rnd(90000);
		else if (how < 4 && dl > now && dl < now + 200000)
			now = dl - (rnd(3) == 0);
		else
			now += 500 * (int64_t)rnd(5);
		int op = (int)rnd(100);
		if (op < 16) {
			g_op = "conversation_add";
			op_conv_add(now);
		} else if (op < 34) {
			g_op = "route";
			op_route(now, true);
		} else if (op < 36) {
			g_op = "expire";
			op_route(now, false);
		} else if (op < 44) {
			g_op = "agent_status";
			int64_t id = 1 + rnd((uint32_t)rf.na + 1);
			int st = rnd(3) ? ROUTER_AGENT_AVAILABLE : (int)rnd(3);
			set_status(id, st, now);
		} else if (op < 48) {
			g_op = "agent_set";
			op_agent_set(now);
		} else if (op < 56) {
			g_op = "accept";
			op_offer(0, now);
		} else if (op < 61) {
			g_op = "reject";
			op_offer(1, now);
		} else if (op < 62) {
			g_op = "cancel";
			op_offer(2, now);
		} else if (op < 70) {
			g_op = "resolve";
			op_conv_end(true, now);
		} else if (op < 73) {
			g_op = "remove";
			op_conv_end(false, now);
		} else if (op < 76) {
			g_op = "update";
			op_conv_update(now);
		} else if (op < 79) {
			g_op = "transfer";
			op_conv_transfer(now);
		} else if (op < 81) {
			g_op = "assign";
			op_conv_assign(now);
		} else if (op < 84) {
			g_op = "queue_set";
			op_queue_set(now);
		} else if (op < 85) {
			g_op = "queue_remove";
			op_queue_remove();
		} else if (op < 86) {
			g_op = "agent_remove";
			op_agent_remove(now);
		} else if (op < 88) {
			g_op = "restore_offer";
			op_restore_offer(now);
		} else if (op < 90) {
			g_op = "restore_cooldown";
			op_restore_cooldown(now);
		} else if (op < 91) {
			g_op = "config";
			set_config(now);
		} else if (op < 92) {
			g_op = "next_offer_id";
			int64_t next = 1 + rnd((uint32_t)rf.next_offer + 1);
			router_set_next_offer_id(R, next);
			rf.next_offer = next;
		} else if (op < 93) {
			g_op = "idle_since";
			int64_t id = 1 + rnd((uint32_t)rf.na + 1);
			int64_t at = now - 1000 * (int64_t)rnd(100);
			enum router_error e = ROUTER_OK;
			int rc = router_agent_set_idle_since(R, id, at, &e);
			if (!rf.a[id].live) {
				same_rc(rc, e, -1, ROUTER_E_UNKNOWN_AGENT);
			} else {
				same_rc(rc, e, 0, ROUTER_OK);
				rf.a[id].idle = at;
			}
		} else if (op < 94) {
			g_op = "handle_time";
			int64_t q = 1 + rnd(MAXQ + 1), ms = rnd(400000);
			enum router_error e = ROUTER_OK;
			int rc = router_queue_add_handle_time(R, q, ms, &e);
			if (!rf.q[q].live) {
				same_rc(rc, e, -1, ROUTER_E_UNKNOWN_QUEUE);
			} else {
				same_rc(rc, e, 0, ROUTER_OK);
				struct rf_queue *qq = &rf.q[q];
				qq->mean =
				    !qq->mean ? (ms > 0 ? ms : 1) : qq->mean + (ms - qq->mean) / 8;
				if (qq->mean < 1)
					qq->mean = 1;
			}
		} else if (bulk && op < 97) {
			/* a shift changes over between two routing calls */
			g_op = "bulk_status";
			int st = rnd(2) ? ROUTER_AGENT_AVAILABLE : ROUTER_AGENT_AWAY;
			for (int i = 0; i < rf.na / 2; i++)
				set_status(1 + rnd((uint32_t)rf.na), st, now);
		} else {
			g_op = "agent_set";
			op_agent_set(now);
		}
		same_state(now);
	}
	if (getenv("ROUTER_TEST_STATS")) {
		int live = 0, waiting = 0;
		for (int64_t i = 1; i < rf.nc; i++) {
			live += rf.c[i].live;
			waiting += rf.c[i].live && rf.c[i].state == ROUTER_CONV_WAITING;
		}
		fprintf(stderr, "seed %u: %d ids, %d live, %d waiting, %d decisions (%d offers)\n",
			seed, rf.nc, live, waiting, n_decisions, n_offers);
	}
	free(rf.c);
	free(rf.out);
	rf.c = NULL;
	rf.out = NULL;
}

START_TEST(random_against_reference)
{
	random_run(1000 + (unsigned)_i, 4000, 12, false);
}
END_TEST

START_TEST(random_bulk_against_reference)
{
	random_run(2000 + (unsigned)_i, 2500, MAXA, true);
}
END_TEST

static Suite *router_suite(void)
{
	Suite *s = suite_create("router");
	TCase *tc = tcase_create("rules");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_add_test(tc, names);
	tcase_add_test(tc, skills_with_minimum_levels);
	tcase_add_test(tc, capacity_per_class);
	tcase_add_test(tc, longest_idle_first);
	tcase_add_test(tc, lowest_sufficient_tier);
	tcase_add_test(tc, sticky_agent);
	tcase_add_test(tc, overflow_window);
	tcase_add_test(tc, priority_then_age);
	tcase_add_test(tc, timeout_then_cooldown);
	tcase_add_test(tc, reject_goes_elsewhere);
	tcase_add_test(tc, accept_holds_capacity);
	tcase_add_test(tc, resolve_frees_and_idles);
	tcase_add_test(tc, away_revokes_offers);
	tcase_add_test(tc, escalation_revokes_ineligible);
	tcase_add_test(tc, next_deadline);
	tcase_add_test(tc, positions_estimates_stats);
	tcase_add_test(tc, errors);
	tcase_add_test(tc, rebuild_then_route);
	tcase_add_test(tc, many_customers);
	suite_add_tcase(s, tc);
	TCase *tr = tcase_create("reference");
	tcase_add_checked_fixture(tr, setup, teardown);
	tcase_set_timeout(tr, 120);
	/* ROUTER_TEST_SEEDS=N runs N seeds of each instead (a longer hunt) */
	const char *seeds = getenv("ROUTER_TEST_SEEDS");
	int n = seeds && atoi(seeds) > 0 ? atoi(seeds) : 6;
	tcase_add_loop_test(tr, random_against_reference, 0, n);
	tcase_add_loop_test(tr, random_bulk_against_reference, 0, n > 6 ? n : 3);
	suite_add_tcase(s, tr);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(router_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
