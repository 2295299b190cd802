/* The optimizer against torch and transformers (fixtures from
 * tests/fixtures/make_optim_fixtures.py): schedules equal transformers' LambdaLR multipliers
 * exactly at every step of five shapes; 20 steps of accumulation over 3 micro-batches +
 * clip_grad_norm_ + AdamW (two groups) under four schedules reproduce torch's parameters
 * within 1e-6 relative (|got - want| <= 1e-6 * max(|want|, 1): parameters are O(1) randn);
 * results are bit-identical for 1, 2 and 3 threads; bad arena tables are refused. */
#include <cjson/cJSON.h>
#include <omp.h>

#include "io/file.h"
#include "io/safetensors.h"
#include "test.h"
#include "train/optim.h"

enum { N_T = 5, NUMEL = 42 + 72 + 12 + 6 + 42, STEPS = 20, ACCUM = 3 };

/* The fixture's SHAPES, in arena order. */
static const ad_param_slot SLOTS[N_T] = {
    {"model.embed_tokens.weight", 0, 42, 2, {7, 6}},
    {"model.layers.0.mlp.up_proj.weight", 42, 72, 2, {12, 6}},
    {"model.layers.0.mlp.up_proj.bias", 114, 12, 1, {12}},
    {"model.layers.0.input_layernorm.weight", 126, 6, 1, {6}},
    {"lm_head.weight", 132, 42, 2, {7, 6}},
};

static ad_safetensors fx;

static void get(const char *name, float *dst, int64_t n) {
    int64_t shape[1] = {n};
    CHECK_MSG(ad_safetensors_read_f32(&fx, name, 1, shape, dst) == AD_OK, "%s", ad_error());
}

static void test_schedules_exact(void) {
    char *text;
    size_t len;
    if (ad_read_file(AUDISTILL_FIXTURES "/optim/schedules.json", 1 << 20, &text, &len) < 0) {
        CHECK_MSG(0, "%s", ad_error());
        return;
    }
    cJSON *all = cJSON_Parse(text);
    free(text);
    CHECK(cJSON_IsArray(all) && cJSON_GetArraySize(all) == 20);
    int compared = 0, exact = 0;
    double worst = 0;
    const cJSON *s;
    cJSON_ArrayForEach(s, all) {
        const char *kind = cJSON_GetObjectItem(s, "kind")->valuestring;
        ad_schedule sch = {!strcmp(kind, "linear")     ? AD_SCHEDULE_LINEAR
                           : !strcmp(kind, "constant") ? AD_SCHEDULE_CONSTANT
                                                       : AD_SCHEDULE_COSINE,
                           1.0, (int64_t)cJSON_GetObjectItem(s, "warmup")->valuedouble,
                           (int64_t)cJSON_GetObjectItem(s, "total")->valuedouble,
                           cJSON_GetObjectItem(s, "min_ratio")->valuedouble};
        int step = 0;
        const cJSON *want;
        cJSON_ArrayForEach(want, cJSON_GetObjectItem(s, "lr")) {
            const double got = ad_schedule_lr(&sch, step);
            exact += got == want->valuedouble;
            worst = fmax(worst, fabs(got - want->valuedouble));
            CHECK_MSG(fabs(got - want->valuedouble) <= 1e-15,
                      "%s warmup %lld total %lld step %d: "
                      "%.17g vs %.17g",
                      kind, (long long)sch.warmup, (long long)sch.total, step, got,
                      want->valuedouble);
            step++, compared++;
        }
    }
    printf("schedules: %d/%d learning rates bit-identical to transformers, worst |diff| %.3g\n",
           exact, compared, worst);
    cJSON_Delete(all);
}

