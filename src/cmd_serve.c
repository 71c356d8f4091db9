/* distriproc serve: the page server on the source host. */
#include <getopt.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <stdint.h>
#include <string.h>

#include <sodium.h>

#include "commands.h"
#include "key.h"
#include "metrics_http.h"
#include "pageserver.h"
#include "runc.h"
#include "serve_live.h"
#include "util.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: distriproc serve --images DIR --listen ADDR:PORT --key FILE [options]\n"
            "       distriproc serve --pid PID [--workdir DIR] --listen ADDR:PORT --key FILE [options]\n"
            "       distriproc serve --runc ID [--runc-root DIR] [--workdir DIR] --listen ... --key ...\n"
            "       distriproc serve --workdir DIR --listen ADDR:PORT --key FILE   (re-attach)\n"
            "\n"
            "Memory mode (--pid): freezes the tree of PID in a freezer cgroup, writes its\n"
            "skeleton with `criu dump --lazy-pages` into DIR/images (no page data), and serves\n"
            "its lazy memory straight from the frozen tree. The source is killed only after\n"
            "the destination reports its restore succeeded (commit), and resumes if the\n"
            "restore fails or no destination connects in time (rollback); the state is kept\n"
            "in DIR/live.state, and a serve restarted with the same --workdir carries on.\n"
            "--runc ID does the same for a runc container (cgroup v1): runc checkpoint\n"
            "--lazy-pages holds it in its own freezer cgroup; runc state says paused while\n"
            "it is held, running after a rollback; after the release serve runs runc delete.\n"
            "See docs/live-migration.md. fs.pipe-max-size is raised to 4 MiB while CRIU dumps\n"
            "(without CAP_SYS_RESOURCE) and put back right after.\n"
            "\n"
            "Serves the lazy memory of the CRIU checkpoint in DIR to authenticated clients\n"
            "and stores the pages they write back (DIR/distriproc-overlay.log, durable before\n"
            "acknowledged; replayed on restart). Stops cleanly on SIGTERM or SIGINT.\n"
            "\n"
            "  --images DIR          CRIU images directory (must be writable for write-backs)\n"
            "  --listen ADDR:PORT    address to listen on, e.g. 10.250.0.1:7070\n"
            "  --key FILE            pre-shared key written by 'distriproc keygen' (mode 0600, yours)\n"
            "  --emulate-rtt USEC    delay every reply by USEC microseconds (emulates a slower link)\n"
            "  --access-log FILE     write the per-page access log as JSON at shutdown\n"
            "  --sendfile-min BYTES  send page-data runs of at least BYTES with sendfile(2), copy\n"
            "                        smaller ones (default 64K; see bench/results/README.md)\n"
            "  --insecure-plaintext  send frames after the handshake IN CLEAR (no encryption, no\n"
            "                        per-frame MAC: anyone on the path reads and rewrites pages);\n"
            "                        clients must say --insecure-plaintext too. Default: every\n"
            "                        frame is encrypted and authenticated (docs/protocol.md §3)\n"
            "  --metrics ADDR:PORT   serve Prometheus metrics at http://ADDR:PORT/metrics (loopback\n"
            "                        only: the endpoint has no authentication; see docs/observability.md)\n"
            "  --metrics-allow-remote  allow a non-loopback --metrics address (a trusted network only)\n"
            "  --pid PID             memory mode: migrate the tree of PID (see above)\n"
            "  --runc ID             memory mode: migrate the runc container ID (see above)\n"
            "  --runc-root DIR       runc's state directory (runc --root; default runc's own)\n"
            "  --workdir DIR         memory mode: images, state and logs of this migration (default\n"
            "                        " DP_LIVE_DEFAULT_WORKDIR "/PID or .../runc-ID: `serve --pid PID`\n"
            "                        again re-attaches)\n"
            "  --connect-timeout SEC memory mode: roll back if no destination has connected and\n"
            "                        reported its restore within SEC seconds of the dump\n"
            "                        (default 60; 0 = wait forever)\n"
            "%s"
            "  -v, --verbose         debug logging\n", dp_connlimit_usage);
}

