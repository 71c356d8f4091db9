/* distriproc bench ttfr: time to the first correct reply of a migrated Redis.
 *
 * For each size, one Redis in a src container is loaded once and then
 * migrated to dst again and again (every system leaves the source running,
 * so every repetition of every system starts from the same loaded process),
 * by the systems of the table at the end of the systems section:
 *   distriproc        distriproc migrate (dump to images, page server, lazy restore)
 *   distriproc_memory distriproc migrate --from memory (lazy dump, pages served
 *                     from the frozen source's memory)
 *   criu_lazy_remote  CRIU's own remote lazy migration: criu dump --lazy-pages
 *                     with its page server on src, the images copied, criu
 *                     lazy-pages --page-server + criu restore --lazy-pages on dst
 *                     (bench_ttfr_criu_lazy.c)
 *   criu_full         criu dump, copy every image file over the lab link (our
 *                     own TCP copier, so the tbf cap applies), criu restore
 *   criu_lazy_local   criu dump, then CRIU's own `criu lazy-pages` daemon and
 *                     `criu restore --lazy-pages` on the dump's local images
 *                     (no network: the images are where the restore runs)
 *   local             no migration: the probe against the running source (the
 *                     floor every other figure includes)
 * The probe is a GET of one key from the middle of the loaded data whose
 * reply must hash (sha256) to what the source Redis answered right after the
 * load, run in the destination's namespace until it succeeds: the first
 * *correct* reply, which needs the dataset's pages, not only Redis's own.
 * "From freeze" starts when the dump starts; "from restore" when the source's
 * state is captured and the destination starts to get the process back. The
 * phases of every system are in bench_ttfr.h. */
#include <dirent.h>
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
#include <sys/sendfile.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "bench.h"
#include "benchjson.h"
#include "bench_ttfr.h"
#include "criu.h"
#include "lab.h"
#include "orch.h"
#include "util.h"

#define MAX_REPEAT 100
#define MAX_SIZES 8
#define SRC_ADDR TTFR_SRC_ADDR
#define DST_ADDR TTFR_DST_ADDR
#define REDIS_PORT TTFR_REDIS_PORT

#define NSYS 6
static const struct ttfr_system *const systems[NSYS];

struct sysres {
    struct ttfr_sample s[MAX_REPEAT];
    int n;
    char error[512];
};

struct sizeres {
    char label[32];
    uint64_t bytes, used_memory, keys;
    char skipped[256];
    int restarts; /* times the size was started again after another user disturbed the lab */
    char load_start[64], load_end[64]; /* /proc/loadavg as the size started and ended: the machine is shared */
    struct sysres sys[NSYS];
};

struct ttfr {
    struct ttfr_ctx c; /* what the systems see */
    const char *json_out, *workroot, *bandwidth;
    char sizes_text[256];
    int repeat;
    int selected[NSYS]; /* --systems */
    uint64_t bits;
    struct sizeres size[MAX_SIZES];
    int nsizes;
    char tool[PATH_MAX], cmdline[2048];
    time_t started;
};

static volatile sig_atomic_t interrupted;
static ino_t lab_ino; /* src's namespace as we set it up */

static const char *lab_netns_file(void)
{
    static char path[128];
    snprintf(path, sizeof(path), LAB_NETNS_DIR "/%s", lab_hosts[0].netns);
    return path;
}

/* The lab is shared by everything on this machine: a test or another bench
 * may tear it down (killing our Redis) or recreate it without our cap while
 * we run. 1 if it is still the lab we set up: same namespace, our cap on
 * both ends (within 2 %: tc reports rounded rates). */
static int lab_intact(uint64_t bits)
{
    struct stat sb;
    if (stat(lab_netns_file(), &sb) < 0 || sb.st_ino != lab_ino)
        return 0;
    static struct lab_state st;
    struct dp_err err;
    if (lab_probe(&st, &err) < 0 || !lab_state_complete(&st))
        return 0;
    for (int i = 0; i < 2; i++) {
        double have = (double)st.host[i].tbf_bits, want = (double)bits;
        if (bits == 0 ? have != 0 : fabs(have - want) > want * 0.02)
            return 0;
    }
    return 1;
}

static int lab_setup(uint64_t bits, struct dp_err *err)
{
    int up = lab_up(bits, err);
    struct stat sb;
    if (up >= 0 && stat(lab_netns_file(), &sb) == 0)
        lab_ino = sb.st_ino;
    return up;
}

static void on_int(int sig)
{
    (void)sig;
    interrupted = 1;
}

static void usage(FILE *out)
{
    fprintf(out,
            "usage: distriproc bench ttfr --json OUT [options]\n"
            "\n"
            "Time to the first correct reply (redis-cli GET of a known key, checksum checked) of a Redis loaded to\n"
            "each size, migrated src -> dst in the lab by each system (all by default):\n"
            "  distriproc         distriproc migrate (from images)\n"
            "  distriproc_memory  distriproc migrate --from memory\n"
            "  criu_lazy_remote   CRIU's remote lazy migration (dump --lazy-pages + page\n"
            "                     server on src; lazy-pages --page-server + restore\n"
            "                     --lazy-pages on dst)\n"
            "  criu_full          CRIU full migration (dump, copy all images, restore)\n"
            "  criu_lazy_local    CRIU's lazy restore from local images (no network)\n"
            "  local              the floor: the probe of the running source\n"
            "Times from the start of the restore and from the freeze, the phases (freeze,\n"
            "skeleton, transfer, restore, first reply) and bytes moved before the first\n"
            "reply. Median, min and max over the repetitions.\n"
            "\n"
            "  --sizes LIST      data loaded into Redis, e.g. 256M,1G,4G (default)\n"
            "  --bandwidth RATE  tbf cap on the lab link (default 1gbit; 'none' = uncapped)\n"
            "  --repeat N        repetitions per size and system (default 5, at least 1)\n"
            "  --prefetch P      DistriProc's prefetch policy (default auto, as migrate)\n"
            "  --systems LIST    only these systems, e.g. criu_lazy_remote,distriproc_memory\n"
            "  --port P          page server port on the lab hosts (default 7400; P+1 the\n"
            "                    image copier, P+2 CRIU's own page server)\n"
            "  --workdir DIR     scratch space for images (default /var/tmp; needs about\n"
            "                    1.3x the largest size free)\n"
            "  --json OUT        results (rewritten after each size, so a partial run keeps\n"
            "                    what it measured)\n"
            "\n"
            "Needs root, the lab (brought up with the cap; taken down at the end only if\n"
            "this run created it), redis-server and redis-cli. Checks free memory before\n"
            "each size and skips (and records) a size that does not fit. criu_lazy_remote\n"
            "raises the global fs.pipe-max-size to 4 MiB while its dump runs (CRIU's page\n"
            "pipes need it without CAP_SYS_RESOURCE) and puts the old value back.\n"
            "Plots and report: scripts/bench_report.py --ttfr OUT --out bench/results\n");
}

