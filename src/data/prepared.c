#include "data/prepared.h"

#include <fcntl.h>
#include <hdf5.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "io/file.h"
#include "io/h5util.h"

#define MAX_TARGET_LANGS   AD_MAX_LANGS
#define FEATURE_CHUNK_ROWS 512
#define ID_CHUNK           4096

typedef struct {
    int64_t *items;
    int n, cap;
} i64_list;

static int i64_push(i64_list *l, int64_t v) {
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 1024;
        int64_t *g = ad_realloc(l->items, sizeof *g * (size_t)cap, "index");
        if (!g) return AD_ERR;
        l->items = g;
        l->cap = cap;
    }
    l->items[l->n++] = v;
    return AD_OK;
}

struct ad_prepared_writer {
    char *final_path, *temp_path;
    hid_t file, features;
    hid_t ids[MAX_TARGET_LANGS];
    ad_prepared_info info;
    char langs_text[AD_MAX_LANGS][8], langs_target[MAX_TARGET_LANGS][8];
    int64_t total_frames;
    int64_t total_ids[MAX_TARGET_LANGS];
    i64_list frame_offset, id_offset[MAX_TARGET_LANGS];
    int32_t *valid;
    float *pad;
    char **talks;
    char **texts[AD_MAX_LANGS];
    int n, cap;
};

int ad_prepared_create(const char *path, const ad_prepared_info *info, ad_prepared_writer **out) {
    ad_h5_silence();
    *out = NULL;
    if (info->n_text_langs > AD_MAX_LANGS || info->n_target_langs > MAX_TARGET_LANGS)
        return ad_fail("%s: too many languages", path);
    ad_prepared_writer *w = ad_calloc(1, sizeof *w, "prepared writer");
    if (!w) return AD_ERR;
    w->file = w->features = -1;
    for (int l = 0; l < MAX_TARGET_LANGS; l++)
        w->ids[l] = -1;
    w->info = *info;
    for (int l = 0; l < info->n_text_langs; l++)
        snprintf(w->langs_text[l], sizeof w->langs_text[l], "%s", info->text_langs[l]);
    for (int l = 0; l < info->n_target_langs; l++)
        snprintf(w->langs_target[l], sizeof w->langs_target[l], "%s", info->target_langs[l]);
    w->file = ad_h5_create_temp(path, &w->final_path, &w->temp_path);
    if (w->file < 0) goto fail;
    hsize_t chunk[2] = {FEATURE_CHUNK_ROWS, (hsize_t)info->n_mels};
    w->features = ad_h5_create_extendable(w->file, "features", H5T_IEEE_F32LE, 2, chunk);
    if (w->features < 0) {
        ad_fail("%s: cannot create /features", w->temp_path);
        goto fail;
    }
    hid_t ids_group = ad_h5_make_group(w->file, "ids");
    if (ids_group < 0) goto fail;
    for (int l = 0; l < info->n_target_langs; l++) {
        hid_t g = ad_h5_make_group(ids_group, w->langs_target[l]);
        hsize_t c[1] = {ID_CHUNK};
        w->ids[l] = g >= 0 ? ad_h5_create_extendable(g, "tokens", H5T_STD_I32LE, 1, c) : -1;
        if (g >= 0) H5Gclose(g);
        if (w->ids[l] < 0 || i64_push(&w->id_offset[l], 0) < 0) {
            H5Gclose(ids_group);
            ad_fail("%s: cannot create /ids/%s", w->temp_path, w->langs_target[l]);
            goto fail;
        }
    }
    H5Gclose(ids_group);
    hid_t prompt = ad_h5_make_group(w->file, "prompt");
    if (prompt < 0) goto fail;
    H5Gclose(prompt);
    if (i64_push(&w->frame_offset, 0) < 0) goto fail;
    *out = w;
    return AD_OK;
fail:
    ad_prepared_abort(w);
    return AD_ERR;
}

