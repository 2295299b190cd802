/* CPU sequence ops: rope, attention, avg_pool1d, embedding, scatter_rows, transpose.
 * Attention runs per (batch, head, block of query rows): scores and the weighted sum of values
 * are two sgemm calls, the masked softmax between them is parallel over rows. Masked keys get
 * exactly zero weight, and key blocks past the last visible key are not computed at all. */
#include <cblas.h>
#include <limits.h>
#include <math.h>
#include <omp.h>
#include <string.h>

#include "backend/cpu/cpu_internal.h"
#include "compress/quant.h"
#include "core/error.h"

/* Scores computed per attention block (floats): keeps scratch bounded for long sequences. */
#define ATTN_BLOCK_FLOATS ((int64_t)1 << 20)
/* cos/sin of a token are computed once for all heads, in a stack array of head_dim/2. */
#define ROPE_MAX_HEAD_DIM 1024

static int32_t index_at(const ad_tensor *t, int64_t i0, int64_t i1) {
    return *((const int32_t *)t->data + i0 * t->stride[0] + i1 * t->stride[1]);
}

int ad_cpu_rope(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *positions,
                int n_heads, int head_dim, float theta) {
    const char *op = "rope";
    AD_TRY(cpu_check_tensor(op, "x", x, AD_F32));
    AD_TRY(cpu_check_tensor(op, "y", y, AD_F32));
    AD_TRY(cpu_check_tensor(op, "positions", positions, AD_I32));
    AD_TRY(ad_op_check_rope(op, y, x, positions, n_heads, head_dim, theta, ROPE_MAX_HEAD_DIM));
    const int64_t B = x->shape[0], T = x->shape[1];
    const int half = head_dim / 2;
    /* transformers: inv_freq = 1.0 / (base ** (arange(0, dim, 2).float() / dim)), all float32;
     * freqs = position.float() * inv_freq in float32, then cos/sin of that float. The float
     * rounding of the angle matters at large positions, so it is reproduced exactly. */
    float inv_freq[ROPE_MAX_HEAD_DIM / 2];
    for (int j = 0; j < half; j++) {
        const float e = (float)(2 * j) / (float)head_dim;
        inv_freq[j] = 1.0f / (float)pow((double)theta, (double)e);
    }
#pragma omp parallel for num_threads(cpu_of(be)->n_threads)                                        \
    schedule(static) if (B * T * x->shape[2] > CPU_PARALLEL_MIN_WORK)
    for (int64_t r = 0; r < B * T; r++) {
        const int64_t b = r / T, t = r % T;
        const float pos = (float)index_at(positions, b, t);
        float c[ROPE_MAX_HEAD_DIM / 2], s[ROPE_MAX_HEAD_DIM / 2];
        for (int j = 0; j < half; j++) {
            const float f = pos * inv_freq[j];
            c[j] = (float)cos((double)f);
            s[j] = (float)sin((double)f);
        }
        const float *in = (const float *)x->data + b * x->stride[0] + t * x->stride[1];
        float *out = (float *)y->data + b * y->stride[0] + t * y->stride[1];
        for (int h = 0; h < n_heads; h++) {
            const float *u = in + (int64_t)h * head_dim;
            float *v = out + (int64_t)h * head_dim;
            for (int j = 0; j < half; j++) {
                const float x1 = u[j], x2 = u[j + half];
                /* q * cos + rotate_half(q) * sin, rotate_half(q) = cat(-x2, x1) */
                v[j] = x1 * c[j] + (-x2) * s[j];
                v[j + half] = x2 * c[j] + x1 * s[j];
            }
        }
    }
    return AD_OK;
}

/* Leading dimension of the rows of a [B, T, C] tensor (C when there is a single row). */
static int row_ld(const char *op, const ad_tensor *t, int64_t *ld) {
    *ld = t->shape[1] > 1 ? t->stride[1] : t->shape[2];
    if (*ld < t->shape[2] || *ld > INT_MAX)
        return ad_op_fail_tensor(op, t, "time stride %lld is not usable as a row stride",
                                 (long long)t->stride[1]);
    return AD_OK;
}

