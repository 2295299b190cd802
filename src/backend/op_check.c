#include "backend/op_check.h"

#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>

int ad_op_fail_tensor(const char *op, const ad_tensor *t, const char *fmt, ...) {
    char desc[160], what[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof what, fmt, ap);
    va_end(ap);
    return ad_fail("%s: tensor %s: %s", op, ad_tensor_describe(t, desc, sizeof desc), what);
}

int ad_op_check_ndim(const char *op, const ad_tensor *t, int lo, int hi) {
    if (t->ndim < lo || t->ndim > hi) {
        if (lo == hi) return ad_op_fail_tensor(op, t, "expected %d dims", lo);
        return ad_op_fail_tensor(op, t, "expected %d to %d dims", lo, hi);
    }
    return AD_OK;
}

int ad_op_check_rows(const char *op, const ad_tensor *t) {
    if (t->ndim >= 1 && t->shape[t->ndim - 1] > 1 && t->stride[t->ndim - 1] != 1)
        return ad_op_fail_tensor(op, t, "the last dim must be contiguous (stride %lld)",
                                 (long long)t->stride[t->ndim - 1]);
    return AD_OK;
}

int ad_op_check_contiguous(const char *op, const ad_tensor *t) {
    if (!ad_tensor_is_contiguous(t)) return ad_op_fail_tensor(op, t, "must be contiguous");
    return AD_OK;
}

int ad_op_check_same_shape(const char *op, const ad_tensor *a, const ad_tensor *b) {
    if (!ad_tensor_same_shape(a, b)) {
        char desc[160];
        return ad_op_fail_tensor(op, a, "expected the same shape as %s",
                                 ad_tensor_describe(b, desc, sizeof desc));
    }
    return AD_OK;
}

int ad_op_check_vector(const char *op, const ad_tensor *t, int64_t n) {
    if (t->ndim != 1 || t->shape[0] != n)
        return ad_op_fail_tensor(op, t, "expected a vector [%lld]", (long long)n);
    return AD_OK;
}

/* [lo, hi) byte range covered by a tensor (all strides taken as non-negative). */
static void byte_range(const ad_tensor *t, uintptr_t *lo, uintptr_t *hi) {
    int64_t span = 1;
    for (int d = 0; d < t->ndim; d++)
        if (t->shape[d] > 0) span += (t->shape[d] - 1) * (t->stride[d] < 0 ? 0 : t->stride[d]);
    *lo = (uintptr_t)t->data;
    *hi = *lo + (uintptr_t)span * (uintptr_t)(ad_dtype_bits(t->dtype) / 8);
}

int ad_op_check_no_alias(const char *op, const ad_tensor *out, const ad_tensor *in) {
    if (!in || ad_tensor_numel(out) == 0 || ad_tensor_numel(in) == 0) return AD_OK;
    bool overlap = out->data == in->data;
    if (!overlap && ad_tensor_is_contiguous(out) && ad_tensor_is_contiguous(in)) {
        uintptr_t a0, a1, b0, b1;
        byte_range(out, &a0, &a1);
        byte_range(in, &b0, &b1);
        overlap = a0 < b1 && b0 < a1;
    }
    if (overlap)
        return ad_op_fail_tensor(op, out, "output overlaps input %s; this op is not in place",
                                 in->name);
    return AD_OK;
}

int ad_op_check_attention_grads(const char *op, const ad_tensor *dq, const ad_tensor *dk,
                                const ad_tensor *dv, const ad_tensor *dout, const ad_tensor *out,
                                const ad_tensor *q, const ad_tensor *k, const ad_tensor *v) {
    const ad_tensor *grads[3] = {dq, dk, dv}, *inputs[5] = {dout, out, q, k, v};
    for (int g = 0; g < 3; g++)
        for (int i = 0; grads[g] && i < 5; i++)
            AD_TRY(ad_op_check_no_alias(op, grads[g], inputs[i]));
    return AD_OK;
}

int ad_op_check_residual(const char *op, const ad_tensor *y, const ad_tensor *residual) {
    if (!residual) return ad_fail("%s: the residual is NULL", op);
    AD_TRY(ad_op_check_same_shape(op, residual, y));
    AD_TRY(ad_op_check_no_alias(op, y, residual));
    if (residual->dtype != y->dtype)
        return ad_op_fail_tensor(op, residual, "must be %s like y %s", ad_dtype_name(y->dtype),
                                 y->name);
    return AD_OK;
}

