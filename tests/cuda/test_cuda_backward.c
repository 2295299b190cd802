/* Backward ops of the CUDA backend against the CPU reference (cpu_backward.c) on fresh random
 * inputs, with parameter gradients accumulated onto non-zero buffers (the += contract), plus
 * bitwise determinism of the reductions that replace atomics (norm parameter gradients, bias
 * sums, embedding backward). Tolerances: cuda_test_util.h. Skips without a GPU. */
#include "attention_cases.h"
#include "cuda_test_util.h"

#define S(...) ((const int64_t[]){__VA_ARGS__})

static double tol_for(ad_dtype dt) {
    return dt == AD_F32 ? TOL_F32 : TOL_BF16;
}

/* Parameter gradients are F32 on both sides; with bf16 inputs their tolerance is the
 * bf16-input / f32-output one. */
static double tol_param(ad_dtype dt) {
    return dt == AD_F32 ? TOL_F32 : TOL_BF16_F32;
}

static void one_linear_backward(ad_dtype dt) {
    pair x, w, dy, dx, dw, db;
    pair_make(&x, "x", dt, 3, S(2, 9, 64), 1.0f, 0.0f);
    pair_make(&w, "w", dt, 2, S(48, 64), 0.2f, 0.0f);
    pair_make(&dy, "dy", dt, 3, S(2, 9, 48), 1.0f, 0.0f);
    pair_make(&dx, "dx", dt, 3, S(2, 9, 64), 1.0f, 0.0f);
    pair_make(&dw, "dw", AD_F32, 2, S(48, 64), 1.0f, 0.0f);
    pair_make(&db, "db", AD_F32, 1, S(48), 1.0f, 0.0f);
    CHECK_OK(g_cpu->linear_backward(g_cpu, &dx.c, &dw.c, &db.c, &dy.c, &x.c, &w.c, false));
    CHECK_OK(g_gpu->linear_backward(g_gpu, &dx.g, &dw.g, &db.g, &dy.g, &x.g, &w.g, false));
    expect_close("linear_backward dx", &dx, tol_for(dt));
    expect_close("linear_backward dw (accumulated)", &dw, tol_param(dt));
    expect_close("linear_backward db (accumulated)", &db, tol_param(dt));
    pair_free(&x);
    pair_free(&w);
    pair_free(&dy);
    pair_free(&dx);
    pair_free(&dw);
    pair_free(&db);
}

/* Under bf16 GEMMs linear_backward rounds dy to bf16 once for both products (dx = dy w,
 * dw += dy^T x, x and w rounded too); the bias gradient sums the unrounded dy. The reference is
 * the CPU's fp32 products of the rounded operands, so either product reading another dy, or db
 * summing the rounded one, shows far above the tolerance. */
static void one_linear_backward_bf16_gemm(void) {
    const int64_t M = 18, N = 48, K = 64;
    pair x, w, dy, dx, dw, db, xr, wr, dyr;
    pair_make(&x, "x", AD_F32, 2, S(M, K), 1.0f, 0.0f);
    pair_make(&w, "w", AD_F32, 2, S(N, K), 0.2f, 0.0f);
    pair_make(&dy, "dy", AD_F32, 2, S(M, N), 1.0f, 0.0f);
    pair_make(&dx, "dx", AD_F32, 2, S(M, K), 1.0f, 0.0f);
    pair_make(&dw, "dw", AD_F32, 2, S(N, K), 1.0f, 0.0f);
    pair_make(&db, "db", AD_F32, 1, S(N), 1.0f, 0.0f);
    cpu_round_bf16(&x, &xr);
    cpu_round_bf16(&w, &wr);
    cpu_round_bf16(&dy, &dyr);
    CHECK_OK(g_cpu->linear_backward(g_cpu, &dx.c, &dw.c, NULL, &dyr.c, &xr.c, &wr.c, false));
    CHECK_OK(g_cpu->linear_backward(g_cpu, NULL, NULL, &db.c, &dy.c, &x.c, &w.c, false));
    CHECK_OK(ad_cuda_set_bf16_matmul(g_gpu, true));
    CHECK_OK(g_gpu->linear_backward(g_gpu, &dx.g, &dw.g, &db.g, &dy.g, &x.g, &w.g, false));
    CHECK_OK(ad_cuda_set_bf16_matmul(g_gpu, false));
    expect_close("linear_backward bf16 GEMMs dx", &dx, TOL_F32);
    expect_close("linear_backward bf16 GEMMs dw (accumulated)", &dw, TOL_F32);
    expect_close("linear_backward bf16 GEMMs db (f32 dy)", &db, TOL_F32);
    pair *all[] = {&x, &w, &dy, &dx, &dw, &db, &xr, &wr, &dyr};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        pair_free(all[i]);
}

