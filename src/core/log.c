#include "contactd/log.h"

#include <event2/event.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <syslog.h>
#include <time.h>
#include <unistd.h>

static enum log_level cur_level = LOG_LEVEL_INFO;
static enum log_target cur_target = LOG_TARGET_STDERR;
static bool syslog_open;

static const char *const level_names[] = {"debug", "info", "warn", "error"};

int log_level_parse(const char *s)
{
	for (int i = 0; i < 4; i++)
		if (strcmp(s, level_names[i]) == 0)
			return i;
	return -1;
}

const char *log_level_name(enum log_level level)
{
	return (unsigned)level < 4 ? level_names[level] : "?";
}

static void libevent_log_cb(int severity, const char *msg)
{
	enum log_level l = severity == EVENT_LOG_DEBUG	? LOG_LEVEL_DEBUG
			   : severity == EVENT_LOG_MSG	? LOG_LEVEL_INFO
			   : severity == EVENT_LOG_WARN ? LOG_LEVEL_WARN
							: LOG_LEVEL_ERROR;
	char q[512];
	log_msg(l, "libevent", "msg=%s", log_quote(q, sizeof(q), msg));
}

void log_setup(enum log_level level, enum log_target target)
{
	cur_level = level;
	if (target == LOG_TARGET_SYSLOG && !syslog_open) {
		openlog("contactd", LOG_PID | LOG_NDELAY, LOG_DAEMON);
		syslog_open = true;
	}
	cur_target = target;
	event_set_log_callback(libevent_log_cb);
}

bool log_enabled(enum log_level level)
{
	return level >= cur_level;
}

void log_msg(enum log_level level, const char *event, const char *fmt, ...)
{
	if (level < cur_level)
		return;
	char line[2048];
	int n = snprintf(line, sizeof(line), "level=%s event=%s", level_names[level], event);
	if (n < 0)
		return;
	if (fmt && *fmt && (size_t)n < sizeof(line) - 1) {
		line[n++] = ' ';
		va_list ap;
		va_start(ap, fmt);
		int m = vsnprintf(line + n, sizeof(line) - (size_t)n, fmt, ap);
		va_end(ap);
		(void)m; /* a cut line is still written */
	}
	if (cur_target == LOG_TARGET_SYSLOG) {
		static const int prio[] = {LOG_DEBUG, LOG_INFO, LOG_WARNING, LOG_ERR};
		syslog(prio[level], "%s", line);
		return;
	}
	struct timespec ts;
	clock_gettime(CLOCK_REALTIME, &ts);
	struct tm tm;
	gmtime_r(&ts.tv_sec, &tm);
	char stamp[40];
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%S", &tm);
	fprintf(stderr, "ts=%s.%03ldZ %s\n", stamp, ts.tv_nsec / 1000000, line);
}

const char *log_quote(char *buf, unsigned n, const char *value)
{
	if (n == 0)
		return "";
	if (!value)
		value = "";
	bool need = *value == '\0';
	for (const char *p = value; *p && !need; p++)
		if (*p == ' ' || *p == '"' || *p == '=' || *p == '\\' || (unsigned char)*p < 0x20)
			need = true;
	if (!need) {
		snprintf(buf, n, "%s", value);
		return buf;
	}
	unsigned o = 0;
	buf[o++] = '"';
	for (const char *p = value; *p && o + 4 < n; p++) {
		unsigned char c = (unsigned char)*p;
		if (c == '"' || c == '\\') {
			buf[o++] = '\\';
			buf[o++] = (char)c;
		} else if (c < 0x20) {
			buf[o++] = ' ';
		} else {
			buf[o++] = (char)c;
		}
	}
	if (o < n - 1)
		buf[o++] = '"';
	buf[o] = '\0';
	return buf;
}
