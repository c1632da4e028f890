/* config: one table names every key; it parses, fills defaults, validates and dumps.
 *
 * Parsing goes through inih (ini_parse_stream) with our own reader, which counts physical
 * lines (so every error names its line), strips leading blanks (so an indented key is a key,
 * never a continuation of the one before), refuses over-long lines instead of letting them be
 * cut, and reports read errors (EISDIR and the like). Debian's libinih exports its options as
 * variables; config_load sets the ones it relies on each time, so the library's build defaults
 * do not matter: inline comments start at " ;", '#' and ';' start comment lines, no multi-line
 * values, heap line buffer that grows up to CONFIG_MAX_LINE. Only the main thread loads
 * config, so writing those globals is safe. */
#include "contactd/config.h"
#include "contactd/log.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <errno.h>
#include <ini.h>
#include <limits.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

/* Longest accepted line, in characters without the newline. */
#define CONFIG_MAX_LINE 4096

enum cfg_type { CFG_STR, CFG_INT, CFG_ENUM, CFG_BOOL };

#define CFG_RESTART 0x1u /* SIGHUP cannot change it: a restart applies it */
#define CFG_SECRET  0x2u /* dumped as "(set)", never echoed in an error */

/* Words of an enum (or a bool spelled with two words). */
struct cfg_enum {
	int (*parse)(const char *s); /* value, or -1 when not a known word */
	const char *(*name)(int v);
	const char *choices; /* for errors: "debug, info, warn, error" */
};

/* Checks a value of the right type; returns NULL when fine, else why (maybe written in BUF). */
typedef const char *cfg_check_fn(const char *value, char *buf, size_t bufsz);

struct cfg_key {
	const char *section;
	const char *name;
	enum cfg_type type;
	size_t offset;		      /* of the field in struct config; its C type follows TYPE */
	const char *def;	      /* default, as the text a file would hold */
	long min, max;		      /* CFG_INT bounds, inclusive */
	const struct cfg_enum *words; /* CFG_ENUM, CFG_BOOL */
	unsigned flags;
	cfg_check_fn *check; /* optional */
};

/* offsetof that fails to compile when the field's type does not match the key's type. */
#define FIELD(f, T) _Generic(((struct config *)0)->f, T : offsetof(struct config, f))

#define KSTR(sec, key, f, def, flags, check)                                                       \
	{                                                                                          \
		sec, key, CFG_STR, FIELD(f, char *), def, 0, 0, NULL, flags, check                 \
	}
#define KINT(sec, key, f, def, lo, hi, flags)                                                      \
	{                                                                                          \
		sec, key, CFG_INT, FIELD(f, long), def, lo, hi, NULL, flags, NULL                  \
	}
#define KENUM(sec, key, f, def, words, flags)                                                      \
	{                                                                                          \
		sec, key, CFG_ENUM, FIELD(f, int), def, 0, 0, words, flags, NULL                   \
	}
#define KBOOL(sec, key, f, def, words, flags)                                                      \
	{                                                                                          \
		sec, key, CFG_BOOL, FIELD(f, bool), def, 0, 0, words, flags, NULL                  \
	}

/* ---- enums ---- */

static int level_parse(const char *s)
{
	return log_level_parse(s);
}

static const char *level_name(int v)
{
	return log_level_name((enum log_level)v);
}

static int target_parse(const char *s)
{
	if (strcmp(s, "stderr") == 0)
		return LOG_TARGET_STDERR;
	if (strcmp(s, "syslog") == 0)
		return LOG_TARGET_SYSLOG;
	return -1;
}

static const char *target_name(int v)
{
	return v == LOG_TARGET_SYSLOG ? "syslog" : "stderr";
}

static int migrate_parse(const char *s)
{
	if (strcmp(s, "auto") == 0)
		return 1;
	if (strcmp(s, "off") == 0)
		return 0;
	return -1;
}

static const char *migrate_name(int v)
{
	return v ? "auto" : "off";
}

static const struct cfg_enum level_words = {level_parse, level_name, "debug, info, warn, error"};
static const struct cfg_enum target_words = {target_parse, target_name, "stderr, syslog"};
static const struct cfg_enum migrate_words = {migrate_parse, migrate_name, "auto, off"};

/* ---- validators ---- */

