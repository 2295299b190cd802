/* Forward ops of the CUDA backend against the CPU reference on fresh random inputs: memory
 * ops, matmul/linear (all transpositions, mixed and bf16 dtypes, bias epilogue), conv1d,
 * elementwise, norms, rope, attention (GQA, causal with q_offset, key_len, strided views of a
 * fused QKV and a KV cache), pooling, embedding, scatter. Tolerances: cuda_test_util.h.
 * Skips without a GPU. */
#include "attention_cases.h"
#include "cuda_test_util.h"

#define S(...) ((const int64_t[]){__VA_ARGS__})

static void test_copy_fill(void) {
    pair src, dst, dst16;
    pair_make(&src, "src", AD_F32, 3, S(4, 6, 8), 1.0f, 0.0f);
    pair_make(&dst, "dst", AD_F32, 3, S(4, 8, 6), 1.0f, 0.0f);
    pair_make(&dst16, "dst16", AD_BF16, 3, S(4, 8, 6), 1.0f, 0.0f);
    pair tv = src;
    CHECK_OK(ad_tensor_transpose(&src.c, 1, 2, &tv.c));
    CHECK_OK(ad_tensor_transpose(&src.g, 1, 2, &tv.g));
    CHECK_OK(g_cpu->copy(g_cpu, &dst.c, &tv.c));
    CHECK_OK(g_gpu->copy(g_gpu, &dst.g, &tv.g));
    expect_close("copy from a transposed view", &dst, TOL_F32);
    CHECK_OK(g_cpu->copy(g_cpu, &dst16.c, &tv.c));
    CHECK_OK(g_gpu->copy(g_gpu, &dst16.g, &tv.g));
    expect_close("copy f32 view -> bf16", &dst16, TOL_BF16);
    /* a download of the strided view itself goes through the staging copy */
    expect_close("download of a transposed view", &tv, TOL_F32);
    pair col;
    pair_slice(&dst, 2, 1, 3, &col);
    CHECK_OK(g_cpu->fill(g_cpu, &col.c, 2.5f));
    CHECK_OK(g_gpu->fill(g_gpu, &col.g, 2.5f));
    expect_close("fill of a strided slice", &dst, TOL_F32);
    /* zero of a whole (contiguous) tensor is a memset; of a slice, the kernel */
    CHECK_OK(g_cpu->fill(g_cpu, &src.c, 0.0f));
    CHECK_OK(g_gpu->fill(g_gpu, &src.g, 0.0f));
    expect_close("zero fill of a contiguous tensor", &src, 0.0);
    CHECK_OK(g_cpu->fill(g_cpu, &col.c, 0.0f));
    CHECK_OK(g_gpu->fill(g_gpu, &col.g, 0.0f));
    expect_close("zero fill of a strided slice", &dst, 0.0);
    /* Float copies between views with unit-stride rows go through the row kernels: rows that
     * do not merge (a slice of the middle dim), both directions of the bf16 conversion. */
    pair big, mid, c32, c16;
    pair_make(&big, "big", AD_F32, 3, S(4, 9, 1100), 1.0f, 0.0f);
    pair_make(&c32, "c32", AD_F32, 3, S(4, 5, 1000), 1.0f, 0.0f);
    pair_make(&c16, "c16", AD_BF16, 3, S(4, 5, 1000), 1.0f, 0.0f);
    pair_slice(&big, 1, 2, 5, &mid);
    pair midcols;
    pair_slice(&mid, 2, 7, 1000, &midcols);
    CHECK_OK(g_cpu->copy(g_cpu, &c16.c, &midcols.c));
    CHECK_OK(g_gpu->copy(g_gpu, &c16.g, &midcols.g));
    expect_close("copy strided f32 rows -> bf16", &c16, TOL_BF16);
    CHECK_OK(g_cpu->copy(g_cpu, &c32.c, &midcols.c));
    CHECK_OK(g_gpu->copy(g_gpu, &c32.g, &midcols.g));
    expect_close("copy strided f32 rows -> f32", &c32, 0.0);
    CHECK_OK(g_cpu->copy(g_cpu, &midcols.c, &c16.c));
    CHECK_OK(g_gpu->copy(g_gpu, &midcols.g, &c16.g));
    expect_close("copy bf16 -> strided f32 rows (the rest untouched)", &big, TOL_BF16);
    pair_free(&big);
    pair_free(&c32);
    pair_free(&c16);
    pair_free(&src);
    pair_free(&dst);
    pair_free(&dst16);
}

static void one_matmul(ad_dtype adt, ad_dtype bdt, ad_dtype ydt, bool ta, bool tb, double tol) {
    const int64_t M = 33, K = 70, N = 45;
    pair a, b, y;
    pair_make(&a, "a", adt, 2, ta ? S(K, M) : S(M, K), 1.0f, 0.0f);
    pair_make(&b, "b", bdt, 2, tb ? S(N, K) : S(K, N), 1.0f, 0.0f);
    pair_make(&y, "y", ydt, 2, S(M, N), 1.0f, 0.0f);
    CHECK_OK(g_cpu->matmul(g_cpu, &y.c, &a.c, ta, &b.c, tb, 0.7f, 0.3f));
    CHECK_OK(g_gpu->matmul(g_gpu, &y.g, &a.g, ta, &b.g, tb, 0.7f, 0.3f));
    char what[96];
    snprintf(what, sizeof what, "matmul %s%s x %s%s", ad_dtype_name(adt), ta ? "^T" : "",
             ad_dtype_name(bdt), tb ? "^T" : "");
    expect_close(what, &y, tol);
    pair_free(&a);
    pair_free(&b);
    pair_free(&y);
}

/* bf16 GEMMs (ad_cuda_set_bf16_matmul) round f32 operands to bf16 in a conversion pass: a
 * [33, K] operand `a` that is a column slice [off, off + K) of a [33, width] tensor. Contiguous
 * operands convert as one flat row (four elements per load, the last width % 4 alone); rows of
 * a slice four at a time when aligned (width, K multiples of 4), else one at a time. The
 * reference is the CPU's fp32 product of the operands rounded alike, so a misplaced element
 * shows far above the summation-order tolerance. */
static void one_bf16_conversion(int64_t width, int64_t off, int64_t K) {
    const int64_t M = 33, N = 45;
    pair wide, a, b, y, ar, br;
    pair_make(&wide, "a_wide", AD_F32, 2, S(M, width), 1.0f, 0.0f);
    pair_slice(&wide, 1, off, K, &a);
    pair_make(&b, "b", AD_F32, 2, S(K, N), 1.0f, 0.0f);
    pair_make(&y, "y", AD_F32, 2, S(M, N), 1.0f, 0.0f);
    cpu_round_bf16(&a, &ar);
    cpu_round_bf16(&b, &br);
    CHECK_OK(g_cpu->matmul(g_cpu, &y.c, &ar.c, false, &br.c, false, 0.7f, 0.3f));
    CHECK_OK(ad_cuda_set_bf16_matmul(g_gpu, true));
    CHECK_OK(g_gpu->matmul(g_gpu, &y.g, &a.g, false, &b.g, false, 0.7f, 0.3f));
    CHECK_OK(ad_cuda_set_bf16_matmul(g_gpu, false));
    char what[96];
    snprintf(what, sizeof what, "matmul bf16 GEMM, a = cols %lld..%lld of %lld", (long long)off,
             (long long)(off + K), (long long)width);
    expect_close(what, &y, TOL_F32);
    pair_free(&wide);
    pair_free(&b);
    pair_free(&y);
    pair_free(&ar);
    pair_free(&br);
}

