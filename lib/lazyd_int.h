/* lazyd_int: the lazy-pages daemon's private header, shared by its rooms
 * (docs/daemon.md). Callers use lib/lazyd.h; nothing outside lib/lazyd*.c
 * includes this file.
 *
 *   lazyd.c        setup, the event loop, task lifecycle
 *   lazyd_fault.c  the fault path: uffd message -> decide -> fetch -> install -> wake
 *   lazyd_warm.c   replay/stage/trace (issue 7) and background copy
 *   lazyd_evict.c  eviction under the budget, write-back, sync (issue 6)
 *   lazyd_proc.c   the processes behind the tasks: pids, /proc, pins, kill_tree
 *   lazyd_stats.c  stats, metrics and the control socket
 *
 * Functions here are the rooms' doors: each is defined in the room named
 * above its block and called from the others. */
#ifndef DP_LAZYD_INT_H
#define DP_LAZYD_INT_H

#include <stdint.h>

#include <jansson.h>

#include "dirty.h"
#include "ehelper.h"
#include "evict_policy.h"
#include "guard.h"
#include "inject.h"
#include "lazyd.h"
#include "lazymap.h"
#include "lazyd_warmup.h"
#include "lazystats.h"
#include "metrics_http.h"
#include "pmap.h"
#include "replay.h"
#include "trace.h"
#include "uffd.h"
#include "util.h"

#define PG DP_PAGE_SIZE

/* Why a request was made (its pages' flags and counters follow it) and
 * where it is: at the source, waiting to install after the task's events,
 * or waiting to be resubmitted after a failed fetch. */
enum { K_FAULT, K_PREFETCH, K_BACKGROUND, K_REPLAY, K_PIN };
enum { R_AT_SOURCE, R_INSTALL_RETRY, R_FETCH_RETRY };

/* A descriptor the loop watches, carrying what to do when it is ready (as
 * CRIU's struct lazy_pages_fd with read_event, Redis' ae.c file events):
 * the main loop and the nested pump both run it through one dispatch. */
struct dp_lazyd;
struct handler;
typedef void (*lz_read_event)(struct dp_lazyd *d, struct handler *h);
struct handler {
    int fd;
    lz_read_event read_event;
    int nested;           /* also run by the nested pump (lz_pump) */
    int last;             /* run after the turn's other handlers (the bulk lane: faults first) */
    void *ptr;
};

struct lz_task;

/* A thread waiting for a page in flight. */
struct lz_waiter {
    uint64_t addr;   /* run-time address that faulted */
    uint64_t t0;
};

/* One fetch: the source fills f.buf, the fault room installs it and wakes
 * its waiters (f is the first member: the completion finds the request). */
struct lz_req {
    struct dp_fetch f;
    struct lz_task *t;
    struct lz_req *prev, *next;   /* task's request list */
    struct lz_req *rnext;         /* retry list */
    int kind, state;
    uint64_t t_submit, retry_at, backoff_ns;
    uint32_t done_pages;          /* install progress */
    struct lz_waiter *w;
    uint32_t nw, capw;
    int warned;
    int retries;
    uint32_t wu_ahead;            /* K_FAULT: warm-up chunks in flight when it was sent */
};

struct dp_lazyd;

/* One userfaultfd: a restored process (or a forked child) and its lazy
 * memory, requests, counters and (budget) eviction state. */
struct lz_task {
    struct lz_task *next;
    struct dp_lazyd *d;
    int id, parent_id;
    int32_t pid;          /* checkpoint pid: what the source knows */
    int32_t shown_pid;    /* pid CRIU sent (0 for a forked child: unknown) */
    int uffd;
    int alive;
    int broken;           /* cannot be served: uffd kept open, never read */
    struct dp_lazy_range *ownzap; /* while an eviction batch zaps: its ranges (the batch's own array) */
    size_t n_ownzap;
    struct handler h;
    struct dp_lazymap map;
    struct dp_prefetch_state pf;
    struct dp_lazy_counters c;
    struct dp_hist lat;
    struct lz_req *reqs;
    struct lz_req *retry;
    int refs;             /* requests still owned by the source */
    uint64_t started_ns, ended_ns;
    uint64_t final_remote, final_resident; /* page counts when it exited */
    /* eviction (budget) */
    pid_t host_pid;       /* in the daemon's pid namespace; 0 = not known yet */
    uint64_t host_start;  /* its start time: a recycled pid is not this task */
    uint64_t pin_lo, pin_hi; /* run-time [lo, hi): argv and environ, never evicted */
    int pinned;
    int inj_open;
    struct dp_inject in;
    uint64_t evictions, writebacks;
    struct dp_pmap hash;  /* image page -> hash of the server's copy; aux: EV_ALWAYS_DIRTY, EV_PUT_INFLIGHT */
    int wp;               /* lazy ranges re-registered MISSING|WP: 0 not yet, 1 yes, -1 refused (lazyd_wp.c) */
    int eh_state;         /* eviction helper (lib/ehelper.h): 0 not tried, 1 running, 2 installed and
                             not yet answering (not used), -1 none, -2 removed on request */
    struct dp_ehelper eh;
    uint64_t eh_rseq[64]; /* pages holding the threads' rseq areas when the helper was installed */
    size_t eh_nrseq;
};

