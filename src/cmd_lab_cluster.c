/* distriproc lab cluster: a Redis Cluster in the lab (lib/lab_cluster.h). */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "lab.h"
#include "lab_cluster.h"
#include "util.h"

#define DEFAULT_MAXMEMORY (512ull << 20)

/* The help of 'lab cluster'. */
static void usage(FILE *out)
{
    char dir[256];
    lab_cluster_dir(dir, sizeof(dir));
    fprintf(out,
            "usage: distriproc lab cluster up [--maxmemory SIZE]\n"
            "       distriproc lab cluster down\n"
            "\n"
            "A Redis Cluster (redis-server 7) in the lab, the store of 'checkpoint --store' and\n"
            "'restore --store': 3 masters and 3 replicas, three nodes on each lab host\n"
            "(src 10.250.0.1:7001-7003, dst 10.250.0.2:7004-7006), every replica on the other\n"
            "host than its master. TLS for clients, replication and the cluster bus (a CA and\n"
            "a node certificate made for this cluster) and AUTH (a random password).\n"
            "Files in %s: ca.crt (give it as --store-ca), password\n"
            "(--store-pass-file), seed, node-PORT/ (redis.conf, redis.pid, redis.log).\n"
            "\n"
            "  up    (re)creates the cluster (the lab must be up: 'distriproc lab up'); waits\n"
            "        until every node says cluster_state:ok; the LAST line printed is the seed\n"
            "        ADDR:PORT. --maxmemory SIZE bounds each node (default 512M; noeviction:\n"
            "        a full store refuses writes, it never drops pages).\n"
            "  down  stops every node and removes the directory. 'distriproc lab down' does\n"
            "        the same as part of removing the lab.\n",
            dir);
}

/* `lab cluster up`. */
static int cluster_up(int argc, char **argv)
{
    uint64_t maxmem = DEFAULT_MAXMEMORY;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--maxmemory") == 0 && i + 1 < argc) {
            if (dp_parse_size(argv[++i], &maxmem) < 0 || maxmem < (16ull << 20)) {
                dp_error("--maxmemory takes a size >= 16M such as 512M (got '%s')", argv[i]);
                return 2;
            }
        } else {
            dp_error("unexpected argument '%s' for 'lab cluster up' (see 'distriproc lab cluster --help')",
                     argv[i]);
            return 2;
        }
    }
    struct lab_state st;
    struct dp_err err = {{0}};
    if (lab_probe(&st, &err) < 0 || !lab_state_complete(&st)) {
        dp_error("the lab is not up%s%s: run 'distriproc lab up' first", err.msg[0] ? ": " : "", err.msg);
        return 1;
    }
    char seed[64], dir[256];
    lab_cluster_dir(dir, sizeof(dir));
    if (lab_cluster_up(maxmem, seed, sizeof(seed), &err) < 0) {
        dp_error("lab cluster up failed: %s", err.msg);
        return 1;
    }
    printf("lab cluster up: 3 masters + 3 replicas, TLS (CA %s/ca.crt), AUTH (%s/password)\n", dir, dir);
    printf("%s\n", seed);
    return 0;
}

/* `lab cluster down`. */
static int cluster_down(int argc, char **argv)
{
    if (argc > 1) {
        dp_error("unexpected argument '%s' for 'lab cluster down'", argv[1]);
        return 2;
    }
    struct dp_err err = {{0}};
    int stopped = 0;
    if (lab_cluster_down(&stopped, &err) < 0) {
        dp_error("lab cluster down failed: %s", err.msg);
        return 1;
    }
    printf("lab cluster down: %d node(s) stopped, directory removed\n", stopped);
    return 0;
}

int cmd_lab_cluster(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            usage(stdout);
            return 0;
        }
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "up") == 0)
        return cluster_up(argc - 1, argv + 1);
    if (strcmp(argv[1], "down") == 0)
        return cluster_down(argc - 1, argv + 1);
    dp_error("unknown 'lab cluster' command '%s': use up or down", argv[1]);
    return 2;
}
