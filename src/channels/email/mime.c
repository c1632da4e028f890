/* The MIME normaliser (see email.h): GMime 3 turns one mail into a JSON record. Runs on
 * worker threads; GMime objects never leave the call that made them. */
#include "contactd/email.h"

#include <ctype.h>
#include <gmime/gmime.h>
#include <openssl/evp.h>
#include <openssl/sha.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

static pthread_once_t mime_once = PTHREAD_ONCE_INIT;

static void mime_init_once(void)
{
	g_mime_init();
}

void email_mime_init(void)
{
	pthread_once(&mime_once, mime_init_once);
}

/* ---- text helpers ---------------------------------------------------------------------- */

/* Valid UTF-8 without NUL and C0 controls other than tab and newline; CRLF/CR -> LF.
 * Takes S (g_malloc'd) and returns a g_malloc'd string. */
static char *clean_text(char *s)
{
	if (!s)
		return g_strdup("");
	char *v = g_utf8_make_valid(s, -1);
	g_free(s);
	char *o = v;
	for (const char *p = v; *p; p++) {
		unsigned char c = (unsigned char)*p;
		if (c == '\r') {
			*o++ = '\n';
			if (p[1] == '\n')
				p++;
		} else if (c >= 0x20 || c == '\t' || c == '\n') {
			*o++ = (char)c;
		}
	}
	*o = 0;
	return v;
}

/* BYTES in CHARSET (NULL: unknown) as UTF-8 (g_malloc'd). Undeclared or broken text is
 * read as UTF-8 when valid, else as Windows-1252, else Latin-1 (never fails). */
static char *to_utf8(const char *bytes, size_t len, const char *charset)
{
	char *out = NULL;
	gsize wrote = 0;
	if (charset && *charset) {
		const char *name = g_mime_charset_iconv_name(charset);
		if (g_ascii_strcasecmp(name, "utf-8") == 0 ||
		    g_ascii_strcasecmp(name, "us-ascii") == 0 ||
		    g_ascii_strcasecmp(name, "ascii") == 0) {
			charset = NULL;
		} else {
			out = g_convert(bytes, (gssize)len, "UTF-8", name, NULL, &wrote, NULL);
			if (out)
				return clean_text(out);
		}
	}
	if (g_utf8_validate(bytes, (gssize)len, NULL) || (charset == NULL && len == 0))
		return clean_text(g_strndup(bytes, len));
	out = g_convert(bytes, (gssize)len, "UTF-8", "WINDOWS-1252", NULL, &wrote, NULL);
	if (!out)
		out = g_convert(bytes, (gssize)len, "UTF-8", "ISO-8859-1", NULL, &wrote, NULL);
	return clean_text(out ? out : g_strndup(bytes, len));
}

static void trim_right(GString *s)
{
	while (s->len && (s->str[s->len - 1] == '\n' || s->str[s->len - 1] == ' ' ||
			  s->str[s->len - 1] == '\t'))
		g_string_truncate(s, s->len - 1);
}

/* ---- HTML to text ------------------------------------------------------------------------ */

static const struct {
	const char *name;
	const char *utf8;
} entities[] = {
    {"amp", "&"},
    {"lt", "<"},
    {"gt", ">"},
    {"quot", "\""},
    {"apos", "'"},
    {"nbsp", " "},
    {"copy", "\xc2\xa9"},
    {"reg", "\xc2\xae"},
    {"euro", "\xe2\x82\xac"},
    {"ndash", "-"},
    {"mdash", "\xe2\x80\x94"},
    {"hellip", "\xe2\x80\xa6"},
    {"laquo", "\xc2\xab"},
    {"raquo", "\xc2\xbb"},
    {"rsquo", "\xe2\x80\x99"},
    {"lsquo", "\xe2\x80\x98"},
    {"rdquo", "\xe2\x80\x9d"},
    {"ldquo", "\xe2\x80\x9c"},
    {"bull", "\xe2\x80\xa2"},
    {"aacute", "\xc3\xa1"},
    {"agrave", "\xc3\xa0"},
    {"acirc", "\xc3\xa2"},
    {"auml", "\xc3\xa4"},
    {"ccedil", "\xc3\xa7"},
    {"eacute", "\xc3\xa9"},
    {"egrave", "\xc3\xa8"},
    {"ecirc", "\xc3\xaa"},
    {"iacute", "\xc3\xad"},
    {"ntilde", "\xc3\xb1"},
    {"oacute", "\xc3\xb3"},
    {"ouml", "\xc3\xb6"},
    {"uacute", "\xc3\xba"},
    {"uuml", "\xc3\xbc"},
    {"szlig", "\xc3\x9f"},
    {"Eacute", "\xc3\x89"},
    {"Auml", "\xc3\x84"},
    {"Ouml", "\xc3\x96"},
    {"Uuml", "\xc3\x9c"},
};

