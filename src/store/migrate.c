/* Start-up and CLI only: this file uses blocking libpq calls by design. */
#include "contactd/migrate.h"

#include "contactd/log.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Any constant that no other advisory lock of ours uses: "ctdmigr" in ASCII. */
#define MIGRATE_LOCK_KEY "6874111109105103"

int migrate_latest_version(void)
{
	return migrate_script_count > 0 ? migrate_scripts[migrate_script_count - 1].version : 0;
}

static char *fmt_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static char *fmt_error(const char *fmt, ...)
{
	char buf[1024];
	va_list ap;
	va_start(ap, fmt);
	vsnprintf(buf, sizeof(buf), fmt, ap);
	va_end(ap);
	size_t n = strlen(buf);
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		buf[--n] = '\0';
	return strdup(buf);
}

/* Runs SQL; returns 0 when it succeeded, else -1 with *error_r. *res_r gets the result
 * when the caller wants it (and must PQclear it). */
static int exec(PGconn *conn, const char *what, const char *sql, int nparams,
		const char *const *params, PGresult **res_r, char **error_r)
{
	PGresult *res = nparams ? PQexecParams(conn, sql, nparams, NULL, params, NULL, NULL, 0)
				: PQexec(conn, sql);
	ExecStatusType st = PQresultStatus(res);
	if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK) {
		*error_r = fmt_error("%s: %s", what, PQerrorMessage(conn));
		PQclear(res);
		return -1;
	}
	if (res_r)
		*res_r = res;
	else
		PQclear(res);
	return 0;
}

static int apply_one(PGconn *conn, const struct migrate_script *m, int *applied_r, char **error_r)
{
	char ver[16];
	snprintf(ver, sizeof(ver), "%d", m->version);
	const char *params[2] = {ver, m->name};
	PGresult *res = NULL;
	if (exec(conn, m->name, "BEGIN", 0, NULL, NULL, error_r) < 0)
		return -1;
	if (exec(conn, m->name, "SELECT 1 FROM schema_migrations WHERE version = $1", 1, params,
		 &res, error_r) < 0)
		goto fail;
	bool done = PQntuples(res) > 0;
	PQclear(res);
	if (!done) {
		if (exec(conn, m->name, m->sql, 0, NULL, NULL, error_r) < 0)
			goto fail;
		if (exec(conn, m->name,
			 "INSERT INTO schema_migrations (version, name) VALUES ($1, $2)", 2, params,
			 NULL, error_r) < 0)
			goto fail;
	}
	if (exec(conn, m->name, "COMMIT", 0, NULL, NULL, error_r) < 0)
		goto fail;
	if (!done) {
		(*applied_r)++;
		log_info("migration_applied", "version=%d name=%s", m->version, m->name);
	}
	return 0;
fail:
	PQclear(PQexec(conn, "ROLLBACK"));
	return -1;
}

int migrate_run_blocking(PGconn *conn, int *applied_r, char **error_r)
{
	*applied_r = 0;
	*error_r = NULL;
	PQclear(PQexec(conn, "SET client_min_messages = warning"));
	if (exec(conn, "lock", "SELECT pg_advisory_lock(" MIGRATE_LOCK_KEY ")", 0, NULL, NULL,
		 error_r) < 0)
		return -1;
	int rc = exec(conn, "schema_migrations",
		      "CREATE TABLE IF NOT EXISTS schema_migrations ("
		      " version int PRIMARY KEY,"
		      " name text NOT NULL,"
		      " applied_at timestamptz NOT NULL DEFAULT now())",
		      0, NULL, NULL, error_r);
	for (int i = 0; rc == 0 && i < migrate_script_count; i++)
		rc = apply_one(conn, &migrate_scripts[i], applied_r, error_r);
	PQclear(PQexec(conn, "SELECT pg_advisory_unlock(" MIGRATE_LOCK_KEY ")"));
	return rc;
}
