/* serve_live: memory mode on the source; see serve_live.h. The pure state
 * machine is lib/livesm.c; this file owns the I/O around it: the freezer
 * cgroup, CRIU, the persisted record, and the page server's hooks. */
#include "serve_live.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <netinet/in.h>
#include <arpa/inet.h>

#include "criu.h"
#include "freezer.h"
#include "jsonout.h"
#include "live_runc.h"
#include "livesm.h"
#include "orch.h"
#include "pagesrc_frozen.h"
#include "pipemax.h"

/* How long CRIU may take to write the skeleton (it holds no page data). */
#define DUMP_TIMEOUT_S 120.0

struct live_kind;

struct live {
    const struct live_kind *kind;
    struct dp_runc_ck *ck;     /* a container, while it is dumped */
    char workdir[PATH_MAX];
    char state_path[PATH_MAX + 32];
    char images[PATH_MAX + 16];
    struct dp_live_record rec;
    double stop_at;            /* tick stops the server after this (a final state was reached) */
};

/* Seconds since boot: the deadline is persisted, so it needs a clock shared by
 * every process (unlike CLOCK_MONOTONIC's guarantees on paper) that no one sets. */
static double boot_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_BOOTTIME, &ts); /* survives serve restarts, never jumps */
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* ---- the persisted record ----------------------------------------------- */

