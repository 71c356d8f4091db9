/* distriproc bundle: writes an OCI bundle (config.json, and with --host-rootfs
 * a rootfs of read-only binds of the host's system directories) for a runc
 * container that DistriProc can checkpoint and restore lazily. The config
 * itself comes from lib/bundle (pure); this file owns the command line and
 * the rootfs directory. */
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <jansson.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "bundle.h"
#include "commands.h"
#include "criu.h"
#include "lab.h"
#include "util.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: distriproc bundle --dir BUNDLE [options] -- CMD [ARG...]\n"
            "\n"
            "Writes BUNDLE/config.json for a runc container running CMD: own rootfs and\n"
            "mount, pid, ipc, uts namespaces, the network namespace of a lab host (or a new\n"
            "one), no terminal (its stdio are whatever runc gets: give it pipes, since CRIU\n"
            "cannot checkpoint a container whose stdio is a file of the host). Then:\n"
            "  runc run -d --bundle BUNDLE ID <pipes>    and    distriproc checkpoint --runc ID\n"
            "\n"
            "  --dir BUNDLE          the bundle directory (created)\n"
            "  --rootfs DIR          root filesystem, relative to BUNDLE or absolute (default\n"
            "                        'rootfs'; must exist unless --host-rootfs)\n"
            "  --host-rootfs         make BUNDLE/rootfs from the host itself: read-only bind\n"
            "                        mounts of /usr and /etc (and /bin, /lib, ... where they\n"
            "                        are not symlinks into /usr), a tmpfs on /tmp. Every host\n"
            "                        with the same files can restore the container\n"
            "  --bind SRC:DST[:ro]   bind-mount host path SRC on DST in the container\n"
            "                        (repeatable; :ro read-only)\n"
            "  --host src|dst        join lab host's network namespace (/run/netns/%s-HOST)\n"
            "  --netns PATH          join this network namespace (default: a new, empty one)\n"
            "  --user UID:GID        run CMD as this user (as the container sees it; default 0:0)\n"
            "  --uid-map C:H:N       user namespace: container uids C..C+N-1 are host uids\n"
            "                        H..H+N-1 (repeatable; needs --gid-map too)\n"
            "  --gid-map C:H:N       the same for gids\n"
            "  --env NAME=VALUE      add to the environment (repeatable; PATH is set)\n"
            "  --annotation NAME=VALUE  add an annotation (repeatable), e.g.\n"
            "                        org.criu.config=FILE: runc has CRIU read FILE too (a CRIU\n"
            "                        configuration file, as podman users set it)\n"
            "  --cwd DIR             working directory in the container (default /)\n"
            "  --hostname NAME       the container's host name (default distriproc)\n"
            "  --readonly-rootfs     mount the rootfs read-only\n"
            "  --tmpfs-tmp           a tmpfs on /tmp (implied by --host-rootfs)\n"
            "  --tmpfs DIR           a tmpfs on DIR, e.g. /run (repeatable)\n"
            "  --net-hook HOST:IFNAME:ADDR/PREFIX\n"
            "                        a new network namespace, wired to lab host HOST by a\n"
            "                        createRuntime hook (distriproc container-net hook: veth\n"
            "                        IFNAME on HOST, eth0 with ADDR in the container), which\n"
            "                        runc runs at create and again at restore. What a user\n"
            "                        namespace needs (with --uid-map/--gid-map): CRIU dumps a\n"
            "                        container only if its network namespace is its own.\n"
            "                        The destination's bundle names the destination host\n"
            "  --json                print {\"bundle\", \"config\", \"rootfs\"} as JSON\n"
            "  -h, --help            this help\n"
            "\n"
            "See docs/containers.md.\n",
            lab_name());
}

