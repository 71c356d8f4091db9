/* distriproc stats: what the lazy-pages daemon of a restore has done so far,
 * read over its control socket (WORKDIR/control.sock). */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "lazyd.h"
#include "util.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: distriproc stats --workdir DIR [--json]\n"
            "\n"
            "Per restored task and in total: page faults, pages fetched and prefetched,\n"
            "prefetch hits, zero pages, bytes on the wire, fault latency (p50/p90/p99/max),\n"
            "resident and remote bytes (the remote fraction), uptime. After the daemon has\n"
            "exited, prints the final stats it left in DIR/stats-final.json.\n"
            "\n"
            "Prefetch hits count faults that found their page already in flight because of a\n"
            "prefetch, plus pages of a sequential window that the task walked through without\n"
            "faulting (its next fault came right after the window). Installed pages are not\n"
            "access-tracked on this kernel, so this is an estimate; see lib/prefetch.h.\n"
            "\n"
            "  --workdir DIR   the --workdir given to distriproc restore\n"
            "  --json          machine-readable output\n");
}

int cmd_stats(int argc, char **argv)
{
    static const struct option opts[] = {
        {"workdir", required_argument, NULL, 'w'}, {"json", no_argument, NULL, 'j'},
        {"help", no_argument, NULL, 'h'},          {NULL, 0, NULL, 0},
    };
    const char *workdir = NULL;
    int json = 0, c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'w': workdir = optarg; break;
        case 'j': json = 1; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!workdir || optind != argc) {
        fprintf(stderr, "distriproc stats: --workdir is required\n\n");
        usage(stderr);
        return 2;
    }
    struct dp_err err = {{0}};
    char *reply = dp_lazyd_control(workdir, json ? "stats" : "summary", &err);
    if (reply) {
        fputs(reply, stdout);
        free(reply);
        return 0;
    }
    char path[4200];
    snprintf(path, sizeof(path), "%s/stats-final.json", workdir);
    uint8_t *data;
    size_t len;
    struct dp_err ferr = {{0}};
    if (dp_read_file(path, &data, &len, &ferr) == 0) {
        if (!json)
            fprintf(stderr, "distriproc stats: the daemon has exited; its final stats (JSON):\n");
        fwrite(data, 1, len, stdout);
        free(data);
        return 0;
    }
    dp_error("%s", err.msg);
    return 1;
}
