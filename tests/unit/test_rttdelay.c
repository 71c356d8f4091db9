/* lib/rttdelay: the emulated RTT shared by the page server and the raw TCP
 * baseline. The pure part (due times, in-order release, timer value) is
 * checked against a clock of the test's own: a simulated FIFO of delayed
 * replies, as lib/pageserver.c keeps it, released by a fake clock that the
 * timer wakes late by varying amounts. The timerfd is checked only for what
 * the kernel guarantees (it never fires before its time, read with the
 * clock the due times are given in), never for how soon it fires. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "rttdelay.h"
#include "util.h"

/* ---- pure: due time ------------------------------------------------------- */

/* The reply is due RTT after its request arrived, in nanoseconds. */
static void due_is_receive_time_plus_rtt(void **state)
{
    (void)state;
    assert_int_equal(dp_rtt_due(1000, 300), 1000 + 300000);
    assert_int_equal(dp_rtt_due(5000000000ULL, 1000), 5000000000ULL + 1000000);
    assert_int_equal(dp_rtt_due(777, 0), 777);
    /* a sum past 2^64 would wrap to a time long gone: due at once */
    assert_true(dp_rtt_due(UINT64_MAX - 10, 1) == UINT64_MAX);
    assert_true(dp_rtt_due(1, UINT64_MAX / 1000 + 1) == UINT64_MAX);
}

/* Never released before its due time; released once the clock reaches it. */
static void is_due_never_early(void **state)
{
    (void)state;
    assert_false(dp_rtt_is_due(1000, 999));
    assert_true(dp_rtt_is_due(1000, 1000));
    assert_true(dp_rtt_is_due(1000, 1001));
    assert_false(dp_rtt_is_due(UINT64_MAX, UINT64_MAX - 1));
}

/* A request stamped earlier than the one queued before it waits for that
 * one; a later one keeps its own due time. */
static void in_order_due_never_before_the_previous(void **state)
{
    (void)state;
    uint64_t last = 0;
    assert_int_equal(dp_rtt_due_in_order(1000, 10, &last), 11000);
    assert_int_equal(last, 11000);
    assert_int_equal(dp_rtt_due_in_order(900, 10, &last), 11000);    /* stamped earlier */
    assert_int_equal(dp_rtt_due_in_order(1000, 10, &last), 11000);   /* same time */
    assert_int_equal(dp_rtt_due_in_order(1500, 10, &last), 11500);
    assert_int_equal(last, 11500);
}

/* ---- pure: a FIFO of delayed replies under a fake clock ------------------- */

#define NREQ 2000

/* xorshift: reproducible arrival gaps and wake-up lateness */
static uint64_t rnd(uint64_t *s)
{
    *s ^= *s << 13;
    *s ^= *s >> 7;
    *s ^= *s << 17;
    return *s;
}

/* Requests arrive in bursts (equal stamps) and now and then stamped a little
 * before the previous one (stamps per read batch, several connections). The
 * queue's head arms the timer; the fake clock jumps to the head's due time
 * plus a random lateness (0 most often), or wakes early (a spurious wake-up),
 * and releases every reply that is due. Checks: replies leave in arrival
 * order, none before its request's time + RTT, none before the one ahead of
 * it, and each at the first wake-up at or after its due time. */
static void fifo_releases_in_order_never_early(void **state)
{
    (void)state;
    static uint64_t recv[NREQ], due[NREQ], sent_at[NREQ];
    static uint64_t wake_before[NREQ];   /* the last wake-up before sent_at */
    const uint64_t rtt_us[] = {0, 1, 300, 1000};
    for (size_t r = 0; r < sizeof(rtt_us) / sizeof(rtt_us[0]); r++) {
        uint64_t seed = 0x9E3779B97F4A7C15ULL + r, last_due = 0, t = 1000000;
        for (size_t i = 0; i < NREQ; i++) {
            uint64_t k = rnd(&seed) % 10;
            if (k < 3)
                ;                                /* same stamp as the previous */
            else if (k == 3 && t > 50000)
                t -= rnd(&seed) % 50000;         /* stamped before the previous */
            else
                t += rnd(&seed) % 400000;
            recv[i] = t;
            due[i] = dp_rtt_due_in_order(recv[i], rtt_us[r], &last_due);
            sent_at[i] = 0;
        }
        /* the event loop: head of the queue arms the timer */
        size_t head = 0;
        uint64_t now = 0, prev_wake = 0;
        while (head < NREQ) {
            uint64_t armed = due[head];
            uint64_t k = rnd(&seed) % 8;
            if (k == 0 && armed > now + 1)
                now = now + (armed - now) / 2;   /* woken early: nothing may go */
            else
                now = (armed > now ? armed : now) + (k < 5 ? 0 : rnd(&seed) % 200000);
            while (head < NREQ && dp_rtt_is_due(due[head], now)) {
                sent_at[head] = now;
                wake_before[head] = prev_wake;
                head++;
            }
            prev_wake = now;
        }
        for (size_t i = 0; i < NREQ; i++) {
            assert_true(sent_at[i] >= recv[i] + rtt_us[r] * 1000);       /* never early */
            assert_true(due[i] >= recv[i] + rtt_us[r] * 1000);
            if (i) {
                assert_true(due[i] >= due[i - 1]);                       /* FIFO ordered */
                assert_true(sent_at[i] >= sent_at[i - 1]);               /* in order */
                /* not held past its time: the wake-up before was too early */
                if (sent_at[i] != sent_at[i - 1])
                    assert_true(wake_before[i] < due[i]);
            }
        }
    }
}