static bool tag_is(const char *tag, size_t n, const char *name)
{
	size_t k = strlen(name);
	return n == k && g_ascii_strncasecmp(tag, name, k) == 0;
}

static bool is_block(const char *tag, size_t n)
{
	static const char *const blocks[] = {
	    "br", "p",	   "div", "tr", "li",	      "h1",  "h2", "h3",    "h4", "h5",
	    "h6", "table", "ul",  "ol", "blockquote", "pre", "hr", "title", "dt", "dd"};
	for (size_t i = 0; i < sizeof(blocks) / sizeof(blocks[0]); i++)
		if (tag_is(tag, n, blocks[i]))
			return true;
	return false;
}

/* Appends C, collapsing runs of white space (not newlines) to one space. */
static void put_char(GString *o, char c)
{
	if (c == ' ' || c == '\t' || c == '\r' || c == '\n') {
		if (o->len && o->str[o->len - 1] != ' ' && o->str[o->len - 1] != '\n')
			g_string_append_c(o, ' ');
		return;
	}
	g_string_append_c(o, c);
}

static void put_newline(GString *o)
{
	while (o->len && o->str[o->len - 1] == ' ')
		g_string_truncate(o, o->len - 1);
	if (o->len >= 2 && o->str[o->len - 1] == '\n' && o->str[o->len - 2] == '\n')
		return;
	if (o->len)
		g_string_append_c(o, '\n');
}

char *email_html_to_text(const char *h, size_t len)
{
	GString *o = g_string_sized_new(len / 2 + 16);
	size_t i = 0;
	const char *skip_until = NULL; /* inside <script>, <style>, <head>: the closing tag */
	while (i < len) {
		char c = h[i];
		if (c == '<') {
			if (i + 3 < len && strncmp(h + i, "<!--", 4) == 0) {
				const char *end =
				    g_strstr_len(h + i + 4, (gssize)(len - i - 4), "-->");
				i = end ? (size_t)(end - h) + 3 : len;
				continue;
			}
			size_t j = i + 1;
			bool closing = j < len && h[j] == '/';
			if (closing)
				j++;
			size_t t0 = j;
			while (j < len && (isalnum((unsigned char)h[j]) || h[j] == '-'))
				j++;
			size_t tn = j - t0;
			/* the end of the tag, minding quoted attribute values */
			char q = 0;
			while (j < len && (q || h[j] != '>')) {
				if (q && h[j] == q)
					q = 0;
				else if (!q && (h[j] == '"' || h[j] == '\''))
					q = h[j];
				j++;
			}
			i = j < len ? j + 1 : len;
			if (tn == 0)
				continue;
			if (skip_until) {
				if (closing && tag_is(h + t0, tn, skip_until))
					skip_until = NULL;
				continue;
			}
			if (!closing &&
			    (tag_is(h + t0, tn, "script") || tag_is(h + t0, tn, "style") ||
			     tag_is(h + t0, tn, "head"))) {
				skip_until = tag_is(h + t0, tn, "script")  ? "script"
					     : tag_is(h + t0, tn, "style") ? "style"
									   : "head";
				continue;
			}
			if (is_block(h + t0, tn)) {
				put_newline(o);
				if (tag_is(h + t0, tn, "p") || tag_is(h + t0, tn, "blockquote"))
					put_newline(o);
			} else if (tag_is(h + t0, tn, "td") || tag_is(h + t0, tn, "th")) {
				put_char(o, ' ');
			}
			continue;
		}
		if (skip_until) {
			i++;
			continue;
		}
		if (c == '&') {
			size_t j = i + 1;
			while (j < len && j - i < 12 && h[j] != ';' &&
			       !isspace((unsigned char)h[j]) && h[j] != '&' && h[j] != '<')
				j++;
			if (j < len && h[j] == ';' && j > i + 1) {
				const char *e = h + i + 1;
				size_t en = j - i - 1;
				bool done = false;
				if (e[0] == '#') {
					unsigned long cp = e[1] == 'x' || e[1] == 'X'
							       ? strtoul(e + 2, NULL, 16)
							       : strtoul(e + 1, NULL, 10);
					if (cp == 0xa0)
						cp = ' ';
					if (cp > 0 && cp < 0x110000 &&
					    g_unichar_validate((gunichar)cp)) {
						if (cp == ' ')
							put_char(o, ' ');
						else
							g_string_append_unichar(o, (gunichar)cp);
					}
					done = true;
				} else {
					for (size_t k = 0;
					     k < sizeof(entities) / sizeof(entities[0]); k++)
						if (tag_is(e, en, entities[k].name) &&
						    strncmp(e, entities[k].name, en) == 0) {
							if (strcmp(entities[k].utf8, " ") == 0)
								put_char(o, ' ');
							else
								g_string_append(o,
										entities[k].utf8);
							done = true;
							break;
						}
				}
				if (done) {
					i = j + 1;
					continue;
				}
			}
		}
		put_char(o, c);
		i++;
	}
	/* trim every line */
	GString *r = g_string_sized_new(o->len + 1);
	char **lines = g_strsplit(o->str, "\n", -1);
	for (char **l = lines; *l; l++) {
		char *t = g_strstrip(*l);
		if (r->len || *t) {
			g_string_append(r, t);
			g_string_append_c(r, '\n');
		}
	}
	g_strfreev(lines);
	g_string_free(o, TRUE);
	trim_right(r);
	char *gs = g_string_free(r, FALSE);
	char *res = strdup(gs);
	g_free(gs);
	if (!res)
		abort();
	return res;
}

