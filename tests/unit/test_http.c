/*
 * test_http.c -- unit tests for the HTTP/1.1 request-head parser (http.c).
 *
 * Every input is copied into a heap buffer of exactly its length (no NUL
 * after it) so that ASan catches any read past what the caller handed over.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "http.h"
#include "xerr.h"

/* Parse buf[0..len) from an exact-size heap copy. */
static enum xerr
parse(const char *buf, size_t len, struct http_request *req,
    const char **reason)
{
	char *copy;
	enum xerr r;

	copy = malloc(len == 0 ? 1 : len);
	assert_non_null(copy);
	memcpy(copy, buf, len);
	r = http_parse_head(copy, len, req, reason);
	/* the request must not point into the caller's buffer */
	memset(copy, 'Z', len);
	free(copy);
	return r;
}

#define PARSE_LIT(lit, req, reason) parse((lit), sizeof(lit) - 1, (req), (reason))

/* After a failure the struct must hold nothing: check, then clear twice. */
static void
assert_cleared(struct http_request *req)
{
	assert_null(req->head);
	assert_null(req->method);
	assert_null(req->target);
	assert_null(req->path);
	assert_null(req->query);
	assert_int_equal(req->nheaders, 0);
	assert_int_equal(req->content_length, -1);
	assert_int_equal(req->keep_alive, 0);
	assert_int_equal(req->expect_continue, 0);
	assert_null(http_request_header(req, "host"));
	http_request_clear(req);
	http_request_clear(req);
	assert_null(req->head);
	assert_int_equal(req->content_length, -1);
}

static void
expect_fail(const char *buf, size_t len, enum xerr want, const char *want_reason)
{
	struct http_request req;
	const char *reason = NULL;
	enum xerr r;

	/* garbage in the struct beforehand must not matter */
	memset(&req, 0xa5, sizeof(req));
	r = parse(buf, len, &req, &reason);
	if (r != want || reason == NULL || strcmp(reason, want_reason) != 0)
		print_error("input: \"%.*s\"\n", (int)(len > 200 ? 200 : len), buf);
	assert_int_equal(r, want);
	assert_non_null(reason);
	assert_string_equal(reason, want_reason);
	assert_cleared(&req);
}

#define FAIL_LIT(lit, want, why) expect_fail((lit), sizeof(lit) - 1, (want), (why))

/* Parse a literal that must succeed; the caller clears req. */
static void
expect_ok(const char *buf, size_t len, struct http_request *req)
{
	const char *reason = NULL;
	enum xerr r;

	memset(req, 0xa5, sizeof(*req));
	r = parse(buf, len, req, &reason);
	if (r != XERR_OK)
		print_error("unexpected failure: %s\n", reason ? reason : "?");
	assert_int_equal(r, XERR_OK);
	assert_non_null(req->head);
	assert_null(req->body);
	assert_int_equal(req->body_len, 0);
}

#define OK_LIT(lit, req) expect_ok((lit), sizeof(lit) - 1, (req))

/* ---- success paths ---- */

static void
test_post_basic(void **state)
{
	struct http_request req;
	const char *reason = NULL;
	static const char in[] =
	    "POST /a/kms/xks/v1/keys/k1/encrypt HTTP/1.1\r\n"
	    "Host: xks.example.com\r\n"
	    "Content-Length: 123\r\n"
	    "Content-Type: application/json\r\n"
	    "X-Amz-Date: 20240101T000000Z\r\n"
	    "\r\n";

	memset(&req, 0, sizeof(req));
	assert_int_equal(PARSE_LIT(in, &req, &reason), XERR_OK);
	assert_string_equal(req.method, "POST");
	assert_string_equal(req.target, "/a/kms/xks/v1/keys/k1/encrypt");
	assert_string_equal(req.path, "/a/kms/xks/v1/keys/k1/encrypt");
	assert_string_equal(req.query, "");
	assert_int_equal(req.version_minor, 1);
	assert_int_equal(req.nheaders, 4);
	assert_string_equal(req.headers[0].name, "Host");
	assert_string_equal(req.headers[0].value, "xks.example.com");
	assert_string_equal(req.headers[1].name, "Content-Length");
	assert_string_equal(req.headers[1].value, "123");
	assert_string_equal(req.headers[2].name, "Content-Type");
	assert_string_equal(req.headers[2].value, "application/json");
	assert_string_equal(req.headers[3].name, "X-Amz-Date");
	assert_string_equal(req.headers[3].value, "20240101T000000Z");
	assert_int_equal(req.content_length, 123);
	assert_int_equal(req.keep_alive, 1);
	assert_int_equal(req.expect_continue, 0);
	assert_null(req.body);
	assert_int_equal(req.body_len, 0);

	/* lookup is case-insensitive on the name, exact on the result */
	assert_string_equal(http_request_header(&req, "host"), "xks.example.com");
	assert_string_equal(http_request_header(&req, "HOST"), "xks.example.com");
	assert_string_equal(http_request_header(&req, "content-type"),
	    "application/json");
	assert_string_equal(http_request_header(&req, "x-amz-date"),
	    "20240101T000000Z");
	assert_null(http_request_header(&req, "Authorization"));
	assert_null(http_request_header(&req, "Hos"));
	assert_null(http_request_header(&req, "Hostt"));
	assert_int_equal(http_request_header_count(&req, "HoSt"), 1);
	assert_int_equal(http_request_header_count(&req, "authorization"), 0);

	http_request_clear(&req);
	assert_null(req.head);
	assert_null(req.method);
	assert_int_equal(req.nheaders, 0);
	assert_int_equal(req.content_length, -1);
	http_request_clear(&req);
	http_request_clear(NULL);
}

