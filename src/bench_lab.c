/* bench_lab: what benchmarks share about the lab: a command line to a
 * workload inside a lab host (forkmem, memwalk) and the lab's Redis Cluster. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "bench.h"
#include "criu.h"
#include "lab_cluster.h"
#include "orch.h"
#include "util.h"

/* The child's side of bench_line_cmd: connect inside netns, one line out,
 * one line back; the round trip and the reply go up the pipe. */
static void line_child(int wfd, const char *netns, const char *addr, int port, const char *cmd, double timeout_s,
                       size_t max)
{
    struct dp_err err;
    if (dp_netns_enter(netns, &err) < 0)
        _exit(1);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    inet_pton(AF_INET, addr, &sa.sin_addr);
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct timeval tv = {.tv_sec = (time_t)timeout_s, .tv_usec = 0};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0)
        _exit(1);
    char line[128];
    int n = snprintf(line, sizeof(line), "%s\n", cmd);
    uint64_t t0 = dp_now_ns();
    if (dp_write_full(fd, line, (size_t)n) < 0)
        _exit(1);
    char *buf = malloc(max);
    size_t got = 0;
    while (buf && got + 1 < max) {
        ssize_t r = read(fd, buf + got, max - 1 - got);
        if (r <= 0)
            _exit(1);
        got += (size_t)r;
        if (memchr(buf, '\n', got))
            break;
    }
    if (!buf)
        _exit(1);
    double dt = (double)(dp_now_ns() - t0) / 1e9;
    dp_write_full(wfd, &dt, sizeof(dt));
    dp_write_full(wfd, buf, got);
    _exit(0);
}

double bench_line_cmd(const char *netns, const char *addr, int port, const char *cmd, char *out, size_t len,
                      double timeout_s)
{
    int p[2];
    if (pipe(p) < 0)
        return -1;
    pid_t pid = fork();
    if (pid < 0) {
        close(p[0]);
        close(p[1]);
        return -1;
    }
    if (pid == 0) {
        close(p[0]);
        line_child(p[1], netns, addr, port, cmd, timeout_s, len > 0 ? len : 1);
    }
    close(p[1]);
    double dt = -1;
    if (dp_read_full(p[0], &dt, sizeof(dt)) < 0)
        dt = -1;
    size_t n = 0;
    ssize_t r;
    while (n + 1 < len && (r = read(p[0], out + n, len - 1 - n)) > 0)
        n += (size_t)r;
    if (len)
        out[n] = '\0';
    close(p[0]);
    int st;
    waitpid(pid, &st, 0);
    return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? dt : -1;
}

int bench_cluster_up(const char *self, char *seed_url, size_t len, char *ca, size_t calen, char *pass,
                     size_t passlen)
{
    const char *up[] = {self, "lab", "cluster", "up", NULL};
    char *out = NULL;
    struct dp_err err = {{0}};
    int st = dp_orch_run(up, NULL, 120, &out, -1, -1, &err);
    char *last = out ? strrchr(out, '\n') : NULL;
    while (last && last > out && last[1] == '\0') {
        *last = '\0';
        last = strrchr(out, '\n');
    }
    if (st != 0 || !out) {
        dp_error("lab cluster up failed%s%s", err.msg[0] ? ": " : "", err.msg);
        free(out);
        return -1;
    }
    snprintf(seed_url, len, "rediss://%.60s", last ? last + 1 : out);
    free(out);
    char dir[256];
    lab_cluster_dir(dir, sizeof(dir));
    snprintf(ca, calen, "%s/ca.crt", dir);
    snprintf(pass, passlen, "%s/password", dir);
    return 0;
}

void bench_cmdline(int argc, char **argv, char *buf, size_t len)
{
    size_t cl = 0;
    buf[0] = '\0';
    for (int i = 0; i < argc && cl + 2 < len; i++)
        cl += (size_t)snprintf(buf + cl, len - cl, "%s%s", i ? " " : "distriproc bench ", argv[i]);
}
