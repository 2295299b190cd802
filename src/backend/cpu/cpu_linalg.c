/* CPU matmul, linear and conv1d, all on OpenBLAS sgemm. Weights in BF16/F16 are converted to
 * f32 a tile of output columns at a time (never the whole matrix: an lm_head is ~2.5 GB in
 * f32), conv1d weights are repacked once per call to [C_out, K, C_in] so that an im2col row
 * is K contiguous time steps of the channels-last input. */
#include <cblas.h>
#include <limits.h>
#include <string.h>

#include "backend/cpu/cpu_internal.h"
#include "compress/quant.h"
#include "core/error.h"

/* Target size of a converted weight tile or an im2col block (floats): big enough that sgemm
 * runs at full speed, small enough to stay in the last-level cache's neighbourhood. */
#define TILE_FLOATS ((int64_t)1 << 20)

/* A tensor seen as a 2-D matrix (leading dims flattened) stored row-major with leading
 * dimension ld, possibly transposed: a transposed view of a contiguous matrix has unit stride
 * in its rows dim and is handed to BLAS as the stored matrix with the transpose flag. */
typedef struct {
    const char *data;
    ad_dtype dtype;
    int64_t esize;
    int64_t rows, cols; /* logical */
    int64_t ld;         /* of the stored row-major matrix */
    bool trans;         /* stored = logical^T */
} mat_view;

static int mat_of(const char *op, const ad_tensor *t, mat_view *m) {
    ad_op_matrix v;
    AD_TRY(ad_op_matrix_of(op, t, &v));
    *m = (mat_view){t->data, t->dtype, ad_dtype_bits(t->dtype) / 8, v.rows, v.cols, v.ld, v.trans};
    return AD_OK;
}

static inline CBLAS_TRANSPOSE blas_trans(bool t) {
    return t ? CblasTrans : CblasNoTrans;
}

/* y[M, N] = alpha * op(A) @ op(B) + beta * y, op(A) [M, K], op(B) [K, N]; B in any weight
 * dtype. Called outside OpenMP regions only (see cpu_backend.c on threads). */
static int gemm(ad_backend *be, float *y, int64_t ldy, const mat_view *A, bool ta,
                const mat_view *B, bool tb, int64_t M, int64_t N, int64_t K, float alpha,
                float beta) {
    if (M == 0 || N == 0) return AD_OK;
    const int n_threads = cpu_of(be)->n_threads;
    if (K == 0) {
#pragma omp parallel for num_threads(n_threads) schedule(static) if (M * N > CPU_PARALLEL_MIN_WORK)
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++)
                y[i * ldy + j] = beta == 0.0f ? 0.0f : beta * y[i * ldy + j];
        return AD_OK;
    }
    const bool tA = ta != A->trans, tB = tb != B->trans;
    cpu_blas_threads(be);
    if (B->dtype == AD_F32) {
        cblas_sgemm(CblasRowMajor, blas_trans(tA), blas_trans(tB), (int)M, (int)N, (int)K, alpha,
                    (const float *)A->data, (int)A->ld, (const float *)B->data, (int)B->ld, beta, y,
                    (int)ldy);
        return AD_OK;
    }
    /* The conversion is serial on purpose: an OpenMP region between two BLAS calls competes
     * with OpenBLAS's pool, whose threads still spin after the previous tile (measured: 2x
     * slower on 2 cores), and the conversion is memory-bound anyway. */
    int64_t nb = TILE_FLOATS / K;
    if (nb < 64) nb = 64;
    if (nb > N) nb = N;
    float *tile;
    AD_TRY(cpu_scratch(be, CPU_SCRATCH_WEIGHT, (size_t)(nb * K) * sizeof(float), (void **)&tile));
    for (int64_t n0 = 0; n0 < N; n0 += nb) {
        const int64_t n = N - n0 < nb ? N - n0 : nb;
        if (tB) {
            /* stored [N, K]: rows n0.. of the weight become a [n, K] f32 tile */
            for (int64_t i = 0; i < n; i++)
                cpu_convert_f32(tile + i * K, B->data + (n0 + i) * B->ld * B->esize, B->dtype, K);
        } else {
            /* stored [K, N]: columns n0.. become a [K, n] f32 tile */
            for (int64_t k = 0; k < K; k++)
                cpu_convert_f32(tile + k * n, B->data + (k * B->ld + n0) * B->esize, B->dtype, n);
        }
        cblas_sgemm(CblasRowMajor, blas_trans(tA), blas_trans(tB), (int)M, (int)n, (int)K, alpha,
                    (const float *)A->data, (int)A->ld, tile, (int)(tB ? K : n), beta, y + n0,
                    (int)ldy);
    }
    return AD_OK;
}