static int check_attention(const ad_tensor *out, const ad_tensor *q, const ad_tensor *k,
                           const ad_tensor *v, const ad_attention_params *p) {
    const char *op = "attention";
    if (!p) return ad_fail("attention: params is NULL");
    const ad_tensor *all[4] = {out, q, k, v};
    const char *roles[4] = {"out", "q", "k", "v"};
    for (int i = 0; i < 4; i++) {
        AD_TRY(cpu_check_tensor(op, roles[i], all[i], AD_F32));
        AD_TRY(ad_op_check_ndim(op, all[i], 3, 3));
        AD_TRY(ad_op_check_rows(op, all[i]));
    }
    if (p->n_heads < 1 || p->n_kv_heads < 1 || p->head_dim < 1 || p->n_heads % p->n_kv_heads)
        return ad_fail("attention: need n_heads (%d) a positive multiple of n_kv_heads (%d) and "
                       "head_dim (%d) >= 1",
                       p->n_heads, p->n_kv_heads, p->head_dim);
    if (p->q_offset < 0) return ad_fail("attention: q_offset %d is negative", p->q_offset);
    if (!isfinite(p->scale)) return ad_fail("attention: scale is not finite");
    const int64_t B = q->shape[0], Tq = q->shape[1], Tk = k->shape[1];
    const int64_t qd = (int64_t)p->n_heads * p->head_dim,
                  kvd = (int64_t)p->n_kv_heads * p->head_dim;
    if (q->shape[2] != qd)
        return ad_op_fail_tensor(op, q, "expected last dim n_heads * head_dim = %lld",
                                 (long long)qd);
    if (k->shape[0] != B || k->shape[2] != kvd)
        return ad_op_fail_tensor(op, k, "expected [%lld, Tk, n_kv_heads * head_dim = %lld]",
                                 (long long)B, (long long)kvd);
    AD_TRY(ad_op_check_same_shape(op, v, k));
    if (out->shape[0] != B || out->shape[1] != Tq || out->shape[2] != qd)
        return ad_op_fail_tensor(op, out, "expected [%lld, %lld, %lld] like q", (long long)B,
                                 (long long)Tq, (long long)qd);
    for (int i = 1; i < 4; i++)
        AD_TRY(ad_op_check_no_alias(op, out, all[i]));
    if (p->key_len)
        for (int64_t b = 0; b < B; b++)
            if (p->key_len[b] < 0 || p->key_len[b] > Tk)
                return ad_op_fail_tensor(op, k, "key_len[%lld] = %d outside [0, %lld]",
                                         (long long)b, p->key_len[b], (long long)Tk);
    return AD_OK;
}

/* One (batch, head, block of query rows) of attention, single-threaded: scores = scale * Q K^T
 * over the keys any row of the block can see, masked softmax per row, out = P V. */
