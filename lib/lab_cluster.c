/* lab_cluster: see lab_cluster.h. */
#include "lab_cluster.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <sodium.h>

#include "lab.h"
#include "redis_cluster.h"

#define UP_TIMEOUT_MS 30000

/* ---- layout ------------------------------------------------------------------- */

void lab_cluster_dir(char *buf, size_t len)
{
    snprintf(buf, len, "/run/distriproc/lab-%s/cluster", lab_name());
}

void lab_cluster_node(int i, const char **host, const char **addr, uint16_t *port)
{
    const struct lab_host *h = &lab_hosts[i < LAB_CLUSTER_NODES / 2 ? 0 : 1];
    *host = h->name;
    *addr = h->addr;
    *port = (uint16_t)(LAB_CLUSTER_BASE_PORT + i);
}

/* mkdir -p with mode. */
static int mkdirs(const char *path, mode_t mode, struct dp_err *err)
{
    char p[512];
    snprintf(p, sizeof(p), "%s", path);
    for (char *s = p + 1; *s; s++) {
        if (*s != '/')
            continue;
        *s = '\0';
        if (mkdir(p, 0755) < 0 && errno != EEXIST)
            goto fail;
        *s = '/';
    }
    if (mkdir(p, mode) < 0 && errno != EEXIST)
        goto fail;
    return 0;
fail:
    dp_err_set(err, "cannot create %s: %s", p, strerror(errno));
    return -1;
}

/* Writes a whole small file with mode. */
static int write_file(const char *path, const char *text, mode_t mode, struct dp_err *err)
{
    int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, mode);
    if (fd < 0 || dp_write_full(fd, text, strlen(text)) < 0 || close(fd) < 0) {
        dp_err_set(err, "cannot write %s: %s", path, strerror(errno));
        return -1;
    }
    return 0;
}

/* rm -r of the cluster directory (only files and one level of node dirs). */
static void remove_tree(const char *dir)
{
    DIR *d = opendir(dir);
    if (!d)
        return;
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, ".."))
            continue;
        char p[1024];
        snprintf(p, sizeof(p), "%s/%s", dir, e->d_name);
        struct stat st;
        if (lstat(p, &st) == 0 && S_ISDIR(st.st_mode))
            remove_tree(p);
        else
            unlink(p);
    }
    closedir(d);
    rmdir(dir);
}

/* ---- nodes ------------------------------------------------------------------- */

/* pid from node i's pid file if that process is a redis-server; else 0. */
static pid_t node_pid(const char *dir, int i)
{
    const char *host, *addr;
    uint16_t port;
    lab_cluster_node(i, &host, &addr, &port);
    char p[400], comm[64] = "";
    snprintf(p, sizeof(p), "%s/node-%u/redis.pid", dir, (unsigned)port);
    int pid = dp_read_pid_file(p);
    if (pid <= 0)
        return 0;
    snprintf(p, sizeof(p), "/proc/%d/comm", pid);
    FILE *f = fopen(p, "r");
    if (!f)
        return 0;
    if (!fgets(comm, sizeof(comm), f))
        comm[0] = '\0';
    fclose(f);
    return strncmp(comm, "redis-server", 12) == 0 ? (pid_t)pid : 0;
}

/* Runs argv inside lab host `host`'s network namespace and waits (a
 * daemonizing redis-server returns at once). */
static int run_in_host(const char *host, const char *const argv[], struct dp_err *err)
{
    pid_t pid = fork();
    if (pid < 0) {
        dp_err_set(err, "fork: %s", strerror(errno));
        return -1;
    }
    if (pid == 0) {
        struct dp_err e;
        if (lab_enter(lab_host_find(host), &e) < 0) {
            fprintf(stderr, "%s\n", e.msg);
            _exit(126);
        }
        int nul = open("/dev/null", O_RDWR);
        if (nul >= 0) {
            dup2(nul, STDIN_FILENO);
            dup2(nul, STDOUT_FILENO);
        }
        execvp(argv[0], (char *const *)argv);
        fprintf(stderr, "cannot run %s: %s (install redis-server: make deps)\n", argv[0], strerror(errno));
        _exit(127);
    }
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) {
            dp_err_set(err, "waitpid: %s", strerror(errno));
            return -1;
        }
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
        dp_err_set(err, "'%s' in lab host %s failed (status %d)", argv[0], host, status);
        return -1;
    }
    return 0;
}

/* node-PORT/redis.conf: TLS everywhere (clients, replication, cluster bus),
 * AUTH, bounded memory, nothing on disk but the cluster's own nodes.conf. */
