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
    /* parsed, not scanned: truncated text, a boolean, a key outside its
     * section, a key named only inside a string */
    assert_int_equal(dp_json_number("{\"a\": 1", NULL, "a", &v), -1);
    assert_int_equal(dp_json_number("{\"a\": true}", NULL, "a", &v), -1);
    assert_int_equal(dp_json_number("{\"total\": {\"x\": 1}, \"b\": 2}", "total", "b", &v), -1);
    assert_int_equal(dp_json_number("{\"s\": \"{\\\"a\\\": 3}\"}", NULL, "a", &v), -1);
}

static void json_number_nested(void **state)
{
    (void)state;
    double v = 0;
    /* the stats shape: total.latency.p50_us, then a tasks array with its own */
    const char *j = "{\"note\": \"total\", \"total\": {\"faults\": 3, \"latency\": {\"p50_us\": 12.5}}, "
                    "\"tasks\": [{\"latency\": {\"p50_us\": 99}}]}";
    assert_int_equal(dp_json_number(j, "latency", "p50_us", &v), 0);
    assert_true(v == 12.5);
    assert_int_equal(dp_json_number(j, "total", "p50_us", &v), 0);
    assert_true(v == 12.5);
    assert_int_equal(dp_json_number(j, "tasks", "p50_us", &v), 0);
    assert_true(v == 99);
    assert_int_equal(dp_json_number("7", NULL, "a", &v), -1);
}

static void json_arrays(void **state)
{
    (void)state;
    /* forkmem's TOUCH reply and the daemon's histogram buckets */
    const char *j = "{\"touched\": 3, \"us\": [1.5, 2, 30.25], "
                    "\"b\": {\"latency_buckets_us\": [[1.024, 5], [2.048, 1]]}}";
    size_t n = 0;
    double *us = dp_json_numbers(j, "us", &n);
    assert_non_null(us);
    assert_int_equal(n, 3);
    assert_true(us[0] == 1.5 && us[1] == 2 && us[2] == 30.25);
    free(us);
    char *t = dp_json_array_text(j, "latency_buckets_us");
    assert_non_null(t);
    assert_string_equal(t, "[[1.024,5],[2.048,1]]");
    free(t);
    assert_null(dp_json_numbers(j, "latency_buckets_us", &n)); /* elements are arrays */
    assert_null(dp_json_numbers(j, "touched", &n));            /* not an array */
    assert_null(dp_json_numbers("{\"us\": [1, 2", "us", &n));  /* truncated */
    assert_null(dp_json_array_text(j, "b"));
    assert_null(dp_json_array_text(NULL, "us"));
    us = dp_json_numbers("{\"us\": []}", "us", &n);
    assert_non_null(us);
    assert_int_equal(n, 0);
    free(us);
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
        cmocka_unit_test(json_number_nested),
        cmocka_unit_test(json_arrays),
        cmocka_unit_test(run_captures_and_bounds),
        cmocka_unit_test(proc_identity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
