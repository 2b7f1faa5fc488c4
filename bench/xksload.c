/*
 * xksload.c -- a load generator for xksproxyd: real SigV4-signed XKS
 * requests over TLS, exact status checking, latency percentiles.
 *
 *   xksload -p PORT -k AKID -s SECRET_FILE -o OP [options]
 *
 * OP: encrypt, decrypt, metadata, health, or unauth (a health request with
 * no Authorization: the daemon answers 401 from its event loop, without
 * HSM work; used to probe event-loop responsiveness).
 *
 * Modes (-m):
 *   closed     C keep-alive connections, each sends its next request as
 *              soon as the response arrives: the maximum throughput.
 *   open       a fixed rate (-r): requests are scheduled every 1/rate s and
 *              sent on a free keep-alive connection; latency is measured
 *              from the scheduled time, so a stall is not hidden
 *              (no coordinated omission).
 *   handshake  a new TCP+TLS connection per request ("Connection: close"),
 *              C at a time: full handshakes/s.  -R resumes the previous
 *              session (TLS 1.3 ticket) instead, and counts resumptions.
 *   idle       opens N (-n) connections, sends one request on each (so
 *              each is an idle keep-alive connection, not a half-open one
 *              that limits.header_timeout_ms would close), prints
 *              "IDLE_READY", holds them for -d seconds, then reports how
 *              many are still open.
 *
 * Signing: each thread keeps a pool of 16 requests (distinct kmsRequestId)
 * signed with sigv4_sign() and re-signs the pool every 60 s, well inside
 * the daemon's clock-skew window (300 s by default).  The daemon still
 * verifies every request in full (its cache holds derived keys only), so
 * pre-signing saves the generator's CPU, not the daemon's.
 *
 * Each thread (-t) runs its own libevent loop over non-blocking OpenSSL
 * connections.  Output: one line "RESULT key=value ..." on stdout; the
 * generator's own CPU use is in client_cpu (1.0 = one core).
 */
#include "config.h"

#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/event.h>
#include <json-c/json.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>

#include "http.h"
#include "sigv4.h"

#define XL_INBUF     32768
#define XL_POOL      16
#define XL_RESIGN_NS (60ull * 1000000000ull)
#define XL_MAXSTATUS 600
#define XL_IDLE_BATCH 64

enum xl_mode { XL_CLOSED = 0, XL_OPEN, XL_HANDSHAKE, XL_IDLE };
enum xl_op { OP_ENCRYPT = 0, OP_DECRYPT, OP_METADATA, OP_HEALTH, OP_UNAUTH };

static const char *const xl_mode_names[] = { "closed", "open", "handshake",
    "idle" };
static const char *const xl_op_names[] = { "encrypt", "decrypt", "metadata",
    "health", "unauth" };

/* Options, read-only once the threads run. */
static struct xl_opts {
	const char *host;
	int port;
	const char *akid;
	unsigned char *secret;
	size_t secret_len;
	const char *region;
	const char *base;             /* /example/kms/xks/v1 */
	const char *key;
	const char *cafile;
	enum xl_mode mode;
	enum xl_op op;
	int conns;
	int threads;
	double seconds;
	double warmup;
	double rate;
	int idle_n;
	size_t pt_len;
	size_t aad_len;
	int cdiv;
	int resume;
	int expect;
	/* decrypt: from one encrypt made at start-up */
	char *dec_ct, *dec_iv, *dec_tag, *dec_cmeta;
	char *pt_b64, *aad_b64;
} o = {
	.host = "127.0.0.1",
	.region = "us-east-1",
	.base = "/example/kms/xks/v1",
	.key = "demo-key",
	.conns = 16,
	.threads = 1,
	.seconds = 5,
	.warmup = 1,
	.idle_n = 1000,
	.pt_len = 256,
	.aad_len = 64,
	.expect = 0,
};

static SSL_CTX *xl_ctx;

struct xl_req {
	char *buf;
	size_t len;
};

enum xl_cstate { CS_OFF = 0, CS_CONNECT, CS_HANDSHAKE, CS_READY, CS_WRITE,
    CS_READ };

struct xl_thread;

struct xl_conn {
	struct xl_thread *th;
	int fd;
	SSL *ssl;
	struct event *rev, *wev;
	int armed_r, armed_w;
	enum xl_cstate st;
	const struct xl_req *req;
	size_t woff;
	char in[XL_INBUF];
	size_t inlen;
	uint64_t t_start;             /* scheduled (open) or send time */
	uint64_t t_conn;              /* connect() time */
	int served;
};

struct xl_thread {
	int id;
	pthread_t tid;
	struct event_base *base;
	struct xl_conn *conns;
	int nconns;
	int started;                  /* idle mode: connections started */
	struct xl_req pool[XL_POOL];
	int pool_next;
	unsigned gen;
	uint64_t signed_at;
	int close_hdr;                /* "Connection: close" in requests */
	/* open loop */
	struct event *tick;
	uint64_t interval_ns, next_sched;
	uint64_t *pend;
	size_t pcap, phead, pcount;
	unsigned long long dropped;
	int rr;
	/* run */
	uint64_t t_measure, t_end;
	struct event *stop_ev;
	long max_requests;            /* 0: unlimited */
	long completed;
	char *capture;                /* last response body, when wanted */
	/* results */
	uint64_t *lat;
	size_t nlat, caplat;
	unsigned long long ok, err_status, err_conn, reconnects, handshakes,
	    resumed, full;
	unsigned long status[XL_MAXSTATUS];
	SSL_SESSION *sess;
	int idle_ok, idle_closed;
};