static void
test_no_content_length(void **state)
{
	struct http_request req;

	OK_LIT("GET /ping HTTP/1.1\r\nHost: h\r\n\r\n", &req);
	assert_string_equal(req.method, "GET");
	assert_string_equal(req.path, "/ping");
	assert_int_equal(req.content_length, -1);
	assert_int_equal(req.nheaders, 1);
	assert_int_equal(req.keep_alive, 1);
	http_request_clear(&req);

	OK_LIT("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0\r\n\r\n", &req);
	assert_int_equal(req.content_length, 0);
	http_request_clear(&req);

	/* leading zeros are digits (RFC 9110: 1*DIGIT) */
	OK_LIT("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0042\r\n\r\n", &req);
	assert_int_equal(req.content_length, 42);
	http_request_clear(&req);

	OK_LIT("POST / HTTP/1.1\r\nHost: h\r\ncontent-length:  4294967296 \r\n\r\n",
	    &req);
	assert_int_equal(req.content_length, 4294967296LL);
	http_request_clear(&req);

	/* an empty Host field is still one Host field */
	OK_LIT("GET / HTTP/1.1\r\nHost:\r\n\r\n", &req);
	assert_string_equal(http_request_header(&req, "host"), "");
	http_request_clear(&req);
}

static void
test_keep_alive_http11(void **state)
{
	struct http_request req;

	OK_LIT("POST / HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n", &req);
	assert_int_equal(req.keep_alive, 0);
	http_request_clear(&req);

	OK_LIT("POST / HTTP/1.1\r\nHost: h\r\nconnection: CLOSE\r\n\r\n", &req);
	assert_int_equal(req.keep_alive, 0);
	http_request_clear(&req);

	OK_LIT("POST / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive, close\r\n\r\n",
	    &req);
	assert_int_equal(req.keep_alive, 0);
	http_request_clear(&req);

	OK_LIT("POST / HTTP/1.1\r\nHost: h\r\nConnection: ,close ,\r\n\r\n", &req);
	assert_int_equal(req.keep_alive, 0);
	http_request_clear(&req);

	OK_LIT("POST / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n\r\n", &req);
	assert_int_equal(req.keep_alive, 1);
	http_request_clear(&req);

	/* "closed" is not the token "close" */
	OK_LIT("POST / HTTP/1.1\r\nHost: h\r\nConnection: closed, xclose\r\n\r\n",
	    &req);
	assert_int_equal(req.keep_alive, 1);
	http_request_clear(&req);

	/* HTTP/1.2 is an HTTP/1.1-compatible minor version */
	OK_LIT("POST / HTTP/1.2\r\nHost: h\r\n\r\n", &req);
	assert_int_equal(req.version_minor, 2);
	assert_int_equal(req.keep_alive, 1);
	http_request_clear(&req);
}

/*
 * Regression (found by this test, fixed in http.c): Connection is a list-based field (RFC 9110 7.6.1):
 * several field lines are one list, so "close" on the second line counts,
 * and "close" always means close.
 */
