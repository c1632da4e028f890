/* contactd: process lifecycle — arguments, config, signals, systemd notify, the loop. */
#include "contactd/app.h"
#include "contactd/chat.h"
#include "contactd/config.h"
#include "contactd/http.h"
#include "contactd/log.h"
#include "contactd/migrate.h"
#include "contactd/ndjson.h"
#include "contactd/outbound.h"
#include "contactd/email.h"
#include "contactd/phone.h"
#include "contactd/routing.h"
#include "contactd/sla.h"
#include "contactd/store.h"
#include "contactd/store_cli.h"
#include "contactd/stream.h"
#include "contactd/webhooks.h"
#include "contactd/worker.h"

#include <event2/event.h>
#include <event2/thread.h>
#include <getopt.h>
#include <signal.h>
#include <sys/resource.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <systemd/sd-daemon.h>
#include <time.h>
#include <unistd.h>

#define DEFAULT_CONFIG	"/etc/contactd/contactd.conf"
#define DRAIN_MAX_S	30
#define JANITOR_MS	500
#define MIGRATE_RETRY_S 10

bool app_ready(const struct app *app, const char **why_r)
{
	if (app->draining) {
		*why_r = "draining";
		return false;
	}
	if (!app->store || !store_available(app->store)) {
		*why_r = "store unreachable";
		return false;
	}
	int v = store_schema_version(app->store);
	if (v < migrate_latest_version()) {
		*why_r = app->migrating ? "migrations running" : "migrations behind";
		return false;
	}
	if (v > migrate_latest_version()) {
		*why_r = "database schema is newer than this binary";
		return false;
	}
	*why_r = "ready";
	return true;
}

static void usage(FILE *out)
{
	fprintf(out,
		"usage: contactd [-c FILE] [--check-config | --migrate | --create-api-token NAME "
		"SCOPE[,SCOPE...] | --version]\n"
		"  -c, --config FILE     config file (default " DEFAULT_CONFIG ")\n"
		"  --check-config        validate the config file and exit (0 ok, 1 wrong)\n"
		"  --migrate             apply the SQL migrations and exit\n"
		"  --create-api-token NAME SCOPES\n"
		"                        print a new API token and exit; scopes: events:write,\n"
		"                        conversations:read, conversations:write, reports:read, "
		"admin\n"
		"  --version             print the version and exit\n");
}

/* ---- the running daemon ------------------------------------------------------------------ */

struct daemon {
	struct app app;
	struct event *ev_hup, *ev_term, *ev_int, *ev_janitor, *ev_watchdog;
	struct timespec drain_started;
	time_t migrate_next;
	int migrate_applied, migrate_version;
	int migrate_rc;
	char *migrate_error;
	bool was_ready;
};

static void set_status(struct daemon *d)
{
	const char *why;
	bool ready = app_ready(&d->app, &why);
	if (ready && d->app.routing)
		routing_store_ready(d->app.routing);
	if (ready && d->app.sla)
		sla_store_ready(d->app.sla);
	if (ready) {
		stream_store_ready(d->app.stream);
		webhooks_store_ready(d->app.webhooks);
	}
	if (ready != d->was_ready) {
		log_info(ready ? "ready" : "not_ready", "reason=\"%s\"", why);
		d->was_ready = ready;
	}
	sd_notifyf(0, "STATUS=%s", ready ? "ready" : why);
}

static void migrate_work(void *arg)
{
	struct daemon *d = arg;
	d->migrate_rc = store_cli_migrate(d->app.cfg->db_conninfo, &d->migrate_applied,
					  &d->migrate_version, &d->migrate_error);
}

static void migrate_done(void *arg)
{
	struct daemon *d = arg;
	d->app.migrating = false;
	if (d->migrate_rc < 0) {
		char q[600];
		log_error("migrate_failed", "retry_in_s=%d error=%s", MIGRATE_RETRY_S,
			  log_quote(q, sizeof(q), d->migrate_error));
		d->migrate_next = time(NULL) + MIGRATE_RETRY_S;
	} else {
		log_info("migrate_done", "applied=%d version=%d", d->migrate_applied,
			 d->migrate_version);
	}
	free(d->migrate_error);
	d->migrate_error = NULL;
	if (store_available(d->app.store))
		store_refresh_schema_version(d->app.store);
	set_status(d);
}

/* Start-up migrations run on a worker: the loop never waits for them. */
static void maybe_migrate(struct daemon *d)
{
	struct app *app = &d->app;
	int v = store_schema_version(app->store);
	if (!app->cfg->db_migrate_auto || app->migrating || app->draining ||
	    !store_available(app->store) || v < 0 || v >= migrate_latest_version() ||
	    time(NULL) < d->migrate_next)
		return;
	log_info("migrate_start", "from_version=%d to_version=%d", v, migrate_latest_version());
	app->migrating = true;
	if (worker_submit(app->workers, migrate_work, migrate_done, d) < 0) {
		app->migrating = false;
		d->migrate_next = time(NULL) + MIGRATE_RETRY_S;
	}
}

