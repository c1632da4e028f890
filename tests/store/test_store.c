/* The asynchronous store against a real PostgreSQL (CONTACTD_TEST_CONNINFO): migrations
 * from empty and again, round trips, error mapping, unavailability and reconnection. */
#include "contactd/migrate.h"
#include "contactd/store.h"
#include "contactd/store_cli.h"

#include <check.h>
#include <event2/event.h>
#include <jansson.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

static char conninfo[1024];
static char dbname[64]; /* the test's own database, dropped by teardown() */
static struct event_base *base;

struct result {
	bool done;
	enum store_status status;
	char value[4096];
	char field[64];
};

static void result_cb(void *arg, const struct store_reply *rep)
{
	struct result *r = arg;
	r->done = true;
	r->status = rep->status;
	snprintf(r->value, sizeof(r->value), "%s", rep->value ? rep->value : "");
	snprintf(r->field, sizeof(r->field), "%s", rep->field ? rep->field : "");
}

/* Runs the loop until COND holds or SECONDS pass. */
#define RUN_UNTIL(cond, seconds)                                                                   \
	do {                                                                                       \
		time_t until_ = time(NULL) + (seconds);                                            \
		while (!(cond) && time(NULL) < until_) {                                           \
			event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);                      \
			nanosleep(&(struct timespec){0, 2000000}, NULL);                           \
		}                                                                                  \
	} while (0)

static PGconn *admin_conn(const char *ci)
{
	PGconn *c = PQconnectdb(ci);
	ck_assert_msg(PQstatus(c) == CONNECTION_OK, "connect: %s", PQerrorMessage(c));
	return c;
}

/* A fresh database per test: nothing leaks between them. */
static void setup(void)
{
	const char *base_ci = getenv("CONTACTD_TEST_CONNINFO");
	ck_assert_msg(base_ci && *base_ci, "CONTACTD_TEST_CONNINFO is not set (run scripts/test)");
	snprintf(dbname, sizeof(dbname), "ctd_store_%d_%ld", (int)getpid(), (long)random());
	PGconn *c = admin_conn(base_ci);
	char sql[128];
	snprintf(sql, sizeof(sql), "CREATE DATABASE %s", dbname);
	PGresult *res = PQexec(c, sql);
	ck_assert_msg(PQresultStatus(res) == PGRES_COMMAND_OK, "%s", PQerrorMessage(c));
	PQclear(res);
	PQfinish(c);
	snprintf(conninfo, sizeof(conninfo), "%s dbname=%s", base_ci, dbname);
	base = event_base_new();
}

/* Drops the test's database (WITH (FORCE): a store the test did not free may still hold
 * it), so that a long-lived cluster given in CONTACTD_TEST_CONNINFO does not collect them. */
static void teardown(void)
{
	event_base_free(base);
	const char *base_ci = getenv("CONTACTD_TEST_CONNINFO");
	const char *keep = getenv("CONTACTD_TEST_KEEP_DBS");
	if (!base_ci || !*dbname || (keep && strcmp(keep, "1") == 0))
		return;
	PGconn *c = PQconnectdb(base_ci);
	char sql[128];
	snprintf(sql, sizeof(sql), "DROP DATABASE IF EXISTS %s WITH (FORCE)", dbname);
	if (PQstatus(c) == CONNECTION_OK)
		PQclear(PQexec(c, sql));
	PQfinish(c);
	dbname[0] = '\0';
}

static struct store *connected_store(void)
{
	struct store *s = store_new(base, conninfo, 2);
	RUN_UNTIL(store_available(s) && store_schema_version(s) >= 0, 10);
	ck_assert(store_available(s));
	return s;
}

static void call(struct store *s, enum store_query q, int n, const char *const *p, struct result *r)
{
	memset(r, 0, sizeof(*r));
	ck_assert_int_eq(store_call(s, q, n, p, result_cb, r), 0);
	ck_assert(!r->done); /* never called from inside store_call */
	RUN_UNTIL(r->done, 10);
	ck_assert(r->done);
}

START_TEST(migrations_from_empty_and_again)
{
	int applied = -1, version = -1;
	char *err = NULL;
	ck_assert_int_eq(store_cli_migrate(conninfo, &applied, &version, &err), 0);
	ck_assert_int_eq(applied, migrate_script_count);
	ck_assert_int_eq(version, migrate_latest_version());
	ck_assert_int_eq(store_cli_migrate(conninfo, &applied, &version, &err), 0);
	ck_assert_int_eq(applied, 0);
	ck_assert_int_eq(version, migrate_latest_version());

	struct store *s = connected_store();
	ck_assert_int_eq(store_schema_version(s), migrate_latest_version());
	store_free(&s);
}
END_TEST

