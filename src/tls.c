#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <pthread.h>
#include <time.h>

#include <openssl/core_names.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "cfg.h"
#include "log.h"
#include "tls.h"
#include "util.h"

/* TLS 1.3 suites the XKS spec names, then the mandatory AES-128 one. */
#define TLS13_SUITES "TLS_AES_256_GCM_SHA384:TLS_CHACHA20_POLY1305_SHA256:" \
	"TLS_AES_128_GCM_SHA256"
/* TLS 1.2: ECDHE with AEAD only; the spec's two AES-256 suites first. */
#define TLS12_CIPHERS "ECDHE-ECDSA-AES256-GCM-SHA384:ECDHE-RSA-AES256-GCM-SHA384:" \
	"ECDHE-ECDSA-CHACHA20-POLY1305:ECDHE-RSA-CHACHA20-POLY1305:" \
	"ECDHE-ECDSA-AES128-GCM-SHA256:ECDHE-RSA-AES128-GCM-SHA256"

struct tls_ctx {
	SSL_CTX **ctxs;               /* one per tls.certificates entry */
	X509 **leaves;                /* borrowed from ctxs, for SNI */
	size_t nctxs;
	char **subjects;              /* tls.client_subjects (copies) */
	size_t nsubjects;
	/* session id context: binds resumption to the client-auth settings,
	 * so a reload that changes them forces a full handshake */
	unsigned char sid_ctx[SSL_MAX_SID_CTX_LENGTH];
};

/* Why a client certificate was refused, kept with the SSL for the log. */
struct tls_peer {
	char reason[128];
	char subject[256];
};

static int tls_ex_index = -1;
static int tls_peer_index = -1;

/*
 * Session-ticket keys: one process-wide ring (current + previous), so
 * tickets survive reloads and every SSL_CTX of every snapshot accepts
 * them.  The current key is replaced every TLS_TICKET_ROTATE seconds; a
 * ticket made with the previous one is still accepted (and renewed), so a
 * ticket lives at most two periods.  Keys are random, never written out,
 * and wiped when replaced.
 */
#define TLS_TICKET_ROTATE 3600
struct tls_tkey {
	unsigned char name[16];
	unsigned char aes[32];
	unsigned char hmac[32];
};
static pthread_mutex_t tls_tkey_lock = PTHREAD_MUTEX_INITIALIZER;
static struct tls_tkey tls_tkeys[2];      /* [0] current, [1] previous */
static time_t tls_tkey_born;              /* 0: no key yet */

/* Rotate when due; called with tls_tkey_lock held.  -1 on RNG failure. */
static int
tls_tkey_rotate_locked(time_t now)
{
	struct tls_tkey fresh;

	if (tls_tkey_born != 0 && now - tls_tkey_born < TLS_TICKET_ROTATE)
		return 0;
	if (RAND_bytes(fresh.name, sizeof(fresh.name)) != 1 ||
	    RAND_priv_bytes(fresh.aes, sizeof(fresh.aes)) != 1 ||
	    RAND_priv_bytes(fresh.hmac, sizeof(fresh.hmac)) != 1) {
		OPENSSL_cleanse(&fresh, sizeof(fresh));
		return -1;
	}
	/* the first key has no predecessor: make [1] unusable */
	if (tls_tkey_born == 0)
		tls_tkeys[1] = fresh;
	else
		tls_tkeys[1] = tls_tkeys[0];
	tls_tkeys[0] = fresh;
	OPENSSL_cleanse(&fresh, sizeof(fresh));
	tls_tkey_born = now;
	return 0;
}

static int
tls_tkey_use(const struct tls_tkey *k, unsigned char *iv, EVP_CIPHER_CTX *ctx,
    EVP_MAC_CTX *hctx, int enc)
{
	OSSL_PARAM params[3];

	params[0] = OSSL_PARAM_construct_octet_string(OSSL_MAC_PARAM_KEY,
	    (void *)k->hmac, sizeof(k->hmac));
	params[1] = OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST,
	    (char *)"SHA256", 0);
	params[2] = OSSL_PARAM_construct_end();
	if (EVP_MAC_CTX_set_params(hctx, params) != 1)
		return -1;
	if (enc)
		return EVP_EncryptInit_ex(ctx, EVP_aes_256_cbc(), NULL, k->aes,
		    iv) == 1 ? 0 : -1;
	return EVP_DecryptInit_ex(ctx, EVP_aes_256_cbc(), NULL, k->aes, iv) == 1 ?
	    0 : -1;
}

