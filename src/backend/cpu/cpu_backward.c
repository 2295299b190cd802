#include "backend/cpu/cpu_backward.h"

#include <cblas.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "backend/cpu/cpu_distill_loss.h"
#include "backend/op_check.h"
#include "core/error.h"

/* ---- checks --------------------------------------------------------------------------- */

static int need_f32(const ad_tensor *t, const char *op, const char *role) {
    if (!t) return ad_fail("%s: %s is required", op, role);
    if (t->device != AD_DEVICE_CPU || t->dtype != AD_F32 || !ad_tensor_is_contiguous(t))
        return ad_fail("%s: %s (%s) must be a contiguous F32 CPU tensor", op, role, t->name);
    return AD_OK;
}

static int need_numel(const ad_tensor *t, int64_t n, const char *op, const char *role) {
    if (ad_tensor_numel(t) != n)
        return ad_fail("%s: %s (%s) has %lld elements, expected %lld", op, role, t->name,
                       (long long)ad_tensor_numel(t), (long long)n);
    return AD_OK;
}

/* An optional output: NULL passes, otherwise it must be F32 with n elements. */
static int need_out(const ad_tensor *t, int64_t n, const char *op, const char *role) {
    if (!t) return AD_OK;
    AD_TRY(need_f32(t, op, role));
    return need_numel(t, n, op, role);
}

static int64_t last_dim(const ad_tensor *t) {
    return t->ndim ? t->shape[t->ndim - 1] : 1;
}

/* ---- linear and conv ------------------------------------------------------------------ */

static int linear_backward(ad_backend *be, ad_tensor *dx, ad_tensor *dw, ad_tensor *db,
                           const ad_tensor *dy, const ad_tensor *x, const ad_tensor *w,
                           bool overwrite) {
    (void)be;
    const char *op = "linear_backward";
    AD_TRY(need_f32(dy, op, "dy"));
    AD_TRY(need_f32(x, op, "x"));
    AD_TRY(need_f32(w, op, "w"));
    if (w->ndim != 2) return ad_fail("%s: w (%s) must be 2-D [N, K]", op, w->name);
    const int64_t N = w->shape[0], K = w->shape[1];
    if (last_dim(x) != K || last_dim(dy) != N)
        return ad_fail(
            "%s: x (%s) last dim %lld / dy (%s) last dim %lld do not match w [%lld, %lld]", op,
            x->name, (long long)last_dim(x), dy->name, (long long)last_dim(dy), (long long)N,
            (long long)K);
    const int64_t M = ad_tensor_numel(x) / K;
    AD_TRY(need_numel(dy, M * N, op, "dy"));
    if (dx) {
        AD_TRY(need_f32(dx, op, "dx"));
        AD_TRY(need_numel(dx, M * K, op, "dx"));
        if (M)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)M, (int)K, (int)N, 1.0f,
                        dy->data, (int)N, w->data, (int)K, 0.0f, dx->data, (int)K);
    }
    if (dw) {
        AD_TRY(need_f32(dw, op, "dw"));
        AD_TRY(need_numel(dw, N * K, op, "dw"));
        if (M)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)N, (int)K, (int)M, 1.0f,
                        dy->data, (int)N, x->data, (int)K, overwrite ? 0.0f : 1.0f, dw->data,
                        (int)K);
        else if (overwrite)
            memset(dw->data, 0, sizeof(float) * (size_t)(N * K));
    }
    if (db) {
        AD_TRY(need_f32(db, op, "db"));
        AD_TRY(need_numel(db, N, op, "db"));
        float *b = db->data;
        const float *g = dy->data;
#pragma omp parallel for schedule(static)
        for (int64_t n = 0; n < N; n++) {
            double s = 0;
            for (int64_t m = 0; m < M; m++)
                s += g[m * N + n];
            b[n] += (float)s;
        }
    }
    return AD_OK;
}

