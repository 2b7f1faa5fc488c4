/*
 * sigv4.c -- AWS Signature Version 4 verification for XKS requests.
 *
 * Everything a client controls is parsed strictly and checked in the order
 * of cost: the Authorization header, the scope, the clock, the credential,
 * and only then the hashes.  A warm verification is SHA-256(body),
 * SHA-256(canonical request) and one HMAC, with the digest and MAC
 * contexts fetched once per cache (one cache per event-loop thread) and the
 * canonical request built in a stack buffer.
 *
 * Canonical URI: the path as received, dot segments removed and empty
 * segments dropped, then every byte outside A-Za-z0-9-._~ encoded as %XX.
 * A '%' already on the wire becomes %25: that is the "double encoding" AWS
 * uses for every service but S3, and what botocore, the AWS SDKs and curl
 * compute for a path they send percent-encoded.
 */
#include "config.h"

#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/params.h>

#include "http.h"
#include "log.h"
#include "sigv4.h"
#include "util.h"

#define SIGV4_ALGORITHM     "AWS4-HMAC-SHA256"
#define SIGV4_TERMINATOR    "aws4_request"
#define SIGV4_HASH_LEN      32
#define SIGV4_HEX_LEN       64
#define SIGV4_AMZ_DATE_LEN  16            /* yyyymmddThhmmssZ */
/* Canonical requests up to this size are built on the stack. */
#define SIGV4_STACK_CREQ    4096
/* Anything bigger than this is not a request we want to hash. */
#define SIGV4_MAX_CREQ      (1024 * 1024)
/* Query parameters sorted without a heap allocation. */
#define SIGV4_STACK_PARAMS  32
/* "AWS4" + secret built on the stack up to this size. */
#define SIGV4_STACK_SECRET  256

static const char sigv4_hexdigits[] = "0123456789ABCDEF";

/* 1 + value of a lower-case hex digit, 0 for anything else. */
static const unsigned char sigv4_lowerhex[256] = {
	['0'] = 1, ['1'] = 2, ['2'] = 3, ['3'] = 4, ['4'] = 5, ['5'] = 6,
	['6'] = 7, ['7'] = 8, ['8'] = 9, ['9'] = 10, ['a'] = 11, ['b'] = 12,
	['c'] = 13, ['d'] = 14, ['e'] = 15, ['f'] = 16,
};

/* OpenSSL objects reused across verifications by one thread. */
struct sigv4_crypto {
	EVP_MD *sha256;
	EVP_MD_CTX *md;
	EVP_MAC *hmac;
	EVP_MAC_CTX *mac;
};

struct sigv4_cache_entry {
	unsigned char *secret;        /* own copy, wiped; NULL: slot free */
	size_t secret_len;
	uint64_t last_used;
	char date[9];
	char region[64];
	char service[64];
	unsigned char key[SIGV4_HASH_LEN];
	EVP_MAC_CTX *mac;             /* HMAC keyed with key; may be NULL */
};

struct sigv4_cache {
	struct sigv4_crypto crypto;
	struct sigv4_cache_entry *entries;
	size_t max_entries;
	uint64_t tick;
	unsigned long long hits;
	unsigned long long misses;
};

/*
 * A growable string that starts in a caller's (stack) buffer.  It always
 * keeps room for a NUL, written by sigv4_buf_finish() only: the hot path
 * appends byte runs and never re-terminates.
 */
struct sigv4_buf {
	char *p;
	size_t len;
	size_t cap;
	int on_heap;
	int failed;
};

/* --- small helpers */

