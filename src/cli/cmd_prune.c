/* audistill prune: a student from a teacher by a recipe — importance from calibration data
 * when the recipe has targets, vocabulary trimmed to what the data needs, weights gathered,
 * config.json recording the per-layer shapes, trimmed tokenizer files, and a report. */
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "cli/cli.h"
#include "compress/prune.h"
#include "core/log.h"
#include "core/progress.h"
#include "io/file.h"
#include "io/yaml.h"
#include "model/train_graph.h"
#include "model/weights.h"

typedef struct {
    const char *data;
    int64_t segments;
    ad_string_list langs;
    int64_t batch;
    int64_t max_frames;
} calibration_job;

typedef struct {
    const char *teacher;
    const char *output;
    const char *output_dtype;
    calibration_job calibration;
    ad_prune_recipe prune;
    int64_t threads;
} prune_job;

static const ad_field calibration_fields[] = {
    {.key = "data",
     .type = AD_FIELD_STRING,
     .offset = offsetof(calibration_job, data),
     .help = "prepared set (audistill prepare) for importance and the kept vocabulary"},
    {.key = "segments",
     .type = AD_FIELD_INT,
     .offset = offsetof(calibration_job, segments),
     .default_value = "64",
     .min = 1,
     .max = 1e7,
     .help = "segments used for importance"},
    {.key = "langs",
     .type = AD_FIELD_STRING_LIST,
     .offset = offsetof(calibration_job, langs),
     .help = "target languages (default: de, zh)"},
    {.key = "batch",
     .type = AD_FIELD_INT,
     .offset = offsetof(calibration_job, batch),
     .default_value = "4",
     .min = 1,
     .max = 4096},
    {.key = "max_frames",
     .type = AD_FIELD_INT,
     .offset = offsetof(calibration_job, max_frames),
     .default_value = "3000",
     .min = 3,
     .max = 3000},
    {0},
};

static const ad_field prune_job_fields[] = {
    {.key = "teacher",
     .type = AD_FIELD_STRING,
     .offset = offsetof(prune_job, teacher),
     .required = true,
     .help = "teacher model directory (HF layout)"},
    {.key = "output",
     .type = AD_FIELD_STRING,
     .offset = offsetof(prune_job, output),
     .required = true,
     .help = "student directory to create"},
    {.key = "output_dtype",
     .type = AD_FIELD_ENUM,
     .offset = offsetof(prune_job, output_dtype),
     .default_value = "f32",
     .choices = "f32|bf16",
     .help = "the student's weights on disk: f32 (exact) or bf16 (half the bytes)"},
    {.key = "calibration",
     .type = AD_FIELD_SECTION,
     .offset = offsetof(prune_job, calibration),
     .section = calibration_fields},
    {.key = "prune",
     .type = AD_FIELD_SECTION,
     .offset = offsetof(prune_job, prune),
     .section = ad_prune_recipe_fields},
    {.key = "threads",
     .type = AD_FIELD_INT,
     .offset = offsetof(prune_job, threads),
     .default_value = "0",
     .min = 0,
     .max = 1024},
    {0},
};

static const char *usage = "audistill prune --config JOB.yaml";

static void print_help(void) {
    printf("usage: %s\n\nWrites a pruned student of the job's teacher. Job file keys:\n", usage);
    ad_yaml_describe(prune_job_fields, 2, stdout);
}

static bool needs_scores(const ad_prune_recipe *r) {
    return (r->decoder_layers && !r->drop_decoder_layers.count) ||
           (r->encoder_layers && !r->drop_encoder_layers.count) || r->decoder_heads ||
           r->decoder_ffn || r->hidden || r->encoder_heads || r->encoder_ffn;
}

static int load_langs(const calibration_job *c, const char **langs) {
    if (c->langs.count == 0) {
        langs[0] = "de", langs[1] = "zh";
        return 2;
    }
    for (int i = 0; i < c->langs.count && i < AD_LOADER_MAX_LANGS; i++)
        langs[i] = c->langs.values[i];
    return c->langs.count < AD_LOADER_MAX_LANGS ? c->langs.count : AD_LOADER_MAX_LANGS;
}

