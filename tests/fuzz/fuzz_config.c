/* libFuzzer target: the HF config.json parser, then the weight list it implies (so every
 * accepted config also yields sane shapes). */
#include <stdint.h>
#include <stdlib.h>

#include "io/hf_config.h"
#include "model/weights.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    static ad_model_config cfg;
    if (ad_model_config_parse((const char *)data, size, "fuzz", &cfg) < 0) return 0;
    /* Huge accepted sizes are fine to parse but not to enumerate layer by layer. */
    if (cfg.num_hidden_layers > 64 || cfg.encoder_layers > 64) return 0;
    ad_weight_spec *specs = NULL;
    int n = 0;
    if (ad_weight_specs(&cfg, &specs, &n) == 0) {
        ad_param_counts counts;
        ad_count_params(specs, n, &counts);
        free(specs);
    }
    return 0;
}
