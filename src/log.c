#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/err.h>

#include "log.h"

#define LOG_LINE_MAX 4096
#define LOG_VALUE_MAX 512
#define LOG_QUEUE_BYTES (1024 * 1024)   /* queued, not yet written */
#define LOG_BATCH_MS 5                  /* writes coalesce over this */

/*
 * The writer: records queued in q (under w_mu) are swapped out to the
 * writer thread, which writes them with one write(2) per batch.  w_idle:
 * the thread waits for a record (a record signals it); after each batch
 * it sleeps LOG_BATCH_MS without being woken, so a busy daemon costs one
 * wake-up and one write per batch, not per record.
 */
static struct {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	pthread_t th;
	atomic_int on;
	int stop, idle;
	char *q, *spare;
	size_t len;
	unsigned long dropped;
} w = { .mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER };

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
write_all(const char *p, size_t n)
{
	ssize_t r;
	size_t off = 0;

	while (off < n) {
		r = write(STDERR_FILENO, p + off, n - off);
		if (r < 0 && errno == EINTR)
			continue;
		if (r <= 0)
			break;
		off += (size_t)r;
	}
}

static void
line_emit(struct line *l, int json)
{
	if (json)
		line_puts(l, "}");
	l->buf[l->len++] = '\n';
	if (atomic_load_explicit(&w.on, memory_order_acquire)) {
		pthread_mutex_lock(&w.mu);
		if (w.q != NULL) {
			if (LOG_QUEUE_BYTES - w.len < l->len)
				w.dropped++;
			else {
				memcpy(w.q + w.len, l->buf, l->len);
				w.len += l->len;
			}
			if (w.idle) {
				w.idle = 0;
				pthread_cond_signal(&w.cv);
			}
			pthread_mutex_unlock(&w.mu);
			return;
		}
		pthread_mutex_unlock(&w.mu);
	}
	write_all(l->buf, l->len);
}

static void *
log_writer_main(void *arg)
{
	struct timespec ts = { 0, LOG_BATCH_MS * 1000000L };
	struct line l;
	unsigned long dropped;
	char *out;
	size_t n;

	(void)arg;
	pthread_setname_np(pthread_self(), "xks-log");
	pthread_mutex_lock(&w.mu);
	for (;;) {
		while (w.len == 0 && w.dropped == 0 && !w.stop) {
			w.idle = 1;
			pthread_cond_wait(&w.cv, &w.mu);
		}
		w.idle = 0;
		if (w.len == 0 && w.dropped == 0)
			break;              /* stopping, all written */
		out = w.q;
		n = w.len;
		dropped = w.dropped;
		w.q = w.spare;
		w.spare = out;
		w.len = 0;
		w.dropped = 0;
		pthread_mutex_unlock(&w.mu);
		write_all(out, n);
		if (dropped > 0) {
			line_start(&l, LOG_LVL_WARN,
			    atomic_load(&log_format_cur) == LOG_FMT_JSON);
			snprintf(l.buf + l.len, sizeof(l.buf) - l.len - 2,
			    atomic_load(&log_format_cur) == LOG_FMT_JSON ?
			    ",\"msg\":\"log: %lu records dropped: the log output "
			    "is slower than the daemon\"}" :
			    "log: %lu records dropped: the log output is slower "
			    "than the daemon", dropped);
			l.len += strlen(l.buf + l.len);
			l.buf[l.len++] = '\n';
			write_all(l.buf, l.len);
		}
		pthread_mutex_lock(&w.mu);
		if (!w.stop) {
			pthread_mutex_unlock(&w.mu);
			nanosleep(&ts, NULL);   /* let the next batch gather */
			pthread_mutex_lock(&w.mu);
		}
	}
	pthread_mutex_unlock(&w.mu);
	return NULL;
}

int
log_writer_start(void)
{
	if (atomic_load(&w.on))
		return 0;
	w.q = malloc(LOG_QUEUE_BYTES);
	w.spare = malloc(LOG_QUEUE_BYTES);
	if (w.q == NULL || w.spare == NULL) {
		free(w.q);
		free(w.spare);
		w.q = w.spare = NULL;
		return -1;
	}
	w.len = 0;
	w.dropped = 0;
	w.stop = 0;
	w.idle = 0;
	if (pthread_create(&w.th, NULL, log_writer_main, NULL) != 0) {
		free(w.q);
		free(w.spare);
		w.q = w.spare = NULL;
		return -1;
	}
	atomic_store_explicit(&w.on, 1, memory_order_release);
	return 0;
}

void
log_writer_stop(void)
{
	char *q, *spare;

	if (!atomic_load(&w.on))
		return;
	pthread_mutex_lock(&w.mu);
	w.stop = 1;
	pthread_cond_signal(&w.cv);
	pthread_mutex_unlock(&w.mu);
	pthread_join(w.th, NULL);
	/* records from other threads still running go out directly */
	pthread_mutex_lock(&w.mu);
	atomic_store(&w.on, 0);
	q = w.q;
	spare = w.spare;
	w.q = w.spare = NULL;
	if (w.len > 0)
		write_all(q, w.len);
	w.len = 0;
	pthread_mutex_unlock(&w.mu);
	free(q);
	free(spare);
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
