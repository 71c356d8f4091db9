/* orch: child processes for migrate and the benchmarks (see orch.h). */
#include "orch.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <sys/socket.h>
#include <sys/wait.h>

#include "criu.h"
#include "perm.h"

const char *dp_self_exe(void)
{
    static char path[PATH_MAX];
    if (!path[0]) {
        ssize_t n = readlink("/proc/self/exe", path, sizeof(path) - 1);
        if (n <= 0)
            snprintf(path, sizeof(path), "distriproc");
        else
            path[n] = '\0';
    }
    return path;
}

/* In the child: enter netns or die with a message on stderr. */
static void child_setns(const char *netns)
{
    struct dp_err err;
    if (netns && dp_netns_enter(netns, &err) < 0) {
        fprintf(stderr, "distriproc: %s\n", err.msg);
        _exit(126);
    }
}

static void child_exec(const char *const argv[])
{
    execvp(argv[0], (char *const *)argv);
    fprintf(stderr, "distriproc: cannot run %s: %s\n", argv[0], strerror(errno));
    _exit(127);
}

int dp_orch_run(const char *const argv[], const char *netns, double timeout_s, char **out, int out_fd,
                int err_fd, struct dp_err *err)
{
    int pfd[2] = {-1, -1};
    if (out) {
        *out = NULL;
        if (pipe2(pfd, O_CLOEXEC) < 0) {
            dp_err_set(err, "pipe: %s", strerror(errno));
            return -1;
        }
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        dp_err_set(err, "fork: %s", strerror(errno));
        if (out) {
            close(pfd[0]);
            close(pfd[1]);
        }
        return -1;
    }
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDWR);
        dup2(devnull, STDIN_FILENO);
        if (out)
            dup2(pfd[1], STDOUT_FILENO);
        else
            dup2(out_fd >= 0 ? out_fd : devnull, STDOUT_FILENO);
        if (err_fd >= 0)
            dup2(err_fd, STDERR_FILENO);
        /* Own process group: a timeout kills the whole group. */
        setpgid(0, 0);
        child_setns(netns);
        child_exec(argv);
    }
    setpgid(pid, pid);
    size_t cap = 0, len = 0;
    char *buf = NULL;
    if (out) {
        close(pfd[1]);
        dp_set_nonblock(pfd[0]);
    }
    uint64_t deadline = timeout_s > 0 ? dp_now_ns() + (uint64_t)(timeout_s * 1e9) : 0;
    int status = 0, done = 0, open_pipe = out != NULL;
    while (!done || open_pipe) {
        if (!done) {
            pid_t w = waitpid(pid, &status, WNOHANG);
            if (w == pid)
                done = 1;
        }
        if (deadline && dp_now_ns() > deadline) {
            kill(-pid, SIGKILL);
            kill(pid, SIGKILL);
            if (!done)
                waitpid(pid, &status, 0);
            if (out) {
                close(pfd[0]);
                free(buf);
            }
            dp_err_set(err, "%s did not finish within %.0f s; killed it", argv[0], timeout_s);
            return -1;
        }
        if (open_pipe) {
            struct pollfd p = {.fd = pfd[0], .events = POLLIN};
            poll(&p, 1, done ? 100 : 5);
            for (;;) {
                if (cap - len < 4096) {
                    size_t ncap = cap ? cap * 2 : 16384;
                    char *nb = realloc(buf, ncap);
                    if (!nb) {
                        dp_err_set(err, "out of memory reading the output of %s", argv[0]);
                        kill(-pid, SIGKILL);
                        if (!done)
                            waitpid(pid, &status, 0);
                        close(pfd[0]);
                        free(buf);
                        return -1;
                    }
                    buf = nb;
                    cap = ncap;
                }
                ssize_t n = read(pfd[0], buf + len, cap - len - 1);
                if (n > 0) {
                    len += (size_t)n;
                    continue;
                }
                if (n == 0) {
                    open_pipe = 0;
                    close(pfd[0]);
                }
                break;
            }
        } else if (!done) {
            usleep(1000);
        }
    }
    if (out) {
        if (!buf)
            buf = calloc(1, 1);
        else
            buf[len] = '\0';
        *out = buf;
    }
    return status;
}

