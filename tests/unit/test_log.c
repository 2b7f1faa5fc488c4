/*
 * test_log.c -- the log module: record formats, and the writer thread
 * (every record written whole and in order, nothing lost; a stalled output
 * never blocks the logging thread: records are dropped, counted and the
 * count reported once the output moves again).
 *
 * stderr is redirected to a file or a pipe for each test and restored.
 */
#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"
#include "util.h"

static int saved_stderr = -1;

/* Send stderr to fd (closed by this call). */
static void
stderr_to(int fd)
{
	if (saved_stderr < 0)
		saved_stderr = dup(STDERR_FILENO);
	assert_true(saved_stderr >= 0);
	assert_int_equal(dup2(fd, STDERR_FILENO), STDERR_FILENO);
	close(fd);
}

static void
stderr_restore(void)
{
	if (saved_stderr >= 0) {
		dup2(saved_stderr, STDERR_FILENO);
		close(saved_stderr);
		saved_stderr = -1;
	}
}

static int
teardown(void **state)
{
	(void)state;
	log_writer_stop();
	stderr_restore();
	log_configure(LOG_LVL_INFO, LOG_FMT_TEXT);
	return 0;
}

/* stderr to a fresh temporary file; returns a read descriptor on it. */
static int
stderr_to_file(void)
{
	char path[] = "/tmp/xks-test-log.XXXXXX";
	int fd = mkstemp(path), rfd;

	assert_true(fd >= 0);
	rfd = open(path, O_RDONLY);
	assert_true(rfd >= 0);
	unlink(path);
	stderr_to(fd);
	return rfd;
}

/* Everything readable from fd, NUL-terminated. */
static char *
slurp(int fd)
{
	size_t cap = 1 << 16, len = 0;
	char *buf = malloc(cap + 1);
	ssize_t n;

	assert_non_null(buf);
	for (;;) {
		if (len == cap) {
			cap *= 2;
			buf = realloc(buf, cap + 1);
			assert_non_null(buf);
		}
		n = read(fd, buf + len, cap - len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	return buf;
}

static void *
reader_main(void *arg)
{
	return slurp(*(int *)arg);
}

static size_t
count_lines(const char *s, const char *needle)
{
	size_t n = 0;
	const char *p = s;

	while ((p = strstr(p, needle)) != NULL) {
		n++;
		p += strlen(needle);
	}
	return n;
}

static void
test_formats(void **state)
{
	int rfd = stderr_to_file();
	char *out;

	(void)state;
	log_configure(LOG_LVL_INFO, LOG_FMT_TEXT);
	log_fields(LOG_LVL_INFO, "request", "op", "Encrypt", "key", "a b\"c",
	    "skip", NULL, "ctl", "x\ny", NULL);
	log_debug("not written at info");
	log_configure(LOG_LVL_DEBUG, LOG_FMT_JSON);
	log_fields(LOG_LVL_WARN, "refused", "reason", "bad \\ \"q\"", NULL);
	log_info("plain %d", 42);
	stderr_restore();
	out = slurp(rfd);
	close(rfd);
	assert_non_null(strstr(out, " info request op=Encrypt key=\"a b\\\"c\" "
	    "ctl=\"x\\u000ay\"\n"));
	assert_null(strstr(out, "skip"));
	assert_null(strstr(out, "not written"));
	assert_non_null(strstr(out, "\"level\":\"warn\",\"msg\":\"refused\","
	    "\"reason\":\"bad \\\\ \\\"q\\\"\"}\n"));
	assert_non_null(strstr(out, "\"level\":\"info\",\"msg\":\"plain 42\"}\n"));
	assert_int_equal(count_lines(out, "\n"), 3);
	free(out);
}

#define NTHREADS 4
#define NRECORDS 2000   /* 4 x 2000 x ~60 bytes: below the 1 MiB queue */

static void *
logger_main(void *arg)
{
	int id = (int)(intptr_t)arg, i;
	char k[32], v[32];

	for (i = 0; i < NRECORDS; i++) {
		snprintf(k, sizeof(k), "t%d", id);
		snprintf(v, sizeof(v), "%d", i);
		log_fields(LOG_LVL_INFO, "rec", k, v, NULL);
	}
	return NULL;
}

/* 4 threads x 2000 records through the writer: all there, whole, in order. */
static void
test_writer_all_records(void **state)
{
	pthread_t th[NTHREADS];
	int rfd = stderr_to_file(), t, next[NTHREADS] = { 0 };
	char *out, *line, *save = NULL;

	(void)state;
	log_configure(LOG_LVL_INFO, LOG_FMT_TEXT);
	assert_int_equal(log_writer_start(), 0);
	for (t = 0; t < NTHREADS; t++)
		assert_int_equal(pthread_create(&th[t], NULL, logger_main,
		    (void *)(intptr_t)t), 0);
	for (t = 0; t < NTHREADS; t++)
		pthread_join(th[t], NULL);
	log_writer_stop();
	stderr_restore();
	out = slurp(rfd);
	close(rfd);
	assert_int_equal(count_lines(out, "\n"), NTHREADS * NRECORDS);
	for (line = strtok_r(out, "\n", &save); line != NULL;
	    line = strtok_r(NULL, "\n", &save)) {
		const char *p = strstr(line, " info rec t");
		int id, i;
		assert_non_null(p);
		assert_int_equal(sscanf(p, " info rec t%d=%d", &id, &i), 2);
		assert_true(id >= 0 && id < NTHREADS);
		/* each thread's records in the order it logged them */
		assert_int_equal(i, next[id]);
		next[id]++;
	}
	for (t = 0; t < NTHREADS; t++)
		assert_int_equal(next[t], NRECORDS);
	free(out);
}

/*
 * stderr is a pipe nobody reads: once the pipe and the 1 MiB queue are
 * full, logging must go on without blocking, dropping records; when the
 * reader starts, the queued records and then a warning with the number
 * dropped come out.
 */
static void
test_writer_stalled_output(void **state)
{
	int p[2], i, n = 40000;
	char *out;
	unsigned long dropped = 0;
	const char *w;
	pthread_t reader;

	(void)state;
	assert_int_equal(pipe(p), 0);
	stderr_to(p[1]);
	log_configure(LOG_LVL_INFO, LOG_FMT_TEXT);
	assert_int_equal(log_writer_start(), 0);
	/* 40000 records of ~100 bytes: 4 MB, far more than pipe + queue;
	 * with nobody reading, a logger that waited for the output would
	 * hang here for good */
	for (i = 0; i < n; i++)
		log_fields(LOG_LVL_INFO, "filler", "payload",
		    "0123456789012345678901234567890123456789012345678901234567",
		    NULL);
	/* a reader starts; the writer writes out what is queued and stops;
	 * restoring stderr closes the pipe's last write end: EOF */
	assert_int_equal(pthread_create(&reader, NULL, reader_main, &p[0]), 0);
	log_writer_stop();
	stderr_restore();
	pthread_join(reader, (void **)&out);
	close(p[0]);
	/* one warning per batch that had drops */
	for (w = strstr(out, "log: "); w != NULL; w = strstr(w + 1, "log: ")) {
		unsigned long d = 0;
		assert_int_equal(sscanf(w, "log: %lu records dropped", &d), 1);
		dropped += d;
	}
	assert_true(dropped > 0);
	/* written + dropped = logged */
	assert_int_equal(count_lines(out, " info filler ") + dropped,
	    (unsigned long)n);
	free(out);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_formats, teardown),
		cmocka_unit_test_teardown(test_writer_all_records, teardown),
		cmocka_unit_test_teardown(test_writer_stalled_output, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
