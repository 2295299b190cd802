/* Quantized models at run time: a model written by ad_quantize_model (round-to-nearest) loads,
 * and its logits equal those of the fp32 model whose weights are replaced by the dequantized
 * values (so the quantized linear and embedding paths compute exactly what the stored codes
 * mean); its distance to the original model (mean KL of next-token distributions) is small at
 * 8 bits and larger at 4; the directory is smaller; a quantized model is not quantized twice;
 * a group size that does not divide a width is refused before anything is written. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/backend.h"
#include "compress/quant.h"
#include "compress/quantize.h"
#include "core/rng.h"
#include "io/file.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "model/weights.h"
#include "test.h"

static ad_backend *be;

typedef struct {
    int C, T, n_rows;
    float *features;
    int64_t feat_shape[3];
    int frames[8];
    int32_t *ids;
    int len[8];
    int *logit_rows;
} ref_batch;

static float *ref_f32(ad_safetensors *st, const char *name, int64_t *shape) {
    const ad_st_entry *e = ad_safetensors_find(st, name);
    ad_tensor t;
    if (!e || ad_safetensors_view(st, e, &t) < 0) {
        fprintf(stderr, "reference tensor %s: %s\n", name, ad_error());
        exit(1);
    }
    float *d = malloc(sizeof(float) * (size_t)ad_tensor_numel(&t) + 4);
    if (!d || ad_tensor_to_f32(&t, d) < 0) exit(1);
    if (shape) memcpy(shape, t.shape, sizeof(int64_t) * (size_t)t.ndim);
    return d;
}

/* The fixture's two-clip reference batch, right padded. */
static void load_batch(const char *dir, ref_batch *b) {
    char path[600];
    snprintf(path, sizeof path, "%s/reference.safetensors", dir);
    ad_safetensors st;
    if (ad_safetensors_open(&st, path) < 0) exit(1);
    int64_t ishape[2];
    b->features = ref_f32(&st, "features", b->feat_shape);
    float *flen = ref_f32(&st, "feature_lengths", NULL), *ids = ref_f32(&st, "input_ids", ishape),
          *mask = ref_f32(&st, "attention_mask", NULL);
    b->C = (int)b->feat_shape[0], b->T = (int)ishape[1];
    b->ids = calloc((size_t)b->C * b->T, sizeof *b->ids);
    b->logit_rows = calloc((size_t)b->C * b->T, sizeof *b->logit_rows);
    b->n_rows = 0;
    for (int r = 0; r < b->C; r++) {
        b->frames[r] = (int)flen[r];
        b->len[r] = 0;
        for (int t = 0; t < b->T; t++)
            if (mask[(size_t)r * b->T + t] != 0)
                b->ids[(size_t)r * b->T + b->len[r]++] = (int32_t)ids[(size_t)r * b->T + t];
        for (int t = 0; t < b->len[r]; t++)
            b->logit_rows[b->n_rows++] = r * b->T + t;
    }
    free(flen), free(ids), free(mask);
    ad_safetensors_close(&st);
}

static void free_batch(ref_batch *b) {
    free(b->features), free(b->ids), free(b->logit_rows);
}

/* Logits [n_rows, V] of the batch (caller frees). */
static float *logits_of(ad_model *m, const ref_batch *b) {
    ad_model_limits lim = {.max_clips = b->C,
                           .max_frames = (int)b->feat_shape[2],
                           .max_rows = b->C,
                           .max_tokens = b->T,
                           .max_step_tokens = b->T,
                           .max_logit_rows = b->C * b->T};
    ad_model_state st;
    ad_tensor features, host, view;
    const int64_t V = m->cfg.vocab_size;
    float *out = malloc(sizeof(float) * (size_t)(b->n_rows * V));
    ad_decode_input in = {b->ids, b->len, b->C, b->T, true};
    if (!out || ad_model_state_init(&st, m, &lim) < 0 ||
        ad_tensor_init(&features, b->features, AD_F32, AD_DEVICE_CPU, 3, b->feat_shape, "feat") <
            0 ||
        ad_model_encode(&st, &features, b->frames) < 0 ||
        ad_model_decode(&st, &in, b->logit_rows, b->n_rows) < 0 ||
        ad_tensor_init(&view, st.logits.data, AD_F32, st.logits.device, 2,
                       (int64_t[]){b->n_rows, V}, "logits") < 0 ||
        ad_tensor_init(&host, out, AD_F32, AD_DEVICE_CPU, 2, (int64_t[]){b->n_rows, V}, "logits") <
            0 ||
        be->download(be, &host, &view) < 0) {
        fprintf(stderr, "forward: %s\n", ad_error());
        exit(1);
    }
    ad_model_state_free(&st);
    return out;
}

