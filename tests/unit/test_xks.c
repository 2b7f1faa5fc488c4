#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <json-c/json.h>
#include <p11-kit/pkcs11.h>

#include "b64.h"
#include "health.h"
#include "hsm.h"
#include "xks.h"

static const struct xks_limits deflim = { 4300, 8192 };

#define MD_HEALTH "\"requestMetadata\":{\"kmsRequestId\":\"r-1\"," \
	"\"kmsOperation\":\"KmsHealthCheck\"}"
#define PRINCIPAL "arn:aws:iam::123456789012:user/Alice"
#define KEYARN "arn:aws:kms:us-east-1:123456789012:key/0123"
#define MD_META "\"requestMetadata\":{\"awsPrincipalArn\":\"" PRINCIPAL \
	"\",\"kmsOperation\":\"DescribeKey\",\"kmsRequestId\":\"r-2\"}"
#define MD_CRYPT "\"requestMetadata\":{\"awsPrincipalArn\":\"" PRINCIPAL \
	"\",\"kmsKeyArn\":\"" KEYARN "\",\"kmsOperation\":\"Encrypt\"," \
	"\"kmsRequestId\":\"r-3\"}"
#define ALG "\"encryptionAlgorithm\":\"AES_GCM\""
#define IV12 "\"initializationVector\":\"AAAAAAAAAAAAAAAA\""
#define TAG16 "\"authenticationTag\":\"AAAAAAAAAAAAAAAAAAAAAA==\""
#define DEC_MIN "{" MD_CRYPT ",\"ciphertext\":\"AQID\"," ALG "," IV12 "," \
	TAG16 "}"
#define ENC_MIN "{" MD_CRYPT ",\"plaintext\":\"SGVsbG8=\"," ALG "}"

/* printf into a fresh buffer. */
static char *
mk(const char *fmt, ...)
{
	va_list ap;
	char *s;
	int n;

	va_start(ap, fmt);
	n = vsnprintf(NULL, 0, fmt, ap);
	va_end(ap);
	assert_true(n >= 0);
	s = malloc((size_t)n + 1);
	assert_non_null(s);
	va_start(ap, fmt);
	vsnprintf(s, (size_t)n + 1, fmt, ap);
	va_end(ap);
	return s;
}

/* Base64 of n bytes of value 0x5a. */
static char *
b64_of_n(size_t n)
{
	unsigned char *buf = malloc(n > 0 ? n : 1);
	char *s;

	assert_non_null(buf);
	memset(buf, 0x5a, n);
	s = b64_encode(buf, n);
	assert_non_null(s);
	free(buf);
	return s;
}

static enum xerr
parse(enum xks_op op, const char *body, struct xks_req *req, char *msg,
    size_t msglen)
{
	return xks_parse_request(op, body, strlen(body), &deflim, req, msg,
	    msglen);
}

static void
expect_ok(enum xks_op op, const char *body)
{
	struct xks_req req;
	char msg[512];
	enum xerr e;

	e = parse(op, body, &req, msg, sizeof(msg));
	if (e != XERR_OK)
		fail_msg("unexpected failure %d: %s for %s", e, msg, body);
	assert_string_equal(msg, "");
	xks_req_clear(&req);
}

static void
expect_err_lim(enum xks_op op, const char *body, size_t len,
    const struct xks_limits *lim, enum xerr want, const char *wantmsg)
{
	struct xks_req req;
	char msg[512];
	enum xerr e;

	memset(msg, 'Z', sizeof(msg));
	e = xks_parse_request(op, body, len, lim, &req, msg, sizeof(msg));
	assert_int_equal(e, want);
	assert_string_equal(msg, wantmsg);
	if (want == XERR_OK) {
		xks_req_clear(&req);
		return;
	}
	/* decoded buffers are gone on failure */
	assert_null(req.plaintext);
	assert_null(req.ciphertext);
	assert_null(req.aad);
	assert_null(req.iv);
	assert_null(req.tag);
	assert_null(req.cmeta);
	xks_req_clear(&req);
}

static void
expect_err(enum xks_op op, const char *body, enum xerr want,
    const char *wantmsg)
{
	expect_err_lim(op, body, strlen(body), &deflim, want, wantmsg);
}

/* ---- minimal valid bodies ---------------------------------------- */

static void
test_health_minimal(void **state)
{
	struct xks_req req;
	char msg[512];

	(void)state;
	assert_int_equal(parse(XKS_OP_HEALTH, "{" MD_HEALTH "}", &req, msg,
	    sizeof(msg)), XERR_OK);
	assert_int_equal(req.op, XKS_OP_HEALTH);
	assert_string_equal(req.meta.kms_request_id, "r-1");
	assert_string_equal(req.meta.kms_operation, "KmsHealthCheck");
	assert_null(req.meta.aws_principal_arn);
	assert_null(req.meta.kms_key_arn);
	assert_null(req.meta.kms_via_service);
	assert_null(req.meta.aws_source_vpc);
	assert_null(req.meta.aws_source_vpce);
	assert_null(req.plaintext);
	xks_req_clear(&req);
	assert_null(req.meta.kms_request_id);
	xks_req_clear(&req);
	xks_req_clear(NULL);
}

static void
test_metadata_minimal(void **state)
{
	struct xks_req req;
	char msg[512];

	(void)state;
	assert_int_equal(parse(XKS_OP_METADATA, "{" MD_META "}", &req, msg,
	    sizeof(msg)), XERR_OK);
	assert_string_equal(req.meta.aws_principal_arn, PRINCIPAL);
	assert_string_equal(req.meta.kms_operation, "DescribeKey");
	assert_string_equal(req.meta.kms_request_id, "r-2");
	assert_null(req.meta.kms_key_arn);
	xks_req_clear(&req);
}

static void
test_encrypt_minimal(void **state)
{
	struct xks_req req;
	char msg[512];

	(void)state;
	assert_int_equal(parse(XKS_OP_ENCRYPT, ENC_MIN, &req, msg,
	    sizeof(msg)), XERR_OK);
	assert_int_equal(req.plaintext_len, 5);
	assert_memory_equal(req.plaintext, "Hello", 5);
	assert_string_equal(req.meta.kms_key_arn, KEYARN);
	assert_int_equal(req.has_aad, 0);
	assert_null(req.aad);
	assert_int_equal(req.aad_len, 0);
	assert_int_equal(req.want_cdiv, 0);
	assert_null(req.ciphertext);
	assert_null(req.iv);
	xks_req_clear(&req);
}

static void
test_encrypt_full(void **state)
{
	struct xks_req req;
	char msg[512];
	const char *body = "{\"requestMetadata\":{\"awsPrincipalArn\":\""
	    PRINCIPAL "\",\"kmsKeyArn\":\"" KEYARN "\",\"kmsOperation\":"
	    "\"GenerateDataKey\",\"kmsRequestId\":\"r-4\",\"kmsViaService\":"
	    "\"ebs\",\"awsSourceVpc\":\"vpc-1\",\"awsSourceVpce\":\"vpce-2\"},"
	    "\"plaintext\":\"\",\"encryptionAlgorithm\":\"AES_GCM\","
	    "\"additionalAuthenticatedData\":\"YWJj\","
	    "\"ciphertextDataIntegrityValueAlgorithm\":\"SHA_256\"}";

	(void)state;
	assert_int_equal(parse(XKS_OP_ENCRYPT, body, &req, msg, sizeof(msg)),
	    XERR_OK);
	assert_int_equal(req.plaintext_len, 0);
	assert_non_null(req.plaintext);
	assert_int_equal(req.has_aad, 1);
	assert_int_equal(req.aad_len, 3);
	assert_memory_equal(req.aad, "abc", 3);
	assert_int_equal(req.want_cdiv, 1);
	assert_string_equal(req.meta.kms_via_service, "ebs");
	assert_string_equal(req.meta.aws_source_vpc, "vpc-1");
	assert_string_equal(req.meta.aws_source_vpce, "vpce-2");
	assert_string_equal(req.meta.kms_operation, "GenerateDataKey");
	xks_req_clear(&req);
}

