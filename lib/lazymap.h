/* lazymap: the lazy-pages daemon's bookkeeping of one task's lazy memory.
 *
 * A task's lazy memory is a sorted set of regions. A region maps run-time
 * addresses [start, end) to checkpoint ("image") addresses img.. (they differ
 * once the process mremap()s) and holds one state byte per page. Pure logic,
 * no I/O: the daemon drives it from userfaultfd events and fetch completions,
 * and the unit tests drive it directly.
 *
 * Page states:
 *   NONE      no data to fetch: a fault is answered with a zero page (holes,
 *             and pages the application dropped with MADV_DONTNEED/REMOVE)
 *   REMOTE    data lives at the page source, not yet in the process
 *   INFLIGHT  a fetch for this page was submitted and has not completed
 *   RESIDENT  installed in the process (UFFDIO_COPY/ZEROPAGE done)
 */
#ifndef DP_LAZYMAP_H
#define DP_LAZYMAP_H

#include <stddef.h>
#include <stdint.h>

enum dp_pg_state {
    DP_PG_NONE = 0,
    DP_PG_REMOTE = 1,
    DP_PG_INFLIGHT = 2,
    DP_PG_RESIDENT = 3,
};
#define DP_PG_STATE_MASK 0x03u
#define DP_PGF_PREFETCH  0x04u  /* in flight / installed because of prefetch, not a fault */
#define DP_PGF_WAITED    0x08u  /* a fault is waiting for this in-flight page */
#define DP_PGF_BACKGROUND 0x10u /* in flight because of --background-fetch */
#define DP_PGF_STAGED    0x20u  /* REMOTE, but the daemon holds the replay's copy (hot-set stage mode):
                                 * a fault installs that copy; any state change clears it */

struct dp_lazy_region {
    uint64_t start, end;  /* run-time addresses, page aligned */
    uint64_t img;         /* image address of start */
    uint8_t *pg;          /* (end - start) / 4096 state bytes */
};

struct dp_lazy_range {
    uint64_t start, end;
};

struct dp_lazymap {
    struct dp_lazy_region *r;
    size_t n, cap;
    uint64_t count[4];    /* pages per state */
};

void dp_lazymap_init(struct dp_lazymap *m);
void dp_lazymap_free(struct dp_lazymap *m);

/* Adds [start, end) at image address img, every page in state `state`.
 * Must not overlap existing regions. Returns 0, or -1 (overlap, alignment, ENOMEM). */
int dp_lazymap_add(struct dp_lazymap *m, uint64_t start, uint64_t end, uint64_t img, enum dp_pg_state state);

/* Page byte for run-time address addr, or NULL when addr is in no region.
 * Optional out: the region. */
uint8_t *dp_lazymap_page(struct dp_lazymap *m, uint64_t addr, struct dp_lazy_region **region);
/* Run-time address of image address img, or 0 (not mapped any more). */
uint64_t dp_lazymap_img_to_addr(const struct dp_lazymap *m, uint64_t img, struct dp_lazy_region **region);

/* Changes a page's state keeping the counters right; flags replace the old flags. */
void dp_lazymap_set(struct dp_lazymap *m, uint8_t *pg, enum dp_pg_state state, uint8_t flags);
static inline enum dp_pg_state dp_pg_state(uint8_t pg) { return (enum dp_pg_state)(pg & DP_PG_STATE_MASK); }

/* Application dropped [start, end) (UFFD_EVENT_REMOVE): every page becomes
 * NONE (a later fault zero-fills; stale data never comes back). */
void dp_lazymap_remove(struct dp_lazymap *m, uint64_t start, uint64_t end);
/* A REMOVE event for [start, end) while the daemon itself zaps the ranges in
 * keep (eviction): RESIDENT pages inside keep become REMOTE (their data is at
 * the source); every other page of [start, end) is the application's drop
 * and becomes NONE, as in dp_lazymap_remove. */
void dp_lazymap_remove_except(struct dp_lazymap *m, uint64_t start, uint64_t end,
                              const struct dp_lazy_range *keep, size_t nkeep);
/* [start, end) is unmapped: regions are cut. Returns 0 or -1 (ENOMEM). */
int dp_lazymap_unmap(struct dp_lazymap *m, uint64_t start, uint64_t end);
/* mremap moved [from, from+len) to [to, to+len). Returns 0 or -1 (ENOMEM). */
int dp_lazymap_remap(struct dp_lazymap *m, uint64_t from, uint64_t to, uint64_t len);
/* Child after fork: a copy of the parent's map where pages in flight for the
 * parent become REMOTE again (the child fetches them itself); flags cleared. */
int dp_lazymap_clone(struct dp_lazymap *dst, const struct dp_lazymap *src);

uint64_t dp_lazymap_pages(const struct dp_lazymap *m, enum dp_pg_state state);
/* Internal consistency (sorted, non-overlapping, counters). 0 if fine. */
int dp_lazymap_check(const struct dp_lazymap *m);

#endif
