#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdlib.h>
#include <string.h>

#include "evict_policy.h"

#define A(i) (0x10000000ULL + (uint64_t)(i) * 4096)

static void install(struct dp_evict *p, int owner, int i, uint64_t t)
{
    assert_true(dp_evict_record_fault(p, owner, A(i), t) >= 0);
    assert_int_equal(dp_evict_record_install(p, owner, A(i), t), 0);
}

static void evict(struct dp_evict *p, struct dp_evict_key *k, size_t n, uint64_t t)
{
    for (size_t i = 0; i < n; i++)
        dp_evict_done(p, k[i].owner, k[i].addr, t);
}

/* Cold pages installed once go first, oldest first. */
static void oldest_first(void **state)
{
    (void)state;
    struct dp_evict p;
    assert_int_equal(dp_evict_init(&p, NULL), 0);
    for (int i = 0; i < 10; i++)
        install(&p, 1, i, (uint64_t)i);
    struct dp_evict_key k[4];
    assert_int_equal(dp_evict_pick(&p, k, 4), 4);
    for (int i = 0; i < 4; i++) {
        assert_int_equal(k[i].owner, 1);
        assert_int_equal(k[i].addr, A(i));
    }
    assert_int_equal(p.st.evicting, 4);
    assert_int_equal(p.st.resident, 6);
    /* evicting pages are not picked twice */
    struct dp_evict_key k2[10];
    assert_int_equal(dp_evict_pick(&p, k2, 10), 6);
    for (int i = 0; i < 6; i++)
        assert_int_equal(k2[i].addr, A(4 + i));
    assert_int_equal(dp_evict_pick(&p, k2, 10), 0);
    assert_int_equal(dp_evict_check(&p), 0);
    dp_evict_free(&p);
}

/* A page re-faulted soon after its eviction is protected and outlives a
 * scan of cold pages (hot pages stay). */
static void refault_protects(void **state)
{
    (void)state;
    struct dp_evict p;
    struct dp_evict_cfg cfg = {.protected_frac = 0.5, .ghost_max = 100, .hot_hint = 0};
    assert_int_equal(dp_evict_init(&p, &cfg), 0);
    install(&p, 1, 0, 0);
    for (int i = 1; i < 4; i++)
        install(&p, 1, i, (uint64_t)i);
    struct dp_evict_key k[1];
    assert_int_equal(dp_evict_pick(&p, k, 1), 1);
    assert_int_equal(k[0].addr, A(0));
    evict(&p, k, 1, 10);
    assert_int_equal(p.st.ghosts, 1);
    /* touched again: re-fault */
    assert_int_equal(dp_evict_record_fault(&p, 1, A(0), 11), 1);
    assert_int_equal(dp_evict_record_install(&p, 1, A(0), 11), 0);
    assert_true(dp_evict_is_protected(&p, 1, A(0)));
    assert_int_equal(p.st.refaults, 1);
    /* a scan of 50 new cold pages: page 0 survives, the scan evicts itself */
    for (int round = 0; round < 50; round++) {
        install(&p, 1, 100 + round, 20 + (uint64_t)round);
        struct dp_evict_key v[1];
        assert_int_equal(dp_evict_pick(&p, v, 1), 1);
        assert_true(v[0].addr != A(0));
        evict(&p, v, 1, 20 + (uint64_t)round);
    }
    assert_true(dp_evict_is_protected(&p, 1, A(0)));
    assert_int_equal(dp_evict_check(&p), 0);
    dp_evict_free(&p);
}

/* A fault on a page evicted long ago (fell out of the ghost window) is not
 * a re-fault. */
static void ghost_window_is_bounded(void **state)
{
    (void)state;
    struct dp_evict p;
    struct dp_evict_cfg cfg = {.protected_frac = 0.5, .ghost_max = 8, .hot_hint = 0};
    assert_int_equal(dp_evict_init(&p, &cfg), 0);
    for (int i = 0; i < 20; i++)
        install(&p, 1, i, (uint64_t)i);
    struct dp_evict_key k[20];
    assert_int_equal(dp_evict_pick(&p, k, 20), 20);
    evict(&p, k, 20, 100);
    assert_int_equal(p.st.ghosts, 8);
    assert_int_equal(dp_evict_record_fault(&p, 1, A(0), 200), 0);   /* forgotten */
    assert_int_equal(dp_evict_record_fault(&p, 1, A(19), 200), 1);  /* recent */
    assert_int_equal(dp_evict_check(&p), 0);
    dp_evict_free(&p);
}

/* The protected share is bounded: when everything gets re-faulted, the
 * oldest protected pages are demoted and can be evicted. */
