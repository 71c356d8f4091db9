/* checkpoint: `criu dump` of a process tree with the options DistriProc's
 * workloads need (or `runc checkpoint` of a container through our CRIU, with
 * the manifest of the container's rootfs beside the images), then a report of
 * what was dumped, read from the images. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <poll.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <dirent.h>
#include <sys/stat.h>
#include <unistd.h>

#include <jansson.h>

#include "commands.h"
#include "bundle.h"
#include "classify.h"
#include "criu.h"
#include "image.h"
#include "kdat.h"
#include "lab.h"
#include "lazyd.h"
#include "lazyfix.h"
#include "orch.h"
#include "rootfs.h"
#include "runc.h"
#include "runc_ck.h"
#include "store_redis.h"
#include "util.h"

#define DEFAULT_TIMEOUT_S 600.0
#define MAX_CRIU_OPTS 32

static void usage(FILE *out)
{
    fprintf(out,
            "usage: distriproc checkpoint --pid PID --images DIR [--host src|dst] [OPTIONS]\n"
            "       distriproc checkpoint --runc ID [--runc-root DIR] --images DIR [OPTIONS]\n"
            "\n"
            "Checkpoints the process tree rooted at PID with CRIU (criu dump) into DIR and\n"
            "reports what it dumped: tasks, total memory, lazy (private anonymous) memory\n"
            "that a lazy restore fetches on demand, and image bytes. By default the tree is\n"
            "stopped by the dump (CRIU kills it once its state is saved).\n"
            "\n"
            "Options:\n"
            "  --pid PID               root of the tree, as seen from this shell (or --runc);\n"
            "                          a workload is best a session leader in its own pid\n"
            "                          namespace (distriproc lab exec HOST --container)\n"
            "  --runc ID               checkpoint the runc container ID instead (runc checkpoint\n"
            "                          through our CRIU, run inside the network namespace the\n"
            "                          container joins by path, so that CRIU leaves that namespace\n"
            "                          alone). First records the files of its rootfs that\n"
            "                          its tasks map or have open (DIR/%s), which a\n"
            "                          restore checks against the destination's bundle\n"
            "  --runc-root DIR         runc's state directory (runc --root; default runc's own)\n"
            "  --images DIR            images directory (created; must be empty)\n"
            "  --host src|dst          run criu inside the lab host's network namespace\n"
            "                          (dp-src / dp-dst), where the tree's sockets live;\n"
            "                          without it criu runs in the current one\n"
            "  --netns NAME|PATH       the same for any network namespace (/run/netns/NAME)\n"
            "  --leave-running         keep the tree running after the dump\n"
            "  --shell-job             force --shell-job (default: only when the root is not a\n"
            "                          session leader or has a terminal on fd 0-2)\n"
            "  --no-shell-job          never pass --shell-job\n"
            "  --no-tcp-established    do not dump established TCP connections (default: dump them)\n"
            "  --file-validation M     how restore checks mapped files: buildid (default) or filesize\n"
            "  --timeout SECONDS       kill criu (SIGKILL) if the dump takes longer (default %.0f)\n"
            "  --criu-opt OPT          pass one more option to criu dump (repeatable)\n"
            "  --ignore-userfaultfd    checkpoint a tree that was itself restored lazily even\n"
            "                          when no DistriProc daemon can confirm that all of its\n"
            "                          memory is local (else refused: remote pages would be\n"
            "                          saved as zeros)\n"
            "  --classify SECONDS      before the dump, reset the tree's referenced bits\n"
            "                          (/proc/PID/clear_refs), let it run SECONDS, read Referenced\n"
            "                          per mapping (/proc/PID/smaps) and store the hot set beside\n"
            "                          the images: DIR/distriproc-hotset.bin (+ .json summary),\n"
            "                          tied to this checkpoint by its identity\n"
            "  --classify-threshold F  a mapping is hot when Referenced >= F x Rss (default 0.05)\n"
            "  --store redis://ADDR:PORT[,ADDR:PORT...]\n"
            "                          also put the checkpoint into a Redis Cluster (docs/store-redis.md):\n"
            "                          its lazy pages in 64 KiB extents spread over the hash slots, its\n"
            "                          skeleton, all under keys carrying its identity; prints the URL\n"
            "                          for 'restore --store' (redis://SEED/ID). With --host, uploads\n"
            "                          from that host's network namespace. rediss:// = TLS required\n"
            DP_STORE_CLI_HELP
            "  --json                  print the report as one JSON object on stdout\n"
            "  -h, --help              this help\n"
            "\n"
            "CRIU: $%s, else the checkout's .deps/bin/criu (installed by 'make deps').\n"
            "runc: $%s, else runc on PATH (>= %s, installed by 'make deps').\n"
            "criu's log: DIR/dump.log, runc's: DIR/runc.log (their last lines are shown if the\n"
            "dump fails).\n",
            DP_ROOTFS_FILE, DEFAULT_TIMEOUT_S, DP_CRIU_ENV, DP_RUNC_ENV, DP_RUNC_MIN_VERSION);
}

/* mkdir -p; then the directory must be empty so images of two dumps never mix. */
static int prepare_images_dir(const char *dir, struct dp_err *err)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof(path), "%s", dir) >= (int)sizeof(path)) {
        dp_err_set(err, "images directory path too long");
        return -1;
    }
    for (char *p = path + 1; *p; p++) {
        if (*p != '/')
            continue;
        *p = '\0';
        if (mkdir(path, 0755) < 0 && errno != EEXIST) {
            dp_err_set(err, "cannot create %s: %s", path, strerror(errno));
            return -1;
        }
        *p = '/';
    }
    if (mkdir(path, 0755) < 0 && errno != EEXIST) {
        dp_err_set(err, "cannot create images directory %s: %s", path, strerror(errno));
        return -1;
    }
    DIR *d = opendir(path);
    if (!d) {
        dp_err_set(err, "cannot open images directory %s: %s", path, strerror(errno));
        return -1;
    }
    struct dirent *e;
    int used = 0;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, ".."))
            used = 1;
    closedir(d);
    if (used) {
        dp_err_set(err, "images directory %s is not empty; remove it or pick a new one (images of two dumps must not mix)", path);
        return -1;
    }
    return 0;
}

