/* lab: two network namespaces joined by a veth pair, optionally rate-capped.
 * See lab.h for the layout. */
#include "lab.h"

#include <arpa/inet.h>
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ifaddrs.h>
#include <inttypes.h>
#include <net/if.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <jansson.h>
#include <linux/nsfs.h>
#include <sys/ioctl.h>
#include <sys/mount.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#ifndef IFF_LOWER_UP
#define IFF_LOWER_UP 0x10000 /* linux/if.h; clashes with net/if.h */
#endif

struct lab_host lab_hosts[2] = {
    {"src", "dp-src", "dp-src0", "10.250.0.1"},
    {"dst", "dp-dst", "dp-dst0", "10.250.0.2"},
};
static char lab_prefix_buf[16], lab_netns[2][24], lab_ifnames[2][24];
static const char *lab_prefix = "dp";

int lab_set_name(const char *name, struct dp_err *err)
{
    if (strlen(name) == 0 || strlen(name) > 10 ||
        strspn(name, "abcdefghijklmnopqrstuvwxyz0123456789") != strlen(name)) {
        dp_err_set(err, "lab name '%s' must be 1-10 lowercase letters or digits", name);
        return -1;
    }
    snprintf(lab_prefix_buf, sizeof(lab_prefix_buf), "%s", name);
    lab_prefix = lab_prefix_buf;
    for (int i = 0; i < 2; i++) {
        snprintf(lab_netns[i], sizeof(lab_netns[i]), "%s-%s", name, lab_hosts[i].name);
        snprintf(lab_ifnames[i], sizeof(lab_ifnames[i]), "%s-%s0", name, lab_hosts[i].name);
        lab_hosts[i].netns = lab_netns[i];
        lab_hosts[i].ifname = lab_ifnames[i];
    }
    return 0;
}

/* Runs before main: DISTRIPROC_LAB=NAME renames the lab (see lab.h). A bad
 * name is refused loudly rather than silently falling back to the shared lab. */
__attribute__((constructor)) static void lab_name_from_env(void)
{
    const char *p = getenv("DISTRIPROC_LAB");
    struct dp_err err;
    if (!p || !*p || strcmp(p, "dp") == 0)
        return;
    if (lab_set_name(p, &err) < 0) {
        fprintf(stderr, "distriproc: DISTRIPROC_LAB: %s\n", err.msg);
        exit(2);
    }
}

const char *lab_name(void)
{
    return lab_prefix;
}

const struct lab_host *lab_host_find(const char *name)
{
    for (size_t i = 0; i < DP_ARRAY_LEN(lab_hosts); i++)
        if (strcmp(lab_hosts[i].name, name) == 0)
            return &lab_hosts[i];
    return NULL;
}

/* ---- pure helpers ---- */

int lab_parse_rate(const char *text, uint64_t *bits_per_s, struct dp_err *err)
{
    static const struct { const char *unit; double mult; } units[] = {
        {"bit", 1}, {"kbit", 1e3}, {"mbit", 1e6}, {"gbit", 1e9}, {"tbit", 1e12},
    };
    char *end;
    if (!text || !isdigit((unsigned char)text[0]))
        goto bad;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || !(v > 0))
        goto bad;
    for (size_t i = 0; i < DP_ARRAY_LEN(units); i++) {
        if (strcasecmp(end, units[i].unit) != 0)
            continue;
        double bits = v * units[i].mult;
        if (bits < 8000 || bits > 400e9) {
            dp_err_set(err, "rate '%s' is out of range (8kbit .. 400gbit)", text);
            return -1;
        }
        *bits_per_s = (uint64_t)(bits + 0.5);
        return 0;
    }
bad:
    dp_err_set(err, "invalid rate '%s': use a number with a bit unit, e.g. 1gbit, 100mbit, 500kbit",
               text ? text : "");
    return -1;
}