START_TEST(schema_version_zero_before_migrations)
{
	struct store *s = connected_store();
	ck_assert_int_eq(store_schema_version(s), 0);
	store_free(&s);
}
END_TEST

START_TEST(admin_round_trip_and_error_mapping)
{
	int applied, version;
	char *err = NULL;
	ck_assert_int_eq(store_cli_migrate(conninfo, &applied, &version, &err), 0);
	struct store *s = connected_store();
	struct result r;

	const char *create[2] = {"skills", "{\"name\":\"billing\"}"};
	call(s, STORE_Q_ADMIN_CREATE, 2, create, &r);
	ck_assert_int_eq(r.status, STORE_OK);
	ck_assert_ptr_nonnull(strstr(r.value, "\"billing\""));

	call(s, STORE_Q_ADMIN_CREATE, 2, create, &r);
	ck_assert_int_eq(r.status, STORE_CONFLICT);

	const char *get[2] = {"skills", "billing"};
	call(s, STORE_Q_ADMIN_GET, 2, get, &r);
	ck_assert_int_eq(r.status, STORE_OK);
	ck_assert_ptr_nonnull(strstr(r.value, "\"billing\""));

	const char *missing[2] = {"skills", "nosuch"};
	call(s, STORE_Q_ADMIN_GET, 2, missing, &r);
	ck_assert_msg(r.status == STORE_NOT_FOUND || (r.status == STORE_OK && !*r.value),
		      "status %d", r.status);

	const char *bad[2] = {"skills", "{\"name\":42}"};
	call(s, STORE_Q_ADMIN_CREATE, 2, bad, &r);
	ck_assert_int_eq(r.status, STORE_INVALID);
	ck_assert_str_eq(r.field, "name");

	const char *list[3] = {"skills", NULL, "10"};
	call(s, STORE_Q_ADMIN_LIST, 3, list, &r);
	ck_assert_int_eq(r.status, STORE_OK);
	ck_assert_ptr_nonnull(strstr(r.value, "\"items\""));
	store_free(&s);
}
END_TEST

START_TEST(unreachable_database_is_unavailable)
{
	/* a port nobody listens on */
	struct store *s = store_new(base, "host=127.0.0.1 port=1 dbname=x connect_timeout=2", 1);
	RUN_UNTIL(false, 1);
	ck_assert(!store_available(s));
	struct result r = {0};
	ck_assert_int_eq(store_call(s, STORE_Q_SCHEMA_VERSION, 0, NULL, result_cb, &r), -1);
	ck_assert(!r.done);
	store_free(&s);
}
END_TEST

START_TEST(reconnects_after_backends_are_killed)
{
	struct store *s = connected_store();
	RUN_UNTIL(false, 1); /* let the whole pool connect */
	PGconn *c = admin_conn(conninfo);
	PGresult *res =
	    PQexec(c, "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
		      "WHERE application_name = 'contactd' AND datname = current_database()");
	ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
	ck_assert_int_ge(PQntuples(res), 1);
	PQclear(res);
	PQfinish(c);
	RUN_UNTIL(!store_available(s), 5);
	/* it comes back by itself */
	RUN_UNTIL(store_available(s), 15);
	ck_assert(store_available(s));
	struct result r;
	call(s, STORE_Q_SCHEMA_VERSION, 0, NULL, &r);
	ck_assert(r.status == STORE_OK || r.status == STORE_NOT_FOUND);
	store_free(&s);
}
END_TEST

START_TEST(pending_calls_fail_unavailable_on_free)
{
	struct store *s = connected_store();
	struct result r = {0};
	ck_assert_int_eq(store_call(s, STORE_Q_SCHEMA_VERSION, 0, NULL, result_cb, &r), 0);
	store_free(&s);
	ck_assert(r.done);
	ck_assert_int_eq(r.status, STORE_UNAVAILABLE);
}
END_TEST

/* A callback run by store_free calls the store again, as the router does when a decision
 * fails: the call must be refused (-1), not crash on the store being freed. */
struct again {
	struct store **sp;
	int rc;
	bool done;
};

static void call_again_cb(void *arg, const struct store_reply *rep)
{
	struct again *a = arg;
	(void)rep;
	a->done = true;
	a->rc = store_call(*a->sp, STORE_Q_SCHEMA_VERSION, 0, NULL, result_cb, NULL);
	json_t *p = json_object();
	int rc2 = store_batch_add(*a->sp, STORE_Q_API_EVENTS, p, result_cb, NULL);
	if (rc2 != -1)
		a->rc = rc2;
	if (store_available(*a->sp))
		a->rc = 1;
}

START_TEST(callbacks_during_free_cannot_call_the_store)
{
	struct store *s = connected_store();
	struct again a = {&s, 0, false};
	ck_assert_int_eq(store_call(s, STORE_Q_SCHEMA_VERSION, 0, NULL, call_again_cb, &a), 0);
	store_free(&s);
	ck_assert(a.done);
	ck_assert_int_eq(a.rc, -1);
}
END_TEST

