/* accesslog: a hot set from the page server's access log (docs/protocol.md
 * §4.6: per page served, the pid, address, count and the times of the first
 * and last GET). Ordered by first access, it is the working set an earlier
 * restore fetched, a refinement of the per-mapping classification available
 * without a recorded trace. Unlike a fault trace it also holds pages that
 * were prefetched but never touched, so record with --prefetch none when the
 * two should agree. Pure. */
#ifndef DP_ACCESSLOG_H
#define DP_ACCESSLOG_H

#include <stddef.h>
#include <stdint.h>

#include "hotset.h"

struct dp_access_ent {
    int32_t pid;
    uint32_t count;
    uint64_t addr;
    uint64_t first_us, last_us;
};

/* Parses the access-log JSON; *ents is malloc'd. */
int dp_accesslog_parse(const char *text, size_t len, struct dp_access_ent **ents, size_t *n, struct dp_err *err);
/* Pages first served within window_s seconds of the log's start (0 = all),
 * in order of first access, as a hot set of source "trace" for checkpoint id. */
int dp_accesslog_hotset(const struct dp_access_ent *ents, size_t n, double window_s, const uint8_t id[DP_CPID_SIZE],
                        uint64_t created_us, struct dp_hotset *hs, struct dp_err *err);

#endif
