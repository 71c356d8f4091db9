/* ehelper: an eviction helper thread injected once into a restored task, so
 * that victim pages leave the process without stopping its threads.
 *
 * Why a thread inside the target: UFFDIO_MOVE only works within the calling
 * process's own mm (from the daemon it returns EINVAL), and MADV_DONTNEED on
 * a range registered with CRIU's uffd raises UFFD_EVENT_REMOVE, blocking the
 * caller until the daemon reads it. A thread of the target can instead MOVE
 * a resident page out of CRIU's range into a scratch range registered with a
 * second uffd that the target owns: the source PTE becomes empty atomically
 * (the next touch raises a MISSING fault on CRIU's uffd, which the daemon
 * serves), the content sits in scratch where the daemon reads it with
 * process_vm_readv, and MADV_DONTNEED on scratch raises nothing (scratch is
 * not on CRIU's uffd). No application thread is stopped.
 *
 * Install (all threads stopped once with lib/inject, 9 injected calls; the
 * first request, proving the loop answers, once they run again):
 *   one private anonymous mapping, MADV_DONTFORK, of
 *   code    one page made PROT_READ|PROT_EXEC holding the helper loop below
 *           (position independent, its parameters patched in);
 *   data    one stack page and a request buffer (RW);
 *   scratch DP_EH_SCRATCH_PAGES pages, RW, registered
 *           MISSING with uffd2 = userfaultfd(UFFD_USER_MODE_ONLY) whose
 *           UFFDIO_API asked for UFFD_FEATURE_MOVE (user-mode-only: an
 *           absent scratch page read by process_vm_readv fails with EFAULT
 *           instead of blocking the daemon on a uffd nobody reads);
 *   (a forked child gets none of it);
 *   channel socketpair(AF_UNIX, SOCK_SEQPACKET|SOCK_CLOEXEC); the daemon
 *           takes one end with pidfd_getfd and closes it in the target;
 *   thread  clone(CLONE_VM|FS|FILES|SIGHAND|THREAD|SYSVSEM) injected with
 *           rip on the `syscall` at the head of the code page: the new
 *           thread starts right after it, blocks every signal, names itself
 *           "dp-evict" (visible in `ps -L`) and loops:
 *             n = read(sock, buf, bufsz); if n <= 0: exit(0)
 *             for each entry {nr, a0..a3, ret}: ret = syscall(nr, a0..a3)
 *             write(sock, buf, n)
 *   The request holds the entries and, after them, the uffdio_move structs
 *   the ioctl entries point to (addresses inside buf). The channel's other
 *   end is only held by the daemon; the target itself could make any of
 *   these calls anyway, so the loop gives nobody a new power.
 *
 * Teardown: the daemon closes its end -> read() returns 0 -> the thread
 * exits; once /proc/PID/task/TID is gone the daemon stops the task once more
 * and unmaps code, data and scratch and closes uffd2 and the socket end. It
 * must run before any later checkpoint of the tree (CRIU would otherwise
 * dump the helper thread, its uffd and socket).
 *
 * Not installed (the caller keeps the ptrace path): a task with a seccomp
 * filter or strict mode (/proc/PID/status Seccomp: != 0). A filter applies
 * to every thread the task creates, including ours, and may kill the whole
 * process (SECCOMP_RET_KILL_PROCESS) on userfaultfd/ioctl/clone it does not
 * expect; PTRACE_O_SUSPEND_SECCOMP only covers calls injected while traced
 * and needs CAP_SYS_ADMIN in the init user namespace. We cannot prove from
 * outside that the filter allows the helper's calls, so we never inject.
 * Also not: a child forked after install (it has no helper until one is
 * installed in it), and a page MOVE refuses (EBUSY: shared after fork,
 * pinned, KSM; EINVAL: a VMA with other protection) -> the ptrace path.
 */
#ifndef DP_EHELPER_H
#define DP_EHELPER_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "inject.h"
#include "util.h"

/* uapi (linux/userfaultfd.h, 6.8+), absent from older installed headers. */
#ifndef UFFD_FEATURE_MOVE
#define UFFD_FEATURE_MOVE (1ULL << 16)
#endif
#ifndef UFFD_USER_MODE_ONLY
#define UFFD_USER_MODE_ONLY 1
#endif
struct dp_uffdio_move {
    uint64_t dst, src, len, mode;
    int64_t move;                   /* out: bytes moved, or -errno */
};
#define DP_UFFDIO_MOVE 0xc028aa05UL  /* _IOWR(0xAA, 0x05, struct uffdio_move) */

#define DP_EH_SCRATCH_PAGES 256     /* at most this many pages per move call */
#define DP_EH_BUF_BYTES 16384       /* request buffer in the target */
#define DP_EH_NAME "dp-evict"
/* runs per move request: 8 + runs * (48 + 40) bytes must fit the buffer */
#define DP_EH_MAX_RUNS ((DP_EH_BUF_BYTES - 8) / 88)

/* ---- pure part: request layout ---------------------------------------- */

