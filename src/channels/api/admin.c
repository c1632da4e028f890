/* The administration API of SPEC §4: skills, sla-policies, queues, agents, inboxes and
 * api-tokens. Field validation lives in the store's cd_admin_* functions (sql/); this file
 * turns HTTP into those calls and does what must not reach the database in clear: agent
 * passwords are hashed (on a worker) and API tokens are generated and hashed here. */
#include "api_internal.h"
#include "contactd/app.h"
#include "contactd/log.h"
#include "contactd/routing.h"
#include "contactd/secret.h"
#include "contactd/store.h"
#include "contactd/worker.h"

#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ADMIN_DEFAULT_LIMIT 50
#define ADMIN_MAX_LIMIT	    500
#define ADMIN_MAX_KEY	    320
#define PASSWORD_MIN	    8
#define PASSWORD_MAX	    1024

static const char *const kinds[] = {"skills", "sla-policies", "queues",
				    "agents", "inboxes",      "api-tokens"};

bool admin_is_kind(const char *seg)
{
	for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
		if (strcmp(seg, kinds[i]) == 0)
			return true;
	return false;
}

/* What a pending admin request carries between its steps. */
struct admin_op {
	json_t *body;
	char *token; /* api-tokens create: the clear token, returned once */
	char password_hash[SECRET_HASH_MAX];
	char *password;
	int hash_rc;
	int status_ok; /* 200 or 201 */
	struct api_req *r;
};

static void op_free(void *p)
{
	struct admin_op *op = p;
	json_decref(op->body);
	if (op->token) {
		OPENSSL_cleanse(op->token, strlen(op->token));
		free(op->token);
	}
	if (op->password) {
		OPENSSL_cleanse(op->password, strlen(op->password));
		free(op->password);
	}
	OPENSSL_cleanse(op->password_hash, sizeof(op->password_hash));
	free(op);
}

static struct admin_op *op_new(struct api_req *r)
{
	struct admin_op *op = calloc(1, sizeof(*op));
	op->r = r;
	r->data = op;
	r->data_free = op_free;
	return op;
}

static const char *kind(struct api_req *r);

static void done_cb(void *arg, const struct store_reply *rep)
{
	struct api_req *r = arg;
	struct admin_op *op = r->data;
	if (rep->status != STORE_OK) {
		api_reply_store_error(r, rep);
		return;
	}
	if (!rep->value) {
		api_reply_error(r, 404, "not_found", "not found", NULL);
		return;
	}
	if (r->method != EVHTTP_REQ_GET && r->method != EVHTTP_REQ_HEAD &&
	    (strcmp(kind(r), "skills") == 0 || strcmp(kind(r), "queues") == 0 ||
	     strcmp(kind(r), "agents") == 0) &&
	    r->app->routing)
		routing_resync(r->app->routing); /* what routing decides on changed */
	if (r->method != EVHTTP_REQ_GET && r->method != EVHTTP_REQ_HEAD &&
	    strcmp(kind(r), "api-tokens") == 0)
		api_token_cache_clear(r->srv);
	if (op && op->token) {
		json_t *obj = json_loads(rep->value, 0, NULL);
		if (obj) {
			json_object_set_new(obj, "token", json_string(op->token));
			api_reply_json(r, op->status_ok, obj);
			return;
		}
	}
	api_reply_text(r, op && op->status_ok ? op->status_ok : 200, rep->value);
}

static void call(struct api_req *r, enum store_query q, int n, const char *const *params)
{
	if (store_call(r->app->store, q, n, params, done_cb, r) < 0)
		api_reply_unavailable(r);
}

static const char *kind(struct api_req *r)
{
	return r->segs[1];
}

static void send_write(struct api_req *r)
{
	struct admin_op *op = r->data;
	char *text = json_dumps(op->body, JSON_COMPACT);
	if (!text) {
		api_reply_error(r, 500, "internal", "cannot encode body", NULL);
		return;
	}
	if (r->nsegs == 2) {
		const char *p[2] = {kind(r), text};
		call(r, STORE_Q_ADMIN_CREATE, 2, p);
	} else {
		const char *p[3] = {kind(r), r->segs[2], text};
		call(r, STORE_Q_ADMIN_UPDATE, 3, p);
	}
	OPENSSL_cleanse(text, strlen(text));
	free(text);
}

static void hash_work(void *arg)
{
	struct admin_op *op = arg;
	op->hash_rc = secret_password_hash(op->password, op->password_hash);
}

