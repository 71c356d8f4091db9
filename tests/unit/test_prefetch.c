/* prefetch: the pure policy (none, seq:N, stride, auto) and its hit/miss
 * inference. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "prefetch.h"

#define P 4096ull
#define LO 0x10000000ull
#define HI (LO + 1000 * P)

static int plan(struct dp_prefetch_cfg *c, struct dp_prefetch_state *s, uint64_t fault, struct dp_pf_range *out)
{
    return dp_prefetch_plan(c, s, fault, LO, HI, out, DP_PF_MAX_RANGES);
}

static void parse(void **st)
{
    (void)st;
    struct dp_prefetch_cfg c;
    struct dp_err e;
    char buf[32];
    assert_int_equal(dp_prefetch_parse("none", &c, &e), 0);
    assert_int_equal(c.mode, DP_PF_NONE);
    assert_int_equal(dp_prefetch_parse("seq:16", &c, &e), 0);
    assert_int_equal(c.mode, DP_PF_SEQ);
    assert_int_equal(c.n, 16);
    dp_prefetch_format(&c, buf, sizeof(buf));
    assert_string_equal(buf, "seq:16");
    assert_int_equal(dp_prefetch_parse("stride", &c, &e), 0);
    assert_int_equal(c.mode, DP_PF_STRIDE);
    assert_int_equal(dp_prefetch_parse("stride:4", &c, &e), 0);
    assert_int_equal(c.n, 4);
    assert_int_equal(dp_prefetch_parse("auto", &c, &e), 0);
    assert_int_equal(c.mode, DP_PF_AUTO);
    assert_int_equal(dp_prefetch_parse("auto:64", &c, &e), 0);
    assert_int_equal(c.max, 64);
    const char *bad[] = {"", "seq:", "seq:0", "seq:-1", "seq:99999", "stride:x", "auto:0", "magic", "seq:8x"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(&e, 0, sizeof(e));
        assert_int_equal(dp_prefetch_parse(bad[i], &c, &e), -1);
        assert_non_null(strstr(e.msg, "prefetch"));
    }
}

static void none_prefetches_nothing(void **st)
{
    (void)st;
    struct dp_prefetch_cfg c = {.mode = DP_PF_NONE};
    struct dp_prefetch_state s;
    struct dp_pf_range r[DP_PF_MAX_RANGES];
    dp_prefetch_state_init(&s);
    for (int i = 0; i < 10; i++)
        assert_int_equal(plan(&c, &s, LO + (uint64_t)i * P, r), 0);
}

static void seq_takes_next_n_within_the_region(void **st)
{
    (void)st;
    struct dp_prefetch_cfg c = {.mode = DP_PF_SEQ, .n = 8};
    struct dp_prefetch_state s;
    struct dp_pf_range r[DP_PF_MAX_RANGES];
    dp_prefetch_state_init(&s);
    assert_int_equal(plan(&c, &s, LO + 10 * P, r), 1);
    assert_int_equal(r[0].addr, LO + 11 * P);
    assert_int_equal(r[0].npages, 8);
    /* clipped at the region's end, never past it */
    assert_int_equal(plan(&c, &s, HI - 3 * P, r), 1);
    assert_int_equal(r[0].addr, HI - 2 * P);
    assert_int_equal(r[0].npages, 2);
    assert_int_equal(plan(&c, &s, HI - P, r), 0);
    /* outside the region: nothing */
    assert_int_equal(plan(&c, &s, HI, r), 0);
}

static void seq_infers_hits_and_misses(void **st)
{
    (void)st;
    struct dp_prefetch_cfg c = {.mode = DP_PF_SEQ, .n = 8};
    struct dp_prefetch_state s;
    struct dp_pf_range r[DP_PF_MAX_RANGES];
    dp_prefetch_state_init(&s);
    plan(&c, &s, LO, r);              /* window [1, 9) */
    plan(&c, &s, LO + 9 * P, r);      /* right after it: 8 pages used */
    assert_int_equal(s.hits_inferred, 8);
    assert_int_equal(s.misses, 0);
    plan(&c, &s, LO + 500 * P, r);    /* elsewhere: the window [10, 18) was wasted */
    assert_int_equal(s.misses, 8);
    plan(&c, &s, LO + 503 * P, r);    /* inside the last window: neither */
    assert_int_equal(s.hits_inferred, 8);
    assert_int_equal(s.misses, 8);
}

