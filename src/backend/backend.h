/* The op table: the only way model code computes anything. Model code (src/model, src/train)
 * is written once against these ops; each backend (the CPU reference in cpu/, CUDA in cuda/)
 * implements them for its device and activation dtype. The CPU backend is fp32 and the
 * reference: every other backend is tested against it on random inputs.
 *
 * Conventions (all backends):
 * - Tensors are ad_tensor views on the backend's device. Activations are row-major with the
 *   feature dim last ("channels-last"): [B, T, C] or [rows, C]. Ops check shapes and dtypes
 *   and fail with a message naming the op and tensor; they never allocate.
 * - Linear weights use the nn.Linear layout [out_features, in_features]; conv1d weights are
 *   [C_out, C_in, K] as in the checkpoint.
 * - `y` may alias `x` only where an op says "in place allowed".
 * - Integer index tensors (token ids, positions) are I32 on the backend's device.
 * Backward ops follow the same conventions (see "backward" below). */
#ifndef AUDISTILL_BACKEND_BACKEND_H
#define AUDISTILL_BACKEND_BACKEND_H

#include <stdbool.h>
#include <stddef.h>

#include "core/tensor.h"

typedef struct ad_backend ad_backend;

typedef struct {
    int n_heads;    /* query heads */
    int n_kv_heads; /* key/value heads; n_heads % n_kv_heads == 0 (grouped-query attention) */
    int head_dim;
    bool causal;  /* query i (absolute position q_offset + i) sees keys 0..q_offset + i */
    int q_offset; /* absolute position of the first query row (KV-cache decoding) */
    float scale;  /* usually 1/sqrt(head_dim) */
    /* Optional per-batch number of valid keys (host array of B ints): keys >= key_len[b] are
     * masked out (bidirectional encoder with padded frames). NULL: all keys valid. */
    const int *key_len;
    /* Optional [B, n_heads, Tq] F32 on the backend's device for the rows' softmax statistics:
     * attention may write them, and attention_backward, called with the same params and
     * inputs (and backend settings) after that forward, may read them instead of recomputing
     * them. Their contents are the backend's own (CUDA's flash kernels: the base-2
     * log-sum-exp their dQ pass would otherwise recompute in a first sweep over the keys);
     * backends and paths that recompute ignore them. */
    ad_tensor *softmax_stats;
} ad_attention_params;

typedef enum {
    AD_KL_FORWARD = 0,  /* KL(teacher || student), the classic distillation loss */
    AD_KL_REVERSE,      /* KL(student || teacher), mode-seeking */
    AD_KL_SKEW_FORWARD, /* KL(teacher || l*teacher + (1-l)*student), DistiLLM's skew KL */
    AD_KL_SKEW_REVERSE, /* KL(student || l*student + (1-l)*teacher) */
} ad_kl_kind;

typedef struct {
    float alpha;       /* weight of the KL term; 1 - alpha weighs the cross-entropy */
    float temperature; /* both distributions at temperature T; the KL term is scaled by T^2 */
    ad_kl_kind kind;
    float skew;       /* lambda of the skew variants */
    float grad_scale; /* the gradient is d(sum of row losses)/d(logits) * grad_scale, e.g.
                         1 / (supervised rows in the whole accumulated batch) */
} ad_distill_params;

typedef struct {
    double loss; /* sums over the rows (divide by `rows` for means) */
    double kl;
    double ce;
    int64_t rows; /* rows that counted (target >= 0) */
} ad_distill_sums;

/* One AdamW step (torch.optim.AdamW's single-tensor update; train/optim.h gives the formula). */
typedef struct {
    double lr, beta1, beta2, eps, weight_decay;
    bool decay;   /* in the weight-decay group */
    int64_t step; /* 1-based, for the bias corrections */
    /* Clipping fused into the step: the gradient is read as g * grad_scale (the bits of a
     * `scale` op first, without its pass over memory; g itself is left as it was). 0, as in a
     * zero-initialised struct, means 1. */
    float grad_scale;
} ad_adamw_params;

struct ad_backend {
    const char *name;
    ad_device device;
    ad_dtype act_dtype;    /* dtype of activations this backend computes in */
    char device_name[256]; /* the device as its driver names it (CUDA); "" on the CPU */
    void *impl;
    void *profile; /* the op profile while one runs (backend/profile.h), else NULL */

