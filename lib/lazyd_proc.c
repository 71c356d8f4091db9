/* lazyd_proc: the processes behind the daemon's tasks. A task is a uffd;
 * eviction and the argv/environ pins need its process: the pids CRIU
 * announced are mapped to ours through /proc (restored.pid, namespaces),
 * forked children are found by probing (lib/lazy_tasks.h), and the restored
 * tree is killed from here when it must not run on. */
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>
#include <sys/stat.h>

#include "lazy_tasks.h"
#include "lazyd_int.h"

/* ==== the restored tree ==== */

/* criu writes restored.pid into the work dir: the root of the tree. */
static int read_pid_file(const char *dir, const char *name)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    return dp_read_pid_file(path);
}

/* Fills pids with root and all its descendants (found through /proc, parents
 * before children); returns how many, at most cap. */
static int collect_tree(int root, int *pids, int cap)
{
    int n = 0;
    pids[n++] = root;
    for (int i = 0; i < n; i++) {
        DIR *dir = opendir("/proc");
        if (!dir)
            break;
        struct dirent *e;
        while ((e = readdir(dir)) && n < cap) {
            int p = atoi(e->d_name);
            if (p <= 0)
                continue;
            long ppid;
            if (dp_proc_stat_field(p, 4, &ppid) == 0 && ppid == pids[i])
                pids[n++] = p;
        }
        closedir(dir);
    }
    return n;
}

/* SIGKILLs pid and all its descendants. */
static void kill_tree(int root)
{
    int pids[4096];
    int n = collect_tree(root, pids, (int)DP_ARRAY_LEN(pids));
    for (int i = 0; i < n; i++)
        kill(pids[i], SIGKILL);
}

/* The tree must not run on (timeout, fence, signal): the whole restored
 * tree if its root is known, else every task CRIU announced. */
void lz_kill_restored(struct dp_lazyd *d)
{
    int root = read_pid_file(d->o->workdir, DP_RESTORED_PID_NAME);
    if (root > 0) {
        kill_tree(root);
        return;
    }
    for (struct lz_task *x = d->tasks; x; x = x->next)
        if (x->alive && x->shown_pid > 0)
            kill(x->shown_pid, SIGKILL);
}

/* ==== placing tasks: host pids and argv/environ pins ==== */

/* Submits fetches for the REMOTE pages of t's pinned range: the argument
 * and environment strings are read by ps through the process's memory,
 * which cannot fault a missing page in (docs/budget.md), so they are
 * brought in at once instead of at the process's next touch. */
void lz_pin_fetch(struct dp_lazyd *d, struct lz_task *t)
{
    for (size_t i = 0; i < t->map.n; i++) {
        struct dp_lazy_region *reg = &t->map.r[i];
        uint64_t a = t->pin_lo > reg->start ? t->pin_lo : reg->start;
        uint64_t b = t->pin_hi < reg->end ? t->pin_hi : reg->end;
        if (a < b)
            lz_submit_remote_runs(d, t, reg, reg->img + (a - reg->start), (uint32_t)((b - a) / PG), K_PIN);
    }
}

/* A restore that copied the lazy memory (images without PE_LAZY: criu's
 * is_stack(), docs/criu-images.md) leaves the daemon nothing to serve: no
 * fault comes, a budget never evicts. Say so once, in the log, rather than
 * wait in silence. Up to 1024 pages the map holds remote, spread over it,
 * are looked up in the process's pagemap: after a lazy restore none of them
 * can be present (only a fault through us brings one in; a page CRIU copies
 * for a pre-dump parent is the one exception), so a few percent is a lot. */
static void eager_check(struct lz_task *t, pid_t p)
{
    uint64_t remote = dp_lazymap_pages(&t->map, DP_PG_REMOTE), step = remote / 1024 + 1, k = 0;
    unsigned sampled = 0, present = 0;
    for (size_t i = 0; i < t->map.n && sampled < 1024; i++) {
        const struct dp_lazy_region *reg = &t->map.r[i];
        for (uint64_t a = reg->start; a < reg->end && sampled < 1024; a += PG) {
            if (dp_pg_state(reg->pg[(a - reg->start) / PG]) != DP_PG_REMOTE || k++ % step)
                continue;
            sampled++;
            present += dp_pagemap_present(p, a, PG) == 1;
        }
    }
    if (present >= 4 && present * 16 > sampled) {
        char b[32];
        dp_format_bytes(remote * present / sampled * PG, b, sizeof(b));
        dp_warn("task %d (pid %d): %u of %u sampled pages it has not served yet are already resident: the restore "
                "copied about %s of its lazy memory (its images are not marked lazy), so this daemon serves no "
                "fault there and a budget cannot evict it. A dump not made by `distriproc checkpoint` needs "
                "`distriproc images --images DIR --mark-lazy` before it is served (docs/criu-images.md, is_stack)",
                t->id, t->shown_pid, present, sampled, b);
    }
}

