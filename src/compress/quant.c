#include "compress/quant.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

int ad_quant_check(const ad_quant_spec *spec, int64_t rows, int64_t cols, const char *name) {
    if (spec->bits != 8 && spec->bits != 4 && spec->bits != 3 && spec->bits != 2)
        return ad_fail("%s: %d-bit quantization is not supported (8, 4, 3 or 2)", name, spec->bits);
    if (spec->group_size <= 0 || spec->group_size % 8 != 0)
        return ad_fail("%s: group size %d must be a positive multiple of 8", name,
                       spec->group_size);
    if (rows <= 0 || cols <= 0) return ad_fail("%s: cannot quantize an empty tensor", name);
    if (cols % spec->group_size != 0)
        return ad_fail("%s: group size %d does not divide the row width %lld", name,
                       spec->group_size, (long long)cols);
    return AD_OK;
}

int64_t ad_quant_row_bytes(const ad_quant_spec *spec, int64_t cols) {
    return cols * spec->bits / 8;
}

int64_t ad_quant_bytes(const ad_quant_spec *spec, int64_t rows, int64_t cols) {
    int64_t groups = rows * (cols / spec->group_size);
    return rows * ad_quant_row_bytes(spec, cols) + groups * 2 + (spec->symmetric ? 0 : groups);
}

int ad_quant_alloc(ad_quant_tensor *q, const ad_quant_spec *spec, int64_t rows, int64_t cols,
                   const char *name) {
    memset(q, 0, sizeof *q);
    AD_TRY(ad_quant_check(spec, rows, cols, name));
    q->spec = *spec;
    q->rows = rows;
    q->cols = cols;
    int64_t groups = rows * (cols / spec->group_size);
    q->codes = ad_calloc((size_t)(rows * ad_quant_row_bytes(spec, cols)), 1, name);
    q->scales = ad_calloc((size_t)groups, sizeof *q->scales, name);
    q->zeros = spec->symmetric ? NULL : ad_calloc((size_t)groups, 1, name);
    if (!q->codes || !q->scales || (!spec->symmetric && !q->zeros)) {
        ad_quant_free(q);
        return AD_ERR;
    }
    return AD_OK;
}

void ad_quant_free(ad_quant_tensor *q) {
    free(q->codes);
    free(q->scales);
    free(q->zeros);
    memset(q, 0, sizeof *q);
}

uint32_t ad_quant_get_code(const uint8_t *row, int bits, int64_t j) {
    switch (bits) {
    case 8: return row[j];
    case 4: return (row[j >> 1] >> ((j & 1) * 4)) & 0xfu;
    case 2: return (row[j >> 2] >> ((j & 3) * 2)) & 0x3u;
    default: { /* 3 bits: eight codes in three bytes */
        const uint8_t *b = row + (j >> 3) * 3;
        uint32_t word = (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16);
        return (word >> ((j & 7) * 3)) & 0x7u;
    }
    }
}

void ad_quant_set_code(uint8_t *row, int bits, int64_t j, uint32_t code) {
    switch (bits) {
    case 8: row[j] = (uint8_t)code; return;
    case 4: {
        int shift = (int)(j & 1) * 4;
        row[j >> 1] = (uint8_t)((row[j >> 1] & ~(0xfu << shift)) | ((code & 0xfu) << shift));
        return;
    }
    case 2: {
        int shift = (int)(j & 3) * 2;
        row[j >> 2] = (uint8_t)((row[j >> 2] & ~(0x3u << shift)) | ((code & 0x3u) << shift));
        return;
    }
    default: {
        uint8_t *b = row + (j >> 3) * 3;
        uint32_t word = (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16);
        int shift = (int)(j & 7) * 3;
        word = (word & ~(0x7u << shift)) | ((code & 0x7u) << shift);
        b[0] = (uint8_t)word;
        b[1] = (uint8_t)(word >> 8);
        b[2] = (uint8_t)(word >> 16);
    }
    }
}

