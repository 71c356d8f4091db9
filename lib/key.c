/* key: pre-shared key files (hex or raw), kept out of other users' reach. */
#include "key.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "proto.h"

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = tolower(c);
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

/* The bytes of a key file to the key, apart from the file's I/O so that
 * what an attacker may plant in a key file can be fuzzed (fuzz/fuzz_key.c). */
int dp_key_parse(const char *path, const uint8_t *data, size_t len, uint8_t *key, size_t *key_len,
                 struct dp_err *err)
{
    /* Hex if every non-space byte is a hex digit and there is an even number. */
    size_t digits = 0;
    bool is_hex = len > 0;
    for (size_t i = 0; i < len && is_hex; i++) {
        if (isspace(data[i]))
            continue;
        if (hexval(data[i]) < 0)
            is_hex = false;
        else
            digits++;
    }
    is_hex = is_hex && digits > 0 && digits % 2 == 0;
    size_t n = 0;
    if (is_hex) {
        int hi = -1;
        for (size_t i = 0; i < len; i++) {
            int v = hexval(data[i]);
            if (v < 0)
                continue;
            if (hi < 0) {
                hi = v;
            } else {
                if (n < DP_KEY_MAX)
                    key[n] = (uint8_t)(hi << 4 | v);
                n++;
                hi = -1;
            }
        }
    } else {
        n = len;
        if (n <= DP_KEY_MAX)
            memcpy(key, data, n);
    }
    if (n < DP_KEY_MIN || n > DP_KEY_MAX) {
        dp_err_set(err, "key in %s is %zu bytes; it must be %d..%d bytes (%s)", path, n, DP_KEY_MIN, DP_KEY_MAX,
                   is_hex ? "decoded from hex" : "raw");
        return -1;
    }
    *key_len = n;
    return 0;
}

int dp_key_load(const char *path, uint8_t *key, size_t *key_len, struct dp_err *err)
{
    struct stat sb;
    if (stat(path, &sb) < 0) {
        dp_err_set(err, "cannot read key file %s: %s (create one with 'distriproc keygen %s')", path,
                   strerror(errno), path);
        return -1;
    }
    if (!S_ISREG(sb.st_mode)) {
        dp_err_set(err, "key file %s is not a regular file", path);
        return -1;
    }
    if (sb.st_size > 4 * DP_KEY_MAX) {
        dp_err_set(err, "key file %s is %lld bytes; a key is at most %d bytes", path, (long long)sb.st_size,
                   DP_KEY_MAX);
        return -1;
    }
    if (sb.st_mode & 077)
        dp_warn("key file %s is accessible by group or others (mode %03o); run 'chmod 600 %s'", path,
                (unsigned)(sb.st_mode & 0777), path);
    uint8_t *data;
    size_t len;
    if (dp_read_file(path, &data, &len, err) < 0)
        return -1;
    int rc = dp_key_parse(path, data, len, key, key_len, err);
    sodium_memzero(data, len);
    free(data);
    return rc;
}

int dp_key_generate(const char *path, int force, struct dp_err *err)
{
    if (sodium_init() < 0) {
        dp_err_set(err, "libsodium failed to initialise");
        return -1;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_CLOEXEC | (force ? O_TRUNC : O_EXCL), 0600);
    if (fd < 0) {
        dp_err_set(err, "cannot create %s: %s%s", path, strerror(errno),
                   errno == EEXIST ? " (use --force to replace it)" : "");
        return -1;
    }
    if (fchmod(fd, 0600) < 0) {
        dp_err_set(err, "cannot chmod %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    uint8_t raw[32];
    char text[65 + 1];
    randombytes_buf(raw, sizeof(raw));
    sodium_bin2hex(text, sizeof(text) - 1, raw, sizeof(raw));
    size_t n = strlen(text);
    text[n++] = '\n';
    int rc = dp_write_full(fd, text, n);
    sodium_memzero(raw, sizeof(raw));
    sodium_memzero(text, sizeof(text));
    if (rc < 0 || fsync(fd) < 0) {
        dp_err_set(err, "cannot write %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    close(fd);
    return 0;
}
