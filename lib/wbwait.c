/* wbwait: bounded waits for write-back acknowledgements (see wbwait.h). */
#include "wbwait.h"

#include "util.h"

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
