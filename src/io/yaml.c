#include "io/yaml.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <yaml.h>

#include "core/error.h"
#include "io/file.h"

#define MAX_YAML_BYTES (64u << 20)
#define MAX_YAML_DEPTH 64

static void free_node(ad_yaml_node *n) {
    if (!n) return;
    for (int i = 0; i < n->count; i++) {
        free_node(n->children[i]);
        if (n->keys) free(n->keys[i]);
    }
    free(n->children);
    free(n->keys);
    free(n->key_lines);
    free(n->value);
    free(n);
}

void ad_yaml_free(ad_yaml_doc *doc) {
    free_node(doc->root);
    free(doc->file_name);
    memset(doc, 0, sizeof *doc);
}

typedef struct {
    yaml_parser_t parser;
    const char *file;
} parse_state;

static int next_event(parse_state *s, yaml_event_t *ev) {
    if (!yaml_parser_parse(&s->parser, ev))
        return ad_fail("%s:%zu:%zu: YAML syntax error: %s", s->file,
                       s->parser.problem_mark.line + 1, s->parser.problem_mark.column + 1,
                       s->parser.problem ? s->parser.problem : "unknown problem");
    return AD_OK;
}

static int append_child(ad_yaml_node *n, ad_yaml_node *child, char *key, int key_line) {
    ad_yaml_node **c = ad_realloc(n->children, sizeof *c * (size_t)(n->count + 1), "yaml");
    if (!c) return AD_ERR;
    n->children = c;
    if (n->kind == AD_YAML_MAPPING) {
        char **k = ad_realloc(n->keys, sizeof *k * (size_t)(n->count + 1), "yaml");
        if (!k) return AD_ERR;
        n->keys = k;
        int *kl = ad_realloc(n->key_lines, sizeof *kl * (size_t)(n->count + 1), "yaml");
        if (!kl) return AD_ERR;
        n->key_lines = kl;
        n->keys[n->count] = key;
        n->key_lines[n->count] = key_line;
    }
    n->children[n->count++] = child;
    return AD_OK;
}

/* Builds the node that starts with `ev` (already consumed). */
static int build_node(parse_state *s, yaml_event_t *ev, int depth, ad_yaml_node **out) {
    *out = NULL;
    if (depth > MAX_YAML_DEPTH)
        return ad_fail("%s:%zu: nesting deeper than %d levels", s->file, ev->start_mark.line + 1,
                       MAX_YAML_DEPTH);
    if (ev->type == YAML_ALIAS_EVENT)
        return ad_fail("%s:%zu: YAML aliases (*name) are not supported in job files", s->file,
                       ev->start_mark.line + 1);
    ad_yaml_node *n = ad_calloc(1, sizeof *n, "yaml node");
    if (!n) return AD_ERR;
    n->line = (int)ev->start_mark.line + 1;
    n->column = (int)ev->start_mark.column + 1;
    if (ev->type == YAML_SCALAR_EVENT) {
        n->kind = AD_YAML_SCALAR;
        n->value = ad_strdup((const char *)ev->data.scalar.value, "yaml scalar");
        n->quoted = ev->data.scalar.style == YAML_SINGLE_QUOTED_SCALAR_STYLE ||
                    ev->data.scalar.style == YAML_DOUBLE_QUOTED_SCALAR_STYLE ||
                    ev->data.scalar.style == YAML_LITERAL_SCALAR_STYLE ||
                    ev->data.scalar.style == YAML_FOLDED_SCALAR_STYLE;
        if (!n->value) goto fail;
        *out = n;
        return AD_OK;
    }
    int is_map = ev->type == YAML_MAPPING_START_EVENT;
    if (!is_map && ev->type != YAML_SEQUENCE_START_EVENT) {
        ad_fail("%s:%d: unexpected YAML event", s->file, n->line);
        goto fail;
    }
    n->kind = is_map ? AD_YAML_MAPPING : AD_YAML_SEQUENCE;
    for (;;) {
        yaml_event_t child_ev;
        if (next_event(s, &child_ev) < 0) goto fail;
        if (child_ev.type == YAML_MAPPING_END_EVENT || child_ev.type == YAML_SEQUENCE_END_EVENT) {
            yaml_event_delete(&child_ev);
            break;
        }
        char *key = NULL;
        int key_line = 0;
        if (is_map) {
            if (child_ev.type != YAML_SCALAR_EVENT) {
                ad_fail("%s:%zu: mapping keys must be plain scalars", s->file,
                        child_ev.start_mark.line + 1);
                yaml_event_delete(&child_ev);
                goto fail;
            }
            key = ad_strdup((const char *)child_ev.data.scalar.value, "yaml key");
            key_line = (int)child_ev.start_mark.line + 1;
            yaml_event_delete(&child_ev);
            if (!key) goto fail;
            for (int i = 0; i < n->count; i++) {
                if (strcmp(n->keys[i], key) == 0) {
                    ad_fail("%s:%d: key '%s' appears twice in this mapping (first on line %d)",
                            s->file, key_line, key, n->key_lines[i]);
                    free(key);
                    goto fail;
                }
            }
            if (next_event(s, &child_ev) < 0) {
                free(key);
                goto fail;
            }
        }
        ad_yaml_node *child = NULL;
        int rc = build_node(s, &child_ev, depth + 1, &child);
        yaml_event_delete(&child_ev);
        if (rc < 0 || append_child(n, child, key, key_line) < 0) {
            free_node(child);
            free(key);
            goto fail;
        }
    }
    *out = n;
    return AD_OK;
fail:
    free_node(n);
    return AD_ERR;
}

