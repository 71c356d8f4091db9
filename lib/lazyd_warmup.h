/* lazyd_warmup: the lazy-pages daemon's warm-up (issue 16): after the
 * restore it moves the remaining memory in the background, in the order and
 * at the pace lib/warmup.h decides, behind the faults. The daemon reaches it
 * through a few hooks and gives it a small table of operations on its tasks
 * (struct dp_lzw_io), so this file knows nothing of tasks, uffds or the page
 * source. Stats: the "warmup" object of `distriproc stats --json`. */
#ifndef DP_LAZYD_WARMUP_H
#define DP_LAZYD_WARMUP_H

#include <jansson.h>
#include <stdint.h>

#include "hotset.h"
#include "lazystats.h"
#include "warmup.h"

struct dp_lzw_io {
    void *ctx;
    /* Submits warm-up fetches for the pages of [img, +npages) of the task
     * that are still remote; pages submitted, or -1 when the task is gone. */
    int64_t (*fetch)(void *ctx, int task, uint64_t img, uint32_t npages);
    /* Calls add for every lazy range of every live task. */
    void (*each_range)(void *ctx, void (*add)(void *arg, int task, uint64_t img, uint64_t npages), void *arg);
    /* The live task restored as checkpoint pid (not a forked child), or -1. */
    int (*task_of_pid)(void *ctx, int32_t pid);
    /* Pages of live tasks not resident yet (remote or in flight). */
    uint64_t (*remote_pages)(void *ctx);
    /* Lazy pages resident and in flight (what a budget counts). */
    uint64_t (*used_pages)(void *ctx);
    /* The budget in pages (its high watermark), 0 without one. */
    uint64_t (*budget_pages)(void *ctx);
    /* Every lazy page is resident: the source is not needed any more. */
    void (*all_resident)(void *ctx);
};

struct dp_lzw_opts {
    enum dp_warmup_mode mode;
    uint64_t rate_cap;               /* bytes/s, 0 = adaptive only */
    const struct dp_hotset *order;   /* hot set or classification to go first; NULL = none */
    uint32_t chunk_pages;            /* pages per request; 0 = DP_WU_CHUNK_PAGES */
    int own_lane;                    /* on the source's bulk lane (its own connection), for the stats */
};

enum dp_lzw_state { DP_LZW_OFF, DP_LZW_WAITING, DP_LZW_RUNNING, DP_LZW_DONE };

struct dp_lzw {
    struct dp_lzw_opts o;
    struct dp_lzw_io io;
    struct dp_warmup_plan plan;
    struct dp_warmup_ctl ctl;
    enum dp_lzw_state state;
    const char *done_why;            /* "all resident", "hot set warmed", "budget reached", ... */
    uint64_t inflight_pages;         /* warm-up pages in flight (the window counts these) */
    uint64_t submitted_pages;        /* pages: sent (pages: completed) */
    uint64_t restore_ns, start_ns, done_ns;
    uint64_t requests, pages, sweeps;
    uint64_t sweep_start_pages;      /* submitted_pages when the last sweep began */
    uint64_t sweep_wait_ns;          /* an idle sweep: the next one not before this */
    struct dp_hist fault_during;     /* faults sent while warm-up was in flight */
    struct dp_hist fault_idle;       /* faults sent with none in flight */
    uint64_t faults_behind;          /* of fault_during: took clearly longer (the window was halved) */
    uint64_t fault_wait_ns;          /* sum of their latency above the idle average */
    uint64_t max_ahead_pages;        /* most warm-up pages in flight when a fault was sent */
    uint64_t max_left_at_fault;      /* most plan pages still queued when a fault was served */
    uint64_t faults_overtook;        /* faults served while the plan still had pages queued */
    int all_here;                    /* mode all ended with every lazy page resident */
};

/* Off unless o->mode is not none. restore_ns: when the daemon started. */
void dp_lzw_init(struct dp_lzw *w, const struct dp_lzw_opts *o, const struct dp_lzw_io *io, uint64_t now_ns);
void dp_lzw_free(struct dp_lzw *w);
/* The restore finished (and any hot-set replay is done): plan, then start. */
void dp_lzw_begin(struct dp_lzw *w, uint64_t now_ns);
/* Sends what the window, the cap and the budget allow (timer and completions). */
void dp_lzw_pump(struct dp_lzw *w, uint64_t now_ns);
/* A warm-up fetch of pages pages completed (installed or dropped); the
 * next dp_lzw_pump refills the window. */
void dp_lzw_done(struct dp_lzw *w, uint32_t pages, uint64_t now_ns);
/* A fault's fetch is sent: returns the warm-up chunks in flight ahead of
 * it, to be handed back to dp_lzw_fault. */
uint32_t dp_lzw_fault_sent(struct dp_lzw *w);
/* That fault's fetch completed after latency_ns. */
void dp_lzw_fault(struct dp_lzw *w, uint64_t latency_ns, uint32_t ahead);
/* 1 while warm-up requests may be in flight or queued. */
int dp_lzw_active(const struct dp_lzw *w);
/* The "warmup" object of the daemon's stats. */
json_t *dp_lzw_json(const struct dp_lzw *w);
/* Its families of the daemon's --metrics exposition (lib/metrics.h). */
struct dp_sbuf;
void dp_lzw_metrics(const struct dp_lzw *w, struct dp_sbuf *b);

#endif
