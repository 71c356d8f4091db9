/* lazyd_evict: eviction under a memory budget (docs/budget.md,
 * docs/eviction.md). The fault path tells it what became resident
 * (lz_ev_installed) and what faulted (lz_ev_fault); after each loop turn
 * lz_ev_maybe picks victims and evicts them in batches: stop the process,
 * drain its events, read and hash the pages, write back the modified ones
 * through the page source, zap them, resume. `sync` writes back without
 * evicting. Victims installed write-protected and not written since
 * (lazyd_wp.c) leave through the task's eviction helper instead
 * (lib/ehelper.h: UFFDIO_MOVE inside the process, no thread stopped, no
 * write-back, no comparison), and written ones are cleaned without a stop
 * first; the stop path stays for pages the helper cannot move (EBUSY:
 * shared after fork, pinned, KSM), written pages beyond the budget's slack,
 * untracked pages and tasks without a helper. The first stop of a task
 * installs its helper (issue 13). */
#include <errno.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/random.h>
#include <sys/uio.h>

#include "lazy_tasks.h"
#include "lazyd_int.h"
#include "wbwait.h"
#include "wptrack.h"

#define EV_MAX_BATCH 256
#define EV_ALWAYS_DIRTY DP_HASH_ALWAYS_DIRTY /* the server does not hold what the process has */
#define EV_PUT_INFLIGHT DP_HASH_PUT_INFLIGHT /* a background write-back of the page awaits its ack */
#define EV_EH_REMOVED (-2) /* eh_state: helper removed on request (evict-helpers off) */
#define EV_NOSTOP_MIN 256 /* pages: the least ready_cap (written victims cleaned without a stop) */

static int ev_pump(void *arg);

/* ==== hooks: what the fault path and the tasks tell eviction ==== */

/* Every task is managed under a budget: those CRIU announced and forked
 * children (whose process is found when eviction first needs it, below). */
static int ev_managed(const struct dp_lazyd *d, const struct lz_task *t)
{
    (void)t;
    return d->ev.on;
}

/* argv/environ pages (ps, pgrep -f, /proc/PID/cmdline) are never victims. */
static int ev_pinned(const struct lz_task *t, uint64_t addr)
{
    return t->pinned && addr >= t->pin_lo && addr < t->pin_hi;
}

/* A page became resident with these bytes (NULL: zeros). The hash says what
 * the page server holds for it, unless always_dirty: its content is not the
 * server's (a zero page after the application's drop, an EEXIST of unknown
 * content), so it is written back whatever it holds. */
void lz_ev_installed(struct dp_lazyd *d, struct lz_task *t, uint64_t addr, uint64_t img, const uint8_t *page,
                         int always_dirty, int wp)
{
    if (!ev_managed(d, t))
        return;
    bool created;
    struct dp_pmap_entry *e = dp_pmap_get(&t->hash, 0, img, &created);
    if (!e) {
        dp_warn("pid %d: out of memory for an install hash; page 0x%llx will not be evicted", t->shown_pid,
                (unsigned long long)addr);
        return;
    }
    struct dp_page_hash h = page ? dp_page_hash(d->ev.seed, page) : d->ev.zero_hash;
    e->value = h.lo;
    e->value2 = h.hi;
    e->aux = always_dirty ? EV_ALWAYS_DIRTY : wp ? DP_HASH_WP : 0;
    if (!ev_pinned(t, addr)) /* a page without a policy record is never picked */
        dp_evict_record_install(&d->ev.pol, t->id, addr, dp_now_ns());
}

/* A fault on a REMOTE page evicted recently: install the victim buffer's
 * copy (what the server holds) locally. Only when no fetch for the page is
 * outstanding, so that no late completion can land on it. 1 = served. */
static int vbuf_install(struct dp_lazyd *d, struct lz_task *t, struct dp_lazy_region *reg, uint8_t *pg,
                        uint64_t page, uint64_t t0)
{
    static uint8_t buf[PG] __attribute__((aligned(PG)));
    uint64_t img = reg->img + (page - reg->start);
    int rc;
    if (lz_find_req(t, img) || !dp_vbuf_get(&d->ev.vb, t->id, page, buf))
        return 0;
    int got = lz_local_copy(d, t, pg, page, img, buf, t0, &rc);
    if (got > 0)
        d->ev.vb_hits++;
    return got != 0; /* 0: EAGAIN and the like: fetch it from the server instead */
}
/* A fault on a REMOTE page (budget): the policy learns of it (a refault of a
 * page evicted recently counts), and the victim buffer's copy serves it if
 * it holds one. 1 = served, 0 = fetch it. */
int lz_ev_fault(struct dp_lazyd *d, struct lz_task *t, struct dp_lazy_region *reg, uint8_t *pg, uint64_t page,
                uint64_t t0)
{
    if (!ev_managed(d, t))
        return 0;
    if (dp_evict_record_fault(&d->ev.pol, t->id, page, t0) == 1)
        d->ev.refaults++;
    return vbuf_install(d, t, reg, pg, page, t0);
}

/* Run-time [start, end) of t no longer holds what was picked or buffered
 * there (the application's drop or unmap, or a new pin): forget it. */
void lz_ev_forget(struct dp_lazyd *d, struct lz_task *t, uint64_t start, uint64_t end)
{
    if (!d->ev.on)
        return;
    dp_evict_forget(&d->ev.pol, t->id, start, end);
    dp_vbuf_drop_range(&d->ev.vb, t->id, start, end);
}

/* mremap of t's [from, +len) to [to, +len): the buffered copies of both
 * ranges go, the policy's records move with the pages. */
void lz_ev_remap(struct dp_lazyd *d, struct lz_task *t, uint64_t from, uint64_t to, uint64_t len)
{
    if (!d->ev.on)
        return;
    dp_vbuf_drop_range(&d->ev.vb, t->id, from, from + len);
    dp_vbuf_drop_range(&d->ev.vb, t->id, to, to + len);
    dp_evict_forget(&d->ev.pol, t->id, to, to + len);
    if (dp_evict_move(&d->ev.pol, t->id, from, to, len))
        dp_error("pid %d: out of memory tracking mremap for eviction", t->shown_pid);
}

/* A task CRIU announced: its lazy pages are what a fractional budget is a
 * fraction of (counted with or without a budget). */
void lz_ev_task_new(struct dp_lazyd *d, struct lz_task *t)
{
    d->ev.lazy_pages += dp_lazymap_pages(&t->map, DP_PG_REMOTE);
}

/* t is gone: its injection handle closes (unless a batch of it is running:
 * the batch closes it), its records and buffered copies go. */
void lz_ev_task_gone(struct dp_lazyd *d, struct lz_task *t)
{
    if (t->eh_state > 0) { /* the channel closes; its mappings go with the process */
        struct dp_err err = {{0}};
        dp_ehelper_teardown(&t->eh, NULL, &err);
        t->eh_state = -1;
    }
    if (t->inj_open && !(d->ev.busy && d->ev.cur == t)) {
        dp_inject_close(&t->in);
        t->inj_open = 0;
    }
    if (d->ev.on) {
        dp_evict_forget_owner(&d->ev.pol, t->id);
        dp_vbuf_drop_range(&d->ev.vb, t->id, 0, UINT64_MAX);
    }
}


/* A child after fork (budget): install hashes and policy records of the
 * pages it shares with its parent (dp_fork_inherit, docs/budget.md "Forked
 * children"). */
void lz_ev_fork_inherit(struct dp_lazyd *d, struct lz_task *parent, struct lz_task *c)
{
    if (dp_fork_inherit(&c->map, &parent->hash, &c->hash, &d->ev.pol, c->id, c->pinned ? c->pin_lo : 0,
                        c->pinned ? c->pin_hi : 0, dp_now_ns()) < 0)
        dp_warn("fork of pid %d: out of memory for install hashes; some of the child's pages will not be "
                "evicted", parent->shown_pid);
}

/* ==== the budget ==== */

/* What the budget counts: resident lazy pages of the live tasks. */
uint64_t lz_ev_resident(const struct dp_lazyd *d)
{
    uint64_t n = 0;
    for (const struct lz_task *t = d->tasks; t; t = t->next)
        if (t->alive)
            n += dp_lazymap_pages(&t->map, DP_PG_RESIDENT);
    return n;
}

/* The budget in pages (--budget, or a fraction of the lazy pages); a
 * batch starts above it. */
