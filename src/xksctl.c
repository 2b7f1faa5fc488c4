/*
 * xksctl -- the operator's tool for xksproxy.
 *
 *   xksctl credential new   a fresh SigV4 credential in the formats KMS
 *                           accepts, as a config snippet and as the KMS
 *                           console proxy configuration JSON
 *   xksctl probe URL ...    what KMS does before UpdateCustomKeyStore:
 *                           GetHealthStatus, then GetKeyMetadata and an
 *                           encrypt/decrypt round trip, each on a new
 *                           connection, timed against the 250 ms budget
 *
 * Exit status: 0 success, 1 failure, 2 usage error.
 */
#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <json-c/json.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "b64.h"
#include "http.h"
#include "log.h"
#include "sigv4.h"
#include "util.h"
#include "xks.h"

#define CTL_EXIT_OK 0
#define CTL_EXIT_FAIL 1
#define CTL_EXIT_USAGE 2

#define CTL_AKID_LEN 26                 /* KMS accepts 20-30 of A-Z2-7 */
#define CTL_SECRET_BYTES 32             /* 256 bits of entropy */
#define CTL_PLACEHOLDER_PATH "/example/kms/xks/v1"
#define CTL_PATH_SUFFIX "/kms/xks/v1"
#define CTL_PATH_MAX 128                /* XksProxyUriPath limit */
#define CTL_KEYID_MAX 128               /* externalKeyId limit */
#define CTL_BUDGET_US 250000ULL         /* KMS's end-to-end timeout per call */
#define CTL_MAX_RESPONSE (1024 * 1024)
#define CTL_MAX_SECRET_FILE 4096
#define CTL_MAX_ENDPOINTS 9             /* the URL and 8 --same-keys-as */
#define CTL_PROBE_BYTES 32              /* random plaintext and AAD */
#define CTL_DEFAULT_TIMEOUT_MS 5000
#define CTL_ACCOUNT "000000000000"      /* probe ARNs: clearly not a real account */

/* --- usage */

static void
ctl_usage(FILE *f)
{
	fprintf(f,
	    "usage: xksctl credential new [--path PATH] [--output FILE]\n"
	    "       xksctl probe URL --access-key-id ID --secret-file FILE\n"
	    "              [--key KEYID] [--same-keys-as URL2]...\n"
	    "              [--cacert FILE] [--cert FILE --key-file FILE]\n"
	    "              [--region REGION] [--kms-operation OP]\n"
	    "              [--timeout MS] [--json]\n"
	    "       xksctl --version\n"
	    "       xksctl help\n"
	    "URL is the XKS proxy base: https://HOST[:PORT]/PREFIX/kms/xks/v1\n");
}

/* --- input checks */

/* An XksProxyUriPath as KMS accepts it: 1-128 of a-zA-Z0-9/-_, ending in /kms/xks/v1. */
static int
ctl_path_valid(const char *s)
{
	size_t n = strlen(s), sl = strlen(CTL_PATH_SUFFIX), i;

	if (n < sl || n > CTL_PATH_MAX || s[0] != '/' ||
	    strcmp(s + n - sl, CTL_PATH_SUFFIX) != 0)
		return 0;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || c == '/' || c == '-' || c == '_'))
			return 0;
	}
	return 1;
}

/* True when s is 1..max characters, all letters, digits or in extra. */
static int
ctl_charset_valid(const char *s, size_t max, const char *extra)
{
	size_t n = strlen(s), i;

	if (n == 0 || n > max)
		return 0;
	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)s[i];

		if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
		    (c >= '0' && c <= '9') || (c != '\0' && strchr(extra, c))))
			return 0;
	}
	return 1;
}

/* --- credential new */

/* A fresh access key id of CTL_AKID_LEN characters of A-Z2-7. */
static int
ctl_akid_new(char out[CTL_AKID_LEN + 1])
{
	static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
	unsigned char rnd[CTL_AKID_LEN];
	size_t i;
	int r = -1;

	out[0] = '\0';
	if (RAND_bytes(rnd, sizeof(rnd)) != 1)
		goto out;
	/*
	 * The alphabet has 32 symbols and 32 divides 256, so the low five
	 * bits of a uniform byte pick a symbol uniformly: no modulo bias.
	 */
	for (i = 0; i < CTL_AKID_LEN; i++)
		out[i] = alphabet[rnd[i] & 0x1f];
	out[CTL_AKID_LEN] = '\0';
	r = 0;
 out:
	wipe(rnd, sizeof(rnd));
	return r;
}

/* A fresh secret: Base64 of 32 random bytes.  Malloc'ed; wipe on free. */
static char *
ctl_secret_new(void)
{
	unsigned char rnd[CTL_SECRET_BYTES];
	char *s = NULL;

	if (RAND_bytes(rnd, sizeof(rnd)) == 1)
		s = b64_encode(rnd, sizeof(rnd));
	wipe(rnd, sizeof(rnd));
	return s;
}

/*
 * Write secret and a newline to a new file of mode 0600; an existing file
 * is never overwritten.  Returns 0, or -1 with err set.
 */
static int
ctl_write_secret(const char *path, const char *secret, char *err,
    size_t errlen)
{
	size_t len = strlen(secret), off = 0;
	char *buf = NULL;
	int fd = -1, r = -1, created = 0;
	ssize_t n;

	if ((buf = malloc(len + 1)) == NULL) {
		snprintf(err, errlen, "%s: out of memory", path);
		goto out;
	}
	memcpy(buf, secret, len);
	buf[len++] = '\n';
	fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
	    0600);
	if (fd < 0) {
		snprintf(err, errlen, "%s: %s%s", path, strerror(errno),
		    errno == EEXIST ? " (refusing to overwrite)" : "");
		goto out;
	}
	created = 1;
	/* The umask may only narrow 0600; make it exact either way. */
	if (fchmod(fd, 0600) != 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto out;
	}
	while (off < len) {
		n = write(fd, buf + off, len - off);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0) {
			snprintf(err, errlen, "%s: %s", path,
			    n < 0 ? strerror(errno) : "short write");
			goto out;
		}
		off += (size_t)n;
	}
	if (fsync(fd) != 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto out;
	}
	n = close(fd);
	fd = -1;
	if (n != 0) {
		snprintf(err, errlen, "%s: %s", path, strerror(errno));
		goto out;
	}
	r = 0;
 out:
	if (fd >= 0)
		close(fd);
	if (r != 0 && created)
		unlink(path);
	wipe_free(buf, len);
	return r;
}

