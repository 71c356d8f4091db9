/* guard: the lazy-pages daemon's fail-safe for its own death (see guard.h).
 *
 * Daemon -> guard: SOCK_SEQPACKET messages of struct gmsg, descriptors as
 * SCM_RIGHTS. The guard never sends; it only ever blocks in recvmsg(). Its
 * socket reaching EOF without GM_BYE means the daemon is gone. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <poll.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "guard.h"
#include "uffd.h"

#ifndef __NR_pidfd_open
#define __NR_pidfd_open 434
#endif
#ifndef __NR_pidfd_send_signal
#define __NR_pidfd_send_signal 424
#endif

enum { GM_TASK = 1, GM_ROOT, GM_DROP, GM_BYE };

struct gmsg {
    uint32_t type;
    int32_t key;   /* GM_TASK, GM_DROP: the daemon's uffd descriptor number */
    int32_t pid;   /* GM_TASK, GM_ROOT: host pid, 0 = unknown */
    int32_t nfds;  /* GM_TASK: uffd [+ pidfd]; GM_ROOT: pidfd */
};

/* What the daemon handed over (daemon side: uffd not owned, pidfd owned). */
struct dp_guard_ent {
    int key, uffd, pidfd, root;
    pid_t pid;
};

/* Any page-aligned user address will do for the liveness probe. */
#define PROBE_ADDR 0x10000000ull

static int pidfd_open(pid_t pid)
{
    return (int)syscall(__NR_pidfd_open, pid, 0);
}

static int pidfd_kill(int pidfd, int sig)
{
    return (int)syscall(__NR_pidfd_send_signal, pidfd, sig, NULL, 0);
}

static int send_msg(int sk, const struct gmsg *m, const int *fds, int nfds)
{
    struct iovec iov = {.iov_base = (void *)m, .iov_len = sizeof(*m)};
    union {
        char buf[CMSG_SPACE(2 * sizeof(int))];
        struct cmsghdr align;
    } u;
    memset(&u, 0, sizeof(u));
    struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1};
    if (nfds > 0) {
        mh.msg_control = u.buf;
        mh.msg_controllen = CMSG_SPACE((size_t)nfds * sizeof(int));
        struct cmsghdr *c = CMSG_FIRSTHDR(&mh);
        c->cmsg_level = SOL_SOCKET;
        c->cmsg_type = SCM_RIGHTS;
        c->cmsg_len = CMSG_LEN((size_t)nfds * sizeof(int));
        memcpy(CMSG_DATA(c), fds, (size_t)nfds * sizeof(int));
    }
    while (sendmsg(sk, &mh, MSG_NOSIGNAL) < 0)
        if (errno != EINTR)
            return -1;
    return 0;
}

/* ======================= the guard process ======================= */

static struct dp_guard_ent *held;
static size_t nheld, capheld;
static pid_t daemon_pid;

static void held_close(struct dp_guard_ent *e)
{
    if (e->uffd >= 0)
        close(e->uffd);
    if (e->pidfd >= 0)
        close(e->pidfd);
    *e = held[--nheld];
}

/* Every process's parent, read once from /proc (static: no allocation when
 * it matters; beyond the cap some are missed, the next round sees them). */
#define SCAN_MAX 65536
static pid_t scan_pid[SCAN_MAX], scan_ppid[SCAN_MAX];
static pid_t victims[SCAN_MAX];

static size_t scan_proc(void)
{
    size_t n = 0;
    DIR *dir = opendir("/proc");
    if (!dir)
        return 0;
    struct dirent *de;
    while ((de = readdir(dir)) && n < SCAN_MAX) {
        pid_t p = (pid_t)atoi(de->d_name);
        if (p <= 0)
            continue;
        long ppid;
        if (dp_proc_stat_field(p, 4, &ppid) == 0) {
            scan_pid[n] = p;
            scan_ppid[n] = (pid_t)ppid;
            n++;
        }
    }
    closedir(dir);
    return n;
}

/* One round: every live task held by pidfd, and every descendant of those and
 * of a live criu, collected before anything is killed (a killed parent's
 * children would be reparented out of reach), then SIGKILLed. After the
 * daemon's death no task with lazy memory can complete a fork (its FORK
 * event is never read), so the tree cannot grow behind our back. Returns how
 * many processes were signalled. */
static size_t nvictims;

static void victim(pid_t p)
{
    for (size_t i = 0; i < nvictims; i++)
        if (victims[i] == p)
            return;
    if (nvictims < SCAN_MAX)
        victims[nvictims++] = p;
}

