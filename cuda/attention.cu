// CUDA scaled dot-product attention, forward and backward: a straightforward tiled kernel,
// written for correctness first. Per (batch, head, block of 16 query rows) one warp owns a
// query row; keys and values stream through shared memory 32 at a time, each lane scoring one
// key, with an online (running max / sum) softmax. The 16 rows of a block share each tile,
// whose loading (index arithmetic and a dtype-dispatched load per element) otherwise costs
// several times the tile's arithmetic. GQA maps query head h to kv head
// h / (n_heads / n_kv_heads); causal masking uses absolute positions q_offset + i; key_len
// masks padded keys; q/k/v/out may be strided views (a KV cache, a fused QKV) with a unit
// last-dim stride. The backward recomputes probabilities: a stats pass (row max, sum, and
// delta = rowsum(dO * O)), a dq pass per query row and a dk/dv pass per key row that walks
// the query heads of its group in order, so every gradient is written by one warp in a fixed
// order: deterministic, no atomics.
//
// Training-size sequences go through batched GEMMs instead (attention_gemm.cu): these kernels
// ran at ~6 TFLOP/s on an H100 (each FMA reads shared memory twice), which made attention the
// largest cost of a distillation step after the elementwise ops. They remain the path for
// short query chunks and for sequences whose scores would not fit the GEMM path's scratch;
// decoding steps (one or two query rows) take attn_decode_kernel, whose warps split the keys.
#include <math.h>
#include <string.h>

#include "cuda_internal.h"

#define ATT_WARPS    16
#define ATT_TILE     32
#define ATT_MAX_D    256
#define ATT_PER_LANE (ATT_MAX_D / 32)
/* Query rows per batch element up to which attention_decode's kernel serves the forward. */
#define ATT_DECODE_MAX_ROWS 2

typedef cu_attn_args attn_args;

/* Keys visible to query row i of batch b: [0, limit). */
__device__ static inline int64_t key_limit(const attn_args &a, int64_t b, int64_t i) {
    int64_t lim = a.key_len ? a.key_len[b] : a.Tk;
    if (a.causal && a.q_offset + i + 1 < lim) lim = a.q_offset + i + 1;
    return lim;
}

/* Load rows [r0, r0 + 32) of a [T, heads * D] view at head offset `hoff` into a padded
 * shared tile (rows past `limit` are zero). */
__device__ static inline void load_tile(float *tile, const char *base, int dt, int64_t boff,
                                        int64_t tstride, int64_t hoff, int64_t r0, int64_t limit,
                                        int D) {
    /* (r, d) of element idx = r * D + d, advanced by the block size without a division */
    const int step_r = blockDim.x / D, step_d = blockDim.x % D;
    int r = threadIdx.x / D, d = threadIdx.x % D;
    for (int idx = threadIdx.x; idx < ATT_TILE * D; idx += blockDim.x) {
        const int64_t row = r0 + r;
        tile[r * (D + 1) + d] =
            row < limit ? cu_load(base, dt, boff + row * tstride + hoff + d) : 0.0f;
        r += step_r;
        d += step_d;
        if (d >= D) d -= D, r++;
    }
}

__device__ static inline float dot_row(const float *a, const float *b, int D) {
    float s = 0.0f;
    for (int d = 0; d < D; d++)
        s += a[d] * b[d];
    return s;
}

/* Forward (stats_only false): out rows. Stats pass of the backward (stats_only true): per
 * row (max, sum, delta) into stats. */
