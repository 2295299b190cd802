// CUDA matmul, linear and linear_backward on cuBLASLt with fp32 compute (CUBLAS_COMPUTE_32F:
// bf16/f16 operands accumulate in fp32; f32 operands are full fp32, never TF32, so the F32
// path is comparable with the CPU reference at 1e-5). Row-major tensors are handed to the
// column-major library as their transposes: Y^T = op(B)^T op(A)^T. Operands of different
// dtypes (f32 activations with a bf16 weight) are converted to f32 a tile of output columns
// at a time, never the whole weight (an lm_head is ~2.5 GB in f32). The bias goes into the
// GEMM epilogue when its dtype is the output's; otherwise it is written first and the GEMM
// accumulates (beta 1). Column sums (bias gradients) are a deterministic two-pass reduction.
#include <limits.h>
#include <string.h>

#include "cuda_internal.h"

extern "C" {
#include "core/log.h"
#include "io/file.h"
}

/* Floats of an f32 operand tile converted per GEMM call. */
#define GEMM_TILE_FLOATS ((int64_t)AD_CUDA_GEMM_TILE_FLOATS)

int cu_mat_of(const char *op, const ad_tensor *t, cu_mat *m) {
    ad_op_matrix v;
    AD_TRY(ad_op_matrix_of(op, t, &v));
    *m = (cu_mat){(char *)t->data, t->dtype, v.rows, v.cols, v.ld, v.trans};
    return AD_OK;
}

/* Logical sub-matrix [r0, r0 + nr) x [c0, c0 + nc) sharing storage. */
static cu_mat sub_mat(const cu_mat *m, int64_t r0, int64_t nr, int64_t c0, int64_t nc) {
    cu_mat s = *m;
    const int64_t es = cu_esize(m->dtype);
    const int64_t off = m->trans ? (r0 + c0 * m->ld) : (r0 * m->ld + c0);
    s.data = m->data + off * es;
    s.rows = nr;
    s.cols = nc;
    return s;
}

/* Physical (stored, row-major) rows and cols of a view. */
static void phys(const cu_mat *m, int64_t *pr, int64_t *pc) {
    *pr = m->trans ? m->cols : m->rows;
    *pc = m->trans ? m->rows : m->cols;
}

/* dst (contiguous, F32 or BF16 at odt) = the rows x cols matrix at src (row stride ld
 * elements). No index division per element: a contiguous matrix runs as one flat row, rows
 * walk blockIdx.y, and with `quad` (f32 source, 16-byte aligned rows of a multiple of 4) each
 * thread converts four elements with one load and one store. */
__global__ static void convert_rows_kernel(char *dst, int odt, int64_t out_ld, const char *src,
                                           int dt, int64_t rows, int64_t cols, int64_t ld,
                                           bool quad) {
    const int64_t step = (int64_t)gridDim.x * blockDim.x * (quad ? 4 : 1);
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y) {
        const int64_t in = r * ld, out = r * out_ld;
        int64_t c = ((int64_t)blockIdx.x * blockDim.x + threadIdx.x) * (quad ? 4 : 1);
        if (quad) {
            for (; c + 3 < cols; c += step) {
                const float4 v = cu_vload<float4>((const float *)src + in + c);
                if (odt == AD_BF16)
                    cu_vstore((__nv_bfloat16 *)dst + out + c,
                              make_uint2(cu_bf16_pair(v.x, v.y), cu_bf16_pair(v.z, v.w)));
                else
                    cu_vstore((float *)dst + out + c, v);
            }
            /* a flat row's last cols % 4 elements: the one thread whose quad ends past them */
            for (; c < cols; c++)
                cu_store(dst, odt, out + c, cu_load(src, dt, in + c));
        } else {
            for (; c < cols; c += step)
                cu_store(dst, odt, out + c, cu_load(src, dt, in + c));
        }
    }
}

/* rows x cols elements from src (row stride ld) to dst (row stride out_ld, dtype odt: F32 or
 * BF16), as one flat row where both are contiguous. */
static int convert_rows(char *dst, ad_dtype odt, int64_t out_ld, const char *src, ad_dtype dt,
                        int64_t rows, int64_t cols, int64_t ld) {
    if (rows * cols == 0) return AD_OK;
    if ((ld == cols && out_ld == cols) || rows == 1) { /* contiguous: one flat row */
        cols = rows * cols;
        rows = 1;
        ld = out_ld = cols;
    }
    const bool quad = dt == AD_F32 &&
                      (rows == 1 || (ld % 4 == 0 && out_ld % 4 == 0 && cols % 4 == 0)) &&
                      (uintptr_t)src % 16 == 0 && (uintptr_t)dst % 16 == 0;
    const int64_t per_row = quad ? (cols + 3) / 4 : cols;
    dim3 grid(cu_blocks(per_row, 256), (unsigned)(rows < 65535 ? rows : 65535));
    if (grid.x > 65535u && rows > 1) grid.x = 65535u;
    convert_rows_kernel<<<grid, 256>>>(dst, odt, out_ld, src, dt, rows, cols, ld, quad);
    CUDA_TRY_LAUNCH();
    return AD_OK;
}

/* The same logical matrix as contiguous `odt` (F32 or BF16) in `buf`: physical layout kept,
 * ld = its cols. */
static int convert_to(const cu_mat *m, void *buf, ad_dtype odt, cu_mat *out) {
    int64_t pr, pc;
    phys(m, &pr, &pc);
    AD_TRY(convert_rows((char *)buf, odt, pc, m->data, m->dtype, pr, pc, m->ld));
    *out = *m;
    out->data = (char *)buf;
    out->dtype = odt;
    out->ld = pc > 0 ? pc : 1;
    return AD_OK;
}

static int to_f32(const cu_mat *m, float *buf, cu_mat *out) {
    return convert_to(m, buf, AD_F32, out);
}

/* The same logical matrix as contiguous bf16 in `buf` (ad_cuda_set_bf16_matmul). */
static int to_bf16(const cu_mat *m, void *buf, cu_mat *out) {
    return convert_to(m, buf, AD_BF16, out);
}

__global__ static void scale_rows_kernel(char *y, int dt, int64_t rows, int64_t cols, int64_t ld,
                                         float beta) {
    CU_GRID_STRIDE(i, rows * cols) {
        const int64_t off = (i / cols) * ld + i % cols;
        cu_store(y, dt, off, beta == 0.0f ? 0.0f : beta * cu_load(y, dt, off));
    }
}

/* Rows walk grid y, columns grid x: no index division per element (this write sits in front
 * of a GEMM under tuning's "bias first", where its time counts). */
__global__ static void bias_rows_kernel(char *y, int dt, int64_t rows, int64_t cols, int64_t ld,
                                        const char *bias, int bdt) {
    for (int64_t r = blockIdx.y; r < rows; r += gridDim.y)
        for (int64_t c = (int64_t)blockIdx.x * blockDim.x + threadIdx.x; c < cols;
             c += (int64_t)gridDim.x * blockDim.x)
            cu_store(y, dt, r * ld + c, bias ? cu_load(bias, bdt, c) : 0.0f);
}

static int bias_rows(char *y, ad_dtype dt, int64_t rows, int64_t cols, int64_t ld, const char *bias,
                     ad_dtype bdt) {
    if (rows == 0 || cols == 0) return AD_OK;
    int64_t gx = (cols + 255) / 256;
    if (gx > 1024) gx = 1024;
    const dim3 grid((unsigned)gx, (unsigned)(rows < 65535 ? rows : 65535));
    bias_rows_kernel<<<grid, 256>>>(y, dt, rows, cols, ld, bias, bdt);
    CUDA_TRY_LAUNCH();
    return AD_OK;
}

static cudaDataType_t lt_type(ad_dtype d) {
    return d == AD_F32 ? CUDA_R_32F : (d == AD_BF16 ? CUDA_R_16BF : CUDA_R_16F);
}

