/* cgpurge: the cgroups a failed `runc restore` leaves behind; see cgpurge.h. */
#include "cgpurge.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- paths */

/* runc's cgroupfs driver (libcontainer/specconv): an empty cgroupsPath
 * names the container's cgroup after its id under the root; a relative one
 * is taken from the root too. A "slice:prefix:name" path belongs to the
 * systemd driver, whose units systemd itself removes. */
int dp_cgpurge_path(const char *cgroups_path, const char *id, char *out, size_t len, struct dp_err *err)
{
    const char *p = cgroups_path && *cgroups_path ? cgroups_path : id;
    if (!p || !*p) {
        dp_err_set(err, "no container id and no cgroupsPath");
        return -1;
    }
    if (strchr(p, ':')) {
        dp_err_set(err, "cgroupsPath '%s' is systemd-style (slice:prefix:name): its cgroups are systemd's", p);
        return -1;
    }
    int n = snprintf(out, len, "%s%s", p[0] == '/' ? "" : "/", p);
    if (n < 0 || (size_t)n >= len) {
        dp_err_set(err, "cgroupsPath '%s' is too long", p);
        return -1;
    }
    /* Collapse repeated and trailing slashes; refuse ".." so that a purge
     * can never climb out of the container's own cgroup. */
    size_t w = 0;
    for (size_t r = 0; out[r]; r++)
        if (!(out[r] == '/' && w > 0 && out[w - 1] == '/'))
            out[w++] = out[r];
    while (w > 1 && out[w - 1] == '/')
        w--;
    out[w] = 0;
    if (w <= 1) {
        dp_err_set(err, "cgroupsPath '%s' names the root cgroup", p);
        return -1;
    }
    for (const char *c = out; (c = strstr(c, "/..")) != NULL; c += 3)
        if (c[3] == '/' || c[3] == 0) {
            dp_err_set(err, "cgroupsPath '%s' has a '..' component", p);
            return -1;
        }
    return 0;
}

/* ------------------------------------------------------------ prepare */

/* A hierarchy's mount is a directory holding cgroup.procs. */
static int is_hierarchy(const char *dir)
{
    char path[1300];
    if (snprintf(path, sizeof(path), "%s/cgroup.procs", dir) >= (int)sizeof(path))
        return 0;
    return access(path, F_OK) == 0;
}

/* Adds ROOTDIR/REL to the list when it does not exist yet. */
static int note_dir(struct dp_cgpurge *p, const char *hier, struct dp_err *err)
{
    char d[sizeof(p->dirs[0])];
    if (snprintf(d, sizeof(d), "%s%s", hier, p->rel) >= (int)sizeof(d)) {
        dp_err_set(err, "cgroup path %s%s is too long", hier, p->rel);
        return -1;
    }
    struct stat st;
    if (lstat(d, &st) == 0)
        return 0; /* there before us: not ours to remove */
    if (p->n == DP_CGPURGE_MAX) {
        dp_err_set(err, "more than %d cgroup hierarchies", DP_CGPURGE_MAX);
        return -1;
    }
    memcpy(p->dirs[p->n++], d, sizeof(d));
    return 0;
}

int dp_cgpurge_prepare(struct dp_cgpurge *p, const char *root, const char *rel, struct dp_err *err)
{
    memset(p, 0, sizeof(*p));
    if (snprintf(p->rel, sizeof(p->rel), "%s", rel) >= (int)sizeof(p->rel)) {
        dp_err_set(err, "cgroup path %s is too long", rel);
        return -1;
    }
    if (is_hierarchy(root)) /* cgroup v2 only: the root is the one hierarchy */
        return note_dir(p, root, err);
    DIR *dir = opendir(root);
    if (!dir) {
        dp_err_set(err, "cannot list %s: %s", root, strerror(errno));
        return -1;
    }
    struct dirent *e;
    int rc = 0;
    while (rc == 0 && (e = readdir(dir)) != NULL) {
        if (e->d_name[0] == '.')
            continue;
        char hier[1100];
        if (snprintf(hier, sizeof(hier), "%s/%s", root, e->d_name) >= (int)sizeof(hier))
            continue;
        struct stat st;
        /* cpu,cpuacct style links name a hierarchy twice: count it once */
        if (lstat(hier, &st) < 0 || !S_ISDIR(st.st_mode) || !is_hierarchy(hier))
            continue;
        rc = note_dir(p, hier, err);
    }
    closedir(dir);
    return rc;
}

/* ---------------------------------------------------------------- purge */

