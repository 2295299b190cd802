#include "train/loader.h"

#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/rng.h"

static int build_order(ad_loader *l) {
    for (int64_t i = 0; i < l->n_examples; i++)
        l->order[i] = (int32_t)i;
    if (l->shuffle) {
        ad_rng rng;
        /* One stream per epoch: epoch e's order never depends on what was drawn before. */
        ad_rng_init(&rng, l->seed, 0x10000u + (uint64_t)l->cursor.epoch);
        ad_rng_shuffle_u32(&rng, (uint32_t *)l->order, (uint32_t)l->n_examples);
    }
    return AD_OK;
}

int ad_loader_open(ad_loader *l, const char *path, int n_langs, const char *const *langs,
                   int32_t audio_token_id, uint64_t seed, bool shuffle) {
    memset(l, 0, sizeof *l);
    if (n_langs < 1 || n_langs > AD_LOADER_MAX_LANGS)
        return ad_fail("loader: between 1 and %d target languages", AD_LOADER_MAX_LANGS);
    AD_TRY(ad_prepared_open(path, &l->set));
    l->n_segments = ad_prepared_count(l->set);
    l->n_langs = n_langs;
    l->audio_token_id = audio_token_id;
    l->seed = seed;
    l->shuffle = shuffle;
    for (int i = 0; i < n_langs; i++) {
        snprintf(l->langs[i], sizeof l->langs[i], "%s", langs[i]);
        if (ad_prepared_prompt(l->set, langs[i], &l->prompt_before[i], &l->n_before[i],
                               &l->prompt_after[i], &l->n_after[i]) < 0) {
            ad_loader_close(l);
            return AD_ERR;
        }
    }
    if (l->n_segments == 0) {
        ad_loader_close(l);
        return ad_fail("%s holds no segments", path);
    }
    l->n_examples = (int64_t)l->n_segments * n_langs;
    l->order = ad_malloc(sizeof *l->order * (size_t)l->n_examples, "loader order");
    if (!l->order) {
        ad_loader_close(l);
        return AD_ERR;
    }
    return build_order(l);
}

void ad_loader_set_window(ad_loader *l, int frames) {
    l->window = frames > 0 ? frames : 0;
}

void ad_loader_close(ad_loader *l) {
    for (int i = 0; i < AD_LOADER_MAX_LANGS; i++) {
        free(l->prompt_before[i]);
        free(l->prompt_after[i]);
    }
    free(l->order);
    ad_prepared_close(l->set);
    memset(l, 0, sizeof *l);
}

int ad_loader_seek(ad_loader *l, ad_loader_cursor cursor) {
    if (cursor.epoch < 0 || cursor.position < 0 || cursor.position > l->n_examples)
        return ad_fail(
            "loader: cursor (epoch %lld, position %lld) is outside a set of %lld examples "
            "(was the checkpoint made with another data set?)",
            (long long)cursor.epoch, (long long)cursor.position, (long long)l->n_examples);
    l->cursor = cursor;
    return build_order(l);
}

int ad_loader_next(ad_loader *l, int global_batch, int rank, int world, int32_t *examples, int *n) {
    if (global_batch < 1 || world < 1 || rank < 0 || rank >= world || global_batch < world)
        return ad_fail("loader: global batch %d cannot be split over %d ranks", global_batch,
                       world);
    const int64_t first = (int64_t)global_batch * rank / world;
    const int64_t last = (int64_t)global_batch * (rank + 1) / world;
    *n = 0;
    for (int64_t i = 0; i < global_batch; i++) {
        if (l->cursor.position == l->n_examples) {
            l->cursor.epoch++;
            l->cursor.position = 0;
            AD_TRY(build_order(l));
        }
        int32_t ex = l->order[l->cursor.position++];
        if (i >= first && i < last) examples[(*n)++] = ex;
    }
    return AD_OK;
}

void ad_batch_free(ad_batch *b) {
    free(b->features);
    free(b->frames);
    free(b->audio_tokens);
    free(b->ids);
    free(b->labels);
    free(b->len);
    free(b->lang);
    free(b->segment);
    free(b->ctc_len);
    free(b->ctc_ids);
    memset(b, 0, sizeof *b);
}

static int grow(void **p, size_t bytes, const char *what) {
    void *g = ad_realloc(*p, bytes ? bytes : 1, what);
    if (!g) return AD_ERR;
    *p = g;
    return AD_OK;
}

void ad_loader_set_input_dropout(ad_loader *l, float p, int32_t token) {
    l->input_dropout = p;
    l->dropout_token = token;
}

void ad_loader_set_targets(ad_loader *l, int lang, const int64_t *offset, const int32_t *tokens) {
    if (lang < 0 || lang >= AD_LOADER_MAX_LANGS) return;
    l->target_offset[lang] = offset && tokens ? offset : NULL;
    l->target_tokens[lang] = offset && tokens ? tokens : NULL;
}

