/* json: strict recursive-descent JSON reader and a small writer (see json.h). */
#include "json.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- reader ------------------------------------------------------------------ */

struct parser {
    const char *p, *start, *end;
    int depth;
    struct dp_err *err;
};

/* Reports the first error only, with the byte offset, so the message points at it. */
static int fail(struct parser *ps, const char *what)
{
    dp_err_set(ps->err, "invalid JSON at byte %zu: %s", (size_t)(ps->p - ps->start), what);
    return -1;
}

static void skip_ws(struct parser *ps)
{
    while (ps->p < ps->end && (*ps->p == ' ' || *ps->p == '\t' || *ps->p == '\n' || *ps->p == '\r'))
        ps->p++;
}

/* Four hex digits of a \u escape. */
static int hex4(struct parser *ps, unsigned *out)
{
    if (ps->end - ps->p < 4)
        return fail(ps, "truncated \\u escape");
    unsigned v = 0;
    for (int i = 0; i < 4; i++) {
        char c = *ps->p++;
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= (unsigned)(c - '0');
        else if (c >= 'a' && c <= 'f')
            v |= (unsigned)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            v |= (unsigned)(c - 'A' + 10);
        else
            return fail(ps, "bad hex digit in \\u escape");
    }
    *out = v;
    return 0;
}

static size_t utf8_put(char *o, unsigned cp)
{
    if (cp < 0x80) {
        o[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        o[0] = (char)(0xc0 | (cp >> 6));
        o[1] = (char)(0x80 | (cp & 0x3f));
        return 2;
    }
    if (cp < 0x10000) {
        o[0] = (char)(0xe0 | (cp >> 12));
        o[1] = (char)(0x80 | ((cp >> 6) & 0x3f));
        o[2] = (char)(0x80 | (cp & 0x3f));
        return 3;
    }
    o[0] = (char)(0xf0 | (cp >> 18));
    o[1] = (char)(0x80 | ((cp >> 12) & 0x3f));
    o[2] = (char)(0x80 | ((cp >> 6) & 0x3f));
    o[3] = (char)(0x80 | (cp & 0x3f));
    return 4;
}

/* A string literal at ps->p (the opening quote), decoded into a malloc'd
 * buffer. The decoded form is never longer than the literal. */
static int parse_string(struct parser *ps, char **out)
{
    ps->p++; /* '"' */
    const char *q = ps->p;
    while (q < ps->end && *q != '"') {
        if (*q == '\\')
            q++;
        q++;
    }
    if (q >= ps->end)
        return fail(ps, "unterminated string");
    char *buf = malloc((size_t)(q - ps->p) + 1), *o = buf;
    if (!buf)
        return fail(ps, "out of memory");
    while (*ps->p != '"') {
        unsigned char c = (unsigned char)*ps->p++;
        if (c < 0x20) {
            free(buf);
            return fail(ps, "control character in string");
        }
        if (c != '\\') {
            *o++ = (char)c;
            continue;
        }
        char e = *ps->p++;
        unsigned cp;
        switch (e) {
        case '"': *o++ = '"'; break;
        case '\\': *o++ = '\\'; break;
        case '/': *o++ = '/'; break;
        case 'b': *o++ = '\b'; break;
        case 'f': *o++ = '\f'; break;
        case 'n': *o++ = '\n'; break;
        case 'r': *o++ = '\r'; break;
        case 't': *o++ = '\t'; break;
        case 'u':
            if (hex4(ps, &cp) < 0)
                goto bad;
            if (cp >= 0xd800 && cp < 0xdc00) {
                unsigned lo;
                if (ps->end - ps->p < 6 || ps->p[0] != '\\' || ps->p[1] != 'u') {
                    fail(ps, "lone high surrogate");
                    goto bad;
                }
                ps->p += 2;
                if (hex4(ps, &lo) < 0)
                    goto bad;
                if (lo < 0xdc00 || lo > 0xdfff) {
                    fail(ps, "bad low surrogate");
                    goto bad;
                }
                cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00);
            } else if (cp >= 0xdc00 && cp < 0xe000) {
                fail(ps, "lone low surrogate");
                goto bad;
            }
            if (cp == 0) {
                fail(ps, "NUL in string");
                goto bad;
            }
            o += utf8_put(o, cp);
            break;
        default:
            ps->p--;
            fail(ps, "bad escape");
            goto bad;
        }
    }
    ps->p++; /* closing quote */
    *o = '\0';
    *out = buf;
    return 0;
bad:
    free(buf);
    return -1;
}

/* A number as JSON spells it (no leading zeros, no '+', no hex). */
static int parse_number(struct parser *ps, double *out)
{
    const char *s = ps->p;
    if (s < ps->end && *s == '-')
        s++;
    if (s >= ps->end || !(*s >= '0' && *s <= '9'))
        return fail(ps, "bad number");
    if (*s == '0' && s + 1 < ps->end && s[1] >= '0' && s[1] <= '9')
        return fail(ps, "leading zero in number");
    while (s < ps->end && ((*s >= '0' && *s <= '9') || *s == '.' || *s == 'e' || *s == 'E' || *s == '+' ||
                           *s == '-'))
        s++;
    char tmp[64];
    size_t n = (size_t)(s - ps->p);
    if (n >= sizeof(tmp))
        return fail(ps, "number too long");
    memcpy(tmp, ps->p, n);
    tmp[n] = '\0';
    char *end;
    errno = 0;
    double v = strtod(tmp, &end);
    if (*end || !isfinite(v) || strpbrk(tmp, "xXnNiI"))
        return fail(ps, "bad number");
    ps->p = s;
    *out = v;
    return 0;
}

static int parse_value(struct parser *ps, struct dp_json *n);

