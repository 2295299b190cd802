#include "core/tensor.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

static const struct {
    const char *name;
    int bits;
} dtype_info[AD_DTYPE_COUNT] = {
    [AD_F32] = {"F32", 32}, [AD_BF16] = {"BF16", 16}, [AD_F16] = {"F16", 16},
    [AD_I32] = {"I32", 32}, [AD_I8] = {"I8", 8},      [AD_U8] = {"U8", 8},
    [AD_I64] = {"I64", 64}, [AD_Q4] = {"Q4", 4},      [AD_QGROUP] = {"QGROUP", 0},
    [AD_Q3] = {"Q3", 3},
};

const char *ad_dtype_name(ad_dtype dtype) {
    return (unsigned)dtype < AD_DTYPE_COUNT ? dtype_info[dtype].name : "?";
}

int ad_dtype_parse(const char *name, ad_dtype *out) {
    for (int i = 0; i < AD_DTYPE_COUNT; i++) {
        if (strcmp(name, dtype_info[i].name) == 0) {
            *out = (ad_dtype)i;
            return AD_OK;
        }
    }
    return ad_fail("unknown dtype '%s' (expected F32, BF16, F16, I32, I8, U8, I64, Q4 or Q3)",
                   name);
}

int ad_dtype_bits(ad_dtype dtype) {
    return dtype_info[dtype].bits;
}

bool ad_dtype_is_packed(ad_dtype dtype) {
    return dtype_info[dtype].bits < 8;
}

size_t ad_dtype_bytes_for(ad_dtype dtype, int64_t count) {
    return ((size_t)count * (size_t)dtype_info[dtype].bits + 7) / 8;
}

int ad_tensor_init(ad_tensor *t, void *data, ad_dtype dtype, ad_device device, int ndim,
                   const int64_t *shape, const char *name) {
    memset(t, 0, sizeof *t);
    t->name = name ? name : "(unnamed)";
    if ((unsigned)dtype >= AD_DTYPE_COUNT)
        return ad_fail("tensor %s: invalid dtype %d", t->name, (int)dtype);
    if (ndim < 0 || ndim > AD_MAX_DIMS)
        return ad_fail("tensor %s: %d dims (at most %d supported)", t->name, ndim, AD_MAX_DIMS);
    t->dtype = dtype;
    t->device = device;
    t->ndim = ndim;
    t->data = data;
    int64_t stride = 1;
    for (int d = ndim - 1; d >= 0; d--) {
        if (shape[d] < 0) return ad_fail("tensor %s: negative size in dim %d", t->name, d);
        t->shape[d] = shape[d];
        t->stride[d] = stride;
        stride *= shape[d];
    }
    return AD_OK;
}

int64_t ad_tensor_numel(const ad_tensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++)
        n *= t->shape[d];
    return n;
}

size_t ad_tensor_nbytes(const ad_tensor *t) {
    return ad_dtype_bytes_for(t->dtype, ad_tensor_numel(t));
}

bool ad_tensor_is_contiguous(const ad_tensor *t) {
    int64_t expect = 1;
    for (int d = t->ndim - 1; d >= 0; d--) {
        if (t->shape[d] != 1 && t->stride[d] != expect) return false;
        expect *= t->shape[d];
    }
    return true;
}

bool ad_tensor_same_shape(const ad_tensor *a, const ad_tensor *b) {
    if (a->ndim != b->ndim) return false;
    for (int d = 0; d < a->ndim; d++)
        if (a->shape[d] != b->shape[d]) return false;
    return true;
}

const char *ad_tensor_describe(const ad_tensor *t, char *buf, size_t size) {
    size_t n = (size_t)snprintf(buf, size, "%s [", t->name);
    for (int d = 0; d < t->ndim && n < size; d++)
        n += (size_t)snprintf(buf + n, size - n, "%s%lld", d ? ", " : "", (long long)t->shape[d]);
    if (n < size) snprintf(buf + n, size - n, "] %s", ad_dtype_name(t->dtype));
    return buf;
}

int ad_tensor_reshape(const ad_tensor *t, int ndim, const int64_t *shape, ad_tensor *out) {
    if (!ad_tensor_is_contiguous(t))
        return ad_fail("tensor %s: reshape needs a contiguous tensor", t->name);
    ad_tensor r;
    AD_TRY(ad_tensor_init(&r, t->data, t->dtype, t->device, ndim, shape, t->name));
    if (ad_tensor_numel(&r) != ad_tensor_numel(t))
        return ad_fail("tensor %s: cannot reshape %lld elements into %lld", t->name,
                       (long long)ad_tensor_numel(t), (long long)ad_tensor_numel(&r));
    *out = r;
    return AD_OK;
}

int ad_tensor_slice(const ad_tensor *t, int dim, int64_t start, int64_t len, ad_tensor *out) {
    if (dim < 0 || dim >= t->ndim)
        return ad_fail("tensor %s: slice dim %d out of range (ndim %d)", t->name, dim, t->ndim);
    if (start < 0 || len < 0 || start + len > t->shape[dim])
        return ad_fail("tensor %s: slice [%lld, %lld) outside dim %d of size %lld", t->name,
                       (long long)start, (long long)(start + len), dim, (long long)t->shape[dim]);
    ad_tensor r = *t;
    if (ad_dtype_is_packed(t->dtype)) {
        if (dim != 0)
            return ad_fail("tensor %s: packed %s tensors slice along dim 0 only", t->name,
                           ad_dtype_name(t->dtype));
        int64_t row_bits = t->stride[0] * ad_dtype_bits(t->dtype);
        if (row_bits % 8 != 0)
            return ad_fail("tensor %s: packed rows are not byte aligned", t->name);
        r.data = (char *)t->data + start * (row_bits / 8);
    } else {
        r.data = (char *)t->data + start * t->stride[dim] * (int64_t)(ad_dtype_bits(t->dtype) / 8);
    }
    r.shape[dim] = len;
    *out = r;
    return AD_OK;
}