static void
test_keep_alive_connection_two_lines(void **state)
{
	struct http_request req;
	int ka;

	/* clear before asserting so a failure here does not also leak */
	OK_LIT("POST / HTTP/1.1\r\nHost: h\r\nConnection: keep-alive\r\n"
	    "Connection: close\r\n\r\n", &req);
	ka = req.keep_alive;
	http_request_clear(&req);
	assert_int_equal(ka, 0);

	OK_LIT("POST / HTTP/1.0\r\nConnection: foo\r\n"
	    "Connection: keep-alive\r\n\r\n", &req);
	ka = req.keep_alive;
	http_request_clear(&req);
	assert_int_equal(ka, 1);

	/* "close" wins over "keep-alive" (RFC 9112 9.6), in 1.0 as well */
	OK_LIT("POST / HTTP/1.0\r\nConnection: keep-alive, close\r\n\r\n",
	    &req);
	ka = req.keep_alive;
	http_request_clear(&req);
	assert_int_equal(ka, 0);
}

static void
test_http10(void **state)
{
	struct http_request req;

	/* no Host needed, close by default */
	OK_LIT("POST /x HTTP/1.0\r\nContent-Length: 2\r\n\r\n", &req);
	assert_int_equal(req.version_minor, 0);
	assert_int_equal(req.keep_alive, 0);
	assert_int_equal(req.content_length, 2);
	assert_null(http_request_header(&req, "host"));
	http_request_clear(&req);

	OK_LIT("GET / HTTP/1.0\r\n\r\n", &req);
	assert_int_equal(req.nheaders, 0);
	assert_int_equal(req.keep_alive, 0);
	http_request_clear(&req);

	OK_LIT("POST / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n", &req);
	assert_int_equal(req.keep_alive, 1);
	http_request_clear(&req);

	OK_LIT("POST / HTTP/1.0\r\nConnection: Keep-Alive\r\n\r\n", &req);
	assert_int_equal(req.keep_alive, 1);
	http_request_clear(&req);

	OK_LIT("POST / HTTP/1.0\r\nConnection: foo, keep-alive \r\n\r\n", &req);
	assert_int_equal(req.keep_alive, 1);
	http_request_clear(&req);

	OK_LIT("POST / HTTP/1.0\r\nConnection: keep-alivex\r\n\r\n", &req);
	assert_int_equal(req.keep_alive, 0);
	http_request_clear(&req);

	/* two Host fields are only refused in 1.1; in 1.0 both are kept */
	OK_LIT("POST / HTTP/1.0\r\nHost: a\r\nHost: b\r\n\r\n", &req);
	assert_int_equal(http_request_header_count(&req, "host"), 2);
	assert_string_equal(http_request_header(&req, "host"), "a");
	http_request_clear(&req);
}

static void
test_query_split(void **state)
{
	struct http_request req;

	OK_LIT("POST /a/kms/xks/v1/health?x=1&y=2 HTTP/1.1\r\nHost: h\r\n\r\n", &req);
	assert_string_equal(req.path, "/a/kms/xks/v1/health");
	assert_string_equal(req.query, "x=1&y=2");
	assert_string_equal(req.target, "/a/kms/xks/v1/health");
	http_request_clear(&req);

	OK_LIT("POST /a? HTTP/1.1\r\nHost: h\r\n\r\n", &req);
	assert_string_equal(req.path, "/a");
	assert_string_equal(req.query, "");
	http_request_clear(&req);

	OK_LIT("POST /a?b?c=/d HTTP/1.1\r\nHost: h\r\n\r\n", &req);
	assert_string_equal(req.path, "/a");
	assert_string_equal(req.query, "b?c=/d");
	http_request_clear(&req);

	OK_LIT("POST /?q HTTP/1.1\r\nHost: h\r\n\r\n", &req);
	assert_string_equal(req.path, "/");
	assert_string_equal(req.query, "q");
	http_request_clear(&req);

	/* the parser does not decode: '%' and friends stay as received */
	OK_LIT("POST /a/%65ncrypt HTTP/1.1\r\nHost: h\r\n\r\n", &req);
	assert_string_equal(req.path, "/a/%65ncrypt");
	assert_string_equal(req.query, "");
	http_request_clear(&req);
}

