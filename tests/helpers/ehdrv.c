/* ehdrv: plays a lazy-pages daemon with a memory budget against a forked
 * multi-threaded target, evicting either through the injected helper
 * (lib/ehelper: UFFDIO_MOVE inside the target, no thread stopped) or through
 * the ptrace path (lib/inject: stop all, read, madvise), with exact dirty
 * tracking (lib/wptrack: pages installed write-protected). Prints one JSON
 * line: what was evicted how, what was written back, and what the target's
 * threads saw (lost writes, wrong reads, per-iteration latency).
 *
 * The target: a region of --pages pages registered MISSING with a uffd
 * opened like CRIU's and handed to us (the lazy-pages socket protocol);
 * the first half is written by --threads writers (thread t owns the 8 bytes
 * at t*8 of every page and checks each value it reads back is the last one
 * it wrote: a lost write is a mismatch), the second half is only read and
 * checked against its pattern (never written: never written back).
 * --fork-shared: once every page was touched, the target forks a child that
 * sleeps, so resident pages are shared copy-on-write (MOVE gives EBUSY).
 * --seccomp: the target installs a seccomp filter (allow all) first.
 * --no-helper: never install the helper.
 *
 * --hot-threads writers (default 1) write the first --hot pages (default 16)
 * in turn, one write every 200 us; the daemon never evicts those pages, so
 * these threads never fault: how late each write lands after its due time
 * (hot_p99_us) is the stall eviction causes to a thread it does not concern
 * (plus waiting for a CPU), the number the issue's <= 1 ms target is about.
 *
 * Usage: ehdrv --mode helper|ptrace [--threads N] [--hot-threads N] [--hot PAGES]
 *              [--seconds S] [--pages P] [--budget B] [--batch K] [--fork-shared]
 *              [--seccomp] [--no-helper]
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <linux/userfaultfd.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "ehelper.h"
#include "inject.h"
#include "uffd.h"
#include "util.h"
#include "wptrack.h"

#define PG 4096UL
#define HIST_US 65536
#define MAX_BATCH 256
#define HOT_PERIOD_US 200
#define WP_RETRY (1ULL << 63)

/* ======================================================================
 * Options and the page patterns both sides agree on
 * ====================================================================== */

struct opts {
    int helper, threads, hot_threads, seconds, fork_shared, seccomp, no_helper, stop_check;
    uint64_t pages, budget, batch, hot;
};

/* Word w of read-only page p (second half of the region). */
static uint64_t ro_word(uint64_t p, uint64_t w)
{
    return (p + 1) * 0x9E3779B97F4A7C15ULL ^ (w * 0xC2B2AE3D27D4EB4FULL);
}

