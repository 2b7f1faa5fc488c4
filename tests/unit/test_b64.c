#include "config.h"

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "b64.h"

/* Decode s and expect exactly the bytes want[0..wantlen). */
static void
expect_ok(const char *s, const char *want, size_t wantlen)
{
	const char *reason = "unset";
	unsigned char *out;
	size_t n = 999;

	out = b64_decode(s, strlen(s), &n, &reason);
	assert_non_null(out);
	assert_null(reason);
	assert_int_equal(n, wantlen);
	assert_int_equal(b64_decoded_len(s, strlen(s)), wantlen);
	if (wantlen > 0)
		assert_memory_equal(out, want, wantlen);
	b64_free(out, n);
}

/* Decode s[0..len) and expect failure with exactly this reason. */
static void
expect_bad_len(const char *s, size_t len, const char *why)
{
	const char *reason = NULL;
	size_t n = 999;

	assert_null(b64_decode(s, len, &n, &reason));
	assert_int_equal(n, 0);
	assert_non_null(reason);
	assert_string_equal(reason, why);
}

static void
expect_bad(const char *s, const char *why)
{
	expect_bad_len(s, strlen(s), why);
}

static void
test_rfc4648_decode(void **state)
{
	(void)state;
	expect_ok("", "", 0);
	expect_ok("Zg==", "f", 1);
	expect_ok("Zm8=", "fo", 2);
	expect_ok("Zm9v", "foo", 3);
	expect_ok("Zm9vYg==", "foob", 4);
	expect_ok("Zm9vYmE=", "fooba", 5);
	expect_ok("Zm9vYmFy", "foobar", 6);
	/* every alphabet character, including + and / */
	expect_ok("+/+/", "\xfb\xff\xbf", 3);
	expect_ok("AAAA", "\0\0\0", 3);
	expect_ok("QQ==", "A", 1);
}

static void
test_rfc4648_encode(void **state)
{
	static const struct { const char *in, *out; } v[] = {
		{ "", "" }, { "f", "Zg==" }, { "fo", "Zm8=" },
		{ "foo", "Zm9v" }, { "foob", "Zm9vYg==" },
		{ "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" },
	};
	size_t i;
	char *s;

	(void)state;
	for (i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		s = b64_encode((const unsigned char *)v[i].in,
		    strlen(v[i].in));
		assert_non_null(s);
		assert_string_equal(s, v[i].out);
		free(s);
	}
	s = b64_encode((const unsigned char *)"\xfb\xff\xbf", 3);
	assert_string_equal(s, "+/+/");
	free(s);
}

static void
test_empty(void **state)
{
	const char *reason = "unset";
	unsigned char *out;
	size_t n = 5;
	char *s;

	(void)state;
	out = b64_decode("", 0, &n, &reason);
	assert_non_null(out);
	assert_int_equal(n, 0);
	assert_null(reason);
	b64_free(out, n);
	/* NULL source with length 0 is the empty string too */
	out = b64_decode(NULL, 0, &n, &reason);
	assert_non_null(out);
	assert_int_equal(n, 0);
	b64_free(out, n);
	s = b64_encode(NULL, 0);
	assert_non_null(s);
	assert_string_equal(s, "");
	free(s);
	b64_free(NULL, 0);
}

static void
test_bad_alphabet(void **state)
{
	(void)state;
	expect_bad("Zm9-", "invalid character");   /* base64url */
	expect_bad("Zm9_", "invalid character");
	expect_bad("Zm-v", "invalid character");   /* OpenSSL's end marker */
	expect_bad("Zm v", "invalid character");
	expect_bad("Zm9v\nYmFy", "length not a multiple of 4");
	expect_bad("Zm9v\nYmF", "invalid character");
	expect_bad("Zm\tv", "invalid character");
	expect_bad("Zm9v\r\nYm9v==", "invalid character");
	expect_bad(" Zm9vYmF", "invalid character");
	expect_bad("Zm9vYmF ", "invalid character");
	expect_bad("Zm9\x80", "invalid character");
	expect_bad_len("Zm\0v", 4, "invalid character");
	expect_bad("Zm.v", "invalid character");
}

static void
test_bad_length(void **state)
{
	(void)state;
	expect_bad("Z", "length not a multiple of 4");
	expect_bad("Zg", "length not a multiple of 4");
	expect_bad("Zg=", "length not a multiple of 4");
	expect_bad("Zm9vY", "length not a multiple of 4");
	expect_bad("Zm9vYg", "length not a multiple of 4");
	expect_bad("Zm9vYg===", "length not a multiple of 4");
}

static void
test_bad_padding(void **state)
{
	(void)state;
	expect_bad("Zg==Zm9v", "bad padding");     /* '=' in the middle */
	expect_bad("Z=9v", "bad padding");
	expect_bad("Zm=v", "bad padding");
	expect_bad("Z===", "bad padding");         /* three '=' */
	expect_bad("====", "bad padding");
	expect_bad("Zm9vZ===", "bad padding");
	expect_bad("=m9v", "bad padding");
}

static void
test_non_canonical(void **state)
{
	(void)state;
	/* "QQ==" is canonical for "A"; QR/QS/.../Q/ carry stray bits */
	expect_bad("QR==", "non-canonical trailing bits");
	expect_bad("QX==", "non-canonical trailing bits");
	expect_bad("Q/==", "non-canonical trailing bits");
	expect_bad("Zm9=", "non-canonical trailing bits");  /* "Zm8=" is */
	expect_bad("Zm+=", "non-canonical trailing bits");
	expect_bad("Zm9vZh==", "non-canonical trailing bits");
	expect_ok("Zm8=", "fo", 2);
}

static void
round_trip(size_t len)
{
	unsigned char *in, *out;
	const char *reason;
	size_t i, n = 0;
	char *s;

	in = malloc(len);
	assert_non_null(in);
	for (i = 0; i < len; i++)
		in[i] = (unsigned char)(i * 131 + 7);
	s = b64_encode(in, len);
	assert_non_null(s);
	assert_int_equal(strlen(s), (len + 2) / 3 * 4);
	assert_int_equal(b64_decoded_len(s, strlen(s)), len);
	out = b64_decode(s, strlen(s), &n, &reason);
	assert_non_null(out);
	assert_int_equal(n, len);
	assert_memory_equal(out, in, len);
	b64_free(out, n);
	free(s);
	free(in);
}

static void
test_round_trips(void **state)
{
	size_t i;

	(void)state;
	round_trip(4300);
	round_trip(8192);
	for (i = 1; i < 10; i++)
		round_trip(i);
}

static void
test_decoded_len(void **state)
{
	(void)state;
	assert_int_equal(b64_decoded_len("", 0), 0);
	assert_int_equal(b64_decoded_len("Zg==", 4), 1);
	assert_int_equal(b64_decoded_len("Zm8=", 4), 2);
	assert_int_equal(b64_decoded_len("Zm9v", 4), 3);
	assert_int_equal(b64_decoded_len("Zm9vZm9vZm9v", 12), 9);
}

int
main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_rfc4648_decode),
		cmocka_unit_test(test_rfc4648_encode),
		cmocka_unit_test(test_empty),
		cmocka_unit_test(test_bad_alphabet),
		cmocka_unit_test(test_bad_length),
		cmocka_unit_test(test_bad_padding),
		cmocka_unit_test(test_non_canonical),
		cmocka_unit_test(test_round_trips),
		cmocka_unit_test(test_decoded_len),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
