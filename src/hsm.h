/*
 * hsm.h -- the PKCS#11 backend: module, tokens, worker pool, key cache.
 *
 * hsm_new() loads the module through p11-kit (a path or a p11-kit module
 * name), initializes it with OS locking, finds every configured token by
 * its PKCS#11 URI, logs in once per token with the PIN (wiped after use)
 * and starts sessions_per_token worker threads per token, each owning one
 * session.  Event loops submit jobs with hsm_submit(), which never blocks;
 * the job's done() callback runs on a worker thread when the job is
 * finished, and the submitter hands the result back to its own loop.
 * No PKCS#11 call ever runs on the submitting thread.
 */
#ifndef XKS_HSM_H
#define XKS_HSM_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "xerr.h"

struct cfg_hsm;
struct hsm;

enum hsm_op {
	HSM_OP_ENCRYPT = 0,   /* AES-GCM encrypt, 128-bit tag */
	HSM_OP_DECRYPT,       /* AES-GCM decrypt */
	HSM_OP_METADATA,      /* attributes of the key */
};

/* keyUsage bits, from CKA_ENCRYPT .. CKA_DERIVE */
#define HSM_USAGE_ENCRYPT 0x01u
#define HSM_USAGE_DECRYPT 0x02u
#define HSM_USAGE_WRAP    0x04u
#define HSM_USAGE_UNWRAP  0x08u
#define HSM_USAGE_SIGN    0x10u
#define HSM_USAGE_VERIFY  0x20u
#define HSM_USAGE_DERIVE  0x40u

struct hsm_key_meta {
	unsigned long key_type;       /* CKK_* */
	size_t value_len;             /* CKA_VALUE_LEN in bytes */
	unsigned usage;               /* HSM_USAGE_* */
	int enabled;                  /* inside CKA_START_DATE..CKA_END_DATE */
};

#define HSM_MAX_IV 16
#define HSM_TAG_LEN 16

struct hsm_job {
	/* --- set by the submitter --- */
	enum hsm_op op;
	char label[129];              /* external key id = CKA_LABEL */
	const unsigned char *in;      /* encrypt: plaintext; decrypt: ciphertext (no tag) */
	size_t in_len;
	const unsigned char *aad;     /* AAD exactly as given to the HSM */
	size_t aad_len;
	unsigned char iv[HSM_MAX_IV]; /* decrypt: in; encrypt: out (12 bytes) */
	size_t iv_len;
	unsigned char tag[HSM_TAG_LEN]; /* decrypt: in; encrypt: out */
	unsigned char *out;           /* caller's buffer of at least in_len bytes */
	int token;                    /* -1: any healthy token; i: token i only */
	void (*done)(struct hsm_job *job); /* called once, on a worker thread */
	void *arg;                    /* the submitter's */

	/* --- set by the HSM layer before done() --- */
	size_t out_len;
	struct hsm_key_meta meta;     /* HSM_OP_METADATA */
	enum xerr err;                /* XERR_OK or the error to answer */
	char errmsg[160];             /* printable ASCII, for the errorMessage and log */
	int served_by;                /* token index, -1 if none */
	uint64_t hsm_us;              /* time spent in PKCS#11 calls */

	/* --- private to hsm.c --- */
	struct timespec enqueued;
	struct hsm_job *next;
	int attempts;
};

/* What the health task and the log need to know about a token. */
struct hsm_token_info {
	char id[96];                  /* "<label>/<serial>" */
	char model[160];              /* "<manufacturer> <model> fw <x.y>" */
	int healthy;                  /* not failed/recovering */
};

/*
 * Load, log in, start workers.  Blocking: call only at start-up or from the
 * reload thread, never from an event loop.  Returns 0 and *out, or -1 with
 * err filled ("hsm.tokens[1]: no token matches pkcs11:token=x").
 */
int hsm_new(const struct cfg_hsm *conf, struct hsm **out, char *err,
    size_t errlen);

/*
 * Queue a job.  Never blocks.  Returns XERR_OK when queued (done() will be
 * called exactly once), or XERR_THROTTLING when the queue is full,
 * XERR_INTERNAL/XERR_UNAVAILABLE when no token can take it; then done() is
 * not called.  A job that waited longer than hsm.timeout_ms is answered
 * XERR_DEPENDENCY_TIMEOUT without an HSM call.
 */
enum xerr hsm_submit(struct hsm *h, struct hsm_job *job);

/*
 * hsm_submit() without waking a worker for the job: for a caller that
 * queues several jobs in a row (an event loop going through a batch of
 * ready connections) and then calls hsm_flush() once, so that a batch
 * costs one wake-up instead of one per job.  The caller must call
 * hsm_flush() soon after (before it waits for anything).
 */
enum xerr hsm_submit_held(struct hsm *h, struct hsm_job *job);

/* Wake the workers that the queued jobs need.  Never blocks.  NULL-safe. */
void hsm_flush(struct hsm *h);

/*
 * Run a job and wait for it (up to timeout_ms).  For the health task, for
 * xksproxyd -t and tests; never on an event loop.
 */
enum xerr hsm_run_sync(struct hsm *h, struct hsm_job *job, int timeout_ms);

/* Number of tokens; info about token i. */
size_t hsm_ntokens(const struct hsm *h);
void hsm_token_info(struct hsm *h, size_t i, struct hsm_token_info *out);

/*
 * "<label>/<serial>" of token i: fixed when the pool is built, so read
 * without a lock (for the request log line); "" when i is out of range.
 */
const char *hsm_token_id(const struct hsm *h, size_t i);

/* Stop: answer queued jobs, join workers, log out, finalize.  NULL-safe. */
void hsm_free(struct hsm *h);

#endif
