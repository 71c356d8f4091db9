/* redis_async: the cluster's commands driven by an event loop that is not
 * ours (the lazy-pages daemon's): one nonblocking connection per node
 * (connect, TLS and AUTH never wait), every submitted command pipelined at
 * once to the node serving its slot, each completed as its reply arrives.
 * MOVED/ASK send a command again where the cluster says; a lost node (or one
 * that stops answering) sends its commands again after the slot map is read
 * again, until each command's deadline; TRYAGAIN/CLUSTERDOWN and the other
 * transient errors back off 50 ms. One slot map and one reply classifier
 * with the blocking client (redis_cluster.h).
 *
 * The caller's loop sees ONE descriptor (dp_rasync_fd: an epoll set holding
 * the node connections and a wake-up eventfd) and calls dp_rasync_process
 * when it is ready and on its periodic tick; each node connection is served
 * by the same function (no event switch). Completions run only from
 * dp_rasync_process, never from dp_rasync_submit. */
#ifndef DP_REDIS_ASYNC_H
#define DP_REDIS_ASYNC_H

#include <stdint.h>

#include "redis_cluster.h"

struct dp_racmd;
/* status 0: a->c->reply holds the reply (perhaps a Redis error that is not a
 * redirect) and a->c->node the node that answered; -1: the command could not
 * be answered before its deadline, or its forced node's connection was lost
 * (dp_rasync_error says why). */
typedef void (*dp_racmd_done)(struct dp_racmd *a, int status);

struct dp_racmd {
    struct dp_rcmd *c;     /* the command (argv alive until done), its reply */
    int force_node;        /* >= 0: only over this node's connection (WAIT) */
    uint64_t deadline_ns;
    dp_racmd_done done;
    void *opaque;          /* the submitter's */
    /* the layer's own */
    int status;
    int asking;            /* an ASKING precedes it on the wire */
    uint64_t retry_at;
    struct dp_racmd *next;
};

struct dp_rasync;

/* The layer over cl's slot map (cl stays the caller's). */
struct dp_rasync *dp_rasync_new(struct dp_rcluster *cl, struct dp_err *err);
/* Closes the connections; completions not yet run are dropped. */
void dp_rasync_free(struct dp_rasync *a);
/* Queues a (routed by a->c's key or force_node) and sends what is queued on
 * every node, as far as the sockets take it. 0, or -1 when a->c cannot be
 * encoded (out of memory). */
int dp_rasync_submit(struct dp_rasync *a, struct dp_racmd *cmd);
int dp_rasync_fd(const struct dp_rasync *a);
/* Reads replies, completes commands, resends redirected and retried ones,
 * fails those past their deadline; calls done() callbacks (which may submit). */
void dp_rasync_process(struct dp_rasync *a);
/* Why the last command failed or a node was lost. */
const char *dp_rasync_error(const struct dp_rasync *a);
/* Commands sent or waiting to be sent again. */
size_t dp_rasync_pending(const struct dp_rasync *a);

#endif