static void attend_block(const ad_tensor *out, const ad_tensor *q, const ad_tensor *k,
                         const ad_tensor *v, const ad_attention_params *p, const int64_t ld[4],
                         int64_t b, int h, int64_t i0, int64_t nq, float *scores) {
    const int64_t D = p->head_dim, hq = (int64_t)h * D;
    const int64_t hk = (int64_t)(h / (p->n_heads / p->n_kv_heads)) * D;
    const float *qr = (const float *)q->data + b * q->stride[0] + i0 * ld[0] + hq;
    const float *kb = (const float *)k->data + b * k->stride[0] + hk;
    const float *vb = (const float *)v->data + b * v->stride[0] + hk;
    float *orow = (float *)out->data + b * out->stride[0] + i0 * ld[3] + hq;
    int64_t kmax = p->key_len ? p->key_len[b] : k->shape[1]; /* keys any row here can see */
    if (p->causal && p->q_offset + i0 + nq < kmax) kmax = p->q_offset + i0 + nq;
    if (kmax <= 0) {
        /* No visible key at all: zero output rather than 0/0. */
        for (int64_t i = 0; i < nq; i++)
            memset(orow + i * ld[3], 0, (size_t)D * sizeof(float));
        return;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)nq, (int)kmax, (int)D, p->scale, qr,
                (int)ld[0], kb, (int)ld[1], 0.0f, scores, (int)kmax);
    for (int64_t i = 0; i < nq; i++) {
        float *s = scores + i * kmax;
        int64_t lim = kmax;
        if (p->causal && p->q_offset + i0 + i + 1 < lim) lim = p->q_offset + i0 + i + 1;
        float mx = -INFINITY;
        for (int64_t j = 0; j < lim; j++)
            mx = s[j] > mx ? s[j] : mx;
        double sum = 0;
        for (int64_t j = 0; j < lim; j++) {
            s[j] = expf(s[j] - mx);
            sum += s[j];
        }
        for (int64_t j = 0; j < lim; j++)
            s[j] = (float)(s[j] / sum);
        for (int64_t j = lim; j < kmax; j++)
            s[j] = 0.0f;
    }
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)nq, (int)D, (int)kmax, 1.0f, scores,
                (int)kmax, vb, (int)ld[2], 0.0f, orow, (int)ld[3]);
}

int ad_cpu_attention(ad_backend *be, ad_tensor *out, const ad_tensor *q, const ad_tensor *k,
                     const ad_tensor *v, const ad_attention_params *p) {
    const char *op = "attention";
    AD_TRY(check_attention(out, q, k, v, p));
    const int64_t B = q->shape[0], Tq = q->shape[1], Tk = k->shape[1];
    if (B == 0 || Tq == 0) return AD_OK;
    int64_t ld[4];
    AD_TRY(row_ld(op, q, &ld[0]));
    AD_TRY(row_ld(op, k, &ld[1]));
    AD_TRY(row_ld(op, v, &ld[2]));
    AD_TRY(row_ld(op, out, &ld[3]));
    int64_t qb = Tk > 0 ? ATTN_BLOCK_FLOATS / Tk : Tq;
    if (qb < 1) qb = 1;
    if (qb > Tq) qb = Tq;
    const int64_t n_blocks = (Tq + qb - 1) / qb, jobs = B * p->n_heads * n_blocks;
    int nt = cpu_of(be)->n_threads;
    if (jobs < nt) nt = (int)jobs;
    float *scores;
    AD_TRY(cpu_scratch(be, CPU_SCRATCH_COLS,
                       (size_t)nt * (size_t)(qb * (Tk > 0 ? Tk : 1)) * sizeof(float),
                       (void **)&scores));
    /* Blocks run in parallel, each with single-threaded BLAS (OpenBLAS's advice for threaded
     * callers): alternating BLAS-threaded GEMMs with an OpenMP softmax per head made the two
     * thread pools compete, and 2 threads were slower than 1. */
    if (nt > 1) openblas_set_num_threads(1);
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
    for (int64_t job = 0; job < jobs; job++) {
        const int64_t b = job / (p->n_heads * n_blocks), blk = job % n_blocks;
        const int h = (int)(job / n_blocks % p->n_heads);
        const int64_t i0 = blk * qb, nq = Tq - i0 < qb ? Tq - i0 : qb;
        attend_block(out, q, k, v, p, ld, b, h, i0, nq,
                     scores + (size_t)omp_get_thread_num() * (size_t)(qb * (Tk > 0 ? Tk : 1)));
    }
    cpu_blas_threads(be);
    return AD_OK;
}

