/* The shared pieces of the benchmarks' result files (lib/benchjson.c): reals
 * keep the decimals the files always had and print without binary tails, a
 * non-finite ratio is null, and a write either lands whole or not at all. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "benchjson.h"

/* A scratch directory per test, so tests run in parallel without sharing. */
static char *scratch(char *buf, size_t len)
{
    snprintf(buf, len, "/tmp/dp-test-benchjson.XXXXXX");
    assert_non_null(mkdtemp(buf));
    return buf;
}

/* The whole file as a string (malloc'd). */
static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    assert_non_null(f);
    static char buf[8192];
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    fclose(f);
    buf[n] = '\0';
    return strdup(buf);
}

static void reals_keep_their_decimals_in_the_file(void **state)
{
    (void)state;
    char dir[64], path[128], tmp[136];
    scratch(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/r.json", dir);
    json_t *doc = json_pack("{s:o, s:o, s:o, s:o, s:o}", "a", bench_json_real(0.1234567, 3), "b",
                            bench_json_real(113.84999, 1), "c", bench_json_real(5, 2), "d",
                            bench_json_real(2831.125, 2), "e", bench_json_real(0.1, 6));
    assert_non_null(doc);
    assert_int_equal(bench_json_write(path, doc), 0);
    char *text = slurp(path);
    assert_non_null(strstr(text, "\"a\": 0.123,"));
    assert_non_null(strstr(text, "\"b\": 113.8,"));
    assert_non_null(strstr(text, "\"c\": 5.0,")); /* still a real, as "%.2f" was */
    assert_non_null(strstr(text, "\"d\": 2831.13,"));
    assert_non_null(strstr(text, "\"e\": 0.1\n"));
    free(text);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    assert_int_equal(access(tmp, F_OK), -1);
    unlink(path);
    rmdir(dir);
}

static void non_finite_is_null(void **state)
{
    (void)state;
    json_t *v = bench_json_real(NAN, 3);
    assert_true(json_is_null(v));
    v = bench_json_real(INFINITY, 3);
    assert_true(json_is_null(v));
    v = bench_json_real(-INFINITY, 1);
    assert_true(json_is_null(v));
    v = bench_json_real(1.5, 1);
    assert_true(json_is_real(v));
    json_decref(v);
}

static void a_failed_build_or_path_writes_nothing(void **state)
{
    (void)state;
    char dir[64], path[128];
    scratch(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/r.json", dir);
    errno = 0;
    assert_int_equal(bench_json_write(path, NULL), -1);
    assert_int_equal(errno, ENOMEM);
    assert_int_equal(access(path, F_OK), -1);
    snprintf(path, sizeof(path), "%s/missing/r.json", dir);
    assert_int_equal(bench_json_write(path, json_pack("{s:i}", "x", 1)), -1);
    assert_int_equal(errno, ENOENT);
    rmdir(dir);
}

static void proc_field_takes_the_first_matching_line(void **state)
{
    (void)state;
    char dir[64], path[128], out[32];
    scratch(dir, sizeof(dir));
    snprintf(path, sizeof(path), "%s/meminfo", dir);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("MemTotalish no colon\nMemFree:  5 kB\nMemTotal:\t 24683664 kB\nMemTotal: 1 kB\n", f);
    fclose(f);
    bench_proc_field(path, "MemTotal", out, sizeof(out));
    assert_string_equal(out, "24683664 kB");
    bench_proc_field(path, "SwapTotal", out, sizeof(out));
    assert_string_equal(out, "");
    bench_proc_field(path, "MemFree", out, 4); /* cut to the buffer */
    assert_string_equal(out, "5 k");
    unlink(path);
    bench_proc_field(path, "MemTotal", out, sizeof(out));
    assert_string_equal(out, "");
    rmdir(dir);
}

static void machine_and_time_have_the_schema_types(void **state)
{
    (void)state;
    json_t *m = bench_json_machine();
    assert_non_null(m);
    assert_true(json_is_string(json_object_get(m, "uname")));
    assert_true(json_is_string(json_object_get(m, "cpu")));
    assert_true(json_is_integer(json_object_get(m, "cpus")));
    assert_true(json_is_string(json_object_get(m, "memory")));
    assert_int_equal(json_object_size(m), 4);
    assert_true(json_integer_value(json_object_get(m, "cpus")) >= 1);
    assert_non_null(strstr(json_string_value(json_object_get(m, "memory")), "kB"));
    json_decref(m);
    json_t *t = bench_json_utc(86400 + 3661);
    assert_string_equal(json_string_value(t), "1970-01-02T01:01:01Z");
    json_decref(t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(reals_keep_their_decimals_in_the_file),
        cmocka_unit_test(non_finite_is_null),
        cmocka_unit_test(a_failed_build_or_path_writes_nothing),
        cmocka_unit_test(proc_field_takes_the_first_matching_line),
        cmocka_unit_test(machine_and_time_have_the_schema_types),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