static int output_view(const char *op, const ad_tensor *y, mat_view *m) {
    AD_TRY(cpu_check_tensor(op, "y", y, AD_F32));
    AD_TRY(mat_of(op, y, m));
    if (m->trans) return ad_op_fail_tensor(op, y, "the output's rows must be contiguous");
    return AD_OK;
}

int ad_cpu_matmul(ad_backend *be, ad_tensor *y, const ad_tensor *a, bool transpose_a,
                  const ad_tensor *b, bool transpose_b, float alpha, float beta) {
    const char *op = "matmul";
    mat_view Y, A, B;
    AD_TRY(output_view(op, y, &Y));
    AD_TRY(cpu_check_tensor(op, "a", a, AD_F32));
    AD_TRY(cpu_check_weight(op, "b", b));
    AD_TRY(mat_of(op, a, &A));
    AD_TRY(mat_of(op, b, &B));
    AD_TRY(ad_op_check_matmul(op, y, (ad_op_matrix){Y.rows, Y.cols, Y.ld, Y.trans}, a,
                              (ad_op_matrix){A.rows, A.cols, A.ld, A.trans}, transpose_a, b,
                              (ad_op_matrix){B.rows, B.cols, B.ld, B.trans}, transpose_b));
    const int64_t M = transpose_a ? A.cols : A.rows, K = transpose_a ? A.rows : A.cols;
    const int64_t N = transpose_b ? B.rows : B.cols;
    return gemm(be, (float *)Y.data, Y.ld, &A, transpose_a, &B, transpose_b, M, N, K, alpha, beta);
}

/* Every row of y (a matrix view) set to bias[N] or zero, so the GEMM can accumulate (beta 1). */
static int prefill_bias(ad_backend *be, const char *op, const mat_view *Y, const ad_tensor *bias) {
    const float *bv = NULL;
    if (bias) {
        AD_TRY(cpu_check_weight(op, "bias", bias));
        AD_TRY(ad_op_check_vector(op, bias, Y->cols));
        AD_TRY(cpu_param_f32(be, bias, CPU_SCRATCH_PARAM_A, &bv));
    }
    float *y = (float *)Y->data;
    const int64_t N = Y->cols;
#pragma omp parallel for num_threads(cpu_of(be)->n_threads)                                        \
    schedule(static) if (Y->rows * N > CPU_PARALLEL_MIN_WORK)
    for (int64_t i = 0; i < Y->rows; i++) {
        if (bv)
            memcpy(y + i * Y->ld, bv, (size_t)N * sizeof(float));
        else
            memset(y + i * Y->ld, 0, (size_t)N * sizeof(float));
    }
    return AD_OK;
}

/* y += x @ W^T for a group-quantized W: rows of W are dequantized a tile at a time into f32
 * (never the whole matrix) and multiplied with sgemm, like the BF16 path above. */
