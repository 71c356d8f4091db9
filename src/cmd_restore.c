/* distriproc restore: lazy restore on the destination. Pulls the skeleton
 * images from the page server (or uses a local images directory), starts the
 * lazy-pages daemon on WORKDIR/lazy-pages.socket, runs `criu restore
 * --lazy-pages --restore-detached` (or, for a container, `runc restore
 * --lazy-pages` with the destination's bundle, after checking its rootfs
 * against the checkpoint's), reports how long the restore took, and leaves
 * the daemon serving faults until the last restored task exits.
 *
 * distriproc lazy-pages (cmd_lazypages.c) is the same code path up to the
 * daemon: it stops there and leaves the restore to the user's runc or podman. */
#include <errno.h>
#include <sodium.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <pthread.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>

#include "bundle.h"
#include "cgpurge.h"
#include "client.h"
#include "commands.h"
#include "cpid.h"
#include "fence.h"
#include "proto_lease.h"
#include "criu.h"
#include "lab.h"
#include "hotset.h"
#include "warmup.h"
#include "kdat.h"
#include "key.h"
#include "lazyd.h"
#include "metrics_http.h"
#include "netbound.h"
#include "orch.h"
#include "wbwait.h"
#include "pageserver_hotset.h"
#include "proto_hotset.h"
#include "pagesrc.h"
#include "pagesrc_redis.h"
#include "store_redis.h"
#include "restore.h"
#include "rootfs.h"
#include "runc.h"
#include "uffdwin.h"
#include "live_client.h"
#include "livesm.h"
#include "perm.h"
#include "util.h"

static void restore_usage(FILE *out)
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
            "  --take-over             take the checkpoint's write lease from the restore that holds\n"
            "                          it (crashed, cut off, or still running): that restore's page\n"
            "                          requests are refused from now on and its daemon SIGKILLs its\n"
            "                          tree. Without it a held lease refuses this restore, naming the\n"
            "                          holder. Either way this restore starts from the checkpoint's\n"
            "                          memory (docs/pageserver.md, One writer, fenced)\n"
            "  --images DIR            local mode: serve pages from a CRIU images directory\n"
            "  --store URL             pages straight from a Redis Cluster (docs/store-redis.md):\n"
            "                          redis://ADDR:PORT[,ADDR:PORT...]/ID as 'checkpoint --store'\n"
            "                          printed it (rediss:// = TLS required); pipelined GETRANGEs per\n"
            "                          extent; this restore's writes are fenced by its writer's lease\n"
            DP_STORE_CLI_HELP
            "  --store-writer NAME     the lease/fence name of this restore's writes (default: a random\n"
            "                          one, so concurrent restores of one checkpoint stay apart); the\n"
            "                          same NAME again needs --take-over while the lease is held\n"
            "                          (no server; the local-floor baseline)\n"
            "  --workdir DIR           lazy-pages.socket, control.sock, logs, pulled images\n"
            "  --host HOST             restore inside lab host HOST's network namespace (dp-HOST);\n"
            "                          the daemon's page traffic goes through that namespace too\n"
            "  --prefetch POLICY       streams[:MAX] (default: sequential streams found among\n"
            "                          interleaved faults, per task; random faults prefetch\n"
            "                          nothing), none, seq:N, stride[:DEPTH], auto[:MAX]; with\n"
            "                          --budget or --hotset-mode stage the default is none\n"
            "  --warmup none|hot|all   after the restore, move memory in the background, faults\n"
            "                          first (docs/hotset.md, \"Warm-up\"): none (default: pages\n"
            "                          stay remote until touched), hot (the recorded trace, then\n"
            "                          the classification's hottest mappings), all (that, then\n"
            "                          every other page; the source is released once all is\n"
            "                          here). The pace adapts to the link and backs off when\n"
            "                          faults queue behind it; with --budget it warms only what\n"
            "                          the budget holds. distriproc stats: warmup\n"
            "  --background-fetch RATE cap the warm-up at RATE bytes/s (e.g. 50M); alone it means\n"
            "                          --warmup all at most RATE\n"
            "  --fault-timeout SEC     how long a fault may wait for the page source (default 120;\n"
            "                          0 = no limit)\n"
            "  --on-timeout wait|kill  after --fault-timeout: SIGKILL the restored tree and end the\n"
            "                          daemon with an error (default), or keep waiting with a warning\n"
            "  --budget SIZE|PCT%%     keep at most SIZE (e.g. 256M) or PCT%% of the checkpoint's lazy\n"
            "                          memory resident; colder pages are written back if modified\n"
            "                          (durably: to the page server, or to the store acknowledged by\n"
            "                          a replica, WAIT) and evicted. Needs --source or --store.\n"
            "                          See docs/budget.md for the slack above the budget.\n"
            "  --evict-batch PAGES     pages evicted per stop of the process (default 256, max 256)\n"
            "  --victim-buffer SIZE    recently evicted pages kept in the daemon (default 8M;\n"
            "                          0: none, every refault is read from the source)\n"
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
            "                          store it with the checkpoint (page server, the local\n"
            "                          images, or the --store cluster) for the next restore;\n"
            "                          default 10 from a page server\n"
            "                          without --hotset, else 0 (off); also WORKDIR/trace.bin\n"
            "  --runc-bundle BUNDLE    restore a container checkpointed with 'checkpoint --runc'\n"
            "                          with runc restore --lazy-pages from this OCI bundle (its\n"
            "                          config.json names the network namespace to join); its\n"
            "                          rootfs must hold the checkpoint's files (checked first).\n"
            "                          A bundle with a user namespace: vm.unprivileged_userfaultfd\n"
            "                          is 1 while runc restore runs (CRIU's tasks create their\n"
            "                          userfaultfds inside it; see 'distriproc uffd-window')\n"
            "  --runc-id ID            the restored container's ID (with --runc-bundle)\n"
            "  --runc-root DIR         runc's state directory (runc --root; default runc's own)\n"
            "  --foreground            stay attached until the last restored task exits\n"
            "  --metrics ADDR:PORT     the daemon serves Prometheus metrics at http://ADDR:PORT/metrics\n"
            "                          (loopback only unless --metrics-allow-remote: no authentication;\n"
            "                          with --host, in that host's network namespace; docs/observability.md)\n"
            "  --json                  print the result as JSON\n"
            "  -v, --verbose           debug logging, and criu's restore.log at -v4 (default -v3:\n"
            "                          -v4 writes a line per pagemap entry, 5000 at 4 GiB, ~8 ms)\n"
            "\n"
            "Afterwards: distriproc stats --workdir DIR. A container: runc list/state/kill as\n"
            "usual (with the same --runc-root); its stdout and stderr go to DIR/container.log.\n"
            "See docs/containers.md.\n"
            "\n"
            "Bounds on the link to the page server (docs/lazyd.md, \"Bounded failures\"):\n"
            "%s"
            "  --writeback-timeout MS  an eviction batch whose write-back is not acknowledged\n"
            "                          within MS is abandoned: its threads resume, the pages stay\n"
            "                          resident and are tried again later (default 5000)\n",
            dp_netbound_usage);
}

