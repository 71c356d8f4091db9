/* distriproc bench faults: what one page fault costs, and how fast remote
 * memory can be scanned, against the floors of this machine and link.
 *
 * The workload is forkmem (idle between commands; VERIFY reads every page in
 * order from one thread: a sequential scan), checkpointed once on src. Then,
 * on dst, for each emulated RTT R (every series measured again per R, so a
 * row's figures share the machine's load of that moment):
 *   local_floor   distriproc restore --images (our daemon serving pages from
 *                 the local images: no network), VERIFY
 *   distriproc    distriproc restore --source (page server on src with
 *                 --emulate-rtt R), VERIFY, once per prefetch policy
 *   raw_tcp       a plain TCP server on src answering 48-byte requests with
 *                 4152-byte replies (the size of a one-page GET reply), each
 *                 reply sent R us after its request arrived, with the page
 *                 server's own delay (lib/rttdelay: the same timerfd); one
 *                 request at a time
 *   raw stream    the same server streaming the scan's bytes after one request
 * Fault latencies are taken where the application sees them: before the
 * scan, forkmem's TOUCH times the first touch of --touch pages spread over its
 * memory (one volatile read each, clock_gettime around it; exact samples), in
 * the local-floor restore and in the remote restore without prefetch. The
 * daemon's own histogram (fault read to page installed, log2 buckets) of the
 * same restores is kept as a secondary series. Raw latencies are measured by
 * the client (send to full reply).
 * Scan throughput is the workload's bytes over the VERIFY round trip. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <limits.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "bench.h"
#include "benchjson.h"
#include "jsonq.h"
#include "lab.h"
#include "lab_cluster.h"
#include "lazyd.h"
#include "orch.h"
#include "util.h"

#define SRC_ADDR "10.250.0.1"
#define DST_ADDR "10.250.0.2"
#define FORKMEM_PORT 7071
#define MAX_RTTS 8
#define MAX_POLICIES 8
#define FM_REPLY_MAX (4000 * 16 + 512) /* forkmem's longest reply: TOUCH 4000 */

struct lat {
    double p50, p90, p99, max;
    uint64_t count;
    json_t *buckets; /* [[upper_us, count], ...] */
};

struct scan {
    char policy[32];
    double mbps, hit_rate, seconds;
    uint64_t errors;
};

struct rttres {
    uint64_t rtt_us;
    struct lat floor, raw, remote;           /* application's first touches; client */
    struct lat store;                        /* --store: first touches through the Redis Cluster */
    struct lat floor_daemon, remote_daemon, store_daemon; /* the daemon's histogram */
    double raw_stream_mbps;
    struct scan scans[2 * MAX_POLICIES];  /* page server, then --store, per policy */
    int nscans;
    char error[512];
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: distriproc bench faults --json OUT [options]\n"
            "\n"
            "Fault service latency (distribution) for the local floor (our daemon serving\n"
            "from local images), a raw 4 KiB TCP request/response on the lab link and a\n"
            "DistriProc remote fault; sequential-scan throughput of remote memory per\n"
            "prefetch policy against a raw TCP stream on the same link; per emulated RTT.\n"
            "\n"
            "  --emulate-rtt LIST  microseconds, e.g. 0,300,1000 (default)\n"
            "  --policies LIST     prefetch policies (default none,seq:16,seq:64,stride,auto)\n"
            "  --mib N             memory of the workload (forkmem), MiB (default 256)\n"
            "  --bandwidth RATE    tbf cap on the lab link (default 1gbit; 'none' = uncapped)\n"
            "  --samples N         raw TCP request/response samples (default 5000)\n"
            "  --touch N           first touches timed by the workload per restore (local\n"
            "                      floor, remote without prefetch), 10..4000 (default 2000)\n"
            "  --port P            page server port; P+1 for the raw server (default 7450)\n"
            "  --workdir DIR       scratch space (default /var/tmp)\n"
            "  --store             also through a Redis Cluster ('lab cluster up'; checkpoint --store,\n"
            "                      restore --store): first-touch latency and scans per policy as\n"
            "                      'redis-cluster/POLICY', in the rows whose emulated RTT is 0\n"
            "  --json OUT          results (schema: scripts/bench_report.py --help)\n");
}

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* ---- forkmem requests from inside a lab host ----------------------------------- */

