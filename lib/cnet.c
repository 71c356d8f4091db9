/* cnet: a container's own network namespace wired to a lab host from outside.
 * See cnet.h. */
#include "cnet.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- pure: the address plan, names, the OCI state ---------------------------- */

int cnet_plan_parse(const char *cidr, struct cnet_plan *plan, struct dp_err *err)
{
    char addr[32];
    const char *slash = cidr ? strchr(cidr, '/') : NULL;
    if (!slash || (size_t)(slash - cidr) >= sizeof(addr)) {
        dp_err_set(err, "address '%s' must be ADDR/PREFIX, e.g. 10.251.1.2/30", cidr ? cidr : "");
        return -1;
    }
    memcpy(addr, cidr, (size_t)(slash - cidr));
    addr[slash - cidr] = '\0';

    char *end;
    errno = 0;
    if (slash[1] < '0' || slash[1] > '9') {
        dp_err_set(err, "address '%s': the prefix length after '/' must be a number 16..30", cidr);
        return -1;
    }
    long prefix = strtol(slash + 1, &end, 10);
    if (errno || end == slash + 1 || *end || prefix < 16 || prefix > 30) {
        dp_err_set(err, "address '%s': the prefix length must be 16..30 (a subnet with room for "
                   "the host end and the container)", cidr);
        return -1;
    }
    struct in_addr in;
    if (inet_pton(AF_INET, addr, &in) != 1) {
        dp_err_set(err, "address '%s': '%s' is not an IPv4 address", cidr, addr);
        return -1;
    }
    uint32_t a = ntohl(in.s_addr);
    uint32_t mask = ~((1u << (32 - prefix)) - 1);
    uint32_t net = a & mask, bcast = net | ~mask;
    if (a == net || a == bcast) {
        dp_err_set(err, "address '%s' is the %s address of its subnet; give the container a host address",
                   cidr, a == net ? "network" : "broadcast");
        return -1;
    }
    uint32_t host = net + 1 == a ? net + 2 : net + 1;
    struct in_addr c = {htonl(a)}, h = {htonl(host)};
    inet_ntop(AF_INET, &c, plan->cont_addr, sizeof(plan->cont_addr));
    inet_ntop(AF_INET, &h, plan->host_addr, sizeof(plan->host_addr));
    plan->prefix = (int)prefix;
    return 0;
}

int cnet_ifname_ok(const char *name)
{
    size_t n = name ? strlen(name) : 0;
    if (n == 0 || n > CNET_IFNAME_MAX || strcmp(name, ".") == 0 || strcmp(name, "..") == 0)
        return 0;
    return strspn(name, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_.-") == n;
}

int cnet_state_pid(const char *text, size_t len, pid_t *pid, struct dp_err *err)
{
    json_error_t jerr;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &jerr);
    if (!root) {
        dp_err_set(err, "the OCI state on stdin is not JSON (line %d: %s); this command is meant to "
                   "run as a runc createRuntime hook", jerr.line, jerr.text);
        return -1;
    }
    int rc = -1;
    json_t *ver = json_object_get(root, "ociVersion"), *p = json_object_get(root, "pid");
    if (!json_is_object(root) || !json_is_string(ver)) {
        dp_err_set(err, "the OCI state on stdin has no \"ociVersion\" string: not a runtime state");
    } else if (!json_is_integer(p) || json_integer_value(p) <= 0 || json_integer_value(p) > INT_MAX) {
        dp_err_set(err, "the OCI state on stdin has no positive integer \"pid\" (the container's "
                   "process); a hook of a stage before the process exists cannot wire its network");
    } else {
        *pid = (pid_t)json_integer_value(p);
        rc = 0;
    }
    json_decref(root);
    return rc;
}

/* ---- I/O: wiring ---------------------------------------------------------------- */

/* The container must have a network namespace of its own: wiring the host's
 * or the lab host's namespace into itself would break the lab. Two processes
 * share a namespace iff the (dev, inode) of their ns files match. */