int ad_prepared_set_prompt(ad_prepared_writer *w, const char *lang, const char *text,
                           const int32_t *before, int n_before, const int32_t *after, int n_after) {
    char name[64];
    snprintf(name, sizeof name, "prompt/%s", lang);
    hid_t g = ad_h5_make_group(w->file, name);
    if (g < 0) return AD_ERR;
    int rc =
        ad_h5_write_array(g, "before_audio", H5T_STD_I32LE, H5T_NATIVE_INT32, n_before, before);
    if (rc == AD_OK)
        rc = ad_h5_write_array(g, "after_audio", H5T_STD_I32LE, H5T_NATIVE_INT32, n_after, after);
    if (rc == AD_OK) rc = ad_h5_write_string_attr(g, "text", text);
    H5Gclose(g);
    return rc;
}

int ad_prepared_append(ad_prepared_writer *w, const float *features, int n_frames, int valid_frames,
                       float pad_value, const char *talk, const char *const *texts,
                       const int32_t *const *ids, const int *n_ids) {
    if (w->n == w->cap) {
        int cap = w->cap ? w->cap * 2 : 1024;
        int32_t *v = ad_realloc(w->valid, sizeof *v * (size_t)cap, "prepared index");
        if (!v) return AD_ERR;
        w->valid = v;
        float *p = ad_realloc(w->pad, sizeof *p * (size_t)cap, "prepared index");
        if (!p) return AD_ERR;
        w->pad = p;
        char **t = ad_realloc(w->talks, sizeof *t * (size_t)cap, "prepared index");
        if (!t) return AD_ERR;
        w->talks = t;
        for (int l = 0; l < w->info.n_text_langs; l++) {
            char **x = ad_realloc(w->texts[l], sizeof *x * (size_t)cap, "prepared index");
            if (!x) return AD_ERR;
            w->texts[l] = x;
        }
        w->cap = cap;
    }
    AD_TRY(ad_h5_append_rows(w->features, H5T_NATIVE_FLOAT, w->total_frames, n_frames,
                             (hsize_t)w->info.n_mels, features, "/features"));
    w->total_frames += n_frames;
    AD_TRY(i64_push(&w->frame_offset, w->total_frames));
    for (int l = 0; l < w->info.n_target_langs; l++) {
        AD_TRY(ad_h5_append_rows(w->ids[l], H5T_NATIVE_INT32, w->total_ids[l], n_ids[l], 0, ids[l],
                                 "/ids/<lang>/tokens"));
        w->total_ids[l] += n_ids[l];
        AD_TRY(i64_push(&w->id_offset[l], w->total_ids[l]));
    }
    int i = w->n;
    w->valid[i] = valid_frames;
    w->pad[i] = pad_value;
    w->talks[i] = ad_strdup(talk ? talk : "", "talk");
    if (!w->talks[i]) return AD_ERR;
    for (int l = 0; l < w->info.n_text_langs; l++) {
        w->texts[l][i] = ad_strdup(texts[l] ? texts[l] : "", "text");
        if (!w->texts[l][i]) {
            for (int k = 0; k < l; k++)
                free(w->texts[k][i]);
            free(w->talks[i]);
            return AD_ERR;
        }
    }
    w->n++;
    return AD_OK;
}

static void free_writer(ad_prepared_writer *w) {
    for (int i = 0; i < w->n; i++) {
        free(w->talks[i]);
        for (int l = 0; l < w->info.n_text_langs; l++)
            free(w->texts[l][i]);
    }
    free(w->talks);
    for (int l = 0; l < AD_MAX_LANGS; l++)
        free(w->texts[l]);
    for (int l = 0; l < MAX_TARGET_LANGS; l++)
        free(w->id_offset[l].items);
    free(w->frame_offset.items);
    free(w->valid);
    free(w->pad);
    free(w->final_path);
    free(w->temp_path);
    free(w);
}

static void close_handles(ad_prepared_writer *w) {
    for (int l = 0; l < MAX_TARGET_LANGS; l++)
        if (w->ids[l] >= 0) H5Dclose(w->ids[l]), w->ids[l] = -1;
    if (w->features >= 0) H5Dclose(w->features), w->features = -1;
    if (w->file >= 0) H5Fclose(w->file), w->file = -1;
}