static void
sigv4_fail(char *reason, size_t reasonlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void
sigv4_fail(char *reason, size_t reasonlen, const char *fmt, ...)
{
	va_list ap;

	if (reason == NULL || reasonlen == 0)
		return;
	va_start(ap, fmt);
	vsnprintf(reason, reasonlen, fmt, ap);
	va_end(ap);
}

static int
sigv4_is_digit(int c)
{
	return c >= '0' && c <= '9';
}

static int
sigv4_is_alnum(int c)
{
	return sigv4_is_digit(c) || (c >= 'a' && c <= 'z') ||
	    (c >= 'A' && c <= 'Z');
}

static int
sigv4_is_unreserved(int c)
{
	return sigv4_is_alnum(c) || c == '-' || c == '.' || c == '_' ||
	    c == '~';
}

/* RFC 9110 tchar, upper-case letters excluded (SignedHeaders is lower-case). */
static int
sigv4_is_lower_tchar(int c)
{
	if ((c >= 'a' && c <= 'z') || sigv4_is_digit(c))
		return 1;
	return c != '\0' && strchr("!#$%&'*+-.^_`|~", c) != NULL;
}

static int
sigv4_lower(int c)
{
	return (c >= 'A' && c <= 'Z') ? c + ('a' - 'A') : c;
}

static int
sigv4_hexval(int c)
{
	if (sigv4_is_digit(c))
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

/* Header name (NUL-terminated, any case) equals lower-case name[0..n). */
static int
sigv4_name_eq(const char *hname, const char *name, size_t n)
{
	size_t i;

	for (i = 0; i < n; i++) {
		if (hname[i] == '\0' || sigv4_lower((unsigned char)hname[i]) !=
		    (unsigned char)name[i])
			return 0;
	}
	return hname[n] == '\0';
}

static size_t
sigv4_header_count(const struct sigv4_input *in, const char *name,
    const char **first)
{
	size_t i, n = 0, len = strlen(name);

	if (first != NULL)
		*first = NULL;
	for (i = 0; i < in->nheaders; i++) {
		if (in->headers[i].name == NULL ||
		    !sigv4_name_eq(in->headers[i].name, name, len))
			continue;
		if (n++ == 0 && first != NULL)
			*first = in->headers[i].value;
	}
	return n;
}

/* --- growable buffer */

static void
sigv4_buf_init(struct sigv4_buf *b, char *stack, size_t cap)
{
	b->p = stack;
	b->cap = cap;
	b->len = 0;
	b->on_heap = 0;
	b->failed = 0;
}

static void
sigv4_buf_release(struct sigv4_buf *b)
{
	if (b->on_heap)
		free(b->p);
	b->p = NULL;
	b->len = b->cap = 0;
	b->on_heap = 0;
}

/* Room for n more bytes plus a NUL; 0 or -1 (too large / no memory). */
static int
sigv4_buf_reserve(struct sigv4_buf *b, size_t n)
{
	size_t need, ncap;
	char *np;

	if (b->failed)
		return -1;
	if (n < b->cap - b->len)
		return 0;
	if (n > SIGV4_MAX_CREQ || b->len + n + 1 > SIGV4_MAX_CREQ) {
		b->failed = 1;
		return -1;
	}
	need = b->len + n + 1;
	ncap = b->cap < 256 ? 256 : b->cap;
	while (ncap < need)
		ncap *= 2;
	if (b->on_heap) {
		if ((np = realloc(b->p, ncap)) == NULL) {
			b->failed = 1;
			return -1;
		}
	} else {
		if ((np = malloc(ncap)) == NULL) {
			b->failed = 1;
			return -1;
		}
		if (b->len > 0)
			memcpy(np, b->p, b->len);
		b->on_heap = 1;
	}
	b->p = np;
	b->cap = ncap;
	return 0;
}

static inline void
sigv4_buf_put(struct sigv4_buf *b, const char *s, size_t n)
{
	if (sigv4_buf_reserve(b, n) != 0)
		return;
	memcpy(b->p + b->len, s, n);
	b->len += n;
}

/* NUL-terminate (room for it is always reserved); 0 or -1 if it failed. */
static int
sigv4_buf_finish(struct sigv4_buf *b)
{
	if (b->failed || sigv4_buf_reserve(b, 0) != 0)
		return -1;
	b->p[b->len] = '\0';
	return 0;
}

static void
sigv4_buf_puts(struct sigv4_buf *b, const char *s)
{
	sigv4_buf_put(b, s, strlen(s));
}

static inline void
sigv4_buf_putc(struct sigv4_buf *b, char c)
{
	if (b->len + 1 < b->cap) {
		b->p[b->len++] = c;
		return;
	}
	sigv4_buf_put(b, &c, 1);
}

/* Append byte c, percent-encoded unless unreserved. */
static void
sigv4_buf_put_encoded(struct sigv4_buf *b, unsigned char c)
{
	char e[3];

	if (sigv4_is_unreserved(c)) {
		sigv4_buf_putc(b, (char)c);
		return;
	}
	e[0] = '%';
	e[1] = sigv4_hexdigits[c >> 4];
	e[2] = sigv4_hexdigits[c & 15];
	sigv4_buf_put(b, e, 3);
}

/* --- OpenSSL */

static void
sigv4_crypto_clear(struct sigv4_crypto *c)
{
	EVP_MAC_CTX_free(c->mac);
	EVP_MAC_free(c->hmac);
	EVP_MD_CTX_free(c->md);
	EVP_MD_free(c->sha256);
	memset(c, 0, sizeof(*c));
}

static int
sigv4_crypto_init(struct sigv4_crypto *c)
{
	OSSL_PARAM params[2];

	memset(c, 0, sizeof(*c));
	/* Fetch once: an implicit fetch on every call costs more than the
	 * hashing of a small request. */
	if ((c->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL)) == NULL ||
	    (c->md = EVP_MD_CTX_new()) == NULL ||
	    (c->hmac = EVP_MAC_fetch(NULL, "HMAC", NULL)) == NULL ||
	    (c->mac = EVP_MAC_CTX_new(c->hmac)) == NULL)
		goto fail;
	params[0] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
	    (char *)"SHA256", 0);
	params[1] = OSSL_PARAM_construct_end();
	if (!EVP_MAC_CTX_set_params(c->mac, params))
		goto fail;
	return 0;
 fail:
	log_crypto_err("sigv4: SHA-256/HMAC setup");
	sigv4_crypto_clear(c);
	return -1;
}

static int
sigv4_sha256(struct sigv4_crypto *c, const void *p, size_t n,
    unsigned char out[SIGV4_HASH_LEN])
{
	unsigned int olen = 0;

	if (!EVP_DigestInit_ex2(c->md, c->sha256, NULL) ||
	    !EVP_DigestUpdate(c->md, p, n) ||
	    !EVP_DigestFinal_ex(c->md, out, &olen) || olen != SIGV4_HASH_LEN) {
		log_crypto_err("sigv4: SHA-256");
		return -1;
	}
	return 0;
}

static int
sigv4_hmac(struct sigv4_crypto *c, const unsigned char *key, size_t keylen,
    const void *p, size_t n, unsigned char out[SIGV4_HASH_LEN])
{
	size_t olen = 0;

	if (!EVP_MAC_init(c->mac, key, keylen, NULL) ||
	    !EVP_MAC_update(c->mac, p, n) ||
	    !EVP_MAC_final(c->mac, out, &olen, SIGV4_HASH_LEN) ||
	    olen != SIGV4_HASH_LEN) {
		log_crypto_err("sigv4: HMAC-SHA256");
		return -1;
	}
	return 0;
}

/* kSigning = HMAC chain from "AWS4" + secret over date, region, service. */
static int
sigv4_derive_key(struct sigv4_crypto *c, const unsigned char *secret,
    size_t secret_len, const char *date, const char *region,
    const char *service, unsigned char out[SIGV4_HASH_LEN])
{
	unsigned char stackkey[SIGV4_STACK_SECRET];
	unsigned char *k0 = stackkey;
	unsigned char k[SIGV4_HASH_LEN];
	size_t k0len = secret_len + 4;
	int r = -1;

	if (secret_len > SIZE_MAX - 4)
		goto out;
	if (k0len > sizeof(stackkey) && (k0 = malloc(k0len)) == NULL)
		goto out;
	memcpy(k0, "AWS4", 4);
	if (secret_len > 0)
		memcpy(k0 + 4, secret, secret_len);
	if (sigv4_hmac(c, k0, k0len, date, strlen(date), k) != 0 ||
	    sigv4_hmac(c, k, sizeof(k), region, strlen(region), k) != 0 ||
	    sigv4_hmac(c, k, sizeof(k), service, strlen(service), k) != 0 ||
	    sigv4_hmac(c, k, sizeof(k), SIGV4_TERMINATOR,
	    strlen(SIGV4_TERMINATOR), out) != 0)
		goto out;
	r = 0;
 out:
	wipe(k, sizeof(k));
	if (k0 != stackkey)
		wipe_free(k0, k0len);
	else
		wipe(stackkey, sizeof(stackkey));
	return r;
}

/* --- cache */

static void
sigv4_entry_clear(struct sigv4_cache_entry *e)
{
	/* freeing an HMAC context cleanses its key state */
	EVP_MAC_CTX_free(e->mac);
	wipe_free(e->secret, e->secret_len);
	wipe(e, sizeof(*e));
}

