// Attention through batched cuBLASLt GEMMs (the "math" path of SDPA), for training-size
// sequences: per batch element and block of heads, S = scale Q K^T into a scratch, a masked
// softmax per row (causal with q_offset, key_len), O = P V. The backward recomputes S and P,
// then dP = dO V^T, dS = P (dP - delta) with delta = rowsum(dO * O), dQ = scale dS K,
// dK = scale dS^T Q, dV = P^T dO; a GQA group's query heads add into their kv head's dK / dV
// in head order. Every FLOP is in the GEMMs, on the tensor cores when bf16 GEMMs are on
// (operands rounded to bf16, fp32 accumulation, like cu_gemm) and in full fp32 otherwise, so
// the F32 path stays within rounding of the CPU reference. The GEMMs of a batch element stop
// at the last key any of its rows sees (key_len, and for causal rows the last query), so keys
// past key_len are never read, whatever they hold, as in the CPU reference. The scores take
// Tq x Tk floats per head at most; sequences whose one head would exceed the scratch budget
// use the tiled kernels of attention.cu, which need no such memory (so do decoding steps,
// where Tq is tiny).
#include <string.h>

#include "cuda_internal.h"

#define ATTG_BLOCK 128

/* Keys visible to query row i of batch element b: [0, limit). */
__device__ static inline int64_t attg_limit(const int *key_len, int64_t b, int64_t Tk, bool causal,
                                            int q_offset, int64_t i) {
    int64_t lim = key_len ? key_len[b] : Tk;
    if (causal && q_offset + i + 1 < lim) lim = q_offset + i + 1;
    return lim < Tk ? lim : Tk; /* Tk: the keys this launch multiplied */
}

/* One block per score row (row = head * Tq + i of this head block): P = softmax over the
 * visible keys, 0 elsewhere (a row with no visible key is all 0, so its output is 0, as in the
 * CPU reference). The f32 probabilities stay in s; they also go to `p` in dtype pdt when p is
 * another buffer (the bf16 GEMM operand). */
__global__ static void attg_softmax_kernel(float *s, char *p, int pdt, int64_t Tq, int64_t Tk,
                                           const int *key_len, int64_t b, bool causal,
                                           int q_offset) {
    __shared__ float shf[32];
    const int64_t row = blockIdx.x, i = row % Tq;
    const int64_t lim = attg_limit(key_len, b, Tk, causal, q_offset, i);
    float *sr = s + row * Tk;
    float mx = -INFINITY;
    for (int64_t j = threadIdx.x; j < lim; j += blockDim.x)
        mx = fmaxf(mx, sr[j]);
    mx = cu_block_max(mx, shf);
    float sum = 0.0f;
    for (int64_t j = threadIdx.x; j < lim; j += blockDim.x)
        sum += expf(sr[j] - mx);
    sum = cu_block_sum(sum, shf);
    const float inv = lim > 0 ? 1.0f / sum : 0.0f;
    for (int64_t j = threadIdx.x; j < Tk; j += blockDim.x) {
        const float v = j < lim ? expf(sr[j] - mx) * inv : 0.0f;
        if (p != (char *)s) cu_store(p, pdt, row * Tk + j, v);
        sr[j] = v;
    }
}

/* dS = P (dP - delta) per row, delta = dO_i . O_i (the reference's formula); written over dP
 * (f32) and, when d16 is non-NULL, as a bf16 operand too. */
__global__ static void attg_dscore_kernel(float *dp, char *d16, const float *prob, int64_t Tq,
                                          int64_t Tk, int h0, int D, const char *dout, int ddt,
                                          int64_t db, int64_t dt, const char *out, int odt,
                                          int64_t ob, int64_t ot, int64_t b, const int *key_len,
                                          bool causal, int q_offset) {
    __shared__ float shf[32];
    const int64_t row = blockIdx.x, i = row % Tq, h = h0 + row / Tq;
    const int64_t lim = attg_limit(key_len, b, Tk, causal, q_offset, i);
    float delta = 0.0f;
    for (int d = threadIdx.x; d < D; d += blockDim.x)
        delta += cu_load(dout, ddt, b * db + i * dt + h * D + d) *
                 cu_load(out, odt, b * ob + i * ot + h * D + d);
    delta = cu_block_sum(delta, shf);
    float *r = dp + row * Tk;
    const float *pr = prob + row * Tk;
    for (int64_t j = threadIdx.x; j < Tk; j += blockDim.x) {
        const float v = j < lim ? pr[j] * (r[j] - delta) : 0.0f;
        r[j] = v;
        if (d16) cu_store(d16, AD_BF16, row * Tk + j, v);
    }
}

/* A [B, T, heads * D] operand in the GEMM operand dtype: the view itself when its dtype is
 * already that, else a contiguous converted copy in `slot`. */
