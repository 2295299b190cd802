/* Job files of `audistill run`: parsing and checking, placeholders, inline stage configs,
 * stage dependencies, stamps, and child processes of this binary (see pipeline.h). */
#include "eval/pipeline.h"

#include <ctype.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "core/error.h"
#include "io/file.h"

const char *const ad_pipeline_lang_names[AD_PIPELINE_LANGS] = {"de", "zh"};

#define STAMP_MAX_BYTES (1 << 20)

/* ---- strings owned by the job ------------------------------------------------------------ */

static char *pool_keep(ad_pipeline *p, char *s) {
    if (!s) return NULL;
    if (p->n_pool == p->cap_pool) {
        int cap = p->cap_pool ? 2 * p->cap_pool : 64;
        char **grown = ad_realloc(p->pool, (size_t)cap * sizeof *grown, "job strings");
        if (!grown) {
            free(s);
            return NULL;
        }
        p->pool = grown, p->cap_pool = cap;
    }
    return p->pool[p->n_pool++] = s;
}

static char *pool_printf(ad_pipeline *p, const char *fmt, ...) AD_PRINTF(2, 3);
static char *pool_printf(ad_pipeline *p, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    char *s = n < 0 ? NULL : ad_malloc((size_t)n + 1, "job string");
    if (!s) return NULL;
    va_start(ap, fmt);
    vsnprintf(s, (size_t)n + 1, fmt, ap);
    va_end(ap);
    return pool_keep(p, s);
}

/* A growable text buffer. */
typedef struct {
    char *data;
    size_t len, cap;
    bool failed;
} text_buf;

static void tb_add(text_buf *b, const char *s, size_t n) {
    if (b->failed) return;
    if (b->len + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n + 1)
            cap *= 2;
        char *grown = ad_realloc(b->data, cap, "text buffer");
        if (!grown) {
            b->failed = true;
            return;
        }
        b->data = grown, b->cap = cap;
    }
    memcpy(b->data + b->len, s, n);
    b->len += n;
    b->data[b->len] = '\0';
}

static void tb_str(text_buf *b, const char *s) {
    tb_add(b, s, strlen(s));
}

/* ---- placeholders ------------------------------------------------------------------------ */

/* {work} is the work directory; {config} (stage commands only) the stage's rendered inline
 * config. Any other {identifier} is an error, so a typo never reaches a command. */
static int expand(ad_pipeline *p, const char *text, int line, const char *config_path, char **out) {
    text_buf b = {0};
    tb_add(&b, "", 0);
    for (const char *s = text; *s;) {
        const char *open = strchr(s, '{');
        if (!open) {
            tb_str(&b, s);
            break;
        }
        tb_add(&b, s, (size_t)(open - s));
        const char *q = open + 1;
        while (isalnum((unsigned char)*q) || *q == '_')
            q++;
        if (*q != '}' || q == open + 1) {
            tb_add(&b, "{", 1);
            s = open + 1;
            continue;
        }
        size_t n = (size_t)(q - open - 1);
        if (n == 4 && !strncmp(open + 1, "work", 4)) {
            tb_str(&b, p->work_dir);
        } else if (n == 6 && !strncmp(open + 1, "config", 6) && config_path) {
            tb_str(&b, config_path);
        } else {
            free(b.data);
            return ad_fail("%s:%d: unknown placeholder '%.*s' in '%s' (known: {work}%s)", p->path,
                           line, (int)(n + 2), open, text,
                           config_path ? ", {config}" : "; {config} needs the stage's config:");
        }
        s = q + 1;
    }
    if (b.failed) return AD_ERR;
    *out = pool_keep(p, b.data);
    return *out ? AD_OK : AD_ERR;
}

static int expand_opt(ad_pipeline *p, const char *text, int line, char **out) {
    *out = NULL;
    return text ? expand(p, text, line, NULL, out) : AD_OK;
}

/* ---- inline configs rendered as YAML ----------------------------------------------------- */

static bool plain_safe(const char *s) {
    if (!*s) return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("_.+/~-", *s)) return false;
    return true;
}

static void emit_quoted(text_buf *b, const char *s) {
    tb_add(b, "\"", 1);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        char esc[8];
        if (c == '"' || c == '\\')
            snprintf(esc, sizeof esc, "\\%c", c);
        else if (c == '\n')
            snprintf(esc, sizeof esc, "\\n");
        else if (c == '\t')
            snprintf(esc, sizeof esc, "\\t");
        else if (c < 0x20)
            snprintf(esc, sizeof esc, "\\x%02x", c);
        else
            esc[0] = (char)c, esc[1] = '\0';
        tb_str(b, esc);
    }
    tb_add(b, "\"", 1);
}

static void emit_key(text_buf *b, const char *k) {
    if (plain_safe(k))
        tb_str(b, k);
    else
        emit_quoted(b, k);
}

/* A plain scalar keeps its YAML meaning (number, boolean, null) when written back as it was;
 * anything else, and every value a placeholder changed, is written double-quoted. */
