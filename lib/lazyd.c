/* lazyd: the lazy-pages daemon (see lazyd.h).
 *
 * One thread, one epoll loop. Sources of events: the lazy-pages socket (new
 * tasks from CRIU), every task's userfaultfd (faults and FORK/REMAP/REMOVE/
 * UNMAP), the page source's completion fd, the control socket, and a timer
 * (exit detection, fault timeouts, retries, background copy).
 *
 * A fault on a remote page submits a fetch and returns to the loop at once,
 * so any number of fetches are in flight; a fault on a page already in flight
 * attaches itself as a waiter of that fetch. Installation re-checks each
 * page's state, because the application may have removed, unmapped or moved
 * it while the data travelled: a page that is no longer "in flight" is never
 * written. UFFDIO_COPY returns EAGAIN while the kernel has a non-cooperative
 * event (fork, mremap, madvise, munmap) queued for us: the install waits on a
 * retry list until the task's events have been read, then re-checks. */
#include <errno.h>
#include <fcntl.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/random.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/timerfd.h>
#include <sys/un.h>

#include <jansson.h>

#include "client.h"
#include "dirty.h"
#include "evict_policy.h"
#include "fence.h"
#include "wbwait.h"
#include "guard.h"
#include "inject.h"
#include "lazy_tasks.h"
#include "lazyd.h"
#include "lazymap.h"
#include "pmap.h"
#include "lazystats.h"
#include "metrics.h"
#include "metrics_http.h"
#include "perm.h"
#include "replay.h"
#include "trace.h"
#include "uffd.h"
#include "util.h"

#define PG DP_PAGE_SIZE
#define MAX_REQ_PAGES 64           /* one prefetch request: 256 KiB, so a fault
                                      * inside a window waits for its chunk only */
#define FAULT_SPIN_NS (60 * 1000ull) /* poll this long for a fault's reply when
                                      * faults are served faster than that */
#define FAULT_REQ_PAGES 16         /* the faulted page travels with at most this
                                      * many pages: its thread waits for them all */
#define TICK_NS (10 * 1000000ull)  /* timer period */
#define PROBE_NS (200 * 1000000ull)
#define BG_CHUNK_PAGES 16
#define BG_MAX_INFLIGHT 8

enum { H_LISTEN, H_CRIU, H_UFFD, H_SRC, H_CTL_LISTEN, H_CTL_CLIENT, H_TIMER, H_SIGNAL, H_GUARD, H_METRICS };
enum { K_FAULT, K_PREFETCH, K_BACKGROUND, K_REPLAY, K_PIN };
enum { R_AT_SOURCE, R_INSTALL_RETRY, R_FETCH_RETRY };

struct handler {
    int type;
    int fd;
    void *ptr;
};

struct lz_task;

struct lz_waiter {
    uint64_t addr;   /* run-time address that faulted */
    uint64_t t0;
};

struct lz_req {
    struct dp_fetch f;
    struct lz_task *t;
    struct lz_req *prev, *next;   /* task's request list */
    struct lz_req *rnext;         /* retry list */
    int kind, state;
    uint64_t t_submit, retry_at, backoff_ns;
    uint32_t done_pages;          /* install progress */
    struct lz_waiter *w;
    uint32_t nw, capw;
    int warned;
    int retries;
};

struct dp_lazyd;

struct lz_task {
    struct lz_task *next;
    struct dp_lazyd *d;
    int id, parent_id;
    int32_t pid;          /* checkpoint pid: what the source knows */
    int32_t shown_pid;    /* pid CRIU sent (0 for a forked child: unknown) */
    int uffd;
    int alive;
    int broken;           /* cannot be served: uffd kept open, never read */
    struct dp_lazy_range *ownzap; /* ranges the daemon is zapping itself (eviction) */
    size_t n_ownzap;
    struct handler h;
    struct dp_lazymap map;
    struct dp_prefetch_state pf;
    struct dp_lazy_counters c;
    struct dp_hist lat;
    struct lz_req *reqs;
    struct lz_req *retry;
    int refs;             /* requests still owned by the source */
    uint64_t started_ns, ended_ns;
    uint64_t final_remote, final_resident; /* page counts when it exited */
    uint64_t bg_cursor;
    /* eviction (budget) */
    pid_t host_pid;       /* in the daemon's pid namespace; 0 = not known yet */
    uint64_t host_start;  /* its start time: a recycled pid is not this task */
    uint64_t pin_lo, pin_hi; /* run-time [lo, hi): argv and environ, never evicted */
    int pinned;
    int inj_open;
    struct dp_inject in;
    uint64_t evictions, writebacks;
    struct dp_pmap hash;  /* image page -> hash of the server's copy; aux: EV_ALWAYS_DIRTY, EV_PUT_INFLIGHT */
};

/* Eviction state of the daemon (docs/budget.md). */
struct lz_evict {
    int on;
    uint64_t seed;
    struct dp_page_hash zero_hash;
    struct dp_evict pol;
    struct dp_vbuf vb;
    uint32_t batch;
    int active;                /* above the high watermark: evict down to the low one */
    int busy;                  /* inside a batch (the pump must not start another) */
    struct lz_task *cur;       /* the task of that batch */
    uint64_t lazy_pages;       /* lazy pages of the tasks received (for a fractional budget) */
    uint64_t backoff_until;
    uint64_t batches, evictions, writebacks, wb_requests, wb_errors, cancels, refaults, vb_hits;
    uint64_t shared_skips, max_resident, syncs, sync_pages;
    struct dp_hist stop;       /* whole stop per batch: stop, drain, read, write back, zap, resume */
    struct dp_hist wb_lat;     /* a batch's write-backs (in a stop, or background): sent -> all acknowledged */
    int put_wait, put_status;
    uint64_t wb_aborts;        /* batches abandoned at --writeback-timeout */
    uint64_t wb_incomplete;    /* batches whose write-back did not complete (refused, abandoned, deferred) */
    int clean_inflight;
    uint64_t cleaned, clean_requests;
    /* placing forked children (lib/lazy_tasks.h): which process owns which uffd */
    struct {
        int armed, hits, task;
        uint64_t addr;
    } probe;
    uint64_t ident_next_ns, ident_backoff_ns;
    uint64_t children_placed, probes;
};

struct dp_lazyd {
    const struct dp_lazyd_opts *o;
    int ep;
    struct handler listen_h, src_h, ctl_h, timer_h, sig_h;
    struct lz_task *tasks;
    int next_id;
    int conns;             /* open lazy-pages connections */
    int finished;          /* "restore finished" received */
    int failed;
    int killed;
    int stop;
    uint64_t start_ns, last_probe_ns, last_bg_ns;
    double bg_tokens;
    int bg_inflight;
    int all_resident_said;     /* o->all_resident called */
    struct lz_task *bg_next;
    uint32_t src_ev;
    char sock_path[4200], ctl_path[4200];
    struct lz_evict ev;
    uint64_t spin_until_ns;    /* poll without sleeping until then: a fault's reply is due */
    uint64_t fault_rtt_ns;     /* moving average of a fault's fetch; no spinning when slower */
    struct dp_replay replay;   /* o->replay in bulk (issue 7) */
    int replaying;
    int staging;               /* stage mode: replayed pages wait in stage until a fault */
    struct dp_vbuf stage;      /* (task id, image address) -> the page as the replay fetched it */
    struct dp_trace trace;     /* first touches, for the next restore */
    int tracing, trace_sent;
    uint64_t trace_pages;
    struct dp_guard guard;     /* holds every uffd too: our death is not the tree's zeros */
    struct handler guard_h;
    unsigned guard_gen;
    int place_tries;           /* looking up the tasks' processes after the restore (argv pins) */
    struct dp_metrics_http *metrics; /* --metrics endpoint, or NULL */
    struct handler metrics_h;
};

static void install(struct dp_lazyd *d, struct lz_req *r);
static void kill_restored(struct dp_lazyd *d);
static void guard_sync(struct dp_lazyd *d);
static void req_finish(struct dp_lazyd *d, struct lz_req *r);
static struct lz_task *task_by_id(struct dp_lazyd *d, int id);
static json_t *ev_json(struct dp_lazyd *d);
static void stage_drop(struct dp_lazyd *d, struct lz_task *t, uint64_t start, uint64_t end, int expired);
static uint64_t ev_resident(const struct dp_lazyd *d);
static uint64_t ev_high(const struct dp_lazyd *d);
static void ev_fork_inherit(struct dp_lazyd *d, struct lz_task *parent, struct lz_task *c);
static void ev_find_host_pids(struct dp_lazyd *d);
static void ev_pin_fetch(struct dp_lazyd *d, struct lz_task *t);
static void ev_pump_d(struct dp_lazyd *d);

static int ep_add(struct dp_lazyd *d, struct handler *h, int fd, int type, void *ptr)
{
    h->type = type;
    h->fd = fd;
    h->ptr = ptr;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = h};
    return epoll_ctl(d->ep, EPOLL_CTL_ADD, fd, &ev);
}

/* ---- tasks ---- */

static struct lz_task *task_new(struct dp_lazyd *d, int32_t pid, int uffd)
{
    struct lz_task *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->id = ++d->next_id;
    t->d = d;
    t->pid = pid;
    t->shown_pid = pid;
    t->uffd = uffd;
    t->alive = 1;
    t->started_ns = dp_now_ns();
    dp_lazymap_init(&t->map);
    dp_prefetch_state_init(&t->pf);
    t->next = d->tasks;
    d->tasks = t;
    return t;
}

static void req_free(struct lz_req *r)
{
    if (r->kind == K_REPLAY) /* installed, dropped or abandoned: no longer in flight */
        dp_replay_completed(&((struct dp_lazyd *)r->f.opaque)->replay, r->f.npages, dp_now_ns());
    free(r->f.buf);
    free(r->w);
    free(r);
}

static void req_unlink(struct lz_req *r)
{
    struct lz_task *t = r->t;
    if (r->prev)
        r->prev->next = r->next;
    else
        t->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

static void task_gone(struct dp_lazyd *d, struct lz_task *t, const char *why)
{
    if (!t->alive)
        return;
    t->alive = 0;
    t->ended_ns = dp_now_ns();
    t->final_remote = dp_lazymap_pages(&t->map, DP_PG_REMOTE) + dp_lazymap_pages(&t->map, DP_PG_INFLIGHT);
    t->final_resident = dp_lazymap_pages(&t->map, DP_PG_RESIDENT);
    epoll_ctl(d->ep, EPOLL_CTL_DEL, t->uffd, NULL);
    dp_guard_drop(&d->guard, t->uffd);
    close(t->uffd);
    t->uffd = -1;
    /* Requests the source still owns are freed when they complete; the
     * others go now. */
    struct lz_req *r = t->reqs;
    while (r) {
        struct lz_req *next = r->next;
        if (r->state != R_AT_SOURCE) {
            req_unlink(r);
            req_free(r);
        }
        r = next;
    }
    t->retry = NULL;
    stage_drop(d, t, 0, UINT64_MAX, 1);
    dp_lazymap_free(&t->map);
    if (t->inj_open && !(d->ev.busy && d->ev.cur == t)) { /* else the batch closes it */
        dp_inject_close(&t->in);
        t->inj_open = 0;
    }
    if (d->ev.on) {
        dp_evict_forget_owner(&d->ev.pol, t->id);
        dp_vbuf_drop_range(&d->ev.vb, t->id, 0, UINT64_MAX);
    }
    dp_pmap_free(&t->hash); /* per task: a tree forking for every connection does not pile them up */
    dp_debug("task %d (pid %d) gone: %s", t->id, t->shown_pid, why);
}

static int tasks_alive(const struct dp_lazyd *d)
{
    int n = 0;
    for (const struct lz_task *t = d->tasks; t; t = t->next)
        n += t->alive;
    return n;
}

/* ---- latency and counters ---- */

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

/* ---- fetching ---- */

static void on_fetch_done(struct dp_fetch *f);

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
    r->backoff_ns = 50 * 1000000ull;
    r->next = t->reqs;
    if (t->reqs)
        t->reqs->prev = r;
    t->reqs = r;
    return r;
}

static void req_submit(struct dp_lazyd *d, struct lz_req *r)
{
    r->state = R_AT_SOURCE;
    r->t_submit = dp_now_ns();
    r->f.status = 0;
    r->f.wire_bytes = 0;
    r->t->refs++;
    r->t->c.fetch_requests++;
    if (r->kind == K_BACKGROUND)
        d->bg_inflight++;
    if (d->o->src->ops->submit(d->o->src, &r->f) < 0) {
        r->f.status = -EIO;
        r->t->refs--;
        if (r->kind == K_BACKGROUND)
            d->bg_inflight--;
        r->state = R_FETCH_RETRY;
        r->retry_at = dp_now_ns() + r->backoff_ns;
        r->rnext = r->t->retry;
        r->t->retry = r;
    }
}

/* A page a fetch may be submitted for: remote, and not staged (the daemon
 * holds it already; a fault installs that copy). */