/* OpenSSL's ticket key callback (see SSL_CTX_set_tlsext_ticket_key_evp_cb). */
static int
tls_ticket_cb(SSL *ssl, unsigned char *name, unsigned char *iv,
    EVP_CIPHER_CTX *ctx, EVP_MAC_CTX *hctx, int enc)
{
	int r = -1, i;

	(void)ssl;
	pthread_mutex_lock(&tls_tkey_lock);
	if (tls_tkey_rotate_locked(time(NULL)) != 0)
		goto out;
	if (enc) {
		if (RAND_bytes(iv, EVP_CIPHER_get_iv_length(EVP_aes_256_cbc())) != 1)
			goto out;
		memcpy(name, tls_tkeys[0].name, sizeof(tls_tkeys[0].name));
		r = tls_tkey_use(&tls_tkeys[0], iv, ctx, hctx, 1) == 0 ? 1 : -1;
		goto out;
	}
	r = 0;                          /* unknown key: full handshake */
	for (i = 0; i < 2; i++) {
		if (memcmp(name, tls_tkeys[i].name, sizeof(tls_tkeys[i].name)) != 0)
			continue;
		if (tls_tkey_use(&tls_tkeys[i], iv, ctx, hctx, 0) != 0)
			r = -1;
		else
			r = i == 0 ? 1 : 2;     /* 2: accept and issue a new ticket */
		break;
	}
 out:
	pthread_mutex_unlock(&tls_tkey_lock);
	return r;
}

static void
tls_peer_free(void *parent, void *ptr, CRYPTO_EX_DATA *ad, int idx, long argl,
    void *argp)
{
	(void)parent;
	(void)ad;
	(void)idx;
	(void)argl;
	(void)argp;
	free(ptr);
}

/* Drain OpenSSL's error queue into err. */
static void
tls_err(char *err, size_t errlen, const char *what)
{
	unsigned long e, last = 0;
	char buf[256] = "";

	while ((e = ERR_get_error()) != 0)
		last = e;
	if (last != 0)
		ERR_error_string_n(last, buf, sizeof(buf));
	snprintf(err, errlen, "%s%s%s", what, last ? ": " : "", buf);
}

static int
tls_sni_cb(SSL *ssl, int *alert, void *arg)
{
	struct tls_ctx *t = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), tls_ex_index);
	const char *name = SSL_get_servername(ssl, TLSEXT_NAMETYPE_host_name);
	size_t i;

	(void)alert;
	(void)arg;
	if (t == NULL || name == NULL || t->nctxs < 2)
		return SSL_TLSEXT_ERR_OK;
	for (i = 0; i < t->nctxs; i++) {
		if (X509_check_host(t->leaves[i], name, 0, 0, NULL) == 1) {
			if (i != 0)
				SSL_set_SSL_CTX(ssl, t->ctxs[i]);
			return SSL_TLSEXT_ERR_OK;
		}
	}
	/* no match: keep the default certificate */
	return SSL_TLSEXT_ERR_OK;
}

static int
tls_alpn_cb(SSL *ssl, const unsigned char **out, unsigned char *outlen,
    const unsigned char *in, unsigned int inlen, void *arg)
{
	static const unsigned char h11[] = "\x08http/1.1";
	unsigned char *sel = NULL;
	unsigned char sellen = 0;

	(void)ssl;
	(void)arg;
	if (SSL_select_next_proto(&sel, &sellen, h11, sizeof(h11) - 1, in,
	    inlen) != OPENSSL_NPN_NEGOTIATED)
		return SSL_TLSEXT_ERR_NOACK;   /* continue without ALPN */
	*out = sel;
	*outlen = sellen;
	return SSL_TLSEXT_ERR_OK;
}

/*
 * Match one allowed name against a certificate name: exact (case-insensitive,
 * as DNS names are), or with "*" standing for exactly one whole label.
 */
static int
tls_name_match(const char *pattern, const char *name)
{
	const char *p = pattern, *n = name;

	while (*p != '\0') {
		if (p[0] == '*' && (p[1] == '.' || p[1] == '\0') &&
		    (p == pattern || p[-1] == '.')) {
			const char *dot = strchr(n, '.');
			size_t lab = dot != NULL ? (size_t)(dot - n) : strlen(n);
			if (lab == 0)
				return 0;
			n += lab;
			p++;
			continue;
		}
		if (*n == '\0' || (*p | 0x20) != (*n | 0x20))
			return 0;
		p++;
		n++;
	}
	return *n == '\0';
}

