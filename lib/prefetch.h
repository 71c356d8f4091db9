/* prefetch: which pages to fetch along with a faulted one. Pure policy: it
 * sees fault addresses (in image address space, so remaps do not disturb it)
 * and the bounds of the lazy region, and answers with a list of page ranges.
 * The daemon filters the answer to pages that are still remote.
 *
 * Modes:
 *   none    only the faulted page
 *   seq:N   the faulted page and the next N pages of the region
 *   stride  per task and mapping: when two consecutive faults in a mapping
 *           are the same distance apart (the stride, in pages, may be
 *           negative or > 1), fetch the next `depth` pages along the stride
 *   auto    sequential with an adaptive window: it widens (doubles, up to
 *           max) when the application's next fault lands right after the
 *           previous window (the window was consumed: a hit), and shrinks
 *           (halves, down to 0) when the next fault is elsewhere (a miss)
 *
 * Hits. A prefetched page installed with UFFDIO_COPY never faults, and this
 * kernel gives the daemon no access tracking (no page_idle, no soft-dirty,
 * no write-protect), so hits cannot be observed page by page. Two honest
 * counts are kept instead, reported separately:
 *   hits_inflight  faults that found their page already in flight because of
 *                  a prefetch (measured exactly by the daemon)
 *   hits_inferred  pages of a sequential window counted as used because the
 *                  task's next fault in that mapping came right after the
 *                  window's end (the task walked through it without a fault)
 *   misses         pages of a window abandoned because the next fault in
 *                  the mapping went elsewhere (an upper bound on waste)
 */
#ifndef DP_PREFETCH_H
#define DP_PREFETCH_H

#include <stdint.h>

#include "util.h"

enum dp_prefetch_mode { DP_PF_NONE = 0, DP_PF_SEQ, DP_PF_STRIDE, DP_PF_AUTO };

struct dp_prefetch_cfg {
    enum dp_prefetch_mode mode;
    uint32_t n;        /* seq: window; stride: depth; auto: initial window */
    uint32_t max;      /* auto: widest window */
};

#define DP_PF_MAPS 8   /* mappings tracked per task (LRU) */

struct dp_pf_map {
    uint64_t region;       /* image start of the region, 0 = unused */
    uint64_t last;         /* last fault page (image address) */
    int64_t stride;        /* bytes, last delta */
    uint32_t confirmed;    /* times the same stride repeated */
    uint64_t win_lo, win_hi; /* span of the last prefetched window [lo, hi) */
    uint64_t expect;       /* next fault if the whole window gets used */
    uint32_t win_pages;    /* pages prefetched in that window */
    uint32_t window;       /* auto: current window in pages */
    uint64_t used;         /* LRU tick */
};

struct dp_prefetch_state {
    struct dp_pf_map maps[DP_PF_MAPS];
    uint64_t tick;
    uint64_t hits_inferred, misses;
};

struct dp_pf_range {
    uint64_t addr;     /* image address */
    uint32_t npages;
};

#define DP_PF_MAX_RANGES 64

/* "none", "seq:N", "stride", "stride:N", "auto", "auto:MAX". */
int dp_prefetch_parse(const char *text, struct dp_prefetch_cfg *cfg, struct dp_err *err);
void dp_prefetch_format(const struct dp_prefetch_cfg *cfg, char *buf, size_t len);

void dp_prefetch_state_init(struct dp_prefetch_state *st);

/* A fault at image page `fault` inside the region [reg_lo, reg_hi) (image
 * addresses). Fills out[] with the ranges to prefetch (never the faulted page
 * itself, always inside the region) and returns how many. */
int dp_prefetch_plan(const struct dp_prefetch_cfg *cfg, struct dp_prefetch_state *st,
                     uint64_t fault, uint64_t reg_lo, uint64_t reg_hi,
                     struct dp_pf_range *out, int max_out);

/* The daemon prefetches only pages that are still remote: it reports how
 * many pages of the last window of region reg_lo it really fetched, so that
 * inferred hits and misses count real prefetches only. */
void dp_prefetch_window_actual(struct dp_prefetch_state *st, uint64_t reg_lo, uint32_t pages);
/* A fault found page `addr` of region reg_lo in flight from a prefetch: the
 * daemon counts it as a measured hit, so the window's inference leaves it out. */
void dp_prefetch_inflight_hit(struct dp_prefetch_state *st, uint64_t reg_lo, uint64_t addr);

#endif
