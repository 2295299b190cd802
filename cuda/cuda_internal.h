/* Shared plumbing of the CUDA backend (C++ / nvcc only): its private state (cuBLASLt handle,
 * workspace, grow-only device scratch), the argument checks every op runs before launching,
 * strided row/view descriptors passed to kernels by value, dtype loads/stores, and the entry
 * points of each op family (the table in backend.cu points at them). Nothing here computes an
 * op.
 *
 * All work goes to the legacy default stream, so ops are ordered with each other and with the
 * synchronous cudaMemcpy of upload/download; a multi-stream version is later work. */
#ifndef AUDISTILL_CUDA_INTERNAL_H
#define AUDISTILL_CUDA_INTERNAL_H

#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <math.h>
#include <stdint.h>
#include <string.h>

extern "C" {
#include "backend/backend.h"
#include "backend/cuda_sizes.h"
#include "backend/op_check.h"
}
#include "backend_cuda.h"
#include "cuda_check.h"

/* Scratch slots: an op may use several at once, so each has a fixed purpose. */
enum {
    CU_SCRATCH_B = 0,   /* GEMM operand B converted to f32 (weight tiles) */
    CU_SCRATCH_A,       /* GEMM operand A converted to f32 */
    CU_SCRATCH_COLS,    /* conv1d im2col */
    CU_SCRATCH_DCOLS,   /* conv1d_backward column gradients */
    CU_SCRATCH_STATS,   /* per-row statistics (norm backward, attention backward, loss rows) */
    CU_SCRATCH_PARTIAL, /* column-sum partials */
    CU_SCRATCH_BIAS,    /* a GEMM bias widened to the f32 output's dtype */
    CU_SCRATCH_WIDE_Y,  /* a narrow GEMM output with a wider bias, computed in f32 first */
    CU_SCRATCH_STAGE,   /* download staging (contiguous copy of a strided tensor) */
    CU_SCRATCH_ATT_S,   /* attention through GEMMs: scores / probabilities, f32 */
    CU_SCRATCH_ATT_DP,  /* attention backward through GEMMs: dP, then dS, f32 */
    CU_SCRATCH_ATT_P16, /* probabilities as bf16 GEMM operands */
    CU_SCRATCH_ATT_D16, /* dS as a bf16 GEMM operand */
    CU_SCRATCH_ATT_Q,   /* q, k, v, dO converted to the GEMM operand dtype */
    CU_SCRATCH_ATT_K,
    CU_SCRATCH_ATT_V,
    CU_SCRATCH_ATT_DO,
    CU_SCRATCH_SLOTS
};

#define CU_LT_WORKSPACE_BYTES AD_CUDA_LT_WORKSPACE_BYTES

struct cu_algo_cache; /* gemm.cu */

/* A key_len table on the device with its host copy (attention.cu): every attention call of a
 * layer stack passes the same few tables, so they are uploaded (a synchronous copy, which
 * drains the queue) once per content, not once per call. */
#define CU_KEY_LEN_TABLES 4
typedef struct {
    int *dev, *host;
    int64_t n, cap;
    unsigned long long used; /* for least-recently-used replacement */
} cu_key_len_table;

/* GEMM tuning's choice of the flash kernels' switches for one attention shape
 * (attention_flash.cu): the variants compute the same bits, so only speed decides. */
#define CU_FLASH_CHOICES 32
typedef struct {
    bool used, pipe_off, two_blocks;
    int64_t key[10];
} cu_flash_choice;

