/* cnet's pure parts: the address plan, link names, the OCI state on a hook's stdin. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <string.h>
#include <cmocka.h>

#include <jansson.h>
#include <stdlib.h>

#include "bundle.h"
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

/* The bundle generator's network hook: a createRuntime hook with the
 * container-net command line, a new network namespace, sysfs (the container
 * owns its network namespace), and refusals. */
static void bundle_net_hook(void **state)
{
    (void)state;
    const char *args[] = {"/bin/true", NULL}, *tmpfs[] = {"/run", NULL};
    struct dp_bundle_idmap map = {0, 100000, 65536};
    struct dp_bundle_spec s = {.rootfs = "/r", .args = args, .tmpfs = tmpfs, .uid_maps = &map, .gid_maps = &map,
                               .nuid_maps = 1, .ngid_maps = 1,
                               .net_hook = {"/opt/dp/distriproc", "rf", "dst", "rfc1", "10.251.7.2/30"}};
    struct dp_err err;
    char *text;
    assert_int_equal(dp_bundle_config_json(&s, &text, &err), 0);
    json_t *root = json_loads(text, 0, NULL);
    free(text);
    assert_non_null(root);
    json_t *hook = json_array_get(json_object_get(json_object_get(root, "hooks"), "createRuntime"), 0);
    assert_string_equal(json_string_value(json_object_get(hook, "path")), "/opt/dp/distriproc");
    const char *want[] = {"distriproc", "container-net", "hook", "--host", "dst", "--ifname", "rfc1", "--addr",
                          "10.251.7.2/30"};
    json_t *a = json_object_get(hook, "args");
    assert_int_equal(json_array_size(a), 9);
    for (size_t i = 0; i < 9; i++)
        assert_string_equal(json_string_value(json_array_get(a, i)), want[i]);
    assert_string_equal(json_string_value(json_array_get(json_object_get(hook, "env"), 0)), "DISTRIPROC_LAB=rf");
    int sysfs = 0, run = 0, netpath = 0, net = 0;
    size_t i;
    json_t *v;
    json_array_foreach(json_object_get(root, "mounts"), i, v) {
        const char *d = json_string_value(json_object_get(v, "destination"));
        const char *t = json_string_value(json_object_get(v, "type"));
        sysfs |= strcmp(d, "/sys") == 0 && strcmp(t, "sysfs") == 0;
        run |= strcmp(d, "/run") == 0 && strcmp(t, "tmpfs") == 0;
    }
    json_array_foreach(json_object_get(json_object_get(root, "linux"), "namespaces"), i, v) {
        if (strcmp(json_string_value(json_object_get(v, "type")), "network") == 0) {
            net = 1;
            netpath = json_object_get(v, "path") != NULL;
        }
    }
    assert_true(sysfs && run && net && !netpath);
    json_decref(root);

    s.netns_path = "/run/netns/rf-dst"; /* a joined namespace cannot be wired */
    assert_int_equal(dp_bundle_config_json(&s, &text, &err), -1);
    s.netns_path = NULL;
    s.net_hook.addr = "10.251.7.3/30"; /* broadcast */
    assert_int_equal(dp_bundle_config_json(&s, &text, &err), -1);
    s.net_hook.addr = "10.251.7.2/30";
    s.net_hook.ifname = "much-too-long-name";
    assert_int_equal(dp_bundle_config_json(&s, &text, &err), -1);
    s.net_hook.ifname = "rfc1";
    s.net_hook.path = "distriproc"; /* relative */
    assert_int_equal(dp_bundle_config_json(&s, &text, &err), -1);
    s.net_hook.path = "/opt/dp/distriproc";
    s.net_hook.host = "mars";
    assert_int_equal(dp_bundle_config_json(&s, &text, &err), -1);
    s.net_hook.host = "dst";
    const char *badtmp[] = {"run", NULL};
    s.tmpfs = badtmp;
    assert_int_equal(dp_bundle_config_json(&s, &text, &err), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(plan_host_end_is_first_other_address),
        cmocka_unit_test(plan_rejects_bad_addresses),
        cmocka_unit_test(ifnames),
        cmocka_unit_test(oci_state),
        cmocka_unit_test(bundle_net_hook),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
