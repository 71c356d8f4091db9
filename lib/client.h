/* client: the destination's side of the page-server protocol (lib/proto.h).
 *
 * One struct dp_client is one authenticated TCP connection that reconnects by
 * itself. Two ways to use it:
 *
 *  - Asynchronous, from an event loop: submit GET/PUT requests with a callback
 *    and a cookie (many in flight, pipelined), watch dp_client_fd() for
 *    dp_client_events(), call dp_client_process() when it is ready or when
 *    dp_client_timeout_ms() expires. Callbacks run inside dp_client_process()
 *    (they may submit requests but must not call dp_client_close())
 *    (and inside the blocking helpers), in completion order, which need not be
 *    submission order.
 *  - Blocking helpers for the simple cases: task map, skeleton download, PUT
 *    with a durable acknowledgement, stats, access log. They drive the same
 *    loop, so callbacks of earlier async requests may run inside them.
 *
 * Reconnect: when the connection breaks, the client reconnects with
 * exponential backoff (backoff_min_ms doubling up to backoff_max_ms) and
 * resubmits every request still in flight (GET and PUT are idempotent). A
 * wrong key or a version mismatch is not retried on the first connection; on
 * a reconnect (where it may be forged) it is, for --auth-retry. Requests on
 * the wire with no byte from the server for --request-timeout drop the
 * connection (lib/netbound.h has these bounds). If give_up_ms > 0 and no
 * connection succeeds for that long, in-flight requests complete with
 * status -ETIMEDOUT and dp_client_process() returns -1.
 *
 * The fd changes across reconnects: re-read dp_client_fd() after every
 * dp_client_process() call (-1 while waiting for the next attempt). Only
 * watch it: the library does all reads and writes (with MSG_DONTWAIT; the
 * socket itself is in blocking mode so the blocking helpers can wait in recv).
 * Not thread safe: one thread owns a client.
 */
#ifndef DP_CLIENT_H
#define DP_CLIENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <netinet/in.h>

#include "key.h"
#include "proto.h"
#include "util.h"

struct dp_client;

struct dp_client_opts {
    struct sockaddr_in addr;
    const uint8_t *key;        /* pre-shared key, DP_KEY_MIN..DP_KEY_MAX bytes */
    size_t key_len;
    int connect_timeout_ms;    /* blocking connect in dp_client_connect; 0 = 5000 */
    int backoff_min_ms;        /* 0 = 50 */
    int backoff_max_ms;        /* 0 = 2000 */
    int give_up_ms;            /* 0 = retry forever */
    uint32_t max_inflight;     /* 0 = 256 */
    bool insecure_plaintext;   /* frames in clear (the server must run --insecure-plaintext too) */
    const uint8_t *expect_cpid; /* DP_CPID_BYTES: refuse a server of another checkpoint; NULL: pin the first */
    bool bulk;                 /* background reads only (DP_HELLO_FLAG_BULK): the server serves this
                                * connection after its others and queues little for it */
    uint32_t read_budget;      /* bytes one dp_client_process() receives at most (0: all there is); the
                                * rest stays in the socket, which stays ready */
};

/* Process-wide: every client connected afterwards runs in plaintext mode
 * (set by --insecure-plaintext of restore/query/sync, which lazyd and the
 * trace uploader inherit), as if opts->insecure_plaintext were set. */
void dp_client_set_insecure_plaintext(bool on);

/* Connects and authenticates (blocking, bounded by connect_timeout_ms). The
 * opts->key bytes are copied. */
int dp_client_connect(const struct dp_client_opts *opts, struct dp_client **out, struct dp_err *err);
/* Closes; in-flight requests complete with status -ECANCELED. */
void dp_client_close(struct dp_client *c);

int dp_client_fd(const struct dp_client *c);
short dp_client_events(const struct dp_client *c);   /* POLLIN / POLLOUT (poll(2) bits; same values as EPOLLIN/EPOLLOUT) */
int dp_client_timeout_ms(const struct dp_client *c); /* -1 none */
/* Non-blocking: sends, receives, completes callbacks, advances reconnects.
 * Returns 0, or -1 if the client gave up (err says why). */
int dp_client_process(struct dp_client *c, struct dp_err *err);
bool dp_client_connected(const struct dp_client *c);
uint32_t dp_client_inflight(const struct dp_client *c);
/* Limits announced by the server (valid once connected). */
const struct dp_hello_reply *dp_client_limits(const struct dp_client *c);
/* The checkpoint identity the server proved (DP_CPID_BYTES), NULL before. */
const uint8_t *dp_client_cpid(const struct dp_client *c);
/* The negotiated AEAD ("aes256gcm", "chacha20poly1305") or "plaintext". */
const char *dp_client_cipher(const struct dp_client *c);

