// Flash attention on the tensor cores: bf16 operands, fp32 accumulation, no score matrix in
// memory. Each warp owns 16 rows of a block of 64 (query rows in the forward and the dQ pass,
// keys in the dK/dV pass) and multiplies with mma.sync m16n8k16, whose fragment layouts are
// fixed by the PTX ISA: so the scores of one tile stay in registers, the running row max and
// sum are per-lane values reduced over the 4 lanes that share a row, and a tile of
// probabilities becomes the A operand of the next product without leaving the registers.
//
// The rounding points are those of the GEMM path with bf16 operands (attention_gemm.cu): q, k,
// v, dO and the probabilities / dS rounded to bf16, every product accumulated in fp32, the
// softmax and delta = rowsum(dO * O) in fp32. The softmax works in base 2 (scores times
// scale log2(e), so each exponential is one ex2.approx; the log-sum-exp passed from the dQ to
// the dK/dV kernel is base 2 too), and only a key tile that crosses a row's limit is masked.
// Keys past key_len are never read (tiles are zero-filled there, as the CPU reference never
// touches them); a row that sees no key gets 0.
//
// Backward, deterministic, without atomics: the dQ kernel recomputes each row's log-sum-exp
// in a first sweep over the keys (unless the forward saved it: ad_attention_params.
// softmax_stats, the same bits, from the same tiles in the same order), then dS and dQ in a
// second; it leaves the log-sum-exp and delta per row for the dK/dV kernel, in which each warp
// owns 16 keys and walks the query heads of its GQA group in order.
//
// Key tiles of bf16 K and V (stored bf16 under bf16 GEMMs) at head dims up to 64 (and at 128
// under AUDISTILL_CUDA_FLASH_D128_BLOCKS=2) go through two stages of shared memory filled by
// cp.async, so the next tile is in flight while this one is multiplied; so do the dK/dV
// kernel's query tiles of a bf16 q at head dims 32 to 128 (an f32 dO is rounded to a bf16 copy
// first). Other views are loaded tile by tile through registers.
//
// Head dims 16, 32, 64 and 128 (a template each); others take the other paths. Needs sm_80
// or newer; the emulator (tests/cuda_emu) runs the same product from the documented fragment
// layouts, gathered with warp shuffles.
#include <math.h>
#include <string.h>

#include "cuda_internal.h"

extern "C" {
#include "core/log.h"
}

#define FA_WARPS   4
#define FA_THREADS (32 * FA_WARPS)
#define FA_ROWS    (16 * FA_WARPS) /* query rows (forward, dQ) or keys (dK/dV) per block */
#define FA_KEYS    64              /* keys per tile of the forward and the dQ pass */
#define FA_QUERIES 32              /* queries per tile of the dK/dV pass */
#define FA_PAD     8 /* bf16 per shared row past D: a warp's fragment loads hit distinct banks */
static_assert(FA_ROWS <= FA_KEYS, "the forward and dQ kernels stage a block's rows in a key tile");

/* attention.cu's arguments, and what the flash kernels write. */
struct fa_args : cu_attn_args {
    char *y; /* the forward's output, or dq */
    int ydt;
    int64_t yb, yt;
    char *dk, *dv;
    int dkdt, dvdt;
    int64_t dkb, dkt, dvb, dvt;
    float *lse, *delta; /* [B, H, Tq]: from the dQ kernel to the dK/dV kernel */
    float scale_log2;   /* scale * log2(e): the kernels' scores are in base 2 */
};

/* ---- fragments -------------------------------------------------------------------------- */

#if defined(AD_CUDA_EMULATED)
__device__ static inline uint32_t fa_pair(const uint16_t *first, const uint16_t *second) {
    return (uint32_t)*first | ((uint32_t)*second << 16);
}
#endif

/* c += A B for a 16x16 bf16 A and a 16x8 bf16 B, fp32 accumulators, one warp. Lane l holds
 * (g = l / 4, t = l % 4): a[0] = A[g][2t..2t+1], a[1] = A[g+8][2t..], a[2] = A[g][2t+8..],
 * a[3] = A[g+8][2t+8..]; b0 = B[2t..2t+1][g], b1 = B[2t+8..2t+9][g]; c = C[g][2t..2t+1],
 * C[g+8][2t..2t+1]. */
__device__ static inline void fa_mma(float c[4], const uint32_t a[4], uint32_t b0, uint32_t b1) {
#if defined(AD_CUDA_EMULATED)
    /* every lane's operands in one warp-wide exchange (a shuffle per value costs the emulator
     * a switch through all 32 lanes each) */
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const uint32_t mine[6] = {a[0], a[1], a[2], a[3], b0, b1};
    const uint32_t(*all)[6] = (const uint32_t(*)[6])ad_emu_warp_gather(mine, sizeof mine);
    float row_g[16], row_g8[16], col[2][16];
    for (int s = 0; s < 4; s++) {
        const uint32_t *x = all[4 * g + s];
        row_g[2 * s] = cu_bf16_low(x[0]), row_g[2 * s + 1] = cu_bf16_high(x[0]);
        row_g8[2 * s] = cu_bf16_low(x[1]), row_g8[2 * s + 1] = cu_bf16_high(x[1]);
        row_g[8 + 2 * s] = cu_bf16_low(x[2]), row_g[9 + 2 * s] = cu_bf16_high(x[2]);
        row_g8[8 + 2 * s] = cu_bf16_low(x[3]), row_g8[9 + 2 * s] = cu_bf16_high(x[3]);
    }
    for (int e = 0; e < 2; e++)
        for (int s = 0; s < 4; s++) {
            const uint32_t *y = all[4 * (2 * t + e) + s];
            col[e][2 * s] = cu_bf16_low(y[4]), col[e][2 * s + 1] = cu_bf16_high(y[4]);
            col[e][8 + 2 * s] = cu_bf16_low(y[5]), col[e][9 + 2 * s] = cu_bf16_high(y[5]);
        }
    float d[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    for (int k = 0; k < 16; k++) {
        d[0] += row_g[k] * col[0][k];
        d[1] += row_g[k] * col[1][k];
        d[2] += row_g8[k] * col[0][k];
        d[3] += row_g8[k] * col[1][k];
    }
    for (int i = 0; i < 4; i++)
        c[i] += d[i];
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, "
                 "{%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};\n"
                 : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b0), "r"(b1));
#elif defined(__CUDA_ARCH__)
    __trap(); /* the host never picks this path below sm_80 (cu_attention_flash_suits) */
#else
    (void)c, (void)a, (void)b0, (void)b1;
#endif
}

/* ldmatrix .x4: four 8x8 b16 matrices, whose rows lanes 8i..8i+7 address (16-byte aligned);
 * register i of lane l gets row l / 4, columns 2(l % 4) and 2(l % 4) + 1 of matrix i, or of
 * its transpose with TRANS. */
template <bool TRANS> __device__ static inline void fa_ldsm(uint32_t r[4], const uint16_t *row) {
#if defined(AD_CUDA_EMULATED)
    if ((uintptr_t)row % 16) ad_emu_kernel_fault("ldmatrix: a row address is not 16-byte aligned");
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const uint16_t *const *rows =
        (const uint16_t *const *)ad_emu_warp_gather(&row, (int)sizeof row);
    for (int i = 0; i < 4; i++) {
        if (TRANS) {
            const uint16_t *r0 = rows[8 * i + 2 * t], *r1 = rows[8 * i + 2 * t + 1];
            r[i] = fa_pair(r0 + g, r1 + g);
        } else {
            const uint16_t *rr = rows[8 * i + g];
            r[i] = fa_pair(rr + 2 * t, rr + 2 * t + 1);
        }
    }
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const unsigned addr = (unsigned)__cvta_generic_to_shared(row);
    if (TRANS)
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.trans.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(addr));
    else
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0,%1,%2,%3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(addr));
#elif defined(__CUDA_ARCH__)
    __trap();
#else
    (void)r, (void)row;
#endif
}

/* Tiles in shared memory are [rows][D + FA_PAD] bf16 (rows 16-byte aligned: the padding keeps
 * the 8 rows of an ldmatrix phase on distinct banks). */

/* The A fragment of rows row0.. and columns k0.. (matrices: rows +0 / +8 at k0, then at
 * k0 + 8: a0..a3). */
template <int D>
__device__ static inline void fa_frag_a(uint32_t f[4], const uint16_t *tile, int row0, int k0,
                                        int lane) {
    const int i = lane >> 3;
    fa_ldsm<false>(f, tile + (row0 + (lane & 7) + 8 * (i & 1)) * (D + FA_PAD) + k0 + 8 * (i >> 1));
}