/* Eviction state of the daemon (docs/budget.md). */
struct lz_evict {
    int on;
    uint64_t seed;
    struct dp_page_hash zero_hash;
    struct dp_evict pol;
    struct dp_vbuf vb;
    uint32_t batch;
    int active;                /* above the high watermark: evict down to the low one */
    int busy;                  /* inside a batch (the pump must not start another) */
    struct lz_task *cur;       /* the task of that batch */
    uint64_t lazy_pages;       /* lazy pages of the tasks received (for a fractional budget) */
    uint64_t backoff_until;
    uint64_t batches, evictions, writebacks, wb_requests, wb_errors, cancels, refaults, vb_hits;
    uint64_t shared_skips, max_resident, syncs, sync_pages;
    struct dp_hist stop;       /* whole stop per batch: stop, drain, read, write back, zap, resume */
    struct dp_hist wb_lat;     /* a batch's write-backs (in a stop, or background): sent -> all acknowledged */
    int put_wait, put_status;
    uint64_t wb_aborts;        /* batches abandoned at --writeback-timeout */
    uint64_t wb_incomplete;    /* batches whose write-back did not complete (refused, abandoned, deferred) */
    int clean_inflight;
    uint64_t cleaned, clean_requests;
    /* write-protect tracking and the eviction helper (issue 13) */
    uint64_t wp_tasks, wp_faults, clean_drops, helper_tasks, helper_batches, helper_pages, helper_busy,
        helper_fallback, helper_failures, nostop_cleaned;
    uint64_t nostop_tracked;       /* untracked victims protected and compared without a stop */
    uint64_t nostop_abandoned;     /* cleaned without a stop, not moved: written again or not acked */
    int helper_on;                 /* DISTRIPROC_EVICT_HELPER != off */
    struct dp_hist helper_call;    /* one helper batch: request -> moved pages read */
    struct dp_hist nostop_wait;    /* written victims without a stop: PUT sent -> acked (the loop serves) */
    struct dp_evict_key *ready;    /* written victims cleaned without a stop, acked: the helper moves them */
    uint32_t nready, ready_cap;    /* ready_cap bounds them and those still awaiting their ack */
    uint32_t nostop_inflight;      /* pages of those write-backs awaiting their ack */
    struct dp_hist install_stop;   /* the stops that installed a helper: stop -> resume */
    uint64_t install_phase_ns[5];  /* summed over installs: map, uffd, channel, thread, first answer */
    uint64_t install_next;         /* no eager install try before (ns) */
    uint64_t stop_why[4];          /* pages to the stop path: no helper, untracked, written, other */
};

/* Placing tasks on their processes (lazyd_proc.c): forked children are
 * found by probing which process owns which uffd (lib/lazy_tasks.h). */
struct lz_place {
    struct {
        int armed, hits, task; /* a probe's madvise is on its way to addr */
        uint64_t addr;
    } probe;
    uint64_t ident_next_ns, ident_backoff_ns;
    uint64_t children_placed, probes;
    int tries;                 /* looking up the tasks' processes after the restore (argv pins) */
};

