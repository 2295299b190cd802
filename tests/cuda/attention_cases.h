/* The attention cases of test_cuda_ops.c (forward) and test_cuda_backward.c, and how each runs
 * through both CUDA paths: the tiled kernels, the batched GEMMs, and the GEMMs with bf16
 * operands (bf16 tolerance against the fp32 CPU). */
#ifndef AUDISTILL_TESTS_CUDA_ATTENTION_CASES_H
#define AUDISTILL_TESTS_CUDA_ATTENTION_CASES_H

#include "cuda_test_util.h"

typedef struct {
    const char *what;
    int64_t B, Tq, Tk;
    int H, KVH, D;
    bool causal;
    int q_offset;
    const int *key_len;
    ad_dtype dt;
} attn_case;

/* Tolerance of a case: fp32 at TOL_F32, bf16 tensors at TOL_BF16, and 2e-2 with bf16 GEMMs,
 * where a gradient passes through four bf16-rounded products (S, P, dP, dS): over 80 random
 * seeds on the emulator dQ and dK reached 9.5e-3. */
static inline double attention_tolerance(const attn_case *ac, bool bf16_gemm) {
    return bf16_gemm ? 2e-2 : ac->dt == AD_F32 ? TOL_F32 : TOL_BF16;
}

static inline const char *attention_path_name(int path) {
    return path == AD_CUDA_ATTENTION_KERNEL ? " [kernel]"
           : path == AD_CUDA_ATTENTION_GEMM ? " [GEMM]"
                                            : "";
}

/* Forces the path and the GEMM precision; returns the GEMM-path calls so far. */
static inline long attention_path_begin(int path, bool bf16_gemm) {
    CHECK_OK(ad_cuda_set_attention_path(g_gpu, path));
    CHECK_OK(ad_cuda_set_bf16_matmul(g_gpu, bf16_gemm));
    return ad_cuda_attention_gemm_calls(g_gpu);
}

/* The forced path must be the one taken: the GEMMs write f32 or their operand dtype, and fall
 * back to the kernels when the scores would not fit the scratch (`falls_back`). Then the
 * defaults again. */
static inline void attention_path_end(const attn_case *ac, int path, bool bf16_gemm,
                                      long calls_before, bool falls_back) {
    const bool gemm_expected =
        path == AD_CUDA_ATTENTION_GEMM && (ac->dt == AD_F32 || bf16_gemm) && !falls_back;
    CHECK_MSG((ad_cuda_attention_gemm_calls(g_gpu) > calls_before) == gemm_expected,
              "%s: attention went through the %s path", ac->what,
              gemm_expected ? "kernel, not the GEMM" : "GEMM, not the kernel");
    CHECK_OK(ad_cuda_set_attention_path(g_gpu, AD_CUDA_ATTENTION_AUTO));
    CHECK_OK(ad_cuda_set_bf16_matmul(g_gpu, false));
}

#endif