/* B fragments at k0.. of the n-tiles n0 (b[0], b[1]) and n0 + 8 (b[2], b[3]) from a tile
 * stored [n][k] (B = tile^T). */
template <int D>
__device__ static inline void fa_frag_b_nk(uint32_t b[4], const uint16_t *tile, int n0, int k0,
                                           int lane) {
    const int i = lane >> 3;
    fa_ldsm<false>(b, tile + (n0 + (lane & 7) + 8 * (i >> 1)) * (D + FA_PAD) + k0 + 8 * (i & 1));
}

/* The same from a tile stored [k][n] (B = tile): transposed on the load. */
template <int D>
__device__ static inline void fa_frag_b_kn(uint32_t b[4], const uint16_t *tile, int k0, int n0,
                                           int lane) {
    const int i = lane >> 3;
    fa_ldsm<true>(b, tile + (k0 + (lane & 7) + 8 * (i & 1)) * (D + FA_PAD) + n0 + 8 * (i >> 1));
}

/* c[n], c[n + 1] += A B for the two n-tiles of b */
__device__ static inline void fa_mma2(float c[][4], const uint32_t a[4], const uint32_t b[4]) {
    fa_mma(c[0], a, b[0], b[1]);
    fa_mma(c[1], a, b[2], b[3]);
}

/* The A fragment of k-block j from two accumulator tiles (2j, 2j+1) of a 16-row product:
 * the accumulator layout of columns 16j.. is the A layout of those columns. */
__device__ static inline void fa_acc_to_a(uint32_t f[4], const float lo[4], const float hi[4]) {
    f[0] = cu_bf16_pair(lo[0], lo[1]);
    f[1] = cu_bf16_pair(lo[2], lo[3]);
    f[2] = cu_bf16_pair(hi[0], hi[1]);
    f[3] = cu_bf16_pair(hi[2], hi[3]);
}

/* c[NT/8][4] = the warp's 16 rows of `a_tile` (from row a0, D columns) times the first NT rows
 * of `b_tile`, transposed: a 16 x NT product over the head dim. */
template <int D, int NT>
__device__ static inline void fa_product_rows(float c[][4], const uint16_t *a_tile, int a0,
                                              const uint16_t *b_tile, int lane) {
    CU_UNROLL
    for (int n = 0; n < NT / 8; n++)
        c[n][0] = c[n][1] = c[n][2] = c[n][3] = 0.0f;
    CU_UNROLL
    for (int kk = 0; kk < D / 16; kk++) {
        uint32_t af[4];
        fa_frag_a<D>(af, a_tile, a0, 16 * kk, lane);
        CU_UNROLL
        for (int n = 0; n < NT / 8; n += 2) {
            uint32_t bf[4];
            fa_frag_b_nk<D>(bf, b_tile, 8 * n, 16 * kk, lane);
            fa_mma2(&c[n], af, bf);
        }
    }
}

/* acc[D/8][4] += p (the warp's 16 x KT product in accumulator tiles, rounded to bf16) times the
 * first KT rows of `b_tile` (KT x D). */
template <int D, int KT>
__device__ static inline void fa_accumulate(float acc[][4], const float p[][4],
                                            const uint16_t *b_tile, int lane) {
    CU_UNROLL
    for (int j = 0; j < KT / 16; j++) {
        uint32_t pa[4];
        fa_acc_to_a(pa, p[2 * j], p[2 * j + 1]);
        CU_UNROLL
        for (int n = 0; n < D / 8; n += 2) {
            uint32_t bf[4];
            fa_frag_b_kn<D>(bf, b_tile, 16 * j, 8 * n, lane);
            fa_mma2(&acc[n], pa, bf);
        }
    }
}

/* One load of W elements from global memory as packed bf16 (f32 rounded as cu_store rounds):
 * four f32 (16 bytes) or four or eight bf16 (8 or 16 bytes). */
__device__ static inline void fa_vec_load(uint2 &w, const float *p) {
    const float4 v = __ldg((const float4 *)p);
    w = make_uint2(cu_bf16_pair(v.x, v.y), cu_bf16_pair(v.z, v.w));
}
__device__ static inline void fa_vec_load(uint2 &w, const uint16_t *p) {
    w = __ldg((const uint2 *)p);
}
__device__ static inline void fa_vec_load(uint4 &w, const uint16_t *p) {
    w = __ldg((const uint4 *)p);
}
template <int W> struct fa_packed { typedef uint2 type; };
template <> struct fa_packed<8> { typedef uint4 type; };

/* fa_load_tile's vector path, W elements per load, for one element type. Each thread's loads
 * are issued in batches before any of them is stored: a load followed by its store per element
 * would wait out the memory latency once per element. */
template <int D, int N, int W, typename T>
__device__ static inline void fa_load_vecs(uint16_t *tile, const T *p, int64_t base, int64_t ts,
                                           int64_t r0, int64_t valid) {
    typedef typename fa_packed<W>::type vec;
    constexpr int per_row = D / W, per_thread = N * per_row / FA_THREADS;
    /* up to 32 bytes of packed bf16 in flight per thread, as registers allow */
    constexpr int most = 4 * 4 / W, batch = per_thread < most ? per_thread : most,
                  rows_per_step = FA_THREADS / per_row;
    static_assert(N * per_row % FA_THREADS == 0 && per_thread % batch == 0 &&
                      FA_THREADS % per_row == 0,
                  "tile shape");
    /* each step of FA_THREADS loads moves this thread rows_per_step rows down, same columns */
    const int r = (int)threadIdx.x / per_row, c = W * ((int)threadIdx.x % per_row);
    const T *src = p + base + (r0 + r) * ts + c;
    uint16_t *dst = tile + r * (D + FA_PAD) + c;
    /* batches not unrolled: the addresses of a whole tile's loads, hoisted, would take more
     * registers than the kernels have */
#pragma unroll 1
    for (int k0 = 0; k0 < per_thread; k0 += batch) {
        vec w[batch];
        CU_UNROLL
        for (int k = 0; k < batch; k++) {
            const int rr = (k0 + k) * rows_per_step;
            if (r0 + r + rr < valid)
                fa_vec_load(w[k], src + rr * ts);
            else
                w[k] = vec{};
        }
        CU_UNROLL
        for (int k = 0; k < batch; k++)
            *(vec *)(dst + (k0 + k) * rows_per_step * (D + FA_PAD)) = w[k];
    }
}

/* Rows [r0, r0 + N) of one head of a [B, T, heads * D] view (element `base` + row * ts + d)
 * into a shared bf16 tile; rows at or past `valid` are zero and never read. A bf16 view whose
 * rows all start 16-byte aligned moves eight elements per load (head dims up to 64, where the
 * tile's shape gives every thread whole loads), a view whose rows start 4-element aligned
 * four, else two. */
template <int D, int N>
__device__ static inline void fa_load_tile(uint16_t *tile, const char *p, int dt, int64_t base,
                                           int64_t ts, int64_t r0, int64_t valid) {
    const int es = dt == AD_F32 ? 4 : 2;
    const uintptr_t start = (uintptr_t)p + (uintptr_t)base * es;
    /* 4 where eight per load do not divide among the threads, or at head dim 128, whose
     * kernels have no registers to spare for a third load path (never taken then) */
    constexpr int wide = D <= 64 && N * (D / 8) % FA_THREADS == 0 ? 8 : 4;
    if (wide == 8 && dt == AD_BF16 && ts % 8 == 0 && start % 16 == 0) {
        fa_load_vecs<D, N, wide>(tile, (const uint16_t *)p, base, ts, r0, valid);
        return;
    }
    if ((dt == AD_F32 || dt == AD_BF16) && ts % 4 == 0 && start % (uintptr_t)(4 * es) == 0) {
        if (dt == AD_F32)
            fa_load_vecs<D, N, 4>(tile, (const float *)p, base, ts, r0, valid);
        else
            fa_load_vecs<D, N, 4>(tile, (const uint16_t *)p, base, ts, r0, valid);
        return;
    }
    constexpr int half = D / 2;
    for (int idx = threadIdx.x; idx < N * half; idx += FA_THREADS) {
        const int r = idx / half, c = 2 * (idx % half);
        const int64_t row = r0 + r;
        uint32_t w = 0;
        if (row < valid) {
            const int64_t off = base + row * ts + c;
            w = cu_bf16_pair(cu_load(p, dt, off), cu_load(p, dt, off + 1));
        }
        cu_vstore(tile + r * (D + FA_PAD) + c, w);
    }
}

