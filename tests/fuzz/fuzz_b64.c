/*
 * fuzz_b64.c -- strict Base64.
 *
 * Two invariants, both real: the decoder accepts only the canonical
 * encoding, so whatever it accepts must encode back to exactly the input;
 * and any byte string, encoded, must decode back to itself.  The input to
 * the decoder sits in a buffer of exactly its size (no NUL after it).
 */
#include "config.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "b64.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	unsigned char *dec, *dec2;
	const char *reason = NULL;
	char *src, *enc;
	size_t outlen = 7, outlen2 = 7;

	if ((src = malloc(size > 0 ? size : 1)) == NULL)
		return 0;
	if (size > 0)
		memcpy(src, data, size);

	/* decode, then encode back */
	dec = b64_decode(src, size, &outlen, &reason);
	if (dec == NULL) {
		if (reason == NULL || outlen != 0)
			abort();
	} else {
		if (outlen != b64_decoded_len(src, size) ||
		    outlen > size / 4 * 3)
			abort();
		if ((enc = b64_encode(dec, outlen)) == NULL)
			abort();
		if (strlen(enc) != size || memcmp(enc, src, size) != 0)
			abort();
		free(enc);
		b64_free(dec, outlen);
	}

	/* encode any bytes, then decode back */
	if ((enc = b64_encode(data, size)) == NULL)
		abort();
	if (strlen(enc) != (size + 2) / 3 * 4)
		abort();
	dec2 = b64_decode(enc, strlen(enc), &outlen2, &reason);
	if (dec2 == NULL || outlen2 != size ||
	    (size > 0 && memcmp(dec2, data, size) != 0))
		abort();
	b64_free(dec2, outlen2);
	free(enc);
	free(src);
	return 0;
}
