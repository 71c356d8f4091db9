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
#include <fcntl.h>
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
#include <linux/userfaultfd.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <sys/prctl.h>
#include <sys/rseq.h>
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
static uint8_t *lazy;               /* userfaultfd-registered, served by the tracer */
static size_t lazy_pages;
static atomic_ulong lazy_checks;
static int uffd = -1, listen_fd = -1;
static atomic_int rseq_tid;
static atomic_ulong rseq_commits, rseq_aborts;

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

/* A thread that spends nearly all its time inside an rseq critical section
 * (a countdown between start_ip and the commit), using the rseq area glibc
 * registered for it. A tracer that moves its rip while it is inside would
 * make the kernel forget the abort; the tracer must pick another thread. */
static void *rseq_spinner(void *arg)
{
    (void)arg;
    block_rt();
    atomic_store(&rseq_tid, (int)syscall(SYS_gettid));
    if (__rseq_size == 0) {
        fail("glibc registered no rseq area for this thread", 0, 0);
        return NULL;
    }
    uintptr_t tp;
    __asm__("mov %%fs:0, %0" : "=r"(tp));
    struct rseq *rs = (struct rseq *)(tp + (uintptr_t)__rseq_offset);
    unsigned long commits = 0, aborts = 0;
    for (;;) {
        __asm__ __volatile__(
            ".pushsection __rseq_cs, \"aw\"\n\t"
            ".balign 32\n\t"
            "3:\n\t"
            ".long 0x0, 0x0\n\t"
            ".quad 1f, (2f - 1f), 4f\n\t"
            ".popsection\n\t"
            "leaq 3b(%%rip), %%rax\n\t"
            "movq %%rax, %[cs]\n\t"
            "1:\n\t"
            "movq $200000, %%rcx\n\t"
            "5:\n\t"
            "decq %%rcx\n\t"
            "jnz 5b\n\t"
            "2:\n\t"
            "incq %[commits]\n\t"
            "jmp 6f\n\t"
            ".long 0x53053053\n\t"
            "4:\n\t"
            "incq %[aborts]\n\t"
            "6:\n\t"
            : [commits] "+m"(commits), [aborts] "+m"(aborts), [cs] "=m"(rs->rseq_cs)
            :
            : "rax", "rcx", "memory", "cc");
        atomic_store(&rseq_commits, commits);
        atomic_store(&rseq_aborts, aborts);
    }
    return NULL;
}

/* Content the tracer installs in lazy page `page` (UFFDIO_COPY). */
static uint8_t lazy_pattern(size_t page, size_t off)
{
    return (uint8_t)(0x40 + ((page * 13 + off) % 191));
}

/* User-mode faults: reads lazy pages and checks what the tracer installed. */
static void *lazy_user(void *arg)
{
    (void)arg;
    block_rt();
    for (;;)
        for (size_t p = 0; p < lazy_pages; p++) {
            static const size_t offs[] = {0, 777, 4095};
            for (size_t k = 0; k < 3; k++) {
                uint8_t v = ((volatile uint8_t *)lazy)[p * PAGE + offs[k]];
                if (v != lazy_pattern(p, offs[k]))
                    fail("lazy page content (user fault)", v, lazy_pattern(p, offs[k]));
            }
            atomic_fetch_add(&lazy_checks, 1);
            usleep(200);
        }
    return NULL;
}

/* Kernel-mode faults: write() from lazy memory into a pipe makes the kernel
 * fault on the page (copy_from_user); such a thread cannot stop until the
 * fault is served. */
static void *lazy_kernel(void *arg)
{
    (void)arg;
    block_rt();
    int kp[2];
    if (pipe(kp) < 0)
        abort();
    for (;;)
        for (size_t p = lazy_pages; p-- > 0;) {
            uint8_t buf[64];
            if (write(kp[1], lazy + p * PAGE + 100, sizeof(buf)) != sizeof(buf) ||
                read(kp[0], buf, sizeof(buf)) != sizeof(buf)) {
                fail("lazy pipe round trip", p, (uint64_t)errno);
                continue;
            }
            for (size_t i = 0; i < sizeof(buf); i++)
                if (buf[i] != lazy_pattern(p, 100 + i)) {
                    fail("lazy page content (kernel fault)", buf[i], lazy_pattern(p, 100 + i));
                    break;
                }
            atomic_fetch_add(&lazy_checks, 1);
            usleep(200);
        }
    return NULL;
}

