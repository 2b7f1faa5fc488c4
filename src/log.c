#include "config.h"

#include <errno.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>

#include "log.h"

#define LOG_LINE_MAX 4096
#define LOG_VALUE_MAX 512

static atomic_int log_level_cur = LOG_LVL_INFO;
static atomic_int log_format_cur = LOG_FMT_TEXT;

static const char *const level_names[] = { "error", "warn", "info", "debug" };

void
log_configure(enum log_level level, enum log_format format)
{
	atomic_store(&log_level_cur, (int)level);
	atomic_store(&log_format_cur, (int)format);
}

int
log_level_parse(const char *s)
{
	int i;

	for (i = 0; i < 4; i++)
		if (strcmp(s, level_names[i]) == 0)
			return i;
	return -1;
}

int
log_format_parse(const char *s)
{
	if (strcmp(s, "text") == 0)
		return LOG_FMT_TEXT;
	if (strcmp(s, "json") == 0)
		return LOG_FMT_JSON;
	return -1;
}

int
log_enabled(enum log_level level)
{
	return (int)level <= atomic_load(&log_level_cur);
}

/* A bounded line buffer. */
struct line {
	char buf[LOG_LINE_MAX];
	size_t len;
};

static void
line_put(struct line *l, const char *s, size_t n)
{
	if (n > sizeof(l->buf) - 2 - l->len)
		n = sizeof(l->buf) - 2 - l->len;
	memcpy(l->buf + l->len, s, n);
	l->len += n;
}

static void
line_puts(struct line *l, const char *s)
{
	line_put(l, s, strlen(s));
}

/* Escaped value: JSON string contents, or text with quotes when needed. */
static void
line_value(struct line *l, const char *v, int json)
{
	size_t i, n = strlen(v);
	char tmp[8];

	if (n > LOG_VALUE_MAX)
		n = LOG_VALUE_MAX;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)v[i];
		if (c == '"' || c == '\\') {
			tmp[0] = '\\';
			tmp[1] = (char)c;
			line_put(l, tmp, 2);
		} else if (c < 0x20 || c >= 0x7f) {
			snprintf(tmp, sizeof(tmp), "\\u%04x", c);
			line_put(l, tmp, 6);
		} else
			line_put(l, (const char *)&v[i], 1);
	}
	if (strlen(v) > LOG_VALUE_MAX)
		line_puts(l, "...");
}

static int
needs_quotes(const char *v)
{
	if (*v == '\0')
		return 1;
	for (; *v != '\0'; v++)
		if (*v == ' ' || *v == '"' || *v == '=' || (unsigned char)*v < 0x21 ||
		    (unsigned char)*v >= 0x7f)
			return 1;
	return 0;
}

static void
line_start(struct line *l, enum log_level level, int json)
{
	struct timeval tv;
	struct tm tm;
	char ts[96];

	gettimeofday(&tv, NULL);
	gmtime_r(&tv.tv_sec, &tm);
	snprintf(ts, sizeof(ts), "%04d-%02d-%02dT%02d:%02d:%02d.%06ldZ",
	    tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
	    tm.tm_min, tm.tm_sec, (long)tv.tv_usec);
	l->len = 0;
	if (json) {
		line_puts(l, "{\"time\":\"");
		line_puts(l, ts);
		line_puts(l, "\",\"level\":\"");
		line_puts(l, level_names[level]);
		line_puts(l, "\"");
	} else {
		line_puts(l, ts);
		line_puts(l, " ");
		line_puts(l, level_names[level]);
		line_puts(l, " ");
	}
}

static void
line_emit(struct line *l, int json)
{
	ssize_t w;
	size_t off = 0;

	if (json)
		line_puts(l, "}");
	l->buf[l->len++] = '\n';
	while (off < l->len) {
		w = write(STDERR_FILENO, l->buf + off, l->len - off);
		if (w < 0 && errno == EINTR)
			continue;
		if (w <= 0)
			break;
		off += (size_t)w;
	}
}

void
log_msg(enum log_level level, const char *fmt, ...)
{
	struct line l;
	char msg[LOG_LINE_MAX];
	va_list ap;
	int json = atomic_load(&log_format_cur) == LOG_FMT_JSON;

	if (!log_enabled(level))
		return;
	va_start(ap, fmt);
	vsnprintf(msg, sizeof(msg), fmt, ap);
	va_end(ap);
	line_start(&l, level, json);
	if (json) {
		line_puts(&l, ",\"msg\":\"");
		line_value(&l, msg, 1);
		line_puts(&l, "\"");
	} else {
		size_t i;
		/* keep one record per line: control characters become '?' */
		for (i = 0; msg[i] != '\0'; i++)
			if ((unsigned char)msg[i] < 0x20)
				msg[i] = '?';
		line_puts(&l, msg);
	}
	line_emit(&l, json);
}

void
log_fields(enum log_level level, const char *msg, ...)
{
	struct line l;
	va_list ap;
	const char *k, *v;
	int json = atomic_load(&log_format_cur) == LOG_FMT_JSON;

	if (!log_enabled(level))
		return;
	line_start(&l, level, json);
	if (json) {
		line_puts(&l, ",\"msg\":\"");
		line_value(&l, msg, 1);
		line_puts(&l, "\"");
	} else
		line_puts(&l, msg);
	va_start(ap, msg);
	while ((k = va_arg(ap, const char *)) != NULL) {
		v = va_arg(ap, const char *);
		if (v == NULL)
			continue;
		if (json) {
			line_puts(&l, ",\"");
			line_puts(&l, k);
			line_puts(&l, "\":\"");
			line_value(&l, v, 1);
			line_puts(&l, "\"");
		} else {
			line_puts(&l, " ");
			line_puts(&l, k);
			line_puts(&l, "=");
			if (needs_quotes(v)) {
				line_puts(&l, "\"");
				line_value(&l, v, 0);
				line_puts(&l, "\"");
			} else
				line_value(&l, v, 0);
		}
	}
	va_end(ap);
	line_emit(&l, json);
}

void
log_crypto_err(const char *what)
{
	unsigned long e;
	char buf[256];
	int any = 0;

	while ((e = ERR_get_error()) != 0) {
		ERR_error_string_n(e, buf, sizeof(buf));
		log_err("%s: %s", what, buf);
		any = 1;
	}
	if (!any)
		log_err("%s", what);
}
