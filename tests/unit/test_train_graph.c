/* The training graph against torch autograd: the tiny model's supervised logits, summed
 * cross-entropy and EVERY parameter gradient (fixture tests/fixtures/grad, generated with
 * transformers) — relative L2 error <= 1e-4 per tensor — for a batch of two clips of different
 * lengths with right-padded prompts. Also: gradients accumulate over calls, frozen parts get
 * none, and a teacher graph (nothing trainable) gives the same logits. */
#include "backend/cpu/cpu_backward.h"
#include "fixture_batch.h"
#include "io/safetensors.h"
#include "model/train_graph.h"
#include "model/weights.h"
#include "test.h"

static ad_safetensors ref;

static float *read_all(const char *name, int64_t *numel) {
    return fixture_floats(&ref, name, numel);
}

static double rel_l2(const float *a, const float *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

static void test_gradients_match_torch(void) {
    ad_backend *be;
    CHECK_OK(ad_backend_cpu_create(&be, 0));
    ad_cpu_register_backward(be);
    ad_model m;
    CHECK_OK(ad_model_load(&m, be, AUDISTILL_FIXTURES "/tiny_a"));
    ad_batch b;
    CHECK_OK(fixture_batch(&ref, &b));
    ad_graph_limits lim = {
        .max_clips = 2, .max_frames = b.max_frames, .max_len = b.max_len, .max_supervised = 16};
    ad_trainable all = {.audio_encoder = true,
                        .projector = true,
                        .decoder = true,
                        .embed_tokens = true,
                        .lm_head = true};
    ad_train_graph g;
    CHECK_OK(ad_graph_init(&g, &m, &lim, &all));
    /* The memory plan (no model, no backend) is exactly what the graph allocated. */
    size_t plan_act, plan_grad;
    CHECK_OK(ad_graph_plan(&m.cfg, &lim, &all, &plan_act, &plan_grad));
    CHECK_MSG(plan_act == g.arena.capacity && plan_grad == g.grad_bytes,
              "plan %zu + %zu bytes, allocated %zu + %zu", plan_act, plan_grad, g.arena.capacity,
              g.grad_bytes);
    CHECK_OK(ad_graph_forward(&g, &b));
    const int S = g.n_supervised;
    const int64_t V = m.cfg.vocab_size;
    CHECK(S == b.supervised);
    int64_t n;
    float *want_logits = read_all("output.logits", &n);
    CHECK(n == S * V);
    double logit_err = 0;
    for (int64_t i = 0; i < n; i++)
        logit_err = fmax(logit_err, fabs((double)((float *)g.logits.data)[i] - want_logits[i]));
    CHECK_MSG(logit_err <= 1e-4, "supervised logits differ by %.3g", logit_err);

    ad_tensor logits, targets;
    ad_tensor_init(&logits, g.logits.data, AD_F32, AD_DEVICE_CPU, 2, (int64_t[]){S, V}, "logits");
    ad_tensor_init(&targets, g.targets.data, AD_I32, AD_DEVICE_CPU, 1, (int64_t[]){S}, "targets");
    ad_distill_params p = {.alpha = 0, .temperature = 1, .grad_scale = 1};
    ad_distill_sums sums = {0};
    CHECK_OK(be->distill_loss(be, &logits, &logits, NULL, &targets, &p, &sums));
    float *want_loss = read_all("output.loss", &n);
    CHECK_MSG(fabs(sums.loss - want_loss[0]) <= 1e-5 * fabs(want_loss[0]), "loss %.7g vs %.7g",
              sums.loss, want_loss[0]);
    CHECK_OK(ad_graph_backward(&g));

    ad_weight_spec *specs;
    int n_specs;
    CHECK_OK(ad_weight_specs(&m.cfg, &specs, &n_specs));
    double worst = 0;
    const char *worst_name = "";
    int compared = 0;
    for (int i = 0; i < n_specs; i++) {
        /* The reference declares the position table frozen (requires_grad_(False)). */
        if (strstr(specs[i].name, "embed_positions")) {
            CHECK(ad_model_weight(&g.grads, specs[i].name)->data == NULL);
            continue;
        }
        char key[160];
        snprintf(key, sizeof key, "grad.%s", specs[i].name);
        float *want = read_all(key, &n);
        const ad_tensor *got = ad_model_weight(&g.grads, specs[i].name);
        CHECK_MSG(want && got && got->data && n == ad_weight_spec_numel(&specs[i]), "%s missing",
                  specs[i].name);
        if (!want || !got || !got->data) continue;
        double e = rel_l2(got->data, want, n);
        CHECK_MSG(e <= 1e-4, "%s: relative L2 error %.3g", specs[i].name, e);
        if (e > worst) worst = e, worst_name = specs[i].name;
        compared++;
        free(want);
    }
    printf("compared %d parameter gradients, worst relative L2 error %.3g (%s)\n", compared, worst,
           worst_name);

    /* Accumulation: a second identical forward/backward doubles every gradient. */
    const ad_tensor *g1 =
        ad_model_weight(&g.grads, "language_model.model.layers.0.mlp.up_proj.weight");
    int64_t nn = ad_tensor_numel(g1);
    float *once = malloc(sizeof(float) * (size_t)nn);
    memcpy(once, g1->data, sizeof(float) * (size_t)nn);
    CHECK_OK(ad_graph_forward(&g, &b));
    sums = (ad_distill_sums){0};
    CHECK_OK(be->distill_loss(be, &logits, &logits, NULL, &targets, &p, &sums));
    CHECK_OK(ad_graph_backward(&g));
    double acc = 0;
    for (int64_t i = 0; i < nn; i++)
        acc = fmax(acc, fabs(((float *)g1->data)[i] - 2 * once[i]));
    CHECK_MSG(acc <= 1e-5, "accumulated gradient off by %.3g", acc);
    CHECK_OK(ad_graph_zero_grads(&g));
    CHECK(((float *)g1->data)[0] == 0.0f);
    free(once);

    /* A teacher graph (nothing trainable, shared layer buffers) computes the same logits. */
    ad_trainable none = {0};
    ad_train_graph t;
    CHECK_OK(ad_graph_init(&t, &m, &lim, &none));
    CHECK_OK(ad_graph_plan(&m.cfg, &lim, &none, &plan_act, &plan_grad));
    CHECK(plan_act == t.arena.capacity && plan_grad == 0 && t.grad_bytes == 0);
    CHECK_OK(ad_graph_forward(&t, &b));
    double teacher_err = 0;
    for (int64_t i = 0; i < S * V; i++)
        teacher_err = fmax(teacher_err, fabs((double)((float *)t.logits.data)[i] - want_logits[i]));
    CHECK_MSG(teacher_err <= 1e-4, "teacher logits differ by %.3g", teacher_err);
    CHECK(t.memory != NULL && t.grad_memory == NULL);
    CHECK_FAILS_WITH(ad_graph_backward(&t), "nothing is trainable");
    ad_graph_free(&t);

    /* Frozen encoder: no encoder gradients, decoder gradients unchanged. */
    ad_trainable dec_only = {.decoder = true, .lm_head = true};
    ad_train_graph d;
    CHECK_OK(ad_graph_init(&d, &m, &lim, &dec_only));
    CHECK(ad_model_weight(&d.grads, "audio_tower.layers.0.fc1.weight")->data == NULL);
    CHECK(ad_model_weight(&d.grads, "language_model.model.embed_tokens.weight")->data == NULL);
    ad_graph_free(&d);

    free(specs);
    free(want_logits);
    free(want_loss);
    ad_graph_free(&g);
    ad_batch_free(&b);
    ad_model_free(&m);
    ad_backend_destroy(be);
}

int main(void) {
    if (ad_safetensors_open(&ref, AUDISTILL_FIXTURES "/grad/tiny_a_ce.safetensors") < 0) {
        fprintf(stderr, "%s\n", ad_error());
        return 1;
    }
    RUN(test_gradients_match_torch);
    ad_safetensors_close(&ref);
    return test_report();
}
