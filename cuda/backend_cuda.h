/* The CUDA backend: device discovery and the kernels in cuda/, exposed to C code. Every
 * function returns AD_OK/AD_ERR with a message (CUDA errors included) through ad_error(). The
 * op table (src/backend/backend.h) for CUDA is assembled from these kernels. */
#ifndef AUDISTILL_CUDA_BACKEND_CUDA_H
#define AUDISTILL_CUDA_BACKEND_CUDA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Inside the C linkage block: these C headers have no guards of their own. */
#include "backend/backend.h"
#include "compress/quant.h"

/* The CUDA backend on GPU `device`: every op of backend.h. Activations may be F32 or BF16
 * tensors (act_dtype is BF16, the dtype model code should allocate); all arithmetic
 * accumulates in fp32. GEMMs go through cuBLASLt with fp32 compute (never TF32), so F32
 * tensors give fp32 results comparable with the CPU reference. */
int ad_backend_cuda_create(ad_backend **out, int device);
/* Mixed precision for training (off by default): every GEMM with an f32 output rounds its f32
 * operands to bf16 and multiplies on the tensor cores with fp32 accumulation, as PyTorch's bf16
 * autocast does. Parity with the CPU reference drops from ~1e-6 to bf16 rounding (~1e-2
 * normwise); speed rises several times. */
int ad_cuda_set_bf16_matmul(ad_backend *be, bool on);
/* How attention runs. AUTO (the default): training-size sequences through the flash kernels
 * under bf16 GEMMs (where FLASH applies), else through batched GEMMs (scores materialised per
 * head block, every FLOP on cuBLASLt); decoding steps and sequences too long for the score
 * scratch through the tiled kernels. KERNEL and GEMM force one path
 * where it applies (GEMM still falls back when the scores would not fit); tests compare them.
 * FLASH: flash attention on the tensor cores (bf16 operands whatever the GEMM precision, head
 * dims 16/32/64/128, sm_80+; other calls take AUTO's choice). The environment variable
 * AUDISTILL_CUDA_ATTENTION=auto|kernel|gemm|flash sets the path of every new backend. */
enum {
    AD_CUDA_ATTENTION_AUTO = 0,
    AD_CUDA_ATTENTION_KERNEL = 1,
    AD_CUDA_ATTENTION_GEMM = 2,
    AD_CUDA_ATTENTION_FLASH = 3
};
int ad_cuda_set_attention_path(ad_backend *be, int path);
/* "auto", "kernel", "gemm" or "flash" to AD_CUDA_ATTENTION_*; -1 for anything else. */
int ad_cuda_attention_path_of(const char *name);
/* Attention calls (forward and backward) that went through the GEMMs so far: lets tests see
 * which path ran. */
long ad_cuda_attention_gemm_calls(ad_backend *be);
/* The same for the flash kernels. */
long ad_cuda_attention_flash_calls(ad_backend *be);
/* Forward calls that went through the decoding kernel (one or two query rows per batch element,
 * K and V of one dtype, neither the flash kernels nor the GEMMs chosen). */
long ad_cuda_attention_decode_calls(ad_backend *be);
/* How many key_len tables attention has copied to the device: one per distinct content among
 * the last few (a layer stack's calls share one), -1 if `be` is not a CUDA backend. */
long ad_cuda_key_len_uploads(ad_backend *be);
/* Bytes of each score buffer of the GEMM path (default 256 MiB): heads go through it in blocks
 * that fit, and a sequence whose one head (GQA: one group) does not fit uses the kernels. */
int ad_cuda_set_attention_scratch(ad_backend *be, size_t bytes);
/* GEMM problems whose cuBLASLt algorithm came from the backend's cache (hits) or from the
 * heuristic (misses) so far. */
int ad_cuda_gemm_cache_stats(ad_backend *be, long *hits, long *misses);
/* GEMM tuning (off by default; the environment variable AUDISTILL_CUDA_GEMM_TUNE=1 turns it on
 * for every new backend). On, each GEMM problem's first call that may run more than once times
 * up to 8 of cuBLASLt's heuristic answers on its real operands and keeps the fastest; a problem
 * with a bias is also timed with the bias written first instead of the library's epilogue. The
 * flash attention kernels' switches are timed per shape the same way (unless
 * AUDISTILL_CUDA_FLASH_PIPE or AUDISTILL_CUDA_FLASH_D128_BLOCKS fixes them).
 * Costs some milliseconds per problem once; results may differ in the last bits between runs
 * whose timings chose differently (a run with tuning off repeats bit for bit). */
