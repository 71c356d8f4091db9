/* hotset: inspect, check, merge and compare hot-set files (lib/hotset.h). */
#include <errno.h>
#include <getopt.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "accesslog.h"
#include "commands.h"
#include "cpid.h"
#include "hotset.h"
#include "image.h"
#include "jsonout.h"
#include "util.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: distriproc hotset show FILE [--json]\n"
            "       distriproc hotset check --images DIR FILE [--json]\n"
            "       distriproc hotset identity --images DIR\n"
            "       distriproc hotset merge --images DIR --output OUT FILE FILE...\n"
            "       distriproc hotset compare --images DIR PREDICTED ACTUAL [--json]\n"
            "       distriproc hotset from-access-log --images DIR --output OUT [--window SEC] LOG.json\n"
            "\n"
            "A hot set is the working set of a checkpoint: per task, the page runs to fetch\n"
            "first after a restore. `checkpoint --classify` writes DIR/%s; a restore\n"
            "records its fault trace, which the page server keeps as DIR/%s*.bin.\n"
            "Every hot set names the checkpoint it was made for (its identity, a BLAKE2b\n"
            "hash of the images' metadata): one from another or an earlier checkpoint is\n"
            "refused.\n"
            "\n"
            "  show      header and size of FILE (no checkpoint needed)\n"
            "  check     FILE belongs to the checkpoint in DIR and every page is lazy memory\n"
            "            of its task (exit 0), or why not (exit 1)\n"
            "  identity  the identity of the checkpoint in DIR\n"
            "  merge     FILEs of one checkpoint into OUT: the first file's runs in order,\n"
            "            then each next file's pages not included yet (trace, then classify)\n"
            "  compare   precision and recall of PREDICTED against the pages of ACTUAL\n"
            "  from-access-log  the page server's access log of an earlier run (distriproc query\n"
            "            access-log, or serve --access-log FILE) as a hot set of the checkpoint in DIR:\n"
            "            pages in order of first access (those of the first SEC seconds with --window);\n"
            "            it includes prefetched pages, so log a run with --prefetch none\n",
            DP_HOTSET_FILE, DP_TRACE_PREFIX);
}

/* `hotset show|check|merge --json`: the header, then pages and runs per task.
 * NULL if out of memory. */
static json_t *hotset_json(const char *path, const struct dp_hotset *hs, const char *hex, const char *when)
{
    json_t *per_task = json_array();
    for (uint32_t i = 0; per_task && i < hs->nr_tasks; i++) {
        uint64_t pages = 0;
        for (uint32_t k = 0; k < hs->tasks[i].nr_runs; k++)
            pages += hs->tasks[i].runs[k].nr_pages;
        if (json_array_append_new(per_task, json_pack("{s:i, s:I, s:I}", "pid", hs->tasks[i].pid, "runs",
                                                      (json_int_t)hs->tasks[i].nr_runs, "pages",
                                                      (json_int_t)pages)) < 0) {
            json_decref(per_task);
            return NULL;
        }
    }
    return json_pack("{s:s, s:s, s:s, s:s, s:I, s:I, s:I, s:I, s:I, s:I, s:o}", "file", path, "source",
                     dp_hotset_source_name(hs->source), "checkpoint_identity", hex, "created", when, "created_us",
                     (json_int_t)hs->created_us, "window_ms", (json_int_t)hs->window_ms, "tasks",
                     (json_int_t)hs->nr_tasks, "runs", (json_int_t)hs->nr_runs, "pages", (json_int_t)hs->total_pages,
                     "bytes", (json_int_t)(hs->total_pages * DP_PAGE_SIZE), "per_task", per_task);
}

static void print_hotset(const char *path, const struct dp_hotset *hs, int json)
{
    char hex[DP_CPID_HEX], when[64] = "unknown";
    dp_cpid_hex(hs->id, hex);
    time_t s = (time_t)(hs->created_us / 1000000);
    struct tm tm;
    if (gmtime_r(&s, &tm))
        strftime(when, sizeof(when), "%Y-%m-%dT%H:%M:%SZ", &tm);
    if (json) {
        dp_json_print(hotset_json(path, hs, hex, when), JSON_COMPACT);
        return;
    }
    char b[32];
    dp_format_bytes(hs->total_pages * DP_PAGE_SIZE, b, sizeof(b));
    printf("%s: %s hot set of checkpoint %s\n", path, dp_hotset_source_name(hs->source), hex);
    printf("  made %s after observing %.1f s; %u task(s), %u run(s), %llu pages (%s)\n", when,
           hs->window_ms / 1000.0, hs->nr_tasks, hs->nr_runs, (unsigned long long)hs->total_pages, b);
}

static int load_plain(const char *path, struct dp_hotset *hs)
{
    uint8_t *buf;
    size_t len;
    struct dp_err err = {{0}};
    if (dp_read_file(path, &buf, &len, &err) < 0) {
        dp_error("%s", err.msg);
        return -1;
    }
    int rc = dp_hotset_decode(path, buf, len, hs, &err);
    free(buf);
    if (rc < 0)
        dp_error("%s", err.msg);
    return rc;
}