struct restore_args {
    int verbose; /* -v: also criu's restore.log at -v4 */
    struct dp_store_cli store;     /* --store URL and its TLS/AUTH settings */
    const char *store_writer;      /* --store-writer NAME */
    const char *source, *key, *images, *workdir, *host, *prefetch, *hotset;
    const char *runc_bundle, *runc_id, *runc_root;
    uint64_t replay_window;
    double record_s;
    uint64_t bg_rate, budget, vbuf;
    double budget_frac;
    unsigned evict_batch;
    int wb_timeout_ms;
    double fault_timeout, restore_timeout;
    int on_timeout_kill, shell_job, foreground, json, take_over;
    int stage;   /* --hotset-mode stage */
    int warmup;  /* enum dp_warmup_mode */
    const char *metrics;           /* --metrics ADDR:PORT */
    int metrics_remote;            /* --metrics-allow-remote */
    struct sockaddr_in metrics_addr;
};

/* The subcommand's name in argument errors ("restore" or "lazy-pages"). */
static const char *arg_cmd = "restore";
#define ARGERR(fmt, ...) fprintf(stderr, "distriproc %s: " fmt, arg_cmd, ##__VA_ARGS__)

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
    const struct dp_store_cli *store;   /* --store: the trace goes there */
    pthread_t th;
    int started;
    uint8_t *buf;
    size_t len;
};
static struct trace_up trace_up;

/* --store: the trace as the cluster's dp:{ID}:trace (the newest one), over a
 * connection of the thread's own. */
static void trace_upload_store(struct trace_up *u)
{
    struct dp_err err = {{0}};
    struct dp_store *st = dp_store_open_cli(u->store, &err);
    if (!st || dp_store_put_blob(st, "trace", u->buf, u->len, &err) < 0)
        dp_warn("the fault trace was not stored in %s: %s (it stays in %s/trace.bin)", u->store->url, err.msg,
                u->workdir);
    else
        dp_info("fault trace stored in %s (%zu bytes)", u->store->url, u->len);
    dp_store_close(st);
}