/* dw_overwrite: dw written over NaN (CUDA) equals the CPU's product accumulated onto
 * zeros, under fp32 and bf16 GEMMs; db still accumulates; no rows write zeros. */
static void one_linear_backward_overwrite(bool bf16_gemm) {
    const int64_t M = 18, N = 48, K = 64;
    pair x, w, dy, dw, db;
    pair_make(&x, "x", AD_F32, 2, S(M, K), 1.0f, 0.0f);
    pair_make(&w, "w", AD_F32, 2, S(N, K), 0.2f, 0.0f);
    pair_make(&dy, "dy", AD_F32, 2, S(M, N), 1.0f, 0.0f);
    pair_make(&dw, "dw", AD_F32, 2, S(N, K), 1.0f, 0.0f);
    pair_make(&db, "db", AD_F32, 1, S(N), 1.0f, 0.0f);
    pair xr, dyr;
    cpu_round_bf16(&x, &xr);
    cpu_round_bf16(&dy, &dyr);
    CHECK_OK(g_cpu->fill(g_cpu, &dw.c, 0.0f));
    CHECK_OK(g_cpu->linear_backward(g_cpu, NULL, &dw.c, NULL, bf16_gemm ? &dyr.c : &dy.c,
                                    bf16_gemm ? &xr.c : &x.c, &w.c, false));
    CHECK_OK(g_cpu->linear_backward(g_cpu, NULL, NULL, &db.c, &dy.c, &x.c, &w.c, false));
    CHECK_OK(g_gpu->fill(g_gpu, &dw.g, NAN));
    CHECK_OK(ad_cuda_set_bf16_matmul(g_gpu, bf16_gemm));
    CHECK_OK(g_gpu->linear_backward(g_gpu, NULL, &dw.g, &db.g, &dy.g, &x.g, &w.g, true));
    expect_close(bf16_gemm ? "linear_backward dw overwritten, bf16 GEMMs"
                           : "linear_backward dw overwritten",
                 &dw, TOL_F32);
    expect_close("linear_backward db beside it (accumulated)", &db, TOL_F32);
    pair none_x, none_dy;
    pair_slice(&x, 0, 0, 0, &none_x);
    pair_slice(&dy, 0, 0, 0, &none_dy);
    CHECK_OK(g_cpu->fill(g_cpu, &dw.c, 0.0f));
    CHECK_OK(g_gpu->fill(g_gpu, &dw.g, NAN));
    CHECK_OK(g_gpu->linear_backward(g_gpu, NULL, &dw.g, NULL, &none_dy.g, &none_x.g, &w.g, true));
    CHECK_OK(ad_cuda_set_bf16_matmul(g_gpu, false));
    expect_close("linear_backward dw overwritten from no rows", &dw, 0.0);
    pair *all[] = {&x, &w, &dy, &dw, &db, &xr, &dyr};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++)
        pair_free(all[i]);
}

static void test_linear_backward(void) {
    one_linear_backward(AD_F32);
    one_linear_backward(AD_BF16);
    one_linear_backward_bf16_gemm();
    one_linear_backward_overwrite(false);
    one_linear_backward_overwrite(true);
}

static void one_conv_backward(ad_dtype dt, int stride, int padding) {
    const int64_t B = 2, L = 20, Cin = 16, Cout = 24, K = 3;
    const int64_t L_out = (L + 2 * padding - K) / stride + 1;
    pair x, w, dy, dx, dw, db;
    pair_make(&x, "x", dt, 3, S(B, L, Cin), 1.0f, 0.0f);
    pair_make(&w, "w", dt, 3, S(Cout, Cin, K), 0.2f, 0.0f);
    pair_make(&dy, "dy", dt, 3, S(B, L_out, Cout), 1.0f, 0.0f);
    pair_make(&dx, "dx", dt, 3, S(B, L, Cin), 1.0f, 0.0f);
    pair_make(&dw, "dw", AD_F32, 3, S(Cout, Cin, K), 1.0f, 0.0f);
    pair_make(&db, "db", AD_F32, 1, S(Cout), 1.0f, 0.0f);
    CHECK_OK(
        g_cpu->conv1d_backward(g_cpu, &dx.c, &dw.c, &db.c, &dy.c, &x.c, &w.c, stride, padding));
    CHECK_OK(
        g_gpu->conv1d_backward(g_gpu, &dx.g, &dw.g, &db.g, &dy.g, &x.g, &w.g, stride, padding));
    char what[96];
    snprintf(what, sizeof what, "conv1d_backward s%d dx", stride);
    expect_close(what, &dx, tol_for(dt));
    snprintf(what, sizeof what, "conv1d_backward s%d dw", stride);
    expect_close(what, &dw, tol_param(dt));
    snprintf(what, sizeof what, "conv1d_backward s%d db", stride);
    expect_close(what, &db, tol_param(dt));
    pair_free(&x);
    pair_free(&w);
    pair_free(&dy);
    pair_free(&dx);
    pair_free(&dw);
    pair_free(&db);
}