/* Largest power of two (<= 256) dividing the address: cuBLASLt's heuristics otherwise assume
 * 256-byte aligned operands, and our views (slices of a fused QKV, a KV cache) are not. */
static uint32_t alignment_of(const void *p) {
    uintptr_t a = (uintptr_t)p;
    uint32_t al = 256;
    while (al > 1 && (a & (al - 1)))
        al >>= 1;
    return al;
}

typedef struct {
    cublasLtMatmulDesc_t desc;
    cublasLtMatrixLayout_t la, lb, ly;
    cublasLtMatmulPreference_t pref;
} lt_objects;

static void lt_release(lt_objects *o) {
    if (o->pref) cublasLtMatmulPreferenceDestroy(o->pref);
    if (o->la) cublasLtMatrixLayoutDestroy(o->la);
    if (o->lb) cublasLtMatrixLayoutDestroy(o->lb);
    if (o->ly) cublasLtMatrixLayoutDestroy(o->ly);
    if (o->desc) cublasLtMatmulDescDestroy(o->desc);
    memset(o, 0, sizeof *o);
}

/* ---- descriptors and the heuristic's answer, remembered per problem ------------------------
 * cublasLtMatmulAlgoGetHeuristic and the descriptors cost tens of microseconds of host time per
 * call, more than many of a step's GEMMs take on the GPU, and a training step asks the same few
 * dozen questions every time. Both depend only on the problem (dims, dtypes, layouts,
 * transposes, batch strides, epilogue, alignments), all of which make the key, so a remembered
 * algorithm is the one the heuristic would return again. */
#define ALGO_CACHE_SLOTS 1024

typedef struct {
    int64_t dims[3], ld[3], batch_stride[3];
    int32_t types[3], ops[2], trans[2], batch, epilogue, bias_type;
    uint32_t align[3];
} algo_key;

typedef struct {
    bool used, found;
    bool tuned;             /* `algo` is the fastest of the heuristic's answers, timed */
    bool loaded;            /* ... as a tuning file says (ad_cuda_gemm_tuning_load) */
    unsigned char bias_way; /* a bias problem under tuning: BIAS_UNDECIDED, _EPILOGUE, _FIRST */
    float ms;               /* tuned: the time of one call with `algo` */
    algo_key key;
    cublasLtMatmulAlgo_t algo;
    lt_objects obj; /* the problem's descriptors, when an algorithm was found */
} algo_slot;

struct cu_algo_cache {
    algo_slot slots[ALGO_CACHE_SLOTS];
    long hits, misses;
    ad_cuda_gemm_tuning tuning;
    long changes, saved_changes; /* choices made, and how many of them a file holds */
};

static uint64_t algo_hash(const algo_key *k) {
    const unsigned char *p = (const unsigned char *)k;
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < sizeof *k; i++)
        h = (h ^ p[i]) * 1099511628211ull;
    return h;
}

/* The slot holding `k`, or the empty slot where it belongs; NULL when the table is full. */
static algo_slot *algo_lookup(cu_impl *impl, const algo_key *k) {
    if (!impl->algos) {
        impl->algos =
            (cu_algo_cache *)ad_calloc(1, sizeof *impl->algos, "the GEMM algorithm cache");
        if (!impl->algos) return NULL;
    }
    const uint64_t h = algo_hash(k);
    for (int probe = 0; probe < ALGO_CACHE_SLOTS; probe++) {
        algo_slot *s = &impl->algos->slots[(h + (uint64_t)probe) % ALGO_CACHE_SLOTS];
        if (!s->used || memcmp(&s->key, k, sizeof *k) == 0) return s;
    }
    return NULL;
}

void cu_gemm_cache_free(cu_impl *impl) {
    if (!impl->algos) return;
    const ad_cuda_gemm_tuning *t = &impl->algos->tuning;
    if (t->problems > 0)
        ad_info("GEMM tuning: %ld problems, %ld algorithms timed; %ld took another than the "
                "heuristic's first, %ld write the bias first; one call of each: %.3f ms with "
                "the heuristic's first, %.3f ms as tuned",
                t->problems, t->candidates, t->changed, t->bias_first, t->first_ms, t->best_ms);
    for (int i = 0; i < ALGO_CACHE_SLOTS; i++)
        lt_release(&impl->algos->slots[i].obj);
    free(impl->algos);
    impl->algos = NULL;
}

extern "C" int ad_cuda_set_gemm_tuning(ad_backend *be, bool on) {
    if (!be || be->device != AD_DEVICE_CUDA)
        return ad_fail("ad_cuda_set_gemm_tuning: not a CUDA backend");
    cu_of(be)->gemm_tune = on;
    return AD_OK;
}

extern "C" int ad_cuda_gemm_tuning_stats(ad_backend *be, ad_cuda_gemm_tuning *out) {
    if (!be || be->device != AD_DEVICE_CUDA)
        return ad_fail("ad_cuda_gemm_tuning_stats: not a CUDA backend");
    cu_impl *impl = cu_of(be);
    memset(out, 0, sizeof *out);
    if (impl->algos) *out = impl->algos->tuning;
    out->attention_problems = impl->flash_tuned;
    out->attention_changed = impl->flash_changed;
    return AD_OK;
}

extern "C" int ad_cuda_gemm_cache_stats(ad_backend *be, long *hits, long *misses) {
    if (!be || be->device != AD_DEVICE_CUDA)
        return ad_fail("ad_cuda_gemm_cache_stats: not a CUDA backend");
    cu_impl *impl = cu_of(be);
    *hits = impl->algos ? impl->algos->hits : 0;
    *misses = impl->algos ? impl->algos->misses : 0;
    return AD_OK;
}

/* Strided batches of one GEMM shape: matrix i of an operand at its data + i * stride
 * elements (a stride of 0 repeats one matrix). */
typedef struct {
    int count;
    int64_t y, a, b;
} lt_batch;

static uint32_t batch_alignment(const void *p, int64_t stride, ad_dtype dt, const lt_batch *bt) {
    uint32_t al = alignment_of(p);
    if (bt && bt->count > 1 && stride != 0) {
        const uint32_t as = alignment_of((const void *)(uintptr_t)(stride * cu_esize(dt)));
        if (as < al) al = as;
    }
    return al;
}

static int set_batch(cublasLtMatrixLayout_t l, int count, int64_t stride) {
    CUBLAS_TRY(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT, &count,
                                                sizeof count));
    CUBLAS_TRY(cublasLtMatrixLayoutSetAttribute(l, CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET,
                                                &stride, sizeof stride));
    return AD_OK;
}

