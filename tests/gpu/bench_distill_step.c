/* One distillation step on the CUDA backend at real widths, for tests/gpu/check.sh: a frozen
 * teacher (bf16 weights, forward only) and a student (bf16 weights, fp32 master weights and
 * AdamW moments, decoder + projector + lm_head trainable, audio encoder frozen), both loaded
 * from Hugging Face directories that tests/gpu/bench_distill.py wrote, a batch of clips of
 * FRAMES mel frames (100 per second) with a short prompt and TARGETS target tokens each.
 * Step = student forward, teacher forward, fused KL + CE, student backward, global-norm
 * clipping, AdamW on the fp32 masters and the cast back to bf16. Prints one JSON line.
 * When the two audio encoders are equal (the student pruned from the teacher keeps it, as
 * bench_distill.py builds them by default), the teacher takes the student's encoder output
 * (ad_graph_share_encoder, as `audistill train` does): one encoder forward per step.
 *
 *   bench_distill_step TEACHER_DIR STUDENT_DIR BATCH FRAMES TARGETS STEPS
 *                      [f32|bf16|bf16-gemm|bf16-flash|bf16-f32in]
 * The last argument picks the GEMM precision: f32 (the reference, default) or bf16
 * (ad_cuda_set_bf16_matmul: operands rounded to bf16, fp32 accumulation, as autocast), with
 * attention as AUTO picks it (the flash kernels where they apply) and the activations only GEMMs
 * read stored in bf16 (ad_graph_limits.gemm_inputs_bf16), as `audistill train` runs precision
 * bf16; bf16-gemm and bf16-flash force attention through the batched GEMMs or the flash kernels
 * (ad_cuda_set_attention_path); bf16-f32in keeps those activations in f32, converted by every
 * GEMM that reads them; bf16-separate is bf16 with the teacher running its own encoder even
 * when the encoders are equal (the cost of a second encoder forward). */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "../../cuda/backend_cuda.h"
#include "backend/device_peak.h"
#include "backend/profile.h"
#include "core/compare.h"
#include "core/log.h"
#include "core/rng.h"
#include "model/train_graph.h"
#include "model/weights.h"
#include "train/loader.h"
#include "train/optim.h"

