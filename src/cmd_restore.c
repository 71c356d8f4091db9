/* distriproc restore: lazy restore on the destination. Pulls the skeleton
 * images from the page server (or uses a local images directory), starts the
 * lazy-pages daemon on WORKDIR/lazy-pages.socket, runs `criu restore
 * --lazy-pages --restore-detached`, reports how long the restore took, and
 * leaves the daemon serving faults until the last restored task exits. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "client.h"
#include "commands.h"
#include "cpid.h"
#include "criu.h"
#include "lab.h"
#include "hotset.h"
#include "key.h"
#include "lazyd.h"
#include "pageserver_hotset.h"
#include "proto_hotset.h"
#include "pagesrc.h"
#include "util.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: distriproc restore (--source ADDR:PORT --key FILE | --images DIR) --workdir DIR [options]\n"
            "\n"
            "Restores a checkpointed process tree before its memory arrives: the process runs\n"
            "at once and each page of its private memory is fetched when it is first touched.\n"
            "\n"
            "  --source ADDR:PORT      the page server (distriproc serve) holding the checkpoint\n"
            "  --key FILE              pre-shared key of the page server\n"
            "  --insecure-plaintext    frames in clear, for a server run with it (no encryption)\n"
            "  --images DIR            local mode: serve pages from a CRIU images directory\n"
            "                          (no server; the local-floor baseline)\n"
            "  --workdir DIR           lazy-pages.socket, control.sock, logs, pulled images\n"
            "  --host HOST             restore inside lab host HOST's network namespace (dp-HOST);\n"
            "                          the daemon's page traffic goes through that namespace too\n"
            "  --prefetch POLICY       none (default), seq:N, stride[:DEPTH], auto[:MAX]\n"
            "  --background-fetch RATE copy the remaining pages in the background at RATE bytes/s\n"
            "                          (e.g. 50M; off by default: pages stay remote until touched)\n"
            "  --fault-timeout SEC     how long a fault may wait for the page source (default: no limit)\n"
            "  --on-timeout wait|kill  after --fault-timeout: keep waiting with a warning (default),\n"
            "                          or SIGKILL the restored tree\n"
            "  --budget SIZE|PCT%%     keep at most SIZE (e.g. 256M) or PCT%% of the checkpoint's lazy\n"
            "                          memory resident; colder pages are written back if modified\n"
            "                          (durably, to the page server) and evicted. Needs --source.\n"
            "                          See docs/budget.md for the slack above the budget.\n"
            "  --evict-batch PAGES     pages evicted per stop of the process (default 256, max 256)\n"
            "  --victim-buffer SIZE    recently evicted pages kept in the daemon (default 8M)\n"
            "  --restore-timeout SEC   bound for criu restore itself (default 120)\n"
            "  --shell-job             pass --shell-job to criu (if the dump needed it)\n"
            "  --hotset KIND|FILE      fetch the checkpoint's working set in bulk right after the\n"
            "                          restore: auto (the newest recorded trace, else the\n"
            "                          classification), classify, trace, merged, or a hot-set\n"
            "                          FILE. It must belong to this checkpoint: one made for\n"
            "                          another (or an earlier) checkpoint is refused and nothing\n"
            "                          is restored. auto without any hot set restores without one\n"
            "  --hotset-mode MODE      install (default): replayed pages go into the process at\n"
            "                          once; stage: the daemon keeps them and installs one when it\n"
            "                          is first touched, so the replay's hit rate is measured\n"
            "                          exactly (distriproc stats: replay.stage). Not with --budget\n"
            "  --replay-window BYTES   hot-set bytes in flight at once (default 8M)\n"
            "  --record-trace SEC      record the first-touch trace of the first SEC seconds and\n"
            "                          store it with the checkpoint (page server, or the local\n"
            "                          images) for the next restore; default 10 from a page server\n"
            "                          without --hotset, else 0 (off); also WORKDIR/trace.bin\n"
            "  --foreground            stay attached until the last restored task exits\n"
            "  --json                  print the result as JSON\n"
            "  -v, --verbose           debug logging, and criu's restore.log at -v4 (default -v3:\n"
            "                          -v4 writes a line per pagemap entry, 5000 at 4 GiB, ~8 ms)\n"
            "\n"
            "Afterwards: distriproc stats --workdir DIR\n");
}

struct restore_args {
    int verbose; /* -v: also criu's restore.log at -v4 */
    const char *source, *key, *images, *workdir, *host, *prefetch, *hotset;
    uint64_t replay_window;
    double record_s;
    uint64_t bg_rate, budget, vbuf;
    double budget_frac;
    unsigned evict_batch;
    double fault_timeout, restore_timeout;
    int on_timeout_kill, shell_job, foreground, json;
    int stage;   /* --hotset-mode stage */
};