void lab_format_rate(uint64_t bits, char *buf, size_t len)
{
    static const struct { const char *unit; uint64_t mult; } units[] = {
        {"tbit", 1000000000000ULL}, {"gbit", 1000000000ULL}, {"mbit", 1000000ULL}, {"kbit", 1000ULL},
    };
    for (size_t i = 0; i < DP_ARRAY_LEN(units); i++) {
        if (bits >= units[i].mult && bits % units[i].mult == 0) {
            snprintf(buf, len, "%" PRIu64 "%s", bits / units[i].mult, units[i].unit);
            return;
        }
    }
    snprintf(buf, len, "%" PRIu64 "bit", bits);
}

/* tbf parameters. The veth itself moves data at memory speed, so tbf alone
 * decides the link's speed:
 * - burst: tokens the bucket may hold, i.e. how much can leave back-to-back at
 *   memory speed. It must hold at least one whole packet, and veth hands tbf
 *   GSO packets of up to 64 KiB (smaller buckets force tbf to split them, which
 *   costs CPU and caps throughput below the rate). It must also cover what the
 *   rate earns between two dequeues (timer slack ~1 ms), else the link runs
 *   below its rate. Beyond that, a bigger bucket only lets bursts exceed the
 *   rate, so: max(64 KiB, 1 ms of the rate) -- 125 KB at 1gbit.
 * - latency: the longest a packet may wait in tbf's queue (sets the queue
 *   limit). 10 ms lets TCP fill the link without drops at these rates (the
 *   emulated LAN's bandwidth-delay product is ~40 KB at 1gbit, 0.3 ms RTT)
 *   while bounding the bufferbloat a saturated link adds to page fetches. */
void lab_tbf_params(uint64_t bits_per_s, uint64_t *burst_bytes, uint32_t *latency_us)
{
    uint64_t per_ms = bits_per_s / 8 / 1000;
    *burst_bytes = per_ms > 65536 ? per_ms : 65536;
    *latency_us = 10000;
}

/* ---- running ip/tc ---- */

static const char *tool_path(const char *name)
{
    static char path[64];
    static const char *dirs[] = {"/usr/sbin", "/sbin", "/usr/bin", "/bin"};
    for (size_t i = 0; i < DP_ARRAY_LEN(dirs); i++) {
        snprintf(path, sizeof(path), "%s/%s", dirs[i], name);
        if (access(path, X_OK) == 0)
            return path;
    }
    return name; /* let execvp search PATH */
}

static int read_all(int fd, char *buf, size_t len)
{
    size_t n = 0;
    for (;;) {
        char tmp[512];
        ssize_t r = read(fd, tmp, sizeof(tmp));
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        for (ssize_t i = 0; i < r; i++)
            if (buf && n + 1 < len)
                buf[n++] = tmp[i];
    }
    if (buf && len)
        buf[n] = '\0';
    return (int)n;
}

/* Runs argv (argv[0] is "ip" or "tc"). Its stdout goes to out (if not NULL),
 * its stderr into err on failure. Returns the exit status, or -1. */
static int run_tool(const char *const argv[], char *out, size_t outlen, struct dp_err *err)
{
    int opipe[2], epipe[2], status;
    char etext[400] = "", cmd[256] = "";
    size_t n = 0;

    for (int i = 0; argv[i] && n < sizeof(cmd) - 1; i++)
        n += (size_t)snprintf(cmd + n, sizeof(cmd) - n, "%s%s", i ? " " : "", argv[i]);
    if (pipe2(opipe, O_CLOEXEC) < 0)
        goto sys;
    if (pipe2(epipe, O_CLOEXEC) < 0) {
        close(opipe[0]);
        close(opipe[1]);
        goto sys;
    }
    pid_t pid = fork();
    if (pid < 0) {
        close(opipe[0]); close(opipe[1]); close(epipe[0]); close(epipe[1]);
        goto sys;
    }
    if (pid == 0) {
        dup2(opipe[1], STDOUT_FILENO);
        dup2(epipe[1], STDERR_FILENO);
        execv(tool_path(argv[0]), (char *const *)argv);
        execvp(argv[0], (char *const *)argv);
        fprintf(stderr, "cannot run %s: %s (install iproute2: make deps)", argv[0], strerror(errno));
        _exit(127);
    }
    close(opipe[1]);
    close(epipe[1]);
    /* Outputs here are small (well below a pipe buffer), so reading one pipe
     * to its end before the other cannot deadlock. */
    read_all(opipe[0], out, outlen);
    read_all(epipe[0], etext, sizeof(etext));
    close(opipe[0]);
    close(epipe[0]);
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR)
            goto sys;
    int rc = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
    if (rc != 0) {
        size_t l = strlen(etext);
        while (l && (etext[l - 1] == '\n' || etext[l - 1] == ' '))
            etext[--l] = '\0';
        dp_err_set(err, "'%s' failed (exit %d): %s", cmd, rc, etext[0] ? etext : "no message");
    }
    return rc;
