/* live_client: a verdict to the page server; see live_client.h. */
#include "live_client.h"

#include <stdlib.h>

#include <sodium.h>

#include "client.h"
#include "key.h"

int dp_live_report(const char *hostport, const char *key_file, uint32_t verdict, char **json, struct dp_err *err)
{
    uint8_t key[DP_KEY_MAX];
    struct dp_client_opts o = {.connect_timeout_ms = 10000, .give_up_ms = 10000};
    struct dp_client *c = NULL;
    *json = NULL;
    int rc = -1;
    if (dp_parse_hostport(hostport, &o.addr) < 0) {
        dp_err_set(err, "bad page server address '%s'", hostport);
        return -1;
    }
    if (dp_key_load(key_file, key, &o.key_len, err) == 0) {
        o.key = key;
        if (dp_client_connect(&o, &c, err) == 0 && dp_client_migration(c, verdict, json, 10000, err) == 0)
            rc = 0;
    }
    if (c)
        dp_client_close(c);
    sodium_memzero(key, sizeof(key));
    return rc;
}
