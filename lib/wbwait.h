/* wbwait: a bounded wait for write-back acknowledgements while the
 * daemon's event loop keeps turning (issue 12 item 4). An eviction batch
 * holds its process's threads stopped; it must never hold them for as long
 * as the network decides: past the bound the batch is abandoned (its
 * threads resume, its pages stay resident, eviction retries later). */
#ifndef DP_WBWAIT_H
#define DP_WBWAIT_H

#include <stdint.h>

enum dp_wait_result { DP_WAIT_DONE = 0, DP_WAIT_GONE = -1, DP_WAIT_TIMEOUT = 1 };

/* Calls pump(arg) until *pending is 0 (DONE), pump returns < 0 (GONE: the
 * process went away) or ms milliseconds pass (TIMEOUT; ms <= 0: the
 * default, DP_WAIT_DEFAULT_MS). now_ns: the clock (NULL: CLOCK_MONOTONIC),
 * for the unit test. */
#define DP_WAIT_DEFAULT_MS 5000
enum dp_wait_result dp_wait_bounded(int (*pump)(void *arg), void *arg, const int *pending, int ms,
                                    uint64_t (*now_ns)(void));

/* --writeback-timeout's value: whole milliseconds, 1..3600000. 0 and *ms
 * set, or -1 (a message for the flag is the caller's). Restore and migrate
 * (which passes it on) share it, so migrate refuses what restore would
 * before anything is frozen. */
int dp_wait_parse_ms(const char *val, int *ms);

#endif
