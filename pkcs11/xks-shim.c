/*
 * xks-shim.c -- a PKCS#11 module for tests and benchmarks that forwards
 * every call to another module and injects latency and errors, and counts
 * calls.
 *
 * Environment (read once, when the module is loaded):
 *   XKS_SHIM_TARGET    the module to forward to
 *                      (default /usr/lib/softhsm/libsofthsm2.so)
 *   XKS_SHIM_CONTROL   the control file (optional; absent file = no rules)
 *   XKS_SHIM_COUNTERS  the counters file (optional)
 *
 * Control file: one rule a line, '#' starts a comment.  The file is
 * stat()ed on every call and re-read when its inode, size, mtime or ctime
 * changed; write it atomically (write a temporary file, rename it over).
 *
 *   latency USEC [FUNCS] [token=LABEL] [count=N]
 *       sleep USEC microseconds before forwarding the matching calls
 *       (FUNCS defaults to "crypto")
 *   error CKR FUNCS [token=LABEL] [count=N]
 *       return CKR instead of forwarding the matching calls; CKR is a name
 *       (CKR_DEVICE_ERROR), hex (0x30) or decimal; with count=N only the
 *       next N matching calls after the file was (re)loaded fail
 *   reset
 *       zero the counters whenever the file is (re)loaded
 *
 *   FUNCS  a comma-separated list of function names (C_Encrypt or
 *          Encrypt), or "crypto" (the Encrypt/Decrypt/Sign/Verify/Digest
 *          families), or "all".
 *   token=LABEL  only calls on a slot or session of the token with this
 *          CKA_LABEL; calls with neither (C_Initialize, C_GetSlotList, ...)
 *          never match such a rule.
 *
 * Counters file: rewritten in place (mmap) on every call, one line per
 * function, "NAME COUNT" (name padded to 28 characters, count to 12
 * digits), e.g.  awk '$1 == "C_Encrypt" { print $2 + 0 }' FILE
 * An existing counters file of that layout is continued, not zeroed (the
 * module may be unloaded and loaded again): remove it, or use "reset",
 * to start from zero.
 *
 * The injected errors are returned as they are: rules do not change the
 * target's state (a failed C_EncryptInit leaves no operation active).
 */
#include "config.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <p11-kit/pkcs11.h>

#define SHIM_DEFAULT_TARGET "/usr/lib/softhsm/libsofthsm2.so"
#define SHIM_LINE 42                  /* 28 + 1 + 12 + 1 */
#define SHIM_MAX_RULES 64
#define SHIM_MAX_SLOTS 64

