// Dtype casts between fp32 and bf16 on the device, bit-identical to the host's
// ad_f32_to_bf16 / ad_bf16_to_f32 (round to nearest even, NaN kept quiet).
#include <stdint.h>

#include "backend_cuda.h"
#include "cuda_check.h"

#define CAST_BLOCK 256

__device__ static uint16_t f32_to_bf16_rne(float f) {
    uint32_t bits = __float_as_uint(f);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40u);
    uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)((bits + rounding) >> 16);
}

__global__ static void cast_f32_to_bf16_kernel(uint16_t *dst, const float *src, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = f32_to_bf16_rne(src[i]);
}

__global__ static void cast_bf16_to_f32_kernel(float *dst, const uint16_t *src, int64_t n) {
    for (int64_t i = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; i < n;
         i += (int64_t)gridDim.x * blockDim.x)
        dst[i] = __uint_as_float((uint32_t)src[i] << 16);
}

static unsigned grid_for(int64_t n) {
    int64_t blocks = (n + CAST_BLOCK - 1) / CAST_BLOCK;
    return (unsigned)(blocks > 65535 ? 65535 : (blocks < 1 ? 1 : blocks));
}

extern "C" int ad_cuda_cast_f32_to_bf16(uint16_t *dst, const float *src, int64_t n) {
    if (n <= 0) return AD_OK;
    cast_f32_to_bf16_kernel<<<grid_for(n), CAST_BLOCK>>>(dst, src, n);
    CUDA_TRY_LAUNCH();
    return AD_OK;
}

extern "C" int ad_cuda_cast_bf16_to_f32(float *dst, const uint16_t *src, int64_t n) {
    if (n <= 0) return AD_OK;
    cast_bf16_to_f32_kernel<<<grid_for(n), CAST_BLOCK>>>(dst, src, n);
    CUDA_TRY_LAUNCH();
    return AD_OK;
}
