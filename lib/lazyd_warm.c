/* lazyd_warm: bringing pages in before a fault asks (docs/hotset.md): the
 * hot-set replay (install or stage mode), the first-touch trace for the
 * next restore, and the warm-up (issue 16: lib/lazyd_warmup.h plans and
 * paces it; its table of operations on the tasks is here). Each is driven
 * from the daemon's loop and fetches through the fault room's requests. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "lazyd_int.h"

#define WU_LANE_CHUNK_PAGES 16u /* 64 KiB warm-up requests on the bulk lane */

/* ==== hot-set replay ==== */

/* The live task restored as checkpoint pid (not a forked child), or NULL. */
static struct lz_task *original_task(struct dp_lazyd *d, int32_t pid)
{
    struct lz_task *t = d->tasks;
    while (t && !(t->alive && t->pid == pid && t->shown_pid > 0))
        t = t->next;
    return t;
}

/* The REMOTE pages of checkpoint range [img, +n) of t go in flight as kind;
 * returns how many. */
static int64_t fetch_range(struct dp_lazyd *d, struct lz_task *t, uint64_t img, uint32_t n, int kind)
{
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
        sent += lz_submit_remote_runs(d, t, reg, a, cnt, kind);
        i += cnt;
    }
    return (int64_t)sent;
}

/* dp_replay_fetch_fn: the REMOTE pages of checkpoint range [img, +n) of the
 * original task pid (not a forked child) become in flight. */
static int64_t replay_fetch(void *ctx, int32_t pid, uint64_t img, uint32_t n)
{
    struct dp_lazyd *d = ctx;
    struct lz_task *t = original_task(d, pid);
    return t ? fetch_range(d, t, img, n, K_REPLAY) : -1;
}

/* After the restore finished, the hot set is fetched in windows; the end
 * is logged once. */
void lz_replay_pump(struct dp_lazyd *d)
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

/* ==== stage mode ==== */

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
void lz_stage_pages(struct dp_lazyd *d, struct lz_req *r)
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
void lz_stage_drop(struct dp_lazyd *d, struct lz_task *t, uint64_t start, uint64_t end, int expired)
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

/* A fault on a staged page: install the replay's copy (a replay hit). No
 * fetch can be outstanding for it: a staged page is never submitted, and
 * install() copies only pages in flight. 1 = served (or retried: on EAGAIN
 * the copy goes back and the thread faults again once the pending event has
 * been read), 0 = fetch it instead. */
