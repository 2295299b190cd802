/* The synthetic corpus writer: texts from the grammar, speech from espeak-ng (several child
 * processes at once), talks for the eval split, all into a temporary directory renamed at the
 * end (layout in synth_corpus.h). */
#define _GNU_SOURCE
#include "data/synth_corpus.h"

#include <errno.h>
#include <ftw.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/error.h"
#include "core/log.h"
#include "core/progress.h"
#include "data/segment.h"
#include "data/synth_audio.h"
#include "io/audio_file.h"
#include "io/file.h"

static const char *const langs[] = {"en", "de", "zh"};

/* Random streams: one per sentence for speaker and noise, one per talk for its pauses. */
#define STREAM_SPEECH 0xa0d10000ULL
#define STREAM_TALK   0x7a1c0000ULL

void ad_synth_text_name(const char *split, const char *lang, char *buf, int size) {
    if (lang)
        snprintf(buf, (size_t)size, "ACL.6060.%s.en-xx.%s.txt", split, lang);
    else
        snprintf(buf, (size_t)size, "ACL.6060.%s.en-xx.yaml", split);
}

static int write_lines(const char *dir, const char *name, ad_synth_text *texts, int n, int lang) {
    size_t cap = 1;
    for (int i = 0; i < n; i++) {
        const ad_synth_text *t = &texts[i];
        cap += strlen(lang == 0 ? t->en : lang == 1 ? t->de : t->zh) + 1;
    }
    char *buf = ad_malloc(cap, "text file");
    if (!buf) return AD_ERR;
    size_t len = 0;
    for (int i = 0; i < n; i++) {
        const ad_synth_text *t = &texts[i];
        const char *s = lang == 0 ? t->en : lang == 1 ? t->de : t->zh;
        size_t k = strlen(s);
        memcpy(buf + len, s, k);
        len += k;
        buf[len++] = '\n';
    }
    char *path = ad_path_join(dir, name);
    int rc = path ? ad_write_file_atomic(path, buf, len) : AD_ERR;
    free(path);
    free(buf);
    return rc;
}

/* ------------------------------------------------------------------ speech workers */

typedef struct {
    int split, index;
} job_ref;

typedef struct {
    const ad_synth_corpus_options *opt;
    const char *root; /* the temporary directory */
    ad_synth_text **texts;
    job_ref *jobs;
    int n_jobs;
    float *noise_rms[AD_SYNTH_SPLITS]; /* per sentence, for the pauses of the talks */
    int64_t *samples[AD_SYNTH_SPLITS]; /* per sentence */
    pthread_mutex_t lock;
    int next, done;
    bool failed;
    char error[1024];
    ad_progress progress;
} speech_ctx;

typedef struct {
    speech_ctx *ctx;
    int worker;
} worker_arg;

static int speak_one(speech_ctx *c, int worker, job_ref j) {
    const char *split = ad_synth_split_names[j.split];
    ad_rng rng;
    ad_rng_init(&rng, c->opt->seed, STREAM_SPEECH + ((uint64_t)j.split << 24) + (uint64_t)j.index);
    ad_synth_voice voice;
    ad_synth_pick_voice(&rng, &voice);
    char tmp[4096], path[4096];
    snprintf(tmp, sizeof tmp, "%s/.espeak-%d.wav", c->root, worker);
    float *x = NULL;
    int64_t n = 0;
    AD_TRY(ad_synth_speak(c->opt->espeak, c->texts[j.split][j.index].en, &voice, tmp, &x, &n));
    float rms = 0.0f;
    int rc = ad_synth_add_noise(&rng, x, n, voice.snr_db, voice.pink, &rms);
    if (rc == AD_OK) {
        snprintf(path, sizeof path, "%s/%s/segmented_wavs/gold/sent_%d.wav", c->root, split,
                 j.index + 1);
        rc = ad_audio_write_wav16(path, x, n, AD_SYNTH_SAMPLE_RATE);
    }
    free(x);
    c->noise_rms[j.split][j.index] = rms;
    c->samples[j.split][j.index] = n;
    return rc;
}

