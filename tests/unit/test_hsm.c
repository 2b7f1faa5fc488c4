/*
 * test_hsm.c -- the PKCS#11 backend against a SoftHSMv2 cluster of two
 * tokens, through the xks-shim (fault and latency injection, counters).
 */
#include "config.h"

#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <cmocka.h>
#include <openssl/evp.h>

#include "cfg.h"
#include "hsm.h"
#include "log.h"
#include "util.h"

#include "hsm-fixture.h"

static char *fx_tokens2[] = { "pkcs11:token=xks-a", "pkcs11:token=xks-b" };
static char *fx_tokens_b[] = { "pkcs11:token=xks-b" };
static char fx_pin_path[300];

/* A cfg_hsm filled by hand (the config module is not needed). */
static void
pool_conf(struct cfg_hsm *c, char **tokens, size_t ntokens, int sessions,
    int queue, int timeout_ms)
{
	memset(c, 0, sizeof(*c));
	c->module = fx_shim;
	c->tokens = tokens;
	c->ntokens = ntokens;
	snprintf(fx_pin_path, sizeof(fx_pin_path), "%s/pin", fx_dir);
	c->pin_file = fx_pin_path;
	c->sessions_per_token = sessions;
	c->health_key = "xks-health";
	c->iv = CFG_IV_PROXY;
	c->timeout_ms = timeout_ms;
	c->queue_size = queue;
}

static struct hsm *
pool_new(char **tokens, size_t ntokens, int sessions, int queue,
    int timeout_ms)
{
	struct cfg_hsm c;
	struct hsm *h = NULL;
	char err[256];

	pool_conf(&c, tokens, ntokens, sessions, queue, timeout_ms);
	if (hsm_new(&c, &h, err, sizeof(err)) != 0)
		fail_msg("hsm_new: %s", err);
	return h;
}

static void
job_init(struct hsm_job *j, enum hsm_op op, const char *label, int token)
{
	memset(j, 0, sizeof(*j));
	j->op = op;
	snprintf(j->label, sizeof(j->label), "%s", label);
	j->token = token;
	j->served_by = -1;
}

static const unsigned char pt32[32] = "the quick brown fox jumps over!!";
static const unsigned char aad[] = "aad: kms request context";

/* Encrypt pt32 with key label on token; returns the error. */
static enum xerr
do_encrypt(struct hsm *h, const char *label, int token, unsigned char *ct,
    unsigned char iv[12], unsigned char tag[16], struct hsm_job *out)
{
	struct hsm_job j;
	enum xerr e;

	job_init(&j, HSM_OP_ENCRYPT, label, token);
	j.in = pt32;
	j.in_len = sizeof(pt32);
	j.aad = aad;
	j.aad_len = sizeof(aad);
	j.out = ct;
	e = hsm_run_sync(h, &j, 5000);
	if (e == XERR_OK) {
		assert_int_equal(j.out_len, sizeof(pt32));
		assert_int_equal(j.iv_len, 12);
		memcpy(iv, j.iv, 12);
		memcpy(tag, j.tag, 16);
	}
	if (out != NULL)
		*out = j;
	return e;
}

static enum xerr
do_decrypt(struct hsm *h, const char *label, int token,
    const unsigned char *ct, const unsigned char iv[12],
    const unsigned char tag[16], unsigned char *pt, struct hsm_job *out)
{
	struct hsm_job j;
	enum xerr e;

	job_init(&j, HSM_OP_DECRYPT, label, token);
	j.in = ct;
	j.in_len = sizeof(pt32);
	j.aad = aad;
	j.aad_len = sizeof(aad);
	j.out = pt;
	memcpy(j.iv, iv, 12);
	j.iv_len = 12;
	memcpy(j.tag, tag, 16);
	e = hsm_run_sync(h, &j, 5000);
	if (out != NULL)
		*out = j;
	return e;
}

