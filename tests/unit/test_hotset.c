/* Unit tests of the hot-set format (lib/hotset.h) and the checkpoint identity
 * (lib/cpid.h): round trips, every malformed case the decoder must refuse,
 * and the checks against a real checkpoint (tests/fixtures/images-tinymem). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "hotset.h"
#include "proto.h"
#include "../fixtures/tinymem.h"

#define PG 4096ULL
#define FIXTURE "tests/fixtures/images-tinymem"

static const uint8_t ID_A[DP_CPID_SIZE] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10};

/* Two tasks, a few runs, deliberately not sorted (replay order). */
static void make_sample(struct dp_hotset *hs)
{
    dp_hotset_init(hs, DP_HS_TRACE, ID_A, 1764130000000000ull, 5000);
    assert_int_equal(dp_hotset_add_task(hs, 1), 0);
    assert_int_equal(dp_hotset_add_run(hs, 0x7f0000010000ull, 3, 1000, 1), 0);
    assert_int_equal(dp_hotset_add_run(hs, 0x7f0000000000ull, 1, 1000, 2), 0);
    assert_int_equal(dp_hotset_add_task(hs, 7), 0);
    assert_int_equal(dp_hotset_add_run(hs, 0x10000, 16, 500, 0), 0);
}

static void encode(const struct dp_hotset *hs, uint8_t **buf, size_t *len)
{
    struct dp_err err = {{0}};
    assert_int_equal(dp_hotset_encode(hs, buf, len, &err), 0);
}

/* Re-seals a buffer after a deliberate edit, so the edit (not the checksum)
 * is what the decoder must catch. */
static void reseal(uint8_t *buf, size_t len)
{
    crypto_generichash(buf + len - DP_HOTSET_SUM, DP_HOTSET_SUM, buf, len - DP_HOTSET_SUM, NULL, 0);
}

static void expect_refused(const uint8_t *buf, size_t len, const char *needle)
{
    struct dp_hotset hs;
    struct dp_err err = {{0}};
    assert_int_equal(dp_hotset_decode("x.bin", buf, len, &hs, &err), -1);
    if (!strstr(err.msg, needle))
        fail_msg("error '%s' does not mention '%s'", err.msg, needle);
    assert_null(hs.tasks);
    assert_null(hs.runs);
}

static void round_trip(void **state)
{
    (void)state;
    struct dp_hotset hs, back;
    struct dp_err err = {{0}};
    uint8_t *buf;
    size_t len;
    make_sample(&hs);
    encode(&hs, &buf, &len);
    assert_int_equal(len, DP_HOTSET_HDR + 2 * 8 + 3 * 24 + DP_HOTSET_SUM);
    assert_int_equal(dp_hotset_decode("x.bin", buf, len, &back, &err), 0);
    assert_int_equal(back.source, DP_HS_TRACE);
    assert_memory_equal(back.id, ID_A, DP_CPID_SIZE);
    assert_int_equal(back.created_us, 1764130000000000ull);
    assert_int_equal(back.window_ms, 5000);
    assert_int_equal(back.nr_tasks, 2);
    assert_int_equal(back.nr_runs, 3);
    assert_int_equal(back.total_pages, 20);
    assert_int_equal(back.tasks[0].pid, 1);
    assert_int_equal(back.tasks[0].nr_runs, 2);
    assert_int_equal(back.tasks[0].runs[0].vaddr, 0x7f0000010000ull);
    assert_int_equal(back.tasks[0].runs[0].nr_pages, 3);
    assert_int_equal(back.tasks[0].runs[1].t_ms, 2);
    assert_int_equal(back.tasks[1].pid, 7);
    assert_int_equal(back.tasks[1].runs[0].score, 500);
    assert_true(dp_hotset_contains(&back, 1, 0x7f0000012000ull));
    assert_false(dp_hotset_contains(&back, 1, 0x7f0000013000ull));
    assert_false(dp_hotset_contains(&back, 2, 0x10000));
    /* encoding the decoded form gives the same bytes */
    uint8_t *buf2;
    size_t len2;
    encode(&back, &buf2, &len2);
    assert_int_equal(len2, len);
    assert_memory_equal(buf2, buf, len);
    free(buf);
    free(buf2);
    dp_hotset_free(&hs);
    dp_hotset_free(&back);
}

