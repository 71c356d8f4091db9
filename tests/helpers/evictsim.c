/* evictsim: the eviction protocol of docs/eviction.md run end to end against
 * tools/evicttest, with an in-memory "page server" instead of the network.
 *
 * It receives the target's userfaultfd (EVENT_REMOVE, like CRIU's) and acts
 * as the lazy-pages daemon for its lazy region: faults are served from the
 * store (or the victim buffer); every interval the resident lazy pages above
 * the budget are evicted: stop all threads (serving faults meanwhile), drain
 * events, read the victims, hash them, write the modified ones back into the
 * store, zap them with one injected process_madvise (reading our own REMOVE
 * events meanwhile), mark them remote, resume. The target's lazy writers
 * check that none of their writes is ever lost. Prints one JSON line of
 * counters, then one with a record per batch (batch_log).
 * --skip-writeback drops modified pages instead (a control: writes are lost
 * and the target must notice).
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>

#include "dirty.h"
#include "evict_policy.h"
#include "inject.h"
#include "util.h"

enum { REMOTE = 0, RESIDENT = 1, ZAPPING = 2 };
#define PG DP_PAGE_SIZE

struct sim {
    int uffd;
    uint64_t base;
    size_t pages;
    uint8_t *store;              /* the authoritative copy ("page server") */
    uint8_t *state;
    struct dp_page_hash *h;      /* hash of what was installed */
    uint64_t seed;
    struct dp_evict pol;
    struct dp_vbuf vb;
    uint64_t retry[1024];
    size_t nretry;
    uint64_t faults, installs, vb_hits, vb_mismatch, eexist, eagain;
    uint64_t removes_own, removes_other, missing_remove;
    uint64_t batches, evictions, writebacks, clean, cancels;
    size_t batch_res_before, batch_picked;   /* of the last batch (evict()) */
    int skip_writeback;          /* negative control: drop modified pages */
};

static uint8_t lazy_pattern(size_t page, size_t off)
{
    return (uint8_t)(0x40 + ((page * 13 + off) % 191));
}

/* 0 installed (or present), 1 retry later (EAGAIN), -1 error. */
static int install(struct sim *S, size_t p)
{
    uint8_t tmp[PG];
    const uint8_t *src = S->store + p * PG;
    if (dp_vbuf_get(&S->vb, 1, S->base + p * PG, tmp)) {
        S->vb_hits++;
        if (memcmp(tmp, src, PG))
            S->vb_mismatch++;   /* the buffer must equal the source */
        src = tmp;
    }
    struct uffdio_copy c = {.dst = S->base + p * PG, .src = (uint64_t)(uintptr_t)src, .len = PG};
    if (ioctl(S->uffd, UFFDIO_COPY, &c) < 0) {
        if (errno == EAGAIN)
            return 1;
        if (errno != EEXIST)
            return -1;
        S->eexist++;
    }
    S->state[p] = RESIDENT;
    S->h[p] = dp_page_hash(S->seed, src);
    dp_evict_record_install(&S->pol, 1, S->base + p * PG, dp_now_ns());
    S->installs++;
    return 0;
}

static int pump(void *arg)
{
    struct sim *S = arg;
    for (;;) {
        struct uffd_msg m;
        ssize_t r = read(S->uffd, &m, sizeof(m));
        if (r < 0) {
            if (errno != EAGAIN)
                return -1;
            break;
        }
        if (r != sizeof(m))
            return -1;
        if (m.event == UFFD_EVENT_PAGEFAULT) {
            uint64_t a = m.arg.pagefault.address & ~(PG - 1);
            if (a < S->base || a >= S->base + S->pages * PG)
                return -1;
            size_t p = (a - S->base) / PG;
            S->faults++;
            if (S->state[p] == RESIDENT) {   /* duplicate message */
                struct uffdio_range w = {a, PG};
                ioctl(S->uffd, UFFDIO_WAKE, &w);
                continue;
            }
            dp_evict_record_fault(&S->pol, 1, a, dp_now_ns());
            int rc = install(S, p);
            if (rc < 0)
                return -1;
            if (rc == 1 && S->nretry < DP_ARRAY_LEN(S->retry))
                S->retry[S->nretry++] = p;
        } else if (m.event == UFFD_EVENT_REMOVE) {
            for (uint64_t a = m.arg.remove.start; a < m.arg.remove.end; a += PG) {
                if (a < S->base || a >= S->base + S->pages * PG)
                    continue;
                size_t p = (a - S->base) / PG;
                if (S->state[p] == ZAPPING) {
                    S->state[p] = REMOTE;        /* ours: data is at the source */
                    S->removes_own++;
                } else {
                    S->removes_other++;          /* the application's: not expected here */
                }
            }
        }
    }
    size_t keep = 0;
    for (size_t i = 0; i < S->nretry; i++) {
        size_t p = S->retry[i];
        if (S->state[p] == RESIDENT)
            continue;
        int rc = install(S, p);
        if (rc < 0)
            return -1;
        if (rc == 1) {
            S->eagain++;
            S->retry[keep++] = p;
        }
    }
    S->nretry = keep;
    return 0;
}