/* Durable before anything acts on it: tmp, fsync, rename, fsync the directory. */
static int persist(struct live *l, struct dp_err *err)
{
    char buf[1024], tmp[PATH_MAX + 48];
    int n = dp_live_record_format(&l->rec, buf, sizeof(buf));
    snprintf(tmp, sizeof(tmp), "%s.tmp", l->state_path);
    int fd = n < 0 ? -1 : open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
    if (fd < 0 || dp_write_full(fd, buf, (size_t)n) < 0 || fsync(fd) < 0 || close(fd) < 0 ||
        rename(tmp, l->state_path) < 0) {
        dp_err_set(err, "cannot persist the migration state to %s: %s", l->state_path, strerror(errno));
        return -1;
    }
    int dfd = open(l->workdir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return 0;
}

/* ---- the two kinds of source: a table of operations chosen once ---------- */

/* A --pid tree sits in a freezer cgroup of ours, dumped with criu; a runc
 * container in its own, runc's, dumped with runc checkpoint (src/live_runc.c).
 * The machine, the page source and the hooks are the same for both. */
struct live_kind {
    const char *what;
    int held_rename; /* the cgroup is ours: renamed NAME.held after the dump */
    int group;       /* the dumper leads its own process group (runc + criu) */
    /* starts the lazy dump of the tree frozen in cg; the dumper's pid and the
     * read end of its status pipe (one byte: images written) */
    pid_t (*spawn)(struct live *l, const char *cg, const char *page_server, int *status_rd, struct dp_err *err);
    void (*thawed)(struct live *l, const char *cg);                 /* after the rollback's thaw */
    int (*killed)(struct live *l, const char *cg, struct dp_err *err); /* after the release's kill and thaw */
};

/* ---- the cgroup's two names ---------------------------------------------- */

/* The images record the freezer cgroup the tree was dumped in (CRIU 4.2.1
 * ignores --cgroup-root for it here), and a restore on a host that has that
 * cgroup puts the restored tree into it: on this machine, into our FROZEN
 * cgroup. So the tree is dumped in NAME and, once frozen again, the cgroup is
 * renamed NAME.held; the record holds the .held path. The dump name is the
 * record's path without that suffix. */
#define HELD_SUFFIX ".held"

static void dump_name(const struct live *l, char *out, size_t len)
{
    size_t n = strlen(l->rec.cgroup) - (l->kind->held_rename ? strlen(HELD_SUFFIX) : 0);
    snprintf(out, len, "%.*s", (int)n, l->rec.cgroup);
}

/* The cgroup's path now: .held once renamed, else the dump name. */
static const char *cg_now(const struct live *l, char *buf, size_t len)
{
    struct stat st;
    if (stat(l->rec.cgroup, &st) == 0)
        return l->rec.cgroup;
    dump_name(l, buf, len);
    return buf;
}

/* ---- actions (idempotent) ------------------------------------------------ */

/* Does what a transition names; says where the process and its memory are. */
static int act(struct live *l, enum dp_live_action a)
{
    struct dp_err err = {{0}};
    char buf[sizeof(l->rec.cgroup)];
    const char *cg = cg_now(l, buf, sizeof(buf));
    if (a != DP_LIVE_ACT_NONE && l->kind->held_rename) {
        /* the empty cgroup a restore on this host made under the dump name */
        dump_name(l, buf, sizeof(buf));
        if (strcmp(buf, cg) != 0)
            rmdir(buf);
    }
    if (a == DP_LIVE_ACT_THAW) {
        if (dp_freezer_is_frozen(cg) < 0) {
            dp_warn("rolled back: the freezer cgroup %s is gone; the source %s (pid %d) was not held by it",
                    cg, l->kind->what, (int)l->rec.root_pid);
            return 0;
        }
        if (dp_freezer_set(cg, 0, 10, &err) < 0) {
            dp_error("ROLLBACK INCOMPLETE: %s. The source %s (pid %d) is still frozen in %s with all its "
                     "memory; thaw it with: echo THAWED > %s/freezer.state", err.msg, l->kind->what,
                     (int)l->rec.root_pid, cg, cg);
            return -1;
        }
        dp_info("rolled back: the source %s (pid %d) runs again on this host with its memory (cgroup %s "
                "thawed)", l->kind->what, (int)l->rec.root_pid, cg);
        l->kind->thawed(l, cg);
        return 0;
    }
    if (a == DP_LIVE_ACT_KILL_THAW) {
        if (dp_freezer_is_frozen(cg) < 0) {
            dp_info("released: the source %s is gone (cgroup %s removed)", l->kind->what, cg);
            return 0;
        }
        /* SIGKILL while frozen: it takes effect at the thaw, before any of
         * the tree's own code runs */
        int n = dp_freezer_kill_all(cg);
        if (dp_freezer_set(cg, 0, 10, &err) < 0 || l->kind->killed(l, cg, &err) < 0) {
            dp_error("RELEASE INCOMPLETE: %s. The source %s (pid %d) was sent SIGKILL in %s; the process "
                     "lives on the destination", err.msg, l->kind->what, (int)l->rec.root_pid, cg);
            return -1;
        }
        dp_info("released: the source %s (pid %d, %d processes) was killed while frozen and never ran "
                "again; the process lives on the destination", l->kind->what, (int)l->rec.root_pid, n);
    }
    return 0;
}

/* Feeds one event to the machine: persist, then act. -1 if refused. */
static int feed(struct live *l, enum dp_live_event ev, struct dp_err *err)
{
    enum dp_live_state next;
    enum dp_live_action a;
    if (dp_live_step(l->rec.state, ev, &next, &a) < 0) {
        dp_err_set(err, "'%s' is refused in state %s", dp_live_event_name(ev), dp_live_state_name(l->rec.state));
        return -1;
    }
    enum dp_live_state prev = l->rec.state;
    l->rec.state = next;
    if (persist(l, err) < 0) {
        l->rec.state = prev;
        return -1;
    }
    if (prev != next)
        dp_info("migration state: %s -> %s (%s)", dp_live_state_name(prev), dp_live_state_name(next),
                dp_live_event_name(ev));
    if (next == DP_LIVE_COMMITTED && prev != next)
        dp_info("committed: the destination restored the process; the source %s (pid %d) stays frozen in %s "
                "and never runs again; its memory is served from here until released",
                l->kind->what, (int)l->rec.root_pid, l->rec.cgroup);
    act(l, a);
    if (!dp_live_serving(next))
        l->stop_at = boot_now() + 0.3; /* let the reply go out */
    return 0;
}

/* ---- the page server's hooks -------------------------------------------- */

static int hook_attach(void *ctx, struct dp_checkpoint *cp, struct dp_err *err)
{
    struct live *l = ctx;
    char buf[sizeof(l->rec.cgroup)];
    return dp_frozen_attach(cp, cg_now(l, buf, sizeof(buf)), err);
}

static void hook_authenticated(void *ctx)
{
    struct live *l = ctx;
    struct dp_err err;
    if (l->rec.connected)
        return;
    l->rec.connected = 1;
    if (persist(l, &err) < 0)
        dp_warn("%s", err.msg);
}

static int hook_verdict(void *ctx, uint32_t verdict, char *out, size_t len, struct dp_err *err)
{
    struct live *l = ctx;
    enum dp_live_event ev;
    if (dp_live_verdict_event(verdict, &ev) == 0 && feed(l, ev, err) < 0)
        return -1;
    if (dp_json_line(json_pack("{s:s, s:s, s:i}", "mode", "memory", "state", dp_live_state_name(l->rec.state),
                               "source_pid", (int)l->rec.root_pid),
                     out, len) < 0) {
        dp_err_set(err, "out of memory printing the verdict's reply");
        return -1;
    }
    return 0;
}

static int hook_tick(void *ctx)
{
    struct live *l = ctx;
    struct dp_err err;
    double now = boot_now();
    if (l->rec.state == DP_LIVE_SERVING && l->rec.deadline_boot > 0 && now > l->rec.deadline_boot) {
        dp_warn("no destination reported a restore within the --connect-timeout bound (%s; %.1f s past it): "
                "rolling back", l->rec.connected ? "one connected, but never reported" : "none connected",
                now - l->rec.deadline_boot);
        if (feed(l, DP_LIVE_EV_CONNECT_TIMEOUT, &err) < 0)
            dp_error("%s", err.msg);
    }
    return l->stop_at > 0 && now >= l->stop_at;
}

/* ---- the dump ------------------------------------------------------------ */

/* A free TCP port on 127.0.0.1 for CRIU's own (unused) lazy page server. */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    socklen_t al = sizeof(a);
    int port = -1;
    if (fd >= 0 && bind(fd, (struct sockaddr *)&a, sizeof(a)) == 0 && getsockname(fd, (struct sockaddr *)&a, &al) == 0)
        port = ntohs(a.sin_port);
    if (fd >= 0)
        close(fd);
    return port;
}