/* s as a quoted, escaped JSON string; malloc'ed. */
static char *
ctl_json_quote(const char *s)
{
	json_object *o = json_object_new_string(s);
	char *q = NULL;

	if (o != NULL)
		q = strdup(json_object_to_json_string_ext(o,
		    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(o);
	return q;
}

static int
ctl_credential_new(int argc, char **argv)
{
	static const struct option opts[] = {
		{ "path", required_argument, NULL, 'p' },
		{ "output", required_argument, NULL, 'o' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	const char *path = NULL, *output = NULL;
	char akid[CTL_AKID_LEN + 1], err[1024];
	char *secret = NULL, *abs = NULL, *quoted = NULL;
	int ch, r = CTL_EXIT_FAIL;

	opterr = 0;
	optind = 1;
	while ((ch = getopt_long(argc, argv, "+p:o:h", opts, NULL)) != -1) {
		switch (ch) {
		case 'p':
			path = optarg;
			break;
		case 'o':
			output = optarg;
			break;
		case 'h':
			ctl_usage(stdout);
			return CTL_EXIT_OK;
		default:
			fprintf(stderr, "xksctl credential new: unknown option "
			    "or missing argument: %s\n", argv[optind - 1]);
			ctl_usage(stderr);
			return CTL_EXIT_USAGE;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "xksctl credential new: unexpected argument "
		    "%s\n", argv[optind]);
		return CTL_EXIT_USAGE;
	}
	if (path != NULL && !ctl_path_valid(path)) {
		fprintf(stderr, "xksctl credential new: --path %s: an "
		    "XksProxyUriPath is at most %d characters of a-z A-Z 0-9 "
		    "/ - _, starts with / and ends with %s\n", path,
		    CTL_PATH_MAX, CTL_PATH_SUFFIX);
		return CTL_EXIT_USAGE;
	}
	if (output != NULL && *output == '\0') {
		fprintf(stderr, "xksctl credential new: --output is empty\n");
		return CTL_EXIT_USAGE;
	}
	if (ctl_akid_new(akid) != 0 || (secret = ctl_secret_new()) == NULL) {
		fprintf(stderr, "xksctl: cannot draw random bytes\n");
		goto out;
	}
	if (output != NULL) {
		if (ctl_write_secret(output, secret, err, sizeof(err)) != 0) {
			fprintf(stderr, "xksctl: %s\n", err);
			goto out;
		}
		/* The daemon may run elsewhere: name the file absolutely. */
		if ((abs = realpath(output, NULL)) == NULL ||
		    (quoted = ctl_json_quote(abs)) == NULL) {
			fprintf(stderr, "xksctl: %s: %s\n", output,
			    strerror(errno));
			goto out;
		}
	}
	/*
	 * stdout carries exactly two lines (the snippet, the console JSON) so
	 * that scripts can take them apart; the explanations go to stderr.
	 */
	fprintf(stderr, "# line 1: a keystores[].credentials entry for "
	    "xksproxy.conf%s\n", output != NULL ? "" :
	    " (better: --output FILE and secret_access_key_file)");
	if (output != NULL)
		printf("{ \"access_key_id\": \"%s\", "
		    "\"secret_access_key_file\": %s }\n", akid, quoted);
	else
		printf("{ \"access_key_id\": \"%s\", "
		    "\"secret_access_key\": \"%s\" }\n", akid, secret);
	fprintf(stderr, "# line 2: the KMS console proxy configuration file "
	    "(CreateCustomKeyStore / UpdateCustomKeyStore)%s\n",
	    path != NULL ? "" : "; replace the placeholder XksProxyUriPath");
	printf("{\"XksProxyUriPath\": \"%s\", \"XksProxyAuthenticationCredential"
	    "\": {\"AccessKeyId\": \"%s\", \"RawSecretAccessKey\": \"%s\"}}\n",
	    path != NULL ? path : CTL_PLACEHOLDER_PATH, akid, secret);
	if (fflush(stdout) != 0 || ferror(stdout)) {
		fprintf(stderr, "xksctl: writing the output: %s\n",
		    strerror(errno));
		goto out;
	}
	r = CTL_EXIT_OK;
 out:
	if (secret != NULL)
		wipe_free(secret, strlen(secret));
	free(abs);
	free(quoted);
	return r;
}

/* --- probe: options, endpoints, results */

struct ctl_url {
	char *text;                   /* as given, without a trailing '/' */
	char *host;                   /* without the brackets of an IPv6 literal */
	char *port;
	char *authority;              /* the Host header: host[:port] as given */
	char *path;                   /* .../kms/xks/v1 */
	int host_is_ip;
};

struct ctl_opts {
	const char *akid;
	const char *secret_file;
	const char *key;
	const char *cacert;
	const char *cert;
	const char *key_file;
	const char *region;
	const char *kms_operation;
	int json;
	int timeout_ms;
	const char *urls[CTL_MAX_ENDPOINTS];  /* [0] the URL, then --same-keys-as */
	size_t nurls;
};

enum ctl_result { CTL_RES_OK = 0, CTL_RES_FAIL, CTL_RES_SKIP };

struct ctl_step {
	char name[32];
	size_t ep;                    /* endpoint index */
	int status;                   /* HTTP status, 0 when none */
	char error_name[64];          /* from an error body, sanitised */
	char detail[384];             /* why it failed, or what it found */
	uint64_t connect_us, tls_us, request_us;
	int ran;                      /* a request was attempted */
	enum ctl_result result;
};

struct ctl_probe {
	const struct ctl_opts *o;
	struct ctl_url url[CTL_MAX_ENDPOINTS];
	size_t nurl;
	unsigned char *secret;
	size_t secret_len;
	size_t secret_alloc;          /* bytes to wipe: the file and its NUL */
	SSL_CTX *ctx;
	struct ctl_step *steps;
	size_t nsteps;
};

/* What an Encrypt returned, kept to decrypt it (elsewhere) and compare. */
struct ctl_ct {
	unsigned char pt[CTL_PROBE_BYTES];
	unsigned char aad[CTL_PROBE_BYTES];
	char *ct_b64, *iv_b64, *tag_b64, *cmeta_b64;   /* as returned */
	size_t ep;                    /* endpoint that encrypted */
	int valid;
};

/* An HTTP response. */
struct ctl_resp {
	unsigned char *buf;
	size_t used, cap;
	int status;
	size_t head_len;              /* 0 until the head is complete */
	long long clen;               /* -1 when absent */
	int chunked;
	unsigned char *body;          /* into buf */
	size_t body_len;
};

static void
ctl_url_clear(struct ctl_url *u)
{
	free(u->text);
	free(u->host);
	free(u->port);
	free(u->authority);
	free(u->path);
	memset(u, 0, sizeof(*u));
}

/*
 * Parse https://HOST[:PORT]/PATH.  Returns 0, or -1 with err set (a usage
 * error: the URL is what the operator typed).
 */
static int
ctl_url_parse(const char *s, struct ctl_url *u, char *err, size_t errlen)
{
	const char *auth, *slash, *hp, *he, *pp = NULL;
	unsigned char tmp[sizeof(struct in6_addr)];
	size_t plen;
	long port;
	char *end;
	int r = -1;

	memset(u, 0, sizeof(*u));
	if (strncasecmp(s, "https://", 8) != 0) {
		snprintf(err, errlen, "%s: not an https:// URL", s);
		goto out;
	}
	auth = s + 8;
	if (strpbrk(s, "?#@ \t") != NULL) {
		snprintf(err, errlen, "%s: no user, query, fragment or blank "
		    "allowed", s);
		goto out;
	}
	if ((slash = strchr(auth, '/')) == NULL) {
		snprintf(err, errlen, "%s: no path (expected .../kms/xks/v1)",
		    s);
		goto out;
	}
	if (*auth == '[') {
		hp = auth + 1;
		if ((he = memchr(hp, ']', (size_t)(slash - hp))) == NULL) {
			snprintf(err, errlen, "%s: unterminated [", s);
			goto out;
		}
		if (he + 1 < slash && he[1] != ':') {
			snprintf(err, errlen, "%s: bad authority", s);
			goto out;
		}
		if (he + 1 < slash)
			pp = he + 2;
	} else {
		hp = auth;
		he = memchr(auth, ':', (size_t)(slash - auth));
		if (he != NULL)
			pp = he + 1;
		else
			he = slash;
	}
	if (he == hp || he - hp > 253) {
		snprintf(err, errlen, "%s: bad host name", s);
		goto out;
	}
	if (pp != NULL) {
		errno = 0;
		port = strtol(pp, &end, 10);
		if (pp == slash || end != slash || errno != 0 || port < 1 ||
		    port > 65535) {
			snprintf(err, errlen, "%s: bad port", s);
			goto out;
		}
	}
	plen = strlen(slash);
	if (plen > 1 && slash[plen - 1] == '/')
		plen--;
	if ((u->host = strndup(hp, (size_t)(he - hp))) == NULL ||
	    (u->port = strndup(pp != NULL ? pp : "443",
	    pp != NULL ? (size_t)(slash - pp) : 3)) == NULL ||
	    (u->authority = strndup(auth, (size_t)(slash - auth))) == NULL ||
	    (u->path = strndup(slash, plen)) == NULL ||
	    (u->text = strndup(s, (size_t)(slash - s) + plen)) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	if (!ctl_path_valid(u->path)) {
		snprintf(err, errlen, "%s: the path must be an XksProxyUriPath: "
		    "at most %d characters of a-z A-Z 0-9 / - _, ending in %s",
		    s, CTL_PATH_MAX, CTL_PATH_SUFFIX);
		goto out;
	}
	u->host_is_ip = inet_pton(AF_INET, u->host, tmp) == 1 ||
	    inet_pton(AF_INET6, u->host, tmp) == 1;
	r = 0;
 out:
	if (r != 0)
		ctl_url_clear(u);
	return r;
}

/* Append a step (zeroed, named); NULL on allocation failure. */
static struct ctl_step *
ctl_step_add(struct ctl_probe *p, const char *name, size_t ep)
{
	struct ctl_step *n, *st;

	n = realloc(p->steps, (p->nsteps + 1) * sizeof(*p->steps));
	if (n == NULL)
		return NULL;
	p->steps = n;
	st = &p->steps[p->nsteps++];
	memset(st, 0, sizeof(*st));
	snprintf(st->name, sizeof(st->name), "%s", name);
	st->ep = ep;
	st->result = CTL_RES_FAIL;
	return st;
}

static void
ctl_step_fail(struct ctl_step *st, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Mark a step failed with a reason (the first reason wins). */
static void
ctl_step_fail(struct ctl_step *st, const char *fmt, ...)
{
	va_list ap;

	st->result = CTL_RES_FAIL;
	if (st->detail[0] != '\0')
		return;
	va_start(ap, fmt);
	vsnprintf(st->detail, sizeof(st->detail), fmt, ap);
	va_end(ap);
}

static uint64_t
ctl_step_total(const struct ctl_step *st)
{
	return st->connect_us + st->tls_us + st->request_us;
}

/* --- probe: output */

static void
ctl_print_header(const struct ctl_probe *p)
{
	size_t i;

	printf("xksctl probe: region %s, kmsOperation %s, key %s, budget "
	    "%llu ms per call (times in ms)\n", p->o->region, p->o->kms_operation,
	    p->o->key != NULL ? p->o->key : "(none: health only)",
	    CTL_BUDGET_US / 1000);
	for (i = 0; i < p->nurl; i++)
		printf("endpoint %zu: %s\n", i + 1, p->url[i].text);
	printf("%-16s %2s %4s  %-30s %8s %8s %8s %8s  %s\n", "STEP", "EP",
	    "HTTP", "ERROR", "CONNECT", "TLS", "REQUEST", "TOTAL", "RESULT");
	fflush(stdout);
}

static const char *
ctl_result_name(enum ctl_result r)
{
	return r == CTL_RES_OK ? "OK" : r == CTL_RES_SKIP ? "SKIP" : "FAIL";
}

/* One line per step: the times in ms, the total against the budget. */
static void
ctl_print_step(const struct ctl_step *st)
{
	char status[16];

	if (st->status > 0)
		snprintf(status, sizeof(status), "%d", st->status);
	else
		snprintf(status, sizeof(status), "-");
	printf("%-16s %2zu %4s  %-30s %8.1f %8.1f %8.1f %8.1f  %s%s%s\n",
	    st->name, st->ep + 1, status,
	    st->error_name[0] != '\0' ? st->error_name : "-",
	    (double)st->connect_us / 1000.0, (double)st->tls_us / 1000.0,
	    (double)st->request_us / 1000.0,
	    (double)ctl_step_total(st) / 1000.0, ctl_result_name(st->result),
	    st->detail[0] != '\0' ? "  " : "", st->detail);
	fflush(stdout);
}

/* A number of milliseconds with one decimal, serialised as written. */
static json_object *
ctl_json_ms(uint64_t us)
{
	char s[32];

	snprintf(s, sizeof(s), "%.1f", (double)us / 1000.0);
	return json_object_new_double_s((double)us / 1000.0, s);
}

static int
ctl_json_add(json_object *o, const char *k, json_object *v)
{
	if (v == NULL || json_object_object_add(o, k, v) != 0) {
		json_object_put(v);
		return -1;
	}
	return 0;
}

/* The whole report as one JSON object; NULL on allocation failure. */
static json_object *
ctl_report_json(const struct ctl_probe *p, int ok)
{
	json_object *top = NULL, *steps = NULL, *eps = NULL, *s = NULL;
	json_object *ret = NULL;
	const struct ctl_step *st;
	size_t i;
	int e = 0;

	if ((top = json_object_new_object()) == NULL ||
	    (steps = json_object_new_array()) == NULL ||
	    (eps = json_object_new_array()) == NULL)
		goto out;
	for (i = 0; i < p->nurl; i++)
		e |= json_object_array_add(eps,
		    json_object_new_string(p->url[i].text));
	for (i = 0; i < p->nsteps; i++) {
		st = &p->steps[i];
		if ((s = json_object_new_object()) == NULL)
			goto out;
		e |= ctl_json_add(s, "step", json_object_new_string(st->name));
		e |= ctl_json_add(s, "endpoint",
		    json_object_new_int((int)st->ep + 1));
		e |= ctl_json_add(s, "url",
		    json_object_new_string(p->url[st->ep].text));
		json_object_object_add(s, "httpStatus", st->status > 0 ?
		    json_object_new_int(st->status) : NULL);
		json_object_object_add(s, "errorName", st->error_name[0] ?
		    json_object_new_string(st->error_name) : NULL);
		e |= ctl_json_add(s, "connectMs", ctl_json_ms(st->connect_us));
		e |= ctl_json_add(s, "tlsMs", ctl_json_ms(st->tls_us));
		e |= ctl_json_add(s, "requestMs", ctl_json_ms(st->request_us));
		e |= ctl_json_add(s, "totalMs", ctl_json_ms(ctl_step_total(st)));
		e |= ctl_json_add(s, "withinBudget", json_object_new_boolean(
		    ctl_step_total(st) <= CTL_BUDGET_US));
		e |= ctl_json_add(s, "result",
		    json_object_new_string(ctl_result_name(st->result)));
		e |= ctl_json_add(s, "ok",
		    json_object_new_boolean(st->result == CTL_RES_OK));
		e |= ctl_json_add(s, "detail",
		    json_object_new_string(st->detail));
		if (json_object_array_add(steps, s) != 0)
			goto out;
		s = NULL;
	}
	e |= ctl_json_add(top, "ok", json_object_new_boolean(ok));
	e |= ctl_json_add(top, "budgetMs",
	    json_object_new_int((int)(CTL_BUDGET_US / 1000)));
	e |= ctl_json_add(top, "region", json_object_new_string(p->o->region));
	e |= ctl_json_add(top, "kmsOperation",
	    json_object_new_string(p->o->kms_operation));
	json_object_object_add(top, "key", p->o->key != NULL ?
	    json_object_new_string(p->o->key) : NULL);
	e |= ctl_json_add(top, "endpoints", eps);
	eps = NULL;
	e |= ctl_json_add(top, "steps", steps);
	steps = NULL;
	if (e != 0)
		goto out;
	ret = top;
	top = NULL;
 out:
	json_object_put(s);
	json_object_put(eps);
	json_object_put(steps);
	json_object_put(top);
	return ret;
}

/* --- probe: transport */

/* Describe the SSL failure of ret into err; drains the error queue. */
static void
ctl_ssl_error(SSL *ssl, int ret, const char *what, char *err, size_t errlen)
{
	int e = SSL_get_error(ssl, ret), saved = errno;
	unsigned long code = ERR_peek_error();
	long v = SSL_get_verify_result(ssl);
	char buf[256];

	if (e == SSL_ERROR_WANT_READ || e == SSL_ERROR_WANT_WRITE)
		snprintf(err, errlen, "%s: timed out", what);
	else if (v != X509_V_OK)
		snprintf(err, errlen, "%s: certificate verification failed: %s",
		    what, X509_verify_cert_error_string(v));
	else if (code != 0) {
		ERR_error_string_n(code, buf, sizeof(buf));
		snprintf(err, errlen, "%s: %s", what, buf);
	} else if (e == SSL_ERROR_SYSCALL && saved != 0)
		snprintf(err, errlen, "%s: %s", what, strerror(saved));
	else
		snprintf(err, errlen, "%s: connection closed by the server",
		    what);
	ERR_clear_error();
}

/* One TCP connect within timeout_ms; the socket, or -1 with errno set. */
static int
ctl_connect_one(const struct addrinfo *ai, int timeout_ms)
{
	struct pollfd pfd;
	socklen_t sl;
	int fd, soerr = 0, saved;

	/* Non-blocking only while connecting, to bound the wait. */
	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_CLOEXEC |
	    SOCK_NONBLOCK, ai->ai_protocol);
	if (fd < 0)
		return -1;
	if (connect(fd, ai->ai_addr, ai->ai_addrlen) == 0)
		return fd;
	saved = errno;
	if (saved == EINPROGRESS) {
		pfd.fd = fd;
		pfd.events = POLLOUT;
		pfd.revents = 0;
		if (poll(&pfd, 1, timeout_ms) != 1)
			saved = ETIMEDOUT;
		else {
			sl = sizeof(soerr);
			if (getsockopt(fd, SOL_SOCKET, SO_ERROR, &soerr,
			    &sl) == 0 && soerr == 0)
				return fd;
			saved = soerr != 0 ? soerr : errno;
		}
	}
	close(fd);
	errno = saved;
	return -1;
}

/*
 * Connect to any address of u within timeout_ms each; the socket is left
 * blocking with send/receive timeouts.  Returns it, or -1 with err set.
 */
static int
ctl_connect(const struct ctl_url *u, int timeout_ms, char *err,
    size_t errlen)
{
	struct addrinfo hints, *res = NULL, *ai;
	struct timeval tv;
	int fd = -1, ret = -1, gai, saved = EHOSTUNREACH, one = 1, flags;

	memset(&hints, 0, sizeof(hints));
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_NUMERICSERV;
	if ((gai = getaddrinfo(u->host, u->port, &hints, &res)) != 0) {
		snprintf(err, errlen, "resolve %s: %s", u->host,
		    gai_strerror(gai));
		goto out;
	}
	for (ai = res; ai != NULL && fd < 0; ai = ai->ai_next)
		if ((fd = ctl_connect_one(ai, timeout_ms)) < 0)
			saved = errno;
	if (fd < 0) {
		snprintf(err, errlen, "connect %s port %s: %s", u->host,
		    u->port, strerror(saved));
		goto out;
	}
	tv.tv_sec = timeout_ms / 1000;
	tv.tv_usec = (timeout_ms % 1000) * 1000;
	if ((flags = fcntl(fd, F_GETFL)) < 0 ||
	    fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv)) != 0 ||
	    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv)) != 0) {
		snprintf(err, errlen, "socket options: %s", strerror(errno));
		goto out;
	}
	(void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	ret = fd;
	fd = -1;
 out:
	if (fd >= 0)
		close(fd);
	if (res != NULL)
		freeaddrinfo(res);
	return ret;
}

/* TLS client handshake with SNI and host name verification; NULL on failure. */
static SSL *
ctl_tls_connect(SSL_CTX *ctx, int fd, const struct ctl_url *u, char *err,
    size_t errlen)
{
	SSL *ssl = NULL, *ret = NULL;
	int rc;

	if ((ssl = SSL_new(ctx)) == NULL || SSL_set_fd(ssl, fd) != 1) {
		snprintf(err, errlen, "TLS: cannot set up a connection");
		ERR_clear_error();
		goto out;
	}
	if (u->host_is_ip) {
		/* RFC 6066: no SNI for an address; verify the IP SAN. */
		if (X509_VERIFY_PARAM_set1_ip_asc(SSL_get0_param(ssl),
		    u->host) != 1) {
			snprintf(err, errlen, "TLS: bad address %s", u->host);
			ERR_clear_error();
			goto out;
		}
	} else if (SSL_set_tlsext_host_name(ssl, u->host) != 1 ||
	    SSL_set1_host(ssl, u->host) != 1) {
		snprintf(err, errlen, "TLS: bad host name %s", u->host);
		ERR_clear_error();
		goto out;
	}
	errno = 0;
	if ((rc = SSL_connect(ssl)) != 1) {
		ctl_ssl_error(ssl, rc, "TLS handshake", err, errlen);
		goto out;
	}
	ret = ssl;
	ssl = NULL;
 out:
	SSL_free(ssl);
	return ret;
}

/* Write all of buf; -1 with err set on failure. */
static int
ctl_tls_write(SSL *ssl, const char *buf, size_t len, char *err,
    size_t errlen)
{
	size_t off = 0;
	int n, chunk;

	while (off < len) {
		chunk = len - off > INT_MAX ? INT_MAX : (int)(len - off);
		errno = 0;
		if ((n = SSL_write(ssl, buf + off, chunk)) <= 0) {
			ctl_ssl_error(ssl, n, "send", err, errlen);
			return -1;
		}
		off += (size_t)n;
	}
	return 0;
}

/*
 * Decode a chunked body at b[0..len) in place when decode is set.  Returns
 * 1 when complete (*outlen set), 0 when more bytes are needed, -1 when
 * malformed.
 */
static int
ctl_dechunk(unsigned char *b, size_t len, size_t *outlen, int decode)
{
	size_t i = 0, o = 0, sz, start;
	int digits, v;

	for (;;) {
		sz = 0;
		digits = 0;
		for (; i < len; i++, digits++) {
			unsigned char c = b[i];

			if (c >= '0' && c <= '9')
				v = c - '0';
			else if ((c | 0x20) >= 'a' && (c | 0x20) <= 'f')
				v = (c | 0x20) - 'a' + 10;
			else
				break;
			if (sz > CTL_MAX_RESPONSE)
				return -1;
			sz = sz * 16 + (size_t)v;
		}
		if (i >= len)
			return 0;
		if (digits == 0)
			return -1;
		while (i < len && b[i] != '\n')    /* chunk extensions */
			i++;
		if (i++ >= len)
			return 0;
		if (sz == 0) {
			for (;;) {                    /* trailers, then the empty line */
				start = i;
				while (i < len && b[i] != '\n')
					i++;
				if (i++ >= len)
					return 0;
				if (i - start <= 2) {
					*outlen = o;
					return 1;
				}
			}
		}
		if (len - i < sz + 2)
			return 0;
		if (decode)
			memmove(b + o, b + i, sz);
		o += sz;
		i += sz;
		if (b[i] != '\r' || b[i + 1] != '\n')
			return -1;
		i += 2;
	}
}

/* Parse the response head once complete: 1 done, 0 need more, -1 bad. */
static int
ctl_resp_head(struct ctl_resp *r)
{
	const char *p = (const char *)r->buf, *end, *line, *eol, *colon, *v;
	unsigned char *hend;
	size_t n;

	if ((hend = memmem(r->buf, r->used, "\r\n\r\n", 4)) == NULL)
		return r->used > 65536 ? -1 : 0;
	end = (const char *)hend + 2;
	if (r->used < 12 || memcmp(p, "HTTP/1.", 7) != 0 || p[8] != ' ' ||
	    p[9] < '1' || p[9] > '5' || p[10] < '0' || p[10] > '9' ||
	    p[11] < '0' || p[11] > '9')
		return -1;
	r->status = (p[9] - '0') * 100 + (p[10] - '0') * 10 + (p[11] - '0');
	r->clen = -1;
	line = memchr(p, '\n', (size_t)(end - p));
	for (line = line + 1; line < end; line = eol + 1) {
		eol = memchr(line, '\n', (size_t)(end - line));
		if ((colon = memchr(line, ':', (size_t)(eol - line))) == NULL)
			continue;
		n = (size_t)(colon - line);
		for (v = colon + 1; v < eol && (*v == ' ' || *v == '\t'); v++)
			;
		if (n == 14 && strncasecmp(line, "content-length", n) == 0) {
			char *e;

			errno = 0;
			r->clen = strtoll(v, &e, 10);
			if (errno != 0 || e == v || r->clen < 0 ||
			    r->clen > CTL_MAX_RESPONSE)
				return -1;
		} else if (n == 17 &&
		    strncasecmp(line, "transfer-encoding", n) == 0 &&
		    memmem(v, (size_t)(eol - v), "chunked", 7) != NULL)
			r->chunked = 1;
	}
	r->head_len = (size_t)((const char *)hend + 4 - p);
	return 1;
}

/* True once the whole body is in (for Content-Length and chunked). */
static int
ctl_resp_complete(struct ctl_resp *r, int *bad)
{
	size_t have = r->used - r->head_len, n;
	int c;

	*bad = 0;
	if (r->chunked) {
		if ((c = ctl_dechunk(r->buf + r->head_len, have, &n, 0)) < 0)
			*bad = 1;
		return c == 1;
	}
	return r->clen >= 0 && have >= (size_t)r->clen;
}

/* Read one response (head and body); -1 with err set on failure. */
static int
ctl_read_response(SSL *ssl, struct ctl_resp *r, char *err, size_t errlen)
{
	unsigned char *nb;
	int n, e, bad = 0, eof = 0, h;

	for (;;) {
		if (r->head_len == 0 && r->used > 0) {
			if ((h = ctl_resp_head(r)) < 0) {
				snprintf(err, errlen, "malformed HTTP response");
				return -1;
			}
		}
		if (r->head_len > 0 && ctl_resp_complete(r, &bad))
			break;
		if (bad) {
			snprintf(err, errlen, "malformed chunked body");
			return -1;
		}
		if (eof) {
			if (r->head_len > 0 && r->clen < 0 && !r->chunked)
				break;              /* the body runs to the close */
			snprintf(err, errlen, "connection closed before the "
			    "response was complete");
			return -1;
		}
		if (r->used == r->cap) {
			if (r->cap >= CTL_MAX_RESPONSE) {
				snprintf(err, errlen, "response larger than %d "
				    "bytes", CTL_MAX_RESPONSE);
				return -1;
			}
			if ((nb = realloc(r->buf, r->cap + 16384 + 1)) == NULL) {
				snprintf(err, errlen, "out of memory");
				return -1;
			}
			r->buf = nb;
			r->cap += 16384;
		}
		errno = 0;
		n = SSL_read(ssl, r->buf + r->used, (int)(r->cap - r->used));
		if (n > 0) {
			r->used += (size_t)n;
			r->buf[r->used] = '\0';
			continue;
		}
		e = SSL_get_error(ssl, n);
		if (e == SSL_ERROR_ZERO_RETURN ||
		    (e == SSL_ERROR_SYSCALL && ERR_peek_error() == 0 &&
		    errno == 0)) {
			ERR_clear_error();
			eof = 1;
			continue;
		}
		ctl_ssl_error(ssl, n, "receive", err, errlen);
		return -1;
	}
	r->body = r->buf + r->head_len;
	r->body_len = r->used - r->head_len;
	if (r->chunked)
		(void)ctl_dechunk(r->body, r->body_len, &r->body_len, 1);
	else if (r->clen >= 0)
		r->body_len = (size_t)r->clen;
	return 0;
}

/* The request bytes, signed as KMS signs; malloc'ed or NULL. */
static char *
ctl_http_request(const struct ctl_probe *p, const struct ctl_url *u,
    const char *path, const char *body, size_t body_len, size_t *outlen)
{
	struct http_header hdrs[3];
	struct sigv4_input in;
	char date[32], *auth = NULL, *req = NULL;
	struct tm tm;
	time_t now = time(NULL);
	int n;

	*outlen = 0;
	if (gmtime_r(&now, &tm) == NULL ||
	    strftime(date, sizeof(date), "%Y%m%dT%H%M%SZ", &tm) == 0)
		goto out;
	hdrs[0].name = "Host";
	hdrs[0].value = u->authority;
	hdrs[1].name = "Content-Type";
	hdrs[1].value = "application/json";
	hdrs[2].name = "X-Amz-Date";
	hdrs[2].value = date;
	memset(&in, 0, sizeof(in));
	in.method = "POST";
	in.path = path;
	in.query = "";
	in.headers = hdrs;
	in.nheaders = 3;
	in.body = (const unsigned char *)body;
	in.body_len = body_len;
	/* What KMS signs: host and x-amz-date, nothing else. */
	if ((auth = sigv4_sign(&in, "host;x-amz-date", p->o->akid, p->secret,
	    p->secret_len, p->o->region, SIGV4_SERVICE)) == NULL)
		goto out;
	n = asprintf(&req, "POST %s HTTP/1.1\r\nHost: %s\r\n"
	    "Content-Type: application/json\r\nContent-Length: %zu\r\n"
	    "X-Amz-Date: %s\r\nAuthorization: %s\r\nConnection: close\r\n"
	    "User-Agent: xksctl/%s\r\n\r\n", path, u->authority, body_len,
	    date, auth, PACKAGE_VERSION);
	if (n < 0) {
		req = NULL;
		goto out;
	}
	{
		char *full = realloc(req, (size_t)n + body_len + 1);

		if (full == NULL) {
			free(req);
			req = NULL;
			goto out;
		}
		req = full;
		memcpy(req + n, body, body_len);
		req[(size_t)n + body_len] = '\0';
		*outlen = (size_t)n + body_len;
	}
 out:
	free(auth);
	return req;
}

/*
 * POST body to endpoint ep at path on a new connection, timing connect,
 * TLS and the request.  On an HTTP response with a JSON object body
 * returns 0 with *resp set (caller puts it) and st->status set; an error
 * body also fills st->error_name and the detail.  -1 on any other failure
 * with the step failed and its detail set.
 */
static int
ctl_call(struct ctl_probe *p, struct ctl_step *st, const char *path,
    json_object *req, json_object **resp)
{
	const struct ctl_url *u = &p->url[st->ep];
	struct ctl_resp r;
	json_tokener *tok = NULL;
	json_object *o = NULL, *v;
	const char *body;
	char err[512], *wire = NULL, msg[256];
	size_t body_len, wire_len = 0;
	uint64_t t0;
	SSL *ssl = NULL;
	int fd = -1, ret = -1;

	*resp = NULL;
	memset(&r, 0, sizeof(r));
	st->ran = 1;
	body = json_object_to_json_string_ext(req, JSON_C_TO_STRING_PLAIN |
	    JSON_C_TO_STRING_NOSLASHESCAPE);
	body_len = strlen(body);
	if ((wire = ctl_http_request(p, u, path, body, body_len,
	    &wire_len)) == NULL) {
		ctl_step_fail(st, "cannot build the signed request");
		goto out;
	}
	t0 = util_now_us();
	fd = ctl_connect(u, p->o->timeout_ms, err, sizeof(err));
	st->connect_us = util_now_us() - t0;
	if (fd < 0) {
		ctl_step_fail(st, "%s", err);
		goto out;
	}
	t0 = util_now_us();
	ssl = ctl_tls_connect(p->ctx, fd, u, err, sizeof(err));
	st->tls_us = util_now_us() - t0;
	if (ssl == NULL) {
		ctl_step_fail(st, "%s", err);
		goto out;
	}
	t0 = util_now_us();
	if (ctl_tls_write(ssl, wire, wire_len, err, sizeof(err)) != 0 ||
	    ctl_read_response(ssl, &r, err, sizeof(err)) != 0) {
		st->request_us = util_now_us() - t0;
		ctl_step_fail(st, "%s", err);
		goto out;
	}
	st->request_us = util_now_us() - t0;
	st->status = r.status;
	if ((tok = json_tokener_new()) == NULL) {
		ctl_step_fail(st, "out of memory");
		goto out;
	}
	o = json_tokener_parse_ex(tok, (const char *)r.body, (int)r.body_len);
	if (o == NULL || json_tokener_get_error(tok) != json_tokener_success ||
	    json_tokener_get_parse_end(tok) != r.body_len ||
	    !json_object_is_type(o, json_type_object)) {
		ctl_step_fail(st, "HTTP %d with a body that is not a JSON "
		    "object (KMS: malformed response)", r.status);
		goto out;
	}
	if (r.status != 200) {
		if (json_object_object_get_ex(o, "errorName", &v) &&
		    json_object_is_type(v, json_type_string))
			util_sanitize(json_object_get_string(v),
			    (size_t)json_object_get_string_len(v),
			    st->error_name, sizeof(st->error_name));
		msg[0] = '\0';
		if (json_object_object_get_ex(o, "errorMessage", &v) &&
		    json_object_is_type(v, json_type_string))
			util_sanitize(json_object_get_string(v),
			    (size_t)json_object_get_string_len(v), msg,
			    sizeof(msg));
		if (st->error_name[0] == '\0')
			ctl_step_fail(st, "HTTP %d without an errorName",
			    r.status);
		else
			ctl_step_fail(st, "%s", msg[0] != '\0' ? msg :
			    "(no errorMessage)");
	}
	*resp = o;
	o = NULL;
	ret = 0;
 out:
	json_object_put(o);
	if (tok != NULL)
		json_tokener_free(tok);
	if (ssl != NULL) {
		/* A courtesy close_notify; the connection is done either way. */
		(void)SSL_shutdown(ssl);
		SSL_free(ssl);
	}
	ERR_clear_error();
	if (fd >= 0)
		close(fd);
	/* Request and response may hold the probe's plaintext. */
	wipe_free(wire, wire_len);
	wipe_free(r.buf, r.cap + (r.buf != NULL ? 1 : 0));
	return ret;
}

/* --- probe: the steps */

/* A random UUID (version 4) for kmsRequestId. */
static void
ctl_request_id(char out[37])
{
	unsigned char b[16];

	if (RAND_bytes(b, sizeof(b)) != 1)
		memset(b, 0, sizeof(b));
	b[6] = (b[6] & 0x0f) | 0x40;
	b[8] = (b[8] & 0x3f) | 0x80;
	snprintf(out, 37, "%02x%02x%02x%02x-%02x%02x-%02x%02x-%02x%02x-"
	    "%02x%02x%02x%02x%02x%02x", b[0], b[1], b[2], b[3], b[4], b[5],
	    b[6], b[7], b[8], b[9], b[10], b[11], b[12], b[13], b[14], b[15]);
}

/* A request object with requestMetadata as KMS sends it for op; NULL on failure. */
static json_object *
ctl_request_new(const struct ctl_probe *p, const char *op, int with_key)
{
	json_object *req = NULL, *md = NULL, *ret = NULL;
	char id[37], arn[256];
	int e = 0;

	ctl_request_id(id);
	if ((req = json_object_new_object()) == NULL ||
	    (md = json_object_new_object()) == NULL)
		goto out;
	e |= ctl_json_add(md, "kmsRequestId", json_object_new_string(id));
	e |= ctl_json_add(md, "kmsOperation", json_object_new_string(op));
	if (with_key) {
		e |= ctl_json_add(md, "awsPrincipalArn", json_object_new_string(
		    "arn:aws:iam::" CTL_ACCOUNT ":role/xksctl-probe"));
		snprintf(arn, sizeof(arn), "arn:aws:kms:%s:" CTL_ACCOUNT
		    ":key/xksctl-probe", p->o->region);
		e |= ctl_json_add(md, "kmsKeyArn", json_object_new_string(arn));
	}
	e |= ctl_json_add(req, "requestMetadata", md);
	md = NULL;
	if (e != 0)
		goto out;
	ret = req;
	req = NULL;
 out:
	json_object_put(md);
	json_object_put(req);
	return ret;
}

/* Add a Base64 member; -1 on failure. */
static int
ctl_json_add_b64(json_object *o, const char *k, const unsigned char *b,
    size_t n)
{
	char *s = b64_encode(b, n);
	int r;

	if (s == NULL)
		return -1;
	r = ctl_json_add(o, k, json_object_new_string(s));
	wipe_free(s, strlen(s));
	return r;
}

/* A string member or NULL. */
static const char *
ctl_json_str(json_object *o, const char *k)
{
	json_object *v;

	if (!json_object_object_get_ex(o, k, &v) ||
	    !json_object_is_type(v, json_type_string))
		return NULL;
	return json_object_get_string(v);
}

/*
 * Decode the Base64 member k of o, which must have min..max bytes (or be
 * absent when optional).  Returns 0 (*out NULL when absent), or -1 with
 * the step failed.  *out: free with b64_free(*out, *len).
 */
static int
ctl_json_b64(struct ctl_step *st, json_object *o, const char *k,
    size_t min, size_t max, int optional, unsigned char **out, size_t *len)
{
	const char *s = ctl_json_str(o, k), *why = NULL;

	*out = NULL;
	*len = 0;
	if (s == NULL) {
		if (optional)
			return 0;
		ctl_step_fail(st, "no %s in the response", k);
		return -1;
	}
	if ((*out = b64_decode(s, strlen(s), len, &why)) == NULL) {
		ctl_step_fail(st, "%s is not valid Base64: %s", k,
		    why != NULL ? why : "out of memory");
		return -1;
	}
	if (*len < min || *len > max) {
		ctl_step_fail(st, "%s is %zu bytes, expected %zu..%zu", k,
		    *len, min, max);
		b64_free(*out, *len);
		*out = NULL;
		*len = 0;
		return -1;
	}
	return 0;
}

/* Fail an OK step that went over the budget; print it unless --json. */
static void
ctl_step_done(const struct ctl_probe *p, struct ctl_step *st)
{
	if (st->result == CTL_RES_OK && ctl_step_total(st) > CTL_BUDGET_US) {
		st->result = CTL_RES_FAIL;
		snprintf(st->detail, sizeof(st->detail), "over the %llu ms "
		    "budget", CTL_BUDGET_US / 1000);
	}
	if (!p->o->json)
		ctl_print_step(st);
}

/* Record a step that was not run because one it depends on failed. */
static void
ctl_step_skip(struct ctl_probe *p, const char *name, size_t ep,
    const char *why)
{
	struct ctl_step *st;

	if ((st = ctl_step_add(p, name, ep)) == NULL)
		return;
	st->result = CTL_RES_SKIP;
	snprintf(st->detail, sizeof(st->detail), "%s", why);
	ctl_step_done(p, st);
}

/* GetHealthStatus: 200 and at least one key manager not UNAVAILABLE. */
static int
ctl_step_health(struct ctl_probe *p, size_t ep)
{
	struct ctl_step *st;
	json_object *req = NULL, *resp = NULL, *v, *e;
	size_t i, n, counts[3] = { 0, 0, 0 };
	const char *hs;
	char path[512];

	if ((st = ctl_step_add(p, "GetHealthStatus", ep)) == NULL)
		return -1;
	snprintf(path, sizeof(path), "%s/health", p->url[ep].path);
	if ((req = ctl_request_new(p, p->o->kms_operation, 0)) == NULL) {
		ctl_step_fail(st, "out of memory");
		goto out;
	}
	if (ctl_call(p, st, path, req, &resp) != 0 || st->status != 200)
		goto out;
	if (!json_object_object_get_ex(resp, "xksProxyFleetSize", &v) ||
	    !json_object_is_type(v, json_type_int) ||
	    json_object_get_int64(v) < 1) {
		ctl_step_fail(st, "xksProxyFleetSize missing or not > 0");
		goto out;
	}
	if (!json_object_object_get_ex(resp, "ekmFleetDetails", &v) ||
	    !json_object_is_type(v, json_type_array) ||
	    (n = json_object_array_length(v)) < 1 || n > 10) {
		ctl_step_fail(st, "ekmFleetDetails missing or not 1..10 "
		    "entries");
		goto out;
	}
	for (i = 0; i < n; i++) {
		e = json_object_array_get_idx(v, i);
		hs = json_object_is_type(e, json_type_object) ?
		    ctl_json_str(e, "healthStatus") : NULL;
		if (hs != NULL && strcmp(hs, "ACTIVE") == 0)
			counts[0]++;
		else if (hs != NULL && strcmp(hs, "DEGRADED") == 0)
			counts[1]++;
		else if (hs != NULL && strcmp(hs, "UNAVAILABLE") == 0)
			counts[2]++;
		else {
			ctl_step_fail(st, "ekmFleetDetails[%zu]: bad "
			    "healthStatus", i);
			goto out;
		}
	}
	snprintf(st->detail, sizeof(st->detail), "ekm: %zu ACTIVE, %zu "
	    "DEGRADED, %zu UNAVAILABLE", counts[0], counts[1], counts[2]);
	/* KMS: every key manager unavailable is XksProxyUriUnreachableException. */
	if (counts[0] + counts[1] == 0)
		st->result = CTL_RES_FAIL;
	else
		st->result = CTL_RES_OK;
 out:
	json_object_put(req);
	json_object_put(resp);
	ctl_step_done(p, st);
	return st->result == CTL_RES_OK ? 0 : -1;
}

/* The path of an operation on the probe key, below endpoint ep's base. */
static void
ctl_key_path(const struct ctl_probe *p, size_t ep, const char *op,
    char *out, size_t outlen)
{
	snprintf(out, outlen, "%s/keys/%s/%s", p->url[ep].path, p->o->key, op);
}

/* GetKeyMetadata: AES_256, ENCRYPT and DECRYPT, ENABLED (what CreateKey needs). */
static int
ctl_step_metadata(struct ctl_probe *p, size_t ep)
{
	struct ctl_step *st;
	json_object *req = NULL, *resp = NULL, *v, *e;
	const char *spec, *status, *u;
	char path[512], usage[128];
	size_t i, n;
	int enc = 0, dec = 0;

	if ((st = ctl_step_add(p, "GetKeyMetadata", ep)) == NULL)
		return -1;
	ctl_key_path(p, ep, "metadata", path, sizeof(path));
	if ((req = ctl_request_new(p, "DescribeKey", 1)) == NULL) {
		ctl_step_fail(st, "out of memory");
		goto out;
	}
	if (ctl_call(p, st, path, req, &resp) != 0 || st->status != 200)
		goto out;
	spec = ctl_json_str(resp, "keySpec");
	status = ctl_json_str(resp, "keyStatus");
	usage[0] = '\0';
	if (!json_object_object_get_ex(resp, "keyUsage", &v) ||
	    !json_object_is_type(v, json_type_array)) {
		ctl_step_fail(st, "keyUsage missing or not a list");
		goto out;
	}
	n = json_object_array_length(v);
	for (i = 0; i < n; i++) {
		e = json_object_array_get_idx(v, i);
		if (!json_object_is_type(e, json_type_string))
			continue;
		u = json_object_get_string(e);
		enc |= strcmp(u, "ENCRYPT") == 0;
		dec |= strcmp(u, "DECRYPT") == 0;
		if (strlen(usage) + strlen(u) + 2 < sizeof(usage))
			snprintf(usage + strlen(usage), sizeof(usage) -
			    strlen(usage), "%s%s", i > 0 ? "," : "", u);
	}
	snprintf(st->detail, sizeof(st->detail), "%.20s %.20s [%s]",
	    spec != NULL ? spec : "?", status != NULL ? status : "?", usage);
	if (spec == NULL || strcmp(spec, "AES_256") != 0 || status == NULL ||
	    strcmp(status, "ENABLED") != 0 || !enc || !dec) {
		char was[sizeof(st->detail)];

		snprintf(was, sizeof(was), "%s", st->detail);
		st->detail[0] = '\0';
		ctl_step_fail(st, "%s: KMS needs AES_256, ENABLED, ENCRYPT and "
		    "DECRYPT", was);
		goto out;
	}
	st->result = CTL_RES_OK;
 out:
	json_object_put(req);
	json_object_put(resp);
	ctl_step_done(p, st);
	return st->result == CTL_RES_OK ? 0 : -1;
}

static void
ctl_ct_clear(struct ctl_ct *c)
{
	free(c->ct_b64);
	free(c->iv_b64);
	free(c->tag_b64);
	free(c->cmeta_b64);
	wipe(c, sizeof(*c));
}

/*
 * Check an Encrypt response: field sizes, and the CDIV recomputed here
 * over what came back.  Returns 0 or -1 with the step failed.
 */
static int
ctl_check_encrypt(struct ctl_step *st, json_object *resp,
    const struct ctl_ct *c)
{
	unsigned char *ct = NULL, *iv = NULL, *tag = NULL, *cm = NULL;
	unsigned char *cdiv = NULL, want[32];
	size_t ctl = 0, ivl = 0, tagl = 0, cml = 0, cdivl = 0;
	int r = -1;

	if (ctl_json_b64(st, resp, "ciphertext", CTL_PROBE_BYTES,
	    CTL_PROBE_BYTES, 0, &ct, &ctl) != 0 ||
	    ctl_json_b64(st, resp, "initializationVector", 12, 16, 0, &iv,
	    &ivl) != 0 ||
	    ctl_json_b64(st, resp, "authenticationTag", 16, 16, 0, &tag,
	    &tagl) != 0 ||
	    ctl_json_b64(st, resp, "ciphertextMetadata", 0, XKS_CMETA_MAX, 1,
	    &cm, &cml) != 0 ||
	    ctl_json_b64(st, resp, "ciphertextDataIntegrityValue", 32, 32, 0,
	    &cdiv, &cdivl) != 0)
		goto out;
	if (ivl != 12 && ivl != 16) {
		ctl_step_fail(st, "initializationVector is %zu bytes", ivl);
		goto out;
	}
	xks_cdiv(c->aad, sizeof(c->aad), cm, cml, iv, ivl, ct, ctl, tag, tagl,
	    want);
	if (CRYPTO_memcmp(want, cdiv, sizeof(want)) != 0) {
		ctl_step_fail(st, "ciphertextDataIntegrityValue does not match "
		    "SHA-256(AAD || metadata || IV || ciphertext || tag)");
		goto out;
	}
	r = 0;
 out:
	b64_free(ct, ctl);
	b64_free(iv, ivl);
	b64_free(tag, tagl);
	b64_free(cm, cml);
	b64_free(cdiv, cdivl);
	return r;
}

/* Copy the string member k of o into *out (NULL when absent); -1 on allocation failure. */
static int
ctl_dup_member(json_object *o, const char *k, char **out)
{
	const char *s = ctl_json_str(o, k);

	*out = NULL;
	if (s == NULL)
		return 0;
	return (*out = strdup(s)) == NULL ? -1 : 0;
}

/* Encrypt a random plaintext with random AAD, asking for the CDIV. */
static int
ctl_step_encrypt(struct ctl_probe *p, size_t ep, struct ctl_ct *c)
{
	struct ctl_step *st;
	json_object *req = NULL, *resp = NULL;
	char path[512];
	int e = 0;

	memset(c, 0, sizeof(*c));
	c->ep = ep;
	if ((st = ctl_step_add(p, "Encrypt", ep)) == NULL)
		return -1;
	ctl_key_path(p, ep, "encrypt", path, sizeof(path));
	if (RAND_bytes(c->pt, sizeof(c->pt)) != 1 ||
	    RAND_bytes(c->aad, sizeof(c->aad)) != 1) {
		ctl_step_fail(st, "cannot draw random bytes");
		goto out;
	}
	if ((req = ctl_request_new(p, "Encrypt", 1)) == NULL) {
		ctl_step_fail(st, "out of memory");
		goto out;
	}
	e |= ctl_json_add_b64(req, "plaintext", c->pt, sizeof(c->pt));
	e |= ctl_json_add(req, "encryptionAlgorithm",
	    json_object_new_string("AES_GCM"));
	e |= ctl_json_add_b64(req, "additionalAuthenticatedData", c->aad,
	    sizeof(c->aad));
	e |= ctl_json_add(req, "ciphertextDataIntegrityValueAlgorithm",
	    json_object_new_string("SHA_256"));
	if (e != 0) {
		ctl_step_fail(st, "out of memory");
		goto out;
	}
	if (ctl_call(p, st, path, req, &resp) != 0 || st->status != 200)
		goto out;
	if (ctl_check_encrypt(st, resp, c) != 0)
		goto out;
	if (ctl_dup_member(resp, "ciphertext", &c->ct_b64) != 0 ||
	    ctl_dup_member(resp, "initializationVector", &c->iv_b64) != 0 ||
	    ctl_dup_member(resp, "authenticationTag", &c->tag_b64) != 0 ||
	    ctl_dup_member(resp, "ciphertextMetadata", &c->cmeta_b64) != 0) {
		ctl_step_fail(st, "out of memory");
		goto out;
	}
	c->valid = 1;
	snprintf(st->detail, sizeof(st->detail), "CDIV verified");
	st->result = CTL_RES_OK;
 out:
	json_object_put(req);
	json_object_put(resp);
	ctl_step_done(p, st);
	return st->result == CTL_RES_OK ? 0 : -1;
}

/* Decrypt c through endpoint ep and compare with the plaintext sent. */
static int
ctl_step_decrypt(struct ctl_probe *p, size_t ep, const struct ctl_ct *c)
{
	struct ctl_step *st;
	json_object *req = NULL, *resp = NULL;
	unsigned char *pt = NULL;
	size_t ptl = 0;
	char path[512], name[48];
	int e = 0;

	if (c->ep == ep)
		snprintf(name, sizeof(name), "Decrypt");
	else
		snprintf(name, sizeof(name), "Decrypt(from %zu)", c->ep + 1);
	if ((st = ctl_step_add(p, name, ep)) == NULL)
		return -1;
	ctl_key_path(p, ep, "decrypt", path, sizeof(path));
	if ((req = ctl_request_new(p, "Decrypt", 1)) == NULL) {
		ctl_step_fail(st, "out of memory");
		goto out;
	}
	e |= ctl_json_add(req, "ciphertext", json_object_new_string(c->ct_b64));
	e |= ctl_json_add(req, "encryptionAlgorithm",
	    json_object_new_string("AES_GCM"));
	e |= ctl_json_add(req, "initializationVector",
	    json_object_new_string(c->iv_b64));
	e |= ctl_json_add(req, "authenticationTag",
	    json_object_new_string(c->tag_b64));
	e |= ctl_json_add_b64(req, "additionalAuthenticatedData", c->aad,
	    sizeof(c->aad));
	if (c->cmeta_b64 != NULL)
		e |= ctl_json_add(req, "ciphertextMetadata",
		    json_object_new_string(c->cmeta_b64));
	if (e != 0) {
		ctl_step_fail(st, "out of memory");
		goto out;
	}
	if (ctl_call(p, st, path, req, &resp) != 0 || st->status != 200)
		goto out;
	if (ctl_json_b64(st, resp, "plaintext", 0, CTL_MAX_RESPONSE, 0, &pt,
	    &ptl) != 0)
		goto out;
	if (ptl != sizeof(c->pt) || CRYPTO_memcmp(pt, c->pt, ptl) != 0) {
		ctl_step_fail(st, "the plaintext differs from what endpoint "
		    "%zu encrypted", c->ep + 1);
		goto out;
	}
	snprintf(st->detail, sizeof(st->detail), c->ep == ep ?
	    "plaintext matches" : "plaintext matches: same key material");
	st->result = CTL_RES_OK;
 out:
	b64_free(pt, ptl);
	json_object_put(req);
	json_object_put(resp);
	ctl_step_done(p, st);
	return st->result == CTL_RES_OK ? 0 : -1;
}

/* --- probe: setup and main */

/* The client TLS context: TLS 1.2+, verification on, optional client certificate. */
static SSL_CTX *
ctl_tls_ctx(const struct ctl_opts *o, char *err, size_t errlen)
{
	SSL_CTX *ctx = NULL, *ret = NULL;
	char buf[256];

	if ((ctx = SSL_CTX_new(TLS_client_method())) == NULL ||
	    SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION) != 1) {
		snprintf(err, errlen, "TLS: cannot create a context");
		goto out;
	}
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER, NULL);
	/* Every probe pays a full handshake, as a fresh KMS connection does. */
	SSL_CTX_set_session_cache_mode(ctx, SSL_SESS_CACHE_OFF);
	SSL_CTX_set_options(ctx, SSL_OP_NO_TICKET | SSL_OP_IGNORE_UNEXPECTED_EOF);
	if (o->cacert != NULL) {
		if (SSL_CTX_load_verify_locations(ctx, o->cacert, NULL) != 1) {
			ERR_error_string_n(ERR_peek_last_error(), buf,
			    sizeof(buf));
			snprintf(err, errlen, "%s: cannot load CA certificates: "
			    "%s", o->cacert, buf);
			goto out;
		}
	} else if (SSL_CTX_set_default_verify_paths(ctx) != 1) {
		snprintf(err, errlen, "TLS: cannot load the system trust store");
		goto out;
	}
	if (o->cert != NULL) {
		if (SSL_CTX_use_certificate_chain_file(ctx, o->cert) != 1) {
			ERR_error_string_n(ERR_peek_last_error(), buf,
			    sizeof(buf));
			snprintf(err, errlen, "%s: cannot load the client "
			    "certificate: %s", o->cert, buf);
			goto out;
		}
		if (SSL_CTX_use_PrivateKey_file(ctx, o->key_file,
		    SSL_FILETYPE_PEM) != 1 ||
		    SSL_CTX_check_private_key(ctx) != 1) {
			ERR_error_string_n(ERR_peek_last_error(), buf,
			    sizeof(buf));
			snprintf(err, errlen, "%s: cannot use the client key: "
			    "%s", o->key_file, buf);
			goto out;
		}
	}
	ret = ctx;
	ctx = NULL;
 out:
	SSL_CTX_free(ctx);
	ERR_clear_error();
	return ret;
}

