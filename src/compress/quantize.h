/* Post-training quantization of a model directory: every weight class the recipe names
 * (decoder linears, encoder linears + projector, embed_tokens, lm_head) stored in group
 * format by round-to-nearest or GPTQ (Hessians of each linear layer's inputs gathered from
 * calibration data through the training graph's recorded activations); everything else kept
 * in f32. The result is a model directory the runtime executes directly. */
#ifndef AUDISTILL_COMPRESS_QUANTIZE_H
#define AUDISTILL_COMPRESS_QUANTIZE_H

#include "compress/recipe.h"
#include "model/model.h"

typedef struct {
    const char *calibration; /* prepared set for GPTQ (NULL: RTN only) */
    int segments;            /* calibration segments */
    int batch;
    int max_frames;
    double damp_percent;
} ad_quantize_options;

int ad_quantize_model(ad_model *m, const char *model_dir, const ad_quant_recipe *recipe,
                      const ad_quantize_options *opts, const char *out_dir);

#endif
