/* Benchmarks run by `distriproc bench NAME`; each is int bench_NAME(argc, argv)
 * with argv[0] the benchmark name. Register new ones in src/cmd_bench.c. */
#ifndef DP_BENCH_H
#define DP_BENCH_H

int bench_server(int argc, char **argv);
int bench_ttfr(int argc, char **argv);
int bench_faults(int argc, char **argv);
int bench_warmup(int argc, char **argv);

#endif
