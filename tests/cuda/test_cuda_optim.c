/* The CUDA optimizer functions and the quantized matmul against their host references: the
 * AdamW step against ad_adamw_step (src/train/optim.c; 1e-6 normwise, the same float formula
 * where only FMA contraction may differ), the global gradient norm against ad_grad_norm
 * (1e-12 relative, both in double) and its run-to-run bits, and ad_cuda_quant_linear against
 * ad_quant_dequantize_rows + the CPU linear for 8/4/3/2-bit codes, symmetric and zero-point
 * (TOL_F32 with f32 activations, TOL_BF16 with bf16), and the same weights as AD_QGROUP tensors
 * (as a loaded model holds them) through the table's linear and embedding against the CPU
 * backend's quantized paths; and the op table's optimizer ops
 * (sum_squares, scale, adamw: what `train.optimizer: device` runs) against the CPU backend's,
 * plus their argument checks. Skips without a GPU. */
#include "compress/quant.h"
#include "cuda_test_util.h"
#include "train/optim.h"

#define S(...)   ((const int64_t[]){__VA_ARGS__})
#define ADAM_TOL 1e-6

static float *to_device(const void *host, size_t bytes) {
    void *d = NULL;
    CHECK_OK(ad_cuda_malloc(&d, bytes ? bytes : 1));
    if (bytes) CHECK_OK(ad_cuda_memcpy_h2d(d, host, bytes));
    return d;
}

static double normwise(const float *ref, const float *got, int64_t n) {
    double diff = 0, mag = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) return INFINITY;
        diff = fmax(diff, fabs((double)ref[i] - got[i]));
        mag = fmax(mag, fabs((double)ref[i]));
    }
    return mag > 0 ? diff / mag : diff;
}

/* One step on flat buffers against the host update. grad_scale != 1: clipping fused into the
 * step, against the host's scale pass then update (the same float product, so the same bits).
 * with_bf16: the step also writes the bf16 copy of the weights, which must equal the updated
 * f32 weights rounded to nearest even. */
static void one_adamw(bool decay, int64_t t, float grad_scale, bool with_bf16) {
    const int64_t n = 100003;
    float *host[4], *dev[4], *back = malloc(sizeof(float) * (size_t)n);
    for (int k = 0; k < 4; k++) {
        host[k] = malloc(sizeof(float) * (size_t)n);
        for (int64_t i = 0; i < n; i++) {
            float v = ad_rng_normal(&g_rng);
            host[k][i] = k == 3 ? v * v * 1e-3f : (k == 2 ? v * 1e-2f : v); /* v >= 0 */
        }
        dev[k] = to_device(host[k], sizeof(float) * (size_t)n);
    }
    uint16_t *w16 = NULL, *w16_back = malloc(sizeof(uint16_t) * (size_t)n);
    if (with_bf16) CHECK_OK(ad_cuda_malloc((void **)&w16, sizeof(uint16_t) * (size_t)n));
    ad_param_ref ref = {"w", host[0], host[1], host[2], host[3], n, decay};
    ad_adamw_config cfg = {0.9, 0.999, 1e-8, 0.1};
    ad_scale_f32(host[1], n, grad_scale);
    ad_adamw_step(&ref, 1, &cfg, 1e-3, t);
    CHECK_OK(ad_cuda_adamw_step(dev[0], dev[1], dev[2], dev[3], n, 1e-3, 0.9, 0.999, 1e-8, 0.1,
                                decay, t, grad_scale, w16));
    const char *names[4] = {"param", "grad", "m", "v"};
    for (int k = 0; k < 4; k++) {
        if (k == 1) continue;
        CHECK_OK(ad_cuda_memcpy_d2h(back, dev[k], sizeof(float) * (size_t)n));
        const double err = normwise(host[k], back, n);
        printf("  adamw %-6s decay %d step %lld scale %.2f err %.3g (tol %.0e)\n", names[k], decay,
               (long long)t, grad_scale, err, ADAM_TOL);
        CHECK_MSG(err <= ADAM_TOL, "adamw %s: error %.3g", names[k], err);
    }
    if (with_bf16) {
        CHECK_OK(ad_cuda_memcpy_d2h(back, dev[0], sizeof(float) * (size_t)n));
        CHECK_OK(ad_cuda_memcpy_d2h(w16_back, w16, sizeof(uint16_t) * (size_t)n));
        int64_t wrong = 0;
        for (int64_t i = 0; i < n; i++)
            wrong += w16_back[i] != ad_f32_to_bf16(back[i]);
        CHECK_MSG(wrong == 0, "adamw bf16 copy: %lld of %lld differ from the rounded weights",
                  (long long)wrong, (long long)n);
        ad_cuda_free(w16);
    }
    for (int k = 0; k < 4; k++) {
        free(host[k]);
        ad_cuda_free(dev[k]);
    }
    free(back), free(w16_back);
}

