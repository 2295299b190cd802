// The CUDA backend: creation (the op table, cuBLASLt handle, workspace), its scratch buffers,
// the argument checks shared by its ops, and the memory ops (alloc, release, upload,
// download). Compute ops live in one .cu per family (gemm, conv, norm, elementwise, rope,
// attention, pool_embed, loss); the optimizer and quantized matmul are extra functions in
// backend_cuda.h because the table has no op for them yet.
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "cuda_internal.h"

/* ---- scratch ---------------------------------------------------------------------------- */

int cu_scratch(ad_backend *be, int slot, size_t bytes, void **out) {
    cu_impl *impl = cu_of(be);
    if (bytes == 0) bytes = 1;
    if (impl->scratch_bytes[slot] < bytes) {
        if (impl->scratch[slot]) CUDA_TRY(cudaFree(impl->scratch[slot]));
        impl->scratch[slot] = NULL;
        impl->scratch_bytes[slot] = 0;
        /* Grow geometrically so slowly increasing sequence lengths do not reallocate often. */
        size_t want = bytes + bytes / 4;
        if (want < bytes) want = bytes;
        void *p = NULL;
        cudaError_t err = cudaMalloc(&p, want);
        if (err != cudaSuccess)
            return ad_fail("CUDA backend: cannot allocate %zu bytes of scratch: %s", want,
                           cudaGetErrorString(err));
        impl->scratch[slot] = p;
        impl->scratch_bytes[slot] = want;
    }
    *out = impl->scratch[slot];
    return AD_OK;
}

/* ---- checks ------------------------------------------------------------------------------ */

static void mask_names(unsigned mask, char *buf, size_t size) {
    buf[0] = '\0';
    for (int d = 0; d < AD_DTYPE_COUNT; d++)
        if (mask & CU_M(d)) {
            size_t len = strlen(buf);
            snprintf(buf + len, size - len, "%s%s", len ? " or " : "", ad_dtype_name((ad_dtype)d));
        }
}

int cu_check(const char *op, const char *role, const ad_tensor *t, unsigned mask) {
    if (!t) return ad_fail("%s: tensor '%s' is NULL", op, role);
    if (t->ndim < 0 || t->ndim > AD_MAX_DIMS)
        return ad_fail("%s: tensor %s (%s) has %d dims", op, t->name, role, t->ndim);
    if (t->device != AD_DEVICE_CUDA)
        return ad_op_fail_tensor(op, t, "(%s) is not on the CUDA device", role);
    if ((unsigned)t->dtype >= AD_DTYPE_COUNT || !(mask & CU_M(t->dtype))) {
        char names[96];
        mask_names(mask, names, sizeof names);
        return ad_op_fail_tensor(op, t, "(%s) expected dtype %s", role, names);
    }
    for (int d = 0; d < t->ndim; d++)
        if (t->shape[d] < 0) return ad_op_fail_tensor(op, t, "(%s) has a negative size", role);
    if (!t->data && ad_tensor_numel(t) > 0)
        return ad_op_fail_tensor(op, t, "(%s) has no data", role);
    return AD_OK;
}

/* ---- descriptors ------------------------------------------------------------------------- */

void cu_rows_of(const ad_tensor *t, cu_rows *r) {
    memset(r, 0, sizeof *r);
    r->base = (char *)t->data;
    r->dtype = t->dtype;
    r->nlead = ad_op_lead_dims(t, 1, r->shape, r->stride, &r->rows, &r->cols);
}

void cu_view_of(const ad_tensor *t, cu_view *v) {
    memset(v, 0, sizeof *v);
    v->data = (char *)t->data;
    v->dtype = t->dtype;
    v->ndim = t->ndim;
    for (int d = 0; d < t->ndim; d++) {
        v->shape[d] = t->shape[d];
        v->stride[d] = t->stride[d];
    }
    if (v->ndim == 0) {
        v->ndim = 1;
        v->shape[0] = 1;
        v->stride[0] = 1;
    }
}

/* ---- index checks ------------------------------------------------------------------------- */

int cu_index_flag_reset(ad_backend *be) {
    CUDA_TRY(cudaMemset(cu_of(be)->flag, 0xff, sizeof(unsigned long long)));
    return AD_OK;
}

