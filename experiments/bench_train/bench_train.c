/* One training step (forward of student and teacher-free CE loss over the supervised rows,
 * backward, AdamW) of a model on a fixed batch, timed: prints the median milliseconds.
 *   bench_train MODEL_DIR BATCH.safetensors ITERATIONS THREADS
 * BATCH holds input.features [B, mels, T], input.frames, input.ids, input.len, input.labels as
 * bench.py writes them. */
#include <stdio.h>
#include <stdlib.h>

#include "../../tests/fixture_batch.h"
#include "backend/cpu/cpu_tune.h"
#include "core/progress.h"
#include "model/train_graph.h"
#include "model/weights.h"
#include "train/optim.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

int main(int argc, char **argv) {
    ad_cpu_tune_process(argv);
    if (argc != 5) {
        fprintf(stderr, "usage: bench_train MODEL_DIR BATCH.safetensors ITERATIONS THREADS\n");
        return 2;
    }
    const int iters = atoi(argv[3]);
    ad_backend *be;
    ad_model m;
    ad_safetensors st;
    ad_batch b;
    if (ad_backend_cpu_create(&be, atoi(argv[4])) < 0 || ad_model_load(&m, be, argv[1]) < 0 ||
        ad_safetensors_open(&st, argv[2]) < 0 || fixture_batch(&st, &b) < 0)
        goto fail;
    ad_graph_limits lim = {.max_clips = b.n,
                           .max_frames = b.max_frames,
                           .max_len = b.max_len,
                           .max_supervised = b.supervised};
    ad_trainable all = {.audio_encoder = true,
                        .projector = true,
                        .decoder = true,
                        .embed_tokens = true,
                        .lm_head = true};
    ad_train_graph g;
    if (ad_graph_init(&g, &m, &lim, &all) < 0) goto fail;
    ad_weight_spec *specs;
    int n;
    if (ad_weight_specs(&m.cfg, &specs, &n) < 0) goto fail;
    ad_param_ref *p = calloc((size_t)n, sizeof *p);
    int np = 0;
    for (int i = 0; i < n; i++) {
        ad_tensor *w = ad_model_weight(&m, specs[i].name),
                  *d = ad_model_weight(&g.grads, specs[i].name);
        if (!d->data) continue;
        int64_t k = ad_weight_spec_numel(&specs[i]);
        p[np++] = (ad_param_ref){specs[i].name,
                                 w->data,
                                 d->data,
                                 calloc((size_t)k, 4),
                                 calloc((size_t)k, 4),
                                 k,
                                 ad_param_decays(specs[i].name, specs[i].ndim)};
    }
    ad_adamw_config ac = {0.9, 0.999, 1e-8, 0.01};
    double *ms = calloc((size_t)iters + 1, sizeof *ms);
    for (int it = -1; it < iters; it++) { /* one warm-up step */
        double t0 = ad_now_seconds();
        if (ad_graph_forward(&g, &b) < 0) goto fail;
        ad_tensor logits, targets;
        ad_tensor_init(&logits, g.logits.data, AD_F32, AD_DEVICE_CPU, 2,
                       (int64_t[]){g.n_supervised, m.cfg.vocab_size}, "logits");
        ad_tensor_init(&targets, g.targets.data, AD_I32, AD_DEVICE_CPU, 1,
                       (int64_t[]){g.n_supervised}, "targets");
        ad_distill_params dp = {
            .alpha = 0, .temperature = 1, .grad_scale = 1.0f / (float)g.n_supervised};
        ad_distill_sums sums = {0};
        if (be->distill_loss(be, &logits, &logits, NULL, &targets, &dp, &sums) < 0 ||
            ad_graph_backward(&g) < 0)
            goto fail;
        ad_clip_grad_norm(p, np, 1.0);
        ad_adamw_step(p, np, &ac, 1e-4, it + 2);
        if (ad_graph_zero_grads(&g) < 0) goto fail;
        if (it >= 0) ms[it] = (ad_now_seconds() - t0) * 1e3;
    }
    qsort(ms, (size_t)iters, sizeof *ms, cmp_double);
    printf("%.1f\n", ms[iters / 2]);
    return 0;
fail:
    fprintf(stderr, "bench_train: %s\n", ad_error());
    return 1;
}
