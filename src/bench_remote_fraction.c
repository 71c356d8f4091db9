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

static void usage(FILE *out)
{
    fprintf(out,
            "usage: distriproc bench remote-fraction --workload redis|memwalk --json OUT [options]\n"
            "\n"
            "Runs the workload in a src container, warms it up as every point is warmed up and\n"
            "measures it there (local execution, the baseline of the same run), checkpoints and\n"
            "serves it, then for each remote fraction f restores it on dst with --budget\n"
            "(100-f)%% of its lazy memory (f = 0: no budget), warms it up and measures throughput\n"
            "and P99 latency again; at the end it measures the local baseline once more (the\n"
            "drift between the two is the run's noise floor). Redis: zipfian keys\n"
            "(0.99), 95/5 and 50/50 GET/SET, one request at a time; memwalk: zipf 0.99 over its\n"
            "pages (or --memwalk-pattern), 2 threads, 5%% writes (ops/s only), and per point the\n"
            "analytic bound: local time per operation plus the measured miss rate times the\n"
            "fault cost of the same run (its 0%% point), with bound / measured. Needs root, the\n"
            "lab and make deps.\n"
            "Plot with scripts/bench_report.py --remote-fraction OUT.\n"
            "\n"
            "  --workload W        redis or memwalk (required)\n"
            "  --json OUT          results (required)\n"
            "  --fractions LIST    remote percentages (default 0,10,30,50,70)\n"
            "  --seconds SEC       measured seconds per point and mix (default 20)\n"
            "  --warmup SEC        workload run before measuring each point and each local\n"
            "                      baseline (default 20)\n"
            "  --redis-mib N       Redis data (default 256)\n"
            "  --memwalk-mib N     memwalk footprint (default 256)\n"
            "  --memwalk-pattern P memwalk's access pattern, e.g. uniform (default zipf:0.99)\n"
            "  --prefetch POLICY   the daemon's prefetch (default none)\n"
            "  --paired            measure the local baseline again before every point and\n"
            "                      compare each point with the baselines around it\n"
            "  --lab NAME          run in a private lab NAME-src/NAME-dst (DISTRIPROC_LAB)\n"
            "  --workdir DIR       scratch (default /tmp/distriproc-bench-remote-fraction)\n");
}

int bench_remote_fraction(int argc, char **argv)
{
    return bench_exec_script("bench_remote_fraction.py", argc, argv, usage);
}
