/* The training loader: shards of a global batch over any number of ranks add up to the same
 * global batch; a restored cursor continues exactly; every epoch is a fresh permutation; a
 * filled batch has the prompt, the expanded audio placeholder and the targets in order, labels
 * on the target positions only, and the features transposed to [n_mels, T] with padding. */
#include <unistd.h>

#include "core/rng.h"
#include "data/prepared.h"
#include "test.h"
#include "train/loader.h"

#define N_SEG  7
#define N_MELS 4
#define AUDIO  99

static char path[512];

static void make_set(void) {
    const char *text_langs[] = {"en"}, *targets[] = {"de", "zh"};
    ad_prepared_info info = {.n_mels = N_MELS,
                             .hop_length = 160,
                             .sample_rate = 16000,
                             .n_text_langs = 1,
                             .text_langs = text_langs,
                             .n_target_langs = 2,
                             .target_langs = targets};
    ad_prepared_writer *w;
    if (ad_prepared_create(path, &info, &w) < 0) return;
    int32_t before[] = {1, 2}, after_de[] = {3}, after_zh[] = {4, 5};
    ad_prepared_set_prompt(w, "de", "de", before, 2, after_de, 1);
    ad_prepared_set_prompt(w, "zh", "zh", before, 2, after_zh, 2);
    for (int i = 0; i < N_SEG; i++) {
        int frames = 10 + 3 * i;
        float feat[64 * N_MELS];
        for (int t = 0; t < frames; t++)
            for (int m = 0; m < N_MELS; m++)
                feat[t * N_MELS + m] = (float)(i * 1000 + t * 10 + m);
        int32_t de[3] = {100 + i, 200 + i, 7}, zh[2] = {300 + i, 7};
        const int32_t *ids[2] = {de, zh};
        int n_ids[2] = {3, 2};
        const char *texts[1] = {"x"};
        ad_prepared_append(w, feat, frames, frames - 2, -1.5f, "talk", texts, ids, n_ids);
    }
    ad_prepared_finish(w);
}

static void test_sharding_and_resume(void) {
    const char *langs[] = {"de", "zh"};
    ad_loader a, b;
    CHECK_OK(ad_loader_open(&a, path, 2, langs, AUDIO, 42, true));
    CHECK_OK(ad_loader_open(&b, path, 2, langs, AUDIO, 42, true));
    CHECK(a.n_examples == 14);
    int32_t full[8], part[8], seen[14 * 3] = {0};
    int drawn = 0;
    for (int step = 0; step < 5; step++) {
        int n;
        ad_loader_cursor before = a.cursor;
        CHECK_OK(ad_loader_next(&a, 8, 0, 1, full, &n));
        CHECK(n == 8);
        for (int i = 0; i < 8; i++, drawn++)
            seen[(drawn / 14) * 14 + full[i]]++;
        /* Three ranks from the same cursor cover exactly the single-rank batch, in order. */
        int k = 0;
        for (int r = 0; r < 3; r++) {
            CHECK_OK(ad_loader_seek(&b, before));
            int m;
            CHECK_OK(ad_loader_next(&b, 8, r, 3, part, &m));
            for (int i = 0; i < m; i++)
                CHECK(part[i] == full[k + i]);
            k += m;
        }
        CHECK(k == 8);
    }
    /* 40 examples = epochs 0, 1 complete and 12 of epoch 2: each complete epoch covers every
     * example exactly once. */
    int once = 1;
    for (int e = 0; e < 2; e++)
        for (int i = 0; i < 14; i++)
            once &= seen[e * 14 + i] == 1;
    CHECK(once && a.cursor.epoch == 2 && a.cursor.position == 12);
    /* Epoch orders differ (a fresh shuffle), and a resumed loader continues identically. */
    int32_t order2[14];
    memcpy(order2, a.order, sizeof order2);
    CHECK_OK(ad_loader_seek(&b, (ad_loader_cursor){1, 0}));
    CHECK(memcmp(order2, b.order, sizeof order2) != 0);
    CHECK_OK(ad_loader_seek(&b, a.cursor));
    int32_t x[8], y[8];
    int nx, ny;
    CHECK_OK(ad_loader_next(&a, 8, 0, 1, x, &nx));
    CHECK_OK(ad_loader_next(&b, 8, 0, 1, y, &ny));
    CHECK(nx == ny && memcmp(x, y, sizeof x) == 0);
    CHECK_FAILS_WITH(ad_loader_seek(&b, (ad_loader_cursor){0, 99}), "outside a set of 14");
    CHECK_FAILS_WITH(ad_loader_next(&b, 2, 0, 3, x, &nx), "cannot be split over 3 ranks");
    ad_loader_close(&a);
    ad_loader_close(&b);
    ad_loader l;
    const char *fr[] = {"fr"};
    CHECK_FAILS_WITH(ad_loader_open(&l, path, 1, fr, AUDIO, 1, true),
                     "no prompt for language 'fr'");
}