/* Parse the probe options into o; CTL_EXIT_OK or the exit status to return. */
static int
ctl_probe_opts(int argc, char **argv, struct ctl_opts *o)
{
	static const struct option opts[] = {
		{ "access-key-id", required_argument, NULL, 'a' },
		{ "secret-file", required_argument, NULL, 's' },
		{ "key", required_argument, NULL, 'k' },
		{ "cacert", required_argument, NULL, 'C' },
		{ "cert", required_argument, NULL, 'c' },
		{ "key-file", required_argument, NULL, 'K' },
		{ "region", required_argument, NULL, 'r' },
		{ "kms-operation", required_argument, NULL, 'O' },
		{ "timeout", required_argument, NULL, 't' },
		{ "json", no_argument, NULL, 'j' },
		{ "same-keys-as", required_argument, NULL, 'S' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 }
	};
	char *end;
	long v;
	int ch;

	memset(o, 0, sizeof(*o));
	o->region = "us-east-1";
	o->kms_operation = "UpdateCustomKeyStore";
	o->timeout_ms = CTL_DEFAULT_TIMEOUT_MS;
	o->nurls = 1;
	opterr = 0;
	optind = 1;
	while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
		switch (ch) {
		case 'a': o->akid = optarg; break;
		case 's': o->secret_file = optarg; break;
		case 'k': o->key = optarg; break;
		case 'C': o->cacert = optarg; break;
		case 'c': o->cert = optarg; break;
		case 'K': o->key_file = optarg; break;
		case 'r': o->region = optarg; break;
		case 'O': o->kms_operation = optarg; break;
		case 'j': o->json = 1; break;
		case 't':
			errno = 0;
			v = strtol(optarg, &end, 10);
			if (errno != 0 || *end != '\0' || v < 1 || v > 60000) {
				fprintf(stderr, "xksctl probe: --timeout: 1 to "
				    "60000 milliseconds\n");
				return CTL_EXIT_USAGE;
			}
			o->timeout_ms = (int)v;
			break;
		case 'S':
			if (o->nurls == CTL_MAX_ENDPOINTS) {
				fprintf(stderr, "xksctl probe: at most %d "
				    "--same-keys-as\n", CTL_MAX_ENDPOINTS - 1);
				return CTL_EXIT_USAGE;
			}
			o->urls[o->nurls++] = optarg;
			break;
		case 'h':
			ctl_usage(stdout);
			return -1;
		default:
			fprintf(stderr, "xksctl probe: unknown option or "
			    "missing argument: %s\n", argv[optind - 1]);
			ctl_usage(stderr);
			return CTL_EXIT_USAGE;
		}
	}
	if (argc - optind != 1) {
		fprintf(stderr, "xksctl probe: %s\n", argc == optind ?
		    "the URL is missing" : "only one URL (more endpoints: "
		    "--same-keys-as)");
		ctl_usage(stderr);
		return CTL_EXIT_USAGE;
	}
	o->urls[0] = argv[optind];
	if (o->akid == NULL || o->secret_file == NULL) {
		fprintf(stderr, "xksctl probe: --access-key-id and --secret-file "
		    "are required\n");
		return CTL_EXIT_USAGE;
	}
	if (!ctl_charset_valid(o->akid, 128, "")) {
		fprintf(stderr, "xksctl probe: --access-key-id: 1 to 128 "
		    "letters and digits\n");
		return CTL_EXIT_USAGE;
	}
	if (o->key != NULL && !ctl_charset_valid(o->key, CTL_KEYID_MAX, "-._")) {
		fprintf(stderr, "xksctl probe: --key: an external key id is 1 to "
		    "%d of A-Z a-z 0-9 - . _\n", CTL_KEYID_MAX);
		return CTL_EXIT_USAGE;
	}
	if (!ctl_charset_valid(o->region, 63, "-")) {
		fprintf(stderr, "xksctl probe: --region: e.g. us-east-1\n");
		return CTL_EXIT_USAGE;
	}
	if (!ctl_charset_valid(o->kms_operation, 64, "")) {
		fprintf(stderr, "xksctl probe: --kms-operation: e.g. "
		    "UpdateCustomKeyStore\n");
		return CTL_EXIT_USAGE;
	}
	if ((o->cert == NULL) != (o->key_file == NULL)) {
		fprintf(stderr, "xksctl probe: --cert and --key-file go "
		    "together\n");
		return CTL_EXIT_USAGE;
	}
	if (o->nurls > 1 && o->key == NULL) {
		fprintf(stderr, "xksctl probe: --same-keys-as needs --key\n");
		return CTL_EXIT_USAGE;
	}
	return CTL_EXIT_OK;
}

