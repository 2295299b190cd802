/* audistill train: distillation (or cross-entropy) training from a YAML job file. */
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "io/yaml.h"
#include "train/memory_plan.h"
#include "train/trainer.h"

static const char *usage = "audistill train --config JOB.yaml [--resume auto|CHECKPOINT_DIR] "
                           "[--force] [--stop-after N] [--quiet] [--benchmark N] "
                           "[--plan-memory [--gpu-gib N] [--ranks N]]";

static void print_help(void) {
    printf("usage: %s\n\n"
           "Trains the job's student on a prepared set, from its teacher (KL + cross-entropy) or\n"
           "on the references alone (no teacher). --resume auto continues from the newest\n"
           "complete checkpoint in the output directory (a fresh start when there is none);\n"
           "a job config that differs from the checkpoint's is refused unless --force.\n"
           "--stop-after N checkpoints and exits after N steps of this invocation.\n"
           "--benchmark N times N steps of the job (the device drained after each) and prints\n"
           "the median step time after the first, supervised tokens/s and device memory; it\n"
           "skips dev evaluation and writes no checkpoint or final model.\n"
           "--plan-memory prints the job's memory plan from the models' config.json alone\n"
           "(activations and gradients from the training graph's own arena plan) and exits;\n"
           "--gpu-gib N also says whether the bf16 design fits a GPU of N GiB; --ranks N plans\n"
           "one rank of N data-parallel ones (with train.zero: 1 the sharded state divides).\n"
           "Writes OUTPUT/metrics.jsonl, OUTPUT/tensorboard/, OUTPUT/checkpoints/ and\n"
           "OUTPUT/final/ (a model directory). Job file keys:\n",
           usage);
    ad_yaml_describe(ad_train_job_fields, 2, stdout);
}

int cmd_train(int argc, char **argv) {
    const char *job_path = NULL;
    ad_train_run_options opts = {0};
    bool plan_only = false;
    double gpu_gib = 0;
    int ranks = 1;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            print_help();
            return 0;
        } else if (!strcmp(argv[i], "--config") && i + 1 < argc) {
            job_path = argv[++i];
        } else if (!strcmp(argv[i], "--resume") && i + 1 < argc) {
            opts.resume = argv[++i];
        } else if (!strcmp(argv[i], "--force")) {
            opts.force = true;
        } else if (!strcmp(argv[i], "--stop-after") && i + 1 < argc) {
            opts.stop_after = atoll(argv[++i]);
            if (opts.stop_after < 1)
                return cli_usage_error("train", usage, "--stop-after needs a positive step count");
        } else if (!strcmp(argv[i], "--benchmark") && i + 1 < argc) {
            opts.benchmark = atoll(argv[++i]);
            if (opts.benchmark < 1)
                return cli_usage_error("train", usage, "--benchmark needs a positive step count");
        } else if (!strcmp(argv[i], "--plan-memory")) {
            plan_only = true;
        } else if (!strcmp(argv[i], "--gpu-gib") && i + 1 < argc) {
            gpu_gib = atof(argv[++i]);
        } else if (!strcmp(argv[i], "--ranks") && i + 1 < argc) {
            ranks = atoi(argv[++i]);
            if (ranks < 1) return cli_usage_error("train", usage, "--ranks needs a positive count");
        } else if (!strcmp(argv[i], "--quiet")) {
            opts.quiet = true;
        } else {
            return cli_usage_error("train", usage, "unexpected argument '%s'", argv[i]);
        }
    }
    if (!job_path) return cli_usage_error("train", usage, "--config JOB.yaml is required");
    if (opts.benchmark && (opts.resume || opts.stop_after))
        return cli_usage_error("train", usage,
                               "--benchmark times a fresh run: not with --resume or --stop-after");
    ad_yaml_doc doc;
    ad_train_job job;
    if (ad_yaml_load(job_path, &doc) < 0) return cli_fail("train");
    int rc = ad_yaml_bind(&doc, doc.root, ad_train_job_fields, &job, "") < 0;
    if (!rc && plan_only) {
        ad_memory_plan plan;
        rc = ad_train_memory_plan(&job, ranks, &plan) < 0;
        if (!rc) ad_memory_plan_print(&job, &plan, gpu_gib, stdout);
    } else if (!rc) {
        rc = ad_train_run(&doc, &job, &opts) < 0;
    }
    if (rc) cli_fail("train");
    ad_yaml_free(&doc);
    return rc;
}
