// CUDA avg_pool1d (forward and backward), embedding gather and its deterministic backward,
// scatter_rows and gather_rows. Index tensors live on the device: each op first runs a check
// kernel that records the smallest bad position, downloads that one word (a sync) and fails
// before writing anything, as the CPU reference does.
//
// embedding_backward without atomics and without sorting: a link pass gives every id's first
// occurrence and, per occurrence, the next one with the same id (O(N^2) id compares in total,
// independent of the width); then the first occurrence of each id walks its chain in row
// order and adds the rows onto dtable, so each table element is summed by one thread in the
// same order as the CPU reference.
#include "cuda_internal.h"

#define PE_BLOCK 256

/* ---- avg_pool1d ---------------------------------------------------------------------------- */

__global__ static void avg_pool_kernel(char *y, int ydt, int64_t yb, int64_t yt, const char *x,
                                       int xdt, int64_t xb, int64_t xt, int64_t B, int64_t L_out,
                                       int64_t C, int kernel, int stride) {
    CU_GRID_STRIDE(i, B * L_out * C) {
        const int64_t c = i % C, t = (i / C) % L_out, b = i / (C * L_out);
        const int64_t base = b * xb + t * stride * xt + c;
        double s = 0.0;
        for (int k = 0; k < kernel; k++)
            s += (double)cu_load(x, xdt, base + k * xt);
        cu_store(y, ydt, b * yb + t * yt + c, (float)(s / kernel));
    }
}

__global__ static void avg_pool_bwd_kernel(char *dx, int dxdt, int64_t xb, int64_t xt,
                                           const char *dy, int dydt, int64_t yb, int64_t yt,
                                           int64_t B, int64_t L, int64_t L_out, int64_t C,
                                           int kernel, int stride) {
    CU_GRID_STRIDE(i, B * L * C) {
        const int64_t c = i % C, l = (i / C) % L, b = i / (C * L);
        /* windows o with o*stride <= l < o*stride + kernel, in increasing o (the CPU order) */
        int64_t o0 = l - kernel + 1 <= 0 ? 0 : (l - kernel + 1 + stride - 1) / stride;
        int64_t o1 = l / stride;
        if (o1 > L_out - 1) o1 = L_out - 1;
        float s = 0.0f;
        for (int64_t o = o0; o <= o1; o++)
            s += cu_load(dy, dydt, b * yb + o * yt + c) / (float)kernel;
        cu_store(dx, dxdt, b * xb + l * xt + c, s);
    }
}

static int pool_shapes(const char *op, const ad_tensor *x, const ad_tensor *y, int kernel,
                       int stride) {
    AD_TRY(cu_check(op, "y", y, CU_ACT));
    AD_TRY(cu_check(op, "x", x, CU_ACT));
    return ad_op_check_pool(op, y, x, kernel, stride);
}

int cu_avg_pool1d(ad_backend *be, ad_tensor *y, const ad_tensor *x, int kernel, int stride) {
    (void)be;
    AD_TRY(pool_shapes("avg_pool1d", x, y, kernel, stride));
    const int64_t B = y->shape[0], L_out = y->shape[1], C = y->shape[2], n = B * L_out * C;
    if (n == 0) return AD_OK;
    avg_pool_kernel<<<cu_blocks(n, PE_BLOCK), PE_BLOCK>>>(
        (char *)y->data, y->dtype, y->stride[0], y->stride[1], (const char *)x->data, x->dtype,
        x->stride[0], x->stride[1], B, L_out, C, kernel, stride);
    CUDA_TRY_LAUNCH();
    return AD_OK;
}

