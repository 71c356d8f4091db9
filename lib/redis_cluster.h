/* redis_cluster: a Redis Cluster client of our own (no packaged library does
 * cluster routing): hash slots (CRC16 of the key or of its {hash tag}, per the
 * cluster specification), the slot -> master map from CLUSTER SLOTS, pipelined
 * batches routed per node, MOVED/ASK redirects, TRYAGAIN/CLUSTERDOWN retries
 * and failover (a lost node: the map is read again from any node that answers
 * until the batch's deadline).
 *
 * Pure parts (unit-tested, fuzzed): dp_redis_keyslot, dp_redis_parse_redirect,
 * dp_redis_parse_slots, dp_redis_parse_url. */
#ifndef DP_REDIS_CLUSTER_H
#define DP_REDIS_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "redis_conn.h"

#define DP_REDIS_SLOTS 16384
#define DP_REDIS_MAX_NODES 64
#define DP_REDIS_MAX_SEEDS 16
#define DP_REDIS_MAX_ARGS 64

/* ---- pure helpers ---- */

/* The slot of key (its {tag} if it has a non-empty one). */
unsigned dp_redis_keyslot(const char *key, size_t len);

enum dp_redirect_kind { DP_REDIRECT_NONE = 0, DP_REDIRECT_MOVED, DP_REDIRECT_ASK };
struct dp_redirect {
    enum dp_redirect_kind kind;
    unsigned slot;
    char host[48];      /* IPv4 literal */
    uint16_t port;
};
/* "MOVED 3999 10.0.0.1:7001" / "ASK ..." -> out. NONE (0) when the error is
 * another one; -1 when it claims to be a redirect but is malformed. */
int dp_redis_parse_redirect(const char *msg, size_t len, struct dp_redirect *out);

struct dp_slot_range {
    unsigned start, end;  /* inclusive */
    char host[48];
    uint16_t port;
};
/* CLUSTER SLOTS reply -> ranges (masters only). An empty host means the node
 * asked (self_host). -1 with err on anything malformed. */
int dp_redis_parse_slots(const redisReply *r, const char *self_host, struct dp_slot_range **out, size_t *n,
                         struct dp_err *err);

/* The store URL: redis://ADDR:PORT[,ADDR:PORT...][/ID] (rediss:// = TLS
 * required). id gets the path ("" if none). */
struct dp_redis_url {
    int tls;
    size_t nseeds;
    char host[DP_REDIS_MAX_SEEDS][48];
    uint16_t port[DP_REDIS_MAX_SEEDS];
    char id[96];
};
int dp_redis_parse_url(const char *url, struct dp_redis_url *out, struct dp_err *err);

/* ---- the cluster ---- */

struct dp_rcluster;

/* One command of a batch. The caller fills argv/lens/argc and key_arg (the
 * index of the argument whose slot routes it, or -1 with slot set directly);
 * exec fills reply (caller frees with freeReplyObject, or dp_rcmd_reset) and
 * node (who answered: WAIT goes there). */
struct dp_rcmd {
    int argc;
    const char *argv[DP_REDIS_MAX_ARGS];
    size_t lens[DP_REDIS_MAX_ARGS];
    int key_arg;
    unsigned slot;
    redisReply *reply;
    int node;
    int ask_node;       /* internal: -1, or the node an ASK sent it to */
};
void dp_rcmd_init(struct dp_rcmd *c, int key_arg);
void dp_rcmd_arg(struct dp_rcmd *c, const void *p, size_t len);
void dp_rcmd_reset(struct dp_rcmd *c);

/* Connects to a seed that answers and reads the slot map. */
struct dp_rcluster *dp_rcluster_open(const struct dp_redis_url *url, const struct dp_redis_opts *o,
                                     struct dp_err *err);
void dp_rcluster_close(struct dp_rcluster *cl);
/* Runs the batch: every command gets a reply (possibly a Redis error reply
 * other than a redirect) before timeout_ms, or -1 with err. */
int dp_rcluster_exec(struct dp_rcluster *cl, struct dp_rcmd *cmds, size_t n, int timeout_ms, struct dp_err *err);
/* WAIT numreplicas timeout on node (the connection its writes went over):
 * replicas that acknowledged, or -1 with err (the connection was lost: the
 * writes may be lost too; write them again). */
long long dp_rcluster_wait(struct dp_rcluster *cl, int node, int numreplicas, int timeout_ms, struct dp_err *err);
/* "ADDR:PORT" of node. */
const char *dp_rcluster_node_name(const struct dp_rcluster *cl, int node);
/* Number of distinct masters in the map (for messages and tests). */
int dp_rcluster_masters(const struct dp_rcluster *cl);

/* ---- for the asynchronous layer (redis_async.h): one map, one classifier ---- */

/* Nodes known (indexes are stable: the table only grows). */
int dp_rcluster_nodes(const struct dp_rcluster *cl);
/* The node serving slot, -1 when none is known. */
int dp_rcluster_route(const struct dp_rcluster *cl, unsigned slot);
/* A CLUSTER SLOTS reply r from node (its host stands for an empty one):
 * the new map replaces the old one whole; -1 with err (the old map kept). */
int dp_rcluster_apply_slots(struct dp_rcluster *cl, int node, const redisReply *r, struct dp_err *err);
/* A new nonblocking connection to node (dp_rconn_start), with the store's
 * TLS and AUTH settings. */
struct dp_rconn *dp_rcluster_node_start(struct dp_rcluster *cl, int node, struct dp_err *err);
/* What to do with reply r to c: 0 = keep it (done, perhaps a Redis error
 * that is not a redirect), 1 = send c again (MOVED: the map entry is
 * updated; ASK: c->ask_node set; transient: *backoff), *refresh when the
 * map is stale; -1 = a malformed or inconsistent redirect (err). */
int dp_rcluster_classify(struct dp_rcluster *cl, struct dp_rcmd *c, redisReply *r, int *refresh, int *backoff,
                         struct dp_err *err);

#endif