sys:
    dp_err_set(err, "cannot run '%s': %s", cmd, strerror(errno));
    return -1;
}

/* Other modules that wire namespaces to the lab (cnet) run ip the same way. */
int lab_run_tool(const char *const argv[], char *out, size_t outlen, struct dp_err *err)
{
    return run_tool(argv, out, outlen, err);
}

/* ---- state ---- */

static void netns_path(const struct lab_host *h, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%s", LAB_NETNS_DIR, h->netns);
}

/* A usable named netns is an nsfs bind mount: its inode differs from a plain
 * file left behind by an `ip netns add` that crashed half-way. */
static int netns_identity(const char *path, dev_t *dev, ino_t *ino)
{
    struct stat st;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return -1;
    int ok = fstat(fd, &st) == 0 && ioctl(fd, NS_GET_NSTYPE) == CLONE_NEWNET;
    close(fd);
    if (!ok)
        return -1;
    *dev = st.st_dev;
    *ino = st.st_ino;
    return 0;
}

int lab_netns_pids(const char *netns, pid_t *pids, int max)
{
    char path[128], nspath[64];
    dev_t dev;
    ino_t ino;
    int n = 0;

    snprintf(path, sizeof(path), "%s/%s", LAB_NETNS_DIR, netns);
    if (netns_identity(path, &dev, &ino) < 0)
        return -1;
    DIR *d = opendir("/proc");
    if (!d)
        return -1;
    struct dirent *e;
    pid_t self = getpid();
    while ((e = readdir(d)) != NULL && n < max) {
        if (!isdigit((unsigned char)e->d_name[0]))
            continue;
        pid_t pid = (pid_t)atoi(e->d_name);
        struct stat st;
        snprintf(nspath, sizeof(nspath), "/proc/%d/ns/net", (int)pid);
        /* Fails for zombies and for processes that just exited: not ours to kill. */
        if (pid == self || stat(nspath, &st) < 0)
            continue;
        if (st.st_dev == dev && st.st_ino == ino)
            pids[n++] = pid;
    }
    closedir(d);
    return n;
}

/* Runs fn inside the named netns and comes back to the caller's netns. */
static int in_netns(const char *path, void (*fn)(void *), void *arg)
{
    int self = open("/proc/thread-self/ns/net", O_RDONLY | O_CLOEXEC);
    int target = open(path, O_RDONLY | O_CLOEXEC);
    int rc = -1;
    if (self >= 0 && target >= 0 && setns(target, CLONE_NEWNET) == 0) {
        fn(arg);
        if (setns(self, CLONE_NEWNET) != 0)
            dp_die("cannot return to the original network namespace: %s", strerror(errno));
        rc = 0;
    }
    if (self >= 0)
        close(self);
    if (target >= 0)
        close(target);
    return rc;
}

struct iface_probe {
    const struct lab_host *host;
    struct lab_host_state *hs;
};

