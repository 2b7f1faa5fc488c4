/*
 * sigv4.h -- AWS Signature Version 4 verification for XKS requests.
 *
 * Strict parse of the Authorization header, canonical request from the
 * headers listed in SignedHeaders, string to sign, signature compared with
 * CRYPTO_memcmp.  Derived signing keys are kept in a bounded cache per
 * (secret, date, region, service) so a warm verification costs two SHA-256
 * and one HMAC.  A cache belongs to one thread (no locking): each event
 * loop has its own.
 */
#ifndef XKS_SIGV4_H
#define XKS_SIGV4_H

#include <stddef.h>
#include <time.h>

#include "xerr.h"

struct http_header;

#define SIGV4_SERVICE "kms-xks-proxy"

/* One credential a key store accepts. */
struct sigv4_cred {
	const char *access_key_id;
	const unsigned char *secret;
	size_t secret_len;
	time_t not_after;             /* 0: no expiry; else refused when now > not_after */
};

/* The request as received. */
struct sigv4_input {
	const char *method;
	const char *path;             /* raw path, no query */
	const char *query;            /* raw query string without '?', "" if none */
	const struct http_header *headers;
	size_t nheaders;
	const unsigned char *body;
	size_t body_len;
};

struct sigv4_params {
	const char *service;          /* SIGV4_SERVICE for the daemon */
	const char *const *regions;   /* NULL/0: any region accepted */
	size_t nregions;
	int max_skew_seconds;         /* sigv4.max_clock_skew_seconds */
	time_t now;
};

/* The parsed Authorization header. */
struct sigv4_auth {
	char access_key_id[129];
	char date[9];                 /* yyyymmdd */
	char region[64];
	char service[64];
	char signed_headers[1024];    /* as given: "host;x-amz-date" */
	unsigned char signature[32];
};

struct sigv4_cache;

/* A new cache of at most max_entries derived keys; NULL on allocation failure. */
struct sigv4_cache *sigv4_cache_new(size_t max_entries);
/* Free a cache, wiping the keys.  NULL-safe. */
void sigv4_cache_free(struct sigv4_cache *cache);
/*
 * Counters of a cache (for tests, the benchmark and metrics): lookups that
 * found a derived key, lookups that derived one, entries in use.  Any
 * out-pointer may be NULL; a NULL cache reports zeros.
 */
void sigv4_cache_stats(const struct sigv4_cache *cache,
    unsigned long long *hits, unsigned long long *misses, size_t *entries);

/*
 * Parse an Authorization header value strictly.  Returns 0 and fills *out,
 * or -1 with reason set to a static description.
 */
int sigv4_parse_auth(const char *value, struct sigv4_auth *out,
    const char **reason);

/*
 * Build the canonical request for `in` with the given SignedHeaders list.
 * Returns a malloc'ed NUL-terminated string (caller frees) or NULL with
 * reason set (e.g. a signed header that is missing).
 */
char *sigv4_canonical_request(const struct sigv4_input *in,
    const char *signed_headers, const char **reason);

/* String to sign for a canonical request; malloc'ed, caller frees. */
char *sigv4_string_to_sign(const char *amz_date, const char *scope,
    const char *canonical_request);

/*
 * Verify the request against creds (the credentials of the key store the
 * path belongs to).  cache may be NULL (no caching).  Returns XERR_OK and
 * sets *used to the credential that matched, or XERR_AUTH_FAILED with
 * reason (one line, no secret) filled.  akid (>= 129 bytes, may be NULL)
 * receives the access key id the request named, when it could be parsed,
 * so the log can name it.
 */
enum xerr sigv4_verify(struct sigv4_cache *cache, const struct sigv4_input *in,
    const struct sigv4_cred *creds, size_t ncreds,
    const struct sigv4_params *params, const struct sigv4_cred **used,
    char *akid, char *reason, size_t reasonlen);

/*
 * Sign: compute the Authorization header value for `in` (which must contain
 * the headers named in signed_headers, including x-amz-date).  Used by
 * xksctl and tests.  Returns a malloc'ed string or NULL.
 */
char *sigv4_sign(const struct sigv4_input *in, const char *signed_headers,
    const char *access_key_id, const unsigned char *secret, size_t secret_len,
    const char *region, const char *service);

#endif
