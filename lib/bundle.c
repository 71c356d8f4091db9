/* bundle: OCI bundle config.json, written and read back (see bundle.h). */
#include "bundle.h"
#include "cnet.h"
#include "lab.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>

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

/* A JSON array of strings. */
static json_t *str_array(const char *const *v, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; arr && i < n; i++)
        json_array_append_new(arr, json_string(v[i]));
    return arr;
}

/* Length of a NULL-terminated list; NULL counts as empty (optional lists). */
static size_t null_len(const char *const *v)
{
    size_t n = 0;
    while (v && v[n])
        n++;
    return n;
}

/* One mount entry; options is a comma-separated list. */
static void add_mount(json_t *mounts, const char *dest, const char *type, const char *source, const char *options)
{
    json_t *opts = json_array();
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", options);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save))
        json_array_append_new(opts, json_string(t));
    json_array_append_new(mounts, json_pack("{s:s, s:s, s:s, s:o}", "destination", dest, "type", type, "source",
                                            source, "options", opts));
}

/* uidMappings / gidMappings as the runtime spec spells them. */
static json_t *idmaps(const struct dp_bundle_idmap *m, size_t n)
{
    json_t *arr = json_array();
    for (size_t i = 0; i < n; i++)
        json_array_append_new(arr, json_pack("{s:I, s:I, s:I}", "containerID", (json_int_t)m[i].container_id,
                                             "hostID", (json_int_t)m[i].host_id, "size", (json_int_t)m[i].size));
    return arr;
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

/* Everything runc would refuse later (or misread), refused now with a message
 * that names the option. */
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
    for (size_t i = 0; i < null_len(s->annotations); i++) {
        const char *eq = strchr(s->annotations[i], '=');
        if (!eq || eq == s->annotations[i] || eq - s->annotations[i] >= 256) {
            dp_err_set(err, "annotation '%s' is not NAME=VALUE", s->annotations[i]);
            return -1;
        }
    }
    for (size_t i = 0; i < null_len(s->tmpfs); i++) {
        if (!clean_abs_path(s->tmpfs[i]) || strcmp(s->tmpfs[i], "/") == 0) {
            dp_err_set(err, "tmpfs mount point '%s' must be an absolute path below '/' without '.' or '..'",
                       s->tmpfs[i]);
            return -1;
        }
    }
    const struct dp_bundle_net_hook *h = &s->net_hook;
    if (h->path) {
        struct cnet_plan plan;
        if (s->netns_path) {
            dp_err_set(err, "the network hook wires a new network namespace: no network namespace path with it");
            return -1;
        }
        if (h->path[0] != '/' || !h->lab || !h->host || !lab_host_find(h->host) || !cnet_ifname_ok(h->ifname)) {
            dp_err_set(err, "network hook: needs an absolute path, a lab name, a lab host (src or dst) and a valid "
                       "interface name (1-%d of A-Z a-z 0-9 _ . -)", CNET_IFNAME_MAX);
            return -1;
        }
        if (cnet_plan_parse(h->addr, &plan, err) < 0)
            return -1;
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
    json_t *env = str_array(s->env, null_len(s->env));
    json_array_insert_new(env, 0, json_string("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"));
    /* No rlimits: raising one needs CAP_SYS_RESOURCE, which root may lack;
     * the container inherits runc's. */
    json_t *process = json_pack(
        "{s:b, s:{s:I, s:I}, s:o, s:o, s:s, s:{s:o, s:o, s:o}, s:b}", "terminal", 0, "user", "uid",
        (json_int_t)s->uid, "gid", (json_int_t)s->gid, "args", str_array(s->args, null_len(s->args)), "env", env,
        "cwd", s->cwd ? s->cwd : "/", "capabilities", "bounding", str_array(caps, DP_ARRAY_LEN(caps)), "effective",
        str_array(caps, DP_ARRAY_LEN(caps)), "permitted", str_array(caps, DP_ARRAY_LEN(caps)), "noNewPrivileges", 1);
    json_t *mounts = json_array();
    json_array_append_new(mounts, json_pack("{s:s, s:s, s:s}", "destination", "/proc", "type", "proc", "source", "proc"));
    add_mount(mounts, "/dev", "tmpfs", "tmpfs", "nosuid,strictatime,mode=755,size=65536k");
    /* gid=5 (tty) exists only when mapped: left out in a user namespace */
    add_mount(mounts, "/dev/pts", "devpts", "devpts",
              userns ? "nosuid,noexec,newinstance,ptmxmode=0666,mode=0620"
                     : "nosuid,noexec,newinstance,ptmxmode=0666,mode=0620,gid=5");
    add_mount(mounts, "/dev/shm", "tmpfs", "shm", "nosuid,noexec,nodev,mode=1777,size=65536k");
    add_mount(mounts, "/dev/mqueue", "mqueue", "mqueue", "nosuid,noexec,nodev");
    /* sysfs can be mounted only by the owner of the network namespace, and in
     * a user namespace a plain bind of the host's /sys is refused (its
     * submounts are locked; a recursive one would hand CRIU every host mount
     * under /sys). So a user-namespaced container that joins a host-owned
     * network namespace has no /sys (the services DistriProc runs do not need
     * it); one with a network namespace of its own (--net-hook) owns it and
     * mounts sysfs. */
    if (!userns || !s->netns_path)
        add_mount(mounts, "/sys", "sysfs", "sysfs", "nosuid,noexec,nodev,ro");
    if (s->tmp_tmpfs)
        add_mount(mounts, "/tmp", "tmpfs", "tmpfs", "nosuid,nodev,mode=1777");
    for (size_t i = 0; i < null_len(s->tmpfs); i++)
        add_mount(mounts, s->tmpfs[i], "tmpfs", "tmpfs", "nosuid,nodev,mode=755");
    for (size_t i = 0; i < s->nbinds; i++)
        add_mount(mounts, s->binds[i].dest, "bind", s->binds[i].source,
                  s->binds[i].readonly ? "bind,ro,nosuid,nodev" : "bind,nosuid,nodev");
    json_t *ns = json_pack("[{s:s}, {s:s}, {s:s}, {s:s}]", "type", "pid", "type", "ipc", "type", "uts", "type", "mount");
    if (userns)
        json_array_append_new(ns, json_pack("{s:s}", "type", "user"));
    json_t *net = json_pack("{s:s}", "type", "network");
    if (s->netns_path)
        json_object_set_new(net, "path", json_string(s->netns_path));
    json_array_append_new(ns, net);
    json_t *linux_ = json_pack("{s:o, s:o, s:o}", "namespaces", ns, "maskedPaths",
                               str_array(masked, DP_ARRAY_LEN(masked)), "readonlyPaths",
                               str_array(readonly_paths, DP_ARRAY_LEN(readonly_paths)));
    if (userns && linux_) {
        json_object_set_new(linux_, "uidMappings", idmaps(s->uid_maps, s->nuid_maps));
        json_object_set_new(linux_, "gidMappings", idmaps(s->gid_maps, s->ngid_maps));
    }
    json_t *root = json_pack("{s:s, s:o, s:{s:s, s:b}, s:s, s:o, s:o}", "ociVersion", "1.0.2", "process", process,
                             "root", "path", s->rootfs, "readonly", s->rootfs_readonly, "hostname",
                             s->hostname ? s->hostname : "distriproc", "mounts", mounts, "linux", linux_);
    if (root && s->net_hook.path) {
        const struct dp_bundle_net_hook *h = &s->net_hook;
        char lab[64];
        snprintf(lab, sizeof(lab), "DISTRIPROC_LAB=%s", h->lab);
        json_object_set_new(
            root, "hooks",
            json_pack("{s:[{s:s, s:[s,s,s,s,s,s,s,s,s], s:[s,s], s:i}]}", "createRuntime", "path", h->path, "args",
                      "distriproc", "container-net", "hook", "--host", h->host, "--ifname", h->ifname, "--addr",
                      h->addr, "env", lab, "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "timeout", 20));
    }
    if (root && null_len(s->annotations)) {
        json_t *ann = json_object();
        for (size_t i = 0; i < null_len(s->annotations); i++) {
            const char *eq = strchr(s->annotations[i], '=');
            char name[256];
            snprintf(name, sizeof(name), "%.*s", (int)(eq - s->annotations[i]), s->annotations[i]);
            json_object_set_new(ann, name, json_string(eq + 1));
        }
        json_object_set_new(root, "annotations", ann);
    }
    char *text = root ? json_dumps(root, JSON_INDENT(2) | JSON_PRESERVE_ORDER) : NULL;
    json_decref(root);
    if (!text) {
        dp_err_set(err, "cannot build config.json (out of memory, or a string that is not UTF-8)");
        return -1;
    }
    /* with a final newline, like an editor would save it */
    size_t n = strlen(text);
    char *t = realloc(text, n + 2);
    if (!t) {
        free(text);
        dp_err_set(err, "out of memory");
        return -1;
    }
    t[n] = '\n';
    t[n + 1] = '\0';
    *out = t;
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

/* Fixed-size fields: a value that does not fit is an error, never truncated
 * into another path. */
static int copy_str(char *dst, size_t len, const char *src, const char *what, struct dp_err *err)
{
    if (strlen(src) >= len) {
        dp_err_set(err, "config.json: %s is too long", what);
        return -1;
    }
    memcpy(dst, src, strlen(src) + 1);
    return 0;
}

/* obj.key as a string, or NULL. */
static const char *get_str(const json_t *obj, const char *key)
{
    return json_string_value(json_object_get(obj, key));
}

int dp_bundle_parse(const char *dir, const char *text, size_t len, struct dp_bundle_info *b, struct dp_err *err)
{
    memset(b, 0, sizeof(*b));
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        dp_err_set(err, "%s/config.json is not valid JSON: %s (line %d, column %d)", dir, jerr.text, jerr.line,
                   jerr.column);
        return -1;
    }
    int rc = -1;
    const char *rpath = get_str(json_object_get(root, "root"), "path");
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
    size_t i;
    json_t *n;
    json_array_foreach(json_object_get(json_object_get(root, "linux"), "namespaces"), i, n) {
        const char *type = get_str(n, "type"), *path = get_str(n, "path");
        if (type && strcmp(type, "network") == 0 && path &&
            copy_str(b->netns_path, sizeof(b->netns_path), path, "the network namespace path", err) < 0)
            goto out;
        if (type && strcmp(type, "user") == 0)
            b->userns = 1;
    }
    const char *cgp = get_str(json_object_get(root, "linux"), "cgroupsPath");
    if (cgp && copy_str(b->cgroups_path, sizeof(b->cgroups_path), cgp, "linux.cgroupsPath", err) < 0)
        goto out;
    json_t *mounts = json_object_get(root, "mounts");
    if (json_array_size(mounts)) {
        b->mounts = calloc(json_array_size(mounts), sizeof(*b->mounts));
        if (!b->mounts) {
            dp_err_set(err, "out of memory");
            goto out;
        }
    }
    json_t *m;
    json_array_foreach(mounts, i, m) {
        const char *dest = get_str(m, "destination"), *src = get_str(m, "source"), *type = get_str(m, "type");
        if (!dest || dest[0] != '/') {
            dp_err_set(err, "%s/config.json: a mount without an absolute destination", dir);
            goto out;
        }
        struct dp_bundle_mount *bm = &b->mounts[b->nmounts++];
        if (copy_str(bm->dest, sizeof(bm->dest), dest, "a mount destination", err) < 0 ||
            copy_str(bm->source, sizeof(bm->source), src ? src : "", "a mount source", err) < 0)
            goto out;
        bm->bind = type && strcmp(type, "bind") == 0;
        size_t j;
        json_t *o;
        json_array_foreach(json_object_get(m, "options"), j, o) {
            const char *opt = json_string_value(o);
            if (opt && (!strcmp(opt, "bind") || !strcmp(opt, "rbind")))
                bm->bind = 1;
        }
        if (bm->bind && bm->source[0] != '/') {
            dp_err_set(err, "%s/config.json: bind mount on %s has no absolute source", dir, dest);
            goto out;
        }
    }
    rc = 0;
out:
    json_decref(root);
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
