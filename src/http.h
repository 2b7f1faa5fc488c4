/*
 * http.h -- a strict HTTP/1.1 request-head parser (RFC 9112 subset).
 *
 * The front door reads bytes into libevent evbuffers; this module only
 * turns one complete request head (request line + header fields, ending in
 * an empty line) into a struct http_request.  It is pure (no I/O), bounded,
 * and fuzzed.
 */
#ifndef XKS_HTTP_H
#define XKS_HTTP_H

#include <stddef.h>

#include "xerr.h"

#define HTTP_MAX_HEADERS 64

struct http_header {
	const char *name;             /* as received (compare case-insensitively) */
	const char *value;            /* leading/trailing whitespace removed */
};

struct http_request {
	char *head;                   /* owned copy of the head; fields point into it */
	const char *method;
	const char *target;           /* request-target; the query is split off */
	const char *path;             /* target up to '?' (own copy in head) */
	const char *query;            /* after '?', "" when none */
	int version_minor;            /* HTTP/1.<minor> */
	struct http_header headers[HTTP_MAX_HEADERS];
	size_t nheaders;
	long long content_length;     /* -1 when absent */
	int keep_alive;               /* per version and Connection header */
	int expect_continue;          /* Expect: 100-continue */
	const unsigned char *body;    /* set by the caller once read */
	size_t body_len;
};

/*
 * Parse the head in buf[0..len) (which must end with "\r\n\r\n"; every line must end in CRLF).
 * On success returns XERR_OK and fills req (req->head owns a copy).  On
 * failure returns XERR_BAD_REQUEST, XERR_HEADERS_TOO_LARGE,
 * XERR_UNSUPPORTED (Transfer-Encoding) or XERR_HTTP_VERSION, with reason
 * set to a short static description, and req holds nothing to free.
 */
enum xerr http_parse_head(const char *buf, size_t len,
    struct http_request *req, const char **reason);

/* Free what http_parse_head() allocated (not the struct). NULL-safe. */
void http_request_clear(struct http_request *req);

/* Value of the first header named name (case-insensitive), or NULL. */
const char *http_request_header(const struct http_request *req,
    const char *name);

/* Number of headers named name (case-insensitive). */
size_t http_request_header_count(const struct http_request *req,
    const char *name);

#endif