/* mkdir -p. */
static int mkdirs(const char *dir, struct dp_err *err)
{
    char path[PATH_MAX];
    if (snprintf(path, sizeof(path), "%s", dir) >= (int)sizeof(path)) {
        dp_err_set(err, "path too long: %s", dir);
        return -1;
    }
    for (char *p = path + 1;; p++) {
        if (*p != '/' && *p != '\0')
            continue;
        char c = *p;
        *p = '\0';
        if (mkdir(path, 0755) < 0 && errno != EEXIST) {
            dp_err_set(err, "cannot create %s: %s", path, strerror(errno));
            return -1;
        }
        *p = c;
        if (!c)
            return 0;
    }
}

/* "C:H:N" -> mapping. */
static int parse_idmap(const char *text, struct dp_bundle_idmap *m)
{
    unsigned long long c, h, n;
    char tail;
    if (sscanf(text, "%llu:%llu:%llu%c", &c, &h, &n, &tail) != 3 || c > UINT32_MAX || h > UINT32_MAX ||
        n == 0 || n > UINT32_MAX)
        return -1;
    *m = (struct dp_bundle_idmap){(uint32_t)c, (uint32_t)h, (uint32_t)n};
    return 0;
}

/* The host's system directories as a rootfs: on a merged-/usr host /bin,
 * /sbin, /lib, /lib64 are symlinks into /usr and become the same symlinks;
 * real directories become read-only binds like /usr and /etc. */
static int host_rootfs(const char *rootfs, struct dp_bundle_bind *binds, size_t *nbinds, struct dp_err *err)
{
    static const char *const dirs[] = {"/usr", "/etc", "/bin", "/sbin", "/lib", "/lib64", "/lib32", "/libx32"};
    if (mkdirs(rootfs, err) < 0)
        return -1;
    for (size_t i = 0; i < DP_ARRAY_LEN(dirs); i++) {
        struct stat st;
        if (lstat(dirs[i], &st) < 0)
            continue;
        char path[PATH_MAX + 16];
        snprintf(path, sizeof(path), "%s%s", rootfs, dirs[i]);
        if (S_ISLNK(st.st_mode)) {
            char target[PATH_MAX];
            ssize_t n = readlink(dirs[i], target, sizeof(target) - 1);
            if (n <= 0)
                continue;
            target[n] = '\0';
            char have[PATH_MAX];
            ssize_t m = readlink(path, have, sizeof(have) - 1);
            if (m >= 0 && (have[m] = '\0', strcmp(have, target) == 0))
                continue;
            if (symlink(target, path) < 0) {
                dp_err_set(err, "cannot make the symlink %s -> %s: %s", path, target, strerror(errno));
                return -1;
            }
        } else if (S_ISDIR(st.st_mode)) {
            if (mkdirs(path, err) < 0)
                return -1;
            if (*nbinds == DP_BUNDLE_MAX_BINDS) {
                dp_err_set(err, "too many bind mounts");
                return -1;
            }
            binds[(*nbinds)++] = (struct dp_bundle_bind){dirs[i], dirs[i], 1};
        }
    }
    return 0;
}

/* The mount points of a --host-rootfs made here, so that runc need not create
 * them: in a user namespace the container's root does not own the rootfs
 * directory and could not. A bind of a file gets an empty file. */
static int make_mountpoints(const char *rootfs, const struct dp_bundle_bind *binds, size_t n, struct dp_err *err)
{
    static const char *const dirs[] = {"/proc", "/dev", "/sys", "/tmp"};
    char path[2 * PATH_MAX];
    for (size_t i = 0; i < DP_ARRAY_LEN(dirs) + n; i++) {
        const char *dest = i < DP_ARRAY_LEN(dirs) ? dirs[i] : binds[i - DP_ARRAY_LEN(dirs)].dest;
        struct stat st;
        int is_file = i >= DP_ARRAY_LEN(dirs) && stat(binds[i - DP_ARRAY_LEN(dirs)].source, &st) == 0 &&
                      !S_ISDIR(st.st_mode);
        snprintf(path, sizeof(path), "%s%s", rootfs, dest);
        if (lstat(path, &st) == 0)
            continue; /* there already (a directory, or a symlink such as /bin) */
        if (is_file) {
            char *slash = strrchr(path, '/');
            *slash = '\0';
            int rc = mkdirs(path, err);
            *slash = '/';
            int fd = rc < 0 ? -1 : open(path, O_WRONLY | O_CREAT | O_CLOEXEC, 0644);
            if (fd < 0) {
                if (rc == 0)
                    dp_err_set(err, "cannot create the mount point %s: %s", path, strerror(errno));
                return -1;
            }
            close(fd);
        } else if (mkdirs(path, err) < 0) {
            return -1;
        }
    }
    return 0;
}

