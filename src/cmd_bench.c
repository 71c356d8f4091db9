/* distriproc bench: benchmarks, one subcommand each (src/bench_*.c). */
#include <stdio.h>
#include <string.h>

#include "bench.h"
#include "bench_containers.h"
#include "commands.h"

static const struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} benches[] = {
    {"server", bench_server, "page server: 4 KiB GET latency and bulk GET throughput against raw TCP"},
    {"ttfr", bench_ttfr, "time to first reply of a migrated Redis: DistriProc vs CRIU full/lazy vs local"},
    {"faults", bench_faults, "fault latency (local floor, raw TCP, remote) and scan throughput per prefetch policy"},
    {"remote-fraction", bench_remote_fraction, "throughput and P99 vs the share of memory kept remote by --budget"},
    {"prefetch", bench_prefetch, "one memwalk pass after a lazy restore per prefetch policy, interleaved streams"},
    {"nginx", bench_nginx, "NGINX in a runc container: wrk throughput and P99 vs remote fraction (budget)"},
    {"pg-ttfr", bench_pg_ttfr, "PostgreSQL in a runc container: time to first correct query, lazy vs runc full"},
    {"fanout", bench_fanout, "restore fan-out of N destinations from one checkpoint in the Redis Cluster"},
    {"warmup", bench_warmup, "time to 90% of steady throughput with and without hot-set replay; hot-set accuracy"},
};

static void usage(FILE *out)
{
    fprintf(out, "usage: distriproc bench BENCHMARK [OPTIONS]\n\nBenchmarks:\n");
    for (size_t i = 0; i < sizeof(benches) / sizeof(benches[0]); i++)
        fprintf(out, "  %-16s %s\n", benches[i].name, benches[i].summary);
    fprintf(out, "\nRun 'distriproc bench BENCHMARK --help' for its options.\n");
}

int cmd_bench(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    for (size_t i = 0; i < sizeof(benches) / sizeof(benches[0]); i++)
        if (strcmp(argv[1], benches[i].name) == 0)
            return benches[i].run(argc - 1, argv + 1);
    fprintf(stderr, "distriproc bench: unknown benchmark '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
