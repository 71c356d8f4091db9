/* distriproc images: inspect a CRIU images directory the way the page server
 * sees it (tasks, lazy ranges, where the data is) and plan or write its
 * skeleton (everything but the lazy pages); --mark-lazy repairs a dump CRIU
 * wrote eager (lib/lazyfix.h). */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "commands.h"
#include "image.h"
#include "lazyfix.h"
#include "skeleton.h"
#include "util.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: distriproc images --images DIR [--json] [--skeleton-to DST] [--mark-lazy]\n"
            "\n"
            "Reads a `criu dump` images directory (and its pre-dump parent chain) and\n"
            "prints its tasks, their lazy ranges (the memory a lazy restore fetches on\n"
            "fault), how much page data is lazy, and the skeleton plan: the bytes the\n"
            "destination needs before `criu restore --lazy-pages`.\n"
            "\n"
            "  --images DIR        the images directory (criu dump -D DIR)\n"
            "  --json              machine-readable output\n"
            "  --skeleton-to DST   also write the skeleton into DST (created): every\n"
            "                      file, pages files sparse without their lazy data\n"
            "  --mark-lazy         first rewrite the pagemaps of a dump that CRIU wrote\n"
            "                      non-lazy because a thread's stack pointer sat on a page\n"
            "                      boundary (docs/criu-images.md, is_stack): for dumps not made\n"
            "                      by `distriproc checkpoint` (which does it itself), such as\n"
            "                      podman's export; a dump with nothing to mark is not touched\n"
            "  -h, --help          this text\n");
}

/* One task of the checkpoint as JSON (field names and types are what scripts
 * and tests read: keep them). */
static json_t *task_json(const struct dp_task_image *t)
{
    json_t *threads = json_array(), *lazy = json_array();
    for (size_t k = 0; k < t->nr_threads; k++)
        json_array_append_new(threads, json_integer(t->threads[k]));
    for (size_t k = 0; k < t->nr_lazy; k++) {
        char a[24], b[24];
        snprintf(a, sizeof(a), "0x%" PRIx64, t->lazy[k].start);
        snprintf(b, sizeof(b), "0x%" PRIx64, t->lazy[k].end);
        json_array_append_new(lazy, json_pack("[s, s]", a, b));
    }
    return json_pack("{s:i, s:i, s:i, s:i, s:o, s:I, s:I, s:I, s:I, s:I, s:I, s:o}", "pid", t->pid, "ppid", t->ppid,
                     "pgid", t->pgid, "sid", t->sid, "threads", threads, "vmas", (json_int_t)t->nr_vmas,
                     "pagemap_entries", (json_int_t)t->nr_runs, "pages_id", (json_int_t)t->pages_id, "lazy_bytes",
                     (json_int_t)t->lazy_bytes, "data_pages", (json_int_t)t->data_pages, "lazy_data_pages",
                     (json_int_t)t->lazy_data_pages, "lazy_ranges", lazy);
}

/* The whole report through jansson: names come from the file system and are
 * escaped by it (a name that is not UTF-8 is an error, never broken JSON). */
static int print_json(const struct dp_checkpoint *cp, const struct dp_skeleton_file *files, size_t n,
                      uint64_t marked)
{
    uint64_t send, total;
    dp_skeleton_totals(files, n, &send, &total);
    json_t *tasks = json_array(), *jfiles = json_array();
    for (size_t i = 0; i < cp->nr_tasks; i++)
        json_array_append_new(tasks, task_json(&cp->tasks[i]));
    for (size_t i = 0; i < n; i++)
        json_array_append_new(jfiles, json_pack("{s:s, s:I, s:I, s:I, s:b}", "name", files[i].name, "size",
                                                (json_int_t)files[i].size, "send_bytes",
                                                (json_int_t)files[i].send_bytes, "extents",
                                                (json_int_t)files[i].nr_extents, "sparse", files[i].sparse));
    json_t *root = json_pack("{s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:o, s:{s:I, s:I, s:o}}", "dir", cp->dir,
                             "img_version", (json_int_t)cp->img_version, "parent_depth",
                             (json_int_t)cp->parent_depth, "total_vma_bytes", (json_int_t)cp->total_vma_bytes,
                             "lazy_bytes", (json_int_t)cp->lazy_bytes, "image_bytes", (json_int_t)cp->image_bytes,
                             "marked_lazy_bytes", (json_int_t)(marked * DP_PAGE_SIZE), "tasks", tasks, "skeleton", "send_bytes", (json_int_t)send, "total_bytes",
                             (json_int_t)total, "files", jfiles);
    int rc = root && json_dumpf(root, stdout, JSON_INDENT(1)) == 0 ? 0 : -1;
    json_decref(root);
    if (rc < 0) {
        dp_error("cannot print the images of %s as JSON (a name that is not UTF-8?)", cp->dir);
        return -1;
    }
    putchar('\n');
    return 0;
}

