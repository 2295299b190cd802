#include "data/dataset.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "io/file.h"
#include "io/yaml.h"

void ad_dataset_free(ad_dataset *ds) {
    for (int i = 0; i < ds->n_segments; i++) {
        ad_segment *s = &ds->segments[i];
        free(s->audio);
        free(s->talk);
        for (int l = 0; l < AD_MAX_LANGS; l++)
            free(s->text[l]);
    }
    free(ds->segments);
    free(ds->source);
    memset(ds, 0, sizeof *ds);
}

int ad_dataset_lang(const ad_dataset *ds, const char *lang) {
    for (int l = 0; l < ds->n_langs; l++)
        if (strcmp(ds->langs[l], lang) == 0) return l;
    return -1;
}

static int add_lang(ad_dataset *ds, const char *lang, const char *where) {
    if (ad_dataset_lang(ds, lang) >= 0)
        return ad_fail("%s: language '%s' given twice", where, lang);
    if (ds->n_langs == AD_MAX_LANGS)
        return ad_fail("%s: at most %d languages per data set", where, AD_MAX_LANGS);
    if (strlen(lang) == 0 || strlen(lang) >= sizeof ds->langs[0])
        return ad_fail("%s: '%s' is not a language code", where, lang);
    strcpy(ds->langs[ds->n_langs++], lang);
    return AD_OK;
}

static int alloc_segments(ad_dataset *ds, int n) {
    ds->segments = ad_calloc((size_t)(n > 0 ? n : 1), sizeof *ds->segments, "segments");
    if (!ds->segments) return AD_ERR;
    ds->n_segments = n;
    return AD_OK;
}

static int set_talks_from_segmentation(ad_dataset *ds, const char *yaml_path) {
    ad_dataset seg;
    AD_TRY(ad_dataset_load_segmentation(yaml_path, ".", &seg));
    int rc = AD_OK;
    if (seg.n_segments != ds->n_segments) {
        rc = ad_fail("%s lists %d segments but the data set has %d", yaml_path, seg.n_segments,
                     ds->n_segments);
    } else {
        for (int i = 0; i < ds->n_segments && rc == AD_OK; i++) {
            free(ds->segments[i].talk);
            ds->segments[i].talk = ad_strdup(seg.segments[i].talk, "talk");
            if (!ds->segments[i].talk) rc = AD_ERR;
        }
    }
    ad_dataset_free(&seg);
    return rc;
}

int ad_dataset_load_acl(const char *root, const char *split, int n_langs, const char *const *langs,
                        const char *segments_yaml, ad_dataset *ds) {
    memset(ds, 0, sizeof *ds);
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", root, split);
    if (!ad_is_directory(path))
        return ad_fail("%s: no such split directory (expected the ACL 60/60 layout "
                       "ROOT/SPLIT/segmented_wavs/gold and ROOT/SPLIT/text/txt)",
                       path);
    ds->source = ad_strdup(path, "source");
    if (!ds->source) return AD_ERR;
    char **lines[AD_MAX_LANGS] = {0};
    int counts[AD_MAX_LANGS] = {0};
    int rc = AD_ERR;
    if (n_langs < 1 || n_langs > AD_MAX_LANGS) {
        ad_fail("%s: between 1 and %d languages expected", path, AD_MAX_LANGS);
        goto done;
    }
    for (int l = 0; l < n_langs; l++) {
        if (add_lang(ds, langs[l], path) < 0) goto done;
        snprintf(path, sizeof path, "%s/%s/text/txt/ACL.6060.%s.en-xx.%s.txt", root, split, split,
                 langs[l]);
        if (ad_read_lines(path, &lines[l], &counts[l]) < 0) goto done;
        if (counts[l] != counts[0]) {
            ad_fail("%s has %d lines but ACL.6060.%s.en-xx.%s.txt has %d: line N must be sentence "
                    "N in every language",
                    path, counts[l], split, langs[0], counts[0]);
            goto done;
        }
    }
    if (counts[0] == 0) {
        ad_fail("%s/%s: the text files are empty", root, split);
        goto done;
    }
    if (alloc_segments(ds, counts[0]) < 0) goto done;
    for (int i = 0; i < counts[0]; i++) {
        ad_segment *s = &ds->segments[i];
        snprintf(path, sizeof path, "%s/%s/segmented_wavs/gold/sent_%d.wav", root, split, i + 1);
        if (!ad_path_exists(path)) {
            ad_fail("%s is missing (line %d of the text files has no audio)", path, i + 1);
            goto done;
        }
        s->audio = ad_strdup(path, "path");
        s->talk = ad_strdup("", "talk");
        if (!s->audio || !s->talk) goto done;
        for (int l = 0; l < n_langs; l++) {
            s->text[l] = lines[l][i];
            lines[l][i] = NULL;
        }
    }
    snprintf(path, sizeof path, "%s/%s/segmented_wavs/gold/sent_%d.wav", root, split,
             counts[0] + 1);
    if (ad_path_exists(path)) {
        ad_fail("%s exists but the text files have only %d lines", path, counts[0]);
        goto done;
    }
    if (segments_yaml) {
        if (set_talks_from_segmentation(ds, segments_yaml) < 0) goto done;
    } else {
        snprintf(path, sizeof path, "%s/%s/text/txt/ACL.6060.%s.en-xx.yaml", root, split, split);
        if (ad_path_exists(path) && set_talks_from_segmentation(ds, path) < 0) goto done;
    }
    rc = AD_OK;
done:
    for (int l = 0; l < n_langs && l < AD_MAX_LANGS; l++)
        ad_free_lines(lines[l], counts[l]);
    if (rc < 0) ad_dataset_free(ds);
    return rc;
}

