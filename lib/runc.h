/* runc: finds and drives runc for container checkpoints and lazy restores.
 *
 * Which runc: $DISTRIPROC_RUNC if set, else `runc` on PATH (Debian 12's
 * runc 1.1.5, installed by `make deps`); it must be >= DP_RUNC_MIN_VERSION.
 * runc always gets `--criu <our criu wrapper>` (it runs `criu swrk` and talks
 * RPC to it) and, when given, `--root DIR` (its state directory).
 *
 * Argument building and version parsing are pure and unit-tested; running
 * runc is bounded in time (SIGKILL at the bound) with its stderr in a log
 * file whose tail an error shows. */
#ifndef DP_RUNC_H
#define DP_RUNC_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "criu.h"
#include "util.h"

#define DP_RUNC_ENV "DISTRIPROC_RUNC"
/* 1.1: restore --lazy-pages with --work-path, and a network namespace given by
 * path checkpointed as external (extRootNetNS) and re-joined on restore. */
#define DP_RUNC_MIN_VERSION "1.1"

/* Parses `runc --version` output ("runc version 1.1.5+ds1\n..."). 0 or -1. Pure. */
int dp_runc_parse_version(const char *text, struct dp_criu_version *v);

/* A container ID as runc accepts it: [A-Za-z0-9_+.-], 1..1024, not "." or "..". Pure. */
int dp_runc_id_ok(const char *id);

/* How to run runc. */
struct dp_runc {
    char path[4096];  /* the runc binary */
    char criu[4096];  /* passed as --criu */
    const char *root; /* --root (NULL: runc's default, /run/runc) */
    struct dp_criu_version version;
};

/* Finds runc and criu, checks runc's version. On failure err says what to do
 * (install runc: make deps, or set DISTRIPROC_RUNC). */
int dp_runc_open(struct dp_runc *r, const char *root, struct dp_err *err);

/* runc's argv: runc [--root R] --criu C ACTION ... */
struct dp_runc_checkpoint_opts {
    const char *id, *image_path, *work_path;
    int leave_running, tcp_established, shell_job, file_locks;
    /* memory mode (src/live_runc.c): --lazy-pages with CRIU's page server on
     * page_server (ADDR:PORT) and runc's --status-fd status_fd (>= 1), where
     * runc writes one byte once the images are written */
    int lazy_pages, status_fd;
    const char *page_server;
};
struct dp_runc_restore_opts {
    const char *id, *image_path, *work_path, *bundle, *pid_file;
    int lazy_pages, detach, tcp_established, shell_job, file_locks;
};
/* Pure; -1 with err on a missing field, a bad ID, or overflow. */
int dp_runc_checkpoint_args(const struct dp_runc *r, const struct dp_runc_checkpoint_opts *o,
                            struct dp_criu_argv *a, struct dp_err *err);
int dp_runc_restore_args(const struct dp_runc *r, const struct dp_runc_restore_opts *o, struct dp_criu_argv *a,
                         struct dp_err *err);
/* runc [--root R] ACTION ARGS... (state, kill, delete, list); args NULL-terminated. Pure. */
int dp_runc_simple_args(const struct dp_runc *r, const char *action, const char *const *args,
                        struct dp_criu_argv *a, struct dp_err *err);

/* What `runc state ID` says. */
struct dp_runc_state {
    int pid;
    char status[32];     /* created, running, paused, stopped */
    char bundle[4096];
    char rootfs[4096];
};
/* Parses `runc state` JSON. Pure. */
int dp_runc_state_parse(const char *json, size_t len, struct dp_runc_state *st, struct dp_err *err);
/* Runs `runc state ID`: 0 with *st; 1 if runc knows no such container;
 * -1 with err on anything else. */
int dp_runc_state(const struct dp_runc *r, const char *id, struct dp_runc_state *st, struct dp_err *err);

/* Network namespaces: a container that joins an existing network namespace
 * by path must be checkpointed and restored by a runc (and so a criu) that
 * runs in that namespace. Otherwise CRIU sees a foreign namespace, treats it
 * as part of the dump and locks all of it with an iptables DROP rule that
 * stays after the dump (runc declares it external, but the lock still
 * applies): every other process of that host loses the network, the page
 * server included. In the container's own namespace CRIU dumps no namespace
 * and locks only the container's TCP connections, and on restore the tasks
 * land in the namespace runc runs in. So netns (a name under /run/netns or
 * a path such as /proc/PID/ns/net; NULL: ours) is entered first. */

/* Runs runc with argv (from the builders above) to completion within
 * timeout_s, in netns: stdin/stdout /dev/null, stderr appended to log (NULL:
 * ours). Returns 0 on exit status 0, else -1 with err naming the failure,
 * and the tail of log printed. */
int dp_runc_run(const char *const argv[], const char *netns, const char *log, double timeout_s,
                struct dp_err *err);

/* Starts runc with argv in netns, its stdin/stdout/stderr on the given fds
 * (which a detached container inherits as its stdio), in its own process
 * group. The caller polls it (waitpid) and kills it at its own bound. */
pid_t dp_runc_spawn(const char *const argv[], const char *netns, int in_fd, int out_fd, int err_fd,
                    struct dp_err *err);

/* Removes what runc keeps of container id (runc delete --force), bounded;
 * quiet when there is nothing. For cleanup after a failed restore. */
void dp_runc_force_delete(const struct dp_runc *r, const char *id);

#endif