static void
test_header_trim_and_lookup(void **state)
{
	struct http_request req;

	OK_LIT("POST / HTTP/1.1\r\n"
	    "Host:h\r\n"
	    "X-A: \t v a\tl \t \r\n"
	    "X-B:\t\tv\r\n"
	    "X-Empty:   \t \r\n"
	    "x-dup: one\r\n"
	    "X-DUP: two\r\n"
	    "X-Colon: a:b: c\r\n"
	    "X-Obs: caf\xc3\xa9\r\n"
	    "\r\n", &req);
	assert_int_equal(req.nheaders, 8);
	assert_string_equal(http_request_header(&req, "host"), "h");
	assert_string_equal(http_request_header(&req, "x-a"), "v a\tl");
	assert_string_equal(http_request_header(&req, "X-b"), "v");
	assert_string_equal(http_request_header(&req, "x-empty"), "");
	assert_string_equal(http_request_header(&req, "X-Dup"), "one");
	assert_int_equal(http_request_header_count(&req, "X-Dup"), 2);
	assert_int_equal(http_request_header_count(&req, "x-dup"), 2);
	assert_string_equal(req.headers[4].name, "x-dup");
	assert_string_equal(req.headers[5].name, "X-DUP");
	assert_string_equal(req.headers[5].value, "two");
	assert_string_equal(http_request_header(&req, "x-colon"), "a:b: c");
	assert_string_equal(http_request_header(&req, "x-obs"), "caf\xc3\xa9");
	assert_int_equal(http_request_header_count(&req, "x-none"), 0);
	http_request_clear(&req);
}

static void
test_expect(void **state)
{
	struct http_request req;

	OK_LIT("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
	    "Expect: 100-continue\r\n\r\n", &req);
	assert_int_equal(req.expect_continue, 1);
	assert_int_equal(req.keep_alive, 1);
	http_request_clear(&req);

	OK_LIT("POST / HTTP/1.1\r\nHost: h\r\nexpect:  100-Continue \r\n\r\n", &req);
	assert_int_equal(req.expect_continue, 1);
	http_request_clear(&req);

	/* a 1.0 client does not understand 100 Continue */
	OK_LIT("POST / HTTP/1.0\r\nExpect: 100-continue\r\n\r\n", &req);
	assert_int_equal(req.expect_continue, 0);
	http_request_clear(&req);

	FAIL_LIT("POST / HTTP/1.1\r\nHost: h\r\nExpect: 200-ok\r\n\r\n",
	    XERR_BAD_REQUEST, "unsupported Expect");
	FAIL_LIT("POST / HTTP/1.1\r\nHost: h\r\nExpect:\r\n\r\n",
	    XERR_BAD_REQUEST, "unsupported Expect");
	FAIL_LIT("POST / HTTP/1.1\r\nHost: h\r\nExpect: 100-continue, foo\r\n\r\n",
	    XERR_BAD_REQUEST, "unsupported Expect");
}

/* ---- framing of the head ---- */

static void
test_terminator(void **state)
{
	FAIL_LIT("", XERR_BAD_REQUEST,
	    "request head not terminated by an empty line");
	FAIL_LIT("\r\n\r", XERR_BAD_REQUEST,
	    "request head not terminated by an empty line");
	FAIL_LIT("GET / HTTP/1.1\r\nHost: h\r\n", XERR_BAD_REQUEST,
	    "request head not terminated by an empty line");
	FAIL_LIT("GET / HTTP/1.1\r\nHost: h\r\n\r", XERR_BAD_REQUEST,
	    "request head not terminated by an empty line");
	/* bare-LF terminator */
	FAIL_LIT("GET / HTTP/1.1\nHost: h\n\n", XERR_BAD_REQUEST,
	    "request head not terminated by an empty line");
	FAIL_LIT("GET / HTTP/1.1\r\nHost: h\r\n\n", XERR_BAD_REQUEST,
	    "request head not terminated by an empty line");
	/* nothing but the empty line */
	FAIL_LIT("\r\n\r\n", XERR_BAD_REQUEST, "invalid request line");
	/* a leading empty line is not skipped */
	FAIL_LIT("\r\nGET / HTTP/1.1\r\nHost: h\r\n\r\n", XERR_BAD_REQUEST,
	    "invalid request line");
}

