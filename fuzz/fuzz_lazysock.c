/* libFuzzer target for the daemon's reader of CRIU's lazy-pages socket
 * (dp_lazysock_recv_from in lib/uffd.c, which lazyd.c's handle_criu runs on
 * every message criu restore sends): an i32 pid per task, the userfaultfd as
 * an SCM_RIGHTS descriptor on one byte after it, "RSTF" at the end. The
 * input is cut into chunks written to a local socketpair, some with a
 * descriptor attached (ctrl byte: bit 0 = attach, bits 1..4 = length - 1);
 * the reader is then run to the end of the stream. Every descriptor it hands
 * out must be open, and none may leak. */
#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "uffd.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Writes one chunk, with a descriptor (a copy of fd) attached if asked;
 * false once the socket takes no more (descriptors in flight are limited). */
static bool send_chunk(int sk, const uint8_t *p, size_t n, int fd)
{
    struct iovec iov = {.iov_base = (void *)p, .iov_len = n};
    union {
        char buf[CMSG_SPACE(sizeof(int))];
        struct cmsghdr align;
    } u;
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (fd >= 0) {
        mh.msg_control = u.buf;
        mh.msg_controllen = sizeof(u.buf);
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN(sizeof(int));
        memcpy(CMSG_DATA(c), &fd, sizeof(int));
    }
    return sendmsg(sk, &mh, MSG_NOSIGNAL | MSG_DONTWAIT) == (ssize_t)n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size > 4096)
        return 0;
    int lowest = open("/dev/null", O_RDONLY | O_CLOEXEC); /* the lowest free descriptor */
    close(lowest);
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) < 0)
        abort();
    int on = 1;
    setsockopt(sv[0], SOL_SOCKET, SO_PASSCRED, &on, sizeof(on));
    int probe = open("/dev/null", O_RDONLY | O_CLOEXEC); /* the fd a task's uffd stands in for */
    int attached = 0;
    for (size_t off = 0; off < size;) {
        uint8_t ctrl = data[off++];
        size_t n = (size_t)(ctrl >> 1 & 15) + 1;
        if (n > size - off)
            n = size - off;
        if (!n)
            break;
        bool fd = (ctrl & 1) && attached < 32;
        attached += fd;
        if (!send_chunk(sv[1], data + off, n, fd ? probe : -1))
            break; /* the reader gets what was sent, then the end */
        off += n;
    }
    close(sv[1]);
    for (int i = 0; i < 4096; i++) {
        int32_t pid = 0;
        int uffd = -1;
        pid_t sender;
        int rc = dp_lazysock_recv_from(sv[0], &pid, &uffd, &sender);
        if (rc <= 0 || rc == 2)
            break;
        if (rc != 1 || pid == 0)
            abort();
        if (pid > 0) {
            if (uffd < 0 || fcntl(uffd, F_GETFD) < 0)
                abort(); /* a task comes with an open descriptor */
            close(uffd);
        } else if (uffd != -1) {
            abort(); /* a zombie has none */
        }
    }
    close(sv[0]);
    close(probe);
    int again = open("/dev/null", O_RDONLY | O_CLOEXEC);
    close(again);
    if (again != lowest)
        abort(); /* a received descriptor leaked */
    return 0;
}
