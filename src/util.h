/*
 * util.h -- small helpers shared by every module.
 */
#ifndef XKS_UTIL_H
#define XKS_UTIL_H

#include <stddef.h>
#include <stdint.h>

/* Wipe n bytes (not optimised away). */
void wipe(void *p, size_t n);

/* Wipe n bytes and free.  NULL-safe. */
void wipe_free(void *p, size_t n);

/*
 * Read a whole file of at most max bytes into a malloc'ed buffer (one
 * extra NUL byte appended, not counted in *len).  With is_secret, the
 * buffer is wiped on every failure path and a warning is logged when the
 * file is readable by group or others.  Returns 0, or -1 with err set to
 * "<path>: <reason>".  Blocking: never call on an event loop.
 */
int util_read_file(const char *path, size_t max, int is_secret,
    unsigned char **out, size_t *len, char *err, size_t errlen);

/* Strip trailing CR/LF/space/tab in place; returns the new length. */
size_t util_rstrip(unsigned char *buf, size_t len);

/* Monotonic clock in microseconds. */
uint64_t util_now_us(void);

/*
 * Name the calling thread (printf format; at most 15 characters kept), as
 * shown by top -H, ps -L and perf.  Best effort.
 */
void util_thread_name(const char *fmt, ...)
    __attribute__((format(printf, 1, 2)));

/* Number of online CPUs (>= 1). */
int util_ncpu(void);

/* Lower-case hex of n bytes into out (2n+1 bytes). */
void util_hex(const unsigned char *in, size_t n, char *out);

/*
 * Copy an untrusted string for a log line or an error message: printable
 * ASCII kept, anything else replaced by '?', at most outlen-1 bytes.
 */
void util_sanitize(const char *in, size_t inlen, char *out, size_t outlen);

#endif