typedef struct {
    char *data;
    ad_dtype dtype;
    int64_t bstride, tstride; /* elements */
} attg_operand;

static int attg_operand_of(ad_backend *be, const ad_tensor *t, ad_dtype dt, int slot,
                           attg_operand *o) {
    if (t->dtype == dt) {
        o->data = (char *)t->data;
        o->dtype = dt;
        o->bstride = t->stride[0];
        o->tstride = t->stride[1];
        return AD_OK;
    }
    void *buf;
    AD_TRY(cu_scratch(be, slot, (size_t)ad_tensor_numel(t) * (size_t)cu_esize(dt), &buf));
    ad_tensor c;
    AD_TRY(ad_tensor_init(&c, buf, dt, AD_DEVICE_CUDA, 3, t->shape, "attention operand"));
    AD_TRY(cu_copy(be, &c, t));
    o->data = (char *)buf;
    o->dtype = dt;
    o->bstride = t->shape[1] * t->shape[2];
    o->tstride = t->shape[2];
    return AD_OK;
}

/* Rows x D of heads h.. of batch element b, as a GEMM operand (batch stride D per head). */
static cu_mat attg_heads(const attg_operand *o, int64_t b, int64_t h, int64_t rows, int D) {
    cu_mat m;
    memset(&m, 0, sizeof m);
    m.data = o->data + (b * o->bstride + h * D) * cu_esize(o->dtype);
    m.dtype = o->dtype;
    m.rows = rows;
    m.cols = D;
    m.ld = o->tstride;
    return m;
}

static cu_mat attg_tensor_heads(const ad_tensor *t, int64_t b, int64_t h, int64_t rows, int D) {
    attg_operand o = {(char *)t->data, t->dtype, t->stride[0], t->stride[1]};
    return attg_heads(&o, b, h, rows, D);
}

/* Keys any query row of batch element b sees: the GEMMs stop there, so keys past key_len
 * (padding, whatever it holds) are never read, as in the CPU reference, and causal rows skip
 * the keys after the last query. */
static int64_t attg_keys(const ad_attention_params *p, int64_t b, int64_t Tq, int64_t Tk) {
    int64_t kb = p->key_len ? p->key_len[b] : Tk;
    if (p->causal && p->q_offset + Tq < kb) kb = p->q_offset + Tq;
    return kb;
}

/* Rows [r0, T) of batch element b of a [B, T, C] tensor set to 0: the output of a row that
 * sees no key, the gradient of a key no row sees. */
static int attg_zero_rows(ad_backend *be, const ad_tensor *t, int64_t b, int64_t r0) {
    if (!t || r0 >= t->shape[1]) return AD_OK;
    ad_tensor one, rows;
    AD_TRY(ad_tensor_slice(t, 0, b, 1, &one));
    AD_TRY(ad_tensor_slice(&one, 1, r0, t->shape[1] - r0, &rows));
    return cu_fill(be, &rows, 0.0f);
}

static cu_mat attg_scores(void *data, ad_dtype dt, int64_t Tq, int64_t Tk) {
    cu_mat m;
    memset(&m, 0, sizeof m);
    m.data = (char *)data;
    m.dtype = dt;
    m.rows = Tq;
    m.cols = Tk;
    m.ld = Tk;
    return m;
}

/* Query heads per GEMM launch: all of a GQA group shares one kv head (its stride 0); without
 * GQA, as many heads as the score budget holds. 0 when one launch's scores exceed it. */
static int attg_heads_per_launch(ad_backend *be, const ad_attention_params *p, int64_t Tq,
                                 int64_t Tk) {
    const size_t per_head = sizeof(float) * (size_t)Tq * (size_t)Tk,
                 budget = cu_of(be)->attention_scratch_bytes;
    const int group = p->n_heads / p->n_kv_heads;
    if (per_head * (size_t)group > budget) return 0;
    if (group > 1) return group;
    const size_t fit = budget / per_head;
    return fit < (size_t)p->n_heads ? (int)fit : p->n_heads;
}

static ad_dtype attg_operand_dtype(ad_backend *be) {
    return cu_of(be)->bf16_gemm ? AD_BF16 : AD_F32;
}

bool cu_attention_gemm_suits(ad_backend *be, const ad_tensor *q, const ad_tensor *k,
                             const ad_attention_params *p, const ad_tensor *const *outputs,
                             int n_outputs) {
    const int mode = cu_of(be)->attention_path;
    if (mode == AD_CUDA_ATTENTION_KERNEL) return false;
    const int64_t Tq = q->shape[1], Tk = k->shape[1];
    if (Tq == 0 || Tk == 0 || attg_heads_per_launch(be, p, Tq, Tk) == 0) return false;
    /* The GEMMs write f32, or the operand dtype itself. */
    const ad_dtype dt = attg_operand_dtype(be);
    for (int i = 0; i < n_outputs; i++)
        if (outputs[i] && outputs[i]->dtype != AD_F32 && outputs[i]->dtype != dt) return false;
    return mode == AD_CUDA_ATTENTION_GEMM || Tq >= AD_CUDA_ATTENTION_MIN_ROWS;
}