/* The descriptors of one GEMM problem (the bias pointer excepted: it is set per call). */
static int lt_describe(lt_objects *o, const cu_mat *Y, const cu_mat *A, const cu_mat *B,
                       cublasOperation_t opa, cublasOperation_t opb, int64_t M, int64_t N,
                       bool bias, ad_dtype bias_dt, const lt_batch *bt, const uint32_t align[3]) {
    int64_t apr, apc, bpr, bpc;
    phys(A, &apr, &apc);
    phys(B, &bpr, &bpc);
    CUBLAS_TRY(cublasLtMatmulDescCreate(&o->desc, CUBLAS_COMPUTE_32F, CUDA_R_32F));
    CUBLAS_TRY(
        cublasLtMatmulDescSetAttribute(o->desc, CUBLASLT_MATMUL_DESC_TRANSA, &opa, sizeof opa));
    CUBLAS_TRY(
        cublasLtMatmulDescSetAttribute(o->desc, CUBLASLT_MATMUL_DESC_TRANSB, &opb, sizeof opb));
    if (bias) {
        const cublasLtEpilogue_t epi = CUBLASLT_EPILOGUE_BIAS;
        const cudaDataType_t bty = lt_type(bias_dt);
        CUBLAS_TRY(cublasLtMatmulDescSetAttribute(o->desc, CUBLASLT_MATMUL_DESC_EPILOGUE, &epi,
                                                  sizeof epi));
        CUBLAS_TRY(cublasLtMatmulDescSetAttribute(o->desc, CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE,
                                                  &bty, sizeof bty));
    }
    CUBLAS_TRY(
        cublasLtMatrixLayoutCreate(&o->la, lt_type(B->dtype), (uint64_t)bpc, (uint64_t)bpr, B->ld));
    CUBLAS_TRY(
        cublasLtMatrixLayoutCreate(&o->lb, lt_type(A->dtype), (uint64_t)apc, (uint64_t)apr, A->ld));
    CUBLAS_TRY(
        cublasLtMatrixLayoutCreate(&o->ly, lt_type(Y->dtype), (uint64_t)N, (uint64_t)M, Y->ld));
    if (bt && bt->count > 1) {
        AD_TRY(set_batch(o->la, bt->count, bt->b));
        AD_TRY(set_batch(o->lb, bt->count, bt->a));
        AD_TRY(set_batch(o->ly, bt->count, bt->y));
    }
    CUBLAS_TRY(cublasLtMatmulPreferenceCreate(&o->pref));
    const size_t ws = CU_LT_WORKSPACE_BYTES;
    CUBLAS_TRY(cublasLtMatmulPreferenceSetAttribute(
        o->pref, CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES, &ws, sizeof ws));
    const cublasLtMatmulPreferenceAttributes_t attrs[4] = {
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES,
        CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES, CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES};
    const uint32_t values[4] = {align[0], align[1], align[2], align[2]};
    for (int i = 0; i < 4; i++)
        CUBLAS_TRY(
            cublasLtMatmulPreferenceSetAttribute(o->pref, attrs[i], &values[i], sizeof values[i]));
    return AD_OK;
}

static int lt_set_bias(lt_objects *o, const void *bias) {
    CUBLAS_TRY(cublasLtMatmulDescSetAttribute(o->desc, CUBLASLT_MATMUL_DESC_BIAS_POINTER, &bias,
                                              sizeof bias));
    return AD_OK;
}

/* ---- tuning (ad_cuda_set_gemm_tuning) --------------------------------------------------------
 * The heuristic's first answer comes from the library's model of the GPU, not from a clock. With
 * tuning on, a problem's first call that may run more than once (its output written whole,
 * beta 0, and read by none of its operands) times up to TUNE_CANDIDATES of the heuristic's
 * answers on the real operands and keeps the fastest for every later call of the problem. A
 * problem with a bias epilogue is also timed the other way: the bias written into y first, then
 * the GEMM without epilogue accumulating onto it (beta 1; the same sum, rounded once), which
 * wins where the library's epilogue kernels are slow. Every answer computes the same product,
 * but each in its own order of additions: results may differ in the last bits from a run
 * without tuning, or from one whose timings chose otherwise. */
#define TUNE_CANDIDATES 8
#define TUNE_REPS       3
#define TUNE_MARGIN     0.97f /* another answer must be 3% faster than the heuristic's first */

enum { BIAS_UNDECIDED = 0, BIAS_EPILOGUE = 1, BIAS_FIRST = 2 };

typedef struct {
    cu_impl *impl;
    const lt_objects *o;
    const cublasLtMatmulAlgo_t *algo;
    const void *a, *b, *c; /* the library's A (our B), B (our A), and C */
    void *y;
    float alpha, beta;
    cublasStatus_t status;
} lt_call;

static int lt_run(void *ctx) {
    lt_call *k = (lt_call *)ctx;
    k->status = cublasLtMatmul(k->impl->lt, k->o->desc, &k->alpha, k->a, k->o->la, k->b, k->o->lb,
                               &k->beta, k->c, k->o->ly, k->y, k->o->ly, k->algo,
                               k->impl->workspace, CU_LT_WORKSPACE_BYTES, 0);
    if (k->status != CUBLAS_STATUS_SUCCESS)
        return ad_fail("cublasLtMatmul: %s", cublasGetStatusString(k->status));
    return AD_OK;
}

int cu_tune_time(cu_impl *impl, int (*fn)(void *), void *ctx, float *ms) {
    if (!impl->tune_start) CUDA_TRY(cudaEventCreateWithFlags(&impl->tune_start, cudaEventDefault));
    if (!impl->tune_stop) CUDA_TRY(cudaEventCreateWithFlags(&impl->tune_stop, cudaEventDefault));
    AD_TRY(fn(ctx));
    CUDA_TRY(cudaEventRecord(impl->tune_start, 0));
    for (int r = 0; r < TUNE_REPS; r++)
        AD_TRY(fn(ctx));
    CUDA_TRY(cudaEventRecord(impl->tune_stop, 0));
    CUDA_TRY(cudaEventSynchronize(impl->tune_stop));
    float total = 0.0f;
    CUDA_TRY(cudaEventElapsedTime(&total, impl->tune_start, impl->tune_stop));
    *ms = total / TUNE_REPS;
    return AD_OK;
}

/* Times the heuristic's answers for the problem in `slot` (descriptors made, bias pointer set)
 * on the operands of `call` and keeps the fastest. An answer the library refuses at run time is
 * passed over; "first" is then the first one that ran. */
static int tune_slot(cu_impl *impl, algo_slot *slot, lt_call call) {
    cublasLtMatmulHeuristicResult_t results[TUNE_CANDIDATES];
    int found = 0;
    const lt_objects *o = &slot->obj;
    CUBLAS_TRY(cublasLtMatmulAlgoGetHeuristic(impl->lt, o->desc, o->la, o->lb, o->ly, o->ly,
                                              o->pref, TUNE_CANDIDATES, results, &found));
    float first = 0.0f, best = 0.0f;
    int chosen = -1, timed = 0;
    for (int i = 0; i < found; i++) {
        if (results[i].state != CUBLAS_STATUS_SUCCESS) continue;
        call.algo = &results[i].algo;
        float ms = 0.0f;
        if (cu_tune_time(impl, lt_run, &call, &ms) < 0) {
            if (call.status == CUBLAS_STATUS_SUCCESS) return AD_ERR; /* a CUDA error */
            continue; /* this answer is refused for these operands */
        }
        timed++;
        if (chosen < 0) {
            chosen = i, first = best = ms;
        } else if (ms < best && ms < first * TUNE_MARGIN) {
            chosen = i, best = ms;
        }
    }
    if (chosen < 0) return ad_fail("GEMM tuning: the heuristic's answers all failed");
    slot->algo = results[chosen].algo;
    slot->ms = best;
    slot->tuned = true;
    ad_cuda_gemm_tuning *t = &impl->algos->tuning;
    t->problems++;
    impl->algos->changes++;
    t->candidates += timed;
    if (chosen > 0) t->changed++;
    t->first_ms += first;
    t->best_ms += best;
    ad_log(AD_LOG_DEBUG,
           "GEMM tuning: [%lld x %lld] x [%lld x %lld] (%s, %s -> %s%s): heuristic's first "
           "%.4f ms, answer %d of %d %.4f ms",
           (long long)slot->key.dims[0], (long long)slot->key.dims[2], (long long)slot->key.dims[2],
           (long long)slot->key.dims[1], ad_dtype_name((ad_dtype)slot->key.types[0]),
           ad_dtype_name((ad_dtype)slot->key.types[1]), ad_dtype_name((ad_dtype)slot->key.types[2]),
           slot->key.epilogue ? ", bias" : "", (double)first, chosen + 1, found, (double)best);
    return AD_OK;
}

/* One GEMM problem as cuBLASLt sees it. */
typedef struct {
    const cu_mat *Y, *A, *B;
    bool ta, tb;
    int64_t M, N, K;
    const void *bias;
    ad_dtype bias_dt;
    const lt_batch *bt;
    const char *c_data; /* C (of Y's layout); NULL: Y itself */
} lt_problem;

/* The descriptors and algorithm of problem `p`: the cache's slot (*slot; descriptors owned by
 * it) or, with the cache full, made into *local (*slot NULL). With `tune`, a slot not yet tuned
 * is tuned first (its output is overwritten then: the caller runs the GEMM for real after).
 * *no_algo is set (and AD_OK returned) when the heuristic finds no algorithm, so the caller may
 * retry without the epilogue. */