int cu_avg_pool1d_backward(ad_backend *be, ad_tensor *dx, const ad_tensor *dy, int kernel,
                           int stride) {
    (void)be;
    AD_TRY(pool_shapes("avg_pool1d_backward", dx, dy, kernel, stride));
    const int64_t B = dx->shape[0], L = dx->shape[1], C = dx->shape[2], L_out = dy->shape[1];
    const int64_t n = B * L * C;
    if (n == 0) return AD_OK;
    avg_pool_bwd_kernel<<<cu_blocks(n, PE_BLOCK), PE_BLOCK>>>(
        (char *)dx->data, dx->dtype, dx->stride[0], dx->stride[1], (const char *)dy->data,
        dy->dtype, dy->stride[0], dy->stride[1], B, L, L_out, C, kernel, stride);
    CUDA_TRY_LAUNCH();
    return AD_OK;
}

/* ---- index checks ---------------------------------------------------------------------- */

/* Flags ids outside [lo, hi); with skip_negative, negative ids are allowed. */
__global__ static void check_ids_kernel(const int32_t *ids, int64_t n, int64_t lo, int64_t hi,
                                        bool skip_negative, unsigned long long *flag) {
    CU_GRID_STRIDE(i, n) {
        const int64_t v = ids[i];
        if (skip_negative && v < 0) continue;
        if (v < lo || v >= hi) cu_flag_bad(flag, i);
    }
}

int cu_check_ids(ad_backend *be, const char *op, const ad_tensor *ids, int64_t hi,
                 bool skip_negative, const char *what) {
    const int64_t n = ad_tensor_numel(ids);
    if (n == 0) return AD_OK;
    AD_TRY(cu_index_flag_reset(be));
    check_ids_kernel<<<cu_blocks(n, PE_BLOCK), PE_BLOCK>>>((const int32_t *)ids->data, n, 0, hi,
                                                           skip_negative, cu_of(be)->flag);
    CUDA_TRY_LAUNCH();
    return cu_index_flag_result(be, op, ids, what);
}

static int check_index_tensor(const char *op, const char *role, const ad_tensor *t) {
    AD_TRY(cu_check(op, role, t, CU_I32));
    return ad_op_check_contiguous(op, t);
}

/* ---- row copies ---------------------------------------------------------------------------- */

/* dst row map(i) = src row map(i) for i < n: mode 0 dst[i] = src[idx[i]] (gather; a negative
 * idx[i] writes zeros), mode 1 dst[idx[i]] = src[i] (scatter; a negative idx[i] is skipped).
 * Rows walk blockIdx.y and columns the threads, so the row offsets (divisions over the leading
 * dims) are computed per row, not per element. */
__global__ static void rows_copy_kernel(cu_rows dst, cu_rows src, const int32_t *idx, int64_t n,
                                        int mode) {
    for (int64_t i = blockIdx.y; i < n; i += gridDim.y) {
        const int64_t at = idx[i];
        if (at < 0 && mode == 1) continue;
        const int64_t od = cu_row_off(dst, mode == 0 ? i : at);
        const int64_t os = at < 0 ? 0 : cu_row_off(src, mode == 0 ? at : i);
        for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < src.cols;
             c += (int64_t)gridDim.x * blockDim.x)
            cu_store(dst.base, dst.dtype, od + c,
                     at < 0 ? 0.0f : cu_load(src.base, src.dtype, os + c));
    }
}

static int rows_copy(const cu_rows &dst, const cu_rows &src, const ad_tensor *idx, int mode) {
    const int64_t n = ad_tensor_numel(idx);
    if (n == 0 || src.cols == 0) return AD_OK;
    const unsigned gx = cu_blocks(src.cols, PE_BLOCK);
    dim3 grid(gx < 64 ? gx : 64, (unsigned)(n < 65535 ? n : 65535));
    rows_copy_kernel<<<grid, PE_BLOCK>>>(dst, src, (const int32_t *)idx->data, n, mode);
    CUDA_TRY_LAUNCH();
    return AD_OK;
}

