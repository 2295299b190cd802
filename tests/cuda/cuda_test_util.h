/* Shared helpers of the CUDA parity tests: the CPU reference backend and the CUDA backend side
 * by side, tensors holding the same random values on both, and the comparison every test
 * uses: max |cuda - cpu| / max |cpu| over the whole tensor (a normwise error, so sums that
 * cancel to ~0 in one element do not need an absolute floor).
 *
 * Tolerances (llm.c style, stated once here and used by every test):
 * - F32 tensors on both sides: 1e-5.
 * - BF16 inputs (rounded to bf16 on the host, so both backends see identical values) with an
 *   F32 output of an fp32-accumulating op (bf16 GEMM into an f32 gradient): 1e-4; the
 *   products are exact in fp32, only the accumulation order differs.
 * - BF16 outputs: 1e-2, i.e. one bf16 rounding (2^-9 relative at the largest element) plus
 *   the f32 accumulation differences, with margin. */
#ifndef AUDISTILL_TESTS_CUDA_TEST_UTIL_H
#define AUDISTILL_TESTS_CUDA_TEST_UTIL_H

#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "../../cuda/backend_cuda.h"
#include "backend/backend.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "test.h"

#define TOL_F32      1e-5
#define TOL_BF16_F32 1e-4
#define TOL_BF16     1e-2

static ad_backend *g_cpu, *g_gpu;
static ad_rng g_rng;

/* One tensor on both backends: c (CPU, always F32) and g (CUDA, dtype of the test). */
typedef struct {
    ad_tensor c, g;
    void *cbuf, *gbuf;
} pair;

/* `seed` unless AUDISTILL_TEST_SEED names another (a number, or "random" for a fresh one each
 * run, as tests/gpu/check.sh asks); the seed is printed so a failure can be replayed. */
static inline void setup_backends(uint64_t seed) {
    if (ad_cuda_available() < 0) TEST_SKIP("%s", ad_error());
    const char *env = getenv("AUDISTILL_TEST_SEED");
    if (env && !strcmp(env, "random")) {
        struct timespec ts;
        clock_gettime(CLOCK_REALTIME, &ts);
        seed = (uint64_t)ts.tv_sec * 1000003u ^ (uint64_t)ts.tv_nsec ^ ((uint64_t)getpid() << 32);
    } else if (env && *env) {
        seed = strtoull(env, NULL, 10);
    }
    printf("seed: %llu (AUDISTILL_TEST_SEED=%llu replays it)\n", (unsigned long long)seed,
           (unsigned long long)seed);
    char name[256];
    if (ad_cuda_describe(0, name, sizeof name) == AD_OK) printf("device: %s\n", name);
    if (ad_backend_cpu_create(&g_cpu, 2) < 0 || ad_backend_cuda_create(&g_gpu, 0) < 0) {
        fprintf(stderr, "cannot create the backends: %s\n", ad_error());
        exit(1);
    }
    ad_rng_init(&g_rng, seed, 0);
}

static inline void teardown_backends(void) {
    ad_backend_destroy(g_cpu);
    ad_backend_destroy(g_gpu);
}

/* Values: normal * scale (+ offset), rounded through bf16 when the CUDA side is BF16 so both
 * backends start from the same numbers. */
static inline void pair_make(pair *p, const char *name, ad_dtype gdt, int ndim,
                             const int64_t *shape, float scale, float offset) {
    memset(p, 0, sizeof *p);
    int64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= shape[d];
    float *host = malloc(sizeof(float) * (size_t)(n ? n : 1));
    for (int64_t i = 0; i < n; i++) {
        float v = ad_rng_normal(&g_rng) * scale + offset;
        if (gdt == AD_BF16) v = ad_bf16_to_f32(ad_f32_to_bf16(v));
        if (gdt == AD_F16) v = ad_f16_to_f32(ad_f32_to_f16(v));
        host[i] = v;
    }
    CHECK_OK(g_cpu->alloc(g_cpu, sizeof(float) * (size_t)(n ? n : 1), &p->cbuf));
    CHECK_OK(ad_tensor_init(&p->c, p->cbuf, AD_F32, AD_DEVICE_CPU, ndim, shape, name));
    memcpy(p->cbuf, host, sizeof(float) * (size_t)n);
    CHECK_OK(g_gpu->alloc(g_gpu, ad_dtype_bytes_for(gdt, n ? n : 1), &p->gbuf));
    CHECK_OK(ad_tensor_init(&p->g, p->gbuf, gdt, AD_DEVICE_CUDA, ndim, shape, name));
    ad_tensor h;
    CHECK_OK(ad_tensor_init(&h, host, AD_F32, AD_DEVICE_CPU, ndim, shape, name));
    CHECK_OK(g_gpu->upload(g_gpu, &p->g, &h));
    free(host);
}

