/* redis_async: see redis_async.h. */
#include "redis_async.h"

#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>

#define RETRY_NS (50ull * 1000000ull)     /* a lost node, a transient error */
#define REFRESH_NS (50ull * 1000000ull)   /* at most one slot map read per */
#define SLOTS_WAIT_NS (1000ull * 1000000ull) /* a node asked for the map answers within */

/* One node's connection and the commands whose replies it owes, in order. */
struct anode {
    struct dp_rasync *a;
    int idx;
    struct dp_rconn *c;
    uint32_t reg;                    /* events in the epoll set; 0: not in it */
    struct dp_racmd *head, *tail;
    size_t n;
};

struct dp_rasync {
    struct dp_rcluster *cl;
    int ep, efd;
    struct anode nodes[DP_REDIS_MAX_NODES];
    struct dp_racmd *retry;          /* waiting for retry_at */
    struct dp_racmd *done_head, *done_tail;
    size_t nretry;
    int need_refresh;
    uint64_t refreshed_ns;
    /* the slot map read again without waiting: one CLUSTER SLOTS at a time,
     * from the nodes in turn */
    struct dp_rcmd slots_cmd;
    struct dp_racmd slots;
    int slots_inflight, slots_next;
    int in_process;
    struct dp_err err;
};

/* ---- completions ---- */