/* Decrypt with OpenSSL and the known key material: proves AES-256-GCM. */
static void
check_with_openssl(const unsigned char *ct, const unsigned char *iv,
    const unsigned char *tag)
{
	EVP_CIPHER_CTX *c = EVP_CIPHER_CTX_new();
	unsigned char pt[64];
	int l1 = 0, l2 = 0;

	assert_non_null(c);
	assert_int_equal(EVP_DecryptInit_ex(c, EVP_aes_256_gcm(), NULL, NULL,
	    NULL), 1);
	assert_int_equal(EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_IVLEN, 12,
	    NULL), 1);
	assert_int_equal(EVP_DecryptInit_ex(c, NULL, NULL, fx_k256, iv), 1);
	assert_int_equal(EVP_DecryptUpdate(c, NULL, &l1, aad, sizeof(aad)), 1);
	assert_int_equal(EVP_DecryptUpdate(c, pt, &l1, ct, sizeof(pt32)), 1);
	assert_int_equal(EVP_CIPHER_CTX_ctrl(c, EVP_CTRL_GCM_SET_TAG, 16,
	    (void *)tag), 1);
	assert_int_equal(EVP_DecryptFinal_ex(c, pt + l1, &l2), 1);
	assert_int_equal(l1 + l2, sizeof(pt32));
	assert_memory_equal(pt, pt32, sizeof(pt32));
	EVP_CIPHER_CTX_free(c);
}

static void
test_roundtrip_cluster(void **state)
{
	struct hsm *h = pool_new(fx_tokens2, 2, 2, 64, 1000);
	unsigned char ct[32], pt[32], iv[12], tag[16], iv2[12];
	struct hsm_token_info ti;
	struct hsm_job j;

	(void)state;
	assert_int_equal(hsm_ntokens(h), 2);
	hsm_token_info(h, 0, &ti);
	assert_int_equal(strncmp(ti.id, "xks-a/", 6), 0);
	assert_non_null(strstr(ti.model, "SoftHSM"));
	assert_int_equal(ti.healthy, 1);
	hsm_token_info(h, 1, &ti);
	assert_int_equal(strncmp(ti.id, "xks-b/", 6), 0);

	/* encrypt on token A, decrypt on token B: the same key material */
	assert_int_equal(do_encrypt(h, "k256", 0, ct, iv, tag, &j), XERR_OK);
	assert_int_equal(j.served_by, 0);
	assert_memory_not_equal(ct, pt32, sizeof(pt32));
	check_with_openssl(ct, iv, tag);
	memset(pt, 0, sizeof(pt));
	assert_int_equal(do_decrypt(h, "k256", 1, ct, iv, tag, pt, &j),
	    XERR_OK);
	assert_int_equal(j.served_by, 1);
	assert_int_equal(j.out_len, sizeof(pt32));
	assert_memory_equal(pt, pt32, sizeof(pt32));

	/* any token; a fresh IV each time */
	assert_int_equal(do_encrypt(h, "k256", -1, ct, iv2, tag, &j), XERR_OK);
	assert_true(j.served_by == 0 || j.served_by == 1);
	assert_memory_not_equal(iv, iv2, 12);
	check_with_openssl(ct, iv2, tag);
	assert_int_equal(do_decrypt(h, "k256", -1, ct, iv2, tag, pt, NULL),
	    XERR_OK);
	assert_memory_equal(pt, pt32, sizeof(pt32));
	hsm_free(h);
}

static void
test_wrong_tag(void **state)
{
	struct hsm *h = pool_new(fx_tokens2, 2, 1, 64, 1000);
	unsigned char ct[32], pt[32], iv[12], tag[16];
	unsigned long long opens;
	struct hsm_token_info ti;
	struct hsm_job j;
	int i;

	(void)state;
	assert_int_equal(do_encrypt(h, "k256", 0, ct, iv, tag, NULL), XERR_OK);
	opens = fx_counter("C_OpenSession");
	tag[3] ^= 0x01;
	for (i = 0; i < 2; i++) {
		assert_int_equal(do_decrypt(h, "k256", i, ct, iv, tag, pt, &j),
		    XERR_INVALID_CIPHERTEXT);
		assert_int_equal(j.served_by, i);
		hsm_token_info(h, (size_t)i, &ti);
		assert_int_equal(ti.healthy, 1);
	}
	tag[3] ^= 0x01;
	ct[0] ^= 0x80;
	assert_int_equal(do_decrypt(h, "k256", -1, ct, iv, tag, pt, NULL),
	    XERR_INVALID_CIPHERTEXT);
	ct[0] ^= 0x80;
	/* the session was not treated as broken: no reopen, next one works */
	assert_int_equal(do_decrypt(h, "k256", 0, ct, iv, tag, pt, NULL),
	    XERR_OK);
	assert_memory_equal(pt, pt32, sizeof(pt32));
	assert_int_equal(fx_counter("C_OpenSession"), opens);
	hsm_free(h);
}