/* Does one of fd 0-2 point at a terminal? (CRIU needs --shell-job for a tty
 * whose session lies outside the dumped tree.) */
static int has_tty_stdio(pid_t pid, char *which, size_t len)
{
    for (int fd = 0; fd <= 2; fd++) {
        char path[64], target[256];
        snprintf(path, sizeof(path), "/proc/%d/fd/%d", (int)pid, fd);
        ssize_t n = readlink(path, target, sizeof(target) - 1);
        if (n <= 0)
            continue;
        target[n] = '\0';
        if (strncmp(target, "/dev/pts/", 9) == 0 || strncmp(target, "/dev/tty", 8) == 0 ||
            strncmp(target, "/dev/console", 12) == 0) {
            snprintf(which, len, "fd %d is %s", fd, target);
            return 1;
        }
    }
    return 0;
}

/* A parent started with `unshare --kill-child` set a parent-death signal on the
 * root; CRIU restores it, so the restored tree would die when criu exits. */
static void warn_kill_child(pid_t pid)
{
    long ppid;
    if (dp_proc_stat_field(pid, 4, &ppid) < 0 || ppid <= 1)
        return;
    char path[64];
    snprintf(path, sizeof(path), "/proc/%ld/cmdline", ppid);
    uint8_t *data;
    size_t len;
    struct dp_err err;
    if (dp_read_file(path, &data, &len, &err) < 0)
        return;
    int found = 0;
    for (size_t off = 0; off < len; off += strlen((char *)data + off) + 1)
        if (strcmp((char *)data + off, "--kill-child") == 0 || strncmp((char *)data + off, "--kill-child=", 13) == 0)
            found = 1;
    free(data);
    if (found)
        dp_warn("pid %d was started by 'unshare --kill-child' (pid %ld): CRIU restores its parent-death "
                "signal, so a detached restore of this tree dies at once; start workloads without --kill-child",
                (int)pid, ppid);
}

/* A regular file the tree writes to must not change between dump and restore
 * (criu restore then fails: "File ... has bad size"). Warn for each one, in the
 * root and its descendants, before the dump rather than after. */
static void warn_written_files(pid_t pid, int depth)
{
    char path[128];
    snprintf(path, sizeof(path), "/proc/%d/fd", (int)pid);
    DIR *d = opendir(path);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (e->d_name[0] == '.')
            continue;
        char link[300], target[512], info[300];
        snprintf(link, sizeof(link), "/proc/%d/fd/%s", (int)pid, e->d_name);
        ssize_t n = readlink(link, target, sizeof(target) - 1);
        struct stat st;
        if (n <= 0 || target[0] != '/' || stat(link, &st) < 0 || !S_ISREG(st.st_mode))
            continue;
        target[n] = '\0';
        snprintf(info, sizeof(info), "/proc/%d/fdinfo/%s", (int)pid, e->d_name);
        FILE *f = fopen(info, "r");
        if (!f)
            continue;
        char line[128];
        unsigned long flags = 0;
        while (fgets(line, sizeof(line), f))
            if (sscanf(line, "flags: %lo", &flags) == 1)
                break;
        fclose(f);
        if ((flags & O_ACCMODE) != O_RDONLY)
            dp_warn("pid %d writes to %s (fd %s): if that file changes after the dump, criu restore "
                    "fails ('bad size'); give workloads /dev/null or a socket instead",
                    (int)pid, target, e->d_name);
    }
    closedir(d);
    if (depth >= 16)
        return;
    /* Children of every thread (the kernel lists them per thread). */
    snprintf(path, sizeof(path), "/proc/%d/task", (int)pid);
    DIR *t = opendir(path);
    if (!t)
        return;
    while ((e = readdir(t))) {
        if (e->d_name[0] == '.')
            continue;
        char cpath[300];
        snprintf(cpath, sizeof(cpath), "/proc/%d/task/%s/children", (int)pid, e->d_name);
        FILE *f = fopen(cpath, "r");
        if (!f)
            continue;
        long child;
        while (fscanf(f, "%ld", &child) == 1)
            warn_written_files((pid_t)child, depth + 1);
        fclose(f);
    }
    closedir(t);
}

