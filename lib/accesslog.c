/* accesslog: the page server's access log as a hot set (see accesslog.h). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "accesslog.h"

/* The number after "key": inside [obj, end); 0 on success. */
static int field(const char *obj, const char *end, const char *key, int hex_string, uint64_t *out)
{
    size_t kl = strlen(key);
    for (const char *p = obj; p + kl + 2 < end; p++) {
        if (p[0] != '"' || strncmp(p + 1, key, kl) != 0 || p[1 + kl] != '"')
            continue;
        p += kl + 2;
        while (p < end && (*p == ' ' || *p == ':'))
            p++;
        if (hex_string) {
            if (p + 3 >= end || p[0] != '"' || p[1] != '0' || p[2] != 'x')
                return -1;
            p += 3;
        }
        if (p >= end || !((*p >= '0' && *p <= '9') || (hex_string && ((*p >= 'a' && *p <= 'f') ||
                                                                       (*p >= 'A' && *p <= 'F')))))
            return -1;
        char *stop;
        errno = 0;
        unsigned long long v = strtoull(p, &stop, hex_string ? 16 : 10);
        if (errno || stop > end || (hex_string && *stop != '"'))
            return -1;
        *out = v;
        return 0;
    }
    return -1;
}

int dp_accesslog_parse(const char *text, size_t len, struct dp_access_ent **ents, size_t *n, struct dp_err *err)
{
    *ents = NULL;
    *n = 0;
    const char *end = text + len;
    const char *p = memmem(text, len, "\"pages\"", 7);
    if (!p) {
        dp_err_set(err, "not an access log: no \"pages\" list");
        return -1;
    }
    p = memchr(p, '[', (size_t)(end - p));
    if (!p) {
        dp_err_set(err, "not an access log: \"pages\" is not a list");
        return -1;
    }
    size_t cap = 0;
    struct dp_access_ent *v = NULL;
    for (;;) {
        const char *o = memchr(p, '{', (size_t)(end - p));
        const char *close = memchr(p, ']', (size_t)(end - p));
        if (!o || (close && close < o))
            break;
        const char *oe = memchr(o, '}', (size_t)(end - o));
        if (!oe) {
            dp_err_set(err, "access log: entry at byte %zu is not closed", (size_t)(o - text));
            free(v);
            return -1;
        }
        uint64_t pid, addr, count, first, last;
        if (field(o, oe, "pid", 0, &pid) || field(o, oe, "addr", 1, &addr) || field(o, oe, "count", 0, &count) ||
            field(o, oe, "first", 0, &first) || field(o, oe, "last", 0, &last) || pid == 0 || pid > INT32_MAX ||
            addr % DP_PAGE_SIZE || count == 0 || count > UINT32_MAX || first > last) {
            dp_err_set(err, "access log: bad entry at byte %zu: %.*s", (size_t)(o - text),
                       (int)(oe - o + 1 > 160 ? 160 : oe - o + 1), o);
            free(v);
            return -1;
        }
        if (*n == cap) {
            cap = cap ? cap * 2 : 1024;
            struct dp_access_ent *nv = realloc(v, cap * sizeof(*nv));
            if (!nv) {
                free(v);
                dp_err_set(err, "out of memory");
                return -1;
            }
            v = nv;
        }
        v[(*n)++] = (struct dp_access_ent){.pid = (int32_t)pid, .count = (uint32_t)count, .addr = addr,
                                           .first_us = first, .last_us = last};
        p = oe + 1;
    }
    *ents = v;
    return 0;
}

static int cmp_first(const void *a, const void *b)
{
    const struct dp_access_ent *x = a, *y = b;
    if (x->first_us != y->first_us)
        return x->first_us < y->first_us ? -1 : 1;
    if (x->pid != y->pid)
        return x->pid < y->pid ? -1 : 1;
    return x->addr < y->addr ? -1 : x->addr > y->addr;
}

int dp_accesslog_hotset(const struct dp_access_ent *ents, size_t n, double window_s, const uint8_t id[DP_CPID_SIZE],
                        uint64_t created_us, struct dp_hotset *hs, struct dp_err *err)
{
    uint64_t limit = window_s > 0 ? (uint64_t)(window_s * 1e6) : UINT64_MAX;
    struct dp_access_ent *v = malloc((n ? n : 1) * sizeof(*v));
    if (!v) {
        dp_err_set(err, "out of memory");
        return -1;
    }
    size_t m = 0;
    uint64_t t0 = UINT64_MAX;
    for (size_t i = 0; i < n; i++)
        if (ents[i].first_us < t0)
            t0 = ents[i].first_us;
    for (size_t i = 0; i < n; i++)
        if (ents[i].first_us - t0 < limit)
            v[m++] = ents[i];
    qsort(v, m, sizeof(*v), cmp_first);
    uint32_t window_ms = window_s > 0 ? (uint32_t)(window_s * 1000) : 0;
    if (!window_ms && m)
        window_ms = (uint32_t)((v[m - 1].first_us - t0) / 1000 + 1);
    dp_hotset_init(hs, DP_HS_TRACE, id, created_us, window_ms);
    /* tasks in order of their first page, pages in order within each */
    for (size_t i = 0; i < m; i++) {
        if (dp_hotset_find_task(hs, v[i].pid))
            continue;
        if (dp_hotset_add_task(hs, v[i].pid) < 0)
            goto oom;
        for (size_t k = i; k < m; k++)
            if (v[k].pid == v[i].pid &&
                dp_hotset_add_run(hs, v[k].addr, 1, 1000, (uint32_t)((v[k].first_us - t0) / 1000)) < 0)
                goto oom;
    }
    free(v);
    if (!hs->nr_tasks) {
        dp_err_set(err, "the access log holds no page%s", window_s > 0 ? " in that window" : "");
        return -1;
    }
    if (dp_hotset_validate(hs, err) < 0) {
        dp_hotset_free(hs);
        return -1;
    }
    return 0;
oom:
    free(v);
    dp_hotset_free(hs);
    dp_err_set(err, "out of memory (or more than %u runs)", DP_HOTSET_MAX_RUNS);
    return -1;
}
