#include "config.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <p11-kit/uri.h>

#include "cfg.h"
#include "log.h"
#include "util.h"

#define CFG_MAX_FILE (1024 * 1024)
#define CFG_MAX_SECRET_FILE 4096
#define CFG_PATH_MAX 512
#define CFG_KEY_SHOW 64         /* an unknown key is shown up to this length */

#define CFG_SECRET_CHARS "43 to 64 characters of A-Z, a-z, 0-9, +, / and ="

/* FT_ENUM stores through an int pointer, also into enum cfg_iv. */
_Static_assert(sizeof(enum cfg_iv) == sizeof(int), "enum cfg_iv size");

/* Where we are while validating: the key path grows and shrinks as we go. */
struct cfg_ctx {
	const char *file;
	struct cfg *cfg;
	char *err;
	size_t errlen;
	char path[CFG_PATH_MAX];
	size_t pathlen;
};

static size_t cfg_path_add(struct cfg_ctx *, const char *, ...)
    __attribute__((format(printf, 2, 3)));
static int cfg_fail(struct cfg_ctx *, const char *, ...)
    __attribute__((format(printf, 2, 3)));

/* Append to the key path; returns the mark to restore with cfg_path_pop(). */
static size_t
cfg_path_add(struct cfg_ctx *c, const char *fmt, ...)
{
	size_t mark = c->pathlen, room = sizeof(c->path) - c->pathlen;
	va_list ap;
	int n;

	if (room <= 1)
		return mark;
	va_start(ap, fmt);
	n = vsnprintf(c->path + c->pathlen, room, fmt, ap);
	va_end(ap);
	if (n > 0)
		c->pathlen += (size_t)n < room ? (size_t)n : room - 1;
	return mark;
}

/* Key names may come from the file (unknown keys): bound and sanitize them. */
static size_t
cfg_path_key(struct cfg_ctx *c, const char *name)
{
	char buf[CFG_KEY_SHOW + 1];

	util_sanitize(name, strlen(name), buf, sizeof(buf));
	return cfg_path_add(c, c->pathlen > 0 ? ".%s" : "%s", buf);
}

static size_t
cfg_path_idx(struct cfg_ctx *c, size_t i)
{
	return cfg_path_add(c, "[%zu]", i);
}

static void
cfg_path_pop(struct cfg_ctx *c, size_t mark)
{
	c->pathlen = mark;
	c->path[mark] = '\0';
}

/* The one place that formats "<file>: <key path>: <reason>"; returns -1. */
static int
cfg_fail(struct cfg_ctx *c, const char *fmt, ...)
{
	char reason[512], line[2048];
	va_list ap;

	va_start(ap, fmt);
	vsnprintf(reason, sizeof(reason), fmt, ap);
	va_end(ap);
	if (c->err != NULL && c->errlen > 0) {
		snprintf(line, sizeof(line), "%s: %s: %s", c->file,
		    c->pathlen > 0 ? c->path : "top level", reason);
		/* key names and values come from the file: keep the message
		 * one printable line (no log injection) */
		util_sanitize(line, strlen(line), c->err, c->errlen);
	}
	return -1;
}

static int
cfg_oom(struct cfg_ctx *c)
{
	return cfg_fail(c, "out of memory");
}

/* ---- value getters: type and range, the messages live here ---- */

static int
cfg_get_int(struct cfg_ctx *c, struct json_object *v, long long lo,
    long long hi, long long *out)
{
	int64_t x;

	/* json-c clamps integers beyond int64 to INT64_MAX: out of range. */
	if (!json_object_is_type(v, json_type_int) ||
	    (x = json_object_get_int64(v)) < lo || x > hi)
		return cfg_fail(c, "must be an integer from %lld to %lld", lo, hi);
	*out = x;
	return 0;
}

/* A string of minlen..maxlen bytes (maxlen 0: no upper bound), no NULs. */
static int
cfg_get_str(struct cfg_ctx *c, struct json_object *v, size_t minlen,
    size_t maxlen, const char **out, size_t *outlen)
{
	const char *s;
	size_t len;

	if (!json_object_is_type(v, json_type_string))
		return cfg_fail(c, "must be a string");
	s = json_object_get_string(v);
	len = (size_t)json_object_get_string_len(v);
	if (strlen(s) != len)
		return cfg_fail(c, "must not contain NUL characters");
	if (len < minlen || (maxlen > 0 && len > maxlen)) {
		if (maxlen > 0)
			return cfg_fail(c, "must be %zu to %zu characters",
			    minlen, maxlen);
		return cfg_fail(c, "must not be empty");
	}
	*out = s;
	*outlen = len;
	return 0;
}

static const char *
cfg_type_name(enum json_type t)
{
	switch (t) {
	case json_type_object:
		return "an object";
	case json_type_array:
		return "an array";
	case json_type_string:
		return "a string";
	default:
		return "something else";
	}
}

/* ---- the table-driven object walker ---- */

enum cfg_ftype { FT_INT, FT_SIZE, FT_STR, FT_ENUM, FT_OBJ, FT_FN };

#define FF_REQUIRED 0x01
#define FF_NULLABLE 0x02        /* JSON null means "absent" */

struct cfg_field {
	const char *name;
	enum cfg_ftype type;
	unsigned flags;
	size_t off;                     /* from the base the table is used with */
	long long min, max;             /* int range; string length, max 0: any */
	long long idef;                 /* FT_INT, FT_SIZE default */
	const char *sdef;               /* FT_STR, FT_ENUM default (NULL: none) */
	int (*check)(struct cfg_ctx *, const char *, size_t); /* FT_STR extra */
	int (*parse)(const char *);     /* FT_ENUM: value, or -1 */
	const char *what;               /* FT_ENUM: the error */
	const struct cfg_field *sub;    /* FT_OBJ: its keys, same base */
	int (*post)(struct cfg_ctx *, void *base);      /* FT_OBJ cross-checks */
	enum json_type jtype;           /* FT_FN: the JSON type it takes */
	int (*fn)(struct cfg_ctx *, struct json_object *, void *base); /* FT_FN */
};

