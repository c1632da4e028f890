/* The SLA timer service (see sla.h). PostgreSQL holds every timer and decides, under a row
 * lock, whether a firing happens; this module only makes sure it is asked at the right
 * moment. */
#include "contactd/sla.h"

#include "contactd/app.h"
#include "contactd/idmap.h"
#include "contactd/log.h"
#include "contactd/routing.h"
#include "contactd/store.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define SLA_POLL_MS	500  /* look for timers about to fire this often */
#define SLA_HORIZON_MS	1500 /* ... this far ahead (> SLA_POLL_MS: no gap) */
#define SLA_KICK_MS	20   /* a kick polls after this (kicks coalesce) */
#define SLA_RETRY_MS	1000 /* a firing the store could not take is retried after this */
#define SLA_POLL_LIMIT	1000 /* timers per poll; the next poll takes the rest */
#define SLA_MAX_ARMED	20000
#define SLA_TIMER_KINDS 3

static const char *const timer_names[SLA_TIMER_KINDS] = {"first_response", "next_response",
							 "resolution"};

/* One firing waiting on its time (or on the store). */
struct armed {
	struct sla *sla;
	struct event *ev;
	int64_t conv;
	int timer;
	int64_t at_ms; /* CLOCK_MONOTONIC ms when it should fire */
	bool in_flight;
	bool orphan; /* the service was freed while the store had it */
};

struct sla {
	struct app *app;
	struct sla_notify n;
	bool ready, polling, kicked;
	struct event *poll_timer;
	struct event *kick_timer;
	struct idmap *armed; /* conv * 3 + timer -> struct armed */
	unsigned long long warnings, breaches, escalations;
};

static int64_t mono_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static int timer_index(const char *name)
{
	for (int i = 0; name && i < SLA_TIMER_KINDS; i++)
		if (strcmp(name, timer_names[i]) == 0)
			return i;
	return -1;
}

static int64_t key_of(int64_t conv, int timer)
{
	return conv * SLA_TIMER_KINDS + timer;
}

static void add_after(struct event *ev, int64_t ms)
{
	if (ms < 0)
		ms = 0;
	struct timeval tv = {(time_t)(ms / 1000), (suseconds_t)(ms % 1000) * 1000};
	evtimer_add(ev, &tv);
}

static void drop(struct armed *a)
{
	idmap_set(a->sla->armed, key_of(a->conv, a->timer), NULL);
	event_free(a->ev);
	free(a);
}

static void arm_at(struct armed *a, int64_t in_ms)
{
	a->at_ms = mono_ms() + (in_ms > 0 ? in_ms : 0);
	add_after(a->ev, in_ms);
}

/* ---- firing -------------------------------------------------------------------------- */

static void tell(struct sla *s, const json_t *res)
{
	int64_t conv = json_integer_value(json_object_get(res, "conversation"));
	int64_t agent = json_integer_value(json_object_get(res, "agent"));
	const char *state = json_string_value(json_object_get(res, "state"));
	json_t *ev = json_pack("{s:s, s:I, s:O, s:s, s:O}", "type", "sla", "conversation",
			       (json_int_t)conv, "timer", json_object_get(res, "timer"), "state",
			       state ? state : "", "due", json_object_get(res, "due"));
	if (!ev)
		return;
	if (agent > 0 && s->n.to_agent)
		s->n.to_agent(s->n.arg, agent, json_incref(ev));
	if (s->n.to_topic)
		s->n.to_topic(s->n.arg, "sla", json_incref(ev));
	json_decref(ev);

	json_t *esc = json_object_get(res, "escalated");
	if (!json_is_object(esc))
		return;
	s->escalations++;
	int tier = (int)json_integer_value(json_object_get(esc, "tier"));
	int priority = (int)json_integer_value(json_object_get(esc, "priority"));
	sla_tell_escalated(s, conv, agent, tier, json_string_value(json_object_get(esc, "reason")));
	routing_conversation_escalated(s->app->routing, conv, tier, priority);
}