static void *trace_upload(void *arg)
{
    struct trace_up *u = arg;
    struct dp_err err = {{0}};
    if (u->store) {
        trace_upload_store(u);
        return NULL;
    }
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

/* Memory mode: every page is here (lazyd's all_resident), so the source's
 * frozen tree may go: RELEASE, from a thread (the daemon's loop never blocks). */
static void *release_thread(void *arg)
{
    struct trace_up *u = arg;
    char *json = NULL;
    struct dp_err err = {{0}};
    if (dp_live_report(u->source, u->key, DP_LIVE_VERDICT_RELEASE, &json, &err) < 0)
        dp_warn("could not tell %s to release the source: %s (it is released when its serve stops)", u->source,
                err.msg);
    else if (strstr(json, "\"memory\""))
        dp_info("the source says: %s", json);
    free(json);
    return NULL;
}

static void release_source(void *ctx)
{
    pthread_t th;
    if (pthread_create(&th, NULL, release_thread, ctx) == 0)
        pthread_detach(th);
}

static void trace_sink(void *ctx, const uint8_t *buf, size_t len)
{
    struct trace_up *u = ctx;
    char path[PATH_MAX + 16];
    snprintf(path, sizeof(path), "%s/trace.bin", u->workdir);
    FILE *f = dp_fopen_private(path);
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
    if (a->images || dp_pagesrc_is_redis(src)) {
        /* the store's classification and trace land beside the skeleton,
         * where the local images' hot-set store finds them */
        struct dp_hotset_store *st;
        if ((!a->images && dp_store_pull_hotsets(dp_pagesrc_redis_store(src), cp, &err) < 0) ||
            dp_hotset_store_open(cp, &st, &err) < 0) {
            dp_error("--hotset %s: %s", a->hotset, err.msg);
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

/* The checkpoint's write lease, before anything is pulled or restored: one
 * restore at a time writes back (lib/lease.h). */
static int take_lease(const struct restore_args *a, struct dp_pagesrc *src, uint64_t *epoch)
{
    char host[64] = "?", holder[DP_LEASE_HOLDER_MAX + 1];
    struct dp_lease_reply lr;
    struct dp_err err = {{0}};
    gethostname(host, sizeof(host) - 1);
    snprintf(holder, sizeof(holder), "restore pid %d on %.40s", (int)getpid(), host);
    if (dp_client_lease(dp_pagesrc_remote_client(src), holder, a->take_over, &lr, 30000, &err) < 0) {
        dp_error("%s: %s", a->take_over ? "taking over the write lease failed" : "this restore cannot start",
                 err.msg);
        return -1;
    }
    if (lr.prev_epoch && a->take_over)
        dp_warn("took the write lease over from '%s' (epoch %llu): it is fenced and its daemon stops its tree. "
                "This restore (epoch %llu) starts from the checkpoint's memory; the pages the old one wrote back "
                "stay on the source in distriproc-overlay.log.epoch-%llu", lr.prev_holder,
                (unsigned long long)lr.prev_epoch, (unsigned long long)lr.epoch, (unsigned long long)lr.prev_epoch);
    else if (!a->json)
        dp_info("write lease epoch %llu taken", (unsigned long long)lr.epoch);
    *epoch = lr.epoch;
    return 0;
}

/* A restore that fails before its daemon starts gives the write lease back
 * (nothing was restored, nothing written), then closes the source. */
static void abandon_source(struct dp_pagesrc *src)
{
    dp_fence_release(src);
    src->ops->close(src);
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
        struct dp_err lerr;
        int lf = dp_open_log(log, &lerr);
        if (lf < 0) {
            dp_error("the lazy-pages daemon cannot start: %s", lerr.msg);
            _exit(1);
        }
        dup2(lf, STDERR_FILENO);
    }
    dp_log_set_tag("distriproc lazyd");
    o->ready_fd = ready_wr;
    int rc = dp_lazyd_run(o);
    trace_wait();
    dp_fence_release(o->src); /* the tree has ended: the next restore needs no --take-over */
    o->src->ops->close(o->src);
    _exit(rc);
}

/* Options shared by restore and lazy-pages, checked. Returns -1 to go on, or
 * the exit status (help, usage error). */
static int parse_args(int argc, char **argv, struct restore_args *a, enum dp_restore_mode mode,
                      void (*usage_fn)(FILE *))
{
    arg_cmd = mode == DP_MODE_LAZY_PAGES ? "lazy-pages" : "restore";
    memset(a, 0, sizeof(*a));
    a->fault_timeout = DP_FAULT_TIMEOUT_DEFAULT; /* a fault never waits unbounded unless asked (0) */
    a->on_timeout_kill = 1;
    a->prefetch = NULL; /* chosen below, once the mode and --hotset-mode are known */
    a->restore_timeout = 120;
    a->record_s = -1;
    a->wb_timeout_ms = DP_WB_TIMEOUT_MS_DEFAULT;
    struct dp_netbound nb = *dp_netbound_get();
    struct dp_err nerr;
    int li = 0;
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
        {"runc-bundle", required_argument, NULL, 'U'}, {"runc-id", required_argument, NULL, 'I'},
        {"runc-root", required_argument, NULL, 'O'},
        {"insecure-plaintext", no_argument, NULL, 'P'},
        {"metrics", required_argument, NULL, 'm'}, {"metrics-allow-remote", no_argument, NULL, 'a'},
        {"take-over", no_argument, NULL, 1001},     {"warmup", required_argument, NULL, 1002},
        {"store", required_argument, NULL, 1101},       {"store-ca", required_argument, NULL, 1102},
        {"store-cert", required_argument, NULL, 1103},  {"store-key", required_argument, NULL, 1104},
        {"store-pass-file", required_argument, NULL, 1105}, {"store-user", required_argument, NULL, 1106},
        {"store-writer", required_argument, NULL, 1107},
        /* bounds on the link (lib/netbound.h), parsed there */
        {"tcp-user-timeout", required_argument, NULL, 'N'}, {"request-timeout", required_argument, NULL, 'N'},
        {"auth-retry", required_argument, NULL, 'N'},       {"max-reply", required_argument, NULL, 'N'},
        {"max-skeleton", required_argument, NULL, 'N'},
        {"writeback-timeout", required_argument, NULL, 'X'},
        {NULL, 0, NULL, 0},
    };
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "hv", opts, &li)) != -1) {
        switch (c) {
        case 'N':
            if (dp_netbound_parse_flag(&nb, opts[li].name, optarg, &nerr) < 0) {
                ARGERR("%s\n", nerr.msg);
                return 2;
            }
            dp_netbound_set(&nb); /* the daemon forked later inherits it */
            break;
        case 'X':
            if (dp_wait_parse_ms(optarg, &a->wb_timeout_ms) < 0) {
                ARGERR("--writeback-timeout takes milliseconds, 1..3600000 (got '%s')\n", optarg);
                return 2;
            }
            break;
        case 's': a->source = optarg; break;
        case 'k': a->key = optarg; break;
        case 'P': dp_client_set_insecure_plaintext(true); break;
        case 'm': a->metrics = optarg; break;
        case 'a': a->metrics_remote = 1; break;
        case 'i': a->images = optarg; break;
        case 'w': a->workdir = optarg; break;
        case 'H': a->host = optarg; break;
        case 'p': a->prefetch = optarg; break;
        case 1002: {
            enum dp_warmup_mode m;
            if (dp_warmup_mode_parse(optarg, &m) < 0) {
                ARGERR("--warmup takes none, hot or all (got '%s')\n", optarg);
                return 2;
            }
            a->warmup = (int)m;
            break;
        }
        case 'b':
            if (dp_parse_size(optarg, &a->bg_rate) < 0 || a->bg_rate == 0) {
                ARGERR("--background-fetch takes bytes per second such as 50M (got '%s')\n", optarg);
                return 2;
            }
            break;
        case 'f':
            if (parse_seconds(optarg, &a->fault_timeout) < 0) {
                ARGERR("--fault-timeout takes seconds (got '%s')\n", optarg);
                return 2;
            }
            break;
        case 'r':
            if (parse_seconds(optarg, &a->restore_timeout) < 0 || a->restore_timeout <= 0) {
                ARGERR("--restore-timeout takes seconds > 0 (got '%s')\n", optarg);
                return 2;
            }
            break;
        case 'o':
            if (strcmp(optarg, "wait") == 0) {
                a->on_timeout_kill = 0;
            } else if (strcmp(optarg, "kill") == 0) {
                a->on_timeout_kill = 1;
            } else {
                ARGERR("--on-timeout is wait or kill (got '%s')\n", optarg);
                return 2;
            }
            break;
        case 'B': {
            size_t len = strlen(optarg);
            if (len > 1 && optarg[len - 1] == '%') {
                char *end;
                double pct = strtod(optarg, &end);
                if (end != optarg + len - 1 || !(pct > 0) || pct > 100) {
                    ARGERR("--budget PCT%% takes a percentage in (0, 100] (got '%s')\n", optarg);
                    return 2;
                }
                a->budget_frac = pct / 100.0;
            } else if (dp_parse_size(optarg, &a->budget) < 0 || a->budget < 4096) {
                ARGERR("--budget takes a size such as 512M (>= 4K) or a percentage "
                                "such as 50%% (got '%s')\n", optarg);
                return 2;
            }
            break;
        }
        case 'E': {
            char *end;
            long n = strtol(optarg, &end, 10);
            if (*end || n < 1 || n > 256) {
                ARGERR("--evict-batch takes 1..256 pages (got '%s')\n", optarg);
                return 2;
            }
            a->evict_batch = (unsigned)n;
            break;
        }
        case 'V':
            if (dp_parse_size(optarg, &a->vbuf) < 0) {
                ARGERR("--victim-buffer takes a size such as 8M, or 0 for none (got '%s')\n", optarg);
                return 2;
            }
            if (a->vbuf == 0)
                a->vbuf = DP_VBUF_OFF; /* asked for none, not the default */
            break;
        case 'T': a->hotset = optarg; break;
        case 'M':
            if (strcmp(optarg, "install") && strcmp(optarg, "stage")) {
                ARGERR("--hotset-mode takes install or stage (got '%s')\n", optarg);
                return 2;
            }
            a->stage = strcmp(optarg, "stage") == 0;
            break;
        case 'W':
            if (dp_parse_size(optarg, &a->replay_window) < 0 || a->replay_window < DP_PAGE_SIZE ||
                a->replay_window > (1ull << 32)) {
                ARGERR("--replay-window takes bytes such as 8M (got '%s')\n", optarg);
                return 2;
            }
            break;
        case 'R':
            if (parse_seconds(optarg, &a->record_s) < 0) {
                ARGERR("--record-trace takes seconds (got '%s')\n", optarg);
                return 2;
            }
            break;
        case 'S': a->shell_job = 1; break;
        case 'F': a->foreground = 1; break;
        case 1001: a->take_over = 1; break;
        case 1101: a->store.url = optarg; break;
        case 1102: a->store.ca = optarg; break;
        case 1103: a->store.cert = optarg; break;
        case 1104: a->store.key = optarg; break;
        case 1105: a->store.pass_file = optarg; break;
        case 1106: a->store.user = optarg; break;
        case 1107:
            if (!dp_store_writer_ok(optarg)) {
                ARGERR("--store-writer takes 1-%u of A-Z a-z 0-9 _ . - (got '%s')\n", DP_STORE_WRITER_MAX, optarg);
                return 2;
            }
            a->store_writer = optarg;
            break;
        case 'j': a->json = 1; break;
        case 'v':
            dp_log_set_level(DP_LOG_DEBUG);
            a->verbose = 1;
            break;
        case 'U': a->runc_bundle = optarg; break;
        case 'I': a->runc_id = optarg; break;
        case 'O': a->runc_root = optarg; break;
        case 'h': usage_fn(stdout); return 0;
        default: usage_fn(stderr); return 2;
        }
    }
    if (optind != argc || !a->workdir || (!!a->source + !!a->images + !!a->store.url) != 1 ||
        (a->source && !a->key)) {
        ARGERR("--workdir and one of --images DIR, --source ADDR:PORT with --key FILE, or --store URL "
                        "are required\n\n");
        usage_fn(stderr);
        return 2;
    }
    struct dp_err merr = {{0}};
    if (a->metrics && dp_metrics_addr_parse(a->metrics, a->metrics_remote, &a->metrics_addr, &merr) < 0) {
        ARGERR("%s\n", merr.msg);
        return 2;
    }
    if ((a->budget || a->budget_frac > 0) && !a->source && !a->store.url) {
        ARGERR("--budget needs --source or --store: evicted pages that were modified are "
                        "written back to the page server or the store, and local images cannot take them\n");
        return 2;
    }
    if (a->stage && !a->hotset) {
        ARGERR("--hotset-mode stage measures the replay of a hot set: give one "
                        "with --hotset KIND|FILE\n");
        return 2;
    }
    if (a->stage && (a->budget || a->budget_frac > 0)) {
        ARGERR("--hotset-mode stage keeps the replayed pages in the daemon until "
                        "they are used, outside any budget, so it does not combine with --budget; measure the "
                        "hit rate without --budget (see docs/hotset.md)\n");
        return 2;
    }
    if (!a->prefetch) {
        /* restore: streams, never worse than none on random access and far
         * better on interleaved sequential ones (bench prefetch,
         * bench/results/REPORT.md); none under stage mode, which counts
         * every first touch by its fault, for lazy-pages, whose
         * default the caller's criu command line already relies on, and
         * under a budget: stream windows install pages faster than
         * eviction takes them out (a child's RSS reached budget + 9 MiB
         * in test_budget_fork), so streams there is the user's choice */
        a->prefetch = mode == DP_MODE_LAZY_PAGES || a->stage || a->budget || a->budget_frac > 0 ? "none"
                                                                                             : "streams";
    }
    if (mode == DP_MODE_LAZY_PAGES && (a->runc_bundle || a->runc_id || a->runc_root || a->shell_job)) {
        ARGERR("--runc-* and --shell-job belong to 'distriproc restore'; lazy-pages only "
               "serves pages, and you run the restore (see docs/containers.md)\n");
        return 2;
    }
    if (!a->runc_bundle != !a->runc_id || (a->runc_root && !a->runc_bundle)) {
        ARGERR("a container restore needs both --runc-bundle BUNDLE and --runc-id ID (--runc-root with them)\n");
        return 2;
    }
    if (a->runc_id && !dp_runc_id_ok(a->runc_id)) {
        ARGERR("--runc-id '%s' is not a container ID runc accepts (letters, digits, _ + . -)\n", a->runc_id);
        return 2;
    }
    if (a->runc_bundle && a->shell_job) {
        ARGERR("--shell-job does not apply to a runc container (runc restores its stdio itself)\n");
        return 2;
    }
    return -1;
}

