/* Every op of the CPU backend against a plain reference written here (double accumulation, the
 * textbook formula) on fresh random shapes and inputs: strided views (slices of wider buffers,
 * KV-cache slices, transposed views), BF16/F16 weights, in-place calls, and the refusals (shape,
 * dtype, out-of-range indices, aliasing).
 *
 * The seed comes from the clock and is printed; AUDISTILL_TEST_SEED=<n> repeats a run.
 * Tolerances (per element): reductions |got - ref| <= 2e-6 * sum|terms| + 1e-5 * |ref| (fp32
 * BLAS summation over at most a few hundred terms stays far inside); elementwise ops
 * 2e-6 * |ref| + 1e-7 (a few float32 ulps).
 *
 * `test_backend_cpu --bench` times linear at typical shapes (naive loop, 1 and 2 threads, F32
 * and BF16 weights); ctest does not run it. */
#include <time.h>
#include <unistd.h>

#include "backend/backend.h"
#include "core/rng.h"
#include "test.h"

static ad_backend *be;
static ad_rng rng;

/* ---- test memory: every buffer of a test is freed at its end ------------------------------ */
static void *owned[512];
static int n_owned;

static void *take(size_t bytes) {
    void *p = calloc(1, bytes + 16);
    if (!p || n_owned == 512) {
        fprintf(stderr, "test out of memory\n");
        exit(1);
    }
    owned[n_owned++] = p;
    return p;
}

static void free_all(void) {
    while (n_owned)
        free(owned[--n_owned]);
}

static int64_t rnd(int64_t lo, int64_t hi) { /* inclusive */
    return lo + (int64_t)ad_rng_below(&rng, (uint32_t)(hi - lo + 1));
}

/* A contiguous F32 tensor of normal random values. */
static float *tensor(ad_tensor *t, int ndim, const int64_t *shape, const char *name) {
    ad_tensor tmp;
    CHECK_OK(ad_tensor_init(&tmp, NULL, AD_F32, AD_DEVICE_CPU, ndim, shape, name));
    int64_t n = ad_tensor_numel(&tmp);
    float *d = take((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++)
        d[i] = ad_rng_normal(&rng);
    CHECK_OK(ad_tensor_init(t, d, AD_F32, AD_DEVICE_CPU, ndim, shape, name));
    return d;
}

/* Columns [off, off + cols) of a random [.., cols + extra] buffer: rows strided, not contiguous. */
static void strided(ad_tensor *t, int ndim, const int64_t *shape, int64_t extra, const char *name) {
    int64_t wide[AD_MAX_DIMS];
    for (int d = 0; d < ndim; d++)
        wide[d] = shape[d];
    wide[ndim - 1] += extra;
    ad_tensor w;
    tensor(&w, ndim, wide, name);
    CHECK_OK(ad_tensor_slice(&w, ndim - 1, extra / 2, shape[ndim - 1], t));
}

/* Element i (row-major over the shape) of any F32 tensor view. */
static double at(const ad_tensor *t, int64_t i) {
    int64_t off = 0;
    for (int d = t->ndim - 1; d >= 0; d--) {
        off += (i % t->shape[d]) * t->stride[d];
        i /= t->shape[d];
    }
    if (t->dtype == AD_BF16) return ad_bf16_to_f32(((const uint16_t *)t->data)[off]);
    if (t->dtype == AD_F16) return ad_f16_to_f32(((const uint16_t *)t->data)[off]);
    return ((const float *)t->data)[off];
}

/* got (any view) against ref; mag: per-element sum of |terms| of a reduction, or NULL. */
static void check_close(const char *what, const ad_tensor *got, const double *ref,
                        const double *mag, double rtol, double atol) {
    int64_t n = ad_tensor_numel(got), worst_i = -1;
    double worst = 0;
    for (int64_t i = 0; i < n; i++) {
        double tol = atol + rtol * fabs(ref[i]) + (mag ? 2e-6 * mag[i] : 0);
        double r = fabs(at(got, i) - ref[i]) / tol;
        if (!(r <= worst)) worst = r, worst_i = i;
    }
    CHECK_MSG(worst <= 1.0, "%s: element %lld is %.9g, reference %.9g (err/tol %.3g)", what,
              (long long)worst_i, worst_i >= 0 ? at(got, worst_i) : 0.0,
              worst_i >= 0 ? ref[worst_i] : 0.0, worst);
}

/* A copy of t with elements rounded to BF16 or F16 (for weight dtypes), same shape. */
static void to_half(const ad_tensor *t, ad_dtype dtype, ad_tensor *out, const char *name) {
    int64_t n = ad_tensor_numel(t);
    uint16_t *h = take((size_t)n * 2);
    for (int64_t i = 0; i < n; i++)
        h[i] = dtype == AD_BF16 ? ad_f32_to_bf16((float)at(t, i)) : ad_f32_to_f16((float)at(t, i));
    CHECK_OK(ad_tensor_init(out, h, dtype, AD_DEVICE_CPU, t->ndim, t->shape, name));
}

/* ---- linear algebra ------------------------------------------------------------------------ */

static void test_matmul(void) {
    for (int iter = 0; iter < 24; iter++) {
        const int64_t M = rnd(1, 40), N = rnd(1, 300), K = rnd(1, 70);
        const bool ta = iter & 1, tb = (iter >> 1) & 1;
        const ad_dtype bdt = iter % 3 == 0 ? AD_F32 : (iter % 3 == 1 ? AD_BF16 : AD_F16);
        const float alpha = (float)rnd(1, 4) / 2, beta = iter % 4 == 3 ? 0.0f : 0.5f;
        ad_tensor a, b, bw, y;
        /* a: stored so that op(a) is [M, K]; every 4th case as a transposed view instead. */
        if (iter % 4 == 2) {
            ad_tensor s;
            tensor(&s, 2, (int64_t[]){ta ? M : K, ta ? K : M}, "a_storage");
            CHECK_OK(ad_tensor_transpose(&s, 0, 1, &a));
        } else {
            strided(&a, 2, (int64_t[]){ta ? K : M, ta ? M : K}, rnd(0, 3), "a");
        }
        tensor(&b, 2, (int64_t[]){tb ? N : K, tb ? K : N}, "b");
        if (bdt != AD_F32)
            to_half(&b, bdt, &bw, "b_half");
        else
            bw = b;
        strided(&y, 2, (int64_t[]){M, N}, rnd(0, 2), "y");
        double *ref = take(sizeof(double) * (size_t)(M * N)),
               *mag = take(sizeof(double) * (size_t)(M * N));
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) {
                double s = 0, m = 0;
                for (int64_t k = 0; k < K; k++) {
                    double av = at(&a, ta ? k * M + i : i * K + k);
                    double bv = at(&bw, tb ? j * K + k : k * N + j);
                    s += av * bv, m += fabs(av * bv);
                }
                double y0 = at(&y, i * N + j);
                ref[i * N + j] = alpha * s + beta * y0;
                mag[i * N + j] = fabs(alpha) * m + fabs(beta * y0);
            }
        CHECK_OK(be->matmul(be, &y, &a, ta, &bw, tb, alpha, beta));
        char what[96];
        snprintf(what, sizeof what, "matmul %lldx%lldx%lld ta=%d tb=%d %s", (long long)M,
                 (long long)N, (long long)K, ta, tb, ad_dtype_name(bdt));
        check_close(what, &y, ref, mag, 1e-5, 1e-6);
        free_all();
    }
    /* 3-D a with flattened leading dims, and a large-N BF16 weight spanning several tiles. */
    const int64_t B = 2, T = 3, K = 9, N = 70000;
    ad_tensor a, w, wb, y;
    tensor(&a, 3, (int64_t[]){B, T, K}, "a3");
    tensor(&w, 2, (int64_t[]){N, K}, "w");
    to_half(&w, AD_BF16, &wb, "w_bf16");
    tensor(&y, 3, (int64_t[]){B, T, N}, "y3");
    CHECK_OK(be->matmul(be, &y, &a, false, &wb, true, 1.0f, 0.0f));
    double *ref = take(sizeof(double) * (size_t)(B * T * N)),
           *mag = take(sizeof(double) * (size_t)(B * T * N));
    for (int64_t i = 0; i < B * T; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0, m = 0;
            for (int64_t k = 0; k < K; k++)
                s += at(&a, i * K + k) * at(&wb, j * K + k),
                    m += fabs(at(&a, i * K + k) * at(&wb, j * K + k));
            ref[i * N + j] = s, mag[i * N + j] = m;
        }
    check_close("matmul 3-D x bf16 tiles", &y, ref, mag, 1e-5, 1e-6);
    free_all();
}

