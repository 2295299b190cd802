/* YAML job files: libyaml builds a small tree that remembers line numbers, and a table of
 * typed fields binds it to a C struct. Unknown keys, wrong types, missing required keys and
 * out-of-range values are errors that name the file, line and key, so a typo in a job never
 * silently falls back to a default. Anchors/aliases and multiple documents are refused. */
#ifndef AUDISTILL_IO_YAML_H
#define AUDISTILL_IO_YAML_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { AD_YAML_SCALAR, AD_YAML_SEQUENCE, AD_YAML_MAPPING } ad_yaml_kind;

typedef struct ad_yaml_node {
    ad_yaml_kind kind;
    int line; /* 1-based */
    int column;
    char *value; /* scalar text */
    bool quoted; /* scalar was quoted: never a number/bool/null */
    int count;
    struct ad_yaml_node **children; /* sequence items, or mapping values */
    char **keys;                    /* mapping keys */
    int *key_lines;
} ad_yaml_node;

typedef struct {
    char *file_name;
    ad_yaml_node *root; /* NULL for an empty document */
} ad_yaml_doc;

int ad_yaml_parse(const char *text, size_t len, const char *file_name, ad_yaml_doc *doc);
int ad_yaml_load(const char *path, ad_yaml_doc *doc);
void ad_yaml_free(ad_yaml_doc *doc);
/* Value of `key` in a mapping, or NULL. */
const ad_yaml_node *ad_yaml_get(const ad_yaml_node *map, const char *key);
bool ad_yaml_is_null(const ad_yaml_node *n);

#define AD_YAML_LIST_MAX 256

typedef struct {
    int count;
    int64_t values[AD_YAML_LIST_MAX];
} ad_int_list;

typedef struct {
    int count;
    const char *values[AD_YAML_LIST_MAX]; /* borrowed from the document */
} ad_string_list;

typedef enum {
    AD_FIELD_INT,         /* int64_t */
    AD_FIELD_FLOAT,       /* double */
    AD_FIELD_BOOL,        /* bool */
    AD_FIELD_STRING,      /* const char *, borrowed from the document (or the default) */
    AD_FIELD_ENUM,        /* const char *, one of `choices` ("a|b|c") */
    AD_FIELD_INT_LIST,    /* ad_int_list */
    AD_FIELD_STRING_LIST, /* ad_string_list */
    AD_FIELD_SECTION,     /* nested mapping bound with `section` fields at `offset` */
} ad_field_type;

typedef struct ad_field {
    const char *key;
    ad_field_type type;
    size_t offset;
    const char *default_value; /* text parsed like a YAML scalar; NULL = zero/empty */
    bool required;
    double min, max; /* for INT and FLOAT when min < max */
    const char *choices;
    const struct ad_field *section; /* terminated by a field with key NULL */
    const char *help;
} ad_field;

/* Binds `map` (NULL = empty mapping) into `out` according to `fields` (terminated by key
 * NULL). `context` names the section in messages ("" for the top level). Defaults are applied
 * to every field first. */
int ad_yaml_bind(const ad_yaml_doc *doc, const ad_yaml_node *map, const ad_field *fields, void *out,
                 const char *context);
/* Applies defaults only (for building a job without a file). */
int ad_yaml_defaults(const ad_field *fields, void *out);
/* Prints the schema as documentation (key, type, default, help), indented by section. */
void ad_yaml_describe(const ad_field *fields, int indent, void *stream);

#endif