/* ---- statistics and JSON ---------------------------------------------------- */

static int cmp_double(const void *a, const void *b)
{
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static void summary(const struct sysres *r, size_t off, double *med, double *mn, double *mx)
{
    double v[MAX_REPEAT];
    for (int i = 0; i < r->n; i++)
        v[i] = *(const double *)((const char *)&r->s[i] + off);
    qsort(v, (size_t)r->n, sizeof(double), cmp_double);
    *mn = v[0];
    *mx = v[r->n - 1];
    *med = r->n % 2 ? v[r->n / 2] : (v[r->n / 2 - 1] + v[r->n / 2]) / 2;
}

/* The fields summarised per system, and the phases (see bench_ttfr.h). */
struct field {
    const char *name;
    size_t off;
};
static const struct field totals[] = {
    {"from_restore_s", offsetof(struct ttfr_sample, from_restore)},
    {"from_freeze_s", offsetof(struct ttfr_sample, from_freeze)},
    {"bytes_moved", offsetof(struct ttfr_sample, bytes)},
};
static const struct field phase_fields[] = {
    {"freeze_s", offsetof(struct ttfr_sample, ph.freeze_s)},
    {"skeleton_s", offsetof(struct ttfr_sample, ph.skeleton_s)},
    {"transfer_s", offsetof(struct ttfr_sample, ph.transfer_s)},
    {"restore_s", offsetof(struct ttfr_sample, ph.restore_s)},
    {"first_reply_s", offsetof(struct ttfr_sample, ph.reply_s)},
};

/* A sample's double at a field's offset. */
static double field_of(const struct ttfr_sample *x, const struct field *f)
{
    return *(const double *)((const char *)x + f->off);
}

/* The reply phase is what the measured phases leave of from_freeze. */
void ttfr_set_phases(struct ttfr_sample *s, double from_freeze, double freeze, double skeleton, double transfer,
                     double restore)
{
    s->from_freeze = from_freeze;
    s->from_restore = from_freeze - freeze;
    s->ph = (struct ttfr_phases){.freeze_s = freeze, .skeleton_s = skeleton, .transfer_s = transfer,
                                 .restore_s = restore, .reply_s = from_freeze - freeze - skeleton - transfer - restore};
}

/* {"median", "min", "max"} of one field over a system's samples. */
static json_t *json_summary(const struct sysres *r, const struct field *f)
{
    double med, mn, mx;
    summary(r, f->off, &med, &mn, &mx);
    return json_pack("{s:o, s:o, s:o}", "median", bench_json_real(med, 6), "min", bench_json_real(mn, 6), "max",
                     bench_json_real(mx, 6));
}

/* One run of a system: its totals, phases and (distriproc) steps. */
static json_t *json_run(const struct ttfr_sample *x)
{
    json_t *run = json_object(), *ph = json_object();
    int bad = !run || !ph;
    for (size_t j = 0; !bad && j < DP_ARRAY_LEN(totals); j++)
        bad = json_object_set_new(run, totals[j].name, bench_json_real(field_of(x, &totals[j]), 6)) < 0;
    for (size_t j = 0; !bad && j < DP_ARRAY_LEN(phase_fields); j++)
        bad = json_object_set_new(ph, phase_fields[j].name, bench_json_real(field_of(x, &phase_fields[j]), 6)) < 0;
    bad = bad || json_object_set_new(run, "phases", json_incref(ph)) < 0;
    if (!bad && x->d.has)
        bad = json_object_set_new(run, "distriproc_steps",
                                  json_pack("{s:o, s:o, s:o, s:o, s:I}", "serve_start_s", bench_json_real(x->d.serve_s, 6),
                                            "skeleton_pull_s", bench_json_real(x->d.skeleton_pull_s, 6),
                                            "daemon_start_s", bench_json_real(x->d.daemon_s, 6), "criu_restore_s",
                                            bench_json_real(x->d.criu_s, 6), "pages_fetched_at_reply",
                                            (json_int_t)llround(x->d.pages_at_reply))) < 0;
    json_decref(ph);
    if (bad) {
        json_decref(run);
        return NULL;
    }
    return run;
}

/* One system's entry for a size: n, error, summaries (when it ran), runs. */
static json_t *json_system(const struct sysres *r)
{
    json_t *o = json_pack("{s:i, s:s?}", "n", r->n, "error", r->error[0] ? r->error : NULL);
    json_t *runs = json_array(), *ph = json_object();
    int bad = !o || !runs || !ph;
    for (size_t k = 0; !bad && r->n > 0 && k < DP_ARRAY_LEN(totals); k++)
        bad = json_object_set_new(o, totals[k].name, json_summary(r, &totals[k])) < 0;
    for (size_t k = 0; !bad && r->n > 0 && k < DP_ARRAY_LEN(phase_fields); k++)
        bad = json_object_set_new(ph, phase_fields[k].name, json_summary(r, &phase_fields[k])) < 0;
    if (!bad && r->n > 0)
        bad = json_object_set_new(o, "phases", json_incref(ph)) < 0;
    for (int k = 0; !bad && k < r->n; k++)
        bad = json_array_append_new(runs, json_run(&r->s[k])) < 0;
    bad = bad || json_object_set_new(o, "runs", json_incref(runs)) < 0;
    json_decref(ph);
    json_decref(runs);
    if (bad) {
        json_decref(o);
        return NULL;
    }
    return o;
}

/* The result file (bench_report.py --help has its schema), rewritten after
 * every size so an interrupted run keeps what it measured. */
static int write_json(const struct ttfr *t)
{
    json_t *sizes = json_array();
    for (int i = 0; sizes && i < t->nsizes; i++) {
        const struct sizeres *z = &t->size[i];
        json_t *sys = json_object();
        for (int s = 0; sys && s < NSYS; s++) {
            if (t->selected[s] && json_object_set_new(sys, systems[s]->name, json_system(&z->sys[s])) < 0) {
                json_decref(sys);
                sys = NULL;
            }
        }
        if (json_array_append_new(sizes, json_pack("{s:s, s:I, s:I, s:I, s:i, s:s?, s:s, s:s, s:o}", "size", z->label,
                                                   "bytes", (json_int_t)z->bytes, "keys", (json_int_t)z->keys,
                                                   "redis_used_memory", (json_int_t)z->used_memory,
                                                   "lab_disturbed_restarts", z->restarts, "skipped",
                                                   z->skipped[0] ? z->skipped : NULL, "loadavg_start", z->load_start,
                                                   "loadavg_end", z->load_end, "systems", sys)) < 0) {
            json_decref(sizes);
            sizes = NULL;
        }
    }
    json_t *doc = json_pack("{s:s, s:i, s:o, s:s, s:o, s:s, s:s, s:i, s:s, s:s, s:i, s:o}", "benchmark", "ttfr",
                            "schema", 1, "started", bench_json_utc(t->started), "command", t->cmdline, "machine",
                            bench_json_machine(), "lab", lab_name(), "bandwidth", t->bandwidth, "repeat", t->repeat,
                            "prefetch", t->c.prefetch, "probe",
                            "redis-cli -h HOST -p 6379 get key:KEYS/2 | sha256sum | grep -q '^SHA256 '"
                            " (SHA256: of the same GET against the source right after the load)",
                            "probe_interval_ms", DP_ORCH_PROBE_INTERVAL_MS /* every system alike */, "sizes", sizes);
    if (bench_json_write(t->json_out, doc) < 0) {
        dp_error("cannot write %s: %s (is its directory there and writable?)", t->json_out, strerror(errno));
        return -1;
    }
    return 0;
}

/* ---- helpers ------------------------------------------------------------------ */

/* rm -rf of a scratch directory, bounded like every other child. */
void ttfr_rm_rf(const char *path)
{
    const char *argv[] = {"rm", "-rf", "--one-file-system", path, NULL};
    struct dp_err err;
    dp_orch_run(argv, NULL, 300, NULL, -1, -1, &err);
}

/* Seconds between two dp_now_ns() readings. */
double ttfr_secs(uint64_t a, uint64_t b) { return (double)(b - a) / 1e9; }

/* Runs one of our own commands and returns its stdout, or NULL with what
 * failed in errbuf (its stderr went to ours). */
static char *run_self(const char *const argv[], double timeout_s, const char *what, char *errbuf, size_t errlen)
{
    struct dp_err err = {{0}};
    char *out = NULL;
    int st = dp_orch_run(argv, NULL, timeout_s, &out, -1, -1, &err);
    if (st < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        snprintf(errbuf, errlen, "%.100s failed (%.300s)", what, st < 0 ? err.msg : "non-zero exit; messages above");
        free(out);
        return NULL;
    }
    return out;
}

/* The probe of a loaded Redis (check: GET of a known key, reply checked);
 * with check NULL, PING -> PONG (a Redis not loaded yet). */
static void probe_cmd(const char *check, const char *addr, char *cmd, size_t len)
{
    if (check)
        snprintf(cmd, len, "redis-cli -h %s -p %d %s", addr, REDIS_PORT, check);
    else
        snprintf(cmd, len, "redis-cli -h %s -p %d ping | grep -qx PONG", addr, REDIS_PORT);
}

/* One probe loop at the cadence every system shares. */
static uint64_t probe(const char *check, const char *netns, const char *addr, double timeout_s, pid_t alive_pid,
                      int *attempts)
{
    char cmd[320];
    probe_cmd(check, addr, cmd, sizeof(cmd));
    return dp_orch_probe(cmd, netns, timeout_s, DP_ORCH_PROBE_INTERVAL_MS, -1, alive_pid, dp_proc_starttime(alive_pid), attempts);
}

/* The run's probe (its check) for a system outside this file. */
uint64_t ttfr_probe(const struct ttfr_ctx *c, const char *netns, const char *addr, double timeout_s,
                    pid_t alive_pid, int *attempts)
{
    return probe(c->check, netns, addr, timeout_s, alive_pid, attempts);
}

/* A full dump of the source that leaves it running (as checkpoint does it). */
static int dump(const struct ttfr_ctx *c, pid_t pid, const char *images, char *errbuf, size_t errlen)
{
    char pidbuf[32];
    snprintf(pidbuf, sizeof(pidbuf), "%d", (int)pid);
    const char *argv[] = {c->self, "checkpoint", "--host", "src", "--pid", pidbuf, "--images", images,
                          "--leave-running", "--json", NULL};
    char *out = run_self(argv, 900, "checkpoint --leave-running", errbuf, errlen);
    free(out);
    return out ? 0 : -1;
}

/* SIGKILL to a tree's root (its pid namespace's init takes the rest), bounded wait. */
void ttfr_kill_tree(pid_t pid)
{
    if (pid <= 0)
        return;
    unsigned long long st = dp_proc_starttime(pid);
    if (!st)
        return;
    kill(pid, SIGKILL);
    dp_proc_wait_gone(pid, st, 20);
}

/* ---- the copier: every image file over one TCP connection --------------------- */

struct file_hdr {
    uint32_t name_len; /* 0 = end */
    uint32_t mode;
    uint64_t size;
} __attribute__((packed));

/* Sender side of the copier: every regular file of dir, then an end marker. */
static int copy_send(const char *dir, const char *hostport, uint64_t *sent)
{
    struct sockaddr_in sa;
    if (dp_parse_hostport(hostport, &sa) < 0)
        return -1;
    int fd = -1;
    for (int i = 0; i < 500 && fd < 0; i++) {
        fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) < 0) {
            close(fd);
            fd = -1;
            usleep(10000);
        }
    }
    if (fd < 0) {
        fprintf(stderr, "copier: cannot connect to %s: %s\n", hostport, strerror(errno));
        return -1;
    }
    DIR *d = opendir(dir);
    if (!d)
        return -1;
    struct dirent *e;
    *sent = 0;
    while ((e = readdir(d))) {
        char path[PATH_MAX + 300];
        snprintf(path, sizeof(path), "%s/%s", dir, e->d_name);
        struct stat sb;
        if (lstat(path, &sb) < 0 || !S_ISREG(sb.st_mode))
            continue;
        int in = open(path, O_RDONLY | O_CLOEXEC);
        if (in < 0)
            return -1;
        struct file_hdr h = {.name_len = (uint32_t)strlen(e->d_name), .mode = sb.st_mode & 07777,
                             .size = (uint64_t)sb.st_size};
        if (dp_write_full(fd, &h, sizeof(h)) < 0 || dp_write_full(fd, e->d_name, h.name_len) < 0)
            return -1;
        off_t off = 0;
        while ((uint64_t)off < h.size) {
            ssize_t n = sendfile(fd, in, &off, h.size - (uint64_t)off);
            if (n <= 0) {
                fprintf(stderr, "copier: sendfile %s: %s\n", path, n < 0 ? strerror(errno) : "short file");
                return -1;
            }
        }
        close(in);
        *sent += sizeof(h) + h.name_len + h.size;
    }
    closedir(d);
    struct file_hdr end = {0};
    if (dp_write_full(fd, &end, sizeof(end)) < 0)
        return -1;
    *sent += sizeof(end);
    char ack;
    if (dp_read_full(fd, &ack, 1) < 0) /* the receiver has written everything */
        return -1;
    close(fd);
    return 0;
}