static void
test_decrypt_minimal(void **state)
{
	static const unsigned char zero[16];
	struct xks_req req;
	char msg[512];

	(void)state;
	assert_int_equal(parse(XKS_OP_DECRYPT, DEC_MIN, &req, msg,
	    sizeof(msg)), XERR_OK);
	assert_int_equal(req.ciphertext_len, 3);
	assert_memory_equal(req.ciphertext, "\x01\x02\x03", 3);
	assert_int_equal(req.iv_len, 12);
	assert_memory_equal(req.iv, zero, 12);
	assert_int_equal(req.tag_len, 16);
	assert_memory_equal(req.tag, zero, 16);
	assert_int_equal(req.has_aad, 0);
	assert_int_equal(req.has_cmeta, 0);
	assert_null(req.cmeta);
	assert_null(req.plaintext);
	xks_req_clear(&req);
}

static void
test_decrypt_full(void **state)
{
	struct xks_req req;
	char msg[512];
	const char *body = "{" MD_CRYPT ",\"ciphertext\":\"\"," ALG ","
	    "\"initializationVector\":\"AAAAAAAAAAAAAAAAAAAAAA==\"," TAG16 ","
	    "\"additionalAuthenticatedData\":\"\",\"ciphertextMetadata\":\"AQ==\"}";

	(void)state;
	assert_int_equal(parse(XKS_OP_DECRYPT, body, &req, msg, sizeof(msg)),
	    XERR_OK);
	assert_int_equal(req.ciphertext_len, 0);
	assert_int_equal(req.iv_len, 16);
	assert_int_equal(req.has_aad, 1);          /* present but empty */
	assert_non_null(req.aad);
	assert_int_equal(req.aad_len, 0);
	assert_int_equal(req.has_cmeta, 1);
	assert_int_equal(req.cmeta_len, 1);
	assert_int_equal(req.cmeta[0], XKS_CMETA_V1);
	xks_req_clear(&req);
}

static void
test_null_optional_is_absent(void **state)
{
	struct xks_req req;
	char msg[512];
	const char *body = "{\"requestMetadata\":{\"awsPrincipalArn\":\""
	    PRINCIPAL "\",\"kmsKeyArn\":\"" KEYARN "\",\"kmsOperation\":"
	    "\"Decrypt\",\"kmsRequestId\":\"r\",\"kmsViaService\":null},"
	    "\"ciphertext\":\"AQID\"," ALG "," IV12 "," TAG16 ","
	    "\"additionalAuthenticatedData\":null,\"ciphertextMetadata\":null}";

	(void)state;
	assert_int_equal(parse(XKS_OP_DECRYPT, body, &req, msg, sizeof(msg)),
	    XERR_OK);
	assert_int_equal(req.has_aad, 0);
	assert_int_equal(req.has_cmeta, 0);
	assert_null(req.meta.kms_via_service);
	xks_req_clear(&req);
}

static void
test_unknown_fields_ignored(void **state)
{
	(void)state;
	expect_ok(XKS_OP_HEALTH, "{\"requestMetadata\":{\"kmsRequestId\":"
	    "\"r\",\"kmsOperation\":\"SomethingNew\",\"newField\":[1,{}],"
	    "\"awsPrincipalArn\":\"x\"},\"topLevelNew\":{\"a\":null},"
	    "\"plaintext\":5}");
	expect_ok(XKS_OP_ENCRYPT, "{\"zzz\":1," MD_CRYPT ",\"plaintext\":"
	    "\"SGVsbG8=\"," ALG ",\"initializationVector\":7,\"extra\":true}");
	/* a field of another operation is just an unknown field */
	expect_ok(XKS_OP_METADATA, "{" MD_META ",\"ciphertext\":\"!!\"}");
	/* unknown kmsOperation values never make a request invalid */
	expect_ok(XKS_OP_ENCRYPT, "{\"requestMetadata\":{\"awsPrincipalArn\":"
	    "\"" PRINCIPAL "\",\"kmsKeyArn\":\"k\",\"kmsOperation\":"
	    "\"NotAnOperation\",\"kmsRequestId\":\"\"}," "\"plaintext\":"
	    "\"AA==\"," ALG "}");
	expect_ok(XKS_OP_HEALTH, "{\"requestMetadata\":{\"kmsRequestId\":"
	    "\"r\",\"kmsOperation\":\"\"}}");
}

static void
test_whitespace_and_length(void **state)
{
	const char *body = " \n{" MD_HEALTH "}\r\n\t ";
	char *buf;
	size_t n;

	(void)state;
	expect_ok(XKS_OP_HEALTH, body);
	/* the body need not be NUL-terminated: only len bytes are read */
	n = strlen("{" MD_HEALTH "}");
	buf = mk("{" MD_HEALTH "}garbage");
	{
		struct xks_req req;
		char msg[512];

		assert_int_equal(xks_parse_request(XKS_OP_HEALTH, buf, n,
		    &deflim, &req, msg, sizeof(msg)), XERR_OK);
		xks_req_clear(&req);
	}
	/* ...and a NUL inside len is data, not an end */
	expect_err_lim(XKS_OP_HEALTH, "{" MD_HEALTH "}\0", n + 1, &deflim,
	    XERR_VALIDATION, "body: unexpected data after the JSON object");
	free(buf);
}

/* ---- body-level failures ------------------------------------------ */

static void
test_body_failures(void **state)
{
	(void)state;
	expect_err(XKS_OP_HEALTH, "", XERR_VALIDATION,
	    "body: not valid JSON (unexpected end of data)");
	expect_err(XKS_OP_HEALTH, "   ", XERR_VALIDATION,
	    "body: not valid JSON (unexpected end of data)");
	expect_err(XKS_OP_HEALTH, "{\"requestMetadata\":{\"kmsRequestId\":",
	    XERR_VALIDATION, "body: not valid JSON (unexpected end of data)");
	expect_err(XKS_OP_HEALTH, "{\"requestMetadata\":{\"kmsReq",
	    XERR_VALIDATION, "body: not valid JSON (unexpected end of data)");
	expect_err(XKS_OP_HEALTH, "{" MD_HEALTH, XERR_VALIDATION,
	    "body: not valid JSON (unexpected end of data)");
	expect_err(XKS_OP_HEALTH, "[]", XERR_VALIDATION,
	    "body: must be a JSON object");
	expect_err(XKS_OP_HEALTH, "123", XERR_VALIDATION,
	    "body: must be a JSON object");
	expect_err(XKS_OP_HEALTH, "\"str\"", XERR_VALIDATION,
	    "body: must be a JSON object");
	expect_err(XKS_OP_HEALTH, "null", XERR_VALIDATION,
	    "body: must be a JSON object");
	expect_err(XKS_OP_HEALTH, "true", XERR_VALIDATION,
	    "body: must be a JSON object");
	expect_err(XKS_OP_HEALTH, "{" MD_HEALTH "} x", XERR_VALIDATION,
	    "body: unexpected data after the JSON object");
	expect_err(XKS_OP_HEALTH, "{" MD_HEALTH "}{}", XERR_VALIDATION,
	    "body: unexpected data after the JSON object");
	expect_err(XKS_OP_HEALTH, "{" MD_HEALTH "},", XERR_VALIDATION,
	    "body: unexpected data after the JSON object");
	expect_err(XKS_OP_HEALTH, "{" MD_HEALTH ",}", XERR_VALIDATION,
	    "body: not valid JSON (unexpected character)");
	expect_err(XKS_OP_HEALTH, "{" MD_HEALTH "/*c*/}", XERR_VALIDATION,
	    "body: not valid JSON (object value separator ',' expected)");
	expect_err(XKS_OP_HEALTH, "{\"requestMetadata\":{\"kmsRequestId\":"
	    "\"\xff\xfe\",\"kmsOperation\":\"x\"}}", XERR_VALIDATION,
	    "body: not valid JSON (invalid utf-8 string)");
	expect_err_lim(XKS_OP_HEALTH, NULL, 0, &deflim, XERR_VALIDATION,
	    "body: not valid JSON (unexpected end of data)");
}

