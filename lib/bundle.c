/* bundle: OCI bundle config.json, written and read back (see bundle.h). */
#include "bundle.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "json.h"

/* ---- writing ----------------------------------------------------------------- */

/* Capabilities of the container's processes: Docker's default set, enough for
 * services that start as root and drop to their own user (setuid, chown). */
static const char *const caps[] = {
    "CAP_CHOWN", "CAP_DAC_OVERRIDE", "CAP_FSETID", "CAP_FOWNER", "CAP_MKNOD", "CAP_NET_RAW", "CAP_SETGID",
    "CAP_SETUID", "CAP_SETFCAP", "CAP_SETPCAP", "CAP_NET_BIND_SERVICE", "CAP_SYS_CHROOT", "CAP_KILL",
    "CAP_AUDIT_WRITE",
};

static const char *const masked[] = {
    "/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats", "/proc/timer_list",
    "/proc/timer_stats", "/proc/sched_debug", "/sys/firmware", "/proc/scsi",
};
static const char *const readonly_paths[] = {
    "/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys", "/proc/sysrq-trigger",
};

static void out_str_array(struct dp_json_out *o, const char *const *v, size_t n)
{
    dp_json_out_raw(o, "[");
    for (size_t i = 0; i < n; i++) {
        if (i)
            dp_json_out_raw(o, ", ");
        dp_json_out_str(o, v[i]);
    }
    dp_json_out_raw(o, "]");
}

static size_t null_len(const char *const *v)
{
    size_t n = 0;
    while (v && v[n])
        n++;
    return n;
}

/* One mount entry; options is a comma-separated list. */
static void out_mount(struct dp_json_out *o, const char *dest, const char *type, const char *source,
                      const char *options)
{
    dp_json_out_raw(o, ",\n    {\"destination\": ");
    dp_json_out_str(o, dest);
    dp_json_out_raw(o, ", \"type\": ");
    dp_json_out_str(o, type);
    dp_json_out_raw(o, ", \"source\": ");
    dp_json_out_str(o, source);
    dp_json_out_raw(o, ", \"options\": [");
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", options);
    int first = 1;
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (!first)
            dp_json_out_raw(o, ", ");
        dp_json_out_str(o, t);
        first = 0;
    }
    dp_json_out_raw(o, "]}");
}

static void out_idmaps(struct dp_json_out *o, const char *name, const struct dp_bundle_idmap *m, size_t n)
{
    dp_json_out_fmt(o, ",\n    \"%s\": [", name);
    for (size_t i = 0; i < n; i++)
        dp_json_out_fmt(o, "%s{\"containerID\": %u, \"hostID\": %u, \"size\": %u}", i ? ", " : "",
                        m[i].container_id, m[i].host_id, m[i].size);
    dp_json_out_raw(o, "]");
}

/* Absolute, no "..", no empty or "." component: a mount target runc accepts
 * and our path resolution can match by prefix. */
static int clean_abs_path(const char *p)
{
    if (!p || p[0] != '/' || strlen(p) >= 1024)
        return 0;
    for (const char *s = p; *s;) {
        while (*s == '/')
            s++;
        const char *e = strchrnul(s, '/');
        size_t n = (size_t)(e - s);
        if ((n == 1 && s[0] == '.') || (n == 2 && s[0] == '.' && s[1] == '.'))
            return 0;
        s = e;
    }
    return 1;
}