uint64_t lz_ev_high(const struct dp_lazyd *d)
{
    uint64_t h = d->o->budget_pages;
    if (!h)
        h = (uint64_t)(d->o->budget_frac * (double)d->ev.lazy_pages);
    return h ? h : 1;
}

/* Eviction stops here: one batch below the budget, so batches are full
 * and stops are rare. */
uint64_t lz_ev_low(const struct dp_lazyd *d)
{
    uint64_t h = lz_ev_high(d);
    return h > 2ull * d->ev.batch ? h - d->ev.batch : h / 2;
}

/* ==== background write-back ("cleaning") ==== */

/* Background write-back ("cleaning"): dirty victims found while the budget
 * is within its slack are written back without holding the process stopped
 * for the durable ack; once acked, the hash says what the server holds, and
 * a later pick evicts them clean (short stop, no fdatasync inside it). At
 * most one PUT per page is in flight (a reconnect may resend requests in any
 * order, so two PUTs of one page must never be outstanding together). */
struct ev_clean {
    struct dp_lazyd *d;
    int task_id;
    uint32_t n;
    int evict;                    /* ev_clean_nostop's: once acked, the helper moves the pages */
    uint64_t t0;                  /* submitted (write-back latency) */
    uint64_t img[EV_MAX_BATCH], va[EV_MAX_BATCH];
    struct dp_page_hash h[EV_MAX_BATCH];
};

/* A background write-back's ack: the hashes record what the server now
 * holds; on failure the pages stay dirty and may be picked again. */
static void ev_clean_cb(void *cookie, int status, const char *errmsg)
{
    struct ev_clean *c = cookie;
    struct dp_lazyd *d = c->d;
    struct lz_task *t = lz_task_by_id(d, c->task_id); /* NULL: exited, its hashes are gone */
    d->ev.clean_inflight--;
    if (c->evict)
        d->ev.nostop_inflight -= c->n;
    if (status)
        dp_warn("background write-back to %s failed: %s; the pages stay dirty", d->o->src->desc,
                errmsg ? errmsg : strerror(-status));
    for (uint32_t i = 0; i < c->n; i++) {
        struct dp_pmap_entry *e = t ? dp_pmap_find(&t->hash, 0, c->img[i]) : NULL;
        if (!e) {
            if (t && c->evict) /* its entry went (the range was dropped): no move */
                dp_evict_cancel(&d->ev.pol, t->id, c->va[i]);
            continue;
        }
        if (status == 0) {
            /* the server holds exactly these bytes now (whatever the page
             * became meanwhile: the hash compares against the server's copy) */
            e->value = c->h[i].lo;
            e->value2 = c->h[i].hi;
            e->aux &= DP_HASH_WP | DP_HASH_WRITTEN; /* a write since the re-protect stays marked */
        } else {
            e->aux &= ~EV_PUT_INFLIGHT;
            if (e->aux & DP_HASH_WP)
                e->aux |= DP_HASH_WRITTEN; /* what the server holds is older: write it again */
        }
        if (!c->evict)
            continue;
        /* still unmarked: exactly what the server holds now, the helper may
         * move it; one written again since the protect (or not acked) is
         * abandoned: it stays resident with its write, to be picked again */
        if (status == 0 && e->aux == DP_HASH_WP && d->ev.nready < d->ev.ready_cap) {
            d->ev.ready[d->ev.nready++] = (struct dp_evict_key){.owner = t->id, .addr = c->va[i]};
        } else {
            dp_evict_cancel(&d->ev.pol, t->id, c->va[i]);
            d->ev.cancels++;
            d->ev.nostop_abandoned++;
        }
    }
    if (status == 0) {
        d->ev.cleaned += c->n;
        dp_hist_add(&d->ev.wb_lat, dp_now_ns() - c->t0);
        if (c->evict)
            dp_hist_add(&d->ev.nostop_wait, dp_now_ns() - c->t0);
    }
    free(c);
}

/* Background write-back of the nd dirty ones of m pages whose bytes are in
 * buf (one PUT through the page source, acknowledged later in ev_clean_cb),
 * their entries marked EV_PUT_INFLIGHT. Unless evict, their eviction is
 * cancelled (keep[i] = 0) and a later pick finds them clean; with evict
 * they stay picked and the ack hands them to the helper (ev_ready_move).
 * 1 if submitted, 0 if not (the source takes no PUT, its limit, no memory,
 * a send failure). */
static int ev_clean_submit(struct dp_lazyd *d, struct lz_task *t, size_t m, size_t nd, const uint8_t *dirty,
                           const uint64_t *img, const uint64_t *va, const uint8_t *buf,
                           const struct dp_page_hash *now_h, uint8_t *keep, int evict)
{
    struct dp_pagesrc *src = d->o->src;
    if (!dp_pagesrc_can_put(src) || dp_pagesrc_put_max(src) < nd)
        return 0;
    struct ev_clean *c = calloc(1, sizeof(*c));
    if (!c)
        return 0;
    uint64_t wimg[EV_MAX_BATCH];
    const uint8_t *wdata[EV_MAX_BATCH];
    size_t k = 0;
    c->d = d;
    c->task_id = t->id;
    for (size_t i = 0; i < m; i++) {
        if (!dirty[i])
            continue;
        wimg[k] = img[i];
        wdata[k] = buf + i * PG;
        c->img[k] = img[i];
        c->va[k] = va[i];
        c->h[k] = now_h[i];
        k++;
    }
    c->n = (uint32_t)k;
    c->t0 = dp_now_ns();
    struct dp_err perr = {{0}};
    c->evict = evict;
    if (dp_pagesrc_put(src, t->pid, wimg, wdata, (uint32_t)k, ev_clean_cb, c, &perr) != 0) {
        free(c);
        return 0;
    }
    d->ev.clean_inflight++;
    d->ev.clean_requests++;
    if (evict)
        d->ev.nostop_inflight += c->n;
    for (size_t i = 0; i < m; i++) {
        if (!dirty[i])
            continue;
        struct dp_pmap_entry *e = dp_pmap_find(&t->hash, 0, img[i]);
        if (e)
            e->aux |= EV_PUT_INFLIGHT;
        if (evict)
            continue;
        keep[i] = 0;
        dp_evict_cancel(&d->ev.pol, t->id, va[i]);
        d->ev.cancels++;
    }
    return 1;
}

/* ==== write-back inside a stop ==== */

/* dp_wait_bounded's pump while a batch waits for acks: the loop must go
 * on, and a task that died ends the wait. */
static int ev_pump(void *arg)
{
    struct lz_task *t = arg;
    lz_pump(t->d);
    return t->alive ? 0 : -1;
}

/* inject touches target memory (stack scratch, rseq area) only where the
 * page is present: on a missing lazily managed page /proc/PID/mem fails
 * with EIO (measured, docs/budget.md), and process_vm_readv would fault
 * into our own userfaultfd and block the daemon on itself. */
static int ev_ensure(void *arg, uint64_t addr, uint64_t len)
{
    struct lz_task *t = arg;
    if (!t->alive || !len)
        return -1;
    if (dp_pagemap_present(t->host_pid, addr, len) != 1)
        return -1;
    for (uint64_t p = addr & ~(PG - 1); p < addr + len; p += PG)
        if (lz_wp_release(t->d, t, p) < 0)
            return -1;
    return 0;
}

/* A write-back's ack inside a stop: one fewer to wait for. */
static void ev_put_cb(void *cookie, int status, const char *errmsg)
{
    struct dp_lazyd *d = cookie;
    d->ev.put_wait--;
    if (status) {
        d->ev.put_status = status;
        dp_warn("write-back to %s failed: %s", d->o->src->desc, errmsg ? errmsg : strerror(-status));
    }
}

/* Writes n pages back through the page source (image addresses img[i],
 * bytes at data[i]) and waits for its durable acknowledgement, pumping
 * meanwhile. 0 or -1. */
