#include "config.h"

#include <arpa/inet.h>
#include <errno.h>
#include <malloc.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <event2/buffer.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <event2/thread.h>
#include <openssl/crypto.h>
#include <openssl/err.h>
#include <openssl/ssl.h>

#ifdef HAVE_SYSTEMD
#include <systemd/sd-daemon.h>
#endif

#include "cfg.h"
#include "health.h"
#include "hsm.h"
#include "http.h"
#include "log.h"
#include "route.h"
#include "server.h"
#include "sigv4.h"
#include "tls.h"
#include "util.h"
#include "xerr.h"
#include "xks.h"

#define DRAIN_SECONDS 5
#define LINGER_MS 2000
#define SIGV4_CACHE_ENTRIES 64
#define LOOP_FLUSH_MAX 4   /* backends one batch of events may touch */
#define READ_SLACK 16384
#define TLS_KEEP_BUFFERS 32  /* per loop: connections that keep their
                                TLS buffers while idle (~34 kB each) */   /* input beyond a request: one TLS record */

/*
 * A config snapshot: immutable, reference-counted.  A request holds the
 * snapshot current when it started; a connection holds the one it was
 * accepted on (for its TLS context).
 */
struct snap {
	atomic_int refs;
	struct cfg *cfg;
	struct tls_ctx *tls;
	struct sigv4_cred **creds;    /* per key store */
	const char ***regions;        /* per key store */
	struct xks_limits xlim;
};

/*
 * The HSM side: a worker pool and its health task.  An op holds the
 * backend it started on; a reload that changes hsm.* or health.* builds a
 * new backend beside the old one, and the main thread frees the old one
 * once no op holds it (never an event loop: hsm_free joins threads).
 */
struct backend {
	atomic_int refs;              /* ops using it (+1 while current) */
	struct hsm *hsm;
	struct health *health;
	struct backend *next;         /* retired list */
	char fingerprint[4096];       /* the settings it was built from */
};

struct loop;
struct op;

/* A remote address as a key: 16 bytes (IPv4 mapped into IPv6). */
struct addr_key {
	unsigned char b[16];
};

/* Connections per remote address: a small chained hash table. */
#define ADDR_BUCKETS 1024
struct addr_count {
	struct addr_count *next;
	struct addr_key key;
	int count;
};

enum conn_state {
	C_HEAD = 0,   /* handshake, or reading a request head */
	C_BODY,       /* reading the body */
	C_BUSY,       /* request being answered */
	C_WRITE,      /* response being written */
	C_IDLE,       /* keep-alive, waiting for the next request */
	C_LINGER,     /* response sent, draining input before close */
};

struct conn {
	struct loop *loop;
	struct conn *prev, *next;
	/*
	 * The connection's own I/O, not a bufferevent: rev (persistent) reads
	 * into in through SSL_read with read-ahead (one read(2) a request);
	 * a response in out is written by wev's callback, activated by hand
	 * in the same loop iteration, and wev is added to epoll only when
	 * the socket is full.  No epoll_ctl per request (docs/performance.md).
	 */
	evutil_socket_t fd;           /* -1 once handed to a lingerer */
	SSL *ssl;                     /* NULL on the plain LB listener */
	struct event *rev, *wev;
	struct evbuffer *in, *out;
	size_t in_max;                /* stop reading beyond this much input */
	int read_paused;              /* rev removed: in is at in_max */
	int read_wants_write;         /* SSL_read needs the socket writable */
	int write_wants_read;         /* SSL_write needs the socket readable */
	struct snap *tls_snap;
	int is_lb;                    /* plain-HTTP load-balancer listener */
	char remote[INET6_ADDRSTRLEN + 8];
	enum conn_state state;
	struct event *timer;
	uint64_t last_active_us;
	uint64_t req_start_us;
	struct http_request req;
	int have_head;
	struct op *op;
	int close_after;
	int tls_up;                   /* handshake finished */
	struct addr_key akey;         /* remote address, for the per-address cap */
	int counted;                  /* akey is counted in the address table */
};

/* A socket being closed gently: our last bytes (an alert) must reach the
 * peer before a reset can discard them, so read and drop until EOF. */
struct lingerer {
	struct lingerer *next, *prev;
	struct loop *loop;
	struct event *ev;
	evutil_socket_t fd;
	uint64_t deadline_us;
};

struct loop {
	int id;
	pthread_t thread;
	struct event_base *base;
	struct evconnlistener **lis;
	size_t nlis;
	struct evconnlistener *lb_lis;
	struct sigv4_cache *cache;
	pthread_mutex_t done_lock;
	struct op *done_head, *done_tail;
	struct event *done_ev;
	/* backends with jobs queued by hsm_submit_held() in this batch of
	 * events; flush_ev (activated behind the batch) wakes their workers */
	struct backend *flush_be[LOOP_FLUSH_MAX];
	int nflush;
	struct event *flush_ev;
	struct event *drain_ev;
	struct conn *conns;
	int nconns;
	int draining;
	struct lingerer *lingerers;
};

enum op_stage { ST_NONE = 0, ST_ENCRYPT, ST_VERIFY, ST_DECRYPT, ST_METADATA };

/* One request being answered. */
struct op {
	struct conn *conn;            /* NULL once the client went away */
	struct loop *loop;
	struct snap *snap;
	struct backend *be;
	struct route route;
	struct http_request req;
	unsigned char *body;
	size_t body_len;
	struct xks_req xr;
	unsigned char *hsm_aad;
	size_t hsm_aad_len;
	unsigned char cmeta[XKS_CMETA_MAX];
	size_t cmeta_len;
	unsigned char *out;           /* HSM output */
	size_t out_cap;
	unsigned char *check;         /* CDIV check: decrypted output */
	unsigned char iv[HSM_MAX_IV];
	size_t iv_len;
	unsigned char tag[HSM_TAG_LEN];
	size_t ct_len;
	unsigned char cdiv[32];
	struct hsm_job job;
	enum op_stage stage;
	int tries;
	char akid[129];
	int token;
	struct op *next;
};

static struct server {
	pthread_mutex_t snap_lock;
	struct snap *snap;
	struct loop *loops;
	int nloops;
	int *fds;                     /* nloops x nlisten: loop i owns row i */
	size_t nfds;
	size_t nlisten;
	int lb_fd;
	struct backend *be;           /* current, under snap_lock */
	struct backend *retired;      /* main thread only */
	struct event *retire_timer;
	atomic_int nconns;
	atomic_int draining;
	struct event_base *main_base;
	struct event *drain_timer;
	int drain_ticks;
	pthread_mutex_t addr_lock;
	struct addr_count *addrs[ADDR_BUCKETS];
} srv = {
	.snap_lock = PTHREAD_MUTEX_INITIALIZER,
	.addr_lock = PTHREAD_MUTEX_INITIALIZER,
	.lb_fd = -1,
};

static void conn_process(struct conn *c);
static void conn_want_write(struct conn *c);
static void conn_close(struct conn *c);
static void op_free(struct op *op);
static void addr_release(const struct addr_key *k);

/* ---------------------------------------------------------------- memory */

/*
 * libevent's allocator: buffers are wiped when freed or moved, so request
 * bodies and responses (Base64 plaintext, AAD) do not outlive their use in
 * freed heap memory.
 */
static void *
srv_ev_malloc(size_t n)
{
	return malloc(n);
}

static void
srv_ev_free(void *p)
{
	if (p == NULL)
		return;
	wipe(p, malloc_usable_size(p));
	free(p);
}

static void *
srv_ev_realloc(void *p, size_t n)
{
	size_t old;
	void *q;

	if (p == NULL)
		return malloc(n);
	if (n == 0) {
		srv_ev_free(p);
		return NULL;
	}
	old = malloc_usable_size(p);
	if ((q = malloc(n)) == NULL)
		return NULL;
	memcpy(q, p, old < n ? old : n);
	srv_ev_free(p);
	return q;
}

/* ---------------------------------------------------------------- snapshots */

static void
snap_free(struct snap *s)
{
	size_t k;

	if (s == NULL)
		return;
	if (s->cfg != NULL) {
		for (k = 0; k < s->cfg->nkeystores; k++) {
			if (s->creds != NULL)
				free(s->creds[k]);
			if (s->regions != NULL)
				free(s->regions[k]);
		}
	}
	free(s->creds);
	free(s->regions);
	tls_ctx_free(s->tls);
	cfg_free(s->cfg);
	free(s);
}