/* The listeners, in [listen] order. */
static const struct {
	const char *name;
	size_t offset; /* of its address in struct config */
	bool tls;      /* TLS from the first byte (the others may offer STARTTLS) */
} listeners[] = {
    {"client", FIELD(listen_client, char *), false},
    {"client_tls", FIELD(listen_client_tls, char *), true},
    {"phone", FIELD(listen_phone, char *), false},
    {"phone_tls", FIELD(listen_phone_tls, char *), true},
    {"lmtp", FIELD(listen_lmtp, char *), false},
    {"smtp", FIELD(listen_smtp, char *), false},
    {"http", FIELD(listen_http, char *), false},
    {"https", FIELD(listen_https, char *), true},
};
#define N_LISTENERS	 (sizeof(listeners) / sizeof(listeners[0]))
#define LISTENER_CHOICES "client, client_tls, phone, phone_tls, lmtp, smtp, http, https"

static bool is_hostname(const char *s)
{
	size_t n = strlen(s);
	bool digits_and_dots = true;
	if (n == 0 || n > 253)
		return false;
	for (const char *p = s; *p; p++) {
		unsigned char c = (unsigned char)*p;
		if (!isalnum(c) && c != '-' && c != '.' && c != '_')
			return false;
		if (!isdigit(c) && c != '.')
			digits_and_dots = false;
	}
	/* "999.1.2.3" is neither an IPv4 address nor a hostname. */
	return !digits_and_dots;
}

/* Decimal digits only; false on anything else, including overflow. */
static bool parse_long(const char *s, long *v_r)
{
	const char *p = s;
	bool neg = *p == '-';
	long v = 0;
	if (neg)
		p++;
	if (*p == '\0')
		return false;
	for (; *p; p++) {
		if (!isdigit((unsigned char)*p))
			return false;
		int d = *p - '0';
		if (v > (LONG_MAX - d) / 10)
			return false;
		v = v * 10 + d;
	}
	*v_r = neg ? -v : v;
	return true;
}

/* config_parse_address with a reason. */
static int parse_address(const char *addr, char *host, size_t hostsz, int *port_r,
			 const char **why_r)
{
	const char *h, *colon;
	size_t hlen;
	bool v6 = false;

	if (addr[0] == '[') {
		const char *close = strchr(addr, ']');
		if (!close || close[1] != ':') {
			*why_r = "must be \"host:port\" or \"[v6addr]:port\"";
			return -1;
		}
		h = addr + 1;
		hlen = (size_t)(close - h);
		colon = close + 1;
		v6 = true;
	} else {
		colon = strrchr(addr, ':');
		if (!colon) {
			*why_r = "must be \"host:port\" or \"[v6addr]:port\"";
			return -1;
		}
		h = addr;
		hlen = (size_t)(colon - addr);
		if (memchr(h, ':', hlen)) {
			*why_r = "an IPv6 address needs brackets: \"[v6addr]:port\"";
			return -1;
		}
	}

	long port;
	if (!parse_long(colon + 1, &port) || colon[1] == '-' || port < 1 || port > 65535) {
		*why_r = "port must be between 1 and 65535";
		return -1;
	}
	if (hlen == 0) {
		*why_r = "host is missing";
		return -1;
	}
	if (hlen >= hostsz) {
		*why_r = "host is too long";
		return -1;
	}
	memcpy(host, h, hlen);
	host[hlen] = '\0';

	unsigned char bin[sizeof(struct in6_addr)];
	if (v6) {
		if (inet_pton(AF_INET6, host, bin) != 1) {
			*why_r = "not an IPv6 address in the brackets";
			return -1;
		}
	} else if (inet_pton(AF_INET, host, bin) != 1 && !is_hostname(host)) {
		*why_r = "host must be an IP address or a hostname";
		return -1;
	}
	*port_r = (int)port;
	return 0;
}

int config_parse_address(const char *addr, char *host, size_t hostsz, int *port_r)
{
	const char *why;
	if (!addr || !host || hostsz == 0)
		return -1;
	return parse_address(addr, host, hostsz, port_r, &why);
}

static const char *check_address(const char *value, char *buf, size_t bufsz)
{
	char host[256];
	int port;
	const char *why;
	if (*value == '\0' || parse_address(value, host, sizeof(host), &port, &why) == 0)
		return NULL;
	snprintf(buf, bufsz, "%s, got \"%s\"", why, value);
	return buf;
}