__global__ static void attn_fwd_kernel(attn_args a, bool stats_only, float *stats) {
    extern __shared__ float smem[];
    const int D = a.D, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float *ktile = smem, *vtile = ktile + ATT_TILE * (D + 1), *qrow = vtile + ATT_TILE * (D + 1);
    const int64_t b = blockIdx.z;
    const int h = blockIdx.y, kvh = h / (a.H / a.KVH);
    const int64_t i0 = (int64_t)blockIdx.x * ATT_WARPS, i = i0 + warp;
    const bool active = i < a.Tq;
    float *q = qrow + warp * D;
    for (int d = lane; d < D; d += 32)
        q[d] = active ? cu_load(a.q, a.qdt, b * a.qb + i * a.qt + (int64_t)h * D + d) : 0.0f;
    const int64_t last = (i0 + ATT_WARPS - 1 < a.Tq ? i0 + ATT_WARPS - 1 : a.Tq - 1);
    const int64_t kmax = key_limit(a, b, last); /* keys any row of the block can see */
    const int64_t lim = active ? key_limit(a, b, i) : 0;
    float m = -INFINITY, l = 0.0f, acc[ATT_PER_LANE];
#pragma unroll
    for (int t = 0; t < ATT_PER_LANE; t++)
        acc[t] = 0.0f;
    for (int64_t j0 = 0; j0 < kmax; j0 += ATT_TILE) {
        __syncthreads();
        load_tile(ktile, a.k, a.kdt, b * a.kb, a.kt, (int64_t)kvh * D, j0, kmax, D);
        if (!stats_only)
            load_tile(vtile, a.v, a.vdt, b * a.vb, a.vt, (int64_t)kvh * D, j0, kmax, D);
        __syncthreads();
        if (!active || j0 >= lim) continue;
        const int64_t j = j0 + lane;
        const bool vis = j < lim;
        const float s = vis ? a.scale * dot_row(q, ktile + lane * (D + 1), D) : -INFINITY;
        const float m_new = fmaxf(m, cu_warp_max(s));
        const float p = vis ? expf(s - m_new) : 0.0f;
        const float corr = m == -INFINITY ? 0.0f : expf(m - m_new);
        l = l * corr + cu_warp_sum(p);
        m = m_new;
        if (stats_only) continue;
#pragma unroll
        for (int t = 0; t < ATT_PER_LANE; t++)
            acc[t] *= corr;
        const cu_warp_values<float> ps(p);
        for (int jj = 0; jj < ATT_TILE; jj++) {
            const float pj = ps[jj];
            if (pj == 0.0f) continue; /* warp-uniform: pj is the same in every lane */
#pragma unroll
            for (int t = 0; t < ATT_PER_LANE; t++) {
                const int d = lane + 32 * t;
                if (d < D) acc[t] += pj * vtile[jj * (D + 1) + d];
            }
        }
    }
    if (!active) return;
    if (stats_only) {
        float delta = 0.0f;
        for (int d = lane; d < D; d += 32)
            delta += cu_load(a.dout, a.ddt, b * a.db + i * a.dt + (int64_t)h * D + d) *
                     cu_load(a.o, a.odt, b * a.ob + i * a.ot + (int64_t)h * D + d);
        delta = cu_warp_sum(delta);
        if (lane == 0) {
            float *st = stats + 3 * ((b * a.H + h) * a.Tq + i);
            st[0] = m;
            st[1] = l;
            st[2] = delta;
        }
        return;
    }
    /* No visible key at all: zero output rather than 0/0 (as the CPU reference). */
    const float inv = l > 0.0f ? 1.0f / l : 0.0f;
#pragma unroll
    for (int t = 0; t < ATT_PER_LANE; t++) {
        const int d = lane + 32 * t;
        if (d < D)
            cu_store((char *)a.o, a.odt, b * a.ob + i * a.ot + (int64_t)h * D + d,
                     l > 0.0f ? acc[t] * inv : 0.0f);
    }
}

/* q . row `row` of a K view of element type KVDT, summed in order d = 0, 1, ..: sixteen bytes
 * per load where the row starts 16-byte aligned (a lane reads a whole key row). */
template <int KVDT>
__device__ static inline float decode_dot(const float *q, const char *k, int64_t row, int D) {
    float dot = 0.0f;
    const uintptr_t at = (uintptr_t)k + (uintptr_t)row * (KVDT == AD_F32 ? 4u : 2u);
    if (KVDT == AD_BF16 && (at & 15) == 0 && (D & 7) == 0) {
        const uint4 *p = (const uint4 *)at;
        for (int c = 0; c < D / 8; c++) {
            const uint4 w = __ldg(p + c);
            const uint32_t u[4] = {w.x, w.y, w.z, w.w};
            CU_UNROLL
            for (int e = 0; e < 4; e++) {
                dot += q[8 * c + 2 * e] * cu_bf16_low(u[e]);
                dot += q[8 * c + 2 * e + 1] * cu_bf16_high(u[e]);
            }
        }
        return dot;
    }
    if (KVDT == AD_F32 && (at & 15) == 0 && (D & 3) == 0) {
        const float4 *p = (const float4 *)at;
        for (int c = 0; c < D / 4; c++) {
            const float4 w = __ldg(p + c);
            dot += q[4 * c] * w.x;
            dot += q[4 * c + 1] * w.y;
            dot += q[4 * c + 2] * w.z;
            dot += q[4 * c + 3] * w.w;
        }
        return dot;
    }
    for (int d = 0; d < D; d++)
        dot += q[d] * cu_load(k, KVDT, row + d);
    return dot;
}

