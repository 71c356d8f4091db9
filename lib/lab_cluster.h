/* lab_cluster: a real Redis Cluster in the lab (issue 14): 3 masters + 3
 * replicas, redis-server 7 with TLS (a CA and a node certificate generated in
 * the lab's cluster directory) and AUTH (a random password there), three
 * nodes on each lab host (src 10.250.0.1:7001-7003, dst 10.250.0.2:7004-7006),
 * so that losing a node (or a host's page server) leaves the data served.
 *
 * Directory (lab_cluster_dir): ca.crt, node.crt/node.key, password (0600),
 * seed ("ADDR:PORT"), node-PORT/{redis.conf,redis.pid,redis.log,nodes.conf}.
 * Every node is bounded (maxmemory, noeviction, no persistence) and lives in
 * a lab namespace, so `lab down` removes it with the rest. */
#ifndef DP_LAB_CLUSTER_H
#define DP_LAB_CLUSTER_H

#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define LAB_CLUSTER_NODES 6
#define LAB_CLUSTER_BASE_PORT 7001

/* /run/distriproc/lab-NAME/cluster */
void lab_cluster_dir(char *buf, size_t len);
/* Host ("src"/"dst"), address and port of node i (0..5). */
void lab_cluster_node(int i, const char **host, const char **addr, uint16_t *port);

/* Starts the cluster (the lab must be up); seed gets "ADDR:PORT".
 * maxmemory: bytes per node. Removes a previous cluster first. */
int lab_cluster_up(uint64_t maxmemory, char *seed, size_t seedlen, struct dp_err *err);
/* Stops every node (by the pid in its pid file, checked to be redis-server)
 * and removes the directory. *stopped: nodes that were running. */
int lab_cluster_down(int *stopped, struct dp_err *err);

#endif
