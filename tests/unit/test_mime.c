/* The MIME normaliser over tests/email/corpus/: real-world edge cases (multipart/alternative,
 * nested multiparts, base64, quoted-printable, legacy charsets, missing headers, broken
 * boundaries, very long and 8-bit headers), each checked for its decoded subject, sender and
 * body text. MIME_DUMP=1 prints every parsed record. */
#include "contactd/email.h"

#include <check.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CORPUS TESTS_SRC_DIR "/email/corpus/"

struct mcase {
	const char *file;
	const char *subject; /* NULL: expect null */
	const char *from_email;
	const char *from_name;
	const char *body; /* a substring of the body */
	bool html;
	size_t attachments;
	const char *message_id; /* NULL: derived */
};

static const struct mcase cases[] = {
    {"alternative.eml", "Order status", "ana@example.com", "Ana Lopez",
     "Where is my order? Caf\xc3\xa9 au lait is late.", false, 0, "alt-1@example.com"},
    {"nested.eml", "Invoice attached", "bob@example.org", NULL, "Please see the invoice.", false, 1,
     "nested-1@example.org"},
    {"iso-8859-2.eml",
     "Za\xc5\xbc\xc3\xb3\xc5\x82\xc4\x87 g\xc4\x99\xc5\x9bl\xc4\x85 ja\xc5\xba\xc5\x84",
     "pawel@example.pl", "Pawe\xc5\x82 Kowalski",
     "Dzie\xc5\x84 dobry, prosz\xc4\x99 o faktur\xc4\x99. \xc5\xbb\xc3\xb3\xc5\x82\xc4\x87", false,
     0, NULL},
    {"windows-1252.eml", "Facture \xe2\x82\xac 100 \xe2\x80\x93 \xe2\x80\x9curgent\xe2\x80\x9d",
     "claire@example.fr", "Claire",
     "Le montant est de 100 \xe2\x82\xac \xe2\x80\x93 \xe2\x80\x9cmerci\xe2\x80\x9d.", false, 0,
     NULL},
    {"iso-2022-jp.eml", "\xe3\x81\x8a\xe5\x95\x8f\xe3\x81\x84\xe5\x90\x88\xe3\x82\x8f\xe3\x81\x9b",
     "taro@example.jp", "\xe5\xb1\xb1\xe7\x94\xb0\xe5\xa4\xaa\xe9\x83\x8e",
     "\xe3\x81\x93\xe3\x82\x93\xe3\x81\xab\xe3\x81\xa1\xe3\x81\xaf", false, 0, NULL},
    {"koi8-r.eml",
     "\xd0\x92\xd0\xbe\xd0\xbf\xd1\x80\xd0\xbe\xd1\x81 \xd0\xbe \xd0\xb4\xd0\xbe\xd1\x81\xd1\x82"
     "\xd0\xb0\xd0\xb2\xd0\xba\xd0\xb5",
     "ivan@example.ru", "\xd0\x98\xd0\xb2\xd0\xb0\xd0\xbd",
     "\xd0\x97\xd0\xb4\xd1\x80\xd0\xb0\xd0\xb2\xd1\x81\xd1\x82\xd0\xb2\xd1\x83\xd0\xb9\xd1\x82"
     "\xd0\xb5! \xd0\x93\xd0\xb4\xd0\xb5 \xd0\xbc\xd0\xbe\xd0\xb9 \xd0\xb7\xd0\xb0\xd0\xba\xd0\xb0"
     "\xd0\xb7?",
     false, 0, NULL},
    {"missing-headers.eml", NULL, NULL, NULL, "Just a body, nothing else.", false, 0, NULL},
    {"broken-boundary.eml", "Broken", "dana@example.com", "Dana", "The text part survives.", false,
     1, NULL},
    {"long-headers.eml", NULL, "eve@example.com", NULL, "Body after long headers.", false, 0, NULL},
    {"8bit-headers.eml",
     "Gr\xc3\xbc\xc3\x9f"
     "e aus M\xc3\xbcnchen",
     "juergen@example.de", "J\xc3\xbcrgen M\xc3\xbcller",
     "Sch\xc3\xb6ne Gr\xc3\xbc\xc3\x9f"
     "e.",
     false, 0, NULL},
    {"8bit-latin1-header.eml", "Informaci\xc3\xb3n", "jose@example.es", "Jos\xc3\xa9 P\xc3\xa9rez",
     "Cuerpo sin charset: informaci\xc3\xb3n", false, 0, NULL},
    {"html-only.eml", "HTML only", "frank@example.com", "Frank",
     "Hello & welcome\n\nLine two \xc3\xa9t\xc3\xa9", true, 0, NULL},
    {"unknown-charset.eml", "Hi there", "grace@example.com", "Grace", "Plain ascii body.", false, 0,
     NULL},
};

