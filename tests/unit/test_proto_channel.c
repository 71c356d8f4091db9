/* Unit tests for lib/channel.c: the key schedule and records against known
 * answers computed by an independent implementation (Python's hashlib/hmac
 * and the `cryptography` package: tests/integration/dpchan.py), and every way
 * a record can be tampered with: a flipped bit, a replayed, reordered or
 * dropped record, a record from another connection. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "channel.h"

static void hex(const char *s, uint8_t *out)
{
    for (size_t i = 0; s[2 * i]; i++) {
        unsigned v;
        sscanf(s + 2 * i, "%2x", &v);
        out[i] = (uint8_t)v;
    }
}

static const uint8_t csk[32] = {[0 ... 31] = 0x11}, ssk[32] = {[0 ... 31] = 0x22};

/* The test's fixed handshake: psk 00..1f, HELLO 'H'*80, reply 'R'*128. */
static void setup_pair(uint32_t cipher, struct dp_chan *cl, struct dp_chan *sv, uint8_t cm[32], uint8_t sm[32])
{
    uint8_t psk[32], hello[80], reply[128], th[32], cpk[32], spk[32], cm2[32], sm2[32];
    for (int i = 0; i < 32; i++)
        psk[i] = (uint8_t)i;
    memset(hello, 'H', sizeof(hello));
    memset(reply, 'R', sizeof(reply));
    dp_chan_transcript(hello, sizeof(hello), reply, sizeof(reply), th);
    crypto_scalarmult_base(cpk, csk);
    crypto_scalarmult_base(spk, ssk);
    struct dp_err err;
    assert_int_equal(dp_chan_derive(psk, 32, csk, spk, th, cipher, false, true, cl, cm, sm, &err), 0);
    assert_int_equal(dp_chan_derive(psk, 32, ssk, cpk, th, cipher, true, true, sv, cm2, sm2, &err), 0);
    assert_memory_equal(cm, cm2, 32);
    assert_memory_equal(sm, sm2, 32);
}