static void
test_line_endings(void **state)
{
	/* bare LF */
	FAIL_LIT("GET / HTTP/1.1\nHost: h\r\n\r\n", XERR_BAD_REQUEST,
	    "invalid line ending");
	FAIL_LIT("GET / HTTP/1.1\r\nHost: h\nX: y\r\n\r\n", XERR_BAD_REQUEST,
	    "invalid line ending");
	FAIL_LIT("GET / HTTP/1.1\r\nHost: h\r\n\nX: y\r\n\r\n", XERR_BAD_REQUEST,
	    "invalid line ending");
	/* bare CR */
	FAIL_LIT("GET / HTTP/1.1\rHost: h\r\n\r\n", XERR_BAD_REQUEST,
	    "invalid line ending");
	FAIL_LIT("GET / HTTP/1.1\r\nHost: h\rX: y\r\n\r\n", XERR_BAD_REQUEST,
	    "invalid line ending");
	FAIL_LIT("GET / HTTP/1.1\r\nHost: h\r\r\n\r\n", XERR_BAD_REQUEST,
	    "invalid line ending");
	/* NUL anywhere in the head */
	FAIL_LIT("GET / HTTP/1.1\r\nHost: h\0x\r\n\r\n", XERR_BAD_REQUEST,
	    "invalid line ending");
	FAIL_LIT("GET /\0 HTTP/1.1\r\nHost: h\r\n\r\n", XERR_BAD_REQUEST,
	    "invalid line ending");
	FAIL_LIT("\0GET / HTTP/1.1\r\nHost: h\r\n\r\n", XERR_BAD_REQUEST,
	    "invalid line ending");
	FAIL_LIT("GET / HTTP/1.1\r\nHost: h\r\n\0\r\n\r\n", XERR_BAD_REQUEST,
	    "invalid line ending");
}

static void
test_data_after_head(void **state)
{
	FAIL_LIT("GET / HTTP/1.1\r\nHost: h\r\n\r\n"
	    "GET / HTTP/1.1\r\nHost: h\r\n\r\n", XERR_BAD_REQUEST,
	    "data after the request head");
	FAIL_LIT("GET / HTTP/1.1\r\nHost: h\r\n\r\n\r\n\r\n", XERR_BAD_REQUEST,
	    "data after the request head");
	FAIL_LIT("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 2\r\n\r\n{}\r\n\r\n",
	    XERR_BAD_REQUEST, "data after the request head");
}

/* ---- header fields ---- */

static void
test_header_syntax(void **state)
{
	FAIL_LIT("GET / HTTP/1.1\r\nHost : h\r\n\r\n", XERR_BAD_REQUEST,
	    "invalid header name");
	FAIL_LIT("GET / HTTP/1.1\r\nHost\t: h\r\n\r\n", XERR_BAD_REQUEST,
	    "invalid header name");
	FAIL_LIT("GET / HTTP/1.1\r\nHost: h\r\nX Y: z\r\n\r\n", XERR_BAD_REQUEST,
	    "invalid header name");
	FAIL_LIT("GET / HTTP/1.1\r\nHost: h\r\nX(Y): z\r\n\r\n", XERR_BAD_REQUEST,
	    "invalid header name");
	FAIL_LIT("GET / HTTP/1.1\r\nHost: h\r\nX\xc3\xa9: z\r\n\r\n",
	    XERR_BAD_REQUEST, "invalid header name");
	/* obs-fold, with SP and with HTAB */
	FAIL_LIT("GET / HTTP/1.1\r\nHost: h\r\nX-A: b\r\n c\r\n\r\n",
	    XERR_BAD_REQUEST, "obsolete header line folding");
	FAIL_LIT("GET / HTTP/1.1\r\nHost: h\r\nX-A: b\r\n\tc\r\n\r\n",
	    XERR_BAD_REQUEST, "obsolete header line folding");
	/* whitespace between the request line and the first field */
	FAIL_LIT("GET / HTTP/1.1\r\n Host: h\r\n\r\n", XERR_BAD_REQUEST,
	    "obsolete header line folding");
	/* empty name, no colon */
	FAIL_LIT("GET / HTTP/1.1\r\nHost: h\r\n: v\r\n\r\n", XERR_BAD_REQUEST,
	    "invalid header line");
	FAIL_LIT("GET / HTTP/1.1\r\nHost: h\r\nNoColon\r\n\r\n", XERR_BAD_REQUEST,
	    "invalid header line");
	/* control characters in a value */
	FAIL_LIT("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\001" "b\r\n\r\n",
	    XERR_BAD_REQUEST, "invalid character in header value");
	FAIL_LIT("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\033[0m\r\n\r\n",
	    XERR_BAD_REQUEST, "invalid character in header value");
	FAIL_LIT("GET / HTTP/1.1\r\nHost: h\r\nX-A: a\177\r\n\r\n",
	    XERR_BAD_REQUEST, "invalid character in header value");
	FAIL_LIT("GET / HTTP/1.1\r\nHost: h\r\nX-A: \013\r\n\r\n",
	    XERR_BAD_REQUEST, "invalid character in header value");
}