typedef struct {
    int device;
    cublasLtHandle_t lt;
    struct cu_algo_cache *algos; /* the cuBLASLt heuristic's answers per GEMM problem */
    void *workspace;
    void *scratch[CU_SCRATCH_SLOTS];
    size_t scratch_bytes[CU_SCRATCH_SLOTS];
    unsigned long long *flag;   /* device word for index checks (smallest bad position) */
    bool bf16_gemm;             /* ad_cuda_set_bf16_matmul: f32 GEMM operands rounded to bf16 */
    bool gemm_tune;             /* ad_cuda_set_gemm_tuning: time the heuristic's answers */
    int attention_path;         /* ad_cuda_set_attention_path: AD_CUDA_ATTENTION_* */
    bool flash_pipe_off;        /* AUDISTILL_CUDA_FLASH_PIPE=0 */
    bool flash_d128_two_blocks; /* AUDISTILL_CUDA_FLASH_D128_BLOCKS=2 */
    bool flash_switches_fixed;  /* either variable set: tuning leaves the switches alone */
    cu_flash_choice flash_choices[CU_FLASH_CHOICES]; /* tuning's switches per flash shape */
    long flash_tuned, flash_changed;                 /* shapes timed, and kept other switches */
    cudaEvent_t tune_start, tune_stop;               /* cu_tune_time's, made on first use */
    long attention_gemm_calls;                       /* ad_cuda_attention_gemm_calls */
    long attention_flash_calls;                      /* ad_cuda_attention_flash_calls */
    long attention_decode_calls;                     /* ad_cuda_attention_decode_calls */
    int cc_major;                   /* compute capability (the flash kernels need 8 or more) */
    size_t attention_scratch_bytes; /* per score buffer of the GEMM path */
    cu_key_len_table key_lens[CU_KEY_LEN_TABLES];
    unsigned long long key_len_clock;
    long key_len_uploads; /* ad_cuda_key_len_uploads */
} cu_impl;

static inline cu_impl *cu_of(ad_backend *be) {
    return (cu_impl *)be->impl;
}

/* A grow-only device buffer of at least `bytes` in `slot`, owned by the backend (kept for the
 * next call, so a steady-state step allocates nothing). Contents are undefined. */
int cu_scratch(ad_backend *be, int slot, size_t bytes, void **out);

/* ---- dtype masks and checks ---------------------------------------------------------------- */
#define CU_M(dt) (1u << (dt))
#define CU_F32   CU_M(AD_F32)
#define CU_ACT   (CU_M(AD_F32) | CU_M(AD_BF16)) /* activations */
#define CU_FLOAT (CU_M(AD_F32) | CU_M(AD_BF16) | CU_M(AD_F16))
#define CU_I32   CU_M(AD_I32)

/* Non-NULL, on the CUDA device, not packed, dtype in `mask`. */
int cu_check(const char *op, const char *role, const ad_tensor *t, unsigned mask);

/* ---- kernel-side descriptors --------------------------------------------------------------- */
/* A tensor as rows x cols (cols = last dim, unit stride; rows = the leading dims, merged where
 * contiguous). Strides in elements. */
typedef struct {
    char *base;
    int dtype;
    int nlead;
    int64_t rows, cols;
    int64_t shape[AD_MAX_DIMS], stride[AD_MAX_DIMS];
} cu_rows;

void cu_rows_of(const ad_tensor *t, cu_rows *r);

#if defined(__CUDA_ARCH__)
#define CU_UNROLL _Pragma("unroll")
#else
#define CU_UNROLL /* host passes: nothing to unroll for */
#endif

/* The dims loops below are unrolled over AD_MAX_DIMS so that every array index is a constant:
 * a run-time index into a kernel parameter's array makes the compiler copy the whole struct to
 * each thread's stack (288 bytes per thread for the elementwise kernels, which held them near
 * 300 GB/s on an H100). */
__host__ __device__ static inline int64_t cu_row_off(const cu_rows &r, int64_t i) {
    if (r.nlead <= 1) return i * r.stride[0];
    int64_t off = 0;
    CU_UNROLL
    for (int d = AD_MAX_DIMS - 1; d >= 0; d--) {
        if (d >= r.nlead) continue;
        off += (i % r.shape[d]) * r.stride[d];
        i /= r.shape[d];
    }
    return off;
}