int cu_embedding(ad_backend *be, ad_tensor *y, const ad_tensor *table, const ad_tensor *ids) {
    const char *op = "embedding";
    if (table && table->dtype == AD_QGROUP) return cu_quant_embedding(be, y, table, ids);
    AD_TRY(cu_check(op, "y", y, CU_ACT));
    AD_TRY(cu_check(op, "table", table, CU_FLOAT));
    AD_TRY(check_index_tensor(op, "ids", ids));
    AD_TRY(ad_op_check_ndim(op, table, 2, 2));
    AD_TRY(ad_op_check_ndim(op, y, 1, AD_MAX_DIMS));
    AD_TRY(ad_op_check_rows(op, table));
    AD_TRY(ad_op_check_rows(op, y));
    const int64_t V = table->shape[0], C = table->shape[1], N = ad_tensor_numel(ids);
    cu_rows ry, rt;
    cu_rows_of(y, &ry);
    cu_rows_of(table, &rt);
    if (ry.rows != N || ry.cols != C)
        return ad_op_fail_tensor(op, y, "expected %lld rows (ids %s) of %lld (table %s)",
                                 (long long)N, ids->name, (long long)C, table->name);
    char what[96];
    snprintf(what, sizeof what, "[0, %lld) of table %s", (long long)V, table->name);
    AD_TRY(cu_check_ids(be, op, ids, V, false, what));
    return rows_copy(ry, rt, ids, 0);
}

int cu_scatter_rows(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *rows) {
    const char *op = "scatter_rows";
    AD_TRY(cu_check(op, "y", y, CU_ACT));
    AD_TRY(cu_check(op, "x", x, CU_ACT));
    AD_TRY(check_index_tensor(op, "rows", rows));
    AD_TRY(ad_op_check_ndim(op, y, 1, AD_MAX_DIMS));
    AD_TRY(ad_op_check_ndim(op, x, 1, AD_MAX_DIMS));
    AD_TRY(ad_op_check_rows(op, y));
    AD_TRY(ad_op_check_rows(op, x));
    AD_TRY(ad_op_check_no_alias(op, y, x));
    cu_rows ry, rx;
    cu_rows_of(y, &ry);
    cu_rows_of(x, &rx);
    const int64_t N = ad_tensor_numel(rows);
    if (rx.rows != N || rx.cols != ry.cols)
        return ad_op_fail_tensor(op, x, "expected %lld rows (rows %s) of %lld (y %s)", (long long)N,
                                 rows->name, (long long)ry.cols, y->name);
    char what[96];
    snprintf(what, sizeof what, "the %lld rows of %s", (long long)ry.rows, y->name);
    AD_TRY(cu_check_ids(be, op, rows, ry.rows, true, what));
    return rows_copy(ry, rx, rows, 1);
}

int cu_gather_rows(ad_backend *be, ad_tensor *dx, const ad_tensor *dy, const ad_tensor *rows) {
    const char *op = "gather_rows";
    AD_TRY(cu_check(op, "dx", dx, CU_ACT));
    AD_TRY(cu_check(op, "dy", dy, CU_ACT));
    AD_TRY(check_index_tensor(op, "rows", rows));
    AD_TRY(ad_op_check_ndim(op, dx, 1, AD_MAX_DIMS));
    AD_TRY(ad_op_check_ndim(op, dy, 1, AD_MAX_DIMS));
    AD_TRY(ad_op_check_rows(op, dx));
    AD_TRY(ad_op_check_rows(op, dy));
    cu_rows rdx, rdy;
    cu_rows_of(dx, &rdx);
    cu_rows_of(dy, &rdy);
    const int64_t N = ad_tensor_numel(rows);
    if (rdx.rows != N || rdx.cols != rdy.cols)
        return ad_op_fail_tensor(op, dx, "expected %lld rows (rows %s) of %lld (dy %s)",
                                 (long long)N, rows->name, (long long)rdy.cols, dy->name);
    char what[96];
    snprintf(what, sizeof what, "[0, %lld) (rows of %s)", (long long)rdy.rows, dy->name);
    AD_TRY(cu_check_ids(be, op, rows, rdy.rows, true, what));
    return rows_copy(rdx, rdy, rows, 0);
}

/* ---- embedding backward ------------------------------------------------------------------ */

/* first[n]: n is the first occurrence of its (non-negative) id; next[n]: the next occurrence
 * or -1. Out-of-range ids are flagged. */
