/* Job files for `audistill run`: the whole compression path as an ordered list of stages, each
 * one audistill command, plus an evaluation section (translate every model in every language).
 * This module owns reading and checking the job file (placeholders, inline stage configs,
 * which stage reads which stage's outputs), the stamp files that make stages resumable, and
 * running one command of this binary as a child process. It never decides what to run: that
 * is the command's business (src/cli/cmd_run.c).
 *
 * A stamp {work}/.stages/<name>.done is written atomically only after the stage exited 0 and
 * wrote every declared output. It records a random id of that completion, a hash of the
 * command (its arguments, its inline config, the contents of YAML files it names) and the ids
 * of the stages it reads from, so a stage reruns when its command or one of its inputs
 * changed, and a stage that was never completed runs again. */
#ifndef AUDISTILL_EVAL_PIPELINE_H
#define AUDISTILL_EVAL_PIPELINE_H

#include <stdbool.h>
#include <stdint.h>

#include "io/yaml.h"

#define AD_STAGE_ID_LEN   16
#define AD_PIPELINE_LANGS 2

typedef struct {
    char *name;
    int line;           /* job file line of the stage (of `evaluate` for translations) */
    int argc;           /* arguments after the binary: argv[0] is the command name */
    char **argv;        /* placeholders expanded; NULL-terminated */
    int n_outputs;      /* paths the stage must leave behind */
    char **outputs;     /* removed before the stage runs (the commands refuse to overwrite) */
    char *resume_dir;   /* NULL, or a directory kept after an interruption so the stage resumes */
    char *config_text;  /* inline config rendered as YAML, or NULL */
    char *config_path;  /* where it is written before the stage runs ({config}) */
    size_t config_body; /* offset past the header comment (which names the job file) */
    char *stdout_path;  /* NULL, or a file that receives the child's stdout atomically */
    char *stamp_path;
    char *started_path; /* with resume_dir: {work}/.stages/<name>.started, the same record
                           written when the stage starts, so an interrupted stage resumes only
                           with the command and inputs it began with */
    char *hash_extra;   /* more text that identifies the command (the eval list's limit) */
    int n_deps;         /* earlier stages whose outputs this stage reads */
    int *deps;
    int eval_model, eval_lang; /* >= 0 for the translations of `evaluate` */
} ad_stage;

typedef struct {
    char *name, *path;
    const ad_yaml_node *parameters; /* NULL or a mapping of scalars, for run.json */
} ad_eval_model;

/* A paired significance test between two evaluated models (indexes into models). */
typedef struct {
    int system, baseline;
} ad_eval_compare;

typedef struct {
    bool present;
    int line;
    char *synth_split; /* a synth split directory: wavs and references from it */
    char *list;        /* or an audio list and one reference file per language */
    char *references[AD_PIPELINE_LANGS];
    int n_langs;
    int langs[AD_PIPELINE_LANGS]; /* indexes into ad_pipeline_lang_names */
    int64_t limit, beam, max_new_tokens;
    char *device; /* "cpu" or "cuda": translate --device */
    int n_models;
    ad_eval_model *models;
    char *report;
    char *baseline; /* a model's name: the report's relative table is against it; or NULL */
    int n_compare;
    ad_eval_compare *compare;
    char *dir;       /* {work}/eval */
    char *list_path; /* {work}/eval/list.txt, written from synth_split or copied from list */
    char *ref_path[AD_PIPELINE_LANGS]; /* {work}/eval/ref.<lang> */
} ad_eval_spec;

typedef struct {
    char *path; /* the job file */
    char *work_dir;
    char *stamp_dir; /* {work}/.stages */
    int n_stages;    /* the job's stages, then one per evaluated model and language */
    int n_job_stages;
    int cap_stages; /* allocated */
    ad_stage *stages;
    ad_eval_spec eval;
    ad_yaml_doc doc;
    char **pool; /* every string this job allocated */
    int n_pool, cap_pool;
} ad_pipeline;

extern const char *const ad_pipeline_lang_names[AD_PIPELINE_LANGS]; /* "de", "zh" */

/* Reads and checks a job file; work_override (or NULL) replaces its work_dir. Nothing is
 * written. */
int ad_pipeline_load(const char *path, const char *work_override, ad_pipeline *p);
void ad_pipeline_free(ad_pipeline *p);
/* Index of a stage by name, or -1. */
int ad_pipeline_find(const ad_pipeline *p, const char *name);

typedef struct {
    bool found;
    char id[AD_STAGE_ID_LEN + 1];
    uint32_t command;
    int n_inputs;
    char input_name[64][128];
    char input_id[64][AD_STAGE_ID_LEN + 1];
} ad_stamp;

/* Hash of what identifies a stage's work: its arguments, inline config, hash_extra, and the
 * contents of any .yaml/.yml file among its arguments. */
uint32_t ad_stage_command_hash(const ad_stage *s);
/* Reads a stamp; a missing file is found = false, a malformed one is an error. */
int ad_stamp_read(const char *path, ad_stamp *st);
/* Writes a stamp of the stage (its command hash, its inputs' ids) with a fresh id (returned in
 * *st) to `path`: stamp_path when it completed, started_path when it starts. */
int ad_stamp_write(const ad_pipeline *p, int stage, const char *path, ad_stamp *st);

/* Runs `audistill ARGV...` (this binary) and waits for it. stdout_fd >= 0 replaces the child's
 * stdout. The child dies with the runner (a killed `run` leaves no orphan stage behind).
 * *status is the exit code, or 128 + signal when the child was killed (*signal set). */
int ad_run_self(char *const argv[], int stdout_fd, int *status, int *signal);
/* Same, capturing the child's stdout (up to max_bytes) into a new NUL-terminated string. */
int ad_run_self_capture(char *const argv[], size_t max_bytes, char **out, int *status);

#endif
