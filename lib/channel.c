/* channel: key schedule and AEAD records of the page-server protocol (see
 * channel.h for the construction and docs/protocol.md §3 for why). */
#include "channel.h"

#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

/* ---- cipher choice ---------------------------------------------------- */

/* AES-256-GCM only where libsodium runs it in hardware (AES-NI + PCLMUL):
 * it is then the fastest AEAD here and constant time; elsewhere ChaCha20. */
uint32_t dp_chan_ciphers_local(void)
{
    return DP_CIPHER_CHACHA20POLY1305 | (crypto_aead_aes256gcm_is_available() ? DP_CIPHER_AES256GCM : 0);
}

/* The server prefers AES-GCM when both ends can run it in hardware. */
uint32_t dp_chan_pick_cipher(uint32_t offered)
{
    uint32_t both = offered & dp_chan_ciphers_local();
    if (both & DP_CIPHER_AES256GCM)
        return DP_CIPHER_AES256GCM;
    if (both & DP_CIPHER_CHACHA20POLY1305)
        return DP_CIPHER_CHACHA20POLY1305;
    return 0;
}

/* Names for log lines and JSON. */
const char *dp_chan_cipher_name(uint32_t cipher)
{
    switch (cipher) {
    case DP_CIPHER_AES256GCM: return "aes256gcm";
    case DP_CIPHER_CHACHA20POLY1305: return "chacha20poly1305";
    default: return "none";
    }
}

/* ---- key schedule ------------------------------------------------------ */

/* Hashes both HELLO payloads, so every field either side offered or chose
 * (versions, plaintext flag, cipher, ephemeral keys, nonces, checkpoint
 * identity) enters the keys and the MACs. */
void dp_chan_transcript(const uint8_t *hello, size_t hello_len, const uint8_t *reply, size_t reply_len,
                        uint8_t th[32])
{
    static const char label[] = "DistriProc-handshake-v3";
    uint8_t n[8];
    crypto_generichash_state st;
    crypto_generichash_init(&st, NULL, 0, 32);
    crypto_generichash_update(&st, (const uint8_t *)label, sizeof(label) - 1);
    /* lengths first: the two payloads cannot be re-split between messages */
    dp_put_u32(n, (uint32_t)hello_len);
    dp_put_u32(n + 4, (uint32_t)reply_len);
    crypto_generichash_update(&st, n, sizeof(n));
    crypto_generichash_update(&st, hello, hello_len);
    crypto_generichash_update(&st, reply, reply_len);
    crypto_generichash_final(&st, th, 32);
}

/* One AEAD context per direction, keyed once; each record only sets its
 * nonce. The records are standard AES-256-GCM and ChaCha20-Poly1305 (IETF).
 * Two implementations of the same algorithm, chosen by record size, by
 * measurement on this project's VM:
 * - Records of up to SMALL_RECORD bytes (headers, requests, acknowledgements,
 *   and a fault's one or few pages) go through libsodium. Alone, libcrypto
 *   seals a 4 KiB page faster (tests/helpers/aeadbench: 1.3 us against
 *   2.6-3.5 us in a loop, 2.5-2.8 against 3.1-3.2 us with the data caches
 *   cold), but a fault's record is sealed once between wake-ups, after the
 *   network stack has run, and there libcrypto's longer call path (EVP,
 *   provider, then the AES code) costs more than it saves. `bench server`
 *   measured the secure channel's extra CPU per 4 KiB GET, client/server,
 *   with pages through libcrypto at +14.2/+18.7 and +14.2/+18.2 us, and
 *   through libsodium at +6.4/+11.6 and +5.2/+10.2 us, in alternating runs
 *   of the same hour (bench/results/server-encrypted-ab.txt). Its fixed cost
 *   per small record is lower too (24 bytes: 0.15 us hot against 0.27).
 * - Larger records (bulk replies, prefetch runs) go through OpenSSL's
 *   libcrypto, whose stitched AES-NI code wins once a record is long
 *   (192 KiB: ~2.5 GB/s against libsodium's ~1.7).
 * The key schedule stays on libsodium. */
#define SMALL_RECORD 16384
static int dir_init(struct dp_chan_dir *d, uint32_t cipher, bool encrypt)
{
    d->counter = 0;
    d->aes = NULL;
    if (cipher == DP_CIPHER_AES256GCM) {
        d->aes = aligned_alloc(16, (sizeof(*d->aes) + 15) & ~(size_t)15);
        if (!d->aes)
            return -1;
        crypto_aead_aes256gcm_beforenm(d->aes, d->key);
    }
    d->ctx = EVP_CIPHER_CTX_new();
    const EVP_CIPHER *c = cipher == DP_CIPHER_AES256GCM ? EVP_aes_256_gcm() : EVP_chacha20_poly1305();
    if (!d->ctx || EVP_CipherInit_ex(d->ctx, c, NULL, NULL, NULL, encrypt) != 1 ||
        EVP_CIPHER_CTX_ctrl(d->ctx, EVP_CTRL_AEAD_SET_IVLEN, 12, NULL) != 1 ||
        EVP_CipherInit_ex(d->ctx, NULL, NULL, d->key, NULL, encrypt) != 1)
        return -1;
    return 0;
}