/* name, kind (N: none, SL: slot, SE: session), params, args */
#define SHIM_FUNCS \
 X(C_Initialize, N, (CK_VOID_PTR a), (a)) \
 X(C_Finalize, N, (CK_VOID_PTR a), (a)) \
 X(C_GetInfo, N, (CK_INFO_PTR a), (a)) \
 X(C_GetSlotList, N, (CK_BBOOL a, CK_SLOT_ID_PTR b, CK_ULONG_PTR c), (a, b, c)) \
 X(C_GetSlotInfo, SL, (CK_SLOT_ID slot, CK_SLOT_INFO_PTR a), (slot, a)) \
 X(C_GetTokenInfo, SL, (CK_SLOT_ID slot, CK_TOKEN_INFO_PTR a), (slot, a)) \
 X(C_GetMechanismList, SL, (CK_SLOT_ID slot, CK_MECHANISM_TYPE_PTR a, CK_ULONG_PTR b), (slot, a, b)) \
 X(C_GetMechanismInfo, SL, (CK_SLOT_ID slot, CK_MECHANISM_TYPE a, CK_MECHANISM_INFO_PTR b), (slot, a, b)) \
 X(C_InitToken, SL, (CK_SLOT_ID slot, CK_UTF8CHAR_PTR a, CK_ULONG b, CK_UTF8CHAR_PTR c), (slot, a, b, c)) \
 X(C_InitPIN, SE, (CK_SESSION_HANDLE s, CK_UTF8CHAR_PTR a, CK_ULONG b), (s, a, b)) \
 X(C_SetPIN, SE, (CK_SESSION_HANDLE s, CK_UTF8CHAR_PTR a, CK_ULONG b, CK_UTF8CHAR_PTR c, CK_ULONG d), (s, a, b, c, d)) \
 X(C_OpenSession, SL, (CK_SLOT_ID slot, CK_FLAGS a, CK_VOID_PTR b, CK_NOTIFY c, CK_SESSION_HANDLE_PTR d), (slot, a, b, c, d)) \
 X(C_CloseSession, SE, (CK_SESSION_HANDLE s), (s)) \
 X(C_CloseAllSessions, SL, (CK_SLOT_ID slot), (slot)) \
 X(C_GetSessionInfo, SE, (CK_SESSION_HANDLE s, CK_SESSION_INFO_PTR a), (s, a)) \
 X(C_GetOperationState, SE, (CK_SESSION_HANDLE s, CK_BYTE_PTR a, CK_ULONG_PTR b), (s, a, b)) \
 X(C_SetOperationState, SE, (CK_SESSION_HANDLE s, CK_BYTE_PTR a, CK_ULONG b, CK_OBJECT_HANDLE c, CK_OBJECT_HANDLE d), (s, a, b, c, d)) \
 X(C_Login, SE, (CK_SESSION_HANDLE s, CK_USER_TYPE a, CK_UTF8CHAR_PTR b, CK_ULONG c), (s, a, b, c)) \
 X(C_Logout, SE, (CK_SESSION_HANDLE s), (s)) \
 X(C_CreateObject, SE, (CK_SESSION_HANDLE s, CK_ATTRIBUTE_PTR a, CK_ULONG b, CK_OBJECT_HANDLE_PTR c), (s, a, b, c)) \
 X(C_CopyObject, SE, (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE a, CK_ATTRIBUTE_PTR b, CK_ULONG c, CK_OBJECT_HANDLE_PTR d), (s, a, b, c, d)) \
 X(C_DestroyObject, SE, (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE a), (s, a)) \
 X(C_GetObjectSize, SE, (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE a, CK_ULONG_PTR b), (s, a, b)) \
 X(C_GetAttributeValue, SE, (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE a, CK_ATTRIBUTE_PTR b, CK_ULONG c), (s, a, b, c)) \
 X(C_SetAttributeValue, SE, (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE a, CK_ATTRIBUTE_PTR b, CK_ULONG c), (s, a, b, c)) \
 X(C_FindObjectsInit, SE, (CK_SESSION_HANDLE s, CK_ATTRIBUTE_PTR a, CK_ULONG b), (s, a, b)) \
 X(C_FindObjects, SE, (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE_PTR a, CK_ULONG b, CK_ULONG_PTR c), (s, a, b, c)) \
 X(C_FindObjectsFinal, SE, (CK_SESSION_HANDLE s), (s)) \
 X(C_EncryptInit, SE, (CK_SESSION_HANDLE s, CK_MECHANISM_PTR a, CK_OBJECT_HANDLE b), (s, a, b)) \
 X(C_Encrypt, SE, (CK_SESSION_HANDLE s, CK_BYTE_PTR a, CK_ULONG b, CK_BYTE_PTR c, CK_ULONG_PTR d), (s, a, b, c, d)) \
 X(C_EncryptUpdate, SE, (CK_SESSION_HANDLE s, CK_BYTE_PTR a, CK_ULONG b, CK_BYTE_PTR c, CK_ULONG_PTR d), (s, a, b, c, d)) \
 X(C_EncryptFinal, SE, (CK_SESSION_HANDLE s, CK_BYTE_PTR a, CK_ULONG_PTR b), (s, a, b)) \
 X(C_DecryptInit, SE, (CK_SESSION_HANDLE s, CK_MECHANISM_PTR a, CK_OBJECT_HANDLE b), (s, a, b)) \
 X(C_Decrypt, SE, (CK_SESSION_HANDLE s, CK_BYTE_PTR a, CK_ULONG b, CK_BYTE_PTR c, CK_ULONG_PTR d), (s, a, b, c, d)) \
 X(C_DecryptUpdate, SE, (CK_SESSION_HANDLE s, CK_BYTE_PTR a, CK_ULONG b, CK_BYTE_PTR c, CK_ULONG_PTR d), (s, a, b, c, d)) \
 X(C_DecryptFinal, SE, (CK_SESSION_HANDLE s, CK_BYTE_PTR a, CK_ULONG_PTR b), (s, a, b)) \
 X(C_DigestInit, SE, (CK_SESSION_HANDLE s, CK_MECHANISM_PTR a), (s, a)) \
 X(C_Digest, SE, (CK_SESSION_HANDLE s, CK_BYTE_PTR a, CK_ULONG b, CK_BYTE_PTR c, CK_ULONG_PTR d), (s, a, b, c, d)) \
 X(C_DigestUpdate, SE, (CK_SESSION_HANDLE s, CK_BYTE_PTR a, CK_ULONG b), (s, a, b)) \
 X(C_DigestKey, SE, (CK_SESSION_HANDLE s, CK_OBJECT_HANDLE a), (s, a)) \
 X(C_DigestFinal, SE, (CK_SESSION_HANDLE s, CK_BYTE_PTR a, CK_ULONG_PTR b), (s, a, b)) \
 X(C_SignInit, SE, (CK_SESSION_HANDLE s, CK_MECHANISM_PTR a, CK_OBJECT_HANDLE b), (s, a, b)) \
 X(C_Sign, SE, (CK_SESSION_HANDLE s, CK_BYTE_PTR a, CK_ULONG b, CK_BYTE_PTR c, CK_ULONG_PTR d), (s, a, b, c, d)) \
 X(C_SignUpdate, SE, (CK_SESSION_HANDLE s, CK_BYTE_PTR a, CK_ULONG b), (s, a, b)) \
 X(C_SignFinal, SE, (CK_SESSION_HANDLE s, CK_BYTE_PTR a, CK_ULONG_PTR b), (s, a, b)) \
 X(C_SignRecoverInit, SE, (CK_SESSION_HANDLE s, CK_MECHANISM_PTR a, CK_OBJECT_HANDLE b), (s, a, b)) \
 X(C_SignRecover, SE, (CK_SESSION_HANDLE s, CK_BYTE_PTR a, CK_ULONG b, CK_BYTE_PTR c, CK_ULONG_PTR d), (s, a, b, c, d)) \
 X(C_VerifyInit, SE, (CK_SESSION_HANDLE s, CK_MECHANISM_PTR a, CK_OBJECT_HANDLE b), (s, a, b)) \
 X(C_Verify, SE, (CK_SESSION_HANDLE s, CK_BYTE_PTR a, CK_ULONG b, CK_BYTE_PTR c, CK_ULONG d), (s, a, b, c, d)) \
 X(C_VerifyUpdate, SE, (CK_SESSION_HANDLE s, CK_BYTE_PTR a, CK_ULONG b), (s, a, b)) \
 X(C_VerifyFinal, SE, (CK_SESSION_HANDLE s, CK_BYTE_PTR a, CK_ULONG b), (s, a, b)) \
 X(C_VerifyRecoverInit, SE, (CK_SESSION_HANDLE s, CK_MECHANISM_PTR a, CK_OBJECT_HANDLE b), (s, a, b)) \
 X(C_VerifyRecover, SE, (CK_SESSION_HANDLE s, CK_BYTE_PTR a, CK_ULONG b, CK_BYTE_PTR c, CK_ULONG_PTR d), (s, a, b, c, d)) \
 X(C_DigestEncryptUpdate, SE, (CK_SESSION_HANDLE s, CK_BYTE_PTR a, CK_ULONG b, CK_BYTE_PTR c, CK_ULONG_PTR d), (s, a, b, c, d)) \
 X(C_DecryptDigestUpdate, SE, (CK_SESSION_HANDLE s, CK_BYTE_PTR a, CK_ULONG b, CK_BYTE_PTR c, CK_ULONG_PTR d), (s, a, b, c, d)) \
 X(C_SignEncryptUpdate, SE, (CK_SESSION_HANDLE s, CK_BYTE_PTR a, CK_ULONG b, CK_BYTE_PTR c, CK_ULONG_PTR d), (s, a, b, c, d)) \
 X(C_DecryptVerifyUpdate, SE, (CK_SESSION_HANDLE s, CK_BYTE_PTR a, CK_ULONG b, CK_BYTE_PTR c, CK_ULONG_PTR d), (s, a, b, c, d)) \
 X(C_GenerateKey, SE, (CK_SESSION_HANDLE s, CK_MECHANISM_PTR a, CK_ATTRIBUTE_PTR b, CK_ULONG c, CK_OBJECT_HANDLE_PTR d), (s, a, b, c, d)) \
 X(C_GenerateKeyPair, SE, (CK_SESSION_HANDLE s, CK_MECHANISM_PTR a, CK_ATTRIBUTE_PTR b, CK_ULONG c, CK_ATTRIBUTE_PTR d, CK_ULONG e, CK_OBJECT_HANDLE_PTR f, CK_OBJECT_HANDLE_PTR g), (s, a, b, c, d, e, f, g)) \
 X(C_WrapKey, SE, (CK_SESSION_HANDLE s, CK_MECHANISM_PTR a, CK_OBJECT_HANDLE b, CK_OBJECT_HANDLE c, CK_BYTE_PTR d, CK_ULONG_PTR e), (s, a, b, c, d, e)) \
 X(C_UnwrapKey, SE, (CK_SESSION_HANDLE s, CK_MECHANISM_PTR a, CK_OBJECT_HANDLE b, CK_BYTE_PTR c, CK_ULONG d, CK_ATTRIBUTE_PTR e, CK_ULONG f, CK_OBJECT_HANDLE_PTR g), (s, a, b, c, d, e, f, g)) \
 X(C_DeriveKey, SE, (CK_SESSION_HANDLE s, CK_MECHANISM_PTR a, CK_OBJECT_HANDLE b, CK_ATTRIBUTE_PTR c, CK_ULONG d, CK_OBJECT_HANDLE_PTR e), (s, a, b, c, d, e)) \
 X(C_SeedRandom, SE, (CK_SESSION_HANDLE s, CK_BYTE_PTR a, CK_ULONG b), (s, a, b)) \
 X(C_GenerateRandom, SE, (CK_SESSION_HANDLE s, CK_BYTE_PTR a, CK_ULONG b), (s, a, b)) \
 X(C_GetFunctionStatus, SE, (CK_SESSION_HANDLE s), (s)) \
 X(C_CancelFunction, SE, (CK_SESSION_HANDLE s), (s)) \
 X(C_WaitForSlotEvent, N, (CK_FLAGS a, CK_SLOT_ID_PTR b, CK_VOID_PTR c), (a, b, c))

