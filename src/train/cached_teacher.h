/* The trainer's side of an offline teacher cache (distill.teacher_cache): the checks that
 * tie the cache to the job (data identity, teacher identity when the job names a teacher,
 * vocabulary, window, languages, targets), the sequence-level targets hook (data.targets:
 * teacher) and, per micro-batch, the dense "teacher logits" rebuilt from the cached top-k
 * (teacher_cache.h: one uniform rest bucket) on the backend's device, in the row order of
 * the student's supervised rows, for the unchanged fused distillation loss. */
#ifndef AUDISTILL_TRAIN_CACHED_TEACHER_H
#define AUDISTILL_TRAIN_CACHED_TEACHER_H

#include "backend/backend.h"
#include "train/loader.h"
#include "train/teacher_cache.h"
#include "train/trainer.h"

typedef struct {
    ad_teacher_cache *cache;       /* NULL: the job has no cache */
    ad_cache_source src;           /* whose targets the positions follow */
    int lang[AD_LOADER_MAX_LANGS]; /* the cache's language index of each loader language */
    int vocab, k;
    ad_backend *be;
    float *dense; /* host rows [cap, vocab] */
    void *device; /* the same on a device backend */
    int64_t cap;
    int32_t *ids;
    float *lps;
    int64_t scratch_rows;
} ad_cached_teacher;

/* Opens job->distill.teacher_cache and checks it against the job (job_file names it in
 * messages), the student's vocabulary and the effective window; with data.targets: teacher
 * it substitutes the cached translations for the loader's targets. Refusals name the cache
 * and the problem. */
int ad_cached_teacher_open(ad_cached_teacher *t, const char *job_file, const ad_train_job *job,
                           ad_backend *be, int student_vocab, int window, ad_loader *loader);
/* Teacher logits [n_supervised, vocab] on be's device for batch b: each example's supervised
 * row count must equal the cached count for its (segment, language). */
int ad_cached_teacher_logits(ad_cached_teacher *t, const ad_batch *b, int n_supervised,
                             ad_tensor *out);
void ad_cached_teacher_close(ad_cached_teacher *t);

#endif
