/* distriproc migrate: a lazy migration across the lab in one command.
 *
 * checkpoint on src -> page server on src -> lazy restore on dst -> probe
 * until the restored process answers. Each step is our own subcommand run as
 * a child (the same binary), so what migrate measures is exactly what a user
 * typing the steps by hand gets. The page server, the lazy-pages daemon and
 * the restored tree keep running afterwards; their pids (with start times) go
 * to WORKDIR/migrate.state for `distriproc migrate --stop`. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include <jansson.h>

#include "commands.h"
#include "key.h"
#include "lab.h"
#include "lazyd.h"
#include "netbound.h"
#include "orch.h"
#include "warmup.h"
#include "image.h"
#include "perm.h"
#include "runc.h"
#include "util.h"
#include "wbwait.h"

#define SRC_NETNS (lab_hosts[0].netns)
#define DST_NETNS (lab_hosts[1].netns)
#define SRC_ADDR "10.250.0.1"
#define STATE_NAME "migrate.state"
#define RUNC_STATE_NAME "migrate.runc" /* "ID\nROOT\n" of a migrated container, for --stop */

static void usage(FILE *out)
{
    fprintf(out,
            "usage: distriproc migrate --pid PID --workdir DIR [options]\n"
            "       distriproc migrate --runc ID --runc-bundle BUNDLE --workdir DIR [options]\n"
            "       distriproc migrate --stop --workdir DIR\n"
            "\n"
            "Migrates the process tree rooted at PID (a container on the lab host src, see\n"
            "'distriproc lab exec src --container') lazily to the lab host dst, in one go:\n"
            "  1. checkpoint it on src (criu dump; the tree stops)     -> DIR/images\n"
            "  2. serve its memory from src (distriproc serve on " SRC_ADDR ":PORT)\n"
            "  3. restore it on dst (distriproc restore --host dst)   -> DIR/dst\n"
            "  4. with --probe: run CMD in dst's network namespace until it exits 0\n"
            "     (a try every %d ms)\n"
            "and prints the time to the first successful probe (time to first request),\n"
            "from the start of the restore and from the freeze (the start of the dump),\n"
            "and the bytes moved before that reply (skeleton + pages fetched).\n"
            "The page server, the lazy-pages daemon and the restored tree keep running;\n"
            "'distriproc migrate --stop --workdir DIR' stops all three.\n"
            "\n"
            "  --from memory|images  memory (the default with --pid): serve the lazy pages straight\n"
            "                        from the frozen source tree (distriproc serve --pid; only the\n"
            "                        skeleton is written, the source is killed once the restore on\n"
            "                        dst succeeded and resumes if it fails; docs/live-migration.md;\n"
            "                        a container: serve --runc, with --runc-id NEWID since the source\n"
            "                        keeps its ID in the one runc root until it is released);\n"
            "                        images (the default with --runc or --leave-running): criu dump\n"
            "                        writes all memory to DIR/images first, then serve --images\n"
            "  --connect-timeout SEC memory: the source rolls back unless dst reports its restore\n"
            "                        within SEC s of the dump (default 60)\n"
            "  --pid PID             root of the tree on src, as seen from this shell\n"
            "  --runc ID             migrate the runc container ID instead (running on src:\n"
            "                        its bundle joins src's network namespace); it is restored\n"
            "                        on dst from --runc-bundle BUNDLE (joining dst's namespace,\n"
            "                        with the same rootfs files: checked before the restore)\n"
            "  --runc-bundle BUNDLE  the bundle the container is restored from on dst\n"
            "  --runc-root DIR       runc's state directory on both hosts (runc --root)\n"
            "  --runc-id NEWID       the restored container's ID (default: ID; the dump removes\n"
            "                        the source container, unless --leave-running)\n"
            "  --workdir DIR         images, key, logs and state of this migration\n"
            "  --port PORT           page server port on " SRC_ADDR " (default 7070)\n"
            "  --key FILE            pre-shared key (default: DIR/key, made if missing)\n"
            "  --prefetch POLICY     passed to restore: auto (default), none, seq:N, stride, streams\n"
            "                        (auto: the first requests after a migration touch clustered\n"
            "                        pages (allocator arenas, tables); auto widens its window on\n"
            "                        hits and shrinks it on misses, so a 4 GiB Redis answers after\n"
            "                        ~90 faults instead of ~430 with none)\n"
            "  --emulate-rtt USEC    passed to serve: delay every reply by USEC microseconds\n"
            "  --fault-timeout SEC   passed to restore, as are the bounds below (restore's\n"
            "                        defaults when not given; see distriproc restore --help);\n"
            "                        each value is checked before the dump\n"
            "  --on-timeout wait|kill\n"
            "                        passed to restore\n"
            "  --writeback-timeout MS\n"
            "                        passed to restore\n"
            "  --tcp-user-timeout MS\n"
            "                        passed to restore\n"
            "  --request-timeout MS  passed to restore\n"
            "  --auth-retry MS       passed to restore\n"
            "  --max-reply SIZE      passed to restore\n"
            "  --max-skeleton SIZE   passed to restore\n"
            "  --budget SIZE|PCT%%    passed to restore: keep at most that much lazy memory resident\n"
            "  --warmup none|hot|all passed to restore (default all): after the restore the rest of\n"
            "                        the memory follows in the background, faults first, at the\n"
            "                        link's pace; the daemon's log and 'distriproc stats' (warmup:\n"
            "                        source_needed false) say when the source holds nothing more\n"
            "                        that dst needs. With --budget only what the budget holds\n"
            "  --probe CMD           shell command run in dst's netns (sh -c) until it exits 0\n"
            "                        e.g. 'redis-cli -h 10.250.0.2 ping | grep -qx PONG'\n"
            "  --probe-timeout SEC   give up probing after SEC seconds (default 60)\n"
            "  --leave-running       keep the source tree running after the dump (benchmarks:\n"
            "                        several migrations of one loaded process)\n"
            "  --json                one JSON object on stdout\n"
            "  --stop                kill the restored tree (a container: runc kill, runc delete),\n"
            "                        wait for the daemon, stop the server\n"
            "\n"
            "Logs: DIR/images/dump.log, DIR/serve.log, DIR/dst/restore.log, DIR/dst/lazyd.log,\n"
            "DIR/probe.log (the probe's output).\n",
            DP_ORCH_PROBE_INTERVAL_MS);
}