static int lt_prepare(cu_impl *impl, const lt_problem *p, float alpha, float beta, bool tune,
                      algo_slot **slot_out, lt_objects *local, cublasLtMatmulAlgo_t *algo,
                      bool *no_algo) {
    *no_algo = false;
    *slot_out = NULL;
    memset(local, 0, sizeof *local);
    const cu_mat *Y = p->Y, *A = p->A, *B = p->B;
    const lt_batch *bt = p->bt;
    const char *c_data = p->c_data ? p->c_data : Y->data;
    /* Library A = our B, library B = our A; a view's column-major form is its stored
     * transpose, so the library transposes an operand when the flag and the view's own
     * transposition disagree. */
    const cublasOperation_t opa = (p->tb != B->trans) ? CUBLAS_OP_T : CUBLAS_OP_N;
    const cublasOperation_t opb = (p->ta != A->trans) ? CUBLAS_OP_T : CUBLAS_OP_N;
    const uint32_t ay = batch_alignment(Y->data, bt ? bt->y : 0, Y->dtype, bt),
                   ac = alignment_of(c_data);
    const uint32_t align[3] = {batch_alignment(B->data, bt ? bt->b : 0, B->dtype, bt),
                               batch_alignment(A->data, bt ? bt->a : 0, A->dtype, bt),
                               ac < ay ? ac : ay};
    algo_key key;
    memset(&key, 0, sizeof key); /* padding too: the key is hashed and compared as bytes */
    key.dims[0] = p->M, key.dims[1] = p->N, key.dims[2] = p->K;
    key.ld[0] = A->ld, key.ld[1] = B->ld, key.ld[2] = Y->ld;
    key.types[0] = A->dtype, key.types[1] = B->dtype, key.types[2] = Y->dtype;
    key.ops[0] = opa, key.ops[1] = opb;
    key.trans[0] = A->trans, key.trans[1] = B->trans; /* the layouts' shapes follow from these */
    if (bt && bt->count > 1) {
        key.batch = bt->count;
        key.batch_stride[0] = bt->a, key.batch_stride[1] = bt->b, key.batch_stride[2] = bt->y;
    }
    key.epilogue = p->bias ? 1 : 0;
    key.bias_type = p->bias ? (int32_t)p->bias_dt : -1;
    key.align[0] = align[0], key.align[1] = align[1], key.align[2] = align[2];
    algo_slot *slot = algo_lookup(impl, &key);
    if (slot && slot->used) {
        impl->algos->hits++;
        if (!slot->found) {
            *no_algo = true;
            return AD_OK;
        }
        if (!slot->obj.desc) { /* loaded from a tuning file: descriptors made on first use */
            const int rc = lt_describe(&slot->obj, Y, A, B, opa, opb, p->M, p->N, p->bias != NULL,
                                       p->bias_dt, bt, align);
            if (rc < 0) {
                lt_release(&slot->obj);
                return rc;
            }
        }
    } else {
        int rc = lt_describe(local, Y, A, B, opa, opb, p->M, p->N, p->bias != NULL, p->bias_dt, bt,
                             align);
        if (rc == AD_OK && p->bias) rc = lt_set_bias(local, p->bias);
        cublasLtMatmulHeuristicResult_t result;
        int found = 0;
        cublasStatus_t st = CUBLAS_STATUS_SUCCESS;
        if (rc == AD_OK)
            st = cublasLtMatmulAlgoGetHeuristic(impl->lt, local->desc, local->la, local->lb,
                                                local->ly, local->ly, local->pref, 1, &result,
                                                &found);
        const bool none = rc == AD_OK && (st == CUBLAS_STATUS_NOT_SUPPORTED ||
                                          (st == CUBLAS_STATUS_SUCCESS && found == 0));
        if (rc == AD_OK && !none && st != CUBLAS_STATUS_SUCCESS)
            rc = ad_fail("cublasLtMatmulAlgoGetHeuristic: %s", cublasGetStatusString(st));
        if (rc < 0 || none) {
            lt_release(local);
            if (none && slot) { /* remembered too: there is none */
                impl->algos->misses++;
                slot->used = true;
                slot->found = false;
                slot->key = key;
            }
            *no_algo = none;
            return rc;
        }
        if (!slot) {
            *algo = result.algo;
            return AD_OK;
        }
        impl->algos->misses++; /* the descriptors now belong to the cache */
        memset(slot, 0, sizeof *slot);
        slot->used = true;
        slot->found = true;
        slot->key = key;
        slot->algo = result.algo;
        slot->obj = *local;
        memset(local, 0, sizeof *local);
    }
    if (p->bias) AD_TRY(lt_set_bias(&slot->obj, p->bias));
    if (tune && !slot->tuned) {
        lt_call call = {impl,   &slot->obj, NULL,  B->data, A->data,
                        c_data, Y->data,    alpha, beta,    CUBLAS_STATUS_SUCCESS};
        AD_TRY(tune_slot(impl, slot, call));
    }
    *slot_out = slot;
    *algo = slot->algo;
    return AD_OK;
}

/* One cuBLASLt call for operands of supported dtypes (`bt` NULL: one matrix each), `tune` as
 * lt_prepare's. A problem's descriptors and algorithm are made once and kept in the cache, so a
 * repeated GEMM costs a lookup and the matmul. */
static int lt_gemm(cu_impl *impl, const cu_mat *Y, const cu_mat *A, bool ta, const cu_mat *B,
                   bool tb, int64_t M, int64_t N, int64_t K, float alpha, float beta,
                   const void *bias, ad_dtype bias_dt, const lt_batch *bt, const char *c_data,
                   bool tune, bool *no_algo) {
    const lt_problem p = {Y, A, B, ta, tb, M, N, K, bias, bias_dt, bt, c_data};
    algo_slot *slot;
    lt_objects local;
    cublasLtMatmulAlgo_t algo;
    AD_TRY(lt_prepare(impl, &p, alpha, beta, tune, &slot, &local, &algo, no_algo));
    if (*no_algo) return AD_OK;
    lt_call call = {impl,    slot ? &slot->obj : &local, &algo,   B->data,
                    A->data, c_data ? c_data : Y->data,  Y->data, alpha,
                    beta,    CUBLAS_STATUS_SUCCESS};
    int rc = lt_run(&call);
    if (rc < 0 && slot && slot->loaded)
        rc = ad_fail_context("with the algorithm a GEMM tuning file gave this problem (delete "
                             "the file to tune again)");
    lt_release(&local); /* nothing when the cache holds them */
    return rc;
}

static int lt_matmul(cu_impl *impl, const cu_mat *Y, const cu_mat *A, bool ta, const cu_mat *B,
                     bool tb, int64_t M, int64_t N, int64_t K, float alpha, float beta,
                     const void *bias, ad_dtype bias_dt, bool *no_algo) {
    return lt_gemm(impl, Y, A, ta, B, tb, M, N, K, alpha, beta, bias, bias_dt, NULL, NULL, false,
                   no_algo);
}

/* The bytes a view's elements lie in, over `count` matrices `stride` elements apart. */
static void mat_span(const cu_mat *m, int count, int64_t stride, uintptr_t *lo, uintptr_t *hi) {
    int64_t pr, pc;
    phys(m, &pr, &pc);
    int64_t elems = (pr - 1) * m->ld + pc;
    if (count > 1) elems += (int64_t)(count - 1) * (stride < 0 ? -stride : stride);
    *lo = (uintptr_t)m->data;
    *hi = *lo + (uintptr_t)(elems * cu_esize(m->dtype));
}

static bool mats_apart(const cu_mat *x, int xc, int64_t xs, const cu_mat *y, int yc, int64_t ys) {
    uintptr_t xl, xh, yl, yh;
    mat_span(x, xc, xs, &xl, &xh);
    mat_span(y, yc, ys, &yl, &yh);
    return xh <= yl || yh <= xl;
}