/* 16 bytes from global to shared memory without passing through registers (cp.async.cg,
 * sm_80+), or 16 zero bytes when !valid (src points at a readable row then, and nothing is
 * read). The emulator lands a copy only at the wait that covers it, so a tile read before
 * its wait, or before the barrier that follows every thread's wait, is wrong there. */
__device__ static inline void fa_copy_async(uint16_t *dst, const uint16_t *src, bool valid) {
#if defined(AD_CUDA_EMULATED)
    ad_emu_copy_async(dst, src, 16, valid);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const unsigned addr = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(addr), "l"(src),
                 "r"(valid ? 16 : 0));
#elif defined(__CUDA_ARCH__)
    __trap();
#else
    (void)dst, (void)src, (void)valid;
#endif
}

/* The copies this thread issued since the last commit form one group. */
__device__ static inline void fa_copy_commit(void) {
#if defined(AD_CUDA_EMULATED)
    ad_emu_copy_commit();
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.commit_group;\n" ::);
#endif
}

/* Waits until at most PENDING of this thread's groups are still in flight. */
template <int PENDING> __device__ static inline void fa_copy_wait(void) {
#if defined(AD_CUDA_EMULATED)
    ad_emu_copy_wait(PENDING);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    asm volatile("cp.async.wait_group %0;\n" ::"n"(PENDING));
#endif
}

/* fa_load_tile for a bf16 view whose rows start 16-byte aligned, issued as asynchronous copies
 * (rows at or past `valid` zero-filled; row r0 is valid). */
template <int D, int N>
__device__ static inline void fa_load_tile_async(uint16_t *tile, const char *p, int64_t base,
                                                 int64_t ts, int64_t r0, int64_t valid) {
    constexpr int per_row = D / 8, per_thread = N * per_row / FA_THREADS,
                  rows_per_step = FA_THREADS / per_row;
    static_assert(N * per_row % FA_THREADS == 0 && FA_THREADS % per_row == 0, "tile shape");
    const int r = (int)threadIdx.x / per_row, c = 8 * ((int)threadIdx.x % per_row);
    const uint16_t *first = (const uint16_t *)p + base + r0 * ts + c, *src = first + r * ts;
    uint16_t *dst = tile + r * (D + FA_PAD) + c;
    CU_UNROLL
    for (int k = 0; k < per_thread; k++) {
        const int rr = k * rows_per_step;
        const bool in = r0 + r + rr < valid;
        fa_copy_async(dst + rr * (D + FA_PAD), in ? src + rr * ts : first, in);
    }
}

/* Key tiles in shared memory, one stage (K, then V) or two: with PIPE (bf16 K and V whose rows
 * start 16-byte aligned, head dims up to 64) the copies of tile it + 1 are in flight while tile
 * it is multiplied. Stage `st` starts at tiles + st * fa_stage<D>(), its V tile FA_KEYS rows
 * after its K tile. */
template <int D> __host__ __device__ constexpr int fa_stage(void) {
    return 2 * FA_KEYS * (D + FA_PAD);
}

/* Where head kvh of this block's batch element starts in a view of batch stride bs. */
__device__ static inline int64_t fa_head_base(int64_t bs, int kvh, int D) {
    return (int64_t)blockIdx.z * bs + (int64_t)kvh * D;
}

template <int D>
__device__ static inline void fa_issue_keys(uint16_t *stage, const fa_args &a, int kvh, int64_t j0,
                                            int64_t kend, bool with_v) {
    fa_load_tile_async<D, FA_KEYS>(stage, a.k, fa_head_base(a.kb, kvh, D), a.kt, j0, kend);
    if (with_v)
        fa_load_tile_async<D, FA_KEYS>(stage + FA_KEYS * (D + FA_PAD), a.v,
                                       fa_head_base(a.vb, kvh, D), a.vt, j0, kend);
    fa_copy_commit();
}

/* Key tile `it` (keys j0..) of a sweep resident in stage it % 2 (PIPE) or 0 for every thread of
 * the block; returns that stage. Without PIPE: loaded now, after the previous tile is consumed.
 * With PIPE: tile it was issued before (by the sweep's fa_issue_keys for it = 0, else here);
 * tile it + 1 is issued here into the other stage, once every thread is done with what that
 * stage held (tile it - 1, or the rows staged before the sweep). */
template <int D, bool PIPE>
__device__ static inline uint16_t *fa_key_tile(uint16_t *tiles, const fa_args &a, int kvh, int it,
                                               int64_t j0, int64_t kend, bool with_v) {
    if (!PIPE) {
        __syncthreads(); /* the previous tile is consumed */
        fa_load_tile<D, FA_KEYS>(tiles, a.k, a.kdt, fa_head_base(a.kb, kvh, D), a.kt, j0, kend);
        if (with_v)
            fa_load_tile<D, FA_KEYS>(tiles + FA_KEYS * (D + FA_PAD), a.v, a.vdt,
                                     fa_head_base(a.vb, kvh, D), a.vt, j0, kend);
        __syncthreads();
        return tiles;
    }
    uint16_t *stage = tiles + (it & 1) * fa_stage<D>();
    if (j0 + FA_KEYS < kend) {
        __syncthreads(); /* the other stage is consumed */
        fa_issue_keys<D>(tiles + ((it + 1) & 1) * fa_stage<D>(), a, kvh, j0 + FA_KEYS, kend,
                         with_v);
        fa_copy_wait<1>();
    } else {
        fa_copy_wait<0>();
    }
    __syncthreads(); /* every thread's copies of tile it have landed */
    return stage;
}

/* A fragments of one warp's 16 rows (from row0 of a shared tile), all D columns. */
template <int D>
__device__ static inline void fa_frags_a(uint32_t f[][4], const uint16_t *tile, int row0,
                                         int lane) {
    CU_UNROLL
    for (int kk = 0; kk < D / 16; kk++)
        fa_frag_a<D>(f[kk], tile, row0, 16 * kk, lane);
}

/* Lane t's part (columns t D/4 .. (t + 1) D/4) of one row's x . y in fp32, x and y elements
 * xo and yo of their views; four at a time when both are f32 and 16-byte aligned there. */
template <int D>
__device__ static inline float fa_dot_part(const char *x, int xdt, int64_t xo, const char *y,
                                           int ydt, int64_t yo, int t) {
    constexpr int part = D / 4;
    xo += t * part, yo += t * part;
    float d = 0.0f;
    if (xdt == AD_F32 && ydt == AD_F32 && ((uintptr_t)((const float *)x + xo) % 16) == 0 &&
        ((uintptr_t)((const float *)y + yo) % 16) == 0) {
        float4 xs[part / 4], ys[part / 4];
        CU_UNROLL
        for (int k = 0; k < part / 4; k++) {
            xs[k] = __ldg((const float4 *)((const float *)x + xo) + k);
            ys[k] = __ldg((const float4 *)((const float *)y + yo) + k);
        }
        CU_UNROLL
        for (int k = 0; k < part / 4; k++)
            d += xs[k].x * ys[k].x + xs[k].y * ys[k].y + xs[k].z * ys[k].z + xs[k].w * ys[k].w;
        return d;
    }
    for (int c = 0; c < part; c++)
        d += cu_load(x, xdt, xo + c) * cu_load(y, ydt, yo + c);
    return d;
}

/* y[off], y[off + 1] = v0, v1: one store where the pair is aligned. */
__device__ static inline void fa_store_pair(char *y, int dt, int64_t off, float v0, float v1) {
    if (dt == AD_F32 && (uintptr_t)((float *)y + off) % 8 == 0) {
        cu_vstore((float *)y + off, make_float2(v0, v1));
    } else if (dt == AD_BF16 && (uintptr_t)((uint16_t *)y + off) % 4 == 0) {
        cu_vstore((uint16_t *)y + off, cu_bf16_pair(v0, v1));
    } else {
        cu_store(y, dt, off, v0);
        cu_store(y, dt, off + 1, v1);
    }
}

/* Keys visible to query row i: [0, limit). */
__device__ static inline int64_t fa_limit(const fa_args &a, int64_t kb, int64_t i) {
    if (a.causal && a.q_offset + i + 1 < kb) return a.q_offset + i + 1;
    return kb;
}

