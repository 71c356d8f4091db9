/* Unit tests of the warm-up (issue 16): the pure planner and controller
 * (lib/warmup.h) and the daemon glue (lib/lazyd_warmup.h) driven by a fake
 * daemon with synthetic times. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "lazyd_warmup.h"
#include "warmup.h"

#define PG 4096ULL
#define US 1000ULL
#define MS 1000000ULL

/* ---- mode ---- */

static void mode_parses_the_three_names_only(void **state)
{
    (void)state;
    enum dp_warmup_mode m;
    assert_int_equal(dp_warmup_mode_parse("none", &m), 0);
    assert_int_equal(m, DP_WARMUP_NONE);
    assert_int_equal(dp_warmup_mode_parse("hot", &m), 0);
    assert_int_equal(m, DP_WARMUP_HOT);
    assert_int_equal(dp_warmup_mode_parse("all", &m), 0);
    assert_int_equal(m, DP_WARMUP_ALL);
    assert_int_equal(dp_warmup_mode_parse("ALL", &m), -1);
    assert_int_equal(dp_warmup_mode_parse("", &m), -1);
    assert_int_equal(dp_warmup_mode_parse(NULL, &m), -1);
    assert_string_equal(dp_warmup_mode_name(DP_WARMUP_HOT), "hot");
}

/* ---- plan ---- */

static int task_of_identity(void *ctx, int32_t pid)
{
    (void)ctx;
    return pid == 99 ? -1 : pid; /* 99: not restored here */
}

static void plan_orders_trace_then_heat_then_rest(void **state)
{
    (void)state;
    struct dp_warmup_plan p;
    dp_warmup_plan_init(&p);
    /* the rest first in the calls: order must not depend on it */
    assert_int_equal(dp_warmup_plan_add(&p, 1, DP_WU_TIER_REST, 0, 0x100000, 40), 0);
    /* classification: two mappings, the hotter one added second */
    struct dp_hotset cls;
    uint8_t id[DP_CPID_SIZE] = {0};
    dp_hotset_init(&cls, DP_HS_CLASSIFY, id, 0, 0);
    assert_int_equal(dp_hotset_add_task(&cls, 1), 0);
    assert_int_equal(dp_hotset_add_run(&cls, 0x200000, 4, 300, 0), 0);
    assert_int_equal(dp_hotset_add_run(&cls, 0x300000, 2, 900, 0), 0);
    assert_int_equal(dp_hotset_add_task(&cls, 99), 0); /* unknown task: left out */
    assert_int_equal(dp_hotset_add_run(&cls, 0x400000, 8, 1000, 0), 0);
    assert_int_equal(dp_warmup_plan_add_hotset(&p, &cls, task_of_identity, NULL), 0);
    /* a trace */
    struct dp_hotset tr;
    dp_hotset_init(&tr, DP_HS_TRACE, id, 0, 0);
    assert_int_equal(dp_hotset_add_task(&tr, 1), 0);
    assert_int_equal(dp_hotset_add_run(&tr, 0x500000, 3, 1000, 5), 0);
    assert_int_equal(dp_warmup_plan_add_hotset(&p, &tr, task_of_identity, NULL), 0);
    dp_warmup_plan_finish(&p, DP_WU_TIER_REST);
    assert_int_equal(p.tier_pages[0], 3);
    assert_int_equal(p.tier_pages[1], 6);
    assert_int_equal(p.tier_pages[2], 40);
    assert_int_equal(dp_warmup_plan_left(&p), 49);

    struct dp_wu_range r;
    uint64_t want[][2] = {{0x500000, 3}, {0x300000, 2}, {0x200000, 4}, {0x100000, 16}, {0x110000, 16}, {0x120000, 8}};
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++) {
        assert_int_equal(dp_warmup_plan_next(&p, 16, &r), 1);
        assert_int_equal(r.img, want[i][0]);
        assert_int_equal(r.npages, want[i][1]);
        assert_int_equal(r.task, 1);
    }
    assert_int_equal(dp_warmup_plan_next(&p, 16, &r), 0);
    assert_int_equal(dp_warmup_plan_left(&p), 0);
    /* a sweep goes over the rest only */
    assert_int_equal(dp_warmup_plan_rewind(&p, DP_WU_TIER_REST), 1);
    assert_int_equal(dp_warmup_plan_next(&p, 64, &r), 1);
    assert_int_equal(r.img, 0x100000);
    assert_int_equal(r.npages, 40);
    dp_hotset_free(&cls);
    dp_hotset_free(&tr);
    dp_warmup_plan_free(&p);
}

