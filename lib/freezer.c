/* freezer: the source tree in a v1 freezer cgroup; see freezer.h. */
#include "freezer.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* Writes text to CG/file. */
static int cg_write(const char *cg, const char *file, const char *text, struct dp_err *err)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/%s", cg, file);
    int fd = open(path, O_WRONLY | O_CLOEXEC);
    if (fd < 0 || dp_write_full(fd, text, strlen(text)) < 0) {
        dp_err_set(err, "cannot write '%s' to %s: %s", text, path, strerror(errno));
        if (fd >= 0)
            close(fd);
        return -1;
    }
    close(fd);
    return 0;
}

int dp_freezer_create(const char *name, char *path, size_t len, struct dp_err *err)
{
    struct stat st;
    if (stat(DP_FREEZER_ROOT "/freezer.state", &st) == 0 || stat(DP_FREEZER_ROOT "/tasks", &st) < 0) {
        dp_err_set(err, "no cgroup-v1 freezer hierarchy at %s (cgroup v2 only?); memory mode needs it to keep "
                   "the source frozen; migrate with --from images instead", DP_FREEZER_ROOT);
        return -1;
    }
    if (mkdir(DP_FREEZER_ROOT "/distriproc", 0755) < 0 && errno != EEXIST) {
        dp_err_set(err, "cannot create %s/distriproc: %s", DP_FREEZER_ROOT, strerror(errno));
        return -1;
    }
    if ((size_t)snprintf(path, len, "%s/distriproc/%s", DP_FREEZER_ROOT, name) >= len) {
        dp_err_set(err, "cgroup name too long: %s", name);
        return -1;
    }
    if (mkdir(path, 0755) < 0 && errno != EEXIST) {
        dp_err_set(err, "cannot create the freezer cgroup %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

int dp_freezer_parse_proc_cgroup(const char *text, size_t len, char *out, size_t outlen)
{
    for (const char *line = text, *end = text + len; line < end;) {
        const char *nl = memchr(line, '\n', (size_t)(end - line));
        const char *le = nl ? nl : end;
        const char *c1 = memchr(line, ':', (size_t)(le - line));
        const char *c2 = c1 ? memchr(c1 + 1, ':', (size_t)(le - c1 - 1)) : NULL;
        /* the controller list may name several ("freezer" alone here) */
        if (c2 && c2 - c1 - 1 == 7 && memcmp(c1 + 1, "freezer", 7) == 0) {
            size_t pl = (size_t)(le - c2 - 1);
            if (pl == 0 || pl >= outlen || c2[1] != '/')
                return -1;
            memcpy(out, c2 + 1, pl);
            out[pl] = '\0';
            return strstr(out, "/../") || strstr(out, "/./") ? -1 : 0;
        }
        line = le + 1;
    }
    return -1;
}

int dp_freezer_cgroup_of(pid_t pid, char *path, size_t len, struct dp_err *err)
{
    char proc[64], text[4096], cg[1024];
    snprintf(proc, sizeof(proc), "/proc/%d/cgroup", (int)pid);
    ssize_t n = dp_read_small(proc, text, sizeof(text));
    if (n < 0 || dp_freezer_parse_proc_cgroup(text, (size_t)n, cg, sizeof(cg)) < 0) {
        dp_err_set(err, "pid %d has no cgroup-v1 freezer cgroup (%s); memory mode needs one to keep it frozen; "
                   "migrate with --from images instead", (int)pid, n < 0 ? strerror(errno) : "none in /proc/PID/cgroup");
        return -1;
    }
    if (strcmp(cg, "/") == 0) {
        dp_err_set(err, "pid %d is in the root freezer cgroup, which cannot be frozen (a container runc made "
                   "with cgroup v2?); migrate with --from images instead", (int)pid);
        return -1;
    }
    if ((size_t)snprintf(path, len, "%s%s", DP_FREEZER_ROOT, cg) >= len) {
        dp_err_set(err, "the freezer cgroup path of pid %d is too long", (int)pid);
        return -1;
    }
    return 0;
}

/* Appends the children of every thread of pid (/proc/PID/task/T/children). */
static int children(pid_t pid, pid_t **v, size_t *n, size_t *cap)
{
    char dir[64];
    snprintf(dir, sizeof(dir), "/proc/%d/task", (int)pid);
    DIR *d = opendir(dir);
    if (!d)
        return 0; /* gone */
    struct dirent *de;
    while ((de = readdir(d))) {
        if (de->d_name[0] == '.')
            continue;
        char path[384];
        snprintf(path, sizeof(path), "%s/%s/children", dir, de->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        int c;
        while (fscanf(f, "%d", &c) == 1) {
            if (*n == *cap) {
                size_t nc = *cap ? *cap * 2 : 64;
                pid_t *nv = realloc(*v, nc * sizeof(*nv));
                if (!nv) {
                    fclose(f);
                    closedir(d);
                    return -1;
                }
                *v = nv;
                *cap = nc;
            }
            (*v)[(*n)++] = c;
        }
        fclose(f);
    }
    closedir(d);
    return 0;
}

int dp_freezer_add_tree(const char *cg, pid_t root, struct dp_err *err)
{
    size_t last = 0;
    for (int pass = 0; pass < 20; pass++) {
        pid_t *v = malloc(64 * sizeof(*v));
        size_t n = 0, cap = 64;
        if (!v) {
            dp_err_set(err, "out of memory");
            return -1;
        }
        v[n++] = root;
        for (size_t i = 0; i < n; i++)
            if (children(v[i], &v, &n, &cap) < 0) {
                free(v);
                dp_err_set(err, "out of memory listing the tree of %d", (int)root);
                return -1;
            }
        for (size_t i = 0; i < n; i++) {
            char t[24];
            snprintf(t, sizeof(t), "%d", (int)v[i]);
            struct dp_err e;
            if (cg_write(cg, "cgroup.procs", t, &e) < 0 && i == 0) {
                free(v);
                dp_err_set(err, "%s", e.msg);
                return -1;
            }
        }
        free(v);
        if (pass > 0 && n == last)
            return 0;
        last = n;
    }
    dp_err_set(err, "the tree of %d keeps changing (forking); cannot put all of it into %s", (int)root, cg);
    return -1;
}

int dp_freezer_is_frozen(const char *cg)
{
    char path[512], buf[32] = "";
    snprintf(path, sizeof(path), "%s/freezer.state", cg);
    if (dp_read_small(path, buf, sizeof(buf)) < 0)
        return -1;
    return strncmp(buf, "FROZEN", 6) == 0;
}

int dp_freezer_set(const char *cg, int frozen, double timeout_s, struct dp_err *err)
{
    if (cg_write(cg, "freezer.state", frozen ? "FROZEN" : "THAWED", err) < 0)
        return -1;
    uint64_t until = dp_now_ns() + (uint64_t)(timeout_s * 1e9);
    for (;;) {
        int f = dp_freezer_is_frozen(cg);
        if (f < 0) {
            dp_err_set(err, "the freezer cgroup %s vanished", cg);
            return -1;
        }
        if (f == frozen)
            return 0;
        if (dp_now_ns() > until) {
            dp_err_set(err, "%s did not become %s within %.0f s", cg, frozen ? "FROZEN" : "THAWED", timeout_s);
            return -1;
        }
        if (frozen) /* v1: FREEZING until every task stopped; writing again retries */
            cg_write(cg, "freezer.state", "FROZEN", err);
        usleep(2000);
    }
}

int dp_freezer_pids(const char *cg, pid_t **pids, size_t *n, struct dp_err *err)
{
    char path[512];
    snprintf(path, sizeof(path), "%s/cgroup.procs", cg);
    FILE *f = fopen(path, "r");
    *pids = NULL;
    *n = 0;
    if (!f) {
        dp_err_set(err, "cannot read %s: %s", path, strerror(errno));
        return -1;
    }
    size_t cap = 0;
    int p;
    while (fscanf(f, "%d", &p) == 1) {
        if (*n == cap) {
            cap = cap ? cap * 2 : 16;
            pid_t *nv = realloc(*pids, cap * sizeof(*nv));
            if (!nv) {
                fclose(f);
                free(*pids);
                *pids = NULL;
                dp_err_set(err, "out of memory");
                return -1;
            }
            *pids = nv;
        }
        (*pids)[(*n)++] = p;
    }
    fclose(f);
    return 0;
}

int dp_freezer_kill_all(const char *cg)
{
    pid_t *p;
    size_t n;
    struct dp_err e;
    if (dp_freezer_pids(cg, &p, &n, &e) < 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        kill(p[i], SIGKILL);
    free(p);
    return (int)n;
}

int dp_freezer_remove(const char *cg, double timeout_s, struct dp_err *err)
{
    uint64_t until = dp_now_ns() + (uint64_t)(timeout_s * 1e9);
    while (rmdir(cg) < 0) {
        if (errno == ENOENT)
            return 0;
        if (errno != EBUSY || dp_now_ns() > until) {
            dp_err_set(err, "cannot remove the freezer cgroup %s: %s", cg, strerror(errno));
            return -1;
        }
        usleep(5000);
    }
    return 0;
}

int dp_freezer_leave(const char *cg, struct dp_err *err)
{
    pid_t *p;
    size_t n;
    if (dp_freezer_pids(cg, &p, &n, err) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        char t[24];
        snprintf(t, sizeof(t), "%d", (int)p[i]);
        struct dp_err e;
        cg_write(DP_FREEZER_ROOT, "cgroup.procs", t, &e);
    }
    free(p);
    return dp_freezer_remove(cg, 5, err);
}