int ad_tensor_transpose(const ad_tensor *t, int dim0, int dim1, ad_tensor *out) {
    if (ad_dtype_is_packed(t->dtype))
        return ad_fail("tensor %s: packed tensors cannot be transposed", t->name);
    if (dim0 < 0 || dim1 < 0 || dim0 >= t->ndim || dim1 >= t->ndim)
        return ad_fail("tensor %s: transpose dims %d,%d out of range (ndim %d)", t->name, dim0,
                       dim1, t->ndim);
    ad_tensor r = *t;
    r.shape[dim0] = t->shape[dim1];
    r.shape[dim1] = t->shape[dim0];
    r.stride[dim0] = t->stride[dim1];
    r.stride[dim1] = t->stride[dim0];
    *out = r;
    return AD_OK;
}

void *ad_tensor_at(const ad_tensor *t, const int64_t *idx) {
    int64_t off = 0;
    for (int d = 0; d < t->ndim; d++)
        off += idx[d] * t->stride[d];
    return (char *)t->data + off * (ad_dtype_bits(t->dtype) / 8);
}

static float element_to_f32(const void *p, ad_dtype dtype) {
    switch (dtype) {
    case AD_F32: return *(const float *)p;
    case AD_BF16: return ad_bf16_to_f32(*(const uint16_t *)p);
    case AD_F16: return ad_f16_to_f32(*(const uint16_t *)p);
    case AD_I32: return (float)*(const int32_t *)p;
    case AD_I8: return (float)*(const int8_t *)p;
    case AD_U8: return (float)*(const uint8_t *)p;
    case AD_I64: return (float)*(const int64_t *)p;
    default: return NAN;
    }
}

int ad_tensor_to_f32(const ad_tensor *t, float *out) {
    if (t->device != AD_DEVICE_CPU)
        return ad_fail("tensor %s: conversion to f32 needs a CPU tensor", t->name);
    if (ad_dtype_is_packed(t->dtype))
        return ad_fail("tensor %s: packed %s needs its quantization scales to convert", t->name,
                       ad_dtype_name(t->dtype));
    int64_t n = ad_tensor_numel(t);
    if (n == 0) return AD_OK;
    if (t->dtype == AD_F32 && ad_tensor_is_contiguous(t)) {
        memcpy(out, t->data, (size_t)n * sizeof(float));
        return AD_OK;
    }
    int64_t idx[AD_MAX_DIMS] = {0};
    for (int64_t i = 0; i < n; i++) {
        out[i] = element_to_f32(ad_tensor_at(t, idx), t->dtype);
        for (int d = t->ndim - 1; d >= 0; d--) {
            if (++idx[d] < t->shape[d]) break;
            idx[d] = 0;
        }
    }
    return AD_OK;
}

float ad_bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

uint16_t ad_f32_to_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40u); /* quiet NaN */
    uint32_t rounding = 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)((bits + rounding) >> 16);
}

float ad_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exponent = (h >> 10) & 0x1fu;
    uint32_t mantissa = h & 0x3ffu;
    uint32_t bits;
    if (exponent == 0) {
        if (mantissa == 0) {
            bits = sign;
        } else { /* subnormal: renormalise */
            int e = -1;
            do {
                e++;
                mantissa <<= 1;
            } while (!(mantissa & 0x400u));
            bits = sign | ((uint32_t)(127 - 15 - e) << 23) | ((mantissa & 0x3ffu) << 13);
        }
    } else if (exponent == 0x1f) {
        bits = sign | 0x7f800000u | (mantissa << 13);
    } else {
        bits = sign | ((exponent + 127 - 15) << 23) | (mantissa << 13);
    }
    float f;
    memcpy(&f, &bits, sizeof f);
    return f;
}

uint16_t ad_f32_to_f16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof bits);
    uint16_t sign = (uint16_t)((bits >> 16) & 0x8000u);
    uint32_t abs = bits & 0x7fffffffu;
    if (abs > 0x7f800000u) return sign | 0x7e00u;  /* NaN */
    if (abs >= 0x477ff000u) return sign | 0x7c00u; /* rounds to >= 65520: inf */
    if (abs < 0x38800000u) {                       /* result is subnormal or zero */
        if (abs < 0x33000000u) return sign;        /* below half the smallest subnormal */
        uint32_t exponent = abs >> 23;
        uint32_t mantissa = (abs & 0x7fffffu) | 0x800000u;
        uint32_t shift = 126 - exponent; /* f16 subnormal unit is 2^-24 */
        uint32_t value = mantissa >> shift;
        uint32_t rem = mantissa & ((1u << shift) - 1u);
        uint32_t half = 1u << (shift - 1);
        if (rem > half || (rem == half && (value & 1u))) value++;
        return sign | (uint16_t)value;
    }
    uint32_t rounded = abs + 0xfffu + ((abs >> 13) & 1u);
    return sign | (uint16_t)(((rounded >> 13) - ((127 - 15) << 10)) & 0xffffu);
}
