/* audistill teacher-cache: the teacher's top-k log-probabilities (and optionally its own
 * translations) over a prepared set, once, for any number of students (train with
 * distill.teacher_cache). */
#include <stdio.h>
#include <string.h>

#include "cli/cli.h"
#include "io/yaml.h"
#include "train/teacher_cache.h"

static const char *usage = "audistill teacher-cache --config JOB.yaml";

static void print_help(void) {
    printf("usage: %s\n\n"
           "Runs the job's teacher once over a prepared set, through the same training graph the\n"
           "trainer runs it in, and writes per supervised position the top_k log-probabilities\n"
           "(temperature 1) and their token ids to an HDF5 cache, with the teacher's identity (a\n"
           "hash of config.json and its weights) and the data identity (a hash of the prepared\n"
           "file). translations: greedy|beam also stores the teacher's own translation of every\n"
           "(segment, language) and its top_k along it, for sequence-level distillation\n"
           "(data.targets: teacher). Train from it with distill.teacher_cache: CACHE.h5; the\n"
           "positions it lacks share one uniform rest bucket (see README). Job file keys:\n",
           usage);
    ad_yaml_describe(ad_teacher_cache_job_fields, 2, stdout);
}

int cmd_teacher_cache(int argc, char **argv) {
    ad_yaml_doc doc;
    ad_teacher_cache_job job;
    int rc = cli_config_job(argc, argv, "teacher-cache", usage, print_help,
                            ad_teacher_cache_job_fields, &job, &doc);
    if (rc >= 0) return rc;
    rc = ad_teacher_cache_run(&doc, &job) < 0;
    if (rc) cli_fail("teacher-cache");
    ad_yaml_free(&doc);
    return rc;
}