static int linear_quantized(ad_backend *be, const mat_view *Y, const mat_view *X,
                            const ad_tensor *w) {
    const ad_quant_tensor *q = w->quant;
    if (!q) return ad_op_fail_tensor("linear", w, "is QGROUP but has no quantized data");
    const int64_t N = q->rows, K = q->cols, M = X->rows;
    if (X->cols != K || Y->cols != N || Y->rows != M || X->trans)
        return ad_op_fail_tensor("linear", w, "quantized [%lld, %lld] does not fit x [%lld, %lld]",
                                 (long long)N, (long long)K, (long long)M, (long long)X->cols);
    int64_t nb = TILE_FLOATS / (K ? K : 1);
    if (nb < 64) nb = 64;
    if (nb > N) nb = N;
    float *tile;
    AD_TRY(cpu_scratch(be, CPU_SCRATCH_WEIGHT, (size_t)(nb * K) * sizeof(float), (void **)&tile));
    cpu_blas_threads(be);
    for (int64_t n0 = 0; n0 < N; n0 += nb) {
        const int64_t n = N - n0 < nb ? N - n0 : nb;
        ad_quant_dequantize_rows(q, n0, n, tile);
        if (M)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)M, (int)n, (int)K, 1.0f,
                        (const float *)X->data, (int)X->ld, tile, (int)K, 1.0f,
                        (float *)Y->data + n0, (int)Y->ld);
    }
    return AD_OK;
}

int ad_cpu_linear(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *w,
                  const ad_tensor *bias) {
    const char *op = "linear";
    mat_view Y, X, W;
    AD_TRY(output_view(op, y, &Y));
    AD_TRY(cpu_check_tensor(op, "x", x, AD_F32));
    if (w->dtype == AD_QGROUP) {
        AD_TRY(mat_of(op, x, &X));
        AD_TRY(ad_op_check_no_alias(op, y, x));
        AD_TRY(prefill_bias(be, op, &Y, bias));
        return linear_quantized(be, &Y, &X, w);
    }
    AD_TRY(cpu_check_weight(op, "w", w));
    AD_TRY(ad_op_check_ndim(op, w, 2, 2));
    AD_TRY(mat_of(op, x, &X));
    AD_TRY(mat_of(op, w, &W));
    AD_TRY(ad_op_check_linear(op, y, (ad_op_matrix){Y.rows, Y.cols, Y.ld, Y.trans}, x,
                              (ad_op_matrix){X.rows, X.cols, X.ld, X.trans}, w));
    const int64_t N = W.rows, K = W.cols;
    AD_TRY(prefill_bias(be, op, &Y, bias));
    return gemm(be, (float *)Y.data, Y.ld, &X, false, &W, true, X.rows, N, K, 1.0f, 1.0f);
}

/* The reference: the linear's result rounded to f32, then the residual added. */
int ad_cpu_linear_residual(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *w,
                           const ad_tensor *bias, const ad_tensor *residual) {
    const char *op = "linear_residual";
    AD_TRY(cpu_check_tensor(op, "residual", residual, AD_F32));
    AD_TRY(ad_op_check_residual(op, y, residual));
    AD_TRY(ad_cpu_linear(be, y, x, w, bias));
    return ad_cpu_add(be, y, y, residual);
}