/* Build a snapshot from cfg (taken over on success). */
static struct snap *
snap_new(struct cfg *cfg, char *err, size_t errlen)
{
	struct snap *s = NULL, *ret = NULL;
	size_t k, i;

	if ((s = calloc(1, sizeof(*s))) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	atomic_init(&s->refs, 1);
	if (tls_ctx_new(cfg, &s->tls, err, errlen) != 0)
		goto out;
	if ((s->creds = calloc(cfg->nkeystores, sizeof(*s->creds))) == NULL ||
	    (s->regions = calloc(cfg->nkeystores, sizeof(*s->regions))) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	for (k = 0; k < cfg->nkeystores; k++) {
		const struct cfg_keystore *ks = &cfg->keystores[k];
		if ((s->creds[k] = calloc(ks->ncredentials + 1,
		    sizeof(**s->creds))) == NULL ||
		    (s->regions[k] = calloc(ks->nregions + 1,
		    sizeof(**s->regions))) == NULL) {
			snprintf(err, errlen, "out of memory");
			goto out;
		}
		for (i = 0; i < ks->ncredentials; i++) {
			s->creds[k][i].access_key_id = ks->credentials[i].access_key_id;
			s->creds[k][i].secret = ks->credentials[i].secret;
			s->creds[k][i].secret_len = ks->credentials[i].secret_len;
			s->creds[k][i].not_after = ks->credentials[i].not_after;
		}
		for (i = 0; i < ks->nregions; i++)
			s->regions[k][i] = ks->regions[i];
	}
	s->xlim.max_plaintext = cfg->limits.max_plaintext_bytes;
	s->xlim.max_aad = cfg->limits.max_aad_bytes;
	s->cfg = cfg;
	ret = s;
	s = NULL;
 out:
	snap_free(s);
	return ret;
}

static struct snap *
snap_get(void)
{
	struct snap *s;

	pthread_mutex_lock(&srv.snap_lock);
	s = srv.snap;
	atomic_fetch_add(&s->refs, 1);
	pthread_mutex_unlock(&srv.snap_lock);
	return s;
}

static void
snap_put(struct snap *s)
{
	if (s != NULL && atomic_fetch_sub(&s->refs, 1) == 1)
		snap_free(s);
}

/* ---------------------------------------------------------------- backends */

/* What a backend is built from; equal fingerprints share a backend. */
static void
backend_fingerprint(const struct cfg *cfg, char *out, size_t len)
{
	const struct cfg_hsm *h = &cfg->hsm;
	size_t i, o;

	o = (size_t)snprintf(out, len, "%s|%s|%s|%d|%s|%d|%d|%d|%d|%d|",
	    h->module, h->pin_file != NULL ? h->pin_file : "-",
	    h->pin_env != NULL ? h->pin_env : "-", h->sessions_per_token,
	    h->health_key, (int)h->iv, h->timeout_ms, h->queue_size,
	    cfg->health.interval_seconds, cfg->health.degraded_ms);
	for (i = 0; i < h->ntokens && o < len; i++)
		o += (size_t)snprintf(out + o, len - o, "%s|", h->tokens[i]);
}

static void
backend_free(struct backend *be)
{
	if (be == NULL)
		return;
	health_free(be->health);
	hsm_free(be->hsm);
	free(be);
}

/* Build a backend (blocking: main thread only).  NULL with err on failure. */
static struct backend *
backend_new(const struct cfg *cfg, char *err, size_t errlen)
{
	struct backend *be = calloc(1, sizeof(*be));

	if (be == NULL) {
		snprintf(err, errlen, "out of memory");
		return NULL;
	}
	atomic_init(&be->refs, 1);
	backend_fingerprint(cfg, be->fingerprint, sizeof(be->fingerprint));
	if (hsm_new(&cfg->hsm, &be->hsm, err, errlen) != 0) {
		backend_free(be);
		return NULL;
	}
	if ((be->health = health_new(be->hsm, cfg)) == NULL) {
		snprintf(err, errlen, "cannot start the health check");
		backend_free(be);
		return NULL;
	}
	return be;
}

static struct backend *
backend_get(void)
{
	struct backend *be;

	pthread_mutex_lock(&srv.snap_lock);
	be = srv.be;
	if (be != NULL)
		atomic_fetch_add(&be->refs, 1);
	pthread_mutex_unlock(&srv.snap_lock);
	return be;
}

/* Drop a reference; the main thread frees retired backends. */
static void
backend_put(struct backend *be)
{
	if (be != NULL)
		atomic_fetch_sub(&be->refs, 1);
}

/* Main thread: free retired backends that no op holds any more. */
static void
backend_reap(evutil_socket_t fd, short what, void *arg)
{
	struct backend **pp = &srv.retired, *be;
	struct timeval tv = { 0, 200000 };

	(void)fd;
	(void)what;
	(void)arg;
	while ((be = *pp) != NULL) {
		if (atomic_load(&be->refs) == 0) {
			*pp = be->next;
			log_info("reload: old HSM pool retired");
			backend_free(be);
		} else
			pp = &be->next;
	}
	if (srv.retired != NULL)
		evtimer_add(srv.retire_timer, &tv);
}

/* ---------------------------------------------------------------- responses */

static void
conn_arm(struct conn *c, int ms)
{
	struct timeval tv = { ms / 1000, (ms % 1000) * 1000 };
	const struct timeval *common;

	/* every connection uses the same few durations: libevent keeps
	 * each "common timeout" in a list, O(1) to re-arm, instead of the
	 * heap (three re-arms per request) */
	common = event_base_init_common_timeout(c->loop->base, &tv);
	evtimer_add(c->timer, common != NULL ? common : &tv);
}

/* Append s to buf at *off (the caller sized buf). */
static void
hdr_put(char *buf, size_t *off, const char *s)
{
	size_t n = strlen(s);

	memcpy(buf + *off, s, n);
	*off += n;
}

static void
hdr_put_uint(char *buf, size_t *off, unsigned long long v)
{
	char tmp[24];
	size_t n = 0;

	do
		tmp[n++] = (char)('0' + v % 10);
	while ((v /= 10) != 0);
	while (n > 0)
		buf[(*off)++] = tmp[--n];
}

/*
 * Queue a complete response.  extra: more header lines ("Name: v\r\n"), or
 * NULL.  The body is copied.
 */
static void
conn_respond(struct conn *c, int status, const char *ctype, const char *extra,
    const char *body, size_t len)
{
	struct evbuffer *outb = c->out;
	int keep = c->have_head && c->req.keep_alive && !c->close_after &&
	    !c->loop->draining;
	const char *reason = xerr_reason_phrase(status);
	char hdr[512];
	size_t off = 0;

	if (!keep)
		c->close_after = 1;
	if (extra == NULL)
		extra = "";
	/* the head without printf: printf was a tenth of a request's user
	 * time; the fixed part below is under 100 bytes */
	if (strlen(reason) + strlen(ctype) + strlen(extra) + 160 >
	    sizeof(hdr)) {
		evbuffer_add_printf(outb, "HTTP/1.1 %d %s\r\nContent-Type: %s"
		    "\r\nContent-Length: %zu\r\nCache-Control: no-store\r\n"
		    "%s%s\r\n", status, reason, ctype, len, extra,
		    keep ? "" : "Connection: close\r\n");
		goto body;
	}
	hdr_put(hdr, &off, "HTTP/1.1 ");
	hdr_put_uint(hdr, &off, (unsigned)status);
	hdr_put(hdr, &off, " ");
	hdr_put(hdr, &off, reason);
	hdr_put(hdr, &off, "\r\nContent-Type: ");
	hdr_put(hdr, &off, ctype);
	hdr_put(hdr, &off, "\r\nContent-Length: ");
	hdr_put_uint(hdr, &off, len);
	hdr_put(hdr, &off, "\r\nCache-Control: no-store\r\n");
	hdr_put(hdr, &off, extra);
	if (!keep)
		hdr_put(hdr, &off, "Connection: close\r\n");
	hdr_put(hdr, &off, "\r\n");
	evbuffer_add(outb, hdr, off);
 body:
	if (len > 0)
		evbuffer_add(outb, body, len);
	c->state = C_WRITE;
	conn_arm(c, c->tls_snap->cfg->limits.idle_timeout_ms);
	conn_want_write(c);
}

/* An error response straight from the front door (no op yet). */
static void
conn_error(struct conn *c, enum xerr e, const char *msg)
{
	size_t len = 0;
	char *body = xks_error_body(e, msg, &len);
	int status = xerr_http_status(e);
	char st[16];

	snprintf(st, sizeof(st), "%d", status);
	log_fields(LOG_LVL_INFO, "request", "remote", c->remote, "status", st,
	    "errorName", xerr_name(e), "reason", msg, NULL);
	c->close_after = 1;
	if (body == NULL)
		conn_respond(c, status, "application/json", NULL, "", 0);
	else
		conn_respond(c, status, "application/json", NULL, body, len);
	free(body);
}

/* ---------------------------------------------------------------- ops */

static void
op_free(struct op *op)
{
	if (op == NULL)
		return;
	xks_req_clear(&op->xr);
	wipe_free(op->hsm_aad, op->hsm_aad_len);
	wipe_free(op->out, op->out_cap);
	wipe_free(op->check, op->out_cap);
	wipe_free(op->body, op->body_len);
	http_request_clear(&op->req);
	snap_put(op->snap);
	backend_put(op->be);
	wipe(op, sizeof(*op));
	free(op);
}

/* The request log line, then the response. */
static void
op_finish(struct op *op, int status, const char *extra, char *body,
    size_t len, enum xerr e, const char *reason)
{
	struct conn *c = op->conn;
	char st[16], lat[24], tok[16];
	const char *token = NULL;

	snprintf(st, sizeof(st), "%d", status);
	snprintf(lat, sizeof(lat), "%llu",
	    (unsigned long long)(util_now_us() - c->req_start_us));
	if (op->token >= 0 && op->be != NULL &&
	    (size_t)op->token < hsm_ntokens(op->be->hsm)) {
		token = hsm_token_id(op->be->hsm, (size_t)op->token);
	} else if (op->token >= 0) {
		snprintf(tok, sizeof(tok), "%d", op->token);
		token = tok;
	}
	log_fields(status < 500 ? LOG_LVL_INFO : LOG_LVL_WARN, "request",
	    "remote", c->remote,
	    "path", op->route.base != NULL ? op->route.base : "-",
	    "op", route_op_name(op->route.op),
	    "key", op->route.key_id[0] != '\0' ? op->route.key_id : NULL,
	    "kmsRequestId", op->xr.meta.kms_request_id,
	    "kmsOperation", op->xr.meta.kms_operation,
	    "awsPrincipalArn", op->xr.meta.aws_principal_arn,
	    "kmsViaService", op->xr.meta.kms_via_service,
	    "accessKeyId", op->akid[0] != '\0' ? op->akid : NULL,
	    "status", st,
	    "errorName", e != XERR_OK ? xerr_name(e) : NULL,
	    "reason", reason,
	    "latency_us", lat,
	    "token", token, NULL);
	c->op = NULL;
	conn_respond(c, status, "application/json", extra, body, len);
	op_free(op);
}

static void
op_error(struct op *op, enum xerr e, const char *msg)
{
	size_t len = 0;
	char *body = xks_error_body(e, msg, &len);
	const char *extra = e == XERR_METHOD_NOT_ALLOWED ? "Allow: POST\r\n" : NULL;

	op_finish(op, xerr_http_status(e), extra, body != NULL ? body : "",
	    body != NULL ? len : 0, e, msg);
	free(body);
}

/* Done callback: runs on an HSM worker thread; hand the op to its loop. */
static void
op_job_done(struct hsm_job *job)
{
	struct op *op = job->arg;
	struct loop *l = op->loop;
	int was_empty;

	pthread_mutex_lock(&l->done_lock);
	op->next = NULL;
	was_empty = l->done_tail == NULL;
	if (l->done_tail != NULL)
		l->done_tail->next = op;
	else
		l->done_head = op;
	l->done_tail = op;
	pthread_mutex_unlock(&l->done_lock);
	/* a non-empty list was activated by whoever made it non-empty and
	 * the loop has not taken it yet: it will take this op too, without
	 * another trip through the base lock and the loop's wake-up fd */
	if (was_empty)
		event_active(l->done_ev, EV_READ, 0);
}

/*
 * Batching the HSM wake-ups of one loop iteration: the jobs of all the
 * connections that epoll reported ready together are queued first, and
 * flush_ev -- activated behind them in libevent's active queue -- then
 * wakes the workers once for all of them (hsm_flush).  Returns 1 when be
 * is on the loop's flush list (it holds a reference until the flush), 0
 * when the list is full and the caller should submit unbatched.
 */
static int
loop_flush_later(struct loop *l, struct backend *be)
{
	int i;

	for (i = 0; i < l->nflush; i++)
		if (l->flush_be[i] == be)
			return 1;
	if (l->nflush == LOOP_FLUSH_MAX)
		return 0;
	atomic_fetch_add(&be->refs, 1);
	l->flush_be[l->nflush++] = be;
	if (l->nflush == 1)
		event_active(l->flush_ev, EV_READ, 0);
	return 1;
}

static void
loop_flush(struct loop *l)
{
	int i;

	for (i = 0; i < l->nflush; i++) {
		hsm_flush(l->flush_be[i]->hsm);
		backend_put(l->flush_be[i]);
	}
	l->nflush = 0;
}

static void
loop_flush_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	loop_flush(arg);
}

static void
op_submit(struct op *op, enum hsm_op hop, const unsigned char *in,
    size_t in_len, unsigned char *out)
{
	struct hsm_job *j = &op->job;
	enum xerr e;

	memset(j, 0, sizeof(*j));
	j->op = hop;
	snprintf(j->label, sizeof(j->label), "%s", op->route.key_id);
	j->in = in;
	j->in_len = in_len;
	j->aad = op->hsm_aad;
	j->aad_len = op->hsm_aad_len;
	j->out = out;
	j->token = -1;
	j->done = op_job_done;
	j->arg = op;
	j->served_by = -1;
	if (hop == HSM_OP_DECRYPT) {
		memcpy(j->iv, op->iv, op->iv_len);
		j->iv_len = op->iv_len;
		memcpy(j->tag, op->tag, HSM_TAG_LEN);
	}
	if (op->be == NULL)
		e = XERR_UNAVAILABLE;
	else if (loop_flush_later(op->loop, op->be))
		e = hsm_submit_held(op->be->hsm, j);
	else
		e = hsm_submit(op->be->hsm, j);
	if (e != XERR_OK)
		op_error(op, e, e == XERR_THROTTLING ?
		    "too many requests waiting for the HSM" :
		    "no HSM token is available");
}

/*
 * Answer 200 with a body built by one of the xks_*_body() functions (NULL:
 * it ran out of memory).  The body is freed, wiped first when it holds
 * plaintext.
 */
static void
op_ok(struct op *op, char *body, size_t len, int secret)
{
	if (body == NULL) {
		op_error(op, XERR_INTERNAL, "out of memory");
		return;
	}
	op_finish(op, 200, NULL, body, len, XERR_OK, NULL);
	if (secret)
		wipe_free(body, len);
	else
		free(body);
}

static void
op_answer_encrypt(struct op *op)
{
	size_t len = 0;
	char *body = xks_encrypt_body(op->out, op->ct_len, op->iv, op->iv_len,
	    op->tag, HSM_TAG_LEN, op->cmeta, op->cmeta_len,
	    op->xr.want_cdiv ? op->cdiv : NULL, &len);

	op_ok(op, body, len, 0);
}

/* Continue an op after an HSM job, on the loop thread. */
static void
op_continue(struct op *op)
{
	struct hsm_job *j = &op->job;
	char *body = NULL;
	size_t len = 0;

	if (op->conn == NULL) {         /* the client went away */
		op_free(op);
		return;
	}
	op->token = j->served_by;
	if (j->err != XERR_OK) {
		/* a failed CDIV check decrypt means the encryption is bad */
		if (op->stage == ST_VERIFY && j->err == XERR_INVALID_CIPHERTEXT &&
		    op->tries < 2) {
			log_warn("CDIV check: decrypt of fresh ciphertext failed "
			    "(token %d); retrying the encrypt", j->served_by);
			op->stage = ST_ENCRYPT;
			op->tries++;
			op_submit(op, HSM_OP_ENCRYPT, op->xr.plaintext,
			    op->xr.plaintext_len, op->out);
			return;
		}
		op_error(op, j->err, j->errmsg[0] != '\0' ? j->errmsg : NULL);
		return;
	}
	switch (op->stage) {
	case ST_METADATA:
		body = xks_metadata_body(j->meta.key_type, j->meta.value_len,
		    j->meta.usage, j->meta.enabled, &len);
		op_ok(op, body, len, 0);
		return;
	case ST_DECRYPT:
		body = xks_decrypt_body(op->out, j->out_len, &len);
		op_ok(op, body, len, 1);
		return;
	case ST_ENCRYPT:
		op->ct_len = j->out_len;
		memcpy(op->iv, j->iv, j->iv_len);
		op->iv_len = j->iv_len;
		memcpy(op->tag, j->tag, HSM_TAG_LEN);
		if (!op->xr.want_cdiv) {
			op_answer_encrypt(op);
			return;
		}
		/* spec order: CDIV from the encrypt output, then decrypt-check */
		xks_cdiv(op->xr.aad, op->xr.aad_len, op->cmeta, op->cmeta_len,
		    op->iv, op->iv_len, op->out, op->ct_len, op->tag,
		    HSM_TAG_LEN, op->cdiv);
		op->stage = ST_VERIFY;
		op_submit(op, HSM_OP_DECRYPT, op->out, op->ct_len, op->check);
		return;
	case ST_VERIFY:
		if (j->out_len != op->xr.plaintext_len ||
		    CRYPTO_memcmp(op->check, op->xr.plaintext, j->out_len) != 0) {
			if (op->tries < 2) {
				log_warn("CDIV check: decrypted ciphertext differs "
				    "from the plaintext (token %d); retrying",
				    j->served_by);
				op->stage = ST_ENCRYPT;
				op->tries++;
				op_submit(op, HSM_OP_ENCRYPT, op->xr.plaintext,
				    op->xr.plaintext_len, op->out);
				return;
			}
			op_error(op, XERR_INTERNAL,
			    "encryption could not be verified");
			return;
		}
		op_answer_encrypt(op);
		return;
	default:
		op_error(op, XERR_INTERNAL, "internal state");
		return;
	}
}

static void
loop_done_cb(evutil_socket_t fd, short what, void *arg)
{
	struct loop *l = arg;
	struct op *op, *next;

	(void)fd;
	(void)what;
	pthread_mutex_lock(&l->done_lock);
	op = l->done_head;
	l->done_head = l->done_tail = NULL;
	pthread_mutex_unlock(&l->done_lock);
	for (; op != NULL; op = next) {
		next = op->next;
		op_continue(op);
	}
}

static void
op_health(struct op *op)
{
	struct health_entry ents[HEALTH_MAX_ENTRIES];
	const struct cfg *cfg = op->snap->cfg;
	size_t n = 0, len = 0;
	char *body;

	if (op->be != NULL)
		n = health_get(op->be->health, ents, HEALTH_MAX_ENTRIES);
	body = xks_health_body(cfg->health.fleet_size, cfg->health.proxy_vendor,
	    cfg->health.proxy_model, cfg->health.ekm_vendor, ents, n, &len);
	op_ok(op, body, len, 0);
}

/* The load balancer check: 200 while at least one token serves. */
static void
op_lb(struct op *op)
{
	struct conn *c = op->conn;
	int ok = op->be != NULL && health_serving(op->be->health);
	const char *body = ok ? "{\"status\":\"ok\"}" : "{\"status\":\"unavailable\"}";

	c->op = NULL;
	log_debug("load balancer check from %s: %d", c->remote, ok ? 200 : 503);
	conn_respond(c, ok ? 200 : 503, "application/json", NULL, body,
	    strlen(body));
	op_free(op);
}

static int
op_is_lb_path(const struct op *op)
{
	const struct cfg *cfg = op->snap->cfg;

	return cfg->health_listen.enabled &&
	    strcmp(op->req.method, "GET") == 0 &&
	    strcmp(op->req.path, cfg->health_listen.path) == 0;
}

/* Route, authenticate, validate, and start the work of one request. */
static void
op_start(struct op *op)
{
	struct conn *c = op->conn;
	const struct cfg *cfg = op->snap->cfg;
	struct sigv4_input in;
	struct sigv4_params params;
	const struct sigv4_cred *used = NULL;
	char reason[512], msg[512];
	enum xerr e;
	size_t k;

	if (c->is_lb) {
		if (op_is_lb_path(op)) {
			op_lb(op);
			return;
		}
		op_error(op, XERR_INVALID_URI_PATH, "not the health check path");
		return;
	}
	if (op_is_lb_path(op)) {
		op_lb(op);
		return;
	}
	if (route_match(cfg, op->req.path, &op->route) != XERR_OK) {
		op_error(op, XERR_INVALID_URI_PATH, "no XKS operation at this path");
		return;
	}
	if (strcmp(op->req.method, "POST") != 0) {
		op_error(op, XERR_METHOD_NOT_ALLOWED, "only POST is allowed");
		return;
	}
	/* authentication first: before any JSON parsing or HSM work */
	k = op->route.keystore_index;
	memset(&in, 0, sizeof(in));
	in.method = op->req.method;
	in.path = op->req.path;
	in.query = op->req.query;
	in.headers = op->req.headers;
	in.nheaders = op->req.nheaders;
	in.body = op->body;
	in.body_len = op->body_len;
	memset(&params, 0, sizeof(params));
	params.service = SIGV4_SERVICE;
	params.regions = op->snap->regions[k];
	params.nregions = op->route.keystore->nregions;
	params.max_skew_seconds = cfg->sigv4.max_clock_skew_seconds;
	params.now = time(NULL);
	reason[0] = '\0';
	e = sigv4_verify(c->loop->cache, &in, op->snap->creds[k],
	    op->route.keystore->ncredentials, &params, &used, op->akid, reason,
	    sizeof(reason));
	if (e != XERR_OK) {
		op_error(op, XERR_AUTH_FAILED, reason[0] != '\0' ? reason :
		    "signature verification failed");
		return;
	}
	msg[0] = '\0';
	e = xks_parse_request(op->route.op, (const char *)op->body, op->body_len,
	    &op->snap->xlim, &op->xr, msg, sizeof(msg));
	if (e != XERR_OK) {
		op_error(op, e, msg);
		return;
	}
	if (op->route.op == XKS_OP_HEALTH) {
		op_health(op);
		return;
	}
	if (!cfg_keystore_has_key(op->route.keystore, op->route.key_id)) {
		op_error(op, XERR_KEY_NOT_FOUND, "no such key in this key store");
		return;
	}
	switch (op->route.op) {
	case XKS_OP_METADATA:
		op->stage = ST_METADATA;
		op_submit(op, HSM_OP_METADATA, NULL, 0, NULL);
		return;
	case XKS_OP_ENCRYPT:
		op->cmeta[0] = XKS_CMETA_V1;
		op->cmeta_len = 1;
		op->out_cap = op->xr.plaintext_len + 1;
		op->hsm_aad = xks_hsm_aad(op->xr.aad, op->xr.aad_len, op->cmeta,
		    op->cmeta_len, &op->hsm_aad_len);
		op->out = malloc(op->out_cap);
		op->check = malloc(op->out_cap);
		if (op->hsm_aad == NULL || op->out == NULL || op->check == NULL) {
			op_error(op, XERR_INTERNAL, "out of memory");
			return;
		}
		op->stage = ST_ENCRYPT;
		op->tries = 1;
		op_submit(op, HSM_OP_ENCRYPT, op->xr.plaintext,
		    op->xr.plaintext_len, op->out);
		return;
	case XKS_OP_DECRYPT:
		if ((e = xks_check_cmeta(op->xr.cmeta, op->xr.cmeta_len, msg,
		    sizeof(msg))) != XERR_OK) {
			op_error(op, e, msg);
			return;
		}
		op->out_cap = op->xr.ciphertext_len + 1;
		op->hsm_aad = xks_hsm_aad(op->xr.aad, op->xr.aad_len,
		    op->xr.cmeta, op->xr.cmeta_len, &op->hsm_aad_len);
		op->out = malloc(op->out_cap);
		if (op->hsm_aad == NULL || op->out == NULL) {
			op_error(op, XERR_INTERNAL, "out of memory");
			return;
		}
		memcpy(op->iv, op->xr.iv, op->xr.iv_len);
		op->iv_len = op->xr.iv_len;
		memcpy(op->tag, op->xr.tag, HSM_TAG_LEN);
		op->stage = ST_DECRYPT;
		op_submit(op, HSM_OP_DECRYPT, op->xr.ciphertext,
		    op->xr.ciphertext_len, op->out);
		return;
	default:
		op_error(op, XERR_INTERNAL, "internal state");
		return;
	}
}

/* ---------------------------------------------------------------- connections */

static void
lingerer_free(struct lingerer *g)
{
	if (g->prev != NULL)
		g->prev->next = g->next;
	else
		g->loop->lingerers = g->next;
	if (g->next != NULL)
		g->next->prev = g->prev;
	event_free(g->ev);
	evutil_closesocket(g->fd);
	free(g);
}

static void
lingerer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct lingerer *g = arg;
	char buf[4096];
	ssize_t n;

	if ((what & EV_TIMEOUT) || util_now_us() > g->deadline_us) {
		lingerer_free(g);
		return;
	}
	n = recv(fd, buf, sizeof(buf), 0);
	if (n == 0 || (n < 0 && errno != EAGAIN && errno != EINTR))
		lingerer_free(g);
}

