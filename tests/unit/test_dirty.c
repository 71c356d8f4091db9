#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "dirty.h"

static void fill(uint8_t *p, size_t n, uint64_t x)
{
    for (size_t i = 0; i < n; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        p[i] = (uint8_t)(x >> 56);
    }
}

static void page_hash_matches_bytes_hash(void **state)
{
    (void)state;
    uint8_t pg[4096];
    fill(pg, sizeof(pg), 1);
    struct dp_page_hash a = dp_page_hash(7, pg), b = dp_hash_bytes(7, pg, sizeof(pg));
    assert_true(dp_page_hash_eq(a, b));
    assert_true(dp_page_hash_eq(a, dp_page_hash(7, pg)));   /* deterministic */
    assert_false(dp_page_hash_eq(a, dp_page_hash(8, pg))); /* seeded */
}

/* Every single-bit flip anywhere in the page changes both halves. */
static void every_bit_flip_is_detected(void **state)
{
    (void)state;
    uint8_t pg[4096];
    fill(pg, sizeof(pg), 2);
    struct dp_page_hash h0 = dp_page_hash(42, pg);
    for (size_t bit = 0; bit < 4096 * 8; bit++) {
        pg[bit / 8] ^= (uint8_t)(1u << (bit % 8));
        struct dp_page_hash h = dp_page_hash(42, pg);
        assert_true(h.lo != h0.lo);
        assert_true(h.hi != h0.hi);
        pg[bit / 8] ^= (uint8_t)(1u << (bit % 8));
    }
    assert_true(dp_page_hash_eq(h0, dp_page_hash(42, pg)));
}

/* Structured changes a program makes: a word swap, a counter increment in
 * the same lane at two offsets, zeroing, writing back the same value. */
static void structured_changes(void **state)
{
    (void)state;
    uint8_t pg[4096], cp[4096];
    fill(pg, sizeof(pg), 3);
    struct dp_page_hash h0 = dp_page_hash(0, pg);
    memcpy(cp, pg, sizeof(cp));
    uint64_t a, b;
    memcpy(&a, cp + 0, 8);
    memcpy(&b, cp + 64, 8);     /* same lane, next stripe */
    memcpy(cp + 0, &b, 8);
    memcpy(cp + 64, &a, 8);
    if (a != b)
        assert_false(dp_page_hash_eq(h0, dp_page_hash(0, cp)));
    memcpy(cp, pg, sizeof(cp));
    memset(cp, 0, sizeof(cp));
    assert_false(dp_page_hash_eq(h0, dp_page_hash(0, cp)));
    memcpy(cp, pg, sizeof(cp));
    cp[100] = pg[100];          /* rewrite with the same value: clean */
    assert_true(dp_page_hash_eq(h0, dp_page_hash(0, cp)));
    /* the zero page and a page of one 1 at the end differ */
    uint8_t z[4096] = {0}, o[4096] = {0};
    o[4095] = 1;
    assert_false(dp_page_hash_eq(dp_page_hash(0, z), dp_page_hash(0, o)));
}

static int cmp(const void *x, const void *y)
{
    uint64_t a = *(const uint64_t *)x, b = *(const uint64_t *)y;
    return a < b ? -1 : a > b;
}

/* No collision among many similar pages (counter pages). */
static void no_collisions_among_counter_pages(void **state)
{
    (void)state;
    enum { N = 100000 };
    uint64_t *lo = malloc(N * sizeof(*lo));
    assert_non_null(lo);
    uint8_t pg[4096] = {0};
    for (uint64_t i = 0; i < N; i++) {
        memcpy(pg + 8 * (i % 512), &i, 8);
        lo[i] = dp_page_hash(9, pg).lo;
    }
    qsort(lo, N, sizeof(*lo), cmp);
    for (size_t i = 1; i < N; i++)
        assert_true(lo[i] != lo[i - 1]);
    free(lo);
}

static void bytes_hash_tail_lengths_differ(void **state)
{
    (void)state;
    uint8_t buf[200] = {0};
    struct dp_page_hash seen[200];
    for (size_t n = 0; n < 200; n++) {
        seen[n] = dp_hash_bytes(1, buf, n);
        for (size_t m = 0; m < n; m++)
            assert_false(dp_page_hash_eq(seen[n], seen[m]));
    }
}

static void dirty_check_flags_modified_pages(void **state)
{
    (void)state;
    enum { N = 16 };
    uint8_t *buf = malloc(N * 4096);
    assert_non_null(buf);
    fill(buf, N * 4096, 5);
    struct dp_page_hash inst[N], now[N];
    for (int i = 0; i < N; i++)
        inst[i] = dp_page_hash(77, buf + i * 4096);
    uint8_t dirty[N];
    assert_int_equal(dp_dirty_check(77, buf, N, inst, dirty, NULL), 0);
    buf[3 * 4096 + 17] ^= 1;
    buf[9 * 4096 + 4095] ^= 0x80;
    assert_int_equal(dp_dirty_check(77, buf, N, inst, dirty, now), 2);
    for (int i = 0; i < N; i++)
        assert_int_equal(dirty[i], i == 3 || i == 9);
    assert_true(dp_page_hash_eq(now[3], dp_page_hash(77, buf + 3 * 4096)));
    free(buf);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(page_hash_matches_bytes_hash),
        cmocka_unit_test(every_bit_flip_is_detected),
        cmocka_unit_test(structured_changes),
        cmocka_unit_test(no_collisions_among_counter_pages),
        cmocka_unit_test(bytes_hash_tail_lengths_differ),
        cmocka_unit_test(dirty_check_flags_modified_pages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
