/* The CPU reference backend: creation (the op table and the thread setup), its scratch
 * buffers, the argument checks shared by its ops, and the memory ops (alloc, upload,
 * download, copy, fill). The compute ops live in cpu_linalg.c, cpu_elementwise.c,
 * cpu_sequence.c, cpu_backward.c and cpu_distill_loss.c.
 *
 * Threads: OpenBLAS here is the pthread build, with its own pool; OpenMP has another. The
 * backend never calls BLAS from inside an OpenMP region, so the two pools take turns instead
 * of oversubscribing the cores, and both are sized to n_threads. (An OpenMP OpenBLAS would
 * share one pool, but the pthread build is what the distribution links.) */
#include <cblas.h>
#include <omp.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_backward.h"
#include "backend/cpu/cpu_distill_loss.h"
#include "backend/cpu/cpu_internal.h"
#include "core/error.h"

/* ---- scratch and allocation ----------------------------------------------------------- */

void *cpu_aligned_zalloc(size_t bytes, const char *what) {
    size_t rounded = (bytes + 63) & ~(size_t)63;
    if (rounded < bytes) {
        ad_fail("out of memory allocating %zu bytes for %s", bytes, what);
        return NULL;
    }
    if (rounded == 0) rounded = 64;
    void *p = aligned_alloc(64, rounded);
    if (!p) {
        ad_fail("out of memory allocating %zu bytes for %s", bytes, what);
        return NULL;
    }
    memset(p, 0, rounded);
    return p;
}

int cpu_scratch(ad_backend *be, int slot, size_t bytes, void **out) {
    cpu_impl *impl = cpu_of(be);
    if (impl->scratch_bytes[slot] < bytes) {
        free(impl->scratch[slot]);
        impl->scratch[slot] = NULL;
        impl->scratch_bytes[slot] = 0;
        /* Grow geometrically so slowly increasing sequence lengths do not reallocate often. */
        size_t want = bytes + bytes / 4;
        if (want < bytes) want = bytes;
        void *p = cpu_aligned_zalloc(want, "CPU backend scratch");
        if (!p) return AD_ERR;
        impl->scratch[slot] = p;
        impl->scratch_bytes[slot] = want;
    }
    *out = impl->scratch[slot];
    return AD_OK;
}

void cpu_blas_threads(ad_backend *be) {
    const int n = cpu_of(be)->n_threads;
    if (openblas_get_num_threads() != n) openblas_set_num_threads(n);
}

int ad_cpu_alloc(ad_backend *be, size_t bytes, void **out) {
    (void)be;
    *out = cpu_aligned_zalloc(bytes, "a CPU backend tensor");
    return *out ? AD_OK : AD_ERR;
}

void ad_cpu_release(ad_backend *be, void *ptr) {
    (void)be;
    free(ptr);
}

/* ---- checks --------------------------------------------------------------------------- */

static int check_present(const char *op, const char *role, const ad_tensor *t) {
    if (!t) return ad_fail("%s: tensor '%s' is NULL", op, role);
    if (t->device != AD_DEVICE_CPU)
        return ad_op_fail_tensor(op, t, "(%s) is not on the CPU device", role);
    if (t->ndim < 0 || t->ndim > AD_MAX_DIMS)
        return ad_fail("%s: tensor %s (%s) has %d dims", op, t->name, role, t->ndim);
    if ((unsigned)t->dtype >= AD_DTYPE_COUNT || ad_dtype_is_packed(t->dtype))
        return ad_op_fail_tensor(op, t, "(%s) has a packed or unknown dtype", role);
    for (int d = 0; d < t->ndim; d++)
        if (t->shape[d] < 0) return ad_op_fail_tensor(op, t, "(%s) has a negative size", role);
    if (!t->data && ad_tensor_numel(t) > 0)
        return ad_op_fail_tensor(op, t, "(%s) has no data", role);
    return AD_OK;
}

int cpu_check_tensor(const char *op, const char *role, const ad_tensor *t, ad_dtype dtype) {
    AD_TRY(check_present(op, role, t));
    if (t->dtype != dtype)
        return ad_op_fail_tensor(op, t, "(%s) expected dtype %s", role, ad_dtype_name(dtype));
    return AD_OK;
}

int cpu_check_weight(const char *op, const char *role, const ad_tensor *t) {
    AD_TRY(check_present(op, role, t));
    if (t->dtype != AD_F32 && t->dtype != AD_BF16 && t->dtype != AD_F16)
        return ad_op_fail_tensor(op, t, "(%s) expected dtype F32, BF16 or F16", role);
    return AD_OK;
}

/* ---- rows and conversions --------------------------------------------------------------- */

void cpu_rows_of(const ad_tensor *t, cpu_rows *r) {
    memset(r, 0, sizeof *r);
    r->base = (char *)t->data;
    r->nlead =
        ad_op_lead_dims(t, ad_dtype_bits(t->dtype) / 8, r->shape, r->stride, &r->rows, &r->cols);
}