/* ---- segmentation YAML -------------------------------------------------------------- */

static int yaml_number(const ad_yaml_doc *doc, const ad_yaml_node *map, const char *key,
                       double *out) {
    const ad_yaml_node *v = ad_yaml_get(map, key);
    if (!v || v->kind != AD_YAML_SCALAR)
        return ad_fail("%s:%d: entry needs a numeric '%s'", doc->file_name, map->line, key);
    char *end;
    errno = 0;
    *out = strtod(v->value, &end);
    if (errno || end == v->value || *end || *out < 0)
        return ad_fail("%s:%d: %s: expected a non-negative number, got '%s'", doc->file_name,
                       v->line, key, v->value);
    return AD_OK;
}

static const char *yaml_string(const ad_yaml_doc *doc, const ad_yaml_node *map, const char *key) {
    const ad_yaml_node *v = ad_yaml_get(map, key);
    if (!v || v->kind != AD_YAML_SCALAR || ad_yaml_is_null(v)) {
        ad_fail("%s:%d: entry needs a string '%s'", doc->file_name, map->line, key);
        return NULL;
    }
    return v->value;
}

static char *resolve(const char *dir, const char *path) {
    if (path[0] == '/' || strcmp(dir, ".") == 0) return ad_strdup(path, "path");
    return ad_path_join(dir, path);
}

int ad_dataset_load_segmentation(const char *yaml_path, const char *wav_dir, ad_dataset *ds) {
    memset(ds, 0, sizeof *ds);
    ad_yaml_doc doc;
    AD_TRY(ad_yaml_load(yaml_path, &doc));
    int rc = AD_ERR;
    const ad_yaml_node *root = doc.root;
    if (!root || root->kind != AD_YAML_SEQUENCE) {
        ad_fail("%s: expected a YAML list of {duration, offset, speaker_id, wav} entries",
                yaml_path);
        goto done;
    }
    ds->source = ad_strdup(yaml_path, "source");
    if (!ds->source || alloc_segments(ds, root->count) < 0) goto done;
    for (int i = 0; i < root->count; i++) {
        const ad_yaml_node *e = root->children[i];
        ad_segment *s = &ds->segments[i];
        if (e->kind != AD_YAML_MAPPING) {
            ad_fail("%s:%d: entry %d is not a mapping", yaml_path, e->line, i + 1);
            goto done;
        }
        if (yaml_number(&doc, e, "offset", &s->offset) < 0 ||
            yaml_number(&doc, e, "duration", &s->duration) < 0)
            goto done;
        if (s->duration <= 0) {
            ad_fail("%s:%d: duration must be positive", yaml_path, e->line);
            goto done;
        }
        const char *wav = yaml_string(&doc, e, "wav");
        const char *speaker = yaml_string(&doc, e, "speaker_id");
        if (!wav || !speaker) goto done;
        s->audio = resolve(wav_dir, wav);
        s->talk = ad_strdup(speaker, "talk");
        if (!s->audio || !s->talk) goto done;
    }
    rc = AD_OK;
done:
    ad_yaml_free(&doc);
    if (rc < 0) ad_dataset_free(ds);
    return rc;
}

