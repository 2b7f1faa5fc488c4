/*
 * hsm.c -- the PKCS#11 backend: module, tokens, worker pool, key cache.
 *
 * Threads and locks (all mutable state of a pool lives in struct hsm):
 *  - h->mu guards the queues, the idle flags of the workers, every token's
 *    healthy/epoch/slot fields and h->stop.  Never held across a PKCS#11
 *    call.
 *  - h->modlock is a writer-preferring rwlock: every thread that makes
 *    PKCS#11 calls holds it for reading; re-initializing the module (when a
 *    token is gone) takes it for writing, so no call is in flight while
 *    C_Finalize/C_Initialize run.  It is never taken twice by one thread.
 *  - t->klock guards a token's key cache; t->recover_mu serializes the
 *    recovery of one token (anchor session, login).
 *
 * Each token has an "anchor" session, opened at start and at every
 * recovery, that carries the login: PKCS#11 login state belongs to the
 * application and lasts while any of its sessions on the token is open.
 * Worker sessions are opened lazily and reopened whenever the token's epoch
 * (bumped by every recovery) or the module generation changed.
 *
 * PIN: read from pin_file (or copied from the environment) each time a
 * login is needed -- at start and when a recovery finds the token logged
 * out -- and wiped right after C_Login.  It is never kept in memory.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <p11-kit/p11-kit.h>
#include <p11-kit/pkcs11.h>
#include <p11-kit/uri.h>
/* p11-kit 0.24's pkcs11.h leaks these compatibility macros (no #undef):
 * they would rename struct hsm_job's iv_len and aad_len */
#undef iv_ptr
#undef iv_len
#undef iv_bits
#undef aad_ptr
#undef aad_len
#undef tag_bits

#include "cfg.h"
#include "hsm.h"
#include "log.h"
#include "util.h"

#define HSM_IV_LEN 12
#define HSM_KBUCKETS 64
#define HSM_MON_TICK_US 10000u  /* monitor period: queue-expiry precision */
#define HSM_RECOVER_US 1000000u    /* background recovery period */
#define HSM_IDLE_WAIT_MS 1000      /* worker wake-up fallback */
#define HSM_WAKE_US 250u           /* wake another worker past this wait */
#define HSM_SVC_INIT_US 1000u      /* service time assumed before measured */
#define HSM_REINIT_US 5000000u     /* at most one module re-init per 5 s */
#define HSM_PIN_MAX 4096

/* Pseudo error codes of the rv table: what a worker does next. */
#define HSM_RECOVER (-1)            /* session/device failure: reopen, retry */
#define HSM_REFIND  (-2)            /* stale key handle: look up again */

struct hsm_kent {
	struct hsm_kent *next;
	CK_OBJECT_HANDLE obj;
	char label[129];
};

struct hsm_queue {
	struct hsm_job *head, *tail;
};

struct hsm_token;

struct hsm_worker {
	struct hsm_token *t;
	pthread_t th;
	int started;
	pthread_cond_t cond;
	int idle;                     /* waiting on cond (h->mu) */
	int kicked;                   /* chosen by a submitter (h->mu) */
	CK_SESSION_HANDLE session;    /* CK_INVALID_HANDLE: none */
	unsigned epoch;               /* token epoch the session was opened in */
	unsigned modgen;              /* module generation of the session */
	unsigned char *scratch;       /* wiped before free / reuse */
	size_t scratch_len;
};

struct hsm_token {
	struct hsm *h;
	int idx;
	char *uri_str;
	P11KitUri *uri;
	/* h->mu */
	CK_SLOT_ID slot;
	int healthy;
	unsigned epoch;
	struct hsm_queue pinned;      /* jobs for this token only */
	struct hsm_token_info info;
	char label[33];
	/* recover_mu */
	pthread_mutex_t recover_mu;
	CK_SESSION_HANDLE anchor;
	unsigned anchor_modgen;
	/* klock */
	pthread_rwlock_t klock;
	struct hsm_kent *keys[HSM_KBUCKETS];

	struct hsm_worker *workers;
	int nworkers;
};

struct hsm {
	CK_FUNCTION_LIST *f;
	int initialized;
	char *module;
	char *pin_file;
	char *pin_env;
	enum cfg_iv iv;
	uint64_t timeout_us;
	size_t queue_size;

	pthread_mutex_t mu;
	pthread_rwlock_t modlock;
	unsigned modgen;              /* written under modlock (write) */
	uint64_t last_reinit;         /* h->mu */
	struct hsm_queue global;
	size_t queued;
	unsigned nkicked;             /* workers signalled, not yet awake */
	unsigned busy;                /* workers running a job */
	uint64_t svc_us;              /* moving average of a job's time */
	int stop;
	size_t rr;
	pthread_cond_t mon_cond;
	pthread_t mon;
	int mon_started;

	struct hsm_token *tokens;
	size_t ntokens;
};

/* ------------------------------------------------------------------ */
/* The error table: one place that decides what a CKR_* means.          */

static const struct {
	CK_RV rv;
	const char *name;
	int enc;                      /* xerr or HSM_RECOVER/HSM_REFIND */
	int dec;
} hsm_rv_table[] = {
	{ CKR_KEY_FUNCTION_NOT_PERMITTED, "CKR_KEY_FUNCTION_NOT_PERMITTED",
	    XERR_INVALID_KEY_USAGE, XERR_INVALID_KEY_USAGE },
	{ CKR_KEY_TYPE_INCONSISTENT, "CKR_KEY_TYPE_INCONSISTENT",
	    XERR_INVALID_KEY_USAGE, XERR_INVALID_KEY_USAGE },
	{ CKR_ENCRYPTED_DATA_INVALID, "CKR_ENCRYPTED_DATA_INVALID",
	    XERR_INTERNAL, XERR_INVALID_CIPHERTEXT },
	{ CKR_ENCRYPTED_DATA_LEN_RANGE, "CKR_ENCRYPTED_DATA_LEN_RANGE",
	    XERR_INTERNAL, XERR_INVALID_CIPHERTEXT },
	/* SoftHSMv2 answers a failed GCM tag check with CKR_GENERAL_ERROR */
	{ CKR_GENERAL_ERROR, "CKR_GENERAL_ERROR",
	    HSM_RECOVER, XERR_INVALID_CIPHERTEXT },
	{ CKR_DATA_LEN_RANGE, "CKR_DATA_LEN_RANGE",
	    XERR_VALIDATION, XERR_INVALID_CIPHERTEXT },
	{ CKR_OBJECT_HANDLE_INVALID, "CKR_OBJECT_HANDLE_INVALID",
	    HSM_REFIND, HSM_REFIND },
	{ CKR_KEY_HANDLE_INVALID, "CKR_KEY_HANDLE_INVALID",
	    HSM_REFIND, HSM_REFIND },
	{ CKR_SESSION_HANDLE_INVALID, "CKR_SESSION_HANDLE_INVALID",
	    HSM_RECOVER, HSM_RECOVER },
	{ CKR_SESSION_CLOSED, "CKR_SESSION_CLOSED", HSM_RECOVER, HSM_RECOVER },
	{ CKR_USER_NOT_LOGGED_IN, "CKR_USER_NOT_LOGGED_IN",
	    HSM_RECOVER, HSM_RECOVER },
	{ CKR_DEVICE_ERROR, "CKR_DEVICE_ERROR", HSM_RECOVER, HSM_RECOVER },
	{ CKR_DEVICE_REMOVED, "CKR_DEVICE_REMOVED", HSM_RECOVER, HSM_RECOVER },
	{ CKR_DEVICE_MEMORY, "CKR_DEVICE_MEMORY", HSM_RECOVER, HSM_RECOVER },
	{ CKR_TOKEN_NOT_PRESENT, "CKR_TOKEN_NOT_PRESENT",
	    HSM_RECOVER, HSM_RECOVER },
	{ CKR_TOKEN_NOT_RECOGNIZED, "CKR_TOKEN_NOT_RECOGNIZED",
	    HSM_RECOVER, HSM_RECOVER },
	{ CKR_SLOT_ID_INVALID, "CKR_SLOT_ID_INVALID", HSM_RECOVER, HSM_RECOVER },
	{ CKR_CRYPTOKI_NOT_INITIALIZED, "CKR_CRYPTOKI_NOT_INITIALIZED",
	    HSM_RECOVER, HSM_RECOVER },
	/* a session left with an operation active is reopened */
	{ CKR_OPERATION_ACTIVE, "CKR_OPERATION_ACTIVE",
	    HSM_RECOVER, HSM_RECOVER },
	/* names only, for messages: everything else answers XERR_INTERNAL */
	{ CKR_OK, "CKR_OK", XERR_OK, XERR_OK },
	{ CKR_HOST_MEMORY, "CKR_HOST_MEMORY", XERR_INTERNAL, XERR_INTERNAL },
	{ CKR_FUNCTION_FAILED, "CKR_FUNCTION_FAILED",
	    XERR_INTERNAL, XERR_INTERNAL },
	{ CKR_ARGUMENTS_BAD, "CKR_ARGUMENTS_BAD", XERR_INTERNAL, XERR_INTERNAL },
	{ CKR_MECHANISM_INVALID, "CKR_MECHANISM_INVALID",
	    XERR_INTERNAL, XERR_INTERNAL },
	{ CKR_MECHANISM_PARAM_INVALID, "CKR_MECHANISM_PARAM_INVALID",
	    XERR_INTERNAL, XERR_INTERNAL },
	{ CKR_BUFFER_TOO_SMALL, "CKR_BUFFER_TOO_SMALL",
	    XERR_INTERNAL, XERR_INTERNAL },
	{ CKR_KEY_SIZE_RANGE, "CKR_KEY_SIZE_RANGE", XERR_INTERNAL, XERR_INTERNAL },
	{ CKR_PIN_INCORRECT, "CKR_PIN_INCORRECT", XERR_INTERNAL, XERR_INTERNAL },
	{ CKR_PIN_LOCKED, "CKR_PIN_LOCKED", XERR_INTERNAL, XERR_INTERNAL },
	{ CKR_PIN_EXPIRED, "CKR_PIN_EXPIRED", XERR_INTERNAL, XERR_INTERNAL },
	{ CKR_USER_ALREADY_LOGGED_IN, "CKR_USER_ALREADY_LOGGED_IN",
	    XERR_INTERNAL, XERR_INTERNAL },
	{ CKR_USER_PIN_NOT_INITIALIZED, "CKR_USER_PIN_NOT_INITIALIZED",
	    XERR_INTERNAL, XERR_INTERNAL },
	{ CKR_SESSION_COUNT, "CKR_SESSION_COUNT", XERR_INTERNAL, XERR_INTERNAL },
	{ CKR_ATTRIBUTE_TYPE_INVALID, "CKR_ATTRIBUTE_TYPE_INVALID",
	    XERR_INTERNAL, XERR_INTERNAL },
	{ CKR_ATTRIBUTE_SENSITIVE, "CKR_ATTRIBUTE_SENSITIVE",
	    XERR_INTERNAL, XERR_INTERNAL },
	{ CKR_CRYPTOKI_ALREADY_INITIALIZED, "CKR_CRYPTOKI_ALREADY_INITIALIZED",
	    XERR_INTERNAL, XERR_INTERNAL },
	{ CKR_FUNCTION_NOT_SUPPORTED, "CKR_FUNCTION_NOT_SUPPORTED",
	    XERR_INTERNAL, XERR_INTERNAL },
};