static void plan_hot_mode_drops_the_rest_and_refuses_bad_ranges(void **state)
{
    (void)state;
    struct dp_warmup_plan p;
    dp_warmup_plan_init(&p);
    assert_int_equal(dp_warmup_plan_add(&p, 1, DP_WU_TIER_REST, 0, 0x100000, 40), 0);
    assert_int_equal(dp_warmup_plan_add(&p, 1, DP_WU_TIER_TRACE, 0, 0x200000, 2), 0);
    assert_int_equal(dp_warmup_plan_add(&p, 1, 3, 0, 0x200000, 2), -1);           /* no such tier */
    assert_int_equal(dp_warmup_plan_add(&p, 1, 0, 0, 0x200000, 0), -1);           /* empty */
    assert_int_equal(dp_warmup_plan_add(&p, 1, 0, 0, 0x200001, 1), -1);           /* unaligned */
    assert_int_equal(dp_warmup_plan_add(&p, 1, 0, 0, UINT64_MAX - 4095, 2), -1);  /* wraps */
    dp_warmup_plan_finish(&p, DP_WU_TIER_HEAT);
    assert_int_equal(dp_warmup_plan_left(&p), 2);
    assert_int_equal(p.tier_pages[2], 0);
    struct dp_wu_range r;
    assert_int_equal(dp_warmup_plan_next(&p, 16, &r), 1);
    assert_int_equal(r.img, 0x200000);
    assert_int_equal(dp_warmup_plan_next(&p, 16, &r), 0);
    assert_int_equal(dp_warmup_plan_next(&p, 0, &r), 0);
    assert_int_equal(dp_warmup_plan_rewind(&p, DP_WU_TIER_REST), 0);
    dp_warmup_plan_free(&p);
}

/* ---- budget ---- */

static void budget_room_saturates(void **state)
{
    (void)state;
    assert_int_equal(dp_warmup_budget_room(0, 10, 100, 5), UINT64_MAX);
    assert_int_equal(dp_warmup_budget_room(1000, 100, 500, 50), 350);
    assert_int_equal(dp_warmup_budget_room(1000, 100, 900, 0), 0);
    assert_int_equal(dp_warmup_budget_room(1000, 100, 2000, 0), 0);
    assert_int_equal(dp_warmup_budget_room(1000, 100, UINT64_MAX, 5), 0);
}

/* ---- controller ---- */

/* Runs rounds of the window's requests, each taking per_req_ns when the
 * window is at most knee requests and knee's share of the link beyond
 * (the link is full: more in flight only queues). */
static uint64_t run_rounds(struct dp_warmup_ctl *c, int rounds, uint32_t knee, uint64_t now)
{
    for (int i = 0; i < rounds; i++) {
        uint32_t n = dp_warmup_ctl_allow(c, 0, now);
        assert_true(n >= 1);
        uint64_t per_req = 500 * US; /* one request's transfer at link speed */
        uint64_t round_ns = n <= knee ? per_req : per_req * n / knee;
        for (uint32_t k = 0; k < n; k++) {
            dp_warmup_ctl_sent(c, c->chunk);
        }
        for (uint32_t k = 0; k < n; k++)
            dp_warmup_ctl_done(c, c->chunk, now + round_ns * (k + 1) / n);
        now += round_ns;
    }
    return now;
}

static void ctl_grows_to_the_knee_and_stays_near_it(void **state)
{
    (void)state;
    struct dp_warmup_ctl c;
    dp_warmup_ctl_init(&c, 0, 0);
    assert_int_equal(c.win, DP_WU_WIN_START);
    run_rounds(&c, 200, 6, 0);
    /* it found the knee: neither stuck at the start nor far beyond */
    assert_true(c.win_max_seen >= 6);
    assert_true(c.win >= 4 && c.win <= 9);
    assert_true(c.increases >= 4);
    assert_true(c.decreases >= 1);
}