/* Receiver side: files land in dir (names checked: no path), then an ack. */
static int copy_recv(int lfd, const char *dir)
{
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC);
    if (fd < 0)
        return -1;
    static char buf[1 << 20];
    for (;;) {
        struct file_hdr h;
        if (dp_read_full(fd, &h, sizeof(h)) < 0)
            return -1;
        if (h.name_len == 0)
            break;
        char name[256];
        if (h.name_len >= sizeof(name) || dp_read_full(fd, name, h.name_len) < 0)
            return -1;
        name[h.name_len] = '\0';
        if (strchr(name, '/') || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
            return -1;
        char path[PATH_MAX + 300];
        snprintf(path, sizeof(path), "%s/%s", dir, name);
        int out = open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, h.mode & 0777);
        if (out < 0)
            return -1;
        for (uint64_t left = h.size; left > 0;) {
            size_t n = left < sizeof(buf) ? (size_t)left : sizeof(buf);
            if (dp_read_full(fd, buf, n) < 0 || dp_write_full(out, buf, n) < 0)
                return -1;
            left -= n;
        }
        close(out);
    }
    char ack = 1;
    dp_write_full(fd, &ack, 1);
    close(fd);
    return 0;
}

/* Receiver in dst's netns, sender in src's: the copy crosses the capped veth. */
int64_t ttfr_copy_over_link(const char *dir_src, const char *dir_dst, int port)
{
    char hostport[64];
    snprintf(hostport, sizeof(hostport), DST_ADDR ":%d", port);
    int ready[2], res[2];
    if (pipe(ready) < 0 || pipe(res) < 0)
        return -1;
    pid_t rx = fork();
    if (rx == 0) {
        close(ready[0]);
        struct dp_err err;
        if (lab_enter(lab_host_find("dst"), &err) < 0)
            _exit(2);
        int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
        int one = 1;
        setsockopt(lfd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        struct sockaddr_in sa;
        dp_parse_hostport(hostport, &sa);
        if (bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) < 0 || listen(lfd, 1) < 0) {
            fprintf(stderr, "copier: cannot listen on %s: %s\n", hostport, strerror(errno));
            _exit(2);
        }
        char c = 1;
        dp_write_full(ready[1], &c, 1);
        _exit(copy_recv(lfd, dir_dst) == 0 ? 0 : 1);
    }
    close(ready[1]);
    char c;
    if (rx < 0 || dp_read_full(ready[0], &c, 1) < 0) {
        close(ready[0]);
        if (rx > 0)
            waitpid(rx, NULL, 0);
        return -1;
    }
    close(ready[0]);
    pid_t tx = fork();
    if (tx == 0) {
        close(res[0]);
        struct dp_err err;
        if (lab_enter(lab_host_find("src"), &err) < 0)
            _exit(2);
        uint64_t sent = 0;
        int rc = copy_send(dir_src, hostport, &sent);
        dp_write_full(res[1], &sent, sizeof(sent));
        _exit(rc == 0 ? 0 : 1);
    }
    close(res[1]);
    uint64_t sent = 0;
    int ok = dp_read_full(res[0], &sent, sizeof(sent)) == 0;
    close(res[0]);
    int st1 = 0, st2 = 0;
    waitpid(tx, &st1, 0);
    waitpid(rx, &st2, 0);
    if (!ok || !WIFEXITED(st1) || WEXITSTATUS(st1) || !WIFEXITED(st2) || WEXITSTATUS(st2))
        return -1;
    return (int64_t)sent;
}

