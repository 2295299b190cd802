/* The distillation trainer behind `audistill train`: a frozen teacher (optional) and a
 * trainable student see the same micro-batches from a prepared set; the loss is
 * alpha*T^2*KL + (1-alpha)*CE over the supervised rows; AdamW with warmup/decay and clipping;
 * metrics to JSONL and TensorBoard; dev loss every N steps; checkpoints that resume exactly. */
#ifndef AUDISTILL_TRAIN_TRAINER_H
#define AUDISTILL_TRAIN_TRAINER_H

#include <stdbool.h>
#include <stdint.h>

#include "io/yaml.h"
#include "model/train_graph.h"

typedef struct {
    const char *train;
    const char *dev;
    ad_string_list langs;
    const char *targets; /* reference | teacher (the cached teacher translations) */
} ad_train_data;

typedef struct {
    int64_t steps, batch, micro_batch, warmup, seed, log_every, eval_every, eval_segments,
        checkpoint_every, keep_checkpoints, threads, max_len, max_frames, zero;
    double lr, min_lr_ratio, weight_decay, beta1, beta2, eps, clip, input_dropout;
    const char *schedule, *trainable, *device, *optimizer, *precision;
    const char *student_weights; /* auto | f32 | bf16: ad_train_student_bf16 */
    const char *attention;       /* auto | gemm | flash | kernel (device cuda) */
    bool gemm_tuning;            /* time cuBLASLt's candidate algorithms (device cuda) */
    bool recompute;
} ad_train_options;

typedef struct {
    double alpha, temperature, skew;
    const char *kind;
    const char *teacher_cache; /* audistill teacher-cache output, read instead of the teacher */
    bool share_encoder;        /* the teacher reuses the student's equal, frozen audio encoder */
} ad_distill_options;

typedef struct {
    const char *scales; /* learned | fixed */
} ad_qat_options;

typedef struct {
    double weight;          /* 0 = off */
    const char *transcript; /* the prepared set's language whose targets CTC spells */
} ad_ctc_options;

typedef struct {
    const char *student;
    const char *teacher;
    const char *output;
    const char *output_dtype; /* "f32" or "bf16": the final model's weights */
    ad_train_data data;
    ad_train_options train;
    ad_distill_options distill;
    ad_qat_options qat;
    ad_ctc_options ctc;
} ad_train_job;

extern const ad_field ad_train_job_fields[];

typedef struct {
    const char *resume; /* NULL, "auto" or a checkpoint directory */
    bool force;         /* resume even if the job config changed */
    bool quiet;
    int64_t stop_after; /* > 0: stop after this many steps in this invocation (preemptible slots) */
    int64_t benchmark;  /* > 0: time this many steps and stop, writing no checkpoint or model */
} ad_train_run_options;

/* The training graph's limits for a job (micro-batch, frames within the model's window,
 * tokens, supervised rows) and what its student graph trains and keeps (train.trainable,
 * train.recompute). */
void ad_train_limits(const ad_train_job *job, const ad_model_config *cfg, ad_graph_limits *lim);
void ad_train_trainable(const ad_train_options *o, ad_trainable *t);
/* Whether the student's trainable GEMM weights live in bf16 on the device (train.student_weights:
 * bf16, or auto under precision bf16). */
bool ad_train_student_bf16(const ad_train_options *o);

/* Runs the job read from `doc` (bound with ad_train_job_fields). */
int ad_train_run(const ad_yaml_doc *doc, const ad_train_job *job, const ad_train_run_options *opts);

#endif
