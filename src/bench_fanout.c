/* bench fanout: restore fan-out from one checkpoint in the Redis Cluster
 * (issue 14): N destinations restore the same checkpoint at once, each in a
 * host of its own (lib/lab_fanout.h: network namespace; CRIU gives each copy
 * its own pid namespace), each with its own writes (memwalk --write-ratio;
 * with --budget also written back to the store under its own writer's
 * fence). Per N: time to first reply of every copy (restore started -> its
 * memwalk answers STAT), then one VERIFY pass per copy (every page read and
 * checked: exact contents), and the aggregate pages/s the store served
 * (N x pages / time from the start until the last copy verified). */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "bench.h"
#include "benchjson.h"
#include "criu.h"
#include "jsonq.h"
#include "lab.h"
#include "lab_cluster.h"
#include "lab_fanout.h"
#include "lazyd.h"
#include "orch.h"
#include "store_redis.h"
#include "util.h"

#define MW_PORT 7070
#define MAX_NS 8
#define REPLY_MAX 4096

struct fctx {
    const char *self;
    char work[PATH_MAX];
    char url[512], ca[300], pass[300];
    const char *budget;     /* --budget for every restore, or NULL */
    const char *vbuf;       /* --victim-buffer for every restore, or NULL */
    const char *memwalk;    /* --memwalk PATH, or NULL: next to distriproc */
    uint64_t mib;
};

/* One destination's outcome (written by its child, read by the parent). */
struct dest {
    int ok;
    int pid, daemon_pid;
    double restore_s;       /* restore command started -> returned */
    double ttfr_s;          /* started -> first STAT reply */
    double verified_s;      /* started -> VERIFY reply */
    double verify_s;        /* the VERIFY pass itself */
    uint64_t pages, errors, bad_bytes, writes, walk_errors, writebacks, refaults;
    char error[200];
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: distriproc bench fanout --json OUT [--n 1,4,16] [--mib M] [--write-ratio R]\n"
            "                               [--budget SIZE [--victim-buffer SIZE]] [--memwalk PATH]\n"
            "                               [--workdir DIR]\n\n"
            "Restore fan-out from one checkpoint in the lab's Redis Cluster ('lab cluster up' is\n"
            "run): memwalk --mib M is checkpointed with --store once, then for each N, N\n"
            "destinations restore it at once, each in its own network namespace LAB-foI (joined\n"
            "to the lab's dst host; removed afterwards) and its own pid namespace, each writing\n"
            "its own pages. Per N: time to first reply of each copy (restore started -> its\n"
            "memwalk answers), one VERIFY pass per copy (exact contents), and the aggregate\n"
            "pages/s the store served.\n\n"
            "  --n LIST            destination counts (default 1,4,16; each 1..%d)\n"
            "  --mib M             memwalk's memory per copy (default 16)\n"
            "  --write-ratio R     memwalk's share of writes (default 0.2)\n"
            "  --budget SIZE       restore --budget SIZE: dirty pages written back to the store\n"
            "                      under each copy's own writer (fenced apart)\n"
            "  --victim-buffer SIZE  restore --victim-buffer SIZE (small, e.g. 4K: evicted pages\n"
            "                      touched again come back from the store)\n"
            "  --memwalk PATH      the workload binary (default: memwalk next to distriproc; an\n"
            "                      uninstrumented one: CRIU would dump a sanitizer's shadow maps)\n"
            "  --workdir DIR       scratch directory (default /var/tmp)\n"
            "  --json OUT          results (required)\n",
            LAB_FANOUT_MAX);
}

/* ---- one destination (a child of the bench) ---- */

/* An integer field of a JSON reply, 0 if absent. */
static uint64_t jint(json_t *j, const char *k) { return (uint64_t)json_integer_value(json_object_get(j, k)); }

/* Restores the checkpoint into host i, waits for its first reply, verifies
 * every page; fills d. Runs in a child: nothing here touches the others. */
