/* lazyd_fault: the fault path of the lazy-pages daemon (docs/daemon.md).
 *
 * Reads straight through: a uffd message (lz_handle_uffd) -> decide what the
 * page needs (handle_fault: zero, wait, a local copy, or a fetch) -> fetch
 * (fault_remote, req_submit to the page source) -> the source completes
 * (on_fetch_done) -> install (UFFDIO_COPY, re-checking every page's state)
 * -> wake the waiting threads (req_finish). The uffd's other events (FORK,
 * REMAP, REMOVE, UNMAP) update the page map on the way. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lazyd_int.h"

#define MAX_REQ_PAGES 64           /* one prefetch request: 256 KiB, so a fault
                                      * inside a window waits for its chunk only */
#define FAULT_SPIN_NS (60 * 1000ull) /* poll this long for a fault's reply when
                                      * faults are served faster than that */
#define FAULT_REQ_PAGES 16         /* the faulted page travels with at most this
                                      * many pages: its thread waits for them all */

static void handle_fault(struct dp_lazyd *d, struct lz_task *t, uint64_t addr, uint64_t t0);
static void install(struct dp_lazyd *d, struct lz_req *r);
static void req_finish(struct dp_lazyd *d, struct lz_req *r);
static void on_fetch_done(struct dp_fetch *f);
static void fault_zero(struct dp_lazyd *d, struct lz_task *t, uint64_t page, uint8_t *pg, uint64_t t0);
static void fault_remote(struct dp_lazyd *d, struct lz_task *t, struct dp_lazy_region *reg, uint64_t page, uint64_t t0);
static void retry_installs(struct dp_lazyd *d, struct lz_task *t, uint64_t now);
static struct lz_req *req_new(struct dp_lazyd *d, struct lz_task *t, uint64_t img, uint32_t npages, int kind);
static void req_submit(struct dp_lazyd *d, struct lz_req *r);
static void mark_inflight(struct lz_task *t, struct dp_lazy_region *reg, uint64_t img, uint32_t n, uint8_t flags);
static int add_waiter(struct lz_req *r, uint64_t addr, uint64_t t0);
static void waiters_release(struct lz_task *t, struct lz_req *r, uint64_t now);

/* ==== message: reading the uffd ==== */

/* Reads t's messages in rounds (bounded: other tasks must get their
 * turn), faults and events in the order the kernel queued them. */
