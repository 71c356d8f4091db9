/* uffdwin's pure part: reading the vm.unprivileged_userfaultfd sysctl. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "uffdwin.h"

static int parse(const char *s)
{
    return dp_uffdwin_parse(s, strlen(s));
}

static void sysctl_values(void **state)
{
    (void)state;
    assert_int_equal(parse("0\n"), 0);
    assert_int_equal(parse("1\n"), 1);
    assert_int_equal(parse("0"), 0);
    assert_int_equal(parse("1"), 1);
    const char *bad[] = {"", "\n", "2\n", "01\n", "1 ", "1\n\n", "x", "10", "-1"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(parse(bad[i]), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(sysctl_values),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
