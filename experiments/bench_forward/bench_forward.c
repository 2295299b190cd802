/* Times one Qwen2-Audio forward through audistill: audio encoder + projector + the decoder over
 * the whole prompt (logits for every position, as transformers' forward returns them).
 *   bench_forward MODEL_DIR INPUTS.safetensors ITERATIONS THREADS
 * INPUTS holds features [1, mel, frames] F32, frames [1] I32 (valid frames), input_ids [T] I32.
 * Prints the median milliseconds per forward. */
#include "backend/cpu/cpu_tune.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "backend/backend.h"
#include "io/safetensors.h"
#include "model/model.h"

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static int cmp(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

static int die(void) {
    fprintf(stderr, "bench_forward: %s\n", ad_error());
    return 1;
}

int main(int argc, char **argv) {
    ad_cpu_tune_process(argv); /* as the audistill command does */
    if (argc != 5) {
        fprintf(stderr, "usage: bench_forward MODEL_DIR INPUTS.safetensors ITERATIONS THREADS\n");
        return 2;
    }
    const int iters = atoi(argv[3]);
    ad_backend *be;
    if (ad_backend_cpu_create(&be, atoi(argv[4])) < 0) return die();
    ad_model m;
    if (ad_model_load(&m, be, argv[1]) < 0) return die();
    ad_safetensors in;
    if (ad_safetensors_open(&in, argv[2]) < 0) return die();
    ad_tensor feat, fr, ids;
    if (ad_safetensors_view(&in, ad_safetensors_find(&in, "features"), &feat) < 0 ||
        ad_safetensors_view(&in, ad_safetensors_find(&in, "frames"), &fr) < 0 ||
        ad_safetensors_view(&in, ad_safetensors_find(&in, "input_ids"), &ids) < 0)
        return die();
    const int T = (int)ids.shape[0];
    int frames = *(const int32_t *)fr.data;
    ad_model_limits lim = {.max_clips = 1,
                           .max_frames = (int)feat.shape[2],
                           .max_rows = 1,
                           .max_tokens = T,
                           .max_step_tokens = T,
                           .max_logit_rows = T};
    ad_model_state st;
    if (ad_model_state_init(&st, &m, &lim) < 0) return die();
    int *rows = malloc(sizeof(int) * (size_t)T);
    for (int t = 0; t < T; t++)
        rows[t] = t;
    double *ms = malloc(sizeof(double) * (size_t)(iters + 1));
    for (int i = -1; i < iters; i++) { /* one warm-up run */
        double t0 = now_ms();
        ad_model_state_reset(&st);
        ad_decode_input di = {(const int32_t *)ids.data, &T, 1, T, true};
        if (ad_model_encode(&st, &feat, &frames) < 0 || ad_model_decode(&st, &di, rows, T) < 0)
            return die();
        if (i >= 0) ms[i] = now_ms() - t0;
    }
    qsort(ms, (size_t)iters, sizeof *ms, cmp);
    printf("%.3f\n", ms[iters / 2]);
    free(ms);
    free(rows);
    ad_model_state_free(&st);
    ad_safetensors_close(&in);
    ad_model_free(&m);
    ad_backend_destroy(be);
    return 0;
}