int ad_cpu_conv1d(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *w,
                  const ad_tensor *bias, int stride, int padding) {
    const char *op = "conv1d";
    AD_TRY(cpu_check_tensor(op, "y", y, AD_F32));
    AD_TRY(cpu_check_tensor(op, "x", x, AD_F32));
    AD_TRY(cpu_check_weight(op, "w", w));
    AD_TRY(ad_op_check_ndim(op, x, 3, 3));
    AD_TRY(ad_op_check_ndim(op, y, 3, 3));
    AD_TRY(ad_op_check_ndim(op, w, 3, 3));
    AD_TRY(ad_op_check_no_alias(op, y, x));
    if (stride < 1 || padding < 0)
        return ad_fail("conv1d: stride %d must be >= 1 and padding %d >= 0", stride, padding);
    const int64_t B = x->shape[0], L = x->shape[1], C_in = x->shape[2];
    const int64_t C_out = w->shape[0], K = w->shape[2];
    if (w->shape[1] != C_in)
        return ad_op_fail_tensor(op, w, "expected [C_out, %lld, K] for input %s", (long long)C_in,
                                 x->name);
    if (!ad_tensor_is_contiguous(w)) return ad_op_fail_tensor(op, w, "must be contiguous");
    if ((C_in > 1 && x->stride[2] != 1) || (L > 1 && x->stride[1] != C_in))
        return ad_op_fail_tensor(op, x, "each batch element must be a contiguous [L, C_in] block");
    AD_TRY(ad_op_check_rows(op, y));
    if (K < 1 || L + 2 * padding < K)
        return ad_op_fail_tensor(op, x, "length %lld with padding %d is shorter than kernel %lld",
                                 (long long)L, padding, (long long)K);
    const int64_t L_out = (L + 2 * padding - K) / stride + 1, KC = K * C_in;
    if (y->shape[0] != B || y->shape[1] != L_out || y->shape[2] != C_out)
        return ad_op_fail_tensor(op, y, "expected [%lld, %lld, %lld]", (long long)B,
                                 (long long)L_out, (long long)C_out);
    const int64_t ldy = L_out > 1 ? y->stride[1] : C_out;
    if (ldy < C_out)
        return ad_op_fail_tensor(op, y, "its rows overlap (stride %lld)", (long long)ldy);
    if (KC > INT_MAX || C_out > INT_MAX || ldy > INT_MAX)
        return ad_op_fail_tensor(op, w, "too large for a BLAS call");
    if (B == 0 || L_out == 0 || C_out == 0) return AD_OK;
    const int n_threads = cpu_of(be)->n_threads;

    /* Bias first: each batch element's [L_out, C_out] output then accumulates its GEMMs. */
    for (int64_t b = 0; b < B; b++) {
        ad_tensor yb;
        AD_TRY(ad_tensor_slice(y, 0, b, 1, &yb));
        mat_view Y;
        AD_TRY(mat_of(op, &yb, &Y));
        AD_TRY(prefill_bias(be, op, &Y, bias));
    }

    float *wr, *cols;
    AD_TRY(cpu_scratch(be, CPU_SCRATCH_WEIGHT, (size_t)(C_out * KC) * sizeof(float), (void **)&wr));
    const char *wdata = w->data;
    const int64_t wes = ad_dtype_bits(w->dtype) / 8;
#pragma omp parallel for num_threads(n_threads)                                                    \
    schedule(static) if (C_out * KC > CPU_PARALLEL_MIN_WORK)
    for (int64_t o = 0; o < C_out; o++) {
        for (int64_t c = 0; c < C_in; c++)
            for (int64_t k = 0; k < K; k++) {
                float v;
                cpu_convert_f32(&v, wdata + ((o * C_in + c) * K + k) * wes, w->dtype, 1);
                wr[o * KC + k * C_in + c] = v;
            }
    }

    cpu_blas_threads(be);
    int64_t nb = TILE_FLOATS / KC;
    if (nb < 16) nb = 16;
    if (nb > L_out) nb = L_out;
    AD_TRY(cpu_scratch(be, CPU_SCRATCH_COLS, (size_t)(nb * KC) * sizeof(float), (void **)&cols));
    for (int64_t b = 0; b < B; b++) {
        const float *xb = (const float *)x->data + b * x->stride[0];
        float *yb = (float *)y->data + b * y->stride[0];
        for (int64_t t0 = 0; t0 < L_out; t0 += nb) {
            const int64_t n = L_out - t0 < nb ? L_out - t0 : nb;
            /* im2col: row t is input steps t*stride - padding + [0, K), zero outside [0, L).
             * Serial between GEMMs for the reason given in gemm(). */
            for (int64_t i = 0; i < n; i++) {
                const int64_t start = (t0 + i) * stride - padding;
                for (int64_t k = 0; k < K; k++) {
                    float *dst = cols + i * KC + k * C_in;
                    if (start + k < 0 || start + k >= L)
                        memset(dst, 0, (size_t)C_in * sizeof(float));
                    else
                        memcpy(dst, xb + (start + k) * C_in, (size_t)C_in * sizeof(float));
                }
            }
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)n, (int)C_out, (int)KC, 1.0f,
                        cols, (int)KC, wr, (int)KC, 1.0f, yb + t0 * ldy, (int)ldy);
        }
    }
    return AD_OK;
}
