/* lab's pure helpers: rates and tbf parameters. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>

#include "lab.h"

static void parse_rates(void **state)
{
    (void)state;
    uint64_t v;
    struct dp_err err;
    assert_int_equal(lab_parse_rate("1gbit", &v, &err), 0);
    assert_true(v == 1000000000ULL);
    assert_int_equal(lab_parse_rate("100mbit", &v, &err), 0);
    assert_true(v == 100000000ULL);
    assert_int_equal(lab_parse_rate("2.5Gbit", &v, &err), 0);
    assert_true(v == 2500000000ULL);
    assert_int_equal(lab_parse_rate("500kbit", &v, &err), 0);
    assert_true(v == 500000ULL);
    assert_int_equal(lab_parse_rate("64000bit", &v, &err), 0);
    assert_true(v == 64000ULL);
}

static void reject_bad_rates(void **state)
{
    (void)state;
    uint64_t v;
    struct dp_err err;
    const char *bad[] = {"", "gbit", "1", "1gb", "1gbps", "-1gbit", "0mbit", "1kbit", "1000tbit", "1 gbit", "1gbitx"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err.msg[0] = '\0';
        assert_int_equal(lab_parse_rate(bad[i], &v, &err), -1);
        assert_true(err.msg[0] != '\0');
    }
    assert_int_equal(lab_parse_rate(NULL, &v, &err), -1);
}

static void format_rates(void **state)
{
    (void)state;
    char buf[32];
    lab_format_rate(1000000000ULL, buf, sizeof(buf));
    assert_string_equal(buf, "1gbit");
    lab_format_rate(1500000ULL, buf, sizeof(buf));
    assert_string_equal(buf, "1500kbit");
    lab_format_rate(123456789ULL, buf, sizeof(buf));
    assert_string_equal(buf, "123456789bit");
}

static void tbf_params_are_sane(void **state)
{
    (void)state;
    uint64_t burst;
    uint32_t lat;
    lab_tbf_params(1000000000ULL, &burst, &lat);
    assert_true(burst == 125000); /* 1 ms at 1gbit */
    assert_true(lat >= 1000 && lat <= 100000);
    lab_tbf_params(10000000ULL, &burst, &lat);
    assert_true(burst == 65536); /* one GSO packet at least */
    lab_tbf_params(100000000000ULL, &burst, &lat);
    assert_true(burst == 12500000);
}

static void hosts(void **state)
{
    (void)state;
    assert_non_null(lab_host_find("src"));
    assert_non_null(lab_host_find("dst"));
    assert_null(lab_host_find("dp-src"));
    assert_string_equal(lab_host_find("dst")->addr, "10.250.0.2");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parse_rates),
        cmocka_unit_test(reject_bad_rates),
        cmocka_unit_test(format_rates),
        cmocka_unit_test(tbf_params_are_sane),
        cmocka_unit_test(hosts),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