/* True when the leaf's CN or one of its DNS SANs is an allowed subject. */
static int
tls_subject_allowed(const struct tls_ctx *t, X509 *cert, char *cn, size_t cnlen)
{
	GENERAL_NAMES *sans;
	X509_NAME *subj = X509_get_subject_name(cert);
	size_t i;
	int j, ok = 0;

	cn[0] = '\0';
	if (subj != NULL)
		X509_NAME_get_text_by_NID(subj, NID_commonName, cn, (int)cnlen);
	for (i = 0; i < t->nsubjects && !ok; i++)
		if (cn[0] != '\0' && tls_name_match(t->subjects[i], cn))
			ok = 1;
	sans = X509_get_ext_d2i(cert, NID_subject_alt_name, NULL, NULL);
	for (j = 0; sans != NULL && j < sk_GENERAL_NAME_num(sans) && !ok; j++) {
		const GENERAL_NAME *g = sk_GENERAL_NAME_value(sans, j);
		const unsigned char *d;
		int dl;
		char dns[256];
		if (g->type != GEN_DNS)
			continue;
		d = ASN1_STRING_get0_data(g->d.dNSName);
		dl = ASN1_STRING_length(g->d.dNSName);
		if (dl <= 0 || (size_t)dl >= sizeof(dns) ||
		    memchr(d, '\0', (size_t)dl) != NULL)
			continue;
		memcpy(dns, d, (size_t)dl);
		dns[dl] = '\0';
		for (i = 0; i < t->nsubjects && !ok; i++)
			if (tls_name_match(t->subjects[i], dns))
				ok = 1;
	}
	GENERAL_NAMES_free(sans);
	return ok;
}

static void
tls_peer_note(SSL *ssl, const char *reason, X509 *cert)
{
	struct tls_peer *p = SSL_get_ex_data(ssl, tls_peer_index);

	if (p == NULL) {
		if ((p = calloc(1, sizeof(*p))) == NULL)
			return;
		if (SSL_set_ex_data(ssl, tls_peer_index, p) != 1) {
			free(p);
			return;
		}
	}
	snprintf(p->reason, sizeof(p->reason), "%s", reason);
	if (cert != NULL)
		X509_NAME_oneline(X509_get_subject_name(cert), p->subject,
		    sizeof(p->subject));
}

/*
 * Every refusal is reported as X509_V_ERR_APPLICATION_VERIFICATION, which
 * OpenSSL answers with a handshake_failure alert: the client learns that it
 * was refused, not which check failed (the log says which).
 */
static int
tls_verify_cb(int ok, X509_STORE_CTX *xs)
{
	SSL *ssl = X509_STORE_CTX_get_ex_data(xs,
	    SSL_get_ex_data_X509_STORE_CTX_idx());
	struct tls_ctx *t = SSL_CTX_get_ex_data(SSL_get_SSL_CTX(ssl), tls_ex_index);
	X509 *cert = X509_STORE_CTX_get_current_cert(xs);
	char cn[256];

	if (!ok) {
		tls_peer_note(ssl, X509_verify_cert_error_string(
		    X509_STORE_CTX_get_error(xs)), X509_STORE_CTX_get0_cert(xs));
		X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
		return 0;
	}
	if (X509_STORE_CTX_get_error_depth(xs) != 0 || t == NULL)
		return 1;
	if (!tls_subject_allowed(t, cert, cn, sizeof(cn))) {
		tls_peer_note(ssl, "subject not in tls.client_subjects", cert);
		X509_STORE_CTX_set_error(xs, X509_V_ERR_APPLICATION_VERIFICATION);
		return 0;
	}
	return 1;
}

static int
tls_mtls_setup(SSL_CTX *ctx, const struct cfg *cfg, char *err, size_t errlen)
{
	STACK_OF(X509_NAME) *names;
	char what[512];

	snprintf(what, sizeof(what), "%s: tls.client_ca_file: %s", cfg->file,
	    cfg->tls.client_ca_file);
	if (SSL_CTX_load_verify_locations(ctx, cfg->tls.client_ca_file,
	    NULL) != 1 ||
	    (names = SSL_load_client_CA_file(cfg->tls.client_ca_file)) == NULL) {
		tls_err(err, errlen, what);
		return -1;
	}
	SSL_CTX_set_client_CA_list(ctx, names);
	/* the client certificate must be fit for TLS client authentication */
	SSL_CTX_set_purpose(ctx, X509_PURPOSE_SSL_CLIENT);
	SSL_CTX_set_verify(ctx, SSL_VERIFY_PEER | SSL_VERIFY_FAIL_IF_NO_PEER_CERT,
	    tls_verify_cb);
	SSL_CTX_set_verify_depth(ctx, 8);
	return 0;
}

