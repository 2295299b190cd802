/* Compression recipes: what a student keeps (layers, heads, FFN width, hidden size, vocabulary)
 * and how each class of weights is stored (bf16 or 8/4/3/2-bit groups), as read from the
 * `prune:` and `quantize:` sections of a job file; and the exact size a recipe gives, computed
 * from shapes alone (so it works on the real 7B config without its weights). */
#ifndef AUDISTILL_COMPRESS_RECIPE_H
#define AUDISTILL_COMPRESS_RECIPE_H

#include <stdbool.h>
#include <stdint.h>

#include "compress/quant.h"
#include "io/hf_config.h"
#include "io/yaml.h"
#include "model/weights.h"

typedef struct {
    int64_t decoder_layers; /* keep this many (0 = all) */
    ad_int_list drop_decoder_layers;
    int64_t encoder_layers;
    ad_int_list drop_encoder_layers;
    int64_t decoder_heads; /* query heads per decoder layer (0 = keep) */
    int64_t decoder_ffn;
    int64_t hidden;
    int64_t encoder_heads;
    int64_t encoder_ffn;
    int64_t vocab; /* keep this many tokens (0 = all) */
} ad_prune_recipe;

typedef struct {
    int64_t bits; /* 16 = keep bf16 */
    int64_t group_size;
    bool symmetric;
    const char *method; /* rtn | gptq */
} ad_quant_choice;

typedef enum {
    AD_WEIGHT_CLASS_DECODER_LINEAR = 0, /* q/k/v/o, gate/up/down of decoder layers */
    AD_WEIGHT_CLASS_ENCODER_LINEAR,     /* q/k/v/out, fc1/fc2 of encoder layers + projector */
    AD_WEIGHT_CLASS_EMBED_TOKENS,
    AD_WEIGHT_CLASS_LM_HEAD,
    AD_WEIGHT_CLASS_OTHER, /* norms, biases, convolutions, positions: always bf16 */
    AD_WEIGHT_CLASS_COUNT
} ad_weight_class;

typedef struct {
    ad_quant_choice decoder_linear;
    ad_quant_choice encoder_linear;
    ad_quant_choice embed_tokens;
    ad_quant_choice lm_head;
} ad_quant_recipe;

extern const ad_field ad_prune_recipe_fields[];
extern const ad_field ad_quant_recipe_fields[];

ad_weight_class ad_weight_class_of(const ad_weight_spec *spec);
const char *ad_weight_class_name(ad_weight_class c);

/* The student config a pruning recipe gives (shapes only; which layers/heads survive is the
 * pruner's business). Fails when a target exceeds what the teacher has or breaks head
 * grouping. */
int ad_prune_apply_shapes(const ad_model_config *teacher, const ad_prune_recipe *recipe,
                          ad_model_config *student);

typedef struct {
    int64_t params[AD_WEIGHT_CLASS_COUNT];
    int64_t bytes[AD_WEIGHT_CLASS_COUNT];
    int64_t total_params;
    int64_t total_bytes;
} ad_size_estimate;

/* Bytes of the weights (tensor data only, as stored) for a config under a quantization recipe
 * (NULL = everything bf16). Fails if a group size does not divide a width. */
int ad_estimate_size(const ad_model_config *cfg, const ad_quant_recipe *quant,
                     ad_size_estimate *out);

#endif
