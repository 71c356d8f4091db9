/* lab_fanout: more destination hosts for fan-out (issue 14): NAME-fo1 ..
 * NAME-foN (network namespaces under the lab's prefix, like NAME-src/-dst),
 * each joined to the lab's dst host by its own veth pair NAMEfI-a (in the
 * destination, 10.251.I.2/30) <-> NAMEfI-b (in dst, 10.251.I.1/30). dst
 * forwards between them and the src-dst link (its net.ipv4.ip_forward, a
 * setting of the lab's own namespace, is set to 1 and back to 0 by
 * lab_fanout_down); src gets a route to 10.251.0.0/16 via dst. Nothing
 * reaches the root namespace or leaves the machine (no default route).
 *
 * A restored copy keeps its listening port and its pid namespace is its own
 * (CRIU restores a container's pid namespace), so every copy of one
 * checkpoint needs a host of its own: restore --host /run/netns/NAME-foI. */
#ifndef DP_LAB_FANOUT_H
#define DP_LAB_FANOUT_H

#include <stddef.h>

#include "util.h"

#define LAB_FANOUT_MAX 32

/* Creates hosts 1..n (the lab must be up); removes earlier ones first. */
int lab_fanout_up(int n, struct dp_err *err);
/* Kills what runs in them, removes every NAME-fo* host, dst's forwarding
 * and src's route; *removed: hosts removed. Nothing to remove is not an error. */
int lab_fanout_down(int *removed, struct dp_err *err);
/* Host i (1..n): its namespace path and its address (where a restored copy
 * listens). */
void lab_fanout_host(int i, char *netns_path, size_t plen, char *addr, size_t alen);

#endif