static int ev_put(struct dp_lazyd *d, struct lz_task *t, const uint64_t *img, const uint8_t *const *data, size_t n)
{
    struct dp_pagesrc *src = d->o->src;
    if (!dp_pagesrc_can_put(src))
        return -1;
    if (d->ev.put_wait > 0) {
        d->ev.put_status = -EAGAIN;
        return -1; /* acks of a batch abandoned earlier: never wait for them with threads stopped */
    }
    size_t max = dp_pagesrc_put_max(src) ? dp_pagesrc_put_max(src) : EV_MAX_BATCH;
    if (max > EV_MAX_BATCH)
        max = EV_MAX_BATCH;
    d->ev.put_status = 0;
    uint64_t t0 = dp_now_ns();
    for (size_t i = 0; i < n;) {
        size_t k = n - i < max ? n - i : max;
        struct dp_err err = {{0}};
        int rc = dp_pagesrc_put(src, t->pid, img + i, data + i, (uint32_t)k, ev_put_cb, d, &err);
        i += k;
        if (rc < 0) {
            dp_warn("write-back to %s: %s", d->o->src->desc, err.msg);
            d->ev.put_status = -EIO;
            break;
        }
        d->ev.put_wait++;
        d->ev.wb_requests++;
    }
    if (dp_wait_bounded(ev_pump, t, &d->ev.put_wait, d->o->wb_timeout_ms, NULL) == DP_WAIT_TIMEOUT) {
        /* abandoned: the threads resume, the pages stay resident (marked to be written again) */
        d->ev.backoff_until = dp_now_ns() + (uint64_t)(d->o->wb_timeout_ms > 0 ? d->o->wb_timeout_ms
                                                                               : DP_WAIT_DEFAULT_MS) * 1000000ull;
        d->ev.wb_aborts++;
        d->ev.put_status = -ETIMEDOUT;
        dp_warn("pid %d: write-back of %zu pages to %s not acknowledged within %d ms (--writeback-timeout): "
                "eviction batch abandoned, the threads resume and the pages stay resident; eviction resumes "
                "once the page server answers", t->shown_pid, n, d->o->src->desc,
                d->o->wb_timeout_ms > 0 ? d->o->wb_timeout_ms : DP_WAIT_DEFAULT_MS);
        return -1;
    }
    if (t->alive && d->ev.put_status == 0)
        dp_hist_add(&d->ev.wb_lat, dp_now_ns() - t0);
    return t->alive && d->ev.put_status == 0 ? 0 : -1;
}

/* ==== one batch ==== */

/* Another live address space reads pages under this checkpoint pid (a
 * fork): a write-back under it would show up in the other one. */
static int ev_shared(const struct dp_lazyd *d, const struct lz_task *t)
{
    for (const struct lz_task *x = d->tasks; x; x = x->next)
        if (x != t && x->alive && x->pid == t->pid)
            return 1;
    return 0;
}

/* t's process exited (its uffd may still be readable for a moment, or live
 * on in a process sharing the mm, vfork): gone if the mm is, else unplaced. */
static void ev_lost(struct dp_lazyd *d, struct lz_task *t)
{
    uint64_t probe = t->map.n ? t->map.r[0].start : 0x10000000ull;
    if (dp_uffd_alive(t->uffd, probe) == 0)
        lz_task_gone(d, t, "exited during an eviction");
    else
        t->host_pid = 0;
}

/* ======================================================================
 * Dirty or clean, and the eviction helper (issue 13)
 * ====================================================================== */

/* Which of the m pages read in a stop (buf) differ from what the server
 * holds. A page installed write-protected needs no comparison: it is dirty
 * iff a write-protect fault marked it; a dirty one is protected again here
 * (its threads are stopped, so no write falls between this read and the
 * protect) and unmarked, so a write after the stop marks it again. Other
 * pages are compared with their install hash. now_h: hash of the bytes read. */
static void ev_dirty(struct dp_lazyd *d, struct lz_task *t, const uint8_t *buf, size_t m, const uint64_t *va,
                     const uint64_t *img, const struct dp_page_hash *hs, const uint8_t *wpa, uint8_t *dirty,
                     struct dp_page_hash *now_h)
{
    for (size_t i = 0; i < m; i++) {
        if (!(wpa[i] & DP_HASH_WP)) {
            dp_dirty_check(d->ev.seed, buf + i * PG, 1, &hs[i], &dirty[i], &now_h[i]);
            /* tracked from now on (zero pages, EEXIST, a fork's pages): the
             * threads are stopped, so nothing is written between the read
             * the comparison or write-back uses and the protect */
            struct dp_pmap_entry *e = t->wp == 1 ? dp_pmap_find(&t->hash, 0, img[i]) : NULL;
            if (e && dp_wp_protect(t->uffd, va[i], PG, 1) == 0)
                e->aux = (e->aux | DP_HASH_WP) & ~DP_HASH_WRITTEN;
            continue;
        }
        dirty[i] = (wpa[i] & DP_HASH_WRITTEN) != 0;
        if (!dirty[i]) {
            now_h[i] = hs[i];
            d->ev.clean_drops++;
            continue;
        }
        now_h[i] = dp_page_hash(d->ev.seed, buf + i * PG);
        struct dp_pmap_entry *e = dp_pmap_find(&t->hash, 0, img[i]);
        if (e && dp_wp_protect(t->uffd, va[i], PG, 1) == 0)
            e->aux &= ~DP_HASH_WRITTEN;
        else if (e)
            e->aux &= ~DP_HASH_WP; /* not protected again: compare contents from now on */
    }
}

/* The helper's first answer is awaited serving the loop, as inject's
 * waits are (ev_pump); the descriptor is polled by the loop anyway. */
static int ev_eh_pump(void *arg, int fd)
{
    (void)fd;
    return ev_pump(arg);
}

/* Installs t's eviction helper inside a stop (its threads are stopped), or
 * says why it has none: the ptrace path then stays its only path. It is
 * used once it answered, after the stop (ev_helper_confirm). */
static void ev_helper_install(struct dp_lazyd *d, struct lz_task *t)
{
    struct dp_err err = {{0}};
    for (size_t i = 0; i < t->in.n; i++)
        if (t->in.t[i].group_stop)
            return; /* stopped by job control: try again in a later stop */
    t->eh_state = -1;
    if (dp_ehelper_install(&t->eh, &t->in, &err) < 0) {
        dp_info("pid %d: no eviction helper (%s); its evictions stop its threads", t->shown_pid, err.msg);
        return;
    }
    t->eh_state = 2;
    (void)d;
}

/* After the stop that installed it: the helper's first answer, with the
 * threads running. Its phases go to the stats (issue 13: the one stop per
 * task is the install's, kept as short as possible). A task stopped by job
 * control (or a freezer) before its helper answered stays unconfirmed
 * (eh_state 2, the ptrace path) and is asked again once it runs
 * (ev_install_eager): waiting here would hold the daemon's loop, control
 * socket included, for as long as the task stays stopped. */
static void ev_helper_confirm(struct dp_lazyd *d, struct lz_task *t)
{
    struct dp_err err = {{0}};
    d->ev.busy = 1;
    d->ev.cur = t;
    int rc = dp_ehelper_check(&t->eh, ev_eh_pump, t, &err);
    d->ev.busy = 0;
    if (rc == 1) {
        dp_debug("pid %d: stopped before its eviction helper answered; asked again once it runs", t->shown_pid);
        return;
    }
    if (rc < 0) {
        dp_info("pid %d: the eviction helper did not answer (%s); its evictions stop its threads", t->shown_pid,
                err.msg);
        if (dp_ehelper_teardown(&t->eh, t->alive && t->inj_open ? &t->in : NULL, &err) < 0)
            dp_warn("pid %d: removing the eviction helper: %s", t->shown_pid, err.msg);
        t->eh_state = -1;
        return;
    }
    t->eh_state = 1;
    d->ev.helper_tasks++;
    const struct dp_eh_stats *st = &t->eh.st;
    uint64_t ph[DP_ARRAY_LEN(d->ev.install_phase_ns)] = {st->install_map_ns, st->install_uffd_ns,
                                                          st->install_channel_ns, st->install_thread_ns,
                                                          st->install_check_ns};
    for (size_t i = 0; i < DP_ARRAY_LEN(ph); i++)
        d->ev.install_phase_ns[i] += ph[i];
    dp_debug("pid %d: eviction helper thread %d installed", t->shown_pid, (int)t->eh.tid);
}

/* A victim the helper may take: resident, installed write-protected and not
 * written since (the server holds exactly it: no write-back), no fetch or
 * write-back of it outstanding, not pinned, not a thread's rseq area. */
