/* lazyd: DistriProc's lazy-pages daemon. Takes the place of `criu lazy-pages`:
 * listens on DIR/lazy-pages.socket for the userfaultfds of the tasks that
 * `criu restore --lazy-pages` creates, and serves their page faults from a
 * page source (lib/pagesrc.h), fetches pipelined, with optional prefetch and
 * background copy. Stats over DIR/control.sock (`distriproc stats`).
 * Returns when the last task has exited. */
#ifndef DP_LAZYD_H
#define DP_LAZYD_H

#include <stdint.h>
#include <netinet/in.h>

#include "hotset.h"
#include "lazymap.h"
#include "pagesrc.h"
#include "prefetch.h"

#define DP_CONTROL_SOCK_NAME "control.sock"
#define DP_RESTORED_PID_NAME "restored.pid"  /* root task's pid in our pid ns, for --on-timeout kill */

struct dp_lazyd_opts {
    const char *workdir;       /* lazy-pages.socket and control.sock live here */
    int listen_fd;             /* a bound, listening lazy-pages socket; -1: create it */
    struct dp_pagesrc *src;
    struct dp_prefetch_cfg prefetch;
    uint64_t background_rate;  /* warm-up rate cap, bytes per second, 0 = none; alone (warmup
                                * none) it means warmup all at most this fast */
    int warmup;                /* enum dp_warmup_mode (lib/warmup.h): none, hot, all */
    const struct dp_hotset *warmup_order; /* trace or classification the warm-up takes first; NULL = none */
    double fault_timeout;      /* seconds a fault may wait for the source, 0 = no limit */
    int on_timeout_kill;       /* 1: kill the restored tree after fault_timeout; 0: keep waiting */
#define DP_FAULT_TIMEOUT_DEFAULT 120.0 /* restore/lazy-pages: --fault-timeout, with --on-timeout kill */
    int ready_fd;              /* gets one byte once listening, then closed; -1 = none */
    /* Memory budget (issue 6, docs/budget.md). 0/0: none. Needs a source
     * that takes write-backs (the page server). */
    uint64_t budget_pages;     /* resident lazy pages allowed (high watermark) */
    double budget_frac;        /* or: this fraction of the tasks' lazy pages */
    uint32_t evict_batch;      /* pages per stop (0: 256) */
    int wb_timeout_ms;         /* a batch's write-back unacknowledged this long: abandoned (0: default) */
#define DP_WB_TIMEOUT_MS_DEFAULT 5000
    uint64_t vbuf_bytes;       /* victim buffer (0: 8 MiB; DP_VBUF_OFF: none) */
#define DP_VBUF_OFF UINT64_MAX
    /* Working set (issue 7, lib/replay.h, lib/trace.h). */
    const struct dp_hotset *replay;  /* checked hot set to fetch in bulk once the restore finished; NULL = none */
    uint32_t replay_batch, replay_window; /* pages; 0 = defaults */
    int replay_stage;          /* keep the replayed pages in the daemon until a fault asks for one, to
                                * measure the replay's hit rate exactly (no --budget with it) */
    double record_s;           /* record the first-touch trace of this many seconds; 0 = off */
    uint8_t cp_id[DP_CPID_SIZE]; /* the checkpoint's identity, stamped on the trace */
    /* Called once with the encoded trace (at the end of the window, or at
     * exit if earlier); may hand it off and return at once. */
    void (*trace_sink)(void *ctx, const uint8_t *buf, size_t len);
    void *trace_ctx;
    const struct sockaddr_in *metrics_addr; /* --metrics: Prometheus endpoint (lib/metrics_http.h); NULL = off */
    /* Called once when background fetching has made every lazy page of every
     * task resident and no budget may drop one again: the source is no longer
     * needed (memory mode releases it, docs/live-migration.md). */
    void (*all_resident)(void *ctx);
    void *all_resident_ctx;
};

int dp_lazyd_listen(const char *workdir, struct dp_err *err);
/* start + step until done + finish. Returns 0 when all tasks exited
 * normally, 1 on error. */
int dp_lazyd_run(const struct dp_lazyd_opts *o);

/* The same loop in pieces, for callers that must keep the daemon serving
 * while they do something else (eviction: faults and events must be handled
 * while threads are being stopped). o must outlive d. */
struct dp_lazyd;
struct dp_lazyd *dp_lazyd_start(const struct dp_lazyd_opts *o);
/* One turn: waits up to timeout_ms and handles what arrived. 1 = keep going,
 * 0 = done (restore finished and every task exited, or a failure with no
 * task left), -1 = error. */
int dp_lazyd_step(struct dp_lazyd *d, int timeout_ms);
/* Writes WORKDIR/stats-final.json, closes and frees; returns the exit status. */
int dp_lazyd_finish(struct dp_lazyd *d);

/* Budget: writes back every modified resident page of every task that can
 * be written back (see docs/budget.md). Fills a JSON reply into b. */
struct dp_sbuf;
void dp_lazyd_sync(struct dp_lazyd *d, struct dp_sbuf *b);

/* Budget: removes (on = 0) or brings back (1) the tasks' eviction helpers,
 * e.g. before a checkpoint of the running tree (docs/eviction.md). Fills a
 * JSON reply into b. */
void dp_lazyd_evict_helpers(struct dp_lazyd *d, int on, struct dp_sbuf *b);

/* Client side of the control socket: sends cmd, returns the malloc'd reply. */
char *dp_lazyd_control(const char *workdir, const char *cmd, struct dp_err *err);

#endif