/* Half-close fd (ours now) and drop what the peer still sends, briefly. */
static void
lingerer_start(struct loop *l, evutil_socket_t fd)
{
	struct lingerer *g = calloc(1, sizeof(*g));
	struct timeval tv = { LINGER_MS / 1000, (LINGER_MS % 1000) * 1000 };

	if (g == NULL || (g->ev = event_new(l->base, fd, EV_READ | EV_PERSIST,
	    lingerer_cb, g)) == NULL) {
		free(g);
		evutil_closesocket(fd);
		return;
	}
	g->loop = l;
	g->fd = fd;
	g->deadline_us = util_now_us() + LINGER_MS * 1000ull;
	shutdown(fd, SHUT_WR);
	g->next = l->lingerers;
	if (l->lingerers != NULL)
		l->lingerers->prev = g;
	l->lingerers = g;
	event_add(g->ev, &tv);
}

static void
conn_timer_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	(void)fd;
	(void)what;
	switch (c->state) {
	case C_HEAD:
	case C_BODY:
		log_debug("closing %s: request not received within "
		    "limits.header_timeout_ms", c->remote);
		break;
	case C_IDLE:
		log_debug("closing idle connection from %s", c->remote);
		break;
	case C_WRITE:
		log_debug("closing %s: response not read in time", c->remote);
		break;
	default:
		break;
	}
	conn_close(c);
}

