/* lazymap: range bookkeeping of the lazy-pages daemon as pure logic:
 * remove / unmap / remap / fork semantics and the per-state counters. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>

#include "lazymap.h"

#define P 4096ull
#define A 0x100000ull

static enum dp_pg_state st(struct dp_lazymap *m, uint64_t addr)
{
    uint8_t *pg = dp_lazymap_page(m, addr, NULL);
    assert_non_null(pg);
    return dp_pg_state(*pg);
}

static void add_and_lookup(void **s)
{
    (void)s;
    struct dp_lazymap m;
    dp_lazymap_init(&m);
    assert_int_equal(dp_lazymap_add(&m, A, A + 10 * P, A, DP_PG_REMOTE), 0);
    assert_int_equal(dp_lazymap_add(&m, A + 20 * P, A + 30 * P, A + 20 * P, DP_PG_NONE), 0);
    /* overlap and misalignment are refused */
    assert_int_equal(dp_lazymap_add(&m, A + 5 * P, A + 25 * P, A, DP_PG_REMOTE), -1);
    assert_int_equal(dp_lazymap_add(&m, A + 40 * P + 1, A + 41 * P, A, DP_PG_REMOTE), -1);
    assert_null(dp_lazymap_page(&m, A + 15 * P, NULL));
    assert_null(dp_lazymap_page(&m, A - P, NULL));
    assert_int_equal(st(&m, A + 9 * P), DP_PG_REMOTE);
    assert_int_equal(st(&m, A + 20 * P), DP_PG_NONE);
    assert_int_equal(dp_lazymap_pages(&m, DP_PG_REMOTE), 10);
    assert_int_equal(dp_lazymap_pages(&m, DP_PG_NONE), 10);
    assert_int_equal(dp_lazymap_img_to_addr(&m, A + 3 * P, NULL), A + 3 * P);
    assert_int_equal(dp_lazymap_img_to_addr(&m, A + 15 * P, NULL), 0);
    assert_int_equal(dp_lazymap_check(&m), 0);
    dp_lazymap_free(&m);
}

static void remove_makes_pages_zero_fill(void **s)
{
    (void)s;
    struct dp_lazymap m;
    dp_lazymap_init(&m);
    assert_int_equal(dp_lazymap_add(&m, A, A + 10 * P, A, DP_PG_REMOTE), 0);
    dp_lazymap_set(&m, dp_lazymap_page(&m, A + 2 * P, NULL), DP_PG_RESIDENT, 0);
    dp_lazymap_set(&m, dp_lazymap_page(&m, A + 3 * P, NULL), DP_PG_INFLIGHT, DP_PGF_WAITED);
    dp_lazymap_remove(&m, A + 2 * P, A + 5 * P);
    /* resident, in flight and remote pages alike: a later fault zero-fills */
    for (int i = 2; i < 5; i++)
        assert_int_equal(st(&m, A + i * P), DP_PG_NONE);
    assert_int_equal(st(&m, A + 1 * P), DP_PG_REMOTE);
    assert_int_equal(st(&m, A + 5 * P), DP_PG_REMOTE);
    /* the region stays: REMOVE does not unmap */
    assert_int_equal(m.n, 1);
    assert_int_equal(dp_lazymap_pages(&m, DP_PG_INFLIGHT), 0);
    assert_int_equal(dp_lazymap_check(&m), 0);
    dp_lazymap_free(&m);
}

static void unmap_cuts_regions(void **s)
{
    (void)s;
    struct dp_lazymap m;
    dp_lazymap_init(&m);
    assert_int_equal(dp_lazymap_add(&m, A, A + 10 * P, A, DP_PG_REMOTE), 0);
    assert_int_equal(dp_lazymap_add(&m, A + 10 * P, A + 20 * P, A + 10 * P, DP_PG_REMOTE), 0);
    assert_int_equal(dp_lazymap_unmap(&m, A + 4 * P, A + 12 * P), 0);
    assert_int_equal(m.n, 2);
    assert_null(dp_lazymap_page(&m, A + 4 * P, NULL));
    assert_null(dp_lazymap_page(&m, A + 11 * P, NULL));
    assert_int_equal(st(&m, A + 3 * P), DP_PG_REMOTE);
    assert_int_equal(st(&m, A + 12 * P), DP_PG_REMOTE);
    assert_int_equal(dp_lazymap_pages(&m, DP_PG_REMOTE), 4 + 8);
    /* a hole in the middle of one region splits it */
    assert_int_equal(dp_lazymap_unmap(&m, A + 14 * P, A + 15 * P), 0);
    assert_int_equal(m.n, 3);
    assert_int_equal(dp_lazymap_img_to_addr(&m, A + 16 * P, NULL), A + 16 * P);
    assert_int_equal(dp_lazymap_check(&m), 0);
    /* unaligned end rounds up to whole pages */
    assert_int_equal(dp_lazymap_unmap(&m, A, A + 1), 0);
    assert_null(dp_lazymap_page(&m, A, NULL));
    assert_int_equal(dp_lazymap_check(&m), 0);
    dp_lazymap_free(&m);
}

