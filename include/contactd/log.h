/* log: one line per event, key=value, to stderr or syslog. */
#ifndef CONTACTD_LOG_H
#define CONTACTD_LOG_H

#include <stdbool.h>

enum log_level { LOG_LEVEL_DEBUG = 0, LOG_LEVEL_INFO, LOG_LEVEL_WARN, LOG_LEVEL_ERROR };
enum log_target { LOG_TARGET_STDERR = 0, LOG_TARGET_SYSLOG };

/* Parses "debug|info|warn|error"; returns -1 on anything else. */
int log_level_parse(const char *s);
const char *log_level_name(enum log_level level);

/* Sets level and target; may be called again (SIGHUP). Routes libevent's log here too. */
void log_setup(enum log_level level, enum log_target target);
bool log_enabled(enum log_level level);

/* Writes "level=<l> event=<event> <fmt...>" as one line. fmt is key=value pairs. */
void log_msg(enum log_level level, const char *event, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

#define log_debug(ev, ...) log_msg(LOG_LEVEL_DEBUG, ev, __VA_ARGS__)
#define log_info(ev, ...)  log_msg(LOG_LEVEL_INFO, ev, __VA_ARGS__)
#define log_warn(ev, ...)  log_msg(LOG_LEVEL_WARN, ev, __VA_ARGS__)
#define log_error(ev, ...) log_msg(LOG_LEVEL_ERROR, ev, __VA_ARGS__)

/* Writes VALUE into BUF (size N) quoted for a key=value log line when it holds spaces,
 * quotes, '=' or control characters; returns BUF. Values longer than N are cut. */
const char *log_quote(char *buf, unsigned n, const char *value);

#endif
