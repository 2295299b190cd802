/* The CPU backend's optimizer ops: the host optimizer's per-tensor functions (train/optim.h)
 * behind the op table, so `train.optimizer: device` on the CPU takes the host path's steps bit
 * for bit and tests the trainer's device path without a GPU. */
#include "backend/cpu/cpu_internal.h"
#include "train/optim.h"

static int check_flat(const char *op, const char *role, const ad_tensor *t) {
    AD_TRY(cpu_check_tensor(op, role, t, AD_F32));
    return ad_op_check_contiguous(op, t);
}

static int sum_squares(ad_backend *be, const ad_tensor *const *xs, int n, double *out) {
    (void)be;
    for (int i = 0; i < n; i++) {
        out[i] = 0.0;
        if (!xs[i]) continue;
        AD_TRY(check_flat("sum_squares", "x", xs[i]));
        out[i] = ad_sum_squares_f32((const float *)xs[i]->data, ad_tensor_numel(xs[i]));
    }
    return AD_OK;
}

static int scale(ad_backend *be, ad_tensor *x, float s) {
    (void)be;
    AD_TRY(check_flat("scale", "x", x));
    ad_scale_f32((float *)x->data, ad_tensor_numel(x), s);
    return AD_OK;
}

static int adamw(ad_backend *be, ad_tensor *w, const ad_tensor *g, ad_tensor *m, ad_tensor *v,
                 const ad_adamw_params *p, ad_tensor *w_bf16) {
    (void)be;
    AD_TRY(cpu_check_tensor("adamw", "w", w, AD_F32));
    AD_TRY(cpu_check_tensor("adamw", "g", g, AD_F32));
    AD_TRY(cpu_check_tensor("adamw", "m", m, AD_F32));
    AD_TRY(cpu_check_tensor("adamw", "v", v, AD_F32));
    if (w_bf16) AD_TRY(cpu_check_tensor("adamw", "w_bf16", w_bf16, AD_BF16));
    AD_TRY(ad_op_check_adamw(w, g, m, v, w_bf16));
    if (p->step < 1) return ad_fail("adamw: step %lld (1-based expected)", (long long)p->step);
    const ad_adamw_config c = {p->beta1, p->beta2, p->eps, p->weight_decay};
    ad_adamw_update((float *)w->data, (const float *)g->data, (float *)m->data, (float *)v->data,
                    ad_tensor_numel(w), &c, p->lr, p->decay, p->step,
                    p->grad_scale != 0.0f ? p->grad_scale : 1.0f);
    if (w_bf16) {
        const float *x = w->data;
        uint16_t *out = w_bf16->data;
        const int64_t n = ad_tensor_numel(w);
        for (int64_t i = 0; i < n; i++)
            out[i] = ad_f32_to_bf16(x[i]);
    }
    return AD_OK;
}

void ad_cpu_register_optimizer(ad_backend *be) {
    be->sum_squares = sum_squares;
    be->scale = scale;
    be->adamw = adamw;
}
