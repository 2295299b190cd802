/* The optimizer side of a training step, on host fp32 buffers: AdamW exactly as
 * torch.optim.AdamW (single-tensor path: decoupled weight decay, bias corrections, eps added
 * after sqrt(v_hat)), learning-rate schedules with linear warmup (the formulas of transformers'
 * get_{cosine,cosine_with_min_lr,linear,constant}_schedule_with_warmup), clipping by the global
 * L2 norm (torch.nn.utils.clip_grad_norm_) and gradient-accumulation scaling.
 *
 * The trainer keeps parameters, gradients and the two Adam moments in four flat arenas carved
 * into named tensors in checkpoint order; ad_param_refs_from_arena turns a table of those
 * tensors into the ad_param_ref list every function here takes. Parameter groups are a
 * per-tensor `decay` flag set by a predicate on the name.
 *
 * Determinism: every result is independent of the OpenMP thread count. Element-wise updates
 * touch each element once; the one reduction (the gradient norm) sums each tensor in fixed
 * chunks of AD_OPTIM_NORM_CHUNK elements in double, each chunk in index order, adds a tensor's
 * chunk sums in order whatever thread computed them, then the tensors' sums in list order.
 *
 * Never allocates; never touches a device buffer. The per-tensor functions at the end are the
 * CPU backend's optimizer ops (backend.h), so training with `train.optimizer: device` on the
 * CPU takes the same steps bit for bit; cuda/adamw.cu is their device twin. */
#ifndef AUDISTILL_TRAIN_OPTIM_H
#define AUDISTILL_TRAIN_OPTIM_H

#include <stdbool.h>
#include <stdint.h>

#include "core/tensor.h"

#define AD_OPTIM_NORM_CHUNK 65536

/* One trainable tensor: host fp32 buffers of n elements each. A NULL grad means "no gradient
 * this step" (torch's p.grad is None): the tensor is skipped by the norm, clipping and the
 * update, as torch skips it. */
typedef struct {
    const char *name;
    float *param, *grad, *m, *v;
    int64_t n;
    bool decay; /* in the weight-decay group */
} ad_param_ref;

/* A named tensor inside the flat arenas (same offset in all four of them). */
typedef struct {
    const char *name;
    int64_t offset, numel;
    int ndim;
    int64_t shape[AD_MAX_DIMS];
} ad_param_slot;

/* Which group a tensor belongs to: true = weight decay applies. */
typedef bool (*ad_decay_rule)(const char *name, int ndim, void *user);

/* The default rule (the usual transformers recipe): no decay for biases and norm weights
 * (ndim < 2), nor for tensors whose name contains "norm" or "embed_positions"; decay for the
 * rest (matrices, embeddings, lm_head). */
bool ad_param_decays(const char *name, int ndim);

/* Fills out[0..n) from a slot table and the four arenas of arena_numel elements each (grads,
 * m or v may be NULL: the refs then have NULL there). Checks every slot: numel equals the
 * product of its shape, the range lies inside the arena, slots do not overlap. rule NULL =
 * ad_param_decays. The refs point into the arenas and into the slots' names. */
int ad_param_refs_from_arena(const ad_param_slot *slots, int n, int64_t arena_numel, float *params,
                             float *grads, float *m, float *v, ad_decay_rule rule, void *user,
                             ad_param_ref *out);

/* ---- learning-rate schedules --------------------------------------------------------------- */

typedef enum { AD_SCHEDULE_COSINE = 0, AD_SCHEDULE_LINEAR, AD_SCHEDULE_CONSTANT } ad_schedule_kind;

typedef struct {
    ad_schedule_kind kind;
    double lr;        /* peak */
    int64_t warmup;   /* steps of linear warmup from 0 */
    int64_t total;    /* steps of the run (num_training_steps) */
    double min_ratio; /* floor of the decay as a fraction of lr (0 = transformers' plain forms) */
} ad_schedule;

