/* inject: ptrace stop-all and remote syscall injection. See inject.h. */
#include "inject.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/ptrace.h>
#include <sys/syscall.h>
#include <sys/uio.h>
#include <sys/wait.h>

#ifndef PTRACE_O_SUSPEND_SECCOMP
#define PTRACE_O_SUSPEND_SECCOMP (1 << 21)
#endif
#ifndef __NR_process_madvise
#define __NR_process_madvise 440
#endif

/* struct ptrace_rseq_configuration and the head of struct rseq (uapi). */
struct rseq_conf {
    uint64_t rseq_abi_pointer;
    uint32_t rseq_abi_size, signature, flags, pad;
};
struct rseq_cs_desc {
    uint32_t version, flags;
    uint64_t start_ip, post_commit_offset, abort_ip;
};
#define RSEQ_CS_OFFSET 8

int dp_inject_read(struct dp_inject *in, uint64_t addr, void *buf, size_t len)
{
    ssize_t r = pread(in->memfd, buf, len, (off_t)addr);
    if (r == (ssize_t)len)
        return 0;
    if (r >= 0)
        errno = EIO;
    return -1;
}

int dp_inject_write(struct dp_inject *in, uint64_t addr, const void *buf, size_t len)
{
    ssize_t r = pwrite(in->memfd, buf, len, (off_t)addr);
    if (r == (ssize_t)len)
        return 0;
    if (r >= 0)
        errno = EIO;
    return -1;
}

int dp_inject_read_pages(struct dp_inject *in, const uint64_t *addr, size_t n, uint8_t *buf)
{
    struct iovec local[DP_INJECT_MAX_IOV], remote[DP_INJECT_MAX_IOV];
    for (size_t i = 0; i < n;) {
        size_t k = n - i < DP_INJECT_MAX_IOV ? n - i : DP_INJECT_MAX_IOV;
        for (size_t j = 0; j < k; j++) {
            local[j].iov_base = buf + (i + j) * DP_PAGE_SIZE;
            local[j].iov_len = DP_PAGE_SIZE;
            remote[j].iov_base = (void *)(uintptr_t)addr[i + j];
            remote[j].iov_len = DP_PAGE_SIZE;
        }
        ssize_t r = process_vm_readv(in->pid, local, k, remote, k, 0);
        if (r < 0)
            return -1;
        if ((size_t)r < k * DP_PAGE_SIZE) {
            /* partial: an unreadable page; name it */
            errno = EFAULT;
            return -1;
        }
        i += k;
    }
    return 0;
}

static int ensure(struct dp_inject *in, uint64_t addr, uint64_t len)
{
    return in->ops.ensure ? in->ops.ensure(in->ops.arg, addr, len) : 0;
}

static int find_vdso_syscall(struct dp_inject *in, struct dp_err *err)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/maps", (int)in->pid);
    FILE *f = fopen(path, "r");
    if (!f) {
        dp_err_set(err, "cannot open %s: %s (is the process alive?)", path, strerror(errno));
        return -1;
    }
    char line[512];
    uint64_t lo = 0, hi = 0;
    while (fgets(line, sizeof(line), f)) {
        if (strstr(line, "[vdso]")) {
            unsigned long long a, b;
            if (sscanf(line, "%llx-%llx", &a, &b) == 2) {
                lo = a;
                hi = b;
            }
            break;
        }
    }
    fclose(f);
    if (!lo || hi <= lo || hi - lo > (1 << 20)) {
        dp_err_set(err, "process %d has no [vdso] mapping: cannot inject system calls", (int)in->pid);
        return -1;
    }
    size_t len = hi - lo;
    uint8_t *buf = malloc(len);
    if (!buf) {
        dp_err_set(err, "out of memory reading the vDSO");
        return -1;
    }
    if (dp_inject_read(in, lo, buf, len) < 0) {
        dp_err_set(err, "cannot read the vDSO of %d: %s", (int)in->pid, strerror(errno));
        free(buf);
        return -1;
    }
    for (size_t i = 0; i + 1 < len; i++) {
        if (buf[i] == 0x0f && buf[i + 1] == 0x05) {
            in->syscall_insn = lo + i;
            free(buf);
            return 0;
        }
    }
    free(buf);
    dp_err_set(err, "no syscall instruction in the vDSO of %d", (int)in->pid);
    return -1;
}

static long exitkill(const struct dp_inject *in)
{
    return in->ops.exitkill ? PTRACE_O_EXITKILL : 0;
}