struct sigv4_cache *
sigv4_cache_new(size_t max_entries)
{
	struct sigv4_cache *cache = NULL, *ret = NULL;

	if ((cache = calloc(1, sizeof(*cache))) == NULL)
		goto out;
	if (sigv4_crypto_init(&cache->crypto) != 0)
		goto out;
	if (max_entries > 0 &&
	    (cache->entries = calloc(max_entries, sizeof(*cache->entries))) ==
	    NULL)
		goto out;
	cache->max_entries = max_entries;
	ret = cache;
	cache = NULL;
 out:
	sigv4_cache_free(cache);
	return ret;
}

void
sigv4_cache_free(struct sigv4_cache *cache)
{
	size_t i;

	if (cache == NULL)
		return;
	for (i = 0; i < cache->max_entries && cache->entries != NULL; i++)
		sigv4_entry_clear(&cache->entries[i]);
	free(cache->entries);
	sigv4_crypto_clear(&cache->crypto);
	free(cache);
}

void
sigv4_cache_stats(const struct sigv4_cache *cache, unsigned long long *hits,
    unsigned long long *misses, size_t *entries)
{
	size_t i, n = 0;

	if (hits != NULL)
		*hits = cache != NULL ? cache->hits : 0;
	if (misses != NULL)
		*misses = cache != NULL ? cache->misses : 0;
	if (cache != NULL) {
		for (i = 0; i < cache->max_entries; i++)
			if (cache->entries[i].secret != NULL)
				n++;
	}
	if (entries != NULL)
		*entries = n;
}

/*
 * sig = HMAC(signing key, sts), the signing key for (secret, date, region,
 * service) coming from the cache when there, else derived and cached in
 * place of the least recently used entry.  A cached entry keeps an HMAC
 * context already keyed, so a hit costs no key setup at all.  Returns 0,
 * or -1 on an OpenSSL failure.
 */
static int
sigv4_cached_hmac(struct sigv4_cache *cache, struct sigv4_crypto *c,
    const struct sigv4_cred *cred, const struct sigv4_auth *auth,
    const char *sts, size_t stslen, unsigned char sig[SIGV4_HASH_LEN])
{
	struct sigv4_cache_entry *e, *victim = NULL;
	unsigned char key[SIGV4_HASH_LEN], *copy;
	size_t i, olen = 0;
	int r = -1;

	if (cache != NULL) {
		for (i = 0; i < cache->max_entries; i++) {
			e = &cache->entries[i];
			if (e->secret == NULL) {
				if (victim == NULL || victim->secret != NULL)
					victim = e;
				continue;
			}
			if (e->secret_len == cred->secret_len &&
			    strcmp(e->date, auth->date) == 0 &&
			    strcmp(e->region, auth->region) == 0 &&
			    strcmp(e->service, auth->service) == 0 &&
			    CRYPTO_memcmp(e->secret, cred->secret,
			    cred->secret_len) == 0) {
				e->last_used = ++cache->tick;
				cache->hits++;
				if (e->mac == NULL)
					return sigv4_hmac(c, e->key,
					    sizeof(e->key), sts, stslen, sig);
				/* NULL key: reuse the one set at insertion */
				if (!EVP_MAC_init(e->mac, NULL, 0, NULL) ||
				    !EVP_MAC_update(e->mac,
				    (const unsigned char *)sts, stslen) ||
				    !EVP_MAC_final(e->mac, sig, &olen,
				    SIGV4_HASH_LEN) || olen != SIGV4_HASH_LEN) {
					log_crypto_err("sigv4: HMAC-SHA256");
					return -1;
				}
				return 0;
			}
			if (victim == NULL || (victim->secret != NULL &&
			    e->last_used < victim->last_used))
				victim = e;
		}
		cache->misses++;
	}
	if (sigv4_derive_key(c, cred->secret, cred->secret_len, auth->date,
	    auth->region, auth->service, key) != 0 ||
	    sigv4_hmac(c, key, sizeof(key), sts, stslen, sig) != 0)
		goto out;
	r = 0;
	/* From here on a failure only costs the caching, not the request. */
	if (victim == NULL)
		goto out;
	if ((copy = malloc(cred->secret_len > 0 ? cred->secret_len : 1)) ==
	    NULL)
		goto out;
	sigv4_entry_clear(victim);
	if (cred->secret_len > 0)
		memcpy(copy, cred->secret, cred->secret_len);
	victim->secret = copy;
	victim->secret_len = cred->secret_len;
	victim->last_used = ++cache->tick;
	/* Lengths were bounded by the parser (struct sigv4_auth). */
	memcpy(victim->date, auth->date, sizeof(victim->date));
	memcpy(victim->region, auth->region, sizeof(victim->region));
	memcpy(victim->service, auth->service, sizeof(victim->service));
	memcpy(victim->key, key, SIGV4_HASH_LEN);
	/* c->mac is keyed with key right now: keep a copy of that state. */
	victim->mac = EVP_MAC_CTX_dup(c->mac);
 out:
	wipe(key, sizeof(key));
	return r;
}

/* --- Authorization header */

/*
 * SignedHeaders: lower-case tchar names separated by ';', strictly
 * ascending, none empty.  Returns 0 or -1 with a static reason.
 */
static int
sigv4_check_signed_headers(const char *s, size_t len, const char **reason)
{
	const char *prev = NULL, *p = s, *end = s + len, *name;
	size_t prevlen = 0, n, m;
	int cmp;

	if (len == 0) {
		*reason = "empty SignedHeaders";
		return -1;
	}
	while (p <= end) {
		name = p;
		while (p < end && *p != ';')
			p++;
		n = (size_t)(p - name);
		if (n == 0) {
			*reason = "empty header name in SignedHeaders";
			return -1;
		}
		for (m = 0; m < n; m++) {
			if (!sigv4_is_lower_tchar((unsigned char)name[m])) {
				*reason = (name[m] >= 'A' && name[m] <= 'Z') ?
				    "upper-case header name in SignedHeaders" :
				    "invalid character in SignedHeaders";
				return -1;
			}
		}
		if (prev != NULL) {
			cmp = memcmp(prev, name, prevlen < n ? prevlen : n);
			if (cmp == 0)
				cmp = prevlen < n ? -1 : (prevlen > n ? 1 : 0);
			if (cmp == 0) {
				*reason = "duplicate header name in SignedHeaders";
				return -1;
			}
			if (cmp > 0) {
				*reason = "SignedHeaders is not sorted";
				return -1;
			}
		}
		prev = name;
		prevlen = n;
		p++;                  /* past ';' (or past end: loop ends) */
	}
	return 0;
}