static void store_state_cb(void *arg, bool up)
{
	struct daemon *d = arg;
	if (!d->app.cfg->db_migrate_auto && up &&
	    store_schema_version(d->app.store) < migrate_latest_version())
		log_warn("schema_behind", "version=%d want=%d hint=\"run contactd --migrate\"",
			 store_schema_version(d->app.store), migrate_latest_version());
	maybe_migrate(d);
	set_status(d);
}

static void janitor_cb(evutil_socket_t fd, short what, void *arg)
{
	struct daemon *d = arg;
	struct app *app = &d->app;
	maybe_migrate(d);
	if (!app->draining)
		return;
	unsigned pending = (app->http ? http_server_in_flight(app->http) : 0) +
			   (app->chat ? chat_in_flight(app->chat) : 0) +
			   webhooks_in_flight(app->webhooks) + email_in_flight(app->email);
	struct timespec now;
	clock_gettime(CLOCK_MONOTONIC, &now);
	bool timeout = now.tv_sec - d->drain_started.tv_sec >= DRAIN_MAX_S;
	if (pending == 0 && !app->migrating) {
		log_info("drained", "in_flight=0");
		event_base_loopexit(app->base, NULL);
	} else if (timeout) {
		log_warn("drain_timeout", "in_flight=%u", pending);
		event_base_loopexit(app->base, NULL);
	}
}

static void watchdog_cb(evutil_socket_t fd, short what, void *arg)
{
	sd_notify(0, "WATCHDOG=1");
}

static void term_cb(evutil_socket_t sig, short what, void *arg)
{
	struct daemon *d = arg;
	if (d->app.draining) {
		log_warn("signal_again", "signal=%d action=exit_now", (int)sig);
		event_base_loopexit(d->app.base, NULL);
		return;
	}
	log_info("shutdown", "signal=%s", sig == SIGTERM ? "TERM" : "INT");
	sd_notify(0, "STOPPING=1\nSTATUS=draining");
	d->app.draining = true;
	clock_gettime(CLOCK_MONOTONIC, &d->drain_started);
	if (d->app.http)
		http_server_stop_accepting(d->app.http);
	if (d->app.chat)
		chat_stop_accepting(d->app.chat);
	phone_stop_accepting(d->app.phone);
	stream_drain(d->app.stream);
	webhooks_drain(d->app.webhooks);
	email_stop_accepting(d->app.email);
	janitor_cb(-1, 0, d);
}

static void hup_cb(evutil_socket_t sig, short what, void *arg)
{
	struct daemon *d = arg;
	struct app *app = &d->app;
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	sd_notifyf(0, "RELOADING=1\nMONOTONIC_USEC=%llu",
		   (unsigned long long)ts.tv_sec * 1000000ULL +
		       (unsigned long long)ts.tv_nsec / 1000);
	struct config *next = calloc(1, sizeof(*next));
	char *err = NULL;
	char q[1024];
	if (config_load(app->cfg->path, next, &err) < 0) {
		log_error("reload_failed", "action=kept_old_config error=%s",
			  log_quote(q, sizeof(q), err));
		free(err);
		free(next);
		goto out;
	}
	/* every module prepares first; only when all could, all commit */
	struct http_reload *hr = NULL;
	struct chat_reload *cr = NULL;
	struct phone_reload *pr = NULL;
	struct webhooks_reload *wr = NULL;
	struct email_reload *er = NULL;
	if ((app->http && !(hr = http_server_reload_prepare(app->http, next, &err))) ||
	    (app->chat && !(cr = chat_reload_prepare(app->chat, next, &err))) ||
	    (app->phone && !(pr = phone_reload_prepare(app->phone, next, &err))) ||
	    (app->webhooks && !(wr = webhooks_reload_prepare(app->webhooks, next, &err))) ||
	    (app->email && !(er = email_reload_prepare(app->email, next, &err)))) {
		/* one part could not: the parts prepared so far are abandoned, nothing changed */
		if (wr)
			webhooks_reload_abort(app->webhooks, wr);
		if (pr)
			phone_reload_abort(app->phone, pr);
		if (cr)
			chat_reload_abort(app->chat, cr);
		if (hr)
			http_server_reload_abort(app->http, hr);
		goto failed;
	}
	if (hr)
		http_server_reload_commit(app->http, hr);
	if (cr)
		chat_reload_commit(app->chat, cr);
	if (pr)
		phone_reload_commit(app->phone, pr);
	if (wr)
		webhooks_reload_commit(app->webhooks, wr);
	if (er)
		email_reload_commit(app->email, er);
	char changed[512];
	if (config_restart_only_changes(app->cfg, next, changed, sizeof(changed)) > 0)
		log_warn("reload_needs_restart", "keys=%s", changed);
	/* restart-only values stay as they were until the restart */
	struct config *old = app->cfg;
	char *conninfo = next->db_conninfo;
	next->db_conninfo = old->db_conninfo;
	old->db_conninfo = conninfo;
	next->db_pool_size = old->db_pool_size;
	next->db_migrate_auto = old->db_migrate_auto;
	next->log_target = old->log_target;
	app->cfg = next;
	config_free(old);
	free(old);
	/* logged under the old level, so that a switch to a quieter level is still seen */
	log_info("reloaded", "path=%s log_level=%s", next->path, log_level_name(next->log_level));
	log_setup(next->log_level, next->log_target);
	if (app->routing)
		routing_reload(app->routing);
	goto out;
failed:
	log_error("reload_failed", "action=kept_old_config error=%s", log_quote(q, sizeof(q), err));
	free(err);
	config_free(next);
	free(next);
out:
	sd_notify(0, "READY=1");
	set_status(d);
}