static int emit_flow(ad_pipeline *p, text_buf *b, const ad_yaml_node *n) {
    if (n->kind == AD_YAML_SCALAR) {
        char *v;
        AD_TRY(expand(p, n->value, n->line, NULL, &v));
        if (!n->quoted && !strcmp(v, n->value) && (plain_safe(v) || ad_yaml_is_null(n)))
            tb_str(b, ad_yaml_is_null(n) ? "~" : v);
        else
            emit_quoted(b, v);
        return AD_OK;
    }
    bool map = n->kind == AD_YAML_MAPPING;
    tb_str(b, map ? "{" : "[");
    for (int i = 0; i < n->count; i++) {
        if (i) tb_str(b, ", ");
        if (map) emit_key(b, n->keys[i]), tb_str(b, ": ");
        AD_TRY(emit_flow(p, b, n->children[i]));
    }
    tb_str(b, map ? "}" : "]");
    return AD_OK;
}

static int emit_block(ad_pipeline *p, text_buf *b, const ad_yaml_node *map, int indent) {
    for (int i = 0; i < map->count; i++) {
        const ad_yaml_node *v = map->children[i];
        tb_add(b, "                                ", (size_t)(indent < 32 ? indent : 32));
        emit_key(b, map->keys[i]);
        tb_str(b, ":");
        if (v->kind == AD_YAML_MAPPING && v->count > 0) {
            tb_str(b, "\n");
            AD_TRY(emit_block(p, b, v, indent + 2));
        } else {
            tb_str(b, " ");
            AD_TRY(emit_flow(p, b, v));
            tb_str(b, "\n");
        }
    }
    return AD_OK;
}

/* ---- binding with keys handled by hand --------------------------------------------------- */

/* ad_yaml_bind on `map` without the keys in `skip` (whose values are returned in `got`), so a
 * section can mix table-bound fields with structures the field table cannot express. */
static int bind_except(const ad_yaml_doc *doc, const ad_yaml_node *map, const ad_field *fields,
                       void *out, const char *context, const char *const *skip, int n_skip,
                       const ad_yaml_node **got) {
    for (int k = 0; k < n_skip; k++)
        got[k] = NULL;
    if (!map || map->kind != AD_YAML_MAPPING) return ad_yaml_bind(doc, map, fields, out, context);
    ad_yaml_node copy = *map;
    copy.count = 0;
    copy.keys = ad_calloc((size_t)map->count + 1, sizeof *copy.keys, "YAML keys");
    copy.children = ad_calloc((size_t)map->count + 1, sizeof *copy.children, "YAML values");
    copy.key_lines = ad_calloc((size_t)map->count + 1, sizeof *copy.key_lines, "YAML lines");
    int rc = AD_ERR;
    if (copy.keys && copy.children && copy.key_lines) {
        for (int i = 0; i < map->count; i++) {
            int k = 0;
            while (k < n_skip && strcmp(map->keys[i], skip[k]) != 0)
                k++;
            if (k < n_skip) {
                got[k] = map->children[i];
                continue;
            }
            copy.keys[copy.count] = map->keys[i];
            copy.children[copy.count] = map->children[i];
            copy.key_lines[copy.count++] = map->key_lines[i];
        }
        rc = ad_yaml_bind(doc, &copy, fields, out, context);
    }
    free(copy.keys), free(copy.children), free(copy.key_lines);
    return rc;
}

/* ---- the job file ------------------------------------------------------------------------ */

typedef struct {
    const char *name;
    ad_string_list command, outputs;
    const char *resume;
} stage_fields;

static const ad_field stage_field_table[] = {
    {"name", AD_FIELD_STRING, offsetof(stage_fields, name), NULL, true, 0, 0, NULL, NULL,
     "unique; names the stamp {work}/.stages/<name>.done"},
    {"command", AD_FIELD_STRING_LIST, offsetof(stage_fields, command), NULL, true, 0, 0, NULL, NULL,
     "an audistill command and its arguments"},
    {"outputs", AD_FIELD_STRING_LIST, offsetof(stage_fields, outputs), NULL, false, 0, 0, NULL,
     NULL, "paths the stage writes"},
    {"resume", AD_FIELD_STRING, offsetof(stage_fields, resume), NULL, false, 0, 0, NULL, NULL,
     "directory kept after an interruption (a training run's output)"},
    {NULL, 0, 0, NULL, false, 0, 0, NULL, NULL, NULL},
};

typedef struct {
    const char *de, *zh;
} refs_fields;

static const ad_field refs_field_table[] = {
    {"de", AD_FIELD_STRING, offsetof(refs_fields, de), NULL, false, 0, 0, NULL, NULL, NULL},
    {"zh", AD_FIELD_STRING, offsetof(refs_fields, zh), NULL, false, 0, 0, NULL, NULL, NULL},
    {NULL, 0, 0, NULL, false, 0, 0, NULL, NULL, NULL},
};

typedef struct {
    const char *synth_split, *list, *report, *baseline, *device;
    refs_fields references;
    ad_string_list langs;
    int64_t limit, beam, max_new_tokens;
} eval_fields;