void lz_handle_uffd(struct dp_lazyd *d, struct lz_task *t)
{
    struct uffd_msg msgs[32];
    int rounds = 0;
    while (t->alive && rounds++ < 64) {
        ssize_t n = read(t->uffd, msgs, sizeof(msgs));
        if (n < 0) {
            if (errno == EINTR)
                continue;
            if (errno != EAGAIN)
                dp_warn("pid %d: reading its userfaultfd failed: %s", t->shown_pid, strerror(errno));
            break;
        }
        if (n == 0 || n % (ssize_t)sizeof(msgs[0])) {
            dp_warn("pid %d: short userfaultfd read (%zd bytes)", t->shown_pid, n);
            break;
        }
        /* A FORK's uffd is ours from the read on: hand it to the guard before
         * anything else (the child may already run). */
        for (ssize_t i = 0; i < n / (ssize_t)sizeof(msgs[0]); i++)
            if (msgs[i].event == UFFD_EVENT_FORK)
                dp_guard_task(&d->guard, (int)msgs[i].arg.fork.ufd, 0, 0);
        uint64_t now = dp_now_ns();
        for (ssize_t i = 0; i < n / (ssize_t)sizeof(msgs[0]) && t->alive; i++) {
            struct uffd_msg *m = &msgs[i];
            switch (m->event) {
            case UFFD_EVENT_PAGEFAULT:
                if (m->arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP)
                    lz_wp_fault(d, t, m->arg.pagefault.address);
                else
                    handle_fault(d, t, m->arg.pagefault.address, now);
                break;
            case UFFD_EVENT_FORK:
                t->c.ev_fork++;
                lz_task_fork(d, t, (int)m->arg.fork.ufd);
                break;
            case UFFD_EVENT_REMAP:
                t->c.ev_remap++;
                if (dp_lazymap_remap(&t->map, m->arg.remap.from, m->arg.remap.to, m->arg.remap.len))
                    dp_error("pid %d: out of memory tracking mremap", t->shown_pid);
                lz_ev_remap(d, t, m->arg.remap.from, m->arg.remap.to, m->arg.remap.len);
                break;
            case UFFD_EVENT_REMOVE:
                t->c.ev_remove++;
                if (d->place.probe.armed && m->arg.remove.start == d->place.probe.addr &&
                    m->arg.remove.end == d->place.probe.addr + PG) {
                    /* the probe's madvise on a page absent from the prober:
                     * no memory changed; it names the uffd of its mm */
                    d->place.probe.hits++;
                    d->place.probe.task = t->id;
                    break;
                }
                lz_stage_drop(d, t, m->arg.remove.start, m->arg.remove.end, 0);
                /* our own eviction zaps leave the data at the source (REMOTE);
                 * the application's drop is for good (NONE: zero-fill) */
                dp_lazymap_remove_except(&t->map, m->arg.remove.start, m->arg.remove.end, t->ownzap,
                                         t->n_ownzap);
                /* while the daemon zaps, every thread is stopped and older
                 * events were drained: a REMOVE then is ours */
                if (!t->n_ownzap)
                    lz_ev_forget(d, t, m->arg.remove.start, m->arg.remove.end);
                break;
            case UFFD_EVENT_UNMAP:
                t->c.ev_unmap++;
                lz_stage_drop(d, t, m->arg.remove.start, m->arg.remove.end, 0);
                if (dp_lazymap_unmap(&t->map, m->arg.remove.start, m->arg.remove.end))
                    dp_error("pid %d: out of memory tracking munmap", t->shown_pid);
                lz_ev_forget(d, t, m->arg.remove.start, m->arg.remove.end);
                break;
            default:
                dp_warn("pid %d: unexpected userfaultfd event %u", t->shown_pid, m->event);
            }
        }
        if ((size_t)n < sizeof(msgs))
            break;
    }
    if (t->alive && t->retry)
        retry_installs(d, t, dp_now_ns());
}

/* Installs that met EAGAIN (an event was queued) run again once the
 * events are read; failed fetches resubmit after their backoff. The list
 * (and keep) only borrow requests: t->reqs owns them, and install() (ESRCH)
 * or a completion run inside req_submit() can end the task, whose
 * task_gone() frees every request not at the source, those still on list
 * and keep included: once t is gone neither is touched again. */
static void retry_installs(struct dp_lazyd *d, struct lz_task *t, uint64_t now)
{
    struct lz_req *list = t->retry, *keep = NULL;
    t->retry = NULL;
    while (list) {
        struct lz_req *r = list;
        list = r->rnext;
        r->rnext = NULL;
        if (r->state == R_INSTALL_RETRY) {
            install(d, r);
        } else if (r->state == R_FETCH_RETRY && now >= r->retry_at) {
            req_submit(d, r);
        } else {
            r->rnext = keep;
            keep = r;
        }
        if (!t->alive)
            return; /* task_gone() freed the rest of list and keep */
    }
    /* install() may have queued new retries meanwhile */
    while (keep) {
        struct lz_req *r = keep;
        keep = r->rnext;
        r->rnext = t->retry;
        t->retry = r;
    }
}

/* ==== decide ==== */

/* The decision: by the page's state, zero-fill, wait for the fetch in
 * flight, install a copy the daemon holds, or fetch it. */
