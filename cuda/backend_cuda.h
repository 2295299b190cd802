/* The CUDA backend: device discovery and the kernels in cuda/, exposed to C code. Every
 * function returns AD_OK/AD_ERR with a message (CUDA errors included) through ad_error(). The
 * op table (src/backend/backend.h) for CUDA is assembled from these kernels. */
#ifndef AUDISTILL_CUDA_BACKEND_CUDA_H
#define AUDISTILL_CUDA_BACKEND_CUDA_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* AD_OK when at least one usable GPU is present; otherwise AD_ERR and a one-line reason. */
int ad_cuda_available(void);
/* "NVIDIA H100 80GB HBM3, sm_90, 79.1 GiB" into buf. */
int ad_cuda_describe(int device, char *buf, size_t size);

int ad_cuda_malloc(void **ptr, size_t bytes);
void ad_cuda_free(void *ptr);
int ad_cuda_memcpy_h2d(void *dst, const void *src, size_t bytes);
int ad_cuda_memcpy_d2h(void *dst, const void *src, size_t bytes);
int ad_cuda_synchronize(void);

/* Casts on device memory, n elements; round to nearest even like ad_f32_to_bf16. */
int ad_cuda_cast_f32_to_bf16(uint16_t *dst, const float *src, int64_t n);
int ad_cuda_cast_bf16_to_f32(float *dst, const uint16_t *src, int64_t n);

#ifdef __cplusplus
}
#endif

#endif