/* Lazy writers: writer w owns the lazy pages p with p % W == w and keeps
 * incrementing one word in each (at 1024 + 8 * (p % 300), away from the
 * bytes the readers check). Before each write it checks the word still holds
 * the last value it wrote: an eviction that dropped a modified page without
 * writing it back shows up as an older value. */
static int lazy_writers;
static atomic_ulong lazy_writes;

static size_t lazy_word(size_t p)
{
    return p * PAGE + 1024 + 8 * (p % 300);
}

static void *lazy_writer(void *arg)
{
    size_t w = (size_t)(uintptr_t)arg;
    block_rt();
    size_t mine = (lazy_pages + (size_t)lazy_writers - 1 - w) / (size_t)lazy_writers;
    uint64_t *expect = calloc(mine ? mine : 1, sizeof(uint64_t));
    uint8_t *seen = calloc(mine ? mine : 1, 1);
    if (!expect || !seen)
        abort();
    for (uint64_t n = 0;; n++) {
        size_t k = (size_t)(mix(n ^ (w << 32)) % mine);
        size_t p = w + k * (size_t)lazy_writers;
        volatile uint64_t *word = (volatile uint64_t *)(lazy + lazy_word(p));
        uint64_t v = *word;
        if (!seen[k]) {
            seen[k] = 1;        /* first touch: whatever the tracer installed */
            expect[k] = v;
        } else if (v != expect[k]) {
            fail("lazy write lost", v, expect[k]);
            expect[k] = v;
        }
        expect[k] = v + 1;
        *word = v + 1;
        atomic_fetch_add(&lazy_writes, 1);
        if ((n & 63) == 0)
            usleep(50);
    }
    return NULL;
}

/* Hands the userfaultfd to the first client of the UNIX socket (as CRIU
 * hands it to a lazy-pages daemon). */
static void *uffd_sender(void *arg)
{
    (void)arg;
    block_rt();
    int c = accept(listen_fd, NULL, NULL);
    if (c < 0) {
        fail("accept on the uffd socket", (uint64_t)errno, 0);
        return NULL;
    }
    char byte = 'U';
    struct iovec iov = {&byte, 1};
    union {
        struct cmsghdr h;
        char buf[CMSG_SPACE(sizeof(int))];
    } u;
    struct msghdr msg = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
    struct cmsghdr *cm = CMSG_FIRSTHDR(&msg);
    cm->cmsg_level = SOL_SOCKET;
    cm->cmsg_type = SCM_RIGHTS;
    cm->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(cm), &uffd, sizeof(int));
    if (sendmsg(c, &msg, 0) != 1)
        fail("sending the uffd", (uint64_t)errno, 0);
    close(c);
    close(uffd);    /* the tracer's copy is the only one now */
    return NULL;
}