static void handle_fault(struct dp_lazyd *d, struct lz_task *t, uint64_t addr, uint64_t t0)
{
    uint64_t page = addr & ~(PG - 1);
    struct dp_lazy_region *reg;
    t->c.faults++;
    if (d->place.probe.armed && page == d->place.probe.addr) {
        /* a probe's madvise is on its way there: let the thread fault
         * again once it is done (an install now could be zapped by it) */
        dp_uffd_wake(t->uffd, page, PG);
        return;
    }
    uint8_t *pg = dp_lazymap_page(&t->map, page, &reg);
    if (!pg) {
        fault_zero(d, t, page, NULL, t0);
        return;
    }
    switch (dp_pg_state(*pg)) {
    case DP_PG_NONE:
        fault_zero(d, t, page, pg, t0);
        break;
    case DP_PG_RESIDENT:
        t->c.faults_spurious++;
        dp_uffd_wake(t->uffd, page, PG);
        break;
    case DP_PG_INFLIGHT: {
        t->c.faults_waited++;
        lz_trace_touch(d, t, reg->img + (page - reg->start), t0);
        if ((*pg & DP_PGF_PREFETCH) && !(*pg & DP_PGF_WAITED)) {
            t->c.prefetch_hits_inflight++;
            dp_prefetch_inflight_hit(&t->pf, reg->img, reg->img + (page - reg->start));
        }
        struct lz_req *r = lz_find_req(t, reg->img + (page - reg->start));
        if (d->staging && !(*pg & DP_PGF_WAITED)) { /* a first touch */
            if (r && r->kind == K_REPLAY)
                dp_replay_hit(&d->replay, 1, t0);
            else
                lz_stage_miss(d);
        }
        *pg |= DP_PGF_WAITED;
        if (!r || add_waiter(r, page, t0))
            dp_uffd_wake(t->uffd, page, PG); /* refault later rather than hang */
        break;
    }
    case DP_PG_REMOTE:
        lz_trace_touch(d, t, reg->img + (page - reg->start), t0);
        if ((*pg & DP_PGF_STAGED) && lz_stage_install(d, t, reg, pg, page, t0))
            break;
        if (d->staging)
            lz_stage_miss(d);
        if (lz_ev_fault(d, t, reg, pg, page, t0))
            break; /* served from the victim buffer */
        fault_remote(d, t, reg, page, t0);
        break;
    }
}

/* A page that never held data (or that the application dropped): zeros,
 * as the kernel would give without us. */
static void fault_zero(struct dp_lazyd *d, struct lz_task *t, uint64_t page, uint8_t *pg, uint64_t t0)
{
    uint64_t done;
    int rc = dp_uffd_zero(t->uffd, page, PG, &done);
    enum dp_uffd_outcome oc = dp_uffd_outcome(rc);
    if (oc == DP_UFFD_DONE || oc == DP_UFFD_EXISTS) {
        if (oc == DP_UFFD_EXISTS)
            dp_uffd_wake(t->uffd, page, PG);
        if (pg) {
            dp_lazymap_set(&t->map, pg, DP_PG_RESIDENT, 0);
            struct dp_lazy_region *reg;
            if (dp_lazymap_page(&t->map, page, &reg))
                lz_ev_installed(d, t, page, reg->img + (page - reg->start), NULL, 1, 0);
        }
        t->c.zero_pages += oc == DP_UFFD_DONE;
        t->c.faults_zero++;
        dp_hist_add(&t->lat, dp_now_ns() - t0);
    } else if (oc == DP_UFFD_RETRY) {
        /* An event is queued: let the thread retry the access; it faults
         * again and is answered once the event has been read. */
        t->c.eagain++;
        dp_uffd_wake(t->uffd, page, PG);
    } else if (oc == DP_UFFD_GONE) {
        lz_task_gone(d, t, "zeropage: process gone");
    } else {
        dp_warn("pid %d: UFFDIO_ZEROPAGE at 0x%llx failed: %s", t->shown_pid,
                (unsigned long long)page, strerror(-rc));
        dp_uffd_wake(t->uffd, page, PG);
    }
}

/* ==== fetch ==== */

/* The faulted page and what the prefetch policy wants: the page and its
 * immediate successors as one request the thread waits for, the rest as
 * separate requests it does not. */
