/* Prepared sets: one HDF5 file per data split holding what training and evaluation read —
 * log-mel features, token ids per target language (the prompt once per language, the target
 * per segment), the texts and talk ids — computed once by `audistill prepare`. Chunked and
 * compressed; readable by h5py. Written under a temporary name and renamed when complete, so a
 * reader never sees a half-written set.
 *
 * Layout (format "audistill-prepared", version 1):
 *   /features            float32 [total_frames, n_mels]  time-major, chunked, deflate
 *   /frame_offset        int64   [N + 1]   segment i has rows frame_offset[i]..frame_offset[i+1]
 *   /valid_frames        int32   [N]       ceil(samples / hop): frames covering real audio
 *   /pad_value           float32 [N]       value of every frame after the stored ones (to 30 s)
 *   /talk                vlen utf-8 [N]
 *   /text/<lang>         vlen utf-8 [N]    source ("en") and target texts
 *   /ids/<lang>/tokens   int32   [total]   target token ids (+ end-of-turn) per segment,
 *   /ids/<lang>/offset   int64   [N + 1]   concatenated
 *   /prompt/<lang>/before_audio, /prompt/<lang>/after_audio  int32: the prompt around the
 *                        expanded <|AUDIO|> placeholder; attribute "text" holds the prompt
 *   attributes on /: format, version, n_mels, hop_length, sample_rate, source, tokenizer */
#ifndef AUDISTILL_DATA_PREPARED_H
#define AUDISTILL_DATA_PREPARED_H

#include <stdbool.h>
#include <stdint.h>

#include "data/dataset.h"

#define AD_PREPARED_FORMAT  "audistill-prepared"
#define AD_PREPARED_VERSION 1

typedef struct ad_prepared_writer ad_prepared_writer;

typedef struct {
    int n_mels;
    int hop_length;
    int sample_rate;
    const char *source;    /* provenance: the data set path */
    const char *tokenizer; /* identity of the tokenizer (e.g. a hash of its files) */
    int n_text_langs;      /* texts stored, e.g. en, de, zh */
    const char *const *text_langs;
    int n_target_langs; /* token ids stored, e.g. de, zh */
    const char *const *target_langs;
} ad_prepared_info;

int ad_prepared_create(const char *path, const ad_prepared_info *info, ad_prepared_writer **out);
/* The prompt of one target language: ids before and after the <|AUDIO|> run. */
int ad_prepared_set_prompt(ad_prepared_writer *w, const char *lang, const char *text,
                           const int32_t *before, int n_before, const int32_t *after, int n_after);
/* Appends one segment. features: [n_frames, n_mels] time-major; texts[l] per text language;
 * ids[l]/n_ids[l] per target language. */
int ad_prepared_append(ad_prepared_writer *w, const float *features, int n_frames, int valid_frames,
                       float pad_value, const char *talk, const char *const *texts,
                       const int32_t *const *ids, const int *n_ids);
/* Writes the index datasets, closes, renames into place. */
int ad_prepared_finish(ad_prepared_writer *w);
/* Drops the temporary file (on error). */
void ad_prepared_abort(ad_prepared_writer *w);

typedef struct ad_prepared ad_prepared;

int ad_prepared_open(const char *path, ad_prepared **out);
void ad_prepared_close(ad_prepared *p);
int ad_prepared_count(const ad_prepared *p);
int ad_prepared_n_mels(const ad_prepared *p);
const char *ad_prepared_attr(const ad_prepared *p, const char *name); /* string attributes */
/* Number of stored frames, valid frames and the pad value of segment i. */
int ad_prepared_frames(const ad_prepared *p, int i, int *stored, int *valid, float *pad_value);
/* Reads the stored frames of segment i into out[stored * n_mels] (time-major). */
int ad_prepared_features(const ad_prepared *p, int i, float *out);
/* Target ids of segment i for `lang`: allocates *ids (caller frees). The language's segment
 * offsets are read on first use and kept in p. */
int ad_prepared_target_ids(ad_prepared *p, const char *lang, int i, int32_t **ids, int *n);
int ad_prepared_prompt(const ad_prepared *p, const char *lang, int32_t **before, int *n_before,
                       int32_t **after, int *n_after);
/* Text of segment i in `lang` (source or target) into a new string (caller frees). */
int ad_prepared_text(const ad_prepared *p, const char *lang, int i, char **text);
int ad_prepared_talk(const ad_prepared *p, int i, char **talk);

#endif