static int conv1d_backward(ad_backend *be, ad_tensor *dx, ad_tensor *dw, ad_tensor *db,
                           const ad_tensor *dy, const ad_tensor *x, const ad_tensor *w, int stride,
                           int padding) {
    (void)be;
    const char *op = "conv1d_backward";
    AD_TRY(need_f32(dy, op, "dy"));
    AD_TRY(need_f32(x, op, "x"));
    AD_TRY(need_f32(w, op, "w"));
    if (x->ndim != 3 || w->ndim != 3 || dy->ndim != 3)
        return ad_fail("%s: x [B, L, C_in], w [C_out, C_in, K] and dy [B, L_out, C_out] expected",
                       op);
    const int64_t B = x->shape[0], L = x->shape[1], Cin = x->shape[2];
    const int64_t Cout = w->shape[0], K = w->shape[2];
    if (stride < 1 || padding < 0) return ad_fail("%s: stride must be >= 1 and padding >= 0", op);
    const int64_t Lout = (L + 2 * padding - K) / stride + 1;
    if (w->shape[1] != Cin || dy->shape[0] != B || dy->shape[1] != Lout || dy->shape[2] != Cout)
        return ad_fail("%s: shapes disagree: x [%lld, %lld, %lld], w [%lld, %lld, %lld], dy "
                       "[%lld, %lld, %lld] (expected L_out %lld)",
                       op, (long long)B, (long long)L, (long long)Cin, (long long)Cout,
                       (long long)w->shape[1], (long long)K, (long long)dy->shape[0],
                       (long long)dy->shape[1], (long long)dy->shape[2], (long long)Lout);
    const float *g = dy->data, *xs = x->data, *ws = w->data;
    /* im2col of x: cols[b*Lout + o, ci*K + k] = x[b, o*stride + k - padding, ci]. */
    const int64_t rows = B * Lout, width = Cin * K;
    float *cols = ad_malloc(sizeof(float) * (size_t)(rows * width + 1), "conv1d_backward columns");
    if (!cols) return AD_ERR;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const int64_t b = r / Lout, o = r % Lout;
        for (int64_t ci = 0; ci < Cin; ci++) {
            for (int64_t k = 0; k < K; k++) {
                int64_t t = o * stride + k - padding;
                cols[r * width + ci * K + k] = t >= 0 && t < L ? xs[(b * L + t) * Cin + ci] : 0.0f;
            }
        }
    }
    int rc = AD_OK;
    if (dw) {
        if ((rc = need_f32(dw, op, "dw")) == AD_OK &&
            (rc = need_numel(dw, Cout * width, op, "dw")) == AD_OK)
            cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)Cout, (int)width, (int)rows,
                        1.0f, g, (int)Cout, cols, (int)width, 1.0f, dw->data, (int)width);
    }
    if (rc == AD_OK && db) {
        if ((rc = need_f32(db, op, "db")) == AD_OK &&
            (rc = need_numel(db, Cout, op, "db")) == AD_OK) {
            float *bias = db->data;
            for (int64_t co = 0; co < Cout; co++) {
                double s = 0;
                for (int64_t r = 0; r < rows; r++)
                    s += g[r * Cout + co];
                bias[co] += (float)s;
            }
        }
    }
    if (rc == AD_OK && dx) {
        if ((rc = need_f32(dx, op, "dx")) == AD_OK &&
            (rc = need_numel(dx, B * L * Cin, op, "dx")) == AD_OK) {
            /* dcols = dy @ W2, then col2im (scatter-add back to x positions). */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)rows, (int)width, (int)Cout,
                        1.0f, g, (int)Cout, ws, (int)width, 0.0f, cols, (int)width);
            float *d = dx->data;
            memset(d, 0, sizeof(float) * (size_t)(B * L * Cin));
            /* Each batch element is independent; within one, positions overlap, so one thread
             * per batch element keeps the sum order fixed. */