/* Any strided tensor up to 4-D. */
typedef struct {
    char *data;
    int dtype;
    int ndim;
    int64_t shape[AD_MAX_DIMS], stride[AD_MAX_DIMS];
} cu_view;

void cu_view_of(const ad_tensor *t, cu_view *v);

__host__ __device__ static inline int64_t cu_view_off(const cu_view &v, int64_t i) {
    int64_t off = 0;
    CU_UNROLL
    for (int d = AD_MAX_DIMS - 1; d >= 0; d--) {
        if (d >= v.ndim) continue;
        off += (i % v.shape[d]) * v.stride[d];
        i /= v.shape[d];
    }
    return off;
}

__device__ static inline float cu_load(const void *p, int dt, int64_t i) {
    if (dt == AD_F32) return ((const float *)p)[i];
    if (dt == AD_BF16) return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    return __half2float(((const __half *)p)[i]);
}

/* 2^x by the special-function unit alone (ex2.approx.ftz: 2 ulp; results below 2^-126 flushed
 * to 0; 2^-inf = 0). expf would add a range reduction of about seven instructions, exp in
 * double about twenty double-precision ones. */
__device__ static inline float cu_exp2_approx(float x) {
#if defined(__CUDA_ARCH__) && !defined(AD_CUDA_EMULATED)
    float y;
    asm("ex2.approx.ftz.f32 %0, %1;" : "=f"(y) : "f"(x));
    return y;
#else
    return exp2f(x);
#endif
}

/* bf16/f16 stores round to nearest even, as the host conversions do. */
__device__ static inline void cu_store(void *p, int dt, int64_t i, float v) {
    if (dt == AD_F32)
        ((float *)p)[i] = v;
    else if (dt == AD_BF16)
        ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn(v);
    else
        ((__half *)p)[i] = __float2half_rn(v);
}

/* Two floats as packed bf16, rounded as cu_store rounds, the lower index in the low half (the
 * layout of a bf16x2 register and of two consecutive bf16 in memory). */
__device__ static inline uint32_t cu_bf16_pair(float lo, float hi) {
    const __nv_bfloat16 a = __float2bfloat16_rn(lo), b = __float2bfloat16_rn(hi);
    unsigned short x, y;
    memcpy(&x, &a, sizeof x);
    memcpy(&y, &b, sizeof y);
    return (uint32_t)x | ((uint32_t)y << 16);
}

/* One access of sizeof(V) bytes at p (V: float2/4, uint2/4, uint32_t ...: one instruction on
 * the GPU, which faults unless p is aligned to sizeof(V)); the emulator checks that alignment
 * (ad_emu_check_aligned), so every vector fast path goes through these. */
template <typename V> __device__ static inline V cu_vload(const void *p) {
#ifdef AD_EMU_ALIGNMENT_CHECKS
    ad_emu_check_aligned(p, sizeof(V), "vector load");
#endif
    return *(const V *)p;
}
template <typename V> __device__ static inline void cu_vstore(void *p, const V &v) {
#ifdef AD_EMU_ALIGNMENT_CHECKS
    ad_emu_check_aligned(p, sizeof(V), "vector store");
#endif
    *(V *)p = v;
}

/* The two floats of a packed bf16 pair (cu_bf16_pair's layout): the lower index, the higher. */
__device__ static inline float cu_bf16_low(uint32_t u) {
    return __uint_as_float(u << 16);
}
__device__ static inline float cu_bf16_high(uint32_t u) {
    return __uint_as_float(u & 0xffff0000u);
}

static inline int cu_esize(ad_dtype dt) {
    return ad_dtype_bits(dt) / 8;
}

/* Deterministic reductions: xor-shuffle trees have a fixed order, so sums do not depend on
 * scheduling. Block versions need blockDim.x a multiple of 32 and `shm` of 32 elements; the
 * result is returned to every thread. */