/* ---- the systems -------------------------------------------------------------- */

/* `distriproc migrate` with --from MODE (memory: the source is stopped at
 * --stop), or from images with --leave-running (from NULL: the path the bench
 * measured before memory mode): dump, page server, lazy restore and the probe
 * in one command, whose JSON gives the phases. */
static int run_migrate(const struct ttfr_ctx *c, const char *from, pid_t redis, const char *work,
                       struct ttfr_sample *s, char *eb, size_t el)
{
    char wd[PATH_MAX + 32], pidbuf[32], port[16], pcmd[320];
    snprintf(wd, sizeof(wd), "%s/dp-%s", work, from ? from : "images"); /* short: unix socket paths under it */
    snprintf(pidbuf, sizeof(pidbuf), "%d", (int)redis);
    snprintf(port, sizeof(port), "%d", c->port);
    probe_cmd(c->check, DST_ADDR, pcmd, sizeof(pcmd));
    const char *argv[24] = {c->self, "migrate", "--pid", pidbuf, "--workdir", wd, "--port", port, "--prefetch",
                            c->prefetch, "--probe", pcmd, "--probe-timeout", "120", "--json"};
    size_t n = 15;
    if (from) {
        argv[n++] = "--from";
        argv[n++] = from;
    } else {
        argv[n++] = "--leave-running"; /* from images; every repetition starts from the same source */
    }
    argv[n] = NULL;
    char what[64];
    snprintf(what, sizeof(what), "distriproc migrate --from %s", from ? from : "images");
    char *out = run_self(argv, 1200, what, eb, el);
    int rc = -1;
    if (out) {
        double from_freeze, dump_s, serve_s, restore_s, bytes;
        struct ttfr_detail *d = &s->d;
        if (dp_json_number(out, NULL, "ttfr_from_freeze_s", &from_freeze) == 0 &&
            dp_json_number(out, NULL, "bytes_before_reply", &bytes) == 0 &&
            dp_json_number(out, NULL, "dump_s", &dump_s) == 0 &&
            dp_json_number(out, NULL, "serve_start_s", &serve_s) == 0 &&
            dp_json_number(out, NULL, "restore_s", &restore_s) == 0 &&
            dp_json_number(out, NULL, "skeleton_s", &d->skeleton_pull_s) == 0 &&
            dp_json_number(out, NULL, "daemon_start_s", &d->daemon_s) == 0 &&
            dp_json_number(out, NULL, "criu_restore_s", &d->criu_s) == 0 &&
            dp_json_number(out, NULL, "pages_fetched_at_reply", &d->pages_at_reply) == 0) {
            /* migrate's restore_s is the whole `distriproc restore`: the
             * skeleton pull, then the daemon and criu. */
            d->has = 1;
            d->serve_s = serve_s;
            s->bytes = bytes;
            ttfr_set_phases(s, from_freeze, dump_s, serve_s + d->skeleton_pull_s, 0, restore_s - d->skeleton_pull_s);
            dp_info("ttfr steps: page server start %.3f s, skeleton %.3f s, daemon start %.3f s, "
                    "criu restore %.3f s, first reply %.3f s after the restore, %.0f pages fetched",
                    serve_s, d->skeleton_pull_s, d->daemon_s, d->criu_s, s->ph.reply_s, d->pages_at_reply);
            rc = 0;
        } else {
            snprintf(eb, el, "distriproc migrate printed unexpected JSON: %.200s", out);
        }
        free(out);
    }
    const char *stop[] = {c->self, "migrate", "--stop", "--workdir", wd, NULL};
    char e2[256];
    free(run_self(stop, 120, "migrate --stop", e2, sizeof(e2)));
    ttfr_rm_rf(wd);
    return rc;
}

