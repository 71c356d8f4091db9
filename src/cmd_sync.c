/* distriproc sync: makes the page server current. The lazy-pages daemon of a
 * restore with --budget stops each task briefly, finds the resident pages
 * modified since they were installed (or last written back) and writes them
 * back, acknowledged as durable, over its control socket. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>

#include "commands.h"
#include "lazyd.h"
#include "util.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: distriproc sync --workdir DIR\n"
            "\n"
            "Writes back every page the restored process modified to the page server, so that the\n"
            "source holds the latest version of all of its memory. Needs a restore with --budget\n"
            "(that is what tracks modifications). Prints one JSON line: pages checked, pages\n"
            "written back, tasks skipped (forked address spaces that share a checkpoint pid are\n"
            "not written back; see docs/budget.md).\n"
            "\n"
            "  --workdir DIR   the --workdir given to distriproc restore\n");
}

int cmd_sync(int argc, char **argv)
{
    static const struct option opts[] = {
        {"workdir", required_argument, NULL, 'w'},
        {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *workdir = NULL;
    int c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'w': workdir = optarg; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!workdir || optind != argc) {
        fprintf(stderr, "distriproc sync: --workdir is required\n\n");
        usage(stderr);
        return 2;
    }
    struct dp_err err = {{0}};
    char *reply = dp_lazyd_control(workdir, "sync", &err);
    if (!reply) {
        dp_error("%s", err.msg);
        return 1;
    }
    fputs(reply, stdout);
    /* Good only if the daemon said so: no "error", and no task failed. */
    json_t *r = json_loads(reply, 0, NULL), *failed = json_object_get(r, "tasks_failed");
    int bad = !json_is_object(r) || json_object_get(r, "error") || !json_is_integer(failed) ||
              json_integer_value(failed) != 0;
    json_decref(r);
    free(reply);
    return bad ? 1 : 0;
}