static void xl_drive(struct xl_conn *c);
static void xl_conn_start(struct xl_conn *c);
static void xl_idle_progress(struct xl_thread *t);

static uint64_t
xl_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static void
xl_die(const char *msg)
{
	fprintf(stderr, "xksload: %s\n", msg);
	exit(2);
}

static char *
xl_b64(const unsigned char *p, size_t n)
{
	char *s = malloc(4 * ((n + 2) / 3) + 1);

	if (s == NULL)
		xl_die("out of memory");
	EVP_EncodeBlock((unsigned char *)s, p, (int)n);
	return s;
}

/* ---------------------------------------------------------------- requests */

static char *
xl_body(int th, int idx, unsigned gen)
{
	char rid[96], *b = NULL;
	int n = -1;

	snprintf(rid, sizeof(rid), "bench-%d-%d-%u-%08x", th, idx, gen,
	    (unsigned)rand());
	switch (o.op) {
	case OP_ENCRYPT:
		n = asprintf(&b, "{\"requestMetadata\":{\"awsPrincipalArn\":"
		    "\"arn:aws:iam::123456789012:user/bench\",\"kmsKeyArn\":"
		    "\"arn:aws:kms:us-east-1:123456789012:key/bench\","
		    "\"kmsOperation\":\"GenerateDataKey\",\"kmsRequestId\":\"%s\","
		    "\"kmsViaService\":\"ebs\"},\"plaintext\":\"%s\","
		    "\"encryptionAlgorithm\":\"AES_GCM\","
		    "\"additionalAuthenticatedData\":\"%s\"%s}", rid, o.pt_b64,
		    o.aad_b64, o.cdiv ?
		    ",\"ciphertextDataIntegrityValueAlgorithm\":\"SHA_256\"" : "");
		break;
	case OP_DECRYPT:
		n = asprintf(&b, "{\"requestMetadata\":{\"awsPrincipalArn\":"
		    "\"arn:aws:iam::123456789012:user/bench\",\"kmsKeyArn\":"
		    "\"arn:aws:kms:us-east-1:123456789012:key/bench\","
		    "\"kmsOperation\":\"Decrypt\",\"kmsRequestId\":\"%s\"},"
		    "\"ciphertext\":\"%s\",\"encryptionAlgorithm\":\"AES_GCM\","
		    "\"initializationVector\":\"%s\",\"authenticationTag\":\"%s\","
		    "\"additionalAuthenticatedData\":\"%s\"%s%s%s}", rid,
		    o.dec_ct, o.dec_iv, o.dec_tag, o.aad_b64,
		    o.dec_cmeta != NULL ? ",\"ciphertextMetadata\":\"" : "",
		    o.dec_cmeta != NULL ? o.dec_cmeta : "",
		    o.dec_cmeta != NULL ? "\"" : "");
		break;
	case OP_METADATA:
		n = asprintf(&b, "{\"requestMetadata\":{\"awsPrincipalArn\":"
		    "\"arn:aws:iam::123456789012:user/bench\",\"kmsOperation\":"
		    "\"DescribeKey\",\"kmsRequestId\":\"%s\"}}", rid);
		break;
	case OP_HEALTH:
	case OP_UNAUTH:
		n = asprintf(&b, "{\"requestMetadata\":{\"kmsRequestId\":\"%s\","
		    "\"kmsOperation\":\"KmsHealthCheck\"}}", rid);
		break;
	}
	if (n < 0)
		xl_die("out of memory");
	return b;
}

static void
xl_path(char *out, size_t len)
{
	static const char *const what[] = { "encrypt", "decrypt", "metadata" };

	if (o.op == OP_HEALTH || o.op == OP_UNAUTH)
		snprintf(out, len, "%s/health", o.base);
	else
		snprintf(out, len, "%s/keys/%s/%s", o.base, o.key, what[o.op]);
}