/* Resident memory of the tree (smaps_rollup Rss of every process in cg):
 * what the lazy dump will hold in CRIU's pipes. */
static uint64_t tree_rss(const char *cg)
{
    pid_t *p;
    size_t n;
    struct dp_err e;
    uint64_t sum = 0;
    if (dp_freezer_pids(cg, &p, &n, &e) < 0)
        return 0;
    for (size_t i = 0; i < n; i++) {
        char path[64], line[256];
        snprintf(path, sizeof(path), "/proc/%d/smaps_rollup", (int)p[i]);
        FILE *f = fopen(path, "r");
        unsigned long long kb;
        while (f && fgets(line, sizeof(line), f))
            if (sscanf(line, "Rss: %llu kB", &kb) == 1)
                sum += kb << 10;
        if (f)
            fclose(f);
    }
    free(p);
    return sum;
}

/* The tree's kind: criu dump --lazy-pages of the tree in our cgroup, CRIU's
 * status fd on a pipe. */
static pid_t tree_spawn(struct live *l, const char *cg, const char *page_server, int *status_rd,
                        struct dp_err *err)
{
    char criu[PATH_MAX], port[16];
    snprintf(port, sizeof(port), "%s", strrchr(page_server, ':') + 1);
    long sid = 0;
    dp_proc_stat_field(l->rec.root_pid, 6, &sid);
    const char *extra[] = {"--lazy-pages", "--freeze-cgroup", cg, "--address", "127.0.0.1", "--port", port,
                           "--status-fd", "1", NULL};
    struct dp_dump_opts d = {.pid = l->rec.root_pid, .images_dir = l->images, .tcp_established = 1,
                             .shell_job = sid != l->rec.root_pid, .extra = extra};
    struct dp_criu_argv a;
    if (dp_criu_dump_args(&d, &a, err) < 0 || dp_criu_find(criu, sizeof(criu), err) < 0)
        return -1;
    char *argv[DP_CRIU_MAX_ARGS + 2];
    argv[0] = criu;
    for (size_t i = 0; i <= a.argc; i++)
        argv[i + 1] = (char *)a.argv[i];
    int sp[2];
    if (pipe2(sp, O_CLOEXEC) < 0) {
        dp_err_set(err, "pipe: %s", strerror(errno));
        return -1;
    }
    fflush(NULL);
    pid_t pid = fork();
    if (pid == 0)
        dp_criu_exec(criu, argv, -1, sp[1]);
    close(sp[1]);
    if (pid < 0) {
        dp_err_set(err, "fork: %s", strerror(errno));
        close(sp[0]);
        return -1;
    }
    *status_rd = sp[0];
    return pid;
}

/* A container's kind: runc checkpoint --lazy-pages (src/live_runc.c). */
static pid_t runc_spawn(struct live *l, const char *cg, const char *page_server, int *status_rd,
                        struct dp_err *err)
{
    (void)cg; /* runc hands CRIU the container's own freezer cgroup */
    return dp_live_runc_spawn(l->ck, l->rec.runc_id, l->images, page_server, status_rd, err);
}