static void test_fill(void) {
    const char *langs[] = {"de", "zh"};
    ad_loader l;
    CHECK_OK(ad_loader_open(&l, path, 2, langs, AUDIO, 1, false));
    int32_t ex[2] = {2 * 3 + 0, 2 * 1 + 1}; /* segment 3 in German, segment 1 in Chinese */
    ad_batch b = {0};
    CHECK_OK(ad_loader_fill(&l, ex, 2, &b));
    CHECK(b.n == 2 && b.n_mels == N_MELS && b.max_frames == 19);
    CHECK(b.frames[0] == 17 && b.frames[1] == 11);
    int a0 = ad_loader_audio_tokens(17), a1 = ad_loader_audio_tokens(11);
    CHECK(a0 == 4 && a1 == 3); /* (17-1)/2+1 = 9 conv frames -> (9-2)/2+1 = 4 tokens */
    CHECK(b.len[0] == 2 + a0 + 1 + 3 && b.len[1] == 2 + a1 + 2 + 2);
    const int32_t *ids = b.ids, *lab = b.labels;
    CHECK(ids[0] == 1 && ids[1] == 2 && ids[2] == AUDIO && ids[2 + a0 - 1] == AUDIO &&
          ids[2 + a0] == 3);
    CHECK(ids[3 + a0] == 103 && ids[4 + a0] == 203 && ids[5 + a0] == 7);
    /* Labels: the last prompt token predicts the first target; the final token predicts nothing. */
    int supervised = 0;
    for (int t = 0; t < b.max_len; t++)
        supervised += lab[t] != AD_IGNORE_LABEL;
    CHECK(supervised == 3 && lab[2 + a0] == 103 && lab[3 + a0] == 203 && lab[4 + a0] == 7 &&
          lab[5 + a0] == AD_IGNORE_LABEL);
    CHECK(b.supervised == 3 + 2);
    /* Features: [n_mels, T] of clip 0 = segment 3 (value 3000 + 10 t + m), padded after 19 stored
     * frames. */
    CHECK(b.features[1 * b.max_frames + 5] == 3000 + 50 + 1);
    const float *f1 = b.features + (size_t)N_MELS * b.max_frames;
    CHECK(f1[2 * b.max_frames + 12] == 1000 + 120 + 2 && f1[2 * b.max_frames + 13] == -1.5f);
    ad_batch_free(&b);
    ad_loader_close(&l);
}

/* Token dropout corrupts only target-token inputs, never labels, prompt or audio; the same
 * (epoch, example) gets the same corruption; the rate is about p. */