static void test_conv1d_backward(void) {
    one_conv_backward(AD_F32, 1, 1);
    one_conv_backward(AD_F32, 2, 1);
    one_conv_backward(AD_BF16, 2, 1);
}

static void test_activation_backward(void) {
    const ad_dtype dts[2] = {AD_F32, AD_BF16};
    for (int i = 0; i < 2; i++) {
        const ad_dtype dt = dts[i];
        pair x, u, dy, dx, du;
        pair_make(&x, "x", dt, 2, S(12, 80), 2.0f, 0.0f);
        pair_make(&u, "up", dt, 2, S(12, 80), 1.0f, 0.0f);
        pair_make(&dy, "dy", dt, 2, S(12, 80), 1.0f, 0.0f);
        pair_make(&dx, "dx", dt, 2, S(12, 80), 1.0f, 0.0f);
        pair_make(&du, "dup", dt, 2, S(12, 80), 1.0f, 0.0f);
        CHECK_OK(g_cpu->gelu_backward(g_cpu, &dx.c, &dy.c, &x.c));
        CHECK_OK(g_gpu->gelu_backward(g_gpu, &dx.g, &dy.g, &x.g));
        expect_close("gelu_backward", &dx, tol_for(dt));
        CHECK_OK(g_cpu->silu_mul_backward(g_cpu, &dx.c, &du.c, &dy.c, &x.c, &u.c));
        CHECK_OK(g_gpu->silu_mul_backward(g_gpu, &dx.g, &du.g, &dy.g, &x.g, &u.g));
        expect_close("silu_mul_backward dgate", &dx, tol_for(dt));
        expect_close("silu_mul_backward dup", &du, tol_for(dt));
        /* 861 elements (f32: four per load, a tail of 1); dgate written over dy, as the
         * decoder's backward does; then dgate alone */
        pair g2, u2, y2, d2;
        pair_make(&g2, "gate", dt, 2, S(21, 41), 2.0f, 0.0f);
        pair_make(&u2, "up", dt, 2, S(21, 41), 1.0f, 0.0f);
        pair_make(&y2, "dy", dt, 2, S(21, 41), 1.0f, 0.0f);
        pair_make(&d2, "dup", dt, 2, S(21, 41), 1.0f, 0.0f);
        CHECK_OK(g_cpu->silu_mul_backward(g_cpu, &y2.c, &d2.c, &y2.c, &g2.c, &u2.c));
        CHECK_OK(g_gpu->silu_mul_backward(g_gpu, &y2.g, &d2.g, &y2.g, &g2.g, &u2.g));
        expect_close("silu_mul_backward in place, 861 elements, dgate", &y2, tol_for(dt));
        expect_close("silu_mul_backward in place, 861 elements, dup", &d2, tol_for(dt));
        CHECK_OK(g_cpu->silu_mul_backward(g_cpu, &d2.c, NULL, &u2.c, &g2.c, &y2.c));
        CHECK_OK(g_gpu->silu_mul_backward(g_gpu, &d2.g, NULL, &u2.g, &g2.g, &y2.g));
        expect_close("silu_mul_backward, dgate only", &d2, tol_for(dt));
        pair_free(&g2);
        pair_free(&u2);
        pair_free(&y2);
        pair_free(&d2);
        pair_free(&x);
        pair_free(&u);
        pair_free(&dy);
        pair_free(&dx);
        pair_free(&du);
    }
}

