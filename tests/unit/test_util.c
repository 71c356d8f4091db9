#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <arpa/inet.h>
#include <stdio.h>
#include <stdlib.h>
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

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(parse_size_suffixes),
        cmocka_unit_test(parse_size_rejects_garbage),
        cmocka_unit_test(parse_hostport),
        cmocka_unit_test(read_pid_file),
    };
    return cmocka_run_group_tests_name("util", tests, NULL, NULL);
}
