/* lazystats: counters, latency histogram, JSON (see lazystats.h). */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "lazystats.h"

static unsigned bucket_of(uint64_t ns)
{
    if (ns < DP_HIST_SUB)
        return (unsigned)ns;
    unsigned msb = 63u - (unsigned)__builtin_clzll(ns);       /* >= 3 */
    unsigned sub = (unsigned)(ns >> (msb - 3)) & (DP_HIST_SUB - 1);
    return (msb - 2) * DP_HIST_SUB + sub;
}

/* Largest value that falls in bucket i. */
static uint64_t bucket_top(unsigned i)
{
    if (i < DP_HIST_SUB)
        return i;
    unsigned msb = i / DP_HIST_SUB + 2, sub = i % DP_HIST_SUB;
    uint64_t lo = (1ull << msb) | ((uint64_t)sub << (msb - 3));
    return lo + (1ull << (msb - 3)) - 1;
}

void dp_hist_add(struct dp_hist *h, uint64_t ns)
{
    unsigned i = bucket_of(ns);
    if (i >= DP_HIST_BUCKETS)
        i = DP_HIST_BUCKETS - 1;
    h->b[i]++;
    h->count++;
    h->sum_ns += ns;
    if (ns > h->max_ns)
        h->max_ns = ns;
}

void dp_hist_merge(struct dp_hist *dst, const struct dp_hist *src)
{
    for (unsigned i = 0; i < DP_HIST_BUCKETS; i++)
        dst->b[i] += src->b[i];
    dst->count += src->count;
    dst->sum_ns += src->sum_ns;
    if (src->max_ns > dst->max_ns)
        dst->max_ns = src->max_ns;
}

uint64_t dp_hist_quantile(const struct dp_hist *h, double q)
{
    if (!h->count)
        return 0;
    uint64_t rank = (uint64_t)(q * (double)h->count + 0.999999);
    if (rank < 1)
        rank = 1;
    uint64_t seen = 0;
    for (unsigned i = 0; i < DP_HIST_BUCKETS; i++) {
        seen += h->b[i];
        if (seen >= rank) {
            uint64_t top = bucket_top(i);
            return top < h->max_ns ? top : h->max_ns;
        }
    }
    return h->max_ns;
}

uint64_t dp_hist_count_at_most(const struct dp_hist *h, uint64_t ns)
{
    uint64_t n = 0;
    /* bucket_top is defined for the buckets bucket_of can return (msb <= 63) */
    for (unsigned i = 0; i < (64 - 2) * DP_HIST_SUB && bucket_top(i) <= ns; i++)
        n += h->b[i];
    return n;
}

void dp_counters_add(struct dp_lazy_counters *dst, const struct dp_lazy_counters *src)
{
    const uint64_t *s = (const uint64_t *)src;
    uint64_t *d = (uint64_t *)dst;
    for (size_t i = 0; i < sizeof(*src) / sizeof(uint64_t); i++)
        d[i] += s[i];
}

void dp_sbuf_printf(struct dp_sbuf *b, const char *fmt, ...)
{
    if (b->oom)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        size_t room = b->cap - b->len;
        int n = vsnprintf(b->p ? b->p + b->len : NULL, room, fmt, ap);
        va_end(ap);
        if (n < 0) {
            b->oom = 1;
            return;
        }
        if ((size_t)n < room) {
            b->len += (size_t)n;
            return;
        }
        size_t cap = b->cap ? b->cap * 2 : 4096;
        while (cap - b->len <= (size_t)n)
            cap *= 2;
        char *p = realloc(b->p, cap);
        if (!p) {
            b->oom = 1;
            return;
        }
        b->p = p;
        b->cap = cap;
    }
}

void dp_sbuf_free(struct dp_sbuf *b)
{
    free(b->p);
    memset(b, 0, sizeof(*b));
}

/* ----------------------------------------------------------- JSON (jansson) */

