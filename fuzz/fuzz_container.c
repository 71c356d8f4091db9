/* libFuzzer target for what DistriProc reads of a container: a bundle's
 * config.json (and the container paths resolved through it), `runc state`
 * output, and the rootfs manifest a restore reads from the skeleton. A
 * manifest that parses must serialize back to one that parses to the same
 * digest. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "bundle.h"
#include "rootfs.h"
#include "runc.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    struct dp_err err;
    struct dp_bundle_info b;
    if (dp_bundle_parse("/bundle", text, size, &b, &err) == 0) {
        static const char *const paths[] = {"/", "/usr/lib/libc.so.6", "/dp/x", "/tmp/a", "/proc/1/maps"};
        char host[8192];
        for (size_t i = 0; i < sizeof(paths) / sizeof(paths[0]); i++)
            dp_bundle_resolve(&b, paths[i], host, sizeof(host));
        dp_bundle_info_free(&b);
    }
    struct dp_runc_state st;
    dp_runc_state_parse(text, size, &st, &err);
    struct dp_rootfs_manifest m, again;
    if (dp_rootfs_from_json(text, size, &m, &err) == 0) {
        char *out = dp_rootfs_to_json(&m);
        if (!out || dp_rootfs_from_json(out, strlen(out), &again, &err) != 0 ||
            memcmp(again.digest, m.digest, DP_ROOTFS_HASH) != 0)
            abort();
        dp_rootfs_free(&again);
        free(out);
        dp_rootfs_free(&m);
    }
    return 0;
}
