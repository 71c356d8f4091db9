/* evict_policy: which resident lazy pages to evict when the memory budget is
 * reached, and a victim buffer of recently evicted pages kept in the daemon.
 *
 * Signals available without access bits: when a page was faulted and
 * installed, how often it was faulted in again after being evicted
 * (re-faults), and an optional access count from the page server's access
 * log (how hot the page was at the source). The scheme is 2Q-like with
 * ghost entries (as in 2Q's A1out / CLOCK-Pro's non-resident test pages):
 *
 *   probation  resident pages seen once (installed by a first fault or a
 *              prefetch); LRU by install time; victims come from its tail.
 *   protected  resident pages proven hot: re-faulted while still remembered
 *              as a ghost (reuse distance shorter than the ghost window),
 *              an access-count hint >= hot_hint, or a touch after install.
 *              Bounded to protected_frac of the resident pages: beyond it the
 *              protected tail is demoted to the probation head (second chance).
 *   ghost      evicted pages remembered (no content) in FIFO order, at most
 *              ghost_max; a fault on a ghost is a re-fault.
 *   evicting   picked as a victim, not yet confirmed gone (the daemon calls
 *              dp_evict_done or dp_evict_cancel).
 *
 * Pages are keyed by (owner, page address); owner is the daemon's id for a
 * task's address space (after fork parent and child are different owners).
 * Pure: no I/O, no clock (callers pass time in ns).
 */
#ifndef DP_EVICT_POLICY_H
#define DP_EVICT_POLICY_H

#include <stddef.h>
#include <stdint.h>

#include "pmap.h"

struct dp_evict_cfg {
    double protected_frac;   /* max share of resident pages protected (0.5) */
    size_t ghost_max;        /* evicted pages remembered (65536) */
    uint32_t hot_hint;       /* access-count hint making a page hot (0 = off) */
};

struct dp_evict_key {
    int32_t owner;
    uint64_t addr;
};

struct dp_evict_stats {
    uint64_t resident, probation, protected_, ghosts, evicting;
    uint64_t installs, faults, refaults, evictions, cancels, promotions, demotions;
};

struct dp_evict_rec;

struct dp_evict {
    struct dp_evict_cfg cfg;
    struct dp_pmap map;              /* key -> record index + 1 (0: none) */
    struct dp_evict_rec *rec;
    uint32_t nrec, cap, free_head;
    uint32_t head[4], tail[4];       /* lists: probation, protected, ghost, evicting */
    uint32_t len[4];
    struct dp_evict_stats st;
};

int dp_evict_init(struct dp_evict *p, const struct dp_evict_cfg *cfg);   /* cfg NULL: defaults */
void dp_evict_free(struct dp_evict *p);

/* A fault on a page that is not resident. Returns 1 if it is a re-fault
 * (the page was evicted recently and is still remembered), 0 if not, -1 on
 * ENOMEM. A re-faulted page is installed as protected. */
int dp_evict_record_fault(struct dp_evict *p, int32_t owner, uint64_t addr, uint64_t now);
/* The page became resident (UFFDIO_COPY/ZEROPAGE done, whether after a
 * fault, a prefetch or from the victim buffer). Returns 0 or -1 (ENOMEM). */
int dp_evict_record_install(struct dp_evict *p, int32_t owner, uint64_t addr, uint64_t now);
/* Evidence that a resident page was used again (e.g. an idle-page scan, a
 * hint): moves it to the protected head. */
void dp_evict_record_touch(struct dp_evict *p, int32_t owner, uint64_t addr, uint64_t now);
/* Access count from the page server's access log for this page. */
int dp_evict_record_hint(struct dp_evict *p, int32_t owner, uint64_t addr, uint32_t count);

/* Picks up to n victims, coldest first, and marks them evicting. Returns
 * how many were written to out. */
size_t dp_evict_pick(struct dp_evict *p, struct dp_evict_key *out, size_t n);
/* The victim was zapped: it becomes a ghost. */
void dp_evict_done(struct dp_evict *p, int32_t owner, uint64_t addr, uint64_t now);
/* The victim could not be evicted (written back failed, page busy...): it
 * goes back to the probation head. */
void dp_evict_cancel(struct dp_evict *p, int32_t owner, uint64_t addr);

/* The application dropped or unmapped [start, end): forget those pages
 * (resident, ghost or evicting). */
void dp_evict_forget(struct dp_evict *p, int32_t owner, uint64_t start, uint64_t end);
/* mremap moved [from, from+len) to [to, to+len): records follow. */
int dp_evict_move(struct dp_evict *p, int32_t owner, uint64_t from, uint64_t to, uint64_t len);
/* The address space is gone (task exited). */
void dp_evict_forget_owner(struct dp_evict *p, int32_t owner);

/* 1 if the page is resident and protected (for stats and tests). */
int dp_evict_is_protected(const struct dp_evict *p, int32_t owner, uint64_t addr);
/* Internal consistency (lists, counts, map). 0 if fine. */
int dp_evict_check(const struct dp_evict *p);

/* Victim buffer: content of recently evicted pages that the page server
 * also holds (clean pages, or dirty pages after their write-back was
 * acknowledged), bounded in bytes, oldest dropped first. A fault on such a
 * page is served by a local UFFDIO_COPY instead of a network fetch. */
struct dp_vbuf_ent;
struct dp_vbuf {
    uint64_t max_bytes, bytes;
    struct dp_pmap map;              /* key -> entry index + 1 */
    struct dp_vbuf_ent *e;
    uint32_t n, cap, free_head, head, tail;
    uint64_t puts, hits, misses, drops, overflows;
};

void dp_vbuf_init(struct dp_vbuf *v, uint64_t max_bytes);
void dp_vbuf_free(struct dp_vbuf *v);
/* Stores a copy of the 4 KiB page (replacing an older copy). Returns 0, or
 * -1 when it cannot be kept (ENOMEM, or max_bytes < one page). */
int dp_vbuf_put(struct dp_vbuf *v, int32_t owner, uint64_t addr, const void *page);
/* On a hit copies the page to out, removes the entry and returns 1; else 0. */
int dp_vbuf_get(struct dp_vbuf *v, int32_t owner, uint64_t addr, void *out);
/* Drops the entry of one page / of a range (the application dropped or
 * unmapped it, or a newer version exists). */
void dp_vbuf_drop(struct dp_vbuf *v, int32_t owner, uint64_t addr);
void dp_vbuf_drop_range(struct dp_vbuf *v, int32_t owner, uint64_t start, uint64_t end);

#endif