static void ctl_halves_when_a_fault_queues_behind(void **state)
{
    (void)state;
    struct dp_warmup_ctl c;
    dp_warmup_ctl_init(&c, 0, 0);
    c.win = 16;
    /* idle faults set the base: the fastest, drifting up slowly */
    for (int i = 0; i < 8; i++)
        assert_int_equal(dp_warmup_ctl_fault(&c, 200 * US, 0), 0);
    assert_int_equal(c.idle_fault_ns, 200 * US);
    assert_int_equal(dp_warmup_ctl_fault(&c, 200 * US + 3200 * US, 0), 0); /* one slow idle fault */
    assert_int_equal(c.idle_fault_ns, 300 * US);
    assert_int_equal(dp_warmup_ctl_fault(&c, 200 * US, 0), 0);           /* back to the fastest */
    assert_int_equal(c.idle_fault_ns, 200 * US);
    /* a fault with warm-up ahead that took about as long: no change */
    assert_int_equal(dp_warmup_ctl_fault(&c, 350 * US, 4), 0);
    assert_int_equal(c.win, 16);
    /* one that queued: halved, once per round */
    assert_int_equal(dp_warmup_ctl_fault(&c, 2 * MS, 4), 1);
    assert_int_equal(c.win, 8);
    assert_int_equal(dp_warmup_ctl_fault(&c, 2 * MS, 4), 1);
    assert_int_equal(c.win, 8);
    assert_int_equal(c.fault_backoffs, 1);
    assert_int_equal(dp_warmup_ctl_fault_wait(&c, 2 * MS), 1800 * US);
    assert_int_equal(dp_warmup_ctl_fault_wait(&c, 100 * US), 0);
    /* the round ends: no growth in it; the next round may halve again */
    for (uint32_t k = 0; k < 8; k++)
        dp_warmup_ctl_done(&c, c.chunk, MS * (k + 1));
    assert_int_equal(c.win, 8);
    assert_int_equal(dp_warmup_ctl_fault(&c, 2 * MS, 4), 1);
    assert_int_equal(c.win, 4);
    /* never below the minimum */
    for (int r = 0; r < 10; r++) {
        c.round_slow_fault = 0;
        dp_warmup_ctl_fault(&c, 2 * MS, 1);
    }
    assert_int_equal(c.win, DP_WU_WIN_MIN);
}

static void ctl_chunk_shrinks_under_slow_faults_and_grows_back(void **state)
{
    (void)state;
    struct dp_warmup_ctl c;
    dp_warmup_ctl_init(&c, 0, 0);
    dp_warmup_ctl_chunk(&c, 16);
    assert_int_equal(c.chunk, 16);
    dp_warmup_ctl_chunk(&c, 1); /* never below the shared lane's size */
    assert_int_equal(c.chunk, DP_WU_CHUNK_PAGES);
    dp_warmup_ctl_chunk(&c, 16);
    for (int i = 0; i < 4; i++)
        dp_warmup_ctl_fault(&c, 200 * US, 0);
    /* above the minimum window a slow fault halves the window only */
    c.win = 4;
    assert_int_equal(dp_warmup_ctl_fault(&c, 2 * MS, 2), 1);
    assert_int_equal(c.win, 2);
    assert_int_equal(c.chunk, 16);
    /* at the minimum window (what a FIFO bottleneck leads to): the chunk, one
     * halving per round, down to DP_WU_CHUNK_PAGES */
    for (int r = 0; r < 4; r++) {
        c.round_slow_fault = 0;
        dp_warmup_ctl_fault(&c, 2 * MS, 2);
    }
    assert_int_equal(c.chunk, DP_WU_CHUNK_PAGES);
    assert_int_equal(c.chunk_cuts, 2);
    assert_int_equal(c.win, DP_WU_WIN_MIN);
    c.round_slow_fault = 0;
    /* no slow fault any more: the window grows, and at twice its minimum the
     * chunk doubles back (window halved) up to where it started */
    run_rounds(&c, 200, 64, 0);
    assert_int_equal(c.chunk, 16);
    assert_true(c.win >= DP_WU_WIN_MIN);
}

static void ctl_rate_cap_limits_bytes_per_second(void **state)
{
    (void)state;
    struct dp_warmup_ctl c;
    dp_warmup_ctl_init(&c, 1000000, 0); /* 1 MB/s */
    c.win = 64;
    uint64_t sent = 0, now = 0;
    for (int i = 0; i < 1000; i++) { /* 10 s in 10 ms steps; every request completes at once */
        now += 10 * MS;
        uint32_t n = dp_warmup_ctl_allow(&c, 0, now);
        for (uint32_t k = 0; k < n; k++) {
            dp_warmup_ctl_sent(&c, c.chunk);
            sent += c.chunk * PG;
        }
    }
    /* 10 s at 1 MB/s, plus at most the burst (50 ms and one request) */
    assert_true(sent <= 10000000 + 50000 + 16 * PG);
    assert_true(sent >= 9000000);
}