static void initial_page(const struct opts *o, uint64_t p, uint8_t *pg)
{
    memset(pg, 0, PG);
    if (p >= o->pages / 2)
        for (uint64_t w = 0; w < PG / 8; w++) {
            uint64_t v = ro_word(p, w);
            memcpy(pg + w * 8, &v, 8);
        }
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* ======================================================================
 * The target
 * ====================================================================== */

struct tgt {
    const struct opts *o;
    uint8_t *base;
    atomic_int stop;
};

struct wres {
    struct tgt *g;
    int t, hot;
    uint64_t writes, lost, ro_bad, iters;
    uint32_t *hist;                 /* iteration latency, 1 us buckets */
    uint64_t over, max_ns;
};

/* One writer: random cold pages (or, for a hot writer, the hot pages in
 * turn), check the last value, write the next; a cold writer also checks one
 * read-only word per iteration. Latency of each iteration: a hot writer
 * never faults (the daemon never evicts hot pages), so its latency shows
 * only what eviction does to threads it does not concern. */
static void *writer(void *arg)
{
    struct wres *w = arg;
    const struct opts *o = w->g->o;
    uint64_t half = o->pages / 2;
    uint64_t *mine = calloc(half, sizeof(uint64_t));
    uint64_t x = 0x12345 + (uint64_t)w->t * 7919, prev = now_ns(), due = prev;
    if (w->hot)
        prctl(PR_SET_TIMERSLACK, 1UL, 0, 0, 0);
    while (!atomic_load_explicit(&w->g->stop, memory_order_relaxed)) {
        if (w->hot) {
            /* wake every HOT_PERIOD_US; the lateness of the wake plus the
             * access is what the thread lost (stopped, or waiting for a CPU) */
            due += HOT_PERIOD_US * 1000ULL;
            struct timespec ts = {(time_t)(due / 1000000000ULL), (long)(due % 1000000000ULL)};
            clock_nanosleep(CLOCK_MONOTONIC, TIMER_ABSTIME, &ts, NULL);
            prev = due;
        }
        x = x * 6364136223846793005ULL + 1442695040888963407ULL;
        uint64_t p = w->hot ? w->iters % o->hot : o->hot + (x >> 33) % (half - o->hot);
        volatile uint64_t *slot = (volatile uint64_t *)(void *)(w->g->base + p * PG + (uint64_t)w->t * 8);
        if (*slot != mine[p])
            w->lost++;
        mine[p]++;
        *slot = mine[p];
        w->writes++;
        uint64_t rp = half + (x >> 17) % (o->pages - half), rw = (x >> 7) % (PG / 8);
        if (!w->hot && *(volatile uint64_t *)(void *)(w->g->base + rp * PG + rw * 8) != ro_word(rp, rw))
            w->ro_bad++;
        uint64_t t = now_ns(), d = t > prev ? t - prev : 0;
        prev = t;
        if (w->hot && t > due + HOT_PERIOD_US * 1000ULL)
            due = t;             /* overran a period: start again from now */
        w->iters++;
        if (d / 1000 < HIST_US)
            w->hist[d / 1000]++;
        else
            w->over++;
        if (d > w->max_ns)
            w->max_ns = d;
    }
    free(mine);
    return NULL;
}

/* The latency below which frac of all iterations fall, in us. */
static double pct(const uint32_t *h, uint64_t over, uint64_t total, double frac)
{
    uint64_t want = (uint64_t)((double)total * frac), acc = 0;
    for (int i = 0; i < HIST_US; i++) {
        acc += h[i];
        if (acc > want)
            return i + 1;
    }
    (void)over;
    return HIST_US;
}

/* Iterations that took >= from_us ("stalls"): how many, and the latency
 * below which frac of them fall (us). */
static double stall_pct(const uint32_t *h, uint64_t over, int from_us, double frac, uint64_t *count)
{
    uint64_t n = over;
    for (int i = from_us; i < HIST_US; i++)
        n += h[i];
    *count = n;
    uint64_t want = (uint64_t)((double)n * frac), acc = 0;
    for (int i = from_us; i < HIST_US; i++) {
        acc += h[i];
        if (acc > want)
            return i + 1;
    }
    return n ? HIST_US : 0;
}

static int target_main(const struct opts *o, int sk, int res_fd, int go_fd)
{
    uint8_t *base = mmap(NULL, o->pages * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (base == MAP_FAILED)
        return 2;
    madvise(base, o->pages * PG, MADV_NOHUGEPAGE);
    if (o->seccomp) {
        struct sock_filter f[] = {BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW)};
        struct sock_fprog prog = {.len = 1, .filter = f};
        if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) || prctl(PR_SET_SECCOMP, SECCOMP_MODE_FILTER, &prog))
            return 3;
    }
    int uffd = dp_uffd_open_criu_like();
    if (uffd < 0 || dp_uffd_register_missing(uffd, (uint64_t)(uintptr_t)base, o->pages * PG) < 0)
        return 4;
    uint64_t b = (uint64_t)(uintptr_t)base;
    if (dp_lazysock_send_task(sk, getpid(), uffd) < 0 || dp_write_full(sk, &b, 8) < 0)
        return 5;
    close(uffd);
    char c;
    if (dp_read_full(go_fd, &c, 1) < 0)
        return 6;
    struct tgt g = {.o = o, .base = base};
    int nt = o->threads + o->hot_threads;
    struct wres *w = calloc((size_t)nt, sizeof(*w));
    pthread_t *th = calloc((size_t)nt, sizeof(*th));
    for (int t = 0; t < nt; t++) {
        w[t] = (struct wres){.g = &g, .t = t, .hot = t >= o->threads, .hist = calloc(HIST_US, sizeof(uint32_t))};
        pthread_create(&th[t], NULL, writer, &w[t]);
    }
    pid_t kid = 0;
    if (o->fork_shared) {
        /* every page touched once, then share them copy-on-write */
        volatile uint64_t sink = 0;
        for (uint64_t p = 0; p < o->pages; p++)
            sink += *(volatile uint64_t *)(void *)(base + p * PG + 4088);
        (void)sink;
        kid = fork();
        if (kid == 0) {
            for (;;)
                pause();
        }
    }
    struct timespec ts = {o->seconds, 0};
    nanosleep(&ts, NULL);
    atomic_store(&g.stop, 1);
    uint64_t writes = 0, lost = 0, ro_bad = 0, iters = 0, over = 0, max_ns = 0;
    uint32_t *h = calloc(HIST_US, sizeof(uint32_t)), *hh = calloc(HIST_US, sizeof(uint32_t));
    uint64_t hwrites = 0, hover = 0, hmax = 0;
    for (int t = 0; t < nt; t++) {
        pthread_join(th[t], NULL);
        lost += w[t].lost;
        if (w[t].hot) {
            hwrites += w[t].writes;
            hover += w[t].over;
            if (w[t].max_ns > hmax)
                hmax = w[t].max_ns;
            for (int i = 0; i < HIST_US; i++)
                hh[i] += w[t].hist[i];
            continue;
        }
        writes += w[t].writes;
        ro_bad += w[t].ro_bad;
        iters += w[t].iters;
        over += w[t].over;
        if (w[t].max_ns > max_ns)
            max_ns = w[t].max_ns;
        for (int i = 0; i < HIST_US; i++)
            h[i] += w[t].hist[i];
    }
    if (kid > 0) {
        kill(kid, SIGKILL);
        waitpid(kid, NULL, 0);
    }
    uint64_t nst = 0;
    double st50 = stall_pct(hh, hover, 100, 0.5, &nst), st99 = stall_pct(hh, hover, 100, 0.99, &nst);
    char line[768];
    int n = snprintf(line, sizeof(line),
                     "\"writes\":%" PRIu64 ",\"lost_writes\":%" PRIu64 ",\"ro_bad\":%" PRIu64
                     ",\"writes_per_s\":%.0f,\"iter_p50_us\":%.0f,\"iter_p99_us\":%.0f,\"iter_p999_us\":%.0f,"
                     "\"iter_max_us\":%.0f,\"iters\":%" PRIu64 ",\"hot_writes_per_s\":%.0f,\"hot_p50_us\":%.0f,"
                     "\"hot_p99_us\":%.0f,\"hot_p999_us\":%.0f,\"hot_max_us\":%.0f,"
                     "\"hot_stalls_100us\":%" PRIu64 ",\"hot_stall_p50_us\":%.0f,\"hot_stall_p99_us\":%.0f",
                     writes, lost, ro_bad, (double)writes / o->seconds, pct(h, over, iters, 0.5),
                     pct(h, over, iters, 0.99), pct(h, over, iters, 0.999), max_ns / 1000.0, iters,
                     (double)hwrites / o->seconds, pct(hh, hover, hwrites, 0.5), pct(hh, hover, hwrites, 0.99),
                     pct(hh, hover, hwrites, 0.999), hmax / 1000.0, nst, st50, st99);
    dp_write_full(res_fd, line, (size_t)n);
    close(res_fd);
    dp_read_full(go_fd, &c, 1);     /* the daemon tears the helper down first */
    return 0;
}