static void test_linear(void) {
    for (int iter = 0; iter < 12; iter++) {
        const int64_t B = rnd(1, 3), T = rnd(1, 17), K = rnd(1, 80), N = rnd(1, 90);
        const ad_dtype wdt = iter % 3 == 0 ? AD_F32 : (iter % 3 == 1 ? AD_BF16 : AD_F16);
        ad_tensor x, w, ww, bias, bw, y;
        strided(&x, 3, (int64_t[]){B, T, K}, iter % 2 ? 4 : 0, "x");
        tensor(&w, 2, (int64_t[]){N, K}, "w");
        tensor(&bias, 1, (int64_t[]){N}, "bias");
        if (wdt != AD_F32) {
            to_half(&w, wdt, &ww, "w_half");
            to_half(&bias, wdt, &bw, "bias_half");
        } else {
            ww = w, bw = bias;
        }
        const bool with_bias = iter % 4 != 1;
        tensor(&y, 3, (int64_t[]){B, T, N}, "y");
        const int64_t M = B * T;
        double *ref = take(sizeof(double) * (size_t)(M * N)),
               *mag = take(sizeof(double) * (size_t)(M * N));
        for (int64_t i = 0; i < M; i++)
            for (int64_t j = 0; j < N; j++) {
                double s = with_bias ? at(&bw, j) : 0, m = fabs(s);
                for (int64_t k = 0; k < K; k++)
                    s += at(&x, i * K + k) * at(&ww, j * K + k),
                        m += fabs(at(&x, i * K + k) * at(&ww, j * K + k));
                ref[i * N + j] = s, mag[i * N + j] = m;
            }
        CHECK_OK(be->linear(be, &y, &x, &ww, with_bias ? &bw : NULL));
        check_close("linear", &y, ref, mag, 1e-5, 1e-6);
        /* the same with a residual added */
        ad_tensor r, yr;
        tensor(&r, 3, (int64_t[]){B, T, N}, "residual");
        tensor(&yr, 3, (int64_t[]){B, T, N}, "y_residual");
        for (int64_t i = 0; i < M * N; i++)
            ref[i] += at(&r, i), mag[i] += fabs(at(&r, i));
        CHECK_OK(be->linear_residual(be, &yr, &x, &ww, with_bias ? &bw : NULL, &r));
        check_close("linear_residual", &yr, ref, mag, 1e-5, 1e-6);
        free_all();
    }
}

static void test_conv1d(void) {
    for (int iter = 0; iter < 12; iter++) {
        const int64_t B = rnd(1, 3), C_in = rnd(1, 12), C_out = rnd(1, 10), K = rnd(1, 4);
        const int stride = (int)rnd(1, 3), pad = (int)rnd(0, 2);
        const int64_t L = rnd(K > 2 * pad ? K - 2 * pad : 1, 40);
        const int64_t L_out = (L + 2 * pad - K) / stride + 1;
        ad_tensor x, w, ww, bias, y;
        tensor(&x, 3, (int64_t[]){B, L, C_in}, "x");
        tensor(&w, 3, (int64_t[]){C_out, C_in, K}, "w");
        tensor(&bias, 1, (int64_t[]){C_out}, "bias");
        if (iter % 2)
            to_half(&w, AD_BF16, &ww, "w_bf16");
        else
            ww = w;
        strided(&y, 3, (int64_t[]){B, L_out, C_out}, iter % 3 ? 0 : 2, "y");
        double *ref = take(sizeof(double) * (size_t)(B * L_out * C_out));
        double *mag = take(sizeof(double) * (size_t)(B * L_out * C_out));
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = 0; t < L_out; t++)
                for (int64_t o = 0; o < C_out; o++) {
                    double s = at(&bias, o), m = fabs(s);
                    for (int64_t c = 0; c < C_in; c++)
                        for (int64_t k = 0; k < K; k++) {
                            int64_t pos = t * stride - pad + k;
                            if (pos < 0 || pos >= L) continue;
                            double p =
                                at(&x, (b * L + pos) * C_in + c) * at(&ww, (o * C_in + c) * K + k);
                            s += p, m += fabs(p);
                        }
                    ref[(b * L_out + t) * C_out + o] = s, mag[(b * L_out + t) * C_out + o] = m;
                }
        CHECK_OK(be->conv1d(be, &y, &x, &ww, &bias, stride, pad));
        char what[96];
        snprintf(what, sizeof what, "conv1d L=%lld K=%lld s=%d p=%d", (long long)L, (long long)K,
                 stride, pad);
        check_close(what, &y, ref, mag, 1e-5, 1e-6);
        free_all();
    }
}

