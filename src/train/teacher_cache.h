/* Offline teacher caches: the teacher's top-k log-probabilities at every supervised position
 * of a prepared set (and optionally its own translations), computed once by
 * `audistill teacher-cache` so that any number of students can be distilled without running
 * the teacher again. This module owns the file format (writer, validating reader), the top-k
 * selection, the dense reconstruction the trainer feeds to the unchanged distillation loss,
 * and the identities (teacher and data hashes) that tie a cache to what it was made from. It
 * never runs a model: ad_teacher_cache_run (teacher_cache_run.c, behind `audistill
 * teacher-cache`) drives the teacher.
 *
 * Layout (HDF5, format "audistill-teacher-cache", version 1). <source> is "ref" (targets =
 * the prepared references) or "teacher" (targets = the teacher's own translations, for
 * sequence-level distillation); example (segment i, lang) is one row of the loader:
 *   /<source>/<lang>/topk_ids       int32   [P, k]  token ids, by descending probability
 *   /<source>/<lang>/topk_logprobs  float32 [P, k]  log_softmax(teacher logits) at T = 1
 *   /<source>/<lang>/offset         int64   [N + 1] segment i has positions offset[i]..[i+1]
 *   /teacher/<lang>/tokens          int32   [T]     translation ids (+ the end-of-turn token
 *   /teacher/<lang>/token_offset    int64   [N + 1] the prepared targets end with)
 *   /teacher/<lang>/text            vlen utf-8 [N]  detokenized ("" without a tokenizer)
 * Positions are the supervised rows (labels != AD_IGNORE_LABEL) of the example, in order. The
 * P-row datasets are chunked, shuffled + deflated and grow as the teacher runs; every group
 * carries checksum attributes (checksum_ids, checksum_logprobs and, for "teacher",
 * checksum_tokens: FNV-1a 64 of the arrays' bytes as written, 16 hex digits) so a reader finds
 * damaged data before training on it.
 * Root attributes: format, version, top_k, vocab_size, segments, max_frames (the window the
 * teacher saw), langs ("de,zh"), sources ("ref" or "ref,teacher"), teacher (16 hex digits:
 * FNV-1a 64 of config.json then every *.safetensors file, by name), teacher_dir, data (16 hex
 * digits: FNV-1a 64 of the prepared file's bytes), data_path, translations (none|greedy|beam).
 * Written under a temporary name and renamed when complete.
 *
 * The rest mass. A cached row keeps k of V probabilities; the trainer rebuilds a dense row of
 * "teacher logits": the k cached log-probabilities at their ids and, at every other id,
 * log(rest / (V - k)) with rest = max(1 - sum(exp(topk)), 1e-30): the missing mass spread
 * evenly (one uniform "rest" bucket). The row is a normalised log-distribution; the
 * distillation loss applies the temperature to it like to raw logits, so at T != 1 the
 * tempered distribution is that of the reconstruction (the rest bucket tempered too), not the
 * teacher's exact tempered tail. With k = V there is no rest and the result equals the online
 * teacher up to float rounding. */
#ifndef AUDISTILL_TRAIN_TEACHER_CACHE_H
#define AUDISTILL_TRAIN_TEACHER_CACHE_H

#include <stdbool.h>
#include <stdint.h>

#include "io/yaml.h"

#define AD_TEACHER_CACHE_FORMAT    "audistill-teacher-cache"
#define AD_TEACHER_CACHE_VERSION   1
#define AD_TEACHER_CACHE_MAX_LANGS 4
#define AD_TEACHER_CACHE_REST_MIN  1e-30

typedef enum { AD_CACHE_REF = 0, AD_CACHE_TEACHER = 1, AD_CACHE_SOURCES = 2 } ad_cache_source;

const char *ad_cache_source_name(ad_cache_source s);

/* ---- identities ------------------------------------------------------------------------ */

/* FNV-1a 64 of a model directory: config.json, then every *.safetensors file in name order
 * (one file or shards), streamed; *seconds receives the time it took. */
int ad_teacher_identity(const char *model_dir, uint64_t *hash, double *seconds);
/* FNV-1a 64 of a file's bytes (the prepared set), streamed. */
int ad_data_identity(const char *path, uint64_t *hash, double *seconds);

/* ---- top-k and the dense reconstruction ------------------------------------------------ */