/* The daemon: its loop's descriptors, the tasks, and each room's state. */
struct dp_lazyd {
    const struct dp_lazyd_opts *o;
    int ep;
    struct handler listen_h, src_h, ctl_h, timer_h, sig_h;
    struct handler bulk_h;     /* the source's bulk lane (pagesrc.h), the warm-up's */
    struct lz_task *tasks;
    int next_id;
    int conns;             /* open lazy-pages connections */
    int finished;          /* "restore finished" received */
    int failed;
    int killed;
    int stop;
    uint64_t start_ns, last_probe_ns;
    int all_resident_said;     /* o->all_resident called */
    struct dp_lzw wu;          /* the warm-up (lib/lazyd_warmup.h) */
    uint32_t src_ev, bulk_ev;
    int bulk_lane;             /* warm-up fetches marked bulk (DISTRIPROC_WARMUP_LANE != shared) */
    char sock_path[4200], ctl_path[4200];
    struct lz_evict ev;
    uint64_t spin_until_ns;    /* poll without sleeping until then: a fault's reply is due */
    uint64_t fault_rtt_ns;     /* moving average of a fault's fetch; no spinning when slower */
    struct dp_replay replay;   /* o->replay in bulk (issue 7) */
    int replaying;
    int staging;               /* stage mode: replayed pages wait in stage until a fault */
    struct dp_vbuf stage;      /* (task id, image address) -> the page as the replay fetched it */
    struct dp_trace trace;     /* first touches, for the next restore */
    int tracing, trace_sent;
    uint64_t trace_pages;
    struct dp_guard guard;     /* holds every uffd too: our death is not the tree's zeros */
    struct handler guard_h;
    unsigned guard_gen;
    struct lz_place place;
    struct dp_metrics_http *metrics; /* --metrics endpoint, or NULL */
    struct handler metrics_h;
};

/* ==== lazyd.c: setup, the loop, task lifecycle ==== */

/* Watches fd (EPOLLIN) with h: read_event runs when it is ready; nested:
 * also inside a nested pump (faults, completions, acks, uffd events may
 * not wait for an eviction's stop to end; the control socket may). */
int lz_ep_add(struct dp_lazyd *d, struct handler *h, int fd, lz_read_event read_event, int nested, void *ptr);
/* Accepts a peer of listening socket lfd (path: its permission check,
 * lib/perm.h) and watches it with read_event (nested: see lz_ep_add); the
 * new fd, or -1. */
int lz_accept(struct dp_lazyd *d, int lfd, int flags, const char *path, lz_read_event read_event, int nested);
/* The live task with daemon id id, or NULL. */
struct lz_task *lz_task_by_id(struct dp_lazyd *d, int id);
int lz_tasks_alive(const struct dp_lazyd *d);
/* t's process (mm) is gone: close its uffd, drop what no one owns. */
void lz_task_gone(struct dp_lazyd *d, struct lz_task *t, const char *why);
/* UFFD_EVENT_FORK: a new task for the child's uffd; NULL when it cannot be tracked. */
struct lz_task *lz_task_fork(struct dp_lazyd *d, struct lz_task *parent, int ufd);
/* One non-blocking turn of the loop for nested waits (eviction's stop,
 * the probe): faults, fetch completions, acks and uffd events only. */
void lz_pump(struct dp_lazyd *d);

/* ==== lazyd_fault.c: message -> decide -> fetch -> install -> wake ==== */

/* Reads and applies t's uffd messages (faults and FORK/REMAP/REMOVE/UNMAP),
 * then retries the installs that waited for them. */
void lz_handle_uffd(struct dp_lazyd *d, struct lz_task *t);
/* A page a fetch may be submitted for (REMOTE, not staged). */
int lz_fetchable(uint8_t pg);
/* Fetches the fetchable pages of image range [img, +n) of reg; returns how many. */
uint32_t lz_submit_remote_runs(struct dp_lazyd *d, struct lz_task *t, struct dp_lazy_region *reg,
                               uint64_t img, uint32_t n, int kind);
/* The request in flight that covers image address img, or NULL. */
struct lz_req *lz_find_req(struct lz_task *t, uint64_t img);
void lz_req_free(struct lz_req *r);
void lz_req_unlink(struct lz_req *r);
/* Installs a copy the daemon holds: 1 installed, -1 process gone, 0 not (*rc). */
int lz_local_copy(struct dp_lazyd *d, struct lz_task *t, uint8_t *pg, uint64_t page, uint64_t img,
                  const uint8_t *data, uint64_t t0, int *rc);

/* ==== lazyd_warm.c: replay, stage, trace, background copy ==== */

