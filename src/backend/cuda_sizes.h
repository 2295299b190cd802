/* Sizes of the CUDA backend's own buffers, shared with the memory plan (src/train/memory_plan.c)
 * so that the plan counts what cuda/ allocates. Plain C: CPU-only builds plan CUDA jobs too. */
#ifndef AUDISTILL_BACKEND_CUDA_SIZES_H
#define AUDISTILL_BACKEND_CUDA_SIZES_H

#include <stdbool.h>
#include <stddef.h>

/* cuBLASLt workspace: what its heuristics ask for on Hopper for large GEMMs. */
#define AD_CUDA_LT_WORKSPACE_BYTES ((size_t)32 << 20)
/* Floats of an f32 copy of a bf16 weight converted per GEMM call (fp32 GEMMs). */
#define AD_CUDA_GEMM_TILE_FLOATS ((size_t)32 << 20)
/* Default bytes of each score buffer of attention's GEMM path (ad_cuda_set_attention_scratch). */
#define AD_CUDA_ATTENTION_SCRATCH_BYTES ((size_t)256 << 20)
/* The environment variable that sets every new CUDA backend's attention path. */
#define AD_CUDA_ATTENTION_ENV "AUDISTILL_CUDA_ATTENTION"
/* Set to 0, new CUDA backends load the flash kernels' key tiles without the cp.async pipe (a
 * diagnostic: the same numbers, the pipe's share of the time). */
#define AD_CUDA_FLASH_PIPE_ENV "AUDISTILL_CUDA_FLASH_PIPE"
/* "2" or "3" (the default): the blocks per SM the head-dim-128 flash forward kernel is compiled
 * for; 2 leaves it 255 registers instead of 168 (no spills), at two thirds of the warps. A
 * diagnostic for the GPU check, as the pipe switch is. */
#define AD_CUDA_FLASH_D128_BLOCKS_ENV "AUDISTILL_CUDA_FLASH_D128_BLOCKS"

/* Set to 1, new CUDA backends tune their GEMMs (ad_cuda_set_gemm_tuning). */
#define AD_CUDA_GEMM_TUNE_ENV "AUDISTILL_CUDA_GEMM_TUNE"

/* Query rows from which AUTO leaves attention's tiled kernels (decoding steps) for the batched
 * GEMMs or, under bf16 GEMMs, the flash kernels. */
#define AD_CUDA_ATTENTION_MIN_ROWS 16

/* The head dims the flash attention kernels have (cuda/attention_flash.cu, a template each). */
static inline bool ad_cuda_flash_head_dim(int head_dim) {
    return head_dim == 16 || head_dim == 32 || head_dim == 64 || head_dim == 128;
}

#endif