/* ---- parsing ------------------------------------------------------------------------------ */

struct walk {
	GString *plain, *html;
	json_t *attachments;
	size_t att_bytes, max_att_bytes;
	int depth;
};

static GByteArray *part_bytes(GMimePart *part)
{
	GMimeDataWrapper *w = g_mime_part_get_content(part);
	GMimeStream *mem = g_mime_stream_mem_new();
	if (w)
		g_mime_data_wrapper_write_to_stream(w, mem);
	GByteArray *ba = g_byte_array_new();
	GByteArray *src = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(mem));
	if (src && src->len)
		g_byte_array_append(ba, src->data, src->len);
	g_object_unref(mem);
	return ba;
}

static void add_attachment(struct walk *w, const char *name, const char *type,
			   const unsigned char *data, size_t len)
{
	unsigned char md[SHA256_DIGEST_LENGTH];
	SHA256(data, len, md);
	char hex[SHA256_DIGEST_LENGTH * 2 + 1];
	for (int i = 0; i < SHA256_DIGEST_LENGTH; i++)
		snprintf(hex + i * 2, 3, "%02x", md[i]);
	char *uname = name ? g_utf8_make_valid(name, -1) : NULL;
	json_t *a = json_pack("{s:s?, s:s, s:I, s:s}", "name", uname, "type", type, "size",
			      (json_int_t)len, "sha256", hex);
	g_free(uname);
	if (!a)
		return;
	if (w->att_bytes + len <= w->max_att_bytes) {
		size_t blen = 4 * ((len + 2) / 3) + 1;
		char *b64 = malloc(blen);
		if (!b64)
			abort();
		EVP_EncodeBlock((unsigned char *)b64, data, (int)len);
		json_object_set_new(a, "data", json_string(b64));
		free(b64);
		w->att_bytes += len;
	}
	json_array_append_new(w->attachments, a);
}

static char *content_type_str(GMimeObject *obj)
{
	GMimeContentType *ct = g_mime_object_get_content_type(obj);
	const char *t = ct ? g_mime_content_type_get_media_type(ct) : NULL;
	const char *s = ct ? g_mime_content_type_get_media_subtype(ct) : NULL;
	char *full = g_strdup_printf("%s/%s", t ? t : "application", s ? s : "octet-stream");
	char *r = g_ascii_strdown(full, -1);
	g_free(full);
	return r;
}

