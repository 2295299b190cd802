#include "train/cached_teacher.h"

#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "core/log.h"

int ad_cached_teacher_open(ad_cached_teacher *t, const char *job_file, const ad_train_job *job,
                           ad_backend *be, int student_vocab, int window, ad_loader *loader) {
    memset(t, 0, sizeof *t);
    t->be = be;
    const char *path = job->distill.teacher_cache;
    const bool teacher_targets = job->data.targets && !strcmp(job->data.targets, "teacher");
    t->src = teacher_targets ? AD_CACHE_TEACHER : AD_CACHE_REF;
    AD_TRY(ad_teacher_cache_open(path, &t->cache));
    ad_teacher_cache *c = t->cache;
    uint64_t h;
    double secs;
    int rc = ad_data_identity(job->data.train, &h, &secs);
    if (rc == AD_OK && h != ad_teacher_cache_data_hash(c))
        rc = ad_fail(
            "%s: teacher cache %s was made from another data set (data identity "
            "%016" PRIx64 ", but data.train %s hashes to %016" PRIx64 "): make the cache from %s",
            job_file, path, ad_teacher_cache_data_hash(c), job->data.train, h, job->data.train);
    if (rc == AD_OK && job->teacher) {
        rc = ad_teacher_identity(job->teacher, &h, &secs);
        if (rc == AD_OK)
            ad_info("teacher identity %016" PRIx64 " of %s in %.2f s", h, job->teacher, secs);
        if (rc == AD_OK && h != ad_teacher_cache_teacher_hash(c))
            rc = ad_fail("%s: teacher cache %s was made by another teacher (identity %016" PRIx64
                         ", but the job's teacher %s is %016" PRIx64 ")",
                         job_file, path, ad_teacher_cache_teacher_hash(c), job->teacher, h);
    }
    if (rc == AD_OK && ad_teacher_cache_vocab(c) != student_vocab)
        rc = ad_fail("%s: teacher cache %s has a vocabulary of %d, the student %s of %d: "
                     "distillation needs the same vocabulary",
                     job_file, path, ad_teacher_cache_vocab(c), job->student, student_vocab);
    if (rc == AD_OK && ad_teacher_cache_max_frames(c) != window)
        rc = ad_fail("%s: teacher cache %s was made with a window of %d mel frames, this job's is "
                     "%d (train.max_frames and the student's window must match the cache's)",
                     job_file, path, ad_teacher_cache_max_frames(c), window);
    if (rc == AD_OK && ad_teacher_cache_segments(c) != loader->n_segments)
        rc = ad_fail("%s: teacher cache %s holds %d segments, data.train %s %d", job_file, path,
                     ad_teacher_cache_segments(c), job->data.train, loader->n_segments);
    for (int l = 0; rc == AD_OK && l < loader->n_langs; l++) {
        t->lang[l] = ad_teacher_cache_lang(c, t->src, loader->langs[l]);
        if (t->lang[l] < 0)
            rc = ad_fail("%s: teacher cache %s holds no %s positions for language %s%s", job_file,
                         path, ad_cache_source_name(t->src), loader->langs[l],
                         teacher_targets ? " (data.targets: teacher needs a cache made with "
                                           "translations: greedy or beam)"
                                         : "");
    }
    for (int l = 0; rc == AD_OK && teacher_targets && l < loader->n_langs; l++) {
        const int64_t *offset;
        const int32_t *tokens;
        rc = ad_teacher_cache_translations(c, t->lang[l], &offset, &tokens);
        if (rc == AD_OK) ad_loader_set_targets(loader, l, offset, tokens);
    }
    if (rc < 0) {
        ad_cached_teacher_close(t);
        return AD_ERR;
    }
    t->vocab = ad_teacher_cache_vocab(c);
    t->k = ad_teacher_cache_top_k(c);
    if (job->train.input_dropout > 0)
        ad_warn("train.input_dropout %g with a teacher cache: the cached teacher saw the clean "
                "inputs (the online teacher sees the corrupted ones)",
                job->train.input_dropout);
    ad_info("teacher cache %s: top-%d of %d, %s targets", path, t->k, t->vocab,
            ad_cache_source_name(t->src));
    return AD_OK;
}

