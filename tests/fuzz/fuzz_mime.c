/* libFuzzer target: the MIME normaliser fed arbitrary bytes as one mail. It must never
 * crash, leak or hang, and always give a record with a Message-ID and a UTF-8 body. */
#include "contactd/email.h"

#include <stdint.h>
#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	json_t *r = email_mime_parse((const char *)data, size, 4096);
	if (!r || !json_string_value(json_object_get(r, "message_id")) ||
	    !json_string_value(json_object_get(r, "body")))
		abort();
	json_decref(r);
	return 0;
}
