// Matmul with group-quantized weights (src/compress/quant.h format: 8/4/3/2-bit codes, f16
// scales, u8 zeros or the symmetric zero 2^(bits-1)) on CUDA: weight rows are dequantized on
// the fly into a bounded tile in the activation dtype and multiplied with cuBLASLt, so the
// full-precision weight never exists. The dequantized value is computed exactly as
// ad_quant_dequantize_rows does (scale * (code - zero) in float).
//
// Later: a fused kernel that decodes codes in registers inside the GEMM main loop (the win
// for decoding with one or a few rows, where this path is bound by the tile writes).
#include <stdio.h>

#include "cuda_internal.h"

#define QUANT_TILE_BYTES ((int64_t)64 << 20)

__device__ static inline uint32_t get_code(const uint8_t *row, int bits, int64_t j) {
    switch (bits) {
    case 8: return row[j];
    case 4: return (row[j >> 1] >> ((j & 1) * 4)) & 0xfu;
    case 2: return (row[j >> 2] >> ((j & 3) * 2)) & 0x3u;
    default: {
        const uint8_t *b = row + (j >> 3) * 3;
        const uint32_t word = (uint32_t)b[0] | ((uint32_t)b[1] << 8) | ((uint32_t)b[2] << 16);
        return (word >> ((j & 7) * 3)) & 0x7u;
    }
    }
}

/* Element (r, j) of a quantized [rows, cols] weight: scale * (code - zero) in float, as
 * ad_quant_dequantize_rows computes it. */
__device__ static inline float dequant_at(const uint8_t *codes, const uint16_t *scales,
                                          const uint8_t *zeros, int bits, int G, int64_t cols,
                                          int64_t row_bytes, int64_t r, int64_t j) {
    const int64_t at = r * (cols / G) + j / G;
    const float scale = __half2float(__ushort_as_half(scales[at]));
    const int zero = zeros ? zeros[at] : 1 << (bits - 1);
    return scale * (float)((int)get_code(codes + r * row_bytes, bits, j) - zero);
}

__global__ static void dequant_kernel(char *out, int dt, const uint8_t *codes,
                                      const uint16_t *scales, const uint8_t *zeros, int bits, int G,
                                      int64_t row0, int64_t n_rows, int64_t cols,
                                      int64_t row_bytes) {
    CU_GRID_STRIDE(i, n_rows * cols) {
        cu_store(
            out, dt, i,
            dequant_at(codes, scales, zeros, bits, G, cols, row_bytes, row0 + i / cols, i % cols));
    }
}

extern "C" int ad_cuda_quant_linear(ad_backend *be, ad_tensor *y, const ad_tensor *x,
                                    const ad_cuda_quant_weight *w, const ad_tensor *bias) {
    const char *op = "quant_linear";
    if (!be || !w) return ad_fail("%s: backend and weight are required", op);
    AD_TRY(cu_check(op, "y", y, CU_ACT));
    AD_TRY(cu_check(op, "x", x, CU_ACT));
    AD_TRY(ad_op_check_no_alias(op, y, x));
    cu_mat Y, X;
    AD_TRY(cu_mat_of(op, y, &Y));
    AD_TRY(cu_mat_of(op, x, &X));
    if (Y.trans) return ad_op_fail_tensor(op, y, "the output's rows must be contiguous");
    const ad_quant_spec *s = &w->spec;
    if ((s->bits != 8 && s->bits != 4 && s->bits != 3 && s->bits != 2) || s->group_size < 8 ||
        s->group_size % 8 || w->cols % s->group_size || w->rows < 0)
        return ad_fail("%s: bad quantized weight (%d bits, group %d, [%lld, %lld])", op, s->bits,
                       s->group_size, (long long)w->rows, (long long)w->cols);
    if (!w->codes || !w->scales || (!s->symmetric && !w->zeros))
        return ad_fail("%s: the quantized weight has no codes, scales or zeros", op);
    const int64_t N = w->rows, K = w->cols, M = X.rows;
    if (X.cols != K || Y.rows != M || Y.cols != N)
        return ad_op_fail_tensor(op, y,
                                 "expected [%lld, %lld] from x [%lld, %lld] and a [%lld, "
                                 "%lld] weight",
                                 (long long)M, (long long)N, (long long)X.rows, (long long)X.cols,
                                 (long long)N, (long long)K);
    if (bias) {
        AD_TRY(cu_check(op, "bias", bias, CU_FLOAT));
        AD_TRY(ad_op_check_vector(op, bias, N));
    }
    if (M == 0 || N == 0) return AD_OK;
    const ad_dtype wdt = x->dtype; /* the tile matches x, so the GEMM runs without conversion */
    const int64_t es = cu_esize(wdt), row_bytes = K * s->bits / 8;
    int64_t nb = K > 0 ? QUANT_TILE_BYTES / (K * es) : N;
    if (nb < 64) nb = 64;
    if (nb > N) nb = N;
    void *tile;
    AD_TRY(cu_scratch(be, CU_SCRATCH_B, (size_t)(nb * (K > 0 ? K : 1) * es), &tile));
    for (int64_t n0 = 0; n0 < N; n0 += nb) {
        const int64_t n = N - n0 < nb ? N - n0 : nb;
        if (n * K > 0) {
            dequant_kernel<<<cu_blocks(n * K, 256), 256>>>((char *)tile, wdt, w->codes, w->scales,
                                                           s->symmetric ? NULL : w->zeros, s->bits,
                                                           s->group_size, n0, n, K, row_bytes);
            CUDA_TRY_LAUNCH();
        }
        cu_mat W;
        W.data = (char *)tile;
        W.dtype = wdt;
        W.rows = n;
        W.cols = K;
        W.ld = K > 0 ? K : 1;
        W.trans = false;
        cu_mat Yt = Y;
        Yt.data = Y.data + n0 * cu_esize(Y.dtype);
        Yt.cols = n;
        ad_tensor bt, *bp = NULL;
        if (bias) {
            AD_TRY(ad_tensor_slice(bias, 0, n0, n, &bt));
            bp = &bt;
        }
        AD_TRY(cu_gemm(be, op, &Yt, &X, false, &W, true, 1.0f, 0.0f, bp));
    }
    return AD_OK;
}

