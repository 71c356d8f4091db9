/* Unit tests for lib/cgpurge.c: the cgroup path runc's cgroupfs driver gives
 * a container (pure), which directories a purge may remove (only those that
 * did not exist before: a fake hierarchy tree), and, where this host lets
 * us make a v1 pids cgroup, a real purge of a cgroup holding a live task. */
#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <signal.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "cgpurge.h"

static void path_of_a_container(void **state)
{
    (void)state;
    char out[64];
    struct dp_err err;
    assert_int_equal(dp_cgpurge_path(NULL, "web", out, sizeof(out), &err), 0);
    assert_string_equal(out, "/web");
    assert_int_equal(dp_cgpurge_path("", "web", out, sizeof(out), &err), 0);
    assert_string_equal(out, "/web");
    assert_int_equal(dp_cgpurge_path("/pods//web/", "x", out, sizeof(out), &err), 0);
    assert_string_equal(out, "/pods/web");
    assert_int_equal(dp_cgpurge_path("pods/web", "x", out, sizeof(out), &err), 0);
    assert_string_equal(out, "/pods/web");
    assert_int_equal(dp_cgpurge_path("/a/..b", "x", out, sizeof(out), &err), 0); /* a name, not a climb */
    assert_string_equal(out, "/a/..b");
    const char *bad[] = {"system.slice:runc:web", "/a/../b", "/a/..", "/", "//", NULL};
    for (size_t i = 0; bad[i]; i++)
        assert_int_equal(dp_cgpurge_path(bad[i], "x", out, sizeof(out), &err), -1);
    assert_int_equal(dp_cgpurge_path("", "", out, sizeof(out), &err), -1);
    char longp[100];
    memset(longp, 'a', sizeof(longp) - 1);
    longp[sizeof(longp) - 1] = 0;
    assert_int_equal(dp_cgpurge_path(longp, "x", out, sizeof(out), &err), -1);
}

/* Makes PATH (a directory) and, when procs, PATH/cgroup.procs. */
static void mk(const char *path, int procs)
{
    assert_int_equal(mkdir(path, 0700), 0);
    if (procs) {
        char f[600];
        snprintf(f, sizeof(f), "%s/cgroup.procs", path);
        FILE *fp = fopen(f, "w");
        assert_non_null(fp);
        fclose(fp);
    }
}

static void prepare_records_only_new_directories(void **state)
{
    (void)state;
    char root[] = "/tmp/dp-cgpurge-XXXXXX", p[512];
    assert_non_null(mkdtemp(root));
    const char *hier[] = {"pids", "freezer", "memory"};
    for (size_t i = 0; i < 3; i++) {
        snprintf(p, sizeof(p), "%s/%s", root, hier[i]);
        mk(p, 1);
    }
    snprintf(p, sizeof(p), "%s/notacgroup", root); /* no cgroup.procs: not a hierarchy */
    mk(p, 0);
    snprintf(p, sizeof(p), "%s/memory/ct", root); /* there before the restore: never ours */
    mk(p, 1);
    struct dp_cgpurge pg;
    struct dp_err err;
    assert_int_equal(dp_cgpurge_prepare(&pg, root, "/ct", &err), 0);
    assert_int_equal(pg.n, 2);
    for (size_t i = 0; i < pg.n; i++) {
        assert_null(strstr(pg.dirs[i], "/memory/"));
        assert_null(strstr(pg.dirs[i], "notacgroup"));
        assert_non_null(strstr(pg.dirs[i], "/ct"));
    }
    /* a cgroup-v2-only root is the one hierarchy */
    char v2[] = "/tmp/dp-cgpurge-v2-XXXXXX";
    assert_non_null(mkdtemp(v2));
    snprintf(p, sizeof(p), "%s/cgroup.procs", v2);
    fclose(fopen(p, "w"));
    assert_int_equal(dp_cgpurge_prepare(&pg, v2, "/ct", &err), 0);
    assert_int_equal(pg.n, 1);
    snprintf(p, sizeof(p), "%s/ct", v2);
    assert_string_equal(pg.dirs[0], p);
    assert_int_equal(dp_cgpurge_prepare(&pg, "/nonexistent-dp-root", "/ct", &err), -1);
    char cmd[600];
    snprintf(cmd, sizeof(cmd), "rm -rf %s %s", root, v2);
    assert_int_equal(system(cmd), 0);
}

/* A real v1 pids cgroup made after prepare, holding a forked child: the
 * purge kills the child and removes the cgroup. Skipped where the host has
 * no writable v1 pids hierarchy (not root, cgroup v2 only). */
static void purge_kills_the_task_and_removes_the_cgroup(void **state)
{
    (void)state;
    const char *root = "/sys/fs/cgroup/pids";
    if (access("/sys/fs/cgroup/pids/cgroup.procs", W_OK) != 0)
        skip();
    char rel[64], dir[128], procs[160];
    snprintf(rel, sizeof(rel), "/dp-cgpurge-unit-%d", (int)getpid());
    snprintf(dir, sizeof(dir), "%s%s", root, rel);
    struct dp_cgpurge pg;
    struct dp_err err;
    assert_int_equal(dp_cgpurge_prepare(&pg, "/sys/fs/cgroup", rel, &err), 0);
    assert_true(pg.n >= 1);
    if (mkdir(dir, 0755) != 0)
        skip();
    pid_t child = fork();
    if (child == 0) {
        for (;;)
            pause();
    }
    assert_true(child > 0);
    snprintf(procs, sizeof(procs), "%s/cgroup.procs", dir);
    FILE *f = fopen(procs, "w");
    assert_non_null(f);
    fprintf(f, "%d\n", (int)child);
    assert_int_equal(fclose(f), 0);
    int killed = 0;
    /* the child is a zombie until reaped, which v1 does not count as inside */
    assert_int_equal(dp_cgpurge_run(&pg, 10, &killed, &err), 0);
    assert_int_equal(killed, 1);
    struct stat st;
    assert_int_equal(stat(dir, &st), -1);
    int ws;
    assert_int_equal(waitpid(child, &ws, 0), child);
    assert_true(WIFSIGNALED(ws) && WTERMSIG(ws) == SIGKILL);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(path_of_a_container),
        cmocka_unit_test(prepare_records_only_new_directories),
        cmocka_unit_test(purge_kills_the_task_and_removes_the_cgroup),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