static int fetchable(uint8_t pg)
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
static uint32_t submit_remote_runs(struct dp_lazyd *d, struct lz_task *t, struct dp_lazy_region *reg,
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
        if (!fetchable(reg->pg[base + i])) {
            i++;
            continue;
        }
        uint32_t run = 1;
        while (i + run < n && base + i + run < total && run < MAX_REQ_PAGES &&
               fetchable(reg->pg[base + i + run]))
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

/* ---- working set: replay and trace (issue 7) ---- */

/* dp_replay_fetch_fn: the REMOTE pages of checkpoint range [img, +n) of the
 * original task pid (not a forked child) become in flight. */
static int64_t replay_fetch(void *ctx, int32_t pid, uint64_t img, uint32_t n)
{
    struct dp_lazyd *d = ctx;
    struct lz_task *t = d->tasks;
    while (t && !(t->alive && t->pid == pid && t->shown_pid > 0))
        t = t->next;
    if (!t)
        return -1;
    uint64_t sent = 0;
    for (uint32_t i = 0; i < n;) {
        struct dp_lazy_region *reg;
        uint64_t a = img + (uint64_t)i * PG;
        if (!dp_lazymap_img_to_addr(&t->map, a, &reg)) {
            i++; /* unmapped since: nothing to fetch */
            continue;
        }
        uint64_t left_in_reg = (reg->img + (reg->end - reg->start) - a) / PG;
        uint32_t cnt = n - i < left_in_reg ? n - i : (uint32_t)left_in_reg;
        sent += submit_remote_runs(d, t, reg, a, cnt, K_REPLAY);
        i += cnt;
    }
    return (int64_t)sent;
}

static void replay_pump(struct dp_lazyd *d)
{
    if (!d->replaying || !d->finished)
        return;
    dp_replay_pump(&d->replay, replay_fetch, d, dp_now_ns());
    if (dp_replay_finished(&d->replay)) {
        d->replaying = 0;
        char b[32];
        dp_format_bytes(d->replay.submitted_pages * PG, b, sizeof(b));
        dp_info("hot set replayed in %.3f s: %s fetched in %llu batches, %llu pages already there or gone",
                (double)(d->replay.done_ns - d->replay.start_ns) / 1e9, b,
                (unsigned long long)d->replay.batches, (unsigned long long)d->replay.skipped_pages);
    }
}

/* Stage mode (docs/hotset.md, "Measuring the replay"): a completed replay
 * fetch leaves its pages in d->stage, REMOTE with DP_PGF_STAGED, instead of
 * installing them; a fault on such a page installs the copy (a hit, no
 * network), so every use of a replayed page is seen. Pages a fault already
 * waits for are installed as usual (hits in flight). Keyed by image address,
 * so the copy follows mremap like the page's state byte; the flag is the
 * authority (every state change clears it), the copies of removed or
 * unmapped pages are dropped. The copy is what the page server held at the
 * fetch: with no --budget nothing writes back, so it stays the page's data
 * for as long as the page stays REMOTE. */
static void stage_pages(struct dp_lazyd *d, struct lz_req *r)
{
    struct lz_task *t = r->t;
    for (uint32_t i = 0; i < r->f.npages; i++) {
        uint64_t img = r->f.img + (uint64_t)i * PG;
        struct dp_lazy_region *reg;
        uint64_t cur = dp_lazymap_img_to_addr(&t->map, img, &reg);
        uint8_t *pg = cur ? &reg->pg[(cur - reg->start) / PG] : NULL;
        if (!pg || dp_pg_state(*pg) != DP_PG_INFLIGHT || (*pg & DP_PGF_WAITED))
            continue; /* gone, removed, or a fault waits for it: install() handles it */
        if (dp_vbuf_put(&d->stage, t->id, img, r->f.buf + (size_t)i * PG) < 0) {
            d->replay.st.unstaged++; /* out of memory: installed as in install mode */
            continue;
        }
        dp_lazymap_set(&t->map, pg, DP_PG_REMOTE, DP_PGF_STAGED);
        d->replay.st.staged++;
    }
}

/* The application removed or unmapped run-time [start, end) (or the task is
 * gone: expired): drop the staged copies there, exactly like the victim
 * buffer's. Before the map changes: it translates to image addresses. */
static void stage_drop(struct dp_lazyd *d, struct lz_task *t, uint64_t start, uint64_t end, int expired)
{
    if (!d->staging || !d->stage.bytes)
        return;
    uint64_t before = d->stage.bytes;
    if (expired) {
        dp_vbuf_drop_range(&d->stage, t->id, 0, UINT64_MAX);
    } else {
        for (size_t i = 0; i < t->map.n; i++) {
            struct dp_lazy_region *reg = &t->map.r[i];
            uint64_t a = start > reg->start ? start : reg->start, b = end < reg->end ? end : reg->end;
            if (a < b)
                dp_vbuf_drop_range(&d->stage, t->id, reg->img + (a - reg->start), reg->img + (b - reg->start));
        }
    }
    uint64_t n = (before - d->stage.bytes) / PG;
    if (expired)
        d->replay.st.expired += n;
    else
        d->replay.st.dropped += n;
}

/* A first touch of a page with data: part of the working set. */
static void trace_touch(struct dp_lazyd *d, struct lz_task *t, uint64_t img, uint64_t now)
{
    if (!d->tracing)
        return;
    if (d->trace.start_ns == 0)
        d->trace.start_ns = now;
    if (dp_trace_note(&d->trace, t->pid, img, now) > 0)
        d->trace_pages++;
}

/* Hands the trace to the sink once: at the end of its window, or at exit. */
static void trace_flush(struct dp_lazyd *d, uint64_t now, int at_exit)
{
    if (!d->tracing || d->trace_sent || !d->trace.start_ns)
        return;
    if (!at_exit && dp_trace_open(&d->trace, now))
        return;
    d->trace_sent = 1;
    struct dp_hotset hs = {0};
    struct dp_err err = {{0}};
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    uint64_t us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
    uint8_t *buf = NULL;
    size_t len = 0;
    if (dp_trace_build(&d->trace, d->o->cp_id, us, &hs, &err) < 0 ||
        dp_hotset_encode(&hs, &buf, &len, &err) < 0) {
        dp_warn("no fault trace to keep: %s", err.msg);
        dp_hotset_free(&hs);
        return;
    }
    dp_info("fault trace of the first %.1f s: %llu pages in %u runs", (double)d->trace.window_ns / 1e9,
            (unsigned long long)hs.total_pages, hs.nr_runs);
    dp_hotset_free(&hs);
    if (d->o->trace_sink)
        d->o->trace_sink(d->o->trace_ctx, buf, len);
    free(buf);
}

static void fault_remote(struct dp_lazyd *d, struct lz_task *t, struct dp_lazy_region *reg, uint64_t page, uint64_t t0)
{
    uint64_t img = reg->img + (page - reg->start);
    uint64_t reg_hi = reg->img + (reg->end - reg->start);
    struct dp_pf_range pf[DP_PF_MAX_RANGES];
    int npf = dp_prefetch_plan(&d->o->prefetch, &t->pf, img, reg->img, reg_hi, pf, DP_PF_MAX_RANGES);

    /* The faulted page plus the remote pages right after it that the
     * policy asked for travel as one request. */
    uint32_t n = 1;
    uint64_t idx = (page - reg->start) / PG, total = (reg->end - reg->start) / PG;
    if (npf > 0 && pf[0].addr == img + PG) {
        while (n <= pf[0].npages && n < FAULT_REQ_PAGES && idx + n < total &&
               fetchable(reg->pg[idx + n]))
            n++;
    }
    struct lz_req *r = req_new(d, t, img, n, K_FAULT);
    if (!r || add_waiter(r, page, t0)) {
        dp_error("out of memory for a fetch of pid %d page 0x%llx; the thread stays blocked",
                 t->shown_pid, (unsigned long long)page);
        if (r) {
            req_unlink(r);
            req_free(r);
        }
        return;
    }
    dp_lazymap_set(&t->map, &reg->pg[idx], DP_PG_INFLIGHT, DP_PGF_WAITED);
    if (n > 1)
        mark_inflight(t, reg, img + PG, n - 1, DP_PGF_PREFETCH);
    t->c.faults_remote++;
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
        prefetched += submit_remote_runs(d, t, reg, a, cnt, K_PREFETCH);
        if (!t->alive)
            return; /* as above */
    }
    if (npf > 0)
        dp_prefetch_window_actual(&t->pf, reg->img, prefetched);
}

static struct lz_req *find_req(struct lz_task *t, uint64_t img)
{
    for (struct lz_req *r = t->reqs; r; r = r->next)
        if (img >= r->f.img && img < r->f.img + (uint64_t)r->f.npages * PG)
            return r;
    return NULL;
}

/* ---- eviction hooks on the fault path (docs/budget.md) ---- */

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
static void ev_installed(struct dp_lazyd *d, struct lz_task *t, uint64_t addr, uint64_t img, const uint8_t *page,
                         int always_dirty)
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
    e->aux = always_dirty ? 1 : 0;
    if (!ev_pinned(t, addr)) /* a page without a policy record is never picked */
        dp_evict_record_install(&d->ev.pol, t->id, addr, dp_now_ns());
}

static void fault_zero(struct dp_lazyd *d, struct lz_task *t, uint64_t page, uint8_t *pg, uint64_t t0)
{
    uint64_t done;
    int rc = dp_uffd_zero(t->uffd, page, PG, &done);
    if (rc == 0 || rc == -EEXIST) {
        if (rc == -EEXIST)
            dp_uffd_wake(t->uffd, page, PG);
        if (pg) {
            dp_lazymap_set(&t->map, pg, DP_PG_RESIDENT, 0);
            struct dp_lazy_region *reg;
            if (dp_lazymap_page(&t->map, page, &reg))
                ev_installed(d, t, page, reg->img + (page - reg->start), NULL, 1);
        }
        t->c.zero_pages += rc == 0;
        t->c.faults_zero++;
        dp_hist_add(&t->lat, dp_now_ns() - t0);
    } else if (rc == -EAGAIN) {
        /* An event is queued: let the thread retry the access; it faults
         * again and is answered once the event has been read. */
        t->c.eagain++;
        dp_uffd_wake(t->uffd, page, PG);
    } else if (rc == -ESRCH || rc == -ENOSPC) {
        task_gone(d, t, "zeropage: process gone");
    } else {
        dp_warn("pid %d: UFFDIO_ZEROPAGE at 0x%llx failed: %s", t->shown_pid,
                (unsigned long long)page, strerror(-rc));
        dp_uffd_wake(t->uffd, page, PG);
    }
}

/* Installs a faulted page from a copy the daemon holds (victim buffer,
 * staging buffer): 1 = installed, -1 = the process is gone, 0 = not
 * installed (EAGAIN and the like; the UFFDIO_COPY error in *rc). */
static int local_copy(struct dp_lazyd *d, struct lz_task *t, uint8_t *pg, uint64_t page, uint64_t img,
                      const uint8_t *data, uint64_t t0, int *rc)
{
    uint64_t done = 0;
    *rc = dp_uffd_copy(t->uffd, page, data, PG, &done);
    if (*rc == 0 || *rc == -EEXIST) {
        if (*rc == -EEXIST) {
            t->c.eexist++;
            dp_uffd_wake(t->uffd, page, PG);
        }
        dp_lazymap_set(&t->map, pg, DP_PG_RESIDENT, 0);
        ev_installed(d, t, page, img, data, *rc == -EEXIST);
        dp_hist_add(&t->lat, dp_now_ns() - t0);
        return 1;
    }
    if (*rc == -ESRCH || *rc == -ENOSPC) {
        task_gone(d, t, "copy: process gone");
        return -1;
    }
    return 0;
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
    if (find_req(t, img) || !dp_vbuf_get(&d->ev.vb, t->id, page, buf))
        return 0;
    int got = local_copy(d, t, pg, page, img, buf, t0, &rc);
    if (got > 0)
        d->ev.vb_hits++;
    return got != 0; /* 0: EAGAIN and the like: fetch it from the server instead */
}

/* A fault on a staged page: install the replay's copy (a replay hit). No
 * fetch can be outstanding for it: a staged page is never submitted, and
 * install() copies only pages in flight. 1 = served (or retried: on EAGAIN
 * the copy goes back and the thread faults again once the pending event has
 * been read), 0 = fetch it instead. */
static int stage_install(struct dp_lazyd *d, struct lz_task *t, struct dp_lazy_region *reg, uint8_t *pg,
                         uint64_t page, uint64_t t0)
{
    static uint8_t buf[PG] __attribute__((aligned(PG)));
    uint64_t img = reg->img + (page - reg->start);
    int rc;
    if (!dp_vbuf_get(&d->stage, t->id, img, buf)) {
        dp_warn("pid %d: staged page 0x%llx has no copy; fetching it", t->shown_pid, (unsigned long long)page);
        dp_lazymap_set(&t->map, pg, DP_PG_REMOTE, 0);
        return 0;
    }
    int got = local_copy(d, t, pg, page, img, buf, t0, &rc);
    if (got > 0)
        dp_replay_hit(&d->replay, 0, t0);
    if (got != 0)
        return 1;
    if ((rc == -EAGAIN || rc == -ENOENT) && dp_vbuf_put(&d->stage, t->id, img, buf) == 0) {
        t->c.eagain++;
        dp_uffd_wake(t->uffd, page, PG);
        return 1;
    }
    dp_warn("pid %d: UFFDIO_COPY of staged page 0x%llx failed: %s; fetching it", t->shown_pid,
            (unsigned long long)page, strerror(-rc));
    d->replay.st.dropped++;
    dp_lazymap_set(&t->map, pg, DP_PG_REMOTE, 0);
    return 0;
}

/* Stage mode: a first touch of a page with data that the replay did not
 * bring (neither staged nor in flight for it). */
static void stage_miss(struct dp_lazyd *d)
{
    d->replay.st.misses++;
    if (d->replaying)
        d->replay.st.misses_replaying++;
}

static void handle_fault(struct dp_lazyd *d, struct lz_task *t, uint64_t addr, uint64_t t0)
{
    uint64_t page = addr & ~(PG - 1);
    struct dp_lazy_region *reg;
    t->c.faults++;
    if (d->ev.probe.armed && page == d->ev.probe.addr) {
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
        trace_touch(d, t, reg->img + (page - reg->start), t0);
        if ((*pg & DP_PGF_PREFETCH) && !(*pg & DP_PGF_WAITED)) {
            t->c.prefetch_hits_inflight++;
            dp_prefetch_inflight_hit(&t->pf, reg->img, reg->img + (page - reg->start));
        }
        struct lz_req *r = find_req(t, reg->img + (page - reg->start));
        if (d->staging && !(*pg & DP_PGF_WAITED)) { /* a first touch */
            if (r && r->kind == K_REPLAY)
                dp_replay_hit(&d->replay, 1, t0);
            else
                stage_miss(d);
        }
        *pg |= DP_PGF_WAITED;
        if (!r || add_waiter(r, page, t0))
            dp_uffd_wake(t->uffd, page, PG); /* refault later rather than hang */
        break;
    }
    case DP_PG_REMOTE:
        trace_touch(d, t, reg->img + (page - reg->start), t0);
        if ((*pg & DP_PGF_STAGED) && stage_install(d, t, reg, pg, page, t0))
            break;
        if (d->staging)
            stage_miss(d);
        if (ev_managed(d, t)) {
            if (dp_evict_record_fault(&d->ev.pol, t->id, page, t0) == 1)
                d->ev.refaults++;
            if (vbuf_install(d, t, reg, pg, page, t0))
                break;
        }
        fault_remote(d, t, reg, page, t0);
        break;
    }
}

