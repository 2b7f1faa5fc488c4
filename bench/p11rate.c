/*
 * p11rate.c -- the raw PKCS#11 AES-GCM rate of a token from a plain C loop:
 * the HSM limit the proxy is compared with.
 *
 *   p11rate -m MODULE -T TOKEN -f PIN_FILE [-k KEY] [-o encrypt|decrypt]
 *           [-n THREADS] [-d SECONDS] [-b BYTES] [-a AAD_BYTES] [-x]
 *
 * Each thread opens its own session on the token (one login for all) and
 * runs C_EncryptInit + C_Encrypt (or C_DecryptInit + C_Decrypt of one
 * ciphertext made at start) for -d seconds: exactly the two calls the
 * daemon makes per request, with the same sizes.  The module is loaded
 * the way the daemon loads it (p11-kit, managed); -x loads it with
 * dlopen() instead, with no p11-kit layer at all.
 * Output: "RESULT p11 op=... threads=N ops=... rate=... per_thread=..."
 */
#include "config.h"

#include <dlfcn.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>

#define PR_IV_LEN  12
#define PR_TAG_LEN 16
#define PR_MAXTHREADS 256

static struct {
	const char *module;
	const char *token;
	const char *pinfile;
	const char *key;
	int decrypt;
	int threads;
	double seconds;
	size_t pt_len;
	size_t aad_len;
	int direct;
} o = {
	.key = "demo-key",
	.threads = 1,
	.seconds = 3,
	.pt_len = 256,
	.aad_len = 68,       /* 64 bytes of AAD + the daemon's 4-byte framing */
};

static CK_FUNCTION_LIST *f;
static CK_SLOT_ID slot;
static unsigned char *pt, *aad, *ct;   /* ct: ciphertext || tag */
static unsigned char ct_iv[PR_IV_LEN];
static volatile int go;
static uint64_t t_stop;

struct pr_thread {
	pthread_t tid;
	CK_SESSION_HANDLE s;
	CK_OBJECT_HANDLE key;
	unsigned long long ops;
	CK_RV rv;
	double secs;
};

static void
pr_die(const char *what, CK_RV rv)
{
	fprintf(stderr, "p11rate: %s: 0x%lx\n", what, (unsigned long)rv);
	exit(2);
}

static uint64_t
pr_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static CK_SLOT_ID
pr_find_slot(void)
{
	CK_SLOT_ID slots[64];
	CK_ULONG n = 64, i;
	CK_TOKEN_INFO ti;
	char label[33];
	size_t l;
	CK_RV rv;

	if ((rv = f->C_GetSlotList(CK_TRUE, slots, &n)) != CKR_OK)
		pr_die("C_GetSlotList", rv);
	for (i = 0; i < n; i++) {
		if (f->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
			continue;
		memcpy(label, ti.label, 32);
		label[32] = '\0';
		for (l = 32; l > 0 && label[l - 1] == ' '; l--)
			label[l - 1] = '\0';
		if (strcmp(label, o.token) == 0)
			return slots[i];
	}
	fprintf(stderr, "p11rate: no token labelled %s\n", o.token);
	exit(2);
}

static CK_OBJECT_HANDLE
pr_find_key(CK_SESSION_HANDLE s)
{
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_LABEL, (void *)o.key, strlen(o.key) },
	};
	CK_OBJECT_HANDLE h = CK_INVALID_HANDLE;
	CK_ULONG n = 0;
	CK_RV rv;

	if ((rv = f->C_FindObjectsInit(s, tmpl, 2)) != CKR_OK)
		pr_die("C_FindObjectsInit", rv);
	if ((rv = f->C_FindObjects(s, &h, 1, &n)) != CKR_OK)
		pr_die("C_FindObjects", rv);
	f->C_FindObjectsFinal(s);
	if (n != 1) {
		fprintf(stderr, "p11rate: no key labelled %s\n", o.key);
		exit(2);
	}
	return h;
}

static CK_RV
pr_encrypt(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key, unsigned char *iv,
    unsigned char *out)
{
	CK_GCM_PARAMS gp;
	CK_MECHANISM mech = { CKM_AES_GCM, &gp, sizeof(gp) };
	CK_ULONG outlen = o.pt_len + PR_TAG_LEN;
	CK_RV rv;

	memset(&gp, 0, sizeof(gp));
	gp.pIv = iv;
	gp.ulIvLen = PR_IV_LEN;
	gp.ulIvBits = PR_IV_LEN * 8;
	gp.pAAD = aad;
	gp.ulAADLen = o.aad_len;
	gp.ulTagBits = PR_TAG_LEN * 8;
	if ((rv = f->C_EncryptInit(s, &mech, key)) != CKR_OK)
		return rv;
	return f->C_Encrypt(s, pt, o.pt_len, out, &outlen);
}