/* The key schedule of channel.h: X25519, then HMAC-SHA512 over the PSK, the
 * shared secret and the transcript, then one BLAKE2b-KDF key per purpose. */
int dp_chan_derive(const uint8_t *psk, size_t psk_len, const uint8_t own_sk[32], const uint8_t peer_pk[32],
                   const uint8_t th[32], uint32_t cipher, bool server, bool encrypt, struct dp_chan *chan,
                   uint8_t client_mac[32], uint8_t server_mac[32], struct dp_err *err)
{
    static const char label[] = "DistriProc-keys-v3";
    static const char ctx[crypto_kdf_CONTEXTBYTES + 1] = "DPchan3_";
    memset(chan, 0, sizeof(*chan));
    if (cipher != DP_CIPHER_AES256GCM && cipher != DP_CIPHER_CHACHA20POLY1305) {
        dp_err_set(err, "unknown cipher %u", cipher);
        return -1;
    }
    uint8_t ss[crypto_scalarmult_BYTES];
    if (crypto_scalarmult(ss, own_sk, peer_pk) != 0) {
        dp_err_set(err, "the peer's ephemeral key is a low-order point (an attack, or a broken peer)");
        return -1;
    }
    uint8_t prk[crypto_auth_hmacsha512_BYTES];
    crypto_auth_hmacsha512_state st;
    crypto_auth_hmacsha512_init(&st, psk, psk_len);
    crypto_auth_hmacsha512_update(&st, (const uint8_t *)label, sizeof(label) - 1);
    crypto_auth_hmacsha512_update(&st, ss, sizeof(ss));
    crypto_auth_hmacsha512_update(&st, th, 32);
    crypto_auth_hmacsha512_final(&st, prk);
    uint8_t c2s[32], s2c[32], kc[32], ks[32];
    crypto_kdf_derive_from_key(c2s, 32, 1, ctx, prk);
    crypto_kdf_derive_from_key(s2c, 32, 2, ctx, prk);
    crypto_kdf_derive_from_key(kc, 32, 3, ctx, prk);
    crypto_kdf_derive_from_key(ks, 32, 4, ctx, prk);
    crypto_auth_hmacsha256(client_mac, th, 32, kc);
    crypto_auth_hmacsha256(server_mac, th, 32, ks);
    chan->cipher = cipher;
    memcpy(chan->tx.key, server ? s2c : c2s, 32);
    memcpy(chan->rx.key, server ? c2s : s2c, 32);
    int rc = 0;
    if (dir_init(&chan->tx, cipher, true) < 0 || dir_init(&chan->rx, cipher, false) < 0) {
        dp_err_set(err, "cannot set up the %s cipher (libcrypto)", dp_chan_cipher_name(cipher));
        dp_chan_free(chan);
        rc = -1;
    } else {
        chan->secure = encrypt;
    }
    sodium_memzero(ss, sizeof(ss));
    sodium_memzero(prk, sizeof(prk));
    sodium_memzero(&st, sizeof(st));
    sodium_memzero(c2s, 32);
    sodium_memzero(s2c, 32);
    sodium_memzero(kc, 32);
    sodium_memzero(ks, 32);
    return rc;
}

/* Frees the AEAD contexts and wipes every key. */
void dp_chan_free(struct dp_chan *chan)
{
    struct dp_chan_dir *d[2] = {&chan->tx, &chan->rx};
    for (int i = 0; i < 2; i++) {
        if (d[i]->ctx)
            EVP_CIPHER_CTX_free(d[i]->ctx); /* clears the key schedule */
        if (d[i]->aes) {
            sodium_memzero(d[i]->aes, sizeof(*d[i]->aes));
            free(d[i]->aes);
        }
    }
    sodium_memzero(chan, sizeof(*chan));
}

/* ---- records ------------------------------------------------------------ */

/* The nonce of record n: n (u64 LE) then 4 zero bytes. Unique per key since
 * each direction has its own key and the counter never wraps (checked). */
static int next_nonce(struct dp_chan_dir *d, uint8_t nonce[12])
{
    if (d->counter == UINT64_MAX)
        return -1;
    dp_put_u64(nonce, d->counter++);
    memset(nonce + 8, 0, 4);
    return 0;
}