static int ev_helper_takes(struct lz_task *t, uint64_t addr)
{
    struct dp_lazy_region *reg;
    uint8_t *pg = dp_lazymap_page(&t->map, addr, &reg);
    if (!pg || dp_pg_state(*pg) != DP_PG_RESIDENT || ev_pinned(t, addr))
        return 0;
    uint64_t im = reg->img + (addr - reg->start);
    struct dp_pmap_entry *e = dp_pmap_find(&t->hash, 0, im);
    if (!e || e->aux != DP_HASH_WP || lz_find_req(t, im))
        return 0;
    for (size_t k = 0; k < t->eh_nrseq; k++)
        if (t->eh_rseq[k] == addr)
            return 0;
    return 1;
}

/* qsort order of run-time addresses (the stop path takes them sorted). */
static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* The page left the process (moved by the helper): REMOTE, a ghost for the
 * policy, and its bytes (when read) in the victim buffer. */
static void ev_gone(struct dp_lazyd *d, struct lz_task *t, uint64_t addr, const uint8_t *bytes, uint64_t now)
{
    uint8_t *pg = dp_lazymap_page(&t->map, addr, NULL);
    if (pg && dp_pg_state(*pg) == DP_PG_RESIDENT)
        dp_lazymap_set(&t->map, pg, DP_PG_REMOTE, 0);
    dp_evict_done(&d->ev.pol, t->id, addr, now);
    if (bytes)
        dp_vbuf_put(&d->ev.vb, t->id, addr, bytes);
}

/* A victim of a task with a helper that is resident, not pinned, not a
 * thread's rseq area and has no fetch outstanding: its install-hash entry
 * (else NULL) and *img, for the paths below that act without a stop. */
static struct dp_pmap_entry *ev_nostop_entry(struct lz_task *t, uint64_t a, uint64_t *img)
{
    struct dp_lazy_region *reg;
    uint8_t *pg = dp_lazymap_page(&t->map, a, &reg);
    if (!pg || dp_pg_state(*pg) != DP_PG_RESIDENT || ev_pinned(t, a))
        return NULL;
    *img = reg->img + (a - reg->start);
    for (size_t k = 0; k < t->eh_nrseq; k++)
        if (t->eh_rseq[k] == a)
            return NULL;
    return lz_find_req(t, *img) ? NULL : dp_pmap_find(&t->hash, 0, *img);
}

/* Victims installed without write-protect (zero pages, EEXIST of unknown
 * content, a fork's inherited pages) are taken into tracking without a
 * stop: protected first, then read (a write after the protect waits in its
 * WP fault until the daemon reads it, after this) and compared with what the
 * server holds. Clean ones become DP_HASH_WP (the helper moves them), the
 * others DP_HASH_WP|DP_HASH_WRITTEN (ev_clean_nostop writes them back).
 * Before this, each such victim took the stop path. */
static void ev_track_nostop(struct dp_lazyd *d, struct lz_task *t, const uint64_t *addr, size_t n)
{
    static uint8_t page[PG] __attribute__((aligned(PG)));
    if (t->eh_state != 1 || !t->inj_open || t->wp != 1)
        return;
    for (size_t i = 0; i < n; i++) {
        uint64_t im;
        struct dp_pmap_entry *e = ev_nostop_entry(t, addr[i], &im);
        if (!e || (e->aux & (DP_HASH_WP | EV_PUT_INFLIGHT)) || dp_wp_protect(t->uffd, addr[i], PG, 1) < 0)
            continue; /* tracked already, or its range is not registered WP: the stop path */
        if (dp_inject_read(&t->in, addr[i], page, PG) < 0) {
            dp_wp_protect(t->uffd, addr[i], PG, 0); /* dropped meanwhile: leave it as it was */
            continue;
        }
        uint8_t dirty = 1;
        struct dp_page_hash hs = {e->value, e->value2}, now;
        if (!(e->aux & EV_ALWAYS_DIRTY))
            dp_dirty_check(d->ev.seed, page, 1, &hs, &dirty, &now);
        e->aux = DP_HASH_WP | (dirty ? DP_HASH_WRITTEN : 0);
        d->ev.nostop_tracked++;
    }
}

/* Written write-protected victims of a task with a helper, written back
 * without a stop. Each is protected again first and unmarked, then read
 * through /proc/PID/mem (which fails with EIO instead of waiting on our own
 * uffd if the application dropped it meanwhile), and all go in one PUT
 * through the page source; they stay picked and resident. A write after
 * the protect faults and marks the page again. The loop goes on serving
 * while the PUT is in flight; its ack (ev_clean_cb, through the loop's one
 * dispatch) hands the pages still unmarked -- exactly what the server
 * holds -- to the helper (ev_ready_move) and abandons the others (written
 * again, or not acknowledged: they stay resident, picked again later).
 * Bound: pages awaiting such an ack or the move after it never exceed
 * ready_cap (4 batches, >= 256 pages; docs/eviction.md); beyond it written victims take
 * the stop path as before. The victims left for the other paths stay in
 * addr[0..*n), sorted. Returns the pages submitted. */
static size_t ev_clean_nostop(struct dp_lazyd *d, struct lz_task *t, uint64_t *addr, size_t *n)
{
    if (t->eh_state != 1 || !t->inj_open || t->wp != 1 || ev_shared(d, t))
        return 0;
    size_t room = d->ev.ready_cap - d->ev.nostop_inflight - d->ev.nready;
    static uint8_t buf[EV_MAX_BATCH * PG] __attribute__((aligned(PG)));
    uint64_t va[EV_MAX_BATCH], img[EV_MAX_BATCH];
    struct dp_page_hash h[EV_MAX_BATCH];
    uint8_t dirty[EV_MAX_BATCH], keep[EV_MAX_BATCH];
    struct dp_pmap_entry *ent[EV_MAX_BATCH];
    size_t m = 0, rest = 0;
    for (size_t i = 0; i < *n; i++) {
        uint64_t a = addr[i], im = 0;
        struct dp_pmap_entry *e = m < room ? ev_nostop_entry(t, a, &im) : NULL;
        if (!e || e->aux != (DP_HASH_WP | DP_HASH_WRITTEN) || dp_wp_protect(t->uffd, a, PG, 1) < 0) {
            addr[rest++] = a;
            continue;
        }
        e->aux &= ~DP_HASH_WRITTEN; /* after the protect: a later write marks it again */
        if (dp_inject_read(&t->in, a, buf + m * PG, PG) < 0) {
            e->aux |= DP_HASH_WRITTEN; /* gone or unreadable: the stop path looks at it */
            addr[rest++] = a;
            continue;
        }
        va[m] = a;
        img[m] = im;
        ent[m] = e;
        h[m] = dp_page_hash(d->ev.seed, buf + m * PG);
        dirty[m] = 1;
        m++;
    }
    size_t sent = 0;
    if (m && ev_clean_submit(d, t, m, m, dirty, img, va, buf, h, keep, 1)) {
        d->ev.nostop_cleaned += m;
        sent = m;
    } else {
        for (size_t j = 0; j < m; j++) {
            ent[j]->aux |= DP_HASH_WRITTEN;
            addr[rest++] = va[j];
        }
        qsort(addr, rest, sizeof(addr[0]), cmp_u64);
    }
    *n = rest;
    return sent;
}

/* For a task with a helper, victims the stop path would only cancel (no
 * longer resident, a fetch or a background write-back of them outstanding,
 * pinned meanwhile, a thread's rseq area) are cancelled here: no stop for
 * nothing. */
static void ev_prune(struct dp_lazyd *d, struct lz_task *t, uint64_t *addr, size_t *n)
{
    if (t->eh_state != 1)
        return;
    size_t rest = 0;
    for (size_t i = 0; i < *n; i++) {
        uint64_t im;
        struct dp_pmap_entry *e = ev_nostop_entry(t, addr[i], &im);
        if (e && !(e->aux & EV_PUT_INFLIGHT)) {
            addr[rest++] = addr[i];
            continue;
        }
        dp_evict_cancel(&d->ev.pol, t->id, addr[i]);
        d->ev.cancels++;
    }
    *n = rest;
}

/* The helper path over the sorted victims addr[0..*n): the clean
 * write-protected ones are moved out by the helper, no thread stopped.
 * The daemon does not pump meanwhile: MOVE never waits for it (faults,
 * REMOVE and fork events release mmap_lock before they wait; a changing mm
 * gives EAGAIN), and a page that faults after its move is REMOTE by the time
 * the fault is read. On return addr[0..*n) holds, sorted, the victims left
 * for the stop path (written, untracked, or refused: EBUSY...). Returns the
 * pages evicted. Only clean pages are moved, so even a helper that fails
 * mid-way loses nothing: every page it was asked for is taken as gone (a
 * present one refetched meets EEXIST, which the fault path handles). */