static int reserve(ad_cached_teacher *t, int64_t rows) {
    if (rows <= t->cap) return AD_OK;
    const int64_t cap = rows + rows / 4;
    float *d = ad_realloc(t->dense, sizeof *d * (size_t)cap * (size_t)t->vocab, "teacher rows");
    if (!d) return AD_ERR;
    t->dense = d;
    if (t->be->device != AD_DEVICE_CPU) {
        if (t->device) t->be->release(t->be, t->device);
        t->device = NULL;
        AD_TRY(t->be->alloc(t->be, sizeof(float) * (size_t)cap * (size_t)t->vocab, &t->device));
    }
    t->cap = cap;
    return AD_OK;
}

int ad_cached_teacher_logits(ad_cached_teacher *t, const ad_batch *b, int n_supervised,
                             ad_tensor *out) {
    AD_TRY(reserve(t, n_supervised > 0 ? n_supervised : 1));
    int64_t row = 0;
    for (int i = 0; i < b->n; i++) {
        int64_t count = 0;
        for (int p = 0; p < b->max_len; p++)
            count += b->labels[(size_t)i * b->max_len + p] != AD_IGNORE_LABEL;
        const int seg = b->segment[i], lang = t->lang[b->lang[i]];
        const int64_t cached = ad_teacher_cache_count(t->cache, t->src, lang, seg);
        if (cached != count)
            return ad_fail("teacher cache %s: segment %d (%s targets, language %d) has %lld "
                           "supervised positions in this batch but %lld cached: the rows do not "
                           "line up (cache made from other targets or settings?)",
                           ad_teacher_cache_path(t->cache), seg, ad_cache_source_name(t->src),
                           b->lang[i], (long long)count, (long long)cached);
        if (row + count > n_supervised)
            return ad_fail("internal: batch rows exceed the %d supervised rows", n_supervised);
        if (count * t->k > t->scratch_rows) {
            free(t->ids), free(t->lps);
            t->scratch_rows = count * t->k;
            t->ids = ad_malloc(sizeof *t->ids * (size_t)t->scratch_rows, "cached rows");
            t->lps = ad_malloc(sizeof *t->lps * (size_t)t->scratch_rows, "cached rows");
            if (!t->ids || !t->lps) {
                t->scratch_rows = 0;
                return AD_ERR;
            }
        }
        AD_TRY(ad_teacher_cache_read(t->cache, t->src, lang, seg, t->ids, t->lps));
        for (int64_t r = 0; r < count; r++)
            ad_teacher_dense_row(t->ids + r * t->k, t->lps + r * t->k, t->k, t->vocab,
                                 t->dense + (size_t)(row + r) * (size_t)t->vocab);
        row += count;
    }
    if (row != n_supervised)
        return ad_fail("internal: %lld labelled rows, the student has %d", (long long)row,
                       n_supervised);
    const int64_t shape[2] = {n_supervised, t->vocab};
    if (t->be->device == AD_DEVICE_CPU)
        return ad_tensor_init(out, t->dense, AD_F32, AD_DEVICE_CPU, 2, shape, "cached teacher");
    ad_tensor host;
    AD_TRY(ad_tensor_init(&host, t->dense, AD_F32, AD_DEVICE_CPU, 2, shape, "cached teacher"));
    AD_TRY(ad_tensor_init(out, t->device, AD_F32, t->be->device, 2, shape, "cached teacher"));
    return t->be->upload(t->be, out, &host);
}

void ad_cached_teacher_close(ad_cached_teacher *t) {
    if (t->device && t->be) t->be->release(t->be, t->device);
    free(t->dense), free(t->ids), free(t->lps);
    ad_teacher_cache_close(t->cache);
    memset(t, 0, sizeof *t);
}