/* Read the secret (trailing newline stripped) into p; -1 with a message printed. */
static int
ctl_probe_secret(struct ctl_probe *p)
{
	char err[1024];

	if (util_read_file(p->o->secret_file, CTL_MAX_SECRET_FILE, 1,
	    &p->secret, &p->secret_len, err, sizeof(err)) != 0) {
		fprintf(stderr, "xksctl: %s\n", err);
		return -1;
	}
	p->secret_alloc = p->secret_len + 1;
	p->secret_len = util_rstrip(p->secret, p->secret_len);
	if (p->secret_len == 0) {
		fprintf(stderr, "xksctl: %s: empty secret\n",
		    p->o->secret_file);
		return -1;
	}
	return 0;
}

/* Run every step; returns 1 when all succeeded within budget. */
static int
ctl_probe_run(struct ctl_probe *p)
{
	struct ctl_ct mine, theirs;
	size_t i, k;
	int ok;

	memset(&mine, 0, sizeof(mine));
	memset(&theirs, 0, sizeof(theirs));
	(void)ctl_step_health(p, 0);
	if (p->o->key != NULL) {
		(void)ctl_step_metadata(p, 0);
		if (ctl_step_encrypt(p, 0, &mine) == 0)
			(void)ctl_step_decrypt(p, 0, &mine);
		else
			ctl_step_skip(p, "Decrypt", 0, "Encrypt failed");
	}
	/* Each other endpoint: decrypt ours, encrypt there, decrypt that here. */
	for (i = 1; i < p->nurl; i++) {
		(void)ctl_step_health(p, i);
		(void)ctl_step_metadata(p, i);
		if (mine.valid)
			(void)ctl_step_decrypt(p, i, &mine);
		else
			ctl_step_skip(p, "Decrypt(from 1)", i, "Encrypt on "
			    "endpoint 1 failed");
		if (ctl_step_encrypt(p, i, &theirs) == 0)
			(void)ctl_step_decrypt(p, 0, &theirs);
		else {
			char name[48];

			snprintf(name, sizeof(name), "Decrypt(from %zu)", i + 1);
			ctl_step_skip(p, name, 0, "Encrypt failed");
		}
		ctl_ct_clear(&theirs);
	}
	ctl_ct_clear(&mine);
	ok = p->nsteps > 0;
	for (k = 0; k < p->nsteps; k++)
		ok &= p->steps[k].result == CTL_RES_OK;
	return ok;
}

