/* Unit tests for the config module: defaults, parsing, every error text, dump, reload rules. */
#include "contactd/config.h"
#include "contactd/log.h"

#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef TESTS_DATA_DIR
#define TESTS_DATA_DIR "tests/data"
#endif

/* config/contactd.conf.example, found from TESTS_DATA_DIR (<root>/tests/data, which need not
 * exist: the path goes through <root>/tests). */
static void example_path(char *buf, size_t bufsz)
{
	const char *data = TESTS_DATA_DIR;
	const char *slash = strrchr(data, '/');
	int n = slash ? (int)(slash - data) : 1;
	snprintf(buf, bufsz, "%.*s/../config/contactd.conf.example", n, slash ? data : ".");
}

/* Temp files made by a test, removed by teardown. */
static char *tmp_paths[64];
static int n_tmp;

static const char *write_tmp(const char *text)
{
	const char *dir = getenv("TMPDIR");
	char path[512];
	snprintf(path, sizeof(path), "%s/contactd-test-config-XXXXXX", dir && *dir ? dir : "/tmp");
	int fd = mkstemp(path);
	ck_assert_int_ge(fd, 0);
	size_t len = strlen(text);
	ck_assert_int_eq(write(fd, text, len), (ssize_t)len);
	close(fd);
	ck_assert_int_lt(n_tmp, 64);
	tmp_paths[n_tmp] = strdup(path);
	return tmp_paths[n_tmp++];
}

static void teardown(void)
{
	for (int i = 0; i < n_tmp; i++) {
		unlink(tmp_paths[i]);
		free(tmp_paths[i]);
	}
	n_tmp = 0;
}

/* Loads TEXT and expects success. */
static void load_ok(const char *text, struct config *cfg)
{
	char *error = NULL;
	const char *path = write_tmp(text);
	int r = config_load(path, cfg, &error);
	ck_assert_msg(r == 0, "config_load failed: %s", error ? error : "(no error)");
	ck_assert_ptr_null(error);
	ck_assert_str_eq(cfg->path, path);
}

/* Loads TEXT and expects the error "<tmpfile>:" EXPECT, with nothing left to free. */
static void load_fails(const char *text, const char *expect)
{
	struct config cfg;
	char *error = NULL;
	char want[2048];
	const char *path = write_tmp(text);
	memset(&cfg, 0xa5, sizeof(cfg));
	ck_assert_int_eq(config_load(path, &cfg, &error), -1);
	ck_assert_ptr_nonnull(error);
	snprintf(want, sizeof(want), "%s:%s", path, expect);
	ck_assert_str_eq(error, want);
	free(error);
	ck_assert_ptr_null(cfg.path);
	ck_assert_ptr_null(cfg.db_conninfo);
	ck_assert_ptr_null(cfg.listen_client);
}

static void assert_defaults(const struct config *cfg)
{
	ck_assert_int_eq(cfg->log_level, LOG_LEVEL_INFO);
	ck_assert_int_eq(cfg->log_target, LOG_TARGET_STDERR);
	ck_assert_str_eq(cfg->db_conninfo, "dbname=contactd");
	ck_assert_int_eq(cfg->db_pool_size, 4);
	ck_assert(cfg->db_migrate_auto);
	ck_assert_str_eq(cfg->listen_client, "127.0.0.1:7400");
	ck_assert_str_eq(cfg->listen_client_tls, "");
	ck_assert_str_eq(cfg->listen_phone, "127.0.0.1:7410");
	ck_assert_str_eq(cfg->listen_phone_tls, "");
	ck_assert_str_eq(cfg->listen_lmtp, "127.0.0.1:2424");
	ck_assert_str_eq(cfg->listen_smtp, "");
	ck_assert_str_eq(cfg->listen_http, "127.0.0.1:8080");
	ck_assert_str_eq(cfg->listen_https, "");
	ck_assert_str_eq(cfg->tls_cert_file, "");
	ck_assert_str_eq(cfg->tls_key_file, "");
	ck_assert_str_eq(cfg->tls_ca_file, "");
	ck_assert_str_eq(cfg->tls_require_client_cert, "");
	ck_assert_int_eq(cfg->max_frame_bytes, 65536);
	ck_assert_int_eq(cfg->max_email_bytes, 26214400);
	ck_assert_int_eq(cfg->max_connections, 50000);
	ck_assert_int_eq(cfg->hello_timeout_s, 10);
	ck_assert_int_eq(cfg->max_http_body_bytes, 1048576);
	ck_assert_int_eq(cfg->http_timeout_s, 30);
	ck_assert_str_eq(cfg->routing_default_queue, "");
	ck_assert_int_eq(cfg->offer_timeout_s, 20);
	ck_assert_int_eq(cfg->reject_cooldown_s, 300);
	ck_assert_int_eq(cfg->sticky_agent_s, 600);
	ck_assert_str_eq(cfg->chat_identity_secret, "");
	ck_assert_str_eq(cfg->email_relay, "");
	ck_assert_str_eq(cfg->webhooks_urls, "");
	ck_assert_str_eq(cfg->webhooks_secret, "");
}

