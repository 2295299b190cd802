/* The tensors a config implies: every name (as in the Hugging Face checkpoint) and shape of a
 * Qwen2-Audio model, per-layer shapes of students included, grouped into the components that
 * reports count separately. Knows names and shapes only, never data. */
#ifndef AUDISTILL_MODEL_WEIGHTS_H
#define AUDISTILL_MODEL_WEIGHTS_H

#include <stddef.h>
#include <stdint.h>

#include "io/hf_config.h"

typedef enum {
    AD_COMPONENT_AUDIO_ENCODER = 0,
    AD_COMPONENT_PROJECTOR,
    AD_COMPONENT_DECODER_LAYERS, /* decoder layers + final norm */
    AD_COMPONENT_EMBED_TOKENS,
    AD_COMPONENT_LM_HEAD,
    AD_COMPONENT_COUNT
} ad_component;

#define AD_WEIGHT_NAME_MAX 96

typedef struct {
    char name[AD_WEIGHT_NAME_MAX];
    int ndim;
    int64_t shape[3];
    ad_component component;
} ad_weight_spec;

const char *ad_component_name(ad_component c);
/* All tensors of the model in checkpoint order; caller frees *specs. */
int ad_weight_specs(const ad_model_config *cfg, ad_weight_spec **specs, int *n);
int64_t ad_weight_spec_numel(const ad_weight_spec *s);
/* Maps transformers >= 5 in-memory names (model.audio_tower..., model.language_model...,
 * lm_head.weight) to the checkpoint names the published model uses. Returns buf. */
const char *ad_canonical_tensor_name(const char *name, char *buf, size_t size);

typedef struct {
    int64_t params[AD_COMPONENT_COUNT];
    int tensors[AD_COMPONENT_COUNT];
    int64_t total_params;
    int total_tensors;
} ad_param_counts;

void ad_count_params(const ad_weight_spec *specs, int n, ad_param_counts *counts);
#endif
