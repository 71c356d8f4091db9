/* injdrv: drives lib/inject against a running tools/evicttest target and
 * reports, as one JSON line, what it saw and what each step cost.
 *
 * Each round: stop all threads; save every thread's registers and the stack
 * bytes below its stack pointer; refill the even pages of the first 2*B
 * pages of the target's zap region with the target's pattern (through
 * /proc/PID/mem); zap those B pages with one batched injected call; check
 * they read back as zero, the odd pages kept their pattern, and every
 * thread's registers and stack bytes are unchanged; resume.
 *
 * With --uffd-sock the driver also plays the lazy-pages daemon: it receives
 * the target's userfaultfd, serves its faults (UFFDIO_COPY of the target's
 * lazy pattern) from the inject pump while threads stop and while injected
 * calls run, reads the REMOVE events each zap raises, and zaps every lazy
 * page each round. Before leaving it installs every lazy page again.
 */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/ptrace.h>
#include <sys/user.h>

#include "inject.h"
#include "util.h"

#define STACK_CHECK (DP_INJECT_MAX_IOV * 16 + DP_INJECT_REDZONE + 64)

static uint8_t pattern(size_t page, size_t off)
{
    return (uint8_t)(1 + ((page * 7 + off) % 251));
}

/* ---- a minimal lazy-pages server for --uffd-sock ---- */
struct lazysrv {
    int uffd;
    uint64_t base, pages;
    uint64_t faults, removes, eexist, ensure_calls, ensure_refused, eagain;
    uint64_t retry[4096];           /* faults whose UFFDIO_COPY got EAGAIN */
    size_t nretry;
};

static uint8_t lazy_pattern(size_t page, size_t off)
{
    return (uint8_t)(0x40 + ((page * 13 + off) % 191));
}

static int install(struct lazysrv *L, uint64_t addr)
{
    uint8_t pg[4096];
    size_t p = (size_t)((addr - L->base) / 4096);
    for (size_t o = 0; o < sizeof(pg); o++)
        pg[o] = lazy_pattern(p, o);
    struct uffdio_copy c = {.dst = addr & ~4095ULL, .src = (uint64_t)(uintptr_t)pg, .len = 4096};
    if (ioctl(L->uffd, UFFDIO_COPY, &c) < 0) {
        if (errno == EEXIST) {
            L->eexist++;
            return 0;
        }
        if (errno == EAGAIN)
            return 1;   /* retried on the next fault message */
        return -1;
    }
    return 0;
}

/* Reads every pending message, then retries copies that met EAGAIN (the
 * kernel refuses UFFDIO_COPY while a REMOVE event is unread). */
static int pump(void *arg)
{
    struct lazysrv *L = arg;
    for (;;) {
        struct uffd_msg m;
        ssize_t r = read(L->uffd, &m, sizeof(m));
        if (r < 0) {
            if (errno != EAGAIN)
                return -1;
            break;
        }
        if (r != sizeof(m))
            return -1;
        if (m.event == UFFD_EVENT_PAGEFAULT) {
            L->faults++;
            int rc = install(L, m.arg.pagefault.address);
            if (rc < 0)
                return -1;
            if (rc == 1 && L->nretry < DP_ARRAY_LEN(L->retry))
                L->retry[L->nretry++] = m.arg.pagefault.address;
        } else if (m.event == UFFD_EVENT_REMOVE) {
            L->removes++;
        }
    }
    size_t keep = 0;
    for (size_t i = 0; i < L->nretry; i++) {
        int rc = install(L, L->retry[i]);
        if (rc < 0)
            return -1;
        if (rc == 1) {
            L->eagain++;
            L->retry[keep++] = L->retry[i];
        }
    }
    L->nretry = keep;
    return 0;
}

/* --refuse-scratch: 1 refuses ranges on the preferred thread's stack (below
 * its sp), 2 refuses every iovec scratch area (>= 256 bytes; the rseq reads
 * are 8 and 32 bytes): inject must pick another thread, or fall back to one
 * injected madvise per range. */
static int refuse_mode;
static uint64_t refuse_sp;

