/* Argument checks every backend's ops run before touching data. They read only a tensor's
 * shape, strides, dtype and address, never its memory, so the CPU and CUDA backends share them;
 * each fails with "op: tensor NAME [dims] dtype: what was expected". (Device and dtype checks
 * stay in each backend: they differ.) */
#ifndef AUDISTILL_BACKEND_OP_CHECK_H
#define AUDISTILL_BACKEND_OP_CHECK_H

#include <stdbool.h>
#include <stdint.h>

#include "core/error.h"
#include "core/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

int ad_op_fail_tensor(const char *op, const ad_tensor *t, const char *fmt, ...) AD_PRINTF(3, 4);
/* ndim within [lo, hi]. */
int ad_op_check_ndim(const char *op, const ad_tensor *t, int lo, int hi);
/* The last dim is unit-stride (rows of contiguous elements; leading dims may be strided). */
int ad_op_check_rows(const char *op, const ad_tensor *t);
int ad_op_check_contiguous(const char *op, const ad_tensor *t);
int ad_op_check_same_shape(const char *op, const ad_tensor *a, const ad_tensor *b);
/* A 1-D vector of n elements (norm weights, biases). */
int ad_op_check_vector(const char *op, const ad_tensor *t, int64_t n);
/* Refuses outputs that share memory with an input of an op that is not in place. Exact
 * aliasing is always caught; partial overlap only when both tensors are contiguous (strided
 * views of one buffer, such as a fused QKV, may interleave without overlapping). */
int ad_op_check_no_alias(const char *op, const ad_tensor *out, const ad_tensor *in);
/* attention_backward's dq, dk, dv (each may be NULL) alias none of its inputs (dout, out, q, k,
 * v): they are overwritten, and a backend may run the backward more than once (CUDA's tuning). */
int ad_op_check_attention_grads(const char *op, const ad_tensor *dq, const ad_tensor *dk,
                                const ad_tensor *dv, const ad_tensor *dout, const ad_tensor *out,
                                const ad_tensor *q, const ad_tensor *k, const ad_tensor *v);
/* linear_residual's residual: y's shape and dtype, and not y. */
int ad_op_check_residual(const char *op, const ad_tensor *y, const ad_tensor *residual);
/* rope's operands (both backends): x and y [B, T, n_heads * head_dim] of one shape, rows
 * unit-stride, y either x itself (in place) or not overlapping it; positions [B, T]; an even
 * head_dim up to max_head_dim; a finite theta > 0. Dtypes stay with each backend. */
int ad_op_check_rope(const char *op, const ad_tensor *y, const ad_tensor *x,
                     const ad_tensor *positions, int n_heads, int head_dim, float theta,
                     int max_head_dim);
/* add's b: the trailing dims of a (a row broadcast over a's leading dims, or a's own shape),
 * rows unit-stride. */
int ad_op_check_trailing(const char *op, const ad_tensor *b, const ad_tensor *a);
/* transpose: x [M, N] or [B, M, N]; y x's shape with the last two dims swapped, apart from x. */
int ad_op_check_transpose(const char *op, const ad_tensor *y, const ad_tensor *x);
/* avg_pool1d over time: x [B, L, C] and y [B, (L - kernel) / stride + 1, C] (the backward's dx
 * and dy), rows unit-stride, apart; kernel and stride >= 1, L >= kernel. */
int ad_op_check_pool(const char *op, const ad_tensor *y, const ad_tensor *x, int kernel,
                     int stride);
/* A tensor as a 2-D matrix: rows = its leading dims flattened (they must merge into one
 * stride), cols = the last dim; stored row-major with leading dimension ld, or a transposed view
 * (trans: stored = logical^T, ld the column stride). Both backends' GEMM operands. */
typedef struct {
    int64_t rows, cols, ld;
    bool trans;
} ad_op_matrix;
/* Refuses views no single GEMM call can take (leading dims that do not merge, neither rows nor
 * columns contiguous, a stride shorter than its line, dims above 2^31). */
int ad_op_matrix_of(const char *op, const ad_tensor *t, ad_op_matrix *m);
/* matmul: y [M x N] = op(a) op(b), op transposing its matrix when asked. */
int ad_op_check_matmul(const char *op, const ad_tensor *y, ad_op_matrix Y, const ad_tensor *a,
                       ad_op_matrix A, bool transpose_a, const ad_tensor *b, ad_op_matrix B,
                       bool transpose_b);
/* linear: y [rows x N] = x [rows x K] w^T for a 2-D weight w [N, K]. */
int ad_op_check_linear(const char *op, const ad_tensor *y, ad_op_matrix Y, const ad_tensor *x,
                       ad_op_matrix X, const ad_tensor *w);
/* t as rows of its last dim (*cols): its leading dims outermost first, size-1 dims dropped,
 * contiguous neighbours merged, into shape[] and stride[] (strides in elements times `scale`:
 * 1, or the element size for bytes); at least one (stride 0 where t has none). Returns their
 * count; *rows is their product. The row addressing of both backends' row-wise kernels. */
int ad_op_lead_dims(const ad_tensor *t, int64_t scale, int64_t shape[AD_MAX_DIMS],
                    int64_t stride[AD_MAX_DIMS], int64_t *rows, int64_t *cols);
/* adamw's operands: w, g, m, v (and w_bf16 unless NULL: BF16, apart from w) contiguous and of
 * one shape. */
int ad_op_check_adamw(const ad_tensor *w, const ad_tensor *g, const ad_tensor *m,
                      const ad_tensor *v, const ad_tensor *w_bf16);

#ifdef __cplusplus
}
#endif

#endif
