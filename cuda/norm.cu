// CUDA LayerNorm and RMSNorm, forward and backward, over the last dim. One block per row;
// row statistics are accumulated in double (as the CPU reference) so F32 results agree to
// rounding. Parameter gradients (dweight, dbias) are a two-pass column reduction: fixed row
// chunks each write a partial row, then the partials are added in chunk order onto the
// accumulating gradient: deterministic, no atomics.
#include "cuda_internal.h"

#define NORM_BLOCK  256
#define NORM_TILE   32
#define NORM_LANES  8
#define NORM_CHUNKS 64
#define NORM_CACHED 16 /* row elements per thread kept in registers (rows up to 4096) */

static int check_param(const char *op, const char *role, const ad_tensor *t, int64_t C) {
    AD_TRY(cu_check(op, role, t, CU_FLOAT));
    AD_TRY(ad_op_check_vector(op, t, C));
    if (C > 1 && t->stride[0] != 1) return ad_op_fail_tensor(op, t, "must be contiguous");
    return AD_OK;
}

static unsigned row_grid(int64_t rows) {
    return rows > 65535 ? 65535u : (unsigned)(rows < 1 ? 1 : rows);
}

/* ---- forward ----------------------------------------------------------------------------- */

/* With PER > 0 (rows of at most PER * blockDim.x columns) each thread keeps its elements of
 * the row in registers after the first pass instead of reading them again; the same sums in the
 * same order either way. */
#define NORM_ROW_X(k, j) (PER > 0 ? xc[k] : cu_load(x.base, x.dtype, ox + (j)))

/* x's elements of this thread into xc (PER > 0). */
template <int PER>
__device__ static inline void norm_cache_row(float *xc, const cu_rows &x, int64_t ox) {
    if (PER > 0) {
        CU_UNROLL
        for (int k = 0; k < (PER > 0 ? PER : 1); k++) {
            const int64_t j = threadIdx.x + k * (int64_t)blockDim.x;
            xc[k] = j < x.cols ? cu_load(x.base, x.dtype, ox + j) : 0.0f;
        }
    }
}

template <int PER>
__global__ static void layernorm_kernel(cu_rows y, cu_rows x, const char *w, int wdt, const char *b,
                                        int bdt, float eps) {
    __shared__ double shd[32];
    const int64_t C = x.cols, bd = blockDim.x;
    const int steps = PER > 0 ? PER : (int)((C + bd - 1) / bd);
    float xc[PER > 0 ? PER : 1];
    for (int64_t r = blockIdx.x; r < x.rows; r += gridDim.x) {
        const int64_t ox = cu_row_off(x, r), oy = cu_row_off(y, r);
        norm_cache_row<PER>(xc, x, ox);
        double s = 0.0;
#pragma unroll
        for (int k = 0; k < steps; k++) {
            const int64_t j = threadIdx.x + k * bd;
            if (j < C) s += (double)NORM_ROW_X(k, j);
        }
        const double mean = cu_block_sum(s, shd) / (double)C;
        double sq = 0.0;
#pragma unroll
        for (int k = 0; k < steps; k++) {
            const int64_t j = threadIdx.x + k * bd;
            if (j >= C) continue;
            const double d = (double)NORM_ROW_X(k, j) - mean;
            sq += d * d;
        }
        /* Biased variance and eps inside the root, as torch.nn.LayerNorm. */
        const double rstd = 1.0 / sqrt(cu_block_sum(sq, shd) / (double)C + (double)eps);
#pragma unroll
        for (int k = 0; k < steps; k++) {
            const int64_t j = threadIdx.x + k * bd;
            if (j >= C) continue;
            const float xhat = (float)(((double)NORM_ROW_X(k, j) - mean) * rstd);
            cu_store(y.base, y.dtype, oy + j, xhat * cu_load(w, wdt, j) + cu_load(b, bdt, j));
        }
    }
}