/* Name of a return value (static, or in buf for unknown values). */
static const char *
hsm_rv_name(CK_RV rv, char *buf, size_t len)
{
	size_t i;

	for (i = 0; i < sizeof(hsm_rv_table) / sizeof(hsm_rv_table[0]); i++)
		if (hsm_rv_table[i].rv == rv)
			return hsm_rv_table[i].name;
	snprintf(buf, len, "CKR_0x%08lx", (unsigned long)rv);
	return buf;
}

/* What rv means for op: an xerr, HSM_RECOVER or HSM_REFIND. */
static int
hsm_rv_class(CK_RV rv, enum hsm_op op)
{
	size_t i;

	for (i = 0; i < sizeof(hsm_rv_table) / sizeof(hsm_rv_table[0]); i++)
		if (hsm_rv_table[i].rv == rv)
			return op == HSM_OP_DECRYPT ? hsm_rv_table[i].dec :
			    hsm_rv_table[i].enc;
	return XERR_INTERNAL;
}

/* ------------------------------------------------------------------ */
/* Small helpers.                                                       */

/* A space-padded PKCS#11 string as a C string, sanitized. */
static void
hsm_pstr(const unsigned char *s, size_t max, char *out, size_t outlen)
{
	size_t n = p11_kit_space_strlen(s, max);

	util_sanitize((const char *)s, n, out, outlen);
}

static uint64_t
hsm_ts_us(const struct timespec *ts)
{
	return (uint64_t)ts->tv_sec * 1000000u + (uint64_t)ts->tv_nsec / 1000u;
}

/* Absolute CLOCK_MONOTONIC time us from now, for timed waits. */
static void
hsm_deadline(struct timespec *ts, uint64_t abs_us)
{
	ts->tv_sec = (time_t)(abs_us / 1000000u);
	ts->tv_nsec = (long)(abs_us % 1000000u) * 1000;
}

static int
hsm_cond_init(pthread_cond_t *c)
{
	pthread_condattr_t a;
	int r;

	pthread_condattr_init(&a);
	pthread_condattr_setclock(&a, CLOCK_MONOTONIC);
	r = pthread_cond_init(c, &a);
	pthread_condattr_destroy(&a);
	return r;
}

static void
hsm_q_push(struct hsm_queue *q, struct hsm_job *j)
{
	j->next = NULL;
	if (q->tail != NULL)
		q->tail->next = j;
	else
		q->head = j;
	q->tail = j;
}

static void
hsm_q_push_front(struct hsm_queue *q, struct hsm_job *j)
{
	j->next = q->head;
	q->head = j;
	if (q->tail == NULL)
		q->tail = j;
}

static struct hsm_job *
hsm_q_pop(struct hsm_queue *q)
{
	struct hsm_job *j = q->head;

	if (j != NULL) {
		q->head = j->next;
		if (q->head == NULL)
			q->tail = NULL;
		j->next = NULL;
	}
	return j;
}

static void
hsm_job_fail(struct hsm_job *job, enum xerr e, const char *msg)
{
	job->err = e;
	snprintf(job->errmsg, sizeof(job->errmsg), "%s", msg);
}

/* Finish a job: exactly one call of done() per accepted job. */
static void
hsm_job_finish(struct hsm_job *job)
{
	job->next = NULL;
	job->done(job);
}

/*
 * The PIN, freshly read: from pin_file, or copied from the environment.
 * The caller wipes it with wipe_free(pin, len + 1).
 */
static int
hsm_pin_get(struct hsm *h, unsigned char **pin, size_t *len, char *err,
    size_t errlen)
{
	const char *e;

	*pin = NULL;
	*len = 0;
	if (h->pin_file != NULL) {
		if (util_read_file(h->pin_file, HSM_PIN_MAX, 1, pin, len, err,
		    errlen) != 0)
			return -1;
		*len = util_rstrip(*pin, *len);
		return 0;
	}
	if (h->pin_env == NULL || (e = getenv(h->pin_env)) == NULL) {
		snprintf(err, errlen, "hsm.pin_env: environment variable %s "
		    "is not set", h->pin_env != NULL ? h->pin_env : "(none)");
		return -1;
	}
	*len = strlen(e);
	if ((*pin = malloc(*len + 1)) == NULL) {
		snprintf(err, errlen, "out of memory");
		*len = 0;
		return -1;
	}
	memcpy(*pin, e, *len + 1);
	return 0;
}

/* ------------------------------------------------------------------ */
/* Token discovery, login, recovery.                                    */

/*
 * Find the one slot whose token matches t->uri.  Returns 1 and *slot, 0 if
 * none, 2 if more than one, -1 with *rv on a module error.  Caller holds
 * modlock.
 */
static int
hsm_find_slot(struct hsm *h, struct hsm_token *t, CK_SLOT_ID *slot, CK_RV *rv,
    CK_TOKEN_INFO *info)
{
	CK_SLOT_ID *slots = NULL;
	CK_ULONG n = 0, i;
	CK_TOKEN_INFO ti;
	int found = 0, r = -1;

	*rv = h->f->C_GetSlotList(CK_TRUE, NULL, &n);
	if (*rv != CKR_OK)
		goto out;
	if (n == 0) {
		r = 0;
		goto out;
	}
	if ((slots = calloc(n, sizeof(*slots))) == NULL) {
		*rv = CKR_HOST_MEMORY;
		goto out;
	}
	*rv = h->f->C_GetSlotList(CK_TRUE, slots, &n);
	if (*rv != CKR_OK)
		goto out;
	for (i = 0; i < n; i++) {
		if (h->f->C_GetTokenInfo(slots[i], &ti) != CKR_OK)
			continue;
		if (p11_kit_uri_match_token_info(t->uri, &ti) == 1) {
			if (found++ == 0) {
				*slot = slots[i];
				if (info != NULL)
					*info = ti;
			}
		}
	}
	r = found > 1 ? 2 : found;
 out:
	free(slots);
	return r;
}

/* Fill t->info and t->label from token info (h->mu not needed at start). */
static void
hsm_token_describe(struct hsm_token *t, const CK_TOKEN_INFO *ti)
{
	char label[33], serial[17], manuf[33], model[17];

	hsm_pstr(ti->label, sizeof(ti->label), label, sizeof(label));
	hsm_pstr(ti->serialNumber, sizeof(ti->serialNumber), serial,
	    sizeof(serial));
	hsm_pstr(ti->manufacturerID, sizeof(ti->manufacturerID), manuf,
	    sizeof(manuf));
	hsm_pstr(ti->model, sizeof(ti->model), model, sizeof(model));
	snprintf(t->label, sizeof(t->label), "%s", label);
	snprintf(t->info.id, sizeof(t->info.id), "%s/%s", label, serial);
	snprintf(t->info.model, sizeof(t->info.model), "%s %s fw %u.%u",
	    manuf, model, ti->firmwareVersion.major, ti->firmwareVersion.minor);
}

/*
 * Open a session on slot and make sure the user is logged in (reading the
 * PIN only when needed).  Caller holds modlock.
 */