void ad_quant_group_params(const ad_quant_spec *spec, const float *w, int n, float *scale,
                           int *zero) {
    const int maxq = (1 << spec->bits) - 1;
    if (spec->symmetric) {
        /* Codes 1..maxq around zero = 2^(bits-1): levels -(2^(b-1)-1) .. 2^(b-1)-1, so the
         * grid is symmetric and zero is exact. */
        float amax = 0;
        for (int i = 0; i < n; i++)
            amax = fmaxf(amax, fabsf(w[i]));
        int half = (1 << (spec->bits - 1)) - 1;
        *scale = amax > 0 ? amax / (float)half : 1.0f;
        *zero = 1 << (spec->bits - 1);
    } else {
        /* The range always contains 0 so that zero weights stay exactly zero. */
        float lo = 0, hi = 0;
        for (int i = 0; i < n; i++) {
            lo = fminf(lo, w[i]);
            hi = fmaxf(hi, w[i]);
        }
        float s = (hi - lo) / (float)maxq;
        if (!(s > 0)) s = 1.0f;
        int z = (int)lroundf(-lo / s);
        *scale = s;
        *zero = z < 0 ? 0 : z > maxq ? maxq : z;
    }
    /* The scale is stored in f16: quantize with the value that will be stored. */
    *scale = ad_f16_to_f32(ad_f32_to_f16(*scale));
    if (!(*scale > 0)) *scale = ad_f16_to_f32(0x0001); /* underflow: smallest positive f16 */
}

uint32_t ad_quant_encode(const ad_quant_spec *spec, float x, float scale, int zero) {
    const int maxq = (1 << spec->bits) - 1;
    const int lo = spec->symmetric ? 1 : 0;
    long c = lroundf(x / scale) + zero;
    return (uint32_t)(c < lo ? lo : c > maxq ? maxq : c);
}

int ad_quant_rtn(ad_quant_tensor *q, const float *w) {
    const ad_quant_spec *spec = &q->spec;
    const int G = spec->group_size;
    const int64_t groups = q->cols / G, row_bytes = ad_quant_row_bytes(spec, q->cols);
    for (int64_t i = 0; i < q->rows * q->cols; i++)
        if (!isfinite(w[i]))
            return ad_fail("cannot quantize: the weight has NaN or inf at row %lld, column %lld",
                           (long long)(i / q->cols), (long long)(i % q->cols));
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < q->rows; r++) {
        uint8_t *row = q->codes + r * row_bytes;
        for (int64_t g = 0; g < groups; g++) {
            const float *x = w + r * q->cols + g * G;
            float scale;
            int zero;
            ad_quant_group_params(spec, x, G, &scale, &zero);
            q->scales[r * groups + g] = ad_f32_to_f16(scale);
            if (q->zeros) q->zeros[r * groups + g] = (uint8_t)zero;
            for (int i = 0; i < G; i++)
                ad_quant_set_code(row, spec->bits, g * G + i,
                                  ad_quant_encode(spec, x[i], scale, zero));
        }
    }
    return AD_OK;
}

void ad_quant_dequantize_rows(const ad_quant_tensor *q, int64_t row0, int64_t n_rows, float *out) {
    const int G = q->spec.group_size, bits = q->spec.bits;
    const int64_t groups = q->cols / G, row_bytes = ad_quant_row_bytes(&q->spec, q->cols);
    const int sym_zero = 1 << (bits - 1);
    for (int64_t r = 0; r < n_rows; r++) {
        const int64_t R = row0 + r;
        const uint8_t *row = q->codes + R * row_bytes;
        for (int64_t g = 0; g < groups; g++) {
            float scale = ad_f16_to_f32(q->scales[R * groups + g]);
            int zero = q->zeros ? q->zeros[R * groups + g] : sym_zero;
            for (int i = 0; i < G; i++) {
                int64_t j = g * G + i;
                out[r * q->cols + j] = scale * (float)((int)ad_quant_get_code(row, bits, j) - zero);
            }
        }
    }
}
