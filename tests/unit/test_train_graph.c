/* The training graph against torch autograd: the tiny model's supervised logits, summed
 * cross-entropy and EVERY parameter gradient (fixture tests/fixtures/grad, generated with
 * transformers) — relative L2 error <= 1e-4 per tensor — for a batch of two clips of different
 * lengths with right-padded prompts. Also: gradients accumulate over calls, frozen parts get
 * none, and a teacher graph (nothing trainable) gives the same logits. The CTC term on the
 * audio positions is checked the same way against torch's F.ctc_loss. */
#include "backend/cpu/cpu_backward.h"
#include "fixture_batch.h"
#include "io/safetensors.h"
#include "model/train_graph.h"
#include "model/weights.h"
#include "test.h"
#include "train/ctc_term.h"

static ad_safetensors ref;
static const ad_trainable all = {.audio_encoder = true,
                                 .projector = true,
                                 .decoder = true,
                                 .embed_tokens = true,
                                 .lm_head = true};

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

/* Every parameter gradient of `g` against the fixture's grad.<name> tensors. */
static void compare_gradients(ad_safetensors *st, ad_model *m, ad_train_graph *g) {
    ad_weight_spec *specs;
    int n_specs;
    CHECK_OK(ad_weight_specs(&m->cfg, &specs, &n_specs));
    double worst = 0;
    const char *worst_name = "";
    int compared = 0;
    for (int i = 0; i < n_specs; i++) {
        /* The reference declares the position table frozen (requires_grad_(False)). */
        if (strstr(specs[i].name, "embed_positions")) {
            CHECK(ad_model_weight(&g->grads, specs[i].name)->data == NULL);
            continue;
        }
        char key[160];
        snprintf(key, sizeof key, "grad.%s", specs[i].name);
        int64_t n;
        float *want = fixture_floats(st, key, &n);
        const ad_tensor *got = ad_model_weight(&g->grads, specs[i].name);
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
    free(specs);
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

    compare_gradients(&ref, &m, &g);

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
    CHECK_OK(ad_graph_settle_grads(&g));
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

    free(want_logits);
    free(want_loss);
    ad_graph_free(&g);
    ad_batch_free(&b);
    ad_model_free(&m);
    ad_backend_destroy(be);
}

/* One forward, summed cross-entropy and backward of `train` on the fixture batch; the graph is
 * left for the caller to read (and free). */
static void ce_gradients(ad_backend *be, ad_model *m, const ad_batch *b, const ad_graph_limits *lim,
                         const ad_trainable *train, ad_train_graph *g) {
    CHECK_OK(ad_graph_init(g, m, lim, train));
    size_t plan_act, plan_grad;
    CHECK_OK(ad_graph_plan(&m->cfg, lim, train, &plan_act, &plan_grad));
    CHECK_MSG(plan_act == g->arena.capacity && plan_grad == g->grad_bytes,
              "plan %zu + %zu bytes, allocated %zu + %zu", plan_act, plan_grad, g->arena.capacity,
              g->grad_bytes);
    CHECK_OK(ad_graph_forward(g, b));
    const int S = g->n_supervised;
    const int64_t V = m->cfg.vocab_size;
    ad_tensor logits, targets;
    ad_tensor_init(&logits, g->logits.data, AD_F32, AD_DEVICE_CPU, 2, (int64_t[]){S, V}, "logits");
    ad_tensor_init(&targets, g->targets.data, AD_I32, AD_DEVICE_CPU, 1, (int64_t[]){S}, "targets");
    ad_distill_params p = {.alpha = 0, .temperature = 1, .grad_scale = 1};
    ad_distill_sums sums = {0};
    CHECK_OK(be->distill_loss(be, &logits, &logits, NULL, &targets, &p, &sums));
    CHECK_OK(ad_graph_backward(g));
}

/* Forward, summed cross-entropy and backward on a graph already set up. */
static void ce_step(ad_backend *be, const ad_batch *b, ad_train_graph *g) {
    CHECK_OK(ad_graph_forward(g, b));
    ad_tensor logits, targets;
    const int S = g->n_supervised;
    ad_tensor_init(&logits, g->logits.data, AD_F32, AD_DEVICE_CPU, 2,
                   (int64_t[]){S, g->m->cfg.vocab_size}, "logits");
    ad_tensor_init(&targets, g->targets.data, AD_I32, AD_DEVICE_CPU, 1, (int64_t[]){S}, "targets");
    ad_distill_params p = {.alpha = 0, .temperature = 1, .grad_scale = 1};
    ad_distill_sums sums = {0};
    CHECK_OK(be->distill_loss(be, &logits, &logits, NULL, &targets, &p, &sums));
    CHECK_OK(ad_graph_backward(g));
}

/* Gradients of graphs a and b equal bit for bit (and finite); returns how many were compared. */
static int same_gradients(const char *what, ad_train_graph *a, ad_train_graph *b) {
    ad_weight_spec *specs;
    int n_specs, compared = 0, differ = 0, nonfinite = 0;
    CHECK_OK(ad_weight_specs(&a->m->cfg, &specs, &n_specs));
    for (int i = 0; i < n_specs; i++) {
        const ad_tensor *x = ad_model_weight(&a->grads, specs[i].name),
                        *y = ad_model_weight(&b->grads, specs[i].name);
        if (!x || !y || !x->data || !y->data) continue;
        const int64_t n = ad_tensor_numel(x);
        for (int64_t j = 0; j < n; j++)
            nonfinite += !isfinite(((const float *)x->data)[j]);
        differ += memcmp(x->data, y->data, sizeof(float) * (size_t)n) != 0;
        compared++;
    }
    free(specs);
    CHECK_MSG(compared > 0 && differ == 0 && nonfinite == 0,
              "%s: %d of %d gradients differ, %d non-finite values", what, differ, compared,
              nonfinite);
    return compared;
}

static void poison(float *p, size_t bytes) {
    for (size_t i = 0; i < bytes / sizeof(float); i++)
        p[i] = NAN;
}

/* ad_graph_zero_grads leaves the linear weights' gradients to their first GEMM (beta 0): over
 * memory full of NaN, a step gives the gradients of a step accumulated onto real zeros, bit
 * for bit, and so does a second, accumulating, micro-batch; ad_graph_settle_grads writes the
 * deferred zeros. With tied embeddings lm_head's gradient is the embeddings' (accumulated by
 * embedding_backward too), which must not be deferred. */
static void test_deferred_zeros(void) {
    ad_backend *be;
    CHECK_OK(ad_backend_cpu_create(&be, 0));
    ad_cpu_register_backward(be);
    ad_batch b;
    CHECK_OK(fixture_batch(&ref, &b));
    ad_graph_limits lim = {
        .max_clips = 2, .max_frames = b.max_frames, .max_len = b.max_len, .max_supervised = 16};
    for (int tied = 0; tied < 2; tied++) {
        ad_model m;
        CHECK_OK(ad_model_load(&m, be, AUDISTILL_FIXTURES "/tiny_a"));
        if (tied) m.cfg.tie_word_embeddings = true, m.lm_head = m.embed_tokens;
        ad_train_graph lazy, eager;
        CHECK_OK(ad_graph_init(&lazy, &m, &lim, &all));
        CHECK_OK(ad_graph_init(&eager, &m, &lim, &all));
        CHECK(lazy.n_deferred > 0 && lazy.eager_grad_bytes < lazy.grad_bytes / 2);
        /* eager: every gradient written as zeros, nothing deferred */
        CHECK_OK(ad_graph_settle_grads(&eager));
        memset(eager.grad_memory, 0, eager.grad_bytes);
        poison(lazy.grad_memory, lazy.grad_bytes);
        CHECK_OK(ad_graph_zero_grads(&lazy));
        ce_step(be, &b, &lazy);
        ce_step(be, &b, &eager);
        const int n =
            same_gradients(tied ? "tied, one micro-batch" : "one micro-batch", &lazy, &eager);
        ce_step(be, &b, &lazy);
        ce_step(be, &b, &eager);
        same_gradients(tied ? "tied, two micro-batches" : "two micro-batches", &lazy, &eager);
        /* zeros without a backward */
        poison(lazy.grad_memory, lazy.grad_bytes);
        CHECK_OK(ad_graph_zero_grads(&lazy));
        CHECK_OK(ad_graph_settle_grads(&lazy));
        int nonzero = 0;
        for (size_t i = 0; i < lazy.eager_grad_bytes / sizeof(float); i++)
            nonzero += ((const float *)lazy.grad_memory)[i] != 0.0f;
        for (int i = 0; i < lazy.n_deferred; i++)
            for (int64_t j = 0; j < lazy.deferred[i].numel; j++)
                nonzero += ((const float *)lazy.deferred[i].data)[j] != 0.0f;
        CHECK_MSG(nonzero == 0, "%d gradient values not zero after settling", nonzero);
        printf("%s: %d gradients equal bit for bit with deferred zeros (%d deferred, %zu of %zu "
               "bytes filled)\n",
               tied ? "tied embeddings" : "untied", n, lazy.n_deferred, lazy.eager_grad_bytes,
               lazy.grad_bytes);
        ad_graph_free(&lazy);
        ad_graph_free(&eager);
        ad_model_free(&m);
    }
    ad_batch_free(&b);
    ad_backend_destroy(be);
}

/* Activation recomputation (train.recompute) gives every gradient bit for bit, for each
 * trainable set, in less memory; against torch for the full set. A frozen encoder keeps no
 * per-layer records either way. */
static void test_recompute(void) {
    ad_backend *be;
    CHECK_OK(ad_backend_cpu_create(&be, 0));
    ad_cpu_register_backward(be);
    ad_model m;
    CHECK_OK(ad_model_load(&m, be, AUDISTILL_FIXTURES "/tiny_a"));
    ad_batch b;
    CHECK_OK(fixture_batch(&ref, &b));
    ad_graph_limits lim = {
        .max_clips = 2, .max_frames = b.max_frames, .max_len = b.max_len, .max_supervised = 16};
    const ad_trainable sets[] = {all,
                                 {.decoder = true, .lm_head = true},
                                 {.projector = true, .lm_head = true},
                                 {.audio_encoder = true}};
    const char *names[] = {"all", "decoder + lm_head", "projector + lm_head", "audio encoder"};
    ad_weight_spec *specs;
    int n_specs;
    CHECK_OK(ad_weight_specs(&m.cfg, &specs, &n_specs));
    size_t bytes[4][2];
    for (int s = 0; s < 4; s++) {
        ad_trainable with = sets[s];
        with.recompute = true;
        ad_train_graph keep, re;
        ce_gradients(be, &m, &b, &lim, &sets[s], &keep);
        ce_gradients(be, &m, &b, &lim, &with, &re);
        int compared = 0, differ = 0;
        for (int i = 0; i < n_specs; i++) {
            const ad_tensor *x = ad_model_weight(&keep.grads, specs[i].name),
                            *y = ad_model_weight(&re.grads, specs[i].name);
            CHECK((x->data == NULL) == (y->data == NULL));
            if (!x->data || !y->data) continue;
            compared++;
            differ += memcmp(x->data, y->data, sizeof(float) * (size_t)ad_tensor_numel(x)) != 0;
        }
        CHECK_MSG(compared > 0 && differ == 0, "%s: %d of %d gradients differ with recompute",
                  names[s], differ, compared);
        if (s == 0) compare_gradients(&ref, &m, &re);
        bytes[s][0] = keep.arena.capacity, bytes[s][1] = re.arena.capacity;
        printf("%s: %d gradients equal bit for bit; activations %zu bytes, %zu with recompute\n",
               names[s], compared, bytes[s][0], bytes[s][1]);
        CHECK(bytes[s][1] < bytes[s][0]);
        ad_graph_free(&keep);
        ad_graph_free(&re);
    }
    /* No gradient passes through a frozen encoder: its layers share one record. */
    CHECK_MSG(bytes[1][0] < bytes[0][0], "frozen encoder %zu vs all %zu bytes", bytes[1][0],
              bytes[0][0]);
    free(specs);
    ad_batch_free(&b);
    ad_model_free(&m);
    ad_backend_destroy(be);
}

/* The CTC term (train/ctc_term.c) on the audio positions: loss CE + w * sum of CTC losses, every
 * parameter gradient against torch autograd with F.ctc_loss (grad/tiny_a_ctc.safetensors). */
static void test_ctc_gradients_match_torch(void) {
    ad_safetensors st;
    if (ad_safetensors_open(&st, AUDISTILL_FIXTURES "/grad/tiny_a_ctc.safetensors") < 0) {
        CHECK_MSG(false, "%s", ad_error());
        return;
    }
    ad_backend *be;
    CHECK_OK(ad_backend_cpu_create(&be, 0));
    ad_cpu_register_backward(be);
    ad_model m;
    CHECK_OK(ad_model_load(&m, be, AUDISTILL_FIXTURES "/tiny_a"));
    ad_batch b;
    CHECK_OK(fixture_batch(&st, &b));
    int64_t n_ids, n_len, n_w;
    float *ctc_ids = fixture_floats(&st, "input.ctc_ids", &n_ids);
    float *ctc_len = fixture_floats(&st, "input.ctc_len", &n_len);
    float *weight = fixture_floats(&st, "input.ctc_weight", &n_w);
    CHECK(ctc_ids && ctc_len && weight && n_len == b.n && n_ids % b.n == 0);
    b.ctc_max = (int)(n_ids / b.n);
    b.ctc_len = calloc((size_t)b.n, sizeof(int));
    b.ctc_ids = calloc((size_t)n_ids, sizeof(int32_t));
    int audio_rows = 0;
    for (int i = 0; i < b.n; i++) {
        b.ctc_len[i] = (int)ctc_len[i];
        audio_rows += b.audio_tokens[i];
    }
    for (int64_t i = 0; i < n_ids; i++)
        b.ctc_ids[i] = (int32_t)ctc_ids[i];
    ad_graph_limits lim = {.max_clips = 2,
                           .max_frames = b.max_frames,
                           .max_len = b.max_len,
                           .max_supervised = b.supervised + audio_rows};
    ad_train_graph g;
    CHECK_OK(ad_graph_init(&g, &m, &lim, &all));
    CHECK_OK(ad_graph_forward(&g, &b));
    const int S = g.n_supervised;
    const int64_t V = m.cfg.vocab_size;
    CHECK(g.n_text_rows == b.supervised && S == b.supervised + audio_rows);
    ad_ctc_term term = {0};
    CHECK_OK(ad_ctc_term_read(&term, be, &g));
    ad_tensor logits, targets;
    ad_tensor_init(&logits, g.logits.data, AD_F32, AD_DEVICE_CPU, 2, (int64_t[]){S, V}, "logits");
    ad_tensor_init(&targets, g.targets.data, AD_I32, AD_DEVICE_CPU, 1, (int64_t[]){S}, "targets");
    ad_distill_params p = {.alpha = 0, .temperature = 1, .grad_scale = 1};
    ad_distill_sums sums = {0};
    CHECK_OK(be->distill_loss(be, &logits, &logits, NULL, &targets, &p, &sums));
    CHECK(sums.rows == b.supervised); /* the audio rows stay out of the cross-entropy */
    ad_ctc_sums cs = {0};
    CHECK_OK(
        ad_ctc_term_apply(&term, be, &g, &b, m.cfg.audio_token_index, weight[0], 1.0f, true, &cs));
    CHECK(cs.infeasible == 0 && cs.tokens == ctc_len[0] + ctc_len[1]);
    int64_t n;
    float *want_loss = fixture_floats(&st, "output.loss", &n);
    const double loss = sums.loss + weight[0] * cs.nll;
    CHECK_MSG(fabs(loss - want_loss[0]) <= 1e-5 * fabs(want_loss[0]), "loss %.7g vs %.7g", loss,
              want_loss[0]);
    CHECK_OK(ad_graph_backward(&g));
    compare_gradients(&st, &m, &g);

    /* A transcript too long for its clip is counted, not fatal, and adds no gradient. */
    b.ctc_len[1] = b.ctc_max = b.audio_tokens[1] + 1;
    int32_t *longer = calloc((size_t)(2 * b.ctc_max), sizeof(int32_t));
    for (int i = 0; i < 2 * b.ctc_max; i++)
        longer[i] = 40 + i % 3;
    free(b.ctc_ids);
    b.ctc_ids = longer;
    b.ctc_len[0] = 2;
    CHECK_OK(ad_graph_forward(&g, &b));
    CHECK_OK(ad_ctc_term_read(&term, be, &g));
    cs = (ad_ctc_sums){0};
    CHECK_OK(ad_ctc_term_apply(&term, be, &g, &b, m.cfg.audio_token_index, 1.0f, 1.0f, true, &cs));
    CHECK(cs.infeasible == 1 && cs.tokens == 2);
    /* The blank is never a transcript token. */
    b.ctc_ids[0] = m.cfg.audio_token_index;
    CHECK_OK(ad_ctc_term_read(&term, be, &g));
    CHECK_FAILS_WITH(
        ad_ctc_term_apply(&term, be, &g, &b, m.cfg.audio_token_index, 1.0f, 1.0f, true, &cs),
        "CTC loss of segment 0");

    ad_ctc_term_free(&term);
    free(ctc_ids), free(ctc_len), free(weight), free(want_loss);
    ad_graph_free(&g);
    ad_batch_free(&b);
    ad_model_free(&m);
    ad_backend_destroy(be);
    ad_safetensors_close(&st);
}

int main(void) {
    if (ad_safetensors_open(&ref, AUDISTILL_FIXTURES "/grad/tiny_a_ce.safetensors") < 0) {
        fprintf(stderr, "%s\n", ad_error());
        return 1;
    }
    RUN(test_gradients_match_torch);
    RUN(test_ctc_gradients_match_torch);
    RUN(test_recompute);
    RUN(test_deferred_zeros);
    ad_safetensors_close(&ref);
    return test_report();
}