/* A task without runs, and a hot set without any run (found by fuzzing:
 * no pointer arithmetic on the NULL run array). */
static void empty_tasks_round_trip(void **state)
{
    (void)state;
    struct dp_hotset hs, back;
    struct dp_err err = {{0}};
    uint8_t *buf;
    size_t len;
    dp_hotset_init(&hs, DP_HS_CLASSIFY, ID_A, 5, 5);
    assert_int_equal(dp_hotset_add_task(&hs, 3), 0);
    assert_int_equal(dp_hotset_add_task(&hs, 4), 0);
    encode(&hs, &buf, &len);
    assert_int_equal(len, DP_HOTSET_HDR + 2 * 8 + DP_HOTSET_SUM);
    assert_int_equal(dp_hotset_decode("x.bin", buf, len, &back, &err), 0);
    assert_int_equal(back.nr_tasks, 2);
    assert_int_equal(back.nr_runs, 0);
    assert_false(dp_hotset_contains(&back, 3, 0x1000));
    free(buf);
    dp_hotset_free(&back);
    /* then runs for the second task only */
    assert_int_equal(dp_hotset_add_run(&hs, 0x1000, 1, 1, 0), 0);
    encode(&hs, &buf, &len);
    assert_int_equal(dp_hotset_decode("x.bin", buf, len, &back, &err), 0);
    assert_int_equal(back.tasks[0].nr_runs, 0);
    assert_int_equal(back.tasks[1].nr_runs, 1);
    assert_true(dp_hotset_contains(&back, 4, 0x1000));
    free(buf);
    dp_hotset_free(&back);
    dp_hotset_free(&hs);
}

static void builder_coalesces_in_order(void **state)
{
    (void)state;
    struct dp_hotset hs;
    dp_hotset_init(&hs, DP_HS_TRACE, ID_A, 1, 1);
    assert_int_equal(dp_hotset_add_run(&hs, 0x1000, 1, 0, 0), -1); /* no task yet */
    assert_int_equal(dp_hotset_add_task(&hs, 3), 0);
    for (uint64_t p = 0; p < 1000; p++) /* a sequential fault trace */
        assert_int_equal(dp_hotset_add_run(&hs, 0x100000 + p * PG, 1, 1000, (uint32_t)p), 0);
    assert_int_equal(dp_hotset_add_run(&hs, 0x50000, 1, 1000, 0), 0); /* a jump: new run */
    assert_int_equal(dp_hotset_add_run(&hs, 0x51000, 1, 7, 0), 0);   /* other score: new run */
    assert_int_equal(dp_hotset_add_run(&hs, 0x52000, 0, 7, 0), -1);
    assert_int_equal(hs.nr_runs, 3);
    assert_int_equal(hs.tasks[0].runs[0].nr_pages, 1000);
    assert_int_equal(hs.total_pages, 1002);
    /* many runs: the array grows and task pointers follow it */
    assert_int_equal(dp_hotset_add_task(&hs, 4), 0);
    for (uint64_t p = 0; p < 5000; p++)
        assert_int_equal(dp_hotset_add_run(&hs, 0x10000000 + p * 2 * PG, 1, 1, 0), 0);
    struct dp_err err = {{0}};
    assert_int_equal(dp_hotset_validate(&hs, &err), 0);
    assert_ptr_equal(hs.tasks[1].runs, hs.runs + 3);
    assert_int_equal(hs.tasks[0].runs[0].nr_pages, 1000);
    dp_hotset_free(&hs);
}