/* I32 index tensor with the given values on both sides. */
static inline void pair_ids(pair *p, const char *name, int ndim, const int64_t *shape,
                            const int32_t *values) {
    memset(p, 0, sizeof *p);
    int64_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= shape[d];
    CHECK_OK(g_cpu->alloc(g_cpu, sizeof(int32_t) * (size_t)(n ? n : 1), &p->cbuf));
    CHECK_OK(ad_tensor_init(&p->c, p->cbuf, AD_I32, AD_DEVICE_CPU, ndim, shape, name));
    memcpy(p->cbuf, values, sizeof(int32_t) * (size_t)n);
    CHECK_OK(g_gpu->alloc(g_gpu, sizeof(int32_t) * (size_t)(n ? n : 1), &p->gbuf));
    CHECK_OK(ad_tensor_init(&p->g, p->gbuf, AD_I32, AD_DEVICE_CUDA, ndim, shape, name));
    CHECK_OK(g_gpu->upload(g_gpu, &p->g, &p->c));
}

static inline void pair_free(pair *p) {
    g_cpu->release(g_cpu, p->cbuf);
    g_gpu->release(g_gpu, p->gbuf);
    memset(p, 0, sizeof *p);
}

/* The same view of both sides. */
static inline void pair_slice(const pair *p, int dim, int64_t start, int64_t len, pair *out) {
    *out = *p;
    out->cbuf = out->gbuf = NULL; /* a view owns nothing */
    CHECK_OK(ad_tensor_slice(&p->c, dim, start, len, &out->c));
    CHECK_OK(ad_tensor_slice(&p->g, dim, start, len, &out->g));
}

/* Rows [key_len[b], T) of each batch element of a [B, T, C] pair set to NaN on both sides:
 * keys an attention masks must never be read (the CPU reference does not). */
static inline void pair_poison_masked_keys(pair *p, const int *key_len) {
    if (!key_len) return;
    for (int64_t b = 0; b < p->c.shape[0]; b++) {
        if (key_len[b] >= p->c.shape[1]) continue;
        pair one, rows;
        pair_slice(p, 0, b, 1, &one);
        pair_slice(&one, 1, key_len[b], p->c.shape[1] - key_len[b], &rows);
        CHECK_OK(g_cpu->fill(g_cpu, &rows.c, NAN));
        CHECK_OK(g_gpu->fill(g_gpu, &rows.g, NAN));
    }
}

/* Normwise error of a CUDA tensor against the CPU one (views allowed on both sides). */
static inline double view_error(const ad_tensor *c, const ad_tensor *g) {
    const int64_t n = ad_tensor_numel(c);
    float *a = malloc(sizeof(float) * (size_t)(n ? n : 1));
    float *b = malloc(sizeof(float) * (size_t)(n ? n : 1));
    CHECK_OK(ad_tensor_to_f32(c, a));
    ad_tensor h;
    CHECK_OK(ad_tensor_init(&h, b, AD_F32, AD_DEVICE_CPU, g->ndim, g->shape, "download"));
    CHECK_OK(g_gpu->download(g_gpu, &h, g));
    double diff = 0, mag = 0;
    int nonfinite = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(b[i]) || !isfinite(a[i])) nonfinite++;
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > diff) diff = d;
        if (fabs((double)a[i]) > mag) mag = fabs((double)a[i]);
    }
    free(a);
    free(b);
    if (nonfinite) return INFINITY;
    return mag > 0 ? diff / mag : diff;
}

static inline void expect_close(const char *what, const pair *p, double tol) {
    const double err = view_error(&p->c, &p->g);
    printf("  %-44s %-4s err %.3g (tol %.0e)\n", what, ad_dtype_name(p->g.dtype), err, tol);
    CHECK_MSG(err <= tol, "%s: CUDA vs CPU error %.3g above %.0e", what, err, tol);
}

/* Bitwise equality of two CUDA tensors (determinism checks). */
static inline bool same_bits(const ad_tensor *a, const ad_tensor *b) {
    const int64_t n = ad_tensor_numel(a);
    float *x = malloc(sizeof(float) * (size_t)(n ? n : 1));
    float *y = malloc(sizeof(float) * (size_t)(n ? n : 1));
    ad_tensor hx, hy;
    CHECK_OK(ad_tensor_init(&hx, x, AD_F32, AD_DEVICE_CPU, a->ndim, a->shape, "a"));
    CHECK_OK(ad_tensor_init(&hy, y, AD_F32, AD_DEVICE_CPU, b->ndim, b->shape, "b"));
    CHECK_OK(g_gpu->download(g_gpu, &hx, a));
    CHECK_OK(g_gpu->download(g_gpu, &hy, b));
    const bool same = memcmp(x, y, sizeof(float) * (size_t)n) == 0;
    free(x);
    free(y);
    return same;
}

/* The CPU side of a 2-D view `p` rounded to bf16 (the host's round to nearest even) into a
 * new contiguous pair `r` (only its CPU side is meant). */
static inline void cpu_round_bf16(const pair *p, pair *r) {
    pair_make(r, "rounded", AD_F32, 2, p->c.shape, 1.0f, 0.0f);
    const float *src = p->c.data;
    float *dst = r->c.data;
    for (int64_t i = 0; i < p->c.shape[0]; i++)
        for (int64_t k = 0; k < p->c.shape[1]; k++)
            dst[i * p->c.shape[1] + k] =
                ad_bf16_to_f32(ad_f32_to_bf16(src[i * p->c.stride[0] + k * p->c.stride[1]]));
}

#endif
