/* Prompts for Qwen2-Audio: the base-model template `<|audio_bos|><|AUDIO|><|audio_eos|>TASK`
 * and the Instruct chat template, turned into token ids the way Qwen2AudioProcessor does it:
 * special tokens are cut out first, the text between them goes through the tokenizer, and
 * `<|AUDIO|>` becomes as many audio tokens as the clip yields. Knows no tokenizer internals:
 * text goes through a callback. */
#ifndef AUDISTILL_MODEL_PROMPT_H
#define AUDISTILL_MODEL_PROMPT_H

#include <stddef.h>
#include <stdint.h>

#include "io/hf_config.h"

typedef enum { AD_PROMPT_BASE = 0, AD_PROMPT_CHAT } ad_prompt_style;

/* Appends the ids of text[0..len) to *ids (realloc'd, *n updated). */
typedef int (*ad_tokenize_fn)(void *ctx, const char *text, size_t len, int32_t **ids, int *n);

/* The documented translation task text for a target language code ("de", "zh"): e.g.
 * "Translate the English speech into German:". NULL for an unknown code. */
const char *ad_prompt_default_task(const char *lang);

/* The full template text (caller frees): base = "<|audio_bos|><|AUDIO|><|audio_eos|>" + task;
 * chat = the Qwen2-Audio-Instruct chat template with one user turn (audio, then task) and the
 * generation prompt. */
char *ad_prompt_text(ad_prompt_style style, const char *task);

/* Token ids of `text`: each occurrence of an added token's content becomes its id (longest
 * match first); the content whose id is audio_token_id expands to n_audio_tokens copies and must
 * occur exactly once; everything else goes through `tokenize`. Caller frees *ids. */
int ad_prompt_tokenize(const char *text, const ad_added_token *specials, int n_specials,
                       int audio_token_id, int n_audio_tokens, ad_tokenize_fn tokenize, void *ctx,
                       int32_t **ids, int *n);

#endif