static size_t ev_helper_once(struct dp_lazyd *d, struct lz_task *t, uint64_t *addr, size_t *n)
{
    if (t->eh_state != 1 || !t->alive || !dp_ehelper_runnable(&t->eh))
        return 0;
    struct dp_eh_run runs[EV_MAX_BATCH];
    uint64_t asked[EV_MAX_BATCH];
    size_t nr = 0, na = 0, rest = 0;
    for (size_t i = 0; i < *n; i++) {
        uint64_t a = addr[i];
        int join = nr && runs[nr - 1].src + (uint64_t)runs[nr - 1].npages * PG == a;
        if (!ev_helper_takes(t, a) || (!join && nr == DP_EH_MAX_RUNS)) {
            addr[rest++] = a;
            continue;
        }
        asked[na++] = a;
        if (join)
            runs[nr - 1].npages++;
        else
            runs[nr++] = (struct dp_eh_run){.src = a, .npages = 1};
    }
    if (!na)
        return 0;
    struct dp_err err = {{0}};
    uint64_t t0 = dp_now_ns();
    if (dp_ehelper_move(&t->eh, runs, nr, NULL, NULL, &err) < 0) {
        dp_warn("pid %d: eviction helper failed (%s); its evictions stop its threads from now on", t->shown_pid,
                err.msg);
        for (size_t i = 0; i < na; i++)
            ev_gone(d, t, asked[i], NULL, t0);
        d->ev.helper_failures++;
        dp_ehelper_teardown(&t->eh, NULL, &err);
        t->eh_state = -1;
        *n = rest;
        return na;
    }
    /* keep the moved bytes for refaults: one process_vm_readv of scratch */
    static uint8_t buf[EV_MAX_BATCH * PG] __attribute__((aligned(PG)));
    struct iovec loc[EV_MAX_BATCH], rem[EV_MAX_BATCH];
    uint64_t moved[EV_MAX_BATCH];
    size_t nm = 0;
    for (size_t r = 0; r < nr; r++) {
        for (uint32_t j = 0; j < runs[r].npages; j++) {
            uint64_t a = runs[r].src + (uint64_t)j * PG;
            if (j >= runs[r].moved) {
                addr[rest++] = a;
                d->ev.helper_fallback++;
                d->ev.helper_busy += runs[r].err == EBUSY;
                continue;
            }
            loc[nm] = (struct iovec){buf + nm * PG, PG};
            rem[nm] = (struct iovec){(void *)(uintptr_t)(runs[r].scratch + (uint64_t)j * PG), PG};
            moved[nm++] = a;
        }
    }
    int have = nm && process_vm_readv(t->host_pid, loc, nm, rem, nm, 0) == (ssize_t)(nm * PG);
    uint64_t now = dp_now_ns();
    for (size_t i = 0; i < nm; i++)
        ev_gone(d, t, moved[i], have ? buf + i * PG : NULL, now);
    if (dp_ehelper_drop(&t->eh, NULL, NULL, &err) < 0) {
        dp_warn("pid %d: eviction helper: %s; its evictions stop its threads from now on", t->shown_pid, err.msg);
        d->ev.helper_failures++;
        dp_ehelper_teardown(&t->eh, NULL, &err);
        t->eh_state = -1;
    }
    dp_hist_add(&d->ev.helper_call, dp_now_ns() - t0);
    d->ev.helper_batches++;
    d->ev.helper_pages += nm;
    d->ev.clean_drops += nm;
    d->ev.evictions += nm;
    t->evictions += nm;
    qsort(addr, rest, sizeof(addr[0]), cmp_u64);
    *n = rest;
    return nm;
}

/* ev_helper_once for as long as it moves something: one request holds at
 * most DP_EH_MAX_RUNS runs (186), so scattered victims (a zipf walk: one
 * run each) need two requests for a batch of 256 rather than a stop for
 * the rest. */
static size_t ev_helper(struct dp_lazyd *d, struct lz_task *t, uint64_t *addr, size_t *n)
{
    size_t total = 0, got;
    for (int round = 0; round < 4 && *n && (got = ev_helper_once(d, t, addr, n)) > 0; round++)
        total += got;
    return total;
}

/* One batch's victims, from the pick to the zap; index i is one page. */
struct ev_victims {
    size_t m;                                /* pages ev_select kept */
    uint64_t va[EV_MAX_BATCH], img[EV_MAX_BATCH];
    struct dp_page_hash now_h[EV_MAX_BATCH]; /* hash of the bytes read */
    uint8_t dirty[EV_MAX_BATCH];             /* the server does not hold them */
    uint8_t keep[EV_MAX_BATCH];              /* still to be evicted (sync: counted) */
    size_t nd;                               /* the dirty ones, in order: */
    uint64_t wimg[EV_MAX_BATCH];
    const uint8_t *wdata[EV_MAX_BATCH];
    uint8_t *buf;                            /* page i's bytes at buf + i * PG */
};

/* Stops t's process for a batch and applies every event from before the
 * stop. 1 = stopped (the batch is on), 0 = not (its process exited, cannot
 * be prepared, or is still traced by criu, which says "restore finished"
 * before it detaches: the picks are cancelled, eviction tries again after
 * its backoff), -2 = still traced and this is a sync (it fails), -1 =
 * failed with the threads in an unknown state (ev_batch's fatal path).
 * *t0: the stop's start, for the stop histogram. */
static int ev_stop(struct dp_lazyd *d, struct lz_task *t, const uint64_t *addr, size_t n, int sync, uint64_t *t0,
                   struct dp_err *err)
{
    if (!t->inj_open) {
        struct dp_inject_ops ops = {.pump = ev_pump, .ensure = ev_ensure, .arg = t, .exitkill = 1};
        if (dp_inject_open(&t->in, t->host_pid, &ops, err) < 0) {
            if (dp_proc_exited(t->host_pid, t->host_start))
                ev_lost(d, t); /* it just exited: its pages go with it */
            else
                dp_warn("process %d (task %d): cannot prepare eviction: %s", (int)t->host_pid, t->id, err->msg);
            for (size_t i = 0; i < n && !sync; i++)
                dp_evict_cancel(&d->ev.pol, t->id, addr[i]);
            return 0;
        }
        t->inj_open = 1;
    }
    d->ev.busy = 1;
    d->ev.cur = t;
    *t0 = dp_now_ns();
    int src = dp_inject_stop(&t->in, err);
    if (src == DP_INJECT_TRACED) { /* nothing was touched: never a kill */
        dp_debug("task %d: %s", t->id, err->msg);
        for (size_t i = 0; i < n && !sync; i++)
            dp_evict_cancel(&d->ev.pol, t->id, addr[i]);
        d->ev.busy = 0;
        return sync ? -2 : 0;
    }
    if (src < 0)
        return -1;
    if (t->host_start && dp_proc_start_time(t->host_pid) != t->host_start) {
        /* the pid names another process now (ours exited, the pid was
         * reused before the exit probe saw it): leave it alone */
        dp_inject_resume(&t->in, 1, err);
        dp_inject_close(&t->in);
        t->inj_open = 0;
        ev_lost(d, t);
        for (size_t i = 0; i < n && !sync; i++)
            dp_evict_cancel(&d->ev.pol, t->id, addr[i]);
        d->ev.busy = 0;
        return 0;
    }
    lz_handle_uffd(d, t); /* drain: every event from before the stop is applied */
    if (t->alive && !sync && t->eh_state == 0 && d->ev.helper_on)
        ev_helper_install(d, t); /* once per task, while its threads are stopped anyway */
    return t->alive ? 1 : -1;
}

/* Keeps the picked pages that may still go (RESIDENT, no fetch or
 * background write-back outstanding, not a thread's rseq area, not pinned
 * since the pick), reads them from the stopped process and compares their
 * hashes with what the server holds: the dirty ones are listed in v->wimg
 * and v->wdata for the write-back. */
