/* libFuzzer target: the config parser must never crash, leak or hang on any file. */
#include "contactd/config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static char path[64];
	if (!path[0])
		snprintf(path, sizeof(path), "/tmp/contactd-fuzz-config.%d", (int)getpid());
	FILE *f = fopen(path, "wb");
	if (!f)
		return 0;
	fwrite(data, 1, size, f);
	fclose(f);
	struct config cfg;
	char *err = NULL;
	if (config_load(path, &cfg, &err) == 0)
		config_free(&cfg);
	free(err);
	return 0;
}