/* Build "GET / HTTP/1.1\r\nHost: h\r\n" + n-1 "X-N: v" fields + CRLF. */
static char *
many_headers(size_t n, size_t *lenp)
{
	char *buf;
	size_t cap = 64 + n * 32, len = 0, i;

	buf = malloc(cap);
	assert_non_null(buf);
	len += (size_t)snprintf(buf + len, cap - len, "GET / HTTP/1.1\r\nHost: h\r\n");
	for (i = 1; i < n; i++)
		len += (size_t)snprintf(buf + len, cap - len, "X-%zu: v%zu\r\n", i, i);
	len += (size_t)snprintf(buf + len, cap - len, "\r\n");
	assert_true(len < cap);
	*lenp = len;
	return buf;
}

static void
test_header_limit(void **state)
{
	struct http_request req;
	size_t len;
	char *buf;

	buf = many_headers(HTTP_MAX_HEADERS, &len);
	expect_ok(buf, len, &req);
	assert_int_equal(req.nheaders, 64);
	assert_string_equal(req.headers[63].name, "X-63");
	assert_string_equal(req.headers[63].value, "v63");
	assert_string_equal(http_request_header(&req, "x-63"), "v63");
	http_request_clear(&req);
	free(buf);

	buf = many_headers(HTTP_MAX_HEADERS + 1, &len);
	expect_fail(buf, len, XERR_HEADERS_TOO_LARGE, "too many header fields");
	free(buf);

	buf = many_headers(500, &len);
	expect_fail(buf, len, XERR_HEADERS_TOO_LARGE, "too many header fields");
	free(buf);
}

static void
test_transfer_encoding(void **state)
{
	FAIL_LIT("POST / HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n",
	    XERR_UNSUPPORTED,
	    "Transfer-Encoding is not supported; send Content-Length");
	FAIL_LIT("POST / HTTP/1.1\r\nHost: h\r\ntransfer-encoding: identity\r\n"
	    "Content-Length: 3\r\n\r\n", XERR_UNSUPPORTED,
	    "Transfer-Encoding is not supported; send Content-Length");
	FAIL_LIT("POST / HTTP/1.0\r\nTRANSFER-ENCODING: gzip\r\n\r\n",
	    XERR_UNSUPPORTED,
	    "Transfer-Encoding is not supported; send Content-Length");
}

static void
test_content_length_bad(void **state)
{
	FAIL_LIT("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
	    "Content-Length: 5\r\n\r\n", XERR_BAD_REQUEST,
	    "more than one Content-Length");
	FAIL_LIT("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\n"
	    "content-length: 6\r\n\r\n", XERR_BAD_REQUEST,
	    "more than one Content-Length");
	FAIL_LIT("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: abc\r\n\r\n",
	    XERR_BAD_REQUEST, "invalid Content-Length");
	FAIL_LIT("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1a\r\n\r\n",
	    XERR_BAD_REQUEST, "invalid Content-Length");
	FAIL_LIT("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
	    XERR_BAD_REQUEST, "invalid Content-Length");
	FAIL_LIT("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: +1\r\n\r\n",
	    XERR_BAD_REQUEST, "invalid Content-Length");
	FAIL_LIT("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 5, 5\r\n\r\n",
	    XERR_BAD_REQUEST, "invalid Content-Length");
	FAIL_LIT("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 1 2\r\n\r\n",
	    XERR_BAD_REQUEST, "invalid Content-Length");
	FAIL_LIT("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: 0x10\r\n\r\n",
	    XERR_BAD_REQUEST, "invalid Content-Length");
	FAIL_LIT("POST / HTTP/1.1\r\nHost: h\r\nContent-Length:\r\n\r\n",
	    XERR_BAD_REQUEST, "invalid Content-Length");
	FAIL_LIT("POST / HTTP/1.1\r\nHost: h\r\nContent-Length:   \r\n\r\n",
	    XERR_BAD_REQUEST, "invalid Content-Length");
	/* huge: no overflow, a refusal */
	FAIL_LIT("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: "
	    "9223372036854775808\r\n\r\n",
	    XERR_BAD_REQUEST, "invalid Content-Length");
	FAIL_LIT("POST / HTTP/1.1\r\nHost: h\r\nContent-Length: "
	    "99999999999999999999999999999999\r\n\r\n",
	    XERR_BAD_REQUEST, "invalid Content-Length");
}

