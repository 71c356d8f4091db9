/* Unit tests for lib/freezer.c's pure part: finding a process's own freezer
 * cgroup (a runc container's) in /proc/PID/cgroup text. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <string.h>
#include <cmocka.h>

#include "freezer.h"

static void proc_cgroup_parsing(void **state)
{
    (void)state;
    char out[64];
    const char *runc = "12:pids:/ct1\n6:freezer:/ct1\n1:name=systemd:/ct1\n0::/\n";
    assert_int_equal(dp_freezer_parse_proc_cgroup(runc, strlen(runc), out, sizeof(out)), 0);
    assert_string_equal(out, "/ct1");
    const char *last = "3:cpu:/x\n6:freezer:/distriproc/live-1-2"; /* no final newline */
    assert_int_equal(dp_freezer_parse_proc_cgroup(last, strlen(last), out, sizeof(out)), 0);
    assert_string_equal(out, "/distriproc/live-1-2");
    const char *root = "6:freezer:/\n";
    assert_int_equal(dp_freezer_parse_proc_cgroup(root, strlen(root), out, sizeof(out)), 0);
    assert_string_equal(out, "/");
    const char *bad[] = {
        "",
        "0::/ct1\n",                          /* cgroup v2 only */
        "6:freezer:\n",                       /* empty path */
        "6:freezer:ct1\n",                    /* not absolute */
        "6:freezer:/a/../b\n",                /* not clean */
        "6:freezerx:/ct1\n",                  /* another controller */
        "6:net_cls,freezer:/ct1\n",           /* not the freezer alone (never mounted so here) */
        "6:freezer:/a-path-that-is-longer-than-the-output-buffer-of-sixty-four-bytes-given-here\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(dp_freezer_parse_proc_cgroup(bad[i], strlen(bad[i]), out, sizeof(out)), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(proc_cgroup_parsing),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