static int check_own_netns(const struct lab_host *h, pid_t pid, struct dp_err *err)
{
    char path[64], lab[128];
    struct stat c, self, host;
    snprintf(path, sizeof(path), "/proc/%d/ns/net", (int)pid);
    snprintf(lab, sizeof(lab), "%s/%s", LAB_NETNS_DIR, h->netns);
    if (stat(path, &c) < 0) {
        dp_err_set(err, "cannot read the network namespace of pid %d (%s): %s", (int)pid, path, strerror(errno));
        return -1;
    }
    if (stat(lab, &host) < 0) {
        dp_err_set(err, "lab host %s has no network namespace (%s: %s); bring the lab up: distriproc lab up",
                   h->name, lab, strerror(errno));
        return -1;
    }
    if (stat("/proc/self/ns/net", &self) == 0 && self.st_dev == c.st_dev && self.st_ino == c.st_ino) {
        dp_err_set(err, "pid %d shares the network namespace runc runs in; the bundle must give the container "
                   "a new one (namespaces: {\"type\": \"network\"} without a path), and at a restore the "
                   "checkpoint must have been taken from outside the container's network namespace (else "
                   "CRIU does not recreate it)", (int)pid);
        return -1;
    }
    if (host.st_dev == c.st_dev && host.st_ino == c.st_ino) {
        dp_err_set(err, "pid %d already runs in lab host %s's network namespace; it needs its own to be "
                   "wired (and a user-namespaced container needs its own to be checkpointed)",
                   (int)pid, h->name);
        return -1;
    }
    return 0;
}

/* Runs one ip command; a failure keeps the first error's text. */
static int run(const char *const argv[], struct dp_err *err)
{
    return lab_run_tool(argv, NULL, 0, err) == 0 ? 0 : -1;
}

int cnet_attach(const struct lab_host *h, const char *hostif, const struct cnet_plan *plan, pid_t pid,
                struct dp_err *err)
{
    char pidstr[16], nsarg[48], haddr[24], caddr[24];
    if (!cnet_ifname_ok(hostif)) {
        dp_err_set(err, "interface name '%s' is not valid (1-%d of A-Z a-z 0-9 _ . -)", hostif, CNET_IFNAME_MAX);
        return -1;
    }
    if (check_own_netns(h, pid, err) < 0)
        return -1;
    snprintf(pidstr, sizeof(pidstr), "%d", (int)pid);
    snprintf(nsarg, sizeof(nsarg), "--net=/proc/%d/ns/net", (int)pid);
    snprintf(haddr, sizeof(haddr), "%s/%d", plan->host_addr, plan->prefix);
    snprintf(caddr, sizeof(caddr), "%s/%d", plan->cont_addr, plan->prefix);

    const char *add[] = {"ip", "-n", h->netns, "link", "add", hostif, "type", "veth",
                         "peer", "name", CNET_CONTAINER_IF, "netns", pidstr, NULL};
    if (run(add, err) < 0) {
        char why[sizeof(err->msg)];
        snprintf(why, sizeof(why), "%s", err->msg);
        dp_err_set(err, "cannot create veth %s (lab host %s) <-> %s (pid %d): %s; a link of that name "
                   "left by another container? (ip -n %s link del %s)",
                   hostif, h->name, CNET_CONTAINER_IF, (int)pid, why, h->netns, hostif);
        return -1;
    }
    const char *const steps[][12] = {
        {"ip", "-n", h->netns, "addr", "add", haddr, "dev", hostif, NULL},
        {"ip", "-n", h->netns, "link", "set", hostif, "up", NULL},
        {"nsenter", nsarg, "--", "ip", "link", "set", "lo", "up", NULL},
        {"nsenter", nsarg, "--", "ip", "addr", "add", caddr, "dev", CNET_CONTAINER_IF, NULL},
        {"nsenter", nsarg, "--", "ip", "link", "set", CNET_CONTAINER_IF, "up", NULL},
        {"nsenter", nsarg, "--", "ip", "route", "add", "default", "via", plan->host_addr, NULL},
    };
    for (size_t i = 0; i < DP_ARRAY_LEN(steps); i++) {
        if (run(steps[i], err) == 0)
            continue;
        /* Deleting one end of a veth deletes both. */
        const char *del[] = {"ip", "-n", h->netns, "link", "del", hostif, NULL};
        struct dp_err ignored;
        lab_run_tool(del, NULL, 0, &ignored);
        return -1;
    }
    return 0;
}