/* Free the events, buffers and TLS state; close the socket (if ours). */
static void
conn_free_io(struct conn *c)
{
	if (c->rev != NULL)
		event_free(c->rev);
	if (c->wev != NULL)
		event_free(c->wev);
	if (c->timer != NULL)
		event_free(c->timer);
	SSL_free(c->ssl);
	if (c->fd >= 0)
		evutil_closesocket(c->fd);
	if (c->in != NULL)
		evbuffer_free(c->in);
	if (c->out != NULL)
		evbuffer_free(c->out);
	c->rev = c->wev = c->timer = NULL;
	c->ssl = NULL;
	c->fd = -1;
	c->in = c->out = NULL;
}

static void
conn_close(struct conn *c)
{
	struct loop *l = c->loop;

	if (c->op != NULL) {
		c->op->conn = NULL;     /* the op frees itself when its job ends */
		c->op = NULL;
	}
	conn_free_io(c);
	http_request_clear(&c->req);
	if (c->prev != NULL)
		c->prev->next = c->next;
	else
		l->conns = c->next;
	if (c->next != NULL)
		c->next->prev = c->prev;
	l->nconns--;
	atomic_fetch_sub(&srv.nconns, 1);
	if (c->counted)
		addr_release(&c->akey);
	snap_put(c->tls_snap);
	free(c);
	if (l->draining && l->nconns == 0)
		event_base_loopbreak(l->base);
}

/* ---------------------------------------------------------------- conn I/O */

/* Write out soon: in this loop iteration, from wev's callback. */
static void
conn_want_write(struct conn *c)
{
	if (!event_pending(c->wev, EV_WRITE, NULL))
		event_active(c->wev, EV_WRITE, 1);
}

/* Response written and connection to be closed: send close_notify, linger. */
static void
conn_linger(struct conn *c)
{
	if (c->ssl != NULL && c->tls_up) {
		ERR_clear_error();
		SSL_shutdown(c->ssl);
	}
	shutdown(c->fd, SHUT_WR);
	c->state = C_LINGER;
	evbuffer_drain(c->in, evbuffer_get_length(c->in));
	evbuffer_drain(c->out, evbuffer_get_length(c->out));
	event_del(c->wev);
	if (c->read_paused) {
		c->read_paused = 0;
		event_add(c->rev, NULL);
	}
	conn_arm(c, LINGER_MS);
}

