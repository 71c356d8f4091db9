/* redis_conn: one connection to one Redis node, TCP or TLS (OpenSSL), with
 * AUTH, pipelined commands (hiredis's redisFormatCommandArgv) and replies
 * parsed by hiredis's redisReader under our own bounds (reply object
 * functions that refuse huge arrays and strings, a cap on unparsed input).
 * Blocking with a per-call deadline, or driven by an event loop (below); the cluster layer (redis_cluster.h)
 * pipelines a batch by appending every command, flushing once, then reading
 * the replies in order. */
#ifndef DP_REDIS_CONN_H
#define DP_REDIS_CONN_H

#include <stddef.h>
#include <stdint.h>

#include <hiredis/hiredis.h>

#include "util.h"

#define DP_REDIS_MAX_ARRAY 65536            /* elements in one reply array */
#define DP_REDIS_MAX_BULK (64u << 20)       /* bytes in one bulk string */
#define DP_REDIS_MAX_PENDING (256u << 20)   /* unparsed input held at once */

/* How to reach the store: TLS when ca_file is set; AUTH when pass is set. */
struct dp_redis_opts {
    char ca_file[512];     /* CA that signed the nodes' certificates: TLS on */
    char cert_file[512];   /* client certificate (mutual TLS), optional */
    char key_file[512];
    char user[64];         /* ACL user; empty: AUTH with the password only */
    char pass[256];        /* empty: no AUTH */
    int timeout_ms;        /* connect and per-call bound */
};

struct dp_rconn;
struct ssl_ctx_st;

/* The TLS context for opts (NULL without TLS, or on error with err set). */
struct ssl_ctx_st *dp_redis_tls_ctx(const struct dp_redis_opts *o, struct dp_err *err);
void dp_redis_tls_ctx_free(struct ssl_ctx_st *ctx);

/* Connects to host:port (IPv4 literal), does TLS (verifying the certificate
 * against the address) and AUTH. NULL with err on failure. */
struct dp_rconn *dp_rconn_open(const char *host, uint16_t port, const struct dp_redis_opts *o,
                               struct ssl_ctx_st *ctx, struct dp_err *err);
void dp_rconn_close(struct dp_rconn *c);
const char *dp_rconn_name(const struct dp_rconn *c); /* "10.0.0.1:7001" */

/* Queues one command (binary-safe arguments); -1 if out of memory. */
int dp_rconn_append(struct dp_rconn *c, int argc, const char **argv, const size_t *lens);
/* Sends everything queued; -1 with err (the connection is then unusable). */
int dp_rconn_flush(struct dp_rconn *c, uint64_t deadline_ns, struct dp_err *err);
/* The next reply (caller frees with freeReplyObject); -1 with err: protocol
 * error, oversized reply, timeout or closed connection (unusable then). */
int dp_rconn_read(struct dp_rconn *c, redisReply **out, uint64_t deadline_ns, struct dp_err *err);
/* append + flush + read of one command. */
int dp_rconn_call(struct dp_rconn *c, int argc, const char **argv, const size_t *lens, redisReply **out,
                  struct dp_err *err);

/* ---- asynchronous use: the caller's event loop drives the connection ----
 * dp_rconn_start begins a nonblocking connect; TLS (SSL_ERROR_WANT_READ/
 * WRITE are waits, never errors) and AUTH (queued first; its reply checked
 * by dp_rconn_take) follow as dp_rconn_pump runs. Commands are queued with
 * dp_rconn_append at any time; nothing here ever waits. */
struct dp_rconn *dp_rconn_start(const char *host, uint16_t port, const struct dp_redis_opts *o,
                                struct ssl_ctx_st *ctx, struct dp_err *err);
int dp_rconn_fd(const struct dp_rconn *c);
/* POLLIN / POLLOUT the connection waits for right now. */
short dp_rconn_events(const struct dp_rconn *c);
/* Advances the connect/handshake, sends what is queued as far as the socket
 * takes it, reads what arrived; 0, or -1 with err (unusable then). */
int dp_rconn_pump(struct dp_rconn *c, struct dp_err *err);
/* The next reply already received: 1 (*out, caller frees), 0 none yet,
 * -1 with err (protocol error or AUTH refused: unusable). */
int dp_rconn_take(struct dp_rconn *c, redisReply **out, struct dp_err *err);
/* Bytes queued and not yet sent. */
size_t dp_rconn_unsent(const struct dp_rconn *c);

/* A reader with our bounds, for the connection and the fuzz target. */
redisReader *dp_redis_reader_new(void);

#endif