static int parse_seconds(const char *s, double *out)
{
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (errno || *end || v < 0 || v > 86400 * 365)
        return -1;
    *out = v;
    return 0;
}

static int enter_netns(const char *host)
{
    char name[256], path[PATH_MAX];
    const struct lab_host *lh = lab_host_find(host);
    if (lh)
        snprintf(name, sizeof(name), "%s", lh->netns);
    else
        snprintf(name, sizeof(name), "dp-%s", host);
    if (dp_netns_path(strchr(host, '/') ? host : name, path, sizeof(path)) < 0) {
        dp_error("bad --host '%s'", host);
        return -1;
    }
    struct dp_err err;
    if (dp_netns_enter(path, &err) < 0) {
        dp_error("%s", err.msg);
        return -1;
    }
    return 0;
}

/* ---- working set (issue 7): the recorded trace goes to the page server
 * (or into the local images) from a thread with its own connection, so the
 * daemon's loop never blocks on it. ---- */
struct trace_up {
    const char *source, *key, *workdir, *images_local;
    pthread_t th;
    int started;
    uint8_t *buf;
    size_t len;
};
static struct trace_up trace_up;

static void *trace_upload(void *arg)
{
    struct trace_up *u = arg;
    struct dp_err err = {{0}};
    static uint8_t key[DP_KEY_MAX];
    struct dp_client_opts o = {.connect_timeout_ms = 10000, .give_up_ms = 30000};
    struct dp_client *c = NULL;
    uint64_t pages;
    uint32_t runs;
    if (dp_parse_hostport(u->source, &o.addr) < 0 || dp_key_load(u->key, key, &o.key_len, &err) < 0 ||
        (o.key = key, dp_client_connect(&o, &c, &err) < 0) ||
        dp_client_put_trace(c, u->buf, u->len, &pages, &runs, 30000, &err) < 0)
        dp_warn("the fault trace was not stored on %s: %s (it stays in %s/trace.bin)", u->source, err.msg,
                u->workdir);
    else
        dp_info("fault trace stored on %s: %llu pages in %u runs", u->source, (unsigned long long)pages, runs);
    if (c)
        dp_client_close(c);
    return NULL;
}

static void trace_sink(void *ctx, const uint8_t *buf, size_t len)
{
    struct trace_up *u = ctx;
    char path[PATH_MAX + 16];
    snprintf(path, sizeof(path), "%s/trace.bin", u->workdir);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(buf, 1, len, f) != len || fclose(f) != 0)
        dp_warn("cannot write %s: %s", path, strerror(errno));
    struct dp_err err = {{0}};
    if (u->images_local) {
        struct dp_checkpoint *cp = NULL;
        struct dp_hotset_store *st = NULL;
        uint64_t pages;
        uint32_t runs;
        char name[256];
        if (dp_checkpoint_open(u->images_local, &cp, &err) < 0 || dp_hotset_store_open(cp, &st, &err) < 0 ||
            dp_hotset_store_put_trace(st, buf, len, &pages, &runs, name, sizeof(name), &err) != DP_E_OK)
            dp_warn("the fault trace was not stored in %s: %s", u->images_local, err.msg);
        else
            dp_info("fault trace stored as %s/%s", u->images_local, name);
        dp_hotset_store_close(st);
        dp_checkpoint_close(cp);
        return;
    }
    u->buf = malloc(len);
    if (!u->buf)
        return;
    memcpy(u->buf, buf, len);
    u->len = len;
    if (pthread_create(&u->th, NULL, trace_upload, u) == 0)
        u->started = 1;
}

static void trace_wait(void)
{
    if (trace_up.started)
        pthread_join(trace_up.th, NULL);
    trace_up.started = 0;
    free(trace_up.buf);
}