static void trajectory(const char *kind, ad_schedule_kind sk, double min_ratio) {
    static float param[NUMEL], grad[NUMEL], m[NUMEL], v[NUMEL], micro[NUMEL], want[NUMEL];
    char name[96];
    memset(m, 0, sizeof m), memset(v, 0, sizeof v);
    snprintf(name, sizeof name, "%s.init", kind), get(name, param, NUMEL);
    ad_param_ref p[N_T];
    CHECK_OK(ad_param_refs_from_arena(SLOTS, N_T, NUMEL, param, grad, m, v, NULL, NULL, p));
    /* the groups the fixture gave torch: decay on matrices only */
    for (int i = 0; i < N_T; i++)
        CHECK_MSG(p[i].decay == (SLOTS[i].ndim >= 2 && !strstr(SLOTS[i].name, "norm")), "%s",
                  SLOTS[i].name);
    const ad_adamw_config c = {0.9, 0.98, 1e-8, 0.1};
    const ad_schedule s = {sk, 2e-2, 4, STEPS, min_ratio};
    double worst = 0, worst_norm = 0;
    int clipped = 0;
    for (int step = 0; step < STEPS; step++) {
        ad_grad_zero(p, N_T);
        for (int k = 0; k < ACCUM; k++) {
            snprintf(name, sizeof name, "%s.%d.micro%d", kind, step, k), get(name, micro, NUMEL);
            for (int e = 0; e < NUMEL; e++)
                grad[e] += micro[e];
        }
        ad_grad_scale(p, N_T, 1.0 / ACCUM);
        const double norm = ad_clip_grad_norm(p, N_T, 1.0);
        float x;
        snprintf(name, sizeof name, "%s.%d.norm", kind, step), get(name, &x, 1);
        /* torch sums in float32, we in double */
        worst_norm = fmax(worst_norm, fabs(norm - x) / x);
        CHECK_MSG(fabs(norm - x) <= 2e-6 * x, "%s step %d: norm %.9g vs %.9g", kind, step, norm, x);
        clipped += norm > 1.0;
        const double lr = ad_schedule_lr(&s, step);
        snprintf(name, sizeof name, "%s.%d.lr", kind, step), get(name, &x, 1);
        CHECK_MSG(fabs(lr - x) <= 1e-7 * fabs(x) + 1e-12, "%s step %d: lr %.9g vs %.9g", kind, step,
                  lr, x);
        ad_adamw_step(p, N_T, &c, lr, step + 1);
        snprintf(name, sizeof name, "%s.%d.param", kind, step), get(name, want, NUMEL);
        for (int e = 0; e < NUMEL; e++)
            worst = fmax(worst, fabs(param[e] - want[e]) / fmax(fabs(want[e]), 1.0));
    }
    CHECK_MSG(clipped > 0 && clipped < STEPS, "%s: clipping active in %d of %d steps", kind,
              clipped, STEPS);
    CHECK_MSG(worst <= 1e-6, "%s: worst relative parameter error %.3g over %d steps", kind, worst,
              STEPS);
    printf("%s: 20 steps, clipping in %d; worst relative parameter error %.3g, norm %.3g\n", kind,
           clipped, worst, worst_norm);
}

static void test_trajectories(void) {
    trajectory("cosine", AD_SCHEDULE_COSINE, 0.0);
    trajectory("cosine_min", AD_SCHEDULE_COSINE, 0.1);
    trajectory("linear", AD_SCHEDULE_LINEAR, 0.0);
    trajectory("constant", AD_SCHEDULE_CONSTANT, 0.0);
}

/* Sum of squares in long double, one element at a time: an independent reference. */
static double slow_norm(const float *g, int64_t n) {
    long double s = 0;
    for (int64_t i = 0; i < n; i++)
        s += (long double)g[i] * g[i];
    return (double)sqrtl(s);
}

static void test_threads_do_not_matter(void) {
    /* tensors larger than a norm chunk, so the parallel paths run */
    enum { N = 3 * AD_OPTIM_NORM_CHUNK + 12345, T = 3 };
    const ad_param_slot slots[T] = {{"a.weight", 0, 1000, 2, {10, 100}},
                                    {"b.weight", 1000, N - 1100, 1, {N - 1100}},
                                    {"c.norm.weight", N - 100, 100, 1, {100}}};
    float *w0 = malloc(sizeof(float) * N), *g0 = malloc(sizeof(float) * N);
    float *w[3], *g[3], *mm[3], *vv[3];
    double norms[3];
    for (int i = 0; i < N; i++)
        w0[i] = sinf((float)i), g0[i] = cosf((float)i * 0.37f) * (1.0f + (float)(i % 7));
    for (int r = 0; r < 3; r++) {
        w[r] = malloc(sizeof(float) * N), g[r] = malloc(sizeof(float) * N);
        mm[r] = calloc(N, sizeof(float)), vv[r] = calloc(N, sizeof(float));
        memcpy(w[r], w0, sizeof(float) * N), memcpy(g[r], g0, sizeof(float) * N);
        ad_param_ref p[T];
        CHECK_OK(ad_param_refs_from_arena(slots, T, N, w[r], g[r], mm[r], vv[r], NULL, NULL, p));
        omp_set_num_threads(r + 1);
        const ad_adamw_config c = {0.9, 0.999, 1e-8, 0.01};
        for (int t = 1; t <= 3; t++) {
            norms[r] = ad_clip_grad_norm(p, T, 10.0);
            ad_adamw_step(p, T, &c, 1e-3, t);
        }
    }
    for (int r = 1; r < 3; r++)
        CHECK_MSG(norms[r] == norms[0] && !memcmp(w[r], w[0], sizeof(float) * N) &&
                      !memcmp(mm[r], mm[0], sizeof(float) * N) &&
                      !memcmp(vv[r], vv[0], sizeof(float) * N),
                  "%d threads differ from 1", r + 1);
    /* the norm itself against an element-by-element long-double sum (first step's gradients) */
    ad_param_ref whole = {"all", w0, g0, NULL, NULL, N, false};
    CHECK_NEAR(ad_grad_norm(&whole, 1) / slow_norm(g0, N), 1.0, 1e-13);
    omp_set_num_threads(omp_get_num_procs());
    for (int r = 0; r < 3; r++)
        free(w[r]), free(g[r]), free(mm[r]), free(vv[r]);
    free(w0), free(g0);
}