template <int PER>
__global__ static void rmsnorm_kernel(cu_rows y, cu_rows x, const char *w, int wdt, float eps) {
    __shared__ double shd[32];
    const int64_t C = x.cols, bd = blockDim.x;
    const int steps = PER > 0 ? PER : (int)((C + bd - 1) / bd);
    float xc[PER > 0 ? PER : 1];
    for (int64_t r = blockIdx.x; r < x.rows; r += gridDim.x) {
        const int64_t ox = cu_row_off(x, r), oy = cu_row_off(y, r);
        norm_cache_row<PER>(xc, x, ox);
        double sq = 0.0;
#pragma unroll
        for (int k = 0; k < steps; k++) {
            const int64_t j = threadIdx.x + k * bd;
            if (j >= C) continue;
            const double v = (double)NORM_ROW_X(k, j);
            sq += v * v;
        }
        /* Qwen2RMSNorm: weight * (x * rsqrt(mean(x^2) + eps)), each product in float. */
        const float rs = (float)(1.0 / sqrt(cu_block_sum(sq, shd) / (double)C + (double)eps));
#pragma unroll
        for (int k = 0; k < steps; k++) {
            const int64_t j = threadIdx.x + k * bd;
            if (j < C)
                cu_store(y.base, y.dtype, oy + j, cu_load(w, wdt, j) * (NORM_ROW_X(k, j) * rs));
        }
    }
}

static int check_norm(const char *op, const ad_tensor *y, const ad_tensor *x, float eps,
                      cu_rows *ry, cu_rows *rx) {
    AD_TRY(cu_check(op, "y", y, CU_ACT));
    AD_TRY(cu_check(op, "x", x, CU_ACT));
    AD_TRY(ad_op_check_ndim(op, x, 1, AD_MAX_DIMS));
    AD_TRY(ad_op_check_same_shape(op, y, x));
    AD_TRY(ad_op_check_rows(op, y));
    AD_TRY(ad_op_check_rows(op, x));
    if (!(eps >= 0)) return ad_fail("%s: eps %g must be >= 0", op, (double)eps);
    cu_rows_of(y, ry);
    cu_rows_of(x, rx);
    return AD_OK;
}

int cu_layernorm(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *weight,
                 const ad_tensor *bias, float eps) {
    (void)be;
    const char *op = "layernorm";
    cu_rows ry, rx;
    AD_TRY(check_norm(op, y, x, eps, &ry, &rx));
    AD_TRY(check_param(op, "weight", weight, rx.cols));
    AD_TRY(check_param(op, "bias", bias, rx.cols));
    if (rx.rows == 0 || rx.cols == 0) return AD_OK;
    if (rx.cols <= (int64_t)NORM_BLOCK * NORM_CACHED)
        layernorm_kernel<NORM_CACHED><<<row_grid(rx.rows), cu_row_threads(rx.cols, NORM_BLOCK)>>>(
            ry, rx, (const char *)weight->data, weight->dtype, (const char *)bias->data,
            bias->dtype, eps);
    else
        layernorm_kernel<0><<<row_grid(rx.rows), cu_row_threads(rx.cols, NORM_BLOCK)>>>(
            ry, rx, (const char *)weight->data, weight->dtype, (const char *)bias->data,
            bias->dtype, eps);
    CUDA_TRY_LAUNCH();
    return AD_OK;
}

int cu_rmsnorm(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *weight,
               float eps) {
    (void)be;
    const char *op = "rmsnorm";
    cu_rows ry, rx;
    AD_TRY(check_norm(op, y, x, eps, &ry, &rx));
    AD_TRY(check_param(op, "weight", weight, rx.cols));
    if (rx.rows == 0 || rx.cols == 0) return AD_OK;
    if (rx.cols <= (int64_t)NORM_BLOCK * NORM_CACHED)
        rmsnorm_kernel<NORM_CACHED><<<row_grid(rx.rows), cu_row_threads(rx.cols, NORM_BLOCK)>>>(
            ry, rx, (const char *)weight->data, weight->dtype, eps);
    else
        rmsnorm_kernel<0><<<row_grid(rx.rows), cu_row_threads(rx.cols, NORM_BLOCK)>>>(
            ry, rx, (const char *)weight->data, weight->dtype, eps);
    CUDA_TRY_LAUNCH();
    return AD_OK;
}