int cmd_bundle(int argc, char **argv)
{
    static const struct option opts[] = {
        {"dir", required_argument, NULL, 'd'},        {"rootfs", required_argument, NULL, 'r'},
        {"host-rootfs", no_argument, NULL, 'R'},      {"bind", required_argument, NULL, 'b'},
        {"host", required_argument, NULL, 'H'},       {"netns", required_argument, NULL, 'n'},
        {"user", required_argument, NULL, 'u'},       {"uid-map", required_argument, NULL, 'U'},
        {"gid-map", required_argument, NULL, 'G'},    {"env", required_argument, NULL, 'e'},
        {"cwd", required_argument, NULL, 'c'},        {"hostname", required_argument, NULL, 'N'},
        {"readonly-rootfs", no_argument, NULL, 'o'},  {"tmpfs-tmp", no_argument, NULL, 't'},
        {"json", no_argument, NULL, 'j'},             {"help", no_argument, NULL, 'h'},
        {"annotation", required_argument, NULL, 'a'},
        {"tmpfs", required_argument, NULL, 'T'},      {"net-hook", required_argument, NULL, 'W'},
        {NULL, 0, NULL, 0},
    };
    const char *dir = NULL, *rootfs = "rootfs", *host = NULL, *netns = NULL;
    int host_fs = 0, json = 0;
    struct dp_bundle_spec spec = {0};
    struct dp_bundle_bind binds[DP_BUNDLE_MAX_BINDS];
    struct dp_bundle_idmap umaps[DP_BUNDLE_MAX_IDMAPS], gmaps[DP_BUNDLE_MAX_IDMAPS];
    const char *env[65] = {NULL}, *ann[17] = {NULL};
    size_t nbinds = 0, nenv = 0, nann = 0;
    char bindbuf[DP_BUNDLE_MAX_BINDS][2 * PATH_MAX];
    const char *tmpfs[9] = {NULL};
    size_t ntmpfs = 0;
    char hookbuf[128], self[PATH_MAX];
    int c;
    optind = 1;
    while ((c = getopt_long(argc, argv, "+h", opts, NULL)) != -1) {
        switch (c) {
        case 'd': dir = optarg; break;
        case 'r': rootfs = optarg; break;
        case 'R': host_fs = 1; break;
        case 'b': {
            if (nbinds == DP_BUNDLE_MAX_BINDS) {
                dp_error("at most %d --bind", DP_BUNDLE_MAX_BINDS);
                return 2;
            }
            char *b = bindbuf[nbinds];
            snprintf(b, sizeof(bindbuf[0]), "%s", optarg);
            char *dst = strchr(b, ':');
            int ro = 0;
            if (dst) {
                *dst++ = '\0';
                char *mode = strchr(dst, ':');
                if (mode) {
                    *mode++ = '\0';
                    if (strcmp(mode, "ro") && strcmp(mode, "rw")) {
                        dp_error("--bind %s: the mode after the second ':' is ro or rw", optarg);
                        return 2;
                    }
                    ro = strcmp(mode, "ro") == 0;
                }
            }
            if (!dst || !*b || !*dst) {
                dp_error("--bind takes SRC:DST[:ro] (got '%s')", optarg);
                return 2;
            }
            binds[nbinds++] = (struct dp_bundle_bind){b, dst, ro};
            break;
        }
        case 'H':
            if (!lab_host_find(optarg)) {
                dp_error("--host is src or dst (the lab's hosts), not '%s'; use --netns PATH for another", optarg);
                return 2;
            }
            host = optarg;
            break;
        case 'n': netns = optarg; break;
        case 'u': {
            unsigned long long u, g;
            char tail;
            if (sscanf(optarg, "%llu:%llu%c", &u, &g, &tail) != 2 || u > UINT32_MAX || g > UINT32_MAX) {
                dp_error("--user takes UID:GID, numbers as the container sees them (got '%s')", optarg);
                return 2;
            }
            spec.uid = (uint32_t)u;
            spec.gid = (uint32_t)g;
            break;
        }
        case 'U':
        case 'G': {
            size_t *n = c == 'U' ? &spec.nuid_maps : &spec.ngid_maps;
            struct dp_bundle_idmap *m = c == 'U' ? umaps : gmaps;
            if (*n == DP_BUNDLE_MAX_IDMAPS || parse_idmap(optarg, &m[*n]) < 0) {
                dp_error("--%s takes CONTAINER:HOST:COUNT (at most %d; got '%s')", c == 'U' ? "uid-map" : "gid-map",
                         DP_BUNDLE_MAX_IDMAPS, optarg);
                return 2;
            }
            (*n)++;
            break;
        }
        case 'e':
            if (nenv == DP_ARRAY_LEN(env) - 1 || !strchr(optarg, '=') || optarg[0] == '=') {
                dp_error("--env takes NAME=VALUE (at most %zu; got '%s')", DP_ARRAY_LEN(env) - 1, optarg);
                return 2;
            }
            env[nenv++] = optarg;
            break;
        case 'a':
            if (nann == DP_ARRAY_LEN(ann) - 1 || !strchr(optarg, '=') || optarg[0] == '=') {
                dp_error("--annotation takes NAME=VALUE (at most %zu; got '%s')", DP_ARRAY_LEN(ann) - 1, optarg);
                return 2;
            }
            ann[nann++] = optarg;
            break;
        case 'T':
            if (ntmpfs == DP_ARRAY_LEN(tmpfs) - 1) {
                dp_error("at most %zu --tmpfs", DP_ARRAY_LEN(tmpfs) - 1);
                return 2;
            }
            tmpfs[ntmpfs++] = optarg;
            break;
        case 'W': {
            snprintf(hookbuf, sizeof(hookbuf), "%s", optarg);
            char *ifname = strchr(hookbuf, ':');
            char *addr = ifname ? strchr(ifname + 1, ':') : NULL;
            if (!addr || strlen(optarg) >= sizeof(hookbuf)) {
                dp_error("--net-hook takes HOST:IFNAME:ADDR/PREFIX, e.g. src:c1:10.251.1.2/30 (got '%s')", optarg);
                return 2;
            }
            *ifname++ = '\0';
            *addr++ = '\0';
            ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
            if (n <= 0) {
                dp_error("--net-hook: cannot find this program's own path (/proc/self/exe): %s", strerror(errno));
                return 1;
            }
            self[n] = '\0';
            spec.net_hook = (struct dp_bundle_net_hook){self, lab_name(), hookbuf, ifname, addr};
            break;
        }
        case 'c': spec.cwd = optarg; break;
        case 'N': spec.hostname = optarg; break;
        case 'o': spec.rootfs_readonly = 1; break;
        case 't': spec.tmp_tmpfs = 1; break;
        case 'j': json = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!dir || optind >= argc) {
        dp_error("--dir BUNDLE and the command after '--' are required");
        usage(stderr);
        return 2;
    }
    if (host && netns) {
        dp_error("give --host or --netns, not both");
        return 2;
    }
    if (spec.net_hook.path && (host || netns)) {
        dp_error("--net-hook gives the container a new network namespace: no --host or --netns with it");
        return 2;
    }
    if (host_fs && strcmp(rootfs, "rootfs") != 0) {
        dp_error("--host-rootfs makes BUNDLE/rootfs; it does not combine with --rootfs");
        return 2;
    }
    struct dp_err err = {{0}};
    if (mkdirs(dir, &err) < 0) {
        dp_error("%s", err.msg);
        return 1;
    }
    char bundle[PATH_MAX], rootpath[PATH_MAX + 8], nspath[PATH_MAX];
    if (!realpath(dir, bundle)) {
        dp_error("%s: %s", dir, strerror(errno));
        return 1;
    }
    if (rootfs[0] == '/')
        snprintf(rootpath, sizeof(rootpath), "%s", rootfs);
    else
        snprintf(rootpath, sizeof(rootpath), "%s/%s", bundle, rootfs);
    if (host) {
        dp_netns_path(lab_host_find(host)->netns, nspath, sizeof(nspath));
        netns = nspath;
    }
    if (netns && access(netns, F_OK) != 0)
        dp_warn("the network namespace %s does not exist yet: runc run will fail until it does%s", netns,
                host ? " (distriproc lab up)" : "");
    size_t nuser = nbinds;
    if (host_fs) {
        /* system directories first, then the user's binds on top of them */
        struct dp_bundle_bind user[DP_BUNDLE_MAX_BINDS];
        memcpy(user, binds, nbinds * sizeof(binds[0]));
        nbinds = 0;
        if (host_rootfs(rootpath, binds, &nbinds, &err) < 0) {
            dp_error("%s", err.msg);
            return 1;
        }
        if (nbinds + nuser > DP_BUNDLE_MAX_BINDS) {
            dp_error("at most %d bind mounts in all", DP_BUNDLE_MAX_BINDS);
            return 2;
        }
        memcpy(binds + nbinds, user, nuser * sizeof(user[0]));
        nbinds += nuser;
        spec.tmp_tmpfs = 1;
    } else {
        struct stat st;
        if (stat(rootpath, &st) < 0 || !S_ISDIR(st.st_mode)) {
            dp_error("rootfs %s is not a directory; build one (see docs/containers.md) or use --host-rootfs",
                     rootpath);
            return 1;
        }
        /* runc refuses a rootfs path that runs through a symlink ("invalid
         * rootfs: not an absolute path, or a symlink"): name the real one */
        char real[PATH_MAX];
        if (!realpath(rootpath, real)) {
            dp_error("rootfs %s: %s", rootpath, strerror(errno));
            return 1;
        }
        if (strcmp(real, rootpath) != 0) {
            snprintf(rootpath, sizeof(rootpath), "%s", real);
            rootfs = rootpath;
        }
    }
    if (host_fs && make_mountpoints(rootpath, binds, nbinds, &err) < 0) {
        dp_error("%s", err.msg);
        return 1;
    }
    spec.rootfs = rootfs;
    spec.args = (const char *const *)&argv[optind];
    spec.env = env;
    spec.annotations = ann;
    spec.netns_path = netns;
    spec.binds = binds;
    spec.nbinds = nbinds;
    spec.tmpfs = tmpfs;
    spec.uid_maps = umaps;
    spec.gid_maps = gmaps;
    if (dp_bundle_write(bundle, &spec, &err) < 0) {
        dp_error("%s", err.msg);
        return 1;
    }
    if (json) {
        char cfg[PATH_MAX + 16];
        snprintf(cfg, sizeof(cfg), "%s/config.json", bundle);
        json_t *o = json_pack("{s:s, s:s, s:s}", "bundle", bundle, "config", cfg, "rootfs", rootpath);
        if (!o || json_dumpf(o, stdout, JSON_PRESERVE_ORDER | JSON_COMPACT) < 0) {
            dp_error("cannot print the result as JSON");
            json_decref(o);
            return 1;
        }
        json_decref(o);
        putchar('\n');
    } else
        printf("wrote %s/config.json (rootfs %s%s%s)\n", bundle, rootpath, netns ? ", network namespace " : "",
               netns ? netns : "");
    return 0;
}