enum shim_fn {
#define X(n, k, p, a) SHIM_##n,
	SHIM_FUNCS
#undef X
	SHIM_NFUNCS
};

static const char *const shim_names[SHIM_NFUNCS] = {
#define X(n, k, p, a) #n,
	SHIM_FUNCS
#undef X
};

enum shim_kind { SHIM_KIND_N, SHIM_KIND_SL, SHIM_KIND_SE };

struct shim_rule {
	int is_error;
	unsigned long value;          /* usec or CKR */
	unsigned char fns[SHIM_NFUNCS];
	char token[33];               /* "" = any */
	long count;                   /* -1 = unlimited */
};

static struct {
	pthread_once_t once;
	CK_FUNCTION_LIST *tgt;
	CK_FUNCTION_LIST list;
	int ok;

	char control[4096];           /* static: the module may be unloaded */
	pthread_rwlock_t rlock;
	pthread_mutex_t clock;        /* control file signature */
	struct stat sig;
	int have_sig;
	struct shim_rule rules[SHIM_MAX_RULES];
	size_t nrules;
	int any_token;

	pthread_mutex_t cmu;          /* counters */
	unsigned long long counts[SHIM_NFUNCS];
	char *map;

	pthread_mutex_t smu;          /* slot label cache */
	struct { CK_SLOT_ID slot; char label[33]; } slots[SHIM_MAX_SLOTS];
	size_t nslots;
} shim = {
	.once = PTHREAD_ONCE_INIT,
	.rlock = PTHREAD_RWLOCK_INITIALIZER,
	.clock = PTHREAD_MUTEX_INITIALIZER,
	.cmu = PTHREAD_MUTEX_INITIALIZER,
	.smu = PTHREAD_MUTEX_INITIALIZER,
};