static void ev_select(struct dp_lazyd *d, struct lz_task *t, const uint64_t *addr, size_t n, int sync,
                      struct ev_victims *v)
{
    struct dp_page_hash hs[EV_MAX_BATCH];
    uint8_t always[EV_MAX_BATCH], wpa[EV_MAX_BATCH];
    /* A thread's rseq area must stay readable for the next injection: a
     * stopped thread (SIGSTOP, a debugger) never faults it back in, and an
     * absent one reads as "maybe inside a critical section" for good. */
    uint64_t rseq_pg[64];
    size_t nrseq = sync ? 0 : dp_inject_rseq_pages(&t->in, rseq_pg, 64);
    if (!sync) { /* the helper keeps its hands off them too */
        memcpy(t->eh_rseq, rseq_pg, nrseq * sizeof(rseq_pg[0]));
        t->eh_nrseq = nrseq;
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        struct dp_lazy_region *reg;
        uint8_t *pg = dp_lazymap_page(&t->map, addr[i], &reg);
        uint64_t im = pg ? reg->img + (addr[i] - reg->start) : 0;
        struct dp_pmap_entry *e = pg ? dp_pmap_find(&t->hash, 0, im) : NULL;
        int holds_rseq = 0;
        for (size_t k = 0; k < nrseq && !holds_rseq; k++)
            holds_rseq = rseq_pg[k] == addr[i];
        if (!pg || dp_pg_state(*pg) != DP_PG_RESIDENT || !e || (e->aux & EV_PUT_INFLIGHT) || lz_find_req(t, im) ||
            holds_rseq || (!sync && ev_pinned(t, addr[i]))) { /* pinned after it was picked */
            if (!sync) {
                dp_evict_cancel(&d->ev.pol, t->id, addr[i]);
                d->ev.cancels++;
            }
            continue;
        }
        v->va[m] = addr[i];
        v->img[m] = im;
        hs[m].lo = e->value;
        hs[m].hi = e->value2;
        always[m] = (e->aux & EV_ALWAYS_DIRTY) != 0;
        wpa[m] = (uint8_t)(e->aux & (DP_HASH_WP | DP_HASH_WRITTEN));
        m++;
    }
    if (m && dp_inject_read_pages(&t->in, v->va, m, v->buf) < 0) {
        dp_warn("pid %d: reading %zu pages to evict failed: %s; they stay", t->shown_pid, m, strerror(errno));
        for (size_t i = 0; i < m && !sync; i++)
            dp_evict_cancel(&d->ev.pol, t->id, v->va[i]);
        m = 0;
    }
    ev_dirty(d, t, v->buf, m, v->va, v->img, hs, wpa, v->dirty, v->now_h);
    v->nd = 0;
    for (size_t i = 0; i < m; i++) {
        v->keep[i] = 1;
        if (always[i])
            v->dirty[i] = 1;
        if (v->dirty[i]) {
            v->wimg[v->nd] = v->img[i];
            v->wdata[v->nd++] = v->buf + i * PG;
        }
    }
    v->m = m;
}

/* Writes the dirty victims back through the page source. Within the
 * budget's slack they go in the background (the process is not held for
 * the durable ack; those pages stay and a later pick finds them clean);
 * else inside the stop, acknowledged before any zap. A page whose write-back
 * failed stays, marked to be written again. *nwb: pages written in the
 * stop. -1 when the process died meanwhile. */
static int ev_write_back(struct dp_lazyd *d, struct lz_task *t, struct ev_victims *v, int sync, size_t *nwb)
{
    if (v->nd && !sync && !ev_shared(d, t) && lz_ev_resident(d) <= lz_ev_high(d) + d->ev.batch &&
        ev_clean_submit(d, t, v->m, v->nd, v->dirty, v->img, v->va, v->buf, v->now_h, v->keep, 0))
        v->nd = 0; /* within the slack: cleaned in the background, the clean ones are evicted now */
    if (!v->nd)
        return 0;
    int ok = 0;
    if (ev_shared(d, t))
        d->ev.shared_skips += v->nd;
    else
        ok = ev_put(d, t, v->wimg, v->wdata, v->nd) == 0;
    if (!t->alive)
        return -1;
    if (!ok && !ev_shared(d, t)) {
        d->ev.wb_incomplete++;
        if (d->ev.put_status != -ETIMEDOUT && d->ev.put_status != -EAGAIN)
            d->ev.wb_errors++; /* refused; a timeout is counted in wb_aborts */
    }
    for (size_t i = 0; i < v->m; i++) {
        if (!v->dirty[i])
            continue;
        if (!ok) {
            /* an abandoned PUT may still land later: write it again next time, whatever the hash */
            struct dp_pmap_entry *e = dp_pmap_find(&t->hash, 0, v->img[i]);
            if (e)
                e->aux |= EV_ALWAYS_DIRTY;
            v->keep[i] = 0;
            if (!sync) {
                dp_evict_cancel(&d->ev.pol, t->id, v->va[i]);
                d->ev.cancels++;
            }
            continue;
        }
        /* the server holds these bytes now */
        struct dp_pmap_entry *e = dp_pmap_find(&t->hash, 0, v->img[i]);
        if (e) {
            e->value = v->now_h[i].lo;
            e->value2 = v->now_h[i].hi;
            e->aux &= DP_HASH_WP | DP_HASH_WRITTEN; /* a write during the ack wait stays marked */
        }
        (*nwb)++;
    }
    if (ok) {
        d->ev.writebacks += v->nd;
        t->writebacks += v->nd;
    }
    return 0;
}

/* Zaps the victims still kept (adjacent ones as one range) while the
 * REMOVE events they raise are marked as ours (their data is at the
 * source: REMOTE, not NONE), and keeps each page's bytes in the victim
 * buffer for a quick refault. Returns the pages evicted, -1 when the zap
 * failed or the process died. */
static int ev_zap(struct dp_lazyd *d, struct lz_task *t, struct ev_victims *v, struct dp_err *err)
{
    struct dp_zap_range zr[EV_MAX_BATCH];
    struct dp_lazy_range own[EV_MAX_BATCH];
    size_t first[EV_MAX_BATCH], nz = 0;
    for (size_t i = 0; i < v->m; i++) {
        if (!v->keep[i])
            continue;
        if (nz && zr[nz - 1].start + zr[nz - 1].len == v->va[i] && v->keep[i - 1]) {
            zr[nz - 1].len += PG;
        } else {
            zr[nz].start = v->va[i];
            zr[nz].len = PG;
            first[nz] = i;
            nz++;
        }
    }
    for (size_t k = 0; k < nz; k++) {
        own[k].start = zr[k].start;
        own[k].end = zr[k].start + zr[k].len;
    }
    t->ownzap = own;
    t->n_ownzap = nz;
    int zrc = nz ? dp_inject_zap(&t->in, zr, nz, err) : 0;
    t->ownzap = NULL;
    t->n_ownzap = 0;
    if (zrc < 0 || !t->alive)
        return -1;
    int count = 0;
    uint64_t now = dp_now_ns();
    for (size_t k = 0; k < nz; k++) {
        for (size_t j = 0; j < zr[k].len / PG; j++) {
            size_t i = first[k] + j;
            if (!zr[k].done) {
                dp_evict_cancel(&d->ev.pol, t->id, v->va[i]);
                d->ev.cancels++;
                continue;
            }
            uint8_t *pg = dp_lazymap_page(&t->map, v->va[i], NULL);
            if (pg && dp_pg_state(*pg) == DP_PG_RESIDENT)
                dp_lazymap_set(&t->map, pg, DP_PG_REMOTE, 0); /* its REMOVE was not seen */
            dp_evict_done(&d->ev.pol, t->id, v->va[i], now);
            dp_vbuf_put(&d->ev.vb, t->id, v->va[i], v->buf + i * PG);
            count++;
        }
    }
    return count;
}

/* One stop of task t over its pages at run-time addresses addr[0..n)
 * (n <= EV_MAX_BATCH, sorted): stop and drain (ev_stop), keep, read and
 * hash what may go (ev_select), write back the modified ones (ev_write_back),
 * then for eviction zap them (ev_zap); for sync only the new hashes are
 * recorded. All inside one stop, so no write can fall between the read and
 * the zap. Returns the pages evicted/synced, -1 when the process is gone or
 * had to be killed (or, for sync, is still traced by criu). *nwb: pages
 * written back. */