/* After a rollback: our cgroup is left and removed; the tasks go back. */
static void tree_thawed(struct live *l, const char *cg)
{
    (void)l;
    struct dp_err err;
    if (dp_freezer_leave(cg, &err) < 0)
        dp_warn("%s (harmless: the cgroup is thawed)", err.msg);
}

/* After a rollback: the container stays in runc's cgroup, running. */
static void runc_thawed(struct live *l, const char *cg)
{
    (void)cg;
    dp_info("the container %s runs again (runc state: running)", l->rec.runc_id);
}

/* After the release: our cgroup goes once its tasks are gone. */
static int tree_killed(struct live *l, const char *cg, struct dp_err *err)
{
    (void)l;
    return dp_freezer_remove(cg, 20, err);
}

/* After the release: runc forgets the container (its cgroups are runc's). */
static int runc_killed(struct live *l, const char *cg, struct dp_err *err)
{
    (void)err;
    dp_live_runc_forget(l->rec.runc_id, l->rec.runc_root, cg);
    return 0;
}

static const struct live_kind KIND_TREE = {"tree", 1, 0, tree_spawn, tree_thawed, tree_killed};
static const struct live_kind KIND_RUNC = {"container", 0, 1, runc_spawn, runc_thawed, runc_killed};

/* The lazy dump with the tree frozen by the cgroup; returns once the images
 * are written (the dumper's status byte), with the cgroup FROZEN again and
 * the dumper killed: the tree is held by the freezer alone from then on. */
static int dump_skeleton(struct live *l, struct dp_err *err)
{
    char cg[sizeof(l->rec.cgroup)];
    dump_name(l, cg, sizeof(cg));
    if (dp_pipemax_check_size(tree_rss(cg), err) < 0)
        return -1;
    if (mkdir(l->images, 0700) < 0 && errno != EEXIST) {
        dp_err_set(err, "cannot create %s: %s", l->images, strerror(errno));
        return -1;
    }
    char ps[32];
    snprintf(ps, sizeof(ps), "127.0.0.1:%d", free_port());
    struct dp_pipemax pm;
    if (dp_pipemax_open(&pm, DP_PIPEMAX_CRIU_NEED, err) < 0)
        return -1;
    int rd = -1, rc = -1;
    pid_t pid = l->kind->spawn(l, cg, ps, &rd, err);
    if (pid > 0) {
        struct pollfd pf = {.fd = rd, .events = POLLIN};
        char one;
        int pr = poll(&pf, 1, (int)(DUMP_TIMEOUT_S * 1000));
        if (pr == 1 && read(rd, &one, 1) == 1) {
            /* Images written; CRIU holds the tree in ptrace stops now (it
             * thawed the cgroup after seizing). Freeze again, then kill it. */
            rc = dp_freezer_set(cg, 1, 10, err);
        } else {
            dp_err_set(err, "the lazy dump (%s) did not finish the images%s (logs: %s/dump.log%s)",
                       l->kind->group ? "runc checkpoint --lazy-pages" : "criu dump --lazy-pages",
                       pr == 0 ? " within the bound" : "", l->images, l->kind->group ? ", runc.log" : "");
        }
        kill(l->kind->group ? -pid : pid, SIGKILL);
        waitpid(pid, NULL, 0);
        close(rd);
    }
    struct dp_err perr;
    if (dp_pipemax_close(&pm, &perr) < 0)
        dp_warn("%s", perr.msg);
    if (rc == 0 && dp_freezer_is_frozen(cg) != 1) {
        dp_err_set(err, "the cgroup %s is not FROZEN after the dump", cg);
        rc = -1;
    }
    if (rc == 0 && l->kind->held_rename && rename(cg, l->rec.cgroup) < 0) {
        dp_err_set(err, "cannot rename the cgroup %s to %s: %s", cg, l->rec.cgroup, strerror(errno));
        rc = -1;
    }
    if (rc < 0) {
        char log[sizeof(l->images) + 16];
        snprintf(log, sizeof(log), "%s/runc.log", l->images);
        if (l->kind->group && access(log, F_OK) == 0)
            dp_criu_print_log_tail(log, 8);
        snprintf(log, sizeof(log), "%s/dump.log", l->images);
        dp_criu_print_log_tail(log, DP_CRIU_LOG_TAIL);
    }
    return rc;
}

