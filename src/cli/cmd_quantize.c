/* audistill quantize: a model directory stored in group format (round-to-nearest or GPTQ with
 * Hessians from calibration data) by the job's `quantize:` recipe; the result runs directly
 * in translate/train and `audistill size` reports what it weighs. */
#include <stddef.h>
#include <stdio.h>
#include <string.h>

#include "backend/backend.h"
#include "cli/cli.h"
#include "compress/quantize.h"
#include "core/log.h"
#include "io/file.h"
#include "io/yaml.h"

typedef struct {
    const char *data;
    int64_t segments;
    int64_t batch;
    int64_t max_frames;
} quant_calibration;

typedef struct {
    const char *model;
    const char *output;
    quant_calibration calibration;
    ad_quant_recipe quantize;
    double damp_percent;
    int64_t threads;
} quantize_job;

static const ad_field calibration_fields[] = {
    {.key = "data",
     .type = AD_FIELD_STRING,
     .offset = offsetof(quant_calibration, data),
     .help = "prepared set (audistill prepare) whose inputs give GPTQ its Hessians"},
    {.key = "segments",
     .type = AD_FIELD_INT,
     .offset = offsetof(quant_calibration, segments),
     .default_value = "128",
     .min = 1,
     .max = 1e7},
    {.key = "batch",
     .type = AD_FIELD_INT,
     .offset = offsetof(quant_calibration, batch),
     .default_value = "4",
     .min = 1,
     .max = 4096},
    {.key = "max_frames",
     .type = AD_FIELD_INT,
     .offset = offsetof(quant_calibration, max_frames),
     .default_value = "3000",
     .min = 3,
     .max = 3000},
    {0},
};

static const ad_field quantize_job_fields[] = {
    {.key = "model",
     .type = AD_FIELD_STRING,
     .offset = offsetof(quantize_job, model),
     .required = true,
     .help = "model directory to quantize (a teacher, a pruned or a distilled student)"},
    {.key = "output",
     .type = AD_FIELD_STRING,
     .offset = offsetof(quantize_job, output),
     .required = true,
     .help = "directory to create"},
    {.key = "calibration",
     .type = AD_FIELD_SECTION,
     .offset = offsetof(quantize_job, calibration),
     .section = calibration_fields,
     .help = "needed when any weight class uses method: gptq"},
    {.key = "quantize",
     .type = AD_FIELD_SECTION,
     .offset = offsetof(quantize_job, quantize),
     .section = ad_quant_recipe_fields,
     .help = "bits, group_size, symmetric, method per weight class (bits 16 keeps bf16)"},
    {.key = "damp_percent",
     .type = AD_FIELD_FLOAT,
     .offset = offsetof(quantize_job, damp_percent),
     .default_value = "0.01",
     .min = 0,
     .max = 1,
     .help = "GPTQ damping: this fraction of the mean Hessian diagonal is added to it"},
    {.key = "threads",
     .type = AD_FIELD_INT,
     .offset = offsetof(quantize_job, threads),
     .default_value = "0",
     .min = 0,
     .max = 1024},
    {0},
};

static const char *usage = "audistill quantize --config JOB.yaml";

static void print_help(void) {
    printf("usage: %s\n\nWrites a quantized copy of the job's model. Job file keys:\n", usage);
    ad_yaml_describe(quantize_job_fields, 2, stdout);
}

int cmd_quantize(int argc, char **argv) {
    ad_yaml_doc doc;
    quantize_job job;
    const int parsed =
        cli_config_job(argc, argv, "quantize", usage, print_help, quantize_job_fields, &job, &doc);
    if (parsed >= 0) return parsed;
    const char *job_path = doc.file_name;
    int rc = 1;
    ad_backend *be = NULL;
    ad_model model = {0};
    const ad_quant_choice *all[] = {&job.quantize.decoder_linear, &job.quantize.encoder_linear,
                                    &job.quantize.embed_tokens, &job.quantize.lm_head};
    bool any = false;
    for (int i = 0; i < 4; i++) {
        const int64_t b = all[i]->bits;
        if (b != 16 && b != 8 && b != 4 && b != 3 && b != 2) {
            ad_fail("%s: bits must be 16, 8, 4, 3 or 2, got %lld", job_path, (long long)b);
            goto done;
        }
        any |= b != 16;
        if (b != 16 && !strcmp(all[i]->method, "gptq") && !job.calibration.data) {
            ad_fail("%s: method gptq needs calibration.data (a prepared set)", job_path);
            goto done;
        }
    }
    if (!any) {
        ad_fail("%s: the quantize section keeps every weight class at 16 bits; nothing to do",
                job_path);
        goto done;
    }
    if (ad_path_exists(job.output)) {
        ad_fail("%s already exists; remove it or choose another output", job.output);
        goto done;
    }
    if (ad_backend_cpu_create(&be, (int)job.threads) < 0 ||
        ad_model_load(&model, be, job.model) < 0)
        goto done;
    ad_quantize_options opts = {.calibration = job.calibration.data,
                                .segments = (int)job.calibration.segments,
                                .batch = (int)job.calibration.batch,
                                .max_frames = (int)job.calibration.max_frames,
                                .damp_percent = job.damp_percent};
    if (ad_quantize_model(&model, job.model, &job.quantize, &opts, job.output) < 0) goto done;
    printf("quantized model: %s (run `audistill size %s` for its size)\n", job.output, job.output);
    rc = 0;
done:
    if (rc) cli_fail("quantize");
    if (model.be) ad_model_free(&model);
    if (be) ad_backend_destroy(be);
    ad_yaml_free(&doc);
    return rc;
}