/* t's process is host pid p: remember it with its start time, and pin its
 * argv/environ pages before any batch can pick them (a task is evicted
 * only once it has a host pid, and gets its pin in the same step). */
static void ev_place(struct dp_lazyd *d, struct lz_task *t, pid_t p)
{
    t->host_pid = p;
    t->host_start = dp_proc_start_time(p);
    if (t->shown_pid > 0)
        eager_check(t, p);
    if (t->pinned)
        return; /* inherited at fork: the same addresses */
    uint64_t lo, hi;
    if (dp_proc_args_range(p, &lo, &hi) < 0) {
        dp_debug("task %d (pid %d): no argument area in /proc/%d/stat; nothing pinned", t->id, t->shown_pid, p);
        return;
    }
    t->pin_lo = lo;
    t->pin_hi = hi;
    t->pinned = 1;
    lz_ev_forget(d, t, lo, hi); /* resident there: never picked from now on */
    lz_pin_fetch(d, t);
}

/* Namespaces are compared by inode, as /proc/PID/ns shows them. */
static uint64_t ns_inode(int pid, const char *ns)
{
    char path[64];
    struct stat st;
    snprintf(path, sizeof(path), "/proc/%d/ns/%s", pid, ns);
    return stat(path, &st) == 0 ? (uint64_t)st.st_ino : 0;
}

/* Before criu has written restored.pid (the tasks already run once the
 * restore finished): a process in our network namespace, in a pid namespace
 * below ours, whose inner pid is the announced one. Taken only when exactly
 * one process matches. */
static void ev_find_host_pids_early(struct dp_lazyd *d)
{
    uint64_t mynet = ns_inode(getpid(), "net"), mypid = ns_inode(getpid(), "pid");
    for (struct lz_task *t = d->tasks; t; t = t->next) {
        if (!t->alive || t->shown_pid <= 0 || t->host_pid)
            continue;
        DIR *dir = opendir("/proc");
        if (!dir)
            return;
        struct dirent *e;
        int found = 0, matches = 0;
        while ((e = readdir(dir))) {
            int p = atoi(e->d_name);
            if (p <= 0 || p == getpid() || ns_inode(p, "net") != mynet || ns_inode(p, "pid") == mypid)
                continue;
            if (dp_proc_inner_pid(p) == t->shown_pid) {
                found = p;
                matches++;
            }
        }
        closedir(dir);
        if (matches == 1)
            ev_place(d, t, found);
    }
}


/* Maps the pids CRIU announced (pids inside the restored pid namespace) to
 * pids in ours, walking the restored tree from WORKDIR/restored.pid. */
void lz_find_host_pids(struct dp_lazyd *d)
{
    int root = read_pid_file(d->o->workdir, DP_RESTORED_PID_NAME);
    if (root <= 0) {
        ev_find_host_pids_early(d);
        return;
    }
    int pids[4096];
    int n = collect_tree(root, pids, (int)DP_ARRAY_LEN(pids));
    for (int i = 0; i < n; i++) {
        int inner = dp_proc_inner_pid(pids[i]);
        for (struct lz_task *t = d->tasks; t; t = t->next)
            if (t->alive && t->shown_pid > 0 && t->shown_pid == inner && !t->host_pid)
                ev_place(d, t, pids[i]);
    }
}

/* ==== forked children: probing ==== */

/* Probe callbacks (lib/lazy_tasks.h). The k-th page: a REMOTE page with no
 * fetch outstanding of the unplaced tasks, round robin. */
static uint64_t probe_addr(void *arg, int k)
{
    struct dp_lazyd *d = arg;
    int n = 0;
    for (struct lz_task *t = d->tasks; t; t = t->next)
        n += t->alive && !t->host_pid;
    if (!n)
        return 0;
    int which = k % n, skip = k / n, j = 0;
    for (struct lz_task *t = d->tasks; t; t = t->next) {
        if (!t->alive || t->host_pid || j++ != which)
            continue;
        for (size_t i = 0; i < t->map.n; i++) {
            struct dp_lazy_region *reg = &t->map.r[i];
            for (uint64_t a = reg->start; a < reg->end; a += PG) {
                uint8_t pg = reg->pg[(a - reg->start) / PG];
                if (pg != DP_PG_REMOTE || lz_find_req(t, reg->img + (a - reg->start)))
                    continue;
                if (skip-- == 0)
                    return a;
            }
        }
        return 0;
    }
    return 0;
}

