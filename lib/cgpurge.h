/* cgpurge: the cgroups a failed `runc restore` leaves behind.
 *
 * runc makes the new container's cgroups (cgroupfs driver: /sys/fs/cgroup/
 * CTRL/PATH on every hierarchy) before CRIU restores into them, and records
 * the container only once the restore succeeded. When the restore fails or
 * is killed at --restore-timeout, `runc delete` knows nothing to remove, and
 * CRIU's half-restored root task (pid 1 of the new pid namespace) may still
 * sit in those cgroups waiting for a criu that is gone: nobody else would
 * ever signal it. This module finds the directories that did not exist
 * before the restore, thaws them, kills what they hold and removes them.
 *
 * The path computation is pure (unit-tested); the rest is cgroupfs I/O. */
#ifndef DP_CGPURGE_H
#define DP_CGPURGE_H

#include <stddef.h>

#include "util.h"

#define DP_CGPURGE_MAX 24

/* The container's cgroup directories that the restore may create. */
struct dp_cgpurge {
    char rel[1024];                        /* the cgroup path, "/ID" by default */
    size_t n;
    char dirs[DP_CGPURGE_MAX][1200];       /* absent before the restore */
};

/* The cgroup path runc's cgroupfs driver gives container id with
 * linux.cgroupsPath cgroups_path ("" or NULL: "/ID"; relative: under "/").
 * -1 with err for a systemd-style "slice:prefix:name" path, a ".."
 * component or a path too long: those are not purged. Pure. */
int dp_cgpurge_path(const char *cgroups_path, const char *id, char *out, size_t len, struct dp_err *err);

/* Records which of ROOT/CTRL/REL (every hierarchy CTRL) do not exist yet (root: /sys/fs/cgroup, or a
 * test's stand-in); only those are ever purged, so a cgroups path shared
 * with something else is never touched. */
int dp_cgpurge_prepare(struct dp_cgpurge *p, const char *root, const char *rel, struct dp_err *err);

/* Thaws, kills the tasks of and removes the recorded directories that now
 * exist, retrying until timeout_s; 0 when none is left, else -1 with err
 * naming a task still there (pid, state, wchan). *killed gets how many
 * tasks were signalled. */
int dp_cgpurge_run(struct dp_cgpurge *p, double timeout_s, int *killed, struct dp_err *err);

#endif
