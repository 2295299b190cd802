#include "compress/gptq.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

/* LAPACK from OpenBLAS (Fortran interface). */
extern void dpotrf_(const char *uplo, const int *n, double *a, const int *lda, int *info);
extern void dpotri_(const char *uplo, const int *n, double *a, const int *lda, int *info);

int ad_gptq_hessian_add(double *H, int64_t cols, const float *X, int64_t n_rows, int64_t *count) {
    /* Running mean of 2 x x^T: rescale what is there, then add the new rows, as one BLAS
     * rank-k update in double (upper triangle, mirrored after). */
    double total = (double)(*count + n_rows);
    double keep = (double)*count / total, add = 2.0 / total;
    double *Xd = ad_malloc(sizeof(double) * (size_t)(n_rows * cols + 1), "calibration rows");
    if (!Xd) return AD_ERR;
    for (int64_t i = 0; i < n_rows * cols; i++)
        Xd[i] = X[i];
    cblas_dsyrk(CblasRowMajor, CblasUpper, CblasTrans, (int)cols, (int)n_rows, add, Xd, (int)cols,
                keep, H, (int)cols);
    free(Xd);
    for (int64_t i = 0; i < cols; i++)
        for (int64_t j = 0; j < i; j++)
            H[i * cols + j] = H[j * cols + i];
    *count += n_rows;
    return AD_OK;
}

/* H <- upper Cholesky factor U of H^-1 (H^-1 = U^T U), row-major. */
static int inverse_cholesky_upper(double *H, int n, const char *name) {
    int info = 0;
    /* Row-major H is column-major H^T = H (symmetric), so "L" in LAPACK's view is the upper
     * triangle in ours; we keep track by symmetrising between steps. */
    dpotrf_("L", &n, H, &n, &info);
    if (info != 0)
        return ad_fail("%s: the calibration Hessian is not positive definite (dpotrf info %d); "
                       "use more calibration data or more dampening",
                       name, info);
    dpotri_("L", &n, H, &n, &info);
    if (info != 0)
        return ad_fail("%s: cannot invert the calibration Hessian (info %d)", name, info);
    /* Column-major lower triangle = row-major upper triangle: mirror it to get the full inverse. */
    for (int i = 0; i < n; i++)
        for (int j = i + 1; j < n; j++)
            H[j * n + i] = H[i * n + j];
    /* Cholesky of the inverse, upper: in column-major terms the lower factor L with
     * Hinv = L L^T, whose transpose (row-major view) is U with Hinv = U^T U. */
    dpotrf_("L", &n, H, &n, &info);
    if (info != 0)
        return ad_fail("%s: the inverse Hessian is not positive definite (info %d)", name, info);
    /* Row-major: element (i, j) with j >= i holds U[i][j]; clear the other triangle. */
    for (int i = 0; i < n; i++)
        for (int j = 0; j < i; j++)
            H[i * n + j] = 0;
    return AD_OK;
}

int ad_gptq_quantize(ad_quant_tensor *q, const float *W, double *H, const ad_gptq_options *opts,
                     const char *name) {
    const int64_t rows = q->rows, cols = q->cols;
    if (cols > 1 << 20) return ad_fail("%s: too many columns for GPTQ", name);
    for (int64_t i = 0; i < rows * cols; i++)
        if (!isfinite(W[i])) return ad_fail("%s: the weight has NaN or inf", name);
    /* Dead inputs: never activated in calibration, so any value is as good; the reference
     * sets the weight to zero and the Hessian diagonal to one. */
    char *dead = ad_calloc((size_t)cols, 1, "gptq");
    if (!dead) return AD_ERR;
    double mean_diag = 0;
    for (int64_t i = 0; i < cols; i++) {
        if (H[i * cols + i] == 0) {
            dead[i] = 1;
            H[i * cols + i] = 1;
        }
        mean_diag += H[i * cols + i];
    }
    mean_diag /= (double)cols;
    double damp = (opts ? opts->damp_percent : 0.01) * mean_diag;
    for (int64_t i = 0; i < cols; i++)
        H[i * cols + i] += damp;
    int rc = inverse_cholesky_upper(H, (int)cols, name);
    if (rc < 0) {
        free(dead);
        return rc;
    }
    const ad_quant_spec *spec = &q->spec;
    const int G = spec->group_size;
    const int64_t groups = cols / G, row_bytes = ad_quant_row_bytes(spec, cols);
    float *work_all = ad_malloc(sizeof(float) * (size_t)(rows * cols), "gptq work");
    if (!work_all) {
        free(dead);
        return AD_ERR;
    }
    memcpy(work_all, W, sizeof(float) * (size_t)(rows * cols));
    /* Rows are independent: each row's error only flows along its own columns. */
#pragma omp parallel for schedule(dynamic, 4)
    for (int64_t r = 0; r < rows; r++) {
        float *w = work_all + r * cols;
        uint8_t *code_row = q->codes + r * row_bytes;
        for (int64_t i = 0; i < cols; i++)
            if (dead[i]) w[i] = 0;
        float scale = 1;
        int zero = 0;
        for (int64_t i = 0; i < cols; i++) {
            if (i % G == 0) {
                /* Group parameters from the weights as updated so far (as the reference). */
                ad_quant_group_params(spec, w + i, G, &scale, &zero);
                q->scales[r * groups + i / G] = ad_f32_to_f16(scale);
                if (q->zeros) q->zeros[r * groups + i / G] = (uint8_t)zero;
            }
            uint32_t c = ad_quant_encode(spec, w[i], scale, zero);
            ad_quant_set_code(code_row, spec->bits, i, c);
            double deq = scale * ((double)c - zero);
            double err = (w[i] - deq) / H[i * cols + i];
            const double *u = H + i * cols;
            for (int64_t j = i + 1; j < cols; j++)
                w[j] -= (float)(err * u[j]);
        }
    }
    free(work_all);
    free(dead);
    return AD_OK;
}
