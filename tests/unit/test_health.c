/*
 * test_health.c -- the background deep check against a SoftHSMv2 cluster
 * of two tokens, through the xks-shim.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "cfg.h"
#include "health.h"
#include "hsm.h"
#include "log.h"
#include "util.h"

#include "hsm-fixture.h"

static char *tokens2[] = { "pkcs11:token=xks-a", "pkcs11:token=xks-b" };
static char pin_path[300];

static void
conf_fill(struct cfg *c, const char *health_key, int degraded_ms)
{
	memset(c, 0, sizeof(*c));
	c->hsm.module = fx_shim;
	c->hsm.tokens = tokens2;
	c->hsm.ntokens = 2;
	snprintf(pin_path, sizeof(pin_path), "%s/pin", fx_dir);
	c->hsm.pin_file = pin_path;
	c->hsm.sessions_per_token = 1;
	c->hsm.health_key = (char *)health_key;
	c->hsm.iv = CFG_IV_PROXY;
	c->hsm.timeout_ms = 1000;
	c->hsm.queue_size = 64;
	c->health.interval_seconds = 1;
	c->health.degraded_ms = degraded_ms;
}

static struct hsm *
pool(const struct cfg *c)
{
	struct hsm *h = NULL;
	char err[256];

	if (hsm_new(&c->hsm, &h, err, sizeof(err)) != 0)
		fail_msg("hsm_new: %s", err);
	return h;
}

static void
expect(struct health *hl, enum health_status a, enum health_status b)
{
	struct health_entry e[HEALTH_MAX_ENTRIES];

	assert_int_equal(health_get(hl, e, HEALTH_MAX_ENTRIES), 2);
	assert_string_equal(health_status_name(e[0].status),
	    health_status_name(a));
	assert_string_equal(health_status_name(e[1].status),
	    health_status_name(b));
	assert_int_equal(strncmp(e[0].id, "xks-a/", 6), 0);
	assert_int_equal(strncmp(e[1].id, "xks-b/", 6), 0);
	assert_non_null(strstr(e[0].model, "SoftHSM"));
}

/*
 * Wait (at most 10 s, so a loaded machine cannot fail the test) until the
 * two entries read a and b, then check them whole.  The interval is 1 s, so
 * on an idle machine this returns within about two intervals.
 */
static void
wait_expect(struct health *hl, enum health_status a, enum health_status b)
{
	struct health_entry e[HEALTH_MAX_ENTRIES];
	int i;

	for (i = 0; i < 100; i++) {
		if (health_get(hl, e, HEALTH_MAX_ENTRIES) == 2 &&
		    e[0].status == a && e[1].status == b)
			break;
		usleep(100000);
	}
	expect(hl, a, b);
}

static void
test_active_then_failing(void **state)
{
	struct health_entry e[1];
	struct cfg c;
	struct hsm *h;
	struct health *hl;
	uint64_t t0;

	(void)state;
	conf_fill(&c, "xks-health", 1000);
	h = pool(&c);
	hl = health_new(h, &c);
	assert_non_null(hl);
	expect(hl, HEALTH_ACTIVE, HEALTH_ACTIVE);
	assert_int_equal(health_serving(hl), 1);
	assert_int_equal(health_get(hl, e, 1), 1);

	/* token A fails: UNAVAILABLE at the next interval, B still ACTIVE */
	fx_control("error CKR_DEVICE_ERROR all token=xks-a\n");
	wait_expect(hl, HEALTH_UNAVAILABLE, HEALTH_ACTIVE);
	assert_int_equal(health_serving(hl), 1);

	/* both fail: not serving */
	fx_control("error CKR_DEVICE_ERROR crypto\n");
	wait_expect(hl, HEALTH_UNAVAILABLE, HEALTH_UNAVAILABLE);
	assert_int_equal(health_serving(hl), 0);

	/* cleared: back (ACTIVE, or DEGRADED while a token recovers) */
	fx_control("");
	wait_expect(hl, HEALTH_ACTIVE, HEALTH_ACTIVE);

	/* health_free is prompt: no waiting for the interval */
	t0 = util_now_us();
	health_free(hl);
	assert_true(util_now_us() - t0 < 500000);
	hsm_free(h);
	health_free(NULL);
}

static void
test_missing_key_and_degraded(void **state)
{
	struct cfg c;
	struct hsm *h;
	struct health *hl;

	(void)state;
	conf_fill(&c, "no-such-canary", 1000);
	h = pool(&c);
	hl = health_new(h, &c);
	assert_non_null(hl);
	expect(hl, HEALTH_UNAVAILABLE, HEALTH_UNAVAILABLE);
	assert_int_equal(health_serving(hl), 0);
	health_free(hl);

	/* a slow HSM: the round trip takes longer than degraded_ms */
	conf_fill(&c, "xks-health", 50);
	fx_control("latency 40000 C_Encrypt,C_Decrypt\n");
	hl = health_new(h, &c);
	assert_non_null(hl);
	expect(hl, HEALTH_DEGRADED, HEALTH_DEGRADED);
	assert_int_equal(health_serving(hl), 1);
	fx_control("");
	health_free(hl);
	hsm_free(h);
	assert_string_equal(health_status_name(HEALTH_ACTIVE), "ACTIVE");
	assert_string_equal(health_status_name(HEALTH_DEGRADED), "DEGRADED");
	assert_string_equal(health_status_name(HEALTH_UNAVAILABLE),
	    "UNAVAILABLE");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_active_then_failing),
		cmocka_unit_test(test_missing_key_and_degraded),
	};
	int r;

	if ((r = fx_begin()) != 0)
		return r;
	r = cmocka_run_group_tests(tests, NULL, NULL);
	fx_teardown();
	return r;
}