static const struct { const char *name; CK_RV rv; } shim_ckr[] = {
	{ "CKR_OK", CKR_OK },
	{ "CKR_HOST_MEMORY", CKR_HOST_MEMORY },
	{ "CKR_SLOT_ID_INVALID", CKR_SLOT_ID_INVALID },
	{ "CKR_GENERAL_ERROR", CKR_GENERAL_ERROR },
	{ "CKR_FUNCTION_FAILED", CKR_FUNCTION_FAILED },
	{ "CKR_ARGUMENTS_BAD", CKR_ARGUMENTS_BAD },
	{ "CKR_DEVICE_ERROR", CKR_DEVICE_ERROR },
	{ "CKR_DEVICE_MEMORY", CKR_DEVICE_MEMORY },
	{ "CKR_DEVICE_REMOVED", CKR_DEVICE_REMOVED },
	{ "CKR_ENCRYPTED_DATA_INVALID", CKR_ENCRYPTED_DATA_INVALID },
	{ "CKR_ENCRYPTED_DATA_LEN_RANGE", CKR_ENCRYPTED_DATA_LEN_RANGE },
	{ "CKR_KEY_HANDLE_INVALID", CKR_KEY_HANDLE_INVALID },
	{ "CKR_KEY_FUNCTION_NOT_PERMITTED", CKR_KEY_FUNCTION_NOT_PERMITTED },
	{ "CKR_OBJECT_HANDLE_INVALID", CKR_OBJECT_HANDLE_INVALID },
	{ "CKR_OPERATION_ACTIVE", CKR_OPERATION_ACTIVE },
	{ "CKR_PIN_INCORRECT", CKR_PIN_INCORRECT },
	{ "CKR_SESSION_CLOSED", CKR_SESSION_CLOSED },
	{ "CKR_SESSION_HANDLE_INVALID", CKR_SESSION_HANDLE_INVALID },
	{ "CKR_TOKEN_NOT_PRESENT", CKR_TOKEN_NOT_PRESENT },
	{ "CKR_TOKEN_NOT_RECOGNIZED", CKR_TOKEN_NOT_RECOGNIZED },
	{ "CKR_USER_NOT_LOGGED_IN", CKR_USER_NOT_LOGGED_IN },
	{ "CKR_CRYPTOKI_NOT_INITIALIZED", CKR_CRYPTOKI_NOT_INITIALIZED },
	{ "CKR_MECHANISM_INVALID", CKR_MECHANISM_INVALID },
	{ "CKR_MECHANISM_PARAM_INVALID", CKR_MECHANISM_PARAM_INVALID },
	{ "CKR_FUNCTION_NOT_SUPPORTED", CKR_FUNCTION_NOT_SUPPORTED },
};

