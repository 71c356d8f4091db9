/* lazyd: the lazy-pages daemon (see lazyd.h).
 *
 * One thread, one epoll loop. Sources of events: the lazy-pages socket (new
 * tasks from CRIU), every task's userfaultfd (faults and FORK/REMAP/REMOVE/
 * UNMAP), the page source's completion fd, the control socket, and a timer
 * (exit detection, fault timeouts, retries, background copy).
 *
 * A fault on a remote page submits a fetch and returns to the loop at once,
 * so any number of fetches are in flight; a fault on a page already in flight
 * attaches itself as a waiter of that fetch. Installation re-checks each
 * page's state, because the application may have removed, unmapped or moved
 * it while the data travelled: a page that is no longer "in flight" is never
 * written. UFFDIO_COPY returns EAGAIN while the kernel has a non-cooperative
 * event (fork, mremap, madvise, munmap) queued for us: the install waits on a
 * retry list until the task's events have been read, then re-checks.
 *
 * This file is the daemon's hall: setup, the loop and the tasks' lifecycle.
 * The rest lives in rooms behind lib/lazyd_int.h (map in docs/daemon.md). */
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/timerfd.h>
#include <sys/un.h>

#include "fence.h"
#include "lazyd_int.h"
#include "perm.h"

#define TICK_NS (10 * 1000000ull)  /* timer period */
#define PROBE_NS (200 * 1000000ull)

static void guard_sync(struct dp_lazyd *d);
static void src_sync(struct dp_lazyd *d);
static void on_uffd(struct dp_lazyd *d, struct handler *h);
static void on_src(struct dp_lazyd *d, struct handler *h);
static void on_guard(struct dp_lazyd *d, struct handler *h);
static void handle_criu(struct dp_lazyd *d, struct handler *h);

/* ==== the event loop: descriptors with their handlers, one dispatch ==== */

/* Every descriptor enters epoll here, with the handler that serves it. */
int lz_ep_add(struct dp_lazyd *d, struct handler *h, int fd, lz_read_event read_event, int nested, void *ptr)
{
    h->fd = fd;
    h->read_event = read_event;
    h->nested = nested;
    h->ptr = ptr;
    struct epoll_event ev = {.events = EPOLLIN, .data.ptr = h};
    return epoll_ctl(d->ep, EPOLL_CTL_ADD, fd, &ev);
}

/* Both accepting sockets (lazy-pages from criu, control from our own
 * commands) admit only the peers their socket's permissions allow. */
int lz_accept(struct dp_lazyd *d, int lfd, int flags, const char *path, lz_read_event read_event, int nested)
{
    int c = accept4(lfd, NULL, NULL, flags);
    if (c < 0)
        return -1;
    if (dp_perm_peer_check(c, path) < 0) {
        close(c);
        return -1;
    }
    struct handler *h = calloc(1, sizeof(*h));
    if (!h || lz_ep_add(d, h, c, read_event, nested, NULL) < 0) {
        close(c);
        free(h);
        return -1;
    }
    return c;
}

/* The one dispatch, for the main loop and the nested pump alike: runs the
 * handler each ready descriptor carries. Nested (inside an eviction's stop
 * or a probe), only the handlers marked nested run; the others stay ready
 * (epoll is level-triggered) until the main loop's next turn. Returns how
 * many ran. */
static int dispatch(struct dp_lazyd *d, const struct epoll_event *evs, int n, int nested)
{
    /* Which pass runs each (the handlers marked last after the others),
     * read before any runs: a handler may free itself (a closed criu
     * connection), and nothing of it is read after that. */
    int8_t pass[64]; /* the callers' epoll_wait returns at most 64 */
    int ran = 0;
    n = n > (int)sizeof(pass) ? (int)sizeof(pass) : n;
    for (int i = 0; i < n; i++) {
        const struct handler *h = evs[i].data.ptr;
        pass[i] = nested && !h->nested ? -1 : (int8_t)(h->last != 0);
    }
    for (int p = 0; p < 2; p++) {
        for (int i = 0; i < n; i++) {
            if (pass[i] != p)
                continue;
            struct handler *h = evs[i].data.ptr;
            h->read_event(d, h);
            ran++;
        }
    }
    return ran;
}

/* ==== tasks: one per userfaultfd ==== */

/* A task is one userfaultfd: CRIU's for a restored process, or a FORK
 * event's for its child. Ids are the daemon's own (stats "id"). */