/* The response is out: close, or wait for the next request. */
static void
conn_write_done(struct conn *c)
{
	if (c->close_after) {
		conn_linger(c);
		return;
	}
	http_request_clear(&c->req);
	c->have_head = 0;
	c->state = C_IDLE;
	c->last_active_us = util_now_us();
	conn_arm(c, c->tls_snap->cfg->limits.idle_timeout_ms);
	/* a loop with many connections: give the idle one's TLS buffers
	 * back (refused by OpenSSL while they hold unread data) */
	if (c->ssl != NULL && c->loop->nconns > TLS_KEEP_BUFFERS &&
	    evbuffer_get_length(c->in) == 0)
		SSL_free_buffers(c->ssl);
	if (c->read_paused && evbuffer_get_length(c->in) < c->in_max) {
		c->read_paused = 0;
		event_add(c->rev, NULL);
	}
	conn_process(c);            /* a pipelined request already read */
}

/*
 * The connection failed or the peer closed it: log what is worth it, then
 * close.  A failed handshake hands the socket to a lingerer so that our
 * alert reaches the client before the close can reset it.
 */
static void
conn_fail(struct conn *c, int tls_error)
{
	char reason[160], subject[256], buf[256];
	unsigned long e;
	int no_cert = 0;
	evutil_socket_t fd;
	struct loop *l;

	if (tls_error && c->ssl != NULL) {
		while ((e = ERR_get_error()) != 0) {
			if (ERR_GET_REASON(e) == SSL_R_PEER_DID_NOT_RETURN_A_CERTIFICATE)
				no_cert = 1;
			ERR_error_string_n(e, buf, sizeof(buf));
			log_debug("TLS error from %s: %s", c->remote, buf);
		}
		/* a client certificate is refused in the handshake only */
		if (!c->tls_up && (tls_peer_refused(c->ssl, reason,
		    sizeof(reason), subject, sizeof(subject)) || no_cert)) {
			log_fields(LOG_LVL_WARN, "client certificate refused",
			    "remote", c->remote,
			    "reason", no_cert ? "no client certificate" : reason,
			    "subject", no_cert ? "-" : subject, NULL);
		}
		if (!c->tls_up && c->fd >= 0) {
			fd = c->fd;
			c->fd = -1;         /* the lingerer closes it */
			l = c->loop;
			conn_close(c);
			lingerer_start(l, fd);
			return;
		}
	}
	ERR_clear_error();
	conn_close(c);
}

/*
 * Write what out holds.  Returns 1 when all of it is written, 0 when the
 * socket is full (wev then waits for it), -1 after a failure (c closed).
 */
static int
conn_io_flush(struct conn *c)
{
	size_t len, chunk;
	unsigned char *p;
	ssize_t n;
	int err;

	while ((len = evbuffer_get_length(c->out)) > 0) {
		/* a retried SSL_write gets the same or a longer length */
		chunk = len < 16384 ? len : 16384;
		if ((p = evbuffer_pullup(c->out, (ev_ssize_t)chunk)) == NULL) {
			conn_fail(c, 0);
			return -1;
		}
		if (c->ssl != NULL) {
			ERR_clear_error();
			n = SSL_write(c->ssl, p, (int)chunk);
			if (n > 0) {
				evbuffer_drain(c->out, (size_t)n);
				continue;
			}
			err = SSL_get_error(c->ssl, (int)n);
			if (err == SSL_ERROR_WANT_WRITE) {
				event_add(c->wev, NULL);
				return 0;
			}
			if (err == SSL_ERROR_WANT_READ) {
				/* not with renegotiation off; retried when rev
				 * fires, never by polling a writable socket */
				c->write_wants_read = 1;
				return 0;
			}
			conn_fail(c, err == SSL_ERROR_SSL);
			return -1;
		}
		n = send(c->fd, p, chunk, MSG_NOSIGNAL);
		if (n > 0) {
			evbuffer_drain(c->out, (size_t)n);
			continue;
		}
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK ||
		    errno == EINTR)) {
			event_add(c->wev, NULL);
			return 0;
		}
		conn_fail(c, 0);
		return -1;
	}
	if (event_pending(c->wev, EV_WRITE, NULL))
		event_del(c->wev);
	return 1;
}

/* Handshake step: 1 done, 0 waiting for the socket, -1 failed (c closed). */
static int
conn_io_handshake(struct conn *c)
{
	int r, err;

	ERR_clear_error();
	if ((r = SSL_do_handshake(c->ssl)) == 1) {
		c->tls_up = 1;
		if (event_pending(c->wev, EV_WRITE, NULL))
			event_del(c->wev);
		return 1;
	}
	err = SSL_get_error(c->ssl, r);
	if (err == SSL_ERROR_WANT_READ)
		return 0;
	if (err == SSL_ERROR_WANT_WRITE) {
		event_add(c->wev, NULL);
		return 0;
	}
	conn_fail(c, 1);
	return -1;
}

/*
 * Read what the socket holds into in -- through TLS with read-ahead, every
 * record that came in one read(2); SSL_has_pending() says when OpenSSL
 * holds more -- then act on it.
 */
static void
conn_io_read(struct conn *c)
{
	struct evbuffer_iovec v;
	size_t cap;
	ssize_t n;
	int err, got = 0, eof = 0, tls_err = 0;

	if (c->ssl != NULL && !c->tls_up && conn_io_handshake(c) != 1)
		return;
	if (c->write_wants_read) {
		c->write_wants_read = 0;
		conn_want_write(c);
	}
	for (;;) {
		if (c->state != C_LINGER &&
		    evbuffer_get_length(c->in) >= c->in_max) {
			/* a client sending ahead of its responses: stop reading
			 * until the input is consumed (conn_write_done) */
			event_del(c->rev);
			c->read_paused = 1;
			break;
		}
		if (evbuffer_reserve_space(c->in, 4096, &v, 1) < 1) {
			conn_fail(c, 0);
			return;
		}
		if (c->ssl != NULL) {
			ERR_clear_error();
			n = SSL_read(c->ssl, v.iov_base, (int)v.iov_len);
			if (n > 0) {
				v.iov_len = (size_t)n;
				evbuffer_commit_space(c->in, &v, 1);
				got = 1;
				if (SSL_has_pending(c->ssl))
					continue;
				break;
			}
			evbuffer_commit_space(c->in, &v, 0);
			err = SSL_get_error(c->ssl, (int)n);
			if (err == SSL_ERROR_WANT_READ)
				break;
			if (err == SSL_ERROR_WANT_WRITE) {
				c->read_wants_write = 1;
				event_add(c->wev, NULL);
				break;
			}
			/* close_notify, a close without it (allowed), or an
			 * error: the connection is over */
			eof = 1;
			tls_err = err == SSL_ERROR_SSL;
			break;
		}
		cap = v.iov_len;
		n = recv(c->fd, v.iov_base, cap, 0);
		if (n > 0) {
			v.iov_len = (size_t)n;
			evbuffer_commit_space(c->in, &v, 1);
			got = 1;
			if ((size_t)n == cap)
				continue;   /* there may be more */
			break;
		}
		evbuffer_commit_space(c->in, &v, 0);
		if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK ||
		    errno == EINTR))
			break;
		eof = 1;
		break;
	}
	if (c->state == C_LINGER) {
		evbuffer_drain(c->in, evbuffer_get_length(c->in));
		if (eof)
			conn_fail(c, tls_err);  /* logs a TLS error at debug */
		return;
	}
	if (eof) {
		/* the peer is gone (a request it sent is not answered) */
		conn_fail(c, tls_err);
		return;
	}
	if (got)
		conn_process(c);
}

static void
conn_rev_cb(evutil_socket_t fd, short what, void *arg)
{
	(void)fd;
	(void)what;
	conn_io_read(arg);
}

static void
conn_wev_cb(evutil_socket_t fd, short what, void *arg)
{
	struct conn *c = arg;

	(void)fd;
	(void)what;
	if (c->ssl != NULL && !c->tls_up) {
		if (conn_io_handshake(c) == 1)
			conn_io_read(c);    /* the request may have come with it */
		return;
	}
	if (c->read_wants_write) {
		c->read_wants_write = 0;
		if (evbuffer_get_length(c->out) == 0)
			event_del(c->wev);
		conn_io_read(c);
		return;
	}
	if (conn_io_flush(c) != 1)
		return;
	if (c->state == C_WRITE)
		conn_write_done(c);
}