static CK_RV
hsm_open_login(struct hsm *h, struct hsm_token *t, CK_SLOT_ID slot,
    CK_SESSION_HANDLE *out, char *err, size_t errlen)
{
	CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
	CK_SESSION_INFO si;
	unsigned char *pin = NULL;
	size_t pinlen = 0;
	char nb[32];
	CK_RV rv;

	*out = CK_INVALID_HANDLE;
	rv = h->f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION,
	    NULL, NULL, &s);
	if (rv != CKR_OK) {
		snprintf(err, errlen, "C_OpenSession on token %s: %s",
		    t->label, hsm_rv_name(rv, nb, sizeof(nb)));
		goto out;
	}
	rv = h->f->C_GetSessionInfo(s, &si);
	if (rv != CKR_OK) {
		snprintf(err, errlen, "C_GetSessionInfo on token %s: %s",
		    t->label, hsm_rv_name(rv, nb, sizeof(nb)));
		goto out;
	}
	if (si.state == CKS_RO_USER_FUNCTIONS ||
	    si.state == CKS_RW_USER_FUNCTIONS) {
		*out = s;
		s = CK_INVALID_HANDLE;
		goto out;
	}
	if (hsm_pin_get(h, &pin, &pinlen, err, errlen) != 0) {
		rv = CKR_PIN_INCORRECT;
		goto out;
	}
	rv = h->f->C_Login(s, CKU_USER, pin, pinlen);
	wipe_free(pin, pinlen + 1);
	pin = NULL;
	if (rv == CKR_USER_ALREADY_LOGGED_IN)
		rv = CKR_OK;
	if (rv != CKR_OK) {
		snprintf(err, errlen, "C_Login on token %s: %s", t->label,
		    hsm_rv_name(rv, nb, sizeof(nb)));
		goto out;
	}
	*out = s;
	s = CK_INVALID_HANDLE;
 out:
	if (s != CK_INVALID_HANDLE)
		h->f->C_CloseSession(s);
	return rv;
}

static void
hsm_cache_clear(struct hsm_token *t)
{
	struct hsm_kent *e, *n;
	size_t i;

	pthread_rwlock_wrlock(&t->klock);
	for (i = 0; i < HSM_KBUCKETS; i++) {
		for (e = t->keys[i]; e != NULL; e = n) {
			n = e->next;
			free(e);
		}
		t->keys[i] = NULL;
	}
	pthread_rwlock_unlock(&t->klock);
}

/*
 * Workers chosen under h->mu are signalled after it is released
 * (hsm_unlock_wake): a worker signalled while the lock is held wakes only
 * to block on the lock again -- two more context switches.  Safe: a
 * worker marked kicked is counted in nkicked and, if its signal comes
 * after a timeout, finds the queue on its own.
 */
#define HSM_SIG_MAX 16
struct hsm_sig {
	pthread_cond_t *c[HSM_SIG_MAX];
	int n;
};

/* Wake worker w, which is idle and not yet kicked (h->mu held). */
static void
hsm_wake_locked(struct hsm *h, struct hsm_worker *w, struct hsm_sig *sig)
{
	w->kicked = 1;
	h->nkicked++;
	if (sig != NULL && sig->n < HSM_SIG_MAX)
		sig->c[sig->n++] = &w->cond;
	else
		pthread_cond_signal(&w->cond);
}

/* Release h->mu, then signal the workers chosen while it was held. */
static void
hsm_unlock_wake(struct hsm *h, struct hsm_sig *sig)
{
	int i;

	pthread_mutex_unlock(&h->mu);
	for (i = 0; i < sig->n; i++)
		pthread_cond_signal(sig->c[i]);
	sig->n = 0;
}

/* Kick an idle worker of a healthy token for a global job (h->mu held). */
static void
hsm_kick_global_locked(struct hsm *h, struct hsm_sig *sig)
{
	size_t k, n = h->ntokens;
	int i;

	for (k = 0; k < n; k++) {
		struct hsm_token *t = &h->tokens[(h->rr + k) % n];
		if (!t->healthy)
			continue;
		for (i = 0; i < t->nworkers; i++) {
			struct hsm_worker *w = &t->workers[i];
			if (w->idle && !w->kicked) {
				hsm_wake_locked(h, w, sig);
				h->rr = (h->rr + k + 1) % n;
				return;
			}
		}
	}
}

/*
 * How many more workers should wake for the global jobs waiting?  (h->mu
 * held.)  A wake-up costs a context switch or two -- about as much as a
 * fast HSM's whole job -- so workers are woken only as far as the jobs
 * waiting would otherwise wait longer than HSM_WAKE_US: with the measured
 * service time S, Q jobs queued need ceil(Q x S / HSM_WAKE_US) workers
 * (never more than Q plus the busy ones), and the busy workers and those
 * already woken count.  A fast token (SoftHSM: ~20 us a job) is then
 * drained by one worker that does not sleep between jobs; a slow one
 * (network HSM: ~1 ms) gets a worker per waiting job, up to
 * sessions_per_token.  The average says nothing about a call that hangs
 * now: when the oldest job has already waited HSM_WAKE_US and nobody is
 * on the way, one more worker is woken regardless -- on the next submit,
 * or at the monitor's next tick -- so one stuck session never holds up
 * the jobs that idle sessions could run.
 */
static unsigned
hsm_wakes_wanted_locked(const struct hsm *h)
{
	uint64_t need, have;

	if (h->global.head == NULL)
		return 0;
	need = ((uint64_t)h->queued * h->svc_us + HSM_WAKE_US - 1) /
	    HSM_WAKE_US;
	if (need > h->queued + h->busy)
		need = h->queued + h->busy;
	if (need < 1)
		need = 1;
	have = (uint64_t)h->busy + h->nkicked;
	if (need <= have && h->nkicked == 0 && util_now_us() -
	    hsm_ts_us(&h->global.head->enqueued) > HSM_WAKE_US)
		need = have + 1;
	return need > have ? (unsigned)(need - have) : 0;
}

/* Wake as many idle workers as hsm_wakes_wanted_locked() says. */
static void
hsm_wake_wanted_locked(struct hsm *h, struct hsm_sig *sig)
{
	unsigned n = hsm_wakes_wanted_locked(h);
	unsigned k0;

	while (n-- > 0) {
		k0 = h->nkicked;
		hsm_kick_global_locked(h, sig);
		if (h->nkicked == k0)
			break;              /* no idle worker left */
	}
}

/* Kick an idle worker of token t for a pinned job (h->mu held). */
static void
hsm_kick_token_locked(struct hsm_token *t, struct hsm_sig *sig)
{
	int i;

	for (i = 0; i < t->nworkers; i++) {
		struct hsm_worker *w = &t->workers[i];
		if (w->idle && !w->kicked) {
			hsm_wake_locked(t->h, w, sig);
			return;
		}
	}
}

/* Mark a token failed: no new global jobs until it recovered. */
static void
hsm_token_fail(struct hsm_token *t, const char *why)
{
	struct hsm *h = t->h;
	int was;

	pthread_mutex_lock(&h->mu);
	was = t->healthy;
	t->healthy = 0;
	t->info.healthy = 0;
	pthread_mutex_unlock(&h->mu);
	if (was)
		log_warn("hsm: token %s failed (%s); recovering",
		    t->info.id, why);
}

/*
 * Finalize and initialize the module again (every session is gone after
 * it); all tokens are marked failed so that they recover.
 */
static void
hsm_module_reinit(struct hsm *h)
{
	char nb[32];
	CK_RV rv;
	size_t i;

	pthread_rwlock_wrlock(&h->modlock);
	log_warn("hsm: re-initializing module %s", h->module);
	if (h->initialized)
		p11_kit_module_finalize(h->f);
	h->initialized = 0;
	h->modgen++;
	rv = p11_kit_module_initialize(h->f);
	if (rv == CKR_OK)
		h->initialized = 1;
	else
		log_err("hsm: module %s: C_Initialize: %s", h->module,
		    hsm_rv_name(rv, nb, sizeof(nb)));
	pthread_mutex_lock(&h->mu);
	for (i = 0; i < h->ntokens; i++) {
		h->tokens[i].healthy = 0;
		h->tokens[i].info.healthy = 0;
		h->tokens[i].epoch++;
	}
	pthread_mutex_unlock(&h->mu);
	pthread_rwlock_unlock(&h->modlock);
}

/*
 * Whether to re-initialize the module for a token that cannot be found:
 * always when the module says it is not initialized; when the token (or
 * the slot list) is gone only if no token is healthy -- a re-initialization
 * closes every session of every token -- and at most every 5 s.
 */
static int
hsm_reinit_wanted(struct hsm *h, CK_RV rv, CK_RV rv_list)
{
	uint64_t now = util_now_us();
	size_t i;
	int any = 0, r = 0;

	if (rv == CKR_CRYPTOKI_NOT_INITIALIZED ||
	    rv_list == CKR_CRYPTOKI_NOT_INITIALIZED)
		return 1;
	pthread_mutex_lock(&h->mu);
	for (i = 0; i < h->ntokens; i++)
		any |= h->tokens[i].healthy;
	if (!any && now - h->last_reinit >= HSM_REINIT_US) {
		h->last_reinit = now;
		r = 1;
	}
	pthread_mutex_unlock(&h->mu);
	return r;
}

/*
 * Bring a failed token back: find its slot (again), open a fresh anchor
 * session, log in when needed, bump the epoch so that workers reopen their
 * sessions, clear the key cache.  Re-initializes the module when the token
 * or the module is gone.  Returns 0 when the token is healthy again.
 */
