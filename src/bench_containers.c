/* bench nginx and bench pg-ttfr: benchmarks of real runc containers (the
 * rootfs of scripts/rootfs.sh, user-namespaced, wired to the lab by the
 * container-net hook). Their orchestration lives in scripts/bench_nginx.py
 * and scripts/bench_pg_ttfr.py of the same checkout (harness:
 * scripts/bench_containers_lab.py); these entry points print the usage and
 * hand over, passing the path of this binary. */
#include <stdio.h>

#include "bench.h"
#include "bench_containers.h"

/* ---- bench nginx --------------------------------------------------------- */

/* Why the usage says what is remote: NGINX normally sends files from the page
 * cache, which no checkpoint moves; here the content is NGINX's own memory. */
static void nginx_usage(FILE *out)
{
    fprintf(out,
            "usage: distriproc bench nginx --json OUT [options]\n"
            "\n"
            "NGINX in a user-namespaced runc container (make rootfs) serves --objects-mib of\n"
            "4000-byte objects held in its own memory (values of a 'map $uri' in its\n"
            "configuration, parsed into its heap: not files, whose pages live in the kernel's page\n"
            "cache and are not process memory). wrk (1 thread, zipf 0.99) measures it on src\n"
            "(local baseline), then after 'runc checkpoint --leave-running', for each remote\n"
            "fraction f, restored lazily on dst by DistriProc's lazy-pages daemon: f = 0 without\n"
            "a budget (its resident memory is the working set W), f > 0 with --budget (100-f)%%\n"
            "of W; then on src again. Every measurement gets the same warm-up.\n"
            "Needs root, make deps and make rootfs. Report: scripts/bench_containers_report.py.\n"
            "\n"
            "  --json OUT          results (required)\n"
            "  --fractions LIST    remote percentages of W, 0 first (default 0,10,30,50,70)\n"
            "  --seconds SEC       measured seconds per point (default 20)\n"
            "  --warmup SEC        the same load before every measurement (default 20)\n"
            "  --objects-mib N     content held by NGINX (default 256)\n"
            "  --connections N     wrk connections (default 4)\n"
            "  --workers N         0: one process (master_process off; default); N: master + N workers\n"
            "  --prefetch POLICY   the daemon's prefetch (default none)\n"
            "  --bandwidth RATE    cap of the lab link (default 1gbit; 'none')\n"
            "  --lab NAME          lab NAME-src/NAME-dst (default $DISTRIPROC_LAB or dp)\n"
            "  --workdir DIR       scratch (default /tmp/distriproc-bench-nginx)\n");
}

int bench_nginx(int argc, char **argv)
{
    return bench_exec_script("bench_nginx.py", argc, argv, nginx_usage);
}

/* ---- bench pg-ttfr --------------------------------------------------------- */

/* Why the usage names shared memory: CRIU restores it eagerly, which bounds
 * what a lazy restore can save for PostgreSQL. */
static void pg_ttfr_usage(FILE *out)
{
    fprintf(out,
            "usage: distriproc bench pg-ttfr --json OUT [options]\n"
            "\n"
            "Time to the first correct query of PostgreSQL 15 (user-namespaced runc container,\n"
            "make rootfs) migrated from lab host src to dst, from the start of the restore and\n"
            "from the freeze: DistriProc (runc checkpoint + distriproc serve + lazy-pages daemon +\n"
            "runc restore --lazy-pages) against runc checkpoint + copy of the images over the lab\n"
            "link + runc restore, and the local floor (the probe against the running source).\n"
            "A table of --table-mib is loaded and pg_prewarm'ed into shared_buffers (shared\n"
            "memory, which CRIU restores eagerly in both systems). The probe, one for all\n"
            "systems, queries over the wire protocol every --interval-ms until the answer equals\n"
            "the digest the source gave. Needs root, make deps and make rootfs.\n"
            "\n"
            "  --json OUT          results (required)\n"
            "  --runs N            runs per system (default 3)\n"
            "  --table-mib N       table size (default 200); shared_buffers is N + 56 MiB\n"
            "  --interval-ms MS    probe cadence (default 5)\n"
            "  --bandwidth RATE    cap of the lab link (default 1gbit; 'none')\n"
            "  --lab NAME          lab NAME-src/NAME-dst (default $DISTRIPROC_LAB or dp)\n"
            "  --workdir DIR       scratch (default /tmp/distriproc-bench-pg-ttfr)\n");
}

int bench_pg_ttfr(int argc, char **argv)
{
    return bench_exec_script("bench_pg_ttfr.py", argc, argv, pg_ttfr_usage);
}
