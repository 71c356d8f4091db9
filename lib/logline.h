/* logline: the form of one log line (pure: a record in, text out).
 *
 *   text    distriproc serve: info: client #1 ... connected [conn=1]
 *           for people at a terminal; the message as written, the context
 *           (task, connection) appended in brackets when there is one.
 *   logfmt  ts=2026-12-03T12:00:00.123Z level=info comp=serve pid=42 conn=1 msg="client #1 ... connected"
 *           stable key=value pairs in this order; a value with a space, '=',
 *           '"', '\' or a control character is quoted, with \" \\ \n \t \r
 *           and \u00XX escapes; one line per event, always.
 *   json    {"ts":"...","level":"info","comp":"serve","pid":42,"conn":1,"msg":"..."}
 *           one object per line (jansson); bytes that are not UTF-8 become '?'.
 *
 * Keys: ts (UTC, milliseconds), level (debug, info, warning, error), comp
 * (the subcommand or daemon: serve, lazyd, restore, guard, ...), pid (of the
 * logging process), task (the daemon's task id, as "id" in `distriproc
 * stats`), conn (the page server's connection number, "#N" in messages),
 * msg. task and conn appear only when the line concerns one. */
#ifndef DP_LOGLINE_H
#define DP_LOGLINE_H

#include <stdint.h>
#include <time.h>

#include "lazystats.h"

enum dp_log_format { DP_LOG_FORMAT_TEXT, DP_LOG_FORMAT_LOGFMT, DP_LOG_FORMAT_JSON };

struct dp_log_rec {
    struct timespec ts;   /* CLOCK_REALTIME */
    const char *level;    /* "info", ... */
    const char *tag;      /* "distriproc serve": comp is the part after "distriproc " */
    long pid;
    int64_t task, conn;   /* < 0: none */
    const char *msg;
};

/* "text", "logfmt", "json" -> 0 and *out; else -1. */
int dp_log_format_parse(const char *name, enum dp_log_format *out);
/* Appends the line, with its final newline, to b (b->oom on failure). */
void dp_log_render(enum dp_log_format f, const struct dp_log_rec *r, struct dp_sbuf *b);

#endif
