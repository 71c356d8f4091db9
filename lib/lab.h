/* lab: the two-host lab on one machine.
 *
 * Hosts "src" and "dst" are network namespaces dp-src and dp-dst (bind-mounted
 * under /run/netns like `ip netns add` does), joined by a veth pair dp-src0 <->
 * dp-dst0 with 10.250.0.1/30 and 10.250.0.2/30. There is no default route, so
 * lab traffic never leaves the machine. The link may be capped with tbf on
 * both ends. Links are made with iproute2 (`ip`, `tc`) run via fork/exec. */
#ifndef DP_LAB_H
#define DP_LAB_H

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "util.h"

#define LAB_NETNS_DIR "/run/netns"
#define LAB_PREFIX_LEN 30
#define LAB_MAX_PIDS 1024

struct lab_host {
    const char *name;   /* "src" */
    const char *netns;  /* "dp-src" */
    const char *ifname; /* "dp-src0" */
    const char *addr;   /* "10.250.0.1" */
};

/* The default lab is "dp" (dp-src, dp-dst, dp-src0, dp-dst0). With
 * DISTRIPROC_LAB=NAME in the environment (lowercase letters and digits, at
 * most 10) every command uses a private lab NAME-src/NAME-dst with veth
 * NAME-src0/NAME-dst0 and the same addresses: a long benchmark can run there
 * while tests bring the default lab up and down. */
extern struct lab_host lab_hosts[2];
/* The lab's name: "dp" or $DISTRIPROC_LAB. */
const char *lab_name(void);
/* Switches this process to the lab NAME (as DISTRIPROC_LAB=NAME does), e.g.
 * for a benchmark that builds its own; before any other lab call. */
int lab_set_name(const char *name, struct dp_err *err);

/* NULL if name is neither "src" nor "dst". */
const struct lab_host *lab_host_find(const char *name);

/* Pure helpers (unit-tested). */
/* "1gbit", "100mbit", "2.5gbit", "500kbit", "64000bit" (SI: 1k = 1000) -> bits/s. */
int lab_parse_rate(const char *text, uint64_t *bits_per_s, struct dp_err *err);
/* 1000000000 -> "1gbit", 1500000 -> "1500kbit". */
void lab_format_rate(uint64_t bits_per_s, char *buf, size_t len);
/* tbf burst (bytes) and queue latency (microseconds) used for a rate. */
void lab_tbf_params(uint64_t bits_per_s, uint64_t *burst_bytes, uint32_t *latency_us);

/* What exists of one host right now. */
struct lab_host_state {
    int netns_exists;   /* /run/netns/dp-X is a usable namespace */
    int iface_exists;   /* veth end inside that namespace */
    int iface_up;
    int addr_ok;        /* carries its 10.250.0.x/30 */
    int lo_up;
    uint64_t tbf_bits;  /* tbf rate on the veth end, 0 = no tbf */
    int npids;          /* processes whose network namespace is this host */
    pid_t pids[LAB_MAX_PIDS];
};

struct lab_state {
    struct lab_host_state host[2];
    int stale_root_links; /* dp-src0/dp-dst0 left in the root namespace */
};

/* Fills st. Returns 0, or -1 with err if the state cannot be read at all. */
int lab_probe(struct lab_state *st, struct dp_err *err);
/* 1 if both hosts are complete and the link is usable. */
int lab_state_complete(const struct lab_state *st);
/* 1 if nothing of the lab exists. */
int lab_state_empty(const struct lab_state *st);

enum lab_up_result { LAB_CREATED, LAB_ALREADY_UP, LAB_BANDWIDTH_CHANGED };

/* Creates the lab (bits_per_s = 0: no cap). Idempotent: a complete lab is kept
 * (its processes too) and only its bandwidth adjusted; anything less is torn
 * down first (leftovers of a crashed run). Returns an enum lab_up_result or -1. */
int lab_up(uint64_t bits_per_s, struct dp_err *err);

/* Kills every process in the lab namespaces, deletes namespaces and veth, and
 * checks nothing is left. *killed (if not NULL) gets the number of processes
 * killed. Returns 0 or -1. */
int lab_down(int *killed, struct dp_err *err);

/* Moves the calling thread into host's network namespace (setns, no mount
 * namespace). Returns 0, or -1 with "lab is not up" style text in err. */
int lab_enter(const struct lab_host *host, struct dp_err *err);

/* Runs a tool (argv[0] "ip", "tc", "nsenter", ... found in the sbin/bin
 * directories) and waits for it; its stdout goes to out (if not NULL, at most
 * outlen bytes, NUL-terminated), its stderr into err when it fails. Returns its
 * exit status (0 = success), or -1 if it could not run. */
int lab_run_tool(const char *const argv[], char *out, size_t outlen, struct dp_err *err);

/* Pids (host-visible) whose network namespace is the given named netns.
 * Returns the count (at most max), or -1 if the netns does not exist. */
int lab_netns_pids(const char *netns, pid_t *pids, int max);

#endif
