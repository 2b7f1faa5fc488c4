#include "config.h"

#include <limits.h>
#include <pthread.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <json-c/json.h>
#include <json-c/printbuf.h>
#include <openssl/evp.h>
#include <p11-kit/pkcs11.h>

#include "b64.h"
#include "health.h"
#include "hsm.h"
#include "log.h"
#include "util.h"
#include "xks.h"

/* The minimums the XKS API requires; used when no limits are given. */
#define XKS_DEFAULT_MAX_PLAINTEXT 4300
#define XKS_DEFAULT_MAX_AAD 8192
#define XKS_ARN_MAX 2048             /* characters, per the API */
#define XKS_GCM_TAG_LEN 16
#define XKS_ERRMSG_MAX 512           /* errorMessage: fewer characters */

#define XKS_JSON_OUT_FLAGS \
	(JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE)

/* printf into the caller's message buffer, if it gave one. */
static void xks_msg(char *msg, size_t msglen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
xks_msg(char *msg, size_t msglen, const char *fmt, ...)
{
	va_list ap;

	if (msg == NULL || msglen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(msg, msglen, fmt, ap);
	va_end(ap);
}

/*
 * json-c hands out its string storage as const, but it is the object's own
 * heap (or inline) memory: wiping it before json_object_put() is the only
 * way to keep the Base64 of plaintext or AAD from lingering in freed heap.
 */
static void
xks_json_wipe_string(json_object *js)
{
	char *p;

	if (js == NULL || !json_object_is_type(js, json_type_string))
		return;
	p = (char *)(uintptr_t)json_object_get_string(js);
	wipe(p, (size_t)json_object_get_string_len(js));
}

/*
 * The tokener keeps the last string it scanned (often the longest field,
 * i.e. the plaintext) in its printbuf.  The field is documented as
 * private; json-c offers no other way to reach it, and a wrong layout
 * would fail to compile rather than misbehave.  Freed intermediate
 * buffers from the printbuf growing cannot be reached at all.
 */
/* Wipe every string of a (possibly partial) tree. */
static void
xks_json_wipe_tree(json_object *o)
{
	size_t i;

	switch (json_object_get_type(o)) {
	case json_type_string:
		xks_json_wipe_string(o);
		break;
	case json_type_object: {
		json_object_object_foreach(o, k, v) {
			(void)k;
			xks_json_wipe_tree(v);
		}
		break;
	}
	case json_type_array:
		for (i = 0; i < json_object_array_length(o); i++)
			xks_json_wipe_tree(json_object_array_get_idx(o, i));
		break;
	default:
		break;
	}
}

/* Wipe what a parse left in the tokener, then reset it for the next. */
static void
xks_tokener_scrub(struct json_tokener *tok)
{
	int d;

	/* a failed parse leaves its partial tree (with a complete plaintext
	 * member, say) on the tokener's stack, freed unwiped otherwise */
	for (d = 0; d <= tok->depth && d < tok->max_depth; d++)
		xks_json_wipe_tree(tok->stack[d].current);
	if (tok->pb != NULL && tok->pb->buf != NULL && tok->pb->size > 0)
		wipe(tok->pb->buf, (size_t)tok->pb->size);
	json_tokener_reset(tok);
}

static void
xks_tokener_free(void *p)
{
	struct json_tokener *tok = p;

	if (tok == NULL)
		return;
	xks_tokener_scrub(tok);
	json_tokener_free(tok);
}

/*
 * One tokener per thread, kept between requests: its string buffer then
 * grows to the largest field once, instead of being reallocated (five
 * times for a 4 kB plaintext) and left unwiped in freed heap on every
 * request.  Freed when the thread exits.
 */
static pthread_key_t xks_tok_key;
static pthread_once_t xks_tok_once = PTHREAD_ONCE_INIT;
static int xks_tok_key_ok;

static void
xks_tok_key_init(void)
{
	xks_tok_key_ok = pthread_key_create(&xks_tok_key,
	    xks_tokener_free) == 0;
}

static struct json_tokener *
xks_tokener_get(void)
{
	struct json_tokener *tok;

	pthread_once(&xks_tok_once, xks_tok_key_init);
	if (xks_tok_key_ok &&
	    (tok = pthread_getspecific(xks_tok_key)) != NULL)
		return tok;
	if ((tok = json_tokener_new()) == NULL)
		return NULL;
	if (xks_tok_key_ok && pthread_setspecific(xks_tok_key, tok) != 0) {
		json_tokener_free(tok);
		return NULL;
	}
	return tok;
}

/* Done with the thread's tokener (a private one when keys failed). */
static void
xks_tokener_put(struct json_tokener *tok)
{
	if (tok == NULL)
		return;
	if (xks_tok_key_ok)
		xks_tokener_scrub(tok);
	else
		xks_tokener_free(tok);
}

/* ---- requestMetadata ---------------------------------------------- */

#define XKS_OPBIT(op) (1u << (op))
#define XKS_OPS_ALL (XKS_OPBIT(XKS_OP_HEALTH) | XKS_OPBIT(XKS_OP_METADATA) | \
	XKS_OPBIT(XKS_OP_ENCRYPT) | XKS_OPBIT(XKS_OP_DECRYPT))
#define XKS_OPS_KEY (XKS_OPBIT(XKS_OP_METADATA) | \
	XKS_OPBIT(XKS_OP_ENCRYPT) | XKS_OPBIT(XKS_OP_DECRYPT))