static struct lz_task *task_new(struct dp_lazyd *d, int32_t pid, int uffd)
{
    struct lz_task *t = calloc(1, sizeof(*t));
    if (!t)
        return NULL;
    t->id = ++d->next_id;
    t->d = d;
    t->pid = pid;
    t->shown_pid = pid;
    t->uffd = uffd;
    t->alive = 1;
    t->started_ns = dp_now_ns();
    dp_lazymap_init(&t->map);
    dp_prefetch_state_init(&t->pf);
    t->next = d->tasks;
    d->tasks = t;
    return t;
}

/* Eviction and probes keep task ids, not pointers: a task that went away
 * is simply not found. */
struct lz_task *lz_task_by_id(struct dp_lazyd *d, int id)
{
    for (struct lz_task *t = d->tasks; t; t = t->next)
        if (t->id == id && t->alive)
            return t;
    return NULL;
}

/* The loop ends once the restore finished and this reaches 0. */
int lz_tasks_alive(const struct dp_lazyd *d)
{
    int n = 0;
    for (const struct lz_task *t = d->tasks; t; t = t->next)
        n += t->alive;
    return n;
}

/* A replay or warm-up request leaving (installed, dropped or abandoned)
 * tells the replay or the warm-up its window has room again. */
void lz_req_free(struct lz_req *r)
{
    if (r->kind == K_REPLAY) /* installed, dropped or abandoned: no longer in flight */
        dp_replay_completed(&((struct dp_lazyd *)r->f.opaque)->replay, r->f.npages, dp_now_ns());
    else if (r->kind == K_BACKGROUND) /* the loop turn's end refills the window */
        dp_lzw_done(&((struct dp_lazyd *)r->f.opaque)->wu, r->f.npages, dp_now_ns());
    free(r->f.buf);
    free(r->w);
    free(r);
}

/* Requests hang on their task: a task's teardown finds them all. */
void lz_req_unlink(struct lz_req *r)
{
    struct lz_task *t = r->t;
    if (r->prev)
        r->prev->next = r->next;
    else
        t->reqs = r->next;
    if (r->next)
        r->next->prev = r->prev;
    r->prev = r->next = NULL;
}

/* Exit of t's mm (or the daemon's): its uffd closes at once, requests
 * the source does not own go now, the rest when they complete. */
void lz_task_gone(struct dp_lazyd *d, struct lz_task *t, const char *why)
{
    if (!t->alive)
        return;
    t->alive = 0;
    t->ended_ns = dp_now_ns();
    t->final_remote = dp_lazymap_pages(&t->map, DP_PG_REMOTE) + dp_lazymap_pages(&t->map, DP_PG_INFLIGHT);
    t->final_resident = dp_lazymap_pages(&t->map, DP_PG_RESIDENT);
    epoll_ctl(d->ep, EPOLL_CTL_DEL, t->uffd, NULL);
    dp_guard_drop(&d->guard, t->uffd);
    close(t->uffd);
    t->uffd = -1;
    /* Requests the source still owns are freed when they complete; the
     * others go now. */
    struct lz_req *r = t->reqs;
    while (r) {
        struct lz_req *next = r->next;
        if (r->state != R_AT_SOURCE) {
            lz_req_unlink(r);
            lz_req_free(r);
        }
        r = next;
    }
    t->retry = NULL;
    lz_stage_drop(d, t, 0, UINT64_MAX, 1);
    dp_lazymap_free(&t->map);
    lz_ev_task_gone(d, t);
    dp_pmap_free(&t->hash); /* per task: a tree forking for every connection does not pile them up */
    dp_debug("task %d (pid %d) gone: %s", t->id, t->shown_pid, why);
}

/* UFFD_EVENT_FORK: the child's uffd arrives inside the parent's stream;
 * the child starts with the parent's map, pins and (budget) hashes. */
