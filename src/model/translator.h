/* Speech translation with a loaded model: audio samples in, text out. Owns the backend, the
 * model, its decoding state, the tokenizer and the log-mel front end, sized once for the
 * longest clip (30 s or 2 * max_source_positions frames, whichever is shorter). Used by the
 * translate command and by evaluation. */
#ifndef AUDISTILL_MODEL_TRANSLATOR_H
#define AUDISTILL_MODEL_TRANSLATOR_H

#include <stdint.h>

#include "audio/mel.h"
#include "model/generate.h"
#include "model/model.h"
#include "model/prompt.h"
#include "text/bpe.h"

typedef struct {
    int num_beams;
    float length_penalty;
    int max_new_tokens;
    int threads;
    ad_prompt_style style;
    const char *device; /* "cpu" (NULL: cpu) or "cuda" (GPU 0, f32 activations) */
} ad_translator_options;

typedef struct {
    ad_backend *be;
    ad_model model;
    ad_model_state state;
    ad_tokenizer *tok;
    ad_mel mel;
    ad_translator_options opt;
    int max_frames;
    int32_t stop_ids[AD_MAX_STOP_IDS];
    int n_stop;
    float *features; /* n_mels x AD_MEL_FRAMES */
    int truncated;   /* clips cut at 30 s so far */
} ad_translator;

int ad_translator_open(ad_translator *t, const char *model_dir, const ad_translator_options *opt);
void ad_translator_close(ad_translator *t);
/* Translates 16 kHz mono samples with the prompt for `task` (e.g. ad_prompt_default_task("de")).
 * *text is allocated (caller frees). */
int ad_translator_run(ad_translator *t, const float *samples, int64_t n, const char *task,
                      char **text);

#endif