static void fault_remote(struct dp_lazyd *d, struct lz_task *t, struct dp_lazy_region *reg, uint64_t page, uint64_t t0)
{
    uint64_t img = reg->img + (page - reg->start);
    uint64_t reg_hi = reg->img + (reg->end - reg->start);
    struct dp_pf_range pf[DP_PF_MAX_RANGES];
    int npf = dp_prefetch_plan(&d->o->prefetch, &t->pf, img, reg->img, reg_hi, pf, DP_PF_MAX_RANGES);
    /* A window the task walked through without a fault: its pages were
     * first touched by now, though no fault showed them (docs/hotset.md). */
    for (uint64_t a = t->pf.walked_lo; a < t->pf.walked_hi; a += PG)
        lz_trace_touch(d, t, a, t0);

    /* The faulted page plus the remote pages right after it that the
     * policy asked for travel as one request. */
    uint32_t n = 1;
    uint64_t idx = (page - reg->start) / PG, total = (reg->end - reg->start) / PG;
    if (npf > 0 && pf[0].addr == img + PG) {
        while (n <= pf[0].npages && n < FAULT_REQ_PAGES && idx + n < total &&
               lz_fetchable(reg->pg[idx + n]))
            n++;
    }
    struct lz_req *r = req_new(d, t, img, n, K_FAULT);
    if (!r || add_waiter(r, page, t0)) {
        dp_error("out of memory for a fetch of pid %d page 0x%llx; the thread stays blocked",
                 t->shown_pid, (unsigned long long)page);
        if (r) {
            lz_req_unlink(r);
            lz_req_free(r);
        }
        return;
    }
    dp_lazymap_set(&t->map, &reg->pg[idx], DP_PG_INFLIGHT, DP_PGF_WAITED);
    if (n > 1)
        mark_inflight(t, reg, img + PG, n - 1, DP_PGF_PREFETCH);
    t->c.faults_remote++;
    r->wu_ahead = dp_lzw_fault_sent(&d->wu);
    req_submit(d, r);
    if (d->fault_rtt_ns < FAULT_SPIN_NS)
        d->spin_until_ns = dp_now_ns() + FAULT_SPIN_NS;
    /* req_submit() may run completions (the remote source's replies already
     * received); one of them may end the task (ESRCH), and task_gone() frees
     * its map: reg is never used after that. */
    if (!t->alive)
        return;

    /* The rest of the plan as separate requests. */
    uint32_t prefetched = n - 1;
    for (int i = 0; i < npf; i++) {
        uint64_t a = pf[i].addr;
        uint32_t cnt = pf[i].npages;
        if (i == 0 && a == img + PG) {
            uint32_t covered = n - 1;
            if (covered >= cnt)
                continue;
            a += (uint64_t)covered * PG;
            cnt -= covered;
        }
        prefetched += lz_submit_remote_runs(d, t, reg, a, cnt, K_PREFETCH);
        if (!t->alive)
            return; /* as above */
    }
    if (npf > 0)
        dp_prefetch_window_actual(&t->pf, reg->img, prefetched);
}

/* A page a fetch may be submitted for: remote, and not staged (the daemon
 * holds it already; a fault installs that copy). */
int lz_fetchable(uint8_t pg)
{
    return dp_pg_state(pg) == DP_PG_REMOTE && !(pg & DP_PGF_STAGED);
}

/* Marks the pages of [img, img+n) in region reg INFLIGHT with flags. */
static void mark_inflight(struct lz_task *t, struct dp_lazy_region *reg, uint64_t img, uint32_t n, uint8_t flags)
{
    uint64_t first = (img - reg->img) / PG;
    for (uint32_t i = 0; i < n; i++)
        dp_lazymap_set(&t->map, &reg->pg[first + i], DP_PG_INFLIGHT, flags);
}

/* Submits fetches for the REMOTE pages of image range [img, img+n) of reg;
 * returns how many pages it submitted. */
