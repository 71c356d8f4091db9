/* inject: a stop that meets another tracer (criu, which says "restore
 * finished" to the lazy-pages daemon before it detaches from the tree it
 * restored) lets go of what it seized and says "not yet", so eviction
 * waits instead of failing its stop (EPERM) and killing the process. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <dirent.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/wait.h>

#include "inject.h"
#include "util.h"

/* ---- parsing /proc/PID/status ---- */

static void status_tracer_parsed(void **s)
{
    (void)s;
    assert_int_equal(dp_status_tracer("Name:\tx\nState:\tS\nTracerPid:\t4242\nUid:\t0\n"), 4242);
    assert_int_equal(dp_status_tracer("Name:\tx\nTracerPid:\t0\nUid:\t0\n"), 0);
    assert_int_equal(dp_status_tracer("Name:\tx\nTracerPid:\t77"), 77);      /* cut after the number */
    assert_int_equal(dp_status_tracer("Name:\tx\nUid:\t0\n"), 0);             /* no such line */
    assert_int_equal(dp_status_tracer("Name:\tx\nTracerPid:\tx1\n"), 0);      /* not a number */
    assert_int_equal(dp_status_tracer("Name:\tx\nTracerPid:\t12ab\n"), 0);    /* trailing junk */
    assert_int_equal(dp_status_tracer("Name:\tx\nTracerPid:\t-5\n"), 0);
    assert_int_equal(dp_status_tracer("Name:\tx\nTracerPid:\t99999999999\n"), 0);
    assert_int_equal(dp_status_tracer("TracerPid:\t5\n"), 0);                 /* only as a line of its own */
}

/* ---- a real second tracer ---- */

static void *sleeper(void *arg)
{
    (void)arg;
    for (;;)
        pause();
    return NULL;
}

/* A process with two threads, parked; returns its pid, *tid the second
 * thread's. */
static pid_t start_target(pid_t *tid)
{
    int p[2];
    assert_int_equal(pipe(p), 0);
    pid_t target = fork();
    assert_true(target >= 0);
    if (target == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlives a failed test */
        pthread_t th;
        pthread_create(&th, NULL, sleeper, NULL);
        pid_t t = 0;
        while (!t) { /* the thread's tid, once it shows in /proc */
            DIR *d = opendir("/proc/self/task");
            struct dirent *e;
            while (d && (e = readdir(d)))
                if (atoi(e->d_name) > 0 && atoi(e->d_name) != getpid())
                    t = atoi(e->d_name);
            if (d)
                closedir(d);
        }
        if (write(p[1], &t, sizeof(t)) != (ssize_t)sizeof(t))
            _exit(1);
        sleeper(NULL);
    }
    assert_int_equal(read(p[0], tid, sizeof(*tid)), (ssize_t)sizeof(*tid));
    close(p[0]);
    close(p[1]);
    return target;
}

/* Another process seizes thread tid, says so on ready, and holds it until
 * a byte (or EOF) on release, then exits (the kernel detaches it). */
static pid_t start_tracer(pid_t tid, int ready, int release)
{
    pid_t p = fork();
    assert_true(p >= 0);
    if (p == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        char c = ptrace(PTRACE_SEIZE, tid, 0, 0) == 0 ? 'y' : 'n';
        if (write(ready, &c, 1) != 1)
            _exit(1);
        if (read(release, &c, 1) < 0)
            _exit(1);
        _exit(0);
    }
    return p;
}

static pid_t tracer_of(pid_t pid, pid_t tid)
{
    char path[64], buf[2048];
    snprintf(path, sizeof(path), "/proc/%d/task/%d/status", (int)pid, (int)tid);
    assert_true(dp_read_small(path, buf, sizeof(buf)) > 0);
    return dp_status_tracer(buf);
}

/* The second thread is traced by another process (criu detaching thread
 * by thread): the stop seizes the leader, meets EPERM on the second,
 * lets the leader go again and says "not yet" (it failed with -1 and the
 * daemon killed the process). Once the other tracer is gone it stops. */
static void stop_waits_for_another_tracer(void **s)
{
    (void)s;
    pid_t tid;
    pid_t target = start_target(&tid);
    int ready[2], release[2];
    assert_int_equal(pipe(ready), 0);
    assert_int_equal(pipe(release), 0);
    pid_t tracer = start_tracer(tid, ready[1], release[0]);
    char c = 0;
    assert_int_equal(read(ready[0], &c, 1), 1);
    assert_int_equal(c, 'y');

    struct dp_inject in;
    struct dp_err err = {{0}};
    char want[64];
    snprintf(want, sizeof(want), "traced by process %d", (int)tracer);
    assert_int_equal(dp_inject_open(&in, target, NULL, &err), 0);
    for (int i = 0; i < 2; i++) { /* and again: nothing was left behind */
        memset(&err, 0, sizeof(err));
        assert_int_equal(dp_inject_stop(&in, &err), DP_INJECT_TRACED);
        assert_non_null(strstr(err.msg, want));
        assert_int_equal(in.n, 0);
        assert_int_equal(tracer_of(target, target), 0); /* the leader was let go */
        assert_int_equal(tracer_of(target, tid), tracer);
    }

    assert_int_equal(write(release[1], "x", 1), 1);
    int st;
    assert_int_equal(waitpid(tracer, &st, 0), tracer);
    assert_int_equal(dp_inject_stop(&in, &err), 0);
    assert_int_equal(in.n, 2);
    assert_int_equal(tracer_of(target, tid), getpid());
    assert_int_equal(dp_inject_resume(&in, 1, &err), 0);
    dp_inject_close(&in);
    assert_int_equal(tracer_of(target, target), 0);
    kill(target, SIGKILL);
    assert_int_equal(waitpid(target, &st, 0), target);
    close(ready[0]);
    close(ready[1]);
    close(release[0]);
    close(release[1]);
}

int main(void)
{
    dp_log_set_level(DP_LOG_WARN);
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(status_tracer_parsed),
        cmocka_unit_test(stop_waits_for_another_tracer),
    };
    return cmocka_run_group_tests_name("inject", tests, NULL, NULL);
}
