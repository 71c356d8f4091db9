/* pagesrc: where the lazy-pages daemon gets page data from. An interface
 * with completion callbacks so that many fetches can be in flight at once:
 * the daemon submits, the source completes later from its own fd (which the
 * daemon polls) and calls f->done() on the daemon's thread.
 *
 * Reads (submit) and writes (put: the budget's write-back) go through the
 * same table of operations, as CRIU's page-xfer does; a source that cannot
 * hold modified pages leaves put NULL and dp_pagesrc_put refuses.
 *
 * Implementations:
 *   local   CRIU images read directly (lib/image.h): the local-floor baseline
 *   raw     a flat file holding the data of one address range, for every
 *           task (test harnesses without CRIU)
 *   remote  the page server, through lib/client.h (pagesrc_remote.c)
 */
#ifndef DP_PAGESRC_H
#define DP_PAGESRC_H

#include <stdint.h>

#include "lazymap.h"
#include "util.h"

struct dp_fetch {
    int32_t pid;           /* task as in the checkpoint */
    uint64_t img;          /* image address of the first page */
    uint32_t npages;
    uint8_t *buf;          /* npages * 4096 bytes, owned by the submitter */
    int status;            /* set by the source: 0, or -errno */
    uint64_t wire_bytes;   /* set by the source: bytes received for it */
    void (*done)(struct dp_fetch *f);
    void *opaque;          /* submitter's */
    int bulk;              /* submitter's: background traffic (the warm-up); a source with a bulk
                            * lane sends it there, behind every other fetch */
    struct dp_fetch *src_next; /* source's own queue link */
};

/* A write-back's completion: status 0 once the source holds the pages
 * durably, else -errno (errmsg may say more); on the daemon's thread. */
typedef void (*dp_pagesrc_put_cb)(void *cookie, int status, const char *errmsg);

struct dp_pagesrc;
struct dp_client;
struct dp_pagesrc_ops {
    const char *name;
    /* Adds task pid's lazy regions to map: pages with data REMOTE, pages
     * that never held data NONE. -1 with err when the task is unknown. */
    int (*task_map)(struct dp_pagesrc *s, int32_t pid, struct dp_lazymap *map, struct dp_err *err);
    /* Queues a fetch; 0, or -1 when it cannot even be queued. */
    int (*submit)(struct dp_pagesrc *s, struct dp_fetch *f);
    /* Queues a write of n pages of task pid: image addresses img[i], bytes
     * at data[i] (copied before it returns: a reconnect may resend them);
     * cb runs once. 0, or -1 with err when it cannot be queued. NULL: the
     * source takes no writes. */
    int (*put)(struct dp_pagesrc *s, int32_t pid, const uint64_t *img, const uint8_t *const *data, uint32_t n,
               dp_pagesrc_put_cb cb, void *cookie, struct dp_err *err);
    /* Pages one put may carry; 0 while not known (NULL: as for 0). */
    uint32_t (*put_max)(struct dp_pagesrc *s);
    /* Descriptor to poll (may change between calls, -1 = none right now),
     * the epoll events wanted on it (NULL: EPOLLIN) and how soon process()
     * must run anyway (NULL or -1: no deadline). The daemon calls process()
     * when the fd is ready, at the deadline, and at least every 10 ms. */
    int (*fd)(struct dp_pagesrc *s);
    short (*events)(struct dp_pagesrc *s);
    int (*timeout_ms)(struct dp_pagesrc *s);
    void (*process)(struct dp_pagesrc *s);
    /* The bulk lane (optional, all three or none): a second descriptor that
     * carries the fetches marked bulk, watched and processed like fd above
     * but after every other descriptor of the same turn. bulk_fd is -1
     * while there is none (not opened yet, or refused: bulk fetches then
     * share the first lane). */
    int (*bulk_fd)(struct dp_pagesrc *s);
    short (*bulk_events)(struct dp_pagesrc *s);
    void (*bulk_process)(struct dp_pagesrc *s);
    /* 1 while the source can serve (for stats and timeout messages). */
    int (*healthy)(struct dp_pagesrc *s);
    /* NULL while the source may be used; else why this restore was fenced
     * (its write lease was taken over, lib/lease.h). May be NULL (local). */
    const char *(*fenced)(struct dp_pagesrc *s);
    void (*close)(struct dp_pagesrc *s);
};

struct dp_pagesrc {
    const struct dp_pagesrc_ops *ops;
    char desc[256];        /* "local images /x", "page server 10.0.0.1:7000" */
};

/* 1 when s takes writes (a budget needs them). */
int dp_pagesrc_can_put(const struct dp_pagesrc *s);
/* s->ops->put, or a refusal in err naming the source when it takes none. */
int dp_pagesrc_put(struct dp_pagesrc *s, int32_t pid, const uint64_t *img, const uint8_t *const *data, uint32_t n,
                   dp_pagesrc_put_cb cb, void *cookie, struct dp_err *err);
/* s->ops->put_max, 0 when unknown or when s takes no writes. */
uint32_t dp_pagesrc_put_max(struct dp_pagesrc *s);

/* local: opens the checkpoint in images_dir. */
struct dp_pagesrc *dp_pagesrc_local_open(const char *images_dir, struct dp_err *err);
/* remote: the page server at addr with the key in key_file; connects and
 * authenticates (bounded), then reads the task map. */
struct dp_pagesrc *dp_pagesrc_remote_open(const char *hostport, const char *key_file, struct dp_err *err);
/* The remote source's client, for what is asked of the page server before
 * the restore (skeleton, hot set, lease); the daemon uses the operations. */
struct dp_client *dp_pagesrc_remote_client(struct dp_pagesrc *s);
/* raw: "FILE@ADDR": the file's bytes are the memory from ADDR on (hex or
 * decimal, page aligned), identical for every task. */
struct dp_pagesrc *dp_pagesrc_raw_open(const char *spec, struct dp_err *err);

#endif