/* Mean over rows of KL(softmax(p) || softmax(q)), in double. */
static double mean_kl(const float *p, const float *q, int rows, int64_t V) {
    double total = 0;
    for (int r = 0; r < rows; r++) {
        const float *a = p + (size_t)r * V, *b = q + (size_t)r * V;
        double ma = a[0], mb = b[0], za = 0, zb = 0, kl = 0;
        for (int64_t v = 1; v < V; v++)
            ma = a[v] > ma ? a[v] : ma, mb = b[v] > mb ? b[v] : mb;
        for (int64_t v = 0; v < V; v++)
            za += exp(a[v] - ma), zb += exp(b[v] - mb);
        for (int64_t v = 0; v < V; v++) {
            double la = a[v] - ma - log(za), lb = b[v] - mb - log(zb);
            kl += exp(la) * (la - lb);
        }
        total += kl;
    }
    return total / rows;
}

/* Every weight of `dst` (an fp32 model) set to what the quantized model `q` computes with. */
static void copy_effective_weights(ad_model *dst, ad_model *q) {
    ad_weight_spec *specs;
    int n;
    if (ad_weight_specs(&q->cfg, &specs, &n) < 0) exit(1);
    int quantized = 0;
    for (int s = 0; s < n; s++) {
        ad_tensor *wq = ad_model_weight(q, specs[s].name),
                  *wd = ad_model_weight(dst, specs[s].name);
        if (!wq || !wd) continue; /* tied lm_head */
        const int64_t numel = ad_weight_spec_numel(&specs[s]);
        float *h = malloc(sizeof(float) * (size_t)numel);
        ad_tensor host;
        ad_tensor_init(&host, h, AD_F32, AD_DEVICE_CPU, wd->ndim, wd->shape, specs[s].name);
        if (wq->dtype == AD_QGROUP) {
            const ad_quant_tensor *qt = wq->quant;
            ad_quant_dequantize_rows(qt, 0, qt->rows, h);
            quantized++;
        } else if (be->download(be, &host, wq) < 0) {
            exit(1);
        }
        CHECK_OK(be->upload(be, wd, &host));
        free(h);
    }
    CHECK_MSG(quantized == q->n_quantized, "%d of %d quantized weights seen", quantized,
              q->n_quantized);
    free(specs);
}

static double quantize_and_compare(const char *name, int bits, double kl_bound, uint64_t *bytes) {
    char dir[512], out[700], tmpl[600];
    snprintf(dir, sizeof dir, "%s/%s", AUDISTILL_FIXTURES, name);
    snprintf(tmpl, sizeof tmpl, "%s/quantize.XXXXXX", AUDISTILL_TEST_TMP);
    if (ad_mkdir_p(AUDISTILL_TEST_TMP) < 0 || !mkdtemp(tmpl)) exit(1);
    snprintf(out, sizeof out, "%s/q%d", tmpl, bits);
    ad_model m = {0}, q = {0}, eff = {0};
    CHECK_OK(ad_model_load(&m, be, dir));
    /* Group 8 divides every width of the tiny models except tiny_b's 12-wide encoder. */
    const bool small_encoder = m.cfg.d_model % 8 != 0;
    ad_quant_choice c = {.bits = bits, .group_size = 8, .symmetric = false, .method = "rtn"};
    ad_quant_choice keep = {.bits = 16, .group_size = 8, .method = "rtn"};
    ad_quant_recipe r = {.decoder_linear = c,
                         .encoder_linear = small_encoder ? keep : c,
                         .embed_tokens = c,
                         .lm_head = c};
    ad_quantize_options o = {.damp_percent = 0.01};
    CHECK_OK(ad_quantize_model(&m, dir, &r, &o, out));
    CHECK_OK(ad_model_load(&q, be, out));
    CHECK_MSG(q.n_quantized > 0, "%s: nothing quantized", out);
    CHECK_FAILS_WITH(ad_quantize_model(&q, out, &r, &o, out), "already quantized");

    ad_safetensors st;
    CHECK_OK(ad_safetensors_open(&st, out));
    *bytes = ad_safetensors_file_bytes(&st);
    ad_safetensors_close(&st);

    ref_batch b;
    load_batch(dir, &b);
    const int64_t V = m.cfg.vocab_size;
    float *orig = logits_of(&m, &b), *quant = logits_of(&q, &b);
    CHECK_OK(ad_model_load(&eff, be, dir));
    copy_effective_weights(&eff, &q);
    float *want = logits_of(&eff, &b);
    double max_abs = 0;
    for (int64_t i = 0; i < b.n_rows * V; i++) {
        double e = fabs((double)quant[i] - want[i]);
        max_abs = e > max_abs || e != e ? e : max_abs;
    }
    const double kl = mean_kl(orig, quant, b.n_rows, V);
    printf("  %s int%d: logits vs dequantized fp32 max abs %.3g; KL to fp32 %.3g (bound %g); "
           "%llu bytes\n",
           name, bits, max_abs, kl, kl_bound, (unsigned long long)*bytes);
    CHECK_MSG(max_abs <= 1e-4, "%s int%d: quantized path differs from dequantized weights by %.3g",
              name, bits, max_abs);
    CHECK_MSG(kl <= kl_bound && kl > 0, "%s int%d: KL %.3g outside (0, %g]", name, bits, kl,
              kl_bound);
    free(orig), free(quant), free(want);
    free_batch(&b);
    ad_model_free(&eff), ad_model_free(&q), ad_model_free(&m);
    char cmd[800];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpl);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", tmpl);
    return kl;
}