static void dest_run(const struct fctx *c, int n, int i, uint64_t t0, struct dest *d)
{
    char wd[PATH_MAX + 32], ns[128], addr[32], reply[REPLY_MAX];
    snprintf(wd, sizeof(wd), "%s/n%d-d%d", c->work, n, i);
    lab_fanout_host(i, ns, sizeof(ns), addr, sizeof(addr));
    const char *argv[24] = {c->self, "restore", "--store", c->url, "--store-ca", c->ca, "--store-pass-file",
                            c->pass, "--workdir", wd, "--host", ns, "--json"};
    int k = 13;
    if (c->budget) {
        argv[k++] = "--budget";
        argv[k++] = c->budget;
    }
    if (c->vbuf) {
        argv[k++] = "--victim-buffer";
        argv[k++] = c->vbuf;
    }
    argv[k] = NULL;
    char *out = NULL;
    struct dp_err err = {{0}};
    int st = dp_orch_run(argv, NULL, 300, &out, -1, -1, &err);
    d->restore_s = (double)(dp_now_ns() - t0) / 1e9;
    json_t *j = json_loads(out ? out : "", 0, NULL);
    free(out);
    d->pid = (int)jint(j, "pid");
    d->daemon_pid = (int)jint(j, "daemon_pid");
    json_decref(j);
    if (st != 0 || d->pid <= 0) {
        snprintf(d->error, sizeof(d->error), "restore into %.60s failed (see %.100s/restore.log)", ns, wd);
        return;
    }
    /* first reply: STAT answered (polled every 5 ms, bounded) */
    uint64_t limit = dp_now_ns() + 120ull * 1000000000ull;
    while (bench_line_cmd(ns, addr, MW_PORT, "STAT", reply, sizeof(reply), 10) < 0) {
        if (dp_now_ns() > limit) {
            snprintf(d->error, sizeof(d->error), "the copy in %s never answered", ns);
            return;
        }
        usleep(5000);
    }
    d->ttfr_s = (double)(dp_now_ns() - t0) / 1e9;
    double v = bench_line_cmd(ns, addr, MW_PORT, "VERIFY", reply, sizeof(reply), 300);
    d->verified_s = (double)(dp_now_ns() - t0) / 1e9;
    j = json_loads(reply, 0, NULL);
    if (v < 0 || !j) {
        snprintf(d->error, sizeof(d->error), "VERIFY in %s failed", ns);
        json_decref(j);
        return;
    }
    d->verify_s = v;
    d->pages = jint(j, "verify_pages");
    d->errors = jint(j, "verify_errors");
    d->bad_bytes = jint(j, "verify_bad_bytes");
    d->writes = jint(j, "writes");
    d->walk_errors = jint(j, "errors");
    json_decref(j);
    char *stats = dp_lazyd_control(wd, "stats", &err);
    j = json_loads(stats ? stats : "", 0, NULL);
    free(stats);
    d->writebacks = jint(json_object_get(j, "budget"), "writebacks");
    d->refaults = jint(json_object_get(j, "budget"), "refaults");
    json_decref(j);
    d->ok = 1;
}

/* ---- one fan-out ---- */