/* Installs what it can of a completed fetch. */
static void install(struct dp_lazyd *d, struct lz_req *r)
{
    struct lz_task *t = r->t;
    if (r->kind == K_REPLAY && d->staging)
        stage_pages(d, r);
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
        uint64_t pa = d->ev.probe.addr;
        if (d->ev.probe.armed && pa >= cur && pa < cur + (uint64_t)run * PG) {
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
        int rc = dp_uffd_copy(t->uffd, cur, r->f.buf + (size_t)i * PG, (uint64_t)run * PG, &done);
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
            ev_installed(d, t, cur + (uint64_t)j * PG, img + (uint64_t)j * PG, r->f.buf + (size_t)(i + j) * PG, 0);
        }
        r->done_pages += k;
        if (rc == 0 && k == run)
            continue;
        if (rc == 0) {
            continue; /* short copy without error: go on from the first page not done */
        } else if (rc == -EEXIST) {
            /* Present already (cannot normally happen: a page in flight is
             * only installed here). Never overwrite it; wake its waiters. */
            t->c.eexist++;
            dp_lazymap_set(&t->map, &pg[k], DP_PG_RESIDENT, 0);
            ev_installed(d, t, cur + (uint64_t)k * PG, img + (uint64_t)k * PG, NULL, 1);
            dp_uffd_wake(t->uffd, cur + (uint64_t)k * PG, PG);
            r->done_pages++;
        } else if (rc == -ENOENT && ++r->retries > 100) {
            /* No VMA registered there any more and no event explains it:
             * give the page back to the remote state; a new fault refetches. */
            dp_warn("pid %d: 0x%llx is no longer registered; dropping the fetched page",
                    t->shown_pid, (unsigned long long)(cur + (uint64_t)k * PG));
            dp_lazymap_set(&t->map, &pg[k], DP_PG_REMOTE, 0);
            r->done_pages++;
        } else if (rc == -EAGAIN || rc == -ENOENT) {
            /* An event is pending (or just changed the mapping): read the
             * task's events, then try again with the updated state. */
            t->c.eagain++;
            r->state = R_INSTALL_RETRY;
            r->rnext = t->retry;
            t->retry = r;
            return;
        } else if (rc == -ESRCH || rc == -ENOSPC) {
            task_gone(d, t, "copy: process gone");
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

static void req_finish(struct dp_lazyd *d, struct lz_req *r)
{
    (void)d;
    struct lz_task *t = r->t;
    waiters_release(t, r, dp_now_ns());
    req_unlink(r);
    req_free(r);
}

static void on_fetch_done(struct dp_fetch *f)
{
    struct lz_req *r = (struct lz_req *)f;  /* f is the first member */
    struct dp_lazyd *d = f->opaque;
    struct lz_task *t = r->t;
    t->refs--;
    if (r->kind == K_BACKGROUND)
        d->bg_inflight--;
    t->c.wire_bytes += f->wire_bytes;
    if (!t->alive) {
        req_unlink(r);
        req_free(r);
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
    }
    install(d, r);
}

/* ---- events ---- */

static struct lz_task *task_fork(struct dp_lazyd *d, struct lz_task *parent, int ufd)
{
    struct lz_task *c = task_new(d, parent->pid, ufd);
    if (!c) {
        /* kept open (the guard holds it too): the child's faults wait */
        dp_error("fork of pid %d: cannot track the child (out of memory); its faults will wait "
                 "rather than read zeros: stop the restored process tree", parent->shown_pid);
        d->failed = 1;
        return NULL;
    }
    dp_set_nonblock(ufd);
    fcntl(ufd, F_SETFD, FD_CLOEXEC);
    c->shown_pid = 0;
    c->parent_id = parent->id;
    if (dp_lazymap_clone(&c->map, &parent->map) ||
        ep_add(d, &c->h, ufd, H_UFFD, c) < 0) {
        dp_error("fork of pid %d: cannot track the child (out of memory); its faults will wait "
                 "rather than read zeros: stop the restored process tree", parent->shown_pid);
        c->broken = 1; /* alive, uffd open, never read */
        d->failed = 1;
        dp_lazymap_free(&c->map);
        return NULL;
    }
    /* the same argv/environ area; what the parent had not fetched yet, now */
    c->pin_lo = parent->pin_lo;
    c->pin_hi = parent->pin_hi;
    c->pinned = parent->pinned;
    if (c->pinned)
        ev_pin_fetch(d, c);
    if (d->ev.on)
        ev_fork_inherit(d, parent, c);
    return c;
}

/* Retries the installs and fetches of t's retry list. The list (and keep)
 * only borrow requests: t->reqs owns them, and install() (ESRCH) or a
 * completion run inside req_submit() can end the task, whose task_gone()
 * frees every request not at the source, those still on list and keep
 * included: once t is gone neither is touched again. */
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

static void handle_uffd(struct dp_lazyd *d, struct lz_task *t)
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
                handle_fault(d, t, m->arg.pagefault.address, now);
                break;
            case UFFD_EVENT_FORK:
                t->c.ev_fork++;
                task_fork(d, t, (int)m->arg.fork.ufd);
                break;
            case UFFD_EVENT_REMAP:
                t->c.ev_remap++;
                if (dp_lazymap_remap(&t->map, m->arg.remap.from, m->arg.remap.to, m->arg.remap.len))
                    dp_error("pid %d: out of memory tracking mremap", t->shown_pid);
                if (d->ev.on) {
                    dp_vbuf_drop_range(&d->ev.vb, t->id, m->arg.remap.from, m->arg.remap.from + m->arg.remap.len);
                    dp_vbuf_drop_range(&d->ev.vb, t->id, m->arg.remap.to, m->arg.remap.to + m->arg.remap.len);
                    dp_evict_forget(&d->ev.pol, t->id, m->arg.remap.to, m->arg.remap.to + m->arg.remap.len);
                    if (dp_evict_move(&d->ev.pol, t->id, m->arg.remap.from, m->arg.remap.to, m->arg.remap.len))
                        dp_error("pid %d: out of memory tracking mremap for eviction", t->shown_pid);
                }
                break;
            case UFFD_EVENT_REMOVE:
                t->c.ev_remove++;
                if (d->ev.probe.armed && m->arg.remove.start == d->ev.probe.addr &&
                    m->arg.remove.end == d->ev.probe.addr + PG) {
                    /* the probe's madvise on a page absent from the prober:
                     * no memory changed; it names the uffd of its mm */
                    d->ev.probe.hits++;
                    d->ev.probe.task = t->id;
                    break;
                }
                stage_drop(d, t, m->arg.remove.start, m->arg.remove.end, 0);
                /* our own eviction zaps leave the data at the source (REMOTE);
                 * the application's drop is for good (NONE: zero-fill) */
                dp_lazymap_remove_except(&t->map, m->arg.remove.start, m->arg.remove.end, t->ownzap,
                                         t->n_ownzap);
                /* while the daemon zaps, every thread is stopped and older
                 * events were drained: a REMOVE then is ours */
                if (d->ev.on && !t->n_ownzap) {
                    dp_evict_forget(&d->ev.pol, t->id, m->arg.remove.start, m->arg.remove.end);
                    dp_vbuf_drop_range(&d->ev.vb, t->id, m->arg.remove.start, m->arg.remove.end);
                }
                break;
            case UFFD_EVENT_UNMAP:
                t->c.ev_unmap++;
                stage_drop(d, t, m->arg.remove.start, m->arg.remove.end, 0);
                if (dp_lazymap_unmap(&t->map, m->arg.remove.start, m->arg.remove.end))
                    dp_error("pid %d: out of memory tracking munmap", t->shown_pid);
                if (d->ev.on) {
                    dp_evict_forget(&d->ev.pol, t->id, m->arg.remove.start, m->arg.remove.end);
                    dp_vbuf_drop_range(&d->ev.vb, t->id, m->arg.remove.start, m->arg.remove.end);
                }
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

static void new_task(struct dp_lazyd *d, int32_t pid, int uffd, pid_t sender)
{
    dp_guard_task(&d->guard, uffd, sender, pid);
    struct lz_task *t = task_new(d, pid, uffd);
    struct dp_err err = {{0}};
    if (!t) {
        /* the uffd stays open (the guard holds it too): its faults wait */
        dp_error("out of memory for task %d; its faults will wait rather than read zeros: "
                 "stop the restored process tree", pid);
        d->failed = 1;
        return;
    }
    int rc = d->o->src->ops->task_map(d->o->src, pid, &t->map, &err);
    if (rc == 0 && ep_add(d, &t->h, uffd, H_UFFD, t) < 0)
        dp_err_set(&err, "epoll_ctl: %s", strerror(errno)), rc = -1;
    if (rc < 0) {
        /* Closing the uffd would unregister the task's lazy memory: its
         * untouched pages would then read as zeros. Keep it open and never
         * answer: the task's faults wait until someone stops it. */
        dp_error("task %d: %s. Its lazy memory cannot be served; its faults will wait "
                 "rather than read zeros: stop the restored process tree", pid, err.msg);
        t->broken = 1;
        d->failed = 1;
        return;
    }
    char rem[32];
    d->ev.lazy_pages += dp_lazymap_pages(&t->map, DP_PG_REMOTE);
    dp_format_bytes(dp_lazymap_pages(&t->map, DP_PG_REMOTE) * PG, rem, sizeof(rem));
    dp_log_context(t->id, -1);
    dp_info("task %d: userfaultfd received, %s lazy in %zu regions", pid, rem, t->map.n);
    dp_log_context(-1, -1);
}

static void handle_criu(struct dp_lazyd *d, struct handler *h)
{
    int32_t pid;
    int uffd;
    pid_t sender = 0;
    int rc = dp_lazysock_recv_from(h->fd, &pid, &uffd, &sender);
    if (rc == 1) {
        if (pid < 0)
            dp_debug("zombie %d: nothing to serve", -pid);
        else
            new_task(d, pid, uffd, sender);
        return;
    }
    if (rc == 2) {
        d->finished = 1;
        dp_info("restore finished: %d task(s) with lazy memory", tasks_alive(d));
        /* their processes, and their argv/environ pages: fetched now (ps reads
         * them through /proc, which cannot fault them in), never evicted */
        ev_find_host_pids(d);
        return;
    }
    if (rc < 0 || !d->finished) {
        if (rc < 0)
            dp_error("lazy-pages socket: %s", strerror(-rc));
        dp_error("criu restore closed the lazy-pages connection before the restore finished "
                 "(see the restore log in %s)", d->o->workdir);
        d->failed = 1;
    }
    epoll_ctl(d->ep, EPOLL_CTL_DEL, h->fd, NULL);
    close(h->fd);
    free(h);
    d->conns--;
}

static void handle_listen(struct dp_lazyd *d)
{
    int c = accept4(d->listen_h.fd, NULL, NULL, SOCK_CLOEXEC);
    if (c < 0)
        return;
    if (dp_perm_peer_check(c, d->sock_path) < 0) {
        close(c);
        return;
    }
    struct handler *h = calloc(1, sizeof(*h));
    if (!h || ep_add(d, h, c, H_CRIU, NULL) < 0) {
        close(c);
        free(h);
        return;
    }
    d->conns++;
    /* The guard learns criu (its descendants are the tree being restored)
     * and, through the senders' credentials, each task's pid. */
    struct ucred cr;
    socklen_t crlen = sizeof(cr);
    int on = 1;
    setsockopt(c, SOL_SOCKET, SO_PASSCRED, &on, sizeof(on));
    if (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cr, &crlen) == 0)
        dp_guard_root(&d->guard, cr.pid);
}

/* ---- stats ---- */

/* Faulting threads of t waiting for a fetch now (a stalled source shows here
 * while the fault counters stand still). */
static uint64_t task_faults_waiting(const struct lz_task *t)
{
    uint64_t n = 0;
    for (const struct lz_req *r = t->alive ? t->reqs : NULL; r; r = r->next)
        n += r->nw;
    return n;
}

/* resident_bytes, remote_bytes, remote_fraction (of a task or of the total). */
static json_t *pages_json(uint64_t remote, uint64_t resident)
{
    return json_pack("{s:I, s:I, s:o}", "resident_bytes", (json_int_t)(resident * PG), "remote_bytes",
                     (json_int_t)(remote * PG), "remote_fraction",
                     dp_json_fixed(remote + resident ? (double)remote / (double)(remote + resident) : 0.0, 4));
}

/* One element of "tasks": a task's counters, pages and fault latency (its
 * last ones once it has exited). NULL when out of memory. */
static json_t *task_json(const struct lz_task *t, uint64_t now)
{
    uint64_t remote = t->alive ? dp_lazymap_pages(&t->map, DP_PG_REMOTE) + dp_lazymap_pages(&t->map, DP_PG_INFLIGHT)
                               : t->final_remote;
    uint64_t resident = t->alive ? dp_lazymap_pages(&t->map, DP_PG_RESIDENT) : t->final_resident;
    struct dp_lazy_counters c = t->c;
    c.prefetch_hits_inferred = t->pf.hits_inferred;
    c.prefetch_misses = t->pf.misses;
    c.faults_waiting = task_faults_waiting(t);
    json_t *o = json_pack("{s:i, s:i, s:i, s:i, s:b, s:I, s:I, s:o}", "id", t->id, "pid", t->shown_pid, "parent_id",
                          t->parent_id, "host_pid", (int)t->host_pid, "alive", t->alive, "evictions",
                          (json_int_t)t->evictions, "pinned_bytes",
                          (json_int_t)(t->pinned ? t->pin_hi - t->pin_lo : 0), "uptime_s",
                          dp_json_fixed((double)((t->alive ? now : t->ended_ns) - t->started_ns) / 1e9, 3));
    if (!o || dp_counters_jset(o, &c) < 0 || json_object_update_new(o, pages_json(remote, resident)) < 0 ||
        json_object_set_new(o, "latency", dp_hist_jobj(&t->lat)) < 0) {
        json_decref(o);
        return NULL;
    }
    return o;
}

static const uint32_t stage_marks[] = {1, 2, 5, 10, 20, 30, 60};

/* The replay's measured use (stage mode), or null. */
static json_t *stage_json(struct dp_lazyd *d)
{
    if (!d->staging)
        return json_null();
    const struct dp_replay_hits *h = &d->replay.st;
    double rate = dp_replay_hit_rate(&d->replay);
    uint64_t touched = h->hits + h->hits_inflight;
    json_t *within = json_object();
    for (size_t i = 0; within && i < DP_ARRAY_LEN(stage_marks); i++) {
        char mark[16];
        snprintf(mark, sizeof(mark), "%u", stage_marks[i]);
        if (json_object_set_new(within, mark,
                                json_integer((json_int_t)dp_replay_hits_within(&d->replay, stage_marks[i]))) < 0) {
            json_decref(within);
            within = NULL;
        }
    }
    /* per second since the replay started, up to the last second with a hit */
    size_t last = 0;
    for (size_t i = 0; i <= DP_REPLAY_HIT_SECONDS; i++)
        if (h->by_second[i])
            last = i + 1;
    json_t *by_second = json_array();
    for (size_t i = 0; by_second && i < last; i++) {
        if (json_array_append_new(by_second, json_integer((json_int_t)h->by_second[i])) < 0) {
            json_decref(by_second);
            by_second = NULL;
        }
    }
    return json_pack("{s:I, s:I, s:I, s:o, s:I, s:I, s:o, s:I, s:I, s:I, s:I, s:I, s:o, s:o}", "staged",
                     (json_int_t)h->staged, "hits", (json_int_t)h->hits, "hits_inflight", (json_int_t)h->hits_inflight,
                     "hit_rate", rate < 0 ? json_null() : dp_json_fixed(rate, 4), "misses", (json_int_t)h->misses,
                     "misses_while_replaying", (json_int_t)h->misses_replaying, "coverage",
                     touched + h->misses ? dp_json_fixed((double)touched / (double)(touched + h->misses), 4)
                                         : json_null(),
                     "dropped", (json_int_t)h->dropped, "expired", (json_int_t)h->expired, "still_staged",
                     (json_int_t)dp_replay_still_staged(&d->replay), "unstaged", (json_int_t)h->unstaged,
                     "staged_bytes", (json_int_t)d->stage.bytes, "hits_within_s", within, "hits_by_second",
                     by_second);
}

/* The "total" of stats (and of the --metrics exposition): counters summed
 * over every task, latency merged (lat may be NULL), pages of the live ones. */
static void totals(const struct dp_lazyd *d, struct dp_lazy_counters *tot, struct dp_hist *lat, uint64_t *remote,
                   uint64_t *resident)
{
    memset(tot, 0, sizeof(*tot));
    *remote = *resident = 0;
    for (const struct lz_task *t = d->tasks; t; t = t->next) {
        dp_counters_add(tot, &t->c);
        tot->prefetch_hits_inferred += t->pf.hits_inferred;
        tot->prefetch_misses += t->pf.misses;
        tot->faults_waiting += task_faults_waiting(t);
        if (lat)
            dp_hist_merge(lat, &t->lat);
        if (t->alive) {
            *remote += dp_lazymap_pages(&t->map, DP_PG_REMOTE) + dp_lazymap_pages(&t->map, DP_PG_INFLIGHT);
            *resident += dp_lazymap_pages(&t->map, DP_PG_RESIDENT);
        }
    }
}

/* --metrics: the same totals and budget counters as stats_json/ev_json. */
static void metrics_render(void *ctx, struct dp_sbuf *out)
{
    struct dp_lazyd *d = ctx;
    struct dp_lazyd_metrics m = {0};
    struct dp_hist *lat = calloc(1, sizeof(*lat));
    if (!lat) {
        out->oom = 1;
        return;
    }
    uint64_t remote, resident;
    totals(d, &m.c, lat, &remote, &resident);
    m.uptime_ms = (dp_now_ns() - d->start_ns) / 1000000;
    m.source_up = d->o->src->ops->healthy(d->o->src) ? 1 : 0;
    m.tasks_alive = (uint64_t)tasks_alive(d);
    m.resident_bytes = resident * PG;
    m.remote_bytes = remote * PG;
    m.fault_latency = lat;
    m.budget_on = d->ev.on ? 1 : 0;
    m.evictions = d->ev.evictions;
    m.writeback_pages = d->ev.writebacks + d->ev.cleaned;
    m.writeback_requests = d->ev.wb_requests;
    m.writeback_requests_background = d->ev.clean_requests;
    m.writeback_errors = d->ev.wb_errors;
    m.writeback_latency = &d->ev.wb_lat;
    m.eviction_stop = &d->ev.stop;
    dp_metrics_lazyd_text(out, &m);
    free(lat);
}

/* The "total" member of stats: the counters over every task, the pages of
 * the live ones, the merged latency and its CDF. */
static json_t *total_json(const struct dp_lazyd *d)
{
    struct dp_lazy_counters tot;
    struct dp_hist *lat = calloc(1, sizeof(*lat));
    uint64_t remote, resident;
    totals(d, &tot, lat, &remote, &resident);
    json_t *o = json_object();
    if (!o || dp_counters_jset(o, &tot) < 0 || json_object_update_new(o, pages_json(remote, resident)) < 0 ||
        json_object_update_new(o, lat ? json_pack("{s:o, s:o}", "latency", dp_hist_jobj(lat), "latency_buckets_us",
                                                  dp_hist_jbuckets(lat))
                                      : json_pack("{s:n}", "latency")) < 0) {
        json_decref(o);
        o = NULL;
    }
    free(lat);
    return o;
}

/* The `stats` document (control socket and stats-final.json), one line. */
static void stats_json(struct dp_lazyd *d, struct dp_sbuf *b)
{
    uint64_t now = dp_now_ns();
    char pf[32];
    dp_prefetch_format(&d->o->prefetch, pf, sizeof(pf));
    json_t *tasks = json_array();
    for (const struct lz_task *t = d->tasks; tasks && t; t = t->next) {
        if (json_array_append_new(tasks, task_json(t, now)) < 0) {
            json_decref(tasks);
            tasks = NULL;
        }
    }
    /* the source names a path: null if it is not UTF-8 */
    json_t *src = json_string(d->o->src->desc);
    json_t *o = json_pack(
        "{s:o, s:o, s:b, s:s, s:I, s:b, s:i, s:o, "
        "s:{s:b, s:s, s:I, s:I, s:I, s:I, s:I, s:o, s:o}, s:{s:b, s:I, s:b}, s:o, s:o}",
        "uptime_s", dp_json_fixed((double)(now - d->start_ns) / 1e9, 3), "source", src ? src : json_null(),
        "source_healthy", d->o->src->ops->healthy(d->o->src), "prefetch", pf, "background_rate",
        (json_int_t)d->o->background_rate, "restore_finished", d->finished, "tasks_alive", tasks_alive(d), "total",
        total_json(d), "replay", "active", d->replaying, "mode", d->staging ? "stage" : "install", "pages",
        (json_int_t)d->replay.total_pages, "submitted", (json_int_t)d->replay.submitted_pages, "skipped",
        (json_int_t)d->replay.skipped_pages, "completed", (json_int_t)d->replay.completed_pages, "batches",
        (json_int_t)d->replay.batches, "seconds",
        dp_json_fixed(d->replay.done_ns ? (double)(d->replay.done_ns - d->replay.start_ns) / 1e9 : 0.0, 3), "stage",
        stage_json(d), "trace", "recording", d->tracing && !d->trace_sent, "pages", (json_int_t)d->trace_pages,
        "sent", d->trace_sent, "budget", ev_json(d), "tasks", tasks);
    dp_sbuf_put_json(b, o);
    dp_sbuf_printf(b, "\n");
}

static void text_line(struct dp_sbuf *b, const char *name, const struct dp_lazy_counters *c,
                      uint64_t hits_inf, const struct dp_hist *h, uint64_t remote, uint64_t resident)
{
    char rb[32], lb[32];
    dp_format_bytes(remote * PG, rb, sizeof(rb));
    dp_format_bytes(resident * PG, lb, sizeof(lb));
    dp_sbuf_printf(b, "%-20s %9llu %9llu %9llu %8llu %8llu %8.1f %8.1f %8.1f %9.1f %11s %11s %6.1f%%\n", name,
                   (unsigned long long)c->faults, (unsigned long long)c->pages_fetched,
                   (unsigned long long)c->pages_prefetched,
                   (unsigned long long)(c->prefetch_hits_inflight + hits_inf), (unsigned long long)c->zero_pages,
                   (double)dp_hist_quantile(h, 0.5) / 1e3, (double)dp_hist_quantile(h, 0.9) / 1e3,
                   (double)dp_hist_quantile(h, 0.99) / 1e3, (double)h->max_ns / 1e3, lb, rb,
                   remote + resident ? 100.0 * (double)remote / (double)(remote + resident) : 0.0);
}

static void stats_text(struct dp_lazyd *d, struct dp_sbuf *b)
{
    uint64_t now = dp_now_ns();
    char pf[32], wire[32];
    dp_prefetch_format(&d->o->prefetch, pf, sizeof(pf));
    struct dp_lazy_counters tot;
    memset(&tot, 0, sizeof(tot));
    struct dp_hist *lat = calloc(1, sizeof(*lat));
    uint64_t remote = 0, resident = 0, hits_inf = 0;
    if (!lat)
        return;
    for (const struct lz_task *t = d->tasks; t; t = t->next) {
        dp_counters_add(&tot, &t->c);
        hits_inf += t->pf.hits_inferred;
        dp_hist_merge(lat, &t->lat);
        remote += t->alive ? dp_lazymap_pages(&t->map, DP_PG_REMOTE) + dp_lazymap_pages(&t->map, DP_PG_INFLIGHT)
                           : 0;
        resident += t->alive ? dp_lazymap_pages(&t->map, DP_PG_RESIDENT) : 0;
    }
    dp_format_bytes(tot.wire_bytes, wire, sizeof(wire));
    dp_sbuf_printf(b, "uptime %.1f s, source %s (%s), prefetch %s, %d task(s) alive, %s on the wire\n",
                   (double)(now - d->start_ns) / 1e9, d->o->src->desc,
                   d->o->src->ops->healthy(d->o->src) ? "up" : "UNREACHABLE", pf, tasks_alive(d), wire);
    dp_sbuf_printf(b, "%-20s %9s %9s %9s %8s %8s %8s %8s %8s %9s %11s %11s %7s\n", "task", "faults", "fetched",
                   "prefetch", "pf-hits", "zero", "p50 us", "p90 us", "p99 us", "max us", "resident", "remote",
                   "remote");
    for (const struct lz_task *t = d->tasks; t; t = t->next) {
        char name[32];
        if (t->shown_pid > 0)
            snprintf(name, sizeof(name), "pid %d%s", t->shown_pid, t->alive ? "" : " (exit)");
        else
            snprintf(name, sizeof(name), "fork of #%d%s", t->parent_id, t->alive ? "" : " (exit)");
        uint64_t rem = t->alive ? dp_lazymap_pages(&t->map, DP_PG_REMOTE) + dp_lazymap_pages(&t->map, DP_PG_INFLIGHT)
                                : t->final_remote;
        uint64_t res = t->alive ? dp_lazymap_pages(&t->map, DP_PG_RESIDENT) : t->final_resident;
        text_line(b, name, &t->c, t->pf.hits_inferred, &t->lat, rem, res);
    }
    text_line(b, "total (alive)", &tot, hits_inf, lat, remote, resident);
    free(lat);
    if (d->replay.total_pages) {
        dp_sbuf_printf(b, "hot-set replay (%s): %llu pages, %llu fetched, %llu already there or gone, %s\n",
                       d->staging ? "stage" : "install", (unsigned long long)d->replay.total_pages,
                       (unsigned long long)d->replay.submitted_pages, (unsigned long long)d->replay.skipped_pages,
                       d->replaying ? "running" : "done");
    }
    if (d->staging) {
        const struct dp_replay_hits *h = &d->replay.st;
        double rate = dp_replay_hit_rate(&d->replay);
        char rs[16] = "n/a";
        if (rate >= 0)
            snprintf(rs, sizeof(rs), "%.1f%%", 100.0 * rate);
        dp_sbuf_printf(b, "replay hit rate %s: %llu of %llu replayed pages used (%llu from the staging "
                       "buffer, %llu waited in flight); %llu misses; %llu still staged, %llu dropped, %llu expired\n",
                       rs,
                       (unsigned long long)(h->hits + h->hits_inflight),
                       (unsigned long long)(h->staged + h->hits_inflight), (unsigned long long)h->hits,
                       (unsigned long long)h->hits_inflight, (unsigned long long)h->misses,
                       (unsigned long long)dp_replay_still_staged(&d->replay), (unsigned long long)h->dropped,
                       (unsigned long long)h->expired);
        dp_sbuf_printf(b, "replay hits within");
        for (size_t i = 0; i < DP_ARRAY_LEN(stage_marks); i++)
            dp_sbuf_printf(b, " %us: %llu%s", stage_marks[i],
                           (unsigned long long)dp_replay_hits_within(&d->replay, stage_marks[i]),
                           i + 1 < DP_ARRAY_LEN(stage_marks) ? "," : "\n");
    }
}

static void handle_ctl_client(struct dp_lazyd *d, struct handler *h)
{
    char cmd[128];
    ssize_t n = recv(h->fd, cmd, sizeof(cmd) - 1, MSG_DONTWAIT);
    if (n < 0 && errno == EAGAIN)
        return;
    struct dp_sbuf b = {0};
    if (n > 0) {
        cmd[n] = '\0';
        cmd[strcspn(cmd, "\r\n")] = '\0';
        if (strcmp(cmd, "stats") == 0)
            stats_json(d, &b);
        else if (strcmp(cmd, "summary") == 0)
            stats_text(d, &b);
        else if (strcmp(cmd, "sync") == 0)
            dp_lazyd_sync(d, &b);
        else
            dp_sbuf_printf(&b, "{\"error\": \"unknown command; the daemon knows: stats, summary, sync\"}\n");
        /* Replies are small: a blocking write bounded by a send timeout. */
        int fl = fcntl(h->fd, F_GETFL);
        fcntl(h->fd, F_SETFL, fl & ~O_NONBLOCK);
        struct timeval tv = {.tv_sec = 2};
        setsockopt(h->fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
        if (!b.oom && b.p)
            dp_write_full(h->fd, b.p, b.len);
    }
    dp_sbuf_free(&b);
    epoll_ctl(d->ep, EPOLL_CTL_DEL, h->fd, NULL);
    close(h->fd);
    free(h);
}

static void handle_ctl_listen(struct dp_lazyd *d)
{
    int c = accept4(d->ctl_h.fd, NULL, NULL, SOCK_CLOEXEC | SOCK_NONBLOCK);
    if (c < 0)
        return;
    if (dp_perm_peer_check(c, d->ctl_path) < 0) {
        close(c);
        return;
    }
    struct handler *h = calloc(1, sizeof(*h));
    if (!h || ep_add(d, h, c, H_CTL_CLIENT, NULL) < 0) {
        close(c);
        free(h);
    }
}

/* ---- timer: exits, timeouts, retries, background copy ---- */

static int read_pid_file(const char *dir, const char *name)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return dp_read_pid_file(path);
}

/* Fills pids with root and all its descendants (found through /proc, parents
 * before children); returns how many, at most cap. */
static int collect_tree(int root, int *pids, int cap)
{
    int n = 0;
    pids[n++] = root;
    for (int i = 0; i < n; i++) {
        DIR *dir = opendir("/proc");
        if (!dir)
            break;
        struct dirent *e;
        while ((e = readdir(dir)) && n < cap) {
            int p = atoi(e->d_name);
            if (p <= 0)
                continue;
            long ppid;
            if (dp_proc_stat_field(p, 4, &ppid) == 0 && ppid == pids[i])
                pids[n++] = p;
        }
        closedir(dir);
    }
    return n;
}

/* SIGKILLs pid and all its descendants. */
static void kill_tree(int root)
{
    int pids[4096];
    int n = collect_tree(root, pids, (int)DP_ARRAY_LEN(pids));
    for (int i = 0; i < n; i++)
        kill(pids[i], SIGKILL);
}

static void check_timeouts(struct dp_lazyd *d, uint64_t now)
{
    if (d->o->fault_timeout <= 0)
        return;
    uint64_t limit = (uint64_t)(d->o->fault_timeout * 1e9);
    for (struct lz_task *t = d->tasks; t; t = t->next) {
        if (!t->alive)
            continue;
        for (struct lz_req *r = t->reqs; r; r = r->next) {
            if (!r->nw || r->state == R_INSTALL_RETRY)
                continue;
            /* A fault read after `now` was taken (by the same pass of the
             * loop) is younger than now: its age is 0, never a wrapped
             * 584-year wait that kills the tree at once. */
            uint64_t t0 = r->w[0].t0, age = now > t0 ? now - t0 : 0;
            if (age < limit || r->warned)
                continue;
            r->warned = 1;
            if (!d->o->on_timeout_kill) {
                dp_warn("pid %d: a fault at 0x%llx has waited %.1f s for %s (%s); the thread keeps "
                        "waiting (--on-timeout wait); restart or reach the page server and it continues",
                        t->shown_pid, (unsigned long long)r->w[0].addr, (double)age / 1e9, d->o->src->desc,
                        d->o->src->ops->healthy(d->o->src) ? "reachable, slow" : "unreachable");
            } else if (!d->killed) {
                d->killed = 1;
                dp_error("pid %d: a fault at 0x%llx waited %.1f s for %s (%s): stopping the restored "
                         "process tree with SIGKILL (--on-timeout kill). No page was filled with wrong "
                         "data; restore again from the source when it is reachable.",
                         t->shown_pid, (unsigned long long)r->w[0].addr, (double)age / 1e9, d->o->src->desc,
                         d->o->src->ops->healthy(d->o->src) ? "reachable, slow" : "unreachable");
                kill_restored(d);
            }
        }
    }
}

/* Background fetching found nothing remote: once nothing is in flight either
 * (and no budget may evict), the source is told it is no longer needed. */
static void all_resident(struct dp_lazyd *d)
{
    if (d->all_resident_said || !d->o->all_resident || d->o->budget_pages || d->o->budget_frac > 0)
        return;
    for (struct lz_task *t = d->tasks; t; t = t->next)
        if (t->alive && (dp_lazymap_pages(&t->map, DP_PG_REMOTE) || dp_lazymap_pages(&t->map, DP_PG_INFLIGHT)))
            return;
    d->all_resident_said = 1;
    dp_info("every lazy page is resident (background fetch done): the source is no longer needed");
    d->o->all_resident(d->o->all_resident_ctx);
}

static void background_fetch(struct dp_lazyd *d, uint64_t now)
{
    if (!d->o->background_rate || !d->finished)
        return;
    double dt = (double)(now - d->last_bg_ns) / 1e9;
    d->last_bg_ns = now;
    double cap = (double)d->o->background_rate * 0.05 + BG_CHUNK_PAGES * PG;
    d->bg_tokens += dt * (double)d->o->background_rate;
    if (d->bg_tokens > cap)
        d->bg_tokens = cap;
    int guard = 0;
    while (d->bg_tokens >= (double)(BG_CHUNK_PAGES * PG) && d->bg_inflight < BG_MAX_INFLIGHT && guard++ < 64) {
        /* round robin over live tasks */
        struct lz_task *t = d->bg_next && d->bg_next->alive ? d->bg_next : d->tasks;
        struct lz_task *start = t;
        int found = 0;
        do {
            if (t && t->alive && dp_lazymap_pages(&t->map, DP_PG_REMOTE)) {
                found = 1;
                break;
            }
            t = t && t->next ? t->next : d->tasks;
        } while (t != start);
        if (!found) {
            all_resident(d);
            return;
        }
        d->bg_next = t->next;
        /* next remote run at or after the cursor */
        int submitted = 0;
        for (int pass = 0; pass < 2 && !submitted; pass++) {
            for (size_t i = 0; i < t->map.n && !submitted; i++) {
                struct dp_lazy_region *reg = &t->map.r[i];
                if (reg->end <= t->bg_cursor)
                    continue;
                uint64_t a = t->bg_cursor > reg->start ? t->bg_cursor : reg->start;
                for (; a < reg->end; a += PG) {
                    if (fetchable(reg->pg[(a - reg->start) / PG])) {
                        uint64_t img = reg->img + (a - reg->start);
                        uint64_t left = (reg->end - a) / PG;
                        uint32_t n = left < BG_CHUNK_PAGES ? (uint32_t)left : BG_CHUNK_PAGES;
                        submit_remote_runs(d, t, reg, img, n, K_BACKGROUND);
                        t->bg_cursor = a + (uint64_t)n * PG;
                        d->bg_tokens -= (double)n * PG;
                        submitted = 1;
                        break;
                    }
                }
            }
            if (!submitted)
                t->bg_cursor = 0;
        }
        if (!submitted)
            return;
    }
}

/* The remote source's descriptor changes across reconnects and it wants
 * EPOLLOUT only while it has bytes to send: keep epoll in step. */
static void src_sync(struct dp_lazyd *d)
{
    const struct dp_pagesrc_ops *ops = d->o->src->ops;
    const char *fenced = ops->fenced ? ops->fenced(d->o->src) : NULL;
    if (fenced && !d->killed) { /* another restore took over: never run on (lib/fence.h) */
        d->killed = d->failed = 1;
        dp_fence_report(fenced, d->o->src->desc, d->o->workdir);
        kill_restored(d);
    }
    int fd = ops->fd(d->o->src);
    uint32_t ev = ops->events ? (uint32_t)(unsigned short)ops->events(d->o->src) : EPOLLIN;
    if (fd == d->src_h.fd && ev == d->src_ev)
        return;
    if (d->src_h.fd >= 0 && d->src_h.fd != fd)
        epoll_ctl(d->ep, EPOLL_CTL_DEL, d->src_h.fd, NULL); /* may be closed already */
    if (fd >= 0) {
        struct epoll_event e = {.events = ev, .data.ptr = &d->src_h};
        int op = fd == d->src_h.fd ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
        if (epoll_ctl(d->ep, op, fd, &e) < 0)
            epoll_ctl(d->ep, op == EPOLL_CTL_MOD ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &e);
    }
    d->src_h.type = H_SRC;
    d->src_h.fd = fd;
    d->src_ev = ev;
}

static void kill_restored(struct dp_lazyd *d)
{
    int root = read_pid_file(d->o->workdir, DP_RESTORED_PID_NAME);
    if (root > 0) {
        kill_tree(root);
        return;
    }
    for (struct lz_task *x = d->tasks; x; x = x->next)
        if (x->alive && x->shown_pid > 0)
            kill(x->shown_pid, SIGKILL);
}

/* SIGTERM/SIGINT/SIGHUP: the tree cannot run on without its daemon (the
 * guard would have to kill it, with an error): stop it first, in order. */
static void handle_signal(struct dp_lazyd *d)
{
    struct signalfd_siginfo si;
    if (read(d->sig_h.fd, &si, sizeof(si)) != (ssize_t)sizeof(si))
        return;
    int n = tasks_alive(d);
    if (!n) {
        d->stop = 1;
        return;
    }
    uint64_t remote = 0;
    for (struct lz_task *t = d->tasks; t; t = t->next)
        if (t->alive)
            remote += dp_lazymap_pages(&t->map, DP_PG_REMOTE) + dp_lazymap_pages(&t->map, DP_PG_INFLIGHT);
    char rb[32];
    dp_format_bytes(remote * PG, rb, sizeof(rb));
    dp_warn("signal %u: %d restored task(s) still have %s remote that only this daemon serves; "
            "killing the restored process tree first (restore again from the source to continue)",
            si.ssi_signo, n, rb);
    kill_restored(d);
}

static void handle_timer(struct dp_lazyd *d)
{
    uint64_t ticks;
    if (read(d->timer_h.fd, &ticks, sizeof(ticks)) < 0 && errno != EAGAIN)
        return;
    uint64_t now = dp_now_ns();
    if (d->o->src->ops->events)
        d->o->src->ops->process(d->o->src); /* reconnect timers, deadlines */
    for (struct lz_task *t = d->tasks; t; t = t->next) {
        if (t->alive && t->retry) {
            handle_uffd(d, t); /* reads events first, then retries */
        }
    }
    if (now - d->last_probe_ns >= PROBE_NS) {
        d->last_probe_ns = now;
        for (struct lz_task *t = d->tasks; t; t = t->next) {
            if (!t->alive)
                continue;
            uint64_t probe = t->map.n ? t->map.r[0].start : 0x10000000ull;
            if (dp_uffd_alive(t->uffd, probe) == 0)
                task_gone(d, t, "exited");
        }
        check_timeouts(d, now);
        /* processes not found when the restore finished (restored.pid not
         * written yet): look again for a few seconds, for their argv pins */
        int unplaced = 0;
        for (struct lz_task *t = d->tasks; t; t = t->next)
            unplaced |= t->alive && t->shown_pid > 0 && !t->host_pid;
        if (d->finished && unplaced && d->place_tries < 25) {
            d->place_tries++;
            ev_find_host_pids(d);
        }
    }
    background_fetch(d, now);
    replay_pump(d);
    trace_flush(d, now, 0);
    if (dp_guard_fd(&d->guard) < 0 || d->guard_gen != d->guard.gen) {
        dp_guard_check(&d->guard);
        guard_sync(d);
    }
}


/* ---- eviction under a memory budget (docs/budget.md, docs/eviction.md) ---- */

#define EV_MAX_BATCH 256
#define EV_ALWAYS_DIRTY DP_HASH_ALWAYS_DIRTY /* the server does not hold what the process has */
#define EV_PUT_INFLIGHT DP_HASH_PUT_INFLIGHT /* a background write-back of the page awaits its ack */

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
    uint64_t t0;                  /* submitted (write-back latency) */
    uint64_t img[EV_MAX_BATCH];
    struct dp_page_hash h[EV_MAX_BATCH];
};

