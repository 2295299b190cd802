// CUDA rotary embedding, forward (y = rope(x): in place, or into a y of its own such as f32 x
// into bf16 y, rounded once) and backward (in place), on [B, T, n_heads * head_dim] with the
// rotate_half pairing (i with i + head_dim/2). Angles are computed as transformers does in
// float32: inv_freq_j = 1 / theta^(2j/d) rounded to float (made on the host with the CPU
// reference's expression and passed in the launch), angle = float(pos) * inv_freq_j in float,
// then cos/sin of that float evaluated in double and rounded, so the rounding of the angle
// at large positions is reproduced exactly. One thread per (b, t, j) serves a group of
// ROPE_HEADS heads (grid y), the double cos/sin computed once per group: it loads the pairs of
// all its heads before it stores any (with a store between loads, each load waited out its
// latency alone: ~900 GB/s in the H100 profile), the dtypes template constants so that the
// loads are plain ones.
#include <math.h>

#include "cuda_internal.h"

#define ROPE_MAX_HALF 512 /* head_dim up to 1024, as the CPU reference */
#define ROPE_HEADS    8

typedef struct {
    float inv_freq[ROPE_MAX_HALF];
} rope_table;

template <int XT, int YT>
__global__ static void rope_kernel(char *y, int64_t yb, int64_t yt, const char *x, int64_t xb,
                                   int64_t xt, const int32_t *pos, int64_t pb, int64_t pt,
                                   int64_t B, int64_t T, int n_heads, int head_dim, rope_table tab,
                                   bool backward) {
    const int half = head_dim / 2, h0 = (int)blockIdx.y * ROPE_HEADS;
    const int heads = n_heads - h0 < ROPE_HEADS ? n_heads - h0 : ROPE_HEADS;
    CU_GRID_STRIDE(i, B * T * half) {
        const int j = (int)(i % half);
        const int64_t bt = i / half, b = bt / T, t = bt % T;
        const int64_t head0 = (int64_t)h0 * head_dim + j;
        const int64_t i1 = b * xb + t * xt + head0, o1 = b * yb + t * yt + head0;
        float x1[ROPE_HEADS], x2[ROPE_HEADS];
        CU_UNROLL
        for (int k = 0; k < ROPE_HEADS; k++) {
            x1[k] = k < heads ? cu_load(x, XT, i1 + (int64_t)k * head_dim) : 0.0f;
            x2[k] = k < heads ? cu_load(x, XT, i1 + (int64_t)k * head_dim + half) : 0.0f;
        }
        const float angle = (float)pos[b * pb + t * pt] * tab.inv_freq[j];
        const float c = (float)cos((double)angle), s = (float)sin((double)angle);
        /* forward: x * cos + rotate_half(x) * sin, rotate_half(x) = cat(-x2, x1); backward:
         * the transpose of the rotation */
        const float s1 = backward ? s : -s, s2 = backward ? -s : s;
        CU_UNROLL
        for (int k = 0; k < ROPE_HEADS; k++) {
            if (k >= heads) break;
            cu_store(y, YT, o1 + (int64_t)k * head_dim, x1[k] * c + x2[k] * s1);
            cu_store(y, YT, o1 + (int64_t)k * head_dim + half, x2[k] * c + x1[k] * s2);
        }
    }
}

static int rope_run(const char *op, ad_tensor *y, const ad_tensor *x, const ad_tensor *positions,
                    int n_heads, int head_dim, float theta, bool backward) {
    AD_TRY(cu_check(op, "x", x, CU_ACT));
    AD_TRY(cu_check(op, "y", y, CU_ACT));
    AD_TRY(cu_check(op, "positions", positions, CU_I32));
    AD_TRY(ad_op_check_rope(op, y, x, positions, n_heads, head_dim, theta, 2 * ROPE_MAX_HALF));
    if (x->dtype == AD_BF16 && y->dtype == AD_F32)
        return ad_op_fail_tensor(op, y,
                                 "must be bf16 like %s: a widened rotation of bf16 input "
                                 "has no use here",
                                 x->name);
    const int64_t B = x->shape[0], T = x->shape[1];
    if (B == 0 || T == 0) return AD_OK;
    rope_table tab;
    const int half = head_dim / 2;
    for (int j = 0; j < half; j++) {
        const float e = (float)(2 * j) / (float)head_dim;
        tab.inv_freq[j] = 1.0f / (float)pow((double)theta, (double)e);
    }
    const int64_t n = B * T * half;
    const dim3 grid(cu_blocks(n, 256), (unsigned)((n_heads + ROPE_HEADS - 1) / ROPE_HEADS));
    char *out = (char *)y->data;
    const char *in = (const char *)x->data;
    const int32_t *pos = (const int32_t *)positions->data;
    const int64_t pb = positions->stride[0], pt = positions->stride[1];
    if (x->dtype == AD_F32 && y->dtype == AD_F32)
        rope_kernel<AD_F32, AD_F32><<<grid, 256>>>(out, y->stride[0], y->stride[1], in,
                                                   x->stride[0], x->stride[1], pos, pb, pt, B, T,
                                                   n_heads, head_dim, tab, backward);
    else if (x->dtype == AD_F32)
        rope_kernel<AD_F32, AD_BF16><<<grid, 256>>>(out, y->stride[0], y->stride[1], in,
                                                    x->stride[0], x->stride[1], pos, pb, pt, B, T,
                                                    n_heads, head_dim, tab, backward);
    else
        rope_kernel<AD_BF16, AD_BF16><<<grid, 256>>>(out, y->stride[0], y->stride[1], in,
                                                     x->stride[0], x->stride[1], pos, pb, pt, B, T,
                                                     n_heads, head_dim, tab, backward);
    CUDA_TRY_LAUNCH();
    return AD_OK;
}

int cu_rope(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *positions,
            int n_heads, int head_dim, float theta) {
    (void)be;
    return rope_run("rope", y, x, positions, n_heads, head_dim, theta, false);
}

int cu_rope_backward(ad_backend *be, ad_tensor *dx, const ad_tensor *positions, int n_heads,
                     int head_dim, float theta) {
    (void)be;
    return rope_run("rope_backward", dx, dx, positions, n_heads, head_dim, theta, true);
}
