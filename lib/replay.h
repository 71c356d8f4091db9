/* replay: fetches a recorded working set in bulk right after a restore.
 *
 * The lazy-pages daemon gives it a checked hot set (lib/hotset.h) and a
 * "submit fetch" function; replay walks the hot set in replay order (by
 * t_ms across tasks, then file order) and hands out batches of up to
 * batch_pages pages while at most window_pages replay pages are in flight,
 * so faults of the running process keep getting through between batches.
 * The daemon's fetch function skips pages that are not remote any more
 * (resident, in flight for a fault, zero, unmapped) and marks the others in
 * flight: a fault on such a page then waits for that transfer instead of
 * asking again. It reports completions back with dp_replay_completed().
 *
 * Pure: no I/O, the caller supplies the times. */
#ifndef DP_REPLAY_H
#define DP_REPLAY_H

#include <stddef.h>
#include <stdint.h>

#include "hotset.h"

#define DP_REPLAY_BATCH_PAGES  256u   /* 1 MiB per request */
#define DP_REPLAY_WINDOW_PAGES 2048u  /* 8 MiB in flight */

struct dp_replay_item {
    int32_t pid;
    uint32_t npages;
    uint64_t addr;     /* checkpoint address */
    uint32_t t_ms;
};

/* Submits a fetch of [addr, addr + npages pages) of checkpoint task pid:
 * returns how many of those pages it submitted (the others were not remote),
 * or -1 if the task is gone (the rest of its runs are skipped). */
typedef int64_t (*dp_replay_fetch_fn)(void *ctx, int32_t pid, uint64_t addr, uint32_t npages);

/* Stage mode (restore --hotset-mode stage, docs/hotset.md): the daemon keeps
 * the replay's pages instead of installing them, so every use of a replayed
 * page is a fault it sees. Every staged page ends as exactly one of: a hit,
 * dropped (the application removed or unmapped it), expired (its task
 * exited), or still staged. */
#define DP_REPLAY_HIT_SECONDS 600
struct dp_replay_hits {
    uint64_t staged;            /* pages put in the staging buffer */
    uint64_t hits;              /* faults served from it */
    uint64_t hits_inflight;     /* first touches that waited for a replay fetch (never staged) */
    uint64_t misses;            /* first touches of pages with data neither staged nor in flight for the replay */
    uint64_t misses_replaying;  /* ... of those, while the replay was still running */
    uint64_t dropped;           /* staged copies dropped: the application removed or unmapped the page */
    uint64_t expired;           /* staged copies dropped because their task exited */
    uint64_t unstaged;          /* replay pages installed at once: the buffer could not take them */
    uint64_t by_second[DP_REPLAY_HIT_SECONDS + 1]; /* hits of both kinds by whole seconds since the
                                                      * replay started; the last slot: later */
};

struct dp_replay {
    struct dp_replay_item *items;
    size_t n, cur;
    uint32_t cur_off;              /* pages of items[cur] handed out */
    uint32_t batch_pages, window_pages;
    uint64_t total_pages, submitted_pages, skipped_pages, completed_pages, batches;
    uint64_t start_ns, done_ns;    /* first pump, last completion */
    struct dp_replay_hits st;      /* stage mode only */
};

int dp_replay_init(struct dp_replay *r, const struct dp_hotset *hs, uint32_t batch_pages, uint32_t window_pages,
                   struct dp_err *err);
void dp_replay_free(struct dp_replay *r);
/* Hands out batches while the window allows. Returns pages submitted now. */
uint64_t dp_replay_pump(struct dp_replay *r, dp_replay_fetch_fn fetch, void *ctx, uint64_t now_ns);
/* npages replay pages completed (installed, or dropped as stale). */
void dp_replay_completed(struct dp_replay *r, uint32_t npages, uint64_t now_ns);
/* Replay pages in flight: submitted minus completed. (Counted this way
 * because a page source may complete a fetch inside the fetch call.) */
uint64_t dp_replay_inflight(const struct dp_replay *r);
/* Everything handed out and completed. */
int dp_replay_finished(const struct dp_replay *r);

/* Stage mode accounting. A hit (from the buffer, or a first touch that
 * waited for a replay fetch in flight) at now_ns. */
void dp_replay_hit(struct dp_replay *r, int inflight, uint64_t now_ns);
/* Replayed pages used / replayed pages delivered: (hits + hits_inflight) /
 * (staged + hits_inflight); -1 when nothing was delivered. */
double dp_replay_hit_rate(const struct dp_replay *r);
/* Hits (both kinds) within the first `seconds` whole seconds of the replay. */
uint64_t dp_replay_hits_within(const struct dp_replay *r, uint32_t seconds);
/* Staged pages neither used, dropped nor expired: still in the buffer. */
uint64_t dp_replay_still_staged(const struct dp_replay *r);

#endif