static int write_conf(const char *dir, int i, const char *pass, uint64_t maxmemory, struct dp_err *err)
{
    const char *host, *addr;
    uint16_t port;
    lab_cluster_node(i, &host, &addr, &port);
    char nd[300], conf[350], text[8192];
    snprintf(nd, sizeof(nd), "%s/node-%u", dir, (unsigned)port);
    if (mkdirs(nd, 0700, err) < 0)
        return -1;
    snprintf(conf, sizeof(conf), "%s/redis.conf", nd);
    snprintf(text, sizeof(text),
             "bind %s\nport 0\ntls-port %u\n"
             "tls-cert-file %s/node.crt\ntls-key-file %s/node.key\ntls-ca-cert-file %s/ca.crt\n"
             "tls-auth-clients no\ntls-replication yes\ntls-cluster yes\n"
             "cluster-enabled yes\ncluster-config-file %s/nodes.conf\ncluster-node-timeout 2000\n"
             "cluster-replica-validity-factor 0\ncluster-require-full-coverage yes\n"
             "requirepass %s\nmasterauth %s\n"
             "dir %s\nsave \"\"\nappendonly no\n"
             "daemonize yes\npidfile %s/redis.pid\nlogfile %s/redis.log\n"
             "maxmemory %llu\nmaxmemory-policy noeviction\nmaxclients 1000\n"
             "protected-mode no\nlatency-tracking no\n",
             addr, (unsigned)port, dir, dir, dir, nd, pass, pass, nd, nd, nd, (unsigned long long)maxmemory);
    return write_file(conf, text, 0600, err);
}

/* ---- certificates -------------------------------------------------------------- */

/* A CA and one node certificate valid for both lab addresses (the nodes
 * and the clients check it), with the openssl command. */
