/* The Qwen2 tokenizer: byte-level BPE from vocab.json + merges.txt, added (special) tokens
 * split out first (leftmost, then longest match, on the raw text), NFC normalisation and the
 * Qwen2 pre-tokenizer regex (PCRE2 with Unicode classes made equal to the reference's), exactly
 * as transformers' Qwen2TokenizerFast (tokenizers' Rust code). Decoding follows its ByteLevel
 * decoder: bytes that are not valid UTF-8 become U+FFFD, one per maximal invalid subpart
 * (String::from_utf8_lossy; the same as Python's bytes.decode(errors="replace")). Unlike the
 * reference, which drops ids it does not know, decoding refuses them: a model and a tokenizer
 * that disagree should be noticed. */
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
/* Removes, in place, ids the vocabulary does not have (a model's embedding is padded past the
 * tokenizer: Qwen2-Audio has 156,032 rows for 151,649 ids) and returns the count left. Decoding
 * generated text does this first, as transformers' decode() skips them; decode itself refuses
 * unknown ids, so bad input to `tokenize --decode` is still reported. */
int ad_tokenizer_drop_unknown(const ad_tokenizer *t, int32_t *ids, int n);
/* Id of a token string (base or added), or -1. */
int ad_tokenizer_token_id(const ad_tokenizer *t, const char *token);
/* Encodes UTF-8 text; *ids is allocated (caller frees). Invalid UTF-8 fails. Not safe to call
 * from two threads on one tokenizer (it keeps a word cache and scratch space). */
int ad_tokenizer_encode(ad_tokenizer *t, const char *text, size_t len, int32_t **ids, int *n);
/* Decodes ids to UTF-8 text (caller frees). Unknown ids fail. skip_special drops added
 * tokens marked special. */
int ad_tokenizer_decode(const ad_tokenizer *t, const int32_t *ids, int n, int skip_special,
                        char **text);
/* The same, with the length of the text: ids of byte 0x00 decode to a NUL inside it. */
int ad_tokenizer_decode_len(const ad_tokenizer *t, const int32_t *ids, int n, int skip_special,
                            char **text, size_t *len);

/* The added tokens (content, id, special), valid while the tokenizer lives. Returns the count. */
int ad_tokenizer_added_tokens(const ad_tokenizer *t, const ad_added_token **tokens);

#endif