uint32_t lz_submit_remote_runs(struct dp_lazyd *d, struct lz_task *t, struct dp_lazy_region *reg,
                                   uint64_t img, uint32_t n, int kind)
{
    uint32_t submitted = 0;
    if (!t->alive)
        return 0; /* reg went with the task's map (task_gone) */
    uint64_t base = (img - reg->img) / PG, total = (reg->end - reg->start) / PG;
    uint32_t i = 0;
    /* pinned pages (argv/environ) count as fetched, like a fault's */
    uint8_t flags = kind == K_BACKGROUND ? DP_PGF_BACKGROUND : kind == K_PIN ? 0 : DP_PGF_PREFETCH;
    while (i < n && base + i < total) {
        if (!lz_fetchable(reg->pg[base + i])) {
            i++;
            continue;
        }
        uint32_t run = 1;
        while (i + run < n && base + i + run < total && run < MAX_REQ_PAGES &&
               lz_fetchable(reg->pg[base + i + run]))
            run++;
        struct lz_req *r = req_new(d, t, img + (uint64_t)i * PG, run, kind);
        if (!r)
            return submitted; /* prefetch is optional; the fault path still works */
        mark_inflight(t, reg, r->f.img, run, flags);
        req_submit(d, r);
        submitted += run;
        i += run;
        if (!t->alive)
            break; /* a completion run inside req_submit() ended the task: reg is freed */
    }
    return submitted;
}

/* A request owns its buffer: the source fills it, install copies it out. */
static struct lz_req *req_new(struct dp_lazyd *d, struct lz_task *t, uint64_t img, uint32_t npages, int kind)
{
    struct lz_req *r = calloc(1, sizeof(*r));
    if (!r)
        return NULL;
    r->f.buf = malloc((size_t)npages * PG);
    if (!r->f.buf) {
        free(r);
        return NULL;
    }
    r->f.pid = t->pid;
    r->f.img = img;
    r->f.npages = npages;
    r->f.done = on_fetch_done;
    r->f.opaque = d;
    r->t = t;
    r->kind = kind;
    r->f.bulk = kind == K_BACKGROUND && d->bulk_lane; /* the warm-up: behind every fault (pagesrc.h) */
    r->backoff_ns = 50 * 1000000ull;
    r->next = t->reqs;
    if (t->reqs)
        t->reqs->prev = r;
    t->reqs = r;
    return r;
}

/* Hands r to the source; a source that cannot even queue it gets it
 * again after the backoff, never a made-up page. */
static void req_submit(struct dp_lazyd *d, struct lz_req *r)
{
    r->state = R_AT_SOURCE;
    r->t_submit = dp_now_ns();
    r->f.status = 0;
    r->f.wire_bytes = 0;
    r->t->refs++;
    r->t->c.fetch_requests++;
    if (d->o->src->ops->submit(d->o->src, &r->f) < 0) {
        r->f.status = -EIO;
        r->t->refs--;
        r->state = R_FETCH_RETRY;
        r->retry_at = dp_now_ns() + r->backoff_ns;
        r->rnext = r->t->retry;
        r->t->retry = r;
    }
}

/* A fault on a page in flight waits on the request that carries it. */
struct lz_req *lz_find_req(struct lz_task *t, uint64_t img)
{
    for (struct lz_req *r = t->reqs; r; r = r->next)
        if (img >= r->f.img && img < r->f.img + (uint64_t)r->f.npages * PG)
            return r;
    return NULL;
}

/* Each waiting thread is remembered with its fault time: the latency
 * histogram and the timeout check use it. */
static int add_waiter(struct lz_req *r, uint64_t addr, uint64_t t0)
{
    if (r->nw == r->capw) {
        uint32_t cap = r->capw ? r->capw * 2 : 4;
        struct lz_waiter *w = realloc(r->w, cap * sizeof(*w));
        if (!w)
            return -1;
        r->w = w;
        r->capw = cap;
    }
    r->w[r->nw].addr = addr;
    r->w[r->nw].t0 = t0;
    r->nw++;
    return 0;
}

/* ==== install ==== */

/* The source completed a fetch: install it, or keep its pages in flight
 * and retry (the data is never made up). */
