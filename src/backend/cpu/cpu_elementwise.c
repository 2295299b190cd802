/* CPU elementwise and normalisation ops over the last dim: gelu, silu_mul, add, layernorm,
 * rmsnorm, softmax. Rows run in parallel (OpenMP); each row's statistics are accumulated in
 * double, so results do not depend on the thread count. The formulas follow PyTorch's float32
 * evaluation order where that order shows in the last bit (gelu, silu, rmsnorm). */
#include <math.h>

#include "backend/cpu/cpu_internal.h"
#include "core/error.h"

/* y and x F32 of the same shape with contiguous rows; fills their row views. */
static int check_unary(const char *op, const ad_tensor *y, const ad_tensor *x, cpu_rows *ry,
                       cpu_rows *rx) {
    AD_TRY(cpu_check_tensor(op, "y", y, AD_F32));
    AD_TRY(cpu_check_tensor(op, "x", x, AD_F32));
    AD_TRY(ad_op_check_ndim(op, x, 1, AD_MAX_DIMS));
    AD_TRY(ad_op_check_same_shape(op, y, x));
    AD_TRY(ad_op_check_rows(op, y));
    AD_TRY(ad_op_check_rows(op, x));
    cpu_rows_of(y, ry);
    cpu_rows_of(x, rx);
    return AD_OK;
}

/* Rows in parallel once there is enough work to pay for the threads. */
#define PARALLEL_ROWS_IF(r) ((r).rows * (r).cols > CPU_PARALLEL_MIN_WORK)

int ad_cpu_gelu(ad_backend *be, ad_tensor *y, const ad_tensor *x) {
    cpu_rows ry, rx;
    AD_TRY(check_unary("gelu", y, x, &ry, &rx));
    const int64_t C = rx.cols;
#pragma omp parallel for num_threads(cpu_of(be)->n_threads)                                        \
    schedule(static) if (PARALLEL_ROWS_IF(rx))
    for (int64_t i = 0; i < rx.rows; i++) {
        const float *xi = cpu_row(&rx, i);
        float *yi = cpu_row(&ry, i);
        for (int64_t j = 0; j < C; j++) {
            const float v = xi[j];
            /* x/2 * (1 + erf(x/sqrt2)) written with erfc: for x << 0 the sum cancels
             * (torch's float32 gelu loses ~1e-4 relative there), erfc does not. */
            yi[j] = 0.5f * v * erfcf(-v * (float)M_SQRT1_2);
        }
    }
    return AD_OK;
}

int ad_cpu_silu_mul(ad_backend *be, ad_tensor *y, const ad_tensor *gate, const ad_tensor *up) {
    const char *op = "silu_mul";
    cpu_rows ry, rg, ru;
    AD_TRY(check_unary(op, y, gate, &ry, &rg));
    AD_TRY(cpu_check_tensor(op, "up", up, AD_F32));
    AD_TRY(ad_op_check_same_shape(op, up, gate));
    AD_TRY(ad_op_check_rows(op, up));
    cpu_rows_of(up, &ru);
    const int64_t C = rg.cols;
#pragma omp parallel for num_threads(cpu_of(be)->n_threads)                                        \
    schedule(static) if (PARALLEL_ROWS_IF(rg))
    for (int64_t i = 0; i < rg.rows; i++) {
        const float *g = cpu_row(&rg, i), *u = cpu_row(&ru, i);
        float *yi = cpu_row(&ry, i);
        for (int64_t j = 0; j < C; j++)
            yi[j] = g[j] / (1.0f + expf(-g[j])) * u[j];
    }
    return AD_OK;
}

int ad_cpu_add(ad_backend *be, ad_tensor *y, const ad_tensor *a, const ad_tensor *b) {
    const char *op = "add";
    cpu_rows ry, ra, rb;
    AD_TRY(check_unary(op, y, a, &ry, &ra));
    AD_TRY(cpu_check_tensor(op, "b", b, AD_F32));
    AD_TRY(ad_op_check_trailing(op, b, a));
    cpu_rows_of(b, &rb);
    const int64_t C = ra.cols;
    if (rb.rows == 0) return AD_OK;
#pragma omp parallel for num_threads(cpu_of(be)->n_threads)                                        \
    schedule(static) if (PARALLEL_ROWS_IF(ra))
    for (int64_t i = 0; i < ra.rows; i++) {
        const float *ai = cpu_row(&ra, i), *bi = cpu_row(&rb, i % rb.rows);
        float *yi = cpu_row(&ry, i);
        for (int64_t j = 0; j < C; j++)
            yi[j] = ai[j] + bi[j];
    }
    return AD_OK;
}

