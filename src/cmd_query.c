/* distriproc query: asks a page server for its stats, access log, task map,
 * skeleton or pages, through the client library (lib/client.h). */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <jansson.h>
#include <sodium.h>

#include "client.h"
#include "jsonout.h"
#include "netbound.h"
#include "proto_hotset.h"
#include "commands.h"
#include "util.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: distriproc query --source ADDR:PORT --key FILE [--timeout MS] WHAT\n"
            "\n"
            "WHAT is one of:\n"
            "  stats                      server statistics (JSON)\n"
            "  access-log                 per-page access log (JSON)\n"
            "  task-map                   tasks and their lazy ranges (JSON)\n"
            "  skeleton DIR               download the images without lazy page data into DIR\n"
            "  get PID ADDR COUNT [OUT]   fetch COUNT pages at ADDR (hex ok); writes them to OUT\n"
            "                             (or prints a summary); --repeat N fetches N times\n"
            "  put PID ADDR FILE          write FILE (whole pages) back at ADDR, durably\n"
            "  hotset KIND OUT            the checkpoint's hot set (auto|classify|trace|merged),\n"
            "                             checked by the server, into OUT (check it again with\n"
            "                             'distriproc hotset check' against the skeleton)\n"
            "  put-trace FILE             upload a recorded fault trace (a hot-set file of source\n"
            "                             trace); the server refuses one of another checkpoint\n"
            "\n"
            "The client reconnects with backoff while the server is down (up to --timeout).\n"
            "Every frame is encrypted and authenticated; --insecure-plaintext talks to a server\n"
            "started with --insecure-plaintext (frames in clear: use only on a trusted link).\n"
            "\n"
            "Bounds on the link (docs/lazyd.md, \"Bounded failures\"):\n%s", dp_netbound_usage);
}

/* The task map as {"tasks": [{"pid", "ppid", "lazy": [[start, end], ...]}]},
 * addresses as "0x..." strings; NULL if out of memory. */
static json_t *task_map_json(const struct dp_task_map *m)
{
    json_t *tasks = json_array();
    for (uint32_t i = 0; tasks && i < m->nr_tasks; i++) {
        json_t *lazy = json_array();
        for (uint32_t r = 0; lazy && r < m->tasks[i].nr_ranges; r++) {
            char a[24], b[24];
            if (json_array_append_new(lazy, json_pack("[s, s]", dp_json_hex(a, sizeof(a), m->tasks[i].ranges[r].start),
                                                      dp_json_hex(b, sizeof(b), m->tasks[i].ranges[r].end))) < 0) {
                json_decref(lazy);
                lazy = NULL;
            }
        }
        if (!lazy || json_array_append_new(tasks, json_pack("{s:i, s:i, s:o}", "pid", m->tasks[i].pid, "ppid",
                                                              m->tasks[i].ppid, "lazy", lazy)) < 0) {
            json_decref(tasks);
            return NULL;
        }
    }
    return tasks ? json_pack("{s:o}", "tasks", tasks) : NULL;
}

static int do_get(struct dp_client *c, int argc, char **argv, int repeat, int timeout, struct dp_err *err)
{
    if (argc < 3) {
        usage(stderr);
        return 2;
    }
    struct dp_get_range r = {.pid = atoi(argv[0]), .addr = strtoull(argv[1], NULL, 0),
                             .count = (uint32_t)strtoul(argv[2], NULL, 0)};
    if (r.count == 0 || r.count > DP_MAX_GET_PAGES) {
        fprintf(stderr, "distriproc query: COUNT must be 1..%u\n", DP_MAX_GET_PAGES);
        return 2;
    }
    uint8_t *buf = malloc((size_t)r.count * DP_PAGE_SIZE), *kinds = malloc(r.count);
    if (!buf || !kinds)
        dp_die("out of memory");
    for (int i = 0; i < repeat; i++) {
        if (dp_client_get_pages(c, &r, 1, buf, kinds, timeout, err) < 0) {
            dp_error("get %d 0x%" PRIx64 " %u failed (round %d): %s", r.pid, r.addr, r.count, i, err->msg);
            return 1;
        }
        if (repeat > 1)
            usleep(10000);
    }
    uint32_t data = 0, zero = 0;
    for (uint32_t i = 0; i < r.count; i++)
        kinds[i] == DP_SEG_DATA ? data++ : zero++;
    if (argc >= 4) {
        FILE *f = fopen(argv[3], "wb");
        if (!f || fwrite(buf, DP_PAGE_SIZE, r.count, f) != r.count || fclose(f) != 0) {
            dp_error("cannot write %s: %s", argv[3], strerror(errno));
            return 1;
        }
    }
    unsigned char hash[32];
    crypto_generichash(hash, sizeof(hash), buf, (size_t)r.count * DP_PAGE_SIZE, NULL, 0);
    char hex[65];
    sodium_bin2hex(hex, sizeof(hex), hash, sizeof(hash));
    char addr[24];
    int rc = dp_json_print(json_pack("{s:i, s:s, s:I, s:I, s:I, s:i, s:s}", "pid", r.pid, "addr",
                                     dp_json_hex(addr, sizeof(addr), r.addr), "pages", (json_int_t)r.count, "data",
                                     (json_int_t)data, "zero", (json_int_t)zero, "rounds", repeat, "blake2b", hex),
                           0);
    free(buf);
    free(kinds);
    return rc < 0 ? 1 : 0;
}