/* ---- pure: the timer value ------------------------------------------------- */

/* One-shot, absolute nanoseconds split exactly; 0 must not disarm. */
static void timer_value_is_exact_and_one_shot(void **state)
{
    (void)state;
    struct itimerspec v = dp_rtt_timer_value(1500000007ULL);
    assert_int_equal(v.it_value.tv_sec, 1);
    assert_int_equal(v.it_value.tv_nsec, 500000007);
    assert_int_equal(v.it_interval.tv_sec, 0);
    assert_int_equal(v.it_interval.tv_nsec, 0);
    v = dp_rtt_timer_value(0);
    assert_int_equal(v.it_value.tv_sec, 0);
    assert_int_equal(v.it_value.tv_nsec, 1);
    v = dp_rtt_timer_value(999999999ULL);
    assert_int_equal(v.it_value.tv_sec, 0);
    assert_int_equal(v.it_value.tv_nsec, 999999999);
    v = dp_rtt_timer_value(42000000000ULL);
    assert_int_equal(v.it_value.tv_sec, 42);
    assert_int_equal(v.it_value.tv_nsec, 0);
}

/* ---- I/O: the timerfd against dp_now_ns ----------------------------------- */

/* The blocking wait returns only once dp_now_ns (the clock the page server
 * stamps requests with) has reached the due time: the timer runs on the
 * same clock. Only the lower bound is checked (the kernel guarantees it);
 * how late the wake-up is depends on load and is not asserted. */
static void blocking_wait_never_returns_early(void **state)
{
    (void)state;
    alarm(30);   /* a timer that never fires must not hang the suite */
    int tfd = dp_rtt_timer_create(0);
    assert_true(tfd >= 0);
    for (int i = 0; i < 20; i++) {
        uint64_t due = dp_rtt_due(dp_now_ns(), 50 + 50 * (uint64_t)i);
        assert_int_equal(dp_rtt_wait_until(tfd, due), 0);
        assert_true(dp_now_ns() >= due);
    }
    /* a due time already past returns (fires at once) */
    assert_int_equal(dp_rtt_wait_until(tfd, dp_now_ns() - 1000), 0);
    assert_int_equal(dp_rtt_wait_until(tfd, 0), 0);
    close(tfd);
    alarm(0);
}

/* The event loop's timer: not readable before its time, readable after; a
 * disarmed timer never fires. */
static void nonblocking_timer_fires_not_before_due(void **state)
{
    (void)state;
    int tfd = dp_rtt_timer_create(1);
    assert_true(tfd >= 0);
    uint64_t due = dp_rtt_due(dp_now_ns(), 200);
    assert_int_equal(dp_rtt_timer_arm(tfd, due), 0);
    struct pollfd pf = {tfd, POLLIN, 0};
    assert_int_equal(poll(&pf, 1, 10000), 1);     /* bounded wait for the event */
    assert_true(dp_now_ns() >= due);
    uint64_t ticks = 0;
    assert_int_equal(read(tfd, &ticks, sizeof(ticks)), (ssize_t)sizeof(ticks));
    assert_int_equal(ticks, 1);                   /* one shot */
    /* armed far ahead, then disarmed: nothing to read */
    assert_int_equal(dp_rtt_timer_arm(tfd, dp_rtt_due(dp_now_ns(), 60000000)), 0);
    dp_rtt_timer_disarm(tfd);
    errno = 0;
    assert_int_equal(read(tfd, &ticks, sizeof(ticks)), -1);
    assert_int_equal(errno, EAGAIN);
    close(tfd);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(due_is_receive_time_plus_rtt),
        cmocka_unit_test(is_due_never_early),
        cmocka_unit_test(in_order_due_never_before_the_previous),
        cmocka_unit_test(fifo_releases_in_order_never_early),
        cmocka_unit_test(timer_value_is_exact_and_one_shot),
        cmocka_unit_test(blocking_wait_never_returns_early),
        cmocka_unit_test(nonblocking_timer_fires_not_before_due),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