void lz_replay_pump(struct dp_lazyd *d);
void lz_stage_pages(struct dp_lazyd *d, struct lz_req *r);
void lz_stage_drop(struct dp_lazyd *d, struct lz_task *t, uint64_t start, uint64_t end, int expired);
int lz_stage_install(struct dp_lazyd *d, struct lz_task *t, struct dp_lazy_region *reg, uint8_t *pg,
                     uint64_t page, uint64_t t0);
void lz_stage_miss(struct dp_lazyd *d);
void lz_trace_touch(struct dp_lazyd *d, struct lz_task *t, uint64_t img, uint64_t now);
void lz_trace_flush(struct dp_lazyd *d, uint64_t now, int at_exit);
/* The warm-up (issue 16, lib/lazyd_warmup.h): set up from the options, and
 * one step (begin once the restore finished and any replay is done, then
 * refill the window) at every loop turn and timer tick. */
void lz_warmup_init(struct dp_lazyd *d);
void lz_warmup_step(struct dp_lazyd *d);

/* ==== lazyd_evict.c: eviction under the budget (docs/budget.md) ==== */

int lz_ev_init(struct dp_lazyd *d);
void lz_ev_free(struct dp_lazyd *d);
/* One eviction batch when above the high watermark; after every loop turn. */
void lz_ev_maybe(struct dp_lazyd *d);
/* Hooks of the fault path and the task lifecycle (without a budget they
 * do nothing, but for task_new's page count and task_gone's cleanup). */
void lz_ev_installed(struct dp_lazyd *d, struct lz_task *t, uint64_t addr, uint64_t img, const uint8_t *page,
                     int always_dirty, int wp);
int lz_ev_fault(struct dp_lazyd *d, struct lz_task *t, struct dp_lazy_region *reg, uint8_t *pg, uint64_t page,
                uint64_t t0);
void lz_ev_forget(struct dp_lazyd *d, struct lz_task *t, uint64_t start, uint64_t end);
void lz_ev_remap(struct dp_lazyd *d, struct lz_task *t, uint64_t from, uint64_t to, uint64_t len);
void lz_ev_task_new(struct dp_lazyd *d, struct lz_task *t);
void lz_ev_task_gone(struct dp_lazyd *d, struct lz_task *t);
void lz_ev_fork_inherit(struct dp_lazyd *d, struct lz_task *parent, struct lz_task *c);
uint64_t lz_ev_resident(const struct dp_lazyd *d);
uint64_t lz_ev_high(const struct dp_lazyd *d);
uint64_t lz_ev_low(const struct dp_lazyd *d);

/* ==== lazyd_wp.c: exact dirty tracking with write-protect ==== */

/* UFFDIO_COPY for an install: write-protected when t's ranges are
 * registered WP (armed on first use under a budget); *wp = 1 then. */
int lz_wp_copy(struct dp_lazyd *d, struct lz_task *t, uint64_t dst, const void *src, uint64_t len,
               uint64_t *done, int *wp);
/* A write-protect fault: mark the page written, un-protect, wake. */
void lz_wp_fault(struct dp_lazyd *d, struct lz_task *t, uint64_t addr);
/* The same without a fault: the daemon itself is about to write the page
 * through /proc/PID/mem (inject's stack scratch), which a write-protected
 * page refuses (EIO: the remote write cannot wait for our own uffd).
 * 0 or -errno. */
int lz_wp_release(struct dp_lazyd *d, struct lz_task *t, uint64_t addr);

/* ==== lazyd_proc.c: the processes behind the tasks ==== */

/* SIGKILLs the restored tree (restored.pid), else every announced task. */
void lz_kill_restored(struct dp_lazyd *d);
void lz_pin_fetch(struct dp_lazyd *d, struct lz_task *t);
void lz_find_host_pids(struct dp_lazyd *d);
void lz_identify_children(struct dp_lazyd *d);
/* A child forked: look for its process at the next batch. */
void lz_place_forked(struct dp_lazyd *d);
/* From the timer: announced tasks not placed yet are looked for again. */
void lz_place_retry(struct dp_lazyd *d);

/* ==== lazyd_stats.c: stats, metrics, control socket ==== */

void lz_stats_json(struct dp_lazyd *d, struct dp_sbuf *b);
void lz_metrics_render(void *ctx, struct dp_sbuf *out);
void lz_handle_ctl_listen(struct dp_lazyd *d, struct handler *h);
void lz_handle_ctl_client(struct dp_lazyd *d, struct handler *h);

#endif
