/* idmap against a brute-force reference under random inserts and deletes. */
#include "contactd/idmap.h"

#include <check.h>
#include <stdint.h>
#include <stdlib.h>

#define N 512

START_TEST(random_against_reference)
{
	struct idmap *m = idmap_new();
	static void *ref[N];
	static int tag[N];
	srandom(42);
	for (int step = 0; step < 200000; step++) {
		int k = (int)(random() % N);
		int64_t key = (int64_t)k * 1000003 - 5000; /* spread, some negative */
		if (random() % 3 == 0) {
			idmap_set(m, key, NULL);
			ref[k] = NULL;
		} else {
			idmap_set(m, key, &tag[k]);
			ref[k] = &tag[k];
		}
		int probe = (int)(random() % N);
		ck_assert_ptr_eq(idmap_get(m, (int64_t)probe * 1000003 - 5000), ref[probe]);
	}
	size_t count = 0;
	for (int k = 0; k < N; k++) {
		ck_assert_ptr_eq(idmap_get(m, (int64_t)k * 1000003 - 5000), ref[k]);
		count += ref[k] != NULL;
	}
	ck_assert_uint_eq(idmap_count(m), count);
	idmap_free(&m);
	ck_assert_ptr_null(m);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("idmap");
	TCase *tc = tcase_create("idmap");
	tcase_add_test(tc, random_against_reference);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