#define XKS_OPS_CRYPT (XKS_OPBIT(XKS_OP_ENCRYPT) | XKS_OPBIT(XKS_OP_DECRYPT))

/* In this order the fields are checked, so the first failure is stable. */
static const struct {
	const char *name;
	size_t off;                 /* into struct xks_meta */
	unsigned required;          /* XKS_OPBIT set */
	size_t max_chars;           /* 0: no limit */
} xks_meta_fields[] = {
	{ "kmsRequestId", offsetof(struct xks_meta, kms_request_id),
	    XKS_OPS_ALL, 0 },
	{ "kmsOperation", offsetof(struct xks_meta, kms_operation),
	    XKS_OPS_ALL, 0 },
	{ "awsPrincipalArn", offsetof(struct xks_meta, aws_principal_arn),
	    XKS_OPS_KEY, XKS_ARN_MAX },
	{ "kmsKeyArn", offsetof(struct xks_meta, kms_key_arn),
	    XKS_OPS_CRYPT, XKS_ARN_MAX },
	{ "kmsViaService", offsetof(struct xks_meta, kms_via_service), 0, 0 },
	{ "awsSourceVpc", offsetof(struct xks_meta, aws_source_vpc), 0, 0 },
	{ "awsSourceVpce", offsetof(struct xks_meta, aws_source_vpce), 0, 0 },
};

/* Characters (code points) of a string json-c has validated as UTF-8. */
static size_t
xks_utf8_chars(const char *s, size_t len)
{
	size_t i, n = 0;

	for (i = 0; i < len; i++)
		if (((unsigned char)s[i] & 0xc0) != 0x80)
			n++;
	return n;
}

/*
 * Fetch a string member.  An absent member, or a JSON null (what a
 * serializer with optional fields may emit: the reference proxy accepts
 * it too), is "absent": an error when required, else *s NULL.
 */
static enum xerr
xks_get_string(json_object *obj, const char *prefix, const char *key,
    int required, json_object **jsp, const char **s, size_t *slen,
    char *msg, size_t msglen)
{
	json_object *js = NULL;

	*s = NULL;
	*slen = 0;
	if (jsp != NULL)
		*jsp = NULL;
	if (!json_object_object_get_ex(obj, key, &js) || js == NULL) {
		if (!required)
			return XERR_OK;
		xks_msg(msg, msglen, "%s%s: required", prefix, key);
		return XERR_VALIDATION;
	}
	if (!json_object_is_type(js, json_type_string)) {
		xks_msg(msg, msglen, "%s%s: must be a string", prefix, key);
		return XERR_VALIDATION;
	}
	*s = json_object_get_string(js);
	*slen = (size_t)json_object_get_string_len(js);
	if (jsp != NULL)
		*jsp = js;
	return XERR_OK;
}

/*
 * A copy for the C side.  JSON allows "\u0000"; a C string would silently
 * end there, so an embedded NUL becomes '?' (it can then match nothing in
 * an authorization rule and is escaped anyway in logs).
 */
static char *
xks_strdup_nul(const char *s, size_t len)
{
	char *d;
	size_t i;

	if ((d = malloc(len + 1)) == NULL)
		return NULL;
	for (i = 0; i < len; i++)
		d[i] = s[i] == '\0' ? '?' : s[i];
	d[len] = '\0';
	return d;
}