typedef struct {
    const cu_mat *Y;
    int64_t M, N;
    const char *bias;
    ad_dtype bias_dt;
} bias_call;

static int bias_run(void *ctx) {
    const bias_call *b = (const bias_call *)ctx;
    return bias_rows(b->Y->data, b->Y->dtype, b->M, b->N, b->Y->ld, b->bias, b->bias_dt);
}

/* Under tuning, whether a bias problem (beta 0, no C) keeps the library's epilogue or writes
 * the bias first and accumulates onto it: timed once per problem, both ways tuned. y's contents
 * are undefined after a decision; the caller computes it after. */
static int choose_bias_way(cu_impl *impl, const lt_problem *ep, float alpha, bool *use_epilogue) {
    algo_slot *es, *ps;
    lt_objects local;
    cublasLtMatmulAlgo_t algo;
    bool no_algo = false;
    AD_TRY(lt_prepare(impl, ep, alpha, 0.0f, true, &es, &local, &algo, &no_algo));
    lt_release(&local);
    if (no_algo || !es) return AD_OK; /* the usual fallbacks */
    if (es->bias_way == BIAS_UNDECIDED) {
        bias_call bc = {ep->Y, ep->M, ep->N, (const char *)ep->bias, ep->bias_dt};
        float bias_ms = 0.0f;
        AD_TRY(cu_tune_time(impl, bias_run, &bc, &bias_ms));
        lt_problem plain = *ep;
        plain.bias = NULL;
        AD_TRY(lt_prepare(impl, &plain, alpha, 1.0f, true, &ps, &local, &algo, &no_algo));
        lt_release(&local);
        const bool first = !no_algo && ps && bias_ms + ps->ms < es->ms * TUNE_MARGIN;
        es->bias_way = first ? BIAS_FIRST : BIAS_EPILOGUE;
        impl->algos->changes++;
        if (first) impl->algos->tuning.bias_first++;
        ad_log(AD_LOG_DEBUG,
               "GEMM tuning: [%lld x %lld] x [%lld x %lld] with bias: epilogue %.4f ms, "
               "bias first %.4f + %.4f ms: %s",
               (long long)ep->M, (long long)ep->K, (long long)ep->K, (long long)ep->N,
               (double)es->ms, (double)bias_ms, no_algo || !ps ? 0.0 : (double)ps->ms,
               es->bias_way == BIAS_FIRST ? "bias first" : "epilogue");
    }
    *use_epilogue = es->bias_way != BIAS_FIRST;
    return AD_OK;
}

/* Operand dtypes cuBLASLt takes directly with fp32 compute. */
static bool direct_ok(ad_dtype y, ad_dtype a, ad_dtype b) {
    if (a != b) return false;
    if (a == AD_F32) return y == AD_F32;
    return y == AD_F32 || y == a;
}

/* cu_gemm, and with C (Y's dtype, shape and row stride; beta 0) y = product + bias + C where
 * the product is one cuBLASLt call: C goes in as its C operand (beta 1) and *c_used is set;
 * else C is left for the caller to add. */
static int gemm(ad_backend *be, const char *op, const cu_mat *Y, const cu_mat *A, bool ta,
                const cu_mat *B, bool tb, float alpha, float beta, const ad_tensor *bias,
                const cu_mat *C, bool *c_used) {
    cu_impl *impl = cu_of(be);
    const int64_t M = ta ? A->cols : A->rows, K = ta ? A->rows : A->cols;
    const int64_t N = tb ? B->rows : B->cols;
    if (M == 0 || N == 0) return AD_OK;
    if (bias) {
        AD_TRY(cu_check(op, "bias", bias, CU_FLOAT));
        AD_TRY(ad_op_check_vector(op, bias, N));
        if (N > 1 && bias->stride[0] != 1) return ad_op_fail_tensor(op, bias, "must be contiguous");
    }
    if (K == 0) {
        /* Nothing to multiply: y = beta * y (+ bias). */
        if (bias) {
            AD_TRY(
                bias_rows(Y->data, Y->dtype, M, N, Y->ld, (const char *)bias->data, bias->dtype));
            return AD_OK;
        }
        scale_rows_kernel<<<cu_blocks(M * N, 256), 256>>>(Y->data, Y->dtype, M, N, Y->ld, beta);
        CUDA_TRY_LAUNCH();
        return AD_OK;
    }
    if (bias && bias->dtype != Y->dtype && Y->dtype != AD_F32) {
        /* The epilogue adds a bias of the output's dtype, and a bias written into y first
         * would be rounded to it too: an f32 bias of a bf16 output (a bf16 activation of a
         * layer whose bias trains in fp32) meets the product in an f32 copy instead, rounded
         * once into y, as an f32 output would be rounded by its reader. */
        if (beta != 0.0f) return ad_fail("%s: a bias needs beta 0", op);
        void *buf;
        AD_TRY(cu_scratch(be, CU_SCRATCH_WIDE_Y, (size_t)(M * N) * sizeof(float), &buf));
        const cu_mat Y32 = {(char *)buf, AD_F32, M, N, N, false};
        AD_TRY(cu_gemm(be, op, &Y32, A, ta, B, tb, alpha, 0.0f, bias));
        return convert_rows(Y->data, Y->dtype, Y->ld, Y32.data, AD_F32, M, N, N);
    }
    /* The epilogue takes a bias of the output's dtype. A bf16 bias (bf16 weights, f32
     * activations) is widened first: N elements, where writing the bias into every output row
     * and accumulating onto it costs two more passes over the whole output. Without an
     * epilogue the bias is written first and the GEMM accumulates onto it; that needs beta 0
     * (linear, conv1d), which is the only way the ops use a bias. */
    const char *bias_data = bias ? (const char *)bias->data : NULL;
    ad_dtype bias_dt = bias ? bias->dtype : AD_F32;
    if (bias && bias_dt != Y->dtype && Y->dtype == AD_F32) {
        void *buf;
        AD_TRY(cu_scratch(be, CU_SCRATCH_BIAS, (size_t)N * sizeof(float), &buf));
        const cu_mat bm = {(char *)bias->data, bias_dt, 1, N, N, false};
        cu_mat b32;
        AD_TRY(to_f32(&bm, (float *)buf, &b32));
        bias_data = b32.data;
        bias_dt = AD_F32;
    }
    bool use_epilogue = bias && bias_dt == Y->dtype;
    cu_mat A16, B16;
    if (impl->bf16_gemm && (Y->dtype == AD_F32 || Y->dtype == AD_BF16) &&
        (A->dtype == AD_F32 || B->dtype == AD_F32) && (A->dtype == AD_F32 || A->dtype == AD_BF16) &&
        (B->dtype == AD_F32 || B->dtype == AD_BF16)) {
        /* Mixed precision: f32 operands rounded to bf16, tensor-core GEMM, fp32 accumulation. */
        if (A->dtype == AD_F32) {
            void *buf;
            AD_TRY(cu_scratch(be, CU_SCRATCH_A, (size_t)(M * K) * 2, &buf));
            AD_TRY(to_bf16(A, buf, &A16));
            A = &A16;
        }
        if (B->dtype == AD_F32) {
            void *buf;
            AD_TRY(cu_scratch(be, CU_SCRATCH_B, (size_t)(N * K) * 2, &buf));
            AD_TRY(to_bf16(B, buf, &B16));
            B = &B16;
        }
    }
    const bool direct = direct_ok(Y->dtype, A->dtype, B->dtype);
    if (!direct && Y->dtype != AD_F32)
        return ad_fail("%s: cannot multiply %s by %s into a %s output (f32 output needed when "
                       "the operand dtypes differ)",
                       op, ad_dtype_name(A->dtype), ad_dtype_name(B->dtype),
                       ad_dtype_name(Y->dtype));
    /* Tuning runs a problem several times: only where that leaves nothing the real run reads
     * changed (y written whole and read by no operand). */
    const bool tune = impl->gemm_tune && direct && beta == 0.0f && mats_apart(Y, 1, 0, A, 1, 0) &&
                      mats_apart(Y, 1, 0, B, 1, 0) && (!C || mats_apart(Y, 1, 0, C, 1, 0));
    if (tune && use_epilogue && !C) {
        const lt_problem ep = {Y, A, B, ta, tb, M, N, K, bias_data, bias_dt, NULL, NULL};
        AD_TRY(choose_bias_way(impl, &ep, alpha, &use_epilogue));
    }
    if (bias && !use_epilogue) {
        if (beta != 0.0f) return ad_fail("%s: a bias needs beta 0", op);
        AD_TRY(bias_rows(Y->data, Y->dtype, M, N, Y->ld, bias_data, bias_dt));
        beta = 1.0f;
    }
    bool no_algo = false;
    if (direct) {
        const bool take_c = C && beta == 0.0f; /* not when the bias was written into y first */
        /* Not tuned here with the bias in y: runs accumulating onto it would change it
         * (choose_bias_way tunes that problem where it chose this way). */
        const bool bias_in_y = bias && !use_epilogue;
        AD_TRY(lt_gemm(impl, Y, A, ta, B, tb, M, N, K, alpha, take_c ? 1.0f : beta,
                       use_epilogue ? bias_data : NULL, bias_dt, NULL, take_c ? C->data : NULL,
                       tune && !bias_in_y, &no_algo));
        if (take_c && !no_algo) *c_used = true;
        if (no_algo && use_epilogue) {
            /* No epilogue kernel for this shape: bias first, then accumulate. */
            if (beta != 0.0f) return ad_fail("%s: a bias needs beta 0", op);
            AD_TRY(bias_rows(Y->data, Y->dtype, M, N, Y->ld, bias_data, bias_dt));
            AD_TRY(lt_matmul(impl, Y, A, ta, B, tb, M, N, K, alpha, 1.0f, NULL, AD_F32, &no_algo));
        }
        if (no_algo)
            return ad_fail("%s: cuBLASLt has no algorithm for %s [%lld x %lld] x %s [%lld x %lld]",
                           op, ad_dtype_name(A->dtype), (long long)M, (long long)K,
                           ad_dtype_name(B->dtype), (long long)K, (long long)N);
        return AD_OK;
    }
    /* Mixed dtypes: A whole and B in tiles of output columns, each as f32. */
    cu_mat A32 = *A;
    if (A->dtype != AD_F32) {
        float *buf;
        AD_TRY(cu_scratch(be, CU_SCRATCH_A, (size_t)(M * K) * sizeof(float), (void **)&buf));
        AD_TRY(to_f32(A, buf, &A32));
    }
    int64_t nb = N;
    if (B->dtype != AD_F32) {
        nb = GEMM_TILE_FLOATS / K;
        if (nb < 64) nb = 64;
        if (nb > N) nb = N;
    }
    for (int64_t n0 = 0; n0 < N; n0 += nb) {
        const int64_t n = N - n0 < nb ? N - n0 : nb;
        cu_mat Bt = tb ? sub_mat(B, n0, n, 0, K) : sub_mat(B, 0, K, n0, n);
        if (B->dtype != AD_F32) {
            float *buf;
            AD_TRY(cu_scratch(be, CU_SCRATCH_B, (size_t)(n * K) * sizeof(float), (void **)&buf));
            AD_TRY(to_f32(&Bt, buf, &Bt));
        }
        cu_mat Yt = sub_mat(Y, 0, M, n0, n);
        const void *bt = NULL;
        if (use_epilogue) bt = bias_data + n0 * cu_esize(bias_dt);
        AD_TRY(
            lt_matmul(impl, &Yt, &A32, ta, &Bt, tb, M, n, K, alpha, beta, bt, bias_dt, &no_algo));
        if (no_algo && bt) {
            if (beta != 0.0f) return ad_fail("%s: a bias needs beta 0", op);
            AD_TRY(bias_rows(Yt.data, Yt.dtype, M, n, Yt.ld, (const char *)bt, bias_dt));
            AD_TRY(lt_matmul(impl, &Yt, &A32, ta, &Bt, tb, M, n, K, alpha, 1.0f, NULL, AD_F32,
                             &no_algo));
        }
        if (no_algo)
            return ad_fail("%s: cuBLASLt has no algorithm for an f32 [%lld x %lld] x [%lld x "
                           "%lld] GEMM",
                           op, (long long)M, (long long)K, (long long)K, (long long)n);
    }
    return AD_OK;
}

