/*
 * fuzz_http.c -- the request head as the front door sees it: the strict
 * HTTP/1.1 head parser, then routing against a fixed configuration and the
 * header lookups the server makes.
 *
 * The input is split at its first CRLFCRLF (an input without one gets it
 * appended), the way the server hands a head to http_parse_head(); what
 * follows is the body.  The head is copied into a buffer of exactly its
 * size so that ASan sees any read past it.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "cfg.h"
#include "http.h"
#include "route.h"
#include "xerr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Two key stores, one of them with two paths, as routing only reads paths. */
static char *fuzz_paths0[] = {
	"/kms/xks/v1",
	"/example/uri/path/prefix/kms/xks/v1",
};
static char *fuzz_paths1[] = {
	"/tenant-b/kms/xks/v1",
};
static struct cfg_keystore fuzz_keystores[2] = {
	{ .paths = fuzz_paths0, .npaths = 2, .all_keys = 1 },
	{ .paths = fuzz_paths1, .npaths = 1, .all_keys = 1 },
};
static struct cfg fuzz_cfg = {
	.keystores = fuzz_keystores,
	.nkeystores = 2,
};

/* Names the server and the SigV4 layer look up. */
static const char *const fuzz_names[] = {
	"host", "content-length", "content-type", "authorization",
	"x-amz-date", "x-amz-content-sha256", "connection", "expect",
	"transfer-encoding", "",
};

static void
fuzz_check_route(const struct http_request *req)
{
	struct route r;
	size_t blen;

	if (route_match(&fuzz_cfg, req->path, &r) != XERR_OK) {
		if (r.keystore != NULL || r.op != XKS_OP_NONE)
			abort();        /* a miss leaves nothing behind */
		return;
	}
	if (r.keystore == NULL || r.base == NULL ||
	    r.keystore_index >= fuzz_cfg.nkeystores ||
	    r.keystore != &fuzz_cfg.keystores[r.keystore_index])
		abort();
	blen = strlen(r.base);
	if (strncmp(req->path, r.base, blen) != 0)
		abort();
	if (r.op < XKS_OP_HEALTH || r.op > XKS_OP_DECRYPT)
		abort();
	if (strlen(r.key_id) > 128 ||
	    (r.op == XKS_OP_HEALTH) != (r.key_id[0] == '\0'))
		abort();
	if (r.op != XKS_OP_HEALTH &&
	    !cfg_valid_key_id(r.key_id, strlen(r.key_id)))
		abort();
	(void)route_op_name(r.op);
}

static void
fuzz_check_headers(const struct http_request *req)
{
	const char *v;
	size_t i, n;

	if (req->nheaders > HTTP_MAX_HEADERS)
		abort();
	for (i = 0; i < sizeof(fuzz_names) / sizeof(fuzz_names[0]); i++) {
		v = http_request_header(req, fuzz_names[i]);
		n = http_request_header_count(req, fuzz_names[i]);
		if ((v == NULL) != (n == 0))
			abort();
	}
	for (i = 0; i < req->nheaders; i++) {
		/* every header is found by its own name, in any case */
		if (http_request_header(req, req->headers[i].name) == NULL ||
		    http_request_header_count(req, req->headers[i].name) == 0)
			abort();
		n = strlen(req->headers[i].value);
		if (n > 0 && (req->headers[i].value[0] == ' ' ||
		    req->headers[i].value[n - 1] == ' ' ||
		    req->headers[i].value[0] == '\t' ||
		    req->headers[i].value[n - 1] == '\t'))
			abort();        /* OWS is trimmed */
	}
	/* HTTP/1.1 requires exactly one Host */
	if (req->version_minor >= 1 &&
	    http_request_header_count(req, "host") != 1)
		abort();
	if (http_request_header_count(req, "content-length") > 1 ||
	    http_request_header(req, "transfer-encoding") != NULL)
		abort();
	if (req->content_length < -1 ||
	    (req->content_length >= 0) !=
	    (http_request_header(req, "content-length") != NULL))
		abort();
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct http_request req;
	const char *reason = NULL;
	const uint8_t *crlf2 = NULL;
	size_t headlen, i;
	char *head;
	enum xerr e;

	for (i = 0; i + 4 <= size; i++) {
		if (memcmp(data + i, "\r\n\r\n", 4) == 0) {
			crlf2 = data + i;
			break;
		}
	}
	headlen = crlf2 != NULL ? (size_t)(crlf2 - data) + 4 : size + 4;
	if ((head = malloc(headlen)) == NULL)
		return 0;
	if (crlf2 != NULL)
		memcpy(head, data, headlen);
	else {
		if (size > 0)
			memcpy(head, data, size);
		memcpy(head + size, "\r\n\r\n", 4);
	}

	e = http_parse_head(head, headlen, &req, &reason);
	if (reason == NULL)
		abort();
	if (e != XERR_OK) {
		/* on failure req holds nothing to free */
		if (req.head != NULL)
			abort();
		if (e != XERR_BAD_REQUEST && e != XERR_HEADERS_TOO_LARGE &&
		    e != XERR_UNSUPPORTED && e != XERR_HTTP_VERSION)
			abort();
		goto out;
	}
	if (req.method == NULL || req.path == NULL || req.query == NULL ||
	    req.target == NULL || req.path[0] != '/' ||
	    req.version_minor < 0 || req.version_minor > 9)
		abort();
	if (crlf2 != NULL) {
		req.body = data + headlen;
		req.body_len = size - headlen;
	}
	fuzz_check_route(&req);
	fuzz_check_headers(&req);
	http_request_clear(&req);
	/* clear leaves a struct that can be cleared again */
	http_request_clear(&req);
 out:
	free(head);
	return 0;
}
