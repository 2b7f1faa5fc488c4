/*
 * hsm-fixture.h -- a throwaway SoftHSMv2 cluster for test_hsm and
 * test_health: two tokens (xks-a, xks-b) holding the same AES keys with
 * exactly chosen attributes, reached through the xks-shim module so that
 * tests can inject latency and errors and count calls.
 *
 * Included by one test file each (static functions only).
 */
#ifndef XKS_HSM_FIXTURE_H
#define XKS_HSM_FIXTURE_H

#include <dlfcn.h>
#include <errno.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>
/* p11-kit 0.24's pkcs11.h leaks these compatibility macros (no #undef):
 * they would rename struct hsm_job's iv_len and aad_len */
#undef iv_ptr
#undef iv_len
#undef iv_bits
#undef aad_ptr
#undef aad_len
#undef tag_bits

#define FX_SOFTHSM "/usr/lib/softhsm/libsofthsm2.so"
#define FX_PIN "1234"
#define FX_SO_PIN "87654321"

static char fx_dir[256];
static char fx_control_path[300];
static char fx_counters_path[300];
static char fx_shim[512];

/* The AES-256 key material of "k256" on both tokens. */
static const unsigned char fx_k256[32] = {
	0x60, 0x3d, 0xeb, 0x10, 0x15, 0xca, 0x71, 0xbe, 0x2b, 0x73, 0xae,
	0xf0, 0x85, 0x7d, 0x77, 0x81, 0x1f, 0x35, 0x2c, 0x07, 0x3b, 0x61,
	0x08, 0xd7, 0x2d, 0x98, 0x10, 0xa3, 0x09, 0x14, 0xdf, 0xf4,
};

struct fx_key {
	const char *label;
	size_t len;
	int enc, dec, wrap, unwrap, sign, verify, derive;
	const char *start, *end;      /* "YYYYMMDD" or NULL */
	int copies;                   /* objects with this label per token */
	int public;                   /* CKA_PRIVATE false */
};

static const struct fx_key fx_keys[] = {
	{ "k256", 32, 1, 1, 0, 0, 0, 0, 0, NULL, NULL, 1 },
	{ "xks-health", 32, 1, 1, 0, 0, 0, 0, 0, NULL, NULL, 1 },
	{ "enc-only", 32, 1, 0, 0, 0, 0, 0, 0, NULL, NULL, 1 },
	{ "dec-only", 32, 0, 1, 0, 0, 0, 0, 0, NULL, NULL, 1 },
	{ "neither", 32, 0, 0, 0, 0, 0, 0, 0, NULL, NULL, 1 },
	{ "wrapper", 32, 0, 0, 1, 1, 1, 1, 1, NULL, NULL, 1 },
	{ "k128", 16, 1, 1, 0, 0, 0, 0, 0, NULL, NULL, 1 },
	/* SoftHSMv2 2.6 stores the dates of private objects unencrypted and
	 * then fails to decrypt them (CKR_GENERAL_ERROR): dated keys are
	 * public objects here, but for "private-dated" */
	{ "expired", 32, 1, 1, 0, 0, 0, 0, 0, "19990101", "20000101", 1, 1 },
	{ "future", 32, 1, 1, 0, 0, 0, 0, 0, "29990101", NULL, 1, 1 },
	{ "current", 32, 1, 1, 0, 0, 0, 0, 0, "20000101", "29991231", 1, 1 },
	{ "private-dated", 32, 1, 1, 0, 0, 0, 0, 0, NULL, "20000101", 1, 0 },
	{ "dup", 32, 1, 1, 0, 0, 0, 0, 0, NULL, NULL, 2 },
};

static int
fx_have_softhsm(void)
{
	return access(FX_SOFTHSM, R_OK) == 0 &&
	    access("/usr/bin/softhsm2-util", X_OK) == 0;
}

static int
fx_write(const char *path, const char *text)
{
	char tmp[400];
	FILE *fp;

	snprintf(tmp, sizeof(tmp), "%s.tmp", path);
	if ((fp = fopen(tmp, "w")) == NULL)
		return -1;
	fputs(text, fp);
	if (fclose(fp) != 0)
		return -1;
	return rename(tmp, path);
}

/* Replace the shim's rules (atomically). */
static void
fx_control(const char *text)
{
	if (fx_write(fx_control_path, text) != 0)
		fprintf(stderr, "cannot write %s\n", fx_control_path);
}