/* ---- AD_QGROUP weights of a loaded model (src/model/model.c puts their parts on the device) - */

int cu_quant_view(const char *op, const ad_tensor *w, ad_cuda_quant_weight *out) {
    AD_TRY(cu_check(op, "weight", w, CU_M(AD_QGROUP)));
    const ad_quant_tensor *q = (const ad_quant_tensor *)w->quant;
    if (!q || !q->codes) return ad_op_fail_tensor(op, w, "is quantized but has no codes");
    if (w->ndim != 2 || w->shape[0] != q->rows || w->shape[1] != q->cols)
        return ad_op_fail_tensor(op, w, "does not match its quantized [%lld, %lld] parts",
                                 (long long)q->rows, (long long)q->cols);
    out->spec = q->spec;
    out->rows = q->rows;
    out->cols = q->cols;
    out->codes = q->codes;
    out->scales = q->scales;
    out->zeros = q->zeros;
    return AD_OK;
}

__global__ static void dequant_rows_kernel(cu_rows y, const int32_t *ids, int64_t n,
                                           const uint8_t *codes, const uint16_t *scales,
                                           const uint8_t *zeros, int bits, int G, int64_t cols,
                                           int64_t row_bytes) {
    CU_GRID_STRIDE(i, n * cols) {
        const int64_t k = i / cols, j = i % cols;
        cu_store(y.base, y.dtype, cu_row_off(y, k) + j,
                 dequant_at(codes, scales, zeros, bits, G, cols, row_bytes, ids[k], j));
    }
}

int cu_quant_embedding(ad_backend *be, ad_tensor *y, const ad_tensor *table, const ad_tensor *ids) {
    const char *op = "embedding";
    ad_cuda_quant_weight w;
    AD_TRY(cu_quant_view(op, table, &w));
    AD_TRY(cu_check(op, "y", y, CU_ACT));
    AD_TRY(cu_check(op, "ids", ids, CU_I32));
    AD_TRY(ad_op_check_contiguous(op, ids));
    AD_TRY(ad_op_check_rows(op, y));
    const int64_t N = ad_tensor_numel(ids);
    cu_rows ry;
    cu_rows_of(y, &ry);
    if (ry.rows != N || ry.cols != w.cols)
        return ad_op_fail_tensor(op, y, "expected %lld rows (ids %s) of %lld (table %s)",
                                 (long long)N, ids->name, (long long)w.cols, table->name);
    char what[96];
    snprintf(what, sizeof what, "[0, %lld) of table %s", (long long)w.rows, table->name);
    AD_TRY(cu_check_ids(be, op, ids, w.rows, false, what));
    if (N * w.cols == 0) return AD_OK;
    const ad_quant_spec *s = &w.spec;
    dequant_rows_kernel<<<cu_blocks(N * w.cols, 256), 256>>>(
        ry, (const int32_t *)ids->data, N, w.codes, w.scales, s->symmetric ? NULL : w.zeros,
        s->bits, s->group_size, w.cols, ad_quant_row_bytes(s, w.cols));
    CUDA_TRY_LAUNCH();
    return AD_OK;
}