static int
hsm_token_recover(struct hsm_token *t)
{
	struct hsm *h = t->h;
	CK_SESSION_HANDLE s = CK_INVALID_HANDLE;
	CK_TOKEN_INFO ti;
	CK_SLOT_ID slot;
	CK_RV rv;
	char err[256], nb[32];
	int r = -1, found, reinit_done = 0, locked = 0;

	pthread_mutex_lock(&t->recover_mu);
 again:
	pthread_rwlock_rdlock(&h->modlock);
	locked = 1;
	pthread_mutex_lock(&h->mu);
	slot = t->slot;
	pthread_mutex_unlock(&h->mu);
	rv = h->initialized ? h->f->C_GetTokenInfo(slot, &ti) :
	    CKR_CRYPTOKI_NOT_INITIALIZED;
	if (rv != CKR_OK || p11_kit_uri_match_token_info(t->uri, &ti) != 1) {
		CK_RV rv2 = CKR_CRYPTOKI_NOT_INITIALIZED;
		found = h->initialized ?
		    hsm_find_slot(h, t, &slot, &rv2, NULL) : -1;
		if (found != 1) {
			if (!reinit_done && hsm_reinit_wanted(h, rv,
			    found == -1 ? rv2 : CKR_OK)) {
				pthread_rwlock_unlock(&h->modlock);
				locked = 0;
				hsm_module_reinit(h);
				reinit_done = 1;
				goto again;
			}
			log_debug("hsm: token %s still unavailable (%s)",
			    t->info.id, hsm_rv_name(rv, nb, sizeof(nb)));
			goto out;
		}
	}
	rv = hsm_open_login(h, t, slot, &s, err, sizeof(err));
	if (rv != CKR_OK) {
		log_debug("hsm: token %s: recovery: %s", t->info.id, err);
		goto out;
	}
	if (t->anchor != CK_INVALID_HANDLE && t->anchor_modgen == h->modgen)
		h->f->C_CloseSession(t->anchor);
	t->anchor = s;
	t->anchor_modgen = h->modgen;
	s = CK_INVALID_HANDLE;
	hsm_cache_clear(t);
	pthread_mutex_lock(&h->mu);
	t->slot = slot;
	t->epoch++;
	if (!t->healthy)
		log_info("hsm: token %s recovered", t->info.id);
	t->healthy = 1;
	t->info.healthy = 1;
	/* wake workers for jobs that waited while no token was healthy */
	if (h->global.head != NULL) {
		int i;
		for (i = 0; i < t->nworkers; i++)
			hsm_kick_global_locked(h, NULL);
	}
	pthread_mutex_unlock(&h->mu);
	r = 0;
 out:
	if (locked)
		pthread_rwlock_unlock(&h->modlock);
	pthread_mutex_unlock(&t->recover_mu);
	return r;
}

/* ------------------------------------------------------------------ */
/* Key cache.                                                           */

static size_t
hsm_khash(const char *s)
{
	uint32_t x = 2166136261u;

	for (; *s != '\0'; s++)
		x = (x ^ (unsigned char)*s) * 16777619u;
	return x % HSM_KBUCKETS;
}

static int
hsm_cache_get(struct hsm_token *t, const char *label, CK_OBJECT_HANDLE *obj)
{
	struct hsm_kent *e;
	int r = 0;

	pthread_rwlock_rdlock(&t->klock);
	for (e = t->keys[hsm_khash(label)]; e != NULL; e = e->next)
		if (strcmp(e->label, label) == 0) {
			*obj = e->obj;
			r = 1;
			break;
		}
	pthread_rwlock_unlock(&t->klock);
	return r;
}

static void
hsm_cache_put(struct hsm_token *t, const char *label, CK_OBJECT_HANDLE obj)
{
	struct hsm_kent *e, **b = &t->keys[hsm_khash(label)];

	pthread_rwlock_wrlock(&t->klock);
	for (e = *b; e != NULL; e = e->next)
		if (strcmp(e->label, label) == 0) {
			e->obj = obj;
			goto out;
		}
	if ((e = calloc(1, sizeof(*e))) == NULL)
		goto out;
	snprintf(e->label, sizeof(e->label), "%s", label);
	e->obj = obj;
	e->next = *b;
	*b = e;
 out:
	pthread_rwlock_unlock(&t->klock);
}

static void
hsm_cache_drop(struct hsm_token *t, const char *label)
{
	struct hsm_kent *e, **p;

	pthread_rwlock_wrlock(&t->klock);
	for (p = &t->keys[hsm_khash(label)]; (e = *p) != NULL; p = &e->next)
		if (strcmp(e->label, label) == 0) {
			*p = e->next;
			free(e);
			break;
		}
	pthread_rwlock_unlock(&t->klock);
}

/* ------------------------------------------------------------------ */
/* Workers.                                                             */

/* Outcome of one attempt of a job on a worker's session. */
enum hsm_outcome { HSM_DONE = 0, HSM_FAILED_SESSION };

static void
hsm_job_rv_msg(struct hsm_job *job, const struct hsm_token *t, CK_RV rv)
{
	char nb[32];

	snprintf(job->errmsg, sizeof(job->errmsg), "HSM error %s on token %s",
	    hsm_rv_name(rv, nb, sizeof(nb)), t->label);
}

static int
hsm_scratch(struct hsm_worker *w, size_t need)
{
	unsigned char *p;

	if (w->scratch_len >= need)
		return 0;
	if ((p = malloc(need)) == NULL)
		return -1;
	wipe_free(w->scratch, w->scratch_len);
	w->scratch = p;
	w->scratch_len = need;
	return 0;
}

/* Look up a key by label (3 calls); sets job->err on failure. */
static CK_RV
hsm_find_key(struct hsm_worker *w, struct hsm_job *job, CK_OBJECT_HANDLE *obj)
{
	struct hsm *h = w->t->h;
	CK_OBJECT_CLASS cls = CKO_SECRET_KEY;
	CK_KEY_TYPE kt = CKK_AES;
	CK_ATTRIBUTE tmpl[] = {
		{ CKA_CLASS, &cls, sizeof(cls) },
		{ CKA_KEY_TYPE, &kt, sizeof(kt) },
		{ CKA_LABEL, job->label, strlen(job->label) },
	};
	CK_OBJECT_HANDLE found[2];
	CK_ULONG n = 0;
	CK_RV rv;

	rv = h->f->C_FindObjectsInit(w->session, tmpl, 3);
	if (rv != CKR_OK)
		return rv;
	rv = h->f->C_FindObjects(w->session, found, 2, &n);
	h->f->C_FindObjectsFinal(w->session);
	if (rv != CKR_OK)
		return rv;
	if (n == 0) {
		char lb[129];
		util_sanitize(job->label, sizeof(job->label), lb, sizeof(lb));
		job->err = XERR_KEY_NOT_FOUND;
		snprintf(job->errmsg, sizeof(job->errmsg),
		    "no AES key labelled %.128s on the HSM", lb);
		return CKR_OK;
	}
	if (n > 1) {
		char lb[129];
		util_sanitize(job->label, sizeof(job->label), lb, sizeof(lb));
		log_err("hsm: two keys labelled %s on token %s; refusing to "
		    "guess", lb, w->t->info.id);
		job->err = XERR_INTERNAL;
		snprintf(job->errmsg, sizeof(job->errmsg),
		    "two keys labelled %.64s on token %.32s", lb, w->t->label);
		return CKR_OK;
	}
	*obj = found[0];
	hsm_cache_put(w->t, job->label, found[0]);
	return CKR_OK;
}

/* Today as "YYYYMMDD" (UTC). */
static void
hsm_today(char out[9])
{
	time_t now = time(NULL);
	struct tm tm;

	gmtime_r(&now, &tm);
	if (strftime(out, 9, "%Y%m%d", &tm) != 8)
		memcpy(out, "00000000", 9);
}

static int
hsm_date_set(const CK_ATTRIBUTE *a, char out[9])
{
	const unsigned char *p = a->pValue;
	size_t i;

	if (a->ulValueLen != sizeof(CK_DATE))
		return 0;
	for (i = 0; i < 8; i++)
		if (p[i] < '0' || p[i] > '9')
			return 0;
	memcpy(out, p, 8);
	out[8] = '\0';
	return 1;
}