struct cu_op_add {
    template <typename T> __device__ T operator()(T a, T b) const {
        return a + b;
    }
};
struct cu_op_max {
    __device__ float operator()(float a, float b) const {
        return fmaxf(a, b);
    }
};

/* The xor-shuffle tree: lane l combines its value with lane l ^ o's, o = 16, 8, .., 1. */
template <typename T, typename Op> __device__ static inline T cu_warp_tree(T v, Op op) {
#if defined(AD_CUDA_EMULATED)
    /* The same tree from one warp-wide exchange (five shuffles cost the emulator five switches
     * through the warp): y[m] holds the value lane l ^ m has at each level, and only the 31
     * nodes lane l's result depends on are computed, in the shuffles' operand order. */
    const T *all = (const T *)ad_emu_warp_gather(&v, (int)sizeof v);
    const int lane = threadIdx.x & 31;
    T y[32];
    for (int m = 0; m < 32; m++)
        y[m] = all[lane ^ m];
    for (int o = 16; o > 0; o >>= 1)
        for (int m = 0; m < o; m++)
            y[m] = op(y[m], y[m + o]);
    return y[0];
#else
    for (int o = 16; o > 0; o >>= 1)
        v = op(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
#endif
}

template <typename T> __device__ static inline T cu_warp_sum(T v) {
    return cu_warp_tree(v, cu_op_add());
}

__device__ static inline float cu_warp_max(float v) {
    return cu_warp_tree(v, cu_op_max());
}

/* Each lane's value of v, for loops that broadcast the lanes' values in turn: values[j] is
 * lane j's v, in every lane (a shuffle per read; one exchange on the emulator, where each
 * shuffle would cost a switch through all 32 lanes). */
template <typename T> struct cu_warp_values {
#if defined(AD_CUDA_EMULATED)
    T all[32];
    __device__ explicit cu_warp_values(T v) {
        memcpy(all, ad_emu_warp_gather(&v, (int)sizeof v), sizeof all);
    }
    __device__ T operator[](int lane) const {
        return all[lane];
    }
#else
    T v;
    __device__ explicit cu_warp_values(T value) : v(value) {}
    __device__ T operator[](int lane) const {
        return __shfl_sync(0xffffffffu, v, lane);
    }
#endif
};

template <typename T> __device__ static inline T cu_block_sum(T v, T *shm) {
    v = cu_warp_sum(v);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads(); /* shm may still be read by a previous reduction */
    if (lane == 0) shm[warp] = v;
    __syncthreads();
    T r = lane < nw ? shm[lane] : T(0);
    return cu_warp_sum(r);
}

__device__ static inline float cu_block_max(float v, float *shm) {
    v = cu_warp_max(v);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    __syncthreads();
    if (lane == 0) shm[warp] = v;
    __syncthreads();
    float r = lane < nw ? shm[lane] : -INFINITY;
    return cu_warp_max(r);
}

/* Threads for a block that works on one row of `cols` columns: `most` (a multiple of 32) for
 * rows of at least 4 * most columns, fewer for narrower rows, down to one warp: at least 4
 * columns per thread, so that threads without a column do not wait at every barrier of the
 * row's reductions. */
static inline int cu_row_threads(int64_t cols, int most) {
    const int64_t t = (cols + 4 * 32 - 1) / (4 * 32) * 32;
    return t < most ? (int)t : most;
}

/* Blocks for a grid-stride loop over n items. */
static inline unsigned cu_blocks(int64_t n, int block) {
    int64_t b = (n + block - 1) / block;
    if (b < 1) b = 1;
    if (b > (1 << 20)) b = 1 << 20;
    return (unsigned)b;
}

#define CU_GRID_STRIDE(i, n)                                                                       \
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < (n);                      \
         i += (int64_t)gridDim.x * blockDim.x)

/* Index checks without a round trip per element: kernels record the smallest bad position in
 * the backend's flag word; cu_index_flag_result downloads it (one sync) and fails naming the
 * op, tensor and value. */
