/* rttdelay: the emulated round trip time (see rttdelay.h). */
#include "rttdelay.h"

#include <errno.h>
#include <time.h>
#include <unistd.h>
#include <sys/timerfd.h>

/* One clock and one kind of timer for every emulated delay, so that the page
 * server and the baselines it is compared with wake up alike. */
int dp_rtt_timer_create(int nonblock)
{
    return timerfd_create(CLOCK_MONOTONIC, TFD_CLOEXEC | (nonblock ? TFD_NONBLOCK : 0));
}

/* The delay counts from the request's arrival, as a real link's would. */
uint64_t dp_rtt_due(uint64_t recv_ns, uint64_t rtt_us)
{
    return recv_ns + rtt_us * 1000ULL;
}

/* Absolute time, so a late caller does not add its lateness to the delay;
 * an all-zero value would disarm the timer, hence at least 1 ns. */
int dp_rtt_timer_arm(int tfd, uint64_t due_ns)
{
    struct itimerspec its = {0};
    if (due_ns == 0)
        due_ns = 1;
    its.it_value.tv_sec = (time_t)(due_ns / 1000000000ULL);
    its.it_value.tv_nsec = (long)(due_ns % 1000000000ULL);
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