static void print_text(const struct dp_checkpoint *cp, const struct dp_skeleton_file *files, size_t n)
{
    char a[32], b[32], c[32];
    uint64_t send, total;
    dp_skeleton_totals(files, n, &send, &total);
    printf("images %s (image version %u, pre-dump chain %u deep)\n", cp->dir, cp->img_version,
           cp->parent_depth);
    for (size_t i = 0; i < cp->nr_tasks; i++) {
        const struct dp_task_image *t = &cp->tasks[i];
        dp_format_bytes(t->lazy_bytes, a, sizeof(a));
        dp_format_bytes(t->data_pages * DP_PAGE_SIZE, b, sizeof(b));
        dp_format_bytes(t->lazy_data_pages * DP_PAGE_SIZE, c, sizeof(c));
        printf("task %d (ppid %d, %zu threads): %zu vmas, %zu lazy ranges of %s; page data %s, of it lazy %s\n",
               t->pid, t->ppid, t->nr_threads, t->nr_vmas, t->nr_lazy, a, b, c);
    }
    dp_format_bytes(send, a, sizeof(a));
    dp_format_bytes(total, b, sizeof(b));
    printf("skeleton: %s of %s in %zu files\n", a, b, n);
    for (size_t i = 0; i < n; i++)
        if (files[i].sparse) {
            dp_format_bytes(files[i].send_bytes, a, sizeof(a));
            dp_format_bytes(files[i].size, b, sizeof(b));
            printf("  %s: %s of %s in %zu extents\n", files[i].name, a, b, files[i].nr_extents);
        }
}

int cmd_images(int argc, char **argv)
{
    static const struct option opts[] = {
        {"images", required_argument, NULL, 'i'},
        {"json", no_argument, NULL, 'j'},
        {"skeleton-to", required_argument, NULL, 's'},
        {"mark-lazy", no_argument, NULL, 'm'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *dir = NULL, *skel = NULL;
    int json = 0, mark = 0, c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'i': dir = optarg; break;
        case 'j': json = 1; break;
        case 's': skel = optarg; break;
        case 'm': mark = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!dir || optind != argc) {
        usage(stderr);
        return 2;
    }
    struct dp_err err;
    uint64_t marked = 0;
    if (mark && dp_lazyfix_dir(dir, &marked, &err) < 0) {
        dp_error("cannot mark the lazy memory of %s: %s", dir, err.msg);
        return 1;
    }
    if (marked && !json) {
        char b[32];
        dp_format_bytes(marked * DP_PAGE_SIZE, b, sizeof(b));
        dp_info("%s of lazy memory was written eager (criu is_stack()); marked lazy", b);
    }
    struct dp_checkpoint *cp;
    if (dp_checkpoint_open(dir, &cp, &err) < 0) {
        dp_error("%s", err.msg);
        return 1;
    }
    struct dp_skeleton_file *files;
    size_t n;
    if (dp_skeleton_plan(cp, &files, &n, &err) < 0) {
        dp_error("cannot plan the skeleton: %s", err.msg);
        dp_checkpoint_close(cp);
        return 1;
    }
    int rc = 0;
    if (skel) {
        if (dp_skeleton_write_local(dir, files, n, skel, &err) < 0) {
            dp_error("cannot write the skeleton into %s: %s", skel, err.msg);
            rc = 1;
        } else if (!json) {
            dp_info("skeleton written to %s", skel);
        }
    }
    if (json) {
        if (print_json(cp, files, n, marked) < 0)
            rc = 1;
    } else
        print_text(cp, files, n);
    dp_skeleton_free(files, n);
    dp_checkpoint_close(cp);
    return rc;
}