/* Sends one command line to forkmem at addr from inside netns; the reply line
 * into out. Returns the request's round trip in seconds, or -1. */
static double forkmem_cmd(const char *netns, const char *addr, const char *cmd, char *out, size_t len,
                          double timeout_s)
{
    return bench_line_cmd(netns, addr, FORKMEM_PORT, cmd, out, len, timeout_s);
}

/* ---- the raw TCP baseline (src/bench_raw.c), run in the lab's hosts -------------- */

static pid_t raw_server_start(int port, uint64_t rtt_us)
{
    int ready[2];
    if (pipe(ready) < 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        close(ready[0]);
        struct dp_err err;
        if (lab_enter(lab_host_find("src"), &err) < 0)
            _exit(1);
        int lfd = bench_raw_listen(SRC_ADDR, port);
        if (lfd < 0)
            _exit(1);
        char c = 1;
        dp_write_full(ready[1], &c, 1);
        close(ready[1]);
        bench_raw_serve(lfd, rtt_us);
        _exit(0);
    }
    close(ready[1]);
    char c;
    int ok = dp_read_full(ready[0], &c, 1) == 0;
    close(ready[0]);
    if (!ok) {
        waitpid(pid, NULL, 0);
        return -1;
    }
    return pid;
}

/* In dst: n request/response samples (us, into lat_us), then a stream of
 * stream_bytes (MB/s into *mbps). */
static int raw_client(int port, double *lat_us, long n, uint64_t stream_bytes, double *mbps)
{
    size_t shm_len = sizeof(double) * (size_t)(n + 1);
    int p[2];
    if (pipe(p) < 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        struct dp_err err;
        if (lab_enter(lab_host_find("dst"), &err) < 0)
            _exit(1);
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        inet_pton(AF_INET, SRC_ADDR, &sa.sin_addr);
        double *res = calloc((size_t)n + 1, sizeof(double));
        static char buf[1 << 20];
        int fd = bench_raw_connect(&sa, 'L', 0);
        if (!res || fd < 0)
            _exit(1);
        for (long i = 0; i < n; i++) {
            int64_t ns = bench_raw_roundtrip_ns(fd);
            if (ns < 0)
                _exit(1);
            res[i] = (double)ns / 1e3;
        }
        close(fd);
        fd = bench_raw_connect(&sa, 'S', stream_bytes);
        if (fd < 0)
            _exit(1);
        uint64_t t0 = dp_now_ns(), got = 0;
        while (got < stream_bytes) {
            ssize_t r = read(fd, buf, sizeof(buf));
            if (r <= 0)
                _exit(1);
            got += (uint64_t)r;
        }
        res[n] = (double)stream_bytes / 1e6 / ((double)(dp_now_ns() - t0) / 1e9);
        close(fd);
        _exit(dp_write_full(p[1], res, shm_len) == 0 ? 0 : 1);
    }
    close(p[1]);
    double *res = malloc(shm_len);
    int ok = res && dp_read_full(p[0], res, shm_len) == 0;
    close(p[0]);
    int st;
    waitpid(pid, &st, 0);
    if (!ok || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        free(res);
        return -1;
    }
    memcpy(lat_us, res, sizeof(double) * (size_t)n);
    *mbps = res[n];
    free(res);
    return 0;
}

/* Percentiles and CDF buckets of raw samples (sorted in place); bucket
 * bounds grow by 5 % so the CDF has the daemon histogram's resolution. */
static void lat_from_samples(double *us, long n, struct lat *l)
{
    qsort(us, (size_t)n, sizeof(double), cmp_double);
    l->count = (uint64_t)n;
    l->p50 = us[(long)(0.50 * (double)(n - 1))];
    l->p90 = us[(long)(0.90 * (double)(n - 1))];
    l->p99 = us[(long)(0.99 * (double)(n - 1))];
    l->max = us[n - 1];
    json_t *b = json_array();
    double upper = 1;
    long i = 0;
    while (b && i < n) {
        while (upper < us[i])
            upper *= 1.05;
        long c = 0;
        while (i < n && us[i] <= upper) {
            c++;
            i++;
        }
        if (json_array_append_new(b, json_pack("[o, I]", bench_json_real(upper, 3), (json_int_t)c)) < 0) {
            json_decref(b);
            b = NULL;
        }
    }
    l->buckets = b;
}