#define F_INT(T, n, m, lo, hi, def, fl) { .name = (n), .type = FT_INT, \
	.flags = (fl), .off = offsetof(T, m), .min = (lo), .max = (hi), .idef = (def) }
#define F_SIZE(T, n, m, lo, hi, def) { .name = (n), .type = FT_SIZE, \
	.off = offsetof(T, m), .min = (lo), .max = (hi), .idef = (def) }
#define F_STR(T, n, m, lo, hi, def, fl, chk) { .name = (n), .type = FT_STR, \
	.flags = (fl), .off = offsetof(T, m), .min = (lo), .max = (hi), \
	.sdef = (def), .check = (chk) }
#define F_ENUM(T, n, m, def, pfn, msg) { .name = (n), .type = FT_ENUM, \
	.off = offsetof(T, m), .sdef = (def), .parse = (pfn), .what = (msg) }
#define F_OBJ(n, tab, pfn, fl) { .name = (n), .type = FT_OBJ, .flags = (fl), \
	.sub = (tab), .post = (pfn) }
#define F_FN(n, jt, f, fl) { .name = (n), .type = FT_FN, .flags = (fl), \
	.jtype = (jt), .fn = (f) }
#define F_END { .name = NULL }

static int cfg_object(struct cfg_ctx *, struct json_object *,
    const struct cfg_field *, void *);

static int
cfg_field_parse(struct cfg_ctx *c, const struct cfg_field *f,
    struct json_object *v, int present, void *base)
{
	char *p = (char *)base + f->off;
	const char *s = NULL;
	long long x = f->idef;
	size_t len;
	int e;

	switch (f->type) {
	case FT_INT:
	case FT_SIZE:
		if (present && cfg_get_int(c, v, f->min, f->max, &x) != 0)
			return -1;
		if (f->type == FT_INT)
			*(int *)(void *)p = (int)x;
		else
			*(size_t *)(void *)p = (size_t)x;
		return 0;
	case FT_STR:
		if (!present)
			s = f->sdef;
		else if (cfg_get_str(c, v, (size_t)f->min, (size_t)f->max,
		    &s, &len) != 0 ||
		    (f->check != NULL && f->check(c, s, len) != 0))
			return -1;
		if (s != NULL && (*(char **)(void *)p = strdup(s)) == NULL)
			return cfg_oom(c);
		return 0;
	case FT_ENUM:
		s = f->sdef;
		if (present && !json_object_is_type(v, json_type_string))
			return cfg_fail(c, "%s", f->what);
		if (present && cfg_get_str(c, v, 0, 0, &s, &len) != 0)
			return -1;
		if ((e = f->parse(s)) < 0)
			return cfg_fail(c, "%s", f->what);
		*(int *)(void *)p = e;
		return 0;
	case FT_OBJ:
		if (present && !json_object_is_type(v, json_type_object))
			return cfg_fail(c, "must be an object");
		if (cfg_object(c, present ? v : NULL, f->sub, base) != 0)
			return -1;
		return f->post != NULL ? f->post(c, base) : 0;
	case FT_FN:
		if (present && !json_object_is_type(v, f->jtype))
			return cfg_fail(c, "must be %s", cfg_type_name(f->jtype));
		return f->fn(c, present ? v : NULL, base);
	}
	return cfg_fail(c, "internal error: field type");
}

/*
 * Validate one JSON object against a table: unknown keys first (a typo
 * should be reported as such, not as the missing key it was meant to be),
 * then every known key in table order, filling defaults.  obj NULL: the
 * object is absent, so only defaults (and "required") apply.
 */
static int
cfg_object(struct cfg_ctx *c, struct json_object *obj,
    const struct cfg_field *fields, void *base)
{
	struct json_object_iterator it, end;
	const struct cfg_field *f;
	struct json_object *v;
	const char *k;
	size_t mark;
	int present;

	if (obj != NULL) {
		it = json_object_iter_begin(obj);
		end = json_object_iter_end(obj);
		for (; !json_object_iter_equal(&it, &end);
		    json_object_iter_next(&it)) {
			k = json_object_iter_peek_name(&it);
			for (f = fields; f->name != NULL; f++)
				if (strcmp(f->name, k) == 0)
					break;
			if (f->name == NULL) {
				cfg_path_key(c, k);
				return cfg_fail(c, "unknown key");
			}
		}
	}
	for (f = fields; f->name != NULL; f++) {
		v = NULL;
		present = obj != NULL && json_object_object_get_ex(obj, f->name, &v);
		if (present && v == NULL && (f->flags & FF_NULLABLE))
			present = 0;
		mark = cfg_path_key(c, f->name);
		if (!present && (f->flags & FF_REQUIRED))
			return cfg_fail(c, "required");
		if (cfg_field_parse(c, f, v, present, base) != 0)
			return -1;
		cfg_path_pop(c, mark);
	}
	return 0;
}

/*
 * An array of objects, each validated with `fields` into a calloc'ed array
 * of esize elements; post (optional) runs on each element with the path at
 * the element.  *out and the count are set as soon as the array exists, so
 * the caller stores *out even on failure and cfg_free() cleans up a
 * half-filled array.
 */
static int
cfg_obj_array(struct cfg_ctx *c, struct json_object *arr, size_t min,
    size_t esize, const struct cfg_field *fields, void **out, size_t *n,
    int (*post)(struct cfg_ctx *, void *elem, size_t i, void *all))
{
	struct json_object *el;
	size_t i, len, mark;
	char *p;

	len = arr != NULL ? json_object_array_length(arr) : 0;
	if (len < min)
		return cfg_fail(c, "must not be empty");
	if (len == 0)
		return 0;
	if ((p = calloc(len, esize)) == NULL)
		return cfg_oom(c);
	*out = p;
	*n = len;
	for (i = 0; i < len; i++) {
		mark = cfg_path_idx(c, i);
		el = json_object_array_get_idx(arr, i);
		if (!json_object_is_type(el, json_type_object))
			return cfg_fail(c, "must be an object");
		if (cfg_object(c, el, fields, p + i * esize) != 0)
			return -1;
		if (post != NULL && post(c, p + i * esize, i, p) != 0)
			return -1;
		cfg_path_pop(c, mark);
	}
	return 0;
}

