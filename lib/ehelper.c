/* ehelper: the injected eviction helper thread. See ehelper.h. */
#include "ehelper.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <time.h>
#include <sys/ioctl.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <linux/userfaultfd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/uio.h>

#ifndef __NR_pidfd_open
#define __NR_pidfd_open 434
#endif
#ifndef __NR_pidfd_getfd
#define __NR_pidfd_getfd 438
#endif

/* ======================================================================
 * The helper's code (x86-64, position independent).
 *
 * Copied byte for byte into the target's code page. Its parameter block
 * (eh_sock, eh_buf, eh_bufsz) is patched in the copy. The first instruction
 * is the `syscall` the daemon injects clone() on: the parent thread is
 * single-stepped over it (and gets its registers back), the new thread
 * starts at eh_child with rax = 0 and rsp = the top of its stack page.
 * Registers kept across syscalls: r12-r15 (the kernel clobbers rcx, r11).
 * ====================================================================== */
__asm__(".pushsection .text\n"
        ".p2align 4\n"
        ".globl dp_eh_blob_start\n"
        ".globl dp_eh_blob_end\n"
        ".globl dp_eh_blob_params\n"
        "dp_eh_blob_start:\n"
        "  syscall\n"
        "eh_child:\n"
        "  pushfq\n"                         /* no trap flag inherited from the step */
        "  andq $-257, (%rsp)\n"
        "  popfq\n"
        "  movl $14, %eax\n"                  /* rt_sigprocmask(SIG_SETMASK, &all, NULL, 8) */
        "  movl $2, %edi\n"
        "  leaq eh_allset(%rip), %rsi\n"
        "  xorl %edx, %edx\n"
        "  movl $8, %r10d\n"
        "  syscall\n"
        "  movl $157, %eax\n"                 /* prctl(PR_SET_NAME, "dp-evict") */
        "  movl $15, %edi\n"
        "  leaq eh_name(%rip), %rsi\n"
        "  syscall\n"
        "eh_loop:\n"
        "  xorl %eax, %eax\n"                 /* n = read(sock, buf, bufsz) */
        "  movq eh_sock(%rip), %rdi\n"
        "  movq eh_buf(%rip), %rsi\n"
        "  movq eh_bufsz(%rip), %rdx\n"
        "  syscall\n"
        "  cmpq $-4, %rax\n"                  /* EINTR cannot happen (signals blocked); retry anyway */
        "  je eh_loop\n"
        "  testq %rax, %rax\n"
        "  jle eh_exit\n"
        "  movq %rax, %r14\n"                 /* r14 = n */
        "  movq eh_buf(%rip), %r12\n"
        "  movq (%r12), %r13\n"               /* r13 = number of entries */
        "  cmpq $341, %r13\n"                 /* (bufsz - 8) / 48 */
        "  ja eh_reply\n"
        "  imulq $48, %r13, %r13\n"
        "  leaq 8(%r12,%r13), %r13\n"         /* r13 = end of entries */
        "  leaq (%r12,%r14), %r15\n"
        "  cmpq %r15, %r13\n"                 /* entries beyond what was read: run none */
        "  ja eh_reply\n"
        "  addq $8, %r12\n"
        "eh_ent:\n"
        "  cmpq %r13, %r12\n"
        "  jae eh_reply\n"
        "  movq (%r12), %rax\n"
        "  movq 8(%r12), %rdi\n"
        "  movq 16(%r12), %rsi\n"
        "  movq 24(%r12), %rdx\n"
        "  movq 32(%r12), %r10\n"
        "  syscall\n"
        "  movq %rax, 40(%r12)\n"
        "  addq $48, %r12\n"
        "  jmp eh_ent\n"
        "eh_reply:\n"
        "  movl $1, %eax\n"                   /* write(sock, buf, n) */
        "  movq eh_sock(%rip), %rdi\n"
        "  movq eh_buf(%rip), %rsi\n"
        "  movq %r14, %rdx\n"
        "  syscall\n"
        "  jmp eh_loop\n"
        "eh_exit:\n"
        "  movl $60, %eax\n"                  /* exit(0): this thread only */
        "  xorl %edi, %edi\n"
        "  syscall\n"
        "  ud2\n"
        ".p2align 3\n"
        "dp_eh_blob_params:\n"
        "eh_sock:  .quad -1\n"
        "eh_buf:   .quad 0\n"
        "eh_bufsz: .quad 0\n"
        "eh_allset: .quad -1\n"
        "eh_name:  .asciz \"" DP_EH_NAME "\"\n"
        ".p2align 3\n"
        "dp_eh_blob_end:\n"
        ".popsection\n");