static void
test_host(void **state)
{
	FAIL_LIT("POST / HTTP/1.1\r\nContent-Length: 0\r\n\r\n",
	    XERR_BAD_REQUEST, "missing Host header");
	FAIL_LIT("POST / HTTP/1.1\r\n\r\n", XERR_BAD_REQUEST,
	    "missing Host header");
	FAIL_LIT("POST / HTTP/1.1\r\nHost: a\r\nHost: a\r\n\r\n",
	    XERR_BAD_REQUEST, "more than one Host header");
	FAIL_LIT("POST / HTTP/1.1\r\nHost: a\r\nhost: b\r\n\r\n",
	    XERR_BAD_REQUEST, "more than one Host header");
}

/* ---- request line ---- */

static void
test_method(void **state)
{
	struct http_request req;

	FAIL_LIT("G(T / HTTP/1.1\r\nHost: h\r\n\r\n", XERR_BAD_REQUEST,
	    "invalid method");
	FAIL_LIT("GE\tT / HTTP/1.1\r\nHost: h\r\n\r\n", XERR_BAD_REQUEST,
	    "invalid method");
	FAIL_LIT("P\xc3\xb6ST / HTTP/1.1\r\nHost: h\r\n\r\n", XERR_BAD_REQUEST,
	    "invalid method");
	FAIL_LIT("GET\001 / HTTP/1.1\r\nHost: h\r\n\r\n", XERR_BAD_REQUEST,
	    "invalid method");
	FAIL_LIT(" / HTTP/1.1\r\nHost: h\r\n\r\n", XERR_BAD_REQUEST,
	    "invalid request line");
	FAIL_LIT("GET\r\nHost: h\r\n\r\n", XERR_BAD_REQUEST,
	    "invalid request line");
	FAIL_LIT("GET /\r\nHost: h\r\n\r\n", XERR_BAD_REQUEST,
	    "invalid request line");
	/* 17 characters: too long; 16 is the most */
	FAIL_LIT("ABCDEFGHIJKLMNOPQ / HTTP/1.1\r\nHost: h\r\n\r\n",
	    XERR_BAD_REQUEST, "invalid request line");
	OK_LIT("ABCDEFGHIJKLMNOP / HTTP/1.1\r\nHost: h\r\n\r\n", &req);
	assert_string_equal(req.method, "ABCDEFGHIJKLMNOP");
	http_request_clear(&req);
	/* methods are case-sensitive tokens: kept as received */
	OK_LIT("post / HTTP/1.1\r\nHost: h\r\n\r\n", &req);
	assert_string_equal(req.method, "post");
	http_request_clear(&req);
}

/* "POST <'/' + n-1 'a'> HTTP/1.1\r\nHost: h\r\n\r\n" */
static char *
long_target(size_t n, size_t *lenp)
{
	static const char pre[] = "POST ";
	static const char post[] = " HTTP/1.1\r\nHost: h\r\n\r\n";
	size_t len = sizeof(pre) - 1 + n + sizeof(post) - 1;
	char *buf;

	buf = malloc(len);
	assert_non_null(buf);
	memcpy(buf, pre, sizeof(pre) - 1);
	buf[sizeof(pre) - 1] = '/';
	memset(buf + sizeof(pre), 'a', n - 1);
	memcpy(buf + sizeof(pre) - 1 + n, post, sizeof(post) - 1);
	*lenp = len;
	return buf;
}