/* ---- good files ---- */

START_TEST(defaults_from_empty_file)
{
	struct config cfg;
	load_ok("", &cfg);
	assert_defaults(&cfg);
	config_free(&cfg);
	ck_assert_ptr_null(cfg.path);

	config_defaults(&cfg);
	assert_defaults(&cfg);
	config_free(&cfg);
	config_free(NULL);
}
END_TEST

/* The block of SPEC section 6, verbatim. */
static const char spec_example[] =
    "[daemon]\n"
    "log_level = info            ; debug | info | warn | error\n"
    "log_target = stderr         ; stderr | syslog\n"
    "[database]\n"
    "conninfo = dbname=contactd  ; any libpq conninfo string\n"
    "pool_size = 4\n"
    "migrate = auto              ; auto | off\n"
    "[listen]\n"
    "client = 127.0.0.1:7400\n"
    "client_tls =\n"
    "phone = 127.0.0.1:7410\n"
    "phone_tls =\n"
    "lmtp = 127.0.0.1:2424\n"
    "smtp =\n"
    "http = 127.0.0.1:8080\n"
    "https =\n"
    "[tls]\n"
    "cert_file =\n"
    "key_file =\n"
    "ca_file =                   ; verify client certificates against this CA\n"
    "require_client_cert =       ; listener names, comma separated\n"
    "[limits]\n"
    "max_frame_bytes = 65536\n"
    "max_email_bytes = 26214400\n"
    "max_connections = 50000\n"
    "hello_timeout_s = 10\n"
    "[routing]\n"
    "default_queue =             ; for contacts that name none; empty: the first queue created\n"
    "offer_timeout_s = 20\n"
    "reject_cooldown_s = 300\n"
    "sticky_agent_s = 600\n"
    "[chat]\n"
    "identity_secret =\n"
    "[email]\n"
    "relay =                     ; smtp://host:port or smtps://host:port\n"
    "[webhooks]\n"
    "urls =                      ; comma separated\n"
    "secret =\n";

START_TEST(spec_example_parses)
{
	struct config cfg;
	load_ok(spec_example, &cfg);
	assert_defaults(&cfg);
	config_free(&cfg);
}
END_TEST

START_TEST(example_file_parses)
{
	struct config cfg;
	char *error = NULL;
	char path[1024];
	example_path(path, sizeof(path));
	int r = config_load(path, &cfg, &error);
	ck_assert_msg(r == 0, "%s", error ? error : "");
	assert_defaults(&cfg);
	config_free(&cfg);
}
END_TEST

