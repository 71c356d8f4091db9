/* hashbench: ns per 4 KiB page for dp_page_hash and libsodium BLAKE2b-128
 * (crypto_generichash, 16-byte output), over a buffer larger than the L2
 * cache. Prints one JSON line. Used to choose the dirty-page hash. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sodium.h>

#include "dirty.h"
#include "util.h"

int main(int argc, char **argv)
{
    size_t pages = argc > 1 ? (size_t)atol(argv[1]) : 4096;
    int reps = argc > 2 ? atoi(argv[2]) : 20;
    if (sodium_init() < 0 || pages < 1 || reps < 1)
        return 1;
    uint8_t *buf = malloc(pages * 4096);
    if (!buf)
        return 1;
    randombytes_buf(buf, pages * 4096);
    uint64_t sink = 0, t0 = dp_now_ns();
    for (int r = 0; r < reps; r++)
        for (size_t i = 0; i < pages; i++)
            sink ^= dp_page_hash((uint64_t)r, buf + i * 4096).lo;
    double ours = (double)(dp_now_ns() - t0) / (double)(pages * (size_t)reps);
    t0 = dp_now_ns();
    for (int r = 0; r < reps; r++)
        for (size_t i = 0; i < pages; i++) {
            uint8_t out[16];
            crypto_generichash(out, sizeof(out), buf + i * 4096, 4096, NULL, 0);
            sink ^= out[0];
        }
    double blake = (double)(dp_now_ns() - t0) / (double)(pages * (size_t)reps);
    printf("{\"pages\":%zu,\"reps\":%d,\"dp_page_hash_ns\":%.0f,\"blake2b128_ns\":%.0f,"
           "\"dp_page_hash_gbps\":%.2f,\"blake2b128_gbps\":%.2f,\"sink\":%u}\n",
           pages, reps, ours, blake, 4096.0 / ours, 4096.0 / blake, (unsigned)(sink & 1));
    free(buf);
    return 0;
}
