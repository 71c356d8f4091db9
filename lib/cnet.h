/* cnet: the network of a container that has its own network namespace, wired
 * to a lab host from outside (the way CNI plugins do it).
 *
 * Why: a user-namespaced container can only be checkpointed by CRIU if every
 * namespace of it belongs to its user namespace, so it cannot join the lab
 * host's network namespace by path; runc creates a new one with the user
 * namespace. runc always tells CRIU to treat the network namespace as empty
 * (runc checkpoint/restore pass CLONE_NEWNET in empty_ns): nothing of its
 * devices, addresses or routes is dumped, and the restore creates it empty.
 * runc runs the bundle's createRuntime hooks both at `runc create/run`
 * (after the namespaces exist, before the process starts) and at
 * `runc restore` (at CRIU's "setup-namespaces" notification, before the
 * restored tasks run), with the OCI state (the container's host pid) on
 * stdin. So one hook wires it both times:
 *   lab host's netns:   HOSTIF  HOST_ADDR/PREFIX  (veth end)
 *   container's netns:  eth0    CONT_ADDR/PREFIX, default route via HOST_ADDR,
 *                       lo up
 * The container keeps its address across a migration; the destination lab
 * host gets the same host end. See docs/containers.md.
 *
 * Parsing the address plan and the OCI state: pure. Wiring: I/O (iproute2). */
#ifndef DP_CNET_H
#define DP_CNET_H

#include <stddef.h>
#include <sys/types.h>

#include "lab.h"
#include "util.h"

#define CNET_IFNAME_MAX 15 /* IFNAMSIZ - 1 */
#define CNET_STATE_MAX (1u << 20)
#define CNET_CONTAINER_IF "eth0"

struct cnet_plan {
    char cont_addr[16]; /* dotted quad, the container's end */
    char host_addr[16]; /* dotted quad, the lab host's end and the container's gateway */
    int prefix;         /* 16..30 */
};

/* "10.251.1.2/30" -> the container gets 10.251.1.2/30, the host end the
 * first usable address of the subnet that is not the container's
 * (10.251.1.1). Refuses a prefix outside 16..30 and the network or
 * broadcast address. Pure. */
int cnet_plan_parse(const char *cidr, struct cnet_plan *plan, struct dp_err *err);

/* 1..15 characters of [A-Za-z0-9_.-], not "." or "..": what ip accepts as a
 * link name. Pure. */
int cnet_ifname_ok(const char *name);

/* The container's host-visible pid from an OCI state document (what runc
 * writes on a hook's stdin): an object with a string "ociVersion" and an
 * integer "pid" > 0. Pure. */
int cnet_state_pid(const char *text, size_t len, pid_t *pid, struct dp_err *err);

/* Wires the network namespace of process pid to lab host h: creates the
 * veth pair (hostif in h's netns, eth0 in pid's), sets addresses, links up,
 * lo up, the default route. Refuses a pid whose network namespace is this
 * process's or the lab host's own. On failure the host end is deleted again
 * (which takes the container's end with it). Returns 0 or -1. */
int cnet_attach(const struct lab_host *h, const char *hostif, const struct cnet_plan *plan, pid_t pid,
                struct dp_err *err);

#endif
