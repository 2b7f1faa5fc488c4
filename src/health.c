/*
 * health.c -- the deep health check, run in the background.
 *
 * One thread per struct health runs the canary round trip (encrypt, then
 * decrypt and compare) on every token, pinned to it, every
 * interval_seconds; readers only copy the stored result under h->mu.
 */
#include "config.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "cfg.h"
#include "health.h"
#include "hsm.h"
#include "log.h"
#include "util.h"

#define HEALTH_MAX_AGE_US (60u * 1000000u)   /* older results: UNAVAILABLE */
#define HEALTH_WAIT_MS 5000                 /* longest wait for one job */

struct health_slot {
	struct health_entry e;
	uint64_t at_us;               /* when measured; 0: never */
	int reported;                 /* last logged status, -1 none */
};

struct health {
	struct hsm *hsm;
	char key[129];
	char module[256];
	int interval_s;
	int degraded_ms;

	pthread_mutex_t mu;
	pthread_cond_t cv;
	int stop;
	pthread_t th;
	int started;
	struct health_slot slot[HEALTH_MAX_ENTRIES];
	size_t n;
};

static const unsigned char health_msg[32] = "xksproxy health check canary 32";
static const unsigned char health_aad[] = "xksproxy health";

const char *
health_status_name(enum health_status s)
{
	switch (s) {
	case HEALTH_ACTIVE: return "ACTIVE";
	case HEALTH_DEGRADED: return "DEGRADED";
	default: return "UNAVAILABLE";
	}
}

/* Encrypt + decrypt the canary on token i; the status it earns. */
static enum health_status
health_probe(struct health *h, size_t i, const struct hsm_token_info *ti)
{
	unsigned char ct[sizeof(health_msg)], pt[sizeof(health_msg)];
	struct hsm_job j;
	uint64_t t0 = util_now_us(), rt_ms;
	int wait_ms = h->interval_s * 1000 < HEALTH_WAIT_MS ?
	    h->interval_s * 1000 : HEALTH_WAIT_MS;
	enum xerr e;

	memset(&j, 0, sizeof(j));
	j.op = HSM_OP_ENCRYPT;
	snprintf(j.label, sizeof(j.label), "%s", h->key);
	j.in = health_msg;
	j.in_len = sizeof(health_msg);
	j.aad = health_aad;
	j.aad_len = sizeof(health_aad);
	j.out = ct;
	j.token = (int)i;
	if ((e = hsm_run_sync(h->hsm, &j, wait_ms)) == XERR_OK) {
		j.op = HSM_OP_DECRYPT;
		j.in = ct;
		j.out = pt;
		e = hsm_run_sync(h->hsm, &j, wait_ms);
		if (e == XERR_OK && (j.out_len != sizeof(health_msg) ||
		    CRYPTO_memcmp(pt, health_msg, sizeof(pt)) != 0)) {
			e = XERR_INTERNAL;
			snprintf(j.errmsg, sizeof(j.errmsg),
			    "the canary did not decrypt to what was encrypted");
		}
	}
	rt_ms = (util_now_us() - t0) / 1000;
	if (e == XERR_KEY_NOT_FOUND) {
		char label[sizeof(ti->id)], *p;

		/* id is "<label>/<serial>": pkcs11-tool wants the label */
		snprintf(label, sizeof(label), "%s", ti->id);
		if ((p = strrchr(label, '/')) != NULL)
			*p = '\0';
		if (h->slot[i].reported != HEALTH_UNAVAILABLE)
			log_err("health key %s not found on token %s: create it "
			    "with pkcs11-tool --module %s --login "
			    "--token-label %s --keygen --key-type AES:32 "
			    "--label %s", h->key, ti->id, h->module, label,
			    h->key);
		return HEALTH_UNAVAILABLE;
	}
	if (e != XERR_OK) {
		if (h->slot[i].reported != HEALTH_UNAVAILABLE)
			log_warn("health: token %s UNAVAILABLE: %s", ti->id,
			    j.errmsg[0] != '\0' ? j.errmsg : xerr_name(e));
		return HEALTH_UNAVAILABLE;
	}
	if (rt_ms > (uint64_t)h->degraded_ms || !ti->healthy)
		return HEALTH_DEGRADED;
	return HEALTH_ACTIVE;
}

