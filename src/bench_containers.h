/* Benchmarks of real runc containers (issue 10), src/bench_containers.c. Kept
 * apart from bench.h, which other work on the older benchmarks edits. */
#ifndef DP_BENCH_CONTAINERS_H
#define DP_BENCH_CONTAINERS_H

int bench_nginx(int argc, char **argv);
int bench_pg_ttfr(int argc, char **argv);

#endif
