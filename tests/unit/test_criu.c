#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/wait.h>
#include <unistd.h>

#include "criu.h"

static void parse_version_output(void **state)
{
    (void)state;
    struct dp_criu_version v;
    assert_int_equal(dp_criu_parse_version("Version: 4.2.1\nGitID: v4.2.1\n", &v), 0);
    assert_int_equal(v.major, 4);
    assert_int_equal(v.minor, 2);
    assert_int_equal(v.sublevel, 1);
    assert_int_equal(dp_criu_parse_version("Version: 3.17\n", &v), 0);
    assert_int_equal(v.major, 3);
    assert_int_equal(v.minor, 17);
    assert_int_equal(v.sublevel, 0);
    assert_int_equal(dp_criu_parse_version("4.2", &v), 0);
    assert_int_equal(dp_criu_parse_version("4.10.3-rc1", &v), 0);
    assert_int_equal(v.minor, 10);
    assert_int_equal(v.sublevel, 3);
}

static void parse_version_rejects_garbage(void **state)
{
    (void)state;
    struct dp_criu_version v;
    assert_int_equal(dp_criu_parse_version("", &v), -1);
    assert_int_equal(dp_criu_parse_version(NULL, &v), -1);
    assert_int_equal(dp_criu_parse_version("Version: ", &v), -1);
    assert_int_equal(dp_criu_parse_version("Version: 4", &v), -1);
    assert_int_equal(dp_criu_parse_version("Version: x.2", &v), -1);
    assert_int_equal(dp_criu_parse_version("4.2.1.7", &v), -1);
    assert_int_equal(dp_criu_parse_version("99999999999.1", &v), -1);
}

static int cmp(const char *a, const char *b)
{
    struct dp_criu_version va, vb;
    assert_int_equal(dp_criu_parse_version(a, &va), 0);
    assert_int_equal(dp_criu_parse_version(b, &vb), 0);
    int c = dp_criu_version_cmp(&va, &vb);
    return c < 0 ? -1 : c > 0;
}

static void version_compare(void **state)
{
    (void)state;
    assert_int_equal(cmp("4.2.1", DP_CRIU_MIN_VERSION), 1);
    assert_int_equal(cmp("4.2", DP_CRIU_MIN_VERSION), 0);
    assert_int_equal(cmp("4.1.1", DP_CRIU_MIN_VERSION), -1);
    assert_int_equal(cmp("3.17.1", DP_CRIU_MIN_VERSION), -1);
    assert_int_equal(cmp("4.10", "4.9.9"), 1);   /* numeric, not textual */
    assert_int_equal(cmp("5.0", "4.99.99"), 1);
    assert_int_equal(cmp("4.2.0", "4.2"), 0);
}

static void candidate_paths(void **state)
{
    (void)state;
    char out[256];
    assert_int_equal(dp_criu_candidate("/r/build/distriproc", 1, out, sizeof(out)), 0);
    assert_string_equal(out, "/r/.deps/bin/criu");
    assert_int_equal(dp_criu_candidate("/r/build-asan/tests/test_criu", 2, out, sizeof(out)), 0);
    assert_string_equal(out, "/r/.deps/bin/criu");
    assert_int_equal(dp_criu_candidate("/build/distriproc", 1, out, sizeof(out)), 0);
    assert_string_equal(out, "/.deps/bin/criu");
    assert_int_equal(dp_criu_candidate("/distriproc", 1, out, sizeof(out)), -1);
    assert_int_equal(dp_criu_candidate("build/distriproc", 1, out, sizeof(out)), -1); /* not absolute */
    assert_int_equal(dp_criu_candidate("/r/build/distriproc", 1, out, 10), -1);      /* too small */
}

static void installed_candidate_paths(void **state)
{
    (void)state;
    char out[256];
    assert_int_equal(dp_criu_installed_candidate("/usr/bin/distriproc", out, sizeof(out)), 0);
    assert_string_equal(out, "/usr/lib/distriproc/bin/criu");
    assert_int_equal(dp_criu_installed_candidate("/opt/dp/bin/distriproc", out, sizeof(out)), 0);
    assert_string_equal(out, "/opt/dp/lib/distriproc/bin/criu");
    assert_int_equal(dp_criu_installed_candidate("/bin/distriproc", out, sizeof(out)), 0);
    assert_string_equal(out, "/lib/distriproc/bin/criu");
    assert_int_equal(dp_criu_installed_candidate("/distriproc", out, sizeof(out)), -1);       /* no bindir parent */
    assert_int_equal(dp_criu_installed_candidate("bin/distriproc", out, sizeof(out)), -1);    /* not absolute */
    assert_int_equal(dp_criu_installed_candidate("/usr/bin/distriproc", out, 12), -1);        /* too small */
}

static void netns_paths(void **state)
{
    (void)state;
    char out[64];
    assert_int_equal(dp_netns_path("dp-src", out, sizeof(out)), 0);
    assert_string_equal(out, "/run/netns/dp-src");
    assert_int_equal(dp_netns_path("/proc/1/ns/net", out, sizeof(out)), 0);
    assert_string_equal(out, "/proc/1/ns/net");
    assert_int_equal(dp_netns_path("", out, sizeof(out)), -1);
    assert_int_equal(dp_netns_path("..", out, sizeof(out)), -1);
    assert_int_equal(dp_netns_path(NULL, out, sizeof(out)), -1);
}