START_TEST(values_are_read)
{
	struct config cfg;
	const char *cert = write_tmp("cert");
	const char *key = write_tmp("key");
	const char *ca = write_tmp("ca");
	char text[4096];
	snprintf(text, sizeof(text),
		 "# a comment line\n"
		 "; another\n"
		 "[daemon]\n"
		 "log_level = debug\n"
		 "log_target = syslog\n"
		 "[database]\n"
		 "conninfo = host=db user=c password=a;b\n"
		 "pool_size = 64\n"
		 "migrate = off\n"
		 "[listen]\n"
		 "  client = [::1]:7400\n"
		 "\tclient_tls = 0.0.0.0:7401\n"
		 "phone = localhost:7410\n"
		 "phone_tls = [::]:7411\n"
		 "lmtp =\n"
		 "smtp = 127.0.0.1:25\n"
		 "http = 127.0.0.1:8080\r\n"
		 "https = mail.example.org:8443\n"
		 "[tls]\n"
		 "cert_file = %s\n"
		 "key_file = %s\n"
		 "ca_file = %s\n"
		 "require_client_cert = phone_tls , https\n"
		 "[limits]\n"
		 "max_frame_bytes = 256\n"
		 "max_email_bytes = 1073741824\n"
		 "max_connections = 1\n"
		 "hello_timeout_s = 3600\n"
		 "max_http_body_bytes = 1024\n"
		 "http_timeout_s = 007\n"
		 "[routing]\n"
		 "default_queue = sales team\n"
		 "offer_timeout_s = 1\n"
		 "reject_cooldown_s = 0\n"
		 "sticky_agent_s = 86400\n"
		 "offer_timeout_s = 2 ; the later one wins\n"
		 "[chat]\n"
		 "identity_secret = s3cret\n"
		 "[email]\n"
		 "relay = smtps://relay.example.org:465\n"
		 "[webhooks]\n"
		 "urls = https://a.example/hook, http://b.example:81/x\n"
		 "secret = hush\n",
		 cert, key, ca);
	load_ok(text, &cfg);
	ck_assert_int_eq(cfg.log_level, LOG_LEVEL_DEBUG);
	ck_assert_int_eq(cfg.log_target, LOG_TARGET_SYSLOG);
	ck_assert_str_eq(cfg.db_conninfo, "host=db user=c password=a;b");
	ck_assert_int_eq(cfg.db_pool_size, 64);
	ck_assert(!cfg.db_migrate_auto);
	ck_assert_str_eq(cfg.listen_client, "[::1]:7400");
	ck_assert_str_eq(cfg.listen_client_tls, "0.0.0.0:7401");
	ck_assert_str_eq(cfg.listen_phone, "localhost:7410");
	ck_assert_str_eq(cfg.listen_lmtp, "");
	ck_assert_str_eq(cfg.listen_http, "127.0.0.1:8080");
	ck_assert_str_eq(cfg.listen_https, "mail.example.org:8443");
	ck_assert_str_eq(cfg.tls_cert_file, cert);
	ck_assert_str_eq(cfg.tls_ca_file, ca);
	ck_assert(config_requires_client_cert(&cfg, "phone_tls"));
	ck_assert(config_requires_client_cert(&cfg, "https"));
	ck_assert(!config_requires_client_cert(&cfg, "phone"));
	ck_assert(!config_requires_client_cert(&cfg, "http"));
	ck_assert_int_eq(cfg.max_frame_bytes, 256);
	ck_assert_int_eq(cfg.max_email_bytes, 1073741824);
	ck_assert_int_eq(cfg.max_connections, 1);
	ck_assert_int_eq(cfg.hello_timeout_s, 3600);
	ck_assert_int_eq(cfg.max_http_body_bytes, 1024);
	ck_assert_int_eq(cfg.http_timeout_s, 7);
	ck_assert_str_eq(cfg.routing_default_queue, "sales team");
	ck_assert_int_eq(cfg.offer_timeout_s, 2);
	ck_assert_int_eq(cfg.reject_cooldown_s, 0);
	ck_assert_int_eq(cfg.sticky_agent_s, 86400);
	ck_assert_str_eq(cfg.chat_identity_secret, "s3cret");
	ck_assert_str_eq(cfg.email_relay, "smtps://relay.example.org:465");
	ck_assert_str_eq(cfg.webhooks_urls, "https://a.example/hook, http://b.example:81/x");
	ck_assert_str_eq(cfg.webhooks_secret, "hush");
	config_free(&cfg);
}
END_TEST

START_TEST(long_line_is_whole)
{
	struct config cfg;
	static char text[5000];
	char value[3001];
	memset(value, 'x', sizeof(value) - 1);
	value[sizeof(value) - 1] = '\0';
	snprintf(text, sizeof(text), "[database]\nconninfo = password=%s\npool_size = 5\n", value);
	load_ok(text, &cfg);
	ck_assert_uint_eq(strlen(cfg.db_conninfo), strlen("password=") + 3000);
	ck_assert_int_eq(cfg.db_pool_size, 5);
	config_free(&cfg);
}
END_TEST

/* ---- bad values ---- */

