/*
 * xks.h -- XKS request bodies and response bodies (json-c), the AAD
 * construction, ciphertextMetadata and the CDIV.
 *
 * Pure functions: no I/O, no HSM.  Everything decoded from a request that
 * is or derives from plaintext or AAD is wiped by xks_req_clear().
 */
#ifndef XKS_XKS_H
#define XKS_XKS_H

#include <stddef.h>

#include "route.h"
#include "xerr.h"

/* requestMetadata; strings are owned, NULL when absent. */
struct xks_meta {
	char *kms_request_id;
	char *kms_operation;
	char *aws_principal_arn;
	char *kms_key_arn;
	char *kms_via_service;
	char *aws_source_vpc;
	char *aws_source_vpce;
};

struct xks_limits {
	size_t max_plaintext;         /* limits.max_plaintext_bytes (>= 4300) */
	size_t max_aad;               /* limits.max_aad_bytes (>= 8192) */
};

struct xks_req {
	enum xks_op op;
	struct xks_meta meta;
	unsigned char *plaintext; size_t plaintext_len;   /* encrypt */
	unsigned char *ciphertext; size_t ciphertext_len; /* decrypt */
	unsigned char *aad; size_t aad_len; int has_aad;
	unsigned char *iv; size_t iv_len;                 /* decrypt */
	unsigned char *tag; size_t tag_len;               /* decrypt */
	unsigned char *cmeta; size_t cmeta_len; int has_cmeta; /* decrypt */
	int want_cdiv;                                    /* encrypt */
};

/*
 * Parse and validate a request body for op.  Returns XERR_OK, or
 * XERR_VALIDATION (400) / XERR_UNSUPPORTED (501, a size above the
 * configured maximum) with msg (printable ASCII, < 512) naming the field
 * and the reason.  req is always safe to pass to xks_req_clear().  On
 * failure the requestMetadata strings read so far stay in req (for the
 * log line: kmsRequestId) while every decoded buffer is already wiped.
 * Fields are checked in a fixed order; the first failure is reported.
 * An optional member given as JSON null counts as absent.  XERR_INTERNAL
 * only on allocation failure.
 */
enum xerr xks_parse_request(enum xks_op op, const char *body, size_t len,
    const struct xks_limits *lim, struct xks_req *req, char *msg,
    size_t msglen);

/* Wipe and free everything req owns; NULL-safe. */
void xks_req_clear(struct xks_req *req);

/*
 * ciphertextMetadata format: first byte the format version.  Version 1 is
 * one byte, 0x01, and means: AAD given to the HSM is
 * len16be(AAD) || AAD || len8(cmeta) || cmeta.
 */
#define XKS_CMETA_V1 0x01
#define XKS_CMETA_MAX 20

/*
 * Build the AAD given to the HSM for the request AAD and ciphertextMetadata
 * (either may be empty).  Returns a malloc'ed buffer (wipe on free) or NULL.
 */
unsigned char *xks_hsm_aad(const unsigned char *aad, size_t aad_len,
    const unsigned char *cmeta, size_t cmeta_len, size_t *outlen);

/*
 * Check a decrypt request's ciphertextMetadata: XERR_OK when absent or of a
 * known version, else XERR_INVALID_CIPHERTEXT with msg.
 */
enum xerr xks_check_cmeta(const unsigned char *cmeta, size_t len, char *msg,
    size_t msglen);

/* CDIV: SHA-256(aad || cmeta || iv || ciphertext || tag) into out[32]. */
void xks_cdiv(const unsigned char *aad, size_t aad_len,
    const unsigned char *cmeta, size_t cmeta_len,
    const unsigned char *iv, size_t iv_len,
    const unsigned char *ct, size_t ct_len,
    const unsigned char *tag, size_t tag_len, unsigned char out[32]);

/*
 * Response bodies: each returns a malloc'ed NUL-terminated JSON string
 * (caller frees; the decrypt one holds plaintext: wipe before free) and
 * sets *len, or NULL on allocation failure.
 */
char *xks_error_body(enum xerr e, const char *msg, size_t *len);
char *xks_encrypt_body(const unsigned char *ct, size_t ct_len,
    const unsigned char *iv, size_t iv_len, const unsigned char *tag,
    size_t tag_len, const unsigned char *cmeta, size_t cmeta_len,
    const unsigned char *cdiv /* NULL or 32 bytes */, size_t *len);
char *xks_decrypt_body(const unsigned char *pt, size_t pt_len, size_t *len);
/* usage: HSM_USAGE_* bits; key_type CKK_*; value_len bytes. */
char *xks_metadata_body(unsigned long key_type, size_t value_len,
    unsigned usage, int enabled, size_t *len);

struct health_entry;
char *xks_health_body(int fleet_size, const char *proxy_vendor,
    const char *proxy_model, const char *ekm_vendor,
    const struct health_entry *entries, size_t nentries, size_t *len);

#endif