/* ---- backward ---------------------------------------------------------------------------- */

/* dx per row; the row's (mean, rstd) (LayerNorm) or (0, rs) (RMSNorm) into stats for the
 * parameter-gradient pass. The row is read in up to four passes; with PER > 0 (rows of at most
 * PER * blockDim.x columns) each thread keeps its PER elements of x and dy in registers after
 * the first, so x and dy leave memory once (the passes from memory ran at ~750 GB/s in the H100
 * profile). Both forms add in the same order: the same bits. */
template <int PER>
__global__ static void __launch_bounds__(NORM_BLOCK, 2)
    norm_bwd_rows_kernel(bool rms, cu_rows dx, bool want_dx, bool dx_accumulate, cu_rows dy,
                         cu_rows x, const char *w, int wdt, float eps, float *stats) {
    __shared__ double shd[32];
    const int64_t C = x.cols, bd = blockDim.x;
    const int steps = PER > 0 ? PER : (int)((C + bd - 1) / bd);
    float xc[PER > 0 ? PER : 1], gc[PER > 0 ? PER : 1];
    for (int64_t r = blockIdx.x; r < x.rows; r += gridDim.x) {
        const int64_t ox = cu_row_off(x, r), og = cu_row_off(dy, r);
        norm_cache_row<PER>(xc, x, ox);
        if (PER > 0) {
            CU_UNROLL
            for (int k = 0; k < (PER > 0 ? PER : 1); k++) {
                const int64_t j = threadIdx.x + k * bd;
                gc[k] = j < C ? cu_load(dy.base, dy.dtype, og + j) : 0.0f;
            }
        }
#define NORM_DY(k, j)    (PER > 0 ? gc[k] : cu_load(dy.base, dy.dtype, og + (j)))
#define NORM_DXHAT(k, j) ((double)NORM_DY(k, j) * (double)cu_load(w, wdt, j))
        double mean = 0.0, s = 0.0;
        if (!rms) {
#pragma unroll
            for (int k = 0; k < steps; k++) {
                const int64_t j = threadIdx.x + k * bd;
                if (j < C) s += (double)NORM_ROW_X(k, j);
            }
            mean = cu_block_sum(s, shd) / (double)C;
        }
        double sq = 0.0;
#pragma unroll
        for (int k = 0; k < steps; k++) {
            const int64_t j = threadIdx.x + k * bd;
            if (j >= C) continue;
            const double d = (double)NORM_ROW_X(k, j) - mean;
            sq += d * d;
        }
        const double rstd = 1.0 / sqrt(cu_block_sum(sq, shd) / (double)C + (double)eps);
        /* LayerNorm: m1 = mean(dy w), m2 = mean(dy w xhat); RMSNorm: m2 = mean(dy w x). */
        double m1 = 0.0, m2 = 0.0;
#pragma unroll
        for (int k = 0; k < steps; k++) {
            const int64_t j = threadIdx.x + k * bd;
            if (j >= C) continue;
            const double xv = (double)NORM_ROW_X(k, j);
            const double dxhat = NORM_DXHAT(k, j);
            m1 += dxhat;
            m2 += dxhat * (rms ? xv : (xv - mean) * rstd);
        }
        m1 = cu_block_sum(m1, shd) / (double)C;
        m2 = cu_block_sum(m2, shd) / (double)C;
        if (threadIdx.x == 0) {
            stats[2 * r] = (float)mean;
            stats[2 * r + 1] = (float)rstd;
        }
        if (!want_dx) continue;
        const int64_t od = cu_row_off(dx, r);
#pragma unroll
        for (int k = 0; k < steps; k++) {
            const int64_t j = threadIdx.x + k * bd;
            if (j >= C) continue;
            const double xv = (double)NORM_ROW_X(k, j);
            const double dxhat = NORM_DXHAT(k, j);
            double v;
            if (rms)
                v = rstd * (dxhat - xv * rstd * rstd * m2);
            else
                v = rstd * (dxhat - m1 - (xv - mean) * rstd * m2);
            /* rounded, then added: what a separate add of the rounded gradient gives */
            const float g = (float)v;
            cu_store(dx.base, dx.dtype, od + j,
                     dx_accumulate ? cu_load(dx.base, dx.dtype, od + j) + g : g);
        }
#undef NORM_DY
#undef NORM_DXHAT
    }
}