void ad_prepared_abort(ad_prepared_writer *w) {
    if (!w) return;
    close_handles(w);
    if (w->temp_path) unlink(w->temp_path);
    free_writer(w);
}

int ad_prepared_finish(ad_prepared_writer *w) {
    int rc = AD_ERR;
    const ad_prepared_info *in = &w->info;
    if (ad_h5_write_array(w->file, "frame_offset", H5T_STD_I64LE, H5T_NATIVE_INT64,
                          w->frame_offset.n, w->frame_offset.items) < 0 ||
        ad_h5_write_array(w->file, "valid_frames", H5T_STD_I32LE, H5T_NATIVE_INT32, w->n,
                          w->valid) < 0 ||
        ad_h5_write_array(w->file, "pad_value", H5T_IEEE_F32LE, H5T_NATIVE_FLOAT, w->n, w->pad) <
            0 ||
        ad_h5_write_strings(w->file, "talk", w->talks, w->n) < 0)
        goto done;
    hid_t text = ad_h5_make_group(w->file, "text");
    if (text < 0) goto done;
    for (int l = 0; l < in->n_text_langs; l++) {
        if (ad_h5_write_strings(text, w->langs_text[l], w->texts[l], w->n) < 0) {
            H5Gclose(text);
            goto done;
        }
    }
    H5Gclose(text);
    for (int l = 0; l < in->n_target_langs; l++) {
        char name[64];
        snprintf(name, sizeof name, "ids/%s", w->langs_target[l]);
        hid_t g = H5Gopen2(w->file, name, H5P_DEFAULT);
        int r = g >= 0 ? ad_h5_write_array(g, "offset", H5T_STD_I64LE, H5T_NATIVE_INT64,
                                           w->id_offset[l].n, w->id_offset[l].items)
                       : AD_ERR;
        if (g >= 0) H5Gclose(g);
        if (r < 0) goto done;
    }
    if (ad_h5_write_string_attr(w->file, "format", AD_PREPARED_FORMAT) < 0 ||
        ad_h5_write_int_attr(w->file, "version", AD_PREPARED_VERSION) < 0 ||
        ad_h5_write_int_attr(w->file, "n_mels", in->n_mels) < 0 ||
        ad_h5_write_int_attr(w->file, "hop_length", in->hop_length) < 0 ||
        ad_h5_write_int_attr(w->file, "sample_rate", in->sample_rate) < 0 ||
        ad_h5_write_int_attr(w->file, "count", w->n) < 0 ||
        ad_h5_write_string_attr(w->file, "source", in->source ? in->source : "") < 0 ||
        ad_h5_write_string_attr(w->file, "tokenizer", in->tokenizer ? in->tokenizer : "") < 0)
        goto done;
    if (H5Fflush(w->file, H5F_SCOPE_GLOBAL) < 0) {
        ad_fail("HDF5: cannot flush %s", w->temp_path);
        goto done;
    }
    close_handles(w);
    rc = ad_commit_file(w->temp_path, w->final_path);
    if (rc < 0) goto done;
    free_writer(w);
    return rc;
done:
    ad_prepared_abort(w);
    return AD_ERR;
}

/* ---- reader ------------------------------------------------------------------------- */

struct ad_prepared {
    char *path;
    hid_t file, features;
    int n, n_mels;
    int64_t *frame_offset;
    int32_t *valid;
    float *pad;
    char attrs[4][2][256]; /* cached string attributes: name, value */
    /* segment offsets of the target ids, per language, read on first use: every batch asks */
    int n_offsets;
    char offset_lang[MAX_TARGET_LANGS][8];
    int64_t *offsets[MAX_TARGET_LANGS];
};