static int check_spec(const struct dp_bundle_spec *s, struct dp_err *err)
{
    if (!s->rootfs || !*s->rootfs) {
        dp_err_set(err, "a bundle needs a rootfs directory");
        return -1;
    }
    if (null_len(s->args) == 0) {
        dp_err_set(err, "a bundle needs the command its container runs (process.args)");
        return -1;
    }
    if (s->cwd && !clean_abs_path(s->cwd)) {
        dp_err_set(err, "the working directory '%s' must be an absolute path inside the container", s->cwd);
        return -1;
    }
    if (s->nbinds > DP_BUNDLE_MAX_BINDS) {
        dp_err_set(err, "at most %d bind mounts", DP_BUNDLE_MAX_BINDS);
        return -1;
    }
    for (size_t i = 0; i < s->nbinds; i++) {
        if (!clean_abs_path(s->binds[i].dest) || !clean_abs_path(s->binds[i].source)) {
            dp_err_set(err, "bind mount %s -> %s: both paths must be absolute and without '.' or '..'",
                       s->binds[i].source ? s->binds[i].source : "?", s->binds[i].dest ? s->binds[i].dest : "?");
            return -1;
        }
        if (strcmp(s->binds[i].dest, "/") == 0) {
            dp_err_set(err, "bind mount onto '/': give the directory as the rootfs instead");
            return -1;
        }
    }
    if ((s->nuid_maps > 0) != (s->ngid_maps > 0) || s->nuid_maps > DP_BUNDLE_MAX_IDMAPS ||
        s->ngid_maps > DP_BUNDLE_MAX_IDMAPS) {
        dp_err_set(err, "a user namespace needs both uid and gid mappings (1 to %d of each)", DP_BUNDLE_MAX_IDMAPS);
        return -1;
    }
    for (size_t i = 0; i < s->nuid_maps + s->ngid_maps; i++) {
        const struct dp_bundle_idmap *m = i < s->nuid_maps ? &s->uid_maps[i] : &s->gid_maps[i - s->nuid_maps];
        if (m->size == 0 || m->container_id + (uint64_t)m->size > UINT32_MAX ||
            m->host_id + (uint64_t)m->size > UINT32_MAX) {
            dp_err_set(err, "id mapping %u:%u:%u is empty or overflows 32 bits", m->container_id, m->host_id,
                       m->size);
            return -1;
        }
    }
    if (s->netns_path && s->netns_path[0] != '/') {
        dp_err_set(err, "the network namespace '%s' must be given by absolute path (e.g. /run/netns/NAME)",
                   s->netns_path);
        return -1;
    }
    return 0;
}