static void stride_detects_a_constant_stride(void **st)
{
    (void)st;
    struct dp_prefetch_cfg c = {.mode = DP_PF_STRIDE, .n = 4};
    struct dp_prefetch_state s;
    struct dp_pf_range r[DP_PF_MAX_RANGES];
    dp_prefetch_state_init(&s);
    assert_int_equal(plan(&c, &s, LO, r), 0);           /* first fault: nothing known */
    assert_int_equal(plan(&c, &s, LO + 3 * P, r), 0);   /* one delta: not confirmed */
    int n = plan(&c, &s, LO + 6 * P, r);                /* same delta again: stride 3 */
    assert_int_equal(n, 4);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(r[i].addr, LO + (6 + 3 * (uint64_t)(i + 1)) * P);
        assert_int_equal(r[i].npages, 1);
    }
    /* the app walked through the prefetched pages: next fault one stride after */
    n = plan(&c, &s, LO + 21 * P, r);
    assert_int_equal(n, 4);
    assert_int_equal(r[0].addr, LO + 24 * P);
    assert_int_equal(s.hits_inferred, 4);
    /* a negative stride works too, and a broken pattern stops prefetching */
    dp_prefetch_state_init(&s);
    plan(&c, &s, LO + 100 * P, r);
    plan(&c, &s, LO + 98 * P, r);
    n = plan(&c, &s, LO + 96 * P, r);
    assert_int_equal(n, 4);
    assert_int_equal(r[0].addr, LO + 94 * P);
    assert_int_equal(r[3].addr, LO + 88 * P);
    assert_int_equal(plan(&c, &s, LO + 300 * P, r), 0);
    /* stride 1 coalesces into one range */
    dp_prefetch_state_init(&s);
    plan(&c, &s, LO, r);
    plan(&c, &s, LO + P, r);
    n = plan(&c, &s, LO + 2 * P, r);
    assert_int_equal(n, 1);
    assert_int_equal(r[0].addr, LO + 3 * P);
    assert_int_equal(r[0].npages, 4);
}

static void stride_is_per_mapping(void **st)
{
    (void)st;
    struct dp_prefetch_cfg c = {.mode = DP_PF_STRIDE, .n = 2};
    struct dp_prefetch_state s;
    struct dp_pf_range r[DP_PF_MAX_RANGES];
    const uint64_t LO2 = 0x20000000ull, HI2 = LO2 + 1000 * P;
    dp_prefetch_state_init(&s);
    /* two interleaved streams in two mappings each keep their own stride */
    for (int i = 0; i < 3; i++) {
        int a = dp_prefetch_plan(&c, &s, LO + (uint64_t)i * 2 * P, LO, HI, r, DP_PF_MAX_RANGES);
        int b = dp_prefetch_plan(&c, &s, LO2 + (uint64_t)i * 5 * P, LO2, HI2, r, DP_PF_MAX_RANGES);
        if (i == 2) {
            assert_int_equal(a, 2);
            assert_int_equal(b, 2);
            assert_int_equal(r[0].addr, LO2 + 15 * P);
            assert_int_equal(r[1].addr, LO2 + 20 * P);
        }
    }
}

static void auto_widens_on_hits_and_shrinks_on_misses(void **st)
{
    (void)st;
    struct dp_prefetch_cfg c = {.mode = DP_PF_AUTO, .n = 4, .max = 64};
    struct dp_prefetch_state s;
    struct dp_pf_range r[DP_PF_MAX_RANGES];
    dp_prefetch_state_init(&s);
    uint64_t f = LO;
    int n = plan(&c, &s, f, r);
    assert_int_equal(n, 1);
    assert_int_equal(r[0].npages, 4);
    /* a sequential reader consumes each window: it doubles up to max */
    uint32_t last = 4;
    for (int i = 0; i < 6; i++) {
        f = r[0].addr + (uint64_t)r[0].npages * P;
        n = plan(&c, &s, f, r);
        assert_int_equal(n, 1);
        assert_true(r[0].npages >= last);
        last = r[0].npages;
    }
    assert_int_equal(last, 64);
    /* random faults halve it down to nothing */
    uint64_t far[] = {700, 30, 900, 400, 60, 800, 200, 500, 100};
    for (size_t i = 0; i < sizeof(far) / sizeof(far[0]); i++)
        n = plan(&c, &s, LO + far[i] * P, r);
    assert_int_equal(n, 0);
    assert_true(s.misses > 0);
    /* and a sequential run regrows it */
    f = LO + 10 * P;
    plan(&c, &s, f, r);
    n = plan(&c, &s, f + P, r);
    assert_int_equal(n, 1);
    assert_int_equal(r[0].npages, 1);
    n = plan(&c, &s, f + 3 * P, r);
    assert_int_equal(r[0].npages, 2);
}