/* Learning rate of optimizer step `step` (0-based: the lr that step uses), equal to
 * LambdaLR's lr after `step` scheduler.step() calls:
 *   warmup:   lr * step / max(1, warmup)                              (step < warmup)
 *   progress = (step - warmup) / max(1, total - warmup)
 *   cosine:   lr * max(0, r + (1 - r) * 0.5 * (1 + cos(pi * progress)))  (r = min_ratio; r = 0
 *             is get_cosine_schedule_with_warmup, r > 0
 * get_cosine_with_min_lr_schedule_with_warmup; as there, past `total` the cosine rises again: keep
 * total = the real run length) linear:   lr * max(0, (total - step) / max(1, total - warmup)) for r
 * = 0 (transformers); r > 0 (our extension) floors it: lr * (r + (1 - r) * that) constant: lr after
 * the warmup. */
double ad_schedule_lr(const ad_schedule *s, int64_t step);

/* ---- gradients ------------------------------------------------------------------------------ */

/* Sets every gradient to 0 (before accumulating the micro-batches of a step). */
void ad_grad_zero(ad_param_ref *p, int n);
/* g *= factor, e.g. 1/accum after summing the gradients of `accum` micro-batches (a torch loop
 * divides each micro-batch loss by accum instead; the two differ by float rounding only). */
void ad_grad_scale(ad_param_ref *p, int n, double factor);
/* sqrt(sum of squares of all gradients), deterministic as described above. */
double ad_grad_norm(const ad_param_ref *p, int n);
/* torch.nn.utils.clip_grad_norm_(max_norm): total = ad_grad_norm, coef = max_norm / (total +
 * 1e-6) clamped to 1, gradients scaled by coef (rounded once to float). Returns the norm before
 * clipping. max_norm <= 0 only measures. A non-finite norm is returned without touching the
 * gradients: the caller must stop or skip the step (torch would write NaN into every grad). */
double ad_clip_grad_norm(ad_param_ref *p, int n, double max_norm);
/* The factor clipping scales gradients by for a finite global norm: max_norm / (norm + 1e-6)
 * when that is below 1, else 1 (also for max_norm <= 0: clipping off). */
double ad_clip_coefficient(double norm, double max_norm);

/* ---- AdamW ---------------------------------------------------------------------------------- */

typedef struct {
    double beta1, beta2, eps, weight_decay;
} ad_adamw_config;

/* One AdamW step with step count t (1-based; bias corrections 1 - beta^t), learning rate lr.
 * Per element, in torch's order and with torch's float constants (each made in double from the
 * Python-float expression torch uses, then rounded to float once):
 *   p *= (float)(1 - lr * wd)                      (decay group only)
 *   m += (float)(1 - beta1) * (g - m)              (exp_avg.lerp_(g, 1 - beta1))
 *   v  = (float)beta2 * v + (float)(1 - beta2) * g * g
 *   p -= (float)(lr / (1 - beta1^t)) * m / (sqrt(v) / (float)sqrt(1 - beta2^t) + (float)eps)
 * torch's vectorized lerp uses a fused multiply-add where this rounds twice: results agree to
 * ~1 ulp per step, not bit for bit. */
void ad_adamw_step(ad_param_ref *p, int n, const ad_adamw_config *c, double lr, int64_t t);

/* ---- one tensor ------------------------------------------------------------------------------ */

/* Sum of squares of x[0..n) in double, chunked as described above. */
double ad_sum_squares_f32(const float *x, int64_t n);
/* x *= f. */
void ad_scale_f32(float *x, int64_t n, float f);
/* ad_adamw_step's update of one tensor (decay: in the weight-decay group). The gradient is read
 * as g[k] * grad_scale, the same float product as scaling it in place first (clipping), so a
 * fused clip gives the bits of ad_scale_f32 followed by the update; 1 leaves it as is. */
void ad_adamw_update(float *w, const float *g, float *m, float *v, int64_t n,
                     const ad_adamw_config *c, double lr, bool decay, int64_t t, float grad_scale);

#endif