/* ---- containers: the rootfs check and the container's stdio ----------------- */

/* The destination bundle must hold the files the checkpointed container
 * mapped or had open (lib/rootfs.h); checked before anything is started. */
static int check_rootfs(const char *images, const struct dp_bundle_info *b)
{
    char path[PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/%s", images, DP_ROOTFS_FILE);
    uint8_t *data;
    size_t len;
    struct dp_err err = {{0}};
    if (dp_read_file(path, &data, &len, &err) < 0) {
        dp_error("the checkpoint has no %s (%s): it was not made by 'distriproc checkpoint --runc', so "
                 "nothing says which rootfs it needs; checkpoint the container with --runc",
                 DP_ROOTFS_FILE, err.msg);
        return -1;
    }
    struct dp_rootfs_manifest want, got;
    int rc = dp_rootfs_from_json((const char *)data, len, &want, &err);
    free(data);
    if (rc < 0) {
        dp_error("%s", err.msg);
        return -1;
    }
    rc = -1;
    if (dp_rootfs_measure(b, &want, &got, &err) < 0) {
        dp_error("cannot check the bundle's rootfs: %s", err.msg);
    } else {
        char report[2048];
        size_t diffs = dp_rootfs_compare(&want, &got, report, sizeof(report), 8);
        if (diffs) {
            dp_error("the bundle %s does not hold the rootfs the container was checkpointed with: %zu of its %zu "
                     "file(s) differ:\n%s%s"
                     "Nothing was restored. Give this host the same files (the same image or rootfs "
                     "directory, the same bind-mount sources) and restore again.",
                     b->dir, diffs, want.n, report, diffs > 8 ? "  ...\n" : "");
        } else {
            char hex[2 * DP_ROOTFS_HASH + 1];
            dp_rootfs_hex(want.digest, hex);
            dp_info("rootfs of %s matches the checkpoint's (%zu files, digest %.16s)", b->dir, want.n, hex);
            rc = 0;
        }
        dp_rootfs_free(&got);
    }
    dp_rootfs_free(&want);
    return rc;
}

#define CONTAINER_LOG_MAX (64u << 20)

/* The container's stdout and stderr: a pipe (CRIU can restore a pipe as the
 * container's stdio, and checkpoint it again later, unlike a host file) whose
 * read end a small process drains into WORKDIR/container.log (the first
 * CONTAINER_LOG_MAX bytes; later output is read and dropped, so the container
 * never blocks on it). It exits when the last writer is gone. Returns the
 * write end, or -1. */
static int start_stdio_drain(const char *workdir)
{
    int p[2];
    if (pipe2(p, O_CLOEXEC) < 0) {
        dp_error("pipe: %s", strerror(errno));
        return -1;
    }
    char log[PATH_MAX + 32];
    snprintf(log, sizeof(log), "%s/container.log", workdir);
    fflush(NULL);
    pid_t pid = fork();
    if (pid < 0) {
        dp_error("fork: %s", strerror(errno));
        close(p[0]);
        close(p[1]);
        return -1;
    }
    if (pid == 0) {
        setsid();
        signal(SIGPIPE, SIG_IGN);
        int lf = dp_open_log(log, NULL);
        if (lf >= 0 && lf != 3)
            dup2(lf, 3);
        if (p[0] != 4)
            dup2(p[0], 4);
        syscall(SYS_close_range, 5U, ~0U, 0U);
        int null = open("/dev/null", O_RDWR);
        dup2(null, 0);
        dup2(null, 1);
        dup2(null, 2);
        if (null > 2)
            close(null);
        uint64_t written = 0;
        char buf[65536];
        for (;;) {
            ssize_t n = read(4, buf, sizeof(buf));
            if (n < 0 && errno == EINTR)
                continue;
            if (n <= 0)
                _exit(0);
            if (lf >= 0 && written < CONTAINER_LOG_MAX) {
                size_t w = (size_t)n < CONTAINER_LOG_MAX - written ? (size_t)n : CONTAINER_LOG_MAX - written;
                if (dp_write_full(3, buf, w) == 0)
                    written += w;
            }
        }
    }
    close(p[0]);
    return p[1];
}

/* ---- the shared path ----------------------------------------------------------- */

/* What the runc restore needs, opened and checked before anything runs. */
struct runc_ctx {
    struct dp_runc r;
    struct dp_bundle_info bundle;
    struct dp_cgpurge cgroups; /* what a failed restore leaves: purged */
    int cgroups_known;
};

/* The bundle's mount list, freed on every way out of dp_restore_main (it has
 * many early returns after runc_prepare; LSan caught the ones that leaked). */
static void runc_ctx_release(struct runc_ctx *rc)
{
    dp_bundle_info_free(&rc->bundle);
}

static int runc_prepare(const struct restore_args *a, struct runc_ctx *rc)
{
    struct dp_err err = {{0}};
    if (dp_runc_open(&rc->r, a->runc_root, &err) < 0) {
        dp_error("%s", err.msg);
        return -1;
    }
    if (dp_bundle_load(a->runc_bundle, &rc->bundle, &err) < 0) {
        dp_error("%s", err.msg);
        return -1;
    }
    struct stat st;
    if (stat(rc->bundle.rootfs, &st) < 0 || !S_ISDIR(st.st_mode)) {
        dp_error("the bundle's rootfs %s is not a directory; the container's root filesystem must be there",
                 rc->bundle.rootfs);
        dp_bundle_info_free(&rc->bundle);
        return -1;
    }
    if (rc->bundle.netns_path[0] && access(rc->bundle.netns_path, F_OK) != 0) {
        dp_error("the bundle joins the network namespace %s, which does not exist on this host; create it (in "
                 "the lab: distriproc lab up) or point config.json at this host's namespace",
                 rc->bundle.netns_path);
        dp_bundle_info_free(&rc->bundle);
        return -1;
    }
    struct dp_runc_state rs;
    int s = dp_runc_state(&rc->r, a->runc_id, &rs, &err);
    if (s != 1) {
        if (s == 0)
            dp_error("a container '%s' already exists here (%s, pid %d); pick another --runc-id, or remove it "
                     "(runc%s%s delete --force %s)",
                     a->runc_id, rs.status, rs.pid, a->runc_root ? " --root " : "", a->runc_root ? a->runc_root : "",
                     a->runc_id);
        else
            dp_error("%s", err.msg);
        dp_bundle_info_free(&rc->bundle);
        return -1;
    }
    /* Which of the new container's cgroups runc will make: only those are
     * removed if the restore fails (runc_purge_cgroups). */
    char rel[1024];
    if (dp_cgpurge_path(rc->bundle.cgroups_path, a->runc_id, rel, sizeof(rel), &err) < 0 ||
        dp_cgpurge_prepare(&rc->cgroups, "/sys/fs/cgroup", rel, &err) < 0)
        dp_info("a failed restore will leave its cgroups to runc: %s", err.msg);
    else
        rc->cgroups_known = 1;
    return 0;
}

/* After a failed runc restore: the cgroups runc made for the new container,
 * and the half-restored tasks in them (CRIU's root task, waiting for a criu
 * that is gone, which nobody else would ever signal), go too; runc never
 * recorded the container, so `runc delete` cannot. */
static void runc_purge_cgroups(struct runc_ctx *rc)
{
    struct dp_err err = {{0}};
    int killed = 0;
    if (!rc->cgroups_known)
        return;
    if (dp_cgpurge_run(&rc->cgroups, 10, &killed, &err) < 0)
        dp_error("%s", err.msg);
    else if (killed)
        dp_info("killed %d half-restored task%s left in the new container's cgroups (%s) and removed them",
                killed, killed == 1 ? "" : "s", rc->cgroups.rel);
}

/* One JSON object on one line of stdout (takes the reference). */
static int print_json(json_t *o)
{
    int rc = o && json_dumpf(o, stdout, JSON_PRESERVE_ORDER | JSON_COMPACT | JSON_REAL_PRECISION(10)) == 0 ? 0 : -1;
    json_decref(o);
    if (rc < 0)
        dp_error("cannot print the result as JSON");
    else
        putchar('\n');
    return rc;
}

/* --foreground: stays until the daemon exits; its status becomes ours. */
static int wait_daemon(const struct restore_args *a, pid_t daemon, const char *workdir)
{
    int daemon_st = 0;
    while (waitpid(daemon, &daemon_st, 0) < 0 && errno == EINTR)
        ;
    if (WIFEXITED(daemon_st) && WEXITSTATUS(daemon_st) == 0) {
        if (!a->json)
            printf("all restored tasks exited; final stats in %s/stats-final.json\n", workdir);
        return 0;
    }
    dp_error("the lazy-pages daemon ended with %s %d (see the messages above)",
             WIFEXITED(daemon_st) ? "status" : "signal",
             WIFEXITED(daemon_st) ? WEXITSTATUS(daemon_st) : WTERMSIG(daemon_st));
    return 1;
}

/* lazy-pages: the daemon listens; say where, and what to run against it. */
static int lazy_pages_report(const struct restore_args *a, pid_t daemon, const char *workdir, const char *images,
                             uint64_t skel_bytes)
{
    if (a->json) {
        char sock[PATH_MAX + 32];
        snprintf(sock, sizeof(sock), "%s/lazy-pages.socket", workdir);
        json_t *o = json_pack("{s:i, s:s, s:s, s:s, s:s, s:I}", "daemon_pid", (int)daemon, "socket", sock, "workdir",
                              workdir, "images", images, "source", a->images ? "local" : a->source ? a->source : a->store.url,
                              "skeleton_bytes", (json_int_t)skel_bytes);
        if (print_json(o) < 0)
            return 1;
    } else {
        printf("lazy-pages daemon pid %d listening on %s/lazy-pages.socket\n"
               "images (without lazy memory) in %s; restore against it, e.g. (inside the network\n"
               "namespace the bundle joins, if any: nsenter --net=PATH):\n"
               "  runc --criu CRIU restore --lazy-pages --work-path %s --image-path %s \\\n"
               "       --pid-file %s/%s --bundle BUNDLE --detach ID\n"
               "stats: distriproc stats --workdir %s (the daemon exits when the last restored task does)\n",
               (int)daemon, workdir, images, workdir, images, workdir, DP_RESTORED_PID_NAME, workdir);
    }
    fflush(stdout);
    if (!a->foreground)
        return 0;
    return wait_daemon(a, daemon, workdir);
}

/* Kills a restorer that overran its bound: runc and its criu swrk child
 * (runc's own process group), or criu. */
static void kill_restorer(struct dp_criu_proc *cp, int runc)
{
    if (runc && cp->pid > 0)
        kill(-cp->pid, SIGKILL);
    dp_criu_kill(cp);
}

/* runc restore --lazy-pages --detach from the bundle, its stdio a drained pipe. */
static int runc_restore_start(const struct restore_args *a, const struct runc_ctx *rc, const char *workdir,
                              const char *images, const char *pidfile, struct dp_criu_proc *cp, char *runc_log,
                              size_t runc_log_len)
{
    struct dp_err err = {{0}};
    struct dp_runc_restore_opts ro = {.id = a->runc_id, .image_path = images, .work_path = workdir,
                                      .bundle = rc->bundle.dir, .pid_file = pidfile, .lazy_pages = 1,
                                      .detach = 1, .tcp_established = 1};
    struct dp_criu_argv av;
    if (dp_runc_restore_args(&rc->r, &ro, &av, &err) < 0) {
        dp_error("%s", err.msg);
        return -1;
    }
    int out = start_stdio_drain(workdir);
    if (out < 0)
        return -1;
    int in[2];
    if (pipe2(in, O_CLOEXEC) < 0) {
        dp_error("pipe: %s", strerror(errno));
        close(out);
        return -1;
    }
    close(in[1]); /* the container's stdin: a pipe at end of file */
    snprintf(runc_log, runc_log_len, "%s/container.log", workdir);
    dp_kdat_prime_once(rc->r.criu);
    memset(cp, 0, sizeof(*cp));
    cp->pidfd = -1;
    snprintf(cp->what, sizeof(cp->what), "runc restore");
    /* in the network namespace the bundle joins (see runc.h); a bundle with a
     * new one gets it back from the images */
    cp->pid = dp_runc_spawn(av.argv, rc->bundle.netns_path[0] ? rc->bundle.netns_path : NULL, in[0], out, out, &err);
    close(in[0]);
    close(out);
    if (cp->pid < 0) {
        dp_error("cannot run runc: %s", err.msg);
        return -1;
    }
    return 0;
}

/* Memory mode (docs/live-migration.md): tells a remote source how the restore
 * ended, so it commits (kills its frozen tree only after this) or rolls back. */
static int report_verdict(const struct restore_args *a, uint32_t verdict)
{
    if (a->images || !a->source)
        return 0;
    char *json = NULL;
    struct dp_err err = {{0}};
    int rc = -1;
    for (int i = 0; i < 3 && rc < 0; i++) /* a lost reply: the same verdict again is harmless */
        rc = dp_live_report(a->source, a->key, verdict, &json, &err);
    if (rc < 0)
        dp_error("could not report the restore's %s to %s: %s", verdict == DP_LIVE_VERDICT_RESTORED ? "success"
                 : verdict == DP_LIVE_VERDICT_ABORTED ? "abort" : "failure", a->source, err.msg);
    else if (strstr(json, "\"memory\""))
        dp_info("the source says: %s", json);
    free(json);
    return rc;
}

/* --store: the lease of this restore's writer (fence raised in every slot
 * group), the skeleton into images, and the page source on the cluster. */
static struct dp_pagesrc *open_store(const struct restore_args *a, const char *images, uint64_t *skel_bytes)
{
    struct dp_err err = {{0}};
    struct dp_store *st = dp_store_open_cli(&a->store, &err);
    if (!st) {
        dp_error("cannot use the store %s: %s", a->store.url, err.msg);
        return NULL;
    }
    if (!st->id[0]) {
        dp_error("--store %s names no checkpoint: give redis://ADDR:PORT/ID as 'checkpoint --store' printed it",
                 a->store.url);
        dp_store_close(st);
        return NULL;
    }
    char writer[DP_STORE_WRITER_MAX + 1], holder[128], host[64] = "?";
    if (a->store_writer) {
        snprintf(writer, sizeof(writer), "%s", a->store_writer);
    } else { /* a writer of its own: fan-out restores never share pages */
        uint8_t r[8];
        randombytes_buf(r, sizeof(r));
        snprintf(writer, sizeof(writer), "r");
        sodium_bin2hex(writer + 1, sizeof(writer) - 1, r, sizeof(r));
    }
    gethostname(host, sizeof(host) - 1);
    snprintf(holder, sizeof(holder), "%.60s pid %d workdir-hash %08x", host, (int)getpid(),
             (unsigned)dp_store_group((int32_t)getpid(), 0));
    uint64_t epoch = 0;
    uint32_t files = 0;
    if (dp_store_lease(st, writer, holder, a->take_over, &epoch, &err) < 0) {
        dp_error("%s", err.msg);
        dp_store_close(st);
        return NULL;
    }
    if (!a->json)
        dp_info("store %s: writer '%s' at epoch %llu; pulling the skeleton into %s", a->store.url, writer,
                (unsigned long long)epoch, images);
    if (dp_store_get_skeleton(st, images, &files, skel_bytes, &err) < 0) {
        dp_error("pulling the skeleton from the store failed: %s", err.msg);
        dp_store_lease_release(st, writer, epoch);
        dp_store_close(st);
        return NULL;
    }
    struct dp_pagesrc *src = dp_pagesrc_redis_open(st, images, writer, epoch, &err);
    if (!src) {
        dp_error("the skeleton from the store cannot be read: %s", err.msg);
        dp_store_lease_release(st, writer, epoch);
        dp_store_close(st);
        return NULL;
    }
    if (!a->json)
        dp_info("skeleton: %u files, %llu bytes from the store", files, (unsigned long long)*skel_bytes);
    return src;
}

/* Our restore succeeded but the source never acknowledged it: it may have
 * committed (its tree stays frozen) or not (it rolls back at its
 * --connect-timeout). Our copy is killed: never both running. Once it is
 * provably gone (the init of its own pid namespace, as a container's is: the
 * whole tree dies with it), the source is told (ABORTED) and resumes its
 * tree even after a commit, so the process does not end up nowhere. */
static void abort_unconfirmed(const struct restore_args *a, int pid, const struct dp_runc *r)
{
    unsigned long long start = pid > 0 ? dp_proc_starttime(pid) : 0;
    int own_ns = start && dp_proc_inner_pid(pid) == 1;
    dp_error("killing the restored tree (pid %d): the source did not confirm the restore", pid);
    if (start)
        kill(pid, SIGKILL);
    if (r)
        dp_runc_force_delete(r, a->runc_id); /* and runc forgets it */
    if (!own_ns || dp_proc_wait_gone(pid, start, 20) < 0) {
        dp_error("the restored tree (pid %d) %s, so the source is not told to resume: if it committed, it holds "
                 "the process frozen (its serve log names the cgroup: echo THAWED > CG/freezer.state), else it "
                 "rolls back by itself", pid, own_ns ? "is still there 20 s after SIGKILL"
                 : "has no pid namespace of its own (its children could outlive it)");
        return;
    }
    if (report_verdict(a, DP_LIVE_VERDICT_ABORTED) == 0)
        dp_error("our copy is gone and the source was told: it runs the process again from its frozen tree");
    else
        dp_error("our copy is gone but the source could not be told: if it committed, it holds the process frozen "
                 "(its serve log names the cgroup: echo THAWED > CG/freezer.state), else it rolls back by itself");
}

int dp_restore_main(int argc, char **argv, enum dp_restore_mode mode, void (*usage_fn)(FILE *out))
{
    struct restore_args a;
    int prc = parse_args(argc, argv, &a, mode, usage_fn);
    if (prc >= 0)
        return prc;
    struct dp_err err = {{0}};
    struct dp_lazyd_opts lo;
    memset(&lo, 0, sizeof(lo));
    lo.metrics_addr = a.metrics ? &a.metrics_addr : NULL;
    if (dp_prefetch_parse(a.prefetch, &lo.prefetch, &err) < 0) {
        ARGERR("%s\n", err.msg);
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
    unlink(log); /* criu opens it following symlinks: start from no entry at all */

    /* A container: runc, the bundle and a free ID first, so that bad input
     * fails before any page moves. */
    struct runc_ctx rctx __attribute__((cleanup(runc_ctx_release)));
    memset(&rctx, 0, sizeof(rctx));
    if (a.runc_bundle && runc_prepare(&a, &rctx) < 0)
        return 1;

    if (a.host && enter_netns(a.host) < 0)
        return 1;
    if (a.host && rctx.bundle.netns_path[0]) {
        char hp[PATH_MAX];
        struct stat h, b;
        const struct lab_host *lh = lab_host_find(a.host);
        if (dp_netns_path(lh ? lh->netns : a.host, hp, sizeof(hp)) == 0 && stat(hp, &h) == 0 &&
            stat(rctx.bundle.netns_path, &b) == 0 && (h.st_ino != b.st_ino || h.st_dev != b.st_dev))
            dp_warn("--host %s is not the network namespace the bundle joins (%s): the container lands in the "
                    "bundle's, the daemon's page traffic goes through --host's",
                    a.host, rctx.bundle.netns_path);
    }
    /* The page source first: a wrong key or an unreachable server fails
     * here, before anything is restored. */
    struct dp_pagesrc *src;
    uint64_t skel_bytes = 0, lease_epoch = 0; /* 0: local images, no lease */
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
    } else if (a.store.url) {
        snprintf(images, sizeof(images), "%s/images", workdir);
        src = open_store(&a, images, &skel_bytes);
        if (!src)
            return 1;
    } else {
        src = dp_pagesrc_remote_open(a.source, a.key, &err);
        if (!src) {
            dp_error("cannot use the page server %s: %s", a.source, err.msg);
            return 1;
        }
        if (take_lease(&a, src, &lease_epoch) < 0) {
            src->ops->close(src);
            return 1;
        }
        snprintf(images, sizeof(images), "%s/images", workdir);
        struct dp_skel_result sk;
        if (!a.json)
            dp_info("pulling the skeleton images from %s into %s", a.source, images);
        if (dp_client_get_skeleton(dp_pagesrc_remote_client(src), images, &sk, 120000, &err) < 0) {
            dp_error("pulling the skeleton from %s failed: %s", a.source, err.msg);
            abandon_source(src);
            return 1;
        }
        skel_bytes = sk.bytes_received;
        /* Tasks restored into a user namespace open their images themselves
         * (through CRIU's descriptor of the directory), as its root or, before
         * their uid map exists, as the overflow uid: images must be
         * searchable by anyone, the workdir above it closed to others. */
        if (a.runc_bundle && rctx.bundle.userns && (chmod(workdir, 0700) < 0 || chmod(images, 0711) < 0)) {
            dp_error("cannot make %s searchable for the container's tasks: %s", images, strerror(errno));
            abandon_source(src);
            return 1;
        }
        char b1[32], b2[32];
        dp_format_bytes(sk.bytes_received, b1, sizeof(b1));
        dp_format_bytes(sk.bytes_apparent, b2, sizeof(b2));
        if (!a.json)
            dp_info("skeleton: %u files, %s received (%s apparent: lazy memory stays remote)", sk.files, b1, b2);
    }

    if (a.runc_bundle && check_rootfs(images, &rctx.bundle) < 0) {
        abandon_source(src);
        return 1;
    }

    uint64_t t_skel = dp_now_ns();
    int lfd = dp_lazyd_listen(workdir, &err);
    if (lfd < 0) {
        dp_error("%s", err.msg);
        abandon_source(src);
        return 1;
    }
    /* Working set: the checkpoint's identity (from our copy of its images),
     * the hot set to replay, the trace to record. */
    struct dp_hotset hs = {0};
    /* by default a remote restore without a hot set records one for the next
     * restore; local images are only written to when asked (--record-trace) */
    if (a.record_s < 0)
        a.record_s = a.hotset || a.images || a.store.url ? 0 : 10;
    /* the warm-up takes what is known first: the newest trace, else the
     * classification (lib/warmup.h); none known is fine */
    int wu_order = a.warmup != DP_WARMUP_NONE && !a.hotset && !a.stage;
    if (a.hotset || a.record_s > 0 || wu_order) {
        struct dp_checkpoint *cpi = NULL;
        if (dp_checkpoint_open(images, &cpi, &err) < 0 || dp_checkpoint_identity(cpi, lo.cp_id, &err) < 0) {
            dp_error("cannot identify the checkpoint in %s: %s", images, err.msg);
            dp_checkpoint_close(cpi);
            close(lfd);
            abandon_source(src);
            return 1;
        }
        struct restore_args auto_args = a;
        auto_args.hotset = "auto";
        int hrc = a.hotset ? load_hotset(&a, src, cpi, lo.cp_id, &hs) : wu_order ? load_hotset(&auto_args, src, cpi, lo.cp_id, &hs) : 1;
        dp_checkpoint_close(cpi);
        if (hrc < 0) {
            close(lfd);
            abandon_source(src);
            return 1;
        }
        if (hrc == 0 && !a.hotset) {
            lo.warmup_order = &hs;
            if (!a.json)
                dp_info("warm-up order: %s first (%llu pages), then the rest", dp_hotset_source_name(hs.source),
                        (unsigned long long)hs.total_pages);
        } else if (hrc == 0) {
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
                                     .images_local = a.images ? images : NULL,
                                     .store = a.store.url ? &a.store : NULL};
        lo.trace_sink = trace_sink;
        lo.trace_ctx = &trace_up;
    }
    lo.workdir = workdir;
    lo.listen_fd = lfd;
    lo.src = src;
    lo.background_rate = a.bg_rate;
    lo.warmup = a.warmup;
    if (!a.images && a.source && (a.bg_rate || a.warmup == DP_WARMUP_ALL)) {
        static struct trace_up rel;
        rel = (struct trace_up){.source = a.source, .key = a.key, .workdir = workdir};
        lo.all_resident = release_source;
        lo.all_resident_ctx = &rel;
    }
    lo.fault_timeout = a.fault_timeout;
    lo.on_timeout_kill = a.on_timeout_kill;
    lo.budget_pages = a.budget / 4096;
    lo.budget_frac = a.budget_frac;
    lo.evict_batch = a.evict_batch;
    lo.wb_timeout_ms = a.wb_timeout_ms;
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
    uint64_t hs_pages = lo.replay ? hs.total_pages : 0;
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
    if (mode == DP_MODE_LAZY_PAGES)
        return lazy_pages_report(&a, daemon, workdir, images, skel_bytes);

    /* The restore itself: criu restore --lazy-pages, or runc restore
     * --lazy-pages for a container; bounded, killed if the daemon dies. */
    struct dp_criu_proc cp;
    uint64_t t_criu = dp_now_ns();
    char runc_log[PATH_MAX + 32] = "";
    struct dp_uffdwin uw = {.lock_fd = -1};
    int uw_open = 0;
    if (a.runc_bundle) {
        /* userfaultfd inside a user namespace: see uffdwin.h */
        if (rctx.bundle.userns) {
            if (dp_uffdwin_open(&uw, &err) < 0) {
                dp_error("%s", err.msg);
                kill(daemon, SIGKILL);
                waitpid(daemon, NULL, 0);
                return 1;
            }
            uw_open = 1;
        }
        if (runc_restore_start(&a, &rctx, workdir, images, pidfile, &cp, runc_log, sizeof(runc_log)) < 0) {
            if (uw_open)
                dp_uffdwin_close(&uw, &err);
            kill(daemon, SIGKILL);
            waitpid(daemon, NULL, 0);
            return 1;
        }
    } else {
        /* The freezer cgroup the images name is the source's (memory mode
         * dumps a tree in a freezer cgroup of its own): the restored tree
         * starts in the root freezer cgroup, and CRIU makes no copy of that
         * cgroup here, which would stay behind, empty, once the tree ends. */
        const char *extra[] = {"--work-dir", workdir, "--cgroup-root", "freezer:/", NULL};
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
        t_criu = dp_now_ns();
        if (dp_criu_start(av.argv, &rr, &cp, &err) < 0) {
            dp_error("%s", err.msg);
            kill(daemon, SIGKILL);
            waitpid(daemon, NULL, 0);
            return 1;
        }
    }
    const char *what = a.runc_bundle ? "runc restore" : "criu restore";
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
            dp_error("the lazy-pages daemon ended during the restore (see %s/lazyd.log); stopping %s", workdir,
                     what);
            if (running)
                kill_restorer(&cp, a.runc_bundle != NULL);
            st = -1;
            break;
        }
        if (dp_now_ns() > deadline) {
            dp_error("%s did not finish within %.0f s; killed it (raise --restore-timeout?)", what,
                     a.restore_timeout);
            kill_restorer(&cp, a.runc_bundle != NULL);
            st = -1;
            break;
        }
        usleep(2000);
    }
    uint64_t t_done = dp_now_ns();
    if (uw_open && dp_uffdwin_close(&uw, &err) < 0)
        dp_error("%s", err.msg);
    if (st != 0) {
        if (st != -1)
            dp_error("%s failed (%s %d); its log: %s", what, WIFEXITED(st) ? "exit status" : "signal",
                     WIFEXITED(st) ? WEXITSTATUS(st) : WTERMSIG(st), log);
        if (runc_log[0]) {
            dp_error("runc's messages (%s):", runc_log);
            dp_criu_print_log_tail(runc_log, 8);
        }
        dp_criu_print_log_tail(log, DP_CRIU_LOG_TAIL);
        (void)report_verdict(&a, DP_LIVE_VERDICT_FAILED);
        if (a.runc_bundle) {
            dp_runc_force_delete(&rctx.r, a.runc_id); /* leave no runc state behind */
            runc_purge_cgroups(&rctx);
        }
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
    if (report_verdict(&a, DP_LIVE_VERDICT_RESTORED) < 0) {
        abort_unconfirmed(&a, pid, a.runc_bundle ? &rctx.r : NULL);
        return 1;
    }
    double restore_s = (double)(t_done - t_criu) / 1e9, total_s = (double)(t_done - t_start) / 1e9;
    if (a.json) {
        json_t *o = json_pack("{s:i, s:f, s:f, s:i, s:s, s:s, s:I, s:s, s:I, s:s, s:s, s:f, s:f, s:f, s:s?}",
                              "pid", pid, "restore_s", restore_s, "total_s", total_s, "daemon_pid", (int)daemon,
                              "workdir", workdir, "source", a.images ? "local" : a.source ? a.source : a.store.url, "skeleton_bytes",
                              (json_int_t)skel_bytes, "prefetch", a.prefetch, "hotset_pages", (json_int_t)hs_pages,
                              "hotset_source", hs_source, "hotset_mode", a.stage ? "stage" : "install",
                              "record_trace_s", a.record_s, "skeleton_s", (double)(t_skel - t_start) / 1e9,
                              "daemon_start_s", (double)(t_daemon - t_skel) / 1e9, "runc_id", a.runc_id);
        if (o) {
            json_object_set_new(o, "lease_epoch", json_integer((json_int_t)lease_epoch));
            json_object_set_new(o, "warmup", json_string(dp_warmup_mode_name(
                                                 a.warmup == DP_WARMUP_NONE && a.bg_rate ? DP_WARMUP_ALL
                                                                                       : (enum dp_warmup_mode)a.warmup)));
        }
        if (print_json(o) < 0)
            return 1;
    } else {
        printf("restored %s%s%spid %d in %.3f s (%.3f s including the skeleton); lazy-pages daemon pid %d\n"
               "pages come from %s when touched; stats: distriproc stats --workdir %s\n",
               a.runc_id ? "container " : "", a.runc_id ? a.runc_id : "", a.runc_id ? ", " : "", pid, restore_s,
               total_s, (int)daemon, a.images ? "the local images" : a.source ? a.source : a.store.url, workdir);
    }
    fflush(stdout);
    if (!a.foreground)
        return 0;
    return wait_daemon(&a, daemon, workdir);
}

int cmd_restore(int argc, char **argv)
{
    return dp_restore_main(argc, argv, DP_MODE_RESTORE, restore_usage);
}