static size_t kill_round(void)
{
    size_t nscan = scan_proc();
    nvictims = 0;
    for (size_t i = 0; i < nheld; i++) {
        struct dp_guard_ent *e = &held[i];
        if (e->pidfd < 0 || e->pid <= 0 || pidfd_kill(e->pidfd, 0) < 0)
            continue; /* unknown pid, or exited */
        if (!e->root)
            victim(e->pid);
        else /* criu itself is not ours to kill: what it restores is */
            for (size_t j = 0; j < nscan; j++)
                if (scan_ppid[j] == e->pid)
                    victim(scan_pid[j]);
    }
    for (size_t q = 0; q < nvictims; q++) /* breadth first: the queue is the list */
        for (size_t j = 0; j < nscan; j++)
            if (scan_ppid[j] == victims[q])
                victim(scan_pid[j]);
    for (size_t i = 0; i < nheld; i++)
        if (held[i].pidfd >= 0 && !held[i].root)
            pidfd_kill(held[i].pidfd, SIGKILL);
    for (size_t i = 0; i < nvictims; i++)
        kill(victims[i], SIGKILL);
    return nvictims;
}

static size_t tasks_held(void)
{
    size_t n = 0;
    for (size_t i = 0; i < nheld; i++)
        n += held[i].uffd >= 0;
    return n;
}

/* Closes the uffds whose process is gone; returns how many are still live. */
static size_t release_gone(void)
{
    size_t live = 0;
    for (size_t i = 0; i < nheld;) {
        struct dp_guard_ent *e = &held[i];
        if (e->uffd >= 0 && dp_uffd_alive(e->uffd, PROBE_ADDR) != 0) {
            live++;
            i++;
        } else if (e->uffd >= 0) {
            held_close(e);
        } else {
            i++;
        }
    }
    return live;
}

/* A `criu restore` still running once its tree is gone cannot succeed, and
 * without its lazy-pages daemon it can hang, deaf to SIGTERM: give it a few
 * seconds to fail by itself (`restore` also stops it), then SIGKILL it. */
static void stop_criu(void)
{
    for (int i = 0; i < 150; i++) {
        int running = 0;
        for (size_t j = 0; j < nheld; j++)
            running += held[j].root && held[j].pidfd >= 0 && pidfd_kill(held[j].pidfd, 0) == 0;
        if (!running)
            return;
        usleep(20000);
    }
    for (size_t j = 0; j < nheld; j++) {
        if (held[j].root && held[j].pidfd >= 0 && pidfd_kill(held[j].pidfd, SIGKILL) == 0)
            dp_error("criu restore (pid %d) still ran 3 s after its lazy-pages daemon died and its tree "
                     "was killed; SIGKILLed it (it can hang for good once the daemon is gone)",
                     (int)held[j].pid);
    }
}

/* The daemon is gone (or left tasks behind): stop the tree, then let go of
 * the uffds only once no process uses their memory any more. */
static noreturn void fail_safe(const char *what)
{
    size_t served = tasks_held(); /* the daemon still served these */
    size_t live = release_gone(); /* some may have exited (or died with their tracer) */
    size_t n = kill_round();
    if (served == 0 && n == 0) {
        dp_info("lazy-pages daemon (pid %d) %s with no restored task left; nothing to stop", (int)daemon_pid,
                what);
        stop_criu();
        _exit(0);
    }
    if (live == 0 && n == 0) {
        dp_error("lazy-pages daemon (pid %d) %s; the %zu restored task(s) it still served are gone already "
                 "(exited, or seized for an eviction and killed with it). No page was filled with wrong "
                 "data; the memory is intact at the source (page server or images): restore it again "
                 "from there.", (int)daemon_pid, what, served);
        stop_criu();
        _exit(1);
    }
    dp_error("lazy-pages daemon (pid %d) %s: SIGKILLed the restored process tree (%zu of its %zu task(s) "
             "with lazy memory still ran; %zu process(es) signalled) so that it cannot read its "
             "not-yet-fetched memory as zeros. No page was filled with wrong data; the memory is intact "
             "at the source (page server or images): restore it again from there.",
             (int)daemon_pid, what, live, served, n);
    for (unsigned i = 1;; i++) {
        usleep(20000);
        if (release_gone() == 0)
            break;
        if (i % 25 == 0)
            kill_round();
        if (i == 500)
            dp_error("%zu restored task(s) still have lazy memory 10 s after SIGKILL; holding their "
                     "userfaultfds (their faults wait, never read zeros) until they are gone: find and "
                     "kill them (a process reparented out of the restored tree?)", tasks_held());
    }
    dp_info("the restored tree is gone; its userfaultfds are released");
    stop_criu();
    _exit(1);
}