static void header_cases(void **state)
{
    (void)state;
    struct dp_hotset hs;
    uint8_t *buf, *b;
    size_t len;
    make_sample(&hs);
    encode(&hs, &buf, &len);
    b = malloc(len + 8);

    expect_refused(buf, 10, "shorter than");
    expect_refused(buf, 0, "shorter than");
    memcpy(b, buf, len), b[0] ^= 1, reseal(b, len);
    expect_refused(b, len, "magic");
    memcpy(b, buf, len), dp_put_u16(b + 4, 2), reseal(b, len);
    expect_refused(b, len, "version 2");
    memcpy(b, buf, len), b[6] = 9, reseal(b, len);
    expect_refused(b, len, "unknown source");
    memcpy(b, buf, len), b[6] = 0, reseal(b, len);
    expect_refused(b, len, "unknown source");
    memcpy(b, buf, len), b[7] = 1, reseal(b, len);
    expect_refused(b, len, "reserved");
    memcpy(b, buf, len), dp_put_u32(b + 60, 1), reseal(b, len);
    expect_refused(b, len, "reserved");
    memcpy(b, buf, len), dp_put_u64(b + 72, 1), reseal(b, len);
    expect_refused(b, len, "reserved");
    memcpy(b, buf, len), dp_put_u32(b + 52, 0), reseal(b, len);
    expect_refused(b, len, "0 tasks");
    memcpy(b, buf, len), dp_put_u32(b + 52, DP_HOTSET_MAX_TASKS + 1), reseal(b, len);
    expect_refused(b, len, "tasks");
    memcpy(b, buf, len), dp_put_u32(b + 56, DP_HOTSET_MAX_RUNS + 1), reseal(b, len);
    expect_refused(b, len, "runs");
    /* counts that do not match the length */
    memcpy(b, buf, len), dp_put_u32(b + 56, 4), reseal(b, len);
    expect_refused(b, len, "truncated or trailing");
    memcpy(b, buf, len), dp_put_u32(b + 52, 1), reseal(b, len);
    expect_refused(b, len, "truncated or trailing");
    memcpy(b, buf, len), memset(b + len, 0, 8);
    expect_refused(b, len + 8, "truncated or trailing");
    /* total pages */
    memcpy(b, buf, len), dp_put_u64(b + 64, 21), reseal(b, len);
    expect_refused(b, len, "pages");
    free(b);
    free(buf);
    dp_hotset_free(&hs);
}

static void every_truncation_and_flip_refused(void **state)
{
    (void)state;
    struct dp_hotset hs, back;
    struct dp_err err;
    uint8_t *buf;
    size_t len;
    make_sample(&hs);
    encode(&hs, &buf, &len);
    for (size_t n = 0; n < len; n++)
        assert_int_equal(dp_hotset_decode("x.bin", buf, n, &back, &err), -1);
    /* any single bit flip anywhere: checksum (or a field check) refuses it */
    for (size_t i = 0; i < len; i++)
        for (int bit = 0; bit < 8; bit++) {
            buf[i] ^= (uint8_t)(1u << bit);
            assert_int_equal(dp_hotset_decode("x.bin", buf, len, &back, &err), -1);
            buf[i] ^= (uint8_t)(1u << bit);
        }
    assert_int_equal(dp_hotset_decode("x.bin", buf, len, &back, &err), 0);
    dp_hotset_free(&back);
    free(buf);
    dp_hotset_free(&hs);
}

/* offsets in the sample: tasks at 80, 88; runs at 96, 120, 144 */
#define TASK0 80
#define TASK1 88
#define RUN0 96
#define RUN1 120
#define RUN2 144

