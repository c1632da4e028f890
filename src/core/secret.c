#include "contactd/secret.h"

#include <argon2.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdio.h>
#include <string.h>

/* OWASP's Argon2id recommendation: 19 MiB, 2 passes, 1 lane. */
#define ARGON2_T_COST 2
#define ARGON2_M_COST (19 * 1024)
#define ARGON2_LANES  1
#define SALT_LEN      16
#define HASH_LEN      32

int secret_password_hash(const char *password, char out[SECRET_HASH_MAX])
{
	unsigned char salt[SALT_LEN];
	if (RAND_bytes(salt, sizeof(salt)) != 1)
		return -1;
	int rc = argon2id_hash_encoded(ARGON2_T_COST, ARGON2_M_COST, ARGON2_LANES, password,
				       strlen(password), salt, sizeof(salt), HASH_LEN, out,
				       SECRET_HASH_MAX);
	return rc == ARGON2_OK ? 0 : -1;
}

bool secret_password_verify(const char *encoded, const char *password)
{
	if (!encoded || strncmp(encoded, "$argon2id$", 10) != 0)
		return false;
	return argon2id_verify(encoded, password, strlen(password)) == ARGON2_OK;
}

int secret_token_new(char out[SECRET_TOKEN_LEN + 1])
{
	unsigned char raw[32];
	if (RAND_bytes(raw, sizeof(raw)) != 1)
		return -1;
	static const char b64url[] =
	    "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	memcpy(out, "ctd_", 4);
	size_t o = 4;
	unsigned acc = 0;
	int bits = 0;
	for (size_t i = 0; i < sizeof(raw); i++) {
		acc = (acc << 8) | raw[i];
		bits += 8;
		while (bits >= 6) {
			bits -= 6;
			out[o++] = b64url[(acc >> bits) & 0x3f];
		}
	}
	if (bits > 0)
		out[o++] = b64url[(acc << (6 - bits)) & 0x3f];
	out[o] = '\0';
	OPENSSL_cleanse(raw, sizeof(raw));
	return o == SECRET_TOKEN_LEN ? 0 : -1;
}

void secret_sha256_hex(const char *s, size_t len, char out[SECRET_SHA256_HEXLEN + 1])
{
	unsigned char md[32];
	unsigned int mdlen = 0;
	EVP_Digest(s, len, md, &mdlen, EVP_sha256(), NULL);
	for (unsigned i = 0; i < 32; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
	out[SECRET_SHA256_HEXLEN] = '\0';
}

bool secret_equal(const void *a, const void *b, size_t n)
{
	return CRYPTO_memcmp(a, b, n) == 0;
}