/* ---- elementwise and normalisation ----------------------------------------------------------- */

static void random_rows_shape(int64_t *shape, int *ndim) {
    *ndim = (int)rnd(1, 4);
    for (int d = 0; d < *ndim; d++)
        shape[d] = rnd(1, d == *ndim - 1 ? 300 : 5);
}

static void test_elementwise(void) {
    for (int iter = 0; iter < 10; iter++) {
        int64_t shape[AD_MAX_DIMS];
        int nd;
        random_rows_shape(shape, &nd);
        ad_tensor x, u, y, w, bias;
        strided(&x, nd, shape, iter % 2 ? 3 : 0, "x");
        tensor(&u, nd, shape, "up");
        tensor(&y, nd, shape, "y");
        const int64_t n = ad_tensor_numel(&x), C = shape[nd - 1], rows = n / C;
        tensor(&w, 1, &C, "weight");
        tensor(&bias, 1, &C, "bias");
        double *ref = take(sizeof(double) * (size_t)n);

        for (int64_t i = 0; i < n; i++) {
            double v = at(&x, i);
            ref[i] = 0.5 * v * (1 + erf(v / sqrt(2.0)));
        }
        CHECK_OK(be->gelu(be, &y, &x));
        check_close("gelu", &y, ref, NULL, 2e-6, 1e-7);

        for (int64_t i = 0; i < n; i++) {
            double g = at(&x, i);
            ref[i] = g / (1 + exp(-g)) * at(&u, i);
        }
        CHECK_OK(be->silu_mul(be, &y, &x, &u));
        check_close("silu_mul", &y, ref, NULL, 2e-6, 1e-7);

        for (int64_t r = 0; r < rows; r++) {
            double mean = 0, var = 0, ms = 0;
            for (int64_t j = 0; j < C; j++)
                mean += at(&x, r * C + j) / C, ms += at(&x, r * C + j) * at(&x, r * C + j) / C;
            for (int64_t j = 0; j < C; j++)
                var += (at(&x, r * C + j) - mean) * (at(&x, r * C + j) - mean) / C;
            for (int64_t j = 0; j < C; j++)
                ref[r * C + j] =
                    (at(&x, r * C + j) - mean) / sqrt(var + 1e-5) * at(&w, j) + at(&bias, j);
        }
        CHECK_OK(be->layernorm(be, &y, &x, &w, &bias, 1e-5f));
        check_close("layernorm", &y, ref, NULL, 4e-6, 2e-6);

        for (int64_t r = 0; r < rows; r++) {
            double ms = 0;
            for (int64_t j = 0; j < C; j++)
                ms += at(&x, r * C + j) * at(&x, r * C + j) / C;
            for (int64_t j = 0; j < C; j++)
                ref[r * C + j] = at(&x, r * C + j) / sqrt(ms + 1e-6) * at(&w, j);
        }
        CHECK_OK(be->rmsnorm(be, &y, &x, &w, 1e-6f));
        check_close("rmsnorm", &y, ref, NULL, 4e-6, 1e-7);

        /* Softmax of large logits (x10) exercises the max subtraction. */
        ad_tensor big;
        tensor(&big, nd, shape, "logits");
        for (int64_t i = 0; i < n; i++)
            ((float *)big.data)[i] = 10 * (float)at(&x, i);
        for (int64_t r = 0; r < rows; r++) {
            double mx = -INFINITY, s = 0;
            for (int64_t j = 0; j < C; j++)
                mx = fmax(mx, at(&big, r * C + j));
            for (int64_t j = 0; j < C; j++)
                s += exp(at(&big, r * C + j) - mx);
            for (int64_t j = 0; j < C; j++)
                ref[r * C + j] = exp(at(&big, r * C + j) - mx) / s;
        }
        CHECK_OK(be->softmax(be, &big, &big)); /* in place */
        check_close("softmax in place", &big, ref, NULL, 2e-6, 1e-9);

        /* add: b with fewer leading dims, broadcast */
        const int bnd = (int)rnd(1, nd);
        ad_tensor b;
        tensor(&b, bnd, shape + (nd - bnd), "b");
        const int64_t nb = ad_tensor_numel(&b);
        for (int64_t i = 0; i < n; i++)
            ref[i] = at(&x, i) + at(&b, i % nb);
        CHECK_OK(be->add(be, &y, &x, &b));
        check_close("add broadcast", &y, ref, NULL, 1e-7, 0);
        /* in place: y = y + b */
        for (int64_t i = 0; i < n; i++)
            ref[i] += at(&b, i % nb);
        CHECK_OK(be->add(be, &y, &y, &b));
        check_close("add in place", &y, ref, NULL, 2e-7, 1e-7);
        free_all();
    }
}

/* Row ops must not depend on the thread count (statistics per row, in double). */
static void test_thread_independence(void) {
    ad_backend *one;
    CHECK_OK(ad_backend_cpu_create(&one, 1));
    ad_tensor x, w, y1, y2;
    tensor(&x, 2, (int64_t[]){300, 257}, "x");
    tensor(&w, 1, (int64_t[]){257}, "w");
    tensor(&y1, 2, (int64_t[]){300, 257}, "y1");
    tensor(&y2, 2, (int64_t[]){300, 257}, "y2");
    CHECK_OK(one->rmsnorm(one, &y1, &x, &w, 1e-6f));
    CHECK_OK(be->rmsnorm(be, &y2, &x, &w, 1e-6f));
    CHECK(memcmp(y1.data, y2.data, sizeof(float) * 300 * 257) == 0);
    CHECK_OK(one->softmax(one, &y1, &x));
    CHECK_OK(be->softmax(be, &y2, &x));
    CHECK(memcmp(y1.data, y2.data, sizeof(float) * 300 * 257) == 0);
    ad_backend_destroy(one);
    free_all();
}

