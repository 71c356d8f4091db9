#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include "kdat.h"

static const char BOOT[] = "5f5e770c-5dba-44dd-9234-5393c0dcfa2f";
static const char OTHER_BOOT[] = "00000000-1111-2222-3333-444444444444";

static const uint8_t CACHE_A[] = "criu kdat bytes A";
static const uint8_t CACHE_B[] = "criu kdat bytes B";

static void stamp_names_boot_and_bytes(void **state)
{
    (void)state;
    char a[128], b[128], c[128];
    int n = dp_kdat_stamp_format(a, sizeof(a), BOOT, CACHE_A, sizeof(CACHE_A));
    /* "<boot id> <32 hex digits>\n" */
    assert_int_equal(n, (int)strlen(BOOT) + 1 + 32 + 1);
    assert_int_equal((int)strlen(a), n);
    assert_memory_equal(a, BOOT, strlen(BOOT));
    assert_int_equal(a[strlen(BOOT)], ' ');
    assert_int_equal(a[n - 1], '\n');
    for (int i = (int)strlen(BOOT) + 1; i < n - 1; i++)
        assert_non_null(strchr("0123456789abcdef", a[i]));
    /* the same bytes, the same stamp; other bytes or another boot, another stamp */
    assert_int_equal(dp_kdat_stamp_format(b, sizeof(b), BOOT, CACHE_A, sizeof(CACHE_A)), n);
    assert_string_equal(a, b);
    dp_kdat_stamp_format(c, sizeof(c), BOOT, CACHE_B, sizeof(CACHE_B));
    assert_string_not_equal(a, c);
    dp_kdat_stamp_format(c, sizeof(c), OTHER_BOOT, CACHE_A, sizeof(CACHE_A));
    assert_string_not_equal(a, c);
    /* too small a buffer is an error, never a truncated stamp */
    assert_int_equal(dp_kdat_stamp_format(c, (size_t)n, BOOT, CACHE_A, sizeof(CACHE_A)), -1);
    assert_int_equal(dp_kdat_stamp_format(c, (size_t)n + 1, BOOT, CACHE_A, sizeof(CACHE_A)), n);
}

static void plan_keeps_only_our_cache_of_this_boot(void **state)
{
    (void)state;
    char ours[128], other_boot[128];
    dp_kdat_stamp_format(ours, sizeof(ours), BOOT, CACHE_A, sizeof(CACHE_A));
    dp_kdat_stamp_format(other_boot, sizeof(other_boot), OTHER_BOOT, CACHE_A, sizeof(CACHE_A));

    assert_int_equal(dp_kdat_plan(0, CACHE_A, sizeof(CACHE_A), ours, BOOT), DP_KDAT_KEEP);
    /* a reboot, maybe into another kernel */
    assert_int_equal(dp_kdat_plan(0, CACHE_A, sizeof(CACHE_A), other_boot, BOOT), DP_KDAT_MAKE);
    /* the bytes changed since we wrote them (someone else's file) */
    assert_int_equal(dp_kdat_plan(0, CACHE_B, sizeof(CACHE_B), ours, BOOT), DP_KDAT_MAKE);
    assert_int_equal(dp_kdat_plan(0, CACHE_A, sizeof(CACHE_A) - 1, ours, BOOT), DP_KDAT_MAKE);
    /* no cache, or a cache nobody vouches for */
    assert_int_equal(dp_kdat_plan(0, NULL, 0, ours, BOOT), DP_KDAT_MAKE);
    assert_int_equal(dp_kdat_plan(0, CACHE_A, sizeof(CACHE_A), NULL, BOOT), DP_KDAT_MAKE);
    assert_int_equal(dp_kdat_plan(0, CACHE_A, sizeof(CACHE_A), "", BOOT), DP_KDAT_MAKE);
    char cut[128];
    snprintf(cut, sizeof(cut), "%.*s", (int)strlen(ours) - 1, ours); /* no newline */
    assert_int_equal(dp_kdat_plan(0, CACHE_A, sizeof(CACHE_A), cut, BOOT), DP_KDAT_MAKE);
    char more[160];
    snprintf(more, sizeof(more), "%sextra\n", ours);
    assert_int_equal(dp_kdat_plan(0, CACHE_A, sizeof(CACHE_A), more, BOOT), DP_KDAT_MAKE);
    /* on a tmpfs criu keeps its own cache */
    assert_int_equal(dp_kdat_plan(1, NULL, 0, NULL, BOOT), DP_KDAT_CRIU_DOES_IT);
    assert_int_equal(dp_kdat_plan(1, CACHE_A, sizeof(CACHE_A), other_boot, BOOT), DP_KDAT_CRIU_DOES_IT);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(stamp_names_boot_and_bytes),
        cmocka_unit_test(plan_keeps_only_our_cache_of_this_boot),
    };
    return cmocka_run_group_tests_name("kdat", tests, NULL, NULL);
}