/* A --pid tree: a freezer cgroup of ours, the record, the tree moved in. */
static int hold_tree(struct live *l, struct dp_err *err)
{
    char name[64];
    snprintf(name, sizeof(name), "live-%d-%llu", (int)l->rec.root_pid, l->rec.root_start);
    char cg[sizeof(l->rec.cgroup) - sizeof(HELD_SUFFIX)];
    if (dp_freezer_create(name, cg, sizeof(cg), err) < 0)
        return -1;
    snprintf(l->rec.cgroup, sizeof(l->rec.cgroup), "%s" HELD_SUFFIX, cg);
    return persist(l, err) < 0 || dp_freezer_add_tree(cg, l->rec.root_pid, err) < 0 ? -1 : 0;
}

/* A runc container: its own freezer cgroup, its rootfs manifest in the
 * images (the destination checks its bundle against it), the record. */
static int hold_runc(struct live *l, const struct serve_live_args *a, struct dp_err *err)
{
    char root[PATH_MAX] = "";
    if (strlen(a->runc_id) >= sizeof(l->rec.runc_id) || (a->runc_root && !realpath(a->runc_root, root)) ||
        strlen(root) >= sizeof(l->rec.runc_root)) {
        dp_err_set(err, "the container ID (at most %zu characters) or --runc-root %s is unusable%s%s",
                   sizeof(l->rec.runc_id) - 1, a->runc_root ? a->runc_root : "(none)", errno ? ": " : "",
                   errno ? strerror(errno) : "");
        return -1;
    }
    strcpy(l->rec.runc_id, a->runc_id);
    strcpy(l->rec.runc_root, root);
    if (dp_freezer_cgroup_of(l->rec.root_pid, l->rec.cgroup, sizeof(l->rec.cgroup), err) < 0)
        return -1;
    if (mkdir(l->images, 0700) < 0 && errno != EEXIST) {
        dp_err_set(err, "cannot create %s: %s", l->images, strerror(errno));
        return -1;
    }
    if (dp_runc_ck_manifest(l->ck, l->images) < 0) {
        dp_err_set(err, "the container's rootfs manifest could not be written (above)");
        return -1;
    }
    return persist(l, err);
}

/* Fresh start: hold the tree (cgroup, FREEZING record), dump. */
static int start(struct live *l, const struct serve_live_args *a)
{
    struct dp_err err = {{0}};
    static struct dp_runc_ck ck;
    pid_t pid = a->pid;
    if (a->runc_id) {
        if (dp_runc_ck_find(a->runc_id, a->runc_root, &ck) < 0)
            return 1;
        pid = ck.state.pid;
        l->ck = &ck;
    }
    unsigned long long st = dp_proc_starttime(pid);
    if (!st) {
        dp_error("no process %d (as seen from this pid namespace)", (int)pid);
        return 1;
    }
    l->rec = (struct dp_live_record){.state = DP_LIVE_FREEZING, .root_pid = pid, .root_start = st};
    l->kind = a->runc_id ? &KIND_RUNC : &KIND_TREE;
    errno = 0;
    if ((a->runc_id ? hold_runc(l, a, &err) : hold_tree(l, &err)) < 0) {
        dp_error("%s", err.msg);
        return 1;
    }
    uint64_t t0 = dp_now_ns();
    if (dump_skeleton(l, &err) < 0) {
        dp_error("%s", err.msg);
        struct dp_err e2;
        feed(l, DP_LIVE_EV_DUMP_FAILED, &e2);
        return 1;
    }
    l->rec.deadline_boot = a->connect_timeout_s > 0 ? boot_now() + a->connect_timeout_s : 0;
    if (feed(l, DP_LIVE_EV_DUMP_OK, &err) < 0) {
        dp_error("%s", err.msg);
        return 1;
    }
    dp_info("migration state in %s (a restarted serve with this --workdir carries on)", l->state_path);
    dp_info("skeleton of %s%s%s pid %d written to %s in %.3f s; the %s stays frozen in %s and its memory is "
            "served from there (no copy to disk)", a->runc_id ? "container " : "", a->runc_id ? a->runc_id : "",
            a->runc_id ? "," : "", (int)pid, l->images, (double)(dp_now_ns() - t0) / 1e9, l->kind->what,
            l->rec.cgroup);
    return 0;
}

