/* distriproc stats: what the lazy-pages daemon of a restore has done so far,
 * read over its control socket (WORKDIR/control.sock). */
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
            "usage: distriproc stats --workdir DIR [--json] [--evict-helpers off|on]\n"
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
            "  --json          machine-readable output\n"
            "  --evict-helpers off|on\n"
            "                  (restore --budget) off: remove the eviction helper thread, its\n"
            "                  memory and descriptors from every restored task, before a\n"
            "                  checkpoint of the running tree; evictions then stop the threads.\n"
            "                  on: install them again. Prints one JSON line (removed, failed,\n"
            "                  running) instead of the stats; exit 1 if any removal failed.\n");
}

/* --evict-helpers: the daemon's reply as is; good only if it names no
 * error and no removal failed. */
static int evict_helpers(const char *workdir, const char *onoff)
{
    char cmd[32];
    snprintf(cmd, sizeof(cmd), "evict-helpers %s", onoff);
    struct dp_err err = {{0}};
    char *reply = dp_lazyd_control(workdir, cmd, &err);
    if (!reply) {
        dp_error("%s", err.msg);
        return 1;
    }
    fputs(reply, stdout);
    json_t *r = json_loads(reply, 0, NULL), *failed = json_object_get(r, "failed");
    int bad = !json_is_object(r) || json_object_get(r, "error") || !json_is_integer(failed) ||
              json_integer_value(failed) != 0;
    json_decref(r);
    free(reply);
    return bad ? 1 : 0;
}

int cmd_stats(int argc, char **argv)
{
    static const struct option opts[] = {
        {"workdir", required_argument, NULL, 'w'}, {"json", no_argument, NULL, 'j'},
        {"evict-helpers", required_argument, NULL, 'e'}, {"help", no_argument, NULL, 'h'},
        {NULL, 0, NULL, 0},
    };
    const char *workdir = NULL, *helpers = NULL;
    int json = 0, c;
    while ((c = getopt_long(argc, argv, "h", opts, NULL)) != -1) {
        switch (c) {
        case 'w': workdir = optarg; break;
        case 'j': json = 1; break;
        case 'e':
            if (strcmp(optarg, "off") && strcmp(optarg, "on")) {
                fprintf(stderr, "distriproc stats: --evict-helpers takes off or on (got '%s')\n\n", optarg);
                usage(stderr);
                return 2;
            }
            helpers = optarg;
            break;
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
    if (helpers)
        return evict_helpers(workdir, helpers);
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
