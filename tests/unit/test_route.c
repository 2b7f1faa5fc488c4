/*
 * test_route.c -- unit tests for request routing (route.c).
 *
 * The struct cfg is built by hand: routing only reads keystores[].paths.
 */
#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "cfg.h"
#include "route.h"
#include "xerr.h"

static char path_a[] = "/a/kms/xks/v1";
static char path_b[] = "/b/kms/xks/v1";
static char path_prefix[] = "/prefix/kms/xks/v1";
static char *ks0_paths[] = { path_a, path_b };
static char *ks1_paths[] = { path_prefix };

static struct cfg_keystore keystores[2];
static struct cfg test_cfg;

static int
setup_cfg(void **state)
{
	memset(keystores, 0, sizeof(keystores));
	keystores[0].paths = ks0_paths;
	keystores[0].npaths = 2;
	keystores[1].paths = ks1_paths;
	keystores[1].npaths = 1;
	memset(&test_cfg, 0, sizeof(test_cfg));
	test_cfg.keystores = keystores;
	test_cfg.nkeystores = 2;
	return 0;
}

static void
expect_route(const struct cfg *cfg, const char *path, size_t ks_index,
    const char *base, enum xks_op op, const char *key_id)
{
	struct route r;
	enum xerr e;

	memset(&r, 0xa5, sizeof(r));
	e = route_match(cfg, path, &r);
	if (e != XERR_OK)
		print_error("path \"%s\" did not match\n", path);
	assert_int_equal(e, XERR_OK);
	assert_ptr_equal(r.keystore, &cfg->keystores[ks_index]);
	assert_int_equal(r.keystore_index, ks_index);
	assert_non_null(r.base);
	assert_string_equal(r.base, base);
	assert_int_equal(r.op, op);
	assert_string_equal(r.key_id, key_id);
}

static void
expect_404(const struct cfg *cfg, const char *path)
{
	struct route r;
	static const struct route zero;
	enum xerr e;

	/* stale data in out must not survive a failure */
	memset(&r, 0xa5, sizeof(r));
	e = route_match(cfg, path, &r);
	if (e != XERR_INVALID_URI_PATH)
		print_error("path \"%s\" was not refused\n", path);
	assert_int_equal(e, XERR_INVALID_URI_PATH);
	assert_null(r.keystore);
	assert_int_equal(r.keystore_index, 0);
	assert_null(r.base);
	assert_int_equal(r.op, XKS_OP_NONE);
	assert_string_equal(r.key_id, "");
	assert_memory_equal(&r, &zero, sizeof(r));
}

static void
test_all_ops_all_paths(void **state)
{
	static const struct {
		const char *base;
		size_t ks;
	} bases[] = {
		{ "/a/kms/xks/v1", 0 },
		{ "/b/kms/xks/v1", 0 },
		{ "/prefix/kms/xks/v1", 1 },
	};
	char path[512];
	size_t i;

	for (i = 0; i < sizeof(bases) / sizeof(bases[0]); i++) {
		snprintf(path, sizeof(path), "%s/health", bases[i].base);
		expect_route(&test_cfg, path, bases[i].ks, bases[i].base,
		    XKS_OP_HEALTH, "");
		snprintf(path, sizeof(path), "%s/keys/key-1/metadata",
		    bases[i].base);
		expect_route(&test_cfg, path, bases[i].ks, bases[i].base,
		    XKS_OP_METADATA, "key-1");
		snprintf(path, sizeof(path), "%s/keys/Key_2.v3/encrypt",
		    bases[i].base);
		expect_route(&test_cfg, path, bases[i].ks, bases[i].base,
		    XKS_OP_ENCRYPT, "Key_2.v3");
		snprintf(path, sizeof(path), "%s/keys/k/decrypt", bases[i].base);
		expect_route(&test_cfg, path, bases[i].ks, bases[i].base,
		    XKS_OP_DECRYPT, "k");
	}
}