pid_t dp_orch_spawn(const char *const argv[], const char *netns, const char *log, struct dp_err *err)
{
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        dp_err_set(err, "fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        setsid();
        int devnull = open("/dev/null", O_RDWR);
        int lf = log ? dp_open_log(log, NULL) : -1;
        dup2(devnull, STDIN_FILENO);
        dup2(lf >= 0 ? lf : devnull, STDOUT_FILENO);
        dup2(lf >= 0 ? lf : devnull, STDERR_FILENO);
        child_setns(netns);
        child_exec(argv);
    }
    return pid;
}

int dp_orch_can_connect(const char *netns, const char *hostport, int timeout_ms)
{
    struct sockaddr_in sa;
    if (dp_parse_hostport(hostport, &sa) < 0)
        return 0;
    pid_t pid = fork();
    if (pid < 0)
        return 0;
    if (pid == 0) {
        int devnull = open("/dev/null", O_RDWR);
        dup2(devnull, STDERR_FILENO);
        child_setns(netns);
        int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
        if (fd < 0)
            _exit(1);
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0)
            _exit(0);
        if (errno != EINPROGRESS)
            _exit(1);
        struct pollfd p = {.fd = fd, .events = POLLOUT};
        if (poll(&p, 1, timeout_ms) != 1)
            _exit(1);
        int e = 0;
        socklen_t el = sizeof(e);
        getsockopt(fd, SOL_SOCKET, SO_ERROR, &e, &el);
        _exit(e == 0 ? 0 : 1);
    }
    int st = 0;
    while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
        ;
    return WIFEXITED(st) && WEXITSTATUS(st) == 0;
}

uint64_t dp_orch_probe(const char *cmd, const char *netns, double timeout_s, int interval_ms, int log_fd,
                       pid_t keep_alive_pid, unsigned long long keep_alive_start, int *attempts)
{
    const char *argv[] = {"/bin/sh", "-c", cmd, NULL};
    int devnull = -1;
    if (log_fd < 0)
        log_fd = devnull = open("/dev/null", O_WRONLY | O_CLOEXEC);
    uint64_t until = dp_now_ns() + (uint64_t)(timeout_s * 1e9);
    struct dp_err err = {{0}};
    *attempts = 0;
    for (;;) {
        uint64_t now = dp_now_ns();
        if (now >= until)
            break;
        (*attempts)++;
        int s = dp_orch_run(argv, netns, (double)(until - now) / 1e9, NULL, log_fd, log_fd, &err);
        if (s >= 0 && WIFEXITED(s) && WEXITSTATUS(s) == 0) {
            uint64_t t = dp_now_ns();
            if (devnull >= 0)
                close(devnull);
            return t;
        }
        if (keep_alive_pid > 0 && !dp_proc_same(keep_alive_pid, keep_alive_start))
            break;
        if (interval_ms > 0)
            usleep((useconds_t)interval_ms * 1000);
    }
    if (devnull >= 0)
        close(devnull);
    return 0;
}

unsigned long long dp_proc_starttime(pid_t pid)
{
    char path[64], buf[1024];
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    if (dp_read_small(path, buf, sizeof(buf)) < 0)
        return 0;
    /* The command name may contain spaces and ')'; fields follow the last ')'. */
    char *p = strrchr(buf, ')');
    if (!p || p[1] != ' ')
        return 0;
    p += 2;
    if (*p == 'Z' || *p == 'X')
        return 0;
    /* p is field 3 (state); starttime is field 22. */
    for (int field = 3; field < 22; field++) {
        p = strchr(p, ' ');
        if (!p)
            return 0;
        p++;
    }
    return strtoull(p, NULL, 10);
}

int dp_proc_same(pid_t pid, unsigned long long starttime)
{
    if (pid <= 0)
        return 0;
    unsigned long long st = dp_proc_starttime(pid);
    return st != 0 && (starttime == 0 || st == starttime);
}

int dp_proc_wait_gone(pid_t pid, unsigned long long starttime, double timeout_s)
{
    uint64_t deadline = dp_now_ns() + (uint64_t)(timeout_s * 1e9);
    for (;;) {
        /* Reap it if it is our child. */
        waitpid(pid, NULL, WNOHANG);
        if (!dp_proc_same(pid, starttime))
            return 0;
        if (dp_now_ns() > deadline)
            return -1;
        usleep(10000);
    }
}
