/* netbound: the destination's waits and caps on the link (see netbound.h). */
#include "netbound.h"

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

/* ---- the process-wide bounds ---------------------------------------------------- */

static struct dp_netbound bounds = {
    .user_timeout_ms = DP_NB_USER_TIMEOUT_MS,
    .request_timeout_ms = DP_NB_REQUEST_TIMEOUT_MS,
    .auth_retry_ms = DP_NB_AUTH_RETRY_MS,
    .max_reply_bytes = DP_NB_MAX_REPLY,
    .max_skeleton_bytes = DP_NB_MAX_SKELETON,
    .max_skeleton_files = DP_NB_MAX_SKELETON_FILES,
};

const struct dp_netbound *dp_netbound_get(void) { return &bounds; }

/* Set by a command's flags before any client exists (forked daemons inherit it). */
void dp_netbound_set(const struct dp_netbound *b) { bounds = *b; }

const char dp_netbound_usage[] =
    "  --tcp-user-timeout MS   drop a connection whose sent data stays unacknowledged, or\n"
    "                          whose idle peer stops answering keepalives, after MS\n"
    "                          (TCP_USER_TIMEOUT; default 10000, 0 = kernel default)\n"
    "  --request-timeout MS    reconnect when requests wait MS without a byte from the\n"
    "                          page server (default 15000, 0 = never)\n"
    "  --auth-retry MS         an AUTH refusal on a reconnect may be forged: retry it for\n"
    "                          MS, then stop with an error (default 30000)\n"
    "  --max-reply SIZE        largest reply kept from the page server (default 64M)\n"
    "  --max-skeleton SIZE     largest skeleton accepted (default 4G of data)\n";

/* Milliseconds: whole, at most a day; "0" only where it means "off". */
static int parse_ms(const char *val, int *out)
{
    char *end;
    if (!val || !*val || *val == '-')
        return -1;
    errno = 0;
    long v = strtol(val, &end, 10);
    if (errno || *end || v > 86400000L)
        return -1;
    *out = (int)v;
    return 0;
}

int dp_netbound_parse_flag(struct dp_netbound *b, const char *name, const char *val, struct dp_err *err)
{
    int *ms = !strcmp(name, "tcp-user-timeout") ? &b->user_timeout_ms
              : !strcmp(name, "request-timeout") ? &b->request_timeout_ms
              : !strcmp(name, "auth-retry") ? &b->auth_retry_ms : NULL;
    if (ms) {
        if (parse_ms(val, ms) < 0) {
            dp_err_set(err, "--%s takes milliseconds, 0..86400000 (got '%s')", name, val ? val : "");
            return -1;
        }
        return 0;
    }
    uint64_t *sz = !strcmp(name, "max-reply") ? &b->max_reply_bytes
                   : !strcmp(name, "max-skeleton") ? &b->max_skeleton_bytes : NULL;
    if (!sz) {
        dp_err_set(err, "unknown bound --%s", name);
        return -1;
    }
    if (dp_parse_size(val, sz) < 0 || *sz < 4096) {
        dp_err_set(err, "--%s takes a size of at least 4K such as 64M (got '%s')", name, val ? val : "");
        return -1;
    }
    return 0;
}

/* ---- sockets and deadlines ----------------------------------------------------------- */

/* Keepalive probes start after a third of the bound, so a silent peer is
 * noticed within it too (TCP_USER_TIMEOUT also ends keepalive probing). */
int dp_netbound_socket(int fd, int ms)
{
    if (ms <= 0)
        return 0;
    int one = 1, idle = ms / 3000 > 0 ? ms / 3000 : 1, intvl = idle, cnt = 3;
    unsigned ut = (unsigned)ms;
    if (setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one)) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle)) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPINTVL, &intvl, sizeof(intvl)) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_KEEPCNT, &cnt, sizeof(cnt)) < 0 ||
        setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof(ut)) < 0)
        return -1;
    return 0;
}

bool dp_netbound_expired(uint64_t since_ns, uint64_t now, int ms)
{
    return ms > 0 && since_ns && now > since_ns && now - since_ns > (uint64_t)ms * 1000000ull;
}
