#include "contactd/tls.h"

#include "contactd/config.h"
#include "contactd/log.h"

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <string.h>

static char *ssl_error(const char *what, const char *file)
{
	char buf[512], reason[256] = "unknown error";
	unsigned long e = ERR_get_error();
	if (e)
		ERR_error_string_n(e, reason, sizeof(reason));
	ERR_clear_error();
	snprintf(buf, sizeof(buf), "%s %s: %s", what, file, reason);
	return strdup(buf);
}

SSL_CTX *tls_server_ctx_new(const struct config *cfg, bool require_client_cert, char **error_r)
{
	ERR_clear_error();
	SSL_CTX *ctx = SSL_CTX_new(TLS_server_method());
	if (!ctx) {
		*error_r = ssl_error("cannot create", "TLS context");
		return NULL;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
				     SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
	if (SSL_CTX_use_certificate_chain_file(ctx, cfg->tls_cert_file) != 1) {
		*error_r = ssl_error("cannot load tls.cert_file", cfg->tls_cert_file);
		goto fail;
	}
	if (SSL_CTX_use_PrivateKey_file(ctx, cfg->tls_key_file, SSL_FILETYPE_PEM) != 1) {
		*error_r = ssl_error("cannot load tls.key_file", cfg->tls_key_file);
		goto fail;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		*error_r = ssl_error("tls.key_file does not match", cfg->tls_cert_file);
		goto fail;
	}
	if (require_client_cert) {
		if (SSL_CTX_load_verify_locations(ctx, cfg->tls_ca_file, NULL) != 1) {
			*error_r = ssl_error("cannot load tls.ca_file", cfg->tls_ca_file);
			goto fail;
		}
		SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT, NULL);
	}
	return ctx;
fail:
	SSL_CTX_free(ctx);
	return NULL;
}

void tls_log_errors(const char *event)
{
	unsigned long e;
	char reason[256];
	while ((e = ERR_get_error()) != 0) {
		ERR_error_string_n(e, reason, sizeof(reason));
		char q[300];
		log_debug(event, "ssl_error=%s", log_quote(q, sizeof(q), reason));
	}
}
