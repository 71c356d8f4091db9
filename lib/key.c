/* key: pre-shared key files in the one format keygen writes, kept out of
 * other users' reach. */
#include "key.h"

#include <errno.h>
#include <fcntl.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "perm.h"
#include "proto.h"

/* The longest file that can hold a key line (header, digits, CRLF). */
#define KEY_FILE_MAX 128
/* 32 random bytes have ~30 distinct values; fewer than this is a pattern
 * (all zeros, "0123..." repeated), not a random key. */
#define KEY_MIN_DISTINCT 12

/* ---- parsing (pure) ---- */

/* 1 if c is a hex digit (either case). */
static int is_hex(uint8_t c) { return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'f') || (c >= 'A' && c <= 'F'); }

/* The value of hex digit c (checked by is_hex). */
static uint8_t hex_val(uint8_t c) { return c <= '9' ? c - '0' : (uint8_t)((c | 0x20) - 'a' + 10); }

int dp_key_parse(const uint8_t *data, size_t len, uint8_t key[DP_KEY_LEN], struct dp_err *err)
{
    static const char fix[] = "create a key with 'distriproc keygen FILE'";
    size_t hl = strlen(DP_KEY_HEADER);
    /* One line: an optional "\n" or "\r\n" at the end, nothing else. */
    if (len > 0 && data[len - 1] == '\n')
        len--;
    if (len > 0 && data[len - 1] == '\r')
        len--;
    const uint8_t *p = data;
    if (len >= hl && memcmp(p, DP_KEY_HEADER, hl) == 0) {
        p += hl;
        len -= hl;
    }
    if (len != 2 * DP_KEY_LEN) {
        dp_err_set(err, "not a distriproc key: expected one line '%s' and %d hex digits (%d random bytes); %s",
                   DP_KEY_HEADER "...", 2 * DP_KEY_LEN, DP_KEY_LEN, fix);
        return -1;
    }
    for (size_t i = 0; i < len; i++) {
        if (!is_hex(p[i])) {
            dp_err_set(err, "not a distriproc key: byte %zu of the key digits is not a hex digit; %s", i, fix);
            return -1;
        }
    }
    uint8_t seen[256] = {0};
    unsigned distinct = 0;
    for (size_t i = 0; i < DP_KEY_LEN; i++) {
        key[i] = (uint8_t)(hex_val(p[2 * i]) << 4 | hex_val(p[2 * i + 1]));
        distinct += !seen[key[i]]++;
    }
    if (distinct < KEY_MIN_DISTINCT) {
        sodium_memzero(key, DP_KEY_LEN);
        dp_err_set(err, "the key does not look random (%u distinct byte values in %d bytes; random keys have "
                   "about 30); %s", distinct, DP_KEY_LEN, fix);
        return -1;
    }
    return 0;
}

/* ---- files ---- */

int dp_key_load(const char *path, uint8_t *key, size_t *key_len, struct dp_err *err)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) {
        dp_err_set(err, "cannot read key file %s: %s (create one with 'distriproc keygen %s')", path,
                   strerror(errno), path);
        return -1;
    }
    /* Checked on the open file, so the file read is the file checked. */
    struct stat sb;
    if (fstat(fd, &sb) < 0) {
        dp_err_set(err, "cannot stat key file %s: %s", path, strerror(errno));
        close(fd);
        return -1;
    }
    if (dp_perm_key_ok(path, sb.st_mode, sb.st_uid, geteuid(), err) < 0) {
        close(fd);
        return -1;
    }
    uint8_t text[KEY_FILE_MAX + 1];
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fd, text + len, sizeof(text) - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r < 0) {
            dp_err_set(err, "cannot read key file %s: %s", path, strerror(errno));
            close(fd);
            sodium_memzero(text, sizeof(text));
            return -1;
        }
        if (r == 0 || (len += (size_t)r) == sizeof(text))
            break;
    }
    close(fd);
    struct dp_err perr;
    int rc = len > KEY_FILE_MAX ? (dp_err_set(&perr, "not a distriproc key: the file is longer than %d bytes; "
                                              "create a key with 'distriproc keygen FILE'", KEY_FILE_MAX), -1)
                                : dp_key_parse(text, len, key, &perr);
    sodium_memzero(text, sizeof(text));
    if (rc < 0) {
        dp_err_set(err, "key file %s: %s", path, perr.msg);
        return -1;
    }
    *key_len = DP_KEY_LEN;
    return 0;
}

int dp_key_generate(const char *path, int force, struct dp_err *err)
{
    if (sodium_init() < 0) {
        dp_err_set(err, "libsodium failed to initialise");
        return -1;
    }
    int fd = open(path, O_WRONLY | O_CREAT | O_NOFOLLOW | O_CLOEXEC | (force ? O_TRUNC : O_EXCL), 0600);
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
    uint8_t raw[DP_KEY_LEN];
    char text[sizeof(DP_KEY_HEADER) + 2 * DP_KEY_LEN + 1];
    randombytes_buf(raw, sizeof(raw));
    memcpy(text, DP_KEY_HEADER, strlen(DP_KEY_HEADER));
    sodium_bin2hex(text + strlen(DP_KEY_HEADER), 2 * DP_KEY_LEN + 1, raw, sizeof(raw));
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