int ad_cpu_avg_pool1d(ad_backend *be, ad_tensor *y, const ad_tensor *x, int kernel, int stride) {
    const char *op = "avg_pool1d";
    AD_TRY(cpu_check_tensor(op, "y", y, AD_F32));
    AD_TRY(cpu_check_tensor(op, "x", x, AD_F32));
    AD_TRY(ad_op_check_pool(op, y, x, kernel, stride));
    const int64_t B = y->shape[0], L_out = y->shape[1], C = y->shape[2];
#pragma omp parallel for num_threads(cpu_of(be)->n_threads)                                        \
    schedule(static) if (B * L_out * C > CPU_PARALLEL_MIN_WORK)
    for (int64_t r = 0; r < B * L_out; r++) {
        const int64_t b = r / L_out, t = r % L_out;
        float *yr = (float *)y->data + b * y->stride[0] + t * y->stride[1];
        const float *x0 = (const float *)x->data + b * x->stride[0] + t * stride * x->stride[1];
        for (int64_t c = 0; c < C; c++) {
            double s = 0;
            for (int k = 0; k < kernel; k++)
                s += x0[k * x->stride[1] + c];
            yr[c] = (float)(s / kernel);
        }
    }
    return AD_OK;
}

/* Rows of a group-quantized table (a quantized embed_tokens), dequantized one by one. */
static int cpu_embedding_quantized(ad_backend *be, ad_tensor *y, const ad_tensor *table,
                                   const ad_tensor *ids) {
    (void)be;
    const ad_quant_tensor *q = table->quant;
    if (!q) return ad_op_fail_tensor("embedding", table, "is QGROUP but has no quantized data");
    AD_TRY(cpu_check_tensor("embedding", "ids", ids, AD_I32));
    const int64_t N = ad_tensor_numel(ids);
    if (!ad_tensor_is_contiguous(y) || ad_tensor_numel(y) != N * q->cols)
        return ad_op_fail_tensor("embedding", y, "expected %lld contiguous rows of %lld",
                                 (long long)N, (long long)q->cols);
    const int32_t *id = ids->data;
    for (int64_t i = 0; i < N; i++) {
        if (id[i] < 0 || id[i] >= q->rows)
            return ad_op_fail_tensor("embedding", ids, "element %lld = %d is outside [0, %lld)",
                                     (long long)i, id[i], (long long)q->rows);
        ad_quant_dequantize_rows(q, id[i], 1, (float *)y->data + i * q->cols);
    }
    return AD_OK;
}

int ad_cpu_embedding(ad_backend *be, ad_tensor *y, const ad_tensor *table, const ad_tensor *ids) {
    const char *op = "embedding";
    AD_TRY(cpu_check_tensor(op, "y", y, AD_F32));
    if (table->dtype == AD_QGROUP) return cpu_embedding_quantized(be, y, table, ids);
    AD_TRY(cpu_check_weight(op, "table", table));
    AD_TRY(cpu_check_tensor(op, "ids", ids, AD_I32));
    AD_TRY(ad_op_check_ndim(op, table, 2, 2));
    AD_TRY(ad_op_check_rows(op, table));
    AD_TRY(ad_op_check_rows(op, y));
    if (!ad_tensor_is_contiguous(ids)) return ad_op_fail_tensor(op, ids, "must be contiguous");
    const int64_t V = table->shape[0], C = table->shape[1], N = ad_tensor_numel(ids);
    cpu_rows ry;
    cpu_rows_of(y, &ry);
    if (y->ndim < 1 || ry.rows != N || ry.cols != C)
        return ad_op_fail_tensor(op, y, "expected %lld rows (ids %s) of %lld (table %s)",
                                 (long long)N, ids->name, (long long)C, table->name);
    const int32_t *id = ids->data;
    for (int64_t i = 0; i < N; i++)
        if (id[i] < 0 || id[i] >= V)
            return ad_op_fail_tensor(op, ids, "element %lld = %d is outside [0, %lld) of table %s",
                                     (long long)i, id[i], (long long)V, table->name);
    const int64_t es = ad_dtype_bits(table->dtype) / 8;
#pragma omp parallel for num_threads(cpu_of(be)->n_threads)                                        \
    schedule(static) if (N * C > CPU_PARALLEL_MIN_WORK)
    for (int64_t i = 0; i < N; i++)
        cpu_convert_f32(cpu_row(&ry, i), (const char *)table->data + id[i] * table->stride[0] * es,
                        table->dtype, C);
    return AD_OK;
}

