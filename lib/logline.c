/* logline: text, logfmt and JSON forms of a log record (see logline.h). */
#include "logline.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

int dp_log_format_parse(const char *name, enum dp_log_format *out)
{
    static const struct {
        const char *name;
        enum dp_log_format f;
    } names[] = {{"text", DP_LOG_FORMAT_TEXT}, {"logfmt", DP_LOG_FORMAT_LOGFMT}, {"json", DP_LOG_FORMAT_JSON}};
    for (size_t i = 0; name && i < sizeof(names) / sizeof(names[0]); i++) {
        if (strcmp(name, names[i].name) == 0) {
            *out = names[i].f;
            return 0;
        }
    }
    return -1;
}

/* ---- fields ------------------------------------------------------------------- */

/* "serve" of "distriproc serve"; the tag itself if it has no such prefix. */
static const char *comp_of(const char *tag)
{
    return strncmp(tag, "distriproc ", 11) == 0 && tag[11] ? tag + 11 : tag;
}

/* RFC 3339 in UTC with milliseconds: sorts as text, no time zone to guess. */
static void put_ts(struct dp_sbuf *b, const struct timespec *ts)
{
    struct tm tm;
    time_t s = ts->tv_sec;
    gmtime_r(&s, &tm);
    dp_sbuf_printf(b, "%04d-%02d-%02dT%02d:%02d:%02d.%03ldZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
                   tm.tm_hour, tm.tm_min, tm.tm_sec, ts->tv_nsec / 1000000);
}

/* A logfmt value: bare when it cannot be misread, else quoted and escaped so
 * the line stays one line and splits back exactly. */
static void put_logfmt_value(struct dp_sbuf *b, const char *v)
{
    int quote = *v == '\0';
    for (const unsigned char *p = (const unsigned char *)v; *p && !quote; p++)
        quote = *p <= ' ' || *p == '=' || *p == '"' || *p == '\\' || *p == 0x7f;
    if (!quote) {
        dp_sbuf_printf(b, "%s", v);
        return;
    }
    dp_sbuf_printf(b, "\"");
    for (const unsigned char *p = (const unsigned char *)v; *p; p++) {
        switch (*p) {
        case '"': dp_sbuf_printf(b, "\\\""); break;
        case '\\': dp_sbuf_printf(b, "\\\\"); break;
        case '\n': dp_sbuf_printf(b, "\\n"); break;
        case '\t': dp_sbuf_printf(b, "\\t"); break;
        case '\r': dp_sbuf_printf(b, "\\r"); break;
        default:
            if (*p < ' ' || *p == 0x7f)
                dp_sbuf_printf(b, "\\u%04x", *p);
            else
                dp_sbuf_printf(b, "%c", *p);
        }
    }
    dp_sbuf_printf(b, "\"");
}

/* A copy of s in which every byte that does not begin a valid UTF-8
 * sequence is '?', since JSON strings must be UTF-8 (jansson refuses others). */
static char *utf8_clean(const char *s)
{
    size_t n = strlen(s);
    char *o = malloc(n + 1);
    if (!o)
        return NULL;
    const unsigned char *p = (const unsigned char *)s;
    size_t i = 0;
    while (i < n) {
        unsigned c = p[i];
        size_t len = c < 0x80 ? 1 : (c & 0xe0) == 0xc0 && c >= 0xc2 ? 2 : (c & 0xf0) == 0xe0 ? 3
                   : (c & 0xf8) == 0xf0 && c <= 0xf4 ? 4 : 0;
        int ok = len > 0 && i + len <= n;
        for (size_t k = 1; ok && k < len; k++)
            ok = (p[i + k] & 0xc0) == 0x80;
        if (ok && len == 3) /* no overlong forms, no surrogates */
            ok = !(c == 0xe0 && p[i + 1] < 0xa0) && !(c == 0xed && p[i + 1] >= 0xa0);
        if (ok && len == 4)
            ok = !(c == 0xf0 && p[i + 1] < 0x90) && !(c == 0xf4 && p[i + 1] >= 0x90);
        if (!ok) {
            o[i++] = '?';
            continue;
        }
        memcpy(o + i, p + i, len);
        i += len;
    }
    o[n] = '\0';
    return o;
}

/* ---- the three forms ---------------------------------------------------------- */

static void render_text(const struct dp_log_rec *r, struct dp_sbuf *b)
{
    dp_sbuf_printf(b, "%s: %s: %s", r->tag, r->level, r->msg);
    if (r->task >= 0 || r->conn >= 0) {
        dp_sbuf_printf(b, " [");
        if (r->task >= 0)
            dp_sbuf_printf(b, "task=%lld%s", (long long)r->task, r->conn >= 0 ? " " : "");
        if (r->conn >= 0)
            dp_sbuf_printf(b, "conn=%lld", (long long)r->conn);
        dp_sbuf_printf(b, "]");
    }
    dp_sbuf_printf(b, "\n");
}

static void render_logfmt(const struct dp_log_rec *r, struct dp_sbuf *b)
{
    dp_sbuf_printf(b, "ts=");
    put_ts(b, &r->ts);
    dp_sbuf_printf(b, " level=%s comp=", r->level);
    put_logfmt_value(b, comp_of(r->tag));
    dp_sbuf_printf(b, " pid=%ld", r->pid);
    if (r->task >= 0)
        dp_sbuf_printf(b, " task=%lld", (long long)r->task);
    if (r->conn >= 0)
        dp_sbuf_printf(b, " conn=%lld", (long long)r->conn);
    dp_sbuf_printf(b, " msg=");
    put_logfmt_value(b, r->msg);
    dp_sbuf_printf(b, "\n");
}

static void render_json(const struct dp_log_rec *r, struct dp_sbuf *b)
{
    struct dp_sbuf ts = {0};
    put_ts(&ts, &r->ts);
    char *msg = utf8_clean(r->msg), *comp = utf8_clean(comp_of(r->tag));
    json_t *o = ts.oom || !msg || !comp ? NULL
              : json_pack("{s:s, s:s, s:s, s:I}", "ts", ts.p, "level", r->level, "comp", comp, "pid",
                          (json_int_t)r->pid);
    if (o && r->task >= 0)
        json_object_set_new(o, "task", json_integer((json_int_t)r->task));
    if (o && r->conn >= 0)
        json_object_set_new(o, "conn", json_integer((json_int_t)r->conn));
    if (o)
        json_object_set_new(o, "msg", json_string(msg));
    char *line = o ? json_dumps(o, JSON_COMPACT | JSON_PRESERVE_ORDER) : NULL;
    if (line)
        dp_sbuf_printf(b, "%s\n", line);
    else
        b->oom = 1;
    free(line);
    json_decref(o);
    free(msg);
    free(comp);
    dp_sbuf_free(&ts);
}

void dp_log_render(enum dp_log_format f, const struct dp_log_rec *r, struct dp_sbuf *b)
{
    static void (*const render[])(const struct dp_log_rec *, struct dp_sbuf *) = {
        [DP_LOG_FORMAT_TEXT] = render_text,
        [DP_LOG_FORMAT_LOGFMT] = render_logfmt,
        [DP_LOG_FORMAT_JSON] = render_json,
    };
    render[f](r, b);
}