/* Bytes of the images written so far (progress of a long dump). */
static uint64_t dir_bytes(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return 0;
    uint64_t total = 0;
    struct dirent *e;
    while ((e = readdir(d))) {
        struct stat st;
        if (fstatat(dirfd(d), e->d_name, &st, 0) == 0 && S_ISREG(st.st_mode))
            total += (uint64_t)st.st_size;
    }
    closedir(d);
    return total;
}

/* criu dump, with a progress line every few seconds while it writes images. */
static int run_dump(const struct dp_dump_opts *d, const char *netns, double timeout_s, struct dp_err *err)
{
    struct dp_criu_argv a;
    if (dp_criu_dump_args(d, &a, err) < 0)
        return -1;
    char log[PATH_MAX + 16];
    snprintf(log, sizeof(log), "%s/dump.log", d->images_dir);
    struct dp_criu_run_opts o = {.netns = netns, .timeout_s = timeout_s, .log_path = log};
    struct dp_criu_proc p;
    if (dp_criu_start(a.argv, &o, &p, err) < 0)
        return -1;
    uint64_t start = dp_now_ns(), next = start + 2000000000ULL;
    int status;
    while (dp_criu_poll(&p, &status)) {
        uint64_t now = dp_now_ns();
        if (p.deadline_ns && now >= p.deadline_ns)
            break; /* dp_criu_finish kills it and says so */
        if (now >= next) {
            char b[32];
            dp_format_bytes(dir_bytes(d->images_dir), b, sizeof(b));
            dp_info("dumping: %.0f s, %s of images written", (double)(now - start) / 1e9, b);
            next = now + 2000000000ULL;
        }
        if (p.pidfd >= 0) {
            struct pollfd pfd = {.fd = p.pidfd, .events = POLLIN};
            poll(&pfd, 1, 250); /* readable when criu exits */
        } else {
            usleep(20000);
        }
    }
    return dp_criu_finish(&p, err);
}

/* --classify: reset the referenced bits of the whole tree, let it run, then
 * read Referenced per mapping (lib/classify.h), all before criu freezes it. */
static int classify_sample(pid_t root, double seconds, struct dp_classify *out, struct dp_err *err)
{
    pid_t *pids;
    size_t n;
    if (dp_classify_tree(root, &pids, &n, err) < 0 || dp_classify_clear(pids, n, err) < 0)
        return -1;
    dp_info("classifying: referenced bits of %zu task(s) cleared; sampling after %.1f s", n, seconds);
    uint64_t t0 = dp_now_ns(), until = t0 + (uint64_t)(seconds * 1e9);
    for (uint64_t now = t0; now < until; now = dp_now_ns()) {
        uint64_t left = until - now;
        usleep(left > 200000000ull ? 200000 : (useconds_t)(left / 1000));
    }
    out->seconds = (double)(dp_now_ns() - t0) / 1e9;
    int rc = dp_classify_sample(pids, n, out, err);
    out->seconds = rc == 0 ? (double)(dp_now_ns() - t0) / 1e9 : 0;
    free(pids);
    return rc;
}

/* ---- a tree that was itself restored lazily ------------------------------------- */

/* Does pid have memory registered with a userfaultfd for missing pages
 * ("um" in /proc/PID/smaps VmFlags), i.e. was it restored lazily? */
static int has_uffd_memory(pid_t pid)
{
    char path[64], line[512];
    snprintf(path, sizeof(path), "/proc/%d/smaps", (int)pid);
    FILE *f = fopen(path, "r");
    if (!f)
        return 0;
    int found = 0;
    while (!found && fgets(line, sizeof(line), f))
        if (strncmp(line, "VmFlags:", 8) == 0 && strstr(line, " um"))
            found = 1;
    fclose(f);
    return found;
}

/* The workdir of the DistriProc daemon serving the tree rooted at root: a
 * `distriproc restore|lazy-pages --workdir W` process whose W/restored.pid
 * names root. 0 with workdir set, -1 if none is found. */