static int ev_batch(struct dp_lazyd *d, struct lz_task *t, const uint64_t *addr, size_t n, int sync, size_t *nwb)
{
    static uint8_t buf[EV_MAX_BATCH * PG] __attribute__((aligned(PG)));
    struct ev_victims v;
    struct dp_err err = {{0}};
    uint64_t t0 = 0;
    int count = 0;
    *nwb = 0;
    v.buf = buf;
    int rc = ev_stop(d, t, addr, n, sync, &t0, &err);
    if (rc == 0 || rc == -2)
        return rc ? -1 : 0; /* not stopped; a sync fails */
    if (rc < 0)
        goto fatal;
    ev_select(d, t, addr, n, sync, &v);
    if (ev_write_back(d, t, &v, sync, nwb) < 0)
        goto fatal;
    if (sync) {
        for (size_t i = 0; i < v.m; i++)
            count += v.keep[i];
    } else {
        count = ev_zap(d, t, &v, &err);
        if (count < 0)
            goto fatal;
        d->ev.evictions += (uint64_t)count;
        t->evictions += (uint64_t)count;
    }
    if (dp_inject_resume(&t->in, 1, &err) < 0)
        goto fatal;
    uint64_t held = dp_now_ns() - t0;
    dp_hist_add(&d->ev.stop, held);
    d->ev.batches++;
    d->ev.busy = 0;
    if (t->eh_state == 2) { /* this stop installed the helper */
        dp_hist_add(&d->ev.install_stop, held);
        ev_helper_confirm(d, t);
    }
    return count;

fatal:
    if (t->alive && !dp_proc_exited(t->host_pid, t->host_start)) {
        dp_error("process %d (task %d): eviction failed (%s); its threads are in an unknown ptrace state, so "
                 "it is killed rather than left corrupt", (int)t->host_pid, t->id,
                 err.msg[0] ? err.msg : "process changed");
        kill(t->host_pid, SIGKILL);
    }
    dp_inject_close(&t->in); /* collects the exit of threads that died seized */
    if (t->alive && dp_proc_exited(t->host_pid, t->host_start))
        ev_lost(d, t);
    t->inj_open = 0;
    t->ownzap = NULL;
    t->n_ownzap = 0;
    d->ev.busy = 0;
    return -1;
}

/* ==== when to evict ==== */

/* Victims sorted by task, then address: one stop per task, runs adjacent. */
static int cmp_key(const void *a, const void *b)
{
    const struct dp_evict_key *x = a, *y = b;
    if (x->owner != y->owner)
        return x->owner < y->owner ? -1 : 1;
    return x->addr < y->addr ? -1 : x->addr > y->addr;
}

/* Why victims of a task reach the stop path (stats: budget.no_stop.
 * stop_path_pages): no helper, untracked (not write-protected: its range
 * refused WP), written beyond ready_cap, or other (refused by MOVE, rseq of
 * a thread not known yet, unreadable). */
static void ev_why_stop(struct dp_lazyd *d, struct lz_task *t, const uint64_t *addr, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        struct dp_lazy_region *reg;
        const struct dp_pmap_entry *e = NULL;
        if (dp_lazymap_page(&t->map, addr[i], &reg))
            e = dp_pmap_find(&t->hash, 0, reg->img + (addr[i] - reg->start));
        int k = t->eh_state != 1 ? 0 : !e || !(e->aux & DP_HASH_WP) ? 1 : (e->aux & DP_HASH_WRITTEN) ? 2 : 3;
        d->ev.stop_why[k]++;
    }
}

/* Written victims cleaned without a stop and acknowledged since the last
 * turn (ev_clean_cb): moved by their task's helper now, unless written
 * again meanwhile or no longer movable (then their pick is cancelled). */
static void ev_ready_move(struct dp_lazyd *d)
{
    uint32_t nr = d->ev.nready;
    if (!nr)
        return;
    d->ev.nready = 0; /* ev_helper does not pump: no ack lands meanwhile */
    qsort(d->ev.ready, nr, sizeof(d->ev.ready[0]), cmp_key);
    for (uint32_t i = 0; i < nr;) {
        uint32_t j = i;
        uint64_t addr[EV_MAX_BATCH];
        while (j < nr && d->ev.ready[j].owner == d->ev.ready[i].owner && j - i < EV_MAX_BATCH) {
            addr[j - i] = d->ev.ready[j].addr;
            j++;
        }
        size_t n = j - i;
        struct lz_task *t = lz_task_by_id(d, d->ev.ready[i].owner);
        if (t) {
            ev_helper(d, t, addr, &n);
            for (size_t k = 0; k < n; k++) {
                dp_evict_cancel(&d->ev.pol, t->id, addr[k]);
                d->ev.cancels++;
                d->ev.nostop_abandoned++;
            }
        }
        i = j;
    }
}

/* Once the restore finished, each task placed on its process gets its
 * helper in a stop of its own (nothing else done in it: the shortest stop),
 * before any eviction needs it, rather than inside the first batch under
 * pressure. Only once the task faulted (it runs its own code: criu, which
 * says "restore finished" before it lets go of the tasks, is done with
 * them), and at most one try per 10 ms. */
static void ev_install_eager(struct dp_lazyd *d, uint64_t now)
{
    if (!d->ev.helper_on || now < d->ev.install_next)
        return;
    d->ev.install_next = now + 10 * 1000000ull;
    for (struct lz_task *t = d->tasks; t; t = t->next) {
        if (t->alive && t->eh_state == 2 && dp_ehelper_runnable(&t->eh)) {
            ev_helper_confirm(d, t); /* installed, stopped before it answered */
            return;
        }
        if (!t->alive || !t->host_pid || t->eh_state != 0 || !t->c.faults)
            continue;
        size_t nwb;
        ev_batch(d, t, NULL, 0, 0, &nwb);
        return; /* one stop per turn: faults are served between them */
    }
}

/* Called after every loop turn: one batch when above the high watermark
 * (and until the low one is reached), so faults are served between batches. */
void lz_ev_maybe(struct dp_lazyd *d)
{
    if (!d->ev.on || d->ev.busy || !d->finished)
        return;
    ev_ready_move(d);
    if (d->ev.put_wait > 0) /* no stop while acks are owed */
        return;
    uint64_t res = lz_ev_resident(d);
    if (res > d->ev.max_resident)
        d->ev.max_resident = res;
    uint64_t now = dp_now_ns();
    ev_install_eager(d, now);
    if (now < d->ev.backoff_until)
        return;
    uint64_t high = lz_ev_high(d), low = lz_ev_low(d);
    if (res > high)
        d->ev.active = 1;
    if (!d->ev.active)
        return;
    if (res <= low) {
        d->ev.active = 0;
        return;
    }
    for (struct lz_task *t = d->tasks; t; t = t->next)
        if (t->alive && t->shown_pid > 0 && !t->host_pid) {
            lz_find_host_pids(d);
            break;
        }
    lz_identify_children(d); /* forked children without a process yet (rate-limited) */
    /* --evict-batch pages per stop; when faults outrun that (well above the
     * budget), full batches, so the overshoot stays bounded */
    uint64_t want = res - low;
    size_t cap = res > high + d->ev.batch ? EV_MAX_BATCH : d->ev.batch;
    size_t n = want < cap ? (size_t)want : cap;
    struct dp_evict_key keys[EV_MAX_BATCH];
    n = dp_evict_pick(&d->ev.pol, keys, n);
    qsort(keys, n, sizeof(keys[0]), cmp_key);
    int done = 0;
    for (size_t i = 0; i < n;) {
        size_t j = i;
        uint64_t addr[EV_MAX_BATCH];
        while (j < n && keys[j].owner == keys[i].owner) {
            addr[j - i] = keys[j].addr;
            j++;
        }
        struct lz_task *t = lz_task_by_id(d, keys[i].owner);
        if (!t || !t->host_pid) {
            for (size_t k = i; k < j; k++)
                dp_evict_cancel(&d->ev.pol, keys[k].owner, keys[k].addr);
        } else {
            size_t nwb, left = j - i;
            /* clean victims leave now; written ones are written back
             * without a stop and leave once acknowledged (ev_ready_move) */
            ev_track_nostop(d, t, addr, left);
            done += (int)ev_helper(d, t, addr, &left);
            done += (int)ev_clean_nostop(d, t, addr, &left);
            ev_prune(d, t, addr, &left);
            ev_why_stop(d, t, addr, left);
            int c = left ? ev_batch(d, t, addr, left, 0, &nwb) : 0;
            done += c > 0 ? c : 0;
        }
        i = j;
    }
    if (!done)
        d->ev.backoff_until = dp_now_ns() + 10 * 1000000ull; /* nothing evictable now */
}

/* ==== sync ==== */

/* `sync`: writes back every modified resident page without evicting, so
 * the page server holds the whole current state (docs/budget.md). */