/* ---- sequence ops ------------------------------------------------------------------------------
 */

static void test_rope(void) {
    for (int iter = 0; iter < 8; iter++) {
        const int64_t B = rnd(1, 3), T = rnd(1, 12);
        const int H = (int)rnd(1, 4), D = 2 * (int)rnd(1, 40);
        const float theta = iter % 2 ? 10000.0f : 1000000.0f;
        ad_tensor x, pos;
        strided(&x, 3, (int64_t[]){B, T, (int64_t)H * D}, iter % 2 ? 0 : 5, "x");
        int32_t *p = take(sizeof(int32_t) * (size_t)(B * T));
        for (int64_t i = 0; i < B * T; i++)
            p[i] = (int32_t)rnd(0, 5000);
        CHECK_OK(ad_tensor_init(&pos, p, AD_I32, AD_DEVICE_CPU, 2, (int64_t[]){B, T}, "positions"));
        const int64_t n = B * T * H * D;
        double *ref = take(sizeof(double) * (size_t)n);
        for (int64_t r = 0; r < B * T; r++)
            for (int h = 0; h < H; h++)
                for (int j = 0; j < D / 2; j++) {
                    /* The angle is rounded to float as transformers computes it (position *
                     * inv_freq in float32); the rest in double. */
                    float inv = 1.0f / (float)pow(theta, (double)((float)(2 * j) / (float)D));
                    double a = (double)((float)p[r] * inv);
                    int64_t i1 = (r * H + h) * D + j, i2 = i1 + D / 2;
                    double x1 = at(&x, i1), x2 = at(&x, i2);
                    ref[i1] = x1 * cos(a) - x2 * sin(a);
                    ref[i2] = x2 * cos(a) + x1 * sin(a);
                }
        /* into a y of its own (x must stay as it was), then in place */
        ad_tensor y;
        strided(&y, 3, (int64_t[]){B, T, (int64_t)H * D}, iter % 3 ? 0 : 3, "y");
        float *x_before = take(sizeof(float) * (size_t)n);
        for (int64_t i = 0; i < n; i++)
            x_before[i] = (float)at(&x, i);
        CHECK_OK(be->rope(be, &y, &x, &pos, H, D, theta));
        check_close("rope into y", &y, ref, NULL, 2e-6, 4e-7);
        for (int64_t i = 0; i < n; i++)
            if ((float)at(&x, i) != x_before[i]) {
                CHECK_MSG(false, "rope into y changed x at %lld", (long long)i);
                break;
            }
        CHECK_OK(be->rope(be, &x, &x, &pos, H, D, theta));
        check_close("rope in place", &x, ref, NULL, 2e-6, 4e-7);
        free_all();
    }
}

/* Naive attention in double for one configuration; k and v are slices of a KV cache. */
static void attention_case(int64_t B, int64_t Tq, int64_t Tk, int H, int Hkv, int D, bool causal,
                           int q_offset, bool with_key_len) {
    const int64_t max_T = Tk + rnd(0, 5), kvd = (int64_t)Hkv * D, qd = (int64_t)H * D;
    ad_tensor q, kc, vc, k, v, out;
    strided(&q, 3, (int64_t[]){B, Tq, qd}, rnd(0, 1) * 2 * kvd, "q"); /* like a fused qkv row */
    tensor(&kc, 3, (int64_t[]){B, max_T, kvd}, "k_cache");
    tensor(&vc, 3, (int64_t[]){B, max_T, kvd}, "v_cache");
    CHECK_OK(ad_tensor_slice(&kc, 1, 0, Tk, &k));
    CHECK_OK(ad_tensor_slice(&vc, 1, 0, Tk, &v));
    tensor(&out, 3, (int64_t[]){B, Tq, qd}, "out");
    int *key_len = take(sizeof(int) * (size_t)B);
    for (int64_t b = 0; b < B; b++)
        key_len[b] = (int)rnd(1, Tk);
    ad_attention_params p = {.n_heads = H,
                             .n_kv_heads = Hkv,
                             .head_dim = D,
                             .causal = causal,
                             .q_offset = q_offset,
                             .scale = 1.0f / sqrtf((float)D),
                             .key_len = with_key_len ? key_len : NULL};
    double *ref = take(sizeof(double) * (size_t)(B * Tq * qd)),
           *mag = take(sizeof(double) * (size_t)(B * Tq * qd));
    double *w = take(sizeof(double) * (size_t)Tk);
    for (int64_t b = 0; b < B; b++)
        for (int h = 0; h < H; h++) {
            const int kh = h / (H / Hkv);
            for (int64_t i = 0; i < Tq; i++) {
                double mx = -INFINITY, sum = 0;
                for (int64_t j = 0; j < Tk; j++) {
                    bool visible =
                        (!causal || j <= q_offset + i) && (!with_key_len || j < key_len[b]);
                    double s = -INFINITY;
                    if (visible) {
                        s = 0;
                        for (int d = 0; d < D; d++)
                            s += at(&q, (b * Tq + i) * qd + h * D + d) *
                                 at(&k, (b * Tk + j) * kvd + kh * D + d);
                        s *= p.scale;
                    }
                    w[j] = s, mx = fmax(mx, s);
                }
                for (int64_t j = 0; j < Tk; j++)
                    sum += w[j] = w[j] == -INFINITY ? 0 : exp(w[j] - mx);
                for (int d = 0; d < D; d++) {
                    double o = 0, m = 0;
                    for (int64_t j = 0; j < Tk; j++) {
                        double vv = at(&v, (b * Tk + j) * kvd + kh * D + d);
                        o += w[j] / sum * vv, m += w[j] / sum * fabs(vv);
                    }
                    int64_t idx = (b * Tq + i) * qd + h * D + d;
                    ref[idx] = sum > 0 ? o : 0, mag[idx] = 4 * m;
                }
            }
        }
    CHECK_OK(be->attention(be, &out, &q, &k, &v, &p));
    char what[128];
    snprintf(what, sizeof what,
             "attention B=%lld Tq=%lld Tk=%lld H=%d/%d D=%d causal=%d off=%d kl=%d", (long long)B,
             (long long)Tq, (long long)Tk, H, Hkv, D, causal, q_offset, with_key_len);
    check_close(what, &out, ref, mag, 1e-5, 1e-6);
    free_all();
}

