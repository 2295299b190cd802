/* The attention cases of test_cuda_ops.c (forward) and test_cuda_backward.c, and how each runs
 * through the CUDA paths: the tiled kernels, the batched GEMMs, the GEMMs with bf16 operands
 * and the flash kernels on the tensor cores (both bf16 tolerance against the fp32 CPU). */
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
    int kv_col_offset; /* forward cases: k and v start this many columns into their cache rows */
} attn_case;

/* The flash kernels exist for these head dims; others fall back to AUTO's choice. */
static inline bool attention_flash_applies(const attn_case *ac) {
    return ac->D == 16 || ac->D == 32 || ac->D == 64 || ac->D == 128;
}

/* Tolerance of a case: fp32 at TOL_F32, bf16 tensors at TOL_BF16, and 2e-2 with bf16 operands
 * (bf16 GEMMs, or the flash kernels), where a gradient passes through four bf16-rounded products
 * (S, P, dP, dS): over 80 random seeds on the emulator dQ and dK reached 9.5e-3. */
static inline double attention_tolerance(const attn_case *ac, int path, bool bf16_gemm) {
    if (bf16_gemm || (path == AD_CUDA_ATTENTION_FLASH && attention_flash_applies(ac))) return 2e-2;
    return ac->dt == AD_F32 ? TOL_F32 : TOL_BF16;
}

static inline const char *attention_path_name(int path) {
    return path == AD_CUDA_ATTENTION_KERNEL  ? " [kernel]"
           : path == AD_CUDA_ATTENTION_GEMM  ? " [GEMM]"
           : path == AD_CUDA_ATTENTION_FLASH ? " [flash]"
                                             : " [auto]";
}

/* AUTO's choice, written out from backend_cuda.h's contract: the flash kernels under bf16 GEMMs
 * for training-size query counts where a kernel exists for the head dim. */
static inline bool attention_auto_takes_flash(const attn_case *ac, bool bf16_gemm) {
    return bf16_gemm && attention_flash_applies(ac) && ac->Tq >= 16;
}

typedef struct {
    long gemm, flash, decode;
} attention_calls;

/* Forces the path and the GEMM precision; returns each path's calls so far. */
static inline attention_calls attention_path_begin(int path, bool bf16_gemm) {
    CHECK_OK(ad_cuda_set_attention_path(g_gpu, path));
    CHECK_OK(ad_cuda_set_bf16_matmul(g_gpu, bf16_gemm));
    attention_calls c = {ad_cuda_attention_gemm_calls(g_gpu), ad_cuda_attention_flash_calls(g_gpu),
                         ad_cuda_attention_decode_calls(g_gpu)};
    return c;
}

/* The forced path must be the one taken: the GEMMs write f32 or their operand dtype, and fall
 * back to the kernels when the scores would not fit the scratch (`falls_back`); the flash
 * kernels take the head dims they have. Then the defaults again. */
static inline void attention_path_end(const attn_case *ac, int path, bool bf16_gemm,
                                      attention_calls before, bool falls_back) {
    const bool flash_expected =
        (path == AD_CUDA_ATTENTION_FLASH && attention_flash_applies(ac)) ||
        (path == AD_CUDA_ATTENTION_AUTO && attention_auto_takes_flash(ac, bf16_gemm));
    const bool gemm_expected =
        path == AD_CUDA_ATTENTION_GEMM && (ac->dt == AD_F32 || bf16_gemm) && !falls_back;
    CHECK_MSG((ad_cuda_attention_flash_calls(g_gpu) > before.flash) == flash_expected,
              "%s%s: attention %s the flash kernels", ac->what, attention_path_name(path),
              flash_expected ? "did not go through" : "went through");
    /* (a head dim without flash kernels, and AUTO without them, take the GEMMs or the kernels:
     * the GEMM cases above cover that choice) */
    if (flash_expected || (path != AD_CUDA_ATTENTION_FLASH && path != AD_CUDA_ATTENTION_AUTO))
        CHECK_MSG((ad_cuda_attention_gemm_calls(g_gpu) > before.gemm) == gemm_expected,
                  "%s: attention went through the %s path", ac->what,
                  gemm_expected ? "kernel, not the GEMM" : "GEMM, not the kernel");
    CHECK_OK(ad_cuda_set_attention_path(g_gpu, AD_CUDA_ATTENTION_AUTO));
    CHECK_OK(ad_cuda_set_bf16_matmul(g_gpu, false));
}

#endif
