#include "model/prompt.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

#define AUDIO_SLOT "<|audio_bos|><|AUDIO|><|audio_eos|>"

const char *ad_prompt_default_task(const char *lang) {
    /* Qwen2-Audio's base model is prompted with the audio slot followed by a plain task
     * sentence ending in a colon (the model card's "Generate the caption in English:"). */
    if (strcmp(lang, "de") == 0) return "Translate the English speech into German:";
    if (strcmp(lang, "zh") == 0) return "Translate the English speech into Chinese:";
    /* Transcription: an auxiliary task for models trained from scratch, whose monotonic
     * alignment teaches the decoder to read the audio sooner than translation alone does. */
    if (strcmp(lang, "en") == 0) return "Transcribe the English speech:";
    return NULL;
}

char *ad_prompt_text(ad_prompt_style style, const char *task) {
    static const char *chat_head =
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\n"
        "Audio 1: " AUDIO_SLOT "\n";
    static const char *chat_tail = "<|im_end|>\n<|im_start|>assistant\n";
    const char *head = style == AD_PROMPT_CHAT ? chat_head : AUDIO_SLOT;
    const char *tail = style == AD_PROMPT_CHAT ? chat_tail : "";
    size_t n = strlen(head) + strlen(task) + strlen(tail) + 1;
    char *s = ad_malloc(n, "prompt");
    if (s) snprintf(s, n, "%s%s%s", head, task, tail);
    return s;
}

static int push(int32_t **ids, int *n, int *cap, int32_t id) {
    if (*n == *cap) {
        int c = *cap ? *cap * 2 : 64;
        int32_t *g = ad_realloc(*ids, sizeof *g * (size_t)c, "prompt ids");
        if (!g) return AD_ERR;
        *ids = g;
        *cap = c;
    }
    (*ids)[(*n)++] = id;
    return AD_OK;
}

int ad_prompt_tokenize(const char *text, const ad_added_token *specials, int n_specials,
                       int audio_token_id, int n_audio_tokens, ad_tokenize_fn tokenize, void *ctx,
                       int32_t **out, int *n_out) {
    int32_t *ids = NULL;
    int n = 0, cap = 0, audio_slots = 0;
    const char *p = text, *seg = text;
    while (1) {
        int best = -1;
        size_t best_len = 0;
        if (*p)
            for (int i = 0; i < n_specials; i++) {
                size_t l = strlen(specials[i].content);
                if (l > best_len && strncmp(p, specials[i].content, l) == 0) {
                    best = i;
                    best_len = l;
                }
            }
        if (best < 0 && *p) {
            p++;
            continue;
        }
        if (p > seg) {
            /* The callback reallocs the array to a size we cannot see: assume it is full. */
            if (tokenize(ctx, seg, (size_t)(p - seg), &ids, &n) < 0) goto fail;
            cap = n;
        }
        if (!*p) break;
        if (specials[best].id == audio_token_id) {
            audio_slots++;
            for (int k = 0; k < n_audio_tokens; k++)
                if (push(&ids, &n, &cap, audio_token_id) < 0) goto fail;
        } else if (push(&ids, &n, &cap, specials[best].id) < 0) {
            goto fail;
        }
        p += best_len;
        seg = p;
    }
    if (audio_slots != 1) {
        ad_fail("prompt must contain the audio placeholder exactly once (found %d): '%s'",
                audio_slots, text);
        goto fail;
    }
    *out = ids;
    *n_out = n;
    return AD_OK;
fail:
    free(ids);
    return AD_ERR;
}