static void test_attention(void) {
    for (int iter = 0; iter < 10; iter++) {
        const int Hkv = (int)rnd(1, 3), H = Hkv * (int)rnd(1, 3), D = (int)rnd(1, 20);
        const bool causal = iter % 2 == 0;
        const int64_t Tk = rnd(1, 40);
        /* causal: either self-attention (Tq = Tk) or cached decoding (queries at the end) */
        const int64_t Tq = causal && iter % 4 == 2 ? rnd(1, Tk) : (causal ? Tk : rnd(1, 40));
        const int q_offset = causal ? (int)(Tk - Tq) : 0;
        attention_case(rnd(1, 3), Tq, Tk, H, Hkv, D, causal, q_offset, iter % 3 != 0);
    }
    /* Long keys split the queries into several score blocks, each with its own causal limit. */
    attention_case(1, 300, 5100, 2, 1, 4, true, 4800, false);
    /* key_len with causal: padded batch of a decoder */
    attention_case(2, 9, 9, 4, 2, 8, true, 0, true);
}

static void test_pool_embedding_scatter_transpose(void) {
    for (int iter = 0; iter < 6; iter++) {
        const int64_t B = rnd(1, 3), C = rnd(1, 20);
        const int kernel = (int)rnd(1, 4), stride = (int)rnd(1, 3);
        const int64_t L = rnd(kernel, 30), L_out = (L - kernel) / stride + 1;
        ad_tensor x, y;
        strided(&x, 3, (int64_t[]){B, L, C}, iter % 2 ? 2 : 0, "x");
        tensor(&y, 3, (int64_t[]){B, L_out, C}, "y");
        double *ref = take(sizeof(double) * (size_t)(B * L_out * C));
        for (int64_t b = 0; b < B; b++)
            for (int64_t t = 0; t < L_out; t++)
                for (int64_t c = 0; c < C; c++) {
                    double s = 0;
                    for (int k = 0; k < kernel; k++)
                        s += at(&x, (b * L + t * stride + k) * C + c);
                    ref[(b * L_out + t) * C + c] = s / kernel;
                }
        CHECK_OK(be->avg_pool1d(be, &y, &x, kernel, stride));
        check_close("avg_pool1d", &y, ref, NULL, 1e-6, 1e-7);

        /* embedding from an F32 or BF16 table */
        const int64_t V = rnd(1, 50), N = rnd(1, 20);
        ad_tensor table, tb, ids, e;
        tensor(&table, 2, (int64_t[]){V, C}, "table");
        if (iter % 2)
            to_half(&table, AD_BF16, &tb, "table_bf16");
        else
            tb = table;
        int32_t *id = take(sizeof(int32_t) * (size_t)N);
        for (int64_t i = 0; i < N; i++)
            id[i] = (int32_t)rnd(0, V - 1);
        CHECK_OK(ad_tensor_init(&ids, id, AD_I32, AD_DEVICE_CPU, 1, &N, "ids"));
        tensor(&e, 2, (int64_t[]){N, C}, "emb");
        double *eref = take(sizeof(double) * (size_t)(N * C));
        for (int64_t i = 0; i < N; i++)
            for (int64_t c = 0; c < C; c++)
                eref[i * C + c] = at(&tb, id[i] * C + c);
        CHECK_OK(be->embedding(be, &e, &tb, &ids));
        check_close("embedding", &e, eref, NULL, 0, 1e-30);

        /* scatter distinct rows of e into a [R, C] buffer */
        const int64_t R = N + rnd(0, 10);
        ad_tensor dst, rows;
        tensor(&dst, 2, (int64_t[]){R, C}, "dst");
        uint32_t *perm = take(sizeof(uint32_t) * (size_t)R);
        for (int64_t i = 0; i < R; i++)
            perm[i] = (uint32_t)i;
        ad_rng_shuffle_u32(&rng, perm, (uint32_t)R);
        int32_t *ri = take(sizeof(int32_t) * (size_t)N);
        double *sref = take(sizeof(double) * (size_t)(R * C));
        for (int64_t i = 0; i < R * C; i++)
            sref[i] = at(&dst, i);
        for (int64_t i = 0; i < N; i++) {
            ri[i] = (int32_t)perm[i];
            for (int64_t c = 0; c < C; c++)
                sref[ri[i] * C + c] = at(&e, i * C + c);
        }
        CHECK_OK(ad_tensor_init(&rows, ri, AD_I32, AD_DEVICE_CPU, 1, &N, "rows"));
        CHECK_OK(be->scatter_rows(be, &dst, &e, &rows));
        check_close("scatter_rows", &dst, sref, NULL, 0, 1e-30);

        /* transpose of a strided 3-D view and of a 2-D matrix */
        const int64_t M = rnd(1, 70), Nn = rnd(1, 70);
        ad_tensor tx, ty;
        strided(&tx, 3, (int64_t[]){B, M, Nn}, iter % 2 ? 3 : 0, "tx");
        tensor(&ty, 3, (int64_t[]){B, Nn, M}, "ty");
        double *tref = take(sizeof(double) * (size_t)(B * M * Nn));
        for (int64_t b = 0; b < B; b++)
            for (int64_t i = 0; i < M; i++)
                for (int64_t j = 0; j < Nn; j++)
                    tref[(b * Nn + j) * M + i] = at(&tx, (b * M + i) * Nn + j);
        CHECK_OK(be->transpose(be, &ty, &tx));
        check_close("transpose", &ty, tref, NULL, 0, 1e-30);
        ad_tensor tx2, ty2;
        CHECK_OK(ad_tensor_slice(&tx, 0, 0, 1, &tx2));
        CHECK_OK(ad_tensor_reshape(&ty, 3, (int64_t[]){B, Nn, M}, &ty2));
        tx2.ndim = 2, tx2.shape[0] = M, tx2.shape[1] = Nn, tx2.stride[0] = tx.stride[1],
        tx2.stride[1] = 1;
        ty2.ndim = 2, ty2.shape[0] = Nn, ty2.shape[1] = M, ty2.stride[0] = M, ty2.stride[1] = 1;
        CHECK_OK(be->transpose(be, &ty2, &tx2));
        check_close("transpose 2-D", &ty2, tref, NULL, 0, 1e-30);
        free_all();
    }
}

