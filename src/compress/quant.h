/* Weight-only group quantization: the storage format, packing, round-to-nearest quantization,
 * dequantization and the exact size of a quantized tensor. Methods that choose the codes
 * better (GPTQ, AWQ scaling) produce the same format through ad_quant_encode_group.
 *
 * Format (version 1), for a weight W [rows, cols] quantized along cols in groups of G:
 *   codes   U8 [rows, cols * bits / 8]  packed unsigned codes c in [0, 2^bits - 1]:
 *           8 bits one per byte; 4 bits two per byte, low nibble first; 3 bits eight per
 *           three bytes, little-endian bit order; 2 bits four per byte, low bits first.
 *   scales  F16 [rows, cols / G]
 *   zeros   U8  [rows, cols / G]       asymmetric only
 *   value   w = scale * (c - zero), where zero = 2^(bits-1) for symmetric groups.
 * cols must be a multiple of G and G a multiple of 8, so every row is byte aligned. */
#ifndef AUDISTILL_COMPRESS_QUANT_H
#define AUDISTILL_COMPRESS_QUANT_H

#include <stdbool.h>
#include <stdint.h>

#include "core/tensor.h"

#define AD_QUANT_FORMAT_VERSION 1

typedef struct {
    int bits;       /* 8, 4, 3 or 2 */
    int group_size; /* 32, 64, 128 (or any multiple of 8 dividing cols) */
    bool symmetric;
} ad_quant_spec;

typedef struct {
    ad_quant_spec spec;
    int64_t rows, cols;
    uint8_t *codes;   /* rows * row_bytes */
    uint16_t *scales; /* f16, rows * groups */
    uint8_t *zeros;   /* rows * groups, NULL when symmetric */
} ad_quant_tensor;

/* Checks the spec and that it fits a [rows, cols] weight; messages name `name`. */
int ad_quant_check(const ad_quant_spec *spec, int64_t rows, int64_t cols, const char *name);
int64_t ad_quant_row_bytes(const ad_quant_spec *spec, int64_t cols);
/* Bytes of codes + scales + zeros (what the tensor costs on disk, without the file header). */
int64_t ad_quant_bytes(const ad_quant_spec *spec, int64_t rows, int64_t cols);

int ad_quant_alloc(ad_quant_tensor *q, const ad_quant_spec *spec, int64_t rows, int64_t cols,
                   const char *name);
void ad_quant_free(ad_quant_tensor *q);

/* Unsigned code j of a packed row. */
uint32_t ad_quant_get_code(const uint8_t *row, int bits, int64_t j);
void ad_quant_set_code(uint8_t *row, int bits, int64_t j, uint32_t code);

/* Round-to-nearest: per group, scale and zero from the min/max (asymmetric) or max |w|
 * (symmetric). Deterministic; OpenMP over rows. */
int ad_quant_rtn(ad_quant_tensor *q, const float *w);
/* The scale/zero RTN would choose for one group of values (used by GPTQ too). */
void ad_quant_group_params(const ad_quant_spec *spec, const float *w, int n, float *scale,
                           int *zero);
/* Code of value x for the given scale/zero (round half away from zero, clamped). */
uint32_t ad_quant_encode(const ad_quant_spec *spec, float x, float scale, int zero);
/* Dequantize rows [row0, row0 + n_rows) into out [n_rows, cols]. */
void ad_quant_dequantize_rows(const ad_quant_tensor *q, int64_t row0, int64_t n_rows, float *out);

#endif