json_t *dp_json_fixed(double v, int decimals)
{
    /* The number "%.Nf" prints, as a double: with DP_JSON_REAL_FLAGS (15
     * significant digits) it prints back as that short decimal (12.3, not
     * 12.300000000000001), exactly while it has at most 15 digits (latencies
     * below 10^12 us with 3 decimals: days). */
    char text[64];
    snprintf(text, sizeof(text), "%.*f", decimals, v);
    return json_real(strtod(text, NULL));
}

int dp_counters_jset(json_t *obj, const struct dp_lazy_counters *c)
{
    /* hits above the pages prefetched (inferred ones overlap) are capped for the rate */
    uint64_t pf = c->pages_prefetched;
    uint64_t hits = c->prefetch_hits_inflight + c->prefetch_hits_inferred;
    json_t *f = json_pack(
        "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
        "s:{s:I, s:I, s:I, s:I}}",
        "faults", (json_int_t)c->faults, "faults_remote", (json_int_t)c->faults_remote, "faults_waited_inflight",
        (json_int_t)c->faults_waited, "faults_zero", (json_int_t)c->faults_zero, "faults_spurious",
        (json_int_t)c->faults_spurious, "pages_fetched", (json_int_t)c->pages_fetched, "pages_prefetched",
        (json_int_t)pf, "pages_background", (json_int_t)c->pages_background, "prefetch_hits", (json_int_t)hits,
        "prefetch_hits_inflight", (json_int_t)c->prefetch_hits_inflight, "prefetch_hits_inferred",
        (json_int_t)c->prefetch_hits_inferred, "prefetch_misses", (json_int_t)c->prefetch_misses,
        "prefetch_hit_rate", dp_json_fixed(pf ? (double)(hits > pf ? pf : hits) / (double)pf : 0.0, 4),
        "zero_pages", (json_int_t)c->zero_pages, "eexist", (json_int_t)c->eexist, "eagain_retries",
        (json_int_t)c->eagain, "dropped_stale", (json_int_t)c->dropped_stale, "bytes_on_wire",
        (json_int_t)c->wire_bytes, "fetch_requests", (json_int_t)c->fetch_requests, "fetch_errors",
        (json_int_t)c->fetch_errors, "faults_waiting", (json_int_t)c->faults_waiting, "events", "fork",
        (json_int_t)c->ev_fork, "remap", (json_int_t)c->ev_remap, "remove", (json_int_t)c->ev_remove, "unmap",
        (json_int_t)c->ev_unmap);
    return f ? json_object_update_new(obj, f) : -1;
}

json_t *dp_hist_jbuckets(const struct dp_hist *h)
{
    /* only the non-empty buckets: 512 of them would mostly be zeros */
    json_t *a = json_array();
    for (unsigned i = 0; a && i < DP_HIST_BUCKETS; i++) {
        if (h->b[i] && json_array_append_new(a, json_pack("[o, I]", dp_json_fixed((double)bucket_top(i) / 1e3, 3),
                                                          (json_int_t)h->b[i])) < 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

json_t *dp_hist_jobj(const struct dp_hist *h)
{
    /* microseconds with one decimal: the bucket edges are no finer than that above 8 us */
    return json_pack("{s:I, s:o, s:o, s:o, s:o, s:o}", "count", (json_int_t)h->count, "mean_us",
                     dp_json_fixed(h->count ? (double)h->sum_ns / (double)h->count / 1e3 : 0.0, 1), "p50_us",
                     dp_json_fixed((double)dp_hist_quantile(h, 0.50) / 1e3, 1), "p90_us",
                     dp_json_fixed((double)dp_hist_quantile(h, 0.90) / 1e3, 1), "p99_us",
                     dp_json_fixed((double)dp_hist_quantile(h, 0.99) / 1e3, 1), "max_us",
                     dp_json_fixed((double)h->max_ns / 1e3, 1));
}

void dp_sbuf_put_json(struct dp_sbuf *b, json_t *v)
{
    /* one dump for every caller, so the separators and precision agree */
    char *text = v ? json_dumps(v, DP_JSON_REAL_FLAGS | JSON_ENCODE_ANY) : NULL;
    json_decref(v);
    if (!text) {
        b->oom = 1;
        return;
    }
    dp_sbuf_printf(b, "%s", text);
    free(text);
}