static void
test_base_is_config_pointer(void **state)
{
	struct route r;

	assert_int_equal(route_match(&test_cfg, "/b/kms/xks/v1/health", &r),
	    XERR_OK);
	assert_ptr_equal(r.base, path_b);
	assert_int_equal(route_match(&test_cfg,
	    "/prefix/kms/xks/v1/keys/x/encrypt", &r), XERR_OK);
	assert_ptr_equal(r.base, path_prefix);
	assert_ptr_equal(r.keystore, &keystores[1]);
}

static void
test_key_id_charset_and_length(void **state)
{
	char id[200], path[400];

	expect_route(&test_cfg,
	    "/a/kms/xks/v1/keys/ABCXYZabcxyz0189-._/encrypt", 0,
	    "/a/kms/xks/v1", XKS_OP_ENCRYPT, "ABCXYZabcxyz0189-._");
	expect_route(&test_cfg, "/a/kms/xks/v1/keys/0/decrypt", 0,
	    "/a/kms/xks/v1", XKS_OP_DECRYPT, "0");

	/* 128 characters: the most */
	memset(id, 'k', 128);
	id[128] = '\0';
	snprintf(path, sizeof(path), "/a/kms/xks/v1/keys/%s/metadata", id);
	expect_route(&test_cfg, path, 0, "/a/kms/xks/v1", XKS_OP_METADATA, id);
	snprintf(path, sizeof(path), "/prefix/kms/xks/v1/keys/%s/encrypt", id);
	expect_route(&test_cfg, path, 1, "/prefix/kms/xks/v1", XKS_OP_ENCRYPT, id);

	/* 129: refused, and nothing overflows key_id[129] */
	memset(id, 'k', 129);
	id[129] = '\0';
	snprintf(path, sizeof(path), "/a/kms/xks/v1/keys/%s/metadata", id);
	expect_404(&test_cfg, path);
	memset(id, 'k', 190);
	id[190] = '\0';
	snprintf(path, sizeof(path), "/a/kms/xks/v1/keys/%s/encrypt", id);
	expect_404(&test_cfg, path);

	/* characters outside A-Za-z0-9-._ */
	expect_404(&test_cfg, "/a/kms/xks/v1/keys/k%41/encrypt");
	expect_404(&test_cfg, "/a/kms/xks/v1/keys/%6b/encrypt");
	expect_404(&test_cfg, "/a/kms/xks/v1/keys/a/b/encrypt");
	expect_404(&test_cfg, "/a/kms/xks/v1/keys/a b/encrypt");
	expect_404(&test_cfg, "/a/kms/xks/v1/keys/a~b/encrypt");
	expect_404(&test_cfg, "/a/kms/xks/v1/keys/a+b/encrypt");
	expect_404(&test_cfg, "/a/kms/xks/v1/keys/a:b/encrypt");
	expect_404(&test_cfg, "/a/kms/xks/v1/keys/a\tb/encrypt");
	expect_404(&test_cfg, "/a/kms/xks/v1/keys/caf\xc3\xa9/encrypt");
	expect_404(&test_cfg, "/a/kms/xks/v1/keys/a?b/encrypt");
	expect_404(&test_cfg, "/a/kms/xks/v1/keys/*/encrypt");
}