/* *stop_ns: from the call to the last thread stopped; *held_ns: how long
 * the process stayed fully stopped (read, hash, write-back, zap). */
static int evict(struct sim *S, struct dp_inject *in, size_t budget, uint64_t *stop_ns, uint64_t *held_ns,
                 struct dp_err *err)
{
    size_t resident = 0;
    for (size_t p = 0; p < S->pages; p++)
        resident += S->state[p] == RESIDENT;
    if (resident <= budget)
        return 0;
    size_t n = resident - budget;
    if (n > 256)
        n = 256;
    struct dp_evict_key keys[256];
    n = dp_evict_pick(&S->pol, keys, n);
    S->batch_res_before = resident;
    S->batch_picked = n;
    uint64_t t0 = dp_now_ns();
    if (dp_inject_stop(in, err) < 0)
        return -1;
    uint64_t t1 = dp_now_ns();
    *stop_ns = t1 - t0;
    if (pump(S) < 0) {      /* drain: every event before the stop is applied */
        dp_err_set(err, "pump failed");
        return -1;
    }
    uint64_t addr[256];
    size_t idx[256], m = 0;
    for (size_t i = 0; i < n; i++) {
        size_t p = (keys[i].addr - S->base) / PG;
        if (S->state[p] != RESIDENT) {
            dp_evict_cancel(&S->pol, 1, keys[i].addr);
            S->cancels++;
            continue;
        }
        addr[m] = keys[i].addr;
        idx[m++] = p;
    }
    static uint8_t buf[256 * PG];
    uint8_t dirty[256];
    struct dp_page_hash hs[256];
    if (m && dp_inject_read_pages(in, addr, m, buf) < 0) {
        dp_err_set(err, "reading victims: %s", strerror(errno));
        return -1;
    }
    for (size_t i = 0; i < m; i++)
        hs[i] = S->h[idx[i]];
    dp_dirty_check(S->seed, buf, m, hs, dirty, NULL);
    for (size_t i = 0; i < m; i++) {
        if (dirty[i] && !S->skip_writeback) {
            memcpy(S->store + idx[i] * PG, buf + i * PG, PG);    /* durable write-back */
            S->writebacks++;
        } else {
            S->clean++;
        }
    }
    struct dp_zap_range r[256];
    for (size_t i = 0; i < m; i++) {
        S->state[idx[i]] = ZAPPING;
        r[i].start = addr[i];
        r[i].len = PG;
    }
    if (m && dp_inject_zap(in, r, m, err) < 0)
        return -1;
    for (size_t i = 0; i < m; i++) {
        size_t p = idx[i];
        if (r[i].done) {
            if (S->state[p] == ZAPPING) {       /* its REMOVE event not seen */
                S->missing_remove++;
                S->state[p] = REMOTE;
            }
            dp_evict_done(&S->pol, 1, addr[i], dp_now_ns());
            if (!dirty[i] || !S->skip_writeback)
                dp_vbuf_put(&S->vb, 1, addr[i], buf + i * PG);
            S->evictions++;
        } else {
            S->state[p] = RESIDENT;
            dp_evict_cancel(&S->pol, 1, addr[i]);
            S->cancels++;
        }
    }
    *held_ns = dp_now_ns() - t1;
    if (dp_inject_resume(in, 1, err) < 0)
        return -1;
    S->batches++;
    return 0;
}

