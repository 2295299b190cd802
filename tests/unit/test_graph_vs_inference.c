/* The training graph against the inference path (model.c, itself equal to transformers'
 * generate) on a batch of several clips of different lengths, the shape every training batch
 * has: the graph's supervised logits for all clips at once must equal, row by row, the logits
 * of each clip encoded and decoded on its own with teacher forcing. The gradient fixture has
 * two clips; this covers the per-clip bookkeeping (audio rows, key lengths, padding) for more. */
#include <math.h>
#include <time.h>

#include "backend/cpu/cpu_backward.h"
#include "core/rng.h"
#include "model/train_graph.h"
#include "test.h"
#include "train/loader.h"

enum { CLIPS = 5 };

static void test_batch_equals_single_clips(void) {
    ad_backend *be;
    CHECK_OK(ad_backend_cpu_create(&be, 2));
    ad_cpu_register_backward(be);
    ad_model m;
    CHECK_OK(ad_model_load(&m, be, AUDISTILL_FIXTURES "/tiny_a"));
    const ad_model_config *cfg = &m.cfg;
    ad_rng rng;
    ad_rng_init(&rng, (uint64_t)time(NULL), 0); /* fresh inputs every run */
    const int M = cfg->num_mel_bins, window = 2 * cfg->max_source_positions;
    const int frames[CLIPS] = {window, 13, window - 7, 29, 5};
    const int before = 3, after = 2, targets[CLIPS] = {4, 1, 6, 3, 2};
    ad_batch b = {0};
    b.n = CLIPS, b.n_mels = M, b.max_frames = window;
    b.features = malloc(sizeof(float) * (size_t)(CLIPS * M * window));
    b.frames = malloc(sizeof(int) * CLIPS), b.audio_tokens = malloc(sizeof(int) * CLIPS);
    b.len = malloc(sizeof(int) * CLIPS), b.lang = calloc(CLIPS, sizeof(int));
    for (int i = 0; i < CLIPS * M * window; i++)
        b.features[i] = ad_rng_normal(&rng);
    for (int c = 0; c < CLIPS; c++) {
        b.frames[c] = frames[c];
        b.audio_tokens[c] = ad_loader_audio_tokens(frames[c]);
        b.len[c] = before + b.audio_tokens[c] + after + targets[c];
        if (b.len[c] > b.max_len) b.max_len = b.len[c];
    }
    b.ids = calloc((size_t)(CLIPS * b.max_len), sizeof(int32_t));
    b.labels = malloc(sizeof(int32_t) * (size_t)(CLIPS * b.max_len));
    for (int c = 0; c < CLIPS; c++) {
        int32_t *ids = b.ids + c * b.max_len, *lab = b.labels + c * b.max_len;
        int p = 0;
        for (int k = 0; k < before; k++)
            ids[p++] = (int32_t)ad_rng_below(&rng, 200);
        for (int k = 0; k < b.audio_tokens[c]; k++)
            ids[p++] = cfg->audio_token_index;
        for (int k = 0; k < after + targets[c]; k++)
            ids[p++] = (int32_t)ad_rng_below(&rng, 200);
        const int first = before + b.audio_tokens[c] + after;
        for (int t = 0; t < b.max_len; t++) {
            lab[t] = t >= first - 1 && t + 1 < p ? ids[t + 1] : AD_IGNORE_LABEL;
            b.supervised += lab[t] != AD_IGNORE_LABEL;
        }
    }
    ad_graph_limits lim = {
        .max_clips = CLIPS, .max_frames = window, .max_len = b.max_len, .max_supervised = 64};
    ad_trainable all = {.audio_encoder = true,
                        .projector = true,
                        .decoder = true,
                        .embed_tokens = true,
                        .lm_head = true};
    ad_train_graph g;
    CHECK_OK(ad_graph_init(&g, &m, &lim, &all));
    CHECK_OK(ad_graph_forward(&g, &b));
    CHECK(g.n_supervised == b.supervised);
    const int64_t V = cfg->vocab_size;
    const float *graph_logits = g.logits.data;

    ad_model_limits ml = {.max_clips = 1,
                          .max_frames = window,
                          .max_rows = 1,
                          .max_tokens = b.max_len,
                          .max_step_tokens = b.max_len,
                          .max_logit_rows = b.max_len};
    ad_model_state st;
    CHECK_OK(ad_model_state_init(&st, &m, &ml));
    double worst = 0;
    int row = 0;
    for (int c = 0; c < CLIPS; c++) {
        ad_tensor feat;
        ad_tensor_init(&feat, b.features + (size_t)c * M * window, AD_F32, AD_DEVICE_CPU, 3,
                       (int64_t[]){1, M, window}, "features");
        ad_model_state_reset(&st);
        CHECK_OK(ad_model_encode(&st, &feat, &b.frames[c]));
        int rows[64], n = 0;
        for (int t = 0; t < b.len[c]; t++)
            if (b.labels[c * b.max_len + t] != AD_IGNORE_LABEL) rows[n++] = t;
        ad_decode_input in = {.ids = b.ids + c * b.max_len,
                              .len = &b.len[c],
                              .n_rows = 1,
                              .n_tokens = b.len[c],
                              .use_audio = true};
        CHECK_OK(ad_model_decode(&st, &in, rows, n));
        const float *want = st.logits.data;
        for (int k = 0; k < n; k++, row++) {
            double num = 0, den = 0;
            for (int64_t v = 0; v < V; v++) {
                const double d = (double)graph_logits[row * V + v] - want[k * V + v];
                num += d * d, den += (double)want[k * V + v] * want[k * V + v];
            }
            const double e = sqrt(num / den);
            if (e > worst) worst = e;
            CHECK_MSG(e <= 1e-5, "clip %d (frames %d) target %d: relative L2 %.3g", c, frames[c], k,
                      e);
        }
    }
    printf("%d supervised rows of %d clips: worst relative L2 %.3g against single-clip inference\n",
           row, CLIPS, worst);
    ad_model_state_free(&st);
    ad_graph_free(&g);
    ad_batch_free(&b);
    ad_model_free(&m);
    ad_backend_destroy(be);
}

int main(void) {
    RUN(test_batch_equals_single_clips);
    return test_report();
}