static const ad_field eval_field_table[] = {
    {"synth_split", AD_FIELD_STRING, offsetof(eval_fields, synth_split), NULL, false, 0, 0, NULL,
     NULL, NULL},
    {"list", AD_FIELD_STRING, offsetof(eval_fields, list), NULL, false, 0, 0, NULL, NULL, NULL},
    {"references", AD_FIELD_SECTION, offsetof(eval_fields, references), NULL, false, 0, 0, NULL,
     refs_field_table, NULL},
    {"langs", AD_FIELD_STRING_LIST, offsetof(eval_fields, langs), NULL, false, 0, 0, NULL, NULL,
     NULL},
    {"limit", AD_FIELD_INT, offsetof(eval_fields, limit), "0", false, 0, 1e9, NULL, NULL, NULL},
    {"beam", AD_FIELD_INT, offsetof(eval_fields, beam), "1", false, 1, 64, NULL, NULL, NULL},
    {"max_new_tokens", AD_FIELD_INT, offsetof(eval_fields, max_new_tokens), "128", false, 1, 4096,
     NULL, NULL, NULL},
    {"report", AD_FIELD_STRING, offsetof(eval_fields, report), "{work}/report", false, 0, 0, NULL,
     NULL, NULL},
    {"device", AD_FIELD_ENUM, offsetof(eval_fields, device), "cpu", false, 0, 0, "cpu|cuda", NULL,
     "where the models translate (audistill translate --device)"},
    {"baseline", AD_FIELD_STRING, offsetof(eval_fields, baseline), NULL, false, 0, 0, NULL, NULL,
     NULL},
    {NULL, 0, 0, NULL, false, 0, 0, NULL, NULL, NULL},
};

typedef struct {
    const char *name, *path;
} model_fields;

static const ad_field model_field_table[] = {
    {"name", AD_FIELD_STRING, offsetof(model_fields, name), NULL, true, 0, 0, NULL, NULL, NULL},
    {"path", AD_FIELD_STRING, offsetof(model_fields, path), NULL, true, 0, 0, NULL, NULL, NULL},
    {NULL, 0, 0, NULL, false, 0, 0, NULL, NULL, NULL},
};

typedef struct {
    const char *system, *baseline;
} compare_fields;

static const ad_field compare_field_table[] = {
    {"system", AD_FIELD_STRING, offsetof(compare_fields, system), NULL, true, 0, 0, NULL, NULL,
     NULL},
    {"baseline", AD_FIELD_STRING, offsetof(compare_fields, baseline), NULL, true, 0, 0, NULL, NULL,
     NULL},
    {NULL, 0, 0, NULL, false, 0, 0, NULL, NULL, NULL},
};

typedef struct {
    const char *work_dir;
} root_fields;

static const ad_field root_field_table[] = {
    {"work_dir", AD_FIELD_STRING, offsetof(root_fields, work_dir), NULL, true, 0, 0, NULL, NULL,
     NULL},
    {NULL, 0, 0, NULL, false, 0, 0, NULL, NULL, NULL},
};

/* Names become file names (stamps, eval directories). */
static bool safe_name(const char *s) {
    if (!*s || strlen(s) > 100 || s[0] == '.') return false;
    for (; *s; s++)
        if (!isalnum((unsigned char)*s) && !strchr("._+-", *s)) return false;
    return true;
}

static int load_stage(ad_pipeline *p, const ad_yaml_node *node, ad_stage *s) {
    const char *path = p->path;
    stage_fields f;
    const char *skip[] = {"config"};
    const ad_yaml_node *config;
    if (node->kind != AD_YAML_MAPPING)
        return ad_fail("%s:%d: a stage is a mapping with name, command and outputs", path,
                       node->line);
    AD_TRY(bind_except(&p->doc, node, stage_field_table, &f, "stage", skip, 1, &config));
    s->line = node->line;
    s->eval_model = s->eval_lang = -1;
    if (!safe_name(f.name) || !strcmp(f.name, "evaluate"))
        return ad_fail("%s:%d: stage name '%s' must be letters, digits, '.', '_', '+', '-' (not "
                       "'evaluate')",
                       path, s->line, f.name);
    AD_TRY(!(s->name = pool_printf(p, "%s", f.name)) ? AD_ERR : AD_OK);
    if (f.command.count == 0)
        return ad_fail("%s:%d: stage '%s' has no command", path, s->line, s->name);
    if (config) {
        if (config->kind != AD_YAML_MAPPING || config->count == 0)
            return ad_fail("%s:%d: stage '%s': config must be a mapping (the command's job file)",
                           path, config->line, s->name);
        text_buf b = {0};
        char head[512];
        snprintf(head, sizeof head, "# written by audistill run from %s:%d (stage %s)\n", path,
                 config->line, s->name);
        tb_str(&b, head);
        s->config_body = b.len; /* the hash leaves out the job's name and line */
        if (emit_block(p, &b, config, 0) < 0 || b.failed) {
            free(b.data);
            return AD_ERR;
        }
        AD_TRY(!(s->config_text = pool_keep(p, b.data)) ? AD_ERR : AD_OK);
        AD_TRY(!(s->config_path = pool_printf(p, "%s/%s.yaml", p->stamp_dir, s->name)) ? AD_ERR
                                                                                       : AD_OK);
    }
    s->argc = f.command.count;
    s->argv = ad_calloc((size_t)s->argc + 1, sizeof *s->argv, "stage arguments");
    if (!s->argv) return AD_ERR;
    bool uses_config = false;
    for (int i = 0; i < s->argc; i++) {
        AD_TRY(expand(p, f.command.values[i], node->line, s->config_path, &s->argv[i]));
        if (s->config_path && strstr(f.command.values[i], "{config}")) uses_config = true;
    }
    if (s->config_path && !uses_config)
        return ad_fail("%s:%d: stage '%s' has a config: but its command does not name {config}",
                       path, s->line, s->name);
    const char *cmd = s->argv[0];
    if (!cmd[0] || cmd[0] == '-' || !strcmp(cmd, "run"))
        return ad_fail("%s:%d: stage '%s': '%s' is not a command a stage can run (the first item "
                       "of command names an audistill command, not `run`)",
                       path, s->line, s->name, cmd);
    s->n_outputs = f.outputs.count;
    s->outputs = ad_calloc((size_t)s->n_outputs + 1, sizeof *s->outputs, "stage outputs");
    if (!s->outputs) return AD_ERR;
    for (int i = 0; i < s->n_outputs; i++) {
        AD_TRY(expand(p, f.outputs.values[i], node->line, NULL, &s->outputs[i]));
        if (!s->outputs[i][0])
            return ad_fail("%s:%d: stage '%s': empty output path", path, s->line, s->name);
    }
    AD_TRY(expand_opt(p, f.resume, node->line, &s->resume_dir));
    AD_TRY(!(s->stamp_path = pool_printf(p, "%s/%s.done", p->stamp_dir, s->name)) ? AD_ERR : AD_OK);
    if (s->resume_dir)
        AD_TRY(!(s->started_path = pool_printf(p, "%s/%s.started", p->stamp_dir, s->name)) ? AD_ERR
                                                                                           : AD_OK);
    return AD_OK;
}