static void *speech_worker(void *p) {
    worker_arg *a = p;
    speech_ctx *c = a->ctx;
    for (;;) {
        pthread_mutex_lock(&c->lock);
        int i = c->failed ? c->n_jobs : c->next++;
        pthread_mutex_unlock(&c->lock);
        if (i >= c->n_jobs) break;
        int rc = speak_one(c, a->worker, c->jobs[i]);
        pthread_mutex_lock(&c->lock);
        if (rc < 0 && !c->failed) {
            c->failed = true;
            snprintf(c->error, sizeof c->error, "%s", ad_error());
        }
        c->done++;
        ad_progress_update(&c->progress, c->done, NULL);
        pthread_mutex_unlock(&c->lock);
    }
    return NULL;
}

static int speak_all(speech_ctx *c) {
    int jobs = c->opt->jobs < 1 ? 1 : c->opt->jobs > 64 ? 64 : c->opt->jobs;
    pthread_t threads[64];
    worker_arg args[64];
    int started = 0;
    ad_progress_start(&c->progress, "synth speech", c->n_jobs, "sent");
    for (int w = 0; w < jobs; w++) {
        args[w].ctx = c;
        args[w].worker = w;
        int e = pthread_create(&threads[w], NULL, speech_worker, &args[w]);
        if (e != 0) {
            pthread_mutex_lock(&c->lock);
            if (!c->failed) {
                c->failed = true;
                snprintf(c->error, sizeof c->error, "cannot start a worker thread: %s",
                         strerror(e));
            }
            pthread_mutex_unlock(&c->lock);
            break;
        }
        started++;
    }
    for (int w = 0; w < started; w++)
        pthread_join(threads[w], NULL);
    ad_progress_finish(&c->progress);
    if (c->failed) return ad_fail("%s", c->error);
    return AD_OK;
}

/* ------------------------------------------------------------------ talks */

/* Joins the eval sentences into `talks` talks with noisy pauses and writes the talk audio, the
 * segmentation YAML (one entry per sentence, in sentence order) and FILE_ORDER. */
static int write_talks(speech_ctx *c, double *talk_seconds) {
    const ad_synth_corpus_options *opt = c->opt;
    int split = AD_SYNTH_EVAL, n = opt->counts[split];
    int talks = opt->talks < n ? opt->talks : n;
    const char *name = ad_synth_split_names[split];
    char dir[4096], path[4096], fname[256];
    snprintf(dir, sizeof dir, "%s/%s/full_wavs", c->root, name);
    AD_TRY(ad_mkdir_p(dir));
    size_t yaml_cap = (size_t)n * 128 + 1, order_cap = (size_t)talks * 32 + 1;
    char *yaml = ad_malloc(yaml_cap, "segmentation YAML");
    char *order = ad_malloc(order_cap, "FILE_ORDER");
    size_t ylen = 0, olen = 0;
    int rc = yaml && order ? AD_OK : AD_ERR;
    *talk_seconds = 0.0;
    for (int t = 0; t < talks && rc == AD_OK; t++) {
        int first = (int)((int64_t)n * t / talks), last = (int)((int64_t)n * (t + 1) / talks);
        char talk[32];
        snprintf(talk, sizeof talk, "talk_%d", t + 1);
        ad_rng rng;
        ad_rng_init(&rng, opt->seed, STREAM_TALK + (uint64_t)t);
        /* Lay out the pauses first, so the buffer is allocated once. */
        int64_t *pause = ad_calloc((size_t)(last - first + 1), sizeof *pause, "pauses");
        if (!pause) {
            rc = AD_ERR;
            break;
        }
        int64_t total = 0;
        for (int i = first; i <= last; i++) {
            double seconds = i < last ? 0.3 + 0.7 * ad_rng_uniform(&rng) : 0.5;
            pause[i - first] = (int64_t)(seconds * AD_SYNTH_SAMPLE_RATE);
            total += pause[i - first] + (i < last ? c->samples[split][i] : 0);
        }
        float *audio = ad_calloc((size_t)total, sizeof *audio, "talk audio");
        int64_t pos = 0;
        if (!audio) rc = AD_ERR;
        for (int i = first; i <= last && rc == AD_OK; i++) {
            /* The pause carries the noise of the sentence after it (the last one, of the one
             * before), so noise does not switch on and off at the boundaries. */
            int ref = i < last ? i : last - 1;
            rc = ad_synth_noise(&rng, audio + pos, pause[i - first], c->noise_rms[split][ref],
                                false);
            pos += pause[i - first];
            if (i == last || rc < 0) break;
            snprintf(path, sizeof path, "%s/%s/segmented_wavs/gold/sent_%d.wav", c->root, name,
                     i + 1);
            float *x = NULL;
            int64_t len = 0;
            rc = ad_audio_read(path, 0.0, 0.0, AD_SYNTH_SAMPLE_RATE, &x, &len);
            if (rc == AD_OK && len != c->samples[split][i])
                rc = ad_fail("%s: read back %lld samples, wrote %lld", path, (long long)len,
                             (long long)c->samples[split][i]);
            if (rc == AD_OK) {
                memcpy(audio + pos, x, (size_t)len * sizeof *x);
                char wav[48];
                snprintf(wav, sizeof wav, "%s.wav", talk);
                ylen += (size_t)ad_segmentation_entry(yaml + ylen, yaml_cap - ylen, pos, len,
                                                      AD_SYNTH_SAMPLE_RATE, talk, wav);
                pos += len;
                if (ylen >= yaml_cap) rc = ad_fail("segmentation YAML buffer overflow");
            }
            free(x);
        }
        if (rc == AD_OK) {
            snprintf(path, sizeof path, "%s/%s.wav", dir, talk);
            rc = ad_audio_write_wav16(path, audio, total, AD_SYNTH_SAMPLE_RATE);
            olen += (size_t)snprintf(order + olen, order_cap - olen, "%s\n", talk);
            *talk_seconds += (double)total / AD_SYNTH_SAMPLE_RATE;
        }
        free(audio);
        free(pause);
    }
    if (rc == AD_OK) {
        ad_synth_text_name(name, NULL, fname, sizeof fname);
        snprintf(path, sizeof path, "%s/%s/text/txt/%s", c->root, name, fname);
        rc = ad_write_file_atomic(path, yaml, ylen);
    }
    if (rc == AD_OK) {
        snprintf(path, sizeof path, "%s/%s/FILE_ORDER", c->root, name);
        rc = ad_write_file_atomic(path, order, olen);
    }
    free(yaml);
    free(order);
    return rc;
}