/* Credential=<akid>/<yyyymmdd>/<region>/<service>/aws4_request */
static int
sigv4_parse_credential(const char *v, size_t len, struct sigv4_auth *out,
    const char **reason)
{
	const char *part[5], *p = v, *end = v + len;
	size_t plen[5], i, j;

	for (i = 0; i < 5; i++) {
		part[i] = p;
		while (p < end && *p != '/')
			p++;
		plen[i] = (size_t)(p - part[i]);
		if (i < 4) {
			if (p == end) {
				*reason = "Credential is not <access key id>/"
				    "<date>/<region>/<service>/aws4_request";
				return -1;
			}
			p++;
		}
	}
	if (p != end) {
		*reason = "Credential has more than 5 parts";
		return -1;
	}
	if (plen[0] == 0) {
		*reason = "empty access key id in Credential";
		return -1;
	}
	if (plen[0] >= sizeof(out->access_key_id)) {
		*reason = "access key id longer than 128 characters";
		return -1;
	}
	for (j = 0; j < plen[0]; j++) {
		if (!sigv4_is_alnum((unsigned char)part[0][j])) {
			*reason = "access key id has a character outside "
			    "A-Z a-z 0-9";
			return -1;
		}
	}
	memcpy(out->access_key_id, part[0], plen[0]);
	out->access_key_id[plen[0]] = '\0';

	if (plen[1] != 8) {
		*reason = "Credential date is not yyyymmdd";
		return -1;
	}
	for (j = 0; j < 8; j++) {
		if (!sigv4_is_digit((unsigned char)part[1][j])) {
			*reason = "Credential date is not yyyymmdd";
			return -1;
		}
	}
	memcpy(out->date, part[1], 8);
	out->date[8] = '\0';

	for (i = 2; i <= 3; i++) {
		if (plen[i] == 0) {
			*reason = i == 2 ? "empty region in Credential" :
			    "empty service in Credential";
			return -1;
		}
		if (plen[i] >= sizeof(out->region)) {
			*reason = i == 2 ? "region in Credential too long" :
			    "service in Credential too long";
			return -1;
		}
		for (j = 0; j < plen[i]; j++) {
			int c = (unsigned char)part[i][j];

			if (!sigv4_is_alnum(c) && c != '-' && c != '_' &&
			    c != '.') {
				*reason = i == 2 ? "region in Credential has a "
				    "character outside A-Z a-z 0-9 - _ ." :
				    "service in Credential has a character "
				    "outside A-Z a-z 0-9 - _ .";
				return -1;
			}
		}
	}
	memcpy(out->region, part[2], plen[2]);
	out->region[plen[2]] = '\0';
	memcpy(out->service, part[3], plen[3]);
	out->service[plen[3]] = '\0';

	if (plen[4] != strlen(SIGV4_TERMINATOR) ||
	    memcmp(part[4], SIGV4_TERMINATOR, plen[4]) != 0) {
		*reason = "Credential does not end in /aws4_request";
		return -1;
	}
	return 0;
}

/*
 * On failure *out may hold the fields parsed before the error (the access
 * key id in particular, so that a log line can name it).
 */
int
sigv4_parse_auth(const char *value, struct sigv4_auth *out,
    const char **reason)
{
	static const char *const names[3] = {
		"Credential", "SignedHeaders", "Signature"
	};
	const char *p, *comp, *eq, *end, *v, *dummy;
	int seen[3] = { 0, 0, 0 };
	size_t vlen, i, k, alg = strlen(SIGV4_ALGORITHM);
	int which, hi, lo;

	if (reason == NULL)
		reason = &dummy;
	*reason = NULL;
	memset(out, 0, sizeof(*out));
	if (value == NULL) {
		*reason = "no value";
		return -1;
	}
	if (strncmp(value, SIGV4_ALGORITHM, alg) != 0 ||
	    (value[alg] != ' ' && value[alg] != '\0')) {
		*reason = "algorithm is not AWS4-HMAC-SHA256";
		return -1;
	}
	if (value[alg] != ' ') {
		*reason = "nothing after AWS4-HMAC-SHA256";
		return -1;
	}
	p = value + alg + 1;
	if (*p == ' ') {
		*reason = "more than one space after AWS4-HMAC-SHA256";
		return -1;
	}
	for (;;) {
		comp = p;
		end = strchr(comp, ',');
		if (end == NULL)
			end = comp + strlen(comp);
		if (end == comp) {
			*reason = "empty component";
			return -1;
		}
		eq = memchr(comp, '=', (size_t)(end - comp));
		if (eq == NULL) {
			*reason = "component without '='";
			return -1;
		}
		which = -1;
		for (i = 0; i < 3; i++) {
			if ((size_t)(eq - comp) == strlen(names[i]) &&
			    memcmp(comp, names[i], (size_t)(eq - comp)) == 0)
				which = (int)i;
		}
		if (which < 0) {
			*reason = "unknown component (expected Credential, "
			    "SignedHeaders, Signature)";
			return -1;
		}
		if (seen[which]) {
			*reason = which == 0 ? "duplicate Credential" :
			    which == 1 ? "duplicate SignedHeaders" :
			    "duplicate Signature";
			return -1;
		}
		seen[which] = 1;
		v = eq + 1;
		vlen = (size_t)(end - v);
		if (memchr(v, ' ', vlen) != NULL) {
			*reason = "space inside a component (missing comma?)";
			return -1;
		}
		switch (which) {
		case 0:
			if (sigv4_parse_credential(v, vlen, out, reason) != 0)
				return -1;
			break;
		case 1:
			if (vlen >= sizeof(out->signed_headers)) {
				*reason = "SignedHeaders too long";
				return -1;
			}
			if (sigv4_check_signed_headers(v, vlen, reason) != 0)
				return -1;
			memcpy(out->signed_headers, v, vlen);
			out->signed_headers[vlen] = '\0';
			break;
		default:
			if (vlen != SIGV4_HEX_LEN) {
				*reason = "Signature is not 64 hex digits";
				return -1;
			}
			for (k = 0; k < SIGV4_HASH_LEN; k++) {
				/* lower-case only, as every signer emits */
				hi = sigv4_lowerhex[(unsigned char)v[2 * k]];
				lo = sigv4_lowerhex[(unsigned char)v[2 * k + 1]];
				if (hi == 0 || lo == 0) {
					*reason = "Signature is not lower-case "
					    "hex";
					return -1;
				}
				out->signature[k] = (unsigned char)
				    ((hi - 1) << 4 | (lo - 1));
			}
			break;
		}
		if (*end == '\0')
			break;
		p = end + 1;
		if (*p == ' ')
			p++;
		if (*p == ' ') {
			*reason = "more than one space after a comma";
			return -1;
		}
		if (*p == '\0') {
			*reason = "trailing comma";
			return -1;
		}
	}
	for (i = 0; i < 3; i++) {
		if (!seen[i]) {
			*reason = i == 0 ? "missing Credential" :
			    i == 1 ? "missing SignedHeaders" :
			    "missing Signature";
			return -1;
		}
	}
	return 0;
}