static void
test_usage_and_labels(void **state)
{
	struct hsm *h = pool_new(fx_tokens2, 2, 1, 64, 1000);
	unsigned char ct[32], pt[32], iv[12], tag[16];
	struct hsm_job j;

	(void)state;
	memset(iv, 1, sizeof(iv));
	memset(tag, 2, sizeof(tag));
	memset(ct, 3, sizeof(ct));
	assert_int_equal(do_encrypt(h, "enc-only", -1, ct, iv, tag, NULL),
	    XERR_OK);
	assert_int_equal(do_decrypt(h, "enc-only", -1, ct, iv, tag, pt, &j),
	    XERR_INVALID_KEY_USAGE);
	assert_string_equal(j.errmsg, j.served_by == 0 ?
	    "HSM error CKR_KEY_FUNCTION_NOT_PERMITTED on token xks-a" :
	    "HSM error CKR_KEY_FUNCTION_NOT_PERMITTED on token xks-b");
	assert_int_equal(do_encrypt(h, "dec-only", -1, ct, iv, tag, NULL),
	    XERR_INVALID_KEY_USAGE);
	assert_int_equal(do_encrypt(h, "neither", -1, ct, iv, tag, NULL),
	    XERR_INVALID_KEY_USAGE);
	assert_int_equal(do_decrypt(h, "neither", -1, ct, iv, tag, pt, NULL),
	    XERR_INVALID_KEY_USAGE);
	assert_int_equal(do_encrypt(h, "no-such-key", -1, ct, iv, tag, &j),
	    XERR_KEY_NOT_FOUND);
	assert_string_equal(j.errmsg, "no AES key labelled no-such-key on "
	    "the HSM");
	assert_int_equal(do_encrypt(h, "dup", 1, ct, iv, tag, &j),
	    XERR_INTERNAL);
	assert_string_equal(j.errmsg, "two keys labelled dup on token xks-b");
	/* the 16-byte key works (KMS refuses it from the metadata) */
	assert_int_equal(do_encrypt(h, "k128", -1, ct, iv, tag, NULL), XERR_OK);
	hsm_free(h);
}

static void
check_meta(struct hsm *h, const char *label, size_t len, unsigned usage,
    int enabled)
{
	struct hsm_job j;
	int t;

	for (t = 0; t < 2; t++) {
		job_init(&j, HSM_OP_METADATA, label, t);
		if (hsm_run_sync(h, &j, 5000) != XERR_OK)
			fail_msg("%s: %s", label, j.errmsg);
		assert_int_equal(j.meta.key_type, CKK_AES);
		assert_int_equal(j.meta.value_len, len);
		assert_int_equal(j.meta.usage, usage);
		assert_int_equal(j.meta.enabled, enabled);
	}
}

static void
test_metadata(void **state)
{
	struct hsm *h = pool_new(fx_tokens2, 2, 1, 64, 1000);

	(void)state;
	check_meta(h, "k256", 32, HSM_USAGE_ENCRYPT | HSM_USAGE_DECRYPT, 1);
	check_meta(h, "enc-only", 32, HSM_USAGE_ENCRYPT, 1);
	check_meta(h, "dec-only", 32, HSM_USAGE_DECRYPT, 1);
	check_meta(h, "neither", 32, 0, 1);
	check_meta(h, "wrapper", 32, HSM_USAGE_WRAP | HSM_USAGE_UNWRAP |
	    HSM_USAGE_SIGN | HSM_USAGE_VERIFY | HSM_USAGE_DERIVE, 1);
	check_meta(h, "k128", 16, HSM_USAGE_ENCRYPT | HSM_USAGE_DECRYPT, 1);
	check_meta(h, "expired", 32, HSM_USAGE_ENCRYPT | HSM_USAGE_DECRYPT, 0);
	check_meta(h, "future", 32, HSM_USAGE_ENCRYPT | HSM_USAGE_DECRYPT, 0);
	check_meta(h, "current", 32, HSM_USAGE_ENCRYPT | HSM_USAGE_DECRYPT, 1);
	/* SoftHSMv2 cannot read the dates of a private key: ENABLED */
	check_meta(h, "private-dated", 32, HSM_USAGE_ENCRYPT |
	    HSM_USAGE_DECRYPT, 1);
	hsm_free(h);
}

