/* outbound: each channel's message goes to that channel's implementation, and a channel
 * nobody serves is refused (never silently "delivered"). */
#include "contactd/outbound.h"

#include <check.h>
#include <stdio.h>
#include <string.h>

struct seen {
	int calls;
	int64_t conversation;
	char channel[16];
};

static int record(void *arg, const struct outbound_msg *m)
{
	struct seen *s = arg;
	s->calls++;
	s->conversation = m->conversation;
	snprintf(s->channel, sizeof(s->channel), "%s", m->channel);
	return 0;
}

static int refuse(void *arg, const struct outbound_msg *m)
{
	(void)m;
	((struct seen *)arg)->calls++;
	return -1;
}

START_TEST(routes_by_channel)
{
	struct outbound *o = outbound_new();
	struct seen chat = {0}, email = {0};
	ck_assert_int_eq(outbound_register(o, "chat", record, &chat), 0);
	ck_assert_int_eq(outbound_register(o, "email", record, &email), 0);
	struct outbound_msg m = {.conversation = 7, .channel = "email", .body = "hi"};
	ck_assert_int_eq(outbound_deliver(o, &m), 0);
	ck_assert_int_eq(email.calls, 1);
	ck_assert_int_eq(chat.calls, 0);
	ck_assert_str_eq(email.channel, "email");
	m.channel = "chat";
	m.conversation = 8;
	ck_assert_int_eq(outbound_deliver(o, &m), 0);
	ck_assert_int_eq(chat.calls, 1);
	ck_assert_int_eq(chat.conversation, 8);
	outbound_free(&o);
	ck_assert_ptr_null(o);
}
END_TEST

START_TEST(unserved_channel_is_refused)
{
	struct outbound *o = outbound_new();
	struct seen chat = {0};
	outbound_register(o, "chat", record, &chat);
	struct outbound_msg m = {.conversation = 1, .channel = "sms"};
	ck_assert_int_eq(outbound_deliver(o, &m), -1);
	m.channel = NULL;
	ck_assert_int_eq(outbound_deliver(o, &m), -1);
	ck_assert_int_eq(chat.calls, 0);
	outbound_free(&o);
}
END_TEST

START_TEST(register_replaces_and_reports_failure)
{
	struct outbound *o = outbound_new();
	struct seen a = {0}, b = {0};
	outbound_register(o, "chat", record, &a);
	outbound_register(o, "chat", refuse, &b);
	struct outbound_msg m = {.conversation = 1, .channel = "chat"};
	ck_assert_int_eq(outbound_deliver(o, &m), -1); /* the implementation's own answer */
	ck_assert_int_eq(a.calls, 0);
	ck_assert_int_eq(b.calls, 1);
	ck_assert_int_eq(outbound_register(o, "a-channel-name-far-too-long", record, &a), -1);
	outbound_free(&o);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("outbound");
	TCase *tc = tcase_create("outbound");
	tcase_add_test(tc, routes_by_channel);
	tcase_add_test(tc, unserved_channel_is_refused);
	tcase_add_test(tc, register_replaces_and_reports_failure);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? 1 : 0;
}