struct proc_ref {
    int pid;
    unsigned long long start;
};

struct state {
    struct proc_ref server, daemon, restored;
};

static int write_state(const char *workdir, const struct state *s)
{
    char path[PATH_MAX + 32], tmp[PATH_MAX + 40];
    snprintf(path, sizeof(path), "%s/%s", workdir, STATE_NAME);
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "w");
    if (!f)
        return -1;
    fprintf(f, "server %d %llu\ndaemon %d %llu\nrestored %d %llu\n", s->server.pid, s->server.start,
            s->daemon.pid, s->daemon.start, s->restored.pid, s->restored.start);
    if (fclose(f) != 0)
        return -1;
    return rename(tmp, path);
}

static int read_state(const char *workdir, struct state *s)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/%s", workdir, STATE_NAME);
    memset(s, 0, sizeof(*s));
    FILE *f = fopen(path, "r");
    if (!f)
        return -1;
    char name[32];
    int pid;
    unsigned long long start;
    while (fscanf(f, "%31s %d %llu", name, &pid, &start) == 3) {
        struct proc_ref *r = strcmp(name, "server") == 0     ? &s->server
                             : strcmp(name, "daemon") == 0   ? &s->daemon
                             : strcmp(name, "restored") == 0 ? &s->restored
                                                             : NULL;
        if (r) {
            r->pid = pid;
            r->start = start;
        }
    }
    fclose(f);
    return 0;
}

/* Kills the restored tree (SIGKILL to the init of its pid namespace takes all
 * of it), lets the daemon exit by itself, then stops the server. */
static int stop_all(const char *workdir, const struct state *s, int quiet)
{
    int rc = 0;
    if (dp_proc_same(s->restored.pid, s->restored.start)) {
        kill(s->restored.pid, SIGKILL);
        if (dp_proc_wait_gone(s->restored.pid, s->restored.start, 10) < 0) {
            dp_error("restored pid %d did not die within 10 s of SIGKILL", s->restored.pid);
            rc = 1;
        } else if (!quiet) {
            dp_info("killed the restored tree (pid %d)", s->restored.pid);
        }
    }
    if (dp_proc_same(s->daemon.pid, s->daemon.start)) {
        if (dp_proc_wait_gone(s->daemon.pid, s->daemon.start, 15) < 0) {
            dp_warn("lazy-pages daemon %d still running 15 s after its tasks died; SIGKILL", s->daemon.pid);
            kill(s->daemon.pid, SIGKILL);
            dp_proc_wait_gone(s->daemon.pid, s->daemon.start, 5);
        } else if (!quiet) {
            dp_info("the lazy-pages daemon (pid %d) exited; final stats in %s/dst/stats-final.json",
                    s->daemon.pid, workdir);
        }
    }
    if (dp_proc_same(s->server.pid, s->server.start)) {
        kill(s->server.pid, SIGTERM);
        if (dp_proc_wait_gone(s->server.pid, s->server.start, 10) < 0) {
            dp_warn("page server %d ignored SIGTERM for 10 s; SIGKILL", s->server.pid);
            kill(s->server.pid, SIGKILL);
            dp_proc_wait_gone(s->server.pid, s->server.start, 5);
        } else if (!quiet) {
            dp_info("stopped the page server (pid %d)", s->server.pid);
        }
    }
    return rc;
}

