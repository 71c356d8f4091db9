/* Unit tests of the fault-trace recorder (lib/trace.h) and the replay
 * planner (lib/replay.h), driven with synthetic times and a fake daemon. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "accesslog.h"
#include "replay.h"
#include "trace.h"

#define PG 4096ULL
#define MS 1000000ULL
static const uint8_t ID[DP_CPID_SIZE] = {9, 9, 9};

static void trace_records_first_touches_in_order(void **state)
{
    (void)state;
    struct dp_trace t;
    dp_trace_init(&t, 1000 * MS, 2.0);
    assert_false(dp_trace_open(&t, 999 * MS));
    assert_int_equal(dp_trace_note(&t, 1, 0x10000, 999 * MS), 0); /* before the window */
    /* pid 1: pages 0x20..0x22 in order, then 0x10; pid 7 in between */
    assert_int_equal(dp_trace_note(&t, 1, 0x20000, 1001 * MS), 1);
    assert_int_equal(dp_trace_note(&t, 7, 0x20000, 1002 * MS), 1);  /* other pid: another page */
    assert_int_equal(dp_trace_note(&t, 1, 0x21123, 1003 * MS), 1);  /* unaligned: its page */
    assert_int_equal(dp_trace_note(&t, 1, 0x20000, 1004 * MS), 0);  /* again: nothing */
    assert_int_equal(dp_trace_note(&t, 1, 0x22000, 1005 * MS), 1);
    assert_int_equal(dp_trace_note(&t, 1, 0x10000, 1500 * MS), 1);
    assert_int_equal(dp_trace_note(&t, 1, 0x90000, 3000 * MS), 0);  /* after the window */
    assert_int_equal(t.n, 5);
    assert_int_equal(t.dropped, 2);

    struct dp_hotset hs;
    struct dp_err err = {{0}};
    assert_int_equal(dp_trace_build(&t, ID, 42, &hs, &err), 0);
    assert_int_equal(hs.source, DP_HS_TRACE);
    assert_int_equal(hs.window_ms, 2000);
    assert_int_equal(hs.nr_tasks, 2);
    assert_int_equal(hs.tasks[0].pid, 1);
    assert_int_equal(hs.tasks[0].nr_runs, 2);
    assert_int_equal(hs.tasks[0].runs[0].vaddr, 0x20000);
    assert_int_equal(hs.tasks[0].runs[0].nr_pages, 3);
    assert_int_equal(hs.tasks[0].runs[0].t_ms, 1);
    assert_int_equal(hs.tasks[0].runs[1].vaddr, 0x10000);
    assert_int_equal(hs.tasks[0].runs[1].t_ms, 500);
    assert_int_equal(hs.tasks[1].pid, 7);
    assert_int_equal(hs.total_pages, 5);
    /* it encodes (a valid hot set) */
    uint8_t *buf;
    size_t len;
    assert_int_equal(dp_hotset_encode(&hs, &buf, &len, &err), 0);
    free(buf);
    dp_hotset_free(&hs);
    dp_trace_free(&t);

    /* many pages: the hash grows; random order is kept */
    dp_trace_init(&t, 0, 10);
    uint64_t x = 12345;
    size_t fresh = 0;
    for (int i = 0; i < 100000; i++) {
        x = x * 6364136223846793005ull + 1442695040888963407ull;
        fresh += (size_t)dp_trace_note(&t, (int32_t)(1 + (x >> 60) % 3), ((x >> 20) % 50000) * PG, (uint64_t)i);
    }
    assert_int_equal(fresh, t.n);
    assert_true(t.n > 50000 && t.n <= 150000);
    assert_int_equal(dp_trace_build(&t, ID, 1, &hs, &err), 0);
    assert_int_equal(hs.total_pages, t.n);
    dp_hotset_free(&hs);
    dp_trace_free(&t);

    /* nothing recorded: no hot set */
    dp_trace_init(&t, 0, 1);
    assert_int_equal(dp_trace_build(&t, ID, 1, &hs, &err), -1);
    assert_non_null(strstr(err.msg, "empty"));
    dp_trace_free(&t);
}

/* A fake daemon: pages are remote unless listed resident; pid 3 is gone. */
struct fake {
    uint64_t resident_lo, resident_hi;
    struct { int32_t pid; uint64_t addr; uint32_t n; int64_t got; } calls[256];
    int ncalls;
};

static int64_t fake_fetch(void *ctx, int32_t pid, uint64_t addr, uint32_t n)
{
    struct fake *f = ctx;
    int64_t got = 0;
    if (pid == 3)
        got = -1;
    else
        for (uint32_t i = 0; i < n; i++) {
            uint64_t a = addr + i * PG;
            got += !(a >= f->resident_lo && a < f->resident_hi);
        }
    f->calls[f->ncalls].pid = pid;
    f->calls[f->ncalls].addr = addr;
    f->calls[f->ncalls].n = n;
    f->calls[f->ncalls].got = got;
    f->ncalls++;
    return got;
}