static void walk_object(struct walk *w, GMimeObject *obj, bool in_alternative);

/* multipart/alternative: the richest readable choice is not what a contact center wants; the
 * plain text is. Pick the text/plain child (searching nested multiparts), else the rest. */
static bool has_plain(GMimeObject *obj, int depth)
{
	if (depth > 20)
		return false;
	if (GMIME_IS_MULTIPART(obj)) {
		GMimeMultipart *mp = GMIME_MULTIPART(obj);
		for (int i = 0; i < g_mime_multipart_get_count(mp); i++)
			if (has_plain(g_mime_multipart_get_part(mp, i), depth + 1))
				return true;
		return false;
	}
	GMimeContentType *ct = g_mime_object_get_content_type(obj);
	return GMIME_IS_PART(obj) && ct && g_mime_content_type_is_type(ct, "text", "plain") &&
	       !g_mime_part_is_attachment(GMIME_PART(obj));
}

static void walk_part(struct walk *w, GMimePart *part)
{
	GMimeObject *obj = GMIME_OBJECT(part);
	GMimeContentType *ct = g_mime_object_get_content_type(obj);
	const char *filename = g_mime_part_get_filename(part);
	bool is_text = ct && g_mime_content_type_is_type(ct, "text", "*");
	bool plain = ct && g_mime_content_type_is_type(ct, "text", "plain");
	bool html = ct && g_mime_content_type_is_type(ct, "text", "html");
	bool attachment = g_mime_part_is_attachment(part) || !is_text || (!plain && !html) ||
			  (filename && *filename && !plain && !html);
	GByteArray *ba = part_bytes(part);
	if (attachment) {
		char *type = content_type_str(obj);
		add_attachment(w, filename, type, ba->data, ba->len);
		g_free(type);
	} else {
		const char *cs = g_mime_object_get_content_type_parameter(obj, "charset");
		char *text = to_utf8((const char *)ba->data, ba->len, cs);
		GString *dst = plain ? w->plain : w->html;
		if (dst->len)
			g_string_append_c(dst, '\n');
		g_string_append(dst, text);
		g_free(text);
	}
	g_byte_array_unref(ba);
}

static void walk_object(struct walk *w, GMimeObject *obj, bool in_alternative)
{
	if (!obj || w->depth > 50)
		return;
	w->depth++;
	if (GMIME_IS_MULTIPART(obj)) {
		GMimeMultipart *mp = GMIME_MULTIPART(obj);
		GMimeContentType *ct = g_mime_object_get_content_type(obj);
		int n = g_mime_multipart_get_count(mp);
		if (ct && g_mime_content_type_is_type(ct, "multipart", "alternative") && n > 0) {
			int pick = -1;
			for (int i = 0; i < n && pick < 0; i++)
				if (has_plain(g_mime_multipart_get_part(mp, i), 0))
					pick = i;
			if (pick < 0)
				pick = n - 1; /* the last one is the preferred (RFC 2046 §5.1.4) */
			walk_object(w, g_mime_multipart_get_part(mp, pick), true);
		} else {
			for (int i = 0; i < n; i++)
				walk_object(w, g_mime_multipart_get_part(mp, i), in_alternative);
		}
	} else if (GMIME_IS_MESSAGE_PART(obj)) {
		GMimeMessage *inner = g_mime_message_part_get_message(GMIME_MESSAGE_PART(obj));
		if (inner) {
			GMimeStream *mem = g_mime_stream_mem_new();
			g_mime_object_write_to_stream(GMIME_OBJECT(inner), NULL, mem);
			GByteArray *ba = g_mime_stream_mem_get_byte_array(GMIME_STREAM_MEM(mem));
			const char *subj = g_mime_message_get_subject(inner);
			char *name = g_strdup_printf("%s.eml", subj && *subj ? subj : "message");
			add_attachment(w, name, "message/rfc822",
				       ba ? ba->data : (const guint8 *)"", ba ? ba->len : 0);
			g_free(name);
			g_object_unref(mem);
		}
	} else if (GMIME_IS_PART(obj)) {
		walk_part(w, GMIME_PART(obj));
	}
	w->depth--;
}