/* --- canonical request */

/* Path: dot segments removed, empty segments dropped, bytes encoded. */
static void
sigv4_put_canonical_uri(struct sigv4_buf *b, const char *path)
{
	const char *src = path != NULL ? path : "", *p = src, *seg;
	size_t start = b->len, n, i;

	while (*p != '\0') {
		if (*p == '/') {
			p++;
			continue;
		}
		seg = p;
		while (*p != '\0' && *p != '/')
			p++;
		n = (size_t)(p - seg);
		if (n == 1 && seg[0] == '.')
			continue;
		if (n == 2 && seg[0] == '.' && seg[1] == '.') {
			/* Encoded segments hold no '/', so the last one
			 * starts after the last '/' written. */
			while (b->len > start && b->p[b->len - 1] != '/')
				b->len--;
			if (b->len > start)
				b->len--;
			continue;
		}
		sigv4_buf_putc(b, '/');
		for (i = 0; i < n; ) {
			size_t run = i;

			while (run < n && sigv4_is_unreserved(
			    (unsigned char)seg[run]))
				run++;
			if (run > i) {
				sigv4_buf_put(b, seg + i, run - i);
				i = run;
			} else
				sigv4_buf_put_encoded(b, (unsigned char)seg[i++]);
		}
	}
	if (b->len == start)
		sigv4_buf_putc(b, '/');
	else if (p > src && p[-1] == '/')
		sigv4_buf_putc(b, '/');
}

/* Append s[0..n) percent-decoded then re-encoded. */
static void
sigv4_put_reencoded(struct sigv4_buf *b, const char *s, size_t n)
{
	size_t i;
	int hi, lo;

	for (i = 0; i < n; i++) {
		if (s[i] == '%' && i + 2 < n && (hi = sigv4_hexval(
		    (unsigned char)s[i + 1])) >= 0 && (lo = sigv4_hexval(
		    (unsigned char)s[i + 2])) >= 0) {
			sigv4_buf_put_encoded(b, (unsigned char)(hi << 4 | lo));
			i += 2;
		} else
			sigv4_buf_put_encoded(b, (unsigned char)s[i]);
	}
}

struct sigv4_qparam {
	size_t name_off, name_len, value_off, value_len;
	const char *base;
};

static int
sigv4_qparam_cmp(const void *a, const void *b)
{
	const struct sigv4_qparam *x = a, *y = b;
	size_t n;
	int c;

	n = x->name_len < y->name_len ? x->name_len : y->name_len;
	if ((c = memcmp(x->base + x->name_off, y->base + y->name_off, n)) != 0)
		return c;
	if (x->name_len != y->name_len)
		return x->name_len < y->name_len ? -1 : 1;
	n = x->value_len < y->value_len ? x->value_len : y->value_len;
	if ((c = memcmp(x->base + x->value_off, y->base + y->value_off, n))
	    != 0)
		return c;
	if (x->value_len != y->value_len)
		return x->value_len < y->value_len ? -1 : 1;
	return 0;
}

/*
 * Query: '&'-separated pairs (empty ones skipped), each name and value
 * decoded and re-encoded, sorted by name then value, "name=" kept.
 */
static void
sigv4_put_canonical_query(struct sigv4_buf *b, const char *query)
{
	struct sigv4_qparam stackparams[SIGV4_STACK_PARAMS];
	struct sigv4_qparam *params = stackparams;
	char stackscratch[1024];
	struct sigv4_buf scratch;
	const char *p = query, *pair, *eq, *end;
	size_t n = 0, cap = SIGV4_STACK_PARAMS, i;

	if (query == NULL || *query == '\0')
		return;
	sigv4_buf_init(&scratch, stackscratch, sizeof(stackscratch));
	while (*p != '\0') {
		pair = p;
		while (*p != '\0' && *p != '&')
			p++;
		end = p;
		if (*p == '&')
			p++;
		if (end == pair)
			continue;
		if (n == cap) {
			struct sigv4_qparam *np;

			if (cap > SIGV4_MAX_CREQ / 2 ||
			    (np = calloc(cap * 2, sizeof(*np))) == NULL) {
				b->failed = 1;
				goto out;
			}
			memcpy(np, params, n * sizeof(*np));
			if (params != stackparams)
				free(params);
			params = np;
			cap *= 2;
		}
		eq = memchr(pair, '=', (size_t)(end - pair));
		if (eq == NULL)
			eq = end;
		params[n].name_off = scratch.len;
		sigv4_put_reencoded(&scratch, pair, (size_t)(eq - pair));
		params[n].name_len = scratch.len - params[n].name_off;
		params[n].value_off = scratch.len;
		if (eq < end)
			sigv4_put_reencoded(&scratch, eq + 1,
			    (size_t)(end - eq - 1));
		params[n].value_len = scratch.len - params[n].value_off;
		n++;
	}
	if (scratch.failed) {
		b->failed = 1;
		goto out;
	}
	for (i = 0; i < n; i++)
		params[i].base = scratch.p;
	qsort(params, n, sizeof(*params), sigv4_qparam_cmp);
	for (i = 0; i < n; i++) {
		if (i > 0)
			sigv4_buf_putc(b, '&');
		sigv4_buf_put(b, scratch.p + params[i].name_off,
		    params[i].name_len);
		sigv4_buf_putc(b, '=');
		sigv4_buf_put(b, scratch.p + params[i].value_off,
		    params[i].value_len);
	}
 out:
	if (params != stackparams)
		free(params);
	sigv4_buf_release(&scratch);
}

/* Header value: trimmed, inner runs of SP/HTAB collapsed to one SP. */
static void
sigv4_put_header_value(struct sigv4_buf *b, const char *v)
{
	const char *p = v, *run;
	int space = 0;

	while (*p == ' ' || *p == '\t')
		p++;
	while (*p != '\0') {
		if (*p == ' ' || *p == '\t') {
			space = 1;
			p++;
			continue;
		}
		if (space) {
			sigv4_buf_putc(b, ' ');
			space = 0;
		}
		run = p;
		while (*p != '\0' && *p != ' ' && *p != '\t')
			p++;
		sigv4_buf_put(b, run, (size_t)(p - run));
	}
}

/*
 * Append the canonical request to b.  body_hex is the hex SHA-256 of the
 * body; checked says signed_headers was validated already.  Returns 0, or -1 with *reason set (static) and, when a signed
 * header is missing, *missing / *missing_len naming it.
 */
