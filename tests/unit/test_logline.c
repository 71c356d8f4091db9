/* Unit tests of lib/logline.c: every form is one line, and the logfmt and
 * JSON forms parse back (a logfmt reader below, jansson for JSON) to exactly
 * the record, whatever the message holds. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "logline.h"

/* ---- a strict logfmt reader ----------------------------------------------------- */

struct kv {
    char key[32];
    char val[4096];
};

/* Splits one line (without its newline) into pairs; -1 on anything a
 * collector could misread: a bare key, an unterminated quote, an unknown
 * escape, a control character. */
static int logfmt_read(const char *s, struct kv *out, int max)
{
    int n = 0;
    while (*s) {
        if (n == max)
            return -1;
        size_t kl = strcspn(s, "= \"");
        if (kl == 0 || kl >= sizeof(out[n].key) || s[kl] != '=')
            return -1;
        memcpy(out[n].key, s, kl);
        out[n].key[kl] = '\0';
        s += kl + 1;
        char *v = out[n].val;
        size_t vl = 0;
        if (*s == '"') {
            for (s++; *s != '"'; s++) {
                if (!*s || (unsigned char)*s < ' ' || vl + 2 >= sizeof(out[n].val))
                    return -1;
                if (*s == '\\') {
                    s++;
                    if (*s == 'n') v[vl++] = '\n';
                    else if (*s == 't') v[vl++] = '\t';
                    else if (*s == 'r') v[vl++] = '\r';
                    else if (*s == '"' || *s == '\\') v[vl++] = *s;
                    else if (*s == 'u') {
                        unsigned c;
                        if (sscanf(s + 1, "%4x", &c) != 1)
                            return -1;
                        v[vl++] = (char)c;
                        s += 4;
                    } else
                        return -1;
                } else {
                    v[vl++] = *s;
                }
            }
            s++;
        } else {
            for (; *s && *s != ' '; s++) {
                if ((unsigned char)*s < ' ' || *s == '"' || *s == '=' || vl + 1 >= sizeof(out[n].val))
                    return -1;
                v[vl++] = *s;
            }
        }
        v[vl] = '\0';
        n++;
        if (*s == ' ')
            s++;
        else if (*s)
            return -1;
    }
    return n;
}

static const char *get(struct kv *kv, int n, const char *key)
{
    for (int i = 0; i < n; i++)
        if (strcmp(kv[i].key, key) == 0)
            return kv[i].val;
    return NULL;
}

/* The one line b holds, without its newline; fails if there are more. */
static char *one_line(struct dp_sbuf *b)
{
    assert_false(b->oom);
    assert_true(b->len > 0 && b->p[b->len - 1] == '\n');
    b->p[--b->len] = '\0';
    assert_null(strchr(b->p, '\n'));
    return b->p;
}

static const char *const messages[] = {
    "plain",
    "client #1 127.0.0.1:40000 connected",
    "a=b \"quoted\" back\\slash",
    "two\nlines\tand\rreturn \x01 ctl",
    "",
    "latin1 \xe9 and utf-8 \xc3\xa9 and broken \xc3 \xed\xa0\x80",
};

static struct dp_log_rec rec(const char *msg, int64_t task, int64_t conn)
{
    struct dp_log_rec r = {.ts = {1764763200, 123456789}, .level = "warning", .tag = "distriproc lazyd",
                           .pid = 4242, .task = task, .conn = conn, .msg = msg};
    return r;
}

/* ---- tests ------------------------------------------------------------------------ */

static void logfmt_round_trips(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(messages) / sizeof(messages[0]); i++) {
        struct dp_log_rec r = rec(messages[i], 7, (int64_t)i - 1);
        struct dp_sbuf b = {0};
        dp_log_render(DP_LOG_FORMAT_LOGFMT, &r, &b);
        struct kv kv[16];
        int n = logfmt_read(one_line(&b), kv, 16);
        if (n < 0)
            fail_msg("unreadable logfmt: %s", b.p);
        /* stable keys, in this order */
        assert_string_equal(kv[0].key, "ts");
        assert_string_equal(kv[0].val, "2025-12-03T12:00:00.123Z");
        assert_string_equal(kv[1].key, "level");
        assert_string_equal(kv[1].val, "warning");
        assert_string_equal(kv[2].key, "comp");
        assert_string_equal(kv[2].val, "lazyd");
        assert_string_equal(get(kv, n, "pid"), "4242");
        assert_string_equal(get(kv, n, "task"), "7");
        if (r.conn >= 0)
            assert_int_equal(atoi(get(kv, n, "conn")), r.conn);
        else
            assert_null(get(kv, n, "conn"));
        assert_string_equal(kv[n - 1].key, "msg");
        assert_string_equal(kv[n - 1].val, messages[i]);
        dp_sbuf_free(&b);
    }
}