#pragma omp parallel for schedule(static)
            for (int64_t b = 0; b < B; b++) {
                for (int64_t o = 0; o < Lout; o++) {
                    const float *c = cols + (b * Lout + o) * width;
                    for (int64_t k = 0; k < K; k++) {
                        int64_t t = o * stride + k - padding;
                        if (t < 0 || t >= L) continue;
                        float *dst = d + (b * L + t) * Cin;
                        for (int64_t ci = 0; ci < Cin; ci++)
                            dst[ci] += c[ci * K + k];
                    }
                }
            }
        }
    }
    free(cols);
    return rc;
}

/* ---- elementwise ---------------------------------------------------------------------- */

static int gelu_backward(ad_backend *be, ad_tensor *dx, const ad_tensor *dy, const ad_tensor *x) {
    (void)be;
    const char *op = "gelu_backward";
    AD_TRY(need_f32(dx, op, "dx"));
    AD_TRY(need_f32(dy, op, "dy"));
    AD_TRY(need_f32(x, op, "x"));
    const int64_t n = ad_tensor_numel(x);
    AD_TRY(need_numel(dy, n, op, "dy"));
    AD_TRY(need_numel(dx, n, op, "dx"));
    float *d = dx->data;
    const float *g = dy->data, *xs = x->data;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        double v = xs[i];
        double cdf = 0.5 * (1.0 + erf(v * M_SQRT1_2));
        double pdf = exp(-0.5 * v * v) * (0.5 * M_2_SQRTPI * M_SQRT1_2); /* 1/sqrt(2 pi) */
        d[i] = (float)(g[i] * (cdf + v * pdf));
    }
    return AD_OK;
}

static int silu_mul_backward(ad_backend *be, ad_tensor *dgate, ad_tensor *dup, const ad_tensor *dy,
                             const ad_tensor *gate, const ad_tensor *up) {
    (void)be;
    const char *op = "silu_mul_backward";
    AD_TRY(need_f32(dy, op, "dy"));
    AD_TRY(need_f32(gate, op, "gate"));
    AD_TRY(need_f32(up, op, "up"));
    const int64_t n = ad_tensor_numel(dy);
    AD_TRY(need_numel(gate, n, op, "gate"));
    AD_TRY(need_numel(up, n, op, "up"));
    AD_TRY(need_out(dgate, n, op, "dgate"));
    AD_TRY(need_out(dup, n, op, "dup"));
    const float *g = dy->data, *a = gate->data, *u = up->data;
    float *da = dgate ? dgate->data : NULL, *du = dup ? dup->data : NULL;
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i++) {
        double x = a[i], sig = 1.0 / (1.0 + exp(-x)), silu = x * sig;
        double dyi = g[i], ui = u[i]; /* read before writing: outputs may alias inputs */
        if (da) da[i] = (float)(dyi * ui * sig * (1.0 + x * (1.0 - sig)));
        if (du) du[i] = (float)(dyi * silu);
    }
    return AD_OK;
}

/* ---- normalisation -------------------------------------------------------------------- */

/* Column sums of a [rows, C] product accumulated in a fixed order: per-thread partial sums over
 * fixed row blocks, combined in block order. */
#define NORM_BLOCK_ROWS 64