void cpu_convert_f32(float *dst, const void *src, ad_dtype dtype, int64_t n) {
    if (dtype == AD_F32) {
        memcpy(dst, src, (size_t)n * sizeof(float));
    } else if (dtype == AD_BF16) {
        /* Inline (vectorizable) rather than a call per element: this runs over whole weight
         * matrices for every BF16 GEMM. */
        const uint16_t *s = src;
        uint32_t *d = (uint32_t *)dst;
        for (int64_t i = 0; i < n; i++)
            d[i] = (uint32_t)s[i] << 16;
    } else {
        const uint16_t *s = src;
        for (int64_t i = 0; i < n; i++)
            dst[i] = ad_f16_to_f32(s[i]);
    }
}

int cpu_param_f32(ad_backend *be, const ad_tensor *t, int slot, const float **out) {
    if (t->dtype == AD_F32 && ad_tensor_is_contiguous(t)) {
        *out = t->data;
        return AD_OK;
    }
    int64_t n = ad_tensor_numel(t);
    void *buf;
    AD_TRY(cpu_scratch(be, slot, (size_t)n * sizeof(float), &buf));
    AD_TRY(ad_tensor_to_f32(t, buf));
    *out = buf;
    return AD_OK;
}

/* ---- memory ops ------------------------------------------------------------------------- */

static bool is_float_dtype(ad_dtype d) {
    return d == AD_F32 || d == AD_BF16 || d == AD_F16;
}

int ad_cpu_upload(ad_backend *be, ad_tensor *dst, const ad_tensor *src) {
    (void)be;
    const char *op = "upload";
    if (!dst || !src) return ad_fail("upload: NULL tensor");
    if (dst->device != AD_DEVICE_CPU || src->device != AD_DEVICE_CPU)
        return ad_op_fail_tensor(op, dst, "source %s and destination must be host tensors",
                                 src->name);
    AD_TRY(ad_op_check_same_shape(op, dst, src));
    if (!ad_tensor_is_contiguous(dst)) return ad_op_fail_tensor(op, dst, "must be contiguous");
    int64_t n = ad_tensor_numel(src);
    if (n == 0) return AD_OK;
    if (dst->dtype == src->dtype && ad_tensor_is_contiguous(src)) {
        memcpy(dst->data, src->data, ad_tensor_nbytes(src));
        return AD_OK;
    }
    if (dst->dtype == AD_F32 && is_float_dtype(src->dtype)) return ad_tensor_to_f32(src, dst->data);
    if (dst->dtype == AD_I32 && (src->dtype == AD_I32 || src->dtype == AD_I64)) {
        int32_t *out = dst->data;
        int64_t idx[AD_MAX_DIMS] = {0};
        for (int64_t i = 0; i < n; i++) {
            const void *p = ad_tensor_at(src, idx);
            int64_t v = src->dtype == AD_I32 ? *(const int32_t *)p : *(const int64_t *)p;
            if (v < INT32_MIN || v > INT32_MAX)
                return ad_op_fail_tensor(op, src, "element %lld = %lld does not fit in I32",
                                         (long long)i, (long long)v);
            out[i] = (int32_t)v;
            for (int d = src->ndim - 1; d >= 0; d--) {
                if (++idx[d] < src->shape[d]) break;
                idx[d] = 0;
            }
        }
        return AD_OK;
    }
    char desc[160];
    return ad_op_fail_tensor(op, dst,
                             "cannot upload %s into it (supported: the same dtype "
                             "contiguous, F32/BF16/F16 -> F32, I32/I64 -> I32)",
                             ad_tensor_describe(src, desc, sizeof desc));
}

int ad_cpu_download(ad_backend *be, ad_tensor *dst, const ad_tensor *src) {
    (void)be;
    const char *op = "download";
    AD_TRY(cpu_check_tensor(op, "dst", dst, AD_F32));
    AD_TRY(check_present(op, "src", src));
    AD_TRY(ad_op_check_same_shape(op, dst, src));
    if (!ad_tensor_is_contiguous(dst)) return ad_op_fail_tensor(op, dst, "must be contiguous");
    return ad_tensor_to_f32(src, dst->data);
}

/* Offsets (in elements) of row r of a shape whose last dim is the row, for one tensor. */
static int64_t row_offset(const ad_tensor *t, int64_t r) {
    int64_t off = 0;
    for (int d = t->ndim - 2; d >= 0; d--) {
        off += (r % t->shape[d]) * t->stride[d];
        r /= t->shape[d];
    }
    return off;
}