/* An array of non-empty strings, each checked by check (optional). */
static int
cfg_str_array(struct cfg_ctx *c, struct json_object *arr, size_t min,
    int (*check)(struct cfg_ctx *, const char *, size_t), char ***out,
    size_t *n)
{
	const char *s;
	size_t i, len, slen, mark;
	char **v;

	len = arr != NULL ? json_object_array_length(arr) : 0;
	if (len < min)
		return cfg_fail(c, "must not be empty");
	if (len == 0)
		return 0;
	if ((v = calloc(len, sizeof(*v))) == NULL)
		return cfg_oom(c);
	*out = v;
	*n = len;
	for (i = 0; i < len; i++) {
		mark = cfg_path_idx(c, i);
		if (cfg_get_str(c, json_object_array_get_idx(arr, i), 1, 0,
		    &s, &slen) != 0)
			return -1;
		if (check != NULL && check(c, s, slen) != 0)
			return -1;
		if ((v[i] = strdup(s)) == NULL)
			return cfg_oom(c);
		cfg_path_pop(c, mark);
	}
	return 0;
}

struct cfg_dup {
	const char *s;
	size_t i;
};

static int
cfg_dup_cmp(const void *a, const void *b)
{
	const struct cfg_dup *x = a, *y = b;
	int r = strcmp(x->s, y->s);

	return r != 0 ? r : (x->i > y->i) - (x->i < y->i);
}

/*
 * Find the first element (in array order) equal to an earlier one, in
 * O(n log n) so that a huge file cannot make loading quadratic.  Returns 1
 * with *dup and *orig (its first occurrence) set, 0 when all differ, -1 when
 * out of memory.
 */
static int
cfg_first_dup(const char **v, size_t n, size_t *dup, size_t *orig)
{
	struct cfg_dup *d;
	size_t i, g = 0, best = SIZE_MAX;

	if (n < 2)
		return 0;
	if ((d = calloc(n, sizeof(*d))) == NULL)
		return -1;
	for (i = 0; i < n; i++) {
		d[i].s = v[i];
		d[i].i = i;
	}
	qsort(d, n, sizeof(*d), cfg_dup_cmp);
	/* within a group of equal strings, sorted by position: g is first */
	for (i = 1; i < n; i++) {
		if (strcmp(d[i].s, d[g].s) != 0)
			g = i;
		else if (d[i].i < best) {
			best = d[i].i;
			*orig = d[g].i;
		}
	}
	free(d);
	if (best == SIZE_MAX)
		return 0;
	*dup = best;
	return 1;
}

/* ---- validators ---- */

static int
cfg_charset(const char *s, size_t len, const char *extra, int upper,
    int lower, int digits)
{
	size_t i;
	char ch;

	for (i = 0; i < len; i++) {
		ch = s[i];
		if ((upper && ch >= 'A' && ch <= 'Z') ||
		    (lower && ch >= 'a' && ch <= 'z') ||
		    (digits && ch >= '0' && ch <= '9') ||
		    (ch != '\0' && extra != NULL && strchr(extra, ch) != NULL))
			continue;
		return 0;
	}
	return 1;
}

int
cfg_valid_uri_path(const char *s)
{
	static const char suffix[] = "/kms/xks/v1";
	size_t len;

	if (s == NULL)
		return 0;
	len = strlen(s);
	return len <= 128 && len >= sizeof(suffix) - 1 && s[0] == '/' &&
	    strcmp(s + len - (sizeof(suffix) - 1), suffix) == 0 &&
	    cfg_charset(s, len, "/-_", 1, 1, 1);
}

int
cfg_valid_key_id(const char *s, size_t len)
{
	return s != NULL && len >= 1 && len <= 128 &&
	    cfg_charset(s, len, "-._", 1, 1, 1);
}

int
cfg_keystore_has_key(const struct cfg_keystore *ks, const char *id)
{
	size_t i;

	if (ks == NULL || id == NULL)
		return 0;
	if (ks->all_keys)
		return 1;
	for (i = 0; i < ks->nkeys; i++)
		if (strcmp(ks->keys[i], id) == 0)
			return 1;
	return 0;
}

static int
cfg_valid_secret(const char *s, size_t len)
{
	return len >= 43 && len <= 64 && cfg_charset(s, len, "+/=", 1, 1, 1);
}

static int
cfg_chk_access_key_id(struct cfg_ctx *c, const char *s, size_t len)
{
	if (len < 20 || len > 30 || !cfg_charset(s, len, "234567", 1, 0, 0))
		return cfg_fail(c, "must be 20 to 30 characters of A-Z and 2-7");
	return 0;
}

static int
cfg_chk_env_name(struct cfg_ctx *c, const char *s, size_t len)
{
	if ((s[0] >= '0' && s[0] <= '9') || !cfg_charset(s, len, "_", 1, 1, 1))
		return cfg_fail(c, "must be an environment variable name "
		    "(A-Z, a-z, 0-9 and _, not starting with a digit)");
	return 0;
}

static int
cfg_chk_http_path(struct cfg_ctx *c, const char *s, size_t len)
{
	size_t i;

	for (i = 0; i < len; i++)
		if ((unsigned char)s[i] <= 0x20 || (unsigned char)s[i] >= 0x7f)
			break;
	if (s[0] != '/' || i < len)
		return cfg_fail(c, "must start with \"/\" and contain only "
		    "printable ASCII without spaces");
	return 0;
}