static void record_cases(void **state)
{
    (void)state;
    struct dp_hotset hs;
    uint8_t *buf, *b;
    size_t len;
    make_sample(&hs);
    encode(&hs, &buf, &len);
    b = malloc(len);

    memcpy(b, buf, len), dp_put_u32(b + TASK1, 1), reseal(b, len);
    expect_refused(b, len, "pid 1 appears twice");
    memcpy(b, buf, len), dp_put_u32(b + TASK0, 0), reseal(b, len);
    expect_refused(b, len, "not positive");
    memcpy(b, buf, len), dp_put_u32(b + TASK0, (uint32_t)-5), reseal(b, len);
    expect_refused(b, len, "not positive");
    /* task run counts that do not add up to the header's */
    memcpy(b, buf, len), dp_put_u32(b + TASK0 + 4, 3), reseal(b, len);
    expect_refused(b, len, "runs");
    memcpy(b, buf, len), dp_put_u32(b + TASK0 + 4, 1), dp_put_u32(b + TASK1 + 4, 1), reseal(b, len);
    expect_refused(b, len, "runs");
    memcpy(b, buf, len), dp_put_u32(b + TASK0 + 4, 0xffffffffu), reseal(b, len);
    expect_refused(b, len, "runs");
    memcpy(b, buf, len), dp_put_u64(b + RUN0, 0x7f0000010010ull), reseal(b, len);
    expect_refused(b, len, "not page aligned");
    memcpy(b, buf, len), dp_put_u32(b + RUN0 + 8, 0), reseal(b, len);
    expect_refused(b, len, "zero pages");
    memcpy(b, buf, len), dp_put_u64(b + RUN2, 0xfffffffffffff000ull), reseal(b, len);
    expect_refused(b, len, "beyond the user address space");
    memcpy(b, buf, len), dp_put_u64(b + RUN2, DP_HOTSET_MAX_VADDR - 8 * PG), reseal(b, len);
    expect_refused(b, len, "beyond the user address space");
    memcpy(b, buf, len), dp_put_u32(b + RUN2 + 8, 0xffffffffu), reseal(b, len);
    expect_refused(b, len, "pages");
    /* overlap: run 1 (1 page at 0x7f0000000000) grows into run 0 */
    memcpy(b, buf, len), dp_put_u32(b + RUN1 + 8, 17), dp_put_u64(b + 64, 36), reseal(b, len);
    expect_refused(b, len, "overlap");
    memcpy(b, buf, len), dp_put_u32(b + RUN1 + 20, 1), reseal(b, len);
    expect_refused(b, len, "reserved");
    /* runs of different tasks may overlap: other address spaces */
    memcpy(b, buf, len), dp_put_u64(b + RUN2, 0x7f0000010000ull), reseal(b, len);
    struct dp_hotset ok;
    struct dp_err err = {{0}};
    assert_int_equal(dp_hotset_decode("x.bin", b, len, &ok, &err), 0);
    dp_hotset_free(&ok);
    /* the encoder refuses what the decoder would */
    hs.tasks[1].pid = 1;
    uint8_t *out;
    size_t olen;
    assert_int_equal(dp_hotset_encode(&hs, &out, &olen, &err), -1);
    assert_non_null(strstr(err.msg, "appears twice"));
    free(b);
    free(buf);
    dp_hotset_free(&hs);
}

static void identity_of_fixture(void **state)
{
    (void)state;
    struct dp_checkpoint *cp;
    struct dp_err err = {{0}};
    uint8_t a[DP_CPID_SIZE], b[DP_CPID_SIZE];
    assert_int_equal(dp_checkpoint_open(FIXTURE, &cp, &err), 0);
    assert_int_equal(dp_checkpoint_identity(cp, a, &err), 0);
    assert_int_equal(dp_checkpoint_identity(cp, b, &err), 0);
    assert_memory_equal(a, b, DP_CPID_SIZE);
    char hex[DP_CPID_HEX], sh[17];
    dp_cpid_hex(a, hex);
    dp_cpid_short(a, sh);
    assert_int_equal(strlen(hex), 64);
    assert_memory_equal(hex, sh, 16);
    dp_checkpoint_close(cp);

    /* A copy with one byte of stats-dump changed (another dump moment) is
     * another checkpoint; a copy with the same bytes is the same one. */
    char dir[] = "/tmp/dp-test-hotset-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char cmd[512];
    snprintf(cmd, sizeof(cmd), "cp -a " FIXTURE "/. %s/", dir);
    assert_int_equal(system(cmd), 0);
    assert_int_equal(dp_checkpoint_open(dir, &cp, &err), 0);
    assert_int_equal(dp_checkpoint_identity(cp, b, &err), 0);
    assert_memory_equal(a, b, DP_CPID_SIZE);
    dp_checkpoint_close(cp);
    char path[600];
    snprintf(path, sizeof(path), "%s/stats-dump", dir);
    int fd = open(path, O_RDWR);
    assert_true(fd >= 0);
    uint8_t byte;
    assert_int_equal(pread(fd, &byte, 1, 20), 1);
    byte ^= 0x40;
    assert_int_equal(pwrite(fd, &byte, 1, 20), 1);
    close(fd);
    assert_int_equal(dp_checkpoint_open(dir, &cp, &err), 0);
    assert_int_equal(dp_checkpoint_identity(cp, b, &err), 0);
    assert_memory_not_equal(a, b, DP_CPID_SIZE);
    dp_checkpoint_close(cp);
    snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
    assert_int_equal(system(cmd), 0);
}