static char *slurp(const char *name, size_t *len_r)
{
	char path[512];
	snprintf(path, sizeof(path), "%s%s", CORPUS, name);
	FILE *f = fopen(path, "rb");
	ck_assert_msg(f != NULL, "cannot open %s", path);
	char *buf = malloc(1 << 20);
	*len_r = fread(buf, 1, (1 << 20) - 1, f);
	buf[*len_r] = 0;
	fclose(f);
	return buf;
}

static const char *str(const json_t *o, const char *k)
{
	return json_string_value(json_object_get(o, k));
}

START_TEST(corpus_case)
{
	const struct mcase *c = &cases[_i];
	size_t len;
	char *raw = slurp(c->file, &len);
	json_t *r = email_mime_parse(raw, len, 1 << 20);
	ck_assert_ptr_nonnull(r);
	if (getenv("MIME_DUMP")) {
		char *d = json_dumps(r, JSON_INDENT(1));
		printf("%s: %s\n", c->file, d);
		free(d);
	}
	const json_t *from = json_object_get(r, "from");
	if (c->subject)
		ck_assert_str_eq(str(r, "subject"), c->subject);
	else if (strcmp(c->file, "long-headers.eml") == 0)
		ck_assert_uint_gt(strlen(str(r, "subject")), 3000);
	else
		ck_assert(json_is_null(json_object_get(r, "subject")));
	if (c->from_email)
		ck_assert_str_eq(str(from, "email"), c->from_email);
	else
		ck_assert_ptr_null(str(from, "email"));
	if (c->from_name)
		ck_assert_str_eq(str(from, "name"), c->from_name);
	const char *body = str(r, "body");
	ck_assert_ptr_nonnull(body);
	ck_assert_msg(strstr(body, c->body) != NULL, "%s: body \"%s\" lacks \"%s\"", c->file, body,
		      c->body);
	ck_assert_int_eq(json_is_true(json_object_get(r, "html")), c->html);
	ck_assert_uint_eq(json_array_size(json_object_get(r, "attachments")), c->attachments);
	const char *mid = str(r, "message_id");
	if (c->message_id)
		ck_assert_str_eq(mid, c->message_id);
	else if (strcmp(c->file, "missing-headers.eml") == 0)
		ck_assert_uint_eq(strlen(mid), 64 + strlen("@contactd.invalid"));
	json_decref(r);
	free(raw);
}
END_TEST

START_TEST(attachment_fields)
{
	size_t len;
	char *raw = slurp("nested.eml", &len);
	json_t *r = email_mime_parse(raw, len, 1 << 20);
	const json_t *a = json_array_get(json_object_get(r, "attachments"), 0);
	ck_assert_str_eq(str(a, "name"), "invoice.pdf");
	ck_assert_str_eq(str(a, "type"), "application/pdf");
	ck_assert_int_eq(json_integer_value(json_object_get(a, "size")), 240);
	ck_assert_uint_eq(strlen(str(a, "sha256")), 64);
	ck_assert_ptr_nonnull(str(a, "data"));
	json_decref(r);
	/* beyond the per-message limit the bytes are dropped, the facts kept */
	r = email_mime_parse(raw, len, 100);
	a = json_array_get(json_object_get(r, "attachments"), 0);
	ck_assert_int_eq(json_integer_value(json_object_get(a, "size")), 240);
	ck_assert_ptr_null(json_object_get(a, "data"));
	json_decref(r);
	free(raw);
}
END_TEST