/* ---- requestMetadata ---------------------------------------------- */

static void
test_meta_required(void **state)
{
	(void)state;
	expect_err(XKS_OP_HEALTH, "{}", XERR_VALIDATION,
	    "requestMetadata: required");
	expect_err(XKS_OP_HEALTH, "{\"requestMetadata\":null}",
	    XERR_VALIDATION, "requestMetadata: required");
	expect_err(XKS_OP_HEALTH, "{\"requestMetadata\":\"x\"}",
	    XERR_VALIDATION, "requestMetadata: must be an object");
	expect_err(XKS_OP_HEALTH, "{\"requestMetadata\":[]}",
	    XERR_VALIDATION, "requestMetadata: must be an object");
	expect_err(XKS_OP_HEALTH, "{\"requestMetadata\":{}}", XERR_VALIDATION,
	    "requestMetadata.kmsRequestId: required");
	expect_err(XKS_OP_HEALTH, "{\"requestMetadata\":{\"kmsRequestId\":"
	    "\"r\"}}", XERR_VALIDATION, "requestMetadata.kmsOperation: required");
	expect_err(XKS_OP_HEALTH, "{\"requestMetadata\":{\"kmsOperation\":"
	    "\"KmsHealthCheck\"}}", XERR_VALIDATION,
	    "requestMetadata.kmsRequestId: required");
	expect_err(XKS_OP_HEALTH, "{\"requestMetadata\":{\"kmsRequestId\":"
	    "null,\"kmsOperation\":\"x\"}}", XERR_VALIDATION,
	    "requestMetadata.kmsRequestId: required");
	/* metadata needs the principal, not the key ARN */
	expect_err(XKS_OP_METADATA, "{\"requestMetadata\":{\"kmsRequestId\":"
	    "\"r\",\"kmsOperation\":\"CreateKey\"}}", XERR_VALIDATION,
	    "requestMetadata.awsPrincipalArn: required");
	expect_err(XKS_OP_METADATA, "{}", XERR_VALIDATION,
	    "requestMetadata: required");
	expect_err(XKS_OP_ENCRYPT, "{" MD_META ",\"plaintext\":\"AA==\","
	    ALG "}", XERR_VALIDATION, "requestMetadata.kmsKeyArn: required");
	expect_err(XKS_OP_DECRYPT, "{" MD_META ",\"ciphertext\":\"AA==\","
	    ALG "," IV12 "," TAG16 "}", XERR_VALIDATION,
	    "requestMetadata.kmsKeyArn: required");
	expect_err(XKS_OP_ENCRYPT, "{\"requestMetadata\":{\"kmsKeyArn\":\"k\","
	    "\"kmsOperation\":\"Encrypt\",\"kmsRequestId\":\"r\"},"
	    "\"plaintext\":\"AA==\"," ALG "}", XERR_VALIDATION,
	    "requestMetadata.awsPrincipalArn: required");
}

static void
test_meta_types(void **state)
{
	static const struct { const char *field, *val; } v[] = {
		{ "kmsRequestId", "1" },
		{ "kmsOperation", "true" },
		{ "awsPrincipalArn", "[]" },
		{ "kmsKeyArn", "{}" },
		{ "kmsViaService", "1.5" },
		{ "awsSourceVpc", "false" },
		{ "awsSourceVpce", "[\"x\"]" },
	};
	char *body, *want;
	size_t i;

	(void)state;
	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		/* the bad field first: duplicates keep the last value */
		body = mk("{\"requestMetadata\":{\"awsPrincipalArn\":\"p\","
		    "\"kmsKeyArn\":\"k\",\"kmsOperation\":\"o\","
		    "\"kmsRequestId\":\"r\",\"%s\":%s},\"plaintext\":\"AA==\","
		    ALG "}", v[i].field, v[i].val);
		want = mk("requestMetadata.%s: must be a string", v[i].field);
		expect_err(XKS_OP_ENCRYPT, body, XERR_VALIDATION, want);
		free(body);
		free(want);
	}
	/* the optional kmsKeyArn is type-checked in metadata too */
	expect_err(XKS_OP_METADATA, "{\"requestMetadata\":{\"awsPrincipalArn\":"
	    "\"p\",\"kmsOperation\":\"o\",\"kmsRequestId\":\"r\","
	    "\"kmsKeyArn\":7}}", XERR_VALIDATION,
	    "requestMetadata.kmsKeyArn: must be a string");
	expect_err(XKS_OP_HEALTH, "{\"requestMetadata\":{\"kmsRequestId\":"
	    "\"r\",\"kmsOperation\":\"o\",\"awsSourceVpc\":1}}",
	    XERR_VALIDATION, "requestMetadata.awsSourceVpc: must be a string");
}

static void
test_meta_arn_length(void **state)
{
	char arn[2050], *body, *u;
	size_t i;

	(void)state;
	memset(arn, 'a', 2048);
	arn[2048] = '\0';
	body = mk("{\"requestMetadata\":{\"awsPrincipalArn\":\"%s\","
	    "\"kmsKeyArn\":\"%s\",\"kmsOperation\":\"o\",\"kmsRequestId\":"
	    "\"r\"},\"plaintext\":\"AA==\"," ALG "}", arn, arn);
	expect_ok(XKS_OP_ENCRYPT, body);
	free(body);
	arn[2048] = 'a';
	arn[2049] = '\0';
	body = mk("{\"requestMetadata\":{\"awsPrincipalArn\":\"%s\","
	    "\"kmsOperation\":\"o\",\"kmsRequestId\":\"r\"}}", arn);
	expect_err(XKS_OP_METADATA, body, XERR_VALIDATION,
	    "requestMetadata.awsPrincipalArn: longer than 2048 characters");
	free(body);
	body = mk("{\"requestMetadata\":{\"awsPrincipalArn\":\"p\","
	    "\"kmsKeyArn\":\"%s\",\"kmsOperation\":\"o\",\"kmsRequestId\":"
	    "\"r\"},\"ciphertext\":\"AA==\"," ALG "," IV12 "," TAG16 "}", arn);
	expect_err(XKS_OP_DECRYPT, body, XERR_VALIDATION,
	    "requestMetadata.kmsKeyArn: longer than 2048 characters");
	free(body);
	/* characters, not bytes: 2048 two-byte characters are fine */
	u = malloc(2048 * 2 + 1);
	assert_non_null(u);
	for (i = 0; i < 2048; i++)
		memcpy(u + 2 * i, "\xc3\xa9", 2);
	u[4096] = '\0';
	body = mk("{\"requestMetadata\":{\"awsPrincipalArn\":\"%s\","
	    "\"kmsOperation\":\"o\",\"kmsRequestId\":\"r\"}}", u);
	expect_ok(XKS_OP_METADATA, body);
	free(body);
	free(u);
	/* no limit on the other fields */
	body = mk("{\"requestMetadata\":{\"kmsRequestId\":\"%s%s\","
	    "\"kmsOperation\":\"o\"}}", arn, arn);
	expect_ok(XKS_OP_HEALTH, body);
	free(body);
}