extern const uint8_t dp_eh_blob_start[], dp_eh_blob_end[], dp_eh_blob_params[];

struct eh_params {
    int64_t sock;
    uint64_t buf, bufsz;
};

#define EH_MAX_ENTRIES ((DP_EH_BUF_BYTES - 8) / sizeof(struct dp_eh_entry))
#define EH_STACK 4096UL
#define EH_DATA (EH_STACK + DP_EH_BUF_BYTES)
#define EH_SCRATCH (DP_EH_SCRATCH_PAGES * DP_PAGE_SIZE)
#define EH_MAP (DP_PAGE_SIZE + EH_DATA + EH_SCRATCH) /* code | data (stack, buffer) | scratch */
#define EH_WAIT_NS (2000ULL * 1000000ULL)     /* a reply or a thread exit: 2 s */

/* ======================================================================
 * Pure part: request layout and reply validation
 * ====================================================================== */

/* The request is [u64 count][count entries][count uffdio_move]: each entry
 * is ioctl(uffd2, UFFDIO_MOVE, &move[i]) with the address the move struct
 * will have inside the target's buffer. */
size_t dp_eh_build_move(uint8_t *msg, size_t cap, uint64_t buf, int uffd2, uint64_t scratch_base,
                        struct dp_eh_run *runs, size_t n)
{
    size_t need = 8 + n * (sizeof(struct dp_eh_entry) + sizeof(struct dp_uffdio_move));
    if (n == 0 || n > EH_MAX_ENTRIES || need > cap || need > DP_EH_BUF_BYTES)
        return 0;
    uint64_t off = 0;
    for (size_t i = 0; i < n; i++) {
        if (runs[i].npages == 0 || runs[i].src % DP_PAGE_SIZE)
            return 0;
        off += (uint64_t)runs[i].npages * DP_PAGE_SIZE;
        if (off > EH_SCRATCH)
            return 0;
    }
    uint64_t cnt = n;
    memcpy(msg, &cnt, 8);
    struct dp_eh_entry *e = (struct dp_eh_entry *)(void *)(msg + 8);
    size_t moves_off = 8 + n * sizeof(struct dp_eh_entry);
    off = 0;
    for (size_t i = 0; i < n; i++) {
        struct dp_uffdio_move mv = {.dst = scratch_base + off, .src = runs[i].src,
                                    .len = (uint64_t)runs[i].npages * DP_PAGE_SIZE, .mode = 0, .move = 0};
        memcpy(msg + moves_off + i * sizeof(mv), &mv, sizeof(mv));
        struct dp_eh_entry ent = {.nr = __NR_ioctl,
                                  .a = {(uint64_t)uffd2, DP_UFFDIO_MOVE, buf + moves_off + i * sizeof(mv), 0},
                                  .ret = 0};
        memcpy(&e[i], &ent, sizeof(ent));
        runs[i].scratch = scratch_base + off;
        runs[i].moved = 0;
        runs[i].err = 0;
        off += mv.len;
    }
    return need;
}

/* A move entry's outcome: the ioctl's return and the move field (bytes moved
 * or -errno). Anything outside what the kernel can write is refused. */