static void held_add(int key, int uffd, int pidfd, pid_t pid, int root)
{
    if (nheld == capheld) {
        size_t cap = capheld ? capheld * 2 : 256;
        struct dp_guard_ent *e = realloc(held, cap * sizeof(*e));
        if (!e) {
            /* never close a uffd we cannot track: it stays open, unseen */
            dp_error("out of memory holding a userfaultfd (key %d): kept open, not tracked", key);
            return;
        }
        held = e;
        capheld = cap;
    }
    held[nheld++] = (struct dp_guard_ent){.key = key, .uffd = uffd, .pidfd = pidfd, .pid = pid, .root = root};
}

static void held_drop(int key)
{
    for (size_t i = 0; i < nheld; i++) {
        struct dp_guard_ent *e = &held[i];
        if (e->root || e->key != key)
            continue;
        /* Trust, but check: a uffd whose mm still lives is kept; a goodbye
         * or the daemon's death deals with it. */
        if (e->uffd >= 0 && dp_uffd_alive(e->uffd, PROBE_ADDR) != 0) {
            dp_warn("asked to drop the userfaultfd of pid %d while its process still runs; keeping it",
                    (int)e->pid);
            e->key = -1;
            return;
        }
        held_close(e);
        return;
    }
}

/* Overwrites our copy of the daemon's argv area (fields 48-49 of
 * /proc/self/stat) so that /proc/PID/cmdline reads "dp-guard". */
static void set_cmdline(void)
{
    char buf[1024];
    if (dp_read_small("/proc/self/stat", buf, sizeof(buf)) < 0)
        return;
    char *p = strrchr(buf, ')');
    unsigned long start = 0, end = 0;
    for (int field = 2; p && field < 49; field++) { /* p: the space before field+1 */
        p = strchr(p + 1, ' ');
        if (p && field + 1 == 48)
            start = strtoul(p + 1, NULL, 10);
        if (p && field + 1 == 49)
            end = strtoul(p + 1, NULL, 10);
    }
    if (!start || end < start + sizeof(DP_GUARD_NAME))
        return;
    memset((void *)start, 0, end - start);
    memcpy((void *)start, DP_GUARD_NAME, sizeof(DP_GUARD_NAME));
}

static noreturn void guard_main(int sk)
{
    /* Only the socket, stdin/out/err: nothing of the daemon's (the
     * lazy-pages listener, the page source, the control socket). */
    if (sk != 3) {
        dup2(sk, 3);
        sk = 3;
    }
    if (syscall(SYS_close_range, 4u, ~0u, 0u) < 0)
        for (int fd = 4; fd < 65536; fd++)
            close(fd);
    daemon_pid = getppid();
    /* Recognisable, and not matched by a `pkill -f distriproc` meant for
     * the daemon: the name and the command line both say dp-guard. */
    prctl(PR_SET_NAME, DP_GUARD_NAME, 0, 0, 0);
    set_cmdline();
    dp_log_set_tag("distriproc guard");
    /* Signals meant for the daemon or its process group (stop requests) must
     * not take the guard away first: it goes when the daemon says so. */
    setpgid(0, 0);
    signal(SIGTERM, SIG_IGN);
    signal(SIGINT, SIG_IGN);
    signal(SIGHUP, SIG_IGN);
    signal(SIGQUIT, SIG_IGN);
    signal(SIGPIPE, SIG_IGN);
    signal(SIGCHLD, SIG_DFL);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    /* It holds two descriptors per task: as many as the hard limit allows. */
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0 && rl.rlim_cur < rl.rlim_max) {
        rl.rlim_cur = rl.rlim_max;
        setrlimit(RLIMIT_NOFILE, &rl);
    }
    /* The guard is tiny; under memory pressure the kernel should pick the
     * daemon, which the guard then covers. */
    int oom = open("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
    if (oom >= 0) {
        if (write(oom, "-1000", 5) < 0) {
            /* not fatal */
        }
        close(oom);
    }
    for (;;) {
        struct gmsg m;
        struct iovec iov = {.iov_base = &m, .iov_len = sizeof(m)};
        union {
            char buf[CMSG_SPACE(4 * sizeof(int))];
            struct cmsghdr align;
        } u;
        struct msghdr mh = {.msg_iov = &iov, .msg_iovlen = 1, .msg_control = u.buf,
                            .msg_controllen = sizeof(u.buf)};
        ssize_t n = recvmsg(sk, &mh, MSG_CMSG_CLOEXEC);
        if (n < 0 && errno == EINTR)
            continue;
        int fds[4], nfds = 0;
        for (struct cmsghdr *c = n > 0 ? CMSG_FIRSTHDR(&mh) : NULL; c; c = CMSG_NXTHDR(&mh, c)) {
            if (c->cmsg_level != SOL_SOCKET || c->cmsg_type != SCM_RIGHTS)
                continue;
            size_t k = (c->cmsg_len - CMSG_LEN(0)) / sizeof(int);
            for (size_t i = 0; i < k && nfds < 4; i++)
                memcpy(&fds[nfds++], CMSG_DATA(c) + i * sizeof(int), sizeof(int));
        }
        if (n > 0 && (mh.msg_flags & MSG_CTRUNC))
            dp_error("a descriptor handed over by the daemon was lost (out of descriptors?): its task "
                     "is not covered if the daemon dies");
        if (n <= 0)
            fail_safe(n == 0 ? "died without a clean shutdown" : "cannot be heard any more");
        if (n != (ssize_t)sizeof(m) || m.type < GM_TASK || m.type > GM_BYE) {
            /* cannot happen; the daemon keeps its own copies of what came */
            dp_error("malformed message from the daemon (%zd bytes); ignored", n);
            for (int i = 0; i < nfds; i++)
                close(fds[i]);
            continue;
        }
        switch (m.type) {
        case GM_TASK:
            if (nfds >= 1)
                held_add(m.key, fds[0], nfds >= 2 ? fds[1] : -1, m.pid, 0);
            break;
        case GM_ROOT:
            if (nfds >= 1)
                held_add(-1, -1, fds[0], m.pid, 1);
            break;
        case GM_DROP:
            held_drop(m.key);
            break;
        case GM_BYE:
            if (release_gone() > 0)
                fail_safe("exited while restored tasks still ran");
            _exit(0);
        }
    }
}