/* Function set from "C_Encrypt,Decrypt" / "crypto" / "all". */
static int
shim_parse_fns(const char *s, unsigned char *fns)
{
	static const char *const crypto[] = {
		"Encrypt", "Decrypt", "Sign", "Verify", "Digest", NULL
	};
	char buf[512], *tok, *save = NULL;
	size_t i, k;

	memset(fns, 0, SHIM_NFUNCS);
	if (strcmp(s, "all") == 0) {
		memset(fns, 1, SHIM_NFUNCS);
		return 0;
	}
	if (strcmp(s, "crypto") == 0) {
		for (i = 0; i < SHIM_NFUNCS; i++)
			for (k = 0; crypto[k] != NULL; k++)
				if (strncmp(shim_names[i] + 2, crypto[k],
				    strlen(crypto[k])) == 0)
					fns[i] = 1;
		return 0;
	}
	snprintf(buf, sizeof(buf), "%s", s);
	for (tok = strtok_r(buf, ",", &save); tok != NULL;
	    tok = strtok_r(NULL, ",", &save)) {
		for (i = 0; i < SHIM_NFUNCS; i++)
			if (strcmp(shim_names[i], tok) == 0 ||
			    strcmp(shim_names[i] + 2, tok) == 0)
				break;
		if (i == SHIM_NFUNCS)
			return -1;
		fns[i] = 1;
	}
	return 0;
}

