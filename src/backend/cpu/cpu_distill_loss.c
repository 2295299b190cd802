/* The fused distillation loss on the CPU (the reference for the CUDA kernel): per supervised
 * row, streaming max/sum statistics over the vocabulary, then the KL/CE sums, then the logits
 * gradient written in place. Accumulation in double; rows in parallel; the per-row results
 * are summed in row order so the totals do not depend on the thread count. */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_distill_loss.h"
#include "core/error.h"

typedef struct {
    double max, sum; /* softmax statistics of x * scale: sum of exp(x*scale - max) */
} softmax_stats;

static softmax_stats stats_of(const float *x, int64_t n, double scale) {
    softmax_stats st = {-INFINITY, 0.0};
    for (int64_t j = 0; j < n; j++) {
        double z = (double)x[j] * scale;
        if (z > st.max) {
            st.sum = st.sum * exp(st.max - z) + 1.0;
            st.max = z;
        } else {
            st.sum += exp(z - st.max);
        }
    }
    return st;
}

static inline double log_softmax_at(const softmax_stats *st, double z) {
    return z - st->max - log(st->sum);
}

typedef struct {
    double loss, kl, ce;
} row_result;

static row_result one_row(float *grad, const float *s, const float *t, int32_t y, int64_t V,
                          const ad_distill_params *p) {
    row_result r = {0, 0, 0};
    const double T = p->temperature, inv_T = 1.0 / T, lambda = p->skew;
    const double alpha = t ? p->alpha : 0.0;
    softmax_stats s1 = stats_of(s, V, 1.0);
    r.ce = -log_softmax_at(&s1, (double)s[y]);
    double kl = 0, sum_a = 0, sum_qlogq = 0, sum_qlogm = 0, sum_q2m = 0;
    softmax_stats sq = {0, 0}, sp = {0, 0};
    if (t) {
        sq = stats_of(s, V, inv_T);
        sp = stats_of(t, V, inv_T);
        for (int64_t j = 0; j < V; j++) {
            double lq = log_softmax_at(&sq, s[j] * inv_T), lp = log_softmax_at(&sp, t[j] * inv_T);
            double q = exp(lq), pj = exp(lp);
            switch (p->kind) {
            case AD_KL_FORWARD: kl += pj * (lp - lq); break;
            case AD_KL_REVERSE: kl += q * (lq - lp); break;
            case AD_KL_SKEW_FORWARD: {
                double m = lambda * pj + (1 - lambda) * q;
                kl += pj * (lp - log(m));
                sum_a += pj * q / m;
                break;
            }
            case AD_KL_SKEW_REVERSE: {
                double m = lambda * q + (1 - lambda) * pj;
                kl += q * (lq - log(m));
                sum_qlogq += q * lq;
                sum_qlogm += q * log(m);
                sum_q2m += q * q / m;
                break;
            }
            }
        }
    }
    r.kl = kl;
    r.loss = alpha * T * T * kl + (1 - alpha) * r.ce;
    const double scale = p->grad_scale;
    for (int64_t j = 0; j < V; j++) {
        double g = (1 - alpha) * (exp(log_softmax_at(&s1, s[j])) - (j == y ? 1.0 : 0.0));
        if (t) {
            double lq = log_softmax_at(&sq, s[j] * inv_T), lp = log_softmax_at(&sp, t[j] * inv_T);
            double q = exp(lq), pj = exp(lp), dz = 0;
            switch (p->kind) {
            case AD_KL_FORWARD: dz = q - pj; break;
            case AD_KL_REVERSE: dz = q * (lq - lp - kl); break;
            case AD_KL_SKEW_FORWARD: {
                double m = lambda * pj + (1 - lambda) * q;
                dz = -(1 - lambda) * (pj * q / m - q * sum_a);
                break;
            }
            case AD_KL_SKEW_REVERSE: {
                double m = lambda * q + (1 - lambda) * pj;
                dz = q * (lq - sum_qlogq) -
                     (q * log(m) - q * sum_qlogm + lambda * (q * q / m - q * sum_q2m));
                break;
            }
            }
            /* d(T^2 KL(z = s/T))/ds = T * dKL/dz */
            g += alpha * T * dz;
        }
        grad[j] = (float)(g * scale);
    }
    return r;
}

static int check_2d(const ad_tensor *t, int64_t n, int64_t v, const char *what) {
    if (t->device != AD_DEVICE_CPU || t->dtype != AD_F32 || t->ndim != 2 ||
        !ad_tensor_is_contiguous(t))
        return ad_fail("distill_loss: %s (%s) must be a contiguous 2-D F32 CPU tensor", what,
                       t->name);
    if (n >= 0 && (t->shape[0] != n || t->shape[1] != v))
        return ad_fail("distill_loss: %s (%s) is [%lld, %lld], expected [%lld, %lld]", what,
                       t->name, (long long)t->shape[0], (long long)t->shape[1], (long long)n,
                       (long long)v);
    return AD_OK;
}

int ad_cpu_distill_loss(ad_backend *be, ad_tensor *grad, const ad_tensor *student,
                        const ad_tensor *teacher, const ad_tensor *targets,
                        const ad_distill_params *params, ad_distill_sums *sums) {
    (void)be;
    AD_TRY(check_2d(student, -1, -1, "student logits"));
    const int64_t N = student->shape[0], V = student->shape[1];
    AD_TRY(check_2d(grad, N, V, "gradient"));
    if (teacher) AD_TRY(check_2d(teacher, N, V, "teacher logits"));
    if (targets->dtype != AD_I32 || targets->ndim != 1 || targets->shape[0] != N ||
        !ad_tensor_is_contiguous(targets))
        return ad_fail("distill_loss: targets (%s) must be I32 [%lld]", targets->name,
                       (long long)N);
    if (!(params->temperature > 0) || params->alpha < 0 || params->alpha > 1 || params->skew < 0 ||
        params->skew >= 1)
        return ad_fail("distill_loss: need temperature > 0, 0 <= alpha <= 1, 0 <= skew < 1");
    const int32_t *y = targets->data;
    for (int64_t i = 0; i < N; i++)
        if (y[i] >= V)
            return ad_fail("distill_loss: target %d of row %lld outside the vocabulary (%lld)",
                           y[i], (long long)i, (long long)V);
    row_result *rows = ad_calloc((size_t)(N ? N : 1), sizeof *rows, "loss rows");
    if (!rows) return AD_ERR;
    float *g = grad->data;
    const float *s = student->data, *t = teacher ? teacher->data : NULL;
#pragma omp parallel for schedule(dynamic, 1)
    for (int64_t i = 0; i < N; i++) {
        if (y[i] < 0) {
            memset(g + i * V, 0, sizeof(float) * (size_t)V);
            continue;
        }
        rows[i] = one_row(g + i * V, s + i * V, t ? t + i * V : NULL, y[i], V, params);
    }
    for (int64_t i = 0; i < N; i++) {
        if (y[i] < 0) continue;
        sums->loss += rows[i].loss;
        sums->kl += rows[i].kl;
        sums->ce += rows[i].ce;
        sums->rows++;
    }
    free(rows);
    if (!isfinite(sums->loss))
        return ad_fail("distill_loss: the loss is not finite (NaN or inf logits?)");
    return AD_OK;
}
