/* serve_live: `distriproc serve --pid` (memory mode): freeze the tree in a
 * freezer cgroup, take its skeleton with `criu dump --lazy-pages`, kill CRIU,
 * (`serve --runc ID`: a runc container, in its own freezer cgroup, with
 * `runc checkpoint --lazy-pages`, src/live_runc.h) and serve the lazy pages straight from the frozen tree's memory, driven by
 * the commit/rollback machine of lib/livesm.h. docs/live-migration.md. */
#ifndef DP_SERVE_LIVE_H
#define DP_SERVE_LIVE_H

#include <sys/types.h>

#include "pageserver.h"

#define DP_LIVE_STATE_NAME "live.state"
#define DP_LIVE_CONNECT_TIMEOUT_S 60.0
#define DP_LIVE_DEFAULT_WORKDIR "/var/lib/distriproc/live"

struct serve_live_args {
    pid_t pid;                 /* 0 (and no runc_id): re-attach to WORKDIR/live.state */
    const char *runc_id;       /* a runc container instead of --pid (src/live_runc.h) */
    const char *runc_root;     /* its runc --root (NULL: runc's own) */
    const char *workdir;
    double connect_timeout_s;  /* roll back if no destination connects by then */
};

/* Runs memory mode to the end (a final state); o is the page server's
 * options (listen address, key, ...; images_dir is set here). Exit status. */
int dp_serve_live(const struct serve_live_args *a, struct dp_server_opts *o);

#endif