static void fire_cb(void *arg, const struct store_reply *rep)
{
	struct armed *a = arg;
	struct sla *s = a->sla;
	a->in_flight = false;
	if (a->orphan) {
		event_free(a->ev);
		free(a);
		return;
	}
	json_t *res =
	    rep->status == STORE_OK && rep->value ? json_loads(rep->value, 0, NULL) : NULL;
	if (!res) {
		log_warn("sla_fire_failed", "conversation=%lld timer=%s status=%d retry_ms=%d",
			 (long long)a->conv, timer_names[a->timer], rep->status, SLA_RETRY_MS);
		arm_at(a, SLA_RETRY_MS);
		return;
	}
	if (json_is_true(json_object_get(res, "fired"))) {
		const char *state = json_string_value(json_object_get(res, "state"));
		bool breach = state && strcmp(state, "breached") == 0;
		if (breach)
			s->breaches++;
		else
			s->warnings++;
		json_t *esc = json_object_get(res, "escalated");
		log_info(breach ? "sla_breach" : "sla_warning",
			 "conversation=%lld timer=%s due=%s late_ms=%lld status=%s tier=%lld",
			 (long long)a->conv, timer_names[a->timer],
			 json_string_value(json_object_get(res, "due")) ?: "-",
			 (long long)(mono_ms() - a->at_ms),
			 json_string_value(json_object_get(res, "status")) ?: "-",
			 (long long)json_integer_value(
			     json_object_get(json_is_object(esc) ? esc : res, "tier")));
		tell(s, res);
	}
	json_t *in = json_object_get(res, "in_ms");
	if (json_is_integer(in) && json_integer_value(in) <= SLA_HORIZON_MS)
		arm_at(a, json_integer_value(in));
	else
		drop(a); /* nothing soon: a later poll finds it again */
	json_decref(res);
}

static void armed_cb(evutil_socket_t fd, short what, void *arg)
{
	struct armed *a = arg;
	struct sla *s = a->sla;
	json_t *p = json_pack("{s:I, s:s}", "conversation", (json_int_t)a->conv, "timer",
			      timer_names[a->timer]);
	a->in_flight = true;
	if (!p || store_call_json(s->app->store, STORE_Q_SLA_FIRE, p, fire_cb, a) < 0) {
		a->in_flight = false;
		arm_at(a, SLA_RETRY_MS);
	}
}

/* ---- polling ------------------------------------------------------------------------- */

static void arm(struct sla *s, int64_t conv, int timer, int64_t in_ms)
{
	int64_t key = key_of(conv, timer);
	struct armed *a = idmap_get(s->armed, key);
	if (a) {
		if (a->in_flight)
			return; /* its answer says what comes next */
		int64_t at = mono_ms() + (in_ms > 0 ? in_ms : 0);
		if (at < a->at_ms - 1 || at > a->at_ms + 1) /* the due time moved */
			arm_at(a, in_ms);
		return;
	}
	if (idmap_count(s->armed) >= SLA_MAX_ARMED)
		return; /* the next poll brings it back */
	a = calloc(1, sizeof(*a));
	if (!a)
		return;
	a->ev = evtimer_new(s->app->base, armed_cb, a);
	if (!a->ev) {
		free(a);
		return;
	}
	a->sla = s;
	a->conv = conv;
	a->timer = timer;
	idmap_set(s->armed, key, a);
	arm_at(a, in_ms);
}

static void upcoming_cb(void *arg, const struct store_reply *rep)
{
	struct sla *s = arg;
	s->polling = false;
	json_t *res =
	    rep->status == STORE_OK && rep->value ? json_loads(rep->value, 0, NULL) : NULL;
	if (!res) {
		if (rep->status != STORE_UNAVAILABLE)
			log_warn("sla_poll_failed", "status=%d", rep->status);
		return;
	}
	json_t *timers = json_object_get(res, "timers");
	size_t i;
	json_t *t;
	json_array_foreach(timers, i, t)
	{
		int64_t conv = json_integer_value(json_array_get(t, 0));
		int timer = timer_index(json_string_value(json_array_get(t, 1)));
		if (conv > 0 && timer >= 0)
			arm(s, conv, timer, json_integer_value(json_array_get(t, 2)));
	}
	bool full = json_array_size(timers) >= SLA_POLL_LIMIT;
	json_decref(res);
	if (full || s->kicked)
		sla_kick(s);
}