/* DistriProc from images: what `migrate` did before memory mode. */
static int run_distriproc(const struct ttfr_ctx *c, pid_t redis, const char *work, struct ttfr_sample *s, char *eb,
                          size_t el)
{
    return run_migrate(c, NULL, redis, work, s, eb, el);
}

/* DistriProc memory mode: pages served from the frozen source's memory. */
static int run_distriproc_memory(const struct ttfr_ctx *c, pid_t redis, const char *work, struct ttfr_sample *s,
                                 char *eb, size_t el)
{
    return run_migrate(c, "memory", redis, work, s, eb, el);
}

/* criu restore of images in dst's netns, detached, bounded (a lazy one can hang). */
int ttfr_criu_restore_in_dst(const char *images, const char *pidfile, int lazy, char *eb, size_t el)
{
    /* -v3 like `distriproc restore`: the systems compared log alike */
    struct dp_restore_opts ro = {.images_dir = images, .pidfile = pidfile, .detached = 1, .lazy_pages = lazy,
                                 .tcp_established = 1, .verbosity = 3};
    struct dp_err err = {{0}};
    if (dp_criu_restore(&ro, lab_hosts[1].netns, 600, &err) < 0) {
        snprintf(eb, el, "criu restore%.300s failed: %.300s", lazy ? " --lazy-pages" : "", err.msg);
        return -1;
    }
    return 0;
}

/* CRIU full migration: dump everything, copy every image file over the link
 * (our copier, so the cap applies), restore, probe. */
static int run_criu_full(const struct ttfr_ctx *c, pid_t redis, const char *work, struct ttfr_sample *s, char *eb,
                         size_t el)
{
    char src[PATH_MAX + 32], dst[PATH_MAX + 32], pidfile[PATH_MAX + 32];
    snprintf(src, sizeof(src), "%s/full-src", work);
    snprintf(dst, sizeof(dst), "%s/full-dst", work);
    snprintf(pidfile, sizeof(pidfile), "%s/full.pid", work);
    int rc = -1;
    pid_t restored = 0;
    uint64_t t0 = dp_now_ns();
    if (dump(c, redis, src, eb, el) < 0)
        goto out;
    uint64_t t1 = dp_now_ns();
    if (mkdir(dst, 0700) < 0) {
        snprintf(eb, el, "mkdir %.300s: %.100s", dst, strerror(errno));
        goto out;
    }
    int64_t sent = ttfr_copy_over_link(src, dst, c->port + 1);
    if (sent < 0) {
        snprintf(eb, el, "copying the images over the lab link failed");
        goto out;
    }
    uint64_t t2 = dp_now_ns();
    if (ttfr_criu_restore_in_dst(dst, pidfile, 0, eb, el) < 0)
        goto out;
    uint64_t t3 = dp_now_ns();
    restored = dp_read_pid_file(pidfile);
    int attempts;
    uint64_t ok = probe(c->check, lab_hosts[1].netns, DST_ADDR, 120, restored, &attempts);
    if (!ok) {
        snprintf(eb, el, "the fully restored Redis did not answer within 120 s");
        goto out;
    }
    s->bytes = (double)sent;
    ttfr_set_phases(s, ttfr_secs(t0, ok), ttfr_secs(t0, t1), 0, ttfr_secs(t1, t2), ttfr_secs(t2, t3));
    rc = 0;
out:
    if (!restored)
        restored = dp_read_pid_file(pidfile);
    ttfr_kill_tree(restored);
    unlink(pidfile);
    ttfr_rm_rf(src);
    ttfr_rm_rf(dst);
    return rc;
}

/* CRIU's lazy-pages daemon, local images or a remote page server; ready once its socket exists. */
pid_t ttfr_start_criu_lazy_daemon(const struct ttfr_ctx *c, const char *img, const char *page_server, int port,
                                  char *eb, size_t el)
{
    char sock[PATH_MAX + 64], portbuf[16];
    snprintf(sock, sizeof(sock), "%s/lazy-pages.socket", img);
    snprintf(portbuf, sizeof(portbuf), "%d", port);
    const char *argv[16] = {c->criu, "lazy-pages", "-D", img, "--work-dir", img, "-o", "lazy-pages.log"};
    size_t n = 8;
    if (page_server) {
        argv[n++] = "--page-server";
        argv[n++] = "--address";
        argv[n++] = page_server;
        argv[n++] = "--port";
        argv[n++] = portbuf;
    }
    argv[n] = NULL;
    struct dp_err err = {{0}};
    pid_t daemon = dp_orch_spawn(argv, lab_hosts[1].netns, NULL, &err);
    if (daemon < 0) {
        snprintf(eb, el, "cannot start criu lazy-pages: %.300s", err.msg);
        return -1;
    }
    struct stat sb;
    for (int i = 0; i < 2000 && stat(sock, &sb) < 0; i++) {
        if (waitpid(daemon, NULL, WNOHANG) == daemon) {
            snprintf(eb, el, "criu lazy-pages exited at once (see %.300s/lazy-pages.log)", img);
            return -1;
        }
        usleep(5000);
    }
    if (stat(sock, &sb) < 0) {
        snprintf(eb, el, "criu lazy-pages made no %.300s within 10 s", sock);
        ttfr_stop_daemon(daemon);
        return -1;
    }
    return daemon;
}

/* A lazy-pages daemon may wait on a dead peer forever: SIGKILL, then reap. */
void ttfr_stop_daemon(pid_t daemon)
{
    if (daemon <= 0)
        return;
    kill(daemon, SIGKILL);
    waitpid(daemon, NULL, 0);
}

/* CRIU's own lazy restore from the dump's local images: no network, the
 * images are where the restore runs. */
static int run_criu_lazy_local(const struct ttfr_ctx *c, pid_t redis, const char *work, struct ttfr_sample *s,
                               char *eb, size_t el)
{
    char img[PATH_MAX + 32], pidfile[PATH_MAX + 32];
    snprintf(img, sizeof(img), "%s/lazy-local", work);
    snprintf(pidfile, sizeof(pidfile), "%s/lazy.pid", work);
    int rc = -1;
    pid_t restored = 0, daemon = -1;
    uint64_t t0 = dp_now_ns();
    if (dump(c, redis, img, eb, el) < 0)
        goto out;
    uint64_t t1 = dp_now_ns();
    daemon = ttfr_start_criu_lazy_daemon(c, img, NULL, 0, eb, el);
    if (daemon < 0 || ttfr_criu_restore_in_dst(img, pidfile, 1, eb, el) < 0)
        goto out;
    uint64_t t2 = dp_now_ns();
    restored = dp_read_pid_file(pidfile);
    int attempts;
    uint64_t ok = probe(c->check, lab_hosts[1].netns, DST_ADDR, 120, restored, &attempts);
    if (!ok) {
        snprintf(eb, el, "the lazily restored Redis (CRIU's daemon) did not answer within 120 s");
        goto out;
    }
    s->bytes = 0; /* the images are local to the restore: nothing crosses the link */
    ttfr_set_phases(s, ttfr_secs(t0, ok), ttfr_secs(t0, t1), 0, 0, ttfr_secs(t1, t2));
    rc = 0;
out:
    if (!restored)
        restored = dp_read_pid_file(pidfile);
    ttfr_kill_tree(restored);
    ttfr_stop_daemon(daemon);
    unlink(pidfile);
    ttfr_rm_rf(img);
    return rc;
}

