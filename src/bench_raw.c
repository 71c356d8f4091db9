/* The raw TCP baseline of the benchmarks: what the same link gives without
 * DistriProc. A request/response the size of a 1-page GET and its reply, and
 * a plain stream, served from memory by a loop with nothing else to do. */
#include <errno.h>
#include <signal.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

#include "bench.h"
#include "rttdelay.h"
#include "util.h"

static void set_nodelay(int fd)
{
    int one = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
}

int bench_raw_listen(const char *ip, int port)
{
    int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    if (lfd < 0)
        return -1;
    int one = 1;
    setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    if (inet_pton(AF_INET, ip, &sa.sin_addr) != 1 || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 ||
        listen(lfd, 8) < 0) {
        int e = errno;
        close(lfd);
        errno = e;
        return -1;
    }
    return lfd;
}

/* The emulated RTT is the page server's own (lib/rttdelay: a timerfd armed
 * at receive time + RTT), so the baseline sleeps exactly as the page server
 * does; a baseline woken later than the system it is compared with would
 * flatter the system. */
void bench_raw_serve(int lfd, uint64_t rtt_us)
{
    static uint8_t buf[1 << 20];
    memset(buf, 0x5a, sizeof(buf));
    signal(SIGPIPE, SIG_IGN);
    int tfd = -1;
    if (rtt_us && (tfd = dp_rtt_timer_create(0)) < 0)
        dp_die("raw TCP baseline: cannot create the RTT timer: %s (the emulated RTT needs timerfd)",
               strerror(errno));
    for (;;) {
        int fd = accept(lfd, NULL, NULL);
        if (fd < 0)
            continue;
        set_nodelay(fd);
        char mode;
        if (dp_read_full(fd, &mode, 1) < 0) {
            close(fd);
            continue;
        }
        if (mode == 'L') {
            uint8_t req[BENCH_RAW_REQ];
            while (dp_read_full(fd, req, sizeof(req)) == 0) {
                if (rtt_us && dp_rtt_wait_until(tfd, dp_rtt_due(dp_now_ns(), rtt_us)) < 0)
                    break;
                if (dp_write_full(fd, buf, BENCH_RAW_REPLY) < 0)
                    break;
            }
        } else if (mode == 'S') {
            uint64_t len;
            if (dp_read_full(fd, &len, sizeof(len)) == 0) {
                if (rtt_us && dp_rtt_wait_until(tfd, dp_rtt_due(dp_now_ns(), rtt_us)) < 0)
                    len = 0;
                while (len > 0) {
                    size_t n = len < sizeof(buf) ? (size_t)len : sizeof(buf);
                    if (dp_write_full(fd, buf, n) < 0)
                        break;
                    if (len != BENCH_RAW_ENDLESS)
                        len -= n;
                }
            }
        } else if (mode == 'Q') {
            close(fd);
            if (tfd >= 0)
                close(tfd);
            return;
        }
        close(fd);
    }
}

int bench_raw_connect(const struct sockaddr_in *sa, char mode, uint64_t stream_len)
{
    for (int tries = 0; tries < 200; tries++) {
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (fd < 0)
            return -1;
        set_nodelay(fd);
        if (connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0) {
            if (dp_write_full(fd, &mode, 1) < 0 ||
                (mode == 'S' && dp_write_full(fd, &stream_len, sizeof(stream_len)) < 0)) {
                close(fd);
                return -1;
            }
            return fd;
        }
        close(fd);
        usleep(20000); /* the server may still be starting: up to 4 s */
    }
    return -1;
}

int64_t bench_raw_roundtrip_ns(int fd)
{
    static const uint8_t req[BENCH_RAW_REQ];
    static uint8_t reply[BENCH_RAW_REPLY];
    uint64_t t0 = dp_now_ns();
    if (dp_write_full(fd, req, sizeof(req)) < 0 || dp_read_full(fd, reply, sizeof(reply)) < 0)
        return -1;
    return (int64_t)(dp_now_ns() - t0);
}
