/* Structured pruning: a plan (which decoder/encoder layers, heads, FFN neurons, hidden
 * channels and vocabulary entries a student keeps, chosen from importance scores or given
 * explicitly) and its application — the student's weights gathered from the teacher's, its
 * config.json recording the per-layer shapes and the kept vocabulary, and trimmed tokenizer
 * files whose ids are the student's. */
#ifndef AUDISTILL_COMPRESS_PRUNE_H
#define AUDISTILL_COMPRESS_PRUNE_H

#include <stdint.h>

#include "compress/importance.h"
#include "compress/recipe.h"
#include "model/model.h"

typedef struct {
    int n;      /* kept count */
    int *index; /* teacher indices, ascending */
} ad_keep;

typedef struct {
    ad_model_config teacher, student;
    ad_keep dec_layers, enc_layers;
    ad_keep dec_heads[AD_MAX_LAYERS], dec_kv[AD_MAX_LAYERS],
        dec_ffn[AD_MAX_LAYERS]; /* per student layer */
    ad_keep enc_heads[AD_MAX_LAYERS], enc_ffn[AD_MAX_LAYERS];
    ad_keep hidden;
    ad_keep vocab; /* n == teacher vocab when not trimmed */
} ad_prune_plan;

/* Chooses what to keep. `imp` may be NULL when the recipe needs no scores (no targets, only
 * explicit drops). `vocab_keep` (sorted teacher ids, may be NULL) trims the vocabulary when
 * recipe->vocab or vocab_keep asks for it. */
int ad_prune_plan_make(const ad_model_config *teacher, const ad_prune_recipe *recipe,
                       const ad_importance *imp, const int32_t *vocab_keep, int n_vocab_keep,
                       ad_prune_plan *plan);
void ad_prune_plan_free(ad_prune_plan *plan);

/* Writes the student into out_dir (created): model.safetensors (F32, or BF16 when `bf16`),
 * config.json, the tokenizer files of teacher_dir (trimmed when the vocabulary is),
 * preprocessor_config.json. The directory is written under a temporary name and renamed when
 * complete. */
int ad_prune_write_student(ad_model *teacher, const char *teacher_dir, const ad_prune_plan *plan,
                           const char *out_dir, bool bf16);

/* The tokens a vocabulary must keep: `used` ids (e.g. every id in the target texts), the
 * tokenizer's added/special tokens, every single-byte token (any text stays encodable) and
 * every token a merge builds a kept token from (the texts the used ids came from tokenize
 * exactly as before, renumbered). Reads teacher_dir's vocab.json, merges.txt and
 * tokenizer_config.json. Sorted, unique. */
int ad_vocab_keep_set(const char *teacher_dir, int vocab_size, const int32_t *used, int n_used,
                      int32_t **keep, int *n_keep);

/* teacher_dir's vocab.json, merges.txt and tokenizer_config.json restricted to the sorted ids
 * keep_ids (id i of the result is keep_ids[i]), written into out_dir. */
int ad_vocab_write_tokenizer(const char *teacher_dir, const char *out_dir, int vocab_size,
                             const int32_t *keep_ids, int n_keep);

#endif
