/* replay: bulk fetch of a hot set (see replay.h). */
#include <stdlib.h>
#include <string.h>

#include "replay.h"

/* Replay order: by first-touch time, file order among equals (qsort is not
 * stable, so the file index breaks ties). */
struct tagged {
    struct dp_replay_item it;
    size_t idx;
};

static int cmp_tagged(const void *a, const void *b)
{
    const struct tagged *x = a, *y = b;
    if (x->it.t_ms != y->it.t_ms)
        return x->it.t_ms < y->it.t_ms ? -1 : 1;
    return x->idx < y->idx ? -1 : x->idx > y->idx;
}

int dp_replay_init(struct dp_replay *r, const struct dp_hotset *hs, uint32_t batch_pages, uint32_t window_pages,
                   struct dp_err *err)
{
    memset(r, 0, sizeof(*r));
    r->batch_pages = batch_pages ? batch_pages : DP_REPLAY_BATCH_PAGES;
    r->window_pages = window_pages ? window_pages : DP_REPLAY_WINDOW_PAGES;
    if (r->window_pages < r->batch_pages)
        r->window_pages = r->batch_pages;
    r->items = hs->nr_runs ? malloc(hs->nr_runs * sizeof(*r->items)) : NULL;
    if (hs->nr_runs && !r->items) {
        dp_err_set(err, "out of memory for a replay of %u runs", hs->nr_runs);
        return -1;
    }
    for (uint32_t i = 0; i < hs->nr_tasks; i++)
        for (uint32_t k = 0; k < hs->tasks[i].nr_runs; k++) {
            const struct dp_hs_run *run = &hs->tasks[i].runs[k];
            r->items[r->n++] = (struct dp_replay_item){.pid = hs->tasks[i].pid, .npages = run->nr_pages,
                                                       .addr = run->vaddr, .t_ms = run->t_ms};
            r->total_pages += run->nr_pages;
        }
    if (r->n > 1) {
        struct tagged *tmp = malloc(r->n * sizeof(*tmp));
        if (!tmp) {
            free(r->items);
            r->items = NULL;
            dp_err_set(err, "out of memory");
            return -1;
        }
        for (size_t i = 0; i < r->n; i++)
            tmp[i] = (struct tagged){r->items[i], i};
        qsort(tmp, r->n, sizeof(*tmp), cmp_tagged);
        for (size_t i = 0; i < r->n; i++)
            r->items[i] = tmp[i].it;
        free(tmp);
    }
    return 0;
}

void dp_replay_free(struct dp_replay *r)
{
    free(r->items);
    memset(r, 0, sizeof(*r));
}

uint64_t dp_replay_pump(struct dp_replay *r, dp_replay_fetch_fn fetch, void *ctx, uint64_t now_ns)
{
    uint64_t sent = 0;
    if (!r->start_ns && r->cur < r->n)
        r->start_ns = now_ns ? now_ns : 1;
    while (r->cur < r->n && dp_replay_inflight(r) + r->batch_pages <= r->window_pages) {
        struct dp_replay_item *it = &r->items[r->cur];
        uint32_t left = it->npages - r->cur_off;
        uint32_t chunk = left < r->batch_pages ? left : r->batch_pages;
        int64_t got = fetch(ctx, it->pid, it->addr + (uint64_t)r->cur_off * DP_PAGE_SIZE, chunk);
        if (got < 0) {
            /* task gone: skip what is left of its runs */
            int32_t pid = it->pid;
            r->skipped_pages += left;
            r->cur++;
            r->cur_off = 0;
            for (size_t i = r->cur; i < r->n; i++)
                if (r->items[i].pid == pid) {
                    r->skipped_pages += r->items[i].npages;
                    r->items[i].npages = 0;
                }
            while (r->cur < r->n && r->items[r->cur].npages == 0)
                r->cur++;
            continue;
        }
        if ((uint64_t)got > chunk)
            got = chunk;
        r->submitted_pages += (uint64_t)got;
        r->skipped_pages += chunk - (uint64_t)got;
        if (got)
            r->batches++;
        sent += (uint64_t)got;
        r->cur_off += chunk;
        if (r->cur_off == it->npages) {
            r->cur++;
            r->cur_off = 0;
            while (r->cur < r->n && r->items[r->cur].npages == 0)
                r->cur++;
        }
    }
    if (dp_replay_finished(r) && !r->done_ns)
        r->done_ns = now_ns ? now_ns : 1;
    return sent;
}

void dp_replay_completed(struct dp_replay *r, uint32_t npages, uint64_t now_ns)
{
    r->completed_pages += npages;
    if (dp_replay_finished(r) && !r->done_ns)
        r->done_ns = now_ns ? now_ns : 1;
}

uint64_t dp_replay_inflight(const struct dp_replay *r)
{
    /* completed may run ahead of submitted only inside a fetch call */
    return r->submitted_pages > r->completed_pages ? r->submitted_pages - r->completed_pages : 0;
}

int dp_replay_finished(const struct dp_replay *r)
{
    return r->cur >= r->n && r->completed_pages >= r->submitted_pages;
}

void dp_replay_hit(struct dp_replay *r, int inflight, uint64_t now_ns)
{
    if (inflight)
        r->st.hits_inflight++;
    else
        r->st.hits++;
    uint64_t s = r->start_ns && now_ns > r->start_ns ? (now_ns - r->start_ns) / 1000000000ull : 0;
    r->st.by_second[s < DP_REPLAY_HIT_SECONDS ? s : DP_REPLAY_HIT_SECONDS]++;
}

double dp_replay_hit_rate(const struct dp_replay *r)
{
    uint64_t delivered = r->st.staged + r->st.hits_inflight;
    return delivered ? (double)(r->st.hits + r->st.hits_inflight) / (double)delivered : -1.0;
}

uint64_t dp_replay_hits_within(const struct dp_replay *r, uint32_t seconds)
{
    uint64_t n = 0;
    for (uint32_t i = 0; i < seconds && i < DP_REPLAY_HIT_SECONDS; i++)
        n += r->st.by_second[i];
    return n;
}

uint64_t dp_replay_still_staged(const struct dp_replay *r)
{
    uint64_t gone = r->st.hits + r->st.dropped + r->st.expired;
    return r->st.staged > gone ? r->st.staged - gone : 0;
}