int dp_serve_live(const struct serve_live_args *a, struct dp_server_opts *o)
{
    static struct live l;
    struct dp_err err = {{0}};
    if (strncmp(a->workdir, DP_LIVE_DEFAULT_WORKDIR "/", strlen(DP_LIVE_DEFAULT_WORKDIR) + 1) == 0 &&
        ((mkdir("/var/lib/distriproc", 0755) < 0 && errno != EEXIST) ||
         (mkdir(DP_LIVE_DEFAULT_WORKDIR, 0700) < 0 && errno != EEXIST))) {
        dp_error("cannot create %s: %s (give --workdir DIR)", DP_LIVE_DEFAULT_WORKDIR, strerror(errno));
        return 1;
    }
    if (dp_make_workdir(a->workdir, l.workdir, &err) < 0) {
        dp_error("%s", err.msg);
        return 1;
    }
    snprintf(l.state_path, sizeof(l.state_path), "%s/%s", l.workdir, DP_LIVE_STATE_NAME);
    snprintf(l.images, sizeof(l.images), "%s/images", l.workdir);
    uint8_t *text;
    size_t len;
    if (access(l.state_path, F_OK) == 0) {
        /* A restarted serve: carry on from the persisted state. */
        if (dp_read_file(l.state_path, &text, &len, &err) < 0 ||
            dp_live_record_parse((const char *)text, len, &l.rec, &err) < 0) {
            dp_error("cannot read %s: %s", l.state_path, err.msg);
            return 1;
        }
        free(text);
        l.kind = l.rec.runc_id[0] ? &KIND_RUNC : &KIND_TREE;
        if (a->runc_id && strcmp(a->runc_id, l.rec.runc_id) != 0) {
            dp_error("%s holds the migration of %s%s, not of container %s; use another --workdir", l.workdir,
                     l.rec.runc_id[0] ? "container " : "a --pid tree", l.rec.runc_id, a->runc_id);
            return 1;
        }
        if (a->pid && a->pid != l.rec.root_pid) {
            dp_error("%s holds the migration of pid %d, not %d; use another --workdir", l.workdir,
                     (int)l.rec.root_pid, (int)a->pid);
            return 1;
        }
        if (a->pid && !dp_live_serving(l.rec.state) && dp_proc_starttime(a->pid) != l.rec.root_start) {
            dp_error("%s holds a finished migration (%s) of an earlier process %d; remove it or give another "
                     "--workdir", l.workdir, dp_live_state_name(l.rec.state), (int)a->pid);
            return 1;
        }
        enum dp_live_state next;
        enum dp_live_action act_;
        dp_live_recover(l.rec.state, &next, &act_);
        dp_info("re-attaching to the migration of pid %d in %s (state %s)", (int)l.rec.root_pid, l.workdir,
                dp_live_state_name(l.rec.state));
        if (next != l.rec.state) {
            l.rec.state = next;
            if (persist(&l, &err) < 0) {
                dp_error("%s", err.msg);
                return 1;
            }
        }
        act(&l, act_);
        if (!dp_live_serving(l.rec.state)) {
            dp_info("the migration is over (%s): nothing to serve", dp_live_state_name(l.rec.state));
            return 0;
        }
        if (dp_freezer_is_frozen(l.rec.cgroup) != 1) {
            dp_error("the source %s's cgroup %s is not FROZEN (state %s): its memory cannot be served", l.kind->what,
                     l.rec.cgroup, dp_live_state_name(l.rec.state));
            return 1;
        }
    } else {
        if (!a->pid && !a->runc_id) {
            dp_error("no %s: give --pid PID (or --runc ID) to start a migration from this workdir", l.state_path);
            return 1;
        }
        int rc = start(&l, a);
        if (rc)
            return rc;
    }
    static const struct dp_live_hooks hooks = {hook_attach, hook_authenticated, hook_verdict, hook_tick, &l};
    o->images_dir = l.images;
    o->live = &hooks;
    o->sendfile_min = UINT64_MAX; /* /proc/PID/mem cannot be sendfile'd */
    int rc = dp_server_run(o, &err);
    if (rc < 0)
        dp_error("%s", err.msg);
    if (dp_live_serving(l.rec.state)) {
        /* serve stopped: before a verdict the source resumes; after a
         * commit it is released */
        struct dp_err e2;
        if (feed(&l, DP_LIVE_EV_STOPPED, &e2) < 0)
            dp_error("%s", e2.msg);
    }
    return rc < 0 || l.rec.state == DP_LIVE_ROLLED_BACK ? 1 : 0;
}
