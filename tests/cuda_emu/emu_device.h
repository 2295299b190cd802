/* The device side of the CPU emulator of the CUDA backend (tests/cuda_emu): what a kernel
 * sees when a .cu file of cuda/, rewritten by translate.py, is compiled as host C++ and
 * force-included with this header. The toolkit's own headers give the types (cudaError_t,
 * __nv_bfloat16 and its host conversions, the cuBLASLt API); this adds the built-in variables, the
 * warp and block primitives and the atomics the kernels use.
 *
 * Every thread of a block is a fiber on one host thread (emu_runtime.cpp): a thread runs until
 * it reaches a barrier (__syncthreads, a warp shuffle or exchange) or returns, then the next one
 * runs; one warp at a time runs up to a __syncthreads before the next warp starts, so data one warp
 * reads from another without a barrier between is stale here.
 * Shuffles check their mask against the lanes that really arrive, and barriers that only some
 * threads reach are reported, so a kernel that would be undefined on a GPU fails here. */
#ifndef AUDISTILL_CUDA_EMU_DEVICE_H
#define AUDISTILL_CUDA_EMU_DEVICE_H

/* Kernels that use inline PTX (attention_flash.cu's mma.sync) take their emulated twin. */
#define AD_CUDA_EMULATED 1

#include <cublasLt.h>
#include <cublas_v2.h>
#include <cuda_bf16.h>
#include <cuda_fp16.h>
#include <cuda_runtime.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <type_traits>

/* Built-in variables: the scheduler sets them before it switches to a thread. */
extern uint3 ad_emu_thread_idx, ad_emu_block_idx;
extern dim3 ad_emu_block_dim, ad_emu_grid_dim;
/* launch bounds guide nvcc's register allocation; the emulator has none to guide */
#ifndef __launch_bounds__
#define __launch_bounds__(...)
#endif

#define threadIdx ad_emu_thread_idx
#define blockIdx  ad_emu_block_idx
#define blockDim  ad_emu_block_dim
#define gridDim   ad_emu_grid_dim
static const int warpSize = 32;

/* Runs `body` (a call of the kernel) once per thread of every block, synchronously. Launch
 * configuration errors are returned by the next cudaGetLastError, as on a GPU. */
void ad_emu_launch_impl(const void *kernel, const char *name, dim3 grid, dim3 block, size_t smem,
                        void (*body)(void *), void *ctx);
template <typename F>
static inline void ad_emu_launch(const void *kernel, const char *name, dim3 grid, dim3 block,
                                 size_t smem, F &&body) {
    typedef typename std::remove_reference<F>::type Fn;
    ad_emu_launch_impl(
        kernel, name, grid, block, smem, [](void *c) { (*(Fn *)c)(); }, (void *)&body);
}

/* The runtime's C++ overload for kernels (nvcc declares it; a host compiler does not). */
template <typename T>
static inline cudaError_t cudaFuncSetAttribute(T *kernel, cudaFuncAttribute attr, int value) {
    return cudaFuncSetAttribute((const void *)kernel, attr, value);
}

void *ad_emu_dynamic_shared(void);
void ad_emu_shared_fresh(void *p, size_t bytes);

void ad_emu_syncthreads(const char *file, int line);
/* Stops the program naming the kernel and block, as a GPU's fault would (emulated
 * instructions that check their operands, e.g. ldmatrix's 16-byte row alignment). */
[[noreturn]] void ad_emu_kernel_fault(const char *what);
#define __syncthreads() ad_emu_syncthreads(__FILE__, __LINE__)

/* cp.async (bytes from global to shared memory, zeros when !valid), commit_group and
 * wait_group, per thread: a copy lands at the wait that covers it, not before. */
void ad_emu_copy_async(void *dst, const void *src, int bytes, bool valid);
void ad_emu_copy_commit(void);
void ad_emu_copy_wait(int pending);