static void
test_meta_embedded_nul(void **state)
{
	struct xks_req req;
	char msg[512];

	(void)state;
	assert_int_equal(parse(XKS_OP_HEALTH, "{\"requestMetadata\":{"
	    "\"kmsRequestId\":\"a\\u0000b\",\"kmsOperation\":\"x\"}}", &req,
	    msg, sizeof(msg)), XERR_OK);
	assert_string_equal(req.meta.kms_request_id, "a?b");
	xks_req_clear(&req);
}

static void
test_meta_kept_on_failure(void **state)
{
	struct xks_req req;
	char msg[512];

	(void)state;
	assert_int_equal(parse(XKS_OP_ENCRYPT, "{" MD_CRYPT ",\"plaintext\":"
	    "\"QR==\"," ALG "}", &req, msg, sizeof(msg)), XERR_VALIDATION);
	assert_string_equal(msg,
	    "plaintext: not valid Base64 (non-canonical trailing bits)");
	assert_string_equal(req.meta.kms_request_id, "r-3");
	assert_null(req.plaintext);
	xks_req_clear(&req);
	/* msg may be NULL */
	assert_int_equal(xks_parse_request(XKS_OP_HEALTH, "{}", 2, &deflim,
	    &req, NULL, 0), XERR_VALIDATION);
	xks_req_clear(&req);
	/* no limits: the API minimums */
	assert_int_equal(xks_parse_request(XKS_OP_ENCRYPT, ENC_MIN,
	    strlen(ENC_MIN), NULL, &req, msg, sizeof(msg)), XERR_OK);
	xks_req_clear(&req);
}

/*
 * The tokener is kept per thread between requests: whatever a failed parse
 * left in it (a truncated body, trailing data, a scalar, a deep nesting)
 * must not change how the next body parses.
 */
static void
test_tokener_reuse(void **state)
{
	static const char *const bad[] = {
		"{" MD_CRYPT ",\"plaintext\":\"SGVs",    /* truncated */
		ENC_MIN " x",                           /* trailing data */
		"\"SGVsbG8=\"",                         /* a scalar */
		"[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",   /* too deep */
		"{\"plaintext\":\"SGVsbG8=\",",            /* unfinished member */
	};
	struct xks_req req;
	char msg[256];
	size_t i;
	int round;

	(void)state;
	for (round = 0; round < 2; round++) {
		for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
			memset(&req, 0, sizeof(req));
			assert_int_equal(parse(XKS_OP_ENCRYPT, bad[i], &req, msg,
			    sizeof(msg)), XERR_VALIDATION);
			xks_req_clear(&req);
			memset(&req, 0, sizeof(req));
			assert_int_equal(parse(XKS_OP_ENCRYPT, ENC_MIN, &req, msg,
			    sizeof(msg)), XERR_OK);
			assert_int_equal(req.plaintext_len, 5);
			assert_memory_equal(req.plaintext, "Hello", 5);
			xks_req_clear(&req);
		}
	}
}

/* ---- encrypt ------------------------------------------------------ */

static void
test_encrypt_fields(void **state)
{
	(void)state;
	expect_err(XKS_OP_ENCRYPT, "{" MD_CRYPT "," ALG "}", XERR_VALIDATION,
	    "plaintext: required");
	expect_err(XKS_OP_ENCRYPT, "{" MD_CRYPT ",\"plaintext\":null," ALG "}",
	    XERR_VALIDATION, "plaintext: required");
	expect_err(XKS_OP_ENCRYPT, "{" MD_CRYPT ",\"plaintext\":12," ALG "}",
	    XERR_VALIDATION, "plaintext: must be a string");
	expect_err(XKS_OP_ENCRYPT, "{" MD_CRYPT ",\"plaintext\":\"SGVsbG8\","
	    ALG "}", XERR_VALIDATION,
	    "plaintext: not valid Base64 (length not a multiple of 4)");
	expect_err(XKS_OP_ENCRYPT, "{" MD_CRYPT ",\"plaintext\":\"SGV-bG8=\","
	    ALG "}", XERR_VALIDATION,
	    "plaintext: not valid Base64 (invalid character)");
	expect_err(XKS_OP_ENCRYPT, "{" MD_CRYPT ",\"plaintext\":\"SG=sbG8=\","
	    ALG "}", XERR_VALIDATION, "plaintext: not valid Base64 (bad padding)");
	expect_err(XKS_OP_ENCRYPT, "{" MD_CRYPT ",\"plaintext\":\"SGVs\\nbG8=\","
	    ALG "}", XERR_VALIDATION,
	    "plaintext: not valid Base64 (length not a multiple of 4)");
	expect_err(XKS_OP_ENCRYPT, "{" MD_CRYPT ",\"plaintext\":\"QR==\","
	    ALG "}", XERR_VALIDATION,
	    "plaintext: not valid Base64 (non-canonical trailing bits)");
	expect_err(XKS_OP_ENCRYPT, "{" MD_CRYPT ",\"plaintext\":\"AA==\"}",
	    XERR_VALIDATION, "encryptionAlgorithm: required");
	expect_err(XKS_OP_ENCRYPT, "{" MD_CRYPT ",\"plaintext\":\"AA==\","
	    "\"encryptionAlgorithm\":\"AES_CBC\"}", XERR_VALIDATION,
	    "encryptionAlgorithm: must be AES_GCM");
	expect_err(XKS_OP_ENCRYPT, "{" MD_CRYPT ",\"plaintext\":\"AA==\","
	    "\"encryptionAlgorithm\":\"aes_gcm\"}", XERR_VALIDATION,
	    "encryptionAlgorithm: must be AES_GCM");
	expect_err(XKS_OP_ENCRYPT, "{" MD_CRYPT ",\"plaintext\":\"AA==\","
	    "\"encryptionAlgorithm\":\"AES_GCM\\u0000\"}", XERR_VALIDATION,
	    "encryptionAlgorithm: must be AES_GCM");
	expect_err(XKS_OP_ENCRYPT, "{" MD_CRYPT ",\"plaintext\":\"AA==\","
	    "\"encryptionAlgorithm\":[\"AES_GCM\"]}", XERR_VALIDATION,
	    "encryptionAlgorithm: must be a string");
	expect_err(XKS_OP_ENCRYPT, "{" MD_CRYPT ",\"plaintext\":\"AA==\"," ALG
	    ",\"additionalAuthenticatedData\":\"YWJ\"}", XERR_VALIDATION,
	    "additionalAuthenticatedData: not valid Base64 (length not a "
	    "multiple of 4)");
	expect_err(XKS_OP_ENCRYPT, "{" MD_CRYPT ",\"plaintext\":\"AA==\"," ALG
	    ",\"additionalAuthenticatedData\":false}", XERR_VALIDATION,
	    "additionalAuthenticatedData: must be a string");
	expect_err(XKS_OP_ENCRYPT, "{" MD_CRYPT ",\"plaintext\":\"AA==\"," ALG
	    ",\"ciphertextDataIntegrityValueAlgorithm\":\"SHA_512\"}",
	    XERR_VALIDATION,
	    "ciphertextDataIntegrityValueAlgorithm: must be SHA_256");
	expect_err(XKS_OP_ENCRYPT, "{" MD_CRYPT ",\"plaintext\":\"AA==\"," ALG
	    ",\"ciphertextDataIntegrityValueAlgorithm\":{}}", XERR_VALIDATION,
	    "ciphertextDataIntegrityValueAlgorithm: must be a string");
}