static SSL_CTX *
tls_ctx_one(const struct cfg *cfg, size_t i, struct tls_ctx *t, char *err,
    size_t errlen)
{
	const struct cfg_cert *c = &cfg->tls.certificates[i];
	SSL_CTX *ctx = NULL, *ret = NULL;
	char what[512];

	if ((ctx = SSL_CTX_new(TLS_server_method())) == NULL) {
		tls_err(err, errlen, "SSL_CTX_new");
		goto out;
	}
	SSL_CTX_set_min_proto_version(ctx, TLS1_2_VERSION);
	SSL_CTX_set_max_proto_version(ctx, TLS1_3_VERSION);
	SSL_CTX_set_options(ctx, SSL_OP_NO_COMPRESSION | SSL_OP_NO_RENEGOTIATION |
	    SSL_OP_CIPHER_SERVER_PREFERENCE | SSL_OP_CLEANSE_PLAINTEXT);
	/*
	 * No SSL_MODE_RELEASE_BUFFERS: it frees (and, with CLEANSE_PLAINTEXT,
	 * wipes) the 16 kB read and write buffers after every record, i.e.
	 * twice per request.  The server releases them itself when a
	 * connection goes idle, except on the first few connections of each
	 * loop (src/server.c, conn_write_done), so idle connections still
	 * cost ~18 kB and busy ones no allocation per request.
	 */
	if (SSL_CTX_set_ciphersuites(ctx, TLS13_SUITES) != 1 ||
	    SSL_CTX_set_cipher_list(ctx, TLS12_CIPHERS) != 1) {
		tls_err(err, errlen, "cipher configuration");
		goto out;
	}
	if (SSL_CTX_set1_groups_list(ctx, "X25519:P-256:P-384") != 1) {
		tls_err(err, errlen, "group configuration");
		goto out;
	}
	snprintf(what, sizeof(what), "%s: tls.certificates[%zu].certificate_file: %s",
	    cfg->file, i, c->certificate_file);
	if (SSL_CTX_use_certificate_chain_file(ctx, c->certificate_file) != 1) {
		tls_err(err, errlen, what);
		goto out;
	}
	snprintf(what, sizeof(what), "%s: tls.certificates[%zu].private_key_file: %s",
	    cfg->file, i, c->private_key_file);
	if (SSL_CTX_use_PrivateKey_file(ctx, c->private_key_file,
	    SSL_FILETYPE_PEM) != 1) {
		tls_err(err, errlen, what);
		goto out;
	}
	if (SSL_CTX_check_private_key(ctx) != 1) {
		ERR_clear_error();
		snprintf(err, errlen, "%s: does not match the certificate %s",
		    what, c->certificate_file);
		goto out;
	}
	if (cfg->tls.client_ca_file != NULL &&
	    tls_mtls_setup(ctx, cfg, err, errlen) != 0)
		goto out;
	SSL_CTX_set_session_id_context(ctx, t->sid_ctx, sizeof(t->sid_ctx));
	/* resumption by tickets, keys rotated (see tls_ticket_cb); a ticket
	 * is honoured for at most one rotation period */
	SSL_CTX_set_tlsext_ticket_key_evp_cb(ctx, tls_ticket_cb);
	SSL_CTX_set_timeout(ctx, TLS_TICKET_ROTATE);
	SSL_CTX_set_num_tickets(ctx, 1);
	SSL_CTX_set_alpn_select_cb(ctx, tls_alpn_cb, NULL);
	SSL_CTX_set_tlsext_servername_callback(ctx, tls_sni_cb);
	SSL_CTX_set_ex_data(ctx, tls_ex_index, t);
	ret = ctx;
	ctx = NULL;
 out:
	SSL_CTX_free(ctx);
	return ret;
}

/*
 * The session id context: SHA-256 over the client CA file and the allowed
 * subjects.  OpenSSL refuses to resume a session (ID or ticket) made under
 * another context, so a session that passed an older mTLS policy cannot
 * skip the new one.
 */