/* ---- the daemon's numbers -------------------------------------------------------- */

static int lat_from_stats(const char *stats, struct lat *l)
{
    double v;
    if (dp_json_number(stats, "latency", "p50_us", &l->p50) < 0 ||
        dp_json_number(stats, "latency", "p90_us", &l->p90) < 0 ||
        dp_json_number(stats, "latency", "p99_us", &l->p99) < 0 ||
        dp_json_number(stats, "latency", "max_us", &l->max) < 0 || dp_json_number(stats, "latency", "count", &v) < 0)
        return -1;
    l->count = (uint64_t)v;
    json_t *doc = json_loads(stats, 0, NULL);
    json_t *b = doc ? dp_json_find(doc, "latency_buckets_us") : NULL;
    l->buckets = json_is_array(b) ? json_incref(b) : NULL;
    json_decref(doc);
    return l->buckets ? 0 : -1;
}

struct ctx {
    const char *self, *workroot;
    char images[PATH_MAX + 16], key[PATH_MAX + 16];
    char store_url[512], store_ca[300], store_pass[300]; /* --store: the lab cluster's */
    uint64_t mib;
    int port;
};

static void rm_rf(const char *path)
{
    const char *argv[] = {"rm", "-rf", "--one-file-system", path, NULL};
    struct dp_err err;
    dp_orch_run(argv, NULL, 300, NULL, -1, -1, &err);
}

/* forkmem's TOUCH reply -> exact first-touch samples in l. */
static int lat_from_touch(const char *reply, long want, struct lat *l, char *eb, size_t el)
{
    double touched = 0, errors = -1;
    size_t n = 0;
    double *us = dp_json_numbers(reply, "us", &n);
    if (!us || dp_json_number(reply, NULL, "touched", &touched) < 0 ||
        dp_json_number(reply, NULL, "errors", &errors) < 0) {
        snprintf(eb, el, "TOUCH of the restored forkmem failed (reply '%.100s')", reply);
        free(us);
        return -1;
    }
    if (errors != 0) {
        snprintf(eb, el, "TOUCH found %.0f pages with wrong contents", errors);
        free(us);
        return -1;
    }
    if (n < 1 || (long)n > want || n != (size_t)touched) {
        snprintf(eb, el, "TOUCH returned %zu samples for %.0f pages", n, touched);
        free(us);
        return -1;
    }
    lat_from_samples(us, (long)n, l);
    free(us);
    return 0;
}

/* One lazy restore in dst; with touch > 0 forkmem's TOUCH first (first-touch
 * latencies into app), then a VERIFY (the scan), the daemon's stats; then the
 * restored tree is killed and the daemon waited for. */
/* restore_and_scan's source for the Redis Cluster (--store). */
static const char STORE[] = "redis cluster";