static enum xerr
xks_parse_meta(json_object *root, enum xks_op op, struct xks_meta *meta,
    char *msg, size_t msglen)
{
	static const char prefix[] = "requestMetadata.";
	json_object *md = NULL;
	const char *s;
	size_t i, slen;
	char **dst;
	enum xerr r;

	if (!json_object_object_get_ex(root, "requestMetadata", &md) ||
	    md == NULL) {
		xks_msg(msg, msglen, "requestMetadata: required");
		return XERR_VALIDATION;
	}
	if (!json_object_is_type(md, json_type_object)) {
		xks_msg(msg, msglen, "requestMetadata: must be an object");
		return XERR_VALIDATION;
	}
	for (i = 0; i < sizeof(xks_meta_fields) / sizeof(xks_meta_fields[0]);
	    i++) {
		r = xks_get_string(md, prefix, xks_meta_fields[i].name,
		    (xks_meta_fields[i].required & XKS_OPBIT(op)) != 0, NULL,
		    &s, &slen, msg, msglen);
		if (r != XERR_OK)
			return r;
		if (s == NULL)
			continue;
		if (xks_meta_fields[i].max_chars > 0 &&
		    xks_utf8_chars(s, slen) > xks_meta_fields[i].max_chars) {
			xks_msg(msg, msglen, "%s%s: longer than %zu characters",
			    prefix, xks_meta_fields[i].name,
			    xks_meta_fields[i].max_chars);
			return XERR_VALIDATION;
		}
		dst = (char **)(void *)((char *)meta + xks_meta_fields[i].off);
		if ((*dst = xks_strdup_nul(s, slen)) == NULL) {
			xks_msg(msg, msglen, "out of memory");
			return XERR_INTERNAL;
		}
	}
	return XERR_OK;
}

/* ---- Base64 fields ------------------------------------------------ */

enum xks_size_rule {
	XKS_SZ_MAX_UNSUPPORTED,   /* > max: 501, this proxy's configured limit */
	XKS_SZ_MAX_INVALID,       /* > max: 400 */
	XKS_SZ_IV,                /* 12 or 16 */
	XKS_SZ_TAG,               /* 16 */
};

static enum xerr
xks_check_size(enum xks_size_rule rule, const char *key, size_t n, size_t max,
    char *msg, size_t msglen)
{
	switch (rule) {
	case XKS_SZ_MAX_UNSUPPORTED:
		if (n <= max)
			return XERR_OK;
		xks_msg(msg, msglen, "%s: decodes to %zu bytes, above the "
		    "supported maximum of %zu", key, n, max);
		return XERR_UNSUPPORTED;
	case XKS_SZ_MAX_INVALID:
		if (n <= max)
			return XERR_OK;
		xks_msg(msg, msglen, "%s: must decode to at most %zu bytes, "
		    "got %zu", key, max, n);
		return XERR_VALIDATION;
	case XKS_SZ_IV:
		if (n == 12 || n == 16)
			return XERR_OK;
		xks_msg(msg, msglen, "%s: must decode to 12 or 16 bytes, "
		    "got %zu", key, n);
		return XERR_VALIDATION;
	case XKS_SZ_TAG:
		if (n == XKS_GCM_TAG_LEN)
			return XERR_OK;
		xks_msg(msg, msglen, "%s: must decode to %d bytes, got %zu",
		    key, XKS_GCM_TAG_LEN, n);
		return XERR_VALIDATION;
	}
	return XERR_INTERNAL;
}

/*
 * Fetch and decode a Base64 member.  The size rule is applied to the
 * length the Base64 text implies before anything is decoded (so an
 * oversized value costs no allocation), and again to the result.  The
 * JSON copy of the text is wiped once decoded.  Messages name the field,
 * never its value.
 */