static void
test_target(void **state)
{
	struct http_request req;
	size_t len;
	char *buf;

	FAIL_LIT("OPTIONS * HTTP/1.1\r\nHost: h\r\n\r\n", XERR_BAD_REQUEST,
	    "request target must be an absolute path");
	FAIL_LIT("POST http://h/a HTTP/1.1\r\nHost: h\r\n\r\n", XERR_BAD_REQUEST,
	    "request target must be an absolute path");
	FAIL_LIT("POST a/b HTTP/1.1\r\nHost: h\r\n\r\n", XERR_BAD_REQUEST,
	    "request target must be an absolute path");
	/* two spaces: an empty target */
	FAIL_LIT("POST  /a HTTP/1.1\r\nHost: h\r\n\r\n", XERR_BAD_REQUEST,
	    "request target must be an absolute path");
	/* a space inside the target leaves junk where the version goes */
	FAIL_LIT("POST /a b HTTP/1.1\r\nHost: h\r\n\r\n", XERR_BAD_REQUEST,
	    "invalid HTTP version");
	FAIL_LIT("POST /a\001b HTTP/1.1\r\nHost: h\r\n\r\n", XERR_BAD_REQUEST,
	    "invalid character in request target");
	FAIL_LIT("POST /a\tb HTTP/1.1\r\nHost: h\r\n\r\n", XERR_BAD_REQUEST,
	    "invalid character in request target");
	FAIL_LIT("POST /a\177 HTTP/1.1\r\nHost: h\r\n\r\n", XERR_BAD_REQUEST,
	    "invalid character in request target");
	FAIL_LIT("POST /caf\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n", XERR_BAD_REQUEST,
	    "invalid character in request target");
	FAIL_LIT("POST /a?q=\033 HTTP/1.1\r\nHost: h\r\n\r\n", XERR_BAD_REQUEST,
	    "invalid character in request target");

	buf = long_target(4096, &len);
	expect_ok(buf, len, &req);
	assert_int_equal(strlen(req.path), 4096);
	assert_int_equal(req.path[0], '/');
	assert_int_equal(req.path[4095], 'a');
	http_request_clear(&req);
	free(buf);

	buf = long_target(4097, &len);
	expect_fail(buf, len, XERR_HEADERS_TOO_LARGE, "request target too long");
	free(buf);

	buf = long_target(100000, &len);
	expect_fail(buf, len, XERR_HEADERS_TOO_LARGE, "request target too long");
	free(buf);
}

static void
test_version(void **state)
{
	FAIL_LIT("POST / HTTP/2.0\r\nHost: h\r\n\r\n", XERR_HTTP_VERSION,
	    "only HTTP/1.x is supported");
	FAIL_LIT("POST / HTTP/0.9\r\nHost: h\r\n\r\n", XERR_HTTP_VERSION,
	    "only HTTP/1.x is supported");
	FAIL_LIT("POST / HTTP/3.1\r\nHost: h\r\n\r\n", XERR_HTTP_VERSION,
	    "only HTTP/1.x is supported");
	FAIL_LIT("POST / HTTP/1.10\r\nHost: h\r\n\r\n", XERR_BAD_REQUEST,
	    "invalid HTTP version");
	FAIL_LIT("POST / HTTX/1.1\r\nHost: h\r\n\r\n", XERR_BAD_REQUEST,
	    "invalid HTTP version");
	FAIL_LIT("POST / http/1.1\r\nHost: h\r\n\r\n", XERR_BAD_REQUEST,
	    "invalid HTTP version");
	FAIL_LIT("POST / HTTP/1\r\nHost: h\r\n\r\n", XERR_BAD_REQUEST,
	    "invalid HTTP version");
	FAIL_LIT("POST / HTTP/1,1\r\nHost: h\r\n\r\n", XERR_BAD_REQUEST,
	    "invalid HTTP version");
	FAIL_LIT("POST / HTTP/1.x\r\nHost: h\r\n\r\n", XERR_BAD_REQUEST,
	    "invalid HTTP version");
	FAIL_LIT("POST / HTTP/11.1\r\nHost: h\r\n\r\n", XERR_BAD_REQUEST,
	    "invalid HTTP version");
	FAIL_LIT("POST / HTTP/1.1 \r\nHost: h\r\n\r\n", XERR_BAD_REQUEST,
	    "invalid HTTP version");
	FAIL_LIT("POST / \r\nHost: h\r\n\r\n", XERR_BAD_REQUEST,
	    "invalid HTTP version");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_post_basic),
		cmocka_unit_test(test_no_content_length),
		cmocka_unit_test(test_keep_alive_http11),
		cmocka_unit_test(test_keep_alive_connection_two_lines),
		cmocka_unit_test(test_http10),
		cmocka_unit_test(test_query_split),
		cmocka_unit_test(test_header_trim_and_lookup),
		cmocka_unit_test(test_expect),
		cmocka_unit_test(test_terminator),
		cmocka_unit_test(test_line_endings),
		cmocka_unit_test(test_data_after_head),
		cmocka_unit_test(test_header_syntax),
		cmocka_unit_test(test_header_limit),
		cmocka_unit_test(test_transfer_encoding),
		cmocka_unit_test(test_content_length_bad),
		cmocka_unit_test(test_host),
		cmocka_unit_test(test_method),
		cmocka_unit_test(test_target),
		cmocka_unit_test(test_version),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