/* Keys any of query rows [i0, i0 + FA_ROWS) sees. */
__device__ static inline int64_t fa_block_keys(const fa_args &a, int64_t kb, int64_t i0) {
    const int64_t last = (i0 + FA_ROWS < a.Tq ? i0 + FA_ROWS : a.Tq) - 1;
    return fa_limit(a, kb, last);
}

/* Over the 4 lanes of a row: lane l combines with lane l ^ 1, then with l ^ 2. */
template <typename Op> __device__ static inline float fa_row_tree(float v, Op op) {
#if defined(AD_CUDA_EMULATED)
    /* one exchange instead of two shuffles; lane l ^ 2's first step is op(v[l ^ 2], v[l ^ 3]) */
    const float *all = (const float *)ad_emu_warp_gather(&v, (int)sizeof v);
    const int l = threadIdx.x & 31;
    return op(op(all[l], all[l ^ 1]), op(all[l ^ 2], all[l ^ 3]));
#else
    v = op(v, __shfl_xor_sync(0xffffffffu, v, 1));
    return op(v, __shfl_xor_sync(0xffffffffu, v, 2));
#endif
}

__device__ static inline float fa_row_max(float v) {
    return fa_row_tree(v, cu_op_max());
}

__device__ static inline float fa_row_sum(float v) {
    return fa_row_tree(v, cu_op_add());
}

/* How many of a tile's keys, from j0, a row that sees keys [0, limit) sees: 0..n. */
__device__ static inline int fa_visible(int64_t limit, int64_t j0, int n) {
    const int64_t v = limit - j0;
    return v <= 0 ? 0 : v >= n ? n : (int)v;
}

/* s = log2(e) scale Q K^T of one warp's 16 rows and a shared key tile, keys a row does not see
 * at -inf (element e of tile n: row lo for e < 2, else hi; key j0 + 8n + 2t + e % 2). Only a
 * tile that some of the lane's keys are past the limit of is masked, in 32-bit offsets. */
template <int D>
__device__ static inline void fa_scores(float s[FA_KEYS / 8][4], const uint32_t qf[][4],
                                        const uint16_t *ks, const fa_args &a, int64_t j0,
                                        int64_t lim_lo, int64_t lim_hi, int lane) {
    const int t = lane & 3;
    CU_UNROLL
    for (int n = 0; n < FA_KEYS / 8; n++)
        s[n][0] = s[n][1] = s[n][2] = s[n][3] = 0.0f;
    CU_UNROLL
    for (int kk = 0; kk < D / 16; kk++) {
        CU_UNROLL
        for (int n = 0; n < FA_KEYS / 8; n += 2) {
            uint32_t bf[4];
            fa_frag_b_nk<D>(bf, ks, 8 * n, 16 * kk, lane);
            fa_mma2(&s[n], qf[kk], bf);
        }
    }
    const int vis_lo = fa_visible(lim_lo, j0, FA_KEYS), vis_hi = fa_visible(lim_hi, j0, FA_KEYS);
    if (vis_lo == FA_KEYS && vis_hi == FA_KEYS) {
        CU_UNROLL
        for (int n = 0; n < FA_KEYS / 8; n++) {
            CU_UNROLL
            for (int e = 0; e < 4; e++)
                s[n][e] *= a.scale_log2;
        }
        return;
    }
    CU_UNROLL
    for (int n = 0; n < FA_KEYS / 8; n++) {
        CU_UNROLL
        for (int e = 0; e < 4; e++) {
            const int key = 8 * n + 2 * t + (e & 1);
            s[n][e] = key < (e < 2 ? vis_lo : vis_hi) ? s[n][e] * a.scale_log2 : -INFINITY;
        }
    }
}

/* A row's base-2 log-sum-exp from its running max and sum; +inf for a row that sees no key,
 * so that its terms 2^(s - lse) are 0. */
__device__ static inline float fa_lse(float m, float sum) {
    return sum > 0.0f ? m + log2f(sum) : INFINITY;
}

/* One online-softmax step over a tile of base-2 scores: new row max, the factor that rescales
 * what was accumulated before, scores turned into 2^(s - max), and the per-lane partial sums. */
__device__ static inline void fa_online_step(float s[FA_KEYS / 8][4], float m[2], float l[2],
                                             float alpha[2]) {
    CU_UNROLL
    for (int h = 0; h < 2; h++) {
        float mx = -INFINITY;
        CU_UNROLL
        for (int n = 0; n < FA_KEYS / 8; n++)
            mx = fmaxf(mx, fmaxf(s[n][2 * h], s[n][2 * h + 1]));
        const float next = fmaxf(m[h], fa_row_max(mx));
        const float base = next == -INFINITY ? 0.0f : next; /* no key seen yet: all terms 0 */
        alpha[h] = cu_exp2_approx(m[h] - base);
        m[h] = next;
        float sum = 0.0f;
        CU_UNROLL
        for (int n = 0; n < FA_KEYS / 8; n++) {
            CU_UNROLL
            for (int e = 2 * h; e < 2 * h + 2; e++) {
                s[n][e] = cu_exp2_approx(s[n][e] - base);
                sum += s[n][e];
            }
        }
        l[h] = l[h] * alpha[h] + sum;
    }
}

/* ---- forward ------------------------------------------------------------------------------ */

/* The forward over its key tiles in shared memory, one stage or two (PIPE). */
template <int D, bool PIPE>
__device__ static inline void fa_forward_body(const fa_args &a, uint16_t *tiles) {
    constexpr int stages = PIPE ? 2 : 1;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int64_t b = blockIdx.z, i0 = (int64_t)blockIdx.x * FA_ROWS;
    const int h = blockIdx.y, kvh = h / (a.H / a.KVH);
    const int64_t r = i0 + warp * 16 + g;
    const int64_t kb = a.key_len ? a.key_len[b] : a.Tk;
    const int64_t lim_lo = fa_limit(a, kb, r), lim_hi = fa_limit(a, kb, r + 8);
    const int64_t kend = fa_block_keys(a, kb, i0);
    /* the query rows pass through the last stage's K tile (the first key tile goes to stage
     * 0); the loop's first barrier protects them */
    uint16_t *staged = tiles + (stages - 1) * fa_stage<D>();
    uint32_t qf[D / 16][4];
    fa_load_tile<D, FA_ROWS>(staged, a.q, a.qdt, b * a.qb + (int64_t)h * D, a.qt, i0, a.Tq);
    __syncthreads();
    fa_frags_a<D>(qf, staged, warp * 16, lane);
    if (PIPE && kend > 0) fa_issue_keys<D>(tiles, a, kvh, 0, kend, true);
    float o[D / 8][4], m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f};
    CU_UNROLL
    for (int n = 0; n < D / 8; n++)
        o[n][0] = o[n][1] = o[n][2] = o[n][3] = 0.0f;
    int it = 0;
    for (int64_t j0 = 0; j0 < kend; j0 += FA_KEYS, it++) {
        const uint16_t *ks = fa_key_tile<D, PIPE>(tiles, a, kvh, it, j0, kend, true);
        const uint16_t *vs = ks + FA_KEYS * (D + FA_PAD);
        float s[FA_KEYS / 8][4], alpha[2];
        fa_scores<D>(s, qf, ks, a, j0, lim_lo, lim_hi, lane);
        fa_online_step(s, m, l, alpha);
        CU_UNROLL
        for (int n = 0; n < D / 8; n++) {
            o[n][0] *= alpha[0], o[n][1] *= alpha[0];
            o[n][2] *= alpha[1], o[n][3] *= alpha[1];
        }
        fa_accumulate<D, FA_KEYS>(o, s, vs, lane);
    }
    CU_UNROLL
    for (int hh = 0; hh < 2; hh++) {
        const int64_t row = r + 8 * hh;
        const float sum = fa_row_sum(l[hh]);
        if (row >= a.Tq) continue;
        if (a.saved_lse && t == 0) /* the dQ pass's sweep 1, from the same tiles */
            a.saved_lse[((int64_t)b * a.H + h) * a.Tq + row] = fa_lse(m[hh], sum);
        const float inv = sum > 0.0f ? 1.0f / sum : 0.0f; /* a row that sees no key: 0 */
        const int64_t off = b * a.yb + row * a.yt + (int64_t)h * D + 2 * t;
        CU_UNROLL
        for (int n = 0; n < D / 8; n++)
            fa_store_pair(a.y, a.ydt, off + 8 * n, o[n][2 * hh] * inv, o[n][2 * hh + 1] * inv);
    }
}

