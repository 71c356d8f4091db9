/* distriproc lab: the two-host lab (up, down, status, exec). */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "commands.h"
#include "jsonout.h"
#include "lab.h"
#include "lab_cluster.h"
#include "lab_fanout.h"
#include "util.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: distriproc lab up [--bandwidth RATE]\n"
            "       distriproc lab down\n"
            "       distriproc lab status [--json]\n"
            "       distriproc lab exec HOST [--container [--detach] [--pidfile FILE] [--log FILE]] -- CMD [ARG...]\n"
            "       distriproc lab cluster up|down   (a Redis Cluster in the lab: lab cluster --help)\n"
            "\n"
            "Two hosts on this machine: 'src' (network namespace dp-src, 10.250.0.1/30 on\n"
            "dp-src0) and 'dst' (dp-dst, 10.250.0.2/30 on dp-dst0), joined by a veth pair.\n"
            "No default route: lab traffic never leaves the machine. Needs root.\n"
            "\n"
            "  up         create the lab; --bandwidth RATE (e.g. 1gbit, 100mbit) caps the\n"
            "             link with tbf on both ends. Idempotent: a complete lab is kept\n"
            "             and only its cap adjusted; leftovers of a crashed run (namespaces,\n"
            "             veth ends, processes in them) are removed first.\n"
            "  down       kill every process in the lab namespaces, delete namespaces and\n"
            "             veth (and the fan-out hosts NAME-foN of 'bench fanout'), remove the\n"
            "             lab's Redis Cluster; leaves nothing behind.\n"
            "  status     what exists (exit status 0 if the lab is up, 3 if not).\n"
            "  exec HOST  run CMD in HOST's network namespace only (setns; no mount\n"
            "             namespace, so CRIU can dump what runs there).\n"
            "    --container  run CMD as a session leader and init of a new pid namespace,\n"
            "                 the way a checkpointable workload is started; prints the\n"
            "                 host-visible pid of that init (the pid to checkpoint)\n"
            "    --detach     (with --container) return at once, leaving CMD running with\n"
            "                 stdin/stdout/stderr on /dev/null; prints only the pid\n"
            "    --pidfile F  write the pid to F instead of printing it\n"
            "    --log F      (with --detach) stdout/stderr to F instead of /dev/null; F must\n"
            "                 not keep growing if the process is to be checkpointed\n");
}

/* ---- up / down / status ---- */

static int lab_cmd_up(int argc, char **argv)
{
    uint64_t bits = 0;
    struct dp_err err = {{0}};
    char rate[32] = "unlimited";

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--bandwidth") == 0 && i + 1 < argc) {
            if (lab_parse_rate(argv[++i], &bits, &err) < 0) {
                dp_error("%s", err.msg);
                return 2;
            }
            lab_format_rate(bits, rate, sizeof(rate));
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            dp_error("unexpected argument '%s' for 'lab up' (see 'distriproc lab --help')", argv[i]);
            return 2;
        }
    }
    int rc = lab_up(bits, &err);
    switch (rc) {
    case LAB_CREATED:
        printf("lab up: src %s (%s) <-> dst %s (%s), bandwidth %s\n", lab_hosts[0].addr, lab_hosts[0].netns,
               lab_hosts[1].addr, lab_hosts[1].netns, rate);
        return 0;
    case LAB_ALREADY_UP:
        printf("lab already up with bandwidth %s; nothing to do\n", rate);
        return 0;
    case LAB_BANDWIDTH_CHANGED:
        printf("lab already up; bandwidth set to %s\n", rate);
        return 0;
    default:
        dp_error("lab up failed: %s", err.msg);
        return 1;
    }
}

static int lab_cmd_down(int argc, char **argv)
{
    struct dp_err err = {{0}};
    int killed = 0;

    if (argc > 1) {
        if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
            usage(stdout);
            return 0;
        }
        dp_error("unexpected argument '%s' for 'lab down'", argv[1]);
        return 2;
    }
    if (lab_fanout_down(NULL, &err) < 0 || lab_down(&killed, &err) < 0 || lab_cluster_down(NULL, &err) < 0) {
        dp_error("lab down failed: %s", err.msg);
        return 1;
    }
    printf("lab down: namespaces and veth removed, %d process(es) killed\n", killed);
    return 0;
}

static const char *state_word(const struct lab_state *st)
{
    return lab_state_complete(st) ? "up" : lab_state_empty(st) ? "down" : "partial";
}

/* `lab status --json`: the state, then per host what exists and works;
 * bandwidth_bps is null when no rate limit is set. NULL if out of memory. */