int ad_cpu_copy(ad_backend *be, ad_tensor *dst, const ad_tensor *src) {
    const char *op = "copy";
    AD_TRY(check_present(op, "dst", dst));
    AD_TRY(check_present(op, "src", src));
    AD_TRY(ad_op_check_same_shape(op, dst, src));
    const bool same = dst->dtype == src->dtype;
    if (!same && !(dst->dtype == AD_F32 && is_float_dtype(src->dtype))) {
        char desc[160];
        return ad_op_fail_tensor(op, dst,
                                 "cannot copy %s into it (the same dtype, or "
                                 "BF16/F16 -> F32)",
                                 ad_tensor_describe(src, desc, sizeof desc));
    }
    const int64_t n = ad_tensor_numel(dst);
    if (n == 0 || dst->data == src->data) return AD_OK;
    const int64_t cols = dst->ndim ? dst->shape[dst->ndim - 1] : 1, rows = n / cols;
    const int64_t ds = dst->ndim ? dst->stride[dst->ndim - 1] : 1;
    const int64_t ss = src->ndim ? src->stride[src->ndim - 1] : 1;
    const size_t esize = (size_t)ad_dtype_bits(dst->dtype) / 8;
    const size_t ssize = (size_t)ad_dtype_bits(src->dtype) / 8;
#pragma omp parallel for num_threads(cpu_of(be)->n_threads)                                        \
    schedule(static) if (n > CPU_PARALLEL_MIN_WORK)
    for (int64_t r = 0; r < rows; r++) {
        char *d = (char *)dst->data + row_offset(dst, r) * (int64_t)esize;
        const char *s = (const char *)src->data + row_offset(src, r) * (int64_t)ssize;
        if (same && (ds == 1 || cols == 1) && (ss == 1 || cols == 1)) {
            memcpy(d, s, (size_t)cols * esize);
        } else if (same) {
            for (int64_t j = 0; j < cols; j++)
                memcpy(d + j * ds * (int64_t)esize, s + j * ss * (int64_t)esize, esize);
        } else {
            for (int64_t j = 0; j < cols; j++) {
                uint16_t h;
                memcpy(&h, s + j * ss * (int64_t)ssize, sizeof h);
                float v = src->dtype == AD_BF16 ? ad_bf16_to_f32(h) : ad_f16_to_f32(h);
                memcpy(d + j * ds * (int64_t)esize, &v, sizeof v);
            }
        }
    }
    return AD_OK;
}

int ad_cpu_fill(ad_backend *be, ad_tensor *dst, float value) {
    AD_TRY(cpu_check_tensor("fill", "dst", dst, AD_F32));
    const int64_t n = ad_tensor_numel(dst);
    if (n == 0) return AD_OK;
    const int64_t cols = dst->ndim ? dst->shape[dst->ndim - 1] : 1, rows = n / cols;
    const int64_t ds = dst->ndim ? dst->stride[dst->ndim - 1] : 1;
#pragma omp parallel for num_threads(cpu_of(be)->n_threads)                                        \
    schedule(static) if (n > CPU_PARALLEL_MIN_WORK)
    for (int64_t r = 0; r < rows; r++) {
        float *d = (float *)dst->data + row_offset(dst, r);
        for (int64_t j = 0; j < cols; j++)
            d[j * ds] = value;
    }
    return AD_OK;
}

/* ---- the table ------------------------------------------------------------------------- */

static void cpu_destroy(ad_backend *be) {
    cpu_impl *impl = cpu_of(be);
    if (impl)
        for (int s = 0; s < CPU_SCRATCH_SLOTS; s++)
            free(impl->scratch[s]);
    free(impl);
    free(be);
}

int ad_backend_cpu_create(ad_backend **out, int n_threads) {
    *out = NULL;
    if (n_threads < 0) return ad_fail("CPU backend: n_threads %d is negative", n_threads);
    if (n_threads == 0) n_threads = omp_get_max_threads();
    ad_backend *be = ad_calloc(1, sizeof *be, "the CPU backend");
    if (!be) return AD_ERR;
    cpu_impl *impl = ad_calloc(1, sizeof *impl, "the CPU backend");
    if (!impl) {
        free(be);
        return AD_ERR;
    }
    impl->n_threads = n_threads;
    /* OpenBLAS has one pool; the backend's GEMMs run between OpenMP regions (never inside
     * one), so both pools get all n_threads cores in turn. */
    openblas_set_num_threads(n_threads);

    be->name = "cpu";
    be->device = AD_DEVICE_CPU;
    be->act_dtype = AD_F32;
    be->impl = impl;
    be->alloc = ad_cpu_alloc;
    be->release = ad_cpu_release;
    be->upload = ad_cpu_upload;
    be->download = ad_cpu_download;
    be->copy = ad_cpu_copy;
    be->fill = ad_cpu_fill;
    be->matmul = ad_cpu_matmul;
    be->linear = ad_cpu_linear;
    be->linear_residual = ad_cpu_linear_residual;
    be->conv1d = ad_cpu_conv1d;
    be->gelu = ad_cpu_gelu;
    be->silu_mul = ad_cpu_silu_mul;
    be->add = ad_cpu_add;
    be->layernorm = ad_cpu_layernorm;
    be->rmsnorm = ad_cpu_rmsnorm;
    be->softmax = ad_cpu_softmax;
    be->rope = ad_cpu_rope;
    be->attention = ad_cpu_attention;
    be->avg_pool1d = ad_cpu_avg_pool1d;
    be->embedding = ad_cpu_embedding;
    be->scatter_rows = ad_cpu_scatter_rows;
    be->transpose = ad_cpu_transpose;
    be->distill_loss = ad_cpu_distill_loss;
    be->destroy = cpu_destroy;
    ad_cpu_register_backward(be);
    ad_cpu_register_optimizer(be);
    *out = be;
    return AD_OK;
}