static void replay_orders_batches_and_windows(void **state)
{
    (void)state;
    struct dp_hotset hs;
    dp_hotset_init(&hs, DP_HS_MERGED, ID, 1, 1);
    dp_hotset_add_task(&hs, 1);
    dp_hotset_add_run(&hs, 0x100000, 10, 1000, 5);   /* second by time */
    dp_hotset_add_run(&hs, 0x900000, 3, 1000, 50);   /* fourth */
    dp_hotset_add_task(&hs, 2);
    dp_hotset_add_run(&hs, 0x200000, 4, 1000, 0);    /* first */
    dp_hotset_add_run(&hs, 0x300000, 1, 1000, 5);    /* third: same time as pid 1's, later in the file */
    dp_hotset_add_task(&hs, 3);                      /* gone */
    dp_hotset_add_run(&hs, 0x400000, 2, 1000, 1);
    dp_hotset_add_run(&hs, 0x500000, 2, 1000, 60);

    struct dp_replay r;
    struct dp_err err = {{0}};
    struct fake f = {.resident_lo = 0x102000, .resident_hi = 0x104000}; /* 2 of pid 1's pages */
    assert_int_equal(dp_replay_init(&r, &hs, 4, 8, &err), 0);
    assert_int_equal(r.total_pages, 22);
    /* window 8, batches of 4: pid 2's run (4), pid 3 gone (skipped with its
     * later run), pid 1's first batch (2 of 4 are resident: 2); then the
     * window (6 + 4 > 8) stops it */
    assert_int_equal(dp_replay_pump(&r, fake_fetch, &f, 100), 6);
    assert_int_equal(f.ncalls, 3);
    assert_int_equal(f.calls[0].pid, 2);
    assert_int_equal(f.calls[0].addr, 0x200000);
    assert_int_equal(f.calls[0].n, 4);
    assert_int_equal(f.calls[1].pid, 3);
    assert_int_equal(f.calls[1].got, -1);
    assert_int_equal(f.calls[2].pid, 1);
    assert_int_equal(f.calls[2].addr, 0x100000);
    assert_int_equal(f.calls[2].got, 2);
    assert_int_equal(dp_replay_inflight(&r), 6);
    assert_int_equal(dp_replay_pump(&r, fake_fetch, &f, 101), 0);
    assert_false(dp_replay_finished(&r));
    dp_replay_completed(&r, 4, 200);
    assert_int_equal(dp_replay_pump(&r, fake_fetch, &f, 201), 4);
    assert_int_equal(f.calls[3].addr, 0x104000);
    assert_int_equal(f.calls[3].n, 4);
    /* drain everything */
    for (int i = 0; i < 50 && !dp_replay_finished(&r); i++) {
        dp_replay_completed(&r, (uint32_t)dp_replay_inflight(&r), 300 + (uint64_t)i);
        dp_replay_pump(&r, fake_fetch, &f, 300 + (uint64_t)i);
    }
    assert_true(dp_replay_finished(&r));
    assert_true(r.done_ns >= 300);
    assert_int_equal(r.start_ns, 100);
    assert_int_equal(r.skipped_pages, 4 + 2);   /* pid 3's 4 pages + 2 resident */
    assert_int_equal(r.submitted_pages, 22 - 6);
    assert_int_equal(r.completed_pages, r.submitted_pages);
    /* order of the calls after pid 3: pid 1 (t 5), pid 2 (t 5), pid 1 (t 50) */
    int seen1 = -1, seen2 = -1, seen9 = -1;
    for (int i = 0; i < f.ncalls; i++) {
        if (f.calls[i].addr == 0x100000)
            seen1 = i;
        if (f.calls[i].addr == 0x300000)
            seen2 = i;
        if (f.calls[i].addr == 0x900000)
            seen9 = i;
        assert_true(f.calls[i].n <= 4);
        assert_true(f.calls[i].addr != 0x500000); /* the gone task's later run is never asked for */
    }
    assert_true(seen1 >= 0 && seen1 < seen2 && seen2 < seen9);
    dp_replay_free(&r);
    dp_hotset_free(&hs);

    /* empty hot set: finished at once */
    dp_hotset_init(&hs, DP_HS_TRACE, ID, 1, 1);
    dp_hotset_add_task(&hs, 1);
    assert_int_equal(dp_replay_init(&r, &hs, 0, 0, &err), 0);
    assert_int_equal(r.batch_pages, DP_REPLAY_BATCH_PAGES);
    assert_int_equal(dp_replay_pump(&r, fake_fetch, &f, 5), 0);
    assert_true(dp_replay_finished(&r));
    dp_replay_free(&r);
    dp_hotset_free(&hs);
}

