/* YAML job binding: typed fields with defaults, nested sections and lists; every kind of
 * mistake (unknown key, wrong type, missing required key, out-of-range value, bad choice,
 * duplicate key, syntax error) is refused with the file and line in the message. */
#include <stddef.h>

#include "io/yaml.h"
#include "test.h"

typedef struct {
    double lr;
    int64_t steps;
    bool bf16;
    const char *schedule;
} optim_section;

typedef struct {
    const char *name;
    const char *teacher;
    int64_t seed;
    optim_section optim;
    ad_int_list drop_layers;
    ad_string_list langs;
} job;

static const ad_field optim_fields[] = {
    {.key = "lr",
     .type = AD_FIELD_FLOAT,
     .offset = offsetof(optim_section, lr),
     .default_value = "3e-4",
     .min = 0,
     .max = 1},
    {.key = "steps",
     .type = AD_FIELD_INT,
     .offset = offsetof(optim_section, steps),
     .default_value = "100",
     .min = 1,
     .max = 1e9},
    {.key = "bf16",
     .type = AD_FIELD_BOOL,
     .offset = offsetof(optim_section, bf16),
     .default_value = "false"},
    {.key = "schedule",
     .type = AD_FIELD_ENUM,
     .offset = offsetof(optim_section, schedule),
     .default_value = "cosine",
     .choices = "cosine|linear|constant"},
    {0},
};

static const ad_field job_fields[] = {
    {.key = "name", .type = AD_FIELD_STRING, .offset = offsetof(job, name), .required = true},
    {.key = "teacher", .type = AD_FIELD_STRING, .offset = offsetof(job, teacher)},
    {.key = "seed", .type = AD_FIELD_INT, .offset = offsetof(job, seed), .default_value = "1234"},
    {.key = "optim",
     .type = AD_FIELD_SECTION,
     .offset = offsetof(job, optim),
     .section = optim_fields},
    {.key = "drop_layers", .type = AD_FIELD_INT_LIST, .offset = offsetof(job, drop_layers)},
    {.key = "langs", .type = AD_FIELD_STRING_LIST, .offset = offsetof(job, langs)},
    {0},
};

static int bind(const char *text, job *j, ad_yaml_doc *doc) {
    AD_TRY(ad_yaml_parse(text, strlen(text), "job.yaml", doc));
    int rc = ad_yaml_bind(doc, doc->root, job_fields, j, "");
    return rc;
}

static void test_good_job(void) {
    job j;
    ad_yaml_doc doc;
    const char *text = "# a job\n"
                       "name: student-24\n"
                       "optim:\n"
                       "  lr: 1e-3\n"
                       "  schedule: linear\n"
                       "drop_layers: [3, 5, 0x7]\n"
                       "langs:\n"
                       "  - de\n"
                       "  - zh\n";
    CHECK_OK(bind(text, &j, &doc));
    CHECK(strcmp(j.name, "student-24") == 0 && j.teacher == NULL && j.seed == 1234);
    CHECK(j.optim.lr == 1e-3 && j.optim.steps == 100 && !j.optim.bf16);
    CHECK(strcmp(j.optim.schedule, "linear") == 0);
    CHECK(j.drop_layers.count == 3 && j.drop_layers.values[2] == 7);
    CHECK(j.langs.count == 2 && strcmp(j.langs.values[1], "zh") == 0);
    ad_yaml_free(&doc);

    CHECK_OK(bind("name: x\noptim:\n", &j, &doc)); /* empty section = all defaults */
    CHECK(j.optim.steps == 100 && strcmp(j.optim.schedule, "cosine") == 0);
    ad_yaml_free(&doc);
}

static void expect_error(const char *text, const char *needle) {
    job j;
    ad_yaml_doc doc;
    ad_error_clear();
    int rc = bind(text, &j, &doc);
    CHECK_MSG(rc < 0 && strstr(ad_error(), needle), "for %s: got rc %d '%s', expected '%s'", text,
              rc, ad_error(), needle);
    ad_yaml_free(&doc);
}

static void test_errors(void) {
    expect_error("name: a\noptim:\n  lerning_rate: 3\n",
                 "job.yaml:3: unknown key 'lerning_rate' in optim");
    expect_error("name: a\noptim:\n  lerning_rate: 3\n",
                 "expected one of: lr, steps, bf16, schedule");
    expect_error("name: a\nseed: ten\n", "job.yaml:2: seed: expected an integer, got 'ten'");
    expect_error("name: a\nseed: \"12\"\n", "expected an integer");
    expect_error("name: a\noptim:\n  lr: 2.0\n", "between 0 and 1");
    expect_error("name: a\noptim:\n  steps: 0\n", "between 1 and");
    expect_error("name: a\noptim:\n  bf16: maybe\n", "expected true or false");
    expect_error("name: a\noptim:\n  schedule: cosin\n",
                 "'cosin' is not one of cosine|linear|constant");
    expect_error("teacher: t\n", "required key 'name' is missing");
    expect_error("name:\n", "name is required");
    expect_error("name: a\nname: b\n", "key 'name' appears twice");
    expect_error("name: a\noptim: 3\n", "optim: expected a mapping");
    expect_error("name: [a, b]\n", "expected a string, got a list");
    expect_error("name: a\ndrop_layers: [1, x]\n", "drop_layers[1]: expected an integer");
    expect_error("name: a\ndrop_layers: 3\n", "expected a list of integers");
    expect_error("name: a\n  bad: indent\n", "YAML syntax error");
    expect_error("name: &x a\nteacher: *x\n", "aliases");
    expect_error("name: a\n---\nname: b\n", "more than one YAML document");
    expect_error("- a\n- b\n", "expected a mapping of keys");
}

int main(void) {
    RUN(test_good_job);
    RUN(test_errors);
    return test_report();
}
