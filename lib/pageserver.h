/* pageserver: serves a CRIU checkpoint's lazy memory over the protocol in
 * proto.h. One thread, one epoll loop: many clients, non-blocking sockets,
 * per-connection buffering with backpressure, page data sent from the image
 * (or write-back log) file straight to the socket with sendfile for runs of
 * at least sendfile_min bytes. Write-backs go to the overlay (overlay.h) and
 * are acknowledged after an fdatasync, grouped per loop iteration. */
#ifndef DP_PAGESERVER_H
#define DP_PAGESERVER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>

#include "proto.h"
#include "util.h"

struct dp_checkpoint;
/* Memory mode (src/serve_live.c): the lazy pages come from the frozen source
 * tree and the destination's verdicts drive lib/livesm.h. NULL: images mode. */
struct dp_live_hooks {
    int (*attach)(void *ctx, struct dp_checkpoint *cp, struct dp_err *err); /* gives tasks their live_fd */
    void (*authenticated)(void *ctx);                    /* a destination connected */
    /* A MIGRATION verdict: 0 with a JSON reply in out, or -1 with err (refused). */
    int (*verdict)(void *ctx, uint32_t verdict, char *out, size_t len, struct dp_err *err);
    int (*tick)(void *ctx);                              /* every <= 200 ms; 1: stop serving */
    void *ctx;
};

struct dp_server_opts {
    const char *images_dir;
    struct sockaddr_in listen_addr;
    uint8_t key[DP_KEY_MAX];
    size_t key_len;
    uint64_t emulate_rtt_us;     /* 0: reply as soon as possible */
    const char *access_log_path; /* written at shutdown if set */
    uint64_t sendfile_min;       /* bytes; smaller DATA runs are copied with pread (plaintext mode only) */
    bool insecure_plaintext;     /* frames after the handshake in clear (warned about loudly) */
    const struct sockaddr_in *metrics_addr; /* --metrics: Prometheus endpoint (lib/metrics_http.h); NULL = off */
    const struct dp_live_hooks *live; /* memory mode, or NULL */
};

/* Runs until SIGTERM or SIGINT. Returns 0 on a clean shutdown, -1 with err. */
int dp_server_run(const struct dp_server_opts *opts, struct dp_err *err);

#endif
