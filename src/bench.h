/* Benchmarks run by `distriproc bench NAME`; each is int bench_NAME(argc, argv)
 * with argv[0] the benchmark name. Register new ones in src/cmd_bench.c. */
#ifndef DP_BENCH_H
#define DP_BENCH_H

#include <stdio.h>

int bench_server(int argc, char **argv);
int bench_ttfr(int argc, char **argv);
int bench_faults(int argc, char **argv);
int bench_warmup(int argc, char **argv);
int bench_remote_fraction(int argc, char **argv);

/* Runs scripts/SCRIPT_NAME of this checkout with "run --distriproc SELF" and
 * the benchmark's arguments (which must include --json); --help prints usage. */
int bench_exec_script(const char *script_name, int argc, char **argv, void (*usage)(FILE *out));

#endif
