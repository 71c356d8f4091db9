/* prefetch: the pure policy (none, seq:N, stride, auto) and its hit/miss
 * inference. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
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
    };
    return cmocka_run_group_tests_name("prefetch", tests, NULL, NULL);
}
