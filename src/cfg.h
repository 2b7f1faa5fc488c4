/*
 * cfg.h -- the configuration file: load, validate, free.
 *
 * The file is JSON with comments (json-c).  Every key below is validated for
 * type and range; an unknown key is an error.  Every error message has the
 * form  "<file>: <key path>: <what is wrong>", e.g.
 *   "/etc/xksproxy/xksproxy.conf: keystores[0].credentials[1].access_key_id:
 *    must be 20 to 30 characters of A-Z and 2-7"
 * A struct cfg is immutable once cfg_load() returns it; it is shared
 * read-only between threads.  Secrets in it are wiped by cfg_free().
 *
 * Keys, types, ranges and defaults (the contract; conf/xksproxy.conf.example
 * and xksproxy.conf(5) document the same):
 *
 *  listen                 array (>= 1) of { address: string (IPv4/IPv6
 *                         literal or "localhost"), port: 1..65535 }  required
 *  worker_threads         int 0..256, 0 = one per core               default 0
 *  tls.certificates       array (>= 1) of { certificate_file: path (leaf +
 *                         chain, PEM), private_key_file: path (PEM: PKCS#8,
 *                         SEC1 EC or PKCS#1 RSA) }; SNI picks by name, the
 *                         first is the default                          required
 *  tls.client_ca_file     path or null; set: mTLS required           default null
 *  tls.client_subjects    array of strings (CN / DNS SAN; one "*" label
 *                         allowed); required non-empty when client_ca_file
 *                         is set                                      default []
 *  health_listen          null or { address: string, port: 1..65535,
 *                         path: string starting with "/" (default "/ping") }
 *                                                                    default null
 *  hsm.module             string: a path or a p11-kit module name     required
 *  hsm.tokens             array (>= 1) of PKCS#11 URIs (RFC 7512)     required
 *  hsm.pin_file           path  } exactly one of the two              required
 *  hsm.pin_env            string (environment variable name) }
 *  hsm.sessions_per_token int 1..256                                  default 8
 *  hsm.health_key         string 1..128 (CKA_LABEL of the canary key)
 *                                                             default "xks-health"
 *  hsm.iv                 "proxy" | "hsm"                       default "proxy"
 *  hsm.timeout_ms         int 10..60000                             default 200
 *  hsm.queue_size         int 1..1000000 (jobs waiting, all tokens) default 4096
 *  health.interval_seconds int 1..3600                              default 30
 *  health.fleet_size      int 1..1000                                 default 1
 *  health.proxy_vendor    string 1..128                      default "xksproxy"
 *  health.proxy_model     string 1..128            default "xksproxy <version>"
 *  health.ekm_vendor      string 1..128                   default "PKCS#11 HSM"
 *  health.degraded_ms     int 1..60000: a canary round trip slower than this
 *                         makes the token DEGRADED                  default 100
 *  keystores              array (>= 1) of:                            required
 *    paths                array (>= 1) of XksProxyUriPath (<= 128 chars of
 *                         a-zA-Z0-9/-_, starts with "/", ends with
 *                         "/kms/xks/v1"); unique across all key stores
 *    credentials          array (>= 1) of { access_key_id: 20..30 of A-Z2-7,
 *                         secret_access_key: 43..64 of A-Za-z0-9+/=  } or
 *                         secret_access_key_file: path (one of the two),
 *                         not_after: "YYYY-MM-DDTHH:MM:SSZ" (optional) };
 *                         access key ids unique within the key store
 *    keys                 array (>= 1) of external key ids (1..128 of
 *                         A-Za-z0-9-._) or "*" for every key on the token
 *    regions              array of strings (optional): accepted SigV4 regions;
 *                         absent or empty = any region
 *  limits.max_body_bytes  int 1024..16777216                        default 65536
 *  limits.max_header_bytes int 1024..1048576                        default 16384
 *  limits.header_timeout_ms int 100..600000                          default 5000
 *  limits.idle_timeout_ms int 100..3600000                         default 60000
 *  limits.max_connections int 1..1000000                            default 10000
 *  limits.max_connections_per_address int 0..1000000, 0 = no cap    default 0
 *  limits.max_plaintext_bytes int 4300..1048576                      default 4300
 *  limits.max_aad_bytes   int 8192..65535                            default 8192
 *  sigv4.max_clock_skew_seconds int 1..86400                          default 300
 *  log.level              "error" | "warn" | "info" | "debug"      default "info"
 *  log.format             "text" | "json"                          default "text"
 */
