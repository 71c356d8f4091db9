/* Benchmarks run by `distriproc bench NAME`; each is int bench_NAME(argc, argv)
 * with argv[0] the benchmark name. Register new ones in src/cmd_bench.c. */
#ifndef DP_BENCH_H
#define DP_BENCH_H

#include <stdint.h>
#include <stdio.h>
#include <netinet/in.h>

int bench_server(int argc, char **argv);
int bench_ttfr(int argc, char **argv);
int bench_faults(int argc, char **argv);
int bench_warmup(int argc, char **argv);
int bench_remote_fraction(int argc, char **argv);
int bench_prefetch(int argc, char **argv);

/* Runs scripts/SCRIPT_NAME of this checkout with "run --distriproc SELF" and
 * the benchmark's arguments (which must include --json); --help prints usage. */
int bench_exec_script(const char *script_name, int argc, char **argv, void (*usage)(FILE *out));

/* The raw TCP baseline (src/bench_raw.c). A connection's first byte picks
 * the mode: 'L' request/response (BENCH_RAW_REQ bytes in, BENCH_RAW_REPLY
 * out: the wire sizes of a 1-page GET and its reply), 'S' a stream of the
 * 8-byte length that follows (BENCH_RAW_ENDLESS: until the reader closes),
 * 'Q' stops the server. rtt_us delays every reply, as --emulate-rtt does. */
#define BENCH_RAW_REQ     48
#define BENCH_RAW_REPLY   (4096 + 24 + 8 + 24)
#define BENCH_RAW_ENDLESS UINT64_MAX
int bench_raw_listen(const char *ip, int port);     /* -1 with errno */
void bench_raw_serve(int lfd, uint64_t rtt_us);     /* returns on 'Q' */
int bench_raw_connect(const struct sockaddr_in *sa, char mode, uint64_t stream_len); /* retries 4 s */
int64_t bench_raw_roundtrip_ns(int fd);             /* one 'L' exchange, -1 on error */

/* Shared lab helpers (src/bench_lab.c). */
/* One command line to a workload at addr:port from inside netns (a name
 * under /run/netns or a path); its reply line into out. The round trip in
 * seconds, or -1. */
double bench_line_cmd(const char *netns, const char *addr, int port, const char *cmd, char *out, size_t len,
                      double timeout_s);
/* `distriproc lab cluster up`: seed_url gets rediss://SEED, ca and pass the
 * cluster's CA and password files. */
int bench_cluster_up(const char *self, char *seed_url, size_t len, char *ca, size_t calen, char *pass,
                     size_t passlen);
/* "distriproc bench NAME ARGS..." as run (argv[0] = NAME), for the JSON. */
void bench_cmdline(int argc, char **argv, char *buf, size_t len);
int bench_fanout(int argc, char **argv);

#endif
