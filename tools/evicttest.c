/* evicttest: a target process for the eviction/injection tests.
 *
 * It runs T writer threads that write continuously into their own buffers
 * and verify every word they read back against a generation table kept on
 * their stack, plus a thread blocked in read() on a pipe (fed by the main
 * thread, sequence numbers checked) and a thread in nanosleep() (slept time
 * checked), so that a tracer which stops, injects and resumes can be caught
 * corrupting memory, registers, the stack or restartable system calls.
 * A "zap region" of 2*N pages is filled with a pattern for the tracer to drop.
 *
 * The main thread reads commands on stdin: "status" prints a JSON line,
 * "quit" prints it and exits (status 1 if any error was seen).
 * With --seccomp a filter makes madvise and process_madvise fail with EPERM.
 * SIGRTMIN is counted (queued signals: none may be lost by a tracer).
 */
#include <errno.h>
#include <inttypes.h>
#include <linux/filter.h>
#include <linux/seccomp.h>
#include <linux/audit.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define PAGE 4096
#define WORDS_PER_THREAD 4096    /* 8 pages of uint64 per writer */

static atomic_ulong errors;
static atomic_ulong pipe_msgs, sleeps, rtsigs;
static atomic_ulong *iters;
static int pipefd[2];
static uint8_t *region;
static size_t region_pages;

static uint64_t mix(uint64_t x)
{
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    return x;
}

static void fail(const char *what, uint64_t a, uint64_t b)
{
    atomic_fetch_add(&errors, 1);
    fprintf(stderr, "evicttest: %s (%#" PRIx64 " vs %#" PRIx64 ")\n", what, a, b);
}

/* Each word holds mix(thread, index, generation); the generations live on
 * this thread's stack, so a clobbered stack or register shows up as a
 * mismatch. */
static void *writer(void *arg)
{
    uint64_t id = (uint64_t)(uintptr_t)arg;
    uint64_t *buf = malloc(WORDS_PER_THREAD * sizeof(uint64_t));
    uint32_t gen[WORDS_PER_THREAD];
    if (!buf)
        abort();
    for (size_t i = 0; i < WORDS_PER_THREAD; i++) {
        gen[i] = 0;
        buf[i] = mix((id << 48) ^ ((uint64_t)i << 24));
    }
    uint64_t n = 0, check = 0;
    for (;;) {
        size_t i = (size_t)(mix(n + id) % WORDS_PER_THREAD);
        uint64_t want = mix((id << 48) ^ ((uint64_t)i << 24) ^ gen[i]);
        if (buf[i] != want)
            fail("writer word mismatch", buf[i], want);
        gen[i]++;
        buf[i] = mix((id << 48) ^ ((uint64_t)i << 24) ^ gen[i]);
        /* a value carried in registers across iterations */
        check = check * 31 + i;
        n++;
        if ((n & 0xffff) == 0) {
            uint64_t again = 0;
            for (uint64_t k = n - 0x10000; k < n; k++)
                again = again * 31 + (size_t)(mix(k + id) % WORDS_PER_THREAD);
            if (again != check)
                fail("writer register state mismatch", again, check);
            check = 0;
            atomic_fetch_add(&iters[id], 0x10000);
        }
    }
    return NULL;
}

/* SIGRTMIN is queued, not merged: every one sent must be counted once. */
static void on_rt(int sig)
{
    (void)sig;
    atomic_fetch_add(&rtsigs, 1);
}

/* Threads whose calls a signal handler would interrupt (nanosleep returns
 * EINTR even with SA_RESTART) keep SIGRTMIN blocked. */
static void block_rt(void)
{
    sigset_t set;
    sigemptyset(&set);
    sigaddset(&set, SIGRTMIN);
    pthread_sigmask(SIG_BLOCK, &set, NULL);
}

static void *piper(void *arg)
{
    (void)arg;
    block_rt();
    uint64_t expect = 0;
    for (;;) {
        uint64_t v;
        ssize_t r = read(pipefd[0], &v, sizeof(v));
        if (r != sizeof(v)) {
            fail("pipe read", (uint64_t)r, (uint64_t)errno);
            continue;
        }
        if (v != expect)
            fail("pipe sequence", v, expect);
        expect = v + 1;
        atomic_fetch_add(&pipe_msgs, 1);
    }
    return NULL;
}

static uint64_t now_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

static void *sleeper(void *arg)
{
    (void)arg;
    block_rt();
    for (;;) {
        uint64_t t0 = now_ns();
        struct timespec ts = {0, 20 * 1000 * 1000};
        if (nanosleep(&ts, NULL) != 0)
            fail("nanosleep interrupted", (uint64_t)errno, 0);
        uint64_t dt = now_ns() - t0;
        if (dt < 20 * 1000 * 1000)
            fail("nanosleep returned early", dt, 20 * 1000 * 1000);
        atomic_fetch_add(&sleeps, 1);
    }
    return NULL;
}

