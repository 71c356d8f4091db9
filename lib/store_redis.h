/* store_redis: a checkpoint's memory in a Redis Cluster (issue 14).
 *
 * Keys (ID = the first 32 hex digits of the checkpoint identity, lib/cpid.h;
 * G = the extent's group, 0..255, a hash of pid and extent index so that
 * consecutive extents land on different slots and masters):
 *   dp:{ID:G}:p:PID:ADDR          one extent: 16 pages (64 KiB) of lazy memory
 *                                  from image address ADDR (hex, 64 KiB aligned),
 *                                  written once by 'checkpoint --store'
 *   dp:{ID:G}:w:WRITER:PID:ADDR   one page written back by restore WRITER
 *   dp:{ID:G}:f:WRITER            WRITER's fence in group G: its lease epoch
 *   dp:{ID}:skel:N                the skeleton (every image byte but the lazy
 *                                  pages), in chunks of up to 8 MiB
 *   dp:{ID}:hotset                'checkpoint --classify''s hot set file, if any
 *   dp:{ID}:meta                  JSON: version, extents, pages, skeleton chunks;
 *                                  written last: a checkpoint without it is
 *                                  incomplete and refused
 *   dp:{ID}:lease:WRITER          "EPOCH HOLDER" (HOLDER empty when released)
 *
 * The fence rule: a restore takes WRITER's lease (the epoch goes up by one),
 * raises dp:{ID:G}:f:WRITER to its epoch in every group (never lowers it)
 * and only then reads; every write-back is a Lua script in the page's group
 * that writes only if the group's fence equals the writer's epoch, so once a
 * newer restore has raised a group, the older one cannot write there again.
 * Distinct WRITERs (default: a random one per restore) never share pages:
 * fan-out destinations are fenced apart by construction. */
#ifndef DP_STORE_REDIS_H
#define DP_STORE_REDIS_H

#include <stddef.h>
#include <stdint.h>

#include "redis_cluster.h"
#include "util.h"

#define DP_STORE_EXT_PAGES 16u
#define DP_STORE_EXT_BYTES (DP_STORE_EXT_PAGES * 4096u)
#define DP_STORE_GROUPS 256u
#define DP_STORE_ID_LEN 32u
#define DP_STORE_WRITER_MAX 32u
#define DP_STORE_KEY_MAX 160u
/* The last lease epoch (10^14 - 1): exact as a Lua number and printed by
 * Redis's Lua without an exponent; a grant beyond it is refused. */
#define DP_STORE_EPOCH_MAX 99999999999999ull

/* ---- pure: names ---- */

/* Group of the extent at image address ext (64 KiB aligned) of task pid. */
unsigned dp_store_group(int32_t pid, uint64_t ext);
/* The keys above; -1 when an argument is invalid (id not 32 hex digits,
 * writer not 1-32 of [A-Za-z0-9_.-], address not aligned). */
int dp_store_key_extent(char *buf, size_t len, const char *id, int32_t pid, uint64_t ext);
int dp_store_key_page(char *buf, size_t len, const char *id, const char *writer, int32_t pid, uint64_t page);
int dp_store_key_fence(char *buf, size_t len, const char *id, unsigned group, const char *writer);
int dp_store_key_meta(char *buf, size_t len, const char *id, const char *what);
int dp_store_writer_ok(const char *writer);

/* ---- the store ---- */

struct dp_store {
    struct dp_rcluster *cl;
    char id[DP_STORE_ID_LEN + 1];
    char url[256];
    int timeout_ms;       /* per batch, failovers included */
    int wait_ms;          /* WAIT timeout */
    int min_replicas;     /* WAIT for at least this many (default 1) */
};

/* The command-line settings of a store (checkpoint and restore share them). */
struct dp_store_cli {
    const char *url;        /* --store */
    const char *ca;         /* --store-ca FILE: TLS, nodes verified against this CA */
    const char *cert, *key; /* --store-cert/--store-key FILE: client certificate (mutual TLS) */
    const char *pass_file;  /* --store-pass-file FILE: AUTH password (first line) */
    const char *user;       /* --store-user NAME: ACL user for AUTH */
};
#define DP_STORE_CLI_HELP \
    "  --store-ca FILE         TLS to the store's nodes, verified against this CA (rediss:// needs it)\n" \
    "  --store-cert FILE       client certificate for mutual TLS (--store-key FILE: its key)\n" \
    "  --store-pass-file FILE  AUTH with the password on the first line of FILE (--store-user NAME:\n" \
    "                          an ACL user); 'lab cluster up' writes both files into its directory\n"
/* Reads the password file and opens the store. */
struct dp_store *dp_store_open_cli(const struct dp_store_cli *c, struct dp_err *err);

