/* uffd: thin wrappers over the userfaultfd ioctls the lazy-pages daemon uses,
 * and CRIU's lazy-pages socket protocol (criu/uffd.c):
 *
 *   CRIU restore connects once to "lazy-pages.socket" in its work dir (-W)
 *   and sends, per restored task, the task's pid as a native int followed by
 *   its userfaultfd as SCM_RIGHTS on one dummy byte. A zombie is sent as its
 *   negative pid with no descriptor. When the whole restore is done it sends
 *   the uint32 DP_LAZY_RESTORE_FINISHED on the same connection and closes it.
 *   Nothing is sent back. The uffd already went through UFFDIO_API (features
 *   FORK, REMAP, REMOVE, UNMAP) and its lazy VMAs are registered in MISSING
 *   mode by the restorer.
 *
 * Every call returns 0 or a negative errno; nothing here prints. */
#ifndef DP_UFFD_H
#define DP_UFFD_H

#include <stdint.h>
#include <sys/types.h>
#include <linux/userfaultfd.h>

#define DP_LAZY_SOCK_NAME "lazy-pages.socket"
#define DP_LAZY_RESTORE_FINISHED 0x52535446u /* "RSTF", as CRIU sends it */

/* UFFDIO_COPY of len bytes; *done gets the bytes copied (also on error).
 * -EEXIST: a page is already present; -EAGAIN: the mm is changing (read
 * the pending events, then retry); -ESRCH/-ENOSPC: the process is gone. */
int dp_uffd_copy(int uffd, uint64_t dst, const void *src, uint64_t len, uint64_t *done);
int dp_uffd_zero(int uffd, uint64_t dst, uint64_t len, uint64_t *done);

/* What the result of a UFFDIO_COPY or UFFDIO_ZEROPAGE means for the caller
 * (as CRIU's uffd_check_op_error): the one place that reads its errno. */
enum dp_uffd_outcome {
    DP_UFFD_DONE,     /* 0: installed (perhaps fewer bytes than asked: see *done) */
    DP_UFFD_EXISTS,   /* -EEXIST: a page is present already; never overwrite it */
    DP_UFFD_RETRY,    /* -EAGAIN: an event is queued for the daemon: read it, then retry */
    DP_UFFD_UNMAPPED, /* -ENOENT: no registered range there (now) */
    DP_UFFD_GONE,     /* -ESRCH, -ENOSPC: the process's mm is gone */
    DP_UFFD_FAILED,   /* anything else */
};
enum dp_uffd_outcome dp_uffd_outcome(int rc);
int dp_uffd_wake(int uffd, uint64_t start, uint64_t len);
/* 1 if the uffd's process still has its mm, 0 if it is gone, <0 unknown.
 * Uses UFFDIO_CONTINUE, which fails without side effects on anonymous
 * memory while the mm lives and with ESRCH once it is gone. */
int dp_uffd_alive(int uffd, uint64_t some_page);
/* Reads one message; -EAGAIN when none. */
int dp_uffd_read(int uffd, struct uffd_msg *msg);

/* Client side of the socket protocol (what CRIU does; used by test harnesses). */
int dp_lazysock_connect(const char *path);
int dp_lazysock_send_task(int sk, int32_t pid, int uffd);  /* uffd ignored when pid < 0 */
int dp_lazysock_send_finished(int sk);

/* Daemon side: reads one message. Returns 1 with *pid and *uffd (-1 for a
 * zombie) for a task, 2 for "restore finished", 0 on EOF, <0 on error. */
int dp_lazysock_recv(int sk, int32_t *pid, int *uffd);
/* The same; *sender gets the pid (in our pid namespace) of the process that
 * sent the descriptor if the socket has SO_PASSCRED on, else 0. CRIU opens
 * and sends each uffd from the restored task itself. */
int dp_lazysock_recv_from(int sk, int32_t *pid, int *uffd, pid_t *sender);

/* Opens a uffd with the features CRIU asks for (for harnesses). */
int dp_uffd_open_criu_like(void);
int dp_uffd_register_missing(int uffd, uint64_t start, uint64_t len);

#endif
