#include "model/translator.h"

#include <stdlib.h>
#include <string.h>

#include "core/log.h"
#include "io/file.h"

#define MAX_TASK_TOKENS 256

static int tokenize_cb(void *ctx, const char *text, size_t len, int32_t **ids, int *n) {
    int32_t *more;
    int m;
    AD_TRY(ad_tokenizer_encode(ctx, text, len, &more, &m));
    int32_t *g = ad_realloc(*ids, sizeof(int32_t) * (size_t)(*n + m + 1), "prompt ids");
    if (!g) {
        free(more);
        return AD_ERR;
    }
    memcpy(g + *n, more, sizeof(int32_t) * (size_t)m);
    free(more);
    *ids = g;
    *n += m;
    return AD_OK;
}

int ad_translator_open(ad_translator *t, const char *dir, const ad_translator_options *opt) {
    memset(t, 0, sizeof *t);
    t->opt = *opt;
    if (opt->num_beams < 1 || opt->max_new_tokens < 1)
        return ad_fail("translator: need at least 1 beam and 1 new token");
    AD_TRY(ad_backend_create_for(opt->device ? opt->device : "cpu", opt->threads, 0,
                                 "translate --device", &t->be));
    if (ad_model_load(&t->model, t->be, dir) < 0 || ad_tokenizer_load(dir, 1, &t->tok) < 0 ||
        ad_mel_init(&t->mel, t->model.cfg.num_mel_bins) < 0)
        goto fail;
    const ad_model_config *cfg = &t->model.cfg;
    t->max_frames = 2 * cfg->max_source_positions < AD_MEL_FRAMES ? 2 * cfg->max_source_positions
                                                                  : AD_MEL_FRAMES;
    t->features = ad_malloc(sizeof(float) * (size_t)cfg->num_mel_bins * AD_MEL_FRAMES, "features");
    if (!t->features) goto fail;
    t->n_stop = ad_stop_ids(cfg, t->tok, t->stop_ids);
    const int audio_tokens = ad_audio_tokens(t->max_frames);
    ad_model_limits lim = {.max_clips = 1,
                           .max_frames = t->max_frames,
                           .max_rows = opt->num_beams,
                           .max_tokens = audio_tokens + MAX_TASK_TOKENS + opt->max_new_tokens,
                           .max_step_tokens = audio_tokens + MAX_TASK_TOKENS,
                           .max_logit_rows = opt->num_beams * 2};
    if (ad_model_state_init(&t->state, &t->model, &lim) < 0) goto fail;
    return AD_OK;
fail:
    ad_translator_close(t);
    return AD_ERR;
}

void ad_translator_close(ad_translator *t) {
    if (t->state.m) ad_model_state_free(&t->state);
    if (t->model.be) ad_model_free(&t->model);
    ad_mel_free(&t->mel);
    ad_tokenizer_free(t->tok);
    if (t->be) ad_backend_destroy(t->be);
    free(t->features);
    memset(t, 0, sizeof *t);
}

int ad_translator_run(ad_translator *t, const float *samples, int64_t n, const char *task,
                      char **text) {
    *text = NULL;
    const ad_model_config *cfg = &t->model.cfg;
    if (n <= 0) return ad_fail("translator: the clip is empty");
    if (n > (int64_t)t->max_frames * AD_MEL_HOP_LENGTH) {
        /* Like the processor, everything past the model's window is dropped; say so once. */
        if (!t->truncated++)
            ad_warn("a clip of %.1f s is longer than the model's %.1f s window and is truncated "
                    "(segment long "
                    "recordings first: audistill segment)",
                    (double)n / AD_MEL_SAMPLE_RATE,
                    (double)t->max_frames * AD_MEL_HOP_LENGTH / AD_MEL_SAMPLE_RATE);
        n = (int64_t)t->max_frames * AD_MEL_HOP_LENGTH;
    }
    AD_TRY(ad_mel_compute(&t->mel, samples, n, t->features));
    int frames = (int)ad_mel_valid_frames(n);
    if (frames < 3)
        return ad_fail("translator: the clip is too short (%lld samples)", (long long)n);
    /* The encoder takes [1, n_mels, T]: the first T frames of the 30 s window. */
    const int T = t->max_frames;
    float *clip = ad_malloc(sizeof(float) * (size_t)cfg->num_mel_bins * (size_t)T, "clip features");
    if (!clip) return AD_ERR;
    for (int m = 0; m < cfg->num_mel_bins; m++)
        memcpy(clip + (size_t)m * T, t->features + (size_t)m * AD_MEL_FRAMES,
               sizeof(float) * (size_t)T);
    ad_tensor feat;
    ad_tensor_init(&feat, clip, AD_F32, AD_DEVICE_CPU, 3, (int64_t[]){1, cfg->num_mel_bins, T},
                   "features");
    ad_model_state_reset(&t->state);
    int rc = ad_model_encode(&t->state, &feat, &frames);
    free(clip);
    AD_TRY(rc);
    char *prompt = ad_prompt_text(t->opt.style, task);
    if (!prompt) return AD_ERR;
    const ad_added_token *specials;
    int n_specials = ad_tokenizer_added_tokens(t->tok, &specials);
    int32_t *ids = NULL;
    int n_ids = 0;
    rc = ad_prompt_tokenize(prompt, specials, n_specials, cfg->audio_token_index,
                            ad_audio_tokens(frames), tokenize_cb, t->tok, &ids, &n_ids);
    free(prompt);
    AD_TRY(rc);
    if (n_ids > t->state.lim.max_step_tokens) {
        free(ids);
        return ad_fail("translator: the prompt has %d tokens, more than the %d planned", n_ids,
                       t->state.lim.max_step_tokens);
    }
    ad_generate_params gp = {.num_beams = t->opt.num_beams,
                             .length_penalty = t->opt.length_penalty,
                             .max_new_tokens = t->opt.max_new_tokens,
                             .stop_ids = t->stop_ids,
                             .n_stop = t->n_stop};
    ad_generate_output out = {
        ad_malloc(sizeof(int32_t) * (size_t)gp.max_new_tokens, "generated ids"),
        ad_malloc(sizeof(int), "generated length"), ad_malloc(sizeof(float), "score")};
    const int32_t *prompts[1] = {ids};
    rc = out.tokens && out.len && out.score
             ? ad_generate(&t->state, prompts, &n_ids, 1, true, &gp, &out)
             : AD_ERR;
    free(ids);
    if (rc == AD_OK)
        rc = ad_tokenizer_decode(
            t->tok, out.tokens, ad_tokenizer_drop_unknown(t->tok, out.tokens, out.len[0]), 1, text);
    free(out.tokens), free(out.len), free(out.score);
    return rc;
}
