/*
 * p11key -- create an AES secret key with exactly chosen attributes on a
 * token, for the integration tests (pkcs11-tool cannot make an
 * encrypt-only or a no-usage AES key, nor import the same key material
 * into two tokens).
 *
 *   p11key MODULE TOKEN-LABEL PIN-FILE KEY-LABEL HEX-VALUE [ATTR=0|1 ...]
 * ATTR: encrypt decrypt wrap unwrap sign verify derive private (default:
 * encrypt=1 decrypt=1 private=1, the others 0).  Also start=YYYYMMDD end=YYYYMMDD.
 */
#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>

#include "util.h"

static int
hexval(const char *s, unsigned char *out, size_t max, size_t *len)
{
	size_t n = strlen(s), i;
	unsigned int b;

	if (n % 2 != 0 || n / 2 > max)
		return -1;
	for (i = 0; i < n / 2; i++) {
		if (sscanf(s + 2 * i, "%2x", &b) != 1)
			return -1;
		out[i] = (unsigned char)b;
	}
	*len = n / 2;
	return 0;
}

int
main(int argc, char **argv)
{
	static const char *names[] = { "encrypt", "decrypt", "wrap", "unwrap",
	    "sign", "verify", "derive", "private" };
	static const CK_ATTRIBUTE_TYPE types[] = { CKA_ENCRYPT, CKA_DECRYPT,
	    CKA_WRAP, CKA_UNWRAP, CKA_SIGN, CKA_VERIFY, CKA_DERIVE, CKA_PRIVATE };
	CK_BBOOL flags[8] = { CK_TRUE, CK_TRUE, CK_FALSE, CK_FALSE, CK_FALSE,
	    CK_FALSE, CK_FALSE, CK_TRUE };
	CK_BBOOL yes = CK_TRUE, no = CK_FALSE;
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_AES;
	CK_DATE start, end;
	int have_start = 0, have_end = 0;
	CK_ATTRIBUTE a[20];
	CK_ULONG na = 0, nslots = 0, i;
	CK_SLOT_ID slots[64];
	CK_TOKEN_INFO ti;
	CK_SESSION_HANDLE s;
	CK_OBJECT_HANDLE obj;
	CK_FUNCTION_LIST *m;
	unsigned char value[64], *pin = NULL;
	size_t vlen, pinlen = 0, j;
	char err[256], lab[33];
	int k;

	if (argc < 6) {
		fprintf(stderr, "usage: p11key MODULE TOKEN PIN-FILE LABEL HEX [attr=0|1...]\n");
		return 2;
	}
	if (hexval(argv[5], value, sizeof(value), &vlen) != 0) {
		fprintf(stderr, "bad hex value\n");
		return 2;
	}
	for (k = 6; k < argc; k++) {
		if (strncmp(argv[k], "start=", 6) == 0 && strlen(argv[k]) == 14) {
			memcpy(start.year, argv[k] + 6, 4);
			memcpy(start.month, argv[k] + 10, 2);
			memcpy(start.day, argv[k] + 12, 2);
			have_start = 1;
			continue;
		}
		if (strncmp(argv[k], "end=", 4) == 0 && strlen(argv[k]) == 12) {
			memcpy(end.year, argv[k] + 4, 4);
			memcpy(end.month, argv[k] + 8, 2);
			memcpy(end.day, argv[k] + 10, 2);
			have_end = 1;
			continue;
		}
		for (j = 0; j < 8; j++) {
			size_t l = strlen(names[j]);
			if (strncmp(argv[k], names[j], l) == 0 && argv[k][l] == '=') {
				flags[j] = argv[k][l + 1] == '1' ? CK_TRUE : CK_FALSE;
				break;
			}
		}
		if (j == 8) {
			fprintf(stderr, "unknown attribute %s\n", argv[k]);
			return 2;
		}
	}
	if (util_read_file(argv[3], 256, 0, &pin, &pinlen, err, sizeof(err)) != 0) {
		fprintf(stderr, "%s\n", err);
		return 1;
	}
	pinlen = util_rstrip(pin, pinlen);
	if ((m = p11_kit_module_load(argv[1], 0)) == NULL ||
	    p11_kit_module_initialize(m) != CKR_OK) {
		fprintf(stderr, "cannot load %s\n", argv[1]);
		return 1;
	}
	nslots = 64;
	if (m->C_GetSlotList(CK_TRUE, slots, &nslots) != CKR_OK)
		return 1;
	for (i = 0; i < nslots; i++) {
		if (m->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
			continue;
		memcpy(lab, ti.label, 32);
		lab[32] = '\0';
		for (k = 31; k >= 0 && lab[k] == ' '; k--)
			lab[k] = '\0';
		if (strcmp(lab, argv[2]) == 0)
			break;
	}
	if (i == nslots) {
		fprintf(stderr, "token %s not found\n", argv[2]);
		return 1;
	}
	if (m->C_OpenSession(slots[i], CKF_SERIAL_SESSION | CKF_RW_SESSION,
	    NULL, NULL, &s) != CKR_OK ||
	    m->C_Login(s, CKU_USER, pin, pinlen) != CKR_OK) {
		fprintf(stderr, "cannot log in to %s\n", argv[2]);
		return 1;
	}
	wipe_free(pin, pinlen);
#define ATTR(t, p, l) do { a[na].type = (t); a[na].pValue = (p); a[na].ulValueLen = (l); na++; } while (0)
	ATTR(CKA_CLASS, &cls, sizeof(cls));
	ATTR(CKA_KEY_TYPE, &kt, sizeof(kt));
	ATTR(CKA_TOKEN, &yes, sizeof(yes));
	ATTR(CKA_SENSITIVE, &yes, sizeof(yes));
	ATTR(CKA_EXTRACTABLE, &no, sizeof(no));
	ATTR(CKA_LABEL, argv[4], strlen(argv[4]));
	ATTR(CKA_VALUE, value, vlen);
	for (j = 0; j < 8; j++)
		ATTR(types[j], &flags[j], sizeof(CK_BBOOL));
	if (have_start)
		ATTR(CKA_START_DATE, &start, sizeof(start));
	if (have_end)
		ATTR(CKA_END_DATE, &end, sizeof(end));
	if (m->C_CreateObject(s, a, na, &obj) != CKR_OK) {
		fprintf(stderr, "C_CreateObject failed\n");
		return 1;
	}
	wipe(value, sizeof(value));
	m->C_Logout(s);
	m->C_CloseSession(s);
	p11_kit_module_finalize(m);
	p11_kit_module_release(m);
	return 0;
}