/* ======================================================================
 * The daemon: state
 * ====================================================================== */

struct dmn {
    const struct opts *o;
    pid_t pid;
    int uffd, pagemap;
    uint64_t base;
    uint8_t *store;                 /* what the "page server" holds */
    uint8_t *resident, *inflight;
    uint64_t nres;
    uint64_t *fifo;                 /* install order (ring of page numbers) */
    uint64_t fhead, ftail;
    uint64_t defer[4096];
    size_t ndefer;
    int fork_ufd[16];
    int nfork;
    struct dp_wpmap wp;
    int have_helper;
    char helper_why[600];
    int check_while_stopped;        /* --stop-check: the first check's answer while SIGSTOPped */
    struct dp_ehelper h;
    struct dp_inject in;
    int in_open;
    /* counters */
    int other_err;                  /* last errno other than EBUSY from a move */
    uint64_t deferred, faults, wp_faults, installs, eexist, eagain, removes;
    uint64_t evicted, helper_pages, fallback_pages, ptrace_pages, busy_pages, writebacks, clean_drops;
    uint64_t ro_writebacks, batches_helper, batches_ptrace;
    uint64_t win_ns_max, helper_ns_max;
    uint64_t win_n;
    uint64_t win_hist[1000];        /* ptrace stop windows, 100 us buckets (last: >= 99.9 ms) */
};

static uint64_t pg_of(const struct dmn *d, uint64_t addr)
{
    return (addr - d->base) / PG;
}

/* ======================================================================
 * The daemon: faults
 * ====================================================================== */

/* Installs page p write-protected from the store. 1: EAGAIN, retry later. */
static int install(struct dmn *d, uint64_t p)
{
    uint64_t addr = d->base + p * PG, done = 0;
    int rc = dp_wp_copy(d->uffd, addr, d->store + p * PG, PG, &done);
    if (rc == -EEXIST) {
        d->eexist++;
        dp_uffd_wake(d->uffd, addr, PG);
        return 0;
    }
    if (rc == -EAGAIN) {
        d->eagain++;
        return 1;
    }
    if (rc < 0) {
        fprintf(stderr, "ehdrv: UFFDIO_COPY at %#" PRIx64 " failed: %s\n", addr, strerror(-rc));
        return -1;
    }
    d->installs++;
    dp_wpmap_clear(&d->wp, addr);
    if (!d->resident[p]) {
        d->resident[p] = 1;
        d->nres++;
        d->fifo[d->ftail++ % d->o->pages] = p;
    }
    return 0;
}