/* Scores, then probabilities, of `hn` query heads from h0 of batch element b in `s` (f32);
 * with bf16 operands also as bf16 in `p16`. */
static int attg_probabilities(ad_backend *be, float *s, void *p16, const attg_operand *Q,
                              const attg_operand *K, int64_t b, int h0, int hn, int64_t Tq,
                              int64_t Tk, const ad_attention_params *p, const int *key_len_dev) {
    const int group = p->n_heads / p->n_kv_heads, D = p->head_dim;
    const cu_mat q = attg_heads(Q, b, h0, Tq, D), k = attg_heads(K, b, h0 / group, Tk, D);
    const cu_mat sm = attg_scores(s, AD_F32, Tq, Tk);
    AD_TRY(cu_gemm_batched(be, "attention scores", &sm, Tq * Tk, &q, D, false, &k,
                           group > 1 ? 0 : D, true, hn, p->scale, 0.0f));
    attg_softmax_kernel<<<(unsigned)(hn * Tq), cu_row_threads(Tk, ATTG_BLOCK)>>>(
        s, p16 ? (char *)p16 : (char *)s, p16 ? AD_BF16 : AD_F32, Tq, Tk, key_len_dev, b, p->causal,
        p->q_offset);
    CUDA_TRY_LAUNCH();
    return AD_OK;
}

int cu_attention_gemm(ad_backend *be, ad_tensor *out, const ad_tensor *q, const ad_tensor *k,
                      const ad_tensor *v, const ad_attention_params *p, const int *key_len) {
    const int64_t B = q->shape[0], Tq = q->shape[1], Tk = k->shape[1];
    const int H = p->n_heads, D = p->head_dim, group = H / p->n_kv_heads;
    const int per = attg_heads_per_launch(be, p, Tq, Tk);
    const ad_dtype dt = attg_operand_dtype(be);
    cu_of(be)->attention_gemm_calls++;
    attg_operand Q, K, V;
    AD_TRY(attg_operand_of(be, q, dt, CU_SCRATCH_ATT_Q, &Q));
    AD_TRY(attg_operand_of(be, k, dt, CU_SCRATCH_ATT_K, &K));
    AD_TRY(attg_operand_of(be, v, dt, CU_SCRATCH_ATT_V, &V));
    float *s;
    void *p16 = NULL;
    const size_t scores = (size_t)per * (size_t)Tq * (size_t)Tk;
    AD_TRY(cu_scratch(be, CU_SCRATCH_ATT_S, scores * sizeof(float), (void **)&s));
    if (dt == AD_BF16) AD_TRY(cu_scratch(be, CU_SCRATCH_ATT_P16, scores * 2, &p16));
    for (int64_t b = 0; b < B; b++) {
        const int64_t kb = attg_keys(p, b, Tq, Tk);
        if (kb == 0) { /* no row sees a key */
            AD_TRY(attg_zero_rows(be, out, b, 0));
            continue;
        }
        for (int h0 = 0; h0 < H; h0 += per) {
            const int hn = H - h0 < per ? H - h0 : per;
            AD_TRY(attg_probabilities(be, s, p16, &Q, &K, b, h0, hn, Tq, kb, p, key_len));
            const cu_mat pm = attg_scores(p16 ? p16 : (void *)s, dt, Tq, kb);
            const cu_mat vm = attg_heads(&V, b, h0 / group, kb, D);
            const cu_mat om = attg_tensor_heads(out, b, h0, Tq, D);
            AD_TRY(cu_gemm_batched(be, "attention output", &om, D, &pm, Tq * kb, false, &vm,
                                   group > 1 ? 0 : D, false, hn, 1.0f, 0.0f));
        }
    }
    return AD_OK;
}

