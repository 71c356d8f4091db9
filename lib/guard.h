/* guard: makes the death of the lazy-pages daemon fail safe.
 *
 * Why: the restored tasks' lazy memory stays registered with their
 * userfaultfds only while some process holds those descriptors. If the
 * daemon were the only holder and died abnormally (SIGKILL, crash, OOM
 * kill), the kernel would unregister the ranges and every page never
 * fetched would then read as zeros in the running tree: silent corruption.
 *
 * So the daemon forks a tiny guard before it receives any uffd and passes it
 * a duplicate of every uffd it receives (CRIU's per-task ones and those of
 * FORK events), with a pidfd of the task when its pid is known, and the
 * pid of every `criu restore` that connects (its descendants are the tree
 * being restored). The guard never reads a uffd: holding it is enough for a
 * fault on a missing page to wait instead of filling zeros.
 *
 * The daemon drops a uffd from the guard before it closes its own copy (the
 * task's mm is gone) and says goodbye on a clean exit. If the guard's socket
 * closes without the goodbye, the daemon died: the guard SIGKILLs the tree
 * (tasks by pidfd, and every descendant of them and of a running criu),
 * logs why, waits until every held uffd's mm is gone, and only then closes
 * them. A goodbye while a held uffd's mm still lives is treated the same.
 * If the guard dies, the daemon starts a new one and hands it everything
 * again. Nothing here is on the fault path. */
#ifndef DP_GUARD_H
#define DP_GUARD_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "util.h"

#define DP_GUARD_NAME "dp-guard"

struct dp_guard_ent;

struct dp_guard {
    int sk;            /* the daemon's end; -1: no guard running */
    pid_t pid;         /* the guard process */
    unsigned gen;      /* bumped on every (re)start: the socket changed */
    int wanted;        /* started once: keep one running */
    uint64_t retry_ns; /* next restart attempt after a failed one */
    struct dp_guard_ent *e; /* what the guard holds, to hand to a new guard */
    size_t n, cap;
};

/* Forks the guard. 0, or -1 with err set (no guard: do not serve). */
int dp_guard_start(struct dp_guard *g, struct dp_err *err);

/* A task's uffd (the daemon's descriptor, also the key for drop). host_pid:
 * the sender of the descriptor if known (0 otherwise); it is taken only if
 * its pid inside its own pid namespace is inner_pid (CRIU's pid), then held
 * as a pidfd. Forked children: host_pid 0. */
void dp_guard_task(struct dp_guard *g, int uffd, pid_t host_pid, int32_t inner_pid);
/* A `criu restore` process (from the lazy-pages connection's peer): its
 * descendants are the tree while it restores. */
void dp_guard_root(struct dp_guard *g, pid_t pid);
/* The daemon stops using uffd (its mm is gone): call before closing it. */
void dp_guard_drop(struct dp_guard *g, int uffd);

/* The socket to watch for the guard's death (it never sends); -1 if none. */
int dp_guard_fd(const struct dp_guard *g);
/* The guard's socket hung up, or a periodic check: restarts a dead guard
 * (at most once a second after a failure) and hands it everything. */
void dp_guard_check(struct dp_guard *g);

/* clean (no task left): goodbye, the guard exits, reaped here (bounded).
 * Not clean: the socket is just closed, so the guard stops the tree. */
void dp_guard_end(struct dp_guard *g, int clean);

#endif