/* The migrated container's ID and runc root (for --stop), or none. */
static int write_runc_state(const char *workdir, const char *id, const char *root)
{
    char path[PATH_MAX + 32];
    snprintf(path, sizeof(path), "%s/%s", workdir, RUNC_STATE_NAME);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    fprintf(f, "%s\n%s\n", id, root ? root : "");
    return fclose(f);
}

/* After the restored tree is gone: runc forgets the container (runc delete). */
static void stop_runc(const char *workdir, int quiet)
{
    char path[PATH_MAX + 32], id[1100] = "", root[PATH_MAX] = "";
    snprintf(path, sizeof(path), "%s/%s", workdir, RUNC_STATE_NAME);
    FILE *f = fopen(path, "r");
    if (!f)
        return;
    if (fgets(id, sizeof(id), f) && fgets(root, sizeof(root), f)) {
        id[strcspn(id, "\n")] = '\0';
        root[strcspn(root, "\n")] = '\0';
    }
    fclose(f);
    struct dp_runc r;
    struct dp_err err = {{0}};
    if (!dp_runc_id_ok(id) || dp_runc_open(&r, root[0] ? root : NULL, &err) < 0) {
        dp_warn("cannot remove container '%s' from runc: %s", id, err.msg);
        return;
    }
    dp_runc_force_delete(&r, id);
    if (!quiet)
        dp_info("runc delete: container %s removed", id);
    unlink(path);
}

static int cmd_stop(const char *workdir)
{
    struct state s;
    if (read_state(workdir, &s) < 0) {
        dp_error("no %s/%s: nothing migrated with this --workdir (or already stopped)", workdir, STATE_NAME);
        return 1;
    }
    int rc = stop_all(workdir, &s, 0);
    if (rc == 0)
        stop_runc(workdir, 0);
    if (rc == 0) {
        char path[PATH_MAX + 32];
        snprintf(path, sizeof(path), "%s/%s", workdir, STATE_NAME);
        unlink(path);
        printf("stopped: restored tree, lazy-pages daemon and page server of %s\n", workdir);
    }
    return rc;
}

/* Restore's bounds (issue 12 item 4), passed on as given: a migration's
 * restore is bounded exactly as a restore run by hand. */
static const char *const restore_bounds[] = {"--fault-timeout",    "--on-timeout",      "--writeback-timeout",
                                             "--tcp-user-timeout", "--request-timeout", "--auth-retry",
                                             "--max-reply",        "--max-skeleton"};
#define NR_BOUNDS (sizeof(restore_bounds) / sizeof(restore_bounds[0]))

/* Refuses a bound's value restore would refuse, so a typo fails before the
 * dump freezes anything (--fault-timeout is checked by restore). 0 or -1. */
static int check_bound(const char *name, const char *val)
{
    struct dp_netbound scratch = *dp_netbound_get();
    struct dp_err err = {0};
    int ms;
    if (!strcmp(name, "on-timeout")) {
        if (strcmp(val, "wait") != 0 && strcmp(val, "kill") != 0)
            dp_err_set(&err, "--on-timeout is wait or kill (got '%s')", val);
    } else if (!strcmp(name, "writeback-timeout")) {
        if (dp_wait_parse_ms(val, &ms) < 0)
            dp_err_set(&err, "--writeback-timeout takes milliseconds, 1..3600000 (got '%s')", val);
    } else if (strcmp(name, "fault-timeout") != 0) {
        dp_netbound_parse_flag(&scratch, name, val, &err);
    }
    if (!err.msg[0])
        return 0;
    fprintf(stderr, "distriproc migrate: %s\n", err.msg);
    return -1;
}