static void test_skips_and_edges(void) {
    float w[4] = {1, 2, 3, 4}, g[4] = {3, 4, 0, 0}, m[4] = {0}, v[4] = {0}, w2[2] = {5, 6};
    ad_param_ref p[2] = {{"x.weight", w, g, m, v, 4, true},
                         {"y.weight", w2, NULL, NULL, NULL, 2, true}};
    CHECK_NEAR(ad_grad_norm(p, 2), 5.0, 0);
    CHECK_NEAR(ad_clip_grad_norm(p, 2, 0), 5.0, 0); /* measure only */
    CHECK(g[0] == 3 && g[1] == 4);
    ad_clip_grad_norm(p, 2, 1.0);
    CHECK_NEAR(g[0], 3.0 / (5.0 + 1e-6), 1e-7);
    ad_adamw_config c = {0.9, 0.999, 1e-8, 0.1};
    ad_adamw_step(p, 2, &c, 0.1, 1);
    CHECK(w2[0] == 5 && w2[1] == 6); /* no gradient, no update (not even decay) */
    /* first step: m_hat/sqrt(v_hat) = sign(g), so w = w*(1 - lr*wd) - lr*sign(g) */
    CHECK_NEAR(w[0], 1.0 * (1 - 0.01) - 0.1, 1e-6);
    CHECK_NEAR(w[2], 3.0 * (1 - 0.01), 1e-6); /* g = 0: decay only */
    g[0] = NAN;
    const double bad = ad_clip_grad_norm(p, 1, 1.0);
    CHECK(isnan(bad) && isnan(g[0]) && g[1] != 0); /* untouched; the caller stops */
    ad_schedule s = {AD_SCHEDULE_LINEAR, 1.0, 0, 10, 0.2};
    CHECK_NEAR(ad_schedule_lr(&s, 0), 1.0, 1e-15);
    CHECK_NEAR(ad_schedule_lr(&s, 5), 0.2 + 0.8 * 0.5, 1e-15);
    CHECK_NEAR(ad_schedule_lr(&s, 20), 0.2, 1e-15); /* floored past the end */
}

static void test_bad_tables(void) {
    static float a[100];
    ad_param_ref p[2];
    ad_param_slot s[2] = {{"a", 0, 50, 1, {50}}, {"b", 40, 20, 2, {4, 5}}};
    CHECK_FAILS_WITH(ad_param_refs_from_arena(s, 2, 100, a, a, a, a, NULL, NULL, p), "overlap");
    s[1].offset = 90;
    CHECK_FAILS_WITH(ad_param_refs_from_arena(s, 2, 100, a, a, a, a, NULL, NULL, p),
                     "b [90, +20) lies outside");
    s[1].offset = 50, s[1].numel = 21;
    CHECK_FAILS_WITH(ad_param_refs_from_arena(s, 2, 100, a, a, a, a, NULL, NULL, p),
                     "tensor b: numel 21 but its shape holds 20");
    s[1].numel = 20;
    CHECK_OK(ad_param_refs_from_arena(s, 2, 100, a, NULL, NULL, NULL, NULL, NULL, p));
    CHECK(p[1].param == a + 50 && p[1].grad == NULL && !p[0].decay && p[1].decay);
}

int main(void) {
    if (ad_safetensors_open(&fx, AUDISTILL_FIXTURES "/optim/adamw.safetensors") < 0) {
        fprintf(stderr, "%s\n", ad_error());
        return 1;
    }
    RUN(test_schedules_exact);
    RUN(test_trajectories);
    RUN(test_threads_do_not_matter);
    RUN(test_skips_and_edges);
    RUN(test_bad_tables);
    ad_safetensors_close(&fx);
    return test_report();
}
