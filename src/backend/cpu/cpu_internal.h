/* Shared plumbing of the CPU backend: its private state (thread count, grow-only scratch),
 * the argument checks every op runs before touching data, and row addressing for strided
 * views. Only src/backend/cpu includes this; nothing here computes an op. */
#ifndef AUDISTILL_BACKEND_CPU_INTERNAL_H
#define AUDISTILL_BACKEND_CPU_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "backend/backend.h"
#include "backend/op_check.h"

/* Scratch slots: an op may use several at once, so each has a fixed purpose. */
enum {
    CPU_SCRATCH_WEIGHT = 0, /* weights converted/repacked to f32 (matmul tiles, conv1d) */
    CPU_SCRATCH_COLS,       /* conv1d im2col rows, attention score blocks */
    CPU_SCRATCH_PARAM_A,    /* small parameter vectors converted to f32 (norm weight, bias) */
    CPU_SCRATCH_PARAM_B,
    CPU_SCRATCH_SLOTS
};

typedef struct {
    int n_threads;
    void *scratch[CPU_SCRATCH_SLOTS];
    size_t scratch_bytes[CPU_SCRATCH_SLOTS];
} cpu_impl;

/* Bytes of f32 work below which an op stays single-threaded (thread start-up costs more). */
#define CPU_PARALLEL_MIN_WORK 32768

static inline cpu_impl *cpu_of(ad_backend *be) {
    return (cpu_impl *)be->impl;
}

/* A grow-only buffer of at least `bytes` in `slot`, owned by the backend. The CPU backend
 * is the one place that allocates inside ops (BF16 weight tiles, im2col, attention scores);
 * the buffers are kept for the next call, so a steady-state step allocates nothing. */
int cpu_scratch(ad_backend *be, int slot, size_t bytes, void **out);

/* OpenBLAS's thread count is process-wide; ops set it to their backend's n_threads before a
 * BLAS call, so two backends with different counts in one process each get their own. */
void cpu_blas_threads(ad_backend *be);

/* 64-byte aligned, zeroed; the backend's alloc. */
void *cpu_aligned_zalloc(size_t bytes, const char *what);

/* ---- checks: each fails with "op: tensor NAME [dims] dtype: what was expected"; the shape,
 * stride and aliasing checks are shared with the other backends (backend/op_check.h) ---- */
/* Non-NULL, on the CPU, not packed, of dtype `dtype`. */
int cpu_check_tensor(const char *op, const char *role, const ad_tensor *t, ad_dtype dtype);
/* Like cpu_check_tensor for weights: F32, BF16 or F16. */
int cpu_check_weight(const char *op, const char *role, const ad_tensor *t);

/* ---- row addressing ---------------------------------------------------------------------- */
/* A tensor seen as rows x cols: cols = the last dim (unit stride), rows = the product of the
 * leading dims, each with its own stride (merged where they are contiguous). */
typedef struct {
    char *base;
    int64_t rows, cols;
    int nlead;
    int64_t shape[AD_MAX_DIMS], stride[AD_MAX_DIMS]; /* leading dims, in bytes for stride */
} cpu_rows;

void cpu_rows_of(const ad_tensor *t, cpu_rows *r);

static inline void *cpu_row(const cpu_rows *r, int64_t i) {
    if (r->nlead <= 1) return r->base + i * r->stride[0];
    int64_t off = 0;
    for (int d = r->nlead - 1; d >= 0; d--) {
        off += (i % r->shape[d]) * r->stride[d];
        i /= r->shape[d];
    }
    return r->base + off;
}

/* A parameter vector (weight, bias) as f32: the tensor's own data when it is contiguous
 * F32, otherwise converted into scratch `slot`. */
int cpu_param_f32(ad_backend *be, const ad_tensor *t, int slot, const float **out);

/* Converts n elements of a weight dtype (F32, BF16, F16) to f32. */
void cpu_convert_f32(float *dst, const void *src, ad_dtype dtype, int64_t n);

/* ---- op entry points (the table in cpu_backend.c points here) ------------------------------ */
int ad_cpu_alloc(ad_backend *be, size_t bytes, void **out);
void ad_cpu_release(ad_backend *be, void *ptr);
int ad_cpu_upload(ad_backend *be, ad_tensor *dst, const ad_tensor *src_host);
int ad_cpu_download(ad_backend *be, ad_tensor *dst_host_f32, const ad_tensor *src);
int ad_cpu_copy(ad_backend *be, ad_tensor *dst, const ad_tensor *src);
int ad_cpu_fill(ad_backend *be, ad_tensor *dst, float value);
/* The optimizer ops (cpu_optim.c). */
void ad_cpu_register_optimizer(ad_backend *be);

int ad_cpu_matmul(ad_backend *be, ad_tensor *y, const ad_tensor *a, bool transpose_a,
                  const ad_tensor *b, bool transpose_b, float alpha, float beta);
int ad_cpu_linear(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *w,
                  const ad_tensor *bias);
int ad_cpu_conv1d(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *w,
                  const ad_tensor *bias, int stride, int padding);

int ad_cpu_gelu(ad_backend *be, ad_tensor *y, const ad_tensor *x);
int ad_cpu_silu_mul(ad_backend *be, ad_tensor *y, const ad_tensor *gate, const ad_tensor *up);
int ad_cpu_add(ad_backend *be, ad_tensor *y, const ad_tensor *a, const ad_tensor *b);
int ad_cpu_linear_residual(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *w,
                           const ad_tensor *bias, const ad_tensor *residual);
int ad_cpu_layernorm(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *weight,
                     const ad_tensor *bias, float eps);
int ad_cpu_rmsnorm(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *weight,
                   float eps);
int ad_cpu_softmax(ad_backend *be, ad_tensor *y, const ad_tensor *x);

int ad_cpu_rope(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *positions,
                int n_heads, int head_dim, float theta);
int ad_cpu_attention(ad_backend *be, ad_tensor *out, const ad_tensor *q, const ad_tensor *k,
                     const ad_tensor *v, const ad_attention_params *params);
int ad_cpu_avg_pool1d(ad_backend *be, ad_tensor *y, const ad_tensor *x, int kernel, int stride);
int ad_cpu_embedding(ad_backend *be, ad_tensor *y, const ad_tensor *table, const ad_tensor *ids);
int ad_cpu_scatter_rows(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *rows);
int ad_cpu_transpose(ad_backend *be, ad_tensor *y, const ad_tensor *x);

#endif
