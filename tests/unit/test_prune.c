/* Structured pruning of the tiny model: an empty recipe reproduces the teacher's logits;
 * dropping layers equals transformers with those layers deleted (fixture); removing heads and
 * FFN neurons equals the teacher with them masked to zero; a trimmed vocabulary gives the
 * teacher's logits at the kept ids; the written student loads, with its config recording the
 * per-layer shapes; bad recipes are refused. */
#include <unistd.h>

#include "backend/cpu/cpu_backward.h"
#include "compress/prune.h"
#include "fixture_batch.h"
#include "model/train_graph.h"
#include "test.h"

static ad_safetensors ref;
static ad_backend *be;
static ad_batch batch;
static char tmp[512];
#define TEACHER AUDISTILL_FIXTURES "/tiny_a"

/* Supervised logits of `dir` (or of an already loaded model) on the fixture batch. */
static float *logits_of(ad_model *m, const ad_batch *b, int *rows, int *vocab) {
    ad_graph_limits lim = {
        .max_clips = 2, .max_frames = b->max_frames, .max_len = b->max_len, .max_supervised = 16};
    ad_trainable none = {0};
    ad_train_graph g;
    if (ad_graph_init(&g, m, &lim, &none) < 0 || ad_graph_forward(&g, b) < 0) {
        fprintf(stderr, "%s\n", ad_error());
        return NULL;
    }
    *rows = g.n_supervised;
    *vocab = m->cfg.vocab_size;
    float *out = malloc(sizeof(float) * (size_t)(*rows * *vocab));
    memcpy(out, g.logits.data, sizeof(float) * (size_t)(*rows * *vocab));
    ad_graph_free(&g);
    return out;
}

static double max_diff(const float *a, const float *b, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++)
        m = fmax(m, fabs((double)a[i] - b[i]));
    return m;
}

static int prune_to(ad_model *teacher, const ad_prune_recipe *r, const ad_importance *imp,
                    const int32_t *vocab, int n_vocab, const char *name, ad_model *student,
                    ad_prune_plan *plan) {
    char dir[700];
    snprintf(dir, sizeof dir, "%s/%s", tmp, name);
    AD_TRY(ad_prune_plan_make(&teacher->cfg, r, imp, vocab, n_vocab, plan));
    AD_TRY(ad_prune_write_student(teacher, TEACHER, plan, dir, false));
    return ad_model_load(student, be, dir);
}

static void test_empty_recipe(ad_model *t) {
    ad_prune_recipe r;
    ad_yaml_defaults(ad_prune_recipe_fields, &r);
    ad_model s;
    ad_prune_plan plan;
    CHECK_OK(prune_to(t, &r, NULL, NULL, 0, "empty", &s, &plan));
    int rows, v, rows2, v2;
    float *a = logits_of(t, &batch, &rows, &v), *b = logits_of(&s, &batch, &rows2, &v2);
    CHECK(a && b && rows == rows2 && v == v2 && max_diff(a, b, (int64_t)rows * v) == 0.0);
    free(a), free(b);
    ad_model_free(&s);
    ad_prune_plan_free(&plan);
}

static void test_drop_layers_equals_transformers(ad_model *t) {
    ad_prune_recipe r;
    ad_yaml_defaults(ad_prune_recipe_fields, &r);
    r.drop_decoder_layers.count = 1, r.drop_decoder_layers.values[0] = 1;
    r.drop_encoder_layers.count = 1, r.drop_encoder_layers.values[0] = 0;
    ad_model s;
    ad_prune_plan plan;
    CHECK_OK(prune_to(t, &r, NULL, NULL, 0, "drop", &s, &plan));
    CHECK(s.cfg.num_hidden_layers == 1 && s.cfg.encoder_layers == 1);
    ad_safetensors fx;
    CHECK_OK(
        ad_safetensors_open(&fx, AUDISTILL_FIXTURES "/prune/tiny_a_drop_dec1_enc0.safetensors"));
    int64_t n;
    float *want = fixture_floats(&fx, "logits", &n);
    int rows, v;
    float *got = logits_of(&s, &batch, &rows, &v);
    CHECK(got && n == (int64_t)rows * v);
    if (got)
        CHECK_MSG(max_diff(got, want, n) <= 1e-4, "pruned logits differ from transformers by %.3g",
                  max_diff(got, want, n));
    free(got), free(want);
    ad_safetensors_close(&fx);
    ad_model_free(&s);
    ad_prune_plan_free(&plan);
}

