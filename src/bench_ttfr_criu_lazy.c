/* bench_ttfr_criu_lazy: CRIU's own remote lazy migration, one system of
 * `distriproc bench ttfr` (the phases are in bench_ttfr.h).
 *
 * src: `criu dump --lazy-pages --address SRC --port P --leave-running`: CRIU
 * freezes the tree, writes the images without the lazy pages (PE_LAZY
 * pagemap entries), keeps those pages in its page pipes and serves them from
 * its own page server; --status-fd says when that server listens, which is
 * the end of the freeze phase (the images are complete). The images are
 * copied to dst over the link (skeleton phase); on dst `criu lazy-pages
 * --page-server --address SRC --port P` and `criu restore --lazy-pages`
 * (restore phase) and the probe (first reply). With --leave-running CRIU
 * resumes the source once its page server is done or its peer is gone, so the
 * next repetition finds the same loaded Redis.
 *
 * fs.pipe-max-size (global) is raised through lib/pipemax from before the
 * dump until the first reply: CRIU grows its page pipes during the dump, and
 * the pipe it tees pages into when the destination connects. It is put back
 * every time, failures included. */
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "bench_ttfr.h"
#include "criu.h"
#include "kdat.h"
#include "lab.h"
#include "orch.h"
#include "pipemax.h"
#include "util.h"

#define DUMP_READY_TIMEOUT_S 600.0 /* freeze + images of the largest size, on a busy machine */
#define DUMP_END_TIMEOUT_S 60.0    /* for CRIU to notice its peer is gone and resume the source */

/* ---- the link's byte counter -------------------------------------------------- */

/* tx_bytes of interface ifname in a /proc/PID/net/dev text, or -1. Pure. */
static long long net_dev_tx_bytes(const char *text, const char *ifname)
{
    size_t il = strlen(ifname);
    for (const char *line = text; line && *line; line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        while (*line == ' ')
            line++;
        if (strncmp(line, ifname, il) != 0 || line[il] != ':')
            continue;
        /* receive: bytes packets errs drop fifo frame compressed multicast; then transmit bytes */
        unsigned long long v[9];
        if (sscanf(line + il + 1, "%llu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4],
                   &v[5], &v[6], &v[7], &v[8]) != 9)
            return -1;
        return (long long)v[8];
    }
    return -1;
}

/* Bytes sent so far by the src end of the lab link, read through a process
 * in src's network namespace (pid), or -1. */
static long long src_tx_bytes(pid_t pid)
{
    char path[64], buf[8192];
    snprintf(path, sizeof(path), "/proc/%d/net/dev", (int)pid);
    if (dp_read_small(path, buf, sizeof(buf)) < 0)
        return -1;
    return net_dev_tx_bytes(buf, lab_hosts[0].ifname);
}