/* No migration: the probe against the running source, the floor every other
 * figure includes (all of it is the reply phase). */
static int run_local(const struct ttfr_ctx *c, pid_t redis, const char *work, struct ttfr_sample *s, char *eb,
                     size_t el)
{
    (void)work;
    int attempts;
    uint64_t t0 = dp_now_ns();
    uint64_t ok = probe(c->check, lab_hosts[0].netns, SRC_ADDR, 30, redis, &attempts);
    if (!ok || attempts != 1) {
        snprintf(eb, el, "the running source Redis did not answer the first probe");
        return -1;
    }
    s->bytes = 0;
    ttfr_set_phases(s, ttfr_secs(t0, ok), 0, 0, 0, 0);
    return 0;
}

/* The table: every system of the bench, in the order each repetition runs
 * them (the JSON keys and --systems names). */
static const struct ttfr_system sys_distriproc = {"distriproc", run_distriproc, 0};
static const struct ttfr_system sys_criu_lazy_remote = {"criu_lazy_remote", ttfr_run_criu_lazy_remote, 0};
static const struct ttfr_system sys_criu_full = {"criu_full", run_criu_full, 0};
static const struct ttfr_system sys_criu_lazy_local = {"criu_lazy_local", run_criu_lazy_local, 0};
static const struct ttfr_system sys_local = {"local", run_local, 0};
static const struct ttfr_system sys_distriproc_memory = {"distriproc_memory", run_distriproc_memory, 1};
static const struct ttfr_system *const systems[NSYS] = {
    &sys_distriproc, &sys_criu_lazy_remote, &sys_criu_full, &sys_criu_lazy_local, &sys_local, &sys_distriproc_memory,
};

/* ---- one size --------------------------------------------------------------------- */

/* MemAvailable in bytes: what a size may use. */
static uint64_t mem_available(void)
{
    char v[64];
    bench_proc_field("/proc/meminfo", "MemAvailable", v, sizeof(v));
    return strtoull(v, NULL, 10) * 1024;
}

/* Starts Redis in a src container, loads it to the size and records the
 * probe of this size (a key from the middle and its checksum). */
static pid_t start_redis(struct ttfr *t, struct sizeres *z, char *eb, size_t el)
{
    const char *argv[] = {t->c.self, "lab", "exec", "src", "--container", "--detach", "--", "redis-server", "--save", "",
                          "--appendonly", "no", "--protected-mode", "no", "--bind", "0.0.0.0", "--port", "6379",
                          NULL};
    /* A killed Redis keeps its listening socket until its memory is torn
     * down: a new one started at once cannot bind the port. Wait for it. */
    for (int i = 0; i < 600 && dp_orch_can_connect(lab_hosts[0].netns, SRC_ADDR ":6379", 200); i++)
        usleep(100000);
    pid_t pid = -1;
    for (int attempt = 0; attempt < 3 && pid < 0; attempt++) {
        char *out = run_self(argv, 60, "starting Redis in a src container", eb, el);
        if (!out)
            return -1;
        pid = (pid_t)atoi(out);
        free(out);
        int attempts;
        if (!probe(NULL, lab_hosts[0].netns, SRC_ADDR, 30, pid, &attempts)) {
            snprintf(eb, el, "Redis did not answer on src");
            ttfr_kill_tree(pid);
            pid = -1;
            sleep(2);
        }
    }
    if (pid < 0)
        return -1;
    char mib[32];
    snprintf(mib, sizeof(mib), "%llu", (unsigned long long)(z->bytes >> 20));
    const char *load[] = {"/usr/bin/python3", t->tool, "load", "--host", SRC_ADDR, "--mib", mib, "--max-seconds",
                          "1700", NULL};
    dp_info("ttfr %s: loading %s MiB into Redis (pid %d)", z->label, mib, (int)pid);
    struct dp_err err = {{0}};
    char *lo = NULL;
    int st = dp_orch_run(load, lab_hosts[0].netns, 1800, &lo, -1, -1, &err);
    if (st < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0) {
        snprintf(eb, el, "loading Redis failed: %.300s", st < 0 ? err.msg : "see the messages above");
        free(lo);
        ttfr_kill_tree(pid);
        return -1;
    }
    double v;
    if (dp_json_number(lo, NULL, "used_memory", &v) == 0)
        z->used_memory = (uint64_t)v;
    if (dp_json_number(lo, NULL, "keys", &v) == 0)
        z->keys = (uint64_t)v;
    free(lo);
    /* The probe's key and the checksum of its value as the source answers it. */
    char getcmd[128];
    snprintf(getcmd, sizeof(getcmd), "redis-cli -h %s -p %d get key:%llu | sha256sum", SRC_ADDR, REDIS_PORT,
             (unsigned long long)(z->keys / 2));
    const char *sh[] = {"/bin/sh", "-c", getcmd, NULL};
    char *sum = NULL;
    st = dp_orch_run(sh, lab_hosts[0].netns, 60, &sum, -1, -1, &err);
    if (st < 0 || !WIFEXITED(st) || WEXITSTATUS(st) != 0 || !sum || strspn(sum, "0123456789abcdef") != 64 ||
        z->keys == 0) {
        snprintf(eb, el, "cannot read key:%llu back from the loaded Redis", (unsigned long long)(z->keys / 2));
        free(sum);
        ttfr_kill_tree(pid);
        return -1;
    }
    sum[64] = '\0';
    snprintf(t->c.check, sizeof(t->c.check), "get key:%llu | sha256sum | grep -q '^%s '", (unsigned long long)(z->keys / 2),
             sum);
    free(sum);
    return pid;
}

/* One repetition's outcome on stderr, as it happens. */
static void print_line(const struct sizeres *z, int sys, int rep, const struct ttfr_sample *s, int ok, const char *err)
{
    if (!ok) {
        dp_warn("ttfr %s rep %d %-17s FAILED: %s", z->label, rep + 1, systems[sys]->name, err);
        return;
    }
    char b[32];
    dp_format_bytes((uint64_t)s->bytes, b, sizeof(b));
    dp_info("ttfr %s rep %d %-17s %8.3f s from restore, %8.3f s from freeze, %s moved", z->label, rep + 1,
            systems[sys]->name, s->from_restore, s->from_freeze, b);
}