/* A call counter of the shim. */
static __attribute__((unused)) unsigned long long
fx_counter(const char *fn)
{
	char line[128], name[64];
	unsigned long long v = 0, x;
	FILE *fp = fopen(fx_counters_path, "r");

	if (fp == NULL)
		return 0;
	while (fgets(line, sizeof(line), fp) != NULL)
		if (sscanf(line, "%63s %llu", name, &x) == 2 &&
		    strcmp(name, fn) == 0)
			v = x;
	fclose(fp);
	return v;
}

/* Sum of every counter. */
static __attribute__((unused)) unsigned long long
fx_counter_total(void)
{
	char line[128], name[64];
	unsigned long long v = 0, x;
	FILE *fp = fopen(fx_counters_path, "r");

	if (fp == NULL)
		return 0;
	while (fgets(line, sizeof(line), fp) != NULL)
		if (sscanf(line, "%63s %llu", name, &x) == 2)
			v += x;
	fclose(fp);
	return v;
}

static void
fx_pad(unsigned char *dst, size_t n, const char *s)
{
	memset(dst, ' ', n);
	memcpy(dst, s, strlen(s));
}

/* Create the keys on the token labelled `label` (in a child process). */
static int
fx_make_keys(CK_FUNCTION_LIST *f, const char *label)
{
	CK_SLOT_ID slots[16];
	CK_ULONG n = 16, i;
	CK_TOKEN_INFO ti;
	CK_SESSION_HANDLE s;
	unsigned char want[32];
	size_t k;
	int c;

	fx_pad(want, 32, label);
	if (f->C_GetSlotList(CK_TRUE, slots, &n) != CKR_OK)
		return -1;
	for (i = 0; i < n; i++)
		if (f->C_GetTokenInfo(slots[i], &ti) == CKR_OK &&
		    memcmp(ti.label, want, 32) == 0)
			break;
	if (i == n)
		return -1;
	if (f->C_OpenSession(slots[i], CKF_SERIAL_SESSION | CKF_RW_SESSION,
	    NULL, NULL, &s) != CKR_OK)
		return -1;
	if (f->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR)FX_PIN,
	    strlen(FX_PIN)) != CKR_OK)
		return -1;
	for (k = 0; k < sizeof(fx_keys) / sizeof(fx_keys[0]); k++) {
		const struct fx_key *key = &fx_keys[k];
		CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
		CK_KEY_TYPE kt = CKK_AES;
		CK_BBOOL t = CK_TRUE, fl = CK_FALSE;
		CK_BBOOL priv = key->public ? CK_FALSE : CK_TRUE;
		CK_BBOOL enc = key->enc, dec = key->dec, wrap = key->wrap,
		    unwrap = key->unwrap, sign = key->sign,
		    verify = key->verify, derive = key->derive;
		unsigned char value[32];
		CK_ATTRIBUTE a[20] = {
			{ CKA_CLASS, &cls, sizeof(cls) },
			{ CKA_KEY_TYPE, &kt, sizeof(kt) },
			{ CKA_TOKEN, &t, 1 },
			{ CKA_PRIVATE, &priv, 1 },
			{ CKA_SENSITIVE, &t, 1 },
			{ CKA_EXTRACTABLE, &fl, 1 },
			{ CKA_LABEL, (void *)key->label, strlen(key->label) },
			{ CKA_VALUE, value, key->len },
			{ CKA_ENCRYPT, &enc, 1 },
			{ CKA_DECRYPT, &dec, 1 },
			{ CKA_WRAP, &wrap, 1 },
			{ CKA_UNWRAP, &unwrap, 1 },
			{ CKA_SIGN, &sign, 1 },
			{ CKA_VERIFY, &verify, 1 },
			{ CKA_DERIVE, &derive, 1 },
		};
		CK_ULONG na = 15;
		CK_OBJECT_HANDLE obj;
		CK_RV rv;

		for (c = 0; c < 32; c++)
			value[c] = (unsigned char)(k * 7 + (size_t)c);
		if (strcmp(key->label, "k256") == 0)
			memcpy(value, fx_k256, 32);
		if (key->start != NULL) {
			a[na].type = CKA_START_DATE;
			a[na].pValue = (void *)key->start;
			a[na++].ulValueLen = 8;
		}
		if (key->end != NULL) {
			a[na].type = CKA_END_DATE;
			a[na].pValue = (void *)key->end;
			a[na++].ulValueLen = 8;
		}
		for (c = 0; c < key->copies; c++) {
			rv = f->C_CreateObject(s, a, na, &obj);
			if (rv != CKR_OK) {
				fprintf(stderr, "C_CreateObject %s: 0x%lx\n",
				    key->label, (unsigned long)rv);
				return -1;
			}
		}
	}
	f->C_Logout(s);
	f->C_CloseSession(s);
	return 0;
}