static int
cfg_chk_uri_path(struct cfg_ctx *c, const char *s, size_t len)
{
	if (!cfg_valid_uri_path(s))
		return cfg_fail(c, "must be at most 128 characters of a-z, A-Z, "
		    "0-9, /, - and _, start with \"/\" and end with "
		    "\"/kms/xks/v1\"");
	return 0;
}

static int
cfg_chk_key_id(struct cfg_ctx *c, const char *s, size_t len)
{
	if (strcmp(s, "*") != 0 && !cfg_valid_key_id(s, len))
		return cfg_fail(c, "must be \"*\" or 1 to 128 characters of "
		    "A-Z, a-z, 0-9, -, . and _");
	return 0;
}

static int
cfg_chk_region(struct cfg_ctx *c, const char *s, size_t len)
{
	if (!cfg_charset(s, len, "-", 0, 1, 1))
		return cfg_fail(c, "must be a region name of a-z, 0-9 and -");
	return 0;
}

/* CN / DNS SAN: a "*" may only stand for one whole label. */
static int
cfg_chk_subject(struct cfg_ctx *c, const char *s, size_t len)
{
	const char *star = memchr(s, '*', len);

	if (star == NULL)
		return 0;
	if (memchr(star + 1, '*', len - (size_t)(star - s) - 1) != NULL ||
	    (star != s && star[-1] != '.') ||
	    (star[1] != '\0' && star[1] != '.'))
		return cfg_fail(c, "\"*\" is allowed only once, as a whole label");
	return 0;
}

static int
cfg_chk_token(struct cfg_ctx *c, const char *s, size_t len)
{
	P11KitUri *uri;
	int r, ret = -1;

	/* Never echo the URI: a pin-value would end up in the log. */
	if (strncmp(s, "pkcs11:", 7) != 0)
		return cfg_fail(c, "must be a PKCS#11 URI starting with \"pkcs11:\"");
	if ((uri = p11_kit_uri_new()) == NULL)
		return cfg_oom(c);
	r = p11_kit_uri_parse(s, P11_KIT_URI_FOR_TOKEN, uri);
	if (r != P11_KIT_URI_OK)
		cfg_fail(c, "invalid PKCS#11 URI: %s", p11_kit_uri_message(r));
	else if (p11_kit_uri_any_unrecognized(uri))
		cfg_fail(c, "invalid PKCS#11 URI: it has attributes that do "
		    "not describe a token");
	else if (p11_kit_uri_get_pin_value(uri) != NULL ||
	    p11_kit_uri_get_pin_source(uri) != NULL)
		cfg_fail(c, "must not carry a PIN: use hsm.pin_file or "
		    "hsm.pin_env");
	else
		ret = 0;
	p11_kit_uri_free(uri);
	return ret;
}

static int
cfg_iv_parse(const char *s)
{
	if (strcmp(s, "proxy") == 0)
		return CFG_IV_PROXY;
	if (strcmp(s, "hsm") == 0)
		return CFG_IV_HSM;
	return -1;
}

