#include "config.h"

#include <string.h>

#include "cfg.h"
#include "route.h"

const char *
route_op_name(enum xks_op op)
{
	switch (op) {
	case XKS_OP_HEALTH: return "GetHealthStatus";
	case XKS_OP_METADATA: return "GetKeyMetadata";
	case XKS_OP_ENCRYPT: return "Encrypt";
	case XKS_OP_DECRYPT: return "Decrypt";
	default: return "-";
	}
}

/* rest is what follows a matched base path: "/health" or "/keys/<id>/<op>" */
static enum xerr
route_rest(const char *rest, struct route *out)
{
	static const struct {
		const char *name;
		enum xks_op op;
	} ops[] = {
		{ "metadata", XKS_OP_METADATA },
		{ "encrypt", XKS_OP_ENCRYPT },
		{ "decrypt", XKS_OP_DECRYPT },
	};
	const char *id, *slash;
	size_t idlen, i;

	if (strcmp(rest, "/health") == 0) {
		out->op = XKS_OP_HEALTH;
		out->key_id[0] = '\0';
		return XERR_OK;
	}
	if (strncmp(rest, "/keys/", 6) != 0)
		return XERR_INVALID_URI_PATH;
	id = rest + 6;
	if ((slash = strchr(id, '/')) == NULL)
		return XERR_INVALID_URI_PATH;
	idlen = (size_t)(slash - id);
	if (!cfg_valid_key_id(id, idlen))
		return XERR_INVALID_URI_PATH;
	for (i = 0; i < sizeof(ops) / sizeof(ops[0]); i++) {
		if (strcmp(slash + 1, ops[i].name) == 0) {
			memcpy(out->key_id, id, idlen);
			out->key_id[idlen] = '\0';
			out->op = ops[i].op;
			return XERR_OK;
		}
	}
	return XERR_INVALID_URI_PATH;
}

enum xerr
route_match(const struct cfg *cfg, const char *path, struct route *out)
{
	size_t k, p, blen;

	memset(out, 0, sizeof(*out));
	for (k = 0; k < cfg->nkeystores; k++) {
		const struct cfg_keystore *ks = &cfg->keystores[k];
		for (p = 0; p < ks->npaths; p++) {
			blen = strlen(ks->paths[p]);
			if (strncmp(path, ks->paths[p], blen) != 0)
				continue;
			if (route_rest(path + blen, out) != XERR_OK)
				continue;
			out->keystore = ks;
			out->keystore_index = k;
			out->base = ks->paths[p];
			return XERR_OK;
		}
	}
	memset(out, 0, sizeof(*out));
	return XERR_INVALID_URI_PATH;
}
