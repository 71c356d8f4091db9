/* warmup: the pure half of the warm-up after a lazy restore (issue 16):
 * which pages go over in the background, in what order, how many may be in
 * flight, and when to stop. No I/O; the caller supplies every time and
 * count. The daemon glue is lib/lazyd_warmup.c.
 *
 * Order (the plan): what is known first. Tier 0: the recorded trace (or a
 * merged hot set), in replay order; tier 1: the checkpoint's classification
 * (per-mapping heat, hottest mapping first); tier 2: every lazy range of
 * every task, in address order. Ranges may overlap across tiers: the daemon
 * skips pages that are no longer remote, so each page travels once.
 *
 * Pace (the controller): warm-up requests are CHUNK pages each and at most
 * `window` chunks of pages are in flight. Faults are sent at once, so a fault waits
 * behind at most window * CHUNK pages of warm-up. The window is AIMD:
 * - additive increase while a round (window completions) moves 5% more
 *   bytes per second than the round before (the link is not full yet);
 * - one step down when it does not (the link is full: more only queues),
 *   then a few rounds' hold before probing up again;
 * - halved when a fault sent with warm-up in flight took more than twice
 *   (+100 us) the fastest faults sent with none (faults queue behind it),
 *   down to DP_WU_WIN_MIN.
 * An optional rate cap (restore --background-fetch RATE) is a token bucket
 * on top of the window. */
#ifndef DP_WARMUP_H
#define DP_WARMUP_H

#include <stddef.h>
#include <stdint.h>

#include "hotset.h"

/* ---- mode ---- */

enum dp_warmup_mode {
    DP_WARMUP_NONE = 0, /* pages stay remote until touched */
    DP_WARMUP_HOT = 1,  /* only what the hot set / classification names */
    DP_WARMUP_ALL = 2,  /* everything, known-hot first */
};

/* "none", "hot", "all": 0, or -1 for anything else. */
int dp_warmup_mode_parse(const char *s, enum dp_warmup_mode *out);
const char *dp_warmup_mode_name(enum dp_warmup_mode m);

/* ---- plan ---- */

#define DP_WU_TIERS 3
enum { DP_WU_TIER_TRACE = 0, DP_WU_TIER_HEAT = 1, DP_WU_TIER_REST = 2 };

struct dp_wu_range {
    int task;          /* the daemon's task id */
    uint8_t tier;
    uint32_t score;    /* tier 1: permille of the mapping found referenced */
    uint64_t seq;      /* insertion order (stable sort) */
    uint64_t img;      /* checkpoint address of the first page */
    uint64_t npages;
};

struct dp_warmup_plan {
    struct dp_wu_range *r;
    size_t n, cap;
    size_t cur;        /* next range */
    uint64_t off;      /* pages of r[cur] already handed out */
    uint64_t tier_pages[DP_WU_TIERS]; /* planned, overlaps counted */
    uint64_t seq;
};

void dp_warmup_plan_init(struct dp_warmup_plan *p);
void dp_warmup_plan_free(struct dp_warmup_plan *p);
/* Adds [img, img + npages pages) of task to tier; 0 or -1 (out of memory,
 * bad tier, empty or wrapping range). */
int dp_warmup_plan_add(struct dp_warmup_plan *p, int task, uint8_t tier, uint32_t score, uint64_t img,
                       uint64_t npages);
/* Maps a hot set's pid to the daemon's task id (-1: not a task here). */
typedef int (*dp_warmup_task_of_fn)(void *ctx, int32_t pid);
/* Adds a checked hot set's runs: classify -> tier 1, trace/merged -> tier 0.
 * Runs of pids task_of does not know are left out. 0 or -1. */
int dp_warmup_plan_add_hotset(struct dp_warmup_plan *p, const struct dp_hotset *hs, dp_warmup_task_of_fn task_of,
                              void *ctx);
/* Sorts into fetch order (tier, then tier 1 by score descending, then as
 * added) and rewinds. Call once, after the last add. Tiers above max_tier
 * (mode hot: tier 1) are dropped. */
void dp_warmup_plan_finish(struct dp_warmup_plan *p, uint8_t max_tier);
/* The next piece of at most max_pages pages (never across a range) into
 * *out; 1, or 0 when the plan is exhausted. */