/* Strict "YYYY-MM-DDTHH:MM:SSZ", UTC, 1970 or later. */
static int
cfg_parse_utc(const char *s, size_t len, time_t *out)
{
	static const char pat[] = "dddd-dd-ddTdd:dd:ddZ";
	static const int mdays[] = { 31, 28, 31, 30, 31, 30, 31, 31, 30, 31, 30, 31 };
	struct tm tm;
	int y, leap, md;
	size_t i;
	time_t t;

	if (len != sizeof(pat) - 1)
		return -1;
	for (i = 0; i < len; i++)
		if (pat[i] == 'd' ? (s[i] < '0' || s[i] > '9') : s[i] != pat[i])
			return -1;
#define D2(o) ((s[o] - '0') * 10 + (s[(o) + 1] - '0'))
	memset(&tm, 0, sizeof(tm));
	y = D2(0) * 100 + D2(2);
	tm.tm_year = y - 1900;
	tm.tm_mon = D2(5) - 1;
	tm.tm_mday = D2(8);
	tm.tm_hour = D2(11);
	tm.tm_min = D2(14);
	tm.tm_sec = D2(17);
#undef D2
	if (y < 1970 || tm.tm_mon < 0 || tm.tm_mon > 11 || tm.tm_hour > 23 ||
	    tm.tm_min > 59 || tm.tm_sec > 59)
		return -1;
	leap = (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
	md = mdays[tm.tm_mon] + (tm.tm_mon == 1 && leap);
	if (tm.tm_mday < 1 || tm.tm_mday > md)
		return -1;
	if ((t = timegm(&tm)) <= 0)
		return -1;
	*out = t;
	return 0;
}

/* ---- custom keys ---- */

static const struct cfg_field cfg_listen_fields[] = {
	F_STR(struct cfg_listen, "address", address, 1, 0, NULL, FF_REQUIRED, NULL),
	F_INT(struct cfg_listen, "port", port, 1, 65535, 0, FF_REQUIRED),
	F_END
};

static int
cfg_listen_fn(struct cfg_ctx *c, struct json_object *v, void *base)
{
	struct cfg *cfg = base;
	void *p = NULL;
	int r;

	r = cfg_obj_array(c, v, 1, sizeof(*cfg->listen), cfg_listen_fields, &p,
	    &cfg->nlisten, NULL);
	cfg->listen = p;
	return r;
}

static const struct cfg_field cfg_cert_fields[] = {
	F_STR(struct cfg_cert, "certificate_file", certificate_file, 1, 0, NULL,
	    FF_REQUIRED, NULL),
	F_STR(struct cfg_cert, "private_key_file", private_key_file, 1, 0, NULL,
	    FF_REQUIRED, NULL),
	F_END
};

static int
cfg_certs_fn(struct cfg_ctx *c, struct json_object *v, void *base)
{
	struct cfg *cfg = base;
	void *p = NULL;
	int r;

	r = cfg_obj_array(c, v, 1, sizeof(*cfg->tls.certificates),
	    cfg_cert_fields, &p, &cfg->tls.ncertificates, NULL);
	cfg->tls.certificates = p;
	return r;
}

static int
cfg_subjects_fn(struct cfg_ctx *c, struct json_object *v, void *base)
{
	struct cfg *cfg = base;

	return cfg_str_array(c, v, 0, cfg_chk_subject, &cfg->tls.client_subjects,
	    &cfg->tls.nclient_subjects);
}

static int
cfg_tls_post(struct cfg_ctx *c, void *base)
{
	struct cfg *cfg = base;

	/*
	 * Subjects without a CA would look like access control while every
	 * client gets in: refuse both halves of that mistake.
	 */
	if (cfg->tls.client_ca_file != NULL && cfg->tls.nclient_subjects == 0) {
		cfg_path_key(c, "client_subjects");
		return cfg_fail(c, "must not be empty when tls.client_ca_file is set");
	}
	if (cfg->tls.client_ca_file == NULL && cfg->tls.nclient_subjects > 0) {
		cfg_path_key(c, "client_subjects");
		return cfg_fail(c, "requires tls.client_ca_file");
	}
	return 0;
}

static const struct cfg_field cfg_health_listen_fields[] = {
	F_STR(struct cfg, "address", health_listen.address, 1, 0, NULL,
	    FF_REQUIRED, NULL),
	F_INT(struct cfg, "port", health_listen.port, 1, 65535, 0, FF_REQUIRED),
	F_STR(struct cfg, "path", health_listen.path, 1, 0, "/ping", 0,
	    cfg_chk_http_path),
	F_END
};

static int
cfg_health_listen_fn(struct cfg_ctx *c, struct json_object *v, void *base)
{
	struct cfg *cfg = base;

	if (v == NULL)
		return 0;
	cfg->health_listen.enabled = 1;
	return cfg_object(c, v, cfg_health_listen_fields, base);
}

static int
cfg_tokens_fn(struct cfg_ctx *c, struct json_object *v, void *base)
{
	struct cfg *cfg = base;
	size_t dup, orig;
	int r;

	if (cfg_str_array(c, v, 1, cfg_chk_token, &cfg->hsm.tokens,
	    &cfg->hsm.ntokens) != 0)
		return -1;
	r = cfg_first_dup((const char **)cfg->hsm.tokens, cfg->hsm.ntokens,
	    &dup, &orig);
	if (r < 0)
		return cfg_oom(c);
	if (r > 0) {
		cfg_path_idx(c, dup);
		return cfg_fail(c, "same URI as hsm.tokens[%zu]", orig);
	}
	return 0;
}

static int
cfg_hsm_post(struct cfg_ctx *c, void *base)
{
	struct cfg *cfg = base;
	struct stat st;
	int fd = -1, r = -1;

	cfg_path_key(c, "pin_file");
	if ((cfg->hsm.pin_file != NULL) == (cfg->hsm.pin_env != NULL))
		return cfg_fail(c, "exactly one of hsm.pin_file and hsm.pin_env "
		    "is required");
	if (cfg->hsm.pin_file == NULL)
		return 0;
	/*
	 * The PIN is read at login by the HSM layer; only make sure that will
	 * work.  O_NONBLOCK: a FIFO must not hang the check.
	 */
	if ((fd = open(cfg->hsm.pin_file, O_RDONLY | O_CLOEXEC | O_NOCTTY |
	    O_NONBLOCK)) < 0 || fstat(fd, &st) != 0) {
		cfg_fail(c, "%s: %s", cfg->hsm.pin_file, strerror(errno));
		goto out;
	}
	if (!S_ISREG(st.st_mode)) {
		cfg_fail(c, "%s: not a regular file", cfg->hsm.pin_file);
		goto out;
	}
	if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0)
		log_warn("%s: hsm.pin_file: %s is accessible by group or others "
		    "(mode %04o); chmod 600 it", c->file, cfg->hsm.pin_file,
		    (unsigned)(st.st_mode & 07777));
	r = 0;
 out:
	if (fd >= 0)
		close(fd);
	return r;
}

/* Keep a validated secret in cr (freed with a wipe by cfg_free). */
static int
cfg_secret_set(struct cfg_ctx *c, struct cfg_credential *cr, const void *s,
    size_t len)
{
	if ((cr->secret = malloc(len)) == NULL)
		return cfg_oom(c);
	memcpy(cr->secret, s, len);
	cr->secret_len = len;
	return 0;
}

static int
cfg_secret_fn(struct cfg_ctx *c, struct json_object *v, void *base)
{
	struct cfg_credential *cr = base;
	const char *s;
	size_t len;

	if (v == NULL)
		return 0;
	if (cfg_get_str(c, v, 0, 0, &s, &len) != 0)
		return -1;
	if (!cfg_valid_secret(s, len))
		return cfg_fail(c, "must be " CFG_SECRET_CHARS);
	if (cfg_secret_set(c, cr, s, len) != 0)
		return -1;
	/* json-c frees without wiping; its copy is ours to clear. */
	wipe((void *)(uintptr_t)s, len);
	return 0;
}

static int
cfg_read_secret(struct cfg_ctx *c, struct cfg_credential *cr)
{
	unsigned char *buf = NULL;
	size_t len = 0, n;
	char ferr[512];
	int r = -1;

	if (util_read_file(cr->secret_file, CFG_MAX_SECRET_FILE, 1, &buf, &len,
	    ferr, sizeof(ferr)) != 0)
		return cfg_fail(c, "%s", ferr);
	n = util_rstrip(buf, len);
	if (!cfg_valid_secret((const char *)buf, n)) {
		cfg_fail(c, "%s: must hold " CFG_SECRET_CHARS
		    " (trailing newlines are ignored)", cr->secret_file);
		goto out;
	}
	r = cfg_secret_set(c, cr, buf, n);
 out:
	wipe_free(buf, len + 1);
	return r;
}