static void known_answers(void **state)
{
    (void)state;
    if (!crypto_aead_aes256gcm_is_available())
        skip();
    uint8_t want[64], th[32], hello[80], reply[128], pk[32];
    memset(hello, 'H', sizeof(hello));
    memset(reply, 'R', sizeof(reply));
    dp_chan_transcript(hello, sizeof(hello), reply, sizeof(reply), th);
    hex("90ed88a58d19878570ec0a3eb1514248dfd4f59b2d80bbb9c5d98ca037d4315e", want);
    assert_memory_equal(th, want, 32);
    crypto_scalarmult_base(pk, csk);
    hex("7b4e909bbe7ffe44c465a220037d608ee35897d31ef972f07f74892cb0f73f13", want);
    assert_memory_equal(pk, want, 32);

    static const char *recs[3] = {
        NULL,
        "d9415bf135f31a7f141a012c678c87796cd997e6bfa473eec5e305736991de7a232aecdfb0d12f90c7159f823c397ee2f7d59f45f2"
        "ae3d9d1adc75e355",
        "6bedbb03447ed48a9b3c9e921cca2c22e3622b53818801496644bf398743643107c367b33e6545c1b67d8dd2847882c08d2fd041f1"
        "a6a149ebdcd88d48",
    };
    for (uint32_t cipher = 1; cipher <= 2; cipher++) {
        struct dp_chan cl, sv;
        uint8_t cm[32], sm[32];
        setup_pair(cipher, &cl, &sv, cm, sm);
        hex("4bd065c15bf53b1b634fabaa1652540f9a4f1c42a3c36c90049e8fe930eb3170", want);
        assert_memory_equal(cm, want, 32);
        hex("ca5a4147a9d55930929eff3a943cacf659ec29e7b3a556ffc1176a1419ad4765", want);
        assert_memory_equal(sm, want, 32);
        /* GET_PAGES header, id 3, 5 payload bytes "hello": 40 + 21 bytes */
        struct dp_hdr h = {.version = 1, .type = DP_MSG_GET_PAGES, .id = 3, .len = 5};
        uint8_t hdr[DP_HDR_SIZE], out[61], rec[61];
        dp_hdr_encode(hdr, &h);
        assert_int_equal(dp_chan_sealed_len(5), 61);
        assert_int_equal(dp_chan_seal(&cl, hdr, (const uint8_t *)"hello", out), 0);
        hex(recs[cipher], rec);
        assert_memory_equal(out, rec, 61);
        assert_int_equal(dp_chan_open_hdr(&sv, out), 0);
        assert_memory_equal(out, hdr, DP_HDR_SIZE);
        assert_int_equal(dp_chan_open_payload(&sv, out + DP_CHAN_HDR_REC, 5), 0);
        assert_memory_equal(out + DP_CHAN_HDR_REC, "hello", 5);
        /* Sealed in place (the GET reply's path): the same bytes as a copy
         * sealed with the same counter. */
        uint8_t inplace[61] = {0}, copy[61];
        memcpy(inplace, hdr, DP_HDR_SIZE);
        memcpy(inplace + DP_CHAN_HDR_REC, "world", 5);
        struct dp_chan cl2 = cl;
        assert_int_equal(dp_chan_seal(&cl, hdr, (const uint8_t *)"world", copy), 0);
        assert_int_equal(dp_chan_seal_inplace(&cl2, inplace), 0);
        assert_memory_equal(inplace, copy, 61);
        assert_int_equal(dp_chan_open_hdr(&sv, inplace), 0);
        assert_int_equal(dp_chan_open_payload(&sv, inplace + DP_CHAN_HDR_REC, 5), 0);
        assert_memory_equal(inplace + DP_CHAN_HDR_REC, "world", 5);
        /* A 1000-byte record (libsodium's path):
         * server to client, 1000 payload bytes, against the Python answer;
         * then a flipped bit in it is caught. */
        static const char *big[3] = {NULL, "d98a7ed7dd01ebcd41cd8ef39d01a00d3e3e7d1f4cac692c78657ac45ed0dd54",
                                     "9bbec3134af27fa5c45bf9ed12bd3125cb6affa4a8eba875ab5ba2039bf3ad3e"};
        struct dp_chan cl3, sv3;
        setup_pair(cipher, &cl3, &sv3, cm, sm);
        struct dp_hdr bh = {.version = 1, .type = DP_MSG_GET_PAGES | DP_MSG_REPLY, .id = 9, .len = 1000};
        uint8_t bhdr[DP_HDR_SIZE], pl[1000], brec[1056], sum[32];
        dp_hdr_encode(bhdr, &bh);
        for (int i = 0; i < 1000; i++)
            pl[i] = (uint8_t)(i * 7 % 256);
        assert_int_equal(dp_chan_seal(&sv3, bhdr, pl, brec), 0);
        crypto_generichash(sum, 32, brec, sizeof(brec), NULL, 0);
        hex(big[cipher], want);
        assert_memory_equal(sum, want, 32);
        brec[DP_CHAN_HDR_REC + 500] ^= 0x08;
        assert_int_equal(dp_chan_open_hdr(&cl3, brec), 0);
        assert_int_equal(dp_chan_open_payload(&cl3, brec + DP_CHAN_HDR_REC, 1000), -1);
        dp_chan_free(&cl3);
        dp_chan_free(&sv3);
        /* A record above SMALL_RECORD (16 KiB) takes libcrypto's path, the
         * ones above libsodium's: its bytes must be what libsodium's own
         * implementation of the same AEAD makes with the same key and nonce
         * (the payload record is the direction's second record: nonce 1). */
        enum { HUGE = 20000 };
        static uint8_t hpl[HUGE], hrec[DP_CHAN_HDR_REC + HUGE + DP_CHAN_TAG], hwant[HUGE + DP_CHAN_TAG];
        struct dp_chan cl4, sv4;
        setup_pair(cipher, &cl4, &sv4, cm, sm);
        struct dp_hdr hh = {.version = 1, .type = DP_MSG_GET_PAGES | DP_MSG_REPLY, .id = 10, .len = HUGE};
        uint8_t hhdr[DP_HDR_SIZE], nonce[12] = {1};
        dp_hdr_encode(hhdr, &hh);
        for (int i = 0; i < HUGE; i++)
            hpl[i] = (uint8_t)(i * 13 % 251);
        unsigned long long wl;
        if (cipher == DP_CIPHER_AES256GCM)
            crypto_aead_aes256gcm_encrypt(hwant, &wl, hpl, HUGE, NULL, 0, NULL, nonce, sv4.tx.key);
        else
            crypto_aead_chacha20poly1305_ietf_encrypt(hwant, &wl, hpl, HUGE, NULL, 0, NULL, nonce, sv4.tx.key);
        assert_int_equal(wl, HUGE + DP_CHAN_TAG);
        assert_int_equal(dp_chan_seal(&sv4, hhdr, hpl, hrec), 0);
        assert_memory_equal(hrec + DP_CHAN_HDR_REC, hwant, HUGE + DP_CHAN_TAG);
        assert_int_equal(dp_chan_open_hdr(&cl4, hrec), 0);
        assert_int_equal(dp_chan_open_payload(&cl4, hrec + DP_CHAN_HDR_REC, HUGE), 0);
        assert_memory_equal(hrec + DP_CHAN_HDR_REC, hpl, HUGE);
        dp_chan_free(&cl4);
        dp_chan_free(&sv4);
        dp_chan_free(&cl);
        dp_chan_free(&sv);
    }
}