int dp_warmup_plan_next(struct dp_warmup_plan *p, uint32_t max_pages, struct dp_wu_range *out);
/* Rewinds to the first range of tier >= tier (a sweep for pages that were not
 * remote on the first pass and are again); 1, or 0 when there is none. */
int dp_warmup_plan_rewind(struct dp_warmup_plan *p, uint8_t tier);
/* Pages of the plan not handed out yet (overlaps counted). */
uint64_t dp_warmup_plan_left(const struct dp_warmup_plan *p);

/* ---- budget ---- */

/* Pages the warm-up may still bring in under a budget of budget_pages
 * resident pages (0: no budget, UINT64_MAX), with margin pages kept free for
 * faults, given what is resident or in flight now. Saturates at 0. */
uint64_t dp_warmup_budget_room(uint64_t budget_pages, uint64_t margin, uint64_t resident, uint64_t inflight);

/* ---- controller ---- */

#define DP_WU_CHUNK_PAGES 4u   /* 16 KiB per request */
#define DP_WU_WIN_MIN 2u
#define DP_WU_WIN_MAX 64u
#define DP_WU_WIN_START 2u
#define DP_WU_HOLD_ROUNDS 8u   /* rounds at the knee before probing up again */

struct dp_warmup_ctl {
    uint32_t chunk;           /* pages per request */
    uint32_t chunk_max;       /* what it starts with and grows back to (dp_warmup_ctl_chunk) */
    uint32_t win;             /* requests in flight allowed */
    uint32_t win_max_seen;
    uint64_t rate_cap;        /* bytes/s, 0 = none */
    double tokens;            /* bytes the cap allows now */
    uint64_t last_ns;         /* token refill */
    /* the current round: a window's worth of pages completed */
    uint64_t round_start_ns, round_bytes;
    int round_slow_fault;     /* a fault queued behind warm-up in this round */
    double last_bps;          /* the previous round's bytes per second */
    int last_step;            /* +1: the window grew after the previous round; -1: shrank; 0 */
    uint32_t hold;            /* rounds to wait before probing up again */
    /* faults */
    uint64_t idle_fault_ns;   /* base: the fastest faults with no warm-up in flight (drifts up
                               * 1/32 per slower one); 0 = none seen */
    uint64_t increases, decreases, fault_backoffs, chunk_cuts;
};

/* rate_cap: bytes/s (0: none). now: the start. */
void dp_warmup_ctl_init(struct dp_warmup_ctl *c, uint64_t rate_cap, uint64_t now_ns);
/* Requests of up to pages pages (at least DP_WU_CHUNK_PAGES): on a lane of
 * its own the warm-up's bytes do not wait in the faults' socket, and bigger
 * requests cost less per page. On a link whose bottleneck queue is one FIFO
 * a fault still waits behind what is queued there: a fault slow with the
 * window at its minimum halves the chunk instead (down to
 * DP_WU_CHUNK_PAGES); a window grown to twice its minimum with no slow
 * fault doubles it back (the window halved: the same bytes in flight). */
void dp_warmup_ctl_chunk(struct dp_warmup_ctl *c, uint32_t pages);
/* How many requests (of up to chunk pages) may be sent now, with
 * inflight_pages warm-up pages out: the window is win * chunk pages. */
uint32_t dp_warmup_ctl_allow(struct dp_warmup_ctl *c, uint64_t inflight_pages, uint64_t now_ns);
/* A request of pages pages was sent (spends the cap's tokens). */
void dp_warmup_ctl_sent(struct dp_warmup_ctl *c, uint32_t pages);
/* A warm-up fetch of pages pages completed; adjusts the window at the end
 * of a round (a window's worth of pages). */
void dp_warmup_ctl_done(struct dp_warmup_ctl *c, uint32_t pages, uint64_t now_ns);
/* A fault's fetch completed after latency_ns, with warmup_inflight warm-up
 * requests out when it was sent. Returns 1 when it counted as waiting
 * behind the warm-up (and the window was halved), else 0. */
int dp_warmup_ctl_fault(struct dp_warmup_ctl *c, uint64_t latency_ns, uint32_t warmup_inflight);
/* The estimate of how long a fault with latency_ns waited behind the
 * warm-up: latency above the idle base (0 when none is known). */
uint64_t dp_warmup_ctl_fault_wait(const struct dp_warmup_ctl *c, uint64_t latency_ns);

#endif