START_TEST(bad_integers)
{
	load_fails("[limits]\n\nmax_frame_bytes = abc\n",
		   "3: key 'limits.max_frame_bytes': must be an integer between 256 and 16777216, "
		   "got \"abc\"");
	load_fails("[limits]\nmax_frame_bytes = 255\n",
		   "2: key 'limits.max_frame_bytes': must be an integer between 256 and 16777216, "
		   "got \"255\"");
	load_fails("[limits]\nmax_frame_bytes = 16777217\n",
		   "2: key 'limits.max_frame_bytes': must be an integer between 256 and 16777216, "
		   "got \"16777217\"");
	load_fails("[database]\npool_size = 0\n",
		   "2: key 'database.pool_size': must be an integer between 1 and 64, got \"0\"");
	load_fails("[database]\npool_size = 65\n",
		   "2: key 'database.pool_size': must be an integer between 1 and 64, got \"65\"");
	load_fails("[database]\npool_size = 4x\n",
		   "2: key 'database.pool_size': must be an integer between 1 and 64, got \"4x\"");
	load_fails("[database]\npool_size = 0x4\n",
		   "2: key 'database.pool_size': must be an integer between 1 and 64, got \"0x4\"");
	load_fails("[database]\npool_size = +4\n",
		   "2: key 'database.pool_size': must be an integer between 1 and 64, got \"+4\"");
	load_fails("[database]\npool_size =\n",
		   "2: key 'database.pool_size': must be an integer between 1 and 64, got \"\"");
	load_fails("[routing]\nreject_cooldown_s = -1\n",
		   "2: key 'routing.reject_cooldown_s': must be an integer between 0 and 86400, "
		   "got \"-1\"");
	load_fails("[limits]\nmax_connections = 99999999999999999999999\n",
		   "2: key 'limits.max_connections': must be an integer between 1 and 1000000, "
		   "got \"99999999999999999999999\"");
	load_fails("[limits]\nhttp_timeout_s = 3601\n",
		   "2: key 'limits.http_timeout_s': must be an integer between 1 and 3600, "
		   "got \"3601\"");
	load_fails("[limits]\nmax_http_body_bytes = 1023\n",
		   "2: key 'limits.max_http_body_bytes': must be an integer between 1024 and "
		   "67108864, got \"1023\"");
}
END_TEST

START_TEST(bad_enums)
{
	load_fails("[daemon]\nlog_level = verbose\n",
		   "2: key 'daemon.log_level': must be one of debug, info, warn, error, "
		   "got \"verbose\"");
	load_fails("[daemon]\nlog_level = INFO\n",
		   "2: key 'daemon.log_level': must be one of debug, info, warn, error, "
		   "got \"INFO\"");
	load_fails("[daemon]\nlog_target = file\n",
		   "2: key 'daemon.log_target': must be one of stderr, syslog, got \"file\"");
	load_fails("[database]\nmigrate = yes\n",
		   "2: key 'database.migrate': must be one of auto, off, got \"yes\"");
}
END_TEST

START_TEST(unknown_names)
{
	load_fails("[limits]\nmax_frame_bytes = 1024\nfoo = 1\n",
		   "3: key 'limits.foo': unknown key");
	load_fails("[daemon]\n[logging]\nlevel = info\n",
		   "3: key 'logging.level': unknown section [logging]");
	load_fails("log_level = info\n", "1: key 'log_level': outside any [section]");
	load_fails("[daemon]\nlog_level info\n",
		   "2: syntax error: expected \"[section]\" or \"key = value\"");
	load_fails("[daemon\nlog_level = info\n",
		   "1: syntax error: expected \"[section]\" or \"key = value\"");
}
END_TEST

START_TEST(line_too_long)
{
	static char text[6000];
	char value[4200];
	memset(value, 'x', sizeof(value) - 1);
	value[sizeof(value) - 1] = '\0';
	snprintf(text, sizeof(text), "[database]\nconninfo = %s\n", value);
	load_fails(text, "2: line is longer than 4096 characters");
}
END_TEST

