/* distriproc: process-level remote paging. Dispatches to one subcommand. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "commands.h"
#include "util.h"

struct command {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
};

static const struct command commands[] = {
    /* Registered as they land; see src/commands.h. */
    {"lab", cmd_lab, "the two-host lab: up, down, status, exec HOST [--container] -- CMD, cluster up|down"},
    {"checkpoint", cmd_checkpoint, "dump a process tree with CRIU and report what it dumped"},
    {"images", cmd_images, "inspect a CRIU images directory; plan or write its skeleton"},
    {"serve", cmd_serve, "serve a checkpoint's memory to destinations (page server)"},
    {"query", cmd_query, "ask a page server for stats, access log, task map, skeleton or pages"},
    {"bench", cmd_bench, "benchmarks against raw baselines, JSON out: server, ttfr, faults, warmup, remote-fraction"},
    {"hotset", cmd_hotset, "inspect, check, merge and compare hot sets (working sets of a checkpoint)"},
    {"keygen", cmd_keygen, "create a pre-shared key file for serve/restore"},
    {"bundle", cmd_bundle, "write an OCI bundle (config.json, optionally a host rootfs) for a runc container"},
    {"restore", cmd_restore, "restore lazily: run now, fetch each page when first touched"},
    {"lazy-pages", cmd_lazypages, "the lazy-pages daemon alone, for runc/podman restores you run yourself"},
    {"stats", cmd_stats, "fault, fetch, prefetch and latency stats of a lazy restore"},
    {"sync", cmd_sync, "write back every page a restored process modified (restore --budget)"},
    {"container-net", cmd_cnet, "wire a container's own network namespace to a lab host (a runc hook)"},
    {"uffd-window", cmd_uffdwin, "run a lazy restore of a user-namespaced container with userfaultfd allowed to it"},
    {"migrate", cmd_migrate, "lab: checkpoint on src, serve, restore lazily on dst, probe (time to first reply)"},
    {NULL, NULL, NULL},
};

static void usage(FILE *out)
{
    fprintf(out,
            "usage: distriproc [--log-format text|logfmt|json] COMMAND [OPTIONS]\n"
            "\n"
            "Run a process tree on one host while its memory stays on another.\n"
            "\n"
            "Commands:\n");
    for (const struct command *c = commands; c->name; c++)
        fprintf(out, "  %-13s  %s\n", c->name, c->summary);
    fprintf(out, "\nRun 'distriproc COMMAND --help' for the options of a command.\n");
}

/* `distriproc --log-format FMT COMMAND ...` (or DISTRIPROC_LOG_FORMAT=FMT):
 * the form of every log line, for this process and, through the
 * environment, the distriproc processes it starts (docs/observability.md).
 * Returns how many arguments it took, or -1 after an error message. */
static int log_format_option(int argc, char **argv)
{
    const char *fmt = NULL;
    int used = 0;
    if (argc > 1 && strncmp(argv[1], "--log-format=", 13) == 0)
        fmt = argv[1] + 13, used = 1;
    else if (argc > 1 && strcmp(argv[1], "--log-format") == 0)
        fmt = argc > 2 ? argv[2] : "", used = 2;
    const char *env = getenv("DISTRIPROC_LOG_FORMAT");
    if (!fmt && env && *env)
        fmt = env;
    if (!fmt)
        return 0;
    if (dp_log_set_format(fmt) < 0) {
        fprintf(stderr, "distriproc: %s takes text, logfmt or json (got '%s'); e.g. distriproc --log-format "
                "json serve ...\n", used ? "--log-format" : "DISTRIPROC_LOG_FORMAT", fmt);
        return -1;
    }
    setenv("DISTRIPROC_LOG_FORMAT", fmt, 1);
    return used;
}

int main(int argc, char **argv)
{
    int used = log_format_option(argc, argv);
    if (used < 0)
        return 2;
    argc -= used;
    argv += used;
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "help") == 0) {
        usage(stdout);
        return 0;
    }
    for (const struct command *c = commands; c->name; c++) {
        if (strcmp(argv[1], c->name) == 0) {
            static char tag[64];
            snprintf(tag, sizeof(tag), "distriproc %s", c->name);
            dp_log_set_tag(tag);
            return c->run(argc - 1, argv + 1);
        }
    }
    fprintf(stderr, "distriproc: unknown command '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