int ad_cuda_set_gemm_tuning(ad_backend *be, bool on);
typedef struct {
    long problems;   /* GEMM problems tuned */
    long candidates; /* algorithms timed */
    long changed;    /* problems whose fastest answer was not the heuristic's first */
    long bias_first; /* bias problems that write the bias first */
    double first_ms; /* summed over the tuned problems: one call with the heuristic's first */
    double best_ms;  /* ... and with the chosen answer */
    /* Flash attention shapes (forward and backward apart) whose kernel switches (the cp.async
     * pipe, two blocks per SM at head dim 128) tuning timed, and how many kept other switches
     * than the defaults; the switches compute the same bits, so this never changes a result. */
    long attention_problems, attention_changed;
} ad_cuda_gemm_tuning;
int ad_cuda_gemm_tuning_stats(ad_backend *be, ad_cuda_gemm_tuning *out);
/* The tuned choices, kept across processes (a resumed run computes with the algorithms the
 * first one chose). Save writes every tuned problem's choice to `path` atomically when some were
 * made since the last save or load (*saved: how many, 0 when nothing new). Load takes a file's
 * choices for problems this backend has not met: they are used as tuned ones, tuning on or off
 * (*loaded: how many; -1 and a warning when the file was made on another GPU model or cuBLASLt
 * version, whose algorithms may not exist here). A damaged file is an error. */
int ad_cuda_gemm_tuning_save(ad_backend *be, const char *path, long *saved);
int ad_cuda_gemm_tuning_load(ad_backend *be, const char *path, long *loaded);

/* AD_OK when at least one usable GPU is present; otherwise AD_ERR and a one-line reason. */
int ad_cuda_available(void);
/* "NVIDIA H100 80GB HBM3, sm_90, 79.1 GiB" into buf. */
int ad_cuda_describe(int device, char *buf, size_t size);

int ad_cuda_malloc(void **ptr, size_t bytes);
void ad_cuda_free(void *ptr);
int ad_cuda_memcpy_h2d(void *dst, const void *src, size_t bytes);
int ad_cuda_memcpy_d2h(void *dst, const void *src, size_t bytes);
int ad_cuda_synchronize(void);
/* An NVTX range (Nsight Systems timelines; free when no tool is attached). */
void ad_cuda_range_push(const char *name);
void ad_cuda_range_pop(void);
/* Device memory free and total now (cudaMemGetInfo): with arenas planned up front, total - free
 * after the first step is the peak. */
int ad_cuda_memory_info(size_t *free_bytes, size_t *total_bytes);

/* Casts on device memory, n elements; round to nearest even like ad_f32_to_bf16. */
int ad_cuda_cast_f32_to_bf16(uint16_t *dst, const float *src, int64_t n);
int ad_cuda_cast_bf16_to_f32(float *dst, const uint16_t *src, int64_t n);

/* ---- optimizer (no op in the table yet) -------------------------------------------------
 * One AdamW step over flat fp32 device buffers, exactly the update of ad_adamw_step
 * (src/train/optim.c): decoupled weight decay (applied when `decay`), moments, bias
 * corrections for step t (1-based). The gradient is read as grad * grad_scale (clipping fused:
 * the bits of ad_cuda_scale first; 1 for none). With param_bf16 non-NULL the updated weights
 * are also written there rounded to bf16 (the bf16 copy a GEMM reads), in the same pass. */
int ad_cuda_adamw_step(float *param, const float *grad, float *m, float *v, int64_t n, double lr,
                       double beta1, double beta2, double eps, double weight_decay, bool decay,
                       int64_t t, float grad_scale, uint16_t *param_bf16);
/* Sum of squares of n device floats into *out (host), in a fixed order (deterministic). */
int ad_cuda_sum_squares(const float *x, int64_t n, double *out);
/* Global L2 norm of `count` device gradient buffers: per-buffer sums added in list order,
 * as ad_grad_norm. */
int ad_cuda_grad_norm(float *const *grads, const int64_t *n, int count, double *norm);
/* x *= scale over n device floats (gradient clipping). */
int ad_cuda_scale(float *x, int64_t n, float scale);

/* ---- group-quantized weights (src/compress/quant.h format) on the device ------------------ */
typedef struct {
    ad_quant_spec spec;
    int64_t rows, cols;     /* the dequantized weight is [rows, cols] = [N, K] */
    const uint8_t *codes;   /* device, rows * ad_quant_row_bytes */
    const uint16_t *scales; /* device f16, rows * cols / group_size */
    const uint8_t *zeros;   /* device, rows * groups; NULL when symmetric */
} ad_cuda_quant_weight;

/* y[M, N] = x[M, K] @ W^T + bias with W dequantized on the fly in row tiles (never whole).
 * x and y F32 or BF16 CUDA tensors; bias [N] (dtype of y) or NULL. */
int ad_cuda_quant_linear(ad_backend *be, ad_tensor *y, const ad_tensor *x,
                         const ad_cuda_quant_weight *w, const ad_tensor *bias);

#ifdef __cplusplus
}
#endif

#endif
