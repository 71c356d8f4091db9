/* bench remote-fraction: throughput and P99 latency against the share of
 * the process's memory kept remote by a local memory budget (issue 6). The
 * orchestration (lab containers, local baseline, checkpoint, serve, one
 * restore --budget per fraction, the measuring client in dst) lives in
 * scripts/bench_remote_fraction.py of the same checkout; this entry point
 * finds it and hands over, passing the path of this binary. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "bench.h"
#include "util.h"

#define PYTHON "/usr/bin/python3"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: distriproc bench remote-fraction --workload redis|memwalk --json OUT [options]\n"
            "\n"
            "Runs the workload in a src container and measures it there (local execution, the\n"
            "baseline of the same run), checkpoints and serves it, then for each remote fraction\n"
            "f restores it on dst with --budget (100-f)%% of its lazy memory (f = 0: no budget),\n"
            "warms it up and measures throughput and P99 latency again. Redis: zipfian keys\n"
            "(0.99), 95/5 and 50/50 GET/SET, one request at a time; memwalk: zipf 0.99 over its\n"
            "pages, 2 threads, 5%% writes (ops/s only). Needs root, the lab and make deps.\n"
            "Plot with scripts/bench_report.py --remote-fraction OUT.\n"
            "\n"
            "  --workload W        redis or memwalk (required)\n"
            "  --json OUT          results (required)\n"
            "  --fractions LIST    remote percentages (default 0,10,30,50,70)\n"
            "  --seconds SEC       measured seconds per point and mix (default 20)\n"
            "  --warmup SEC        workload run before measuring each point (default 20)\n"
            "  --redis-mib N       Redis data (default 256)\n"
            "  --memwalk-mib N     memwalk footprint (default 256)\n"
            "  --prefetch POLICY   the daemon's prefetch (default none)\n"
            "  --lab NAME          run in a private lab NAME-src/NAME-dst (DISTRIPROC_LAB)\n"
            "  --workdir DIR       scratch (default /tmp/distriproc-bench-remote-fraction)\n");
}

int bench_remote_fraction(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--help") || !strcmp(argv[i], "-h")) {
            usage(stdout);
            return 0;
        }
    int has_json = 0;
    for (int i = 1; i < argc; i++)
        has_json |= !strcmp(argv[i], "--json");
    if (!has_json) {
        usage(stderr);
        return 2;
    }
    char self[PATH_MAX], script[PATH_MAX + 64];
    ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
    if (n <= 0) {
        dp_error("cannot find this binary (/proc/self/exe): %s", strerror(errno));
        return 1;
    }
    self[n] = '\0';
    /* build/distriproc -> scripts/bench_remote_fraction.py of the same checkout */
    char dir[PATH_MAX];
    snprintf(dir, sizeof(dir), "%s", self);
    char *slash = strrchr(dir, '/');
    if (slash)
        *slash = '\0';
    snprintf(script, sizeof(script), "%s/../scripts/bench_remote_fraction.py", dir);
    if (access(script, R_OK) != 0) {
        dp_error("%s is missing (%s): run the distriproc built in a checkout", script, strerror(errno));
        return 1;
    }
    if (access(PYTHON, X_OK) != 0) {
        dp_error("%s is missing: run make deps", PYTHON);
        return 1;
    }
    char **args = calloc((size_t)argc + 5, sizeof(*args));
    if (!args)
        dp_die("out of memory");
    int k = 0;
    args[k++] = PYTHON;
    args[k++] = script;
    args[k++] = "run";
    args[k++] = "--distriproc";
    args[k++] = self;
    for (int i = 1; i < argc; i++)
        args[k++] = argv[i];
    args[k] = NULL;
    fflush(NULL);
    execv(PYTHON, args);
    dp_error("cannot run %s: %s", PYTHON, strerror(errno));
    return 1;
}