static int
shim_parse_ckr(const char *s, unsigned long *rv)
{
	char *end;
	size_t i;

	for (i = 0; i < sizeof(shim_ckr) / sizeof(shim_ckr[0]); i++)
		if (strcmp(s, shim_ckr[i].name) == 0) {
			*rv = shim_ckr[i].rv;
			return 0;
		}
	errno = 0;
	*rv = strtoul(s, &end, 0);
	return (errno != 0 || *end != '\0' || end == s) ? -1 : 0;
}

static void
shim_counters_reset(void)
{
	size_t i;

	pthread_mutex_lock(&shim.cmu);
	for (i = 0; i < SHIM_NFUNCS; i++) {
		shim.counts[i] = 0;
		if (shim.map != NULL) {
			char line[SHIM_LINE + 1];
			snprintf(line, sizeof(line), "%-28s %012llu\n",
			    shim_names[i], 0ULL);
			memcpy(shim.map + i * SHIM_LINE, line, SHIM_LINE);
		}
	}
	pthread_mutex_unlock(&shim.cmu);
}

/* Read the control file (rlock held for writing). */
static void
shim_load_rules(FILE *fp)
{
	char line[1024], *w[8], *save, *p;
	struct shim_rule *r;
	int nw, i, reset = 0;

	shim.nrules = 0;
	shim.any_token = 0;
	while (fp != NULL && fgets(line, sizeof(line), fp) != NULL) {
		if ((p = strchr(line, '#')) != NULL)
			*p = '\0';
		nw = 0;
		save = NULL;
		for (p = strtok_r(line, " \t\r\n", &save); p != NULL && nw < 8;
		    p = strtok_r(NULL, " \t\r\n", &save))
			w[nw++] = p;
		if (nw == 0)
			continue;
		if (strcmp(w[0], "reset") == 0) {
			reset = 1;
			continue;
		}
		if (shim.nrules >= SHIM_MAX_RULES || nw < 2)
			goto bad;
		r = &shim.rules[shim.nrules];
		memset(r, 0, sizeof(*r));
		r->count = -1;
		if (strcmp(w[0], "latency") == 0) {
			r->value = strtoul(w[1], NULL, 10);
			shim_parse_fns("crypto", r->fns);
		} else if (strcmp(w[0], "error") == 0) {
			r->is_error = 1;
			if (nw < 3 || shim_parse_ckr(w[1], &r->value) != 0)
				goto bad;
		} else
			goto bad;
		for (i = 2; i < nw; i++) {
			if (strncmp(w[i], "token=", 6) == 0) {
				snprintf(r->token, sizeof(r->token), "%s",
				    w[i] + 6);
				shim.any_token = 1;
			} else if (strncmp(w[i], "count=", 6) == 0)
				r->count = strtol(w[i] + 6, NULL, 10);
			else if (shim_parse_fns(w[i], r->fns) != 0)
				goto bad;
		}
		shim.nrules++;
		continue;
 bad:
		fprintf(stderr, "xks-shim: %s: bad line ignored: %s\n",
		    shim.control, w[0]);
	}
	if (reset)
		shim_counters_reset();
}