static void
test_two_calls_per_op(void **state)
{
	struct hsm *h = pool_new(fx_tokens2, 2, 2, 64, 1000);
	unsigned char ct[32], pt[32], iv[12], tag[16];
	unsigned long long total, ei, e, di, d;
	int i, t;

	(void)state;
	/* warm every session and the key cache of both tokens */
	for (i = 0; i < 8; i++)
		assert_int_equal(do_encrypt(h, "k256", i % 2, ct, iv, tag,
		    NULL), XERR_OK);
	total = fx_counter_total();
	ei = fx_counter("C_EncryptInit");
	e = fx_counter("C_Encrypt");
	for (i = 0; i < 10; i++)
		assert_int_equal(do_encrypt(h, "k256", -1, ct, iv, tag, NULL),
		    XERR_OK);
	assert_int_equal(fx_counter("C_EncryptInit") - ei, 10);
	assert_int_equal(fx_counter("C_Encrypt") - e, 10);
	assert_int_equal(fx_counter_total() - total, 20);

	di = fx_counter("C_DecryptInit");
	d = fx_counter("C_Decrypt");
	total = fx_counter_total();
	for (i = 0; i < 10; i++) {
		t = i % 2;
		assert_int_equal(do_decrypt(h, "k256", t, ct, iv, tag, pt, NULL),
		    XERR_OK);
	}
	assert_int_equal(fx_counter("C_DecryptInit") - di, 10);
	assert_int_equal(fx_counter("C_Decrypt") - d, 10);
	assert_int_equal(fx_counter_total() - total, 20);
	hsm_free(h);
}

/* An asynchronous job; t_done: when done() ran (0: not yet). */
struct ajob {
	struct hsm_job j;
	unsigned char out[32];
	uint64_t t_done;
};

/* Async completion bookkeeping. */
struct waiter {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int done;
	int ok;
	int err[XERR__MAX];
	pthread_t submitter;
	int on_submitter;
};

static struct waiter W = { PTHREAD_MUTEX_INITIALIZER,
    PTHREAD_COND_INITIALIZER, 0, 0, { 0 }, 0, 0 };

static void
waiter_reset(void)
{
	pthread_mutex_lock(&W.mu);
	W.done = W.ok = 0;
	memset(W.err, 0, sizeof(W.err));
	W.submitter = pthread_self();
	W.on_submitter = 0;
	pthread_mutex_unlock(&W.mu);
}

static void
waiter_done(struct hsm_job *j)
{
	pthread_mutex_lock(&W.mu);
	if (j->arg != NULL)
		((struct ajob *)j->arg)->t_done = util_now_us();
	W.done++;
	if (j->err == XERR_OK)
		W.ok++;
	W.err[j->err]++;
	if (pthread_equal(pthread_self(), W.submitter))
		W.on_submitter++;
	pthread_cond_broadcast(&W.cv);
	pthread_mutex_unlock(&W.mu);
}

static void
waiter_wait(int n)
{
	struct timespec ts;

	clock_gettime(CLOCK_REALTIME, &ts);
	ts.tv_sec += 10;
	pthread_mutex_lock(&W.mu);
	while (W.done < n)
		if (pthread_cond_timedwait(&W.cv, &W.mu, &ts) != 0)
			break;
	pthread_mutex_unlock(&W.mu);
	assert_int_equal(W.done, n);
	assert_int_equal(W.on_submitter, 0);
}


static void
ajob_init(struct ajob *a, const char *label)
{
	job_init(&a->j, HSM_OP_ENCRYPT, label, -1);
	a->t_done = 0;
	a->j.in = pt32;
	a->j.in_len = sizeof(pt32);
	a->j.out = a->out;
	a->j.done = waiter_done;
	a->j.arg = a;
}

