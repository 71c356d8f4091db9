/* freezer: a process tree in a cgroup-v1 freezer cgroup, so that it stays
 * stopped (and its memory readable) whatever CRIU does: CRIU resumes the tree
 * on any page-server error and when it is killed, but a FROZEN cgroup holds
 * its tasks until it is thawed, and a SIGKILL sent while frozen takes effect
 * at the thaw without the task running any of its code.
 *
 * Cgroups live under DP_FREEZER_ROOT/distriproc/NAME. cgroup v2 (no v1
 * freezer hierarchy) is refused with a message. */
#ifndef DP_FREEZER_H
#define DP_FREEZER_H

#include <stddef.h>
#include <sys/types.h>

#include "util.h"

#define DP_FREEZER_ROOT "/sys/fs/cgroup/freezer"

/* Creates (or reuses) DP_FREEZER_ROOT/distriproc/name; path gets its directory. */
int dp_freezer_create(const char *name, char *path, size_t len, struct dp_err *err);
/* Moves root and all its descendants into the cgroup, again until a pass
 * finds none outside (a task forking meanwhile). */
int dp_freezer_add_tree(const char *cg, pid_t root, struct dp_err *err);
/* The freezer cgroup's path in a /proc/PID/cgroup text ("N:freezer:/ct1"
 * -> "/ct1"); -1 if there is no freezer line or it is not a clean absolute
 * path. Pure. */
int dp_freezer_parse_proc_cgroup(const char *text, size_t len, char *out, size_t outlen);
/* The directory of pid's own freezer cgroup (a runc container's, say) under
 * DP_FREEZER_ROOT; -1 with err for the root cgroup, which cannot be frozen. */
int dp_freezer_cgroup_of(pid_t pid, char *path, size_t len, struct dp_err *err);
/* Writes FROZEN or THAWED and waits (bounded) until freezer.state says so. */
int dp_freezer_set(const char *cg, int frozen, double timeout_s, struct dp_err *err);
/* 1 if FROZEN, 0 if THAWED or FREEZING, -1 if the cgroup is gone. */
int dp_freezer_is_frozen(const char *cg);
/* The thread-group ids in the cgroup (cgroup.procs); *pids malloc'd. */
int dp_freezer_pids(const char *cg, pid_t **pids, size_t *n, struct dp_err *err);
/* SIGKILL to every task in the cgroup; returns how many were signalled. */
int dp_freezer_kill_all(const char *cg);
/* After a thaw: moves every task back to the root freezer cgroup and
 * removes the cgroup. */
int dp_freezer_leave(const char *cg, struct dp_err *err);
/* Removes the (empty) cgroup, waiting (bounded) for its tasks to be gone. */
int dp_freezer_remove(const char *cg, double timeout_s, struct dp_err *err);

#endif