static void test_adamw(void) {
    one_adamw(true, 1, 1.0f, false);
    one_adamw(false, 7, 1.0f, false);
    one_adamw(true, 3, 0.37f, true);
    /* not a positive finite scale: refused */
    float *d;
    CHECK_OK(ad_cuda_malloc((void **)&d, sizeof(float) * 4));
    CHECK_FAILS_WITH(
        ad_cuda_adamw_step(d, d, d, d, 4, 1e-3, 0.9, 0.999, 1e-8, 0.0, false, 1, NAN, NULL),
        "gradient scale");
    ad_cuda_free(d);
}

static void test_grad_norm(void) {
    const int64_t sizes[3] = {1000, 300001, 7};
    float *host[3], *dev[3];
    ad_param_ref refs[3];
    memset(refs, 0, sizeof refs);
    for (int k = 0; k < 3; k++) {
        host[k] = malloc(sizeof(float) * (size_t)sizes[k]);
        for (int64_t i = 0; i < sizes[k]; i++)
            host[k][i] = ad_rng_normal(&g_rng) * (float)(k + 1);
        dev[k] = to_device(host[k], sizeof(float) * (size_t)sizes[k]);
        refs[k].grad = host[k];
        refs[k].n = sizes[k];
    }
    const double want = ad_grad_norm(refs, 3);
    double got = 0, again = 0;
    CHECK_OK(ad_cuda_grad_norm(dev, sizes, 3, &got));
    CHECK_OK(ad_cuda_grad_norm(dev, sizes, 3, &again));
    printf("  grad norm %.15g (cuda) %.15g (cpu)\n", got, want);
    CHECK_MSG(fabs(got - want) <= 1e-12 * want, "grad norm %.17g vs %.17g", got, want);
    CHECK_MSG(memcmp(&got, &again, sizeof got) == 0, "grad norm differs between two runs");
    CHECK_OK(ad_cuda_scale(dev[1], sizes[1], 0.5f));
    double halved = 0;
    CHECK_OK(ad_cuda_sum_squares(dev[1], sizes[1], &halved));
    double full = 0;
    for (int64_t i = 0; i < sizes[1]; i++)
        full += (double)host[1][i] * host[1][i];
    CHECK_MSG(fabs(halved - 0.25 * full) <= 1e-12 * full, "scale: %.17g vs %.17g", halved,
              0.25 * full);
    for (int k = 0; k < 3; k++) {
        free(host[k]);
        ad_cuda_free(dev[k]);
    }
}