/* Connections need descriptors: lift the soft limit towards what max_connections needs. */
static void raise_nofile(long max_connections)
{
	struct rlimit rl;
	if (getrlimit(RLIMIT_NOFILE, &rl) < 0)
		return;
	rlim_t want = (rlim_t)max_connections + 1024;
	if (rl.rlim_cur >= want)
		return;
	rlim_t old = rl.rlim_cur;
	rl.rlim_cur = rl.rlim_max == RLIM_INFINITY || rl.rlim_max > want ? want : rl.rlim_max;
	if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
		log_info("nofile_raised", "from=%llu to=%llu", (unsigned long long)old,
			 (unsigned long long)rl.rlim_cur);
	if (rl.rlim_cur < want)
		log_warn("nofile_low", "limit=%llu max_connections=%ld hint=\"raise LimitNOFILE\"",
			 (unsigned long long)rl.rlim_cur, max_connections);
}

/* Frees whatever was made of D, at exit or after a failed start (each part may be NULL).
 * Connections first; then workers and the store finish what waits on them (their callbacks
 * reply to nobody or to live HTTP requests); the listeners' owners last. */
static void teardown(struct daemon *d)
{
	struct app *app = &d->app;
	ndjson_conn_free_all();
	worker_pool_free(&app->workers);
	store_free(&app->store);
	webhooks_free(&app->webhooks);
	stream_free(&app->stream);
	http_server_free(&app->http);
	phone_free(&app->phone);
	email_free(&app->email);
	sla_free(&app->sla);
	routing_free(&app->routing);
	chat_free(&app->chat);
	outbound_free(&app->outbound);
	struct event *evs[] = {d->ev_hup, d->ev_term, d->ev_int, d->ev_janitor, d->ev_watchdog};
	for (size_t i = 0; i < sizeof(evs) / sizeof(evs[0]); i++)
		if (evs[i])
			event_free(evs[i]);
	event_base_free(app->base);
	free(d->migrate_error);
	config_free(app->cfg);
	free(app->cfg);
}