/* MINB: the blocks per SM the registers are budgeted for (3: 168 each, which spills a little
 * at head dim 128; 2: 255, see AUDISTILL_CUDA_FLASH_D128_BLOCKS). Static tiles (a static
 * array's fixed address spares registers the dynamic one costs). */
template <int D, bool PIPE, int MINB = 3>
__global__ static void __launch_bounds__(FA_THREADS, MINB) fa_forward_kernel(fa_args a) {
    __shared__ __align__(16) uint16_t tiles[(PIPE ? 2 : 1) * fa_stage<D>()];
    fa_forward_body<D, PIPE>(a, tiles);
}

/* Two stages at head dim 128 (69.6 KB, past a static array's 48 KB) in dynamic shared memory,
 * at two blocks per SM. */
template <int D>
__global__ static void __launch_bounds__(FA_THREADS, 2) fa_forward_wide_pipe_kernel(fa_args a) {
    static_assert(D == 128, "the narrower head dims' two stages fit static tiles");
    extern __shared__ uint4 fa_forward_words[]; /* uint4: 16-byte aligned, as cp.async needs */
    fa_forward_body<D, true>(a, (uint16_t *)fa_forward_words);
}

/* ---- backward: dQ (and every row's log-sum-exp and delta) ---------------------------------- */

/* The dQ pass over its key tiles in shared memory, one stage or two (PIPE). */
template <int D, bool PIPE>
__device__ static inline void fa_dq_body(const fa_args &a, bool write_dq, uint16_t *tiles) {
    constexpr int stages = PIPE ? 2 : 1;
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int64_t b = blockIdx.z, i0 = (int64_t)blockIdx.x * FA_ROWS;
    const int h = blockIdx.y, kvh = h / (a.H / a.KVH);
    const int64_t r = i0 + warp * 16 + g;
    const int64_t kb = a.key_len ? a.key_len[b] : a.Tk;
    const int64_t lim_lo = fa_limit(a, kb, r), lim_hi = fa_limit(a, kb, r + 8);
    const int64_t kend = fa_block_keys(a, kb, i0);
    /* q, then dO, pass through the last stage's K and V tiles (each sweep's first key tile
     * goes to stage 0); each loop's first barrier protects them */
    uint16_t *staged = tiles + (stages - 1) * fa_stage<D>();
    uint32_t qf[D / 16][4];
    fa_load_tile<D, FA_ROWS>(staged, a.q, a.qdt, b * a.qb + (int64_t)h * D, a.qt, i0, a.Tq);
    __syncthreads();
    fa_frags_a<D>(qf, staged, warp * 16, lane);
    const bool saved = a.saved_lse != NULL; /* the forward's log-sum-exp: no sweep 1 */
    if (PIPE && kend > 0 && !saved) fa_issue_keys<D>(tiles, a, kvh, 0, kend, false);

    /* delta = dO . O per row in fp32 (the 4 lanes of a row split its D columns) */
    float delta[2];
    CU_UNROLL
    for (int hh = 0; hh < 2; hh++) {
        const int64_t row = r + 8 * hh;
        const float d = row < a.Tq
                            ? fa_dot_part<D>(a.dout, a.ddt, b * a.db + row * a.dt + (int64_t)h * D,
                                             a.o, a.odt, b * a.ob + row * a.ot + (int64_t)h * D, t)
                            : 0.0f;
        delta[hh] = fa_row_sum(d);
    }

    /* sweep 1: log-sum-exp per row, base 2 (+inf for a row that sees no key, so its terms are
     * 0) */
    float m[2] = {-INFINITY, -INFINITY}, l[2] = {0.0f, 0.0f}, lse[2];
    int it = 0;
    for (int64_t j0 = 0; j0 < (saved ? 0 : kend); j0 += FA_KEYS, it++) {
        const uint16_t *ks = fa_key_tile<D, PIPE>(tiles, a, kvh, it, j0, kend, false);
        float s[FA_KEYS / 8][4], alpha[2];
        fa_scores<D>(s, qf, ks, a, j0, lim_lo, lim_hi, lane);
        fa_online_step(s, m, l, alpha);
    }
    CU_UNROLL
    for (int hh = 0; hh < 2; hh++) {
        const int64_t row = r + 8 * hh, at = ((int64_t)b * a.H + h) * a.Tq + row;
        if (saved) /* rows past Tq: P = 0 (their dQ is not stored) */
            lse[hh] = row < a.Tq ? a.saved_lse[at] : INFINITY;
        else
            lse[hh] = fa_lse(m[hh], fa_row_sum(l[hh]));
        if (t == 0 && row < a.Tq) {
            a.lse[at] = lse[hh];
            a.delta[at] = delta[hh];
        }
    }
    if (!write_dq) return;

    /* sweep 2: P, dP = dO V^T, dS = P (dP - delta), dQ += dS K */
    uint32_t gf[D / 16][4];
    __syncthreads(); /* sweep 1's last tile is consumed */
    staged += FA_KEYS * (D + FA_PAD);
    fa_load_tile<D, FA_ROWS>(staged, a.dout, a.ddt, b * a.db + (int64_t)h * D, a.dt, i0, a.Tq);
    __syncthreads();
    fa_frags_a<D>(gf, staged, warp * 16, lane);
    if (PIPE && kend > 0) fa_issue_keys<D>(tiles, a, kvh, 0, kend, true);
    float dq[D / 8][4];
    CU_UNROLL
    for (int n = 0; n < D / 8; n++)
        dq[n][0] = dq[n][1] = dq[n][2] = dq[n][3] = 0.0f;
    it = 0;
    for (int64_t j0 = 0; j0 < kend; j0 += FA_KEYS, it++) {
        const uint16_t *ks = fa_key_tile<D, PIPE>(tiles, a, kvh, it, j0, kend, true);
        const uint16_t *vs = ks + FA_KEYS * (D + FA_PAD);
        float s[FA_KEYS / 8][4];
        fa_scores<D>(s, qf, ks, a, j0, lim_lo, lim_hi, lane);
        CU_UNROLL
        for (int n = 0; n < FA_KEYS / 8; n += 2) {
            float dp[2][4] = {{0.0f, 0.0f, 0.0f, 0.0f}, {0.0f, 0.0f, 0.0f, 0.0f}};
            CU_UNROLL
            for (int kk = 0; kk < D / 16; kk++) {
                uint32_t bf[4];
                fa_frag_b_nk<D>(bf, vs, 8 * n, 16 * kk, lane);
                fa_mma2(dp, gf[kk], bf);
            }
            CU_UNROLL
            for (int e = 0; e < 8; e++) {
                const int nn = n + (e >> 2), ee = e & 3;
                const float p = cu_exp2_approx(s[nn][ee] - lse[ee >> 1]); /* masked: 2^-inf = 0 */
                s[nn][ee] = p * (dp[e >> 2][ee] - delta[ee >> 1]);
            }
        }
        fa_accumulate<D, FA_KEYS>(dq, s, ks, lane);
    }
    CU_UNROLL
    for (int hh = 0; hh < 2; hh++) {
        const int64_t row = r + 8 * hh;
        if (row >= a.Tq) continue;
        const int64_t off = b * a.yb + row * a.yt + (int64_t)h * D + 2 * t;
        CU_UNROLL
        for (int n = 0; n < D / 8; n++)
            fa_store_pair(a.y, a.ydt, off + 8 * n, dq[n][2 * hh] * a.scale,
                          dq[n][2 * hh + 1] * a.scale);
    }
}

template <int D, bool PIPE> __global__ static void fa_dq_kernel(fa_args a, bool write_dq) {
    __shared__ __align__(16) uint16_t tiles[(PIPE ? 2 : 1) * fa_stage<D>()];
    fa_dq_body<D, PIPE>(a, write_dq, tiles);
}

/* Two stages at head dim 128 (69.6 KB) in dynamic shared memory, at two blocks per SM, as the
 * forward's (AUDISTILL_CUDA_FLASH_D128_BLOCKS=2). */
template <int D>
__global__ static void __launch_bounds__(FA_THREADS, 2)
    fa_dq_wide_pipe_kernel(fa_args a, bool write_dq) {
    static_assert(D == 128, "the narrower head dims' two stages fit static tiles");
    extern __shared__ uint4 fa_dq_words[]; /* uint4: 16-byte aligned, as cp.async needs */
    fa_dq_body<D, true>(a, write_dq, (uint16_t *)fa_dq_words);
}

/* ---- backward: dK and dV ------------------------------------------------------------------ */

