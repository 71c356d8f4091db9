/* The page source's write operation (lib/pagesrc.h): a source that cannot
 * hold modified pages refuses with a message naming it; one that can gets
 * exactly what the caller passed. */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "pagesrc.h"

/* A raw file is the checkpoint as taken: no put, a refusal, put_max 0. */
static void raw_source_refuses_writes(void **state)
{
    (void)state;
    char path[] = "/tmp/dp-pagesrc-put-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    static uint8_t page[4096];
    assert_int_equal(write(fd, page, sizeof(page)), (ssize_t)sizeof(page));
    close(fd);
    char spec[128];
    snprintf(spec, sizeof(spec), "%s@0x10000000", path);
    struct dp_err err = {{0}};
    struct dp_pagesrc *s = dp_pagesrc_raw_open(spec, &err);
    assert_non_null(s);
    assert_int_equal(dp_pagesrc_can_put(s), 0);
    assert_int_equal(dp_pagesrc_put_max(s), 0);
    uint64_t img = 0x10000000;
    const uint8_t *data = page;
    assert_int_equal(dp_pagesrc_put(s, 1, &img, &data, 1, NULL, NULL, &err), -1);
    assert_non_null(strstr(err.msg, "takes no writes"));
    assert_non_null(strstr(err.msg, s->desc));
    s->ops->close(s);
    unlink(path);
}

/* A source with a put operation: what it was given, recorded. */
struct fake {
    struct dp_pagesrc base;
    int calls;
    int32_t pid;
    uint32_t n;
    const uint64_t *img;
    const uint8_t *const *data;
    void *cookie;
};

static int fake_put(struct dp_pagesrc *s, int32_t pid, const uint64_t *img, const uint8_t *const *data, uint32_t n,
                    dp_pagesrc_put_cb cb, void *cookie, struct dp_err *err)
{
    (void)err;
    struct fake *f = (struct fake *)s;
    f->calls++;
    f->pid = pid;
    f->n = n;
    f->img = img;
    f->data = data;
    f->cookie = cookie;
    cb(cookie, 0, NULL);
    return 0;
}

static uint32_t fake_put_max(struct dp_pagesrc *s)
{
    (void)s;
    return 17;
}

/* Completion callback of the fake: counts acks. */
static void acked(void *cookie, int status, const char *errmsg)
{
    (void)errmsg;
    if (status == 0)
        ++*(int *)cookie;
}

static void put_passes_through(void **state)
{
    (void)state;
    static const struct dp_pagesrc_ops ops = {.name = "fake", .put = fake_put, .put_max = fake_put_max};
    struct fake f = {.base = {.ops = &ops, .desc = "fake"}};
    uint64_t img[2] = {0x1000, 0x3000};
    static uint8_t a[4096], b[4096];
    const uint8_t *data[2] = {a, b};
    int acks = 0;
    struct dp_err err = {{0}};
    assert_int_equal(dp_pagesrc_can_put(&f.base), 1);
    assert_int_equal(dp_pagesrc_put_max(&f.base), 17);
    assert_int_equal(dp_pagesrc_put(&f.base, 42, img, data, 2, acked, &acks, &err), 0);
    assert_int_equal(f.calls, 1);
    assert_int_equal(f.pid, 42);
    assert_int_equal(f.n, 2);
    assert_ptr_equal(f.img, img);
    assert_ptr_equal(f.data, data);
    assert_int_equal(acks, 1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(raw_source_refuses_writes),
        cmocka_unit_test(put_passes_through),
    };
    return cmocka_run_group_tests_name("pagesrc_put", tests, NULL, NULL);
}
