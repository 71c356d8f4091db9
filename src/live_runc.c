/* live_runc: memory mode for a runc container; see live_runc.h. */
#include "live_runc.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "freezer.h"
#include "kdat.h"

pid_t dp_live_runc_spawn(const struct dp_runc_ck *c, const char *id, const char *images, const char *page_server,
                         int *status_rd, struct dp_err *err)
{
    struct dp_runc_checkpoint_opts o = {.id = id, .image_path = images, .work_path = images, .leave_running = 1,
                                        .tcp_established = 1, .lazy_pages = 1, .page_server = page_server,
                                        .status_fd = 1};
    struct dp_criu_argv a;
    if (dp_runc_checkpoint_args(&c->r, &o, &a, err) < 0)
        return -1;
    char log[PATH_MAX + 16], netns[64];
    snprintf(log, sizeof(log), "%s/runc.log", images);
    snprintf(netns, sizeof(netns), "/proc/%d/ns/net", c->state.pid);
    int lfd = open(log, O_WRONLY | O_CREAT | O_APPEND | O_CLOEXEC, 0600);
    int nul = open("/dev/null", O_RDONLY | O_CLOEXEC);
    int sp[2] = {-1, -1};
    pid_t pid = -1;
    if (lfd < 0 || nul < 0 || pipe2(sp, O_CLOEXEC) < 0) {
        dp_err_set(err, "cannot set up runc checkpoint (%s): %s", log, strerror(errno));
    } else {
        dp_kdat_prime_once(c->r.criu);
        pid = dp_runc_spawn(a.argv, c->netns_by_path ? netns : NULL, nul, sp[1], lfd, err);
    }
    if (sp[1] >= 0)
        close(sp[1]);
    if (pid < 0 && sp[0] >= 0)
        close(sp[0]);
    if (lfd >= 0)
        close(lfd);
    if (nul >= 0)
        close(nul);
    if (pid > 0)
        *status_rd = sp[0];
    return pid;
}

void dp_live_runc_forget(const char *id, const char *root, const char *cg)
{
    struct dp_err err = {{0}};
    for (int i = 0; i < 200; i++) { /* SIGKILLed and thawed: gone within moments */
        pid_t *p = NULL;
        size_t n = 0;
        if (dp_freezer_pids(cg, &p, &n, &err) < 0 || n == 0) {
            free(p);
            break;
        }
        free(p);
        usleep(50000);
    }
    struct dp_runc r;
    if (dp_runc_open(&r, root && root[0] ? root : NULL, &err) < 0) {
        dp_warn("cannot remove container '%s' from runc: %s; remove it with: runc delete --force %s", id, err.msg,
                id);
        return;
    }
    dp_runc_force_delete(&r, id);
    struct dp_runc_state st;
    if (dp_runc_state(&r, id, &st, &err) == 1)
        dp_info("runc delete: the source container %s is removed", id);
    else
        dp_warn("runc still knows the source container %s (status %s); remove it with: runc%s%s delete --force %s",
                id, st.status, root && root[0] ? " --root " : "", root && root[0] ? root : "", id);
}
