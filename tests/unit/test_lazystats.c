/* Unit tests of the JSON form of lib/lazystats.c (what `distriproc stats`
 * prints): member names and order, integers that stay integers, reals with
 * the decimals they always had, and their text without binary tails. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "lazystats.h"

/* ---- helpers -------------------------------------------------------------------- */

/* v as the daemon writes it (the reference is dropped). */
static char *dumped(json_t *v)
{
    assert_non_null(v);
    struct dp_sbuf b = {0};
    dp_sbuf_put_json(&b, v);
    assert_false(b.oom);
    return b.p;
}

/* ---- reals ---------------------------------------------------------------------- */

/* A fixed-decimals real prints as the short decimal "%.Nf" printed. */
static void test_fixed_prints_short_decimals(void **state)
{
    (void)state;
    char *s = dumped(dp_json_fixed(2.0 / 3.0, 4));
    assert_string_equal(s, "0.6667");
    free(s);
    s = dumped(dp_json_fixed(0.1 + 0.2, 1));
    assert_string_equal(s, "0.3");
    free(s);
    s = dumped(dp_json_fixed(0.0, 3)); /* still a real: readers see a float */
    assert_string_equal(s, "0.0");
    free(s);
    s = dumped(dp_json_fixed(123456789.0456, 3));
    assert_string_equal(s, "123456789.046");
    free(s);
}

/* ---- histogram ------------------------------------------------------------------ */

/* Count is an integer, the times are reals in us, the CDF lists non-empty buckets. */
static void test_hist_members_and_types(void **state)
{
    (void)state;
    struct dp_hist *h = calloc(1, sizeof(*h));
    assert_non_null(h);
    dp_hist_add(h, 1000);
    dp_hist_add(h, 1000);
    dp_hist_add(h, 5000000);
    json_t *o = dp_hist_jobj(h);
    assert_non_null(o);
    const char *want[] = {"count", "mean_us", "p50_us", "p90_us", "p99_us", "max_us"};
    size_t i = 0;
    const char *k;
    json_t *v;
    json_object_foreach(o, k, v) {
        assert_true(i < 6);
        assert_string_equal(k, want[i]);
        assert_true(i == 0 ? json_is_integer(v) : json_is_real(v));
        i++;
    }
    assert_int_equal(i, 6);
    assert_int_equal(json_integer_value(json_object_get(o, "count")), 3);
    assert_true(json_real_value(json_object_get(o, "max_us")) == 5000.0);
    assert_true(json_real_value(json_object_get(o, "mean_us")) == 1667.3); /* 5002000 / 3 ns, one decimal */
    json_decref(o);

    json_t *a = dp_hist_jbuckets(h);
    assert_non_null(a);
    assert_int_equal(json_array_size(a), 2);
    json_t *first = json_array_get(a, 0);
    assert_true(json_is_real(json_array_get(first, 0)));
    assert_true(json_real_value(json_array_get(first, 0)) == 1.023); /* bucket [896, 1023] ns */
    assert_int_equal(json_integer_value(json_array_get(first, 1)), 2);
    json_decref(a);

    memset(h, 0, sizeof(*h)); /* empty: zeros, and an empty CDF */
    char *s = dumped(dp_hist_jobj(h));
    assert_string_equal(s, "{\"count\": 0, \"mean_us\": 0.0, \"p50_us\": 0.0, \"p90_us\": 0.0, \"p99_us\": 0.0, "
                           "\"max_us\": 0.0}");
    free(s);
    s = dumped(dp_hist_jbuckets(h));
    assert_string_equal(s, "[]");
    free(s);
    free(h);
}

/* ---- counters ------------------------------------------------------------------- */

/* Members in their order after what is already there; the hit rate is capped at 1. */
static void test_counters_order_and_rate(void **state)
{
    (void)state;
    struct dp_lazy_counters c = {0};
    c.faults = 7;
    c.pages_prefetched = 4;
    c.prefetch_hits_inflight = 3;
    c.prefetch_hits_inferred = 5; /* inferred hits overlap: 8 hits of 4 pages */
    c.ev_unmap = 2;
    json_t *o = json_pack("{s:i}", "id", 1);
    assert_int_equal(dp_counters_jset(o, &c), 0);
    void *it = json_object_iter(o);
    assert_string_equal(json_object_iter_key(it), "id");
    it = json_object_iter_next(o, it);
    assert_string_equal(json_object_iter_key(it), "faults");
    const char *last = NULL;
    for (; it; it = json_object_iter_next(o, it))
        last = json_object_iter_key(it);
    assert_string_equal(last, "events");
    assert_int_equal(json_integer_value(json_object_get(o, "faults")), 7);
    assert_int_equal(json_integer_value(json_object_get(o, "prefetch_hits")), 8);
    assert_true(json_real_value(json_object_get(o, "prefetch_hit_rate")) == 1.0);
    assert_int_equal(json_integer_value(json_object_get(json_object_get(o, "events"), "unmap")), 2);
    assert_int_equal(json_object_size(o), 1 + 22);
    json_decref(o);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fixed_prints_short_decimals),
        cmocka_unit_test(test_hist_members_and_types),
        cmocka_unit_test(test_counters_order_and_rate),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