/* ---- glue, with a fake daemon ---- */

#define FAKE_PAGES 4096

struct fake {
    uint8_t state[FAKE_PAGES]; /* 0 remote, 1 in flight, 2 resident */
    uint64_t budget;
    int all_resident_calls;
    uint64_t max_used;
    int sync;                  /* complete inside the submit, as a local source does */
    uint64_t fetch_calls;
    struct dp_lzw *w;
};

static int64_t fake_fetch(void *ctx, int task, uint64_t img, uint32_t n)
{
    struct fake *f = ctx;
    assert_int_equal(task, 1);
    f->fetch_calls++;
    int64_t sent = 0;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t pg = img / PG + i;
        assert_true(pg < FAKE_PAGES);
        if (f->state[pg] == 0) {
            f->state[pg] = f->sync ? 2 : 1;
            sent++;
        }
    }
    if (f->sync && sent)
        dp_lzw_done(f->w, (uint32_t)sent, 0);
    return sent;
}

static void fake_each_range(void *ctx, void (*add)(void *arg, int task, uint64_t img, uint64_t npages), void *arg)
{
    (void)ctx;
    add(arg, 1, 0, FAKE_PAGES);
}

static int fake_task_of(void *ctx, int32_t pid)
{
    (void)ctx;
    return pid == 1 ? 1 : -1;
}

static uint64_t count(const struct fake *f, int st)
{
    uint64_t n = 0;
    for (int i = 0; i < FAKE_PAGES; i++)
        n += f->state[i] == st;
    return n;
}

static uint64_t fake_remote(void *ctx)
{
    struct fake *f = ctx;
    return count(f, 0) + count(f, 1) + count(f, 3);
}

static uint64_t fake_used(void *ctx)
{
    struct fake *f = ctx;
    uint64_t u = count(f, 1) + count(f, 2);
    if (u > f->max_used)
        f->max_used = u;
    return u;
}

static uint64_t fake_budget(void *ctx)
{
    return ((struct fake *)ctx)->budget;
}

static void fake_all_resident(void *ctx)
{
    ((struct fake *)ctx)->all_resident_calls++;
}

/* Completes every page in flight, one fetch per page (as a daemon that
 * split every request would). */
static void fake_complete_all(struct fake *f, uint64_t now)
{
    for (int i = 0; i < FAKE_PAGES; i++) {
        if (f->state[i] == 1) {
            f->state[i] = 2;
            dp_lzw_done(f->w, 1, now);
        }
    }
    assert_int_equal(f->w->inflight_pages, 0);
}

static void glue_setup(struct fake *f, struct dp_lzw *w, enum dp_warmup_mode mode, const struct dp_hotset *order)
{
    memset(f, 0, sizeof(*f));
    f->w = w;
    struct dp_lzw_opts o = {.mode = mode, .order = order};
    struct dp_lzw_io io = {.ctx = f, .fetch = fake_fetch, .each_range = fake_each_range, .task_of_pid = fake_task_of,
                           .remote_pages = fake_remote, .used_pages = fake_used, .budget_pages = fake_budget,
                           .all_resident = fake_all_resident};
    dp_lzw_init(w, &o, &io, 0);
}