struct counted {
	int done, ok;
};

static void counted_cb(void *arg, const struct store_reply *rep)
{
	struct counted *c = arg;
	c->done++;
	if (rep->status == STORE_OK && rep->value && strstr(rep->value, "\"ok\": true"))
		c->ok++;
}

static json_t *event_of(int i)
{
	char ext[32];
	snprintf(ext, sizeof(ext), "held-%d", i);
	return json_pack("{s:s, s:{s:s}, s:s, s:s}", "channel", "sms", "from", "phone",
			 "+15550009999", "body", "hello", "external_id", ext);
}

/* Items of a batch query that arrive while a batch of it is running wait and go out
 * together (one more batch), however many times the loop turns meanwhile; none is lost. The
 * running batch is held by a lock on the identity its events write. */
START_TEST(batches_in_flight_are_limited_and_the_rest_go_together)
{
	int applied = -1, version = -1;
	char *err = NULL;
	ck_assert_int_eq(store_cli_migrate(conninfo, &applied, &version, &err), 0);
	PGconn *c = admin_conn(conninfo);
	PGresult *res = PQexec(c, "INSERT INTO queues (name) VALUES ('sms');"
				  "SELECT pg_advisory_lock(cd_lock_class_identity(),"
				  " hashtext('phone:+15550009999'))");
	ck_assert_int_eq(PQresultStatus(res), PGRES_TUPLES_OK);
	PQclear(res);
	struct store *s = store_new(base, conninfo, 4);
	struct store_stats st;
	/* the whole pool connects (idle connections a batch could go out on) and the store's
	 * own schema check is answered: from here on only the test's calls are counted */
	RUN_UNTIL((store_get_stats(s, &st), st.connections_up == 4 && store_schema_version(s) > 0),
		  20);
	ck_assert_int_eq(st.connections_up, 4);
	unsigned long long q0 = st.queries;
	struct counted n = {0, 0};
	for (int i = 0; i < 12; i++) {
		ck_assert_int_eq(
		    store_batch_add(s, STORE_Q_API_EVENTS, event_of(i), counted_cb, &n), 0);
		RUN_UNTIL(false, 0); /* one turn: a batch would go out on any idle connection */
		nanosleep(&(struct timespec){0, 50000000}, NULL);
		event_base_loop(base, EVLOOP_ONCE | EVLOOP_NONBLOCK);
	}
	ck_assert_int_eq(n.done, 0); /* held by the lock */
	res = PQexec(c, "SELECT pg_advisory_unlock_all()");
	PQclear(res);
	RUN_UNTIL(n.done == 12, 20);
	ck_assert_int_eq(n.done, 12);
	ck_assert_int_eq(n.ok, 12);
	store_get_stats(s, &st);
	ck_assert_int_eq((int)(st.queries - q0), 2); /* the first, then the eleven that waited */
	store_free(&s);
	PQfinish(c);
}
END_TEST

static void flushed_cb(void *arg, const struct store_reply *rep)
{
	struct counted *c = arg;
	c->done++;
	if (rep->status == STORE_OK && rep->value && strcmp(rep->value, "true") == 0)
		c->ok++;
}

static char *one_value(PGconn *c, const char *sql)
{
	PGresult *res = PQexec(c, sql);
	ck_assert_msg(PQresultStatus(res) == PGRES_TUPLES_OK, "%s: %s", sql, PQerrorMessage(c));
	char *v = strdup(PQgetvalue(res, 0, 0));
	PQclear(res);
	return v;
}

/* store_flush: waiters that arrive together share one call and each gets STORE_OK; after
 * it, the WAL is flushed at least as far as it was written before (a commit that did not
 * wait for its flush is durable); a store that is gone refuses at once. */