int dp_eh_parse_move(const uint8_t *reply, size_t len, const uint8_t *req, size_t reqlen,
                     struct dp_eh_run *runs, size_t n)
{
    size_t moves_off = 8 + n * sizeof(struct dp_eh_entry);
    if (len != reqlen || reqlen != moves_off + n * sizeof(struct dp_uffdio_move))
        return -1;
    uint64_t cnt;
    memcpy(&cnt, reply, 8);
    if (cnt != n)
        return -1;
    for (size_t i = 0; i < n; i++) {
        struct dp_eh_entry e, e0;
        struct dp_uffdio_move mv, mv0;
        memcpy(&e, reply + 8 + i * sizeof(e), sizeof(e));
        memcpy(&e0, req + 8 + i * sizeof(e0), sizeof(e0));
        memcpy(&mv, reply + moves_off + i * sizeof(mv), sizeof(mv));
        memcpy(&mv0, req + moves_off + i * sizeof(mv0), sizeof(mv0));
        /* the helper may only have written ret and move */
        if (e.nr != e0.nr || memcmp(e.a, e0.a, sizeof(e.a)) || mv.dst != mv0.dst || mv.src != mv0.src ||
            mv.len != mv0.len || mv.mode != mv0.mode)
            return -1;
        if (e.ret > 0 || e.ret < -4095)
            return -1;
        uint64_t moved;
        if (e.ret == 0) {
            if (mv.move != (int64_t)mv.len)
                return -1;
            moved = mv.len;
        } else if (mv.move >= 0) {         /* partial: a prefix moved, then an error */
            if ((uint64_t)mv.move >= mv.len || mv.move % (int64_t)DP_PAGE_SIZE)
                return -1;
            moved = (uint64_t)mv.move;
        } else {
            if (mv.move < -4095)
                return -1;
            moved = 0;
        }
        runs[i].moved = (uint32_t)(moved / DP_PAGE_SIZE);
        runs[i].err = e.ret == 0 ? 0 : (int)(mv.move < 0 ? -mv.move : -e.ret);
        runs[i].scratch = mv.dst;
    }
    return 0;
}

/* Only a "\nSeccomp:" line counts (never the first line of the file). */
int dp_eh_seccomp_mode(const char *status)
{
    const char *p = strstr(status, "\nSeccomp:");
    if (!p)
        return -1;
    p += 9;
    while (*p == ' ' || *p == '\t')
        p++;
    if (*p < '0' || *p > '2' || (p[1] != '\n' && p[1] != '\0'))
        return -1;
    return *p - '0';
}

/* ======================================================================
 * Channel I/O
 * ====================================================================== */

/* Sends one request to the helper. */
static int eh_send(struct dp_ehelper *h, const uint8_t *msg, size_t len, struct dp_err *err)
{
    if (h->sock < 0) {
        dp_err_set(err, "helper of task %d is not installed", (int)h->pid);
        return -1;
    }
    ssize_t w = send(h->sock, msg, len, MSG_NOSIGNAL);
    if (w != (ssize_t)len) {
        dp_err_set(err, "sending to the helper of task %d failed: %s (the task may have exited or exec'd)",
                   (int)h->pid, w < 0 ? strerror(errno) : "short send");
        return -1;
    }
    return 0;
}

/* Waits for the reply to the request sent last, serving the daemon's events
 * meanwhile (a thread of the target may be blocked on a fault the daemon
 * must serve before the helper's call can finish, e.g. on mmap_lock).
 * stop_ok: return 1 as soon as the helper thread is seen stopped (a stopped
 * task answers nothing until it runs again, and the daemon's loop must not
 * wait for it that long); else a stop is waited out, bounded. */
static int eh_wait(struct dp_ehelper *h, uint8_t *reply, size_t rcap, size_t *rlen, dp_eh_pump pump, void *arg,
                   int stop_ok, struct dp_err *err)
{
    uint64_t t0 = dp_now_ns();
    for (;;) {
        ssize_t r = recv(h->sock, reply, rcap, MSG_DONTWAIT);
        if (r > 0) {
            *rlen = (size_t)r;
            break;
        }
        if (r == 0 || (errno != EAGAIN && errno != EINTR)) {
            dp_err_set(err, "the helper of task %d is gone (%s)", (int)h->pid, r == 0 ? "EOF" : strerror(errno));
            return -1;
        }
        uint64_t waited = dp_now_ns() - t0;
        if (stop_ok && !dp_ehelper_runnable(h))
            return 1;
        if (waited > EH_WAIT_NS && dp_inject_thread_exiting(h->pid, h->tid)) {
            dp_err_set(err, "the helper thread %d of task %d exited", (int)h->tid, (int)h->pid);
            return -1;
        }
        if (waited > 5 * EH_WAIT_NS) {
            dp_err_set(err, "the helper thread %d of task %d did not answer within %llu s", (int)h->tid,
                       (int)h->pid, (unsigned long long)(5 * EH_WAIT_NS / 1000000000ULL));
            return -1;
        }
        if (pump) {
            if (pump(arg, h->sock) < 0) {
                dp_err_set(err, "waiting for the helper of task %d: the event pump failed", (int)h->pid);
                return -1;
            }
        } else {
            struct pollfd p = {.fd = h->sock, .events = POLLIN};
            poll(&p, 1, 100);
        }
    }
    uint64_t dt = dp_now_ns() - t0;
    h->st.calls++;
    h->st.call_ns_sum += dt;
    if (dt > h->st.call_ns_max)
        h->st.call_ns_max = dt;
    return 0;
}