/* Every id the targets and prompts of the calibration set use. */
static int used_ids(const prune_job *job, int32_t **ids, int *n) {
    const char *langs[AD_LOADER_MAX_LANGS];
    int n_langs = load_langs(&job->calibration, langs);
    ad_prepared *set;
    AD_TRY(ad_prepared_open(job->calibration.data, &set));
    int cap = 1024, count = 0, rc = AD_ERR;
    int32_t *out = ad_malloc(sizeof(int32_t) * (size_t)cap, "used ids");
    for (int l = 0; out && l < n_langs; l++) {
        int32_t *before, *after, *t;
        int nb, na, nt;
        if (ad_prepared_prompt(set, langs[l], &before, &nb, &after, &na) < 0) goto done;
        for (int s = -1; s < ad_prepared_count(set); s++) {
            if (s >= 0 && ad_prepared_target_ids(set, langs[l], s, &t, &nt) < 0) {
                free(before), free(after);
                goto done;
            }
            const int32_t *src = s < 0 ? before : t;
            int m = s < 0 ? nb : nt;
            for (int pass = 0; pass < (s < 0 ? 2 : 1); pass++) {
                if (pass == 1) src = after, m = na;
                for (int i = 0; i < m; i++) {
                    if (count == cap) {
                        int32_t *g =
                            ad_realloc(out, sizeof(int32_t) * (size_t)(cap *= 2), "used ids");
                        if (!g) goto done;
                        out = g;
                    }
                    out[count++] = src[i];
                }
            }
            if (s >= 0) free(t);
        }
        free(before), free(after);
    }
    rc = out ? AD_OK : AD_ERR;
done:
    ad_prepared_close(set);
    if (rc < 0) free(out), out = NULL;
    *ids = out;
    *n = count;
    return rc;
}

static int score(ad_model *m, const prune_job *job, ad_importance *imp) {
    const calibration_job *c = &job->calibration;
    const char *langs[AD_LOADER_MAX_LANGS];
    int n_langs = load_langs(c, langs);
    ad_loader loader;
    AD_TRY(ad_loader_open(&loader, c->data, n_langs, langs, m->cfg.audio_token_index, 0, false));
    const int window = ad_model_window(&m->cfg, c->max_frames);
    ad_loader_set_window(&loader, window);
    int rc = AD_ERR;
    ad_batch b = {0};
    ad_train_graph g = {0};
    int32_t *ex = ad_malloc(sizeof(int32_t) * (size_t)c->batch, "calibration batch");
    int64_t total =
        c->segments * n_langs < loader.n_examples ? c->segments * n_langs : loader.n_examples;
    if (!ex || ad_importance_init(imp, &m->cfg) < 0) goto done;
    ad_progress progress;
    ad_progress_start(&progress, "calibration", total, "examples");
    for (int64_t done_n = 0; done_n < total;) {
        int want = (int)(total - done_n < c->batch ? total - done_n : c->batch), n;
        if (ad_loader_next(&loader, want, 0, 1, ex, &n) < 0 ||
            ad_loader_fill(&loader, ex, n, &b) < 0)
            goto done;
        if (!g.m) {
            /* Sized for the longest example of the first batch plus headroom; later batches
             * that need more are refused with the limit named. */
            ad_graph_limits lim = {.max_clips = (int)c->batch,
                                   .max_frames = window,
                                   .max_len = 4 * b.max_len + 64,
                                   .max_supervised = (int)c->batch * (4 * b.max_len + 64)};
            ad_trainable keep = {.keep_activations = true};
            if (ad_graph_init(&g, m, &lim, &keep) < 0) goto done;
        }
        if (ad_graph_forward(&g, &b) < 0 || ad_importance_accumulate(imp, &g) < 0) goto done;
        done_n += n;
        ad_progress_update(&progress, done_n, NULL);
    }
    ad_progress_finish(&progress);
    ad_importance_finish(imp);
    rc = AD_OK;
done:
    free(ex);
    ad_batch_free(&b);
    if (g.m) ad_graph_free(&g);
    ad_loader_close(&loader);
    return rc;
}