/* The elements of an array or the members of an object, linked under n. */
static int parse_container(struct parser *ps, struct dp_json *n, int object)
{
    if (++ps->depth > DP_JSON_MAX_DEPTH)
        return fail(ps, "nested too deeply");
    ps->p++;
    struct dp_json **tail = &n->child;
    skip_ws(ps);
    char close = object ? '}' : ']';
    if (ps->p < ps->end && *ps->p == close) {
        ps->p++;
        ps->depth--;
        return 0;
    }
    for (;;) {
        struct dp_json *c = calloc(1, sizeof(*c));
        if (!c)
            return fail(ps, "out of memory");
        *tail = c;
        tail = &c->next;
        n->len++;
        skip_ws(ps);
        if (object) {
            if (ps->p >= ps->end || *ps->p != '"')
                return fail(ps, "expected a member name");
            char *key;
            if (parse_string(ps, &key) < 0)
                return -1;
            c->key = key;
            skip_ws(ps);
            if (ps->p >= ps->end || *ps->p != ':')
                return fail(ps, "expected ':'");
            ps->p++;
            skip_ws(ps);
        }
        if (parse_value(ps, c) < 0)
            return -1;
        skip_ws(ps);
        if (ps->p < ps->end && *ps->p == ',') {
            ps->p++;
            continue;
        }
        if (ps->p < ps->end && *ps->p == close) {
            ps->p++;
            ps->depth--;
            return 0;
        }
        return fail(ps, object ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static int literal(struct parser *ps, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(ps->end - ps->p) < n || memcmp(ps->p, word, n) != 0)
        return fail(ps, "unexpected character");
    ps->p += n;
    return 0;
}

static int parse_value(struct parser *ps, struct dp_json *n)
{
    skip_ws(ps);
    if (ps->p >= ps->end)
        return fail(ps, "unexpected end of input");
    switch (*ps->p) {
    case '{': n->type = DP_JSON_OBJECT; return parse_container(ps, n, 1);
    case '[': n->type = DP_JSON_ARRAY; return parse_container(ps, n, 0);
    case '"': {
        char *s;
        if (parse_string(ps, &s) < 0)
            return -1;
        n->type = DP_JSON_STRING;
        n->str = s;
        return 0;
    }
    case 't': n->type = DP_JSON_BOOL; n->boolean = 1; return literal(ps, "true");
    case 'f': n->type = DP_JSON_BOOL; return literal(ps, "false");
    case 'n': n->type = DP_JSON_NULL; return literal(ps, "null");
    default: n->type = DP_JSON_NUMBER; return parse_number(ps, &n->num);
    }
}

void dp_json_free(struct dp_json *n)
{
    while (n) {
        struct dp_json *next = n->next;
        dp_json_free(n->child);
        free((char *)n->key);
        free((char *)n->str);
        free(n);
        n = next;
    }
}

int dp_json_parse(const char *text, size_t len, struct dp_json **out, struct dp_err *err)
{
    *out = NULL;
    if (len > DP_JSON_MAX_BYTES) {
        dp_err_set(err, "JSON document of %zu bytes is larger than the %u allowed", len, DP_JSON_MAX_BYTES);
        return -1;
    }
    struct parser ps = {.p = text, .start = text, .end = text + len, .err = err};
    struct dp_json *root = calloc(1, sizeof(*root));
    if (!root) {
        dp_err_set(err, "out of memory");
        return -1;
    }
    if (parse_value(&ps, root) < 0) {
        dp_json_free(root);
        return -1;
    }
    skip_ws(&ps);
    if (ps.p != ps.end) {
        fail(&ps, "trailing characters after the document");
        dp_json_free(root);
        return -1;
    }
    *out = root;
    return 0;
}

const struct dp_json *dp_json_get(const struct dp_json *obj, const char *key)
{
    if (!obj || obj->type != DP_JSON_OBJECT)
        return NULL;
    for (const struct dp_json *c = obj->child; c; c = c->next)
        if (strcmp(c->key, key) == 0)
            return c;
    return NULL;
}

const char *dp_json_get_str(const struct dp_json *obj, const char *key)
{
    const struct dp_json *v = dp_json_get(obj, key);
    return v && v->type == DP_JSON_STRING ? v->str : NULL;
}

/* ---- writer ------------------------------------------------------------------ */

/* Room for n more bytes plus a NUL. */
static int reserve(struct dp_json_out *o, size_t n)
{
    if (o->oom)
        return -1;
    if (o->len + n + 1 <= o->cap)
        return 0;
    size_t cap = o->cap ? o->cap : 256;
    while (cap < o->len + n + 1)
        cap *= 2;
    char *b = realloc(o->buf, cap);
    if (!b) {
        o->oom = 1;
        return -1;
    }
    o->buf = b;
    o->cap = cap;
    return 0;
}

void dp_json_out_raw(struct dp_json_out *o, const char *s)
{
    size_t n = strlen(s);
    if (reserve(o, n) < 0)
        return;
    memcpy(o->buf + o->len, s, n + 1);
    o->len += n;
}

void dp_json_out_fmt(struct dp_json_out *o, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (n < 0 || reserve(o, (size_t)n) < 0)
        return;
    va_start(ap, fmt);
    vsnprintf(o->buf + o->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    o->len += (size_t)n;
}

void dp_json_out_str(struct dp_json_out *o, const char *s)
{
    dp_json_out_raw(o, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\') {
            esc[0] = '\\';
            esc[1] = (char)c;
            esc[2] = '\0';
        } else if (c < 0x20) {
            snprintf(esc, sizeof(esc), "\\u%04x", c);
        } else {
            esc[0] = (char)c;
            esc[1] = '\0';
        }
        dp_json_out_raw(o, esc);
    }
    dp_json_out_raw(o, "\"");
}