static void test_norm_backward(void) {
    const ad_dtype dts[2] = {AD_F32, AD_BF16};
    /* 200 rows: several row chunks in the reduction; 96 columns: one warp, 3 per thread; 300:
     * 3 warps; 1000 columns: 256 threads, 4 per thread kept in registers, a partial last step;
     * 4200: wider than the registers keep, read from memory */
    const int64_t shapes[4][2] = {{200, 96}, {40, 300}, {24, 1000}, {12, 4200}};
    for (int i = 0; i < 8; i++) {
        const ad_dtype dt = dts[i % 2];
        const int64_t R = shapes[i / 2][0], C = shapes[i / 2][1];
        pair x, w, dy, dx, dw, dbias;
        pair_make(&x, "x", dt, 2, S(R, C), 1.5f, 1.0f);
        pair_make(&w, "weight", dt, 1, S(C), 0.5f, 1.0f);
        pair_make(&dy, "dy", dt, 2, S(R, C), 1.0f, 0.0f);
        pair_make(&dx, "dx", dt, 2, S(R, C), 1.0f, 0.0f);
        pair_make(&dw, "dweight", AD_F32, 1, S(C), 1.0f, 0.0f);
        pair_make(&dbias, "dbias", AD_F32, 1, S(C), 1.0f, 0.0f);
        CHECK_OK(g_cpu->layernorm_backward(g_cpu, &dx.c, &dw.c, &dbias.c, &dy.c, &x.c, &w.c, 1e-5f,
                                           false));
        CHECK_OK(g_gpu->layernorm_backward(g_gpu, &dx.g, &dw.g, &dbias.g, &dy.g, &x.g, &w.g, 1e-5f,
                                           false));
        expect_close("layernorm_backward dx", &dx, tol_for(dt));
        expect_close("layernorm_backward dweight", &dw, tol_param(dt));
        expect_close("layernorm_backward dbias", &dbias, tol_param(dt));
        CHECK_OK(g_cpu->rmsnorm_backward(g_cpu, &dx.c, &dw.c, &dy.c, &x.c, &w.c, 1e-6f, false));
        CHECK_OK(g_gpu->rmsnorm_backward(g_gpu, &dx.g, &dw.g, &dy.g, &x.g, &w.g, 1e-6f, false));
        expect_close("rmsnorm_backward dx", &dx, tol_for(dt));
        expect_close("rmsnorm_backward dweight", &dw, tol_param(dt));
        /* dx_accumulate: dx += onto the values above (both sides hold the same within tol) */
        pair resid;
        pair_make(&resid, "residual gradient", dt, 2, S(R, C), 1.0f, 0.0f);
        CHECK_OK(g_cpu->copy(g_cpu, &dx.c, &resid.c));
        CHECK_OK(g_gpu->copy(g_gpu, &dx.g, &resid.g));
        CHECK_OK(g_cpu->rmsnorm_backward(g_cpu, &dx.c, NULL, &dy.c, &x.c, &w.c, 1e-6f, true));
        CHECK_OK(g_gpu->rmsnorm_backward(g_gpu, &dx.g, NULL, &dy.g, &x.g, &w.g, 1e-6f, true));
        expect_close("rmsnorm_backward dx accumulated", &dx, tol_for(dt));
        CHECK_OK(g_cpu->copy(g_cpu, &dx.c, &resid.c));
        CHECK_OK(g_gpu->copy(g_gpu, &dx.g, &resid.g));
        CHECK_OK(
            g_cpu->layernorm_backward(g_cpu, &dx.c, NULL, NULL, &dy.c, &x.c, &w.c, 1e-5f, true));
        CHECK_OK(
            g_gpu->layernorm_backward(g_gpu, &dx.g, NULL, NULL, &dy.g, &x.g, &w.g, 1e-5f, true));
        expect_close("layernorm_backward dx accumulated", &dx, tol_for(dt));
        pair_free(&resid);

        /* determinism: the same reduction twice into zeroed buffers gives the same bits */
        void *b1, *b2;
        CHECK_OK(g_gpu->alloc(g_gpu, sizeof(float) * (size_t)C, &b1));
        CHECK_OK(g_gpu->alloc(g_gpu, sizeof(float) * (size_t)C, &b2));
        ad_tensor t1, t2;
        CHECK_OK(ad_tensor_init(&t1, b1, AD_F32, AD_DEVICE_CUDA, 1, S(C), "dweight_1"));
        CHECK_OK(ad_tensor_init(&t2, b2, AD_F32, AD_DEVICE_CUDA, 1, S(C), "dweight_2"));
        CHECK_OK(
            g_gpu->layernorm_backward(g_gpu, NULL, &t1, NULL, &dy.g, &x.g, &w.g, 1e-5f, false));
        CHECK_OK(
            g_gpu->layernorm_backward(g_gpu, NULL, &t2, NULL, &dy.g, &x.g, &w.g, 1e-5f, false));
        CHECK_MSG(same_bits(&t1, &t2), "layernorm dweight differs between two runs");
        g_gpu->release(g_gpu, b1);
        g_gpu->release(g_gpu, b2);
        pair_free(&x);
        pair_free(&w);
        pair_free(&dy);
        pair_free(&dx);
        pair_free(&dw);
        pair_free(&dbias);
    }
}