static int
cfg_not_after_fn(struct cfg_ctx *c, struct json_object *v, void *base)
{
	struct cfg_credential *cr = base;
	const char *s;
	size_t len;

	if (v == NULL)
		return 0;
	if (cfg_get_str(c, v, 0, 0, &s, &len) != 0)
		return -1;
	if (cfg_parse_utc(s, len, &cr->not_after) != 0)
		return cfg_fail(c, "must be a UTC time \"YYYY-MM-DDTHH:MM:SSZ\" "
		    "from 1970 on");
	return 0;
}

static const struct cfg_field cfg_cred_fields[] = {
	F_STR(struct cfg_credential, "access_key_id", access_key_id, 0, 0, NULL,
	    FF_REQUIRED, cfg_chk_access_key_id),
	F_FN("secret_access_key", json_type_string, cfg_secret_fn, 0),
	F_STR(struct cfg_credential, "secret_access_key_file", secret_file, 1, 0,
	    NULL, 0, NULL),
	F_FN("not_after", json_type_string, cfg_not_after_fn, 0),
	F_END
};

static int
cfg_cred_post(struct cfg_ctx *c, void *elem, size_t i, void *all)
{
	struct cfg_credential *cr = elem;
	size_t mark;

	/* secret is set here only by an inline secret_access_key */
	if ((cr->secret != NULL) == (cr->secret_file != NULL)) {
		cfg_path_key(c, "secret_access_key");
		return cfg_fail(c, "exactly one of secret_access_key and "
		    "secret_access_key_file is required");
	}
	if (cr->secret_file != NULL) {
		mark = cfg_path_key(c, "secret_access_key_file");
		if (cfg_read_secret(c, cr) != 0)
			return -1;
		cfg_path_pop(c, mark);
	}
	return 0;
}

static int
cfg_paths_fn(struct cfg_ctx *c, struct json_object *v, void *base)
{
	struct cfg_keystore *ks = base;

	return cfg_str_array(c, v, 1, cfg_chk_uri_path, &ks->paths, &ks->npaths);
}

static int
cfg_credentials_fn(struct cfg_ctx *c, struct json_object *v, void *base)
{
	struct cfg_keystore *ks = base;
	const char **ids;
	size_t i, dup, orig;
	void *p = NULL;
	int r;

	r = cfg_obj_array(c, v, 1, sizeof(*ks->credentials), cfg_cred_fields,
	    &p, &ks->ncredentials, cfg_cred_post);
	ks->credentials = p;
	if (r != 0)
		return -1;
	if ((ids = calloc(ks->ncredentials, sizeof(*ids))) == NULL)
		return cfg_oom(c);
	for (i = 0; i < ks->ncredentials; i++)
		ids[i] = ks->credentials[i].access_key_id;
	r = cfg_first_dup(ids, ks->ncredentials, &dup, &orig);
	free(ids);
	if (r < 0)
		return cfg_oom(c);
	if (r > 0) {
		cfg_path_idx(c, dup);
		cfg_path_key(c, "access_key_id");
		return cfg_fail(c, "duplicate of credentials[%zu].access_key_id",
		    orig);
	}
	return 0;
}

static int
cfg_keys_fn(struct cfg_ctx *c, struct json_object *v, void *base)
{
	struct cfg_keystore *ks = base;
	size_t i;

	if (cfg_str_array(c, v, 1, cfg_chk_key_id, &ks->keys, &ks->nkeys) != 0)
		return -1;
	for (i = 0; i < ks->nkeys; i++)
		if (strcmp(ks->keys[i], "*") == 0)
			break;
	if (i == ks->nkeys)
		return 0;
	if (ks->nkeys != 1)
		return cfg_fail(c, "\"*\" must be the only element");
	ks->all_keys = 1;
	free(ks->keys[0]);
	free(ks->keys);
	ks->keys = NULL;
	ks->nkeys = 0;
	return 0;
}

static int
cfg_regions_fn(struct cfg_ctx *c, struct json_object *v, void *base)
{
	struct cfg_keystore *ks = base;

	return cfg_str_array(c, v, 0, cfg_chk_region, &ks->regions,
	    &ks->nregions);
}

static const struct cfg_field cfg_keystore_fields[] = {
	F_FN("paths", json_type_array, cfg_paths_fn, FF_REQUIRED),
	F_FN("credentials", json_type_array, cfg_credentials_fn, FF_REQUIRED),
	F_FN("keys", json_type_array, cfg_keys_fn, FF_REQUIRED),
	F_FN("regions", json_type_array, cfg_regions_fn, 0),
	F_END
};

static int
cfg_keystores_fn(struct cfg_ctx *c, struct json_object *v, void *base)
{
	struct cfg *cfg = base;
	const char **all = NULL;
	size_t *ksof = NULL, k, p, n = 0, dup, orig;
	void *arr = NULL;
	int r;

	r = cfg_obj_array(c, v, 1, sizeof(*cfg->keystores), cfg_keystore_fields,
	    &arr, &cfg->nkeystores, NULL);
	cfg->keystores = arr;
	if (r != 0)
		return -1;
	/* A path routes to exactly one key store: check them all together. */
	for (k = 0; k < cfg->nkeystores; k++)
		n += cfg->keystores[k].npaths;
	if ((all = calloc(n, sizeof(*all))) == NULL ||
	    (ksof = calloc(n, sizeof(*ksof))) == NULL) {
		r = cfg_oom(c);
		goto out;
	}
	for (n = 0, k = 0; k < cfg->nkeystores; k++)
		for (p = 0; p < cfg->keystores[k].npaths; p++, n++) {
			all[n] = cfg->keystores[k].paths[p];
			ksof[n] = k;
		}
	if ((r = cfg_first_dup(all, n, &dup, &orig)) < 0) {
		r = cfg_oom(c);
		goto out;
	}
	if (r > 0) {
		/* back from the flat index to (key store, path) */
		for (p = dup; p > 0 && ksof[p - 1] == ksof[dup]; p--)
			;
		cfg_path_idx(c, ksof[dup]);
		cfg_path_key(c, "paths");
		cfg_path_idx(c, dup - p);
		for (k = orig; k > 0 && ksof[k - 1] == ksof[orig]; k--)
			;
		r = cfg_fail(c, "duplicate of keystores[%zu].paths[%zu]",
		    ksof[orig], orig - k);
	}
 out:
	free(all);
	free(ksof);
	return r;
}