/* Zero a decoder head's output columns and an FFN neuron's down_proj column in the teacher. */
static void mask_teacher(ad_model *t, int layer, int head, int neuron) {
    ad_tensor *o = &t->decoder[layer].o_proj_w, *down = &t->decoder[layer].down_proj_w;
    const int64_t H = o->shape[0], Q = o->shape[1], hd = t->cfg.head_dim, F = down->shape[1];
    float *od = o->data, *dd = down->data;
    for (int64_t r = 0; r < H; r++) {
        for (int64_t c = head * hd; c < (head + 1) * hd; c++)
            od[r * Q + c] = 0;
        dd[r * F + neuron] = 0;
    }
}

static void test_width_equals_masking(ad_model *t) {
    /* Scores that single out a kv group (heads 2-3 of layer 0) and neuron 5 of layer 0 as the
     * least important. */
    ad_importance imp;
    CHECK_OK(ad_importance_init(&imp, &t->cfg));
    for (int l = 0; l < imp.n_dec; l++) {
        for (int h = 0; h < t->cfg.decoder_layer[l].num_attention_heads; h++)
            imp.dec_head[l][h] = 10 - h;
        for (int j = 0; j < t->cfg.decoder_layer[l].intermediate_size; j++)
            imp.dec_ffn[l][j] = j == 5 ? 0 : 1 + j;
    }
    ad_prune_recipe r;
    ad_yaml_defaults(ad_prune_recipe_fields, &r);
    r.decoder_heads = 2;
    r.decoder_ffn = t->cfg.intermediate_size - 1;
    ad_model s;
    ad_prune_plan plan;
    CHECK_OK(prune_to(t, &r, &imp, NULL, 0, "width", &s, &plan));
    CHECK(s.cfg.num_attention_heads == 2 && s.cfg.num_key_value_heads == 1 &&
          plan.dec_kv[0].index[0] == 0);
    int rows, v, rows2, v2;
    float *got = logits_of(&s, &batch, &rows, &v);
    ad_model masked;
    CHECK_OK(ad_model_load(&masked, be, TEACHER));
    for (int l = 0; l < t->cfg.num_hidden_layers; l++) {
        mask_teacher(&masked, l, 2, 5);
        mask_teacher(&masked, l, 3, 5);
    }
    float *want = logits_of(&masked, &batch, &rows2, &v2);
    CHECK(got && want && rows == rows2);
    if (got && want)
        CHECK_MSG(max_diff(got, want, (int64_t)rows * v) <= 1e-5, "pruned vs masked: %.3g",
                  max_diff(got, want, (int64_t)rows * v));
    free(got), free(want);
    ad_model_free(&masked);
    ad_model_free(&s);
    ad_prune_plan_free(&plan);
    /* Targets that need scores are refused without them. */
    CHECK_FAILS_WITH(ad_prune_plan_make(&t->cfg, &r, NULL, NULL, 0, &plan),
                     "needs importance scores");
    ad_importance_free(&imp);
}