struct lz_task *lz_task_fork(struct dp_lazyd *d, struct lz_task *parent, int ufd)
{
    struct lz_task *c = task_new(d, parent->pid, ufd);
    if (!c) {
        /* kept open (the guard holds it too): the child's faults wait */
        dp_error("fork of pid %d: cannot track the child (out of memory); its faults will wait "
                 "rather than read zeros: stop the restored process tree", parent->shown_pid);
        d->failed = 1;
        return NULL;
    }
    dp_set_nonblock(ufd);
    fcntl(ufd, F_SETFD, FD_CLOEXEC);
    c->shown_pid = 0;
    c->parent_id = parent->id;
    if (dp_lazymap_clone(&c->map, &parent->map) ||
        lz_ep_add(d, &c->h, ufd, on_uffd, 1, c) < 0) {
        dp_error("fork of pid %d: cannot track the child (out of memory); its faults will wait "
                 "rather than read zeros: stop the restored process tree", parent->shown_pid);
        c->broken = 1; /* alive, uffd open, never read */
        d->failed = 1;
        dp_lazymap_free(&c->map);
        return NULL;
    }
    /* the same argv/environ area; what the parent had not fetched yet, now */
    c->pin_lo = parent->pin_lo;
    c->pin_hi = parent->pin_hi;
    c->pinned = parent->pinned;
    if (c->pinned)
        lz_pin_fetch(d, c);
    if (d->ev.on) {
        lz_ev_fork_inherit(d, parent, c);
        lz_place_forked(d); /* its process is looked for at the next batch */
    }
    return c;
}

/* A task's uffd is readable: faults and events (the fault room), logged
 * under the task's id. */
static void on_uffd(struct dp_lazyd *d, struct handler *h)
{
    struct lz_task *t = h->ptr;
    dp_log_context(t->id, -1);
    lz_handle_uffd(d, t);
    dp_log_context(-1, -1);
}

/* ==== criu's lazy-pages connection ==== */

/* CRIU handed over a restored task's uffd: load its lazy ranges from the
 * source and start serving it. */
static void new_task(struct dp_lazyd *d, int32_t pid, int uffd, pid_t sender)
{
    dp_guard_task(&d->guard, uffd, sender, pid);
    struct lz_task *t = task_new(d, pid, uffd);
    struct dp_err err = {{0}};
    if (!t) {
        /* the uffd stays open (the guard holds it too): its faults wait */
        dp_error("out of memory for task %d; its faults will wait rather than read zeros: "
                 "stop the restored process tree", pid);
        d->failed = 1;
        return;
    }
    int rc = d->o->src->ops->task_map(d->o->src, pid, &t->map, &err);
    if (rc == 0 && lz_ep_add(d, &t->h, uffd, on_uffd, 1, t) < 0)
        dp_err_set(&err, "epoll_ctl: %s", strerror(errno)), rc = -1;
    if (rc < 0) {
        /* Closing the uffd would unregister the task's lazy memory: its
         * untouched pages would then read as zeros. Keep it open and never
         * answer: the task's faults wait until someone stops it. */
        dp_error("task %d: %s. Its lazy memory cannot be served; its faults will wait "
                 "rather than read zeros: stop the restored process tree", pid, err.msg);
        t->broken = 1;
        d->failed = 1;
        return;
    }
    char rem[32];
    lz_ev_task_new(d, t);
    dp_format_bytes(dp_lazymap_pages(&t->map, DP_PG_REMOTE) * PG, rem, sizeof(rem));
    dp_log_context(t->id, -1);
    dp_info("task %d: userfaultfd received, %s lazy in %zu regions", pid, rem, t->map.n);
    dp_log_context(-1, -1);
}

/* Reads one message of criu restore's connection: a task's uffd, or the
 * end of the restore. */
static void handle_criu(struct dp_lazyd *d, struct handler *h)
{
    int32_t pid;
    int uffd;
    pid_t sender = 0;
    int rc = dp_lazysock_recv_from(h->fd, &pid, &uffd, &sender);
    if (rc == 1) {
        if (pid < 0)
            dp_debug("zombie %d: nothing to serve", -pid);
        else
            new_task(d, pid, uffd, sender);
        return;
    }
    if (rc == 2) {
        d->finished = 1;
        dp_info("restore finished: %d task(s) with lazy memory", lz_tasks_alive(d));
        /* their processes, and their argv/environ pages: fetched now (ps reads
         * them through /proc, which cannot fault them in), never evicted */
        lz_find_host_pids(d);
        return;
    }
    if (rc < 0 || !d->finished) {
        if (rc < 0)
            dp_error("lazy-pages socket: %s", strerror(-rc));
        dp_error("criu restore closed the lazy-pages connection before the restore finished "
                 "(see the restore log in %s)", d->o->workdir);
        d->failed = 1;
    }
    epoll_ctl(d->ep, EPOLL_CTL_DEL, h->fd, NULL);
    close(h->fd);
    free(h);
    d->conns--;
}

