/* wptrack: the written-page map (pure), and write-protect tracking against
 * a real userfaultfd in this process: pages installed with
 * UFFDIO_COPY_MODE_WP, a second thread writing some of them, the WP faults
 * resolved through dp_wp_resolve, and PAGEMAP_SCAN agreeing with the map. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/syscall.h>

#include "uffd.h"
#include "util.h"
#include "wptrack.h"

#define PG 4096UL

/* ---- the map ----------------------------------------------------------- */

static void map_set_clear_test(void **state)
{
    (void)state;
    struct dp_wpmap m;
    dp_wpmap_init(&m);
    assert_int_equal(dp_wpmap_add(&m, 0x100000, 200 * PG), 0);
    assert_int_equal(dp_wpmap_add(&m, 0x10000, 4 * PG), 0);       /* inserted before */
    assert_int_equal(dp_wpmap_add(&m, 0x100000 + 199 * PG, PG), -1); /* overlap */
    assert_int_equal(dp_wpmap_add(&m, 0x1001, PG), -1);              /* unaligned */
    assert_int_equal(dp_wpmap_add(&m, 0x200000, 0), -1);
    assert_int_equal(dp_wpmap_test(&m, 0x100000 + 5 * PG), 0);
    assert_int_equal(dp_wpmap_set(&m, 0x100000 + 5 * PG + 17), 0);  /* any address in the page */
    assert_int_equal(dp_wpmap_set(&m, 0x100000 + 5 * PG), 1);       /* already */
    assert_int_equal(dp_wpmap_test(&m, 0x100000 + 5 * PG), 1);
    assert_int_equal(dp_wpmap_test(&m, 0x100000 + 6 * PG), 0);
    assert_int_equal(dp_wpmap_set(&m, 0x10000 + 3 * PG), 0);
    assert_int_equal(m.written, 2);
    assert_int_equal(dp_wpmap_set(&m, 0x100000 + 200 * PG), -1);    /* just past the end */
    assert_int_equal(dp_wpmap_test(&m, 0xfffff), -1);
    assert_int_equal(dp_wpmap_tracked(&m, 0x10000), 1);
    assert_int_equal(dp_wpmap_tracked(&m, 0x14000), 0);
    assert_int_equal(dp_wpmap_clear(&m, 0x100000 + 5 * PG), 1);
    assert_int_equal(dp_wpmap_clear(&m, 0x100000 + 5 * PG), 0);
    assert_int_equal(m.written, 1);
    dp_wpmap_free(&m);
}

static void map_next_walks_in_order(void **state)
{
    (void)state;
    struct dp_wpmap m;
    dp_wpmap_init(&m);
    assert_int_equal(dp_wpmap_add(&m, 0x400000, 300 * PG), 0);
    assert_int_equal(dp_wpmap_add(&m, 0x800000, 10 * PG), 0);
    uint64_t pages[] = {0x400000, 0x400000 + 63 * PG, 0x400000 + 64 * PG, 0x400000 + 299 * PG, 0x800000 + 9 * PG};
    for (size_t i = 0; i < DP_ARRAY_LEN(pages); i++)
        assert_int_equal(dp_wpmap_set(&m, pages[i]), 0);
    uint64_t a = 0;
    for (size_t i = 0; i < DP_ARRAY_LEN(pages); i++) {
        a = dp_wpmap_next(&m, a);
        assert_int_equal(a, pages[i]);
        a += PG;
    }
    assert_int_equal(dp_wpmap_next(&m, a), 0);
    dp_wpmap_free(&m);
}

/* remove() splits a range and keeps the bits of what stays. */
static void map_remove_splits(void **state)
{
    (void)state;
    struct dp_wpmap m;
    dp_wpmap_init(&m);
    assert_int_equal(dp_wpmap_add(&m, 0x400000, 100 * PG), 0);
    for (uint64_t p = 0; p < 100; p += 3)
        dp_wpmap_set(&m, 0x400000 + p * PG);
    uint64_t before = m.written;
    dp_wpmap_remove(&m, 0x400000 + 10 * PG, 0x400000 + 20 * PG);   /* pages 10..19: 12, 15, 18 */
    assert_int_equal(m.n, 2);
    assert_int_equal(m.written, before - 3);
    for (uint64_t p = 0; p < 100; p++) {
        int want = (p >= 10 && p < 20) ? -1 : (p % 3 == 0);
        assert_int_equal(dp_wpmap_test(&m, 0x400000 + p * PG), want);
    }
    dp_wpmap_remove(&m, 0, ~0ULL);
    assert_int_equal(m.n, 0);
    assert_int_equal(m.written, 0);
    dp_wpmap_free(&m);
}

/* A random walk against a plain array. */
static void map_matches_model(void **state)
{
    (void)state;
    struct dp_wpmap m;
    dp_wpmap_init(&m);
    enum { N = 1000 };
    static signed char model[N];
    memset(model, -1, sizeof(model));
    uint64_t base = 0x7f0000000000ULL;
    for (int r = 0; r < 10; r++) {
        assert_int_equal(dp_wpmap_add(&m, base + (uint64_t)r * 100 * PG, 90 * PG), 0);
        for (int p = 0; p < 90; p++)
            model[r * 100 + p] = 0;
    }
    uint64_t x = 1;
    for (int i = 0; i < 20000; i++) {
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        int p = (int)((x >> 33) % N), op = (int)((x >> 20) % 3);
        uint64_t a = base + (uint64_t)p * PG;
        if (op == 0) {
            assert_int_equal(dp_wpmap_set(&m, a), model[p] < 0 ? -1 : model[p]);
            if (model[p] >= 0)
                model[p] = 1;
        } else if (op == 1) {
            assert_int_equal(dp_wpmap_clear(&m, a), model[p] < 0 ? -1 : model[p]);
            if (model[p] >= 0)
                model[p] = 0;
        } else {
            assert_int_equal(dp_wpmap_test(&m, a), model[p]);
        }
    }
    uint64_t n = 0;
    for (int p = 0; p < N; p++)
        n += model[p] == 1;
    assert_int_equal(m.written, n);
    dp_wpmap_free(&m);
}

