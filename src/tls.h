/*
 * tls.h -- server TLS contexts built from tls.* (certificates, SNI, mTLS).
 *
 * A tls_ctx is immutable once built and belongs to one config snapshot;
 * connections keep it alive through SSL_CTX reference counts.
 */
#ifndef XKS_TLS_H
#define XKS_TLS_H

#include <stddef.h>

#include <openssl/ssl.h>

struct cfg;
struct tls_ctx;

/*
 * Build the contexts: TLS 1.2 and 1.3 only, the XKS cipher suites,
 * renegotiation and compression off, one SSL_CTX per certificate (SNI
 * picks by name, the first is the default), mTLS when client_ca_file is
 * set.  Reads the files (blocking: never on an event loop).  Returns 0, or
 * -1 with err naming the file, the key and the reason.
 */
int tls_ctx_new(const struct cfg *cfg, struct tls_ctx **out, char *err,
    size_t errlen);

/* A new server SSL for a connection, or NULL (OpenSSL errors logged). */
SSL *tls_ssl_new(struct tls_ctx *t);

/*
 * After a failed handshake: when the client certificate was refused, fill
 * reason and subject and return 1; else return 0.
 */
int tls_peer_refused(SSL *ssl, char *reason, size_t reasonlen, char *subject,
    size_t subjectlen);

/* Free.  NULL-safe.  SSLs already created stay valid. */
void tls_ctx_free(struct tls_ctx *t);

#endif
