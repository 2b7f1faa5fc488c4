/*
 * fuzz_xks.c -- each operation's JSON request body.
 *
 * The first byte selects the operation: '0' no operation, '1'
 * GetHealthStatus, '2' GetKeyMetadata, '3' Encrypt, '4' Decrypt (any other
 * byte b: (b - '0') mod 5); the rest is the body, in a buffer of exactly its size (no
 * NUL after it).  Limits are the minimums of the XKS spec: 4300 bytes of
 * plaintext, 8192 of AAD.  What a successful parse returns is checked
 * against those limits and the sizes the spec fixes; a failure's message
 * must be printable ASCII under 512 characters.
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "route.h"
#include "xerr.h"
#include "xks.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const struct xks_limits fuzz_limits = { 4300, 8192 };

static const enum xks_op fuzz_ops[5] = {
	XKS_OP_NONE, XKS_OP_HEALTH, XKS_OP_METADATA, XKS_OP_ENCRYPT,
	XKS_OP_DECRYPT,
};

static void
fuzz_check_msg(const char *msg, size_t cap)
{
	size_t i, n;

	if (memchr(msg, '\0', cap) == NULL)
		abort();
	n = strlen(msg);
	if (n == 0 || n >= 512)
		abort();
	for (i = 0; i < n; i++)
		if ((unsigned char)msg[i] < 0x20 || (unsigned char)msg[i] > 0x7e)
			abort();
}

static void
fuzz_check_ok(const struct xks_req *req)
{
	unsigned char cdiv[32], *aad;
	char msg[512];
	size_t aadlen;

	if (req->meta.kms_request_id == NULL || req->meta.kms_operation == NULL)
		abort();
	switch (req->op) {
	case XKS_OP_ENCRYPT:
		if (req->plaintext == NULL || req->plaintext_len > 4300 ||
		    req->aad_len > 8192 || (!req->has_aad && req->aad_len != 0))
			abort();
		if (req->ciphertext != NULL || req->iv != NULL ||
		    req->tag != NULL || req->cmeta != NULL)
			abort();
		break;
	case XKS_OP_DECRYPT:
		if (req->ciphertext == NULL || req->ciphertext_len > 4300 ||
		    (req->iv_len != 12 && req->iv_len != 16) ||
		    req->tag_len != 16 || req->aad_len > 8192 ||
		    req->cmeta_len > XKS_CMETA_MAX ||
		    (!req->has_aad && req->aad_len != 0) ||
		    (!req->has_cmeta && req->cmeta_len != 0))
			abort();
		if (req->plaintext != NULL || req->want_cdiv)
			abort();
		/* what the decrypt path does next with these fields */
		msg[0] = '\0';
		if (xks_check_cmeta(req->cmeta, req->cmeta_len, msg,
		    sizeof(msg)) != XERR_OK)
			fuzz_check_msg(msg, sizeof(msg));
		aad = xks_hsm_aad(req->aad, req->aad_len, req->cmeta,
		    req->cmeta_len, &aadlen);
		if (aad == NULL ||
		    aadlen != 3 + req->aad_len + req->cmeta_len ||
		    aad[0] != (unsigned char)(req->aad_len >> 8) ||
		    aad[1] != (unsigned char)(req->aad_len & 0xff) ||
		    aad[2 + req->aad_len] != (unsigned char)req->cmeta_len)
			abort();
		free(aad);
		xks_cdiv(req->aad, req->aad_len, req->cmeta, req->cmeta_len,
		    req->iv, req->iv_len, req->ciphertext, req->ciphertext_len,
		    req->tag, req->tag_len, cdiv);
		break;
	case XKS_OP_HEALTH:
	case XKS_OP_METADATA:
		if (req->plaintext != NULL || req->ciphertext != NULL ||
		    req->aad != NULL || req->iv != NULL || req->tag != NULL ||
		    req->cmeta != NULL)
			abort();
		break;
	default:
		abort();
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct xks_req req;
	enum xks_op op;
	char msg[512], *body, *eb;
	size_t len, eblen;
	enum xerr e;

	if (size == 0)
		return 0;
	op = fuzz_ops[(uint8_t)(data[0] - '0') % 5];
	len = size - 1;
	/* exactly len bytes: the parser must not look for a NUL */
	if ((body = malloc(len > 0 ? len : 1)) == NULL)
		return 0;
	if (len > 0)
		memcpy(body, data + 1, len);

	memset(msg, 0x5a, sizeof(msg));
	e = xks_parse_request(op, body, len, &fuzz_limits, &req, msg,
	    sizeof(msg));
	if (req.op != op)
		abort();
	if (e == XERR_OK) {
		if (op == XKS_OP_NONE)
			abort();
		fuzz_check_ok(&req);
	} else {
		if (op == XKS_OP_NONE) {
			if (e != XERR_INTERNAL && e != XERR_VALIDATION &&
			    e != XERR_UNSUPPORTED)
				abort();
		} else if (e != XERR_VALIDATION && e != XERR_UNSUPPORTED)
			abort();
		fuzz_check_msg(msg, sizeof(msg));
		/* a failure keeps no decoded data, only requestMetadata */
		if (req.plaintext != NULL || req.ciphertext != NULL ||
		    req.aad != NULL || req.iv != NULL || req.tag != NULL ||
		    req.cmeta != NULL)
			abort();
		if ((eb = xks_error_body(e, msg, &eblen)) == NULL ||
		    strlen(eb) != eblen)
			abort();
		free(eb);
	}
	xks_req_clear(&req);
	xks_req_clear(&req);
	free(body);
	return 0;
}
