/*
 * xerr.h -- the one error namespace of xksproxy.
 *
 * Every failure that can reach a client is one of these codes.  Exactly one
 * table (xerr.c) maps a code to its HTTP status and XKS errorName.
 */
#ifndef XKS_XERR_H
#define XKS_XERR_H

enum xerr {
	XERR_OK = 0,
	XERR_INTERNAL,            /* 500 InternalException */
	XERR_VALIDATION,          /* 400 ValidationException */
	XERR_INVALID_STATE,       /* 400 InvalidStateException */
	XERR_INVALID_CIPHERTEXT,  /* 400 InvalidCiphertextException */
	XERR_INVALID_KEY_USAGE,   /* 400 InvalidKeyUsageException */
	XERR_AUTH_FAILED,         /* 401 AuthenticationFailedException */
	XERR_ACCESS_DENIED,       /* 403 AccessDeniedException */
	XERR_KEY_NOT_FOUND,       /* 404 KeyNotFoundException */
	XERR_INVALID_URI_PATH,    /* 404 InvalidUriPathException */
	XERR_METHOD_NOT_ALLOWED,  /* 405 (HTTP level, Allow: POST) */
	XERR_BAD_REQUEST,         /* 400 malformed HTTP request */
	XERR_LENGTH_REQUIRED,     /* 411 POST without Content-Length */
	XERR_BODY_TOO_LARGE,      /* 413 body above limits.max_body_bytes */
	XERR_HEADERS_TOO_LARGE,   /* 431 request head above limits */
	XERR_THROTTLING,          /* 429 ThrottlingException */
	XERR_UNSUPPORTED,         /* 501 UnsupportedOperationException */
	XERR_HTTP_VERSION,        /* 505 HTTP version not supported */
	XERR_DEPENDENCY_TIMEOUT,  /* 503 DependencyTimeoutException */
	XERR_UNAVAILABLE,         /* 500 InternalException: no HSM token can serve */
	XERR__MAX
};

/* HTTP status for an error code (200 for XERR_OK). */
int xerr_http_status(enum xerr e);

/* XKS errorName for an error code (a static string, never NULL). */
const char *xerr_name(enum xerr e);

/* HTTP reason phrase for a status code (a static string). */
const char *xerr_reason_phrase(int status);

#endif