int ad_cpu_layernorm(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *weight,
                     const ad_tensor *bias, float eps) {
    const char *op = "layernorm";
    cpu_rows ry, rx;
    AD_TRY(check_unary(op, y, x, &ry, &rx));
    const int64_t C = rx.cols;
    AD_TRY(cpu_check_weight(op, "weight", weight));
    AD_TRY(cpu_check_weight(op, "bias", bias));
    AD_TRY(ad_op_check_vector(op, weight, C));
    AD_TRY(ad_op_check_vector(op, bias, C));
    if (!(eps >= 0)) return ad_fail("layernorm: eps %g must be >= 0", (double)eps);
    const float *w, *bv;
    AD_TRY(cpu_param_f32(be, weight, CPU_SCRATCH_PARAM_A, &w));
    AD_TRY(cpu_param_f32(be, bias, CPU_SCRATCH_PARAM_B, &bv));
    if (C == 0) return AD_OK;
#pragma omp parallel for num_threads(cpu_of(be)->n_threads)                                        \
    schedule(static) if (PARALLEL_ROWS_IF(rx))
    for (int64_t i = 0; i < rx.rows; i++) {
        const float *xi = cpu_row(&rx, i);
        float *yi = cpu_row(&ry, i);
        double sum = 0, sq = 0;
        for (int64_t j = 0; j < C; j++)
            sum += xi[j];
        const double mean = sum / (double)C;
        for (int64_t j = 0; j < C; j++)
            sq += ((double)xi[j] - mean) * ((double)xi[j] - mean);
        /* Biased variance and eps inside the root, as torch.nn.LayerNorm. */
        const double rstd = 1.0 / sqrt(sq / (double)C + (double)eps);
        for (int64_t j = 0; j < C; j++)
            yi[j] = (float)(((double)xi[j] - mean) * rstd) * w[j] + bv[j];
    }
    return AD_OK;
}

int ad_cpu_rmsnorm(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *weight,
                   float eps) {
    const char *op = "rmsnorm";
    cpu_rows ry, rx;
    AD_TRY(check_unary(op, y, x, &ry, &rx));
    const int64_t C = rx.cols;
    AD_TRY(cpu_check_weight(op, "weight", weight));
    AD_TRY(ad_op_check_vector(op, weight, C));
    if (!(eps >= 0)) return ad_fail("rmsnorm: eps %g must be >= 0", (double)eps);
    const float *w;
    AD_TRY(cpu_param_f32(be, weight, CPU_SCRATCH_PARAM_A, &w));
    if (C == 0) return AD_OK;
#pragma omp parallel for num_threads(cpu_of(be)->n_threads)                                        \
    schedule(static) if (PARALLEL_ROWS_IF(rx))
    for (int64_t i = 0; i < rx.rows; i++) {
        const float *xi = cpu_row(&rx, i);
        float *yi = cpu_row(&ry, i);
        double sq = 0;
        for (int64_t j = 0; j < C; j++)
            sq += (double)xi[j] * xi[j];
        /* Qwen2RMSNorm: weight * (x * rsqrt(mean(x^2) + eps)), each product in float. */
        const float r = (float)(1.0 / sqrt(sq / (double)C + (double)eps));
        for (int64_t j = 0; j < C; j++)
            yi[j] = w[j] * (xi[j] * r);
    }
    return AD_OK;
}

int ad_cpu_softmax(ad_backend *be, ad_tensor *y, const ad_tensor *x) {
    cpu_rows ry, rx;
    AD_TRY(check_unary("softmax", y, x, &ry, &rx));
    const int64_t C = rx.cols;
    if (C == 0) return AD_OK;
#pragma omp parallel for num_threads(cpu_of(be)->n_threads)                                        \
    schedule(static) if (PARALLEL_ROWS_IF(rx))
    for (int64_t i = 0; i < rx.rows; i++) {
        const float *xi = cpu_row(&rx, i);
        float *yi = cpu_row(&ry, i);
        float mx = -INFINITY;
        for (int64_t j = 0; j < C; j++)
            mx = xi[j] > mx ? xi[j] : mx;
        double sum = 0;
        for (int64_t j = 0; j < C; j++) {
            yi[j] = expf(xi[j] - mx);
            sum += yi[j];
        }
        for (int64_t j = 0; j < C; j++)
            yi[j] = (float)(yi[j] / sum);
    }
    return AD_OK;
}