/* Partial column sums of dy * xhat (pw) and dy (pb) over one chunk of rows. The per-row
 * statistics come from the rows kernel, so xhat matches dx's. */
__global__ static void norm_param_partial_kernel(cu_rows dy, cu_rows x, const float *stats,
                                                 int64_t chunk_rows, float *pw, float *pb) {
    __shared__ float aw[NORM_LANES][NORM_TILE], ab[NORM_LANES][NORM_TILE];
    const int64_t C = x.cols, c = (int64_t)blockIdx.x * NORM_TILE + threadIdx.x;
    const int64_t r0 = (int64_t)blockIdx.y * chunk_rows;
    const int64_t r1 = r0 + chunk_rows < x.rows ? r0 + chunk_rows : x.rows;
    float sw = 0.0f, sb = 0.0f;
    if (c < C)
        for (int64_t r = r0 + threadIdx.y; r < r1; r += NORM_LANES) {
            const float g = cu_load(dy.base, dy.dtype, cu_row_off(dy, r) + c);
            const float xv = cu_load(x.base, x.dtype, cu_row_off(x, r) + c);
            sw += g * ((xv - stats[2 * r]) * stats[2 * r + 1]);
            sb += g;
        }
    aw[threadIdx.y][threadIdx.x] = sw;
    ab[threadIdx.y][threadIdx.x] = sb;
    __syncthreads();
    for (int s = NORM_LANES / 2; s > 0; s /= 2) {
        if ((int)threadIdx.y < s) {
            aw[threadIdx.y][threadIdx.x] += aw[threadIdx.y + s][threadIdx.x];
            ab[threadIdx.y][threadIdx.x] += ab[threadIdx.y + s][threadIdx.x];
        }
        __syncthreads();
    }
    if (threadIdx.y == 0 && c < C) {
        pw[(int64_t)blockIdx.y * C + c] = aw[0][threadIdx.x];
        pb[(int64_t)blockIdx.y * C + c] = ab[0][threadIdx.x];
    }
}

__global__ static void norm_param_finish_kernel(float *dw, float *db, const float *pw,
                                                const float *pb, int chunks, int64_t C) {
    CU_GRID_STRIDE(c, C) {
        float sw = 0.0f, sb = 0.0f;
        for (int k = 0; k < chunks; k++) {
            sw += pw[(int64_t)k * C + c];
            sb += pb[(int64_t)k * C + c];
        }
        if (dw) dw[c] += sw;
        if (db) db[c] += sb;
    }
}

