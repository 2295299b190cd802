/* AdamW, schedules, clipping and accumulation scaling; see optim.h for the exact formulas. */
#include "train/optim.h"

#include <math.h>
#include <string.h>

#include "core/error.h"

bool ad_param_decays(const char *name, int ndim) {
    if (ndim < 2) return false; /* biases and norm weights */
    return strstr(name, "norm") == NULL && strstr(name, "embed_positions") == NULL;
}

int ad_param_refs_from_arena(const ad_param_slot *slots, int n, int64_t arena_numel, float *params,
                             float *grads, float *m, float *v, ad_decay_rule rule, void *user,
                             ad_param_ref *out) {
    if (!params) return ad_fail("optimizer: no parameter arena");
    for (int i = 0; i < n; i++) {
        const ad_param_slot *s = &slots[i];
        const char *name = s->name ? s->name : "(unnamed)";
        if (s->ndim < 0 || s->ndim > AD_MAX_DIMS)
            return ad_fail("optimizer: tensor %s has %d dimensions (at most %d)", name, s->ndim,
                           AD_MAX_DIMS);
        int64_t numel = 1;
        for (int d = 0; d < s->ndim; d++) {
            if (s->shape[d] < 0 || (s->shape[d] > 0 && numel > INT64_MAX / s->shape[d]))
                return ad_fail("optimizer: tensor %s has a bad shape", name);
            numel *= s->shape[d];
        }
        if (numel != s->numel)
            return ad_fail("optimizer: tensor %s: numel %lld but its shape holds %lld", name,
                           (long long)s->numel, (long long)numel);
        if (s->offset < 0 || s->offset > arena_numel || s->numel > arena_numel - s->offset)
            return ad_fail("optimizer: tensor %s [%lld, +%lld) lies outside the arena of %lld",
                           name, (long long)s->offset, (long long)s->numel, (long long)arena_numel);
        for (int j = 0; j < i; j++) {
            const ad_param_slot *o = &slots[j];
            if (s->numel && o->numel && s->offset < o->offset + o->numel &&
                o->offset < s->offset + s->numel)
                return ad_fail("optimizer: tensors %s and %s overlap in the arena", name,
                               o->name ? o->name : "(unnamed)");
        }
        out[i] = (ad_param_ref){.name = name,
                                .param = params + s->offset,
                                .grad = grads ? grads + s->offset : NULL,
                                .m = m ? m + s->offset : NULL,
                                .v = v ? v + s->offset : NULL,
                                .n = s->numel,
                                .decay = rule ? rule(name, s->ndim, user)
                                              : ad_param_decays(name, s->ndim)};
    }
    return AD_OK;
}

double ad_schedule_lr(const ad_schedule *s, int64_t step) {
    /* transformers' lambdas, in their order of operations (Python floats are doubles). */
    if (step < s->warmup) return s->lr * ((double)step / (double)(s->warmup > 1 ? s->warmup : 1));
    if (s->kind == AD_SCHEDULE_CONSTANT) return s->lr;
    const int64_t span = s->total - s->warmup > 1 ? s->total - s->warmup : 1;
    const double r = s->min_ratio;
    double f;
    if (s->kind == AD_SCHEDULE_COSINE) {
        const double progress = (double)(step - s->warmup) / (double)span;
        f = 0.5 * (1.0 + cos(M_PI * 0.5 * 2.0 * progress)); /* num_cycles 0.5 */
    } else {
        f = (double)(s->total - step) / (double)span;
        if (r == 0) return s->lr * fmax(0.0, f);
        f = fmax(0.0, f);
    }
    f = f * (1.0 - r) + r;
    return s->lr * fmax(0.0, f);
}

void ad_grad_zero(ad_param_ref *p, int n) {
    for (int i = 0; i < n; i++)
        if (p[i].grad) memset(p[i].grad, 0, sizeof(float) * (size_t)p[i].n);
}

void ad_scale_f32(float *x, int64_t n, float f) {
    if (f == 1.0f) return;
#pragma omp parallel for schedule(static) if (n > AD_OPTIM_NORM_CHUNK)
    for (int64_t k = 0; k < n; k++)
        x[k] *= f;
}