int cmd_hotset(int argc, char **argv)
{
    if (argc < 2 || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    const char *verb = argv[1];
    static const struct option longopts[] = {
        {"images", required_argument, NULL, 'i'},
        {"output", required_argument, NULL, 'o'},
        {"json", no_argument, NULL, 'j'},
        {"window", required_argument, NULL, 'W'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *images = NULL, *output = NULL;
    double window = 0;
    int json = 0, c;
    optind = 2;
    while ((c = getopt_long(argc, argv, "hi:o:", longopts, NULL)) != -1) {
        switch (c) {
        case 'i': images = optarg; break;
        case 'o': output = optarg; break;
        case 'j': json = 1; break;
        case 'W': {
            char *end;
            window = strtod(optarg, &end);
            if (*end || !(window >= 0)) {
                dp_error("--window takes seconds, not '%s'", optarg);
                return 2;
            }
            break;
        }
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    char **files = argv + optind;
    int nfiles = argc - optind;

    if (!strcmp(verb, "show")) {
        if (nfiles != 1) {
            dp_error("show takes one FILE");
            return 2;
        }
        struct dp_hotset hs;
        if (load_plain(files[0], &hs) < 0)
            return 1;
        print_hotset(files[0], &hs, json);
        dp_hotset_free(&hs);
        return 0;
    }
    int want = !strcmp(verb, "check") ? 1 : !strcmp(verb, "identity") ? 0 : !strcmp(verb, "compare") ? 2
             : !strcmp(verb, "merge") ? -2 : !strcmp(verb, "from-access-log") ? 3 : -1;
    if (want == -1) {
        dp_error("unknown action '%s'", verb);
        usage(stderr);
        return 2;
    }
    if (!images) {
        dp_error("%s needs --images DIR (the checkpoint the hot sets must belong to)", verb);
        return 2;
    }
    if ((want >= 0 && want < 3 && nfiles != want) || (want == 3 && (nfiles != 1 || !output)) ||
        (want == -2 && (nfiles < 2 || !output))) {
        dp_error("wrong arguments for %s (see --help)", verb);
        return 2;
    }
    struct dp_err err = {{0}};
    struct dp_checkpoint *cp;
    uint8_t id[DP_CPID_SIZE];
    if (dp_checkpoint_open(images, &cp, &err) < 0 || dp_checkpoint_identity(cp, id, &err) < 0) {
        dp_error("%s", err.msg);
        return 1;
    }
    int rc = 0;
    if (want == 3) {
        uint8_t *text;
        size_t len;
        struct dp_access_ent *ents = NULL;
        size_t n = 0;
        struct dp_hotset hs;
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        uint64_t us = (uint64_t)ts.tv_sec * 1000000u + (uint64_t)ts.tv_nsec / 1000u;
        if (dp_read_file(files[0], &text, &len, &err) < 0) {
            dp_error("%s", err.msg);
            rc = 1;
        } else {
            if (dp_accesslog_parse((const char *)text, len, &ents, &n, &err) < 0 ||
                dp_accesslog_hotset(ents, n, window, id, us, &hs, &err) < 0) {
                dp_error("%s: %s", files[0], err.msg);
                rc = 1;
            } else {
                /* stamped with DIR's identity: every page must be lazy memory of it */
                if (dp_hotset_check(files[0], &hs, cp, id, &err) < 0 || dp_hotset_write(output, &hs, &err) < 0) {
                    dp_error("%s (was the log written by a server of this checkpoint?)", err.msg);
                    rc = 1;
                } else {
                    print_hotset(output, &hs, json);
                }
                dp_hotset_free(&hs);
            }
            free(ents);
            free(text);
        }
    } else if (want == 0) {
        char hex[DP_CPID_HEX];
        dp_cpid_hex(id, hex);
        printf("%s\n", hex);
    } else if (want == 1) {
        struct dp_hotset hs;
        if (dp_hotset_load(files[0], cp, id, &hs, &err) < 0) {
            dp_error("%s", err.msg);
            rc = 1;
        } else {
            if (!json)
                printf("ok: ");
            print_hotset(files[0], &hs, json);
            dp_hotset_free(&hs);
        }
    } else {
        struct dp_hotset *hs = calloc((size_t)nfiles, sizeof(*hs));
        const struct dp_hotset **ptrs = calloc((size_t)nfiles, sizeof(*ptrs));
        int loaded = 0;
        if (!hs || !ptrs) {
            dp_error("out of memory");
            rc = 1;
        }
        for (; !rc && loaded < nfiles; loaded++) {
            if (dp_hotset_load(files[loaded], cp, id, &hs[loaded], &err) < 0) {
                dp_error("%s", err.msg);
                rc = 1;
                break;
            }
            ptrs[loaded] = &hs[loaded];
        }
        if (!rc && want == 2) {
            uint64_t both, pp, ap;
            if (dp_hotset_compare(&hs[0], &hs[1], &both, &pp, &ap) < 0) {
                dp_error("out of memory");
                rc = 1;
            } else {
                double prec = pp ? (double)both / (double)pp : 0, rec = ap ? (double)both / (double)ap : 0;
                if (json)
                    rc = dp_json_print(json_pack("{s:I, s:I, s:I, s:f, s:f}", "predicted_pages", (json_int_t)pp,
                                                 "actual_pages", (json_int_t)ap, "both", (json_int_t)both,
                                                 "precision", round(prec * 1e4) / 1e4, "recall",
                                                 round(rec * 1e4) / 1e4),
                                       JSON_COMPACT | JSON_REAL_PRECISION(6)) < 0;
                else
                    printf("predicted %llu pages, actual %llu, in both %llu: precision %.1f%%, recall %.1f%%\n",
                           (unsigned long long)pp, (unsigned long long)ap, (unsigned long long)both, prec * 100,
                           rec * 100);
            }
        } else if (!rc) {
            struct dp_hotset out;
            if (dp_hotset_merge(ptrs, (size_t)nfiles, &out, &err) < 0 || dp_hotset_write(output, &out, &err) < 0) {
                dp_error("%s", err.msg);
                rc = 1;
            } else {
                print_hotset(output, &out, json);
                dp_hotset_free(&out);
            }
        }
        for (int i = 0; i < loaded; i++)
            dp_hotset_free(&hs[i]);
        free(hs);
        free(ptrs);
    }
    dp_checkpoint_close(cp);
    return rc;
}