static int layernorm_backward(ad_backend *be, ad_tensor *dx, ad_tensor *dweight, ad_tensor *dbias,
                              const ad_tensor *dy, const ad_tensor *x, const ad_tensor *weight,
                              float eps, bool dx_accumulate) {
    (void)be;
    const char *op = "layernorm_backward";
    AD_TRY(need_f32(dy, op, "dy"));
    AD_TRY(need_f32(x, op, "x"));
    AD_TRY(need_f32(weight, op, "weight"));
    const int64_t C = last_dim(x), rows = ad_tensor_numel(x) / (C ? C : 1);
    AD_TRY(need_numel(dy, rows * C, op, "dy"));
    AD_TRY(need_numel(weight, C, op, "weight"));
    AD_TRY(need_out(dx, rows * C, op, "dx"));
    AD_TRY(need_out(dweight, C, op, "dweight"));
    AD_TRY(need_out(dbias, C, op, "dbias"));
    const int64_t blocks = (rows + NORM_BLOCK_ROWS - 1) / NORM_BLOCK_ROWS;
    double *partial = ad_calloc((size_t)(blocks * 2 * C + 1), sizeof(double), op);
    if (!partial) return AD_ERR;
    const float *g = dy->data, *xs = x->data, *w = weight->data;
    float *d = dx ? dx->data : NULL;
#pragma omp parallel for schedule(static)
    for (int64_t blk = 0; blk < blocks; blk++) {
        double *pw = partial + blk * 2 * C, *pb = pw + C;
        for (int64_t r = blk * NORM_BLOCK_ROWS; r < rows && r < (blk + 1) * NORM_BLOCK_ROWS; r++) {
            const float *xr = xs + r * C, *gr = g + r * C;
            double mean = 0, var = 0;
            for (int64_t c = 0; c < C; c++)
                mean += xr[c];
            mean /= (double)C;
            for (int64_t c = 0; c < C; c++)
                var += (xr[c] - mean) * (xr[c] - mean);
            var /= (double)C;
            double rstd = 1.0 / sqrt(var + eps), m1 = 0, m2 = 0;
            for (int64_t c = 0; c < C; c++) {
                double xhat = (xr[c] - mean) * rstd, dxhat = (double)gr[c] * w[c];
                m1 += dxhat;
                m2 += dxhat * xhat;
                pw[c] += gr[c] * xhat;
                pb[c] += gr[c];
            }
            m1 /= (double)C;
            m2 /= (double)C;
            if (d) {
                float *dr = d + r * C;
                for (int64_t c = 0; c < C; c++) {
                    double xhat = (xr[c] - mean) * rstd, dxhat = (double)gr[c] * w[c];
                    const float v = (float)(rstd * (dxhat - m1 - xhat * m2));
                    dr[c] = dx_accumulate ? dr[c] + v : v;
                }
            }
        }
    }
    for (int64_t blk = 0; blk < blocks; blk++) {
        for (int64_t c = 0; c < C; c++) {
            if (dweight) ((float *)dweight->data)[c] += (float)partial[blk * 2 * C + c];
            if (dbias) ((float *)dbias->data)[c] += (float)partial[blk * 2 * C + C + c];
        }
    }
    free(partial);
    return AD_OK;
}