static void defer(struct dmn *d, uint64_t p)
{
    if (d->ndefer < DP_ARRAY_LEN(d->defer))
        d->defer[d->ndefer++] = p;
}

/* Reads every pending uffd message. */
static int serve(struct dmn *d)
{
    for (;;) {
        struct uffd_msg m;
        int rc = dp_uffd_read(d->uffd, &m);
        if (rc == -EAGAIN)
            break;
        if (rc < 0)
            return -1;
        if (m.event == UFFD_EVENT_PAGEFAULT) {
            uint64_t addr = m.arg.pagefault.address & ~(PG - 1);
            if (m.arg.pagefault.flags & UFFD_PAGEFAULT_FLAG_WP) {
                d->wp_faults++;
                int r = dp_wp_resolve(&d->wp, d->uffd, addr);
                if (r == -EAGAIN) {     /* the mm is changing (fork): again after the events */
                    defer(d, pg_of(d, addr) | WP_RETRY);
                    continue;
                }
                if (r < 0 && r != -ENOENT) {
                    fprintf(stderr, "ehdrv: un-protect failed: %s\n", strerror(-r));
                    return -1;
                }
                continue;
            }
            d->faults++;
            uint64_t p = pg_of(d, addr);
            if (d->inflight[p]) {
                d->deferred++;
                defer(d, p);        /* its latest content is on its way */
                continue;
            }
            int r = install(d, p);
            if (r < 0)
                return -1;
            if (r == 1)
                defer(d, p);
        } else if (m.event == UFFD_EVENT_REMOVE) {
            d->removes++;
        } else if (m.event == UFFD_EVENT_FORK) {
            if (d->nfork < (int)DP_ARRAY_LEN(d->fork_ufd))
                d->fork_ufd[d->nfork++] = (int)m.arg.fork.ufd;
            else
                close((int)m.arg.fork.ufd);
        }
    }
    /* retry deferred installs whose page is no longer in flight */
    size_t keep = 0, n = d->ndefer;
    uint64_t tmp[DP_ARRAY_LEN(d->defer)];
    memcpy(tmp, d->defer, n * sizeof(tmp[0]));
    d->ndefer = 0;
    for (size_t i = 0; i < n; i++) {
        if (tmp[i] & WP_RETRY) {
            int r = dp_wp_resolve(&d->wp, d->uffd, d->base + (tmp[i] & ~WP_RETRY) * PG);
            if (r == -EAGAIN)
                d->defer[d->ndefer++] = tmp[i];
            else if (r < 0 && r != -ENOENT)
                return -1;
            continue;
        }
        if (d->inflight[tmp[i]]) {
            d->defer[d->ndefer++] = tmp[i];
            continue;
        }
        int r = install(d, tmp[i]);
        if (r < 0)
            return -1;
        if (r == 1)
            d->defer[d->ndefer++] = tmp[i];
    }
    (void)keep;
    return 0;
}

/* Waits up to 100 us for a uffd message (or fd), then serves. */
static int pump_fd(void *arg, int fd)
{
    struct dmn *d = arg;
    struct pollfd p[2] = {{.fd = d->uffd, .events = POLLIN}, {.fd = fd, .events = POLLIN}};
    int n = fd >= 0 ? 2 : 1;
    struct timespec ts = {0, 100000};
    if (ppoll(p, (nfds_t)n, &ts, NULL) < 0 && errno != EINTR)
        return -1;
    return serve(d);
}

static int pump_inj(void *arg)
{
    return pump_fd(arg, -1);
}

/* inject may touch target memory outside the region only. */
static int ensure_cb(void *arg, uint64_t addr, uint64_t len)
{
    struct dmn *d = arg;
    return addr < d->base + d->o->pages * PG && d->base < addr + len ? -1 : 0;
}

/* ======================================================================
 * The daemon: eviction
 * ====================================================================== */

/* The page left the process with content buf (NULL: not read because it
 * was clean): write it back only if written. */
static void evicted(struct dmn *d, uint64_t p, const uint8_t *buf)
{
    uint64_t addr = d->base + p * PG;
    if (dp_wpmap_test(&d->wp, addr) == 1) {
        memcpy(d->store + p * PG, buf, PG);
        d->writebacks++;
        if (p >= d->o->pages / 2)
            d->ro_writebacks++;
        dp_wpmap_clear(&d->wp, addr);
    } else {
        d->clean_drops++;
    }
    d->resident[p] = 0;
    d->nres--;
    d->evicted++;
}

