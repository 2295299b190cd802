// The subset of cuBLASLt that cuda/gemm.cu calls, emulated on the CPU from the library's
// documented semantics (column-major operands, D = alpha op(A) op(B) + beta C, the BIAS
// epilogue adding a vector of D's row count to every column), not from our code: a transposed
// flag or a layout that disagrees with the dimensions is refused with
// CUBLAS_STATUS_INVALID_VALUE, as the library does, and a dtype combination or bias type the
// library does not offer for CUBLAS_COMPUTE_32F gets CUBLAS_STATUS_NOT_SUPPORTED.
// Products are accumulated in double, so an f32 result is the exact one rounded once (a bf16
// D is that f32 result rounded again, as the f32 compute type's epilogue gives it).
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "emu_device.h"

void ad_emu_default_stream_work(void);
void ad_emu_device_access(bool begin);
void ad_emu_spend_us(long us);

/* How many answers the heuristic gives (GEMM tuning times each). */
#define EMU_ALGOS 3

struct emu_desc {
    cublasComputeType_t compute;
    cudaDataType_t scale;
    cublasOperation_t ta = CUBLAS_OP_N, tb = CUBLAS_OP_N;
    cublasLtEpilogue_t epilogue = CUBLASLT_EPILOGUE_DEFAULT;
    const void *bias = NULL;
    int bias_type = -1;
};
struct emu_layout {
    cudaDataType_t type;
    uint64_t rows, cols;
    int64_t ld;
    int32_t batch = 1;        /* CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT */
    int64_t batch_stride = 0; /* CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET, in elements */
};
struct emu_pref {
    size_t workspace = 0;
};

size_t cublasLtGetVersion(void) {
    return 130100; /* GEMM tuning files name the version their algorithms came from */
}

cublasStatus_t cublasLtCreate(cublasLtHandle_t *h) {
    *h = (cublasLtHandle_t)malloc(1);
    return *h ? CUBLAS_STATUS_SUCCESS : CUBLAS_STATUS_ALLOC_FAILED;
}
cublasStatus_t cublasLtDestroy(cublasLtHandle_t h) {
    free(h);
    return CUBLAS_STATUS_SUCCESS;
}

const char *cublasGetStatusString(cublasStatus_t s) {
    switch (s) {
    case CUBLAS_STATUS_SUCCESS: return "CUBLAS_STATUS_SUCCESS";
    case CUBLAS_STATUS_INVALID_VALUE: return "CUBLAS_STATUS_INVALID_VALUE";
    case CUBLAS_STATUS_NOT_SUPPORTED: return "CUBLAS_STATUS_NOT_SUPPORTED";
    case CUBLAS_STATUS_ALLOC_FAILED: return "CUBLAS_STATUS_ALLOC_FAILED";
    default: return "CUBLAS_STATUS_(emulator: unknown)";
    }
}

