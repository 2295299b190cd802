// CUDA elementwise ops over strided rows (the last dim unit-stride, leading dims any stride):
// copy and fill (any strided view up to 4-D), gelu, silu_mul, add with broadcast, softmax,
// transpose, and the gelu / silu_mul backwards. Inputs and outputs may each be F32 or BF16
// (F16 too where a weight dtype makes sense); arithmetic is fp32, with the CPU reference's
// formulas (gelu through erfc, silu as x / (1 + exp(-x))) so F32 results agree to ~1 ulp.
#include "cuda_internal.h"

#define EW_BLOCK 256

/* ---- copy and fill ------------------------------------------------------------------------- */

__global__ static void copy_kernel(cu_view dst, cu_view src, int64_t n, int convert, int esize) {
    CU_GRID_STRIDE(i, n) {
        const int64_t od = cu_view_off(dst, i), os = cu_view_off(src, i);
        if (convert) {
            cu_store(dst.data, dst.dtype, od, cu_load(src.data, src.dtype, os));
        } else if (esize == 4) {
            ((uint32_t *)dst.data)[od] = ((const uint32_t *)src.data)[os];
        } else if (esize == 2) {
            ((uint16_t *)dst.data)[od] = ((const uint16_t *)src.data)[os];
        } else if (esize == 8) {
            ((uint64_t *)dst.data)[od] = ((const uint64_t *)src.data)[os];
        } else {
            ((uint8_t *)dst.data)[od] = ((const uint8_t *)src.data)[os];
        }
    }
}

static int copy_rows(const ad_tensor *dst, const ad_tensor *src);

/* Rows with a unit-stride last dim, which the row kernels take. */
static bool unit_last_stride(const ad_tensor *t) {
    return t->ndim == 0 || t->shape[t->ndim - 1] <= 1 || t->stride[t->ndim - 1] == 1;
}

int cu_copy(ad_backend *be, ad_tensor *dst, const ad_tensor *src) {
    (void)be;
    const char *op = "copy";
    const unsigned any = CU_FLOAT | CU_I32 | CU_M(AD_I8) | CU_M(AD_U8) | CU_M(AD_I64);
    AD_TRY(cu_check(op, "dst", dst, any));
    AD_TRY(cu_check(op, "src", src, any));
    AD_TRY(ad_op_check_same_shape(op, dst, src));
    const bool same = dst->dtype == src->dtype;
    const bool floats = (CU_FLOAT & CU_M(dst->dtype)) && (CU_FLOAT & CU_M(src->dtype));
    if (!same && !floats) {
        char desc[160];
        return ad_op_fail_tensor(op, dst,
                                 "cannot copy %s into it (the same dtype, or between F32, BF16 "
                                 "and F16)",
                                 ad_tensor_describe(src, desc, sizeof desc));
    }
    const int64_t n = ad_tensor_numel(dst);
    if (n == 0 || (dst->data == src->data && same)) return AD_OK;
    if (same && ad_tensor_is_contiguous(dst) && ad_tensor_is_contiguous(src)) {
        CUDA_TRY(cudaMemcpy(dst->data, src->data, ad_tensor_nbytes(dst), cudaMemcpyDeviceToDevice));
        return AD_OK;
    }
    /* Float rows (strided activations, dtype conversions): the row kernels, whose offsets cost
     * divisions per row rather than per element. */
    if (floats && unit_last_stride(dst) && unit_last_stride(src) && dst->ndim >= 1)
        return copy_rows(dst, src);
    cu_view d, s;
    cu_view_of(dst, &d);
    cu_view_of(src, &s);
    copy_kernel<<<cu_blocks(n, EW_BLOCK), EW_BLOCK>>>(d, s, n, !same, cu_esize(dst->dtype));
    CUDA_TRY_LAUNCH();
    return AD_OK;
}

__global__ static void fill_kernel(cu_view dst, int64_t n, float value) {
    CU_GRID_STRIDE(i, n) cu_store(dst.data, dst.dtype, cu_view_off(dst, i), value);
}

