#include "config.h"

#include <fcntl.h>
#include <ftw.h>
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cmocka.h>

#include "cfg.h"
#include "log.h"
#include "util.h"

#define NAME "t.conf"

/* 43 characters: the shortest valid secret. */
#define SECRET1 "abcdefghijABCDEFGHIJ0123456789+/abcdefghij="
#define AKID1 "AAAAAAAAAAAAAAAAAAAA"
#define AKID2 "BBBBBBBBBBBBBBBBBBBB2345"

#define L_OK "\"listen\": [{\"address\": \"127.0.0.1\", \"port\": 8443}]"
#define T_OK "\"tls\": {\"certificates\": [{\"certificate_file\": \"/c.pem\", " \
	"\"private_key_file\": \"/k.pem\"}]}"
#define H_OK "\"hsm\": {\"module\": \"/m.so\", \"tokens\": [\"pkcs11:token=a\"], " \
	"\"pin_env\": \"XKS_PIN\"}"
#define KS_PATHS "\"paths\": [\"/a/kms/xks/v1\"]"
#define KS_CREDS "\"credentials\": [{\"access_key_id\": \"" AKID1 "\", " \
	"\"secret_access_key\": \"" SECRET1 "\"}]"
#define KS_KEYS "\"keys\": [\"*\"]"
#define K_OK "\"keystores\": [{" KS_PATHS ", " KS_CREDS ", " KS_KEYS "}]"
/* a key store with one credential c (an object's members) */
#define K_CRED(c) "\"keystores\": [{" KS_PATHS ", \"credentials\": [{" c "}], " \
	KS_KEYS "}]"
#define K_ONE(m) "\"keystores\": [{" m "}]"

static char tmpdir[256];

/* ---- helpers ---- */

/*
 * A config from five parts: listen, tls, hsm, keystores, extra top-level
 * members.  NULL: the valid default part; "": the part left out.
 */
static char *
build(const char *l, const char *t, const char *h, const char *k, const char *x)
{
	const char *parts[5] = { l ? l : L_OK, t ? t : T_OK, h ? h : H_OK,
	    k ? k : K_OK, x ? x : "" };
	size_t i, n = 8;
	char *s;
	int first = 1;

	for (i = 0; i < 5; i++)
		n += strlen(parts[i]) + 3;
	s = malloc(n);
	assert_non_null(s);
	strcpy(s, "{\n");
	for (i = 0; i < 5; i++) {
		if (parts[i][0] == '\0')
			continue;
		if (!first)
			strcat(s, ",\n");
		strcat(s, parts[i]);
		first = 0;
	}
	strcat(s, "\n}\n");
	return s;
}

static struct cfg *
load_ok(const char *text)
{
	struct cfg *cfg = NULL;
	char err[1024];

	if (cfg_load_string(NAME, text, &cfg, err, sizeof(err)) != 0) {
		print_error("unexpected error: %s\nconfig:\n%s\n", err, text);
		fail();
	}
	assert_non_null(cfg);
	return cfg;
}

/* Returns 0 when text fails with exactly `expect`. */
static int
check_err(const char *text, const char *expect)
{
	struct cfg *cfg = (struct cfg *)1;
	char err[1024];
	int r;

	r = cfg_load_string(NAME, text, &cfg, err, sizeof(err));
	if (r != -1 || cfg != NULL) {
		print_error("loaded, expected: %s\nconfig:\n%s\n", expect, text);
		cfg_free(r == 0 ? cfg : NULL);
		return 1;
	}
	if (strcmp(err, expect) != 0) {
		print_error("got:      %s\nexpected: %s\n", err, expect);
		return 1;
	}
	return 0;
}

static void
expect_err(const char *text, const char *expect)
{
	assert_int_equal(check_err(text, expect), 0);
}

struct ecase {
	char slot;              /* 'L', 'T', 'H', 'K' replace a part; 'X' adds */
	const char *part;
	const char *expect;     /* without the NAME ": " prefix */
};

static void
run_cases(const struct ecase *cs, size_t n)
{
	char expect[1024];
	size_t i;
	int bad = 0;
	char *text;

	for (i = 0; i < n; i++) {
		const struct ecase *e = &cs[i];
		text = build(e->slot == 'L' ? e->part : NULL,
		    e->slot == 'T' ? e->part : NULL,
		    e->slot == 'H' ? e->part : NULL,
		    e->slot == 'K' ? e->part : NULL,
		    e->slot == 'X' ? e->part : NULL);
		snprintf(expect, sizeof(expect), NAME ": %s", e->expect);
		if (check_err(text, expect) != 0) {
			print_error("  (case %zu)\n", i);
			bad++;
		}
		free(text);
	}
	assert_int_equal(bad, 0);
}

#define RUN(cs) run_cases(cs, sizeof(cs) / sizeof(cs[0]))

static void
write_file(const char *path, const char *data, mode_t mode)
{
	int fd;

	unlink(path);
	fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, strlen(data)), (ssize_t)strlen(data));
	assert_int_equal(fchmod(fd, mode), 0);
	close(fd);
}

static char *
tpath(const char *name)
{
	static char buf[4][512];
	static int n;
	char *p = buf[n++ & 3];

	snprintf(p, sizeof(buf[0]), "%s/%s", tmpdir, name);
	return p;
}

/* stderr capture, for the log_warn() paths */
static int cap_saved = -1, cap_fd = -1;

static void
cap_start(void)
{
	fflush(stderr);
	cap_fd = open(tpath("stderr.txt"), O_RDWR | O_CREAT | O_TRUNC, 0600);
	assert_true(cap_fd >= 0);
	cap_saved = dup(STDERR_FILENO);
	assert_true(cap_saved >= 0);
	assert_true(dup2(cap_fd, STDERR_FILENO) >= 0);
}

static char *
cap_stop(void)
{
	static char buf[8192];
	ssize_t n;

	dup2(cap_saved, STDERR_FILENO);
	close(cap_saved);
	lseek(cap_fd, 0, SEEK_SET);
	n = read(cap_fd, buf, sizeof(buf) - 1);
	close(cap_fd);
	buf[n > 0 ? n : 0] = '\0';
	return buf;
}

static int
rm_cb(const char *p, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st; (void)flag; (void)ftw;
	return remove(p);
}

static int
group_setup(void **state)
{
	strcpy(tmpdir, "/tmp/test_cfg.XXXXXX");
	if (mkdtemp(tmpdir) == NULL)
		return -1;
	return 0;
}