/* One call: C_GetAttributeValue with every attribute KMS needs. */
static CK_RV
hsm_do_metadata(struct hsm_worker *w, struct hsm_job *job,
    CK_OBJECT_HANDLE key)
{
	struct hsm *h = w->t->h;
	CK_KEY_TYPE kt = 0;
	CK_ULONG vlen = 0;
	CK_BBOOL b[7] = { 0 };
	CK_DATE sd, ed;
	CK_ATTRIBUTE a[] = {
		{ CKA_KEY_TYPE, &kt, sizeof(kt) },
		{ CKA_VALUE_LEN, &vlen, sizeof(vlen) },
		{ CKA_ENCRYPT, &b[0], 1 },
		{ CKA_DECRYPT, &b[1], 1 },
		{ CKA_WRAP, &b[2], 1 },
		{ CKA_UNWRAP, &b[3], 1 },
		{ CKA_SIGN, &b[4], 1 },
		{ CKA_VERIFY, &b[5], 1 },
		{ CKA_DERIVE, &b[6], 1 },
		{ CKA_START_DATE, &sd, sizeof(sd) },
		{ CKA_END_DATE, &ed, sizeof(ed) },
	};
	static const unsigned bits[7] = {
		HSM_USAGE_ENCRYPT, HSM_USAGE_DECRYPT, HSM_USAGE_WRAP,
		HSM_USAGE_UNWRAP, HSM_USAGE_SIGN, HSM_USAGE_VERIFY,
		HSM_USAGE_DERIVE,
	};
	CK_ULONG na = sizeof(a) / sizeof(a[0]);
	char today[9], d[9];
	CK_RV rv;
	size_t i;

	rv = h->f->C_GetAttributeValue(w->session, key, a, na);
	if (rv != CKR_OK && rv != CKR_ATTRIBUTE_TYPE_INVALID &&
	    rv != CKR_ATTRIBUTE_SENSITIVE) {
		char nb[32], lb[129];
		/*
		 * SoftHSMv2 2.6 fails (CKR_GENERAL_ERROR) to read the dates of
		 * a private object: read the rest, report the dates unset.
		 */
		if (rv == CKR_GENERAL_ERROR || rv == CKR_FUNCTION_FAILED) {
			na -= 2;
			a[9].ulValueLen = a[10].ulValueLen = 0;
			if (h->f->C_GetAttributeValue(w->session, key, a, na) ==
			    CKR_OK) {
				util_sanitize(job->label, sizeof(job->label),
				    lb, sizeof(lb));
				log_warn("hsm: cannot read CKA_START_DATE/"
				    "CKA_END_DATE of key %s on token %s (%s); "
				    "reporting it ENABLED", lb, w->t->info.id,
				    hsm_rv_name(rv, nb, sizeof(nb)));
				rv = CKR_OK;
			}
		}
		if (rv != CKR_OK)
			return rv;
	}
	memset(&job->meta, 0, sizeof(job->meta));
	if (a[0].ulValueLen == sizeof(kt))
		job->meta.key_type = kt;
	if (a[1].ulValueLen == sizeof(vlen))
		job->meta.value_len = vlen;
	for (i = 0; i < 7; i++)
		if (a[2 + i].ulValueLen == 1 && b[i] == CK_TRUE)
			job->meta.usage |= bits[i];
	hsm_today(today);
	job->meta.enabled = 1;
	if (na > 9 && hsm_date_set(&a[9], d) && strcmp(today, d) < 0)
		job->meta.enabled = 0;
	if (na > 10 && hsm_date_set(&a[10], d) && strcmp(today, d) > 0)
		job->meta.enabled = 0;
	job->err = XERR_OK;
	return CKR_OK;
}

/* AES-GCM encrypt: C_EncryptInit + C_Encrypt into the scratch buffer. */
static CK_RV
hsm_do_encrypt(struct hsm_worker *w, struct hsm_job *job,
    CK_OBJECT_HANDLE key)
{
	struct hsm *h = w->t->h;
	CK_GCM_PARAMS gp;
	CK_MECHANISM mech = { CKM_AES_GCM, &gp, sizeof(gp) };
	CK_ULONG outlen;
	size_t need = job->in_len + HSM_TAG_LEN;
	unsigned char zero[HSM_IV_LEN] = { 0 };
	CK_RV rv;

	if (hsm_scratch(w, need) != 0) {
		hsm_job_fail(job, XERR_INTERNAL, "out of memory");
		return CKR_OK;
	}
	memset(job->iv, 0, sizeof(job->iv));
	job->iv_len = HSM_IV_LEN;
	if (h->iv == CFG_IV_PROXY && RAND_bytes(job->iv, HSM_IV_LEN) != 1) {
		log_crypto_err("hsm: RAND_bytes");
		hsm_job_fail(job, XERR_INTERNAL, "random number generator failed");
		return CKR_OK;
	}
	memset(&gp, 0, sizeof(gp));
	/* "hsm" mode: a zero IV buffer the token fills (PKCS#11 v3.0) */
	gp.pIv = job->iv;
	gp.ulIvLen = HSM_IV_LEN;
	gp.ulIvBits = HSM_IV_LEN * 8;
	gp.pAAD = (CK_BYTE_PTR)job->aad;
	gp.ulAADLen = job->aad_len;
	gp.ulTagBits = HSM_TAG_LEN * 8;
	rv = h->f->C_EncryptInit(w->session, &mech, key);
	if (rv != CKR_OK)
		return rv;
	outlen = need;
	rv = h->f->C_Encrypt(w->session,
	    (CK_BYTE_PTR)(job->in != NULL ? job->in : w->scratch), job->in_len,
	    w->scratch, &outlen);
	if (rv != CKR_OK)
		return rv;
	if (outlen != need) {
		hsm_job_fail(job, XERR_INTERNAL,
		    "HSM returned a ciphertext of unexpected length");
		return CKR_OK;
	}
	if (h->iv == CFG_IV_HSM && CRYPTO_memcmp(job->iv, zero,
	    HSM_IV_LEN) == 0) {
		/* never hand out a fixed IV */
		hsm_job_fail(job, XERR_INTERNAL,
		    "the HSM did not generate an IV (hsm.iv is \"hsm\")");
		return CKR_OK;
	}
	if (job->in_len > 0)
		memcpy(job->out, w->scratch, job->in_len);
	memcpy(job->tag, w->scratch + job->in_len, HSM_TAG_LEN);
	job->out_len = job->in_len;
	job->err = XERR_OK;
	return CKR_OK;
}

/* AES-GCM decrypt of ct||tag (built in scratch) into scratch, copied out. */
static CK_RV
hsm_do_decrypt(struct hsm_worker *w, struct hsm_job *job,
    CK_OBJECT_HANDLE key)
{
	struct hsm *h = w->t->h;
	CK_GCM_PARAMS gp;
	CK_MECHANISM mech = { CKM_AES_GCM, &gp, sizeof(gp) };
	unsigned char iv[HSM_MAX_IV];
	size_t need = job->in_len + HSM_TAG_LEN;
	unsigned char *ct, *pt;
	CK_ULONG outlen;
	CK_RV rv;

	if (hsm_scratch(w, 2 * need) != 0) {
		hsm_job_fail(job, XERR_INTERNAL, "out of memory");
		return CKR_OK;
	}
	ct = w->scratch;
	pt = w->scratch + need;
	if (job->in_len > 0)
		memcpy(ct, job->in, job->in_len);
	memcpy(ct + job->in_len, job->tag, HSM_TAG_LEN);
	memcpy(iv, job->iv, job->iv_len);
	memset(&gp, 0, sizeof(gp));
	gp.pIv = iv;
	gp.ulIvLen = job->iv_len;
	gp.ulIvBits = job->iv_len * 8;
	gp.pAAD = (CK_BYTE_PTR)job->aad;
	gp.ulAADLen = job->aad_len;
	gp.ulTagBits = HSM_TAG_LEN * 8;
	rv = h->f->C_DecryptInit(w->session, &mech, key);
	if (rv != CKR_OK)
		return rv;
	outlen = need;
	rv = h->f->C_Decrypt(w->session, ct, need, pt, &outlen);
	if (rv == CKR_OK) {
		if (outlen != job->in_len) {
			hsm_job_fail(job, XERR_INTERNAL,
			    "HSM returned a plaintext of unexpected length");
		} else {
			if (outlen > 0)
				memcpy(job->out, pt, outlen);
			job->out_len = outlen;
			job->err = XERR_OK;
		}
	}
	wipe(pt, need);
	return rv;
}

/* Make sure the worker has a session of the current epoch. */
static CK_RV
hsm_worker_session(struct hsm_worker *w)
{
	struct hsm_token *t = w->t;
	struct hsm *h = t->h;
	CK_SESSION_HANDLE s;
	CK_SLOT_ID slot;
	unsigned epoch;
	CK_RV rv;

	pthread_mutex_lock(&h->mu);
	epoch = t->epoch;
	slot = t->slot;
	pthread_mutex_unlock(&h->mu);
	if (w->session != CK_INVALID_HANDLE && w->epoch == epoch &&
	    w->modgen == h->modgen)
		return CKR_OK;
	/* a handle from before a re-initialization may now name another
	 * thread's session: only close our own generation's */
	if (w->session != CK_INVALID_HANDLE && w->modgen == h->modgen)
		h->f->C_CloseSession(w->session);
	w->session = CK_INVALID_HANDLE;
	if (!h->initialized)
		return CKR_CRYPTOKI_NOT_INITIALIZED;
	rv = h->f->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION,
	    NULL, NULL, &s);
	if (rv != CKR_OK)
		return rv;
	w->session = s;
	w->epoch = epoch;
	w->modgen = h->modgen;
	return CKR_OK;
}

/*
 * One attempt of a job on this worker's session.  HSM_DONE with job->err
 * set, or HSM_FAILED_SESSION (job->errmsg names the error) when the
 * session or device failed and the job may be retried.
 */