int cu_fill(ad_backend *be, ad_tensor *dst, float value) {
    (void)be;
    AD_TRY(cu_check("fill", "dst", dst, CU_FLOAT));
    const int64_t n = ad_tensor_numel(dst);
    if (n == 0) return AD_OK;
    /* All-zero bits are +0 in every float dtype; gradients are zeroed this way every step. */
    if (value == 0.0f && !signbit(value) && ad_tensor_is_contiguous(dst)) {
        CUDA_TRY(cudaMemset(dst->data, 0, ad_tensor_nbytes(dst)));
        return AD_OK;
    }
    cu_view d;
    cu_view_of(dst, &d);
    fill_kernel<<<cu_blocks(n, EW_BLOCK), EW_BLOCK>>>(d, n, value);
    CUDA_TRY_LAUNCH();
    return AD_OK;
}

/* ---- unary and binary row ops ------------------------------------------------------------ */

static int check_unary(const char *op, const ad_tensor *y, const ad_tensor *x, cu_rows *ry,
                       cu_rows *rx) {
    AD_TRY(cu_check(op, "y", y, CU_ACT));
    AD_TRY(cu_check(op, "x", x, CU_ACT));
    AD_TRY(ad_op_check_ndim(op, x, 1, AD_MAX_DIMS));
    AD_TRY(ad_op_check_same_shape(op, y, x));
    AD_TRY(ad_op_check_rows(op, y));
    AD_TRY(ad_op_check_rows(op, x));
    cu_rows_of(y, ry);
    cu_rows_of(x, rx);
    return AD_OK;
}

enum { EW_GELU = 0, EW_SILU_MUL, EW_ADD, EW_GELU_BWD, EW_COPY };

__device__ static inline float gelu_f(float v) {
    /* x/2 * erfc(-x/sqrt2): no cancellation for x << 0 (as the CPU reference). */
    return 0.5f * v * erfcf(-v * 0.70710678118654752440f);
}

__device__ static inline float gelu_grad_f(float v) {
    const float cdf = 0.5f * erfcf(-v * 0.70710678118654752440f);
    const float pdf = expf(-0.5f * v * v) * 0.39894228040143267794f; /* 1/sqrt(2 pi) */
    return cdf + v * pdf;
}

/* Row launches: blocks tile the columns (grid x, EW_PER_THREAD columns per thread, strided by
 * the block so loads coalesce) and walk the rows (grid y). A row's offsets need integer
 * divisions over the leading dims; computing them per element, not per row, held these ops
 * near 100 GB/s on an H100 (64-bit division is a long instruction sequence). */
#define EW_PER_THREAD 4
#define EW_SPAN       (EW_BLOCK * EW_PER_THREAD)

static dim3 rows_grid(int64_t rows, int64_t cols) {
    const int64_t gx = (cols + EW_SPAN - 1) / EW_SPAN;
    return dim3((unsigned)(gx > 0 ? gx : 1),
                (unsigned)(rows < 65535 ? (rows > 0 ? rows : 1) : 65535));
}

#define EW_ROWS(r, rows) for (int64_t r = blockIdx.y; r < (rows); r += gridDim.y)
/* A thread's EW_PER_THREAD columns of its block's span: column k is c0 + k * EW_BLOCK, and
 * valid while below `end`. The kernels load all of them before storing any: an output aliases
 * an input only element for element (in place), so that is safe, and it keeps 4x the loads in
 * flight that a load-compute-store loop does (the compiler cannot reorder a load past a store
 * to memory that may alias it). */
#define EW_SPAN_OF(c0, end, cols)                                                                  \
    const int64_t c0 = (int64_t)blockIdx.x * EW_SPAN + threadIdx.x,                                \
                  end = ((int64_t)blockIdx.x + 1) * EW_SPAN < (int64_t)(cols)                      \
                            ? ((int64_t)blockIdx.x + 1) * EW_SPAN                                  \
                            : (int64_t)(cols)

/* Tensors of the same row count that are each one contiguous block become one long row, so a
 * launch over many short rows still fills whole blocks. */
static void flatten_contiguous(cu_rows *const *rs, int n) {
    for (int i = 0; i < n; i++) {
        const cu_rows *r = rs[i];
        if (r->rows != rs[0]->rows || r->nlead != 1 || (r->rows > 1 && r->stride[0] != r->cols))
            return;
    }
    for (int i = 0; i < n; i++) {
        cu_rows *r = rs[i];
        r->cols *= r->rows;
        r->rows = 1;
        r->shape[0] = 1;
        r->stride[0] = 0;
    }
}