int lz_stage_install(struct dp_lazyd *d, struct lz_task *t, struct dp_lazy_region *reg, uint8_t *pg,
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
    int got = lz_local_copy(d, t, pg, page, img, buf, t0, &rc);
    if (got > 0)
        dp_replay_hit(&d->replay, 0, t0);
    if (got != 0)
        return 1;
    enum dp_uffd_outcome oc = dp_uffd_outcome(rc);
    if ((oc == DP_UFFD_RETRY || oc == DP_UFFD_UNMAPPED) && dp_vbuf_put(&d->stage, t->id, img, buf) == 0) {
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
void lz_stage_miss(struct dp_lazyd *d)
{
    d->replay.st.misses++;
    if (d->replaying)
        d->replay.st.misses_replaying++;
}

/* ==== first-touch trace ==== */

/* A first touch of a page with data: part of the working set. */
void lz_trace_touch(struct dp_lazyd *d, struct lz_task *t, uint64_t img, uint64_t now)
{
    if (!d->tracing)
        return;
    if (d->trace.start_ns == 0)
        d->trace.start_ns = now;
    if (dp_trace_note(&d->trace, t->pid, img, now) > 0)
        d->trace_pages++;
}

/* Hands the trace to the sink once: at the end of its window, or at exit. */
void lz_trace_flush(struct dp_lazyd *d, uint64_t now, int at_exit)
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

/* ==== warm-up (issue 16) ==== */

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

/* dp_lzw_io.fetch: the remote pages of [img, +n) of task id go in flight as
 * warm-up; pages submitted, -1 when the task is gone. */
static int64_t wu_fetch(void *ctx, int task, uint64_t img, uint32_t n)
{
    struct dp_lazyd *d = ctx;
    struct lz_task *t = lz_task_by_id(d, task);
    if (!t || !t->alive)
        return -1;
    return fetch_range(d, t, img, n, K_BACKGROUND);
}

/* dp_lzw_io.each_range: every lazy range of every live task. */
static void wu_each_range(void *ctx, void (*add)(void *arg, int task, uint64_t img, uint64_t npages), void *arg)
{
    struct dp_lazyd *d = ctx;
    for (struct lz_task *t = d->tasks; t; t = t->next)
        for (size_t i = 0; t->alive && i < t->map.n; i++)
            add(arg, t->id, t->map.r[i].img, (t->map.r[i].end - t->map.r[i].start) / PG);
}

/* dp_lzw_io.task_of_pid: the hot set names checkpoint pids. */
static int wu_task_of_pid(void *ctx, int32_t pid)
{
    struct dp_lazyd *d = ctx;
    struct lz_task *t = original_task(d, pid);
    return t ? t->id : -1;
}

/* dp_lzw_io.remote_pages: what is not here yet. */
static uint64_t wu_remote(void *ctx)
{
    const struct dp_lazyd *d = ctx;
    uint64_t n = 0;
    for (const struct lz_task *t = d->tasks; t; t = t->next)
        if (t->alive)
            n += dp_lazymap_pages(&t->map, DP_PG_REMOTE) + dp_lazymap_pages(&t->map, DP_PG_INFLIGHT);
    return n;
}

/* dp_lzw_io.used_pages: resident plus in flight, as a budget counts them. */
static uint64_t wu_used(void *ctx)
{
    const struct dp_lazyd *d = ctx;
    uint64_t n = lz_ev_resident(d);
    for (const struct lz_task *t = d->tasks; t; t = t->next)
        if (t->alive)
            n += dp_lazymap_pages(&t->map, DP_PG_INFLIGHT);
    return n;
}

/* dp_lzw_io.budget_pages: the budget's high watermark, 0 without one. */
static uint64_t wu_budget(void *ctx)
{
    const struct dp_lazyd *d = ctx;
    return d->ev.on ? lz_ev_high(d) : 0;
}

/* dp_lzw_io.all_resident. */
static void wu_all_resident(void *ctx)
{
    all_resident(ctx);
}

/* Sets the warm-up up: --warmup, or the older --background-fetch RATE alone
 * (warm everything, at most RATE); never with stage mode (its hit rate
 * would count the warm-up's pages). */
void lz_warmup_init(struct dp_lazyd *d)
{
    const struct dp_lazyd_opts *o = d->o;
    struct dp_lzw_opts wo = {.mode = (enum dp_warmup_mode)o->warmup, .rate_cap = o->background_rate,
                             .order = o->warmup_order};
    if (wo.mode == DP_WARMUP_NONE && o->background_rate)
        wo.mode = DP_WARMUP_ALL;
    if (wo.mode != DP_WARMUP_NONE && d->staging) {
        dp_warn("no warm-up with --hotset-mode stage: it measures the replay alone");
        wo.mode = DP_WARMUP_NONE;
    }
    /* Its own connection (the source's bulk lane), unless told
     * DISTRIPROC_WARMUP_LANE=shared (to measure one against the other) or
     * under a budget: there a page written back on the first connection
     * must never be read back older on another one. */
    const char *lane = getenv("DISTRIPROC_WARMUP_LANE");
    d->bulk_lane = !(lane && strcmp(lane, "shared") == 0) && !o->budget_pages && !(o->budget_frac > 0) &&
                   o->src->ops->bulk_fd;
    wo.own_lane = d->bulk_lane;
    /* On its own lane nothing of it waits in the faults' socket: bigger
     * requests cost less per page (daemon, server, crypto, copies); the
     * controller shrinks them where faults still wait (a FIFO link). */
    wo.chunk_pages = d->bulk_lane ? WU_LANE_CHUNK_PAGES : 0;
    struct dp_lzw_io io = {.ctx = d, .fetch = wu_fetch, .each_range = wu_each_range, .task_of_pid = wu_task_of_pid,
                           .remote_pages = wu_remote, .used_pages = wu_used, .budget_pages = wu_budget,
                           .all_resident = wu_all_resident};
    dp_lzw_init(&d->wu, &wo, &io, d->start_ns);
}

/* Once the restore finished and any hot-set replay is done: plan, then keep
 * the window full (every loop turn, so a completion is refilled at once). */
void lz_warmup_step(struct dp_lazyd *d)
{
    uint64_t now = dp_now_ns();
    if (d->wu.state == DP_LZW_WAITING && d->finished && !d->replaying)
        dp_lzw_begin(&d->wu, now);
    dp_lzw_pump(&d->wu, now);
}
