/* Private to the HTTP API: the conversation routes of SPEC §4 (conversations.c). */
#ifndef CONTACTD_API_CONVERSATIONS_H
#define CONTACTD_API_CONVERSATIONS_H

#include "api_internal.h"

enum conv_api_claim {
	CONV_API_NOT_MINE,     /* not one of these paths: nothing was done */
	CONV_API_AUTHENTICATE, /* r->scope and r->handler are set: authenticate, then run it */
	CONV_API_ANSWERED,     /* answered already (405); R is freed */
};

/* Looks at R's path and method: GET /v1/conversations[/{id}], POST
 * /v1/conversations/{id}/{messages|transfer|escalate|resolve|survey}, GET
 * /v1/stats/realtime. */
enum conv_api_claim conv_api_claim(struct api_req *r);

#endif