/* One request and its reply (a stop of the task is waited out, bounded). */
static int eh_call(struct dp_ehelper *h, const uint8_t *msg, size_t len, uint8_t *reply, size_t rcap,
                   size_t *rlen, dp_eh_pump pump, void *arg, struct dp_err *err)
{
    if (eh_send(h, msg, len, err) < 0)
        return -1;
    return eh_wait(h, reply, rcap, rlen, pump, arg, 0, err);
}

/* The helper thread's state letter in /proc decides: a stopped thread
 * cannot answer, and the daemon must not wait for it. */
int dp_ehelper_runnable(const struct dp_ehelper *h)
{
    char path[64], buf[512];
    if (h->sock < 0 || h->tid <= 0)
        return 0;
    snprintf(path, sizeof(path), "/proc/%d/task/%d/stat", (int)h->pid, (int)h->tid);
    if (dp_read_small(path, buf, sizeof(buf)) < 0)
        return 0;
    char *p = strrchr(buf, ')');
    return p && p[1] == ' ' && p[2] != 'T' && p[2] != 't' && p[2] != 'Z' && p[2] != 'X';
}

/* One request for all runs, one reply; the bookkeeping of what moved. */
int dp_ehelper_move(struct dp_ehelper *h, struct dp_eh_run *runs, size_t n, dp_eh_pump pump, void *arg,
                    struct dp_err *err)
{
    static _Thread_local uint8_t msg[DP_EH_BUF_BYTES], reply[DP_EH_BUF_BYTES];
    if (h->scratch_used) {
        dp_err_set(err, "helper of task %d: scratch still holds moved pages (drop them first)", (int)h->pid);
        return -1;
    }
    size_t len = dp_eh_build_move(msg, sizeof(msg), h->buf, h->t_uffd, h->scratch, runs, n);
    if (!len) {
        dp_err_set(err, "helper move: %zu runs do not fit one request (max %d pages)", n, DP_EH_SCRATCH_PAGES);
        return -1;
    }
    size_t rlen = 0;
    if (eh_call(h, msg, len, reply, sizeof(reply), &rlen, pump, arg, err) < 0)
        return -1;
    if (dp_eh_parse_move(reply, rlen, msg, len, runs, n) < 0) {
        dp_err_set(err, "the helper of task %d sent a malformed reply (%zu bytes)", (int)h->pid, rlen);
        return -1;
    }
    uint64_t used = 0;
    for (size_t i = 0; i < n; i++) {
        h->st.moved_pages += runs[i].moved;
        uint32_t rest = runs[i].npages - runs[i].moved;
        if (runs[i].err == EBUSY)
            h->st.busy_pages += rest;
        else
            h->st.other_fail_pages += rest;
        if (runs[i].moved)
            used = runs[i].scratch + (uint64_t)runs[i].moved * DP_PAGE_SIZE - h->scratch;
    }
    h->scratch_used = used;
    return 0;
}

/* One madvise entry over the used part of scratch. */
int dp_ehelper_drop(struct dp_ehelper *h, dp_eh_pump pump, void *arg, struct dp_err *err)
{
    if (!h->scratch_used)
        return 0;
    struct {
        uint64_t cnt;
        struct dp_eh_entry e;
    } m = {1, {.nr = __NR_madvise, .a = {h->scratch, h->scratch_used, MADV_DONTNEED, 0}, .ret = 0}}, r = {0};
    size_t rlen = 0;
    if (eh_call(h, (const uint8_t *)&m, sizeof(m), (uint8_t *)&r, sizeof(r), &rlen, pump, arg, err) < 0)
        return -1;
    if (rlen != sizeof(r) || r.cnt != 1 || r.e.nr != m.e.nr || r.e.ret != 0) {
        dp_err_set(err, "the helper of task %d could not drop its scratch (ret %lld)", (int)h->pid,
                   rlen == sizeof(r) ? (long long)r.e.ret : 0LL);
        return -1;
    }
    h->st.drops++;
    h->scratch_used = 0;
    return 0;
}

/* ======================================================================
 * Install and teardown (threads stopped by lib/inject)
 * ====================================================================== */

