/* lazy_tasks: the lazy-pages daemon's tasks beyond their page map: finding,
 * naming and checking the processes behind them, and what a forked child
 * inherits for eviction (docs/budget.md, "Forked children", "Arguments and
 * environment").
 *
 * A uffd FORK event carries the child's userfaultfd but not its pid: the
 * event is delivered while the kernel copies the mm, before the child has a
 * pid at all. Eviction must stop the child's threads (ptrace), so the daemon
 * has to find which process owns which uffd. No kernel interface says it
 * (fdinfo, kcmp and /proc show nothing of a uffd's mm), and guessing by fork
 * order is wrong when threads fork concurrently. So the daemon asks the
 * process: dp_probe_process stops a candidate with ptrace and has it call
 * madvise(MADV_DONTNEED) on one page that is absent from it (checked in its
 * pagemap while it is stopped, so the call changes no memory); the kernel
 * delivers the REMOVE event on the uffd of exactly that mm, and the uffd it
 * arrives on is the candidate's.
 *
 * Also: the argument/environment area of a process (mm arg_start..env_end,
 * /proc/PID/stat fields 48-51), its start time (to notice a recycled pid),
 * and pagemap presence: I/O on /proc and ptrace. dp_fork_inherit is pure. */
#ifndef DP_LAZY_TASKS_H
#define DP_LAZY_TASKS_H

#include <stdint.h>
#include <sys/types.h>

#include "evict_policy.h"
#include "lazymap.h"
#include "pmap.h"
#include "util.h"

/* Install-hash flags (aux of a task's hash map entry, keyed by image page). */
#define DP_HASH_ALWAYS_DIRTY 1u  /* the server does not hold what the process has */
#define DP_HASH_PUT_INFLIGHT 2u  /* a background write-back of the page awaits its ack */
#define DP_HASH_WP 4u            /* installed write-protected: DP_HASH_WRITTEN says if it is dirty (lazyd_wp.c) */
#define DP_HASH_WRITTEN 8u       /* a write-protect fault came since the install or the last write-back */

/* Most pages pinned for a process's arguments and environment (ARG_MAX-sized
 * areas are 2 MiB at most with an 8 MiB stack limit: 512 pages). */
#define DP_ARGS_MAX_PAGES 1024

/* Page-aligned [*lo, *hi) covering arg_start..arg_end and env_start..env_end
 * of pid's mm. 0, or -1 (gone, no mm, or a range above DP_ARGS_MAX_PAGES). */
int dp_proc_args_range(pid_t pid, uint64_t *lo, uint64_t *hi);
/* Start time of pid (clock ticks since boot, stat field 22): with the pid it
 * names one process, even after pid reuse. 0 if gone. */
uint64_t dp_proc_start_time(pid_t pid);
/* 1 if the process pid started at `start` runs no more: no such pid, another
 * process under it, or a zombie. */
int dp_proc_exited(pid_t pid, uint64_t start);
/* 1 if every page of [addr, addr+len) is present in pid's memory, 0 if one
 * is not, -1 if the pagemap cannot be read. */
int dp_pagemap_present(pid_t pid, uint64_t addr, uint64_t len);
/* 1 if the page at addr is neither present nor swapped out (madvise
 * DONTNEED on it changes nothing), 0 if it is, -1 on error. */
int dp_pagemap_absent(pid_t pid, uint64_t addr);

struct dp_probe_ops {
    /* Serves the daemon's descriptors (dp_inject_ops.pump): the probe's
     * REMOVE event is read there. < 0 aborts. */
    int (*pump)(void *arg);
    /* The k-th page to try (k = 0, 1, ...): one the daemon believes absent in
     * every address space it has not placed yet, with no fetch outstanding.
     * 0: no more. */
    uint64_t (*addr)(void *arg, int k);
    /* From now on a REMOVE of exactly [addr, addr+4096) is the probe's: note
     * the task it arrives on, change no page state, and install nothing at
     * addr (an install there would race with the injected madvise). */
    void (*arm)(void *arg, uint64_t addr);
    /* Ends it: the task id the REMOVE arrived on, 0 none, -1 more than one. */
    int (*disarm)(void *arg);
    void *arg;
};

/* Stops pid (ptrace, every thread) and probes up to max_tries pages. Returns
 * the task id whose uffd belongs to pid's mm; 0 when no probe page reached
 * any uffd (no lazy memory there, e.g. it exec'd, or no page was fit: try
 * again later); -2 when the process went away or could not be stopped, is
 * traced by another process (criu detaching), or two tasks saw the page's
 * REMOVE (ambiguous: try again later); -1 when it is
 * in an unknown ptrace state (err set: the caller kills it). */
int dp_probe_process(pid_t pid, const struct dp_probe_ops *ops, int max_tries, struct dp_err *err);

/* A child after fork shares copy-on-write every page its parent had
 * resident: for each RESIDENT page of the child's map (cmap, cloned from the
 * parent's) with a parent hash, the child gets the same hash (what the
 * server holds for (checkpoint pid, page): it cannot change while both live,
 * no write-back while shared) except that a page whose background
 * write-back is in flight is always dirty for the child (the ack updates
 * the parent's entry only); and a policy record of its own (owner), unless
 * the page is in [pin_lo, pin_hi). 0, or -1 when out of memory (the pages
 * not done are never victims). */
int dp_fork_inherit(const struct dp_lazymap *cmap, const struct dp_pmap *phash, struct dp_pmap *chash,
                    struct dp_evict *pol, int32_t owner, uint64_t pin_lo, uint64_t pin_hi, uint64_t now);

#endif