static void ev_clean_cb(void *cookie, int status, const char *errmsg)
{
    struct ev_clean *c = cookie;
    struct dp_lazyd *d = c->d;
    struct lz_task *t = task_by_id(d, c->task_id); /* NULL: exited, its hashes are gone */
    d->ev.clean_inflight--;
    if (status)
        dp_warn("background write-back to %s failed: %s; the pages stay dirty", d->o->src->desc,
                errmsg ? errmsg : strerror(-status));
    for (uint32_t i = 0; i < c->n; i++) {
        struct dp_pmap_entry *e = t ? dp_pmap_find(&t->hash, 0, c->img[i]) : NULL;
        if (!e)
            continue;
        if (status == 0) {
            /* the server holds exactly these bytes now (whatever the page
             * became meanwhile: the hash compares against the server's copy) */
            e->value = c->h[i].lo;
            e->value2 = c->h[i].hi;
            e->aux = 0;
        } else {
            e->aux &= ~EV_PUT_INFLIGHT;
        }
    }
    if (status == 0) {
        d->ev.cleaned += c->n;
        dp_hist_add(&d->ev.wb_lat, dp_now_ns() - c->t0);
    }
    free(c);
}

/* ---- the processes behind the tasks: pids, argv/environ pins, forked children ---- */

