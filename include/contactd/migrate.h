/* migrate: the SQL migrations in sql/, compiled into the binary. */
#ifndef CONTACTD_MIGRATE_H
#define CONTACTD_MIGRATE_H

#include <libpq-fe.h>

struct migrate_script {
	int version;
	const char *name; /* file name, e.g. "0001_init.sql" */
	const char *sql;
};

extern const struct migrate_script migrate_scripts[]; /* in version order */
extern const int migrate_script_count;

/* The newest version this binary knows. */
int migrate_latest_version(void);

/* Blocking: applies every pending migration on CONN (start-up and --migrate only).
 * *applied_r counts the scripts applied now. Each script runs in one transaction that also
 * records its version, under an advisory lock so that several nodes may start at once;
 * scripts already recorded are skipped. Returns 0, or -1 with *error_r malloc'd (the
 * caller frees it) naming the script and PostgreSQL's message. */
int migrate_run_blocking(PGconn *conn, int *applied_r, char **error_r);

#endif