struct margs {
    int pid, port, json, stop, leave_running, memory;
    const char *from, *connect_timeout;
    const char *bound[NR_BOUNDS]; /* restore_bounds' values, NULL: restore's default */
    const char *workdir, *key, *prefetch, *emulate_rtt, *probe;
    const char *runc, *runc_bundle, *runc_root, *runc_id, *budget, *warmup;
    double probe_timeout;
};

static int parse_margs(int argc, char **argv, struct margs *a)
{
    static const struct option opts[] = {
        {"pid", required_argument, NULL, 'p'},          {"workdir", required_argument, NULL, 'w'},
        {"port", required_argument, NULL, 'P'},         {"key", required_argument, NULL, 'k'},
        {"prefetch", required_argument, NULL, 'f'},     {"emulate-rtt", required_argument, NULL, 'r'},
        {"fault-timeout", required_argument, NULL, 'N'}, {"on-timeout", required_argument, NULL, 'N'},
        {"writeback-timeout", required_argument, NULL, 'N'}, {"tcp-user-timeout", required_argument, NULL, 'N'},
        {"request-timeout", required_argument, NULL, 'N'}, {"auth-retry", required_argument, NULL, 'N'},
        {"max-reply", required_argument, NULL, 'N'},    {"max-skeleton", required_argument, NULL, 'N'},
        {"probe", required_argument, NULL, 'q'},        {"probe-timeout", required_argument, NULL, 't'},
        {"json", no_argument, NULL, 'j'},               {"stop", no_argument, NULL, 's'},
        {"leave-running", no_argument, NULL, 'L'},      {"help", no_argument, NULL, 'h'},
        {"runc", required_argument, NULL, 'U'},         {"runc-bundle", required_argument, NULL, 'B'},
        {"runc-root", required_argument, NULL, 'R'},    {"runc-id", required_argument, NULL, 'I'},
        {"budget", required_argument, NULL, 'b'},       {"warmup", required_argument, NULL, 'W'},
        {"from", required_argument, NULL, 'F'},         {"connect-timeout", required_argument, NULL, 'C'},
        {NULL, 0, NULL, 0},
    };
    memset(a, 0, sizeof(*a));
    a->port = 7070;
    a->prefetch = "auto";
    a->warmup = "all";
    a->probe_timeout = 60;
    int c, li = 0;
    char *end;
    while ((c = getopt_long(argc, argv, "h", opts, &li)) != -1) {
        switch (c) {
        case 'N':
            if (check_bound(opts[li].name, optarg) < 0)
                return 2;
            for (size_t k = 0; k < NR_BOUNDS; k++)
                if (!strcmp(opts[li].name, restore_bounds[k] + 2))
                    a->bound[k] = optarg;
            break;
        case 'p':
            a->pid = (int)strtol(optarg, &end, 10);
            if (*end || a->pid <= 0) {
                fprintf(stderr, "distriproc migrate: --pid takes a process id (got '%s')\n", optarg);
                return 2;
            }
            break;
        case 'P':
            a->port = (int)strtol(optarg, &end, 10);
            if (*end || a->port <= 0 || a->port > 65535) {
                fprintf(stderr, "distriproc migrate: --port takes 1..65535 (got '%s')\n", optarg);
                return 2;
            }
            break;
        case 't':
            a->probe_timeout = strtod(optarg, &end);
            if (*end || !(a->probe_timeout > 0) || a->probe_timeout > 86400) {
                fprintf(stderr, "distriproc migrate: --probe-timeout takes seconds > 0 (got '%s')\n", optarg);
                return 2;
            }
            break;
        case 'w': a->workdir = optarg; break;
        case 'k': a->key = optarg; break;
        case 'f': a->prefetch = optarg; break;
        case 'r': a->emulate_rtt = optarg; break;
        case 'q': a->probe = optarg; break;
        case 'j': a->json = 1; break;
        case 's': a->stop = 1; break;
        case 'L': a->leave_running = 1; break;
        case 'U': a->runc = optarg; break;
        case 'B': a->runc_bundle = optarg; break;
        case 'R': a->runc_root = optarg; break;
        case 'I': a->runc_id = optarg; break;
        case 'b': a->budget = optarg; break;
        case 'W': {
            enum dp_warmup_mode m;
            if (dp_warmup_mode_parse(optarg, &m) < 0) {
                fprintf(stderr, "distriproc migrate: --warmup takes none, hot or all (got '%s')\n", optarg);
                return 2;
            }
            a->warmup = optarg;
            break;
        }
        case 'F': a->from = optarg; break;
        case 'C': a->connect_timeout = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc || !a->workdir || (!a->stop && !a->pid == !a->runc)) {
        fprintf(stderr, "distriproc migrate: --workdir and --pid or --runc ID (or --stop) are required\n\n");
        usage(stderr);
        return 2;
    }
    if (!a->stop && (!a->runc != !a->runc_bundle || ((a->runc_root || a->runc_id) && !a->runc))) {
        fprintf(stderr, "distriproc migrate: --runc ID needs --runc-bundle BUNDLE (the bundle to restore on dst); "
                        "--runc-root and --runc-id go with them\n");
        return 2;
    }
    if (a->from && strcmp(a->from, "memory") != 0 && strcmp(a->from, "images") != 0) {
        fprintf(stderr, "distriproc migrate: --from takes memory or images (got '%s')\n", a->from);
        return 2;
    }
    a->memory = a->from ? strcmp(a->from, "memory") == 0 : !a->runc && !a->leave_running;
    if (a->memory && a->leave_running) {
        fprintf(stderr, "distriproc migrate: --from memory always stops the source (once dst restored it); "
                        "use --from images with --leave-running\n");
        return 2;
    }
    if (a->connect_timeout && !a->memory) {
        fprintf(stderr, "distriproc migrate: --connect-timeout goes with --from memory\n");
        return 2;
    }
    if (a->runc && !a->runc_id)
        a->runc_id = a->runc;
    if (a->runc && (a->leave_running || a->memory) && strcmp(a->runc_id, a->runc) == 0) {
        fprintf(stderr, "distriproc migrate: with %s the source container keeps its ID (in the runc root both "
                        "hosts of the lab share) until it is released; give the restored one another with "
                        "--runc-id\n", a->memory ? "--from memory" : "--leave-running");
        return 2;
    }
    return -1;
}

/* Runs one of our own subcommands; its stdout (JSON) into *out. */
static int run_self(const char *const argv[], const char *what, double timeout_s, char **out)
{
    struct dp_err err = {{0}};
    int st = dp_orch_run(argv, NULL, timeout_s, out, -1, -1, &err);
    if (st < 0) {
        dp_error("%s: %s", what, err.msg);
        return -1;
    }
    if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        dp_error("%s failed (%s %d); its messages are above", what, WIFEXITED(st) ? "exit status" : "signal",
                 WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st));
        return -1;
    }
    return 0;
}

