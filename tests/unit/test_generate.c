/* Greedy and beam-4 decoding against transformers' generate() on the tiny fixtures
 * (make_fixtures.py): token-identical outputs for a batch of two clips of different lengths and
 * for one clip alone, and the beam's sequence score within 1e-4. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "io/safetensors.h"
#include "model/generate.h"
#include "model/model.h"
#include "test.h"

static ad_backend *be;

typedef struct {
    int32_t *v;
    int64_t shape[4];
} ints;

static ints load_ints(ad_safetensors *st, const char *name) {
    ints r = {0};
    const ad_st_entry *e = ad_safetensors_find(st, name);
    ad_tensor t;
    if (!e || ad_safetensors_view(st, e, &t) < 0) {
        fprintf(stderr, "reference tensor %s: %s\n", name, e ? ad_error() : "missing");
        exit(1);
    }
    memcpy(r.shape, t.shape, sizeof r.shape);
    int64_t n = ad_tensor_numel(&t);
    float *f = malloc(sizeof(float) * (size_t)n + 1);
    r.v = malloc(sizeof(int32_t) * (size_t)n + 1);
    if (!f || !r.v || ad_tensor_to_f32(&t, f) < 0) exit(1);
    for (int64_t i = 0; i < n; i++)
        r.v[i] = (int32_t)f[i];
    free(f);
    return r;
}

/* The generated part of a reference row: after the prompt, up to and including a stop id. */
static int reference_tokens(const int32_t *row, int total, int prompt, const ints *stop,
                            int32_t *out) {
    int n = 0;
    for (int i = prompt; i < total; i++) {
        out[n++] = row[i];
        bool is_stop = false;
        for (int s = 0; s < stop->shape[0]; s++)
            is_stop = is_stop || row[i] == stop->v[s];
        if (is_stop) break;
    }
    return n;
}

static void compare(const char *what, int b, const int32_t *got, int n_got, const int32_t *want,
                    int n_want) {
    bool same = n_got == n_want;
    for (int i = 0; same && i < n_got; i++)
        same = got[i] == want[i];
    printf("  %-14s row %d: %d tokens%s\n", what, b, n_got, same ? "" : " (DIFFERENT)");
    if (!same) {
        fprintf(stderr, "  got :");
        for (int i = 0; i < n_got; i++)
            fprintf(stderr, " %d", got[i]);
        fprintf(stderr, "\n  want:");
        for (int i = 0; i < n_want; i++)
            fprintf(stderr, " %d", want[i]);
        fprintf(stderr, "\n");
    }
    CHECK_MSG(same, "%s row %d differs from transformers", what, b);
}