/* Build (and sign) one complete HTTP/1.1 request. */
static void
xl_build(struct xl_req *r, int th, int idx, unsigned gen, int close_hdr)
{
	char path[512], host[300], date[32], clen[32], *body, *authz = NULL;
	struct http_header h[3];
	struct sigv4_input in;
	time_t now = time(NULL);
	struct tm tm;
	int n;

	body = xl_body(th, idx, gen);
	xl_path(path, sizeof(path));
	snprintf(host, sizeof(host), "localhost:%d", o.port);
	gmtime_r(&now, &tm);
	strftime(date, sizeof(date), "%Y%m%dT%H%M%SZ", &tm);
	snprintf(clen, sizeof(clen), "%zu", strlen(body));
	if (o.op != OP_UNAUTH) {
		h[0].name = "Host";
		h[0].value = host;
		h[1].name = "Content-Type";
		h[1].value = "application/json";
		h[2].name = "X-Amz-Date";
		h[2].value = date;
		memset(&in, 0, sizeof(in));
		in.method = "POST";
		in.path = path;
		in.query = "";
		in.headers = h;
		in.nheaders = 3;
		in.body = (const unsigned char *)body;
		in.body_len = strlen(body);
		authz = sigv4_sign(&in, "content-type;host;x-amz-date", o.akid,
		    o.secret, o.secret_len, o.region, SIGV4_SERVICE);
		if (authz == NULL)
			xl_die("sigv4_sign failed");
	}
	free(r->buf);
	n = asprintf(&r->buf, "POST %s HTTP/1.1\r\n"
	    "Host: %s\r\n"
	    "Content-Type: application/json\r\n"
	    "Content-Length: %s\r\n"
	    "X-Amz-Date: %s\r\n"
	    "%s%s%s"
	    "%s"
	    "\r\n%s", path, host, clen, date,
	    authz != NULL ? "Authorization: " : "", authz != NULL ? authz : "",
	    authz != NULL ? "\r\n" : "",
	    close_hdr ? "Connection: close\r\n" : "", body);
	if (n < 0)
		xl_die("out of memory");
	r->len = (size_t)n;
	free(authz);
	free(body);
}

static void
xl_pool_sign(struct xl_thread *t, uint64_t now)
{
	int i;

	t->gen++;
	for (i = 0; i < XL_POOL; i++)
		xl_build(&t->pool[i], t->id, i, t->gen, t->close_hdr);
	t->signed_at = now;
}

static const struct xl_req *
xl_pool_next(struct xl_thread *t, uint64_t now)
{
	if (now - t->signed_at > XL_RESIGN_NS)
		xl_pool_sign(t, now);
	t->pool_next = (t->pool_next + 1) % XL_POOL;
	return &t->pool[t->pool_next];
}

/* ---------------------------------------------------------------- stats */

static void
xl_record(struct xl_thread *t, uint64_t start, uint64_t now, int status)
{
	if (start < t->t_measure || now > t->t_end)
		return;
	if (status == o.expect)
		t->ok++;
	else
		t->err_status++;
	if (status >= 0 && status < XL_MAXSTATUS)
		t->status[status]++;
	if (t->nlat == t->caplat) {
		t->caplat = t->caplat ? 2 * t->caplat : 65536;
		if ((t->lat = realloc(t->lat, t->caplat * sizeof(*t->lat))) == NULL)
			xl_die("out of memory");
	}
	t->lat[t->nlat++] = now - start;
}

static int
xl_cmp_u64(const void *a, const void *b)
{
	uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;

	return x < y ? -1 : x > y;
}

static double
xl_pct(const uint64_t *v, size_t n, double q)
{
	size_t i;

	if (n == 0)
		return 0;
	i = (size_t)(q * (double)n + 0.999999);
	if (i == 0)
		i = 1;
	if (i > n)
		i = n;
	return (double)v[i - 1] / 1e6;
}

/* ---------------------------------------------------------------- connections */

static void
xl_arm(struct xl_conn *c, int r, int w)
{
	if (r != c->armed_r) {
		if (r)
			event_add(c->rev, NULL);
		else
			event_del(c->rev);
		c->armed_r = r;
	}
	if (w != c->armed_w) {
		if (w)
			event_add(c->wev, NULL);
		else
			event_del(c->wev);
		c->armed_w = w;
	}
}

static void
xl_conn_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	xl_drive(arg);
}

static void
xl_conn_close(struct xl_conn *c)
{
	xl_arm(c, 0, 0);
	if (c->rev != NULL)
		event_free(c->rev);
	if (c->wev != NULL)
		event_free(c->wev);
	c->rev = c->wev = NULL;
	if (c->ssl != NULL)
		SSL_free(c->ssl);
	c->ssl = NULL;
	if (c->fd >= 0)
		close(c->fd);
	c->fd = -1;
	c->st = CS_OFF;
}

static void
xl_restart_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	xl_conn_start(arg);
}

/* A connection failed.  Counted as an error when a request was at stake. */
static void
xl_conn_fail(struct xl_conn *c, int during_request)
{
	struct xl_thread *t = c->th;
	struct timeval tv = { 0, 10000 };
	uint64_t now = xl_now();

	ERR_clear_error();
	if (during_request || c->st == CS_CONNECT || c->st == CS_HANDSHAKE) {
		if (now >= t->t_measure && now <= t->t_end)
			t->err_conn++;
	} else
		t->reconnects++;
	if (o.mode == XL_IDLE) {
		if (c->served > 0)
			t->idle_closed++;
		xl_conn_close(c);
		xl_idle_progress(t);
		return;
	}
	xl_conn_close(c);
	/* later, not now: a refused connect must not recurse or spin */
	if (now < t->t_end)
		event_base_once(t->base, -1, EV_TIMEOUT, xl_restart_cb, c, &tv);
}