/* ------------------------------------------------------------------ the whole corpus */

static int write_texts(const ad_synth_corpus_options *opt, const char *root,
                       ad_synth_text **texts) {
    for (int s = 0; s < AD_SYNTH_SPLITS; s++) {
        const char *name = ad_synth_split_names[s];
        char dir[4096], fname[256];
        snprintf(dir, sizeof dir, "%s/%s/segmented_wavs/gold", root, name);
        AD_TRY(ad_mkdir_p(dir));
        snprintf(dir, sizeof dir, "%s/%s/text/txt", root, name);
        AD_TRY(ad_mkdir_p(dir));
        for (int l = 0; l < 3; l++) {
            ad_synth_text_name(name, langs[l], fname, sizeof fname);
            AD_TRY(write_lines(dir, fname, texts[s], opt->counts[s], l));
        }
    }
    char info[512], path[4096];
    int len = snprintf(info, sizeof info,
                       "generator: audistill synth\nseed: %llu\ntrain: %d\ndev: %d\neval: %d\n"
                       "talks: %d\nsample_rate: %d\n",
                       (unsigned long long)opt->seed, opt->counts[0], opt->counts[1],
                       opt->counts[2], opt->talks, AD_SYNTH_SAMPLE_RATE);
    snprintf(path, sizeof path, "%s/synth_info.txt", root);
    return ad_write_file_atomic(path, info, (size_t)len);
}

/* Moves the finished temporary tree onto out_dir (replacing an old one only with force). */
static int publish(const char *root, const char *out, bool force) {
    char old[4096];
    old[0] = '\0';
    if (ad_path_exists(out)) {
        if (!force) return ad_fail("%s appeared while writing; not replacing it", out);
        snprintf(old, sizeof old, "%s.old-%ld", out, (long)getpid());
        if (rename(out, old) != 0) return ad_fail("cannot move %s aside: %s", out, strerror(errno));
    }
    if (rename(root, out) != 0) {
        int e = errno;
        if (old[0]) (void)rename(old, out);
        return ad_fail("cannot rename %s to %s: %s", root, out, strerror(e));
    }
    char *parent = ad_path_dirname(out);
    int rc = parent ? ad_fsync_directory(parent) : AD_ERR;
    free(parent);
    if (old[0] && ad_remove_tree(old) < 0)
        ad_warn("could not remove the old %s: %s", old, ad_error());
    return rc;
}

