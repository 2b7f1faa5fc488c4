#include "config.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include <openssl/err.h>
#include <openssl/ssl.h>
#include <openssl/x509v3.h>

#include "cfg.h"
#include "log.h"
#include "tls.h"

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
};

static int tls_ex_index = -1;

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
	    SSL_OP_CIPHER_SERVER_PREFERENCE);
	SSL_CTX_set_mode(ctx, SSL_MODE_RELEASE_BUFFERS);
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
	SSL_CTX_set_session_id_context(ctx, (const unsigned char *)"xksproxy", 8);
	SSL_CTX_set_alpn_select_cb(ctx, tls_alpn_cb, NULL);
	SSL_CTX_set_tlsext_servername_callback(ctx, tls_sni_cb);
	SSL_CTX_set_ex_data(ctx, tls_ex_index, t);
	ret = ctx;
	ctx = NULL;
 out:
	SSL_CTX_free(ctx);
	return ret;
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
	if ((t = calloc(1, sizeof(*t))) == NULL ||
	    (t->ctxs = calloc(cfg->tls.ncertificates, sizeof(*t->ctxs))) == NULL ||
	    (t->leaves = calloc(cfg->tls.ncertificates, sizeof(*t->leaves))) == NULL) {
		snprintf(err, errlen, "out of memory");
		goto out;
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
	free(t->ctxs);
	free(t->leaves);
	free(t);
}