static void test_rope_backward(void) {
    const int B = 2, T = 9, H = 10, D = 16; /* a full group of 8 heads and a partial one */
    int32_t pos[2 * 9];
    for (int i = 0; i < B * T; i++)
        pos[i] = (int32_t)ad_rng_below(&g_rng, 3000);
    pair p, dx;
    pair_ids(&p, "positions", 2, S(B, T), pos);
    pair_make(&dx, "dx", AD_F32, 3, S(B, T, H * D), 1.0f, 0.0f);
    CHECK_OK(g_cpu->rope_backward(g_cpu, &dx.c, &p.c, H, D, 1e6f));
    CHECK_OK(g_gpu->rope_backward(g_gpu, &dx.g, &p.g, H, D, 1e6f));
    expect_close("rope_backward", &dx, TOL_F32);
    pair_free(&p);
    pair_free(&dx);
}

/* Each case through the four paths of attention_cases.h, then AUTO under bf16 GEMMs. */ /* Set
                                                                 while the GEMM path's scratch is
                                                                 too small for the case: the kernels
                                                                 must run. */
static bool g_attention_falls_back;
/* Set for cases in the training graph's dtypes: dO, dq, dk, dv in f32 whatever the case's dtype
 * (bf16 q, k, v records with f32 gradients). */
static bool g_attention_f32_grads;

static void one_attention_backward_path(const attn_case *ac, int path, bool bf16_gemm);

static void one_attention_backward(const attn_case *ac) {
    one_attention_backward_path(ac, AD_CUDA_ATTENTION_KERNEL, false);
    one_attention_backward_path(ac, AD_CUDA_ATTENTION_GEMM, false);
    one_attention_backward_path(ac, AD_CUDA_ATTENTION_GEMM, true);
    one_attention_backward_path(ac, AD_CUDA_ATTENTION_FLASH, false);
    one_attention_backward_path(ac, AD_CUDA_ATTENTION_AUTO, true);
}

