/* lazyd: DistriProc's lazy-pages daemon. Takes the place of `criu lazy-pages`:
 * listens on DIR/lazy-pages.socket for the userfaultfds of the tasks that
 * `criu restore --lazy-pages` creates, and serves their page faults from a
 * page source (lib/pagesrc.h), fetches pipelined, with optional prefetch and
 * background copy. Stats over DIR/control.sock (`distriproc stats`).
 * Returns when the last task has exited. */
#ifndef DP_LAZYD_H
#define DP_LAZYD_H

#include <stdint.h>

#include "pagesrc.h"
#include "prefetch.h"

#define DP_CONTROL_SOCK_NAME "control.sock"
#define DP_RESTORED_PID_NAME "restored.pid"  /* root task's pid in our pid ns, for --on-timeout kill */

struct dp_lazyd_opts {
    const char *workdir;       /* lazy-pages.socket and control.sock live here */
    int listen_fd;             /* a bound, listening lazy-pages socket; -1: create it */
    struct dp_pagesrc *src;
    struct dp_prefetch_cfg prefetch;
    uint64_t background_rate;  /* bytes per second, 0 = off (pages stay remote until touched) */
    double fault_timeout;      /* seconds a fault may wait for the source, 0 = no limit */
    int on_timeout_kill;       /* 1: kill the restored tree after fault_timeout; 0: keep waiting */
    int ready_fd;              /* gets one byte once listening, then closed; -1 = none */
};

int dp_lazyd_listen(const char *workdir, struct dp_err *err);
/* Returns 0 when all tasks exited normally, 1 on error. */
int dp_lazyd_run(const struct dp_lazyd_opts *o);

/* Client side of the control socket: sends cmd, returns the malloc'd reply. */
char *dp_lazyd_control(const char *workdir, const char *cmd, struct dp_err *err);

#endif
