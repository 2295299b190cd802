/* Decoding with the KV cache: greedy and beam search with the semantics of transformers'
 * generate() (generation/utils.py: _sample without sampling, and the vectorised _beam_search
 * with its length penalty, early-stopping heuristic and finished-hypothesis bookkeeping).
 * Prompts arrive as token ids with <|AUDIO|> already expanded; the audio comes from the last
 * ad_model_encode on the same state. Host code only picks tokens; logits come from the model. */
#ifndef AUDISTILL_MODEL_GENERATE_H
#define AUDISTILL_MODEL_GENERATE_H

#include <stdint.h>

#include "model/model.h"
#include "text/bpe.h"

#define AD_MAX_STOP_IDS 3

typedef struct {
    int num_beams;        /* 1 = greedy */
    float length_penalty; /* beam score = sum log p / (generated length ** length_penalty) */
    int max_new_tokens;
    const int32_t *stop_ids; /* a sequence ends after emitting one of these (kept in output) */
    int n_stop;
    bool early_stopping; /* transformers' early_stopping=True; default false */
} ad_generate_params;

typedef struct {
    int32_t *tokens; /* [n_prompts * max_new_tokens] */
    int *len;        /* generated tokens per prompt (a final stop id included) */
    float *score;    /* beam: the finished hypothesis' score; greedy: sum of log-probs */
} ad_generate_output;

/* Prompts: n_prompts id arrays with prompt_len[i] ids each. The state needs max_rows >=
 * n_prompts * num_beams, max_step_tokens >= the longest prompt, max_tokens >= longest prompt +
 * max_new_tokens and max_logit_rows >= max_rows. */
int ad_generate(ad_model_state *st, const int32_t *const *prompts, const int *prompt_len,
                int n_prompts, bool use_audio, const ad_generate_params *params,
                ad_generate_output *out);

/* The ids decoding stops at: the model's eos and the chat and text end markers (<|im_end|>,
 * <|endoftext|>) when the tokenizer has them inside the vocabulary (tok may be NULL), without
 * duplicates. stop has room for AD_MAX_STOP_IDS; returns the count. */
int ad_stop_ids(const ad_model_config *cfg, const ad_tokenizer *tok, int32_t *stop);

#endif