static void test_matmul(void) {
    for (int t = 0; t < 4; t++) {
        const bool ta = t & 1, tb = t & 2;
        one_matmul(AD_F32, AD_F32, AD_F32, ta, tb, TOL_F32);
        one_matmul(AD_F32, AD_BF16, AD_F32, ta, tb, TOL_F32); /* f32 activations, bf16 weight */
        one_matmul(AD_BF16, AD_BF16, AD_BF16, ta, tb, TOL_BF16);
        one_matmul(AD_BF16, AD_BF16, AD_F32, ta, tb, TOL_BF16_F32);
    }
    one_bf16_conversion(70, 0, 70); /* contiguous: 2310 elements, a tail of 2 */
    one_bf16_conversion(72, 0, 68); /* rows of 68 at a stride of 72: four at a time */
    one_bf16_conversion(72, 1, 70); /* rows not 16-byte aligned: one at a time */
    /* a transposed view as the operand (no flag): the library transposes instead */
    pair a, b, y;
    pair_make(&a, "a_stored", AD_F32, 2, S(40, 24), 1.0f, 0.0f);
    pair_make(&b, "b", AD_F32, 2, S(40, 16), 1.0f, 0.0f);
    pair_make(&y, "y", AD_F32, 2, S(24, 16), 1.0f, 0.0f);
    pair at = a;
    CHECK_OK(ad_tensor_transpose(&a.c, 0, 1, &at.c));
    CHECK_OK(ad_tensor_transpose(&a.g, 0, 1, &at.g));
    CHECK_OK(g_cpu->matmul(g_cpu, &y.c, &at.c, false, &b.c, false, 1.0f, 0.0f));
    CHECK_OK(g_gpu->matmul(g_gpu, &y.g, &at.g, false, &b.g, false, 1.0f, 0.0f));
    expect_close("matmul of a transposed view", &y, TOL_F32);
    /* The same problem again takes the remembered algorithm: a cache hit, the same bits; a
     * problem differing only in its leading dimension (a row slice) asks the heuristic anew. */
    long hits0, misses0, hits1, misses1, hits2, misses2;
    CHECK_OK(ad_cuda_gemm_cache_stats(g_gpu, &hits0, &misses0));
    CHECK_OK(g_gpu->matmul(g_gpu, &y.g, &at.g, false, &b.g, false, 1.0f, 0.0f));
    CHECK_OK(ad_cuda_gemm_cache_stats(g_gpu, &hits1, &misses1));
    CHECK_MSG(hits1 == hits0 + 1 && misses1 == misses0, "hits %ld -> %ld, misses %ld -> %ld", hits0,
              hits1, misses0, misses1);
    expect_close("matmul again, the cached algorithm", &y, TOL_F32);
    pair wide, ys;
    pair_make(&wide, "y_wide", AD_F32, 2, S(24, 20), 1.0f, 0.0f);
    pair_slice(&wide, 1, 0, 16, &ys); /* same alignment as y: only ld differs */
    CHECK_OK(g_cpu->matmul(g_cpu, &ys.c, &at.c, false, &b.c, false, 1.0f, 0.0f));
    CHECK_OK(g_gpu->matmul(g_gpu, &ys.g, &at.g, false, &b.g, false, 1.0f, 0.0f));
    CHECK_OK(ad_cuda_gemm_cache_stats(g_gpu, &hits2, &misses2));
    CHECK_MSG(misses2 == misses1 + 1, "a new leading dimension was not a new problem");
    expect_close("matmul into a row slice (ld 20)", &wide, TOL_F32);
    pair_free(&wide);
    pair_free(&a);
    pair_free(&b);
    pair_free(&y);
}

/* bias_dt AD_DTYPE_COUNT: no bias. A bias whose dtype differs from an f32 output (bf16
 * weights and bias, f32 activations: the trainer under precision bf16) is widened and goes
 * through the GEMM epilogue; under bf16 GEMMs the reference is the CPU product of x rounded
 * to bf16 (w is bf16 already in those cases). */
static void one_linear(ad_dtype xdt, ad_dtype wdt, ad_dtype ydt, ad_dtype bias_dt, bool bf16_gemm,
                       double tol) {
    const bool with_bias = bias_dt != AD_DTYPE_COUNT;
    pair x, w, bias, y, xr;
    /* 3-D rows except where the reference rounds x (cpu_round_bf16 takes 2-D views) */
    const int rank = bf16_gemm ? 2 : 3;
    const int64_t *xs = bf16_gemm ? S(18, 64) : S(2, 9, 64),
                  *ys = bf16_gemm ? S(18, 48) : S(2, 9, 48);
    pair_make(&x, "x", xdt, rank, xs, 1.0f, 0.0f);
    pair_make(&w, "w", wdt, 2, S(48, 64), 0.2f, 0.0f);
    pair_make(&bias, "bias", with_bias ? bias_dt : ydt, 1, S(48), 1.0f, 0.0f);
    pair_make(&y, "y", ydt, rank, ys, 1.0f, 0.0f);
    const bool round_x = bf16_gemm && xdt == AD_F32;
    if (round_x) cpu_round_bf16(&x, &xr);
    CHECK_OK(g_cpu->linear(g_cpu, &y.c, round_x ? &xr.c : &x.c, &w.c, with_bias ? &bias.c : NULL));
    CHECK_OK(ad_cuda_set_bf16_matmul(g_gpu, bf16_gemm));
    CHECK_OK(g_gpu->linear(g_gpu, &y.g, &x.g, &w.g, with_bias ? &bias.g : NULL));
    CHECK_OK(ad_cuda_set_bf16_matmul(g_gpu, false));
    char what[128];
    snprintf(what, sizeof what, "linear x %s, w %s, y %s%s%s%s", ad_dtype_name(xdt),
             ad_dtype_name(wdt), ad_dtype_name(ydt), with_bias ? ", bias " : "",
             with_bias ? ad_dtype_name(bias_dt) : "", bf16_gemm ? ", bf16 GEMM" : "");
    expect_close(what, &y, tol);
    if (round_x) pair_free(&xr);
    pair_free(&x);
    pair_free(&w);
    pair_free(&bias);
    pair_free(&y);
}

/* A bf16 output of a layer whose bias is f32 (bf16 activations of biases trained in fp32),
 * under bf16 GEMMs: the product and the bias are summed in f32 and rounded once, so y is the
 * f32 result rounded to bf16. Reference: the CPU's f32 product of the rounded operands plus
 * the bias, rounded on the host; summation order may move a value on a rounding boundary by
 * one bf16 step, nothing more. Adding a bias rounded to bf16, or rounding twice, moves a large
 * share. y is the whole of a [40, 72] tensor (flat conversion) or columns 4..76 of a [40, 80]
 * one (row by row). */
static void one_linear_bf16_output_f32_bias(bool slice) {
    const int64_t M = 40, N = 72, K = 96, W = slice ? 80 : N;
    pair x, w, bias, wide, y, xr;
    pair_make(&x, "x", AD_F32, 2, S(M, K), 1.0f, 0.0f);
    pair_make(&w, "w", AD_BF16, 2, S(N, K), 0.2f, 0.0f);
    pair_make(&bias, "bias", AD_F32, 1, S(N), 3.0f, 0.0f);
    pair_make(&wide, "y", AD_BF16, 2, S(M, W), 1.0f, 0.0f);
    pair_slice(&wide, 1, slice ? 4 : 0, N, &y);
    cpu_round_bf16(&x, &xr);
    CHECK_OK(g_cpu->linear(g_cpu, &y.c, &xr.c, &w.c, &bias.c));
    CHECK_OK(ad_cuda_set_bf16_matmul(g_gpu, true));
    CHECK_OK(g_gpu->linear(g_gpu, &y.g, &x.g, &w.g, &bias.g));
    CHECK_OK(ad_cuda_set_bf16_matmul(g_gpu, false));
    float *want = malloc(sizeof(float) * (size_t)(M * N)),
          *got = malloc(sizeof(float) * (size_t)(M * N));
    CHECK_OK(ad_tensor_to_f32(&y.c, want));
    ad_tensor h;
    CHECK_OK(ad_tensor_init(&h, got, AD_F32, AD_DEVICE_CPU, 2, S(M, N), "y"));
    CHECK_OK(g_gpu->download(g_gpu, &h, &y.g));
    int64_t same = 0, far = 0;
    for (int64_t i = 0; i < M * N; i++) {
        const float r = ad_bf16_to_f32(ad_f32_to_bf16(want[i]));
        int e;
        frexpf(r, &e);
        if (got[i] == r)
            same++;
        else if (fabsf(got[i] - r) > ldexpf(1.0f, e - 8))
            far++;
    }
    printf("  linear bf16 y, f32 bias%s: %lld of %lld equal to the rounded f32 result, %lld more "
           "than one step off\n",
           slice ? " (column slice)" : "", (long long)same, (long long)(M * N), (long long)far);
    CHECK_MSG(far == 0 && same >= M * N * 98 / 100,
              "linear with a bf16 output and an f32 bias is not the f32 result rounded once");
    free(want);
    free(got);
    pair_free(&xr);
    pair_free(&x);
    pair_free(&w);
    pair_free(&bias);
    pair_free(&wide);
}