/* Seccomp is the one reason known from outside (docs in ehelper.h). */
int dp_ehelper_allowed(pid_t pid, struct dp_err *err)
{
    char path[64], buf[4096];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    if (dp_read_small(path, buf, sizeof(buf)) < 0) {
        dp_err_set(err, "cannot read %s (did task %d exit?)", path, (int)pid);
        return -1;
    }
    int mode = dp_eh_seccomp_mode(buf);
    if (mode != 0) {
        dp_err_set(err, "task %d runs under seccomp (mode %d): its filter would also judge the helper's "
                   "calls and may kill the process, so eviction keeps the ptrace path", (int)pid, mode);
        return -1;
    }
    return 0;
}

/* One injected call; a negative return is a failure named after what. */
static int inj(struct dp_inject *in, long nr, uint64_t a0, uint64_t a1, uint64_t a2, uint64_t a3, uint64_t a4,
               long *ret, const char *what, struct dp_err *err)
{
    uint64_t a[6] = {a0, a1, a2, a3, a4, 0};
    if (dp_inject_syscall(in, nr, a, ret, err) < 0)
        return -1;
    if (*ret < 0 && *ret > -4096) {
        dp_err_set(err, "helper install in task %d: %s failed: %s", (int)in->pid, what, strerror((int)-*ret));
        return -1;
    }
    return 0;
}

/* Undoes what install created inside the (stopped) target: the one
 * mapping (code, data and scratch) and both descriptors. */
static void eh_undo(struct dp_ehelper *h, struct dp_inject *in)
{
    long r;
    struct dp_err e2;
    if (h->code)
        inj(in, __NR_munmap, h->code, EH_MAP, 0, 0, 0, &r, "munmap", &e2);
    if (h->t_uffd >= 0)
        inj(in, __NR_close, (uint64_t)h->t_uffd, 0, 0, 0, 0, &r, "close", &e2);
    if (h->t_sock >= 0)
        inj(in, __NR_close, (uint64_t)h->t_sock, 0, 0, 0, 0, &r, "close", &e2);
    h->code = h->data = h->scratch = 0;
    h->t_uffd = h->t_sock = -1;
}

/* Code, data and scratch in one private anonymous mapping (three injected
 * calls instead of six, each a ptrace round trip with every thread stopped):
 * mmap RW, the code page made RX (its own VMA), the whole MADV_DONTFORK.
 * Scratch stays RW like the victims it receives (MOVE needs the same
 * protection on both sides). */
static int eh_map(struct dp_ehelper *h, struct dp_inject *in, struct dp_err *err)
{
    long r;
    if (inj(in, __NR_mmap, 0, EH_MAP, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, (uint64_t)-1, &r,
            "mmap", err) < 0)
        return -1;
    h->code = (uint64_t)r;
    h->data = h->code + DP_PAGE_SIZE;
    h->scratch = h->data + EH_DATA;
    if (inj(in, __NR_mprotect, h->code, DP_PAGE_SIZE, PROT_READ | PROT_EXEC, 0, 0, &r, "mprotect", err) < 0)
        return -1;
    return inj(in, __NR_madvise, h->code, EH_MAP, MADV_DONTFORK, 0, 0, &r, "madvise(MADV_DONTFORK)", err);
}

/* Creates uffd2 (user-mode faults only, MOVE feature) and registers scratch
 * with it; the structs go through the data page. */
static int eh_uffd(struct dp_ehelper *h, struct dp_inject *in, struct dp_err *err)
{
    long r;
    if (inj(in, __NR_userfaultfd, O_CLOEXEC | O_NONBLOCK | UFFD_USER_MODE_ONLY, 0, 0, 0, 0, &r,
            "userfaultfd", err) < 0)
        return -1;
    h->t_uffd = (int)r;
    struct uffdio_api api = {.api = UFFD_API, .features = UFFD_FEATURE_MOVE};
    if (dp_inject_write(in, h->buf, &api, sizeof(api)) < 0) {
        dp_err_set(err, "helper install: writing task %d's memory failed: %s", (int)h->pid, strerror(errno));
        return -1;
    }
    if (inj(in, __NR_ioctl, (uint64_t)h->t_uffd, UFFDIO_API, h->buf, 0, 0, &r,
            "UFFDIO_API with UFFD_FEATURE_MOVE (kernel older than 6.8?)", err) < 0)
        return -1;
    struct uffdio_register reg = {.range = {.start = h->scratch, .len = EH_SCRATCH},
                                  .mode = UFFDIO_REGISTER_MODE_MISSING};
    if (dp_inject_write(in, h->buf, &reg, sizeof(reg)) < 0) {
        dp_err_set(err, "helper install: writing task %d's memory failed: %s", (int)h->pid, strerror(errno));
        return -1;
    }
    return inj(in, __NR_ioctl, (uint64_t)h->t_uffd, UFFDIO_REGISTER, h->buf, 0, 0, &r,
               "UFFDIO_REGISTER of the scratch area", err);
}

