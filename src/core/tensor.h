/* Tensors: a typed, shaped, strided view of memory that somebody else owns (an arena, an
 * mmapped file, a caller's buffer). Creating views and slices never copies. This module owns
 * dtype facts (names, sizes, bf16/f16 conversions) and must never allocate tensor data. */
#ifndef AUDISTILL_CORE_TENSOR_H
#define AUDISTILL_CORE_TENSOR_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "core/error.h"

#ifdef __cplusplus
extern "C" {
#endif

#define AD_MAX_DIMS 4

typedef enum {
    AD_F32 = 0,
    AD_BF16,
    AD_F16,
    AD_I32,
    AD_I8,
    AD_U8,     /* raw bytes, e.g. packed quantized storage in safetensors */
    AD_I64,    /* token ids and the like in foreign files */
    AD_Q4,     /* packed 4-bit codes, two per byte, low nibble first */
    AD_Q3,     /* packed 3-bit codes, eight per three bytes, little-endian bit order */
    AD_QGROUP, /* a group-quantized weight: `quant` points to its ad_quant_tensor */
    AD_DTYPE_COUNT
} ad_dtype;

typedef enum { AD_DEVICE_CPU = 0, AD_DEVICE_CUDA } ad_device;

typedef struct {
    ad_dtype dtype;
    ad_device device;
    int ndim;
    int64_t shape[AD_MAX_DIMS];
    int64_t stride[AD_MAX_DIMS]; /* in elements; packed dtypes are always row-contiguous */
    void *data;                  /* address of element [0,0,..] */
    const char *name;            /* borrowed; for error messages */
    const void *quant; /* AD_QGROUP only: the codes, scales and zeros (compress/quant.h) */
} ad_tensor;

const char *ad_dtype_name(ad_dtype dtype);
/* Accepts safetensors names (F32, BF16, F16, I32, I8, U8, I64) and ours (Q4, Q3). */
int ad_dtype_parse(const char *name, ad_dtype *out);
int ad_dtype_bits(ad_dtype dtype);
bool ad_dtype_is_packed(ad_dtype dtype);
/* Bytes needed for `count` contiguous elements (packed dtypes round up to a whole byte). */
size_t ad_dtype_bytes_for(ad_dtype dtype, int64_t count);

/* A contiguous tensor over `data`. Fails on a bad ndim or a negative dim. */
int ad_tensor_init(ad_tensor *t, void *data, ad_dtype dtype, ad_device device, int ndim,
                   const int64_t *shape, const char *name);
int64_t ad_tensor_numel(const ad_tensor *t);
size_t ad_tensor_nbytes(const ad_tensor *t); /* of the elements a contiguous tensor covers */
bool ad_tensor_is_contiguous(const ad_tensor *t);
bool ad_tensor_same_shape(const ad_tensor *a, const ad_tensor *b);
/* "name [2, 3, 4] bf16" into buf. */
const char *ad_tensor_describe(const ad_tensor *t, char *buf, size_t size);

/* Reshape a contiguous tensor without copying (same element count). */
int ad_tensor_reshape(const ad_tensor *t, int ndim, const int64_t *shape, ad_tensor *out);
/* Rows [start, start+len) along `dim`, sharing storage. Packed dtypes allow dim 0 only, and
 * only at byte-aligned row boundaries. */
int ad_tensor_slice(const ad_tensor *t, int dim, int64_t start, int64_t len, ad_tensor *out);
/* Swap two dims (a strided view). Not for packed dtypes. */
int ad_tensor_transpose(const ad_tensor *t, int dim0, int dim1, ad_tensor *out);
/* Address of element idx (ndim indices). Not for packed dtypes. */
void *ad_tensor_at(const ad_tensor *t, const int64_t *idx);

/* Copy any float or integer CPU tensor (strided allowed) into a contiguous f32 buffer of
 * numel floats. Packed dtypes need their quantization scales and are refused here. */
int ad_tensor_to_f32(const ad_tensor *t, float *out);

float ad_bf16_to_f32(uint16_t h);
uint16_t ad_f32_to_bf16(float f); /* round to nearest even; NaN stays NaN */
float ad_f16_to_f32(uint16_t h);
uint16_t ad_f32_to_f16(float f); /* round to nearest even; overflow goes to inf */

#ifdef __cplusplus
}
#endif

#endif
