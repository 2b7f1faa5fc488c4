/*
 * fuzz_sigv4.c -- the SigV4 Authorization header and the canonicalisation
 * of a hostile request.
 *
 * Every input is first given whole to sigv4_parse_auth().  It is then read
 * as a request, one item a line ('\n'):
 *
 *     POST                                  method
 *     /kms/xks/v1/keys/k1/encrypt?a=b       path, query after the first '?'
 *     host: xks.example.com                 headers, name ':' value (OWS
 *                                           trimmed, as the HTTP parser does)
 *     ...
 *                                           an empty line
 *     {"requestMetadata": ...}              the body: everything after it
 *
 * and verified with sigv4_verify() against fixed credentials at a fixed
 * time (2024-01-02T03:04:05Z), with and without the signing-key cache (the
 * two must agree).  Then the request is signed with sigv4_sign() under the
 * SignedHeaders it named and verified again: a "signature does not match"
 * there means the signer and the verifier canonicalise differently, and
 * aborts.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http.h"
#include "sigv4.h"
#include "xerr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_NOW ((time_t)1704164645)           /* 20240102T030405Z */
#define FUZZ_AKID "XKSFUZZACCESSKEYID234567"
#define FUZZ_SECRET "K7MDENG/bPxRfiCYEXAMPLEKEYxksFuzzSecretAAAAA="
#define FUZZ_MAX_HEADERS HTTP_MAX_HEADERS

static const struct sigv4_cred fuzz_creds[] = {
	{ FUZZ_AKID, (const unsigned char *)FUZZ_SECRET,
	    sizeof(FUZZ_SECRET) - 1, 0 },
	/* expired on 2023-12-31: the expiry path runs too */
	{ "XKSFUZZEXPIREDKEYID23456",
	    (const unsigned char *)"ExpiredSecretExpiredSecretExpiredSecret1234",
	    43, (time_t)1703980800 },
};

static const char *const fuzz_regions[] = { "us-east-1", "eu-west-1" };

static struct sigv4_cache *fuzz_cache;

/* A NUL-terminated copy of data[0..n). */
static char *
fuzz_strndup(const uint8_t *data, size_t n)
{
	char *s;

	if ((s = malloc(n + 1)) == NULL)
		abort();
	if (n > 0)
		memcpy(s, data, n);
	s[n] = '\0';
	return s;
}

/* Remove leading and trailing SP/HTAB in place, as http_parse_head() does. */
static char *
fuzz_trim(char *v)
{
	char *e;

	while (*v == ' ' || *v == '\t')
		v++;
	e = v + strlen(v);
	while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
		e--;
	*e = '\0';
	return v;
}

/* True when the ';'-separated list names `name` (case-insensitively). */
static int
fuzz_list_has(const char *list, const char *name)
{
	size_t n = strlen(name);
	const char *p = list, *e;

	for (;;) {
		e = strchr(p, ';');
		if (e == NULL)
			e = p + strlen(p);
		if ((size_t)(e - p) == n && strncasecmp(p, name, n) == 0)
			return 1;
		if (*e == '\0')
			return 0;
		p = e + 1;
	}
}

static void
fuzz_check_reason(enum xerr e, const char *reason)
{
	size_t i, n = strlen(reason);

	if (e == XERR_OK)
		return;
	if (e != XERR_AUTH_FAILED || n == 0)
		abort();
	/* one line, no control characters: it goes to the log */
	for (i = 0; i < n; i++)
		if ((unsigned char)reason[i] < 0x20 ||
		    (unsigned char)reason[i] == 0x7f)
			abort();
}