static void check_models(void) {
    static const char *names[] = {"tiny_a", "tiny_b"};
    for (int i = 0; i < 2; i++) {
        uint64_t b8, b4;
        double kl8 = quantize_and_compare(names[i], 8, 1e-3, &b8);
        double kl4 = quantize_and_compare(names[i], 4, 5e-2, &b4);
        CHECK_MSG(kl8 < kl4, "%s: int8 KL %.3g not below int4 KL %.3g", names[i], kl8, kl4);
        CHECK_MSG(b4 < b8, "%s: int4 file %llu bytes not below int8 %llu", names[i],
                  (unsigned long long)b4, (unsigned long long)b8);
    }
}

/* The backend's quantized linear on a weight tall enough for several dequantized row tiles
 * (the tiny models fit in one), against a double-precision product with the dequantized
 * weight. */
static void check_tiled_linear(void) {
    const int64_t K = 256, N = 2 * 4096 + 40, M = 3;
    ad_rng rng;
    ad_rng_init(&rng, (uint64_t)getpid(), 5);
    float *w = malloc(sizeof(float) * (size_t)(N * K)),
          *deq = malloc(sizeof(float) * (size_t)(N * K));
    float *x = malloc(sizeof(float) * (size_t)(M * K)), *y = calloc((size_t)(M * N), sizeof(float));
    for (int64_t i = 0; i < N * K; i++)
        w[i] = ad_rng_normal(&rng);
    for (int64_t i = 0; i < M * K; i++)
        x[i] = ad_rng_normal(&rng);
    ad_quant_spec spec = {4, 64, false};
    ad_quant_tensor q;
    CHECK_OK(ad_quant_alloc(&q, &spec, N, K, "w"));
    CHECK_OK(ad_quant_rtn(&q, w));
    ad_quant_dequantize_rows(&q, 0, N, deq);
    ad_tensor tw, tx, ty;
    ad_tensor_init(&tw, q.codes, AD_QGROUP, AD_DEVICE_CPU, 2, (int64_t[]){N, K}, "w");
    tw.quant = &q;
    ad_tensor_init(&tx, x, AD_F32, AD_DEVICE_CPU, 2, (int64_t[]){M, K}, "x");
    ad_tensor_init(&ty, y, AD_F32, AD_DEVICE_CPU, 2, (int64_t[]){M, N}, "y");
    CHECK_OK(be->linear(be, &ty, &tx, &tw, NULL));
    double worst = 0;
    for (int64_t i = 0; i < M; i++)
        for (int64_t n = 0; n < N; n++) {
            double want = 0;
            for (int64_t k = 0; k < K; k++)
                want += (double)x[i * K + k] * deq[n * K + k];
            double e = fabs(y[i * N + n] - want);
            worst = e > worst || e != e ? e : worst;
        }
    printf("  tiled quantized linear [%lld x %lld]: max abs error %.3g\n", (long long)N,
           (long long)K, worst);
    CHECK_MSG(worst <= 1e-3, "tiled quantized linear: max abs error %.3g", worst);
    ad_quant_free(&q);
    free(w), free(deq), free(x), free(y);
}

static void check_refusals(void) {
    char dir[512], out[700];
    snprintf(dir, sizeof dir, "%s/tiny_b", AUDISTILL_FIXTURES);
    snprintf(out, sizeof out, "%s/quantize-refused", AUDISTILL_TEST_TMP);
    ad_model m = {0};
    CHECK_OK(ad_model_load(&m, be, dir));
    ad_quant_choice c = {.bits = 4, .group_size = 8, .method = "rtn"};
    ad_quant_recipe r = {.decoder_linear = c, .encoder_linear = c, .embed_tokens = c, .lm_head = c};
    ad_quantize_options o = {.damp_percent = 0.01};
    CHECK_FAILS_WITH(ad_quantize_model(&m, dir, &r, &o, out), "does not divide");
    CHECK(!ad_path_exists(out));
    r.encoder_linear.bits = 16;
    r.decoder_linear.method = "gptq";
    CHECK_FAILS_WITH(ad_quantize_model(&m, dir, &r, &o, out), "calibration");
    CHECK(!ad_path_exists(out));
    CHECK_FAILS_WITH(ad_quantize_model(&m, dir, &r, &o, dir), "already exists");
    ad_model_free(&m);
}

int main(void) {
    if (ad_backend_cpu_create(&be, 2) < 0) {
        fprintf(stderr, "backend: %s\n", ad_error());
        return 1;
    }
    RUN(check_models);
    RUN(check_tiled_linear);
    RUN(check_refusals);
    ad_backend_destroy(be);
    return test_report();
}
