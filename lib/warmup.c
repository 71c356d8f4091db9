/* warmup: plan, budget and pace of the warm-up (lib/warmup.h). Pure. */
#include "warmup.h"

#include <stdlib.h>
#include <string.h>

/* ---- mode ---- */

static const char *const mode_names[] = {"none", "hot", "all"};

/* One table for parsing and naming, so the two never disagree. */
int dp_warmup_mode_parse(const char *s, enum dp_warmup_mode *out)
{
    for (int i = 0; s && i < 3; i++) {
        if (strcmp(s, mode_names[i]) == 0) {
            *out = (enum dp_warmup_mode)i;
            return 0;
        }
    }
    return -1;
}

/* Stats and log lines name the mode as the flag spells it. */
const char *dp_warmup_mode_name(enum dp_warmup_mode m)
{
    return (unsigned)m < 3 ? mode_names[m] : "?";
}

/* ---- plan ---- */

/* An empty plan owns nothing yet. */
void dp_warmup_plan_init(struct dp_warmup_plan *p)
{
    memset(p, 0, sizeof(*p));
}

/* Frees the ranges; the plan may be built again after init. */
void dp_warmup_plan_free(struct dp_warmup_plan *p)
{
    free(p->r);
    dp_warmup_plan_init(p);
}

/* Appends one range; the order is fixed later by finish(). */
int dp_warmup_plan_add(struct dp_warmup_plan *p, int task, uint8_t tier, uint32_t score, uint64_t img,
                       uint64_t npages)
{
    if (tier >= DP_WU_TIERS || npages == 0 || npages > (UINT64_MAX - img) / 4096 || (img & 4095))
        return -1;
    if (p->n == p->cap) {
        size_t cap = p->cap ? p->cap * 2 : 64;
        struct dp_wu_range *r = realloc(p->r, cap * sizeof(*r));
        if (!r)
            return -1;
        p->r = r;
        p->cap = cap;
    }
    p->r[p->n++] = (struct dp_wu_range){
        .task = task, .tier = tier, .score = score, .seq = p->seq++, .img = img, .npages = npages};
    p->tier_pages[tier] += npages;
    return 0;
}

/* A classification names per-mapping heat (tier 1); a trace or a merged set
 * names the pages in the order the process touched them (tier 0). */
int dp_warmup_plan_add_hotset(struct dp_warmup_plan *p, const struct dp_hotset *hs, dp_warmup_task_of_fn task_of,
                              void *ctx)
{
    uint8_t tier = hs->source == DP_HS_CLASSIFY ? DP_WU_TIER_HEAT : DP_WU_TIER_TRACE;
    for (uint32_t i = 0; i < hs->nr_tasks; i++) {
        const struct dp_hs_task *t = &hs->tasks[i];
        int id = task_of(ctx, t->pid);
        if (id < 0)
            continue;
        for (uint32_t k = 0; k < t->nr_runs; k++)
            if (dp_warmup_plan_add(p, id, tier, t->runs[k].score, t->runs[k].vaddr, t->runs[k].nr_pages) < 0)
                return -1;
    }
    return 0;
}

