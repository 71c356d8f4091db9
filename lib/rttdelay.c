/* rttdelay: the emulated round trip time (see rttdelay.h). */
#include "rttdelay.h"

#include <errno.h>
#include <time.h>
#include <unistd.h>
#include <sys/timerfd.h>

/* ---- pure: due times, release, timer value -------------------------------- */

/* The delay counts from the request's arrival, as a real link's would; a
 * sum that wrapped would make the reply due at once. */
uint64_t dp_rtt_due(uint64_t recv_ns, uint64_t rtt_us)
{
    if (rtt_us > UINT64_MAX / 1000ULL || recv_ns > UINT64_MAX - rtt_us * 1000ULL)
        return UINT64_MAX;
    return recv_ns + rtt_us * 1000ULL;
}

/* A link delivers in order: a reply whose request was stamped earlier than
 * the one before it (stamps taken per read batch) waits for that one. */
uint64_t dp_rtt_due_in_order(uint64_t recv_ns, uint64_t rtt_us, uint64_t *last_due)
{
    uint64_t due = dp_rtt_due(recv_ns, rtt_us);
    if (due < *last_due)
        due = *last_due;
    *last_due = due;
    return due;
}

/* The timer may wake its reader a little late, never early; this is the
 * check that nothing goes before its time even if the wake-up was early. */
bool dp_rtt_is_due(uint64_t due_ns, uint64_t now_ns)
{
    return due_ns <= now_ns;
}

/* Absolute time, so a late caller does not add its lateness to the delay;
 * an all-zero value would disarm the timer, hence at least 1 ns. */
struct itimerspec dp_rtt_timer_value(uint64_t due_ns)
{
    struct itimerspec its = {0};
    if (due_ns == 0)
        due_ns = 1;
    its.it_value.tv_sec = (time_t)(due_ns / 1000000000ULL);
    its.it_value.tv_nsec = (long)(due_ns % 1000000000ULL);
    return its;
}

/* ---- I/O: the timerfd -------------------------------------------------------- */

/* One clock and one kind of timer for every emulated delay, so that the page
 * server and the baselines it is compared with wake up alike. */
int dp_rtt_timer_create(int nonblock)
{
    return timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | (nonblock ? TFD_NONBLOCK : 0));
}

/* Sets the timer to dp_rtt_timer_value(due_ns), relative to CLOCK_MONOTONIC
 * (the clock of dp_now_ns, in which due times are given). */
int dp_rtt_timer_arm(int tfd, uint64_t due_ns)
{
    struct itimerspec its = dp_rtt_timer_value(due_ns);
    return timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

/* An event loop disarms when its queue of delayed replies is empty, so that
 * the timer does not wake it for nothing. */
void dp_rtt_timer_disarm(int tfd)
{
    struct itimerspec its = {0};
    timerfd_settime(tfd, TFD_TIMER_ABSTIME, &its, NULL);
}

/* For a blocking server: the read returns when the timer has fired (at once
 * if due_ns has passed); a signal's interruption is retried. */
int dp_rtt_wait_until(int tfd, uint64_t due_ns)
{
    if (dp_rtt_timer_arm(tfd, due_ns) < 0)
        return -1;
    uint64_t ticks;
    for (;;) {
        ssize_t n = read(tfd, &ticks, sizeof(ticks));
        if (n == (ssize_t)sizeof(ticks))
            return 0;
        if (n < 0 && errno == EINTR)
            continue;
        if (n >= 0)
            errno = EIO;
        return -1;
    }
}