/* 4 bytes from global to shared memory without passing through registers (cp.async.ca). */
__device__ static inline void fa_copy_async4(float *dst, const float *src) {
#if defined(AD_CUDA_EMULATED)
    ad_emu_copy_async(dst, src, 4, true);
#elif defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 800
    const unsigned addr = (unsigned)__cvta_generic_to_shared(dst);
    asm volatile("cp.async.ca.shared.global [%0], [%1], 4;\n" ::"r"(addr), "l"(src));
#elif defined(__CUDA_ARCH__)
    __trap();
#else
    (void)dst, (void)src;
#endif
}

/* A query tile of the dK/dV pass in shared memory: q and dO ([FA_QUERIES][D + FA_PAD] bf16
 * each), then the rows' log-sum-exp and delta (FA_QUERIES floats each); 16-byte multiples. */
template <int D> __host__ __device__ constexpr int fa_query_stage_bytes(void) {
    return (int)(sizeof(uint16_t) * 2 * FA_QUERIES * (D + FA_PAD) + sizeof(float) * 2 * FA_QUERIES);
}

struct fa_query_tile {
    uint16_t *qs, *gs;
    float *lse, *delta;
};

template <int D> __device__ static inline fa_query_tile fa_query_tile_at(char *stage) {
    fa_query_tile q;
    q.qs = (uint16_t *)stage;
    q.gs = q.qs + FA_QUERIES * (D + FA_PAD);
    q.lse = (float *)(q.gs + FA_QUERIES * (D + FA_PAD));
    q.delta = q.lse + FA_QUERIES;
    return q;
}

/* A dK/dV block's walk over query tiles: tile `it` is head h0 + it / per_head, rows from
 * i_first + (it % per_head) * FA_QUERIES. */
struct fa_query_walk {
    int h0;
    int64_t i_first, per_head;
};

__device__ static inline int fa_walk_head(const fa_query_walk &w, int64_t it) {
    return w.h0 + (int)(it / w.per_head);
}

__device__ static inline int64_t fa_walk_row0(const fa_query_walk &w, int64_t it) {
    return w.i_first + (it % w.per_head) * FA_QUERIES;
}

/* Query tile `it` of the walk into a stage: through registers, or (ASYNC: bf16 q and dO whose
 * rows start 16-byte aligned) as one group of asynchronous copies. Rows past Tq: zero q and
 * dO, log-sum-exp +inf (P = 0), delta 0. */
template <int D, bool ASYNC>
__device__ static inline void fa_load_queries(const fa_query_tile &s, const fa_args &a, int64_t b,
                                              const fa_query_walk &w, int64_t it) {
    const int h = fa_walk_head(w, it);
    const int64_t i0 = fa_walk_row0(w, it);
    const int64_t qbase = b * a.qb + (int64_t)h * D, gbase = b * a.db + (int64_t)h * D;
    if constexpr (ASYNC) { /* not instantiated where the tile shape has no whole copies */
        fa_load_tile_async<D, FA_QUERIES>(s.qs, a.q, qbase, a.qt, i0, a.Tq);
        fa_load_tile_async<D, FA_QUERIES>(s.gs, a.dout, gbase, a.dt, i0, a.Tq);
    } else {
        fa_load_tile<D, FA_QUERIES>(s.qs, a.q, a.qdt, qbase, a.qt, i0, a.Tq);
        fa_load_tile<D, FA_QUERIES>(s.gs, a.dout, a.ddt, gbase, a.dt, i0, a.Tq);
    }
    if (threadIdx.x < FA_QUERIES) {
        const int64_t i = i0 + threadIdx.x, at = ((int64_t)b * a.H + h) * a.Tq + i;
        if (i >= a.Tq) {
            s.lse[threadIdx.x] = INFINITY;
            s.delta[threadIdx.x] = 0.0f;
        } else if (ASYNC) {
            fa_copy_async4(s.lse + threadIdx.x, a.lse + at);
            fa_copy_async4(s.delta + threadIdx.x, a.delta + at);
        } else {
            s.lse[threadIdx.x] = a.lse[at];
            s.delta[threadIdx.x] = a.delta[at];
        }
    }
    if (ASYNC) fa_copy_commit();
}

template <int D, bool PIPE> static size_t fa_dkv_smem(void) {
    return sizeof(uint16_t) * (size_t)(2 * FA_ROWS) * (D + FA_PAD) +
           (PIPE ? 2 : 1) * (size_t)fa_query_stage_bytes<D>();
}

/* Each warp owns 16 keys of the block's 64 and walks the query tiles of every head of its GQA
 * group in order (fa_query_walk). With PIPE, tile it + 1 is in flight (the other stage) while
 * tile it is multiplied, across heads too. */
template <int D, bool PIPE> __global__ static void fa_dkv_kernel(fa_args a) {
    extern __shared__ uint4 fa_dkv_words[]; /* uint4: 16-byte aligned, as cp.async needs */
    uint16_t *ks = (uint16_t *)fa_dkv_words, *vs = ks + FA_ROWS * (D + FA_PAD);
    char *stages = (char *)(vs + FA_ROWS * (D + FA_PAD));
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, g = lane >> 2, t = lane & 3;
    const int64_t b = blockIdx.z, j0 = (int64_t)blockIdx.x * FA_ROWS;
    const int kvh = blockIdx.y, group = a.H / a.KVH;
    const int64_t j = j0 + warp * 16 + g; /* this lane's keys: j and j + 8 */
    const int64_t kb = a.key_len ? a.key_len[b] : a.Tk;
    fa_load_tile<D, FA_ROWS>(ks, a.k, a.kdt, b * a.kb + (int64_t)kvh * D, a.kt, j0, kb);
    fa_load_tile<D, FA_ROWS>(vs, a.v, a.vdt, b * a.vb + (int64_t)kvh * D, a.vt, j0, kb);
    float dk[D / 8][4], dv[D / 8][4];
    CU_UNROLL
    for (int n = 0; n < D / 8; n++) {
        CU_UNROLL
        for (int e = 0; e < 4; e++)
            dk[n][e] = dv[n][e] = 0.0f;
    }
    /* queries before i_first see none of this block's keys (causal) */
    int64_t i_first = a.causal && j0 > a.q_offset ? j0 - a.q_offset : 0;
    i_first -= i_first % FA_QUERIES;
    const int64_t per_head =
        j0 < kb && i_first < a.Tq ? (a.Tq - i_first + FA_QUERIES - 1) / FA_QUERIES : 0;
    const fa_query_walk walk = {kvh * group, i_first, per_head};
    const int64_t tiles = per_head * group;
    constexpr int stage_bytes = fa_query_stage_bytes<D>();
    if (PIPE && tiles > 0) fa_load_queries<D, PIPE>(fa_query_tile_at<D>(stages), a, b, walk, 0);
    for (int64_t it = 0; it < tiles; it++) {
        const int64_t i0 = fa_walk_row0(walk, it);
        const fa_query_tile tile =
            fa_query_tile_at<D>(stages + (PIPE ? (it & 1) : 0) * stage_bytes);
        if (!PIPE) {
            __syncthreads(); /* the previous tile is consumed */
            fa_load_queries<D, false>(tile, a, b, walk, it);
        } else if (it + 1 < tiles) {
            __syncthreads(); /* the other stage (tile it - 1) is consumed */
            fa_load_queries<D, PIPE>(fa_query_tile_at<D>(stages + ((it + 1) & 1) * stage_bytes), a,
                                     b, walk, it + 1);
            fa_copy_wait<1>();
        } else {
            fa_copy_wait<0>();
        }
        __syncthreads(); /* every thread's part of tile it is in shared memory */
        const uint16_t *qs = tile.qs, *gs = tile.gs;
        const float *lse_s = tile.lse, *delta_s = tile.delta;
        /* P^T = 2^(log2(e) scale K Q^T - lse) for this warp's 16 keys x the tile's queries.
         * Queries past Tq have lse +inf (P = 0); keys are masked only in a tile where a key
         * of the block is past key_len or, causal, past the limit of the tile's first
         * query (the block-wide test keeps the branch uniform). */
        float p[FA_QUERIES / 8][4];
        fa_product_rows<D, FA_QUERIES>(p, ks, warp * 16, qs, lane);
        const bool whole = j0 + FA_ROWS <= kb && (!a.causal || j0 + FA_ROWS <= a.q_offset + i0 + 1);
        CU_UNROLL
        for (int n = 0; n < FA_QUERIES / 8; n++) {
            CU_UNROLL
            for (int e = 0; e < 4; e++) {
                const int c = 8 * n + 2 * t + (e & 1);
                const int64_t i = i0 + c, key = j + 8 * (e >> 1);
                p[n][e] = whole || key < fa_limit(a, kb, i)
                              ? cu_exp2_approx(p[n][e] * a.scale_log2 - lse_s[c])
                              : 0.0f;
            }
        }
        /* dV += P^T dO */
        fa_accumulate<D, FA_QUERIES>(dv, p, gs, lane);
        /* dP^T = V dO^T, then dS^T = P^T (dP^T - delta) over p */
        float dp[FA_QUERIES / 8][4];
        fa_product_rows<D, FA_QUERIES>(dp, vs, warp * 16, gs, lane);
        CU_UNROLL
        for (int n = 0; n < FA_QUERIES / 8; n++) {
            CU_UNROLL
            for (int e = 0; e < 4; e++)
                p[n][e] *= dp[n][e] - delta_s[8 * n + 2 * t + (e & 1)];
        }
        /* dK += dS^T Q */
        fa_accumulate<D, FA_QUERIES>(dk, p, qs, lane);
    }
    /* keys no row sees (past key_len, or a block no query reaches) end with 0 */
    CU_UNROLL
    for (int hh = 0; hh < 2; hh++) {
        const int64_t key = j + 8 * hh;
        if (key >= a.Tk) continue;
        CU_UNROLL
        for (int n = 0; n < D / 8; n++) {
            const int64_t c = (int64_t)kvh * D + 8 * n + 2 * t;
            if (a.dk)
                fa_store_pair(a.dk, a.dkdt, b * a.dkb + key * a.dkt + c, dk[n][2 * hh] * a.scale,
                              dk[n][2 * hh + 1] * a.scale);
            if (a.dv)
                fa_store_pair(a.dv, a.dvdt, b * a.dvb + key * a.dvt + c, dv[n][2 * hh],
                              dv[n][2 * hh + 1]);
        }
    }
}

