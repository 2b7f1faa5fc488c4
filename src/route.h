/*
 * route.h -- which key store, operation and key a request path names.
 */
#ifndef XKS_ROUTE_H
#define XKS_ROUTE_H

#include <stddef.h>

#include "xerr.h"

struct cfg;
struct cfg_keystore;

enum xks_op {
	XKS_OP_NONE = 0,
	XKS_OP_HEALTH,        /* POST <path>/health */
	XKS_OP_METADATA,      /* POST <path>/keys/<id>/metadata */
	XKS_OP_ENCRYPT,       /* POST <path>/keys/<id>/encrypt */
	XKS_OP_DECRYPT,       /* POST <path>/keys/<id>/decrypt */
};

struct route {
	const struct cfg_keystore *keystore;
	size_t keystore_index;
	const char *base;             /* the matched keystores[].paths entry */
	enum xks_op op;
	char key_id[129];             /* "" for health */
};

/*
 * Match a raw request path (no query) against every keystores[].paths
 * entry of cfg.  Returns XERR_OK and fills out, or XERR_INVALID_URI_PATH.
 * The method is not looked at (the caller answers 405 for a non-POST on a
 * matched route).
 */
enum xerr route_match(const struct cfg *cfg, const char *path,
    struct route *out);

/* "GetHealthStatus", "GetKeyMetadata", "Encrypt", "Decrypt", "-". */
const char *route_op_name(enum xks_op op);

#endif