static void poll_now(struct sla *s)
{
	if (!s->ready || s->polling || s->app->draining)
		return;
	if (!store_available(s->app->store))
		return;
	s->kicked = false;
	json_t *p = json_pack("{s:i, s:i}", "horizon_ms", SLA_HORIZON_MS, "limit", SLA_POLL_LIMIT);
	s->polling = true;
	if (!p || store_call_json(s->app->store, STORE_Q_SLA_UPCOMING, p, upcoming_cb, s) < 0)
		s->polling = false;
}

static void poll_cb(evutil_socket_t fd, short what, void *arg)
{
	poll_now(arg);
}

void sla_kick(struct sla *s)
{
	if (!s || !s->ready)
		return;
	if (s->polling) {
		s->kicked = true; /* poll again once this one is answered */
		return;
	}
	if (!evtimer_pending(s->kick_timer, NULL))
		add_after(s->kick_timer, SLA_KICK_MS);
}

void sla_kick_route(struct sla *s, const json_t *route)
{
	if (json_integer_value(json_object_get(json_object_get(route, "sla"), "policy")) > 0)
		sla_kick(s);
}

void sla_store_ready(struct sla *s)
{
	if (!s)
		return;
	s->ready = true;
	poll_now(s);
}

/* ---- events -------------------------------------------------------------------------- */

void sla_tell_escalated(struct sla *s, int64_t conv_id, int64_t agent_id, int tier,
			const char *reason)
{
	if (!s)
		return;
	json_t *ev = json_pack("{s:s, s:I, s:i, s:s}", "type", "escalated", "conversation",
			       (json_int_t)conv_id, "tier", tier, "reason", reason ? reason : "");
	if (!ev)
		return;
	if (agent_id > 0 && s->n.to_agent)
		s->n.to_agent(s->n.arg, agent_id, json_incref(ev));
	if (s->n.to_topic)
		s->n.to_topic(s->n.arg, "sla", json_incref(ev));
	json_decref(ev);
}

/* ---- life ---------------------------------------------------------------------------- */

struct sla *sla_new(struct app *app, const struct sla_notify *notify)
{
	struct sla *s = calloc(1, sizeof(*s));
	if (!s)
		return NULL;
	s->app = app;
	if (notify)
		s->n = *notify;
	s->armed = idmap_new();
	s->poll_timer = event_new(app->base, -1, EV_PERSIST, poll_cb, s);
	s->kick_timer = evtimer_new(app->base, poll_cb, s);
	if (!s->armed || !s->poll_timer || !s->kick_timer) {
		sla_free(&s);
		return NULL;
	}
	struct timeval every = {0, SLA_POLL_MS * 1000};
	event_add(s->poll_timer, &every);
	return s;
}

static void free_armed(int64_t key, void *value, void *arg)
{
	struct armed *a = value;
	if (a->in_flight) {
		a->orphan = true; /* fire_cb frees it */
		event_del(a->ev);
		return;
	}
	event_free(a->ev);
	free(a);
}

void sla_free(struct sla **sp)
{
	struct sla *s = *sp;
	if (!s)
		return;
	if (s->armed) {
		idmap_each(s->armed, free_armed, NULL);
		idmap_free(&s->armed);
	}
	if (s->poll_timer)
		event_free(s->poll_timer);
	if (s->kick_timer)
		event_free(s->kick_timer);
	free(s);
	*sp = NULL;
}

void sla_get_stats(const struct sla *s, struct sla_stats *st)
{
	memset(st, 0, sizeof(*st));
	if (!s)
		return;
	st->warnings = s->warnings;
	st->breaches = s->breaches;
	st->escalations = s->escalations;
	st->armed = s->armed ? (int)idmap_count(s->armed) : 0;
}
