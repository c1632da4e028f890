/* Private to the HTTP API: one request's context and the helpers handlers reply with. */
#ifndef CONTACTD_API_INTERNAL_H
#define CONTACTD_API_INTERNAL_H

#include <event2/http.h>
#include <event2/keyvalq_struct.h>
#include <jansson.h>
#include <stdbool.h>

#include "contactd/secret.h"
#include "contactd/store.h"

struct app;
struct http_server;

#define API_MAX_SEGS 6

/* One request in flight. Created by the dispatcher; freed by exactly one api_reply_*() call,
 * which every handler path must end in (possibly later, from a store or worker callback). */
struct api_req {
	struct http_server *srv;
	struct app *app;
	struct evhttp_request *req;
	enum evhttp_cmd_type method;
	char *pathbuf; /* decoded path, split in place into segs */
	char *segs[API_MAX_SEGS];
	int nsegs;
	struct evkeyvalq query;
	json_t *token; /* the caller's token {id, name, scopes}, NULL when none needed */
	char token_hash[SECRET_SHA256_HEXLEN +
			1]; /* hex SHA-256 of the bearer token, while authenticating */
	const char *scope;
	void (*handler)(struct api_req *r);
	void *data; /* the handler's own, freed by data_free when set */
	void (*data_free)(void *data);
	struct api_req *next_waiter; /* waiting for the same token lookup (http.c) */
};

/* Replies and frees R. BODY is stolen (may be NULL for an empty body). */
void api_reply_json(struct api_req *r, int status, json_t *body);
/* Replies with TEXT, which is already JSON. */
void api_reply_text(struct api_req *r, int status, const char *text);
/* {"error":{"code":CODE,"message":MESSAGE[,"field":FIELD]}} with STATUS; frees R. */
void api_reply_error(struct api_req *r, int status, const char *code, const char *message,
		     const char *field);
/* Maps a failed store reply to its HTTP error; frees R. */
void api_reply_store_error(struct api_req *r, const struct store_reply *rep);
/* 503 unavailable with Retry-After; frees R. */
void api_reply_unavailable(struct api_req *r);

/* Parses the request body as one JSON object. Returns it (caller owns), or NULL after
 * replying 400 (R is then freed). */
json_t *api_read_object(struct api_req *r);

/* The decoded value of query parameter NAME, or NULL. */
const char *api_query(struct api_req *r, const char *name);

/* Forgets every cached token lookup (after an api-tokens write: a revoked token or a
 * changed scope counts from the next request). */
void api_token_cache_clear(struct http_server *srv);

/* Handlers (admin.c). */
bool admin_is_kind(const char *seg);
void admin_handle(struct api_req *r);

#endif
