/* runc_ck: the running runc container a checkpoint takes; see runc_ck.h. */
#include "runc_ck.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bundle.h"
#include "util.h"

/* runc, and the running container it knows as id. */
int dp_runc_ck_find(const char *id, const char *root, struct dp_runc_ck *c)
{
    struct dp_err err = {{0}};
    if (!dp_runc_id_ok(id)) {
        dp_error("--runc '%s' is not a container ID runc accepts (letters, digits, _ + . -)", id);
        return -1;
    }
    if (dp_runc_open(&c->r, root, &err) < 0) {
        dp_error("%s", err.msg);
        return -1;
    }
    int s = dp_runc_state(&c->r, id, &c->state, &err);
    if (s == 1) {
        dp_error("runc knows no container '%s'%s%s; see 'runc%s%s list' (the same --runc-root as it was "
                 "started with)",
                 id, root ? " under --root " : "", root ? root : "", root ? " --root " : "", root ? root : "");
        return -1;
    }
    if (s < 0) {
        dp_error("%s", err.msg);
        return -1;
    }
    if (strcmp(c->state.status, "running") != 0 || c->state.pid <= 0) {
        dp_error("container '%s' is %s, not running: only a running container can be checkpointed", id,
                 c->state.status);
        return -1;
    }
    return 0;
}

/* The rootfs manifest (lib/rootfs.h) of the running container, written into
 * the images before the dump stops its tasks. */
int dp_runc_ck_manifest(struct dp_runc_ck *c, const char *dir)
{
    struct dp_err err = {{0}};
    struct dp_bundle_info b;
    if (dp_bundle_load(c->state.bundle, &b, &err) < 0) {
        dp_error("the container's bundle: %s", err.msg);
        return -1;
    }
    int rc = dp_rootfs_collect(c->state.pid, &b, &c->manifest, &err);
    c->netns_by_path = b.netns_path[0] != '\0';
    dp_bundle_info_free(&b);
    if (rc < 0) {
        dp_error("cannot record the container's rootfs: %s", err.msg);
        return -1;
    }
    char *text = dp_rootfs_to_json(&c->manifest);
    char path[PATH_MAX + 64];
    snprintf(path, sizeof(path), "%s/%s", dir, DP_ROOTFS_FILE);
    int fd = text ? open(path, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644) : -1;
    rc = fd >= 0 && dp_write_full(fd, text, strlen(text)) == 0 && fsync(fd) == 0 ? 0 : -1;
    if (rc < 0)
        dp_error("cannot write %s: %s", path, text ? strerror(errno) : "out of memory");
    if (fd >= 0)
        close(fd);
    free(text);
    return rc;
}

