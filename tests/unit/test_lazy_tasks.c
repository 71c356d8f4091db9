/* lazy_tasks: /proc readers on this process, and the probe that finds
 * which process owns a userfaultfd, against real children: each registers
 * pages of its own with a uffd (MISSING mode, EVENT_REMOVE, like CRIU's
 * restorer) and hands it over; the test is the daemon. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "lazy_tasks.h"
#include "uffd.h"

#define PG 4096ul
#define NPG 8

extern char **environ;

static void args_range_covers_argv_and_environ(void **state)
{
    (void)state;
    uint64_t lo, hi;
    assert_int_equal(dp_proc_args_range(getpid(), &lo, &hi), 0);
    assert_true(lo < hi && lo % PG == 0 && hi % PG == 0);
    assert_true((hi - lo) / PG <= DP_ARGS_MAX_PAGES);
    if (environ && environ[0]) {
        uint64_t e = (uint64_t)(uintptr_t)environ[0];
        assert_true(e >= lo && e < hi);
    }
    assert_true(dp_proc_start_time(getpid()) > 0);
    assert_int_equal(dp_proc_args_range(0x7ffffff0, &lo, &hi), -1); /* no such process */
    assert_int_equal(dp_proc_start_time(0x7ffffff0), 0);
}

static void pagemap_tells_present_from_absent(void **state)
{
    (void)state;
    uint8_t *m = mmap(NULL, 2 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(m != MAP_FAILED);
    m[0] = 1;
    assert_int_equal(dp_pagemap_present(getpid(), (uint64_t)(uintptr_t)m, PG), 1);
    assert_int_equal(dp_pagemap_present(getpid(), (uint64_t)(uintptr_t)m, 2 * PG), 0);
    assert_int_equal(dp_pagemap_absent(getpid(), (uint64_t)(uintptr_t)m), 0);
    assert_int_equal(dp_pagemap_absent(getpid(), (uint64_t)(uintptr_t)m + PG), 1);
    munmap(m, 2 * PG);
}

/* ---- the probe ---- */

struct kid {
    pid_t pid;
    int uffd;        /* -1: the child has no lazy memory */
    uint64_t area;
};

/* A child that registers NPG pages (page 0 touched first, so present) with
 * a uffd of its own, sends it, then idles. with_uffd 0: it only idles. */
static struct kid spawn(int with_uffd)
{
    int sv[2];
    assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, sv), 0);
    pid_t c = fork();
    assert_true(c >= 0);
    if (c == 0) {
        close(sv[0]);
        uint8_t *m = mmap(NULL, NPG * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        m[0] = 1;
        int u = -1;
        if (with_uffd) {
            u = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
            struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_EVENT_REMOVE};
            struct uffdio_register reg = {.range = {(uintptr_t)m, NPG * PG}, .mode = UFFDIO_REGISTER_MODE_MISSING};
            if (u < 0 || ioctl(u, UFFDIO_API, &api) < 0 || ioctl(u, UFFDIO_REGISTER, &reg) < 0)
                _exit(2);
        }
        uint64_t a = (uint64_t)(uintptr_t)m;
        if (dp_lazysock_send_task(sv[1], with_uffd ? 1 : -1, u) < 0 || write(sv[1], &a, sizeof(a)) != sizeof(a))
            _exit(3);
        for (;;)
            pause();
    }
    close(sv[1]);
    struct kid k = {.pid = c, .uffd = -1};
    int32_t pid;
    assert_int_equal(dp_lazysock_recv(sv[0], &pid, &k.uffd), 1);
    assert_int_equal(read(sv[0], &k.area, sizeof(k.area)), (ssize_t)sizeof(k.area));
    close(sv[0]);
    if (!with_uffd)
        k.uffd = -1;
    return k;
}

struct daemon {
    struct kid *kids;
    int n;
    int armed, hits, who, events;
    uint64_t addr;
};

/* Reads every uffd: a REMOVE of exactly the armed page is a hit. */
static int pump(void *arg)
{
    struct daemon *d = arg;
    for (int i = 0; i < d->n; i++) {
        struct uffd_msg m;
        while (d->kids[i].uffd >= 0 && read(d->kids[i].uffd, &m, sizeof(m)) == (ssize_t)sizeof(m)) {
            d->events++;
            if (m.event == UFFD_EVENT_REMOVE && d->armed && m.arg.remove.start == d->addr &&
                m.arg.remove.end == d->addr + PG) {
                d->hits++;
                d->who = i + 1;
            }
        }
    }
    return 0;
}

/* Page 0 is present in every child: the probe must skip it; page 3 is absent. */
static uint64_t addr(void *arg, int k)
{
    struct daemon *d = arg;
    return k < 2 ? d->kids[0].area + (k == 0 ? 0 : 3 * PG) : 0;
}

static void arm(void *arg, uint64_t a)
{
    struct daemon *d = arg;
    d->armed = 1;
    d->addr = a;
    d->hits = d->who = 0;
}

static int disarm(void *arg)
{
    struct daemon *d = arg;
    d->armed = 0;
    return d->hits == 1 ? d->who : d->hits ? -1 : 0;
}

