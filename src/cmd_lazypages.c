/* distriproc lazy-pages: DistriProc's lazy-pages daemon alone, for users who
 * run `runc restore --lazy-pages` (or podman, through a CRIU configuration
 * file) themselves. The same code path as restore (src/restore.h) up to the
 * daemon: page source, skeleton images, DIR/lazy-pages.socket. */
#include <stdio.h>

#include "commands.h"
#include "restore.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: distriproc lazy-pages (--source ADDR:PORT --key FILE | --images DIR) --workdir DIR [options]\n"
            "\n"
            "Starts DistriProc's lazy-pages daemon and returns once it listens on\n"
            "DIR/lazy-pages.socket. With --source it first pulls the checkpoint's images\n"
            "without their lazy memory into DIR/images. Then restore with any front end that\n"
            "runs CRIU with --lazy-pages and work directory DIR, e.g.\n"
            "  runc --criu CRIU restore --lazy-pages --work-path DIR --image-path DIR/images \\\n"
            "       --pid-file DIR/restored.pid --bundle BUNDLE --detach ID\n"
            "(podman: see docs/containers.md). Every page the restored tasks touch is fetched\n"
            "from the page server; the daemon exits when the last restored task does.\n"
            "\n"
            "  --source ADDR:PORT      the page server (distriproc serve) holding the checkpoint\n"
            "  --key FILE              pre-shared key of the page server\n"
            "  --take-over             take the checkpoint's write lease from the restore holding it\n"
            "                          (fenced: its daemon SIGKILLs its tree); see restore --help\n"
            "  --images DIR            local mode: pages from a CRIU images directory\n"
            "  --workdir DIR           lazy-pages.socket, control.sock, lazyd.log, images/\n"
            "  --host HOST             the daemon's page traffic goes through lab host HOST's\n"
            "                          network namespace\n"
            "  --prefetch POLICY       none (default), seq:N, stride[:DEPTH], auto[:MAX],\n"
            "                          streams[:MAX] (interleaved sequential streams)\n"
            "  --warmup none|hot|all   move memory in the background after the restore, faults\n"
            "                          first, at the link's pace (docs/hotset.md, \"Warm-up\")\n"
            "  --background-fetch RATE cap the warm-up at RATE bytes/s; alone: --warmup all\n"
            "  --fault-timeout SEC     how long a fault may wait for the page source (default 120,\n"
            "                          0 = no limit)\n"
            "  --on-timeout wait|kill  after --fault-timeout: SIGKILL the tree (default), or wait\n"
            "                          (its root's pid from DIR/restored.pid: give runc --pid-file)\n"
            "  --budget SIZE|PCT%%     keep at most SIZE or PCT%% of the lazy memory resident\n"
            "                          (docs/budget.md); needs --source\n"
            "  --evict-batch PAGES     pages evicted per stop (default 256)\n"
            "  --victim-buffer SIZE    recently evicted pages kept in the daemon (default 8M)\n"
            "  --hotset KIND|FILE      replay the checkpoint's working set after the restore\n"
            "  --hotset-mode MODE      install (default) or stage\n"
            "  --replay-window BYTES   hot-set bytes in flight (default 8M)\n"
            "  --record-trace SEC      record the first-touch trace (default 10 with --source)\n"
            "  --foreground            stay attached until the daemon exits (its status is ours)\n"
            "  --metrics ADDR:PORT     serve Prometheus metrics at http://ADDR:PORT/metrics (loopback\n"
            "                          only unless --metrics-allow-remote; docs/observability.md)\n"
            "  --json                  print {daemon_pid, socket, workdir, images, ...} as JSON\n"
            "  -v, --verbose           debug logging\n"
            "\n"
            "See docs/containers.md.\n");
}

int cmd_lazypages(int argc, char **argv)
{
    return dp_restore_main(argc, argv, DP_MODE_LAZY_PAGES, usage);
}