/* Take what the input holds: a head, a body, then start the request. */
static void
conn_process(struct conn *c)
{
	struct evbuffer *in = c->in;
	const struct cfg *cfg = c->tls_snap->cfg;
	struct evbuffer_ptr pos;
	struct route r;
	const char *reason = NULL;
	size_t avail, headlen;
	enum xerr e;
	struct op *op;
	char *head;

	if (c->state == C_IDLE) {
		if (evbuffer_get_length(in) == 0)
			return;
		c->state = C_HEAD;
		c->req_start_us = util_now_us();
		conn_arm(c, cfg->limits.header_timeout_ms);
	}
	if (c->state == C_HEAD) {
		if (c->req_start_us == 0)
			c->req_start_us = util_now_us();
		pos = evbuffer_search(in, "\r\n\r\n", 4, NULL);
		avail = evbuffer_get_length(in);
		if (pos.pos < 0) {
			if (avail > cfg->limits.max_header_bytes)
				conn_error(c, XERR_HEADERS_TOO_LARGE,
				    "request head larger than limits.max_header_bytes");
			return;
		}
		headlen = (size_t)pos.pos + 4;
		if (headlen > cfg->limits.max_header_bytes) {
			conn_error(c, XERR_HEADERS_TOO_LARGE,
			    "request head larger than limits.max_header_bytes");
			return;
		}
		head = (char *)evbuffer_pullup(in, (ev_ssize_t)headlen);
		e = http_parse_head(head, headlen, &c->req, &reason);
		evbuffer_drain(in, headlen);
		if (e != XERR_OK) {
			conn_error(c, e, reason);
			return;
		}
		c->have_head = 1;
		if (c->req.content_length < 0) {
			if (strcmp(c->req.method, "POST") == 0) {
				conn_error(c, XERR_LENGTH_REQUIRED,
				    "Content-Length is required");
				return;
			}
			c->req.content_length = 0;
		}
		if ((unsigned long long)c->req.content_length >
		    cfg->limits.max_body_bytes) {
			/* refused before the body is read */
			conn_error(c, XERR_BODY_TOO_LARGE,
			    "request body larger than limits.max_body_bytes");
			return;
		}
		/*
		 * No signature at all on an XKS route: refuse before the body
		 * is read (only a signature check needs the body).
		 */
		if (!c->is_lb && strcmp(c->req.method, "POST") == 0 &&
		    http_request_header(&c->req, "authorization") == NULL &&
		    route_match(cfg, c->req.path, &r) == XERR_OK) {
			conn_error(c, XERR_AUTH_FAILED,
			    "no Authorization header");
			return;
		}
		if (c->req.expect_continue && c->req.content_length > 0)
		{
			evbuffer_add_printf(c->out,
			    "HTTP/1.1 100 Continue\r\n\r\n");
			conn_want_write(c);
		}
		c->state = C_BODY;
	}
	if (c->state == C_BODY) {
		if (evbuffer_get_length(in) < (size_t)c->req.content_length)
			return;
		if ((op = calloc(1, sizeof(*op))) == NULL) {
			conn_error(c, XERR_INTERNAL, "out of memory");
			return;
		}
		op->body_len = (size_t)c->req.content_length;
		/* one byte more: a NUL so the body may be read as a string */
		if ((op->body = malloc(op->body_len + 1)) == NULL) {
			free(op);
			conn_error(c, XERR_INTERNAL, "out of memory");
			return;
		}
		evbuffer_remove(in, op->body, op->body_len);
		op->body[op->body_len] = '\0';
		op->conn = c;
		op->loop = c->loop;
		op->token = -1;
		op->snap = snap_get();
		op->be = backend_get();
		/* the op works on its own copy of the head; the conn keeps the
		 * flags it needs for the response */
		op->req = c->req;
		memset(&c->req, 0, sizeof(c->req));
		c->req.keep_alive = op->req.keep_alive;
		c->req.content_length = -1;
		op->req.body = op->body;
		op->req.body_len = op->body_len;
		c->op = op;
		c->state = C_BUSY;
		event_del(c->timer);
		/* reading stays on (no epoll_ctl pair per request): what a
		 * client sends meanwhile waits in the input, bounded by the
		 * read watermark, and is parsed after the response */
		op_start(op);
	}
}

static void
addr_key_of(const struct sockaddr *sa, struct addr_key *k)
{
	memset(k, 0, sizeof(*k));
	if (sa->sa_family == AF_INET6) {
		memcpy(k->b, &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr, 16);
	} else if (sa->sa_family == AF_INET) {
		k->b[10] = 0xff;
		k->b[11] = 0xff;
		memcpy(k->b + 12, &((const struct sockaddr_in *)(const void *)sa)->sin_addr, 4);
	}
}

static unsigned
addr_hash(const struct addr_key *k)
{
	unsigned h = 2166136261u;
	size_t i;

	for (i = 0; i < sizeof(k->b); i++)
		h = (h ^ k->b[i]) * 16777619u;
	return h % ADDR_BUCKETS;
}

/*
 * Count one more connection from k unless that would exceed limit (0: no
 * limit).  Returns 0 when counted, -1 when the address is at its limit or
 * on allocation failure.
 */
static int
addr_take(const struct addr_key *k, int limit)
{
	struct addr_count *a;
	unsigned h = addr_hash(k);
	int r = -1;

	pthread_mutex_lock(&srv.addr_lock);
	for (a = srv.addrs[h]; a != NULL; a = a->next)
		if (memcmp(&a->key, k, sizeof(*k)) == 0)
			break;
	if (a == NULL) {
		if ((a = calloc(1, sizeof(*a))) == NULL)
			goto out;
		a->key = *k;
		a->next = srv.addrs[h];
		srv.addrs[h] = a;
	}
	if (limit > 0 && a->count >= limit)
		goto out;
	a->count++;
	r = 0;
 out:
	pthread_mutex_unlock(&srv.addr_lock);
	return r;
}

static void
addr_release(const struct addr_key *k)
{
	struct addr_count *a, **pp;
	unsigned h = addr_hash(k);

	pthread_mutex_lock(&srv.addr_lock);
	for (pp = &srv.addrs[h]; (a = *pp) != NULL; pp = &a->next) {
		if (memcmp(&a->key, k, sizeof(*k)) != 0)
			continue;
		if (--a->count <= 0) {
			*pp = a->next;
			free(a);
		}
		break;
	}
	pthread_mutex_unlock(&srv.addr_lock);
}

/*
 * Make room: close the idlest keep-alive connection of this loop (only from
 * address k when k is not NULL), or else the oldest one that has not sent a
 * complete request head yet (a slow or stuck client).  0 if one was closed.
 * Connections of other loops are not touched (they belong to other threads).
 */
static int
loop_shed_idlest(struct loop *l, const struct addr_key *k)
{
	struct conn *c, *best = NULL, *slow = NULL;

	for (c = l->conns; c != NULL; c = c->next) {
		if (k != NULL && memcmp(&c->akey, k, sizeof(*k)) != 0)
			continue;
		if (c->state == C_IDLE &&
		    (best == NULL || c->last_active_us < best->last_active_us))
			best = c;
		if (c->state == C_HEAD && !c->have_head &&
		    (slow == NULL || c->last_active_us < slow->last_active_us))
			slow = c;
	}
	if (best == NULL)
		best = slow;
	if (best == NULL)
		return -1;
	log_debug("connection limit: closing idle connection from %s",
	    best->remote);
	conn_close(best);
	return 0;
}

static void
conn_new(struct loop *l, evutil_socket_t fd, struct sockaddr *sa, int is_lb)
{
	struct conn *c = NULL;
	struct snap *s = snap_get();
	char host[INET6_ADDRSTRLEN] = "?", port[8] = "?";
	struct addr_key k;
	int one = 1, per = s->cfg->limits.max_connections_per_address;

	getnameinfo(sa, sa->sa_family == AF_INET6 ? sizeof(struct sockaddr_in6) :
	    sizeof(struct sockaddr_in), host, sizeof(host), port, sizeof(port),
	    NI_NUMERICHOST | NI_NUMERICSERV);
	if (atomic_load(&srv.nconns) >= s->cfg->limits.max_connections &&
	    loop_shed_idlest(l, NULL) != 0) {
		log_warn("limits.max_connections reached: refusing a connection "
		    "from %s", host);
		evutil_closesocket(fd);
		snap_put(s);
		return;
	}
	addr_key_of(sa, &k);
	if (addr_take(&k, per) != 0 &&
	    (loop_shed_idlest(l, &k) != 0 || addr_take(&k, per) != 0)) {
		log_warn("limits.max_connections_per_address reached: refusing a "
		    "connection from %s", host);
		evutil_closesocket(fd);
		snap_put(s);
		return;
	}
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	if ((c = calloc(1, sizeof(*c))) == NULL) {
		addr_release(&k);
		goto fail;
	}
	c->akey = k;
	c->counted = 1;
	snprintf(c->remote, sizeof(c->remote), "%s:%s", host, port);
	c->loop = l;
	c->tls_snap = s;
	c->is_lb = is_lb;
	c->req.content_length = -1;
	c->fd = fd;
	fd = -1;                    /* conn_close closes it from now on */
	c->in_max = s->cfg->limits.max_header_bytes +
	    s->cfg->limits.max_body_bytes + READ_SLACK;
	if (!is_lb) {
		if ((c->ssl = tls_ssl_new(s->tls)) == NULL ||
		    SSL_set_fd(c->ssl, c->fd) != 1)
			goto fail_conn;
		SSL_set_accept_state(c->ssl);
		/* a retried SSL_write may see the response at a new address */
		SSL_set_mode(c->ssl, SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER);
		/* one read(2) takes every record the client sent */
		SSL_set_read_ahead(c->ssl, 1);
	}
	if ((c->in = evbuffer_new()) == NULL ||
	    (c->out = evbuffer_new()) == NULL ||
	    (c->rev = event_new(l->base, c->fd, EV_READ | EV_PERSIST,
	    conn_rev_cb, c)) == NULL ||
	    (c->wev = event_new(l->base, c->fd, EV_WRITE, conn_wev_cb,
	    c)) == NULL ||
	    (c->timer = evtimer_new(l->base, conn_timer_cb, c)) == NULL ||
	    event_add(c->rev, NULL) != 0)
		goto fail_conn;
	c->state = C_HEAD;
	c->last_active_us = util_now_us();
	conn_arm(c, s->cfg->limits.header_timeout_ms);
	c->next = l->conns;
	if (l->conns != NULL)
		l->conns->prev = c;
	l->conns = c;
	l->nconns++;
	atomic_fetch_add(&srv.nconns, 1);
	return;
 fail_conn:
	conn_free_io(c);            /* c is not on the loop's list yet */
 fail:
	log_err("cannot set up a connection: out of memory");
	if (fd >= 0)
		evutil_closesocket(fd);
	if (c != NULL && c->counted)
		addr_release(&c->akey);
	free(c);
	snap_put(s);
}

