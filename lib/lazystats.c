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

void dp_counters_json(struct dp_sbuf *b, const struct dp_lazy_counters *c)
{
    uint64_t pf = c->pages_prefetched;
    uint64_t hits = c->prefetch_hits_inflight + c->prefetch_hits_inferred;
    dp_sbuf_printf(b,
                  "\"faults\": %llu, \"faults_remote\": %llu, \"faults_waited_inflight\": %llu, "
                  "\"faults_zero\": %llu, \"faults_spurious\": %llu, "
                  "\"pages_fetched\": %llu, \"pages_prefetched\": %llu, \"pages_background\": %llu, "
                  "\"prefetch_hits\": %llu, \"prefetch_hits_inflight\": %llu, \"prefetch_hits_inferred\": %llu, "
                  "\"prefetch_misses\": %llu, \"prefetch_hit_rate\": %.4f, "
                  "\"zero_pages\": %llu, \"eexist\": %llu, \"eagain_retries\": %llu, \"dropped_stale\": %llu, "
                  "\"bytes_on_wire\": %llu, \"fetch_requests\": %llu, \"fetch_errors\": %llu, "
                  "\"faults_waiting\": %llu, "
                  "\"events\": {\"fork\": %llu, \"remap\": %llu, \"remove\": %llu, \"unmap\": %llu}",
                  (unsigned long long)c->faults, (unsigned long long)c->faults_remote,
                  (unsigned long long)c->faults_waited, (unsigned long long)c->faults_zero,
                  (unsigned long long)c->faults_spurious, (unsigned long long)c->pages_fetched,
                  (unsigned long long)pf, (unsigned long long)c->pages_background,
                  (unsigned long long)hits, (unsigned long long)c->prefetch_hits_inflight,
                  (unsigned long long)c->prefetch_hits_inferred, (unsigned long long)c->prefetch_misses,
                  pf ? (double)(hits > pf ? pf : hits) / (double)pf : 0.0,
                  (unsigned long long)c->zero_pages, (unsigned long long)c->eexist,
                  (unsigned long long)c->eagain, (unsigned long long)c->dropped_stale,
                  (unsigned long long)c->wire_bytes, (unsigned long long)c->fetch_requests,
                  (unsigned long long)c->fetch_errors, (unsigned long long)c->faults_waiting,
                  (unsigned long long)c->ev_fork,
                  (unsigned long long)c->ev_remap, (unsigned long long)c->ev_remove,
                  (unsigned long long)c->ev_unmap);
}

void dp_hist_json_buckets(struct dp_sbuf *b, const struct dp_hist *h)
{
    dp_sbuf_printf(b, "[");
    int first = 1;
    for (unsigned i = 0; i < DP_HIST_BUCKETS; i++) {
        if (!h->b[i])
            continue;
        dp_sbuf_printf(b, "%s[%.3f, %llu]", first ? "" : ", ", (double)bucket_top(i) / 1e3,
                       (unsigned long long)h->b[i]);
        first = 0;
    }
    dp_sbuf_printf(b, "]");
}

void dp_hist_json(struct dp_sbuf *b, const struct dp_hist *h)
{
    dp_sbuf_printf(b,
                  "{\"count\": %llu, \"mean_us\": %.1f, \"p50_us\": %.1f, \"p90_us\": %.1f, "
                  "\"p99_us\": %.1f, \"max_us\": %.1f}",
                  (unsigned long long)h->count, h->count ? (double)h->sum_ns / (double)h->count / 1e3 : 0.0,
                  (double)dp_hist_quantile(h, 0.50) / 1e3, (double)dp_hist_quantile(h, 0.90) / 1e3,
                  (double)dp_hist_quantile(h, 0.99) / 1e3, (double)h->max_ns / 1e3);
}