/* ---- memory ops --------------------------------------------------------------------------------
 */

static void test_memory(void) {
    void *p = NULL;
    CHECK_OK(be->alloc(be, 1000, &p));
    CHECK(p != NULL && ((uintptr_t)p % 64) == 0);
    bool zero = true;
    for (int i = 0; i < 1000; i++)
        zero = zero && ((unsigned char *)p)[i] == 0;
    CHECK(zero);
    be->release(be, p);

    /* upload BF16 -> F32, I64 -> I32; download a strided view; copy strided both sides */
    const int64_t R = rnd(2, 30), C = rnd(2, 30);
    ad_tensor host, hb, dev, back;
    tensor(&host, 2, (int64_t[]){R, C}, "host");
    to_half(&host, AD_BF16, &hb, "host_bf16");
    tensor(&dev, 2, (int64_t[]){R, C}, "dev");
    CHECK_OK(be->upload(be, &dev, &hb));
    double *ref = take(sizeof(double) * (size_t)(R * C));
    for (int64_t i = 0; i < R * C; i++)
        ref[i] = at(&hb, i);
    check_close("upload bf16", &dev, ref, NULL, 0, 1e-30);

    ad_tensor dt, bt;
    CHECK_OK(ad_tensor_transpose(&dev, 0, 1, &dt));
    tensor(&back, 2, (int64_t[]){C, R}, "back");
    CHECK_OK(be->download(be, &back, &dt));
    for (int64_t i = 0; i < C; i++)
        for (int64_t j = 0; j < R; j++)
            ref[i * R + j] = at(&hb, j * C + i);
    check_close("download transposed", &back, ref, NULL, 0, 1e-30);

    ad_tensor wide, dst;
    strided(&wide, 2, (int64_t[]){C, R}, 3, "dst_view");
    dst = wide;
    CHECK_OK(be->copy(be, &dst, &dt)); /* strided source (transposed) into strided rows */
    check_close("copy strided", &dst, ref, NULL, 0, 1e-30);
    CHECK_OK(ad_tensor_transpose(&hb, 0, 1, &bt));
    CHECK_OK(be->copy(be, &dst, &bt)); /* BF16 -> F32 */
    check_close("copy bf16", &dst, ref, NULL, 0, 1e-30);

    CHECK_OK(be->fill(be, &dst, 2.5f));
    for (int64_t i = 0; i < R * C; i++)
        ref[i] = 2.5;
    check_close("fill", &dst, ref, NULL, 0, 1e-30);
    /* the columns next to the view are untouched */
    CHECK(((float *)dst.data)[-1] != 2.5f);

    int64_t ids64[5] = {0, 7, 151646, 3, 1};
    ad_tensor h64, d32;
    int32_t d32v[5];
    CHECK_OK(ad_tensor_init(&h64, ids64, AD_I64, AD_DEVICE_CPU, 1, (int64_t[]){5}, "ids64"));
    CHECK_OK(ad_tensor_init(&d32, d32v, AD_I32, AD_DEVICE_CPU, 1, (int64_t[]){5}, "ids32"));
    CHECK_OK(be->upload(be, &d32, &h64));
    CHECK(d32v[2] == 151646 && d32v[4] == 1);
    ids64[1] = (int64_t)1 << 40;
    CHECK_FAILS_WITH(be->upload(be, &d32, &h64), "does not fit in I32");
    free_all();
}

/* ---- refusals ----------------------------------------------------------------------------------
 */