int cu_index_flag_reset(ad_backend *be);
int cu_index_flag_result(ad_backend *be, const char *op, const ad_tensor *idx, const char *what);

/* Fails naming `what` unless every id is in [0, hi) (negative ids allowed with skip_negative). */
int cu_check_ids(ad_backend *be, const char *op, const ad_tensor *ids, int64_t hi,
                 bool skip_negative, const char *what);

__device__ static inline void cu_flag_bad(unsigned long long *flag, int64_t pos) {
    atomicMin(flag, (unsigned long long)pos);
}

/* ---- GEMM (gemm.cu), shared with conv1d and quant --------------------------------------- */
/* A tensor as a 2-D matrix (leading dims flattened), row-major with leading dimension ld,
 * possibly a transposed view (trans: stored = logical^T). */
typedef struct {
    char *data;
    ad_dtype dtype;
    int64_t rows, cols, ld;
    bool trans;
} cu_mat;

int cu_mat_of(const char *op, const ad_tensor *t, cu_mat *m);
/* Y[M, N] = alpha * op(A) @ op(B) + beta * Y with fp32 accumulation; bias (dtype of Y, length
 * N, may be NULL) added once. Mixed operand dtypes are converted to f32 in tiles. */
int cu_gemm(ad_backend *be, const char *op, const cu_mat *Y, const cu_mat *A, bool ta,
            const cu_mat *B, bool tb, float alpha, float beta, const ad_tensor *bias);
/* `count` GEMMs of one shape, operand i at its data + i * stride elements (stride 0 repeats
 * one matrix): Y_i = alpha * op(A_i) @ op(B_i) + beta * Y_i. Operands of one dtype (f32, or
 * bf16/f16 into f32 or the same dtype); no conversion, no bias. */
/* y = A B + bias, and + C (Y's dtype and shape, not Y) as cuBLASLt's C operand where the
 * product is one call with C laid out like y: *fused says whether C was added. */
int cu_gemm_residual(ad_backend *be, const char *op, const cu_mat *Y, const cu_mat *A, bool ta,
                     const cu_mat *B, bool tb, const ad_tensor *bias, const cu_mat *C, bool *fused);
int cu_gemm_batched(ad_backend *be, const char *op, const cu_mat *Y, int64_t y_stride,
                    const cu_mat *A, int64_t a_stride, bool ta, const cu_mat *B, int64_t b_stride,
                    bool tb, int count, float alpha, float beta);
void cu_gemm_cache_free(cu_impl *impl);
/* Milliseconds per call of fn(ctx) on the default stream: one untimed call, then a few between
 * two events (GEMM tuning). */
int cu_tune_time(cu_impl *impl, int (*fn)(void *), void *ctx, float *ms);
/* Frees the device key_len tables (attention.cu). */
void cu_key_len_free(cu_impl *impl);
/* out[c] += sum over rows of src[r, c] (src any float dtype, row stride ld), in a fixed order:
 * deterministic, no atomics. */
int cu_colsum_accumulate(ad_backend *be, float *out, const void *src, ad_dtype dtype, int64_t rows,
                         int64_t cols, int64_t ld);

/* ---- attention through batched GEMMs (attention_gemm.cu) ------------------------------- */
/* Whether this call goes through the GEMMs (ad_cuda_set_attention_path; by default for
 * training-size query counts whose scores fit the scratch budget, with outputs in f32 or the
 * GEMM operand dtype). Arguments already checked by the caller; key_len on the device. */
bool cu_attention_gemm_suits(ad_backend *be, const ad_tensor *q, const ad_tensor *k,
                             const ad_attention_params *p, const ad_tensor *const *outputs,
                             int n_outputs);
int cu_attention_gemm(ad_backend *be, ad_tensor *out, const ad_tensor *q, const ad_tensor *k,
                      const ad_tensor *v, const ad_attention_params *p, const int *key_len);