static int open_inject(struct dmn *d)
{
    if (d->in_open)
        return 0;
    struct dp_inject_ops ops = {.pump = pump_inj, .ensure = ensure_cb, .arg = d, .exitkill = 1};
    struct dp_err err = {{0}};
    if (dp_inject_open(&d->in, d->pid, &ops, &err) < 0) {
        fprintf(stderr, "ehdrv: %s\n", err.msg);
        return -1;
    }
    d->in_open = 1;
    return 0;
}

/* The ptrace path: stop every thread, read the written victims, drop all
 * victims with one injected madvise batch, resume. */
static int evict_ptrace(struct dmn *d, const uint64_t *pg, size_t n)
{
    struct dp_err err = {{0}};
    if (open_inject(d) < 0)
        return -1;
    uint64_t t0 = now_ns();
    if (dp_inject_stop(&d->in, &err) < 0) {
        fprintf(stderr, "ehdrv: stop: %s\n", err.msg);
        return -1;
    }
    static uint8_t buf[MAX_BATCH * PG];
    uint64_t va[MAX_BATCH];
    size_t nr = 0;
    for (size_t i = 0; i < n; i++)
        if (dp_wpmap_test(&d->wp, d->base + pg[i] * PG) == 1)
            va[nr++] = d->base + pg[i] * PG;
    if (nr && dp_inject_read_pages(&d->in, va, nr, buf) < 0) {
        fprintf(stderr, "ehdrv: reading stopped pages failed: %s\n", strerror(errno));
        return -1;
    }
    struct dp_zap_range zr[MAX_BATCH];
    for (size_t i = 0; i < n; i++)
        zr[i] = (struct dp_zap_range){.start = d->base + pg[i] * PG, .len = PG};
    if (dp_inject_zap(&d->in, zr, n, &err) < 0) {
        fprintf(stderr, "ehdrv: zap: %s\n", err.msg);
        return -1;
    }
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        const uint8_t *content = NULL;
        if (k < nr && va[k] == d->base + pg[i] * PG)
            content = buf + (k++) * PG;
        if (!zr[i].done) {
            fprintf(stderr, "ehdrv: zap of %#" PRIx64 " failed: %s\n", zr[i].start, strerror(zr[i].err));
            return -1;
        }
        evicted(d, pg[i], content);
    }
    if (dp_inject_resume(&d->in, 1, &err) < 0) {
        fprintf(stderr, "ehdrv: resume: %s\n", err.msg);
        return -1;
    }
    uint64_t dt = now_ns() - t0;
    d->win_n++;
    d->win_hist[dt / 100000 < 999 ? dt / 100000 : 999]++;
    if (dt > d->win_ns_max)
        d->win_ns_max = dt;
    d->batches_ptrace++;
    d->ptrace_pages += n;
    return 0;
}

/* The helper path: MOVE the victims into scratch (no thread stopped), read
 * the written ones from scratch, drop scratch. Pages MOVE refused go to
 * *fb for the ptrace path. */