int cu_gemm(ad_backend *be, const char *op, const cu_mat *Y, const cu_mat *A, bool ta,
            const cu_mat *B, bool tb, float alpha, float beta, const ad_tensor *bias) {
    return gemm(be, op, Y, A, ta, B, tb, alpha, beta, bias, NULL, NULL);
}

int cu_gemm_residual(ad_backend *be, const char *op, const cu_mat *Y, const cu_mat *A, bool ta,
                     const cu_mat *B, bool tb, const ad_tensor *bias, const cu_mat *C,
                     bool *fused) {
    *fused = false;
    return gemm(be, op, Y, A, ta, B, tb, 1.0f, 0.0f, bias, C->ld == Y->ld ? C : NULL, fused);
}

int cu_gemm_batched(ad_backend *be, const char *op, const cu_mat *Y, int64_t y_stride,
                    const cu_mat *A, int64_t a_stride, bool ta, const cu_mat *B, int64_t b_stride,
                    bool tb, int count, float alpha, float beta) {
    const int64_t M = ta ? A->cols : A->rows, K = ta ? A->rows : A->cols;
    const int64_t N = tb ? B->rows : B->cols;
    if (M == 0 || N == 0 || count == 0) return AD_OK;
    if (K == 0 || count < 0)
        return ad_fail("%s: a batched GEMM needs K >= 1 (got %lld) and a batch count >= 0", op,
                       (long long)K);
    if (!direct_ok(Y->dtype, A->dtype, B->dtype))
        return ad_fail("%s: a batched GEMM takes operands of one dtype (got %s x %s into %s)", op,
                       ad_dtype_name(A->dtype), ad_dtype_name(B->dtype), ad_dtype_name(Y->dtype));
    lt_batch bt = {count, y_stride, a_stride, b_stride};
    bool no_algo = false;
    cu_impl *impl = cu_of(be);
    const bool tune = impl->gemm_tune && beta == 0.0f &&
                      mats_apart(Y, count, y_stride, A, count, a_stride) &&
                      mats_apart(Y, count, y_stride, B, count, b_stride);
    AD_TRY(lt_gemm(impl, Y, A, ta, B, tb, M, N, K, alpha, beta, NULL, AD_F32, &bt, NULL, tune,
                   &no_algo));
    if (no_algo)
        return ad_fail("%s: cuBLASLt has no algorithm for %d batched %s [%lld x %lld] x [%lld x "
                       "%lld] GEMMs",
                       op, count, ad_dtype_name(A->dtype), (long long)M, (long long)K, (long long)K,
                       (long long)N);
    return AD_OK;
}

/* ---- the tuning file (ad_cuda_gemm_tuning_save / _load) ------------------------------------
 * The tuned slots' keys and algorithms as this build lays them out in memory, behind a header
 * naming the GPU and the cuBLASLt version they were timed on: an algorithm is only meaningful
 * to the library version and GPU that handed it out. */
#define TUNING_MAGIC "audistill GEMM tuning, v1"

typedef struct {
    char magic[32];
    uint32_t key_bytes, algo_bytes;
    uint64_t lt_version;
    char device[256];
    uint64_t count;
} tuning_header;

typedef struct {
    algo_key key;
    cublasLtMatmulAlgo_t algo;
    float ms;
    uint32_t bias_way;
} tuning_entry;