static int rmsnorm_backward(ad_backend *be, ad_tensor *dx, ad_tensor *dweight, const ad_tensor *dy,
                            const ad_tensor *x, const ad_tensor *weight, float eps,
                            bool dx_accumulate) {
    (void)be;
    const char *op = "rmsnorm_backward";
    AD_TRY(need_f32(dy, op, "dy"));
    AD_TRY(need_f32(x, op, "x"));
    AD_TRY(need_f32(weight, op, "weight"));
    const int64_t C = last_dim(x), rows = ad_tensor_numel(x) / (C ? C : 1);
    AD_TRY(need_numel(dy, rows * C, op, "dy"));
    AD_TRY(need_numel(weight, C, op, "weight"));
    AD_TRY(need_out(dx, rows * C, op, "dx"));
    AD_TRY(need_out(dweight, C, op, "dweight"));
    const int64_t blocks = (rows + NORM_BLOCK_ROWS - 1) / NORM_BLOCK_ROWS;
    double *partial = ad_calloc((size_t)(blocks * C + 1), sizeof(double), op);
    if (!partial) return AD_ERR;
    const float *g = dy->data, *xs = x->data, *w = weight->data;
    float *d = dx ? dx->data : NULL;
#pragma omp parallel for schedule(static)
    for (int64_t blk = 0; blk < blocks; blk++) {
        double *pw = partial + blk * C;
        for (int64_t r = blk * NORM_BLOCK_ROWS; r < rows && r < (blk + 1) * NORM_BLOCK_ROWS; r++) {
            const float *xr = xs + r * C, *gr = g + r * C;
            double ms = 0;
            for (int64_t c = 0; c < C; c++)
                ms += (double)xr[c] * xr[c];
            ms /= (double)C;
            double rs = 1.0 / sqrt(ms + eps), dot = 0;
            for (int64_t c = 0; c < C; c++) {
                dot += (double)gr[c] * w[c] * xr[c];
                pw[c] += gr[c] * xr[c] * rs;
            }
            dot /= (double)C;
            if (d) {
                float *dr = d + r * C;
                for (int64_t c = 0; c < C; c++) {
                    const float v = (float)(rs * ((double)gr[c] * w[c] - xr[c] * rs * rs * dot));
                    dr[c] = dx_accumulate ? dr[c] + v : v;
                }
            }
        }
    }
    if (dweight)
        for (int64_t blk = 0; blk < blocks; blk++)
            for (int64_t c = 0; c < C; c++)
                ((float *)dweight->data)[c] += (float)partial[blk * C + c];
    free(partial);
    return AD_OK;
}

/* ---- sequence ops --------------------------------------------------------------------- */

static int rope_backward(ad_backend *be, ad_tensor *dx, const ad_tensor *positions, int n_heads,
                         int head_dim, float theta) {
    (void)be;
    const char *op = "rope_backward";
    AD_TRY(need_f32(dx, op, "dx"));
    if (dx->ndim != 3 || dx->shape[2] != (int64_t)n_heads * head_dim || head_dim % 2)
        return ad_fail("%s: dx (%s) must be [B, T, %d * %d] with an even head_dim", op, dx->name,
                       n_heads, head_dim);
    const int64_t B = dx->shape[0], T = dx->shape[1], half = head_dim / 2;
    if (positions->dtype != AD_I32 || ad_tensor_numel(positions) != B * T)
        return ad_fail("%s: positions (%s) must be I32 [B, T]", op, positions->name);
    const int32_t *pos = positions->data;
    float *d = dx->data;
#pragma omp parallel for schedule(static)
    for (int64_t bt = 0; bt < B * T; bt++) {
        for (int64_t j = 0; j < half; j++) {
            /* The angle exactly as transformers computes it in float32. */
            float inv_freq = 1.0f / powf(theta, (float)(2 * j) / (float)head_dim);
            float angle = (float)pos[bt] * inv_freq;
            float c = cosf(angle), s = sinf(angle);
            for (int h = 0; h < n_heads; h++) {
                float *v = d + bt * n_heads * head_dim + h * head_dim;
                float g1 = v[j], g2 = v[j + half];
                v[j] = g1 * c + g2 * s;
                v[j + half] = g2 * c - g1 * s;
            }
        }
    }
    return AD_OK;
}

static int check_qkv(const ad_tensor *t, int64_t B, int heads, int D, const char *op,
                     const char *role) {
    if (t->device != AD_DEVICE_CPU || t->dtype != AD_F32 || t->ndim != 3 || t->shape[0] != B ||
        t->shape[2] != (int64_t)heads * D || t->stride[2] != 1)
        return ad_fail("%s: %s (%s) must be F32 [%lld, T, %d] with unit stride in the last dim", op,
                       role, t->name, (long long)B, heads * D);
    return AD_OK;
}