/* Resident memory of pid in bytes (what a lazy dump will hold in pipes), or 0. */
static uint64_t rss_bytes(pid_t pid)
{
    char path[64], line[256];
    snprintf(path, sizeof(path), "/proc/%d/status", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    unsigned long long kb = 0;
    while (fgets(line, sizeof(line), f))
        if (sscanf(line, "VmRSS: %llu kB", &kb) == 1)
            break;
    fclose(f);
    return (uint64_t)kb * 1024;
}

/* ---- the lazy dump on src --------------------------------------------------------- */

/* Starts the lazy dump of redis's tree into dir in src's netns, CRIU's page
 * server on port, its --status-fd on a pipe whose read end is *ready_fd. */
static int start_lazy_dump(const struct ttfr_ctx *c, pid_t redis, const char *dir, int port, struct dp_criu_proc *p,
                           int *ready_fd, char *eb, size_t el)
{
    char portbuf[16];
    snprintf(portbuf, sizeof(portbuf), "%d", port);
    /* status fd 1: dp_criu_exec puts our pipe on criu's stdout (a dump writes nothing else there) */
    const char *extra[] = {"--lazy-pages", "--address", TTFR_SRC_ADDR, "--port", portbuf, "--status-fd", "1", NULL};
    struct dp_dump_opts d = {.pid = redis, .images_dir = dir, .leave_running = 1, .tcp_established = 1,
                             .extra = extra};
    static struct dp_criu_argv a;
    struct dp_err err = {{0}};
    if (dp_criu_dump_args(&d, &a, &err) < 0) {
        snprintf(eb, el, "criu dump arguments: %.300s", err.msg);
        return -1;
    }
    char *argv[DP_CRIU_MAX_ARGS + 2];
    argv[0] = (char *)c->criu;
    for (size_t i = 0; i <= a.argc; i++)
        argv[i + 1] = (char *)a.argv[i];
    char ns[PATH_MAX];
    dp_netns_path(lab_hosts[0].netns, ns, sizeof(ns));
    int nsfd = open(ns, O_RDONLY | O_CLOEXEC);
    int pfd[2];
    if (nsfd < 0 || pipe2(pfd, O_CLOEXEC) < 0) {
        snprintf(eb, el, "cannot open %.300s or make a pipe: %.100s", ns, strerror(errno));
        if (nsfd >= 0)
            close(nsfd);
        return -1;
    }
    dp_kdat_prime_once(c->criu); /* as every dump through `distriproc checkpoint` */
    memset(p, 0, sizeof(*p));
    snprintf(p->what, sizeof(p->what), "criu dump --lazy-pages");
    snprintf(p->log_path, sizeof(p->log_path), "%.4000s/dump.log", dir);
    p->pid = fork();
    if (p->pid == 0)
        dp_criu_exec(c->criu, argv, nsfd, pfd[1]);
    close(nsfd);
    close(pfd[1]);
    if (p->pid < 0) {
        snprintf(eb, el, "fork: %.100s", strerror(errno));
        close(pfd[0]);
        return -1;
    }
    p->pidfd = (int)syscall(SYS_pidfd_open, p->pid, 0);
    *ready_fd = pfd[0];
    return 0;
}

/* Waits for the dump's status byte (its page server listens: the images are
 * complete). 0, or -1 with why (the dump's log tail printed). */
static int wait_dump_ready(struct dp_criu_proc *p, int ready_fd, char *eb, size_t el)
{
    uint64_t until = dp_now_ns() + (uint64_t)(DUMP_READY_TIMEOUT_S * 1e9);
    struct pollfd pfd = {.fd = ready_fd, .events = POLLIN};
    while (dp_now_ns() < until) {
        int r = poll(&pfd, 1, 1000);
        if (r < 0 && errno != EINTR)
            break;
        if (r <= 0)
            continue;
        char ch;
        ssize_t n = read(ready_fd, &ch, 1);
        if (n == 1)
            return 0;
        if (n == 0) { /* criu closed it without a word: it exited */
            struct dp_err err = {{0}};
            p->deadline_ns = dp_now_ns() + 10000000000ull;
            if (dp_criu_finish(p, &err) == 0)
                snprintf(eb, el, "criu dump --lazy-pages exited without starting its page server (see %.300s)",
                         p->log_path);
            else
                snprintf(eb, el, "%.400s", err.msg);
            return -1;
        }
    }
    snprintf(eb, el, "criu dump --lazy-pages did not start its page server within %.0f s (see %.300s)",
             DUMP_READY_TIMEOUT_S, p->log_path);
    dp_criu_kill(p);
    return -1;
}

/* Ends the dump: with its peer gone CRIU resumes the source (--leave-running)
 * and exits; one that still waits (no peer ever came) is SIGKILLed, which
 * resumes the source as well. */
static void end_dump(struct dp_criu_proc *p)
{
    if (p->pid <= 0)
        return;
    uint64_t until = dp_now_ns() + (uint64_t)(DUMP_END_TIMEOUT_S * 1e9);
    while (dp_criu_poll(p, NULL) == 1 && dp_now_ns() < until) {
        struct pollfd pfd = {.fd = p->pidfd, .events = POLLIN};
        if (p->pidfd < 0 || poll(&pfd, 1, 100) < 0)
            usleep(100000);
    }
    if (p->pid > 0) {
        dp_warn("criu dump --lazy-pages (pid %d) still runs after its peer left; SIGKILL", (int)p->pid);
        dp_criu_kill(p);
    }
}

/* ---- the system ------------------------------------------------------------------- */

/* One repetition: lazy dump on src, images to dst, CRIU's daemon and lazy restore, probe; the
 * source is resumed by CRIU (or by the SIGKILL of a dump that waits on no peer) before returning. */
int ttfr_run_criu_lazy_remote(const struct ttfr_ctx *c, pid_t redis, const char *work, struct ttfr_sample *s,
                              char *eb, size_t el)
{
    char src[PATH_MAX + 32], dst[PATH_MAX + 32], pidfile[PATH_MAX + 32];
    snprintf(src, sizeof(src), "%s/lazyr-src", work);
    snprintf(dst, sizeof(dst), "%s/lazyr-dst", work);
    snprintf(pidfile, sizeof(pidfile), "%s/lazyr.pid", work);
    int rc = -1, ready_fd = -1, window = 0;
    pid_t restored = 0, daemon = -1;
    struct dp_criu_proc dump = {.pid = -1, .pidfd = -1};
    struct dp_pipemax pm = {.lock_fd = -1};
    struct dp_err err = {{0}};
    if (mkdir(src, 0700) < 0 || mkdir(dst, 0700) < 0) {
        snprintf(eb, el, "mkdir %.300s: %.100s", src, strerror(errno));
        goto out;
    }
    if (dp_pipemax_check_size(rss_bytes(redis), &err) < 0 || dp_pipemax_open(&pm, DP_PIPEMAX_CRIU_NEED, &err) < 0) {
        snprintf(eb, el, "%.400s", err.msg);
        goto out;
    }
    window = 1;
    uint64_t t0 = dp_now_ns();
    if (start_lazy_dump(c, redis, src, c->port + 2, &dump, &ready_fd, eb, el) < 0 ||
        wait_dump_ready(&dump, ready_fd, eb, el) < 0)
        goto out;
    uint64_t t1 = dp_now_ns();
    long long tx0 = src_tx_bytes(redis);
    if (ttfr_copy_over_link(src, dst, c->port + 1) < 0) {
        snprintf(eb, el, "copying the lazy dump's images over the lab link failed");
        goto out;
    }
    uint64_t t2 = dp_now_ns();
    daemon = ttfr_start_criu_lazy_daemon(c, dst, TTFR_SRC_ADDR, c->port + 2, eb, el);
    if (daemon < 0 || ttfr_criu_restore_in_dst(dst, pidfile, 1, eb, el) < 0)
        goto out;
    uint64_t t3 = dp_now_ns();
    restored = dp_read_pid_file(pidfile);
    int attempts;
    uint64_t ok = ttfr_probe(c, lab_hosts[1].netns, TTFR_DST_ADDR, 120, restored, &attempts);
    long long tx1 = src_tx_bytes(redis);
    if (!ok) {
        snprintf(eb, el, "the Redis restored by CRIU's remote lazy migration did not answer within 120 s (see "
                 "%.200s/lazy-pages.log and %.200s/dump.log)", dst, src);
        goto out;
    }
    /* the link's own counter: images and pages, with TCP/IP headers */
    s->bytes = tx0 >= 0 && tx1 >= tx0 ? (double)(tx1 - tx0) : 0;
    ttfr_set_phases(s, ttfr_secs(t0, ok), ttfr_secs(t0, t1), ttfr_secs(t1, t2), 0, ttfr_secs(t2, t3));
    rc = 0;
out:
    if (!restored)
        restored = dp_read_pid_file(pidfile);
    ttfr_kill_tree(restored);
    ttfr_stop_daemon(daemon);
    end_dump(&dump);
    if (ready_fd >= 0)
        close(ready_fd);
    if (window && dp_pipemax_close(&pm, &err) < 0)
        dp_warn("%s", err.msg);
    unlink(pidfile);
    ttfr_rm_rf(src);
    ttfr_rm_rf(dst);
    return rc;
}
