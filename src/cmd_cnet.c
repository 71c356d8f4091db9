/* distriproc container-net: wires a container's own network namespace to a lab
 * host; meant to run as the createRuntime hook of a runc bundle (runc runs it
 * at create and again at restore). The wiring itself is lib/cnet. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cnet.h"
#include "commands.h"
#include "jsonout.h"
#include "lab.h"
#include "util.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: distriproc container-net hook --host src|dst --ifname NAME --addr ADDR/PREFIX [--json]\n"
            "\n"
            "Wires the network namespace of a runc container to lab host HOST (netns\n"
            "%s-HOST): a veth pair NAME (on the lab host) <-> eth0 (in the container),\n"
            "the container's address ADDR/PREFIX, the host end the first other usable\n"
            "address of that subnet, lo up and a default route via the host end.\n"
            "\n"
            "Reads the OCI state (what runc gives a hook on stdin) for the container's\n"
            "pid. Put it in the bundle's config.json as a createRuntime hook, so that\n"
            "runc runs it when the container is created and again when it is restored\n"
            "(runc tells CRIU to leave the network namespace empty, and runs the hook at\n"
            "CRIU's setup-namespaces step, before the restored tasks run):\n"
            "  \"hooks\": {\"createRuntime\": [{\"path\": \"/abs/path/distriproc\",\n"
            "     \"args\": [\"distriproc\", \"container-net\", \"hook\", \"--host\", \"dst\",\n"
            "              \"--ifname\", \"c1\", \"--addr\", \"10.251.1.2/30\"],\n"
            "     \"env\": [\"DISTRIPROC_LAB=%s\"], \"timeout\": 10}]}\n"
            "The destination's bundle names the destination host; the address stays.\n"
            "The container must have a network namespace of its own (needed anyway for a\n"
            "user-namespaced container to be checkpointed). The pair goes away with the\n"
            "container's network namespace. See docs/containers.md.\n"
            "\n"
            "  --host src|dst   the lab host whose network namespace gets the host end\n"
            "  --ifname NAME    the host end's name (1-15 of A-Z a-z 0-9 _ . -), unique on the host\n"
            "  --addr A/P       the container's IPv4 address and prefix length (16..30)\n"
            "  --json           print {\"pid\", \"host\", \"ifname\", \"host_addr\", \"addr\", \"prefix\"}\n"
            "  -h, --help       this help\n",
            lab_name(), lab_name());
}

static int cnet_cmd_hook(int argc, char **argv)
{
    const char *host = NULL, *ifname = NULL, *addr = NULL;
    int json = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--host") == 0 && i + 1 < argc)
            host = argv[++i];
        else if (strcmp(argv[i], "--ifname") == 0 && i + 1 < argc)
            ifname = argv[++i];
        else if (strcmp(argv[i], "--addr") == 0 && i + 1 < argc)
            addr = argv[++i];
        else if (strcmp(argv[i], "--json") == 0)
            json = 1;
        else if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0) {
            usage(stdout);
            return 0;
        } else {
            dp_error("hook: unknown or incomplete argument '%s' (see --help)", argv[i]);
            return 2;
        }
    }
    if (!host || !ifname || !addr) {
        dp_error("hook: --host, --ifname and --addr are required (see --help)");
        return 2;
    }
    struct dp_err err = {{0}};
    const struct lab_host *h = lab_host_find(host);
    if (!h) {
        dp_error("hook: unknown lab host '%s': use src or dst", host);
        return 2;
    }
    if (!cnet_ifname_ok(ifname)) {
        dp_error("hook: interface name '%s' is not valid (1-%d of A-Z a-z 0-9 _ . -)", ifname,
                 CNET_IFNAME_MAX);
        return 2;
    }
    struct cnet_plan plan;
    if (cnet_plan_parse(addr, &plan, &err) < 0) {
        dp_error("hook: %s", err.msg);
        return 2;
    }
    /* runc writes a small document on the hook's stdin and closes it. */
    uint8_t *text;
    size_t len;
    pid_t pid;
    if (dp_read_file("/dev/stdin", &text, &len, &err) < 0) {
        dp_error("hook: reading the OCI state: %s", err.msg);
        return 1;
    }
    int rc = -1;
    if (len > CNET_STATE_MAX)
        dp_err_set(&err, "the OCI state on stdin is larger than %u bytes", CNET_STATE_MAX);
    else
        rc = cnet_state_pid((const char *)text, len, &pid, &err);
    free(text);
    if (rc < 0 || cnet_attach(h, ifname, &plan, pid, &err) < 0) {
        dp_error("hook: %s", err.msg);
        return 1;
    }
    if (json && dp_json_print(json_pack("{s:i, s:s, s:s, s:s, s:s, s:i}", "pid", (int)pid, "host", h->name, "ifname",
                                        ifname, "host_addr", plan.host_addr, "addr", plan.cont_addr, "prefix",
                                        plan.prefix),
                              0) < 0)
        return 1;
    return 0;
}

int cmd_cnet(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "hook") == 0)
        return cnet_cmd_hook(argc - 1, argv + 1);
    dp_error("container-net: unknown subcommand '%s' (see --help)", argv[1]);
    return 2;
}
