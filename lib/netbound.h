/* netbound: how long the destination's side of the link waits (issue 12
 * item 4), set once per process from the restore/lazy-pages flags and read
 * by every client (lib/client.c), so the daemon, the skeleton download and
 * the trace uploader bound their waits the same way.
 *
 *  - TCP_USER_TIMEOUT and keepalive on every client socket: unacknowledged
 *    data, or a silent peer, ends the connection after user_timeout_ms
 *    instead of ~15 minutes of retransmission;
 *  - a request deadline: a connected client with requests on the wire and no
 *    byte from the server for request_timeout_ms drops the connection and
 *    reconnects (resubmitting; GET and PUT are idempotent);
 *  - an AUTH refusal on a reconnect (unauthenticated: it may be forged) is
 *    retried for auth_retry_ms, then believed;
 *  - caps on what the peer may make us hold: one multi-message reply
 *    (max_reply_bytes) and the skeleton (max_skeleton_bytes written,
 *    max_skeleton_files files). */
#ifndef DP_NETBOUND_H
#define DP_NETBOUND_H

#include <stdbool.h>
#include <stdint.h>

#include "util.h"

struct dp_netbound {
    int user_timeout_ms;        /* TCP_USER_TIMEOUT and keepalive; 0: off */
    int request_timeout_ms;     /* no reply byte this long while requests wait: reconnect; 0: off */
    int auth_retry_ms;          /* an AUTH refusal on reconnects is believed after this long */
    uint64_t max_reply_bytes;   /* one multi-message reply (stats, access log, hot set) */
    uint64_t max_skeleton_bytes;/* skeleton data written (sparse files' apparent size: 64x this) */
    uint32_t max_skeleton_files;
};

#define DP_NB_USER_TIMEOUT_MS    10000
#define DP_NB_REQUEST_TIMEOUT_MS 15000
#define DP_NB_AUTH_RETRY_MS      30000
#define DP_NB_MAX_REPLY          (64ull << 20)
#define DP_NB_MAX_SKELETON       (4ull << 30)
#define DP_NB_MAX_SKELETON_FILES 100000u

/* The process-wide bounds (defaults until set). */
const struct dp_netbound *dp_netbound_get(void);
void dp_netbound_set(const struct dp_netbound *b);
/* One flag (name without dashes: tcp-user-timeout, request-timeout,
 * auth-retry, max-reply, max-skeleton) into b. 0, or -1 with err. */
int dp_netbound_parse_flag(struct dp_netbound *b, const char *name, const char *val, struct dp_err *err);
extern const char dp_netbound_usage[];

/* Keepalive and TCP_USER_TIMEOUT on a TCP socket (ms 0: left alone). 0 or -1. */
int dp_netbound_socket(int fd, int ms);
/* Whether a wait that began at since_ns has passed ms at now (ms 0: never). */
bool dp_netbound_expired(uint64_t since_ns, uint64_t now, int ms);

#endif