static void json_round_trips(void **state)
{
    (void)state;
    for (size_t i = 0; i < sizeof(messages) / sizeof(messages[0]); i++) {
        struct dp_log_rec r = rec(messages[i], i % 2 ? 3 : -1, 9);
        struct dp_sbuf b = {0};
        dp_log_render(DP_LOG_FORMAT_JSON, &r, &b);
        json_error_t e;
        json_t *o = json_loads(one_line(&b), 0, &e);
        if (!o)
            fail_msg("not JSON (%s): %s", e.text, b.p);
        assert_string_equal(json_string_value(json_object_get(o, "level")), "warning");
        assert_string_equal(json_string_value(json_object_get(o, "comp")), "lazyd");
        assert_string_equal(json_string_value(json_object_get(o, "ts")), "2025-12-03T12:00:00.123Z");
        assert_int_equal(json_integer_value(json_object_get(o, "pid")), 4242);
        assert_int_equal(json_integer_value(json_object_get(o, "conn")), 9);
        if (i % 2)
            assert_int_equal(json_integer_value(json_object_get(o, "task")), 3);
        else
            assert_null(json_object_get(o, "task"));
        const char *msg = json_string_value(json_object_get(o, "msg"));
        assert_non_null(msg);
        if (i < 5)
            assert_string_equal(msg, messages[i]);
        else /* invalid UTF-8 bytes become '?', valid ones stay */
            assert_string_equal(msg, "latin1 ? and utf-8 \xc3\xa9 and broken ? ???");
        json_decref(o);
        dp_sbuf_free(&b);
    }
}

static void text_keeps_the_message_and_adds_context(void **state)
{
    (void)state;
    struct dp_log_rec r = rec("listening on 127.0.0.1:7070", -1, -1);
    struct dp_sbuf b = {0};
    dp_log_render(DP_LOG_FORMAT_TEXT, &r, &b);
    assert_string_equal(b.p, "distriproc lazyd: warning: listening on 127.0.0.1:7070\n");
    dp_sbuf_free(&b);
    r = rec("fault", 5, 2);
    dp_log_render(DP_LOG_FORMAT_TEXT, &r, &b);
    assert_string_equal(b.p, "distriproc lazyd: warning: fault [task=5 conn=2]\n");
    dp_sbuf_free(&b);
}

static void format_names(void **state)
{
    (void)state;
    enum dp_log_format f;
    assert_int_equal(dp_log_format_parse("json", &f), 0);
    assert_int_equal(f, DP_LOG_FORMAT_JSON);
    assert_int_equal(dp_log_format_parse("logfmt", &f), 0);
    assert_int_equal(f, DP_LOG_FORMAT_LOGFMT);
    assert_int_equal(dp_log_format_parse("text", &f), 0);
    assert_int_equal(f, DP_LOG_FORMAT_TEXT);
    assert_int_equal(dp_log_format_parse("JSON", &f), -1);
    assert_int_equal(dp_log_format_parse("", &f), -1);
    assert_int_equal(dp_log_format_parse(NULL, &f), -1);
}

/* The reader must refuse what a collector would misread. */
static void reader_refuses_bad_lines(void **state)
{
    (void)state;
    struct kv kv[4];
    assert_int_equal(logfmt_read("a=1 b=\"x", kv, 4), -1);
    assert_int_equal(logfmt_read("a=1 bare", kv, 4), -1);
    assert_int_equal(logfmt_read("a=\"\\q\"", kv, 4), -1);
    assert_int_equal(logfmt_read("a=x\"y", kv, 4), -1);
    assert_int_equal(logfmt_read("a=1 b=\"two words\"", kv, 4), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(logfmt_round_trips),
        cmocka_unit_test(json_round_trips),
        cmocka_unit_test(text_keeps_the_message_and_adds_context),
        cmocka_unit_test(format_names),
        cmocka_unit_test(reader_refuses_bad_lines),
    };
    return cmocka_run_group_tests_name("logline", tests, NULL, NULL);
}