int ad_prepared_open(const char *path, ad_prepared **out) {
    ad_h5_silence();
    *out = NULL;
    if (!ad_path_exists(path))
        return ad_fail("%s does not exist (run `audistill prepare` first)", path);
    if (H5Fis_hdf5(path) <= 0)
        return ad_fail("%s is not an HDF5 file (truncated or wrong file?)", path);
    ad_prepared *p = ad_calloc(1, sizeof *p, "prepared set");
    if (!p) return AD_ERR;
    p->features = -1;
    p->path = ad_strdup(path, "path");
    p->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (!p->path || p->file < 0) {
        if (p->path) ad_fail("cannot open %s as HDF5 (damaged?)", path);
        goto fail;
    }
    char format[64];
    ad_h5_read_string_attr(p->file, "format", format, sizeof format);
    if (strcmp(format, AD_PREPARED_FORMAT) != 0) {
        ad_fail("%s is not an audistill prepared set (format attribute '%s')", path, format);
        goto fail;
    }
    int64_t version, count, n_mels;
    if (ad_h5_read_int_attr(p->file, path, "version", &version) < 0 ||
        ad_h5_read_int_attr(p->file, path, "count", &count) < 0 ||
        ad_h5_read_int_attr(p->file, path, "n_mels", &n_mels) < 0)
        goto fail;
    if (version != AD_PREPARED_VERSION) {
        ad_fail("%s: prepared-set version %lld, this build reads version %d (prepare it again)",
                path, (long long)version, AD_PREPARED_VERSION);
        goto fail;
    }
    p->n = (int)count;
    p->n_mels = (int)n_mels;
    if (ad_h5_read_1d(p->file, path, "frame_offset", H5T_NATIVE_INT64, 8, count + 1,
                      (void **)&p->frame_offset, NULL) < 0 ||
        ad_h5_read_1d(p->file, path, "valid_frames", H5T_NATIVE_INT32, 4, count, (void **)&p->valid,
                      NULL) < 0 ||
        ad_h5_read_1d(p->file, path, "pad_value", H5T_NATIVE_FLOAT, 4, count, (void **)&p->pad,
                      NULL) < 0)
        goto fail;
    p->features = H5Dopen2(p->file, "features", H5P_DEFAULT);
    if (p->features < 0) {
        ad_fail("%s: /features is missing", path);
        goto fail;
    }
    hid_t space = H5Dget_space(p->features);
    hsize_t dims[2] = {0, 0};
    int rank = H5Sget_simple_extent_dims(space, dims, NULL);
    H5Sclose(space);
    if (rank != 2 || (int64_t)dims[1] != n_mels || (int64_t)dims[0] != p->frame_offset[count]) {
        ad_fail("%s: /features is [%llu, %llu], expected [%lld, %lld]", path,
                (unsigned long long)dims[0], (unsigned long long)dims[1],
                (long long)p->frame_offset[count], (long long)n_mels);
        goto fail;
    }
    for (int i = 0; i < p->n; i++) {
        if (p->frame_offset[i + 1] < p->frame_offset[i]) {
            ad_fail("%s: /frame_offset is not increasing at %d", path, i);
            goto fail;
        }
    }
    const char *names[] = {"source", "tokenizer"};
    for (int i = 0; i < 2; i++) {
        snprintf(p->attrs[i][0], sizeof p->attrs[i][0], "%s", names[i]);
        ad_h5_read_string_attr(p->file, names[i], p->attrs[i][1], sizeof p->attrs[i][1]);
    }
    *out = p;
    return AD_OK;
fail:
    ad_prepared_close(p);
    return AD_ERR;
}

void ad_prepared_close(ad_prepared *p) {
    if (!p) return;
    if (p->features >= 0) H5Dclose(p->features);
    if (p->file >= 0) H5Fclose(p->file);
    free(p->frame_offset);
    free(p->valid);
    free(p->pad);
    free(p->path);
    for (int k = 0; k < p->n_offsets; k++)
        free(p->offsets[k]);
    free(p);
}

int ad_prepared_count(const ad_prepared *p) {
    return p->n;
}
int ad_prepared_n_mels(const ad_prepared *p) {
    return p->n_mels;
}