int cmd_serve(int argc, char **argv)
{
    static const struct option opts[] = {
        {"images", required_argument, NULL, 'i'},   {"listen", required_argument, NULL, 'l'},
        {"key", required_argument, NULL, 'k'},      {"emulate-rtt", required_argument, NULL, 'r'},
        {"access-log", required_argument, NULL, 'a'}, {"sendfile-min", required_argument, NULL, 's'},
        {"verbose", no_argument, NULL, 'v'},        {"help", no_argument, NULL, 'h'},
        {"insecure-plaintext", no_argument, NULL, 'P'},
        {"metrics", required_argument, NULL, 'M'},  {"metrics-allow-remote", no_argument, NULL, 'A'},
        {"pid", required_argument, NULL, 'p'},      {"workdir", required_argument, NULL, 'w'},
        {"connect-timeout", required_argument, NULL, 'T'},
        {"runc", required_argument, NULL, 'U'},     {"runc-root", required_argument, NULL, 'R'},
        /* connection limits (lib/connlimit.h), parsed there */
        {"max-conns", required_argument, NULL, 'L'}, {"max-preauth", required_argument, NULL, 'L'},
        {"max-per-peer", required_argument, NULL, 'L'}, {"max-buffered", required_argument, NULL, 'L'},
        {"idle-timeout", required_argument, NULL, 'L'}, {"handshake-timeout", required_argument, NULL, 'L'},
        {NULL, 0, NULL, 0},
    };
    static struct dp_server_opts o;
    const char *listen = NULL, *key = NULL, *metrics = NULL;
    int metrics_remote = 0;
    static struct sockaddr_in metrics_addr;
    o.sendfile_min = 64 << 10;
    struct serve_live_args live = {.connect_timeout_s = DP_LIVE_CONNECT_TIMEOUT_S};
    char *end;
    o.limits.idle_ns = DP_LIMIT_IDLE_S_DEFAULT * 1000000000ull;
    int c, li;
    struct dp_err lerr;
    while ((c = getopt_long(argc, argv, "hv", opts, &li)) != -1) {
        switch (c) {
        case 'L':
            if (dp_connlimit_parse_flag(&o.limits, opts[li].name, optarg, &lerr) < 0) {
                fprintf(stderr, "distriproc serve: %s\n", lerr.msg);
                return 2;
            }
            break;
        case 'i': o.images_dir = optarg; break;
        case 'l': listen = optarg; break;
        case 'k': key = optarg; break;
        case 'a': o.access_log_path = optarg; break;
        case 'r': {
            char *end;
            unsigned long long v = strtoull(optarg, &end, 10);
            if (*end || optarg[0] == '-' || v > 10000000ULL) {
                fprintf(stderr, "distriproc serve: --emulate-rtt takes microseconds, 0..10000000 (got '%s')\n", optarg);
                return 2;
            }
            o.emulate_rtt_us = v;
            break;
        }
        case 's':
            if (dp_parse_size(optarg, &o.sendfile_min) < 0) {
                fprintf(stderr, "distriproc serve: --sendfile-min takes a size such as 4096 or 64K (got '%s')\n", optarg);
                return 2;
            }
            break;
        case 'P': o.insecure_plaintext = true; break;
        case 'M': metrics = optarg; break;
        case 'A': metrics_remote = 1; break;
        case 'p': {
            long v = strtol(optarg, &end, 10);
            if (*end || v <= 0 || v > INT32_MAX) {
                fprintf(stderr, "distriproc serve: --pid takes a process id (got '%s')\n", optarg);
                return 2;
            }
            live.pid = (pid_t)v;
            break;
        }
        case 'w': live.workdir = optarg; break;
        case 'U': live.runc_id = optarg; break;
        case 'R': live.runc_root = optarg; break;
        case 'T':
            live.connect_timeout_s = strtod(optarg, &end);
            if (*end || !(live.connect_timeout_s >= 0) || live.connect_timeout_s > 86400) {
                fprintf(stderr, "distriproc serve: --connect-timeout takes seconds, 0..86400 (got '%s')\n", optarg);
                return 2;
            }
            break;
        case 'v': dp_log_set_level(DP_LOG_DEBUG); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if ((live.pid && live.runc_id) || (live.runc_root && !live.runc_id)) {
        fprintf(stderr, "distriproc serve: --pid or --runc ID, not both; --runc-root goes with --runc\n\n");
        usage(stderr);
        return 2;
    }
    if (live.runc_id && !dp_runc_id_ok(live.runc_id)) {
        fprintf(stderr, "distriproc serve: --runc '%s' is not a container ID runc accepts (letters, digits, _ + . -)\n",
                live.runc_id);
        return 2;
    }
    static char default_workdir[PATH_MAX];
    if ((live.pid || live.runc_id) && !live.workdir) {
        if (live.runc_id)
            snprintf(default_workdir, sizeof(default_workdir), DP_LIVE_DEFAULT_WORKDIR "/runc-%.200s", live.runc_id);
        else
            snprintf(default_workdir, sizeof(default_workdir), DP_LIVE_DEFAULT_WORKDIR "/%d", (int)live.pid);
        live.workdir = default_workdir;
    }
    if ((live.pid || live.workdir) && o.images_dir) {
        fprintf(stderr, "distriproc serve: --pid, --runc and --workdir are memory mode; --images goes without them\n\n");
        usage(stderr);
        return 2;
    }
    if ((!o.images_dir && !live.workdir) || !listen || !key || optind != argc) {
        fprintf(stderr, "distriproc serve: --images (or --pid and --workdir), --listen and --key are required\n\n");
        usage(stderr);
        return 2;
    }
    if (dp_parse_hostport(listen, &o.listen_addr) < 0) {
        fprintf(stderr, "distriproc serve: --listen wants IPV4:PORT such as 127.0.0.1:7070 (got '%s')\n", listen);
        return 2;
    }
    struct dp_err err = {{0}};
    if (metrics && dp_metrics_addr_parse(metrics, metrics_remote, &metrics_addr, &err) < 0) {
        fprintf(stderr, "distriproc serve: %s\n", err.msg);
        return 2;
    }
    o.metrics_addr = metrics ? &metrics_addr : NULL;
    if (dp_key_load(key, o.key, &o.key_len, &err) < 0) {
        dp_error("%s", err.msg);
        return 1;
    }
    if (live.workdir) {
        int lrc = dp_serve_live(&live, &o);
        sodium_memzero(o.key, sizeof(o.key));
        return lrc;
    }
    int rc = dp_server_run(&o, &err);
    sodium_memzero(o.key, sizeof(o.key));
    if (rc < 0) {
        dp_error("%s", err.msg);
        return 1;
    }
    return 0;
}