static void
xl_conn_start(struct xl_conn *c)
{
	struct xl_thread *t = c->th;
	struct sockaddr_in sa;
	int one = 1;

	c->served = 0;
	c->inlen = 0;
	c->armed_r = c->armed_w = 0;
	c->t_conn = xl_now();
	c->st = CS_CONNECT;
	if ((c->fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    0)) < 0) {
		xl_conn_fail(c, 0);
		return;
	}
	setsockopt(c->fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if ((c->rev = event_new(t->base, c->fd, EV_READ | EV_PERSIST,
	    xl_conn_cb, c)) == NULL ||
	    (c->wev = event_new(t->base, c->fd, EV_WRITE | EV_PERSIST,
	    xl_conn_cb, c)) == NULL)
		xl_die("out of memory");
	memset(&sa, 0, sizeof(sa));
	sa.sin_family = AF_INET;
	sa.sin_port = htons((uint16_t)o.port);
	if (inet_pton(AF_INET, o.host, &sa.sin_addr) != 1)
		xl_die("-h: an IPv4 address is needed");
	if (connect(c->fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 &&
	    errno != EINPROGRESS) {
		xl_conn_fail(c, 0);
		return;
	}
	xl_arm(c, 0, 1);
}

/* Is there a request for this ready connection?  Sets c->req, c->t_start. */
static int
xl_next_request(struct xl_conn *c, uint64_t now)
{
	struct xl_thread *t = c->th;

	if (now >= t->t_end)
		return 0;
	if (t->max_requests > 0 && t->completed + 1 > t->max_requests)
		return 0;
	switch (o.mode) {
	case XL_OPEN:
		if (t->pcount == 0)
			return 0;
		c->t_start = t->pend[t->phead];
		t->phead = (t->phead + 1) % t->pcap;
		t->pcount--;
		break;
	case XL_IDLE:
		if (c->served > 0)
			return 0;
		c->t_start = now;
		break;
	case XL_HANDSHAKE:
		if (c->served > 0)
			return 0;
		c->t_start = c->t_conn;
		break;
	default:
		c->t_start = now;
		break;
	}
	c->req = xl_pool_next(t, now);
	c->woff = 0;
	return 1;
}

/*
 * Parse a complete response in c->in.  Returns 0 while incomplete, 1 with
 * *status and *close set, -1 when malformed.
 */
static int
xl_parse(struct xl_conn *c, int *status, int *close_conn)
{
	char *end, *p, *line;
	long long clen = -1;
	size_t hl;

	end = memmem(c->in, c->inlen, "\r\n\r\n", 4);
	if (end == NULL)
		return c->inlen >= sizeof(c->in) ? -1 : 0;
	hl = (size_t)(end - c->in) + 4;
	if (c->inlen < 12 || memcmp(c->in, "HTTP/1.1 ", 9) != 0)
		return -1;
	*status = atoi(c->in + 9);
	*close_conn = 0;
	*end = '\0';
	for (line = strstr(c->in, "\r\n"); line != NULL;
	    line = strstr(line + 2, "\r\n")) {
		p = line + 2;
		if (strncasecmp(p, "Content-Length:", 15) == 0)
			clen = strtoll(p + 15, NULL, 10);
		else if (strncasecmp(p, "Connection:", 11) == 0 &&
		    strstr(p, "close") != NULL)
			*close_conn = 1;
	}
	*end = '\r';
	if (clen < 0)
		return -1;
	if (c->inlen < hl + (size_t)clen)
		return 0;
	if (c->inlen > hl + (size_t)clen)
		return -1;          /* no pipelining: nothing may follow */
	if (c->th->capture != NULL || c->th->max_requests > 0) {
		free(c->th->capture);
		if ((c->th->capture = strndup(c->in + hl, (size_t)clen)) == NULL)
			xl_die("out of memory");
	}
	return 1;
}

static void
xl_idle_progress(struct xl_thread *t)
{
	int i, ok = 0, failed = 0;

	for (i = 0; i < t->started; i++) {
		if (t->conns[i].served > 0)
			ok++;
		else if (t->conns[i].st == CS_OFF)
			failed++;
	}
	/* keep at most XL_IDLE_BATCH connections in their handshake */
	while (t->started < t->nconns && t->started - ok - failed < XL_IDLE_BATCH)
		xl_conn_start(&t->conns[t->started++]);
	if (ok + failed == t->nconns && !t->idle_ok) {
		t->idle_ok = 1;
		printf("IDLE_READY opened=%d failed=%d\n", ok, failed);
		fflush(stdout);
	}
}

/* One response complete on c. */
static void
xl_done(struct xl_conn *c, int status, int close_conn)
{
	struct xl_thread *t = c->th;
	uint64_t now = xl_now();

	xl_record(t, c->t_start, now, status);
	c->served++;
	t->completed++;
	c->inlen = 0;
	if (t->max_requests > 0 && t->completed >= t->max_requests)
		event_base_loopbreak(t->base);
	if (o.mode == XL_HANDSHAKE) {
		if (c->t_start >= t->t_measure && now <= t->t_end)
			t->full += !SSL_session_reused(c->ssl);
		if (o.resume) {
			SSL_SESSION_free(t->sess);
			t->sess = SSL_get1_session(c->ssl);
		}
		SSL_shutdown(c->ssl);   /* our close_notify; no wait */
		xl_conn_close(c);
		if (now < t->t_end)
			xl_conn_start(c);
		return;
	}
	if (close_conn) {
		xl_conn_close(c);
		if (now < t->t_end && o.mode != XL_IDLE)
			xl_conn_start(c);
		return;
	}
	c->st = CS_READY;
	if (o.mode == XL_IDLE)
		xl_idle_progress(t);
}

static void
xl_drive(struct xl_conn *c)
{
	struct xl_thread *t = c->th;
	int r, e, status = 0, close_conn = 0, err;
	socklen_t el = sizeof(err);
	char sink[256];

	for (;;) {
		switch (c->st) {
		case CS_OFF:
			return;
		case CS_CONNECT:
			if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &err, &el) != 0 ||
			    err != 0) {
				xl_conn_fail(c, 0);
				return;
			}
			if ((c->ssl = SSL_new(xl_ctx)) == NULL)
				xl_die("SSL_new failed");
			SSL_set_fd(c->ssl, c->fd);
			SSL_set_tlsext_host_name(c->ssl, "localhost");
			if (o.cafile != NULL)
				SSL_set1_host(c->ssl, "localhost");
			if (o.resume && t->sess != NULL)
				SSL_set_session(c->ssl, t->sess);
			c->st = CS_HANDSHAKE;
			continue;
		case CS_HANDSHAKE:
			r = SSL_connect(c->ssl);
			if (r == 1) {
				uint64_t now = xl_now();
				if (now >= t->t_measure && now <= t->t_end) {
					t->handshakes++;
					t->resumed += SSL_session_reused(c->ssl);
				}
				c->st = CS_READY;
				continue;
			}
			e = SSL_get_error(c->ssl, r);
			if (e == SSL_ERROR_WANT_READ) {
				xl_arm(c, 1, 0);
				return;
			}
			if (e == SSL_ERROR_WANT_WRITE) {
				xl_arm(c, 0, 1);
				return;
			}
			xl_conn_fail(c, 0);
			return;
		case CS_READY:
			if (xl_next_request(c, xl_now())) {
				c->st = CS_WRITE;
				continue;
			}
			/* wait; notice a close by the server (idle timeout) */
			r = SSL_read(c->ssl, sink, sizeof(sink));
			if (r > 0) {
				xl_conn_fail(c, 0);  /* unsolicited bytes */
				return;
			}
			e = SSL_get_error(c->ssl, r);
			if (e == SSL_ERROR_WANT_READ) {
				xl_arm(c, 1, 0);
				return;
			}
			if (e == SSL_ERROR_WANT_WRITE) {
				xl_arm(c, 0, 1);
				return;
			}
			xl_conn_fail(c, 0);
			return;
		case CS_WRITE:
			r = SSL_write(c->ssl, c->req->buf + c->woff,
			    (int)(c->req->len - c->woff));
			if (r > 0) {
				c->woff += (size_t)r;
				if (c->woff == c->req->len) {
					c->st = CS_READ;
					c->inlen = 0;
				}
				continue;
			}
			e = SSL_get_error(c->ssl, r);
			if (e == SSL_ERROR_WANT_READ) {
				xl_arm(c, 1, 0);
				return;
			}
			if (e == SSL_ERROR_WANT_WRITE) {
				xl_arm(c, 0, 1);
				return;
			}
			xl_conn_fail(c, 1);
			return;
		case CS_READ:
			r = SSL_read(c->ssl, c->in + c->inlen,
			    (int)(sizeof(c->in) - c->inlen));
			if (r > 0) {
				c->inlen += (size_t)r;
				switch (xl_parse(c, &status, &close_conn)) {
				case 0:
					continue;
				case 1:
					xl_done(c, status, close_conn);
					if (c->st != CS_READY)
						return;   /* closed or restarted */
					continue;
				default:
					xl_conn_fail(c, 1);
					return;
				}
			}
			e = SSL_get_error(c->ssl, r);
			if (e == SSL_ERROR_WANT_READ) {
				xl_arm(c, 1, 0);
				return;
			}
			if (e == SSL_ERROR_WANT_WRITE) {
				xl_arm(c, 0, 1);
				return;
			}
			xl_conn_fail(c, 1);
			return;
		}
	}
}