/* GET completion. status 0: segs cover every requested page, in request
 * order; DATA segments point at count*4096 bytes valid only during the
 * callback. status < 0: -errno (e.g. -ETIMEDOUT, -ECANCELED), or
 * -DP_E_* + -1000 for a server error (errmsg says which). */
typedef void (*dp_get_cb)(void *cookie, int status, const struct dp_seg *segs, uint32_t nr_segs, const char *errmsg);
/* Ranges are copied. Up to DP_MAX_GET_RANGES ranges, DP_MAX_GET_PAGES pages.
 * Returns the request id (> 0), or 0 with err set (limits, too many in flight). */
uint64_t dp_client_submit_get(struct dp_client *c, const struct dp_get_range *ranges, uint32_t n,
                              dp_get_cb cb, void *cookie, struct dp_err *err);

/* PUT completion: status 0 once the server has made the pages durable. */
typedef void (*dp_put_cb)(void *cookie, int status, const char *errmsg);
/* The page data is copied (so a reconnect can resend it). */
uint64_t dp_client_submit_put(struct dp_client *c, const struct dp_put_range *ranges, uint32_t n,
                              dp_put_cb cb, void *cookie, struct dp_err *err);

#define DP_CLIENT_SERVER_ERROR(code) (-1000 - (int)(code))

/* ---- blocking helpers (timeout_ms bounds each; 0 = wait forever) ----- */
int dp_client_task_map(struct dp_client *c, struct dp_task_map *out, int timeout_ms, struct dp_err *err);
/* Copies pages into buf (count*4096 bytes per range, in order; zero pages
 * are zero-filled). kinds (may be NULL) gets one DP_SEG_* per page. */
int dp_client_get_pages(struct dp_client *c, const struct dp_get_range *ranges, uint32_t n,
                        uint8_t *buf, uint8_t *kinds, int timeout_ms, struct dp_err *err);
int dp_client_put_pages(struct dp_client *c, int32_t pid, uint64_t addr, uint32_t count,
                        const uint8_t *data, int timeout_ms, struct dp_err *err);

struct dp_skel_result {
    uint32_t files;
    uint64_t bytes_received;   /* data bytes written */
    uint64_t bytes_apparent;   /* sum of file sizes (pages files are sparse) */
};
/* Opens dir-relative rel for writing (directories created, no symlink
 * followed: names come from the network); -1 with errno. */
int dp_skel_open_rel(int dirfd, const char *rel, uint32_t mode);
/* Downloads the skeleton into dir (created if missing; existing files of the
 * same names are replaced). Files are written sparse: lazy page data is
 * never sent and reads back as zeros. */
int dp_client_get_skeleton(struct dp_client *c, const char *dir, struct dp_skel_result *res,
                           int timeout_ms, struct dp_err *err);
/* JSON text (malloc'd, NUL-terminated). */
int dp_client_stats(struct dp_client *c, char **json, int timeout_ms, struct dp_err *err);
int dp_client_access_log(struct dp_client *c, char **json, int timeout_ms, struct dp_err *err);

/* Memory mode: sends a verdict (DP_LIVE_VERDICT_*, lib/livesm.h); *json is
 * the server's reply ({"mode": "images"} from a server of images). */
int dp_client_migration(struct dp_client *c, uint32_t verdict, char **json, int timeout_ms, struct dp_err *err);

/* Protocol version 2 (lib/proto_hotset.h). A server that negotiated version
 * 1 is refused here, before anything is sent. */
/* Uploads a fault trace (a hot-set file with source trace); the server
 * checks it against its checkpoint and acknowledges once it is on disk. */
int dp_client_put_trace(struct dp_client *c, const uint8_t *file, size_t len, uint64_t *pages, uint32_t *runs,
                        int timeout_ms, struct dp_err *err);
/* The checkpoint's hot set of kind which (DP_HOTSET_*): the file bytes,
 * malloc'd. Decode and check them (lib/hotset.h) before use. */
int dp_client_get_hotset(struct dp_client *c, uint32_t which, uint8_t **file, size_t *len, int timeout_ms,
                         struct dp_err *err);

/* ---- write lease (protocol version 4; lib/lease.h, docs/pageserver.md) ---- */
struct dp_lease_reply;
/* Takes the checkpoint's write lease for holder (a new epoch; take_over
 * fences a current holder). From then on every reconnect first resumes that
 * epoch; if the server refuses (taken over, released, unknown), or answers
 * any request FENCED, the client is fenced: failed for good, every request
 * completes with DP_CLIENT_SERVER_ERROR(DP_E_FENCED). */
int dp_client_lease(struct dp_client *c, const char *holder, bool take_over, struct dp_lease_reply *out,
                    int timeout_ms, struct dp_err *err);
/* Gives the epoch back (the restored tree has ended); a no-op without one. */
int dp_client_lease_release(struct dp_client *c, int timeout_ms, struct dp_err *err);
/* NULL, or why this client was fenced. */
const char *dp_client_fenced(const struct dp_client *c);

#endif