static int find_serving_workdir(pid_t root, char *workdir, size_t len)
{
    DIR *d = opendir("/proc");
    if (!d)
        return -1;
    struct dirent *e;
    int rc = -1;
    while (rc < 0 && (e = readdir(d))) {
        if (e->d_name[0] < '1' || e->d_name[0] > '9')
            continue;
        char path[300];
        snprintf(path, sizeof(path), "/proc/%s/cmdline", e->d_name);
        uint8_t *data;
        size_t n;
        struct dp_err err;
        if (dp_read_file(path, &data, &n, &err) < 0)
            continue;
        const char *args[64];
        size_t argc = 0;
        for (size_t off = 0; off < n && argc < 64; off += strlen((char *)data + off) + 1)
            args[argc++] = (char *)data + off;
        if (n && data[n - 1] == '\0' && argc >= 2 &&
            (strcmp(args[1], "restore") == 0 || strcmp(args[1], "lazy-pages") == 0))
            for (size_t i = 2; i + 1 < argc && rc < 0; i++) {
                if (strcmp(args[i], "--workdir") != 0)
                    continue;
                char pidfile[PATH_MAX + 32];
                snprintf(pidfile, sizeof(pidfile), "%s/%s", args[i + 1], DP_RESTORED_PID_NAME);
                if (dp_read_pid_file(pidfile) == (int)root && (size_t)snprintf(workdir, len, "%s", args[i + 1]) < len)
                    rc = 0;
            }
        free(data);
    }
    closedir(d);
    return rc;
}

/* CRIU saves only the pages a task has: in a tree restored lazily, the pages
 * still remote (never fetched, or evicted under a budget) would be saved as
 * nothing, and read back as zeros after the next restore. Refuse while any
 * are remote (asking the daemon), or when no daemon can say. */
static int refuse_remote_memory(pid_t root, int ignore)
{
    pid_t *pids;
    size_t n;
    struct dp_err err = {{0}};
    if (dp_classify_tree(root, &pids, &n, &err) < 0)
        return 0; /* the dump reports a tree it cannot read */
    int lazy = 0;
    for (size_t i = 0; i < n && !lazy; i++)
        lazy = has_uffd_memory(pids[i]);
    free(pids);
    if (!lazy || ignore)
        return 0;
    char wd[PATH_MAX];
    if (find_serving_workdir(root, wd, sizeof(wd)) < 0) {
        dp_error("pid %d was restored lazily (its memory is registered with a userfaultfd) and no DistriProc "
                 "daemon that serves it was found: pages still remote would be saved as zeros. Checkpoint it "
                 "once all its memory is local, passing --ignore-userfaultfd, or checkpoint the source's images",
                 (int)root);
        return -1;
    }
    char *stats = dp_lazyd_control(wd, "stats", &err);
    double remote = -1;
    if (!stats || dp_json_number(stats, "total", "remote_bytes", &remote) < 0)
        remote = -1;
    free(stats);
    if (remote == 0)
        return 0;
    char b[32] = "an unknown amount";
    if (remote > 0)
        dp_format_bytes((uint64_t)remote, b, sizeof(b));
    dp_error("pid %d was restored lazily and %s of its memory is still remote (daemon workdir %s): a checkpoint now "
             "would save those pages as zeros. Let the daemon fetch the rest first (restore it with "
             "--background-fetch RATE, without --budget), until 'distriproc stats --workdir %s' shows nothing "
             "remote, then checkpoint",
             (int)root, b, wd, wd);
    return -1;
}

/* ---- runc containers ---------------------------------------------------------- */

/* runc checkpoint through our CRIU; criu's log and work files in the images. */
static int run_runc_checkpoint(const struct dp_runc_ck *c, const char *id, const char *dir, int leave_running,
                               int tcp, int shell_job, double timeout_s, struct dp_err *err)
{
    struct dp_runc_checkpoint_opts o = {.id = id, .image_path = dir, .work_path = dir,
                                        .leave_running = leave_running, .tcp_established = tcp,
                                        .shell_job = shell_job};
    struct dp_criu_argv a;
    if (dp_runc_checkpoint_args(&c->r, &o, &a, err) < 0)
        return -1;
    char log[PATH_MAX + 16], dump_log[PATH_MAX + 16];
    snprintf(log, sizeof(log), "%s/runc.log", dir);
    snprintf(dump_log, sizeof(dump_log), "%s/dump.log", dir);
    dp_kdat_prime_once(c->r.criu);
    /* a network namespace joined by path: from inside it (see runc.h); one
     * of the container's own is dumped with it, from outside */
    char netns[64];
    snprintf(netns, sizeof(netns), "/proc/%d/ns/net", c->state.pid);
    if (dp_runc_run(a.argv, c->netns_by_path ? netns : NULL, log, timeout_s, err) == 0)
        return 0;
    if (access(dump_log, F_OK) == 0) {
        dp_error("criu's log (%s):", dump_log);
        dp_criu_print_log_tail(dump_log, DP_CRIU_LOG_TAIL);
    }
    return -1;
}