static enum xerr
xks_get_b64(json_object *root, const char *key, int required,
    enum xks_size_rule rule, size_t max, unsigned char **out, size_t *outlen,
    int *present, char *msg, size_t msglen)
{
	json_object *js = NULL;
	const char *s, *reason = NULL;
	unsigned char *buf = NULL;
	size_t slen, n = 0;
	enum xerr r;

	*out = NULL;
	*outlen = 0;
	if (present != NULL)
		*present = 0;
	r = xks_get_string(root, "", key, required, &js, &s, &slen, msg,
	    msglen);
	if (r != XERR_OK || s == NULL)
		goto out;
	if (slen % 4 == 0 &&
	    (r = xks_check_size(rule, key, b64_decoded_len(s, slen), max, msg,
	    msglen)) != XERR_OK)
		goto out;
	if ((buf = b64_decode(s, slen, &n, &reason)) == NULL) {
		if (reason != NULL && strcmp(reason, "out of memory") == 0) {
			xks_msg(msg, msglen, "out of memory");
			r = XERR_INTERNAL;
		} else {
			xks_msg(msg, msglen, "%s: not valid Base64 (%s)", key,
			    reason != NULL ? reason : "invalid");
			r = XERR_VALIDATION;
		}
		goto out;
	}
	if ((r = xks_check_size(rule, key, n, max, msg, msglen)) != XERR_OK)
		goto out;
	*out = buf;
	*outlen = n;
	buf = NULL;
	if (present != NULL)
		*present = 1;
	r = XERR_OK;
 out:
	b64_free(buf, n);
	xks_json_wipe_string(js);
	return r;
}

/* A member that must be the string want exactly. */
static enum xerr
xks_get_const(json_object *root, const char *key, int required,
    const char *want, int *present, char *msg, size_t msglen)
{
	const char *s;
	size_t slen;
	enum xerr r;

	*present = 0;
	if ((r = xks_get_string(root, "", key, required, NULL, &s, &slen,
	    msg, msglen)) != XERR_OK || s == NULL)
		return r;
	if (slen != strlen(want) || memcmp(s, want, slen) != 0) {
		xks_msg(msg, msglen, "%s: must be %s", key, want);
		return XERR_VALIDATION;
	}
	*present = 1;
	return XERR_OK;
}

/* ---- the request -------------------------------------------------- */

/* Parse body into a JSON object; the whole body, and only an object. */
static enum xerr
xks_parse_json(const char *body, size_t len, json_object **rootp, char *msg,
    size_t msglen)
{
	struct json_tokener *tok = NULL;
	json_object *root = NULL;
	enum json_tokener_error jerr;
	enum xerr r = XERR_INTERNAL;
	size_t end, i;

	*rootp = NULL;
	if (len > (size_t)INT_MAX - 1) {
		xks_msg(msg, msglen, "body: too large");
		r = XERR_VALIDATION;
		goto out;
	}
	if ((tok = xks_tokener_get()) == NULL) {
		xks_msg(msg, msglen, "out of memory");
		goto out;
	}
	/*
	 * Strict JSON (no trailing commas, no comments), UTF-8 checked.
	 * Trailing bytes are allowed by the tokener and refused below, for
	 * a message that says what is wrong.
	 */
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT |
	    JSON_TOKENER_ALLOW_TRAILING_CHARS | JSON_TOKENER_VALIDATE_UTF8);
	root = json_tokener_parse_ex(tok, body != NULL ? body : "", (int)len);
	jerr = json_tokener_get_error(tok);
	end = json_tokener_get_parse_end(tok);
	if (root == NULL && jerr == json_tokener_continue) {
		/*
		 * A NUL tells the tokener the input is over: a truncated body
		 * then fails, and a top-level scalar ("123") completes.
		 */
		root = json_tokener_parse_ex(tok, "", 1);
		jerr = json_tokener_get_error(tok);
		end = len;
	}
	if (jerr != json_tokener_success) {
		xks_msg(msg, msglen, "body: not valid JSON (%s)",
		    jerr == json_tokener_continue ? "unexpected end of data" :
		    json_tokener_error_desc(jerr));
		r = XERR_VALIDATION;
		goto out;
	}
	for (i = end; i < len; i++) {
		if (body[i] != ' ' && body[i] != '\t' && body[i] != '\n' &&
		    body[i] != '\r') {
			xks_msg(msg, msglen,
			    "body: unexpected data after the JSON object");
			r = XERR_VALIDATION;
			goto out;
		}
	}
	if (root == NULL || !json_object_is_type(root, json_type_object)) {
		xks_msg(msg, msglen, "body: must be a JSON object");
		r = XERR_VALIDATION;
		goto out;
	}
	*rootp = root;
	root = NULL;
	r = XERR_OK;
 out:
	json_object_put(root);
	xks_tokener_put(tok);
	return r;
}

