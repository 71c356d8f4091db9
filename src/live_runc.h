/* live_runc: memory mode for a runc container (`serve --runc ID`). runc
 * checkpoints it with --lazy-pages: runc hands CRIU the container's own
 * freezer cgroup (FreezeCgroup, cgroup v1) and writes one byte to its status
 * fd once the images are written. serve_live.c then freezes that cgroup again
 * and kills runc and its criu together (one process group), exactly as for a
 * --pid tree; --leave-running keeps runc from destroying the container, so
 * runc still knows it: `runc state` says paused while it is held, running
 * after a rollback, stopped after the release (then serve runs runc delete). */
#ifndef DP_LIVE_RUNC_H
#define DP_LIVE_RUNC_H

#include <sys/types.h>

#include "runc_ck.h"
#include "util.h"

/* Starts `runc checkpoint --lazy-pages --page-server PAGE_SERVER --status-fd 1
 * --leave-running --tcp-established ID` into images (runc.log there), in the
 * container's network namespace when it joins one by path (lib/runc.h). Its
 * stdout is a pipe whose read end is *status_rd. Returns runc's pid (the
 * leader of its own process group, its criu included), -1 with err. */
pid_t dp_live_runc_spawn(const struct dp_runc_ck *c, const char *id, const char *images, const char *page_server,
                         int *status_rd, struct dp_err *err);

/* After the release: waits (bounded) for the container's tasks to be gone
 * from cg, then `runc delete --force ID` so runc forgets it. Logs the outcome. */
void dp_live_runc_forget(const char *id, const char *root, const char *cg);

#endif
