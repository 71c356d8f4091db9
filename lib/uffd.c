/* uffd: userfaultfd ioctls and CRIU's lazy-pages socket protocol (see uffd.h). */
#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <unistd.h>
#include <sys/ioctl.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/un.h>

#include "uffd.h"
#include "util.h"

int dp_uffd_copy(int uffd, uint64_t dst, const void *src, uint64_t len, uint64_t *done)
{
    struct uffdio_copy c = {.dst = dst, .src = (uint64_t)(uintptr_t)src, .len = len, .mode = 0};
    int rc = ioctl(uffd, UFFDIO_COPY, &c);
    int e = errno;
    *done = c.copy > 0 ? (uint64_t)c.copy : 0;
    if (rc == 0)
        return 0;
    /* The kernel reports the real error in copy when it is negative. */
    if (c.copy < 0)
        return (int)c.copy;
    return -e;
}

int dp_uffd_zero(int uffd, uint64_t dst, uint64_t len, uint64_t *done)
{
    struct uffdio_zeropage z = {.range = {.start = dst, .len = len}, .mode = 0};
    int rc = ioctl(uffd, UFFDIO_ZEROPAGE, &z);
    int e = errno;
    *done = z.zeropage > 0 ? (uint64_t)z.zeropage : 0;
    if (rc == 0)
        return 0;
    if (z.zeropage < 0)
        return (int)z.zeropage;
    return -e;
}

/* One classifier for every caller's ladder of errnos (install, zero-fill,
 * local copies): pure, unit-tested in test_uffd_outcome. */
enum dp_uffd_outcome dp_uffd_outcome(int rc)
{
    switch (rc) {
    case 0: return DP_UFFD_DONE;
    case -EEXIST: return DP_UFFD_EXISTS;
    case -EAGAIN: return DP_UFFD_RETRY;
    case -ENOENT: return DP_UFFD_UNMAPPED;
    case -ESRCH:
    case -ENOSPC: return DP_UFFD_GONE;
    default: return DP_UFFD_FAILED;
    }
}

int dp_uffd_wake(int uffd, uint64_t start, uint64_t len)
{
    struct uffdio_range r = {.start = start, .len = len};
    return ioctl(uffd, UFFDIO_WAKE, &r) ? -errno : 0;
}

int dp_uffd_alive(int uffd, uint64_t some_page)
{
    struct uffdio_continue c = {.range = {.start = some_page, .len = DP_PAGE_SIZE},
                                .mode = UFFDIO_CONTINUE_MODE_DONTWAKE};
    if (ioctl(uffd, UFFDIO_CONTINUE, &c) == 0)
        return 1; /* cannot happen on anonymous memory; alive anyway */
    if (errno == ESRCH)
        return 0;
    return 1;
}

int dp_uffd_read(int uffd, struct uffd_msg *msg)
{
    for (;;) {
        ssize_t n = read(uffd, msg, sizeof(*msg));
        if (n == (ssize_t)sizeof(*msg))
            return 0;
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        return -EIO;
    }
}

int dp_lazysock_connect(const char *path)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sun.sun_path))
        return -ENAMETOOLONG;
    strcpy(sun.sun_path, path);
    int sk = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (sk < 0)
        return -errno;
    if (connect(sk, (struct sockaddr *)&sun, sizeof(sun)) < 0) {
        int e = errno;
        close(sk);
        return -e;
    }
    return sk;
}

int dp_lazysock_send_task(int sk, int32_t pid, int uffd)
{
    if (dp_write_full(sk, &pid, sizeof(pid)))
        return -errno;
    if (pid < 0)
        return 0;
    char dummy = 0;
    struct iovec iov = {.iov_base = &dummy, .iov_len = 1};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    memset(&u, 0, sizeof(u));
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
    struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
    c->cmsg_level = SOL_SOCKET;
    c->cmsg_type = SCM_RIGHTS;
    c->cmsg_len = CMSG_LEN(sizeof(int));
    memcpy(CMSG_DATA(c), &uffd, sizeof(int));
    while (sendmsg(sk, &mh, MSG_NOSIGNAL) < 0) {
        if (errno != EINTR)
            return -errno;
    }
    return 0;
}