static int do_put(struct dp_client *c, int argc, char **argv, int timeout, struct dp_err *err)
{
    if (argc < 3) {
        usage(stderr);
        return 2;
    }
    uint8_t *data;
    size_t len;
    if (dp_read_file(argv[2], &data, &len, err) < 0) {
        dp_error("%s", err->msg);
        return 1;
    }
    if (len == 0 || len % DP_PAGE_SIZE) {
        dp_error("%s is %zu bytes; a PUT takes whole 4096-byte pages", argv[2], len);
        return 1;
    }
    int32_t pid = atoi(argv[0]);
    uint64_t addr = strtoull(argv[1], NULL, 0);
    if (dp_client_put_pages(c, pid, addr, (uint32_t)(len / DP_PAGE_SIZE), data, timeout, err) < 0) {
        dp_error("put failed: %s", err->msg);
        free(data);
        return 1;
    }
    char at[24];
    int rc = dp_json_print(json_pack("{s:i, s:s, s:I, s:b}", "pid", pid, "addr", dp_json_hex(at, sizeof(at), addr),
                                     "pages", (json_int_t)(len / DP_PAGE_SIZE), "durable", 1),
                           0);
    free(data);
    return rc < 0 ? 1 : 0;
}

int cmd_query(int argc, char **argv)
{
    static const struct option opts[] = {
        {"source", required_argument, NULL, 's'}, {"key", required_argument, NULL, 'k'},
        {"timeout", required_argument, NULL, 't'}, {"repeat", required_argument, NULL, 'r'},
        {"help", no_argument, NULL, 'h'},         {"insecure-plaintext", no_argument, NULL, 'P'},
        {"tcp-user-timeout", required_argument, NULL, 'N'}, {"request-timeout", required_argument, NULL, 'N'},
        {"auth-retry", required_argument, NULL, 'N'},       {"max-reply", required_argument, NULL, 'N'},
        {"max-skeleton", required_argument, NULL, 'N'},
        {NULL, 0, NULL, 0},
    };
    const char *source = NULL, *keyfile = NULL;
    int timeout = 10000, repeat = 1, c;
    bool plaintext = false;
    struct dp_netbound nb = *dp_netbound_get();
    struct dp_err nerr;
    int li = 0;
    while ((c = getopt_long(argc, argv, "+h", opts, &li)) != -1) {
        switch (c) {
        case 'N': /* bounds on the link (lib/netbound.h), parsed there */
            if (dp_netbound_parse_flag(&nb, opts[li].name, optarg, &nerr) < 0) {
                fprintf(stderr, "distriproc query: %s\n", nerr.msg);
                return 2;
            }
            dp_netbound_set(&nb);
            break;
        case 's': source = optarg; break;
        case 'k': keyfile = optarg; break;
        case 't': timeout = atoi(optarg); break;
        case 'r': repeat = atoi(optarg); break;
        case 'P': plaintext = true; break;
        case 'h': usage(stdout); return 0;
        default: usage(stderr); return 2;
        }
    }
    if (!source || !keyfile || optind >= argc || repeat < 1) {
        usage(stderr);
        return 2;
    }
    struct dp_client_opts o = {.connect_timeout_ms = timeout, .give_up_ms = timeout, .insecure_plaintext = plaintext};
    if (dp_parse_hostport(source, &o.addr) < 0) {
        fprintf(stderr, "distriproc query: --source wants IPV4:PORT (got '%s')\n", source);
        return 2;
    }
    static uint8_t key[DP_KEY_MAX];
    struct dp_err err = {{0}};
    if (dp_key_load(keyfile, key, &o.key_len, &err) < 0) {
        dp_error("%s", err.msg);
        return 1;
    }
    o.key = key;
    struct dp_client *cl;
    if (dp_client_connect(&o, &cl, &err) < 0) {
        dp_error("%s", err.msg);
        return 1;
    }
    const char *what = argv[optind];
    int rc = 0;
    if (strcmp(what, "stats") == 0 || strcmp(what, "access-log") == 0) {
        char *json;
        int r = what[0] == 's' ? dp_client_stats(cl, &json, timeout, &err) : dp_client_access_log(cl, &json, timeout, &err);
        if (r < 0) {
            dp_error("%s failed: %s", what, err.msg);
            rc = 1;
        } else {
            fputs(json, stdout);
            free(json);
        }
    } else if (strcmp(what, "task-map") == 0) {
        struct dp_task_map m;
        if (dp_client_task_map(cl, &m, timeout, &err) < 0) {
            dp_error("task map failed: %s", err.msg);
            rc = 1;
        } else {
            rc = dp_json_print(task_map_json(&m), 0) < 0;
            dp_task_map_free(&m);
        }
    } else if (strcmp(what, "skeleton") == 0 && optind + 1 < argc) {
        struct dp_skel_result res;
        if (dp_client_get_skeleton(cl, argv[optind + 1], &res, timeout, &err) < 0) {
            dp_error("skeleton download failed: %s", err.msg);
            rc = 1;
        } else {
            json_t *o = json_pack("{s:I, s:I, s:I}", "files", (json_int_t)res.files, "bytes_received",
                                  (json_int_t)res.bytes_received, "bytes_apparent", (json_int_t)res.bytes_apparent);
            rc = dp_json_print(o, 0) < 0;
        }
    } else if (strcmp(what, "get") == 0) {
        rc = do_get(cl, argc - optind - 1, argv + optind + 1, repeat, timeout, &err);
    } else if (strcmp(what, "put") == 0) {
        rc = do_put(cl, argc - optind - 1, argv + optind + 1, timeout, &err);
    } else if (strcmp(what, "hotset") == 0 && optind + 2 < argc) {
        uint32_t which;
        uint8_t *file;
        size_t len;
        if (dp_hotset_which_parse(argv[optind + 1], &which) < 0) {
            dp_error("hot set kind must be auto, classify, trace or merged, not '%s'", argv[optind + 1]);
            rc = 2;
        } else if (dp_client_get_hotset(cl, which, &file, &len, timeout, &err) < 0) {
            dp_error("hotset failed: %s", err.msg);
            rc = 1;
        } else {
            FILE *f = fopen(argv[optind + 2], "wb");
            if (!f || fwrite(file, 1, len, f) != len || fclose(f) != 0) {
                dp_error("cannot write %s: %s", argv[optind + 2], strerror(errno));
                rc = 1;
            } else {
                json_t *o = json_pack("{s:s, s:I, s:s}", "kind", argv[optind + 1], "bytes", (json_int_t)len,
                                      "file", argv[optind + 2]);
                rc = dp_json_print(o, 0) < 0;
            }
            free(file);
        }
    } else if (strcmp(what, "put-trace") == 0 && optind + 1 < argc) {
        uint8_t *file;
        size_t len;
        uint64_t pages;
        uint32_t runs;
        if (dp_read_file(argv[optind + 1], &file, &len, &err) < 0) {
            dp_error("%s", err.msg);
            rc = 1;
        } else {
            if (dp_client_put_trace(cl, file, len, &pages, &runs, timeout, &err) < 0) {
                dp_error("put-trace refused: %s", err.msg);
                rc = 1;
            } else {
                json_t *o = json_pack("{s:I, s:I, s:b}", "pages", (json_int_t)pages, "runs", (json_int_t)runs,
                                      "stored", 1);
                rc = dp_json_print(o, 0) < 0;
            }
            free(file);
        }
    } else {
        usage(stderr);
        rc = 2;
    }
    dp_client_close(cl);
    return rc;
}
