/* Memory plan of a training job from the models' config.json files alone (no weights are
 * read): what `audistill train` allocates for it on its device and on the host, and what the
 * bf16 design (bf16 weights with fp32 master weights and moments on the GPU) would need. The
 * activation and gradient figures are the training graph's own arena plans (ad_graph_plan),
 * not a formula. `audistill train --plan-memory` prints it. */
#ifndef AUDISTILL_TRAIN_MEMORY_PLAN_H
#define AUDISTILL_TRAIN_MEMORY_PLAN_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "train/trainer.h"

typedef struct {
    int64_t teacher_params, student_params, trainable_params;
    int64_t gemm_params;           /* the student's GEMM weights */
    int64_t trainable_gemm_params; /* of the trainable ones, GEMM weights */
    bool student_bf16;             /* train.student_weights: they are stored in bf16 */
    size_t student_activations, teacher_activations, gradients;
    /* The teacher's activations when it takes the student's encoder output
     * (distill.share_encoder: a frozen student encoder of the teacher's shape, whose weights
     * turn out equal when loaded); 0 when it cannot. The totals count teacher_activations. */
    size_t teacher_activations_shared;
    size_t scratch; /* the CUDA backend's own buffers at their largest (0 on the CPU) */
    /* as `audistill train` runs the job now (fp32 weights on the job's device) */
    size_t device_bytes, host_bytes; /* host: rank 0, which writes the checkpoints */
    size_t host_bytes_others;        /* host of the other ranks */
    /* the bf16 design: bf16 weights, fp32 master + Adam moments + gradients on the device */
    size_t bf16_device_bytes;
    int ranks; /* data-parallel ranks: with train.zero, the sharded state is per rank */
} ad_memory_plan;

/* Per rank of `ranks` (1: one process); train.zero divides the sharded state among them. */
int ad_train_memory_plan(const ad_train_job *job, int ranks, ad_memory_plan *plan);
/* The largest micro-batch (clips as long as the job's) whose plan as the job runs now fits
 * `device_gib` on each of `ranks` ranks, up to AD_PLAN_MAX_MICRO_BATCH; 0 when not even one
 * clip fits. The plans grow with the micro-batch, so a search over them finds it. */
int ad_memory_plan_largest_micro_batch(const ad_train_job *job, int ranks, double device_gib,
                                       int64_t *largest);
#define AD_PLAN_MAX_MICRO_BATCH 65536
/* The plan as a table on `out`, with `device_gib` (0: none) to say whether it fits (and, for a
 * GPU job, the largest micro-batch that would). */
void ad_memory_plan_print(const ad_train_job *job, const ad_memory_plan *plan, double device_gib,
                          FILE *out);

#endif