/* Whether every view is one contiguous f32 row starting 16-byte aligned (after
 * flatten_contiguous): the flat4 kernels' case. */
static bool flat_f32_aligned(cu_rows *const *views, int n) {
    for (int i = 0; i < n; i++)
        if (views[i]->rows != 1 || views[i]->dtype != AD_F32 || (uintptr_t)views[i]->base % 16)
            return false;
    return true;
}

/* The op of `kind` on one element (b unused by the unary ones). */
__device__ static inline float ew_apply(int kind, float a, float b) {
    if (kind == EW_COPY) return a;
    if (kind == EW_GELU) return gelu_f(a);
    if (kind == EW_SILU_MUL) return a / (1.0f + expf(-a)) * b;
    if (kind == EW_ADD) return a + b;
    return b * gelu_grad_f(a); /* EW_GELU_BWD: a = x, b = dy */
}

/* rows_kernel for operands that are one contiguous, 16-byte aligned f32 row each: four
 * elements per load and store (the scalar kernel reached ~1.2 TB/s on an H100 for add); the
 * last n % 4 go one by one in the one thread whose quad runs past the end. */
__global__ static void flat4_kernel(int kind, float *y, const float *a, const float *b, int64_t n) {
    const bool unary = kind == EW_COPY || kind == EW_GELU;
    const int64_t step = (int64_t)gridDim.x * blockDim.x * 4;
    int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * 4;
    for (; i + 3 < n; i += step) {
        const float4 av = cu_vload<float4>(a + i);
        const float4 bv = unary ? make_float4(0.0f, 0.0f, 0.0f, 0.0f) : cu_vload<float4>(b + i);
        cu_vstore(y + i, make_float4(ew_apply(kind, av.x, bv.x), ew_apply(kind, av.y, bv.y),
                                     ew_apply(kind, av.z, bv.z), ew_apply(kind, av.w, bv.w)));
    }
    for (; i < n; i++)
        y[i] = ew_apply(kind, a[i], unary ? 0.0f : b[i]);
}

/* y = f(a, b) row by row; b's rows repeat every b.rows rows (broadcast for add). */
__global__ static void rows_kernel(int kind, cu_rows y, cu_rows a, cu_rows b) {
    const bool unary = kind == EW_COPY || kind == EW_GELU;
    EW_SPAN_OF(c0, end, a.cols);
    EW_ROWS(r, a.rows) {
        const int64_t oa = cu_row_off(a, r), ob = cu_row_off(b, r % b.rows), oy = cu_row_off(y, r);
        float av[EW_PER_THREAD], bv[EW_PER_THREAD];
#pragma unroll
        for (int k = 0; k < EW_PER_THREAD; k++) {
            const int64_t c = c0 + k * EW_BLOCK;
            if (c >= end) break;
            av[k] = cu_load(a.base, a.dtype, oa + c);
            bv[k] = unary ? 0.0f : cu_load(b.base, b.dtype, ob + c);
        }
#pragma unroll
        for (int k = 0; k < EW_PER_THREAD; k++) {
            const int64_t c = c0 + k * EW_BLOCK;
            if (c >= end) break;
            cu_store(y.base, y.dtype, oy + c, ew_apply(kind, av[k], bv[k]));
        }
    }
}

static int launch_rows(int kind, cu_rows y, cu_rows a, cu_rows b) {
    if (a.rows * a.cols == 0) return AD_OK;
    cu_rows *all[3] = {&y, &a, &b};
    flatten_contiguous(all, 3);
    if (flat_f32_aligned(all, 3)) {
        flat4_kernel<<<cu_blocks((a.cols + 3) / 4, EW_BLOCK), EW_BLOCK>>>(
            kind, (float *)y.base, (const float *)a.base, (const float *)b.base, a.cols);
        CUDA_TRY_LAUNCH();
        return AD_OK;
    }
    rows_kernel<<<rows_grid(a.rows, a.cols), EW_BLOCK>>>(kind, y, a, b);
    CUDA_TRY_LAUNCH();
    return AD_OK;
}

static int copy_rows(const ad_tensor *dst, const ad_tensor *src) {
    cu_rows rd, rs;
    cu_rows_of(dst, &rd);
    cu_rows_of(src, &rs);
    return launch_rows(EW_COPY, rd, rs, rs);
}