static void
test_throttling(void **state)
{
	struct hsm *h;
	struct ajob a[4];
	int i;

	(void)state;
	h = pool_new(fx_tokens_b, 1, 1, 2, 5000);
	fx_control("latency 300000 C_Encrypt\n");
	waiter_reset();
	ajob_init(&a[0], "k256");
	assert_int_equal(hsm_submit(h, &a[0].j), XERR_OK);
	usleep(100000);              /* job 0 is now in the HSM */
	for (i = 1; i < 3; i++) {
		ajob_init(&a[i], "k256");
		assert_int_equal(hsm_submit(h, &a[i].j), XERR_OK);
	}
	ajob_init(&a[3], "k256");
	assert_int_equal(hsm_submit(h, &a[3].j), XERR_THROTTLING);
	waiter_wait(3);
	assert_int_equal(W.ok, 3);
	fx_control("");
	hsm_free(h);
}

static void
test_queue_timeout(void **state)
{
	struct hsm *h;
	struct ajob a[3];
	unsigned long long inits;
	uint64_t t0, dt;
	int i;

	(void)state;
	h = pool_new(fx_tokens_b, 1, 1, 16, 100);
	fx_control("latency 400000 C_Encrypt\n");
	inits = fx_counter("C_EncryptInit");
	waiter_reset();
	t0 = util_now_us();
	for (i = 0; i < 3; i++) {
		ajob_init(&a[i], "k256");
		assert_int_equal(hsm_submit(h, &a[i].j), XERR_OK);
		if (i == 0)
			usleep(20000);
	}
	/* jobs 1 and 2 are answered by the timeout path, not the HSM */
	waiter_wait(2);
	dt = util_now_us() - t0;
	assert_true(dt < 350000);
	assert_int_equal(W.err[XERR_DEPENDENCY_TIMEOUT], 2);
	assert_int_equal(a[1].j.err, XERR_DEPENDENCY_TIMEOUT);
	assert_int_equal(a[2].j.err, XERR_DEPENDENCY_TIMEOUT);
	assert_string_equal(a[1].j.errmsg,
	    "the request waited more than 100 ms for the HSM");
	waiter_wait(3);
	assert_int_equal(a[0].j.err, XERR_OK);
	assert_int_equal(fx_counter("C_EncryptInit") - inits, 1);
	fx_control("");
	hsm_free(h);
}

/*
 * One session hangs in C_Encrypt (1.5 s, once) while three are idle.  The
 * pool's wake-up rationing must not leave the jobs that come next queued
 * behind it: they complete while the stuck one is still in the HSM.  Two
 * jobs: too few for the queue-length rule to wake a worker by itself (two
 * jobs x a learnt ~20-80 us < 250 us), so this checks the waited-too-long
 * rule.  With hsm.timeout_ms 500, jobs left for an idle worker's own 1 s
 * wake-up would fail with DependencyTimeout.
 */
static void
test_stuck_session(void **state)
{
	struct hsm *h;
	struct hsm_job j;
	struct ajob a[3];
	unsigned char out[32];
	int i;

	(void)state;
	/* hsm.timeout_ms 500: a job left waiting until an idle worker's own
	 * 1 s wake-up would be answered DependencyTimeout instead */
	h = pool_new(fx_tokens_b, 1, 4, 64, 500);
	/* fast jobs first: the pool learns that a job takes ~20 us */
	for (i = 0; i < 40; i++) {
		job_init(&j, HSM_OP_ENCRYPT, "k256", -1);
		j.in = pt32;
		j.in_len = sizeof(pt32);
		j.out = out;
		assert_int_equal(hsm_run_sync(h, &j, 5000), XERR_OK);
	}
	fx_control("latency 1500000 C_Encrypt count=1\n");
	waiter_reset();
	ajob_init(&a[0], "k256");
	assert_int_equal(hsm_submit(h, &a[0].j), XERR_OK);
	usleep(100000);              /* job 0 is now stuck in the HSM */
	for (i = 1; i < 3; i++) {
		ajob_init(&a[i], "k256");
		assert_int_equal(hsm_submit(h, &a[i].j), XERR_OK);
	}
	waiter_wait(2);
	for (i = 1; i < 3; i++) {
		assert_true(a[i].t_done != 0);
		assert_int_equal(a[i].j.err, XERR_OK);
	}
	assert_true(a[0].t_done == 0);   /* still in the HSM */
	waiter_wait(3);
	assert_int_equal(a[0].j.err, XERR_OK);
	fx_control("");
	hsm_free(h);
}