static CK_RV
pr_decrypt(CK_SESSION_HANDLE s, CK_OBJECT_HANDLE key, unsigned char *out)
{
	CK_GCM_PARAMS gp;
	CK_MECHANISM mech = { CKM_AES_GCM, &gp, sizeof(gp) };
	CK_ULONG outlen = o.pt_len + PR_TAG_LEN;
	CK_RV rv;

	memset(&gp, 0, sizeof(gp));
	gp.pIv = ct_iv;
	gp.ulIvLen = PR_IV_LEN;
	gp.ulIvBits = PR_IV_LEN * 8;
	gp.pAAD = aad;
	gp.ulAADLen = o.aad_len;
	gp.ulTagBits = PR_TAG_LEN * 8;
	if ((rv = f->C_DecryptInit(s, &mech, key)) != CKR_OK)
		return rv;
	rv = f->C_Decrypt(s, ct, o.pt_len + PR_TAG_LEN, out, &outlen);
	if (rv == CKR_OK && outlen != o.pt_len)
		rv = CKR_GENERAL_ERROR;
	return rv;
}

static void *
pr_thread_main(void *arg)
{
	struct pr_thread *t = arg;
	unsigned char iv[PR_IV_LEN] = { 0 }, *out;
	uint64_t t0, t1, ctr = 0;

	if ((out = malloc(o.pt_len + PR_TAG_LEN)) == NULL)
		pr_die("malloc", 0);
	while (!__atomic_load_n(&go, __ATOMIC_ACQUIRE))
		;
	t0 = pr_now();
	for (;;) {
		if (o.decrypt)
			t->rv = pr_decrypt(t->s, t->key, out);
		else {
			/* a fresh IV per call, as the daemon uses (counter here) */
			ctr++;
			memcpy(iv, &ctr, sizeof(ctr));
			t->rv = pr_encrypt(t->s, t->key, iv, out);
		}
		if (t->rv != CKR_OK)
			break;
		t->ops++;
		if ((t->ops & 15) == 0 && pr_now() >= t_stop)
			break;
	}
	t1 = pr_now();
	t->secs = (double)(t1 - t0) / 1e9;
	free(out);
	return NULL;
}

static void
pr_read_pin(unsigned char *pin, size_t cap, CK_ULONG *len)
{
	FILE *fp = fopen(o.pinfile, "r");
	size_t n;

	if (fp == NULL) {
		fprintf(stderr, "p11rate: cannot open %s\n", o.pinfile);
		exit(2);
	}
	n = fread(pin, 1, cap, fp);
	fclose(fp);
	while (n > 0 && (pin[n - 1] == '\n' || pin[n - 1] == '\r'))
		n--;
	*len = n;
}

static void
pr_load(void)
{
	CK_C_INITIALIZE_ARGS ia;
	CK_RV (*gfl)(CK_FUNCTION_LIST_PTR_PTR);
	void *dl;
	CK_RV rv;

	if (!o.direct) {
		if ((f = p11_kit_module_load(o.module, 0)) == NULL) {
			fprintf(stderr, "p11rate: cannot load %s: %s\n", o.module,
			    p11_kit_message() ? p11_kit_message() : "?");
			exit(2);
		}
		if ((rv = p11_kit_module_initialize(f)) != CKR_OK)
			pr_die("C_Initialize", rv);
		return;
	}
	if ((dl = dlopen(o.module, RTLD_NOW | RTLD_LOCAL)) == NULL) {
		fprintf(stderr, "p11rate: dlopen: %s\n", dlerror());
		exit(2);
	}
	*(void **)&gfl = dlsym(dl, "C_GetFunctionList");
	if (gfl == NULL || (rv = gfl(&f)) != CKR_OK)
		pr_die("C_GetFunctionList", 0);
	memset(&ia, 0, sizeof(ia));
	ia.flags = CKF_OS_LOCKING_OK;
	if ((rv = f->C_Initialize(&ia)) != CKR_OK)
		pr_die("C_Initialize", rv);
}

