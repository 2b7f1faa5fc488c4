/*
 * b64.h -- strict Base64 (RFC 4648, standard alphabet, padded), on OpenSSL.
 */
#ifndef XKS_B64_H
#define XKS_B64_H

#include <stddef.h>

/*
 * Decode src[0..len) strictly: only A-Za-z0-9+/, length a multiple of 4,
 * '=' only as the last one or two characters, no whitespace, and the
 * unused bits of the last group zero.  Returns a malloc'ed buffer (wipe
 * and free with b64_free) and sets *outlen, or NULL when invalid (reason
 * set to a static string) or on allocation failure.  An empty input gives
 * a non-NULL buffer with *outlen 0.
 */
unsigned char *b64_decode(const char *src, size_t len, size_t *outlen,
    const char **reason);

/* Length the decoding of a valid input of len characters would have. */
size_t b64_decoded_len(const char *src, size_t len);

/* Encode; returns a malloc'ed NUL-terminated string or NULL. */
char *b64_encode(const unsigned char *src, size_t len);

/* Characters the encoding of len bytes takes (no NUL). */
size_t b64_encoded_len(size_t len);

/*
 * Encode into dst, which has room for b64_encoded_len(len) + 1 bytes
 * (the encoder writes a NUL); returns b64_encoded_len(len).  len must be
 * below INT_MAX / 4 * 3.
 */
size_t b64_encode_to(char *dst, const unsigned char *src, size_t len);

/* Wipe len bytes and free.  NULL-safe. */
void b64_free(unsigned char *buf, size_t len);

#endif