__global__ static void embed_link_kernel(const int32_t *ids, int64_t N, int64_t V, int32_t *first,
                                         int32_t *next, unsigned long long *flag) {
    CU_GRID_STRIDE(n, N) {
        const int32_t id = ids[n];
        if (id >= V) cu_flag_bad(flag, n);
        bool is_first = id >= 0;
        for (int64_t m = 0; m < n && is_first; m++)
            if (ids[m] == id) is_first = false;
        int32_t nx = -1;
        if (id >= 0)
            for (int64_t m = n + 1; m < N; m++)
                if (ids[m] == id) {
                    nx = (int32_t)m;
                    break;
                }
        first[n] = is_first;
        next[n] = nx;
    }
}

__global__ static void embed_accumulate_kernel(float *dtable, int64_t ldt, cu_rows dy,
                                               const int32_t *ids, const int32_t *first,
                                               const int32_t *next, int64_t N) {
    const int64_t n = blockIdx.x;
    if (n >= N || !first[n]) return;
    const int64_t c = (int64_t)blockIdx.y * blockDim.x + threadIdx.x;
    if (c >= dy.cols) return;
    float *dst = dtable + (int64_t)ids[n] * ldt + c;
    float acc = *dst;
    for (int64_t m = n; m >= 0; m = next[m])
        acc += cu_load(dy.base, dy.dtype, cu_row_off(dy, m) + c);
    *dst = acc;
}

int cu_embedding_backward(ad_backend *be, ad_tensor *dtable, const ad_tensor *dy,
                          const ad_tensor *ids) {
    const char *op = "embedding_backward";
    AD_TRY(cu_check(op, "dtable", dtable, CU_F32));
    AD_TRY(cu_check(op, "dy", dy, CU_ACT));
    AD_TRY(check_index_tensor(op, "ids", ids));
    AD_TRY(ad_op_check_ndim(op, dtable, 2, 2));
    AD_TRY(ad_op_check_rows(op, dtable));
    AD_TRY(ad_op_check_ndim(op, dy, 1, AD_MAX_DIMS));
    AD_TRY(ad_op_check_rows(op, dy));
    const int64_t V = dtable->shape[0], C = dtable->shape[1], N = ad_tensor_numel(ids);
    cu_rows rdy;
    cu_rows_of(dy, &rdy);
    if (rdy.rows != N || rdy.cols != C)
        return ad_op_fail_tensor(op, dy, "expected %lld rows (ids %s) of %lld (dtable %s)",
                                 (long long)N, ids->name, (long long)C, dtable->name);
    if (N == 0 || C == 0) return AD_OK;
    if (N > INT32_MAX || (C + PE_BLOCK - 1) / PE_BLOCK > 65535)
        return ad_op_fail_tensor(op, ids, "too many ids or columns for one launch");
    int32_t *links;
    AD_TRY(cu_scratch(be, CU_SCRATCH_STATS, (size_t)N * 2 * sizeof(int32_t), (void **)&links));
    AD_TRY(cu_index_flag_reset(be));
    embed_link_kernel<<<cu_blocks(N, PE_BLOCK), PE_BLOCK>>>((const int32_t *)ids->data, N, V, links,
                                                            links + N, cu_of(be)->flag);
    CUDA_TRY_LAUNCH();
    char what[96];
    snprintf(what, sizeof what, "the %lld rows of %s", (long long)V, dtable->name);
    AD_TRY(cu_index_flag_result(be, op, ids, what));
    const int64_t ldt = dtable->shape[0] > 1 ? dtable->stride[0] : C;
    dim3 grid((unsigned)N, (unsigned)((C + PE_BLOCK - 1) / PE_BLOCK));
    embed_accumulate_kernel<<<grid, PE_BLOCK>>>((float *)dtable->data, ldt, rdy,
                                                (const int32_t *)ids->data, links, links + N, N);
    CUDA_TRY_LAUNCH();
    return AD_OK;
}