static void remap_moves_state_and_keeps_image_address(void **s)
{
    (void)s;
    struct dp_lazymap m;
    dp_lazymap_init(&m);
    const uint64_t B = 0x900000ull;
    assert_int_equal(dp_lazymap_add(&m, A, A + 10 * P, A, DP_PG_REMOTE), 0);
    dp_lazymap_set(&m, dp_lazymap_page(&m, A + 5 * P, NULL), DP_PG_RESIDENT, 0);
    dp_lazymap_set(&m, dp_lazymap_page(&m, A + 6 * P, NULL), DP_PG_INFLIGHT, 0);
    /* something already at the target is replaced (mremap MREMAP_FIXED) */
    assert_int_equal(dp_lazymap_add(&m, B, B + 2 * P, B, DP_PG_REMOTE), 0);
    assert_int_equal(dp_lazymap_remap(&m, A + 4 * P, B, 4 * P), 0);
    assert_null(dp_lazymap_page(&m, A + 4 * P, NULL));
    assert_int_equal(st(&m, A + 3 * P), DP_PG_REMOTE);
    assert_int_equal(st(&m, A + 8 * P), DP_PG_REMOTE);
    assert_int_equal(st(&m, B + 1 * P), DP_PG_RESIDENT);
    assert_int_equal(st(&m, B + 2 * P), DP_PG_INFLIGHT);
    /* data of the moved pages is still looked up at its checkpoint address */
    struct dp_lazy_region *r;
    assert_int_equal(dp_lazymap_img_to_addr(&m, A + 6 * P, &r), B + 2 * P);
    assert_int_equal(r->img, A + 4 * P);
    assert_int_equal(dp_lazymap_img_to_addr(&m, B, NULL), 0); /* the replaced mapping is gone */
    assert_int_equal(dp_lazymap_pages(&m, DP_PG_REMOTE), 4 + 2 + 2);
    assert_int_equal(dp_lazymap_check(&m), 0);
    /* moving back and overlapping moves work too */
    assert_int_equal(dp_lazymap_remap(&m, B, B + 2 * P, 4 * P), 0);
    assert_int_equal(st(&m, B + 3 * P), DP_PG_RESIDENT);
    assert_int_equal(dp_lazymap_check(&m), 0);
    dp_lazymap_free(&m);
}

static void fork_copies_state_and_refetches_in_flight(void **s)
{
    (void)s;
    struct dp_lazymap m, c;
    dp_lazymap_init(&m);
    assert_int_equal(dp_lazymap_add(&m, A, A + 8 * P, A, DP_PG_REMOTE), 0);
    dp_lazymap_set(&m, dp_lazymap_page(&m, A, NULL), DP_PG_RESIDENT, DP_PGF_PREFETCH);
    dp_lazymap_set(&m, dp_lazymap_page(&m, A + P, NULL), DP_PG_INFLIGHT, DP_PGF_WAITED);
    dp_lazymap_set(&m, dp_lazymap_page(&m, A + 2 * P, NULL), DP_PG_NONE, 0);
    assert_int_equal(dp_lazymap_clone(&c, &m), 0);
    /* the child has what the parent had at fork time ... */
    assert_int_equal(st(&c, A), DP_PG_RESIDENT);
    assert_int_equal(*dp_lazymap_page(&c, A, NULL) & DP_PGF_PREFETCH, 0);
    assert_int_equal(st(&c, A + 2 * P), DP_PG_NONE);
    /* ... except that the parent's fetch in flight installs in the parent only */
    assert_int_equal(st(&c, A + P), DP_PG_REMOTE);
    assert_int_equal(dp_lazymap_check(&c), 0);
    /* separate page state afterwards */
    dp_lazymap_remove(&m, A + 3 * P, A + 4 * P);
    assert_int_equal(st(&m, A + 3 * P), DP_PG_NONE);
    assert_int_equal(st(&c, A + 3 * P), DP_PG_REMOTE);
    assert_int_equal(dp_lazymap_unmap(&c, A, A + 8 * P), 0);
    assert_int_equal(st(&m, A + 4 * P), DP_PG_REMOTE);
    assert_int_equal(dp_lazymap_check(&m), 0);
    dp_lazymap_free(&c);
    dp_lazymap_free(&m);
}

