/* AdamW (decoupled weight decay, bias correction, as torch.optim.AdamW), learning-rate
 * schedules (linear warmup, then cosine or linear decay to a floor, or constant — the
 * formulas of transformers' get_*_schedule_with_warmup), and clipping by the global L2 norm
 * (as torch.nn.utils.clip_grad_norm_). Works on a list of named fp32 buffers; every reduction
 * has a fixed order so results do not depend on the thread count. */
#ifndef AUDISTILL_TRAIN_OPTIM_H
#define AUDISTILL_TRAIN_OPTIM_H

#include <stdbool.h>
#include <stdint.h>

typedef struct {
    const char *name;
    float *param, *grad, *m, *v; /* host fp32, n elements each */
    int64_t n;
    bool decay; /* weight decay applies (not to norms and biases) */
} ad_param_ref;

typedef struct {
    double beta1, beta2, eps, weight_decay;
} ad_adamw_config;

typedef enum { AD_SCHEDULE_COSINE = 0, AD_SCHEDULE_LINEAR, AD_SCHEDULE_CONSTANT } ad_schedule_kind;

typedef struct {
    ad_schedule_kind kind;
    double lr;        /* peak */
    int64_t warmup;   /* steps of linear warmup from 0 */
    int64_t total;    /* steps of the run */
    double min_ratio; /* floor of the decay, as a fraction of lr */
} ad_schedule;

/* Learning rate of optimizer step `step` (0-based), as LambdaLR gives it. */
double ad_schedule_lr(const ad_schedule *s, int64_t step);
/* Whether weight decay applies to a parameter by its name: not to biases and norm weights. */
bool ad_param_decays(const char *name, int ndim);
/* sqrt(sum of squares) of all gradients; per-tensor sums in double, added in list order. */
double ad_grad_norm(const ad_param_ref *p, int n);
/* Scales gradients so their global norm is at most max_norm (if max_norm > 0); returns the norm
 * before clipping. Non-finite norms are returned unchanged (the caller stops). */
double ad_clip_grad_norm(ad_param_ref *p, int n, double max_norm);
/* One AdamW step with step count t (1-based, for the bias corrections). */
void ad_adamw_step(ad_param_ref *p, int n, const ad_adamw_config *c, double lr, int64_t t);

#endif
