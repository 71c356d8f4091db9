/* The restore path shared by `distriproc restore` and `distriproc lazy-pages`:
 * one option parser, one way to get the page source and the skeleton, one
 * daemon start. lazy-pages stops once the daemon listens; restore goes on to
 * run criu restore or runc restore against it. */
#ifndef DP_SRC_RESTORE_H
#define DP_SRC_RESTORE_H

#include <stdio.h>

enum dp_restore_mode { DP_MODE_RESTORE, DP_MODE_LAZY_PAGES };

/* argv[0] is the subcommand; usage_fn prints that subcommand's help. */
int dp_restore_main(int argc, char **argv, enum dp_restore_mode mode, void (*usage_fn)(FILE *out));

#endif
