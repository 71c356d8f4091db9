#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/wait.h>

#include "orch.h"

static void json_number_top_level_and_spacing(void **state)
{
    (void)state;
    double v;
    const char *j = "{\"pid\": 42, \"restore_s\":0.125,\"daemon_pid\" :\n 7, \"neg\": -3e2}";
    assert_int_equal(dp_json_number(j, NULL, "pid", &v), 0);
    assert_true(v == 42);
    assert_int_equal(dp_json_number(j, NULL, "restore_s", &v), 0);
    assert_true(v == 0.125);
    /* "pid" must not match the tail of "daemon_pid" and vice versa */
    assert_int_equal(dp_json_number(j, NULL, "daemon_pid", &v), 0);
    assert_true(v == 7);
    assert_int_equal(dp_json_number(j, NULL, "neg", &v), 0);
    assert_true(v == -300);
}

static void json_number_section(void **state)
{
    (void)state;
    double v;
    const char *j = "{\"bytes_on_wire\": 1, \"total\": {\"bytes_on_wire\": 4096, \"faults\": 3}}";
    assert_int_equal(dp_json_number(j, "total", "bytes_on_wire", &v), 0);
    assert_true(v == 4096);
    assert_int_equal(dp_json_number(j, NULL, "bytes_on_wire", &v), 0);
    assert_true(v == 1);
    assert_int_equal(dp_json_number(j, "tasks", "faults", &v), -1);
}

static void json_number_rejects(void **state)
{
    (void)state;
    double v = 99;
    /* absent, a string value, a key that only appears as a value, NULL input */
    assert_int_equal(dp_json_number("{\"a\": 1}", NULL, "b", &v), -1);
    assert_int_equal(dp_json_number("{\"a\": \"1\"}", NULL, "a", &v), -1);
    assert_int_equal(dp_json_number("{\"x\": \"a\"}", NULL, "a", &v), -1);
    assert_int_equal(dp_json_number("{\"x\": \"a\", \"a\": 5}", NULL, "a", &v), 0);
    assert_true(v == 5);
    assert_int_equal(dp_json_number(NULL, NULL, "a", &v), -1);
    assert_int_equal(dp_json_number("{\"a\": }", NULL, "a", &v), -1);
}

static void run_captures_and_bounds(void **state)
{
    (void)state;
    struct dp_err err = {{0}};
    char *out = NULL;
    const char *echo[] = {"/bin/sh", "-c", "printf 'hello'; exit 3", NULL};
    int st = dp_orch_run(echo, NULL, 10, &out, -1, -1, &err);
    assert_true(st >= 0 && WIFEXITED(st) && WEXITSTATUS(st) == 3);
    assert_string_equal(out, "hello");
    free(out);
    const char *slow[] = {"/bin/sh", "-c", "sleep 20", NULL};
    assert_int_equal(dp_orch_run(slow, NULL, 0.2, NULL, -1, -1, &err), -1);
    assert_non_null(strstr(err.msg, "did not finish"));
}

static void proc_identity(void **state)
{
    (void)state;
    unsigned long long me = dp_proc_starttime(getpid());
    assert_true(me > 0);
    assert_true(dp_proc_same(getpid(), me));
    assert_false(dp_proc_same(getpid(), me + 1));
    pid_t c = fork();
    if (c == 0)
        _exit(0);
    waitpid(c, NULL, 0);
    assert_false(dp_proc_same(c, 0));
    assert_int_equal(dp_proc_wait_gone(c, 0, 1), 0);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(json_number_top_level_and_spacing),
        cmocka_unit_test(json_number_section),
        cmocka_unit_test(json_number_rejects),
        cmocka_unit_test(run_captures_and_bounds),
        cmocka_unit_test(proc_identity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