int dp_inject_open(struct dp_inject *in, pid_t pid, const struct dp_inject_ops *ops, struct dp_err *err)
{
    memset(in, 0, sizeof(*in));
    in->pid = pid;
    in->pm_self = -1;
    in->timeout_ms = 10000;
    if (ops)
        in->ops = *ops;
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/mem", (int)pid);
    in->memfd = open(path, O_RDWR | O_CLOEXEC);
    if (in->memfd < 0) {
        dp_err_set(err, "cannot open %s: %s (needs root / CAP_SYS_PTRACE)", path, strerror(errno));
        return -1;
    }
    if (find_vdso_syscall(in, err) < 0) {
        close(in->memfd);
        in->memfd = -1;
        return -1;
    }
    return 0;
}

static struct dp_inject_thread *find_thread(struct dp_inject *in, pid_t tid)
{
    for (size_t i = 0; i < in->n; i++)
        if (in->t[i].tid == tid)
            return &in->t[i];
    return NULL;
}

static void drop_thread(struct dp_inject *in, struct dp_inject_thread *t)
{
    size_t i = (size_t)(t - in->t);
    free(t->pend);
    in->t[i] = in->t[--in->n];
}

/* Adds threads listed in /proc/PID/task that we do not know yet. Returns the
 * number added, or -1 (process gone / ENOMEM). */
static int scan_tasks(struct dp_inject *in, struct dp_err *err)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task", (int)in->pid);
    DIR *d = opendir(path);
    if (!d) {
        dp_err_set(err, "cannot list %s: %s (did the process exit?)", path, strerror(errno));
        return -1;
    }
    int added = 0;
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] < '0' || de->d_name[0] > '9')
            continue;
        pid_t tid = (pid_t)atoi(de->d_name);
        if (find_thread(in, tid))
            continue;
        if (in->n == in->cap) {
            size_t cap = in->cap ? in->cap * 2 : 16;
            void *p = realloc(in->t, cap * sizeof(*in->t));
            if (!p) {
                closedir(d);
                dp_err_set(err, "out of memory tracking threads");
                return -1;
            }
            in->t = p;
            in->cap = cap;
        }
        struct dp_inject_thread *t = &in->t[in->n++];
        memset(t, 0, sizeof(*t));
        t->tid = tid;
        added++;
    }
    closedir(d);
    return added;
}

static void save_signal(struct dp_inject_thread *t, const siginfo_t *si)
{
    if (t->npend == t->pcap) {
        int cap = t->pcap ? t->pcap * 2 : 8;
        void *p = realloc(t->pend, (size_t)cap * sizeof(*t->pend));
        if (!p) {
            dp_warn("out of memory saving signal %d of thread %d: it is lost", si->si_signo, (int)t->tid);
            return;
        }
        t->pend = p;
        t->pcap = cap;
    }
    t->pend[t->npend++].info = *si;
}

/* A seize refused with EPERM, or an eviction that failed, is no error when
 * the thread is a zombie or gone (its state in /proc is Z or X). */
int dp_inject_thread_exiting(pid_t pid, pid_t tid)
{
    char path[64], buf[512];
    snprintf(path, sizeof(path), "/proc/%d/task/%d/stat", (int)pid, (int)tid);
    if (dp_read_small(path, buf, sizeof(buf)) < 0)
        return 1;
    char *p = strrchr(buf, ')');
    return p && p[1] == ' ' && (p[2] == 'Z' || p[2] == 'X');
}

pid_t dp_status_tracer(const char *status)
{
    const char *p = strstr(status, "\nTracerPid:");
    if (!p)
        return 0;
    char *end;
    long v = strtol(p + strlen("\nTracerPid:"), &end, 10);
    return end != p + strlen("\nTracerPid:") && (*end == '\n' || *end == '\0') && v > 0 && v <= INT32_MAX ? (pid_t)v : 0;
}

/* Thread tid's tracer when it is another process than us, else 0. */
static pid_t other_tracer(pid_t pid, pid_t tid)
{
    char path[64], buf[2048];
    snprintf(path, sizeof(path), "/proc/%d/task/%d/status", (int)pid, (int)tid);
    pid_t t = dp_read_small(path, buf, sizeof(buf)) < 0 ? 0 : dp_status_tracer(buf);
    return t == getpid() ? 0 : t;
}

static int is_stop_signal(int sig)
{
    return sig == SIGSTOP || sig == SIGTSTP || sig == SIGTTIN || sig == SIGTTOU;
}

/* One wait step for thread t: WNOHANG. Returns 1 if it changed state, 0 if
 * nothing to report, -1 on error. `stepping`: we are waiting for our
 * single-step trap (a SIGTRAP signal-delivery-stop ends it). */
