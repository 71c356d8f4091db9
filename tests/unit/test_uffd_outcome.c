/* dp_uffd_outcome: the one reading of a UFFDIO_COPY/ZEROPAGE result that
 * the daemon's install, zero-fill and local-copy paths share. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <cmocka.h>

#include "uffd.h"

/* Each errno the kernel documents for these ioctls lands in its outcome;
 * the two ways a process's mm is gone are one outcome. */
static void documented_errnos(void **state)
{
    (void)state;
    assert_int_equal(dp_uffd_outcome(0), DP_UFFD_DONE);
    assert_int_equal(dp_uffd_outcome(-EEXIST), DP_UFFD_EXISTS);
    assert_int_equal(dp_uffd_outcome(-EAGAIN), DP_UFFD_RETRY);
    assert_int_equal(dp_uffd_outcome(-ENOENT), DP_UFFD_UNMAPPED);
    assert_int_equal(dp_uffd_outcome(-ESRCH), DP_UFFD_GONE);
    assert_int_equal(dp_uffd_outcome(-ENOSPC), DP_UFFD_GONE);
}

/* Anything else is a failure, never a success or a retry: an unknown
 * errno must not install or loop. */
static void anything_else_fails(void **state)
{
    (void)state;
    const int others[] = {-EINVAL, -EFAULT, -ENOMEM, -EPERM, -EBUSY, -EIO, -1, 1, EEXIST, EAGAIN};
    for (size_t i = 0; i < sizeof(others) / sizeof(others[0]); i++)
        assert_int_equal(dp_uffd_outcome(others[i]), DP_UFFD_FAILED);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(documented_errnos),
        cmocka_unit_test(anything_else_fails),
    };
    return cmocka_run_group_tests_name("uffd_outcome", tests, NULL, NULL);
}
