/* lazyd_stats: what the daemon tells (docs/observability.md): the `stats`
 * JSON document and the `summary` text over the control socket, the
 * --metrics exposition, and the control socket itself (both ends). Reads
 * the other rooms' counters and changes nothing itself (`sync` is passed
 * to the eviction room). */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <netinet/in.h>

#include "lazyd_int.h"
#include "metrics.h"
#include "perm.h"

/* ==== stats (JSON) ==== */

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

/* --metrics: the same totals and budget counters as lz_stats_json/budget_json. */
void lz_metrics_render(void *ctx, struct dp_sbuf *out)
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
    m.tasks_alive = (uint64_t)lz_tasks_alive(d);
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
    dp_lzw_metrics(&d->wu, out);
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

/* The "budget" member: eviction and write-back counters, or null without
 * --budget. */
static json_t *budget_json(struct dp_lazyd *d)
{
    if (!d->ev.on)
        return json_null();
    struct dp_evict_stats *p = &d->ev.pol.st;
    json_t *o = json_pack(
        "{s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, "
        "s:I, s:I, s:I, s:I, s:o, s:o, s:o, s:o}",
        "budget_bytes", (json_int_t)(lz_ev_high(d) * PG), "low_watermark_bytes", (json_int_t)(lz_ev_low(d) * PG),
        "batch_pages", (json_int_t)d->ev.batch, "resident_bytes", (json_int_t)(lz_ev_resident(d) * PG), "max_resident_bytes",
        (json_int_t)(d->ev.max_resident * PG), "batches", (json_int_t)d->ev.batches, "evictions",
        (json_int_t)d->ev.evictions, "writebacks", (json_int_t)(d->ev.writebacks + d->ev.cleaned),
        "writeback_requests", (json_int_t)d->ev.wb_requests, "writeback_errors", (json_int_t)d->ev.wb_errors,
        "writeback_aborts", (json_int_t)d->ev.wb_aborts, "cancels", (json_int_t)d->ev.cancels, "refaults",
        (json_int_t)d->ev.refaults, "victim_buffer_hits", (json_int_t)d->ev.vb_hits, "victim_buffer_bytes",
        (json_int_t)d->ev.vb.bytes, "shared_skips", (json_int_t)d->ev.shared_skips, "syncs",
        (json_int_t)d->ev.syncs, "sync_pages_written", (json_int_t)d->ev.sync_pages, "background_writebacks",
        (json_int_t)d->ev.cleaned, "background_requests", (json_int_t)d->ev.clean_requests, "protected_pages",
        (json_int_t)p->protected_, "probation_pages", (json_int_t)p->probation, "ghosts", (json_int_t)p->ghosts,
        "children_placed", (json_int_t)d->place.children_placed, "probes", (json_int_t)d->place.probes, "stop",
        dp_hist_jobj(&d->ev.stop), "stop_buckets_us", dp_hist_jbuckets(&d->ev.stop), "writeback_latency",
        dp_hist_jobj(&d->ev.wb_lat), "writeback_latency_buckets_us", dp_hist_jbuckets(&d->ev.wb_lat));
    /* issue 13: write-protect tracking and evictions that stop no thread */
    json_t *h = json_pack("{s:s, s:I, s:I, s:I, s:I, s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:o}", "evict_helpers",
                          d->ev.helper_on ? "on" : "off", "wp_tasks",
                          (json_int_t)d->ev.wp_tasks, "cleaned_without_stop", (json_int_t)d->ev.nostop_cleaned,
                          "tracked_without_stop", (json_int_t)d->ev.nostop_tracked, "abandoned_written_again",
                          (json_int_t)d->ev.nostop_abandoned, "ack_wait", dp_hist_jobj(&d->ev.nostop_wait),
                          "wp_faults", (json_int_t)d->ev.wp_faults, "clean_drops", (json_int_t)d->ev.clean_drops,
                          "helper_tasks", (json_int_t)d->ev.helper_tasks, "helper_batches",
                          (json_int_t)d->ev.helper_batches, "helper_pages", (json_int_t)d->ev.helper_pages,
                          "helper_busy_pages", (json_int_t)d->ev.helper_busy, "helper_fallback_pages",
                          (json_int_t)d->ev.helper_fallback, "helper_failures", (json_int_t)d->ev.helper_failures,
                          "helper_call", dp_hist_jobj(&d->ev.helper_call));
    /* the one stop per task that installs its helper, and its phases */
    uint64_t k = d->ev.helper_tasks ? d->ev.helper_tasks : 1;
    const uint64_t *ph = d->ev.install_phase_ns;
    json_t *in = json_pack("{s:o, s:{s:o, s:o, s:o, s:o, s:o}}", "stop", dp_hist_jobj(&d->ev.install_stop),
                           "phases_mean_us", "map", dp_json_fixed((double)ph[0] / (double)k / 1e3, 1), "uffd",
                           dp_json_fixed((double)ph[1] / (double)k / 1e3, 1), "channel",
                           dp_json_fixed((double)ph[2] / (double)k / 1e3, 1), "thread",
                           dp_json_fixed((double)ph[3] / (double)k / 1e3, 1), "first_answer",
                           dp_json_fixed((double)ph[4] / (double)k / 1e3, 1));
    const uint64_t *w = d->ev.stop_why;
    if (h && json_object_set_new(h, "stop_path_pages",
                                 json_pack("{s:I, s:I, s:I, s:I}", "no_helper", (json_int_t)w[0], "untracked",
                                           (json_int_t)w[1], "written", (json_int_t)w[2], "other",
                                           (json_int_t)w[3])) < 0) {
        json_decref(h);
        h = NULL;
    }
    if (h && (!in || json_object_set_new(h, "helper_install", in) < 0)) {
        json_decref(h);
        h = NULL;
    }
    if (o && (!h || json_object_set_new(o, "no_stop", h) < 0)) {
        json_decref(o);
        o = NULL;
    }
    return o;
}