static int
sigv4_build_creq(struct sigv4_buf *b, const struct sigv4_input *in,
    const char *signed_headers, int checked, const char *body_hex,
    const char **reason, const char **missing, size_t *missing_len)
{
	const char *s, *name;
	size_t n, i, count;

	*missing = NULL;
	*missing_len = 0;
	if (in->method == NULL || *in->method == '\0') {
		*reason = "no method";
		return -1;
	}
	if (!checked && sigv4_check_signed_headers(signed_headers,
	    strlen(signed_headers), reason) != 0)
		return -1;
	sigv4_buf_puts(b, in->method);
	sigv4_buf_putc(b, '\n');
	sigv4_put_canonical_uri(b, in->path);
	sigv4_buf_putc(b, '\n');
	sigv4_put_canonical_query(b, in->query);
	sigv4_buf_putc(b, '\n');
	s = signed_headers;
	while (*s != '\0') {
		name = s;
		while (*s != '\0' && *s != ';')
			s++;
		n = (size_t)(s - name);
		if (*s == ';')
			s++;
		sigv4_buf_put(b, name, n);
		sigv4_buf_putc(b, ':');
		count = 0;
		for (i = 0; i < in->nheaders; i++) {
			if (in->headers[i].name == NULL ||
			    !sigv4_name_eq(in->headers[i].name, name, n))
				continue;
			if (count++ > 0)
				sigv4_buf_putc(b, ',');
			sigv4_put_header_value(b, in->headers[i].value != NULL ?
			    in->headers[i].value : "");
		}
		if (count == 0) {
			*missing = name;
			*missing_len = n;
			*reason = "a header named in SignedHeaders is missing "
			    "from the request";
			return -1;
		}
		sigv4_buf_putc(b, '\n');
	}
	sigv4_buf_putc(b, '\n');
	sigv4_buf_puts(b, signed_headers);
	sigv4_buf_putc(b, '\n');
	sigv4_buf_put(b, body_hex, SIGV4_HEX_LEN);
	if (b->failed) {
		*reason = "canonical request too large";
		return -1;
	}
	return 0;
}

char *
sigv4_canonical_request(const struct sigv4_input *in,
    const char *signed_headers, const char **reason)
{
	unsigned char hash[SIGV4_HASH_LEN];
	char hex[SIGV4_HEX_LEN + 1], *ret = NULL;
	const char *missing, *dummy;
	struct sigv4_buf b;
	size_t missing_len;

	if (reason == NULL)
		reason = &dummy;
	*reason = NULL;
	sigv4_buf_init(&b, NULL, 0);
	if (in == NULL || signed_headers == NULL) {
		*reason = "no request";
		goto out;
	}
	if (EVP_Digest(in->body_len > 0 ? in->body : (const unsigned char *)"",
	    in->body_len, hash, NULL, EVP_sha256(), NULL) != 1) {
		log_crypto_err("sigv4: SHA-256");
		*reason = "SHA-256 failed";
		goto out;
	}
	util_hex(hash, sizeof(hash), hex);
	if (sigv4_build_creq(&b, in, signed_headers, 0, hex, reason, &missing,
	    &missing_len) != 0)
		goto out;
	if (sigv4_buf_finish(&b) != 0 || !b.on_heap) {
		/* the initial buffer is empty: any content is on the heap */
		*reason = "canonical request too large";
		goto out;
	}
	ret = b.p;
	b.on_heap = 0;
 out:
	sigv4_buf_release(&b);
	return ret;
}

/* String to sign into b from the hex hash of the canonical request. */
static void
sigv4_put_sts(struct sigv4_buf *b, const char *amz_date, const char *scope,
    const char *creq_hex)
{
	sigv4_buf_puts(b, SIGV4_ALGORITHM "\n");
	sigv4_buf_puts(b, amz_date);
	sigv4_buf_putc(b, '\n');
	sigv4_buf_puts(b, scope);
	sigv4_buf_putc(b, '\n');
	sigv4_buf_put(b, creq_hex, SIGV4_HEX_LEN);
}

char *
sigv4_string_to_sign(const char *amz_date, const char *scope,
    const char *canonical_request)
{
	unsigned char hash[SIGV4_HASH_LEN];
	char hex[SIGV4_HEX_LEN + 1];
	struct sigv4_buf b;

	if (amz_date == NULL || scope == NULL || canonical_request == NULL)
		return NULL;
	if (EVP_Digest(canonical_request, strlen(canonical_request), hash,
	    NULL, EVP_sha256(), NULL) != 1) {
		log_crypto_err("sigv4: SHA-256");
		return NULL;
	}
	util_hex(hash, sizeof(hash), hex);
	sigv4_buf_init(&b, NULL, 0);
	sigv4_put_sts(&b, amz_date, scope, hex);
	if (sigv4_buf_finish(&b) != 0) {
		sigv4_buf_release(&b);
		return NULL;
	}
	return b.p;                   /* on the heap: the initial buffer is empty */
}

/* --- verification */

/* yyyymmddThhmmssZ, a real UTC date and time. */
static int
sigv4_parse_amz_date(const char *s, time_t *out)
{
	static const char shape[] = "ddddddddTddddddZ";
	static const int mdays[12] = {
		31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31
	};
	struct tm tm;
	int v[6], i;
	time_t t;

	*out = 0;
	if (strlen(s) != SIGV4_AMZ_DATE_LEN)
		return -1;
	for (i = 0; i < SIGV4_AMZ_DATE_LEN; i++) {
		if (shape[i] == 'd' ? !sigv4_is_digit((unsigned char)s[i]) :
		    s[i] != shape[i])
			return -1;
	}
#define D(off, n) (n == 4 ? (s[off] - '0') * 1000 + (s[off + 1] - '0') * 100 + \
    (s[off + 2] - '0') * 10 + (s[off + 3] - '0') : \
    (s[off] - '0') * 10 + (s[off + 1] - '0'))
	v[0] = D(0, 4);
	v[1] = D(4, 2);
	v[2] = D(6, 2);
	v[3] = D(9, 2);
	v[4] = D(11, 2);
	v[5] = D(13, 2);
#undef D
	if (v[0] < 1970 || v[1] < 1 || v[1] > 12 || v[2] < 1 || v[3] > 23 ||
	    v[4] > 59 || v[5] > 59)
		return -1;
	/* timegm would normalise 31 February into March: refuse that. */
	if (v[2] > mdays[v[1] - 1] + (v[1] == 2 && v[0] % 4 == 0 &&
	    (v[0] % 100 != 0 || v[0] % 400 == 0)))
		return -1;
	memset(&tm, 0, sizeof(tm));
	tm.tm_year = v[0] - 1900;
	tm.tm_mon = v[1] - 1;
	tm.tm_mday = v[2];
	tm.tm_hour = v[3];
	tm.tm_min = v[4];
	tm.tm_sec = v[5];
	if ((t = timegm(&tm)) == (time_t)-1)
		return -1;
	*out = t;
	return 0;
}