static int setup_uffd(const char *path)
{
    uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (uffd < 0)
        return -1;
    struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_EVENT_REMOVE};
    if (ioctl(uffd, UFFDIO_API, &api) < 0)
        return -1;
    lazy = mmap(NULL, lazy_pages * PAGE, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    if (lazy == MAP_FAILED)
        return -1;
    struct uffdio_register reg = {.range = {(uint64_t)(uintptr_t)lazy, lazy_pages * PAGE},
                                  .mode = UFFDIO_REGISTER_MODE_MISSING};
    if (ioctl(uffd, UFFDIO_REGISTER, &reg) < 0)
        return -1;
    struct sockaddr_un sa = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sa.sun_path))
        return -1;
    strcpy(sa.sun_path, path);
    unlink(path);
    listen_fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (listen_fd < 0 || bind(listen_fd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(listen_fd, 1) < 0)
        return -1;
    return 0;
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
           "\"region\":%" PRIu64 ",\"region_pages\":%zu,\"lazy\":%" PRIu64 ",\"lazy_pages\":%zu,\"lazy_checks\":%lu,\"lazy_writes\":%lu,\"rseq_tid\":%d,\"rseq_commits\":%lu,\"rseq_aborts\":%lu,\"zero\":%zu,\"intact\":%zu,\"other\":%zu,\"iters\":[",
           (int)getpid(), atomic_load(&errors), atomic_load(&pipe_msgs), atomic_load(&sleeps),
           atomic_load(&rtsigs), seccomp_on,
           (uint64_t)(uintptr_t)region, region_pages, (uint64_t)(uintptr_t)lazy, lazy ? lazy_pages : 0,
           atomic_load(&lazy_checks), atomic_load(&lazy_writes), atomic_load(&rseq_tid), atomic_load(&rseq_commits),
           atomic_load(&rseq_aborts), zero, intact, other);
    for (int i = 0; i < threads; i++)
        printf("%s%lu", i ? "," : "", atomic_load(&iters[i]));
    printf("]}\n");
    fflush(stdout);
}

int main(int argc, char **argv)
{
    int threads = 2, use_seccomp = 0;
    const char *uffd_sock = NULL;
    int use_rseq = 0;
    region_pages = 512;
    for (int i = 1; i < argc; i++) {
        if (!strcmp(argv[i], "--threads") && i + 1 < argc)
            threads = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--pages") && i + 1 < argc)
            region_pages = (size_t)atol(argv[++i]);
        else if (!strcmp(argv[i], "--seccomp"))
            use_seccomp = 1;
        else if (!strcmp(argv[i], "--rseq"))
            use_rseq = 1;
        else if (!strcmp(argv[i], "--uffd-sock") && i + 1 < argc)
            uffd_sock = argv[++i];
        else if (!strcmp(argv[i], "--lazy-writers") && i + 1 < argc)
            lazy_writers = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--lazy-pages") && i + 1 < argc)
            lazy_pages = (size_t)atol(argv[++i]);
        else {
            fprintf(stderr, "usage: evicttest [--threads T] [--pages N] [--seccomp] [--rseq] [--uffd-sock PATH [--lazy-pages L] [--lazy-writers W]]\n"
                            "  T writer threads + a pipe reader + a sleeper; a region of N pages to zap.\n"
                            "  --uffd-sock: L pages registered with a userfaultfd handed to the first\n"
                            "  client of PATH, read by a user-mode and a kernel-mode faulting thread.\n"
                            "  --lazy-writers: W threads incrementing words in the lazy pages, checking\n"
                            "  that none of their writes is lost.\n"
                            "  --rseq: a thread spinning inside an rseq critical section.\n"
                            "  stdin: status | quit\n");
            return 2;
        }
    }
    if (lazy_writers < 0 || lazy_writers > 16 || (lazy_writers && (size_t)lazy_writers > lazy_pages && lazy_pages)) {
        fprintf(stderr, "evicttest: --lazy-writers must be 0..16 and at most --lazy-pages\n");
        return 2;
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
    if (uffd_sock) {
        if (!lazy_pages)
            lazy_pages = 64;
        if (setup_uffd(uffd_sock) < 0) {
            perror("evicttest: userfaultfd setup");
            return 2;
        }
    }
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
    if (use_rseq) {
        if (pthread_create(&th, NULL, rseq_spinner, NULL))
            return 2;
        while (!atomic_load(&rseq_tid))
            usleep(1000);
    }
    if (uffd_sock && (pthread_create(&th, NULL, uffd_sender, NULL) || pthread_create(&th, NULL, lazy_user, NULL) ||
                      pthread_create(&th, NULL, lazy_kernel, NULL)))
        return 2;
    for (int w = 0; uffd_sock && w < lazy_writers; w++)
        if (pthread_create(&th, NULL, lazy_writer, (void *)(uintptr_t)w))
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