/* Decoding steps (a query row or two per batch element, which would leave 15 of the tiled
 * kernel's 16 warps idle at its two barriers per 32 keys): one block per (query row, head,
 * batch element) whose warps split the visible keys, tile t (32 keys) to warp t mod W, each warp
 * with its own online softmax. A lane scores one key, reading the key's row straight from
 * global memory (whole cache lines per lane; the q row is shared), and the warp accumulates
 * p * v with its lanes over the head dims (coalesced rows of V). The warps' (max, sum, acc)
 * merge in warp order after the block's one barrier. */
template <int KVDT> __global__ static void attn_decode_kernel(attn_args a) {
    extern __shared__ float smem[];
    const int D = a.D, lane = threadIdx.x & 31, warp = threadIdx.x >> 5, W = blockDim.x >> 5;
    float *q = smem, *part = q + D; /* q row [D]; per warp [D + 2]: acc, then max and sum */
    const int64_t b = blockIdx.z, i = blockIdx.x;
    const int h = blockIdx.y, kvh = h / (a.H / a.KVH);
    for (int d = threadIdx.x; d < D; d += blockDim.x)
        q[d] = cu_load(a.q, a.qdt, b * a.qb + i * a.qt + (int64_t)h * D + d);
    __syncthreads();
    const int64_t lim = key_limit(a, b, i);
    const int64_t kbase = b * a.kb + (int64_t)kvh * D, vbase = b * a.vb + (int64_t)kvh * D;
    float m = -INFINITY, l = 0.0f, acc[ATT_PER_LANE];
#pragma unroll
    for (int t = 0; t < ATT_PER_LANE; t++)
        acc[t] = 0.0f;
    for (int64_t j0 = (int64_t)warp * ATT_TILE; j0 < lim; j0 += (int64_t)W * ATT_TILE) {
        const int64_t j = j0 + lane;
        const bool vis = j < lim;
        float s = -INFINITY;
        if (vis) s = a.scale * decode_dot<KVDT>(q, a.k, kbase + j * a.kt, D);
        const float m_new = fmaxf(m, cu_warp_max(s)); /* finite: key j0 is visible */
        const float p = vis ? expf(s - m_new) : 0.0f;
        const float corr = m == -INFINITY ? 0.0f : expf(m - m_new);
        l = l * corr + cu_warp_sum(p);
        m = m_new;
#pragma unroll
        for (int t = 0; t < ATT_PER_LANE; t++)
            acc[t] *= corr;
        const cu_warp_values<float> ps(p);
        const int n = lim - j0 < ATT_TILE ? (int)(lim - j0) : ATT_TILE;
        for (int jj = 0; jj < n; jj++) {
            const float pj = ps[jj];
            const int64_t row = vbase + (j0 + jj) * a.vt;
#pragma unroll
            for (int t = 0; t < ATT_PER_LANE; t++) {
                const int d = lane + 32 * t;
                if (d < D) acc[t] += pj * cu_load(a.v, KVDT, row + d);
            }
        }
    }
    float *mine = part + warp * (D + 2);
#pragma unroll
    for (int t = 0; t < ATT_PER_LANE; t++) {
        const int d = lane + 32 * t;
        if (d < D) mine[d] = acc[t];
    }
    if (lane == 0) mine[D] = m, mine[D + 1] = l;
    __syncthreads();
    for (int d = threadIdx.x; d < D; d += blockDim.x) {
        float M = -INFINITY;
        for (int w = 0; w < W; w++)
            M = fmaxf(M, part[w * (D + 2) + D]);
        float sum = 0.0f, o = 0.0f;
        for (int w = 0; w < W && M != -INFINITY; w++) {
            const float *pw = part + w * (D + 2);
            if (pw[D] == -INFINITY) continue; /* a warp that saw no key */
            const float e = expf(pw[D] - M);
            sum += pw[D + 1] * e;
            o += pw[d] * e;
        }
        /* No visible key at all: zero output rather than 0/0 (as the CPU reference). */
        cu_store((char *)a.o, a.odt, b * a.ob + i * a.ot + (int64_t)h * D + d,
                 sum > 0.0f ? o / sum : 0.0f);
    }
}