static const char *check_file(const char *value, char *buf, size_t bufsz)
{
	struct stat st;
	if (*value == '\0')
		return NULL;
	if (access(value, R_OK) < 0 || stat(value, &st) < 0) {
		snprintf(buf, bufsz, "cannot read \"%s\": %s", value, strerror(errno));
		return buf;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(buf, bufsz, "\"%s\" is not a regular file", value);
		return buf;
	}
	return NULL;
}

/* Calls FN on each comma separated item of LIST, blanks around it trimmed; stops at the first
 * non-NULL answer and returns it. An empty LIST has no items; an empty item is an error. */
static const char *each_item(const char *list,
			     const char *(*fn)(const char *item, char *buf, size_t bufsz),
			     char *buf, size_t bufsz)
{
	const char *p = list;
	if (*list == '\0')
		return NULL;
	for (;;) {
		const char *end = strchr(p, ',');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		char item[CONFIG_MAX_LINE + 1];
		while (n > 0 && isspace((unsigned char)*p)) {
			p++;
			n--;
		}
		while (n > 0 && isspace((unsigned char)p[n - 1]))
			n--;
		if (n == 0)
			return "has an empty item between commas";
		if (n >= sizeof(item))
			n = sizeof(item) - 1;
		memcpy(item, p, n);
		item[n] = '\0';
		const char *why = fn(item, buf, bufsz);
		if (why)
			return why;
		if (!end)
			return NULL;
		p = end + 1;
	}
}

static const char *check_listener_item(const char *item, char *buf, size_t bufsz)
{
	for (size_t i = 0; i < N_LISTENERS; i++)
		if (strcmp(item, listeners[i].name) == 0)
			return NULL;
	snprintf(buf, bufsz, "unknown listener \"%s\" (expected %s)", item, LISTENER_CHOICES);
	return buf;
}

static const char *check_listeners(const char *value, char *buf, size_t bufsz)
{
	return each_item(value, check_listener_item, buf, bufsz);
}

static const char *check_url_item(const char *item, char *buf, size_t bufsz)
{
	if (strlen(item) > 2048) {
		snprintf(buf, bufsz, "each URL must be at most 2048 characters");
		return buf;
	}
	if ((strncmp(item, "http://", 7) == 0 && item[7]) ||
	    (strncmp(item, "https://", 8) == 0 && item[8]))
		return NULL;
	snprintf(buf, bufsz, "each URL must start with http:// or https://, got \"%s\"", item);
	return buf;
}

static const char *check_urls(const char *value, char *buf, size_t bufsz)
{
	int n = 1;
	for (const char *p = value; *p; p++)
		n += *p == ',';
	if (n > 64) /* webhooks.c delivers to at most 64 URLs */
		return "lists more than 64 URLs";
	return each_item(value, check_url_item, buf, bufsz);
}

static const char *check_relay(const char *value, char *buf, size_t bufsz)
{
	const char *rest = NULL;
	char host[256];
	int port;
	const char *why;
	if (*value == '\0')
		return NULL;
	if (strncmp(value, "smtp://", 7) == 0)
		rest = value + 7;
	else if (strncmp(value, "smtps://", 8) == 0)
		rest = value + 8;
	if (!rest || parse_address(rest, host, sizeof(host), &port, &why) < 0) {
		snprintf(buf, bufsz,
			 "must be empty, smtp://host:port or smtps://host:port, got \"%s\"", value);
		return buf;
	}
	return NULL;
}

/* ---- the table ---- */

