/*
 * health.h -- the deep health check, run in the background.
 *
 * A thread runs, every health.interval_seconds, an encrypt + decrypt of a
 * fixed test message on the canary key (hsm.health_key) on every token,
 * timed, and stores the result.  Readers (GetHealthStatus, the load
 * balancer check) only read the stored result: no HSM call, so they answer
 * at once.  A result older than 60 s counts as UNAVAILABLE.
 */
#ifndef XKS_HEALTH_H
#define XKS_HEALTH_H

#include <stddef.h>

struct cfg;
struct hsm;
struct health;

enum health_status { HEALTH_ACTIVE = 0, HEALTH_DEGRADED, HEALTH_UNAVAILABLE };

struct health_entry {
	char id[96];
	char model[160];
	enum health_status status;
};

#define HEALTH_MAX_ENTRIES 10   /* ekmFleetDetails holds 1..10 entries */

/* Start the task (runs one check before returning).  NULL on failure. */
struct health *health_new(struct hsm *hsm, const struct cfg *cfg);

/* Stop and free.  NULL-safe. */
void health_free(struct health *h);

/* Copy the current result (at most max entries); returns the count. */
size_t health_get(struct health *h, struct health_entry *out, size_t max);

/* True when at least one token is ACTIVE or DEGRADED (load balancer check). */
int health_serving(struct health *h);

/* "ACTIVE", "DEGRADED", "UNAVAILABLE". */
const char *health_status_name(enum health_status s);

#endif