static void
test_encrypt_limits(void **state)
{
	struct xks_limits small = { 10, 3 };
	char *p, *body;

	(void)state;
	p = b64_of_n(4300);
	body = mk("{" MD_CRYPT ",\"plaintext\":\"%s\"," ALG "}", p);
	expect_ok(XKS_OP_ENCRYPT, body);
	free(body);
	free(p);
	p = b64_of_n(4301);
	body = mk("{" MD_CRYPT ",\"plaintext\":\"%s\"," ALG "}", p);
	expect_err(XKS_OP_ENCRYPT, body, XERR_UNSUPPORTED,
	    "plaintext: decodes to 4301 bytes, above the supported maximum "
	    "of 4300");
	free(body);
	free(p);
	p = b64_of_n(8192);
	body = mk("{" MD_CRYPT ",\"plaintext\":\"AA==\"," ALG ","
	    "\"additionalAuthenticatedData\":\"%s\"}", p);
	expect_ok(XKS_OP_ENCRYPT, body);
	free(body);
	free(p);
	p = b64_of_n(8193);
	body = mk("{" MD_CRYPT ",\"plaintext\":\"AA==\"," ALG ","
	    "\"additionalAuthenticatedData\":\"%s\"}", p);
	expect_err(XKS_OP_ENCRYPT, body, XERR_UNSUPPORTED,
	    "additionalAuthenticatedData: decodes to 8193 bytes, above the "
	    "supported maximum of 8192");
	free(body);
	free(p);
	/* the size is judged from the Base64 length, before decoding */
	body = mk("{" MD_CRYPT ",\"plaintext\":\"%s\"," ALG "}",
	    "AAAAAAAAAAAAAAA=");
	expect_err_lim(XKS_OP_ENCRYPT, body, strlen(body), &small,
	    XERR_UNSUPPORTED, "plaintext: decodes to 11 bytes, above the "
	    "supported maximum of 10");
	free(body);
	body = mk("{" MD_CRYPT ",\"plaintext\":\"%s\"," ALG "}",
	    "AAAAAAAAAAA-AAA=");
	expect_err_lim(XKS_OP_ENCRYPT, body, strlen(body), &small,
	    XERR_UNSUPPORTED, "plaintext: decodes to 11 bytes, above the "
	    "supported maximum of 10");
	free(body);
	body = mk("{" MD_CRYPT ",\"plaintext\":\"%s\"," ALG "}",
	    "AAAAAAAAAAAAAA==");
	expect_err_lim(XKS_OP_ENCRYPT, body, strlen(body), &small, XERR_OK, "");
	free(body);
}

/* ---- decrypt ------------------------------------------------------ */

static void
test_decrypt_fields(void **state)
{
	(void)state;
	expect_err(XKS_OP_DECRYPT, "{" MD_CRYPT "," ALG "," IV12 "," TAG16 "}",
	    XERR_VALIDATION, "ciphertext: required");
	expect_err(XKS_OP_DECRYPT, "{" MD_CRYPT ",\"ciphertext\":[]," ALG ","
	    IV12 "," TAG16 "}", XERR_VALIDATION, "ciphertext: must be a string");
	expect_err(XKS_OP_DECRYPT, "{" MD_CRYPT ",\"ciphertext\":\"A===\","
	    ALG "," IV12 "," TAG16 "}", XERR_VALIDATION,
	    "ciphertext: not valid Base64 (bad padding)");
	expect_err(XKS_OP_DECRYPT, "{" MD_CRYPT ",\"ciphertext\":\"AQID\","
	    IV12 "," TAG16 "}", XERR_VALIDATION, "encryptionAlgorithm: required");
	expect_err(XKS_OP_DECRYPT, "{" MD_CRYPT ",\"ciphertext\":\"AQID\","
	    "\"encryptionAlgorithm\":\"RSAES_OAEP_SHA_256\"," IV12 "," TAG16 "}",
	    XERR_VALIDATION, "encryptionAlgorithm: must be AES_GCM");
	expect_err(XKS_OP_DECRYPT, "{" MD_CRYPT ",\"ciphertext\":\"AQID\","
	    ALG "," TAG16 "}", XERR_VALIDATION,
	    "initializationVector: required");
	expect_err(XKS_OP_DECRYPT, "{" MD_CRYPT ",\"ciphertext\":\"AQID\","
	    ALG ",\"initializationVector\":\"AAAAAAAAAAA=\"," TAG16 "}",
	    XERR_VALIDATION,
	    "initializationVector: must decode to 12 or 16 bytes, got 8");
	expect_err(XKS_OP_DECRYPT, "{" MD_CRYPT ",\"ciphertext\":\"AQID\","
	    ALG ",\"initializationVector\":\"AAAAAAAAAAAAAAAAAA==\"," TAG16 "}",
	    XERR_VALIDATION,
	    "initializationVector: must decode to 12 or 16 bytes, got 13");
	expect_err(XKS_OP_DECRYPT, "{" MD_CRYPT ",\"ciphertext\":\"AQID\","
	    ALG ",\"initializationVector\":\"\"," TAG16 "}", XERR_VALIDATION,
	    "initializationVector: must decode to 12 or 16 bytes, got 0");
	expect_err(XKS_OP_DECRYPT, "{" MD_CRYPT ",\"ciphertext\":\"AQID\","
	    ALG ",\"initializationVector\":\"AAAAAAAAAAAAAAA_\"," TAG16 "}",
	    XERR_VALIDATION,
	    "initializationVector: not valid Base64 (invalid character)");
	expect_err(XKS_OP_DECRYPT, "{" MD_CRYPT ",\"ciphertext\":\"AQID\","
	    ALG ",\"initializationVector\":12," TAG16 "}", XERR_VALIDATION,
	    "initializationVector: must be a string");
	expect_err(XKS_OP_DECRYPT, "{" MD_CRYPT ",\"ciphertext\":\"AQID\","
	    ALG "," IV12 "}", XERR_VALIDATION, "authenticationTag: required");
	expect_err(XKS_OP_DECRYPT, "{" MD_CRYPT ",\"ciphertext\":\"AQID\","
	    ALG "," IV12 ",\"authenticationTag\":\"AAAAAAAAAAAAAAAA\"}",
	    XERR_VALIDATION, "authenticationTag: must decode to 16 bytes, got 12");
	expect_err(XKS_OP_DECRYPT, "{" MD_CRYPT ",\"ciphertext\":\"AQID\","
	    ALG "," IV12 ",\"authenticationTag\":\"AAAAAAAAAAAAAAAAAAAAAAA=\"}",
	    XERR_VALIDATION, "authenticationTag: must decode to 16 bytes, got 17");
	expect_err(XKS_OP_DECRYPT, "{" MD_CRYPT ",\"ciphertext\":\"AQID\","
	    ALG "," IV12 ",\"authenticationTag\":\"AAAAAAAAAAAAAAAAAAAAAB==\"}",
	    XERR_VALIDATION,
	    "authenticationTag: not valid Base64 (non-canonical trailing bits)");
	expect_err(XKS_OP_DECRYPT, DEC_MIN "", XERR_OK, "");
	expect_err(XKS_OP_DECRYPT, "{" MD_CRYPT ",\"ciphertext\":\"AQID\","
	    ALG "," IV12 "," TAG16 ",\"additionalAuthenticatedData\":1}",
	    XERR_VALIDATION, "additionalAuthenticatedData: must be a string");
	expect_err(XKS_OP_DECRYPT, "{" MD_CRYPT ",\"ciphertext\":\"AQID\","
	    ALG "," IV12 "," TAG16 ",\"ciphertextMetadata\":\"AQ\"}",
	    XERR_VALIDATION,
	    "ciphertextMetadata: not valid Base64 (length not a multiple of 4)");
	expect_err(XKS_OP_DECRYPT, "{" MD_CRYPT ",\"ciphertext\":\"AQID\","
	    ALG "," IV12 "," TAG16 ",\"ciphertextMetadata\":{}}",
	    XERR_VALIDATION, "ciphertextMetadata: must be a string");
}