/* Lets frozen tasks run into their SIGKILL: v1 freezer.state, v2 cgroup.freeze. */
static void thaw(const char *cg)
{
    static const struct {
        const char *file, *text;
    } knobs[] = {{"freezer.state", "THAWED"}, {"cgroup.freeze", "0"}};
    for (size_t i = 0; i < sizeof(knobs) / sizeof(knobs[0]); i++) {
        char path[1300];
        snprintf(path, sizeof(path), "%s/%s", cg, knobs[i].file);
        int fd = open(path, O_WRONLY | O_CLOEXEC);
        if (fd < 0)
            continue;
        if (dp_write_full(fd, knobs[i].text, strlen(knobs[i].text)) < 0) {
            /* nothing to do: the kill below still reaches tasks that run */
        }
        close(fd);
    }
}

/* The tasks signalled so far: one task sits in every hierarchy, and the
 * report counts tasks, not directories. */
struct killed_set {
    pid_t pid[256];
    int n, more;
};

/* Records pid once; beyond the table it is counted once per sighting. */
static void note_killed(struct killed_set *k, pid_t pid)
{
    for (int i = 0; i < k->n; i++)
        if (k->pid[i] == pid)
            return;
    if (k->n < (int)(sizeof(k->pid) / sizeof(k->pid[0])))
        k->pid[k->n++] = pid;
    else
        k->more++;
}

/* One pass over cg and its sub-cgroups, deepest first: SIGKILL to every
 * task, then rmdir. Returns how many directories are still there; *stuck
 * gets a pid still inside one of them. */
static int purge_tree(const char *cg, int depth, struct killed_set *killed, pid_t *stuck)
{
    if (depth > 16) /* CRIU restores the image's nesting; nothing is deeper */
        return 1;
    int left = 0;
    DIR *dir = opendir(cg);
    if (!dir)
        return errno == ENOENT ? 0 : 1;
    thaw(cg);
    struct dirent *e;
    while ((e = readdir(dir)) != NULL) {
        if (e->d_name[0] == '.' || e->d_type != DT_DIR)
            continue;
        char sub[1300];
        if (snprintf(sub, sizeof(sub), "%s/%s", cg, e->d_name) >= (int)sizeof(sub)) {
            left++;
            continue;
        }
        left += purge_tree(sub, depth + 1, killed, stuck);
    }
    closedir(dir);
    char procs[1300];
    snprintf(procs, sizeof(procs), "%s/cgroup.procs", cg);
    FILE *f = fopen(procs, "r");
    int pid;
    while (f && fscanf(f, "%d", &pid) == 1) {
        if (pid > 0 && kill(pid, SIGKILL) == 0) {
            note_killed(killed, pid);
            *stuck = pid;
        }
    }
    if (f)
        fclose(f);
    if (rmdir(cg) < 0 && errno != ENOENT)
        left++;
    return left;
}

/* "state S wchan W" of pid for the error that names it. */
static void describe(pid_t pid, char *out, size_t len)
{
    char path[64], stat[512] = "", wchan[128] = "?";
    snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
    ssize_t n = dp_read_small(path, stat, sizeof(stat));
    const char *rp = n > 0 ? strrchr(stat, ')') : NULL;
    snprintf(path, sizeof(path), "/proc/%d/wchan", (int)pid);
    if (dp_read_small(path, wchan, sizeof(wchan)) <= 0)
        snprintf(wchan, sizeof(wchan), "?");
    snprintf(out, len, "state %c, wchan %s", rp && rp[1] == ' ' ? rp[2] : '?', wchan);
}

int dp_cgpurge_run(struct dp_cgpurge *p, double timeout_s, int *killed, struct dp_err *err)
{
    uint64_t until = dp_now_ns() + (uint64_t)(timeout_s * 1e9);
    struct killed_set k = {.n = 0};
    for (;;) {
        int left = 0;
        pid_t stuck = 0;
        for (size_t i = 0; i < p->n; i++)
            left += purge_tree(p->dirs[i], 0, &k, &stuck);
        int signalled = k.n + k.more;
        if (left == 0) {
            if (killed)
                *killed = signalled;
            return 0;
        }
        if (dp_now_ns() > until) {
            char why[200] = "no task left: a sub-cgroup or a busy controller";
            if (stuck > 0) {
                char d[160];
                describe(stuck, d, sizeof(d));
                snprintf(why, sizeof(why), "pid %d is still in it after SIGKILL (%s)", (int)stuck, d);
            }
            dp_err_set(err, "%d of the new container's cgroups (%s under each hierarchy) are still there after "
                       "%.0f s: %s; remove them with rmdir once it has ended", left, p->rel, timeout_s, why);
            if (killed)
                *killed = signalled;
            return -1;
        }
        usleep(20000);
    }
}
