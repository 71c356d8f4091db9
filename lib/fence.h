/* fence: the destination's side of the one-writer rule (lib/lease.h,
 * docs/pageserver.md "One writer, fenced"). When the page server says this
 * restore's write lease was taken over, the lazy-pages daemon stops its tree
 * with SIGKILL (lazyd.c calls dp_fence_report, then kills); when the tree
 * ends normally, the daemon gives the lease back (dp_fence_release).
 *
 * Why SIGKILL and not a freeze: a fenced tree can never run correctly again.
 * Its pages that were evicted now live in a generation it may not read, its
 * dirty pages can no longer be written back, and the lease cannot return to
 * it without fencing the new writer. Frozen, it would hold memory and sockets
 * for nothing; running, it would act on the world as a second copy of the
 * same process (split brain). So it is killed, as a fencing agent would. */
#ifndef DP_FENCE_H
#define DP_FENCE_H

struct dp_pagesrc;

/* Logs why the tree is being stopped and writes WORKDIR/fenced.json
 * ({"fenced": true, "why": ..., "source": ..., "action": "SIGKILL"}). */
void dp_fence_report(const char *why, const char *source_desc, const char *workdir);
/* Releases the write lease of a remote source, unless fenced; only if the
 * server is reachable right now, bounded by 2 s (best effort: a failure is
 * logged, the next restore then has to take over). */
void dp_fence_release(struct dp_pagesrc *src);

#endif
