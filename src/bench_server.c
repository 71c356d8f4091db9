/* distriproc bench server: the page server against raw TCP between the same
 * two hosts, in the same run.
 *
 *  - latency: one 4 KiB page per request, one request at a time, through the
 *    client library's blocking helper (dp_client_get_pages) and, as a second
 *    row, through its asynchronous API driven by poll() (the way an event loop
 *    uses it), against a raw
 *    TCP request/response of the same sizes (48-byte request, 4096+56-byte
 *    reply) served by a plain blocking read/write loop;
 *  - bulk: pipelined GETs (a window of requests in flight) against a raw TCP
 *    stream (one write loop), counting page-data bytes delivered.
 * Page-server runs are done three times: in plaintext (--insecure-plaintext)
 * with page data copied into the reply from the mapped pages file
 * (--sendfile-min 1G) and sent with sendfile (--sendfile-min 4K), and
 * encrypted (the default: every frame sealed, lib/channel.h), whose ratios
 * against the same run's plaintext are the cost of the secure channel; the
 * AEAD's cost per 4 KiB page is measured on its own as well.
 * Latency samples are taken round-robin, one of each variant in turn, so
 * load from elsewhere on the machine hits every variant alike.
 * In the lab (default) the servers run in dp-src and the client in dp-dst. */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <dirent.h>
#include <time.h>
#include <unistd.h>

#include "bench.h"
#include "benchjson.h"
#include "channel.h"
#include "client.h"
#include "key.h"
#include "lab.h"
#include "util.h"


struct variant {
    const char *name;
    const char *sendfile_min;
    bool plaintext;
    int port;
    pid_t pid;
    struct dp_client *cl;
    uint64_t *lat;
    size_t nlat;
    double bulk_bps;
    uint64_t bulk_bytes;
    uint64_t client_cpu_ns;   /* the client's CPU time spent in this variant's latency samples */
    uint64_t server_cpu_ns;   /* its server's CPU time over the latency phase */
    uint64_t server_requests; /* requests its server answered in that phase */
    /* bulk over all rounds: bytes counted, wall time, CPU of each end */
    uint64_t bulk_sum_bytes, bulk_sum_ns, bulk_client_cpu_ns, bulk_server_cpu_ns;
};

/* CPU time of the calling thread, ns. */
static uint64_t thread_cpu_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return (uint64_t)ts.tv_sec * 1000000000ULL + (uint64_t)ts.tv_nsec;
}

/* CPU time a process has run, ns (/proc/PID/schedstat's first field, the
 * scheduler's own account: exact, unlike utime/stime's clock ticks); 0 if
 * unreadable. */
static uint64_t proc_cpu_ns(pid_t pid)
{
    char path[64];
    snprintf(path, sizeof(path), "/proc/%d/schedstat", (int)pid);
    FILE *f = fopen(path, "r");
    unsigned long long run = 0;
    if (f) {
        if (fscanf(f, "%llu", &run) != 1)
            run = 0;
        fclose(f);
    }
    return run;
}

static volatile sig_atomic_t interrupted;
static void on_int(int sig) { (void)sig; interrupted = 1; }

#define PRIVATE_LAB "dpb"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: distriproc bench server --json OUT [options]\n"
            "\n"
            "Measures the page server against raw TCP between the lab hosts (server in\n"
            "dp-src 10.250.0.1, client in dp-dst; the lab is brought up if needed and\n"
            "left up).\n"
            "\n"
            "  --json OUT         write the results as JSON\n"
            "  --images DIR       checkpoint to serve (default: a copy of\n"
            "                     tests/fixtures/images-tinymem)\n"
            "  --loopback         run on 127.0.0.1 instead of the lab\n"
            "  --private-lab      run in a private lab made for this run and removed after\n"
            "                     it (dpb-src 10.250.0.1 <-> dpb-dst 10.250.0.2, as with\n"
            "                     DISTRIPROC_LAB=dpb), safe from others bringing the lab down\n"
            "  --samples N        latency samples per variant (default 20000)\n"
            "  --seconds S        bulk duration per variant and round (default 1)\n"
            "  --rounds R         bulk rounds; medians are reported (default 5)\n"
            "  --window W         bulk GET requests in flight (default 16)\n"
            "  --rtt USEC         also run a server with --emulate-rtt USEC and show that\n"
            "                     pipelined requests are not serialised (default 300, 0: skip)\n"
            "  --port P           first of five TCP ports to use (default 17170)\n"
            "  --bandwidth RATE   with --private-lab: cap its link with tbf (e.g. 1gbit;\n"
            "                     default: uncapped, where both ends share this host's CPUs)\n"
            "  --cpus S,C         pin every server to CPU S and the client to CPU C\n"
            "                     (default 0,1 with two or more CPUs; 'none': no pinning)\n"
            "\n"
            "The page-server rows run in plaintext (--insecure-plaintext: copy and sendfile)\n"
            "and encrypted (the default secure channel), and the AEAD's own cost per 4 KiB\n"
            "page is measured, so the encrypted series is judged against the same run.\n");
}

static void loadavg(char *buf, size_t len)
{
    FILE *f = fopen("/proc/loadavg", "r");
    double a = 0, b = 0, c = 0;
    if (f) {
        if (fscanf(f, "%lf %lf %lf", &a, &b, &c) != 3)
            a = b = c = 0;
        fclose(f);
    }
    snprintf(buf, len, "%.2f %.2f %.2f", a, b, c);
}

