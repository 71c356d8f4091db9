/* distriproc keygen: creates a pre-shared key file for serve/restore. */
#include <stdio.h>
#include <string.h>

#include "commands.h"
#include "key.h"
#include "util.h"

int cmd_keygen(int argc, char **argv)
{
    const char *path = NULL;
    int force = 0;
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
            printf("usage: distriproc keygen [--force] FILE\n\n"
                   "Writes a new random 256-bit key to FILE (mode 0600), as one line: 'distriproc-key-v1 '\n"
                   "and 64 hex digits. serve, restore and query accept only this format (or the\n"
                   "bare 64 digits older versions wrote), in a file of yours that group and others\n"
                   "cannot read. Copy the same\n"
                   "file to the source (serve --key) and the destination (restore --key).\n");
            return 0;
        } else if (strcmp(argv[i], "--force") == 0) {
            force = 1;
        } else if (!path && argv[i][0] != '-') {
            path = argv[i];
        } else {
            fprintf(stderr, "usage: distriproc keygen [--force] FILE\n");
            return 2;
        }
    }
    if (!path) {
        fprintf(stderr, "usage: distriproc keygen [--force] FILE\n");
        return 2;
    }
    struct dp_err err;
    if (dp_key_generate(path, force, &err) < 0) {
        dp_error("%s", err.msg);
        return 1;
    }
    printf("wrote a 32-byte key to %s\n", path);
    return 0;
}
