/* lazyd_warmup: the daemon's warm-up glue (lib/lazyd_warmup.h). */
#include "lazyd_warmup.h"

#include <string.h>

#include "jsonout.h"
#include "metrics.h"
#include "util.h"

#define PG 4096ull
#define BUDGET_MARGIN_PAGES 512 /* 2 MiB under the budget stay free for faults */
#define PUMP_MAX_REQ 256        /* bounded work per pump */
#define SWEEP_IDLE_NS (100 * 1000000ull) /* between sweeps that found nothing to send */

/* ---- set-up ---- */

/* The controller afresh, with the requests' size of the options. */
static void ctl_start(struct dp_lzw *w, uint64_t now_ns)
{
    dp_warmup_ctl_init(&w->ctl, w->o.rate_cap, now_ns);
    if (w->o.chunk_pages)
        dp_warmup_ctl_chunk(&w->ctl, w->o.chunk_pages);
}

/* Copies the options and the daemon's operations; nothing runs before begin. */
void dp_lzw_init(struct dp_lzw *w, const struct dp_lzw_opts *o, const struct dp_lzw_io *io, uint64_t now_ns)
{
    memset(w, 0, sizeof(*w));
    w->o = *o;
    w->io = *io;
    w->restore_ns = now_ns;
    dp_warmup_plan_init(&w->plan);
    ctl_start(w, now_ns);
    w->state = o->mode == DP_WARMUP_NONE ? DP_LZW_OFF : DP_LZW_WAITING;
}

/* The plan is the only memory it owns. */
void dp_lzw_free(struct dp_lzw *w)
{
    dp_warmup_plan_free(&w->plan);
}

/* each_range's callback: tier 2 of the plan. */
static void add_rest(void *arg, int task, uint64_t img, uint64_t npages)
{
    struct dp_lzw *w = arg;
    if (dp_warmup_plan_add(&w->plan, task, DP_WU_TIER_REST, 0, img, npages) < 0)
        dp_warn("warm-up: cannot plan 0x%llx (+%llu pages) of task %d (out of memory); it stays lazy",
                (unsigned long long)img, (unsigned long long)npages, task);
}

/* The hot set's pids become the daemon's task ids through the io table. */
static int task_of(void *ctx, int32_t pid)
{
    const struct dp_lzw *w = ctx;
    return w->io.task_of_pid(w->io.ctx, pid);
}

/* Ends the warm-up with a reason said once in the log. */
static void finish(struct dp_lzw *w, uint64_t now_ns, const char *why)
{
    w->state = DP_LZW_DONE;
    w->done_ns = now_ns;
    w->done_why = why;
    char b[32];
    dp_format_bytes(w->pages * PG, b, sizeof(b));
    double s = (double)(now_ns - w->start_ns) / 1e9;
    dp_info("warm-up (%s) done in %.3f s: %s in %llu requests (%.1f MB/s); %s",
            dp_warmup_mode_name(w->o.mode), s, b, (unsigned long long)w->requests,
            s > 0 ? (double)(w->pages * PG) / s / 1e6 : 0.0, why);
}

/* Order: the hot set (trace first, then classification by heat), and in
 * mode all every range after it. */
void dp_lzw_begin(struct dp_lzw *w, uint64_t now_ns)
{
    if (w->state != DP_LZW_WAITING)
        return;
    if (w->o.order && dp_warmup_plan_add_hotset(&w->plan, w->o.order, task_of, w) < 0)
        dp_warn("warm-up: the hot set could not be planned (out of memory); warming in address order");
    if (w->o.mode == DP_WARMUP_ALL)
        w->io.each_range(w->io.ctx, add_rest, w);
    dp_warmup_plan_finish(&w->plan, w->o.mode == DP_WARMUP_ALL ? DP_WU_TIER_REST : DP_WU_TIER_HEAT);
    w->state = DP_LZW_RUNNING;
    w->start_ns = now_ns;
    ctl_start(w, now_ns);
    dp_info("warm-up (%s) started: %llu pages planned (%llu traced, %llu by heat, %llu the rest)%s",
            dp_warmup_mode_name(w->o.mode), (unsigned long long)dp_warmup_plan_left(&w->plan),
            (unsigned long long)w->plan.tier_pages[0], (unsigned long long)w->plan.tier_pages[1],
            (unsigned long long)w->plan.tier_pages[2], w->io.budget_pages(w->io.ctx) ? ", within the budget" : "");
}

/* ---- pumping ---- */

/* The plan is exhausted and nothing is in flight: in mode all, sweep again
 * for pages that were busy on the first pass (fault in flight, a fork's
 * child); done when nothing is remote. */
