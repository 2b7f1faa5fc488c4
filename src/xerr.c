#include "config.h"

#include "xerr.h"

static const struct {
	int status;
	const char *name;
} xerr_table[XERR__MAX] = {
	[XERR_OK] = { 200, "OK" },
	[XERR_INTERNAL] = { 500, "InternalException" },
	[XERR_VALIDATION] = { 400, "ValidationException" },
	[XERR_INVALID_STATE] = { 400, "InvalidStateException" },
	[XERR_INVALID_CIPHERTEXT] = { 400, "InvalidCiphertextException" },
	[XERR_INVALID_KEY_USAGE] = { 400, "InvalidKeyUsageException" },
	[XERR_AUTH_FAILED] = { 401, "AuthenticationFailedException" },
	[XERR_ACCESS_DENIED] = { 403, "AccessDeniedException" },
	[XERR_KEY_NOT_FOUND] = { 404, "KeyNotFoundException" },
	[XERR_INVALID_URI_PATH] = { 404, "InvalidUriPathException" },
	[XERR_METHOD_NOT_ALLOWED] = { 405, "UnsupportedOperationException" },
	[XERR_BAD_REQUEST] = { 400, "ValidationException" },
	[XERR_LENGTH_REQUIRED] = { 411, "ValidationException" },
	[XERR_BODY_TOO_LARGE] = { 413, "ValidationException" },
	[XERR_HEADERS_TOO_LARGE] = { 431, "ValidationException" },
	[XERR_THROTTLING] = { 429, "ThrottlingException" },
	[XERR_UNSUPPORTED] = { 501, "UnsupportedOperationException" },
	[XERR_HTTP_VERSION] = { 505, "UnsupportedOperationException" },
	[XERR_DEPENDENCY_TIMEOUT] = { 503, "DependencyTimeoutException" },
	[XERR_UNAVAILABLE] = { 500, "InternalException" },
};

int
xerr_http_status(enum xerr e)
{
	if ((unsigned)e >= XERR__MAX)
		return 500;
	return xerr_table[e].status;
}

const char *
xerr_name(enum xerr e)
{
	if ((unsigned)e >= XERR__MAX)
		return "InternalException";
	return xerr_table[e].name;
}

const char *
xerr_reason_phrase(int status)
{
	switch (status) {
	case 200: return "OK";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 411: return "Length Required";
	case 413: return "Content Too Large";
	case 429: return "Too Many Requests";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 503: return "Service Unavailable";
	case 505: return "HTTP Version Not Supported";
	default: return "Unknown";
	}
}