/* Every key, in the order of SPEC section 6 (and of config_dump). */
static const struct cfg_key keys[] = {
    KENUM("daemon", "log_level", log_level, "info", &level_words, 0),
    KENUM("daemon", "log_target", log_target, "stderr", &target_words, CFG_RESTART),

    /* conninfo may hold a password. */
    KSTR("database", "conninfo", db_conninfo, "dbname=contactd", CFG_RESTART | CFG_SECRET, NULL),
    KINT("database", "pool_size", db_pool_size, "4", 1, 64, CFG_RESTART),
    KBOOL("database", "migrate", db_migrate_auto, "auto", &migrate_words, CFG_RESTART),

    KSTR("listen", "client", listen_client, "127.0.0.1:7400", 0, check_address),
    KSTR("listen", "client_tls", listen_client_tls, "", 0, check_address),
    KSTR("listen", "phone", listen_phone, "127.0.0.1:7410", 0, check_address),
    KSTR("listen", "phone_tls", listen_phone_tls, "", 0, check_address),
    KSTR("listen", "lmtp", listen_lmtp, "127.0.0.1:2424", 0, check_address),
    KSTR("listen", "smtp", listen_smtp, "", 0, check_address),
    KSTR("listen", "http", listen_http, "127.0.0.1:8080", 0, check_address),
    KSTR("listen", "https", listen_https, "", 0, check_address),

    KSTR("tls", "cert_file", tls_cert_file, "", 0, check_file),
    KSTR("tls", "key_file", tls_key_file, "", 0, check_file),
    KSTR("tls", "ca_file", tls_ca_file, "", 0, check_file),
    KSTR("tls", "require_client_cert", tls_require_client_cert, "", 0, check_listeners),

    KINT("limits", "max_frame_bytes", max_frame_bytes, "65536", 256, 16777216, 0),
    KINT("limits", "max_email_bytes", max_email_bytes, "26214400", 1024, 1073741824, 0),
    KINT("limits", "max_connections", max_connections, "50000", 1, 1000000, 0),
    KINT("limits", "hello_timeout_s", hello_timeout_s, "10", 1, 3600, 0),
    KINT("limits", "max_http_body_bytes", max_http_body_bytes, "1048576", 1024, 67108864, 0),
    KINT("limits", "http_timeout_s", http_timeout_s, "30", 1, 3600, 0),

    KSTR("routing", "default_queue", routing_default_queue, "", 0, NULL),
    KINT("routing", "offer_timeout_s", offer_timeout_s, "20", 1, 3600, 0),
    KINT("routing", "reject_cooldown_s", reject_cooldown_s, "300", 0, 86400, 0),
    KINT("routing", "sticky_agent_s", sticky_agent_s, "600", 0, 86400, 0),

    KSTR("chat", "identity_secret", chat_identity_secret, "", CFG_SECRET, NULL),

    KSTR("email", "relay", email_relay, "", 0, check_relay),
    KINT("email", "retry_base_s", email_retry_base_s, "60", 1, 86400, 0),
    KINT("email", "max_attempts", email_max_attempts, "10", 1, 100, 0),

    KSTR("webhooks", "urls", webhooks_urls, "", 0, check_urls),
    KSTR("webhooks", "secret", webhooks_secret, "", CFG_SECRET, NULL),
};
#define N_KEYS (sizeof(keys) / sizeof(keys[0]))

static void *field(struct config *cfg, const struct cfg_key *k)
{
	return (char *)cfg + k->offset;
}

static const void *cfield(const struct config *cfg, const struct cfg_key *k)
{
	return (const char *)cfg + k->offset;
}

static char *xstrdup(const char *s)
{
	char *d = strdup(s);
	if (!d) {
		fputs("contactd: out of memory\n", stderr);
		abort();
	}
	return d;
}

static const struct cfg_key *find_key(const char *section, const char *name, bool *section_known)
{
	*section_known = false;
	for (size_t i = 0; i < N_KEYS; i++) {
		if (strcmp(keys[i].section, section) != 0)
			continue;
		*section_known = true;
		if (strcmp(keys[i].name, name) == 0)
			return &keys[i];
	}
	return NULL;
}

/* Stores VALUE into K's field of CFG; returns NULL, or why it is not a valid value. */
static const char *set_value(struct config *cfg, const struct cfg_key *k, const char *value,
			     char *buf, size_t bufsz)
{
	bool secret = (k->flags & CFG_SECRET) != 0;
	long v;
	int e;

	switch (k->type) {
	case CFG_STR: {
		const char *why = k->check ? k->check(value, buf, bufsz) : NULL;
		if (why)
			return why;
		char **s = field(cfg, k);
		free(*s);
		*s = xstrdup(value);
		return NULL;
	}
	case CFG_INT:
		if (!parse_long(value, &v) || v < k->min || v > k->max) {
			snprintf(buf, bufsz, "must be an integer between %ld and %ld, got \"%s\"",
				 k->min, k->max, secret ? "..." : value);
			return buf;
		}
		*(long *)field(cfg, k) = v;
		return NULL;
	case CFG_ENUM:
	case CFG_BOOL:
		e = k->words->parse(value);
		if (e < 0) {
			snprintf(buf, bufsz, "must be one of %s, got \"%s\"", k->words->choices,
				 secret ? "..." : value);
			return buf;
		}
		if (k->type == CFG_ENUM)
			*(int *)field(cfg, k) = e;
		else
			*(bool *)field(cfg, k) = e != 0;
		return NULL;
	}
	return "bad key type";
}