static void probe_ifaces(void *arg)
{
    struct iface_probe *p = arg;
    struct ifaddrs *ifa, *i;
    struct in_addr want;
    uint32_t mask = htonl(~((1u << (32 - LAB_PREFIX_LEN)) - 1));

    inet_pton(AF_INET, p->host->addr, &want);
    if (getifaddrs(&ifa) < 0)
        return;
    for (i = ifa; i; i = i->ifa_next) {
        int is_lab = strcmp(i->ifa_name, p->host->ifname) == 0;
        if (strcmp(i->ifa_name, "lo") == 0 && (i->ifa_flags & IFF_UP))
            p->hs->lo_up = 1;
        if (!is_lab)
            continue;
        p->hs->iface_exists = 1;
        if ((i->ifa_flags & IFF_UP) && (i->ifa_flags & IFF_LOWER_UP))
            p->hs->iface_up = 1;
        if (i->ifa_addr && i->ifa_addr->sa_family == AF_INET && i->ifa_netmask) {
            struct sockaddr_in *a = (struct sockaddr_in *)i->ifa_addr;
            struct sockaddr_in *m = (struct sockaddr_in *)i->ifa_netmask;
            if (a->sin_addr.s_addr == want.s_addr && m->sin_addr.s_addr == mask)
                p->hs->addr_ok = 1;
        }
    }
    freeifaddrs(ifa);
}

/* tbf rate from `tc -j qdisc show`: {"kind":"tbf",...,"options":{"rate":BYTES_PER_S,...}} */
static uint64_t probe_tbf(const struct lab_host *h)
{
    char out[2048];
    const char *argv[] = {"tc", "-n", h->netns, "-j", "qdisc", "show", "dev", h->ifname, NULL};
    if (run_tool(argv, out, sizeof(out), NULL) != 0)
        return 0;
    json_t *qdiscs = json_loads(out, 0, NULL), *q;
    uint64_t rate = 0;
    size_t i;
    json_array_foreach(qdiscs, i, q) {
        const char *kind = json_string_value(json_object_get(q, "kind"));
        json_t *r = json_object_get(json_object_get(q, "options"), "rate");
        if (kind && strcmp(kind, "tbf") == 0 && json_is_integer(r) && json_integer_value(r) > 0) {
            rate = (uint64_t)json_integer_value(r) * 8;
            break;
        }
    }
    json_decref(qdiscs);
    return rate;
}

int lab_probe(struct lab_state *st, struct dp_err *err)
{
    memset(st, 0, sizeof(*st));
    for (size_t i = 0; i < DP_ARRAY_LEN(lab_hosts); i++) {
        const struct lab_host *h = &lab_hosts[i];
        struct lab_host_state *hs = &st->host[i];
        char path[128];
        dev_t dev;
        ino_t ino;

        netns_path(h, path, sizeof(path));
        if (netns_identity(path, &dev, &ino) == 0) {
            struct iface_probe p = {h, hs};
            hs->netns_exists = 1;
            if (in_netns(path, probe_ifaces, &p) < 0) {
                dp_err_set(err, "cannot enter network namespace %s: %s", path, strerror(errno));
                return -1;
            }
            if (hs->iface_exists)
                hs->tbf_bits = probe_tbf(h);
            int n = lab_netns_pids(h->netns, hs->pids, LAB_MAX_PIDS);
            hs->npids = n > 0 ? n : 0;
        }
        if (if_nametoindex(h->ifname) != 0)
            st->stale_root_links++;
    }
    return 0;
}

int lab_state_complete(const struct lab_state *st)
{
    for (size_t i = 0; i < DP_ARRAY_LEN(lab_hosts); i++) {
        const struct lab_host_state *hs = &st->host[i];
        if (!hs->netns_exists || !hs->iface_exists || !hs->iface_up || !hs->addr_ok || !hs->lo_up)
            return 0;
    }
    return st->stale_root_links == 0;
}