static void one_attention_backward_path(const attn_case *ac, int path, bool bf16_gemm) {
    const attention_calls calls = attention_path_begin(path, bf16_gemm);
    const int64_t qd = (int64_t)ac->H * ac->D, kvd = (int64_t)ac->KVH * ac->D;
    pair q, k, v, out, dout, dq, dk, dv;
    pair_make(&q, "q", ac->dt, 3, S(ac->B, ac->Tq, qd), 1.0f, 0.0f);
    pair_make(&k, "k", ac->dt, 3, S(ac->B, ac->Tk, kvd), 1.0f, 0.0f);
    pair_make(&v, "v", ac->dt, 3, S(ac->B, ac->Tk, kvd), 1.0f, 0.0f);
    pair_poison_masked_keys(&k, ac->key_len);
    pair_poison_masked_keys(&v, ac->key_len);
    pair_make(&out, "out", ac->dt, 3, S(ac->B, ac->Tq, qd), 1.0f, 0.0f);
    const ad_dtype gdt = g_attention_f32_grads ? AD_F32 : ac->dt;
    pair_make(&dout, "dout", gdt, 3, S(ac->B, ac->Tq, qd), 1.0f, 0.0f);
    pair_make(&dq, "dq", gdt, 3, S(ac->B, ac->Tq, qd), 1.0f, 0.0f);
    pair_make(&dk, "dk", gdt, 3, S(ac->B, ac->Tk, kvd), 1.0f, 0.0f);
    pair_make(&dv, "dv", gdt, 3, S(ac->B, ac->Tk, kvd), 1.0f, 0.0f);
    ad_attention_params p = {ac->H,       ac->KVH,      ac->D,
                             ac->causal,  ac->q_offset, 1.0f / sqrtf((float)ac->D),
                             ac->key_len, NULL};
    /* each side's own forward output goes into its backward (delta = rowsum(dO * O)) */
    CHECK_OK(g_cpu->attention(g_cpu, &out.c, &q.c, &k.c, &v.c, &p));
    CHECK_OK(g_gpu->attention(g_gpu, &out.g, &q.g, &k.g, &v.g, &p));
    CHECK_OK(g_cpu->attention_backward(g_cpu, &dq.c, &dk.c, &dv.c, &dout.c, &out.c, &q.c, &k.c,
                                       &v.c, &p));
    CHECK_OK(g_gpu->attention_backward(g_gpu, &dq.g, &dk.g, &dv.g, &dout.g, &out.g, &q.g, &k.g,
                                       &v.g, &p));
    char what[160];
    const double tol = attention_tolerance(ac, path, bf16_gemm);
    const char *how = bf16_gemm ? " bf16 GEMMs" : "";
    snprintf(what, sizeof what, "%s%s%s dq", ac->what, attention_path_name(path), how);
    expect_close(what, &dq, tol);
    snprintf(what, sizeof what, "%s%s%s dk", ac->what, attention_path_name(path), how);
    expect_close(what, &dk, tol);
    snprintf(what, sizeof what, "%s%s%s dv", ac->what, attention_path_name(path), how);
    expect_close(what, &dv, tol);
    attn_case outputs = *ac; /* the path expected follows the outputs' dtype */
    outputs.dt = gdt;
    attention_path_end(&outputs, path, bf16_gemm, calls, g_attention_falls_back);
    /* The forward's softmax statistics handed to the backward (the flash dQ pass then skips
     * its first sweep) give the same bits. They start as NaN: a backward that read statistics
     * the forward did not write would show it. (The flash kernels are the only ones that use
     * them; AUTO takes the same kernels.) */
    if (path == AD_CUDA_ATTENTION_FLASH && !g_attention_falls_back) {
        const attention_calls again = attention_path_begin(path, bf16_gemm);
        pair stats, out2, dq2, dk2, dv2;
        pair_make(&stats, "softmax_stats", AD_F32, 3, S(ac->B, ac->H, ac->Tq), 1.0f, 0.0f);
        CHECK_OK(g_gpu->fill(g_gpu, &stats.g, NAN));
        pair_make(&out2, "out", ac->dt, 3, S(ac->B, ac->Tq, qd), 1.0f, 0.0f);
        pair_make(&dq2, "dq", gdt, 3, S(ac->B, ac->Tq, qd), 1.0f, 0.0f);
        pair_make(&dk2, "dk", gdt, 3, S(ac->B, ac->Tk, kvd), 1.0f, 0.0f);
        pair_make(&dv2, "dv", gdt, 3, S(ac->B, ac->Tk, kvd), 1.0f, 0.0f);
        ad_attention_params ps = p;
        ps.softmax_stats = &stats.g;
        CHECK_OK(g_gpu->attention(g_gpu, &out2.g, &q.g, &k.g, &v.g, &ps));
        CHECK_OK(g_gpu->attention_backward(g_gpu, &dq2.g, &dk2.g, &dv2.g, &dout.g, &out2.g, &q.g,
                                           &k.g, &v.g, &ps));
        const bool same = same_bits(&out2.g, &out.g) && same_bits(&dq2.g, &dq.g) &&
                          same_bits(&dk2.g, &dk.g) && same_bits(&dv2.g, &dv.g);
        CHECK_MSG(same, "%s%s%s: the saved softmax statistics change the results", ac->what,
                  attention_path_name(path), how);
        attention_path_end(&outputs, path, bf16_gemm, again, false);
        pair *saved[] = {&stats, &out2, &dq2, &dk2, &dv2};
        for (size_t i = 0; i < sizeof saved / sizeof *saved; i++)
            pair_free(saved[i]);
    }
    pair_free(&q);
    pair_free(&k);
    pair_free(&v);
    pair_free(&out);
    pair_free(&dout);
    pair_free(&dq);
    pair_free(&dk);
    pair_free(&dv);
}