int cu_attention_backward_gemm(ad_backend *be, ad_tensor *dq, ad_tensor *dk, ad_tensor *dv,
                               const ad_tensor *dout, const ad_tensor *out, const ad_tensor *q,
                               const ad_tensor *k, const ad_tensor *v, const ad_attention_params *p,
                               const int *key_len);

/* Dynamic shared memory of a kernel, with the opt-in above 48 KiB. */
template <typename K> static int cu_smem_for(K kernel, size_t bytes) {
    if (bytes > (size_t)48 * 1024)
        CUDA_TRY(
            cudaFuncSetAttribute(kernel, cudaFuncAttributeMaxDynamicSharedMemorySize, (int)bytes));
    return AD_OK;
}

/* ---- attention's kernel arguments (attention.cu, attention_flash.cu) ---------------------- */
/* q, k, v (and the backward's forward output o and its gradient dout) as [B, T, heads * D]
 * views: data, dtype, batch and time strides in elements. */
typedef struct {
    const char *q, *k, *v, *o, *dout;
    int qdt, kdt, vdt, odt, ddt;
    int64_t qb, qt, kb, kt, vb, vt, ob, ot, db, dt;
    int64_t Tq, Tk;
    int H, KVH, D, q_offset;
    bool causal;
    float scale;
    const int *key_len; /* device, B ints, or NULL */
    float *saved_lse;   /* ad_attention_params.softmax_stats' data [B, H, Tq], or NULL */
} cu_attn_args;

/* ---- flash attention on the tensor cores (attention_flash.cu) ---------------------------- */
/* Whether this call of Tq query rows goes through the flash kernels: a head dim of 16, 32, 64
 * or 128 on sm_80 or newer, and either forced (ad_cuda_set_attention_path) or AUTO under bf16
 * GEMMs for at least AD_CUDA_ATTENTION_MIN_ROWS rows. Arguments checked by the caller, which built
 * `a` (o and dout set for the backward). */
bool cu_attention_flash_suits(ad_backend *be, const ad_attention_params *p, int64_t Tq);
int cu_attention_flash(ad_backend *be, ad_tensor *out, const cu_attn_args *a);
int cu_attention_backward_flash(ad_backend *be, ad_tensor *dq, ad_tensor *dk, ad_tensor *dv,
                                const cu_attn_args *a);

/* ---- quantized weights (quant.cu) ------------------------------------------------------- */
/* The device parts of an AD_QGROUP weight tensor (its `quant`), checked against its shape. */
int cu_quant_view(const char *op, const ad_tensor *w, ad_cuda_quant_weight *out);
/* embedding with a quantized table: the rows dequantized as ad_quant_dequantize_rows does. */
int cu_quant_embedding(ad_backend *be, ad_tensor *y, const ad_tensor *table, const ad_tensor *ids);

/* ---- op entry points ------------------------------------------------------------------------ */
int cu_alloc(ad_backend *be, size_t bytes, void **out);
void cu_release(ad_backend *be, void *ptr);
int cu_upload(ad_backend *be, ad_tensor *dst, const ad_tensor *src_host);
int cu_download(ad_backend *be, ad_tensor *dst_host_f32, const ad_tensor *src);
int cu_copy(ad_backend *be, ad_tensor *dst, const ad_tensor *src);
int cu_fill(ad_backend *be, ad_tensor *dst, float value);

int cu_matmul(ad_backend *be, ad_tensor *y, const ad_tensor *a, bool transpose_a,
              const ad_tensor *b, bool transpose_b, float alpha, float beta);
int cu_linear(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *w,
              const ad_tensor *bias);
int cu_linear_residual(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *w,
                       const ad_tensor *bias, const ad_tensor *residual);
int cu_linear_backward(ad_backend *be, ad_tensor *dx, ad_tensor *dw, ad_tensor *db,
                       const ad_tensor *dy, const ad_tensor *x, const ad_tensor *w,
                       bool dw_overwrite);