static int restore_and_scan(const struct ctx *c, const char *source, const char *policy, long touch,
                            struct lat *app, struct scan *s, char **stats_out, char *eb, size_t el)
{
    char wd[PATH_MAX + 64];
    snprintf(wd, sizeof(wd), "%s/wd", c->workroot);
    rm_rf(wd);
    const char *argv_local[] = {c->self, "restore", "--images", c->images, "--workdir", wd, "--host", "dst",
                                "--prefetch", policy, "--json", NULL};
    const char *argv_remote[] = {c->self, "restore", "--source", source, "--key", c->key, "--workdir", wd,
                                 "--host", "dst", "--prefetch", policy, "--json", NULL};
    const char *argv_store[] = {c->self, "restore", "--store", c->store_url, "--store-ca", c->store_ca,
                                "--store-pass-file", c->store_pass, "--workdir", wd, "--host", "dst", "--prefetch",
                                policy, "--json", NULL};
    struct dp_err err = {{0}};
    char *out = NULL;
    int st = dp_orch_run(source == STORE ? argv_store : source ? argv_remote : argv_local, NULL, 300, &out, -1, -1,
                         &err);
    double pid = 0, dpid = 0;
    if (st < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0 || dp_json_number(out, NULL, "pid", &pid) < 0 ||
        dp_json_number(out, NULL, "daemon_pid", &dpid) < 0) {
        snprintf(eb, el, "distriproc restore (%.40s, prefetch %.30s) failed; see %.200s/restore.log",
                 source ? source : "local images", policy, wd);
        free(out);
        return -1;
    }
    free(out);
    unsigned long long dstart = dp_proc_starttime((pid_t)dpid);
    static char reply[FM_REPLY_MAX];
    int rc = 0;
    if (touch > 0) {
        char cmd[64];
        snprintf(cmd, sizeof(cmd), "TOUCH %ld", touch);
        if (forkmem_cmd(lab_hosts[1].netns, DST_ADDR, cmd, reply, sizeof(reply), 600) < 0 ||
            lat_from_touch(reply, touch, app, eb, el) < 0) {
            if (!eb[0])
                snprintf(eb, el, "TOUCH of the restored forkmem failed (reply '%.100s')", reply);
            rc = -1;
        }
    }
    double dt = rc < 0 ? -1 : forkmem_cmd(lab_hosts[1].netns, DST_ADDR, "VERIFY", reply, sizeof(reply), 600);
    double errors = -1;
    if (rc < 0) {
        /* eb says why */
    } else if (dt < 0 || dp_json_number(reply, NULL, "errors", &errors) < 0) {
        snprintf(eb, el, "VERIFY of the restored forkmem failed (reply '%.100s')", reply);
        rc = -1;
    } else {
        snprintf(s->policy, sizeof(s->policy), "%s", policy);
        s->seconds = dt;
        s->mbps = (double)(c->mib << 20) / 1e6 / dt;
        s->errors = (uint64_t)errors;
        struct dp_err serr = {{0}};
        char *stats = dp_lazyd_control(wd, "stats", &serr);
        if (!stats) {
            snprintf(eb, el, "distriproc stats failed: %.300s", serr.msg);
            rc = -1;
        } else {
            if (dp_json_number(stats, "total", "prefetch_hit_rate", &s->hit_rate) < 0)
                s->hit_rate = 0;
            *stats_out = stats;
        }
    }
    kill((pid_t)pid, SIGKILL);
    if (dp_proc_wait_gone((pid_t)dpid, dstart, 20) < 0) {
        kill((pid_t)dpid, SIGKILL);
        dp_proc_wait_gone((pid_t)dpid, dstart, 5);
    }
    rm_rf(wd);
    if (rc == 0 && s->errors) {
        snprintf(eb, el, "the scan found %llu bad pages (prefetch %.30s)", (unsigned long long)s->errors, policy);
        rc = -1;
    }
    return rc;
}

/* One latency series of a row: how it was measured, percentiles, CDF buckets. */
static json_t *json_lat(const char *method, const struct lat *l)
{
    return json_pack("{s:s, s:I, s:o, s:o, s:o, s:o, s:o}", "method", method, "count", (json_int_t)l->count, "p50_us",
                     bench_json_real(l->p50, 3), "p90_us", bench_json_real(l->p90, 3), "p99_us",
                     bench_json_real(l->p99, 3), "max_us", bench_json_real(l->max, 3), "buckets",
                     l->buckets ? json_incref(l->buckets) : json_array());
}

/* One emulated RTT's row: its error (or null), the latency series that were
 * measured, and the scan of each prefetch policy. */
static json_t *json_row(const struct rttres *x, uint64_t mib)
{
    const struct {
        const char *name, *method;
        const struct lat *l;
    } ser[] = {
        {"local_floor", "first touch (application, exact)", &x->floor},
        {"raw_tcp", "client send to full reply (exact)", &x->raw},
        {"distriproc", "first touch (application, exact)", &x->remote},
        {"redis_cluster", "first touch (application, exact), restore --store", &x->store},
        {"local_floor_daemon", "daemon histogram (log2 buckets)", &x->floor_daemon},
        {"distriproc_daemon", "daemon histogram (log2 buckets)", &x->remote_daemon},
        {"redis_cluster_daemon", "daemon histogram (log2 buckets), restore --store", &x->store_daemon},
    };
    json_t *lat = json_object(), *pol = json_array();
    for (size_t k = 0; lat && k < DP_ARRAY_LEN(ser); k++) {
        if (ser[k].l->count && json_object_set_new(lat, ser[k].name, json_lat(ser[k].method, ser[k].l)) < 0) {
            json_decref(lat);
            lat = NULL;
        }
    }
    for (int k = 0; pol && k < x->nscans; k++) {
        const struct scan *sc = &x->scans[k];
        if (json_array_append_new(pol, json_pack("{s:s, s:o, s:o, s:o}", "policy", sc->policy, "MBps",
                                                 bench_json_real(sc->mbps, 3), "seconds", bench_json_real(sc->seconds, 4),
                                                 "prefetch_hit_rate", bench_json_real(sc->hit_rate, 4))) < 0) {
            json_decref(pol);
            pol = NULL;
        }
    }
    return json_pack("{s:I, s:s?, s:o, s:{s:I, s:o, s:o}}", "emulate_rtt_us", (json_int_t)x->rtt_us, "error",
                     x->error[0] ? x->error : NULL, "latency", lat, "scan", "bytes", (json_int_t)(mib << 20),
                     "raw_stream_MBps", bench_json_real(x->raw_stream_mbps, 3), "policies", pol);
}