static int cmp_dbl(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static double median(const double *v, long n)
{
    double t[32];
    memcpy(t, v, (size_t)n * sizeof(double));
    qsort(t, (size_t)n, sizeof(double), cmp_dbl);
    return n % 2 ? t[n / 2] : (t[n / 2 - 1] + t[n / 2]) / 2;
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static double pct(const uint64_t *sorted, size_t n, double p)
{
    if (!n)
        return 0;
    size_t i = (size_t)(p * (double)(n - 1) + 0.5);
    return (double)sorted[i] / 1000.0;
}

/* ---- raw TCP baseline (src/bench_raw.c; the server runs in a forked child on the server host) ---- */
static void raw_server(int port, const char *ip)
{
    int lfd = bench_raw_listen(ip, port);
    if (lfd < 0)
        dp_die("raw server: cannot listen on %s:%d: %s", ip, port, strerror(errno));
    alarm(600); /* bounded whatever the parent does */
    bench_raw_serve(lfd, 0);
}

static int raw_connect(const struct sockaddr_in *sa, char mode)
{
    int fd = bench_raw_connect(sa, mode, BENCH_RAW_ENDLESS);
    if (fd < 0)
        dp_die("cannot connect to the raw TCP server");
    return fd;
}

/* ---- page-server client side ---- */
struct get_done { bool done; int status; uint32_t data_pages; };

static void lat_cb(void *cookie, int status, const struct dp_seg *segs, uint32_t n, const char *errmsg)
{
    struct get_done *d = cookie;
    d->done = true;
    d->status = status;
    if (status)
        dp_error("GET failed: %s", errmsg ? errmsg : "?");
    for (uint32_t i = 0; i < n; i++)
        if (segs[i].kind == DP_SEG_DATA)
            d->data_pages += segs[i].count;
}

static void drive(struct dp_client *cl, int timeout_ms)
{
    struct pollfd pfd = {.fd = dp_client_fd(cl), .events = dp_client_events(cl)};
    struct dp_err err;
    poll(&pfd, 1, timeout_ms);
    if (dp_client_process(cl, &err) < 0)
        dp_die("page server connection failed: %s", err.msg);
}

/* The blocking helper: what a simple caller sees. */
static uint64_t get_blocking(struct dp_client *cl, const struct dp_get_range *r)
{
    static uint8_t page[DP_PAGE_SIZE];
    uint8_t kind;
    struct dp_err err;
    uint64_t t0 = dp_now_ns();
    if (dp_client_get_pages(cl, r, 1, page, &kind, 10000, &err) < 0)
        dp_die("GET failed: %s", err.msg);
    return dp_now_ns() - t0;
}

/* The asynchronous API driven by poll(), as from an event loop. */
static uint64_t get_one(struct dp_client *cl, const struct dp_get_range *r)
{
    struct get_done d = {0};
    struct dp_err err;
    uint64_t t0 = dp_now_ns();
    if (!dp_client_submit_get(cl, r, 1, lat_cb, &d, &err))
        dp_die("GET submit: %s", err.msg);
    while (!d.done)
        drive(cl, 1000);
    if (d.status)
        dp_die("GET failed");
    return dp_now_ns() - t0;
}

struct bulk_state { uint64_t data_pages; uint32_t inflight; int failed; };

static void bulk_cb(void *cookie, int status, const struct dp_seg *segs, uint32_t n, const char *errmsg)
{
    struct bulk_state *b = cookie;
    b->inflight--;
    if (status) {
        dp_error("bulk GET failed: %s", errmsg ? errmsg : "?");
        b->failed = 1;
        return;
    }
    for (uint32_t i = 0; i < n; i++)
        if (segs[i].kind == DP_SEG_DATA)
            b->data_pages += segs[i].count;
}

static void bulk_get(struct variant *v, const struct dp_get_range *r, int window, double seconds)
{
    struct bulk_state b = {0};
    struct dp_err err;
    uint64_t t0 = dp_now_ns(), end = t0 + (uint64_t)(seconds * 1e9);
    uint64_t counted = 0;
    while (!interrupted && !b.failed) {
        uint64_t now = dp_now_ns();
        if (now >= end)
            break;
        while ((int)b.inflight < window) {
            if (!dp_client_submit_get(v->cl, r, 1, bulk_cb, &b, &err))
                dp_die("bulk GET submit: %s", err.msg);
            b.inflight++;
        }
        drive(v->cl, 1000);
    }
    counted = b.data_pages; /* replies that arrived within the interval */
    uint64_t elapsed = dp_now_ns() - t0;
    while (b.inflight && !b.failed)
        drive(v->cl, 1000);
    v->bulk_bytes = counted * DP_PAGE_SIZE;
    v->bulk_bps = (double)v->bulk_bytes / ((double)elapsed / 1e9);
}

static int copy_dir(const char *from, const char *to)
{
    DIR *d = opendir(from);
    if (!d || mkdir(to, 0700) < 0)
        return -1;
    struct dirent *de;
    while ((de = readdir(d))) {
        char a[4400 + 256], b[4400 + 256];
        snprintf(a, sizeof(a), "%s/%s", from, de->d_name);
        snprintf(b, sizeof(b), "%s/%s", to, de->d_name);
        struct stat sb;
        if (stat(a, &sb) < 0 || !S_ISREG(sb.st_mode))
            continue;
        uint8_t *data;
        size_t len;
        struct dp_err err;
        if (dp_read_file(a, &data, &len, &err) < 0)
            return -1;
        int fd = open(b, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        if (fd < 0 || dp_write_full(fd, data, len) < 0)
            return -1;
        close(fd);
        free(data);
    }
    closedir(d);
    return 0;
}

/* CPU placement, chosen once for the run: every server (and the raw TCP
 * server) on one CPU, the client on another. Unpinned, each server process
 * lands where the scheduler puts it, and on this 2-vCPU VM a request woken on
 * the same vCPU or on the other one differs by 2-3x in round-trip time: the
 * variants' p50s swapped order between runs (copy 51 us vs sendfile 73 us in
 * one, 109 vs 53 in the next), far more than the code paths they compare. */
static int cpu_server = -1, cpu_client = -1;

/* Pins the calling process (and what it execs) to cpu; -1: no pinning. */
static void pin_cpu(int cpu)
{
    if (cpu < 0)
        return;
    cpu_set_t set;
    CPU_ZERO(&set);
    CPU_SET(cpu, &set);
    if (sched_setaffinity(0, sizeof(set), &set) < 0)
        dp_die("cannot pin to CPU %d: %s (use --cpus none)", cpu, strerror(errno));
}

static pid_t spawn_server(const char *exe, const struct lab_host *host, const char *ip, int port,
                          const char *images, const char *key, const char *sendfile_min, long rtt_us, bool plaintext,
                          const char *log)
{
    pid_t pid = fork();
    if (pid < 0)
        dp_die("fork: %s", strerror(errno));
    if (pid == 0) {
        struct dp_err err;
        if (host && lab_enter(host, &err) < 0)
            dp_die("%s", err.msg);
        pin_cpu(cpu_server);
        int fd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0644);
        if (fd >= 0) {
            dup2(fd, 2);
            dup2(fd, 1);
        }
        char listen[64];
        snprintf(listen, sizeof(listen), "%s:%d", ip, port);
        char rtt[32];
        snprintf(rtt, sizeof(rtt), "%ld", rtt_us);
        execl(exe, exe, "serve", "--images", images, "--listen", listen, "--key", key, "--sendfile-min",
              sendfile_min, "--emulate-rtt", rtt, plaintext ? "--insecure-plaintext" : (char *)NULL, (char *)NULL);
        dp_die("exec %s: %s", exe, strerror(errno));
    }
    return pid;
}

/* The AEAD alone: ns to seal, and to open, one message carrying one 4 KiB
 * page (header record + payload record, as on the wire), in cache (one
 * buffer, sealed then opened in turn), median of rounds: the compute cost
 * per page, apart from memory traffic and the network. */
struct crypto_cost { uint32_t cipher; double seal_ns, open_ns; };

static void measure_crypto(struct crypto_cost *out)
{
    enum { N = 2000, ROUNDS = 7 };
    uint8_t psk[32] = {1}, sk1[32], sk2[32], pk1[32], pk2[32], th[32] = {0}, a[32], b[32];
    randombytes_buf(sk1, 32);
    randombytes_buf(sk2, 32);
    crypto_scalarmult_base(pk1, sk1);
    crypto_scalarmult_base(pk2, sk2);
    struct dp_chan tx, rx;
    struct dp_err err;
    if (dp_chan_derive(psk, 32, sk1, pk2, th, out->cipher, false, true, &tx, a, b, &err) < 0 ||
        dp_chan_derive(psk, 32, sk2, pk1, th, out->cipher, true, true, &rx, a, b, &err) < 0)
        dp_die("crypto bench: %s", err.msg);
    static uint8_t msg[DP_HDR_SIZE + DP_PAGE_SIZE], rec[DP_CHAN_HDR_REC + DP_PAGE_SIZE + DP_CHAN_TAG];
    struct dp_hdr h = {.version = 1, .type = DP_MSG_GET_PAGES | DP_MSG_REPLY, .id = 1, .len = DP_PAGE_SIZE};
    dp_hdr_encode(msg, &h);
    randombytes_buf(msg + DP_HDR_SIZE, DP_PAGE_SIZE);
    double seal[ROUNDS], open[ROUNDS];
    for (int r = 0; r < ROUNDS; r++) {
        uint64_t ts = 0, to = 0;
        for (int i = 0; i < N; i++) {
            uint64_t t0 = dp_now_ns();
            if (dp_chan_seal(&tx, msg, msg + DP_HDR_SIZE, rec) < 0)
                dp_die("crypto bench: seal failed");
            uint64_t t1 = dp_now_ns();
            if (dp_chan_open_hdr(&rx, rec) < 0 || dp_chan_open_payload(&rx, rec + DP_CHAN_HDR_REC, DP_PAGE_SIZE) < 0)
                dp_die("crypto bench: open failed");
            ts += t1 - t0;
            to += dp_now_ns() - t1;
        }
        seal[r] = (double)ts / N;
        open[r] = (double)to / N;
    }
    out->seal_ns = median(seal, ROUNDS);
    out->open_ns = median(open, ROUNDS);
    dp_chan_free(&tx);
    dp_chan_free(&rx);
}

/* One latency row of the result file: sample count, percentiles, mean (us). */
static json_t *json_lat(const uint64_t *s, size_t n)
{
    double sum = 0;
    for (size_t i = 0; i < n; i++)
        sum += (double)s[i] / 1000.0;
    return json_pack("{s:I, s:o, s:o, s:o, s:o}", "samples", (json_int_t)n, "p50_us", bench_json_real(pct(s, n, 0.50), 2),
                     "p90_us", bench_json_real(pct(s, n, 0.90), 2), "p99_us", bench_json_real(pct(s, n, 0.99), 2),
                     "mean_us", bench_json_real(n ? sum / (double)n : 0, 2));
}

/* Bulk rounds as MiB/s (one decimal), as the file has always listed them. */
static json_t *json_mibps_rounds(const double *bps, long rounds)
{
    json_t *a = json_array();
    for (long r = 0; a && r < rounds; r++) {
        if (json_array_append_new(a, bench_json_real(bps[r] / 1048576.0, 1)) < 0) {
            json_decref(a);
            return NULL;
        }
    }
    return a;
}

int bench_server(int argc, char **argv)
{
    static const struct option opts[] = {
        {"json", required_argument, NULL, 'j'},    {"images", required_argument, NULL, 'i'},
        {"loopback", no_argument, NULL, 'l'},      {"samples", required_argument, NULL, 'n'},
        {"private-lab", no_argument, NULL, 'P'},   {"rounds", required_argument, NULL, 'R'},
        {"rtt", required_argument, NULL, 'T'},
        {"seconds", required_argument, NULL, 's'}, {"window", required_argument, NULL, 'w'},
        {"port", required_argument, NULL, 'p'},    {"cpus", required_argument, NULL, 'C'},
        {"bandwidth", required_argument, NULL, 'B'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *json = NULL, *images = NULL, *cpus = NULL, *bandwidth = NULL;
    bool loopback = false, priv = false;
    long samples = 20000, window = 16, port = 17170, rounds = 5, rtt_us = 300;
    double seconds = 1;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'j': json = optarg; break;
        case 'i': images = optarg; break;
        case 'l': loopback = true; break;
        case 'P': priv = true; break;
        case 'R': rounds = atol(optarg); break;
        case 'T': rtt_us = atol(optarg); break;
        case 'n': samples = atol(optarg); break;
        case 's': seconds = atof(optarg); break;
        case 'w': window = atol(optarg); break;
        case 'p': port = atol(optarg); break;
        case 'C': cpus = optarg; break;
        case 'B': bandwidth = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!json || samples < 100 || samples > 10000000 || seconds <= 0 || seconds > 600 || window < 1 ||
        window > 200 || port < 1024 || port > 65000 || rounds < 1 || rounds > 31 || rtt_us < 0 || rtt_us > 100000) {
        usage(stderr);
        return 2;
    }
    uint64_t cap_bits = 0;
    if (bandwidth) {
        struct dp_err berr;
        if (!priv) {
            fprintf(stderr, "distriproc bench server: --bandwidth needs --private-lab (the shared lab's cap is "
                            "whatever `distriproc lab up --rate` set)\n");
            return 2;
        }
        if (lab_parse_rate(bandwidth, &cap_bits, &berr) < 0) {
            fprintf(stderr, "distriproc bench server: --bandwidth: %s\n", berr.msg);
            return 2;
        }
    }
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    if (!cpus)
        cpus = ncpu >= 2 ? "0,1" : "none";
    if (strcmp(cpus, "none") != 0) {
        char tail;
        if (sscanf(cpus, "%d,%d%c", &cpu_server, &cpu_client, &tail) != 2 || cpu_server < 0 || cpu_client < 0 ||
            cpu_server >= ncpu || cpu_client >= ncpu) {
            fprintf(stderr, "distriproc bench server: --cpus '%s': expected S,C with CPUs below %ld, or 'none'\n", cpus,
                    ncpu);
            return 2;
        }
    }
    char cmdline[1024] = "distriproc bench";
    for (int i = 0; i < argc; i++) {
        strncat(cmdline, " ", sizeof(cmdline) - strlen(cmdline) - 1);
        strncat(cmdline, argv[i], sizeof(cmdline) - strlen(cmdline) - 1);
    }
    char load_before[64], load_after[64];
    loadavg(load_before, sizeof(load_before));
    /* Work directory: key, server logs, a copy of the default images. */
    char tmp[] = "/tmp/distriproc-bench-XXXXXX";
    if (!mkdtemp(tmp))
        dp_die("mkdtemp: %s", strerror(errno));
    char key[512], log[512], imgcopy[512], exe[4096];
    snprintf(key, sizeof(key), "%s/key", tmp);
    snprintf(log, sizeof(log), "%s/servers.log", tmp);
    struct dp_err err = {{0}};
    if (dp_key_generate(key, 0, &err) < 0)
        dp_die("%s", err.msg);
    ssize_t el = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (el < 0)
        dp_die("readlink /proc/self/exe: %s", strerror(errno));
    exe[el] = '\0';
    if (!images) {
        /* exe is ROOT/build/distriproc */
        char root[4096];
        snprintf(root, sizeof(root), "%s", exe);
        for (int i = 0; i < 2; i++) {
            char *sl = strrchr(root, '/');
            if (sl)
                *sl = '\0';
        }
        char fixture[4200];
        snprintf(fixture, sizeof(fixture), "%s/tests/fixtures/images-tinymem", root);
        snprintf(imgcopy, sizeof(imgcopy), "%s/images", tmp);
        if (copy_dir(fixture, imgcopy) < 0)
            dp_die("cannot copy %s to %s", fixture, imgcopy);
        images = imgcopy;
    }

    const struct lab_host *src = NULL, *dst = NULL;
    char labcap[64] = ", no bandwidth cap";
    bool lab_created = false;
    const char *ip = "127.0.0.1";
    if (priv && lab_set_name(PRIVATE_LAB, &err) < 0)
        dp_die("%s", err.msg);
    if (!loopback) {
        int rc = lab_up(cap_bits, &err);
        if (rc < 0)
            dp_die("cannot bring the lab up: %s (or use --loopback)", err.msg);
        lab_created = rc == LAB_CREATED;
        struct lab_state ls;
        if (lab_probe(&ls, &err) == 0 && ls.host[0].tbf_bits) {
            char r[32];
            lab_format_rate(ls.host[0].tbf_bits, r, sizeof(r));
            snprintf(labcap, sizeof(labcap), ", tbf cap %s as found", r);
        }
        src = lab_host_find("src");
        dst = lab_host_find("dst");
        ip = src->addr;
    }
    signal(SIGINT, on_int);
    signal(SIGTERM, on_int);

    /* v[0], v[1]: plaintext (the baseline of the encrypted series); v[2]: encrypted. */
    enum { NV = 3, ENC = 2 };
    struct variant v[NV] = {
        {.name = "get_copy", .sendfile_min = "1G", .plaintext = true, .port = (int)port + 1},
        {.name = "get_sendfile", .sendfile_min = "4K", .plaintext = true, .port = (int)port + 2},
        {.name = "get_encrypted", .sendfile_min = "64K", .plaintext = false, .port = (int)port + 4},
    };
    for (int i = 0; i < NV; i++)
        v[i].pid = spawn_server(exe, src, ip, v[i].port, images, key, v[i].sendfile_min, 0, v[i].plaintext, log);
    pid_t rtt_pid = rtt_us ? spawn_server(exe, src, ip, (int)port + 3, images, key, "64K", rtt_us, false, log) : -1;
    pid_t raw_pid = fork();
    if (raw_pid == 0) {
        if (src && lab_enter(src, &err) < 0)
            dp_die("%s", err.msg);
        pin_cpu(cpu_server);
        raw_server((int)port, ip);
        _exit(0);
    }
    if (dst && lab_enter(dst, &err) < 0)
        dp_die("%s", err.msg);
    pin_cpu(cpu_client);

    static uint8_t keybuf[DP_KEY_MAX];
    struct dp_client_opts co = {.connect_timeout_ms = 10000, .give_up_ms = 10000, .max_inflight = 256};
    if (dp_key_load(key, keybuf, &co.key_len, &err) < 0)
        dp_die("%s", err.msg);
    co.key = keybuf;
    dp_parse_hostport("127.0.0.1:1", &co.addr);
    inet_pton(AF_INET, ip, &co.addr.sin_addr);
    for (int i = 0; i < NV; i++) {
        co.addr.sin_port = htons((uint16_t)v[i].port);
        co.insecure_plaintext = v[i].plaintext;
        if (dp_client_connect(&co, &v[i].cl, &err) < 0)
            dp_die("%s (server log: %s)", err.msg, log);
    }
    co.insecure_plaintext = false;
    const char *cipher = dp_client_cipher(v[ENC].cl);
    /* Pick pages: a DATA page for latency, the largest lazy range for bulk. */
    struct dp_task_map tm;
    if (dp_client_task_map(v[0].cl, &tm, 10000, &err) < 0 || tm.nr_tasks == 0)
        dp_die("task map: %s", err.msg[0] ? err.msg : "no tasks");
    const struct dp_tm_task *t = &tm.tasks[0];
    const struct dp_tm_range *big = NULL;
    for (uint32_t i = 0; i < t->nr_ranges; i++)
        if (!big || t->ranges[i].end - t->ranges[i].start > big->end - big->start)
            big = &t->ranges[i];
    if (!big)
        dp_die("the root task has no lazy memory to serve");
    uint32_t bulk_pages = (uint32_t)((big->end - big->start) / DP_PAGE_SIZE);
    if (bulk_pages > 256)
        bulk_pages = 256;
    struct dp_get_range bulk = {.pid = t->pid, .addr = big->start, .count = bulk_pages};
    uint8_t *pages = malloc((size_t)bulk_pages * DP_PAGE_SIZE), *kinds = malloc(bulk_pages);
    if (dp_client_get_pages(v[0].cl, &bulk, 1, pages, kinds, 10000, &err) < 0)
        dp_die("probe GET: %s", err.msg);
    uint32_t first_data = UINT32_MAX, data_in_bulk = 0;
    for (uint32_t i = 0; i < bulk_pages; i++)
        if (kinds[i] == DP_SEG_DATA) {
            data_in_bulk++;
            if (first_data == UINT32_MAX)
                first_data = i;
        }
    if (first_data == UINT32_MAX)
        dp_die("no data page in the largest lazy range");
    struct dp_get_range one = {.pid = t->pid, .addr = big->start + (uint64_t)first_data * DP_PAGE_SIZE, .count = 1};
    free(pages);
    free(kinds);

    struct sockaddr_in raw_sa = co.addr;
    raw_sa.sin_port = htons((uint16_t)port);
    int rawfd = raw_connect(&raw_sa, 'L');
    uint64_t *raw_lat = calloc((size_t)samples, sizeof(uint64_t));
    uint64_t *async_lat = calloc((size_t)samples, sizeof(uint64_t));
    size_t nraw = 0;
    for (int i = 0; i < NV; i++)
        v[i].lat = calloc((size_t)samples, sizeof(uint64_t));
    /* Warm up every path, then alternate blocks of samples. */
    for (int w = 0; w < 500; w++) {
        bench_raw_roundtrip_ns(rawfd);
        get_one(v[0].cl, &one);
        get_blocking(v[0].cl, &one);
        get_blocking(v[1].cl, &one);
        get_blocking(v[ENC].cl, &one);
    }
    /* One sample of each variant in turn: load from elsewhere on the machine
     * then hits every variant alike. */
    const size_t block = 1;
    /* CPU per request as well as latency: on a VM the round trip is mostly
     * wake-ups, and the CPU time is what a variant's code costs. */
    uint64_t srv_cpu0[NV];
    for (int i = 0; i < NV; i++)
        srv_cpu0[i] = proc_cpu_ns(v[i].pid);
    fprintf(stderr, "bench server: %s, latency: %ld samples per variant...\n", loopback ? "loopback" : priv ? "private lab" : "lab", samples);
    while (nraw < (size_t)samples && !interrupted) {
        size_t n = (size_t)samples - nraw < block ? (size_t)samples - nraw : block;
        for (size_t k = 0; k < n; k++) {
            int64_t ns = bench_raw_roundtrip_ns(rawfd);
            if (ns < 0)
                dp_die("raw TCP request/response failed");
            raw_lat[nraw + k] = (uint64_t)ns;
        }
        for (int i = 0; i < NV; i++) {
            uint64_t c0 = thread_cpu_ns();
            for (size_t k = 0; k < n; k++)
                v[i].lat[v[i].nlat++] = get_blocking(v[i].cl, &one);
            v[i].client_cpu_ns += thread_cpu_ns() - c0;
        }
        for (size_t k = 0; k < n; k++)
            async_lat[nraw + k] = get_one(v[0].cl, &one);
        nraw += n;
    }
    for (int i = 0; i < NV; i++) {
        v[i].server_cpu_ns = proc_cpu_ns(v[i].pid) - srv_cpu0[i];
        v[i].server_requests = v[i].nlat + (i == 0 ? nraw : 0); /* v[0] also answers the async samples */
    }
    close(rawfd);
    /* Bulk: rounds of (raw stream, GET copy, GET sendfile); the median of
     * each is reported, so a burst of load on the shared machine in one
     * round does not decide the result. */
    fprintf(stderr, "bench server: bulk, %ld rounds of %.1f s per variant...\n", rounds, seconds);
    double raw_r[32] = {0}, get_r[NV][32] = {{0}};
    for (long round = 0; round < rounds && !interrupted; round++) {
        int fd = raw_connect(&raw_sa, 'S');
        static uint8_t sink[1 << 20];
        uint64_t t0 = dp_now_ns(), end = t0 + (uint64_t)(seconds * 1e9), got = 0;
        while (dp_now_ns() < end) {
            ssize_t r = read(fd, sink, sizeof(sink));
            if (r <= 0)
                dp_die("raw stream read failed: %s (was the lab taken down meanwhile?)",
                       r < 0 ? strerror(errno) : "connection closed");
            got += (uint64_t)r;
        }
        raw_r[round] = (double)got / ((double)(dp_now_ns() - t0) / 1e9);
        close(fd);
        for (int i = 0; i < NV; i++) {
            /* CPU per byte too: where both ends share the CPUs, it decides
             * the throughput (the drain after the interval is counted in
             * the CPU, not in the bytes: at most a window of replies) */
            uint64_t c0 = thread_cpu_ns(), s0 = proc_cpu_ns(v[i].pid), w0 = dp_now_ns();
            bulk_get(&v[i], &bulk, (int)window, seconds);
            v[i].bulk_sum_ns += dp_now_ns() - w0;
            v[i].bulk_client_cpu_ns += thread_cpu_ns() - c0;
            v[i].bulk_server_cpu_ns += proc_cpu_ns(v[i].pid) - s0;
            v[i].bulk_sum_bytes += v[i].bulk_bytes;
            get_r[i][round] = v[i].bulk_bps;
        }
    }
    double raw_bps = median(raw_r, rounds);
    for (int i = 0; i < NV; i++)
        v[i].bulk_bps = median(get_r[i], rounds);
    /* The AEAD alone, per 4 KiB page, for both ciphers this build speaks. */
    struct crypto_cost cc[2];
    int ncc = 0;
    if (crypto_aead_aes256gcm_is_available())
        cc[ncc++] = (struct crypto_cost){.cipher = DP_CIPHER_AES256GCM};
    cc[ncc++] = (struct crypto_cost){.cipher = DP_CIPHER_CHACHA20POLY1305};
    for (int k = 0; k < ncc && !interrupted; k++)
        measure_crypto(&cc[k]);
    /* Emulated RTT: one request at a time costs about an RTT each; a window
     * of requests in flight completes about window requests per RTT. */
    double rtt_p50 = 0, rtt_rps_serial = 0, rtt_rps_window = 0;
    if (rtt_us && !interrupted) {
        struct dp_client *rc;
        co.addr.sin_port = htons((uint16_t)(port + 3));
        if (dp_client_connect(&co, &rc, &err) < 0)
            dp_die("%s (server log: %s)", err.msg, log);
        enum { N = 200 };
        uint64_t lat[N];
        uint64_t t0 = dp_now_ns();
        for (int k = 0; k < N; k++)
            lat[k] = get_blocking(rc, &one);
        rtt_rps_serial = N / ((double)(dp_now_ns() - t0) / 1e9);
        qsort(lat, N, sizeof(uint64_t), cmp_u64);
        rtt_p50 = pct(lat, N, 0.5);
        struct bulk_state b = {0};
        uint64_t done = 0;
        t0 = dp_now_ns();
        uint64_t end = t0 + 1000000000ULL;
        while (dp_now_ns() < end && !b.failed) {
            while ((int)b.inflight < window) {
                if (!dp_client_submit_get(rc, &one, 1, bulk_cb, &b, &err))
                    dp_die("GET submit: %s", err.msg);
                b.inflight++;
                done++;
            }
            drive(rc, 1000);
        }
        uint64_t completed = done - b.inflight;
        rtt_rps_window = (double)completed / ((double)(dp_now_ns() - t0) / 1e9);
        while (b.inflight && !b.failed)
            drive(rc, 1000);
        dp_client_close(rc);
    }
    loadavg(load_after, sizeof(load_after));
    int qfd = raw_connect(&raw_sa, 'Q');
    close(qfd);

    qsort(raw_lat, nraw, sizeof(uint64_t), cmp_u64);
    qsort(async_lat, nraw, sizeof(uint64_t), cmp_u64);
    for (int i = 0; i < NV; i++)
        qsort(v[i].lat, v[i].nlat, sizeof(uint64_t), cmp_u64);
    double raw_p50 = pct(raw_lat, nraw, 0.5);
    const struct variant *best_lat = pct(v[0].lat, v[0].nlat, 0.5) <= pct(v[1].lat, v[1].nlat, 0.5) ? &v[0] : &v[1];
    const struct variant *best_bulk = v[0].bulk_bps >= v[1].bulk_bps ? &v[0] : &v[1];
    double lat_ratio = pct(best_lat->lat, best_lat->nlat, 0.5) / raw_p50;
    double bulk_ratio = best_bulk->bulk_bps / raw_bps;
    /* The encrypted series against the same run's plaintext: the fault path
     * against the plaintext copy path (the one serve uses for 4 KiB), bulk
     * against the faster plaintext variant. */
    double enc_p50 = pct(v[ENC].lat, v[ENC].nlat, 0.5), plain_p50 = pct(v[0].lat, v[0].nlat, 0.5);
    double enc_lat_ratio = enc_p50 / plain_p50, enc_bulk_ratio = v[ENC].bulk_bps / best_bulk->bulk_bps;

    char labwhere[160];
    snprintf(labwhere, sizeof(labwhere), "%s: %s -> %s %s%s", priv ? "private lab made for this run" : "lab",
             lab_hosts[1].netns, lab_hosts[0].netns, lab_hosts[0].addr, labcap);
    const char *where = loopback ? "loopback 127.0.0.1" : labwhere;
    printf("\npage server vs raw TCP (%s, %s)\n", where, images);
    if (cpu_server >= 0)
        printf("servers pinned to CPU %d, client to CPU %d (--cpus)\n", cpu_server, cpu_client);
    printf("%-26s %10s %10s %10s %12s\n", "4 KiB request/response", "p50 us", "p90 us", "p99 us", "p50 vs raw");
    printf("%-26s %10.1f %10.1f %10.1f %12s\n", "raw TCP", raw_p50, pct(raw_lat, nraw, 0.9), pct(raw_lat, nraw, 0.99),
           "1.00x");
    static const char *rows[NV] = {"GET plain (copy)", "GET plain (sendfile)", "GET encrypted"};
    for (int i = 0; i < NV; i++) {
        double p50 = pct(v[i].lat, v[i].nlat, 0.5);
        printf("%-26s %10.1f %10.1f %10.1f %11.2fx\n", rows[i], p50,
               pct(v[i].lat, v[i].nlat, 0.9), pct(v[i].lat, v[i].nlat, 0.99), p50 / raw_p50);
    }
    printf("%-26s %10.1f %10.1f %10.1f %11.2fx\n", "GET plain (copy, async)", pct(async_lat, nraw, 0.5),
           pct(async_lat, nraw, 0.9), pct(async_lat, nraw, 0.99), pct(async_lat, nraw, 0.5) / raw_p50);
    printf("\n%-26s %14s %14s\n", "CPU per 4 KiB GET (us)", "client", "server");
    for (int i = 0; i < NV; i++)
        printf("%-26s %14.2f %14.2f\n", rows[i], v[i].nlat ? (double)v[i].client_cpu_ns / (double)v[i].nlat / 1e3 : 0,
               v[i].server_requests ? (double)v[i].server_cpu_ns / (double)v[i].server_requests / 1e3 : 0);
    printf("\n%-26s %14s %12s\n", "bulk (median)", "MiB/s", "vs raw");
    printf("%-26s %14.1f %12s\n", "raw TCP stream", raw_bps / 1048576.0, "100%");
    for (int i = 0; i < NV; i++)
        printf("%-26s %14.1f %11.1f%%\n", rows[i], v[i].bulk_bps / 1048576.0, 100.0 * v[i].bulk_bps / raw_bps);
    printf("(bulk GET: %u pages per request, %u of them data, window %ld)\n", bulk_pages, data_in_bulk, window);
    printf("\n%-26s %10s %10s %10s %12s\n", "CPU per MiB of bulk (ms)", "client", "server", "both", "CPUs busy");
    double bulk_ms[NV];
    for (int i = 0; i < NV; i++) {
        double mib = (double)v[i].bulk_sum_bytes / 1048576.0;
        double cl = mib > 0 ? (double)v[i].bulk_client_cpu_ns / 1e6 / mib : 0;
        double sv = mib > 0 ? (double)v[i].bulk_server_cpu_ns / 1e6 / mib : 0;
        bulk_ms[i] = cl + sv;
        printf("%-26s %10.3f %10.3f %10.3f %12.2f\n", rows[i], cl, sv, cl + sv,
               v[i].bulk_sum_ns ? (double)(v[i].bulk_client_cpu_ns + v[i].bulk_server_cpu_ns) / (double)v[i].bulk_sum_ns
                                : 0);
    }
    /* With both ends busy on the same CPUs, throughput is CPUs / CPU per
     * byte: encrypted bulk can reach the plaintext copy path's CPU per MiB
     * over its own, whatever the code around the AEAD does. */
    double bulk_ceiling = bulk_ms[ENC] > 0 ? bulk_ms[0] / bulk_ms[ENC] : 0;
    printf("(encrypted: +%.3f ms of CPU per MiB over the plaintext copy path; CPU-bound on shared CPUs, encrypted "
           "bulk can reach at most %.1f%% of it)\n", bulk_ms[ENC] - bulk_ms[0], 100 * bulk_ceiling);
    if (rtt_us)
        printf("\nemulated RTT %ld us: GET p50 %.1f us; one at a time %.0f GET/s, %ld in flight %.0f GET/s "
               "(%.1fx: not serialised)\n",
               rtt_us, rtt_p50, rtt_rps_serial, window, rtt_rps_window, rtt_rps_window / rtt_rps_serial);
    printf("\nload average (1/5/15 min) before: %s, after: %s, on %ld CPUs\n", load_before, load_after,
           sysconf(_SC_NPROCESSORS_ONLN));
    printf("\ntargets: GET p50 <= 1.2x raw p50: %.2fx %s; bulk >= 70%% of raw stream: %.1f%% %s\n", lat_ratio,
           lat_ratio <= 1.2 ? "met" : "NOT met", 100 * bulk_ratio, bulk_ratio >= 0.7 ? "met" : "NOT met");
    printf("encrypted (%s) vs plaintext, same run: GET p50 %.2fx (target <= 1.1x) %s; bulk %.1f%% (target >= 90%%) "
           "%s\n", cipher, enc_lat_ratio, enc_lat_ratio <= 1.1 ? "met" : "NOT met", 100 * enc_bulk_ratio,
           enc_bulk_ratio >= 0.9 ? "met" : "NOT met");
    for (int k = 0; k < ncc; k++)
        printf("AEAD %s per 4 KiB page (header + payload record): seal %.2f us, open %.2f us\n",
               dp_chan_cipher_name(cc[k].cipher), cc[k].seal_ns / 1000, cc[k].open_ns / 1000);

    json_t *aead = json_array();
    for (int k = 0; aead && k < ncc; k++) {
        if (json_array_append_new(aead, json_pack("{s:s, s:o, s:o}", "cipher", dp_chan_cipher_name(cc[k].cipher),
                                                  "seal_us", bench_json_real(cc[k].seal_ns / 1000, 3), "open_us",
                                                  bench_json_real(cc[k].open_ns / 1000, 3))) < 0) {
            json_decref(aead);
            aead = NULL;
        }
    }
    json_t *doc = json_pack(
        "{s:s, s:o, s:s, s:s, s:s, s:I, s:s, s:s,"
        " s:{s:o, s:o, s:o, s:o, s:o},"
        " s:{s:o, s:I, s:I, s:I, s:I, s:o, s:o, s:o, s:o, s:o, s:o, s:o, s:o},"
        " s:{s:s, s:o, s:o, s:o, s:f, s:b, s:o, s:o, s:o, s:f, s:b, s:o}}",
        "command", cmdline, "date", bench_json_utc(time(NULL)), "network", where, "images", images, "pinning", cpus,
        "cpus", (json_int_t)sysconf(_SC_NPROCESSORS_ONLN), "loadavg_before", load_before, "loadavg_after", load_after,
        "latency", "raw_tcp_4k", json_lat(raw_lat, nraw), "get_4k_copy", json_lat(v[0].lat, v[0].nlat),
        "get_4k_sendfile", json_lat(v[1].lat, v[1].nlat), "get_4k_encrypted", json_lat(v[ENC].lat, v[ENC].nlat),
        "get_4k_copy_async_poll", json_lat(async_lat, nraw),
        "bulk", "seconds_per_round", bench_json_real(seconds, 1), "rounds", (json_int_t)rounds, "window",
        (json_int_t)window, "pages_per_get", (json_int_t)bulk_pages, "data_pages_per_get", (json_int_t)data_in_bulk,
        "raw_stream_MiBps_rounds", json_mibps_rounds(raw_r, rounds), "get_copy_MiBps_rounds",
        json_mibps_rounds(get_r[0], rounds), "get_sendfile_MiBps_rounds", json_mibps_rounds(get_r[1], rounds),
        "get_encrypted_MiBps_rounds", json_mibps_rounds(get_r[ENC], rounds), "raw_stream_MiBps_median",
        bench_json_real(raw_bps / 1048576.0, 1), "get_copy_MiBps_median", bench_json_real(v[0].bulk_bps / 1048576.0, 1),
        "get_sendfile_MiBps_median", bench_json_real(v[1].bulk_bps / 1048576.0, 1), "get_encrypted_MiBps_median",
        bench_json_real(v[ENC].bulk_bps / 1048576.0, 1),
        "encryption", "cipher", cipher, "get_p50_us", bench_json_real(enc_p50, 2), "plaintext_get_p50_us",
        bench_json_real(plain_p50, 2), "get_p50_ratio", bench_json_real(enc_lat_ratio, 3), "get_p50_max_ratio", 1.1,
        "get_p50_met", enc_lat_ratio <= 1.1, "bulk_MiBps", bench_json_real(v[ENC].bulk_bps / 1048576.0, 1),
        "plaintext_bulk_MiBps", bench_json_real(best_bulk->bulk_bps / 1048576.0, 1), "bulk_ratio",
        bench_json_real(enc_bulk_ratio, 3), "bulk_min_ratio", 0.9, "bulk_met", enc_bulk_ratio >= 0.9,
        "aead_per_4k_page", aead);
    json_t *cpu = json_object();
    for (int i = 0; cpu && i < NV; i++) {
        static const char *key[NV] = {"get_copy", "get_sendfile", "get_encrypted"};
        double mib = (double)v[i].bulk_sum_bytes / 1048576.0;
        json_t *row = json_pack("{s:o, s:o, s:o}", "client_ms_per_MiB",
                                bench_json_real(mib > 0 ? (double)v[i].bulk_client_cpu_ns / 1e6 / mib : 0, 4),
                                "server_ms_per_MiB",
                                bench_json_real(mib > 0 ? (double)v[i].bulk_server_cpu_ns / 1e6 / mib : 0, 4),
                                "cpus_busy",
                                bench_json_real(v[i].bulk_sum_ns ? (double)(v[i].bulk_client_cpu_ns +
                                                                            v[i].bulk_server_cpu_ns) /
                                                                       (double)v[i].bulk_sum_ns
                                                                 : 0, 3));
        /* and the latency phase's CPU per 4 KiB GET, as printed */
        if (row && (json_object_set_new(row, "get_4k_client_us",
                                        bench_json_real(v[i].nlat ? (double)v[i].client_cpu_ns / (double)v[i].nlat / 1e3
                                                                  : 0, 2)) < 0 ||
                    json_object_set_new(row, "get_4k_server_us",
                                        bench_json_real(v[i].server_requests ? (double)v[i].server_cpu_ns /
                                                                                   (double)v[i].server_requests / 1e3
                                                                             : 0, 2)) < 0)) {
            json_decref(row);
            row = NULL;
        }
        if (!row || json_object_set_new(cpu, key[i], row) < 0) {
            json_decref(cpu);
            cpu = NULL;
        }
    }
    if (doc && (!cpu || json_object_set_new(cpu, "encrypted_bulk_ceiling_ratio", bench_json_real(bulk_ceiling, 3)) < 0 ||
                json_object_set_new(doc, "cpu", cpu) < 0)) {
        json_decref(doc);
        doc = NULL;
    }
    if (doc && rtt_us &&
        json_object_set_new(doc, "emulated_rtt",
                            json_pack("{s:I, s:o, s:I, s:I, s:I}", "rtt_us", (json_int_t)rtt_us, "get_p50_us",
                                      bench_json_real(rtt_p50, 1), "serial_gets_per_s", (json_int_t)llround(rtt_rps_serial),
                                      "window", (json_int_t)window, "pipelined_gets_per_s",
                                      (json_int_t)llround(rtt_rps_window))) < 0) {
        json_decref(doc);
        doc = NULL;
    }
    if (doc && json_object_set_new(doc, "ratios",
                                   json_pack("{s:o, s:o, s:o, s:o}", "get_p50_over_raw_p50_copy",
                                             bench_json_real(pct(v[0].lat, v[0].nlat, 0.5) / raw_p50, 3),
                                             "get_p50_over_raw_p50_sendfile",
                                             bench_json_real(pct(v[1].lat, v[1].nlat, 0.5) / raw_p50, 3),
                                             "bulk_get_over_raw_copy", bench_json_real(v[0].bulk_bps / raw_bps, 3),
                                             "bulk_get_over_raw_sendfile", bench_json_real(v[1].bulk_bps / raw_bps, 3))) < 0) {
        json_decref(doc);
        doc = NULL;
    }
    if (doc && json_object_set_new(doc, "targets",
                                   json_pack("{s:f, s:o, s:b, s:f, s:o, s:b}", "get_p50_max_ratio", 1.2, "get_p50_ratio",
                                             bench_json_real(lat_ratio, 3), "get_p50_met", lat_ratio <= 1.2,
                                             "bulk_min_ratio", 0.7, "bulk_ratio", bench_json_real(bulk_ratio, 3),
                                             "bulk_met", bulk_ratio >= 0.7)) < 0) {
        json_decref(doc);
        doc = NULL;
    }
    if (bench_json_write(json, doc) < 0)
        dp_die("cannot write %s: %s (is its directory there and writable?)", json, strerror(errno));

    for (int i = 0; i < NV; i++) {
        dp_client_close(v[i].cl);
        kill(v[i].pid, SIGTERM);
    }
    if (rtt_pid > 0)
        kill(rtt_pid, SIGTERM);
    for (int i = 0; i < NV; i++)
        waitpid(v[i].pid, NULL, 0);
    if (rtt_pid > 0)
        waitpid(rtt_pid, NULL, 0);
    waitpid(raw_pid, NULL, 0);
    dp_task_map_free(&tm);
    /* The lab is left up even if this run created it: other work may have
     * started using it meanwhile, and lab down would kill that. */
    (void)lab_created;
    if (priv && lab_down(NULL, &err) < 0)
        dp_warn("could not take the private lab %s down: %s", PRIVATE_LAB, err.msg);
    char rm[600];
    snprintf(rm, sizeof(rm), "rm -rf '%s'", tmp);
    if (system(rm) != 0)
        dp_warn("could not remove %s", tmp);
    fprintf(stderr, "bench server: results in %s\n", json);
    return interrupted ? 1 : 0;
}
