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

/* The SQL that applies script I in one transaction, under an advisory lock, skipping it
 * when its version is already recorded, and recording it. Malloc'd; caller frees. */
char *migrate_wrap(int i);

/* Blocking: applies every pending migration on CONN (start-up and --migrate only).
 * *applied_r counts the scripts applied now. Returns 0, or -1 with *error_r (static or
 * libpq-owned text valid until the next call). */
int migrate_run_blocking(PGconn *conn, int *applied_r, char **error_r);

#endif