/* ---- the whole file ---- */

#define T struct cfg
static const struct cfg_field cfg_tls_fields[] = {
	F_FN("certificates", json_type_array, cfg_certs_fn, FF_REQUIRED),
	F_STR(T, "client_ca_file", tls.client_ca_file, 1, 0, NULL, FF_NULLABLE, NULL),
	F_FN("client_subjects", json_type_array, cfg_subjects_fn, 0),
	F_END
};

static const struct cfg_field cfg_hsm_fields[] = {
	F_STR(T, "module", hsm.module, 1, 0, NULL, FF_REQUIRED, NULL),
	F_FN("tokens", json_type_array, cfg_tokens_fn, FF_REQUIRED),
	F_STR(T, "pin_file", hsm.pin_file, 1, 0, NULL, 0, NULL),
	F_STR(T, "pin_env", hsm.pin_env, 1, 0, NULL, 0, cfg_chk_env_name),
	F_INT(T, "sessions_per_token", hsm.sessions_per_token, 1, 256, 8, 0),
	F_STR(T, "health_key", hsm.health_key, 1, 128, "xks-health", 0, NULL),
	F_ENUM(T, "iv", hsm.iv, "proxy", cfg_iv_parse,
	    "must be \"proxy\" or \"hsm\""),
	F_INT(T, "timeout_ms", hsm.timeout_ms, 10, 60000, 200, 0),
	F_INT(T, "queue_size", hsm.queue_size, 1, 1000000, 4096, 0),
	F_END
};

static const struct cfg_field cfg_health_fields[] = {
	F_INT(T, "interval_seconds", health.interval_seconds, 1, 3600, 30, 0),
	F_INT(T, "fleet_size", health.fleet_size, 1, 1000, 1, 0),
	F_STR(T, "proxy_vendor", health.proxy_vendor, 1, 128, "xksproxy", 0, NULL),
	F_STR(T, "proxy_model", health.proxy_model, 1, 128,
	    "xksproxy " PACKAGE_VERSION, 0, NULL),
	F_STR(T, "ekm_vendor", health.ekm_vendor, 1, 128, "PKCS#11 HSM", 0, NULL),
	F_INT(T, "degraded_ms", health.degraded_ms, 1, 60000, 100, 0),
	F_END
};

static const struct cfg_field cfg_limits_fields[] = {
	F_SIZE(T, "max_body_bytes", limits.max_body_bytes, 1024, 16777216, 65536),
	F_SIZE(T, "max_header_bytes", limits.max_header_bytes, 1024, 1048576,
	    16384),
	F_INT(T, "header_timeout_ms", limits.header_timeout_ms, 100, 600000,
	    5000, 0),
	F_INT(T, "idle_timeout_ms", limits.idle_timeout_ms, 100, 3600000,
	    60000, 0),
	F_INT(T, "max_connections", limits.max_connections, 1, 1000000, 10000, 0),
	F_INT(T, "max_connections_per_address",
	    limits.max_connections_per_address, 0, 1000000, 0, 0),
	F_SIZE(T, "max_plaintext_bytes", limits.max_plaintext_bytes, 4300,
	    1048576, 4300),
	F_SIZE(T, "max_aad_bytes", limits.max_aad_bytes, 8192, 65535, 8192),
	F_END
};

static const struct cfg_field cfg_sigv4_fields[] = {
	F_INT(T, "max_clock_skew_seconds", sigv4.max_clock_skew_seconds, 1,
	    86400, 300, 0),
	F_END
};

static const struct cfg_field cfg_log_fields[] = {
	F_ENUM(T, "level", log.level, "info", log_level_parse,
	    "must be \"error\", \"warn\", \"info\" or \"debug\""),
	F_ENUM(T, "format", log.format, "text", log_format_parse,
	    "must be \"text\" or \"json\""),
	F_END
};

static const struct cfg_field cfg_top_fields[] = {
	F_FN("listen", json_type_array, cfg_listen_fn, FF_REQUIRED),
	F_INT(T, "worker_threads", worker_threads, 0, 256, 0, 0),
	F_OBJ("tls", cfg_tls_fields, cfg_tls_post, FF_REQUIRED),
	F_FN("health_listen", json_type_object, cfg_health_listen_fn,
	    FF_NULLABLE),
	F_OBJ("hsm", cfg_hsm_fields, cfg_hsm_post, FF_REQUIRED),
	F_OBJ("health", cfg_health_fields, NULL, 0),
	F_FN("keystores", json_type_array, cfg_keystores_fn, FF_REQUIRED),
	F_OBJ("limits", cfg_limits_fields, NULL, 0),
	F_OBJ("sigv4", cfg_sigv4_fields, NULL, 0),
	F_OBJ("log", cfg_log_fields, NULL, 0),
	F_END
};
#undef T

static size_t
cfg_line_of(const char *text, size_t off)
{
	size_t i, line = 1;

	for (i = 0; i < off; i++)
		if (text[i] == '\n')
			line++;
	return line;
}

/* Skip whitespace and comments; json-c usually did this already. */
static size_t
cfg_skip_blank(const char *s, size_t i, size_t len)
{
	const char *e;

	for (;;) {
		while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\r' ||
		    s[i] == '\n'))
			i++;
		if (i + 1 < len && s[i] == '/' && s[i + 1] == '/') {
			while (i < len && s[i] != '\n')
				i++;
		} else if (i + 1 < len && s[i] == '/' && s[i + 1] == '*' &&
		    (e = strstr(s + i + 2, "*/")) != NULL) {
			i = (size_t)(e - s) + 2;
		} else
			return i;
	}
}