/* Makes the layer's descriptor readable: completions wait for process(). */
static void wake(struct dp_rasync *a)
{
    uint64_t one = 1;
    if (write(a->efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
        dp_warn("store: eventfd write failed: %s", strerror(errno));
}

/* Queues a's completion for dp_rasync_process (the eventfd wakes the loop). */
static void complete(struct dp_rasync *a, struct dp_racmd *cmd, int status)
{
    cmd->status = status;
    cmd->next = NULL;
    if (!a->done_head && !a->in_process) /* inside process(), the list runs before it returns */
        wake(a);
    if (a->done_tail)
        a->done_tail->next = cmd;
    else
        a->done_head = cmd;
    a->done_tail = cmd;
}

/* A command sent again after delay_ns (0: at the next process). */
static void defer(struct dp_rasync *a, struct dp_racmd *cmd, uint64_t delay_ns)
{
    cmd->retry_at = dp_now_ns() + delay_ns;
    cmd->asking = 0;
    cmd->next = a->retry;
    a->retry = cmd;
    a->nretry++;
}

/* ---- node connections ---- */

/* Keeps the epoll set in step with what the connection waits for. */
static void node_sync(struct dp_rasync *a, struct anode *n)
{
    if (!n->c)
        return;
    short ev = dp_rconn_events(n->c);
    uint32_t want = (ev & POLLIN ? EPOLLIN : 0) | (ev & POLLOUT ? EPOLLOUT : 0);
    if (want == n->reg)
        return;
    struct epoll_event e = {.events = want, .data.ptr = n};
    if (epoll_ctl(a->ep, n->reg ? EPOLL_CTL_MOD : EPOLL_CTL_ADD, dp_rconn_fd(n->c), &e) == 0)
        n->reg = want;
}

/* A connection that failed or stopped answering: its commands are sent
 * again (after the map is read again), those bound to it fail. */
static void node_lost(struct dp_rasync *a, struct anode *n, const char *why)
{
    dp_err_set(&a->err, "%s", why);
    dp_debug("store: %s lost with %zu commands in flight: %s", dp_rcluster_node_name(a->cl, n->idx), n->n, why);
    if (n->c) {
        if (n->reg)
            epoll_ctl(a->ep, EPOLL_CTL_DEL, dp_rconn_fd(n->c), NULL);
        dp_rconn_close(n->c);
    }
    n->c = NULL;
    n->reg = 0;
    struct dp_racmd *cmd = n->head;
    n->head = n->tail = NULL;
    n->n = 0;
    while (cmd) {
        struct dp_racmd *next = cmd->next;
        if (cmd->force_node >= 0)
            complete(a, cmd, -1);
        else
            defer(a, cmd, RETRY_NS);
        cmd = next;
    }
    a->need_refresh = 1;
}

/* node's connection, started if there is none. */
static struct anode *node_get(struct dp_rasync *a, int idx)
{
    struct anode *n = &a->nodes[idx];
    n->a = a;
    n->idx = idx;
    if (!n->c) {
        struct dp_err e = {{0}};
        n->c = dp_rcluster_node_start(a->cl, idx, &e);
        if (!n->c) {
            dp_err_set(&a->err, "%s", e.msg);
            return NULL;
        }
    }
    return n;
}

/* Sends cmd to the node its slot (or ASK, or force_node) names; a slot no
 * node serves, or a node that cannot be reached, waits for a retry. */
static int route(struct dp_rasync *a, struct dp_racmd *cmd)
{
    struct dp_rcmd *c = cmd->c;
    int idx = cmd->force_node >= 0 ? cmd->force_node : c->ask_node >= 0 ? c->ask_node : dp_rcluster_route(a->cl, c->slot);
    struct anode *n = idx >= 0 && idx < DP_REDIS_MAX_NODES ? node_get(a, idx) : NULL;
    if (!n) {
        if (cmd->force_node >= 0) {
            complete(a, cmd, -1);
        } else {
            if (idx < 0)
                dp_err_set(&a->err, "slot %u is not served by any master (yet)", c->slot);
            a->need_refresh = 1;
            defer(a, cmd, RETRY_NS);
        }
        return 0;
    }
    cmd->asking = c->ask_node >= 0 && cmd->force_node < 0;
    if ((cmd->asking && dp_rconn_append(n->c, 1, (const char *[]){"ASKING"}, (size_t[]){6}) < 0) ||
        dp_rconn_append(n->c, c->argc, c->argv, c->lens) < 0) {
        node_lost(a, n, "out of memory queueing a command"); /* half of it may be queued */
        return -1;
    }
    cmd->next = NULL;
    if (n->tail)
        n->tail->next = cmd;
    else
        n->head = cmd;
    n->tail = cmd;
    n->n++;
    return 0;
}

/* One reply of node n, for the oldest command it owes. */
static void on_reply(struct dp_rasync *a, struct anode *n, redisReply *r)
{
    struct dp_racmd *cmd = n->head;
    if (!cmd) {
        freeReplyObject(r);
        node_lost(a, n, "a reply nothing was asked for");
        return;
    }
    if (cmd->asking) { /* +OK of ASKING; the command's own reply follows */
        cmd->asking = 0;
        freeReplyObject(r);
        return;
    }
    n->head = cmd->next;
    if (!n->head)
        n->tail = NULL;
    n->n--;
    struct dp_rcmd *c = cmd->c;
    c->ask_node = -1;
    int refresh = 0, backoff = 0, k = 0;
    struct dp_err e = {{0}};
    if (cmd->force_node < 0)
        k = dp_rcluster_classify(a->cl, c, r, &refresh, &backoff, &e);
    if (k == 0) {
        c->reply = r;
        c->node = n->idx;
        complete(a, cmd, 0);
        return;
    }
    freeReplyObject(r);
    if (refresh)
        a->need_refresh = 1;
    if (k < 0) {
        dp_err_set(&a->err, "%s", e.msg);
        complete(a, cmd, -1);
    } else if (backoff) {
        defer(a, cmd, RETRY_NS);
    } else if (route(a, cmd) < 0) {
        complete(a, cmd, -1);
    }
}

/* Serves node n: connect/handshake, send, read, complete what was answered. */
static void node_serve(struct dp_rasync *a, struct anode *n)
{
    struct dp_err e = {{0}};
    if (dp_rconn_pump(n->c, &e) < 0) {
        node_lost(a, n, e.msg);
        return;
    }
    for (;;) {
        redisReply *r = NULL;
        int k = dp_rconn_take(n->c, &r, &e);
        if (k < 0) {
            node_lost(a, n, e.msg);
            return;
        }
        if (k == 0)
            break;
        on_reply(a, n, r);
        if (!n->c)
            return;
    }
    node_sync(a, n);
}

/* Pushes out what is queued on every node. */
static void flush_all(struct dp_rasync *a)
{
    for (int i = 0; i < DP_REDIS_MAX_NODES; i++) {
        struct anode *n = &a->nodes[i];
        if (n->c && (dp_rconn_unsent(n->c) || !n->reg))
            node_serve(a, n);
    }
}

/* ---- the layer ---- */

struct dp_rasync *dp_rasync_new(struct dp_rcluster *cl, struct dp_err *err)
{
    struct dp_rasync *a = calloc(1, sizeof(*a));
    if (!a) {
        dp_err_set(err, "out of memory");
        return NULL;
    }
    a->cl = cl;
    a->ep = epoll_create1(EPOLL_CLOEXEC);
    a->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    struct epoll_event e = {.events = EPOLLIN, .data.ptr = NULL};
    if (a->ep < 0 || a->efd < 0 || epoll_ctl(a->ep, EPOLL_CTL_ADD, a->efd, &e) < 0) {
        dp_err_set(err, "store: epoll/eventfd: %s", strerror(errno));
        dp_rasync_free(a);
        return NULL;
    }
    return a;
}

void dp_rasync_free(struct dp_rasync *a)
{
    if (!a)
        return;
    dp_rcmd_reset(&a->slots_cmd);
    for (int i = 0; i < DP_REDIS_MAX_NODES; i++)
        dp_rconn_close(a->nodes[i].c);
    if (a->ep >= 0)
        close(a->ep);
    if (a->efd >= 0)
        close(a->efd);
    free(a);
}

int dp_rasync_submit(struct dp_rasync *a, struct dp_racmd *cmd)
{
    struct dp_rcmd *c = cmd->c;
    if (c->reply)
        freeReplyObject(c->reply);
    c->reply = NULL;
    c->node = -1;
    c->ask_node = -1;
    if (c->key_arg >= 0)
        c->slot = dp_redis_keyslot(c->argv[c->key_arg], c->lens[c->key_arg]);
    if (route(a, cmd) < 0)
        return -1;
    if (!a->in_process)
        flush_all(a);
    return 0;
}

int dp_rasync_fd(const struct dp_rasync *a) { return a->ep; }
const char *dp_rasync_error(const struct dp_rasync *a) { return a->err.msg; }

size_t dp_rasync_pending(const struct dp_rasync *a)
{
    size_t n = a->nretry;
    for (int i = 0; i < DP_REDIS_MAX_NODES; i++)
        n += a->nodes[i].n;
    return n;
}

/* The map's new version (or why not) from the node asked. */
static void slots_done(struct dp_racmd *cmd, int status)
{
    struct dp_rasync *a = cmd->opaque;
    struct dp_err e = {{0}};
    a->slots_inflight = 0;
    if (status == 0 && dp_rcluster_apply_slots(a->cl, cmd->c->node, cmd->c->reply, &e) == 0)
        a->need_refresh = 0;
    else
        dp_err_set(&a->err, "reading the slot map again: %s", status == 0 ? e.msg : a->err.msg);
    dp_rcmd_reset(cmd->c);
}

/* Asks the next node in turn for the slot map (at most one question at a
 * time, at most every REFRESH_NS): the loop never waits for it. */
static void refresh_start(struct dp_rasync *a, uint64_t now)
{
    int nn = dp_rcluster_nodes(a->cl);
    if (!a->need_refresh || a->slots_inflight || now - a->refreshed_ns < REFRESH_NS || nn <= 0)
        return;
    a->refreshed_ns = now;
    int idx = a->slots_next++ % nn;
    struct dp_rcmd *c = &a->slots_cmd;
    dp_rcmd_init(c, -1);
    dp_rcmd_arg(c, "CLUSTER", 7);
    dp_rcmd_arg(c, "SLOTS", 5);
    a->slots = (struct dp_racmd){.c = c, .force_node = idx, .deadline_ns = now + SLOTS_WAIT_NS,
                                 .done = slots_done, .opaque = a};
    a->slots_inflight = 1;
    if (route(a, &a->slots) < 0)
        complete(a, &a->slots, -1);
}

/* Commands waiting to be sent again: due ones go out (with the map as it
 * is; a stale entry costs a redirect), those past their deadline fail. */
static void run_retries(struct dp_rasync *a, uint64_t now)
{
    refresh_start(a, now);
    if (!a->retry)
        return;
    struct dp_racmd *list = a->retry;
    a->retry = NULL;
    a->nretry = 0;
    while (list) {
        struct dp_racmd *cmd = list;
        list = cmd->next;
        if (now >= cmd->deadline_ns) {
            complete(a, cmd, -1);
        } else if (now < cmd->retry_at) {
            cmd->next = a->retry;
            a->retry = cmd;
            a->nretry++;
        } else if (route(a, cmd) < 0) {
            complete(a, cmd, -1);
        }
    }
}

void dp_rasync_process(struct dp_rasync *a)
{
    a->in_process = 1;
    struct epoll_event evs[DP_REDIS_MAX_NODES + 1];
    int k = epoll_wait(a->ep, evs, (int)DP_ARRAY_LEN(evs), 0);
    for (int i = 0; i < k; i++) {
        struct anode *n = evs[i].data.ptr;
        if (!n) { /* the wake-up: completions are waiting */
            uint64_t v;
            if (read(a->efd, &v, sizeof(v)) < 0 && errno != EAGAIN)
                dp_warn("store: eventfd read failed: %s", strerror(errno));
            continue;
        }
        if (n->c)
            node_serve(a, n);
    }
    /* a node whose oldest command is past its deadline stopped answering */
    uint64_t now = dp_now_ns();
    for (int i = 0; i < DP_REDIS_MAX_NODES; i++) {
        struct anode *n = &a->nodes[i];
        if (n->c && n->head && now >= n->head->deadline_ns) {
            char why[160];
            snprintf(why, sizeof(why), "%s: no answer in time (node down or overloaded)",
                     dp_rcluster_node_name(a->cl, i));
            node_lost(a, n, why);
        }
    }
    run_retries(a, now);
    /* completions, which may submit more: those go out together at the end */
    while (a->done_head) {
        struct dp_racmd *cmd = a->done_head;
        a->done_head = cmd->next;
        if (!a->done_head)
            a->done_tail = NULL;
        cmd->next = NULL;
        cmd->done(cmd, cmd->status);
        if (!a->done_head)
            flush_all(a);
    }
    flush_all(a);
    a->in_process = 0;
    if (a->done_head) /* completed by the last flush: the next turn runs them */
        wake(a);
}