int ad_yaml_parse(const char *text, size_t len, const char *file_name, ad_yaml_doc *doc) {
    memset(doc, 0, sizeof *doc);
    doc->file_name = ad_strdup(file_name, "file name");
    if (!doc->file_name) return AD_ERR;
    parse_state s = {.file = doc->file_name};
    if (!yaml_parser_initialize(&s.parser)) return ad_fail("cannot initialise the YAML parser");
    yaml_parser_set_input_string(&s.parser, (const unsigned char *)text, len);
    int rc = AD_ERR, documents = 0;
    for (;;) {
        yaml_event_t ev;
        if (next_event(&s, &ev) < 0) break;
        yaml_event_type_t type = ev.type;
        if (type == YAML_STREAM_END_EVENT) {
            yaml_event_delete(&ev);
            rc = AD_OK;
            break;
        }
        if (type == YAML_DOCUMENT_START_EVENT && ++documents > 1) {
            ad_fail("%s:%zu: more than one YAML document in a job file", s.file,
                    ev.start_mark.line + 1);
            yaml_event_delete(&ev);
            break;
        }
        if (type == YAML_SCALAR_EVENT || type == YAML_SEQUENCE_START_EVENT ||
            type == YAML_MAPPING_START_EVENT || type == YAML_ALIAS_EVENT) {
            int r = build_node(&s, &ev, 0, &doc->root);
            yaml_event_delete(&ev);
            if (r < 0) break;
            continue;
        }
        yaml_event_delete(&ev);
    }
    yaml_parser_delete(&s.parser);
    if (rc < 0) ad_yaml_free(doc); /* a failed parse leaves nothing for the caller to free */
    return rc;
}

int ad_yaml_load(const char *path, ad_yaml_doc *doc) {
    char *text;
    size_t len;
    memset(doc, 0, sizeof *doc);
    AD_TRY(ad_read_file(path, MAX_YAML_BYTES, &text, &len));
    int rc = ad_yaml_parse(text, len, path, doc);
    free(text);
    return rc;
}

const ad_yaml_node *ad_yaml_get(const ad_yaml_node *map, const char *key) {
    if (!map || map->kind != AD_YAML_MAPPING) return NULL;
    for (int i = 0; i < map->count; i++)
        if (strcmp(map->keys[i], key) == 0) return map->children[i];
    return NULL;
}

bool ad_yaml_is_null(const ad_yaml_node *n) {
    return !n ||
           (n->kind == AD_YAML_SCALAR && !n->quoted &&
            (n->value[0] == '\0' || strcmp(n->value, "~") == 0 || strcmp(n->value, "null") == 0 ||
             strcmp(n->value, "Null") == 0 || strcmp(n->value, "NULL") == 0));
}

/* ---- binding -------------------------------------------------------------------------- */

static const char *type_name(ad_field_type t) {
    switch (t) {
    case AD_FIELD_INT: return "an integer";
    case AD_FIELD_FLOAT: return "a number";
    case AD_FIELD_BOOL: return "true or false";
    case AD_FIELD_STRING: return "a string";
    case AD_FIELD_ENUM: return "one of the listed choices";
    case AD_FIELD_INT_LIST: return "a list of integers";
    case AD_FIELD_STRING_LIST: return "a list of strings";
    case AD_FIELD_SECTION: return "a mapping";
    }
    return "?";
}

static int parse_int_text(const char *text, int64_t *out) {
    errno = 0;
    char *end;
    long long v = strtoll(text, &end, 0);
    if (errno || end == text || *end != '\0') return AD_ERR;
    *out = v;
    return AD_OK;
}