static enum hsm_outcome
hsm_attempt(struct hsm_worker *w, struct hsm_job *job)
{
	struct hsm_token *t = w->t;
	struct hsm *h = t->h;
	CK_OBJECT_HANDLE key = CK_INVALID_HANDLE;
	enum hsm_outcome o = HSM_DONE;
	uint64_t t0 = util_now_us();
	int refound = 0, cls;
	CK_RV rv;

	job->err = XERR_INTERNAL;
	job->errmsg[0] = '\0';
	job->served_by = t->idx;
	pthread_rwlock_rdlock(&h->modlock);
	if ((rv = hsm_worker_session(w)) != CKR_OK)
		goto fail;
 lookup:
	if (!hsm_cache_get(t, job->label, &key)) {
		job->err = XERR_INTERNAL;
		key = CK_INVALID_HANDLE;
		if ((rv = hsm_find_key(w, job, &key)) != CKR_OK)
			goto fail;
		if (key == CK_INVALID_HANDLE)
			goto out;           /* not found / ambiguous: err set */
	}
	switch (job->op) {
	case HSM_OP_ENCRYPT:
		rv = hsm_do_encrypt(w, job, key);
		break;
	case HSM_OP_DECRYPT:
		rv = hsm_do_decrypt(w, job, key);
		break;
	case HSM_OP_METADATA:
		rv = hsm_do_metadata(w, job, key);
		break;
	default:
		hsm_job_fail(job, XERR_INTERNAL, "unknown operation");
		goto out;
	}
	if (rv == CKR_OK)
		goto out;
 fail:
	cls = hsm_rv_class(rv, job->op);
	if (cls == HSM_REFIND && !refound) {
		hsm_cache_drop(t, job->label);
		refound = 1;
		goto lookup;
	}
	hsm_job_rv_msg(job, t, rv);
	if (cls == HSM_RECOVER) {
		o = HSM_FAILED_SESSION;
		job->err = XERR_INTERNAL;
		/* the session is suspect: reopen it next time */
		if (w->session != CK_INVALID_HANDLE &&
		    w->modgen == h->modgen)
			h->f->C_CloseSession(w->session);
		w->session = CK_INVALID_HANDLE;
	} else
		job->err = cls < 0 ? XERR_INTERNAL : (enum xerr)cls;
 out:
	pthread_rwlock_unlock(&h->modlock);
	job->hsm_us += util_now_us() - t0;
	return o;
}

static int
hsm_job_expired(const struct hsm *h, const struct hsm_job *job, uint64_t now)
{
	return now - hsm_ts_us(&job->enqueued) > h->timeout_us;
}

static void
hsm_job_timeout(struct hsm *h, struct hsm_job *job)
{
	job->err = XERR_DEPENDENCY_TIMEOUT;
	snprintf(job->errmsg, sizeof(job->errmsg),
	    "the request waited more than %u ms for the HSM",
	    (unsigned)(h->timeout_us / 1000));
	hsm_job_finish(job);
}

/* Is there a healthy token other than t? (h->mu held) */
static int
hsm_other_healthy_locked(struct hsm *h, const struct hsm_token *t)
{
	size_t i;

	for (i = 0; i < h->ntokens; i++)
		if (&h->tokens[i] != t && h->tokens[i].healthy)
			return 1;
	return 0;
}

/* Run one job taken from a queue, retrying once after a failure. */
static void
hsm_process(struct hsm_worker *w, struct hsm_job *job)
{
	struct hsm_token *t = w->t;
	struct hsm *h = t->h;

	if (hsm_job_expired(h, job, util_now_us())) {
		hsm_job_timeout(h, job);
		return;
	}
	if (hsm_attempt(w, job) == HSM_DONE) {
		hsm_job_finish(job);
		return;
	}
	hsm_token_fail(t, job->errmsg);
	if (job->attempts++ > 0) {
		hsm_job_finish(job);        /* the retry failed too */
		return;
	}
	if (job->token < 0) {
		pthread_mutex_lock(&h->mu);
		if (!h->stop && hsm_other_healthy_locked(h, t)) {
			/* retry on another token, ahead of newer jobs */
			hsm_q_push_front(&h->global, job);
			h->queued++;
			hsm_kick_global_locked(h, NULL);
			pthread_cond_signal(&h->mon_cond);
			pthread_mutex_unlock(&h->mu);
			return;
		}
		pthread_mutex_unlock(&h->mu);
	}
	/* no other token: recover this one now and retry here */
	if (hsm_token_recover(t) != 0) {
		hsm_job_finish(job);
		return;
	}
	if (hsm_attempt(w, job) != HSM_DONE)
		hsm_token_fail(t, job->errmsg);
	hsm_job_finish(job);
}

static void *
hsm_worker_main(void *arg)
{
	struct hsm_worker *w = arg;
	struct hsm_token *t = w->t;
	struct hsm *h = t->h;
	struct hsm_job *job;
	struct timespec ts;
	struct hsm_sig sig = { .n = 0 };
	uint64_t t0, dt;

	util_thread_name("xks-hsm%d.%d", t->idx, (int)(w - t->workers));
	pthread_mutex_lock(&h->mu);
	while (!h->stop) {
		job = hsm_q_pop(&t->pinned);
		if (job == NULL && t->healthy)
			job = hsm_q_pop(&h->global);
		if (job == NULL) {
			/* a job we may not take: pass the wake-up on */
			if (w->kicked) {
				w->kicked = 0;
				h->nkicked--;
				if (h->global.head != NULL)
					hsm_kick_global_locked(h, NULL);
			}
			w->idle = 1;
			hsm_deadline(&ts, util_now_us() +
			    HSM_IDLE_WAIT_MS * 1000u);
			pthread_cond_timedwait(&w->cond, &h->mu, &ts);
			w->idle = 0;
			continue;
		}
		if (w->kicked) {
			w->kicked = 0;
			h->nkicked--;
		}
		h->queued--;
		h->busy++;
		/* more waiting than this worker will get to soon: wake another */
		hsm_wake_wanted_locked(h, &sig);
		hsm_unlock_wake(h, &sig);
		t0 = util_now_us();
		hsm_process(w, job);
		dt = util_now_us() - t0;
		pthread_mutex_lock(&h->mu);
		h->busy--;
		h->svc_us = (h->svc_us * 7 + dt) / 8;
	}
	w->idle = 0;
	pthread_mutex_unlock(&h->mu);
	return NULL;
}

/* Pop every expired job at the queue heads onto *out (h->mu held). */
static void
hsm_expire_locked(struct hsm *h, struct hsm_queue *q, uint64_t now,
    struct hsm_queue *out, uint64_t *next)
{
	uint64_t dl;

	while (q->head != NULL) {
		dl = hsm_ts_us(&q->head->enqueued) + h->timeout_us;
		if (dl >= now) {
			if (dl < *next)
				*next = dl;
			return;
		}
		hsm_q_push(out, hsm_q_pop(q));
		h->queued--;
	}
}

/*
 * The monitor: answers jobs that waited too long (nobody may take them
 * when every token failed) and recovers failed tokens every second.
 */
static void *
hsm_monitor_main(void *arg)
{
	struct hsm *h = arg;
	struct hsm_queue exp = { NULL, NULL };
	struct hsm_job *job;
	struct timespec ts;
	uint64_t now, next, next_rec;
	size_t i;

	util_thread_name("xks-hsm-mon");
	pthread_mutex_lock(&h->mu);
	next_rec = util_now_us() + HSM_RECOVER_US;
	while (!h->stop) {
		now = util_now_us();
		next = next_rec;
		hsm_expire_locked(h, &h->global, now, &exp, &next);
		for (i = 0; i < h->ntokens; i++)
			hsm_expire_locked(h, &h->tokens[i].pinned, now, &exp,
			    &next);
		if (exp.head != NULL) {
			pthread_mutex_unlock(&h->mu);
			while ((job = hsm_q_pop(&exp)) != NULL)
				hsm_job_timeout(h, job);
			exp.tail = NULL;
			pthread_mutex_lock(&h->mu);
			continue;
		}
		if (now >= next_rec) {
			for (i = 0; i < h->ntokens && !h->stop; i++) {
				if (h->tokens[i].healthy)
					continue;
				pthread_mutex_unlock(&h->mu);
				hsm_token_recover(&h->tokens[i]);
				pthread_mutex_lock(&h->mu);
			}
			next_rec = util_now_us() + HSM_RECOVER_US;
			continue;
		}
		/* jobs stuck behind a hung call: wake an idle session */
		hsm_wake_wanted_locked(h, NULL);
		if (next > now + HSM_MON_TICK_US)
			next = now + HSM_MON_TICK_US;
		hsm_deadline(&ts, next + 1000);
		pthread_cond_timedwait(&h->mon_cond, &h->mu, &ts);
	}
	pthread_mutex_unlock(&h->mu);
	return NULL;
}

/* ------------------------------------------------------------------ */
/* Public interface.                                                    */

/* Resolve a p11-kit module name to its file through p11-kit's config. */
static char *
hsm_module_path(const char *name, char *err, size_t errlen)
{
	CK_FUNCTION_LIST **mods, *m;
	char *path = NULL;

	if (strchr(name, '/') != NULL)
		return strdup(name);
	if ((mods = p11_kit_modules_load(NULL, 0)) == NULL) {
		snprintf(err, errlen, "hsm.module: p11-kit: %s",
		    p11_kit_message() ? p11_kit_message() : "cannot load "
		    "the configured modules");
		return NULL;
	}
	if ((m = p11_kit_module_for_name(mods, name)) == NULL)
		snprintf(err, errlen, "hsm.module: no p11-kit module named %s",
		    name);
	else if ((path = p11_kit_module_get_filename(m)) == NULL)
		snprintf(err, errlen, "hsm.module: p11-kit module %s has no "
		    "file name", name);
	p11_kit_modules_release(mods);
	return path;
}