/* Sign the request as a client would, then verify: both must agree. */
static void
fuzz_roundtrip(struct sigv4_input *in, struct http_header *hdrs,
    size_t nhdrs, const struct sigv4_params *params, const char *region,
    const char *signed_headers)
{
	struct http_header signed_hdrs[FUZZ_MAX_HEADERS + 1];
	struct sigv4_input in2 = *in;
	const struct sigv4_cred *used = NULL;
	char reason[256];
	char *authz;
	size_t i, n = 0;
	enum xerr e;

	/* the Authorization header cannot sign itself */
	if (fuzz_list_has(signed_headers, "authorization"))
		return;
	for (i = 0; i < nhdrs; i++)
		if (strcasecmp(hdrs[i].name, "authorization") != 0)
			signed_hdrs[n++] = hdrs[i];
	in2.headers = signed_hdrs;
	in2.nheaders = n;
	authz = sigv4_sign(&in2, signed_headers, FUZZ_AKID,
	    (const unsigned char *)FUZZ_SECRET, sizeof(FUZZ_SECRET) - 1,
	    region, SIGV4_SERVICE);
	if (authz == NULL)
		return;
	signed_hdrs[n].name = "Authorization";
	signed_hdrs[n].value = authz;
	in2.nheaders = n + 1;
	e = sigv4_verify(fuzz_cache, &in2, fuzz_creds, 2, params, &used,
	    NULL, reason, sizeof(reason));
	fuzz_check_reason(e, reason);
	if (e == XERR_AUTH_FAILED &&
	    strcmp(reason, "signature does not match") == 0)
		abort();
	if (e == XERR_OK && used != &fuzz_creds[0])
		abort();
	free(authz);
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct http_header hdrs[FUZZ_MAX_HEADERS];
	struct sigv4_input in;
	struct sigv4_params params;
	struct sigv4_auth auth;
	const struct sigv4_cred *used = NULL, *used2 = NULL;
	const char *why = NULL, *authz = NULL;
	char reason[256], reason2[256], akid[129], akid2[129];
	char *all, *method = NULL, *target = NULL, *q, *line, *colon;
	char *lines[2 + FUZZ_MAX_HEADERS];
	size_t nlines = 0, nhdrs = 0, i, off, start;
	uint8_t *body = NULL;
	size_t body_len = 0;
	enum xerr e, e2;

	if (fuzz_cache == NULL && (fuzz_cache = sigv4_cache_new(4)) == NULL)
		abort();

	/* the whole input as an Authorization header value */
	all = fuzz_strndup(data, size);
	memset(&auth, 0xa5, sizeof(auth));
	if (sigv4_parse_auth(all, &auth, &why) == 0) {
		if (memchr(auth.access_key_id, '\0', sizeof(auth.access_key_id))
		    == NULL || strlen(auth.date) != 8 ||
		    memchr(auth.region, '\0', sizeof(auth.region)) == NULL ||
		    memchr(auth.service, '\0', sizeof(auth.service)) == NULL ||
		    memchr(auth.signed_headers, '\0',
		    sizeof(auth.signed_headers)) == NULL)
			abort();
	} else if (why == NULL)
		abort();
	free(all);

	/* the input as a request: lines up to the first empty one */
	off = 0;
	for (;;) {
		start = off;
		while (off < size && data[off] != '\n')
			off++;
		if (off == start || nlines == sizeof(lines) / sizeof(lines[0]))
			break;          /* an empty line ends the head */
		lines[nlines++] = fuzz_strndup(data + start, off - start);
		if (off == size)
			break;
		off++;
	}
	if (off < size && data[off] == '\n')
		off++;
	if (off < size) {
		body_len = size - off;
		if ((body = malloc(body_len)) == NULL)
			abort();
		memcpy(body, data + off, body_len);
	}
	if (nlines < 2)
		goto out;
	method = lines[0];
	target = lines[1];
	memset(&in, 0, sizeof(in));
	in.method = method;
	in.path = target;
	in.query = "";
	if ((q = strchr(target, '?')) != NULL) {
		*q = '\0';
		in.query = q + 1;
	}
	for (i = 2; i < nlines; i++) {
		line = lines[i];
		if ((colon = strchr(line, ':')) != NULL) {
			*colon = '\0';
			hdrs[nhdrs].value = fuzz_trim(colon + 1);
		} else
			hdrs[nhdrs].value = "";
		hdrs[nhdrs].name = line;
		if (strcasecmp(line, "authorization") == 0 && authz == NULL)
			authz = hdrs[nhdrs].value;
		nhdrs++;
	}
	in.headers = hdrs;
	in.nheaders = nhdrs;
	in.body = body;
	in.body_len = body_len;

	memset(&params, 0, sizeof(params));
	params.service = SIGV4_SERVICE;
	params.regions = fuzz_regions;
	params.nregions = 2;
	params.max_skew_seconds = 300;
	params.now = FUZZ_NOW;

	e = sigv4_verify(fuzz_cache, &in, fuzz_creds, 2, &params, &used, akid,
	    reason, sizeof(reason));
	e2 = sigv4_verify(NULL, &in, fuzz_creds, 2, &params, &used2, akid2,
	    reason2, sizeof(reason2));
	fuzz_check_reason(e, reason);
	if (e != e2 || used != used2 || strcmp(reason, reason2) != 0 ||
	    strcmp(akid, akid2) != 0)
		abort();
	if ((e == XERR_OK) != (used != NULL))
		abort();
	for (i = 0; akid[i] != '\0'; i++)
		if ((unsigned char)akid[i] < 0x20 ||
		    (unsigned char)akid[i] >= 0x7f)
			abort();        /* akid goes to the log: sanitized */

	/* the canonical request on its own, under the header's list */
	if (authz != NULL && sigv4_parse_auth(authz, &auth, &why) == 0) {
		char *creq = sigv4_canonical_request(&in, auth.signed_headers,
		    &why);
		if (creq == NULL && why == NULL)
			abort();
		free(creq);
		fuzz_roundtrip(&in, hdrs, nhdrs, &params,
		    auth.region[0] != '\0' ? auth.region : "us-east-1",
		    auth.signed_headers);
	} else
		fuzz_roundtrip(&in, hdrs, nhdrs, &params, "us-east-1",
		    "host;x-amz-date");
 out:
	for (i = 0; i < nlines; i++)
		free(lines[i]);
	free(body);
	return 0;
}