START_TEST(bad_addresses)
{
	load_fails("[listen]\nclient = localhost\n",
		   "2: key 'listen.client': must be \"host:port\" or \"[v6addr]:port\", "
		   "got \"localhost\"");
	load_fails("[listen]\nclient = 127.0.0.1:0\n",
		   "2: key 'listen.client': port must be between 1 and 65535, got \"127.0.0.1:0\"");
	load_fails("[listen]\nphone = 127.0.0.1:65536\n",
		   "2: key 'listen.phone': port must be between 1 and 65535, "
		   "got \"127.0.0.1:65536\"");
	load_fails("[listen]\nhttp = 127.0.0.1:80x\n",
		   "2: key 'listen.http': port must be between 1 and 65535, got \"127.0.0.1:80x\"");
	load_fails("[listen]\nhttp = 127.0.0.1:\n",
		   "2: key 'listen.http': port must be between 1 and 65535, got \"127.0.0.1:\"");
	load_fails("[listen]\nlmtp = :2424\n",
		   "2: key 'listen.lmtp': host is missing, got \":2424\"");
	load_fails("[listen]\nlmtp = ::1:2424\n",
		   "2: key 'listen.lmtp': an IPv6 address needs brackets: \"[v6addr]:port\", "
		   "got \"::1:2424\"");
	load_fails("[listen]\nsmtp = [::1]25\n",
		   "2: key 'listen.smtp': must be \"host:port\" or \"[v6addr]:port\", "
		   "got \"[::1]25\"");
	load_fails(
	    "[listen]\nsmtp = [1.2.3.4]:25\n",
	    "2: key 'listen.smtp': not an IPv6 address in the brackets, got \"[1.2.3.4]:25\"");
	load_fails("[listen]\nhttps = my host:8443\n",
		   "2: key 'listen.https': host must be an IP address or a hostname, "
		   "got \"my host:8443\"");
	load_fails("[listen]\nhttps = 999.1.1.1:8443\n",
		   "2: key 'listen.https': host must be an IP address or a hostname, "
		   "got \"999.1.1.1:8443\"");
}
END_TEST

START_TEST(tls_rules)
{
	char text[2048];
	const char *cert = write_tmp("cert");
	const char *key = write_tmp("key");

	load_fails("[listen]\nclient_tls = 127.0.0.1:7401\n",
		   "0: key 'tls.cert_file': must be set: listen.client_tls uses TLS");
	load_fails("[listen]\nhttps = 127.0.0.1:8443\n",
		   "0: key 'tls.cert_file': must be set: listen.https uses TLS");
	snprintf(text, sizeof(text),
		 "[listen]\nphone_tls = 127.0.0.1:7411\n[tls]\ncert_file = %s\n", cert);
	load_fails(text, "0: key 'tls.key_file': must be set when tls.cert_file is set");

	load_fails("[tls]\n\ncert_file = /nonexistent/cert.pem\n",
		   "3: key 'tls.cert_file': cannot read \"/nonexistent/cert.pem\": "
		   "No such file or directory");
	load_fails("[tls]\nca_file = /\n", "2: key 'tls.ca_file': \"/\" is not a regular file");

	load_fails("[tls]\nrequire_client_cert = client_tls, webui\n",
		   "2: key 'tls.require_client_cert': unknown listener \"webui\" (expected client, "
		   "client_tls, phone, phone_tls, lmtp, smtp, http, https)");
	load_fails("[tls]\nrequire_client_cert = client_tls,,https\n",
		   "2: key 'tls.require_client_cert': has an empty item between commas");
	load_fails("[tls]\nrequire_client_cert = lmtp\n",
		   "0: key 'tls.cert_file': must be set: tls.require_client_cert is set");
	snprintf(text, sizeof(text),
		 "[listen]\nclient_tls = 127.0.0.1:7401\n[tls]\ncert_file = %s\nkey_file = %s\n"
		 "require_client_cert = client_tls\n",
		 cert, key);
	load_fails(text, "0: key 'tls.ca_file': must be set to verify client certificates: "
			 "tls.require_client_cert is set");

	/* With cert and key, TLS listeners load. */
	struct config cfg;
	snprintf(text, sizeof(text),
		 "[listen]\nclient_tls = 127.0.0.1:7401\nhttps = 127.0.0.1:8443\n"
		 "[tls]\ncert_file = %s\nkey_file = %s\n",
		 cert, key);
	load_ok(text, &cfg);
	ck_assert(!config_requires_client_cert(&cfg, "client_tls"));
	config_free(&cfg);
}
END_TEST

START_TEST(relay_and_webhooks)
{
	load_fails("[email]\nrelay = http://relay:25\n",
		   "2: key 'email.relay': must be empty, smtp://host:port or smtps://host:port, "
		   "got \"http://relay:25\"");
	load_fails("[email]\nrelay = smtp://relay\n",
		   "2: key 'email.relay': must be empty, smtp://host:port or smtps://host:port, "
		   "got \"smtp://relay\"");
	load_fails("[webhooks]\nsecret = x\nurls = https://ok.example/, ftp://bad.example/\n",
		   "3: key 'webhooks.urls': each URL must start with http:// or https://, "
		   "got \"ftp://bad.example/\"");
	load_fails("[webhooks]\nurls = https://ok.example/\n",
		   "0: key 'webhooks.secret': must be set when webhooks.urls is set");

	struct config cfg;
	load_ok("[email]\nrelay = smtp://[::1]:25\n", &cfg);
	config_free(&cfg);
}
END_TEST