static void test_input_dropout(void) {
    const char *langs[] = {"de", "zh"};
    ad_loader l;
    CHECK_OK(ad_loader_open(&l, path, 2, langs, AUDIO, 5, false));
    const int n = 2 * l.n_segments;
    int32_t *ex = malloc(sizeof(int32_t) * (size_t)n);
    for (int i = 0; i < n; i++)
        ex[i] = i;
    ad_batch clean = {0}, drop = {0}, again = {0};
    CHECK_OK(ad_loader_fill(&l, ex, n, &clean));
    ad_loader_set_input_dropout(&l, 0.5f, 9);
    CHECK_OK(ad_loader_fill(&l, ex, n, &drop));
    CHECK_OK(ad_loader_fill(&l, ex, n, &again));
    int targets = 0, replaced = 0, wrong = 0;
    for (int i = 0; i < n; i++) {
        int sup = 0; /* = the row's target tokens: the first target sits at len - sup */
        for (int t = 0; t < clean.max_len; t++)
            sup += clean.labels[(size_t)i * clean.max_len + (size_t)t] != AD_IGNORE_LABEL;
        const int first = clean.len[i] - sup;
        for (int t = 0; t < clean.max_len; t++) {
            const size_t k = (size_t)i * clean.max_len + (size_t)t;
            wrong += drop.labels[k] != clean.labels[k] || drop.ids[k] != again.ids[k];
            if (drop.ids[k] == clean.ids[k]) continue;
            /* A changed input must be a target position (after the prompt) and the token. */
            wrong += drop.ids[k] != 9 || clean.ids[k] == AUDIO || t < first || t >= clean.len[i];
            replaced++;
        }
        targets += sup;
    }
    CHECK_MSG(wrong == 0, "%d inputs or labels wrong", wrong);
    CHECK_MSG(replaced > targets / 5 && replaced < targets * 4 / 5,
              "%d of about %d target inputs replaced at p = 0.5", replaced, targets);
    ad_batch_free(&clean), ad_batch_free(&drop), ad_batch_free(&again);
    free(ex);
    ad_loader_close(&l);
}

/* Replaced targets (sequence-level distillation): the labels are exactly the given ids, the
 * prompt and audio are unchanged, and clearing the hook restores the prepared targets. */
static void test_replaced_targets(void) {
    const char *langs[] = {"de", "zh"};
    ad_loader l;
    CHECK_OK(ad_loader_open(&l, path, 2, langs, AUDIO, 0, false));
    int64_t offset[N_SEG + 1] = {0};
    int32_t tokens[N_SEG * 8];
    for (int s = 0; s < N_SEG; s++) {
        const int n = 1 + (s * 5) % 7;
        for (int j = 0; j < n; j++)
            tokens[offset[s] + j] = 1000 + 37 * s + j;
        offset[s + 1] = offset[s] + n;
    }
    ad_loader_set_targets(&l, 1, offset, tokens);
    int32_t ex[2 * N_SEG];
    for (int i = 0; i < 2 * N_SEG; i++)
        ex[i] = i;
    ad_batch b = {0}, ref = {0};
    CHECK_OK(ad_loader_fill(&l, ex, 2 * N_SEG, &b));
    int wrong = 0;
    for (int i = 0; i < b.n; i++) {
        const int seg = i / 2;
        wrong += b.segment[i] != seg || b.lang[i] != i % 2;
        int32_t got[16];
        int n = 0;
        for (int t = 0; t < b.max_len; t++)
            if (b.labels[(size_t)i * b.max_len + t] != AD_IGNORE_LABEL && n < 16)
                got[n++] = b.labels[(size_t)i * b.max_len + t];
        if (i % 2 == 1) {
            wrong += n != offset[seg + 1] - offset[seg];
            for (int j = 0; j < n && j < offset[seg + 1] - offset[seg]; j++)
                wrong += got[j] != tokens[offset[seg] + j];
        } else {
            wrong += n != 3 || got[0] != 100 + seg || got[2] != 7; /* de keeps its references */
        }
    }
    CHECK_MSG(wrong == 0, "%d mismatches", wrong);
    ad_loader_set_targets(&l, 1, NULL, NULL);
    CHECK_OK(ad_loader_fill(&l, ex, 2 * N_SEG, &ref));
    CHECK(ref.supervised == 5 * N_SEG);
    ad_batch_free(&b);
    ad_batch_free(&ref);
    ad_loader_close(&l);
}

int main(void) {
    snprintf(path, sizeof path, "%s/loader-%ld.h5", AUDISTILL_TEST_TMP, (long)getpid());
    make_set();
    RUN(test_sharding_and_resume);
    RUN(test_fill);
    RUN(test_input_dropout);
    RUN(test_replaced_targets);
    unlink(path);
    return test_report();
}