const char *ad_prepared_attr(const ad_prepared *p, const char *name) {
    for (int i = 0; i < 4; i++)
        if (strcmp(p->attrs[i][0], name) == 0) return p->attrs[i][1];
    return NULL;
}

static int check_index(const ad_prepared *p, int i) {
    if (i < 0 || i >= p->n)
        return ad_fail("%s: segment %d out of range (%d segments)", p->path, i, p->n);
    return AD_OK;
}

int ad_prepared_frames(const ad_prepared *p, int i, int *stored, int *valid, float *pad_value) {
    AD_TRY(check_index(p, i));
    *stored = (int)(p->frame_offset[i + 1] - p->frame_offset[i]);
    *valid = p->valid[i];
    *pad_value = p->pad[i];
    return AD_OK;
}

int ad_prepared_features(const ad_prepared *p, int i, float *out) {
    AD_TRY(check_index(p, i));
    return ad_h5_read_rows(p->features, H5T_NATIVE_FLOAT, p->frame_offset[i],
                           p->frame_offset[i + 1] - p->frame_offset[i], (hsize_t)p->n_mels, out,
                           p->path, "/features");
}

/* /ids/<lang>/offset, read once per language and kept. */
static int target_offsets(ad_prepared *p, const char *lang, const int64_t **offset) {
    for (int k = 0; k < p->n_offsets; k++)
        if (!strcmp(p->offset_lang[k], lang)) {
            *offset = p->offsets[k];
            return AD_OK;
        }
    if (H5Lexists(p->file, "ids", H5P_DEFAULT) <= 0) return ad_fail("%s: no /ids group", p->path);
    char group[64];
    snprintf(group, sizeof group, "ids/%s", lang);
    if (strlen(lang) >= sizeof p->offset_lang[0] || H5Lexists(p->file, group, H5P_DEFAULT) <= 0)
        return ad_fail("%s: no token ids for language '%s'", p->path, lang);
    if (p->n_offsets == MAX_TARGET_LANGS)
        return ad_fail("%s: more than %d target languages", p->path, MAX_TARGET_LANGS);
    char name[64];
    snprintf(name, sizeof name, "ids/%s/offset", lang);
    int64_t *o = NULL;
    AD_TRY(ad_h5_read_1d(p->file, p->path, name, H5T_NATIVE_INT64, 8, p->n + 1, (void **)&o, NULL));
    snprintf(p->offset_lang[p->n_offsets], sizeof p->offset_lang[0], "%s", lang);
    p->offsets[p->n_offsets++] = o;
    *offset = o;
    return AD_OK;
}

int ad_prepared_target_ids(ad_prepared *p, const char *lang, int i, int32_t **ids, int *n) {
    *ids = NULL;
    *n = 0;
    AD_TRY(check_index(p, i));
    const int64_t *offset = NULL;
    AD_TRY(target_offsets(p, lang, &offset));
    int64_t start = offset[i], count = offset[i + 1] - offset[i];
    char name[64];
    if (count < 0) return ad_fail("%s: /ids/%s/offset is not increasing", p->path, lang);
    snprintf(name, sizeof name, "ids/%s/tokens", lang);
    hid_t ds = H5Dopen2(p->file, name, H5P_DEFAULT);
    if (ds < 0) return ad_fail("%s: /%s is missing", p->path, name);
    *ids = ad_malloc(sizeof **ids * (size_t)(count ? count : 1), "ids");
    int rc =
        *ids ? ad_h5_read_rows(ds, H5T_NATIVE_INT32, start, count, 0, *ids, p->path, name) : AD_ERR;
    H5Dclose(ds);
    if (rc < 0) {
        free(*ids);
        *ids = NULL;
        return AD_ERR;
    }
    *n = (int)count;
    return AD_OK;
}

