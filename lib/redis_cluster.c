/* redis_cluster: see redis_cluster.h. */
#include "redis_cluster.h"

#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/ssl.h>

/* ---- hash slots ------------------------------------------------------------------ */

/* CRC16-CCITT (XModem: poly 0x1021, init 0), the cluster specification's. */
static uint16_t crc16(const char *buf, size_t len)
{
    uint16_t crc = 0;
    for (size_t i = 0; i < len; i++) {
        crc ^= (uint16_t)((uint8_t)buf[i] << 8);
        for (int b = 0; b < 8; b++)
            crc = (crc & 0x8000) ? (uint16_t)((crc << 1) ^ 0x1021) : (uint16_t)(crc << 1);
    }
    return crc;
}

unsigned dp_redis_keyslot(const char *key, size_t len)
{
    /* Only the part between the first '{' and the next '}' counts, if the
     * two exist and enclose at least one byte. */
    const char *open = memchr(key, '{', len);
    if (open) {
        size_t rest = len - (size_t)(open - key) - 1;
        const char *close = memchr(open + 1, '}', rest);
        if (close && close > open + 1)
            return crc16(open + 1, (size_t)(close - open - 1)) & (DP_REDIS_SLOTS - 1);
    }
    return crc16(key, len) & (DP_REDIS_SLOTS - 1);
}

/* ---- pure parsers ------------------------------------------------------------------ */

/* "ADDR:PORT" (IPv4 literal, port 1..65535) of len bytes -> host/port. */
static int parse_hostport(const char *s, size_t len, char host[48], uint16_t *port)
{
    const char *colon = NULL;
    for (size_t i = 0; i < len; i++)
        if (s[i] == ':')
            colon = s + i;
    if (!colon || colon == s || (size_t)(colon - s) >= 48)
        return -1;
    size_t hl = (size_t)(colon - s), pl = len - hl - 1;
    if (pl == 0 || pl > 5)
        return -1;
    unsigned long p = 0;
    for (size_t i = 0; i < pl; i++) {
        if (colon[1 + i] < '0' || colon[1 + i] > '9')
            return -1;
        p = p * 10 + (unsigned long)(colon[1 + i] - '0');
    }
    if (p == 0 || p > 65535)
        return -1;
    char h[48];
    memcpy(h, s, hl);
    h[hl] = '\0';
    struct in_addr a;
    if (inet_pton(AF_INET, h, &a) != 1)
        return -1;
    memcpy(host, h, hl + 1);
    *port = (uint16_t)p;
    return 0;
}

int dp_redis_parse_redirect(const char *msg, size_t len, struct dp_redirect *out)
{
    memset(out, 0, sizeof(*out));
    /* "MOVED" or "ASK" as the first word claims a redirect; anything after
     * it that is not "SLOT ADDR:PORT" is malformed. */
    size_t plen;
    if (len >= 5 && memcmp(msg, "MOVED", 5) == 0 && (len == 5 || msg[5] == ' ')) {
        out->kind = DP_REDIRECT_MOVED;
        plen = 6;
    } else if (len >= 3 && memcmp(msg, "ASK", 3) == 0 && (len == 3 || msg[3] == ' ')) {
        out->kind = DP_REDIRECT_ASK;
        plen = 4;
    } else {
        return DP_REDIRECT_NONE;
    }
    if (len < plen)
        return -1;
    size_t i = plen;
    unsigned long slot = 0;
    size_t digits = 0;
    while (i < len && msg[i] >= '0' && msg[i] <= '9' && digits < 6) {
        slot = slot * 10 + (unsigned long)(msg[i] - '0');
        i++;
        digits++;
    }
    if (digits == 0 || i >= len || msg[i] != ' ' || slot >= DP_REDIS_SLOTS)
        return -1;
    i++;
    if (parse_hostport(msg + i, len - i, out->host, &out->port) < 0)
        return -1;
    out->slot = (unsigned)slot;
    return out->kind;
}

/* An integer element within [lo, hi]. */
static int int_in(const redisReply *r, long long lo, long long hi, long long *v)
{
    if (!r || r->type != REDIS_REPLY_INTEGER || r->integer < lo || r->integer > hi)
        return -1;
    *v = r->integer;
    return 0;
}