static int
ctl_probe_main(int argc, char **argv)
{
	struct ctl_opts o;
	struct ctl_probe p;
	json_object *report = NULL;
	char err[1024];
	size_t i, nfail = 0;
	int r, ok;

	memset(&p, 0, sizeof(p));
	if ((r = ctl_probe_opts(argc, argv, &o)) != CTL_EXIT_OK)
		return r < 0 ? CTL_EXIT_OK : r;
	p.o = &o;
	r = CTL_EXIT_USAGE;
	for (i = 0; i < o.nurls; i++) {
		if (ctl_url_parse(o.urls[i], &p.url[i], err, sizeof(err)) != 0) {
			fprintf(stderr, "xksctl probe: %s\n", err);
			goto out;
		}
		p.nurl++;
	}
	r = CTL_EXIT_FAIL;
	if (ctl_probe_secret(&p) != 0)
		goto out;
	if ((p.ctx = ctl_tls_ctx(&o, err, sizeof(err))) == NULL) {
		fprintf(stderr, "xksctl: %s\n", err);
		goto out;
	}
	/* A server that closes early must fail the step, not kill us. */
	signal(SIGPIPE, SIG_IGN);
	if (!o.json)
		ctl_print_header(&p);
	ok = ctl_probe_run(&p);
	if (o.json) {
		if ((report = ctl_report_json(&p, ok)) == NULL) {
			fprintf(stderr, "xksctl: out of memory\n");
			goto out;
		}
		printf("%s\n", json_object_to_json_string_ext(report,
		    JSON_C_TO_STRING_PLAIN | JSON_C_TO_STRING_NOSLASHESCAPE));
	} else {
		for (i = 0; i < p.nsteps; i++)
			nfail += p.steps[i].result != CTL_RES_OK;
		if (ok)
			printf("result: OK (%zu steps within the %llu ms "
			    "budget)\n", p.nsteps, CTL_BUDGET_US / 1000);
		else
			printf("result: FAIL (%zu of %zu steps failed)\n",
			    nfail, p.nsteps);
	}
	if (fflush(stdout) != 0)
		goto out;
	r = ok ? CTL_EXIT_OK : CTL_EXIT_FAIL;
 out:
	json_object_put(report);
	SSL_CTX_free(p.ctx);
	wipe_free(p.secret, p.secret_alloc);
	free(p.steps);
	for (i = 0; i < p.nurl; i++)
		ctl_url_clear(&p.url[i]);
	return r;
}