static int ensure_cb(void *arg, uint64_t addr, uint64_t len)
{
    struct lazysrv *L = arg;
    L->ensure_calls++;
    if ((refuse_mode == 2 && len >= 256) ||
        (refuse_mode == 1 && addr < refuse_sp && refuse_sp - addr < (1u << 20))) {
        L->ensure_refused++;
        return -1;
    }
    if (!L->pages)
        return 0;
    if (addr < L->base + L->pages * 4096 && L->base < addr + len) {
        L->ensure_refused++;
        return -1;
    }
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

static double pct(uint64_t *v, int n, double p)
{
    if (n == 0)
        return 0;
    qsort(v, (size_t)n, sizeof(*v), cmp_u64);
    int i = (int)(p * (n - 1) + 0.5);
    return (double)v[i] / 1000.0;
}

struct snap {
    pid_t tid;
    struct user_regs_struct regs;
    uint8_t stack[STACK_CHECK];
    int have_stack;
};

int main(int argc, char **argv)
{
    pid_t pid = 0;
    uint64_t region = 0;
    int pages = 0, rounds = 10, batch = 256, keep = 0, interval_ms = 20;
    const char *uffd_sock = NULL;
    struct lazysrv L = {.uffd = -1};
    pid_t prefer = 0;
    uint64_t on_preferred = 0;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--pid") && i + 1 < argc)
            pid = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--region") && i + 1 < argc)
            region = strtoull(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "--pages") && i + 1 < argc)
            pages = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--rounds") && i + 1 < argc)
            rounds = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--batch") && i + 1 < argc)
            batch = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--interval-ms") && i + 1 < argc)
            interval_ms = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--keep-seized"))
            keep = 1;
        else if (!strcmp(argv[i], "--refuse-scratch") && i + 1 < argc)
            refuse_mode = !strcmp(argv[i + 1], "all") ? 2 : !strcmp(argv[i + 1], "preferred") ? 1 : -1, i++;
        else if (!strcmp(argv[i], "--prefer-tid") && i + 1 < argc)
            prefer = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--uffd-sock") && i + 1 < argc)
            uffd_sock = argv[++i];
        else if (!strcmp(argv[i], "--lazy") && i + 1 < argc)
            L.base = strtoull(argv[++i], NULL, 0);
        else if (!strcmp(argv[i], "--lazy-pages") && i + 1 < argc)
            L.pages = strtoull(argv[++i], NULL, 0);
        else {
            fprintf(stderr, "usage: injdrv --pid PID --region ADDR --pages N [--rounds R] [--batch B]\n"
                            "              [--interval-ms M] [--keep-seized]\n"
                            "              [--uffd-sock PATH --lazy ADDR --lazy-pages L] [--prefer-tid TID]\n"
                            "              [--refuse-scratch preferred|all]\n");
            return 2;
        }
    }
    if (!pid || !region || batch < 1 || 2 * batch > pages || rounds < 1 || rounds > 100000) {
        fprintf(stderr, "injdrv: need --pid, --region and --pages >= 2*batch\n");
        return 2;
    }
    dp_log_set_tag("injdrv");
    struct dp_inject in;
    struct dp_err err = {{0}};
    if (refuse_mode < 0) {
        fprintf(stderr, "injdrv: --refuse-scratch takes preferred or all\n");
        return 2;
    }
    struct dp_inject_ops ops = {.pump = uffd_sock ? pump : NULL, .ensure = ensure_cb, .arg = &L};
    if (uffd_sock) {
        if (!L.base || !L.pages || L.pages > 4096) {
            fprintf(stderr, "injdrv: --uffd-sock needs --lazy and --lazy-pages (1..4096)\n");
            return 2;
        }
        L.uffd = recv_uffd(uffd_sock);
        if (L.uffd < 0) {
            fprintf(stderr, "injdrv: no userfaultfd from %s: %s\n", uffd_sock, strerror(errno));
            return 1;
        }
    }
    if (dp_inject_open(&in, pid, &ops, &err) < 0) {
        fprintf(stderr, "injdrv: %s\n", err.msg);
        return 1;
    }
    in.prefer_tid = prefer;
    uint64_t *stop_ns = calloc((size_t)rounds, 8), *zap_ns = calloc((size_t)rounds, 8),
             *res_ns = calloc((size_t)rounds, 8);
    struct dp_zap_range *r = calloc((size_t)batch, sizeof(*r));
    uint8_t *page = malloc(DP_PAGE_SIZE), *want = malloc(DP_PAGE_SIZE);
    struct snap *snaps = NULL;
    if (!stop_ns || !zap_ns || !res_ns || !r || !page || !want)
        return 1;
    uint64_t lazy_remove_short = 0;
    uint64_t zero_fail = 0, intact_fail = 0, regs_bad = 0, stack_bad = 0, range_fail = 0, in_syscall = 0;
    size_t max_threads = 0;
    int injected_in_syscall = 0;
    for (int round = 0; round < rounds; round++) {
        uint64_t t0 = dp_now_ns();
        if (dp_inject_stop(&in, &err) < 0) {
            fprintf(stderr, "injdrv: round %d: %s\n", round, err.msg);
            return 1;
        }
        stop_ns[round] = dp_now_ns() - t0;
        if (in.n > max_threads)
            max_threads = in.n;
        snaps = realloc(snaps, in.n * sizeof(*snaps));
        if (!snaps)
            return 1;
        for (size_t i = 0; i < in.n; i++) {
            snaps[i].tid = in.t[i].tid;
            if (ptrace(PTRACE_GETREGS, in.t[i].tid, 0, &snaps[i].regs) < 0) {
                fprintf(stderr, "injdrv: GETREGS %d: %s\n", in.t[i].tid, strerror(errno));
                return 1;
            }
            if ((int64_t)snaps[i].regs.orig_rax >= 0)
                in_syscall++;
            if (snaps[i].tid == prefer)
                refuse_sp = snaps[i].regs.rsp;
            snaps[i].have_stack = dp_inject_read(&in, snaps[i].regs.rsp - STACK_CHECK,
                                                 snaps[i].stack, STACK_CHECK) == 0;
        }
        for (int k = 0; k < batch; k++) {
            size_t p = (size_t)2 * (size_t)k;
            for (size_t o = 0; o < DP_PAGE_SIZE; o++)
                page[o] = pattern(p, o);
            if (dp_inject_write(&in, region + p * DP_PAGE_SIZE, page, DP_PAGE_SIZE) < 0) {
                fprintf(stderr, "injdrv: refilling page %zu: %s\n", p, strerror(errno));
                return 1;
            }
            r[k].start = region + p * DP_PAGE_SIZE;
            r[k].len = DP_PAGE_SIZE;
        }
        t0 = dp_now_ns();
        if (dp_inject_zap(&in, r, (size_t)batch, &err) < 0) {
            fprintf(stderr, "injdrv: round %d: zap: %s\n", round, err.msg);
            return 1;
        }
        zap_ns[round] = dp_now_ns() - t0;
        if (uffd_sock) {
            /* drop every lazy page: each range raises a REMOVE event that
             * the pump must read while the injected call runs */
            struct dp_zap_range lz[4096];
            for (uint64_t k = 0; k < L.pages; k++) {
                lz[k].start = L.base + k * DP_PAGE_SIZE;
                lz[k].len = DP_PAGE_SIZE;
            }
            uint64_t before = L.removes;
            if (dp_inject_zap(&in, lz, L.pages, &err) < 0) {
                fprintf(stderr, "injdrv: round %d: lazy zap: %s\n", round, err.msg);
                return 1;
            }
            for (uint64_t k = 0; k < L.pages; k++)
                if (!lz[k].done)
                    range_fail++;
            if (L.removes - before < L.pages)
                lazy_remove_short++;
        }
        for (size_t i = 0; i < in.n; i++)
            if (snaps[i].tid == in.st.last_tid && (int64_t)snaps[i].regs.orig_rax >= 0)
                injected_in_syscall++;
        if (prefer && in.st.last_tid == prefer)
            on_preferred++;
        for (int k = 0; k < batch; k++) {
            if (!r[k].done) {
                range_fail++;
                if (range_fail < 4)
                    fprintf(stderr, "injdrv: range %d not zapped: %s\n", k, strerror(r[k].err));
            }
            size_t p = (size_t)2 * (size_t)k;
            if (dp_inject_read(&in, region + p * DP_PAGE_SIZE, page, DP_PAGE_SIZE) < 0)
                return 1;
            for (size_t o = 0; o < DP_PAGE_SIZE; o++)
                if (page[o]) {
                    zero_fail++;
                    break;
                }
            p++;
            if (dp_inject_read(&in, region + p * DP_PAGE_SIZE, page, DP_PAGE_SIZE) < 0)
                return 1;
            for (size_t o = 0; o < DP_PAGE_SIZE; o++)
                want[o] = pattern(p, o);
            if (memcmp(page, want, DP_PAGE_SIZE))
                intact_fail++;
        }
        for (size_t i = 0; i < in.n; i++) {
            struct user_regs_struct now;
            if (ptrace(PTRACE_GETREGS, snaps[i].tid, 0, &now) < 0 || memcmp(&now, &snaps[i].regs, sizeof(now)))
                regs_bad++;
            uint8_t st[STACK_CHECK];
            if (snaps[i].have_stack && (dp_inject_read(&in, snaps[i].regs.rsp - STACK_CHECK, st, STACK_CHECK) < 0 ||
                                        memcmp(st, snaps[i].stack, STACK_CHECK)))
                stack_bad++;
        }
        t0 = dp_now_ns();
        if (dp_inject_resume(&in, !keep, &err) < 0) {
            fprintf(stderr, "injdrv: resume: %s\n", err.msg);
            return 1;
        }
        res_ns[round] = dp_now_ns() - t0;
        uint64_t until = dp_now_ns() + (uint64_t)interval_ms * 1000000ULL;
        while (dp_now_ns() < until) {
            if (keep)
                dp_inject_service(&in);
            if (uffd_sock && pump(&L) < 0) {
                fprintf(stderr, "injdrv: serving faults: %s\n", strerror(errno));
                return 1;
            }
            struct timespec ts = {0, 200000};
            nanosleep(&ts, NULL);
        }
    }
    printf("{\"rounds\":%d,\"batch\":%d,\"threads\":%zu,\"keep_seized\":%d,"
           "\"stop_us_p50\":%.1f,\"stop_us_p99\":%.1f,\"stop_us_max\":%.1f,"
           "\"zap_us_p50\":%.1f,\"zap_us_p99\":%.1f,\"resume_us_p50\":%.1f,\"resume_us_p99\":%.1f,"
           "\"zero_fail\":%" PRIu64 ",\"intact_fail\":%" PRIu64 ",\"range_fail\":%" PRIu64 ","
           "\"regs_mismatch\":%" PRIu64 ",\"stack_mismatch\":%" PRIu64 ",\"threads_in_syscall\":%" PRIu64 ","
           "\"injected_in_syscall\":%d,\"pm_self\":%d,\"fallback_madvise\":%" PRIu64 ",\"syscalls\":%" PRIu64 ","
           "\"signals_forwarded\":%" PRIu64 ",\"lazy_faults\":%" PRIu64 ",\"lazy_removes\":%" PRIu64 ","
           "\"lazy_remove_short\":%" PRIu64 ",\"ensure_calls\":%" PRIu64 ",\"eexist\":%" PRIu64 ","
           "\"rseq_busy\":%" PRIu64 ",\"rseq_retries\":%" PRIu64 ",\"injected_on_preferred\":%" PRIu64 ","
           "\"ensure_refused\":%" PRIu64 "}\n",
           rounds, batch, max_threads, keep, pct(stop_ns, rounds, 0.5), pct(stop_ns, rounds, 0.99),
           pct(stop_ns, rounds, 1.0), pct(zap_ns, rounds, 0.5), pct(zap_ns, rounds, 0.99),
           pct(res_ns, rounds, 0.5), pct(res_ns, rounds, 0.99), zero_fail, intact_fail, range_fail,
           regs_bad, stack_bad, in_syscall, injected_in_syscall, in.pm_self, in.st.fallback_madvise,
           in.st.syscalls, in.st.signals_forwarded, L.faults, L.removes, lazy_remove_short, L.ensure_calls,
           L.eexist, in.st.rseq_busy, in.st.rseq_retries, on_preferred, L.ensure_refused);
    if (uffd_sock) {
        /* leave every lazy page installed: once our uffd closes, nobody
         * would serve a fault and the pattern would be lost */
        for (uint64_t k = 0; k < L.pages; k++)
            while (install(&L, L.base + k * DP_PAGE_SIZE) == 1)
                pump(&L);
        pump(&L);
    }
    dp_inject_close(&in);
    free(snaps);
    free(stop_ns);
    free(zap_ns);
    free(res_ns);
    free(r);
    free(page);
    free(want);
    if (L.uffd >= 0)
        close(L.uffd);
    return 0;
}
