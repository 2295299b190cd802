/* The Qwen2 tokenizer: byte-level BPE from vocab.json + merges.txt, added (special) tokens
 * split out first, NFC normalisation and the Qwen2 pre-tokenizer regex (PCRE2 with Unicode
 * classes), exactly as transformers' Qwen2TokenizerFast. Encode and decode; decoding maps
 * invalid UTF-8 to U+FFFD as Python's bytes.decode(errors="replace") does. */
#ifndef AUDISTILL_TEXT_BPE_H
#define AUDISTILL_TEXT_BPE_H

#include <stddef.h>
#include <stdint.h>

#include "io/hf_config.h"

typedef struct ad_tokenizer ad_tokenizer;

/* dir holds vocab.json and merges.txt, and optionally tokenizer_config.json whose
 * added_tokens_decoder lists the added tokens. With qwen2_audio_specials, the six special
 * tokens of Qwen2-Audio (<|endoftext|> 151643 ... <|audio_eos|> 151648) are added when the
 * directory does not define them. */
int ad_tokenizer_load(const char *dir, int qwen2_audio_specials, ad_tokenizer **out);
void ad_tokenizer_free(ad_tokenizer *t);
/* Number of ids (base vocabulary + added tokens, up to the largest id + 1). */
int ad_tokenizer_size(const ad_tokenizer *t);
/* Id of a token string (base or added), or -1. */
int ad_tokenizer_token_id(const ad_tokenizer *t, const char *token);
/* Encodes UTF-8 text; *ids is allocated (caller frees). */
int ad_tokenizer_encode(ad_tokenizer *t, const char *text, size_t len, int32_t **ids, int *n);
/* Decodes ids to UTF-8 text (caller frees). Unknown ids fail. skip_special drops added
 * tokens marked special. */
int ad_tokenizer_decode(const ad_tokenizer *t, const int32_t *ids, int n, int skip_special,
                        char **text);

/* The added tokens (content, id, special), valid while the tokenizer lives. Returns the count. */
int ad_tokenizer_added_tokens(const ad_tokenizer *t, const ad_added_token **tokens);

#endif