    /* ---- memory -------------------------------------------------------------------- */
    /* Device memory (zeroed). */
    int (*alloc)(ad_backend *be, size_t bytes, void **out);
    void (*release)(ad_backend *be, void *ptr);
    /* Copy a host tensor into a device tensor of the same shape, converting dtype
     * (e.g. bf16 checkpoint -> f32 on CPU). dst must be contiguous. */
    int (*upload)(ad_backend *be, ad_tensor *dst, const ad_tensor *src_host);
    /* Copy a device tensor to a contiguous host F32 tensor of the same shape. */
    int (*download)(ad_backend *be, ad_tensor *dst_host_f32, const ad_tensor *src);
    /* dst = src (same shape; strided views allowed on either side). */
    int (*copy)(ad_backend *be, ad_tensor *dst, const ad_tensor *src);
    int (*fill)(ad_backend *be, ad_tensor *dst, float value);

    /* ---- device services (optional: NULL on the CPU, whose ops finish before they return) - */
    /* Waits for the work queued on the device. */
    int (*synchronize)(ad_backend *be);
    /* Device memory free and total now. */
    int (*memory_info)(ad_backend *be, size_t *free_bytes, size_t *total_bytes);
    /* A named range on the device's timeline (NVTX on CUDA, for Nsight Systems). */
    void (*range_push)(ad_backend *be, const char *name);
    void (*range_pop)(ad_backend *be);
    /* GEMMs from here on round their f32 operands to bf16 (tensor cores, fp32 accumulation);
     * off: full fp32. NULL where the backend has only fp32. */
    int (*set_bf16_matmul)(ad_backend *be, bool on);
    /* How attention runs from here on: "auto", "kernel", "gemm" or "flash" (cuda/backend_cuda.h,
     * ad_cuda_set_attention_path). NULL where the backend has one way. */
    int (*set_attention)(ad_backend *be, const char *path);
    /* GEMM tuning from here on (cuda/backend_cuda.h, ad_cuda_set_gemm_tuning): each GEMM
     * problem times the library's candidate algorithms once and keeps the fastest. NULL where
     * the backend has nothing to tune. */
    int (*set_gemm_tuning)(ad_backend *be, bool on);
    /* The tuning's choices to a file and back (ad_cuda_gemm_tuning_save / _load): a resumed
     * run then computes with the algorithms the first one chose. */
    int (*save_gemm_tuning)(ad_backend *be, const char *path, long *saved);
    int (*load_gemm_tuning)(ad_backend *be, const char *path, long *loaded);

    /* ---- linear algebra --------------------------------------------------------------- */
    /* y = alpha * op(a) @ op(b) + beta * y, op = transpose when the flag is set.
     * a, b, y are 2-D (or flattened contiguous leading dims). b may be a weight dtype
     * (F32, BF16, F16; quantized formats in the compression issue). */
    int (*matmul)(ad_backend *be, ad_tensor *y, const ad_tensor *a, bool transpose_a,
                  const ad_tensor *b, bool transpose_b, float alpha, float beta);
    /* y[..., N] = x[..., K] @ w[N, K]^T + bias[N] (bias may be NULL). */
    int (*linear)(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *w,
                  const ad_tensor *bias);
    /* y = linear(x, w, bias) + residual: a residual connection. residual has y's shape and
     * dtype and is neither y nor x. The CPU's is linear, then add; CUDA adds the residual in
     * the GEMM (its C operand), one pass over y where the add made three. */
    int (*linear_residual)(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *w,
                           const ad_tensor *bias, const ad_tensor *residual);
    /* Channels-last conv1d: x [B, L, C_in], w [C_out, C_in, K], bias [C_out] or NULL,
     * y [B, L_out, C_out], L_out = (L + 2*padding - K) / stride + 1. Zero padding. */
    int (*conv1d)(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *w,
                  const ad_tensor *bias, int stride, int padding);

    /* ---- elementwise and normalisation ------------------------------------------------ */
    int (*gelu)(ad_backend *be, ad_tensor *y, const ad_tensor *x); /* erf form; in place ok */
    /* y = silu(gate) * up; in place ok (y == gate). */
    int (*silu_mul)(ad_backend *be, ad_tensor *y, const ad_tensor *gate, const ad_tensor *up);
    /* y = a + b; b may have fewer leading dims than a and is then broadcast over them
     * (e.g. positions [T, C] added to [B, T, C]). In place ok. */
    int (*add)(ad_backend *be, ad_tensor *y, const ad_tensor *a, const ad_tensor *b);
    /* Over the last dim; weight/bias [C]. In place ok. */
    int (*layernorm)(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *weight,
                     const ad_tensor *bias, float eps);
    /* Over the last dim with fp32 statistics; weight [C]. In place ok. */
    int (*rmsnorm)(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *weight,
                   float eps);
    /* Softmax over the last dim. In place ok. */
    int (*softmax)(ad_backend *be, ad_tensor *y, const ad_tensor *x);