static json_t *lab_status_json(const struct lab_state *st)
{
    json_t *hosts = json_array();
    for (size_t i = 0; hosts && i < DP_ARRAY_LEN(lab_hosts); i++) {
        const struct lab_host *h = &lab_hosts[i];
        const struct lab_host_state *hs = &st->host[i];
        char addr[64];
        snprintf(addr, sizeof(addr), "%s/%d", h->addr, LAB_PREFIX_LEN);
        json_t *pids = json_array();
        for (int p = 0; pids && p < hs->npids; p++)
            if (json_array_append_new(pids, json_integer(hs->pids[p])) < 0) {
                json_decref(pids);
                pids = NULL;
            }
        json_t *o = json_pack("{s:s, s:s, s:b, s:s, s:b, s:b, s:s, s:b, s:b, s:o, s:o}", "name", h->name, "netns",
                              h->netns, "netns_exists", hs->netns_exists, "iface", h->ifname, "iface_exists",
                              hs->iface_exists, "iface_up", hs->iface_up, "address", addr, "address_ok", hs->addr_ok,
                              "loopback_up", hs->lo_up, "bandwidth_bps",
                              hs->tbf_bits ? json_integer((json_int_t)hs->tbf_bits) : json_null(), "pids", pids);
        if (json_array_append_new(hosts, o) < 0) {
            json_decref(hosts);
            return NULL;
        }
    }
    return json_pack("{s:s, s:i, s:o}", "state", state_word(st), "stale_root_links", st->stale_root_links, "hosts",
                     hosts);
}

static int lab_cmd_status(int argc, char **argv)
{
    struct dp_err err = {{0}};
    struct lab_state st;
    int json = 0;

    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--json") == 0) {
            json = 1;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else {
            dp_error("unexpected argument '%s' for 'lab status'", argv[i]);
            return 2;
        }
    }
    if (lab_probe(&st, &err) < 0) {
        dp_error("lab status failed: %s", err.msg);
        return 1;
    }
    if (json) {
        if (dp_json_print(lab_status_json(&st), JSON_COMPACT) < 0)
            return 1;
    } else {
        printf("lab: %s\n", state_word(&st));
        for (size_t i = 0; i < DP_ARRAY_LEN(lab_hosts); i++) {
            const struct lab_host *h = &lab_hosts[i];
            const struct lab_host_state *hs = &st.host[i];
            char rate[32] = "unlimited";
            if (hs->tbf_bits)
                lab_format_rate(hs->tbf_bits, rate, sizeof(rate));
            if (!hs->netns_exists) {
                printf("  %s: netns %s missing\n", h->name, h->netns);
                continue;
            }
            printf("  %s: netns %s, %s %s%s, %s/%d%s, lo %s, bandwidth %s, %d process(es)", h->name,
                   h->netns, h->ifname, hs->iface_exists ? "" : "missing",
                   hs->iface_exists ? (hs->iface_up ? "up" : "down") : "", h->addr, LAB_PREFIX_LEN,
                   hs->addr_ok ? "" : " (not set)", hs->lo_up ? "up" : "down", rate, hs->npids);
            for (int p = 0; p < hs->npids && p < 16; p++)
                printf("%s%d", p ? " " : ": ", (int)hs->pids[p]);
            printf("%s\n", hs->npids > 16 ? " ..." : "");
        }
        if (st.stale_root_links)
            printf("  %d stale lab veth end(s) in the root namespace ('distriproc lab up' or 'down' removes them)\n",
                   st.stale_root_links);
    }
    return lab_state_complete(&st) ? 0 : 3;
}

/* ---- exec ---- */

static int write_pidfile(const char *path, pid_t pid)
{
    char tmp[4096], text[32];
    int len = snprintf(text, sizeof(text), "%d\n", (int)pid);
    snprintf(tmp, sizeof(tmp), "%s.tmp.%d", path, (int)getpid());
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0 || dp_write_full(fd, text, (size_t)len) < 0 || close(fd) < 0 || rename(tmp, path) < 0) {
        dp_error("cannot write pid file %s: %s", path, strerror(errno));
        unlink(tmp);
        return -1;
    }
    return 0;
}

static pid_t child_pid;

static void forward_signal(int sig)
{
    if (child_pid > 0)
        kill(child_pid, sig);
}

/* Child side of --container: becomes pid 1 of the new pid namespace. */
static noreturn void container_child(char **cmd, int detach, const char *log, int errfd)
{
    int e;
    if (setsid() < 0) {
        e = errno;
        goto fail;
    }
    if (detach) {
        int in = open("/dev/null", O_RDONLY);
        int out = log ? open(log, O_WRONLY | O_CREAT | O_APPEND, 0644) : open("/dev/null", O_WRONLY);
        if (in < 0 || out < 0) {
            e = errno;
            goto fail;
        }
        dup2(in, STDIN_FILENO);
        dup2(out, STDOUT_FILENO);
        dup2(out, STDERR_FILENO);
        if (in > STDERR_FILENO)
            close(in);
        if (out > STDERR_FILENO)
            close(out);
    }
    signal(SIGPIPE, SIG_DFL);
    execvp(cmd[0], cmd);
    e = errno;
fail:
    /* errfd is close-on-exec: the parent reads EOF on success, errno here. */
    if (write(errfd, &e, sizeof(e)) < 0)
        _exit(127);
    _exit(127);
}