static int tuning_header_here(cu_impl *impl, tuning_header *h) {
    memset(h, 0, sizeof *h);
    snprintf(h->magic, sizeof h->magic, "%s", TUNING_MAGIC);
    h->key_bytes = (uint32_t)sizeof(algo_key);
    h->algo_bytes = (uint32_t)sizeof(cublasLtMatmulAlgo_t);
    h->lt_version = (uint64_t)cublasLtGetVersion();
    cudaDeviceProp prop;
    CUDA_TRY(cudaGetDeviceProperties(&prop, impl->device));
    snprintf(h->device, sizeof h->device, "%s", prop.name);
    return AD_OK;
}

extern "C" int ad_cuda_gemm_tuning_save(ad_backend *be, const char *path, long *saved) {
    *saved = 0;
    if (!be || be->device != AD_DEVICE_CUDA)
        return ad_fail("ad_cuda_gemm_tuning_save: not a CUDA backend");
    cu_impl *impl = cu_of(be);
    cu_algo_cache *c = impl->algos;
    if (!c || c->changes == c->saved_changes) return AD_OK;
    tuning_header h;
    AD_TRY(tuning_header_here(impl, &h));
    for (int i = 0; i < ALGO_CACHE_SLOTS; i++)
        if (c->slots[i].used && c->slots[i].found && c->slots[i].tuned) h.count++;
    const size_t bytes = sizeof h + (size_t)h.count * sizeof(tuning_entry);
    char *buf = (char *)ad_calloc(1, bytes, "the GEMM tuning file");
    if (!buf) return AD_ERR;
    memcpy(buf, &h, sizeof h);
    tuning_entry *e = (tuning_entry *)(buf + sizeof h);
    for (int i = 0; i < ALGO_CACHE_SLOTS; i++) {
        const algo_slot *s = &c->slots[i];
        if (!(s->used && s->found && s->tuned)) continue;
        e->key = s->key;
        e->algo = s->algo;
        e->ms = s->ms;
        e->bias_way = s->bias_way;
        e++;
    }
    const int rc = ad_write_file_atomic(path, buf, bytes);
    free(buf);
    if (rc < 0) return ad_fail_context("GEMM tuning file %s", path);
    c->saved_changes = c->changes;
    *saved = (long)h.count;
    return AD_OK;
}

extern "C" int ad_cuda_gemm_tuning_load(ad_backend *be, const char *path, long *loaded) {
    *loaded = 0;
    if (!be || be->device != AD_DEVICE_CUDA)
        return ad_fail("ad_cuda_gemm_tuning_load: not a CUDA backend");
    cu_impl *impl = cu_of(be);
    char *data = NULL;
    size_t size = 0;
    AD_TRY(ad_read_file(path, (size_t)1 << 26, &data, &size));
    int rc = AD_OK;
    tuning_header h, here;
    if (size < sizeof h) {
        rc = ad_fail("GEMM tuning file %s: %zu bytes, less than its header (%zu; delete the file "
                     "to tune again)",
                     path, size, sizeof h);
        goto done;
    }
    memcpy(&h, data, sizeof h);
    if (memchr(h.magic, 0, sizeof h.magic) == NULL || strcmp(h.magic, TUNING_MAGIC) != 0) {
        rc =
            ad_fail("%s is not a GEMM tuning file of this version (delete it to tune again)", path);
        goto done;
    }
    if (h.count > (size - sizeof h) / sizeof(tuning_entry) ||
        size != sizeof h + h.count * sizeof(tuning_entry)) {
        rc = ad_fail("GEMM tuning file %s: %zu bytes, but its header announces %llu choices (%zu "
                     "bytes); truncated or damaged (delete it to tune again)",
                     path, size, (unsigned long long)h.count,
                     sizeof h + (size_t)h.count * sizeof(tuning_entry));
        goto done;
    }
    if ((rc = tuning_header_here(impl, &here)) < 0) goto done;
    h.device[sizeof h.device - 1] = 0;
    if (h.key_bytes != here.key_bytes || h.algo_bytes != here.algo_bytes ||
        h.lt_version != here.lt_version || strcmp(h.device, here.device) != 0) {
        ad_warn("GEMM tuning file %s was made on %s with cuBLASLt %llu (another build or GPU than "
                "this %s with cuBLASLt %llu): not loaded, its GEMMs are tuned again",
                path, h.device, (unsigned long long)h.lt_version, here.device,
                (unsigned long long)here.lt_version);
        *loaded = -1;
        goto done;
    }
    for (uint64_t i = 0; i < h.count; i++) {
        tuning_entry e;
        memcpy(&e, data + sizeof h + i * sizeof e, sizeof e);
        if (e.bias_way > BIAS_FIRST) {
            rc = ad_fail("GEMM tuning file %s: choice %llu is damaged (delete the file to tune "
                         "again)",
                         path, (unsigned long long)i);
            goto done;
        }
        algo_slot *slot = algo_lookup(impl, &e.key);
        if (!slot) {
            rc = impl->algos ? AD_OK : AD_ERR; /* full: the rest are tuned again */
            break;
        }
        if (slot->used) continue; /* met already in this process: that choice stays */
        memset(slot, 0, sizeof *slot);
        slot->used = slot->found = slot->tuned = slot->loaded = true;
        slot->key = e.key;
        slot->algo = e.algo;
        slot->ms = e.ms;
        slot->bias_way = (unsigned char)e.bias_way;
        (*loaded)++;
    }
    if (rc == AD_OK) impl->algos->saved_changes = impl->algos->changes;
done:
    free(data);
    return rc;
}

/* ---- column sums ----------------------------------------------------------------------------
 * Pass 1: block (column tile of 32, row chunk) sums its chunk with 8 row lanes, then a fixed
 * tree over the lanes; pass 2 adds the chunks in chunk order. No atomics, so the result is
 * the same on every run. */
#define COLSUM_TILE   32
#define COLSUM_LANES  8
#define COLSUM_CHUNKS 64

__global__ static void colsum_partial_kernel(float *partial, const char *src, int dt, int64_t rows,
                                             int64_t cols, int64_t ld, int64_t chunk_rows) {
    __shared__ float acc[COLSUM_LANES][COLSUM_TILE];
    const int64_t c = (int64_t)blockIdx.x * COLSUM_TILE + threadIdx.x;
    const int64_t r0 = (int64_t)blockIdx.y * chunk_rows;
    const int64_t r1 = r0 + chunk_rows < rows ? r0 + chunk_rows : rows;
    float s = 0.0f;
    if (c < cols)
        for (int64_t r = r0 + threadIdx.y; r < r1; r += COLSUM_LANES)
            s += cu_load(src, dt, r * ld + c);
    acc[threadIdx.y][threadIdx.x] = s;
    __syncthreads();
    for (int w = COLSUM_LANES / 2; w > 0; w /= 2) {
        if ((int)threadIdx.y < w)
            acc[threadIdx.y][threadIdx.x] += acc[threadIdx.y + w][threadIdx.x];
        __syncthreads();
    }
    if (threadIdx.y == 0 && c < cols) partial[(int64_t)blockIdx.y * cols + c] = acc[0][threadIdx.x];
}

__global__ static void colsum_finish_kernel(float *out, const float *partial, int chunks,
                                            int64_t cols) {
    CU_GRID_STRIDE(c, cols) {
        float s = 0.0f;
        for (int k = 0; k < chunks; k++)
            s += partial[(int64_t)k * cols + c];
        out[c] += s;
    }
}

int cu_colsum_accumulate(ad_backend *be, float *out, const void *src, ad_dtype dtype, int64_t rows,
                         int64_t cols, int64_t ld) {
    if (rows == 0 || cols == 0) return AD_OK;
    int chunks = COLSUM_CHUNKS;
    if (rows < (int64_t)chunks * 64) chunks = (int)((rows + 63) / 64);
    const int64_t chunk_rows = (rows + chunks - 1) / chunks;
    float *partial;
    AD_TRY(cu_scratch(be, CU_SCRATCH_PARTIAL, (size_t)chunks * (size_t)cols * sizeof(float),
                      (void **)&partial));
    dim3 grid((unsigned)((cols + COLSUM_TILE - 1) / COLSUM_TILE), (unsigned)chunks);
    dim3 block(COLSUM_TILE, COLSUM_LANES);
    colsum_partial_kernel<<<grid, block>>>(partial, (const char *)src, dtype, rows, cols, ld,
                                           chunk_rows);
    CUDA_TRY_LAUNCH();
    colsum_finish_kernel<<<cu_blocks(cols, 256), 256>>>(out, partial, chunks, cols);
    CUDA_TRY_LAUNCH();
    return AD_OK;
}