/* ---- streams ------------------------------------------------------------ */

#define BIG_PAGES 65536ull
#define BIG_HI (LO + BIG_PAGES * P)

/* The daemon's side, simulated: a page that is resident never faults again;
 * a fault installs its page and every page the policy planned (the daemon
 * fetches only remote pages, and reports how many it really fetched). */
struct sim {
    uint8_t resident[BIG_PAGES];
    uint8_t touched[BIG_PAGES]; /* read by a walker */
    uint8_t noted[BIG_PAGES];   /* in the first-touch trace: faulted, or in a walked window */
    uint64_t faults, fetched;
};

static void sim_touch(struct sim *m, const struct dp_prefetch_cfg *c, struct dp_prefetch_state *s, uint64_t page)
{
    m->touched[page] = 1;
    if (m->resident[page])
        return;
    m->faults++;
    m->resident[page] = 1;
    m->fetched++;
    m->noted[page] = 1;
    struct dp_pf_range r[DP_PF_MAX_RANGES];
    int n = dp_prefetch_plan(c, s, LO + page * P, LO, BIG_HI, r, DP_PF_MAX_RANGES);
    for (uint64_t a = s->walked_lo; a < s->walked_hi; a += P) {
        assert_true(a >= LO && a < BIG_HI);
        m->noted[(a - LO) / P] = 1;
    }
    uint32_t got = 0;
    for (int i = 0; i < n; i++)
        for (uint32_t k = 0; k < r[i].npages; k++) {
            uint64_t q = (r[i].addr - LO) / P + k;
            assert_true(q < BIG_PAGES);
            assert_true(q != page); /* never the faulted page itself */
            if (!m->resident[q]) {
                m->resident[q] = 1;
                got++;
            }
        }
    if (n)
        dp_prefetch_window_actual(s, LO, got);
    m->fetched += got;
}

/* T threads, each walking its own quarter (or T-th) of the region in order,
 * their faults interleaved one by one; with probe, each value read follows a
 * random probe into the first 8192 pages (a hash table), as the cache of the
 * issue does. Returns the faults taken; *fetched gets the pages moved. */
static uint64_t run_walkers_sim(const char *policy, unsigned threads, bool probe, uint64_t steps, uint64_t *fetched,
                                struct sim **keep)
{
    struct dp_prefetch_cfg c;
    struct dp_err e;
    assert_int_equal(dp_prefetch_parse(policy, &c, &e), 0);
    struct dp_prefetch_state s;
    dp_prefetch_state_init(&s);
    struct sim *m = calloc(1, sizeof(*m));
    assert_non_null(m);
    uint64_t base = probe ? 8192 : 0, span = (BIG_PAGES - base) / threads, cursor[16];
    for (unsigned t = 0; t < threads; t++)
        cursor[t] = base + span * t;
    uint64_t rng = 12345;
    for (uint64_t i = 0; i < steps; i++)
        for (unsigned t = 0; t < threads; t++) {
            if (probe) {
                rng = rng * 6364136223846793005ull + 1442695040888963407ull;
                sim_touch(m, &c, &s, (rng >> 33) % 8192);
            }
            sim_touch(m, &c, &s, cursor[t]++);
        }
    uint64_t f = m->faults;
    *fetched = m->fetched;
    if (keep)
        *keep = m;
    else
        free(m);
    return f;
}

static uint64_t run_walkers(const char *policy, unsigned threads, bool probe, uint64_t steps, uint64_t *fetched)
{
    return run_walkers_sim(policy, threads, probe, steps, fetched, NULL);
}