static int
hsm_load(struct hsm *h, const char *name, char *err, size_t errlen)
{
	CK_INFO info;
	char manuf[33], desc[33], nb[32];
	char *path;
	CK_RV rv;

	if ((path = hsm_module_path(name, err, errlen)) == NULL)
		return -1;
	h->f = p11_kit_module_load(path, 0);
	if (h->f == NULL) {
		snprintf(err, errlen, "hsm.module: cannot load %s: %s", path,
		    p11_kit_message() ? p11_kit_message() : "unknown error");
		free(path);
		return -1;
	}
	free(path);
	rv = p11_kit_module_initialize(h->f);
	if (rv != CKR_OK) {
		snprintf(err, errlen, "hsm.module: %s: C_Initialize: %s", name,
		    hsm_rv_name(rv, nb, sizeof(nb)));
		return -1;
	}
	h->initialized = 1;
	if (h->f->C_GetInfo(&info) == CKR_OK) {
		hsm_pstr(info.manufacturerID, sizeof(info.manufacturerID),
		    manuf, sizeof(manuf));
		hsm_pstr(info.libraryDescription,
		    sizeof(info.libraryDescription), desc, sizeof(desc));
		log_info("hsm: module %s: %s %s version %u.%u (Cryptoki %u.%u)",
		    name, manuf, desc, info.libraryVersion.major,
		    info.libraryVersion.minor, info.cryptokiVersion.major,
		    info.cryptokiVersion.minor);
	}
	return 0;
}

/* Find, describe and log in token i. */
static int
hsm_token_setup(struct hsm *h, size_t i, char *err, size_t errlen)
{
	struct hsm_token *t = &h->tokens[i];
	CK_TOKEN_INFO ti;
	CK_SLOT_ID slot = 0;
	char e2[256], nb[32], serial[17];
	CK_RV rv;
	size_t j;
	int r;

	r = hsm_find_slot(h, t, &slot, &rv, &ti);
	if (r < 0) {
		snprintf(err, errlen, "hsm.tokens[%zu]: C_GetSlotList: %s", i,
		    hsm_rv_name(rv, nb, sizeof(nb)));
		return -1;
	}
	if (r == 0) {
		snprintf(err, errlen, "hsm.tokens[%zu]: no token matches %s",
		    i, t->uri_str);
		return -1;
	}
	if (r == 2) {
		snprintf(err, errlen, "hsm.tokens[%zu]: more than one token "
		    "matches %s; add serial= to the URI", i, t->uri_str);
		return -1;
	}
	for (j = 0; j < i; j++)
		if (h->tokens[j].slot == slot) {
			snprintf(err, errlen, "hsm.tokens[%zu]: %s is the same "
			    "token as hsm.tokens[%zu]", i, t->uri_str, j);
			return -1;
		}
	t->slot = slot;
	hsm_token_describe(t, &ti);
	hsm_pstr(ti.serialNumber, sizeof(ti.serialNumber), serial,
	    sizeof(serial));
	log_info("hsm: token[%zu] %s: slot %lu, label %s, model %s, "
	    "serial %s", i, t->uri_str, (unsigned long)slot, t->label,
	    t->info.model, serial);
	rv = hsm_open_login(h, t, slot, &t->anchor, e2, sizeof(e2));
	if (rv != CKR_OK) {
		snprintf(err, errlen, "hsm.tokens[%zu]: %s", i, e2);
		return -1;
	}
	t->anchor_modgen = h->modgen;
	t->healthy = 1;
	t->info.healthy = 1;
	return 0;
}

