/* fence: stopping a fenced restore and releasing the write lease (see
 * fence.h). */
#include "fence.h"
#include "pagesrc_redis.h"

#include <fcntl.h>
#include <jansson.h>
#include <stdio.h>
#include <unistd.h>

#include "client.h"
#include "pagesrc.h"
#include "util.h"

/* See fence.h. The message says what happened, what it means for the
 * process and what to do. */
void dp_fence_report(const char *why, const char *source_desc, const char *workdir)
{
    dp_error("this restore was fenced by %s: %s. Another restore took over the checkpoint's write lease, so this "
             "process tree may no longer read or write back its memory: stopping it with SIGKILL (a frozen or "
             "running copy would be a second writer). The new restore is the one that continues; nothing needs "
             "doing here", source_desc, why);
    json_t *o = json_pack("{s:b, s:s, s:s, s:s}", "fenced", 1, "why", why, "source", source_desc, "action", "SIGKILL");
    char path[4300];
    snprintf(path, sizeof(path), "%s/fenced.json", workdir);
    int fd = o ? open(path, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600) : -1;
    if (fd < 0 || json_dumpfd(o, fd, JSON_COMPACT) < 0)
        dp_warn("cannot write %s", path);
    if (fd >= 0)
        close(fd);
    json_decref(o);
}

/* See fence.h. */
void dp_fence_release(struct dp_pagesrc *src)
{
    if (dp_pagesrc_redis_release(src))
        return; /* the store's lease (lib/store_redis.h) */
    struct dp_client *c = dp_pagesrc_remote_client(src);
    struct dp_err err = {{0}};
    if (!c || dp_client_fenced(c))
        return;
    /* Never wait for an unreachable server here: the daemon's exit (and a
     * killed tree's report) must not hang on it. */
    if (!dp_client_connected(c))
        dp_err_set(&err, "not connected to the page server");
    if (err.msg[0] || dp_client_lease_release(c, 2000, &err) < 0)
        dp_warn("could not give the write lease back to the page server (%s): the next restore of this checkpoint "
                "will need --take-over", err.msg);
}
