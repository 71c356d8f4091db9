/* cpid: checkpoint identity (see cpid.h for the exact definition). */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "cpid.h"

#define LABEL "DistriProc-checkpoint-id-v1"

enum { ITEM_CONTENTS = 1, ITEM_SIZE_ONLY = 2 };

static void put_le64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void item_header(crypto_generichash_state *st, const char *name, uint8_t kind, uint64_t size)
{
    size_t n = strlen(name);
    uint8_t h[2 + 1 + 8];
    h[0] = (uint8_t)n;
    h[1] = (uint8_t)(n >> 8);
    crypto_generichash_update(st, h, 2);
    crypto_generichash_update(st, (const uint8_t *)name, n);
    h[0] = kind;
    put_le64(h + 1, size);
    crypto_generichash_update(st, h, 9);
}

/* Hashes dir/name if it exists (required: an error if it does not). */
static int hash_file(crypto_generichash_state *st, const char *dir, const char *name, int required,
                     struct dp_err *err)
{
    char path[PATH_MAX];
    if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, name) >= sizeof(path)) {
        dp_err_set(err, "path too long: %s/%s", dir, name);
        return -1;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOFOLLOW);
    if (fd < 0) {
        if (errno == ENOENT && !required)
            return 0;
        dp_err_set(err, "cannot open %s: %s", path, strerror(errno));
        return -1;
    }
    struct stat sb;
    if (fstat(fd, &sb) < 0 || !S_ISREG(sb.st_mode)) {
        dp_err_set(err, "%s is not a regular file", path);
        close(fd);
        return -1;
    }
    item_header(st, name, ITEM_CONTENTS, (uint64_t)sb.st_size);
    uint8_t buf[65536];
    uint64_t left = (uint64_t)sb.st_size;
    while (left > 0) {
        ssize_t n = read(fd, buf, left < sizeof(buf) ? (size_t)left : sizeof(buf));
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0) {
            dp_err_set(err, "reading %s: %s", path, n < 0 ? strerror(errno) : "file shrank while hashed");
            close(fd);
            return -1;
        }
        crypto_generichash_update(st, buf, (size_t)n);
        left -= (uint64_t)n;
    }
    close(fd);
    return 0;
}

int dp_checkpoint_identity(const struct dp_checkpoint *cp, uint8_t id[DP_CPID_SIZE], struct dp_err *err)
{
    if (sodium_init() < 0) {
        dp_err_set(err, "libsodium failed to initialise");
        return -1;
    }
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, DP_CPID_SIZE);
    crypto_generichash_update(&st, (const uint8_t *)LABEL, sizeof(LABEL) - 1);
    if (hash_file(&st, cp->dir, "inventory.img", 1, err) < 0 || hash_file(&st, cp->dir, "pstree.img", 1, err) < 0 ||
        hash_file(&st, cp->dir, "stats-dump", 0, err) < 0)
        return -1;
    for (size_t i = 0; i < cp->nr_tasks; i++) {
        const struct dp_task_image *t = &cp->tasks[i];
        char name[64];
        for (size_t k = 0; k < t->nr_threads; k++) {
            snprintf(name, sizeof(name), "core-%d.img", t->threads[k]);
            if (hash_file(&st, cp->dir, name, 0, err) < 0)
                return -1;
        }
        snprintf(name, sizeof(name), "mm-%d.img", t->pid);
        if (hash_file(&st, cp->dir, name, 0, err) < 0)
            return -1;
        snprintf(name, sizeof(name), "pagemap-%d.img", t->pid);
        if (hash_file(&st, cp->dir, name, 0, err) < 0)
            return -1;
    }
    for (size_t i = 0; i < cp->nr_files; i++)
        item_header(&st, cp->files[i].name, ITEM_SIZE_ONLY, cp->files[i].size);
    crypto_generichash_final(&st, id, DP_CPID_SIZE);
    return 0;
}

void dp_cpid_hex(const uint8_t id[DP_CPID_SIZE], char out[DP_CPID_HEX])
{
    static const char hx[] = "0123456789abcdef";
    for (size_t i = 0; i < DP_CPID_SIZE; i++) {
        out[2 * i] = hx[id[i] >> 4];
        out[2 * i + 1] = hx[id[i] & 15];
    }
    out[2 * DP_CPID_SIZE] = '\0';
}

void dp_cpid_short(const uint8_t id[DP_CPID_SIZE], char out[17])
{
    char full[DP_CPID_HEX];
    dp_cpid_hex(id, full);
    memcpy(out, full, 16);
    out[16] = '\0';
}