START_TEST(duplicate_addresses)
{
	load_fails("[listen]\nphone = 127.0.0.1:7400\n",
		   "0: key 'listen.phone': same address as listen.client (127.0.0.1:7400)");
	load_fails("[listen]\nhttp = 0.0.0.0:2424\n",
		   "0: key 'listen.http': same address as listen.lmtp (127.0.0.1:2424)");
	load_fails("[listen]\nclient = [::1]:9000\nphone = [0:0::1]:9000\n",
		   "0: key 'listen.phone': same address as listen.client ([::1]:9000)");
	load_fails("[listen]\nclient = Example.org:9000\nphone = example.ORG:9000\n",
		   "0: key 'listen.phone': same address as listen.client (Example.org:9000)");

	/* Same port on different hosts, or a listener turned off, is fine. */
	struct config cfg;
	load_ok("[listen]\nclient = 127.0.0.2:7410\nlmtp =\nsmtp = 127.0.0.1:2424\n", &cfg);
	config_free(&cfg);
}
END_TEST

START_TEST(missing_file)
{
	struct config cfg;
	char *error = NULL;
	ck_assert_int_eq(config_load("/nonexistent/contactd.conf", &cfg, &error), -1);
	ck_assert_str_eq(error,
			 "/nonexistent/contactd.conf:0: cannot read: No such file or directory");
	free(error);
	ck_assert_ptr_null(cfg.path);

	error = NULL;
	ck_assert_int_eq(config_load("/", &cfg, &error), -1);
	ck_assert_str_eq(error, "/:0: cannot read: Is a directory");
	free(error);
}
END_TEST

/* ---- using a loaded config ---- */

START_TEST(restart_only_changes)
{
	struct config a, b;
	char buf[256];
	load_ok("", &a);
	load_ok("[daemon]\nlog_level = debug\n[listen]\nclient = 127.0.0.1:9400\n"
		"[limits]\nmax_connections = 10\n[webhooks]\nurls = http://x/\nsecret = s\n",
		&b);
	ck_assert_int_eq(config_restart_only_changes(&a, &b, buf, sizeof(buf)), 0);
	ck_assert_str_eq(buf, "");
	config_free(&b);

	load_ok("[daemon]\nlog_target = syslog\n[database]\nconninfo = dbname=other\n"
		"pool_size = 8\nmigrate = off\n",
		&b);
	ck_assert_int_eq(config_restart_only_changes(&a, &b, buf, sizeof(buf)), 4);
	ck_assert_str_eq(buf, "daemon.log_target,database.conninfo,database.pool_size,"
			      "database.migrate");
	/* A short buffer still gets the count, and stays terminated. */
	ck_assert_int_eq(config_restart_only_changes(&a, &b, buf, 10), 4);
	ck_assert_str_eq(buf, "daemon.lo");
	config_free(&a);
	config_free(&b);
}
END_TEST

static char *dump(const struct config *cfg)
{
	char *text = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&text, &len);
	ck_assert_ptr_nonnull(f);
	config_dump(cfg, f);
	fclose(f);
	return text;
}