/* /proc/loadavg's first three fields (the machine is shared: say how busy). */
static void loadavg(char *out, size_t len)
{
    out[0] = '\0';
    FILE *f = fopen("/proc/loadavg", "r");
    if (!f)
        return;
    double a, b, c;
    if (fscanf(f, "%lf %lf %lf", &a, &b, &c) == 3)
        snprintf(out, len, "%.2f %.2f %.2f", a, b, c);
    fclose(f);
}

/* Loads Redis to one size and runs every selected system on it, repetition
 * after repetition; starts the size again (at most 3 times) if another user
 * disturbs the lab. */
static void run_size(struct ttfr *t, struct sizeres *z)
{
    loadavg(z->load_start, sizeof(z->load_start));
    /* Redis holds ~1.2x its data; a restored copy grows to the same as it is
     * touched (fully, for CRIU full) while the source stays loaded. */
    uint64_t need = z->bytes * 3, avail = mem_available();
    if (avail < need) {
        char a[32], n[32];
        dp_format_bytes(avail, a, sizeof(a));
        dp_format_bytes(need, n, sizeof(n));
        snprintf(z->skipped, sizeof(z->skipped), "needs about %s of free memory, %s available", n, a);
        memcpy(z->load_end, z->load_start, sizeof(z->load_end)); /* same size, distinct fields */
        dp_warn("ttfr %s: skipped: %s", z->label, z->skipped);
        return;
    }
    char eb[512] = "";
    char work[PATH_MAX];
    snprintf(work, sizeof(work), "%s/distriproc-ttfr.%d", t->workroot, (int)getpid());
    for (int attempt = 1; attempt <= 3 && !interrupted; attempt++) {
        memset(z->sys, 0, sizeof(z->sys));
        struct dp_err err = {{0}};
        if (!lab_intact(t->bits) && lab_setup(t->bits, &err) < 0) {
            snprintf(z->sys[0].error, sizeof(z->sys[0].error), "lab up failed: %.300s", err.msg);
            return;
        }
        pid_t redis = start_redis(t, z, eb, sizeof(eb));
        if (redis < 0) {
            for (int s = 0; s < NSYS; s++)
                snprintf(z->sys[s].error, sizeof(z->sys[s].error), "%.300s", eb);
            dp_error("ttfr %s: %s", z->label, eb);
            if (lab_intact(t->bits))
                return;
            z->restarts++;
            continue;
        }
        ttfr_rm_rf(work);
        mkdir(work, 0700);
        int disturbed = 0;
        for (int rep = 0; rep < t->repeat && !interrupted && !disturbed; rep++) {
            for (int sys = 0; sys < NSYS && !interrupted; sys++) {
                if (!t->selected[sys])
                    continue;
                struct sysres *r = &z->sys[sys];
                struct ttfr_sample s = {0};
                eb[0] = '\0';
                int rc = systems[sys]->run(&t->c, redis, work, &s, eb, sizeof(eb));
                if (!lab_intact(t->bits)) {
                    disturbed = 1;
                    break;
                }
                print_line(z, sys, rep, &s, rc == 0, eb);
                if (rc == 0)
                    r->s[r->n++] = s;
                else if (!r->error[0])
                    snprintf(r->error, sizeof(r->error), "rep %d: %.300s", rep + 1, eb);
                if (systems[sys]->consumes_source && rep + 1 < t->repeat) {
                    /* the migration ended the source (commit): a new one for the next repetition */
                    ttfr_kill_tree(redis);
                    dp_info("ttfr %s: %s stops the source; loading a new one for the next repetition", z->label,
                            systems[sys]->name);
                    redis = start_redis(t, z, eb, sizeof(eb));
                    if (redis < 0) {
                        dp_error("ttfr %s: %s; stopping this size", z->label, eb);
                        rep = t->repeat;
                        break;
                    }
                } else if (!systems[sys]->consumes_source && !dp_proc_same(redis, 0)) {
                    dp_error("ttfr %s: the source Redis died; stopping this size", z->label);
                    rep = t->repeat;
                    break;
                }
            }
        }
        ttfr_kill_tree(redis);
        ttfr_rm_rf(work);
        loadavg(z->load_end, sizeof(z->load_end));
        if (!disturbed)
            return;
        z->restarts++;
        dp_warn("ttfr %s: another user tore down, recreated or re-capped the lab during the run "
                "(a test or another bench); discarding this size's samples and starting it again (%d/3)",
                z->label, attempt);
        sleep(5);
    }
    if (z->restarts >= 3)
        for (int s = 0; s < NSYS; s++)
            if (z->sys[s].n == 0 && !z->sys[s].error[0])
                snprintf(z->sys[s].error, sizeof(z->sys[s].error),
                         "the lab was disturbed by other users 3 times; no clean run");
}

/* --systems LIST (comma-separated names of the table) -> t->selected; no
 * list = every system. 0, or -1 after saying which name is unknown. */
static int select_systems(struct ttfr *t, const char *list)
{
    for (int s = 0; s < NSYS; s++)
        t->selected[s] = list == NULL;
    if (!list)
        return 0;
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", list);
    int any = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        int s = 0;
        while (s < NSYS && strcmp(systems[s]->name, tok) != 0)
            s++;
        if (s == NSYS) {
            fprintf(stderr, "distriproc bench ttfr: --systems: unknown system '%s' (known:", tok);
            for (int k = 0; k < NSYS; k++)
                fprintf(stderr, " %s", systems[k]->name);
            fprintf(stderr, ")\n");
            return -1;
        }
        t->selected[s] = any = 1;
    }
    if (!any) {
        fprintf(stderr, "distriproc bench ttfr: --systems needs at least one name\n");
        return -1;
    }
    return 0;
}

