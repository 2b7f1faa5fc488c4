#include "config.h"

#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "http.h"

#define HTTP_MAX_TARGET 4096

/* RFC 9110 tchar */
static int
is_tchar(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9'))
		return 1;
	return strchr("!#$%&'*+-.^_`|~", c) != NULL && c != '\0';
}

/* field-value octets: VCHAR, SP, HTAB, obs-text */
static int
is_field_char(unsigned char c)
{
	return c == '\t' || (c >= 0x20 && c != 0x7f);
}

static int
has_token(const char *value, const char *token)
{
	size_t tl = strlen(token);
	const char *p = value;

	while (*p != '\0') {
		while (*p == ' ' || *p == '\t' || *p == ',')
			p++;
		const char *s = p;
		while (*p != '\0' && *p != ',')
			p++;
		const char *e = p;
		while (e > s && (e[-1] == ' ' || e[-1] == '\t'))
			e--;
		if ((size_t)(e - s) == tl && strncasecmp(s, token, tl) == 0)
			return 1;
	}
	return 0;
}

void
http_request_clear(struct http_request *req)
{
	if (req == NULL)
		return;
	free(req->head);
	memset(req, 0, sizeof(*req));
	req->content_length = -1;
}

const char *
http_request_header(const struct http_request *req, const char *name)
{
	size_t i;

	for (i = 0; i < req->nheaders; i++)
		if (strcasecmp(req->headers[i].name, name) == 0)
			return req->headers[i].value;
	return NULL;
}

size_t
http_request_header_count(const struct http_request *req, const char *name)
{
	size_t i, n = 0;

	for (i = 0; i < req->nheaders; i++)
		if (strcasecmp(req->headers[i].name, name) == 0)
			n++;
	return n;
}

/* Split off one CRLF-terminated line starting at *p; NULL when none. */
static char *
next_line(char **p, char *end)
{
	char *s = *p, *q;

	for (q = s; q + 1 < end; q++) {
		if (q[0] == '\r' && q[1] == '\n') {
			*q = '\0';
			*p = q + 2;
			return s;
		}
		if (q[0] == '\n' || q[0] == '\r' || q[0] == '\0')
			return NULL;    /* bare LF/CR or NUL: refuse */
	}
	return NULL;
}

static enum xerr
parse_request_line(char *line, struct http_request *req, const char **reason)
{
	char *sp1, *sp2, *p;

	for (p = line; *p != '\0' && *p != ' '; p++)
		if (!is_tchar((unsigned char)*p)) {
			*reason = "invalid method";
			return XERR_BAD_REQUEST;
		}
	if (*p != ' ' || p == line || p - line > 16) {
		*reason = "invalid request line";
		return XERR_BAD_REQUEST;
	}
	sp1 = p;
	*sp1 = '\0';
	req->method = line;
	req->target = sp1 + 1;
	if ((sp2 = strchr(req->target, ' ')) == NULL) {
		*reason = "invalid request line";
		return XERR_BAD_REQUEST;
	}
	*sp2 = '\0';
	if (req->target[0] != '/') {
		*reason = "request target must be an absolute path";
		return XERR_BAD_REQUEST;
	}
	if (strlen(req->target) > HTTP_MAX_TARGET) {
		*reason = "request target too long";
		return XERR_HEADERS_TOO_LARGE;
	}
	for (p = (char *)req->target; *p != '\0'; p++)
		if ((unsigned char)*p <= 0x20 || (unsigned char)*p >= 0x7f) {
			*reason = "invalid character in request target";
			return XERR_BAD_REQUEST;
		}
	p = sp2 + 1;
	if (strncmp(p, "HTTP/", 5) != 0 || strlen(p) != 8 || p[6] != '.' ||
	    p[5] < '0' || p[5] > '9' || p[7] < '0' || p[7] > '9') {
		*reason = "invalid HTTP version";
		return XERR_BAD_REQUEST;
	}
	if (p[5] != '1') {
		*reason = "only HTTP/1.x is supported";
		return XERR_HTTP_VERSION;
	}
	req->version_minor = p[7] - '0';
	return XERR_OK;
}

