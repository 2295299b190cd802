// The optimizer on CUDA over flat fp32 device buffers: one AdamW step (decoupled weight decay,
// bias corrections; the update of ad_adamw_step in src/train/optim.c, same float constants
// made on the host the same way), the sum of squares for the global gradient norm with a fixed
// reduction order (fixed grid, per-block trees, then the blocks in order: the same bits on
// every run), and the scaling used by clipping: the op table's optimizer ops (cu_sum_squares,
// cu_scale_op, cu_adamw at the end) and the flat-buffer entry points of backend_cuda.h.
#include <math.h>

#include "cuda_internal.h"

#define OPT_BLOCK       256
#define NORM_BLOCKS_MAX 1024

__global__ static void adamw_kernel(float *w, const float *g, float *m, float *v, int64_t n,
                                    float decay, float w1, bool small, float b2, float w2,
                                    float eps, float step_size, float bc2_sqrt, float grad_scale,
                                    __nv_bfloat16 *w16) {
    const float w1c = 1.0f - w1;
    CU_GRID_STRIDE(k, n) {
        /* torch's single-tensor AdamW order: decay, moments, then the update; its lerp
         * switches formulas at weight 0.5 to stay exact at weight 1 */
        float wk = w[k] * decay;
        const float gk = g[k] * grad_scale; /* clipping, fused: the bits of a scale pass */
        const float mk = small ? m[k] + w1 * (gk - m[k]) : gk - (gk - m[k]) * w1c;
        const float vk = b2 * v[k] + w2 * gk * gk;
        const float denom = sqrtf(vk) / bc2_sqrt + eps;
        wk += -step_size * mk / denom; /* addcdiv_(m, denom, value=-step_size) */
        w[k] = wk;
        m[k] = mk;
        v[k] = vk;
        if (w16) w16[k] = __float2bfloat16_rn(wk);
    }
}

extern "C" int ad_cuda_adamw_step(float *param, const float *grad, float *m, float *v, int64_t n,
                                  double lr, double beta1, double beta2, double eps,
                                  double weight_decay, bool decay, int64_t t, float grad_scale,
                                  uint16_t *param_bf16) {
    if (n < 0 || t < 1)
        return ad_fail("adamw: need n >= 0 and step t >= 1 (got %lld, %lld)", (long long)n,
                       (long long)t);
    if (n == 0) return AD_OK;
    if (!param || !grad || !m || !v) return ad_fail("adamw: NULL buffer");
    const double bc1 = 1.0 - pow(beta1, (double)t), bc2 = 1.0 - pow(beta2, (double)t);
    const float step_size = (float)(lr / bc1), bc2_sqrt = (float)sqrt(bc2);
    const float dec = decay ? (float)(1.0 - lr * weight_decay) : 1.0f;
    /* the float constants exactly as the host step makes them */
    const float w1 = (float)(1.0 - beta1), w2 = (float)(1.0 - beta2);
    if (!(grad_scale > 0.0f) || !isfinite(grad_scale))
        return ad_fail("adamw: gradient scale %g is not a positive finite number", grad_scale);
    adamw_kernel<<<cu_blocks(n, OPT_BLOCK), OPT_BLOCK>>>(
        param, grad, m, v, n, dec, w1, fabsf(w1) < 0.5f, (float)beta2, w2, (float)eps, step_size,
        bc2_sqrt, grad_scale, (__nv_bfloat16 *)param_bf16);
    CUDA_TRY_LAUNCH();
    return AD_OK;
}

__global__ static void sumsq_partial_kernel(const float *x, int64_t n, double *partial) {
    __shared__ double shd[32];
    double s = 0.0;
    CU_GRID_STRIDE(i, n) {
        const double v = x[i];
        s += v * v;
    }
    s = cu_block_sum(s, shd);
    if (threadIdx.x == 0) partial[blockIdx.x] = s;
}

__global__ static void sumsq_finish_kernel(const double *partial, int blocks, double *out) {
    __shared__ double shd[32];
    double s = 0.0;
    for (int i = threadIdx.x; i < blocks; i += blockDim.x)
        s += partial[i];
    s = cu_block_sum(s, shd);
    if (threadIdx.x == 0) *out = s;
}

static int64_t sumsq_blocks(int64_t n) {
    /* The grid size is a function of n only, so the reduction tree is fixed. */
    const int64_t blocks = (n + OPT_BLOCK - 1) / OPT_BLOCK;
    return blocks > NORM_BLOCKS_MAX ? NORM_BLOCKS_MAX : blocks;
}

/* The device doubles the sums of `count` buffers need: each buffer's block partials, then one
 * result per buffer at the end (so one copy brings every result back). */
static int64_t sumsq_space(const int64_t *n, int count) {
    int64_t space = count;
    for (int i = 0; i < count; i++)
        if (n[i] > 0) space += sumsq_blocks(n[i]);
    return space;
}

/* Sums of squares of count buffers (NULL or empty: 0) into out[] on the host with one copy;
 * `work` holds sumsq_space(n, count) doubles of device memory. */
