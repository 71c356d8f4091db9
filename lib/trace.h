/* trace: records the ordered working set of a restore, for the next one.
 *
 * The lazy-pages daemon notes every first touch of a page that has data in
 * the checkpoint (a fault on a remote page, or on a page already in flight)
 * during the first window_s seconds after the restore, as (checkpoint pid,
 * checkpoint address, time). The result is a hot set of source "trace"
 * (lib/hotset.h): per task, pages in the order they were first touched,
 * consecutive pages coalesced into runs, t_ms the time of each run's first
 * touch. A page is recorded once per pid (a forked child touching the same
 * checkpoint page adds nothing). Pages prefetched and then used without a
 * fault are invisible to the daemon, so record with --prefetch none when the
 * trace must be the exact set of touched pages.
 *
 * Pure: no I/O, the caller supplies the times. */
#ifndef DP_TRACE_H
#define DP_TRACE_H

#include <stddef.h>
#include <stdint.h>

#include "hotset.h"

#define DP_TRACE_MAX_PAGES (1u << 22)   /* 16 GiB of pages; then recording stops */

struct dp_trace_ent {
    uint64_t addr;
    int32_t pid;
    uint32_t t_ms;
};

struct dp_trace {
    uint64_t start_ns, window_ns;
    struct dp_trace_ent *ent;       /* in touch order */
    size_t n, cap;
    uint32_t *slots;                /* open addressing: index + 1 into ent, 0 = empty */
    size_t nslots;
    int full;                       /* DP_TRACE_MAX_PAGES reached */
    uint64_t dropped;               /* notes after the window or when full */
};

void dp_trace_init(struct dp_trace *t, uint64_t start_ns, double window_s);
void dp_trace_free(struct dp_trace *t);
/* 1 while now_ns is inside the window (and the trace is not full). */
int dp_trace_open(const struct dp_trace *t, uint64_t now_ns);
/* Notes a touch of checkpoint page addr of pid. Returns 1 if new, 0 if
 * already recorded or outside the window, -1 on ENOMEM. */
int dp_trace_note(struct dp_trace *t, int32_t pid, uint64_t addr, uint64_t now_ns);
/* The trace as a hot set of checkpoint id (tasks in first-touch order). */
int dp_trace_build(const struct dp_trace *t, const uint8_t id[DP_CPID_SIZE], uint64_t created_us,
                   struct dp_hotset *hs, struct dp_err *err);

#endif