static int run(struct config *cfg)
{
	struct daemon d;
	memset(&d, 0, sizeof(d));
	struct app *app = &d.app;
	/* app->cfg is always heap-allocated: reload replaces and frees it */
	app->cfg = malloc(sizeof(*app->cfg));
	*app->cfg = *cfg;
	cfg = app->cfg;
	app->started_at = time(NULL);
	signal(SIGPIPE, SIG_IGN);
	raise_nofile(cfg->max_connections);
	evthread_use_pthreads();
	app->base = event_base_new();
	if (!app->base) {
		log_error("start_failed", "reason=\"cannot create event base\"");
		return 1;
	}
	app->workers = worker_pool_new(app->base, 2);
	app->store = store_new(app->base, cfg->db_conninfo, (int)cfg->db_pool_size);
	store_set_state_cb(app->store, store_state_cb, &d);
	char *err = NULL;
	if (!(app->http = http_server_new(app, &err)))
		goto start_failed;
	app->outbound = outbound_new();
	if (!(app->chat = chat_new(app, &err)))
		goto start_failed;
	struct routing_notify notify = {chat_notify_agent, chat_notify_customer, app->chat};
	app->routing = routing_new(app, &notify);
	struct sla_notify sla_notify = {chat_notify_agent, chat_notify_topic, app->chat};
	app->sla = sla_new(app, &sla_notify);
	app->stream = stream_new(app);
	app->webhooks = webhooks_new(app);
	if (!(app->phone = phone_new(app, &err)))
		goto start_failed;
	if (!(app->email = email_new(app, &err)))
		goto start_failed;
	d.ev_hup = evsignal_new(app->base, SIGHUP, hup_cb, &d);
	d.ev_term = evsignal_new(app->base, SIGTERM, term_cb, &d);
	d.ev_int = evsignal_new(app->base, SIGINT, term_cb, &d);
	event_add(d.ev_hup, NULL);
	event_add(d.ev_term, NULL);
	event_add(d.ev_int, NULL);
	d.ev_janitor = event_new(app->base, -1, EV_PERSIST, janitor_cb, &d);
	struct timeval jt = {0, JANITOR_MS * 1000};
	event_add(d.ev_janitor, &jt);
	uint64_t wd_usec = 0;
	if (sd_watchdog_enabled(0, &wd_usec) > 0 && wd_usec > 0) {
		d.ev_watchdog = event_new(app->base, -1, EV_PERSIST, watchdog_cb, NULL);
		struct timeval wt = {(time_t)(wd_usec / 2 / 1000000),
				     (suseconds_t)(wd_usec / 2 % 1000000)};
		event_add(d.ev_watchdog, &wt);
	}
	log_info("started", "version=%s config=%s pid=%d schema_want=%d", CONTACTD_VERSION,
		 cfg->path, (int)getpid(), migrate_latest_version());
	sd_notify(0, "READY=1\nSTATUS=starting");

	event_base_dispatch(app->base);

	teardown(&d);
	log_info("stopped", "pid=%d", (int)getpid());
	return 0;

start_failed:;
	char q[600];
	log_error("start_failed", "error=%s", log_quote(q, sizeof(q), err));
	free(err);
	teardown(&d);
	return 1;
}

int main(int argc, char **argv)
{
	enum { OPT_CHECK = 256, OPT_MIGRATE, OPT_TOKEN, OPT_VERSION };
	static const struct option opts[] = {
	    {"config", required_argument, NULL, 'c'},
	    {"check-config", no_argument, NULL, OPT_CHECK},
	    {"migrate", no_argument, NULL, OPT_MIGRATE},
	    {"create-api-token", no_argument, NULL, OPT_TOKEN},
	    {"version", no_argument, NULL, OPT_VERSION},
	    {"help", no_argument, NULL, 'h'},
	    {NULL, 0, NULL, 0},
	};
	const char *path = DEFAULT_CONFIG;
	int mode = 0, c;
	while ((c = getopt_long(argc, argv, "c:h", opts, NULL)) != -1) {
		switch (c) {
		case 'c':
			path = optarg;
			break;
		case OPT_CHECK:
		case OPT_MIGRATE:
		case OPT_TOKEN:
		case OPT_VERSION:
			if (mode && mode != c) {
				fprintf(stderr,
					"contactd: choose one of --check-config, --migrate, "
					"--create-api-token, --version\n");
				return 2;
			}
			mode = c;
			break;
		case 'h':
			usage(stdout);
			return 0;
		default:
			usage(stderr);
			return 2;
		}
	}
	if (mode == OPT_VERSION) {
		printf("contactd %s (schema %d)\n", CONTACTD_VERSION, migrate_latest_version());
		return 0;
	}
	if ((mode == OPT_TOKEN && argc - optind != 2) || (mode != OPT_TOKEN && optind != argc)) {
		usage(stderr);
		return 2;
	}

	struct config cfg;
	char *err = NULL;
	if (config_load(path, &cfg, &err) < 0) {
		fprintf(stderr, "contactd: %s\n", err);
		free(err);
		return 1;
	}
	if (mode == OPT_CHECK) {
		printf("contactd: %s: configuration ok\n", path);
		config_free(&cfg);
		return 0;
	}
	log_setup(cfg.log_level, mode ? LOG_TARGET_STDERR : cfg.log_target);
	int rc = 0;
	if (mode == OPT_MIGRATE) {
		int applied = 0, version = 0;
		if (store_cli_migrate(cfg.db_conninfo, &applied, &version, &err) < 0) {
			fprintf(stderr, "contactd: migrate failed: %s\n", err);
			free(err);
			rc = 1;
		} else {
			printf("contactd: applied %d migration%s; schema at version %d\n", applied,
			       applied == 1 ? "" : "s", version);
		}
	} else if (mode == OPT_TOKEN) {
		char *token = NULL;
		if (store_cli_create_api_token(cfg.db_conninfo, cfg.db_migrate_auto, argv[optind],
					       argv[optind + 1], &token, &err) < 0) {
			fprintf(stderr, "contactd: %s\n", err);
			free(err);
			rc = 1;
		} else {
			printf("%s\n", token);
			free(token);
		}
	} else {
		return run(&cfg);
	}
	config_free(&cfg);
	return rc;
}