static int make_certs(const char *dir, struct dp_err *err)
{
    char ca_key[600], ca_crt[600], n_key[600], n_csr[600], n_crt[600], ext[600], serial[600], san[200];
    snprintf(ca_key, sizeof(ca_key), "%s/ca.key", dir);
    snprintf(ca_crt, sizeof(ca_crt), "%s/ca.crt", dir);
    snprintf(n_key, sizeof(n_key), "%s/node.key", dir);
    snprintf(n_csr, sizeof(n_csr), "%s/node.csr", dir);
    snprintf(n_crt, sizeof(n_crt), "%s/node.crt", dir);
    snprintf(ext, sizeof(ext), "%s/node.ext", dir);
    snprintf(serial, sizeof(serial), "%s/ca.srl", dir);
    snprintf(san, sizeof(san), "subjectAltName=IP:%s,IP:%s,IP:127.0.0.1\n", lab_hosts[0].addr, lab_hosts[1].addr);
    if (write_file(ext, san, 0600, err) < 0)
        return -1;
    const char *ca[] = {"openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                        "-nodes", "-keyout", ca_key, "-out", ca_crt, "-days", "30", "-subj",
                        "/CN=distriproc-lab-cluster-ca", NULL};
    const char *req[] = {"openssl", "req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                         "-keyout", n_key, "-out", n_csr, "-subj", "/CN=distriproc-lab-cluster-node", NULL};
    const char *sign[] = {"openssl", "x509", "-req", "-in", n_csr, "-CA", ca_crt, "-CAkey", ca_key,
                          "-CAserial", serial, "-CAcreateserial", "-out", n_crt, "-days", "30", "-extfile", ext,
                          NULL};
    if (lab_run_tool(ca, NULL, 0, err) != 0 || lab_run_tool(req, NULL, 0, err) != 0 ||
        lab_run_tool(sign, NULL, 0, err) != 0)
        return -1;
    chmod(ca_crt, 0644);
    chmod(n_crt, 0644);
    return 0;
}

/* ---- up / down -------------------------------------------------------------------- */

/* One node's CLUSTER NODES shows 3 masters and 3 replicas, none failing
 * or still in handshake: replicas have been assigned everywhere. */
static int roles_settled(const char *nodes)
{
    int masters = 0, replicas = 0, bad = 0;
    for (const char *l = nodes; *l;) {
        const char *e = strchr(l, '\n');
        size_t n = e ? (size_t)(e - l) : strlen(l);
        char line[1024];
        snprintf(line, sizeof(line), "%.*s", (int)(n < sizeof(line) ? n : sizeof(line) - 1), l);
        masters += strstr(line, "master") != NULL;
        replicas += strstr(line, "slave") != NULL;
        bad += strstr(line, "fail") != NULL || strstr(line, "handshake") != NULL;
        l += n + (e ? 1 : 0);
    }
    return masters == 3 && replicas == 3 && !bad;
}

/* Every node answers CLUSTER INFO with cluster_state:ok and a client sees 3
 * masters; bounded by UP_TIMEOUT_MS. Runs in the src namespace. */
static int wait_ok(const char *dir, const char *pass, struct dp_err *err)
{
    struct dp_redis_opts o;
    memset(&o, 0, sizeof(o));
    snprintf(o.ca_file, sizeof(o.ca_file), "%s/ca.crt", dir);
    snprintf(o.pass, sizeof(o.pass), "%s", pass);
    o.timeout_ms = 2000;
    struct dp_err last = {{0}};
    struct ssl_ctx_st *ctx = dp_redis_tls_ctx(&o, err);
    if (!ctx)
        return -1;
    uint64_t deadline = dp_now_ns() + (uint64_t)UP_TIMEOUT_MS * 1000000ull;
    while (dp_now_ns() < deadline) {
        int ok = 0;
        for (int i = 0; i < LAB_CLUSTER_NODES; i++) {
            const char *host, *addr;
            uint16_t port;
            lab_cluster_node(i, &host, &addr, &port);
            struct dp_rconn *c = dp_rconn_open(addr, port, &o, ctx, &last);
            if (!c)
                break;
            redisReply *r = NULL, *nr = NULL;
            if (dp_rconn_call(c, 2, (const char *[]){"CLUSTER", "INFO"}, (size_t[]){7, 4}, &r, &last) == 0 &&
                dp_rconn_call(c, 2, (const char *[]){"CLUSTER", "NODES"}, (size_t[]){7, 5}, &nr, &last) == 0) {
                if (r->type == REDIS_REPLY_STRING && strstr(r->str, "cluster_state:ok") &&
                    nr->type == REDIS_REPLY_STRING && roles_settled(nr->str))
                    ok++;
                else
                    dp_err_set(&last, "%s:%u: cluster not ready (%.80s)", addr, (unsigned)port,
                               r->type == REDIS_REPLY_STRING || r->type == REDIS_REPLY_ERROR ? r->str : "?");
            }
            if (r)
                freeReplyObject(r);
            if (nr)
                freeReplyObject(nr);
            dp_rconn_close(c);
        }
        if (ok == LAB_CLUSTER_NODES) {
            struct dp_redis_url u;
            if (dp_redis_parse_url("rediss://10.250.0.1:7001", &u, &last) == 0) {
                struct dp_rcluster *cl = dp_rcluster_open(&u, &o, &last);
                int m = cl ? dp_rcluster_masters(cl) : 0;
                dp_rcluster_close(cl);
                if (!cl)
                    continue;
                if (m != 3)
                    dp_err_set(&last, "the slots are served by %d masters, not 3", m);
                if (m == 3) {
                    dp_redis_tls_ctx_free(ctx);
                    return 0;
                }
            }
        }
        struct timespec ts = {0, 200 * 1000000L};
        nanosleep(&ts, NULL);
    }
    dp_redis_tls_ctx_free(ctx);
    dp_err_set(err, "the cluster did not become ready in %d s (last: %s); see %s/node-*/redis.log (kept until "
               "'lab cluster down')", UP_TIMEOUT_MS / 1000,
               last.msg, dir);
    return -1;
}

int lab_cluster_up(uint64_t maxmemory, char *seed, size_t seedlen, struct dp_err *err)
{
    char dir[256], p[400];
    int stopped = 0;
    if (lab_cluster_down(&stopped, err) < 0)
        return -1;
    lab_cluster_dir(dir, sizeof(dir));
    if (mkdirs(dir, 0700, err) < 0 || make_certs(dir, err) < 0)
        goto fail;
    /* The password: 32 random bytes as hex, readable by root only. */
    uint8_t raw[32];
    char pass[65];
    randombytes_buf(raw, sizeof(raw));
    sodium_bin2hex(pass, sizeof(pass), raw, sizeof(raw));
    snprintf(p, sizeof(p), "%s/password", dir);
    if (write_file(p, pass, 0600, err) < 0)
        goto fail;
    for (int i = 0; i < LAB_CLUSTER_NODES; i++) {
        const char *host, *addr;
        uint16_t port;
        lab_cluster_node(i, &host, &addr, &port);
        if (write_conf(dir, i, pass, maxmemory, err) < 0)
            goto fail;
        snprintf(p, sizeof(p), "%s/node-%u/redis.conf", dir, (unsigned)port);
        const char *argv[] = {"redis-server", p, NULL};
        if (run_in_host(host, argv, err) < 0)
            goto fail;
    }
    /* redis-cli places the replicas on the other host than their masters. */
    char nodes[LAB_CLUSTER_NODES][32], cacert[300];
    const char *argv[16 + LAB_CLUSTER_NODES];
    int a = 0;
    snprintf(cacert, sizeof(cacert), "%s/ca.crt", dir);
    argv[a++] = "redis-cli";
    argv[a++] = "--tls";
    argv[a++] = "--cacert";
    argv[a++] = cacert;
    argv[a++] = "--no-auth-warning";
    argv[a++] = "-a";
    argv[a++] = pass;
    argv[a++] = "--cluster";
    argv[a++] = "create";
    for (int i = 0; i < LAB_CLUSTER_NODES; i++) {
        const char *host, *addr;
        uint16_t port;
        lab_cluster_node(i, &host, &addr, &port);
        snprintf(nodes[i], sizeof(nodes[i]), "%s:%u", addr, (unsigned)port);
        argv[a++] = nodes[i];
    }
    argv[a++] = "--cluster-replicas";
    argv[a++] = "1";
    argv[a++] = "--cluster-yes";
    argv[a] = NULL;
    /* Every node answers before the cluster is made (a bounded wait). */
    struct dp_redis_opts o;
    memset(&o, 0, sizeof(o));
    snprintf(o.ca_file, sizeof(o.ca_file), "%s", cacert);
    snprintf(o.pass, sizeof(o.pass), "%s", pass);
    o.timeout_ms = 1000;
    if (lab_enter(&lab_hosts[0], err) < 0)
        goto fail;
    struct ssl_ctx_st *ctx = dp_redis_tls_ctx(&o, err);
    if (!ctx)
        goto fail;
    for (int i = 0; i < LAB_CLUSTER_NODES; i++) {
        const char *host, *addr;
        uint16_t port;
        lab_cluster_node(i, &host, &addr, &port);
        struct dp_rconn *c = NULL;
        for (int t = 0; t < 100 && !c; t++) {
            c = dp_rconn_open(addr, port, &o, ctx, err);
            if (!c) {
                struct timespec ts = {0, 100 * 1000000L};
                nanosleep(&ts, NULL);
            }
        }
        if (!c) {
            dp_redis_tls_ctx_free(ctx);
            goto fail;
        }
        dp_rconn_close(c);
    }
    dp_redis_tls_ctx_free(ctx);
    char out[8192];
    if (lab_run_tool(argv, out, sizeof(out), err) != 0)
        goto fail;
    if (wait_ok(dir, pass, err) < 0)
        goto fail;
    snprintf(seed, seedlen, "%s", nodes[0]);
    snprintf(p, sizeof(p), "%s/seed", dir);
    char line[40];
    snprintf(line, sizeof(line), "%s\n", nodes[0]);
    if (write_file(p, line, 0644, err) < 0)
        goto fail;
    sodium_memzero(pass, sizeof(pass));
    return 0;
fail:
    /* No node keeps running; the directory (logs) stays for the user until
     * the next up or down. */
    for (int i = 0; i < LAB_CLUSTER_NODES; i++) {
        pid_t pid = node_pid(dir, i);
        if (pid > 0)
            kill(pid, SIGKILL);
    }
    return -1;
}

int lab_cluster_down(int *stopped, struct dp_err *err)
{
    char dir[256];
    lab_cluster_dir(dir, sizeof(dir));
    pid_t pids[LAB_CLUSTER_NODES];
    int n = 0;
    for (int i = 0; i < LAB_CLUSTER_NODES; i++)
        if ((pids[n] = node_pid(dir, i)) > 0)
            n++;
    for (int i = 0; i < n; i++)
        kill(pids[i], SIGKILL);
    /* Bounded: SIGKILL cannot be refused; the pid must vanish within 5 s. */
    for (int t = 0; t < 100; t++) {
        int alive = 0;
        for (int i = 0; i < n; i++)
            alive += kill(pids[i], 0) == 0;
        if (!alive)
            break;
        struct timespec ts = {0, 50 * 1000000L};
        nanosleep(&ts, NULL);
    }
    for (int i = 0; i < n; i++) {
        char p[64], comm[64] = "";
        snprintf(p, sizeof(p), "/proc/%d/comm", (int)pids[i]);
        FILE *f = fopen(p, "r");
        if (f) {
            if (fgets(comm, sizeof(comm), f) && strncmp(comm, "redis-server", 12) == 0) {
                fclose(f);
                dp_err_set(err, "redis-server pid %d survives SIGKILL; check 'cat /proc/%d/stack'", (int)pids[i],
                           (int)pids[i]);
                return -1;
            }
            fclose(f);
        }
    }
    remove_tree(dir);
    char *slash = strrchr(dir, '/');
    if (slash) { /* its parent, /run/distriproc/lab-NAME, if now empty */
        *slash = '\0';
        rmdir(dir);
        *slash = '/';
    }
    if (stopped)
        *stopped = n;
    if (access(dir, F_OK) == 0) {
        dp_err_set(err, "cannot remove %s", dir);
        return -1;
    }
    return 0;
}