static void *feeder(void *arg)
{
    (void)arg;
    block_rt();
    for (uint64_t seq = 0;; seq++) {
        if (write(pipefd[1], &seq, sizeof(seq)) != sizeof(seq))
            fail("pipe write", seq, (uint64_t)errno);
        usleep(2000);
    }
    return NULL;
}

static int install_seccomp(void)
{
    struct sock_filter f[] = {
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, arch)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, AUDIT_ARCH_X86_64, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_LD | BPF_W | BPF_ABS, offsetof(struct seccomp_data, nr)),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, __NR_madvise, 2, 0),
        BPF_JUMP(BPF_JMP | BPF_JEQ | BPF_K, 440 /* process_madvise */, 1, 0),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ALLOW),
        BPF_STMT(BPF_RET | BPF_K, SECCOMP_RET_ERRNO | EPERM),
    };
    struct sock_fprog prog = {.len = sizeof(f) / sizeof(f[0]), .filter = f};
    if (prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) < 0)
        return -1;
    return (int)syscall(SYS_seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC, &prog);
}

static uint8_t pattern(size_t page, size_t off)
{
    return (uint8_t)(1 + ((page * 7 + off) % 251));
}

/* Zero pages (dropped) and pages still holding their pattern. */
static void region_scan(size_t *zero, size_t *intact, size_t *other)
{
    *zero = *intact = *other = 0;
    for (size_t p = 0; p < region_pages; p++) {
        const uint8_t *pg = region + p * PAGE;
        int z = 1, ok = 1;
        for (size_t o = 0; o < PAGE; o++) {
            if (pg[o])
                z = 0;
            if (pg[o] != pattern(p, o))
                ok = 0;
        }
        if (z)
            (*zero)++;
        else if (ok)
            (*intact)++;
        else
            (*other)++;
    }
}

static void status(int threads, int seccomp_on)
{
    size_t zero, intact, other;
    region_scan(&zero, &intact, &other);
    printf("{\"pid\":%d,\"errors\":%lu,\"pipe_msgs\":%lu,\"sleeps\":%lu,\"rtsigs\":%lu,\"seccomp\":%d,"
           "\"region\":%" PRIu64 ",\"region_pages\":%zu,\"zero\":%zu,\"intact\":%zu,\"other\":%zu,\"iters\":[",
           (int)getpid(), atomic_load(&errors), atomic_load(&pipe_msgs), atomic_load(&sleeps),
           atomic_load(&rtsigs), seccomp_on,
           (uint64_t)(uintptr_t)region, region_pages, zero, intact, other);
    for (int i = 0; i < threads; i++)
        printf("%s%lu", i ? "," : "", atomic_load(&iters[i]));
    printf("]}\n");
    fflush(stdout);
}

int main(int argc, char **argv)
{
    int threads = 2, use_seccomp = 0;
    region_pages = 512;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--pages") && i + 1 < argc)
            region_pages = (size_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "--seccomp"))
            use_seccomp = 1;
        else {
            fprintf(stderr, "usage: evicttest [--threads T] [--pages N] [--seccomp]\n"
                            "  T writer threads + a pipe reader + a sleeper; a region of N pages to zap.\n"
                            "  stdin: status | quit\n");
            return 2;
        }
    }
    if (threads < 1 || threads > 64 || region_pages < 1) {
        fprintf(stderr, "evicttest: --threads must be 1..64 and --pages >= 1\n");
        return 2;
    }
    region = mmap(NULL, region_pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    iters = calloc((size_t)threads, sizeof(*iters));
    if (region == MAP_FAILED || !iters || pipe(pipefd) < 0) {
        perror("evicttest: setup");
        return 2;
    }
    for (size_t p = 0; p < region_pages; p++)
        for (size_t o = 0; o < PAGE; o++)
            region[p * PAGE + o] = pattern(p, o);
    int seccomp_on = 0;
    if (use_seccomp) {
        if (install_seccomp() < 0) {
            perror("evicttest: seccomp");
            return 2;
        }
        /* prove the filter bites: our own madvise must fail with EPERM */
        seccomp_on = madvise(region, PAGE, MADV_DONTNEED) < 0 && errno == EPERM;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_rt;
    sa.sa_flags = SA_RESTART;
    sigaction(SIGRTMIN, &sa, NULL);
    pthread_t th;
    for (int i = 0; i < threads; i++)
        if (pthread_create(&th, NULL, writer, (void *)(uintptr_t)i) != 0)
            return 2;
    if (pthread_create(&th, NULL, piper, NULL) || pthread_create(&th, NULL, sleeper, NULL) ||
        pthread_create(&th, NULL, feeder, NULL))
        return 2;
    status(threads, seccomp_on);
    char line[64];
    while (fgets(line, sizeof(line), stdin)) {
        if (!strncmp(line, "status", 6))
            status(threads, seccomp_on);
        else if (!strncmp(line, "quit", 4)) {
            status(threads, seccomp_on);
            _exit(atomic_load(&errors) ? 1 : 0);
        }
    }
    status(threads, seccomp_on);
    _exit(atomic_load(&errors) ? 1 : 0);
}