/* socketpair in the target; the daemon's end is taken with pidfd_getfd and
 * closed in the target, so only the daemon and the helper hold an end. */
static int eh_channel(struct dp_ehelper *h, struct dp_inject *in, struct dp_err *err)
{
    long r;
    if (inj(in, __NR_socketpair, AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, h->buf, 0, &r, "socketpair",
            err) < 0)
        return -1;
    int sv[2];
    if (dp_inject_read(in, h->buf, sv, sizeof(sv)) < 0) {
        dp_err_set(err, "helper install: reading task %d's memory failed: %s", (int)h->pid, strerror(errno));
        return -1;
    }
    h->t_sock = sv[1];
    int pidfd = (int)syscall(__NR_pidfd_open, h->pid, 0);
    if (pidfd < 0) {
        dp_err_set(err, "pidfd_open(%d) failed: %s", (int)h->pid, strerror(errno));
        inj(in, __NR_close, (uint64_t)sv[0], 0, 0, 0, 0, &r, "close", err);
        return -1;
    }
    h->sock = (int)syscall(__NR_pidfd_getfd, pidfd, sv[0], 0);
    int e = errno;
    close(pidfd);
    inj(in, __NR_close, (uint64_t)sv[0], 0, 0, 0, 0, &r, "close", err);
    if (h->sock < 0) {
        dp_err_set(err, "pidfd_getfd on task %d failed: %s (needs ptrace access to it)", (int)h->pid, strerror(e));
        return -1;
    }
    return 0;
}

/* The thread of in's process that inject does not know (the helper just
 * cloned, all others being stopped), or 0. */
static pid_t eh_new_tid(struct dp_inject *in)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/task", (int)in->pid);
    DIR *dir = opendir(path);
    if (!dir)
        return 0;
    pid_t found = 0;
    struct dirent *de;
    while (!found && (de = readdir(dir))) {
        pid_t tid = (pid_t)atoi(de->d_name);
        if (tid <= 0)
            continue;
        int known = 0;
        for (size_t i = 0; i < in->n && !known; i++)
            known = in->t[i].tid == tid;
        if (!known)
            found = tid;
    }
    closedir(dir);
    return found;
}

/* Copies the blob with its parameters into the code page and starts the
 * thread with clone() injected on the blob's own syscall instruction. */
static int eh_thread(struct dp_ehelper *h, struct dp_inject *in, struct dp_err *err)
{
    size_t blen = (size_t)(dp_eh_blob_end - dp_eh_blob_start);
    uint8_t page[DP_PAGE_SIZE];
    if (blen > sizeof(page)) {
        dp_err_set(err, "helper code is %zu bytes, more than a page", blen);
        return -1;
    }
    memcpy(page, dp_eh_blob_start, blen);
    struct eh_params p = {.sock = h->t_sock, .buf = h->buf, .bufsz = DP_EH_BUF_BYTES};
    memcpy(page + (dp_eh_blob_params - dp_eh_blob_start), &p, sizeof(p));
    if (dp_inject_write(in, h->code, page, blen) < 0) {
        dp_err_set(err, "helper install: writing the code page of task %d failed: %s", (int)h->pid,
                   strerror(errno));
        return -1;
    }
    uint64_t saved = in->syscall_insn;
    in->syscall_insn = h->code;
    long r;
    int rc = inj(in, __NR_clone,
                 CLONE_VM | CLONE_FS | CLONE_FILES | CLONE_SIGHAND | CLONE_THREAD | CLONE_SYSVSEM,
                 h->data + EH_STACK, 0, 0, 0, &r, "clone", err);
    in->syscall_insn = saved;
    if (rc < 0)
        return -1;
    /* clone returned the tid in the task's own pid namespace (a container's
     * is not ours): the new thread is the one entry of /proc/PID/task that
     * is none of the threads inject stopped */
    for (int tries = 0; tries < 1000 && h->tid <= 0; tries++) {
        h->tid = eh_new_tid(in);
        if (h->tid <= 0) {
            struct timespec ts = {0, 100000};
            nanosleep(&ts, NULL);
        }
    }
    if (h->tid <= 0) {
        dp_err_set(err, "helper install in task %d: its new thread (tid %ld inside) is not in /proc/%d/task",
                   (int)h->pid, r, (int)h->pid);
        return -1;
    }
    return 0;
}

