/* Unit tests for key files (the pure parser) and the pure ownership/mode
 * checks of keys, work directories and local-socket peers. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <cmocka.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include "key.h"
#include "perm.h"

/* ---- key text ---- */

static const char HEX[] = "c47fd7c04a92c254b45dc17e84b3018bf8c4a4a176ebbdd10b6ab5c448fbbc25";

/* Parses a C string as key-file bytes. */
static int parse(const char *text, uint8_t key[DP_KEY_LEN], struct dp_err *err)
{
    return dp_key_parse((const uint8_t *)text, strlen(text), key, err);
}

/* What keygen writes, and the bare digits older versions wrote, both decode
 * to the same 32 bytes. */
static void key_accepts_keygen_output(void **state)
{
    (void)state;
    uint8_t k[DP_KEY_LEN], k2[DP_KEY_LEN];
    struct dp_err err;
    char line[160];
    snprintf(line, sizeof(line), "%s%s\n", DP_KEY_HEADER, HEX);
    assert_int_equal(parse(line, k, &err), 0);
    assert_int_equal(k[0], 0xc4);
    assert_int_equal(k[31], 0x25);
    snprintf(line, sizeof(line), "%s%s", DP_KEY_HEADER, HEX); /* no newline */
    assert_int_equal(parse(line, k2, &err), 0);
    assert_memory_equal(k, k2, DP_KEY_LEN);
    snprintf(line, sizeof(line), "%s\r\n", HEX); /* legacy, CRLF */
    assert_int_equal(parse(line, k2, &err), 0);
    assert_memory_equal(k, k2, DP_KEY_LEN);
    for (size_t i = 0; HEX[i]; i++) /* upper case digits too */
        line[i] = (char)(HEX[i] >= 'a' ? HEX[i] - 32 : HEX[i]);
    line[64] = '\0';
    assert_int_equal(parse(line, k2, &err), 0);
    assert_memory_equal(k, k2, DP_KEY_LEN);
}

/* Anything that is not exactly one key line is refused, with the fix. */
static void key_refuses_other_text(void **state)
{
    (void)state;
    uint8_t k[DP_KEY_LEN];
    struct dp_err err;
    char line[200];
    const char *bad[] = {
        "",
        "0123456789abcdef",                   /* 16 bytes: the old minimum */
        "0123456789abcdef0123456789abcdef\n", /* 16 bytes as hex */
        "distriproc-key-v1 \n",
        "distriproc-key-v2 c47fd7c04a92c254b45dc17e84b3018bf8c4a4a176ebbdd10b6ab5c448fbbc25\n",
        "c47fd7c04a92c254b45dc17e84b3018bf8c4a4a176ebbdd10b6ab5c448fbbc25\n\n",
        " c47fd7c04a92c254b45dc17e84b3018bf8c4a4a176ebbdd10b6ab5c448fbbc25",
        "c47fd7c04a92c254b45dc17e84b3018bf8c4a4a176ebbdd10b6ab5c448fbbc2",
        "c47fd7c04a92c254b45dc17e84b3018bf8c4a4a176ebbdd10b6ab5c448fbbc255",
        "c47fd7c04a92c254b45dc17e84b3018bf8c4a4a176ebbdd10b6ab5c448fbbcg5",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        err.msg[0] = '\0';
        assert_int_equal(parse(bad[i], k, &err), -1);
        assert_non_null(strstr(err.msg, "distriproc keygen"));
    }
    /* 32 raw random-looking bytes are not a key file either. */
    uint8_t raw[DP_KEY_LEN];
    for (size_t i = 0; i < sizeof(raw); i++)
        raw[i] = (uint8_t)(i * 37 + 11);
    assert_int_equal(dp_key_parse(raw, sizeof(raw), k, &err), -1);
    /* Well-formed but not random: all zeros, a short repeated pattern. */
    snprintf(line, sizeof(line), "%s%064d\n", DP_KEY_HEADER, 0);
    assert_int_equal(parse(line, k, &err), -1);
    assert_non_null(strstr(err.msg, "does not look random"));
    assert_int_equal(parse("0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef", k, &err), -1);
    assert_non_null(strstr(err.msg, "8 distinct"));
}

/* ---- ownership and modes ---- */

static void key_file_modes(void **state)
{
    (void)state;
    struct dp_err err;
    assert_int_equal(dp_perm_key_ok("k", S_IFREG | 0600, 1000, 1000, &err), 0);
    assert_int_equal(dp_perm_key_ok("k", S_IFREG | 0400, 0, 0, &err), 0);
    assert_int_equal(dp_perm_key_ok("k", S_IFREG | 0640, 1000, 1000, &err), -1);
    assert_non_null(strstr(err.msg, "chmod 600 k"));
    assert_non_null(strstr(err.msg, "mode 640"));
    assert_int_equal(dp_perm_key_ok("k", S_IFREG | 0604, 0, 0, &err), -1);
    assert_int_equal(dp_perm_key_ok("k", S_IFREG | 0620, 0, 0, &err), -1);
    assert_int_equal(dp_perm_key_ok("k", S_IFREG | 0600, 1000, 0, &err), -1);
    assert_non_null(strstr(err.msg, "belongs to uid 1000"));
    assert_int_equal(dp_perm_key_ok("k", S_IFREG | 0600, 0, 1000, &err), -1);
    assert_int_equal(dp_perm_key_ok("k", S_IFIFO | 0600, 0, 0, &err), -1);
    assert_int_equal(dp_perm_key_ok("k", S_IFDIR | 0700, 0, 0, &err), -1);
}

static void workdir_modes(void **state)
{
    (void)state;
    struct dp_err err;
    assert_int_equal(dp_perm_dir_ok("w", S_IFDIR | 0700, 0, 0, &err), 0);
    assert_int_equal(dp_perm_dir_ok("w", S_IFDIR | 0755, 0, 0, &err), 0); /* readable: not writable */
    assert_int_equal(dp_perm_dir_ok("w", S_IFDIR | 0770, 0, 0, &err), -1);
    assert_non_null(strstr(err.msg, "chmod 700 w"));
    assert_int_equal(dp_perm_dir_ok("w", S_IFDIR | 0702, 0, 0, &err), -1);
    assert_int_equal(dp_perm_dir_ok("w", S_IFDIR | 01777, 0, 0, &err), -1); /* /tmp itself */
    assert_int_equal(dp_perm_dir_ok("w", S_IFDIR | 0700, 65534, 0, &err), -1);
    assert_non_null(strstr(err.msg, "belongs to uid 65534"));
    assert_int_equal(dp_perm_dir_ok("w", S_IFREG | 0600, 0, 0, &err), -1);
    assert_int_equal(dp_perm_dir_ok("w", S_IFLNK | 0777, 0, 0, &err), -1);
}

static void socket_peers(void **state)
{
    (void)state;
    assert_true(dp_perm_peer_ok(0, 0));
    assert_true(dp_perm_peer_ok(1000, 1000));
    assert_true(dp_perm_peer_ok(0, 1000));
    assert_false(dp_perm_peer_ok(65534, 0));
    assert_false(dp_perm_peer_ok(1001, 1000));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(key_accepts_keygen_output),
        cmocka_unit_test(key_refuses_other_text),
        cmocka_unit_test(key_file_modes),
        cmocka_unit_test(workdir_modes),
        cmocka_unit_test(socket_peers),
    };
    return cmocka_run_group_tests_name("perm", tests, NULL, NULL);
}
