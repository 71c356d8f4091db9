/* connlimit: connection and input-memory limits of the page server (see
 * connlimit.h). Pure: counters and decisions, the server does the I/O. */
#include "connlimit.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* ---- configuration ---------------------------------------------------------- */

/* Fills what the operator left unset, so every bound has a stated default. */
void dp_connlimit_cfg_defaults(struct dp_connlimit_cfg *cfg)
{
    if (!cfg->max_conns)
        cfg->max_conns = DP_LIMIT_MAX_CONNS_DEFAULT;
    if (!cfg->max_preauth)
        cfg->max_preauth = cfg->max_conns > DP_LIMIT_MAX_PREAUTH_DEFAULT ? DP_LIMIT_MAX_PREAUTH_DEFAULT
                                                                         : (cfg->max_conns + 1) / 2;
    if (!cfg->max_per_peer)
        cfg->max_per_peer = DP_LIMIT_MAX_PER_PEER_DEFAULT;
    if (!cfg->max_buffered)
        cfg->max_buffered = DP_LIMIT_MAX_BUFFERED_DEFAULT;
    if (!cfg->handshake_ns)
        cfg->handshake_ns = DP_LIMIT_HANDSHAKE_MS_DEFAULT * 1000000ull;
}

/* A pre-authentication limit that covers every slot would keep none for key
 * holders, and a buffer cap below one maximal request would refuse it always. */
int dp_connlimit_cfg_check(const struct dp_connlimit_cfg *cfg, struct dp_err *err)
{
    if (cfg->max_conns < 2) {
        dp_err_set(err, "--max-conns %u: at least 2 (one slot for a handshake, one for an authenticated peer)",
                   cfg->max_conns);
        return -1;
    }
    if (cfg->max_preauth >= cfg->max_conns) {
        dp_err_set(err, "--max-preauth %u must be below --max-conns %u: the difference is kept for "
                   "authenticated peers", cfg->max_preauth, cfg->max_conns);
        return -1;
    }
    if (cfg->max_per_peer < 2) {
        dp_err_set(err, "--max-per-peer %u: at least 2", cfg->max_per_peer);
        return -1;
    }
    if (cfg->max_buffered < (1u << 20)) {
        dp_err_set(err, "--max-buffered %llu bytes: at least 1M", (unsigned long long)cfg->max_buffered);
        return -1;
    }
    return 0;
}

const char dp_connlimit_usage[] =
    "  --max-conns N         connections at once, all peers (default 1024)\n"
    "  --max-preauth N       of these, still in the handshake (default 64); the rest are\n"
    "                        kept for authenticated peers. A new connection past a limit\n"
    "                        pushes out the least advanced unauthenticated one\n"
    "  --max-per-peer N      connections from one IP address (default 256)\n"
    "  --max-buffered SIZE   memory for partly received requests and for replies queued for\n"
    "                        slow readers, all connections (default 256M); past it a request\n"
    "                        that needs more input gets a BUSY error, and a connection with\n"
    "                        replies queued gets no new one until it has read them\n"
    "  --idle-timeout SEC    close an authenticated connection with no traffic for SEC\n"
    "                        seconds (default 300, 0 = never; clients reconnect by themselves)\n"
    "  --handshake-timeout MS\n"
    "                        close a connection that has not authenticated MS milliseconds\n"
    "                        after connecting, or has not read its fatal error by then\n"
    "                        (default 10000; 100 to 600000)\n";

/* Whole numbers only: a limit of "1e3" or "-1" is a typo, not a request. */
static int parse_u64(const char *val, uint64_t max, uint64_t *out)
{
    char *end;
    if (!val || !*val || *val == '-')
        return -1;
    errno = 0;
    unsigned long long v = strtoull(val, &end, 10);
    if (errno || *end || v > max)
        return -1;
    *out = v;
    return 0;
}