/* Phase boundary: the time since *t0 goes to *ns, *t0 moves on. */
static void eh_phase(uint64_t *ns, uint64_t *t0)
{
    uint64_t now = dp_now_ns();
    *ns = now - *t0;
    *t0 = now;
}

/* One mapping, uffd2, channel, thread: 9 injected calls, undone on any
 * failure. The handshake is dp_ehelper_check's, after the threads resume. */
int dp_ehelper_install(struct dp_ehelper *h, struct dp_inject *in, struct dp_err *err)
{
    memset(h, 0, sizeof(*h));
    h->pid = in->pid;
    h->sock = h->t_sock = h->t_uffd = -1;
    if (dp_ehelper_allowed(h->pid, err) < 0)
        return -1;
    for (size_t i = 0; i < in->n; i++)
        if (in->t[i].group_stop) {
            /* a thread cloned now would join the group stop: no answer */
            dp_err_set(err, "task %d is stopped by job control (SIGSTOP); the helper waits for it to run",
                       (int)h->pid);
            return -1;
        }
    uint64_t t0 = dp_now_ns();
    if (eh_map(h, in, err) < 0)
        goto fail;
    h->buf = h->data + EH_STACK;
    eh_phase(&h->st.install_map_ns, &t0);
    if (eh_uffd(h, in, err) < 0)
        goto fail;
    eh_phase(&h->st.install_uffd_ns, &t0);
    if (eh_channel(h, in, err) < 0)
        goto fail;
    eh_phase(&h->st.install_channel_ns, &t0);
    if (eh_thread(h, in, err) < 0)
        goto fail;
    eh_phase(&h->st.install_thread_ns, &t0);
    return 0;
fail:
    if (h->sock >= 0)
        close(h->sock);
    h->sock = -1;
    eh_undo(h, in);
    return -1;
}

int dp_ehelper_check(struct dp_ehelper *h, dp_eh_pump pump, void *arg, struct dp_err *err)
{
    /* The thread runs untraced already; a request with no entries proves
     * the loop works before any page is trusted to it. */
    uint64_t zero = 0, back = 1, t0 = dp_now_ns();
    size_t rlen = 0;
    if (!h->check_sent) {
        if (eh_send(h, (const uint8_t *)&zero, 8, err) < 0)
            return -1;
        h->check_sent = 1;
    }
    int rc = eh_wait(h, (uint8_t *)&back, 8, &rlen, pump, arg, 1, err);
    if (rc == 1)
        return 1; /* stopped before it answered: the request stays out */
    h->check_sent = 0;
    if (rc < 0 || rlen != 8 || back != 0) {
        if (!err->msg[0])
            dp_err_set(err, "the helper of task %d did not answer its first request", (int)h->pid);
        return -1;
    }
    eh_phase(&h->st.install_check_ns, &t0);
    return 0;
}

/* EOF first (the thread leaves its loop), then its memory, never before. */
int dp_ehelper_teardown(struct dp_ehelper *h, struct dp_inject *in, struct dp_err *err)
{
    if (h->sock >= 0)
        close(h->sock);
    h->sock = -1;
    if (!in)
        return 0;
    uint64_t t0 = dp_now_ns();
    while (h->tid > 0 && !dp_inject_thread_exiting(h->pid, h->tid)) {
        if (dp_now_ns() - t0 > EH_WAIT_NS) {
            dp_err_set(err, "helper thread %d of task %d did not exit after its channel closed; its pages "
                       "stay mapped", (int)h->tid, (int)h->pid);
            return -1;
        }
        struct timespec ts = {0, 200000};
        nanosleep(&ts, NULL);
    }
    int was = in->all_stopped;
    if (!was && dp_inject_stop(in, err) < 0)
        return -1;
    eh_undo(h, in);
    if (!was && dp_inject_resume(in, 1, err) < 0)
        return -1;
    h->tid = 0;
    return 0;
}