/* linear_residual (y = linear + residual): the residual rides as the GEMM's C operand, or is
 * added after when its rows are laid out unlike y's (`slice`: a column slice of a wider
 * tensor). Against the CPU's linear then add, under bf16 GEMMs with x rounded there too. */
static void one_linear_residual(ad_dtype xdt, ad_dtype wdt, ad_dtype bias_dt, bool bf16_gemm,
                                bool slice) {
    const bool with_bias = bias_dt != AD_DTYPE_COUNT;
    pair x, w, bias, y, wide, r, xr;
    pair_make(&x, "x", xdt, 2, S(21, 64), 1.0f, 0.0f);
    pair_make(&w, "w", wdt, 2, S(40, 64), 0.2f, 0.0f);
    pair_make(&bias, "bias", with_bias ? bias_dt : AD_F32, 1, S(40), 1.0f, 0.0f);
    pair_make(&y, "y", AD_F32, 2, S(21, 40), 1.0f, 0.0f);
    pair_make(&wide, "residual", AD_F32, 2, S(21, slice ? 44 : 40), 1.0f, 0.0f);
    pair_slice(&wide, 1, slice ? 4 : 0, 40, &r);
    const bool round_x = bf16_gemm && xdt == AD_F32;
    if (round_x) cpu_round_bf16(&x, &xr);
    CHECK_OK(g_cpu->linear_residual(g_cpu, &y.c, round_x ? &xr.c : &x.c, &w.c,
                                    with_bias ? &bias.c : NULL, &r.c));
    CHECK_OK(ad_cuda_set_bf16_matmul(g_gpu, bf16_gemm));
    CHECK_OK(g_gpu->linear_residual(g_gpu, &y.g, &x.g, &w.g, with_bias ? &bias.g : NULL, &r.g));
    CHECK_OK(ad_cuda_set_bf16_matmul(g_gpu, false));
    char what[128];
    snprintf(what, sizeof what, "linear_residual x %s, w %s%s%s%s%s", ad_dtype_name(xdt),
             ad_dtype_name(wdt), with_bias ? ", bias " : "",
             with_bias ? ad_dtype_name(bias_dt) : "", bf16_gemm ? ", bf16 GEMM" : "",
             slice ? ", residual a slice" : "");
    expect_close(what, &y, TOL_F32);
    if (round_x) pair_free(&xr);
    pair_free(&x);
    pair_free(&w);
    pair_free(&bias);
    pair_free(&y);
    pair_free(&wide);
}

static void test_linear(void) {
    const ad_dtype none = AD_DTYPE_COUNT;
    one_linear(AD_F32, AD_F32, AD_F32, AD_F32, false, TOL_F32);
    one_linear(AD_F32, AD_F32, AD_F32, none, false, TOL_F32);
    one_linear(AD_F32, AD_BF16, AD_F32, AD_F32, false, TOL_F32);
    one_linear(AD_BF16, AD_BF16, AD_BF16, AD_BF16, false, TOL_BF16);
    one_linear(AD_BF16, AD_BF16, AD_F32, AD_F32, false, TOL_BF16_F32);
    one_linear(AD_F32, AD_BF16, AD_F32, AD_BF16, false, TOL_F32);
    one_linear(AD_F32, AD_BF16, AD_F32, AD_BF16, true, TOL_F32);
    one_linear(AD_BF16, AD_BF16, AD_F32, AD_BF16, true, TOL_F32);
    one_linear(AD_F32, AD_BF16, AD_F32, none, true, TOL_F32);
    one_linear_bf16_output_f32_bias(false);
    one_linear_bf16_output_f32_bias(true);
    one_linear_residual(AD_F32, AD_F32, AD_F32, false, false);
    one_linear_residual(AD_F32, AD_F32, none, false, false);
    one_linear_residual(AD_F32, AD_BF16, AD_F32, true, false);
    one_linear_residual(AD_BF16, AD_BF16, none, true, false);
    one_linear_residual(AD_F32, AD_BF16, AD_BF16, true, false); /* the bf16 teacher's biases */
    one_linear_residual(AD_F32, AD_BF16, AD_F32, false, false); /* B in f32 tiles */
    one_linear_residual(AD_F32, AD_F32, AD_F32, false, true);
}

static void one_conv(ad_dtype dt, int stride, int padding, double tol) {
    const int64_t B = 2, L = 20, Cin = 16, Cout = 24, K = 3;
    const int64_t L_out = (L + 2 * padding - K) / stride + 1;
    pair x, w, bias, y;
    pair_make(&x, "x", dt, 3, S(B, L, Cin), 1.0f, 0.0f);
    pair_make(&w, "w", dt, 3, S(Cout, Cin, K), 0.2f, 0.0f);
    pair_make(&bias, "bias", dt, 1, S(Cout), 1.0f, 0.0f);
    pair_make(&y, "y", dt, 3, S(B, L_out, Cout), 1.0f, 0.0f);
    CHECK_OK(g_cpu->conv1d(g_cpu, &y.c, &x.c, &w.c, &bias.c, stride, padding));
    CHECK_OK(g_gpu->conv1d(g_gpu, &y.g, &x.g, &w.g, &bias.g, stride, padding));
    char what[96];
    snprintf(what, sizeof what, "conv1d k3 stride %d padding %d", stride, padding);
    expect_close(what, &y, tol);
    pair_free(&x);
    pair_free(&w);
    pair_free(&bias);
    pair_free(&y);
}

static void test_conv1d(void) {
    one_conv(AD_F32, 1, 1, TOL_F32);
    one_conv(AD_F32, 2, 1, TOL_F32);
    one_conv(AD_BF16, 1, 1, TOL_BF16);
    one_conv(AD_BF16, 2, 1, TOL_BF16);
}