int cu_gelu(ad_backend *be, ad_tensor *y, const ad_tensor *x) {
    (void)be;
    cu_rows ry, rx;
    AD_TRY(check_unary("gelu", y, x, &ry, &rx));
    return launch_rows(EW_GELU, ry, rx, rx);
}

int cu_silu_mul(ad_backend *be, ad_tensor *y, const ad_tensor *gate, const ad_tensor *up) {
    (void)be;
    const char *op = "silu_mul";
    cu_rows ry, rg, ru;
    AD_TRY(check_unary(op, y, gate, &ry, &rg));
    AD_TRY(cu_check(op, "up", up, CU_ACT));
    AD_TRY(ad_op_check_same_shape(op, up, gate));
    AD_TRY(ad_op_check_rows(op, up));
    cu_rows_of(up, &ru);
    return launch_rows(EW_SILU_MUL, ry, rg, ru);
}

int cu_add(ad_backend *be, ad_tensor *y, const ad_tensor *a, const ad_tensor *b) {
    (void)be;
    const char *op = "add";
    cu_rows ry, ra, rb;
    AD_TRY(check_unary(op, y, a, &ry, &ra));
    AD_TRY(cu_check(op, "b", b, CU_ACT));
    AD_TRY(ad_op_check_trailing(op, b, a));
    cu_rows_of(b, &rb);
    if (rb.rows == 0) return AD_OK;
    return launch_rows(EW_ADD, ry, ra, rb);
}

int cu_gelu_backward(ad_backend *be, ad_tensor *dx, const ad_tensor *dy, const ad_tensor *x) {
    (void)be;
    const char *op = "gelu_backward";
    cu_rows rdx, rx, rdy;
    AD_TRY(check_unary(op, dx, x, &rdx, &rx));
    AD_TRY(cu_check(op, "dy", dy, CU_ACT));
    AD_TRY(ad_op_check_same_shape(op, dy, x));
    AD_TRY(ad_op_check_rows(op, dy));
    cu_rows_of(dy, &rdy);
    return launch_rows(EW_GELU_BWD, rdx, rx, rdy);
}

/* d gate and d up of silu(g) * u for one element. */
__device__ static inline void silu_mul_grads(float g, float u, float dy, float *dg, float *du) {
    const float sig = 1.0f / (1.0f + expf(-g));
    *dg = dy * u * sig * (1.0f + g * (1.0f - sig));
    *du = dy * g * sig;
}

/* silu_mul_bwd_kernel for operands that are one contiguous, 16-byte aligned f32 row each (as
 * flat4_kernel). An output not wanted is never stored (its pointer is dy's). Everything is
 * read before anything is written: dg may be dy. */
__global__ static void silu_mul_bwd_flat4_kernel(float *dg, float *du, bool want_dg, bool want_du,
                                                 const float *dy, const float *g, const float *u,
                                                 int64_t n) {
    const int64_t step = (int64_t)gridDim.x * blockDim.x * 4;
    int64_t i = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * 4;
    for (; i + 3 < n; i += step) {
        const float4 gv = cu_vload<float4>(g + i), uv = cu_vload<float4>(u + i),
                     yv = cu_vload<float4>(dy + i);
        float4 a, b;
        silu_mul_grads(gv.x, uv.x, yv.x, &a.x, &b.x);
        silu_mul_grads(gv.y, uv.y, yv.y, &a.y, &b.y);
        silu_mul_grads(gv.z, uv.z, yv.z, &a.z, &b.z);
        silu_mul_grads(gv.w, uv.w, yv.w, &a.w, &b.w);
        if (want_dg) cu_vstore(dg + i, a);
        if (want_du) cu_vstore(du + i, b);
    }
    for (; i < n; i++) {
        float a, b;
        silu_mul_grads(g[i], u[i], dy[i], &a, &b);
        if (want_dg) dg[i] = a;
        if (want_du) du[i] = b;
    }
}