/* After every test, pass or fail: no fault rule left for the next one. */
static int
clear_faults(void **state)
{
	(void)state;
	fx_control("");
	return 0;
}

static void
test_failover(void **state)
{
	struct hsm *h = pool_new(fx_tokens2, 2, 2, 256, 1000);
	unsigned char ct[32], iv[12], tag[16];
	struct hsm_token_info ti;
	static struct ajob a[100];
	struct hsm_job j;
	int i;

	(void)state;
	/* token A breaks: every request still succeeds through token B */
	fx_control("error CKR_DEVICE_ERROR all token=xks-a\n");
	/*
	 * At least 20 requests, and on until a worker of A has taken one and
	 * marked A failed (on a loaded machine B's workers may take the first
	 * ones before A's get the CPU): every one is served, by B.
	 */
	hsm_token_info(h, 0, &ti);
	for (i = 0; i < 20 || ti.healthy; i++) {
		assert_true(i < 2000);
		assert_int_equal(do_encrypt(h, "k256", -1, ct, iv, tag, &j),
		    XERR_OK);
		assert_int_equal(j.served_by, 1);
		hsm_token_info(h, 0, &ti);
	}
	assert_int_equal(ti.healthy, 0);
	hsm_token_info(h, 1, &ti);
	assert_int_equal(ti.healthy, 1);
	waiter_reset();
	for (i = 0; i < 100; i++) {
		ajob_init(&a[i], "k256");
		assert_int_equal(hsm_submit(h, &a[i].j), XERR_OK);
	}
	waiter_wait(100);
	assert_int_equal(W.ok, 100);

	/* only C_Encrypt fails on A (recovery succeeds): still no failure */
	fx_control("error CKR_DEVICE_ERROR C_Encrypt token=xks-a\n");
	/* A recovers in the background (every second): wait up to 10 s, so a
	 * loaded machine does not fail the test; healthy must come */
	for (i = 0; i < 100; i++) {
		usleep(100000);
		hsm_token_info(h, 0, &ti);
		if (ti.healthy)
			break;
	}
	assert_int_equal(ti.healthy, 1);
	waiter_reset();
	for (i = 0; i < 100; i++) {
		ajob_init(&a[i], "k256");
		assert_int_equal(hsm_submit(h, &a[i].j), XERR_OK);
	}
	waiter_wait(100);
	assert_int_equal(W.ok, 100);
	fx_control("");
	hsm_free(h);
}

static void
test_all_fail_and_recover(void **state)
{
	struct hsm *h = pool_new(fx_tokens2, 2, 2, 256, 200);
	unsigned char ct[32], iv[12], tag[16];
	struct hsm_job j;
	unsigned long long inits;
	uint64_t t0, dt;
	enum xerr e;
	int i, ok;

	(void)state;
	assert_int_equal(do_encrypt(h, "k256", -1, ct, iv, tag, NULL), XERR_OK);
	inits = fx_counter("C_Initialize");
	/* the whole HSM is down (the module itself still loads) */
	fx_control("error CKR_DEVICE_ERROR C_EncryptInit,C_Encrypt,"
	    "C_DecryptInit,C_Decrypt,C_OpenSession,C_GetSlotList,"
	    "C_GetTokenInfo,C_GetSessionInfo,C_Login,C_FindObjectsInit\n");
	for (i = 0; i < 10; i++) {
		t0 = util_now_us();
		e = do_encrypt(h, "k256", -1, ct, iv, tag, &j);
		dt = util_now_us() - t0;
		assert_true(e == XERR_INTERNAL || e == XERR_UNAVAILABLE ||
		    e == XERR_DEPENDENCY_TIMEOUT);
		assert_true(dt < 300000);
	}
	/* the token list is gone: the module is initialized again (polled
	 * up to 10 s so a loaded machine cannot fail the test) */
	for (i = 0; i < 100 && fx_counter("C_Initialize") <= inits; i++)
		usleep(100000);
	assert_true(fx_counter("C_Initialize") > inits);
	/* failures cleared: back within a few seconds, no restart */
	fx_control("");
	t0 = util_now_us();
	for (ok = 0; !ok && util_now_us() - t0 < 5000000;) {
		if (do_encrypt(h, "k256", -1, ct, iv, tag, NULL) == XERR_OK)
			ok = 1;
		else
			usleep(50000);
	}
	assert_true(ok);
	/* and then every request works, on both tokens, no KeyNotFound */
	for (i = 0; i < 100; i++) {
		struct hsm_token_info ta, tb;
		hsm_token_info(h, 0, &ta);
		hsm_token_info(h, 1, &tb);
		if (ta.healthy && tb.healthy)
			break;
		usleep(100000);
	}
	for (i = 0; i < 20; i++)
		assert_int_equal(do_encrypt(h, "k256", i % 2, ct, iv, tag,
		    NULL), XERR_OK);
	hsm_free(h);
}