static void glue_all_ends_with_everything_resident_once(void **state)
{
    (void)state;
    struct fake f;
    struct dp_lzw w;
    glue_setup(&f, &w, DP_WARMUP_ALL, NULL);
    dp_lzw_pump(&w, 0); /* not begun: nothing */
    assert_int_equal(w.inflight_pages, 0);
    dp_lzw_begin(&w, MS);
    uint64_t now = MS;
    for (int i = 0; i < 10000 && w.state == DP_LZW_RUNNING; i++) {
        dp_lzw_pump(&w, now);
        assert_true(w.inflight_pages <= (uint64_t)w.ctl.win * DP_WU_CHUNK_PAGES);
        now += 100 * US;
        fake_complete_all(&f, now);
    }
    assert_int_equal(w.state, DP_LZW_DONE);
    assert_int_equal(count(&f, 2), FAKE_PAGES);
    assert_int_equal(f.all_resident_calls, 1);
    assert_int_equal(w.all_here, 1);
    json_t *j = dp_lzw_json(&w);
    assert_non_null(j);
    assert_false(json_is_true(json_object_get(j, "source_needed")));
    assert_int_equal(json_integer_value(json_object_get(j, "pages_moved")), FAKE_PAGES);
    assert_string_equal(json_string_value(json_object_get(j, "state")), "done");
    json_decref(j);
    struct dp_sbuf b = {0};
    dp_lzw_metrics(&w, &b);
    assert_false(b.oom);
    assert_non_null(strstr(b.p, "\ndistriproc_lazyd_warmup_bytes_total 16777216\n"));
    assert_non_null(strstr(b.p, "\ndistriproc_lazyd_warmup_running 0\n"));
    assert_non_null(strstr(b.p, "\ndistriproc_lazyd_warmup_source_needed 0\n"));
    assert_non_null(strstr(b.p, "# TYPE distriproc_lazyd_warmup_fault_latency_seconds histogram"));
    dp_sbuf_free(&b);
    dp_lzw_free(&w);
}

/* A fetch that completes before the submit returns must not leave pages
 * counted in flight for ever (the window would close for good). */
static void glue_counts_a_completion_inside_the_submit(void **state)
{
    (void)state;
    struct fake f;
    struct dp_lzw w;
    glue_setup(&f, &w, DP_WARMUP_ALL, NULL);
    f.sync = 1;
    dp_lzw_begin(&w, 0);
    for (int i = 0; i < 1000 && w.state == DP_LZW_RUNNING; i++) {
        dp_lzw_pump(&w, (uint64_t)i * MS);
        assert_int_equal(w.inflight_pages, 0);
    }
    assert_int_equal(w.state, DP_LZW_DONE);
    assert_int_equal(w.pages, FAKE_PAGES);
    assert_int_equal(count(&f, 2), FAKE_PAGES);
    dp_lzw_free(&w);
}

/* A page in flight for a fault (not the warm-up's) keeps the memory from
 * being all here: the warm-up sweeps again, but an idle sweep waits 100 ms
 * instead of rescanning at every loop turn. */
static void glue_idle_sweeps_are_paced(void **state)
{
    (void)state;
    struct fake f;
    struct dp_lzw w;
    glue_setup(&f, &w, DP_WARMUP_ALL, NULL);
    f.state[7] = 3; /* a fault's fetch, not the warm-up's: neither remote nor resident */
    dp_lzw_begin(&w, 0);
    uint64_t now = 0;
    for (int i = 0; i < 100 && count(&f, 0); i++) {
        dp_lzw_pump(&w, now);
        fake_complete_all(&f, now);
    }
    assert_int_equal(count(&f, 0), 0);
    /* remote_pages counts the fault's page: not done, and many loop turns at
     * one time scan the plan at most twice more */
    uint64_t calls = f.fetch_calls;
    for (int i = 0; i < 1000; i++)
        dp_lzw_pump(&w, now);
    assert_int_equal(w.state, DP_LZW_RUNNING);
    assert_true(f.fetch_calls - calls <= 2 * FAKE_PAGES / DP_WU_CHUNK_PAGES);
    /* the fault's page arrives; the next sweep (100 ms on) finds all here */
    f.state[7] = 2;
    dp_lzw_pump(&w, now + 150 * MS);
    dp_lzw_pump(&w, now + 150 * MS);
    dp_lzw_pump(&w, now + 300 * MS);
    dp_lzw_pump(&w, now + 300 * MS);
    assert_int_equal(w.state, DP_LZW_DONE);
    assert_int_equal(f.all_resident_calls, 1);
    dp_lzw_free(&w);
}

static void glue_never_exceeds_the_budget(void **state)
{
    (void)state;
    struct fake f;
    struct dp_lzw w;
    glue_setup(&f, &w, DP_WARMUP_ALL, NULL);
    f.budget = 1500; /* pages; the margin keeps 512 free */
    dp_lzw_begin(&w, 0);
    uint64_t now = 0;
    for (int i = 0; i < 10000 && w.state == DP_LZW_RUNNING; i++) {
        dp_lzw_pump(&w, now);
        now += 100 * US;
        fake_complete_all(&f, now);
    }
    assert_int_equal(w.state, DP_LZW_DONE);
    assert_true(count(&f, 2) <= 1500 - 512 + DP_WU_CHUNK_PAGES);
    assert_true(count(&f, 2) >= 1500 - 512 - DP_WU_CHUNK_PAGES);
    assert_true(f.max_used <= 1500);
    assert_int_equal(f.all_resident_calls, 0);
    assert_non_null(strstr(w.done_why, "budget"));
    dp_lzw_free(&w);
}