static void test_errors(void) {
    ad_tensor x, w, y, b16, ids;
    tensor(&x, 2, (int64_t[]){4, 8}, "x");
    tensor(&w, 2, (int64_t[]){5, 7}, "proj.weight");
    tensor(&y, 2, (int64_t[]){4, 5}, "y");
    CHECK_FAILS_WITH(be->linear(be, &y, &x, &w, NULL), "proj.weight");
    {
        ad_tensor x7;
        tensor(&x7, 2, (int64_t[]){4, 7}, "x7");
        CHECK_FAILS_WITH(be->linear_residual(be, &y, &x7, &w, NULL, &x), "same shape");
        CHECK_FAILS_WITH(be->linear_residual(be, &y, &x7, &w, NULL, &y), "overlaps");
    }
    CHECK_FAILS_WITH(be->matmul(be, &y, &x, false, &w, true, 1, 0), "cannot multiply");
    to_half(&x, AD_BF16, &b16, "hidden_bf16");
    CHECK_FAILS_WITH(be->gelu(be, &x, &b16), "hidden_bf16");
    CHECK_FAILS_WITH(be->gelu(be, &x, &b16), "expected dtype F32");
    CHECK_FAILS_WITH(be->gelu(be, &y, &x), "same shape");
    CHECK_FAILS_WITH(be->gelu(be, &y, NULL), "NULL");
    CHECK_FAILS_WITH(be->linear(be, &x, &x, &x, NULL), "overlaps");

    ad_tensor table, emb;
    tensor(&table, 2, (int64_t[]){10, 8}, "embed_tokens");
    tensor(&emb, 2, (int64_t[]){3, 8}, "emb");
    int32_t bad[3] = {1, 10, 2};
    CHECK_OK(ad_tensor_init(&ids, bad, AD_I32, AD_DEVICE_CPU, 1, (int64_t[]){3}, "input_ids"));
    CHECK_FAILS_WITH(be->embedding(be, &emb, &table, &ids), "= 10 is outside [0, 10)");
    CHECK_FAILS_WITH(be->scatter_rows(be, &table, &emb, &ids), "= 10 is outside the 10 rows");
    bad[1] = -1;
    CHECK_FAILS_WITH(be->embedding(be, &emb, &table, &ids), "input_ids");
    /* scatter_rows skips a negative row: rows 1 and 2 of the table take emb's rows 0 and 2 */
    float *tv = table.data, *ev = emb.data;
    for (int i = 0; i < 10 * 8; i++)
        tv[i] = 7.0f;
    for (int i = 0; i < 3 * 8; i++)
        ev[i] = (float)i;
    CHECK_OK(be->scatter_rows(be, &table, &emb, &ids));
    int wrong = 0;
    for (int r = 0; r < 10; r++)
        for (int c = 0; c < 8; c++)
            wrong += tv[r * 8 + c] != (r == 1 ? (float)c : r == 2 ? (float)(16 + c) : 7.0f);
    CHECK_MSG(wrong == 0, "scatter_rows with a negative row: %d table values wrong", wrong);

    ad_tensor q, pos;
    tensor(&q, 3, (int64_t[]){1, 2, 12}, "q");
    int32_t pv[2] = {0, 1};
    CHECK_OK(ad_tensor_init(&pos, pv, AD_I32, AD_DEVICE_CPU, 2, (int64_t[]){1, 2}, "positions"));
    CHECK_FAILS_WITH(be->rope(be, &q, &q, &pos, 4, 3, 10000.0f), "even head_dim");
    CHECK_FAILS_WITH(be->rope(be, &q, &q, &pos, 2, 4, 10000.0f), "n_heads * head_dim");
    CHECK_FAILS_WITH(be->rope(be, &q, &q, &ids, 3, 4, 10000.0f), "input_ids");
    {
        /* y overlapping x by one row, and y of another shape */
        float buf[36] = {0};
        ad_tensor xa, ya, yb;
        CHECK_OK(ad_tensor_init(&xa, buf, AD_F32, AD_DEVICE_CPU, 3, (int64_t[]){1, 2, 12}, "xa"));
        CHECK_OK(
            ad_tensor_init(&ya, buf + 12, AD_F32, AD_DEVICE_CPU, 3, (int64_t[]){1, 2, 12}, "ya"));
        CHECK_OK(
            ad_tensor_init(&yb, buf + 24, AD_F32, AD_DEVICE_CPU, 3, (int64_t[]){1, 1, 12}, "yb"));
        CHECK_FAILS_WITH(be->rope(be, &ya, &xa, &pos, 3, 4, 10000.0f), "overlaps input xa");
        CHECK_FAILS_WITH(be->rope(be, &yb, &xa, &pos, 3, 4, 10000.0f), "yb");
    }

    ad_tensor k, out;
    tensor(&k, 3, (int64_t[]){1, 2, 6}, "k");
    tensor(&out, 3, (int64_t[]){1, 2, 12}, "attn_out");
    int key_len[1] = {3};
    ad_attention_params ap = {
        .n_heads = 2, .n_kv_heads = 1, .head_dim = 6, .scale = 0.4f, .key_len = key_len};
    CHECK_FAILS_WITH(be->attention(be, &out, &q, &k, &k, &ap), "key_len[0] = 3");
    ap.n_kv_heads = 3, ap.key_len = NULL;
    CHECK_FAILS_WITH(be->attention(be, &out, &q, &k, &k, &ap), "multiple of n_kv_heads");
    ap.n_kv_heads = 1;
    CHECK_FAILS_WITH(be->attention(be, &q, &q, &k, &k, &ap), "overlaps");

    ad_tensor cx, cw, cy;
    tensor(&cx, 3, (int64_t[]){1, 2, 3}, "mel");
    tensor(&cw, 3, (int64_t[]){4, 3, 5}, "conv1.weight");
    tensor(&cy, 3, (int64_t[]){1, 1, 4}, "conv_out");
    CHECK_FAILS_WITH(be->conv1d(be, &cy, &cx, &cw, NULL, 1, 1), "shorter than kernel 5");
    CHECK_FAILS_WITH(be->conv1d(be, &cy, &cx, &cw, NULL, 1, 2), "expected [1, 2, 4]");

    ad_tensor a3, bb;
    tensor(&a3, 3, (int64_t[]){2, 3, 4}, "hidden");
    tensor(&bb, 2, (int64_t[]){2, 4}, "positions_embed");
    CHECK_FAILS_WITH(be->add(be, &a3, &a3, &bb), "trailing dims");
    ad_tensor t34;
    tensor(&t34, 3, (int64_t[]){2, 3, 4}, "t");
    CHECK_FAILS_WITH(be->avg_pool1d(be, &t34, &a3, 4, 1), "shorter than kernel 4");
    CHECK_FAILS_WITH(be->transpose(be, &t34, &a3), "last two dims swapped");
    CHECK_FAILS_WITH(be->layernorm(be, &a3, &a3, &bb, &bb, 1e-5f), "expected a vector [4]");
    CHECK_FAILS_WITH(be->fill(be, &b16, 0.0f), "expected dtype F32");
    free_all();
}

/* ---- micro-benchmark (--bench; not run by ctest) ------------------------------------------ */

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* The plain loop a BLAS call replaces: dot products over contiguous rows, float accumulation. */
static void naive_linear(float *y, const float *x, const float *w, int64_t M, int64_t N,
                         int64_t K) {
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            float s = 0;
            for (int64_t k = 0; k < K; k++)
                s += x[i * K + k] * w[j * K + k];
            y[i * N + j] = s;
        }
}

static double best_linear(ad_backend *b, ad_tensor *y, ad_tensor *x, ad_tensor *w, int reps) {
    double best = 1e30;
    for (int r = 0; r < reps; r++) {
        double t0 = now_s();
        if (b->linear(b, y, x, w, NULL) < 0) fprintf(stderr, "%s\n", ad_error());
        best = fmin(best, now_s() - t0);
    }
    return best;
}

