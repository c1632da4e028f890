/* Blocking libpq by design: command-line and worker-thread use only (see store_cli.h). */
#include "contactd/store_cli.h"

#include "contactd/migrate.h"
#include "contactd/secret.h"

#include <jansson.h>
#include <libpq-fe.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static char *dup_error(const char *prefix, const char *msg)
{
	char buf[1024];
	snprintf(buf, sizeof(buf), "%s%s", prefix, msg ? msg : "");
	size_t n = strlen(buf);
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == ' '))
		buf[--n] = '\0';
	return strdup(buf);
}

static PGconn *connect_db(const char *conninfo, char **error_r)
{
	static const char *const keys[] = {"application_name", "connect_timeout", "dbname", NULL};
	const char *vals[] = {"contactd-cli", "10", conninfo, NULL};
	PGconn *conn = PQconnectdbParams(keys, vals, 1);
	if (!conn || PQstatus(conn) != CONNECTION_OK) {
		*error_r = dup_error("cannot connect to the database: ",
				     conn ? PQerrorMessage(conn) : "out of memory");
		PQfinish(conn);
		return NULL;
	}
	PQclear(PQexec(conn, "SET client_min_messages = warning"));
	return conn;
}

static int schema_version(PGconn *conn)
{
	PGresult *res = PQexec(conn, "SELECT coalesce(max(version), 0) FROM schema_migrations");
	int v = PQresultStatus(res) == PGRES_TUPLES_OK ? atoi(PQgetvalue(res, 0, 0)) : 0;
	PQclear(res);
	return v;
}

int store_cli_migrate(const char *conninfo, int *applied_r, int *version_r, char **error_r)
{
	*applied_r = 0;
	PGconn *conn = connect_db(conninfo, error_r);
	if (!conn)
		return -1;
	int rc = migrate_run_blocking(conn, applied_r, error_r);
	*version_r = schema_version(conn);
	PQfinish(conn);
	return rc;
}

int store_cli_create_api_token(const char *conninfo, int migrate, const char *name,
			       const char *scopes, char **token_r, char **error_r)
{
	*token_r = NULL;
	PGconn *conn = connect_db(conninfo, error_r);
	if (!conn)
		return -1;
	int applied;
	if (migrate && migrate_run_blocking(conn, &applied, error_r) < 0) {
		PQfinish(conn);
		return -1;
	}
	if (schema_version(conn) < migrate_latest_version()) {
		*error_r =
		    dup_error("the database schema is not current: run contactd --migrate", NULL);
		PQfinish(conn);
		return -1;
	}
	char tok[SECRET_TOKEN_LEN + 1], hash[SECRET_SHA256_HEXLEN + 1];
	if (secret_token_new(tok) < 0) {
		*error_r = dup_error("no randomness available", NULL);
		PQfinish(conn);
		return -1;
	}
	secret_sha256_hex(tok, strlen(tok), hash);
	json_t *sc = json_array();
	char *copy = strdup(scopes), *save = NULL;
	for (char *s = strtok_r(copy, ",", &save); s; s = strtok_r(NULL, ",", &save)) {
		while (*s == ' ')
			s++;
		json_array_append_new(sc, json_string(s));
	}
	free(copy);
	json_t *body = json_pack("{s:s, s:o, s:s}", "name", name, "scopes", sc, "token_hash", hash);
	char *text = json_dumps(body, JSON_COMPACT);
	json_decref(body);
	const char *params[2] = {"api-tokens", text};
	PGresult *res = PQexecParams(conn, "SELECT cd_admin_create($1, $2::jsonb)", 2, NULL, params,
				     NULL, NULL, 0);
	free(text);
	int rc = 0;
	if (PQresultStatus(res) != PGRES_TUPLES_OK) {
		*error_r = dup_error("cannot create the token: ",
				     PQresultErrorField(res, PG_DIAG_MESSAGE_PRIMARY));
		rc = -1;
	} else {
		*token_r = strdup(tok);
	}
	PQclear(res);
	PQfinish(conn);
	return rc;
}