/* criu restore connects to hand over the tasks' uffds. */
static void handle_listen(struct dp_lazyd *d, struct handler *lh)
{
    int c = lz_accept(d, lh->fd, SOCK_CLOEXEC, d->sock_path, handle_criu, 1);
    if (c < 0)
        return;
    d->conns++;
    /* The guard learns criu (its descendants are the tree being restored)
     * and, through the senders' credentials, each task's pid. */
    struct ucred cr;
    socklen_t crlen = sizeof(cr);
    int on = 1;
    setsockopt(c, SOL_SOCKET, SO_PASSCRED, &on, sizeof(on));
    if (getsockopt(c, SOL_SOCKET, SO_PEERCRED, &cr, &crlen) == 0)
        dp_guard_root(&d->guard, cr.pid);
}

/* ==== timeouts, the page source's descriptor, signals, the timer ==== */

/* A fault that waits longer than --fault-timeout: warn, or stop the tree
 * (--on-timeout kill) rather than let it hang on an unreachable source. */
static void check_timeouts(struct dp_lazyd *d, uint64_t now)
{
    if (d->o->fault_timeout <= 0)
        return;
    uint64_t limit = (uint64_t)(d->o->fault_timeout * 1e9);
    for (struct lz_task *t = d->tasks; t; t = t->next) {
        if (!t->alive)
            continue;
        for (struct lz_req *r = t->reqs; r; r = r->next) {
            if (!r->nw || r->state == R_INSTALL_RETRY)
                continue;
            /* A fault read after `now` was taken (by the same pass of the
             * loop) is younger than now: its age is 0, never a wrapped
             * 584-year wait that kills the tree at once. */
            uint64_t t0 = r->w[0].t0, age = now > t0 ? now - t0 : 0;
            if (age < limit || r->warned)
                continue;
            r->warned = 1;
            if (!d->o->on_timeout_kill) {
                dp_warn("pid %d: a fault at 0x%llx has waited %.1f s for %s (%s); the thread keeps "
                        "waiting (--on-timeout wait); restart or reach the page server and it continues",
                        t->shown_pid, (unsigned long long)r->w[0].addr, (double)age / 1e9, d->o->src->desc,
                        d->o->src->ops->healthy(d->o->src) ? "reachable, slow" : "unreachable");
            } else if (!d->killed) {
                d->killed = 1;
                dp_error("pid %d: a fault at 0x%llx waited %.1f s for %s (%s): stopping the restored "
                         "process tree with SIGKILL (--on-timeout kill). No page was filled with wrong "
                         "data; restore again from the source when it is reachable.",
                         t->shown_pid, (unsigned long long)r->w[0].addr, (double)age / 1e9, d->o->src->desc,
                         d->o->src->ops->healthy(d->o->src) ? "reachable, slow" : "unreachable");
                lz_kill_restored(d);
            }
        }
    }
}

/* Keeps handler h (watching *cur_ev) on descriptor fd with events ev: a
 * source's descriptor changes across reconnects and wants EPOLLOUT only
 * while it has bytes to send. */
static void watch_sync(struct dp_lazyd *d, struct handler *h, uint32_t *cur_ev, int fd, uint32_t ev)
{
    if (fd == h->fd && ev == *cur_ev)
        return;
    if (h->fd >= 0 && h->fd != fd)
        epoll_ctl(d->ep, EPOLL_CTL_DEL, h->fd, NULL); /* may be closed already */
    if (fd >= 0) {
        struct epoll_event e = {.events = ev, .data.ptr = h};
        int op = fd == h->fd ? EPOLL_CTL_MOD : EPOLL_CTL_ADD;
        if (epoll_ctl(d->ep, op, fd, &e) < 0)
            epoll_ctl(d->ep, op == EPOLL_CTL_MOD ? EPOLL_CTL_ADD : EPOLL_CTL_MOD, fd, &e);
    }
    h->fd = fd;
    *cur_ev = ev;
}

/* The page source's descriptors (its first lane, and the bulk lane when it
 * has one) in epoll as they are now; a fenced source ends the restore. */