static void streams_parse(void **st)
{
    (void)st;
    struct dp_prefetch_cfg c;
    struct dp_err e;
    char buf[32];
    assert_int_equal(dp_prefetch_parse("streams", &c, &e), 0);
    assert_int_equal(c.mode, DP_PF_STREAMS);
    assert_int_equal(c.n, 8);
    assert_int_equal(c.max, 256);
    assert_int_equal(dp_prefetch_parse("streams:64", &c, &e), 0);
    assert_int_equal(c.max, 64);
    dp_prefetch_format(&c, buf, sizeof(buf));
    assert_string_equal(buf, "streams:64");
    assert_int_equal(dp_prefetch_parse("streams:0", &c, &e), -1);
    assert_int_equal(dp_prefetch_parse("streamsx", &c, &e), -1);
}

/* The streams policy with its defaults, and a fresh state. */
static void streams_setup(struct dp_prefetch_cfg *c, struct dp_prefetch_state *s)
{
    struct dp_err e;
    assert_int_equal(dp_prefetch_parse("streams", c, &e), 0);
    dp_prefetch_state_init(s);
}

/* A fault at page `page` of the big region; the ranges planned in r. */
static int big_plan(const struct dp_prefetch_cfg *c, struct dp_prefetch_state *s, uint64_t page,
                    struct dp_pf_range *r)
{
    return dp_prefetch_plan(c, s, LO + page * P, LO, BIG_HI, r, DP_PF_MAX_RANGES);
}

/* Faults never within DP_PF_GAP pages of a recent one start no stream: random
 * access is served exactly as with none. */
static void streams_random_access_prefetches_nothing(void **st)
{
    (void)st;
    struct dp_prefetch_cfg c;
    struct dp_prefetch_state s;
    streams_setup(&c, &s);
    struct dp_pf_range r[DP_PF_MAX_RANGES];
    uint64_t x = 7;
    for (int i = 0; i < 5000; i++) {
        x = (x * 48271) % 2147483647;
        uint64_t page = (x % (BIG_PAGES / 4)) * 4; /* 4 pages apart at least: beyond the gap */
        assert_int_equal(big_plan(&c, &s, page, r), 0);
    }
    assert_int_equal(s.streams_started, 0);
}

/* A stream starts on the third fault in line (two steps of at most
 * DP_PF_GAP pages in one direction), up or down; one nearby fault is not
 * enough. Random faults in a small area (2048 pages, so one lands near one of
 * the last 32 about every 16th fault) seldom line up three in a row. */
static void streams_start_on_three_in_line(void **st)
{
    (void)st;
    struct dp_prefetch_cfg c;
    struct dp_prefetch_state s;
    streams_setup(&c, &s);
    struct dp_pf_range r[DP_PF_MAX_RANGES];
    assert_int_equal(big_plan(&c, &s, 100, r), 0);
    assert_int_equal(big_plan(&c, &s, 101, r), 0);
    assert_int_equal(big_plan(&c, &s, 5000, r), 0);
    assert_int_equal(big_plan(&c, &s, 102, r), 1);
    assert_int_equal(r[0].addr, LO + 103 * P);
    assert_int_equal(r[0].npages, 8);
    /* down, with a gap of 2 pages (a resident page skipped) */
    assert_int_equal(big_plan(&c, &s, 900, r), 0);
    assert_int_equal(big_plan(&c, &s, 898, r), 0);
    assert_int_equal(big_plan(&c, &s, 897, r), 1);
    assert_int_equal(r[0].addr, LO + 889 * P);
    assert_int_equal(r[0].npages, 8);
    assert_int_equal(s.streams_started, 2);

    dp_prefetch_state_init(&s);
    uint64_t x = 11;
    for (int i = 0; i < 20000; i++) {
        x = (x * 48271) % 2147483647;
        big_plan(&c, &s, x % 2048, r);
    }
    /* one nearby fault alone started ~1250 here; three in line, ~1 in 200 */
    assert_true(s.streams_started < 200);
}

/* Four threads walking their quarters, interleaved: each is its own stream,
 * its window doubling to 256 pages; auto, which keeps one stream per mapping,
 * sees every fault land elsewhere and stays near one page per fault. */