int lab_state_empty(const struct lab_state *st)
{
    char path[128];
    for (size_t i = 0; i < DP_ARRAY_LEN(lab_hosts); i++) {
        netns_path(&lab_hosts[i], path, sizeof(path));
        if (st->host[i].netns_exists || access(path, F_OK) == 0)
            return 0;
    }
    return st->stale_root_links == 0;
}

/* ---- up / down ---- */

/* SIGKILL (not TERM: a stuck `criu restore --lazy-pages` ignores SIGTERM) until
 * no process is left in the namespace; bounded to about 5 s. */
static int kill_netns_procs(const struct lab_host *h, int *killed, struct dp_err *err)
{
    pid_t pids[LAB_MAX_PIDS];
    for (int round = 0; round < 100; round++) {
        int n = lab_netns_pids(h->netns, pids, LAB_MAX_PIDS);
        if (n <= 0)
            return 0;
        for (int i = 0; i < n; i++) {
            if (kill(pids[i], SIGKILL) == 0 && round == 0 && killed)
                (*killed)++;
        }
        usleep(50000);
    }
    int n = lab_netns_pids(h->netns, pids, LAB_MAX_PIDS);
    dp_err_set(err, "%d process(es) in %s (first: pid %d) survive SIGKILL; check 'cat /proc/%d/stack'",
               n, h->netns, n > 0 ? (int)pids[0] : 0, n > 0 ? (int)pids[0] : 0);
    return -1;
}

int lab_down(int *killed, struct dp_err *err)
{
    char path[128];
    int n = 0;
    struct lab_state st;

    if (killed)
        *killed = 0;
    for (size_t i = 0; i < DP_ARRAY_LEN(lab_hosts); i++) {
        if (kill_netns_procs(&lab_hosts[i], &n, err) < 0)
            return -1;
    }
    if (killed)
        *killed = n;
    for (size_t i = 0; i < DP_ARRAY_LEN(lab_hosts); i++) {
        const struct lab_host *h = &lab_hosts[i];
        netns_path(h, path, sizeof(path));
        if (access(path, F_OK) == 0) {
            const char *argv[] = {"ip", "netns", "delete", h->netns, NULL};
            if (run_tool(argv, NULL, 0, err) != 0) {
                /* A half-made entry may not be a mount: remove the file itself. */
                umount2(path, MNT_DETACH);
                if (unlink(path) < 0 && errno != ENOENT)
                    return -1;
            }
        }
        /* A veth end created in the root namespace by an interrupted run. */
        if (if_nametoindex(h->ifname) != 0) {
            const char *argv[] = {"ip", "link", "delete", h->ifname, NULL};
            if (run_tool(argv, NULL, 0, err) != 0 && if_nametoindex(h->ifname) != 0)
                return -1;
        }
    }
    if (lab_probe(&st, err) < 0)
        return -1;
    if (!lab_state_empty(&st)) {
        dp_err_set(err, "lab still partly exists after teardown; see 'distriproc lab status'");
        return -1;
    }
    return 0;
}

static int set_bandwidth(uint64_t bits, struct dp_err *err)
{
    for (size_t i = 0; i < DP_ARRAY_LEN(lab_hosts); i++) {
        const struct lab_host *h = &lab_hosts[i];
        if (bits == 0) {
            if (probe_tbf(h) == 0)
                continue;
            const char *argv[] = {"tc", "-n", h->netns, "qdisc", "del", "dev", h->ifname, "root", NULL};
            if (run_tool(argv, NULL, 0, err) != 0)
                return -1;
            continue;
        }
        char rate[32], burst[32], lat[32];
        uint64_t burst_bytes;
        uint32_t lat_us;
        lab_tbf_params(bits, &burst_bytes, &lat_us);
        snprintf(rate, sizeof(rate), "%" PRIu64 "bit", bits);
        snprintf(burst, sizeof(burst), "%" PRIu64, burst_bytes);
        snprintf(lat, sizeof(lat), "%" PRIu32 "us", lat_us);
        const char *argv[] = {"tc", "-n", h->netns, "qdisc", "replace", "dev", h->ifname, "root",
                              "tbf", "rate", rate, "burst", burst, "latency", lat, NULL};
        if (run_tool(argv, NULL, 0, err) != 0)
            return -1;
    }
    return 0;
}

