/* Training batches from a prepared set: which examples each optimizer step sees (seeded
 * per-epoch shuffles, a cursor that a checkpoint stores and restores exactly, a disjoint
 * deterministic shard of every global batch per rank) and the host buffers of one micro-batch
 * (log-mel features, input ids with the audio placeholder expanded, next-token labels on the
 * target positions only). An example is one (segment, target language) pair: one model
 * serves every direction, chosen by the prompt. */
#ifndef AUDISTILL_TRAIN_LOADER_H
#define AUDISTILL_TRAIN_LOADER_H

#include <stdint.h>

#include "data/prepared.h"

#define AD_LOADER_MAX_LANGS 4
#define AD_IGNORE_LABEL     (-100)

typedef struct {
    int64_t epoch;
    int64_t position; /* examples of this epoch's order already handed out */
} ad_loader_cursor;

typedef struct {
    ad_prepared *set;
    int n_segments;
    int n_langs;
    char langs[AD_LOADER_MAX_LANGS][8];
    int32_t *prompt_before[AD_LOADER_MAX_LANGS], *prompt_after[AD_LOADER_MAX_LANGS];
    int n_before[AD_LOADER_MAX_LANGS], n_after[AD_LOADER_MAX_LANGS];
    int32_t audio_token_id;
    int32_t *order; /* this epoch's permutation of the examples */
    int64_t n_examples;
    uint64_t seed;
    bool shuffle;
    int window; /* frames the model sees (2 * max_source_positions); 0 = no limit */
    ad_loader_cursor cursor;
    float input_dropout; /* ad_loader_set_input_dropout */
    int32_t dropout_token;
    const int64_t *target_offset[AD_LOADER_MAX_LANGS]; /* ad_loader_set_targets (borrowed) */
    const int32_t *target_tokens[AD_LOADER_MAX_LANGS];
    char ctc_lang[8]; /* ad_loader_set_ctc; "" = none */
} ad_loader;

/* langs: the target languages to train on (each must have ids in the set). */
int ad_loader_open(ad_loader *l, const char *prepared_path, int n_langs, const char *const *langs,
                   int32_t audio_token_id, uint64_t seed, bool shuffle);
void ad_loader_close(ad_loader *l);
/* Clips longer than `frames` mel frames are truncated to them, as the processor truncates
 * audio to the model's window; their placeholder count follows. */
void ad_loader_set_window(ad_loader *l, int frames);
/* The longest example (prompt + audio placeholders within the window + targets, in tokens) and
 * which one it is (segment and language), so a job can refuse a too small max_len before
 * training starts instead of at the step that first draws it. */
int ad_loader_longest(ad_loader *l, int *tokens, int *segment, const char **lang);
/* Teacher-forcing inputs of target tokens replaced by `token` with probability p (labels keep
 * the true tokens): token dropout, which stops a decoder trained from scratch from predicting
 * the translation from its own prefix alone and pushes it to read the audio. Deterministic
 * per (epoch, example, position), so resumed runs see the same corruption. */
void ad_loader_set_input_dropout(ad_loader *l, float p, int32_t token);
/* Replaces the prepared targets of language `lang` (an index into the loader's languages) by
 * other token ids, e.g. a teacher's own translations (sequence-level distillation): segment i's
 * targets become tokens[offset[i]..offset[i+1]). The arrays are borrowed (they must outlive
 * the loader) and must cover every segment; NULL restores the prepared targets. */
void ad_loader_set_targets(ad_loader *l, int lang, const int64_t *offset, const int32_t *tokens);
/* Every example also carries segment i's `lang` targets (in practice the English
 * transcription), without their end token, as the target of the encoder-side CTC loss
 * (batch.ctc_*). The set must hold that language; NULL turns it off. */
int ad_loader_set_ctc(ad_loader *l, const char *lang);
/* Restore a cursor saved in a checkpoint (rebuilds that epoch's order). */
int ad_loader_seek(ad_loader *l, ad_loader_cursor cursor);

/* The examples of the next global batch of `global_batch` examples that belong to `rank` of
 * `world` (contiguous slices of the global batch, so the union over ranks is the global batch
 * whatever the rank count). Wraps to the next epoch (reshuffled) when an epoch runs out; the
 * last partial batch of an epoch is completed from the next epoch. *n receives the count. */
int ad_loader_next(ad_loader *l, int global_batch, int rank, int world, int32_t *examples, int *n);

typedef struct {
    int n; /* examples in this micro-batch */
    int n_mels;
    int max_frames;    /* T of features */
    float *features;   /* [n, n_mels, max_frames], channels first as the processor makes them */
    int *frames;       /* valid frames per example */
    int *audio_tokens; /* <|AUDIO|> placeholders per example */
    int max_len;       /* tokens per row */
    int32_t *ids;      /* [n, max_len] input ids; padding after len[i] is 0 */
    int32_t *labels;   /* [n, max_len] label at position t = ids[t + 1] on target positions,
                          AD_IGNORE_LABEL elsewhere */
    int *len;          /* tokens per row */
    int *lang;         /* language index per example */
    int *segment;      /* segment per example */
    int supervised;    /* total labels != AD_IGNORE_LABEL */
    /* CTC targets (ad_loader_set_ctc; ctc_max 0 = none): example i's transcript is
     * ctc_ids[i * ctc_max ..][0 .. ctc_len[i]). */
    int *ctc_len;
    int32_t *ctc_ids;
    int ctc_max;
} ad_batch;

/* Tokens of row i's prompt: its ids up to and including the one that predicts the first target
 * token (what generation starts from). */
int ad_batch_prompt_len(const ad_batch *b, int i);
/* Fills a batch with the given examples (host memory, reallocated as needed). */
int ad_loader_fill(ad_loader *l, const int32_t *examples, int n, ad_batch *b);
void ad_batch_free(ad_batch *b);

/* <|AUDIO|> tokens a clip of `frames` mel frames becomes (Qwen2AudioEncoder's formula). */
static inline int ad_loader_audio_tokens(int frames) {
    int conv = (frames - 1) / 2 + 1;
    return (conv - 2) / 2 + 1;
}

#endif
