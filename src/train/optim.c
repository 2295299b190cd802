#include "train/optim.h"

#include <math.h>
#include <string.h>

double ad_schedule_lr(const ad_schedule *s, int64_t step) {
    double f;
    if (s->warmup > 0 && step < s->warmup) return s->lr * (double)step / (double)s->warmup;
    if (s->kind == AD_SCHEDULE_CONSTANT) return s->lr;
    const double span = (double)(s->total - s->warmup);
    const double progress = span > 0 ? (double)(step - s->warmup) / span : 1.0;
    if (s->kind == AD_SCHEDULE_COSINE)
        f = fmax(0.0, 0.5 * (1.0 + cos(M_PI * progress)));
    else
        f = fmax(0.0, 1.0 - progress);
    return s->lr * (s->min_ratio + (1.0 - s->min_ratio) * f);
}

bool ad_param_decays(const char *name, int ndim) {
    if (ndim < 2) return false; /* biases and norm weights */
    return strstr(name, "norm") == NULL && strstr(name, "embed_positions") == NULL;
}

double ad_grad_norm(const ad_param_ref *p, int n) {
    double total = 0;
    for (int i = 0; i < n; i++) {
        if (!p[i].grad) continue;
        double s = 0;
        const float *g = p[i].grad;
        for (int64_t k = 0; k < p[i].n; k++)
            s += (double)g[k] * g[k];
        total += s;
    }
    return sqrt(total);
}

double ad_clip_grad_norm(ad_param_ref *p, int n, double max_norm) {
    double norm = ad_grad_norm(p, n);
    if (!(max_norm > 0) || !isfinite(norm)) return norm;
    /* torch: clip_coef = max_norm / (total_norm + 1e-6), clamped to 1.0, applied always */
    double coef = max_norm / (norm + 1e-6);
    if (coef >= 1.0) return norm;
    const float c = (float)coef;
    for (int i = 0; i < n; i++) {
        if (!p[i].grad) continue;
        float *g = p[i].grad;
#pragma omp parallel for schedule(static)
        for (int64_t k = 0; k < p[i].n; k++)
            g[k] *= c;
    }
    return norm;
}

void ad_adamw_step(ad_param_ref *p, int n, const ad_adamw_config *c, double lr, int64_t t) {
    const double bc1 = 1.0 - pow(c->beta1, (double)t), bc2 = 1.0 - pow(c->beta2, (double)t);
    const float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    const float b1 = (float)c->beta1, b2 = (float)c->beta2, eps = (float)c->eps;
    for (int i = 0; i < n; i++) {
        if (!p[i].grad) continue;
        float *w = p[i].param, *m = p[i].m, *v = p[i].v;
        const float *g = p[i].grad;
        const float decay = p[i].decay ? (float)(1.0 - lr * c->weight_decay) : 1.0f;
#pragma omp parallel for schedule(static)
        for (int64_t k = 0; k < p[i].n; k++) {
            /* The order of torch's single-tensor AdamW: decay, moments, then the update. */
            w[k] *= decay;
            m[k] += (1.0f - b1) * (g[k] - m[k]); /* torch: exp_avg.lerp_(grad, 1 - beta1) */
            v[k] = b2 * v[k] + (1.0f - b2) * g[k] * g[k];
            const float denom = sqrtf(v[k]) / bc2_sqrt + eps;
            w[k] -= step_size * m[k] / denom;
        }
    }
}