/* dq per query row: dq_i = scale * sum_j P_ij (dP_ij - delta_i) k_j. */
__global__ static void attn_dq_kernel(attn_args a, const float *stats, char *dq, int dqdt,
                                      int64_t dqb, int64_t dqt) {
    extern __shared__ float smem[];
    const int D = a.D, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float *ktile = smem, *vtile = ktile + ATT_TILE * (D + 1), *rows = vtile + ATT_TILE * (D + 1);
    const int64_t b = blockIdx.z;
    const int h = blockIdx.y, kvh = h / (a.H / a.KVH);
    const int64_t i0 = (int64_t)blockIdx.x * ATT_WARPS, i = i0 + warp;
    const bool active = i < a.Tq;
    float *q = rows + warp * 2 * D, *g = q + D;
    for (int d = lane; d < D; d += 32) {
        q[d] = active ? cu_load(a.q, a.qdt, b * a.qb + i * a.qt + (int64_t)h * D + d) : 0.0f;
        g[d] = active ? cu_load(a.dout, a.ddt, b * a.db + i * a.dt + (int64_t)h * D + d) : 0.0f;
    }
    const int64_t last = (i0 + ATT_WARPS - 1 < a.Tq ? i0 + ATT_WARPS - 1 : a.Tq - 1);
    const int64_t kmax = key_limit(a, b, last);
    const int64_t lim = active ? key_limit(a, b, i) : 0;
    float m = 0.0f, l = 1.0f, delta = 0.0f;
    if (active) {
        const float *st = stats + 3 * ((b * a.H + h) * a.Tq + i);
        m = st[0];
        l = st[1];
        delta = st[2];
    }
    float acc[ATT_PER_LANE];
#pragma unroll
    for (int t = 0; t < ATT_PER_LANE; t++)
        acc[t] = 0.0f;
    for (int64_t j0 = 0; j0 < kmax; j0 += ATT_TILE) {
        __syncthreads();
        load_tile(ktile, a.k, a.kdt, b * a.kb, a.kt, (int64_t)kvh * D, j0, kmax, D);
        load_tile(vtile, a.v, a.vdt, b * a.vb, a.vt, (int64_t)kvh * D, j0, kmax, D);
        __syncthreads();
        if (!active || j0 >= lim) continue;
        const bool vis = j0 + lane < lim;
        float ds = 0.0f;
        if (vis) {
            const float s = a.scale * dot_row(q, ktile + lane * (D + 1), D);
            const float p = expf(s - m) / l;
            const float dp = dot_row(g, vtile + lane * (D + 1), D);
            ds = p * (dp - delta);
        }
        const cu_warp_values<float> dss(ds);
        for (int jj = 0; jj < ATT_TILE; jj++) {
            const float dsj = dss[jj];
#pragma unroll
            for (int t = 0; t < ATT_PER_LANE; t++) {
                const int d = lane + 32 * t;
                if (d < D) acc[t] += dsj * ktile[jj * (D + 1) + d];
            }
        }
    }
    if (!active) return;
#pragma unroll
    for (int t = 0; t < ATT_PER_LANE; t++) {
        const int d = lane + 32 * t;
        if (d < D) cu_store(dq, dqdt, b * dqb + i * dqt + (int64_t)h * D + d, acc[t] * a.scale);
    }
}

/* dk, dv per key row j of kv head kvh: over the query heads of the group in order, then the
 * query rows in order: dv_j = sum P_ij dO_i, dk_j = scale * sum dS_ij q_i. */