int cu_index_flag_result(ad_backend *be, const char *op, const ad_tensor *idx, const char *what) {
    unsigned long long pos = 0;
    CUDA_TRY(cudaMemcpy(&pos, cu_of(be)->flag, sizeof pos, cudaMemcpyDeviceToHost));
    if (pos == ~0ull) return AD_OK;
    int32_t value = 0;
    CUDA_TRY(
        cudaMemcpy(&value, (const int32_t *)idx->data + pos, sizeof value, cudaMemcpyDeviceToHost));
    return ad_op_fail_tensor(op, idx, "element %llu = %d is outside %s", pos, value, what);
}

/* ---- memory ops -------------------------------------------------------------------------- */

int cu_alloc(ad_backend *be, size_t bytes, void **out) {
    *out = NULL;
    CUDA_TRY(cudaSetDevice(cu_of(be)->device));
    cudaError_t err = cudaMalloc(out, bytes ? bytes : 1);
    if (err != cudaSuccess) {
        *out = NULL;
        return ad_fail("CUDA backend: cannot allocate %zu bytes: %s", bytes,
                       cudaGetErrorString(err));
    }
    CUDA_TRY(cudaMemset(*out, 0, bytes ? bytes : 1));
    return AD_OK;
}

void cu_release(ad_backend *be, void *ptr) {
    (void)be;
    if (ptr) cudaFree(ptr);
}

static bool is_float(ad_dtype d) {
    return d == AD_F32 || d == AD_BF16 || d == AD_F16;
}

/* Host conversion of n contiguous f32 values into dtype `dt` at dst. */
static void host_from_f32(void *dst, ad_dtype dt, const float *src, int64_t n) {
    if (dt == AD_F32) {
        memcpy(dst, src, (size_t)n * sizeof(float));
    } else if (dt == AD_BF16) {
        uint16_t *d = (uint16_t *)dst;
        for (int64_t i = 0; i < n; i++)
            d[i] = ad_f32_to_bf16(src[i]);
    } else {
        uint16_t *d = (uint16_t *)dst;
        for (int64_t i = 0; i < n; i++)
            d[i] = ad_f32_to_f16(src[i]);
    }
}

int cu_upload(ad_backend *be, ad_tensor *dst, const ad_tensor *src) {
    const char *op = "upload";
    if (!dst || !src) return ad_fail("upload: NULL tensor");
    if (dst->device != AD_DEVICE_CUDA || src->device != AD_DEVICE_CPU)
        return ad_op_fail_tensor(op, dst, "must be a CUDA tensor and the source %s a host tensor",
                                 src->name);
    AD_TRY(cu_check(op, "dst", dst, CU_FLOAT | CU_I32 | CU_M(AD_U8) | CU_M(AD_I8)));
    AD_TRY(ad_op_check_same_shape(op, dst, src));
    AD_TRY(ad_op_check_contiguous(op, dst));
    (void)be;
    const int64_t n = ad_tensor_numel(src);
    if (n == 0) return AD_OK;
    if (dst->dtype == src->dtype && ad_tensor_is_contiguous(src)) {
        CUDA_TRY(cudaMemcpy(dst->data, src->data, ad_tensor_nbytes(src), cudaMemcpyHostToDevice));
        return AD_OK;
    }
    const bool floats = is_float(dst->dtype) && is_float(src->dtype);
    const bool ints = dst->dtype == AD_I32 && (src->dtype == AD_I32 || src->dtype == AD_I64);
    if (!floats && !ints) {
        char desc[160];
        return ad_op_fail_tensor(op, dst,
                                 "cannot upload %s into it (supported: the same dtype, "
                                 "F32/BF16/F16 -> F32/BF16/F16, I32/I64 -> I32)",
                                 ad_tensor_describe(src, desc, sizeof desc));
    }
    /* Convert on the host into a staging buffer of the device dtype, then one copy. The f32
     * values go first: after 2n bytes of bf16 (n odd) a float would be misaligned. */
    const size_t bytes = (size_t)n * (size_t)cu_esize(dst->dtype);
    void *buf = ad_malloc((size_t)n * sizeof(float) + bytes, "upload staging");
    if (!buf) return AD_ERR;
    float *f32 = (float *)buf;
    void *stage = (char *)buf + (size_t)n * sizeof(float);
    int rc = AD_OK;
    if (floats) {
        rc = ad_tensor_to_f32(src, f32);
        if (rc == AD_OK) host_from_f32(stage, dst->dtype, f32, n);
    } else {
        int32_t *out = (int32_t *)stage;
        int64_t idx[AD_MAX_DIMS] = {0};
        for (int64_t i = 0; i < n && rc == AD_OK; i++) {
            const void *p = ad_tensor_at(src, idx);
            int64_t v = src->dtype == AD_I32 ? *(const int32_t *)p : *(const int64_t *)p;
            if (v < INT32_MIN || v > INT32_MAX)
                rc = ad_op_fail_tensor(op, src, "element %lld = %lld does not fit in I32",
                                       (long long)i, (long long)v);
            out[i] = (int32_t)v;
            for (int d = src->ndim - 1; d >= 0; d--) {
                if (++idx[d] < src->shape[d]) break;
                idx[d] = 0;
            }
        }
    }
    if (rc == AD_OK) {
        cudaError_t err = cudaMemcpy(dst->data, stage, bytes, cudaMemcpyHostToDevice);
        if (err != cudaSuccess)
            rc = ad_fail("upload: copying %s to the device failed: %s", dst->name,
                         cudaGetErrorString(err));
    }
    free(buf);
    return rc;
}