static int
group_teardown(void **state)
{
	return nftw(tmpdir, rm_cb, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---- tests ---- */

static void
test_minimal_defaults(void **state)
{
	char *text = build(NULL, NULL, NULL, NULL, NULL);
	struct cfg *cfg = load_ok(text);
	const struct cfg_keystore *ks;

	assert_string_equal(cfg->file, NAME);
	assert_int_equal(cfg->nlisten, 1);
	assert_string_equal(cfg->listen[0].address, "127.0.0.1");
	assert_int_equal(cfg->listen[0].port, 8443);
	assert_int_equal(cfg->worker_threads, 0);
	assert_int_equal(cfg->tls.ncertificates, 1);
	assert_string_equal(cfg->tls.certificates[0].certificate_file, "/c.pem");
	assert_string_equal(cfg->tls.certificates[0].private_key_file, "/k.pem");
	assert_null(cfg->tls.client_ca_file);
	assert_null(cfg->tls.client_subjects);
	assert_int_equal(cfg->tls.nclient_subjects, 0);
	assert_int_equal(cfg->health_listen.enabled, 0);
	assert_null(cfg->health_listen.address);
	assert_null(cfg->health_listen.path);
	assert_string_equal(cfg->hsm.module, "/m.so");
	assert_int_equal(cfg->hsm.ntokens, 1);
	assert_string_equal(cfg->hsm.tokens[0], "pkcs11:token=a");
	assert_null(cfg->hsm.pin_file);
	assert_string_equal(cfg->hsm.pin_env, "XKS_PIN");
	assert_int_equal(cfg->hsm.sessions_per_token, 8);
	assert_string_equal(cfg->hsm.health_key, "xks-health");
	assert_int_equal(cfg->hsm.iv, CFG_IV_PROXY);
	assert_int_equal(cfg->hsm.timeout_ms, 200);
	assert_int_equal(cfg->hsm.queue_size, 4096);
	assert_int_equal(cfg->health.interval_seconds, 30);
	assert_int_equal(cfg->health.fleet_size, 1);
	assert_string_equal(cfg->health.proxy_vendor, "xksproxy");
	assert_string_equal(cfg->health.proxy_model, "xksproxy " PACKAGE_VERSION);
	assert_string_equal(cfg->health.ekm_vendor, "PKCS#11 HSM");
	assert_int_equal(cfg->health.degraded_ms, 100);
	assert_int_equal(cfg->nkeystores, 1);
	ks = &cfg->keystores[0];
	assert_int_equal(ks->npaths, 1);
	assert_string_equal(ks->paths[0], "/a/kms/xks/v1");
	assert_int_equal(ks->ncredentials, 1);
	assert_string_equal(ks->credentials[0].access_key_id, AKID1);
	assert_int_equal(ks->credentials[0].secret_len, strlen(SECRET1));
	assert_memory_equal(ks->credentials[0].secret, SECRET1, strlen(SECRET1));
	assert_null(ks->credentials[0].secret_file);
	assert_int_equal(ks->credentials[0].not_after, 0);
	assert_int_equal(ks->all_keys, 1);
	assert_null(ks->keys);
	assert_int_equal(ks->nkeys, 0);
	assert_null(ks->regions);
	assert_int_equal(ks->nregions, 0);
	assert_true(cfg_keystore_has_key(ks, "anything"));
	assert_int_equal(cfg->limits.max_body_bytes, 65536);
	assert_int_equal(cfg->limits.max_header_bytes, 16384);
	assert_int_equal(cfg->limits.header_timeout_ms, 5000);
	assert_int_equal(cfg->limits.idle_timeout_ms, 60000);
	assert_int_equal(cfg->limits.max_connections, 10000);
	assert_int_equal(cfg->limits.max_connections_per_address, 0);
	assert_int_equal(cfg->limits.max_plaintext_bytes, 4300);
	assert_int_equal(cfg->limits.max_aad_bytes, 8192);
	assert_int_equal(cfg->sigv4.max_clock_skew_seconds, 300);
	assert_int_equal(cfg->log.level, LOG_LVL_INFO);
	assert_int_equal(cfg->log.format, LOG_FMT_TEXT);
	cfg_free(cfg);
	free(text);
	cfg_free(NULL);
}

static void
test_all_values(void **state)
{
	char *text = build(
	    "\"listen\": [{\"address\": \"::1\", \"port\": 1}, "
	    "{\"address\": \"localhost\", \"port\": 65535}]",
	    "\"tls\": {\"certificates\": [{\"certificate_file\": \"/a.pem\", "
	    "\"private_key_file\": \"/a.key\"}, {\"certificate_file\": \"/b.pem\", "
	    "\"private_key_file\": \"/b.key\"}], \"client_ca_file\": \"/ca.pem\", "
	    "\"client_subjects\": [\"*.kms.eu-west-1.amazonaws.com\", \"*\", \"a.*\", \"x y\"]}",
	    "\"hsm\": {\"module\": \"softhsm2\", \"tokens\": [\"pkcs11:token=a\", "
	    "\"pkcs11:model=M;manufacturer=X;serial=1;token=b\"], \"pin_env\": \"P_1\", "
	    "\"sessions_per_token\": 256, \"health_key\": \"canary\", \"iv\": \"hsm\", "
	    "\"timeout_ms\": 60000, \"queue_size\": 1000000}",
	    "\"keystores\": [{\"paths\": [\"/kms/xks/v1\", \"/x-Y_9/kms/xks/v1\"], "
	    "\"credentials\": [{\"access_key_id\": \"" AKID1 "\", \"secret_access_key\": \"" SECRET1 "\", "
	    "\"not_after\": \"2030-01-01T00:00:00Z\"}, {\"access_key_id\": \"" AKID2 "\", "
	    "\"secret_access_key\": \"" SECRET1 "AAAAAAAAAAAAAAAAAAAA=\", \"not_after\": \"2024-02-29T12:34:56Z\"}], "
	    "\"keys\": [\"k1\", \"K-2._x\"], \"regions\": [\"eu-west-1\", \"us-east-2\"]}, "
	    "{\"paths\": [\"/b/kms/xks/v1\"], \"credentials\": [{\"access_key_id\": \"" AKID1 "\", "
	    "\"secret_access_key\": \"" SECRET1 "\"}], \"keys\": [\"k1\"], \"regions\": []}]",
	    "\"worker_threads\": 256, "
	    "\"health_listen\": {\"address\": \"0.0.0.0\", \"port\": 8080}, "
	    "\"health\": {\"interval_seconds\": 3600, \"fleet_size\": 1000, \"proxy_vendor\": \"V\", "
	    "\"proxy_model\": \"M\", \"ekm_vendor\": \"E\", \"degraded_ms\": 60000}, "
	    "\"limits\": {\"max_body_bytes\": 16777216, \"max_header_bytes\": 1024, "
	    "\"header_timeout_ms\": 100, \"idle_timeout_ms\": 3600000, \"max_connections\": 1, "
	    "\"max_connections_per_address\": 1000000, \"max_plaintext_bytes\": 1048576, "
	    "\"max_aad_bytes\": 65535}, "
	    "\"sigv4\": {\"max_clock_skew_seconds\": 86400}, "
	    "\"log\": {\"level\": \"debug\", \"format\": \"json\"}");
	struct cfg *cfg = load_ok(text);
	const struct cfg_keystore *ks = &cfg->keystores[0];

	assert_int_equal(cfg->nlisten, 2);
	assert_string_equal(cfg->listen[1].address, "localhost");
	assert_int_equal(cfg->listen[1].port, 65535);
	assert_int_equal(cfg->worker_threads, 256);
	assert_int_equal(cfg->tls.ncertificates, 2);
	assert_string_equal(cfg->tls.certificates[1].private_key_file, "/b.key");
	assert_string_equal(cfg->tls.client_ca_file, "/ca.pem");
	assert_int_equal(cfg->tls.nclient_subjects, 4);
	assert_string_equal(cfg->tls.client_subjects[3], "x y");
	assert_int_equal(cfg->health_listen.enabled, 1);
	assert_string_equal(cfg->health_listen.address, "0.0.0.0");
	assert_int_equal(cfg->health_listen.port, 8080);
	assert_string_equal(cfg->health_listen.path, "/ping");
	assert_string_equal(cfg->hsm.module, "softhsm2");
	assert_int_equal(cfg->hsm.ntokens, 2);
	assert_string_equal(cfg->hsm.pin_env, "P_1");
	assert_int_equal(cfg->hsm.sessions_per_token, 256);
	assert_string_equal(cfg->hsm.health_key, "canary");
	assert_int_equal(cfg->hsm.iv, CFG_IV_HSM);
	assert_int_equal(cfg->hsm.timeout_ms, 60000);
	assert_int_equal(cfg->hsm.queue_size, 1000000);
	assert_int_equal(cfg->health.interval_seconds, 3600);
	assert_int_equal(cfg->health.fleet_size, 1000);
	assert_string_equal(cfg->health.proxy_vendor, "V");
	assert_string_equal(cfg->health.proxy_model, "M");
	assert_string_equal(cfg->health.ekm_vendor, "E");
	assert_int_equal(cfg->health.degraded_ms, 60000);
	assert_int_equal(cfg->nkeystores, 2);
	assert_int_equal(ks->npaths, 2);
	assert_string_equal(ks->paths[1], "/x-Y_9/kms/xks/v1");
	assert_int_equal(ks->ncredentials, 2);
	assert_int_equal(ks->credentials[0].not_after, 1893456000);
	assert_int_equal(ks->credentials[1].not_after, 1709210096);
	assert_int_equal(ks->credentials[1].secret_len, 64);
	assert_int_equal(ks->all_keys, 0);
	assert_int_equal(ks->nkeys, 2);
	assert_true(cfg_keystore_has_key(ks, "k1"));
	assert_true(cfg_keystore_has_key(ks, "K-2._x"));
	assert_false(cfg_keystore_has_key(ks, "k2"));
	assert_false(cfg_keystore_has_key(ks, "k"));
	assert_int_equal(ks->nregions, 2);
	assert_string_equal(ks->regions[1], "us-east-2");
	assert_null(cfg->keystores[1].regions);
	assert_int_equal(cfg->keystores[1].nregions, 0);
	assert_int_equal(cfg->limits.max_body_bytes, 16777216);
	assert_int_equal(cfg->limits.max_header_bytes, 1024);
	assert_int_equal(cfg->limits.header_timeout_ms, 100);
	assert_int_equal(cfg->limits.idle_timeout_ms, 3600000);
	assert_int_equal(cfg->limits.max_connections, 1);
	assert_int_equal(cfg->limits.max_connections_per_address, 1000000);
	assert_int_equal(cfg->limits.max_plaintext_bytes, 1048576);
	assert_int_equal(cfg->limits.max_aad_bytes, 65535);
	assert_int_equal(cfg->sigv4.max_clock_skew_seconds, 86400);
	assert_int_equal(cfg->log.level, LOG_LVL_DEBUG);
	assert_int_equal(cfg->log.format, LOG_FMT_JSON);
	cfg_free(cfg);
	free(text);
}

static void
test_nullables(void **state)
{
	char *text = build(NULL,
	    "\"tls\": {\"certificates\": [{\"certificate_file\": \"/c\", "
	    "\"private_key_file\": \"/k\"}], \"client_ca_file\": null, \"client_subjects\": []}",
	    NULL, NULL, "\"health_listen\": null");
	struct cfg *cfg = load_ok(text);

	assert_null(cfg->tls.client_ca_file);
	assert_int_equal(cfg->health_listen.enabled, 0);
	cfg_free(cfg);
	free(text);
	text = build(NULL, NULL, NULL, NULL,
	    "\"health_listen\": {\"address\": \"127.0.0.1\", \"port\": 9, \"path\": \"/health/x\"}");
	cfg = load_ok(text);
	assert_int_equal(cfg->health_listen.enabled, 1);
	assert_string_equal(cfg->health_listen.path, "/health/x");
	cfg_free(cfg);
	free(text);
}

static void
test_comments(void **state)
{
	const char *text =
	    "// leading comment\n"
	    "/* block\n   comment */ {\n"
	    "  " L_OK ", // after a member\n"
	    "  /* before */ " T_OK ",\n"
	    "  \"hsm\": { \"module\": /* inline */ \"/m.so\", \"tokens\": [\"pkcs11:token=a\" // x\n"
	    "  ], \"pin_env\": \"XKS_PIN\" },\n"
	    "  " K_OK "\n"
	    "} // trailing comment\n"
	    "/* trailing block */\n\n";
	struct cfg *cfg = load_ok(text);

	assert_string_equal(cfg->hsm.module, "/m.so");
	cfg_free(cfg);
}

static void
test_syntax(void **state)
{
	char *ok = build(NULL, NULL, NULL, NULL, NULL);
	char buf[4096];

	expect_err("{\n  \"listen\": [\n  }\n", NAME ": line 3: unexpected character");
	expect_err("{\n\"a\": tru }", NAME ": line 2: boolean expected");
	expect_err("", NAME ": line 1: unexpected end of data");
	expect_err("// only a comment\n", NAME ": line 2: unexpected end of data");
	expect_err("{\n\"listen\": [\n", NAME ": line 3: unexpected end of data");
	expect_err("{\"a\": \"\xff\"}", NAME ": line 1: invalid utf-8 string");
	expect_err("[1]", NAME ": top level: must be an object");
	expect_err("\"x\"", NAME ": top level: must be an object");
	expect_err("42", NAME ": top level: must be an object");
	expect_err("null", NAME ": top level: must be an object");

	/* trailing garbage: build() ends with "}\n" (line count + 1) */
	snprintf(buf, sizeof(buf), "%s\nx", ok);
	expect_err(buf, NAME ": line 8: unexpected characters after the "
	    "top-level object");
	snprintf(buf, sizeof(buf), "%s{}", ok);
	expect_err(buf, NAME ": line 7: unexpected characters after the "
	    "top-level object");
	snprintf(buf, sizeof(buf), "%s// c\n/* d */ ,", ok);
	expect_err(buf, NAME ": line 8: unexpected characters after the "
	    "top-level object");
	free(ok);
}

static const struct ecase top_cases[] = {
	{ 'X', "\"bogus\": 1", "bogus: unknown key" },
	{ 'X', "\"Listen\": []", "Listen: unknown key" },
	{ 'L', "", "listen: required" },
	{ 'T', "", "tls: required" },
	{ 'H', "", "hsm: required" },
	{ 'K', "", "keystores: required" },
	{ 'X', "\"worker_threads\": 257", "worker_threads: must be an integer from 0 to 256" },
	{ 'X', "\"worker_threads\": -1", "worker_threads: must be an integer from 0 to 256" },
	{ 'X', "\"worker_threads\": \"4\"", "worker_threads: must be an integer from 0 to 256" },
	{ 'X', "\"worker_threads\": 4.0", "worker_threads: must be an integer from 0 to 256" },
	{ 'X', "\"worker_threads\": 1e2", "worker_threads: must be an integer from 0 to 256" },
	{ 'X', "\"worker_threads\": true", "worker_threads: must be an integer from 0 to 256" },
	{ 'X', "\"worker_threads\": null", "worker_threads: must be an integer from 0 to 256" },
	{ 'X', "\"worker_threads\": [1]", "worker_threads: must be an integer from 0 to 256" },
	{ 'X', "\"worker_threads\": 99999999999999999999", "worker_threads: must be an integer from 0 to 256" },
	{ 'X', "\"worker_threads\": -99999999999999999999", "worker_threads: must be an integer from 0 to 256" },
	{ 'X', "\"worker_threads\": 4294967297", "worker_threads: must be an integer from 0 to 256" },
};

static void
test_top(void **state)
{
	RUN(top_cases);
}

static const struct ecase listen_cases[] = {
	{ 'L', "\"listen\": []", "listen: must not be empty" },
	{ 'L', "\"listen\": {}", "listen: must be an array" },
	{ 'L', "\"listen\": null", "listen: must be an array" },
	{ 'L', "\"listen\": [1]", "listen[0]: must be an object" },
	{ 'L', "\"listen\": [null]", "listen[0]: must be an object" },
	{ 'L', "\"listen\": [{\"address\": \"a\", \"port\": 0}]", "listen[0].port: must be an integer from 1 to 65535" },
	{ 'L', "\"listen\": [{\"address\": \"a\", \"port\": 65536}]", "listen[0].port: must be an integer from 1 to 65535" },
	{ 'L', "\"listen\": [{\"address\": \"a\", \"port\": \"443\"}]", "listen[0].port: must be an integer from 1 to 65535" },
	{ 'L', "\"listen\": [{\"address\": \"a\", \"port\": 1}, {\"port\": 1}]", "listen[1].address: required" },
	{ 'L', "\"listen\": [{\"address\": \"a\"}]", "listen[0].port: required" },
	{ 'L', "\"listen\": [{\"address\": \"\", \"port\": 1}]", "listen[0].address: must not be empty" },
	{ 'L', "\"listen\": [{\"address\": 5, \"port\": 1}]", "listen[0].address: must be a string" },
	{ 'L', "\"listen\": [{\"address\": null, \"port\": 1}]", "listen[0].address: must be a string" },
	{ 'L', "\"listen\": [{\"address\": \"a\\u0000b\", \"port\": 1}]", "listen[0].address: must not contain NUL characters" },
	/* an unknown key is reported before the key it was meant to be */
	{ 'L', "\"listen\": [{\"adress\": \"a\", \"port\": 1}]", "listen[0].adress: unknown key" },
};

static void
test_listen(void **state)
{
	RUN(listen_cases);
}

#define TC(m) "\"tls\": {\"certificates\": [{\"certificate_file\": \"/c\", " \
	"\"private_key_file\": \"/k\"}], " m "}"

static const struct ecase tls_cases[] = {
	{ 'T', "\"tls\": []", "tls: must be an object" },
	{ 'T', "\"tls\": null", "tls: must be an object" },
	{ 'T', "\"tls\": {}", "tls.certificates: required" },
	{ 'T', TC("\"ciphers\": \"x\""), "tls.ciphers: unknown key" },
	{ 'T', "\"tls\": {\"certificates\": []}", "tls.certificates: must not be empty" },
	{ 'T', "\"tls\": {\"certificates\": {}}", "tls.certificates: must be an array" },
	{ 'T', "\"tls\": {\"certificates\": [\"/c\"]}", "tls.certificates[0]: must be an object" },
	{ 'T', "\"tls\": {\"certificates\": [{\"certificate_file\": \"/c\", \"private_key_file\": \"/k\", "
	    "\"chain_file\": \"/x\"}]}", "tls.certificates[0].chain_file: unknown key" },
	{ 'T', "\"tls\": {\"certificates\": [{\"certificate_file\": \"/c\", \"private_key_file\": \"/k\"}, "
	    "{\"certificate_file\": \"/c\"}]}", "tls.certificates[1].private_key_file: required" },
	{ 'T', "\"tls\": {\"certificates\": [{\"private_key_file\": \"/k\"}]}",
	    "tls.certificates[0].certificate_file: required" },
	{ 'T', "\"tls\": {\"certificates\": [{\"certificate_file\": \"\", \"private_key_file\": \"/k\"}]}",
	    "tls.certificates[0].certificate_file: must not be empty" },
	{ 'T', "\"tls\": {\"certificates\": [{\"certificate_file\": \"/c\", \"private_key_file\": 1}]}",
	    "tls.certificates[0].private_key_file: must be a string" },
	{ 'T', TC("\"client_ca_file\": \"/ca\""),
	    "tls.client_subjects: must not be empty when tls.client_ca_file is set" },
	{ 'T', TC("\"client_ca_file\": \"/ca\", \"client_subjects\": []"),
	    "tls.client_subjects: must not be empty when tls.client_ca_file is set" },
	{ 'T', TC("\"client_subjects\": [\"a\"]"), "tls.client_subjects: requires tls.client_ca_file" },
	{ 'T', TC("\"client_ca_file\": null, \"client_subjects\": [\"a\"]"),
	    "tls.client_subjects: requires tls.client_ca_file" },
	{ 'T', TC("\"client_ca_file\": \"\", \"client_subjects\": [\"a\"]"), "tls.client_ca_file: must not be empty" },
	{ 'T', TC("\"client_ca_file\": 1"), "tls.client_ca_file: must be a string" },
	{ 'T', TC("\"client_ca_file\": \"/ca\", \"client_subjects\": \"a\""), "tls.client_subjects: must be an array" },
	{ 'T', TC("\"client_ca_file\": \"/ca\", \"client_subjects\": [\"a\", \"\"]"),
	    "tls.client_subjects[1]: must not be empty" },
	{ 'T', TC("\"client_ca_file\": \"/ca\", \"client_subjects\": [1]"), "tls.client_subjects[0]: must be a string" },
	{ 'T', TC("\"client_ca_file\": \"/ca\", \"client_subjects\": [\"a*.b\"]"),
	    "tls.client_subjects[0]: \"*\" is allowed only once, as a whole label" },
	{ 'T', TC("\"client_ca_file\": \"/ca\", \"client_subjects\": [\"a.*b\"]"),
	    "tls.client_subjects[0]: \"*\" is allowed only once, as a whole label" },
	{ 'T', TC("\"client_ca_file\": \"/ca\", \"client_subjects\": [\"*.*.b\"]"),
	    "tls.client_subjects[0]: \"*\" is allowed only once, as a whole label" },
	{ 'T', TC("\"client_ca_file\": \"/ca\", \"client_subjects\": [\"ok\", \"**\"]"),
	    "tls.client_subjects[1]: \"*\" is allowed only once, as a whole label" },
};

static void
test_tls(void **state)
{
	RUN(tls_cases);
}

#define HL(m) "\"health_listen\": {\"address\": \"::1\", \"port\": 8080" m "}"

static const struct ecase health_listen_cases[] = {
	{ 'X', HL(", \"pth\": \"/p\""), "health_listen.pth: unknown key" },
	{ 'X', "\"health_listen\": {\"address\": \"::1\"}", "health_listen.port: required" },
	{ 'X', "\"health_listen\": {\"port\": 1}", "health_listen.address: required" },
	{ 'X', "\"health_listen\": []", "health_listen: must be an object" },
	{ 'X', "\"health_listen\": false", "health_listen: must be an object" },
	{ 'X', HL(", \"path\": \"ping\""),
	    "health_listen.path: must start with \"/\" and contain only printable ASCII without spaces" },
	{ 'X', HL(", \"path\": \"/a b\""),
	    "health_listen.path: must start with \"/\" and contain only printable ASCII without spaces" },
	{ 'X', HL(", \"path\": \"\""), "health_listen.path: must not be empty" },
	{ 'X', HL(", \"path\": null"), "health_listen.path: must be a string" },
	{ 'X', "\"health_listen\": {\"address\": \"::1\", \"port\": 0}",
	    "health_listen.port: must be an integer from 1 to 65535" },
};

static void
test_health_listen(void **state)
{
	RUN(health_listen_cases);
}

#define HSM(m) "\"hsm\": {\"module\": \"/m.so\", \"tokens\": [\"pkcs11:token=a\"], " \
	"\"pin_env\": \"P\"" m "}"
#define HSMT(t) "\"hsm\": {\"module\": \"/m.so\", \"tokens\": [" t "], \"pin_env\": \"P\"}"

static const struct ecase hsm_cases[] = {
	{ 'H', HSM(", \"slot\": 1"), "hsm.slot: unknown key" },
	{ 'H', "\"hsm\": \"x\"", "hsm: must be an object" },
	{ 'H', "\"hsm\": {}", "hsm.module: required" },
	{ 'H', "\"hsm\": {\"tokens\": [\"pkcs11:token=a\"], \"pin_env\": \"P\"}", "hsm.module: required" },
	{ 'H', "\"hsm\": {\"module\": \"\", \"tokens\": [\"pkcs11:token=a\"], \"pin_env\": \"P\"}",
	    "hsm.module: must not be empty" },
	{ 'H', "\"hsm\": {\"module\": \"/m\", \"pin_env\": \"P\"}", "hsm.tokens: required" },
	{ 'H', HSMT(""), "hsm.tokens: must not be empty" },
	{ 'H', "\"hsm\": {\"module\": \"/m\", \"tokens\": \"pkcs11:\", \"pin_env\": \"P\"}",
	    "hsm.tokens: must be an array" },
	{ 'H', HSMT("\"token=a\""), "hsm.tokens[0]: must be a PKCS#11 URI starting with \"pkcs11:\"" },
	{ 'H', HSMT("\"pkcs11:token=a\", 7"), "hsm.tokens[1]: must be a string" },
	{ 'H', HSMT("\"pkcs11:token=%zz\""), "hsm.tokens[0]: invalid PKCS#11 URI: URI encoding invalid or corrupted" },
	{ 'H', HSMT("\"pkcs11:object=k\""),
	    "hsm.tokens[0]: invalid PKCS#11 URI: it has attributes that do not describe a token" },
	{ 'H', HSMT("\"pkcs11:token=a?pin-value=123456\""),
	    "hsm.tokens[0]: must not carry a PIN: use hsm.pin_file or hsm.pin_env" },
	{ 'H', HSMT("\"pkcs11:token=a?pin-source=file:/p\""),
	    "hsm.tokens[0]: must not carry a PIN: use hsm.pin_file or hsm.pin_env" },
	{ 'H', HSMT("\"pkcs11:token=c\", \"pkcs11:token=b\", \"pkcs11:token=b\", \"pkcs11:token=c\""),
	    "hsm.tokens[2]: same URI as hsm.tokens[1]" },
	{ 'H', HSMT("\"pkcs11:token=a\", \"pkcs11:token=b\", \"pkcs11:token=a\""),
	    "hsm.tokens[2]: same URI as hsm.tokens[0]" },
	{ 'H', "\"hsm\": {\"module\": \"/m\", \"tokens\": [\"pkcs11:token=a\"]}",
	    "hsm.pin_file: exactly one of hsm.pin_file and hsm.pin_env is required" },
	{ 'H', HSM(", \"pin_file\": \"/nonexistent/pin\""),
	    "hsm.pin_file: exactly one of hsm.pin_file and hsm.pin_env is required" },
	{ 'H', "\"hsm\": {\"module\": \"/m\", \"tokens\": [\"pkcs11:token=a\"], \"pin_file\": \"/nonexistent/pin\"}",
	    "hsm.pin_file: /nonexistent/pin: No such file or directory" },
	{ 'H', "\"hsm\": {\"module\": \"/m\", \"tokens\": [\"pkcs11:token=a\"], \"pin_file\": \"\"}",
	    "hsm.pin_file: must not be empty" },
	{ 'H', "\"hsm\": {\"module\": \"/m\", \"tokens\": [\"pkcs11:token=a\"], \"pin_env\": \"1X\"}",
	    "hsm.pin_env: must be an environment variable name (A-Z, a-z, 0-9 and _, not starting with a digit)" },
	{ 'H', "\"hsm\": {\"module\": \"/m\", \"tokens\": [\"pkcs11:token=a\"], \"pin_env\": \"A-B\"}",
	    "hsm.pin_env: must be an environment variable name (A-Z, a-z, 0-9 and _, not starting with a digit)" },
	{ 'H', HSM(", \"sessions_per_token\": 0"), "hsm.sessions_per_token: must be an integer from 1 to 256" },
	{ 'H', HSM(", \"sessions_per_token\": 257"), "hsm.sessions_per_token: must be an integer from 1 to 256" },
	{ 'H', HSM(", \"health_key\": \"\""), "hsm.health_key: must be 1 to 128 characters" },
	{ 'H', HSM(", \"health_key\": \"0123456789012345678901234567890123456789012345678901234567890123"
	    "45678901234567890123456789012345678901234567890123456789012345678\""),
	    "hsm.health_key: must be 1 to 128 characters" },
	{ 'H', HSM(", \"health_key\": 1"), "hsm.health_key: must be a string" },
	{ 'H', HSM(", \"iv\": \"gcm\""), "hsm.iv: must be \"proxy\" or \"hsm\"" },
	{ 'H', HSM(", \"iv\": 1"), "hsm.iv: must be \"proxy\" or \"hsm\"" },
	{ 'H', HSM(", \"iv\": \"hsm\\u0000x\""), "hsm.iv: must not contain NUL characters" },
	{ 'H', HSM(", \"timeout_ms\": 9"), "hsm.timeout_ms: must be an integer from 10 to 60000" },
	{ 'H', HSM(", \"timeout_ms\": 60001"), "hsm.timeout_ms: must be an integer from 10 to 60000" },
	{ 'H', HSM(", \"queue_size\": 0"), "hsm.queue_size: must be an integer from 1 to 1000000" },
	{ 'H', HSM(", \"queue_size\": 1000001"), "hsm.queue_size: must be an integer from 1 to 1000000" },
};

static void
test_hsm(void **state)
{
	RUN(hsm_cases);
}

static void
test_pin_file(void **state)
{
	char hsm[1024], expect[1024], *text, *log;
	struct cfg *cfg;
	const char *pin = tpath("hsm.pin");

	write_file(pin, "1234\n", 0600);
	snprintf(hsm, sizeof(hsm), "\"hsm\": {\"module\": \"/m\", \"tokens\": "
	    "[\"pkcs11:token=a\"], \"pin_file\": \"%s\"}", pin);
	text = build(NULL, NULL, hsm, NULL, NULL);
	cap_start();
	cfg = load_ok(text);
	log = cap_stop();
	assert_string_equal(log, "");
	assert_string_equal(cfg->hsm.pin_file, pin);
	assert_null(cfg->hsm.pin_env);
	cfg_free(cfg);

	/* group-readable: loads, with a warning naming the file and mode */
	assert_int_equal(chmod(pin, 0644), 0);
	cap_start();
	cfg = load_ok(text);
	log = cap_stop();
	snprintf(expect, sizeof(expect), NAME ": hsm.pin_file: %s is accessible by "
	    "group or others (mode 0644); chmod 600 it", pin);
	if (strstr(log, expect) == NULL)
		fail_msg("log: %s\nexpected: %s", log, expect);
	assert_null(strstr(log, "1234"));
	cfg_free(cfg);
	free(text);

	/* a directory is not a PIN file */
	snprintf(hsm, sizeof(hsm), "\"hsm\": {\"module\": \"/m\", \"tokens\": "
	    "[\"pkcs11:token=a\"], \"pin_file\": \"%s\"}", tmpdir);
	text = build(NULL, NULL, hsm, NULL, NULL);
	snprintf(expect, sizeof(expect), NAME ": hsm.pin_file: %s: not a regular file", tmpdir);
	expect_err(text, expect);
	free(text);
	unlink(pin);
}

#define HE(m) "\"health\": {" m "}"

static const struct ecase health_cases[] = {
	{ 'X', HE("\"interval\": 5"), "health.interval: unknown key" },
	{ 'X', "\"health\": 1", "health: must be an object" },
	{ 'X', HE("\"interval_seconds\": 0"), "health.interval_seconds: must be an integer from 1 to 3600" },
	{ 'X', HE("\"interval_seconds\": 3601"), "health.interval_seconds: must be an integer from 1 to 3600" },
	{ 'X', HE("\"fleet_size\": 0"), "health.fleet_size: must be an integer from 1 to 1000" },
	{ 'X', HE("\"fleet_size\": 1001"), "health.fleet_size: must be an integer from 1 to 1000" },
	{ 'X', HE("\"proxy_vendor\": \"\""), "health.proxy_vendor: must be 1 to 128 characters" },
	{ 'X', HE("\"proxy_model\": \"0123456789012345678901234567890123456789012345678901234567890123"
	    "45678901234567890123456789012345678901234567890123456789012345678\""),
	    "health.proxy_model: must be 1 to 128 characters" },
	{ 'X', HE("\"ekm_vendor\": 3"), "health.ekm_vendor: must be a string" },
	{ 'X', HE("\"degraded_ms\": 0"), "health.degraded_ms: must be an integer from 1 to 60000" },
	{ 'X', HE("\"degraded_ms\": 60001"), "health.degraded_ms: must be an integer from 1 to 60000" },
};

static void
test_health(void **state)
{
	RUN(health_cases);
}

#define LIM(m) "\"limits\": {" m "}"

static const struct ecase limits_cases[] = {
	{ 'X', LIM("\"max_body\": 1"), "limits.max_body: unknown key" },
	{ 'X', "\"limits\": []", "limits: must be an object" },
	{ 'X', LIM("\"max_body_bytes\": 1023"), "limits.max_body_bytes: must be an integer from 1024 to 16777216" },
	{ 'X', LIM("\"max_body_bytes\": 16777217"), "limits.max_body_bytes: must be an integer from 1024 to 16777216" },
	{ 'X', LIM("\"max_header_bytes\": 1023"), "limits.max_header_bytes: must be an integer from 1024 to 1048576" },
	{ 'X', LIM("\"max_header_bytes\": 1048577"), "limits.max_header_bytes: must be an integer from 1024 to 1048576" },
	{ 'X', LIM("\"header_timeout_ms\": 99"), "limits.header_timeout_ms: must be an integer from 100 to 600000" },
	{ 'X', LIM("\"header_timeout_ms\": 600001"), "limits.header_timeout_ms: must be an integer from 100 to 600000" },
	{ 'X', LIM("\"idle_timeout_ms\": 99"), "limits.idle_timeout_ms: must be an integer from 100 to 3600000" },
	{ 'X', LIM("\"idle_timeout_ms\": 3600001"), "limits.idle_timeout_ms: must be an integer from 100 to 3600000" },
	{ 'X', LIM("\"max_connections\": 0"), "limits.max_connections: must be an integer from 1 to 1000000" },
	{ 'X', LIM("\"max_connections\": 1000001"), "limits.max_connections: must be an integer from 1 to 1000000" },
	{ 'X', LIM("\"max_connections_per_address\": -1"),
	    "limits.max_connections_per_address: must be an integer from 0 to 1000000" },
	{ 'X', LIM("\"max_connections_per_address\": 1000001"),
	    "limits.max_connections_per_address: must be an integer from 0 to 1000000" },
	{ 'X', LIM("\"max_plaintext_bytes\": 4299"), "limits.max_plaintext_bytes: must be an integer from 4300 to 1048576" },
	{ 'X', LIM("\"max_plaintext_bytes\": 1048577"), "limits.max_plaintext_bytes: must be an integer from 4300 to 1048576" },
	{ 'X', LIM("\"max_aad_bytes\": 8191"), "limits.max_aad_bytes: must be an integer from 8192 to 65535" },
	{ 'X', LIM("\"max_aad_bytes\": 65536"), "limits.max_aad_bytes: must be an integer from 8192 to 65535" },
	{ 'X', "\"sigv4\": {\"skew\": 1}", "sigv4.skew: unknown key" },
	{ 'X', "\"sigv4\": \"x\"", "sigv4: must be an object" },
	{ 'X', "\"sigv4\": {\"max_clock_skew_seconds\": 0}", "sigv4.max_clock_skew_seconds: must be an integer from 1 to 86400" },
	{ 'X', "\"sigv4\": {\"max_clock_skew_seconds\": 86401}", "sigv4.max_clock_skew_seconds: must be an integer from 1 to 86400" },
	{ 'X', "\"log\": {\"file\": \"/x\"}", "log.file: unknown key" },
	{ 'X', "\"log\": 1", "log: must be an object" },
	{ 'X', "\"log\": {\"level\": \"trace\"}", "log.level: must be \"error\", \"warn\", \"info\" or \"debug\"" },
	{ 'X', "\"log\": {\"level\": \"INFO\"}", "log.level: must be \"error\", \"warn\", \"info\" or \"debug\"" },
	{ 'X', "\"log\": {\"level\": 2}", "log.level: must be \"error\", \"warn\", \"info\" or \"debug\"" },
	{ 'X', "\"log\": {\"format\": \"xml\"}", "log.format: must be \"text\" or \"json\"" },
	{ 'X', "\"log\": {\"format\": null}", "log.format: must be \"text\" or \"json\"" },
};

static void
test_limits_sigv4_log(void **state)
{
	RUN(limits_cases);
}

#define CRED2(a, b) "\"keystores\": [{" KS_PATHS ", \"credentials\": [{" a "}, {" b "}], " KS_KEYS "}]"
#define C_OK "\"access_key_id\": \"" AKID1 "\", \"secret_access_key\": \"" SECRET1 "\""
#define C_AKID(id) "\"access_key_id\": \"" id "\", \"secret_access_key\": \"" SECRET1 "\""
#define C_NA(t) C_OK ", \"not_after\": " t
#define AKID_MSG "keystores[0].credentials[0].access_key_id: must be 20 to 30 characters of A-Z and 2-7"
#define NA_MSG "keystores[0].credentials[0].not_after: must be a UTC time \"YYYY-MM-DDTHH:MM:SSZ\" from 1970 on"
#define KSP(p) "\"keystores\": [{\"paths\": [" p "], " KS_CREDS ", " KS_KEYS "}]"
#define KSK(k) "\"keystores\": [{" KS_PATHS ", " KS_CREDS ", \"keys\": [" k "]}]"
#define PATH_MSG "must be at most 128 characters of a-z, A-Z, 0-9, /, - and _, " \
	"start with \"/\" and end with \"/kms/xks/v1\""
#define KEY_MSG "must be \"*\" or 1 to 128 characters of A-Z, a-z, 0-9, -, . and _"

static const struct ecase ks_cases[] = {
	{ 'K', "\"keystores\": []", "keystores: must not be empty" },
	{ 'K', "\"keystores\": {}", "keystores: must be an array" },
	{ 'K', "\"keystores\": [[]]", "keystores[0]: must be an object" },
	{ 'K', "\"keystores\": [{}]", "keystores[0].paths: required" },
	{ 'K', K_ONE(KS_PATHS ", " KS_KEYS), "keystores[0].credentials: required" },
	{ 'K', K_ONE(KS_PATHS ", " KS_CREDS), "keystores[0].keys: required" },
	{ 'K', K_ONE(KS_PATHS ", " KS_CREDS ", " KS_KEYS ", \"path\": \"/x\""), "keystores[0].path: unknown key" },
	{ 'K', "\"keystores\": [{" KS_PATHS ", " KS_CREDS ", " KS_KEYS "}, {\"paths\": [\"/b/kms/xks/v1\"], "
	    KS_CREDS ", " KS_KEYS ", \"region\": \"x\"}]", "keystores[1].region: unknown key" },
	/* paths */
	{ 'K', KSP(""), "keystores[0].paths: must not be empty" },
	{ 'K', "\"keystores\": [{\"paths\": \"/a/kms/xks/v1\", " KS_CREDS ", " KS_KEYS "}]",
	    "keystores[0].paths: must be an array" },
	{ 'K', KSP("\"/a/kms/xks/v2\""), "keystores[0].paths[0]: " PATH_MSG },
	{ 'K', KSP("\"a/kms/xks/v1\""), "keystores[0].paths[0]: " PATH_MSG },
	{ 'K', KSP("\"/a.b/kms/xks/v1\""), "keystores[0].paths[0]: " PATH_MSG },
	{ 'K', KSP("\"/a/kms/xks/v1/\""), "keystores[0].paths[0]: " PATH_MSG },
	{ 'K', KSP("\"kms/xks/v1\""), "keystores[0].paths[0]: " PATH_MSG },
	{ 'K', KSP("\"/a/kms/xks/v1\", \"/01234567890123456789012345678901234567890123456789012345678901234567890123456789"
	    "0123456789012345678901234567890123456/kms/xks/v1\""), "keystores[0].paths[1]: " PATH_MSG },
	{ 'K', KSP("\"/a/kms/xks/v1\", \"\""), "keystores[0].paths[1]: must not be empty" },
	{ 'K', KSP("\"/a/kms/xks/v1\", \"/b/kms/xks/v1\", \"/a/kms/xks/v1\""),
	    "keystores[0].paths[2]: duplicate of keystores[0].paths[0]" },
	{ 'K', KSP("\"/b/kms/xks/v1\", \"/a/kms/xks/v1\", \"/a/kms/xks/v1\", \"/b/kms/xks/v1\""),
	    "keystores[0].paths[2]: duplicate of keystores[0].paths[1]" },
	{ 'K', "\"keystores\": [{\"paths\": [\"/x/kms/xks/v1\", \"/a/kms/xks/v1\"], " KS_CREDS ", " KS_KEYS "}, "
	    "{\"paths\": [\"/c/kms/xks/v1\", \"/a/kms/xks/v1\"], " KS_CREDS ", " KS_KEYS "}]",
	    "keystores[1].paths[1]: duplicate of keystores[0].paths[1]" },
	/* credentials */
	{ 'K', K_ONE(KS_PATHS ", \"credentials\": [], " KS_KEYS), "keystores[0].credentials: must not be empty" },
	{ 'K', K_ONE(KS_PATHS ", \"credentials\": [1], " KS_KEYS), "keystores[0].credentials[0]: must be an object" },
	{ 'K', CRED2(C_OK, "\"acess_key_id\": \"" AKID2 "\", \"secret_access_key\": \"" SECRET1 "\""),
	    "keystores[0].credentials[1].acess_key_id: unknown key" },
	{ 'K', K_CRED("\"secret_access_key\": \"" SECRET1 "\""), "keystores[0].credentials[0].access_key_id: required" },
	{ 'K', K_CRED(C_AKID("AAAAAAAAAAAAAAAAAAA")), AKID_MSG },
	{ 'K', K_CRED(C_AKID("AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA")), AKID_MSG },
	{ 'K', K_CRED(C_AKID("AAAAAAAAAAAAAAAAAAAAa")), AKID_MSG },
	{ 'K', K_CRED(C_AKID("AAAAAAAAAAAAAAAAAAAA8")), AKID_MSG },
	{ 'K', K_CRED(C_AKID("AAAAAAAAAAAAAAAAAAAA1")), AKID_MSG },
	{ 'K', K_CRED(C_AKID("")), AKID_MSG },
	{ 'K', K_CRED("\"access_key_id\": 5, \"secret_access_key\": \"" SECRET1 "\""),
	    "keystores[0].credentials[0].access_key_id: must be a string" },
	{ 'K', K_CRED("\"access_key_id\": \"" AKID1 "\""),
	    "keystores[0].credentials[0].secret_access_key: exactly one of secret_access_key and "
	    "secret_access_key_file is required" },
	{ 'K', K_CRED(C_OK ", \"secret_access_key_file\": \"/nonexistent\""),
	    "keystores[0].credentials[0].secret_access_key: exactly one of secret_access_key and "
	    "secret_access_key_file is required" },
	{ 'K', K_CRED(C_OK ", \"secret_access_key_file\": \"\""),
	    "keystores[0].credentials[0].secret_access_key_file: must not be empty" },
	{ 'K', K_CRED("\"access_key_id\": \"" AKID1 "\", \"secret_access_key_file\": \"/nonexistent/s\""),
	    "keystores[0].credentials[0].secret_access_key_file: /nonexistent/s: No such file or directory" },
	{ 'K', K_CRED("\"access_key_id\": \"" AKID1 "\", \"secret_access_key\": 7"),
	    "keystores[0].credentials[0].secret_access_key: must be a string" },
	{ 'K', "\"keystores\": [{" KS_PATHS ", \"credentials\": [{" C_AKID(AKID2) "}, {" C_OK "}, {" C_OK "}, {"
	    C_AKID(AKID2) "}], " KS_KEYS "}]", "keystores[0].credentials[2].access_key_id: duplicate of credentials[1].access_key_id" },
	{ 'K', CRED2(C_OK, C_OK), "keystores[0].credentials[1].access_key_id: duplicate of credentials[0].access_key_id" },
	{ 'K', "\"keystores\": [{" KS_PATHS ", \"credentials\": [{" C_OK "}, {" C_AKID(AKID2) "}, {" C_OK "}], "
	    KS_KEYS "}]", "keystores[0].credentials[2].access_key_id: duplicate of credentials[0].access_key_id" },
	/* not_after */
	{ 'K', K_CRED(C_NA("\"2030-01-01 00:00:00Z\"")), NA_MSG },
	{ 'K', K_CRED(C_NA("\"2030-01-01T00:00:00\"")), NA_MSG },
	{ 'K', K_CRED(C_NA("\"2030-1-01T00:00:00Z\"")), NA_MSG },
	{ 'K', K_CRED(C_NA("\"2030-01-01T00:00:00+00:00\"")), NA_MSG },
	{ 'K', K_CRED(C_NA("\"2030-01-01T00:00:00.5Z\"")), NA_MSG },
	{ 'K', K_CRED(C_NA("\"2030-01-01t00:00:00z\"")), NA_MSG },
	{ 'K', K_CRED(C_NA("\" 2030-01-01T00:00:00Z\"")), NA_MSG },
	{ 'K', K_CRED(C_NA("\"2030-13-01T00:00:00Z\"")), NA_MSG },
	{ 'K', K_CRED(C_NA("\"2030-00-01T00:00:00Z\"")), NA_MSG },
	{ 'K', K_CRED(C_NA("\"2030-02-29T00:00:00Z\"")), NA_MSG },
	{ 'K', K_CRED(C_NA("\"2100-02-29T00:00:00Z\"")), NA_MSG },
	{ 'K', K_CRED(C_NA("\"2030-04-31T00:00:00Z\"")), NA_MSG },
	{ 'K', K_CRED(C_NA("\"2030-01-00T00:00:00Z\"")), NA_MSG },
	{ 'K', K_CRED(C_NA("\"2030-01-01T24:00:00Z\"")), NA_MSG },
	{ 'K', K_CRED(C_NA("\"2030-01-01T00:60:00Z\"")), NA_MSG },
	{ 'K', K_CRED(C_NA("\"2030-01-01T00:00:60Z\"")), NA_MSG },
	{ 'K', K_CRED(C_NA("\"1969-12-31T23:59:59Z\"")), NA_MSG },
	{ 'K', K_CRED(C_NA("\"\"")), NA_MSG },
	{ 'K', K_CRED(C_NA("1893456000")), "keystores[0].credentials[0].not_after: must be a string" },
	/* keys */
	{ 'K', KSK(""), "keystores[0].keys: must not be empty" },
	{ 'K', KSK("\"*\", \"a\""), "keystores[0].keys: \"*\" must be the only element" },
	{ 'K', KSK("\"a\", \"*\""), "keystores[0].keys: \"*\" must be the only element" },
	{ 'K', KSK("\"a b\""), "keystores[0].keys[0]: " KEY_MSG },
	{ 'K', KSK("\"a\", \"a/b\""), "keystores[0].keys[1]: " KEY_MSG },
	{ 'K', KSK("\"a\", \"\""), "keystores[0].keys[1]: must not be empty" },
	{ 'K', KSK("\"0123456789012345678901234567890123456789012345678901234567890123"
	    "45678901234567890123456789012345678901234567890123456789012345678\""), "keystores[0].keys[0]: " KEY_MSG },
	{ 'K', KSK("1"), "keystores[0].keys[0]: must be a string" },
	/* regions */
	{ 'K', K_ONE(KS_PATHS ", " KS_CREDS ", " KS_KEYS ", \"regions\": \"eu-west-1\""),
	    "keystores[0].regions: must be an array" },
	{ 'K', K_ONE(KS_PATHS ", " KS_CREDS ", " KS_KEYS ", \"regions\": [\"EU-west-1\"]"),
	    "keystores[0].regions[0]: must be a region name of a-z, 0-9 and -" },
	{ 'K', K_ONE(KS_PATHS ", " KS_CREDS ", " KS_KEYS ", \"regions\": [\"eu-west-1\", \"eu_west\"]"),
	    "keystores[0].regions[1]: must be a region name of a-z, 0-9 and -" },
	{ 'K', K_ONE(KS_PATHS ", " KS_CREDS ", " KS_KEYS ", \"regions\": [\"\"]"),
	    "keystores[0].regions[0]: must not be empty" },
};

static void
test_keystores(void **state)
{
	RUN(ks_cases);
}

static void
test_same_akid_other_keystore(void **state)
{
	char *text = build(NULL, NULL, NULL, "\"keystores\": [{" KS_PATHS ", " KS_CREDS ", " KS_KEYS "}, "
	    "{\"paths\": [\"/b/kms/xks/v1\"], " KS_CREDS ", \"keys\": [\"k\"]}]", NULL);
	struct cfg *cfg = load_ok(text);

	assert_int_equal(cfg->nkeystores, 2);
	assert_false(cfg_keystore_has_key(&cfg->keystores[1], "other"));
	assert_true(cfg_keystore_has_key(&cfg->keystores[1], "k"));
	cfg_free(cfg);
	free(text);
}

/* Bad secrets: the exact message, and never the secret itself. */
static void
test_secret_inline(void **state)
{
	static const char *bad[] = {
		"abcdefghijABCDEFGHIJ0123456789+/abcdefghij",      /* 42 */
		"abcdefghijABCDEFGHIJ0123456789+/abcdefghij-",     /* '-' */
		"abcdefghijABCDEFGHIJ0123456789+/abcdefghij =",    /* space */
		"abcdefghijABCDEFGHIJ0123456789+/abcdefghij==abcdefghijABCDEFGHIJ0", /* 65 */
	};
	char k[1024], *text;
	size_t i;

	for (i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		struct cfg *cfg = NULL;
		char err[1024];

		snprintf(k, sizeof(k), K_CRED("\"access_key_id\": \"" AKID1
		    "\", \"secret_access_key\": \"%s\""), bad[i]);
		text = build(NULL, NULL, NULL, k, NULL);
		assert_int_equal(cfg_load_string(NAME, text, &cfg, err, sizeof(err)), -1);
		assert_null(cfg);
		assert_string_equal(err, NAME ": keystores[0].credentials[0].secret_access_key: "
		    "must be 43 to 64 characters of A-Z, a-z, 0-9, +, / and =");
		assert_null(strstr(err, "abcdefghij"));
		free(text);
	}
}

/* Regression: a FIFO as a secret file must fail at once, not hang the load. */
static void
test_secret_fifo(void **state)
{
	char k[1024], expect[1024], *text;
	const char *ff = tpath("fifo");

	(void)state;
	unlink(ff);
	assert_int_equal(mkfifo(ff, 0600), 0);
	snprintf(k, sizeof(k), K_CRED("\"access_key_id\": \"" AKID1
	    "\", \"secret_access_key_file\": \"%s\""), ff);
	text = build(NULL, NULL, NULL, k, NULL);
	snprintf(expect, sizeof(expect), NAME ": keystores[0].credentials[0]."
	    "secret_access_key_file: %s: not a regular file", ff);
	expect_err(text, expect);
	free(text);
	unlink(ff);
}

/* Regression (fuzzer): control characters from the file never reach err. */
static void
test_error_is_one_printable_line(void **state)
{
	char k[1024], *text;
	struct cfg *cfg = NULL;
	char err[1024];
	size_t i;

	(void)state;
	snprintf(k, sizeof(k), K_CRED("\"access_key_id\": \"" AKID1
	    "\", \"secret_access_key_file\": \"/x/\\u001b[31m\\ninjected\""));
	text = build(NULL, NULL, NULL, k, NULL);
	assert_int_equal(cfg_load_string(NAME, text, &cfg, err, sizeof(err)), -1);
	for (i = 0; err[i] != '\0'; i++)
		assert_true(err[i] >= 0x20 && err[i] < 0x7f);
	assert_non_null(strstr(err, "/x/?[31m?injected"));
	free(text);
}

static void
test_secret_file(void **state)
{
	char k[1024], expect[1024], *text, *log;
	const char *sf = tpath("secret");
	const struct cfg_credential *cr;
	struct cfg *cfg;

	snprintf(k, sizeof(k), K_CRED("\"access_key_id\": \"" AKID1
	    "\", \"secret_access_key_file\": \"%s\""), sf);
	text = build(NULL, NULL, NULL, k, NULL);

	/* trailing newline and whitespace stripped, mode 0600: no warning */
	write_file(sf, SECRET1 "\r\n \t\n", 0600);
	cap_start();
	cfg = load_ok(text);
	log = cap_stop();
	assert_string_equal(log, "");
	cr = &cfg->keystores[0].credentials[0];
	assert_string_equal(cr->secret_file, sf);
	assert_int_equal(cr->secret_len, strlen(SECRET1));
	assert_memory_equal(cr->secret, SECRET1, strlen(SECRET1));
	cfg_free(cfg);

	/* no newline at all */
	write_file(sf, SECRET1, 0600);
	cfg = load_ok(text);
	assert_int_equal(cfg->keystores[0].credentials[0].secret_len, strlen(SECRET1));
	cfg_free(cfg);

	/* group-readable: loads, and util_read_file() warns */
	write_file(sf, SECRET1 "\n", 0640);
	cap_start();
	cfg = load_ok(text);
	log = cap_stop();
	snprintf(expect, sizeof(expect), "%s: secret file is accessible by group "
	    "or others (mode 0640); chmod 600 it", sf);
	if (strstr(log, expect) == NULL)
		fail_msg("log: %s\nexpected: %s", log, expect);
	assert_null(strstr(log, "abcdefghij"));
	cfg_free(cfg);

	/* whitespace inside, a leading blank line, too short, empty */
	snprintf(expect, sizeof(expect), NAME ": keystores[0].credentials[0]."
	    "secret_access_key_file: %s: must hold 43 to 64 characters of A-Z, "
	    "a-z, 0-9, +, / and = (trailing newlines are ignored)", sf);
	write_file(sf, "abcdefghijABCDEFGHIJ0123456789 +/abcdefghij=\n", 0600);
	expect_err(text, expect);
	write_file(sf, "\nabcdefghijABCDEFGHIJ0123456789+/abcdefghij=\n", 0600);
	expect_err(text, expect);
	write_file(sf, "abcdefghijABCDEFGHIJ0123456789+/abcdefghij\n", 0600);
	expect_err(text, expect);
	write_file(sf, "", 0600);
	expect_err(text, expect);
	{
		struct cfg *c2 = NULL;
		char err[1024];

		write_file(sf, "abcdefghijABCDEFGHIJ0123456789 +/abcdefghij=\n", 0600);
		assert_int_equal(cfg_load_string(NAME, text, &c2, err, sizeof(err)), -1);
		assert_null(strstr(err, "abcdefghij"));
	}
	unlink(sf);
	free(text);
}

static void
test_load_file(void **state)
{
	const char *p = tpath("x.conf");
	char *text = build(NULL, NULL, NULL, NULL, NULL);
	char err[1024], expect[1024];
	struct cfg *cfg = NULL;
	int fd;

	write_file(p, text, 0644);
	assert_int_equal(cfg_load(p, &cfg, err, sizeof(err)), 0);
	assert_non_null(cfg);
	assert_string_equal(cfg->file, p);
	cfg_free(cfg);

	/* errors name the file */
	write_file(p, "{\"listen\": 1}", 0644);
	assert_int_equal(cfg_load(p, &cfg, err, sizeof(err)), -1);
	assert_null(cfg);
	snprintf(expect, sizeof(expect), "%s: listen: must be an array", p);
	assert_string_equal(err, expect);

	/* a NUL byte in the file */
	fd = open(p, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	assert_int_equal(write(fd, "{}\0{}", 5), 5);
	close(fd);
	assert_int_equal(cfg_load(p, &cfg, err, sizeof(err)), -1);
	snprintf(expect, sizeof(expect), "%s: contains a NUL byte", p);
	assert_string_equal(err, expect);
	unlink(p);

	assert_int_equal(cfg_load(p, &cfg, err, sizeof(err)), -1);
	assert_null(cfg);
	snprintf(expect, sizeof(expect), "%s: No such file or directory", p);
	assert_string_equal(err, expect);
	free(text);
}

static void
test_validators(void **state)
{
	char long_path[200];

	assert_true(cfg_valid_uri_path("/kms/xks/v1"));
	assert_true(cfg_valid_uri_path("/a/kms/xks/v1"));
	assert_true(cfg_valid_uri_path("/A-z_0/9/kms/xks/v1"));
	assert_false(cfg_valid_uri_path("kms/xks/v1"));
	assert_false(cfg_valid_uri_path("/a/kms/xks/v1/"));
	assert_false(cfg_valid_uri_path("/a/kms/xks/v2"));
	assert_false(cfg_valid_uri_path("/a%20/kms/xks/v1"));
	assert_false(cfg_valid_uri_path(""));
	assert_false(cfg_valid_uri_path(NULL));
	memset(long_path, 'a', sizeof(long_path));
	long_path[0] = '/';
	strcpy(long_path + 128 - 11, "/kms/xks/v1");
	assert_int_equal(strlen(long_path), 128);
	assert_true(cfg_valid_uri_path(long_path));
	memset(long_path, 'a', sizeof(long_path));
	long_path[0] = '/';
	strcpy(long_path + 129 - 11, "/kms/xks/v1");
	assert_false(cfg_valid_uri_path(long_path));

	assert_true(cfg_valid_key_id("a", 1));
	assert_true(cfg_valid_key_id("A-z.0_9", 7));
	assert_false(cfg_valid_key_id("", 0));
	assert_false(cfg_valid_key_id("a b", 3));
	assert_false(cfg_valid_key_id("a\0b", 3));
	assert_false(cfg_valid_key_id("*", 1));
	memset(long_path, 'k', sizeof(long_path));
	assert_true(cfg_valid_key_id(long_path, 128));
	assert_false(cfg_valid_key_id(long_path, 129));
	assert_false(cfg_keystore_has_key(NULL, "a"));
}

/* An error with errlen 0 or err NULL must not crash. */
static void
test_no_errbuf(void **state)
{
	struct cfg *cfg = NULL;
	char err[8];

	assert_int_equal(cfg_load_string(NAME, "[]", &cfg, NULL, 0), -1);
	assert_int_equal(cfg_load_string(NAME, "{", &cfg, err, 0), -1);
	assert_int_equal(cfg_load_string(NAME, "{\"x\": 1}", &cfg, err, sizeof(err)), -1);
	assert_string_equal(err, "t.conf:");
	assert_null(cfg);
}

static char *
replace_all(const char *s, const char *from, const char *to)
{
	size_t n = 0, fl = strlen(from), tl = strlen(to);
	const char *p;
	char *out, *o;

	for (p = s; (p = strstr(p, from)) != NULL; p += fl)
		n++;
	out = malloc(strlen(s) + n * tl + 1);
	assert_non_null(out);
	for (o = out, p = s; *p != '\0';) {
		if (strncmp(p, from, fl) == 0) {
			memcpy(o, to, tl);
			o += tl;
			p += fl;
		} else
			*o++ = *p++;
	}
	*o = '\0';
	return out;
}

/* The shipped example loads, and names every key cfg_load() accepts. */
static void
test_example(void **state)
{
	static const char *keys[] = {
		"listen", "address", "port", "worker_threads", "tls", "certificates",
		"certificate_file", "private_key_file", "client_ca_file",
		"client_subjects", "health_listen", "path", "hsm", "module", "tokens",
		"pin_file", "pin_env", "sessions_per_token", "health_key", "iv",
		"timeout_ms", "queue_size", "health", "interval_seconds", "fleet_size",
		"proxy_vendor", "proxy_model", "ekm_vendor", "degraded_ms", "keystores",
		"paths", "credentials", "access_key_id", "secret_access_key",
		"secret_access_key_file", "not_after", "keys", "regions", "limits",
		"max_body_bytes", "max_header_bytes", "header_timeout_ms",
		"idle_timeout_ms", "max_connections", "max_connections_per_address",
		"max_plaintext_bytes", "max_aad_bytes", "sigv4",
		"max_clock_skew_seconds", "log", "level", "format",
	};
	unsigned char *orig;
	size_t len, i;
	char err[1024], dir[300], quoted[64], *text;
	struct cfg *cfg = NULL;
	const struct cfg_keystore *ks;

	assert_int_equal(util_read_file(TOP_SRCDIR "/conf/xksproxy.conf.example",
	    1 << 20, 0, &orig, &len, err, sizeof(err)), 0);
	for (i = 0; i < sizeof(keys) / sizeof(keys[0]); i++) {
		snprintf(quoted, sizeof(quoted), "\"%s\":", keys[i]);
		if (strstr((char *)orig, quoted) == NULL)
			fail_msg("the example does not document %s", keys[i]);
	}

	snprintf(dir, sizeof(dir), "%s/", tmpdir);
	text = replace_all((char *)orig, "/etc/xksproxy/", dir);
	assert_int_equal(mkdir(tpath("creds"), 0700), 0);
	write_file(tpath("creds/current"), SECRET1 "\n", 0600);
	write_file(tpath("hsm.pin"), "1234\n", 0600);

	if (cfg_load_string("xksproxy.conf.example", text, &cfg, err, sizeof(err)) != 0)
		fail_msg("%s", err);
	assert_int_equal(cfg->nlisten, 2);
	assert_int_equal(cfg->listen[0].port, 443);
	assert_int_equal(cfg->health_listen.enabled, 1);
	assert_string_equal(cfg->health_listen.path, "/ping");
	assert_string_equal(cfg->hsm.pin_file, tpath("hsm.pin"));
	assert_string_equal(cfg->health.proxy_model, "xksproxy " PACKAGE_VERSION);
	assert_int_equal(cfg->nkeystores, 1);
	ks = &cfg->keystores[0];
	assert_int_equal(ks->ncredentials, 2);
	assert_string_equal(ks->credentials[0].secret_file, tpath("creds/current"));
	assert_memory_equal(ks->credentials[0].secret, SECRET1, strlen(SECRET1));
	assert_null(ks->credentials[1].secret_file);
	assert_int_equal(ks->credentials[1].secret_len, 48);
	assert_int_equal(ks->credentials[1].not_after, 1893456000);
	assert_int_equal(ks->all_keys, 1);
	cfg_free(cfg);

	unlink(tpath("creds/current"));
	unlink(tpath("hsm.pin"));
	rmdir(tpath("creds"));
	free(text);
	free(orig);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_minimal_defaults),
		cmocka_unit_test(test_all_values),
		cmocka_unit_test(test_nullables),
		cmocka_unit_test(test_comments),
		cmocka_unit_test(test_syntax),
		cmocka_unit_test(test_top),
		cmocka_unit_test(test_listen),
		cmocka_unit_test(test_tls),
		cmocka_unit_test(test_health_listen),
		cmocka_unit_test(test_hsm),
		cmocka_unit_test(test_pin_file),
		cmocka_unit_test(test_health),
		cmocka_unit_test(test_limits_sigv4_log),
		cmocka_unit_test(test_keystores),
		cmocka_unit_test(test_same_akid_other_keystore),
		cmocka_unit_test(test_secret_inline),
		cmocka_unit_test(test_secret_file),
		cmocka_unit_test(test_secret_fifo),
		cmocka_unit_test(test_error_is_one_printable_line),
		cmocka_unit_test(test_load_file),
		cmocka_unit_test(test_validators),
		cmocka_unit_test(test_no_errbuf),
		cmocka_unit_test(test_example),
	};

	return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
