/* wbwait: bounded waits for write-back acknowledgements (see wbwait.h). */
#include "wbwait.h"

#include "util.h"

#include <errno.h>
#include <stdlib.h>

/* The deadline is fixed at the start: acks trickling in do not extend it,
 * so the stop a batch costs is bounded by ms plus one pump turn. */
enum dp_wait_result dp_wait_bounded(int (*pump)(void *arg), void *arg, const int *pending, int ms,
                                    uint64_t (*now_ns)(void))
{
    if (!now_ns)
        now_ns = dp_now_ns;
    if (ms <= 0)
        ms = DP_WAIT_DEFAULT_MS;
    uint64_t deadline = now_ns() + (uint64_t)ms * 1000000ull;
    while (*pending > 0) {
        if (now_ns() >= deadline)
            return DP_WAIT_TIMEOUT;
        if (pump(arg) < 0)
            return DP_WAIT_GONE;
    }
    return DP_WAIT_DONE;
}

/* Whole numbers only: "5s", "-1" or "1e3" are typos, not bounds. */
int dp_wait_parse_ms(const char *val, int *ms)
{
    char *end;
    if (!val || !*val || *val == '-')
        return -1;
    errno = 0;
    long v = strtol(val, &end, 10);
    if (errno || *end || v < 1 || v > 3600000)
        return -1;
    *ms = (int)v;
    return 0;
}