int dp_lazysock_send_finished(int sk)
{
    uint32_t fin = DP_LAZY_RESTORE_FINISHED;
    return dp_write_full(sk, &fin, sizeof(fin)) ? -errno : 0;
}

/* Reads one dummy byte carrying an SCM_RIGHTS descriptor; *sender gets the
 * sending process's pid when the socket has SO_PASSCRED (0 otherwise). */
static int recv_fd(int sk, pid_t *sender)
{
    char dummy;
    struct iovec iov = {.iov_base = &dummy, .iov_len = 1};
    union {
        char buf[CMSG_SPACE(sizeof(int) * 4) + CMSG_SPACE(sizeof(struct ucred))];
        struct cmsghdr align;
    } u;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf, .msg_controllen = sizeof(u.buf)};
    ssize_t n;
    do {
        n = recvmsg(sk, &mh, MSG_CMSG_CLOEXEC | MSG_WAITALL);
    } while (n < 0 && errno == EINTR);
    if (n < 0)
        return -errno;
    if (n == 0)
        return -EPIPE;
    int fd = -1;
    for (struct cmsghdr *c = CMSG_FIRSTHDR(&mh); c; c = CMSG_NXTHDR(&mh, c)) {
        if (c->cmsg_level == SOL_SOCKET && c->cmsg_type == SCM_CREDENTIALS &&
            c->cmsg_len >= CMSG_LEN(sizeof(struct ucred))) {
            struct ucred cr;
            memcpy(&cr, CMSG_DATA(c), sizeof(cr));
            *sender = cr.pid;
            continue;
        }
        if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
            continue;
        size_t nfd = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
        for (size_t i = 0; i < nfd; i++) {
            int x;
            memcpy(&x, CMSG_DATA(c) + i * sizeof(int), sizeof(int));
            if (fd < 0)
                fd = x;
            else
                close(x); /* never more than one expected */
        }
    }
    return fd >= 0 ? fd : -EBADMSG;
}

int dp_lazysock_recv(int sk, int32_t *pid, int *uffd)
{
    pid_t sender;
    return dp_lazysock_recv_from(sk, pid, uffd, &sender);
}

int dp_lazysock_recv_from(int sk, int32_t *pid, int *uffd, pid_t *sender)
{
    int32_t v;
    ssize_t n;
    size_t got = 0;
    *sender = 0;
    while (got < sizeof(v)) {
        n = recv(sk, (char *)&v + got, sizeof(v) - got, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0)
            return -errno;
        if (n == 0)
            return got ? -EPIPE : 0;
        got += (size_t)n;
    }
    if ((uint32_t)v == DP_LAZY_RESTORE_FINISHED)
        return 2;
    *pid = v;
    *uffd = -1;
    if (v == 0)
        return -EBADMSG;
    if (v < 0)
        return 1;
    int fd = recv_fd(sk, sender);
    if (fd < 0)
        return fd;
    *uffd = fd;
    return 1;
}

int dp_uffd_open_criu_like(void)
{
    /* Like CRIU: no UFFD_USER_MODE_ONLY, kernel-mode faults (read() into
     * lazy memory) must reach the daemon too. */
    int uffd = (int)syscall(SYS_userfaultfd, O_CLOEXEC | O_NONBLOCK);
    if (uffd < 0)
        return -errno;
    struct uffdio_api api = {.api = UFFD_API,
                             .features = UFFD_FEATURE_EVENT_FORK | UFFD_FEATURE_EVENT_REMAP |
                                         UFFD_FEATURE_EVENT_REMOVE | UFFD_FEATURE_EVENT_UNMAP};
    if (ioctl(uffd, UFFDIO_API, &api) < 0) {
        int e = errno;
        close(uffd);
        return -e;
    }
    return uffd;
}

int dp_uffd_register_missing(int uffd, uint64_t start, uint64_t len)
{
    struct uffdio_register r = {.range = {.start = start, .len = len}, .mode = UFFDIO_REGISTER_MODE_MISSING};
    return ioctl(uffd, UFFDIO_REGISTER, &r) ? -errno : 0;
}