#define TRY(x)                                                                                     \
    do {                                                                                           \
        if ((x) < 0) {                                                                             \
            fprintf(stderr, "bench_distill_step: %s failed: %s\n", #x, ad_error());                \
            exit(1);                                                                               \
        }                                                                                          \
    } while (0)

typedef struct {
    ad_tensor *weight, *grad;
    float *master, *m, *v;
    int64_t n;
    bool decay;
} slot;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* A text token: ids 100..100+range as the real vocabulary's ordinary pieces, or anywhere in a
 * small test vocabulary; never the audio placeholder. */
static int32_t text_id(ad_rng *rng, int64_t vocab, int32_t audio, uint32_t range) {
    const bool big = vocab > 100 + (int64_t)range;
    int32_t id = (big ? 100 : 0) + (int32_t)ad_rng_below(rng, big ? range : (uint32_t)vocab);
    return id == audio ? (id + 1) % (int32_t)vocab : id;
}

static void make_batch(ad_batch *b, const ad_model_config *cfg, int n, int frames, int targets,
                       ad_rng *rng) {
    const int before = 10, after = 5, mels = cfg->num_mel_bins;
    memset(b, 0, sizeof *b);
    b->n = n;
    b->n_mels = mels;
    b->max_frames = frames;
    b->features = malloc(sizeof(float) * (size_t)n * (size_t)mels * (size_t)frames);
    for (int64_t i = 0; i < (int64_t)n * mels * frames; i++)
        b->features[i] = ad_rng_normal(rng) * 0.5f;
    b->frames = malloc(sizeof(int) * (size_t)n);
    b->audio_tokens = malloc(sizeof(int) * (size_t)n);
    b->len = malloc(sizeof(int) * (size_t)n);
    b->lang = calloc((size_t)n, sizeof(int));
    const int audio = ad_loader_audio_tokens(frames);
    b->max_len = before + audio + after + targets;
    b->ids = calloc((size_t)n * (size_t)b->max_len, sizeof(int32_t));
    b->labels = malloc(sizeof(int32_t) * (size_t)n * (size_t)b->max_len);
    for (int i = 0; i < n; i++) {
        b->frames[i] = frames;
        b->audio_tokens[i] = audio;
        b->len[i] = b->max_len;
        int32_t *ids = b->ids + (size_t)i * (size_t)b->max_len;
        int p = 0;
        for (int k = 0; k < before; k++)
            ids[p++] = text_id(rng, cfg->vocab_size, cfg->audio_token_index, 1000);
        for (int k = 0; k < audio; k++)
            ids[p++] = cfg->audio_token_index;
        for (int k = 0; k < after + targets; k++)
            ids[p++] = text_id(rng, cfg->vocab_size, cfg->audio_token_index, 100000);
        const int first_target = before + audio + after;
        for (int t = 0; t < b->max_len; t++) {
            int32_t lab =
                t >= first_target - 1 && t + 1 < b->max_len ? ids[t + 1] : AD_IGNORE_LABEL;
            b->labels[(size_t)i * (size_t)b->max_len + (size_t)t] = lab;
            b->supervised += lab != AD_IGNORE_LABEL;
        }
    }
}

int main(int argc, char **argv) {
    if (argc != 7 && argc != 8) {
        fprintf(stderr, "usage: bench_distill_step TEACHER_DIR STUDENT_DIR BATCH FRAMES TARGETS "
                        "STEPS [f32|bf16|bf16-gemm|bf16-flash|bf16-f32in|bf16-tuned]\n");
        return 2;
    }
    const int batch = atoi(argv[3]), frames = atoi(argv[4]), targets = atoi(argv[5]),
              steps = atoi(argv[6]);
    ad_backend *be;
    TRY(ad_backend_cuda_create(&be, 0));
    const char *mode = argc == 8 ? argv[7] : "f32";
    const bool flash = strcmp(mode, "bf16-flash") == 0, gemm = strcmp(mode, "bf16-gemm") == 0,
               f32_inputs = strcmp(mode, "bf16-f32in") == 0,
               tuned = strcmp(mode, "bf16-tuned") == 0,
               separate = strcmp(mode, "bf16-separate") == 0,
               bf16 = flash || gemm || f32_inputs || tuned || separate || strcmp(mode, "bf16") == 0;
    if (!bf16 && strcmp(mode, "f32") != 0) {
        fprintf(stderr,
                "bench_distill_step: mode '%s' is not f32, bf16, bf16-gemm, bf16-flash, "
                "bf16-f32in, bf16-tuned or bf16-separate\n",
                mode);
        return 2;
    }
    TRY(ad_cuda_set_bf16_matmul(be, bf16));
    if (tuned) { /* timed in the warm-up step; each problem's timings logged (check.sh) */
        TRY(ad_cuda_set_gemm_tuning(be, true));
        ad_log_set_level(AD_LOG_DEBUG);
    }
    if (flash || gemm)
        TRY(ad_cuda_set_attention_path(be,
                                       flash ? AD_CUDA_ATTENTION_FLASH : AD_CUDA_ATTENTION_GEMM));
    double t0 = now_s();
    ad_model teacher, student;
    TRY(ad_model_load(&teacher, be, argv[1]));
    TRY(ad_model_load(&student, be, argv[2]));
    fprintf(stderr, "loaded both models in %.1f s\n", now_s() - t0);
    ad_rng rng;
    ad_rng_init(&rng, 7, 0);
    ad_batch b;
    make_batch(&b, &student.cfg, batch, frames, targets, &rng);
    ad_graph_limits lim = {.max_clips = batch,
                           .max_frames = frames,
                           .max_len = b.max_len,
                           .max_supervised = b.supervised,
                           .gemm_inputs_bf16 = bf16 && !f32_inputs};
    ad_trainable none = {0}, train = {.projector = true, .decoder = true, .lm_head = true};
    ad_train_graph tg, sg;
    TRY(ad_graph_init(&tg, &teacher, &lim, &none));
    TRY(ad_graph_init(&sg, &student, &lim, &train));
    bool shared = false;
    char why[160];
    if (!separate) TRY(ad_model_same_audio_encoder(&teacher, &student, &shared, why, sizeof why));
    if (shared) TRY(ad_graph_share_encoder(&tg, &sg));
    fprintf(stderr, "audio encoder: %s\n",
            shared     ? "one forward, shared (the student's is the teacher's)"
            : separate ? "each model runs its own (bf16-separate)"
                       : why);

    ad_weight_spec *specs;
    int n_specs;
    TRY(ad_weight_specs(&student.cfg, &specs, &n_specs));
    slot *slots = calloc((size_t)n_specs, sizeof *slots);
    int n_slots = 0;
    int64_t trainable = 0;
    for (int i = 0; i < n_specs; i++) {
        ad_tensor *g = ad_model_weight(&sg.grads, specs[i].name);
        if (!g || !g->data) continue;
        slot *s = &slots[n_slots++];
        s->weight = ad_model_weight(&student, specs[i].name);
        s->grad = g;
        s->n = ad_tensor_numel(g);
        s->decay = ad_param_decays(specs[i].name, specs[i].ndim);
        TRY(be->alloc(be, sizeof(float) * (size_t)s->n, (void **)&s->master));
        TRY(be->alloc(be, sizeof(float) * (size_t)s->n, (void **)&s->m));
        TRY(be->alloc(be, sizeof(float) * (size_t)s->n, (void **)&s->v));
        if (s->weight->dtype != AD_BF16) {
            fprintf(stderr, "expected bf16 student weights, got %s\n",
                    ad_dtype_name(s->weight->dtype));
            return 1;
        }
        TRY(ad_cuda_cast_bf16_to_f32(s->master, s->weight->data, s->n));
        trainable += s->n;
    }
    float **grads = malloc(sizeof(float *) * (size_t)n_slots);
    int64_t *counts = malloc(sizeof(int64_t) * (size_t)n_slots);
    for (int i = 0; i < n_slots; i++)
        grads[i] = slots[i].grad->data, counts[i] = slots[i].n;

    const int S = b.supervised;
    const int64_t V = student.cfg.vocab_size;
    ad_distill_params p = {
        .alpha = 0.5f, .temperature = 2.0f, .kind = AD_KL_FORWARD, .grad_scale = 1.0f / (float)S};
    double *ms = malloc(sizeof(double) * (size_t)(steps + 2));
    double first_loss = 0, last_loss = 0;
    /* Two warm-ups, the timed steps, then one step with every op timed (backend/profile.h):
     * the table goes to stderr, with the step time it explains. */
    double profiled_ms = 0;
    for (int it = 0; it < steps + 3; it++) {
        const bool profiled = it == steps + 2;
        if (profiled) TRY(ad_backend_profile_start(be));
        double s0 = now_s();
        TRY(ad_graph_zero_grads(&sg));
        TRY(ad_graph_forward(&sg, &b));
        TRY(ad_graph_forward(&tg, &b));
        ad_tensor logits, tlogits, tgt;
        TRY(ad_tensor_init(&logits, sg.logits.data, AD_F32, be->device, 2, (int64_t[]){S, V},
                           "student logits"));
        TRY(ad_tensor_init(&tlogits, tg.logits.data, AD_F32, be->device, 2, (int64_t[]){S, V},
                           "teacher logits"));
        TRY(ad_tensor_init(&tgt, sg.targets.data, AD_I32, be->device, 1, (int64_t[]){S},
                           "targets"));
        ad_distill_sums sums = {0};
        TRY(be->distill_loss(be, &logits, &logits, &tlogits, &tgt, &p, &sums));
        TRY(ad_graph_backward(&sg));
        double norm;
        TRY(ad_cuda_grad_norm(grads, counts, n_slots, &norm));
        /* clipping and the bf16 copy of the weights ride in the AdamW pass */
        const float clip = norm > 1.0 ? (float)(1.0 / norm) : 1.0f;
        for (int i = 0; i < n_slots; i++) {
            slot *s = &slots[i];
            TRY(ad_cuda_adamw_step(s->master, s->grad->data, s->m, s->v, s->n, 1e-5, 0.9, 0.999,
                                   1e-8, 0.01, s->decay, it + 1, clip, s->weight->data));
        }
        TRY(ad_cuda_synchronize());
        if (profiled) {
            profiled_ms = 1e3 * (now_s() - s0);
            const double in_ops = ad_backend_profile_report(be, stderr, 60);
            fprintf(stderr,
                    "profiled step: %.1f ms, %.1f ms in table ops (the rest: the optimizer's "
                    "own kernels and the host)\n",
                    profiled_ms, 1e3 * in_ops);
            ad_backend_profile_stop(be);
            continue;
        }
        if (it >= 2) ms[it - 2] = 1e3 * (now_s() - s0);
        if (it == 0) first_loss = sums.loss / (double)sums.rows;
        last_loss = sums.loss / (double)sums.rows;
        if (!isfinite(last_loss)) {
            fprintf(stderr, "non-finite loss at step %d\n", it);
            return 1;
        }
    }
    qsort(ms, (size_t)steps, sizeof(double), ad_compare_doubles);
    size_t free_b = 0, total_b = 0;
    TRY(ad_cuda_memory_info(&free_b, &total_b));
    const double med = ms[steps / 2];
    const int64_t tokens = (int64_t)batch * b.max_len;
    ad_cuda_gemm_tuning tuning;
    TRY(ad_cuda_gemm_tuning_stats(be, &tuning));
    double peak;
    TRY(ad_device_peak_for_run(be->device_name, &peak));
    char device[sizeof be->device_name];
    snprintf(device, sizeof device, "%s", be->device_name);
    for (char *c = device; *c; c++) /* kept a plain JSON string */
        if (*c == '"' || *c == '\\' || (unsigned char)*c < 0x20) *c = ' ';
    printf(
        "{\"impl\": \"audistill-%s\", \"ms_per_step\": %.2f, \"ms_min\": %.2f, \"tokens\": %lld, "
        "\"tokens_per_s\": %.1f, \"supervised\": %d, \"trainable\": %lld, "
        "\"device_bytes_used\": %zu, "
        "\"loss_first\": %.5f, \"loss_last\": %.5f, \"profiled_step_ms\": %.2f, "
        "\"attention_flash_calls\": %ld, \"attention_gemm_calls\": %ld, \"key_len_uploads\": "
        "%ld, \"gemm_tuned\": %ld, \"gemm_tuning_changed\": %ld, \"gemm_bias_first\": %ld, "
        "\"gemm_heuristic_ms\": %.3f, \"gemm_tuned_ms\": %.3f, \"attention_tuned\": %ld, "
        "\"attention_tuning_changed\": %ld, \"shared_encoder\": %s, \"device\": \"%s\", "
        "\"peak_tflops\": %.6g}\n",
        mode, med, ms[0], (long long)tokens, 1e3 * (double)tokens / med, S, (long long)trainable,
        total_b - free_b, first_loss, last_loss, profiled_ms, ad_cuda_attention_flash_calls(be),
        ad_cuda_attention_gemm_calls(be), ad_cuda_key_len_uploads(be), tuning.problems,
        tuning.changed, tuning.bias_first, tuning.first_ms, tuning.best_ms,
        tuning.attention_problems, tuning.attention_changed, shared ? "true" : "false", device,
        peak);
    for (int i = 0; i < n_slots; i++) {
        be->release(be, slots[i].master);
        be->release(be, slots[i].m);
        be->release(be, slots[i].v);
    }
    free(slots), free(specs), free(grads), free(counts), free(ms);
    ad_graph_free(&sg);
    ad_graph_free(&tg);
    ad_batch_free(&b);
    ad_model_free(&student);
    ad_model_free(&teacher);
    ad_backend_destroy(be);
    return 0;
}
