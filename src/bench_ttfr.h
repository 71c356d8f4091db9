/* bench_ttfr: what the systems of `distriproc bench ttfr` share.
 *
 * A system is one entry of a table of operations (struct ttfr_system): it
 * migrates the loaded source Redis once, src -> dst over the lab link, and
 * fills one sample. Most leave the source running (--leave-running dumps);
 * one that cannot (DistriProc memory mode commits: the source is killed once
 * the destination runs) is marked so. Every system reports the same phases, contiguous and in
 * this order, so that a missed target can be explained by where the time went
 * (a phase a system does not have is 0):
 *   freeze     from the start of the dump until the source's state is captured
 *              (images written, or ready to be served lazily)
 *   skeleton   getting the non-memory state to dst (page server start and
 *              skeleton pull, or an image copy)
 *   transfer   memory moved before the restore starts (CRIU full only)
 *   restore    criu restore on dst (with a lazy-pages daemon's start)
 *   reply      from the restored tree running to the first correct reply
 * They add up to from_freeze; from_restore is from_freeze - freeze.
 *
 * The driver, the statistics and the JSON are in bench_ttfr.c with the
 * systems that drive our own commands; CRIU's own remote lazy migration is in
 * bench_ttfr_criu_lazy.c. */
#ifndef DP_BENCH_TTFR_H
#define DP_BENCH_TTFR_H

#include <limits.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define TTFR_SRC_ADDR "10.250.0.1"
#define TTFR_DST_ADDR "10.250.0.2"
#define TTFR_REDIS_PORT 6379

/* What a system needs of the run. Ports: port is the page server's, port + 1
 * the image copier's, port + 2 CRIU's own page server. */
struct ttfr_ctx {
    const char *self;     /* this distriproc binary */
    const char *prefetch; /* DistriProc's prefetch policy */
    int port;
    char criu[PATH_MAX];
    char check[192];      /* the probe after "redis-cli -h H -p P" (GET + checksum) */
};

struct ttfr_phases {
    double freeze_s, skeleton_s, transfer_s, restore_s, reply_s;
};

/* DistriProc's finer steps (what migrate reports), for the per-run JSON. */
struct ttfr_detail {
    int has;
    double serve_s, skeleton_pull_s, daemon_s, criu_s, pages_at_reply;
};

struct ttfr_sample {
    double from_restore, from_freeze, bytes;
    struct ttfr_phases ph;
    struct ttfr_detail d;
};

/* One system: runs one migration of the source Redis (pid redis, left
 * running) with scratch space under work; 0 with *s filled, or -1 with a
 * message in eb. */
struct ttfr_system {
    const char *name; /* the JSON key and --systems name */
    int (*run)(const struct ttfr_ctx *c, pid_t redis, const char *work, struct ttfr_sample *s, char *eb,
               size_t el);
    int consumes_source; /* the migration ends the source (a commit): the driver runs it last in a
                            repetition and loads a new source for the next one */
};

/* ---- helpers the systems share (bench_ttfr.c) ------------------------------ */

/* Sets the phases and derives the reply phase and from_restore from
 * from_freeze (reply = what the other phases leave of it). Pure. */
void ttfr_set_phases(struct ttfr_sample *s, double from_freeze, double freeze, double skeleton, double transfer,
                     double restore);
double ttfr_secs(uint64_t a_ns, uint64_t b_ns);
/* Probes the Redis at addr from netns until the first correct reply (the
 * run's check), giving up after timeout_s or when alive_pid dies; returns the
 * dp_now_ns() of that reply or 0. */
uint64_t ttfr_probe(const struct ttfr_ctx *c, const char *netns, const char *addr, double timeout_s,
                    pid_t alive_pid, int *attempts);
/* SIGKILLs a tree's root (the init of its pid namespace) and waits for it. */
void ttfr_kill_tree(pid_t pid);
void ttfr_rm_rf(const char *path);
/* Copies the regular files of dir_src (read in src's netns) into dir_dst
 * (written in dst's) over the link on port; bytes sent or -1. */
int64_t ttfr_copy_over_link(const char *dir_src, const char *dir_dst, int port);
/* criu restore (lazy or not) of images into dst's namespaces, detached. */
int ttfr_criu_restore_in_dst(const char *images, const char *pidfile, int lazy, char *eb, size_t el);
/* Starts CRIU's `criu lazy-pages` daemon in dst's netns on images img (with
 * page_server "ADDR" and port > 0: pages from that remote page server) and
 * waits for its socket. The daemon's pid, or -1 with eb set. */
pid_t ttfr_start_criu_lazy_daemon(const struct ttfr_ctx *c, const char *img, const char *page_server, int port,
                                  char *eb, size_t el);
/* SIGKILLs and reaps a daemon ttfr_start_criu_lazy_daemon started. */
void ttfr_stop_daemon(pid_t daemon);

/* ---- CRIU's own remote lazy migration (bench_ttfr_criu_lazy.c) ------------- */

int ttfr_run_criu_lazy_remote(const struct ttfr_ctx *c, pid_t redis, const char *work, struct ttfr_sample *s,
                              char *eb, size_t el);

#endif