static void test_attention_backward(void) {
    static const int key_len[2] = {37, 20}, no_keys[2] = {0, 30}, long_len[2] = {150, 97},
                     rows_len[2] = {70, 41};
    const attn_case cases[] = {
        {"attn_bwd encoder key_len", 2, 37, 37, 4, 4, 32, false, 0, key_len, AD_F32, 0},
        {"attn_bwd key_len {0, 30}", 2, 33, 33, 4, 2, 32, false, 0, no_keys, AD_F32, 0},
        {"attn_bwd causal GQA 6/2", 2, 45, 45, 6, 2, 64, true, 0, NULL, AD_F32, 0},
        {"attn_bwd q_offset 37 GQA", 2, 3, 40, 4, 2, 64, true, 37, NULL, AD_F32, 0},
        {"attn_bwd head_dim 128", 1, 70, 70, 2, 1, 128, true, 0, NULL, AD_F32, 0},
        /* head dims that do not divide the block size: the tile loads wrap rows mid-stride */
        {"attn_bwd head_dim 40, causal GQA 4/2", 2, 50, 50, 4, 2, 40, true, 0, NULL, AD_F32, 0},
        {"attn_bwd head_dim 200, key_len", 2, 37, 37, 2, 2, 200, false, 0, key_len, AD_F32, 0},
        {"attn_bwd causal GQA 6/2", 2, 45, 45, 6, 2, 64, true, 0, NULL, AD_BF16, 0},
        {"attn_bwd chunk q_offset 20, GQA", 2, 24, 44, 4, 2, 64, true, 20, NULL, AD_F32, 0},
        /* several query blocks and key tiles of the flash kernels, key_len mid-tile; queries
         * before a key block's first visible one skipped (causal, q_offset) */
        {"attn_bwd 150 frames, key_len {150, 97}", 2, 150, 150, 4, 2, 64, false, 0, long_len,
         AD_F32, 0},
        {"attn_bwd 150 frames, key_len {150, 97}", 2, 150, 150, 4, 2, 64, false, 0, long_len,
         AD_BF16, 0},
        {"attn_bwd chunk of 90 after 20, causal", 1, 90, 110, 2, 2, 32, true, 20, NULL, AD_F32, 0},
        /* the training decoder: causal over padded rows (key_len = each row's length) */
        {"attn_bwd causal, key_len {70, 41}, GQA", 2, 70, 70, 4, 2, 64, true, 0, rows_len, AD_F32,
         0},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++)
        one_attention_backward(&cases[i]);
    /* The training graph's dtypes, bf16 q, k, v and f32 gradients: the flash dK/dV kernel pipes
     * its query tiles from a bf16 copy of dO, across the heads of a GQA group. */
    const attn_case graph_cases[] = {
        {"attn_bwd bf16 qkv, f32 grads: causal, key_len {70, 41}, GQA 6/2", 2, 70, 70, 6, 2, 64,
         true, 0, rows_len, AD_BF16, 0},
        {"attn_bwd bf16 qkv, f32 grads: head_dim 128, causal, key_len", 2, 70, 70, 4, 2, 128, true,
         0, rows_len, AD_BF16, 0},
        {"attn_bwd bf16 qkv, f32 grads: 150 frames, key_len {150, 97}", 2, 150, 150, 4, 4, 64,
         false, 0, long_len, AD_BF16, 0},
    };
    g_attention_f32_grads = true;
    for (size_t i = 0; i < sizeof graph_cases / sizeof graph_cases[0]; i++)
        one_attention_backward(&graph_cases[i]);
    g_attention_f32_grads = false;
    /* A score scratch of 3 heads: the encoder case's 4 heads go in blocks of 3 and 1. One of
     * 2 heads holds no GQA group of 3, so that case must fall back to the kernels. */
    CHECK_OK(ad_cuda_set_attention_scratch(g_gpu, sizeof(float) * 3 * 37 * 37));
    one_attention_backward(&cases[0]);
    CHECK_OK(ad_cuda_set_attention_scratch(g_gpu, sizeof(float) * 2 * 45 * 45));
    g_attention_falls_back = true;
    one_attention_backward_path(&cases[2], AD_CUDA_ATTENTION_GEMM, false); /* GQA 6/2 */
    g_attention_falls_back = false;
    CHECK_OK(ad_cuda_set_attention_scratch(g_gpu, (size_t)256 << 20));
}

static void test_pool_backward(void) {
    const int ks[2] = {2, 3};
    for (int i = 0; i < 2; i++) {
        const int kernel = ks[i], stride = 2;
        const int64_t L = 11, L_out = (L - kernel) / stride + 1;
        pair dx, dy;
        pair_make(&dx, "dx", AD_F32, 3, S(2, L, 24), 1.0f, 0.0f);
        pair_make(&dy, "dy", AD_F32, 3, S(2, L_out, 24), 1.0f, 0.0f);
        CHECK_OK(g_cpu->avg_pool1d_backward(g_cpu, &dx.c, &dy.c, kernel, stride));
        CHECK_OK(g_gpu->avg_pool1d_backward(g_gpu, &dx.g, &dy.g, kernel, stride));
        expect_close(kernel == 2 ? "avg_pool1d_backward k2 s2" : "avg_pool1d_backward k3 s2", &dx,
                     TOL_F32);
        pair_free(&dx);
        pair_free(&dy);
    }
}