static void streams_follow_interleaved_walkers(void **st)
{
    (void)st;
    uint64_t fetched_none, fetched_auto, fetched_streams;
    uint64_t none = run_walkers("none", 4, false, 4096, &fetched_none);
    uint64_t aut = run_walkers("auto", 4, false, 4096, &fetched_auto);
    uint64_t streams = run_walkers("streams", 4, false, 4096, &fetched_streams);
    assert_int_equal(none, 4 * 4096);
    /* Per stream: 3 faults to find it, then one per window of 8, 16, ..., 256
     * pages: 4096 pages take 3 + 5 + (4096 - 3 - 8 - ... - 128) / 256 + 1 <= 24
     * faults, 4 streams <= 96. */
    assert_true(streams <= 96);
    assert_true(aut > 8 * streams);
    /* No page moved that the walkers did not read, except each stream's last
     * window beyond its walk (at most 256 pages each). */
    assert_true(fetched_streams <= 4 * 4096 + 4 * 256);
}

/* The cache of the issue: a random hash-table probe before each value read,
 * values in key order. The probes break every per-mapping stream; the value
 * streams are still found among the recent faults. */
static void streams_see_through_probes(void **st)
{
    (void)st;
    uint64_t fetched_none, fetched_auto, fetched_streams;
    uint64_t none = run_walkers("none", 2, true, 4096, &fetched_none);
    uint64_t aut = run_walkers("auto", 2, true, 4096, &fetched_auto);
    uint64_t streams = run_walkers("streams", 2, true, 4096, &fetched_streams);
    /* none: every value page faults, and every probe to a page not yet read */
    assert_true(none >= 2 * 4096);
    /* streams: the value pages cost a few dozen faults, the probes what they
     * cost under none (the table is read at random either way) */
    uint64_t probe_faults_none = none - 2 * 4096;
    assert_true(streams < probe_faults_none + 2 * 64);
    assert_true(aut > streams + 4096);
}

/* The first-touch trace under streams: every page a walker read in order
 * shows up, by its fault or in a window the stream walked through, except
 * those of each stream's last window (never judged), and no page shows up
 * that no walker read. With probes, the same holds for the values; the
 * table is read at random, so a table page that a window of two nearby
 * probes brought in and a later probe read is missing from the trace, like
 * any prefetched page of a window never judged walked (docs/hotset.md). */
static void streams_walked_windows_complete_the_trace(void **st)
{
    (void)st;
    for (int probe = 0; probe <= 1; probe++) {
        uint64_t fetched;
        struct sim *m = NULL;
        run_walkers_sim("streams", 4, probe, 4096, &fetched, &m);
        uint64_t missing = 0, extra = 0, touched = 0;
        for (uint64_t i = probe ? 8192 : 0; i < BIG_PAGES; i++) {
            touched += m->touched[i];
            missing += m->touched[i] && !m->noted[i];
            extra += m->noted[i] && !m->touched[i];
        }
        assert_int_equal(touched, 4 * 4096);
        assert_int_equal(extra, 0);
        assert_true(missing <= 4 * 256); /* the last window of each of the 4 streams */
        free(m);
    }
    /* none notes exactly the faults: nothing is ever walked through */
    uint64_t fetched;
    struct sim *m = NULL;
    run_walkers_sim("none", 4, false, 4096, &fetched, &m);
    for (uint64_t i = 0; i < BIG_PAGES; i++)
        assert_int_equal(m->noted[i], m->touched[i]);
    free(m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parse),
        cmocka_unit_test(none_prefetches_nothing),
        cmocka_unit_test(seq_takes_next_n_within_the_region),
        cmocka_unit_test(seq_infers_hits_and_misses),
        cmocka_unit_test(stride_detects_a_constant_stride),
        cmocka_unit_test(stride_is_per_mapping),
        cmocka_unit_test(auto_widens_on_hits_and_shrinks_on_misses),
        cmocka_unit_test(streams_parse),
        cmocka_unit_test(streams_random_access_prefetches_nothing),
        cmocka_unit_test(streams_start_on_three_in_line),
        cmocka_unit_test(streams_follow_interleaved_walkers),
        cmocka_unit_test(streams_see_through_probes),
        cmocka_unit_test(streams_walked_windows_complete_the_trace),
    };
    return cmocka_run_group_tests_name("prefetch", tests, NULL, NULL);
}