START_TEST(dump_hides_secrets)
{
	struct config cfg;
	load_ok("[database]\nconninfo = host=db password=hunter2\n[chat]\nidentity_secret = "
		"chatsecret\n[webhooks]\nurls = https://h.example/\nsecret = hooksecret\n",
		&cfg);
	char *text = dump(&cfg);
	ck_assert_ptr_null(strstr(text, "hunter2"));
	ck_assert_ptr_null(strstr(text, "chatsecret"));
	ck_assert_ptr_null(strstr(text, "hooksecret"));
	ck_assert_ptr_nonnull(strstr(text, "[database]\nconninfo = (set)\n"));
	ck_assert_ptr_nonnull(strstr(text, "[chat]\nidentity_secret = (set)\n"));
	ck_assert_ptr_nonnull(strstr(text, "urls = https://h.example/\nsecret = (set)\n"));
	ck_assert_ptr_nonnull(strstr(text, "[daemon]\nlog_level = info\nlog_target = stderr\n"));
	ck_assert_ptr_nonnull(strstr(text, "pool_size = 4\nmigrate = auto\n"));
	ck_assert_ptr_nonnull(strstr(text, "client_tls =\n"));
	ck_assert_ptr_nonnull(strstr(text, "max_http_body_bytes = 1048576\nhttp_timeout_s = 30\n"));
	free(text);
	config_free(&cfg);

	/* Empty secrets print empty; the dump is a config file that loads back (but for the
	 * secrets, which now say "(set)"). */
	config_defaults(&cfg);
	text = dump(&cfg);
	config_free(&cfg);
	ck_assert_ptr_nonnull(strstr(text, "identity_secret =\n"));
	ck_assert_ptr_nonnull(strstr(text, "conninfo = (set)\n"));
	load_ok(text, &cfg);
	free(text);
	ck_assert_str_eq(cfg.db_conninfo, "(set)");
	ck_assert_str_eq(cfg.chat_identity_secret, "");
	ck_assert_str_eq(cfg.listen_client, "127.0.0.1:7400");
	ck_assert_int_eq(cfg.max_frame_bytes, 65536);
	ck_assert(cfg.db_migrate_auto);
	config_free(&cfg);
}
END_TEST

START_TEST(parse_address)
{
	char host[64];
	int port = 0;
	ck_assert_int_eq(config_parse_address("127.0.0.1:7400", host, sizeof(host), &port), 0);
	ck_assert_str_eq(host, "127.0.0.1");
	ck_assert_int_eq(port, 7400);
	ck_assert_int_eq(config_parse_address("[::1]:8443", host, sizeof(host), &port), 0);
	ck_assert_str_eq(host, "::1");
	ck_assert_int_eq(port, 8443);
	ck_assert_int_eq(config_parse_address("[2001:db8::7]:1", host, sizeof(host), &port), 0);
	ck_assert_str_eq(host, "2001:db8::7");
	ck_assert_int_eq(port, 1);
	ck_assert_int_eq(config_parse_address("mx-1.example.org:65535", host, sizeof(host), &port),
			 0);
	ck_assert_str_eq(host, "mx-1.example.org");
	ck_assert_int_eq(port, 65535);

	static const char *const bad[] = {
	    "",		"127.0.0.1",	"127.0.0.1:", "127.0.0.1:0", "127.0.0.1:65536",
	    ":80",	"::1:80",	"[::1]",      "[::1]80",     "[::1:80",
	    "[]:80",	"[1.2.3.4]:80", "a b:80",     "host:8 0",    "host:-80",
	    "host:+80", "1.2.3.999:80", "host:0x50",  "host/x:80",
	};
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		ck_assert_msg(config_parse_address(bad[i], host, sizeof(host), &port) == -1,
			      "accepted \"%s\"", bad[i]);
	/* The host must fit. */
	ck_assert_int_eq(config_parse_address("example.org:80", host, 12, &port), 0);
	ck_assert_int_eq(config_parse_address("example.org:80", host, 11, &port), -1);
}
END_TEST

static Suite *config_suite(void)
{
	Suite *s = suite_create("config");
	TCase *tc = tcase_create("config");
	tcase_add_checked_fixture(tc, NULL, teardown);
	tcase_add_test(tc, defaults_from_empty_file);
	tcase_add_test(tc, spec_example_parses);
	tcase_add_test(tc, example_file_parses);
	tcase_add_test(tc, values_are_read);
	tcase_add_test(tc, long_line_is_whole);
	tcase_add_test(tc, bad_integers);
	tcase_add_test(tc, bad_enums);
	tcase_add_test(tc, unknown_names);
	tcase_add_test(tc, line_too_long);
	tcase_add_test(tc, bad_addresses);
	tcase_add_test(tc, tls_rules);
	tcase_add_test(tc, relay_and_webhooks);
	tcase_add_test(tc, duplicate_addresses);
	tcase_add_test(tc, missing_file);
	tcase_add_test(tc, restart_only_changes);
	tcase_add_test(tc, dump_hides_secrets);
	tcase_add_test(tc, parse_address);
	suite_add_tcase(s, tc);
	return s;
}

int main(void)
{
	SRunner *sr = srunner_create(config_suite());
	srunner_run_all(sr, CK_NORMAL);
	int failed = srunner_ntests_failed(sr);
	srunner_free(sr);
	return failed ? EXIT_FAILURE : EXIT_SUCCESS;
}
