/* inject: stop every thread of a process with ptrace and make it execute
 * system calls for us (x86-64), without writing code into it.
 *
 * Used by eviction: the process itself must run madvise(MADV_DONTNEED) on
 * the pages we drop (process_madvise from outside refuses DONTNEED), and all
 * of its threads must be stopped while the daemon reads and drops pages so
 * that no write races with the drop.
 *
 * How:
 *  - stop: PTRACE_SEIZE (with PTRACE_O_SUSPEND_SECCOMP, so the target's
 *    seccomp filter does not see injected calls) + PTRACE_INTERRUPT on every
 *    entry of /proc/PID/task, rescanning until no new thread shows up. While
 *    waiting, ops.pump is called: a thread blocked in a userfaultfd fault
 *    taken in kernel mode, or in the delivery of a uffd REMOVE event, cannot
 *    stop until the daemon serves it.
 *  - inject: on one stopped thread (not inside an rseq critical section),
 *    save the registers, point rip at a `syscall` instruction in the vDSO,
 *    load nr/args, set orig_rax = -1 (no syscall restart into our call),
 *    single-step, read rax, restore the registers exactly.
 *  - zap: the iovec array is written just below the thread's stack pointer
 *    (below the 128-byte red zone; the bytes are restored afterwards) and one
 *    process_madvise(PIDFD_SELF_THREAD_GROUP, iov, n, MADV_DONTNEED) drops up
 *    to 1024 ranges; one injected madvise per range is the fallback.
 *  - resume: PTRACE_DETACH (default) or stay seized and PTRACE_CONT.
 *
 * Signals: a signal-delivery-stop seen while stopping is delivered at once
 * (PTRACE_CONT with the signal) and the thread is interrupted again, so it
 * stops in a consistent state as if the signal had come before our stop. A
 * signal dequeued while single-stepping our call (it was pending when the
 * thread left its stop, e.g. queued real-time signals that arrived while the
 * process was stopped) is saved, in order, and re-queued to that thread
 * after its registers are restored and it is resumed: rt_tgsigqueueinfo
 * with the original siginfo when the kernel allows it (si_code < 0), else
 * tgkill (then the handler sees si_code SI_TKILL and the daemon's pid). Group-stopped threads
 * (SIGSTOP and friends) stay stopped: PTRACE_DETACH re-enters the group
 * stop, PTRACE_LISTEN is used when staying seized. Signals that arrive while
 * a thread sits in a ptrace-stop stay pending in the kernel and are delivered
 * when it runs again.
 *
 * Waiting never gives up on its own (a thread with a pending interrupt or
 * running our call cannot be abandoned); it warns every timeout_ms. Errors
 * (pump failure, ptrace failure, the process exiting) leave the process in
 * an unknown ptrace state: the caller should kill it.
 *
 * Target memory is touched (stack scratch, rseq area) only through
 * /proc/PID/mem. Such an access to a lazily managed page that is not
 * resident would fault into the daemon's own userfaultfd and block the
 * daemon on itself, so every range is first passed to ops.ensure: the daemon
 * makes it resident or refuses (then inject takes a path that needs no
 * target memory, or reports the failure).
 */
#ifndef DP_INJECT_H
#define DP_INJECT_H

#include <stdint.h>
#include <stddef.h>
#include <sys/types.h>
#include <sys/user.h>
#include <signal.h>

#include "util.h"

/* Kernel uapi (linux/fcntl.h, 6.14+): -10000 is PIDFD_SELF_THREAD. */
#define DP_PIDFD_SELF_THREAD_GROUP (-10001)
#define DP_INJECT_MAX_IOV 1024          /* UIO_MAXIOV */
#define DP_INJECT_REDZONE 128

struct dp_inject_ops {
    /* Serve pending userfaultfd faults and events, blocking for at most
     * ~100 us. Called repeatedly while waiting for threads to stop and for
     * an injected call to finish. Return < 0 to abort the wait. NULL: sleep. */
    int (*pump)(void *arg);
    /* Make [addr, addr+len) of the target resident (or confirm it is not
     * lazily managed) before inject reads or writes it through /proc/PID/mem.
     * Return 0 if it may be touched, -1 if not. NULL: always allowed. */
    int (*ensure)(void *arg, uint64_t addr, uint64_t len);
    void *arg;
    /* 1: seized threads die with their tracer (PTRACE_O_EXITKILL). The
     * daemon wants it: if it died mid-call, the threads would otherwise run
     * on with its registers until the lazy-pages guard kills the tree. */
    int exitkill;
};