static void hash_done(void *arg)
{
	struct admin_op *op = arg;
	struct api_req *r = op->r;
	if (op->hash_rc < 0) {
		log_error("password_hash_failed", "kind=agents");
		api_reply_error(r, 500, "internal", "cannot hash the password", NULL);
		return;
	}
	json_object_set_new(op->body, "password_hash", json_string(op->password_hash));
	send_write(r);
}

/* POST or PUT: read the body, then hash a password or make a token where needed. */
static void handle_write(struct api_req *r, int status_ok)
{
	json_t *body = api_read_object(r);
	if (!body)
		return;
	struct admin_op *op = op_new(r);
	op->body = body;
	op->status_ok = status_ok;
	if (json_object_get(body, "password_hash") || json_object_get(body, "token_hash")) {
		api_reply_error(r, 400, "invalid", "password_hash: unknown field", "password_hash");
		return;
	}
	if (strcmp(kind(r), "api-tokens") == 0) {
		if (json_object_get(body, "token")) {
			api_reply_error(r, 400, "invalid",
					"token: set by the server, must not be sent", "token");
			return;
		}
		if (r->nsegs == 2) {
			char tok[SECRET_TOKEN_LEN + 1], hash[SECRET_SHA256_HEXLEN + 1];
			if (secret_token_new(tok) < 0) {
				api_reply_error(r, 500, "internal", "no randomness", NULL);
				return;
			}
			secret_sha256_hex(tok, strlen(tok), hash);
			op->token = strdup(tok);
			OPENSSL_cleanse(tok, sizeof(tok));
			json_object_set_new(body, "token_hash", json_string(hash));
		}
	}
	json_t *pw = json_object_get(body, "password");
	if (strcmp(kind(r), "agents") == 0 && pw) {
		const char *s = json_string_value(pw);
		size_t n = s ? strlen(s) : 0;
		if (!s || n < PASSWORD_MIN || n > PASSWORD_MAX) {
			api_reply_error(r, 400, "invalid",
					"password: must be a string of 8 to 1024 characters",
					"password");
			return;
		}
		op->password = strdup(s);
		json_object_del(body, "password");
		if (worker_submit(r->app->workers, hash_work, hash_done, op) < 0)
			api_reply_unavailable(r);
		return;
	}
	send_write(r);
}

static void handle_list(struct api_req *r)
{
	const char *lim = api_query(r, "limit");
	const char *after = api_query(r, "after");
	long n = ADMIN_DEFAULT_LIMIT;
	if (lim) {
		char *end;
		n = strtol(lim, &end, 10);
		if (!*lim || *end || n < 1 || n > ADMIN_MAX_LIMIT) {
			api_reply_error(r, 400, "invalid",
					"limit: must be an integer from 1 to 500", "limit");
			return;
		}
	}
	char nbuf[16];
	snprintf(nbuf, sizeof(nbuf), "%ld", n);
	const char *p[3] = {kind(r), after, nbuf};
	call(r, STORE_Q_ADMIN_LIST, 3, p);
}

static void method_not_allowed(struct api_req *r, const char *allow)
{
	evhttp_add_header(evhttp_request_get_output_headers(r->req), "Allow", allow);
	api_reply_error(r, 405, "method_not_allowed", "method not allowed here", NULL);
}

void admin_handle(struct api_req *r)
{
	if (r->nsegs == 2) {
		if (r->method == EVHTTP_REQ_GET || r->method == EVHTTP_REQ_HEAD)
			handle_list(r);
		else if (r->method == EVHTTP_REQ_POST)
			handle_write(r, 201);
		else
			method_not_allowed(r, "GET, POST");
		return;
	}
	if (strlen(r->segs[2]) > ADMIN_MAX_KEY) {
		api_reply_error(r, 404, "not_found", "no such object", NULL);
		return;
	}
	const char *p[2] = {kind(r), r->segs[2]};
	switch (r->method) {
	case EVHTTP_REQ_GET:
	case EVHTTP_REQ_HEAD:
		call(r, STORE_Q_ADMIN_GET, 2, p);
		break;
	case EVHTTP_REQ_PUT:
		handle_write(r, 200);
		break;
	case EVHTTP_REQ_DELETE:
		call(r, STORE_Q_ADMIN_DELETE, 2, p);
		break;
	default:
		method_not_allowed(r, "GET, PUT, DELETE");
		break;
	}
}