int dp_redis_parse_slots(const redisReply *r, const char *self_host, struct dp_slot_range **out, size_t *n,
                         struct dp_err *err)
{
    *out = NULL;
    *n = 0;
    if (!r || r->type != REDIS_REPLY_ARRAY) {
        dp_err_set(err, "CLUSTER SLOTS: not an array (is the node in cluster mode?)");
        return -1;
    }
    if (r->elements == 0) {
        dp_err_set(err, "CLUSTER SLOTS: no slots assigned (cluster not created yet?)");
        return -1;
    }
    struct dp_slot_range *v = calloc(r->elements, sizeof(*v));
    if (!v) {
        dp_err_set(err, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < r->elements; i++) {
        const redisReply *e = r->element[i];
        long long start, end, port;
        if (!e || e->type != REDIS_REPLY_ARRAY || e->elements < 3 || int_in(e->element[0], 0, 16383, &start) < 0 ||
            int_in(e->element[1], start, 16383, &end) < 0) {
            dp_err_set(err, "CLUSTER SLOTS: entry %zu is not [start, end, master...] with 0 <= start <= end < 16384", i);
            goto fail;
        }
        const redisReply *m = e->element[2];
        if (!m || m->type != REDIS_REPLY_ARRAY || m->elements < 2 || !m->element[0] ||
            m->element[0]->type != REDIS_REPLY_STRING || int_in(m->element[1], 1, 65535, &port) < 0) {
            dp_err_set(err, "CLUSTER SLOTS: entry %zu: master is not [address, port, ...]", i);
            goto fail;
        }
        const char *h = m->element[0]->len ? m->element[0]->str : self_host;
        struct in_addr a;
        if (strlen(h) >= sizeof(v[i].host) || strlen(h) != (m->element[0]->len ? m->element[0]->len : strlen(h)) ||
            inet_pton(AF_INET, h, &a) != 1) {
            dp_err_set(err, "CLUSTER SLOTS: entry %zu: master address '%.60s' is not IPv4", i, h);
            goto fail;
        }
        v[i].start = (unsigned)start;
        v[i].end = (unsigned)end;
        snprintf(v[i].host, sizeof(v[i].host), "%s", h);
        v[i].port = (uint16_t)port;
    }
    *out = v;
    *n = r->elements;
    return 0;
fail:
    free(v);
    return -1;
}

int dp_redis_parse_url(const char *url, struct dp_redis_url *out, struct dp_err *err)
{
    memset(out, 0, sizeof(*out));
    const char *p;
    if (strncmp(url, "redis://", 8) == 0) {
        p = url + 8;
    } else if (strncmp(url, "rediss://", 9) == 0) {
        p = url + 9;
        out->tls = 1;
    } else {
        dp_err_set(err, "store '%s': expected redis://ADDR:PORT[,ADDR:PORT...][/ID] (or rediss:// for TLS)", url);
        return -1;
    }
    const char *slash = strchr(p, '/');
    size_t hl = slash ? (size_t)(slash - p) : strlen(p);
    if (slash) {
        const char *id = slash + 1;
        size_t il = strlen(id);
        if (il >= sizeof(out->id) || strspn(id, "0123456789abcdef") != il) {
            dp_err_set(err, "store '%s': the checkpoint ID after '/' is lower-case hex (at most %zu digits)", url,
                       sizeof(out->id) - 1);
            return -1;
        }
        memcpy(out->id, id, il + 1);
    }
    while (hl > 0) {
        const char *comma = memchr(p, ',', hl);
        size_t el = comma ? (size_t)(comma - p) : hl;
        if (out->nseeds == DP_REDIS_MAX_SEEDS) {
            dp_err_set(err, "store '%s': at most %d seed addresses", url, DP_REDIS_MAX_SEEDS);
            return -1;
        }
        if (parse_hostport(p, el, out->host[out->nseeds], &out->port[out->nseeds]) < 0) {
            dp_err_set(err, "store '%s': '%.*s' is not IPv4ADDR:PORT", url, (int)(el > 60 ? 60 : el), p);
            return -1;
        }
        out->nseeds++;
        p += el + (comma ? 1 : 0);
        hl -= el + (comma ? 1 : 0);
        if (comma && hl == 0) {
            dp_err_set(err, "store '%s': empty address after ','", url);
            return -1;
        }
    }
    if (out->nseeds == 0) {
        dp_err_set(err, "store '%s': no ADDR:PORT given", url);
        return -1;
    }
    return 0;
}

/* ---- commands ------------------------------------------------------------------ */

void dp_rcmd_init(struct dp_rcmd *c, int key_arg)
{
    memset(c, 0, sizeof(*c));
    c->key_arg = key_arg;
    c->node = -1;
    c->ask_node = -1;
}

void dp_rcmd_arg(struct dp_rcmd *c, const void *p, size_t len)
{
    if (c->argc >= DP_REDIS_MAX_ARGS)
        abort(); /* a caller bug: batches are built with fixed shapes */
    c->argv[c->argc] = p;
    c->lens[c->argc] = len;
    c->argc++;
}

void dp_rcmd_reset(struct dp_rcmd *c)
{
    if (c->reply)
        freeReplyObject(c->reply);
    c->reply = NULL;
    c->node = -1;
    c->ask_node = -1;
}

/* ---- the cluster ------------------------------------------------------------------ */

struct rnode {
    char host[48];
    uint16_t port;
    char name[64];
    struct dp_rconn *c;
};

struct dp_rcluster {
    struct dp_redis_opts o;
    SSL_CTX *ctx;
    struct dp_redis_url url;
    struct rnode nodes[DP_REDIS_MAX_NODES];
    int nnodes;
    int16_t slot_node[DP_REDIS_SLOTS];   /* -1: unknown */
};

/* The node index for host:port, added if new; -1 when the table is full. */
static int node_find(struct dp_rcluster *cl, const char *host, uint16_t port)
{
    for (int i = 0; i < cl->nnodes; i++)
        if (cl->nodes[i].port == port && strcmp(cl->nodes[i].host, host) == 0)
            return i;
    if (cl->nnodes == DP_REDIS_MAX_NODES)
        return -1;
    struct rnode *n = &cl->nodes[cl->nnodes];
    snprintf(n->host, sizeof(n->host), "%s", host);
    n->port = port;
    snprintf(n->name, sizeof(n->name), "%s:%u", host, (unsigned)port);
    n->c = NULL;
    return cl->nnodes++;
}

/* The node's connection, opened if needed; NULL with err. */
static struct dp_rconn *node_conn(struct dp_rcluster *cl, int i, struct dp_err *err)
{
    struct rnode *n = &cl->nodes[i];
    if (!n->c)
        n->c = dp_rconn_open(n->host, n->port, &cl->o, cl->ctx, err);
    return n->c;
}

/* Drops a connection that failed: its pipeline state is unknown. */
static void node_drop(struct dp_rcluster *cl, int i)
{
    dp_rconn_close(cl->nodes[i].c);
    cl->nodes[i].c = NULL;
}

int dp_rcluster_apply_slots(struct dp_rcluster *cl, int node, const redisReply *r, struct dp_err *err)
{
    if (node < 0 || node >= cl->nnodes) {
        dp_err_set(err, "CLUSTER SLOTS from an unknown node");
        return -1;
    }
    if (r->type == REDIS_REPLY_ERROR) {
        dp_err_set(err, "%s: CLUSTER SLOTS: %.200s", cl->nodes[node].name, r->str);
        return -1;
    }
    struct dp_slot_range *v;
    size_t nv;
    if (dp_redis_parse_slots(r, cl->nodes[node].host, &v, &nv, err) < 0)
        return -1;
    /* the new map whole, or the old one kept */
    int16_t *map = malloc(sizeof(cl->slot_node));
    if (!map) {
        free(v);
        dp_err_set(err, "out of memory");
        return -1;
    }
    for (size_t k = 0; k < DP_REDIS_SLOTS; k++)
        map[k] = -1;
    for (size_t k = 0; k < nv; k++) {
        int ni = node_find(cl, v[k].host, v[k].port);
        if (ni < 0) {
            dp_err_set(err, "the cluster has more than %d nodes", DP_REDIS_MAX_NODES);
            free(v);
            free(map);
            return -1;
        }
        for (unsigned s = v[k].start; s <= v[k].end; s++)
            map[s] = (int16_t)ni;
    }
    memcpy(cl->slot_node, map, sizeof(cl->slot_node));
    free(map);
    free(v);
    return 0;
}

/* Reads the slot map from node i; -1 with err. */
static int slots_from(struct dp_rcluster *cl, int i, struct dp_err *err)
{
    struct dp_rconn *c = node_conn(cl, i, err);
    if (!c)
        return -1;
    redisReply *r = NULL;
    if (dp_rconn_call(c, 2, (const char *[]){"CLUSTER", "SLOTS"}, (size_t[]){7, 5}, &r, err) < 0) {
        node_drop(cl, i);
        return -1;
    }
    int rc = dp_rcluster_apply_slots(cl, i, r, err);
    freeReplyObject(r);
    return rc;
}

/* Reads the slot map again from the first node (known, then seeds) that
 * answers: after a redirect, a lost node, or a failover. */
static int refresh_slots(struct dp_rcluster *cl, struct dp_err *err)
{
    for (size_t s = 0; s < cl->url.nseeds; s++)
        if (node_find(cl, cl->url.host[s], cl->url.port[s]) < 0)
            break;
    struct dp_err last = {{0}};
    for (int i = 0; i < cl->nnodes; i++)
        if (slots_from(cl, i, &last) == 0)
            return 0;
    dp_err_set(err, "no node of the store answers CLUSTER SLOTS (last: %s)", last.msg);
    return -1;
}

struct dp_rcluster *dp_rcluster_open(const struct dp_redis_url *url, const struct dp_redis_opts *o,
                                     struct dp_err *err)
{
    if (url->tls && !o->ca_file[0]) {
        dp_err_set(err, "rediss:// needs the CA of the store's certificates (--store-ca FILE)");
        return NULL;
    }
    struct dp_rcluster *cl = calloc(1, sizeof(*cl));
    if (!cl) {
        dp_err_set(err, "out of memory");
        return NULL;
    }
    cl->o = *o;
    cl->url = *url;
    if (o->ca_file[0] && !(cl->ctx = dp_redis_tls_ctx(o, err))) {
        free(cl);
        return NULL;
    }
    if (refresh_slots(cl, err) < 0) {
        dp_rcluster_close(cl);
        return NULL;
    }
    return cl;
}

void dp_rcluster_close(struct dp_rcluster *cl)
{
    if (!cl)
        return;
    for (int i = 0; i < cl->nnodes; i++)
        dp_rconn_close(cl->nodes[i].c);
    dp_redis_tls_ctx_free(cl->ctx);
    free(cl);
}

const char *dp_rcluster_node_name(const struct dp_rcluster *cl, int node)
{
    return node >= 0 && node < cl->nnodes ? cl->nodes[node].name : "?";
}

int dp_rcluster_masters(const struct dp_rcluster *cl)
{
    uint8_t seen[DP_REDIS_MAX_NODES] = {0};
    int n = 0;
    for (size_t s = 0; s < DP_REDIS_SLOTS; s++)
        if (cl->slot_node[s] >= 0 && !seen[cl->slot_node[s]]) {
            seen[cl->slot_node[s]] = 1;
            n++;
        }
    return n;
}

int dp_rcluster_nodes(const struct dp_rcluster *cl) { return cl->nnodes; }

int dp_rcluster_route(const struct dp_rcluster *cl, unsigned slot)
{
    return slot < DP_REDIS_SLOTS ? cl->slot_node[slot] : -1;
}

struct dp_rconn *dp_rcluster_node_start(struct dp_rcluster *cl, int node, struct dp_err *err)
{
    if (node < 0 || node >= cl->nnodes) {
        dp_err_set(err, "no node %d in the store's map", node);
        return NULL;
    }
    return dp_rconn_start(cl->nodes[node].host, cl->nodes[node].port, &cl->o, cl->ctx, err);
}

/* The errors after which a command is simply sent again (a failover or a
 * slot migration in progress): one classifier for the family. */
static int transient_error(const redisReply *r)
{
    static const char *const words[] = {"TRYAGAIN", "CLUSTERDOWN", "LOADING", "MASTERDOWN", "READONLY"};
    for (size_t i = 0; i < DP_ARRAY_LEN(words); i++) {
        size_t l = strlen(words[i]);
        if (r->len >= l && memcmp(r->str, words[i], l) == 0)
            return 1;
    }
    return 0;
}

int dp_rcluster_classify(struct dp_rcluster *cl, struct dp_rcmd *c, redisReply *r, int *refresh, int *backoff,
                         struct dp_err *err)
{
    if (r->type != REDIS_REPLY_ERROR)
        return 0;
    struct dp_redirect rd;
    int k = dp_redis_parse_redirect(r->str, r->len, &rd);
    if (k < 0) {
        dp_err_set(err, "malformed redirect from the store: '%.100s'", r->str);
        return -1;
    }
    if (k == DP_REDIRECT_NONE) {
        if (!transient_error(r))
            return 0;
        *backoff = 1;
        *refresh = 1;
        return 1;
    }
    if (rd.slot != c->slot) {
        dp_err_set(err, "redirect for slot %u answers a command for slot %u: '%.100s'", rd.slot, c->slot, r->str);
        return -1;
    }
    int ni = node_find(cl, rd.host, rd.port);
    if (ni < 0) {
        dp_err_set(err, "the cluster has more than %d nodes", DP_REDIS_MAX_NODES);
        return -1;
    }
    if (k == DP_REDIRECT_MOVED) {
        cl->slot_node[rd.slot] = (int16_t)ni;
        *refresh = 1; /* other slots of the old owner moved too, probably */
    } else {
        c->ask_node = ni;
    }
    return 1;
}

/* Sends the commands routed to node ni (route[i] == ni). Returns 1 when
 * sent, 0 when the node is lost (its commands stay pending, *refresh set),
 * -1 out of memory (err). */
static int send_node(struct dp_rcluster *cl, int ni, struct dp_rcmd *cmds, size_t n, const int *route,
                     uint64_t deadline, int *refresh, int *backoff, struct dp_err *lost, struct dp_err *err)
{
    struct dp_rconn *c = node_conn(cl, ni, lost);
    if (!c) {
        *refresh = *backoff = 1;
        return 0;
    }
    for (size_t i = 0; i < n; i++) {
        if (route[i] != ni)
            continue;
        if ((cmds[i].ask_node == ni && dp_rconn_append(c, 1, (const char *[]){"ASKING"}, (size_t[]){6}) < 0) ||
            dp_rconn_append(c, cmds[i].argc, cmds[i].argv, cmds[i].lens) < 0) {
            node_drop(cl, ni); /* half a batch queued: never send it later */
            dp_err_set(err, "out of memory");
            return -1;
        }
    }
    if (dp_rconn_flush(c, deadline, lost) < 0) {
        node_drop(cl, ni);
        *refresh = *backoff = 1;
        return 0;
    }
    return 1;
}

/* Reads node ni's replies to what send_node sent, in order. Returns -1 only
 * for a fatal protocol error (err); a lost node leaves its commands pending
 * with *refresh set. */
static int recv_node(struct dp_rcluster *cl, int ni, struct dp_rcmd *cmds, size_t n, const int *route,
                     uint64_t deadline, int *refresh, int *backoff, struct dp_err *lost, struct dp_err *err)
{
    struct dp_rconn *c = cl->nodes[ni].c;
    for (size_t i = 0; i < n; i++) {
        if (route[i] != ni)
            continue;
        redisReply *r = NULL;
        if (cmds[i].ask_node == ni) {
            if (dp_rconn_read(c, &r, deadline, lost) < 0)
                goto lost;
            freeReplyObject(r); /* +OK of ASKING; the command's reply says the rest */
            cmds[i].ask_node = -1;
        }
        if (dp_rconn_read(c, &r, deadline, lost) < 0)
            goto lost;
        int k = dp_rcluster_classify(cl, &cmds[i], r, refresh, backoff, err);
        if (k < 0) {
            freeReplyObject(r);
            node_drop(cl, ni); /* a node that lies about slots is not trusted further */
            return -1;
        }
        if (k == 0) {
            cmds[i].reply = r;
            cmds[i].node = ni;
        } else {
            freeReplyObject(r);
        }
    }
    return 0;
lost:
    node_drop(cl, ni);
    *refresh = *backoff = 1;
    return 0;
}

int dp_rcluster_exec(struct dp_rcluster *cl, struct dp_rcmd *cmds, size_t n, int timeout_ms, struct dp_err *err)
{
    uint64_t deadline = dp_now_ns() + (uint64_t)timeout_ms * 1000000ull;
    int *route = malloc((n ? n : 1) * sizeof(int));
    if (!route) {
        dp_err_set(err, "out of memory");
        return -1;
    }
    for (size_t i = 0; i < n; i++) {
        struct dp_rcmd *c = &cmds[i];
        if (c->key_arg >= 0)
            c->slot = dp_redis_keyslot(c->argv[c->key_arg], c->lens[c->key_arg]);
    }
    struct dp_err lost = {{0}};
    uint8_t sent[DP_REDIS_MAX_NODES] = {0}; /* 1: sent to, replies not all read */
    int rc = -1;
    for (int round = 0;; round++) {
        size_t pending = 0;
        for (size_t i = 0; i < n; i++) {
            route[i] = -1;
            if (cmds[i].reply)
                continue;
            pending++;
            route[i] = cmds[i].ask_node >= 0 ? cmds[i].ask_node : cl->slot_node[cmds[i].slot];
        }
        if (pending == 0) {
            rc = 0;
            break;
        }
        if (round > 0 && dp_now_ns() >= deadline) {
            dp_err_set(err, "%zu of %zu commands unanswered after %d ms (last: %s)", pending, n, timeout_ms,
                       lost.msg[0] ? lost.msg : "slots not served");
            break;
        }
        /* Every node's share goes out first, then the replies are read: the
         * masters work in parallel, one round trip for the whole batch. */
        int refresh = 0, backoff = 0;
        memset(sent, 0, sizeof(sent));
        for (size_t i = 0; i < n; i++)
            if (route[i] >= 0)
                sent[route[i]] = 2; /* has commands */
        for (int ni = 0; ni < cl->nnodes; ni++) {
            if (sent[ni] != 2)
                continue;
            int k = send_node(cl, ni, cmds, n, route, deadline, &refresh, &backoff, &lost, err);
            if (k < 0)
                goto out;
            sent[ni] = (uint8_t)k;
        }
        for (int ni = 0; ni < cl->nnodes; ni++) {
            if (sent[ni] == 1 && recv_node(cl, ni, cmds, n, route, deadline, &refresh, &backoff, &lost, err) < 0)
                goto out;
            sent[ni] = 0; /* its pipeline is empty again */
        }
        for (size_t i = 0; i < n; i++)
            if (route[i] < 0)
                refresh = backoff = 1; /* a slot no master serves (yet) */
        if (refresh && refresh_slots(cl, &lost) < 0)
            backoff = 1;
        if (backoff) {
            struct timespec ts = {0, 50 * 1000000L};
            nanosleep(&ts, NULL);
        }
    }
out:
    /* A connection with replies still unread would hand them to the next
     * batch: drop it. */
    for (int ni = 0; ni < cl->nnodes; ni++)
        if (sent[ni] == 1)
            node_drop(cl, ni);
    free(route);
    return rc;
}

long long dp_rcluster_wait(struct dp_rcluster *cl, int node, int numreplicas, int timeout_ms, struct dp_err *err)
{
    if (node < 0 || node >= cl->nnodes || !cl->nodes[node].c) {
        dp_err_set(err, "WAIT: the connection to %s was lost; its writes must be sent again",
                   dp_rcluster_node_name(cl, node));
        return -1;
    }
    char nr[16], to[16];
    int l1 = snprintf(nr, sizeof(nr), "%d", numreplicas), l2 = snprintf(to, sizeof(to), "%d", timeout_ms);
    redisReply *r = NULL;
    struct dp_rconn *c = cl->nodes[node].c;
    if (dp_rconn_append(c, 3, (const char *[]){"WAIT", nr, to}, (size_t[]){4, (size_t)l1, (size_t)l2}) < 0) {
        dp_err_set(err, "out of memory");
        return -1;
    }
    uint64_t deadline = dp_now_ns() + (uint64_t)(timeout_ms + 5000) * 1000000ull;
    if (dp_rconn_flush(c, deadline, err) < 0 || dp_rconn_read(c, &r, deadline, err) < 0) {
        node_drop(cl, node);
        return -1;
    }
    if (r->type != REDIS_REPLY_INTEGER || r->integer < 0) {
        dp_err_set(err, "%s: WAIT answered %.100s", cl->nodes[node].name,
                   r->type == REDIS_REPLY_ERROR ? r->str : "a non-integer");
        freeReplyObject(r);
        return -1;
    }
    long long v = r->integer;
    freeReplyObject(r);
    return v;
}