    /* ---- sequence ops ----------------------------------------------------------------- */
    /* Rotary embedding y = rope(x) on [B, T, n_heads * head_dim] with the rotate_half pairing
     * (element i pairs with i + head_dim/2); positions [B, T] I32;
     * inv_freq_j = theta^(-2j/head_dim). y may be x (in place); a y of another dtype than x
     * (CUDA: f32 x, bf16 y) is the rotation computed from x and rounded once. */
    int (*rope)(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *positions,
                int n_heads, int head_dim, float theta);
    /* Scaled dot-product attention per batch element: q [B, Tq, n_heads*head_dim],
     * k, v [B, Tk, n_kv_heads*head_dim] (may be strided views of a KV cache),
     * out [B, Tq, n_heads*head_dim]. */
    int (*attention)(ad_backend *be, ad_tensor *out, const ad_tensor *q, const ad_tensor *k,
                     const ad_tensor *v, const ad_attention_params *params);
    /* Average pooling over time, channels-last: x [B, L, C] -> y [B, L_out, C] with
     * L_out = (L - kernel) / stride + 1 (PyTorch AvgPool1d, no padding). */
    int (*avg_pool1d)(ad_backend *be, ad_tensor *y, const ad_tensor *x, int kernel, int stride);
    /* y [N, C] = table[ids[n]] for ids [N] I32; ids outside [0, V) fail. */
    int (*embedding)(ad_backend *be, ad_tensor *y, const ad_tensor *table, const ad_tensor *ids);
    /* y [.., rows[i], :] = x[i, :] for rows [N] I32 into y [R, C]: scatters audio rows into
     * the prompt positions. A negative rows[i] skips x's row i (a padding row of a clip
     * shorter than the batch's longest, so a batch's clips go in one call); rows >= R fail. */
    int (*scatter_rows)(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *rows);
    /* Swap the last two dims: x [B, M, N] -> y [B, N, M]. */
    int (*transpose)(ad_backend *be, ad_tensor *y, const ad_tensor *x);

    /* ---- backward ---------------------------------------------------------------------
     * Gradients of the ops above. dx outputs are overwritten; parameter gradients (dw, db,
     * dweight, dbias, dtable) are ACCUMULATED (+=), so gradient accumulation over micro-batches
     * needs no extra buffers. Any gradient output may be NULL when it is not needed. Forward
     * activations are passed back in (recomputation is the op's business, e.g. attention
     * recomputes its probabilities instead of storing them). */
    /* dw_overwrite: dw = dy^T x (beta 0) instead of dw += it, db still accumulating: the
     * training graph's first write of a weight gradient after ad_graph_zero_grads, which then
     * need not fill those gradients with zeros first. */
    int (*linear_backward)(ad_backend *be, ad_tensor *dx, ad_tensor *dw, ad_tensor *db,
                           const ad_tensor *dy, const ad_tensor *x, const ad_tensor *w,
                           bool dw_overwrite);
    int (*conv1d_backward)(ad_backend *be, ad_tensor *dx, ad_tensor *dw, ad_tensor *db,
                           const ad_tensor *dy, const ad_tensor *x, const ad_tensor *w, int stride,
                           int padding);
    int (*gelu_backward)(ad_backend *be, ad_tensor *dx, const ad_tensor *dy, const ad_tensor *x);
    int (*silu_mul_backward)(ad_backend *be, ad_tensor *dgate, ad_tensor *dup, const ad_tensor *dy,
                             const ad_tensor *gate, const ad_tensor *up);
    /* dx_accumulate: dx += the input gradient (rounded to dx's dtype, then added), for the
     * residual connection around a pre-norm block, instead of dx = it: no separate add. */
    int (*layernorm_backward)(ad_backend *be, ad_tensor *dx, ad_tensor *dweight, ad_tensor *dbias,
                              const ad_tensor *dy, const ad_tensor *x, const ad_tensor *weight,
                              float eps, bool dx_accumulate);
    int (*rmsnorm_backward)(ad_backend *be, ad_tensor *dx, ad_tensor *dweight, const ad_tensor *dy,
                            const ad_tensor *x, const ad_tensor *weight, float eps,
                            bool dx_accumulate);
    /* In place on dx [B, T, n_heads * head_dim]: the transpose of the rotation. */
    int (*rope_backward)(ad_backend *be, ad_tensor *dx, const ad_tensor *positions, int n_heads,
                         int head_dim, float theta);
    /* dq, dk, dv overwritten (dk/dv sum over the query heads sharing a kv head), none of them
     * overlapping an input; out is the forward output. */
    int (*attention_backward)(ad_backend *be, ad_tensor *dq, ad_tensor *dk, ad_tensor *dv,
                              const ad_tensor *dout, const ad_tensor *out, const ad_tensor *q,
                              const ad_tensor *k, const ad_tensor *v,
                              const ad_attention_params *params);
    int (*avg_pool1d_backward)(ad_backend *be, ad_tensor *dx, const ad_tensor *dy, int kernel,
                               int stride);
    /* dtable[ids[n]] += dy[n]; rows with a negative id are skipped (placeholders whose
     * embedding was replaced, e.g. audio rows). Deterministic (no atomics). */
    int (*embedding_backward)(ad_backend *be, ad_tensor *dtable, const ad_tensor *dy,
                              const ad_tensor *ids);
    /* dx[i] = dy[rows[i]]: the gradient of scatter_rows with respect to the scattered rows
     * (0 where rows[i] is negative, a row scatter_rows skipped). */
    int (*gather_rows)(ad_backend *be, ad_tensor *dx, const ad_tensor *dy, const ad_tensor *rows);

