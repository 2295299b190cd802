/* Checked wrappers for CUDA runtime and cuBLAS calls: a failing call records which call, where
 * and why through ad_fail() and makes the enclosing function return AD_ERR, in one place. */
#ifndef AUDISTILL_CUDA_CHECK_H
#define AUDISTILL_CUDA_CHECK_H

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_runtime.h>

#include "core/error.h"

#define CUDA_TRY(call)                                                                             \
    do {                                                                                           \
        cudaError_t err_ = (call);                                                                 \
        if (err_ != cudaSuccess)                                                                   \
            return ad_fail("%s:%d: %s failed: %s", __FILE__, __LINE__, #call,                      \
                           cudaGetErrorString(err_));                                              \
    } while (0)

/* After a kernel launch: launch-configuration errors surface here. */
#define CUDA_TRY_LAUNCH() CUDA_TRY(cudaGetLastError())

/* cuBLAS and cuBLASLt share cublasStatus_t. */
#define CUBLAS_TRY(call)                                                                           \
    do {                                                                                           \
        cublasStatus_t st_ = (call);                                                               \
        if (st_ != CUBLAS_STATUS_SUCCESS)                                                          \
            return ad_fail("%s:%d: %s failed: %s (%d)", __FILE__, __LINE__, #call,                 \
                           cublasGetStatusString(st_), (int)st_);                                  \
    } while (0)

#endif