/* ======================= the daemon's side ======================= */

static int ent_send(struct dp_guard *g, const struct dp_guard_ent *e)
{
    struct gmsg m = {.type = e->root ? GM_ROOT : GM_TASK, .key = e->key, .pid = e->pid};
    int fds[2], nfds = 0;
    if (!e->root)
        fds[nfds++] = e->uffd;
    if (e->pidfd >= 0)
        fds[nfds++] = e->pidfd;
    if (nfds == 0)
        return 0;
    m.nfds = nfds;
    return send_msg(g->sk, &m, fds, nfds);
}

static int spawn(struct dp_guard *g, struct dp_err *err)
{
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_SEQPACKET | SOCK_CLOEXEC, 0, sv) < 0) {
        dp_err_set(err, "socketpair: %s", strerror(errno));
        return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        dp_err_set(err, "fork: %s", strerror(errno));
        close(sv[0]);
        close(sv[1]);
        return -1;
    }
    if (pid == 0) {
        close(sv[0]);
        guard_main(sv[1]);
    }
    close(sv[1]);
    g->sk = sv[0];
    g->pid = pid;
    g->gen++;
    for (size_t i = 0; i < g->n; i++) {
        if (ent_send(g, &g->e[i]) < 0) {
            dp_err_set(err, "handing a userfaultfd to the new guard: %s", strerror(errno));
            close(g->sk);
            g->sk = -1;
            kill(pid, SIGKILL);
            waitpid(pid, NULL, 0);
            return -1;
        }
    }
    return 0;
}

int dp_guard_start(struct dp_guard *g, struct dp_err *err)
{
    memset(g, 0, sizeof(*g));
    g->sk = -1;
    if (spawn(g, err) < 0)
        return -1;
    g->wanted = 1;
    return 0;
}

int dp_guard_fd(const struct dp_guard *g)
{
    return g->sk;
}

static void lost(struct dp_guard *g)
{
    int st = 0;
    close(g->sk);
    g->sk = -1;
    /* it never exits by itself while the daemon lives: it was killed */
    for (int i = 0; i < 100 && waitpid(g->pid, &st, WNOHANG) == 0; i++)
        usleep(10000);
    dp_error("the guard process (pid %d) died (%s %d); starting a new one and handing it every "
             "userfaultfd again", (int)g->pid, WIFSIGNALED(st) ? "signal" : "status",
             WIFSIGNALED(st) ? WTERMSIG(st) : WEXITSTATUS(st));
    g->retry_ns = 0;
}