int cu_download(ad_backend *be, ad_tensor *dst, const ad_tensor *src) {
    const char *op = "download";
    if (!dst || dst->device != AD_DEVICE_CPU || dst->dtype != AD_F32)
        return ad_fail("download: the destination must be a host F32 tensor");
    AD_TRY(cu_check(op, "src", src, CU_FLOAT | CU_I32));
    AD_TRY(ad_op_check_same_shape(op, dst, src));
    if (!ad_tensor_is_contiguous(dst)) return ad_op_fail_tensor(op, dst, "must be contiguous");
    const int64_t n = ad_tensor_numel(src);
    if (n == 0) return AD_OK;
    /* A strided source is first made contiguous on the device (same dtype). */
    ad_tensor packed = *src;
    if (!ad_tensor_is_contiguous(src)) {
        void *buf;
        AD_TRY(cu_scratch(be, CU_SCRATCH_STAGE, (size_t)n * (size_t)cu_esize(src->dtype), &buf));
        AD_TRY(ad_tensor_init(&packed, buf, src->dtype, AD_DEVICE_CUDA, src->ndim, src->shape,
                              src->name));
        AD_TRY(cu_copy(be, &packed, src));
    }
    if (src->dtype == AD_F32) {
        CUDA_TRY(
            cudaMemcpy(dst->data, packed.data, (size_t)n * sizeof(float), cudaMemcpyDeviceToHost));
        return AD_OK;
    }
    const size_t bytes = (size_t)n * (size_t)cu_esize(src->dtype);
    void *stage = ad_malloc(bytes, "download staging");
    if (!stage) return AD_ERR;
    cudaError_t err = cudaMemcpy(stage, packed.data, bytes, cudaMemcpyDeviceToHost);
    int rc = AD_OK;
    if (err != cudaSuccess) {
        rc = ad_fail("download: copying %s from the device failed: %s", src->name,
                     cudaGetErrorString(err));
    } else {
        ad_tensor host;
        rc = ad_tensor_init(&host, stage, src->dtype, AD_DEVICE_CPU, src->ndim, src->shape,
                            src->name);
        if (rc == AD_OK) rc = ad_tensor_to_f32(&host, (float *)dst->data);
    }
    free(stage);
    return rc;
}

/* ---- the table --------------------------------------------------------------------------- */

static int cu_synchronize(ad_backend *be) {
    (void)be;
    return ad_cuda_synchronize();
}

static int cu_memory_info(ad_backend *be, size_t *free_bytes, size_t *total_bytes) {
    (void)be;
    return ad_cuda_memory_info(free_bytes, total_bytes);
}

static void cu_range_push(ad_backend *be, const char *name) {
    (void)be;
    ad_cuda_range_push(name);
}

static void cu_range_pop(ad_backend *be) {
    (void)be;
    ad_cuda_range_pop();
}