void config_defaults(struct config *cfg)
{
	char buf[256];
	memset(cfg, 0, sizeof(*cfg));
	cfg->path = xstrdup("");
	for (size_t i = 0; i < N_KEYS; i++) {
		if (set_value(cfg, &keys[i], keys[i].def, buf, sizeof(buf))) {
			/* A default that fails its own key is a bug in the table above. */
			fprintf(stderr, "contactd: bad default for %s.%s\n", keys[i].section,
				keys[i].name);
			abort();
		}
	}
}

void config_free(struct config *cfg)
{
	if (!cfg)
		return;
	for (size_t i = 0; i < N_KEYS; i++)
		if (keys[i].type == CFG_STR)
			free(*(char **)field(cfg, &keys[i]));
	free(cfg->path);
	memset(cfg, 0, sizeof(*cfg));
}

/* ---- loading ---- */

struct load_ctx {
	const char *path;
	FILE *f;
	struct config *cfg;
	char *line; /* the physical line being served to inih */
	size_t line_cap;
	size_t line_len, line_off;
	int lineno;  /* of that line */
	char *error; /* the first error, malloc'd */
};

static void load_error(struct load_ctx *ctx, int line, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void load_error(struct load_ctx *ctx, int line, const char *fmt, ...)
{
	char why[CONFIG_MAX_LINE + 512];
	va_list ap;
	if (ctx->error)
		return;
	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	size_t n = strlen(ctx->path) + strlen(why) + 32;
	ctx->error = malloc(n);
	if (!ctx->error) {
		fputs("contactd: out of memory\n", stderr);
		abort();
	}
	snprintf(ctx->error, n, "%s:%d: %s", ctx->path, line, why);
}

/* inih's fgets: hands out the current physical line, at most NUM - 1 bytes a call (inih grows
 * its buffer and asks for the rest). Lines lose their leading blanks. */
static char *load_reader(char *str, int num, void *stream)
{
	struct load_ctx *ctx = stream;
	if (ctx->error || num < 2)
		return NULL;
	if (ctx->line_off >= ctx->line_len) {
		errno = 0;
		ssize_t n = getline(&ctx->line, &ctx->line_cap, ctx->f);
		if (n < 0) {
			if (ferror(ctx->f))
				load_error(ctx, 0, "cannot read: %s",
					   strerror(errno ? errno : EIO));
			return NULL;
		}
		ctx->lineno++;
		size_t len = (size_t)n;
		size_t chars = len;
		if (chars > 0 && ctx->line[chars - 1] == '\n')
			chars--;
		if (chars > 0 && ctx->line[chars - 1] == '\r')
			chars--;
		if (chars > CONFIG_MAX_LINE) {
			load_error(ctx, ctx->lineno, "line is longer than %d characters",
				   CONFIG_MAX_LINE);
			return NULL;
		}
		ctx->line_len = len;
		ctx->line_off = 0;
		while (ctx->line_off < len &&
		       (ctx->line[ctx->line_off] == ' ' || ctx->line[ctx->line_off] == '\t'))
			ctx->line_off++;
	}
	size_t take = ctx->line_len - ctx->line_off;
	if (take > (size_t)num - 1)
		take = (size_t)num - 1;
	memcpy(str, ctx->line + ctx->line_off, take);
	str[take] = '\0';
	ctx->line_off += take;
	return str;
}

/* A key given twice: the later one wins, as in most INI readers (no error, no warning). An
 * unknown section is reported at its first key; an unknown section with no keys is ignored. */
static int load_handler(void *user, const char *section, const char *name, const char *value)
{
	struct load_ctx *ctx = user;
	char buf[CONFIG_MAX_LINE + 256];
	bool section_known;

	if (ctx->error)
		return 0;
	if (*section == '\0') {
		load_error(ctx, ctx->lineno, "key '%s': outside any [section]", name);
		return 0;
	}
	const struct cfg_key *k = find_key(section, name, &section_known);
	if (!k) {
		if (section_known)
			load_error(ctx, ctx->lineno, "key '%s.%s': unknown key", section, name);
		else
			load_error(ctx, ctx->lineno, "key '%s.%s': unknown section [%s]", section,
				   name, section);
		return 0;
	}
	const char *why = set_value(ctx->cfg, k, value, buf, sizeof(buf));
	if (why) {
		load_error(ctx, ctx->lineno, "key '%s.%s': %s", section, name, why);
		return 0;
	}
	return 1;
}

static const char *listener_addr(const struct config *cfg, size_t i)
{
	return *(char *const *)(const void *)((const char *)cfg + listeners[i].offset);
}

static bool is_wildcard(const char *host)
{
	unsigned char bin[sizeof(struct in6_addr)];
	return strcmp(host, "0.0.0.0") == 0 ||
	       (inet_pton(AF_INET6, host, bin) == 1 && memcmp(bin, &in6addr_any, sizeof(bin)) == 0);
}

/* True when listeners on A and B (both valid, non-empty) would fight over one port: same
 * port and the same host, or a wildcard host on either side. */
static bool same_address(const char *a, const char *b)
{
	char ha[256], hb[256];
	int pa, pb;
	unsigned char ba[sizeof(struct in6_addr)], bb[sizeof(struct in6_addr)];
	if (config_parse_address(a, ha, sizeof(ha), &pa) < 0 ||
	    config_parse_address(b, hb, sizeof(hb), &pb) < 0 || pa != pb)
		return false;
	if (is_wildcard(ha) || is_wildcard(hb))
		return true;
	if (inet_pton(AF_INET6, ha, ba) == 1 && inet_pton(AF_INET6, hb, bb) == 1)
		return memcmp(ba, bb, sizeof(ba)) == 0;
	return strcasecmp(ha, hb) == 0;
}

/* Rules between keys; reported on line 0, naming the key to fix. */
static void validate(struct load_ctx *ctx)
{
	const struct config *cfg = ctx->cfg;

	if (*cfg->tls_cert_file && !*cfg->tls_key_file)
		load_error(ctx, 0, "key 'tls.key_file': must be set when tls.cert_file is set");
	if (*cfg->tls_key_file && !*cfg->tls_cert_file)
		load_error(ctx, 0, "key 'tls.cert_file': must be set when tls.key_file is set");

	for (size_t i = 0; i < N_LISTENERS; i++) {
		const char *name = listeners[i].name;
		if (!listeners[i].tls || !*listener_addr(cfg, i))
			continue;
		if (!*cfg->tls_cert_file)
			load_error(ctx, 0, "key 'tls.cert_file': must be set: listen.%s uses TLS",
				   name);
		if (!*cfg->tls_key_file)
			load_error(ctx, 0, "key 'tls.key_file': must be set: listen.%s uses TLS",
				   name);
	}

	if (*cfg->tls_require_client_cert) {
		if (!*cfg->tls_cert_file)
			load_error(
			    ctx, 0,
			    "key 'tls.cert_file': must be set: tls.require_client_cert is set");
		if (!*cfg->tls_key_file)
			load_error(
			    ctx, 0,
			    "key 'tls.key_file': must be set: tls.require_client_cert is set");
		if (!*cfg->tls_ca_file)
			load_error(ctx, 0,
				   "key 'tls.ca_file': must be set to verify client certificates: "
				   "tls.require_client_cert is set");
	}

	for (size_t i = 0; i < N_LISTENERS; i++) {
		const char *a = listener_addr(cfg, i);
		if (!*a)
			continue;
		for (size_t j = 0; j < i; j++) {
			const char *b = listener_addr(cfg, j);
			if (*b && same_address(a, b))
				load_error(ctx, 0,
					   "key 'listen.%s': same address as listen.%s (%s)",
					   listeners[i].name, listeners[j].name, b);
		}
	}

	if (*cfg->webhooks_urls && !*cfg->webhooks_secret)
		load_error(ctx, 0, "key 'webhooks.secret': must be set when webhooks.urls is set");
}

int config_load(const char *path, struct config *cfg, char **error_r)
{
	struct load_ctx ctx;
	struct config tmp;

	memset(&ctx, 0, sizeof(ctx));
	ctx.path = path;
	ctx.cfg = &tmp;
	config_defaults(&tmp);
	free(tmp.path);
	tmp.path = xstrdup(path);

	ctx.f = fopen(path, "r");
	if (!ctx.f) {
		load_error(&ctx, 0, "cannot read: %s", strerror(errno));
	} else {
		ini_allow_multiline = false;
		ini_allow_inline_comments = true; /* prefixes stay the built-in ";" */
		ini_allow_bom = true;
		ini_allow_no_value = false;
		ini_stop_on_first_error = true;
		ini_use_stack = false;
		ini_allow_realloc = true;
		ini_initial_alloc = 256;
		ini_max_line = CONFIG_MAX_LINE + 3;
		int r = ini_parse_stream(load_reader, &ctx, load_handler, &ctx);
		if (r == -2)
			load_error(&ctx, 0, "out of memory");
		else if (r > 0)
			load_error(&ctx, r,
				   "syntax error: expected \"[section]\" or \"key = value\"");
		fclose(ctx.f);
		free(ctx.line);
	}
	if (!ctx.error)
		validate(&ctx);
	if (ctx.error) {
		config_free(&tmp);
		memset(cfg, 0, sizeof(*cfg));
		*error_r = ctx.error;
		return -1;
	}
	*cfg = tmp;
	return 0;
}

/* ---- reading a loaded config ---- */

static bool key_equal(const struct config *a, const struct config *b, const struct cfg_key *k)
{
	switch (k->type) {
	case CFG_STR:
		return strcmp(*(char *const *)cfield(a, k), *(char *const *)cfield(b, k)) == 0;
	case CFG_INT:
		return *(const long *)cfield(a, k) == *(const long *)cfield(b, k);
	case CFG_ENUM:
		return *(const int *)cfield(a, k) == *(const int *)cfield(b, k);
	case CFG_BOOL:
		return *(const bool *)cfield(a, k) == *(const bool *)cfield(b, k);
	}
	return false;
}

int config_restart_only_changes(const struct config *old_cfg, const struct config *new_cfg,
				char *buf, size_t bufsz)
{
	int count = 0;
	size_t len = 0;
	if (bufsz > 0)
		buf[0] = '\0';
	for (size_t i = 0; i < N_KEYS; i++) {
		const struct cfg_key *k = &keys[i];
		if (!(k->flags & CFG_RESTART) || key_equal(old_cfg, new_cfg, k))
			continue;
		if (len < bufsz) {
			int n = snprintf(buf + len, bufsz - len, "%s%s.%s", count ? "," : "",
					 k->section, k->name);
			if (n > 0)
				len += (size_t)n;
		}
		count++;
	}
	return count;
}

void config_dump(const struct config *cfg, FILE *out)
{
	const char *section = NULL;
	fprintf(out, "; effective configuration read from %s\n", cfg->path ? cfg->path : "");
	for (size_t i = 0; i < N_KEYS; i++) {
		const struct cfg_key *k = &keys[i];
		if (!section || strcmp(section, k->section) != 0) {
			section = k->section;
			fprintf(out, "[%s]\n", section);
		}
		const char *s = NULL;
		switch (k->type) {
		case CFG_STR:
			s = *(char *const *)cfield(cfg, k);
			if ((k->flags & CFG_SECRET) && *s)
				s = "(set)";
			break;
		case CFG_INT:
			fprintf(out, "%s = %ld\n", k->name, *(const long *)cfield(cfg, k));
			continue;
		case CFG_ENUM:
			s = k->words->name(*(const int *)cfield(cfg, k));
			break;
		case CFG_BOOL:
			s = k->words->name(*(const bool *)cfield(cfg, k));
			break;
		}
		if (s && *s)
			fprintf(out, "%s = %s\n", k->name, s);
		else
			fprintf(out, "%s =\n", k->name);
	}
}

bool config_requires_client_cert(const struct config *cfg, const char *listener)
{
	const char *p = cfg->tls_require_client_cert;
	size_t want = strlen(listener);
	while (p && *p) {
		const char *end = strchr(p, ',');
		size_t n = end ? (size_t)(end - p) : strlen(p);
		while (n > 0 && isspace((unsigned char)*p)) {
			p++;
			n--;
		}
		while (n > 0 && isspace((unsigned char)p[n - 1]))
			n--;
		if (n == want && strncmp(p, listener, n) == 0)
			return true;
		p = end ? end + 1 : NULL;
	}
	return false;
}