static void on_fetch_done(struct dp_fetch *f)
{
    struct lz_req *r = (struct lz_req *)f;  /* f is the first member */
    struct dp_lazyd *d = f->opaque;
    struct lz_task *t = r->t;
    t->refs--;
    t->c.wire_bytes += f->wire_bytes;
    if (!t->alive) {
        lz_req_unlink(r);
        lz_req_free(r);
        return;
    }
    if (f->status != 0) {
        /* The source failed this fetch (server gone, reconnecting): keep the
         * pages in flight, faulting threads keep waiting, retry with
         * backoff. The data is never made up. */
        t->c.fetch_errors++;
        if (t->c.fetch_errors == 1 || t->c.fetch_errors % 1000 == 0)
            dp_warn("pid %d: fetch of %u pages at 0x%llx from %s failed: %s; retrying",
                    t->shown_pid, f->npages, (unsigned long long)f->img, d->o->src->desc,
                    strerror(-f->status));
        r->state = R_FETCH_RETRY;
        r->retry_at = dp_now_ns() + r->backoff_ns;
        if (r->backoff_ns < 2000000000ull)
            r->backoff_ns *= 2;
        r->rnext = t->retry;
        t->retry = r;
        return;
    }
    if (r->kind == K_FAULT && r->nw > 0) {
        uint64_t took = dp_now_ns() - r->w[0].t0;
        d->fault_rtt_ns = d->fault_rtt_ns ? (7 * d->fault_rtt_ns + took) / 8 : took;
        dp_lzw_fault(&d->wu, took, r->wu_ahead);
    }
    install(d, r);
}

/* Installs what it can of a completed fetch. */
static void install(struct dp_lazyd *d, struct lz_req *r)
{
    struct lz_task *t = r->t;
    if (r->kind == K_REPLAY && d->staging)
        lz_stage_pages(d, r);
    while (r->done_pages < r->f.npages) {
        uint32_t i = r->done_pages;
        uint64_t img = r->f.img + (uint64_t)i * PG;
        struct dp_lazy_region *reg;
        uint64_t cur = dp_lazymap_img_to_addr(&t->map, img, &reg);
        uint8_t *pg = cur ? &reg->pg[(cur - reg->start) / PG] : NULL;
        if (!pg || dp_pg_state(*pg) != DP_PG_INFLIGHT) {
            /* unmapped, removed (zero from now on) or already handled */
            if (!pg || !(*pg & DP_PGF_STAGED))
                t->c.dropped_stale++;
            r->done_pages++;
            continue;
        }
        uint32_t run = 1;
        while (i + run < r->f.npages && cur + (uint64_t)run * PG < reg->end &&
               dp_pg_state(pg[run]) == DP_PG_INFLIGHT)
            run++;
        uint64_t pa = d->place.probe.addr;
        if (d->place.probe.armed && pa >= cur && pa < cur + (uint64_t)run * PG) {
            /* not where a probe's madvise is about to run (lib/lazy_tasks.h) */
            if (pa == cur) {
                r->state = R_INSTALL_RETRY;
                r->rnext = t->retry;
                t->retry = r;
                return;
            }
            run = (uint32_t)((pa - cur) / PG);
        }
        uint64_t done = 0;
        int wp = 0;
        int rc = lz_wp_copy(d, t, cur, r->f.buf + (size_t)i * PG, (uint64_t)run * PG, &done, &wp);
        uint32_t k = (uint32_t)(done / PG);
        if (k > run)
            k = run;
        for (uint32_t j = 0; j < k; j++) {
            uint8_t fl = pg[j];
            /* by why it was fetched, whether or not a fault also waited for it */
            if (fl & DP_PGF_PREFETCH)
                t->c.pages_prefetched++;
            else if (fl & DP_PGF_BACKGROUND)
                t->c.pages_background++;
            else
                t->c.pages_fetched++;
            dp_lazymap_set(&t->map, &pg[j], DP_PG_RESIDENT, fl & (DP_PGF_PREFETCH | DP_PGF_BACKGROUND));
            lz_ev_installed(d, t, cur + (uint64_t)j * PG, img + (uint64_t)j * PG, r->f.buf + (size_t)(i + j) * PG, 0,
                            wp);
        }
        r->done_pages += k;
        enum dp_uffd_outcome oc = dp_uffd_outcome(rc);
        if (oc == DP_UFFD_DONE) {
            continue; /* all, or a short copy without error: go on from the first page not done */
        } else if (oc == DP_UFFD_EXISTS) {
            /* Present already (cannot normally happen: a page in flight is
             * only installed here). Never overwrite it; wake its waiters. */
            t->c.eexist++;
            dp_lazymap_set(&t->map, &pg[k], DP_PG_RESIDENT, 0);
            lz_ev_installed(d, t, cur + (uint64_t)k * PG, img + (uint64_t)k * PG, NULL, 1, 0);
            dp_uffd_wake(t->uffd, cur + (uint64_t)k * PG, PG);
            r->done_pages++;
        } else if (oc == DP_UFFD_UNMAPPED && ++r->retries > 100) {
            /* No VMA registered there any more and no event explains it:
             * give the page back to the remote state; a new fault refetches. */
            dp_warn("pid %d: 0x%llx is no longer registered; dropping the fetched page",
                    t->shown_pid, (unsigned long long)(cur + (uint64_t)k * PG));
            dp_lazymap_set(&t->map, &pg[k], DP_PG_REMOTE, 0);
            r->done_pages++;
        } else if (oc == DP_UFFD_RETRY || oc == DP_UFFD_UNMAPPED) {
            /* An event is pending (or just changed the mapping): read the
             * task's events, then try again with the updated state. */
            t->c.eagain++;
            r->state = R_INSTALL_RETRY;
            r->rnext = t->retry;
            t->retry = r;
            return;
        } else if (oc == DP_UFFD_GONE) {
            lz_task_gone(d, t, "copy: process gone");
            return;
        } else {
            dp_error("pid %d: UFFDIO_COPY at 0x%llx failed: %s; the page stays remote",
                     t->shown_pid, (unsigned long long)(cur + (uint64_t)k * PG), strerror(-rc));
            dp_lazymap_set(&t->map, &pg[k], DP_PG_REMOTE, 0);
            r->done_pages++;
        }
    }
    req_finish(d, r);
}