/* Segment seg's targets in language k: the prepared ones, or those of ad_loader_set_targets. */
static int target_ids(ad_loader *l, int k, int seg, int32_t **ids, int *n) {
    if (!l->target_offset[k]) return ad_prepared_target_ids(l->set, l->langs[k], seg, ids, n);
    const int64_t first = l->target_offset[k][seg], count = l->target_offset[k][seg + 1] - first;
    *n = 0;
    if (count < 0 || count > (1 << 24))
        return ad_fail("loader: replaced %s targets of segment %d have %lld tokens", l->langs[k],
                       seg, (long long)count);
    *ids = ad_malloc(sizeof **ids * (size_t)(count ? count : 1), "targets");
    if (!*ids) return AD_ERR;
    memcpy(*ids, l->target_tokens[k] + first, sizeof **ids * (size_t)count);
    *n = (int)count;
    return AD_OK;
}

int ad_loader_set_ctc(ad_loader *l, const char *lang) {
    l->ctc_lang[0] = '\0';
    if (!lang) return AD_OK;
    if (strlen(lang) >= sizeof l->ctc_lang)
        return ad_fail("loader: CTC language name \"%s\" is too long", lang);
    int32_t *ids = NULL;
    int n = 0;
    /* Segment 0 proves the set holds the language before the first step needs it. */
    if (ad_prepared_target_ids(l->set, lang, 0, &ids, &n) < 0)
        return ad_fail("loader: the CTC transcripts need \"%s\" targets in the prepared set "
                       "(audistill prepare --langs ...,%s)",
                       lang, lang);
    free(ids);
    snprintf(l->ctc_lang, sizeof l->ctc_lang, "%s", lang);
    return AD_OK;
}

/* Example i's CTC transcript into the batch: the stored targets minus their end token. */
static int fill_ctc(ad_loader *l, const int32_t *examples, int n, ad_batch *b) {
    int32_t **ids = ad_calloc((size_t)(n ? n : 1), sizeof *ids, "CTC targets");
    if (!ids || grow((void **)&b->ctc_len, sizeof(int) * (size_t)n, "batch") < 0) {
        free(ids);
        return AD_ERR;
    }
    int rc = AD_ERR, max = 1;
    for (int i = 0; i < n; i++) {
        const int seg = examples[i] / l->n_langs;
        if (ad_prepared_target_ids(l->set, l->ctc_lang, seg, &ids[i], &b->ctc_len[i]) < 0)
            goto done;
        if (b->ctc_len[i] < 2) {
            ad_fail("loader: segment %d's %s transcript is empty", seg, l->ctc_lang);
            goto done;
        }
        b->ctc_len[i]--; /* prepare appends the end token; CTC emits only the words */
        if (b->ctc_len[i] > max) max = b->ctc_len[i];
    }
    if (grow((void **)&b->ctc_ids, sizeof(int32_t) * (size_t)n * (size_t)max, "batch CTC") < 0)
        goto done;
    b->ctc_max = max;
    for (int i = 0; i < n; i++)
        memcpy(b->ctc_ids + (size_t)i * max, ids[i], sizeof(int32_t) * (size_t)b->ctc_len[i]);
    rc = AD_OK;
done:
    for (int i = 0; i < n; i++)
        free(ids[i]);
    free(ids);
    return rc;
}

int ad_loader_longest(ad_loader *l, int *tokens, int *segment, const char **lang) {
    *tokens = 0, *segment = -1, *lang = NULL;
    for (int seg = 0; seg < l->n_segments; seg++) {
        int stored, frames;
        float pad;
        AD_TRY(ad_prepared_frames(l->set, seg, &stored, &frames, &pad));
        if (l->window && frames > l->window) frames = l->window;
        for (int k = 0; k < l->n_langs; k++) {
            int32_t *ids = NULL;
            int n = 0;
            AD_TRY(target_ids(l, k, seg, &ids, &n));
            free(ids);
            const int len = l->n_before[k] + ad_loader_audio_tokens(frames) + l->n_after[k] + n;
            if (len > *tokens) *tokens = len, *segment = seg, *lang = l->langs[k];
        }
    }
    return AD_OK;
}

