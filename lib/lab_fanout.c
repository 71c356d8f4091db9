/* lab_fanout: see lab_fanout.h. */
#include "lab_fanout.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "lab.h"
#include "orch.h"

#define FANOUT_NET "10.251.0.0/16"

/* ---- names ---- */

/* "NAME-foI" */
static void fo_netns(int i, char *buf, size_t len) { snprintf(buf, len, "%s-fo%d", lab_name(), i); }

/* "NAMEfI-a" (side "a", in the destination) or "-b" (in dst). */
static void fo_if(int i, char side, char *buf, size_t len) { snprintf(buf, len, "%sf%d-%c", lab_name(), i, side); }

void lab_fanout_host(int i, char *netns_path, size_t plen, char *addr, size_t alen)
{
    char ns[64];
    fo_netns(i, ns, sizeof(ns));
    snprintf(netns_path, plen, "%s/%s", LAB_NETNS_DIR, ns);
    snprintf(addr, alen, "10.251.%d.2", i);
}

/* ---- tools ---- */

/* Runs one `ip` command (argv after "ip"); -1 with err naming it. */
static int ip(struct dp_err *err, const char *const *args)
{
    const char *argv[16] = {"ip"};
    size_t n = 1;
    for (; args[n - 1] && n < DP_ARRAY_LEN(argv) - 1; n++)
        argv[n] = args[n - 1];
    argv[n] = NULL;
    struct dp_err e = {{0}};
    if (lab_run_tool(argv, NULL, 0, &e) == 0)
        return 0;
    char cmd[256] = "ip";
    for (size_t i = 1; i < n; i++)
        snprintf(cmd + strlen(cmd), sizeof(cmd) - strlen(cmd), " %s", argv[i]);
    dp_err_set(err, "'%s' failed: %s", cmd, e.msg);
    return -1;
}
#define IP(err, ...) ip(err, (const char *const[]){__VA_ARGS__, NULL})

/* ip_forward of the lab's dst host (its own namespace's setting). */
static int dst_forward(int on, struct dp_err *err)
{
    return IP(err, "netns", "exec", lab_hosts[1].netns, "sysctl", "-qw",
              on ? "net.ipv4.ip_forward=1" : "net.ipv4.ip_forward=0");
}

/* ---- up / down ---- */

/* One destination host, its link to dst and its route to the lab's link. */
static int host_up(int i, struct dp_err *err)
{
    char ns[64], a[32], b[32], la[32], lb[32];
    fo_netns(i, ns, sizeof(ns));
    fo_if(i, 'a', a, sizeof(a));
    fo_if(i, 'b', b, sizeof(b));
    snprintf(la, sizeof(la), "10.251.%d.2/30", i);
    snprintf(lb, sizeof(lb), "10.251.%d.1/30", i);
    char via[32];
    snprintf(via, sizeof(via), "10.251.%d.1", i);
    const char *dst = lab_hosts[1].netns;
    if (IP(err, "netns", "add", ns) < 0 ||
        IP(err, "-n", dst, "link", "add", b, "type", "veth", "peer", "name", a, "netns", ns) < 0 ||
        IP(err, "-n", dst, "addr", "add", lb, "dev", b) < 0 || IP(err, "-n", dst, "link", "set", b, "up") < 0 ||
        IP(err, "-n", ns, "addr", "add", la, "dev", a) < 0 || IP(err, "-n", ns, "link", "set", a, "up") < 0 ||
        IP(err, "-n", ns, "link", "set", "lo", "up") < 0 ||
        IP(err, "-n", ns, "route", "add", "10.250.0.0/30", "via", via) < 0)
        return -1;
    return 0;
}

int lab_fanout_up(int n, struct dp_err *err)
{
    if (n < 1 || n > LAB_FANOUT_MAX) {
        dp_err_set(err, "fan-out takes 1..%d destination hosts", LAB_FANOUT_MAX);
        return -1;
    }
    if (lab_fanout_down(NULL, err) < 0)
        return -1;
    for (int i = 1; i <= n; i++)
        if (host_up(i, err) < 0)
            goto fail;
    if (dst_forward(1, err) < 0 ||
        IP(err, "-n", lab_hosts[0].netns, "route", "replace", FANOUT_NET, "via", "10.250.0.2") < 0)
        goto fail;
    return 0;
fail:;
    struct dp_err e2 = {{0}};
    lab_fanout_down(NULL, &e2);
    return -1;
}

/* 1 if name is one of this lab's fan-out hosts ("NAME-fo" and digits). */
static int is_fo(const char *name)
{
    char pre[64];
    snprintf(pre, sizeof(pre), "%s-fo", lab_name());
    size_t l = strlen(pre);
    if (strncmp(name, pre, l) != 0 || !name[l])
        return 0;
    for (const char *p = name + l; *p; p++)
        if (*p < '0' || *p > '9')
            return 0;
    return 1;
}

/* Kills every process whose network namespace is ns (bounded wait). */
static void kill_in(const char *ns)
{
    pid_t pids[LAB_MAX_PIDS];
    for (int round = 0; round < 50; round++) {
        int k = lab_netns_pids(ns, pids, LAB_MAX_PIDS);
        if (k <= 0)
            return;
        for (int j = 0; j < k; j++)
            kill(pids[j], SIGKILL);
        usleep(100000);
    }
}

int lab_fanout_down(int *removed, struct dp_err *err)
{
    int n = 0, rc = 0;
    DIR *d = opendir(LAB_NETNS_DIR);
    struct dirent *e;
    char names[LAB_FANOUT_MAX * 4][64];
    int nn = 0;
    while (d && (e = readdir(d)) && nn < (int)DP_ARRAY_LEN(names))
        if (strlen(e->d_name) < 60 && is_fo(e->d_name))
            snprintf(names[nn++], sizeof(names[0]), "%.60s", e->d_name);
    if (d)
        closedir(d);
    for (int i = 0; i < nn; i++) {
        kill_in(names[i]);
        if (IP(err, "netns", "delete", names[i]) < 0)
            rc = -1;
        else
            n++;
    }
    char path[128];
    struct dp_err e2 = {{0}};
    snprintf(path, sizeof(path), "%s/%s", LAB_NETNS_DIR, lab_hosts[0].netns);
    if (access(path, F_OK) == 0)
        IP(&e2, "-n", lab_hosts[0].netns, "route", "del", FANOUT_NET); /* absent: fine */
    snprintf(path, sizeof(path), "%s/%s", LAB_NETNS_DIR, lab_hosts[1].netns);
    if (access(path, F_OK) == 0 && dst_forward(0, err) < 0)
        rc = -1;
    if (removed)
        *removed = n;
    return rc;
}