static void cu_destroy(ad_backend *be) {
    if (!be) return;
    cu_impl *impl = cu_of(be);
    if (impl) {
        for (int s = 0; s < CU_SCRATCH_SLOTS; s++)
            if (impl->scratch[s]) cudaFree(impl->scratch[s]);
        if (impl->workspace) cudaFree(impl->workspace);
        if (impl->flag) cudaFree(impl->flag);
        if (impl->lt) cublasLtDestroy(impl->lt);
        cu_gemm_cache_free(impl);
        if (impl->tune_start) cudaEventDestroy(impl->tune_start);
        if (impl->tune_stop) cudaEventDestroy(impl->tune_stop);
        cu_key_len_free(impl);
    }
    free(impl);
    free(be);
}

static int cu_set_attention(ad_backend *be, const char *path) {
    const int p = ad_cuda_attention_path_of(path);
    if (p < 0)
        return ad_fail("attention path '%s': expected auto, kernel, gemm or flash",
                       path ? path : "(null)");
    return ad_cuda_set_attention_path(be, p);
}

/* A diagnostic switch: unset, empty or `usual` leaves *on false; `other` sets it. */
static int env_switch(const char *name, const char *usual, const char *other, bool *on) {
    const char *v = getenv(name);
    if (v && *v && strcmp(v, usual) != 0 && strcmp(v, other) != 0)
        return ad_fail("%s=%s: expected %s or %s", name, v, other, usual);
    *on = v && strcmp(v, other) == 0;
    return AD_OK;
}

static int setup(cu_impl *impl) {
    CUDA_TRY(cudaSetDevice(impl->device));
    CUBLAS_TRY(cublasLtCreate(&impl->lt));
    CUDA_TRY(cudaMalloc(&impl->workspace, CU_LT_WORKSPACE_BYTES));
    CUDA_TRY(cudaMalloc((void **)&impl->flag, sizeof(unsigned long long)));
    cudaDeviceProp prop;
    CUDA_TRY(cudaGetDeviceProperties(&prop, impl->device));
    impl->cc_major = prop.major;
    const char *path = getenv(AD_CUDA_ATTENTION_ENV);
    if (path && *path) {
        impl->attention_path = ad_cuda_attention_path_of(path);
        if (impl->attention_path < 0)
            return ad_fail("%s=%s: expected auto, kernel, gemm or flash", AD_CUDA_ATTENTION_ENV,
                           path);
    }
    AD_TRY(env_switch(AD_CUDA_FLASH_PIPE_ENV, "1", "0", &impl->flash_pipe_off));
    AD_TRY(env_switch(AD_CUDA_GEMM_TUNE_ENV, "0", "1", &impl->gemm_tune));
    const char *pipe = getenv(AD_CUDA_FLASH_PIPE_ENV),
               *blocks = getenv(AD_CUDA_FLASH_D128_BLOCKS_ENV);
    impl->flash_switches_fixed = (pipe && *pipe) || (blocks && *blocks);
    return env_switch(AD_CUDA_FLASH_D128_BLOCKS_ENV, "3", "2", &impl->flash_d128_two_blocks);
}

