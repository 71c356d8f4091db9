/* bench prefetch: one pass of memwalk over its memory right after a lazy
 * restore, per prefetch policy, for access patterns whose faults interleave
 * (several walker threads in order; a value stream behind random table
 * probes), against the local pass and the link's floor of the same run. The
 * orchestration lives in scripts/bench_prefetch.py of the same checkout; this
 * entry point finds it and hands over, passing the path of this binary. */
#include <stdio.h>

#include "bench.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: distriproc bench prefetch --json OUT [options]\n"
            "\n"
            "Starts memwalk in a src container and times one pass over its memory there (the\n"
            "local baseline of the same run), checkpoints and serves it, then per repetition\n"
            "and prefetch policy restores it lazily on dst and times one pass from the first\n"
            "request on, with memwalk's own timer. Patterns: seq (each thread walks its own\n"
            "part in order: interleaved streams) and probe:P (a random page of the first P%%\n"
            "before each next page of the rest) against uniform (random pages: where a\n"
            "prefetch policy must cost nothing). Reports the median pass, MB/s, ratios to\n"
            "local, to the link floor (the bytes at --bandwidth) and to prefetch none, and\n"
            "the remote faults. Needs root, the lab and make deps.\n"
            "\n"
            "  --json OUT          results (required)\n"
            "  --mib N             memwalk footprint (default 256)\n"
            "  --threads T         memwalk walker threads (default 4)\n"
            "  --patterns LIST     memwalk patterns (default seq,probe:10,uniform)\n"
            "  --policies LIST     prefetch policies (default none,auto,streams)\n"
            "  --bandwidth RATE    tbf cap on the lab link (default 1gbit)\n"
            "  --repeat N          passes per policy, medians reported (default 3)\n"
            "  --budget SIZE       restore --budget (e.g. 30%%): the pass streams through a\n"
            "                      local memory budget (default none); reports the pages the\n"
            "                      pass moved over the link against the pages it needed\n"
            "  --lab NAME          run in a private lab NAME-src/NAME-dst (DISTRIPROC_LAB)\n"
            "  --workdir DIR       scratch (default /tmp/distriproc-bench-prefetch)\n");
}

int bench_prefetch(int argc, char **argv)
{
    return bench_exec_script("bench_prefetch.py", argc, argv, usage);
}