static int recv_uffd(const char *path)
{
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", path);
    int s = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (s < 0 || connect(s, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        return -1;
    char byte;
    struct iovec iov = {&byte, 1};
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } u;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
    int fd = -1;
    if (recvmsg(s, &msg, 0) == 1) {
        struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
        if (cm && cm->cmsg_type == SCM_RIGHTS)
            memcpy(&fd, CMSG_DATA(cm), sizeof(int));
    }
    close(s);
    return fd;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

int main(int argc, char **argv)
{
    pid_t pid = 0;
    const char *sock = NULL;
    struct sim S;
    memset(&S, 0, sizeof(S));
    size_t budget = 8;
    int seconds = 5, interval_ms = 5;
    uint64_t vb_bytes = 16 * PG;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--pid") && i + 1 < argc)
            pid = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--uffd-sock") && i + 1 < argc)
            sock = argv[++i];
        else if (!strcmp(argv[i], "--lazy") && i + 1 < argc)
            S.base = strtoull(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "--lazy-pages") && i + 1 < argc)
            S.pages = strtoull(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "--budget") && i + 1 < argc)
            budget = strtoull(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "--seconds") && i + 1 < argc)
            seconds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--interval-ms") && i + 1 < argc)
            interval_ms = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--skip-writeback"))
            S.skip_writeback = 1;
        else if (!strcmp(argv[i], "--vbuf-pages") && i + 1 < argc)
            vb_bytes = strtoull(argv[++i], NULL, 0) * PG;
        else {
            fprintf(stderr, "usage: evictsim --pid PID --uffd-sock PATH --lazy ADDR --lazy-pages L\n"
                            "                [--budget PAGES] [--seconds S] [--interval-ms M] [--vbuf-pages N]\n"
                            "                [--skip-writeback]   (negative control: loses writes)\n");
            return 2;
        }
    }
    if (!pid || !sock || !S.base || !S.pages || S.pages > 4096 || seconds < 1 || seconds > 600 || interval_ms < 1) {
        fprintf(stderr, "evictsim: missing or bad arguments (--help)\n");
        return 2;
    }
    dp_log_set_tag("evictsim");
    S.store = malloc(S.pages * PG);
    S.state = calloc(S.pages, 1);
    S.h = calloc(S.pages, sizeof(*S.h));
    if (!S.store || !S.state || !S.h)
        return 1;
    for (size_t p = 0; p < S.pages; p++)
        for (size_t o = 0; o < PG; o++)
            S.store[p * PG + o] = lazy_pattern(p, o);
    S.seed = dp_now_ns() * 0x9E3779B97F4A7C15ULL;
    struct dp_evict_cfg cfg = {.protected_frac = 0.5, .ghost_max = S.pages, .hot_hint = 0};
    dp_evict_init(&S.pol, &cfg);
    dp_vbuf_init(&S.vb, vb_bytes);
    S.uffd = recv_uffd(sock);
    if (S.uffd < 0) {
        fprintf(stderr, "evictsim: no userfaultfd from %s: %s\n", sock, strerror(errno));
        return 1;
    }
    struct dp_inject in;
    struct dp_err err = {{0}};
    struct dp_inject_ops ops = {.pump = pump, .arg = &S};
    if (dp_inject_open(&in, pid, &ops, &err) < 0) {
        fprintf(stderr, "evictsim: %s\n", err.msg);
        return 1;
    }
    size_t cap = (size_t)seconds * 1000 / (size_t)interval_ms + 16, nst = 0;
    uint64_t *st = calloc(cap, sizeof(uint64_t)), *held = calloc(cap, sizeof(uint64_t));
    if (!st || !held)
        return 1;
    uint64_t end = dp_now_ns() + (uint64_t)seconds * 1000000000ULL, next = 0;
    size_t max_resident_after = 0;
    /* One record per batch: resident lazy pages when it counted them, victims
     * picked, evicted (zapped), faults served (pages installed) from that
     * count to the resume, resident pages after it. The test checks each
     * batch's arithmetic exactly instead of a slack on the maximum. */
    size_t (*blog)[5] = calloc(cap, sizeof(*blog)), nblog = 0;
    if (!blog)
        return 1;
    while (dp_now_ns() < end) {
        if (pump(&S) < 0) {
            fprintf(stderr, "evictsim: serving faults: %s\n", strerror(errno));
            return 1;
        }
        if (dp_now_ns() >= next) {
            uint64_t ns = 0, hns = 0;
            uint64_t batches0 = S.batches, installs0 = S.installs, evictions0 = S.evictions;
            if (evict(&S, &in, budget, &ns, &hns, &err) < 0) {
                fprintf(stderr, "evictsim: eviction: %s\n", err.msg);
                return 1;
            }
            if (ns && nst < cap) {
                st[nst] = ns;
                held[nst++] = hns;
            }
            size_t res = 0;
            for (size_t p = 0; p < S.pages; p++)
                res += S.state[p] == RESIDENT;
            if (res > max_resident_after)
                max_resident_after = res;
            if (S.batches != batches0 && nblog < cap) {
                blog[nblog][0] = S.batch_res_before;
                blog[nblog][1] = S.batch_picked;
                blog[nblog][2] = (size_t)(S.evictions - evictions0);
                blog[nblog][3] = (size_t)(S.installs - installs0);
                blog[nblog++][4] = res;
            }
            next = dp_now_ns() + (uint64_t)interval_ms * 1000000ULL;
        }
        struct pollfd pf = {S.uffd, POLLIN, 0};
        poll(&pf, 1, 1);
    }
    /* leave every page installed with the source's content: nobody serves
     * faults once we are gone */
    for (size_t p = 0; p < S.pages; p++)
        while (S.state[p] != RESIDENT) {
            int rc = install(&S, p);
            if (rc < 0) {
                fprintf(stderr, "evictsim: final install: %s\n", strerror(errno));
                return 1;
            }
            if (rc == 1)
                pump(&S);
        }
    pump(&S);
    qsort(st, nst, sizeof(*st), cmp_u64);
    qsort(held, nst, sizeof(*held), cmp_u64);
    printf("{\"seconds\":%d,\"budget\":%zu,\"pages\":%zu,\"batches\":%" PRIu64 ",\"evictions\":%" PRIu64 ","
           "\"writebacks\":%" PRIu64 ",\"clean\":%" PRIu64 ",\"cancels\":%" PRIu64 ",\"faults\":%" PRIu64 ","
           "\"installs\":%" PRIu64 ",\"refaults\":%" PRIu64 ",\"vb_hits\":%" PRIu64 ",\"vb_mismatch\":%" PRIu64 ","
           "\"removes_own\":%" PRIu64 ",\"removes_other\":%" PRIu64 ",\"missing_remove\":%" PRIu64 ","
           "\"eexist\":%" PRIu64 ",\"eagain\":%" PRIu64 ",\"max_resident_after_batch\":%zu,"
           "\"stop_us_p50\":%.1f,\"stop_us_p99\":%.1f,\"held_us_p50\":%.1f,\"held_us_p99\":%.1f}\n",
           seconds, budget, S.pages, S.batches, S.evictions, S.writebacks, S.clean, S.cancels, S.faults,
           S.installs, S.pol.st.refaults, S.vb_hits, S.vb_mismatch, S.removes_own, S.removes_other,
           S.missing_remove, S.eexist, S.eagain, max_resident_after,
           nst ? (double)st[nst / 2] / 1000.0 : 0.0, nst ? (double)st[(nst * 99) / 100] / 1000.0 : 0.0,
           nst ? (double)held[nst / 2] / 1000.0 : 0.0, nst ? (double)held[(nst * 99) / 100] / 1000.0 : 0.0);
    /* the batch records on a line of their own (the JSON line above stays
     * short enough to read in a failure message) */
    printf("{\"batch_log\":[");
    for (size_t i = 0; i < nblog; i++)
        printf("%s[%zu,%zu,%zu,%zu,%zu]", i ? "," : "", blog[i][0], blog[i][1], blog[i][2], blog[i][3],
               blog[i][4]);
    printf("],\"batch_log_dropped\":%" PRIu64 "}\n", S.batches - (uint64_t)nblog);
    free(blog);
    dp_inject_close(&in);
    dp_evict_free(&S.pol);
    dp_vbuf_free(&S.vb);
    free(st);
    free(held);
    free(S.store);
    free(S.state);
    free(S.h);
    close(S.uffd);
    return 0;
}