/* argv as one space-separated string, for readable assertions. */
static const char *joined(const struct dp_criu_argv *a)
{
    static char s[4096];
    s[0] = '\0';
    for (size_t i = 0; i < a->argc; i++) {
        if (i)
            strcat(s, " ");
        strcat(s, a->argv[i]);
    }
    assert_null(a->argv[a->argc]);
    return s;
}

static void dump_args(void **state)
{
    (void)state;
    struct dp_criu_argv a;
    struct dp_err err;
    struct dp_dump_opts d = {.pid = 1234, .images_dir = "/tmp/img", .tcp_established = 1,
                             .file_validation = DP_FILE_VALIDATION_FILESIZE};
    assert_int_equal(dp_criu_dump_args(&d, &a, &err), 0);
    assert_string_equal(joined(&a), "dump --tree 1234 --images-dir /tmp/img --log-file dump.log -v4 "
                                    "--tcp-established --file-validation filesize");
    static const char *const extra[] = {"--network-lock", "nftables", NULL};
    d.leave_running = 1;
    d.shell_job = 1;
    d.tcp_established = 0;
    d.file_validation = DP_FILE_VALIDATION_DEFAULT;
    d.verbosity = 2;
    d.log_file = "d.log";
    d.extra = extra;
    assert_int_equal(dp_criu_dump_args(&d, &a, &err), 0);
    assert_string_equal(joined(&a), "dump --tree 1234 --images-dir /tmp/img --log-file d.log -v2 "
                                    "--shell-job --leave-running --network-lock nftables");
}

static void dump_args_rejects_bad_options(void **state)
{
    (void)state;
    struct dp_criu_argv a;
    struct dp_err err = {{0}};
    struct dp_dump_opts d = {.pid = 0, .images_dir = "/tmp/img"};
    assert_int_equal(dp_criu_dump_args(&d, &a, &err), -1);
    assert_non_null(strstr(err.msg, "pid"));
    d.pid = 5;
    d.images_dir = "";
    assert_int_equal(dp_criu_dump_args(&d, &a, &err), -1);
    d.images_dir = "/tmp/img";
    d.log_file = "../escape.log";
    assert_int_equal(dp_criu_dump_args(&d, &a, &err), -1);
    assert_non_null(strstr(err.msg, "plain file name"));
}

static void restore_args(void **state)
{
    (void)state;
    struct dp_criu_argv a;
    struct dp_err err;
    struct dp_restore_opts r = {.images_dir = "img", .detached = 1, .lazy_pages = 1,
                                .pidfile = "root.pid", .tcp_established = 1,
                                .file_validation = DP_FILE_VALIDATION_BUILDID};
    assert_int_equal(dp_criu_restore_args(&r, &a, &err), 0);
    assert_string_equal(joined(&a), "restore --images-dir img --log-file restore.log -v4 --tcp-established "
                                    "--file-validation buildid --restore-detached --lazy-pages --pidfile root.pid");
    r.images_dir = NULL;
    assert_int_equal(dp_criu_restore_args(&r, &a, &err), -1);
}

static void argv_overflow_is_an_error(void **state)
{
    (void)state;
    const char *extra[DP_CRIU_MAX_ARGS + 2];
    for (size_t i = 0; i < DP_CRIU_MAX_ARGS + 1; i++)
        extra[i] = "--x";
    extra[DP_CRIU_MAX_ARGS + 1] = NULL;
    struct dp_criu_argv a;
    struct dp_err err = {{0}};
    struct dp_restore_opts r = {.images_dir = "img", .extra = extra};
    assert_int_equal(dp_criu_restore_args(&r, &a, &err), -1);
    assert_non_null(strstr(err.msg, "too many"));
    assert_true(a.argc <= DP_CRIU_MAX_ARGS);
}

static void file_validation_names(void **state)
{
    (void)state;
    enum dp_file_validation fv;
    assert_int_equal(dp_file_validation_parse("filesize", &fv), 0);
    assert_int_equal(fv, DP_FILE_VALIDATION_FILESIZE);
    assert_int_equal(dp_file_validation_parse("buildid", &fv), 0);
    assert_int_equal(fv, DP_FILE_VALIDATION_BUILDID);
    assert_int_equal(dp_file_validation_parse("md5", &fv), -1);
    assert_int_equal(dp_file_validation_parse(NULL, &fv), -1);
}