static void warn_cb(gint64 offset, GMimeParserWarning code, const gchar *item, gpointer arg)
{
	(void)offset;
	(void)item;
	/* duplicated headers and the like are everyday noise; structure problems count */
	if (code != GMIME_WARN_DUPLICATED_HEADER && code != GMIME_WARN_DUPLICATED_PARAMETER)
		*(bool *)arg = true;
}

/* Message-IDs of a References / In-Reply-To value, without <>. */
static json_t *msgid_list(GMimeParserOptions *opts, const char *value)
{
	json_t *arr = json_array();
	if (!value || !*value)
		return arr;
	GMimeReferences *refs = g_mime_references_parse(opts, value);
	int n = refs ? g_mime_references_length(refs) : 0;
	for (int i = 0; i < n && json_array_size(arr) < 100; i++) {
		const char *id = g_mime_references_get_message_id(refs, i);
		if (id && *id && strlen(id) <= 998) {
			char *v = g_utf8_make_valid(id, -1);
			json_array_append_new(arr, json_string(v));
			g_free(v);
		}
	}
	if (refs)
		g_mime_references_free(refs);
	return arr;
}

static bool is_trace_header(const char *line, size_t n)
{
	static const char *const trace[] = {
	    "received:", "return-path:", "delivered-to:", "x-original-to:"};
	for (size_t i = 0; i < sizeof(trace) / sizeof(trace[0]); i++) {
		size_t k = strlen(trace[i]);
		if (n >= k && g_ascii_strncasecmp(line, trace[i], k) == 0)
			return true;
	}
	return false;
}

/* "<sha256 hex>@contactd.invalid" over the mail without its trace headers. */
static char *derived_message_id(const char *data, size_t len)
{
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	if (!ctx)
		abort();
	EVP_DigestInit_ex(ctx, EVP_sha256(), NULL);
	size_t i = 0;
	bool skipping = false;
	while (i < len) {
		const char *nl = memchr(data + i, '\n', len - i);
		size_t n = nl ? (size_t)(nl - (data + i)) + 1 : len - i;
		const char *line = data + i;
		if (n <= 2 && (line[0] == '\n' || (line[0] == '\r' && n == 2))) {
			EVP_DigestUpdate(ctx, data + i, len - i); /* the rest, body included */
			break;
		}
		bool cont = line[0] == ' ' || line[0] == '\t';
		if (!cont)
			skipping = is_trace_header(line, n);
		if (!skipping)
			EVP_DigestUpdate(ctx, line, n);
		i += n;
	}
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	EVP_DigestFinal_ex(ctx, md, &mdlen);
	EVP_MD_CTX_free(ctx);
	GString *s = g_string_new(NULL);
	for (unsigned k = 0; k < mdlen; k++)
		g_string_append_printf(s, "%02x", md[k]);
	g_string_append(s, "@contactd.invalid");
	return g_string_free(s, FALSE);
}

static void set_from(json_t *rec, InternetAddressList *list)
{
	InternetAddress *ia = NULL;
	for (int depth = 0; list && depth < 4 && !ia; depth++) {
		InternetAddress *first = internet_address_list_length(list) > 0
					     ? internet_address_list_get_address(list, 0)
					     : NULL;
		if (!first)
			break;
		if (INTERNET_ADDRESS_IS_GROUP(first))
			list = internet_address_group_get_members(INTERNET_ADDRESS_GROUP(first));
		else
			ia = first;
	}
	const char *addr = ia && INTERNET_ADDRESS_IS_MAILBOX(ia)
			       ? internet_address_mailbox_get_addr(INTERNET_ADDRESS_MAILBOX(ia))
			       : NULL;
	const char *name = ia ? internet_address_get_name(ia) : NULL;
	char *a = addr && *addr ? clean_text(g_utf8_make_valid(addr, -1)) : NULL;
	char *n = name && *name ? clean_text(g_utf8_make_valid(name, -1)) : NULL;
	json_object_set_new(rec, "from",
			    json_pack("{s:s?, s:s?}", "email", a && *a ? a : NULL, "name",
				      n && *n ? g_strstrip(n) : NULL));
	g_free(a);
	g_free(n);
}

static json_t *str_or_null(const char *s)
{
	if (!s)
		return json_null();
	char *c = clean_text(g_utf8_make_valid(s, -1));
	json_t *v = json_string(g_strstrip(c));
	g_free(c);
	return v ? v : json_null();
}