/* Re-read the control file when it changed. */
static void
shim_control_check(void)
{
	struct stat st;
	int exists, changed;
	FILE *fp;

	if (shim.control[0] == '\0')
		return;
	exists = stat(shim.control, &st) == 0;
	pthread_mutex_lock(&shim.clock);
	if (!exists)
		changed = shim.have_sig;
	else
		changed = !shim.have_sig || st.st_ino != shim.sig.st_ino ||
		    st.st_size != shim.sig.st_size ||
		    st.st_mtim.tv_sec != shim.sig.st_mtim.tv_sec ||
		    st.st_mtim.tv_nsec != shim.sig.st_mtim.tv_nsec ||
		    st.st_ctim.tv_sec != shim.sig.st_ctim.tv_sec ||
		    st.st_ctim.tv_nsec != shim.sig.st_ctim.tv_nsec;
	if (changed) {
		shim.have_sig = exists;
		if (exists)
			shim.sig = st;
		fp = exists ? fopen(shim.control, "re") : NULL;
		pthread_rwlock_wrlock(&shim.rlock);
		shim_load_rules(fp);
		pthread_rwlock_unlock(&shim.rlock);
		if (fp != NULL)
			fclose(fp);
	}
	pthread_mutex_unlock(&shim.clock);
}

static void
shim_count(enum shim_fn fn)
{
	char digits[16];

	pthread_mutex_lock(&shim.cmu);
	shim.counts[fn]++;
	if (shim.map != NULL) {
		snprintf(digits, sizeof(digits), "%012llu", shim.counts[fn]);
		memcpy(shim.map + fn * SHIM_LINE + 29, digits, 12);
	}
	pthread_mutex_unlock(&shim.cmu);
}

/* Label of the token behind a slot or session; "" if unknown. */
static void
shim_token_label(enum shim_kind kind, CK_ULONG id, char *out)
{
	CK_SESSION_INFO si;
	CK_TOKEN_INFO ti;
	CK_SLOT_ID slot;
	size_t i, n;

	out[0] = '\0';
	if (kind == SHIM_KIND_N)
		return;
	slot = id;
	if (kind == SHIM_KIND_SE) {
		if (shim.tgt->C_GetSessionInfo(id, &si) != CKR_OK)
			return;
		slot = si.slotID;
	}
	pthread_mutex_lock(&shim.smu);
	for (i = 0; i < shim.nslots; i++)
		if (shim.slots[i].slot == slot) {
			memcpy(out, shim.slots[i].label, 33);
			pthread_mutex_unlock(&shim.smu);
			return;
		}
	pthread_mutex_unlock(&shim.smu);
	if (shim.tgt->C_GetTokenInfo(slot, &ti) != CKR_OK)
		return;
	for (n = sizeof(ti.label); n > 0 && ti.label[n - 1] == ' '; n--)
		;
	memcpy(out, ti.label, n);
	out[n] = '\0';
	pthread_mutex_lock(&shim.smu);
	if (shim.nslots < SHIM_MAX_SLOTS) {
		shim.slots[shim.nslots].slot = slot;
		memcpy(shim.slots[shim.nslots].label, out, 33);
		shim.nslots++;
	}
	pthread_mutex_unlock(&shim.smu);
}

static void
shim_slots_forget(void)
{
	pthread_mutex_lock(&shim.smu);
	shim.nslots = 0;
	pthread_mutex_unlock(&shim.smu);
}

/* Count, then apply the rules: returns the injected error or CKR_OK. */
static CK_RV
shim_pre(enum shim_fn fn, enum shim_kind kind, CK_ULONG id)
{
	unsigned long sleep_us = 0;
	CK_RV rv = CKR_OK;
	char label[33];
	int have_label = 0;
	size_t i;

	shim_count(fn);
	shim_control_check();
	if (fn == SHIM_C_Initialize || fn == SHIM_C_Finalize ||
	    fn == SHIM_C_InitToken)
		shim_slots_forget();
	pthread_rwlock_rdlock(&shim.rlock);
	for (i = 0; i < shim.nrules; i++) {
		struct shim_rule *r = &shim.rules[i];
		if (!r->fns[fn])
			continue;
		if (r->token[0] != '\0') {
			if (!have_label) {
				shim_token_label(kind, id, label);
				have_label = 1;
			}
			if (strcmp(label, r->token) != 0)
				continue;
		}
		if (r->is_error && rv != CKR_OK)
			continue;
		if (r->count >= 0) {
			/* count=N: claim one of the N uses, atomically */
			long c = __atomic_load_n(&r->count, __ATOMIC_SEQ_CST);
			while (c > 0 && !__atomic_compare_exchange_n(&r->count,
			    &c, c - 1, 0, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST))
				;
			if (c <= 0)
				continue;
		}
		if (!r->is_error)
			sleep_us += r->value;
		else
			rv = r->value;
	}
	pthread_rwlock_unlock(&shim.rlock);
	if (sleep_us > 0) {
		struct timespec ts = { (time_t)(sleep_us / 1000000),
		    (long)(sleep_us % 1000000) * 1000 };
		while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
			;
	}
	return rv;
}