/* --store: the checkpoint's pages and skeleton into the Redis Cluster (from
 * the lab host's network namespace with --host); *out: its JSON summary. */
static int put_in_store(const struct dp_store_cli *sc, const char *host, const char *dir, json_t **out)
{
    struct dp_err err = {{0}};
    if (host && lab_enter(lab_host_find(host), &err) < 0) {
        dp_error("--store: %s", err.msg);
        return -1;
    }
    struct dp_store *st = dp_store_open_cli(sc, &err);
    struct dp_store_put_stats ps;
    uint64_t t0 = dp_now_ns();
    if (!st || dp_store_put_checkpoint(st, dir, &ps, &err) < 0) {
        dp_error("the dump succeeded (images in %s), but putting it into the store %s failed: %s", dir, sc->url,
                 err.msg);
        dp_store_close(st);
        return -1;
    }
    double secs = (double)(dp_now_ns() - t0) / 1e9;
    /* The URL restore takes: the seeds given, then /ID. */
    char url[512];
    const char *slash = strchr(strstr(sc->url, "://") + 3, '/');
    int ul = slash ? (int)(slash - sc->url) : (int)strlen(sc->url);
    snprintf(url, sizeof(url), "%.*s/%s", ul, sc->url, st->id);
    *out = json_pack("{s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:i, s:f}", "url", url, "id", st->id, "extents",
                     (json_int_t)ps.extents, "pages", (json_int_t)ps.pages, "bytes", (json_int_t)ps.bytes,
                     "skeleton_bytes", (json_int_t)ps.skel_bytes, "hotset_bytes", (json_int_t)ps.hotset_bytes,
                     "masters", ps.masters, "upload_seconds", secs);
    dp_store_close(st);
    return *out ? 0 : -1;
}