static int
fx_child_keys(void)
{
	CK_C_INITIALIZE_ARGS args;
	CK_C_GetFunctionList gfl;
	CK_FUNCTION_LIST *f;
	void *dl = dlopen(FX_SOFTHSM, RTLD_NOW | RTLD_LOCAL);
	int r;

	if (dl == NULL)
		return 1;
	gfl = (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList");
	if (gfl == NULL || gfl(&f) != CKR_OK)
		return 1;
	memset(&args, 0, sizeof(args));
	args.flags = CKF_OS_LOCKING_OK;
	if (f->C_Initialize(&args) != CKR_OK)
		return 1;
	r = fx_make_keys(f, "xks-a") == 0 && fx_make_keys(f, "xks-b") == 0;
	f->C_Finalize(NULL);
	return r ? 0 : 1;
}

static int
fx_rm_cb(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
	(void)st; (void)flag; (void)ftw;
	return remove(path);
}

static void
fx_teardown(void)
{
	if (fx_dir[0] != '\0')
		nftw(fx_dir, fx_rm_cb, 16, FTW_DEPTH | FTW_PHYS);
	fx_dir[0] = '\0';
}

/*
 * Make the token directory, two tokens and their keys; point SoftHSMv2
 * and the shim at them.  Call before anything loads SoftHSMv2.
 */
static int
fx_setup(void)
{
	char path[400], text[600], cmd[1200];
	const char *shim = getenv("XKS_SHIM");
	pid_t pid;
	int st;

	snprintf(fx_dir, sizeof(fx_dir), "/tmp/xks-hsm-XXXXXX");
	if (mkdtemp(fx_dir) == NULL)
		return -1;
	snprintf(path, sizeof(path), "%s/tokens", fx_dir);
	if (mkdir(path, 0700) != 0)
		return -1;
	snprintf(text, sizeof(text), "directories.tokendir = %s/tokens\n"
	    "objectstore.backend = file\nlog.level = ERROR\n", fx_dir);
	snprintf(path, sizeof(path), "%s/softhsm2.conf", fx_dir);
	if (fx_write(path, text) != 0)
		return -1;
	setenv("SOFTHSM2_CONF", path, 1);
	snprintf(path, sizeof(path), "%s/pin", fx_dir);
	if (fx_write(path, FX_PIN "\n") != 0 || chmod(path, 0600) != 0)
		return -1;
	snprintf(fx_control_path, sizeof(fx_control_path), "%s/shim.control",
	    fx_dir);
	snprintf(fx_counters_path, sizeof(fx_counters_path),
	    "%s/shim.counters", fx_dir);
	fx_control("");
	setenv("XKS_SHIM_TARGET", FX_SOFTHSM, 1);
	setenv("XKS_SHIM_CONTROL", fx_control_path, 1);
	setenv("XKS_SHIM_COUNTERS", fx_counters_path, 1);
	if (shim != NULL && *shim != '\0')
		snprintf(fx_shim, sizeof(fx_shim), "%s", shim);
	else
		snprintf(fx_shim, sizeof(fx_shim), "%s/.libs/xks-shim.so",
		    TOP_BUILDDIR);
	snprintf(cmd, sizeof(cmd), "softhsm2-util --init-token --free "
	    "--label xks-a --so-pin %s --pin %s >/dev/null && "
	    "softhsm2-util --init-token --free --label xks-b --so-pin %s "
	    "--pin %s >/dev/null", FX_SO_PIN, FX_PIN, FX_SO_PIN, FX_PIN);
	if (system(cmd) != 0)
		return -1;
	if ((pid = fork()) < 0)
		return -1;
	if (pid == 0)
		_exit(fx_child_keys());
	if (waitpid(pid, &st, 0) != pid || !WIFEXITED(st) ||
	    WEXITSTATUS(st) != 0)
		return -1;
	return 0;
}

/*
 * Start of main() for a test that needs the tokens: 77 (skipped) without
 * SoftHSMv2, 1 when the tokens cannot be made, 0 when they are ready
 * (fx_teardown() removes them).  Logs errors only, unless XKS_TEST_DEBUG.
 * Include log.h first.
 */
static int
fx_begin(void)
{
	if (!fx_have_softhsm()) {
		fprintf(stderr, "SoftHSMv2 is not installed: skipped\n");
		return 77;
	}
	log_configure(getenv("XKS_TEST_DEBUG") ? LOG_LVL_DEBUG : LOG_LVL_ERROR,
	    LOG_FMT_TEXT);
	if (fx_setup() != 0) {
		fprintf(stderr, "cannot make the SoftHSMv2 tokens\n");
		fx_teardown();
		return 1;
	}
	return 0;
}

#endif