static int norm_backward(ad_backend *be, const char *op, bool rms, ad_tensor *dx,
                         ad_tensor *dweight, ad_tensor *dbias, const ad_tensor *dy,
                         const ad_tensor *x, const ad_tensor *weight, float eps,
                         bool dx_accumulate) {
    AD_TRY(cu_check(op, "dy", dy, CU_ACT));
    AD_TRY(cu_check(op, "x", x, CU_ACT));
    AD_TRY(ad_op_check_ndim(op, x, 1, AD_MAX_DIMS));
    AD_TRY(ad_op_check_same_shape(op, dy, x));
    AD_TRY(ad_op_check_rows(op, dy));
    AD_TRY(ad_op_check_rows(op, x));
    if (!(eps >= 0)) return ad_fail("%s: eps %g must be >= 0", op, (double)eps);
    cu_rows rdy, rx, rdx;
    cu_rows_of(dy, &rdy);
    cu_rows_of(x, &rx);
    rdx = rdy;
    const int64_t rows = rx.rows, C = rx.cols;
    AD_TRY(check_param(op, "weight", weight, C));
    if (dx) {
        AD_TRY(cu_check(op, "dx", dx, CU_ACT));
        AD_TRY(ad_op_check_same_shape(op, dx, x));
        AD_TRY(ad_op_check_rows(op, dx));
        cu_rows_of(dx, &rdx);
    }
    const ad_tensor *params[2] = {dweight, dbias};
    for (int i = 0; i < 2; i++)
        if (params[i]) {
            AD_TRY(cu_check(op, i ? "dbias" : "dweight", params[i], CU_F32));
            AD_TRY(ad_op_check_vector(op, params[i], C));
            AD_TRY(ad_op_check_contiguous(op, params[i]));
        }
    if (rows == 0 || C == 0) return AD_OK;
    float *stats;
    AD_TRY(cu_scratch(be, CU_SCRATCH_STATS, (size_t)rows * 2 * sizeof(float), (void **)&stats));
    if (C <= (int64_t)NORM_BLOCK * NORM_CACHED)
        norm_bwd_rows_kernel<NORM_CACHED><<<row_grid(rows), cu_row_threads(C, NORM_BLOCK)>>>(
            rms, rdx, dx != NULL, dx_accumulate, rdy, rx, (const char *)weight->data, weight->dtype,
            eps, stats);
    else
        norm_bwd_rows_kernel<0><<<row_grid(rows), cu_row_threads(C, NORM_BLOCK)>>>(
            rms, rdx, dx != NULL, dx_accumulate, rdy, rx, (const char *)weight->data, weight->dtype,
            eps, stats);
    CUDA_TRY_LAUNCH();
    if (!dweight && !dbias) return AD_OK;
    int chunks = NORM_CHUNKS;
    if (rows < (int64_t)chunks * 64) chunks = (int)((rows + 63) / 64);
    const int64_t chunk_rows = (rows + chunks - 1) / chunks;
    float *partial;
    AD_TRY(cu_scratch(be, CU_SCRATCH_PARTIAL, (size_t)chunks * (size_t)C * 2 * sizeof(float),
                      (void **)&partial));
    float *pw = partial, *pb = partial + (size_t)chunks * (size_t)C;
    dim3 grid((unsigned)((C + NORM_TILE - 1) / NORM_TILE), (unsigned)chunks);
    norm_param_partial_kernel<<<grid, dim3(NORM_TILE, NORM_LANES)>>>(rdy, rx, stats, chunk_rows, pw,
                                                                     pb);
    CUDA_TRY_LAUNCH();
    norm_param_finish_kernel<<<cu_blocks(C, NORM_BLOCK), NORM_BLOCK>>>(
        dweight ? (float *)dweight->data : NULL, dbias ? (float *)dbias->data : NULL, pw, pb,
        chunks, C);
    CUDA_TRY_LAUNCH();
    return AD_OK;
}

int cu_layernorm_backward(ad_backend *be, ad_tensor *dx, ad_tensor *dweight, ad_tensor *dbias,
                          const ad_tensor *dy, const ad_tensor *x, const ad_tensor *weight,
                          float eps, bool dx_accumulate) {
    return norm_backward(be, "layernorm_backward", false, dx, dweight, dbias, dy, x, weight, eps,
                         dx_accumulate);
}

int cu_rmsnorm_backward(ad_backend *be, ad_tensor *dx, ad_tensor *dweight, const ad_tensor *dy,
                        const ad_tensor *x, const ad_tensor *weight, float eps,
                        bool dx_accumulate) {
    /* With mean 0, xhat = x * rs: the LayerNorm parameter pass gives sum(dy * x * rs). */
    return norm_backward(be, "rmsnorm_backward", true, dx, dweight, NULL, dy, x, weight, eps,
                         dx_accumulate);
}