static void test_vocab_trim(ad_model *t) {
    int32_t used[64];
    int n_used = 0;
    for (int i = 0; i < batch.n * batch.max_len && n_used < 64; i++)
        if (i % batch.max_len < batch.len[i / batch.max_len]) used[n_used++] = batch.ids[i];
    int32_t *keep;
    int n_keep;
    CHECK_OK(ad_vocab_keep_set(TEACHER, t->cfg.vocab_size, used, n_used, &keep, &n_keep));
    CHECK(n_keep > 256 && n_keep < t->cfg.vocab_size); /* every byte, the specials, the data */
    ad_prune_recipe r;
    ad_yaml_defaults(ad_prune_recipe_fields, &r);
    ad_model s;
    ad_prune_plan plan;
    CHECK_OK(prune_to(t, &r, NULL, keep, n_keep, "vocab", &s, &plan));
    CHECK(s.cfg.vocab_size == n_keep);
    /* The student's batch: ids and labels renumbered. */
    ad_batch sb;
    CHECK_OK(fixture_batch(&ref, &sb));
    for (int i = 0; i < sb.n * sb.max_len; i++) {
        for (int k = 0; k < n_keep; k++) {
            if (keep[k] == sb.ids[i]) sb.ids[i] = k;
            if (sb.labels[i] >= 0 && keep[k] == sb.labels[i]) sb.labels[i] = k;
        }
    }
    int rows, v, rows2, v2;
    float *a = logits_of(t, &batch, &rows, &v), *b = logits_of(&s, &sb, &rows2, &v2);
    CHECK(a && b && rows == rows2 && v2 == n_keep);
    double worst = 0;
    for (int r0 = 0; a && b && r0 < rows; r0++)
        for (int k = 0; k < n_keep; k++)
            worst = fmax(worst, fabs((double)a[r0 * v + keep[k]] - b[r0 * v2 + k]));
    /* Same rows of lm_head; only the BLAS blocking of a narrower product differs. */
    CHECK_MSG(worst <= 1e-5, "kept-id logits differ by %.3g", worst);
    free(a), free(b), free(keep);
    ad_batch_free(&sb);
    ad_model_free(&s);
    ad_prune_plan_free(&plan);
}

static void test_refusals(ad_model *t) {
    ad_prune_recipe r;
    ad_yaml_defaults(ad_prune_recipe_fields, &r);
    r.decoder_heads = 3; /* not a multiple of the 2 query heads per kv head */
    ad_prune_plan plan;
    CHECK_FAILS_WITH(ad_prune_plan_make(&t->cfg, &r, NULL, NULL, 0, &plan),
                     "multiple of the query heads");
    ad_yaml_defaults(ad_prune_recipe_fields, &r);
    r.vocab = 100;
    CHECK_FAILS_WITH(ad_prune_plan_make(&t->cfg, &r, NULL, NULL, 0, &plan),
                     "needs the set of used tokens");
    ad_yaml_defaults(ad_prune_recipe_fields, &r);
    CHECK_OK(ad_prune_plan_make(&t->cfg, &r, NULL, NULL, 0, &plan));
    char dir[700];
    snprintf(dir, sizeof dir, "%s/empty", tmp);
    CHECK_FAILS_WITH(ad_prune_write_student(t, TEACHER, &plan, dir, false), "already exists");
    ad_prune_plan_free(&plan);
}

int main(void) {
    snprintf(tmp, sizeof tmp, "%s/prune-%ld", AUDISTILL_TEST_TMP, (long)getpid());
    if (ad_mkdir_p(tmp) < 0 ||
        ad_safetensors_open(&ref, AUDISTILL_FIXTURES "/grad/tiny_a_ce.safetensors") < 0 ||
        ad_backend_cpu_create(&be, 0) < 0 || fixture_batch(&ref, &batch) < 0) {
        fprintf(stderr, "%s\n", ad_error());
        return 1;
    }
    ad_model teacher;
    if (ad_model_load(&teacher, be, TEACHER) < 0) {
        fprintf(stderr, "%s\n", ad_error());
        return 1;
    }
    test_current = "empty";
    test_empty_recipe(&teacher);
    test_current = "drop";
    test_drop_layers_equals_transformers(&teacher);
    test_current = "width";
    test_width_equals_masking(&teacher);
    test_current = "vocab";
    test_vocab_trim(&teacher);
    test_current = "refusals";
    test_refusals(&teacher);
    ad_model_free(&teacher);
    ad_batch_free(&batch);
    ad_safetensors_close(&ref);
    ad_backend_destroy(be);
    char cmd[700];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmp);
    if (system(cmd) != 0) fprintf(stderr, "could not clean %s\n", tmp);
    return test_report();
}