void dp_lazyd_sync(struct dp_lazyd *d, struct dp_sbuf *b)
{
    uint64_t t0 = dp_now_ns(), pages = 0, written = 0;
    int tasks = 0, skipped = 0, failed = 0;
    if (!d->ev.on) {
        dp_sbuf_printf(b, "{\"error\": \"this restore has no --budget: nothing is tracked for write-back\"}\n");
        return;
    }
    lz_find_host_pids(d);
    while (d->ev.clean_inflight > 0) /* their pages are skipped while in flight */
        lz_pump(d);
    for (struct lz_task *t = d->tasks; t; t = t->next) {
        if (!t->alive || !ev_managed(d, t))
            continue;
        if (!t->host_pid || ev_shared(d, t)) {
            skipped++;
            continue;
        }
        uint64_t total = dp_lazymap_pages(&t->map, DP_PG_RESIDENT), k = 0;
        uint64_t *list = malloc((total ? total : 1) * sizeof(*list));
        if (!list) {
            failed++;
            continue;
        }
        for (size_t r = 0; r < t->map.n && k < total; r++) {
            struct dp_lazy_region *reg = &t->map.r[r];
            for (uint64_t a = reg->start; a < reg->end && k < total; a += PG)
                if (dp_pg_state(reg->pg[(a - reg->start) / PG]) == DP_PG_RESIDENT)
                    list[k++] = a;
        }
        tasks++;
        for (uint64_t i = 0; i < k && t->alive; i += d->ev.batch) {
            size_t n = k - i < d->ev.batch ? (size_t)(k - i) : d->ev.batch, nwb = 0;
            uint64_t errs = d->ev.wb_incomplete;
            int c = ev_batch(d, t, list + i, n, 1, &nwb);
            if (c < 0 || d->ev.wb_incomplete != errs) { /* a write-back failed or was abandoned */
                failed++;
                break;
            }
            pages += (uint64_t)c;
            written += nwb;
        }
        free(list);
    }
    d->ev.syncs++;
    d->ev.sync_pages += written;
    json_t *o = json_pack("{s:i, s:I, s:I, s:i, s:i, s:o}", "tasks", tasks, "pages_checked", (json_int_t)pages,
                          "pages_written_back", (json_int_t)written, "tasks_skipped", skipped, "tasks_failed",
                          failed, "seconds", dp_json_fixed((double)(dp_now_ns() - t0) / 1e9, 3));
    if (o && skipped &&
        json_object_set_new(o, "note", json_string("skipped: forked address spaces sharing a checkpoint pid, or a "
                                                   "task whose process was not found; see docs/budget.md")) < 0) {
        json_decref(o);
        o = NULL;
    }
    dp_sbuf_put_json(b, o);
    dp_sbuf_printf(b, "\n");
}

/* ==== the helpers on request ==== */

/* `distriproc stats --evict-helpers off|on` (control command "evict-helpers
 * off|on"). off: every task's helper is torn down (channel closed, thread
 * gone, one short stop to unmap its memory and close its two descriptors),
 * so a later checkpoint of the still-running tree dumps none of it; its
 * evictions take the stop path from then on. Nothing is lost: the helper
 * holds no page between two calls (scratch is dropped after each move),
 * and victims waiting for it are cancelled (they stay resident). on: tasks
 * whose helper was removed so get one again (eagerly, as after a restore).
 * Fills a JSON reply into b. */
void dp_lazyd_evict_helpers(struct dp_lazyd *d, int on, struct dp_sbuf *b)
{
    if (!d->ev.on) {
        dp_sbuf_printf(b, "{\"error\": \"this restore has no --budget: there are no eviction helpers\"}\n");
        return;
    }
    int removed = 0, failed = 0, left = 0;
    d->ev.helper_on = on;
    if (!on)
        ev_ready_move(d); /* those acknowledged so far leave first; later acks find no helper */
    for (struct lz_task *t = d->tasks; t; t = t->next) {
        if (on) {
            if (t->eh_state == EV_EH_REMOVED)
                t->eh_state = 0;
            continue;
        }
        if (t->eh_state <= 0)
            continue;
        struct dp_err err = {{0}};
        d->ev.busy = 1;
        d->ev.cur = t;
        int rc = dp_ehelper_teardown(&t->eh, t->alive && t->inj_open ? &t->in : NULL, &err);
        d->ev.busy = 0;
        if (rc < 0) {
            dp_warn("pid %d: removing the eviction helper: %s", t->shown_pid, err.msg);
            failed++;
            t->eh_state = -1;
        } else {
            removed++;
            t->eh_state = EV_EH_REMOVED;
        }
    }
    for (struct lz_task *t = d->tasks; t; t = t->next)
        left += t->alive && t->eh_state > 0;
    json_t *o = json_pack("{s:s, s:i, s:i, s:i}", "evict_helpers", on ? "on" : "off", "removed", removed,
                          "failed", failed, "running", left);
    dp_sbuf_put_json(b, o);
    dp_sbuf_printf(b, "\n");
}

/* ==== setup ==== */

/* --budget needs a source that takes writes; the hash seed is random so
 * no page content can be crafted to look clean. */
int lz_ev_init(struct dp_lazyd *d)
{
    const struct dp_lazyd_opts *o = d->o;
    if (!o->budget_pages && o->budget_frac <= 0)
        return 0;
    if (!dp_pagesrc_can_put(o->src)) {
        dp_error("--budget needs a page server that takes write-backs (--source); %s cannot hold "
                 "modified pages", o->src->desc);
        return -1;
    }
    d->ev.on = 1;
    /* DISTRIPROC_EVICT_HELPER=off keeps every eviction on the stop path (to
     * compare both in one bench, or if a workload misbehaves with a helper
     * thread); write-protect tracking stays on */
    const char *eh = getenv("DISTRIPROC_EVICT_HELPER");
    d->ev.helper_on = !(eh && !strcmp(eh, "off"));
    d->ev.batch = o->evict_batch ? o->evict_batch : EV_MAX_BATCH;
    if (d->ev.batch > EV_MAX_BATCH)
        d->ev.batch = EV_MAX_BATCH;
    uint64_t seed = 0;
    if (getrandom(&seed, sizeof(seed), 0) != (ssize_t)sizeof(seed))
        seed = dp_now_ns() * 0x9E3779B97F4A7C15ull ^ (uint64_t)getpid();
    d->ev.seed = seed;
    static const uint8_t zero[PG];
    d->ev.zero_hash = dp_page_hash(seed, zero);
    struct dp_evict_cfg cfg = {.protected_frac = 0.5, .ghost_max = 1u << 20, .hot_hint = 0};
    if (dp_evict_init(&d->ev.pol, &cfg) < 0) {
        dp_error("out of memory for the eviction policy");
        return -1;
    }
    dp_vbuf_init(&d->ev.vb, o->vbuf_bytes == DP_VBUF_OFF ? 0 : o->vbuf_bytes ? o->vbuf_bytes : 8ull << 20);
    /* written victims cleaned without a stop: at most 4 batches (and at
     * least 256 pages, 1 MiB) in flight or waiting for the helper: the
     * budget's overshoot bound for them (docs/eviction.md) */
    d->ev.ready_cap = 4 * d->ev.batch < EV_NOSTOP_MIN ? EV_NOSTOP_MIN : 4 * d->ev.batch;
    d->ev.ready = calloc(d->ev.ready_cap, sizeof(*d->ev.ready));
    if (!d->ev.ready) {
        dp_error("out of memory for the eviction queue");
        return -1;
    }
    return 0;
}

/* The policy and the victim buffer, once no write-back callback is owed. */
void lz_ev_free(struct dp_lazyd *d)
{
    if (!d->ev.on)
        return;
    for (struct lz_task *t = d->tasks; t; t = t->next) {
        if (t->eh_state <= 0)
            continue;
        /* no helper thread, scratch or descriptor stays in a process the
         * daemon leaves (a later checkpoint would dump them) */
        struct dp_err err = {{0}};
        if (dp_ehelper_teardown(&t->eh, t->alive && t->inj_open ? &t->in : NULL, &err) < 0)
            dp_warn("pid %d: removing the eviction helper: %s", t->shown_pid, err.msg);
        t->eh_state = -1;
    }
    dp_evict_free(&d->ev.pol);
    dp_vbuf_free(&d->ev.vb);
    free(d->ev.ready);
    d->ev.ready = NULL;
    d->ev.on = 0;
}
