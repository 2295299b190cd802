/* audistill plan: the size a compression recipe gives, from shapes alone. Works on the real
 * Qwen2-Audio-7B config without downloading its weights. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "compress/recipe.h"
#include "core/error.h"
#include "io/file.h"
#include "io/yaml.h"

static const char *usage = "audistill plan --config JOB.yaml [--model-config config.json]";

static void print_help(void) {
    printf("usage: %s\n\n"
           "Prints the parameters and bytes on disk a recipe gives, per class of weights,\n"
           "computed from the model config alone. The job file's `prune:` and `quantize:`\n"
           "sections are read (other sections belong to other stages and are ignored); the\n"
           "model config is the job's `teacher:` directory's config.json unless\n"
           "--model-config names one.\n\n"
           "prune: keys\n",
           usage);
    ad_yaml_describe(ad_prune_recipe_fields, 2, stdout);
    printf("quantize: keys (each a section with bits, group_size, symmetric, method)\n");
    ad_yaml_describe(ad_quant_recipe_fields, 2, stdout);
}

static double gb(int64_t bytes) {
    return (double)bytes / 1e9;
}

int cmd_plan(int argc, char **argv) {
    const char *job_path = NULL, *model_config = NULL;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            print_help();
            return 0;
        } else if (strcmp(argv[i], "--config") == 0 && i + 1 < argc) {
            job_path = argv[++i];
        } else if (strcmp(argv[i], "--model-config") == 0 && i + 1 < argc) {
            model_config = argv[++i];
        } else {
            return cli_usage_error("plan", usage, "unexpected argument '%s'", argv[i]);
        }
    }
    if (!job_path) return cli_usage_error("plan", usage, "--config JOB.yaml is required");
    ad_yaml_doc doc;
    if (ad_yaml_load(job_path, &doc) < 0) return cli_fail("plan");
    int rc = 1;
    char *config_path = NULL;
    ad_prune_recipe prune;
    ad_quant_recipe quant;
    if (doc.root && doc.root->kind != AD_YAML_MAPPING) {
        ad_fail("%s: expected a mapping with prune:/quantize: sections", job_path);
        goto done;
    }
    if (ad_yaml_bind(&doc, ad_yaml_get(doc.root, "prune"), ad_prune_recipe_fields, &prune,
                     "prune") < 0 ||
        ad_yaml_bind(&doc, ad_yaml_get(doc.root, "quantize"), ad_quant_recipe_fields, &quant,
                     "quantize") < 0)
        goto done;
    if (model_config) {
        config_path = ad_strdup(model_config, "path");
    } else {
        const ad_yaml_node *teacher = ad_yaml_get(doc.root, "teacher");
        if (!teacher || teacher->kind != AD_YAML_SCALAR || ad_yaml_is_null(teacher)) {
            ad_fail("%s: no `teacher:` model directory; give --model-config", job_path);
            goto done;
        }
        config_path = ad_path_join(teacher->value, "config.json");
    }
    if (!config_path) goto done;
    ad_model_config teacher_cfg, student_cfg;
    if (ad_model_config_load(config_path, &teacher_cfg) < 0 ||
        ad_prune_apply_shapes(&teacher_cfg, &prune, &student_cfg) < 0)
        goto done;
    ad_size_estimate before, after;
    if (ad_estimate_size(&teacher_cfg, NULL, &before) < 0 ||
        ad_estimate_size(&student_cfg, &quant, &after) < 0)
        goto done;
    printf("model config: %s\nrecipe: %s\n", config_path, job_path);
    printf("student: %d decoder layers, hidden %d, ffn %d, %d heads (%d kv); %d encoder layers, "
           "ffn %d, %d heads; vocab %d\n",
           student_cfg.num_hidden_layers, student_cfg.hidden_size, student_cfg.intermediate_size,
           student_cfg.num_attention_heads, student_cfg.num_key_value_heads,
           student_cfg.encoder_layers, student_cfg.encoder_ffn_dim,
           student_cfg.encoder_attention_heads, student_cfg.vocab_size);
    printf("%-16s %14s %14s %6s %14s %8s\n", "weights", "params before", "params after", "bits",
           "bytes after", "GB");
    const ad_quant_choice *choices[] = {&quant.decoder_linear, &quant.encoder_linear,
                                        &quant.embed_tokens, &quant.lm_head, NULL};
    for (int c = 0; c < AD_WEIGHT_CLASS_COUNT; c++) {
        char bits[16];
        if (choices[c] && choices[c]->bits != 16)
            snprintf(bits, sizeof bits, "%lld/g%lld", (long long)choices[c]->bits,
                     (long long)choices[c]->group_size);
        else
            snprintf(bits, sizeof bits, "bf16");
        printf("%-16s %14lld %14lld %6s %14lld %8.3f\n", ad_weight_class_name((ad_weight_class)c),
               (long long)before.params[c], (long long)after.params[c], bits,
               (long long)after.bytes[c], gb(after.bytes[c]));
    }
    printf("%-16s %14lld %14lld %6s %14lld %8.3f\n", "total", (long long)before.total_params,
           (long long)after.total_params, "", (long long)after.total_bytes, gb(after.total_bytes));
    printf("size: %.3f GB of weights, %.1f%% of the bf16 teacher's %.3f GB\n",
           gb(after.total_bytes), 100.0 * (double)after.total_bytes / (double)before.total_bytes,
           gb(before.total_bytes));
    rc = 0;
done:
    if (rc) cli_fail("plan");
    free(config_path);
    ad_yaml_free(&doc);
    return rc;
}