/* A source that completes inside the fetch call (as a remote source may). */
struct sync_src {
    struct dp_replay *r;
    uint64_t fetched;
};

static int64_t sync_fetch(void *ctx, int32_t pid, uint64_t addr, uint32_t n)
{
    (void)pid;
    (void)addr;
    struct sync_src *s = ctx;
    s->fetched += n;
    dp_replay_completed(s->r, n, 7);
    return n;
}

static void replay_completion_inside_fetch(void **state)
{
    (void)state;
    struct dp_hotset hs;
    struct dp_err err = {{0}};
    dp_hotset_init(&hs, DP_HS_TRACE, ID, 1, 1);
    dp_hotset_add_task(&hs, 1);
    dp_hotset_add_run(&hs, 0x100000, 1000, 1000, 0);
    struct dp_replay r;
    assert_int_equal(dp_replay_init(&r, &hs, 64, 128, &err), 0);
    struct sync_src s = {.r = &r};
    assert_int_equal(dp_replay_pump(&r, sync_fetch, &s, 5), 1000);
    assert_int_equal(s.fetched, 1000);
    assert_int_equal(dp_replay_inflight(&r), 0);
    assert_true(dp_replay_finished(&r));
    assert_true(r.done_ns != 0);
    dp_replay_free(&r);
    dp_hotset_free(&hs);
}

/* Stage mode accounting: hit rate over delivered pages, hits by second
 * since the replay started, and what is left staged. */
static void replay_stage_hits(void **state)
{
    (void)state;
    struct dp_hotset hs;
    struct dp_err err = {{0}};
    dp_hotset_init(&hs, DP_HS_TRACE, ID, 1, 1);
    dp_hotset_add_task(&hs, 1);
    dp_hotset_add_run(&hs, 0x100000, 10, 1000, 0);
    struct dp_replay r;
    assert_int_equal(dp_replay_init(&r, &hs, 0, 0, &err), 0);
    assert_true(dp_replay_hit_rate(&r) < 0);          /* nothing delivered: no rate */
    assert_int_equal(dp_replay_still_staged(&r), 0);
    struct sync_src s = {.r = &r};
    assert_int_equal(dp_replay_pump(&r, sync_fetch, &s, 1000 * MS), 10);
    assert_int_equal(r.start_ns, 1000 * MS);
    /* 8 staged, 2 were waited for in flight (hits at once) */
    r.st.staged = 8;
    dp_replay_hit(&r, 1, 1000 * MS + 1);
    dp_replay_hit(&r, 1, 1000 * MS + 2);
    dp_replay_hit(&r, 0, 1000 * MS + 999 * MS);       /* still second 0 */
    dp_replay_hit(&r, 0, 1000 * MS + 1000 * MS);      /* second 1 */
    dp_replay_hit(&r, 0, 1000 * MS + 4500 * MS);      /* second 4 */
    dp_replay_hit(&r, 0, 1000 * MS + 900000 * MS);    /* after the last slot: counted there */
    r.st.dropped = 1;
    r.st.expired = 1;
    assert_int_equal(r.st.hits, 4);
    assert_int_equal(r.st.hits_inflight, 2);
    /* (4 + 2) / (8 + 2) */
    assert_true(dp_replay_hit_rate(&r) > 0.5999 && dp_replay_hit_rate(&r) < 0.6001);
    assert_int_equal(dp_replay_hits_within(&r, 0), 0);
    assert_int_equal(dp_replay_hits_within(&r, 1), 3);
    assert_int_equal(dp_replay_hits_within(&r, 2), 4);
    assert_int_equal(dp_replay_hits_within(&r, 5), 5);
    assert_int_equal(dp_replay_hits_within(&r, DP_REPLAY_HIT_SECONDS), 5);
    assert_int_equal(r.st.by_second[DP_REPLAY_HIT_SECONDS], 1);
    assert_int_equal(dp_replay_still_staged(&r), 8 - 4 - 1 - 1);
    /* a hit before the replay's clock started (cannot happen) lands in second 0 */
    r.start_ns = 0;
    dp_replay_hit(&r, 0, 5);
    assert_int_equal(dp_replay_hits_within(&r, 1), 4);
    assert_int_equal(dp_replay_still_staged(&r), 1);
    r.st.hits += 5;                                   /* inconsistent counts never underflow */
    assert_int_equal(dp_replay_still_staged(&r), 0);
    dp_replay_free(&r);
    dp_hotset_free(&hs);
}