static void
test_invalid_paths(void **state)
{
	static const char *const bad[] = {
		"",
		"/",
		"/health",
		"/kms/xks/v1/health",
		"/c/kms/xks/v1/health",
		"/A/kms/xks/v1/health",
		"//a/kms/xks/v1/health",
		"a/kms/xks/v1/health",
		"/prefix/kms/xks/v1/../../a/kms/xks/v1/health",
		"/a/kms/xks/v1",
		"/a/kms/xks/v1/",
		"/a/kms/xks/v1//health",
		"/a/kms/xks/v1/./health",
		"/a/kms/xks/v1/health/",
		"/a/kms/xks/v1/healthz",
		"/a/kms/xks/v1/health?x=1",
		"/a/kms/xks/v1/Health",
		"/a/kms/xks/v1/HEALTH",
		"/a/kms/xks/v1x/health",
		"/a/kms/xks/v1x/keys/k/encrypt",
		"/a/kms/xks/v1-/health",
		"/prefix/kms/xks/v12/health",
		"/a/kms/xks/v1/keys",
		"/a/kms/xks/v1/keys/",
		"/a/kms/xks/v1/keys/k",
		"/a/kms/xks/v1/keys/k/",
		"/a/kms/xks/v1/keys//encrypt",
		"/a/kms/xks/v1/keys/k/sign",
		"/a/kms/xks/v1/keys/k/health",
		"/a/kms/xks/v1/keys/k/Encrypt",
		"/a/kms/xks/v1/keys/k/encrypt/",
		"/a/kms/xks/v1/keys/k/encryptx",
		"/a/kms/xks/v1/keys/k/encrypt/decrypt",
		"/a/kms/xks/v1/keys/k/%65ncrypt",
		"/a/kms/xks/v1/keys/k/metadata?x",
		"/a/kms/xks/v1/key/k/encrypt",
		"/a/kms/xks/v1/keys/k//encrypt",
		"/a/kms/xks/v1/health/keys/k/encrypt",
		"/a/kms/xks/v1/%68ealth",
		"/prefix/kms/xks/v1",
		"/prefix/kms/xks/v1/keys/k/sign",
		"/a/kms/xks/v1/health\t",
		"/a/kms/xks/v1/health ",
	};
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		expect_404(&test_cfg, bad[i]);
}

/* With no key store at all, everything is 404. */
static void
test_empty_cfg(void **state)
{
	struct cfg empty;

	memset(&empty, 0, sizeof(empty));
	expect_404(&empty, "/a/kms/xks/v1/health");
	expect_404(&empty, "/");
}

/*
 * One base can be a string prefix of another valid base; a failed match of
 * the rest on the shorter base must fall through to the longer one.
 */
static void
test_nested_bases(void **state)
{
	static char p_short[] = "/kms/xks/v1";
	static char p_long[] = "/kms/xks/v1/keys/k/kms/xks/v1";
	static char *s_paths[] = { p_short };
	static char *l_paths[] = { p_long };
	struct cfg_keystore ks[2];
	struct cfg c;

	memset(ks, 0, sizeof(ks));
	ks[0].paths = s_paths;
	ks[0].npaths = 1;
	ks[1].paths = l_paths;
	ks[1].npaths = 1;
	memset(&c, 0, sizeof(c));
	c.keystores = ks;
	c.nkeystores = 2;

	expect_route(&c, "/kms/xks/v1/health", 0, p_short, XKS_OP_HEALTH, "");
	expect_route(&c, "/kms/xks/v1/keys/k/encrypt", 0, p_short,
	    XKS_OP_ENCRYPT, "k");
	expect_route(&c, "/kms/xks/v1/keys/k/kms/xks/v1/health", 1, p_long,
	    XKS_OP_HEALTH, "");
	expect_route(&c, "/kms/xks/v1/keys/k/kms/xks/v1/keys/j/decrypt", 1,
	    p_long, XKS_OP_DECRYPT, "j");
	expect_404(&c, "/kms/xks/v1/keys/k/kms/xks/v1");
	expect_404(&c, "/kms/xks/v1/keys/k/kms/xks/v1/");
}

static void
test_op_name(void **state)
{
	assert_string_equal(route_op_name(XKS_OP_HEALTH), "GetHealthStatus");
	assert_string_equal(route_op_name(XKS_OP_METADATA), "GetKeyMetadata");
	assert_string_equal(route_op_name(XKS_OP_ENCRYPT), "Encrypt");
	assert_string_equal(route_op_name(XKS_OP_DECRYPT), "Decrypt");
	assert_string_equal(route_op_name(XKS_OP_NONE), "-");
	assert_string_equal(route_op_name((enum xks_op)99), "-");
	assert_string_equal(route_op_name((enum xks_op)-1), "-");
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_all_ops_all_paths, setup_cfg),
		cmocka_unit_test_setup(test_base_is_config_pointer, setup_cfg),
		cmocka_unit_test_setup(test_key_id_charset_and_length, setup_cfg),
		cmocka_unit_test_setup(test_invalid_paths, setup_cfg),
		cmocka_unit_test(test_empty_cfg),
		cmocka_unit_test(test_nested_bases),
		cmocka_unit_test(test_op_name),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
