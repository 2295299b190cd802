// Device discovery and memory for the CUDA backend.
#include <nvtx3/nvToolsExt.h>
#include <stdio.h>

#include "backend_cuda.h"
#include "cuda_check.h"

extern "C" int ad_cuda_available(void) {
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    if (err != cudaSuccess) return ad_fail("no usable CUDA device: %s", cudaGetErrorString(err));
    if (count == 0) return ad_fail("no CUDA device present");
    return AD_OK;
}

extern "C" int ad_cuda_describe(int device, char *buf, size_t size) {
    cudaDeviceProp prop;
    CUDA_TRY(cudaGetDeviceProperties(&prop, device));
    snprintf(buf, size, "%s, sm_%d%d, %.1f GiB", prop.name, prop.major, prop.minor,
             (double)prop.totalGlobalMem / (1024.0 * 1024.0 * 1024.0));
    return AD_OK;
}

extern "C" int ad_cuda_malloc(void **ptr, size_t bytes) {
    CUDA_TRY(cudaMalloc(ptr, bytes));
    CUDA_TRY(cudaMemset(*ptr, 0, bytes));
    return AD_OK;
}

extern "C" void ad_cuda_free(void *ptr) {
    cudaFree(ptr);
}

extern "C" int ad_cuda_memcpy_h2d(void *dst, const void *src, size_t bytes) {
    CUDA_TRY(cudaMemcpy(dst, src, bytes, cudaMemcpyHostToDevice));
    return AD_OK;
}

extern "C" int ad_cuda_memcpy_d2h(void *dst, const void *src, size_t bytes) {
    CUDA_TRY(cudaMemcpy(dst, src, bytes, cudaMemcpyDeviceToHost));
    return AD_OK;
}

extern "C" int ad_cuda_synchronize(void) {
    CUDA_TRY(cudaDeviceSynchronize());
    return AD_OK;
}

extern "C" void ad_cuda_range_push(const char *name) {
    nvtxRangePushA(name);
}

extern "C" void ad_cuda_range_pop(void) {
    nvtxRangePop();
}

extern "C" int ad_cuda_memory_info(size_t *free_bytes, size_t *total_bytes) {
    CUDA_TRY(cudaMemGetInfo(free_bytes, total_bytes));
    return AD_OK;
}