static int bench(void) {
    struct {
        const char *what;
        int64_t M, N, K;
        bool naive;
    } cases[] = {
        {"encoder fc1 (1500 frames)", 1500, 5120, 1280, false},
        {"encoder q_proj (256 rows)", 256, 1280, 1280, true},
        {"decoder q_proj (64 rows)", 64, 4096, 4096, false},
        {"decoder mlp up (decode, 1 row)", 1, 11008, 4096, true},
    };
    ad_backend *b1, *b2;
    if (ad_backend_cpu_create(&b1, 1) < 0 || ad_backend_cpu_create(&b2, 2) < 0) return 1;
    printf("%-32s %6s %6s %6s  %-9s %9s %9s %9s %9s\n", "linear y = x w^T", "M", "N", "K", "weight",
           "naive", "1 thread", "2 threads", "GFLOP/s");
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const int64_t M = cases[c].M, N = cases[c].N, K = cases[c].K;
        ad_tensor x, w, wb, y;
        tensor(&x, 2, (int64_t[]){M, K}, "x");
        tensor(&w, 2, (int64_t[]){N, K}, "w");
        to_half(&w, AD_BF16, &wb, "w_bf16");
        tensor(&y, 2, (int64_t[]){M, N}, "y");
        const double flop = 2.0 * (double)M * (double)N * (double)K;
        double tn = NAN;
        if (cases[c].naive) {
            double t0 = now_s();
            naive_linear(y.data, x.data, w.data, M, N, K);
            tn = now_s() - t0;
        }
        for (int wi = 0; wi < 2; wi++) {
            ad_tensor *wt = wi ? &wb : &w;
            best_linear(b2, &y, &x, wt, 1); /* warm-up: threads, scratch */
            double t1 = best_linear(b1, &y, &x, wt, 3);
            double t2 = best_linear(b2, &y, &x, wt, 3);
            char naive[32] = "-";
            if (!wi && cases[c].naive) snprintf(naive, sizeof naive, "%.1fms", 1e3 * tn);
            printf("%-32s %6lld %6lld %6lld  %-9s %9s %8.1fms %8.1fms %9.1f\n", cases[c].what,
                   (long long)M, (long long)N, (long long)K, wi ? "bf16" : "f32", naive, 1e3 * t1,
                   1e3 * t2, flop / t2 * 1e-9);
        }
        free_all();
    }
    /* Whisper-sized conv2 and one encoder layer's attention (1500 frames, 20 heads of 64). */
    {
        ad_tensor cx, cw, cy;
        tensor(&cx, 3, (int64_t[]){1, 3000, 1280}, "x");
        tensor(&cw, 3, (int64_t[]){1280, 1280, 3}, "conv2.weight");
        tensor(&cy, 3, (int64_t[]){1, 1500, 1280}, "y");
        ad_tensor q, k, v, o;
        tensor(&q, 3, (int64_t[]){1, 1500, 1280}, "q");
        tensor(&k, 3, (int64_t[]){1, 1500, 1280}, "k");
        tensor(&v, 3, (int64_t[]){1, 1500, 1280}, "v");
        tensor(&o, 3, (int64_t[]){1, 1500, 1280}, "o");
        ad_attention_params ap = {.n_heads = 20, .n_kv_heads = 20, .head_dim = 64, .scale = 0.125f};
        ad_backend *bs[2] = {b1, b2};
        double tc[2], ta[2];
        for (int i = 0; i < 2; i++) {
            tc[i] = ta[i] = 1e30;
            for (int r = 0; r < 2; r++) {
                double t0 = now_s();
                bs[i]->conv1d(bs[i], &cy, &cx, &cw, NULL, 2, 1);
                tc[i] = fmin(tc[i], now_s() - t0);
                t0 = now_s();
                bs[i]->attention(bs[i], &o, &q, &k, &v, &ap);
                ta[i] = fmin(ta[i], now_s() - t0);
            }
        }
        printf("conv1d [1, 3000, 1280] k3 s2 -> [1, 1500, 1280]: %.1f ms (1 thread), %.1f ms "
               "(2 threads), %.1f GFLOP/s\n",
               1e3 * tc[0], 1e3 * tc[1], 2.0 * 1500 * 1280 * 3840 / tc[1] * 1e-9);
        printf("attention 1500 x 1500, 20 heads of 64: %.1f ms (1 thread), %.1f ms (2 threads), "
               "%.1f GFLOP/s\n",
               1e3 * ta[0], 1e3 * ta[1], 4.0 * 1500 * 1500 * 64 * 20 / ta[1] * 1e-9);
        free_all();
    }
    /* An OpenMP op right after a BLAS call: does the OpenBLAS pool, still spinning, slow it? */
    ad_tensor x, w, y, h;
    tensor(&x, 2, (int64_t[]){1500, 1280}, "x");
    tensor(&w, 2, (int64_t[]){1280, 1280}, "w");
    tensor(&y, 2, (int64_t[]){1500, 1280}, "y");
    tensor(&h, 1, (int64_t[]){1280}, "norm_w");
    double alone = 1e30, after = 1e30;
    for (int r = 0; r < 5; r++) {
        b2->linear(b2, &y, &x, &w, NULL);
        struct timespec pause = {0, 200000000};
        nanosleep(&pause, NULL); /* let the BLAS threads go idle */
        double t0 = now_s();
        b2->rmsnorm(b2, &y, &x, &h, 1e-6f);
        alone = fmin(alone, now_s() - t0);
        b2->linear(b2, &y, &x, &w, NULL);
        t0 = now_s();
        b2->rmsnorm(b2, &y, &x, &h, 1e-6f);
        after = fmin(after, now_s() - t0);
    }
    printf("rmsnorm [1500, 1280], 2 threads: %.2f ms alone, %.2f ms right after a GEMM\n",
           1e3 * alone, 1e3 * after);
    free_all();
    ad_backend_destroy(b1);
    ad_backend_destroy(b2);
    return 0;
}

int main(int argc, char **argv) {
    const char *env = getenv("AUDISTILL_TEST_SEED");
    uint64_t seed =
        env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL) ^ ((uint64_t)getpid() << 16);
    printf("seed %llu (AUDISTILL_TEST_SEED=%llu repeats this run)\n", (unsigned long long)seed,
           (unsigned long long)seed);
    ad_rng_init(&rng, seed, 0);
    if (argc > 1 && strcmp(argv[1], "--bench") == 0) return bench();
    CHECK_OK(ad_backend_cpu_create(&be, 2));
    CHECK(be->act_dtype == AD_F32 && be->device == AD_DEVICE_CPU);
    RUN(test_matmul);
    RUN(test_linear);
    RUN(test_conv1d);
    RUN(test_elementwise);
    RUN(test_thread_independence);
    RUN(test_rope);
    RUN(test_attention);
    RUN(test_pool_embedding_scatter_transpose);
    RUN(test_memory);
    RUN(test_errors);
    ad_backend_destroy(be);
    if (test_failed) printf("failed with seed %llu\n", (unsigned long long)seed);
    return test_report();
}