/* Submits fetches for the REMOTE pages of t's pinned range: the argument
 * and environment strings are read by ps through the process's memory,
 * which cannot fault a missing page in (docs/budget.md), so they are
 * brought in at once instead of at the process's next touch. */
static void ev_pin_fetch(struct dp_lazyd *d, struct lz_task *t)
{
    for (size_t i = 0; i < t->map.n; i++) {
        struct dp_lazy_region *reg = &t->map.r[i];
        uint64_t a = t->pin_lo > reg->start ? t->pin_lo : reg->start;
        uint64_t b = t->pin_hi < reg->end ? t->pin_hi : reg->end;
        if (a < b)
            submit_remote_runs(d, t, reg, reg->img + (a - reg->start), (uint32_t)((b - a) / PG), K_PIN);
    }
}

/* t's process is host pid p: remember it with its start time, and pin its
 * argv/environ pages before any batch can pick them (a task is evicted
 * only once it has a host pid, and gets its pin in the same step). */
static void ev_place(struct dp_lazyd *d, struct lz_task *t, pid_t p)
{
    t->host_pid = p;
    t->host_start = dp_proc_start_time(p);
    if (t->pinned)
        return; /* inherited at fork: the same addresses */
    uint64_t lo, hi;
    if (dp_proc_args_range(p, &lo, &hi) < 0) {
        dp_debug("task %d (pid %d): no argument area in /proc/%d/stat; nothing pinned", t->id, t->shown_pid, p);
        return;
    }
    t->pin_lo = lo;
    t->pin_hi = hi;
    t->pinned = 1;
    if (d->ev.on) {
        dp_evict_forget(&d->ev.pol, t->id, lo, hi); /* resident there: never picked from now on */
        dp_vbuf_drop_range(&d->ev.vb, t->id, lo, hi);
    }
    ev_pin_fetch(d, t);
}