/* The runner, with DISTRIPROC_CRIU pointed at /bin/sh so no real criu is needed. */
static void run_reports_exit_status_and_log_tail(void **state)
{
    (void)state;
    char log[] = "/tmp/dp-test-criu-log.XXXXXX";
    int fd = mkstemp(log);
    assert_true(fd >= 0);
    const char text[] = "line 1\n(00.05) Error (criu/util.c:1534): rlimit: Can't setup RLIMIT_NOFILE\n"
                        "Error (criu/cr-dump.c:1): something failed\n(00.07) Error (criu/cr-dump.c:2): Dumping FAILED.\n";
    assert_int_equal(write(fd, text, sizeof(text) - 1), (ssize_t)(sizeof(text) - 1));
    close(fd);
    setenv(DP_CRIU_ENV, "/bin/sh", 1);
    const char *const fail[] = {"-c", "exit 3", NULL};
    struct dp_criu_run_opts o = {.timeout_s = 10, .log_path = log};
    struct dp_err err = {{0}};
    assert_int_equal(dp_criu_run(fail, &o, &err), -1);
    assert_non_null(strstr(err.msg, "exited with status 3: Error (criu/cr-dump.c:1): something failed"));
    assert_non_null(strstr(err.msg, log));
    const char *const ok[] = {"-c", "exit 0", NULL};
    assert_int_equal(dp_criu_run(ok, &o, &err), 0);
    unlink(log);
    unsetenv(DP_CRIU_ENV);
}

/* A criu that ignores SIGTERM (a lazy restore whose daemon died) is SIGKILLed. */
static void run_kills_on_timeout(void **state)
{
    (void)state;
    setenv(DP_CRIU_ENV, "/bin/sh", 1);
    const char *const hang[] = {"-c", "trap '' TERM; sleep 30", NULL};
    struct dp_criu_run_opts o = {.timeout_s = 0.3};
    struct dp_err err = {{0}};
    uint64_t t0 = dp_now_ns();
    assert_int_equal(dp_criu_run(hang, &o, &err), -1);
    assert_non_null(strstr(err.msg, "did not finish"));
    /* Loose sanity bound: well below the 30 s the child would otherwise run. */
    assert_true(dp_now_ns() - t0 < 20ULL * 1000000000ULL);
    unsetenv(DP_CRIU_ENV);
}

/* start/poll/kill, the way a lazy restore runs criu in the background. */
static void start_poll_kill(void **state)
{
    (void)state;
    setenv(DP_CRIU_ENV, "/bin/sh", 1);
    struct dp_criu_run_opts o = {.timeout_s = 20};
    struct dp_err err = {{0}};
    struct dp_criu_proc p;
    const char *const quick[] = {"-c", "exit 7", NULL};
    assert_int_equal(dp_criu_start(quick, &o, &p, &err), 0);
    int status = 0;
    for (int i = 0; i < 2000 && dp_criu_poll(&p, &status); i++)
        usleep(5000);
    assert_true(WIFEXITED(status));
    assert_int_equal(WEXITSTATUS(status), 7);
    /* Reaped once; finish still reports what happened. */
    assert_int_equal(dp_criu_finish(&p, &err), -1);
    assert_non_null(strstr(err.msg, "exited with status 7"));

    const char *const slow[] = {"-c", "trap '' TERM; sleep 30", NULL};
    assert_int_equal(dp_criu_start(slow, &o, &p, &err), 0);
    assert_int_equal(dp_criu_poll(&p, &status), 1);
    dp_criu_kill(&p);
    assert_int_equal(dp_criu_poll(&p, &status), 0);
    assert_true(WIFSIGNALED(status));
    assert_int_equal(WTERMSIG(status), SIGKILL);
    unsetenv(DP_CRIU_ENV);
}

static void find_rejects_bad_env_and_missing_netns(void **state)
{
    (void)state;
    char path[256];
    struct dp_err err = {{0}};
    setenv(DP_CRIU_ENV, "/nonexistent/criu", 1);
    assert_int_equal(dp_criu_find(path, sizeof(path), &err), -1);
    assert_non_null(strstr(err.msg, DP_CRIU_ENV));
    setenv(DP_CRIU_ENV, "/bin/true", 1);
    assert_int_equal(dp_criu_find(path, sizeof(path), &err), 0);
    assert_string_equal(path, "/bin/true");
    const char *const args[] = {"check", NULL};
    struct dp_criu_run_opts o = {.netns = "dp-no-such-netns-for-test", .timeout_s = 5};
    assert_int_equal(dp_criu_run(args, &o, &err), -1);
    assert_non_null(strstr(err.msg, "/run/netns/dp-no-such-netns-for-test"));
    unsetenv(DP_CRIU_ENV);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parse_version_output),
        cmocka_unit_test(parse_version_rejects_garbage),
        cmocka_unit_test(version_compare),
        cmocka_unit_test(candidate_paths),
        cmocka_unit_test(installed_candidate_paths),
        cmocka_unit_test(netns_paths),
        cmocka_unit_test(dump_args),
        cmocka_unit_test(dump_args_rejects_bad_options),
        cmocka_unit_test(restore_args),
        cmocka_unit_test(argv_overflow_is_an_error),
        cmocka_unit_test(file_validation_names),
        cmocka_unit_test(run_reports_exit_status_and_log_tail),
        cmocka_unit_test(run_kills_on_timeout),
        cmocka_unit_test(start_poll_kill),
        cmocka_unit_test(find_rejects_bad_env_and_missing_netns),
    };
    return cmocka_run_group_tests_name("criu", tests, NULL, NULL);
}
