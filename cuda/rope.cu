// CUDA rotary embedding, forward and backward, in place on x [B, T, n_heads * head_dim] with
// the rotate_half pairing (i with i + head_dim/2). Angles are computed as transformers does in
// float32: inv_freq_j = 1 / theta^(2j/d) rounded to float (made on the host with the CPU
// reference's expression and passed in the launch), angle = float(pos) * inv_freq_j in float,
// then cos/sin of that float evaluated in double and rounded, so the rounding of the angle
// at large positions is reproduced exactly. One thread per (b, t, j) serves a group of
// ROPE_HEADS heads (grid y): one thread for all 32 heads of a 7B layer left too few loads in
// flight (the H100 profile showed ~650 GB/s), while the angle's double cos/sin per extra group
// is cheap next to the memory traffic.
#include <math.h>

#include "cuda_internal.h"

#define ROPE_MAX_HALF 512 /* head_dim up to 1024, as the CPU reference */
#define ROPE_HEADS    4

typedef struct {
    float inv_freq[ROPE_MAX_HALF];
} rope_table;

__global__ static void rope_kernel(char *x, int dt, int64_t sb, int64_t st, const int32_t *pos,
                                   int64_t pb, int64_t pt, int64_t B, int64_t T, int n_heads,
                                   int head_dim, rope_table tab, bool backward) {
    const int half = head_dim / 2;
    CU_GRID_STRIDE(i, B * T * half) {
        const int j = (int)(i % half);
        const int64_t bt = i / half, b = bt / T, t = bt % T;
        const float angle = (float)pos[b * pb + t * pt] * tab.inv_freq[j];
        const float c = (float)cos((double)angle), s = (float)sin((double)angle);
        const int64_t row = b * sb + t * st;
        const int h_end = (int)blockIdx.y * ROPE_HEADS + ROPE_HEADS < n_heads
                              ? (int)blockIdx.y * ROPE_HEADS + ROPE_HEADS
                              : n_heads;
        for (int h = (int)blockIdx.y * ROPE_HEADS; h < h_end; h++) {
            const int64_t o1 = row + (int64_t)h * head_dim + j, o2 = o1 + half;
            const float x1 = cu_load(x, dt, o1), x2 = cu_load(x, dt, o2);
            if (!backward) {
                /* x * cos + rotate_half(x) * sin, rotate_half(x) = cat(-x2, x1) */
                cu_store(x, dt, o1, x1 * c + (-x2) * s);
                cu_store(x, dt, o2, x2 * c + x1 * s);
            } else {
                /* the transpose of the rotation */
                cu_store(x, dt, o1, x1 * c + x2 * s);
                cu_store(x, dt, o2, x2 * c - x1 * s);
            }
        }
    }
}

static int rope_run(const char *op, ad_tensor *x, const ad_tensor *positions, int n_heads,
                    int head_dim, float theta, bool backward) {
    AD_TRY(cu_check(op, "x", x, CU_ACT));
    AD_TRY(cu_check(op, "positions", positions, CU_I32));
    AD_TRY(ad_op_check_ndim(op, x, 3, 3));
    AD_TRY(ad_op_check_ndim(op, positions, 2, 2));
    AD_TRY(ad_op_check_rows(op, x));
    if (n_heads < 1 || head_dim < 2 || head_dim % 2 != 0 || head_dim > 2 * ROPE_MAX_HALF)
        return ad_fail("%s: need n_heads >= 1 and an even head_dim in [2, %d] (got %d, %d)", op,
                       2 * ROPE_MAX_HALF, n_heads, head_dim);
    if (!(theta > 0) || isinf(theta)) return ad_fail("%s: theta %g must be > 0", op, (double)theta);
    const int64_t B = x->shape[0], T = x->shape[1];
    if (x->shape[2] != (int64_t)n_heads * head_dim)
        return ad_op_fail_tensor(op, x, "last dim must be n_heads * head_dim = %d * %d", n_heads,
                                 head_dim);
    if (positions->shape[0] != B || positions->shape[1] != T)
        return ad_op_fail_tensor(op, positions, "expected [%lld, %lld] for %s", (long long)B,
                                 (long long)T, x->name);
    if (B == 0 || T == 0) return AD_OK;
    rope_table tab;
    const int half = head_dim / 2;
    for (int j = 0; j < half; j++) {
        const float e = (float)(2 * j) / (float)head_dim;
        tab.inv_freq[j] = 1.0f / (float)pow((double)theta, (double)e);
    }
    const int64_t n = B * T * half;
    const dim3 grid(cu_blocks(n, 256), (unsigned)((n_heads + ROPE_HEADS - 1) / ROPE_HEADS));
    rope_kernel<<<grid, 256>>>((char *)x->data, x->dtype, x->stride[0], x->stride[1],
                               (const int32_t *)positions->data, positions->stride[0],
                               positions->stride[1], B, T, n_heads, head_dim, tab, backward);
    CUDA_TRY_LAUNCH();
    return AD_OK;
}

int cu_rope(ad_backend *be, ad_tensor *x, const ad_tensor *positions, int n_heads, int head_dim,
            float theta) {
    (void)be;
    return rope_run("rope", x, positions, n_heads, head_dim, theta, false);
}

int cu_rope_backward(ad_backend *be, ad_tensor *dx, const ad_tensor *positions, int n_heads,
                     int head_dim, float theta) {
    (void)be;
    return rope_run("rope_backward", dx, positions, n_heads, head_dim, theta, true);
}
