/* The batch of tests/fixtures/grad/tiny_a_ce.safetensors (two clips of different lengths,
 * right-padded prompts with expanded audio placeholders, target labels) as an ad_batch. */
#ifndef AUDISTILL_TESTS_FIXTURE_BATCH_H
#define AUDISTILL_TESTS_FIXTURE_BATCH_H

#include <stdlib.h>
#include <string.h>

#include "io/safetensors.h"
#include "train/loader.h"

static float *fixture_floats(ad_safetensors *st, const char *name, int64_t *numel) {
    const ad_st_entry *e = ad_safetensors_find(st, name);
    if (!e) return NULL;
    ad_tensor t;
    ad_safetensors_view(st, e, &t);
    *numel = ad_tensor_numel(&t);
    float *out = malloc(sizeof(float) * (size_t)(*numel + 1));
    ad_tensor_to_f32(&t, out);
    return out;
}

static const int32_t *fixture_ints(ad_safetensors *st, const char *name) {
    ad_tensor t;
    ad_safetensors_view(st, ad_safetensors_find(st, name), &t);
    return t.data;
}

static int fixture_batch(ad_safetensors *st, ad_batch *b) {
    const ad_st_entry *fe = ad_safetensors_find(st, "input.features"),
                      *ie = ad_safetensors_find(st, "input.ids");
    if (!fe || !ie) return ad_fail("fixture lacks inputs");
    int64_t n;
    memset(b, 0, sizeof *b);
    b->n = (int)fe->shape[0];
    b->n_mels = (int)fe->shape[1];
    b->max_frames = (int)fe->shape[2];
    b->features = fixture_floats(st, "input.features", &n);
    b->max_len = (int)ie->shape[1];
    b->frames = malloc(sizeof(int) * (size_t)b->n);
    b->len = malloc(sizeof(int) * (size_t)b->n);
    b->audio_tokens = malloc(sizeof(int) * (size_t)b->n);
    b->lang = calloc((size_t)b->n, sizeof(int));
    b->ids = malloc(sizeof(int32_t) * (size_t)(b->n * b->max_len));
    b->labels = malloc(sizeof(int32_t) * (size_t)(b->n * b->max_len));
    memcpy(b->ids, fixture_ints(st, "input.ids"), sizeof(int32_t) * (size_t)(b->n * b->max_len));
    memcpy(b->labels, fixture_ints(st, "input.labels"),
           sizeof(int32_t) * (size_t)(b->n * b->max_len));
    for (int i = 0; i < b->n; i++) {
        b->frames[i] = fixture_ints(st, "input.frames")[i];
        b->len[i] = fixture_ints(st, "input.len")[i];
        b->audio_tokens[i] = ad_loader_audio_tokens(b->frames[i]);
    }
    for (int i = 0; i < b->n * b->max_len; i++)
        b->supervised += b->labels[i] != AD_IGNORE_LABEL;
    return AD_OK;
}

#endif