static int evict_helper(struct dmn *d, const uint64_t *pg, size_t n, uint64_t *fb, size_t *nfb)
{
    struct dp_eh_run runs[MAX_BATCH];
    size_t nr = 0;
    for (size_t i = 0; i < n; i++) {
        d->inflight[pg[i]] = 1;
        if (nr && runs[nr - 1].src + runs[nr - 1].npages * PG == d->base + pg[i] * PG)
            runs[nr - 1].npages++;
        else
            runs[nr++] = (struct dp_eh_run){.src = d->base + pg[i] * PG, .npages = 1};
    }
    struct dp_err err = {{0}};
    uint64_t t0 = now_ns();
    if (dp_ehelper_move(&d->h, runs, nr, pump_fd, d, &err) < 0) {
        fprintf(stderr, "ehdrv: %s\n", err.msg);
        return -1;
    }
    uint64_t dt = now_ns() - t0;
    if (dt > d->helper_ns_max)
        d->helper_ns_max = dt;
    static uint8_t buf[MAX_BATCH * PG];
    for (size_t r = 0; r < nr; r++) {
        uint64_t p0 = pg_of(d, runs[r].src);
        for (uint32_t j = 0; j < runs[r].npages; j++) {
            uint64_t p = p0 + j;
            if (j >= runs[r].moved) {
                if (runs[r].err == EBUSY)
                    d->busy_pages++;
                else
                    d->other_err = runs[r].err;
                fb[(*nfb)++] = p;
                continue;
            }
            const uint8_t *content = NULL;
            if (dp_wpmap_test(&d->wp, d->base + p * PG) == 1) {
                struct iovec l = {buf, PG}, rm = {(void *)(uintptr_t)(runs[r].scratch + j * PG), PG};
                if (process_vm_readv(d->pid, &l, 1, &rm, 1, 0) != (ssize_t)PG) {
                    fprintf(stderr, "ehdrv: reading moved page failed: %s\n", strerror(errno));
                    return -1;
                }
                content = buf;
            }
            evicted(d, p, content);
            d->helper_pages++;
        }
    }
    for (size_t i = 0; i < n; i++)
        d->inflight[pg[i]] = 0;
    if (dp_ehelper_drop(&d->h, pump_fd, d, &err) < 0) {
        fprintf(stderr, "ehdrv: %s\n", err.msg);
        return -1;
    }
    d->batches_helper++;
    return serve(d);        /* deferred faults get the moved content now */
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

/* Evicts the oldest resident pages until the budget holds. */
static int evict(struct dmn *d)
{
    while (d->nres > d->o->budget) {
        uint64_t pg[MAX_BATCH];
        size_t n = 0;
        while (n < d->o->batch && d->fhead < d->ftail) {
            uint64_t p = d->fifo[d->fhead++ % d->o->pages];
            if (d->resident[p] && p >= d->o->hot)   /* hot pages stay (a policy's protected set) */
                pg[n++] = p;
        }
        if (!n)
            return 0;
        qsort(pg, n, sizeof(pg[0]), cmp_u64);
        uint64_t fb[MAX_BATCH];
        size_t nfb = 0;
        if (d->have_helper) {
            if (evict_helper(d, pg, n, fb, &nfb) < 0)
                return -1;
            d->fallback_pages += nfb;
        } else {
            memcpy(fb, pg, n * sizeof(pg[0]));
            nfb = n;
        }
        if (nfb && evict_ptrace(d, fb, nfb) < 0)
            return -1;
    }
    return 0;
}

/* ======================================================================
 * The daemon: setup, run, teardown
 * ====================================================================== */

static int setup_helper(struct dmn *d)
{
    struct dp_err err = {{0}};
    if (d->o->no_helper) {
        snprintf(d->helper_why, sizeof(d->helper_why), "--no-helper");
        return 0;
    }
    if (dp_ehelper_allowed(d->pid, &err) < 0) {
        snprintf(d->helper_why, sizeof(d->helper_why), "%s", err.msg);
        return 0;
    }
    if (open_inject(d) < 0 || dp_inject_stop(&d->in, &err) < 0)
        return -1;
    if (dp_ehelper_install(&d->h, &d->in, &err) < 0) {
        snprintf(d->helper_why, sizeof(d->helper_why), "%s", err.msg);
        fprintf(stderr, "ehdrv: helper not installed: %s\n", err.msg);
    } else {
        d->have_helper = 1;
    }
    if (dp_inject_resume(&d->in, 1, &err) < 0)
        return -1;
    if (d->o->stop_check && d->have_helper) {
        /* job control stops the task before its helper answered: the check
         * must say "later" (1) instead of holding the caller's loop, and the
         * one below must get the answer once the task runs again */
        kill(d->pid, SIGSTOP);
        for (int i = 0; i < 5000 && dp_ehelper_runnable(&d->h); i++)
            usleep(1000);
        d->check_while_stopped = dp_ehelper_check(&d->h, pump_fd, d, &err);
        kill(d->pid, SIGCONT);
    }
    /* the first answer, with the threads running again */
    if (d->have_helper && dp_ehelper_check(&d->h, pump_fd, d, &err) < 0) {
        snprintf(d->helper_why, sizeof(d->helper_why), "%s", err.msg);
        fprintf(stderr, "ehdrv: helper did not answer: %s\n", err.msg);
        dp_ehelper_teardown(&d->h, &d->in, &err);
        d->have_helper = 0;
    }
    return 0;
}

/* The helper thread's name as ps -L shows it. */
static void helper_comm(const struct dmn *d, char *out, size_t len)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task/%d/comm", (int)d->pid, (int)d->h.tid);
    out[0] = 0;
    if (dp_read_small(path, out, len) > 0)
        out[strcspn(out, "\n")] = 0;
}

/* 1 if /proc/PID/maps still lists a mapping starting at addr. */
static int mapped(pid_t pid, uint64_t addr)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/maps", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    int found = 0;
    while (fgets(line, sizeof(line), f))
        if (strtoull(line, NULL, 16) == addr)
            found = 1;
    fclose(f);
    return found;
}

static int usage(int rc)
{
    fprintf(rc ? stderr : stdout,
            "usage: ehdrv --mode helper|ptrace [--threads N] [--hot-threads N] [--hot PAGES] [--seconds S]\n"
            "             [--pages P] [--budget B] [--batch K] [--fork-shared] [--seccomp] [--no-helper]\n"
            "             [--stop-check]\n"
            "Runs a budgeted lazy-pages eviction loop against a forked writer process and prints one\n"
            "JSON line (lost_writes must be 0). See the comment at the top of tests/helpers/ehdrv.c.\n");
    return rc;
}