int cu_attention_backward_gemm(ad_backend *be, ad_tensor *dq, ad_tensor *dk, ad_tensor *dv,
                               const ad_tensor *dout, const ad_tensor *out, const ad_tensor *q,
                               const ad_tensor *k, const ad_tensor *v, const ad_attention_params *p,
                               const int *key_len) {
    const int64_t B = q->shape[0], Tq = q->shape[1], Tk = k->shape[1];
    const int H = p->n_heads, D = p->head_dim, group = H / p->n_kv_heads;
    const int per = attg_heads_per_launch(be, p, Tq, Tk);
    const ad_dtype dt = attg_operand_dtype(be);
    cu_of(be)->attention_gemm_calls++;
    attg_operand Q, K, V, G;
    AD_TRY(attg_operand_of(be, q, dt, CU_SCRATCH_ATT_Q, &Q));
    AD_TRY(attg_operand_of(be, k, dt, CU_SCRATCH_ATT_K, &K));
    AD_TRY(attg_operand_of(be, v, dt, CU_SCRATCH_ATT_V, &V));
    AD_TRY(attg_operand_of(be, dout, dt, CU_SCRATCH_ATT_DO, &G));
    const size_t scores = (size_t)per * (size_t)Tq * (size_t)Tk;
    float *s, *dp;
    void *p16 = NULL, *d16 = NULL;
    AD_TRY(cu_scratch(be, CU_SCRATCH_ATT_S, scores * sizeof(float), (void **)&s));
    AD_TRY(cu_scratch(be, CU_SCRATCH_ATT_DP, scores * sizeof(float), (void **)&dp));
    if (dt == AD_BF16) {
        AD_TRY(cu_scratch(be, CU_SCRATCH_ATT_P16, scores * 2, &p16));
        AD_TRY(cu_scratch(be, CU_SCRATCH_ATT_D16, scores * 2, &d16));
    }
    for (int64_t b = 0; b < B; b++) {
        const int64_t kb = attg_keys(p, b, Tq, Tk), st = Tq * kb;
        /* keys no row sees get no gradient; with none seen at all, no row gets one either */
        AD_TRY(attg_zero_rows(be, dk, b, kb));
        AD_TRY(attg_zero_rows(be, dv, b, kb));
        if (kb == 0) {
            AD_TRY(attg_zero_rows(be, dq, b, 0));
            continue;
        }
        for (int h0 = 0; h0 < H; h0 += per) {
            const int hn = H - h0 < per ? H - h0 : per, kvh = h0 / group;
            const int64_t kv_stride = group > 1 ? 0 : D;
            AD_TRY(attg_probabilities(be, s, p16, &Q, &K, b, h0, hn, Tq, kb, p, key_len));
            const cu_mat km = attg_heads(&K, b, kvh, kb, D), vm = attg_heads(&V, b, kvh, kb, D),
                         gm = attg_heads(&G, b, h0, Tq, D);
            /* dP = dO V^T, then dS over it */
            const cu_mat dpm = attg_scores(dp, AD_F32, Tq, kb);
            AD_TRY(cu_gemm_batched(be, "attention dP", &dpm, st, &gm, D, false, &vm, kv_stride,
                                   true, hn, 1.0f, 0.0f));
            attg_dscore_kernel<<<(unsigned)(hn * Tq), cu_row_threads(kb, ATTG_BLOCK)>>>(
                dp, (char *)d16, s, Tq, kb, h0, D, (const char *)dout->data, dout->dtype,
                dout->stride[0], dout->stride[1], (const char *)out->data, out->dtype,
                out->stride[0], out->stride[1], b, key_len, p->causal, p->q_offset);
            CUDA_TRY_LAUNCH();
            const cu_mat pm = attg_scores(p16 ? p16 : (void *)s, dt, Tq, kb);
            const cu_mat dsm = attg_scores(d16 ? d16 : (void *)dp, dt, Tq, kb);
            if (dq) {
                const cu_mat y = attg_tensor_heads(dq, b, h0, Tq, D);
                AD_TRY(cu_gemm_batched(be, "attention dQ", &y, D, &dsm, st, false, &km, kv_stride,
                                       false, hn, p->scale, 0.0f));
            }
            /* dK, dV: one launch over the head block, or the group's heads added in order */
            const int launches = group > 1 ? hn : 1, count = group > 1 ? 1 : hn;
            for (int l = 0; l < launches; l++) {
                const float beta = l > 0 ? 1.0f : 0.0f;
                const int64_t hl = h0 + l;
                const cu_mat ql = attg_heads(&Q, b, hl, Tq, D), gl = attg_heads(&G, b, hl, Tq, D);
                const cu_mat pl = attg_scores((char *)pm.data + l * st * cu_esize(dt), dt, Tq, kb);
                const cu_mat dl = attg_scores((char *)dsm.data + l * st * cu_esize(dt), dt, Tq, kb);
                if (dk) {
                    const cu_mat y = attg_tensor_heads(dk, b, kvh, kb, D);
                    AD_TRY(cu_gemm_batched(be, "attention dK", &y, D, &dl, st, true, &ql, D, false,
                                           count, p->scale, beta));
                }
                if (dv) {
                    const cu_mat y = attg_tensor_heads(dv, b, kvh, kb, D);
                    AD_TRY(cu_gemm_batched(be, "attention dV", &y, D, &pl, st, true, &gl, D, false,
                                           count, 1.0f, beta));
                }
            }
        }
    }
    return AD_OK;
}