static int attention_backward(ad_backend *be, ad_tensor *dq, ad_tensor *dk, ad_tensor *dv,
                              const ad_tensor *dout, const ad_tensor *out, const ad_tensor *q,
                              const ad_tensor *k, const ad_tensor *v,
                              const ad_attention_params *p) {
    (void)be;
    const char *op = "attention_backward";
    const int H = p->n_heads, KVH = p->n_kv_heads, D = p->head_dim;
    if (H <= 0 || KVH <= 0 || H % KVH != 0)
        return ad_fail("%s: n_heads %d must be a positive multiple of n_kv_heads %d", op, H, KVH);
    const int64_t B = q->shape[0], Tq = q->shape[1], Tk = k->shape[1];
    AD_TRY(check_qkv(q, B, H, D, op, "q"));
    AD_TRY(check_qkv(k, B, KVH, D, op, "k"));
    AD_TRY(check_qkv(v, B, KVH, D, op, "v"));
    AD_TRY(check_qkv(out, B, H, D, op, "out"));
    AD_TRY(check_qkv(dout, B, H, D, op, "dout"));
    if (v->shape[1] != Tk || out->shape[1] != Tq || dout->shape[1] != Tq)
        return ad_fail("%s: sequence lengths disagree", op);
    if (dq) AD_TRY(check_qkv(dq, B, H, D, op, "dq"));
    if (dk) AD_TRY(check_qkv(dk, B, KVH, D, op, "dk"));
    if (dv) AD_TRY(check_qkv(dv, B, KVH, D, op, "dv"));
    AD_TRY(ad_op_check_attention_grads(op, dq, dk, dv, dout, out, q, k, v));
    const int group = H / KVH;
    /* One task per (batch, kv head): the query heads of a group add into the same dk/dv rows,
     * so one task handles the whole group, in head order, for a fixed summation order. Each
     * task recomputes P = softmax(scale * Q K^T) and does the four products with single-
     * threaded BLAS (a BLAS-threaded call inside an OpenMP task would oversubscribe). */
    const int64_t tasks = B * KVH;
    const int nt = omp_get_max_threads() < tasks ? omp_get_max_threads() : (int)tasks;
    const size_t per = (size_t)(Tq > 0 ? Tq : 1) * (size_t)(Tk > 0 ? Tk : 1);
    float *scratch = ad_malloc(sizeof(float) * per * 2 * (size_t)(nt > 0 ? nt : 1), op);
    if (!scratch) return AD_ERR;
    const int blas_threads = openblas_get_num_threads();
    if (nt > 1) openblas_set_num_threads(1);
#pragma omp parallel for num_threads(nt > 0 ? nt : 1) schedule(dynamic, 1)
    for (int64_t task = 0; task < tasks; task++) {
        const int64_t b = task / KVH;
        const int kvh = (int)(task % KVH);
        const int key_len = p->key_len ? p->key_len[b] : (int)Tk;
        /* Keys any row of this batch element sees: the products stop there, so keys past
         * key_len are never read (as in the forward) and their gradients stay 0. */
        int64_t kb = key_len < Tk ? key_len : Tk;
        if (p->causal && p->q_offset + Tq < kb) kb = p->q_offset + Tq;
        if (kb < 0) kb = 0;
        float *P = scratch + (size_t)omp_get_thread_num() * per * 2, *dP = P + per;
        const int ldq = (int)q->stride[1], ldk = (int)k->stride[1], ldv = (int)v->stride[1];
        const int ldo = (int)out->stride[1], lddo = (int)dout->stride[1];
#define HEAD(t, head) ((float *)(t)->data + b * (t)->stride[0] + (int64_t)(head)*D)
        float *dk_h = dk ? HEAD(dk, kvh) : NULL, *dv_h = dv ? HEAD(dv, kvh) : NULL;
        for (int64_t j = 0; j < Tk; j++) {
            if (dk_h) memset(dk_h + j * dk->stride[1], 0, sizeof(float) * (size_t)D);
            if (dv_h) memset(dv_h + j * dv->stride[1], 0, sizeof(float) * (size_t)D);
        }
        const float *k_h = HEAD(k, kvh), *v_h = HEAD(v, kvh);
        for (int hh = 0; hh < group; hh++) {
            const int h = kvh * group + hh;
            const float *q_h = HEAD(q, h), *o_h = HEAD(out, h), *do_h = HEAD(dout, h);
            if (Tq == 0) continue;
            if (kb == 0) { /* no key seen: no gradient reaches q */
                for (int64_t i = 0; dq && i < Tq; i++)
                    memset(HEAD(dq, h) + i * dq->stride[1], 0, sizeof(float) * (size_t)D);
                continue;
            }
            /* P = softmax over the visible keys of scale * Q K^T (masked entries exactly 0) */
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)Tq, (int)kb, D, p->scale, q_h,
                        ldq, k_h, ldk, 0.0f, P, (int)Tk);
            for (int64_t i = 0; i < Tq; i++) {
                float *row = P + i * Tk;
                int64_t limit = key_len < Tk ? key_len : Tk;
                if (p->causal && p->q_offset + i + 1 < limit) limit = p->q_offset + i + 1;
                if (limit < 0) limit = 0;
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j < limit; j++)
                    mx = fmax(mx, row[j]);
                for (int64_t j = 0; j < limit; j++)
                    sum += (row[j] = (float)exp(row[j] - mx));
                for (int64_t j = 0; j < limit; j++)
                    row[j] = (float)(row[j] / sum);
                for (int64_t j = limit; j < kb; j++)
                    row[j] = 0.0f;
            }
            /* dV += P^T dO ; dP = dO V^T */
            if (dv_h)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)kb, D, (int)Tq, 1.0f, P,
                            (int)Tk, do_h, lddo, 1.0f, dv_h, (int)dv->stride[1]);
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)Tq, (int)kb, D, 1.0f, do_h,
                        lddo, v_h, ldv, 0.0f, dP, (int)Tk);
            /* dS = P * (dP - rowsum(dO * O)), in place in dP */
            for (int64_t i = 0; i < Tq; i++) {
                double delta = 0;
                for (int d = 0; d < D; d++)
                    delta += (double)do_h[i * lddo + d] * o_h[i * ldo + d];
                float *ds = dP + i * Tk;
                const float *pr = P + i * Tk;
                for (int64_t j = 0; j < kb; j++)
                    ds[j] = (float)(pr[j] * ((double)ds[j] - delta));
            }
            /* dQ = scale * dS K ; dK += scale * dS^T Q */
            if (dq)
                cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, (int)Tq, D, (int)kb,
                            p->scale, dP, (int)Tk, k_h, ldk, 0.0f, HEAD(dq, h), (int)dq->stride[1]);
            if (dk_h)
                cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, (int)kb, D, (int)Tq, p->scale,
                            dP, (int)Tk, q_h, ldq, 1.0f, dk_h, (int)dk->stride[1]);
        }