static int create(struct dp_err *err)
{
    const struct lab_host *s = &lab_hosts[0], *d = &lab_hosts[1];
    for (size_t i = 0; i < DP_ARRAY_LEN(lab_hosts); i++) {
        const char *argv[] = {"ip", "netns", "add", lab_hosts[i].netns, NULL};
        if (run_tool(argv, NULL, 0, err) != 0)
            return -1;
    }
    /* Both ends are born inside their namespaces: never in the root one. */
    const char *veth[] = {"ip", "link", "add", "name", s->ifname, "netns", s->netns, "type", "veth",
                          "peer", "name", d->ifname, "netns", d->netns, NULL};
    if (run_tool(veth, NULL, 0, err) != 0)
        return -1;
    for (size_t i = 0; i < DP_ARRAY_LEN(lab_hosts); i++) {
        const struct lab_host *h = &lab_hosts[i];
        char cidr[32];
        snprintf(cidr, sizeof(cidr), "%s/%d", h->addr, LAB_PREFIX_LEN);
        const char *addr[] = {"ip", "-n", h->netns, "addr", "add", cidr, "dev", h->ifname, NULL};
        const char *lo[] = {"ip", "-n", h->netns, "link", "set", "lo", "up", NULL};
        const char *up[] = {"ip", "-n", h->netns, "link", "set", h->ifname, "up", NULL};
        if (run_tool(addr, NULL, 0, err) != 0 || run_tool(lo, NULL, 0, err) != 0 ||
            run_tool(up, NULL, 0, err) != 0)
            return -1;
    }
    return 0;
}

int lab_up(uint64_t bits, struct dp_err *err)
{
    struct lab_state st;
    int killed = 0;

    if (lab_probe(&st, err) < 0)
        return -1;
    if (lab_state_complete(&st)) {
        int same = 1;
        for (size_t i = 0; i < DP_ARRAY_LEN(lab_hosts); i++) {
            uint64_t have = st.host[i].tbf_bits;
            /* tc keeps bytes per second: compare at that precision. */
            if (have / 8 != bits / 8)
                same = 0;
        }
        if (same)
            return LAB_ALREADY_UP;
        if (set_bandwidth(bits, err) < 0)
            return -1;
        return LAB_BANDWIDTH_CHANGED;
    }
    if (!lab_state_empty(&st)) {
        dp_info("cleaning up the leftovers of an earlier lab");
        if (lab_down(&killed, err) < 0)
            return -1;
        if (killed)
            dp_info("killed %d leftover process(es) in the lab namespaces", killed);
    }
    if (create(err) < 0 || set_bandwidth(bits, err) < 0) {
        struct dp_err ignored;
        lab_down(NULL, &ignored); /* leave nothing half-made behind */
        return -1;
    }
    if (lab_probe(&st, err) < 0)
        return -1;
    if (!lab_state_complete(&st)) {
        dp_err_set(err, "lab was created but is not complete; see 'distriproc lab status'");
        return -1;
    }
    return LAB_CREATED;
}

int lab_enter(const struct lab_host *h, struct dp_err *err)
{
    char path[128];
    netns_path(h, path, sizeof(path));
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        if (errno == ENOENT)
            dp_err_set(err, "lab is not up (%s does not exist): run 'distriproc lab up'", path);
        else
            dp_err_set(err, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    if (setns(fd, CLONE_NEWNET) < 0) {
        int e = errno;
        close(fd);
        dp_err_set(err, "cannot enter network namespace %s: %s%s", path, strerror(e),
                   e == EPERM ? " (run as root)" : e == EINVAL ? " (half-made lab: run 'distriproc lab up')" : "");
        return -1;
    }
    close(fd);
    return 0;
}