__global__ static void attn_dkv_kernel(attn_args a, const float *stats, char *dk, int dkdt,
                                       int64_t dkb, int64_t dkt, char *dv, int dvdt, int64_t dvb,
                                       int64_t dvt) {
    extern __shared__ float smem[];
    const int D = a.D, lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    float *qtile = smem, *gtile = qtile + ATT_TILE * (D + 1), *rows = gtile + ATT_TILE * (D + 1);
    float *tstats = rows + ATT_WARPS * 2 * D;
    const int64_t b = blockIdx.z;
    const int kvh = blockIdx.y, group = a.H / a.KVH;
    const int64_t j0b = (int64_t)blockIdx.x * ATT_WARPS, j = j0b + warp;
    const int64_t klen = a.key_len ? a.key_len[b] : a.Tk;
    const bool active = j < a.Tk;
    float *kr = rows + warp * 2 * D, *vr = kr + D;
    for (int d = lane; d < D; d += 32) {
        kr[d] = active ? cu_load(a.k, a.kdt, b * a.kb + j * a.kt + (int64_t)kvh * D + d) : 0.0f;
        vr[d] = active ? cu_load(a.v, a.vdt, b * a.vb + j * a.vt + (int64_t)kvh * D + d) : 0.0f;
    }
    /* Causal: query i sees key j when q_offset + i >= j; earlier query tiles are skipped. */
    int64_t istart = 0;
    if (a.causal && j0b - a.q_offset > 0) istart = (j0b - a.q_offset) / ATT_TILE * ATT_TILE;
    const bool any_key = j0b < klen && j0b < a.Tk;
    float ak[ATT_PER_LANE], av[ATT_PER_LANE];
#pragma unroll
    for (int t = 0; t < ATT_PER_LANE; t++)
        ak[t] = av[t] = 0.0f;
    for (int hh = 0; hh < group && any_key; hh++) {
        const int h = kvh * group + hh;
        for (int64_t i0 = istart; i0 < a.Tq; i0 += ATT_TILE) {
            __syncthreads();
            load_tile(qtile, a.q, a.qdt, b * a.qb, a.qt, (int64_t)h * D, i0, a.Tq, D);
            load_tile(gtile, a.dout, a.ddt, b * a.db, a.dt, (int64_t)h * D, i0, a.Tq, D);
            for (int r = threadIdx.x; r < ATT_TILE * 3; r += blockDim.x) {
                const int64_t ii = i0 + r / 3;
                tstats[r] = ii < a.Tq ? stats[3 * ((b * a.H + h) * a.Tq + ii) + r % 3] : 0.0f;
            }
            __syncthreads();
            if (!active || j >= klen) continue;
            const int64_t i = i0 + lane;
            const bool vis = i < a.Tq && (!a.causal || a.q_offset + i >= j);
            float p = 0.0f, ds = 0.0f;
            if (vis) {
                const float s = a.scale * dot_row(qtile + lane * (D + 1), kr, D);
                p = expf(s - tstats[3 * lane]) / tstats[3 * lane + 1];
                const float dp = dot_row(gtile + lane * (D + 1), vr, D);
                ds = p * (dp - tstats[3 * lane + 2]);
            }
            const cu_warp_values<float> ps(p), dss(ds);
            for (int ii = 0; ii < ATT_TILE; ii++) {
                const float pi = ps[ii], dsi = dss[ii];
#pragma unroll
                for (int t = 0; t < ATT_PER_LANE; t++) {
                    const int d = lane + 32 * t;
                    if (d < D) {
                        av[t] += pi * gtile[ii * (D + 1) + d];
                        ak[t] += dsi * qtile[ii * (D + 1) + d];
                    }
                }
            }
        }
    }
    if (!active) return;
#pragma unroll
    for (int t = 0; t < ATT_PER_LANE; t++) {
        const int d = lane + 32 * t;
        if (d >= D) continue;
        if (dk) cu_store(dk, dkdt, b * dkb + j * dkt + (int64_t)kvh * D + d, ak[t] * a.scale);
        if (dv) cu_store(dv, dvdt, b * dvb + j * dvt + (int64_t)kvh * D + d, av[t]);
    }
}

/* ---- host side ----------------------------------------------------------------------------- */

static int check_qkv(const char *op, const char *role, const ad_tensor *t, int64_t B, int heads,
                     int D) {
    AD_TRY(cu_check(op, role, t, CU_ACT));
    AD_TRY(ad_op_check_ndim(op, t, 3, 3));
    AD_TRY(ad_op_check_rows(op, t));
    if (t->shape[0] != B || t->shape[2] != (int64_t)heads * D)
        return ad_op_fail_tensor(op, t, "(%s) expected [%lld, T, %d]", role, (long long)B,
                                 heads * D);
    return AD_OK;
}

static int check_params(const char *op, const ad_attention_params *p) {
    if (!p) return ad_fail("%s: params is NULL", op);
    if (p->n_heads < 1 || p->n_kv_heads < 1 || p->head_dim < 1 || p->n_heads % p->n_kv_heads)
        return ad_fail("%s: need n_heads (%d) a positive multiple of n_kv_heads (%d) and "
                       "head_dim (%d) >= 1",
                       op, p->n_heads, p->n_kv_heads, p->head_dim);
    if (p->head_dim > ATT_MAX_D)
        return ad_fail("%s: head_dim %d is above this kernel's %d", op, p->head_dim, ATT_MAX_D);
    if (p->q_offset < 0) return ad_fail("%s: q_offset %d is negative", op, p->q_offset);
    if (!isfinite(p->scale)) return ad_fail("%s: scale is not finite", op);
    return AD_OK;
}

/* The device copy of a host key_len table of n ints: one of the tables already there if one
 * holds the same values, else the least recently used table, overwritten (the copy is ordered
 * after the kernels that read it before). */