json_t *email_mime_parse(const char *data, size_t len, size_t max_attachment_bytes)
{
	email_mime_init();
	json_t *rec = json_object();
	bool malformed = false;
	GMimeParserOptions *opts = g_mime_parser_options_new();
	const char *fallback[] = {"utf-8", "windows-1252", NULL};
	g_mime_parser_options_set_fallback_charsets(opts, fallback);
	g_mime_parser_options_set_rfc2047_compliance_mode(opts, GMIME_RFC_COMPLIANCE_LOOSE);
	g_mime_parser_options_set_address_compliance_mode(opts, GMIME_RFC_COMPLIANCE_LOOSE);
	g_mime_parser_options_set_parameter_compliance_mode(opts, GMIME_RFC_COMPLIANCE_LOOSE);
	g_mime_parser_options_set_warning_callback(opts, warn_cb, &malformed);
	GMimeStream *stream = g_mime_stream_mem_new_with_buffer(data, len);
	GMimeParser *parser = g_mime_parser_new_with_stream(stream);
	g_mime_parser_set_format(parser, GMIME_FORMAT_MESSAGE);
	GMimeMessage *msg = g_mime_parser_construct_message(parser, opts);

	struct walk w = {
	    g_string_new(NULL), g_string_new(NULL), json_array(), 0, max_attachment_bytes, 0};
	if (msg) {
		GMimeObject *mo = GMIME_OBJECT(msg);
		set_from(rec, g_mime_message_get_from(msg));
		/* no mailbox in From (absent, or an empty group): Sender, then Reply-To */
		if (!json_string_value(json_object_get(json_object_get(rec, "from"), "email")))
			set_from(rec, g_mime_message_get_sender(msg));
		if (!json_string_value(json_object_get(json_object_get(rec, "from"), "email")))
			set_from(rec, g_mime_message_get_reply_to(msg));
		json_object_set_new(rec, "subject", str_or_null(g_mime_message_get_subject(msg)));
		const char *mid = g_mime_message_get_message_id(msg);
		if (mid && *mid && strlen(mid) <= 998)
			json_object_set_new(rec, "message_id", str_or_null(mid));
		json_object_set_new(rec, "in_reply_to",
				    msgid_list(opts, g_mime_object_get_header(mo, "In-Reply-To")));
		json_object_set_new(rec, "references",
				    msgid_list(opts, g_mime_object_get_header(mo, "References")));
		GDateTime *dt = g_mime_message_get_date(msg);
		char *iso = dt ? g_date_time_format_iso8601(dt) : NULL;
		json_object_set_new(rec, "date", iso ? json_string(iso) : json_null());
		g_free(iso);
		walk_object(&w, g_mime_message_get_mime_part(msg), false);
	} else {
		malformed = true;
		json_object_set_new(rec, "from", json_pack("{s:n, s:n}", "email", "name"));
		json_object_set_new(rec, "subject", json_null());
		json_object_set_new(rec, "in_reply_to", json_array());
		json_object_set_new(rec, "references", json_array());
		json_object_set_new(rec, "date", json_null());
		char *text = to_utf8(data, len, NULL);
		g_string_append(w.plain, text);
		g_free(text);
	}
	const char *mid = json_string_value(json_object_get(rec, "message_id"));
	if (!mid || !*mid) {
		char *d = derived_message_id(data, len);
		json_object_set_new(rec, "message_id", json_string(d));
		g_free(d);
	}
	bool from_html = w.plain->len == 0 && w.html->len > 0;
	char *body = NULL;
	if (from_html) {
		body = email_html_to_text(w.html->str, w.html->len);
	} else {
		trim_right(w.plain);
		body = strdup(w.plain->str);
	}
	json_t *jb = json_string(body ? body : "");
	json_object_set_new(rec, "body", jb ? jb : json_string(""));
	free(body);
	json_object_set_new(rec, "html", json_boolean(from_html));
	json_object_set_new(rec, "attachments", w.attachments);
	json_object_set_new(rec, "malformed", json_boolean(malformed));
	g_string_free(w.plain, TRUE);
	g_string_free(w.html, TRUE);
	if (msg)
		g_object_unref(msg);
	g_object_unref(parser);
	g_object_unref(stream);
	g_mime_parser_options_free(opts);
	return rec;
}