extern "C" int ad_backend_cuda_create(ad_backend **out, int device) {
    *out = NULL;
    AD_TRY(ad_cuda_available());
    int count = 0;
    CUDA_TRY(cudaGetDeviceCount(&count));
    if (device < 0 || device >= count)
        return ad_fail("CUDA backend: device %d does not exist (%d present)", device, count);
    ad_backend *be = (ad_backend *)ad_calloc(1, sizeof *be, "the CUDA backend");
    if (!be) return AD_ERR;
    cu_impl *impl = (cu_impl *)ad_calloc(1, sizeof *impl, "the CUDA backend");
    if (!impl) {
        free(be);
        return AD_ERR;
    }
    impl->device = device;
    impl->attention_scratch_bytes = AD_CUDA_ATTENTION_SCRATCH_BYTES;
    be->impl = impl;
    if (setup(impl) < 0) {
        cu_destroy(be);
        return ad_fail_context("CUDA backend on device %d", device);
    }
    cudaDeviceProp prop;
    const cudaError_t err = cudaGetDeviceProperties(&prop, device);
    if (err != cudaSuccess) {
        cu_destroy(be);
        return ad_fail("CUDA backend on device %d: %s", device, cudaGetErrorString(err));
    }
    snprintf(be->device_name, sizeof be->device_name, "%s", prop.name);
    be->name = "cuda";
    be->device = AD_DEVICE_CUDA;
    be->act_dtype = AD_BF16;
    be->alloc = cu_alloc;
    be->release = cu_release;
    be->upload = cu_upload;
    be->download = cu_download;
    be->copy = cu_copy;
    be->fill = cu_fill;
    be->synchronize = cu_synchronize;
    be->memory_info = cu_memory_info;
    be->range_push = cu_range_push;
    be->range_pop = cu_range_pop;
    be->set_bf16_matmul = ad_cuda_set_bf16_matmul;
    be->set_attention = cu_set_attention;
    be->set_gemm_tuning = ad_cuda_set_gemm_tuning;
    be->save_gemm_tuning = ad_cuda_gemm_tuning_save;
    be->load_gemm_tuning = ad_cuda_gemm_tuning_load;
    be->matmul = cu_matmul;
    be->linear = cu_linear;
    be->linear_residual = cu_linear_residual;
    be->conv1d = cu_conv1d;
    be->gelu = cu_gelu;
    be->silu_mul = cu_silu_mul;
    be->add = cu_add;
    be->layernorm = cu_layernorm;
    be->rmsnorm = cu_rmsnorm;
    be->softmax = cu_softmax;
    be->rope = cu_rope;
    be->attention = cu_attention;
    be->avg_pool1d = cu_avg_pool1d;
    be->embedding = cu_embedding;
    be->scatter_rows = cu_scatter_rows;
    be->transpose = cu_transpose;
    be->linear_backward = cu_linear_backward;
    be->conv1d_backward = cu_conv1d_backward;
    be->gelu_backward = cu_gelu_backward;
    be->silu_mul_backward = cu_silu_mul_backward;
    be->layernorm_backward = cu_layernorm_backward;
    be->rmsnorm_backward = cu_rmsnorm_backward;
    be->rope_backward = cu_rope_backward;
    be->attention_backward = cu_attention_backward;
    be->avg_pool1d_backward = cu_avg_pool1d_backward;
    be->embedding_backward = cu_embedding_backward;
    be->gather_rows = cu_gather_rows;
    be->distill_loss = cu_distill_loss;
    be->sum_squares = cu_sum_squares;
    be->scale = cu_scale_op;
    be->adamw = cu_adamw;
    be->destroy = cu_destroy;
    *out = be;
    return AD_OK;
}

extern "C" int ad_cuda_set_attention_path(ad_backend *be, int path) {
    if (!be || be->device != AD_DEVICE_CUDA)
        return ad_fail("ad_cuda_set_attention_path: not a CUDA backend");
    if (path < AD_CUDA_ATTENTION_AUTO || path > AD_CUDA_ATTENTION_FLASH)
        return ad_fail("ad_cuda_set_attention_path: unknown path %d", path);
    cu_of(be)->attention_path = path;
    return AD_OK;
}

extern "C" int ad_cuda_set_attention_scratch(ad_backend *be, size_t bytes) {
    if (!be || be->device != AD_DEVICE_CUDA)
        return ad_fail("ad_cuda_set_attention_scratch: not a CUDA backend");
    cu_of(be)->attention_scratch_bytes = bytes;
    return AD_OK;
}

extern "C" long ad_cuda_attention_gemm_calls(ad_backend *be) {
    return be && be->device == AD_DEVICE_CUDA ? cu_of(be)->attention_gemm_calls : -1;
}

extern "C" long ad_cuda_attention_flash_calls(ad_backend *be) {
    return be && be->device == AD_DEVICE_CUDA ? cu_of(be)->attention_flash_calls : -1;
}

extern "C" long ad_cuda_attention_decode_calls(ad_backend *be) {
    return be && be->device == AD_DEVICE_CUDA ? cu_of(be)->attention_decode_calls : -1;
}

extern "C" long ad_cuda_key_len_uploads(ad_backend *be) {
    return be && be->device == AD_DEVICE_CUDA ? cu_of(be)->key_len_uploads : -1;
}

extern "C" int ad_cuda_attention_path_of(const char *name) {
    static const char *const names[] = {"auto", "kernel", "gemm", "flash"};
    for (int i = 0; name && i < 4; i++)
        if (strcmp(name, names[i]) == 0) return i;
    return -1;
}

extern "C" int ad_cuda_set_bf16_matmul(ad_backend *be, bool on) {
    if (!be || be->device != AD_DEVICE_CUDA)
        return ad_fail("ad_cuda_set_bf16_matmul: not a CUDA backend");
    cu_of(be)->bf16_gemm = on;
    return AD_OK;
}
