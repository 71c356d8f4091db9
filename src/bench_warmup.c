/* bench warmup: time from a lazy restore to 90% of steady throughput, with
 * and without replaying the recorded working set, and the accuracy of hot
 * sets (issue 7). The orchestration (lab containers, checkpoint --classify,
 * serve, three restores, the measuring client in dst) lives in
 * scripts/bench_warmup.py of the same checkout; this entry point finds it,
 * checks the basics and hands over, passing the path of this binary so the
 * script drives exactly this build. */
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
            "usage: distriproc bench warmup --json OUT [options]\n"
            "\n"
            "For Redis (reads on a tenth of its keys) and ResNet-50 inference (tools/ml_infer.py):\n"
            "checkpoint on src with --classify, serve it, then restore on dst three times:\n"
            "A and B record their first-touch traces, C replays A's trace. Reports hot-set\n"
            "precision and recall (A's trace and the classification against B's trace, the\n"
            "pages the next run touches), the time from the start of the restore to 90%% of\n"
            "steady throughput without (A, B, N*) and with (C*) replay, and the replay's hit\n"
            "rate, measured in runs S* that replay with --hotset-mode stage (every use of a\n"
            "replayed page is seen). Needs root, the lab, make deps (and make deps-ml for the\n"
            "ML workload).\n"
            "\n"
            "  --json OUT          results (required)\n"
            "  --workloads LIST    redis,ml (default both)\n"
            "  --redis-mib N       Redis data (default 256)\n"
            "  --fraction F        share of keys read (default 0.1)\n"
            "  --ml-size PX        image side (default 112: the same 98 MiB of weights, faster)\n"
            "  --classify SEC      Referenced sampling before the dump (default 5)\n"
            "  --record SEC        trace window of runs A and B (default 10)\n"
            "  --seconds SEC       measured seconds per run (default 20)\n"
            "  --prefetch POLICY   the daemon's prefetch in every run (default none)\n"
            "  --repeat N          pairs of runs without/with replay (default 3: A+B/C, N2/C2, N3/C3)\n"
            "  --stage-runs N      replays with --hotset-mode stage measuring the hit rate (default 3)\n"
            "  --lab NAME          run in a private lab NAME-src/NAME-dst (DISTRIPROC_LAB), so\n"
            "                      tests that bring the default lab up and down do not interfere\n"
            "  --workdir DIR       scratch (default /tmp/distriproc-bench-warmup)\n"
            "  --push              the warm-up after a migration instead (issue 16): see\n"
            "                      distriproc bench warmup --push --help\n");
}

/* --push: the warm-up after a migration (issue 16), scripts/bench_warmup_push.py. */
static void usage_push(FILE *out)
{
    fprintf(out,
            "usage: distriproc bench warmup --push --json OUT [options]\n"
            "\n"
            "Back to full speed after a migration with the warm-up (restore --warmup, issue 16):\n"
            "for Redis (random GETs over all keys, redis-benchmark -t get -r K -P 16 -c 8), a\n"
            "sequential scan (memwalk --pattern seq, like ML weights) and a skewed one (memwalk\n"
            "--pattern zipf:0.99): local throughput on src, checkpoint, serve, then restore on\n"
            "dst with --prefetch auto and each --warmup mode. Reports throughput over the first\n"
            "full pass as a share of local, time from the restore to 90%% of local against the\n"
            "link time of the lazy memory, and the fault p50 during the warm-up against the\n"
            "run without warm-up. All ratios within the run. Needs root and the lab.\n"
            "\n"
            "  --json OUT          results (required)\n"
            "  --workloads LIST    redis,seq,zipf (default all three); idle: the warm-up alone\n"
            "                      (memwalk parked): its rate and the CPU per MiB it costs\n"
            "  --modes LIST        warm-up modes, one restore each, in order (default none,all);\n"
            "                      all-shared: all with the warm-up on the faults' connection\n"
            "                      (DISTRIPROC_WARMUP_LANE=shared) instead of its own; a mode\n"
            "                      listed twice (A/B/A/B) is summarized by its median\n"
            "  --mib N             size of each workload's data (default 128)\n"
            "  --value-size B      Redis value size (default 1000)\n"
            "  --bandwidth RATE    the lab link's cap (default 1gbit)\n"
            "  --link-qdisc Q      under the cap: fifo (tbf's own, default), pfifo_fast (3 priority\n"
            "                      bands: the warm-up's connection in the last), fq or fq_codel\n"
            "                      (flow-fair, what Linux hosts run; needs sch_fq/sch_fq_codel)\n"
            "  --max-seconds SEC   bound of each measured run (default 60)\n"
            "  --lab NAME          a private lab NAME-src/NAME-dst\n"
            "  --workdir DIR       scratch (default /tmp/distriproc-bench-push)\n");
}

int bench_warmup(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--push"))
            return bench_exec_script("bench_warmup_push.py", argc, argv, usage_push);
    return bench_exec_script("bench_warmup.py", argc, argv, usage);
}
