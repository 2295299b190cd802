/* The CPU backend against PyTorch/transformers (tests/fixtures/ops/ops.safetensors, made by
 * tests/fixtures/make_op_fixtures.py): rope (Qwen2RotaryEmbedding, incl. positions ~32k),
 * attention (SDPA: causal + GQA + key lengths, KV-cache offset, bidirectional padded),
 * layernorm, Qwen2RMSNorm, gelu, silu*up, softmax, conv1d, avg_pool1d and linear.
 *
 * Tolerances: |got - want| <= atol + rtol * |want| per element. Ops that torch evaluates in
 * float32 with the same formula (rope, rmsnorm, gelu, silu, softmax, layernorm) agree to a few
 * float32 ulps: rtol 2e-6. Reductions against float64 references (attention, conv1d, linear)
 * differ by fp32 summation order: rtol 1e-5 with a small atol for values near zero. */
#include "backend/backend.h"
#include "io/safetensors.h"
#include "test.h"

static ad_backend *be;
static ad_safetensors st;
static float *owned[256];
static int n_owned;

/* An F32 tensor (copy) of fixture entry `name`, any stored float dtype. */
static void load(const char *name, ad_tensor *t) {
    const ad_st_entry *e = ad_safetensors_find(&st, name);
    CHECK_MSG(e != NULL, "fixture entry %s missing", name);
    if (!e) exit(1);
    ad_tensor tmp;
    CHECK_OK(ad_tensor_init(&tmp, NULL, AD_F32, AD_DEVICE_CPU, e->ndim, e->shape, e->name));
    float *buf = calloc((size_t)ad_tensor_numel(&tmp) + 1, sizeof(float));
    owned[n_owned++] = buf;
    CHECK_OK(ad_safetensors_read_f32(&st, name, e->ndim, e->shape, buf));
    CHECK_OK(ad_tensor_init(t, buf, AD_F32, AD_DEVICE_CPU, e->ndim, e->shape, e->name));
}

static void load_i32(const char *name, ad_tensor *t) {
    const ad_st_entry *e = ad_safetensors_find(&st, name);
    CHECK_MSG(e != NULL && e->dtype == AD_I32, "fixture entry %s missing or not I32", name);
    if (!e) exit(1);
    CHECK_OK(ad_safetensors_view(&st, e, t));
}

/* A zeroed F32 tensor shaped like `like`. */
static void zeros_like(const ad_tensor *like, ad_tensor *t, const char *name) {
    float *buf = calloc((size_t)ad_tensor_numel(like) + 1, sizeof(float));
    owned[n_owned++] = buf;
    CHECK_OK(ad_tensor_init(t, buf, AD_F32, AD_DEVICE_CPU, like->ndim, like->shape, name));
}

static void compare(const char *what, const ad_tensor *got, const ad_tensor *want, double rtol,
                    double atol) {
    CHECK_MSG(ad_tensor_numel(got) == ad_tensor_numel(want), "%s: sizes differ", what);
    const float *g = got->data, *w = want->data;
    double worst = 0, max_abs = 0;
    int64_t at = 0, n = ad_tensor_numel(want);
    for (int64_t i = 0; i < n; i++) {
        double err = fabs((double)g[i] - w[i]), ratio = err / (atol + rtol * fabs((double)w[i]));
        if (!(ratio <= worst)) worst = ratio, at = i;
        if (err > max_abs) max_abs = err;
    }
    printf("  %-18s max abs err %.3g, worst err/tol %.3f\n", what, max_abs, worst);
    CHECK_MSG(worst <= 1.0, "%s: element %lld is %.9g, torch says %.9g (rtol %g, atol %g)", what,
              (long long)at, (double)g[at], (double)w[at], rtol, atol);
}

static void test_rope(const char *name, double atol) {
    char key[64];
    ad_tensor x, pos, y, params;
    snprintf(key, sizeof key, "%s.x", name);
    load(key, &x);
    snprintf(key, sizeof key, "%s.positions", name);
    load_i32(key, &pos);
    snprintf(key, sizeof key, "%s.y", name);
    load(key, &y);
    snprintf(key, sizeof key, "%s.params", name);
    load(key, &params);
    const float *p = params.data;
    CHECK_OK(be->rope(be, &x, &x, &pos, (int)p[0], (int)p[1], p[2]));
    compare(name, &x, &y, 2e-6, atol);
}