static void test_elementwise(void) {
    const ad_dtype dts[2] = {AD_F32, AD_BF16};
    for (int i = 0; i < 2; i++) {
        const ad_dtype dt = dts[i];
        const double tol = dt == AD_F32 ? TOL_F32 : TOL_BF16;
        pair x, u, y, b, big;
        pair_make(&x, "x", dt, 3, S(3, 5, 40), 2.0f, 0.0f);
        pair_make(&u, "up", dt, 3, S(3, 5, 40), 1.0f, 0.0f);
        pair_make(&y, "y", dt, 3, S(3, 5, 40), 1.0f, 0.0f);
        pair_make(&b, "b", dt, 2, S(5, 40), 1.0f, 0.0f);
        CHECK_OK(g_cpu->gelu(g_cpu, &y.c, &x.c));
        CHECK_OK(g_gpu->gelu(g_gpu, &y.g, &x.g));
        expect_close("gelu", &y, tol);
        CHECK_OK(g_cpu->silu_mul(g_cpu, &y.c, &x.c, &u.c));
        CHECK_OK(g_gpu->silu_mul(g_gpu, &y.g, &x.g, &u.g));
        expect_close("silu_mul", &y, tol);
        CHECK_OK(g_cpu->add(g_cpu, &y.c, &x.c, &b.c));
        CHECK_OK(g_gpu->add(g_gpu, &y.g, &x.g, &b.g));
        expect_close("add, [T, C] broadcast over [B, T, C]", &y, tol);
        CHECK_OK(g_cpu->softmax(g_cpu, &y.c, &x.c));
        CHECK_OK(g_gpu->softmax(g_gpu, &y.g, &x.g));
        expect_close("softmax", &y, tol);
        CHECK_OK(g_cpu->gelu(g_cpu, &x.c, &x.c));
        CHECK_OK(g_gpu->gelu(g_gpu, &x.g, &x.g));
        expect_close("gelu in place", &x, tol);
        pair_make(&big, "wide", dt, 2, S(4, 3000), 3.0f, 0.0f);
        CHECK_OK(g_cpu->softmax(g_cpu, &big.c, &big.c));
        CHECK_OK(g_gpu->softmax(g_gpu, &big.g, &big.g));
        expect_close("softmax in place, 3000 wide", &big, tol);
        pair xt, yt;
        pair_make(&xt, "xt", dt, 3, S(3, 37, 50), 1.0f, 0.0f);
        pair_make(&yt, "yt", dt, 3, S(3, 50, 37), 1.0f, 0.0f);
        CHECK_OK(g_cpu->transpose(g_cpu, &yt.c, &xt.c));
        CHECK_OK(g_gpu->transpose(g_gpu, &yt.g, &xt.g));
        expect_close("transpose", &yt, dt == AD_F32 ? 0.0 : tol);
        /* Same-shape contiguous operands (f32: four per load), 861 elements: a tail of 1 */
        pair p1, p2, p3;
        pair_make(&p1, "a", dt, 3, S(3, 7, 41), 2.0f, 0.0f);
        pair_make(&p2, "b", dt, 3, S(3, 7, 41), 1.0f, 0.0f);
        pair_make(&p3, "y", dt, 3, S(3, 7, 41), 1.0f, 0.0f);
        CHECK_OK(g_cpu->add(g_cpu, &p3.c, &p1.c, &p2.c));
        CHECK_OK(g_gpu->add(g_gpu, &p3.g, &p1.g, &p2.g));
        expect_close("add, same shapes, 861 elements", &p3, tol);
        CHECK_OK(g_cpu->silu_mul(g_cpu, &p3.c, &p1.c, &p2.c));
        CHECK_OK(g_gpu->silu_mul(g_gpu, &p3.g, &p1.g, &p2.g));
        expect_close("silu_mul, 861 elements", &p3, tol);
        CHECK_OK(g_cpu->gelu(g_cpu, &p1.c, &p1.c));
        CHECK_OK(g_gpu->gelu(g_gpu, &p1.g, &p1.g));
        expect_close("gelu in place, 861 elements", &p1, tol);
        /* The same, each operand one contiguous row starting one element into its buffer: not
         * 16-byte aligned, so no four-per-load path (the emulator stops a misaligned one). */
        pair o1, o2, o3, v1, v2, v3;
        pair_make(&o1, "a_buf", dt, 2, S(1, 862), 2.0f, 0.0f);
        pair_make(&o2, "b_buf", dt, 2, S(1, 862), 1.0f, 0.0f);
        pair_make(&o3, "y_buf", dt, 2, S(1, 862), 1.0f, 0.0f);
        pair_slice(&o1, 1, 1, 861, &v1);
        pair_slice(&o2, 1, 1, 861, &v2);
        pair_slice(&o3, 1, 1, 861, &v3);
        CHECK_OK(g_cpu->add(g_cpu, &v3.c, &v1.c, &v2.c));
        CHECK_OK(g_gpu->add(g_gpu, &v3.g, &v1.g, &v2.g));
        expect_close("add, rows one element into their buffers", &o3, tol);
        CHECK_OK(g_cpu->silu_mul(g_cpu, &v3.c, &v1.c, &v2.c));
        CHECK_OK(g_gpu->silu_mul(g_gpu, &v3.g, &v1.g, &v2.g));
        expect_close("silu_mul, rows one element into their buffers", &o3, tol);
        pair_free(&o1);
        pair_free(&o2);
        pair_free(&o3);
        pair_free(&p1);
        pair_free(&p2);
        pair_free(&p3);
        pair_free(&x);
        pair_free(&u);
        pair_free(&y);
        pair_free(&b);
        pair_free(&big);
        pair_free(&xt);
        pair_free(&yt);
        /* Row launches: rows that do not merge (a column slice), several column blocks with
         * a partial last one, and more rows than one grid dimension holds (a broadcast add,
         * which is never flattened into one row). */
        pair wg, wu, wy, g, up, out, tall, bias;
        pair_make(&wg, "wide_gate", dt, 3, S(2, 3, 2600), 2.0f, 0.0f);
        pair_make(&wu, "wide_up", dt, 3, S(2, 3, 2600), 1.0f, 0.0f);
        pair_make(&wy, "wide_y", dt, 3, S(2, 3, 2600), 1.0f, 0.0f);
        pair_slice(&wg, 2, 0, 2500, &g);
        pair_slice(&wu, 2, 50, 2500, &up);
        pair_slice(&wy, 2, 100, 2500, &out);
        CHECK_OK(g_cpu->silu_mul(g_cpu, &out.c, &g.c, &up.c));
        CHECK_OK(g_gpu->silu_mul(g_gpu, &out.g, &g.g, &up.g));
        expect_close("silu_mul over strided rows of 2500", &wy, tol);
        CHECK_OK(g_cpu->gelu(g_cpu, &out.c, &g.c));
        CHECK_OK(g_gpu->gelu(g_gpu, &out.g, &g.g));
        expect_close("gelu over strided rows of 2500", &wy, tol);
        pair_make(&tall, "tall", dt, 2, S(70000, 3), 1.0f, 0.0f);
        pair_make(&bias, "bias", dt, 1, S(3), 1.0f, 0.0f);
        CHECK_OK(g_cpu->add(g_cpu, &tall.c, &tall.c, &bias.c));
        CHECK_OK(g_gpu->add(g_gpu, &tall.g, &tall.g, &bias.g));
        expect_close("add in place, bias over 70000 rows", &tall, tol);
        pair_free(&wg);
        pair_free(&wu);
        pair_free(&wy);
        pair_free(&tall);
        pair_free(&bias);
    }
}

static void test_norms(void) {
    const ad_dtype dts[2] = {AD_F32, AD_BF16};
    /* rows of 40 (one warp: 2 elements per thread, a partial last step), 300 (3 warps: the
     * block sums over a warp count that is no power of two), 1000 (256 threads, 4 kept in
     * registers per thread, a partial last step) and 4200 (wider than the registers keep: read
     * from memory) */
    const int64_t widths[4] = {40, 300, 1000, 4200};
    for (int i = 0; i < 8; i++) {
        const ad_dtype dt = dts[i % 2];
        const int64_t C = widths[i / 2];
        const double tol = dt == AD_F32 ? TOL_F32 : TOL_BF16;
        pair xbig, w, bias, y;
        pair_make(&xbig, "x", dt, 2, S(7, 2 * C), 1.5f, 1.0f);
        pair_make(&w, "weight", dt, 1, S(C), 0.5f, 1.0f);
        pair_make(&bias, "bias", dt, 1, S(C), 0.5f, 0.0f);
        pair_make(&y, "y", dt, 2, S(7, C), 1.0f, 0.0f);
        pair x; /* rows with stride 2 C: a strided view */
        pair_slice(&xbig, 1, 0, C, &x);
        CHECK_OK(g_cpu->layernorm(g_cpu, &y.c, &x.c, &w.c, &bias.c, 1e-5f));
        CHECK_OK(g_gpu->layernorm(g_gpu, &y.g, &x.g, &w.g, &bias.g, 1e-5f));
        expect_close("layernorm (strided rows)", &y, tol);
        CHECK_OK(g_cpu->rmsnorm(g_cpu, &y.c, &x.c, &w.c, 1e-6f));
        CHECK_OK(g_gpu->rmsnorm(g_gpu, &y.g, &x.g, &w.g, 1e-6f));
        expect_close("rmsnorm (strided rows)", &y, tol);
        pair_free(&xbig);
        pair_free(&w);
        pair_free(&bias);
        pair_free(&y);
    }
}

/* A CUDA tensor's values as f32 on the host (malloc'd). */
static float *download_f32(const ad_tensor *g) {
    const int64_t n = ad_tensor_numel(g);
    float *out = malloc(sizeof(float) * (size_t)(n ? n : 1));
    ad_tensor h;
    CHECK_OK(ad_tensor_init(&h, out, AD_F32, AD_DEVICE_CPU, g->ndim, g->shape, "download"));
    CHECK_OK(g_gpu->download(g_gpu, &h, g));
    return out;
}