/* ---- manifests ---------------------------------------------------------------------- */

static bool is_reserved_column(const char *name) {
    return strcmp(name, "audio") == 0 || strcmp(name, "offset") == 0 ||
           strcmp(name, "duration") == 0 || strcmp(name, "talk") == 0;
}

static int parse_seconds(const char *text, const char *where, const char *what, double *out) {
    if (!text || !*text) {
        *out = 0;
        return AD_OK;
    }
    char *end;
    errno = 0;
    *out = strtod(text, &end);
    if (errno || end == text || *end || *out < 0)
        return ad_fail("%s: %s must be a non-negative number of seconds, got '%s'", where, what,
                       text);
    return AD_OK;
}

static int check_audio(const char *path, const char *where) {
    if (!ad_path_exists(path)) return ad_fail("%s: audio file %s does not exist", where, path);
    return AD_OK;
}

/* Splits a TSV line in place into at most `max` fields. */
static int split_tabs(char *line, char **fields, int max) {
    int n = 0;
    for (char *p = line;;) {
        if (n == max) return max + 1;
        fields[n++] = p;
        char *tab = strchr(p, '\t');
        if (!tab) break;
        *tab = '\0';
        p = tab + 1;
    }
    return n;
}

#define MAX_COLUMNS 16

static int load_tsv(const char *path, const char *dir, ad_dataset *ds) {
    char **lines;
    int n;
    AD_TRY(ad_read_lines(path, &lines, &n));
    int rc = AD_ERR;
    char *cols[MAX_COLUMNS];
    int col_audio = -1, col_offset = -1, col_duration = -1, col_talk = -1;
    int col_lang[AD_MAX_LANGS];
    int n_cols = n ? split_tabs(lines[0], cols, MAX_COLUMNS) : 0;
    if (n_cols > MAX_COLUMNS) {
        ad_fail("%s:1: more than %d columns", path, MAX_COLUMNS);
        goto done;
    }
    for (int c = 0; c < n_cols; c++) {
        if (strcmp(cols[c], "audio") == 0)
            col_audio = c;
        else if (strcmp(cols[c], "offset") == 0)
            col_offset = c;
        else if (strcmp(cols[c], "duration") == 0)
            col_duration = c;
        else if (strcmp(cols[c], "talk") == 0)
            col_talk = c;
        else {
            char where[512];
            snprintf(where, sizeof where, "%s:1", path);
            if (add_lang(ds, cols[c], where) < 0) goto done;
            col_lang[ds->n_langs - 1] = c;
        }
    }
    if (col_audio < 0) {
        ad_fail("%s:1: the header row must name an 'audio' column (and optionally offset, "
                "duration, talk and language codes), tab-separated",
                path);
        goto done;
    }
    int rows = 0;
    for (int i = 1; i < n; i++)
        rows += lines[i][0] != '\0';
    if (alloc_segments(ds, rows) < 0) goto done;
    int k = 0;
    for (int i = 1; i < n; i++) {
        if (lines[i][0] == '\0') continue;
        char where[512];
        snprintf(where, sizeof where, "%s:%d", path, i + 1);
        char *f[MAX_COLUMNS];
        int nf = split_tabs(lines[i], f, MAX_COLUMNS);
        if (nf != n_cols) {
            ad_fail("%s: %d fields, the header has %d", where, nf, n_cols);
            goto done;
        }
        ad_segment *s = &ds->segments[k++];
        s->audio = resolve(dir, f[col_audio]);
        s->talk = ad_strdup(col_talk >= 0 ? f[col_talk] : "", "talk");
        if (!s->audio || !s->talk) goto done;
        if (check_audio(s->audio, where) < 0 ||
            parse_seconds(col_offset >= 0 ? f[col_offset] : NULL, where, "offset", &s->offset) <
                0 ||
            parse_seconds(col_duration >= 0 ? f[col_duration] : NULL, where, "duration",
                          &s->duration) < 0)
            goto done;
        for (int l = 0; l < ds->n_langs; l++)
            if (!(s->text[l] = ad_strdup(f[col_lang[l]], "text"))) goto done;
    }
    rc = AD_OK;
done:
    ad_free_lines(lines, n);
    return rc;
}