static void
test_decrypt_limits(void **state)
{
	char *p, *body;

	(void)state;
	p = b64_of_n(4300);
	body = mk("{" MD_CRYPT ",\"ciphertext\":\"%s\"," ALG "," IV12 ","
	    TAG16 "}", p);
	expect_ok(XKS_OP_DECRYPT, body);
	free(body);
	free(p);
	p = b64_of_n(4301);
	body = mk("{" MD_CRYPT ",\"ciphertext\":\"%s\"," ALG "," IV12 ","
	    TAG16 "}", p);
	expect_err(XKS_OP_DECRYPT, body, XERR_UNSUPPORTED,
	    "ciphertext: decodes to 4301 bytes, above the supported maximum "
	    "of 4300");
	free(body);
	free(p);
	p = b64_of_n(8192);
	body = mk("{" MD_CRYPT ",\"ciphertext\":\"AQID\"," ALG "," IV12 ","
	    TAG16 ",\"additionalAuthenticatedData\":\"%s\"}", p);
	expect_ok(XKS_OP_DECRYPT, body);
	free(body);
	free(p);
	p = b64_of_n(8193);
	body = mk("{" MD_CRYPT ",\"ciphertext\":\"AQID\"," ALG "," IV12 ","
	    TAG16 ",\"additionalAuthenticatedData\":\"%s\"}", p);
	expect_err(XKS_OP_DECRYPT, body, XERR_UNSUPPORTED,
	    "additionalAuthenticatedData: decodes to 8193 bytes, above the "
	    "supported maximum of 8192");
	free(body);
	free(p);
	p = b64_of_n(20);
	body = mk("{" MD_CRYPT ",\"ciphertext\":\"AQID\"," ALG "," IV12 ","
	    TAG16 ",\"ciphertextMetadata\":\"%s\"}", p);
	expect_ok(XKS_OP_DECRYPT, body);
	free(body);
	free(p);
	p = b64_of_n(21);
	body = mk("{" MD_CRYPT ",\"ciphertext\":\"AQID\"," ALG "," IV12 ","
	    TAG16 ",\"ciphertextMetadata\":\"%s\"}", p);
	expect_err(XKS_OP_DECRYPT, body, XERR_VALIDATION,
	    "ciphertextMetadata: must decode to at most 20 bytes, got 21");
	free(body);
	free(p);
}

/* ---- AAD, ciphertextMetadata, CDIV -------------------------------- */

static void
test_hsm_aad(void **state)
{
	static const unsigned char cm = XKS_CMETA_V1;
	unsigned char *a, *big;
	size_t n = 99;

	(void)state;
	a = xks_hsm_aad(NULL, 0, NULL, 0, &n);
	assert_non_null(a);
	assert_int_equal(n, 3);
	assert_memory_equal(a, "\x00\x00\x00", 3);
	free(a);
	a = xks_hsm_aad((const unsigned char *)"abc", 3, &cm, 1, &n);
	assert_non_null(a);
	assert_int_equal(n, 7);
	assert_memory_equal(a, "\x00\x03" "abc" "\x01\x01", 7);
	free(a);
	a = xks_hsm_aad(NULL, 0, &cm, 1, &n);
	assert_int_equal(n, 4);
	assert_memory_equal(a, "\x00\x00\x01\x01", 4);
	free(a);
	big = calloc(65536, 1);
	assert_non_null(big);
	big[65534] = 0x77;
	a = xks_hsm_aad(big, 65535, NULL, 0, &n);
	assert_non_null(a);
	assert_int_equal(n, 65538);
	assert_int_equal(a[0], 0xff);
	assert_int_equal(a[1], 0xff);
	assert_int_equal(a[65536], 0x77);
	assert_int_equal(a[65537], 0);
	free(a);
	n = 5;
	assert_null(xks_hsm_aad(big, 65536, NULL, 0, &n));
	assert_int_equal(n, 0);
	assert_null(xks_hsm_aad(NULL, 0, big, 256, &n));
	a = xks_hsm_aad(NULL, 0, big, 255, &n);
	assert_non_null(a);
	assert_int_equal(n, 258);
	assert_int_equal(a[2], 255);
	free(a);
	free(big);
}

static void
test_check_cmeta(void **state)
{
	char msg[256];

	(void)state;
	msg[0] = '\0';
	assert_int_equal(xks_check_cmeta(NULL, 0, msg, sizeof(msg)), XERR_OK);
	assert_int_equal(xks_check_cmeta((const unsigned char *)"", 0, msg,
	    sizeof(msg)), XERR_OK);
	assert_int_equal(xks_check_cmeta((const unsigned char *)"\x01", 1,
	    msg, sizeof(msg)), XERR_OK);
	assert_string_equal(msg, "");
	assert_int_equal(xks_check_cmeta((const unsigned char *)"\x02", 1,
	    msg, sizeof(msg)), XERR_INVALID_CIPHERTEXT);
	assert_string_equal(msg,
	    "ciphertextMetadata: unknown format version 0x02");
	assert_int_equal(xks_check_cmeta((const unsigned char *)"\xff\x01", 2,
	    msg, sizeof(msg)), XERR_INVALID_CIPHERTEXT);
	assert_string_equal(msg,
	    "ciphertextMetadata: unknown format version 0xFF");
	assert_int_equal(xks_check_cmeta((const unsigned char *)"\x00", 1,
	    msg, sizeof(msg)), XERR_INVALID_CIPHERTEXT);
	assert_string_equal(msg,
	    "ciphertextMetadata: unknown format version 0x00");
	assert_int_equal(xks_check_cmeta((const unsigned char *)"\x01\x00", 2,
	    msg, sizeof(msg)), XERR_INVALID_CIPHERTEXT);
	assert_string_equal(msg,
	    "ciphertextMetadata: format version 0x01 is 1 byte long, got 2");
	assert_int_equal(xks_check_cmeta((const unsigned char *)"\x02", 1,
	    NULL, 0), XERR_INVALID_CIPHERTEXT);
}