    /* ---- losses ----------------------------------------------------------------------- */
    /* Fused distillation loss over the supervised rows only: student logits [N, V],
     * teacher logits [N, V] (NULL: cross-entropy only, alpha ignored), targets [N] I32
     * (rows with a negative target are skipped and get a zero gradient). Per row:
     * alpha*T^2*KL_T + (1 - alpha)*CE. Each row is processed in vocabulary chunks with online
     * max/sum statistics; the logits gradient is written into `grad` [N, V] F32 in the same
     * pass (grad may alias student_logits: in place). Sums are added into *sums (host). */
    int (*distill_loss)(ad_backend *be, ad_tensor *grad, const ad_tensor *student_logits,
                        const ad_tensor *teacher_logits, const ad_tensor *targets,
                        const ad_distill_params *params, ad_distill_sums *sums);

    /* ---- optimizer --------------------------------------------------------------------- */
    /* fp32 weights, gradients and Adam moments where the backend keeps the weights, so a step
     * moves nothing between host and device. All tensors contiguous F32; w, g, m, v of one
     * shape. */
    /* Sums of squares of n tensors in double into out[0..n) (host), each in an order fixed by
     * its size alone; NULL entries give 0. One call for the whole list, so a device backend
     * brings all the sums back in one copy (one synchronisation, not one per tensor). */
    int (*sum_squares)(ad_backend *be, const ad_tensor *const *xs, int n, double *out);
    /* x *= s (clipping by the global norm). */
    int (*scale)(ad_backend *be, ad_tensor *x, float s);
    /* w, m, v updated in place from g. w_bf16 (NULL: none) receives the updated w rounded to
     * bf16 (nearest even) in the same pass: the working copy the GEMMs read when the student
     * computes in bf16 and w is its fp32 master (contiguous BF16, w's shape). */
    int (*adamw)(ad_backend *be, ad_tensor *w, const ad_tensor *g, ad_tensor *m, ad_tensor *v,
                 const ad_adamw_params *p, ad_tensor *w_bf16);

    void (*destroy)(ad_backend *be);
};

/* The CPU reference backend (fp32, OpenBLAS, OpenMP). n_threads 0 = OpenMP's default. */
int ad_backend_cpu_create(ad_backend **out, int n_threads);
void ad_backend_destroy(ad_backend *be);
/* The backend a job's `device` names, for training and teacher passes: "cpu" (n_threads) or
 * "cuda" (GPU `gpu`, fp32 activations so that an optimizer can update the weights directly; a
 * build without CUDA refuses it, naming `what`). */
int ad_backend_create_for(const char *device, int n_threads, int gpu, const char *what,
                          ad_backend **out);

#endif