static int parse_float_text(const char *text, double *out) {
    errno = 0;
    char *end;
    double v = strtod(text, &end);
    if (errno || end == text || *end != '\0' || !isfinite(v)) return AD_ERR;
    *out = v;
    return AD_OK;
}

static int parse_bool_text(const char *text, bool *out) {
    static const char *yes[] = {"true", "True", "TRUE", "yes", "on"};
    static const char *no[] = {"false", "False", "FALSE", "no", "off"};
    for (int i = 0; i < 5; i++) {
        if (strcmp(text, yes[i]) == 0) return *out = true, AD_OK;
        if (strcmp(text, no[i]) == 0) return *out = false, AD_OK;
    }
    return AD_ERR;
}

static int choice_ok(const char *choices, const char *value) {
    size_t n = strlen(value);
    for (const char *p = choices; *p;) {
        const char *bar = strchr(p, '|');
        size_t len = bar ? (size_t)(bar - p) : strlen(p);
        if (len == n && strncmp(p, value, n) == 0) return 1;
        if (!bar) break;
        p = bar + 1;
    }
    return 0;
}

static int range_error(const char *where, const ad_field *f) {
    return ad_fail("%s: %s must be between %g and %g", where, f->key, f->min, f->max);
}

/* Sets one scalar field from text; `where` is "file:line" for messages. */
static int set_scalar(const ad_field *f, const char *text, bool quoted, void *out,
                      const char *where, const char *path) {
    char *slot = (char *)out + f->offset;
    switch (f->type) {
    case AD_FIELD_INT: {
        int64_t v;
        if (quoted || parse_int_text(text, &v) < 0)
            return ad_fail("%s: %s: expected an integer, got '%s'", where, path, text);
        if (f->min < f->max && ((double)v < f->min || (double)v > f->max))
            return range_error(where, f);
        memcpy(slot, &v, sizeof v);
        return AD_OK;
    }
    case AD_FIELD_FLOAT: {
        double v;
        if (quoted || parse_float_text(text, &v) < 0)
            return ad_fail("%s: %s: expected a number, got '%s'", where, path, text);
        if (f->min < f->max && (v < f->min || v > f->max)) return range_error(where, f);
        memcpy(slot, &v, sizeof v);
        return AD_OK;
    }
    case AD_FIELD_BOOL: {
        bool v;
        if (quoted || parse_bool_text(text, &v) < 0)
            return ad_fail("%s: %s: expected true or false, got '%s'", where, path, text);
        memcpy(slot, &v, sizeof v);
        return AD_OK;
    }
    case AD_FIELD_ENUM:
        if (!choice_ok(f->choices, text))
            return ad_fail("%s: %s: '%s' is not one of %s", where, path, text, f->choices);
        /* fall through */
    case AD_FIELD_STRING: memcpy(slot, &text, sizeof text); return AD_OK;
    default: return ad_fail("%s: %s: expected %s", where, path, type_name(f->type));
    }
}

int ad_yaml_defaults(const ad_field *fields, void *out) {
    for (const ad_field *f = fields; f->key; f++) {
        char *slot = (char *)out + f->offset;
        switch (f->type) {
        case AD_FIELD_SECTION: AD_TRY(ad_yaml_defaults(f->section, slot)); break;
        case AD_FIELD_INT_LIST: memset(slot, 0, sizeof(ad_int_list)); break;
        case AD_FIELD_STRING_LIST: memset(slot, 0, sizeof(ad_string_list)); break;
        case AD_FIELD_INT: memset(slot, 0, sizeof(int64_t)); break;
        case AD_FIELD_FLOAT: memset(slot, 0, sizeof(double)); break;
        case AD_FIELD_BOOL: memset(slot, 0, sizeof(bool)); break;
        case AD_FIELD_STRING:
        case AD_FIELD_ENUM: memset(slot, 0, sizeof(const char *)); break;
        }
        if (f->default_value && f->type != AD_FIELD_SECTION && f->type != AD_FIELD_INT_LIST &&
            f->type != AD_FIELD_STRING_LIST) {
            char where[64];
            snprintf(where, sizeof where, "default of '%s'", f->key);
            AD_TRY(set_scalar(f, f->default_value, false, out, where, f->key));
        }
    }
    return AD_OK;
}

static void list_keys(const ad_field *fields, char *buf, size_t size) {
    size_t n = 0;
    buf[0] = '\0';
    for (const ad_field *f = fields; f->key && n < size; f++)
        n += (size_t)snprintf(buf + n, size - n, "%s%s", n ? ", " : "", f->key);
}