/* Free the decoded buffers only; requestMetadata stays for the log line. */
static void
xks_req_clear_data(struct xks_req *req)
{
	b64_free(req->plaintext, req->plaintext_len);
	b64_free(req->ciphertext, req->ciphertext_len);
	b64_free(req->aad, req->aad_len);
	b64_free(req->iv, req->iv_len);
	b64_free(req->tag, req->tag_len);
	b64_free(req->cmeta, req->cmeta_len);
	req->plaintext = req->ciphertext = req->aad = NULL;
	req->iv = req->tag = req->cmeta = NULL;
	req->plaintext_len = req->ciphertext_len = req->aad_len = 0;
	req->iv_len = req->tag_len = req->cmeta_len = 0;
	req->has_aad = req->has_cmeta = req->want_cdiv = 0;
}

enum xerr
xks_parse_request(enum xks_op op, const char *body, size_t len,
    const struct xks_limits *lim, struct xks_req *req, char *msg,
    size_t msglen)
{
	json_object *root = NULL;
	size_t max_pt = XKS_DEFAULT_MAX_PLAINTEXT, max_aad = XKS_DEFAULT_MAX_AAD;
	enum xerr r = XERR_INTERNAL;
	int present;

	memset(req, 0, sizeof(*req));
	req->op = op;
	if (msg != NULL && msglen > 0)
		msg[0] = '\0';
	if (lim != NULL) {
		max_pt = lim->max_plaintext;
		max_aad = lim->max_aad;
	}
	if (op != XKS_OP_HEALTH && op != XKS_OP_METADATA &&
	    op != XKS_OP_ENCRYPT && op != XKS_OP_DECRYPT) {
		xks_msg(msg, msglen, "no such operation");
		goto out;
	}
	if ((r = xks_parse_json(body, len, &root, msg, msglen)) != XERR_OK)
		goto out;
	if ((r = xks_parse_meta(root, op, &req->meta, msg, msglen)) != XERR_OK)
		goto out;

	switch (op) {
	case XKS_OP_ENCRYPT:
		if ((r = xks_get_b64(root, "plaintext", 1,
		    XKS_SZ_MAX_UNSUPPORTED, max_pt, &req->plaintext,
		    &req->plaintext_len, NULL, msg, msglen)) != XERR_OK)
			goto out;
		if ((r = xks_get_const(root, "encryptionAlgorithm", 1,
		    "AES_GCM", &present, msg, msglen)) != XERR_OK)
			goto out;
		if ((r = xks_get_b64(root, "additionalAuthenticatedData", 0,
		    XKS_SZ_MAX_UNSUPPORTED, max_aad, &req->aad, &req->aad_len,
		    &req->has_aad, msg, msglen)) != XERR_OK)
			goto out;
		if ((r = xks_get_const(root,
		    "ciphertextDataIntegrityValueAlgorithm", 0, "SHA_256",
		    &req->want_cdiv, msg, msglen)) != XERR_OK)
			goto out;
		break;
	case XKS_OP_DECRYPT:
		if ((r = xks_get_b64(root, "ciphertext", 1,
		    XKS_SZ_MAX_UNSUPPORTED, max_pt, &req->ciphertext,
		    &req->ciphertext_len, NULL, msg, msglen)) != XERR_OK)
			goto out;
		if ((r = xks_get_const(root, "encryptionAlgorithm", 1,
		    "AES_GCM", &present, msg, msglen)) != XERR_OK)
			goto out;
		if ((r = xks_get_b64(root, "initializationVector", 1,
		    XKS_SZ_IV, 0, &req->iv, &req->iv_len, NULL, msg,
		    msglen)) != XERR_OK)
			goto out;
		if ((r = xks_get_b64(root, "authenticationTag", 1,
		    XKS_SZ_TAG, 0, &req->tag, &req->tag_len, NULL, msg,
		    msglen)) != XERR_OK)
			goto out;
		if ((r = xks_get_b64(root, "additionalAuthenticatedData", 0,
		    XKS_SZ_MAX_UNSUPPORTED, max_aad, &req->aad, &req->aad_len,
		    &req->has_aad, msg, msglen)) != XERR_OK)
			goto out;
		if ((r = xks_get_b64(root, "ciphertextMetadata", 0,
		    XKS_SZ_MAX_INVALID, XKS_CMETA_MAX, &req->cmeta,
		    &req->cmeta_len, &req->has_cmeta, msg, msglen)) != XERR_OK)
			goto out;
		break;
	default:
		break;
	}
	r = XERR_OK;
 out:
	/*
	 * Plaintext and AAD fields were wiped in json-c's copy as they were
	 * decoded; the rest of the tree holds nothing secret.
	 */
	json_object_put(root);
	if (r != XERR_OK)
		xks_req_clear_data(req);
	return r;
}