int ad_op_check_rope(const char *op, const ad_tensor *y, const ad_tensor *x,
                     const ad_tensor *positions, int n_heads, int head_dim, float theta,
                     int max_head_dim) {
    AD_TRY(ad_op_check_ndim(op, x, 3, 3));
    AD_TRY(ad_op_check_ndim(op, positions, 2, 2));
    AD_TRY(ad_op_check_rows(op, x));
    if (n_heads < 1 || head_dim < 2 || head_dim % 2 != 0 || head_dim > max_head_dim)
        return ad_fail("%s: need n_heads >= 1 and an even head_dim in [2, %d] (got %d, %d)", op,
                       max_head_dim, n_heads, head_dim);
    if (!(theta > 0) || isinf(theta)) return ad_fail("%s: theta %g must be > 0", op, (double)theta);
    const int64_t B = x->shape[0], T = x->shape[1];
    if (x->shape[2] != (int64_t)n_heads * head_dim)
        return ad_op_fail_tensor(op, x, "last dim must be n_heads * head_dim = %d * %d", n_heads,
                                 head_dim);
    if (positions->shape[0] != B || positions->shape[1] != T)
        return ad_op_fail_tensor(op, positions, "expected [%lld, %lld] for %s", (long long)B,
                                 (long long)T, x->name);
    AD_TRY(ad_op_check_same_shape(op, y, x));
    AD_TRY(ad_op_check_rows(op, y));
    const bool in_place = y->data == x->data && y->dtype == x->dtype &&
                          y->stride[0] == x->stride[0] && y->stride[1] == x->stride[1];
    return in_place ? AD_OK : ad_op_check_no_alias(op, y, x);
}

int ad_op_check_adamw(const ad_tensor *w, const ad_tensor *g, const ad_tensor *m,
                      const ad_tensor *v, const ad_tensor *w_bf16) {
    const ad_tensor *all[5] = {w, g, m, v, w_bf16};
    for (int i = 0; i < 5; i++) {
        if (!all[i]) continue;
        AD_TRY(ad_op_check_contiguous("adamw", all[i]));
        if (i) AD_TRY(ad_op_check_same_shape("adamw", all[i], w));
    }
    if (w_bf16 && w_bf16->dtype != AD_BF16)
        return ad_op_fail_tensor("adamw", w_bf16, "is the bf16 copy of %s, so BF16 (not %s)",
                                 w->name, ad_dtype_name(w_bf16->dtype));
    return w_bf16 ? ad_op_check_no_alias("adamw", w_bf16, w) : AD_OK;
}

int ad_op_check_trailing(const char *op, const ad_tensor *b, const ad_tensor *a) {
    AD_TRY(ad_op_check_ndim(op, b, 1, a->ndim));
    AD_TRY(ad_op_check_rows(op, b));
    const int lead = a->ndim - b->ndim;
    for (int d = 0; d < b->ndim; d++)
        if (b->shape[d] != a->shape[lead + d]) {
            char desc[160];
            return ad_op_fail_tensor(op, b, "its shape must equal the trailing dims of %s",
                                     ad_tensor_describe(a, desc, sizeof desc));
        }
    return AD_OK;
}

int ad_op_check_transpose(const char *op, const ad_tensor *y, const ad_tensor *x) {
    AD_TRY(ad_op_check_ndim(op, x, 2, 3));
    AD_TRY(ad_op_check_no_alias(op, y, x));
    const int n = x->ndim;
    bool ok =
        y->ndim == n && y->shape[n - 2] == x->shape[n - 1] && y->shape[n - 1] == x->shape[n - 2];
    if (n == 3) ok = ok && y->shape[0] == x->shape[0];
    if (!ok) {
        char desc[160];
        return ad_op_fail_tensor(op, y, "expected %s with its last two dims swapped",
                                 ad_tensor_describe(x, desc, sizeof desc));
    }
    return AD_OK;
}

int ad_op_check_pool(const char *op, const ad_tensor *y, const ad_tensor *x, int kernel,
                     int stride) {
    AD_TRY(ad_op_check_ndim(op, x, 3, 3));
    AD_TRY(ad_op_check_ndim(op, y, 3, 3));
    AD_TRY(ad_op_check_rows(op, x));
    AD_TRY(ad_op_check_rows(op, y));
    AD_TRY(ad_op_check_no_alias(op, y, x));
    if (kernel < 1 || stride < 1)
        return ad_fail("%s: kernel %d and stride %d must be >= 1", op, kernel, stride);
    const int64_t B = x->shape[0], L = x->shape[1], C = x->shape[2];
    if (L < kernel)
        return ad_op_fail_tensor(op, x, "length %lld is shorter than kernel %d", (long long)L,
                                 kernel);
    const int64_t L_out = (L - kernel) / stride + 1;
    if (y->shape[0] != B || y->shape[1] != L_out || y->shape[2] != C)
        return ad_op_fail_tensor(op, y, "expected [%lld, %lld, %lld]", (long long)B,
                                 (long long)L_out, (long long)C);
    return AD_OK;
}