static int key_len_on_device(ad_backend *be, const int *host, int64_t n, const int **out) {
    cu_impl *impl = cu_of(be);
    *out = NULL;
    if (n == 0) return AD_OK; /* no batch element: nothing reads it */
    cu_key_len_table *pick = &impl->key_lens[0];
    for (int i = 0; i < CU_KEY_LEN_TABLES; i++) {
        cu_key_len_table *t = &impl->key_lens[i];
        if (t->n == n && memcmp(t->host, host, (size_t)n * sizeof *host) == 0) {
            t->used = ++impl->key_len_clock;
            *out = t->dev;
            return AD_OK;
        }
        if (t->used < pick->used) pick = t;
    }
    if (pick->cap < n) {
        const int64_t cap = n < 64 ? 64 : n;
        if (pick->dev) CUDA_TRY(cudaFree(pick->dev));
        free(pick->host);
        pick->dev = NULL;
        pick->n = pick->cap = 0;
        pick->host = (int *)malloc((size_t)cap * sizeof *host);
        if (!pick->host) return ad_fail("attention: out of host memory for a key_len table");
        CUDA_TRY(cudaMalloc((void **)&pick->dev, (size_t)cap * sizeof *host));
        pick->cap = cap;
    }
    pick->n = 0; /* not a match until the copy succeeded */
    CUDA_TRY(cudaMemcpy(pick->dev, host, (size_t)n * sizeof *host, cudaMemcpyHostToDevice));
    memcpy(pick->host, host, (size_t)n * sizeof *host);
    pick->n = n;
    pick->used = ++impl->key_len_clock;
    impl->key_len_uploads++;
    *out = pick->dev;
    return AD_OK;
}

void cu_key_len_free(cu_impl *impl) {
    for (int i = 0; i < CU_KEY_LEN_TABLES; i++) {
        if (impl->key_lens[i].dev) cudaFree(impl->key_lens[i].dev);
        free(impl->key_lens[i].host);
    }
    memset(impl->key_lens, 0, sizeof impl->key_lens);
}

/* Common argument block; key_len on the device. */
static int make_args(ad_backend *be, const char *op, attn_args *a, const ad_tensor *q,
                     const ad_tensor *k, const ad_tensor *v, const ad_attention_params *p) {
    const int64_t B = q->shape[0], Tk = k->shape[1];
    memset(a, 0, sizeof *a);
    a->q = (const char *)q->data;
    a->k = (const char *)k->data;
    a->v = (const char *)v->data;
    a->qdt = q->dtype;
    a->kdt = k->dtype;
    a->vdt = v->dtype;
    a->qb = q->stride[0];
    a->qt = q->stride[1];
    a->kb = k->stride[0];
    a->kt = k->stride[1];
    a->vb = v->stride[0];
    a->vt = v->stride[1];
    a->Tq = q->shape[1];
    a->Tk = Tk;
    a->H = p->n_heads;
    a->KVH = p->n_kv_heads;
    a->D = p->head_dim;
    a->q_offset = p->q_offset;
    a->causal = p->causal;
    a->scale = p->scale;
    if (p->key_len) {
        for (int64_t b = 0; b < B; b++)
            if (p->key_len[b] < 0 || p->key_len[b] > Tk)
                return ad_op_fail_tensor(op, k, "key_len[%lld] = %d outside [0, %lld]",
                                         (long long)b, p->key_len[b], (long long)Tk);
        AD_TRY(key_len_on_device(be, p->key_len, B, &a->key_len));
    }
    const ad_tensor *st = p->softmax_stats;
    if (st) {
        AD_TRY(cu_check(op, "softmax_stats", st, CU_F32));
        AD_TRY(ad_op_check_contiguous(op, st));
        if (st->ndim != 3 || st->shape[0] != B || st->shape[1] != p->n_heads ||
            st->shape[2] != a->Tq)
            return ad_op_fail_tensor(op, st, "expected [%lld, %d, %lld]", (long long)B, p->n_heads,
                                     (long long)a->Tq);
        a->saved_lse = (float *)st->data;
    }
    return AD_OK;
}

/* attn_decode_kernel over Tq query rows of H heads of B batch elements, K and V of element
 * type KVDT: one warp per 32 keys the longest row may see, at most ATT_WARPS. */