START_TEST(threading_headers)
{
	size_t len;
	char *raw = slurp("long-headers.eml", &len);
	json_t *r = email_mime_parse(raw, len, 1 << 20);
	ck_assert_uint_eq(json_array_size(json_object_get(r, "references")), 100); /* capped */
	ck_assert_str_eq(json_string_value(json_array_get(json_object_get(r, "in_reply_to"), 0)),
			 "ref199@example.com");
	json_decref(r);
	free(raw);
}
END_TEST

START_TEST(garbage_never_crashes)
{
	/* truncated, NUL bytes, random bytes: always a record with a message id */
	unsigned seed = 7;
	char buf[4096];
	for (int round = 0; round < 300; round++) {
		size_t n = (size_t)(rand_r(&seed) % sizeof(buf));
		for (size_t i = 0; i < n; i++)
			buf[i] = (char)(rand_r(&seed) % 4 == 0 ? "\r\n:-=;\"<>"[rand_r(&seed) % 10]
							       : rand_r(&seed) % 256);
		json_t *r = email_mime_parse(buf, n, 1024);
		ck_assert_ptr_nonnull(r);
		ck_assert_ptr_nonnull(str(r, "message_id"));
		ck_assert_ptr_nonnull(str(r, "body"));
		json_decref(r);
	}
}
END_TEST

START_TEST(html_text)
{
	const char *h = "<div>a&nbsp;b</div><br><p>c &lt;d&gt; &#233;&#x20ac;</p>";
	char *t = email_html_to_text(h, strlen(h));
	ck_assert_str_eq(t, "a b\n\nc <d> \xc3\xa9\xe2\x82\xac");
	free(t);
}
END_TEST

/* An agent reply, formatted, reads back through the normaliser with the same facts. */
START_TEST(reply_round_trip)
{
	json_t *p = json_pack(
	    "{s:s, s:s, s:s, s:s, s:s, s:s, s:s, s:[s, s, s]}", "from", "support@example.com",
	    "from_name", "Agn\xc3\xa8s", "to", "ana@example.com", "to_name", "Ana", "subject",
	    "Re: Caf\xc3\xa9 order, a long subject that needs more than one encoded word [#42]",
	    "message_id", "contactd.7.abc@example.com", "in_reply_to", "c1@x", "references", "a@x",
	    "bad id with spaces", "c1@x");
	json_object_set_new(p, "body", json_string("Line one\nLine two: \xc3\xa9\n"));
	size_t len = 0;
	char *text = email_reply_format(p, 1795000000, &len);
	ck_assert_ptr_nonnull(text);
	ck_assert_ptr_nonnull(strstr(text, "In-Reply-To: <c1@x>\r\n"));
	ck_assert_ptr_nonnull(strstr(text, "References: <a@x>\r\n <c1@x>\r\n"));
	ck_assert_ptr_nonnull(strstr(text, "Message-ID: <contactd.7.abc@example.com>\r\n"));
	ck_assert_ptr_null(strstr(text, "bad id"));
	ck_assert_ptr_null(memchr(text, 0, len));
	json_t *r = email_mime_parse(text, len, 1024);
	ck_assert_str_eq(str(r, "subject"), json_string_value(json_object_get(p, "subject")));
	ck_assert_str_eq(str(json_object_get(r, "from"), "name"), "Agn\xc3\xa8s");
	ck_assert_str_eq(str(json_object_get(r, "from"), "email"), "support@example.com");
	ck_assert_str_eq(str(r, "body"), "Line one\nLine two: \xc3\xa9");
	ck_assert_str_eq(str(r, "message_id"), "contactd.7.abc@example.com");
	json_decref(r);
	free(text);
	/* no recipient: nothing to send */
	json_object_del(p, "to");
	ck_assert_ptr_null(email_reply_format(p, 0, &len));
	json_decref(p);
}
END_TEST

int main(void)
{
	Suite *s = suite_create("mime");
	TCase *tc = tcase_create("corpus");
	tcase_add_loop_test(tc, corpus_case, 0, (int)(sizeof(cases) / sizeof(cases[0])));
	tcase_add_test(tc, attachment_fields);
	tcase_add_test(tc, threading_headers);
	tcase_add_test(tc, garbage_never_crashes);
	tcase_add_test(tc, html_text);
	tcase_add_test(tc, reply_round_trip);
	suite_add_tcase(s, tc);
	SRunner *sr = srunner_create(s);
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