static int bind_list(const ad_yaml_doc *doc, const ad_field *f, const ad_yaml_node *v, void *out,
                     const char *path) {
    char *slot = (char *)out + f->offset;
    if (v->kind != AD_YAML_SEQUENCE)
        return ad_fail("%s:%d: %s: expected %s", doc->file_name, v->line, path, type_name(f->type));
    if (v->count > AD_YAML_LIST_MAX)
        return ad_fail("%s:%d: %s: at most %d items", doc->file_name, v->line, path,
                       AD_YAML_LIST_MAX);
    for (int i = 0; i < v->count; i++) {
        const ad_yaml_node *item = v->children[i];
        if (item->kind != AD_YAML_SCALAR)
            return ad_fail("%s:%d: %s[%d]: expected a scalar", doc->file_name, item->line, path, i);
        if (f->type == AD_FIELD_INT_LIST) {
            ad_int_list *l = (ad_int_list *)slot;
            if (item->quoted || parse_int_text(item->value, &l->values[i]) < 0)
                return ad_fail("%s:%d: %s[%d]: expected an integer, got '%s'", doc->file_name,
                               item->line, path, i, item->value);
            l->count = i + 1;
        } else {
            ad_string_list *l = (ad_string_list *)slot;
            l->values[i] = item->value;
            l->count = i + 1;
        }
    }
    return AD_OK;
}

int ad_yaml_bind(const ad_yaml_doc *doc, const ad_yaml_node *map, const ad_field *fields, void *out,
                 const char *context) {
    AD_TRY(ad_yaml_defaults(fields, out));
    const char *file = doc->file_name;
    if (map && ad_yaml_is_null(map)) map = NULL;
    if (map && map->kind != AD_YAML_MAPPING)
        return ad_fail("%s:%d: %s: expected a mapping of keys", file, map->line,
                       *context ? context : "the job file");
    for (int i = 0; map && i < map->count; i++) {
        const char *key = map->keys[i];
        const ad_field *f = fields;
        while (f->key && strcmp(f->key, key) != 0)
            f++;
        char path[256];
        snprintf(path, sizeof path, "%s%s%s", context, *context ? "." : "", key);
        if (!f->key) {
            char known[1024];
            list_keys(fields, known, sizeof known);
            return ad_fail("%s:%d: unknown key '%s'%s%s (expected one of: %s)", file,
                           map->key_lines[i], key, *context ? " in " : "", context, known);
        }
        const ad_yaml_node *v = map->children[i];
        char where[512];
        snprintf(where, sizeof where, "%s:%d", file, v->line);
        if (f->type == AD_FIELD_SECTION) {
            AD_TRY(ad_yaml_bind(doc, v, f->section, (char *)out + f->offset, path));
        } else if (f->type == AD_FIELD_INT_LIST || f->type == AD_FIELD_STRING_LIST) {
            AD_TRY(bind_list(doc, f, v, out, path));
        } else if (v->kind != AD_YAML_SCALAR) {
            return ad_fail("%s: %s: expected %s, got a %s", where, path, type_name(f->type),
                           v->kind == AD_YAML_MAPPING ? "mapping" : "list");
        } else if (ad_yaml_is_null(v)) {
            if (f->required) return ad_fail("%s: %s is required and cannot be empty", where, path);
        } else {
            AD_TRY(set_scalar(f, v->value, v->quoted, out, where, path));
        }
    }
    for (const ad_field *f = fields; f->key; f++) {
        if (!f->required) continue;
        const ad_yaml_node *v = ad_yaml_get(map, f->key);
        if (!v || ad_yaml_is_null(v))
            return ad_fail("%s:%d: required key '%s' is missing%s%s", file, map ? map->line : 1,
                           f->key, *context ? " in " : "", context);
    }
    return AD_OK;
}

void ad_yaml_describe(const ad_field *fields, int indent, void *stream) {
    FILE *out = stream;
    for (const ad_field *f = fields; f->key; f++) {
        if (f->type == AD_FIELD_SECTION) {
            fprintf(out, "%*s%s:%s%s\n", indent, "", f->key, f->help ? "  # " : "",
                    f->help ? f->help : "");
            ad_yaml_describe(f->section, indent + 2, stream);
            continue;
        }
        fprintf(out, "%*s%s: %s", indent, "", f->key,
                f->default_value ? f->default_value : (f->required ? "<required>" : "~"));
        if (f->help || f->choices)
            fprintf(out, "  # %s%s%s%s", f->help ? f->help : "", f->choices ? " (" : "",
                    f->choices ? f->choices : "", f->choices ? ")" : "");
        fputc('\n', out);
    }
}