struct dp_eh_entry {                /* one system call the helper runs */
    uint64_t nr, a[4];
    int64_t ret;                    /* written by the helper */
};

/* One run of contiguous victim pages to move. */
struct dp_eh_run {
    uint64_t src;                   /* page aligned */
    uint32_t npages;
    uint32_t moved;                 /* out: pages moved (a prefix of the run) */
    int err;                        /* out: errno of the first page not moved, 0 if all */
    uint64_t scratch;               /* out: where the run's pages now are */
};

/* Builds the request moving runs[0..n) into scratch (back to back from
 * scratch_base) in msg (cap bytes); buf is the address msg will have in the
 * target. Returns the message length, or 0 if it does not fit (too many
 * runs/pages for the buffer or the scratch area). */
size_t dp_eh_build_move(uint8_t *msg, size_t cap, uint64_t buf, int uffd2, uint64_t scratch_base,
                        struct dp_eh_run *runs, size_t n);
/* Checks a reply (from the target: every field validated) against the
 * request and fills runs[i].moved/err/scratch. Returns 0, or -1 when the
 * reply is malformed (then nothing can be trusted: treat as not moved). */
int dp_eh_parse_move(const uint8_t *reply, size_t len, const uint8_t *req, size_t reqlen,
                     struct dp_eh_run *runs, size_t n);
/* Parses "Seccomp:\t<mode>" out of a /proc/PID/status text. Returns the
 * mode (0 none, 1 strict, 2 filter), or -1 if the line is missing. */
int dp_eh_seccomp_mode(const char *status);

/* ---- I/O part --------------------------------------------------------- */

struct dp_eh_stats {
    uint64_t calls, moved_pages, busy_pages, other_fail_pages, drops;
    uint64_t call_ns_max, call_ns_sum;
    /* install's phases (threads stopped but for check): mmap+mprotect+
     * madvise; userfaultfd+API+REGISTER; socketpair+getfd+close; code
     * write+clone+tid lookup; the first answer (threads running) */
    uint64_t install_map_ns, install_uffd_ns, install_channel_ns, install_thread_ns, install_check_ns;
};

struct dp_ehelper {
    pid_t pid, tid;                 /* task, helper thread */
    int sock;                       /* daemon's end of the channel, -1: none */
    int t_sock, t_uffd;             /* descriptor numbers inside the target */
    uint64_t code, data, scratch, buf;
    uint64_t scratch_used;          /* bytes of scratch holding moved pages */
    int check_sent;                 /* the first request is out, its reply not read */
    struct dp_eh_stats st;
};

/* Waiting for a reply: pump(arg, fd) serves the daemon's events and returns
 * when fd is readable or after at most ~100 us; < 0 aborts. NULL: poll. */
typedef int (*dp_eh_pump)(void *arg, int fd);

/* Why a task gets no helper: returns 0 if one may be installed, else -1 and
 * err says why (seccomp, no such process). */
int dp_ehelper_allowed(pid_t pid, struct dp_err *err);
/* Installs the helper; in must be open with every thread stopped (it stays
 * stopped). On failure everything created in the target is undone as far as
 * possible and h->sock is -1. The helper is not trusted with a page before
 * dp_ehelper_check answered. */
int dp_ehelper_install(struct dp_ehelper *h, struct dp_inject *in, struct dp_err *err);
/* The first request, with no entries: proves the thread's loop answers.
 * Call it once the task's threads run again (it needs no stop). 0; 1 when
 * the task is stopped (job control, a freezer) before it answered: call it
 * again once it runs (the request stays out, it is not sent twice); or -1:
 * tear the helper down (dp_ehelper_teardown with the task's inject). */
int dp_ehelper_check(struct dp_ehelper *h, dp_eh_pump pump, void *arg, struct dp_err *err);
/* 1 if the helper is installed and its thread can answer now (not in a
 * job-control or ptrace stop, not exiting): else use the ptrace path. */
int dp_ehelper_runnable(const struct dp_ehelper *h);
/* Moves the runs into scratch (the previous content of scratch must have
 * been dropped). Returns 0 with runs[i].moved/err/scratch set, or -1 when the
 * helper is gone or answered garbage (nothing moved can be assumed: the
 * caller must not treat any page as moved; call dp_ehelper_close). */
int dp_ehelper_move(struct dp_ehelper *h, struct dp_eh_run *runs, size_t n, dp_eh_pump pump, void *arg,
                    struct dp_err *err);
/* Drops the scratch pages (MADV_DONTNEED inside the target, no uffd event). */
int dp_ehelper_drop(struct dp_ehelper *h, dp_eh_pump pump, void *arg, struct dp_err *err);
/* Tears the helper down: closes the channel, waits (bounded) for the thread
 * to exit, then with in (open, its threads running: a helper seized by a
 * stop could not see the EOF; stopped here and resumed) unmaps and closes
 * what install created. in NULL: only the channel is closed (the task is
 * going away). Returns 0, or -1 if the thread did not exit in time. */
int dp_ehelper_teardown(struct dp_ehelper *h, struct dp_inject *in, struct dp_err *err);

#endif