/* Seals n messages of growing payloads from cl into one buffer. */
static void seal_some(struct dp_chan *cl, struct dp_buf *b, int n)
{
    for (int i = 0; i < n; i++) {
        uint8_t msg[DP_HDR_SIZE + 100];
        struct dp_hdr h = {.version = 1, .type = DP_MSG_STATS, .id = (uint64_t)i + 1, .len = (uint32_t)i * 10};
        dp_hdr_encode(msg, &h);
        memset(msg + DP_HDR_SIZE, 'a' + i, h.len);
        assert_int_equal(dp_chan_append(cl, b, msg, DP_HDR_SIZE + h.len), 0);
    }
}

/* Opens message i (0-based) at rec; returns -1 at the first failing record. */
static int open_msg(struct dp_chan *sv, uint8_t *rec, int i)
{
    if (dp_chan_open_hdr(sv, rec) < 0)
        return -1;
    struct dp_hdr h;
    struct dp_err err;
    assert_int_equal(dp_hdr_decode(rec, DP_MAX_PAYLOAD, &h, &err), DP_E_OK);
    assert_int_equal(h.id, (uint64_t)i + 1);
    if (h.len && dp_chan_open_payload(sv, rec + DP_CHAN_HDR_REC, h.len) < 0)
        return -1;
    for (uint32_t k = 0; k < h.len; k++)
        assert_int_equal(rec[DP_CHAN_HDR_REC + k], 'a' + i);
    return 0;
}

static size_t msg_off(int i)
{
    size_t off = 0;
    for (int k = 0; k < i; k++)
        off += dp_chan_sealed_len((uint32_t)k * 10);
    return off;
}

