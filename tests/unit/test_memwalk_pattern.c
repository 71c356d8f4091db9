/* memwalk's page pattern and its verification: a page passes only with the
 * exact content of its (seed, index, generation), and every changed byte is
 * counted and located. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <math.h>

#include "../../tools/memwalk_pattern.h"

static uint8_t page[MW_PAGE_SIZE], other[MW_PAGE_SIZE];

static void fresh_page_verifies(void **state)
{
    (void)state;
    struct mw_mismatch mm = {0};
    mw_fill(page, 1, 42, 7);
    assert_int_equal(mw_verify(page, 1, 42, 7, &mm), 0);
}

static void fill_is_deterministic(void **state)
{
    (void)state;
    mw_fill(page, 9, 1000, 3);
    mw_fill(other, 9, 1000, 3);
    assert_memory_equal(page, other, MW_PAGE_SIZE);
}

static void one_flipped_byte_is_found(void **state)
{
    (void)state;
    struct mw_mismatch mm = {0};
    mw_fill(page, 1, 5, 0);
    uint8_t want = page[1234];
    page[1234] ^= 0x10;
    assert_int_equal(mw_verify(page, 1, 5, 0, &mm), 1);
    assert_int_equal(mm.offset, 1234);
    assert_int_equal(mm.expected, want);
    assert_int_equal(mm.got, want ^ 0x10);
}

static void every_byte_position_is_checked(void **state)
{
    (void)state;
    mw_fill(page, 3, 77, 2);
    for (uint32_t off = 0; off < MW_PAGE_SIZE; off++) {
        struct mw_mismatch mm = {0};
        page[off] ^= 0xff;
        assert_int_equal(mw_verify(page, 3, 77, 2, &mm), 1);
        assert_int_equal(mm.offset, off);
        page[off] ^= 0xff;
    }
    assert_int_equal(mw_verify(page, 3, 77, 2, NULL), 0);
}

static void zero_page_fails(void **state)
{
    (void)state;
    struct mw_mismatch mm = {0};
    memset(page, 0, sizeof(page));
    /* A lost page that comes back zero-filled: (nearly) every byte is wrong. */
    assert_true(mw_verify(page, 1, 0, 0, &mm) > MW_PAGE_SIZE - 64);
}

static void stale_generation_fails(void **state)
{
    (void)state;
    /* A lost write: the page still holds generation 4 where 5 is expected. */
    mw_fill(page, 1, 10, 4);
    assert_true(mw_verify(page, 1, 10, 5, NULL) > MW_PAGE_SIZE / 2);
}

static void wrong_page_fails(void **state)
{
    (void)state;
    /* Page 11's content showing up at page 10 (a misplaced page). */
    mw_fill(page, 1, 11, 0);
    assert_true(mw_verify(page, 1, 10, 0, NULL) > MW_PAGE_SIZE / 2);
    /* And another seed's content. */
    mw_fill(page, 2, 10, 0);
    assert_true(mw_verify(page, 1, 10, 0, NULL) > MW_PAGE_SIZE / 2);
}

static void parse_patterns(void **state)
{
    (void)state;
    struct mw_pattern p;
    assert_int_equal(mw_parse_pattern("seq", &p), 0);
    assert_int_equal(p.kind, MW_SEQ);
    assert_int_equal(mw_parse_pattern("uniform", &p), 0);
    assert_int_equal(p.kind, MW_UNIFORM);
    assert_int_equal(mw_parse_pattern("zipf:0.99", &p), 0);
    assert_int_equal(p.kind, MW_ZIPF);
    assert_true(fabs(p.zipf_s - 0.99) < 1e-12);
    assert_int_equal(mw_parse_pattern("stride:16", &p), 0);
    assert_int_equal(p.kind, MW_STRIDE);
    assert_int_equal(p.stride, 16);
    assert_int_equal(mw_parse_pattern("zipf:", &p), -1);
    assert_int_equal(mw_parse_pattern("zipf:0", &p), -1);
    assert_int_equal(mw_parse_pattern("zipf:-1", &p), -1);
    assert_int_equal(mw_parse_pattern("zipf:1x", &p), -1);
    assert_int_equal(mw_parse_pattern("stride:0", &p), -1);
    assert_int_equal(mw_parse_pattern("stride:-3", &p), -1);
    assert_int_equal(mw_parse_pattern("stride:", &p), -1);
    assert_int_equal(mw_parse_pattern("probe:10", &p), 0);
    assert_int_equal(p.kind, MW_PROBE);
    assert_int_equal(p.table_pct, 10);
    assert_int_equal(mw_parse_pattern("probe:0", &p), -1);
    assert_int_equal(mw_parse_pattern("probe:91", &p), -1);
    assert_int_equal(mw_parse_pattern("probe:", &p), -1);
    assert_int_equal(mw_parse_pattern("probe:5x", &p), -1);
    assert_int_equal(mw_parse_pattern("random", &p), -1);
}

static void zipf_is_skewed_and_complete(void **state)
{
    (void)state;
    enum { N = 1000 };
    static double cdf[N];
    static uint32_t perm[N], hits[N];
    mw_zipf_cdf(cdf, N, 1.0, pow);
    for (int k = 1; k < N; k++)
        assert_true(cdf[k] >= cdf[k - 1]);
    assert_true(cdf[N - 1] == 1.0);
    assert_int_equal(mw_zipf_rank(cdf, N, 0.0), 0);
    assert_int_equal(mw_zipf_rank(cdf, N, 0.999999999), N - 1);

    uint64_t rng = mw_rand_seed(1, 1);
    for (int i = 0; i < 100000; i++)
        hits[mw_zipf_rank(cdf, N, mw_rand_unit(&rng))]++;
    /* Rank 0 is hit about H(1000)^-1 ~ 13% of the time, rank 999 about 0.013%. */
    assert_true(hits[0] > 10000 && hits[0] < 16000);
    assert_true(hits[0] > 50 * hits[N - 1] + 1);

    /* The permutation is a bijection and deterministic. */
    mw_permutation(perm, N, 5);
    memset(hits, 0, sizeof(hits));
    for (int i = 0; i < N; i++)
        hits[perm[i]]++;
    for (int i = 0; i < N; i++)
        assert_int_equal(hits[i], 1);
    uint32_t again[N];
    mw_permutation(again, N, 5);
    assert_memory_equal(perm, again, sizeof(again));
}

static void rand_below_stays_in_range(void **state)
{
    (void)state;
    uint64_t rng = mw_rand_seed(0, 0);
    for (int i = 0; i < 100000; i++) {
        assert_true(mw_rand_below(&rng, 7) < 7);
        double u = mw_rand_unit(&rng);
        assert_true(u >= 0.0 && u < 1.0);
    }
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fresh_page_verifies),
        cmocka_unit_test(fill_is_deterministic),
        cmocka_unit_test(one_flipped_byte_is_found),
        cmocka_unit_test(every_byte_position_is_checked),
        cmocka_unit_test(zero_page_fails),
        cmocka_unit_test(stale_generation_fails),
        cmocka_unit_test(wrong_page_fails),
        cmocka_unit_test(parse_patterns),
        cmocka_unit_test(zipf_is_skewed_and_complete),
        cmocka_unit_test(rand_below_stays_in_range),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