int ad_loader_fill(ad_loader *l, const int32_t *examples, int n, ad_batch *b) {
    const int n_mels = ad_prepared_n_mels(l->set);
    int max_frames = 0, max_len = 0;
    int32_t **targets = ad_calloc((size_t)(n ? n : 1), sizeof *targets, "batch targets");
    int *n_targets = ad_calloc((size_t)(n ? n : 1), sizeof *n_targets, "batch targets");
    int *stored = ad_calloc((size_t)(n ? n : 1), sizeof *stored, "batch frames");
    float *pad = ad_calloc((size_t)(n ? n : 1), sizeof *pad, "batch pads");
    int rc = AD_ERR;
    if (!targets || !n_targets || !stored || !pad) goto done;
    if (grow((void **)&b->frames, sizeof(int) * (size_t)n, "batch") < 0 ||
        grow((void **)&b->audio_tokens, sizeof(int) * (size_t)n, "batch") < 0 ||
        grow((void **)&b->len, sizeof(int) * (size_t)n, "batch") < 0 ||
        grow((void **)&b->lang, sizeof(int) * (size_t)n, "batch") < 0 ||
        grow((void **)&b->segment, sizeof(int) * (size_t)n, "batch") < 0)
        goto done;
    for (int i = 0; i < n; i++) {
        if (examples[i] < 0 || examples[i] >= l->n_examples) {
            ad_fail("loader: example %d out of range", examples[i]);
            goto done;
        }
        int seg = examples[i] / l->n_langs, lang = examples[i] % l->n_langs;
        if (ad_prepared_frames(l->set, seg, &stored[i], &b->frames[i], &pad[i]) < 0 ||
            target_ids(l, lang, seg, &targets[i], &n_targets[i]) < 0)
            goto done;
        if (l->window && b->frames[i] > l->window) b->frames[i] = l->window;
        if (l->window && stored[i] > l->window) stored[i] = l->window;
        if (b->frames[i] < 1) {
            ad_fail("loader: segment %d has no audio frames", seg);
            goto done;
        }
        if (n_targets[i] < 1) {
            ad_fail("loader: segment %d has no %s target tokens", seg, l->langs[lang]);
            goto done;
        }
        b->lang[i] = lang;
        b->segment[i] = seg;
        b->audio_tokens[i] = ad_loader_audio_tokens(b->frames[i]);
        b->len[i] = l->n_before[lang] + b->audio_tokens[i] + l->n_after[lang] + n_targets[i];
        if (stored[i] > max_frames) max_frames = stored[i];
        if (b->len[i] > max_len) max_len = b->len[i];
    }
    if (grow((void **)&b->features, sizeof(float) * (size_t)n * (size_t)n_mels * (size_t)max_frames,
             "batch features") < 0 ||
        grow((void **)&b->ids, sizeof(int32_t) * (size_t)n * (size_t)max_len, "batch ids") < 0 ||
        grow((void **)&b->labels, sizeof(int32_t) * (size_t)n * (size_t)max_len, "batch labels") <
            0)
        goto done;
    b->n = n;
    b->n_mels = n_mels;
    b->max_frames = max_frames;
    b->max_len = max_len;
    b->supervised = 0;
    b->ctc_max = 0;
    float *rows = NULL;
    for (int i = 0; i < n; i++) {
        int seg = examples[i] / l->n_langs, lang = b->lang[i];
        /* Stored frames are time-major; the encoder takes [n_mels, T] like the processor. */
        /* The file holds all of a clip's frames; a window keeps only its first ones. */
        int in_file, valid_in_file;
        float pad_in_file;
        if (ad_prepared_frames(l->set, seg, &in_file, &valid_in_file, &pad_in_file) < 0) goto done;
        rows = ad_malloc(sizeof(float) * (size_t)in_file * (size_t)n_mels + 1, "batch rows");
        if (!rows || ad_prepared_features(l->set, seg, rows) < 0) {
            free(rows);
            goto done;
        }
        float *f = b->features + (size_t)i * n_mels * max_frames;
        for (int m = 0; m < n_mels; m++)
            for (int t = 0; t < max_frames; t++)
                f[(size_t)m * max_frames + t] =
                    t < stored[i] ? rows[(size_t)t * n_mels + m] : pad[i];
        free(rows);
        int32_t *ids = b->ids + (size_t)i * max_len, *lab = b->labels + (size_t)i * max_len;
        int p = 0;
        for (int k = 0; k < l->n_before[lang]; k++)
            ids[p++] = l->prompt_before[lang][k];
        for (int k = 0; k < b->audio_tokens[i]; k++)
            ids[p++] = l->audio_token_id;
        for (int k = 0; k < l->n_after[lang]; k++)
            ids[p++] = l->prompt_after[lang][k];
        const int first_target = p;
        for (int k = 0; k < n_targets[i]; k++)
            ids[p++] = targets[i][k];
        for (int t = p; t < max_len; t++)
            ids[t] = 0;
        /* Position t predicts token t + 1: supervised from the last prompt token on. */
        for (int t = 0; t < max_len; t++) {
            lab[t] = t >= first_target - 1 && t + 1 < p ? ids[t + 1] : AD_IGNORE_LABEL;
            b->supervised += lab[t] != AD_IGNORE_LABEL;
        }
        if (l->input_dropout > 0) {
            ad_rng rng;
            ad_rng_init(&rng, l->seed ^ 0x9e3779b97f4a7c15ull,
                        ((uint64_t)l->cursor.epoch << 32) ^ (uint64_t)(uint32_t)examples[i]);
            for (int t = first_target; t < p; t++)
                if (ad_rng_uniform(&rng) < l->input_dropout) ids[t] = l->dropout_token;
        }
    }
    rc = l->ctc_lang[0] ? fill_ctc(l, examples, n, b) : AD_OK;
done:
    for (int i = 0; targets && i < n; i++)
        free(targets[i]);
    free(targets);
    free(n_targets);
    free(stored);
    free(pad);
    return rc;
}

int ad_batch_prompt_len(const ad_batch *b, int i) {
    const int32_t *labels = b->labels + (size_t)i * (size_t)b->max_len;
    int n = 0;
    while (n < b->max_len && labels[n] == AD_IGNORE_LABEL)
        n++;
    return n + 1;
}
