/*
 * bench_sigv4.c -- the cost of one sigv4_verify() of a 6 KB request.
 *
 *   tests/bench_sigv4 [iterations [warm|cold|none|floor]]
 *
 * Prints ns and µs per verification: warm cache (the steady state of an
 * event loop), cold cache (every lookup misses: key derivation included),
 * no cache at all, and SHA-256 of the body alone (the floor).  Each figure
 * is the best and the median of 5 batches.  Not part of `make check`.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/evp.h>

#include "http.h"
#include "sigv4.h"

#define BODY_LEN 6144
#define BATCHES  5

static const unsigned char secret[] =
    "Zm9vYmFyYmF6cXV4cXV1eHF1dXpxdXV4cXV1eHF1dXo=";
#define AKID "AKIAIOSFODNN7EXAMPLEQ"
#define NOW  ((time_t)1440938160)       /* 20150830T123600Z */

struct req {
	struct http_header h[6];
	struct sigv4_input in;
	char *authz;
};

static unsigned char body[BODY_LEN];

static double
now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

static void
req_init(struct req *r, const char *region)
{
	memset(r, 0, sizeof(*r));
	r->h[0].name = "Host";
	r->h[0].value = "xks.example.com";
	r->h[1].name = "X-Amz-Date";
	r->h[1].value = "20150830T123600Z";
	r->h[2].name = "Content-Type";
	r->h[2].value = "application/json";
	r->h[3].name = "Content-Length";
	r->h[3].value = "6144";
	r->h[4].name = "User-Agent";
	r->h[4].value = "aws-kms-xks/1.0";
	r->in.method = "POST";
	r->in.path = "/ks1/kms/xks/v1/keys/xks-key-0001/encrypt";
	r->in.query = "";
	r->in.headers = r->h;
	r->in.nheaders = 5;
	r->in.body = body;
	r->in.body_len = sizeof(body);
	r->authz = sigv4_sign(&r->in, "content-type;host;x-amz-date", AKID,
	    secret, sizeof(secret) - 1, region, SIGV4_SERVICE);
	if (r->authz == NULL) {
		fprintf(stderr, "sigv4_sign failed\n");
		exit(1);
	}
	r->h[5].name = "Authorization";
	r->h[5].value = r->authz;
	r->in.nheaders = 6;
}

static int
cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return x < y ? -1 : x > y;
}

/* mode 0: warm, 1: cold (alternating scopes in a 1-entry cache), 2: NULL */
static void
run(const char *label, int mode, struct req *r, long iters)
{
	const struct sigv4_cred cred = { AKID, secret, sizeof(secret) - 1, 0 };
	const struct sigv4_params params = { SIGV4_SERVICE, NULL, 0, 300, NOW };
	struct sigv4_cache *cache = NULL;
	const struct sigv4_cred *used;
	char reason[256], akid[129];
	double t[BATCHES], t0;
	long i;
	int b;

	if (mode != 2 && (cache = sigv4_cache_new(mode == 0 ? 16 : 1)) ==
	    NULL) {
		fprintf(stderr, "sigv4_cache_new failed\n");
		exit(1);
	}
	for (b = 0; b < BATCHES; b++) {
		t0 = now_ns();
		for (i = 0; i < iters; i++) {
			struct req *q = mode == 1 ? &r[i & 1] : &r[0];

			if (sigv4_verify(cache, &q->in, &cred, 1, &params,
			    &used, akid, reason, sizeof(reason)) != XERR_OK) {
				fprintf(stderr, "verify failed: %s\n", reason);
				exit(1);
			}
		}
		t[b] = (now_ns() - t0) / (double)iters;
	}
	qsort(t, BATCHES, sizeof(t[0]), cmp_double);
	printf("%-34s best %8.0f ns (%6.2f us)  median %8.0f ns (%6.2f us)\n",
	    label, t[0], t[0] / 1000, t[BATCHES / 2], t[BATCHES / 2] / 1000);
	if (cache != NULL) {
		unsigned long long hits, misses;

		sigv4_cache_stats(cache, &hits, &misses, NULL);
		printf("%-34s (cache hits %llu, misses %llu)\n", "", hits,
		    misses);
	}
	sigv4_cache_free(cache);
}

static void
floor_sha256(long iters)
{
	EVP_MD *md = EVP_MD_fetch(NULL, "SHA256", NULL);
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	unsigned char out[32];
	unsigned int olen;
	double t[BATCHES], t0;
	long i;
	int b;

	for (b = 0; b < BATCHES; b++) {
		t0 = now_ns();
		for (i = 0; i < iters; i++) {
			EVP_DigestInit_ex2(ctx, md, NULL);
			EVP_DigestUpdate(ctx, body, sizeof(body));
			EVP_DigestFinal_ex(ctx, out, &olen);
		}
		t[b] = (now_ns() - t0) / (double)iters;
	}
	qsort(t, BATCHES, sizeof(t[0]), cmp_double);
	printf("%-34s best %8.0f ns (%6.2f us)  median %8.0f ns (%6.2f us)\n",
	    "floor: SHA-256 of the 6 KB body", t[0], t[0] / 1000,
	    t[BATCHES / 2], t[BATCHES / 2] / 1000);
	EVP_MD_CTX_free(ctx);
	EVP_MD_free(md);
}

int
main(int argc, char **argv)
{
	struct req r[2];
	long iters = argc > 1 ? atol(argv[1]) : 20000;
	const char *only = argc > 2 ? argv[2] : NULL;
	size_t i;

	if (iters <= 0)
		iters = 20000;
	for (i = 0; i < sizeof(body); i++)
		body[i] = (unsigned char)"{\"plaintext\":\"QUJDRA==\"}"[i % 24];
	req_init(&r[0], "us-east-1");
	req_init(&r[1], "eu-west-1");
	printf("sigv4_verify, POST with a %d-byte body, %ld iterations x %d "
	    "batches\n", BODY_LEN, iters, BATCHES);
	if (only == NULL || strcmp(only, "warm") == 0)
		run("warm cache (hit)", 0, r, iters);
	if (only == NULL || strcmp(only, "cold") == 0)
		run("cold cache (miss, key derived)", 1, r, iters);
	if (only == NULL || strcmp(only, "none") == 0)
		run("no cache (NULL)", 2, r, iters / 4 > 0 ? iters / 4 : 1);
	if (only == NULL || strcmp(only, "floor") == 0)
		floor_sha256(iters);
	free(r[0].authz);
	free(r[1].authz);
	return 0;
}
