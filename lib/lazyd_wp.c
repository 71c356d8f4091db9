/* lazyd_wp: exact dirty tracking for the eviction room (issue 13 item 1),
 * with write-protect on CRIU's own uffd (lib/wptrack.h says how and why).
 *
 * Under a budget, a task's lazy ranges are re-registered MISSING|WP the
 * first time the daemon installs a page into it, and every page the daemon
 * installs with UFFDIO_COPY arrives write-protected: its install-hash entry
 * carries DP_HASH_WP, "the server holds exactly this page". The first write
 * raises a WP fault; lz_wp_fault marks the entry DP_HASH_WRITTEN *before*
 * it removes the protection and wakes the writer, so a page whose entry says
 * clean has not been written since it was installed or last written back.
 * Eviction then drops a clean page with no write-back and no content
 * comparison (lazyd_evict.c), and only written pages are written back.
 *
 * Pages installed otherwise (zero pages, EEXIST of unknown content, ranges
 * the kernel refuses to register WP) keep the content-hash comparison. */
#include <errno.h>
#include <string.h>
#include <linux/userfaultfd.h>

#include "lazy_tasks.h"
#include "lazyd_int.h"
#include "wptrack.h"

/* ======================================================================
 * Arming a task
 * ====================================================================== */

/* Re-registers every lazy range of t MISSING|WP (once). A range the kernel
 * refuses stays MISSING only: its installs fall back to plain copies. */
static void wp_arm(struct dp_lazyd *d, struct lz_task *t)
{
    t->wp = -1;
    size_t ok = 0;
    for (size_t i = 0; i < t->map.n; i++) {
        struct dp_lazy_region *reg = &t->map.r[i];
        int rc = dp_wp_register(t->uffd, reg->start, reg->end - reg->start);
        if (rc == 0)
            ok++;
        else
            dp_debug("pid %d: write-protect registration of 0x%llx-0x%llx refused: %s; its pages keep the "
                     "content comparison", t->shown_pid, (unsigned long long)reg->start,
                     (unsigned long long)reg->end, strerror(-rc));
    }
    if (ok)
        t->wp = 1;
    d->ev.wp_tasks += ok != 0;
}

/* ======================================================================
 * Install and fault
 * ====================================================================== */

/* Arms the task on first use; EINVAL means this range is not WP. */
int lz_wp_copy(struct dp_lazyd *d, struct lz_task *t, uint64_t dst, const void *src, uint64_t len,
               uint64_t *done, int *wp)
{
    *wp = 0;
    if (d->ev.on && t->wp == 0)
        wp_arm(d, t);
    if (t->wp == 1) {
        int rc = dp_wp_copy(t->uffd, dst, src, len, done);
        if (rc != -EINVAL) {
            *wp = 1;
            return rc;
        }
        /* this range is not registered WP (refused, or a VMA CRIU did not
         * announce): a plain copy, tracked by content */
    }
    return dp_uffd_copy(t->uffd, dst, src, len, done);
}

/* Marks page's install-hash entry written. 1 if the page was installed
 * write-protected (so it may still be protected), else 0. */
static int wp_mark(struct lz_task *t, uint64_t page)
{
    struct dp_lazy_region *reg;
    if (!dp_lazymap_page(&t->map, page, &reg))
        return 0;
    struct dp_pmap_entry *e = dp_pmap_find(&t->hash, 0, reg->img + (page - reg->start));
    if (!e)
        return 0;
    e->aux |= DP_HASH_WRITTEN;              /* first: the write lands once un-protected */
    return (e->aux & DP_HASH_WP) != 0;
}

int lz_wp_release(struct dp_lazyd *d, struct lz_task *t, uint64_t addr)
{
    uint64_t page = addr & ~(PG - 1);
    if (!d->ev.wp_tasks || !dp_lazymap_page(&t->map, page, NULL))
        return 0;                           /* nothing was ever protected */
    /* a forked child's entries lose the WP flag while its page tables keep
     * the parent's protection: try every lazily managed page */
    wp_mark(t, page);
    int rc = dp_wp_protect(t->uffd, page, PG, 0);
    return rc == -EINVAL || rc == -ENOENT ? 0 : rc; /* not registered WP: nothing to release */
}

void lz_wp_fault(struct dp_lazyd *d, struct lz_task *t, uint64_t addr)
{
    uint64_t page = addr & ~(PG - 1);
    d->ev.wp_faults++;
    /* whatever the entry says (a forked child's entries lose the flag while
     * its page tables keep the protection): mark, un-protect, wake */
    wp_mark(t, page);
    int rc = dp_wp_protect(t->uffd, page, PG, 0);
    if (dp_uffd_outcome(rc) == DP_UFFD_GONE) {
        lz_task_gone(d, t, "write-protect: process gone");
        return;
    }
    if (rc < 0) {
        /* EAGAIN (the mm is changing: an event is queued) and the like: the
         * writer retries, faults again and is answered after the events */
        dp_uffd_wake(t->uffd, page, PG);
    }
}