static int
sigv4_signed_has(const char *signed_headers, const char *name)
{
	size_t n = strlen(name);
	const char *p = signed_headers;

	while (*p != '\0') {
		if (strncmp(p, name, n) == 0 && (p[n] == ';' || p[n] == '\0'))
			return 1;
		p = strchr(p, ';');
		if (p == NULL)
			break;
		p++;
	}
	return 0;
}

enum xerr
sigv4_verify(struct sigv4_cache *cache, const struct sigv4_input *in,
    const struct sigv4_cred *creds, size_t ncreds,
    const struct sigv4_params *params, const struct sigv4_cred **used,
    char *akid, char *reason, size_t reasonlen)
{
	char creqstack[SIGV4_STACK_CREQ], stsstack[256];
	char body_hex[SIGV4_HEX_LEN + 1], creq_hex[SIGV4_HEX_LEN + 1];
	char clean[48], when[32];
	unsigned char hash[SIGV4_HASH_LEN], sig[SIGV4_HASH_LEN];
	struct sigv4_crypto local, *c = NULL;
	struct sigv4_buf creq, sts;
	struct sigv4_auth auth;
	const struct sigv4_cred *cred = NULL;
	const char *authz, *amz_date, *content_sha, *why = NULL, *missing;
	size_t nauthz, ndate, nsha, missing_len, i;
	long long skew;
	time_t t;
	struct tm tm;
	enum xerr r = XERR_AUTH_FAILED;
	int have_local = 0;

	if (used != NULL)
		*used = NULL;
	if (akid != NULL)
		akid[0] = '\0';
	if (reason != NULL && reasonlen > 0)
		reason[0] = '\0';
	sigv4_buf_init(&creq, creqstack, sizeof(creqstack));
	sigv4_buf_init(&sts, stsstack, sizeof(stsstack));
	if (in == NULL || params == NULL) {
		r = XERR_INTERNAL;
		sigv4_fail(reason, reasonlen, "internal error: no request");
		goto out;
	}

	if ((nauthz = sigv4_header_count(in, "authorization", &authz)) == 0) {
		sigv4_fail(reason, reasonlen, "missing Authorization header");
		goto out;
	}
	if (nauthz > 1) {
		sigv4_fail(reason, reasonlen,
		    "more than one Authorization header");
		goto out;
	}
	if (sigv4_parse_auth(authz, &auth, &why) != 0) {
		if (akid != NULL && auth.access_key_id[0] != '\0')
			util_sanitize(auth.access_key_id,
			    strlen(auth.access_key_id), akid, 129);
		sigv4_fail(reason, reasonlen,
		    "malformed Authorization header: %s", why);
		goto out;
	}
	if (akid != NULL)
		util_sanitize(auth.access_key_id, strlen(auth.access_key_id),
		    akid, 129);
	if (params->service == NULL ||
	    strcmp(auth.service, params->service) != 0) {
		sigv4_fail(reason, reasonlen,
		    "credential scope service '%s' is not '%s'", auth.service,
		    params->service != NULL ? params->service : "");
		goto out;
	}
	if ((ndate = sigv4_header_count(in, "x-amz-date", &amz_date)) == 0) {
		sigv4_fail(reason, reasonlen, "missing X-Amz-Date header");
		goto out;
	}
	if (ndate > 1) {
		sigv4_fail(reason, reasonlen,
		    "more than one X-Amz-Date header");
		goto out;
	}
	if (sigv4_parse_amz_date(amz_date, &t) != 0) {
		util_sanitize(amz_date, strlen(amz_date), clean, 24);
		sigv4_fail(reason, reasonlen, "malformed X-Amz-Date '%s' "
		    "(expected yyyymmddThhmmssZ)", clean);
		goto out;
	}
	if (memcmp(auth.date, amz_date, 8) != 0) {
		sigv4_fail(reason, reasonlen, "credential scope date %s does "
		    "not match X-Amz-Date %s", auth.date, amz_date);
		goto out;
	}
	skew = (long long)params->now - (long long)t;
	if (skew > params->max_skew_seconds) {
		sigv4_fail(reason, reasonlen, "request time is %lld s in the "
		    "past, more than the allowed %d s", skew,
		    params->max_skew_seconds);
		goto out;
	}
	if (-skew > params->max_skew_seconds) {
		sigv4_fail(reason, reasonlen, "request time is %lld s in the "
		    "future, more than the allowed %d s", -skew,
		    params->max_skew_seconds);
		goto out;
	}
	if (params->nregions > 0) {
		for (i = 0; i < params->nregions; i++)
			if (params->regions[i] != NULL &&
			    strcmp(params->regions[i], auth.region) == 0)
				break;
		if (i == params->nregions) {
			sigv4_fail(reason, reasonlen, "region '%s' is not "
			    "accepted by this key store", auth.region);
			goto out;
		}
	}
	if (!sigv4_signed_has(auth.signed_headers, "host")) {
		sigv4_fail(reason, reasonlen,
		    "SignedHeaders does not include host");
		goto out;
	}
	if (!sigv4_signed_has(auth.signed_headers, "x-amz-date")) {
		sigv4_fail(reason, reasonlen,
		    "SignedHeaders does not include x-amz-date");
		goto out;
	}
	/* The first credential with this id wins (the config forbids two). */
	for (i = 0; i < ncreds; i++) {
		if (creds[i].access_key_id != NULL &&
		    strcmp(creds[i].access_key_id, auth.access_key_id) == 0) {
			cred = &creds[i];
			break;
		}
	}
	if (cred == NULL) {
		sigv4_fail(reason, reasonlen, "unknown access key id '%s'",
		    auth.access_key_id);
		goto out;
	}
	if (cred->not_after != 0 && params->now > cred->not_after) {
		t = cred->not_after;
		if (gmtime_r(&t, &tm) == NULL ||
		    strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm) ==
		    0)
			snprintf(when, sizeof(when), "%lld", (long long)t);
		sigv4_fail(reason, reasonlen, "credential %s expired at %s",
		    auth.access_key_id, when);
		goto out;
	}

	if (cache != NULL)
		c = &cache->crypto;
	else {
		if (sigv4_crypto_init(&local) != 0) {
			r = XERR_INTERNAL;
			sigv4_fail(reason, reasonlen, "internal error: OpenSSL "
			    "setup failed");
			goto out;
		}
		have_local = 1;
		c = &local;
	}
	if (sigv4_sha256(c, in->body_len > 0 ? in->body :
	    (const unsigned char *)"", in->body_len, hash) != 0) {
		r = XERR_INTERNAL;
		sigv4_fail(reason, reasonlen, "internal error: SHA-256 failed");
		goto out;
	}
	util_hex(hash, sizeof(hash), body_hex);
	if ((nsha = sigv4_header_count(in, "x-amz-content-sha256",
	    &content_sha)) > 1) {
		sigv4_fail(reason, reasonlen,
		    "more than one X-Amz-Content-Sha256 header");
		goto out;
	}
	if (nsha == 1 && strcmp(content_sha, body_hex) != 0) {
		sigv4_fail(reason, reasonlen, "X-Amz-Content-Sha256 does not "
		    "match the SHA-256 of the body");
		goto out;
	}
	if (sigv4_build_creq(&creq, in, auth.signed_headers, 1, body_hex, &why,
	    &missing, &missing_len) != 0) {
		if (missing != NULL)
			sigv4_fail(reason, reasonlen, "signed header '%.*s' is "
			    "not in the request", (int)missing_len, missing);
		else
			sigv4_fail(reason, reasonlen, "%s", why);
		goto out;
	}
	if (sigv4_sha256(c, creq.p, creq.len, hash) != 0) {
		r = XERR_INTERNAL;
		sigv4_fail(reason, reasonlen, "internal error: SHA-256 failed");
		goto out;
	}
	util_hex(hash, sizeof(hash), creq_hex);
	sigv4_buf_put(&sts, SIGV4_ALGORITHM "\n", strlen(SIGV4_ALGORITHM) + 1);
	sigv4_buf_put(&sts, amz_date, SIGV4_AMZ_DATE_LEN);
	sigv4_buf_putc(&sts, '\n');
	sigv4_buf_put(&sts, auth.date, 8);
	sigv4_buf_putc(&sts, '/');
	sigv4_buf_puts(&sts, auth.region);
	sigv4_buf_putc(&sts, '/');
	sigv4_buf_puts(&sts, auth.service);
	sigv4_buf_put(&sts, "/" SIGV4_TERMINATOR "\n",
	    strlen(SIGV4_TERMINATOR) + 2);
	sigv4_buf_put(&sts, creq_hex, SIGV4_HEX_LEN);
	if (sts.failed) {
		r = XERR_INTERNAL;
		sigv4_fail(reason, reasonlen, "internal error: out of memory");
		goto out;
	}
	if (sigv4_cached_hmac(cache, c, cred, &auth, sts.p, sts.len, sig) !=
	    0) {
		r = XERR_INTERNAL;
		sigv4_fail(reason, reasonlen, "internal error: HMAC failed");
		goto out;
	}
	if (CRYPTO_memcmp(sig, auth.signature, sizeof(sig)) != 0) {
		sigv4_fail(reason, reasonlen, "signature does not match");
		goto out;
	}
	if (used != NULL)
		*used = cred;
	r = XERR_OK;
 out:
	sigv4_buf_release(&creq);
	sigv4_buf_release(&sts);
	if (have_local)
		sigv4_crypto_clear(&local);
	return r;
}