/* ---- host side ----------------------------------------------------------------------------- */

bool cu_attention_flash_suits(ad_backend *be, const ad_attention_params *p, int64_t Tq) {
    const cu_impl *impl = cu_of(be);
    if (impl->cc_major < 8 || !ad_cuda_flash_head_dim(p->head_dim)) return false;
    if (impl->attention_path == AD_CUDA_ATTENTION_FLASH) return true;
    /* AUTO: under bf16 GEMMs the batched GEMMs round the same operands to bf16, and the flash
     * kernels were faster on an H100 at 1,220 and 4,880 tokens (experiments/RESULTS.md); decoding
     * steps keep the tiled kernels. */
    return impl->attention_path == AD_CUDA_ATTENTION_AUTO && impl->bf16_gemm &&
           Tq >= AD_CUDA_ATTENTION_MIN_ROWS;
}

static void fa_output(const ad_tensor *t, char **data, int *dt, int64_t *bs, int64_t *ts) {
    *data = t ? (char *)t->data : NULL;
    *dt = t ? t->dtype : AD_F32;
    *bs = t ? t->stride[0] : 0;
    *ts = t ? t->stride[1] : 0;
}

/* A view cp.async can copy 16 bytes at a time: bf16, every row of every batch element and
 * head starting 16-byte aligned (head dims are multiples of 8). */
static bool fa_view_async(const char *p, int dt, int64_t bs, int64_t ts) {
    return dt == AD_BF16 && (uintptr_t)p % 16 == 0 && bs % 8 == 0 && ts % 8 == 0;
}

/* Whether the key tiles go through the two-stage pipe: bf16 K and V so aligned, at head dims
 * up to 64, and at 128 (the decoder's) when the forward and dQ kernels run two blocks per SM
 * (their two stages in dynamic shared memory). */
template <int D> static bool fa_pipe(const fa_args &a, bool off, bool two_blocks = false) {
    return !off && (D <= 64 || (D == 128 && two_blocks)) && fa_view_async(a.k, a.kdt, a.kb, a.kt) &&
           fa_view_async(a.v, a.vdt, a.vb, a.vt);
}

template <int D>
static int fa_forward(const fa_args &a, int64_t B, bool pipe_off, bool two_blocks) {
    /* the variants compiled: <D, false, 3> everywhere, <D <= 64, true, 3>, and at 128
     * <128, false, 2> and the dynamic two-stage kernel */
    constexpr bool narrow = D <= 64, wide = D == 128;
    constexpr int wide_blocks = wide ? 2 : 3;
    dim3 grid((unsigned)((a.Tq + FA_ROWS - 1) / FA_ROWS), (unsigned)a.H, (unsigned)B);
    const bool pipe = fa_pipe<D>(a, pipe_off, two_blocks);
    if (pipe && wide) {
        const size_t smem = sizeof(uint16_t) * 2 * (size_t)fa_stage<128>();
        AD_TRY(cu_smem_for(fa_forward_wide_pipe_kernel<128>, smem));
        fa_forward_wide_pipe_kernel<128><<<grid, FA_THREADS, smem>>>(a);
    } else if (pipe) {
        fa_forward_kernel<D, narrow><<<grid, FA_THREADS>>>(a);
    } else if (two_blocks && wide) {
        fa_forward_kernel<D, false, wide_blocks><<<grid, FA_THREADS>>>(a);
    } else {
        fa_forward_kernel<D, false><<<grid, FA_THREADS>>>(a);
    }
    CUDA_TRY_LAUNCH();
    return AD_OK;
}

template <int D, bool PIPE> static int fa_launch_dkv(const fa_args &ka, dim3 grid) {
    const size_t smem = fa_dkv_smem<D, PIPE>();
    AD_TRY(cu_smem_for(fa_dkv_kernel<D, PIPE>, smem));
    fa_dkv_kernel<D, PIPE><<<grid, FA_THREADS, smem>>>(ka);
    CUDA_TRY_LAUNCH();
    return AD_OK;
}

/* The dQ kernel with `a`, then the dK/dV kernel with `ka` (a, or dO as a bf16 copy), with the
 * query tiles' pipe when dkv_pipe. */
template <int D>
static int fa_backward(const fa_args &a, const fa_args &ka, int64_t B, bool want_dq, bool want_dkv,
                       bool pipe_off, bool two_blocks, bool dkv_pipe) {
    if (a.Tq > 0) {
        constexpr bool narrow = D <= 64, wide = D == 128;
        dim3 grid((unsigned)((a.Tq + FA_ROWS - 1) / FA_ROWS), (unsigned)a.H, (unsigned)B);
        const bool pipe = fa_pipe<D>(a, pipe_off, two_blocks);
        if (pipe && wide) {
            const size_t smem = sizeof(uint16_t) * 2 * (size_t)fa_stage<128>();
            AD_TRY(cu_smem_for(fa_dq_wide_pipe_kernel<128>, smem));
            fa_dq_wide_pipe_kernel<128><<<grid, FA_THREADS, smem>>>(a, want_dq);
        } else if (pipe) {
            fa_dq_kernel<D, narrow><<<grid, FA_THREADS>>>(a, want_dq);
        } else {
            fa_dq_kernel<D, false><<<grid, FA_THREADS>>>(a, want_dq);
        }
        CUDA_TRY_LAUNCH();
    }
    if (want_dkv && a.Tk > 0) {
        constexpr bool can_pipe = D >= 32; /* a query tile of 16 columns is not whole 16-byte
                                            * copies per thread */
        dim3 grid((unsigned)((a.Tk + FA_ROWS - 1) / FA_ROWS), (unsigned)a.KVH, (unsigned)B);
        const int rc = dkv_pipe && can_pipe ? fa_launch_dkv<D, can_pipe>(ka, grid)
                                            : fa_launch_dkv<D, false>(ka, grid);
        AD_TRY(rc);
    }
    return AD_OK;
}

static void fa_init(fa_args *a, const cu_attn_args *args) {
    memset(a, 0, sizeof *a);
    *(cu_attn_args *)a = *args;
    a->scale_log2 = (float)((double)args->scale * 1.4426950408889634); /* log2(e) */
}

/* ---- the switches under GEMM tuning --------------------------------------------------------
 * The cp.async pipe and the two-block kernels at head dim 128 compute the same bits as the
 * defaults (test_flash_switches), so under tuning (ad_cuda_set_gemm_tuning) the first call of
 * each shape, forward and backward apart, times the four settings and keeps the fastest, if it
 * beats the defaults by 3%; the environment variables, when set, fix them instead. Running a call
 * again leaves its inputs unchanged: the ops' checks refuse an output that overlaps an input. */