int ad_synth_write_corpus(const ad_synth_corpus_options *opt, ad_synth_corpus_stats *stats) {
    double start = ad_now_seconds();
    memset(stats, 0, sizeof *stats);
    char out[4096];
    snprintf(out, sizeof out, "%s", opt->out_dir);
    for (size_t k = strlen(out); k > 1 && out[k - 1] == '/'; k--)
        out[k - 1] = '\0';
    if (!out[0]) return ad_fail("synth: empty output directory");
    if (ad_path_exists(out) && !opt->force)
        return ad_fail("%s already exists (remove it, choose another --out, or pass --force)", out);
    for (int s = 0; s < AD_SYNTH_SPLITS; s++)
        if (opt->counts[s] < 1)
            return ad_fail("synth: the %s split needs at least one sentence",
                           ad_synth_split_names[s]);
    if (opt->talks < 0 || opt->talks > opt->counts[AD_SYNTH_EVAL])
        return ad_fail("synth: --talks must be between 0 and the eval size (%d)",
                       opt->counts[AD_SYNTH_EVAL]);

    ad_synth_text *texts[AD_SYNTH_SPLITS];
    AD_TRY(ad_synth_make_splits(opt->seed, opt->counts, texts));

    char root[4200];
    snprintf(root, sizeof root, "%s.tmp-%ld", out, (long)getpid());
    speech_ctx c;
    memset(&c, 0, sizeof c);
    int rc = AD_OK;
    if (ad_path_exists(root)) rc = ad_remove_tree(root); /* a stale one of an old process */
    if (rc == AD_OK) rc = ad_mkdir_p(root);
    if (rc == AD_OK) rc = write_texts(opt, root, texts);

    c.opt = opt;
    c.root = root;
    c.texts = texts;
    for (int s = 0; s < AD_SYNTH_SPLITS && rc == AD_OK; s++) {
        c.noise_rms[s] = ad_calloc((size_t)opt->counts[s], sizeof(float), "noise levels");
        c.samples[s] = ad_calloc((size_t)opt->counts[s], sizeof(int64_t), "sentence lengths");
        if (!c.noise_rms[s] || !c.samples[s]) rc = AD_ERR;
        c.n_jobs += opt->counts[s];
    }
    if (rc == AD_OK) {
        c.jobs = ad_calloc((size_t)c.n_jobs, sizeof *c.jobs, "speech jobs");
        if (!c.jobs) rc = AD_ERR;
    }
    if (rc == AD_OK) {
        int k = 0;
        for (int s = 0; s < AD_SYNTH_SPLITS; s++)
            for (int i = 0; i < opt->counts[s]; i++)
                c.jobs[k++] = (job_ref){s, i};
        pthread_mutex_init(&c.lock, NULL);
        rc = speak_all(&c);
        pthread_mutex_destroy(&c.lock);
    }
    if (rc == AD_OK && opt->talks > 0) rc = write_talks(&c, &stats->talk_seconds);
    if (rc == AD_OK) {
        for (int s = 0; s < AD_SYNTH_SPLITS; s++)
            for (int i = 0; i < opt->counts[s]; i++)
                stats->audio_seconds += (double)c.samples[s][i] / AD_SYNTH_SAMPLE_RATE;
        stats->sentences = c.n_jobs;
        rc = publish(root, out, opt->force);
    }
    if (rc < 0 && ad_path_exists(root)) {
        char saved[1024];
        snprintf(saved, sizeof saved, "%s", ad_error());
        (void)ad_remove_tree(root);
        ad_fail("%s", saved);
    }
    for (int s = 0; s < AD_SYNTH_SPLITS; s++) {
        free(texts[s]);
        free(c.noise_rms[s]);
        free(c.samples[s]);
    }
    free(c.jobs);
    stats->wall_seconds = ad_now_seconds() - start;
    return rc;
}