static void test_attention(const char *name) {
    char key[64];
    ad_tensor q, k, v, want, params, key_len, out;
    snprintf(key, sizeof key, "%s.q", name);
    load(key, &q);
    snprintf(key, sizeof key, "%s.k", name);
    load(key, &k);
    snprintf(key, sizeof key, "%s.v", name);
    load(key, &v);
    snprintf(key, sizeof key, "%s.out", name);
    load(key, &want);
    snprintf(key, sizeof key, "%s.params", name);
    load(key, &params);
    const float *p = params.data;
    ad_attention_params ap = {.n_heads = (int)p[0],
                              .n_kv_heads = (int)p[1],
                              .head_dim = (int)p[2],
                              .causal = p[3] != 0,
                              .q_offset = (int)p[4],
                              .scale = p[5]};
    snprintf(key, sizeof key, "%s.key_len", name);
    if (ad_safetensors_find(&st, key)) {
        load_i32(key, &key_len);
        ap.key_len = key_len.data;
    }
    zeros_like(&want, &out, "out");
    CHECK_OK(be->attention(be, &out, &q, &k, &v, &ap));
    compare(name, &out, &want, 1e-5, 1e-6);
}

static void test_norms_and_activations(void) {
    ad_tensor x, w, b, y, out;
    load("layernorm.x", &x);
    load("layernorm.w", &w);
    load("layernorm.b", &b);
    load("layernorm.y", &y);
    zeros_like(&y, &out, "out");
    CHECK_OK(be->layernorm(be, &out, &x, &w, &b, 1e-5f));
    /* torch's float32 layernorm rounds its mean/rstd; ours are double: a few ulps apart. */
    compare("layernorm", &out, &y, 4e-6, 1e-6);

    load("rmsnorm.x", &x);
    load("rmsnorm.w", &w);
    load("rmsnorm.y", &y);
    zeros_like(&y, &out, "out");
    CHECK_OK(be->rmsnorm(be, &out, &x, &w, 1e-6f));
    compare("rmsnorm", &out, &y, 2e-6, 1e-7);

    load("gelu.x", &x);
    load("gelu.y", &y);
    zeros_like(&y, &out, "out");
    CHECK_OK(be->gelu(be, &out, &x));
    compare("gelu", &out, &y, 2e-6, 1e-7);

    ad_tensor u;
    load("silu_mul.gate", &x);
    load("silu_mul.up", &u);
    load("silu_mul.y", &y);
    zeros_like(&y, &out, "out");
    CHECK_OK(be->silu_mul(be, &out, &x, &u));
    compare("silu_mul", &out, &y, 2e-6, 1e-7);

    load("softmax.x", &x);
    load("softmax.y", &y);
    zeros_like(&y, &out, "out");
    CHECK_OK(be->softmax(be, &out, &x));
    compare("softmax", &out, &y, 2e-6, 1e-9);
}

static void test_conv_pool_linear(void) {
    ad_tensor x, w, b, y, out;
    load("conv1d.x", &x);
    load("conv1d.w", &w);
    load("conv1d.b", &b);
    load("conv1d.y", &y);
    zeros_like(&y, &out, "out");
    CHECK_OK(be->conv1d(be, &out, &x, &w, &b, 2, 1));
    compare("conv1d", &out, &y, 1e-5, 1e-6);

    load("avg_pool1d.x", &x);
    load("avg_pool1d.y", &y);
    zeros_like(&y, &out, "out");
    CHECK_OK(be->avg_pool1d(be, &out, &x, 2, 2));
    compare("avg_pool1d", &out, &y, 1e-6, 1e-7);

    load("linear.x", &x);
    load("linear.w", &w);
    load("linear.b", &b);
    load("linear.y", &y);
    zeros_like(&y, &out, "out");
    CHECK_OK(be->linear(be, &out, &x, &w, &b));
    compare("linear", &out, &y, 1e-5, 1e-6);
}

int main(void) {
    CHECK_OK(ad_backend_cpu_create(&be, 2));
    if (ad_safetensors_open(&st, AUDISTILL_FIXTURES "/ops/ops.safetensors") < 0) {
        fprintf(stderr, "%s\n", ad_error());
        return 1;
    }
    RUN(test_norms_and_activations);
    test_current = "rope";
    test_rope("rope_small", 1e-7);
    test_rope("rope_qwen2audio", 1e-7);
    /* theta 1e6, head_dim 128: torch's (AVX-512) pow rounds inv_freq[37] one ulp away from
     * the correctly rounded value we use; at position ~32k that moves the angle by ~1e-6. */
    test_rope("rope_long", 4e-6);
    test_current = "attention";
    test_attention("attn_causal_gqa");
    test_attention("attn_offset");
    test_attention("attn_bidir");
    RUN(test_conv_pool_linear);
    for (int i = 0; i < n_owned; i++)
        free(owned[i]);
    ad_safetensors_close(&st);
    ad_backend_destroy(be);
    return test_report();
}
