/* Checked wrappers for CUDA runtime and cuBLAS calls: a failing call records which call, where
 * and why through ad_fail() and makes the enclosing function return AD_ERR, in one place. */
#ifndef AUDISTILL_CUDA_CHECK_H
#define AUDISTILL_CUDA_CHECK_H

#include <cuda_runtime.h>

#include "core/error.h"

#define CUDA_TRY(call)                                                                     \
    do {                                                                                   \
        cudaError_t err_ = (call);                                                         \
        if (err_ != cudaSuccess)                                                           \
            return ad_fail("%s:%d: %s failed: %s", __FILE__, __LINE__, #call,              \
                           cudaGetErrorString(err_));                                      \
    } while (0)

/* After a kernel launch: launch-configuration errors surface here. */
#define CUDA_TRY_LAUNCH() CUDA_TRY(cudaGetLastError())

#endif
