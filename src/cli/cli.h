/* The `audistill` command line: one file per command, each exporting a cmd_<name>() that
 * returns the process exit code. Commands report errors through ad_error() and cli_fail(). */
#ifndef AUDISTILL_CLI_CLI_H
#define AUDISTILL_CLI_CLI_H

#include <stdbool.h>

#include "io/yaml.h"

typedef struct {
    const char *name;
    int (*run)(int argc, char **argv);
    const char *summary;
} cli_command;

/* Prints "audistill <command>: error: <ad_error()>" and returns the failure exit code. */
int cli_fail(const char *command);
/* Prints a usage error and returns exit code 2. */
int cli_usage_error(const char *command, const char *usage, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
bool cli_is_help(const char *arg);
/* A whole decimal number in [0, max] (no sign, no trailing text); -1 otherwise. */
int cli_parse_count(const char *text, long long max, long long *out);
/* Commands whose only options are --help and --config JOB.yaml: parses argv, loads the job file
 * into *doc and binds it to `fields` into `job`. Returns -1 when the job is ready (the caller
 * frees *doc), else the exit code to return: 0 after --help, 2 on a usage error, 1 when the job
 * does not load or bind. */
int cli_config_job(int argc, char **argv, const char *command, const char *usage,
                   void (*help)(void), const ad_field *fields, void *job, ad_yaml_doc *doc);

int cmd_inspect(int argc, char **argv);
int cmd_plan(int argc, char **argv);
int cmd_prune(int argc, char **argv);
int cmd_quantize(int argc, char **argv);
int cmd_size(int argc, char **argv);
int cmd_synth(int argc, char **argv);
int cmd_segment(int argc, char **argv);
int cmd_features(int argc, char **argv);
int cmd_tokenize(int argc, char **argv);
int cmd_translate(int argc, char **argv);
int cmd_train(int argc, char **argv);
int cmd_teacher_cache(int argc, char **argv);
int cmd_prepare(int argc, char **argv);
int cmd_score(int argc, char **argv);
int cmd_resegment(int argc, char **argv);
int cmd_report(int argc, char **argv);
int cmd_run(int argc, char **argv);

#endif
