/* Unit tests of classification (lib/classify.h): the smaps parser and the
 * hot set built from a sample and a real checkpoint (images-tinymem). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "classify.h"
#include "../fixtures/tinymem.h"

#define PG 4096ULL
#define FIXTURE "tests/fixtures/images-tinymem"

static const char SMAPS[] =
    "0a000000-0a002000 r--p 00000000 fe:00 123    /usr/bin/x\n"
    "Size:                  8 kB\n"
    "Rss:                   8 kB\n"
    "Referenced:            8 kB\n"
    "Anonymous:             0 kB\n"
    "VmFlags: rd mr mw me dw sd\n"
    "100000000000-100000040000 rw-p 00000000 00:00 0 \n"
    "Size:                256 kB\n"
    "Rss:                 192 kB\n"
    "Referenced:           48 kB\n"
    "Anonymous:           192 kB\n"
    "7ffd00000000-7ffd00021000 rw-p 00000000 00:00 0                          [stack]\n"
    "Rss:                  12 kB\n"
    "Referenced:           12 kB\n";

static void smaps_parses(void **state)
{
    (void)state;
    struct dp_smaps_vma *v;
    size_t n;
    struct dp_err err = {{0}};
    if (dp_smaps_parse(SMAPS, strlen(SMAPS), &v, &n, &err)) fail_msg("%s", err.msg);
    assert_int_equal(n, 3);
    assert_int_equal(v[1].start, 0x100000000000ull);
    assert_int_equal(v[1].end, 0x100000040000ull);
    assert_int_equal(v[1].rss_kb, 192);
    assert_int_equal(v[1].referenced_kb, 48);
    assert_int_equal(v[1].anon_kb, 192);
    assert_string_equal(v[1].perms, "rw-p");
    assert_int_equal(v[2].referenced_kb, 12);
    free(v);
    /* refused: bad numbers, unaligned or unordered mappings */
    const char *bad[] = {
        "1000-2000 rw-p 0 0 0\nRss: x kB\n",
        "1000-1800 rw-p 0 0 0\n",
        "3000-4000 rw-p 0 0 0\n1000-2000 rw-p 0 0 0\n",
        "2000-1000 rw-p 0 0 0\n",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        assert_int_equal(dp_smaps_parse(bad[i], strlen(bad[i]), &v, &n, &err), -1);
    /* empty input: no mappings */
    assert_int_equal(dp_smaps_parse("", 0, &v, &n, &err), 0);
    assert_int_equal(n, 0);
    free(v);
}

/* tinymem's region referenced at 25% (48 of 192 kB): hot at threshold 0.2,
 * cold at 0.3; only its pages with data are in the hot set. */
static void build_from_sample(void **state)
{
    (void)state;
    struct dp_checkpoint *cp;
    struct dp_err err = {{0}};
    assert_int_equal(dp_checkpoint_open(FIXTURE, &cp, &err), 0);
    uint8_t id[DP_CPID_SIZE] = {7};
    struct dp_classify c = {0};
    struct dp_classify_task task = {.host_pid = 4242, .pid = 1};
    assert_int_equal(dp_smaps_parse(SMAPS, strlen(SMAPS), &task.vmas, &task.nr_vmas, &err), 0);
    c.tasks = &task;
    c.nr_tasks = 1;
    c.seconds = 2.0;

    struct dp_hotset hs;
    char *json = NULL;
    assert_int_equal(dp_classify_build(&c, cp, id, 0.2, 123, &hs, &json, &err), 0);
    assert_int_equal(hs.source, DP_HS_CLASSIFY);
    assert_int_equal(hs.window_ms, 2000);
    assert_int_equal(hs.nr_tasks, 1);
    uint64_t data = 0;
    for (uint64_t p = 0; p < TINYMEM_PAGES; p++) {
        int in = dp_hotset_contains(&hs, 1, TINYMEM_ADDR + p * PG);
        assert_int_equal(in, tinymem_page_has_data(p));
        data += (uint64_t)tinymem_page_has_data(p);
    }
    /* the only sampled lazy mapping that overlaps is tinymem's (the others
     * have no sample: not hot) */
    assert_int_equal(hs.total_pages, data);
    assert_int_equal(hs.runs[0].score, 250);
    assert_int_equal(dp_hotset_check("x", &hs, cp, id, &err), 0);
    assert_non_null(strstr(json, "\"referenced_kb\":48"));
    assert_non_null(strstr(json, "\"hot\":true"));
    free(json);
    dp_hotset_free(&hs);

    assert_int_equal(dp_classify_build(&c, cp, id, 0.3, 123, &hs, &json, &err), 0);
    assert_int_equal(hs.total_pages, 0);
    assert_int_equal(hs.nr_tasks, 1);
    assert_null(strstr(json, "\"hot\":true"));
    free(json);
    dp_hotset_free(&hs);

    /* nothing referenced: cold even at threshold 0 */
    task.vmas[1].referenced_kb = 0;
    assert_int_equal(dp_classify_build(&c, cp, id, 0.0, 123, &hs, &json, &err), 0);
    assert_int_equal(hs.total_pages, 0);
    free(json);
    dp_hotset_free(&hs);
    free(task.vmas);
    dp_checkpoint_close(cp);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(smaps_parses),
        cmocka_unit_test(build_from_sample),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