/* One shuffle of 8 raw bytes among the lanes of `mask`; kind: 0 index, 1 xor, 2 down, 3 up. */
uint64_t ad_emu_shuffle(unsigned mask, uint64_t bits, int kind, int arg, int width);

/* A warp-wide exchange: every lane of the warp (all 32 must take part, as .aligned instructions
 * and full-mask shuffles require) gives `bytes` (at most AD_EMU_GATHER_MAX) and gets back all 32
 * lanes' bytes, lane l's at l * bytes, valid until its next barrier, shuffle or exchange. The
 * emulated mma.sync and ldmatrix and the emulated branches of the backend's warp reductions and
 * broadcasts (cuda_internal.h) use it: one wait instead of a shuffle per value moved. */
#define AD_EMU_GATHER_MAX 64
const void *ad_emu_warp_gather(const void *mine, int bytes);

template <typename T> static inline T ad_emu_shfl(unsigned mask, T v, int kind, int arg, int w) {
    static_assert(sizeof(T) <= 8, "shuffles move at most 8 bytes");
    uint64_t bits = 0;
    memcpy(&bits, &v, sizeof v);
    bits = ad_emu_shuffle(mask, bits, kind, arg, w);
    T r;
    memcpy(&r, &bits, sizeof r);
    return r;
}
template <typename T> static inline T __shfl_sync(unsigned mask, T v, int src, int w = 32) {
    return ad_emu_shfl(mask, v, 0, src, w);
}
template <typename T> static inline T __shfl_xor_sync(unsigned mask, T v, int lm, int w = 32) {
    return ad_emu_shfl(mask, v, 1, lm, w);
}
template <typename T> static inline T __shfl_down_sync(unsigned mask, T v, unsigned d, int w = 32) {
    return ad_emu_shfl(mask, v, 2, (int)d, w);
}
template <typename T> static inline T __shfl_up_sync(unsigned mask, T v, unsigned d, int w = 32) {
    return ad_emu_shfl(mask, v, 3, (int)d, w);
}

/* Threads of a block never run at the same time, so read-modify-write is atomic. */
template <typename T> static inline T atomicAdd(T *p, T v) {
    T old = *p;
    *p = old + v;
    return old;
}
template <typename T> static inline T atomicMin(T *p, T v) {
    T old = *p;
    if (v < old) *p = v;
    return old;
}
template <typename T> static inline T atomicMax(T *p, T v) {
    T old = *p;
    if (v > old) *p = v;
    return old;
}

static inline float __uint_as_float(unsigned u) {
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}
static inline unsigned __float_as_uint(float f) {
    unsigned u;
    memcpy(&u, &f, sizeof u);
    return u;
}
static inline float rsqrtf(float x) {
    return 1.0f / sqrtf(x);
}
static inline double rsqrt(double x) {
    return 1.0 / sqrt(x);
}
static inline float __fdividef(float a, float b) {
    return a / b;
}
/* A GPU faults on an access not aligned to its size (a vector load of 8 or 16 bytes is one
 * instruction); x86 does not, so the emulator checks: a fast path taken on a misaligned address
 * stops here, in CI, instead of first on a GPU. cuda_internal.h's cu_vload / cu_vstore call it. */
#define AD_EMU_ALIGNMENT_CHECKS 1
static inline void ad_emu_check_aligned(const void *p, size_t bytes, const char *what) {
    if ((uintptr_t)p % bytes != 0) {
        char msg[128];
        snprintf(msg, sizeof msg, "misaligned %zu-byte %s at %p", bytes, what, p);
        ad_emu_kernel_fault(msg);
    }
}
template <typename T> static inline T __ldg(const T *p) {
    ad_emu_check_aligned(p, alignof(T), "__ldg");
    return *p;
}
static inline int min(int a, int b) {
    return a < b ? a : b;
}
static inline int max(int a, int b) {
    return a > b ? a : b;
}
static inline long long min(long long a, long long b) {
    return a < b ? a : b;
}
static inline long long max(long long a, long long b) {
    return a > b ? a : b;
}

#endif
