/* Private to the HTTP API: inbound events and customers (events.c). */
#ifndef CONTACTD_API_EVENTS_H
#define CONTACTD_API_EVENTS_H

#include "api_internal.h"

enum events_api_claim {
	EVENTS_API_NOT_MINE,	 /* not one of these paths: nothing was done */
	EVENTS_API_AUTHENTICATE, /* r->scope and r->handler are set: authenticate, then run it */
	EVENTS_API_ANSWERED,	 /* answered already (405); R is freed */
};

/* POST /v1/events, POST /v1/phone/events, GET /v1/customers/{id}, POST
 * /v1/customers/{id}/merge and /unmerge. */
enum events_api_claim events_api_claim(struct api_req *r);

#endif
