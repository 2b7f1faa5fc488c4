#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>


#include "log.h"
#include "util.h"

void
wipe(void *p, size_t n)
{
	/* glibc's explicit_bzero: memset's vector stores, never optimised
	 * away; several times faster than OPENSSL_cleanse on the 4-16 kB
	 * buffers wiped for every request (docs/performance.md) */
	if (p != NULL && n > 0)
		explicit_bzero(p, n);
}

void
wipe_free(void *p, size_t n)
{
	if (p == NULL)
		return;
	wipe(p, n);
	free(p);
}

int
util_read_file(const char *path, size_t max, int is_secret,
    unsigned char **out, size_t *len, char *err, size_t errlen)
{
	unsigned char *buf = NULL;
	size_t cap = 0, used = 0;
	struct stat st;
	int fd = -1, r = -1;
	ssize_t n;

	*out = NULL;
	*len = 0;
	/* O_NONBLOCK: a FIFO must not hang the open (regular files ignore it) */
	if ((fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK)) < 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto out;
	}
	if (fstat(fd, &st) != 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		snprintf(err, errlen, "%s: not a regular file", path);
		goto out;
	}
	if ((size_t)st.st_size > max) {
		snprintf(err, errlen, "%s: larger than %zu bytes", path, max);
		goto out;
	}
	if (is_secret && (st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
		log_warn("%s: secret file is accessible by group or others "
		    "(mode %04o); chmod 600 it", path,
		    (unsigned)(st.st_mode & 07777));
	cap = (size_t)st.st_size + 1;
	if ((buf = malloc(cap)) == NULL) {
		snprintf(err, errlen, "%s: out of memory", path);
		goto out;
	}
	for (;;) {
		if (used + 1 >= cap)
			break;
		n = read(fd, buf + used, cap - 1 - used);
		if (n < 0 && errno == EINTR)
			continue;
		if (n < 0) {
			snprintf(err, errlen, "%s: %s", path, strerror(errno));
			goto out;
		}
		if (n == 0)
			break;
		used += (size_t)n;
	}
	buf[used] = '\0';
	*out = buf;
	*len = used;
	buf = NULL;
	r = 0;
 out:
	if (buf != NULL) {
		if (is_secret)
			wipe(buf, cap);
		free(buf);
	}
	if (fd >= 0)
		close(fd);
	return r;
}

size_t
util_rstrip(unsigned char *buf, size_t len)
{
	while (len > 0 && (buf[len - 1] == '\n' || buf[len - 1] == '\r' ||
	    buf[len - 1] == ' ' || buf[len - 1] == '\t')) {
		buf[len - 1] = '\0';
		len--;
	}
	return len;
}

void
util_thread_name(const char *fmt, ...)
{
	char name[16];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(name, sizeof(name), fmt, ap);
	va_end(ap);
	(void)pthread_setname_np(pthread_self(), name);
}

uint64_t
util_now_us(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
}

int
util_ncpu(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);

	return n < 1 ? 1 : (int)n;
}

void
util_hex(const unsigned char *in, size_t n, char *out)
{
	static const char hx[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < n; i++) {
		out[2 * i] = hx[in[i] >> 4];
		out[2 * i + 1] = hx[in[i] & 15];
	}
	out[2 * n] = '\0';
}

void
util_sanitize(const char *in, size_t inlen, char *out, size_t outlen)
{
	size_t i, o = 0;

	if (outlen == 0)
		return;
	for (i = 0; in != NULL && i < inlen && in[i] != '\0' && o + 1 < outlen; i++) {
		unsigned char c = (unsigned char)in[i];
		out[o++] = (c >= 0x20 && c < 0x7f) ? (char)c : '?';
	}
	out[o] = '\0';
}