template <int KVDT>
static int attention_decode(ad_backend *be, const attn_args *a, int64_t Tq, int H, int64_t B) {
    const int64_t tiles = (a->Tk + ATT_TILE - 1) / ATT_TILE;
    const int warps = tiles < 1 ? 1 : tiles > ATT_WARPS ? ATT_WARPS : (int)tiles;
    const size_t smem = sizeof(float) * ((size_t)a->D + (size_t)warps * (size_t)(a->D + 2));
    AD_TRY(cu_smem_for(attn_decode_kernel<KVDT>, smem));
    attn_decode_kernel<KVDT>
        <<<dim3((unsigned)Tq, (unsigned)H, (unsigned)B), warps * 32, smem>>>(*a);
    CUDA_TRY_LAUNCH();
    cu_of(be)->attention_decode_calls++;
    return AD_OK;
}

static int check_grid(const char *op, int64_t rows, int64_t B) {
    if ((rows + ATT_WARPS - 1) / ATT_WARPS > INT32_MAX || B > 65535)
        return ad_fail("%s: %lld rows x %lld batch elements exceed one launch", op, (long long)rows,
                       (long long)B);
    return AD_OK;
}

int cu_attention(ad_backend *be, ad_tensor *out, const ad_tensor *q, const ad_tensor *k,
                 const ad_tensor *v, const ad_attention_params *p) {
    const char *op = "attention";
    AD_TRY(check_params(op, p));
    AD_TRY(cu_check(op, "q", q, CU_ACT));
    AD_TRY(ad_op_check_ndim(op, q, 3, 3));
    const int64_t B = q->shape[0], Tq = q->shape[1];
    const int H = p->n_heads, KVH = p->n_kv_heads, D = p->head_dim;
    AD_TRY(check_qkv(op, "q", q, B, H, D));
    AD_TRY(check_qkv(op, "k", k, B, KVH, D));
    AD_TRY(check_qkv(op, "v", v, B, KVH, D));
    AD_TRY(ad_op_check_same_shape(op, v, k));
    AD_TRY(check_qkv(op, "out", out, B, H, D));
    if (out->shape[1] != Tq)
        return ad_op_fail_tensor(op, out, "expected %lld rows like q", (long long)Tq);
    AD_TRY(ad_op_check_no_alias(op, out, q));
    AD_TRY(ad_op_check_no_alias(op, out, k));
    AD_TRY(ad_op_check_no_alias(op, out, v));
    AD_TRY(check_grid(op, Tq, B));
    if (B == 0 || Tq == 0) return AD_OK;
    attn_args a;
    AD_TRY(make_args(be, op, &a, q, k, v, p));
    const ad_tensor *outputs[1] = {out};
    if (cu_attention_flash_suits(be, p, Tq)) return cu_attention_flash(be, out, &a);
    if (cu_attention_gemm_suits(be, q, k, p, outputs, 1))
        return cu_attention_gemm(be, out, q, k, v, p, a.key_len);
    a.o = (const char *)out->data;
    a.odt = out->dtype;
    a.ob = out->stride[0];
    a.ot = out->stride[1];
    if (Tq <= ATT_DECODE_MAX_ROWS && a.kdt == a.vdt)
        return a.kdt == AD_F32    ? attention_decode<AD_F32>(be, &a, Tq, H, B)
               : a.kdt == AD_BF16 ? attention_decode<AD_BF16>(be, &a, Tq, H, B)
                                  : attention_decode<AD_F16>(be, &a, Tq, H, B);
    const size_t smem = sizeof(float) * ((size_t)2 * ATT_TILE * (D + 1) + (size_t)ATT_WARPS * D);
    AD_TRY(cu_smem_for(attn_fwd_kernel, smem));
    dim3 grid((unsigned)((Tq + ATT_WARPS - 1) / ATT_WARPS), (unsigned)H, (unsigned)B);
    attn_fwd_kernel<<<grid, ATT_WARPS * 32, smem>>>(a, false, NULL);
    CUDA_TRY_LAUNCH();
    return AD_OK;
}

