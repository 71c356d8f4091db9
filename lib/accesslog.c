/* accesslog: the page server's access log as a hot set (see accesslog.h). */
#include <ctype.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "accesslog.h"

/* A non-negative integer member of o (0 on success). */
static int uint_field(json_t *o, const char *key, uint64_t *out)
{
    json_t *v = json_object_get(o, key);
    if (!json_is_integer(v) || json_integer_value(v) < 0)
        return -1;
    *out = (uint64_t)json_integer_value(v);
    return 0;
}

/* The page address, written as a "0x..." string so it survives readers
 * whose numbers are doubles (0 on success). */
static int addr_field(json_t *o, uint64_t *out)
{
    const char *t = json_string_value(json_object_get(o, "addr"));
    if (!t || t[0] != '0' || t[1] != 'x' || !isxdigit((unsigned char)t[2]))
        return -1;
    char *stop;
    errno = 0;
    unsigned long long v = strtoull(t + 2, &stop, 16);
    if (errno || *stop)
        return -1;
    *out = v;
    return 0;
}

int dp_accesslog_parse(const char *text, size_t len, struct dp_access_ent **ents, size_t *n, struct dp_err *err)
{
    *ents = NULL;
    *n = 0;
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        dp_err_set(err, "not an access log: %s at line %d", jerr.text, jerr.line);
        return -1;
    }
    json_t *pages = json_object_get(root, "pages");
    if (!json_is_array(pages)) {
        dp_err_set(err, "not an access log: no \"pages\" list");
        json_decref(root);
        return -1;
    }
    size_t count = json_array_size(pages), i;
    struct dp_access_ent *v = malloc((count ? count : 1) * sizeof(*v));
    if (!v) {
        dp_err_set(err, "out of memory");
        json_decref(root);
        return -1;
    }
    json_t *o;
    json_array_foreach(pages, i, o) {
        uint64_t pid, addr, cnt, first, last;
        if (uint_field(o, "pid", &pid) || addr_field(o, &addr) || uint_field(o, "count", &cnt) ||
            uint_field(o, "first", &first) || uint_field(o, "last", &last) || pid == 0 || pid > INT32_MAX ||
            addr % DP_PAGE_SIZE || cnt == 0 || cnt > UINT32_MAX || first > last) {
            char *shown = json_dumps(o, JSON_COMPACT | JSON_ENCODE_ANY);
            dp_err_set(err, "access log: bad entry %zu: %.160s", i, shown ? shown : "?");
            free(shown);
            free(v);
            json_decref(root);
            return -1;
        }
        v[i] = (struct dp_access_ent){.pid = (int32_t)pid, .count = (uint32_t)cnt, .addr = addr,
                                      .first_us = first, .last_us = last};
    }
    json_decref(root);
    if (!count) {
        free(v);
        v = NULL;
    }
    *ents = v;
    *n = count;
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