#undef HEAD
    }
    if (nt > 1) openblas_set_num_threads(blas_threads);
    free(scratch);
    return AD_OK;
}

static int avg_pool1d_backward(ad_backend *be, ad_tensor *dx, const ad_tensor *dy, int kernel,
                               int stride) {
    (void)be;
    const char *op = "avg_pool1d_backward";
    AD_TRY(need_f32(dx, op, "dx"));
    AD_TRY(need_f32(dy, op, "dy"));
    AD_TRY(ad_op_check_pool(op, dy, dx, kernel, stride));
    const int64_t B = dx->shape[0], L = dx->shape[1], C = dx->shape[2], Lout = dy->shape[1];
    float *d = dx->data;
    const float *g = dy->data;
    memset(d, 0, sizeof(float) * (size_t)(B * L * C));
#pragma omp parallel for schedule(static)
    for (int64_t b = 0; b < B; b++)
        for (int64_t o = 0; o < Lout; o++)
            for (int kk = 0; kk < kernel; kk++) {
                float *dst = d + (b * L + o * stride + kk) * C;
                const float *src = g + (b * Lout + o) * C;
                for (int64_t c = 0; c < C; c++)
                    dst[c] += src[c] / (float)kernel;
            }
    return AD_OK;
}

static int embedding_backward(ad_backend *be, ad_tensor *dtable, const ad_tensor *dy,
                              const ad_tensor *ids) {
    (void)be;
    const char *op = "embedding_backward";
    AD_TRY(need_f32(dtable, op, "dtable"));
    AD_TRY(need_f32(dy, op, "dy"));
    if (ids->dtype != AD_I32 || !ad_tensor_is_contiguous(ids))
        return ad_fail("%s: ids (%s) must be contiguous I32", op, ids->name);
    if (dtable->ndim != 2) return ad_fail("%s: dtable must be [V, C]", op);
    const int64_t V = dtable->shape[0], C = dtable->shape[1], N = ad_tensor_numel(ids);
    AD_TRY(need_numel(dy, N * C, op, "dy"));
    const int32_t *id = ids->data;
    for (int64_t n = 0; n < N; n++)
        if (id[n] >= V)
            return ad_fail("%s: id %d at %lld outside the table (%lld rows)", op, id[n],
                           (long long)n, (long long)V);
    float *t = dtable->data;
    const float *g = dy->data;
    /* Threads split the feature columns, so every table element is summed in row order by one
     * thread: deterministic without atomics. */
#pragma omp parallel
    {
        const int64_t nt = omp_get_num_threads(), me = omp_get_thread_num();
        const int64_t c0 = C * me / nt, c1 = C * (me + 1) / nt;
        for (int64_t n = 0; n < N; n++) {
            if (id[n] < 0) continue;
            float *dst = t + (int64_t)id[n] * C;
            const float *src = g + n * C;
            for (int64_t c = c0; c < c1; c++)
                dst[c] += src[c];
        }
    }
    return AD_OK;
}