static void protected_share_bounded(void **state)
{
    (void)state;
    struct dp_evict p;
    struct dp_evict_cfg cfg = {.protected_frac = 0.25, .ghost_max = 1000, .hot_hint = 0};
    assert_int_equal(dp_evict_init(&p, &cfg), 0);
    for (int i = 0; i < 40; i++)
        install(&p, 1, i, (uint64_t)i);
    struct dp_evict_key k[40];
    assert_int_equal(dp_evict_pick(&p, k, 40), 40);
    evict(&p, k, 40, 50);
    for (int i = 0; i < 40; i++) {
        assert_int_equal(dp_evict_record_fault(&p, 1, A(i), 60 + (uint64_t)i), 1);
        assert_int_equal(dp_evict_record_install(&p, 1, A(i), 60 + (uint64_t)i), 0);
    }
    assert_true(p.st.protected_ <= 10);
    assert_int_equal(p.st.resident, 40);
    assert_true(p.st.demotions > 0);
    /* the most recently re-faulted ones are the protected ones */
    assert_true(dp_evict_is_protected(&p, 1, A(39)));
    assert_false(dp_evict_is_protected(&p, 1, A(0)));
    assert_int_equal(dp_evict_check(&p), 0);
    dp_evict_free(&p);
}

/* Access-count hints from the page server: hot pages start protected. */
static void hints_protect(void **state)
{
    (void)state;
    struct dp_evict p;
    struct dp_evict_cfg cfg = {.protected_frac = 0.5, .ghost_max = 100, .hot_hint = 5};
    assert_int_equal(dp_evict_init(&p, &cfg), 0);
    assert_int_equal(dp_evict_record_hint(&p, 1, A(0), 9), 0);   /* before install */
    install(&p, 1, 0, 0);
    for (int i = 1; i < 6; i++)
        install(&p, 1, i, (uint64_t)i);
    assert_int_equal(dp_evict_record_hint(&p, 1, A(1), 7), 0);   /* after install */
    assert_int_equal(dp_evict_record_hint(&p, 1, A(2), 2), 0);   /* not hot */
    assert_true(dp_evict_is_protected(&p, 1, A(0)));
    assert_true(dp_evict_is_protected(&p, 1, A(1)));
    assert_false(dp_evict_is_protected(&p, 1, A(2)));
    struct dp_evict_key k[4];
    assert_int_equal(dp_evict_pick(&p, k, 4), 4);
    for (int i = 0; i < 4; i++)
        assert_int_equal(k[i].addr, A(2 + i));
    assert_int_equal(dp_evict_check(&p), 0);
    dp_evict_free(&p);
}

/* Cancelled victims return; touch promotes; owners are separate. */
static void cancel_touch_owners(void **state)
{
    (void)state;
    struct dp_evict p;
    assert_int_equal(dp_evict_init(&p, NULL), 0);
    install(&p, 1, 0, 0);
    install(&p, 2, 0, 1);    /* same address, other address space (fork child) */
    install(&p, 1, 1, 2);
    dp_evict_record_touch(&p, 1, A(0), 3);
    assert_true(dp_evict_is_protected(&p, 1, A(0)));
    assert_false(dp_evict_is_protected(&p, 2, A(0)));
    struct dp_evict_key k[1];
    assert_int_equal(dp_evict_pick(&p, k, 1), 1);
    assert_int_equal(k[0].owner, 2);
    dp_evict_cancel(&p, k[0].owner, k[0].addr);
    assert_int_equal(p.st.cancels, 1);
    assert_int_equal(p.st.resident, 3);
    assert_int_equal(dp_evict_pick(&p, k, 1), 1);
    assert_int_equal(k[0].owner, 1);
    assert_int_equal(k[0].addr, A(1));
    dp_evict_forget_owner(&p, 2);
    assert_int_equal(p.st.resident, 1);
    assert_int_equal(p.st.evicting, 1);
    assert_int_equal(dp_evict_check(&p), 0);
    dp_evict_free(&p);
}

/* The application's REMOVE/UNMAP forgets pages; mremap moves them. */
static void forget_and_move(void **state)
{
    (void)state;
    struct dp_evict p;
    assert_int_equal(dp_evict_init(&p, NULL), 0);
    for (int i = 0; i < 10; i++)
        install(&p, 1, i, (uint64_t)i);
    dp_evict_record_touch(&p, 1, A(7), 20);
    dp_evict_forget(&p, 1, A(2), A(4));
    assert_int_equal(p.st.resident, 8);
    /* a huge range forgets by scanning records */
    dp_evict_forget(&p, 1, A(9), A(9) + (1ULL << 40));
    assert_int_equal(p.st.resident, 7);
    assert_int_equal(dp_evict_move(&p, 1, A(5), A(1000), 3 * 4096), 0);
    assert_true(dp_evict_is_protected(&p, 1, A(1002)));    /* was A(7) */
    assert_false(dp_evict_is_protected(&p, 1, A(7)));
    struct dp_evict_key k[10];
    size_t n = dp_evict_pick(&p, k, 10);
    assert_int_equal(n, 7);
    int found = 0;
    for (size_t i = 0; i < n; i++) {
        assert_true(k[i].addr < A(5) || k[i].addr > A(7));
        found += k[i].addr == A(1000);
    }
    assert_int_equal(found, 1);
    assert_int_equal(dp_evict_check(&p), 0);
    dp_evict_free(&p);
}

