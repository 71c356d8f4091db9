/* pipemax's pure part: the sysctl value, the capability bit, the size cap. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "pipemax.h"

static int parse(const char *s, uint64_t *v)
{
    return dp_pipemax_parse(s, strlen(s), v);
}

static void sysctl_values(void **state)
{
    (void)state;
    uint64_t v = 0;
    assert_int_equal(parse("1048576\n", &v), 0);
    assert_int_equal(v, 1048576);
    assert_int_equal(parse("4194304", &v), 0);
    assert_int_equal(v, 4194304);
    const char *bad[] = {"", "\n", "-1\n", "1 \n", "1\n\n", "x", "12a", "99999999999999999999"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(parse(bad[i], &v), -1);
}

static void capability(void **state)
{
    (void)state;
    /* this machine's root: every capability but CAP_SYS_RESOURCE (24) */
    const char *st = "Name:\tx\nCapPrm:\t000001fffeffffff\nCapEff:\t000001fffeffffff\nCapBnd:\t0\n";
    assert_int_equal(dp_cap_effective(st, DP_CAP_SYS_RESOURCE), 0);
    assert_int_equal(dp_cap_effective(st, 23), 1);
    assert_int_equal(dp_cap_effective(st, 40), 1);
    assert_int_equal(dp_cap_effective(st, 41), 0);
    assert_int_equal(dp_cap_effective("Name:\tx\nCapEff:\t000001ffffffffff\n", 24), 1);
    assert_int_equal(dp_cap_effective("Name:\tx\nCapPrm:\t1\n", 24), -1);
    assert_int_equal(dp_cap_effective("Name:\tx\nCapEff:\tzz\n", 24), -1);
    assert_int_equal(dp_cap_effective("Name:\tx\nCapEff:\t1\n", 64), -1);
}

static void size_cap(void **state)
{
    (void)state;
    assert_int_equal(dp_pipemax_max_lazy_bytes(0), 0);
    assert_int_equal(dp_pipemax_max_lazy_bytes(DP_PIPEMAX_FD_RESERVE), 0);
    /* this machine's 20000: (20000 - 512) / 2 MiB = 9744 MiB, about 9.5 GiB */
    assert_int_equal(dp_pipemax_max_lazy_bytes(20000), 9744ULL << 20);
    assert_true(dp_pipemax_max_lazy_bytes(1024 * 1024) > (500ULL << 30));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sysctl_values),
        cmocka_unit_test(capability),
        cmocka_unit_test(size_cap),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