int
hsm_new(const struct cfg_hsm *conf, struct hsm **out, char *err,
    size_t errlen)
{
	struct hsm *h = NULL;
	pthread_rwlockattr_t ra;
	size_t i;
	int j, r = -1, pr;

	*out = NULL;
	if (errlen > 0)
		err[0] = '\0';
	if (conf == NULL || conf->module == NULL || conf->ntokens == 0 ||
	    conf->sessions_per_token < 1 || conf->queue_size < 1 ||
	    conf->timeout_ms < 1) {
		snprintf(err, errlen, "hsm: incomplete configuration");
		goto out;
	}
	if ((h = calloc(1, sizeof(*h))) == NULL)
		goto oom;
	pthread_mutex_init(&h->mu, NULL);
	pthread_rwlockattr_init(&ra);
	pthread_rwlockattr_setkind_np(&ra,
	    PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
	pthread_rwlock_init(&h->modlock, &ra);
	pthread_rwlockattr_destroy(&ra);
	hsm_cond_init(&h->mon_cond);
	h->iv = conf->iv;
	h->timeout_us = (uint64_t)conf->timeout_ms * 1000u;
	h->queue_size = (size_t)conf->queue_size;
	h->svc_us = HSM_SVC_INIT_US;
	if ((h->module = strdup(conf->module)) == NULL ||
	    (conf->pin_file != NULL &&
	    (h->pin_file = strdup(conf->pin_file)) == NULL) ||
	    (conf->pin_env != NULL &&
	    (h->pin_env = strdup(conf->pin_env)) == NULL))
		goto oom;
	if ((h->tokens = calloc(conf->ntokens, sizeof(*h->tokens))) == NULL)
		goto oom;
	h->ntokens = conf->ntokens;
	for (i = 0; i < h->ntokens; i++) {
		struct hsm_token *t = &h->tokens[i];
		t->h = h;
		t->idx = (int)i;
		t->anchor = CK_INVALID_HANDLE;
		pthread_mutex_init(&t->recover_mu, NULL);
		pthread_rwlock_init(&t->klock, NULL);
		if ((t->uri_str = strdup(conf->tokens[i])) == NULL ||
		    (t->uri = p11_kit_uri_new()) == NULL)
			goto oom;
		pr = p11_kit_uri_parse(conf->tokens[i], P11_KIT_URI_FOR_TOKEN,
		    t->uri);
		if (pr != P11_KIT_URI_OK) {
			snprintf(err, errlen, "hsm.tokens[%zu]: %s: %s", i,
			    conf->tokens[i], p11_kit_uri_message(pr));
			goto out;
		}
	}
	if (hsm_load(h, conf->module, err, errlen) != 0)
		goto out;
	for (i = 0; i < h->ntokens; i++)
		if (hsm_token_setup(h, i, err, errlen) != 0)
			goto out;
	for (i = 0; i < h->ntokens; i++) {
		struct hsm_token *t = &h->tokens[i];
		t->workers = calloc((size_t)conf->sessions_per_token,
		    sizeof(*t->workers));
		if (t->workers == NULL)
			goto oom;
		t->nworkers = conf->sessions_per_token;
		for (j = 0; j < t->nworkers; j++) {
			struct hsm_worker *w = &t->workers[j];
			w->t = t;
			w->session = CK_INVALID_HANDLE;
			hsm_cond_init(&w->cond);
		}
	}
	/* open every session now so that -t and start-up see failures */
	for (i = 0; i < h->ntokens; i++) {
		struct hsm_token *t = &h->tokens[i];
		for (j = 0; j < t->nworkers; j++) {
			CK_RV rv = hsm_worker_session(&t->workers[j]);
			if (rv != CKR_OK) {
				char nb[32];
				snprintf(err, errlen, "hsm.tokens[%zu]: "
				    "C_OpenSession: %s (sessions_per_token "
				    "too high?)", i,
				    hsm_rv_name(rv, nb, sizeof(nb)));
				goto out;
			}
		}
	}
	for (i = 0; i < h->ntokens; i++) {
		struct hsm_token *t = &h->tokens[i];
		for (j = 0; j < t->nworkers; j++) {
			if (pthread_create(&t->workers[j].th, NULL,
			    hsm_worker_main, &t->workers[j]) != 0) {
				snprintf(err, errlen, "hsm: cannot start a "
				    "worker thread");
				goto out;
			}
			t->workers[j].started = 1;
		}
	}
	if (pthread_create(&h->mon, NULL, hsm_monitor_main, h) != 0) {
		snprintf(err, errlen, "hsm: cannot start the monitor thread");
		goto out;
	}
	h->mon_started = 1;
	log_info("hsm: %zu token(s), %d session(s) each, queue %zu, "
	    "timeout %d ms, IV from %s", h->ntokens, conf->sessions_per_token,
	    h->queue_size, conf->timeout_ms,
	    h->iv == CFG_IV_HSM ? "the HSM" : "the proxy");
	*out = h;
	h = NULL;
	r = 0;
	goto out;
 oom:
	snprintf(err, errlen, "hsm: out of memory");
 out:
	hsm_free(h);
	return r;
}

static enum xerr
hsm_queue_job(struct hsm *h, struct hsm_job *job, int hold)
{
	struct hsm_queue *q;
	struct hsm_sig sig = { .n = 0 };
	size_t i;
	int any;

	if (h == NULL || job == NULL || job->done == NULL ||
	    (unsigned)job->op > HSM_OP_METADATA ||
	    memchr(job->label, '\0', sizeof(job->label)) == NULL ||
	    job->label[0] == '\0' ||
	    (job->token >= 0 && (size_t)job->token >= h->ntokens))
		return XERR_INTERNAL;
	if (job->op == HSM_OP_DECRYPT &&
	    (job->iv_len < 1 || job->iv_len > HSM_MAX_IV))
		return XERR_INTERNAL;
	if (job->op != HSM_OP_METADATA && job->in_len > 0 &&
	    (job->in == NULL || job->out == NULL))
		return XERR_INTERNAL;
	job->err = XERR_OK;
	job->errmsg[0] = '\0';
	job->served_by = -1;
	job->hsm_us = 0;
	job->out_len = 0;
	job->attempts = 0;
	job->next = NULL;
	memset(&job->meta, 0, sizeof(job->meta));
	clock_gettime(CLOCK_MONOTONIC, &job->enqueued);

	pthread_mutex_lock(&h->mu);
	if (h->stop) {
		pthread_mutex_unlock(&h->mu);
		return XERR_UNAVAILABLE;
	}
	if (h->queued >= h->queue_size) {
		pthread_mutex_unlock(&h->mu);
		return XERR_THROTTLING;
	}
	if (job->token < 0) {
		for (any = 0, i = 0; i < h->ntokens; i++)
			any |= h->tokens[i].healthy;
		if (!any) {
			pthread_mutex_unlock(&h->mu);
			return XERR_UNAVAILABLE;
		}
		q = &h->global;
	} else
		q = &h->tokens[job->token].pinned;
	hsm_q_push(q, job);
	h->queued++;
	if (job->token >= 0)
		hsm_kick_token_locked(&h->tokens[job->token], &sig);
	else if (!hold)
		hsm_wake_wanted_locked(h, &sig);
	/* the monitor is not woken here: it ticks every HSM_MON_TICK_US,
	 * which keeps a thread wake-up off every request (see
	 * docs/performance.md); queued jobs still expire within a tick */
	hsm_unlock_wake(h, &sig);
	return XERR_OK;
}

enum xerr
hsm_submit(struct hsm *h, struct hsm_job *job)
{
	return hsm_queue_job(h, job, 0);
}

enum xerr
hsm_submit_held(struct hsm *h, struct hsm_job *job)
{
	return hsm_queue_job(h, job, 1);
}

void
hsm_flush(struct hsm *h)
{
	struct hsm_sig sig = { .n = 0 };

	if (h == NULL)
		return;
	pthread_mutex_lock(&h->mu);
	hsm_wake_wanted_locked(h, &sig);
	hsm_unlock_wake(h, &sig);
}

/* A job run synchronously: owns copies, so the caller may leave early. */
struct hsm_sync {
	pthread_mutex_t mu;
	pthread_cond_t cv;
	int refs;
	int finished;
	struct hsm_job job;
	unsigned char *buf;
	size_t buflen;
};

static void
hsm_sync_unref(struct hsm_sync *s)
{
	int last;

	pthread_mutex_lock(&s->mu);
	last = --s->refs == 0;
	pthread_mutex_unlock(&s->mu);
	if (!last)
		return;
	wipe_free(s->buf, s->buflen);
	pthread_mutex_destroy(&s->mu);
	pthread_cond_destroy(&s->cv);
	free(s);
}

static void
hsm_sync_done(struct hsm_job *job)
{
	struct hsm_sync *s = job->arg;

	pthread_mutex_lock(&s->mu);
	s->finished = 1;
	pthread_cond_signal(&s->cv);
	pthread_mutex_unlock(&s->mu);
	hsm_sync_unref(s);
}

enum xerr
hsm_run_sync(struct hsm *h, struct hsm_job *job, int timeout_ms)
{
	struct hsm_sync *s;
	struct timespec ts;
	enum xerr e;
	int fin;

	if (h == NULL || job == NULL)
		return XERR_INTERNAL;
	job->err = XERR_INTERNAL;
	job->errmsg[0] = '\0';
	job->served_by = -1;
	job->out_len = 0;
	job->hsm_us = 0;
	if ((s = calloc(1, sizeof(*s))) == NULL)
		return XERR_INTERNAL;
	pthread_mutex_init(&s->mu, NULL);
	hsm_cond_init(&s->cv);
	s->refs = 2;
	s->job = *job;
	s->buflen = 2 * job->in_len + job->aad_len + 1;
	if ((s->buf = malloc(s->buflen)) == NULL) {
		s->refs = 1;
		hsm_sync_unref(s);
		return XERR_INTERNAL;
	}
	if (job->in_len > 0 && job->in != NULL)
		memcpy(s->buf, job->in, job->in_len);
	if (job->aad_len > 0 && job->aad != NULL)
		memcpy(s->buf + job->in_len, job->aad, job->aad_len);
	s->job.in = job->in != NULL ? s->buf : NULL;
	s->job.aad = job->aad != NULL ? s->buf + job->in_len : NULL;
	s->job.out = job->out != NULL ?
	    s->buf + job->in_len + job->aad_len : NULL;
	s->job.done = hsm_sync_done;
	s->job.arg = s;
	if ((e = hsm_submit(h, &s->job)) != XERR_OK) {
		s->refs = 1;
		hsm_sync_unref(s);
		job->err = e;
		snprintf(job->errmsg, sizeof(job->errmsg), "%s",
		    e == XERR_THROTTLING ? "too many requests waiting for the "
		    "HSM" : e == XERR_UNAVAILABLE ? "no HSM token is available" :
		    "invalid HSM request");
		return e;
	}
	hsm_deadline(&ts, util_now_us() + (uint64_t)(timeout_ms > 0 ?
	    timeout_ms : 0) * 1000u);
	pthread_mutex_lock(&s->mu);
	while (!s->finished)
		if (pthread_cond_timedwait(&s->cv, &s->mu, &ts) == ETIMEDOUT)
			break;
	fin = s->finished;
	pthread_mutex_unlock(&s->mu);
	if (fin) {
		if (job->out != NULL && s->job.out_len > 0)
			memcpy(job->out, s->job.out, s->job.out_len);
		job->out_len = s->job.out_len;
		memcpy(job->iv, s->job.iv, sizeof(job->iv));
		job->iv_len = s->job.iv_len;
		memcpy(job->tag, s->job.tag, sizeof(job->tag));
		job->meta = s->job.meta;
		job->err = s->job.err;
		memcpy(job->errmsg, s->job.errmsg, sizeof(job->errmsg));
		job->served_by = s->job.served_by;
		job->hsm_us = s->job.hsm_us;
	} else {
		job->err = XERR_DEPENDENCY_TIMEOUT;
		snprintf(job->errmsg, sizeof(job->errmsg),
		    "no answer from the HSM within %d ms", timeout_ms);
	}
	hsm_sync_unref(s);
	return job->err;
}

size_t
hsm_ntokens(const struct hsm *h)
{
	return h == NULL ? 0 : h->ntokens;
}

const char *
hsm_token_id(const struct hsm *h, size_t i)
{
	if (h == NULL || i >= h->ntokens)
		return "";
	return h->tokens[i].info.id;  /* written once, in hsm_new() */
}

void
hsm_token_info(struct hsm *h, size_t i, struct hsm_token_info *out)
{
	memset(out, 0, sizeof(*out));
	if (h == NULL || i >= h->ntokens)
		return;
	pthread_mutex_lock(&h->mu);
	*out = h->tokens[i].info;
	pthread_mutex_unlock(&h->mu);
}

void
hsm_free(struct hsm *h)
{
	struct hsm_queue q = { NULL, NULL };
	struct hsm_job *job;
	size_t i;
	int j;

	if (h == NULL)
		return;
	pthread_mutex_lock(&h->mu);
	h->stop = 1;
	while ((job = hsm_q_pop(&h->global)) != NULL)
		hsm_q_push(&q, job);
	for (i = 0; i < h->ntokens; i++) {
		while ((job = hsm_q_pop(&h->tokens[i].pinned)) != NULL)
			hsm_q_push(&q, job);
		for (j = 0; j < h->tokens[i].nworkers; j++)
			pthread_cond_signal(&h->tokens[i].workers[j].cond);
	}
	h->queued = 0;
	pthread_cond_signal(&h->mon_cond);
	pthread_mutex_unlock(&h->mu);
	while ((job = hsm_q_pop(&q)) != NULL) {
		hsm_job_fail(job, XERR_UNAVAILABLE, "the HSM pool is shutting "
		    "down");
		hsm_job_finish(job);
	}
	if (h->mon_started)
		pthread_join(h->mon, NULL);
	for (i = 0; i < h->ntokens; i++)
		for (j = 0; j < h->tokens[i].nworkers; j++)
			if (h->tokens[i].workers[j].started)
				pthread_join(h->tokens[i].workers[j].th, NULL);
	/*
	 * No C_Logout: login state belongs to the application, and during a
	 * reload a new pool beside this one shares it.  Closing our sessions
	 * ends the login when we are the last user of the token.
	 */
	for (i = 0; i < h->ntokens; i++) {
		struct hsm_token *t = &h->tokens[i];
		for (j = 0; j < t->nworkers; j++) {
			struct hsm_worker *w = &t->workers[j];
			if (h->initialized && w->session != CK_INVALID_HANDLE &&
			    w->modgen == h->modgen)
				h->f->C_CloseSession(w->session);
			wipe_free(w->scratch, w->scratch_len);
			pthread_cond_destroy(&w->cond);
		}
		if (h->initialized && t->anchor != CK_INVALID_HANDLE &&
		    t->anchor_modgen == h->modgen)
			h->f->C_CloseSession(t->anchor);
		hsm_cache_clear(t);
		free(t->workers);
		if (t->uri != NULL)
			p11_kit_uri_free(t->uri);
		free(t->uri_str);
		pthread_mutex_destroy(&t->recover_mu);
		pthread_rwlock_destroy(&t->klock);
	}
	if (h->f != NULL) {
		if (h->initialized)
			p11_kit_module_finalize(h->f);
		p11_kit_module_release(h->f);
	}
	free(h->tokens);
	free(h->module);
	free(h->pin_file);
	free(h->pin_env);
	pthread_cond_destroy(&h->mon_cond);
	pthread_rwlock_destroy(&h->modlock);
	pthread_mutex_destroy(&h->mu);
	free(h);
}