/* One round over every token; results stored under h->mu. */
static void
health_check(struct health *h)
{
	struct hsm_token_info ti;
	enum health_status st;
	size_t i;

	for (i = 0; i < h->n; i++) {
		hsm_token_info(h->hsm, i, &ti);
		st = health_probe(h, i, &ti);
		if (st == HEALTH_ACTIVE &&
		    h->slot[i].reported == HEALTH_UNAVAILABLE)
			log_info("health: token %s ACTIVE again", ti.id);
		pthread_mutex_lock(&h->mu);
		snprintf(h->slot[i].e.id, sizeof(h->slot[i].e.id), "%s", ti.id);
		snprintf(h->slot[i].e.model, sizeof(h->slot[i].e.model), "%s",
		    ti.model);
		h->slot[i].e.status = st;
		h->slot[i].at_us = util_now_us();
		h->slot[i].reported = (int)st;
		pthread_mutex_unlock(&h->mu);
	}
}

static void *
health_main(void *arg)
{
	struct health *h = arg;
	struct timespec ts;
	uint64_t next;

	util_thread_name("xks-health");
	pthread_mutex_lock(&h->mu);
	while (!h->stop) {
		next = util_now_us() + (uint64_t)h->interval_s * 1000000u;
		ts.tv_sec = (time_t)(next / 1000000u);
		ts.tv_nsec = (long)(next % 1000000u) * 1000;
		while (!h->stop && pthread_cond_timedwait(&h->cv, &h->mu,
		    &ts) != ETIMEDOUT)
			;
		if (h->stop)
			break;
		pthread_mutex_unlock(&h->mu);
		health_check(h);
		pthread_mutex_lock(&h->mu);
	}
	pthread_mutex_unlock(&h->mu);
	return NULL;
}

struct health *
health_new(struct hsm *hsm, const struct cfg *cfg)
{
	struct health *h = NULL, *r = NULL;
	pthread_condattr_t ca;
	size_t i, nt;

	if (hsm == NULL || cfg == NULL)
		goto out;
	if ((h = calloc(1, sizeof(*h))) == NULL)
		goto out;
	h->hsm = hsm;
	snprintf(h->key, sizeof(h->key), "%s", cfg->hsm.health_key != NULL ?
	    cfg->hsm.health_key : "xks-health");
	snprintf(h->module, sizeof(h->module), "%s", cfg->hsm.module != NULL ?
	    cfg->hsm.module : "MODULE");
	h->interval_s = cfg->health.interval_seconds > 0 ?
	    cfg->health.interval_seconds : 30;
	h->degraded_ms = cfg->health.degraded_ms > 0 ?
	    cfg->health.degraded_ms : 100;
	pthread_mutex_init(&h->mu, NULL);
	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	pthread_cond_init(&h->cv, &ca);
	pthread_condattr_destroy(&ca);
	nt = hsm_ntokens(hsm);
	h->n = nt < HEALTH_MAX_ENTRIES ? nt : HEALTH_MAX_ENTRIES;
	if (nt > HEALTH_MAX_ENTRIES)
		log_warn("health: %zu tokens; GetHealthStatus reports the "
		    "first %d", nt, HEALTH_MAX_ENTRIES);
	for (i = 0; i < HEALTH_MAX_ENTRIES; i++) {
		h->slot[i].e.status = HEALTH_UNAVAILABLE;
		h->slot[i].reported = -1;
	}
	health_check(h);
	if (pthread_create(&h->th, NULL, health_main, h) != 0) {
		log_err("health: cannot start the health thread");
		goto out;
	}
	h->started = 1;
	r = h;
	h = NULL;
 out:
	health_free(h);
	return r;
}

void
health_free(struct health *h)
{
	if (h == NULL)
		return;
	if (h->started) {
		pthread_mutex_lock(&h->mu);
		h->stop = 1;
		pthread_cond_broadcast(&h->cv);
		pthread_mutex_unlock(&h->mu);
		pthread_join(h->th, NULL);
	}
	pthread_cond_destroy(&h->cv);
	pthread_mutex_destroy(&h->mu);
	free(h);
}

size_t
health_get(struct health *h, struct health_entry *out, size_t max)
{
	uint64_t now = util_now_us();
	size_t i, n;

	if (h == NULL)
		return 0;
	pthread_mutex_lock(&h->mu);
	n = h->n < max ? h->n : max;
	for (i = 0; i < n; i++) {
		out[i] = h->slot[i].e;
		if (h->slot[i].at_us == 0 ||
		    now - h->slot[i].at_us > HEALTH_MAX_AGE_US)
			out[i].status = HEALTH_UNAVAILABLE;
	}
	pthread_mutex_unlock(&h->mu);
	return n;
}

int
health_serving(struct health *h)
{
	struct health_entry e[HEALTH_MAX_ENTRIES];
	size_t i, n = health_get(h, e, HEALTH_MAX_ENTRIES);

	for (i = 0; i < n; i++)
		if (e[i].status != HEALTH_UNAVAILABLE)
			return 1;
	return 0;
}