#ifndef XKS_CFG_H
#define XKS_CFG_H

#include <stddef.h>
#include <time.h>

struct cfg_listen {
	char *address;
	int port;
};

struct cfg_cert {
	char *certificate_file;
	char *private_key_file;
};

struct cfg_credential {
	char *access_key_id;
	unsigned char *secret;        /* wiped on free; not NUL-terminated */
	size_t secret_len;
	char *secret_file;            /* NULL when inline */
	time_t not_after;             /* 0: never expires */
};

struct cfg_keystore {
	char **paths;
	size_t npaths;
	struct cfg_credential *credentials;
	size_t ncredentials;
	char **keys;                  /* external key ids; empty when all_keys */
	size_t nkeys;
	int all_keys;                 /* "*" was listed */
	char **regions;               /* NULL/0: any region */
	size_t nregions;
};

enum cfg_iv { CFG_IV_PROXY = 0, CFG_IV_HSM };

struct cfg_hsm {
	char *module;
	char **tokens;
	size_t ntokens;
	char *pin_file;               /* exactly one of pin_file, pin_env */
	char *pin_env;
	int sessions_per_token;
	char *health_key;
	enum cfg_iv iv;
	int timeout_ms;
	int queue_size;
};

struct cfg {
	char *file;                   /* the path it was loaded from */

	struct cfg_listen *listen;
	size_t nlisten;
	int worker_threads;           /* as configured; 0 = one per core */

	struct {
		struct cfg_cert *certificates;
		size_t ncertificates;
		char *client_ca_file;         /* NULL: no mTLS */
		char **client_subjects;
		size_t nclient_subjects;
	} tls;

	struct {
		int enabled;
		char *address;
		int port;
		char *path;
	} health_listen;

	struct cfg_hsm hsm;

	struct {
		int interval_seconds;
		int fleet_size;
		char *proxy_vendor;
		char *proxy_model;
		char *ekm_vendor;
		int degraded_ms;
	} health;

	struct cfg_keystore *keystores;
	size_t nkeystores;

	struct {
		size_t max_body_bytes;
		size_t max_header_bytes;
		int header_timeout_ms;
		int idle_timeout_ms;
		int max_connections;
		int max_connections_per_address;
		size_t max_plaintext_bytes;
		size_t max_aad_bytes;
	} limits;

	struct {
		int max_clock_skew_seconds;
	} sigv4;

	struct {
		int level;                    /* enum log_level */
		int format;                   /* enum log_format */
	} log;
};

/*
 * Load and validate the file at path.  Reads secret files (warning when a
 * secret or PIN file is readable by group or others); does not touch TLS
 * files or the HSM.  On success *out owns a new cfg and 0 is returned; on
 * failure -1 is returned, *out is NULL and err holds one line naming the
 * file, the key path and the reason.
 */
int cfg_load(const char *path, struct cfg **out, char *err, size_t errlen);

/* Same, from a string (name is used in messages).  For tests and fuzzing. */
int cfg_load_string(const char *name, const char *text, struct cfg **out,
    char *err, size_t errlen);

/* Free a cfg, wiping secrets.  cfg_free(NULL) is a no-op. */
void cfg_free(struct cfg *cfg);

/* True when s is a valid XksProxyUriPath. */
int cfg_valid_uri_path(const char *s);

/* True when s is a valid external key id (1..128 of A-Za-z0-9-._). */
int cfg_valid_key_id(const char *s, size_t len);

/* True when the key store allows key id `id`. */
int cfg_keystore_has_key(const struct cfg_keystore *ks, const char *id);

#endif