static void
test_single_token_session_loss(void **state)
{
	struct hsm *h = pool_new(fx_tokens_b, 1, 1, 16, 1000);
	unsigned char ct[32], iv[12], tag[16];
	unsigned long long finds;

	(void)state;
	assert_int_equal(do_encrypt(h, "k256", -1, ct, iv, tag, NULL), XERR_OK);
	/* one session loss: reopened and retried at once on the one token */
	fx_control("error CKR_SESSION_HANDLE_INVALID C_EncryptInit count=1\n");
	assert_int_equal(do_encrypt(h, "k256", -1, ct, iv, tag, NULL), XERR_OK);
	/* a stale key handle: looked up again, retried */
	finds = fx_counter("C_FindObjectsInit");
	fx_control("error CKR_OBJECT_HANDLE_INVALID C_EncryptInit count=1\n");
	assert_int_equal(do_encrypt(h, "k256", -1, ct, iv, tag, NULL), XERR_OK);
	assert_int_equal(fx_counter("C_FindObjectsInit") - finds, 1);
	/* two session losses in a row: InternalException, then fine */
	fx_control("error CKR_DEVICE_ERROR C_EncryptInit count=2\n");
	assert_int_equal(do_encrypt(h, "k256", -1, ct, iv, tag, NULL),
	    XERR_INTERNAL);
	assert_int_equal(do_encrypt(h, "k256", 0, ct, iv, tag, NULL), XERR_OK);
	fx_control("");
	hsm_free(h);
}

static void
test_two_pools_same_module(void **state)
{
	struct hsm *h1 = pool_new(fx_tokens2, 2, 1, 16, 1000);
	struct hsm *h2 = pool_new(fx_tokens2, 2, 1, 16, 1000);
	unsigned char ct[32], pt[32], iv[12], tag[16];

	(void)state;
	assert_int_equal(do_encrypt(h1, "k256", -1, ct, iv, tag, NULL), XERR_OK);
	assert_int_equal(do_decrypt(h2, "k256", -1, ct, iv, tag, pt, NULL),
	    XERR_OK);
	hsm_free(h1);             /* the old pool of a reload goes away */
	assert_int_equal(do_encrypt(h2, "k256", 0, ct, iv, tag, NULL), XERR_OK);
	assert_int_equal(do_decrypt(h2, "k256", 1, ct, iv, tag, pt, NULL),
	    XERR_OK);
	assert_memory_equal(pt, pt32, sizeof(pt32));
	hsm_free(h2);
}

static void
test_hsm_iv_mode(void **state)
{
	struct cfg_hsm c;
	struct hsm *h = NULL;
	unsigned char ct[32], iv[12], tag[16];
	struct hsm_job j;
	char err[256];

	(void)state;
	pool_conf(&c, fx_tokens_b, 1, 1, 16, 1000);
	c.iv = CFG_IV_HSM;
	assert_int_equal(hsm_new(&c, &h, err, sizeof(err)), 0);
	/* SoftHSMv2 does not generate GCM IVs: refused, never a zero IV */
	assert_int_equal(do_encrypt(h, "k256", -1, ct, iv, tag, &j),
	    XERR_INTERNAL);
	assert_string_equal(j.errmsg,
	    "the HSM did not generate an IV (hsm.iv is \"hsm\")");
	hsm_free(h);
}

