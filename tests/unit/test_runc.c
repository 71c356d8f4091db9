/* Unit tests of the pure parts of container support: runc's version and
 * arguments (lib/runc), OCI config.json written and read back (lib/bundle),
 * the rootfs manifest's canonical form, JSON and comparison (lib/rootfs). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <jansson.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "bundle.h"
#include "rootfs.h"
#include "runc.h"

/* ---- runc ---------------------------------------------------------------------- */

static void runc_version_parsing(void **state)
{
    (void)state;
    struct dp_criu_version v;
    assert_int_equal(dp_runc_parse_version("runc version 1.1.5+ds1\ncommit: 1.1.5+ds1-1+deb12u1\nspec: 1.0.2-dev\n", &v), 0);
    assert_int_equal(v.major, 1);
    assert_int_equal(v.minor, 1);
    assert_int_equal(v.sublevel, 5);
    assert_int_equal(dp_runc_parse_version("runc version 1.2.0-rc.1\n", &v), 0);
    assert_int_equal(v.minor, 2);
    assert_int_equal(dp_runc_parse_version("runc version 1.0.0\n", &v), 0);
    struct dp_criu_version min;
    dp_criu_parse_version(DP_RUNC_MIN_VERSION, &min);
    assert_true(dp_criu_version_cmp(&v, &min) < 0);
    assert_int_equal(dp_runc_parse_version("crun version 1.8\n", &v), -1);
    assert_int_equal(dp_runc_parse_version("runc version \n", &v), -1);
    assert_int_equal(dp_runc_parse_version("", &v), -1);
    assert_int_equal(dp_runc_parse_version(NULL, &v), -1);
}

static void runc_ids(void **state)
{
    (void)state;
    assert_true(dp_runc_id_ok("ct1"));
    assert_true(dp_runc_id_ok("a.b_c+d-e"));
    assert_false(dp_runc_id_ok(""));
    assert_false(dp_runc_id_ok("."));
    assert_false(dp_runc_id_ok(".."));
    assert_false(dp_runc_id_ok("a/b"));
    assert_false(dp_runc_id_ok("a b"));
    assert_false(dp_runc_id_ok(NULL));
}

/* A runc handle without running anything: argv building is pure. */
static struct dp_runc test_runc(const char *root)
{
    struct dp_runc r;
    memset(&r, 0, sizeof(r));
    strcpy(r.path, "/usr/sbin/runc");
    strcpy(r.criu, "/x/.deps/bin/criu");
    r.root = root;
    return r;
}

/* argv as one line, to compare whole command lines at once. */
static void join(const struct dp_criu_argv *a, char *out, size_t len)
{
    out[0] = '\0';
    for (size_t i = 0; a->argv[i]; i++) {
        strncat(out, a->argv[i], len - strlen(out) - 1);
        if (a->argv[i + 1])
            strncat(out, " ", len - strlen(out) - 1);
    }
}

