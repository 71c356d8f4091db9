/* cnet's pure parts: the address plan, link names, the OCI state on a hook's stdin. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include "cnet.h"

static void plan_host_end_is_first_other_address(void **state)
{
    (void)state;
    struct cnet_plan p;
    struct dp_err err;
    assert_int_equal(cnet_plan_parse("10.251.1.2/30", &p, &err), 0);
    assert_string_equal(p.cont_addr, "10.251.1.2");
    assert_string_equal(p.host_addr, "10.251.1.1");
    assert_int_equal(p.prefix, 30);
    /* The container on the first address: the host end takes the second. */
    assert_int_equal(cnet_plan_parse("10.251.1.1/30", &p, &err), 0);
    assert_string_equal(p.host_addr, "10.251.1.2");
    assert_int_equal(cnet_plan_parse("172.20.9.77/16", &p, &err), 0);
    assert_string_equal(p.host_addr, "172.20.0.1");
    assert_int_equal(p.prefix, 16);
}

static void plan_rejects_bad_addresses(void **state)
{
    (void)state;
    struct cnet_plan p;
    struct dp_err err;
    const char *bad[] = {"", "10.251.1.2", "10.251.1.2/", "10.251.1.2/31", "10.251.1.2/15", "10.251.1.2/30x",
                         "10.251.1.0/30", "10.251.1.3/30", "10.251.1/30", "fe80::1/64", "10.251.1.256/30",
                         "10.251.1.2/-30", "10.251.1.2/ 30", "10.251.1.2.10.251.1.2.10.251.1.2/30"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err.msg[0] = '\0';
        assert_int_equal(cnet_plan_parse(bad[i], &p, &err), -1);
        assert_true(err.msg[0] != '\0');
    }
    assert_int_equal(cnet_plan_parse(NULL, &p, &err), -1);
}

static void ifnames(void **state)
{
    (void)state;
    assert_true(cnet_ifname_ok("rfc1h"));
    assert_true(cnet_ifname_ok("a.b-c_d"));
    assert_true(cnet_ifname_ok("123456789012345"));
    assert_false(cnet_ifname_ok("1234567890123456"));
    assert_false(cnet_ifname_ok(""));
    assert_false(cnet_ifname_ok(NULL));
    assert_false(cnet_ifname_ok("."));
    assert_false(cnet_ifname_ok(".."));
    assert_false(cnet_ifname_ok("a b"));
    assert_false(cnet_ifname_ok("a/b"));
    assert_false(cnet_ifname_ok("eth0:1"));
}

static int state_pid(const char *text, pid_t *pid)
{
    struct dp_err err;
    err.msg[0] = '\0';
    int rc = cnet_state_pid(text, strlen(text), pid, &err);
    if (rc < 0)
        assert_true(err.msg[0] != '\0');
    return rc;
}

static void oci_state(void **state)
{
    (void)state;
    pid_t pid = 0;
    assert_int_equal(state_pid("{\"ociVersion\":\"1.0.2\",\"id\":\"pg1\",\"status\":\"creating\",\"pid\":4242,"
                               "\"bundle\":\"/b\",\"annotations\":{}}", &pid), 0);
    assert_int_equal(pid, 4242);
    const char *bad[] = {
        "", "{", "[]", "null", "{\"pid\":42}",                       /* no ociVersion */
        "{\"ociVersion\":\"1.0.2\"}",                                 /* no pid (stage before the process) */
        "{\"ociVersion\":\"1.0.2\",\"pid\":0}", "{\"ociVersion\":\"1.0.2\",\"pid\":-5}",
        "{\"ociVersion\":\"1.0.2\",\"pid\":\"42\"}", "{\"ociVersion\":\"1.0.2\",\"pid\":4.2}",
        "{\"ociVersion\":\"1.0.2\",\"pid\":4294967338}", "{\"ociVersion\":1,\"pid\":42}",
        "{\"ociVersion\":\"1.0.2\",\"pid\":42,\"pid\":43}",          /* duplicate key */
        "{\"ociVersion\":\"1.0.2\",\"pid\":42} trailing",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(state_pid(bad[i], &pid), -1);
    /* Embedded NUL: the length, not the terminator, bounds the text. */
    struct dp_err err;
    assert_int_equal(cnet_state_pid("{\"ociVersion\":\"1\",\"pid\":7}\0junk", 31, &pid, &err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(plan_host_end_is_first_other_address),
        cmocka_unit_test(plan_rejects_bad_addresses),
        cmocka_unit_test(ifnames),
        cmocka_unit_test(oci_state),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