/* ---------------------------------------------------------------- open loop */

static void
xl_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	struct xl_thread *t = arg;
	uint64_t now = xl_now(), wait;
	struct timeval tv;
	int i;

	(void)fd;
	(void)what;
	while (t->next_sched <= now && t->next_sched < t->t_end) {
		if (t->pcount == t->pcap) {
			if (t->next_sched >= t->t_measure)
				t->dropped++;
		} else {
			t->pend[(t->phead + t->pcount) % t->pcap] = t->next_sched;
			t->pcount++;
		}
		t->next_sched += t->interval_ns;
	}
	/* round robin: every connection stays in use, none idles into
	 * the daemon's header timeout */
	for (i = 0; i < t->nconns && t->pcount > 0; i++) {
		struct xl_conn *c = &t->conns[(t->rr + i) % t->nconns];
		if (c->st == CS_READY)
			xl_drive(c);
	}
	t->rr = (t->rr + 1) % t->nconns;
	if (t->next_sched >= t->t_end)
		return;
	wait = t->next_sched > now ? t->next_sched - now : 0;
	tv.tv_sec = (time_t)(wait / 1000000000ull);
	tv.tv_usec = (suseconds_t)((wait % 1000000000ull) / 1000);
	evtimer_add(t->tick, &tv);
}