static int gather_rows(ad_backend *be, ad_tensor *dx, const ad_tensor *dy, const ad_tensor *rows) {
    (void)be;
    const char *op = "gather_rows";
    AD_TRY(need_f32(dx, op, "dx"));
    AD_TRY(need_f32(dy, op, "dy"));
    if (rows->dtype != AD_I32 || !ad_tensor_is_contiguous(rows))
        return ad_fail("%s: rows (%s) must be contiguous I32", op, rows->name);
    const int64_t C = last_dim(dy), R = ad_tensor_numel(dy) / (C ? C : 1),
                  N = ad_tensor_numel(rows);
    AD_TRY(need_numel(dx, N * C, op, "dx"));
    const int32_t *r = rows->data;
    for (int64_t i = 0; i < N; i++)
        if (r[i] >= R)
            return ad_fail("%s: row %d at %lld outside [0, %lld)", op, r[i], (long long)i,
                           (long long)R);
    for (int64_t i = 0; i < N; i++) {
        float *out = (float *)dx->data + i * C;
        if (r[i] < 0) /* a row scatter_rows skipped */
            memset(out, 0, sizeof(float) * (size_t)C);
        else
            memcpy(out, (const float *)dy->data + (int64_t)r[i] * C, sizeof(float) * (size_t)C);
    }
    return AD_OK;
}

void ad_cpu_register_backward(ad_backend *be) {
    be->linear_backward = linear_backward;
    be->conv1d_backward = conv1d_backward;
    be->gelu_backward = gelu_backward;
    be->silu_mul_backward = silu_mul_backward;
    be->layernorm_backward = layernorm_backward;
    be->rmsnorm_backward = rmsnorm_backward;
    be->rope_backward = rope_backward;
    be->attention_backward = attention_backward;
    be->avg_pool1d_backward = avg_pool1d_backward;
    be->embedding_backward = embedding_backward;
    be->gather_rows = gather_rows;
    be->distill_loss = ad_cpu_distill_loss;
}