void
xks_req_clear(struct xks_req *req)
{
	if (req == NULL)
		return;
	xks_req_clear_data(req);
	free(req->meta.kms_request_id);
	free(req->meta.kms_operation);
	free(req->meta.aws_principal_arn);
	free(req->meta.kms_key_arn);
	free(req->meta.kms_via_service);
	free(req->meta.aws_source_vpc);
	free(req->meta.aws_source_vpce);
	memset(req, 0, sizeof(*req));
}

/* ---- AAD, ciphertextMetadata, CDIV -------------------------------- */

unsigned char *
xks_hsm_aad(const unsigned char *aad, size_t aad_len,
    const unsigned char *cmeta, size_t cmeta_len, size_t *outlen)
{
	unsigned char *buf, *p;
	size_t n;

	*outlen = 0;
	if (aad_len > 0xffff || cmeta_len > 0xff ||
	    (aad == NULL && aad_len > 0) || (cmeta == NULL && cmeta_len > 0))
		return NULL;
	n = 2 + aad_len + 1 + cmeta_len;
	if ((buf = malloc(n)) == NULL)
		return NULL;
	p = buf;
	*p++ = (unsigned char)(aad_len >> 8);
	*p++ = (unsigned char)(aad_len & 0xff);
	if (aad_len > 0)
		memcpy(p, aad, aad_len);
	p += aad_len;
	*p++ = (unsigned char)cmeta_len;
	if (cmeta_len > 0)
		memcpy(p, cmeta, cmeta_len);
	*outlen = n;
	return buf;
}

enum xerr
xks_check_cmeta(const unsigned char *cmeta, size_t len, char *msg,
    size_t msglen)
{
	if (cmeta == NULL || len == 0)
		return XERR_OK;
	if (cmeta[0] != XKS_CMETA_V1) {
		xks_msg(msg, msglen,
		    "ciphertextMetadata: unknown format version 0x%02X",
		    cmeta[0]);
		return XERR_INVALID_CIPHERTEXT;
	}
	if (len != 1) {
		xks_msg(msg, msglen, "ciphertextMetadata: format version 0x%02X "
		    "is 1 byte long, got %zu", cmeta[0], len);
		return XERR_INVALID_CIPHERTEXT;
	}
	return XERR_OK;
}