/* ---------------------------------------------------------------- threads */

static void
xl_stop_cb(evutil_socket_t fd, short what, void *arg)
{
	struct xl_thread *t = arg;

	(void)fd;
	(void)what;
	event_base_loopbreak(t->base);
}

static void
xl_thread_init(struct xl_thread *t, int id, int nconns, uint64_t t0)
{
	struct event_config *ec;
	int i;

	memset(t, 0, sizeof(*t));
	t->id = id;
	t->nconns = nconns;
	t->close_hdr = o.mode == XL_HANDSHAKE;
	if ((ec = event_config_new()) == NULL)
		xl_die("out of memory");
	event_config_set_flag(ec, EVENT_BASE_FLAG_PRECISE_TIMER |
	    EVENT_BASE_FLAG_NOLOCK);
	t->base = event_base_new_with_config(ec);
	event_config_free(ec);
	if (t->base == NULL)
		xl_die("event_base_new failed");
	if ((t->conns = calloc((size_t)nconns, sizeof(*t->conns))) == NULL)
		xl_die("out of memory");
	for (i = 0; i < nconns; i++) {
		t->conns[i].th = t;
		t->conns[i].fd = -1;
	}
	t->t_measure = t0 + (uint64_t)(o.warmup * 1e9);
	t->t_end = t->t_measure + (uint64_t)(o.seconds * 1e9);
	xl_pool_sign(t, xl_now());
}

static void *
xl_thread_main(void *arg)
{
	struct xl_thread *t = arg;
	struct timeval tv;
	uint64_t now = xl_now(), left;
	int i;

	left = t->t_end > now ? t->t_end - now : 0;
	tv.tv_sec = (time_t)(left / 1000000000ull);
	tv.tv_usec = (suseconds_t)((left % 1000000000ull) / 1000);
	if ((t->stop_ev = evtimer_new(t->base, xl_stop_cb, t)) == NULL)
		xl_die("out of memory");
	evtimer_add(t->stop_ev, &tv);
	if (o.mode == XL_OPEN) {
		t->pcap = 1u << 20;
		if ((t->pend = calloc(t->pcap, sizeof(*t->pend))) == NULL ||
		    (t->tick = evtimer_new(t->base, xl_tick_cb, t)) == NULL)
			xl_die("out of memory");
		t->interval_ns = (uint64_t)(1e9 * o.threads / o.rate);
		t->next_sched = now + 300000000ull;   /* connect first */
		tv.tv_sec = 0;
		tv.tv_usec = 300000;
		evtimer_add(t->tick, &tv);
	}
	if (o.mode == XL_IDLE)
		xl_idle_progress(t);
	else
		for (i = 0; i < t->nconns; i++)
			xl_conn_start(&t->conns[i]);
	event_base_dispatch(t->base);
	return NULL;
}

static void
xl_thread_free(struct xl_thread *t)
{
	int i;

	for (i = 0; i < t->nconns; i++)
		if (t->conns[i].st != CS_OFF)
			xl_conn_close(&t->conns[i]);
	free(t->conns);
	for (i = 0; i < XL_POOL; i++)
		free(t->pool[i].buf);
	if (t->tick != NULL)
		event_free(t->tick);
	if (t->stop_ev != NULL)
		event_free(t->stop_ev);
	SSL_SESSION_free(t->sess);
	free(t->pend);
	free(t->lat);
	free(t->capture);
	event_base_free(t->base);
}

/* ---------------------------------------------------------------- set-up */

/* Encrypt once, keep what a decrypt request needs. */
static void
xl_setup_decrypt(void)
{
	struct xl_thread t;
	enum xl_op saved_op = o.op;
	enum xl_mode saved_mode = o.mode;
	int saved_expect = o.expect;
	double saved_warmup = o.warmup, saved_seconds = o.seconds;
	json_object *js, *v;

	o.op = OP_ENCRYPT;
	o.mode = XL_CLOSED;
	o.expect = 200;
	o.warmup = 0;
	o.seconds = 10;
	xl_thread_init(&t, 99, 1, xl_now());
	t.max_requests = 1;
	xl_thread_main(&t);
	if (t.ok != 1 || t.capture == NULL)
		xl_die("set-up: the encrypt for the decrypt requests failed");
	if ((js = json_tokener_parse(t.capture)) == NULL)
		xl_die("set-up: encrypt response is not JSON");
#define XL_FIELD(name, dst, opt) do { \
	if (json_object_object_get_ex(js, name, &v)) \
		dst = strdup(json_object_get_string(v)); \
	else if (!(opt)) \
		xl_die("set-up: encrypt response without " name); \
	} while (0)
	XL_FIELD("ciphertext", o.dec_ct, 0);
	XL_FIELD("initializationVector", o.dec_iv, 0);
	XL_FIELD("authenticationTag", o.dec_tag, 0);
	XL_FIELD("ciphertextMetadata", o.dec_cmeta, 1);
#undef XL_FIELD
	json_object_put(js);
	xl_thread_free(&t);
	o.op = saved_op;
	o.mode = saved_mode;
	o.expect = saved_expect;
	o.warmup = saved_warmup;
	o.seconds = saved_seconds;
}