/* Opens the cluster of url; the ID from the URL's path if any. */
struct dp_store *dp_store_open(const char *url, const struct dp_redis_opts *o, struct dp_err *err);
void dp_store_close(struct dp_store *st);

struct dp_store_put_stats {
    uint64_t extents, pages, bytes, skel_bytes, hotset_bytes;
    uint32_t skel_files, skel_chunks;
    int masters;
};
/* checkpoint --store: the lazy pages of the checkpoint in images_dir, then
 * its skeleton, then meta; WAITs for min_replicas on every master used.
 * Sets st->id. */
int dp_store_put_checkpoint(struct dp_store *st, const char *images_dir, struct dp_store_put_stats *stats,
                            struct dp_err *err);

/* dp:{ID}:WHAT ("hotset": the classification; "trace": the newest fault
 * trace a restore recorded, as its PUT_TRACE payload): SET acknowledged by
 * WAIT; GET into *buf (malloc'd): 0, 1 when there is none (err says so), -1. */
int dp_store_put_blob(struct dp_store *st, const char *what, const uint8_t *data, size_t len, struct dp_err *err);
int dp_store_get_blob(struct dp_store *st, const char *what, uint8_t **buf, size_t *len, struct dp_err *err);
struct dp_checkpoint;
/* restore --store: the stored classification and newest trace into the
 * skeleton's directory cp->dir, where lib/pageserver_hotset.h finds them as
 * the page server does (the trace checked against the checkpoint). */
int dp_store_pull_hotsets(struct dp_store *st, const struct dp_checkpoint *cp, struct dp_err *err);

/* restore --store: the skeleton into dir (created); files and bytes out. */
int dp_store_get_skeleton(struct dp_store *st, const char *dir, uint32_t *files, uint64_t *bytes,
                          struct dp_err *err);

/* The lease of writer: epoch out; refuses a held lease without take_over
 * (err names the holder); then raises writer's fence in every group. */
int dp_store_lease(struct dp_store *st, const char *writer, const char *holder, int take_over, uint64_t *epoch,
                   struct dp_err *err);
/* Releases the lease if still ours (best effort at the end of a restore). */
void dp_store_lease_release(struct dp_store *st, const char *writer, uint64_t epoch);

/* The writers whose fence is raised on this checkpoint (group 0's fence
 * keys: a restore raises its writer's fence in every group before its first
 * read): their count, or -1 with err; up to max names and fence epochs out
 * (names may be NULL). For tests and benchmarks (one KEYS on one node). */
int dp_store_writers(struct dp_store *st, char (*names)[DP_STORE_WRITER_MAX + 1], uint64_t *epochs, int max,
                     struct dp_err *err);

/* One page to write back. */
struct dp_store_page {
    int32_t pid;
    uint64_t img;         /* image address of the page */
    const uint8_t *data;  /* 4096 bytes */
};
/* Writes the pages under writer's fence, then WAITs until min_replicas
 * acknowledged them on every master written (sending them again after a
 * lost connection or failover, until st->timeout_ms). 0: every page is on a
 * master and min_replicas replicas; -1 with err; *fenced set when a newer
 * restore holds the fence (never retried). */
int dp_store_put_pages(struct dp_store *st, const char *writer, uint64_t epoch, const struct dp_store_page *pages,
                       size_t n, int *fenced, struct dp_err *err);

/* The commands of a write-back (fenced scripts, one per group and up to 16
 * pages), for the store source's asynchronous write-back; the pages' data
 * must outlive the plan. */
struct dp_store_putplan {
    struct dp_rcmd *cmds;
    size_t n;
    char (*pkeys)[DP_STORE_KEY_MAX];
    char (*fkeys)[DP_STORE_KEY_MAX];
    char (*nks)[8];
    char ep[24];
};
int dp_store_put_plan(struct dp_store *st, const char *writer, uint64_t epoch, const struct dp_store_page *pages,
                      size_t n, struct dp_store_putplan *p, struct dp_err *err);
void dp_store_put_plan_free(struct dp_store_putplan *p);
/* No reply of cmds[0..n) is a Redis error; else -1 with err saying which,
 * *fenced set (if fenced) when the error is the fence's. */
int dp_store_replies_ok(struct dp_rcmd *cmds, size_t n, int *fenced, struct dp_err *err);

/* Fetch plans for the page source: one GETRANGE of an extent or one GET of
 * a written-back page. Pure. */
struct dp_store_read {
    char key[DP_STORE_KEY_MAX];
    size_t keylen;
    uint64_t off;        /* GETRANGE start (bytes into the extent); page: 0 */
    uint32_t len;        /* bytes expected */
    int whole;           /* 1: GET of a written page */
    uint32_t buf_off;    /* where the bytes go in the fetch's buffer */
};

#endif