/* The op table's optimizer ops, CUDA against the CPU backend (which is the host optimizer). */
static void test_optimizer_ops(void) {
    const int64_t shape[2] = {317, 129};
    pair w, g, m, v;
    pair_make(&w, "w", AD_F32, 2, shape, 1.0f, 0.0f);
    pair_make(&g, "g", AD_F32, 2, shape, 3.0f, 0.0f);
    pair_make(&m, "m", AD_F32, 2, shape, 1e-2f, 0.0f);
    pair_make(&v, "v", AD_F32, 2, shape, 0.0f, 1e-3f); /* v >= 0 */
    double sc, sg;
    const ad_tensor *gc = &g.c, *gg = &g.g;
    CHECK_OK(g_cpu->sum_squares(g_cpu, &gc, 1, &sc));
    CHECK_OK(g_gpu->sum_squares(g_gpu, &gg, 1, &sg));
    printf("  sum_squares %.15g (cuda) %.15g (cpu)\n", sg, sc);
    CHECK_MSG(fabs(sg - sc) <= 1e-12 * sc, "sum_squares %.17g vs %.17g", sg, sc);
    /* A list (what the trainer passes: every gradient, one copy back), a NULL entry giving 0. */
    const ad_tensor *lc[4] = {&w.c, &g.c, NULL, &m.c}, *lg[4] = {&w.g, &g.g, NULL, &m.g};
    double oc[4], og[4] = {-1, -1, -1, -1};
    CHECK_OK(g_cpu->sum_squares(g_cpu, lc, 4, oc));
    CHECK_OK(g_gpu->sum_squares(g_gpu, lg, 4, og));
    for (int i = 0; i < 4; i++)
        CHECK_MSG(fabs(og[i] - oc[i]) <= 1e-12 * oc[i], "sum_squares list [%d]: %.17g vs %.17g", i,
                  og[i], oc[i]);
    CHECK_MSG(og[2] == 0.0 && og[1] == sg, "list [2] %g (want 0), list [1] %.17g vs %.17g alone",
              og[2], og[1], sg);
    CHECK_OK(g_cpu->scale(g_cpu, &g.c, 0.37f));
    CHECK_OK(g_gpu->scale(g_gpu, &g.g, 0.37f));
    expect_close("scale", &g, 0.0);
    for (int64_t t = 1; t <= 3; t++) {
        const ad_adamw_params p = {1e-3, 0.9, 0.999, 1e-8, 0.1, t != 2, t, 1.0f};
        CHECK_OK(g_cpu->adamw(g_cpu, &w.c, &g.c, &m.c, &v.c, &p, NULL));
        CHECK_OK(g_gpu->adamw(g_gpu, &w.g, &g.g, &m.g, &v.g, &p, NULL));
    }
    expect_close("adamw weights after 3 steps", &w, ADAM_TOL);
    expect_close("adamw exp_avg", &m, ADAM_TOL);
    expect_close("adamw exp_avg_sq", &v, ADAM_TOL);
    /* clipping fused (grad_scale) against the CPU op's scale pass then step */
    {
        CHECK_OK(g_cpu->scale(g_cpu, &g.c, 0.61f)); /* the GPU's g stays unscaled */
        const ad_adamw_params plain = {1e-3, 0.9, 0.999, 1e-8, 0.1, true, 4, 0.0f};
        const ad_adamw_params fused = {1e-3, 0.9, 0.999, 1e-8, 0.1, true, 4, 0.61f};
        CHECK_OK(g_cpu->adamw(g_cpu, &w.c, &g.c, &m.c, &v.c, &plain, NULL));
        CHECK_OK(g_gpu->adamw(g_gpu, &w.g, &g.g, &m.g, &v.g, &fused, NULL));
        expect_close("adamw with the clip fused (grad_scale 0.61)", &w, ADAM_TOL);
        expect_close("adamw exp_avg, clip fused", &m, ADAM_TOL);
    }
    /* The bf16 working copy written in the step (a student computing in bf16 from fp32
     * masters): on both backends it is the updated master rounded to nearest even, bit for bit,
     * and the master itself moves exactly as without the copy. */
    pair b;
    pair_make(&b, "bf16_w", AD_BF16, 2, shape, 1.0f, 0.0f);
    {
        const ad_adamw_params p = {1e-3, 0.9, 0.999, 1e-8, 0.1, true, 5, 0.8f};
        pair w2, m2, v2;
        pair_make(&w2, "w2", AD_F32, 2, shape, 1.0f, 0.0f);
        pair_make(&m2, "m2", AD_F32, 2, shape, 1e-2f, 0.0f);
        pair_make(&v2, "v2", AD_F32, 2, shape, 0.0f, 1e-3f);
        CHECK_OK(g_gpu->download(g_gpu, &g.c, &g.g)); /* the CPU's was scaled above */
        /* the same start on both sides for the run without the copy */
        CHECK_OK(g_gpu->copy(g_gpu, &w2.g, &w.g));
        CHECK_OK(g_gpu->copy(g_gpu, &m2.g, &m.g));
        CHECK_OK(g_gpu->copy(g_gpu, &v2.g, &v.g));
        ad_tensor b16c; /* the CPU side of the copy: a host bf16 tensor */
        uint16_t *host16 = malloc(sizeof(uint16_t) * (size_t)(shape[0] * shape[1]));
        CHECK_OK(ad_tensor_init(&b16c, host16, AD_BF16, AD_DEVICE_CPU, 2, shape, "bf16_w"));
        CHECK_OK(g_cpu->adamw(g_cpu, &w.c, &g.c, &m.c, &v.c, &p, &b16c));
        CHECK_OK(g_gpu->adamw(g_gpu, &w.g, &g.g, &m.g, &v.g, &p, &b.g));
        CHECK_OK(g_gpu->adamw(g_gpu, &w2.g, &g.g, &m2.g, &v2.g, &p, NULL));
        expect_close("adamw with a bf16 copy: weights", &w, ADAM_TOL);
        const int64_t n = shape[0] * shape[1];
        float *gw = malloc(sizeof(float) * (size_t)n), *gw2 = malloc(sizeof(float) * (size_t)n);
        uint16_t *g16 = malloc(sizeof(uint16_t) * (size_t)n);
        ad_tensor h;
        CHECK_OK(ad_tensor_init(&h, gw, AD_F32, AD_DEVICE_CPU, 2, shape, "w"));
        CHECK_OK(g_gpu->download(g_gpu, &h, &w.g));
        CHECK_OK(ad_tensor_init(&h, gw2, AD_F32, AD_DEVICE_CPU, 2, shape, "w2"));
        CHECK_OK(g_gpu->download(g_gpu, &h, &w2.g));
        CHECK_OK(ad_cuda_memcpy_d2h(g16, b.g.data, sizeof(uint16_t) * (size_t)n));
        int64_t wrong_gpu = 0, wrong_cpu = 0, moved = 0;
        for (int64_t i = 0; i < n; i++) {
            wrong_gpu += g16[i] != ad_f32_to_bf16(gw[i]);
            wrong_cpu += host16[i] != ad_f32_to_bf16(((const float *)w.c.data)[i]);
            moved += memcmp(&gw[i], &gw2[i], sizeof(float)) != 0;
        }
        printf("  adamw bf16 copy: %lld (cuda) and %lld (cpu) of %lld differ from the rounded "
               "masters; %lld masters differ from a step without the copy\n",
               (long long)wrong_gpu, (long long)wrong_cpu, (long long)n, (long long)moved);
        CHECK_MSG(wrong_gpu == 0 && wrong_cpu == 0 && moved == 0,
                  "adamw bf16 copy: %lld / %lld wrong, %lld masters moved", (long long)wrong_gpu,
                  (long long)wrong_cpu, (long long)moved);
        /* the copy must be BF16, of w's shape, and not w itself */
        CHECK_FAILS_WITH(g_gpu->adamw(g_gpu, &w.g, &g.g, &m.g, &v.g, &p, &w2.g), "BF16");
        CHECK_FAILS_WITH(g_cpu->adamw(g_cpu, &w.c, &g.c, &m.c, &v.c, &p, &w2.c), "BF16");
        ad_tensor short_b;
        CHECK_OK(ad_tensor_slice(&b.g, 0, 0, 5, &short_b));
        CHECK_MSG(g_gpu->adamw(g_gpu, &w.g, &g.g, &m.g, &v.g, &p, &short_b) < 0,
                  "adamw accepted a bf16 copy of another shape");
        ad_tensor alias = w.g;
        alias.dtype = AD_BF16;
        CHECK_FAILS_WITH(g_gpu->adamw(g_gpu, &w.g, &g.g, &m.g, &v.g, &p, &alias), "overlaps");
        free(gw), free(gw2), free(g16), free(host16);
        pair_free(&w2), pair_free(&m2), pair_free(&v2);
    }
    /* a shape mismatch and a bf16 tensor are refused by name */
    const ad_adamw_params p = {1e-3, 0.9, 0.999, 1e-8, 0.0, false, 1, 1.0f};
    CHECK_MSG(g_gpu->adamw(g_gpu, &b.g, &g.g, &m.g, &v.g, &p, NULL) < 0 &&
                  strstr(ad_error(), "bf16_w"),
              "adamw accepted a bf16 weight: %s", ad_error());
    ad_tensor short_g;
    CHECK_OK(ad_tensor_slice(&g.g, 0, 0, 5, &short_g));
    CHECK_MSG(g_gpu->adamw(g_gpu, &w.g, &short_g, &m.g, &v.g, &p, NULL) < 0,
              "adamw accepted gradients of another shape");
    pair_free(&b);
    pair_free(&w), pair_free(&g), pair_free(&m), pair_free(&v);
}