/* A child after fork (budget): install hashes and policy records of the
 * pages it shares with its parent (dp_fork_inherit, docs/budget.md "Forked
 * children"); its process is looked for at the next batch. */
static void ev_fork_inherit(struct dp_lazyd *d, struct lz_task *parent, struct lz_task *c)
{
    if (dp_fork_inherit(&c->map, &parent->hash, &c->hash, &d->ev.pol, c->id, c->pinned ? c->pin_lo : 0,
                        c->pinned ? c->pin_hi : 0, dp_now_ns()) < 0)
        dp_warn("fork of pid %d: out of memory for install hashes; some of the child's pages will not be "
                "evicted", parent->shown_pid);
    d->ev.ident_next_ns = 0; /* look for its process at the next batch */
    d->ev.ident_backoff_ns = 0;
}

/* Probe callbacks (lib/lazy_tasks.h). The k-th page: a REMOTE page with no
 * fetch outstanding of the unplaced tasks, round robin. */
static uint64_t probe_addr(void *arg, int k)
{
    struct dp_lazyd *d = arg;
    int n = 0;
    for (struct lz_task *t = d->tasks; t; t = t->next)
        n += t->alive && !t->host_pid;
    if (!n)
        return 0;
    int which = k % n, skip = k / n, j = 0;
    for (struct lz_task *t = d->tasks; t; t = t->next) {
        if (!t->alive || t->host_pid || j++ != which)
            continue;
        for (size_t i = 0; i < t->map.n; i++) {
            struct dp_lazy_region *reg = &t->map.r[i];
            for (uint64_t a = reg->start; a < reg->end; a += PG) {
                uint8_t pg = reg->pg[(a - reg->start) / PG];
                if (pg != DP_PG_REMOTE || find_req(t, reg->img + (a - reg->start)))
                    continue;
                if (skip-- == 0)
                    return a;
            }
        }
        return 0;
    }
    return 0;
}

static void probe_arm(void *arg, uint64_t addr)
{
    struct dp_lazyd *d = arg;
    d->ev.probe.armed = 1;
    d->ev.probe.addr = addr;
    d->ev.probe.hits = 0;
    d->ev.probe.task = 0;
    d->ev.probes++;
}

static int probe_disarm(void *arg)
{
    struct dp_lazyd *d = arg;
    d->ev.probe.armed = 0;
    return d->ev.probe.hits == 1 ? d->ev.probe.task : d->ev.probe.hits ? -1 : 0;
}

static int probe_pump(void *arg)
{
    ev_pump_d(arg);
    return 0;
}

/* Finds the processes of forked children that have none yet: every process
 * of the restored tree that is no task's is probed (stopped, one no-op
 * madvise, resumed) until each unplaced child has its process. Backs off
 * (0.1 s doubling to 5 s) while nothing is found; a new fork resets it. */
static void ev_identify(struct dp_lazyd *d)
{
    uint64_t now = dp_now_ns();
    if (now < d->ev.ident_next_ns)
        return;
    int unplaced = 0;
    for (struct lz_task *t = d->tasks; t; t = t->next) {
        if (t->broken && t->alive)
            return; /* a probe REMOVE on its uffd would never be read: the prober would hang */
        unplaced += t->alive && !t->host_pid && t->shown_pid <= 0;
    }
    if (!unplaced)
        return;
    d->ev.ident_backoff_ns = d->ev.ident_backoff_ns ? d->ev.ident_backoff_ns * 2 : 100 * 1000000ull;
    if (d->ev.ident_backoff_ns > 5000 * 1000000ull)
        d->ev.ident_backoff_ns = 5000 * 1000000ull;
    d->ev.ident_next_ns = now + d->ev.ident_backoff_ns;
    int root = read_pid_file(d->o->workdir, DP_RESTORED_PID_NAME);
    if (root <= 0)
        return;
    int pids[4096];
    int n = collect_tree(root, pids, (int)DP_ARRAY_LEN(pids));
    struct dp_probe_ops ops = {.pump = probe_pump, .addr = probe_addr, .arm = probe_arm, .disarm = probe_disarm,
                               .arg = d};
    int probed = 0;
    for (int i = 0; i < n && unplaced > 0 && probed < 16; i++) {
        int known = 0;
        for (struct lz_task *t = d->tasks; t && !known; t = t->next)
            known = t->alive && t->host_pid == pids[i];
        if (known)
            continue;
        struct dp_err err = {{0}};
        probed++;
        d->ev.busy = 1; /* the pump must not start a batch */
        d->ev.cur = NULL;
        int id = dp_probe_process(pids[i], &ops, 4, &err);
        d->ev.busy = 0;
        if (id == -1) {
            dp_error("process %d: probing which userfaultfd is its own failed (%s); its threads are in an "
                     "unknown ptrace state, so it is killed rather than left corrupt", pids[i], err.msg);
            kill(pids[i], SIGKILL);
            continue;
        }
        struct lz_task *t = id > 0 ? task_by_id(d, id) : NULL;
        if (!t || t->host_pid)
            continue; /* no lazy memory seen there, or it shares a placed task's mm (vfork) */
        ev_place(d, t, pids[i]);
        d->ev.children_placed++;
        unplaced--;
        d->ev.ident_backoff_ns = 0;
        d->ev.ident_next_ns = 0;
        dp_info("forked task %d (child of task %d) is process %d: its pages can be evicted", t->id, t->parent_id,
                pids[i]);
    }
}

static uint64_t ns_inode(int pid, const char *ns)
{
    char path[64];
    struct stat st;
    snprintf(path, sizeof(path), "/proc/%d/ns/%s", pid, ns);
    return stat(path, &st) == 0 ? (uint64_t)st.st_ino : 0;
}

/* Before criu has written restored.pid (the tasks already run once the
 * restore finished): a process in our network namespace, in a pid namespace
 * below ours, whose inner pid is the announced one. Taken only when exactly
 * one process matches. */
static void ev_find_host_pids_early(struct dp_lazyd *d)
{
    uint64_t mynet = ns_inode(getpid(), "net"), mypid = ns_inode(getpid(), "pid");
    for (struct lz_task *t = d->tasks; t; t = t->next) {
        if (!t->alive || t->shown_pid <= 0 || t->host_pid)
            continue;
        DIR *dir = opendir("/proc");
        if (!dir)
            return;
        struct dirent *e;
        int found = 0, matches = 0;
        while ((e = readdir(dir))) {
            int p = atoi(e->d_name);
            if (p <= 0 || p == getpid() || ns_inode(p, "net") != mynet || ns_inode(p, "pid") == mypid)
                continue;
            if (dp_proc_inner_pid(p) == t->shown_pid) {
                found = p;
                matches++;
            }
        }
        closedir(dir);
        if (matches == 1)
            ev_place(d, t, found);
    }
}

/* Maps the pids CRIU announced (pids inside the restored pid namespace) to
 * pids in ours, walking the restored tree from WORKDIR/restored.pid. */
static void ev_find_host_pids(struct dp_lazyd *d)
{
    int root = read_pid_file(d->o->workdir, DP_RESTORED_PID_NAME);
    if (root <= 0) {
        ev_find_host_pids_early(d);
        return;
    }
    int pids[4096];
    int n = collect_tree(root, pids, (int)DP_ARRAY_LEN(pids));
    for (int i = 0; i < n; i++) {
        int inner = dp_proc_inner_pid(pids[i]);
        for (struct lz_task *t = d->tasks; t; t = t->next)
            if (t->alive && t->shown_pid > 0 && t->shown_pid == inner && !t->host_pid)
                ev_place(d, t, pids[i]);
    }
}

/* The inject pump: keep serving faults, fetch completions, write-back acks
 * and uffd events (FORK, REMOVE: our own zap's too) while threads stop or
 * run our call. Never the control socket or signals: they wait for the
 * batch to end (epoll is level-triggered). */
static void ev_pump_d(struct dp_lazyd *d)
{
    struct epoll_event evs[64];
    src_sync(d);
    int n = epoll_wait(d->ep, evs, (int)DP_ARRAY_LEN(evs), 0);
    int handled = 0;
    for (int i = 0; i < n; i++) {
        struct handler *h = evs[i].data.ptr;
        switch (h->type) {
        case H_LISTEN: handle_listen(d); handled++; break;
        case H_CRIU: handle_criu(d, h); handled++; break;
        case H_UFFD: handle_uffd(d, h->ptr); handled++; break;
        case H_SRC: d->o->src->ops->process(d->o->src); src_sync(d); handled++; break;
        case H_TIMER: handle_timer(d); handled++; break;
        default: break;
        }
    }
    if (!handled) {
        struct timespec ts = {0, 20000};
        nanosleep(&ts, NULL);
    }
}

static int ev_pump(void *arg)
{
    struct lz_task *t = arg;
    ev_pump_d(t->d);
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
    return dp_pagemap_present(t->host_pid, addr, len) == 1 ? 0 : -1;
}

static void ev_put_cb(void *cookie, int status, const char *errmsg)
{
    struct dp_lazyd *d = cookie;
    d->ev.put_wait--;
    if (status) {
        d->ev.put_status = status;
        dp_warn("write-back to %s failed: %s", d->o->src->desc, errmsg ? errmsg : strerror(-status));
    }
}

/* PUTs n pages (image addresses img[i], bytes at data[i]) and waits for the
 * server's durable acknowledgement, pumping meanwhile. 0 or -1. */
