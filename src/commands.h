/* Every subcommand: int cmd_NAME(int argc, char **argv), argv[0] is the subcommand name.
 * Each returns the process exit status. Register new ones in src/main.c. */
#ifndef DP_COMMANDS_H
#define DP_COMMANDS_H

int cmd_lab(int argc, char **argv);
int cmd_lab_cluster(int argc, char **argv); /* `lab cluster`, reached through cmd_lab */
int cmd_checkpoint(int argc, char **argv);
int cmd_serve(int argc, char **argv);
int cmd_restore(int argc, char **argv);
int cmd_stats(int argc, char **argv);
int cmd_sync(int argc, char **argv);
int cmd_migrate(int argc, char **argv);
int cmd_bench(int argc, char **argv);
int cmd_images(int argc, char **argv);
int cmd_keygen(int argc, char **argv);
int cmd_query(int argc, char **argv);
int cmd_hotset(int argc, char **argv);
int cmd_cnet(int argc, char **argv);
int cmd_uffdwin(int argc, char **argv);
int cmd_bundle(int argc, char **argv);
int cmd_lazypages(int argc, char **argv);

#endif