int main(int argc, char **argv)
{
    struct opts o = {.helper = 1, .threads = 2, .hot_threads = 1, .seconds = 2, .pages = 1024, .budget = 0,
                     .batch = 64, .hot = 16};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--help"))
            return usage(0);
        else if (!strcmp(a, "--mode") && v)
            o.helper = !strcmp(v, "helper"), i++;
        else if (!strcmp(a, "--threads") && v)
            o.threads = atoi(v), i++;
        else if (!strcmp(a, "--hot-threads") && v)
            o.hot_threads = atoi(v), i++;
        else if (!strcmp(a, "--hot") && v)
            o.hot = strtoull(v, NULL, 0), i++;
        else if (!strcmp(a, "--seconds") && v)
            o.seconds = atoi(v), i++;
        else if (!strcmp(a, "--pages") && v)
            o.pages = strtoull(v, NULL, 0), i++;
        else if (!strcmp(a, "--budget") && v)
            o.budget = strtoull(v, NULL, 0), i++;
        else if (!strcmp(a, "--batch") && v)
            o.batch = strtoull(v, NULL, 0), i++;
        else if (!strcmp(a, "--fork-shared"))
            o.fork_shared = 1;
        else if (!strcmp(a, "--seccomp"))
            o.seccomp = 1;
        else if (!strcmp(a, "--no-helper"))
            o.no_helper = 1;
        else if (!strcmp(a, "--stop-check"))
            o.stop_check = 1;
        else
            return usage(2);
    }
    if (!o.helper)
        o.no_helper = 1;
    if (!o.budget)
        o.budget = o.pages / 2;
    if (o.threads < 1 || o.hot_threads < 0 || o.threads + o.hot_threads > 256 || o.hot < 1 ||
        o.hot + 8 > o.pages / 2 || o.hot_threads + o.threads > (int)(PG / 8) || o.budget <= o.hot || o.seconds < 1 || o.seconds > 600 || o.pages < 16 ||
        o.pages > (1 << 20) || o.batch < 1 || o.batch > MAX_BATCH || o.budget >= o.pages)
        return usage(2);

    int sv[2], res[2], go[2];
    if (socketpair(AF_UNIX, SOCK_STREAM, 0, sv) || pipe(res) || pipe(go))
        return 1;
    pid_t pid = fork();
    if (pid == 0) {
        close(sv[0]);
        close(res[0]);
        close(go[1]);
        _exit(target_main(&o, sv[1], res[1], go[0]));
    }
    close(sv[1]);
    close(res[1]);
    close(go[0]);
    struct dmn *d = calloc(1, sizeof(*d));
    d->o = &o;
    d->pid = pid;
    int32_t rpid;
    if (dp_lazysock_recv(sv[0], &rpid, &d->uffd) != 1 || dp_read_full(sv[0], &d->base, 8) < 0) {
        fprintf(stderr, "ehdrv: the target did not hand over its uffd\n");
        return 1;
    }
    dp_set_nonblock(d->uffd);
    d->store = malloc(o.pages * PG);
    d->resident = calloc(o.pages, 1);
    d->inflight = calloc(o.pages, 1);
    d->fifo = calloc(o.pages, sizeof(uint64_t));
    for (uint64_t p = 0; p < o.pages; p++)
        initial_page(&o, p, d->store + p * PG);
    dp_wpmap_init(&d->wp);
    int rc = dp_wp_register(d->uffd, d->base, o.pages * PG);
    if (rc < 0 || dp_wpmap_add(&d->wp, d->base, o.pages * PG) < 0) {
        fprintf(stderr, "ehdrv: re-registering MISSING|WP failed: %s\n", strerror(-rc));
        return 1;
    }
    char pm[64];
    snprintf(pm, sizeof(pm), "/proc/%d/pagemap", (int)pid);
    d->pagemap = open(pm, O_RDONLY | O_CLOEXEC);
    if (setup_helper(d) < 0)
        return 1;
    char comm[32] = "";
    if (d->have_helper)
        helper_comm(d, comm, sizeof(comm));
    if (write(go[1], "g", 1) != 1)
        return 1;

    /* Serve and evict until the target reports. */
    char line[1024];
    size_t ll = 0;
    int done = 0;
    uint64_t scan_mismatch = 0, scans = 0;
    while (!done) {
        if (pump_fd(d, res[0]) < 0 || evict(d) < 0) {
            kill(pid, SIGKILL);
            return 1;
        }
        struct pollfd p = {.fd = res[0], .events = POLLIN};
        if (poll(&p, 1, 0) > 0) {
            ssize_t r = read(res[0], line + ll, sizeof(line) - 1 - ll);
            if (r <= 0)
                done = 1;
            else
                ll += (size_t)r;
        }
        /* Cross-check the map with the kernel now and then: a page the
         * kernel sees written (present, uffd-wp clear) must be marked. */
        if (d->pagemap >= 0 && (d->installs & 1023) == 0 && scans < d->installs / 1024) {
            scans++;
            struct dp_page_region reg[512];
            uint64_t we = 0;
            int k = dp_wp_scan_written(d->pagemap, d->base, d->base + o.pages * PG, reg, 512, &we);
            for (int i = 0; i < k; i++)
                for (uint64_t a = reg[i].start; a < reg[i].end; a += PG)
                    if (dp_wpmap_test(&d->wp, a) != 1)
                        scan_mismatch++;
        }
    }
    line[ll] = 0;
    int teardown_ok = -1, helper_gone = -1;
    pid_t htid = d->h.tid;
    uint64_t hscratch = d->h.scratch;
    if (d->have_helper) {
        struct dp_err err = {{0}};
        teardown_ok = dp_ehelper_teardown(&d->h, &d->in, &err) == 0;
        if (!teardown_ok)
            fprintf(stderr, "ehdrv: teardown: %s\n", err.msg);
        helper_gone = dp_inject_thread_exiting(pid, htid) && !mapped(pid, hscratch);
    }
    if (d->in_open)
        dp_inject_close(&d->in);
    if (write(go[1], "x", 1) != 1) {
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR) {
    }
    uint64_t wq[5] = {0};
    {
        uint64_t acc = 0, want[3] = {d->win_n / 2, d->win_n * 99 / 100, d->win_n};
        int wi = 0;
        for (int i = 0; i < 1000 && wi < 3; i++) {
            acc += d->win_hist[i];
            while (wi < 3 && acc > want[wi] - (wi == 2 ? 1 : 0) && acc)
                wq[wi++] = (uint64_t)(i + 1) * 100;
        }
    }
    printf("{\"mode\":\"%s\",\"threads\":%d,\"seconds\":%d,\"pages\":%" PRIu64 ",\"budget\":%" PRIu64
           ",\"batch\":%" PRIu64 ",\"fork_shared\":%d,\"seccomp\":%d,"
           "\"helper\":%s,\"helper_why\":\"%s\",\"helper_comm\":\"%s\",\"teardown_ok\":%d,\"helper_gone\":%d,"
           "\"faults\":%" PRIu64 ",\"wp_faults\":%" PRIu64 ",\"installs\":%" PRIu64 ",\"evicted\":%" PRIu64
           ",\"helper_pages\":%" PRIu64 ",\"ptrace_pages\":%" PRIu64 ",\"fallback_pages\":%" PRIu64
           ",\"busy_pages\":%" PRIu64 ",\"writebacks\":%" PRIu64 ",\"clean_drops\":%" PRIu64
           ",\"ro_writebacks\":%" PRIu64 ",\"batches_helper\":%" PRIu64 ",\"batches_ptrace\":%" PRIu64
           ",\"ptrace_window_p50_us\":%" PRIu64 ",\"ptrace_window_p99_us\":%" PRIu64
           ",\"ptrace_window_max_us\":%.0f,\"helper_call_max_us\":%.0f,\"scan_checks\":%" PRIu64
           ",\"scan_mismatch\":%" PRIu64 ",\"deferred_inflight\":%" PRIu64 ",\"move_other_errno\":%d,"
           "\"check_while_stopped\":%d,\"exit\":%d,%s}\n",
           o.helper ? "helper" : "ptrace", o.threads, o.seconds, o.pages, o.budget, o.batch, o.fork_shared,
           o.seccomp, d->have_helper ? "true" : "false", d->helper_why, comm, teardown_ok, helper_gone,
           d->faults, d->wp_faults, d->installs, d->evicted, d->helper_pages, d->ptrace_pages, d->fallback_pages,
           d->busy_pages, d->writebacks, d->clean_drops, d->ro_writebacks, d->batches_helper, d->batches_ptrace,
           wq[0], wq[1], d->win_ns_max / 1000.0, d->helper_ns_max / 1000.0, scans, scan_mismatch, d->deferred, d->other_err,
           d->check_while_stopped, WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), ll ? line : "\"target\":\"no report\"");
    for (int i = 0; i < d->nfork; i++)
        close(d->fork_ufd[i]);
    if (d->pagemap >= 0)
        close(d->pagemap);
    close(d->uffd);
    dp_wpmap_free(&d->wp);
    free(d->store);
    free(d->resident);
    free(d->inflight);
    free(d->fifo);
    free(d);
    return 0;
}