#define FA_TUNE_MARGIN 0.97f

/* One setting of the switches, run: the forward, or the backward with its dK/dV pipe (when the
 * call allows one) unless the pipe is off. */
typedef struct {
    const fa_args *a, *ka;
    int64_t B;
    bool backward, want_dq, want_dkv, dkv_pipe, pipe_off, two_blocks;
} fa_run;

static int fa_run_once(void *ctx) {
    const fa_run *r = (const fa_run *)ctx;
    if (!r->backward) {
        switch (r->a->D) {
        case 16: return fa_forward<16>(*r->a, r->B, r->pipe_off, r->two_blocks);
        case 32: return fa_forward<32>(*r->a, r->B, r->pipe_off, r->two_blocks);
        case 64: return fa_forward<64>(*r->a, r->B, r->pipe_off, r->two_blocks);
        case 128: return fa_forward<128>(*r->a, r->B, r->pipe_off, r->two_blocks);
        }
        return ad_fail("attention (flash): head_dim %d has no kernel", r->a->D);
    }
    const bool dkv_pipe = r->dkv_pipe && !r->pipe_off;
    const fa_args &ka = dkv_pipe ? *r->ka : *r->a;
    switch (r->a->D) {
    case 16:
        return fa_backward<16>(*r->a, ka, r->B, r->want_dq, r->want_dkv, r->pipe_off, r->two_blocks,
                               dkv_pipe);
    case 32:
        return fa_backward<32>(*r->a, ka, r->B, r->want_dq, r->want_dkv, r->pipe_off, r->two_blocks,
                               dkv_pipe);
    case 64:
        return fa_backward<64>(*r->a, ka, r->B, r->want_dq, r->want_dkv, r->pipe_off, r->two_blocks,
                               dkv_pipe);
    case 128:
        return fa_backward<128>(*r->a, ka, r->B, r->want_dq, r->want_dkv, r->pipe_off,
                                r->two_blocks, dkv_pipe);
    }
    return ad_fail("attention_backward (flash): head_dim %d has no kernel", r->a->D);
}

/* The switches for this call: the backend's (the environment's or the defaults), or under
 * tuning the shape's timed choice, timing it on first sight. */
static int fa_switches(ad_backend *be, fa_run *r) {
    cu_impl *impl = cu_of(be);
    r->pipe_off = impl->flash_pipe_off;
    r->two_blocks = impl->flash_d128_two_blocks;
    if (!impl->gemm_tune || impl->flash_switches_fixed) return AD_OK;
    const fa_args &a = *r->a;
    const int64_t key[10] = {r->backward,
                             r->B,
                             a.H,
                             a.KVH,
                             a.D,
                             a.Tq,
                             a.Tk,
                             a.causal,
                             a.key_len != NULL,
                             (int64_t)a.qdt | (int64_t)a.kdt << 8 | (int64_t)a.vdt << 16 |
                                 (int64_t)a.ddt << 24 | (int64_t)r->want_dq << 32 |
                                 (int64_t)r->want_dkv << 33 | (int64_t)r->dkv_pipe << 34};
    cu_flash_choice *free_slot = NULL;
    for (int i = 0; i < CU_FLASH_CHOICES; i++) {
        cu_flash_choice *c = &impl->flash_choices[i];
        if (c->used && memcmp(c->key, key, sizeof key) == 0) {
            r->pipe_off = c->pipe_off;
            r->two_blocks = c->two_blocks;
            return AD_OK;
        }
        if (!c->used && !free_slot) free_slot = c;
    }
    if (!free_slot) return AD_OK; /* the defaults */
    float best = 0.0f, first = 0.0f;
    bool best_off = false, best_two = false;
    for (int v = 0; v < 4; v++) {
        r->pipe_off = v & 1;
        r->two_blocks = (v & 2) != 0;
        if (r->two_blocks && a.D != 128) continue; /* the same kernels as without */
        float ms = 0.0f;
        AD_TRY(cu_tune_time(impl, fa_run_once, r, &ms));
        if (v == 0) {
            best = first = ms;
        } else if (ms < best && ms < first * FA_TUNE_MARGIN) {
            best = ms, best_off = r->pipe_off, best_two = r->two_blocks;
        }
    }
    free_slot->used = true;
    memcpy(free_slot->key, key, sizeof key);
    free_slot->pipe_off = r->pipe_off = best_off;
    free_slot->two_blocks = r->two_blocks = best_two;
    impl->flash_tuned++;
    if (best_off || best_two) impl->flash_changed++;
    ad_log(AD_LOG_DEBUG,
           "attention tuning: flash %s, %lld x %d heads (%d kv) of %d, %lld x %lld keys%s: "
           "defaults %.4f ms, kept pipe %s, %s %.4f ms",
           r->backward ? "backward" : "forward", (long long)r->B, a.H, a.KVH, a.D, (long long)a.Tq,
           (long long)a.Tk, a.causal ? ", causal" : "", (double)first, best_off ? "off" : "on",
           best_two ? "two blocks per SM" : "default blocks", (double)best);
    return AD_OK;
}

int cu_attention_flash(ad_backend *be, ad_tensor *out, const cu_attn_args *args) {
    fa_args a;
    fa_init(&a, args);
    fa_output(out, &a.y, &a.ydt, &a.yb, &a.yt);
    cu_of(be)->attention_flash_calls++;
    const int64_t B = out->shape[0];
    fa_run r = {&a, &a, B, false, false, false, false, false, false};
    AD_TRY(fa_switches(be, &r));
    return fa_run_once(&r);
}

int cu_attention_backward_flash(ad_backend *be, ad_tensor *dq, ad_tensor *dk, ad_tensor *dv,
                                const cu_attn_args *args) {
    fa_args a;
    fa_init(&a, args);
    fa_output(dq, &a.y, &a.ydt, &a.yb, &a.yt);
    fa_output(dk, &a.dk, &a.dkdt, &a.dkb, &a.dkt);
    fa_output(dv, &a.dv, &a.dvdt, &a.dvb, &a.dvt);
    const int64_t rows = (int64_t)a.H * a.Tq;
    cu_impl *impl = cu_of(be);
    impl->attention_flash_calls++;
    const bool want_dq = dq != NULL, want_dkv = dk || dv;
    if (!want_dq && !want_dkv) return AD_OK;
    const int64_t B = (dq ? dq : dk ? dk : dv)->shape[0];
    float *stats = NULL;
    if (rows > 0)
        AD_TRY(cu_scratch(be, CU_SCRATCH_STATS, sizeof(float) * 2 * (size_t)(B * rows),
                          (void **)&stats));
    a.lse = stats;
    a.delta = stats ? stats + B * rows : NULL;
    /* The dK/dV kernel's query tiles go through its pipe when q and dO are bf16 views cp.async
     * can copy; an f32 dO (the graph's gradient) that is contiguous is first rounded to a bf16
     * copy, the bits the kernel's tile loads would round it to (and it re-reads dO once per
     * block of keys). The dQ kernel keeps the f32 dO: its delta = dO . O is summed in f32. The
     * copy is made unless the pipe is off for good (tuning may switch it off per shape). */
    fa_args ka = a;
    bool dkv_pipe = false;
    const bool may_pipe = !impl->flash_pipe_off || (impl->gemm_tune && !impl->flash_switches_fixed);
    if (want_dkv && may_pipe && a.D >= 32 && a.Tq > 0 && fa_view_async(a.q, a.qdt, a.qb, a.qt)) {
        const int64_t width = (int64_t)a.H * a.D, n = B * a.Tq * width;
        if (fa_view_async(a.dout, a.ddt, a.db, a.dt)) {
            dkv_pipe = true;
        } else if (a.ddt == AD_F32 && a.dt == width && a.db == a.Tq * width) {
            void *copy;
            AD_TRY(cu_scratch(be, CU_SCRATCH_ATT_DO, sizeof(uint16_t) * (size_t)n, &copy));
            AD_TRY(ad_cuda_cast_f32_to_bf16((uint16_t *)copy, (const float *)a.dout, n));
            ka.dout = (const char *)copy;
            ka.ddt = AD_BF16;
            dkv_pipe = true;
        }
    }
    fa_run r = {&a, &ka, B, true, want_dq, want_dkv, dkv_pipe, false, false};
    AD_TRY(fa_switches(be, &r));
    return fa_run_once(&r);
}