cublasStatus_t cublasLtMatmulDescCreate(cublasLtMatmulDesc_t *d, cublasComputeType_t compute,
                                        cudaDataType_t scale) {
    emu_desc *e = new emu_desc;
    e->compute = compute;
    e->scale = scale;
    *d = (cublasLtMatmulDesc_t)e;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulDescDestroy(cublasLtMatmulDesc_t d) {
    delete (emu_desc *)d;
    return CUBLAS_STATUS_SUCCESS;
}

template <typename T> static cublasStatus_t get_attr(T *dst, const void *buf, size_t size) {
    if (size != sizeof(T)) return CUBLAS_STATUS_INVALID_VALUE;
    memcpy(dst, buf, sizeof(T));
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulDescSetAttribute(cublasLtMatmulDesc_t d,
                                              cublasLtMatmulDescAttributes_t attr, const void *buf,
                                              size_t size) {
    emu_desc *e = (emu_desc *)d;
    switch (attr) {
    case CUBLASLT_MATMUL_DESC_TRANSA: return get_attr(&e->ta, buf, size);
    case CUBLASLT_MATMUL_DESC_TRANSB: return get_attr(&e->tb, buf, size);
    case CUBLASLT_MATMUL_DESC_EPILOGUE: return get_attr(&e->epilogue, buf, size);
    case CUBLASLT_MATMUL_DESC_BIAS_POINTER: return get_attr(&e->bias, buf, size);
    case CUBLASLT_MATMUL_DESC_BIAS_DATA_TYPE: return get_attr(&e->bias_type, buf, size);
    default: return CUBLAS_STATUS_NOT_SUPPORTED; /* not emulated */
    }
}

cublasStatus_t cublasLtMatrixLayoutCreate(cublasLtMatrixLayout_t *l, cudaDataType type,
                                          uint64_t rows, uint64_t cols, int64_t ld) {
    emu_layout *e = new emu_layout{type, rows, cols, ld};
    *l = (cublasLtMatrixLayout_t)e;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatrixLayoutSetAttribute(cublasLtMatrixLayout_t l,
                                                cublasLtMatrixLayoutAttribute_t attr,
                                                const void *buf, size_t size) {
    emu_layout *e = (emu_layout *)l;
    switch (attr) {
    case CUBLASLT_MATRIX_LAYOUT_BATCH_COUNT: {
        cublasStatus_t st = get_attr(&e->batch, buf, size);
        return st == CUBLAS_STATUS_SUCCESS && e->batch < 1 ? CUBLAS_STATUS_INVALID_VALUE : st;
    }
    case CUBLASLT_MATRIX_LAYOUT_STRIDED_BATCH_OFFSET: return get_attr(&e->batch_stride, buf, size);
    default: return CUBLAS_STATUS_NOT_SUPPORTED; /* not emulated */
    }
}
cublasStatus_t cublasLtMatrixLayoutDestroy(cublasLtMatrixLayout_t l) {
    delete (emu_layout *)l;
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulPreferenceCreate(cublasLtMatmulPreference_t *p) {
    *p = (cublasLtMatmulPreference_t) new emu_pref;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceDestroy(cublasLtMatmulPreference_t p) {
    delete (emu_pref *)p;
    return CUBLAS_STATUS_SUCCESS;
}
cublasStatus_t cublasLtMatmulPreferenceSetAttribute(cublasLtMatmulPreference_t p,
                                                    cublasLtMatmulPreferenceAttributes_t attr,
                                                    const void *buf, size_t size) {
    emu_pref *e = (emu_pref *)p;
    if (attr == CUBLASLT_MATMUL_PREF_MAX_WORKSPACE_BYTES) return get_attr(&e->workspace, buf, size);
    uint32_t align;
    switch (attr) {
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_A_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_B_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_C_BYTES:
    case CUBLASLT_MATMUL_PREF_MIN_ALIGNMENT_D_BYTES: return get_attr(&align, buf, size);
    default: return CUBLAS_STATUS_NOT_SUPPORTED;
    }
}

static bool float_type(cudaDataType_t t) {
    return t == CUDA_R_32F || t == CUDA_R_16BF || t == CUDA_R_16F;
}

/* The checks cublasLtMatmul makes, shared with the heuristic query. */
static cublasStatus_t validate(const emu_desc *d, const emu_layout *a, const emu_layout *b,
                               const emu_layout *c, const emu_layout *dl) {
    if (d->compute != CUBLAS_COMPUTE_32F || d->scale != CUDA_R_32F)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    const uint64_t m = dl->rows, n = dl->cols;
    const uint64_t am = d->ta == CUBLAS_OP_N ? a->rows : a->cols;
    const uint64_t ak = d->ta == CUBLAS_OP_N ? a->cols : a->rows;
    const uint64_t bk = d->tb == CUBLAS_OP_N ? b->rows : b->cols;
    const uint64_t bn = d->tb == CUBLAS_OP_N ? b->cols : b->rows;
    if (am != m || bn != n || ak != bk || c->rows != m || c->cols != n)
        return CUBLAS_STATUS_INVALID_VALUE;
    for (const emu_layout *l : {a, b, c, dl})
        if (l->ld < (int64_t)(l->rows > 1 ? l->rows : 1)) return CUBLAS_STATUS_INVALID_VALUE;
    /* Strided batches: every operand has the same count (a stride of 0 repeats one matrix). */
    if (a->batch != dl->batch || b->batch != dl->batch || c->batch != dl->batch)
        return CUBLAS_STATUS_INVALID_VALUE;
    if (!float_type(a->type) || a->type != b->type || c->type != dl->type)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (a->type == CUDA_R_32F && dl->type != CUDA_R_32F) return CUBLAS_STATUS_NOT_SUPPORTED;
    if (a->type != CUDA_R_32F && dl->type != CUDA_R_32F && dl->type != a->type)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (d->epilogue != CUBLASLT_EPILOGUE_DEFAULT && d->epilogue != CUBLASLT_EPILOGUE_BIAS)
        return CUBLAS_STATUS_NOT_SUPPORTED;
    if (d->epilogue == CUBLASLT_EPILOGUE_BIAS) {
        /* The bias has D's element type unless another one is named that the library takes
         * for these types: for float outputs, none. */
        if (d->bias_type != -1 && d->bias_type != (int)dl->type) return CUBLAS_STATUS_NOT_SUPPORTED;
        if (!d->bias) return CUBLAS_STATUS_INVALID_VALUE;
    }
    return CUBLAS_STATUS_SUCCESS;
}

cublasStatus_t cublasLtMatmulAlgoGetHeuristic(cublasLtHandle_t h, cublasLtMatmulDesc_t d,
                                              cublasLtMatrixLayout_t a, cublasLtMatrixLayout_t b,
                                              cublasLtMatrixLayout_t c, cublasLtMatrixLayout_t dl,
                                              cublasLtMatmulPreference_t p, int requested,
                                              cublasLtMatmulHeuristicResult_t *results,
                                              int *found) {
    (void)h;
    (void)p;
    *found = 0;
    if (requested < 1) return CUBLAS_STATUS_INVALID_VALUE;
    cublasStatus_t st = validate((emu_desc *)d, (emu_layout *)a, (emu_layout *)b, (emu_layout *)c,
                                 (emu_layout *)dl);
    if (st != CUBLAS_STATUS_SUCCESS) return st;
    /* EMU_ALGOS answers, all computing the same; data[1] numbers them for the delays below */
    const int n = requested < EMU_ALGOS ? requested : EMU_ALGOS;
    for (int i = 0; i < n; i++) {
        memset(&results[i], 0, sizeof results[i]);
        results[i].algo.data[0] = 0xE3u; /* marks an algorithm this emulator handed out */
        results[i].algo.data[1] = (uint64_t)i;
        results[i].state = CUBLAS_STATUS_SUCCESS;
        results[i].wavesCount = 1.0f;
    }
    *found = n;
    return CUBLAS_STATUS_SUCCESS;
}

/* Makes GEMM tuning's choices testable: AUDISTILL_CUDA_EMU_ALGO_DELAY_US="d0,d1,d2" spends d_i
 * microseconds (slept, or on the virtual clock: emu_runtime.cpp) in each call with answer i,
 * AUDISTILL_CUDA_EMU_BIAS_DELAY_US more in each call with a bias epilogue,
 * AUDISTILL_CUDA_EMU_NO_BIAS_DELAY_US more in each call without. */
/* What the last cublasLtMatmul ran with, for tests that check which answer and way GEMM tuning
 * kept (tests/cuda/test_cuda_gemm_tuning.c). */
static int g_last_algo = -1, g_last_bias_epilogue = -1;
extern "C" int ad_emu_last_gemm_algo(void) {
    return g_last_algo;
}
extern "C" int ad_emu_last_gemm_bias_epilogue(void) {
    return g_last_bias_epilogue;
}

static void emu_delay(const cublasLtMatmulAlgo_t *algo, bool bias) {
    long us = 1;
    const char *list = getenv("AUDISTILL_CUDA_EMU_ALGO_DELAY_US");
    if (list && *list && algo) {
        const char *p = list;
        for (uint64_t i = 0; i < algo->data[1] && p; i++) {
            p = strchr(p, ',');
            if (p) p++;
        }
        if (p) us += strtol(p, NULL, 10);
    }
    const char *b =
        getenv(bias ? "AUDISTILL_CUDA_EMU_BIAS_DELAY_US" : "AUDISTILL_CUDA_EMU_NO_BIAS_DELAY_US");
    if (b && *b) us += strtol(b, NULL, 10);
    ad_emu_spend_us(us);
}

static double load(const void *p, cudaDataType_t t, int64_t i) {
    if (t == CUDA_R_32F) return ((const float *)p)[i];
    if (t == CUDA_R_16BF) return __bfloat162float(((const __nv_bfloat16 *)p)[i]);
    return __half2float(((const __half *)p)[i]);
}

static void store(void *p, cudaDataType_t t, int64_t i, double v) {
    if (t == CUDA_R_32F)
        ((float *)p)[i] = (float)v;
    else if (t == CUDA_R_16BF)
        ((__nv_bfloat16 *)p)[i] = __float2bfloat16_rn((float)v);
    else
        ((__half *)p)[i] = __float2half_rn((float)v);
}

cublasStatus_t cublasLtMatmul(cublasLtHandle_t h, cublasLtMatmulDesc_t desc, const void *alpha,
                              const void *A, cublasLtMatrixLayout_t al, const void *B,
                              cublasLtMatrixLayout_t bl, const void *beta, const void *C,
                              cublasLtMatrixLayout_t cl, void *D, cublasLtMatrixLayout_t dl,
                              const cublasLtMatmulAlgo_t *algo, void *workspace,
                              size_t workspace_bytes, cudaStream_t stream) {
    ad_emu_default_stream_work();
    (void)h;
    (void)workspace;
    (void)workspace_bytes;
    (void)stream;
    const emu_desc *d = (const emu_desc *)desc;
    const emu_layout *la = (emu_layout *)al, *lb = (emu_layout *)bl, *lc = (emu_layout *)cl,
                     *ld = (emu_layout *)dl;
    cublasStatus_t st = validate(d, la, lb, lc, ld);
    if (st != CUBLAS_STATUS_SUCCESS) return st;
    if (algo && (algo->data[0] != 0xE3u || algo->data[1] >= EMU_ALGOS))
        return CUBLAS_STATUS_INVALID_VALUE;
    emu_delay(algo, d->epilogue == CUBLASLT_EPILOGUE_BIAS);
    g_last_algo = algo ? (int)algo->data[1] : -1;
    g_last_bias_epilogue = d->epilogue == CUBLASLT_EPILOGUE_BIAS;
    const float fa = *(const float *)alpha, fb = *(const float *)beta;
    const int64_t m = (int64_t)ld->rows, n = (int64_t)ld->cols;
    const int64_t k = (int64_t)(d->ta == CUBLAS_OP_N ? la->cols : la->rows);
    const bool in_place = C == D;
    if (in_place && (lc->ld != ld->ld || lc->type != ld->type)) return CUBLAS_STATUS_INVALID_VALUE;
    /* Column-major: element (r, c) of a layout is at r + c * ld. */
    if (in_place && lc->batch_stride != ld->batch_stride) return CUBLAS_STATUS_INVALID_VALUE;
    ad_emu_device_access(true);
    for (int64_t q = 0; q < ld->batch; q++) {
        const int64_t oa = q * la->batch_stride, ob = q * lb->batch_stride,
                      oc = q * lc->batch_stride, od = q * ld->batch_stride;
        for (int64_t j = 0; j < n; j++)
            for (int64_t i = 0; i < m; i++) {
                double acc = 0.0;
                for (int64_t p = 0; p < k; p++) {
                    const int64_t ia = d->ta == CUBLAS_OP_N ? i + p * la->ld : p + i * la->ld;
                    const int64_t ib = d->tb == CUBLAS_OP_N ? p + j * lb->ld : j + p * lb->ld;
                    acc += load(A, la->type, oa + ia) * load(B, lb->type, ob + ib);
                }
                double v = (double)fa * acc;
                if (fb != 0.0f) v += (double)fb * load(C, lc->type, oc + i + j * lc->ld);
                if (d->epilogue == CUBLASLT_EPILOGUE_BIAS) v += load(d->bias, ld->type, i);
                /* the compute type is f32: a narrower D is rounded from the f32 result, as
                 * the library's epilogue does, not straight from the double */
                store(D, ld->type, od + i + j * ld->ld, (double)(float)v);
            }
    }
    ad_emu_device_access(false);
    return CUBLAS_STATUS_SUCCESS;
}