static void test_embedding_gather(void) {
    /* duplicates (several rows into one table row) and negative ids (skipped) */
    int32_t idv[40];
    for (int i = 0; i < 40; i++)
        idv[i] = (int32_t)ad_rng_below(&g_rng, 12) - 2;
    pair ids, dy, dtable;
    pair_ids(&ids, "ids", 1, S(40), idv);
    pair_make(&dy, "dy", AD_F32, 2, S(40, 300), 1.0f, 0.0f);
    pair_make(&dtable, "dtable", AD_F32, 2, S(50, 300), 1.0f, 0.0f);
    CHECK_OK(g_cpu->embedding_backward(g_cpu, &dtable.c, &dy.c, &ids.c));
    CHECK_OK(g_gpu->embedding_backward(g_gpu, &dtable.g, &dy.g, &ids.g));
    /* the same rows added in the same order: identical, not just close */
    expect_close("embedding_backward (dups, negatives)", &dtable, 0.0);

    void *b1, *b2;
    CHECK_OK(g_gpu->alloc(g_gpu, sizeof(float) * 50 * 300, &b1));
    CHECK_OK(g_gpu->alloc(g_gpu, sizeof(float) * 50 * 300, &b2));
    ad_tensor t1, t2;
    CHECK_OK(ad_tensor_init(&t1, b1, AD_F32, AD_DEVICE_CUDA, 2, S(50, 300), "dtable_1"));
    CHECK_OK(ad_tensor_init(&t2, b2, AD_F32, AD_DEVICE_CUDA, 2, S(50, 300), "dtable_2"));
    CHECK_OK(g_gpu->embedding_backward(g_gpu, &t1, &dy.g, &ids.g));
    CHECK_OK(g_gpu->embedding_backward(g_gpu, &t2, &dy.g, &ids.g));
    CHECK_MSG(same_bits(&t1, &t2), "embedding_backward differs between two runs");
    g_gpu->release(g_gpu, b1);
    g_gpu->release(g_gpu, b2);

    int32_t rowv[5] = {39, 0, 17, 17, 3};
    pair rows, dx;
    pair_ids(&rows, "rows", 1, S(5), rowv);
    pair_make(&dx, "dx", AD_F32, 2, S(5, 300), 1.0f, 0.0f);
    CHECK_OK(g_cpu->gather_rows(g_cpu, &dx.c, &dy.c, &rows.c));
    CHECK_OK(g_gpu->gather_rows(g_gpu, &dx.g, &dy.g, &rows.g));
    expect_close("gather_rows", &dx, 0.0);
    int32_t padv[5] = {-1, 0, -3, 17, -1}; /* rows scatter_rows skipped: zeros */
    pair pad;
    pair_ids(&pad, "padded rows", 1, S(5), padv);
    CHECK_OK(g_cpu->gather_rows(g_cpu, &dx.c, &dy.c, &pad.c));
    CHECK_OK(g_gpu->gather_rows(g_gpu, &dx.g, &dy.g, &pad.g));
    expect_close("gather_rows with negative rows", &dx, 0.0);
    pair_free(&pad);

    int32_t bad[40];
    memcpy(bad, idv, sizeof bad);
    bad[31] = 50;
    pair badids;
    pair_ids(&badids, "bad_ids", 1, S(40), bad);
    CHECK_FAILS_WITH(g_gpu->embedding_backward(g_gpu, &dtable.g, &dy.g, &badids.g),
                     "element 31 = 50");
    pair_free(&badids);
    pair_free(&ids);
    pair_free(&dy);
    pair_free(&dtable);
    pair_free(&rows);
    pair_free(&dx);
}

int main(void) {
    setup_backends(777);
    RUN(test_linear_backward);
    RUN(test_conv1d_backward);
    RUN(test_activation_backward);
    RUN(test_norm_backward);
    RUN(test_rope_backward);
    RUN(test_attention_backward);
    RUN(test_pool_backward);
    RUN(test_embedding_gather);
    teardown_backends();
    return test_report();
}