int dp_connlimit_parse_flag(struct dp_connlimit_cfg *cfg, const char *name, const char *val, struct dp_err *err)
{
    uint64_t v = 0;
    if (!strcmp(name, "max-buffered")) {
        if (dp_parse_size(val, &v) < 0 || v == 0) {
            dp_err_set(err, "--max-buffered takes a size such as 64M (got '%s')", val ? val : "");
            return -1;
        }
        cfg->max_buffered = v;
        return 0;
    }
    if (!strcmp(name, "idle-timeout")) {
        if (parse_u64(val, 86400 * 365, &v) < 0) {
            dp_err_set(err, "--idle-timeout takes whole seconds, 0 for never (got '%s')", val ? val : "");
            return -1;
        }
        cfg->idle_ns = v * 1000000000ull;
        return 0;
    }
    if (!strcmp(name, "handshake-timeout")) {
        if (parse_u64(val, 600000, &v) < 0 || v < 100) {
            dp_err_set(err, "--handshake-timeout takes whole milliseconds from 100 to 600000 (got '%s')",
                       val ? val : "");
            return -1;
        }
        cfg->handshake_ns = v * 1000000ull;
        return 0;
    }
    uint32_t *field = !strcmp(name, "max-conns") ? &cfg->max_conns
                      : !strcmp(name, "max-preauth") ? &cfg->max_preauth
                      : !strcmp(name, "max-per-peer") ? &cfg->max_per_peer : NULL;
    if (!field) {
        dp_err_set(err, "unknown limit --%s", name);
        return -1;
    }
    if (parse_u64(val, 1u << 20, &v) < 0 || v == 0) {
        dp_err_set(err, "--%s takes a whole number from 1 to 1048576 (got '%s')", name, val ? val : "");
        return -1;
    }
    *field = (uint32_t)v;
    return 0;
}

void dp_connlimit_init(struct dp_connlimit *l, const struct dp_connlimit_cfg *cfg)
{
    memset(l, 0, sizeof(*l));
    l->cfg = *cfg;
    dp_connlimit_cfg_defaults(&l->cfg);
}

void dp_connlimit_free(struct dp_connlimit *l)
{
    free(l->peers);
    l->peers = NULL;
    l->nr_peers = l->cap_peers = 0;
}

/* ---- peers ------------------------------------------------------------------- */

/* Linear: the table holds at most max_conns peers and is searched once per
 * accept and close. */
static struct dp_connlimit_peer *peer_find(const struct dp_connlimit *l, uint32_t ip)
{
    for (size_t i = 0; i < l->nr_peers; i++)
        if (l->peers[i].ip == ip)
            return &l->peers[i];
    return NULL;
}

/* The peer holding the most unauthenticated connections: the one a new
 * connection pushes out of when the global handshake limit is met. */
static const struct dp_connlimit_peer *peer_heaviest(const struct dp_connlimit *l)
{
    const struct dp_connlimit_peer *best = NULL;
    for (size_t i = 0; i < l->nr_peers; i++)
        if (l->peers[i].preauth && (!best || l->peers[i].preauth > best->preauth))
            best = &l->peers[i];
    return best;
}

/* ---- admission ----------------------------------------------------------------- */

/* The limits in the order a new connection meets them: its peer's share,
 * the handshake slots, all slots. */
enum dp_admit dp_connlimit_admit(const struct dp_connlimit *l, uint32_t ip, const char **why)
{
    const char *dummy;
    if (!why)
        why = &dummy;
    const struct dp_connlimit_peer *p = peer_find(l, ip);
    if (p && p->conns >= l->cfg.max_per_peer) {
        *why = "--max-per-peer";
        return p->preauth ? DP_ADMIT_EVICT_PEER : DP_ADMIT_REFUSE;
    }
    if (l->preauth >= l->cfg.max_preauth) {
        *why = "--max-preauth";
        const struct dp_connlimit_peer *h = peer_heaviest(l);
        /* the heaviest peer is the newcomer's own: push out one of its own */
        return h && h->ip == ip ? DP_ADMIT_EVICT_PEER : DP_ADMIT_EVICT_ANY;
    }
    if (l->conns >= l->cfg.max_conns) {
        *why = "--max-conns";
        return l->preauth ? DP_ADMIT_EVICT_ANY : DP_ADMIT_REFUSE;
    }
    *why = NULL;
    return DP_ADMIT_OK;
}