/* The hot set to replay: fetched from the page server (or read from the
 * local images, or FILE), then checked against this checkpoint. Returns 0
 * with *out set, 1 when auto found none (restore without one), -1 refused. */
static int load_hotset(const struct restore_args *a, struct dp_pagesrc *src, const struct dp_checkpoint *cp,
                       const uint8_t id[DP_CPID_SIZE], struct dp_hotset *out)
{
    struct dp_err err = {{0}};
    uint32_t which;
    if (dp_hotset_which_parse(a->hotset, &which) < 0) {
        if (dp_hotset_load(a->hotset, cp, id, out, &err) < 0) {
            dp_error("--hotset %s refused: %s", a->hotset, err.msg);
            return -1;
        }
        return 0;
    }
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = 0;
    if (a->images) {
        struct dp_hotset_store *st;
        if (dp_hotset_store_open(cp, &st, &err) < 0) {
            dp_error("%s", err.msg);
            return -1;
        }
        rc = dp_hotset_store_get(st, which, &buf, &len, &err);
        dp_hotset_store_close(st);
        rc = rc == DP_E_OK ? 0 : rc == DP_E_NO_HOTSET ? 1 : -1;
    } else if (dp_client_get_hotset(dp_pagesrc_remote_client(src), which, &buf, &len, 30000, &err) < 0) {
        rc = strstr(err.msg, "no fault trace") || strstr(err.msg, "no classification") ? 1 : -1;
    }
    if (rc == 1 && which == DP_HOTSET_AUTO) {
        dp_info("no hot set for this checkpoint yet (%s); restoring without one", err.msg);
        return 1;
    }
    if (rc != 0) {
        dp_error("--hotset %s: %s", a->hotset, err.msg);
        return -1;
    }
    /* the server checked it; check again against our own copy of the images */
    char name[64];
    snprintf(name, sizeof(name), "hot set '%s' from the source", a->hotset);
    if (dp_hotset_decode(name, buf, len, out, &err) < 0 || dp_hotset_check(name, out, cp, id, &err) < 0) {
        dp_error("--hotset %s refused: %s", a->hotset, err.msg);
        if (out->tasks)
            dp_hotset_free(out);
        free(buf);
        return -1;
    }
    free(buf);
    return 0;
}

/* The daemon's process: detached from the terminal's session; logs to
 * WORKDIR/lazyd.log unless in the foreground. */
static pid_t start_daemon(const struct restore_args *a, struct dp_lazyd_opts *o, int ready_wr)
{
    pid_t pid = fork();
    if (pid != 0)
        return pid;
    setsid();
    if (chdir("/") < 0)
        _exit(1);
    int devnull = open("/dev/null", O_RDWR);
    if (devnull >= 0) {
        dup2(devnull, STDIN_FILENO);
        dup2(devnull, STDOUT_FILENO);
    }
    if (!a->foreground) {
        char log[PATH_MAX];
        snprintf(log, sizeof(log), "%s/lazyd.log", a->workdir);
        int lf = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (lf >= 0)
            dup2(lf, STDERR_FILENO);
    }
    dp_log_set_tag("distriproc lazyd");
    o->ready_fd = ready_wr;
    int rc = dp_lazyd_run(o);
    trace_wait();
    o->src->ops->close(o->src);
    _exit(rc);
}