static int
tls_sid_ctx(const struct cfg *cfg, unsigned char out[SSL_MAX_SID_CTX_LENGTH],
    char *err, size_t errlen)
{
	EVP_MD_CTX *md = NULL;
	unsigned char *ca = NULL;
	size_t calen = 0, i;
	unsigned int n = 0;
	int r = -1;

	if (cfg->tls.client_ca_file != NULL &&
	    util_read_file(cfg->tls.client_ca_file, 16u << 20, 0, &ca, &calen,
	    err, errlen) != 0)
		return -1;
	if ((md = EVP_MD_CTX_new()) == NULL ||
	    EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 ||
	    EVP_DigestUpdate(md, "xksproxy", 8) != 1 ||
	    (ca != NULL && EVP_DigestUpdate(md, ca, calen) != 1)) {
		tls_err(err, errlen, "session id context");
		goto out;
	}
	for (i = 0; i < cfg->tls.nclient_subjects; i++)
		if (EVP_DigestUpdate(md, cfg->tls.client_subjects[i],
		    strlen(cfg->tls.client_subjects[i]) + 1) != 1) {
			tls_err(err, errlen, "session id context");
			goto out;
		}
	if (EVP_DigestFinal_ex(md, out, &n) != 1 || n != SSL_MAX_SID_CTX_LENGTH) {
		tls_err(err, errlen, "session id context");
		goto out;
	}
	r = 0;
 out:
	EVP_MD_CTX_free(md);
	free(ca);
	return r;
}

int
tls_ctx_new(const struct cfg *cfg, struct tls_ctx **out, char *err,
    size_t errlen)
{
	struct tls_ctx *t = NULL;
	size_t i;
	int r = -1;

	*out = NULL;
	if (tls_ex_index < 0)
		tls_ex_index = SSL_CTX_get_ex_new_index(0, NULL, NULL, NULL, NULL);
	if (tls_peer_index < 0)
		tls_peer_index = SSL_get_ex_new_index(0, NULL, NULL, NULL,
		    tls_peer_free);
	if ((t = calloc(1, sizeof(*t))) == NULL ||
	    (t->ctxs = calloc(cfg->tls.ncertificates, sizeof(*t->ctxs))) == NULL ||
	    (t->leaves = calloc(cfg->tls.ncertificates, sizeof(*t->leaves))) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto out;
	}
	if (tls_sid_ctx(cfg, t->sid_ctx, err, errlen) != 0)
		goto out;
	if (cfg->tls.nclient_subjects > 0) {
		if ((t->subjects = calloc(cfg->tls.nclient_subjects,
		    sizeof(*t->subjects))) == NULL) {
			snprintf(err, errlen, "out of memory");
			goto out;
		}
		for (i = 0; i < cfg->tls.nclient_subjects; i++) {
			if ((t->subjects[i] = strdup(cfg->tls.client_subjects[i])) == NULL) {
				snprintf(err, errlen, "out of memory");
				goto out;
			}
			t->nsubjects++;
		}
	}
	for (i = 0; i < cfg->tls.ncertificates; i++) {
		if ((t->ctxs[i] = tls_ctx_one(cfg, i, t, err, errlen)) == NULL)
			goto out;
		t->nctxs++;
		t->leaves[i] = SSL_CTX_get0_certificate(t->ctxs[i]);
	}
	*out = t;
	t = NULL;
	r = 0;
 out:
	tls_ctx_free(t);
	return r;
}

SSL *
tls_ssl_new(struct tls_ctx *t)
{
	SSL *ssl = SSL_new(t->ctxs[0]);

	if (ssl == NULL)
		log_crypto_err("SSL_new");
	return ssl;
}

void
tls_ctx_free(struct tls_ctx *t)
{
	size_t i;

	if (t == NULL)
		return;
	for (i = 0; i < t->nctxs; i++)
		SSL_CTX_free(t->ctxs[i]);
	for (i = 0; i < t->nsubjects; i++)
		free(t->subjects[i]);
	free(t->subjects);
	free(t->ctxs);
	free(t->leaves);
	free(t);
}

int
tls_peer_refused(SSL *ssl, char *reason, size_t reasonlen, char *subject,
    size_t subjectlen)
{
	struct tls_peer *p = tls_peer_index < 0 ? NULL :
	    SSL_get_ex_data(ssl, tls_peer_index);

	if (p == NULL)
		return 0;
	snprintf(reason, reasonlen, "%s", p->reason);
	snprintf(subject, subjectlen, "%s", p->subject[0] != '\0' ?
	    p->subject : "-");
	return 1;
}