static void
accept_cb(struct evconnlistener *lis, evutil_socket_t fd, struct sockaddr *sa,
    int salen, void *arg)
{
	(void)lis;
	(void)salen;
	conn_new(arg, fd, sa, 0);
}

static void
accept_lb_cb(struct evconnlistener *lis, evutil_socket_t fd,
    struct sockaddr *sa, int salen, void *arg)
{
	(void)lis;
	(void)salen;
	conn_new(arg, fd, sa, 1);
}

static void
accept_error_cb(struct evconnlistener *lis, void *arg)
{
	int e = EVUTIL_SOCKET_ERROR();

	(void)lis;
	(void)arg;
	/* EMFILE and friends: log, the listener keeps going */
	log_warn("accept: %s", evutil_socket_error_to_string(e));
}

/* ---------------------------------------------------------------- loops */

static void
loop_drain_cb(evutil_socket_t fd, short what, void *arg)
{
	struct loop *l = arg;
	struct conn *c, *next;
	size_t i;

	(void)fd;
	(void)what;
	l->draining = 1;
	for (i = 0; i < l->nlis; i++) {
		size_t f = (size_t)l->id * srv.nlisten + i;
		evconnlistener_free(l->lis[i]);
		l->lis[i] = NULL;
		/* stop the kernel queueing connections nobody will accept */
		close(srv.fds[f]);
		srv.fds[f] = -1;
	}
	if (l->lb_lis != NULL) {
		evconnlistener_free(l->lb_lis);
		l->lb_lis = NULL;
	}
	/* idle and half-received connections go now; busy ones finish */
	for (c = l->conns; c != NULL; c = next) {
		next = c->next;
		if (c->state == C_IDLE || (c->state == C_HEAD && !c->have_head &&
		    evbuffer_get_length(c->in) == 0))
			conn_close(c);
		else
			c->close_after = 1;
	}
	if (l->nconns == 0)
		event_base_loopbreak(l->base);
}

static void *
loop_main(void *arg)
{
	struct loop *l = arg;

	util_thread_name("xks-loop%d", l->id);
	event_base_loop(l->base, EVLOOP_NO_EXIT_ON_EMPTY);
	return NULL;
}

static int
loop_init(struct loop *l, int id)
{
	size_t i;

	l->id = id;
	pthread_mutex_init(&l->done_lock, NULL);
	if ((l->base = event_base_new()) == NULL ||
	    (l->cache = sigv4_cache_new(SIGV4_CACHE_ENTRIES)) == NULL ||
	    (l->done_ev = event_new(l->base, -1, EV_PERSIST, loop_done_cb, l)) == NULL ||
	    (l->drain_ev = event_new(l->base, -1, 0, loop_drain_cb, l)) == NULL ||
	    (l->flush_ev = event_new(l->base, -1, 0, loop_flush_cb, l)) == NULL ||
	    (l->lis = calloc(srv.nlisten, sizeof(*l->lis))) == NULL)
		return -1;
	event_add(l->done_ev, NULL);
	/* each loop accepts on its own SO_REUSEPORT sockets: the kernel
	 * spreads connections evenly over the loops */
	for (i = 0; i < srv.nlisten; i++) {
		l->lis[i] = evconnlistener_new(l->base, accept_cb, l,
		    LEV_OPT_CLOSE_ON_EXEC, -1, srv.fds[(size_t)id * srv.nlisten + i]);
		if (l->lis[i] == NULL)
			return -1;
		evconnlistener_set_error_cb(l->lis[i], accept_error_cb);
		l->nlis++;
	}
	if (srv.lb_fd >= 0 && id == 0) {
		l->lb_lis = evconnlistener_new(l->base, accept_lb_cb, l,
		    LEV_OPT_CLOSE_ON_EXEC, -1, srv.lb_fd);
		if (l->lb_lis == NULL)
			return -1;
	}
	return 0;
}

static void
loop_cleanup(struct loop *l)
{
	struct op *op, *next;
	size_t i;

	loop_flush(l);
	while (l->conns != NULL)
		conn_close(l->conns);
	while (l->lingerers != NULL)
		lingerer_free(l->lingerers);
	for (op = l->done_head; op != NULL; op = next) {
		next = op->next;
		op_free(op);
	}
	l->done_head = l->done_tail = NULL;
	for (i = 0; i < l->nlis; i++)
		if (l->lis[i] != NULL)
			evconnlistener_free(l->lis[i]);
	if (l->lb_lis != NULL)
		evconnlistener_free(l->lb_lis);
	free(l->lis);
	if (l->done_ev != NULL)
		event_free(l->done_ev);
	if (l->drain_ev != NULL)
		event_free(l->drain_ev);
	if (l->flush_ev != NULL)
		event_free(l->flush_ev);
	sigv4_cache_free(l->cache);
	if (l->base != NULL)
		event_base_free(l->base);
	pthread_mutex_destroy(&l->done_lock);
}

/* ---------------------------------------------------------------- listeners */

/*
 * A listening socket.  With reuseport, several sockets share the port (one
 * per event loop); note that another process of the same user doing the
 * same joins the group instead of failing.
 */
static int
listen_one(const char *address, int port, int reuseport, char *err,
    size_t errlen)
{
	struct addrinfo hints, *res = NULL;
	char portstr[8];
	int fd = -1, one = 1, r;

	memset(&hints, 0, sizeof(hints));
	hints.ai_family = AF_UNSPEC;
	hints.ai_socktype = SOCK_STREAM;
	hints.ai_flags = AI_PASSIVE | AI_NUMERICSERV;
	snprintf(portstr, sizeof(portstr), "%d", port);
	if ((r = getaddrinfo(address, portstr, &hints, &res)) != 0) {
		snprintf(err, errlen, "%s port %d: %s", address, port,
		    gai_strerror(r));
		return -1;
	}
	fd = socket(res->ai_family, res->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
	    res->ai_protocol);
	if (fd < 0) {
		snprintf(err, errlen, "%s port %d: socket: %s", address, port,
		    strerror(errno));
		goto out;
	}
	setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
	if (reuseport &&
	    setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)) != 0) {
		snprintf(err, errlen, "%s port %d: SO_REUSEPORT: %s", address,
		    port, strerror(errno));
		close(fd);
		fd = -1;
		goto out;
	}
	if (res->ai_family == AF_INET6)
		setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one));
	if (bind(fd, res->ai_addr, res->ai_addrlen) != 0 ||
	    listen(fd, 1024) != 0) {
		snprintf(err, errlen, "%s port %d: %s", address, port,
		    strerror(errno));
		close(fd);
		fd = -1;
	}
 out:
	freeaddrinfo(res);
	return fd;
}

/* ---------------------------------------------------------------- signals */

static void
notify(const char *state)
{
#ifdef HAVE_SYSTEMD
	sd_notify(0, state);
#else
	(void)state;
#endif
}

/* True when the listening sockets a cfg asks for differ from cur's. */
static int
listeners_differ(const struct cfg *a, const struct cfg *b)
{
	size_t i;

	if (a->nlisten != b->nlisten || a->worker_threads != b->worker_threads ||
	    a->health_listen.enabled != b->health_listen.enabled)
		return 1;
	for (i = 0; i < a->nlisten; i++)
		if (strcmp(a->listen[i].address, b->listen[i].address) != 0 ||
		    a->listen[i].port != b->listen[i].port)
			return 1;
	return a->health_listen.enabled &&
	    (strcmp(a->health_listen.address, b->health_listen.address) != 0 ||
	    a->health_listen.port != b->health_listen.port);
}

/*
 * SIGHUP, on the main thread (never an event loop): build a complete new
 * snapshot -- and a new HSM pool when hsm.* or health.* changed -- and
 * swap it in only when all of it is valid.
 */
static void
server_reload(void)
{
	const struct cfg *cur = srv.snap->cfg;
	struct backend *nbe = NULL, *oldbe = NULL;
	struct snap *s, *old;
	struct cfg *cfg = NULL;
	char err[1024], fp[sizeof(nbe->fingerprint)];
	struct timeval now = { 0, 0 };

	notify("RELOADING=1");
	log_info("reloading %s", cur->file);
	if (cfg_load(cur->file, &cfg, err, sizeof(err)) != 0) {
		log_err("reload failed, keeping the running configuration: %s",
		    err);
		notify("READY=1");
		return;
	}
	if ((s = snap_new(cfg, err, sizeof(err))) == NULL) {
		log_err("reload failed, keeping the running configuration: %s",
		    err);
		cfg_free(cfg);
		notify("READY=1");
		return;
	}
	backend_fingerprint(s->cfg, fp, sizeof(fp));
	if (strcmp(fp, srv.be->fingerprint) != 0) {
		log_info("reload: hsm/health settings changed: starting a new "
		    "HSM pool beside the running one");
		if ((nbe = backend_new(s->cfg, err, sizeof(err))) == NULL) {
			log_err("reload failed, keeping the running configuration: "
			    "%s: %s", s->cfg->file, err);
			snap_put(s);
			notify("READY=1");
			return;
		}
	}
	if (listeners_differ(s->cfg, cur))
		log_warn("reload: listen, worker_threads and health_listen "
		    "address/port changes take effect after a restart");
	log_configure(s->cfg->log.level, s->cfg->log.format);
	pthread_mutex_lock(&srv.snap_lock);
	old = srv.snap;
	srv.snap = s;
	if (nbe != NULL) {
		oldbe = srv.be;
		srv.be = nbe;
	}
	pthread_mutex_unlock(&srv.snap_lock);
	snap_put(old);
	if (oldbe != NULL) {
		/* requests in flight finish on the old pool; then it goes */
		backend_put(oldbe);
		oldbe->next = srv.retired;
		srv.retired = oldbe;
		evtimer_add(srv.retire_timer, &now);
	}
	log_info("reloaded %s", s->cfg->file);
	notify("READY=1");
}