static void
xl_read_secret(const char *file)
{
	FILE *f = fopen(file, "r");
	char buf[256];
	size_t n;

	if (f == NULL)
		xl_die("-s: cannot open the secret file");
	n = fread(buf, 1, sizeof(buf) - 1, f);
	fclose(f);
	while (n > 0 && (buf[n - 1] == '\n' || buf[n - 1] == '\r'))
		n--;
	if (n == 0)
		xl_die("-s: empty secret");
	if ((o.secret = malloc(n)) == NULL)
		xl_die("out of memory");
	memcpy(o.secret, buf, n);
	o.secret_len = n;
	OPENSSL_cleanse(buf, sizeof(buf));
}

static int
xl_lookup(const char *s, const char *const *names, int n)
{
	int i;

	for (i = 0; i < n; i++)
		if (strcmp(s, names[i]) == 0)
			return i;
	return -1;
}

static void
xl_usage(void)
{
	fprintf(stderr,
	    "usage: xksload -p PORT -k AKID -s SECRET_FILE -o OP [-m MODE]\n"
	    "         [-h 127.0.0.1] [-P /example/kms/xks/v1] [-K demo-key]\n"
	    "         [-C CAFILE] [-c CONNS] [-t THREADS] [-d SECONDS]\n"
	    "         [-w WARMUP] [-r RATE] [-n IDLE] [-b PLAINTEXT_BYTES]\n"
	    "         [-a AAD_BYTES] [-D] [-R] [-e STATUS]\n"
	    "  OP: encrypt decrypt metadata health unauth\n"
	    "  MODE: closed (default) open handshake idle\n"
	    "  -D: ask for the CDIV (encrypt)   -R: resume TLS sessions\n"
	    "  -e: the status that counts as success (default 200; unauth 401)\n");
	exit(2);
}