static void check_against_checkpoint(void **state)
{
    (void)state;
    struct dp_checkpoint *cp;
    struct dp_err err = {{0}};
    uint8_t id[DP_CPID_SIZE];
    assert_int_equal(dp_checkpoint_open(FIXTURE, &cp, &err), 0);
    assert_int_equal(dp_checkpoint_identity(cp, id, &err), 0);

    struct dp_hotset hs;
    dp_hotset_init(&hs, DP_HS_CLASSIFY, id, 1764130000000000ull, 1000);
    assert_int_equal(dp_hotset_add_task(&hs, 1), 0);
    /* the whole tinymem region (data pages and holes alike) */
    assert_int_equal(dp_hotset_add_run(&hs, TINYMEM_ADDR + 8 * PG, TINYMEM_PAGES - 8, 900, 0), 0);
    assert_int_equal(dp_hotset_add_run(&hs, TINYMEM_ADDR, 8, 900, 0), 0);
    assert_int_equal(dp_hotset_check("h.bin", &hs, cp, id, &err), 0);

    /* another checkpoint's identity: refused, both identities named */
    uint8_t other[DP_CPID_SIZE];
    memcpy(other, id, DP_CPID_SIZE);
    other[31] ^= 1;
    assert_int_equal(dp_hotset_check("h.bin", &hs, cp, other, &err), -1);
    char hx[DP_CPID_HEX], ho[DP_CPID_HEX];
    dp_cpid_hex(id, hx);
    dp_cpid_hex(other, ho);
    assert_non_null(strstr(err.msg, hx));
    assert_non_null(strstr(err.msg, ho));
    assert_non_null(strstr(err.msg, "refusing"));
    assert_non_null(strstr(err.msg, "(classify, made 2025-11-26 "));

    /* a run one page past the region: not lazy */
    hs.tasks[0].runs[0].nr_pages++;
    hs.total_pages++;
    assert_int_equal(dp_hotset_check("h.bin", &hs, cp, id, &err), -1);
    assert_non_null(strstr(err.msg, "not lazy memory"));
    hs.tasks[0].runs[0].nr_pages--;
    hs.total_pages--;
    /* a run in code (not lazy) */
    const struct dp_task_image *t = dp_checkpoint_find_task(cp, 1);
    uint64_t code = 0;
    for (size_t v = 0; v < t->nr_vmas; v++)
        if (!dp_vma_is_lazy(&t->vmas[v]))
            code = t->vmas[v].start;
    assert_true(code != 0);
    hs.tasks[0].runs[1].vaddr = code;
    hs.tasks[0].runs[1].nr_pages = 1;
    hs.total_pages = TINYMEM_PAGES - 8 + 1;
    assert_int_equal(dp_hotset_check("h.bin", &hs, cp, id, &err), -1);
    assert_non_null(strstr(err.msg, "not lazy memory"));
    hs.tasks[0].runs[1].vaddr = TINYMEM_ADDR;
    hs.tasks[0].runs[1].nr_pages = 8;
    hs.total_pages = TINYMEM_PAGES;
    /* a pid the checkpoint does not have */
    hs.tasks[0].pid = 2;
    assert_int_equal(dp_hotset_check("h.bin", &hs, cp, id, &err), -1);
    assert_non_null(strstr(err.msg, "pid 2 is not a task"));
    hs.tasks[0].pid = 1;

    /* through a file: write, load (computes the identity itself) */
    char path[] = "/tmp/dp-test-hotset-XXXXXX";
    int fd = mkstemp(path);
    assert_true(fd >= 0);
    close(fd);
    assert_int_equal(dp_hotset_write(path, &hs, &err), 0);
    struct dp_hotset back;
    assert_int_equal(dp_hotset_load(path, cp, NULL, &back, &err), 0);
    assert_int_equal(back.total_pages, TINYMEM_PAGES);
    dp_hotset_free(&back);
    /* the same file with a foreign identity is refused by load */
    memcpy(hs.id, other, DP_CPID_SIZE);
    assert_int_equal(dp_hotset_write(path, &hs, &err), 0);
    assert_int_equal(dp_hotset_load(path, cp, NULL, &back, &err), -1);
    assert_non_null(strstr(err.msg, "belongs to checkpoint"));
    assert_null(back.tasks);
    unlink(path);
    dp_hotset_free(&hs);
    dp_checkpoint_close(cp);
}