#define SHIM_ID_N 0
#define SHIM_ID_SL slot
#define SHIM_ID_SE s

#define X(n, k, p, a) \
static CK_RV \
shim_##n p \
{ \
	CK_RV rv_ = shim_pre(SHIM_##n, SHIM_KIND_##k, SHIM_ID_##k); \
	if (rv_ != CKR_OK) \
		return rv_; \
	return shim.tgt->n a; \
}
SHIM_FUNCS
#undef X

/*
 * Map the counters file.  An existing file of the right layout keeps its
 * counts (a module unloaded and loaded again by p11-kit, a daemon reload);
 * anything else is rewritten from zero.
 */
static void
shim_counters_open(const char *path)
{
	size_t len = SHIM_NFUNCS * SHIM_LINE, i;
	struct stat st;
	int fd, keep;

	if ((fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC, 0644)) < 0) {
		fprintf(stderr, "xks-shim: %s: %s\n", path, strerror(errno));
		return;
	}
	keep = fstat(fd, &st) == 0 && (size_t)st.st_size == len;
	if (keep || ftruncate(fd, (off_t)len) == 0) {
		void *m = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_SHARED,
		    fd, 0);
		if (m != MAP_FAILED)
			shim.map = m;
	}
	close(fd);
	if (shim.map == NULL)
		return;
	for (i = 0; keep && i < SHIM_NFUNCS; i++) {
		char name[32];
		unsigned long long v;
		char line[SHIM_LINE + 1];

		memcpy(line, shim.map + i * SHIM_LINE, SHIM_LINE);
		line[SHIM_LINE] = '\0';
		if (sscanf(line, "%31s %llu", name, &v) != 2 ||
		    strcmp(name, shim_names[i]) != 0)
			keep = 0;
		else
			shim.counts[i] = v;
	}
	if (!keep)
		shim_counters_reset();
}

static void
shim_init(void)
{
	const char *target = getenv("XKS_SHIM_TARGET");
	const char *control = getenv("XKS_SHIM_CONTROL");
	const char *counters = getenv("XKS_SHIM_COUNTERS");
	CK_C_GetFunctionList gfl;
	void *dl;

	if (target == NULL || *target == '\0')
		target = SHIM_DEFAULT_TARGET;
	if ((dl = dlopen(target, RTLD_NOW | RTLD_LOCAL)) == NULL) {
		fprintf(stderr, "xks-shim: %s\n", dlerror());
		return;
	}
	gfl = (CK_C_GetFunctionList)dlsym(dl, "C_GetFunctionList");
	if (gfl == NULL || gfl(&shim.tgt) != CKR_OK || shim.tgt == NULL) {
		fprintf(stderr, "xks-shim: %s: no function list\n", target);
		return;
	}
	if (control != NULL)
		snprintf(shim.control, sizeof(shim.control), "%s", control);
	if (counters != NULL && *counters != '\0')
		shim_counters_open(counters);
	shim.list.version = shim.tgt->version;
#define X(n, k, p, a) shim.list.n = shim_##n;
	SHIM_FUNCS
#undef X
	shim.list.C_GetFunctionList = C_GetFunctionList;
	shim.ok = 1;
}

CK_RV
C_GetFunctionList(CK_FUNCTION_LIST_PTR_PTR list)
{
	pthread_once(&shim.once, shim_init);
	if (!shim.ok)
		return CKR_GENERAL_ERROR;
	if (list == NULL)
		return CKR_ARGUMENTS_BAD;
	*list = &shim.list;
	return CKR_OK;
}
