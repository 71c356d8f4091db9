/* runc_ck: the running runc container a checkpoint takes (`checkpoint
 * --runc`, and `serve --runc` in memory mode): runc and the container's state,
 * and the manifest of its rootfs written beside the images, which the
 * destination checks against its bundle before anything is restored. */
#ifndef DP_RUNC_CK_H
#define DP_RUNC_CK_H

#include "rootfs.h"
#include "runc.h"

struct dp_runc_ck {
    struct dp_runc r;
    struct dp_runc_state state;
    struct dp_rootfs_manifest manifest;
    int netns_by_path; /* the bundle joins an existing network namespace */
};

/* runc, and the running container it knows as id (root: runc --root, NULL
 * for runc's own). -1 after printing what is wrong and what to do. */
int dp_runc_ck_find(const char *id, const char *root, struct dp_runc_ck *c);
/* Writes the rootfs manifest (DP_ROOTFS_FILE) of the running container into
 * dir, before the dump stops its tasks; sets netns_by_path. -1 after printing. */
int dp_runc_ck_manifest(struct dp_runc_ck *c, const char *dir);

#endif