static int load_yaml_manifest(const char *path, const char *dir, ad_dataset *ds) {
    ad_yaml_doc doc;
    AD_TRY(ad_yaml_load(path, &doc));
    int rc = AD_ERR;
    const ad_yaml_node *root = doc.root;
    if (!root || root->kind != AD_YAML_SEQUENCE || root->count == 0) {
        ad_fail(
            "%s: expected a non-empty YAML list of {audio, offset, duration, talk, <lang>: text} "
            "entries",
            path);
        goto done;
    }
    /* Languages are the non-reserved keys of the first entry; every entry must have them. */
    const ad_yaml_node *first = root->children[0];
    for (int k = 0; first->kind == AD_YAML_MAPPING && k < first->count; k++) {
        if (is_reserved_column(first->keys[k])) continue;
        char where[512];
        snprintf(where, sizeof where, "%s:%d", path, first->key_lines[k]);
        if (add_lang(ds, first->keys[k], where) < 0) goto done;
    }
    if (alloc_segments(ds, root->count) < 0) goto done;
    for (int i = 0; i < root->count; i++) {
        const ad_yaml_node *e = root->children[i];
        char where[512];
        snprintf(where, sizeof where, "%s:%d", path, e->line);
        if (e->kind != AD_YAML_MAPPING) {
            ad_fail("%s: entry %d is not a mapping", where, i + 1);
            goto done;
        }
        for (int k = 0; k < e->count; k++) {
            if (!is_reserved_column(e->keys[k]) && ad_dataset_lang(ds, e->keys[k]) < 0) {
                ad_fail(
                    "%s:%d: key '%s' is neither audio/offset/duration/talk nor a language of the "
                    "first entry",
                    path, e->key_lines[k], e->keys[k]);
                goto done;
            }
        }
        ad_segment *s = &ds->segments[i];
        const char *audio = yaml_string(&doc, e, "audio");
        if (!audio) goto done;
        s->audio = resolve(dir, audio);
        const ad_yaml_node *talk = ad_yaml_get(e, "talk");
        s->talk = ad_strdup(talk && talk->kind == AD_YAML_SCALAR ? talk->value : "", "talk");
        if (!s->audio || !s->talk || check_audio(s->audio, where) < 0) goto done;
        const ad_yaml_node *off = ad_yaml_get(e, "offset"), *dur = ad_yaml_get(e, "duration");
        if ((off && yaml_number(&doc, e, "offset", &s->offset) < 0) ||
            (dur && yaml_number(&doc, e, "duration", &s->duration) < 0))
            goto done;
        for (int l = 0; l < ds->n_langs; l++) {
            const char *t = yaml_string(&doc, e, ds->langs[l]);
            if (!t || !(s->text[l] = ad_strdup(t, "text"))) goto done;
        }
    }
    rc = AD_OK;
done:
    ad_yaml_free(&doc);
    return rc;
}

int ad_dataset_load_manifest(const char *path, ad_dataset *ds) {
    memset(ds, 0, sizeof *ds);
    char *dir = ad_path_dirname(path);
    ds->source = ad_strdup(path, "source");
    if (!dir || !ds->source) {
        free(dir);
        ad_dataset_free(ds);
        return AD_ERR;
    }
    size_t n = strlen(path);
    int rc;
    if (n > 4 && strcmp(path + n - 4, ".tsv") == 0)
        rc = load_tsv(path, dir, ds);
    else if ((n > 5 && strcmp(path + n - 5, ".yaml") == 0) ||
             (n > 4 && strcmp(path + n - 4, ".yml") == 0))
        rc = load_yaml_manifest(path, dir, ds);
    else
        rc = ad_fail("%s: a manifest must end in .tsv, .yaml or .yml", path);
    free(dir);
    if (rc < 0) ad_dataset_free(ds);
    return rc;
}