static void access_log_as_hotset(void **state)
{
    (void)state;
    static const char log[] =
        "{\"start_unix\": 1764133000.123456, \"time_unit\": \"us since start\", \"pages_touched\": 5, \"pages\": [\n"
        "{\"pid\": 1, \"addr\": \"0x100000002000\", \"count\": 2, \"first\": 300, \"last\": 900},\n"
        "{\"pid\": 1, \"addr\": \"0x100000000000\", \"count\": 1, \"first\": 100, \"last\": 100},\n"
        "{\"pid\": 1, \"addr\": \"0x100000001000\", \"count\": 1, \"first\": 200, \"last\": 200},\n"
        "{\"pid\": 4, \"addr\": \"0x5000\", \"count\": 1, \"first\": 150, \"last\": 150},\n"
        "{\"pid\": 1, \"addr\": \"0x200000000000\", \"count\": 9, \"first\": 5000000, \"last\": 6000000}\n"
        "]}\n";
    struct dp_access_ent *e;
    size_t n;
    struct dp_err err = {{0}};
    assert_int_equal(dp_accesslog_parse(log, sizeof(log) - 1, &e, &n, &err), 0);
    assert_int_equal(n, 5);
    assert_int_equal(e[0].addr, 0x100000002000ull);
    assert_int_equal(e[0].count, 2);
    assert_int_equal(e[4].last_us, 6000000);
    struct dp_hotset hs;
    /* the first second: pid 1's three pages in first-access order (one run), then pid 4 */
    assert_int_equal(dp_accesslog_hotset(e, n, 1.0, ID, 77, &hs, &err), 0);
    assert_int_equal(hs.source, DP_HS_TRACE);
    assert_int_equal(hs.window_ms, 1000);
    assert_int_equal(hs.nr_tasks, 2);
    assert_int_equal(hs.tasks[0].pid, 1);
    assert_int_equal(hs.tasks[0].nr_runs, 1);
    assert_int_equal(hs.tasks[0].runs[0].vaddr, 0x100000000000ull);
    assert_int_equal(hs.tasks[0].runs[0].nr_pages, 3);
    assert_int_equal(hs.tasks[1].pid, 4);
    assert_int_equal(hs.total_pages, 4);
    dp_hotset_free(&hs);
    assert_int_equal(dp_accesslog_hotset(e, n, 0, ID, 77, &hs, &err), 0);
    assert_int_equal(hs.total_pages, 5);
    assert_int_equal(hs.tasks[0].runs[1].vaddr, 0x200000000000ull);
    assert_int_equal(hs.tasks[0].runs[1].t_ms, 4999);
    dp_hotset_free(&hs);
    free(e);
    /* malformed entries and documents are refused */
    const char *bad[] = {
        "{\"pages\": [{\"pid\": 1, \"addr\": \"0x1001\", \"count\": 1, \"first\": 1, \"last\": 1}]}",
        "{\"pages\": [{\"pid\": 0, \"addr\": \"0x1000\", \"count\": 1, \"first\": 1, \"last\": 1}]}",
        "{\"pages\": [{\"pid\": 1, \"addr\": \"4096\", \"count\": 1, \"first\": 1, \"last\": 1}]}",
        "{\"pages\": [{\"pid\": 1, \"addr\": \"0x1000\", \"count\": 1, \"first\": 9, \"last\": 1}]}",
        "{\"pages\": [{\"pid\": 1, \"addr\": \"0x1000\", \"count\": 1, \"first\": 1}]}",
        "{\"pages\": [{\"pid\": 1, \"addr\": \"0x1000\"",
        "{\"pagez\": []}",
        /* parsed, not scanned: a log cut after a whole entry, a number as a string */
        "{\"pages\": [{\"pid\": 1, \"addr\": \"0x1000\", \"count\": 1, \"first\": 1, \"last\": 1}",
        "{\"pages\": [{\"pid\": \"1\", \"addr\": \"0x1000\", \"count\": 1, \"first\": 1, \"last\": 1}]}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(dp_accesslog_parse(bad[i], strlen(bad[i]), &e, &n, &err), -1);
        assert_null(e);
    }
    /* an empty log parses, but makes no hot set */
    assert_int_equal(dp_accesslog_parse("{\"pages\": [\n]}", 14, &e, &n, &err), 0);
    assert_int_equal(n, 0);
    assert_int_equal(dp_accesslog_hotset(e, n, 0, ID, 1, &hs, &err), -1);
    free(e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(trace_records_first_touches_in_order),
        cmocka_unit_test(replay_orders_batches_and_windows),
        cmocka_unit_test(replay_completion_inside_fetch),
        cmocka_unit_test(replay_stage_hits),
        cmocka_unit_test(access_log_as_hotset),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