int dp_bundle_config_json(const struct dp_bundle_spec *s, char **out, struct dp_err *err)
{
    *out = NULL;
    if (check_spec(s, err) < 0)
        return -1;
    int userns = s->nuid_maps > 0;
    struct dp_json_out o = {0};
    dp_json_out_raw(&o, "{\n  \"ociVersion\": \"1.0.2\",\n  \"process\": {\n    \"terminal\": false,\n");
    dp_json_out_fmt(&o, "    \"user\": {\"uid\": %u, \"gid\": %u},\n    \"args\": ", s->uid, s->gid);
    out_str_array(&o, s->args, null_len(s->args));
    dp_json_out_raw(&o, ",\n    \"env\": [\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"");
    for (size_t i = 0; i < null_len(s->env); i++) {
        dp_json_out_raw(&o, ", ");
        dp_json_out_str(&o, s->env[i]);
    }
    dp_json_out_raw(&o, "],\n    \"cwd\": ");
    dp_json_out_str(&o, s->cwd ? s->cwd : "/");
    dp_json_out_raw(&o, ",\n    \"capabilities\": {");
    const char *sets[] = {"bounding", "effective", "permitted"};
    for (size_t i = 0; i < DP_ARRAY_LEN(sets); i++) {
        dp_json_out_fmt(&o, "%s\"%s\": ", i ? ", " : "", sets[i]);
        out_str_array(&o, caps, DP_ARRAY_LEN(caps));
    }
    /* No rlimits: raising one needs CAP_SYS_RESOURCE, which root may lack;
     * the container inherits runc's. */
    dp_json_out_raw(&o, "},\n    \"noNewPrivileges\": true\n  },\n  \"root\": {\"path\": ");
    dp_json_out_str(&o, s->rootfs);
    dp_json_out_fmt(&o, ", \"readonly\": %s},\n  \"hostname\": ", s->rootfs_readonly ? "true" : "false");
    dp_json_out_str(&o, s->hostname ? s->hostname : "distriproc");
    dp_json_out_raw(&o, ",\n  \"mounts\": [\n    {\"destination\": \"/proc\", \"type\": \"proc\", \"source\": \"proc\"}");
    out_mount(&o, "/dev", "tmpfs", "tmpfs", "nosuid,strictatime,mode=755,size=65536k");
    /* gid=5 (tty) exists only when mapped: left out in a user namespace */
    out_mount(&o, "/dev/pts", "devpts", "devpts",
              userns ? "nosuid,noexec,newinstance,ptmxmode=0666,mode=0620"
                     : "nosuid,noexec,newinstance,ptmxmode=0666,mode=0620,gid=5");
    out_mount(&o, "/dev/shm", "tmpfs", "shm", "nosuid,noexec,nodev,mode=1777,size=65536k");
    out_mount(&o, "/dev/mqueue", "mqueue", "mqueue", "nosuid,noexec,nodev");
    /* sysfs can be mounted only by the owner of the network namespace: in a
     * user namespace joined to a host-owned one, /sys is a read-only bind */
    if (userns)
        out_mount(&o, "/sys", "none", "/sys", "bind,nosuid,noexec,nodev,ro");
    else
        out_mount(&o, "/sys", "sysfs", "sysfs", "nosuid,noexec,nodev,ro");
    if (s->tmp_tmpfs)
        out_mount(&o, "/tmp", "tmpfs", "tmpfs", "nosuid,nodev,mode=1777");
    for (size_t i = 0; i < s->nbinds; i++)
        out_mount(&o, s->binds[i].dest, "bind", s->binds[i].source,
                  s->binds[i].readonly ? "bind,ro,nosuid,nodev" : "bind,nosuid,nodev");
    dp_json_out_raw(&o, "\n  ],\n  \"linux\": {\n    \"namespaces\": [{\"type\": \"pid\"}, {\"type\": \"ipc\"}, "
                        "{\"type\": \"uts\"}, {\"type\": \"mount\"}");
    if (userns)
        dp_json_out_raw(&o, ", {\"type\": \"user\"}");
    dp_json_out_raw(&o, ", {\"type\": \"network\"");
    if (s->netns_path) {
        dp_json_out_raw(&o, ", \"path\": ");
        dp_json_out_str(&o, s->netns_path);
    }
    dp_json_out_raw(&o, "}]");
    if (userns) {
        out_idmaps(&o, "uidMappings", s->uid_maps, s->nuid_maps);
        out_idmaps(&o, "gidMappings", s->gid_maps, s->ngid_maps);
    }
    dp_json_out_raw(&o, ",\n    \"maskedPaths\": ");
    out_str_array(&o, masked, DP_ARRAY_LEN(masked));
    dp_json_out_raw(&o, ",\n    \"readonlyPaths\": ");
    out_str_array(&o, readonly_paths, DP_ARRAY_LEN(readonly_paths));
    dp_json_out_raw(&o, "\n  }\n}\n");
    if (o.oom) {
        free(o.buf);
        dp_err_set(err, "out of memory building config.json");
        return -1;
    }
    *out = o.buf;
    return 0;
}

int dp_bundle_write(const char *dir, const struct dp_bundle_spec *spec, struct dp_err *err)
{
    char *text;
    if (dp_bundle_config_json(spec, &text, err) < 0)
        return -1;
    char path[PATH_MAX], tmp[PATH_MAX + 8];
    if (snprintf(path, sizeof(path), "%s/config.json", dir) >= (int)sizeof(path)) {
        free(text);
        dp_err_set(err, "bundle path too long");
        return -1;
    }
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    int rc = -1;
    if (fd < 0) {
        dp_err_set(err, "cannot create %s: %s", tmp, strerror(errno));
    } else if (dp_write_full(fd, text, strlen(text)) < 0 || fsync(fd) < 0) {
        dp_err_set(err, "cannot write %s: %s", tmp, strerror(errno));
    } else if (close(fd) < 0 || (fd = -1, rename(tmp, path) < 0)) {
        dp_err_set(err, "cannot write %s: %s", path, strerror(errno));
    } else {
        rc = 0;
    }
    if (fd >= 0)
        close(fd);
    if (rc < 0)
        unlink(tmp);
    free(text);
    return rc;
}

/* ---- reading ----------------------------------------------------------------- */

static int copy_str(char *dst, size_t len, const char *src, const char *what, struct dp_err *err)
{
    if (strlen(src) >= len) {
        dp_err_set(err, "config.json: %s is too long", what);
        return -1;
    }
    memcpy(dst, src, strlen(src) + 1);
    return 0;
}

int dp_bundle_parse(const char *dir, const char *text, size_t len, struct dp_bundle_info *b, struct dp_err *err)
{
    memset(b, 0, sizeof(*b));
    struct dp_json *root;
    struct dp_err jerr;
    if (dp_json_parse(text, len, &root, &jerr) < 0) {
        dp_err_set(err, "%s/config.json: %s", dir, jerr.msg);
        return -1;
    }
    int rc = -1;
    const struct dp_json *jroot = dp_json_get(root, "root");
    const char *rpath = dp_json_get_str(jroot, "path");
    if (copy_str(b->dir, sizeof(b->dir), dir, "the bundle path", err) < 0)
        goto out;
    if (!rpath || !*rpath) {
        dp_err_set(err, "%s/config.json has no root.path (the container's root filesystem)", dir);
        goto out;
    }
    if (rpath[0] == '/') {
        if (copy_str(b->rootfs, sizeof(b->rootfs), rpath, "root.path", err) < 0)
            goto out;
    } else if (snprintf(b->rootfs, sizeof(b->rootfs), "%s/%s", dir, rpath) >= (int)sizeof(b->rootfs)) {
        dp_err_set(err, "config.json: root.path is too long");
        goto out;
    }
    const struct dp_json *linux_ = dp_json_get(root, "linux");
    const struct dp_json *ns = dp_json_get(linux_, "namespaces");
    if (ns && ns->type == DP_JSON_ARRAY) {
        for (const struct dp_json *n = ns->child; n; n = n->next) {
            const char *type = dp_json_get_str(n, "type"), *path = dp_json_get_str(n, "path");
            if (type && strcmp(type, "network") == 0 && path &&
                copy_str(b->netns_path, sizeof(b->netns_path), path, "the network namespace path", err) < 0)
                goto out;
            if (type && strcmp(type, "user") == 0)
                b->userns = 1;
        }
    }
    const struct dp_json *mounts = dp_json_get(root, "mounts");
    if (mounts && mounts->type == DP_JSON_ARRAY && mounts->len) {
        b->mounts = calloc(mounts->len, sizeof(*b->mounts));
        if (!b->mounts) {
            dp_err_set(err, "out of memory");
            goto out;
        }
        for (const struct dp_json *m = mounts->child; m; m = m->next) {
            const char *dest = dp_json_get_str(m, "destination"), *src = dp_json_get_str(m, "source");
            const char *type = dp_json_get_str(m, "type");
            if (!dest || dest[0] != '/') {
                dp_err_set(err, "%s/config.json: a mount without an absolute destination", dir);
                goto out;
            }
            struct dp_bundle_mount *bm = &b->mounts[b->nmounts++];
            if (copy_str(bm->dest, sizeof(bm->dest), dest, "a mount destination", err) < 0 ||
                copy_str(bm->source, sizeof(bm->source), src ? src : "", "a mount source", err) < 0)
                goto out;
            bm->bind = type && strcmp(type, "bind") == 0;
            const struct dp_json *opts = dp_json_get(m, "options");
            for (const struct dp_json *o = opts ? opts->child : NULL; o; o = o->next)
                if (o->type == DP_JSON_STRING && (!strcmp(o->str, "bind") || !strcmp(o->str, "rbind")))
                    bm->bind = 1;
            if (bm->bind && bm->source[0] != '/') {
                dp_err_set(err, "%s/config.json: bind mount on %s has no absolute source", dir, dest);
                goto out;
            }
        }
    }
    rc = 0;
out:
    dp_json_free(root);
    if (rc < 0)
        dp_bundle_info_free(b);
    return rc;
}

int dp_bundle_load(const char *dir, struct dp_bundle_info *b, struct dp_err *err)
{
    char abs[PATH_MAX], path[PATH_MAX + 16];
    memset(b, 0, sizeof(*b));
    if (!realpath(dir, abs)) {
        dp_err_set(err, "bundle %s: %s; give the directory holding config.json and the rootfs "
                        "(make one with 'distriproc bundle')", dir, strerror(errno));
        return -1;
    }
    snprintf(path, sizeof(path), "%s/config.json", abs);
    uint8_t *data;
    size_t len;
    struct dp_err rerr;
    if (dp_read_file(path, &data, &len, &rerr) < 0) {
        dp_err_set(err, "bundle %s has no readable config.json (%s); an OCI bundle is a directory with "
                        "config.json and a rootfs: make one with 'distriproc bundle'", abs, rerr.msg);
        return -1;
    }
    int rc = dp_bundle_parse(abs, (const char *)data, len, b, err);
    free(data);
    return rc;
}

void dp_bundle_info_free(struct dp_bundle_info *b)
{
    free(b->mounts);
    b->mounts = NULL;
    b->nmounts = 0;
}

/* Does mount destination dest cover path p (equal, or a directory prefix)? */
static size_t covers(const char *dest, const char *p)
{
    size_t n = strlen(dest);
    while (n > 1 && dest[n - 1] == '/')
        n--;
    if (n == 1 && dest[0] == '/')
        return 1;
    if (strncmp(dest, p, n) == 0 && (p[n] == '\0' || p[n] == '/'))
        return n;
    return 0;
}

int dp_bundle_resolve(const struct dp_bundle_info *b, const char *cpath, char *out, size_t len)
{
    if (cpath[0] != '/')
        return -1;
    const struct dp_bundle_mount *best = NULL;
    size_t best_n = 0;
    for (size_t i = 0; i < b->nmounts; i++) {
        size_t n = covers(b->mounts[i].dest, cpath);
        if (n && n >= best_n) { /* a later mount over the same place wins, as in the kernel */
            best = &b->mounts[i];
            best_n = n;
        }
    }
    int w;
    if (!best)
        w = snprintf(out, len, "%s%s", b->rootfs, cpath);
    else if (!best->bind)
        return -1;
    else /* a bind onto "/" itself keeps the whole path */
        w = snprintf(out, len, "%s%s", best->source, covers(best->dest, "/") ? cpath : cpath + best_n);
    return w < 0 || (size_t)w >= len ? -1 : 0;
}