int cu_attention_backward(ad_backend *be, ad_tensor *dq, ad_tensor *dk, ad_tensor *dv,
                          const ad_tensor *dout, const ad_tensor *out, const ad_tensor *q,
                          const ad_tensor *k, const ad_tensor *v, const ad_attention_params *p) {
    const char *op = "attention_backward";
    AD_TRY(check_params(op, p));
    AD_TRY(cu_check(op, "q", q, CU_ACT));
    AD_TRY(ad_op_check_ndim(op, q, 3, 3));
    const int64_t B = q->shape[0], Tq = q->shape[1], Tk = k ? k->shape[1] : 0;
    const int H = p->n_heads, KVH = p->n_kv_heads, D = p->head_dim;
    AD_TRY(check_qkv(op, "q", q, B, H, D));
    AD_TRY(check_qkv(op, "k", k, B, KVH, D));
    AD_TRY(check_qkv(op, "v", v, B, KVH, D));
    AD_TRY(check_qkv(op, "out", out, B, H, D));
    AD_TRY(check_qkv(op, "dout", dout, B, H, D));
    if (v->shape[1] != Tk || out->shape[1] != Tq || dout->shape[1] != Tq)
        return ad_fail("%s: sequence lengths disagree", op);
    if (dq) {
        AD_TRY(check_qkv(op, "dq", dq, B, H, D));
        if (dq->shape[1] != Tq)
            return ad_op_fail_tensor(op, dq, "expected %lld rows", (long long)Tq);
    }
    if (dk) {
        AD_TRY(check_qkv(op, "dk", dk, B, KVH, D));
        if (dk->shape[1] != Tk)
            return ad_op_fail_tensor(op, dk, "expected %lld rows", (long long)Tk);
    }
    if (dv) {
        AD_TRY(check_qkv(op, "dv", dv, B, KVH, D));
        if (dv->shape[1] != Tk)
            return ad_op_fail_tensor(op, dv, "expected %lld rows", (long long)Tk);
    }
    AD_TRY(ad_op_check_attention_grads(op, dq, dk, dv, dout, out, q, k, v));
    AD_TRY(check_grid(op, Tq > Tk ? Tq : Tk, B));
    if (B == 0) return AD_OK;
    attn_args a;
    AD_TRY(make_args(be, op, &a, q, k, v, p));
    const ad_tensor *outputs[3] = {dq, dk, dv};
    a.o = (const char *)out->data;
    a.odt = out->dtype;
    a.ob = out->stride[0];
    a.ot = out->stride[1];
    a.dout = (const char *)dout->data;
    a.ddt = dout->dtype;
    a.db = dout->stride[0];
    a.dt = dout->stride[1];
    if (cu_attention_flash_suits(be, p, Tq)) return cu_attention_backward_flash(be, dq, dk, dv, &a);
    if (cu_attention_gemm_suits(be, q, k, p, outputs, 3))
        return cu_attention_backward_gemm(be, dq, dk, dv, dout, out, q, k, v, p, a.key_len);
    float *stats = NULL;
    if (Tq > 0) {
        AD_TRY(cu_scratch(be, CU_SCRATCH_STATS, sizeof(float) * 3 * (size_t)(B * H * Tq),
                          (void **)&stats));
        const size_t smem =
            sizeof(float) * ((size_t)2 * ATT_TILE * (D + 1) + (size_t)ATT_WARPS * D);
        AD_TRY(cu_smem_for(attn_fwd_kernel, smem));
        dim3 grid((unsigned)((Tq + ATT_WARPS - 1) / ATT_WARPS), (unsigned)H, (unsigned)B);
        attn_fwd_kernel<<<grid, ATT_WARPS * 32, smem>>>(a, true, stats);
        CUDA_TRY_LAUNCH();
    }
    if (dq && Tq > 0) {
        const size_t smem =
            sizeof(float) * ((size_t)2 * ATT_TILE * (D + 1) + (size_t)ATT_WARPS * 2 * D);
        AD_TRY(cu_smem_for(attn_dq_kernel, smem));
        dim3 grid((unsigned)((Tq + ATT_WARPS - 1) / ATT_WARPS), (unsigned)H, (unsigned)B);
        attn_dq_kernel<<<grid, ATT_WARPS * 32, smem>>>(a, stats, (char *)dq->data, dq->dtype,
                                                       dq->stride[0], dq->stride[1]);
        CUDA_TRY_LAUNCH();
    }
    if ((dk || dv) && Tk > 0) {
        const size_t smem = sizeof(float) * ((size_t)2 * ATT_TILE * (D + 1) +
                                             (size_t)ATT_WARPS * 2 * D + (size_t)ATT_TILE * 3);
        AD_TRY(cu_smem_for(attn_dkv_kernel, smem));
        dim3 grid((unsigned)((Tk + ATT_WARPS - 1) / ATT_WARPS), (unsigned)KVH, (unsigned)B);
        attn_dkv_kernel<<<grid, ATT_WARPS * 32, smem>>>(
            a, stats, dk ? (char *)dk->data : NULL, dk ? dk->dtype : AD_F32, dk ? dk->stride[0] : 0,
            dk ? dk->stride[1] : 0, dv ? (char *)dv->data : NULL, dv ? dv->dtype : AD_F32,
            dv ? dv->stride[0] : 0, dv ? dv->stride[1] : 0);
        CUDA_TRY_LAUNCH();
    }
    return AD_OK;
}
