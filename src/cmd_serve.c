/* distriproc serve: the page server on the source host. */
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "commands.h"
#include "key.h"
#include "pageserver.h"
#include "util.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: distriproc serve --images DIR --listen ADDR:PORT --key FILE [options]\n"
            "\n"
            "Serves the lazy memory of the CRIU checkpoint in DIR to authenticated clients\n"
            "and stores the pages they write back (DIR/distriproc-overlay.log, durable before\n"
            "acknowledged; replayed on restart). Stops cleanly on SIGTERM or SIGINT.\n"
            "\n"
            "  --images DIR          CRIU images directory (must be writable for write-backs)\n"
            "  --listen ADDR:PORT    address to listen on, e.g. 10.250.0.1:7070\n"
            "  --key FILE            pre-shared key (hex or raw, >= 16 bytes; see 'distriproc keygen')\n"
            "  --emulate-rtt USEC    delay every reply by USEC microseconds (emulates a slower link)\n"
            "  --access-log FILE     write the per-page access log as JSON at shutdown\n"
            "  --sendfile-min BYTES  send page-data runs of at least BYTES with sendfile(2), copy\n"
            "                        smaller ones (default 64K; see bench/results/README.md)\n"
            "  --insecure-plaintext  send frames after the handshake IN CLEAR (no encryption, no\n"
            "                        per-frame MAC: anyone on the path reads and rewrites pages);\n"
            "                        clients must say --insecure-plaintext too. Default: every\n"
            "                        frame is encrypted and authenticated (docs/protocol.md §3)\n"
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
        /* connection limits (lib/connlimit.h), parsed there */
        {"max-conns", required_argument, NULL, 'L'}, {"max-preauth", required_argument, NULL, 'L'},
        {"max-per-peer", required_argument, NULL, 'L'}, {"max-buffered", required_argument, NULL, 'L'},
        {"idle-timeout", required_argument, NULL, 'L'},
        {NULL, 0, NULL, 0},
    };
    static struct dp_server_opts o;
    const char *listen = NULL, *key = NULL;
    o.sendfile_min = 64 << 10;
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
        case 'v': dp_log_set_level(DP_LOG_DEBUG); break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!o.images_dir || !listen || !key || optind != argc) {
        fprintf(stderr, "distriproc serve: --images, --listen and --key are required\n\n");
        usage(stderr);
        return 2;
    }
    if (dp_parse_hostport(listen, &o.listen_addr) < 0) {
        fprintf(stderr, "distriproc serve: --listen wants IPV4:PORT such as 127.0.0.1:7070 (got '%s')\n", listen);
        return 2;
    }
    struct dp_err err = {{0}};
    if (dp_key_load(key, o.key, &o.key_len, &err) < 0) {
        dp_error("%s", err.msg);
        return 1;
    }
    int rc = dp_server_run(&o, &err);
    sodium_memzero(o.key, sizeof(o.key));
    if (rc < 0) {
        dp_error("%s", err.msg);
        return 1;
    }
    return 0;
}