static void one_quant(int bits, bool symmetric, ad_dtype xdt) {
    const int64_t N = 40, K = 128, M = 5;
    ad_quant_spec spec = {bits, 32, symmetric};
    ad_quant_tensor q;
    CHECK_OK(ad_quant_alloc(&q, &spec, N, K, "w"));
    float *w = malloc(sizeof(float) * (size_t)(N * K));
    for (int64_t i = 0; i < N * K; i++)
        w[i] = ad_rng_normal(&g_rng) * 0.1f + 0.01f;
    CHECK_OK(ad_quant_rtn(&q, w));
    pair wd, x, y, bias;
    pair_make(&wd, "w_dequantized", AD_F32, 2, S(N, K), 1.0f, 0.0f);
    ad_quant_dequantize_rows(&q, 0, N, wd.cbuf);
    pair_make(&x, "x", xdt, 2, S(M, K), 1.0f, 0.0f);
    pair_make(&y, "y", xdt, 2, S(M, N), 1.0f, 0.0f);
    pair_make(&bias, "bias", xdt, 1, S(N), 1.0f, 0.0f);
    CHECK_OK(g_cpu->linear(g_cpu, &y.c, &x.c, &wd.c, &bias.c));
    const int64_t groups = N * (K / spec.group_size);
    ad_cuda_quant_weight qw = {spec, N, K, NULL, NULL, NULL};
    qw.codes = (const uint8_t *)to_device(q.codes, (size_t)(N * ad_quant_row_bytes(&spec, K)));
    qw.scales = (const uint16_t *)to_device(q.scales, sizeof(uint16_t) * (size_t)groups);
    if (!symmetric) qw.zeros = (const uint8_t *)to_device(q.zeros, (size_t)groups);
    CHECK_OK(ad_cuda_quant_linear(g_gpu, &y.g, &x.g, &qw, &bias.g));
    char what[96];
    snprintf(what, sizeof what, "quant_linear %d-bit %s", bits, symmetric ? "sym" : "zero-point");
    expect_close(what, &y, xdt == AD_F32 ? TOL_F32 : TOL_BF16);

    /* The same weight as a model holds it (an AD_QGROUP tensor, parts on its device) through
     * the table's linear and embedding, against the CPU backend's own quantized paths. */
    ad_quant_tensor dq = {
        spec, N, K, (uint8_t *)qw.codes, (uint16_t *)qw.scales, (uint8_t *)qw.zeros};
    ad_tensor wq_c, wq_g;
    CHECK_OK(ad_tensor_init(&wq_c, q.codes, AD_QGROUP, AD_DEVICE_CPU, 2, S(N, K), "wq"));
    wq_c.quant = &q;
    CHECK_OK(ad_tensor_init(&wq_g, dq.codes, AD_QGROUP, AD_DEVICE_CUDA, 2, S(N, K), "wq"));
    wq_g.quant = &dq;
    CHECK_OK(g_cpu->linear(g_cpu, &y.c, &x.c, &wq_c, &bias.c));
    CHECK_OK(g_gpu->linear(g_gpu, &y.g, &x.g, &wq_g, &bias.g));
    snprintf(what, sizeof what, "linear, AD_QGROUP %d-bit %s", bits, symmetric ? "sym" : "zp");
    expect_close(what, &y, xdt == AD_F32 ? TOL_F32 : TOL_BF16);
    const int32_t idv[7] = {3, 0, 39, 3, 17, 22, 38};
    pair ids, e;
    pair_ids(&ids, "ids", 1, S(7), idv);
    pair_make(&e, "e", xdt, 2, S(7, K), 1.0f, 0.0f);
    CHECK_OK(g_cpu->embedding(g_cpu, &e.c, &wq_c, &ids.c));
    CHECK_OK(g_gpu->embedding(g_gpu, &e.g, &wq_g, &ids.g));
    snprintf(what, sizeof what, "embedding, AD_QGROUP %d-bit %s", bits, symmetric ? "sym" : "zp");
    expect_close(what, &e, xdt == AD_F32 ? 0.0 : TOL_BF16);
    const int32_t bad[2] = {5, 40};
    pair badids;
    pair_ids(&badids, "bad_ids", 1, S(2), bad);
    ad_tensor e2;
    CHECK_OK(ad_tensor_slice(&e.g, 0, 0, 2, &e2));
    CHECK_FAILS_WITH(g_gpu->embedding(g_gpu, &e2, &wq_g, &badids.g), "element 1 = 40");
    pair_free(&badids), pair_free(&ids), pair_free(&e);

    ad_cuda_free((void *)qw.codes);
    ad_cuda_free((void *)qw.scales);
    ad_cuda_free((void *)qw.zeros);
    ad_quant_free(&q);
    free(w);
    pair_free(&wd);
    pair_free(&x);
    pair_free(&y);
    pair_free(&bias);
}

static void test_quant_linear(void) {
    const int bits[4] = {8, 4, 3, 2};
    for (int i = 0; i < 4; i++) {
        one_quant(bits[i], false, AD_F32);
        one_quant(bits[i], true, AD_F32);
    }
    one_quant(4, false, AD_BF16);
}

int main(void) {
    setup_backends(99);
    RUN(test_adamw);
    RUN(test_grad_norm);
    RUN(test_optimizer_ops);
    RUN(test_quant_linear);
    teardown_backends();
    return test_report();
}