/* ---- ops ---------------------------------------------------------------------------------- */

static int output_mat(const char *op, const ad_tensor *y, cu_mat *m) {
    AD_TRY(cu_check(op, "y", y, CU_FLOAT));
    AD_TRY(cu_mat_of(op, y, m));
    if (m->trans) return ad_op_fail_tensor(op, y, "the output's rows must be contiguous");
    return AD_OK;
}

int cu_matmul(ad_backend *be, ad_tensor *y, const ad_tensor *a, bool transpose_a,
              const ad_tensor *b, bool transpose_b, float alpha, float beta) {
    const char *op = "matmul";
    cu_mat Y, A, B;
    AD_TRY(output_mat(op, y, &Y));
    AD_TRY(cu_check(op, "a", a, CU_FLOAT));
    AD_TRY(cu_check(op, "b", b, CU_FLOAT));
    AD_TRY(cu_mat_of(op, a, &A));
    AD_TRY(cu_mat_of(op, b, &B));
    AD_TRY(ad_op_check_matmul(op, y, (ad_op_matrix){Y.rows, Y.cols, Y.ld, Y.trans}, a,
                              (ad_op_matrix){A.rows, A.cols, A.ld, A.trans}, transpose_a, b,
                              (ad_op_matrix){B.rows, B.cols, B.ld, B.trans}, transpose_b));
    return cu_gemm(be, op, &Y, &A, transpose_a, &B, transpose_b, alpha, beta, NULL);
}

/* linear's operands as matrices, checked: y [rows, N] = x [rows, K] w [N, K]^T. */
static int linear_mats(const char *op, ad_tensor *y, const ad_tensor *x, const ad_tensor *w,
                       cu_mat *Y, cu_mat *X, cu_mat *W) {
    AD_TRY(output_mat(op, y, Y));
    AD_TRY(cu_check(op, "x", x, CU_FLOAT));
    AD_TRY(cu_check(op, "w", w, CU_FLOAT));
    AD_TRY(ad_op_check_ndim(op, w, 2, 2));
    AD_TRY(cu_mat_of(op, x, X));
    AD_TRY(cu_mat_of(op, w, W));
    return ad_op_check_linear(op, y, (ad_op_matrix){Y->rows, Y->cols, Y->ld, Y->trans}, x,
                              (ad_op_matrix){X->rows, X->cols, X->ld, X->trans}, w);
}

int cu_linear(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *w,
              const ad_tensor *bias) {
    const char *op = "linear";
    if (w && w->dtype == AD_QGROUP) {
        ad_cuda_quant_weight qw;
        AD_TRY(cu_quant_view(op, w, &qw));
        return ad_cuda_quant_linear(be, y, x, &qw, bias);
    }
    cu_mat Y, X, W;
    AD_TRY(linear_mats(op, y, x, w, &Y, &X, &W));
    return cu_gemm(be, op, &Y, &X, false, &W, true, 1.0f, 0.0f, bias);
}

/* The residual rides in the GEMM as its C operand where the product is one cuBLASLt call (one
 * pass over y instead of the add's three), else the add follows. */
int cu_linear_residual(ad_backend *be, ad_tensor *y, const ad_tensor *x, const ad_tensor *w,
                       const ad_tensor *bias, const ad_tensor *residual) {
    const char *op = "linear_residual";
    AD_TRY(cu_check(op, "residual", residual, CU_FLOAT));
    AD_TRY(ad_op_check_residual(op, y, residual));
    bool fused = false;
    if (w && w->dtype == AD_QGROUP) {
        AD_TRY(cu_linear(be, y, x, w, bias));
    } else {
        cu_mat Y, X, W, R;
        AD_TRY(linear_mats(op, y, x, w, &Y, &X, &W));
        AD_TRY(cu_mat_of(op, residual, &R));
        AD_TRY(cu_gemm_residual(be, op, &Y, &X, false, &W, true, bias, &R, &fused));
    }
    return fused ? AD_OK : cu_add(be, y, y, residual);
}

int cu_linear_backward(ad_backend *be, ad_tensor *dx, ad_tensor *dw, ad_tensor *db,
                       const ad_tensor *dy, const ad_tensor *x, const ad_tensor *w,
                       bool dw_overwrite) {
    const char *op = "linear_backward";
    AD_TRY(cu_check(op, "dy", dy, CU_FLOAT));
    AD_TRY(cu_check(op, "x", x, CU_FLOAT));
    AD_TRY(cu_check(op, "w", w, CU_FLOAT));
    AD_TRY(ad_op_check_ndim(op, w, 2, 2));
    cu_mat DY, X, W;
    AD_TRY(cu_mat_of(op, dy, &DY));
    AD_TRY(cu_mat_of(op, x, &X));
    AD_TRY(cu_mat_of(op, w, &W));
    const int64_t N = W.rows, K = W.cols, M = X.rows;
    if (X.cols != K || DY.cols != N || DY.rows != M)
        return ad_fail("%s: x (%s) [%lld x %lld] / dy (%s) [%lld x %lld] do not match w [%lld, "
                       "%lld]",
                       op, x->name, (long long)X.rows, (long long)X.cols, dy->name,
                       (long long)DY.rows, (long long)DY.cols, (long long)N, (long long)K);
    /* Under bf16 GEMMs both products read dy rounded to bf16: it is converted once, into operand
     * A's scratch, which neither GEMM then touches (their A is bf16 already, their B goes to
     * B's scratch). The bias gradient sums the f32 dy. */
    cu_mat DY16 = DY;
    if (cu_of(be)->bf16_gemm && dx && dw && DY.dtype == AD_F32 && dx->dtype == AD_F32 &&
        (W.dtype == AD_F32 || W.dtype == AD_BF16) && (X.dtype == AD_F32 || X.dtype == AD_BF16)) {
        void *buf;
        AD_TRY(cu_scratch(be, CU_SCRATCH_A, (size_t)(M * N) * 2, &buf));
        AD_TRY(to_bf16(&DY, buf, &DY16));
    }
    if (dx) {
        cu_mat DX;
        AD_TRY(output_mat(op, dx, &DX));
        AD_TRY(ad_op_check_no_alias(op, dx, dy));
        if (DX.rows != M || DX.cols != K)
            return ad_op_fail_tensor(op, dx, "expected %lld x %lld like x", (long long)M,
                                     (long long)K);
        AD_TRY(cu_gemm(be, op, &DX, &DY16, false, &W, false, 1.0f, 0.0f, NULL));
    }
    if (dw) {
        cu_mat DW;
        AD_TRY(cu_check(op, "dw", dw, CU_F32));
        AD_TRY(output_mat(op, dw, &DW));
        if (DW.rows != N || DW.cols != K)
            return ad_op_fail_tensor(op, dw, "expected [%lld, %lld] like w", (long long)N,
                                     (long long)K);
        /* no rows (M = 0): y = beta * y, 0 for an overwrite */
        AD_TRY(
            cu_gemm(be, op, &DW, &DY16, true, &X, false, 1.0f, dw_overwrite ? 0.0f : 1.0f, NULL));
    }
    if (db) {
        AD_TRY(cu_check(op, "db", db, CU_F32));
        AD_TRY(ad_op_check_vector(op, db, N));
        AD_TRY(ad_op_check_contiguous(op, db));
        if (DY.trans) return ad_op_fail_tensor(op, dy, "rows must be contiguous for the bias sum");
        AD_TRY(cu_colsum_accumulate(be, (float *)db->data, DY.data, DY.dtype, M, N, DY.ld));
    }
    return AD_OK;
}