static int reap_one(struct dp_inject *in, struct dp_inject_thread *t, int stepping, int *step_done)
{
    int st;
    pid_t r = waitpid(t->tid, &st, WNOHANG | __WALL);
    if (r == 0)
        return 0;
    if (r < 0) {
        if (errno == ECHILD) {     /* gone (reaped elsewhere or never ours) */
            drop_thread(in, t);
            return 1;
        }
        return -1;
    }
    if (WIFEXITED(st) || WIFSIGNALED(st)) {
        drop_thread(in, t);
        return 1;
    }
    if (!WIFSTOPPED(st))
        return 0;
    int sig = WSTOPSIG(st);
    int event = (st >> 16) & 0xff;
    if (event == PTRACE_EVENT_STOP) {
        if (stepping) {
            /* The step was overtaken by a job-control or interrupt stop;
             * the call may not have run. Keep stepping. */
            ptrace(PTRACE_SINGLESTEP, t->tid, 0, 0);
            return 1;
        }
        t->stopped = 1;
        t->group_stop = is_stop_signal(sig);
        return 1;
    }
    if (event) {   /* events we did not ask for: continue */
        ptrace(PTRACE_CONT, t->tid, 0, 0);
        return 1;
    }
    /* signal-delivery-stop */
    if (stepping) {
        if (sig == SIGTRAP) {
            siginfo_t si;
            /* Our own single-step trap has si_code SI_USER from the kernel
             * (pid 0) or TRAP_TRACE; anything sent by someone else is kept. */
            if (ptrace(PTRACE_GETSIGINFO, t->tid, 0, &si) == 0 &&
                !(si.si_code > 0 || (si.si_code == SI_USER && si.si_pid == 0))) {
                save_signal(t, &si);
                ptrace(PTRACE_SINGLESTEP, t->tid, 0, 0);
                return 1;
            }
            *step_done = 1;
            t->stopped = 1;
            return 1;
        }
        /* Another signal came first: keep it for later, let the step finish. */
        siginfo_t si;
        if (ptrace(PTRACE_GETSIGINFO, t->tid, 0, &si) == 0)
            save_signal(t, &si);
        ptrace(PTRACE_SINGLESTEP, t->tid, 0, 0);
        return 1;
    }
    /* While stopping: deliver it now and stop again right after. */
    ptrace(PTRACE_INTERRUPT, t->tid, 0, 0);
    ptrace(PTRACE_CONT, t->tid, 0, (void *)(long)sig);
    in->st.signals_forwarded++;
    return 1;
}

/* Waiting without a pump: yield a little, then sleep briefly. */
static void idle(struct dp_inject *in, int *spins)
{
    (void)in;
    if ((*spins)++ < 50) {
        sched_yield();
        return;
    }
    struct timespec ts = {0, 20000};
    nanosleep(&ts, NULL);
}

/* Waits until every known seized thread is stopped (or gone). */
static int wait_all_stopped(struct dp_inject *in, struct dp_err *err)
{
    uint64_t deadline = dp_now_ns() + (uint64_t)in->timeout_ms * 1000000ULL;
    int spins = 0;
    for (;;) {
        int waiting = 0, progress = 0;
        for (size_t i = 0; i < in->n;) {
            struct dp_inject_thread *t = &in->t[i];
            if (t->stopped) {
                i++;
                continue;
            }
            size_t before = in->n;
            int dummy = 0;
            int r = reap_one(in, t, 0, &dummy);
            if (r < 0) {
                dp_err_set(err, "waitpid(%d) failed: %s", (int)t->tid, strerror(errno));
                return -1;
            }
            if (r > 0)
                progress = 1;
            if (in->n < before)
                continue;          /* dropped: slot i holds another thread */
            if (!in->t[i].stopped)
                waiting++;
            i++;
        }
        if (!waiting)
            return 0;
        if (progress)
            continue;
        if (in->ops.pump && in->ops.pump(in->ops.arg) < 0) {
            dp_err_set(err, "stopping process %d: the fault pump failed", (int)in->pid);
            return -1;
        }
        if (!in->ops.pump)
            idle(in, &spins);
        if (dp_now_ns() > deadline) {
            /* Giving up would leave threads with a pending interrupt that
             * nobody waits for: keep waiting, say why it may take long. */
            dp_warn("%d thread(s) of process %d not stopped after %d ms "
                    "(blocked in a userfaultfd fault or event nobody serves?); still waiting",
                    waiting, (int)in->pid, in->timeout_ms);
            deadline = dp_now_ns() + (uint64_t)in->timeout_ms * 1000000ULL;
        }
    }
}

/* Thread t cannot be seized: process tracer traces it. Lets go of what this
 * stop seized (stopped first, then detached, like any resume) and forgets
 * the threads not seized yet: the process runs on as if never touched. */