int ad_op_check_matmul(const char *op, const ad_tensor *y, ad_op_matrix Y, const ad_tensor *a,
                       ad_op_matrix A, bool transpose_a, const ad_tensor *b, ad_op_matrix B,
                       bool transpose_b) {
    AD_TRY(ad_op_check_no_alias(op, y, a));
    AD_TRY(ad_op_check_no_alias(op, y, b));
    const int64_t M = transpose_a ? A.cols : A.rows, K = transpose_a ? A.rows : A.cols;
    const int64_t Kb = transpose_b ? B.cols : B.rows, N = transpose_b ? B.rows : B.cols;
    if (K != Kb) {
        char desc[160];
        return ad_op_fail_tensor(op, a, "%s[%lld x %lld] cannot multiply %s%s [%lld x %lld]",
                                 transpose_a ? "transposed " : "", (long long)M, (long long)K,
                                 transpose_b ? "transposed " : "",
                                 ad_tensor_describe(b, desc, sizeof desc), (long long)Kb,
                                 (long long)N);
    }
    if (Y.rows != M || Y.cols != N)
        return ad_op_fail_tensor(op, y, "expected %lld x %lld for the product", (long long)M,
                                 (long long)N);
    return AD_OK;
}

int ad_op_check_linear(const char *op, const ad_tensor *y, ad_op_matrix Y, const ad_tensor *x,
                       ad_op_matrix X, const ad_tensor *w) {
    AD_TRY(ad_op_check_ndim(op, w, 2, 2));
    AD_TRY(ad_op_check_no_alias(op, y, x));
    const int64_t N = w->shape[0], K = w->shape[1];
    if (X.cols != K)
        return ad_op_fail_tensor(op, x, "last dim %lld does not match weight %s [%lld, %lld]",
                                 (long long)X.cols, w->name, (long long)N, (long long)K);
    if (Y.rows != X.rows || Y.cols != N)
        return ad_op_fail_tensor(op, y, "expected %lld rows of %lld (x %s, weight %s)",
                                 (long long)X.rows, (long long)N, x->name, w->name);
    return AD_OK;
}

int ad_op_lead_dims(const ad_tensor *t, int64_t scale, int64_t shape[AD_MAX_DIMS],
                    int64_t stride[AD_MAX_DIMS], int64_t *rows, int64_t *cols) {
    int n = 0;
    *cols = t->ndim ? t->shape[t->ndim - 1] : 1;
    *rows = 1;
    for (int d = 0; d + 1 < t->ndim; d++) {
        *rows *= t->shape[d];
        if (t->shape[d] == 1) continue;
        const int64_t s = t->stride[d] * scale;
        if (n > 0 && stride[n - 1] == s * t->shape[d]) {
            shape[n - 1] *= t->shape[d];
            stride[n - 1] = s;
        } else {
            shape[n] = t->shape[d];
            stride[n] = s;
            n++;
        }
    }
    if (n == 0) {
        shape[0] = *rows;
        stride[0] = 0;
        n = 1;
    }
    return n;
}

int ad_op_matrix_of(const char *op, const ad_tensor *t, ad_op_matrix *m) {
    AD_TRY(ad_op_check_ndim(op, t, 1, AD_MAX_DIMS));
    int64_t lead_shape[AD_MAX_DIMS], lead_stride[AD_MAX_DIMS];
    *m = (ad_op_matrix){0, 0, 0, false};
    if (ad_op_lead_dims(t, 1, lead_shape, lead_stride, &m->rows, &m->cols) != 1)
        return ad_op_fail_tensor(op, t,
                                 "its leading dims cannot be flattened into matrix rows "
                                 "(make it contiguous first)");
    const int64_t row_stride = lead_stride[0], col_stride = t->stride[t->ndim - 1];
    if (m->cols <= 1 || col_stride == 1) {
        m->ld = m->rows > 1 ? row_stride : (m->cols > 1 ? m->cols : 1);
        if (m->ld < m->cols || m->ld < 1)
            return ad_op_fail_tensor(op, t, "row stride %lld is smaller than the row length",
                                     (long long)row_stride);
    } else if (row_stride == 1 || m->rows <= 1) {
        m->trans = true;
        m->ld = col_stride;
        if (m->ld < m->rows || m->ld < 1)
            return ad_op_fail_tensor(op, t, "column stride %lld is smaller than the column length",
                                     (long long)col_stride);
    } else {
        return ad_op_fail_tensor(op, t, "neither its rows nor its columns are contiguous");
    }
    if (m->rows > INT32_MAX || m->cols > INT32_MAX || m->ld > INT32_MAX)
        return ad_op_fail_tensor(op, t, "too large for one GEMM call (dims above 2^31)");
    return AD_OK;
}