/* Encrypts len bytes of m into c (c may equal m) and writes the tag. */
static int seal_one(struct dp_chan *chan, uint8_t *c, const uint8_t *m, size_t len, uint8_t tag[DP_CHAN_TAG])
{
    uint8_t nonce[12];
    int n = 0, fin = 0;
    EVP_CIPHER_CTX *x = chan->tx.ctx;
    if (len > INT32_MAX || next_nonce(&chan->tx, nonce) < 0)
        return -1;
    if (len <= SMALL_RECORD && chan->cipher == DP_CIPHER_AES256GCM)
        return crypto_aead_aes256gcm_encrypt_detached_afternm(c, tag, NULL, m, len, NULL, 0, NULL, nonce,
                                                              chan->tx.aes);
    if (len <= SMALL_RECORD)
        return crypto_aead_chacha20poly1305_ietf_encrypt_detached(c, tag, NULL, m, len, NULL, 0, NULL, nonce,
                                                                  chan->tx.key);
    if (EVP_EncryptInit_ex(x, NULL, NULL, NULL, nonce) != 1 || EVP_EncryptUpdate(x, c, &n, m, (int)len) != 1 ||
        EVP_EncryptFinal_ex(x, c + n, &fin) != 1 || EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_GET_TAG, DP_CHAN_TAG, tag) != 1)
        return -1;
    return 0;
}

/* Decrypts in place and verifies the tag; the counter advances only on
 * success. The buffer holds unverified bytes after a failure: every caller
 * then drops the connection without looking at them. */
static int open_one(struct dp_chan *chan, uint8_t *buf, size_t len, const uint8_t tag[DP_CHAN_TAG])
{
    uint8_t nonce[12], t[DP_CHAN_TAG];
    int n = 0, fin = 0;
    EVP_CIPHER_CTX *x = chan->rx.ctx;
    if (chan->rx.counter == UINT64_MAX || len > INT32_MAX)
        return -1;
    dp_put_u64(nonce, chan->rx.counter);
    memset(nonce + 8, 0, 4);
    memcpy(t, tag, DP_CHAN_TAG); /* the tag may lie right behind buf: keep it from the decryption */
    if (len <= SMALL_RECORD) {
        int rc = chan->cipher == DP_CIPHER_AES256GCM
                     ? crypto_aead_aes256gcm_decrypt_detached_afternm(buf, NULL, buf, len, t, NULL, 0, nonce,
                                                                      chan->rx.aes)
                     : crypto_aead_chacha20poly1305_ietf_decrypt_detached(buf, NULL, buf, len, t, NULL, 0, nonce,
                                                                          chan->rx.key);
        if (rc != 0)
            return -1;
        chan->rx.counter++;
        return 0;
    }
    if (EVP_DecryptInit_ex(x, NULL, NULL, NULL, nonce) != 1 || EVP_DecryptUpdate(x, buf, &n, buf, (int)len) != 1 ||
        EVP_CIPHER_CTX_ctrl(x, EVP_CTRL_AEAD_SET_TAG, DP_CHAN_TAG, t) != 1 ||
        EVP_DecryptFinal_ex(x, buf + n, &fin) != 1)
        return -1;
    chan->rx.counter++;
    return 0;
}

/* Header record, then payload record (if any), each with the next counter. */
int dp_chan_seal(struct dp_chan *chan, const uint8_t hdr[DP_HDR_SIZE], const uint8_t *payload, uint8_t *out)
{
    uint32_t len = dp_get_u32(hdr + 16);
    if (seal_one(chan, out, hdr, DP_HDR_SIZE, out + DP_HDR_SIZE) < 0)
        return -1;
    if (len && seal_one(chan, out + DP_CHAN_HDR_REC, payload, len, out + DP_CHAN_HDR_REC + len) < 0)
        return -1;
    return 0;
}

/* As dp_chan_seal, over a buffer laid out as the records will be. */
int dp_chan_seal_inplace(struct dp_chan *chan, uint8_t *rec)
{
    uint32_t len = dp_get_u32(rec + 16);
    if (seal_one(chan, rec, rec, DP_HDR_SIZE, rec + DP_HDR_SIZE) < 0)
        return -1;
    if (len && seal_one(chan, rec + DP_CHAN_HDR_REC, rec + DP_CHAN_HDR_REC, len, rec + DP_CHAN_HDR_REC + len) < 0)
        return -1;
    return 0;
}

/* The fixed-size header record: 24 bytes and their tag. */
int dp_chan_open_hdr(struct dp_chan *chan, uint8_t rec[DP_CHAN_HDR_REC])
{
    return open_one(chan, rec, DP_HDR_SIZE, rec + DP_HDR_SIZE);
}

/* The payload record whose length the opened header gave. */
int dp_chan_open_payload(struct dp_chan *chan, uint8_t *rec, uint32_t len)
{
    return open_one(chan, rec, len, rec + len);
}

/* The one place a peer's outgoing message becomes wire bytes (sealed, or
 * unchanged in plaintext mode). */
int dp_chan_append(struct dp_chan *chan, struct dp_buf *b, const uint8_t *msg, size_t msg_len)
{
    if (msg_len < DP_HDR_SIZE || dp_get_u32(msg + 16) != msg_len - DP_HDR_SIZE)
        return -1;
    if (!chan->secure)
        return dp_buf_put(b, msg, msg_len);
    size_t n = dp_chan_sealed_len((uint32_t)(msg_len - DP_HDR_SIZE));
    if (dp_buf_reserve(b, n) < 0)
        return -1;
    if (dp_chan_seal(chan, msg, msg + DP_HDR_SIZE, b->data + b->len) < 0)
        return -1;
    b->len += n;
    return 0;
}