int cu_conv1d(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *w,
              const ad_tensor *bias, int stride, int padding);
int cu_conv1d_backward(ad_backend *be, ad_tensor *dx, ad_tensor *dw, ad_tensor *db,
                       const ad_tensor *dy, const ad_tensor *x, const ad_tensor *w, int stride,
                       int padding);

int cu_gelu(ad_backend *be, ad_tensor *y, const ad_tensor *x);
int cu_silu_mul(ad_backend *be, ad_tensor *y, const ad_tensor *gate, const ad_tensor *up);
int cu_add(ad_backend *be, ad_tensor *y, const ad_tensor *a, const ad_tensor *b);
int cu_softmax(ad_backend *be, ad_tensor *y, const ad_tensor *x);
int cu_transpose(ad_backend *be, ad_tensor *y, const ad_tensor *x);
int cu_gelu_backward(ad_backend *be, ad_tensor *dx, const ad_tensor *dy, const ad_tensor *x);
int cu_silu_mul_backward(ad_backend *be, ad_tensor *dgate, ad_tensor *dup, const ad_tensor *dy,
                         const ad_tensor *gate, const ad_tensor *up);

int cu_layernorm(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *weight,
                 const ad_tensor *bias, float eps);
int cu_rmsnorm(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *weight,
               float eps);
int cu_layernorm_backward(ad_backend *be, ad_tensor *dx, ad_tensor *dweight, ad_tensor *dbias,
                          const ad_tensor *dy, const ad_tensor *x, const ad_tensor *weight,
                          float eps, bool dx_accumulate);
int cu_rmsnorm_backward(ad_backend *be, ad_tensor *dx, ad_tensor *dweight, const ad_tensor *dy,
                        const ad_tensor *x, const ad_tensor *weight, float eps, bool dx_accumulate);

int cu_rope(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *positions,
            int n_heads, int head_dim, float theta);
int cu_rope_backward(ad_backend *be, ad_tensor *dx, const ad_tensor *positions, int n_heads,
                     int head_dim, float theta);

int cu_attention(ad_backend *be, ad_tensor *out, const ad_tensor *q, const ad_tensor *k,
                 const ad_tensor *v, const ad_attention_params *params);
int cu_attention_backward(ad_backend *be, ad_tensor *dq, ad_tensor *dk, ad_tensor *dv,
                          const ad_tensor *dout, const ad_tensor *out, const ad_tensor *q,
                          const ad_tensor *k, const ad_tensor *v, const ad_attention_params *p);

int cu_avg_pool1d(ad_backend *be, ad_tensor *y, const ad_tensor *x, int kernel, int stride);
int cu_avg_pool1d_backward(ad_backend *be, ad_tensor *dx, const ad_tensor *dy, int kernel,
                           int stride);
int cu_embedding(ad_backend *be, ad_tensor *y, const ad_tensor *table, const ad_tensor *ids);
int cu_embedding_backward(ad_backend *be, ad_tensor *dtable, const ad_tensor *dy,
                          const ad_tensor *ids);
int cu_scatter_rows(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *rows);
int cu_gather_rows(ad_backend *be, ad_tensor *dx, const ad_tensor *dy, const ad_tensor *rows);

int cu_distill_loss(ad_backend *be, ad_tensor *grad, const ad_tensor *student_logits,
                    const ad_tensor *teacher_logits, const ad_tensor *targets,
                    const ad_distill_params *params, ad_distill_sums *sums);

int cu_sum_squares(ad_backend *be, const ad_tensor *const *xs, int count, double *out);
int cu_scale_op(ad_backend *be, ad_tensor *x, float s);
int cu_adamw(ad_backend *be, ad_tensor *w, const ad_tensor *g, ad_tensor *m, ad_tensor *v,
             const ad_adamw_params *p, ad_tensor *w_bf16);

#endif