int
main(int argc, char **argv)
{
	struct xl_thread *th;
	struct rusage ru0, ru1;
	unsigned long long ok = 0, errs = 0, econn = 0, recon = 0, hs = 0,
	    res = 0, full = 0, drop = 0;
	unsigned long status[XL_MAXSTATUS];
	uint64_t t0, *all, now;
	size_t nall = 0, k;
	double cpu, secs;
	unsigned char *rb;
	int ch, i, alive = 0, closed = 0, per;

	while ((ch = getopt(argc, argv, "h:p:k:s:P:K:C:m:o:c:t:d:w:r:n:b:a:DRe:g:"))
	    != -1) {
		switch (ch) {
		case 'h': o.host = optarg; break;
		case 'p': o.port = atoi(optarg); break;
		case 'k': o.akid = optarg; break;
		case 's': xl_read_secret(optarg); break;
		case 'P': o.base = optarg; break;
		case 'K': o.key = optarg; break;
		case 'C': o.cafile = optarg; break;
		case 'g': o.region = optarg; break;
		case 'm':
			if ((i = xl_lookup(optarg, xl_mode_names, 4)) < 0)
				xl_usage();
			o.mode = (enum xl_mode)i;
			break;
		case 'o':
			if ((i = xl_lookup(optarg, xl_op_names, 5)) < 0)
				xl_usage();
			o.op = (enum xl_op)i;
			break;
		case 'c': o.conns = atoi(optarg); break;
		case 't': o.threads = atoi(optarg); break;
		case 'd': o.seconds = atof(optarg); break;
		case 'w': o.warmup = atof(optarg); break;
		case 'r': o.rate = atof(optarg); break;
		case 'n': o.idle_n = atoi(optarg); break;
		case 'b': o.pt_len = (size_t)atol(optarg); break;
		case 'a': o.aad_len = (size_t)atol(optarg); break;
		case 'D': o.cdiv = 1; break;
		case 'R': o.resume = 1; break;
		case 'e': o.expect = atoi(optarg); break;
		default: xl_usage();
		}
	}
	if (o.port <= 0 || (o.op != OP_UNAUTH && (o.akid == NULL ||
	    o.secret == NULL)) || o.conns < 1 || o.threads < 1 ||
	    o.seconds <= 0 || o.warmup < 0 || o.pt_len < 1 ||
	    (o.mode == XL_OPEN && o.rate <= 0) || o.idle_n < 1)
		xl_usage();
	if (o.expect == 0)
		o.expect = o.op == OP_UNAUTH ? 401 : 200;
	if (o.mode == XL_IDLE) {
		o.threads = 1;
		o.conns = o.idle_n;
		o.warmup = 0;
	}
	if (o.threads > o.conns)
		o.threads = o.conns;
	signal(SIGPIPE, SIG_IGN);
	srand((unsigned)getpid());

	if ((xl_ctx = SSL_CTX_new(TLS_client_method())) == NULL)
		xl_die("SSL_CTX_new failed");
	SSL_CTX_set_min_proto_version(xl_ctx, TLS1_2_VERSION);
	SSL_CTX_set_mode(xl_ctx, SSL_MODE_RELEASE_BUFFERS);
	SSL_CTX_set_alpn_protos(xl_ctx, (const unsigned char *)"\x08http/1.1", 9);
	if (o.cafile != NULL) {
		if (SSL_CTX_load_verify_locations(xl_ctx, o.cafile, NULL) != 1)
			xl_die("-C: cannot load the CA file");
		SSL_CTX_set_verify(xl_ctx, SSL_VERIFY_PEER, NULL);
	}

	if ((rb = malloc(o.pt_len + o.aad_len + 1)) == NULL)
		xl_die("out of memory");
	RAND_bytes(rb, (int)(o.pt_len + o.aad_len));
	o.pt_b64 = xl_b64(rb, o.pt_len);
	o.aad_b64 = xl_b64(rb + o.pt_len, o.aad_len);
	free(rb);
	if (o.op == OP_DECRYPT)
		xl_setup_decrypt();

	if ((th = calloc((size_t)o.threads, sizeof(*th))) == NULL)
		xl_die("out of memory");
	t0 = xl_now();
	for (i = 0; i < o.threads; i++) {
		per = o.conns / o.threads + (i < o.conns % o.threads);
		xl_thread_init(&th[i], i, per, t0);
	}
	for (i = 0; i < o.threads; i++)
		if (pthread_create(&th[i].tid, NULL, xl_thread_main, &th[i]) != 0)
			xl_die("pthread_create failed");
	/* the generator's own CPU over the measured window */
	now = xl_now();
	if (th[0].t_measure > now) {
		struct timespec ts = { (time_t)((th[0].t_measure - now) / 1000000000ull),
		    (long)((th[0].t_measure - now) % 1000000000ull) };
		nanosleep(&ts, NULL);
	}
	getrusage(RUSAGE_SELF, &ru0);
	now = xl_now();
	if (th[0].t_end > now) {
		struct timespec ts = { (time_t)((th[0].t_end - now) / 1000000000ull),
		    (long)((th[0].t_end - now) % 1000000000ull) };
		nanosleep(&ts, NULL);
	}
	getrusage(RUSAGE_SELF, &ru1);
	for (i = 0; i < o.threads; i++)
		pthread_join(th[i].tid, NULL);

	memset(status, 0, sizeof(status));
	for (i = 0; i < o.threads; i++)
		nall += th[i].nlat;
	if ((all = malloc((nall + 1) * sizeof(*all))) == NULL)
		xl_die("out of memory");
	nall = 0;
	for (i = 0; i < o.threads; i++) {
		struct xl_thread *t = &th[i];
		int j;
		if (t->nlat > 0)
			memcpy(all + nall, t->lat, t->nlat * sizeof(*all));
		nall += t->nlat;
		ok += t->ok;
		errs += t->err_status;
		econn += t->err_conn;
		recon += t->reconnects;
		hs += t->handshakes;
		res += t->resumed;
		full += t->full;
		drop += t->dropped;
		for (k = 0; k < XL_MAXSTATUS; k++)
			status[k] += t->status[k];
		for (j = 0; j < t->nconns; j++)
			if (t->conns[j].st != CS_OFF && t->conns[j].served > 0)
				alive++;
		closed += t->idle_closed;
	}
	qsort(all, nall, sizeof(*all), xl_cmp_u64);
	secs = o.seconds;
	cpu = ((double)(ru1.ru_utime.tv_sec - ru0.ru_utime.tv_sec) +
	    (double)(ru1.ru_stime.tv_sec - ru0.ru_stime.tv_sec) +
	    (double)(ru1.ru_utime.tv_usec - ru0.ru_utime.tv_usec) / 1e6 +
	    (double)(ru1.ru_stime.tv_usec - ru0.ru_stime.tv_usec) / 1e6) / secs;

	printf("RESULT mode=%s op=%s%s conns=%d threads=%d seconds=%.2f "
	    "requests=%zu ok=%llu errors=%llu rps=%.1f p50_ms=%.3f p99_ms=%.3f "
	    "p999_ms=%.3f max_ms=%.3f client_cpu=%.2f",
	    xl_mode_names[o.mode], xl_op_names[o.op],
	    o.cdiv ? "+cdiv" : "", o.conns, o.threads, secs, nall, ok,
	    errs + econn + drop, (double)ok / secs,
	    xl_pct(all, nall, 0.50), xl_pct(all, nall, 0.99),
	    xl_pct(all, nall, 0.999), nall ? (double)all[nall - 1] / 1e6 : 0,
	    cpu);
	if (o.mode == XL_OPEN)
		printf(" rate=%.0f dropped=%llu", o.rate, drop);
	if (o.mode == XL_HANDSHAKE)
		printf(" handshakes=%llu hs_per_s=%.1f resumed=%llu full=%llu",
		    hs, (double)hs / secs, res, full);
	if (o.mode == XL_IDLE)
		printf(" alive=%d closed_by_server=%d", alive, closed);
	printf(" conn_errors=%llu reconnects=%llu", econn, recon);
	for (k = 0; k < XL_MAXSTATUS; k++)
		if (status[k] > 0 && (int)k != o.expect)
			printf(" status_%zu=%lu", k, status[k]);
	printf("\n");
	fflush(stdout);

	for (i = 0; i < o.threads; i++)
		xl_thread_free(&th[i]);
	free(th);
	free(all);
	OPENSSL_cleanse(o.secret, o.secret_len);
	free(o.secret);
	SSL_CTX_free(xl_ctx);
	return (errs + econn + drop) == 0 ? 0 : 1;
}