/* Stops a restored copy: its tree first, then its daemon (which ends with it). */
static void dest_stop(const struct dest *d)
{
    if (d->pid > 0)
        kill(d->pid, SIGKILL);
    if (d->daemon_pid > 0 && dp_proc_wait_gone(d->daemon_pid, 0, 20) < 0)
        kill(d->daemon_pid, SIGKILL);
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Writers with a fence on the checkpoint (every restore has its own), asked
 * from inside the lab's dst host (the store is reachable only there); -1 if
 * the store cannot say. */
static int writers_now(const struct fctx *c)
{
    int p[2];
    if (pipe(p) < 0)
        return -1;
    pid_t pid = fork();
    if (pid == 0) {
        close(p[0]);
        struct dp_store_cli sc = {.url = c->url, .ca = c->ca, .pass_file = c->pass};
        struct dp_err err = {{0}};
        struct dp_store *st = NULL;
        int n = -1;
        if (dp_netns_enter(lab_hosts[1].netns, &err) == 0 && (st = dp_store_open_cli(&sc, &err)))
            n = dp_store_writers(st, NULL, NULL, 0, &err);
        if (n < 0)
            dp_warn("fanout: the store's writers: %s", err.msg);
        dp_store_close(st);
        dp_write_full(p[1], &n, sizeof(n));
        _exit(0);
    }
    close(p[1]);
    int n = -1;
    if (pid < 0 || dp_read_full(p[0], &n, sizeof(n)) < 0)
        n = -1;
    close(p[0]);
    if (pid > 0)
        waitpid(pid, NULL, 0);
    return n;
}

/* N restores at once: one child each, results through a pipe each. */
static json_t *fanout_run(const struct fctx *c, int n)
{
    struct dp_err err = {{0}};
    if (lab_fanout_up(n, &err) < 0) {
        dp_error("fanout: %s", err.msg);
        return NULL;
    }
    struct dest *ds = calloc((size_t)n, sizeof(*ds));
    pid_t *kids = calloc((size_t)n, sizeof(*kids));
    int pfd[LAB_FANOUT_MAX][2];
    int writers0 = writers_now(c);
    uint64_t t0 = dp_now_ns();
    for (int i = 0; ds && kids && i < n; i++) {
        if (pipe(pfd[i]) < 0)
            break;
        kids[i] = fork();
        if (kids[i] == 0) {
            struct dest d = {0};
            dest_run(c, n, i + 1, t0, &d);
            dp_write_full(pfd[i][1], &d, sizeof(d));
            _exit(0);
        }
        close(pfd[i][1]);
    }
    for (int i = 0; ds && kids && i < n; i++) {
        if (kids[i] <= 0 || dp_read_full(pfd[i][0], &ds[i], sizeof(ds[i])) < 0)
            snprintf(ds[i].error, sizeof(ds[i].error), "destination %d reported nothing", i + 1);
        close(pfd[i][0]);
        if (kids[i] > 0)
            waitpid(kids[i], NULL, 0);
    }
    /* the copies still run: each one's writer holds its fence */
    int writers = writers_now(c);
    writers = writers >= 0 && writers0 >= 0 ? writers - writers0 : -1;
    json_t *row = NULL, *dests = json_array();
    double *ttfr = calloc((size_t)n, sizeof(double)), last = 0;
    uint64_t pages = 0;
    int ok = 0;
    for (int i = 0; ds && ttfr && i < n; i++) {
        struct dest *d = &ds[i];
        if (d->ok && d->errors == 0 && d->bad_bytes == 0 && d->walk_errors == 0)
            ttfr[ok++] = d->ttfr_s;
        pages += d->ok ? d->pages : 0;
        if (d->verified_s > last)
            last = d->verified_s;
        json_array_append_new(dests, json_pack("{s:i, s:b, s:o, s:o, s:o, s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:I, s:s?}",
                                               "host", i + 1, "ok", d->ok, "restore_s", bench_json_real(d->restore_s, 4),
                                               "ttfr_s", bench_json_real(d->ttfr_s, 4), "verified_s",
                                               bench_json_real(d->verified_s, 4), "verify_s",
                                               bench_json_real(d->verify_s, 4), "verify_pages",
                                               (json_int_t)d->pages, "verify_errors", (json_int_t)d->errors,
                                               "verify_bad_bytes", (json_int_t)d->bad_bytes, "writes",
                                               (json_int_t)d->writes, "walk_errors", (json_int_t)d->walk_errors,
                                               "writebacks", (json_int_t)d->writebacks, "refaults",
                                               (json_int_t)d->refaults, "error", d->error[0] ? d->error : NULL));
        dest_stop(d);
    }
    if (ttfr && ok > 0) {
        qsort(ttfr, (size_t)ok, sizeof(double), cmp_dbl);
        double pps = last > 0 ? (double)pages / last : 0;
        row = json_pack("{s:i, s:i, s:i, s:o, s:o, s:o, s:I, s:o, s:o}", "n", n, "exact", ok, "writers_fenced",
                        writers, "ttfr_p50_s",
                        bench_json_real(ttfr[(ok - 1) / 2], 4), "ttfr_max_s", bench_json_real(ttfr[ok - 1], 4),
                        "wall_s", bench_json_real(last, 4), "pages", (json_int_t)pages, "pages_per_s",
                        bench_json_real(pps, 1), "destinations", dests);
        dp_info("fanout: N=%d: %d/%d exact, %d writers fenced apart, time to first reply p50 %.3f s max %.3f s, %llu pages in %.2f s "
                "(%.0f pages/s aggregate)", n, ok, n, writers, ttfr[(ok - 1) / 2], ttfr[ok - 1], (unsigned long long)pages,
                last, pps);
    } else {
        row = json_pack("{s:i, s:i, s:i, s:o}", "n", n, "exact", ok, "writers_fenced", writers, "destinations", dests);
        dp_warn("fanout: N=%d: no copy verified exactly", n);
    }
    free(ttfr);
    free(ds);
    free(kids);
    if (lab_fanout_down(NULL, &err) < 0)
        dp_warn("fanout: removing the destination hosts: %s", err.msg);
    return row;
}

/* ---- the benchmark ---- */

/* Parses "1,4,16" into ns (each 1..LAB_FANOUT_MAX); count or -1. */
static int parse_ns(const char *text, int *ns, int max)
{
    int k = 0;
    const char *p = text;
    while (*p) {
        char *end;
        long v = strtol(p, &end, 10);
        if (end == p || v < 1 || v > LAB_FANOUT_MAX || k == max || (*end && *end != ','))
            return -1;
        ns[k++] = (int)v;
        p = *end ? end + 1 : end;
    }
    return k;
}

/* memwalk in a src container, checkpointed into the store; its pid out. */
static int checkpoint_into_store(struct fctx *c, const char *seed, const char *ratio)
{
    char mw[PATH_MAX], mibs[32], images[PATH_MAX + 16], reply[REPLY_MAX];
    snprintf(mw, sizeof(mw), "%s", c->memwalk ? c->memwalk : c->self);
    char *slash = strrchr(mw, '/');
    if (slash && !c->memwalk)
        snprintf(slash + 1, sizeof(mw) - (size_t)(slash + 1 - mw), "memwalk");
    if (access(mw, X_OK) < 0) {
        dp_error("cannot find %s (make builds it next to distriproc)", mw);
        return -1;
    }
    snprintf(mibs, sizeof(mibs), "%llu", (unsigned long long)c->mib);
    snprintf(images, sizeof(images), "%s/images", c->work);
    const char *start[] = {c->self, "lab", "exec", "src", "--container", "--detach", "--", mw, "--mib", mibs,
                           "--write-ratio", ratio, NULL};
    char *out = NULL;
    struct dp_err err = {{0}};
    int st = dp_orch_run(start, NULL, 60, &out, -1, -1, &err);
    pid_t pid = out ? (pid_t)atoi(out) : 0;
    free(out);
    if (st != 0 || pid <= 0) {
        dp_error("cannot start memwalk in a src container");
        return -1;
    }
    int ready = 0;
    for (int i = 0; i < 300 && !ready; i++) {
        ready = bench_line_cmd(lab_hosts[0].netns, "10.250.0.1", MW_PORT, "STAT", reply, sizeof(reply), 10) >= 0;
        if (!ready)
            usleep(100000);
    }
    char pidbuf[32];
    snprintf(pidbuf, sizeof(pidbuf), "%d", (int)pid);
    const char *ck[] = {c->self, "checkpoint", "--host", "src", "--pid", pidbuf, "--images", images, "--json",
                        "--store", seed, "--store-ca", c->ca, "--store-pass-file", c->pass, NULL};
    out = NULL;
    if (!ready || dp_orch_run(ck, NULL, 600, &out, -1, -1, &err) != 0) {
        dp_error("fanout: memwalk %s; checkpoint --store failed", ready ? "answered" : "never answered");
        kill(pid, SIGKILL);
        free(out);
        return -1;
    }
    json_t *j = json_loads(out ? out : "", 0, NULL);
    const char *u = json_string_value(json_object_get(json_object_get(j, "store"), "url"));
    int rc = u && strlen(u) < sizeof(c->url) ? 0 : -1;
    if (rc == 0)
        snprintf(c->url, sizeof(c->url), "%s", u);
    json_decref(j);
    free(out);
    if (dp_proc_wait_gone(pid, 0, 20) < 0)
        kill(pid, SIGKILL);
    if (rc < 0)
        dp_error("fanout: checkpoint --json named no store URL");
    return rc;
}

int bench_fanout(int argc, char **argv)
{
    static const struct option opts[] = {
        {"n", required_argument, NULL, 'n'},       {"mib", required_argument, NULL, 'm'},
        {"write-ratio", required_argument, NULL, 'w'}, {"budget", required_argument, NULL, 'b'},
        {"victim-buffer", required_argument, NULL, 'V'}, {"memwalk", required_argument, NULL, 'M'},
        {"workdir", required_argument, NULL, 'W'}, {"json", required_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
    };
    const char *ntext = "1,4,16", *ratio = "0.2", *json = NULL, *workroot = "/var/tmp";
    struct fctx c = {.mib = 16};
    char cmdline[1024];
    bench_cmdline(argc, argv, cmdline, sizeof(cmdline));
    int ch;
    char *end;
    while ((ch = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (ch) {
        case 'n': ntext = optarg; break;
        case 'm':
            c.mib = strtoull(optarg, &end, 10);
            if (*end || c.mib < 1 || c.mib > 1024) {
                fprintf(stderr, "distriproc bench fanout: --mib takes 1..1024\n");
                return 2;
            }
            break;
        case 'w': {
            double r = strtod(optarg, &end);
            if (*end || r < 0 || r > 1) {
                fprintf(stderr, "distriproc bench fanout: --write-ratio takes 0..1\n");
                return 2;
            }
            ratio = optarg;
            break;
        }
        case 'b': c.budget = optarg; break;
        case 'V': c.vbuf = optarg; break;
        case 'M': c.memwalk = optarg; break;
        case 'W': workroot = optarg; break;
        case 'j': json = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    int ns[MAX_NS];
    int nn = parse_ns(ntext, ns, MAX_NS);
    if (!json || optind != argc || nn <= 0) {
        fprintf(stderr, "distriproc bench fanout: %s\n\n",
                nn <= 0 ? "--n takes up to 8 counts, each 1..32" : "--json OUT is required");
        usage(stderr);
        return 2;
    }
    if (geteuid() != 0) {
        dp_error("needs root (namespaces, CRIU)");
        return 1;
    }
    c.self = dp_self_exe();
    snprintf(c.work, sizeof(c.work), "%s/distriproc-fanout.%d", workroot, (int)getpid());
    if (mkdir(c.work, 0700) < 0) {
        dp_error("cannot create %s: %s", c.work, strerror(errno));
        return 1;
    }
    struct dp_err err = {{0}};
    int up = lab_up(0, &err);
    if (up < 0) {
        dp_error("cannot bring the lab up: %s", err.msg);
        rmdir(c.work);
        return 1;
    }
    time_t started = time(NULL);
    int rc = 1;
    char seed[80];
    json_t *runs = json_array();
    if (bench_cluster_up(c.self, seed, sizeof(seed), c.ca, sizeof(c.ca), c.pass, sizeof(c.pass)) < 0 ||
        checkpoint_into_store(&c, seed, ratio) < 0)
        goto done;
    dp_info("fanout: memwalk --mib %llu in the store at %s", (unsigned long long)c.mib, c.url);
    rc = 0;
    for (int k = 0; k < nn; k++) {
        json_t *row = fanout_run(&c, ns[k]);
        if (!row || json_integer_value(json_object_get(row, "exact")) != ns[k])
            rc = 1;
        if (row)
            json_array_append_new(runs, row);
    }
    char workload[200];
    snprintf(workload, sizeof(workload), "memwalk --mib %llu --write-ratio %s; restore --store%s%s%s%s, then VERIFY",
             (unsigned long long)c.mib, ratio, c.budget ? " --budget " : "", c.budget ? c.budget : "",
             c.vbuf ? " --victim-buffer " : "", c.vbuf ? c.vbuf : "");
    char load[64] = "";
    FILE *lf = fopen("/proc/loadavg", "r");
    if (lf) {
        if (!fgets(load, sizeof(load), lf))
            load[0] = '\0';
        fclose(lf);
        load[strcspn(load, "\n")] = '\0';
    }
    json_t *doc = json_pack("{s:s, s:i, s:o, s:s, s:o, s:s, s:s, s:s, s:O}", "benchmark", "fanout", "schema", 1,
                            "started", bench_json_utc(started), "command", cmdline, "machine", bench_json_machine(),
                            "lab", lab_name(), "workload", workload, "loadavg_end", load, "runs", runs);
    if (bench_json_write(json, doc) < 0) {
        dp_error("cannot write %s: %s (is its directory there and writable?)", json, strerror(errno));
        rc = 1;
    } else {
        printf("fanout: results in %s\n", json);
    }
done:
    json_decref(runs);
    const char *rm[] = {"rm", "-rf", c.work, NULL};
    dp_orch_run(rm, NULL, 60, NULL, -1, -1, &err);
    if (lab_fanout_down(NULL, &err) < 0)
        dp_warn("fanout: %s", err.msg);
    if (lab_cluster_down(NULL, &err) < 0)
        dp_warn("lab cluster down: %s", err.msg);
    if (up == LAB_CREATED && lab_down(NULL, &err) < 0)
        dp_warn("lab down: %s", err.msg);
    return rc;
}