int ad_prepared_prompt(const ad_prepared *p, const char *lang, int32_t **before, int *n_before,
                       int32_t **after, int *n_after) {
    char name[96];
    snprintf(name, sizeof name, "prompt/%s", lang);
    if (H5Lexists(p->file, "prompt", H5P_DEFAULT) <= 0 ||
        H5Lexists(p->file, name, H5P_DEFAULT) <= 0)
        return ad_fail("%s: no prompt for language '%s'", p->path, lang);
    hid_t g = H5Gopen2(p->file, name, H5P_DEFAULT);
    if (g < 0) return ad_fail("%s: cannot open /%s", p->path, name);
    int rc = AD_ERR;
    *before = *after = NULL;
    hid_t parts[2] = {-1, -1};
    const char *names[2] = {"before_audio", "after_audio"};
    int32_t **outs[2] = {before, after};
    int *counts[2] = {n_before, n_after};
    for (int k = 0; k < 2; k++) {
        parts[k] = H5Dopen2(g, names[k], H5P_DEFAULT);
        if (parts[k] < 0) {
            ad_fail("%s: /%s/%s is missing", p->path, name, names[k]);
            goto done;
        }
        hid_t space = H5Dget_space(parts[k]);
        hsize_t dims[1] = {0};
        H5Sget_simple_extent_dims(space, dims, NULL);
        H5Sclose(space);
        *outs[k] = ad_malloc(sizeof(int32_t) * (dims[0] ? dims[0] : 1), "prompt");
        if (!*outs[k]) goto done;
        if (dims[0] &&
            H5Dread(parts[k], H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, *outs[k]) < 0) {
            ad_fail("%s: cannot read /%s/%s", p->path, name, names[k]);
            goto done;
        }
        *counts[k] = (int)dims[0];
    }
    rc = AD_OK;
done:
    for (int k = 0; k < 2; k++)
        if (parts[k] >= 0) H5Dclose(parts[k]);
    H5Gclose(g);
    if (rc < 0) {
        free(*before);
        free(*after);
        *before = *after = NULL;
    }
    return rc;
}

static int read_string_at(const ad_prepared *p, const char *name, int i, char **out) {
    *out = NULL;
    AD_TRY(check_index(p, i));
    if (H5Lexists(p->file, name, H5P_DEFAULT) <= 0)
        return ad_fail("%s: /%s is missing", p->path, name);
    hid_t ds = H5Dopen2(p->file, name, H5P_DEFAULT);
    if (ds < 0) return ad_fail("%s: cannot open /%s", p->path, name);
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, H5T_VARIABLE);
    H5Tset_cset(type, H5T_CSET_UTF8);
    hid_t fspace = H5Dget_space(ds);
    hsize_t offset[1] = {(hsize_t)i}, count[1] = {1};
    hid_t mspace = H5Screate_simple(1, count, NULL);
    char *value = NULL;
    int rc = H5Sselect_hyperslab(fspace, H5S_SELECT_SET, offset, NULL, count, NULL) >= 0 &&
                     H5Dread(ds, type, mspace, fspace, H5P_DEFAULT, &value) >= 0
                 ? AD_OK
                 : AD_ERR;
    if (rc == AD_OK) {
        *out = ad_strdup(value ? value : "", "text");
        if (!*out) rc = AD_ERR;
        if (value) H5Dvlen_reclaim(type, mspace, H5P_DEFAULT, &value);
    } else {
        ad_fail("%s: cannot read /%s[%d]", p->path, name, i);
    }
    H5Sclose(mspace);
    H5Sclose(fspace);
    H5Tclose(type);
    H5Dclose(ds);
    return rc;
}

int ad_prepared_text(const ad_prepared *p, const char *lang, int i, char **text) {
    char name[64];
    snprintf(name, sizeof name, "text/%s", lang);
    if (H5Lexists(p->file, "text", H5P_DEFAULT) <= 0) return ad_fail("%s: no /text group", p->path);
    return read_string_at(p, name, i, text);
}

int ad_prepared_talk(const ad_prepared *p, int i, char **talk) {
    return read_string_at(p, "talk", i, talk);
}