static int ev_put(struct dp_lazyd *d, struct lz_task *t, const uint64_t *img, const uint8_t *const *data, size_t n)
{
    struct dp_client *c = dp_pagesrc_remote_client(d->o->src);
    if (!c)
        return -1;
    if (d->ev.put_wait > 0) {
        d->ev.put_status = -EAGAIN;
        return -1; /* acks of a batch abandoned earlier: never wait for them with threads stopped */
    }
    const struct dp_hello_reply *lim = dp_client_limits(c);
    size_t max = lim && lim->max_put_pages ? lim->max_put_pages : EV_MAX_BATCH;
    if (max > EV_MAX_BATCH)
        max = EV_MAX_BATCH;
    d->ev.put_status = 0;
    uint64_t t0 = dp_now_ns();
    struct dp_put_range r[EV_MAX_BATCH];
    for (size_t i = 0; i < n;) {
        size_t k = 0;
        while (i < n && k < max) {
            r[k].pid = t->pid;
            r[k].count = 1;
            r[k].addr = img[i];
            r[k].data = data[i];
            k++, i++;
        }
        struct dp_err err = {{0}};
        if (!dp_client_submit_put(c, r, (uint32_t)k, ev_put_cb, d, &err)) {
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
        task_gone(d, t, "exited during an eviction");
    else
        t->host_pid = 0;
}

/* One stop of task t over its pages at run-time addresses addr[0..n)
 * (n <= EV_MAX_BATCH, sorted): drain its events, keep the pages still
 * RESIDENT with no fetch outstanding, read and hash them, write back the
 * modified ones (durable ack), then for eviction zap them (own REMOVE:
 * REMOTE) and remember them in the victim buffer; for sync only record the
 * new hashes. All inside one stop, so no write can fall between the read
 * and the zap. Returns the pages evicted/synced, -1 when the process is
 * gone or had to be killed (or, for sync, is still traced by criu).
 * *nwb: pages written back. */
static int ev_batch(struct dp_lazyd *d, struct lz_task *t, const uint64_t *addr, size_t n, int sync, size_t *nwb)
{
    static uint8_t buf[EV_MAX_BATCH * PG] __attribute__((aligned(PG)));
    uint64_t va[EV_MAX_BATCH], img[EV_MAX_BATCH];
    struct dp_page_hash hs[EV_MAX_BATCH], now_h[EV_MAX_BATCH];
    uint8_t dirty[EV_MAX_BATCH], always[EV_MAX_BATCH], keep[EV_MAX_BATCH];
    struct dp_err err = {{0}};
    *nwb = 0;
    if (!t->inj_open) {
        struct dp_inject_ops ops = {.pump = ev_pump, .ensure = ev_ensure, .arg = t, .exitkill = 1};
        if (dp_inject_open(&t->in, t->host_pid, &ops, &err) < 0) {
            if (dp_proc_exited(t->host_pid, t->host_start))
                ev_lost(d, t); /* it just exited: its pages go with it */
            else
                dp_warn("process %d (task %d): cannot prepare eviction: %s", (int)t->host_pid, t->id, err.msg);
            for (size_t i = 0; i < n && !sync; i++)
                dp_evict_cancel(&d->ev.pol, t->id, addr[i]);
            return 0;
        }
        t->inj_open = 1;
    }
    d->ev.busy = 1;
    d->ev.cur = t;
    uint64_t t0 = dp_now_ns();
    int src = dp_inject_stop(&t->in, &err);
    if (src == DP_INJECT_TRACED) {
        /* criu says "restore finished" before it detaches from the tree:
         * not yet (nothing was touched, never a kill); ev_maybe tries again
         * after its backoff, a sync reports the task as failed */
        dp_debug("task %d: %s", t->id, err.msg);
        for (size_t i = 0; i < n && !sync; i++)
            dp_evict_cancel(&d->ev.pol, t->id, addr[i]);
        d->ev.busy = 0;
        return sync ? -1 : 0;
    }
    if (src < 0)
        goto fatal;
    if (t->host_start && dp_proc_start_time(t->host_pid) != t->host_start) {
        /* the pid names another process now (ours exited, the pid was
         * reused before the exit probe saw it): leave it alone */
        dp_inject_resume(&t->in, 1, &err);
        dp_inject_close(&t->in);
        t->inj_open = 0;
        ev_lost(d, t);
        for (size_t i = 0; i < n && !sync; i++)
            dp_evict_cancel(&d->ev.pol, t->id, addr[i]);
        d->ev.busy = 0;
        return 0;
    }
    handle_uffd(d, t); /* drain: every event from before the stop is applied */
    if (!t->alive)
        goto fatal;
    /* A thread's rseq area must stay readable for the next injection: a
     * stopped thread (SIGSTOP, a debugger) never faults it back in, and an
     * absent one reads as "maybe inside a critical section" for good. */
    uint64_t rseq_pg[64];
    size_t nrseq = sync ? 0 : dp_inject_rseq_pages(&t->in, rseq_pg, 64);
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        struct dp_lazy_region *reg;
        uint8_t *pg = dp_lazymap_page(&t->map, addr[i], &reg);
        uint64_t im = pg ? reg->img + (addr[i] - reg->start) : 0;
        struct dp_pmap_entry *e = pg ? dp_pmap_find(&t->hash, 0, im) : NULL;
        int holds_rseq = 0;
        for (size_t k = 0; k < nrseq && !holds_rseq; k++)
            holds_rseq = rseq_pg[k] == addr[i];
        if (!pg || dp_pg_state(*pg) != DP_PG_RESIDENT || !e || (e->aux & EV_PUT_INFLIGHT) || find_req(t, im) ||
            holds_rseq || (!sync && ev_pinned(t, addr[i]))) { /* pinned after it was picked */
            if (!sync) {
                dp_evict_cancel(&d->ev.pol, t->id, addr[i]);
                d->ev.cancels++;
            }
            continue;
        }
        va[m] = addr[i];
        img[m] = im;
        hs[m].lo = e->value;
        hs[m].hi = e->value2;
        always[m] = (e->aux & EV_ALWAYS_DIRTY) != 0;
        m++;
    }
    if (m && dp_inject_read_pages(&t->in, va, m, buf) < 0) {
        dp_warn("pid %d: reading %zu pages to evict failed: %s; they stay", t->shown_pid, m, strerror(errno));
        for (size_t i = 0; i < m && !sync; i++)
            dp_evict_cancel(&d->ev.pol, t->id, va[i]);
        m = 0;
    }
    dp_dirty_check(d->ev.seed, buf, m, hs, dirty, now_h);
    uint64_t wimg[EV_MAX_BATCH];
    const uint8_t *wdata[EV_MAX_BATCH];
    size_t nd = 0;
    for (size_t i = 0; i < m; i++) {
        keep[i] = 1;
        if (always[i])
            dirty[i] = 1;
        if (dirty[i]) {
            wimg[nd] = img[i];
            wdata[nd++] = buf + i * PG;
        }
    }
    struct dp_client *cl = dp_pagesrc_remote_client(d->o->src);
    if (nd && !sync && !ev_shared(d, t) && cl && ev_resident(d) <= ev_high(d) + d->ev.batch) {
        /* within the slack: clean in the background, evict the clean ones now */
        struct ev_clean *c = calloc(1, sizeof(*c));
        struct dp_put_range r[EV_MAX_BATCH];
        const struct dp_hello_reply *lim = dp_client_limits(cl);
        size_t k = 0;
        if (c && lim && lim->max_put_pages >= nd) {
            c->d = d;
            c->task_id = t->id;
            for (size_t i = 0; i < m; i++) {
                if (!dirty[i])
                    continue;
                r[k].pid = t->pid;
                r[k].count = 1;
                r[k].addr = img[i];
                r[k].data = buf + i * PG;
                c->img[k] = img[i];
                c->h[k] = now_h[i];
                k++;
            }
            c->n = (uint32_t)k;
            c->t0 = dp_now_ns();
            struct dp_err perr = {{0}};
            if (dp_client_submit_put(cl, r, (uint32_t)k, ev_clean_cb, c, &perr)) {
                d->ev.clean_inflight++;
                d->ev.clean_requests++;
                for (size_t i = 0; i < m; i++) {
                    if (!dirty[i])
                        continue;
                    struct dp_pmap_entry *e = dp_pmap_find(&t->hash, 0, img[i]);
                    if (e)
                        e->aux |= EV_PUT_INFLIGHT;
                    keep[i] = 0;
                    dp_evict_cancel(&d->ev.pol, t->id, va[i]);
                    d->ev.cancels++;
                }
                nd = 0;
                c = NULL;
            }
        }
        free(c);
    }
    if (nd) {
        int ok = 0;
        if (ev_shared(d, t))
            d->ev.shared_skips += nd;
        else
            ok = ev_put(d, t, wimg, wdata, nd) == 0;
        if (!t->alive)
            goto fatal;
        if (!ok && !ev_shared(d, t)) {
            d->ev.wb_incomplete++;
            if (d->ev.put_status != -ETIMEDOUT && d->ev.put_status != -EAGAIN)
                d->ev.wb_errors++; /* refused; a timeout is counted in wb_aborts */
        }
        for (size_t i = 0; i < m; i++) {
            if (!dirty[i])
                continue;
            if (!ok) {
                /* an abandoned PUT may still land later: write it again next time, whatever the hash */
                struct dp_pmap_entry *e = dp_pmap_find(&t->hash, 0, img[i]);
                if (e)
                    e->aux |= EV_ALWAYS_DIRTY;
                keep[i] = 0;
                if (!sync) {
                    dp_evict_cancel(&d->ev.pol, t->id, va[i]);
                    d->ev.cancels++;
                }
                continue;
            }
            /* the server holds these bytes now */
            struct dp_pmap_entry *e = dp_pmap_find(&t->hash, 0, img[i]);
            if (e) {
                e->value = now_h[i].lo;
                e->value2 = now_h[i].hi;
                e->aux = 0;
            }
            (*nwb)++;
        }
        if (ok) {
            d->ev.writebacks += nd;
            t->writebacks += nd;
        }
    }
    int count = 0;
    if (sync) {
        for (size_t i = 0; i < m; i++)
            count += keep[i];
    } else {
        /* coalesce adjacent victims into zap ranges */
        struct dp_zap_range zr[EV_MAX_BATCH];
        struct dp_lazy_range own[EV_MAX_BATCH];
        size_t first[EV_MAX_BATCH], nz = 0;
        for (size_t i = 0; i < m; i++) {
            if (!keep[i])
                continue;
            if (nz && zr[nz - 1].start + zr[nz - 1].len == va[i] && keep[i - 1]) {
                zr[nz - 1].len += PG;
            } else {
                zr[nz].start = va[i];
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
        int zrc = nz ? dp_inject_zap(&t->in, zr, nz, &err) : 0;
        t->ownzap = NULL;
        t->n_ownzap = 0;
        if (zrc < 0 || !t->alive)
            goto fatal;
        uint64_t now = dp_now_ns();
        for (size_t k = 0; k < nz; k++) {
            for (size_t j = 0; j < zr[k].len / PG; j++) {
                size_t i = first[k] + j;
                if (!zr[k].done) {
                    dp_evict_cancel(&d->ev.pol, t->id, va[i]);
                    d->ev.cancels++;
                    continue;
                }
                uint8_t *pg = dp_lazymap_page(&t->map, va[i], NULL);
                if (pg && dp_pg_state(*pg) == DP_PG_RESIDENT)
                    dp_lazymap_set(&t->map, pg, DP_PG_REMOTE, 0); /* its REMOVE was not seen */
                dp_evict_done(&d->ev.pol, t->id, va[i], now);
                dp_vbuf_put(&d->ev.vb, t->id, va[i], buf + i * PG);
                count++;
            }
        }
        d->ev.evictions += (uint64_t)count;
        t->evictions += (uint64_t)count;
    }
    if (dp_inject_resume(&t->in, 1, &err) < 0)
        goto fatal;
    dp_hist_add(&d->ev.stop, dp_now_ns() - t0);
    d->ev.batches++;
    d->ev.busy = 0;
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

static uint64_t ev_resident(const struct dp_lazyd *d)
{
    uint64_t n = 0;
    for (const struct lz_task *t = d->tasks; t; t = t->next)
        if (t->alive)
            n += dp_lazymap_pages(&t->map, DP_PG_RESIDENT);
    return n;
}

static uint64_t ev_high(const struct dp_lazyd *d)
{
    uint64_t h = d->o->budget_pages;
    if (!h)
        h = (uint64_t)(d->o->budget_frac * (double)d->ev.lazy_pages);
    return h ? h : 1;
}

static uint64_t ev_low(const struct dp_lazyd *d)
{
    uint64_t h = ev_high(d);
    return h > 2ull * d->ev.batch ? h - d->ev.batch : h / 2;
}

static int cmp_key(const void *a, const void *b)
{
    const struct dp_evict_key *x = a, *y = b;
    if (x->owner != y->owner)
        return x->owner < y->owner ? -1 : 1;
    return x->addr < y->addr ? -1 : x->addr > y->addr;
}

/* Called after every loop turn: one batch when above the high watermark
 * (and until the low one is reached), so faults are served between batches. */
static void ev_maybe(struct dp_lazyd *d)
{
    if (!d->ev.on || d->ev.busy || !d->finished || d->ev.put_wait > 0) /* no stop while acks are owed */
        return;
    uint64_t res = ev_resident(d);
    if (res > d->ev.max_resident)
        d->ev.max_resident = res;
    uint64_t now = dp_now_ns();
    if (now < d->ev.backoff_until)
        return;
    uint64_t high = ev_high(d), low = ev_low(d);
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
            ev_find_host_pids(d);
            break;
        }
    ev_identify(d); /* forked children without a process yet (rate-limited) */
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
        struct lz_task *t = task_by_id(d, keys[i].owner);
        if (!t || !t->host_pid) {
            for (size_t k = i; k < j; k++)
                dp_evict_cancel(&d->ev.pol, keys[k].owner, keys[k].addr);
        } else {
            size_t nwb;
            int c = ev_batch(d, t, addr, j - i, 0, &nwb);
            done += c > 0 ? c : 0;
        }
        i = j;
    }
    if (!done)
        d->ev.backoff_until = dp_now_ns() + 10 * 1000000ull; /* nothing evictable now */
}

void dp_lazyd_sync(struct dp_lazyd *d, struct dp_sbuf *b)
{
    uint64_t t0 = dp_now_ns(), pages = 0, written = 0;
    int tasks = 0, skipped = 0, failed = 0;
    if (!d->ev.on) {
        dp_sbuf_printf(b, "{\"error\": \"this restore has no --budget: nothing is tracked for write-back\"}\n");
        return;
    }
    ev_find_host_pids(d);
    while (d->ev.clean_inflight > 0) /* their pages are skipped while in flight */
        ev_pump_d(d);
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

/* The "budget" member: eviction and write-back counters, or null without
 * --budget. */
static json_t *ev_json(struct dp_lazyd *d)
{
    if (!d->ev.on)
        return json_null();
    struct dp_evict_stats *p = &d->ev.pol.st;
    return json_pack(
        "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
        "s:I, s:I, s:I, s:I, s:o, s:o, s:o, s:o}",
        "budget_bytes", (json_int_t)(ev_high(d) * PG), "low_watermark_bytes", (json_int_t)(ev_low(d) * PG),
        "batch_pages", (json_int_t)d->ev.batch, "resident_bytes", (json_int_t)(ev_resident(d) * PG), "max_resident_bytes",
        (json_int_t)(d->ev.max_resident * PG), "batches", (json_int_t)d->ev.batches, "evictions",
        (json_int_t)d->ev.evictions, "writebacks", (json_int_t)(d->ev.writebacks + d->ev.cleaned),
        "writeback_requests", (json_int_t)d->ev.wb_requests, "writeback_errors", (json_int_t)d->ev.wb_errors,
        "writeback_aborts", (json_int_t)d->ev.wb_aborts, "cancels", (json_int_t)d->ev.cancels, "refaults",
        (json_int_t)d->ev.refaults, "victim_buffer_hits", (json_int_t)d->ev.vb_hits, "victim_buffer_bytes",
        (json_int_t)d->ev.vb.bytes, "shared_skips", (json_int_t)d->ev.shared_skips, "syncs",
        (json_int_t)d->ev.syncs, "sync_pages_written", (json_int_t)d->ev.sync_pages, "background_writebacks",
        (json_int_t)d->ev.cleaned, "background_requests", (json_int_t)d->ev.clean_requests, "protected_pages",
        (json_int_t)p->protected_, "probation_pages", (json_int_t)p->probation, "ghosts", (json_int_t)p->ghosts,
        "children_placed", (json_int_t)d->ev.children_placed, "probes", (json_int_t)d->ev.probes, "stop",
        dp_hist_jobj(&d->ev.stop), "stop_buckets_us", dp_hist_jbuckets(&d->ev.stop), "writeback_latency",
        dp_hist_jobj(&d->ev.wb_lat), "writeback_latency_buckets_us", dp_hist_jbuckets(&d->ev.wb_lat));
}

static int ev_init(struct dp_lazyd *d)
{
    const struct dp_lazyd_opts *o = d->o;
    if (!o->budget_pages && o->budget_frac <= 0)
        return 0;
    if (!dp_pagesrc_remote_client(o->src)) {
        dp_error("--budget needs a page server that takes write-backs (--source); %s cannot hold "
                 "modified pages", o->src->desc);
        return -1;
    }
    d->ev.on = 1;
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
    dp_vbuf_init(&d->ev.vb, o->vbuf_bytes ? o->vbuf_bytes : 8ull << 20);
    return 0;
}

static void ev_free(struct dp_lazyd *d)
{
    if (!d->ev.on)
        return;
    dp_evict_free(&d->ev.pol);
    dp_vbuf_free(&d->ev.vb);
    d->ev.on = 0;
}

/* ---- setup and loop ---- */

static int listen_unix(const char *path, struct dp_err *err)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sun.sun_path)) {
        dp_err_set(err, "socket path %s is longer than %zu bytes: use a shorter --workdir", path,
                   sizeof(sun.sun_path) - 1);
        return -1;
    }
    strcpy(sun.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        dp_err_set(err, "socket: %s", strerror(errno));
        return -1;
    }
    unlink(path);
    if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 || listen(fd, 16) < 0) {
        dp_err_set(err, "cannot listen on %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

int dp_lazyd_listen(const char *workdir, struct dp_err *err)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", workdir, DP_LAZY_SOCK_NAME);
    return listen_unix(path, err);
}

/* Keeps epoll on the guard's current socket (it changes when a dead guard
 * is replaced); the guard never sends, so any event there is its death. */
static void guard_sync(struct dp_lazyd *d)
{
    int fd = dp_guard_fd(&d->guard);
    if (fd == d->guard_h.fd && d->guard_gen == d->guard.gen)
        return;
    if (d->guard_h.fd >= 0)
        epoll_ctl(d->ep, EPOLL_CTL_DEL, d->guard_h.fd, NULL); /* may be closed already */
    d->guard_h.fd = -1;
    d->guard_gen = d->guard.gen;
    if (fd >= 0 && ep_add(d, &d->guard_h, fd, H_GUARD, NULL) < 0)
        dp_warn("epoll_ctl on the guard's socket: %s (its death would go unnoticed until the next hand-over)",
                strerror(errno));
}

/* Closes what the daemon opened and frees what is safe to free. */
static void cleanup(struct dp_lazyd *d)
{
    /* Before the uffds close below: with a task left the guard must stop
     * the tree, without one it just exits. */
    dp_guard_end(&d->guard, tasks_alive(d) == 0);
    if (d->listen_h.fd >= 0) {
        close(d->listen_h.fd);
        unlink(d->sock_path);
    }
    if (d->ctl_h.fd >= 0) {
        close(d->ctl_h.fd);
        unlink(d->ctl_path);
    }
    if (d->timer_h.fd >= 0)
        close(d->timer_h.fd);
    if (d->sig_h.fd >= 0)
        close(d->sig_h.fd);
    dp_metrics_http_close(d->metrics);
    d->metrics = NULL;
    /* Tasks whose requests the source still owns: the source is closed by
     * the caller after us, so free only what is safe. d->tasks keeps exactly
     * the tasks not freed: a write-back callback still to come (the lease
     * release after the daemon, or the source's close) looks tasks up there. */
    struct lz_task *kept = NULL;
    for (struct lz_task *t = d->tasks, *n; t; t = n) {
        n = t->next;
        if (t->alive)
            task_gone(d, t, "daemon exit");
        free(t->ownzap);
        t->ownzap = NULL;
        if (t->refs == 0) {
            while (t->reqs) {
                struct lz_req *r = t->reqs;
                req_unlink(r);
                req_free(r);
            }
            free(t);
        } else {
            /* completed by the source after d is gone: keep req_free away from d->replay */
            for (struct lz_req *r = t->reqs; r; r = r->next)
                if (r->kind == K_REPLAY)
                    r->kind = K_PREFETCH;
            t->next = kept;
            kept = t;
        }
    }
    d->tasks = kept;
    if (d->ep >= 0)
        close(d->ep);
    dp_replay_free(&d->replay);
    dp_trace_free(&d->trace);
    if (d->staging) {
        dp_vbuf_free(&d->stage);
        d->staging = 0;
    }
    /* write-back callbacks still to come (the source is closed after us and
     * completes them with an error) use d: leave it, the process exits */
    if (d->ev.clean_inflight > 0 || d->ev.put_wait > 0)
        return;
    ev_free(d);
    free(d);
}

struct dp_lazyd *dp_lazyd_start(const struct dp_lazyd_opts *o)
{
    struct dp_lazyd *d = calloc(1, sizeof(*d));
    struct dp_err err = {{0}};
    if (!d)
        return NULL;
    d->o = o;
    d->start_ns = dp_now_ns();
    d->last_bg_ns = d->start_ns;
    d->listen_h.fd = d->ctl_h.fd = d->timer_h.fd = d->sig_h.fd = d->src_h.fd = d->guard.sk = -1;
    d->guard_h.fd = -1;
    if (o->replay) {
        struct dp_err rerr = {{0}};
        if (dp_replay_init(&d->replay, o->replay, o->replay_batch, o->replay_window, &rerr) < 0)
            dp_warn("no hot-set replay: %s", rerr.msg);
        else
            d->replaying = 1;
    }
    if (o->record_s > 0) {
        dp_trace_init(&d->trace, 0, o->record_s); /* the clock starts at the first fault */
        d->tracing = 1;
    }
    snprintf(d->sock_path, sizeof(d->sock_path), "%s/%s", o->workdir, DP_LAZY_SOCK_NAME);
    snprintf(d->ctl_path, sizeof(d->ctl_path), "%s/%s", o->workdir, DP_CONTROL_SOCK_NAME);
    signal(SIGPIPE, SIG_IGN);

    d->ep = epoll_create1(EPOLL_CLOEXEC);
    int lfd = o->listen_fd >= 0 ? o->listen_fd : listen_unix(d->sock_path, &err);
    int cfd = lfd >= 0 ? listen_unix(d->ctl_path, &err) : -1;
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    sigprocmask(SIG_BLOCK, &sigs, NULL);
    int gfd = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
    d->listen_h.fd = lfd;
    d->ctl_h.fd = cfd;
    d->timer_h.fd = tfd;
    d->sig_h.fd = gfd;
    if (d->ep < 0 || lfd < 0 || cfd < 0 || tfd < 0 || gfd < 0) {
        dp_error("lazy-pages daemon setup failed: %s", err.msg[0] ? err.msg : strerror(errno));
        cleanup(d);
        return NULL;
    }
    dp_set_nonblock(lfd);
    struct itimerspec its = {.it_interval = {0, (long)TICK_NS}, .it_value = {0, (long)TICK_NS}};
    timerfd_settime(tfd, 0, &its, NULL);
    if (ep_add(d, &d->listen_h, lfd, H_LISTEN, NULL) < 0 || ep_add(d, &d->ctl_h, cfd, H_CTL_LISTEN, NULL) < 0 ||
        ep_add(d, &d->timer_h, tfd, H_TIMER, NULL) < 0 || ep_add(d, &d->sig_h, gfd, H_SIGNAL, NULL) < 0) {
        dp_error("epoll_ctl: %s", strerror(errno));
        cleanup(d);
        return NULL;
    }
    if (ev_init(d) < 0) {
        cleanup(d);
        return NULL;
    }
    if (o->metrics_addr) {
        d->metrics = dp_metrics_http_open(o->metrics_addr, metrics_render, d, &err);
        if (!d->metrics || ep_add(d, &d->metrics_h, dp_metrics_http_fd(d->metrics), H_METRICS, NULL) < 0) {
            dp_error("%s", d->metrics ? strerror(errno) : err.msg);
            cleanup(d);
            return NULL;
        }
    }
    if (o->replay_stage && d->replaying) {
        if (d->ev.on) {
            dp_error("--hotset-mode stage keeps the replayed pages in the daemon until they are used, outside "
                     "any budget: it does not combine with --budget; measure without --budget");
            cleanup(d);
            return NULL;
        }
        dp_vbuf_init(&d->stage, UINT64_MAX); /* bounded by the hot set */
        d->staging = 1;
    }
    /* Before criu can connect: no uffd may ever be held by us alone. */
    if (dp_guard_start(&d->guard, &err) < 0) {
        dp_error("cannot start the guard process (%s): refusing to serve, since a crash of this "
                 "daemon could then expose the restored tree's memory as zeros", err.msg);
        cleanup(d);
        return NULL;
    }
    guard_sync(d);
    if (o->ready_fd >= 0) {
        char one = 1;
        if (write(o->ready_fd, &one, 1) < 0)
            dp_warn("cannot signal readiness: %s", strerror(errno));
        close(o->ready_fd);
    }
    char pf[32];
    dp_prefetch_format(&o->prefetch, pf, sizeof(pf));
    dp_info("lazy-pages daemon on %s, pages from %s, prefetch %s%s", d->sock_path, o->src->desc, pf,
            o->background_rate ? ", background copy on" : "");
    return d;
}

int dp_lazyd_step(struct dp_lazyd *d, int timeout_ms)
{
    if ((d->failed || d->stop) && !tasks_alive(d))
        return 0;
    if (d->finished && d->conns == 0 && !tasks_alive(d))
        return 0;
    struct epoll_event evs[64];
    src_sync(d);
    int n = epoll_wait(d->ep, evs, (int)DP_ARRAY_LEN(evs), 0);
    /* A thread is blocked on a page whose reply is a round trip away: waking
     * from epoll (an idle vCPU here) costs more than polling for that long. */
    while (n == 0 && timeout_ms != 0 && dp_now_ns() < d->spin_until_ns)
        n = epoll_wait(d->ep, evs, (int)DP_ARRAY_LEN(evs), 0);
    if (n == 0 && timeout_ms != 0)
        n = epoll_wait(d->ep, evs, (int)DP_ARRAY_LEN(evs), timeout_ms);
    if (n < 0 && errno != EINTR) {
        dp_error("epoll_wait: %s", strerror(errno));
        d->failed = 1;
        return -1;
    }
    for (int i = 0; i < n; i++) {
        struct handler *h = evs[i].data.ptr;
        switch (h->type) {
        case H_LISTEN: handle_listen(d); break;
        case H_CRIU: handle_criu(d, h); break;
        case H_UFFD:
            dp_log_context(((struct lz_task *)h->ptr)->id, -1);
            handle_uffd(d, h->ptr);
            dp_log_context(-1, -1);
            break;
        case H_SRC: d->o->src->ops->process(d->o->src); src_sync(d); break;
        case H_CTL_LISTEN: handle_ctl_listen(d); break;
        case H_CTL_CLIENT: handle_ctl_client(d, h); break;
        case H_TIMER: handle_timer(d); break;
        case H_SIGNAL: handle_signal(d); break;
        case H_GUARD: dp_guard_check(&d->guard); guard_sync(d); break;
        case H_METRICS: dp_metrics_http_handle(d->metrics); break;
        }
    }
    replay_pump(d);
    return 1;
}

int dp_lazyd_finish(struct dp_lazyd *d)
{
    const struct dp_lazyd_opts *o = d->o;
    int rc = d->failed ? 1 : 0;
    trace_flush(d, dp_now_ns(), 1);
    struct dp_sbuf b = {0};
    stats_json(d, &b);
    if (b.p) {
        /* Keep the final stats next to the sockets: `stats` still works. */
        char path[4300];
        snprintf(path, sizeof(path), "%s/stats-final.json", o->workdir);
        FILE *f = dp_fopen_private(path);
        if (f) {
            fwrite(b.p, 1, b.len, f);
            fclose(f);
        }
    }
    dp_sbuf_free(&b);
    struct dp_lazy_counters tot;
    memset(&tot, 0, sizeof(tot));
    for (struct lz_task *t = d->tasks; t; t = t->next)
        dp_counters_add(&tot, &t->c);
    dp_info("all tasks exited: %llu faults, %llu pages fetched, %llu prefetched, %llu zero pages",
            (unsigned long long)tot.faults, (unsigned long long)tot.pages_fetched,
            (unsigned long long)tot.pages_prefetched, (unsigned long long)tot.zero_pages);
    cleanup(d);
    return rc;
}

int dp_lazyd_run(const struct dp_lazyd_opts *o)
{
    struct dp_lazyd *d = dp_lazyd_start(o);
    if (!d)
        return 1;
    while (dp_lazyd_step(d, d->ev.active ? 0 : 1000) > 0)
        ev_maybe(d);
    return dp_lazyd_finish(d);
}

static struct lz_task *task_by_id(struct dp_lazyd *d, int id)
{
    for (struct lz_task *t = d->tasks; t; t = t->next)
        if (t->id == id && t->alive)
            return t;
    return NULL;
}

int dp_lazyd_own_zap_begin(struct dp_lazyd *d, int task_id, const struct dp_lazy_range *r, size_t n)
{
    struct lz_task *t = task_by_id(d, task_id);
    if (!t)
        return -1;
    struct dp_lazy_range *copy = n ? malloc(n * sizeof(*copy)) : NULL;
    if (n && !copy)
        return -1;
    if (n)
        memcpy(copy, r, n * sizeof(*copy));
    free(t->ownzap);
    t->ownzap = copy;
    t->n_ownzap = n;
    return 0;
}

void dp_lazyd_own_zap_end(struct dp_lazyd *d, int task_id)
{
    struct lz_task *t = task_by_id(d, task_id);
    if (!t)
        return;
    free(t->ownzap);
    t->ownzap = NULL;
    t->n_ownzap = 0;
}

struct dp_lazymap *dp_lazyd_task_map(struct dp_lazyd *d, int task_id)
{
    struct lz_task *t = task_by_id(d, task_id);
    return t ? &t->map : NULL;
}

int dp_lazyd_task_uffd(struct dp_lazyd *d, int task_id)
{
    struct lz_task *t = task_by_id(d, task_id);
    return t ? t->uffd : -1;
}

char *dp_lazyd_control(const char *workdir, const char *cmd, struct dp_err *err)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", workdir, DP_CONTROL_SOCK_NAME);
    int sk = dp_lazysock_connect(path);
    if (sk < 0) {
        dp_err_set(err, "cannot reach the lazy-pages daemon at %s: %s (is `distriproc restore` running "
                   "with --workdir %s?)", path, strerror(-sk), workdir);
        return NULL;
    }
    /* a sync writes back everything modified: it may take a while */
    struct timeval tv = {.tv_sec = strcmp(cmd, "sync") ? 5 : 600};
    setsockopt(sk, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    char line[160];
    snprintf(line, sizeof(line), "%s\n", cmd);
    if (dp_write_full(sk, line, strlen(line))) {
        dp_err_set(err, "sending to %s: %s", path, strerror(errno));
        close(sk);
        return NULL;
    }
    struct dp_sbuf b = {0};
    char chunk[8192];
    for (;;) {
        ssize_t n = read(sk, chunk, sizeof(chunk));
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0) {
            dp_err_set(err, "reading from %s: %s", path, strerror(errno));
            dp_sbuf_free(&b);
            close(sk);
            return NULL;
        }
        if (n == 0)
            break;
        dp_sbuf_printf(&b, "%.*s", (int)n, chunk);
    }
    close(sk);
    if (b.oom || !b.p) {
        dp_err_set(err, "empty reply from %s", path);
        dp_sbuf_free(&b);
        return NULL;
    }
    return b.p;
}
