/* libFuzzer target: YAML parsing and binding against a schema with every field type. */
#include <stddef.h>
#include <stdint.h>

#include "io/yaml.h"

typedef struct {
    int64_t steps;
    double lr;
    bool flag;
    const char *mode;
} inner;

typedef struct {
    const char *name;
    inner train;
    ad_int_list layers;
    ad_string_list langs;
} job;

static const ad_field inner_fields[] = {
    {.key = "steps",
     .type = AD_FIELD_INT,
     .offset = offsetof(inner, steps),
     .default_value = "1",
     .min = 1,
     .max = 1e6},
    {.key = "lr", .type = AD_FIELD_FLOAT, .offset = offsetof(inner, lr), .default_value = "0.1"},
    {.key = "flag", .type = AD_FIELD_BOOL, .offset = offsetof(inner, flag)},
    {.key = "mode",
     .type = AD_FIELD_ENUM,
     .offset = offsetof(inner, mode),
     .default_value = "a",
     .choices = "a|b"},
    {0},
};

static const ad_field job_fields[] = {
    {.key = "name", .type = AD_FIELD_STRING, .offset = offsetof(job, name), .required = true},
    {.key = "train",
     .type = AD_FIELD_SECTION,
     .offset = offsetof(job, train),
     .section = inner_fields},
    {.key = "layers", .type = AD_FIELD_INT_LIST, .offset = offsetof(job, layers)},
    {.key = "langs", .type = AD_FIELD_STRING_LIST, .offset = offsetof(job, langs)},
    {0},
};

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    ad_yaml_doc doc;
    if (ad_yaml_parse((const char *)data, size, "fuzz.yaml", &doc) == 0) {
        static job j;
        ad_yaml_bind(&doc, doc.root, job_fields, &j, "");
    }
    ad_yaml_free(&doc);
    return 0;
}
