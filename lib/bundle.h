/* bundle: OCI runtime bundles (a directory with config.json and a rootfs) for
 * runc containers DistriProc checkpoints and restores.
 *
 * Writing: dp_bundle_config_json builds a config.json (OCI runtime spec
 * 1.0.2) from a dp_bundle_spec: own rootfs and mount, pid, ipc, uts
 * namespaces, optionally a user namespace (uid/gid mappings), and either the
 * network namespace of a lab host given by path or a new one. Pure.
 *
 * Reading: dp_bundle_load parses a bundle's config.json into what DistriProc
 * needs of it (the rootfs, bind mounts, the network namespace path), and
 * dp_bundle_resolve maps a path as the container sees it to the host path
 * that will back it (pure), which the rootfs check before a restore uses. */
#ifndef DP_BUNDLE_H
#define DP_BUNDLE_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define DP_BUNDLE_MAX_BINDS 32
#define DP_BUNDLE_MAX_IDMAPS 8

/* A bind mount of a host path into the container. */
struct dp_bundle_bind {
    const char *source; /* host path */
    const char *dest;   /* absolute path inside the container */
    int readonly;
};

/* One uid or gid mapping line of a user namespace. */
struct dp_bundle_idmap {
    uint32_t container_id, host_id, size;
};

struct dp_bundle_spec {
    const char *rootfs;                 /* root.path: relative to the bundle, or absolute */
    int rootfs_readonly;
    const char *const *args;            /* process.args, NULL-terminated, at least one */
    const char *const *env;             /* extra "NAME=VALUE", NULL-terminated, or NULL */
    const char *cwd;                    /* NULL = "/" */
    uint32_t uid, gid;                  /* process.user, as the container sees them */
    const char *netns_path;             /* network namespace to join; NULL = a new one */
    const char *hostname;               /* NULL = "distriproc" */
    const struct dp_bundle_bind *binds; /* nbinds bind mounts, in order */
    size_t nbinds;
    int tmp_tmpfs;                      /* a tmpfs on /tmp */
    const char *const *annotations;     /* "NAME=VALUE", NULL-terminated, or NULL; e.g.
                                         * org.criu.config=FILE: runc has CRIU read FILE too */
    /* A user namespace when nuid_maps > 0 (then ngid_maps > 0 too): the host
     * root owns it and holds every capability in it. */
    const struct dp_bundle_idmap *uid_maps, *gid_maps;
    size_t nuid_maps, ngid_maps;
    const char *const *tmpfs;           /* more tmpfs mount points (e.g. /run), NULL-terminated, or NULL */
    /* With a new network namespace (netns_path NULL): a createRuntime hook
     * running `PATH container-net hook --host HOST --ifname IFNAME --addr
     * ADDR` (lib/cnet), which runc runs at create and again at restore, to
     * wire it to a lab host. path NULL: no hook. */
    struct dp_bundle_net_hook {
        const char *path;               /* absolute path of distriproc */
        const char *lab;                /* DISTRIPROC_LAB of the hook */
        const char *host, *ifname, *addr;
    } net_hook;
};

/* config.json text (malloc'd, NUL-terminated) for spec; -1 with err on a
 * spec that cannot make a valid bundle (no args, relative bind target, ...). */
int dp_bundle_config_json(const struct dp_bundle_spec *spec, char **out, struct dp_err *err);

/* Writes spec as BUNDLE/config.json (temporary name, then rename). */
int dp_bundle_write(const char *bundle_dir, const struct dp_bundle_spec *spec, struct dp_err *err);

/* What DistriProc reads back from a bundle's config.json. */
struct dp_bundle_mount {
    char dest[1024];   /* absolute, inside the container */
    char source[1024]; /* host path (binds) */
    int bind;          /* "bind"/"rbind" in options or type "bind" */
};
struct dp_bundle_info {
    char dir[4096];          /* the bundle directory, absolute */
    char rootfs[4096];       /* root.path made absolute */
    char netns_path[1024];   /* the network namespace's path, "" = new or none */
    int userns;              /* has a user namespace */
    char cgroups_path[1024]; /* linux.cgroupsPath, "" = runc's default (/ID) */
    struct dp_bundle_mount *mounts;
    size_t nmounts;
};

/* Parses config.json text of the bundle in dir (absolute). Pure. */
int dp_bundle_parse(const char *dir, const char *text, size_t len, struct dp_bundle_info *out, struct dp_err *err);
/* Reads and parses DIR/config.json; a missing one says what a bundle is. */
int dp_bundle_load(const char *dir, struct dp_bundle_info *out, struct dp_err *err);
void dp_bundle_info_free(struct dp_bundle_info *b);

/* The host path backing container path cpath (absolute): the source of the
 * bind mount with the longest destination prefix, else the rootfs. -1 if the
 * path falls on a non-bind mount (proc, tmpfs, ...): nothing on the host
 * backs it. Pure. */
int dp_bundle_resolve(const struct dp_bundle_info *b, const char *cpath, char *out, size_t len);

#endif