/* log_softmax of one row of V logits (in double), then its k largest entries by descending
 * value (ties: smaller id first) into ids[k] / logprobs[k]. */
void ad_teacher_topk(const float *logits, int vocab, int k, int32_t *ids, float *logprobs);
/* The dense row of V "teacher logits" from k cached entries (see the rest mass above). */
void ad_teacher_dense_row(const int32_t *ids, const float *logprobs, int k, int vocab, float *row);

/* ---- writer ---------------------------------------------------------------------------- */

typedef struct {
    int top_k, vocab_size, max_frames, n_segments;
    int n_langs;
    const char *const *langs;
    bool with_teacher_targets; /* the "teacher" source is written too */
    uint64_t teacher_hash, data_hash;
    const char *teacher_dir, *data_path, *translations;
} ad_teacher_cache_info;

typedef struct ad_teacher_cache_writer ad_teacher_cache_writer;

int ad_teacher_cache_create(const char *path, const ad_teacher_cache_info *info,
                            ad_teacher_cache_writer **out);
/* Appends the positions of the next segment of (source, lang): rows x k ids and log-probs.
 * Segments must come in order, 0..N-1, per (source, lang). */
int ad_teacher_cache_append(ad_teacher_cache_writer *w, ad_cache_source src, int lang, int segment,
                            int64_t rows, const int32_t *ids, const float *logprobs);
/* The teacher's translation of (segment, lang), in segment order. */
int ad_teacher_cache_add_translation(ad_teacher_cache_writer *w, int lang, int segment,
                                     const int32_t *tokens, int n, const char *text);
/* Checks that every group holds every segment, writes the indices, renames into place. */
int ad_teacher_cache_finish(ad_teacher_cache_writer *w);
void ad_teacher_cache_abort(ad_teacher_cache_writer *w);

/* ---- reader ---------------------------------------------------------------------------- */

typedef struct ad_teacher_cache ad_teacher_cache;

/* Opens and validates the whole file (attributes, shapes, offsets against rows, k against
 * top_k, every group's checksum, ids within the vocabulary): a truncated, damaged or
 * inconsistent file is refused with a message naming it. */
int ad_teacher_cache_open(const char *path, ad_teacher_cache **out);
void ad_teacher_cache_close(ad_teacher_cache *c);
const char *ad_teacher_cache_path(const ad_teacher_cache *c);
int ad_teacher_cache_top_k(const ad_teacher_cache *c);
int ad_teacher_cache_vocab(const ad_teacher_cache *c);
int ad_teacher_cache_max_frames(const ad_teacher_cache *c);
int ad_teacher_cache_segments(const ad_teacher_cache *c);
uint64_t ad_teacher_cache_teacher_hash(const ad_teacher_cache *c);
uint64_t ad_teacher_cache_data_hash(const ad_teacher_cache *c);
/* Index of `lang` among the cached languages with `src` present, or -1. */
int ad_teacher_cache_lang(const ad_teacher_cache *c, ad_cache_source src, const char *lang);
/* Positions cached for (src, lang index, segment). */
int64_t ad_teacher_cache_count(const ad_teacher_cache *c, ad_cache_source src, int lang,
                               int segment);
/* Reads the positions of (src, lang, segment) into ids / logprobs [count x k]. */
int ad_teacher_cache_read(const ad_teacher_cache *c, ad_cache_source src, int lang, int segment,
                          int32_t *ids, float *logprobs);
/* The teacher translations of lang: offset [N + 1] and tokens, owned by the cache (valid
 * until close). */
int ad_teacher_cache_translations(const ad_teacher_cache *c, int lang, const int64_t **offset,
                                  const int32_t **tokens);
/* Detokenized translation of (lang, segment) into a new string. */
int ad_teacher_cache_text(const ad_teacher_cache *c, int lang, int segment, char **text);

/* ---- the job behind `audistill teacher-cache` ----------------------------------------- */

typedef struct {
    const char *teacher, *data, *output, *translations, *device;
    ad_string_list langs;
    int64_t top_k, max_frames, max_len, batch, threads, num_beams, max_new_tokens;
} ad_teacher_cache_job;

extern const ad_field ad_teacher_cache_job_fields[];

/* Runs the teacher once over the job's prepared set (and, with translations, decodes every
 * example and runs it again on its own translations) and writes the cache. */
int ad_teacher_cache_run(const ad_yaml_doc *doc, const ad_teacher_cache_job *job);

#endif