static int model_index(const ad_eval_spec *e, const char *name) {
    for (int m = 0; m < e->n_models; m++)
        if (!strcmp(e->models[m].name, name)) return m;
    return -1;
}

/* evaluate.compare: [{system: A, baseline: B}, ...], both among evaluate.models. */
static int load_compare(ad_pipeline *p, const ad_yaml_node *list) {
    ad_eval_spec *e = &p->eval;
    if (!list || ad_yaml_is_null(list)) return AD_OK;
    if (list->kind != AD_YAML_SEQUENCE)
        return ad_fail("%s:%d: evaluate.compare: a list of {system, baseline} is required", p->path,
                       list->line);
    e->compare = ad_calloc((size_t)list->count + 1, sizeof *e->compare, "comparisons");
    if (!e->compare) return AD_ERR;
    for (int i = 0; i < list->count; i++) {
        const ad_yaml_node *c = list->children[i];
        compare_fields cf;
        AD_TRY(ad_yaml_bind(&p->doc, c, compare_field_table, &cf, "evaluate.compare"));
        const int sys = model_index(e, cf.system), base = model_index(e, cf.baseline);
        if (sys < 0 || base < 0)
            return ad_fail("%s:%d: evaluate.compare: '%s' is not one of evaluate.models' names",
                           p->path, c->line, sys < 0 ? cf.system : cf.baseline);
        if (sys == base)
            return ad_fail("%s:%d: evaluate.compare: '%s' against itself", p->path, c->line,
                           cf.system);
        e->compare[e->n_compare++] = (ad_eval_compare){sys, base};
    }
    return AD_OK;
}

