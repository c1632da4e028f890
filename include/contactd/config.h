/* config: the INI config file. One table (src/core/config.c) names every key with its
 * type, default, bounds and whether SIGHUP may change it; the same table parses, fills
 * defaults, validates and dumps. */
#ifndef CONTACTD_CONFIG_H
#define CONTACTD_CONFIG_H

#include <stdbool.h>
#include <stdio.h>

struct config {
	char *path; /* the file it was read from (owned) */

	/* [daemon] */
	int log_level;	/* enum log_level */
	int log_target; /* enum log_target */

	/* [database] */
	char *db_conninfo;
	long db_pool_size;
	bool db_migrate_auto; /* migrate = auto | off */

	/* [listen]: "host:port", "[v6]:port" or "" (off) */
	char *listen_client, *listen_client_tls;
	char *listen_phone, *listen_phone_tls;
	char *listen_lmtp, *listen_smtp;
	char *listen_http, *listen_https;

	/* [tls] */
	char *tls_cert_file, *tls_key_file, *tls_ca_file;
	char *tls_require_client_cert; /* comma separated listener names */

	/* [limits] */
	long max_frame_bytes;
	long max_email_bytes;
	long max_connections;
	long hello_timeout_s;
	long max_http_body_bytes; /* contactd extension: HTTP request body limit */
	long http_timeout_s;	  /* contactd extension: HTTP read/write idle timeout */

	/* [routing] */
	char *routing_default_queue;
	long offer_timeout_s;
	long reject_cooldown_s;
	long sticky_agent_s;

	/* [chat] */
	char *chat_identity_secret;

	/* [email] */
	char *email_relay;
	long email_retry_base_s; /* first retry after this; doubles each attempt */
	long email_max_attempts; /* then the reply is failed */

	/* [webhooks] */
	char *webhooks_urls;
	char *webhooks_secret;
};

/* Fills *cfg with every default (strings are owned, "" when empty). */
void config_defaults(struct config *cfg);

/* Reads PATH into a fresh *cfg (defaults first, then the file), then validates the whole.
 * Returns 0, or -1 with *error_r set to a malloc'd "FILE:LINE: key 'section.key': why"
 * (LINE 0 for problems that are not on one line, e.g. a missing file or a cross-key rule);
 * on failure *cfg holds nothing to free. */
int config_load(const char *path, struct config *cfg, char **error_r);

/* Frees what *cfg owns; cfg may be NULL. */
void config_free(struct config *cfg);

/* Names the keys whose values differ between OLD and NEW and that SIGHUP cannot change
 * (restart-only). Writes a comma separated list to BUF; returns the count. */
int config_restart_only_changes(const struct config *old_cfg, const struct config *new_cfg,
				char *buf, size_t bufsz);

/* Writes the effective config as INI, secrets shown as "(set)". */
void config_dump(const struct config *cfg, FILE *out);

/* True when NAME (client, client_tls, phone, phone_tls, lmtp, smtp, http, https) is listed
 * in tls.require_client_cert. */
bool config_requires_client_cert(const struct config *cfg, const char *listener);

/* Splits "host:port" / "[v6]:port" into HOST (size hostsz) and *port_r. Returns 0 or -1. */
int config_parse_address(const char *addr, char *host, size_t hostsz, int *port_r);

#endif