static void report(const ad_model_config *before, const ad_model_config *after, const char *out) {
    ad_weight_spec *s1, *s2;
    int n1, n2;
    if (ad_weight_specs(before, &s1, &n1) < 0) return;
    if (ad_weight_specs(after, &s2, &n2) < 0) {
        free(s1);
        return;
    }
    ad_param_counts a, b;
    ad_count_params(s1, n1, &a);
    ad_count_params(s2, n2, &b);
    printf("%-16s %14s %14s %7s\n", "component", "teacher", "student", "kept");
    for (int c = 0; c < AD_COMPONENT_COUNT; c++)
        printf("%-16s %14lld %14lld %6.1f%%\n", ad_component_name((ad_component)c),
               (long long)a.params[c], (long long)b.params[c],
               a.params[c] ? 100.0 * (double)b.params[c] / (double)a.params[c] : 0.0);
    printf("%-16s %14lld %14lld %6.1f%%\n", "total", (long long)a.total_params,
           (long long)b.total_params, 100.0 * (double)b.total_params / (double)a.total_params);
    if (after->uniform)
        printf("student: %s (uniform shapes: a plain Hugging Face Qwen2-Audio directory)\n", out);
    else
        printf(
            "student: %s (per-layer shapes differ, recorded in config.json's \"audistill\" object; "
            "transformers cannot load it because its Qwen2AudioConfig has one head count and one "
            "FFN width for all layers)\n",
            out);
    free(s1), free(s2);
}

int cmd_prune(int argc, char **argv) {
    ad_yaml_doc doc;
    prune_job job;
    const int parsed =
        cli_config_job(argc, argv, "prune", usage, print_help, prune_job_fields, &job, &doc);
    if (parsed >= 0) return parsed;
    const char *job_path = doc.file_name;
    int rc = 1;
    ad_backend *be = NULL;
    ad_model teacher = {0};
    ad_importance imp = {0};
    ad_prune_plan plan = {0};
    int32_t *used = NULL, *keep = NULL;
    int n_used = 0, n_keep = 0;
    bool scores = needs_scores(&job.prune), have_imp = false;
    if ((scores || job.prune.vocab) && !job.calibration.data) {
        ad_fail("%s: this recipe needs calibration.data (a prepared set)", job_path);
        goto done;
    }
    if (ad_path_exists(job.output)) {
        ad_fail("%s already exists; remove it or choose another output", job.output);
        goto done;
    }
    if (ad_backend_cpu_create(&be, (int)job.threads) < 0 ||
        ad_model_load(&teacher, be, job.teacher) < 0)
        goto done;
    if (scores) {
        if (score(&teacher, &job, &imp) < 0) goto done;
        have_imp = true;
        printf("decoder block influence:");
        for (int l = 0; l < imp.n_dec; l++)
            printf(" %.4f", imp.dec_influence[l]);
        printf("\n");
    }
    if (job.prune.vocab) {
        if (used_ids(&job, &used, &n_used) < 0 ||
            ad_vocab_keep_set(job.teacher, teacher.cfg.vocab_size, used, n_used, &keep, &n_keep) <
                0)
            goto done;
        ad_info("vocabulary: %d of %d tokens are needed by the data, the prompts, the special "
                "tokens and the single bytes",
                n_keep, teacher.cfg.vocab_size);
    }
    if (ad_prune_plan_make(&teacher.cfg, &job.prune, have_imp ? &imp : NULL, keep, n_keep, &plan) <
            0 ||
        ad_prune_write_student(&teacher, job.teacher, &plan, job.output,
                               !strcmp(job.output_dtype, "bf16")) < 0)
        goto done;
    report(&teacher.cfg, &plan.student, job.output);
    rc = 0;
done:
    if (rc) cli_fail("prune");
    ad_prune_plan_free(&plan);
    if (have_imp) ad_importance_free(&imp);
    free(used), free(keep);
    if (teacher.be) ad_model_free(&teacher);
    if (be) ad_backend_destroy(be);
    ad_yaml_free(&doc);
    return rc;
}