static void runc_argv(void **state)
{
    (void)state;
    struct dp_runc r = test_runc("/tmp/root");
    struct dp_criu_argv a;
    struct dp_err err = {{0}};
    char s[1024];
    struct dp_runc_checkpoint_opts c = {.id = "ct1", .image_path = "/img", .work_path = "/img",
                                        .tcp_established = 1};
    assert_int_equal(dp_runc_checkpoint_args(&r, &c, &a, &err), 0);
    join(&a, s, sizeof(s));
    assert_string_equal(s, "/usr/sbin/runc --root /tmp/root --criu /x/.deps/bin/criu checkpoint --image-path /img "
                           "--work-path /img --tcp-established ct1");
    struct dp_runc_restore_opts o = {.id = "ct1", .image_path = "/w/images", .work_path = "/w", .bundle = "/b",
                                     .pid_file = "/w/restored.pid", .lazy_pages = 1, .detach = 1};
    r.root = NULL;
    assert_int_equal(dp_runc_restore_args(&r, &o, &a, &err), 0);
    join(&a, s, sizeof(s));
    assert_string_equal(s, "/usr/sbin/runc --criu /x/.deps/bin/criu restore --image-path /w/images --work-path /w "
                           "--bundle /b --pid-file /w/restored.pid --lazy-pages --detach ct1");
    const char *args[] = {"--force", "ct1", NULL};
    assert_int_equal(dp_runc_simple_args(&r, "delete", args, &a, &err), 0);
    join(&a, s, sizeof(s));
    assert_string_equal(s, "/usr/sbin/runc delete --force ct1");
    /* a bad ID or a missing path is an error, not a command line */
    o.id = "../etc";
    assert_int_equal(dp_runc_restore_args(&r, &o, &a, &err), -1);
    assert_non_null(strstr(err.msg, "not a container ID"));
    o.id = "ct1";
    o.bundle = NULL;
    assert_int_equal(dp_runc_restore_args(&r, &o, &a, &err), -1);
    /* memory mode: lazy pages, CRIU's page server and runc's status fd */
    c.lazy_pages = 1;
    c.leave_running = 1;
    c.page_server = "127.0.0.1:4000";
    c.status_fd = 1;
    assert_int_equal(dp_runc_checkpoint_args(&r, &c, &a, &err), 0);
    join(&a, s, sizeof(s));
    assert_string_equal(s, "/usr/sbin/runc --criu /x/.deps/bin/criu checkpoint --image-path /img --work-path /img "
                           "--leave-running --lazy-pages --page-server 127.0.0.1:4000 --status-fd 1 "
                           "--tcp-established ct1");
    c.status_fd = 0; /* unset (or stdin): refused */
    assert_int_equal(dp_runc_checkpoint_args(&r, &c, &a, &err), -1);
    assert_non_null(strstr(err.msg, "status fd"));
    c.status_fd = 1;
    c.page_server = NULL;
    assert_int_equal(dp_runc_checkpoint_args(&r, &c, &a, &err), -1);
    c.lazy_pages = 0;
    c.work_path = NULL;
    assert_int_equal(dp_runc_checkpoint_args(&r, &c, &a, &err), -1);
}