static void plan_end(struct dp_lzw *w, uint64_t now_ns)
{
    if (w->inflight_pages)
        return;
    if (w->o.mode != DP_WARMUP_ALL) {
        finish(w, now_ns, "every page of the hot set is resident or was fetched");
        return;
    }
    if (w->io.remote_pages(w->io.ctx) == 0) {
        w->all_here = 1;
        finish(w, now_ns, "every lazy page is resident: the source holds nothing more this restore needs");
        w->io.all_resident(w->io.ctx);
        return;
    }
    /* a sweep that found nothing to send (the remote pages are in flight for
     * faults): look again in SWEEP_IDLE_NS, not at every loop turn */
    if (w->sweeps && w->submitted_pages == w->sweep_start_pages) {
        if (!w->sweep_wait_ns) {
            w->sweep_wait_ns = now_ns + SWEEP_IDLE_NS;
            return;
        }
        if (now_ns < w->sweep_wait_ns)
            return;
    }
    w->sweep_wait_ns = 0;
    w->sweep_start_pages = w->submitted_pages;
    /* rebuild the rest from the live tasks (a child forked since has its own) */
    dp_warmup_plan_free(&w->plan);
    w->io.each_range(w->io.ctx, add_rest, w);
    dp_warmup_plan_finish(&w->plan, DP_WU_TIER_REST);
    w->sweeps++;
}

/* Sends chunks while the window, the cap and the budget allow; pages no
 * longer remote are skipped by the daemon's fetch (0 submitted). */
void dp_lzw_pump(struct dp_lzw *w, uint64_t now_ns)
{
    if (w->state != DP_LZW_RUNNING)
        return;
    for (int guard = 0; guard < PUMP_MAX_REQ; guard++) {
        uint32_t allow = dp_warmup_ctl_allow(&w->ctl, w->inflight_pages, now_ns);
        if (!allow)
            return;
        uint64_t budget = w->io.budget_pages(w->io.ctx);
        uint64_t room = budget ? dp_warmup_budget_room(budget, BUDGET_MARGIN_PAGES, w->io.used_pages(w->io.ctx), 0)
                               : UINT64_MAX;
        if (room < w->ctl.chunk) {
            if (!w->inflight_pages)
                finish(w, now_ns, "the budget is reached: only what it holds was warmed");
            return;
        }
        /* scan forward for a chunk with remote pages (bounded per pump) */
        struct dp_wu_range piece;
        int64_t got = 0;
        int scanned = 0;
        while (!got && scanned++ < 4096 && dp_warmup_plan_next(&w->plan, w->ctl.chunk, &piece)) {
            got = w->io.fetch(w->io.ctx, piece.task, piece.img, (uint32_t)piece.npages);
            if (got < 0)
                got = 0; /* task gone: its ranges are skipped one by one */
        }
        if (!got) {
            if (scanned <= 4096) { /* the plan is exhausted */
                plan_end(w, now_ns);
            }
            return;
        }
        w->submitted_pages += (uint64_t)got;
        w->inflight_pages = w->submitted_pages > w->pages ? w->submitted_pages - w->pages : 0;
        w->requests++;
        dp_warmup_ctl_sent(&w->ctl, (uint32_t)got);
    }
}

/* A completion frees window room; the daemon pumps at the end of its loop
 * turn (never from inside a completion: a source may complete a fetch
 * inside the submit that pump makes). In flight = submitted - completed, so
 * a completion counted before its submit returned is not lost. */
void dp_lzw_done(struct dp_lzw *w, uint32_t pages, uint64_t now_ns)
{
    w->pages += pages;
    w->inflight_pages = w->submitted_pages > w->pages ? w->submitted_pages - w->pages : 0;
    dp_warmup_ctl_done(&w->ctl, pages, now_ns);
}

/* ---- faults ---- */

/* What a fault finds ahead of it: the structural measure of its priority. */
uint32_t dp_lzw_fault_sent(struct dp_lzw *w)
{
    if (w->state != DP_LZW_RUNNING)
        return 0;
    if (w->inflight_pages > w->max_ahead_pages)
        w->max_ahead_pages = w->inflight_pages;
    return (uint32_t)(w->inflight_pages + w->ctl.chunk - 1) / w->ctl.chunk;
}

/* A fault served while the plan still queues pages overtook them; one that
 * waited clearly behind in-flight warm-up halves the window. */
void dp_lzw_fault(struct dp_lzw *w, uint64_t latency_ns, uint32_t ahead)
{
    /* recorded with the warm-up off too: the same measure for a run without */
    dp_hist_add(ahead ? &w->fault_during : &w->fault_idle, latency_ns);
    if (w->state == DP_LZW_RUNNING) {
        uint64_t left = dp_warmup_plan_left(&w->plan);
        if (left) {
            w->faults_overtook++;
            if (left > w->max_left_at_fault)
                w->max_left_at_fault = left;
        }
    }
    if (dp_warmup_ctl_fault(&w->ctl, latency_ns, ahead)) {
        w->faults_behind++;
        w->fault_wait_ns += dp_warmup_ctl_fault_wait(&w->ctl, latency_ns);
    }
}

/* The daemon keeps its loop short while this is 0. */
int dp_lzw_active(const struct dp_lzw *w)
{
    return w->state == DP_LZW_RUNNING;
}

/* ---- stats ---- */

static const char *const state_names[] = {"off", "waiting", "running", "done"};

