/* lazystats: counters and the fault-latency histogram of the lazy-pages
 * daemon, and their JSON form (what `distriproc stats` prints).
 *
 * The histogram is HDR-like: 8 linear sub-buckets per power of two of
 * nanoseconds, so a reported percentile is the upper edge of its bucket,
 * at most 12.5% above the true value; max is exact. */
#ifndef DP_LAZYSTATS_H
#define DP_LAZYSTATS_H

#include <stddef.h>
#include <stdint.h>

#include <jansson.h>

#define DP_HIST_SUB 8
#define DP_HIST_BUCKETS (64 * DP_HIST_SUB)

struct dp_hist {
    uint64_t count, sum_ns, max_ns;
    uint64_t b[DP_HIST_BUCKETS];
};

void dp_hist_add(struct dp_hist *h, uint64_t ns);
void dp_hist_merge(struct dp_hist *dst, const struct dp_hist *src);
/* q in [0, 1]; 0 when empty. */
uint64_t dp_hist_quantile(const struct dp_hist *h, double q);
/* Observations whose bucket lies wholly at or below ns (the Prometheus
 * cumulative bucket "le" of lib/metrics.c): never counts one above ns. */
uint64_t dp_hist_count_at_most(const struct dp_hist *h, uint64_t ns);

struct dp_lazy_counters {
    uint64_t faults;           /* page-fault messages handled */
    uint64_t faults_remote;    /* ... that needed a fetch */
    uint64_t faults_waited;    /* ... that found their page already in flight */
    uint64_t faults_zero;      /* ... answered with a zero page */
    uint64_t faults_spurious;  /* ... for a page already installed (woken) */
    uint64_t pages_fetched;    /* pages installed because a fault asked for them */
    uint64_t pages_prefetched; /* pages installed by prefetch (faults may have waited for some) */
    uint64_t pages_background; /* pages installed by --background-fetch */
    uint64_t prefetch_hits_inflight;
    uint64_t prefetch_hits_inferred;
    uint64_t prefetch_misses;
    uint64_t zero_pages;       /* UFFDIO_ZEROPAGE installs */
    uint64_t eexist;           /* UFFDIO_COPY found the page present */
    uint64_t eagain;           /* UFFDIO_COPY retried after events */
    uint64_t dropped_stale;    /* fetched pages not installed: removed/unmapped meanwhile */
    uint64_t wire_bytes;       /* bytes received from the page source */
    uint64_t fetch_requests;
    uint64_t ev_fork, ev_remap, ev_remove, ev_unmap;
    uint64_t fetch_errors;
    uint64_t faults_waiting;   /* not a counter: faults waiting for their page right now (set when printed) */
};

void dp_counters_add(struct dp_lazy_counters *dst, const struct dp_lazy_counters *src);

/* A growing string for JSON output. */
struct dp_sbuf {
    char *p;
    size_t len, cap;
    int oom;
};
void dp_sbuf_printf(struct dp_sbuf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
void dp_sbuf_free(struct dp_sbuf *b);

/* JSON through jansson. Reals are written with DP_JSON_REAL_FLAGS so that
 * dp_json_fixed's short decimals print as such. */
#define DP_JSON_REAL_FLAGS (JSON_PRESERVE_ORDER | JSON_REAL_PRECISION(15))
/* A JSON real holding v with `decimals` places (what "%.Nf" printed). */
json_t *dp_json_fixed(double v, int decimals);
/* Sets the counters' members ("faults" ... "events") on obj, in that order;
 * -1 when out of memory. */
int dp_counters_jset(json_t *obj, const struct dp_lazy_counters *c);
/* {count, mean_us, p50_us, p90_us, p99_us, max_us}, or NULL (out of memory). */
json_t *dp_hist_jobj(const struct dp_hist *h);
/* [[bucket upper edge in us, count], ...] for the non-empty buckets (a CDF),
 * or NULL (out of memory). */
json_t *dp_hist_jbuckets(const struct dp_hist *h);
/* Appends v as JSON text (DP_JSON_REAL_FLAGS) and drops the reference; a NULL
 * v (a failed build) marks b out of memory. */
void dp_sbuf_put_json(struct dp_sbuf *b, json_t *v);

#endif