static void tampering_is_detected(void **state)
{
    (void)state;
    for (uint32_t cipher = 1; cipher <= 2; cipher++) {
        if (cipher == DP_CIPHER_AES256GCM && !crypto_aead_aes256gcm_is_available())
            continue;
        struct dp_chan cl, sv;
        uint8_t cm[32], sm[32];
        struct dp_buf b = {0};

        /* Untouched: all four open, in order. */
        setup_pair(cipher, &cl, &sv, cm, sm);
        seal_some(&cl, &b, 4);
        assert_int_equal(b.len, msg_off(4));
        uint8_t *copy = malloc(b.len);
        memcpy(copy, b.data, b.len);
        for (int i = 0; i < 4; i++)
            assert_int_equal(open_msg(&sv, b.data + msg_off(i), i), 0);
        dp_chan_free(&cl);
        dp_chan_free(&sv);

        /* Every single flipped bit anywhere is caught. */
        for (size_t at = 0; at < msg_off(4); at += 7) {
            setup_pair(cipher, &cl, &sv, cm, sm);
            memcpy(b.data, copy, b.len);
            b.data[at] ^= 0x10;
            int failed = 0;
            for (int i = 0; i < 4 && !failed; i++)
                failed = open_msg(&sv, b.data + msg_off(i), i) < 0;
            assert_true(failed);
            dp_chan_free(&cl);
            dp_chan_free(&sv);
        }

        /* Replay of message 1 after it was accepted; reordering; a dropped record. */
        setup_pair(cipher, &cl, &sv, cm, sm);
        memcpy(b.data, copy, b.len);
        assert_int_equal(open_msg(&sv, b.data + msg_off(0), 0), 0);
        assert_int_equal(open_msg(&sv, b.data + msg_off(1), 1), 0);
        memcpy(b.data, copy, b.len);
        assert_int_equal(dp_chan_open_hdr(&sv, b.data + msg_off(1)), -1); /* replayed */
        assert_int_equal(dp_chan_open_hdr(&sv, b.data + msg_off(3)), -1); /* skipped 2: reordered/dropped */
        assert_int_equal(open_msg(&sv, b.data + msg_off(2), 2), 0);       /* state untouched by failures */
        dp_chan_free(&cl);
        dp_chan_free(&sv);

        /* A record of one connection never opens on another (fresh ephemerals). */
        struct dp_chan c2, s2;
        uint8_t psk[32] = {1}, th[32] = {2}, a[32], bb[32], sk1[32], sk2[32], pk1[32], pk2[32];
        struct dp_err err;
        randombytes_buf(sk1, 32);
        randombytes_buf(sk2, 32);
        crypto_scalarmult_base(pk1, sk1);
        crypto_scalarmult_base(pk2, sk2);
        assert_int_equal(dp_chan_derive(psk, 32, sk1, pk2, th, cipher, true, true, &s2, a, bb, &err), 0);
        assert_int_equal(open_msg(&s2, copy, 0), -1);
        /* And the two ends of it agree, with the directions' keys distinct. */
        assert_int_equal(dp_chan_derive(psk, 32, sk2, pk1, th, cipher, false, true, &c2, a, bb, &err), 0);
        assert_memory_equal(c2.tx.key, s2.rx.key, 32);
        assert_memory_equal(c2.rx.key, s2.tx.key, 32);
        assert_memory_not_equal(c2.tx.key, c2.rx.key, 32);
        dp_chan_free(&c2);
        dp_chan_free(&s2);
        free(copy);
        dp_buf_free(&b);
    }
}

static void derive_refuses_bad_inputs(void **state)
{
    (void)state;
    struct dp_chan ch;
    uint8_t psk[32] = {0}, th[32] = {0}, zero[32] = {0}, a[32], b[32];
    struct dp_err err;
    /* The all-zero public key is a low-order point: the shared secret would be 0. */
    assert_int_equal(dp_chan_derive(psk, 32, csk, zero, th, DP_CIPHER_CHACHA20POLY1305, true, true, &ch, a, b, &err),
                     -1);
    assert_non_null(strstr(err.msg, "low-order"));
    uint8_t pk[32];
    crypto_scalarmult_base(pk, ssk);
    assert_int_equal(dp_chan_derive(psk, 32, csk, pk, th, 7, true, true, &ch, a, b, &err), -1);
    /* A message whose length field disagrees with its size is not sealed. */
    uint8_t cm[32], sm[32];
    struct dp_chan cl, sv;
    setup_pair(DP_CIPHER_CHACHA20POLY1305, &cl, &sv, cm, sm);
    uint8_t msg[DP_HDR_SIZE + 4];
    struct dp_hdr h = {.version = 1, .type = DP_MSG_STATS, .id = 1, .len = 5};
    dp_hdr_encode(msg, &h);
    struct dp_buf buf = {0};
    assert_int_equal(dp_chan_append(&cl, &buf, msg, sizeof(msg)), -1);
    /* Plaintext mode appends the message unchanged. */
    cl.secure = false;
    h.len = 4;
    dp_hdr_encode(msg, &h);
    assert_int_equal(dp_chan_append(&cl, &buf, msg, sizeof(msg)), 0);
    assert_memory_equal(buf.data, msg, sizeof(msg));
    dp_buf_free(&buf);
    dp_chan_free(&cl);
    dp_chan_free(&sv);
    /* Cipher choice: AES-GCM only when both have it. */
    assert_int_equal(dp_chan_pick_cipher(DP_CIPHER_CHACHA20POLY1305), DP_CIPHER_CHACHA20POLY1305);
    assert_int_equal(dp_chan_pick_cipher(0), 0);
    if (crypto_aead_aes256gcm_is_available())
        assert_int_equal(dp_chan_pick_cipher(3), DP_CIPHER_AES256GCM);
}

int main(void)
{
    if (sodium_init() < 0)
        return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(known_answers),
        cmocka_unit_test(tampering_is_detected),
        cmocka_unit_test(derive_refuses_bad_inputs),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