int cmd_restore(int argc, char **argv)
{
    static const struct option opts[] = {
        {"source", required_argument, NULL, 's'},    {"key", required_argument, NULL, 'k'},
        {"images", required_argument, NULL, 'i'},    {"workdir", required_argument, NULL, 'w'},
        {"host", required_argument, NULL, 'H'},      {"prefetch", required_argument, NULL, 'p'},
        {"background-fetch", required_argument, NULL, 'b'},
        {"fault-timeout", required_argument, NULL, 'f'}, {"on-timeout", required_argument, NULL, 'o'},
        {"restore-timeout", required_argument, NULL, 'r'}, {"shell-job", no_argument, NULL, 'S'},
        {"foreground", no_argument, NULL, 'F'},      {"json", no_argument, NULL, 'j'},
        {"budget", required_argument, NULL, 'B'},    {"evict-batch", required_argument, NULL, 'E'},
        {"victim-buffer", required_argument, NULL, 'V'},
        {"verbose", no_argument, NULL, 'v'},         {"help", no_argument, NULL, 'h'},
        {"hotset", required_argument, NULL, 'T'},    {"replay-window", required_argument, NULL, 'W'},
        {"record-trace", required_argument, NULL, 'R'}, {"hotset-mode", required_argument, NULL, 'M'},
        {"insecure-plaintext", no_argument, NULL, 'P'},
        {NULL, 0, NULL, 0},
    };
    struct restore_args a = {.prefetch = "none", .restore_timeout = 120, .record_s = -1};
    int c;
    while ((c = getopt_long(argc, argv, "hv", opts, NULL)) != -1) {
        switch (c) {
        case 's': a.source = optarg; break;
        case 'k': a.key = optarg; break;
        case 'P': dp_client_set_insecure_plaintext(true); break;
        case 'i': a.images = optarg; break;
        case 'w': a.workdir = optarg; break;
        case 'H': a.host = optarg; break;
        case 'p': a.prefetch = optarg; break;
        case 'b':
            if (dp_parse_size(optarg, &a.bg_rate) < 0 || a.bg_rate == 0) {
                fprintf(stderr, "distriproc restore: --background-fetch takes bytes per second such as 50M (got '%s')\n", optarg);
                return 2;
            }
            break;
        case 'f':
            if (parse_seconds(optarg, &a.fault_timeout) < 0) {
                fprintf(stderr, "distriproc restore: --fault-timeout takes seconds (got '%s')\n", optarg);
                return 2;
            }
            break;
        case 'r':
            if (parse_seconds(optarg, &a.restore_timeout) < 0 || a.restore_timeout <= 0) {
                fprintf(stderr, "distriproc restore: --restore-timeout takes seconds > 0 (got '%s')\n", optarg);
                return 2;
            }
            break;
        case 'o':
            if (strcmp(optarg, "wait") == 0) {
                a.on_timeout_kill = 0;
            } else if (strcmp(optarg, "kill") == 0) {
                a.on_timeout_kill = 1;
            } else {
                fprintf(stderr, "distriproc restore: --on-timeout is wait or kill (got '%s')\n", optarg);
                return 2;
            }
            break;
        case 'B': {
            size_t len = strlen(optarg);
            if (len > 1 && optarg[len - 1] == '%') {
                char *end;
                double pct = strtod(optarg, &end);
                if (end != optarg + len - 1 || !(pct > 0) || pct > 100) {
                    fprintf(stderr, "distriproc restore: --budget PCT%% takes a percentage in (0, 100] (got '%s')\n", optarg);
                    return 2;
                }
                a.budget_frac = pct / 100.0;
            } else if (dp_parse_size(optarg, &a.budget) < 0 || a.budget < 4096) {
                fprintf(stderr, "distriproc restore: --budget takes a size such as 512M (>= 4K) or a percentage "
                                "such as 50%% (got '%s')\n", optarg);
                return 2;
            }
            break;
        }
        case 'E': {
            char *end;
            long n = strtol(optarg, &end, 10);
            if (*end || n < 1 || n > 256) {
                fprintf(stderr, "distriproc restore: --evict-batch takes 1..256 pages (got '%s')\n", optarg);
                return 2;
            }
            a.evict_batch = (unsigned)n;
            break;
        }
        case 'V':
            if (dp_parse_size(optarg, &a.vbuf) < 0) {
                fprintf(stderr, "distriproc restore: --victim-buffer takes a size such as 8M (got '%s')\n", optarg);
                return 2;
            }
            break;
        case 'T': a.hotset = optarg; break;
        case 'M':
            if (strcmp(optarg, "install") && strcmp(optarg, "stage")) {
                fprintf(stderr, "distriproc restore: --hotset-mode takes install or stage (got '%s')\n", optarg);
                return 2;
            }
            a.stage = strcmp(optarg, "stage") == 0;
            break;
        case 'W':
            if (dp_parse_size(optarg, &a.replay_window) < 0 || a.replay_window < DP_PAGE_SIZE ||
                a.replay_window > (1ull << 32)) {
                fprintf(stderr, "distriproc restore: --replay-window takes bytes such as 8M (got '%s')\n", optarg);
                return 2;
            }
            break;
        case 'R':
            if (parse_seconds(optarg, &a.record_s) < 0) {
                fprintf(stderr, "distriproc restore: --record-trace takes seconds (got '%s')\n", optarg);
                return 2;
            }
            break;
        case 'S': a.shell_job = 1; break;
        case 'F': a.foreground = 1; break;
        case 'j': a.json = 1; break;
        case 'v':
            dp_log_set_level(DP_LOG_DEBUG);
            a.verbose = 1;
            break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind != argc || !a.workdir || (!a.source == !a.images) || (a.source && !a.key)) {
        fprintf(stderr, "distriproc restore: --workdir and either --images DIR or --source ADDR:PORT "
                        "with --key FILE are required\n\n");
        usage(stderr);
        return 2;
    }
    if ((a.budget || a.budget_frac > 0) && !a.source) {
        fprintf(stderr, "distriproc restore: --budget needs --source: evicted pages that were modified are "
                        "written back to the page server, and local images cannot take them\n");
        return 2;
    }
    if (a.stage && !a.hotset) {
        fprintf(stderr, "distriproc restore: --hotset-mode stage measures the replay of a hot set: give one "
                        "with --hotset KIND|FILE\n");
        return 2;
    }
    if (a.stage && (a.budget || a.budget_frac > 0)) {
        fprintf(stderr, "distriproc restore: --hotset-mode stage keeps the replayed pages in the daemon until "
                        "they are used, outside any budget, so it does not combine with --budget; measure the "
                        "hit rate without --budget (see docs/hotset.md)\n");
        return 2;
    }
    struct dp_err err = {{0}};
    struct dp_lazyd_opts lo;
    memset(&lo, 0, sizeof(lo));
    if (dp_prefetch_parse(a.prefetch, &lo.prefetch, &err) < 0) {
        fprintf(stderr, "distriproc restore: %s\n", err.msg);
        return 2;
    }
    uint64_t t_start = dp_now_ns();

    char workdir[PATH_MAX];
    struct dp_err werr;
    if (dp_make_workdir(a.workdir, workdir, &werr) < 0) {
        dp_error("%s", werr.msg);
        return 1;
    }
    a.workdir = workdir;
    char images[PATH_MAX + 32], pidfile[PATH_MAX + 32], log[PATH_MAX + 32];
    snprintf(pidfile, sizeof(pidfile), "%s/%s", workdir, DP_RESTORED_PID_NAME);
    snprintf(log, sizeof(log), "%s/restore.log", workdir);
    unlink(pidfile);

    if (a.host && enter_netns(a.host) < 0)
        return 1;

    /* The page source first: a wrong key or an unreachable server fails
     * here, before anything is restored. */
    struct dp_pagesrc *src;
    uint64_t skel_bytes = 0;
    if (a.images) {
        if (!realpath(a.images, images)) {
            dp_error("--images %s: %s", a.images, strerror(errno));
            return 1;
        }
        src = dp_pagesrc_local_open(images, &err);
        if (!src) {
            dp_error("cannot use the images in %s: %s", images, err.msg);
            return 1;
        }
    } else {
        src = dp_pagesrc_remote_open(a.source, a.key, &err);
        if (!src) {
            dp_error("cannot use the page server %s: %s", a.source, err.msg);
            return 1;
        }
        snprintf(images, sizeof(images), "%s/images", workdir);
        struct dp_skel_result sk;
        if (!a.json)
            dp_info("pulling the skeleton images from %s into %s", a.source, images);
        if (dp_client_get_skeleton(dp_pagesrc_remote_client(src), images, &sk, 120000, &err) < 0) {
            dp_error("pulling the skeleton from %s failed: %s", a.source, err.msg);
            src->ops->close(src);
            return 1;
        }
        skel_bytes = sk.bytes_received;
        char b1[32], b2[32];
        dp_format_bytes(sk.bytes_received, b1, sizeof(b1));
        dp_format_bytes(sk.bytes_apparent, b2, sizeof(b2));
        if (!a.json)
            dp_info("skeleton: %u files, %s received (%s apparent: lazy memory stays remote)", sk.files, b1, b2);
    }

    uint64_t t_skel = dp_now_ns();
    int lfd = dp_lazyd_listen(workdir, &err);
    if (lfd < 0) {
        dp_error("%s", err.msg);
        src->ops->close(src);
        return 1;
    }
    /* Working set: the checkpoint's identity (from our copy of its images),
     * the hot set to replay, the trace to record. */
    struct dp_hotset hs = {0};
    /* by default a remote restore without a hot set records one for the next
     * restore; local images are only written to when asked (--record-trace) */
    if (a.record_s < 0)
        a.record_s = a.hotset || a.images ? 0 : 10;
    if (a.hotset || a.record_s > 0) {
        struct dp_checkpoint *cpi = NULL;
        if (dp_checkpoint_open(images, &cpi, &err) < 0 || dp_checkpoint_identity(cpi, lo.cp_id, &err) < 0) {
            dp_error("cannot identify the checkpoint in %s: %s", images, err.msg);
            dp_checkpoint_close(cpi);
            close(lfd);
            src->ops->close(src);
            return 1;
        }
        int hrc = a.hotset ? load_hotset(&a, src, cpi, lo.cp_id, &hs) : 1;
        dp_checkpoint_close(cpi);
        if (hrc < 0) {
            close(lfd);
            src->ops->close(src);
            return 1;
        }
        if (hrc == 0) {
            lo.replay = &hs;
            char b[32];
            dp_format_bytes(hs.total_pages * DP_PAGE_SIZE, b, sizeof(b));
            if (!a.json)
                dp_info("hot set: %s (%s) will be fetched in bulk right after the restore",
                        b, dp_hotset_source_name(hs.source));
        }
        lo.record_s = a.record_s;
        lo.replay_window = (uint32_t)(a.replay_window / DP_PAGE_SIZE);
        lo.replay_stage = a.stage;
        trace_up = (struct trace_up){.source = a.source, .key = a.key, .workdir = workdir,
                                     .images_local = a.images ? images : NULL};
        lo.trace_sink = trace_sink;
        lo.trace_ctx = &trace_up;
    }
    lo.workdir = workdir;
    lo.listen_fd = lfd;
    lo.src = src;
    lo.background_rate = a.bg_rate;
    lo.fault_timeout = a.fault_timeout;
    lo.on_timeout_kill = a.on_timeout_kill;
    lo.budget_pages = a.budget / 4096;
    lo.budget_frac = a.budget_frac;
    lo.evict_batch = a.evict_batch;
    lo.vbuf_bytes = a.vbuf;
    int ready[2];
    if (pipe2(ready, O_CLOEXEC) < 0) {
        dp_error("pipe: %s", strerror(errno));
        return 1;
    }
    fflush(NULL);
    pid_t daemon = start_daemon(&a, &lo, ready[1]);
    if (daemon < 0) {
        dp_error("cannot fork the lazy-pages daemon: %s", strerror(errno));
        return 1;
    }
    close(ready[1]);
    close(lfd);
    /* The daemon has its own copy of the hot set. */
    uint64_t hs_pages = hs.total_pages;
    const char *hs_source = lo.replay ? dp_hotset_source_name(hs.source) : "none";
    dp_hotset_free(&hs);
    /* The daemon owns the page source now (its connection, its files). */
    src->ops->close(src);
    src = NULL;
    char one;
    if (read(ready[0], &one, 1) != 1) {
        int st = 0;
        waitpid(daemon, &st, 0);
        dp_error("the lazy-pages daemon did not start (see %s/lazyd.log)", workdir);
        return 1;
    }
    close(ready[0]);

    uint64_t t_daemon = dp_now_ns();
    /* criu restore --lazy-pages, bounded, killed if the daemon dies. */
    const char *extra[] = {"--work-dir", workdir, NULL};
    struct dp_restore_opts ro = {.images_dir = images, .pidfile = pidfile, .detached = 1, .lazy_pages = 1,
                                 .tcp_established = 1, .shell_job = a.shell_job, .extra = extra,
                                 /* -v4 logs every pagemap entry ("Lazy restore skips"), ~5000
                                  * lines at 4 GiB, while the restore is timed; -v3 keeps
                                  * errors, warnings and the steps with their timestamps */
                                 .verbosity = a.verbose ? 4 : 3};
    struct dp_criu_argv av;
    if (dp_criu_restore_args(&ro, &av, &err) < 0) {
        dp_error("%s", err.msg);
        kill(daemon, SIGKILL);
        return 1;
    }
    struct dp_criu_run_opts rr = {.timeout_s = a.restore_timeout, .log_path = log, .quiet_stdout = 1};
    struct dp_criu_proc cp;
    uint64_t t_criu = dp_now_ns();
    if (dp_criu_start(av.argv, &rr, &cp, &err) < 0) {
        dp_error("%s", err.msg);
        kill(daemon, SIGKILL);
        waitpid(daemon, NULL, 0);
        return 1;
    }
    int st = 0, daemon_st = 0, daemon_gone = 0;
    uint64_t deadline = t_criu + (uint64_t)(a.restore_timeout * 1e9);
    for (;;) {
        if (dp_criu_poll(&cp, &st) == 0)
            break;
        if (!daemon_gone && waitpid(daemon, &daemon_st, WNOHANG) == daemon) {
            daemon_gone = 1;
            /* The daemon also ends when criu gives up first (it closes the
             * socket without "restore finished"): give criu a moment to
             * report its own failure before blaming the daemon. */
            int running = 1;
            for (int i = 0; i < 300 && (running = dp_criu_poll(&cp, &st)) == 1; i++)
                usleep(10000);
            if (running == 0 && st != 0)
                break;
            dp_error("the lazy-pages daemon ended during the restore (see %s/lazyd.log); "
                     "stopping criu restore", workdir);
            if (running)
                dp_criu_kill(&cp);
            st = -1;
            break;
        }
        if (dp_now_ns() > deadline) {
            dp_error("criu restore did not finish within %.0f s; killed it (raise --restore-timeout?)",
                     a.restore_timeout);
            dp_criu_kill(&cp);
            st = -1;
            break;
        }
        usleep(2000);
    }
    uint64_t t_done = dp_now_ns();
    if (st != 0) {
        if (st != -1)
            dp_error("criu restore failed (%s %d); its log: %s",
                     WIFEXITED(st) ? "exit status" : "signal", WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st), log);
        dp_criu_print_log_tail(log, DP_CRIU_LOG_TAIL);
        if (!daemon_gone) {
            /* It exits by itself once the half-restored tasks are gone;
             * make sure it does not linger. */
            for (int i = 0; i < 300 && waitpid(daemon, NULL, WNOHANG) == 0; i++)
                usleep(10000);
            kill(daemon, SIGKILL);
            waitpid(daemon, NULL, 0);
        }
        return 1;
    }
    int pid = dp_read_pid_file(pidfile);
    double restore_s = (double)(t_done - t_criu) / 1e9, total_s = (double)(t_done - t_start) / 1e9;
    if (a.json) {
        printf("{\"pid\": %d, \"restore_s\": %.6f, \"total_s\": %.6f, \"daemon_pid\": %d, \"workdir\": \"%s\", "
               "\"source\": \"%s\", \"skeleton_bytes\": %llu, \"prefetch\": \"%s\", \"hotset_pages\": %llu, "
               "\"hotset_source\": \"%s\", \"hotset_mode\": \"%s\", \"record_trace_s\": %.1f, \"skeleton_s\": %.6f, "
               "\"daemon_start_s\": %.6f}\n",
               pid, restore_s, total_s, (int)daemon, workdir, a.images ? "local" : a.source,
               (unsigned long long)skel_bytes, a.prefetch, (unsigned long long)hs_pages,
               hs_source, a.stage ? "stage" : "install", a.record_s, (double)(t_skel - t_start) / 1e9,
               (double)(t_daemon - t_skel) / 1e9);
    } else {
        printf("restored pid %d in %.3f s (%.3f s including the skeleton); lazy-pages daemon pid %d\n"
               "pages come from %s when touched; stats: distriproc stats --workdir %s\n",
               pid, restore_s, total_s, (int)daemon, a.images ? "the local images" : a.source, workdir);
    }
    fflush(stdout);
    if (!a.foreground)
        return 0;
    while (waitpid(daemon, &daemon_st, 0) < 0 && errno == EINTR)
        ;
    if (WIFEXITED(daemon_st) && WEXITSTATUS(daemon_st) == 0) {
        if (!a.json)
            printf("all restored tasks exited; final stats in %s/stats-final.json\n", workdir);
        return 0;
    }
    dp_error("the lazy-pages daemon ended with %s %d (see the messages above)",
             WIFEXITED(daemon_st) ? "status" : "signal",
             WIFEXITED(daemon_st) ? WEXITSTATUS(daemon_st) : WTERMSIG(daemon_st));
    return 1;
}