static void glue_faults_overtake_the_queued_plan(void **state)
{
    (void)state;
    struct fake f;
    struct dp_lzw w;
    glue_setup(&f, &w, DP_WARMUP_ALL, NULL);
    dp_lzw_begin(&w, 0);
    dp_lzw_pump(&w, 0);
    uint32_t ahead = dp_lzw_fault_sent(&w);
    assert_int_equal(ahead, w.inflight_pages / DP_WU_CHUNK_PAGES);
    assert_true(ahead >= 1);
    assert_true(w.max_ahead_pages <= (uint64_t)w.ctl.win * DP_WU_CHUNK_PAGES);
    dp_lzw_fault(&w, 200 * US, ahead);
    assert_int_equal(w.faults_overtook, 1);
    assert_true(w.max_left_at_fault >= FAKE_PAGES - (uint64_t)w.ctl.win * DP_WU_CHUNK_PAGES);
    assert_int_equal(w.fault_during.count, 1);
    dp_lzw_free(&w);
}

static void glue_hot_mode_warms_the_hot_set_only(void **state)
{
    (void)state;
    struct dp_hotset tr;
    uint8_t id[DP_CPID_SIZE] = {0};
    dp_hotset_init(&tr, DP_HS_TRACE, id, 0, 0);
    assert_int_equal(dp_hotset_add_task(&tr, 1), 0);
    assert_int_equal(dp_hotset_add_run(&tr, 100 * PG, 50, 1000, 0), 0);
    struct fake f;
    struct dp_lzw w;
    glue_setup(&f, &w, DP_WARMUP_HOT, &tr);
    dp_lzw_begin(&w, 0);
    uint64_t now = 0;
    for (int i = 0; i < 100 && w.state == DP_LZW_RUNNING; i++) {
        dp_lzw_pump(&w, now);
        now += 100 * US;
        fake_complete_all(&f, now);
    }
    assert_int_equal(w.state, DP_LZW_DONE);
    assert_int_equal(count(&f, 2), 50);
    for (int i = 100; i < 150; i++)
        assert_int_equal(f.state[i], 2);
    assert_int_equal(f.all_resident_calls, 0);
    dp_hotset_free(&tr);
    dp_lzw_free(&w);
}

static void glue_none_is_off(void **state)
{
    (void)state;
    struct fake f;
    struct dp_lzw w;
    glue_setup(&f, &w, DP_WARMUP_NONE, NULL);
    dp_lzw_begin(&w, 0);
    dp_lzw_pump(&w, 0);
    assert_int_equal(w.state, DP_LZW_OFF);
    assert_int_equal(count(&f, 0), FAKE_PAGES);
    /* its faults are measured as with a warm-up (the baseline of one) */
    dp_lzw_fault(&w, 100, 0);
    assert_int_equal(w.fault_idle.count, 1);
    assert_int_equal(w.faults_overtook, 0);
    dp_lzw_free(&w);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(mode_parses_the_three_names_only),
        cmocka_unit_test(plan_orders_trace_then_heat_then_rest),
        cmocka_unit_test(plan_hot_mode_drops_the_rest_and_refuses_bad_ranges),
        cmocka_unit_test(budget_room_saturates),
        cmocka_unit_test(ctl_grows_to_the_knee_and_stays_near_it),
        cmocka_unit_test(ctl_halves_when_a_fault_queues_behind),
        cmocka_unit_test(ctl_chunk_shrinks_under_slow_faults_and_grows_back),
        cmocka_unit_test(ctl_rate_cap_limits_bytes_per_second),
        cmocka_unit_test(glue_all_ends_with_everything_resident_once),
        cmocka_unit_test(glue_counts_a_completion_inside_the_submit),
        cmocka_unit_test(glue_idle_sweeps_are_paced),
        cmocka_unit_test(glue_never_exceeds_the_budget),
        cmocka_unit_test(glue_faults_overtake_the_queued_plan),
        cmocka_unit_test(glue_hot_mode_warms_the_hot_set_only),
        cmocka_unit_test(glue_none_is_off),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
