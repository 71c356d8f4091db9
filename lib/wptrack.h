/* wptrack: exact dirty tracking of lazily restored pages with userfaultfd
 * write-protect on CRIU's own uffd.
 *
 * CRIU's uffd cannot take a second UFFDIO_API (EINVAL), and it never asks
 * for WP_ASYNC; but its lazy ranges can be re-registered MISSING|WP on the
 * same uffd. Then:
 *   install  UFFDIO_COPY with UFFDIO_COPY_MODE_WP: the page arrives
 *            write-protected, i.e. clean (the page server holds it);
 *   write    the first write raises a WP fault on CRIU's uffd; the daemon
 *            marks the page written *before* it removes the protection and
 *            wakes the writer (dp_wp_resolve), so no write can land on a
 *            page the map calls clean;
 *   clean    a page written back without being evicted is protected again
 *            first, then marked clean, then read and sent (dp_wp_clean_begin):
 *            a write racing with the read faults and marks it written
 *            again, so it is sent once more; nothing is lost;
 *   evict    a clean page is dropped with no write-back and no content
 *            comparison; only written pages are read and written back.
 * PAGEMAP_SCAN's PAGE_IS_WRITTEN (present pages whose uffd-wp bit is clear)
 * reports the same set from the kernel's page tables (dp_wp_scan_written):
 * used to check the map and to pick up pages installed before tracking.
 *
 * The map (struct dp_wpmap) is pure: one bitmap per tracked range, no I/O.
 */
#ifndef DP_WPTRACK_H
#define DP_WPTRACK_H

#include <stddef.h>
#include <stdint.h>

/* uapi (linux/fs.h PAGEMAP_SCAN, 6.7+), absent from older installed headers. */
struct dp_pm_scan_arg {
    uint64_t size, flags, start, end, walk_end, vec, vec_len, max_pages;
    uint64_t category_inverted, category_mask, category_anyof_mask, return_mask;
};
struct dp_page_region {
    uint64_t start, end, categories;
};
#define DP_PAGEMAP_SCAN 0xc0606610UL    /* _IOWR('f', 16, struct pm_scan_arg) */
#define DP_PAGE_IS_WRITTEN (1ULL << 1)
#define DP_PAGE_IS_PRESENT (1ULL << 3)

/* ---- pure part: which tracked pages were written -------------------- */

struct dp_wprange {
    uint64_t start, npages;
    uint64_t *bits;                 /* 1 = written since install / last write-back */
    uint64_t nset;
};

struct dp_wpmap {
    struct dp_wprange *r;           /* sorted by start, disjoint */
    size_t n, cap;
    uint64_t written;               /* pages set over all ranges */
};

void dp_wpmap_init(struct dp_wpmap *m);
void dp_wpmap_free(struct dp_wpmap *m);
/* Tracks [start, start+len) (page aligned, not overlapping a tracked range),
 * every page clean. Returns 0, or -1 (bad range, overlap, ENOMEM). */
int dp_wpmap_add(struct dp_wpmap *m, uint64_t start, uint64_t len);
/* Stops tracking whatever of [start, end) is tracked (munmap, task gone). */
void dp_wpmap_remove(struct dp_wpmap *m, uint64_t start, uint64_t end);
/* 1 if the page is tracked, 0 if not. */
int dp_wpmap_tracked(const struct dp_wpmap *m, uint64_t addr);
/* Marks a page written / clean; returns its previous state (1/0), or -1 if
 * the page is not tracked. */
int dp_wpmap_set(struct dp_wpmap *m, uint64_t addr);
int dp_wpmap_clear(struct dp_wpmap *m, uint64_t addr);
/* 1 written, 0 clean, -1 not tracked. */
int dp_wpmap_test(const struct dp_wpmap *m, uint64_t addr);
/* The first written page at or after addr (0 if none). */
uint64_t dp_wpmap_next(const struct dp_wpmap *m, uint64_t addr);

/* ---- I/O part: userfaultfd and pagemap ------------------------------ */

/* Re-registers [start, start+len) MISSING|WP on uffd (CRIU's). 0 or -errno. */
int dp_wp_register(int uffd, uint64_t start, uint64_t len);
/* UFFDIO_COPY with UFFDIO_COPY_MODE_WP; as dp_uffd_copy (0 or -errno, *done). */
int dp_wp_copy(int uffd, uint64_t dst, const void *src, uint64_t len, uint64_t *done);
/* UFFDIO_WRITEPROTECT: protect (on = 1) or un-protect and wake (on = 0). */
int dp_wp_protect(int uffd, uint64_t start, uint64_t len, int on);
/* A WP fault on addr: mark the page written, then un-protect and wake the
 * writer. Returns 0 or -errno (the page's bit is set even then). */
int dp_wp_resolve(struct dp_wpmap *m, int uffd, uint64_t addr);
/* Before a written page is read for a write-back that leaves it resident:
 * protect it, then mark it clean. 0 or -errno (then it stays written). */
int dp_wp_clean_begin(struct dp_wpmap *m, int uffd, uint64_t addr);
/* PAGEMAP_SCAN of [start, end) on pagemap_fd (/proc/PID/pagemap, O_RDONLY):
 * present pages whose uffd-wp bit is clear. Writes up to max regions to out;
 * returns how many, or -errno. *walk_end: where the scan stopped. */
int dp_wp_scan_written(int pagemap_fd, uint64_t start, uint64_t end, struct dp_page_region *out, size_t max,
                       uint64_t *walk_end);

#endif