/* Sets key to a new integer (stats are counts). */
static void put_int(json_t *o, const char *key, uint64_t v)
{
    json_object_set_new(o, key, json_integer((json_int_t)v));
}

/* Rate over the running time; latencies as the daemon's other histograms. */
json_t *dp_lzw_json(const struct dp_lzw *w)
{
    uint64_t end = w->done_ns ? w->done_ns : dp_now_ns();
    double run_s = w->start_ns && end > w->start_ns ? (double)(end - w->start_ns) / 1e9 : 0.0;
    json_t *o = json_object();
    if (!o)
        return NULL;
    json_object_set_new(o, "mode", json_string(dp_warmup_mode_name(w->o.mode)));
    json_object_set_new(o, "state", json_string(state_names[w->state]));
    json_object_set_new(o, "done_reason", w->done_why ? json_string(w->done_why) : json_null());
    put_int(o, "pages_planned_trace", w->plan.tier_pages[DP_WU_TIER_TRACE]);
    put_int(o, "pages_planned_heat", w->plan.tier_pages[DP_WU_TIER_HEAT]);
    put_int(o, "pages_planned_rest", w->plan.tier_pages[DP_WU_TIER_REST]);
    put_int(o, "pages_queued", dp_warmup_plan_left(&w->plan));
    put_int(o, "pages_moved", w->pages);
    put_int(o, "bytes_moved", w->pages * PG);
    put_int(o, "requests", w->requests);
    put_int(o, "inflight_pages", w->inflight_pages);
    json_object_set_new(o, "rate_bytes_per_s", dp_json_fixed(run_s > 0 ? (double)(w->pages * PG) / run_s : 0.0, 0));
    json_object_set_new(o, "seconds", dp_json_fixed(run_s, 3));
    json_object_set_new(o, "done_after_restore_s",
                        w->done_ns ? dp_json_fixed((double)(w->done_ns - w->restore_ns) / 1e9, 3) : json_null());
    put_int(o, "window", w->ctl.win);
    put_int(o, "window_max", w->ctl.win_max_seen);
    put_int(o, "window_increases", w->ctl.increases);
    put_int(o, "window_decreases", w->ctl.decreases);
    put_int(o, "chunk_pages", w->ctl.chunk);
    put_int(o, "chunk_pages_max", w->ctl.chunk_max);
    put_int(o, "chunk_cuts", w->ctl.chunk_cuts);
    json_object_set_new(o, "lane", json_string(w->o.own_lane ? "own" : "shared"));
    put_int(o, "rate_cap", w->ctl.rate_cap);
    put_int(o, "budget_pages", w->io.budget_pages(w->io.ctx));
    put_int(o, "sweeps", w->sweeps);
    put_int(o, "faults_overtook", w->faults_overtook);
    put_int(o, "max_queued_at_fault", w->max_left_at_fault);
    put_int(o, "max_ahead_pages", w->max_ahead_pages);
    put_int(o, "faults_behind", w->faults_behind);
    put_int(o, "fault_backoffs", w->ctl.fault_backoffs);
    put_int(o, "fault_wait_us", w->fault_wait_ns / 1000);
    json_object_set_new(o, "fault_during", dp_hist_jobj(&w->fault_during));
    json_object_set_new(o, "fault_idle", dp_hist_jobj(&w->fault_idle));
    json_object_set_new(o, "source_needed", json_boolean(!w->all_here));
    return o;
}

/* ---- metrics ---- */

/* One gauge or counter family with its single sample. */
static void prom_one(struct dp_sbuf *b, const char *name, const char *type, const char *help, uint64_t v)
{
    dp_prom_family(b, name, type, help);
    dp_prom_sample(b, name, NULL, NULL, v);
}

/* The warm-up's families of the daemon's --metrics exposition. */
void dp_lzw_metrics(const struct dp_lzw *w, struct dp_sbuf *b)
{
    prom_one(b, "distriproc_lazyd_warmup_running", "gauge", "1 while the warm-up moves memory.",
             w->state == DP_LZW_RUNNING);
    prom_one(b, "distriproc_lazyd_warmup_bytes_total", "counter", "Bytes the warm-up moved.", w->pages * PG);
    prom_one(b, "distriproc_lazyd_warmup_queued_pages", "gauge", "Pages the warm-up has still to hand out.",
             dp_warmup_plan_left(&w->plan));
    prom_one(b, "distriproc_lazyd_warmup_window_pages", "gauge", "Warm-up pages allowed in flight.",
             (uint64_t)w->ctl.win * w->ctl.chunk);
    prom_one(b, "distriproc_lazyd_warmup_faults_behind_total", "counter",
             "Faults that waited clearly longer with warm-up ahead of them.", w->faults_behind);
    dp_prom_histogram(b, "distriproc_lazyd_warmup_fault_latency_seconds",
                      "Fetch latency of faults sent with warm-up in flight.", &w->fault_during);
    prom_one(b, "distriproc_lazyd_warmup_source_needed", "gauge",
             "0 once the warm-up made every lazy page resident (the source may go).", !w->all_here);
}
