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
 *   streams several interleaved sequential streams per task (threads walking
 *           their own parts of one mapping, or a value stream between random
 *           hash-table probes). A fault continues a stream when it lands just
 *           past that stream's last fault or window; a fault that continues
 *           two of the task's recent faults in one direction, each a few
 *           pages past the one before (among the last DP_PF_HISTORY, as
 *           Leap, USENIX ATC'20, finds a trend among recent accesses despite
 *           the ones in between), starts a stream; any other fault
 *           prefetches nothing, so random access costs nearly what `none`
 *           costs (three random faults rarely line up). Each stream's
 *           window doubles (up to max) every time it is consumed. The fault
 *           messages of CRIU's userfaultfd carry no thread id (CRIU does not
 *           ask for UFFD_FEATURE_THREAD_ID, and its uffd cannot be given a
 *           second UFFDIO_API), so streams are found by address, per task.
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

enum dp_prefetch_mode { DP_PF_NONE = 0, DP_PF_SEQ, DP_PF_STRIDE, DP_PF_AUTO, DP_PF_STREAMS };

struct dp_prefetch_cfg {
    enum dp_prefetch_mode mode;
    uint32_t n;        /* seq: window; stride: depth; auto, streams: initial window */
    uint32_t max;      /* auto, streams: widest window */
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

#define DP_PF_NSTREAMS 16 /* streams tracked per task (LRU) */
#define DP_PF_HISTORY 32 /* recent faults a new stream is looked for among */
#define DP_PF_GAP 2      /* pages a stream may skip (already resident) and go on */

/* One sequential stream (streams mode). */
struct dp_pf_stream {
    uint64_t region;         /* image start of its region, 0 = unused */
    uint64_t last;           /* its last fault (image page) */
    int dir;                 /* +1 ascending, -1 descending */
    uint32_t window;         /* pages of its next window */
    uint64_t win_lo, win_hi; /* its outstanding window [lo, hi), empty if none */
    uint64_t expect;         /* its next fault if the whole window gets used */
    uint32_t win_pages;      /* pages really prefetched in that window */
    uint32_t walked;         /* its windows walked through so far (a proven stream) */
    uint64_t used;           /* LRU tick */
};

struct dp_prefetch_state {
    struct dp_pf_map maps[DP_PF_MAPS];
    uint64_t tick;
    uint64_t hits_inferred, misses;
    struct dp_pf_stream streams[DP_PF_NSTREAMS];
    uint64_t history[DP_PF_HISTORY]; /* recent fault pages, ring; 0 = empty */
    uint32_t hist_pos;
    int last_stream;                 /* stream of the last window planned, -1 none */
    uint64_t streams_started;        /* streams found (a fault near a recent one) */
    /* The sequential window this fault found walked through (its next fault
     * landed at or past the window's end), [lo, hi) in image addresses,
     * empty when none: its pages were read without a fault, so the daemon
     * notes them in the first-touch trace. Set by every dp_prefetch_plan. */
    uint64_t walked_lo, walked_hi;
};

struct dp_pf_range {
    uint64_t addr;     /* image address */
    uint32_t npages;
};

#define DP_PF_MAX_RANGES 64

/* "none", "seq:N", "stride", "stride:N", "auto", "auto:MAX", "streams",
 * "streams:MAX". */
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