static void
test_cdiv_vector(void **state)
{
	const char *body = "{" MD_CRYPT ",\"ciphertext\":\"ghxkK1txeDNn3q8Y\","
	    ALG ",\"initializationVector\":\"HMrlRw85cAJUd5Ax\","
	    "\"authenticationTag\":\"vBxN2ncH1oEkR8WVXpmyYQ==\","
	    "\"additionalAuthenticatedData\":"
	    "\"cHJvamVjdD1uaWxlLGRlcGFydG1lbnQ9bWFya2V0aW5n\","
	    "\"ciphertextMetadata\":\"a2V5X3ZlcnNpb249MQ==\"}";
	unsigned char out[32];
	struct xks_req req;
	char msg[512], *s;

	(void)state;
	assert_int_equal(parse(XKS_OP_DECRYPT, body, &req, msg, sizeof(msg)),
	    XERR_OK);
	assert_int_equal(req.aad_len, 33);
	assert_memory_equal(req.aad, "project=nile,department=marketing", 33);
	assert_int_equal(req.cmeta_len, 13);
	assert_memory_equal(req.cmeta, "key_version=1", 13);
	xks_cdiv(req.aad, req.aad_len, req.cmeta, req.cmeta_len, req.iv,
	    req.iv_len, req.ciphertext, req.ciphertext_len, req.tag,
	    req.tag_len, out);
	s = b64_encode(out, sizeof(out));
	assert_string_equal(s, "qHA/ImC9h5HsLRXqCyPmWgYx7tzyoTplzILbP0fPXsc=");
	free(s);
	/* a version-1-only proxy refuses this foreign metadata */
	assert_int_equal(xks_check_cmeta(req.cmeta, req.cmeta_len, msg,
	    sizeof(msg)), XERR_INVALID_CIPHERTEXT);
	assert_string_equal(msg,
	    "ciphertextMetadata: unknown format version 0x6B");
	xks_req_clear(&req);
	/* all absent: SHA-256 of the empty string */
	xks_cdiv(NULL, 0, NULL, 0, NULL, 0, NULL, 0, NULL, 0, out);
	s = b64_encode(out, sizeof(out));
	assert_string_equal(s, "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU=");
	free(s);
}

/* ---- response bodies ---------------------------------------------- */

static void
test_error_body(void **state)
{
	char long_msg[700], *b, *want;
	size_t n = 1;

	(void)state;
	b = xks_error_body(XERR_VALIDATION, "plaintext: required", &n);
	assert_string_equal(b, "{\"errorName\":\"ValidationException\","
	    "\"errorMessage\":\"plaintext: required\"}");
	assert_int_equal(n, strlen(b));
	free(b);
	b = xks_error_body(XERR_KEY_NOT_FOUND, NULL, &n);
	assert_string_equal(b, "{\"errorName\":\"KeyNotFoundException\"}");
	assert_int_equal(n, strlen(b));
	free(b);
	b = xks_error_body(XERR_UNSUPPORTED, "", &n);
	assert_string_equal(b, "{\"errorName\":"
	    "\"UnsupportedOperationException\",\"errorMessage\":\"\"}");
	free(b);
	/* control and non-ASCII bytes become '?'; quotes and backslashes
	 * are JSON-escaped, slashes are not */
	b = xks_error_body(XERR_INTERNAL, "a\nb\x80\xc3\xa9\"q\\/x\x7f", &n);
	assert_string_equal(b, "{\"errorName\":\"InternalException\","
	    "\"errorMessage\":\"a?b???\\\"q\\\\/x?\"}");
	free(b);
	/* truncated to 511 characters */
	memset(long_msg, 'm', sizeof(long_msg) - 1);
	long_msg[sizeof(long_msg) - 1] = '\0';
	b = xks_error_body(XERR_INVALID_CIPHERTEXT, long_msg, &n);
	want = mk("{\"errorName\":\"InvalidCiphertextException\","
	    "\"errorMessage\":\"%.511s\"}", long_msg);
	assert_string_equal(b, want);
	assert_int_equal(n, strlen(want));
	free(b);
	free(want);
	b = xks_error_body(XERR_AUTH_FAILED, "bad signature", &n);
	assert_string_equal(b, "{\"errorName\":\"AuthenticationFailedException\","
	    "\"errorMessage\":\"bad signature\"}");
	free(b);
}

static void
test_encrypt_body(void **state)
{
	static const unsigned char iv[12], zero32[32];
	unsigned char tag[16], cm = XKS_CMETA_V1;
	char *b;
	size_t n = 0;

	(void)state;
	memset(tag, 0xff, sizeof(tag));
	b = xks_encrypt_body((const unsigned char *)"\x01\x02\x03", 3, iv, 12,
	    tag, 16, &cm, 1, zero32, &n);
	assert_string_equal(b, "{\"ciphertext\":\"AQID\","
	    "\"initializationVector\":\"AAAAAAAAAAAAAAAA\","
	    "\"authenticationTag\":\"/////////////////////w==\","
	    "\"ciphertextMetadata\":\"AQ==\","
	    "\"ciphertextDataIntegrityValue\":"
	    "\"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"}");
	assert_int_equal(n, strlen(b));
	free(b);
	b = xks_encrypt_body((const unsigned char *)"\x01\x02\x03", 3, iv, 12,
	    tag, 16, NULL, 0, NULL, &n);
	assert_string_equal(b, "{\"ciphertext\":\"AQID\","
	    "\"initializationVector\":\"AAAAAAAAAAAAAAAA\","
	    "\"authenticationTag\":\"/////////////////////w==\"}");
	free(b);
	b = xks_encrypt_body(NULL, 0, iv, 12, tag, 16, &cm, 1, NULL, &n);
	assert_string_equal(b, "{\"ciphertext\":\"\","
	    "\"initializationVector\":\"AAAAAAAAAAAAAAAA\","
	    "\"authenticationTag\":\"/////////////////////w==\","
	    "\"ciphertextMetadata\":\"AQ==\"}");
	free(b);
}

