/* Test helper: writes a small prepared set with random log-mel features and random target ids
 * for the tiny fixture models, so training tests need neither espeak-ng nor a tokenizer:
 *   tiny_set OUT.h5 SEGMENTS N_MELS VOCAB SEED [en] [--frames N --targets N]
 * With "en", every segment also gets English targets (its transcript, for CTC): three tokens
 * that follow the audio, then an end token. They draw nothing from the random stream, so the
 * rest of the set is the same with or without them. --frames and --targets fix every segment's
 * length and target count instead (benchmarks at real shapes: 1000 frames are 10 s). */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "core/rng.h"
#include "data/prepared.h"

int main(int argc, char **argv) {
    bool with_en = false, ok = argc >= 6;
    int fixed_frames = 0, fixed_targets = 0;
    for (int i = 6; ok && i < argc; i++) {
        if (!strcmp(argv[i], "en"))
            with_en = true;
        else if (!strcmp(argv[i], "--frames") && i + 1 < argc)
            fixed_frames = atoi(argv[++i]), ok = fixed_frames >= 3;
        else if (!strcmp(argv[i], "--targets") && i + 1 < argc)
            fixed_targets = atoi(argv[++i]), ok = fixed_targets >= 1;
        else
            ok = false;
    }
    if (!ok) {
        fprintf(stderr, "usage: tiny_set OUT.h5 SEGMENTS N_MELS VOCAB SEED [en] [--frames N "
                        "--targets N]\n");
        return 2;
    }
    const int n = atoi(argv[2]), mels = atoi(argv[3]), vocab = atoi(argv[4]);
    ad_rng rng;
    ad_rng_init(&rng, strtoull(argv[5], NULL, 10), 0);
    const char *text_langs[] = {"en", "de", "zh"}, *targets[] = {"de", "zh", "en"};
    ad_prepared_info info = {.n_mels = mels,
                             .hop_length = 160,
                             .sample_rate = 16000,
                             .source = "tiny_set",
                             .tokenizer = "none",
                             .n_text_langs = 3,
                             .text_langs = text_langs,
                             .n_target_langs = with_en ? 3 : 2,
                             .target_langs = targets};
    ad_prepared_writer *w;
    if (ad_prepared_create(argv[1], &info, &w) < 0) goto fail;
    int32_t before[] = {5, 17, 42}, after_de[] = {60, 61}, after_zh[] = {60, 62};
    if (ad_prepared_set_prompt(w, "de", "de", before, 3, after_de, 2) < 0 ||
        ad_prepared_set_prompt(w, "zh", "zh", before, 3, after_zh, 2) < 0 ||
        (with_en && ad_prepared_set_prompt(w, "en", "en", before, 3, after_zh, 2) < 0))
        goto fail;
    for (int i = 0; i < n; i++) {
        const int frames = fixed_frames ? fixed_frames : 20 + (int)ad_rng_below(&rng, 60),
                  stored = frames + 2;
        float *f = malloc(sizeof(float) * (size_t)(stored * mels));
        for (int k = 0; k < stored * mels; k++)
            f[k] = ad_rng_normal(&rng) * 0.5f;
        int32_t de[256], zh[256];
        int nd = 2 + (int)ad_rng_below(&rng, 5), nz = 2 + (int)ad_rng_below(&rng, 5);
        if (fixed_targets) nd = nz = fixed_targets < 256 ? fixed_targets : 256;
        /* Targets follow the audio a little (first feature value), so there is something to learn.
         */
        for (int k = 0; k < nd; k++)
            de[k] = (int32_t)((100 + k * 7 + (f[0] > 0 ? 3 : 0)) % vocab);
        for (int k = 0; k < nz; k++)
            zh[k] = (int32_t)((150 + k * 5 + (f[1] > 0 ? 2 : 0)) % vocab);
        int32_t en[4];
        for (int k = 0; k < 3; k++)
            en[k] = (int32_t)((200 + k * 3 + (f[2 + k] > 0 ? 1 : 0)) % vocab);
        en[3] = 7; /* the end token, which CTC leaves out */
        const int32_t *ids[3] = {de, zh, en};
        int counts[3] = {nd, nz, 4};
        const char *texts[3] = {"en", "de", "zh"};
        int rc = ad_prepared_append(w, f, stored, frames, -1.0f, "talk", texts, ids, counts);
        free(f);
        if (rc < 0) goto fail;
    }
    if (ad_prepared_finish(w) < 0) goto fail;
    return 0;
fail:
    fprintf(stderr, "tiny_set: %s\n", ad_error());
    return 1;
}