__global__ static void silu_mul_bwd_kernel(cu_rows dg, cu_rows du, bool want_dg, bool want_du,
                                           cu_rows dy, cu_rows g, cu_rows u) {
    EW_SPAN_OF(c0, end, dy.cols);
    EW_ROWS(r, dy.rows) {
        const int64_t og = cu_row_off(g, r), ody = cu_row_off(dy, r), ou = cu_row_off(u, r),
                      odg = cu_row_off(dg, r), odu = cu_row_off(du, r);
        /* Everything read before anything is written: outputs may alias inputs. */
        float x[EW_PER_THREAD], gy[EW_PER_THREAD], uv[EW_PER_THREAD];
#pragma unroll
        for (int k = 0; k < EW_PER_THREAD; k++) {
            const int64_t c = c0 + k * EW_BLOCK;
            if (c >= end) break;
            x[k] = cu_load(g.base, g.dtype, og + c);
            gy[k] = cu_load(dy.base, dy.dtype, ody + c);
            uv[k] = cu_load(u.base, u.dtype, ou + c);
        }
#pragma unroll
        for (int k = 0; k < EW_PER_THREAD; k++) {
            const int64_t c = c0 + k * EW_BLOCK;
            if (c >= end) break;
            float a, b;
            silu_mul_grads(x[k], uv[k], gy[k], &a, &b);
            if (want_dg) cu_store(dg.base, dg.dtype, odg + c, a);
            if (want_du) cu_store(du.base, du.dtype, odu + c, b);
        }
    }
}

int cu_silu_mul_backward(ad_backend *be, ad_tensor *dgate, ad_tensor *dup, const ad_tensor *dy,
                         const ad_tensor *gate, const ad_tensor *up) {
    (void)be;
    const char *op = "silu_mul_backward";
    AD_TRY(cu_check(op, "dy", dy, CU_ACT));
    AD_TRY(cu_check(op, "gate", gate, CU_ACT));
    AD_TRY(cu_check(op, "up", up, CU_ACT));
    AD_TRY(ad_op_check_ndim(op, dy, 1, AD_MAX_DIMS));
    AD_TRY(ad_op_check_same_shape(op, gate, dy));
    AD_TRY(ad_op_check_same_shape(op, up, dy));
    const ad_tensor *all[3] = {dy, gate, up};
    for (int i = 0; i < 3; i++)
        AD_TRY(ad_op_check_rows(op, all[i]));
    cu_rows rdy, rg, ru, rdg, rdu;
    cu_rows_of(dy, &rdy);
    cu_rows_of(gate, &rg);
    cu_rows_of(up, &ru);
    rdg = rdu = rdy;
    if (dgate) {
        AD_TRY(cu_check(op, "dgate", dgate, CU_ACT));
        AD_TRY(ad_op_check_same_shape(op, dgate, dy));
        AD_TRY(ad_op_check_rows(op, dgate));
        cu_rows_of(dgate, &rdg);
    }
    if (dup) {
        AD_TRY(cu_check(op, "dup", dup, CU_ACT));
        AD_TRY(ad_op_check_same_shape(op, dup, dy));
        AD_TRY(ad_op_check_rows(op, dup));
        cu_rows_of(dup, &rdu);
    }
    const int64_t n = rdy.rows * rdy.cols;
    if (n == 0 || (!dgate && !dup)) return AD_OK;
    cu_rows *views[5] = {&rdy, &rg, &ru, &rdg, &rdu};
    flatten_contiguous(views, 5);
    if (flat_f32_aligned(views, 5)) {
        silu_mul_bwd_flat4_kernel<<<cu_blocks((rdy.cols + 3) / 4, EW_BLOCK), EW_BLOCK>>>(
            (float *)rdg.base, (float *)rdu.base, dgate != NULL, dup != NULL,
            (const float *)rdy.base, (const float *)rg.base, (const float *)ru.base, rdy.cols);
        CUDA_TRY_LAUNCH();
        return AD_OK;
    }
    silu_mul_bwd_kernel<<<rows_grid(rdy.rows, rdy.cols), EW_BLOCK>>>(rdg, rdu, dgate != NULL,
                                                                     dup != NULL, rdy, rg, ru);
    CUDA_TRY_LAUNCH();
    return AD_OK;
}

/* ---- softmax: one block per row, max / sum / write passes ---------------------------------- */