void ad_grad_scale(ad_param_ref *p, int n, double factor) {
    for (int i = 0; i < n; i++)
        if (p[i].grad) ad_scale_f32(p[i].grad, p[i].n, (float)factor);
}

double ad_sum_squares_f32(const float *x, int64_t n) {
    enum { GROUP = 256 }; /* chunks summed in parallel per round; their sums added in order */
    double total = 0, part[GROUP];
    const int64_t chunks = (n + AD_OPTIM_NORM_CHUNK - 1) / AD_OPTIM_NORM_CHUNK;
    for (int64_t c0 = 0; c0 < chunks; c0 += GROUP) {
        const int nc = (int)(chunks - c0 < GROUP ? chunks - c0 : GROUP);
#pragma omp parallel for schedule(static) if (nc > 1)
        for (int c = 0; c < nc; c++) {
            const int64_t b = (c0 + c) * AD_OPTIM_NORM_CHUNK;
            const int64_t e = b + AD_OPTIM_NORM_CHUNK < n ? b + AD_OPTIM_NORM_CHUNK : n;
            double s = 0;
            for (int64_t k = b; k < e; k++)
                s += (double)x[k] * x[k];
            part[c] = s;
        }
        for (int c = 0; c < nc; c++)
            total += part[c];
    }
    return total;
}

double ad_grad_norm(const ad_param_ref *p, int n) {
    double total = 0;
    for (int i = 0; i < n; i++)
        if (p[i].grad) total += ad_sum_squares_f32(p[i].grad, p[i].n);
    return sqrt(total);
}

double ad_clip_grad_norm(ad_param_ref *p, int n, double max_norm) {
    const double norm = ad_grad_norm(p, n);
    if (!(max_norm > 0) || !isfinite(norm)) return norm;
    /* torch multiplies by the clamped coefficient always; a factor of exactly 1 changes nothing */
    const double coef = ad_clip_coefficient(norm, max_norm);
    if (coef < 1.0) ad_grad_scale(p, n, coef);
    return norm;
}

double ad_clip_coefficient(double norm, double max_norm) {
    if (!(max_norm > 0)) return 1.0;
    const double coef = max_norm / (norm + 1e-6);
    return coef < 1.0 ? coef : 1.0;
}

void ad_adamw_update(float *w, const float *g, float *m, float *v, int64_t n,
                     const ad_adamw_config *c, double lr, bool decay_group, int64_t t,
                     float grad_scale) {
    const double bc1 = 1.0 - pow(c->beta1, (double)t), bc2 = 1.0 - pow(c->beta2, (double)t);
    const float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    const float w1 = (float)(1.0 - c->beta1), b2 = (float)c->beta2, w2 = (float)(1.0 - c->beta2),
                eps = (float)c->eps;
    /* torch's lerp switches formulas at weight 0.5 to stay exact at weight 1 */
    const bool small = fabsf(w1) < 0.5f;
    const float w1c = 1.0f - w1;
    const float decay = decay_group ? (float)(1.0 - lr * c->weight_decay) : 1.0f;
#pragma omp parallel for schedule(static) if (n > AD_OPTIM_NORM_CHUNK)
    for (int64_t k = 0; k < n; k++) {
        float wk = w[k] * decay;
        const float gk = g[k] * grad_scale,
                    mk = small ? m[k] + w1 * (gk - m[k]) : gk - (gk - m[k]) * w1c;
        const float vk = b2 * v[k] + w2 * gk * gk;
        const float denom = sqrtf(vk) / bc2_sqrt + eps;
        wk += -step_size * mk / denom; /* addcdiv_(m, denom, value=-step_size) */
        w[k] = wk, m[k] = mk, v[k] = vk;
    }
}

void ad_adamw_step(ad_param_ref *p, int n, const ad_adamw_config *c, double lr, int64_t t) {
    for (int i = 0; i < n; i++)
        if (p[i].grad)
            ad_adamw_update(p[i].param, p[i].grad, p[i].m, p[i].v, p[i].n, c, lr, p[i].decay, t,
                            1.0f);
}