static int load_eval(ad_pipeline *p, const ad_yaml_node *node) {
    ad_eval_spec *e = &p->eval;
    const char *path = p->path;
    eval_fields f;
    const char *skip[] = {"models", "compare"};
    const ad_yaml_node *got[2];
    AD_TRY(bind_except(&p->doc, node, eval_field_table, &f, "evaluate", skip, 2, got));
    const ad_yaml_node *models = got[0];
    e->present = true;
    e->line = node->line;
    AD_TRY(expand_opt(p, f.synth_split, node->line, &e->synth_split));
    AD_TRY(expand_opt(p, f.list, node->line, &e->list));
    AD_TRY(expand_opt(p, f.references.de, node->line, &e->references[0]));
    AD_TRY(expand_opt(p, f.references.zh, node->line, &e->references[1]));
    AD_TRY(expand(p, f.report, node->line, NULL, &e->report));
    if (!e->synth_split == !e->list)
        return ad_fail("%s:%d: evaluate needs either synth_split (a synth split directory) or "
                       "list (one audio path per line) with references",
                       path, e->line);
    e->limit = f.limit, e->beam = f.beam, e->max_new_tokens = f.max_new_tokens;
    AD_TRY(!(e->device = pool_printf(p, "%s", f.device)) ? AD_ERR : AD_OK);
    if (f.langs.count == 0) {
        e->n_langs = AD_PIPELINE_LANGS;
        for (int l = 0; l < AD_PIPELINE_LANGS; l++)
            e->langs[l] = l;
    }
    for (int i = 0; i < f.langs.count; i++) {
        int l = 0;
        while (l < AD_PIPELINE_LANGS && strcmp(f.langs.values[i], ad_pipeline_lang_names[l]))
            l++;
        if (l == AD_PIPELINE_LANGS)
            return ad_fail("%s:%d: evaluate.langs: unknown language '%s' (de, zh)", path, e->line,
                           f.langs.values[i]);
        for (int j = 0; j < e->n_langs; j++)
            if (e->langs[j] == l)
                return ad_fail("%s:%d: evaluate.langs: '%s' is listed twice", path, e->line,
                               f.langs.values[i]);
        if (e->list && !e->references[l])
            return ad_fail("%s:%d: evaluate.references.%s is required with list:", path, e->line,
                           f.langs.values[i]);
        e->langs[e->n_langs++] = l;
    }
    if (e->list)
        for (int j = 0; j < e->n_langs; j++)
            if (!e->references[e->langs[j]])
                return ad_fail("%s:%d: evaluate.references.%s is required with list:", path,
                               e->line, ad_pipeline_lang_names[e->langs[j]]);
    if (!models || models->kind != AD_YAML_SEQUENCE || models->count == 0)
        return ad_fail("%s:%d: evaluate.models: a list of {name, path} is required", path,
                       models ? models->line : e->line);
    e->n_models = models->count;
    e->models = ad_calloc((size_t)e->n_models, sizeof *e->models, "evaluated models");
    if (!e->models) return AD_ERR;
    for (int m = 0; m < e->n_models; m++) {
        const ad_yaml_node *mn = models->children[m];
        model_fields mf;
        const char *mskip[] = {"parameters"};
        const ad_yaml_node *params;
        AD_TRY(
            bind_except(&p->doc, mn, model_field_table, &mf, "evaluate.models", mskip, 1, &params));
        if (!safe_name(mf.name))
            return ad_fail("%s:%d: model name '%s' must be letters, digits, '.', '_', '+', '-'",
                           path, mn->line, mf.name);
        for (int k = 0; k < m; k++)
            if (!strcmp(e->models[k].name, mf.name))
                return ad_fail("%s:%d: model name '%s' is used twice", path, mn->line, mf.name);
        if (params && !ad_yaml_is_null(params)) {
            bool ok = params->kind == AD_YAML_MAPPING;
            for (int i = 0; ok && i < params->count; i++)
                ok = params->children[i]->kind == AD_YAML_SCALAR;
            if (!ok)
                return ad_fail("%s:%d: model '%s': parameters must map names to single values",
                               path, params->line, mf.name);
            e->models[m].parameters = params;
        }
        AD_TRY(!(e->models[m].name = pool_printf(p, "%s", mf.name)) ? AD_ERR : AD_OK);
        AD_TRY(expand(p, mf.path, mn->line, NULL, &e->models[m].path));
    }
    if (f.baseline) {
        const int m = model_index(e, f.baseline);
        if (m >= 0) e->baseline = e->models[m].name;
        if (!e->baseline)
            return ad_fail("%s:%d: evaluate.baseline '%s' is not one of evaluate.models' names",
                           path, e->line, f.baseline);
    }
    AD_TRY(load_compare(p, got[1]));
    AD_TRY(!(e->dir = pool_printf(p, "%s/eval", p->work_dir)) ? AD_ERR : AD_OK);
    AD_TRY(!(e->list_path = pool_printf(p, "%s/list.txt", e->dir)) ? AD_ERR : AD_OK);
    for (int l = 0; l < AD_PIPELINE_LANGS; l++)
        AD_TRY(!(e->ref_path[l] = pool_printf(p, "%s/ref.%s", e->dir, ad_pipeline_lang_names[l]))
                   ? AD_ERR
                   : AD_OK);
    return AD_OK;
}

/* One translation stage per model and language: `translate --list` into hyp.<lang>. */
static int add_eval_stages(ad_pipeline *p) {
    ad_eval_spec *e = &p->eval;
    for (int m = 0; m < e->n_models; m++)
        for (int j = 0; j < e->n_langs; j++) {
            ad_stage *s = &p->stages[p->n_stages++];
            const char *model = e->models[m].name, *lang = ad_pipeline_lang_names[e->langs[j]];
            s->line = e->line;
            s->eval_model = m, s->eval_lang = e->langs[j];
            s->name = pool_printf(p, "eval:%s:%s", model, lang);
            s->stamp_path = pool_printf(p, "%s/eval.%s.%s.done", p->stamp_dir, model, lang);
            s->stdout_path = pool_printf(p, "%s/%s/hyp.%s", e->dir, model, lang);
            s->hash_extra =
                pool_printf(p, "limit=%lld\nsynth_split=%s\nlist=%s\n", (long long)e->limit,
                            e->synth_split ? e->synth_split : "", e->list ? e->list : "");
            char *argv[] = {"translate",
                            "--model",
                            e->models[m].path,
                            "--lang",
                            (char *)lang,
                            "--list",
                            e->list_path,
                            "--beam",
                            pool_printf(p, "%lld", (long long)e->beam),
                            "--max-new-tokens",
                            pool_printf(p, "%lld", (long long)e->max_new_tokens),
                            "--device",
                            e->device,
                            NULL};
            s->argc = (int)(sizeof argv / sizeof argv[0]) - 1;
            s->argv = ad_calloc((size_t)s->argc + 1, sizeof *s->argv, "stage arguments");
            s->outputs = ad_calloc(1, sizeof *s->outputs, "stage outputs");
            if (!s->name || !s->stamp_path || !s->stdout_path || !s->hash_extra || !s->argv ||
                !s->outputs || !argv[8] || !argv[10])
                return AD_ERR;
            for (int i = 0; i < s->argc; i++)
                AD_TRY(!(s->argv[i] = pool_printf(p, "%s", argv[i])) ? AD_ERR : AD_OK);
            s->outputs[0] = s->stdout_path, s->n_outputs = 1;
        }
    return AD_OK;
}