static void
drain_tick_cb(evutil_socket_t fd, short what, void *arg)
{
	int i, busy = 0;

	(void)fd;
	(void)what;
	(void)arg;
	busy = atomic_load(&srv.nconns);
	if (busy == 0 || ++srv.drain_ticks >= DRAIN_SECONDS * 10) {
		if (busy > 0)
			log_warn("drain: %d connections still open after %d s; "
			    "closing them", busy, DRAIN_SECONDS);
		for (i = 0; i < srv.nloops; i++)
			event_base_loopbreak(srv.loops[i].base);
		event_base_loopbreak(srv.main_base);
		return;
	}
	{
		struct timeval tv = { 0, 100000 };
		evtimer_add(srv.drain_timer, &tv);
	}
}

static void
signal_cb(evutil_socket_t sig, short what, void *arg)
{
	struct timeval tv = { 0, 100000 };
	int i;

	(void)what;
	(void)arg;
	if (sig == SIGHUP) {
		if (!atomic_load(&srv.draining))
			server_reload();
		return;
	}
	if (atomic_exchange(&srv.draining, 1))
		return;
	notify("STOPPING=1");
	log_info("received %s: draining (up to %d s)",
	    sig == SIGTERM ? "SIGTERM" : "SIGINT", DRAIN_SECONDS);
	for (i = 0; i < srv.nloops; i++)
		event_active(srv.loops[i].drain_ev, EV_READ, 0);
	evtimer_add(srv.drain_timer, &tv);
}

/* ---------------------------------------------------------------- run */

int
server_check(const struct cfg *cfg)
{
	struct tls_ctx *t = NULL;
	struct hsm *h = NULL;
	struct hsm_job job;
	char err[1024];
	size_t k, i;
	int r = -1, bad = 0;

	if (tls_ctx_new(cfg, &t, err, sizeof(err)) != 0) {
		log_err("%s", err);
		bad = 1;
	}
	tls_ctx_free(t);
	if (hsm_new(&cfg->hsm, &h, err, sizeof(err)) != 0) {
		log_err("%s: %s", cfg->file, err);
		goto out;
	}
	for (i = 0; i < hsm_ntokens(h); i++) {
		memset(&job, 0, sizeof(job));
		job.op = HSM_OP_METADATA;
		job.token = (int)i;
		snprintf(job.label, sizeof(job.label), "%s", cfg->hsm.health_key);
		if (hsm_run_sync(h, &job, 5000) != XERR_OK) {
			log_err("%s: hsm.health_key: key \"%s\" on token %zu: %s "
			    "(create it: pkcs11-tool --login --keygen --key-type "
			    "AES:32 --label %s)", cfg->file, cfg->hsm.health_key,
			    i, job.errmsg, cfg->hsm.health_key);
			bad = 1;
		}
		for (k = 0; k < cfg->nkeystores; k++) {
			size_t n;
			for (n = 0; n < cfg->keystores[k].nkeys; n++) {
				memset(&job, 0, sizeof(job));
				job.op = HSM_OP_METADATA;
				job.token = (int)i;
				snprintf(job.label, sizeof(job.label), "%s",
				    cfg->keystores[k].keys[n]);
				if (hsm_run_sync(h, &job, 5000) != XERR_OK) {
					log_err("%s: keystores[%zu].keys[%zu]: key "
					    "\"%s\" on token %zu: %s", cfg->file, k,
					    n, cfg->keystores[k].keys[n], i,
					    job.errmsg);
					bad = 1;
				}
			}
		}
	}
	r = bad ? -1 : 0;
 out:
	hsm_free(h);
	return r;
}

int
server_run(struct cfg *cfg)
{
	struct event *sigs[4] = { NULL };
	static const int signums[4] = { SIGTERM, SIGINT, SIGHUP, 0 };
	struct snap *s = NULL;
	char err[1024];
	int i, n, rc = 1;
	size_t k;

	signal(SIGPIPE, SIG_IGN);
	/* before any libevent allocation: request and response bytes
	 * (Base64 plaintext, AAD) must not stay in freed buffers */
	event_set_mem_functions(srv_ev_malloc, srv_ev_realloc, srv_ev_free);
	if (evthread_use_pthreads() != 0) {
		log_err("libevent threading support unavailable");
		cfg_free(cfg);
		return 1;
	}
	if ((s = snap_new(cfg, err, sizeof(err))) == NULL) {
		log_err("%s", err);
		cfg_free(cfg);
		return 1;
	}
	srv.snap = s;
	cfg = s->cfg;
	n = cfg->worker_threads > 0 ? cfg->worker_threads : util_ncpu();
	srv.nlisten = cfg->nlisten;
	if ((srv.fds = calloc((size_t)n * cfg->nlisten, sizeof(*srv.fds))) == NULL)
		goto out;
	for (k = 0; k < (size_t)n * cfg->nlisten; k++) {
		const struct cfg_listen *li = &cfg->listen[k % cfg->nlisten];
		if ((srv.fds[k] = listen_one(li->address, li->port, 1, err,
		    sizeof(err))) < 0) {
			log_err("%s: listen[%zu]: %s", cfg->file,
			    k % cfg->nlisten, err);
			goto out;
		}
		srv.nfds++;
		if (k < cfg->nlisten)
			log_info("listening on https://%s:%d", li->address,
			    li->port);
	}
	if (cfg->health_listen.enabled) {
		if ((srv.lb_fd = listen_one(cfg->health_listen.address,
		    cfg->health_listen.port, 0, err, sizeof(err))) < 0) {
			log_err("%s: health_listen: %s", cfg->file, err);
			goto out;
		}
		log_info("load balancer check on http://%s:%d%s",
		    cfg->health_listen.address, cfg->health_listen.port,
		    cfg->health_listen.path);
	}
	if ((srv.be = backend_new(cfg, err, sizeof(err))) == NULL) {
		log_err("%s: %s", cfg->file, err);
		goto out;
	}
	if ((srv.main_base = event_base_new()) == NULL ||
	    (srv.drain_timer = evtimer_new(srv.main_base, drain_tick_cb, NULL)) == NULL ||
	    (srv.retire_timer = evtimer_new(srv.main_base, backend_reap, NULL)) == NULL)
		goto out;
	if ((srv.loops = calloc((size_t)n, sizeof(*srv.loops))) == NULL)
		goto out;
	for (i = 0; i < n; i++) {
		srv.nloops++;
		if (loop_init(&srv.loops[i], i) != 0) {
			log_err("cannot set up event loop %d", i);
			goto out;
		}
	}
	for (i = 0; signums[i] != 0; i++) {
		sigs[i] = evsignal_new(srv.main_base, signums[i], signal_cb, NULL);
		if (sigs[i] == NULL || evsignal_add(sigs[i], NULL) != 0)
			goto out;
	}
	for (i = 0; i < n; i++) {
		if (pthread_create(&srv.loops[i].thread, NULL, loop_main,
		    &srv.loops[i]) != 0) {
			log_err("cannot start event loop thread %d", i);
			n = i;
			srv.nloops = i;
			goto out;
		}
	}
	log_info("xksproxyd %s ready: %d event loops, %zu key stores",
	    PACKAGE_VERSION, n, cfg->nkeystores);
	notify("READY=1");
	event_base_dispatch(srv.main_base);
	rc = 0;
 out:
	/* stop the loops, then the HSM pools: jobs still queued are answered
	 * into the stopped loops' completion lists and freed with them */
	for (i = 0; i < srv.nloops; i++)
		if (srv.loops[i].base != NULL)
			event_base_loopbreak(srv.loops[i].base);
	for (i = 0; i < srv.nloops; i++)
		if (srv.loops[i].thread != 0)
			pthread_join(srv.loops[i].thread, NULL);
	while (srv.retired != NULL) {
		struct backend *be = srv.retired;
		srv.retired = be->next;
		backend_free(be);
	}
	backend_free(srv.be);
	srv.be = NULL;
	for (i = 0; i < srv.nloops; i++)
		loop_cleanup(&srv.loops[i]);
	free(srv.loops);
	for (i = 0; i < 4; i++)
		if (sigs[i] != NULL)
			event_free(sigs[i]);
	if (srv.drain_timer != NULL)
		event_free(srv.drain_timer);
	if (srv.retire_timer != NULL)
		event_free(srv.retire_timer);
	if (srv.main_base != NULL)
		event_base_free(srv.main_base);
	for (k = 0; k < srv.nfds; k++)
		if (srv.fds[k] >= 0)
			close(srv.fds[k]);
	free(srv.fds);
	if (srv.lb_fd >= 0)
		close(srv.lb_fd);
	snap_put(srv.snap);
	srv.snap = NULL;
	if (rc == 0)
		log_info("stopped");
	return rc;
}
