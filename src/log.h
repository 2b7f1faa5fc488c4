/*
 * log.h -- logging to stderr, as text or as one JSON object per line.
 *
 * Thread-safe: each record is formatted into one buffer.  Until
 * log_writer_start() it is written at once with a single write(2); after
 * it, records are appended to a bounded in-memory queue that a writer
 * thread writes out, so an event loop never waits for stderr (a slow
 * journald, a full pipe, a disk in writeback).  Untrusted strings passed
 * as fields are escaped and bounded.  Never pass plaintext, PINs or
 * secrets to any of these.
 */
#ifndef XKS_LOG_H
#define XKS_LOG_H

#include <stddef.h>

enum log_level { LOG_LVL_ERROR = 0, LOG_LVL_WARN, LOG_LVL_INFO, LOG_LVL_DEBUG };
enum log_format { LOG_FMT_TEXT = 0, LOG_FMT_JSON };

/* Set level and format (atomic; callable from a reload). */
void log_configure(enum log_level level, enum log_format format);

/* Parse "error"/"warn"/"info"/"debug"; -1 if unknown. */
int log_level_parse(const char *s);
/* Parse "text"/"json"; -1 if unknown. */
int log_format_parse(const char *s);

/* True when records at this level are written. */
int log_enabled(enum log_level level);

/* A free-form message record. */
void log_msg(enum log_level level, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

#define log_err(...)   log_msg(LOG_LVL_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg(LOG_LVL_WARN, __VA_ARGS__)
#define log_info(...)  log_msg(LOG_LVL_INFO, __VA_ARGS__)
#define log_debug(...) do { if (log_enabled(LOG_LVL_DEBUG)) log_msg(LOG_LVL_DEBUG, __VA_ARGS__); } while (0)

/*
 * Start the writer thread: from now on records are queued (at most
 * LOG_QUEUE_BYTES; beyond that they are dropped and counted, and the count
 * is logged when the output catches up) and written in batches, at most
 * one write(2) per LOG_BATCH_MS while records keep coming.  Returns 0, or
 * -1 (records are then written directly, as before).
 */
int log_writer_start(void);

/* Write out what is queued, stop the thread; direct writes again. */
void log_writer_stop(void);

/* Drain OpenSSL's error queue of this thread into the log, prefixed by what. */
void log_crypto_err(const char *what);

/*
 * A structured record: pairs of key, value (strings; NULL values omitted),
 * terminated by a NULL key.  In text format "msg key=value ...", values
 * quoted when needed; in JSON format one object.
 */
void log_fields(enum log_level level, const char *msg, ...);

#endif