/* `path` occurs in `text` as a whole path or a prefix of one ("w/train.h5" in "w/train.h5",
 * "w/run" in "w/run/final", not "w/run" in "w/run2"). */
static bool mentions(const char *text, const char *path) {
    size_t n = strlen(path);
    while (n > 1 && path[n - 1] == '/')
        n--;
    for (const char *s = text; n && (s = strstr(s, path)); s++) {
        char next = s[n];
        if (!next || next == '/' || next == '"' || next == '\'' || next == '\n' || next == ' ' ||
            next == ',' || next == ']' || next == '}')
            return true;
    }
    return false;
}

static bool is_yaml_path(const char *a) {
    size_t n = strlen(a);
    return (n > 5 && !strcmp(a + n - 5, ".yaml")) || (n > 4 && !strcmp(a + n - 4, ".yml"));
}

/* Everything a stage reads, as text: arguments, inline config, YAML files it names. */
static char *stage_reads(const ad_pipeline *p, const ad_stage *s) {
    text_buf b = {0};
    tb_add(&b, "", 0);
    for (int i = 0; i < s->argc; i++) {
        tb_str(&b, s->argv[i]), tb_str(&b, "\n");
        char *data = NULL;
        size_t size;
        if (is_yaml_path(s->argv[i]) &&
            ad_read_file(s->argv[i], STAMP_MAX_BYTES, &data, &size) == 0)
            tb_str(&b, data), tb_str(&b, "\n");
        free(data);
    }
    if (s->config_text) tb_str(&b, s->config_text);
    if (s->eval_model >= 0) {
        const ad_eval_spec *e = &p->eval;
        tb_str(&b, e->synth_split ? e->synth_split : e->list), tb_str(&b, "\n");
    }
    ad_error_clear();
    if (b.failed) {
        free(b.data);
        return NULL;
    }
    return b.data;
}

static int find_deps(ad_pipeline *p, int i) {
    ad_stage *s = &p->stages[i];
    char *reads = stage_reads(p, s);
    if (!reads) return AD_ERR;
    s->deps = ad_calloc((size_t)p->n_job_stages + 1, sizeof *s->deps, "stage inputs");
    if (!s->deps) {
        free(reads);
        return AD_ERR;
    }
    for (int j = 0; j < p->n_job_stages && j < i; j++) {
        const ad_stage *d = &p->stages[j];
        bool uses = d->resume_dir && mentions(reads, d->resume_dir);
        for (int o = 0; o < d->n_outputs && !uses; o++)
            uses = mentions(reads, d->outputs[o]);
        if (uses) s->deps[s->n_deps++] = j;
    }
    free(reads);
    return AD_OK;
}

/* Unknown command names are found before anything runs: the binary is asked for the command's
 * --help, which every command answers with status 0 and an unknown one with status 2. */
static int check_command(const ad_pipeline *p, const ad_stage *s) {
    for (int j = 0; j < p->n_job_stages && &p->stages[j] != s; j++)
        if (!strcmp(p->stages[j].argv[0], s->argv[0])) return AD_OK;
    int devnull = open("/dev/null", O_WRONLY);
    if (devnull < 0) return ad_fail("cannot open /dev/null: %s", strerror(errno));
    char *argv[] = {s->argv[0], "--help", NULL};
    int status = 0, sig = 0;
    int saved = dup(STDERR_FILENO);
    dup2(devnull, STDERR_FILENO);
    int rc = ad_run_self(argv, devnull, &status, &sig);
    if (saved >= 0) dup2(saved, STDERR_FILENO), close(saved);
    close(devnull);
    AD_TRY(rc);
    if (status != 0)
        return ad_fail("%s:%d: stage '%s': unknown command '%s' (see `audistill --help`)", p->path,
                       s->line, s->name, s->argv[0]);
    return AD_OK;
}