static void test_rope(void) {
    /* 11 heads: one full group of ROPE_HEADS (8) and a partial one */
    const int B = 2, T = 9, H = 11, D = 16;
    int32_t pos[2 * 9];
    for (int i = 0; i < B * T; i++)
        pos[i] = (int32_t)ad_rng_below(&g_rng, 3000);
    pair p;
    pair_ids(&p, "positions", 2, S(B, T), pos);
    const ad_dtype dts[2] = {AD_F32, AD_BF16};
    for (int i = 0; i < 2; i++) {
        pair x;
        pair_make(&x, "x", dts[i], 3, S(B, T, H * D), 1.0f, 0.0f);
        CHECK_OK(g_cpu->rope(g_cpu, &x.c, &x.c, &p.c, H, D, 1e6f));
        CHECK_OK(g_gpu->rope(g_gpu, &x.g, &x.g, &p.g, H, D, 1e6f));
        expect_close("rope, positions up to 3000", &x, dts[i] == AD_F32 ? TOL_F32 : TOL_BF16);
        pair_free(&x);
    }
    /* f32 x into bf16 y (the training graph's decoder q and k): exactly the f32 rotation
     * rounded once, x untouched; and into a strided f32 y */
    pair x, y, wide, wider, ys;
    pair_make(&x, "x", AD_F32, 3, S(B, T, H * D), 1.0f, 0.0f);
    pair_make(&y, "y", AD_BF16, 3, S(B, T, H * D), 1.0f, 0.0f);
    pair_make(&wide, "y f32", AD_F32, 3, S(B, T, H * D), 1.0f, 0.0f);
    pair_make(&wider, "y strided", AD_F32, 3, S(B, T, H * D + 8), 1.0f, 0.0f);
    pair_slice(&wider, 2, 0, H * D, &ys);
    const int64_t n = (int64_t)B * T * H * D;
    float *x_before = download_f32(&x.g);
    CHECK_OK(g_gpu->rope(g_gpu, &y.g, &x.g, &p.g, H, D, 1e6f));
    CHECK_OK(g_gpu->rope(g_gpu, &wide.g, &x.g, &p.g, H, D, 1e6f));
    CHECK_OK(g_gpu->rope(g_gpu, &ys.g, &x.g, &p.g, H, D, 1e6f));
    float *x_after = download_f32(&x.g), *w = download_f32(&wide.g), *r = download_f32(&y.g);
    int64_t bad_x = 0, bad_y = 0;
    for (int64_t i = 0; i < n; i++) {
        bad_x += x_after[i] != x_before[i];
        bad_y += r[i] != ad_bf16_to_f32(ad_f32_to_bf16(w[i]));
    }
    CHECK_MSG(bad_x == 0, "rope into y changed %lld elements of x", (long long)bad_x);
    CHECK_MSG(bad_y == 0, "rope f32 -> bf16: %lld of %lld elements are not the f32 result rounded",
              (long long)bad_y, (long long)n);
    CHECK_OK(g_cpu->rope(g_cpu, &y.c, &x.c, &p.c, H, D, 1e6f));
    CHECK_OK(g_cpu->rope(g_cpu, &ys.c, &x.c, &p.c, H, D, 1e6f));
    expect_close("rope f32 x into bf16 y", &y, TOL_BF16);
    expect_close("rope into a strided y", &ys, TOL_F32);
    CHECK_FAILS_WITH(g_gpu->rope(g_gpu, &wide.g, &y.g, &p.g, H, D, 1e6f), "must be bf16");
    free(x_before), free(x_after), free(w), free(r);
    pair_free(&wider), pair_free(&wide), pair_free(&y), pair_free(&x);
    pair_free(&p);
}

/* Each case through the four paths of attention_cases.h, then AUTO under bf16 GEMMs. */
static void one_attention_path(const attn_case *ac, int path, bool bf16_gemm);

static void one_attention(const attn_case *ac) {
    one_attention_path(ac, AD_CUDA_ATTENTION_KERNEL, false);
    one_attention_path(ac, AD_CUDA_ATTENTION_GEMM, false);
    one_attention_path(ac, AD_CUDA_ATTENTION_GEMM, true);
    one_attention_path(ac, AD_CUDA_ATTENTION_FLASH, false);
    one_attention_path(ac, AD_CUDA_ATTENTION_AUTO, true);
}

static void one_attention_path(const attn_case *ac, int path, bool bf16_gemm) {
    const attention_calls calls = attention_path_begin(path, bf16_gemm);
    const int64_t qd = (int64_t)ac->H * ac->D, kvd = (int64_t)ac->KVH * ac->D;
    /* q is a slice of a fused [B, Tq, qd + 2 kvd] projection; k and v the first Tk rows of a
     * longer KV cache: both strided views. */
    pair qkv, kc, vc, out, q, k, v;
    pair_make(&qkv, "qkv", ac->dt, 3, S(ac->B, ac->Tq, qd + 2 * kvd), 1.0f, 0.0f);
    const int64_t kvc = kvd + ac->kv_col_offset;
    pair_make(&kc, "k_cache", ac->dt, 3, S(ac->B, ac->Tk + 5, kvc), 1.0f, 0.0f);
    pair_make(&vc, "v_cache", ac->dt, 3, S(ac->B, ac->Tk + 5, kvc), 1.0f, 0.0f);
    pair_make(&out, "out", ac->dt, 3, S(ac->B, ac->Tq, qd), 1.0f, 0.0f);
    pair_slice(&qkv, 2, 0, qd, &q);
    pair_poison_masked_keys(&kc, ac->key_len);
    pair_poison_masked_keys(&vc, ac->key_len);
    pair kr, vr;
    pair_slice(&kc, 1, 0, ac->Tk, &kr);
    pair_slice(&vc, 1, 0, ac->Tk, &vr);
    pair_slice(&kr, 2, ac->kv_col_offset, kvd, &k);
    pair_slice(&vr, 2, ac->kv_col_offset, kvd, &v);
    ad_attention_params p = {ac->H,       ac->KVH,      ac->D,
                             ac->causal,  ac->q_offset, 1.0f / sqrtf((float)ac->D),
                             ac->key_len, NULL};
    CHECK_OK(g_cpu->attention(g_cpu, &out.c, &q.c, &k.c, &v.c, &p));
    CHECK_OK(g_gpu->attention(g_gpu, &out.g, &q.g, &k.g, &v.g, &p));
    char what[160];
    snprintf(what, sizeof what, "%s%s%s", ac->what, attention_path_name(path),
             bf16_gemm ? " bf16 GEMMs" : "");
    expect_close(what, &out, attention_tolerance(ac, path, bf16_gemm));
    /* Decoding steps (<= 2 query rows) that neither the flash kernels nor the GEMMs took go
     * through the decoding kernel; nothing else does. */
    const bool tiled = ad_cuda_attention_flash_calls(g_gpu) == calls.flash &&
                       ad_cuda_attention_gemm_calls(g_gpu) == calls.gemm;
    const bool decode_expected = tiled && ac->Tq <= 2;
    CHECK_MSG((ad_cuda_attention_decode_calls(g_gpu) > calls.decode) == decode_expected,
              "%s: attention %s the decoding kernel", what,
              decode_expected ? "did not go through" : "went through");
    attention_path_end(ac, path, bf16_gemm, calls, false);
    pair_free(&qkv);
    pair_free(&kc);
    pair_free(&vc);
    pair_free(&out);
}