void dp_guard_check(struct dp_guard *g)
{
    if (!g->wanted)
        return;
    if (g->sk >= 0) {
        struct pollfd p = {.fd = g->sk, .events = POLLIN};
        if (poll(&p, 1, 0) <= 0)
            return;
        lost(g);
    }
    uint64_t now = dp_now_ns();
    if (now < g->retry_ns)
        return;
    struct dp_err err = {{0}};
    if (spawn(g, &err) < 0) {
        if (!g->retry_ns)
            dp_error("cannot start a new guard: %s. Until one runs, a crash of this daemon would "
                     "expose the restored tree's remote memory as zeros; retrying every second", err.msg);
        g->retry_ns = now + 1000000000ull;
        return;
    }
    g->retry_ns = 0;
    dp_info("guard restarted (pid %d), holding %zu descriptor(s)", (int)g->pid, g->n);
}

/* Records e and hands it over; a failed send means the guard died: the
 * next check starts a new one with everything recorded. */
static void hand_over(struct dp_guard *g, struct dp_guard_ent e)
{
    if (g->n == g->cap) {
        size_t cap = g->cap ? g->cap * 2 : 64;
        struct dp_guard_ent *n = realloc(g->e, cap * sizeof(*n));
        if (!n) {
            dp_error("out of memory recording a descriptor for the guard; handing it over untracked "
                     "(a new guard would not get it)");
            if (g->sk >= 0)
                ent_send(g, &e);
            if (e.pidfd >= 0)
                close(e.pidfd);
            return;
        }
        g->e = n;
        g->cap = cap;
    }
    g->e[g->n++] = e;
    if (g->sk >= 0 && ent_send(g, &e) < 0) {
        int err = errno;
        unsigned gen = g->gen;
        dp_guard_check(g); /* a dead guard is replaced and gets everything */
        if (g->gen == gen)
            dp_error("handing a descriptor to the guard failed: %s; until the daemon exits, its crash "
                     "would expose that task's remote memory as zeros", strerror(err));
    }
}

void dp_guard_task(struct dp_guard *g, int uffd, pid_t host_pid, int32_t inner)
{
    if (!g->wanted || uffd < 0)
        return;
    int pidfd = -1;
    if (host_pid > 0 && inner > 0) {
        pidfd = pidfd_open(host_pid);
        /* the sender must be the task itself (CRIU opens the uffd in it) */
        if (pidfd >= 0 && dp_proc_inner_pid(host_pid) != inner) {
            close(pidfd);
            pidfd = -1;
        }
    }
    hand_over(g, (struct dp_guard_ent){.key = uffd, .uffd = uffd, .pidfd = pidfd,
                                       .pid = pidfd >= 0 ? host_pid : 0});
}

void dp_guard_root(struct dp_guard *g, pid_t pid)
{
    if (!g->wanted || pid <= 0)
        return;
    int pidfd = pidfd_open(pid);
    if (pidfd < 0)
        return;
    hand_over(g, (struct dp_guard_ent){.key = -1, .uffd = -1, .pidfd = pidfd, .pid = pid, .root = 1});
}

void dp_guard_drop(struct dp_guard *g, int uffd)
{
    if (!g->wanted)
        return;
    for (size_t i = 0; i < g->n; i++) {
        if (g->e[i].root || g->e[i].key != uffd)
            continue;
        if (g->e[i].pidfd >= 0)
            close(g->e[i].pidfd);
        g->e[i] = g->e[--g->n];
        if (g->sk >= 0) {
            struct gmsg m = {.type = GM_DROP, .key = uffd};
            if (send_msg(g->sk, &m, NULL, 0) < 0)
                dp_guard_check(g);
        }
        return;
    }
}

void dp_guard_end(struct dp_guard *g, int clean)
{
    if (!g->wanted)
        return;
    g->wanted = 0;
    if (g->sk >= 0) {
        if (clean) {
            struct gmsg m = {.type = GM_BYE};
            if (send_msg(g->sk, &m, NULL, 0) < 0)
                clean = 0;
        }
        close(g->sk);
        g->sk = -1;
        /* clean: it exits at once (it checks that no held task still runs);
         * otherwise it outlives us to stop the tree */
        for (int i = 0; clean && i < 300 && waitpid(g->pid, NULL, WNOHANG) == 0; i++)
            usleep(10000);
    }
    for (size_t i = 0; i < g->n; i++)
        if (g->e[i].pidfd >= 0)
            close(g->e[i].pidfd);
    free(g->e);
    g->e = NULL;
    g->n = g->cap = 0;
}