static void probe_names_the_uffd_of_each_process(void **state)
{
    (void)state;
    struct kid kids[3] = {spawn(1), spawn(1), spawn(0)};
    struct daemon d = {.kids = kids, .n = 3};
    struct dp_probe_ops ops = {.pump = pump, .addr = addr, .arm = arm, .disarm = disarm, .arg = &d};
    struct dp_err err = {{0}};
    /* the children's areas are at the same address only by chance; the
     * probe page comes from kid 0's area and must be mapped in the others */
    if (kids[1].area != kids[0].area || kids[2].area != kids[0].area) {
        for (int i = 0; i < 3; i++)
            kill(kids[i].pid, SIGKILL);
        for (int i = 0; i < 3; i++)
            waitpid(kids[i].pid, NULL, 0);
        skip();
    }
    assert_int_equal(dp_probe_process(kids[1].pid, &ops, 4, &err), 2);
    assert_int_equal(dp_probe_process(kids[0].pid, &ops, 4, &err), 1);
    assert_int_equal(dp_probe_process(kids[2].pid, &ops, 4, &err), 0); /* no uffd: no event */
    assert_int_equal(d.events, 2);  /* only the probes' REMOVEs: present page 0 was never probed */
    /* the probes changed no memory: page 0 still present, page 3 absent, and
     * every child runs on (not left stopped or traced) */
    for (int i = 0; i < 3; i++) {
        assert_int_equal(dp_pagemap_present(kids[i].pid, kids[i].area, PG), 1);
        assert_int_equal(dp_pagemap_absent(kids[i].pid, kids[i].area + 3 * PG), 1);
        /* running or sleeping, whichever it is at this instant (a child
         * just resumed may still read R), never stopped or traced */
        char path[64], st[1024];
        snprintf(path, sizeof(path), "/proc/%d/stat", (int)kids[i].pid);
        int fd = open(path, O_RDONLY);
        ssize_t n = read(fd, st, sizeof(st) - 1);
        close(fd);
        assert_true(n > 0);
        st[n] = '\0';
        const char *state = strrchr(st, ')');
        assert_non_null(state);
        assert_true(state[1] == ' ' && (state[2] == 'S' || state[2] == 'R'));
        snprintf(path, sizeof(path), "/proc/%d/status", (int)kids[i].pid);
        fd = open(path, O_RDONLY);
        n = read(fd, st, sizeof(st) - 1);
        close(fd);
        assert_true(n > 0);
        st[n] = '\0';
        assert_non_null(strstr(st, "\nTracerPid:\t0\n"));
    }
    assert_int_equal(dp_probe_process(0x7ffffff0, &ops, 4, &err), -2); /* no such process */
    for (int i = 0; i < 3; i++) {
        kill(kids[i].pid, SIGKILL);
        waitpid(kids[i].pid, NULL, 0);
        if (kids[i].uffd >= 0)
            close(kids[i].uffd);
    }
}

/* ---- fork inheritance (pure) ---- */

static void fork_inherits_hashes_and_policy_records(void **state)
{
    (void)state;
    const uint64_t base = 0x100000, img = 0x700000;
    struct dp_lazymap map;
    dp_lazymap_init(&map);
    assert_int_equal(dp_lazymap_add(&map, base, base + 8 * PG, img, DP_PG_REMOTE), 0);
    for (int i = 0; i < 6; i++) /* pages 0-5 resident, 6-7 remote */
        dp_lazymap_set(&map, &map.r[0].pg[i], DP_PG_RESIDENT, 0);
    struct dp_pmap ph = {0}, ch = {0};
    bool created;
    for (int i = 0; i < 5; i++) { /* page 5: resident without a hash */
        struct dp_pmap_entry *e = dp_pmap_get(&ph, 0, img + (uint64_t)i * PG, &created);
        e->value = 100 + (uint64_t)i;
        e->value2 = 200 + (uint64_t)i;
        e->aux = i == 1 ? DP_HASH_PUT_INFLIGHT : i == 2 ? DP_HASH_ALWAYS_DIRTY : 0;
    }
    struct dp_evict pol;
    assert_int_equal(dp_evict_init(&pol, NULL), 0);
    /* page 4 is pinned (argv) */
    assert_int_equal(dp_fork_inherit(&map, &ph, &ch, &pol, 7, base + 4 * PG, base + 5 * PG, 1), 0);
    for (int i = 0; i < 5; i++) {
        struct dp_pmap_entry *e = dp_pmap_find(&ch, 0, img + (uint64_t)i * PG);
        assert_non_null(e);
        assert_int_equal(e->value, 100 + i);
        assert_int_equal(e->value2, 200 + i);
        /* an in-flight write-back makes the child's copy always dirty; the flag itself is the parent's */
        assert_int_equal(e->aux, i == 1 || i == 2 ? DP_HASH_ALWAYS_DIRTY : 0);
    }
    assert_null(dp_pmap_find(&ch, 0, img + 5 * PG));
    assert_null(dp_pmap_find(&ch, 0, img + 6 * PG));
    /* victims: the hashed, unpinned resident pages 0-3, all the child's */
    struct dp_evict_key k[16];
    size_t n = dp_evict_pick(&pol, k, 16);
    assert_int_equal(n, 4);
    for (size_t i = 0; i < n; i++) {
        assert_int_equal(k[i].owner, 7);
        assert_true(k[i].addr >= base && k[i].addr < base + 4 * PG);
    }
    assert_int_equal(dp_evict_check(&pol), 0);
    dp_evict_free(&pol);
    dp_pmap_free(&ph);
    dp_pmap_free(&ch);
    dp_lazymap_free(&map);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(fork_inherits_hashes_and_policy_records),
        cmocka_unit_test(args_range_covers_argv_and_environ),
        cmocka_unit_test(pagemap_tells_present_from_absent),
        cmocka_unit_test(probe_names_the_uffd_of_each_process),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