/* The warm-up's own connection, by its local TCP port (what `ss` shows in
 * the destination), or null while there is none. */
static json_t *lane_port(struct dp_lazyd *d)
{
    struct sockaddr_in a;
    socklen_t len = sizeof(a);
    if (d->bulk_h.fd < 0 || getsockname(d->bulk_h.fd, (struct sockaddr *)&a, &len) < 0 || a.sin_family != AF_INET)
        return json_null();
    return json_integer(ntohs(a.sin_port));
}

/* The `stats` document (control socket and stats-final.json), one line. */
void lz_stats_json(struct dp_lazyd *d, struct dp_sbuf *b)
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
        (json_int_t)d->o->background_rate, "restore_finished", d->finished, "tasks_alive", lz_tasks_alive(d), "total",
        total_json(d), "replay", "active", d->replaying, "mode", d->staging ? "stage" : "install", "pages",
        (json_int_t)d->replay.total_pages, "submitted", (json_int_t)d->replay.submitted_pages, "skipped",
        (json_int_t)d->replay.skipped_pages, "completed", (json_int_t)d->replay.completed_pages, "batches",
        (json_int_t)d->replay.batches, "seconds",
        dp_json_fixed(d->replay.done_ns ? (double)(d->replay.done_ns - d->replay.start_ns) / 1e9 : 0.0, 3), "stage",
        stage_json(d), "trace", "recording", d->tracing && !d->trace_sent, "pages", (json_int_t)d->trace_pages,
        "sent", d->trace_sent, "budget", budget_json(d), "tasks", tasks);
    json_t *wu = o ? dp_lzw_json(&d->wu) : NULL;
    if (wu) {
        json_object_set_new(wu, "lane_port", lane_port(d));
        json_object_set_new(o, "warmup", wu);
    }
    dp_sbuf_put_json(b, o);
    dp_sbuf_printf(b, "\n");
}

/* ==== summary (text) ==== */

/* One row of `summary`: a task's or the total's counters and latency. */
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

/* `summary`: the same numbers as `stats`, as a table for people. */
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
                   d->o->src->ops->healthy(d->o->src) ? "up" : "UNREACHABLE", pf, lz_tasks_alive(d), wire);
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

/* ==== control socket ==== */

/* One command per connection; the reply is written and the connection
 * closed, so a client never holds the loop. */
void lz_handle_ctl_client(struct dp_lazyd *d, struct handler *h)
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
            lz_stats_json(d, &b);
        else if (strcmp(cmd, "summary") == 0)
            stats_text(d, &b);
        else if (strcmp(cmd, "sync") == 0)
            dp_lazyd_sync(d, &b);
        else if (strcmp(cmd, "evict-helpers off") == 0 || strcmp(cmd, "evict-helpers on") == 0)
            dp_lazyd_evict_helpers(d, strcmp(cmd, "evict-helpers on") == 0, &b);
        else
            dp_sbuf_printf(&b, "{\"error\": \"unknown command; the daemon knows: stats, summary, sync, "
                               "evict-helpers off|on\"}\n");
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

/* A command connects; its line is read when it arrives. */
void lz_handle_ctl_listen(struct dp_lazyd *d, struct handler *h)
{
    lz_accept(d, h->fd, SOCK_CLOEXEC | SOCK_NONBLOCK, d->ctl_path, lz_handle_ctl_client, 0);
}

/* Client side of the control socket (`distriproc stats`, `sync`): sends
 * cmd, returns the malloc'd reply. */
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
    /* a sync writes back everything modified, removing helpers waits for
     * their threads (2 s each at most): they may take a while */
    struct timeval tv = {.tv_sec = strcmp(cmd, "sync") && strncmp(cmd, "evict-helpers", 13) ? 5 : 600};
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
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            dp_err_set(err, "no reply from the lazy-pages daemon at %s within %ld s (it is busy or stuck: "
                       "its log is %s/lazyd.log); try again", path, (long)tv.tv_sec, workdir);
            dp_sbuf_free(&b);
            close(sk);
            return NULL;
        }
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