static int
cfg_parse_json(struct cfg_ctx *c, const char *text, size_t len,
    struct json_object **out)
{
	struct json_tokener *tok;
	struct json_object *root;
	enum json_tokener_error jerr;
	size_t end;
	int r = -1;

	*out = NULL;
	if (len > CFG_MAX_FILE) {
		snprintf(c->err, c->errlen, "%s: larger than %d bytes", c->file,
		    CFG_MAX_FILE);
		return -1;
	}
	if ((tok = json_tokener_new()) == NULL)
		return cfg_oom(c);
	/* Non-strict: comments allowed. */
	json_tokener_set_flags(tok, JSON_TOKENER_VALIDATE_UTF8);
	/* len + 1: the NUL ends a top-level number and the parse. */
	root = json_tokener_parse_ex(tok, text, (int)len + 1);
	jerr = json_tokener_get_error(tok);
	end = json_tokener_get_parse_end(tok);
	if (end > len)
		end = len;
	/* JSON null parses to NULL with success */
	if (root == NULL && jerr != json_tokener_success) {
		snprintf(c->err, c->errlen, "%s: line %zu: %s", c->file,
		    cfg_line_of(text, end), jerr == json_tokener_continue ?
		    "unexpected end of data" : json_tokener_error_desc(jerr));
		goto out;
	}
	if ((end = cfg_skip_blank(text, end, len)) < len) {
		snprintf(c->err, c->errlen, "%s: line %zu: unexpected characters "
		    "after the top-level object", c->file, cfg_line_of(text, end));
		goto out;
	}
	if (root == NULL || !json_object_is_type(root, json_type_object)) {
		cfg_fail(c, "must be an object");
		goto out;
	}
	*out = root;
	root = NULL;
	r = 0;
 out:
	json_object_put(root);
	json_tokener_free(tok);
	return r;
}

int
cfg_load_string(const char *name, const char *text, struct cfg **out,
    char *err, size_t errlen)
{
	struct json_object *root = NULL;
	struct cfg *cfg = NULL;
	struct cfg_ctx c;
	char dummy[1];
	int r = -1;

	*out = NULL;
	if (err == NULL || errlen == 0) {
		err = dummy;
		errlen = sizeof(dummy);
	}
	err[0] = '\0';
	memset(&c, 0, sizeof(c));
	c.file = name;
	c.err = err;
	c.errlen = errlen;
	if ((cfg = calloc(1, sizeof(*cfg))) == NULL ||
	    (cfg->file = strdup(name)) == NULL) {
		cfg_oom(&c);
		goto out;
	}
	c.cfg = cfg;
	if (cfg_parse_json(&c, text, strlen(text), &root) != 0 ||
	    cfg_object(&c, root, cfg_top_fields, cfg) != 0)
		goto out;
	*out = cfg;
	cfg = NULL;
	r = 0;
 out:
	json_object_put(root);
	cfg_free(cfg);
	return r;
}

int
cfg_load(const char *path, struct cfg **out, char *err, size_t errlen)
{
	unsigned char *buf = NULL;
	size_t len = 0;
	char dummy[1];
	int r = -1;

	*out = NULL;
	if (err == NULL || errlen == 0) {
		err = dummy;
		errlen = sizeof(dummy);
	}
	if (util_read_file(path, CFG_MAX_FILE, 0, &buf, &len, err, errlen) != 0)
		goto out;
	if (memchr(buf, '\0', len) != NULL) {
		snprintf(err, errlen, "%s: contains a NUL byte", path);
		goto out;
	}
	r = cfg_load_string(path, (const char *)buf, out, err, errlen);
 out:
	/* the text may hold inline secrets */
	wipe_free(buf, len + 1);
	return r;
}

static void
cfg_strv_free(char **v, size_t n)
{
	size_t i;

	if (v == NULL)
		return;
	for (i = 0; i < n; i++)
		free(v[i]);
	free(v);
}

void
cfg_free(struct cfg *cfg)
{
	struct cfg_keystore *ks;
	struct cfg_credential *cr;
	size_t i, j;

	if (cfg == NULL)
		return;
	free(cfg->file);
	for (i = 0; i < cfg->nlisten; i++)
		free(cfg->listen[i].address);
	free(cfg->listen);
	for (i = 0; i < cfg->tls.ncertificates; i++) {
		free(cfg->tls.certificates[i].certificate_file);
		free(cfg->tls.certificates[i].private_key_file);
	}
	free(cfg->tls.certificates);
	free(cfg->tls.client_ca_file);
	cfg_strv_free(cfg->tls.client_subjects, cfg->tls.nclient_subjects);
	free(cfg->health_listen.address);
	free(cfg->health_listen.path);
	free(cfg->hsm.module);
	cfg_strv_free(cfg->hsm.tokens, cfg->hsm.ntokens);
	free(cfg->hsm.pin_file);
	free(cfg->hsm.pin_env);
	free(cfg->hsm.health_key);
	free(cfg->health.proxy_vendor);
	free(cfg->health.proxy_model);
	free(cfg->health.ekm_vendor);
	for (i = 0; i < cfg->nkeystores; i++) {
		ks = &cfg->keystores[i];
		cfg_strv_free(ks->paths, ks->npaths);
		for (j = 0; j < ks->ncredentials; j++) {
			cr = &ks->credentials[j];
			free(cr->access_key_id);
			wipe_free(cr->secret, cr->secret_len);
			free(cr->secret_file);
		}
		free(ks->credentials);
		cfg_strv_free(ks->keys, ks->nkeys);
		cfg_strv_free(ks->regions, ks->nregions);
	}
	free(cfg->keystores);
	wipe(cfg, sizeof(*cfg));
	free(cfg);
}