static int lab_cmd_exec(int argc, char **argv)
{
    const struct lab_host *host = NULL;
    const char *pidfile = NULL, *log = NULL;
    int container = 0, detach = 0, i;
    struct dp_err err = {{0}};

    for (i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--") == 0) {
            i++;
            break;
        } else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        } else if (strcmp(argv[i], "--container") == 0) {
            container = 1;
        } else if (strcmp(argv[i], "--detach") == 0) {
            detach = 1;
        } else if (strcmp(argv[i], "--pidfile") == 0 && i + 1 < argc) {
            pidfile = argv[++i];
        } else if (strcmp(argv[i], "--log") == 0 && i + 1 < argc) {
            log = argv[++i];
        } else if (argv[i][0] == '-') {
            dp_error("unknown option '%s' for 'lab exec' (see 'distriproc lab --help')", argv[i]);
            return 2;
        } else if (!host) {
            host = lab_host_find(argv[i]);
            if (!host) {
                dp_error("unknown lab host '%s': the hosts are 'src' and 'dst'", argv[i]);
                return 2;
            }
        } else {
            break; /* CMD without "--" */
        }
    }
    if (!host || i >= argc) {
        dp_error("usage: distriproc lab exec HOST [--container [--detach]] -- CMD [ARG...]");
        return 2;
    }
    if ((detach || pidfile || log) && !container) {
        dp_error("--detach, --pidfile and --log go with --container");
        return 2;
    }
    if (log && !detach) {
        dp_error("--log goes with --detach (without it CMD keeps this terminal's output)");
        return 2;
    }
    char **cmd = argv + i;

    if (geteuid() != 0) {
        dp_error("lab exec needs root (setns into %s/%s)", LAB_NETNS_DIR, host->netns);
        return 1;
    }
    if (lab_enter(host, &err) < 0) {
        dp_error("%s", err.msg);
        return 1;
    }
    if (!container) {
        execvp(cmd[0], cmd);
        dp_error("cannot run '%s': %s", cmd[0], strerror(errno));
        return 127;
    }

    int errpipe[2];
    if (pipe2(errpipe, O_CLOEXEC) < 0) {
        dp_error("pipe: %s", strerror(errno));
        return 1;
    }
    fflush(stdout);
    fflush(stderr);
    /* clone(CLONE_NEWPID) rather than unshare()+fork(): only the child enters
     * the new pid namespace, ours stays as it was (so whatever this process
     * forks later, e.g. LeakSanitizer's tracer, still lives beside it).
     * Without a new stack the raw clone behaves like fork(). */
    pid_t pid = (pid_t)syscall(SYS_clone, CLONE_NEWPID | SIGCHLD, NULL, NULL, NULL, NULL);
    if (pid < 0) {
        dp_error("cannot create the container (clone CLONE_NEWPID): %s", strerror(errno));
        close(errpipe[0]);
        close(errpipe[1]);
        return 1;
    }
    if (pid == 0) {
        close(errpipe[0]);
        container_child(cmd, detach, log, errpipe[1]);
    }
    close(errpipe[1]);
    int child_errno = 0;
    ssize_t r;
    do
        r = read(errpipe[0], &child_errno, sizeof(child_errno));
    while (r < 0 && errno == EINTR);
    close(errpipe[0]);
    if (r > 0) {
        waitpid(pid, NULL, 0);
        dp_error("cannot run '%s' in the container: %s", cmd[0], strerror(child_errno));
        return 127;
    }
    if (pidfile) {
        if (write_pidfile(pidfile, pid) < 0) {
            kill(pid, SIGKILL);
            return 1;
        }
    } else if (detach) {
        printf("%d\n", (int)pid);
        fflush(stdout);
    } else {
        dp_info("container init pid %d (host-visible)", (int)pid);
    }
    if (detach)
        return 0;

    /* Foreground: forward the usual termination signals (an init ignores
     * unhandled ones from its own namespace, not from ours) and pass on the
     * exit status. */
    child_pid = pid;
    signal(SIGINT, forward_signal);
    signal(SIGTERM, forward_signal);
    signal(SIGHUP, forward_signal);
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            return 1;
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

int cmd_lab(int argc, char **argv)
{
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    const char *sub = argv[1];
    if (strcmp(sub, "--help") == 0 || strcmp(sub, "-h") == 0 || strcmp(sub, "help") == 0) {
        usage(stdout);
        return 0;
    }
    int help = 0;
    for (int i = 2; i < argc && strcmp(argv[i], "--") != 0; i++)
        help |= strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0;
    if (geteuid() != 0 && strcmp(sub, "status") != 0 && !help) {
        dp_error("'lab %s' needs root (it manages network namespaces)", sub);
        return 1;
    }
    if (strcmp(sub, "up") == 0)
        return lab_cmd_up(argc - 1, argv + 1);
    if (strcmp(sub, "down") == 0)
        return lab_cmd_down(argc - 1, argv + 1);
    if (strcmp(sub, "status") == 0)
        return lab_cmd_status(argc - 1, argv + 1);
    if (strcmp(sub, "exec") == 0)
        return lab_cmd_exec(argc - 1, argv + 1);
    if (strcmp(sub, "cluster") == 0)
        return cmd_lab_cluster(argc - 1, argv + 1);
    dp_error("unknown lab command '%s': use up, down, status, exec or cluster", sub);
    return 2;
}