void
xks_cdiv(const unsigned char *aad, size_t aad_len,
    const unsigned char *cmeta, size_t cmeta_len,
    const unsigned char *iv, size_t iv_len,
    const unsigned char *ct, size_t ct_len,
    const unsigned char *tag, size_t tag_len, unsigned char out[32])
{
	EVP_MD_CTX *ctx = NULL;
	unsigned int n = 0;
	int ok = 0;

	if ((ctx = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1)
		goto out;
	/* Absent fields contribute nothing; no lengths (per the API). */
	if ((aad_len > 0 && EVP_DigestUpdate(ctx, aad, aad_len) != 1) ||
	    (cmeta_len > 0 && EVP_DigestUpdate(ctx, cmeta, cmeta_len) != 1) ||
	    (iv_len > 0 && EVP_DigestUpdate(ctx, iv, iv_len) != 1) ||
	    (ct_len > 0 && EVP_DigestUpdate(ctx, ct, ct_len) != 1) ||
	    (tag_len > 0 && EVP_DigestUpdate(ctx, tag, tag_len) != 1))
		goto out;
	if (EVP_DigestFinal_ex(ctx, out, &n) != 1 || n != 32)
		goto out;
	ok = 1;
 out:
	if (!ok) {
		/*
		 * The signature has no error return.  A zero value never
		 * matches the CDIV KMS computes, so KMS fails the call
		 * rather than accept a bad ciphertext.
		 */
		log_crypto_err("xks_cdiv: SHA-256");
		memset(out, 0, 32);
	}
	EVP_MD_CTX_free(ctx);
}

/* ---- response bodies ---------------------------------------------- */

/* Serialize o into a malloc'ed copy. */
static char *
xks_json_out(json_object *o, size_t *len)
{
	const char *s;
	size_t n = 0;
	char *ret;

	*len = 0;
	if ((s = json_object_to_json_string_length(o, XKS_JSON_OUT_FLAGS,
	    &n)) == NULL)
		return NULL;
	if ((ret = malloc(n + 1)) == NULL)
		return NULL;
	memcpy(ret, s, n);
	ret[n] = '\0';
	*len = n;
	return ret;
}

/* Add a string member; 0 or -1. */
static int
xks_add_str(json_object *o, const char *key, const char *val)
{
	json_object *v;

	if ((v = json_object_new_string(val != NULL ? val : "")) == NULL)
		return -1;
	if (json_object_object_add(o, key, v) != 0) {
		json_object_put(v);
		return -1;
	}
	return 0;
}

char *
xks_error_body(enum xerr e, const char *msg, size_t *len)
{
	json_object *o = NULL;
	char clean[XKS_ERRMSG_MAX];
	char *ret = NULL;

	*len = 0;
	if ((o = json_object_new_object()) == NULL)
		goto out;
	if (xks_add_str(o, "errorName", xerr_name(e)) != 0)
		goto out;
	if (msg != NULL) {
		/* Printable ASCII, at most XKS_ERRMSG_MAX - 1 characters. */
		util_sanitize(msg, strlen(msg), clean, sizeof(clean));
		if (xks_add_str(o, "errorMessage", clean) != 0)
			goto out;
	}
	ret = xks_json_out(o, len);
 out:
	json_object_put(o);
	return ret;
}

/*
 * A JSON object whose members are all Base64 strings, written by hand in
 * one buffer: Base64 text never needs JSON escaping, so the output is byte
 * for byte what json-c would write (plain, no slash escapes), without
 * json-c's string copies and growing printbuf -- which would leave
 * unwiped copies of a plaintext's Base64 in freed heap, and cost a dozen
 * allocations per response.  The caller wipes the returned body when it
 * holds a secret.
 */
struct xks_b64_member {
	const char *key;
	const unsigned char *buf;
	size_t len;
};

static char *
xks_b64_object(const struct xks_b64_member *m, size_t n, size_t *len)
{
	size_t i, need = 2, off = 0;
	char *ret;

	*len = 0;
	for (i = 0; i < n; i++) {
		if (m[i].len > (size_t)INT_MAX / 4 * 3 - 3)
			return NULL;
		need += strlen(m[i].key) + b64_encoded_len(m[i].len) + 6;
	}
	if ((ret = malloc(need + 1)) == NULL)
		return NULL;
	ret[off++] = '{';
	for (i = 0; i < n; i++) {
		if (i > 0)
			ret[off++] = ',';
		ret[off++] = '"';
		memcpy(ret + off, m[i].key, strlen(m[i].key));
		off += strlen(m[i].key);
		memcpy(ret + off, "\":\"", 3);
		off += 3;
		off += b64_encode_to(ret + off, m[i].buf, m[i].len);
		ret[off++] = '"';
	}
	ret[off++] = '}';
	ret[off] = '\0';
	*len = off;
	return ret;
}

char *
xks_encrypt_body(const unsigned char *ct, size_t ct_len,
    const unsigned char *iv, size_t iv_len, const unsigned char *tag,
    size_t tag_len, const unsigned char *cmeta, size_t cmeta_len,
    const unsigned char *cdiv, size_t *len)
{
	struct xks_b64_member m[5] = {
		{ "ciphertext", ct, ct_len },
		{ "initializationVector", iv, iv_len },
		{ "authenticationTag", tag, tag_len },
	};
	size_t n = 3;

	if (cmeta_len > 0)
		m[n++] = (struct xks_b64_member){ "ciphertextMetadata", cmeta,
		    cmeta_len };
	if (cdiv != NULL)
		m[n++] = (struct xks_b64_member){
		    "ciphertextDataIntegrityValue", cdiv, 32 };
	return xks_b64_object(m, n, len);
}

char *
xks_decrypt_body(const unsigned char *pt, size_t pt_len, size_t *len)
{
	struct xks_b64_member m = { "plaintext", pt, pt_len };

	return xks_b64_object(&m, 1, len);
}

char *
xks_metadata_body(unsigned long key_type, size_t value_len,
    unsigned usage, int enabled, size_t *len)
{
	static const struct {
		unsigned bit;
		const char *name;
	} usages[] = {
		{ HSM_USAGE_ENCRYPT, "ENCRYPT" },
		{ HSM_USAGE_DECRYPT, "DECRYPT" },
		{ HSM_USAGE_WRAP, "WRAP" },
		{ HSM_USAGE_UNWRAP, "UNWRAP" },
		{ HSM_USAGE_SIGN, "SIGN" },
		{ HSM_USAGE_VERIFY, "VERIFY" },
		{ HSM_USAGE_DERIVE, "DERIVE" },
	};
	json_object *o = NULL, *arr = NULL, *v;
	const char *spec = "UNKNOWN";
	char *ret = NULL;
	size_t i;

	*len = 0;
	if (key_type == CKK_AES) {
		switch (value_len) {
		case 16: spec = "AES_128"; break;
		case 24: spec = "AES_192"; break;
		case 32: spec = "AES_256"; break;
		default: break;
		}
	}
	if ((o = json_object_new_object()) == NULL ||
	    xks_add_str(o, "keySpec", spec) != 0)
		goto out;
	if ((arr = json_object_new_array()) == NULL)
		goto out;
	for (i = 0; i < sizeof(usages) / sizeof(usages[0]); i++) {
		if ((usage & usages[i].bit) == 0)
			continue;
		if ((v = json_object_new_string(usages[i].name)) == NULL)
			goto out;
		if (json_object_array_add(arr, v) != 0) {
			json_object_put(v);
			goto out;
		}
	}
	if (json_object_object_add(o, "keyUsage", arr) != 0)
		goto out;
	arr = NULL;
	if (xks_add_str(o, "keyStatus", enabled ? "ENABLED" : "DISABLED") != 0)
		goto out;
	ret = xks_json_out(o, len);
 out:
	json_object_put(arr);
	json_object_put(o);
	return ret;
}

/*
 * Own table rather than health_status_name(): keeps this module (and its
 * unit test) free of the health task's thread and HSM dependencies.
 */
static const char *
xks_health_status(enum health_status s)
{
	switch (s) {
	case HEALTH_ACTIVE: return "ACTIVE";
	case HEALTH_DEGRADED: return "DEGRADED";
	case HEALTH_UNAVAILABLE: return "UNAVAILABLE";
	}
	return "UNAVAILABLE";
}

/* A NUL-terminated copy of a fixed-size char array that may lack the NUL. */
static int
xks_add_fixed(json_object *o, const char *key, const char *s, size_t size)
{
	json_object *v;

	if ((v = json_object_new_string_len(s, (int)strnlen(s, size))) == NULL)
		return -1;
	if (json_object_object_add(o, key, v) != 0) {
		json_object_put(v);
		return -1;
	}
	return 0;
}

char *
xks_health_body(int fleet_size, const char *proxy_vendor,
    const char *proxy_model, const char *ekm_vendor,
    const struct health_entry *entries, size_t nentries, size_t *len)
{
	json_object *o = NULL, *arr = NULL, *e = NULL, *v;
	char *ret = NULL;
	size_t i;

	*len = 0;
	/* ekmFleetDetails holds at most 10 entries. */
	if (nentries > HEALTH_MAX_ENTRIES)
		nentries = HEALTH_MAX_ENTRIES;
	if ((o = json_object_new_object()) == NULL)
		goto out;
	if ((v = json_object_new_int(fleet_size)) == NULL)
		goto out;
	if (json_object_object_add(o, "xksProxyFleetSize", v) != 0) {
		json_object_put(v);
		goto out;
	}
	if (xks_add_str(o, "xksProxyVendor", proxy_vendor) != 0 ||
	    xks_add_str(o, "xksProxyModel", proxy_model) != 0 ||
	    xks_add_str(o, "ekmVendor", ekm_vendor) != 0)
		goto out;
	if ((arr = json_object_new_array()) == NULL)
		goto out;
	for (i = 0; i < nentries; i++) {
		if ((e = json_object_new_object()) == NULL)
			goto out;
		if (xks_add_fixed(e, "id", entries[i].id,
		    sizeof(entries[i].id)) != 0 ||
		    xks_add_fixed(e, "model", entries[i].model,
		    sizeof(entries[i].model)) != 0 ||
		    xks_add_str(e, "healthStatus",
		    xks_health_status(entries[i].status)) != 0)
			goto out;
		if (json_object_array_add(arr, e) != 0)
			goto out;
		e = NULL;
	}
	if (json_object_object_add(o, "ekmFleetDetails", arr) != 0)
		goto out;
	arr = NULL;
	ret = xks_json_out(o, len);
 out:
	json_object_put(e);
	json_object_put(arr);
	json_object_put(o);
	return ret;
}