/* Installs a faulted page from a copy the daemon holds (victim buffer,
 * staging buffer): 1 = installed, -1 = the process is gone, 0 = not
 * installed (EAGAIN and the like; the UFFDIO_COPY error in *rc). */
int lz_local_copy(struct dp_lazyd *d, struct lz_task *t, uint8_t *pg, uint64_t page, uint64_t img,
                      const uint8_t *data, uint64_t t0, int *rc)
{
    uint64_t done = 0;
    int wp = 0;
    *rc = lz_wp_copy(d, t, page, data, PG, &done, &wp);
    enum dp_uffd_outcome oc = dp_uffd_outcome(*rc);
    if (oc == DP_UFFD_DONE || oc == DP_UFFD_EXISTS) {
        if (oc == DP_UFFD_EXISTS) {
            t->c.eexist++;
            dp_uffd_wake(t->uffd, page, PG);
        }
        dp_lazymap_set(&t->map, pg, DP_PG_RESIDENT, 0);
        lz_ev_installed(d, t, page, img, data, oc == DP_UFFD_EXISTS, wp && oc == DP_UFFD_DONE);
        dp_hist_add(&t->lat, dp_now_ns() - t0);
        return 1;
    }
    if (oc == DP_UFFD_GONE) {
        lz_task_gone(d, t, "copy: process gone");
        return -1;
    }
    return 0;
}

/* ==== wake ==== */

/* The request is done: wake its waiters and free it. */
static void req_finish(struct dp_lazyd *d, struct lz_req *r)
{
    (void)d;
    struct lz_task *t = r->t;
    waiters_release(t, r, dp_now_ns());
    lz_req_unlink(r);
    lz_req_free(r);
}

/* Wake: every thread that waited on r runs again, and its wait counts. */
static void waiters_release(struct lz_task *t, struct lz_req *r, uint64_t now)
{
    for (uint32_t i = 0; i < r->nw; i++) {
        dp_hist_add(&t->lat, now - r->w[i].t0);
        /* A successful UFFDIO_COPY already woke the page; a page that was
         * dropped meanwhile was not: wake every waiter, it is harmless. */
        if (t->alive)
            dp_uffd_wake(t->uffd, r->w[i].addr, PG);
    }
    r->nw = 0;
}
