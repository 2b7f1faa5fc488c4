/*
 * fuzz_cfg.c -- the configuration file.
 *
 * The input is the file's text (cfg_load_string() reads up to the first
 * NUL).  A failure must leave *out NULL and one printable line in err that
 * names the file; a success must give a configuration that holds what
 * cfg.h promises, and every path it lists must route to its own key store.
 * File names in the input are opened read-only (secret and PIN files):
 * the fuzzer may find real files, it never writes any.
 */
#include "config.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cfg.h"
#include "log.h"
#include "route.h"
#include "xerr.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define FUZZ_NAME "fuzz.conf"

static void
fuzz_check_err(const char *err, size_t cap)
{
	size_t i, n;

	if (memchr(err, '\0', cap) == NULL)
		abort();
	n = strlen(err);
	if (n <= strlen(FUZZ_NAME ": ") ||
	    strncmp(err, FUZZ_NAME ": ", strlen(FUZZ_NAME ": ")) != 0)
		abort();
	/* one line for the log: no control characters from the file */
	for (i = 0; i < n; i++)
		if ((unsigned char)err[i] < 0x20 || (unsigned char)err[i] == 0x7f)
			abort();
}

static void
fuzz_check_cfg(const struct cfg *cfg)
{
	char path[160];
	struct route r;
	size_t k, p, i;

	if (cfg->nlisten < 1 || cfg->tls.ncertificates < 1 ||
	    cfg->hsm.ntokens < 1 || cfg->nkeystores < 1 ||
	    cfg->hsm.module == NULL ||
	    (cfg->hsm.pin_file == NULL) == (cfg->hsm.pin_env == NULL))
		abort();
	for (i = 0; i < cfg->nlisten; i++)
		if (cfg->listen[i].port < 1 || cfg->listen[i].port > 65535)
			abort();
	if (cfg->limits.max_plaintext_bytes < 4300 ||
	    cfg->limits.max_aad_bytes < 8192 ||
	    cfg->limits.max_aad_bytes > 65535)
		abort();
	for (k = 0; k < cfg->nkeystores; k++) {
		const struct cfg_keystore *ks = &cfg->keystores[k];

		if (ks->npaths < 1 || ks->ncredentials < 1 ||
		    (ks->nkeys < 1 && !ks->all_keys))
			abort();
		for (i = 0; i < ks->ncredentials; i++)
			if (ks->credentials[i].secret == NULL ||
			    ks->credentials[i].secret_len < 43 ||
			    ks->credentials[i].secret_len > 64)
				abort();
		for (p = 0; p < ks->npaths; p++) {
			if (!cfg_valid_uri_path(ks->paths[p]))
				abort();
			/* paths are unique: each one routes to its own store */
			snprintf(path, sizeof(path), "%s/health", ks->paths[p]);
			if (route_match(cfg, path, &r) != XERR_OK ||
			    r.keystore_index != k ||
			    strcmp(r.base, ks->paths[p]) != 0)
				abort();
		}
		for (i = 0; i < ks->nkeys; i++)
			if (!cfg_valid_key_id(ks->keys[i], strlen(ks->keys[i])) ||
			    !cfg_keystore_has_key(ks, ks->keys[i]))
				abort();
	}
}

int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	static int quiet;
	struct cfg *cfg = (struct cfg *)&quiet;
	char err[1024], *text;

	if (!quiet) {
		/* loose-permission warnings about files the fuzzer named */
		log_configure(LOG_LVL_ERROR, LOG_FMT_TEXT);
		quiet = 1;
	}
	if ((text = malloc(size + 1)) == NULL)
		return 0;
	if (size > 0)
		memcpy(text, data, size);
	text[size] = '\0';

	memset(err, 0x5a, sizeof(err));
	if (cfg_load_string(FUZZ_NAME, text, &cfg, err, sizeof(err)) == 0) {
		if (cfg == NULL)
			abort();
		fuzz_check_cfg(cfg);
		cfg_free(cfg);
	} else {
		if (cfg != NULL)
			abort();
		fuzz_check_err(err, sizeof(err));
	}
	cfg_free(NULL);
	free(text);
	return 0;
}