static void test_attention(void) {
    static const int key_len[2] = {37, 20}, no_keys[2] = {0, 30}, long_len[2] = {150, 97},
                     rows_len[2] = {70, 41}, cache_len[3] = {0, 513, 97};
    const attn_case cases[] = {
        {"attention encoder, key_len {37, 20}", 2, 37, 37, 4, 4, 32, false, 0, key_len, AD_F32, 0},
        {"attention key_len {0, 30}", 2, 33, 33, 4, 2, 32, false, 0, no_keys, AD_F32, 0},
        {"attention causal GQA 6/2", 2, 45, 45, 6, 2, 64, true, 0, NULL, AD_F32, 0},
        {"attention decode q_offset 37, GQA", 2, 3, 40, 4, 2, 64, true, 37, NULL, AD_F32, 0},
        {"attention head_dim 128, causal", 1, 70, 70, 2, 1, 128, true, 0, NULL, AD_F32, 0},
        /* head dims that do not divide the block size: the tile loads wrap rows mid-stride */
        {"attention head_dim 40, causal GQA 4/2", 2, 50, 50, 4, 2, 40, true, 0, NULL, AD_F32, 0},
        {"attention head_dim 200, key_len", 2, 37, 37, 2, 2, 200, false, 0, key_len, AD_F32, 0},
        {"attention causal GQA 6/2", 2, 45, 45, 6, 2, 64, true, 0, NULL, AD_BF16, 0},
        {"attention encoder, key_len {37, 20}", 2, 37, 37, 4, 4, 32, false, 0, key_len, AD_BF16, 0},
        /* a chunk of queries after a cached prefix (causal with q_offset, several query rows) */
        {"attention prefill chunk q_offset 20, GQA", 2, 24, 44, 4, 2, 64, true, 20, NULL, AD_F32,
         0},
        /* several query blocks and key tiles of the flash kernels, key_len mid-tile */
        {"attention 150 frames, key_len {150, 97}", 2, 150, 150, 4, 2, 64, false, 0, long_len,
         AD_F32, 0},
        /* the same in bf16 (the encoder's q, k, v under bf16 GEMMs): eight elements per load */
        {"attention 150 frames, key_len {150, 97}", 2, 150, 150, 4, 2, 64, false, 0, long_len,
         AD_BF16, 0},
        {"attention chunk of 90 after 20, causal", 1, 90, 110, 2, 2, 32, true, 20, NULL, AD_F32, 0},
        /* the training decoder: causal over padded rows (key_len = each row's length) */
        {"attention causal, key_len {70, 41}, GQA", 2, 70, 70, 4, 2, 64, true, 0, rows_len, AD_F32,
         0},
        /* k and v rows not 16-byte aligned: the flash kernels' tile loads take pairs */
        {"attention k/v 2 columns into the cache", 2, 40, 70, 2, 2, 32, false, 0, key_len, AD_F32,
         2},
        {"attention k/v 2 columns into the cache", 2, 40, 70, 2, 2, 32, false, 0, key_len, AD_BF16,
         2},
        /* decoding steps (one or two query rows: the kernel path's warps split the keys, 19
         * tiles over 16 warps), causal after a cache, GQA, views into a cache, rows without
         * keys, key_len mid-tile, head dims 128, 64, 40 and 200 */
        {"attention decode step, 600 cached keys, GQA 8/2", 2, 1, 600, 8, 2, 128, true, 599, NULL,
         AD_F32, 0},
        {"attention decode step, 600 cached keys, GQA 8/2", 2, 1, 600, 8, 2, 128, true, 599, NULL,
         AD_BF16, 2},
        /* key rows 16-byte aligned (a lane loads 8 bf16 or 4 floats at once), and f32 rows not */
        {"attention decode step, 70 cached keys", 2, 1, 70, 4, 2, 128, true, 69, NULL, AD_BF16, 0},
        {"attention decode step, f32 rows 1 column in", 2, 1, 90, 4, 4, 64, true, 89, NULL, AD_F32,
         1},
        {"attention decode step, key_len {0, 513, 97}", 3, 1, 530, 4, 4, 40, false, 0, cache_len,
         AD_F32, 0},
        {"attention 2 decode rows after 300, GQA 4/1", 1, 2, 302, 4, 1, 200, true, 300, NULL,
         AD_F32, 0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        one_attention(&cases[i]);
}

/* The flash kernels' diagnostic switches (read when a backend is created): a bad value is
 * refused, and a backend with the pipe off (head dim 64, bf16 K and V: the encoder's), or with
 * the head-dim-128 forward and dQ kernels compiled for two blocks per SM (the decoder's; with
 * the pipe, and with it off), gives the default backend's output and gradients bit for bit:
 * the same arithmetic, only loads, shared memory or registers differ. */
static void test_flash_switches(void) {
    static const int padded[2] = {150, 97};
    static const struct {
        const char *var, *bad, *good, *refusal, *also; /* also: PIPE=0 as well */
        int D;
        bool causal;
        const int *key_len;
    } sw[] = {
        {"AUDISTILL_CUDA_FLASH_PIPE", "2", "0", "expected 0 or 1", NULL, 64, false, NULL},
        {"AUDISTILL_CUDA_FLASH_D128_BLOCKS", "4", "2", "expected 2 or 3", NULL, 128, true, NULL},
        /* padded rows: key_len mid-tile (the training decoder's) */
        {"AUDISTILL_CUDA_FLASH_D128_BLOCKS", "4", "2", "expected 2 or 3", NULL, 128, true, padded},
        {"AUDISTILL_CUDA_FLASH_D128_BLOCKS", "1", "2", "expected 2 or 3", "0", 128, true, NULL},
    };
    for (size_t i = 0; i < sizeof sw / sizeof sw[0]; i++) {
        ad_backend *other = NULL;
        setenv(sw[i].var, sw[i].bad, 1);
        CHECK_FAILS_WITH(ad_backend_cuda_create(&other, 0), sw[i].refusal);
        setenv(sw[i].var, sw[i].good, 1);
        if (sw[i].also) setenv("AUDISTILL_CUDA_FLASH_PIPE", sw[i].also, 1);
        const int rc = ad_backend_cuda_create(&other, 0);
        unsetenv(sw[i].var);
        unsetenv("AUDISTILL_CUDA_FLASH_PIPE");
        CHECK_OK(rc);
        if (rc < 0) continue;
        const int B = 2, T = 150, H = 2, D = sw[i].D;
        pair q, k, v, out, out2;
        pair_make(&q, "q", AD_BF16, 3, S(B, T, H * D), 1.0f, 0.0f);
        pair_make(&k, "k", AD_BF16, 3, S(B, T, H * D), 1.0f, 0.0f);
        pair_make(&v, "v", AD_BF16, 3, S(B, T, H * D), 1.0f, 0.0f);
        pair_make(&out, "out", AD_F32, 3, S(B, T, H * D), 1.0f, 0.0f);
        pair_make(&out2, "out", AD_F32, 3, S(B, T, H * D), 1.0f, 0.0f);
        pair_poison_masked_keys(&k, sw[i].key_len); /* never read: NaN there */
        pair_poison_masked_keys(&v, sw[i].key_len);
        const ad_attention_params p = {
            H, H, D, sw[i].causal, 0, 1.0f / sqrtf((float)D), sw[i].key_len, NULL};
        CHECK_OK(ad_cuda_set_attention_path(g_gpu, AD_CUDA_ATTENTION_FLASH));
        CHECK_OK(ad_cuda_set_attention_path(other, AD_CUDA_ATTENTION_FLASH));
        const long before = ad_cuda_attention_flash_calls(other);
        CHECK_OK(g_gpu->attention(g_gpu, &out.g, &q.g, &k.g, &v.g, &p));
        CHECK_OK(other->attention(other, &out2.g, &q.g, &k.g, &v.g, &p));
        CHECK_OK(g_cpu->attention(g_cpu, &out.c, &q.c, &k.c, &v.c, &p));
        CHECK(ad_cuda_attention_flash_calls(other) == before + 1);
        CHECK_MSG(same_bits(&out.g, &out2.g), "%s=%s changed the flash output", sw[i].var,
                  sw[i].good);
        char what[128];
        snprintf(what, sizeof what, "flash head dim %d, %s=%s%s", D, sw[i].var, sw[i].good,
                 sw[i].also ? " and PIPE=0" : "");
        out2.c = out.c; /* the CPU reference for the other backend's output */
        expect_close(what, &out2, 2e-2);
        /* the backward from the default backend's output: dQ through the switched kernel */
        pair dout, grads[3], grads2[3];
        pair_make(&dout, "dout", AD_F32, 3, S(B, T, H * D), 1.0f, 0.0f);
        for (int j = 0; j < 3; j++) {
            pair_make(&grads[j], "grad", AD_F32, 3, S(B, T, H * D), 1.0f, 0.0f);
            pair_make(&grads2[j], "grad", AD_F32, 3, S(B, T, H * D), 1.0f, 0.0f);
        }
        CHECK_OK(g_gpu->attention_backward(g_gpu, &grads[0].g, &grads[1].g, &grads[2].g, &dout.g,
                                           &out.g, &q.g, &k.g, &v.g, &p));
        CHECK_OK(other->attention_backward(other, &grads2[0].g, &grads2[1].g, &grads2[2].g, &dout.g,
                                           &out.g, &q.g, &k.g, &v.g, &p));
        CHECK_OK(g_cpu->attention_backward(g_cpu, &grads[0].c, &grads[1].c, &grads[2].c, &dout.c,
                                           &out.c, &q.c, &k.c, &v.c, &p));
        CHECK(ad_cuda_attention_flash_calls(other) == before + 2);
        static const char *const names[3] = {"dq", "dk", "dv"};
        for (int j = 0; j < 3; j++) {
            CHECK_MSG(same_bits(&grads[j].g, &grads2[j].g), "%s=%s changed the flash %s", sw[i].var,
                      sw[i].good, names[j]);
            char gwhat[160];
            snprintf(gwhat, sizeof gwhat, "%s, %s", what, names[j]);
            grads2[j].c = grads[j].c;
            expect_close(gwhat, &grads2[j], 2e-2);
        }
        /* the switched kernels handing the forward's softmax statistics (NaN until the forward
         * writes them) to the backward: the same bits again */
        pair stats;
        pair_make(&stats, "softmax_stats", AD_F32, 3, S(B, H, T), 1.0f, 0.0f);
        CHECK_OK(other->fill(other, &stats.g, NAN));
        ad_attention_params ps = p;
        ps.softmax_stats = &stats.g;
        CHECK_OK(other->attention(other, &out2.g, &q.g, &k.g, &v.g, &ps));
        CHECK_OK(other->attention_backward(other, &grads2[0].g, &grads2[1].g, &grads2[2].g, &dout.g,
                                           &out2.g, &q.g, &k.g, &v.g, &ps));
        CHECK_MSG(same_bits(&out.g, &out2.g), "%s=%s with saved statistics changed the output",
                  sw[i].var, sw[i].good);
        for (int j = 0; j < 3; j++)
            CHECK_MSG(same_bits(&grads[j].g, &grads2[j].g),
                      "%s=%s with saved statistics changed the flash %s", sw[i].var, sw[i].good,
                      names[j]);
        pair_free(&stats);
        for (int j = 0; j < 3; j++) {
            g_gpu->release(g_gpu, grads2[j].gbuf), g_cpu->release(g_cpu, grads2[j].cbuf);
            pair_free(&grads[j]);
        }
        pair_free(&dout);
        CHECK_OK(ad_cuda_set_attention_path(g_gpu, AD_CUDA_ATTENTION_AUTO));
        pair_free(&q), pair_free(&k), pair_free(&v), pair_free(&out);
        g_gpu->release(g_gpu, out2.gbuf), g_cpu->release(g_cpu, out2.cbuf);
        ad_backend_destroy(other);
    }
}

/* The backend keeps the last few key_len tables on the device and uploads one only when no
 * table there holds the same values: a host table rewritten in place (the training graph's)
 * must be uploaded again, a table of another length is another table, and the least recently
 * used one is replaced. Fresh q, k, v per call, keys past each call's lengths NaN. */
static void test_key_len_tables(void) {
    static const int contents[][3] = {{40, 12, 33}, {5, 40, 21}, {40, 12, 33}, {1, 2, 3},
                                      {40, 40, 40}, {17, 0, 39}, {40, 12, 33}, {5, 40, 21}};
    /* uploads after each call, 4 tables: {5, 40, 21} is the least recently used at the sixth */
    static const long uploads[] = {1, 2, 2, 3, 4, 5, 5, 6};
    const int T = 40, H = 2, D = 32;
    int lens[3];
    const long base = ad_cuda_key_len_uploads(g_gpu);
    for (size_t i = 0; i < sizeof contents / sizeof contents[0] + 1; i++) {
        /* last: the first two values of the first table, B = 2 */
        const bool shorter = i == sizeof contents / sizeof contents[0];
        const int64_t B = shorter ? 2 : 3;
        memcpy(lens, contents[shorter ? 0 : i], sizeof lens);
        pair q, k, v, out;
        pair_make(&q, "q", AD_F32, 3, S(B, T, H * D), 1.0f, 0.0f);
        pair_make(&k, "k", AD_F32, 3, S(B, T, H * D), 1.0f, 0.0f);
        pair_make(&v, "v", AD_F32, 3, S(B, T, H * D), 1.0f, 0.0f);
        pair_make(&out, "out", AD_F32, 3, S(B, T, H * D), 1.0f, 0.0f);
        pair_poison_masked_keys(&k, lens);
        pair_poison_masked_keys(&v, lens);
        const ad_attention_params p = {H, H, D, false, 0, 1.0f / sqrtf((float)D), lens, NULL};
        CHECK_OK(g_cpu->attention(g_cpu, &out.c, &q.c, &k.c, &v.c, &p));
        CHECK_OK(g_gpu->attention(g_gpu, &out.g, &q.g, &k.g, &v.g, &p));
        char what[96];
        snprintf(what, sizeof what, "attention, key_len table %zu {%d, %d%s}", i, lens[0], lens[1],
                 shorter ? "" : ", ...");
        expect_close(what, &out, TOL_F32);
        CHECK_MSG(ad_cuda_key_len_uploads(g_gpu) - base == (shorter ? 7 : uploads[i]),
                  "%s: %ld uploads, expected %ld", what, ad_cuda_key_len_uploads(g_gpu) - base,
                  shorter ? 7 : uploads[i]);
        pair_free(&q), pair_free(&k), pair_free(&v), pair_free(&out);
    }
}

static void test_pool_embed_scatter(void) {
    pair x, y;
    pair_make(&x, "x", AD_F32, 3, S(2, 11, 24), 1.0f, 0.0f);
    pair_make(&y, "y", AD_F32, 3, S(2, 5, 24), 1.0f, 0.0f);
    CHECK_OK(g_cpu->avg_pool1d(g_cpu, &y.c, &x.c, 2, 2));
    CHECK_OK(g_gpu->avg_pool1d(g_gpu, &y.g, &x.g, 2, 2));
    expect_close("avg_pool1d k2 s2 (odd length)", &y, TOL_F32);
    pair_free(&x);
    pair_free(&y);

    int32_t idv[14];
    for (int i = 0; i < 14; i++)
        idv[i] = (int32_t)ad_rng_below(&g_rng, 50);
    pair table, ids, e;
    pair_make(&table, "embed_tokens", AD_BF16, 2, S(50, 32), 1.0f, 0.0f);
    pair_ids(&ids, "ids", 2, S(2, 7), idv);
    pair_make(&e, "embeds", AD_F32, 3, S(2, 7, 32), 1.0f, 0.0f);
    CHECK_OK(g_cpu->embedding(g_cpu, &e.c, &table.c, &ids.c));
    CHECK_OK(g_gpu->embedding(g_gpu, &e.g, &table.g, &ids.g));
    expect_close("embedding (bf16 table -> f32)", &e, 0.0);

    int32_t rowv[6] = {3, 0, 12, 7, 13, 5};
    pair rows, src;
    pair_ids(&rows, "rows", 1, S(6), rowv);
    pair_make(&src, "audio", AD_F32, 2, S(6, 32), 1.0f, 0.0f);
    ad_tensor flat_c, flat_g;
    CHECK_OK(ad_tensor_reshape(&e.c, 2, S(14, 32), &flat_c));
    CHECK_OK(ad_tensor_reshape(&e.g, 2, S(14, 32), &flat_g));
    CHECK_OK(g_cpu->scatter_rows(g_cpu, &flat_c, &src.c, &rows.c));
    CHECK_OK(g_gpu->scatter_rows(g_gpu, &flat_g, &src.g, &rows.g));
    expect_close("scatter_rows", &e, 0.0);
    /* negative rows (padding) are skipped: rows 12 and 13 keep the values written above */
    int32_t padv[6] = {12, -1, 1, -1, -7, 13};
    pair pad, src2;
    pair_ids(&pad, "padded rows", 1, S(6), padv);
    pair_make(&src2, "audio", AD_F32, 2, S(6, 32), 1.0f, 0.0f);
    CHECK_OK(g_cpu->scatter_rows(g_cpu, &flat_c, &src2.c, &pad.c));
    CHECK_OK(g_gpu->scatter_rows(g_gpu, &flat_g, &src2.g, &pad.g));
    expect_close("scatter_rows with negative (skipped) rows", &e, 0.0);
    pair_free(&pad);
    pair_free(&src2);

    /* a bad id fails before anything is written, naming the tensor and value */
    int32_t bad[14];
    memcpy(bad, idv, sizeof bad);
    bad[9] = 50;
    pair badids;
    pair_ids(&badids, "bad_ids", 2, S(2, 7), bad);
    CHECK_FAILS_WITH(g_gpu->embedding(g_gpu, &e.g, &table.g, &badids.g), "element 9 = 50");
    pair_free(&badids);

    /* more rows than one grid dimension holds, and rows wider than the blocks' columns */
    const int64_t many = 70000;
    int32_t *manyv = malloc(sizeof(int32_t) * (size_t)many);
    for (int64_t i = 0; i < many; i++)
        manyv[i] = (int32_t)ad_rng_below(&g_rng, 50);
    pair many_ids, many_e, wide_t, wide_ids, wide_e;
    pair_ids(&many_ids, "ids", 1, S(many), manyv);
    pair_make(&many_e, "embeds", AD_F32, 2, S(many, 32), 1.0f, 0.0f);
    CHECK_OK(g_cpu->embedding(g_cpu, &many_e.c, &table.c, &many_ids.c));
    CHECK_OK(g_gpu->embedding(g_gpu, &many_e.g, &table.g, &many_ids.g));
    expect_close("embedding of 70000 ids", &many_e, 0.0);
    pair_make(&wide_t, "wide_table", AD_F32, 2, S(5, 17000), 1.0f, 0.0f);
    pair_ids(&wide_ids, "ids", 1, S(3), (const int32_t[]){4, 0, 4});
    pair_make(&wide_e, "wide_embeds", AD_F32, 2, S(3, 17000), 1.0f, 0.0f);
    CHECK_OK(g_cpu->embedding(g_cpu, &wide_e.c, &wide_t.c, &wide_ids.c));
    CHECK_OK(g_gpu->embedding(g_gpu, &wide_e.g, &wide_t.g, &wide_ids.g));
    expect_close("embedding of rows of 17000", &wide_e, 0.0);
    free(manyv);
    pair_free(&many_ids);
    pair_free(&many_e);
    pair_free(&wide_t);
    pair_free(&wide_ids);
    pair_free(&wide_e);
    pair_free(&table);
    pair_free(&ids);
    pair_free(&e);
    pair_free(&rows);
    pair_free(&src);
}

/* Bad shapes are refused by the checks both backends share (backend/op_check.c): each call
 * fails on the GPU with the CPU's message, word for word, and writes nothing. */
static char g_cpu_refusal[512];
static int cpu_refused(int rc) {
    snprintf(g_cpu_refusal, sizeof g_cpu_refusal, "%s", rc < 0 ? ad_error() : "(accepted)");
    ad_error_clear();
    return rc;
}
#define SAME_REFUSAL(what, cpu_call, gpu_call, needle)                                             \
    do {                                                                                           \
        CHECK_MSG(cpu_refused(cpu_call) < 0 && strstr(g_cpu_refusal, needle),                      \
                  "%s: the CPU backend gave '%s'", what, g_cpu_refusal);                           \
        const int rc_ = (gpu_call);                                                                \
        CHECK_MSG(rc_ < 0 && !strcmp(ad_error(), g_cpu_refusal),                                   \
                  "%s: the GPU gave rc %d, '%s'; the CPU '%s'", what, rc_, ad_error(),             \
                  g_cpu_refusal);                                                                  \
        ad_error_clear();                                                                          \
    } while (0)

static void test_shape_refusals(void) {
    pair a, bias, t, y, w, x, dy;
    pair_make(&a, "hidden", AD_F32, 3, S(2, 3, 4), 1.0f, 0.0f);
    pair_make(&bias, "positions", AD_F32, 2, S(2, 4), 1.0f, 0.0f);
    SAME_REFUSAL("add, b not a's trailing dims", g_cpu->add(g_cpu, &a.c, &a.c, &bias.c),
                 g_gpu->add(g_gpu, &a.g, &a.g, &bias.g), "trailing dims");
    pair_make(&t, "t", AD_F32, 3, S(2, 3, 4), 1.0f, 0.0f);
    SAME_REFUSAL("transpose, dims not swapped", g_cpu->transpose(g_cpu, &t.c, &a.c),
                 g_gpu->transpose(g_gpu, &t.g, &a.g), "last two dims swapped");
    SAME_REFUSAL("avg_pool1d, shorter than the kernel", g_cpu->avg_pool1d(g_cpu, &t.c, &a.c, 4, 1),
                 g_gpu->avg_pool1d(g_gpu, &t.g, &a.g, 4, 1), "shorter than kernel 4");
    SAME_REFUSAL("avg_pool1d, output length", g_cpu->avg_pool1d(g_cpu, &t.c, &a.c, 2, 1),
                 g_gpu->avg_pool1d(g_gpu, &t.g, &a.g, 2, 1), "expected [2, 2, 4]");
    pair_make(&dy, "dy", AD_F32, 3, S(2, 3, 4), 1.0f, 0.0f);
    SAME_REFUSAL("avg_pool1d_backward, dy's length",
                 g_cpu->avg_pool1d_backward(g_cpu, &t.c, &dy.c, 2, 2),
                 g_gpu->avg_pool1d_backward(g_gpu, &t.g, &dy.g, 2, 2), "expected [2, 1, 4]");
    SAME_REFUSAL("avg_pool1d_backward, stride 0",
                 g_cpu->avg_pool1d_backward(g_cpu, &t.c, &dy.c, 2, 0),
                 g_gpu->avg_pool1d_backward(g_gpu, &t.g, &dy.g, 2, 0), "must be >= 1");
    pair_make(&w, "proj.weight", AD_F32, 2, S(5, 3), 1.0f, 0.0f);
    pair_make(&y, "proj_out", AD_F32, 3, S(2, 3, 5), 1.0f, 0.0f);
    SAME_REFUSAL("linear, x's last dim", g_cpu->linear(g_cpu, &y.c, &a.c, &w.c, NULL),
                 g_gpu->linear(g_gpu, &y.g, &a.g, &w.g, NULL), "does not match weight");
    pair_make(&x, "x", AD_F32, 3, S(2, 3, 3), 1.0f, 0.0f);
    SAME_REFUSAL("linear, y's shape", g_cpu->linear(g_cpu, &t.c, &x.c, &w.c, NULL),
                 g_gpu->linear(g_gpu, &t.g, &x.g, &w.g, NULL), "expected 6 rows of 5");
    ad_tensor mc, mg; /* [6 x 4] x [5 x 3]^T: K 4 against 3 */
    CHECK_OK(ad_tensor_reshape(&a.c, 2, S(6, 4), &mc));
    CHECK_OK(ad_tensor_reshape(&a.g, 2, S(6, 4), &mg));
    SAME_REFUSAL("matmul, inner dims", g_cpu->matmul(g_cpu, &y.c, &mc, false, &w.c, true, 1, 0),
                 g_gpu->matmul(g_gpu, &y.g, &mg, false, &w.g, true, 1, 0), "cannot multiply");
    SAME_REFUSAL("matmul, output shape", g_cpu->matmul(g_cpu, &t.c, &x.c, false, &w.c, true, 1, 0),
                 g_gpu->matmul(g_gpu, &t.g, &x.g, false, &w.g, true, 1, 0), "for the product");
    /* GEMM operands no single call can take (ad_op_matrix_of) */
    ad_tensor gap_c, gap_g, cross_c, cross_g;
    CHECK_OK(ad_tensor_slice(&a.c, 1, 0, 2, &gap_c)); /* [2, 2, 4], rows 12 apart per clip */
    CHECK_OK(ad_tensor_slice(&a.g, 1, 0, 2, &gap_g));
    SAME_REFUSAL("matmul, leading dims that do not merge",
                 g_cpu->matmul(g_cpu, &y.c, &gap_c, false, &w.c, true, 1, 0),
                 g_gpu->matmul(g_gpu, &y.g, &gap_g, false, &w.g, true, 1, 0),
                 "cannot be flattened");
    ad_tensor flat_c, flat_g; /* [6, 4] -> its first 3 rows, then strides (8, 2) */
    CHECK_OK(ad_tensor_reshape(&a.c, 2, S(6, 4), &flat_c));
    CHECK_OK(ad_tensor_reshape(&a.g, 2, S(6, 4), &flat_g));
    CHECK_OK(ad_tensor_slice(&flat_c, 0, 0, 3, &cross_c));
    CHECK_OK(ad_tensor_slice(&flat_g, 0, 0, 3, &cross_g));
    cross_c.stride[0] = cross_g.stride[0] = 8, cross_c.stride[1] = cross_g.stride[1] = 2;
    SAME_REFUSAL("matmul, neither rows nor columns contiguous",
                 g_cpu->matmul(g_cpu, &y.c, &cross_c, false, &w.c, true, 1, 0),
                 g_gpu->matmul(g_gpu, &y.g, &cross_g, false, &w.g, true, 1, 0),
                 "neither its rows nor its columns");
    pair *all[] = {&a, &bias, &t, &y, &w, &x, &dy};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        pair_free(all[i]);
}

int main(void) {
    setup_backends(20240611);
    RUN(test_copy_fill);
    RUN(test_matmul);
    RUN(test_linear);
    RUN(test_conv1d);
    RUN(test_elementwise);
    RUN(test_norms);
    RUN(test_rope);
    RUN(test_attention);
    RUN(test_flash_switches);
    RUN(test_key_len_tables);
    RUN(test_pool_embed_scatter);
    RUN(test_shape_refusals);
    teardown_backends();
    return test_report();
}
