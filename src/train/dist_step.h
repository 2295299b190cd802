/* The optimizer step of data-parallel training: gradients summed over the ranks of a
 * communicator, clipping by the global norm, AdamW, and (ZeRO-1) optimizer state sharded over
 * the ranks. The trainer's per-rank gradients arrive already scaled by 1 / (supervised tokens
 * of the whole global batch), so their SUM over ranks is the single-process gradient.
 *
 * Plain data parallel: one flat allreduce of all gradients, then every rank runs the same
 * clipping and AdamW on the full parameters (bit-identical on every rank: same inputs, and
 * every operation here is deterministic).
 *
 * ZeRO-1: the trainable tensors, concatenated in table order, form a flat space of N
 * elements padded to world * S (S = ceil(N / world)); rank r owns elements [r*S, r*S + S).
 * A step reduce-scatters the gradients (rank r gets the summed gradients of its slice), takes
 * the global norm as the allreduce of the slices' sums of squares, runs AdamW on its slice
 * with its slice of the moments, and all-gathers the updated parameters. Each rank holds 2 * S
 * floats of moments instead of 2 * N. Checkpoints always hold the full, unsharded moments
 * (ad_dist_opt_full_moments), so any rank count can resume any checkpoint. */
#ifndef AUDISTILL_TRAIN_DIST_STEP_H
#define AUDISTILL_TRAIN_DIST_STEP_H

#include <stdbool.h>
#include <stdint.h>

#include "dist/comm.h"
#include "train/optim.h"

typedef struct {
    ad_comm *comm;
    bool zero;
    ad_param_ref *params; /* the trainer's table (not owned); with zero their m, v are NULL */
    int n_params;
    int64_t *offset;    /* flat offset of each tensor */
    int64_t total;      /* N */
    int64_t shard;      /* S */
    int64_t lo, hi;     /* this rank's elements [lo, hi): lo = rank * S, hi <= N (may be < lo) */
    float *flat;        /* world * S staging: gradients in, parameters out (NULL: one rank) */
    float *m, *v;       /* zero: the moments of [lo, lo + S) */
    ad_param_ref *refs; /* zero: the parts of tensors inside [lo, hi) */
    int n_refs;
} ad_dist_opt;

/* params[i].m and .v must hold the full moments (zeros, or loaded from a checkpoint); with
 * zero, this rank's slice is copied out and the full buffers are freed (set to NULL). */
int ad_dist_opt_init(ad_dist_opt *d, ad_comm *comm, bool zero, ad_param_ref *params, int n);
void ad_dist_opt_free(ad_dist_opt *d);

/* Bytes of optimizer state (Adam moments) this rank holds. */
int64_t ad_dist_opt_state_bytes(const ad_dist_opt *d);

/* Collective. The gradients of params (this rank's share, pre-scaled) become the global ones
 * (plain; with zero only the owned slice is formed), clipped to max_norm (0 = off), then
 * AdamW with step count t and learning rate lr. *norm receives the global norm before
 * clipping; when it is not finite nothing is updated (every rank sees the same norm, so every
 * rank stops together). */
int ad_dist_opt_step(ad_dist_opt *d, double max_norm, const ad_adamw_config *c, double lr,
                     int64_t t, double *norm);

/* Collective. With zero, rank 0 receives the full moments in *m and *v (N floats each in flat
 * order, owned by the caller), other ranks NULL; without zero both are NULL (the params hold
 * them). */
int ad_dist_opt_full_moments(ad_dist_opt *d, float **m, float **v);

/* Test fault point: AUDISTILL_RANK_FAULT=<rank>:<step>[:hang] makes that rank die by SIGKILL
 * (or hang forever with ":hang") when it reaches the gradient exchange of 1-based step
 * <step>, i.e. in the middle of a step, while the other ranks wait for it. */
void ad_dist_fault_point(const ad_comm *c, int64_t step);

#endif