static void check_model(const char *name) {
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/%s", AUDISTILL_FIXTURES, name);
    snprintf(path, sizeof path, "%s/reference.safetensors", dir);
    printf("%s\n", name);
    ad_model m;
    CHECK_OK(ad_model_load(&m, be, dir));
    ad_safetensors rs;
    CHECK_OK(ad_safetensors_open(&rs, path));
    const ad_st_entry *fe = ad_safetensors_find(&rs, "features");
    ad_tensor fv;
    CHECK_OK(ad_safetensors_view(&rs, fe, &fv));
    float *feat = malloc(sizeof(float) * (size_t)ad_tensor_numel(&fv));
    CHECK_OK(ad_tensor_to_f32(&fv, feat));
    ints flen = load_ints(&rs, "feature_lengths"), ids = load_ints(&rs, "input_ids"),
         mask = load_ints(&rs, "attention_mask"), stop = load_ints(&rs, "stop_ids"),
         greedy = load_ints(&rs, "greedy"), beam = load_ints(&rs, "beam"),
         sg = load_ints(&rs, "single_greedy"), sb = load_ints(&rs, "single_beam");
    const ad_st_entry *se = ad_safetensors_find(&rs, "beam_scores");
    ad_tensor sv;
    float beam_scores[2];
    CHECK_OK(ad_safetensors_view(&rs, se, &sv));
    CHECK_OK(ad_tensor_to_f32(&sv, beam_scores));
    const int C = (int)fv.shape[0], T = (int)ids.shape[1], M = 8, NB = 4;

    ad_model_limits lim = {.max_clips = C,
                           .max_frames = (int)fv.shape[2],
                           .max_rows = C * NB,
                           .max_tokens = T + M,
                           .max_step_tokens = T,
                           .max_logit_rows = C * NB};
    ad_model_state st;
    CHECK_OK(ad_model_state_init(&st, &m, &lim));

    int32_t *prompts[2];
    int plen[2];
    for (int r = 0; r < C; r++) {
        prompts[r] = malloc(sizeof(int32_t) * (size_t)T);
        plen[r] = 0;
        for (int t = 0; t < T; t++)
            if (mask.v[(size_t)r * T + t]) prompts[r][plen[r]++] = ids.v[(size_t)r * T + t];
    }
    int32_t tokens[2 * 8], want[64];
    int len[2];
    float score[2];
    ad_generate_output out = {tokens, len, score};
    ad_generate_params p = {.num_beams = 1,
                            .length_penalty = 1.0f,
                            .max_new_tokens = M,
                            .stop_ids = stop.v,
                            .n_stop = (int)stop.shape[0]};

    /* Batch of two clips of different lengths. */
    ad_tensor features;
    CHECK_OK(ad_tensor_init(&features, feat, AD_F32, AD_DEVICE_CPU, 3, fv.shape, "features"));
    int frames[2] = {flen.v[0], flen.v[1]};
    CHECK_OK(ad_model_encode(&st, &features, frames));
    CHECK_OK(ad_generate(&st, (const int32_t *const *)prompts, plen, C, true, &p, &out));
    for (int b = 0; b < C; b++) {
        int n = reference_tokens(greedy.v + (size_t)b * greedy.shape[1], (int)greedy.shape[1], T,
                                 &stop, want);
        compare("greedy batch", b, tokens + b * M, len[b], want, n);
    }
    p.num_beams = NB;
    CHECK_OK(ad_generate(&st, (const int32_t *const *)prompts, plen, C, true, &p, &out));
    for (int b = 0; b < C; b++) {
        int n = reference_tokens(beam.v + (size_t)b * beam.shape[1], (int)beam.shape[1], T, &stop,
                                 want);
        compare("beam-4 batch", b, tokens + b * M, len[b], want, n);
        CHECK_NEAR(score[b], beam_scores[b], 1e-4);
    }

    /* Clip 0 alone. */
    ad_tensor one;
    CHECK_OK(ad_tensor_slice(&features, 0, 0, 1, &one));
    CHECK_OK(ad_model_encode(&st, &one, frames));
    p.num_beams = 1;
    CHECK_OK(ad_generate(&st, (const int32_t *const *)prompts, plen, 1, true, &p, &out));
    int n = reference_tokens(sg.v, (int)sg.shape[1], plen[0], &stop, want);
    compare("greedy single", 0, tokens, len[0], want, n);
    p.num_beams = NB;
    CHECK_OK(ad_generate(&st, (const int32_t *const *)prompts, plen, 1, true, &p, &out));
    n = reference_tokens(sb.v, (int)sb.shape[1], plen[0], &stop, want);
    compare("beam-4 single", 0, tokens, len[0], want, n);

    /* Limits are enforced with a message, not overrun. */
    p.max_new_tokens = T + M;
    CHECK_FAILS_WITH(ad_generate(&st, (const int32_t *const *)prompts, plen, 1, true, &p, &out),
                     "exceeds the state");

    for (int r = 0; r < C; r++)
        free(prompts[r]);
    ints all[] = {flen, ids, mask, stop, greedy, beam, sg, sb};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(all[i].v);
    free(feat);
    ad_safetensors_close(&rs);
    ad_model_state_free(&st);
    ad_model_free(&m);
}

int main(void) {
    if (ad_backend_cpu_create(&be, 2) < 0) {
        fprintf(stderr, "backend: %s\n", ad_error());
        return 1;
    }
    test_current = "tiny_a";
    check_model("tiny_a");
    test_current = "tiny_b";
    check_model("tiny_b");
    ad_backend_destroy(be);
    return test_report();
}