__global__ static void softmax_kernel(cu_rows y, cu_rows x) {
    __shared__ float shf[32];
    __shared__ double shd[32];
    for (int64_t r = blockIdx.x; r < x.rows; r += gridDim.x) {
        const int64_t ox = cu_row_off(x, r), oy = cu_row_off(y, r);
        float mx = -INFINITY;
        for (int64_t j = threadIdx.x; j < x.cols; j += blockDim.x)
            mx = fmaxf(mx, cu_load(x.base, x.dtype, ox + j));
        mx = cu_block_max(mx, shf);
        double sum = 0.0;
        for (int64_t j = threadIdx.x; j < x.cols; j += blockDim.x)
            sum += (double)expf(cu_load(x.base, x.dtype, ox + j) - mx);
        sum = cu_block_sum(sum, shd);
        for (int64_t j = threadIdx.x; j < x.cols; j += blockDim.x) {
            const float e = expf(cu_load(x.base, x.dtype, ox + j) - mx);
            cu_store(y.base, y.dtype, oy + j, (float)((double)e / sum));
        }
        __syncthreads(); /* in place: the next row's passes must not overtake this one */
    }
}

int cu_softmax(ad_backend *be, ad_tensor *y, const ad_tensor *x) {
    (void)be;
    cu_rows ry, rx;
    AD_TRY(check_unary("softmax", y, x, &ry, &rx));
    if (rx.rows == 0 || rx.cols == 0) return AD_OK;
    const unsigned grid = rx.rows > 65535 ? 65535u : (unsigned)rx.rows;
    softmax_kernel<<<grid, EW_BLOCK>>>(ry, rx);
    CUDA_TRY_LAUNCH();
    return AD_OK;
}

/* ---- transpose: 32 x 32 tiles through shared memory -------------------------------------- */

#define TR_TILE 32

__global__ static void transpose_kernel(char *y, int ydt, int64_t yb, int64_t yn, int64_t ym,
                                        const char *x, int xdt, int64_t xb, int64_t xm, int64_t xn,
                                        int64_t M, int64_t N) {
    __shared__ float tile[TR_TILE][TR_TILE + 1];
    const int64_t b = blockIdx.z, m0 = (int64_t)blockIdx.y * TR_TILE,
                  n0 = (int64_t)blockIdx.x * TR_TILE;
    for (int i = threadIdx.y; i < TR_TILE; i += blockDim.y) {
        const int64_t m = m0 + i, n = n0 + threadIdx.x;
        if (m < M && n < N) tile[i][threadIdx.x] = cu_load(x, xdt, b * xb + m * xm + n * xn);
    }
    __syncthreads();
    for (int i = threadIdx.y; i < TR_TILE; i += blockDim.y) {
        const int64_t n = n0 + i, m = m0 + threadIdx.x;
        if (m < M && n < N) cu_store(y, ydt, b * yb + n * yn + m * ym, tile[threadIdx.x][i]);
    }
}

int cu_transpose(ad_backend *be, ad_tensor *y, const ad_tensor *x) {
    (void)be;
    const char *op = "transpose";
    AD_TRY(cu_check(op, "y", y, CU_ACT));
    AD_TRY(cu_check(op, "x", x, CU_ACT));
    AD_TRY(ad_op_check_transpose(op, y, x));
    const int n = x->ndim;
    const int64_t B = n == 3 ? x->shape[0] : 1, M = x->shape[n - 2], N = x->shape[n - 1];
    if (B == 0 || M == 0 || N == 0) return AD_OK;
    if (B > 65535 || (M + TR_TILE - 1) / TR_TILE > 65535)
        return ad_op_fail_tensor(op, x, "too many batch elements or rows for one launch");
    const int64_t xb = n == 3 ? x->stride[0] : 0, yb = n == 3 ? y->stride[0] : 0;
    dim3 grid((unsigned)((N + TR_TILE - 1) / TR_TILE), (unsigned)((M + TR_TILE - 1) / TR_TILE),
              (unsigned)B);
    dim3 block(TR_TILE, 8);
    transpose_kernel<<<grid, block>>>((char *)y->data, y->dtype, yb, y->stride[n - 2],
                                      y->stride[n - 1], (const char *)x->data, x->dtype, xb,
                                      x->stride[n - 2], x->stride[n - 1], M, N);
    CUDA_TRY_LAUNCH();
    return AD_OK;
}