static void runc_state_parsing(void **state)
{
    (void)state;
    struct dp_runc_state st;
    struct dp_err err = {{0}};
    const char *ok = "{\n  \"ociVersion\": \"1.0.2-dev\",\n  \"id\": \"t1\",\n  \"pid\": 7590,\n  \"status\": "
                     "\"running\",\n  \"bundle\": \"/tmp/x/b1\",\n  \"rootfs\": \"/tmp/x/b1/rootfs\",\n  \"owner\": \"\"\n}";
    assert_int_equal(dp_runc_state_parse(ok, strlen(ok), &st, &err), 0);
    assert_int_equal(st.pid, 7590);
    assert_string_equal(st.status, "running");
    assert_string_equal(st.bundle, "/tmp/x/b1");
    assert_string_equal(st.rootfs, "/tmp/x/b1/rootfs");
    const char *bad[] = {
        "", "{", "[]", "{\"pid\": 1}", "{\"pid\": -1, \"status\": \"running\", \"bundle\": \"/b\", \"rootfs\": \"/r\"}",
        "{\"pid\": 1.5, \"status\": \"running\", \"bundle\": \"/b\", \"rootfs\": \"/r\"}",
        "{\"pid\": 1, \"status\": 3, \"bundle\": \"/b\", \"rootfs\": \"/r\"}",
        "{\"pid\": 1, \"pid\": 2, \"status\": \"running\", \"bundle\": \"/b\", \"rootfs\": \"/r\"}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(dp_runc_state_parse(bad[i], strlen(bad[i]), &st, &err), -1);
}

/* ---- bundle -------------------------------------------------------------------- */

static void bundle_config_roundtrip(void **state)
{
    (void)state;
    const char *args[] = {"/dp/memwalk", "--mib", "16", NULL};
    const char *env[] = {"A=\"quoted\"", NULL};
    struct dp_bundle_bind binds[] = {{"/usr", "/usr", 1}, {"/srv/data", "/data", 0}};
    struct dp_bundle_idmap um[] = {{0, 100000, 65536}}, gm[] = {{0, 200000, 1000}};
    const char *ann[] = {"org.criu.config=/etc/criu/dp.conf", NULL};
    struct dp_bundle_spec s = {.rootfs = "rootfs", .args = args, .env = env, .uid = 5, .gid = 6, .annotations = ann,
                               .netns_path = "/run/netns/dp-src", .binds = binds, .nbinds = 2, .tmp_tmpfs = 1,
                               .uid_maps = um, .gid_maps = gm, .nuid_maps = 1, .ngid_maps = 1};
    char *text;
    struct dp_err err = {{0}};
    assert_int_equal(dp_bundle_config_json(&s, &text, &err), 0);
    /* valid JSON with what runc reads */
    json_error_t je;
    json_t *root = json_loads(text, 0, &je);
    assert_non_null(root);
    json_t *proc = json_object_get(root, "process");
    assert_int_equal(json_integer_value(json_object_get(json_object_get(proc, "user"), "uid")), 5);
    assert_string_equal(json_string_value(json_array_get(json_object_get(proc, "env"), 1)), "A=\"quoted\"");
    assert_int_equal(json_array_size(json_object_get(proc, "args")), 3);
    json_t *lnx = json_object_get(root, "linux");
    assert_int_equal(json_integer_value(json_object_get(json_array_get(json_object_get(lnx, "gidMappings"), 0),
                                                        "hostID")),
                     200000);
    assert_null(json_object_get(proc, "rlimits")); /* raising one would need CAP_SYS_RESOURCE */
    assert_string_equal(json_string_value(json_object_get(json_object_get(root, "annotations"), "org.criu.config")),
                        "/etc/criu/dp.conf");
    json_decref(root);

    /* and read back */
    struct dp_bundle_info b;
    assert_int_equal(dp_bundle_parse("/bundles/b1", text, strlen(text), &b, &err), 0);
    assert_string_equal(b.rootfs, "/bundles/b1/rootfs");
    assert_string_equal(b.netns_path, "/run/netns/dp-src");
    assert_true(b.userns);
    char host[4096];
    assert_int_equal(dp_bundle_resolve(&b, "/usr/lib/libc.so.6", host, sizeof(host)), 0);
    assert_string_equal(host, "/usr/lib/libc.so.6");
    assert_int_equal(dp_bundle_resolve(&b, "/data/x/y", host, sizeof(host)), 0);
    assert_string_equal(host, "/srv/data/x/y");
    assert_int_equal(dp_bundle_resolve(&b, "/database", host, sizeof(host)), 0); /* not under /data */
    assert_string_equal(host, "/bundles/b1/rootfs/database");
    assert_int_equal(dp_bundle_resolve(&b, "/tmp/f", host, sizeof(host)), -1);     /* tmpfs */
    assert_int_equal(dp_bundle_resolve(&b, "/dev/shm/PostgreSQL.1", host, sizeof(host)), -1);
    assert_int_equal(dp_bundle_resolve(&b, "/proc/self/maps", host, sizeof(host)), -1);
    assert_int_equal(dp_bundle_resolve(&b, "relative", host, sizeof(host)), -1);
    dp_bundle_info_free(&b);
    free(text);
}

static void bundle_spec_rejected(void **state)
{
    (void)state;
    const char *args[] = {"/bin/true", NULL}, *none[] = {NULL};
    struct dp_bundle_bind dotdot[] = {{"/usr", "/a/../b", 1}}, onroot[] = {{"/srv", "/", 1}};
    struct dp_bundle_idmap um[] = {{0, 100000, 0}};
    char *text;
    struct dp_err err = {{0}};
    struct dp_bundle_spec s = {.rootfs = "rootfs", .args = none};
    assert_int_equal(dp_bundle_config_json(&s, &text, &err), -1);
    assert_non_null(strstr(err.msg, "process.args"));
    s.args = args;
    s.binds = dotdot;
    s.nbinds = 1;
    assert_int_equal(dp_bundle_config_json(&s, &text, &err), -1);
    s.binds = onroot;
    assert_int_equal(dp_bundle_config_json(&s, &text, &err), -1);
    s.nbinds = 0;
    s.uid_maps = um;
    s.nuid_maps = 1; /* no gid mapping, and an empty one */
    assert_int_equal(dp_bundle_config_json(&s, &text, &err), -1);
    s.nuid_maps = 0;
    s.netns_path = "dp-src";
    assert_int_equal(dp_bundle_config_json(&s, &text, &err), -1);
    assert_non_null(strstr(err.msg, "absolute"));
    s.netns_path = NULL;
    const char *bad_ann[] = {"=x", NULL};
    s.annotations = bad_ann;
    assert_int_equal(dp_bundle_config_json(&s, &text, &err), -1);
    s.annotations = NULL;
    s.rootfs = NULL;
    assert_int_equal(dp_bundle_config_json(&s, &text, &err), -1);
}

static void bundle_parse_rejects(void **state)
{
    (void)state;
    struct dp_bundle_info b;
    struct dp_err err = {{0}};
    const char *bad[] = {
        "not json", "{}", "{\"root\": {\"path\": \"\"}}",
        "{\"root\": {\"path\": \"r\"}, \"mounts\": [{\"destination\": \"rel\"}]}",
        "{\"root\": {\"path\": \"r\"}, \"mounts\": [{\"destination\": \"/x\", \"type\": \"bind\", \"source\": \"rel\"}]}",
        "{\"root\": {\"path\": \"r\"}, \"root\": {\"path\": \"s\"}}",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        assert_int_equal(dp_bundle_parse("/b", bad[i], strlen(bad[i]), &b, &err), -1);
        assert_null(b.mounts);
    }
    /* absolute root.path, rbind option, a bind onto "/" keeps the whole path */
    const char *ok = "{\"root\": {\"path\": \"/srv/root\"}, \"mounts\": [{\"destination\": \"/\", \"type\": \"none\", "
                     "\"source\": \"/other\", \"options\": [\"rbind\"]}]}";
    assert_int_equal(dp_bundle_parse("/b", ok, strlen(ok), &b, &err), 0);
    assert_string_equal(b.rootfs, "/srv/root");
    char host[4096];
    assert_int_equal(dp_bundle_resolve(&b, "/usr/bin/x", host, sizeof(host)), 0);
    assert_string_equal(host, "/other/usr/bin/x");
    assert_string_equal(b.netns_path, "");
    assert_string_equal(b.cgroups_path, ""); /* runc's default: /ID */
    dp_bundle_info_free(&b);
    const char *cg = "{\"root\": {\"path\": \"r\"}, \"linux\": {\"cgroupsPath\": \"/pods/web\"}}";
    assert_int_equal(dp_bundle_parse("/b", cg, strlen(cg), &b, &err), 0);
    assert_string_equal(b.cgroups_path, "/pods/web");
    dp_bundle_info_free(&b);
}

/* ---- rootfs manifest --------------------------------------------------------------- */

static void manifest_of(struct dp_rootfs_manifest *m, int variant)
{
    memset(m, 0, sizeof(*m));
    struct dp_rootfs_entry *e = dp_rootfs_add(m, "/usr/lib/libc.so.6", DP_ROOTFS_MAPPED);
    e->size = 1926232;
    e->mode = S_IFREG | 0755;
    memset(e->hash, 0xab, sizeof(e->hash));
    e = dp_rootfs_add(m, "/dp/memwalk", DP_ROOTFS_OPEN);
    e->size = 76000;
    e->mode = S_IFREG | 0755;
    assert_ptr_equal(dp_rootfs_add(m, "/dp/memwalk", DP_ROOTFS_MAPPED), e); /* mapped wins over open */
    memset(e->hash, variant == 1 ? 0x02 : 0x01, sizeof(e->hash));
    e = dp_rootfs_add(m, "/var/lib/db/file", DP_ROOTFS_OPEN);
    e->size = variant == 2 ? 8192 : 4096;
    e->mode = S_IFREG | 0600;
    dp_rootfs_finish(m);
}

static void manifest_digest_and_json(void **state)
{
    (void)state;
    struct dp_rootfs_manifest a, b, c, r;
    manifest_of(&a, 0);
    manifest_of(&b, 0);
    manifest_of(&c, 1);
    assert_int_equal(a.n, 3);
    assert_string_equal(a.e[0].path, "/dp/memwalk"); /* sorted */
    assert_memory_equal(a.digest, b.digest, DP_ROOTFS_HASH);
    assert_memory_not_equal(a.digest, c.digest, DP_ROOTFS_HASH);
    char *text = dp_rootfs_to_json(&a);
    assert_non_null(text);
    struct dp_err err = {{0}};
    assert_int_equal(dp_rootfs_from_json(text, strlen(text), &r, &err), 0);
    assert_int_equal(r.n, 3);
    assert_memory_equal(r.digest, a.digest, DP_ROOTFS_HASH);
    char report[512];
    assert_int_equal(dp_rootfs_compare(&a, &r, report, sizeof(report), 8), 0);
    dp_rootfs_free(&r);
    /* an altered entry no longer matches the stored digest */
    char *p = strstr(text, "4096");
    assert_non_null(p);
    p[0] = '5';
    assert_int_equal(dp_rootfs_from_json(text, strlen(text), &r, &err), -1);
    assert_non_null(strstr(err.msg, "digest does not match"));
    free(text);
    const char *bad[] = {"", "{}", "{\"version\": 2, \"digest\": \"00\", \"files\": []}",
                         "{\"version\": 1, \"digest\": \"zz\", \"files\": []}",
                         "{\"version\": 1, \"digest\": \"0000000000000000000000000000000000000000000000000000000000000000\", "
                         "\"files\": [{\"path\": \"rel\", \"kind\": \"open\", \"size\": 1, \"mode\": 1}]}"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(dp_rootfs_from_json(bad[i], strlen(bad[i]), &r, &err), -1);
    dp_rootfs_free(&a);
    dp_rootfs_free(&b);
    dp_rootfs_free(&c);
}

static void manifest_compare_reports(void **state)
{
    (void)state;
    struct dp_rootfs_manifest want, content, size;
    manifest_of(&want, 0);
    manifest_of(&content, 1);
    manifest_of(&size, 2);
    char report[512];
    assert_int_equal(dp_rootfs_compare(&want, &content, report, sizeof(report), 8), 1);
    assert_non_null(strstr(report, "/dp/memwalk: different content"));
    assert_int_equal(dp_rootfs_compare(&want, &size, report, sizeof(report), 8), 1);
    assert_non_null(strstr(report, "/var/lib/db/file: size 8192, the checkpoint's was 4096"));
    size.e[0].missing = 1; /* /dp/memwalk */
    assert_int_equal(dp_rootfs_compare(&want, &size, report, sizeof(report), 1), 2);
    assert_non_null(strstr(report, "/dp/memwalk: missing"));
    assert_null(strstr(report, "/var/lib")); /* only max lines listed, all counted */
    dp_rootfs_free(&want);
    dp_rootfs_free(&content);
    dp_rootfs_free(&size);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(runc_version_parsing),  cmocka_unit_test(runc_ids),
        cmocka_unit_test(runc_argv),             cmocka_unit_test(runc_state_parsing),
        cmocka_unit_test(bundle_config_roundtrip), cmocka_unit_test(bundle_spec_rejected),
        cmocka_unit_test(bundle_parse_rejects),  cmocka_unit_test(manifest_digest_and_json),
        cmocka_unit_test(manifest_compare_reports),
    };
    return cmocka_run_group_tests_name("runc", tests, NULL, NULL);
}
