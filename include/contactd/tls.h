/* tls: OpenSSL server contexts built from the [tls] config section. */
#ifndef CONTACTD_TLS_H
#define CONTACTD_TLS_H

#include <stdbool.h>

struct config;
typedef struct ssl_ctx_st SSL_CTX;

/* A new server context (TLS 1.2 minimum) with the configured certificate and key; with
 * REQUIRE_CLIENT_CERT, peers must present a certificate that verifies against tls.ca_file.
 * Returns NULL with *error_r (malloc'd, caller frees) naming the file that failed. The
 * caller owns the context (SSL_CTX_free). */
SSL_CTX *tls_server_ctx_new(const struct config *cfg, bool require_client_cert, char **error_r);

/* Empties OpenSSL's error queue into one log line (EVENT), so the next connection does not
 * inherit it. */
void tls_log_errors(const char *event);

#endif