int
main(int argc, char **argv)
{
	struct pr_thread *th;
	CK_SESSION_HANDLE login;
	unsigned char pin[256], iv0[PR_IV_LEN] = { 1 };
	unsigned long long total = 0;
	double secs = 0;
	CK_ULONG pinlen;
	CK_RV rv;
	int ch, i;

	while ((ch = getopt(argc, argv, "m:T:f:k:o:n:d:b:a:x")) != -1) {
		switch (ch) {
		case 'm': o.module = optarg; break;
		case 'T': o.token = optarg; break;
		case 'f': o.pinfile = optarg; break;
		case 'k': o.key = optarg; break;
		case 'o': o.decrypt = strcmp(optarg, "decrypt") == 0; break;
		case 'n': o.threads = atoi(optarg); break;
		case 'd': o.seconds = atof(optarg); break;
		case 'b': o.pt_len = (size_t)atol(optarg); break;
		case 'a': o.aad_len = (size_t)atol(optarg); break;
		case 'x': o.direct = 1; break;
		default: goto usage;
		}
	}
	if (o.module == NULL || o.token == NULL || o.pinfile == NULL ||
	    o.threads < 1 || o.threads > PR_MAXTHREADS || o.seconds <= 0 ||
	    o.pt_len < 1)
		goto usage;
	if ((pt = calloc(1, o.pt_len)) == NULL ||
	    (aad = calloc(1, o.aad_len + 1)) == NULL ||
	    (ct = calloc(1, o.pt_len + PR_TAG_LEN)) == NULL ||
	    (th = calloc((size_t)o.threads, sizeof(*th))) == NULL)
		pr_die("calloc", 0);
	memset(pt, 0x5a, o.pt_len);
	memset(aad, 0xa5, o.aad_len);

	pr_load();
	slot = pr_find_slot();
	if ((rv = f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION,
	    NULL, NULL, &login)) != CKR_OK)
		pr_die("C_OpenSession", rv);
	pr_read_pin(pin, sizeof(pin), &pinlen);
	rv = f->C_Login(login, CKU_USER, pin, pinlen);
	memset(pin, 0, sizeof(pin));
	if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN)
		pr_die("C_Login", rv);
	for (i = 0; i < o.threads; i++) {
		if ((rv = f->C_OpenSession(slot, CKF_SERIAL_SESSION |
		    CKF_RW_SESSION, NULL, NULL, &th[i].s)) != CKR_OK)
			pr_die("C_OpenSession", rv);
		th[i].key = pr_find_key(th[i].s);
	}
	if (o.decrypt) {
		memcpy(ct_iv, iv0, sizeof(ct_iv));
		if ((rv = pr_encrypt(th[0].s, th[0].key, ct_iv, ct)) != CKR_OK)
			pr_die("set-up encrypt", rv);
	}
	for (i = 0; i < o.threads; i++)
		if (pthread_create(&th[i].tid, NULL, pr_thread_main, &th[i]) != 0)
			pr_die("pthread_create", 0);
	t_stop = pr_now() + (uint64_t)(o.seconds * 1e9);
	__atomic_store_n(&go, 1, __ATOMIC_RELEASE);
	for (i = 0; i < o.threads; i++) {
		pthread_join(th[i].tid, NULL);
		if (th[i].rv != CKR_OK)
			pr_die(o.decrypt ? "C_Decrypt" : "C_Encrypt", th[i].rv);
		total += th[i].ops;
		if (th[i].secs > secs)
			secs = th[i].secs;
	}
	printf("RESULT p11 op=%s threads=%d sessions=%d bytes=%zu ops=%llu "
	    "seconds=%.2f rate=%.1f per_thread=%.1f loader=%s\n",
	    o.decrypt ? "decrypt" : "encrypt", o.threads, o.threads, o.pt_len,
	    total, secs, (double)total / secs,
	    (double)total / secs / o.threads, o.direct ? "dlopen" : "p11-kit");
	for (i = 0; i < o.threads; i++)
		f->C_CloseSession(th[i].s);
	f->C_Logout(login);
	f->C_CloseSession(login);
	if (o.direct)
		f->C_Finalize(NULL);
	else
		p11_kit_module_finalize(f);
	free(th);
	free(pt);
	free(aad);
	free(ct);
	return 0;
 usage:
	fprintf(stderr, "usage: p11rate -m MODULE -T TOKEN -f PIN_FILE "
	    "[-k KEY] [-o encrypt|decrypt]\n"
	    "       [-n THREADS] [-d SECONDS] [-b BYTES] [-a AAD_BYTES] [-x]\n");
	return 2;
}