static void
test_new_errors(void **state)
{
	char *bad[] = { "pkcs11:token=nope" };
	char *both[] = { "pkcs11:token=xks-a", "pkcs11:token=xks-a" };
	char *garbage[] = { "http://x" };
	struct cfg_hsm c;
	struct hsm *h = NULL;
	char err[256];

	(void)state;
	pool_conf(&c, bad, 1, 1, 16, 1000);
	assert_int_equal(hsm_new(&c, &h, err, sizeof(err)), -1);
	assert_null(h);
	assert_string_equal(err, "hsm.tokens[0]: no token matches "
	    "pkcs11:token=nope");
	pool_conf(&c, both, 2, 1, 16, 1000);
	assert_int_equal(hsm_new(&c, &h, err, sizeof(err)), -1);
	assert_string_equal(err, "hsm.tokens[1]: pkcs11:token=xks-a is the "
	    "same token as hsm.tokens[0]");
	pool_conf(&c, garbage, 1, 1, 16, 1000);
	assert_int_equal(hsm_new(&c, &h, err, sizeof(err)), -1);
	assert_int_equal(strncmp(err, "hsm.tokens[0]: http://x: ", 25), 0);

	/* the PIN from the environment; a wrong one is refused */
	pool_conf(&c, fx_tokens_b, 1, 1, 16, 1000);
	c.pin_file = NULL;
	c.pin_env = "XKS_TEST_PIN";
	unsetenv("XKS_TEST_PIN");
	assert_int_equal(hsm_new(&c, &h, err, sizeof(err)), -1);
	assert_string_equal(err, "hsm.tokens[0]: hsm.pin_env: environment "
	    "variable XKS_TEST_PIN is not set");
	setenv("XKS_TEST_PIN", "9999", 1);
	assert_int_equal(hsm_new(&c, &h, err, sizeof(err)), -1);
	assert_string_equal(err, "hsm.tokens[0]: C_Login on token xks-b: "
	    "CKR_PIN_INCORRECT");
	setenv("XKS_TEST_PIN", FX_PIN, 1);
	assert_int_equal(hsm_new(&c, &h, err, sizeof(err)), 0);
	hsm_free(h);
	hsm_free(NULL);
}

static void
test_module_name(void **state)
{
	struct cfg_hsm c;
	struct hsm *h = NULL;
	unsigned char ct[32], pt[32], iv[12], tag[16];
	char err[256];

	(void)state;
	if (access("/usr/share/p11-kit/modules/softhsm2.module", R_OK) != 0)
		skip();
	pool_conf(&c, fx_tokens2, 2, 1, 16, 1000);
	c.module = "softhsm2";      /* resolved through p11-kit's config */
	assert_int_equal(hsm_new(&c, &h, err, sizeof(err)), 0);
	assert_int_equal(do_encrypt(h, "k256", 0, ct, iv, tag, NULL), XERR_OK);
	assert_int_equal(do_decrypt(h, "k256", 1, ct, iv, tag, pt, NULL),
	    XERR_OK);
	hsm_free(h);
	c.module = "no-such-module";
	assert_int_equal(hsm_new(&c, &h, err, sizeof(err)), -1);
	assert_string_equal(err, "hsm.module: no p11-kit module named "
	    "no-such-module");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_roundtrip_cluster, clear_faults),
		cmocka_unit_test_teardown(test_wrong_tag, clear_faults),
		cmocka_unit_test_teardown(test_usage_and_labels, clear_faults),
		cmocka_unit_test_teardown(test_metadata, clear_faults),
		cmocka_unit_test_teardown(test_two_calls_per_op, clear_faults),
		cmocka_unit_test_teardown(test_throttling, clear_faults),
		cmocka_unit_test_teardown(test_queue_timeout, clear_faults),
		cmocka_unit_test_teardown(test_stuck_session, clear_faults),
		cmocka_unit_test_teardown(test_failover, clear_faults),
		cmocka_unit_test_teardown(test_all_fail_and_recover, clear_faults),
		cmocka_unit_test_teardown(test_single_token_session_loss, clear_faults),
		cmocka_unit_test_teardown(test_two_pools_same_module, clear_faults),
		cmocka_unit_test_teardown(test_hsm_iv_mode, clear_faults),
		cmocka_unit_test_teardown(test_new_errors, clear_faults),
		cmocka_unit_test_teardown(test_module_name, clear_faults),
	};
	int r;

	if ((r = fx_begin()) != 0)
		return r;
	r = cmocka_run_group_tests(tests, NULL, NULL);
	fx_teardown();
	return r;
}