/* Random operations keep the structure consistent. */
static void random_ops_consistent(void **state)
{
    (void)state;
    struct dp_evict p;
    struct dp_evict_cfg cfg = {.protected_frac = 0.3, .ghost_max = 50, .hot_hint = 3};
    assert_int_equal(dp_evict_init(&p, &cfg), 0);
    uint64_t x = 12345;
    for (int step = 0; step < 20000; step++) {
        x = x * 6364136223846793005ULL + 1;
        int op = (int)((x >> 33) % 8);
        int pg = (int)((x >> 40) % 300);
        int owner = (int)((x >> 20) % 2);
        struct dp_evict_key k[8];
        size_t n;
        switch (op) {
        case 0: case 1:
            install(&p, owner, pg, (uint64_t)step);
            break;
        case 2:
            n = dp_evict_pick(&p, k, 8);
            for (size_t i = 0; i < n; i++) {
                if (i % 5 == 4)
                    dp_evict_cancel(&p, k[i].owner, k[i].addr);
                else
                    dp_evict_done(&p, k[i].owner, k[i].addr, (uint64_t)step);
            }
            break;
        case 3:
            dp_evict_record_touch(&p, owner, A(pg), (uint64_t)step);
            break;
        case 4:
            dp_evict_record_hint(&p, owner, A(pg), (uint32_t)(x % 6));
            break;
        case 5:
            dp_evict_forget(&p, owner, A(pg), A(pg + 3));
            break;
        case 6:
            if (step % 97 == 0)
                dp_evict_move(&p, owner, A(pg), A(pg + 500), 4 * 4096);
            break;
        default:
            dp_evict_record_fault(&p, owner, A(pg), (uint64_t)step);
            break;
        }
        if (step % 500 == 0)
            assert_int_equal(dp_evict_check(&p), 0);
        assert_true(p.st.ghosts <= 50);
    }
    assert_int_equal(dp_evict_check(&p), 0);
    dp_evict_free(&p);
}

static void vbuf_bounded_lru(void **state)
{
    (void)state;
    struct dp_vbuf v;
    dp_vbuf_init(&v, 3 * 4096);
    uint8_t pg[4096], out[4096];
    for (int i = 0; i < 5; i++) {
        memset(pg, i + 1, sizeof(pg));
        assert_int_equal(dp_vbuf_put(&v, 1, A(i), pg), 0);
        assert_true(v.bytes <= 3 * 4096);
    }
    assert_int_equal(v.overflows, 2);
    assert_int_equal(dp_vbuf_get(&v, 1, A(0), out), 0);   /* oldest dropped */
    assert_int_equal(dp_vbuf_get(&v, 1, A(4), out), 1);
    assert_int_equal(out[0], 5);
    assert_int_equal(out[4095], 5);
    assert_int_equal(dp_vbuf_get(&v, 1, A(4), out), 0);   /* get removes */
    assert_int_equal(dp_vbuf_get(&v, 2, A(3), out), 0);   /* other owner */
    /* a newer version replaces the old one */
    memset(pg, 0xAA, sizeof(pg));
    assert_int_equal(dp_vbuf_put(&v, 1, A(3), pg), 0);
    assert_int_equal(dp_vbuf_get(&v, 1, A(3), out), 1);
    assert_int_equal(out[10], 0xAA);
    dp_vbuf_drop(&v, 1, A(2));
    assert_int_equal(dp_vbuf_get(&v, 1, A(2), out), 0);
    assert_int_equal(v.bytes, 0);
    for (int i = 0; i < 3; i++)
        assert_int_equal(dp_vbuf_put(&v, 1, A(i), pg), 0);
    dp_vbuf_drop_range(&v, 1, A(1), A(1) + (1ULL << 40));
    assert_int_equal(v.bytes, 4096);
    assert_int_equal(dp_vbuf_get(&v, 1, A(0), out), 1);
    dp_vbuf_free(&v);
    struct dp_vbuf z;
    dp_vbuf_init(&z, 100);          /* smaller than a page: keeps nothing */
    assert_int_equal(dp_vbuf_put(&z, 1, A(0), pg), -1);
    dp_vbuf_free(&z);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(oldest_first),
        cmocka_unit_test(refault_protects),
        cmocka_unit_test(ghost_window_is_bounded),
        cmocka_unit_test(protected_share_bounded),
        cmocka_unit_test(hints_protect),
        cmocka_unit_test(cancel_touch_owners),
        cmocka_unit_test(forget_and_move),
        cmocka_unit_test(random_ops_consistent),
        cmocka_unit_test(vbuf_bounded_lru),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