static void src_sync(struct dp_lazyd *d)
{
    const struct dp_pagesrc_ops *ops = d->o->src->ops;
    const char *fenced = ops->fenced ? ops->fenced(d->o->src) : NULL;
    if (fenced && !d->killed) { /* another restore took over: never run on (lib/fence.h) */
        d->killed = d->failed = 1;
        dp_fence_report(fenced, d->o->src->desc, d->o->workdir);
        lz_kill_restored(d);
    }
    d->src_h.read_event = on_src;
    d->src_h.nested = 1;
    watch_sync(d, &d->src_h, &d->src_ev, ops->fd(d->o->src),
               ops->events ? (uint32_t)(unsigned short)ops->events(d->o->src) : EPOLLIN);
    if (ops->bulk_fd) {
        d->bulk_h.read_event = on_src;
        d->bulk_h.nested = 1;
        d->bulk_h.last = 1;
        watch_sync(d, &d->bulk_h, &d->bulk_ev, ops->bulk_fd(d->o->src),
                   (uint32_t)(unsigned short)ops->bulk_events(d->o->src));
    }
}

/* A page source's descriptor is ready (h: which lane): completions run
 * from process(). */
static void on_src(struct dp_lazyd *d, struct handler *h)
{
    if (h == &d->bulk_h)
        d->o->src->ops->bulk_process(d->o->src);
    else
        d->o->src->ops->process(d->o->src);
    src_sync(d);
}

/* SIGTERM/SIGINT/SIGHUP: the tree cannot run on without its daemon (the
 * guard would have to kill it, with an error): stop it first, in order. */
static void handle_signal(struct dp_lazyd *d, struct handler *h)
{
    struct signalfd_siginfo si;
    if (read(h->fd, &si, sizeof(si)) != (ssize_t)sizeof(si))
        return;
    int n = lz_tasks_alive(d);
    if (!n) {
        d->stop = 1;
        return;
    }
    uint64_t remote = 0;
    for (struct lz_task *t = d->tasks; t; t = t->next)
        if (t->alive)
            remote += dp_lazymap_pages(&t->map, DP_PG_REMOTE) + dp_lazymap_pages(&t->map, DP_PG_INFLIGHT);
    char rb[32];
    dp_format_bytes(remote * PG, rb, sizeof(rb));
    dp_warn("signal %u: %d restored task(s) still have %s remote that only this daemon serves; "
            "killing the restored process tree first (restore again from the source to continue)",
            si.ssi_signo, n, rb);
    lz_kill_restored(d);
}

/* The 10 ms tick: source deadlines, install retries, exit probes,
 * timeouts, and the warm room's background work. */
static void handle_timer(struct dp_lazyd *d, struct handler *h)
{
    uint64_t ticks;
    if (read(h->fd, &ticks, sizeof(ticks)) < 0 && errno != EAGAIN)
        return;
    uint64_t now = dp_now_ns();
    if (d->o->src->ops->events)
        d->o->src->ops->process(d->o->src); /* reconnect timers, deadlines */
    if (d->o->src->ops->bulk_process)
        d->o->src->ops->bulk_process(d->o->src);
    for (struct lz_task *t = d->tasks; t; t = t->next) {
        if (t->alive && t->retry) {
            lz_handle_uffd(d, t); /* reads events first, then retries */
        }
    }
    if (now - d->last_probe_ns >= PROBE_NS) {
        d->last_probe_ns = now;
        for (struct lz_task *t = d->tasks; t; t = t->next) {
            if (!t->alive)
                continue;
            uint64_t probe = t->map.n ? t->map.r[0].start : 0x10000000ull;
            if (dp_uffd_alive(t->uffd, probe) == 0)
                lz_task_gone(d, t, "exited");
        }
        check_timeouts(d, now);
        lz_place_retry(d);
    }
    lz_warmup_step(d);
    lz_replay_pump(d);
    lz_trace_flush(d, now, 0);
    if (dp_guard_fd(&d->guard) < 0 || d->guard_gen != d->guard.gen) {
        dp_guard_check(&d->guard);
        guard_sync(d);
    }
}

/* ==== the nested pump ==== */

/* The inject pump: keep serving faults, fetch completions, write-back acks
 * and uffd events (FORK, REMOVE: our own zap's too) while threads stop or
 * run our call. Never the control socket or signals: they wait for the
 * batch to end (epoll is level-triggered). */
void lz_pump(struct dp_lazyd *d)
{
    struct epoll_event evs[64];
    src_sync(d);
    int n = epoll_wait(d->ep, evs, (int)DP_ARRAY_LEN(evs), 0);
    if (dispatch(d, evs, n, 1) == 0) {
        struct timespec ts = {0, 20000};
        nanosleep(&ts, NULL);
    }
}

