/* distriproc images: inspect a CRIU images directory the way the page server
 * sees it (tasks, lazy ranges, where the data is) and plan or write its
 * skeleton (everything but the lazy pages). */
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "image.h"
#include "skeleton.h"
#include "util.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: distriproc images --images DIR [--json] [--skeleton-to DST]\n"
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
            "  -h, --help          this text\n");
}

/* A JSON string: names come from the file system and may hold anything. */
static void json_str(const char *s)
{
    putchar('"');
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            printf("\\%c", c);
        else if (c < 0x20)
            printf("\\u%04x", c);
        else
            putchar(c);
    }
    putchar('"');
}

static void print_json(const struct dp_checkpoint *cp, const struct dp_skeleton_file *files, size_t n)
{
    uint64_t send, total;
    dp_skeleton_totals(files, n, &send, &total);
    printf("{\"dir\": ");
    json_str(cp->dir);
    printf(", \"img_version\": %u, \"parent_depth\": %u,\n", cp->img_version, cp->parent_depth);
    printf(" \"total_vma_bytes\": %" PRIu64 ", \"lazy_bytes\": %" PRIu64 ", \"image_bytes\": %" PRIu64 ",\n",
           cp->total_vma_bytes, cp->lazy_bytes, cp->image_bytes);
    printf(" \"tasks\": [");
    for (size_t i = 0; i < cp->nr_tasks; i++) {
        const struct dp_task_image *t = &cp->tasks[i];
        printf("%s\n  {\"pid\": %d, \"ppid\": %d, \"pgid\": %d, \"sid\": %d, \"threads\": [", i ? "," : "",
               t->pid, t->ppid, t->pgid, t->sid);
        for (size_t k = 0; k < t->nr_threads; k++)
            printf("%s%d", k ? ", " : "", t->threads[k]);
        printf("], \"vmas\": %zu, \"pagemap_entries\": %zu, \"pages_id\": %u,\n", t->nr_vmas, t->nr_runs,
               t->pages_id);
        printf("   \"lazy_bytes\": %" PRIu64 ", \"data_pages\": %" PRIu64 ", \"lazy_data_pages\": %" PRIu64
               ",\n   \"lazy_ranges\": [",
               t->lazy_bytes, t->data_pages, t->lazy_data_pages);
        for (size_t k = 0; k < t->nr_lazy; k++)
            printf("%s[\"0x%" PRIx64 "\", \"0x%" PRIx64 "\"]", k ? ", " : "", t->lazy[k].start, t->lazy[k].end);
        printf("]}");
    }
    printf("],\n \"skeleton\": {\"send_bytes\": %" PRIu64 ", \"total_bytes\": %" PRIu64 ", \"files\": [", send,
           total);
    for (size_t i = 0; i < n; i++) {
        printf("%s\n  {\"name\": ", i ? "," : "");
        json_str(files[i].name);
        printf(", \"size\": %" PRIu64 ", \"send_bytes\": %" PRIu64 ", \"extents\": %zu, \"sparse\": %s}",
               files[i].size, files[i].send_bytes, files[i].nr_extents, files[i].sparse ? "true" : "false");
    }
    printf("]}}\n");
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
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *dir = NULL, *skel = NULL;
    int json = 0, c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'i': dir = optarg; break;
        case 'j': json = 1; break;
        case 's': skel = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!dir || optind != argc) {
        usage(stderr);
        return 2;
    }
    struct dp_err err;
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
    if (json)
        print_json(cp, files, n);
    else
        print_text(cp, files, n);
    dp_skeleton_free(files, n);
    dp_checkpoint_close(cp);
    return rc;
}
