/* connlimit: the page server's connection and memory limits (issue 12 item
 * 5), as pure accounting the server consults; no sockets, no clock.
 *
 *  - every connection counts against max_conns and against its peer's
 *    (source IPv4 address) max_per_peer;
 *  - connections still in the handshake (no key proven) may hold at most
 *    max_preauth of the max_conns slots, so max_conns - max_preauth slots are
 *    kept for authenticated peers. A new connection that would pass a limit
 *    pushes out an unauthenticated one (the least advanced, then the oldest:
 *    an idle socket that never sent its HELLO goes before a peer half way
 *    through the handshake) instead of being refused, so a flood of keyless
 *    sockets cannot lock a key holder out; only when every slot of the limit
 *    is held by authenticated peers is the new connection refused;
 *  - bytes of partly received requests and of replies queued for slow
 *    readers, over all connections, share max_buffered: an input buffer
 *    grows (as its bytes arrive, never on an announcement alone) only within
 *    it, and once it is full a connection with replies still queued gets no
 *    new one until its queue is empty (back-pressure; one with nothing queued
 *    is still served, so slow readers cannot stall the others). The output
 *    held is then at most max_buffered plus one reply per connection;
 *  - a connection, authenticated or not, that shows no traffic for idle_ns
 *    is closed (idle_ns);
 *  - a connection that has not authenticated within handshake_ns of
 *    connecting (or does not read its fatal ERROR within it) is closed. */
#ifndef DP_CONNLIMIT_H
#define DP_CONNLIMIT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "util.h"

#define DP_LIMIT_MAX_CONNS_DEFAULT    1024u
#define DP_LIMIT_MAX_PREAUTH_DEFAULT  64u
#define DP_LIMIT_MAX_PER_PEER_DEFAULT 256u
#define DP_LIMIT_MAX_BUFFERED_DEFAULT (256ull << 20)
#define DP_LIMIT_IDLE_S_DEFAULT       300u
#define DP_LIMIT_HANDSHAKE_MS_DEFAULT 10000u

struct dp_connlimit_cfg {
    uint32_t max_conns;     /* every connection */
    uint32_t max_preauth;   /* in the handshake, over all peers (< max_conns) */
    uint32_t max_per_peer;  /* from one IPv4 address, any state */
    uint64_t max_buffered;  /* bytes of input buffers over all connections */
    uint64_t idle_ns;       /* no traffic this long: closed (0: never) */
    uint64_t handshake_ns;  /* not authenticated (or a fatal ERROR not read) this long
                               after connecting: closed (never 0) */
};

struct dp_connlimit_peer {
    uint32_t ip;            /* network order, as in sockaddr_in */
    uint32_t conns, preauth;
};

struct dp_connlimit {
    struct dp_connlimit_cfg cfg;
    uint32_t conns, preauth;
    uint64_t buffered;      /* input beyond each connection's free DP_LIMIT_INPUT_FREE */
    uint64_t out_buffered;  /* replies queued, not yet handed to the kernel */
    struct dp_connlimit_peer *peers;
    size_t nr_peers, cap_peers;
    /* counters for stats */
    uint64_t refused, evicted, idle_closed, buffer_refusals, output_pauses;
};

/* The default for every field left 0 but idle_ns (0 there means never;
 * the serve command's default is DP_LIMIT_IDLE_S_DEFAULT). */
void dp_connlimit_cfg_defaults(struct dp_connlimit_cfg *cfg);
/* Checks the limits against each other. 0, or -1 with err saying which. */
int dp_connlimit_cfg_check(const struct dp_connlimit_cfg *cfg, struct dp_err *err);

/* One command-line flag (name without the dashes: max-conns, max-preauth,
 * max-per-peer, max-buffered, idle-timeout, handshake-timeout) into cfg. 0, or -1 with err. */
int dp_connlimit_parse_flag(struct dp_connlimit_cfg *cfg, const char *name, const char *val, struct dp_err *err);
/* The flags' --help lines (one per flag, each with its default). */
extern const char dp_connlimit_usage[];

void dp_connlimit_init(struct dp_connlimit *l, const struct dp_connlimit_cfg *cfg);
void dp_connlimit_free(struct dp_connlimit *l);

enum dp_admit {
    DP_ADMIT_OK,            /* take it */
    DP_ADMIT_EVICT_PEER,    /* first close one unauthenticated connection of the same peer */
    DP_ADMIT_EVICT_ANY,     /* first close one unauthenticated connection of any peer */
    DP_ADMIT_REFUSE,        /* every slot of the limit it meets is authenticated: refuse it */
};
/* What to do with a new connection from ip. why (may be NULL) names the
 * limit met, for the log. */
enum dp_admit dp_connlimit_admit(const struct dp_connlimit *l, uint32_t ip, const char **why);

/* A connection's life: accepted (counted as unauthenticated), authenticated,
 * closed. Returns -1 only on ENOMEM (the peer table), then nothing changed. */
int dp_connlimit_add(struct dp_connlimit *l, uint32_t ip);
void dp_connlimit_authed(struct dp_connlimit *l, uint32_t ip);
void dp_connlimit_remove(struct dp_connlimit *l, uint32_t ip, bool authed);

/* One candidate for eviction. stage: how far its handshake got (0: nothing
 * received yet, 1: HELLO answered, waiting for AUTH). */
struct dp_connlimit_cand {
    uint32_t ip;
    uint32_t stage;
    uint64_t since_ns;
};
/* The candidate to push out: only those of ip if only_ip, the least advanced,
 * then the oldest. -1 if there is none. */
long dp_connlimit_pick(const struct dp_connlimit_cand *c, size_t n, bool only_ip, uint32_t ip);

/* An input buffer grows from old_cap to new_cap bytes (or shrinks: new_cap <
 * old_cap always succeeds). Returns 0 and accounts it, or -1 when it would
 * pass max_buffered (nothing accounted). The first DP_LIMIT_INPUT_FREE bytes
 * of every buffer are not counted (max_conns bounds them): a full cap must
 * not keep a new peer from sending its HELLO. */
#define DP_LIMIT_INPUT_FREE (64u << 10)
int dp_connlimit_buffer(struct dp_connlimit *l, size_t old_cap, size_t new_cap);

/* A connection's queued output went from old_bytes to new_bytes. */
void dp_connlimit_output(struct dp_connlimit *l, uint64_t old_bytes, uint64_t new_bytes);
/* Whether a connection with queued bytes of output may have a request
 * handled now: always with nothing queued, else only while input and output
 * together are under max_buffered. Counts a refusal in output_pauses. */
bool dp_connlimit_may_reply(struct dp_connlimit *l, uint64_t queued);

/* Whether a connection still in its handshake (or closing after a fatal
 * ERROR) since since_ns has run out of handshake_ns at now. */
bool dp_connlimit_handshake_expired(const struct dp_connlimit *l, uint64_t since_ns, uint64_t now);

/* Whether a connection last active at active_ns is idle at now. */
bool dp_connlimit_idle(const struct dp_connlimit *l, uint64_t active_ns, uint64_t now);

#endif