struct dp_inject_sig {
    siginfo_t info;
};

struct dp_inject_thread {
    pid_t tid;
    int seized;
    int stopped;
    int group_stop;                 /* stopped by job control (SIGSTOP...) */
    struct dp_inject_sig *pend;     /* signals to re-queue on resume */
    int npend, pcap;
};

struct dp_inject_stats {
    uint64_t stops, stop_ns_last, stop_ns_max;
    uint64_t syscalls, zap_calls, zap_pages, fallback_madvise;
    uint64_t signals_forwarded, rseq_retries, rescans;
    uint64_t rseq_busy;             /* threads found inside an rseq critical section */
    pid_t last_tid;                 /* thread that ran the last injected call */
};

struct dp_inject {
    pid_t pid;
    int memfd;                      /* /proc/PID/mem */
    uint64_t syscall_insn;          /* address of 0f 05 in the vDSO */
    struct dp_inject_thread *t;
    size_t n, cap;
    int all_stopped;
    int pm_self;                    /* process_madvise(self) works: 1, no: 0, untested: -1 */
    int timeout_ms;                 /* warn every this many ms while waiting (10000) */
    pid_t prefer_tid;               /* try this thread first for injected calls (0: any) */
    struct dp_inject_ops ops;
    struct dp_inject_stats st;
};

struct dp_zap_range {
    uint64_t start, len;            /* page aligned */
    int done;                       /* out: 1 zapped, 0 skipped (overlaps the
                                       scratch area or the call failed) */
    int err;                        /* out: errno when it failed, else 0 */
};

/* Opens /proc/PID/mem, finds the vDSO syscall instruction. Nothing is
 * attached yet. Returns 0, or -1 with err set. */
int dp_inject_open(struct dp_inject *in, pid_t pid, const struct dp_inject_ops *ops, struct dp_err *err);
/* Seizes (if needed) and stops every thread. Returns 0 when all are stopped;
 * DP_INJECT_TRACED (err set) when a thread is traced by another process
 * (criu is, after it told the lazy-pages daemon "restore finished", until
 * it has detached from the tree it restored): everything this call seized
 * was let go again, nothing ran, try again later; -1 on any other failure
 * (threads in an unknown ptrace state). */
#define DP_INJECT_TRACED (-2)
int dp_inject_stop(struct dp_inject *in, struct dp_err *err);
/* The pages holding the rseq areas of the stopped threads (at most max,
 * written to out; returns how many). An injection must read a thread's rseq
 * area to know it is not inside a critical section, and a stopped thread
 * cannot fault an absent page back in: the caller keeps these pages. */
size_t dp_inject_rseq_pages(struct dp_inject *in, uint64_t *out, size_t max);
/* Runs one system call in a stopped thread. *ret is the raw rax (-errno on error). */
int dp_inject_syscall(struct dp_inject *in, long nr, const uint64_t args[6], long *ret, struct dp_err *err);
/* Drops ranges with MADV_DONTNEED inside the target, batched. Returns 0 when
 * the calls ran (check each range's done/err), -1 when injection failed. */
int dp_inject_zap(struct dp_inject *in, struct dp_zap_range *r, size_t n, struct dp_err *err);
/* Resumes every thread. detach=1: PTRACE_DETACH; detach=0: stay seized
 * (PTRACE_CONT/LISTEN), dp_inject_service must then be called regularly. */
int dp_inject_resume(struct dp_inject *in, int detach, struct dp_err *err);
/* While seized and running: forwards signal-delivery-stops and reaps exited
 * threads without blocking. Returns the number of events handled. */
int dp_inject_service(struct dp_inject *in);
/* Resumes (detaching) if needed and frees everything. */
void dp_inject_close(struct dp_inject *in);

/* 1 if thread tid of process pid is a zombie or gone. */
int dp_inject_thread_exiting(pid_t pid, pid_t tid);

/* TracerPid of a /proc/PID/status text (0: none or unreadable). */
pid_t dp_status_tracer(const char *status);

/* Reads/writes target memory through /proc/PID/mem (after ops.ensure). */
int dp_inject_read(struct dp_inject *in, uint64_t addr, void *buf, size_t len);
int dp_inject_write(struct dp_inject *in, uint64_t addr, const void *buf, size_t len);
/* Reads n whole pages at addr[i] into buf (n * 4096 bytes) with batched
 * process_vm_readv. Only for pages known resident (no ensure call). */
int dp_inject_read_pages(struct dp_inject *in, const uint64_t *addr, size_t n, uint8_t *buf);

#endif
