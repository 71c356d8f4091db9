/* pipemax: fs.pipe-max-size large enough for `criu dump --lazy-pages`, for
 * the length of the dump, and the descriptor budget such a dump needs.
 *
 * Why: CRIU keeps the pages of a lazy dump in page pipes and grows each pipe
 * with F_SETPIPE_SZ up to 4 MiB (PIPE_MAX_SIZE, 1024 pages). Above
 * fs.pipe-max-size only a caller with CAP_SYS_RESOURCE may do that; without
 * it CRIU ignores the EPERM and the following tee() reports that stale EPERM,
 * so the dump fails with a misleading error. Where the capability is held
 * nothing changes. Otherwise the window takes an exclusive lock
 * (DP_PIPEMAX_LOCK) for its whole length, so that concurrent windows never
 * put the old value back under one another, raises the sysctl to what is
 * needed if it is lower, and at the end puts back the value it found. The
 * lock file records "open PREV" while a raised window is open and "closed"
 * after, so a window whose process was killed is noticed by the next one,
 * which then restores PREV. fs.pipe-max-size is a global setting: it is
 * changed only while a lazy dump runs and is always put back (docs/
 * live-migration.md).
 *
 * Descriptors: CRIU holds about two descriptors per MiB of lazily dumped
 * memory (its page pipes; 8,207 at 4 GiB measured). RLIMIT_NOFILE caps that:
 * dp_pipemax_max_lazy_bytes() says how much memory a lazy dump can hold under
 * a given limit, and dp_pipemax_check_size() refuses a larger dump up front
 * with a message instead of a CRIU failure half-way. */
#ifndef DP_PIPEMAX_H
#define DP_PIPEMAX_H

#include <stdint.h>

#include "util.h"

#define DP_PIPEMAX_SYSCTL "/proc/sys/fs/pipe-max-size"
#define DP_PIPEMAX_LOCK "/run/distriproc-pipe-max.lock"
/* CRIU's PIPE_MAX_SIZE (criu/include/page-pipe.h): 1024 pages. */
#define DP_PIPEMAX_CRIU_NEED (4u << 20)
/* Descriptors CRIU needs besides its page pipes (images, service fds). */
#define DP_PIPEMAX_FD_RESERVE 512u
#define DP_PIPEMAX_FDS_PER_MIB 2u
#define DP_CAP_SYS_RESOURCE 24

struct dp_pipemax {
    int lock_fd;     /* -1: nothing held (capability present) */
    uint64_t prev;   /* the value found */
    int raised;      /* 1 if the sysctl was changed and must be put back */
};

/* A decimal sysctl value with an optional trailing newline -> *out; 0 or -1. Pure. */
int dp_pipemax_parse(const char *text, size_t len, uint64_t *out);
/* 1 if the "CapEff:" line of a /proc/PID/status text holds capability cap,
 * 0 if not, -1 if the line is missing or malformed. Pure. */
int dp_cap_effective(const char *status, int cap);
/* Bytes of lazily dumped memory CRIU can hold with nofile descriptors. Pure. */
uint64_t dp_pipemax_max_lazy_bytes(uint64_t nofile);

/* Opens the window: without CAP_SYS_RESOURCE, locks (waits for another window
 * to close), remembers the value and raises it to need if lower, saying so.
 * Returns 0, or -1 with err (nothing changed). */
int dp_pipemax_open(struct dp_pipemax *w, uint64_t need, struct dp_err *err);
/* Puts the remembered value back (if raised) and unlocks. 0, or -1 with err. */
int dp_pipemax_close(struct dp_pipemax *w, struct dp_err *err);
/* Raises RLIMIT_NOFILE's soft limit to the hard one (CRIU inherits it) and
 * checks that a lazy dump of lazy_bytes fits; -1 with err naming the limit,
 * the largest size that fits and what to do. */
int dp_pipemax_check_size(uint64_t lazy_bytes, struct dp_err *err);

#endif