int ad_cpu_scatter_rows(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *rows) {
    const char *op = "scatter_rows";
    AD_TRY(cpu_check_tensor(op, "y", y, AD_F32));
    AD_TRY(cpu_check_tensor(op, "x", x, AD_F32));
    AD_TRY(cpu_check_tensor(op, "rows", rows, AD_I32));
    AD_TRY(ad_op_check_ndim(op, y, 1, AD_MAX_DIMS));
    AD_TRY(ad_op_check_ndim(op, x, 1, AD_MAX_DIMS));
    AD_TRY(ad_op_check_rows(op, y));
    AD_TRY(ad_op_check_rows(op, x));
    AD_TRY(ad_op_check_no_alias(op, y, x));
    if (!ad_tensor_is_contiguous(rows)) return ad_op_fail_tensor(op, rows, "must be contiguous");
    cpu_rows ry, rx;
    cpu_rows_of(y, &ry);
    cpu_rows_of(x, &rx);
    const int64_t N = ad_tensor_numel(rows);
    if (rx.rows != N || rx.cols != ry.cols)
        return ad_op_fail_tensor(op, x, "expected %lld rows (rows %s) of %lld (y %s)", (long long)N,
                                 rows->name, (long long)ry.cols, y->name);
    const int32_t *idx = rows->data;
    for (int64_t i = 0; i < N; i++)
        if (idx[i] >= ry.rows)
            return ad_op_fail_tensor(op, rows, "element %lld = %d is outside the %lld rows of %s",
                                     (long long)i, idx[i], (long long)ry.rows, y->name);
#pragma omp parallel for num_threads(cpu_of(be)->n_threads)                                        \
    schedule(static) if (N * rx.cols > CPU_PARALLEL_MIN_WORK)
    for (int64_t i = 0; i < N; i++)
        if (idx[i] >= 0) /* negative: a padding row, skipped */
            memcpy(cpu_row(&ry, idx[i]), cpu_row(&rx, i), (size_t)rx.cols * sizeof(float));
    return AD_OK;
}

int ad_cpu_transpose(ad_backend *be, ad_tensor *y, const ad_tensor *x) {
    const char *op = "transpose";
    AD_TRY(cpu_check_tensor(op, "y", y, AD_F32));
    AD_TRY(cpu_check_tensor(op, "x", x, AD_F32));
    AD_TRY(ad_op_check_transpose(op, y, x));
    const int n = x->ndim;
    const int64_t B = n == 3 ? x->shape[0] : 1, M = x->shape[n - 2], N = x->shape[n - 1];
    const int64_t xb = n == 3 ? x->stride[0] : 0, yb = n == 3 ? y->stride[0] : 0;
    const int64_t xm = x->stride[n - 2], xn = x->stride[n - 1];
    const int64_t yn = y->stride[n - 2], ym = y->stride[n - 1];
    enum { TILE = 32 };
    const int64_t tm = (M + TILE - 1) / TILE, tn = (N + TILE - 1) / TILE;
    /* Square tiles keep both the reads and the writes within a few cache lines. */
#pragma omp parallel for num_threads(cpu_of(be)->n_threads)                                        \
    schedule(static) if (B * M * N > CPU_PARALLEL_MIN_WORK)
    for (int64_t job = 0; job < B * tm * tn; job++) {
        const int64_t b = job / (tm * tn), m0 = (job / tn) % tm * TILE, n0 = job % tn * TILE;
        const float *xs = (const float *)x->data + b * xb;
        float *ys = (float *)y->data + b * yb;
        const int64_t m1 = m0 + TILE < M ? m0 + TILE : M, n1 = n0 + TILE < N ? n0 + TILE : N;
        for (int64_t m = m0; m < m1; m++)
            for (int64_t j = n0; j < n1; j++)
                ys[j * yn + m * ym] = xs[m * xm + j * xn];
    }
    return AD_OK;
}
