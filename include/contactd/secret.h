/* secret: password hashes (Argon2id), API tokens, constant-time comparison. */
#ifndef CONTACTD_SECRET_H
#define CONTACTD_SECRET_H

#include <stdbool.h>
#include <stddef.h>

#define SECRET_HASH_MAX	     128 /* an encoded Argon2id hash fits */
#define SECRET_TOKEN_LEN     47	 /* "ctd_" + 43 base64url chars (32 random bytes) */
#define SECRET_SHA256_HEXLEN 64

/* Slow (tens of ms): call from a worker. Writes the encoded hash to OUT. Returns 0 / -1. */
int secret_password_hash(const char *password, char out[SECRET_HASH_MAX]);
/* Slow: call from a worker. True when PASSWORD matches ENCODED. */
bool secret_password_verify(const char *encoded, const char *password);

/* A new random API token, NUL-terminated. Returns 0 / -1 (no randomness). */
int secret_token_new(char out[SECRET_TOKEN_LEN + 1]);
/* Hex SHA-256 of S, NUL-terminated: how tokens are stored and looked up. */
void secret_sha256_hex(const char *s, size_t len, char out[SECRET_SHA256_HEXLEN + 1]);
/* Constant-time comparison of two buffers of the same length N. */
bool secret_equal(const void *a, const void *b, size_t n);

#endif