static int let_go(struct dp_inject *in, struct dp_inject_thread *t, pid_t tracer, struct dp_err *err)
{
    pid_t tid = t->tid;
    for (size_t i = 0; i < in->n;) {
        if (in->t[i].seized)
            i++;
        else
            drop_thread(in, &in->t[i]);
    }
    struct dp_err e = {{0}};
    if (in->n && (wait_all_stopped(in, &e) < 0 || dp_inject_resume(in, 1, &e) < 0)) {
        dp_err_set(err, "thread %d of process %d is traced by process %d, and letting go of its other threads "
                   "failed: %s", (int)tid, (int)in->pid, (int)tracer, e.msg);
        return -1;
    }
    dp_err_set(err, "thread %d of process %d is traced by process %d (criu still detaching from the tree it "
               "restored?): not stopped, try again later", (int)tid, (int)in->pid, (int)tracer);
    return DP_INJECT_TRACED;
}

/* PTRACE_SEIZE, again while it fails with EPERM and no tracer is left to
 * blame: criu detaching from the tree it restored is seen as a tracer by the
 * seize and gone by the time TracerPid is read (measured: the daemon killed
 * a freshly restored tree on that EPERM). At most ~20 ms; errno as seized. */
static int seize(struct dp_inject *in, pid_t tid, long opts)
{
    for (int i = 0;; i++) {
        if (ptrace(PTRACE_SEIZE, tid, 0, (void *)opts) == 0)
            return 0;
        int e = errno;
        if (e != EPERM || i == 20 || other_tracer(in->pid, tid) > 0 || dp_inject_thread_exiting(in->pid, tid)) {
            errno = e;
            return -1;
        }
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

int dp_inject_stop(struct dp_inject *in, struct dp_err *err)
{
    uint64_t t0 = dp_now_ns();
    if (in->all_stopped)
        return 0;
    for (int round = 0; round < 1000; round++) {
        int added = scan_tasks(in, err);
        if (added < 0)
            return -1;
        if (round > 0 && added == 0)
            break;
        if (round > 0)
            in->st.rescans++;
        for (size_t i = 0; i < in->n;) {
            struct dp_inject_thread *t = &in->t[i];
            if (!t->seized) {
                long opts = PTRACE_O_SUSPEND_SECCOMP | exitkill(in);
                if (seize(in, t->tid, opts) < 0) {
                    if (errno == ESRCH || (errno == EPERM && dp_inject_thread_exiting(in->pid, t->tid))) {
                        /* exited meanwhile, or a zombie (e.g. a leader that
                         * called pthread_exit): it runs no code */
                        drop_thread(in, t);
                        continue;
                    }
                    pid_t tracer = errno == EPERM ? other_tracer(in->pid, t->tid) : 0;
                    if (tracer > 0)
                        return let_go(in, t, tracer, err);
                    dp_err_set(err, "PTRACE_SEIZE of thread %d failed: %s "
                               "(needs CAP_SYS_ADMIN for PTRACE_O_SUSPEND_SECCOMP; another tracer?)",
                               (int)t->tid, strerror(errno));
                    return -1;
                }
                t->seized = 1;
                t->stopped = 0;
            }
            if (!t->stopped && ptrace(PTRACE_INTERRUPT, t->tid, 0, 0) < 0 && errno != ESRCH) {
                dp_err_set(err, "PTRACE_INTERRUPT of thread %d failed: %s", (int)t->tid, strerror(errno));
                return -1;
            }
            i++;
        }
        if (wait_all_stopped(in, err) < 0)
            return -1;
        if (in->n == 0) {
            dp_err_set(err, "process %d has no threads left (exited?)", (int)in->pid);
            return -1;
        }
    }
    /* Threads kept seized across batches: suspend seccomp again (it was
     * lifted when they were resumed). */
    for (size_t i = 0; i < in->n; i++)
        ptrace(PTRACE_SETOPTIONS, in->t[i].tid, 0, (void *)(PTRACE_O_SUSPEND_SECCOMP | exitkill(in)));
    in->all_stopped = 1;
    in->st.stops++;
    in->st.stop_ns_last = dp_now_ns() - t0;
    if (in->st.stop_ns_last > in->st.stop_ns_max)
        in->st.stop_ns_max = in->st.stop_ns_last;
    return 0;
}

/* 1 if thread t (registers regs) is inside an rseq critical section. */
static int in_rseq_cs(struct dp_inject *in, pid_t tid, const struct user_regs_struct *regs)
{
    struct rseq_conf conf;
    memset(&conf, 0, sizeof(conf));
    if (ptrace(PTRACE_GET_RSEQ_CONFIGURATION, tid, sizeof(conf), &conf) <= 0)
        return 0;              /* kernel without it: nothing to check */
    if (!conf.rseq_abi_pointer)
        return 0;
    uint64_t cs = 0;
    if (ensure(in, conf.rseq_abi_pointer + RSEQ_CS_OFFSET, 8) < 0 ||
        dp_inject_read(in, conf.rseq_abi_pointer + RSEQ_CS_OFFSET, &cs, 8) < 0)
        return 1;              /* cannot tell: treat as unsafe */
    if (!cs)
        return 0;
    struct rseq_cs_desc d;
    if (ensure(in, cs, sizeof(d)) < 0 || dp_inject_read(in, cs, &d, sizeof(d)) < 0)
        return 1;
    return regs->rip >= d.start_ip && regs->rip - d.start_ip < d.post_commit_offset;
}

size_t dp_inject_rseq_pages(struct dp_inject *in, uint64_t *out, size_t max)
{
    size_t k = 0;
    for (size_t i = 0; i < in->n && k + 2 <= max; i++) {
        struct rseq_conf conf;
        memset(&conf, 0, sizeof(conf));
        if (!in->t[i].stopped ||
            ptrace(PTRACE_GET_RSEQ_CONFIGURATION, in->t[i].tid, sizeof(conf), &conf) <= 0 ||
            !conf.rseq_abi_pointer)
            continue;
        uint64_t size = conf.rseq_abi_size ? conf.rseq_abi_size : 32;
        uint64_t first = conf.rseq_abi_pointer & ~(uint64_t)(DP_PAGE_SIZE - 1);
        uint64_t last = (conf.rseq_abi_pointer + size - 1) & ~(uint64_t)(DP_PAGE_SIZE - 1);
        out[k++] = first;
        if (last != first) /* an area across a page boundary */
            out[k++] = last;
    }
    return k;
}

static uint64_t scratch_addr(uint64_t sp, size_t bytes)
{
    return (sp - DP_INJECT_REDZONE - bytes) & ~15ULL;
}

/* Picks a stopped thread fit for injection (prefer_tid first); fills its
 * registers. scratch > 0: prefer a thread whose `scratch` bytes below the
 * stack pointer the daemon lets us touch (ops.ensure); if none does, the
 * first fit thread is returned and *scratch_ok says so. */
static struct dp_inject_thread *pick_thread_for(struct dp_inject *in, struct user_regs_struct *regs, size_t scratch,
                                                int *scratch_ok, struct dp_err *err)
{
    if (scratch_ok)
        *scratch_ok = 0;
    for (int attempt = 0; attempt < 20; attempt++) {
        struct dp_inject_thread *fallback = NULL;
        struct user_regs_struct fallback_regs;
        for (size_t k = 0; k <= in->n; k++) {
            struct dp_inject_thread *t;
            if (k == 0) {
                t = in->prefer_tid ? find_thread(in, in->prefer_tid) : NULL;
                if (!t)
                    continue;
            } else {
                t = &in->t[k - 1];
                if (in->prefer_tid && t->tid == in->prefer_tid)
                    continue;
            }
            if (!t->stopped)
                continue;
            if (ptrace(PTRACE_GETREGS, t->tid, 0, regs) < 0)
                continue;
            if (in_rseq_cs(in, t->tid, regs)) {
                in->st.rseq_busy++;
                continue;
            }
            if (!scratch)
                return t;
            if (ensure(in, scratch_addr(regs->rsp, scratch), scratch) == 0) {
                *scratch_ok = 1;
                return t;
            }
            if (!fallback) {
                fallback = t;
                fallback_regs = *regs;
            }
        }
        if (fallback) {
            *regs = fallback_regs;
            return fallback;
        }
        /* Every thread is inside an rseq critical section: let the first
         * run a moment (the kernel moves it to the abort handler) and stop it. */
        in->st.rseq_retries++;
        if (!in->n)
            break;
        struct dp_inject_thread *t = &in->t[0];
        t->stopped = 0;
        ptrace(t->group_stop ? PTRACE_LISTEN : PTRACE_CONT, t->tid, 0, 0);
        struct timespec ts = {0, 100000};
        nanosleep(&ts, NULL);
        ptrace(PTRACE_INTERRUPT, t->tid, 0, 0);
        in->all_stopped = 0;
        if (wait_all_stopped(in, err) < 0)
            return NULL;
        in->all_stopped = 1;
    }
    dp_err_set(err, "no thread of process %d can take an injected call (rseq critical sections)", (int)in->pid);
    return NULL;
}

static struct dp_inject_thread *pick_thread(struct dp_inject *in, struct user_regs_struct *regs, struct dp_err *err)
{
    return pick_thread_for(in, regs, 0, NULL, err);
}

static int inject_on(struct dp_inject *in, struct dp_inject_thread *t, const struct user_regs_struct *saved,
                     long nr, const uint64_t a[6], long *ret, struct dp_err *err)
{
    struct user_regs_struct r = *saved;
    r.rip = in->syscall_insn;
    r.rax = (uint64_t)nr;
    r.orig_rax = (uint64_t)-1;
    r.rdi = a[0];
    r.rsi = a[1];
    r.rdx = a[2];
    r.r10 = a[3];
    r.r8 = a[4];
    r.r9 = a[5];
    r.eflags &= ~0x100ULL;      /* TF: the kernel sets it for the step */
    if (ptrace(PTRACE_SETREGS, t->tid, 0, &r) < 0) {
        dp_err_set(err, "PTRACE_SETREGS on %d failed: %s", (int)t->tid, strerror(errno));
        return -1;
    }
    if (ptrace(PTRACE_SINGLESTEP, t->tid, 0, 0) < 0) {
        dp_err_set(err, "PTRACE_SINGLESTEP on %d failed: %s", (int)t->tid, strerror(errno));
        ptrace(PTRACE_SETREGS, t->tid, 0, saved);
        return -1;
    }
    t->stopped = 0;
    uint64_t deadline = dp_now_ns() + (uint64_t)in->timeout_ms * 1000000ULL;
    int spins = 0, done = 0;
    pid_t tid = t->tid;
    while (!done) {
        size_t before = in->n;
        int r2 = reap_one(in, t, 1, &done);
        if (in->n < before || (t = find_thread(in, tid)) == NULL) {
            dp_err_set(err, "thread %d exited during an injected system call", (int)tid);
            return -1;
        }
        if (r2 < 0) {
            dp_err_set(err, "waitpid(%d) failed: %s", (int)tid, strerror(errno));
            return -1;
        }
        if (done || r2 > 0)
            continue;
        if (in->ops.pump) {
            if (in->ops.pump(in->ops.arg) < 0) {
                dp_err_set(err, "injected call on %d: the fault pump failed", (int)tid);
                return -1;
            }
        } else {
            idle(in, &spins);
        }
        if (dp_now_ns() > deadline) {
            /* The thread runs our call with our registers: it cannot be
             * abandoned. Keep waiting (a zap waits for its REMOVE events). */
            dp_warn("injected system call %ld in thread %d not finished after %d ms; still waiting",
                    nr, (int)tid, in->timeout_ms);
            deadline = dp_now_ns() + (uint64_t)in->timeout_ms * 1000000ULL;
        }
    }
    struct user_regs_struct after;
    if (ptrace(PTRACE_GETREGS, t->tid, 0, &after) < 0) {
        dp_err_set(err, "PTRACE_GETREGS on %d after the call failed: %s", (int)t->tid, strerror(errno));
        return -1;
    }
    *ret = (long)after.rax;
    if (ptrace(PTRACE_SETREGS, t->tid, 0, saved) < 0) {
        dp_err_set(err, "restoring the registers of %d failed: %s", (int)t->tid, strerror(errno));
        return -1;
    }
    in->st.syscalls++;
    in->st.last_tid = t->tid;
    return 0;
}

int dp_inject_syscall(struct dp_inject *in, long nr, const uint64_t args[6], long *ret, struct dp_err *err)
{
    if (!in->all_stopped) {
        dp_err_set(err, "inject: process %d is not stopped", (int)in->pid);
        return -1;
    }
    struct user_regs_struct saved;
    struct dp_inject_thread *t = pick_thread(in, &saved, err);
    if (!t)
        return -1;
    return inject_on(in, t, &saved, nr, args, ret, err);
}

static int overlaps(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
    return a < b + blen && b < a + alen;
}

/* Per-range madvise: needs no target memory. */
static int zap_each(struct dp_inject *in, struct dp_inject_thread *t, const struct user_regs_struct *saved,
                    struct dp_zap_range *r, size_t n, struct dp_err *err)
{
    for (size_t i = 0; i < n; i++) {
        if (r[i].done || r[i].err)
            continue;
        uint64_t a[6] = {r[i].start, r[i].len, MADV_DONTNEED, 0, 0, 0};
        long ret;
        if (inject_on(in, t, saved, __NR_madvise, a, &ret, err) < 0)
            return -1;
        in->st.fallback_madvise++;
        if (ret == 0) {
            r[i].done = 1;
            in->st.zap_pages += r[i].len / DP_PAGE_SIZE;
        } else {
            r[i].err = (int)-ret;
        }
    }
    return 0;
}

int dp_inject_zap(struct dp_inject *in, struct dp_zap_range *r, size_t n, struct dp_err *err)
{
    if (!in->all_stopped) {
        dp_err_set(err, "zap: process %d is not stopped", (int)in->pid);
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        r[i].done = 0;
        r[i].err = 0;
    }
    /* Scratch for the iovec array below the red zone, 16-byte aligned. */
    size_t cap = n < DP_INJECT_MAX_IOV ? n : DP_INJECT_MAX_IOV;
    size_t bytes = cap * sizeof(struct iovec);
    struct user_regs_struct saved;
    int scratch_ok = 0;
    struct dp_inject_thread *t = pick_thread_for(in, &saved, in->pm_self != 0 ? bytes : 0, &scratch_ok, err);
    if (!t)
        return -1;
    in->st.zap_calls++;
    uint64_t scratch = scratch_addr(saved.rsp, bytes);
    uint64_t lo_page = scratch & ~(DP_PAGE_SIZE - 1);
    uint64_t span = ((saved.rsp + DP_PAGE_SIZE - 1) & ~(DP_PAGE_SIZE - 1)) - lo_page;
    int use_pm = in->pm_self != 0 && scratch_ok;
    /* With the scratch in use, ranges over its pages would be faulted back
     * by our own restore of the stack bytes: leave them resident. */
    for (size_t i = 0; use_pm && i < n; i++)
        if (overlaps(r[i].start, r[i].len, lo_page, span))
            r[i].err = EBUSY;

    uint8_t *orig = NULL;
    struct iovec *iov = NULL;
    if (use_pm) {
        orig = malloc(bytes);
        iov = malloc(bytes);
        if (!orig || !iov || dp_inject_read(in, scratch, orig, bytes) < 0)
            use_pm = 0;
    }
    size_t i = 0;
    while (use_pm && i < n) {
        /* next batch of up to cap ranges not yet handled */
        size_t idx[DP_INJECT_MAX_IOV];
        size_t k = 0;
        uint64_t total = 0;
        for (size_t j = i; j < n && k < cap; j++) {
            if (r[j].err || r[j].done)
                continue;
            idx[k] = j;
            iov[k].iov_base = (void *)(uintptr_t)r[j].start;
            iov[k].iov_len = r[j].len;
            total += r[j].len;
            k++;
        }
        if (!k)
            break;
        if (dp_inject_write(in, scratch, iov, k * sizeof(*iov)) < 0) {
            use_pm = 0;
            break;
        }
        uint64_t a[6] = {(uint64_t)(int64_t)DP_PIDFD_SELF_THREAD_GROUP, scratch, k, MADV_DONTNEED, 0, 0};
        long ret;
        if (inject_on(in, t, &saved, __NR_process_madvise, a, &ret, err) < 0) {
            dp_inject_write(in, scratch, orig, bytes);
            free(orig);
            free(iov);
            return -1;
        }
        if (ret == -EINVAL || ret == -ENOSYS || ret == -EPERM || ret == -EBADF) {
            if (in->pm_self < 0)   /* kernel without PIDFD_SELF: fall back for good */
                in->pm_self = 0;
            use_pm = 0;
            break;
        }
        in->pm_self = 1;
        /* Whole ranges done = those covered by the returned byte count. */
        uint64_t left = ret > 0 ? (uint64_t)ret : 0;
        size_t m = 0;
        for (; m < k && left >= r[idx[m]].len; m++) {
            left -= r[idx[m]].len;
            r[idx[m]].done = 1;
            in->st.zap_pages += r[idx[m]].len / DP_PAGE_SIZE;
        }
        if (m < k && ret >= 0 && (uint64_t)ret == total)
            m = k;
        if (m < k) {
            /* range idx[m] failed: its own madvise tells us why */
            struct dp_zap_range one = r[idx[m]];
            one.done = one.err = 0;
            if (zap_each(in, t, &saved, &one, 1, err) < 0) {
                dp_inject_write(in, scratch, orig, bytes);
                free(orig);
                free(iov);
                return -1;
            }
            r[idx[m]].done = one.done;
            r[idx[m]].err = one.done ? 0 : (one.err ? one.err : EIO);
        }
        /* continue from the first range not yet handled */
        while (i < n && (r[i].done || r[i].err))
            i++;
    }
    if (orig && dp_inject_write(in, scratch, orig, bytes) < 0) {
        dp_err_set(err, "restoring %zu stack bytes of thread %d at %#llx failed: %s",
                   bytes, (int)t->tid, (unsigned long long)scratch, strerror(errno));
        free(orig);
        free(iov);
        return -1;
    }
    free(orig);
    free(iov);
    if (!use_pm && zap_each(in, t, &saved, r, n, err) < 0)
        return -1;
    return 0;
}

static void requeue(struct dp_inject *in, struct dp_inject_thread *t)
{
    for (int k = 0; k < t->npend; k++) {
        siginfo_t *si = &t->pend[k].info;
        /* rt_tgsigqueueinfo refuses si_code >= 0 for another process. */
        if (si->si_code < 0 &&
            syscall(SYS_rt_tgsigqueueinfo, in->pid, t->tid, si->si_signo, si) == 0)
            continue;
        syscall(SYS_tgkill, in->pid, t->tid, si->si_signo);
    }
    in->st.signals_forwarded += (uint64_t)t->npend;
    t->npend = 0;
}

/* A seized thread that cannot be detached (ESRCH: it is not in a stop; it
 * was killed, exited, or has an interrupt still pending). As its tracer we
 * must collect its exit: a ptraced zombie is reported to the tracer first,
 * and until then its real parent's wait() never sees it (a forked child's
 * parent would wait forever). A stop that arrives is detached instead.
 * Bounded: about 1 s. */
static void release_gone(pid_t tid)
{
    for (int i = 0; i < 1000; i++) {
        int st;
        pid_t r = waitpid(tid, &st, WNOHANG | __WALL);
        if (r < 0 || (r == tid && (WIFEXITED(st) || WIFSIGNALED(st))))
            return;
        if (r == tid && WIFSTOPPED(st) && ptrace(PTRACE_DETACH, tid, 0, 0) == 0)
            return;
        struct timespec ts = {0, 1000000};
        nanosleep(&ts, NULL);
    }
}

int dp_inject_resume(struct dp_inject *in, int detach, struct dp_err *err)
{
    int bad = 0;
    for (size_t i = 0; i < in->n; i++) {
        struct dp_inject_thread *t = &in->t[i];
        if (!t->seized)
            continue;
        long r;
        if (detach) {
            /* a group-stopped thread re-enters the group stop on detach */
            r = ptrace(PTRACE_DETACH, t->tid, 0, 0);
            if (r < 0 && errno == ESRCH)
                release_gone(t->tid);
            t->seized = 0;
        } else {
            ptrace(PTRACE_SETOPTIONS, t->tid, 0, (void *)exitkill(in)); /* seccomp applies again */
            r = ptrace(t->group_stop ? PTRACE_LISTEN : PTRACE_CONT, t->tid, 0, 0);
        }
        if (r < 0 && errno != ESRCH)
            bad = errno;
        t->stopped = 0;
        requeue(in, t);
    }
    in->all_stopped = 0;
    if (detach) {
        for (size_t i = 0; i < in->n; i++)
            free(in->t[i].pend);
        in->n = 0;
    }
    if (bad) {
        dp_err_set(err, "resuming process %d: %s", (int)in->pid, strerror(bad));
        return -1;
    }
    return 0;
}

int dp_inject_service(struct dp_inject *in)
{
    int handled = 0;
    for (size_t i = 0; i < in->n;) {
        struct dp_inject_thread *t = &in->t[i];
        if (!t->seized || t->stopped) {
            i++;
            continue;
        }
        int st;
        pid_t r = waitpid(t->tid, &st, WNOHANG | __WALL);
        if (r == 0) {
            i++;
            continue;
        }
        handled++;
        if (r < 0 || WIFEXITED(st) || WIFSIGNALED(st)) {
            drop_thread(in, t);
            continue;
        }
        if (WIFSTOPPED(st)) {
            int event = (st >> 16) & 0xff;
            int sig = WSTOPSIG(st);
            if (event == PTRACE_EVENT_STOP)
                ptrace(is_stop_signal(sig) ? PTRACE_LISTEN : PTRACE_CONT, t->tid, 0, 0);
            else if (event)
                ptrace(PTRACE_CONT, t->tid, 0, 0);
            else {
                ptrace(PTRACE_CONT, t->tid, 0, (void *)(long)sig);
                in->st.signals_forwarded++;
            }
        }
        i++;
    }
    return handled;
}

void dp_inject_close(struct dp_inject *in)
{
    if (in->n)
        dp_inject_resume(in, 1, NULL);
    for (size_t i = 0; i < in->n; i++)
        free(in->t[i].pend);
    if (in->memfd >= 0)
        close(in->memfd);
    in->memfd = -1;
    free(in->t);
    in->t = NULL;
    in->n = in->cap = 0;
}