static void
test_decrypt_body(void **state)
{
	unsigned char pt[300];
	json_object *o, *v;
	char *b, *s;
	size_t i, n = 0;

	(void)state;
	b = xks_decrypt_body((const unsigned char *)"Hello", 5, &n);
	assert_string_equal(b, "{\"plaintext\":\"SGVsbG8=\"}");
	assert_int_equal(n, strlen(b));
	free(b);
	b = xks_decrypt_body(NULL, 0, &n);
	assert_string_equal(b, "{\"plaintext\":\"\"}");
	assert_int_equal(n, 16);
	free(b);
	/* the same bytes json-c would have written, '/' unescaped */
	for (i = 0; i < sizeof(pt); i++)
		pt[i] = (unsigned char)(255 - i);
	b = xks_decrypt_body(pt, sizeof(pt), &n);
	s = b64_encode(pt, sizeof(pt));
	o = json_object_new_object();
	json_object_object_add(o, "plaintext", json_object_new_string(s));
	assert_string_equal(b, json_object_to_json_string_ext(o,
	    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
	o = json_tokener_parse(b);
	assert_non_null(o);
	assert_true(json_object_object_get_ex(o, "plaintext", &v));
	assert_string_equal(json_object_get_string(v), s);
	assert_non_null(strchr(s, '/'));
	json_object_put(o);
	free(s);
	free(b);
}

static void
test_metadata_body(void **state)
{
	char *b;
	size_t n = 0;

	(void)state;
	b = xks_metadata_body(CKK_AES, 32, HSM_USAGE_ENCRYPT |
	    HSM_USAGE_DECRYPT, 1, &n);
	assert_string_equal(b, "{\"keySpec\":\"AES_256\",\"keyUsage\":"
	    "[\"ENCRYPT\",\"DECRYPT\"],\"keyStatus\":\"ENABLED\"}");
	assert_int_equal(n, strlen(b));
	free(b);
	b = xks_metadata_body(CKK_AES, 16, 0x7f, 0, &n);
	assert_string_equal(b, "{\"keySpec\":\"AES_128\",\"keyUsage\":"
	    "[\"ENCRYPT\",\"DECRYPT\",\"WRAP\",\"UNWRAP\",\"SIGN\",\"VERIFY\","
	    "\"DERIVE\"],\"keyStatus\":\"DISABLED\"}");
	free(b);
	b = xks_metadata_body(CKK_AES, 24, HSM_USAGE_DERIVE | HSM_USAGE_WRAP,
	    1, &n);
	assert_string_equal(b, "{\"keySpec\":\"AES_192\",\"keyUsage\":"
	    "[\"WRAP\",\"DERIVE\"],\"keyStatus\":\"ENABLED\"}");
	free(b);
	b = xks_metadata_body(CKK_AES, 0, HSM_USAGE_ENCRYPT, 1, &n);
	assert_string_equal(b, "{\"keySpec\":\"UNKNOWN\",\"keyUsage\":"
	    "[\"ENCRYPT\"],\"keyStatus\":\"ENABLED\"}");
	free(b);
	b = xks_metadata_body(CKK_GENERIC_SECRET, 32, 0, 1, &n);
	assert_string_equal(b, "{\"keySpec\":\"UNKNOWN\",\"keyUsage\":[],"
	    "\"keyStatus\":\"ENABLED\"}");
	free(b);
}

static void
test_health_body(void **state)
{
	struct health_entry e[12];
	char *b, *want, id96[97];
	size_t i, n = 0;

	(void)state;
	memset(e, 0, sizeof(e));
	snprintf(e[0].id, sizeof(e[0].id), "token-a");
	snprintf(e[0].model, sizeof(e[0].model), "SoftHSM v2 2.6");
	e[0].status = HEALTH_ACTIVE;
	snprintf(e[1].id, sizeof(e[1].id), "token-b");
	snprintf(e[1].model, sizeof(e[1].model), "Acme \"HSM\"");
	e[1].status = HEALTH_DEGRADED;
	snprintf(e[2].id, sizeof(e[2].id), "token-c");
	e[2].status = HEALTH_UNAVAILABLE;
	b = xks_health_body(2, "Example Corp", "xksproxy 0.1", "SoftHSM",
	    e, 3, &n);
	assert_string_equal(b, "{\"xksProxyFleetSize\":2,"
	    "\"xksProxyVendor\":\"Example Corp\","
	    "\"xksProxyModel\":\"xksproxy 0.1\",\"ekmVendor\":\"SoftHSM\","
	    "\"ekmFleetDetails\":["
	    "{\"id\":\"token-a\",\"model\":\"SoftHSM v2 2.6\","
	    "\"healthStatus\":\"ACTIVE\"},"
	    "{\"id\":\"token-b\",\"model\":\"Acme \\\"HSM\\\"\","
	    "\"healthStatus\":\"DEGRADED\"},"
	    "{\"id\":\"token-c\",\"model\":\"\","
	    "\"healthStatus\":\"UNAVAILABLE\"}]}");
	assert_int_equal(n, strlen(b));
	free(b);
	/* no entries; NULL strings become "" */
	b = xks_health_body(1, NULL, "m", NULL, NULL, 0, &n);
	assert_string_equal(b, "{\"xksProxyFleetSize\":1,"
	    "\"xksProxyVendor\":\"\",\"xksProxyModel\":\"m\","
	    "\"ekmVendor\":\"\",\"ekmFleetDetails\":[]}");
	free(b);
	/* an id filling its array without a NUL; more than 10 entries */
	for (i = 0; i < 12; i++) {
		snprintf(e[i].id, sizeof(e[i].id), "t%zu", i);
		e[i].model[0] = '\0';
		e[i].status = HEALTH_ACTIVE;
	}
	memset(e[0].id, 'x', sizeof(e[0].id));
	memset(id96, 'x', 96);
	id96[96] = '\0';
	b = xks_health_body(3, "v", "m", "e", e, 12, &n);
	want = mk("{\"xksProxyFleetSize\":3,\"xksProxyVendor\":\"v\","
	    "\"xksProxyModel\":\"m\",\"ekmVendor\":\"e\",\"ekmFleetDetails\":["
	    "{\"id\":\"%s\",\"model\":\"\",\"healthStatus\":\"ACTIVE\"},"
	    "{\"id\":\"t1\",\"model\":\"\",\"healthStatus\":\"ACTIVE\"},"
	    "{\"id\":\"t2\",\"model\":\"\",\"healthStatus\":\"ACTIVE\"},"
	    "{\"id\":\"t3\",\"model\":\"\",\"healthStatus\":\"ACTIVE\"},"
	    "{\"id\":\"t4\",\"model\":\"\",\"healthStatus\":\"ACTIVE\"},"
	    "{\"id\":\"t5\",\"model\":\"\",\"healthStatus\":\"ACTIVE\"},"
	    "{\"id\":\"t6\",\"model\":\"\",\"healthStatus\":\"ACTIVE\"},"
	    "{\"id\":\"t7\",\"model\":\"\",\"healthStatus\":\"ACTIVE\"},"
	    "{\"id\":\"t8\",\"model\":\"\",\"healthStatus\":\"ACTIVE\"},"
	    "{\"id\":\"t9\",\"model\":\"\",\"healthStatus\":\"ACTIVE\"}]}",
	    id96);
	assert_string_equal(b, want);
	free(want);
	free(b);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_health_minimal),
		cmocka_unit_test(test_metadata_minimal),
		cmocka_unit_test(test_encrypt_minimal),
		cmocka_unit_test(test_encrypt_full),
		cmocka_unit_test(test_decrypt_minimal),
		cmocka_unit_test(test_decrypt_full),
		cmocka_unit_test(test_null_optional_is_absent),
		cmocka_unit_test(test_unknown_fields_ignored),
		cmocka_unit_test(test_whitespace_and_length),
		cmocka_unit_test(test_body_failures),
		cmocka_unit_test(test_meta_required),
		cmocka_unit_test(test_meta_types),
		cmocka_unit_test(test_meta_arn_length),
		cmocka_unit_test(test_meta_embedded_nul),
		cmocka_unit_test(test_meta_kept_on_failure),
		cmocka_unit_test(test_encrypt_fields),
		cmocka_unit_test(test_encrypt_limits),
		cmocka_unit_test(test_decrypt_fields),
		cmocka_unit_test(test_decrypt_limits),
		cmocka_unit_test(test_hsm_aad),
		cmocka_unit_test(test_check_cmeta),
		cmocka_unit_test(test_cdiv_vector),
		cmocka_unit_test(test_error_body),
		cmocka_unit_test(test_tokener_reuse),
		cmocka_unit_test(test_encrypt_body),
		cmocka_unit_test(test_decrypt_body),
		cmocka_unit_test(test_metadata_body),
		cmocka_unit_test(test_health_body),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