/* The probe's madvise is about to run on addr: the fault room keeps
 * clear of it and the REMOVE it raises is counted, not applied. */
static void probe_arm(void *arg, uint64_t addr)
{
    struct dp_lazyd *d = arg;
    d->place.probe.armed = 1;
    d->place.probe.addr = addr;
    d->place.probe.hits = 0;
    d->place.probe.task = 0;
    d->place.probes++;
}

/* Which task's uffd saw the probe: its id, 0 none, -1 ambiguous. */
static int probe_disarm(void *arg)
{
    struct dp_lazyd *d = arg;
    d->place.probe.armed = 0;
    return d->place.probe.hits == 1 ? d->place.probe.task : d->place.probe.hits ? -1 : 0;
}

/* While a probed process is stopped the daemon keeps serving. */
static int probe_pump(void *arg)
{
    lz_pump(arg);
    return 0;
}

/* Finds the processes of forked children that have none yet: every process
 * of the restored tree that is no task's is probed (stopped, one no-op
 * madvise, resumed) until each unplaced child has its process. Backs off
 * (0.1 s doubling to 5 s) while nothing is found; a new fork resets it. */
void lz_identify_children(struct dp_lazyd *d)
{
    uint64_t now = dp_now_ns();
    if (now < d->place.ident_next_ns)
        return;
    int unplaced = 0;
    for (struct lz_task *t = d->tasks; t; t = t->next) {
        if (t->broken && t->alive)
            return; /* a probe REMOVE on its uffd would never be read: the prober would hang */
        unplaced += t->alive && !t->host_pid && t->shown_pid <= 0;
    }
    if (!unplaced)
        return;
    d->place.ident_backoff_ns = d->place.ident_backoff_ns ? d->place.ident_backoff_ns * 2 : 100 * 1000000ull;
    if (d->place.ident_backoff_ns > 5000 * 1000000ull)
        d->place.ident_backoff_ns = 5000 * 1000000ull;
    d->place.ident_next_ns = now + d->place.ident_backoff_ns;
    int root = read_pid_file(d->o->workdir, DP_RESTORED_PID_NAME);
    if (root <= 0)
        return;
    int pids[4096];
    int n = collect_tree(root, pids, (int)DP_ARRAY_LEN(pids));
    struct dp_probe_ops ops = {.pump = probe_pump, .addr = probe_addr, .arm = probe_arm, .disarm = probe_disarm,
                               .arg = d};
    int probed = 0;
    for (int i = 0; i < n && unplaced > 0 && probed < 16; i++) {
        int known = 0;
        for (struct lz_task *t = d->tasks; t && !known; t = t->next)
            known = t->alive && t->host_pid == pids[i];
        if (known)
            continue;
        struct dp_err err = {{0}};
        probed++;
        d->ev.busy = 1; /* the pump must not start a batch */
        d->ev.cur = NULL;
        int id = dp_probe_process(pids[i], &ops, 4, &err);
        d->ev.busy = 0;
        if (id == -1) {
            dp_error("process %d: probing which userfaultfd is its own failed (%s); its threads are in an "
                     "unknown ptrace state, so it is killed rather than left corrupt", pids[i], err.msg);
            kill(pids[i], SIGKILL);
            continue;
        }
        struct lz_task *t = id > 0 ? lz_task_by_id(d, id) : NULL;
        if (!t || t->host_pid)
            continue; /* no lazy memory seen there, or it shares a placed task's mm (vfork) */
        ev_place(d, t, pids[i]);
        d->place.children_placed++;
        unplaced--;
        d->place.ident_backoff_ns = 0;
        d->place.ident_next_ns = 0;
        dp_info("forked task %d (child of task %d) is process %d: its pages can be evicted", t->id, t->parent_id,
                pids[i]);
    }
}

/* A new child has no process yet: the next batch looks for it at once
 * rather than after the backoff that an earlier fruitless search set. */
void lz_place_forked(struct dp_lazyd *d)
{
    d->place.ident_next_ns = 0;
    d->place.ident_backoff_ns = 0;
}

/* Processes not found when the restore finished (restored.pid not written
 * yet): look again for a few seconds, for their argv pins. */
void lz_place_retry(struct dp_lazyd *d)
{
    int unplaced = 0;
    for (struct lz_task *t = d->tasks; t; t = t->next)
        unplaced |= t->alive && t->shown_pid > 0 && !t->host_pid;
    if (d->finished && unplaced && d->place.tries < 25) {
        d->place.tries++;
        lz_find_host_pids(d);
    }
}