static void own_zap_remove_keeps_data_remote(void **s)
{
    (void)s;
    struct dp_lazymap m;
    dp_lazymap_init(&m);
    assert_int_equal(dp_lazymap_add(&m, A, A + 10 * P, A, DP_PG_RESIDENT), 0);
    dp_lazymap_set(&m, dp_lazymap_page(&m, A + 3 * P, NULL), DP_PG_REMOTE, 0);
    struct dp_lazy_range keep[] = {{A + 2 * P, A + 5 * P}};
    /* one REMOVE covering our zap and, around it, the application's drop */
    dp_lazymap_remove_except(&m, A + 1 * P, A + 6 * P, keep, 1);
    assert_int_equal(st(&m, A + 0 * P), DP_PG_RESIDENT);
    assert_int_equal(st(&m, A + 1 * P), DP_PG_NONE);     /* app's: zero from now on */
    assert_int_equal(st(&m, A + 2 * P), DP_PG_REMOTE);   /* ours: data at the source */
    assert_int_equal(st(&m, A + 3 * P), DP_PG_REMOTE);
    assert_int_equal(st(&m, A + 4 * P), DP_PG_REMOTE);
    assert_int_equal(st(&m, A + 5 * P), DP_PG_NONE);
    assert_int_equal(st(&m, A + 6 * P), DP_PG_RESIDENT);
    /* without keep ranges it is a plain remove */
    dp_lazymap_remove_except(&m, A + 6 * P, A + 7 * P, NULL, 0);
    assert_int_equal(st(&m, A + 6 * P), DP_PG_NONE);
    assert_int_equal(dp_lazymap_check(&m), 0);
    dp_lazymap_free(&m);
}

/* Random operations against a page-array model. */
static void random_ops_match_model(void **s)
{
    (void)s;
    enum { N = 64 };
    const uint64_t base = 0x400000ull;
    /* model: per run-time page index, -1 = unmapped, else (img page << 8 | state) */
    long model[N * 3];
    struct dp_lazymap m;
    dp_lazymap_init(&m);
    for (int i = 0; i < N * 3; i++)
        model[i] = -1;
    assert_int_equal(dp_lazymap_add(&m, base, base + N * P, base, DP_PG_REMOTE), 0);
    for (int i = 0; i < N; i++)
        model[i] = ((long)i << 8) | DP_PG_REMOTE;
    srand(7);
    for (int step = 0; step < 3000; step++) {
        int op = rand() % 4;
        int a = rand() % (N * 3), len = 1 + rand() % 8;
        if (a + len > N * 3)
            len = N * 3 - a;
        if (op == 0) {
            dp_lazymap_remove(&m, base + (uint64_t)a * P, base + (uint64_t)(a + len) * P);
            for (int i = a; i < a + len; i++)
                if (model[i] >= 0)
                    model[i] = (model[i] & ~0xffL) | DP_PG_NONE;
        } else if (op == 1) {
            assert_int_equal(dp_lazymap_unmap(&m, base + (uint64_t)a * P, base + (uint64_t)(a + len) * P), 0);
            for (int i = a; i < a + len; i++)
                model[i] = -1;
        } else if (op == 2) {
            int to = rand() % (N * 3 - len + 1);
            assert_int_equal(dp_lazymap_remap(&m, base + (uint64_t)a * P, base + (uint64_t)to * P,
                                              (uint64_t)len * P), 0);
            long tmp[8];
            for (int i = 0; i < len; i++)
                tmp[i] = model[a + i];
            for (int i = 0; i < len; i++)
                model[a + i] = -1;
            if (a != to)
                for (int i = 0; i < len; i++)
                    model[to + i] = tmp[i];
            else
                for (int i = 0; i < len; i++)
                    model[a + i] = tmp[i];
        } else {
            uint8_t *pg = dp_lazymap_page(&m, base + (uint64_t)a * P, NULL);
            if (pg) {
                enum dp_pg_state ns = (enum dp_pg_state)(rand() % 4);
                dp_lazymap_set(&m, pg, ns, 0);
                model[a] = (model[a] & ~0xffL) | ns;
            }
        }
        assert_int_equal(dp_lazymap_check(&m), 0);
        for (int i = 0; i < N * 3; i++) {
            struct dp_lazy_region *r;
            uint8_t *pg = dp_lazymap_page(&m, base + (uint64_t)i * P, &r);
            if (model[i] < 0) {
                assert_null(pg);
            } else {
                assert_non_null(pg);
                assert_int_equal(dp_pg_state(*pg), model[i] & 0xff);
                uint64_t img = r->img + (base + (uint64_t)i * P - r->start);
                assert_int_equal(img, base + (uint64_t)(model[i] >> 8) * P);
            }
        }
    }
    dp_lazymap_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(add_and_lookup),
        cmocka_unit_test(remove_makes_pages_zero_fill),
        cmocka_unit_test(unmap_cuts_regions),
        cmocka_unit_test(remap_moves_state_and_keeps_image_address),
        cmocka_unit_test(fork_copies_state_and_refetches_in_flight),
        cmocka_unit_test(own_zap_remove_keeps_data_remote),
        cmocka_unit_test(random_ops_match_model),
    };
    return cmocka_run_group_tests_name("lazymap", tests, NULL, NULL);
}