/* --- signing */

char *
sigv4_sign(const struct sigv4_input *in, const char *signed_headers,
    const char *access_key_id, const unsigned char *secret, size_t secret_len,
    const char *region, const char *service)
{
	char body_hex[SIGV4_HEX_LEN + 1], creq_hex[SIGV4_HEX_LEN + 1];
	char sig_hex[SIGV4_HEX_LEN + 1], date[9], scope[160];
	unsigned char hash[SIGV4_HASH_LEN], key[SIGV4_HASH_LEN];
	unsigned char sig[SIGV4_HASH_LEN];
	struct sigv4_crypto c;
	struct sigv4_buf creq, sts, out;
	const char *amz_date, *why, *missing;
	size_t missing_len;
	char *ret = NULL;
	int have_crypto = 0;

	sigv4_buf_init(&creq, NULL, 0);
	sigv4_buf_init(&sts, NULL, 0);
	sigv4_buf_init(&out, NULL, 0);
	if (in == NULL || signed_headers == NULL || access_key_id == NULL ||
	    region == NULL || service == NULL)
		goto out;
	if (sigv4_header_count(in, "x-amz-date", &amz_date) != 1 ||
	    strlen(amz_date) < 8)
		goto out;
	memcpy(date, amz_date, 8);
	date[8] = '\0';
	if ((size_t)snprintf(scope, sizeof(scope), "%s/%s/%s/"
	    SIGV4_TERMINATOR, date, region, service) >= sizeof(scope))
		goto out;
	if (sigv4_crypto_init(&c) != 0)
		goto out;
	have_crypto = 1;
	if (sigv4_sha256(&c, in->body_len > 0 ? in->body :
	    (const unsigned char *)"", in->body_len, hash) != 0)
		goto out;
	util_hex(hash, sizeof(hash), body_hex);
	if (sigv4_build_creq(&creq, in, signed_headers, 0, body_hex, &why,
	    &missing, &missing_len) != 0 ||
	    sigv4_sha256(&c, creq.p, creq.len, hash) != 0)
		goto out;
	util_hex(hash, sizeof(hash), creq_hex);
	sigv4_put_sts(&sts, amz_date, scope, creq_hex);
	if (sts.failed ||
	    sigv4_derive_key(&c, secret, secret_len, date, region, service,
	    key) != 0 ||
	    sigv4_hmac(&c, key, sizeof(key), sts.p, sts.len, sig) != 0)
		goto out;
	util_hex(sig, sizeof(sig), sig_hex);
	sigv4_buf_puts(&out, SIGV4_ALGORITHM " Credential=");
	sigv4_buf_puts(&out, access_key_id);
	sigv4_buf_putc(&out, '/');
	sigv4_buf_puts(&out, scope);
	sigv4_buf_puts(&out, ", SignedHeaders=");
	sigv4_buf_puts(&out, signed_headers);
	sigv4_buf_puts(&out, ", Signature=");
	sigv4_buf_puts(&out, sig_hex);
	if (sigv4_buf_finish(&out) != 0)
		goto out;
	ret = out.p;
	out.on_heap = 0;
 out:
	wipe(key, sizeof(key));
	sigv4_buf_release(&creq);
	sigv4_buf_release(&sts);
	sigv4_buf_release(&out);
	if (have_crypto)
		sigv4_crypto_clear(&c);
	return ret;
}