/* Fetch order: tier; within tier 1 the hottest mapping first; else as added. */
static int cmp_range(const void *a, const void *b)
{
    const struct dp_wu_range *x = a, *y = b;
    if (x->tier != y->tier)
        return x->tier < y->tier ? -1 : 1;
    if (x->tier == DP_WU_TIER_HEAT && x->score != y->score)
        return x->score > y->score ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Sorts once, drops the tiers the mode does not warm, rewinds. */
void dp_warmup_plan_finish(struct dp_warmup_plan *p, uint8_t max_tier)
{
    if (p->n)
        qsort(p->r, p->n, sizeof(*p->r), cmp_range);
    while (p->n && p->r[p->n - 1].tier > max_tier) {
        p->tier_pages[p->r[p->n - 1].tier] -= p->r[p->n - 1].npages;
        p->n--;
    }
    p->cur = 0;
    p->off = 0;
}

/* Hands out the plan in order, a chunk at a time. */
int dp_warmup_plan_next(struct dp_warmup_plan *p, uint32_t max_pages, struct dp_wu_range *out)
{
    if (!max_pages)
        return 0;
    while (p->cur < p->n && p->off >= p->r[p->cur].npages) {
        p->cur++;
        p->off = 0;
    }
    if (p->cur >= p->n)
        return 0;
    const struct dp_wu_range *r = &p->r[p->cur];
    uint64_t left = r->npages - p->off;
    *out = *r;
    out->img = r->img + p->off * 4096;
    out->npages = left < max_pages ? left : max_pages;
    p->off += out->npages;
    return 1;
}

/* A sweep goes over the ranges of tier >= tier again. */
int dp_warmup_plan_rewind(struct dp_warmup_plan *p, uint8_t tier)
{
    for (size_t i = 0; i < p->n; i++) {
        if (p->r[i].tier >= tier) {
            p->cur = i;
            p->off = 0;
            return 1;
        }
    }
    p->cur = p->n;
    p->off = 0;
    return 0;
}

/* What is still to be handed out (for stats, and the ordering tests). */
uint64_t dp_warmup_plan_left(const struct dp_warmup_plan *p)
{
    uint64_t left = 0;
    for (size_t i = p->cur; i < p->n; i++)
        left += p->r[i].npages - (i == p->cur ? p->off : 0);
    return left;
}

/* ---- budget ---- */

/* The warm-up never pushes residency past the budget: eviction would then
 * throw out what it just brought (and write back what the process made). */
uint64_t dp_warmup_budget_room(uint64_t budget_pages, uint64_t margin, uint64_t resident, uint64_t inflight)
{
    if (!budget_pages)
        return UINT64_MAX;
    uint64_t used = resident + inflight + margin;
    if (used < resident) /* wrapped */
        return 0;
    return used >= budget_pages ? 0 : budget_pages - used;
}

/* ---- controller ---- */

/* Starts small: the first rounds find the window the link needs. */
void dp_warmup_ctl_init(struct dp_warmup_ctl *c, uint64_t rate_cap, uint64_t now_ns)
{
    memset(c, 0, sizeof(*c));
    c->chunk = c->chunk_max = DP_WU_CHUNK_PAGES;
    c->win = DP_WU_WIN_START;
    c->win_max_seen = c->win;
    c->rate_cap = rate_cap;
    c->last_ns = now_ns;
    c->round_start_ns = now_ns;
}

/* See warmup.h: the request size it starts with and may grow back to. */
void dp_warmup_ctl_chunk(struct dp_warmup_ctl *c, uint32_t pages)
{
    c->chunk = c->chunk_max = pages > DP_WU_CHUNK_PAGES ? pages : DP_WU_CHUNK_PAGES;
}

/* The window, and under a cap the tokens, say how many may go now. A
 * request may carry fewer pages than a chunk (some were here already) and
 * the daemon may split one into several fetches: the window counts pages. */
uint32_t dp_warmup_ctl_allow(struct dp_warmup_ctl *c, uint64_t inflight_pages, uint64_t now_ns)
{
    uint64_t limit = (uint64_t)c->win * c->chunk;
    if (inflight_pages + c->chunk > limit)
        return 0;
    uint32_t n = (uint32_t)((limit - inflight_pages) / c->chunk);
    if (c->rate_cap) {
        double dt = now_ns > c->last_ns ? (double)(now_ns - c->last_ns) / 1e9 : 0.0;
        c->last_ns = now_ns;
        double req = (double)c->chunk * 4096.0;
        /* at most 50 ms (and one request) of burst */
        double cap = (double)c->rate_cap * 0.05 + req;
        c->tokens += dt * (double)c->rate_cap;
        if (c->tokens > cap)
            c->tokens = cap;
        uint32_t by_tokens = c->tokens >= req ? (uint32_t)(c->tokens / req) : 0;
        if (by_tokens < n)
            n = by_tokens;
    }
    return n;
}

/* Spends the cap's tokens for what was sent. */
void dp_warmup_ctl_sent(struct dp_warmup_ctl *c, uint32_t pages)
{
    if (c->rate_cap)
        c->tokens -= (double)pages * 4096.0;
}

/* The end of a round decides the window: after a step up, another step up
 * while the round moved >= 5% more bytes per second than the one before,
 * else a step back (the link is full: more in flight only queues) and a
 * hold of DP_WU_HOLD_ROUNDS before probing up again (the link may have
 * freed). A round that saw a fault queue behind the warm-up was halved
 * already and does not grow. */
void dp_warmup_ctl_done(struct dp_warmup_ctl *c, uint32_t pages, uint64_t now_ns)
{
    c->round_bytes += (uint64_t)pages * 4096;
    if (c->round_bytes < (uint64_t)c->win * c->chunk * 4096)
        return;
    double dt = now_ns > c->round_start_ns ? (double)(now_ns - c->round_start_ns) / 1e9 : 1e-9;
    double bps = (double)c->round_bytes / dt;
    if (c->round_slow_fault) {
        c->last_step = 0;
        c->hold = DP_WU_HOLD_ROUNDS;
    } else if (c->last_step > 0 && bps < c->last_bps * 1.05) {
        if (c->win > DP_WU_WIN_MIN) {
            c->win--;
            c->decreases++;
        }
        c->last_step = -1;
        c->hold = DP_WU_HOLD_ROUNDS;
    } else if (c->last_step > 0 || c->hold == 0) {
        if (c->chunk < c->chunk_max && c->win >= 2 * DP_WU_WIN_MIN) {
            c->chunk *= 2; /* back to bigger requests, the same bytes in flight */
            c->win /= 2;
        }
        if (c->win < DP_WU_WIN_MAX) {
            c->win++;
            c->increases++;
            c->last_step = 1;
        }
    } else {
        c->hold--;
        c->last_step = 0;
    }
    c->last_bps = bps;
    if (c->win > c->win_max_seen)
        c->win_max_seen = c->win;
    c->round_start_ns = now_ns;
    c->round_bytes = 0;
    c->round_slow_fault = 0;
}

/* The idle base follows the fastest faults (a minimum that drifts up
 * slowly, so a slower link is learnt): CPU noise makes averages high and
 * would hide the queueing. A fault with warm-up ahead of it that took
 * twice the base + 100 us waited behind the warm-up: halve, once per round
 * (never below DP_WU_WIN_MIN: two chunks keep the link mostly busy). */
int dp_warmup_ctl_fault(struct dp_warmup_ctl *c, uint64_t latency_ns, uint32_t warmup_inflight)
{
    if (!warmup_inflight) {
        if (!c->idle_fault_ns || latency_ns < c->idle_fault_ns)
            c->idle_fault_ns = latency_ns;
        else
            c->idle_fault_ns += (latency_ns - c->idle_fault_ns) / 32;
        return 0;
    }
    uint64_t base = c->idle_fault_ns ? c->idle_fault_ns : 200000; /* none seen yet: a LAN fault */
    if (latency_ns <= 2 * base + 100000)
        return 0;
    if (!c->round_slow_fault) {
        c->round_slow_fault = 1;
        if (c->win <= DP_WU_WIN_MIN && c->chunk > DP_WU_CHUNK_PAGES) {
            c->chunk /= 2; /* smaller requests: less ahead of a fault in a FIFO */
            c->chunk_cuts++;
        }
        c->win = c->win / 2 > DP_WU_WIN_MIN ? c->win / 2 : DP_WU_WIN_MIN;
        c->fault_backoffs++;
    }
    return 1;
}

/* Latency above what an idle fault takes. */
uint64_t dp_warmup_ctl_fault_wait(const struct dp_warmup_ctl *c, uint64_t latency_ns)
{
    return c->idle_fault_ns && latency_ns > c->idle_fault_ns ? latency_ns - c->idle_fault_ns : 0;
}