int cmd_checkpoint(int argc, char **argv)
{
    enum { O_RUNC = 100, O_RUNC_ROOT, O_IGNORE_UFFD, O_STORE = 300, O_STORE_CA, O_STORE_CERT, O_STORE_KEY, O_STORE_PASS,
           O_STORE_USER };
    enum { O_PID = 1, O_IMAGES, O_HOST, O_NETNS, O_LEAVE, O_SHELL, O_NOSHELL, O_NOTCP, O_FV,
           O_TIMEOUT, O_CRIUOPT, O_JSON, O_CLASSIFY, O_CLASSIFY_T };
    static const struct option longopts[] = {
        {"pid", required_argument, NULL, O_PID},
        {"images", required_argument, NULL, O_IMAGES},
        {"host", required_argument, NULL, O_HOST},
        {"netns", required_argument, NULL, O_NETNS},
        {"leave-running", no_argument, NULL, O_LEAVE},
        {"shell-job", no_argument, NULL, O_SHELL},
        {"no-shell-job", no_argument, NULL, O_NOSHELL},
        {"no-tcp-established", no_argument, NULL, O_NOTCP},
        {"file-validation", required_argument, NULL, O_FV},
        {"timeout", required_argument, NULL, O_TIMEOUT},
        {"criu-opt", required_argument, NULL, O_CRIUOPT},
        {"json", no_argument, NULL, O_JSON},
        {"classify", required_argument, NULL, O_CLASSIFY},
        {"classify-threshold", required_argument, NULL, O_CLASSIFY_T},
        {"runc", required_argument, NULL, O_RUNC},
        {"runc-root", required_argument, NULL, O_RUNC_ROOT},
        {"ignore-userfaultfd", no_argument, NULL, O_IGNORE_UFFD},
        {"store", required_argument, NULL, O_STORE},
        {"store-ca", required_argument, NULL, O_STORE_CA},
        {"store-cert", required_argument, NULL, O_STORE_CERT},
        {"store-key", required_argument, NULL, O_STORE_KEY},
        {"store-pass-file", required_argument, NULL, O_STORE_PASS},
        {"store-user", required_argument, NULL, O_STORE_USER},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    long pid = 0;
    const char *runc_id = NULL, *runc_root = NULL;
    int ignore_uffd = 0;
    struct dp_store_cli store = {0};
    const char *images = NULL, *host = NULL, *netns = NULL;
    int leave_running = 0, shell_job = -1, tcp = 1, json = 0;
    enum dp_file_validation fv = DP_FILE_VALIDATION_BUILDID;
    double timeout_s = DEFAULT_TIMEOUT_S;
    double classify_s = 0, classify_t = 0.05;
    const char *extra[MAX_CRIU_OPTS + 1] = {NULL};
    size_t nextra = 0;
    char *end;

    optind = 1;
    int c;
    while ((c = getopt_long(argc, argv, "h", longopts, NULL)) != -1) {
        switch (c) {
        case O_PID:
            errno = 0;
            pid = strtol(optarg, &end, 10);
            if (errno || *end || pid <= 0 || pid > INT_MAX) {
                dp_error("--pid '%s' is not a process id", optarg);
                return 2;
            }
            break;
        case O_IMAGES: images = optarg; break;
        case O_HOST:
            if (strcmp(optarg, "src") && strcmp(optarg, "dst")) {
                dp_error("--host must be src or dst (the lab's hosts), not '%s'; use --netns for another namespace", optarg);
                return 2;
            }
            host = optarg;
            break;
        case O_NETNS: netns = optarg; break;
        case O_LEAVE: leave_running = 1; break;
        case O_SHELL: shell_job = 1; break;
        case O_NOSHELL: shell_job = 0; break;
        case O_NOTCP: tcp = 0; break;
        case O_FV:
            if (dp_file_validation_parse(optarg, &fv) < 0) {
                dp_error("--file-validation must be buildid or filesize, not '%s'", optarg);
                return 2;
            }
            break;
        case O_TIMEOUT:
            errno = 0;
            timeout_s = strtod(optarg, &end);
            if (errno || *end || !(timeout_s > 0)) {
                dp_error("--timeout '%s' is not a positive number of seconds", optarg);
                return 2;
            }
            break;
        case O_CRIUOPT:
            if (nextra == MAX_CRIU_OPTS) {
                dp_error("at most %d --criu-opt", MAX_CRIU_OPTS);
                return 2;
            }
            extra[nextra++] = optarg;
            break;
        case O_JSON: json = 1; break;
        case O_CLASSIFY:
            errno = 0;
            classify_s = strtod(optarg, &end);
            if (errno || *end || !(classify_s > 0 && classify_s <= 3600)) {
                dp_error("--classify '%s' is not a number of seconds in (0, 3600]", optarg);
                return 2;
            }
            break;
        case O_CLASSIFY_T:
            errno = 0;
            classify_t = strtod(optarg, &end);
            if (errno || *end || !(classify_t >= 0 && classify_t <= 1)) {
                dp_error("--classify-threshold '%s' is not a fraction in [0, 1]", optarg);
                return 2;
            }
            break;
        case O_RUNC: runc_id = optarg; break;
        case O_RUNC_ROOT: runc_root = optarg; break;
        case O_IGNORE_UFFD: ignore_uffd = 1; break;
        case O_STORE: store.url = optarg; break;
        case O_STORE_CA: store.ca = optarg; break;
        case O_STORE_CERT: store.cert = optarg; break;
        case O_STORE_KEY: store.key = optarg; break;
        case O_STORE_PASS: store.pass_file = optarg; break;
        case O_STORE_USER: store.user = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (optind < argc) {
        dp_error("unexpected argument '%s'", argv[optind]);
        usage(stderr);
        return 2;
    }
    if (runc_id && (pid || host || netns)) {
        dp_error("--runc checkpoints a container by its ID: no --pid, --host or --netns (runc knows its "
                 "tasks and namespaces)");
        return 2;
    }
    if (runc_id && nextra) {
        dp_error("--criu-opt does not reach CRIU through runc; give CRIU options to a runc container through a "
                 "CRIU configuration file named by its org.criu.config annotation (docs/containers.md)");
        return 2;
    }
    if (runc_root && !runc_id) {
        dp_error("--runc-root goes with --runc ID");
        return 2;
    }
    if ((!pid && !runc_id) || !images) {
        dp_error("--pid (or --runc ID) and --images are required");
        usage(stderr);
        return 2;
    }
    if (host && netns) {
        dp_error("give --host or --netns, not both");
        return 2;
    }
    char host_netns[32];
    if (host) {
        const struct lab_host *lh = lab_host_find(host);
        if (lh)
            snprintf(host_netns, sizeof(host_netns), "%s", lh->netns);
        else
            snprintf(host_netns, sizeof(host_netns), "dp-%s", host);
        netns = host_netns;
    }
    if (geteuid() != 0) {
        dp_error("criu dump needs root; run as root (sudo)");
        return 1;
    }
    struct dp_runc_ck rck;
    memset(&rck, 0, sizeof(rck));
    if (runc_id) {
        if (dp_runc_ck_find(runc_id, runc_root, &rck) < 0)
            return 1;
        pid = rck.state.pid;
        if (shell_job < 0)
            shell_job = 0; /* runc gives a container no terminal here; --shell-job forces it */
    }
    char proc[64];
    snprintf(proc, sizeof(proc), "/proc/%ld", pid);
    if (access(proc, F_OK) != 0) {
        dp_error("no process %ld (as seen from this pid namespace); pass the pid the host sees, e.g. from 'distriproc lab exec'", pid);
        return 1;
    }

    /* --shell-job only when the tree needs it. */
    char why[300] = "";
    if (shell_job < 0) {
        long sid;
        shell_job = 0;
        if (dp_proc_stat_field((pid_t)pid, 6, &sid) == 0 && sid != pid) {
            shell_job = 1;
            snprintf(why, sizeof(why), "pid %ld is not a session leader (session %ld)", pid, sid);
        } else if (has_tty_stdio((pid_t)pid, why, sizeof(why))) {
            shell_job = 1;
        }
        if (shell_job)
            dp_info("using --shell-job: %s; restore it with --shell-job too", why);
    }
    if (refuse_remote_memory((pid_t)pid, ignore_uffd) < 0)
        return 1;
    if (!runc_id)
        warn_kill_child((pid_t)pid);
    warn_written_files((pid_t)pid, 0);

    struct dp_err err = {{0}};
    if (prepare_images_dir(images, &err) < 0) {
        dp_error("%s", err.msg);
        return 1;
    }
    char dir[PATH_MAX];
    if (!realpath(images, dir)) {
        dp_error("cannot resolve %s: %s", images, strerror(errno));
        return 1;
    }
    struct dp_criu_version ver;
    if (dp_criu_get_version(&ver, &err) < 0) {
        dp_error("%s", err.msg);
        return 1;
    }

    struct dp_dump_opts d = {
        .pid = (pid_t)pid,
        .images_dir = dir,
        .leave_running = leave_running,
        .tcp_established = tcp,
        .shell_job = shell_job,
        .file_validation = fv,
        .extra = extra,
    };
    struct dp_classify sample = {0};
    if (classify_s > 0 && classify_sample((pid_t)pid, classify_s, &sample, &err) < 0) {
        dp_error("%s", err.msg);
        return 1;
    }
    if (runc_id && dp_runc_ck_manifest(&rck, dir) < 0) {
        dp_classify_free(&sample);
        return 1;
    }
    if (runc_id)
        dp_info("checkpointing container %s (pid %ld) with runc %d.%d.%d into %s (criu %d.%d.%d)", runc_id, pid,
                rck.r.version.major, rck.r.version.minor, rck.r.version.sublevel, dir, ver.major, ver.minor,
                ver.sublevel);
    else
        dp_info("dumping the tree of pid %ld%s%s into %s (criu %d.%d.%d)", pid, netns ? " in netns " : "",
                netns ? netns : "", dir, ver.major, ver.minor, ver.sublevel);
    uint64_t t0 = dp_now_ns();
    if (runc_id ? run_runc_checkpoint(&rck, runc_id, dir, leave_running, tcp, shell_job, timeout_s, &err) < 0
                : run_dump(&d, netns, timeout_s, &err) < 0) {
        dp_error("%s", err.msg);
        dp_classify_free(&sample);
        return 1;
    }
    double secs = (double)(dp_now_ns() - t0) / 1e9;

    /* criu's is_stack() may have written the whole dump non-lazy (a thread's
     * stack pointer on a page boundary): mark it lazy as it would have been */
    uint64_t relazied = 0;
    if (dp_lazyfix_dir(dir, &relazied, &err) < 0) {
        /* the images are as criu wrote them: correct, at worst eager */
        dp_warn("could not check the pagemaps for memory criu wrote eager: %s; if it did, a restore of %s copies "
                "that memory before the process runs (retry with `distriproc images --images %s --mark-lazy`)",
                err.msg, dir, dir);
        err.msg[0] = '\0';
    } else if (relazied) {
        char b[32];
        dp_format_bytes(relazied * DP_PAGE_SIZE, b, sizeof(b));
        dp_info("criu wrote %s of lazy memory as eager (a thread's stack pointer sat on a page boundary: "
                "criu/mem.c is_stack()); marked lazy again (lib/lazyfix.h)", b);
    }

    struct dp_checkpoint *cp = NULL;
    if (dp_checkpoint_open(dir, &cp, &err) < 0) {
        dp_error("criu dump succeeded, but its images in %s cannot be read: %s", dir, err.msg);
        dp_classify_free(&sample);
        return 1;
    }
    char *hot_json = NULL;
    uint64_t hot_pages = 0;
    if (classify_s > 0) {
        int rc = dp_classify_store(&sample, cp, classify_t, &hot_json, &hot_pages, &err);
        dp_classify_free(&sample);
        if (rc < 0) {
            dp_error("the dump succeeded, but its hot set could not be stored: %s", err.msg);
            dp_checkpoint_close(cp);
            return 1;
        }
    }
    const char *fv_name = fv == DP_FILE_VALIDATION_FILESIZE ? "filesize" : "buildid";
    json_t *store_j = NULL;
    if (store.url && put_in_store(&store, host, dir, &store_j) < 0) {
        free(hot_json);
        dp_checkpoint_close(cp);
        dp_rootfs_free(&rck.manifest);
        return 1;
    }
    if (json) {
        json_t *o = json_pack("{s:I, s:s?, s:s?, s:s}", "pid", (json_int_t)pid, "host", host, "netns", netns,
                              "images", dir);
        if (o && runc_id) {
            char hex[2 * DP_ROOTFS_HASH + 1];
            dp_rootfs_hex(rck.manifest.digest, hex);
            json_object_update_new(o, json_pack("{s:s, s:s, s:s, s:I}", "runc_id", runc_id, "runc_bundle",
                                            rck.state.bundle, "rootfs_digest", hex, "rootfs_files",
                                            (json_int_t)rck.manifest.n));
        }
        char criu_ver[48];
        snprintf(criu_ver, sizeof(criu_ver), "%d.%d.%d", ver.major, ver.minor, ver.sublevel);
        json_t *rest = json_pack("{s:I, s:I, s:I, s:I, s:I, s:f, s:b, s:b, s:b, s:s, s:s}", "tasks",
                                 (json_int_t)cp->nr_tasks, "total_memory_bytes", (json_int_t)cp->total_vma_bytes,
                                 "lazy_bytes", (json_int_t)cp->lazy_bytes, "marked_lazy_bytes",
                                 (json_int_t)(relazied * DP_PAGE_SIZE), "image_bytes",
                                 (json_int_t)cp->image_bytes, "dump_seconds", secs, "left_running", leave_running,
                                 "shell_job", shell_job, "tcp_established", tcp, "file_validation", fv_name,
                                 "criu_version", criu_ver);
        json_object_update_new(o, rest);
        /* the hot set classify stored, as the JSON object it already is */
        if (hot_json)
            json_object_set_new(o, "hotset", json_loads(hot_json, 0, NULL));
        if (store_j)
            json_object_set(o, "store", store_j);
        if (!o || json_dumpf(o, stdout, JSON_COMPACT | JSON_REAL_PRECISION(9)) < 0)
            dp_error("cannot print the result as JSON (a path or name that is not UTF-8?)");
        else
            putchar('\n');
        json_decref(o);
    } else {
        char total[32], lazy[32], img[32];
        dp_format_bytes(cp->total_vma_bytes, total, sizeof(total));
        dp_format_bytes(cp->lazy_bytes, lazy, sizeof(lazy));
        dp_format_bytes(cp->image_bytes, img, sizeof(img));
        printf("checkpointed pid %ld%s%s into %s in %.2f s\n", pid, host ? " on host " : "", host ? host : "",
               dir, secs);
        if (runc_id) {
            char hex[2 * DP_ROOTFS_HASH + 1];
            dp_rootfs_hex(rck.manifest.digest, hex);
            printf("  container:    %s (bundle %s)\n", runc_id, rck.state.bundle);
            printf("  rootfs:       %zu files mapped or open, digest %.16s (in %s)\n", rck.manifest.n, hex,
                   DP_ROOTFS_FILE);
        }
        printf("  tasks:        %zu\n", cp->nr_tasks);
        printf("  memory:       %s (all mappings)\n", total);
        printf("  lazy memory:  %s (private anonymous; a lazy restore fetches it on demand)\n", lazy);
        printf("  image bytes:  %s\n", img);
        printf("  process:      %s\n", leave_running ? "left running" : "stopped (criu killed it after the dump)");
        if (runc_id)
            printf("  runc %d.%d.%d:   checkpoint%s%s%s %s (criu %d.%d.%d%s)\n", rck.r.version.major,
                   rck.r.version.minor, rck.r.version.sublevel, tcp ? " --tcp-established" : "",
                   shell_job ? " --shell-job" : "", leave_running ? " --leave-running" : "", runc_id, ver.major,
                   ver.minor, ver.sublevel,
                   rck.netns_by_path ? ", in the network namespace the container joins" : "");
        else
            printf("  criu %d.%d.%d:   --tree %ld%s%s --file-validation %s\n", ver.major, ver.minor, ver.sublevel,
                   pid, tcp ? " --tcp-established" : "", shell_job ? " --shell-job" : "", fv_name);
        if (classify_s > 0) {
            char hb[32];
            dp_format_bytes(hot_pages * DP_PAGE_SIZE, hb, sizeof(hb));
            printf("  hot set:      %s after %.1f s of Referenced sampling (%s/%s, summary in %s)\n", hb,
                   classify_s, dir, DP_HOTSET_FILE, DP_HOTSET_JSON);
        }
        if (store_j)
            printf("  store:        %lld pages in %lld extents, skeleton %lld bytes; restore with --store %s\n",
                   (long long)json_integer_value(json_object_get(store_j, "pages")),
                   (long long)json_integer_value(json_object_get(store_j, "extents")),
                   (long long)json_integer_value(json_object_get(store_j, "skeleton_bytes")),
                   json_string_value(json_object_get(store_j, "url")));
    }
    json_decref(store_j);
    free(hot_json);
    dp_checkpoint_close(cp);
    dp_rootfs_free(&rck.manifest);
    return 0;
}
