/* aeadbench: what one AEAD record costs on this CPU, for each implementation
 * the secure channel can use (lib/channel.c), against memcpy of the same
 * bytes. Used to choose the implementation per record size and to show the
 * bulk ceiling of the encrypted series (docs/protocol.md §3.6).
 *
 *   aeadbench [ROUNDS]      one JSON line per (implementation, size)
 *
 * hot:  best of ROUNDS loops of sealing the same buffer (in cache, warm
 *       branch predictors): the compute cost per record;
 * cold: mean over 200 records, each after touching 8 MiB of other memory,
 *       as a fault's record is sealed between two wake-ups.
 * Each row is one JSON object: impl, bytes, hot_ns, cold_ns, hot_gbps. */
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jansson.h>
#include <openssl/evp.h>
#include <sodium.h>

#include "util.h"

/* ---- the records ------------------------------------------------------------ */

enum impl { SODIUM_AESGCM, SODIUM_CHACHA, EVP_AESGCM, EVP_CHACHA, MEMCPY, NIMPL };
static const char *const impl_name[NIMPL] = {"libsodium-aes256gcm", "libsodium-chacha20poly1305",
                                             "libcrypto-aes256gcm", "libcrypto-chacha20poly1305", "memcpy"};

struct bench {
    uint8_t key[32], nonce[12], tag[16];
    uint8_t *buf, *other, *junk;
    size_t junk_len;
    crypto_aead_aes256gcm_state *aes;
    EVP_CIPHER_CTX *evp[2]; /* AES-GCM, ChaCha20-Poly1305: keyed once, as the channel does */
};

/* Seals len bytes in place with impl, a fresh nonce each time (as the
 * channel's record counter); memcpy copies them elsewhere instead. */
static int seal(struct bench *b, enum impl impl, size_t len)
{
    uint64_t ctr;
    memcpy(&ctr, b->nonce, 8);
    ctr++;
    memcpy(b->nonce, &ctr, 8);
    int n = 0, fin = 0;
    EVP_CIPHER_CTX *x = impl == EVP_AESGCM ? b->evp[0] : b->evp[1];
    switch (impl) {
    case SODIUM_AESGCM:
        return crypto_aead_aes256gcm_encrypt_detached_afternm(b->buf, b->tag, NULL, b->buf, len, NULL, 0, NULL,
                                                              b->nonce, b->aes);
    case SODIUM_CHACHA:
        return crypto_aead_chacha20poly1305_ietf_encrypt_detached(b->buf, b->tag, NULL, b->buf, len, NULL, 0, NULL,
                                                                  b->nonce, b->key);
    case EVP_AESGCM:
    case EVP_CHACHA:
        if (EVP_EncryptInit_ex(x, NULL, NULL, NULL, b->nonce) != 1 ||
            EVP_EncryptUpdate(x, b->buf, &n, b->buf, (int)len) != 1 || EVP_EncryptFinal_ex(x, b->buf + n, &fin) != 1 ||
            EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_GET_TAG, 16, b->tag) != 1)
            return -1;
        return 0;
    case MEMCPY:
        memcpy(b->other, b->buf, len);
        return 0;
    default:
        return -1;
    }
}

/* Touches junk_len bytes, one per cache line: the caches hold other data. */
static void evict(struct bench *b)
{
    for (size_t i = 0; i < b->junk_len; i += 64)
        b->junk[i]++;
}

/* ---- measuring ------------------------------------------------------------------ */

/* Best loop of rounds, ns per record. */
static double hot_ns(struct bench *b, enum impl impl, size_t len, int rounds)
{
    int n = len > 65536 ? 300 : 3000;
    double best = 1e18;
    for (int r = 0; r < rounds; r++) {
        uint64_t t0 = dp_now_ns();
        for (int i = 0; i < n; i++)
            if (seal(b, impl, len) != 0)
                return -1;
        double ns = (double)(dp_now_ns() - t0) / n;
        if (ns < best)
            best = ns;
    }
    return best;
}

/* Mean ns per record when each one starts with cold caches. */
static double cold_ns(struct bench *b, enum impl impl, size_t len)
{
    enum { N = 200 };
    uint64_t sum = 0;
    for (int i = 0; i < N; i++) {
        evict(b);
        uint64_t t0 = dp_now_ns();
        if (seal(b, impl, len) != 0)
            return -1;
        sum += dp_now_ns() - t0;
    }
    return (double)sum / N;
}

int main(int argc, char **argv)
{
    int rounds = argc > 1 ? atoi(argv[1]) : 5;
    struct bench b = {.junk_len = 8u << 20};
    static const size_t sizes[] = {24, 56, 1024, 4096 + 32, 16384, 196608 + 1600};
    if (sodium_init() < 0 || rounds < 1)
        return 1;
    b.buf = aligned_alloc(64, 1 << 20);
    b.other = aligned_alloc(64, 1 << 20);
    b.junk = malloc(b.junk_len);
    b.aes = aligned_alloc(16, (sizeof(*b.aes) + 15) & ~(size_t)15);
    b.evp[0] = EVP_CIPHER_CTX_new();
    b.evp[1] = EVP_CIPHER_CTX_new();
    if (!b.buf || !b.other || !b.junk || !b.aes || !b.evp[0] || !b.evp[1])
        return 1;
    randombytes_buf(b.key, sizeof(b.key));
    randombytes_buf(b.buf, 1 << 20);
    memset(b.junk, 0, b.junk_len);
    bool have_aes = crypto_aead_aes256gcm_is_available();
    if (have_aes)
        crypto_aead_aes256gcm_beforenm(b.aes, b.key);
    if (EVP_EncryptInit_ex(b.evp[0], EVP_aes_256_gcm(), NULL, b.key, NULL) != 1 ||
        EVP_EncryptInit_ex(b.evp[1], EVP_chacha20_poly1305(), NULL, b.key, NULL) != 1)
        return 1;
    for (size_t s = 0; s < sizeof(sizes) / sizeof(sizes[0]); s++)
        for (int i = 0; i < NIMPL; i++) {
            if (i == SODIUM_AESGCM && !have_aes)
                continue;
            double hot = hot_ns(&b, (enum impl)i, sizes[s], rounds), cold = cold_ns(&b, (enum impl)i, sizes[s]);
            if (hot < 0 || cold < 0)
                return 1;
            json_t *o = json_pack("{s:s, s:I, s:f, s:f, s:f}", "impl", impl_name[i], "bytes", (json_int_t)sizes[s],
                                  "hot_ns", hot, "cold_ns", cold, "hot_gbps", (double)sizes[s] / hot);
            char *t = o ? json_dumps(o, JSON_COMPACT | JSON_REAL_PRECISION(5)) : NULL;
            if (!t)
                return 1;
            printf("%s\n", t);
            free(t);
            json_decref(o);
        }
    return 0;
}