static double jnum(const char *json, const char *section, const char *key)
{
    double v = 0;
    if (dp_json_number(json, section, key, &v) < 0)
        return -1;
    return v;
}

int cmd_migrate(int argc, char **argv)
{
    struct margs a;
    int prc = parse_margs(argc, argv, &a);
    if (prc >= 0)
        return prc;
    char workdir[PATH_MAX];
    struct dp_err werr;
    if (dp_make_workdir(a.workdir, workdir, &werr) < 0) {
        dp_error("%s", werr.msg);
        return 1;
    }
    if (a.stop)
        return cmd_stop(workdir);

    struct state st;
    memset(&st, 0, sizeof(st));
    if (read_state(workdir, &st) == 0 &&
        (dp_proc_same(st.server.pid, st.server.start) || dp_proc_same(st.restored.pid, st.restored.start))) {
        dp_error("%s holds a migration that is still running; stop it first: distriproc migrate --stop "
                 "--workdir %s",
                 workdir, workdir);
        return 1;
    }
    memset(&st, 0, sizeof(st));

    char images[PATH_MAX + 16], dstdir[PATH_MAX + 16], keyfile[PATH_MAX + 16], serve_log[PATH_MAX + 16],
        probe_log[PATH_MAX + 16], listen[64], pidbuf[32];
    snprintf(images, sizeof(images), "%s/images", workdir);
    snprintf(dstdir, sizeof(dstdir), "%s/dst", workdir);
    snprintf(serve_log, sizeof(serve_log), "%s/serve.log", workdir);
    snprintf(probe_log, sizeof(probe_log), "%s/probe.log", workdir);
    snprintf(listen, sizeof(listen), SRC_ADDR ":%d", a.port);
    snprintf(pidbuf, sizeof(pidbuf), "%d", a.pid);
    struct stat sb;
    if (stat(images, &sb) == 0 || stat(dstdir, &sb) == 0) {
        dp_error("%s already holds images or a restore (images/, dst/); use a new --workdir", workdir);
        return 1;
    }
    struct dp_err err = {{0}};
    if (a.key) {
        snprintf(keyfile, sizeof(keyfile), "%s", a.key);
    } else {
        snprintf(keyfile, sizeof(keyfile), "%s/key", workdir);
        if (stat(keyfile, &sb) < 0 && dp_key_generate(keyfile, 0, &err) < 0) {
            dp_error("cannot make a key in %s: %s", keyfile, err.msg);
            return 1;
        }
    }
    const char *self = dp_self_exe();
    int rc = 1, n;
    uint64_t t_dumped = 0;
    double lazy_mem = -1;
    char srcdir[PATH_MAX + 16];
    char *ck = NULL, *rs = NULL, *stats = NULL;

    /* 1. Freeze and dump (memory mode: serve does both, step 2). */
    uint64_t t_freeze = dp_now_ns();
    if (a.memory) {
        snprintf(images, sizeof(images), "%s/src/images", workdir);
        goto serve;
    }
    if (!a.json) {
        if (a.runc)
            dp_info("1/4 checkpoint container %s on src -> %s", a.runc, images);
        else
            dp_info("1/4 checkpoint pid %d on src -> %s", a.pid, images);
    }
    const char *ck_argv[16];
    n = 0;
    ck_argv[n++] = self;
    ck_argv[n++] = "checkpoint";
    if (a.runc) {
        /* runc checkpoints in the container's own network namespace */
        ck_argv[n++] = "--runc";
        ck_argv[n++] = a.runc;
        if (a.runc_root) {
            ck_argv[n++] = "--runc-root";
            ck_argv[n++] = a.runc_root;
        }
    } else {
        ck_argv[n++] = "--host";
        ck_argv[n++] = "src";
        ck_argv[n++] = "--pid";
        ck_argv[n++] = pidbuf;
    }
    ck_argv[n++] = "--images";
    ck_argv[n++] = images;
    ck_argv[n++] = "--json";
    if (a.leave_running)
        ck_argv[n++] = "--leave-running";
    ck_argv[n] = NULL;
    if (run_self(ck_argv, "checkpoint", 900, &ck) < 0)
        goto out;
    t_dumped = dp_now_ns();

    /* 2. Page server on src. */
serve:
    if (!a.json)
        dp_info("2/4 page server on src at %s (log %s)%s", listen, serve_log,
                a.memory ? "; it freezes the tree and serves its memory (--from memory)" : "");
    const char *sv_argv[24];
    n = 0;
    sv_argv[n++] = self;
    sv_argv[n++] = "serve";
    if (a.memory) {
        snprintf(srcdir, sizeof(srcdir), "%s/src", workdir);
        if (a.runc) {
            sv_argv[n++] = "--runc";
            sv_argv[n++] = a.runc;
            if (a.runc_root) {
                sv_argv[n++] = "--runc-root";
                sv_argv[n++] = a.runc_root;
            }
        } else {
            sv_argv[n++] = "--pid";
            sv_argv[n++] = pidbuf;
        }
        sv_argv[n++] = "--workdir";
        sv_argv[n++] = srcdir;
        if (a.connect_timeout) {
            sv_argv[n++] = "--connect-timeout";
            sv_argv[n++] = a.connect_timeout;
        }
    } else {
        sv_argv[n++] = "--images";
        sv_argv[n++] = images;
    }
    sv_argv[n++] = "--listen";
    sv_argv[n++] = listen;
    sv_argv[n++] = "--key";
    sv_argv[n++] = keyfile;
    if (a.emulate_rtt) {
        sv_argv[n++] = "--emulate-rtt";
        sv_argv[n++] = a.emulate_rtt;
    }
    sv_argv[n] = NULL;
    pid_t server = dp_orch_spawn(sv_argv, SRC_NETNS, serve_log, &err);
    if (server < 0) {
        dp_error("cannot start the page server: %s", err.msg);
        goto out;
    }
    st.server.pid = server;
    st.server.start = dp_proc_starttime(server);
    write_state(workdir, &st);
    for (uint64_t until = dp_now_ns() + 60000000000ull;;) {
        if (dp_orch_can_connect(SRC_NETNS, listen, 200))
            break;
        if (waitpid(server, NULL, WNOHANG) == server || dp_now_ns() > until) {
            dp_error("the page server did not start listening on %s (see %s)", listen, serve_log);
            goto out;
        }
        usleep(5000);
    }
    uint64_t t_served = dp_now_ns();
    if (a.memory) {
        t_dumped = t_served; /* listening means the skeleton is written */
        struct dp_checkpoint *cp = NULL;
        if (dp_checkpoint_open(images, &cp, &err) == 0)
            lazy_mem = (double)cp->lazy_bytes;
        dp_checkpoint_close(cp);
    }

    /* 3. Lazy restore on dst. */
    if (!a.json)
        dp_info("3/4 lazy restore on dst (workdir %s, prefetch %s, warm-up %s)", dstdir, a.prefetch, a.warmup);
    const char *rs_argv[52];
    n = 0;
    rs_argv[n++] = self;
    rs_argv[n++] = "restore";
    rs_argv[n++] = "--source";
    rs_argv[n++] = listen;
    rs_argv[n++] = "--key";
    rs_argv[n++] = keyfile;
    rs_argv[n++] = "--workdir";
    rs_argv[n++] = dstdir;
    rs_argv[n++] = "--host";
    rs_argv[n++] = "dst";
    rs_argv[n++] = "--prefetch";
    rs_argv[n++] = a.prefetch;
    rs_argv[n++] = "--warmup";
    rs_argv[n++] = a.warmup;
    for (size_t k = 0; k < NR_BOUNDS; k++)
        if (a.bound[k]) {
            rs_argv[n++] = restore_bounds[k];
            rs_argv[n++] = a.bound[k];
        }
    if (a.budget) {
        rs_argv[n++] = "--budget";
        rs_argv[n++] = a.budget;
    }
    if (a.runc) {
        rs_argv[n++] = "--runc-bundle";
        rs_argv[n++] = a.runc_bundle;
        rs_argv[n++] = "--runc-id";
        rs_argv[n++] = a.runc_id;
        if (a.runc_root) {
            rs_argv[n++] = "--runc-root";
            rs_argv[n++] = a.runc_root;
        }
    }
    rs_argv[n++] = "--json";
    rs_argv[n] = NULL;
    uint64_t t_restore = dp_now_ns();
    if (run_self(rs_argv, "restore", 300, &rs) < 0)
        goto out;
    uint64_t t_restored = dp_now_ns();
    if (a.runc)
        write_runc_state(workdir, a.runc_id, a.runc_root);
    st.restored.pid = (int)jnum(rs, NULL, "pid");
    st.daemon.pid = (int)jnum(rs, NULL, "daemon_pid");
    st.restored.start = dp_proc_starttime(st.restored.pid);
    st.daemon.start = dp_proc_starttime(st.daemon.pid);
    write_state(workdir, &st);
    if (st.restored.pid <= 0 || !st.restored.start) {
        dp_error("restore reported no live restored pid (see %s/restore.log)", dstdir);
        goto out;
    }

    /* 4. Probe until the first success. */
    int attempts = 0, probed = 0;
    uint64_t t_probe_ok = 0;
    if (a.probe) {
        if (!a.json)
            dp_info("4/4 probing in dst: %s", a.probe);
        int lf = dp_open_log(probe_log, NULL);
        t_probe_ok = dp_orch_probe(a.probe, DST_NETNS, a.probe_timeout, DP_ORCH_PROBE_INTERVAL_MS, lf, st.restored.pid,
                                   st.restored.start, &attempts);
        probed = t_probe_ok != 0;
        if (!probed && !dp_proc_same(st.restored.pid, st.restored.start))
            dp_error("the restored process (pid %d) died while being probed (see %s/lazyd.log)",
                     st.restored.pid, dstdir);
        if (lf >= 0)
            close(lf);
        if (!probed) {
            dp_error("the probe did not succeed within %.0f s (%d attempts; output in %s)", a.probe_timeout,
                     attempts, probe_log);
            goto out;
        }
    }
    struct dp_err serr = {{0}};
    stats = dp_lazyd_control(dstdir, "stats", &serr);
    double skel = jnum(rs, NULL, "skeleton_bytes");
    double wire = stats ? jnum(stats, "total", "bytes_on_wire") : -1;
    double fetched = stats ? jnum(stats, "total", "pages_fetched") : -1;
    double remote = stats ? jnum(stats, "total", "remote_fraction") : -1;
    double lazy = a.memory ? lazy_mem : jnum(ck, NULL, "lazy_bytes");
    double dump_s = (double)(t_dumped - t_freeze) / 1e9, serve_s = (double)(t_served - t_dumped) / 1e9,
           restore_s = (double)(t_restored - t_restore) / 1e9;
    double ttfr_r = probed ? (double)(t_probe_ok - t_restore) / 1e9 : -1;
    double ttfr_f = probed ? (double)(t_probe_ok - t_freeze) / 1e9 : -1;
    double moved = (skel >= 0 ? skel : 0) + (wire >= 0 ? wire : 0);

    if (a.json) {
        /* serve accepted --emulate-rtt, so it is a number of microseconds */
        json_int_t rtt = a.emulate_rtt ? strtoll(a.emulate_rtt, NULL, 10) : 0;
        json_t *o = json_pack("{s:i, s:i, s:i, s:s, s:s, s:s, s:s, s:I, s:I, s:f, s:f, s:f, s:f, s:f, s:f, s:s?, s:i, "
                              "s:f, s:f, s:I, s:I, s:I, s:I, s:f, s:s?}",
                              "pid", st.restored.pid, "daemon_pid", st.daemon.pid, "server_pid", st.server.pid,
                              "mode", a.memory ? "memory" : "images", "source", listen, "workdir", workdir, "prefetch", a.prefetch, "emulate_rtt_us", rtt,
                              "lazy_bytes", (json_int_t)lazy, "dump_s", dump_s, "serve_start_s", serve_s, "restore_s",
                              restore_s, "criu_restore_s", jnum(rs, NULL, "restore_s"), "skeleton_s",
                              jnum(rs, NULL, "skeleton_s"), "daemon_start_s", jnum(rs, NULL, "daemon_start_s"),
                              "probe", a.probe, "probe_attempts", attempts, "ttfr_from_restore_s", ttfr_r,
                              "ttfr_from_freeze_s", ttfr_f, "skeleton_bytes", (json_int_t)skel,
                              "fetched_bytes_at_reply", (json_int_t)wire, "pages_fetched_at_reply",
                              (json_int_t)fetched, "bytes_before_reply", (json_int_t)moved,
                              "remote_fraction_at_reply", remote, "runc_id", a.runc ? a.runc_id : NULL);
        if (o)
            json_object_set_new(o, "warmup", json_string(a.warmup));
        if (!o || json_dumpf(o, stdout, JSON_REAL_PRECISION(9)) < 0)
            dp_error("cannot print the result as JSON (a path or name that is not UTF-8?)");
        else
            putchar('\n');
        json_decref(o);
    } else {
        char b1[32], b2[32], b3[32], b4[32];
        dp_format_bytes(lazy > 0 ? (uint64_t)lazy : 0, b1, sizeof(b1));
        dp_format_bytes(skel > 0 ? (uint64_t)skel : 0, b2, sizeof(b2));
        dp_format_bytes(wire > 0 ? (uint64_t)wire : 0, b3, sizeof(b3));
        dp_format_bytes((uint64_t)moved, b4, sizeof(b4));
        if (a.runc)
            printf("migrated container %s (src) -> %s, pid %d (dst), lazy memory %s left on src\n", a.runc,
                   a.runc_id, st.restored.pid, b1);
        else
            printf("migrated pid %d (src) -> pid %d (dst), lazy memory %s left on src\n", a.pid, st.restored.pid,
                   b1);
        printf("  %-34s %10.3f s  (--from %s)\n", a.memory ? "dump (freeze to skeleton, served)" :
               "dump (freeze to images)", a.memory ? dump_s + serve_s : dump_s, a.memory ? "memory" : "images");
        printf("  %-34s %10.3f s\n", "page server up", serve_s);
        printf("  %-34s %10.3f s\n", "restore (skeleton + criu)", restore_s);
        if (probed) {
            printf("  %-34s %10.3f s  (%d probe%s)\n", "time to first reply, from restore", ttfr_r, attempts,
                   attempts == 1 ? "" : "s");
            printf("  %-34s %10.3f s\n", "time to first reply, from freeze", ttfr_f);
        }
        printf("  %-34s %10s  (skeleton %s + pages %s)\n", "bytes moved before the reply", b4, b2, b3);
        if (remote >= 0)
            printf("  %-34s %9.1f %%\n", "remote fraction now", remote * 100);
        printf("running: page server pid %d, lazy-pages daemon pid %d, restored pid %d\n"
               "stats:   distriproc stats --workdir %s\n"
               "stop:    distriproc migrate --stop --workdir %s\n",
               st.server.pid, st.daemon.pid, st.restored.pid, dstdir, workdir);
    }
    rc = 0;
out:
    if (rc != 0 && (st.server.pid || st.restored.pid)) {
        dp_warn("cleaning up what this migration started");
        stop_all(workdir, &st, 1);
        stop_runc(workdir, 1);
        char path[PATH_MAX + 32];
        snprintf(path, sizeof(path), "%s/%s", workdir, STATE_NAME);
        unlink(path);
    }
    free(ck);
    free(rs);
    free(stats);
    return rc;
}