int bench_ttfr(int argc, char **argv)
{
    static const struct option opts[] = {
        {"sizes", required_argument, NULL, 's'},   {"bandwidth", required_argument, NULL, 'b'},
        {"repeat", required_argument, NULL, 'r'},  {"prefetch", required_argument, NULL, 'p'},
        {"port", required_argument, NULL, 'P'},    {"workdir", required_argument, NULL, 'w'},
        {"json", required_argument, NULL, 'j'},    {"systems", required_argument, NULL, 'S'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    static struct ttfr t;
    memset(&t, 0, sizeof(t));
    snprintf(t.sizes_text, sizeof(t.sizes_text), "256M,1G,4G");
    t.bandwidth = "1gbit";
    t.repeat = 5;
    t.c.prefetch = "auto"; /* migrate's default */
    t.c.port = 7400;
    const char *syslist = NULL;
    t.workroot = "/var/tmp";
    size_t cl = 0;
    for (int i = 0; i < argc && cl + 2 < sizeof(t.cmdline); i++)
        cl += (size_t)snprintf(t.cmdline + cl, sizeof(t.cmdline) - cl, "%s%s", i ? " " : "distriproc bench ",
                               argv[i]);
    int c;
    char *end;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 's': snprintf(t.sizes_text, sizeof(t.sizes_text), "%s", optarg); break;
        case 'b': t.bandwidth = optarg; break;
        case 'r':
            t.repeat = (int)strtol(optarg, &end, 10);
            if (*end || t.repeat < 1 || t.repeat > MAX_REPEAT) {
                fprintf(stderr, "distriproc bench ttfr: --repeat takes 1..%d (got '%s')\n", MAX_REPEAT, optarg);
                return 2;
            }
            break;
        case 'p': t.c.prefetch = optarg; break;
        case 'P':
            t.c.port = (int)strtol(optarg, &end, 10);
            if (*end || t.c.port < 1 || t.c.port > 65533) {
                fprintf(stderr, "distriproc bench ttfr: --port takes 1..65533 (got '%s')\n", optarg);
                return 2;
            }
            break;
        case 'w': t.workroot = optarg; break;
        case 'j': t.json_out = optarg; break;
        case 'S': syslist = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!t.json_out || optind != argc) {
        fprintf(stderr, "distriproc bench ttfr: --json OUT is required\n\n");
        usage(stderr);
        return 2;
    }
    if (select_systems(&t, syslist) < 0)
        return 2;
    char list[256];
    snprintf(list, sizeof(list), "%s", t.sizes_text);
    for (char *save = NULL, *tok = strtok_r(list, ",", &save); tok; tok = strtok_r(NULL, ",", &save)) {
        if (t.nsizes == MAX_SIZES) {
            fprintf(stderr, "distriproc bench ttfr: at most %d sizes\n", MAX_SIZES);
            return 2;
        }
        struct sizeres *z = &t.size[t.nsizes++];
        snprintf(z->label, sizeof(z->label), "%s", tok);
        if (dp_parse_size(tok, &z->bytes) < 0 || z->bytes < (1 << 20)) {
            fprintf(stderr, "distriproc bench ttfr: bad size '%s' (e.g. 256M, 1G)\n", tok);
            return 2;
        }
    }
    uint64_t bits = 0;
    struct dp_err err = {{0}};
    if (strcmp(t.bandwidth, "none") != 0 && lab_parse_rate(t.bandwidth, &bits, &err) < 0) {
        fprintf(stderr, "distriproc bench ttfr: --bandwidth: %s\n", err.msg);
        return 2;
    }
    if (geteuid() != 0) {
        dp_error("needs root (namespaces, CRIU)");
        return 1;
    }
    t.c.self = dp_self_exe();
    /* build/distriproc -> scripts/redis_tool.py of the same checkout */
    snprintf(t.tool, sizeof(t.tool), "%s", t.c.self);
    char *slash = strrchr(t.tool, '/');
    if (slash)
        *slash = '\0';
    size_t tl = strlen(t.tool);
    snprintf(t.tool + tl, sizeof(t.tool) - tl, "/../scripts/redis_tool.py");
    if (access(t.tool, R_OK) < 0) {
        dp_error("cannot find %s (run from a checkout's build/distriproc)", t.tool);
        return 1;
    }
    if (dp_criu_find(t.c.criu, sizeof(t.c.criu), &err) < 0) {
        dp_error("%s", err.msg);
        return 1;
    }
    const char *need[] = {"redis-server", "redis-cli"};
    for (size_t i = 0; i < DP_ARRAY_LEN(need); i++) {
        char cmd[64];
        snprintf(cmd, sizeof(cmd), "command -v %s >/dev/null", need[i]);
        if (system(cmd) != 0) {
            dp_error("%s is missing: run make deps", need[i]);
            return 1;
        }
    }
    /* Memory first: say now which sizes cannot run here. */
    uint64_t avail = mem_available();
    for (int i = 0; i < t.nsizes; i++)
        if (t.size[i].bytes * 3 > avail) {
            char a[32], n[32];
            dp_format_bytes(avail, a, sizeof(a));
            dp_format_bytes(t.size[i].bytes * 3, n, sizeof(n));
            dp_warn("size %s needs about %s of free memory and %s is available now: it will be skipped "
                    "unless memory frees up", t.size[i].label, n, a);
        }
    t.bits = bits;
    int up = lab_setup(bits, &err);
    if (up < 0) {
        dp_error("cannot bring the lab up: %s", err.msg);
        return 1;
    }
    signal(SIGINT, on_int);
    signal(SIGTERM, on_int);
    t.started = time(NULL);
    dp_info("ttfr: sizes %s, %d repetitions, link %s, prefetch %s -> %s", t.sizes_text, t.repeat, t.bandwidth,
            t.c.prefetch, t.json_out);
    for (int i = 0; i < t.nsizes && !interrupted; i++) {
        run_size(&t, &t.size[i]);
        write_json(&t);
    }
    if (interrupted)
        dp_warn("interrupted: %s has what was measured so far", t.json_out);
    int rc = write_json(&t) == 0 && !interrupted ? 0 : 1;
    if (up == LAB_CREATED && lab_down(NULL, &err) < 0)
        dp_warn("lab down: %s", err.msg);
    /* Table. */
    printf("\ntime to first reply (median of %d; min..max), link %s\n", t.repeat, t.bandwidth);
    printf("%-6s %-17s %22s %22s %12s\n", "size", "system", "from restore (s)", "from freeze (s)", "bytes moved");
    for (int i = 0; i < t.nsizes; i++) {
        const struct sizeres *z = &t.size[i];
        if (z->skipped[0]) {
            printf("%-6s skipped: %s\n", z->label, z->skipped);
            continue;
        }
        for (int s = 0; s < NSYS; s++) {
            const struct sysres *r = &z->sys[s];
            if (!t.selected[s])
                continue;
            if (r->n == 0) {
                printf("%-6s %-17s failed: %s\n", z->label, systems[s]->name, r->error);
                continue;
            }
            double m1, a1, b1, m2, a2, b2, m3, a3, b3;
            summary(r, offsetof(struct ttfr_sample, from_restore), &m1, &a1, &b1);
            summary(r, offsetof(struct ttfr_sample, from_freeze), &m2, &a2, &b2);
            summary(r, offsetof(struct ttfr_sample, bytes), &m3, &a3, &b3);
            char bb[32];
            dp_format_bytes((uint64_t)m3, bb, sizeof(bb));
            printf("%-6s %-16s %7.3f (%6.3f..%6.3f) %7.3f (%6.3f..%6.3f) %12s%s\n", z->label, systems[s]->name, m1, a1,
                   b1, m2, a2, b2, bb, r->error[0] ? "  (some reps failed)" : "");
        }
    }
    return rc;
}
