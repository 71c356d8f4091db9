#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
#include <sched.h>
#include <sys/wait.h>
#include <unistd.h>

#include "util.h"

static void parse_size_suffixes(void **state)
{
    (void)state;
    uint64_t v;
    assert_int_equal(dp_parse_size("4096", &v), 0);
    assert_int_equal(v, 4096);
    assert_int_equal(dp_parse_size("64K", &v), 0);
    assert_int_equal(v, 64 * 1024);
    assert_int_equal(dp_parse_size("256M", &v), 0);
    assert_int_equal(v, 256ULL << 20);
    assert_int_equal(dp_parse_size("1GiB", &v), 0);
    assert_int_equal(v, 1ULL << 30);
}

static void parse_size_rejects_garbage(void **state)
{
    (void)state;
    uint64_t v;
    assert_int_equal(dp_parse_size("", &v), -1);
    assert_int_equal(dp_parse_size("-1", &v), -1);
    assert_int_equal(dp_parse_size("12X", &v), -1);
    assert_int_equal(dp_parse_size("1G2", &v), -1);
    assert_int_equal(dp_parse_size("99999999999999T", &v), -1);
}

static void parse_hostport(void **state)
{
    (void)state;
    struct sockaddr_in sa;
    assert_int_equal(dp_parse_hostport("127.0.0.1:7000", &sa), 0);
    assert_int_equal(ntohs(sa.sin_port), 7000);
    assert_int_equal(dp_parse_hostport("localhost:1", &sa), 0);
    assert_int_equal(sa.sin_addr.s_addr, htonl(INADDR_LOOPBACK));
    assert_int_equal(dp_parse_hostport("127.0.0.1", &sa), -1);
    assert_int_equal(dp_parse_hostport("127.0.0.1:70000", &sa), -1);
    assert_int_equal(dp_parse_hostport("nohost:80", &sa), -1);
}

static void read_pid_file(void **state)
{
    (void)state;
    char path[] = "/tmp/dp-test-pidfile.XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    assert_int_equal(dp_write_full(fd, "4242\n", 5), 0);
    close(fd);
    assert_int_equal(dp_read_pid_file(path), 4242);
    FILE *f = fopen(path, "w");
    fputs("not a pid\n", f);
    fclose(f);
    assert_int_equal(dp_read_pid_file(path), 0);
    unlink(path);
    assert_int_equal(dp_read_pid_file(path), 0);
}

/* Numeric fields of /proc/PID/stat, counted past "(comm)". */
static void proc_stat_field(void **state)
{
    (void)state;
    long v = -7;
    assert_int_equal(dp_proc_stat_field(getpid(), 4, &v), 0);
    assert_int_equal(v, getppid());
    assert_int_equal(dp_proc_stat_field(getpid(), 6, &v), 0);
    assert_int_equal(v, getsid(0));
    assert_int_equal(dp_proc_stat_field(getpid(), 3, &v), -1);    /* the state letter */
    assert_int_equal(dp_proc_stat_field(getpid(), 999, &v), -1);  /* past the last */
    assert_int_equal(dp_proc_stat_field(0x3fffffff, 4, &v), -1);  /* no such process */
}

/* NSpid's last field: the pid inside the process's own pid namespace. */
static void proc_inner_pid(void **state)
{
    (void)state;
    assert_int_equal(dp_proc_inner_pid(getpid()), getpid());
    assert_int_equal(dp_proc_inner_pid(0x3fffffff), 0); /* no such process */

    /* init of a new pid namespace is 1 there, whatever its pid here */
    int hold[2], report[2];
    assert_int_equal(pipe(hold), 0);
    assert_int_equal(pipe(report), 0);
    pid_t helper = fork();
    assert_true(helper >= 0);
    if (helper == 0) {
        close(hold[1]);
        if (unshare(CLONE_NEWPID) < 0)
            _exit(2); /* needs root, as make test runs it */
        pid_t init = fork();
        if (init == 0) {
            char c;
            (void)!read(hold[0], &c, 1); /* until the test closes hold */
            _exit(0);
        }
        (void)!write(report[1], &init, sizeof(init));
        waitpid(init, NULL, 0);
        _exit(0);
    }
    close(hold[0]);
    close(report[1]);
    pid_t init = 0;
    ssize_t n = read(report[0], &init, sizeof(init));
    close(report[0]);
    int32_t inner = n == (ssize_t)sizeof(init) ? dp_proc_inner_pid(init) : -1;
    close(hold[1]);
    int st;
    waitpid(helper, &st, 0);
    if (WIFEXITED(st) && WEXITSTATUS(st) == 2)
        fail_msg("unshare(CLONE_NEWPID) failed: run the unit tests as root (make test does)");
    assert_true(init > 1);
    assert_int_equal(inner, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parse_size_suffixes),
        cmocka_unit_test(parse_size_rejects_garbage),
        cmocka_unit_test(parse_hostport),
        cmocka_unit_test(read_pid_file),
        cmocka_unit_test(proc_stat_field),
        cmocka_unit_test(proc_inner_pid),
    };
    return cmocka_run_group_tests_name("util", tests, NULL, NULL);
}
