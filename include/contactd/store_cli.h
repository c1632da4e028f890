/* store_cli: the blocking database work of the command line (--migrate,
 * --create-api-token) and of start-up migrations on a worker thread. Never on the loop. */
#ifndef CONTACTD_STORE_CLI_H
#define CONTACTD_STORE_CLI_H

/* Connects to CONNINFO and applies pending migrations. *applied_r counts them, *version_r
 * is the schema version afterwards. Returns 0, or -1 with *error_r malloc'd. */
int store_cli_migrate(const char *conninfo, int *applied_r, int *version_r, char **error_r);

/* Creates API token NAME with SCOPES (comma separated) and returns the clear token in
 * *token_r (malloc'd; it is shown once and only its hash is stored). Applies pending
 * migrations first when MIGRATE is set. Returns 0, or -1 with *error_r malloc'd. */
int store_cli_create_api_token(const char *conninfo, int migrate, const char *name,
			       const char *scopes, char **token_r, char **error_r);

#endif