/* ==== setup and teardown ==== */

/* Both sockets (lazy-pages, control) are Unix stream sockets in the
 * work dir; the path length is checked here so the message says why. */
static int listen_unix(const char *path, struct dp_err *err)
{
    struct sockaddr_un sun = {.sun_family = AF_UNIX};
    if (strlen(path) >= sizeof(sun.sun_path)) {
        dp_err_set(err, "socket path %s is longer than %zu bytes: use a shorter --workdir", path,
                   sizeof(sun.sun_path) - 1);
        return -1;
    }
    strcpy(sun.sun_path, path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0) {
        dp_err_set(err, "socket: %s", strerror(errno));
        return -1;
    }
    unlink(path);
    if (bind(fd, (struct sockaddr *)&sun, sizeof(sun)) < 0 || listen(fd, 16) < 0) {
        dp_err_set(err, "cannot listen on %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    return fd;
}

/* For callers that must bind the lazy-pages socket before criu starts. */
int dp_lazyd_listen(const char *workdir, struct dp_err *err)
{
    char path[4200];
    snprintf(path, sizeof(path), "%s/%s", workdir, DP_LAZY_SOCK_NAME);
    return listen_unix(path, err);
}

/* Keeps epoll on the guard's current socket (it changes when a dead guard
 * is replaced); the guard never sends, so any event there is its death. */
static void guard_sync(struct dp_lazyd *d)
{
    int fd = dp_guard_fd(&d->guard);
    if (fd == d->guard_h.fd && d->guard_gen == d->guard.gen)
        return;
    if (d->guard_h.fd >= 0)
        epoll_ctl(d->ep, EPOLL_CTL_DEL, d->guard_h.fd, NULL); /* may be closed already */
    d->guard_h.fd = -1;
    d->guard_gen = d->guard.gen;
    if (fd >= 0 && lz_ep_add(d, &d->guard_h, fd, on_guard, 0, NULL) < 0)
        dp_warn("epoll_ctl on the guard's socket: %s (its death would go unnoticed until the next hand-over)",
                strerror(errno));
}

/* The guard's socket is readable: the guard died (it never sends). */
static void on_guard(struct dp_lazyd *d, struct handler *h)
{
    (void)h;
    dp_guard_check(&d->guard);
    guard_sync(d);
}

/* A scrape of --metrics. */
static void on_metrics(struct dp_lazyd *d, struct handler *h)
{
    (void)h;
    dp_metrics_http_handle(d->metrics);
}

/* Closes what the daemon opened and frees what is safe to free. */
static void cleanup(struct dp_lazyd *d)
{
    /* Before the uffds close below: with a task left the guard must stop
     * the tree, without one it just exits. */
    dp_guard_end(&d->guard, lz_tasks_alive(d) == 0);
    if (d->listen_h.fd >= 0) {
        close(d->listen_h.fd);
        unlink(d->sock_path);
    }
    if (d->ctl_h.fd >= 0) {
        close(d->ctl_h.fd);
        unlink(d->ctl_path);
    }
    if (d->timer_h.fd >= 0)
        close(d->timer_h.fd);
    if (d->sig_h.fd >= 0)
        close(d->sig_h.fd);
    dp_metrics_http_close(d->metrics);
    d->metrics = NULL;
    /* Tasks whose requests the source still owns: the source is closed by
     * the caller after us, so free only what is safe. d->tasks keeps exactly
     * the tasks not freed: a write-back callback still to come (the lease
     * release after the daemon, or the source's close) looks tasks up there. */
    struct lz_task *kept = NULL;
    for (struct lz_task *t = d->tasks, *n; t; t = n) {
        n = t->next;
        if (t->alive)
            lz_task_gone(d, t, "daemon exit");
        if (t->refs == 0) {
            while (t->reqs) {
                struct lz_req *r = t->reqs;
                lz_req_unlink(r);
                lz_req_free(r);
            }
            free(t);
        } else {
            /* completed by the source after d is gone: keep lz_req_free away from d->replay and d->wu */
            for (struct lz_req *r = t->reqs; r; r = r->next)
                if (r->kind == K_REPLAY || r->kind == K_BACKGROUND)
                    r->kind = K_PREFETCH;
            t->next = kept;
            kept = t;
        }
    }
    d->tasks = kept;
    if (d->ep >= 0)
        close(d->ep);
    dp_replay_free(&d->replay);
    dp_lzw_free(&d->wu);
    dp_trace_free(&d->trace);
    if (d->staging) {
        dp_vbuf_free(&d->stage);
        d->staging = 0;
    }
    /* write-back callbacks still to come (the source is closed after us and
     * completes them with an error) use d: leave it, the process exits */
    if (d->ev.clean_inflight > 0 || d->ev.put_wait > 0)
        return;
    lz_ev_free(d);
    free(d);
}

/* Everything the loop needs, in the order that keeps the tree safe: the
 * guard runs before criu can connect, readiness is said last. */
struct dp_lazyd *dp_lazyd_start(const struct dp_lazyd_opts *o)
{
    struct dp_lazyd *d = calloc(1, sizeof(*d));
    struct dp_err err = {{0}};
    if (!d)
        return NULL;
    d->o = o;
    d->start_ns = dp_now_ns();
    d->listen_h.fd = d->ctl_h.fd = d->timer_h.fd = d->sig_h.fd = d->src_h.fd = d->bulk_h.fd = d->guard.sk = -1;
    d->guard_h.fd = -1;
    if (o->replay) {
        struct dp_err rerr = {{0}};
        if (dp_replay_init(&d->replay, o->replay, o->replay_batch, o->replay_window, &rerr) < 0)
            dp_warn("no hot-set replay: %s", rerr.msg);
        else
            d->replaying = 1;
    }
    if (o->record_s > 0) {
        dp_trace_init(&d->trace, 0, o->record_s); /* the clock starts at the first fault */
        d->tracing = 1;
    }
    snprintf(d->sock_path, sizeof(d->sock_path), "%s/%s", o->workdir, DP_LAZY_SOCK_NAME);
    snprintf(d->ctl_path, sizeof(d->ctl_path), "%s/%s", o->workdir, DP_CONTROL_SOCK_NAME);
    signal(SIGPIPE, SIG_IGN);

    d->ep = epoll_create1(EPOLL_CLOEXEC);
    int lfd = o->listen_fd >= 0 ? o->listen_fd : listen_unix(d->sock_path, &err);
    int cfd = lfd >= 0 ? listen_unix(d->ctl_path, &err) : -1;
    int tfd = timerfd_create(CLOCK_MONOTONIC, TFD_NONBLOCK | TFD_CLOEXEC);
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGHUP);
    sigprocmask(SIG_BLOCK, &sigs, NULL);
    int gfd = signalfd(-1, &sigs, SFD_NONBLOCK | SFD_CLOEXEC);
    d->listen_h.fd = lfd;
    d->ctl_h.fd = cfd;
    d->timer_h.fd = tfd;
    d->sig_h.fd = gfd;
    if (d->ep < 0 || lfd < 0 || cfd < 0 || tfd < 0 || gfd < 0) {
        dp_error("lazy-pages daemon setup failed: %s", err.msg[0] ? err.msg : strerror(errno));
        cleanup(d);
        return NULL;
    }
    dp_set_nonblock(lfd);
    struct itimerspec its = {.it_interval = {0, (long)TICK_NS}, .it_value = {0, (long)TICK_NS}};
    timerfd_settime(tfd, 0, &its, NULL);
    if (lz_ep_add(d, &d->listen_h, lfd, handle_listen, 1, NULL) < 0 ||
        lz_ep_add(d, &d->ctl_h, cfd, lz_handle_ctl_listen, 0, NULL) < 0 ||
        lz_ep_add(d, &d->timer_h, tfd, handle_timer, 1, NULL) < 0 ||
        lz_ep_add(d, &d->sig_h, gfd, handle_signal, 0, NULL) < 0) {
        dp_error("epoll_ctl: %s", strerror(errno));
        cleanup(d);
        return NULL;
    }
    if (lz_ev_init(d) < 0) {
        cleanup(d);
        return NULL;
    }
    if (o->metrics_addr) {
        d->metrics = dp_metrics_http_open(o->metrics_addr, lz_metrics_render, d, &err);
        if (!d->metrics || lz_ep_add(d, &d->metrics_h, dp_metrics_http_fd(d->metrics), on_metrics, 0, NULL) < 0) {
            dp_error("%s", d->metrics ? strerror(errno) : err.msg);
            cleanup(d);
            return NULL;
        }
    }
    if (o->replay_stage && d->replaying) {
        if (d->ev.on) {
            dp_error("--hotset-mode stage keeps the replayed pages in the daemon until they are used, outside "
                     "any budget: it does not combine with --budget; measure without --budget");
            cleanup(d);
            return NULL;
        }
        dp_vbuf_init(&d->stage, UINT64_MAX); /* bounded by the hot set */
        d->staging = 1;
    }
    lz_warmup_init(d);
    /* Before criu can connect: no uffd may ever be held by us alone. */
    if (dp_guard_start(&d->guard, &err) < 0) {
        dp_error("cannot start the guard process (%s): refusing to serve, since a crash of this "
                 "daemon could then expose the restored tree's memory as zeros", err.msg);
        cleanup(d);
        return NULL;
    }
    guard_sync(d);
    if (o->ready_fd >= 0) {
        char one = 1;
        if (write(o->ready_fd, &one, 1) < 0)
            dp_warn("cannot signal readiness: %s", strerror(errno));
        close(o->ready_fd);
    }
    char pf[32];
    dp_prefetch_format(&o->prefetch, pf, sizeof(pf));
    dp_info("lazy-pages daemon on %s, pages from %s, prefetch %s, warm-up %s", d->sock_path, o->src->desc, pf,
            dp_warmup_mode_name(d->wu.o.mode));
    return d;
}

/* ==== the loop (lib/lazyd.h) ==== */

/* One turn of the loop: wait (spinning briefly while a fault's reply is
 * due), then run the ready descriptors' handlers. */
int dp_lazyd_step(struct dp_lazyd *d, int timeout_ms)
{
    if ((d->failed || d->stop) && !lz_tasks_alive(d))
        return 0;
    if (d->finished && d->conns == 0 && !lz_tasks_alive(d))
        return 0;
    struct epoll_event evs[64];
    src_sync(d);
    int n = epoll_wait(d->ep, evs, (int)DP_ARRAY_LEN(evs), 0);
    /* A thread is blocked on a page whose reply is a round trip away: waking
     * from epoll (an idle vCPU here) costs more than polling for that long. */
    while (n == 0 && timeout_ms != 0 && dp_now_ns() < d->spin_until_ns)
        n = epoll_wait(d->ep, evs, (int)DP_ARRAY_LEN(evs), 0);
    if (n == 0 && timeout_ms != 0)
        n = epoll_wait(d->ep, evs, (int)DP_ARRAY_LEN(evs), timeout_ms);
    if (n < 0 && errno != EINTR) {
        dp_error("epoll_wait: %s", strerror(errno));
        d->failed = 1;
        return -1;
    }
    dispatch(d, evs, n, 0);
    lz_replay_pump(d);
    lz_warmup_step(d);
    return 1;
}

/* Leaves stats-final.json next to the sockets so `stats` works after the
 * daemon is gone. */
int dp_lazyd_finish(struct dp_lazyd *d)
{
    const struct dp_lazyd_opts *o = d->o;
    int rc = d->failed ? 1 : 0;
    lz_trace_flush(d, dp_now_ns(), 1);
    struct dp_sbuf b = {0};
    lz_stats_json(d, &b);
    if (b.p) {
        /* Keep the final stats next to the sockets: `stats` still works. */
        char path[4300];
        snprintf(path, sizeof(path), "%s/stats-final.json", o->workdir);
        FILE *f = dp_fopen_private(path);
        if (f) {
            fwrite(b.p, 1, b.len, f);
            fclose(f);
        }
    }
    dp_sbuf_free(&b);
    struct dp_lazy_counters tot;
    memset(&tot, 0, sizeof(tot));
    for (struct lz_task *t = d->tasks; t; t = t->next)
        dp_counters_add(&tot, &t->c);
    dp_info("all tasks exited: %llu faults, %llu pages fetched, %llu prefetched, %llu zero pages",
            (unsigned long long)tot.faults, (unsigned long long)tot.pages_fetched,
            (unsigned long long)tot.pages_prefetched, (unsigned long long)tot.zero_pages);
    cleanup(d);
    return rc;
}

/* The daemon's life: a batch of eviction may follow every turn. */
int dp_lazyd_run(const struct dp_lazyd_opts *o)
{
    struct dp_lazyd *d = dp_lazyd_start(o);
    if (!d)
        return 1;
    while (dp_lazyd_step(d, d->ev.active ? 0 : 1000) > 0)
        lz_ev_maybe(d);
    return dp_lazyd_finish(d);
}