static cudaError_t sumsq_many(const float *const *x, const int64_t *n, int count, double *work,
                              double *out) {
    double *results = work, *partial = work + count;
    cudaError_t err = cudaMemset(results, 0, sizeof(double) * (size_t)count);
    for (int i = 0; i < count && err == cudaSuccess; i++) {
        if (!x[i] || n[i] <= 0) continue;
        const int64_t blocks = sumsq_blocks(n[i]);
        sumsq_partial_kernel<<<(unsigned)blocks, OPT_BLOCK>>>(x[i], n[i], partial);
        err = cudaGetLastError();
        if (err == cudaSuccess) {
            sumsq_finish_kernel<<<1, OPT_BLOCK>>>(partial, (int)blocks, results + i);
            err = cudaGetLastError();
        }
        partial += blocks;
    }
    if (err == cudaSuccess && count > 0)
        err = cudaMemcpy(out, results, sizeof(double) * (size_t)count, cudaMemcpyDeviceToHost);
    return err;
}

/* For the flat-buffer entry points, which have no backend and so no scratch. */
static int sumsq_many_alloc(const float *const *x, const int64_t *n, int count, double *out) {
    double *work = NULL;
    CUDA_TRY(cudaMalloc((void **)&work, sizeof(double) * (size_t)sumsq_space(n, count)));
    const cudaError_t err = sumsq_many(x, n, count, work, out);
    cudaFree(work);
    if (err != cudaSuccess) return ad_fail("sum of squares: %s", cudaGetErrorString(err));
    return AD_OK;
}

extern "C" int ad_cuda_sum_squares(const float *x, int64_t n, double *out) {
    *out = 0.0;
    if (n <= 0) return AD_OK;
    return sumsq_many_alloc(&x, &n, 1, out);
}

extern "C" int ad_cuda_grad_norm(float *const *grads, const int64_t *n, int count, double *norm) {
    double *sums = (double *)ad_malloc(sizeof(double) * (size_t)(count ? count : 1), "norms");
    if (!sums) return AD_ERR;
    const int rc = count ? sumsq_many_alloc(grads, n, count, sums) : AD_OK;
    double total = 0.0;
    for (int i = 0; i < count && rc == AD_OK; i++)
        total += sums[i]; /* per-buffer sums added in list order */
    free(sums);
    AD_TRY(rc);
    *norm = sqrt(total);
    return AD_OK;
}

__global__ static void scale_kernel(float *x, int64_t n, float s) {
    CU_GRID_STRIDE(i, n) x[i] *= s;
}

extern "C" int ad_cuda_scale(float *x, int64_t n, float scale) {
    if (n <= 0) return AD_OK;
    scale_kernel<<<cu_blocks(n, OPT_BLOCK), OPT_BLOCK>>>(x, n, scale);
    CUDA_TRY_LAUNCH();
    return AD_OK;
}

/* ---- the op table's optimizer ops ------------------------------------------------------------ */

static int check_flat(const char *op, const char *role, const ad_tensor *t) {
    AD_TRY(cu_check(op, role, t, CU_F32));
    return ad_op_check_contiguous(op, t);
}

int cu_sum_squares(ad_backend *be, const ad_tensor *const *xs, int count, double *out) {
    if (count <= 0) return AD_OK;
    const float **x = (const float **)ad_malloc(sizeof *x * (size_t)count, "sum_squares list");
    int64_t *n = (int64_t *)ad_malloc(sizeof *n * (size_t)count, "sum_squares list");
    int rc = x && n ? AD_OK : AD_ERR;
    for (int i = 0; i < count && rc == AD_OK; i++) {
        x[i] = NULL, n[i] = 0;
        if (!xs[i]) continue;
        rc = check_flat("sum_squares", "x", xs[i]);
        x[i] = (const float *)xs[i]->data, n[i] = ad_tensor_numel(xs[i]);
    }
    void *work = NULL;
    if (rc == AD_OK)
        rc = cu_scratch(be, CU_SCRATCH_PARTIAL, sizeof(double) * (size_t)sumsq_space(n, count),
                        &work);
    if (rc == AD_OK) {
        const cudaError_t err = sumsq_many(x, n, count, (double *)work, out);
        if (err != cudaSuccess) rc = ad_fail("sum_squares: %s", cudaGetErrorString(err));
    }
    free(x), free(n);
    return rc;
}

int cu_scale_op(ad_backend *be, ad_tensor *x, float s) {
    (void)be;
    AD_TRY(check_flat("scale", "x", x));
    return ad_cuda_scale((float *)x->data, ad_tensor_numel(x), s);
}

int cu_adamw(ad_backend *be, ad_tensor *w, const ad_tensor *g, ad_tensor *m, ad_tensor *v,
             const ad_adamw_params *p, ad_tensor *w_bf16) {
    (void)be;
    AD_TRY(cu_check("adamw", "w", w, CU_F32));
    AD_TRY(cu_check("adamw", "g", g, CU_F32));
    AD_TRY(cu_check("adamw", "m", m, CU_F32));
    AD_TRY(cu_check("adamw", "v", v, CU_F32));
    if (w_bf16) AD_TRY(cu_check("adamw", "w_bf16", w_bf16, CU_M(AD_BF16)));
    AD_TRY(ad_op_check_adamw(w, g, m, v, w_bf16));
    return ad_cuda_adamw_step(
        (float *)w->data, (const float *)g->data, (float *)m->data, (float *)v->data,
        ad_tensor_numel(w), p->lr, p->beta1, p->beta2, p->eps, p->weight_decay, p->decay, p->step,
        p->grad_scale != 0.0f ? p->grad_scale : 1.0f, w_bf16 ? (uint16_t *)w_bf16->data : NULL);
}