static void merge_and_compare(void **state)
{
    (void)state;
    struct dp_hotset tr, cl, out;
    struct dp_err err = {{0}};
    dp_hotset_init(&tr, DP_HS_TRACE, ID_A, 10, 3000);
    dp_hotset_add_task(&tr, 1);
    dp_hotset_add_run(&tr, 0x20000, 2, 1000, 5);  /* pages 0x20,0x21 */
    dp_hotset_add_run(&tr, 0x10000, 1, 1000, 9);  /* page 0x10 */
    dp_hotset_init(&cl, DP_HS_CLASSIFY, ID_A, 20, 1000);
    dp_hotset_add_task(&cl, 1);
    dp_hotset_add_run(&cl, 0x10000, 32, 800, 0);  /* pages 0x10..0x2f */
    dp_hotset_add_task(&cl, 2);
    dp_hotset_add_run(&cl, 0x5000, 1, 800, 0);
    const struct dp_hotset *in[] = {&tr, &cl};
    assert_int_equal(dp_hotset_merge(in, 2, &out, &err), 0);
    assert_int_equal(out.source, DP_HS_MERGED);
    assert_int_equal(out.created_us, 20);
    assert_int_equal(out.window_ms, 3000);
    assert_int_equal(out.nr_tasks, 2);
    assert_int_equal(out.total_pages, 33);
    /* trace order first, then the rest of the mapping around it */
    const struct dp_hs_task *t = &out.tasks[0];
    assert_int_equal(t->pid, 1);
    assert_int_equal(t->runs[0].vaddr, 0x20000);
    assert_int_equal(t->runs[0].nr_pages, 2);
    assert_int_equal(t->runs[1].vaddr, 0x10000);
    assert_int_equal(t->runs[1].nr_pages, 1);
    assert_int_equal(t->runs[2].vaddr, 0x11000);
    assert_int_equal(t->runs[2].nr_pages, 15);
    assert_int_equal(t->runs[3].vaddr, 0x22000);
    assert_int_equal(t->runs[3].nr_pages, 14);
    assert_int_equal(t->nr_runs, 4);
    assert_int_equal(out.tasks[1].pid, 2);

    uint64_t both, pp, ap;
    assert_int_equal(dp_hotset_compare(&cl, &tr, &both, &pp, &ap), 0);
    assert_int_equal(both, 3);
    assert_int_equal(pp, 33);
    assert_int_equal(ap, 3);
    assert_int_equal(dp_hotset_compare(&tr, &out, &both, &pp, &ap), 0);
    assert_int_equal(both, 3);
    assert_int_equal(dp_hotset_compare(&out, &out, &both, &pp, &ap), 0);
    assert_int_equal(both, 33);

    /* hot sets of two checkpoints do not merge */
    cl.id[0] ^= 1;
    dp_hotset_free(&out);
    assert_int_equal(dp_hotset_merge(in, 2, &out, &err), -1);
    assert_non_null(strstr(err.msg, "only hot sets of one checkpoint"));
    dp_hotset_free(&tr);
    dp_hotset_free(&cl);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(round_trip),
        cmocka_unit_test(builder_coalesces_in_order),
        cmocka_unit_test(empty_tasks_round_trip),
        cmocka_unit_test(header_cases),
        cmocka_unit_test(every_truncation_and_flip_refused),
        cmocka_unit_test(record_cases),
        cmocka_unit_test(identity_of_fixture),
        cmocka_unit_test(check_against_checkpoint),
        cmocka_unit_test(merge_and_compare),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