START_TEST(flush_waiters_share_one_durable_commit)
{
	/* the flush commits with the server's synchronous_commit; scripts/test's throwaway
	 * cluster turns it off, so this store's sessions turn it on (as a server would be) */
	char ci[sizeof(conninfo) + 64];
	snprintf(ci, sizeof(ci), "%s options='-c synchronous_commit=on'", conninfo);
	struct store *s = store_new(base, ci, 2);
	struct store_stats st;
	RUN_UNTIL((store_get_stats(s, &st), st.connections_up == 2 && store_schema_version(s) >= 0),
		  20);
	ck_assert_int_eq(st.connections_up, 2);
	int applied = -1, version = -1;
	char *err = NULL;
	ck_assert_int_eq(store_cli_migrate(conninfo, &applied, &version, &err), 0);
	store_refresh_schema_version(s);
	RUN_UNTIL(store_schema_version(s) == version, 10);
	ck_assert_int_eq(store_schema_version(s), version);
	PGconn *c = admin_conn(conninfo);
	PGresult *res = PQexec(c, "CREATE TABLE flushed (x int); SET synchronous_commit = off;"
				  "INSERT INTO flushed VALUES (1)");
	ck_assert_int_eq(PQresultStatus(res), PGRES_COMMAND_OK);
	PQclear(res);
	char *written = one_value(c, "SELECT pg_current_wal_insert_lsn()::text");
	store_get_stats(s, &st);
	unsigned long long q0 = st.queries;
	struct counted n = {0, 0};
	for (int i = 0; i < 5; i++)
		ck_assert_int_eq(store_flush(s, flushed_cb, &n), 0);
	ck_assert_int_eq(n.done, 0); /* never from inside the call */
	RUN_UNTIL(n.done == 5, 10);
	ck_assert_int_eq(n.ok, 5);
	store_get_stats(s, &st);
	ck_assert_int_eq((int)(st.queries - q0), 1);
	char sql[160];
	snprintf(sql, sizeof(sql), "SELECT pg_current_wal_flush_lsn() >= '%s'::pg_lsn", written);
	char *durable = one_value(c, sql);
	ck_assert_str_eq(durable, "t");
	free(durable);
	free(written);
	/* the five shared one durable commit that wrote WAL (a row; an xid alone would have
	 * committed without a flush) */
	char *flushes = one_value(c, "SELECT n FROM store_flushes");
	ck_assert_str_eq(flushes, "1");
	free(flushes);
	PQfinish(c);
	store_free(&s);
	ck_assert_int_eq(store_flush(s, flushed_cb, &n), -1);
}
END_TEST

/* store_stream_read: an answer with events comes after one flush (a row written, a
 * durable commit); an answer without events comes at once, with no flush. */
START_TEST(stream_reads_with_events_wait_for_a_flush)
{
	int applied = -1, version = -1;
	char *err = NULL;
	ck_assert_int_eq(store_cli_migrate(conninfo, &applied, &version, &err), 0);
	struct store *s = connected_store();
	PGconn *c = admin_conn(conninfo);
	PGresult *res = PQexec(c, "INSERT INTO events_log (kind) VALUES ('test.a'), ('test.b')");
	ck_assert_int_eq(PQresultStatus(res), PGRES_COMMAND_OK);
	PQclear(res);
	struct result r = {0};
	ck_assert_int_eq(store_stream_read(s, 0, 10, 65536, result_cb, &r), 0);
	ck_assert(!r.done);
	RUN_UNTIL(r.done, 10);
	ck_assert_int_eq(r.status, STORE_OK);
	ck_assert_ptr_nonnull(strstr(r.value, "test.b"));
	char *flushes = one_value(c, "SELECT n FROM store_flushes");
	ck_assert_str_eq(flushes, "1");
	free(flushes);
	json_t *got = json_loads(r.value, 0, NULL);
	json_int_t last = json_integer_value(json_object_get(got, "last"));
	json_decref(got);
	memset(&r, 0, sizeof(r));
	ck_assert_int_eq(store_stream_read(s, (int64_t)last, 10, 65536, result_cb, &r), 0);
	RUN_UNTIL(r.done, 10);
	ck_assert_int_eq(r.status, STORE_OK);
	ck_assert_ptr_nonnull(strstr(r.value, "\"events\": []"));
	flushes = one_value(c, "SELECT n FROM store_flushes");
	ck_assert_str_eq(flushes, "1");
	free(flushes);
	PQfinish(c);
	store_free(&s);
}
END_TEST

int main(void)
{
	srandom((unsigned)time(NULL) ^ (unsigned)getpid());
	Suite *su = suite_create("store");
	TCase *tc = tcase_create("store");
	tcase_add_checked_fixture(tc, setup, teardown);
	tcase_set_timeout(tc, 60);
	tcase_add_test(tc, migrations_from_empty_and_again);
	tcase_add_test(tc, schema_version_zero_before_migrations);
	tcase_add_test(tc, admin_round_trip_and_error_mapping);
	tcase_add_test(tc, unreachable_database_is_unavailable);
	tcase_add_test(tc, reconnects_after_backends_are_killed);
	tcase_add_test(tc, pending_calls_fail_unavailable_on_free);
	tcase_add_test(tc, callbacks_during_free_cannot_call_the_store);
	tcase_add_test(tc, batches_in_flight_are_limited_and_the_rest_go_together);
	tcase_add_test(tc, flush_waiters_share_one_durable_commit);
	tcase_add_test(tc, stream_reads_with_events_wait_for_a_flush);
	suite_add_tcase(su, tc);
	SRunner *sr = srunner_create(su);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