int ad_pipeline_load(const char *path, const char *work_override, ad_pipeline *p) {
    memset(p, 0, sizeof *p);
    AD_TRY(!(p->path = pool_printf(p, "%s", path)) ? AD_ERR : AD_OK);
    AD_TRY(ad_yaml_load(path, &p->doc));
    const ad_yaml_node *root = p->doc.root;
    if (!root || root->kind != AD_YAML_MAPPING)
        return ad_fail("%s: a job file is a mapping with work_dir, stages and evaluate", path);
    root_fields rf;
    const char *skip[] = {"stages", "evaluate"};
    const ad_yaml_node *got[2];
    AD_TRY(bind_except(&p->doc, root, root_field_table, &rf, "", skip, 2, got));
    const char *work = work_override ? work_override : rf.work_dir;
    if (strchr(work, '{')) return ad_fail("%s: work_dir '%s' cannot hold placeholders", path, work);
    AD_TRY(!(p->work_dir = pool_printf(p, "%s", work)) ? AD_ERR : AD_OK);
    AD_TRY(!(p->stamp_dir = pool_printf(p, "%s/.stages", work)) ? AD_ERR : AD_OK);
    const ad_yaml_node *stages = got[0], *eval = got[1];
    if (stages && !ad_yaml_is_null(stages) && stages->kind != AD_YAML_SEQUENCE)
        return ad_fail("%s:%d: stages: expected a list of stages", path, stages->line);
    int n_job = stages && stages->kind == AD_YAML_SEQUENCE ? stages->count : 0;
    if (eval && !ad_yaml_is_null(eval)) AD_TRY(load_eval(p, eval));
    if (n_job == 0 && !p->eval.present)
        return ad_fail("%s: the job has no stages and no evaluate section", path);
    int total = n_job + p->eval.n_models * p->eval.n_langs;
    p->stages = ad_calloc((size_t)total, sizeof *p->stages, "stages");
    if (!p->stages) return AD_ERR;
    p->cap_stages = total;
    for (int i = 0; i < n_job; i++) {
        AD_TRY(load_stage(p, stages->children[i], &p->stages[i]));
        p->n_stages = p->n_job_stages = i + 1;
        for (int j = 0; j < i; j++)
            if (!strcmp(p->stages[j].name, p->stages[i].name))
                return ad_fail("%s:%d: stage name '%s' is used twice (first at line %d)", path,
                               p->stages[i].line, p->stages[i].name, p->stages[j].line);
    }
    if (p->eval.present) AD_TRY(add_eval_stages(p));
    for (int i = 0; i < p->n_job_stages; i++)
        AD_TRY(check_command(p, &p->stages[i]));
    for (int i = 0; i < p->n_stages; i++)
        AD_TRY(find_deps(p, i));
    return AD_OK;
}

void ad_pipeline_free(ad_pipeline *p) {
    for (int i = 0; i < p->cap_stages; i++)
        free(p->stages[i].argv), free(p->stages[i].outputs), free(p->stages[i].deps);
    free(p->stages);
    free(p->eval.models);
    free(p->eval.compare);
    for (int i = 0; i < p->n_pool; i++)
        free(p->pool[i]);
    free(p->pool);
    ad_yaml_free(&p->doc);
    memset(p, 0, sizeof *p);
}

int ad_pipeline_find(const ad_pipeline *p, const char *name) {
    for (int i = 0; i < p->n_stages; i++)
        if (!strcmp(p->stages[i].name, name)) return i;
    return -1;
}

/* ---- stamps ------------------------------------------------------------------------------ */

uint32_t ad_stage_command_hash(const ad_stage *s) {
    uint32_t crc = 0;
    for (int i = 0; i < s->argc; i++) {
        crc = ad_crc32(crc, s->argv[i], strlen(s->argv[i]) + 1);
        uint32_t file_crc = 0;
        uint64_t size = 0;
        if (is_yaml_path(s->argv[i])) {
            if (ad_file_crc32(s->argv[i], &file_crc, &size) < 0) file_crc = 0xffffffffu;
            crc = ad_crc32(crc, &file_crc, sizeof file_crc);
        }
    }
    if (s->config_text)
        crc = ad_crc32(crc, s->config_text + s->config_body,
                       strlen(s->config_text + s->config_body) + 1);
    if (s->hash_extra) crc = ad_crc32(crc, s->hash_extra, strlen(s->hash_extra) + 1);
    ad_error_clear();
    return crc;
}

int ad_stamp_read(const char *path, ad_stamp *st) {
    memset(st, 0, sizeof *st);
    if (!ad_path_exists(path)) return AD_OK;
    char **lines = NULL;
    int n = 0;
    AD_TRY(ad_read_lines(path, &lines, &n));
    bool header = n > 0 && !strcmp(lines[0], "audistill-stage 1"), have_id = false,
         have_cmd = false;
    for (int i = 1; header && i < n; i++) {
        char name[128], id[32];
        unsigned cmd;
        if (sscanf(lines[i], "id %16[0-9a-f]", id) == 1 && strlen(id) == AD_STAGE_ID_LEN) {
            memcpy(st->id, id, AD_STAGE_ID_LEN + 1), have_id = true;
        } else if (sscanf(lines[i], "command %8x", &cmd) == 1) {
            st->command = cmd, have_cmd = true;
        } else if (sscanf(lines[i], "input %127s %16s", name, id) == 2 && st->n_inputs < 64) {
            snprintf(st->input_name[st->n_inputs], sizeof st->input_name[0], "%s", name);
            snprintf(st->input_id[st->n_inputs], sizeof st->input_id[0], "%s", id);
            st->n_inputs++;
        }
    }
    ad_free_lines(lines, n);
    if (!header || !have_id || !have_cmd)
        return ad_fail("%s is not a stage stamp of this version (remove it to rerun the stage)",
                       path);
    st->found = true;
    return AD_OK;
}

