/* uffdpeek: what does a debugger see of a page that is missing in a
 * userfaultfd-registered range (still remote, or evicted)? docs/budget.md,
 * "What a debugger or a core dump sees".
 *
 * The process maps 3 private anonymous pages, registers them with a
 * userfaultfd in MISSING mode (as CRIU's restorer does for lazy memory) and
 * serves faults from a thread with pages of 0xab, counting them. A forked
 * child (another mm, like gdb) then reads one missing page each way:
 *   page 0  pread of /proc/PID/mem        (gdb, `cat`, CRIU's own readers)
 *   page 1  process_vm_readv              (gdb's fast path, perf, our dirty check)
 *   page 2  PTRACE_PEEKDATA               (gdb without /proc/PID/mem)
 * each bounded by a 2 s alarm. One JSON line: per way, what the read returned
 * (bytes, errno, or "blocked") and how many faults the handler served.
 * `uffdpeek --core DIR`: then abort() with a core file in DIR (core_pattern
 * "core"): page 2 is still missing when the kernel dumps it; the "area"
 * address in the JSON line says where to look in the core.
 * `uffdpeek --wait S`: then wait S seconds (for a debugger to attach and read
 * page 2, still missing) before exiting. */
#include <errno.h>
#include <fcntl.h>
#include <linux/userfaultfd.h>
#include <pthread.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <sys/ptrace.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <unistd.h>

#define PG 4096ul

static int uffd;
static volatile int served;
static uint8_t *area;

/* The "daemon": answers every fault with 0xab pages and counts them. */
static void *handler(void *arg)
{
    (void)arg;
    static uint8_t page[PG] __attribute__((aligned(PG)));
    memset(page, 0xab, sizeof(page));
    for (;;) {
        struct uffd_msg m;
        if (read(uffd, &m, sizeof(m)) != (ssize_t)sizeof(m))
            continue;
        if (m.event != UFFD_EVENT_PAGEFAULT)
            continue;
        struct uffdio_copy c = {.dst = m.arg.pagefault.address & ~(PG - 1), .src = (uintptr_t)page, .len = PG};
        if (ioctl(uffd, UFFDIO_COPY, &c) == 0)
            served++;
    }
    return NULL;
}

static void on_alarm(int sig)
{
    (void)sig;
}

/* Child: one read per way; results through the pipe. */
static void reader(pid_t target, int out)
{
    char res[512];
    size_t o = 0;
    struct sigaction sa = {.sa_handler = on_alarm};
    sigaction(SIGALRM, &sa, NULL); /* no SA_RESTART: a blocked read returns EINTR */
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/mem", (int)target);
    uint8_t b[8] = {0};

    int fd = open(path, O_RDONLY);
    alarm(2);
    ssize_t n = fd < 0 ? -1 : pread(fd, b, sizeof(b), (off_t)(uintptr_t)area);
    int e = errno;
    alarm(0);
    o += (size_t)snprintf(res + o, sizeof(res) - o, "\"proc_mem\": \"%s\", \"proc_mem_byte\": %d, ",
                          n == (ssize_t)sizeof(b) ? "read" : e == EINTR ? "blocked" : strerror(e),
                          n == (ssize_t)sizeof(b) ? b[0] : -1);

    struct iovec l = {b, sizeof(b)}, r = {area + PG, sizeof(b)};
    memset(b, 0, sizeof(b));
    alarm(2);
    n = process_vm_readv(target, &l, 1, &r, 1, 0);
    e = errno;
    alarm(0);
    o += (size_t)snprintf(res + o, sizeof(res) - o, "\"process_vm_readv\": \"%s\", \"process_vm_readv_byte\": %d, ",
                          n == (ssize_t)sizeof(b) ? "read" : e == EINTR ? "blocked" : strerror(e),
                          n == (ssize_t)sizeof(b) ? b[0] : -1);

    const char *pk = "not attached";
    long word = -1;
    if (ptrace(PTRACE_SEIZE, target, 0, 0) == 0 && ptrace(PTRACE_INTERRUPT, target, 0, 0) == 0) {
        int st;
        waitpid(target, &st, __WALL);
        errno = 0;
        alarm(2);
        word = ptrace(PTRACE_PEEKDATA, target, area + 2 * PG, 0);
        e = errno;
        alarm(0);
        pk = e == 0 ? "read" : e == EINTR ? "blocked" : strerror(e);
        ptrace(PTRACE_DETACH, target, 0, 0);
    }
    snprintf(res + o, sizeof(res) - o, "\"peekdata\": \"%s\", \"peekdata_byte\": %d", pk,
             strcmp(pk, "read") == 0 ? (int)(word & 0xff) : -1);
    if (write(out, res, strlen(res)) < 0)
        _exit(1);
    _exit(0);
}

int main(int argc, char **argv)
{
    uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC);
    struct uffdio_api api = {.api = UFFD_API};
    area = mmap(NULL, 3 * PG, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    struct uffdio_register reg = {.range = {(uintptr_t)area, 3 * PG}, .mode = UFFDIO_REGISTER_MODE_MISSING};
    if (uffd < 0 || ioctl(uffd, UFFDIO_API, &api) < 0 || area == MAP_FAILED ||
        ioctl(uffd, UFFDIO_REGISTER, &reg) < 0) {
        fprintf(stderr, "uffdpeek: userfaultfd setup failed: %s\n", strerror(errno));
        return 1;
    }
    pthread_t th;
    pthread_create(&th, NULL, handler, NULL);
    prctl(PR_SET_PTRACER, PR_SET_PTRACER_ANY, 0, 0, 0);
    int p[2];
    if (pipe(p) < 0)
        return 1;
    pid_t self = getpid();
    pid_t c = fork();
    if (c == 0) {
        close(p[0]);
        reader(self, p[1]);
    }
    close(p[1]);
    char res[512] = {0};
    ssize_t n = read(p[0], res, sizeof(res) - 1);
    int st;
    waitpid(c, &st, 0);
    int before = served;
    /* the process itself touches a page: the handler does serve faults */
    volatile uint8_t x = area[0];
    (void)x;
    for (int i = 0; i < 1000 && served == before; i++)
        usleep(1000); /* the handler counts after its UFFDIO_COPY woke us */
    printf("{%s, \"faults_served_for_readers\": %d, \"own_touch_served\": %s, \"area\": %llu}\n",
           n > 0 ? res : "\"error\": 1", before, served > before ? "true" : "false",
           (unsigned long long)(uintptr_t)area);
    fflush(stdout);
    if (argc == 3 && strcmp(argv[1], "--wait") == 0) {
        sleep((unsigned)atoi(argv[2]));
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "--core") == 0) {
        struct rlimit rl = {RLIM_INFINITY, RLIM_INFINITY};
        if (chdir(argv[2]) < 0 || setrlimit(RLIMIT_CORE, &rl) < 0) {
            fprintf(stderr, "uffdpeek: cannot prepare a core dump in %s: %s\n", argv[2], strerror(errno));
            return 1;
        }
        abort();
    }
    return 0;
}