/* ---- write-protect against a real userfaultfd ------------------------- */

struct wctx {
    uint8_t *base;
    const int *which;
    int n;
    atomic_int done;
};

static void *writer(void *arg)
{
    struct wctx *c = arg;
    for (int i = 0; i < c->n; i++)
        c->base[(size_t)c->which[i] * PG + 100] = (uint8_t)(0x50 + i);
    atomic_store(&c->done, 1);
    return NULL;
}

/* Pages installed write-protected; a thread writes 5 of 32: exactly those 5
 * raise WP faults, are marked, and PAGEMAP_SCAN reports exactly them. Then
 * dp_wp_clean_begin protects one again: a new write faults and marks it. */
static void wp_faults_mark_exactly_the_written_pages(void **state)
{
    (void)state;
    enum { NP = 32 };
    uint8_t *base = mmap(NULL, NP * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(base != MAP_FAILED);
    int uffd = dp_uffd_open_criu_like();
    if (uffd < 0) {
        skip();     /* no userfaultfd here (needs root or vm.unprivileged_userfaultfd) */
        return;
    }
    uint64_t b = (uint64_t)(uintptr_t)base;
    assert_int_equal(dp_uffd_register_missing(uffd, b, NP * PG), 0);   /* as CRIU leaves it */
    assert_int_equal(dp_wp_register(uffd, b, NP * PG), 0);             /* re-registered MISSING|WP */
    struct dp_wpmap m;
    dp_wpmap_init(&m);
    assert_int_equal(dp_wpmap_add(&m, b, NP * PG), 0);
    uint8_t pg[PG];
    for (int p = 0; p < NP; p++) {
        memset(pg, p, sizeof(pg));
        uint64_t done = 0;
        assert_int_equal(dp_wp_copy(uffd, b + (uint64_t)p * PG, pg, PG, &done), 0);
        assert_int_equal(done, PG);
    }
    int pm = open("/proc/self/pagemap", O_RDONLY);
    assert_true(pm >= 0);
    struct dp_page_region reg[64];
    assert_int_equal(dp_wp_scan_written(pm, b, b + NP * PG, reg, 64, NULL), 0);   /* all clean */

    static const int which[] = {3, 4, 17, 30, 31};
    struct wctx c = {.base = base, .which = which, .n = 5};
    pthread_t th;
    assert_int_equal(pthread_create(&th, NULL, writer, &c), 0);
    int faults = 0;
    while (!atomic_load(&c.done)) {
        struct pollfd p = {.fd = uffd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        struct uffd_msg msg;
        while (dp_uffd_read(uffd, &msg) == 0) {
            assert_int_equal(msg.event, UFFD_EVENT_PAGEFAULT);
            assert_true(msg.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP);
            assert_int_equal(dp_wp_resolve(&m, uffd, msg.arg.pagefault.address), 0);
            faults++;
        }
    }
    pthread_join(th, NULL);
    assert_int_equal(faults, 5);
    assert_int_equal(m.written, 5);
    for (int p = 0; p < NP; p++) {
        int w = p == 3 || p == 4 || p == 17 || p == 30 || p == 31;
        assert_int_equal(dp_wpmap_test(&m, b + (uint64_t)p * PG), w);
        assert_int_equal(base[(size_t)p * PG], p);          /* installed content */
    }
    int n = dp_wp_scan_written(pm, b, b + NP * PG, reg, 64, NULL);
    assert_int_equal(n, 3);                                  /* 3-4, 17, 30-31 */
    assert_int_equal(reg[0].start, b + 3 * PG);
    assert_int_equal(reg[0].end, b + 5 * PG);
    assert_int_equal(reg[1].start, b + 17 * PG);
    assert_int_equal(reg[2].start, b + 30 * PG);
    assert_int_equal(reg[2].end, b + 32 * PG);

    /* clean page 17 for a write-back that keeps it resident */
    assert_int_equal(dp_wp_clean_begin(&m, uffd, b + 17 * PG), 0);
    assert_int_equal(dp_wpmap_test(&m, b + 17 * PG), 0);
    assert_int_equal(dp_wp_scan_written(pm, b, b + NP * PG, reg, 64, NULL), 2);
    static const int again[] = {17};
    struct wctx c2 = {.base = base, .which = again, .n = 1};
    assert_int_equal(pthread_create(&th, NULL, writer, &c2), 0);
    faults = 0;
    while (!atomic_load(&c2.done)) {
        struct pollfd p = {.fd = uffd, .events = POLLIN};
        if (poll(&p, 1, 50) <= 0)
            continue;
        struct uffd_msg msg;
        while (dp_uffd_read(uffd, &msg) == 0) {
            assert_int_equal(dp_wp_resolve(&m, uffd, msg.arg.pagefault.address), 0);
            faults++;
        }
    }
    pthread_join(th, NULL);
    assert_int_equal(faults, 1);
    assert_int_equal(dp_wpmap_test(&m, b + 17 * PG), 1);
    assert_int_equal(base[17 * PG + 100], 0x50);

    close(pm);
    close(uffd);
    munmap(base, NP * PG);
    dp_wpmap_free(&m);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(map_set_clear_test),
        cmocka_unit_test(map_next_walks_in_order),
        cmocka_unit_test(map_remove_splits),
        cmocka_unit_test(map_matches_model),
        cmocka_unit_test(wp_faults_mark_exactly_the_written_pages),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