static void fresh_id(char out[AD_STAGE_ID_LEN + 1]) {
    static uint64_t counter;
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    /* splitmix64 of time, pid and a counter: unique per completion, not reproducible. */
    uint64_t z = (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec +
                 ((uint64_t)getpid() << 40) + ++counter * 0x9e3779b97f4a7c15ull;
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    snprintf(out, AD_STAGE_ID_LEN + 1, "%016llx", (unsigned long long)z);
}

int ad_stamp_write(const ad_pipeline *p, int stage, const char *path, ad_stamp *st) {
    const ad_stage *s = &p->stages[stage];
    memset(st, 0, sizeof *st);
    fresh_id(st->id);
    st->command = ad_stage_command_hash(s);
    text_buf b = {0};
    char line[512];
    snprintf(line, sizeof line, "audistill-stage 1\nid %s\ncommand %08x\n", st->id, st->command);
    tb_str(&b, line);
    for (int k = 0; k < s->n_deps && k < 64; k++) {
        ad_stamp dep;
        if (ad_stamp_read(p->stages[s->deps[k]].stamp_path, &dep) < 0) {
            free(b.data);
            return AD_ERR;
        }
        snprintf(line, sizeof line, "input %s %s\n", p->stages[s->deps[k]].name,
                 dep.found ? dep.id : "none");
        tb_str(&b, line);
    }
    tb_str(&b, "text");
    for (int i = 0; i < s->argc; i++)
        tb_str(&b, " "), tb_str(&b, s->argv[i]);
    tb_str(&b, "\n");
    if (b.failed) {
        free(b.data);
        return AD_ERR;
    }
    int rc = ad_write_file_atomic(path, b.data, b.len);
    free(b.data);
    return rc;
}

/* ---- children ---------------------------------------------------------------------------- */

static pid_t start_self(char *const argv[], int stdout_fd) {
    int n = 0;
    while (argv[n])
        n++;
    char **full = ad_calloc((size_t)n + 2, sizeof *full, "child arguments");
    if (!full) return -1;
    full[0] = "audistill";
    memcpy(full + 1, argv, (size_t)n * sizeof *full);
    fflush(stdout), fflush(stderr);
    pid_t parent = getpid();
    pid_t pid = fork();
    if (pid < 0) {
        free(full);
        ad_fail("cannot start audistill %s: %s", argv[0], strerror(errno));
        return -1;
    }
    if (pid == 0) {
        /* A stage must not outlive the runner: `kill -9` of run would otherwise leave a
         * training process writing checkpoints behind the next run's back. */
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent) _exit(127);
        if (stdout_fd >= 0 && dup2(stdout_fd, STDOUT_FILENO) < 0) _exit(127);
        execv("/proc/self/exe", full);
        static const char msg[] = "audistill run: cannot execute /proc/self/exe\n";
        ssize_t ignored = write(STDERR_FILENO, msg, sizeof msg - 1);
        (void)ignored;
        _exit(127);
    }
    free(full);
    return pid;
}

static int wait_child(pid_t pid, const char *what, int *status, int *signal) {
    int st;
    while (waitpid(pid, &st, 0) < 0)
        if (errno != EINTR) return ad_fail("waiting for audistill %s: %s", what, strerror(errno));
    if (signal) *signal = 0;
    if (WIFSIGNALED(st)) {
        *status = 128 + WTERMSIG(st);
        if (signal) *signal = WTERMSIG(st);
    } else {
        *status = WIFEXITED(st) ? WEXITSTATUS(st) : 1;
    }
    return AD_OK;
}

int ad_run_self(char *const argv[], int stdout_fd, int *status, int *signal) {
    pid_t pid = start_self(argv, stdout_fd);
    if (pid < 0) return AD_ERR;
    return wait_child(pid, argv[0], status, signal);
}

int ad_run_self_capture(char *const argv[], size_t max_bytes, char **out, int *status) {
    *out = NULL;
    int fd[2];
    if (pipe(fd) != 0) return ad_fail("cannot start audistill %s: %s", argv[0], strerror(errno));
    pid_t pid = start_self(argv, fd[1]);
    close(fd[1]);
    if (pid < 0) {
        close(fd[0]);
        return AD_ERR;
    }
    text_buf b = {0};
    tb_add(&b, "", 0);
    char chunk[4096];
    ssize_t got;
    while ((got = read(fd[0], chunk, sizeof chunk)) != 0) {
        if (got < 0) {
            if (errno == EINTR) continue;
            break;
        }
        if (b.len + (size_t)got <= max_bytes) tb_add(&b, chunk, (size_t)got);
    }
    close(fd[0]);
    int rc = wait_child(pid, argv[0], status, NULL);
    if (rc < 0 || b.failed) {
        free(b.data);
        return AD_ERR;
    }
    *out = b.data;
    return AD_OK;
}