/* The result file, rewritten after every row so an interrupted run keeps the
 * rows it finished. */
static int write_json(const char *path, const char *cmdline, time_t started, const char *bandwidth, uint64_t mib, long touch,
                      const struct rttres *r, int n)
{
    char workload[160];
    snprintf(workload, sizeof(workload),
             "forkmem --mib %llu, TOUCH %ld (first touches, timed) then VERIFY (one sequential pass)",
             (unsigned long long)mib, touch);
    json_t *runs = json_array();
    for (int i = 0; runs && i < n; i++) {
        if (json_array_append_new(runs, json_row(&r[i], mib)) < 0) {
            json_decref(runs);
            runs = NULL;
        }
    }
    json_t *doc = json_pack("{s:s, s:i, s:o, s:s, s:o, s:s, s:s, s:s, s:o}", "benchmark", "faults", "schema", 1,
                            "started", bench_json_utc(started), "command", cmdline, "machine", bench_json_machine(),
                            "lab", lab_name(), "bandwidth", bandwidth, "workload", workload, "runs", runs);
    if (bench_json_write(path, doc) < 0) {
        dp_error("cannot write %s: %s (is its directory there and writable?)", path, strerror(errno));
        return -1;
    }
    return 0;
}

static int parse_list(char *text, char **items, int max)
{
    int n = 0;
    for (char *save = NULL, *tok = strtok_r(text, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (n == max)
            return -1;
        items[n++] = tok;
    }
    return n;
}

/* The "store"."url" of checkpoint --json's report. */
static int store_url_of(const char *json, char *url, size_t len)
{
    json_t *j = json_loads(json ? json : "", 0, NULL);
    const char *u = json_string_value(json_object_get(json_object_get(j, "store"), "url"));
    int rc = u && strlen(u) < len ? 0 : -1;
    if (rc == 0)
        memcpy(url, u, strlen(u) + 1);
    json_decref(j);
    return rc;
}

/* --store: the lab's Redis Cluster (lib/lab_cluster.h), brought up by
 * `distriproc lab cluster up`; seed_url gets rediss://SEED. */
static int bench_store_up(struct ctx *c, char *seed_url, size_t len)
{
    return bench_cluster_up(c->self, seed_url, len, c->store_ca, sizeof(c->store_ca), c->store_pass,
                            sizeof(c->store_pass));
}

/* One policy through the Redis Cluster (--store), right after the same
 * policy through the page server: the pair sees the same machine load. */
static void store_policy(const struct ctx *c, struct rttres *x, const char *pol, long touch)
{
    struct scan s = {0};
    char *stats = NULL, eb[512] = "";
    int none = strcmp(pol, "none") == 0;
    if (restore_and_scan(c, STORE, pol, none ? touch : 0, &x->store, &s, &stats, eb, sizeof(eb)) < 0) {
        dp_warn("faults: redis cluster, prefetch %s: %s", pol, eb);
        if (!x->error[0])
            snprintf(x->error, sizeof(x->error), "redis cluster, prefetch %.30s: %.400s", pol, eb);
    } else {
        snprintf(s.policy, sizeof(s.policy), "redis-cluster/%.16s", pol);
        x->scans[x->nscans++] = s;
        dp_info("faults: redis cluster, prefetch %-8s scan %8.1f MB/s (%.2f s)", pol, s.mbps, s.seconds);
        if (none && lat_from_stats(stats, &x->store_daemon) < 0)
            dp_warn("faults: no latency histogram in the store restore's stats");
        if (none)
            dp_info("faults: redis cluster fault first touch p50 %.1f us p99 %.1f us (daemon: p50 %.1f us)",
                    x->store.p50, x->store.p99, x->store_daemon.p50);
    }
    free(stats);
}

int bench_faults(int argc, char **argv)
{
    static const struct option opts[] = {
        {"emulate-rtt", required_argument, NULL, 'r'}, {"policies", required_argument, NULL, 'p'},
        {"mib", required_argument, NULL, 'm'},         {"bandwidth", required_argument, NULL, 'b'},
        {"samples", required_argument, NULL, 'n'},     {"port", required_argument, NULL, 'P'},
        {"touch", required_argument, NULL, 't'},       {"store", no_argument, NULL, 'S'},
        {"workdir", required_argument, NULL, 'w'},     {"json", required_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},              {NULL, 0, NULL, 0},
    };
    char rtts_text[128] = "0,300,1000", pol_text[256] = "none,seq:16,seq:64,stride,auto", cmdline[1024];
    const char *bandwidth = "1gbit", *json = NULL, *workroot = "/var/tmp";
    long samples = 5000, touch = 2000;
    int use_store = 0;
    struct ctx c = {.mib = 256, .port = 7450};
    bench_cmdline(argc, argv, cmdline, sizeof(cmdline));
    int ch;
    char *end;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 'r': snprintf(rtts_text, sizeof(rtts_text), "%s", optarg); break;
        case 'p': snprintf(pol_text, sizeof(pol_text), "%s", optarg); break;
        case 'm':
            c.mib = strtoull(optarg, &end, 10);
            if (*end || c.mib < 1 || c.mib > 8192) {
                fprintf(stderr, "distriproc bench faults: --mib takes 1..8192\n");
                return 2;
            }
            break;
        case 'b': bandwidth = optarg; break;
        case 'n':
            samples = strtol(optarg, &end, 10);
            if (*end || samples < 10 || samples > 10000000) {
                fprintf(stderr, "distriproc bench faults: --samples takes 10..10000000\n");
                return 2;
            }
            break;
        case 't':
            touch = strtol(optarg, &end, 10);
            if (*end || touch < 10 || touch > 4000) {
                fprintf(stderr, "distriproc bench faults: --touch takes 10..4000\n");
                return 2;
            }
            break;
        case 'P':
            c.port = (int)strtol(optarg, &end, 10);
            if (*end || c.port < 1 || c.port > 65534) {
                fprintf(stderr, "distriproc bench faults: --port takes 1..65534\n");
                return 2;
            }
            break;
        case 'w': workroot = optarg; break;
        case 'S': use_store = 1; break;
        case 'j': json = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!json || optind != argc) {
        fprintf(stderr, "distriproc bench faults: --json OUT is required\n\n");
        usage(stderr);
        return 2;
    }
    char *rtt_items[MAX_RTTS], *pol_items[MAX_POLICIES];
    int nrtt = parse_list(rtts_text, rtt_items, MAX_RTTS), npol = parse_list(pol_text, pol_items, MAX_POLICIES);
    if (nrtt <= 0 || npol <= 0) {
        fprintf(stderr, "distriproc bench faults: --emulate-rtt takes 1..%d values, --policies 1..%d\n", MAX_RTTS,
                MAX_POLICIES);
        return 2;
    }
    static struct rttres res[MAX_RTTS];
    memset(res, 0, sizeof(res));
    for (int i = 0; i < nrtt; i++) {
        res[i].rtt_us = strtoull(rtt_items[i], &end, 10);
        if (*end || res[i].rtt_us > 1000000) {
            fprintf(stderr, "distriproc bench faults: bad RTT '%s' (microseconds)\n", rtt_items[i]);
            return 2;
        }
    }
    uint64_t bits = 0;
    struct dp_err err = {{0}};
    if (strcmp(bandwidth, "none") != 0 && lab_parse_rate(bandwidth, &bits, &err) < 0) {
        fprintf(stderr, "distriproc bench faults: --bandwidth: %s\n", err.msg);
        return 2;
    }
    if (geteuid() != 0) {
        dp_error("needs root (namespaces, CRIU)");
        return 1;
    }
    c.self = dp_self_exe();
    char forkmem[PATH_MAX];
    snprintf(forkmem, sizeof(forkmem), "%s", c.self);
    char *slash = strrchr(forkmem, '/');
    if (slash)
        snprintf(slash + 1, sizeof(forkmem) - (size_t)(slash + 1 - forkmem), "forkmem");
    if (access(forkmem, X_OK) < 0) {
        dp_error("cannot find %s (make builds it next to distriproc)", forkmem);
        return 1;
    }
    char work[PATH_MAX];
    snprintf(work, sizeof(work), "%s/distriproc-faults.%d", workroot, (int)getpid());
    c.workroot = work;
    rm_rf(work);
    if (mkdir(work, 0700) < 0) {
        dp_error("cannot create %s: %s", work, strerror(errno));
        return 1;
    }
    int up = lab_up(bits, &err);
    if (up < 0) {
        dp_error("cannot bring the lab up: %s", err.msg);
        return 1;
    }
    time_t started = time(NULL);
    int rc = 1;
    pid_t server = -1;
    snprintf(c.images, sizeof(c.images), "%s/images", work);
    snprintf(c.key, sizeof(c.key), "%s/key", work);

    /* The workload, once. */
    char mibs[32], port[16];
    snprintf(mibs, sizeof(mibs), "%llu", (unsigned long long)c.mib);
    snprintf(port, sizeof(port), "%d", FORKMEM_PORT);
    const char *start[] = {c.self, "lab", "exec", "src", "--container", "--detach", "--", forkmem, "--mib", mibs,
                           "--port", port, NULL};
    char *out = NULL;
    int st = dp_orch_run(start, NULL, 60, &out, -1, -1, &err);
    pid_t fm = out ? (pid_t)atoi(out) : 0;
    free(out);
    if (st != 0 || fm <= 0) {
        dp_error("cannot start forkmem in a src container");
        goto done;
    }
    char reply[512];
    int ready = 0;
    for (int i = 0; i < 300 && !ready; i++) {
        ready = forkmem_cmd(lab_hosts[0].netns, SRC_ADDR, "VERIFY", reply, sizeof(reply), 60) >= 0;
        if (!ready)
            usleep(100000);
    }
    if (!ready) {
        dp_error("forkmem did not answer on src");
        kill(fm, SIGKILL);
        goto done;
    }
    char pidbuf[32];
    snprintf(pidbuf, sizeof(pidbuf), "%d", (int)fm);
    char seed_url[80];
    if (use_store && bench_store_up(&c, seed_url, sizeof(seed_url)) < 0) {
        kill(fm, SIGKILL);
        goto done;
    }
    const char *ck[] = {c.self, "checkpoint", "--host", "src", "--pid", pidbuf, "--images", c.images, "--json",
                        use_store ? "--store" : NULL, seed_url, "--store-ca", c.store_ca, "--store-pass-file",
                        c.store_pass, NULL};
    dp_info("faults: forkmem --mib %llu checkpointed into %s", (unsigned long long)c.mib, c.images);
    if (dp_orch_run(ck, NULL, 600, &out, -1, -1, &err) != 0 ||
        (use_store && store_url_of(out, c.store_url, sizeof(c.store_url)) < 0)) {
        dp_error("checkpoint failed");
        free(out);
        kill(fm, SIGKILL);
        goto done;
    }
    free(out);
    const char *kg[] = {c.self, "keygen", c.key, NULL};
    dp_orch_run(kg, NULL, 30, NULL, -1, -1, &err);

    char *stats = NULL, eb[512] = "";
    double *lat_us = calloc((size_t)samples, sizeof(double));
    for (int i = 0; i < nrtt; i++) {
        struct rttres *x = &res[i];
        /* The local floor does not depend on the link, but the machine's load
         * drifts: measured again in every row, beside the raw baseline and
         * the remote faults it is added to. */
        struct scan fs;
        stats = NULL;
        eb[0] = '\0';
        dp_info("faults: RTT %llu us: local floor (restore --images, prefetch none)", (unsigned long long)x->rtt_us);
        if (restore_and_scan(&c, NULL, "none", touch, &x->floor, &fs, &stats, eb, sizeof(eb)) < 0 ||
            lat_from_stats(stats, &x->floor_daemon) < 0)
            dp_warn("faults: local floor failed: %s", eb[0] ? eb : "no latency in the stats");
        else
            dp_info("faults: local floor first touch p50 %.1f us p99 %.1f us (daemon: p50 %.1f us), scan %.1f MB/s",
                    x->floor.p50, x->floor.p99, x->floor_daemon.p50, fs.mbps);
        free(stats);
        char listen[64], rtt[32], logp[PATH_MAX + 32];
        snprintf(listen, sizeof(listen), SRC_ADDR ":%d", c.port);
        snprintf(rtt, sizeof(rtt), "%llu", (unsigned long long)x->rtt_us);
        snprintf(logp, sizeof(logp), "%s/serve.log", work);
        /* Raw TCP first, on the same link with the same emulated delay. */
        pid_t raw = raw_server_start(c.port + 1, x->rtt_us);
        if (raw < 0 || raw_client(c.port + 1, lat_us, samples, c.mib << 20, &x->raw_stream_mbps) < 0) {
            snprintf(x->error, sizeof(x->error), "raw TCP measurement failed");
        } else {
            lat_from_samples(lat_us, samples, &x->raw);
            dp_info("faults: RTT %s us: raw 4 KiB req/resp p50 %.1f us p99 %.1f us; raw stream %.1f MB/s", rtt,
                    x->raw.p50, x->raw.p99, x->raw_stream_mbps);
        }
        if (raw > 0) {
            kill(raw, SIGKILL);
            waitpid(raw, NULL, 0);
        }
        const char *sv[] = {c.self, "serve", "--images", c.images, "--listen", listen, "--key", c.key,
                            "--emulate-rtt", rtt, NULL};
        server = dp_orch_spawn(sv, lab_hosts[0].netns, logp, &err);
        for (int k = 0; k < 500 && !dp_orch_can_connect(lab_hosts[0].netns, listen, 200); k++)
            usleep(10000);
        for (int k = 0; k < npol; k++) {
            struct scan s = {0};
            stats = NULL;
            eb[0] = '\0';
            int none = strcmp(pol_items[k], "none") == 0;
            if (restore_and_scan(&c, listen, pol_items[k], none ? touch : 0, &x->remote, &s, &stats, eb,
                                 sizeof(eb)) < 0) {
                dp_warn("faults: RTT %s us, prefetch %s: %s", rtt, pol_items[k], eb);
                if (!x->error[0])
                    snprintf(x->error, sizeof(x->error), "prefetch %.30s: %.400s", pol_items[k], eb);
            } else {
                x->scans[x->nscans++] = s;
                if (none && lat_from_stats(stats, &x->remote_daemon) < 0)
                    dp_warn("faults: no latency histogram in the stats");
                dp_info("faults: RTT %s us, prefetch %-8s scan %8.1f MB/s (%.2f s), hit rate %.1f %%", rtt,
                        pol_items[k], s.mbps, s.seconds, s.hit_rate * 100);
                if (none)
                    dp_info("faults: RTT %s us: DistriProc remote fault first touch p50 %.1f us p99 %.1f us "
                            "(daemon: p50 %.1f us)", rtt, x->remote.p50, x->remote.p99, x->remote_daemon.p50);
            }
            free(stats);
            /* The cluster has no emulated RTT: measured in the RTT 0 rows only. */
            if (use_store && x->rtt_us == 0)
                store_policy(&c, x, pol_items[k], touch);
        }
        kill(server, SIGTERM);
        if (dp_proc_wait_gone(server, 0, 10) < 0)
            kill(server, SIGKILL);
        waitpid(server, NULL, 0);
        server = -1;
        write_json(json, cmdline, started, bandwidth, c.mib, touch, res, i + 1);
    }
    free(lat_us);
    rc = write_json(json, cmdline, started, bandwidth, c.mib, touch, res, nrtt) == 0 ? 0 : 1;
    printf("\nfaults: results in %s (plots: scripts/bench_report.py --faults %s --out DIR)\n", json, json);
done:
    if (server > 0)
        kill(server, SIGKILL);
    rm_rf(work);
    if (use_store && lab_cluster_down(NULL, &err) < 0)
        dp_warn("lab cluster down: %s", err.msg);
    if (up == LAB_CREATED && lab_down(NULL, &err) < 0)
        dp_warn("lab down: %s", err.msg);
    return rc;
}