int
main(int argc, char **argv)
{
	const char *cmd;

	if (argc < 2) {
		ctl_usage(stderr);
		return CTL_EXIT_USAGE;
	}
	cmd = argv[1];
	if (strcmp(cmd, "--version") == 0 || strcmp(cmd, "-V") == 0 ||
	    strcmp(cmd, "version") == 0) {
		printf("xksctl %s\n", PACKAGE_VERSION);
		return CTL_EXIT_OK;
	}
	if (strcmp(cmd, "help") == 0 || strcmp(cmd, "--help") == 0 ||
	    strcmp(cmd, "-h") == 0) {
		ctl_usage(stdout);
		return CTL_EXIT_OK;
	}
	if (strcmp(cmd, "credential") == 0) {
		if (argc < 3 || strcmp(argv[2], "new") != 0) {
			fprintf(stderr, "xksctl credential: the only action is "
			    "\"new\"\n");
			ctl_usage(stderr);
			return CTL_EXIT_USAGE;
		}
		return ctl_credential_new(argc - 2, argv + 2);
	}
	if (strcmp(cmd, "probe") == 0)
		return ctl_probe_main(argc - 1, argv + 1);
	fprintf(stderr, "xksctl: unknown command %s\n", cmd);
	ctl_usage(stderr);
	return CTL_EXIT_USAGE;
}
