/* rttdelay: the emulated round trip time (--emulate-rtt), one mechanism for
 * everyone who emulates it. A reply is due a fixed delay after its request
 * was received; a CLOCK_MONOTONIC timerfd armed at that absolute time says
 * when. The page server waits for the timerfd in its epoll loop, the
 * benchmarks' raw TCP baseline blocks reading it: both are woken by the same
 * kind of kernel timer (no timer slack, unlike nanosleep), so a comparison
 * between them measures what they do, not how they sleep. */
#ifndef DP_RTTDELAY_H
#define DP_RTTDELAY_H

#include <stdint.h>

/* A timerfd for delayed replies; nonblock for an event loop. -1 with errno. */
int dp_rtt_timer_create(int nonblock);

/* When the reply to a request received at recv_ns (dp_now_ns) is due. */
uint64_t dp_rtt_due(uint64_t recv_ns, uint64_t rtt_us);

/* Arms the timer to fire once at due_ns (dp_now_ns clock); a time already
 * past fires at once. -1 with errno. */
int dp_rtt_timer_arm(int tfd, uint64_t due_ns);

/* Disarms it (nothing is due). */
void dp_rtt_timer_disarm(int tfd);

/* Blocks until due_ns on a blocking timer: arm, then read its expiry.
 * -1 with errno. */
int dp_rtt_wait_until(int tfd, uint64_t due_ns);

#endif