int dp_connlimit_add(struct dp_connlimit *l, uint32_t ip)
{
    struct dp_connlimit_peer *p = peer_find(l, ip);
    if (!p) {
        if (l->nr_peers == l->cap_peers) {
            size_t cap = l->cap_peers ? l->cap_peers * 2 : 16;
            struct dp_connlimit_peer *n = realloc(l->peers, cap * sizeof(*n));
            if (!n)
                return -1;
            l->peers = n;
            l->cap_peers = cap;
        }
        p = &l->peers[l->nr_peers++];
        *p = (struct dp_connlimit_peer){.ip = ip};
    }
    p->conns++;
    p->preauth++;
    l->conns++;
    l->preauth++;
    return 0;
}

void dp_connlimit_authed(struct dp_connlimit *l, uint32_t ip)
{
    struct dp_connlimit_peer *p = peer_find(l, ip);
    if (!p || !p->preauth || !l->preauth)
        return;
    p->preauth--;
    l->preauth--;
}

void dp_connlimit_remove(struct dp_connlimit *l, uint32_t ip, bool authed)
{
    struct dp_connlimit_peer *p = peer_find(l, ip);
    if (!p || !p->conns)
        return;
    p->conns--;
    l->conns--;
    if (!authed && p->preauth) {
        p->preauth--;
        l->preauth--;
    }
    if (!p->conns)
        *p = l->peers[--l->nr_peers]; /* order does not matter */
}

/* Least advanced first (an idle socket before a peer that sent its HELLO),
 * then the oldest: a key holder half way through its handshake is the last
 * to go. */
long dp_connlimit_pick(const struct dp_connlimit_cand *c, size_t n, bool only_ip, uint32_t ip)
{
    long best = -1;
    for (size_t i = 0; i < n; i++) {
        if (only_ip && c[i].ip != ip)
            continue;
        if (best < 0 || c[i].stage < c[best].stage ||
            (c[i].stage == c[best].stage && c[i].since_ns < c[best].since_ns))
            best = (long)i;
    }
    return best;
}

/* ---- memory and time --------------------------------------------------------------- */

int dp_connlimit_buffer(struct dp_connlimit *l, size_t old_cap, size_t new_cap)
{
    old_cap = old_cap > DP_LIMIT_INPUT_FREE ? old_cap - DP_LIMIT_INPUT_FREE : 0;
    new_cap = new_cap > DP_LIMIT_INPUT_FREE ? new_cap - DP_LIMIT_INPUT_FREE : 0;
    if (new_cap <= old_cap) {
        uint64_t d = old_cap - new_cap;
        l->buffered = l->buffered > d ? l->buffered - d : 0;
        return 0;
    }
    uint64_t d = new_cap - old_cap;
    if (l->buffered + l->out_buffered + d > l->cfg.max_buffered) {
        l->buffer_refusals++;
        return -1;
    }
    l->buffered += d;
    return 0;
}

bool dp_connlimit_idle(const struct dp_connlimit *l, uint64_t active_ns, uint64_t now)
{
    return l->cfg.idle_ns && now > active_ns && now - active_ns > l->cfg.idle_ns;
}

/* The handshake's own bound: a keyless peer holds its slot at most this long
 * (a clock read before since_ns counts as no time passed). */
bool dp_connlimit_handshake_expired(const struct dp_connlimit *l, uint64_t since_ns, uint64_t now)
{
    return now > since_ns && now - since_ns > l->cfg.handshake_ns;
}

/* Replies waiting for a slow reader are memory like partial requests. */
void dp_connlimit_output(struct dp_connlimit *l, uint64_t old_bytes, uint64_t new_bytes)
{
    l->out_buffered -= old_bytes < l->out_buffered ? old_bytes : l->out_buffered;
    l->out_buffered += new_bytes;
}

/* Back-pressure instead of refusal: a paused request is handled later,
 * when its connection's replies have been read, so no page is lost. */
bool dp_connlimit_may_reply(struct dp_connlimit *l, uint64_t queued)
{
    if (queued == 0 || l->buffered + l->out_buffered < l->cfg.max_buffered)
        return true;
    l->output_pauses++;
    return false;
}
