/* pagesrc_frozen: lazy pages read from the frozen source tree; see pagesrc_frozen.h. */
#include "pagesrc_frozen.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "freezer.h"

int dp_frozen_attach(struct dp_checkpoint *cp, const char *cgroup, struct dp_err *err)
{
    if (dp_freezer_is_frozen(cgroup) != 1) {
        dp_err_set(err, "the source tree's cgroup %s is not FROZEN: its memory may have changed since the dump, "
                   "so it cannot be served", cgroup);
        return -1;
    }
    pid_t *pids;
    size_t n;
    if (dp_freezer_pids(cgroup, &pids, &n, err) < 0)
        return -1;
    int rc = 0;
    for (size_t i = 0; i < cp->nr_tasks && rc == 0; i++) {
        struct dp_task_image *t = &cp->tasks[i];
        if (!t->live_pages)
            continue;
        pid_t host = 0;
        for (size_t k = 0; k < n && !host; k++)
            if (dp_proc_inner_pid(pids[k]) == t->pid)
                host = pids[k];
        if (!host) {
            dp_err_set(err, "task %d of the checkpoint is not in the frozen cgroup %s (%zu processes there): its "
                       "%llu lazy pages cannot be served", (int)t->pid, cgroup, n,
                       (unsigned long long)t->live_pages);
            rc = -1;
            break;
        }
        char path[64];
        snprintf(path, sizeof(path), "/proc/%d/mem", (int)host);
        t->live_fd = open(path, O_RDONLY | O_CLOEXEC);
        if (t->live_fd < 0) {
            dp_err_set(err, "cannot open %s (task %d of the checkpoint): %s", path, (int)t->pid, strerror(errno));
            rc = -1;
        }
    }
    free(pids);
    if (rc < 0)
        dp_frozen_detach(cp);
    return rc;
}

void dp_frozen_detach(struct dp_checkpoint *cp)
{
    for (size_t i = 0; i < cp->nr_tasks; i++)
        if (cp->tasks[i].live_fd >= 0) {
            close(cp->tasks[i].live_fd);
            cp->tasks[i].live_fd = -1;
        }
}
