#include "config.h"

#include <limits.h>
#include <stdlib.h>

#include <openssl/evp.h>

#include "b64.h"
#include "util.h"

/*
 * Value of a character of the standard alphabet, or -1.  A switch on
 * ranges rather than a table: no locale, no 256-entry initialiser to get
 * wrong, and only the validation pass calls it.
 */
static int
b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Number of '=' at the end of src (0..2 for a valid input). */
static size_t
b64_padding(const char *src, size_t len)
{
	size_t pad = 0;

	while (pad < 2 && pad < len && src[len - 1 - pad] == '=')
		pad++;
	return pad;
}

size_t
b64_decoded_len(const char *src, size_t len)
{
	size_t full = (len / 4) * 3;
	size_t pad;

	if (src == NULL || len < 4)
		return 0;
	pad = b64_padding(src, len - len % 4);
	return full - pad;
}

/*
 * The strict pass.  EVP_DecodeBlock is lenient (it skips leading and
 * trailing whitespace, treats '-' as an end marker, ignores non-zero
 * trailing bits), so everything it would tolerate is rejected here first:
 * only the canonical encoding of a byte string is accepted, which keeps
 * one value one representation (a signature covers the body, not the
 * bytes it decodes to).
 */
static int
b64_validate(const char *src, size_t len, size_t *padp, const char **reason)
{
	size_t i, pad;
	int v;

	*padp = 0;
	if (len % 4 != 0) {
		*reason = "length not a multiple of 4";
		return -1;
	}
	pad = b64_padding(src, len);
	for (i = 0; i < len - pad; i++) {
		unsigned char c = (unsigned char)src[i];

		if (c == '=') {
			*reason = "bad padding";
			return -1;
		}
		if (b64_value(c) < 0) {
			*reason = "invalid character";
			return -1;
		}
	}
	if (pad > 0) {
		/*
		 * "xx==" carries 8 bits in 12: the low 4 bits of the second
		 * character must be zero; "xxx=" carries 16 in 18: low 2.
		 */
		v = b64_value((unsigned char)src[len - pad - 1]);
		if ((pad == 2 && (v & 0x0f) != 0) ||
		    (pad == 1 && (v & 0x03) != 0)) {
			*reason = "non-canonical trailing bits";
			return -1;
		}
	}
	*padp = pad;
	return 0;
}

unsigned char *
b64_decode(const char *src, size_t len, size_t *outlen, const char **reason)
{
	unsigned char *buf = NULL, *ret = NULL;
	size_t pad = 0, cap = 0;
	const char *dummy;
	int n;

	if (reason == NULL)
		reason = &dummy;
	*reason = NULL;
	*outlen = 0;
	if (src == NULL && len != 0) {
		*reason = "missing input";
		goto out;
	}
	if (len > (size_t)INT_MAX) {
		*reason = "too long";
		goto out;
	}
	if (b64_validate(src, len, &pad, reason) != 0)
		goto out;
	/* DecodeBlock writes a zero byte for each '=': room for them too. */
	cap = (len / 4) * 3;
	if ((buf = malloc(cap > 0 ? cap : 1)) == NULL) {
		*reason = "out of memory";
		goto out;
	}
	if (len > 0) {
		n = EVP_DecodeBlock(buf, (const unsigned char *)src, (int)len);
		if (n < 0 || (size_t)n != cap) {
			/* Cannot happen after the strict pass; fail closed. */
			*reason = "invalid encoding";
			goto out;
		}
	}
	/*
	 * The pad bytes past *outlen are zero (the strict pass proved the
	 * unused bits zero), so b64_free(ret, *outlen) leaves no secret.
	 */
	*outlen = cap - pad;
	ret = buf;
	buf = NULL;
 out:
	wipe_free(buf, cap);
	return ret;
}

char *
b64_encode(const unsigned char *src, size_t len)
{
	char *out;
	size_t olen;

	/* EVP_EncodeBlock takes an int and writes 4 per 3 plus a NUL. */
	if (len > (size_t)INT_MAX / 4 * 3 - 3)
		return NULL;
	olen = (len + 2) / 3 * 4 + 1;
	if ((out = malloc(olen)) == NULL)
		return NULL;
	if (len == 0)
		out[0] = '\0';
	else
		EVP_EncodeBlock((unsigned char *)out, src, (int)len);
	return out;
}

size_t
b64_encoded_len(size_t len)
{
	return (len + 2) / 3 * 4;
}

size_t
b64_encode_to(char *dst, const unsigned char *src, size_t len)
{
	if (len == 0) {
		dst[0] = '\0';
		return 0;
	}
	return (size_t)EVP_EncodeBlock((unsigned char *)dst, src, (int)len);
}

void
b64_free(unsigned char *buf, size_t len)
{
	wipe_free(buf, len);
}