static enum xerr
parse_header_line(char *line, struct http_request *req, const char **reason)
{
	char *colon, *v, *e, *p;

	if (line[0] == ' ' || line[0] == '\t') {
		*reason = "obsolete header line folding";
		return XERR_BAD_REQUEST;
	}
	if ((colon = strchr(line, ':')) == NULL || colon == line) {
		*reason = "invalid header line";
		return XERR_BAD_REQUEST;
	}
	for (p = line; p < colon; p++)
		if (!is_tchar((unsigned char)*p)) {
			*reason = "invalid header name";
			return XERR_BAD_REQUEST;
		}
	*colon = '\0';
	v = colon + 1;
	while (*v == ' ' || *v == '\t')
		v++;
	for (p = v; *p != '\0'; p++)
		if (!is_field_char((unsigned char)*p)) {
			*reason = "invalid character in header value";
			return XERR_BAD_REQUEST;
		}
	e = p;
	while (e > v && (e[-1] == ' ' || e[-1] == '\t'))
		e--;
	*e = '\0';
	if (req->nheaders >= HTTP_MAX_HEADERS) {
		*reason = "too many header fields";
		return XERR_HEADERS_TOO_LARGE;
	}
	req->headers[req->nheaders].name = line;
	req->headers[req->nheaders].value = v;
	req->nheaders++;
	return XERR_OK;
}

static enum xerr
check_framing(struct http_request *req, const char **reason)
{
	const char *cl, *te, *ex, *p;
	long long n = 0;
	size_t i;
	int close_tok = 0, ka_tok = 0;

	if ((te = http_request_header(req, "transfer-encoding")) != NULL) {
		*reason = "Transfer-Encoding is not supported; send Content-Length";
		return XERR_UNSUPPORTED;
	}
	if (http_request_header_count(req, "content-length") > 1) {
		*reason = "more than one Content-Length";
		return XERR_BAD_REQUEST;
	}
	if ((cl = http_request_header(req, "content-length")) != NULL) {
		if (*cl == '\0') {
			*reason = "invalid Content-Length";
			return XERR_BAD_REQUEST;
		}
		for (p = cl; *p != '\0'; p++) {
			if (*p < '0' || *p > '9' || n > (1LL << 50)) {
				*reason = "invalid Content-Length";
				return XERR_BAD_REQUEST;
			}
			n = n * 10 + (*p - '0');
		}
		req->content_length = n;
	}
	if (req->version_minor >= 1) {
		size_t hosts = http_request_header_count(req, "host");
		if (hosts != 1) {
			*reason = hosts == 0 ? "missing Host header" :
			    "more than one Host header";
			return XERR_BAD_REQUEST;
		}
	}
	/* Connection is a list: every field line counts, and "close" wins */
	for (i = 0; i < req->nheaders; i++) {
		if (strcasecmp(req->headers[i].name, "connection") != 0)
			continue;
		close_tok |= has_token(req->headers[i].value, "close");
		ka_tok |= has_token(req->headers[i].value, "keep-alive");
	}
	if (req->version_minor >= 1)
		req->keep_alive = !close_tok;
	else
		req->keep_alive = ka_tok && !close_tok;
	if ((ex = http_request_header(req, "expect")) != NULL) {
		if (strcasecmp(ex, "100-continue") != 0) {
			*reason = "unsupported Expect";
			return XERR_BAD_REQUEST;
		}
		req->expect_continue = req->version_minor >= 1;
	}
	return XERR_OK;
}

enum xerr
http_parse_head(const char *buf, size_t len, struct http_request *req,
    const char **reason)
{
	enum xerr r;
	char *p, *end, *line, *q;

	memset(req, 0, sizeof(*req));
	req->content_length = -1;
	*reason = "invalid request";
	if (len < 4 || memcmp(buf + len - 4, "\r\n\r\n", 4) != 0) {
		*reason = "request head not terminated by an empty line";
		return XERR_BAD_REQUEST;
	}
	if ((req->head = malloc(len + 1)) == NULL) {
		*reason = "out of memory";
		return XERR_INTERNAL;
	}
	memcpy(req->head, buf, len);
	req->head[len] = '\0';
	p = req->head;
	end = req->head + len;

	if ((line = next_line(&p, end)) == NULL) {
		*reason = "invalid line ending";
		r = XERR_BAD_REQUEST;
		goto out;
	}
	if ((r = parse_request_line(line, req, reason)) != XERR_OK)
		goto out;
	for (;;) {
		if ((line = next_line(&p, end)) == NULL) {
			*reason = "invalid line ending";
			r = XERR_BAD_REQUEST;
			goto out;
		}
		if (*line == '\0')
			break;
		if ((r = parse_header_line(line, req, reason)) != XERR_OK)
			goto out;
	}
	if (p != end) {
		*reason = "data after the request head";
		r = XERR_BAD_REQUEST;
		goto out;
	}
	/* path and query: split a copy of the target inside the head buffer */
	q = strchr(req->target, '?');
	if (q != NULL) {
		/* the request line is no longer needed whole: reuse the '?' */
		*q = '\0';
		req->path = req->target;
		req->query = q + 1;
	} else {
		req->path = req->target;
		req->query = "";
	}
	if ((r = check_framing(req, reason)) != XERR_OK)
		goto out;
	r = XERR_OK;
 out:
	if (r != XERR_OK)
		http_request_clear(req);
	return r;
}
