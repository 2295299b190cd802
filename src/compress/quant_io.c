#include "compress/quant_io.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <unistd.h>

#include "core/error.h"
#include "core/log.h"
#include "io/file.h"

void ad_quant_index_free(ad_quant_index *index) {
    for (int i = 0; i < index->n; i++)
        free(index->entries[i].name);
    free(index->entries);
    memset(index, 0, sizeof *index);
}

const ad_quant_entry *ad_quant_index_find(const ad_quant_index *index, const char *name) {
    for (int i = 0; i < index->n; i++)
        if (strcmp(index->entries[i].name, name) == 0) return &index->entries[i];
    return NULL;
}

static int expect_part(const ad_safetensors *st, const char *name, const char *suffix,
                       ad_dtype dtype, int64_t rows, int64_t cols, const ad_st_entry **out) {
    char full[512];
    snprintf(full, sizeof full, "%s.%s", name, suffix);
    const ad_st_entry *e = ad_safetensors_find(st, full);
    if (!e) return ad_fail("%s: quantized tensor %s has no %s", st->source, name, full);
    if (e->dtype != dtype || e->ndim != 2 || e->shape[0] != rows || e->shape[1] != cols)
        return ad_fail("%s: %s must be %s [%lld, %lld]", st->source, full, ad_dtype_name(dtype),
                       (long long)rows, (long long)cols);
    if (out) *out = e;
    return AD_OK;
}

static int parse_entry(const ad_safetensors *st, const cJSON *item, ad_quant_entry *e) {
    const char *src = st->source, *name = item->string;
    const cJSON *bits = cJSON_GetObjectItemCaseSensitive(item, "bits");
    const cJSON *group = cJSON_GetObjectItemCaseSensitive(item, "group_size");
    const cJSON *sym = cJSON_GetObjectItemCaseSensitive(item, "symmetric");
    const cJSON *method = cJSON_GetObjectItemCaseSensitive(item, "method");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    if (!cJSON_IsNumber(bits) || !cJSON_IsNumber(group) || !cJSON_IsBool(sym) ||
        !cJSON_IsArray(shape) || cJSON_GetArraySize(shape) != 2 ||
        !cJSON_IsNumber(cJSON_GetArrayItem(shape, 0)) ||
        !cJSON_IsNumber(cJSON_GetArrayItem(shape, 1)))
        return ad_fail("%s: quantization entry '%s' needs bits, group_size, symmetric and shape "
                       "[rows, cols]",
                       src, name);
    double r = cJSON_GetArrayItem(shape, 0)->valuedouble,
           c = cJSON_GetArrayItem(shape, 1)->valuedouble;
    if (!(r >= 1 && r < 1e9 && c >= 1 && c < 1e9) || bits->valuedouble != (int)bits->valuedouble ||
        !(group->valuedouble >= 1 && group->valuedouble < 1e6))
        return ad_fail("%s: quantization entry '%s' has invalid numbers", src, name);
    e->spec.bits = (int)bits->valuedouble;
    e->spec.group_size = (int)group->valuedouble;
    e->spec.symmetric = cJSON_IsTrue(sym);
    e->rows = (int64_t)r;
    e->cols = (int64_t)c;
    snprintf(e->method, sizeof e->method, "%s",
             cJSON_IsString(method) ? method->valuestring : "rtn");
    AD_TRY(ad_quant_check(&e->spec, e->rows, e->cols, name));
    if (ad_safetensors_find(st, name))
        return ad_fail("%s: %s is stored both quantized and unquantized", src, name);
    const int64_t groups = e->cols / e->spec.group_size;
    AD_TRY(expect_part(st, name, "qcodes", AD_U8, e->rows, ad_quant_row_bytes(&e->spec, e->cols),
                       NULL));
    AD_TRY(expect_part(st, name, "qscales", AD_F16, e->rows, groups, NULL));
    if (!e->spec.symmetric) AD_TRY(expect_part(st, name, "qzeros", AD_U8, e->rows, groups, NULL));
    e->name = ad_strdup(name, "tensor name");
    return e->name ? AD_OK : AD_ERR;
}

int ad_quant_index_load(const ad_safetensors *st, ad_quant_index *index) {
    memset(index, 0, sizeof *index);
    const char *json = ad_safetensors_metadata(st, AD_QUANT_METADATA_KEY);
    if (!json) return AD_OK;
    cJSON *root = cJSON_Parse(json);
    if (!root)
        return ad_fail("%s: metadata %s is not valid JSON", st->source, AD_QUANT_METADATA_KEY);
    int rc = AD_ERR;
    const cJSON *version = cJSON_GetObjectItemCaseSensitive(root, "format_version");
    const cJSON *tensors = cJSON_GetObjectItemCaseSensitive(root, "tensors");
    if (!cJSON_IsNumber(version) || version->valuedouble != AD_QUANT_FORMAT_VERSION) {
        ad_fail("%s: quantization format version %g, this build reads version %d", st->source,
                cJSON_IsNumber(version) ? version->valuedouble : -1.0, AD_QUANT_FORMAT_VERSION);
        goto done;
    }
    if (!cJSON_IsObject(tensors)) {
        ad_fail("%s: %s has no \"tensors\" object", st->source, AD_QUANT_METADATA_KEY);
        goto done;
    }
    int n = cJSON_GetArraySize(tensors);
    index->entries = ad_calloc((size_t)(n ? n : 1), sizeof *index->entries, "quant index");
    if (!index->entries) goto done;
    for (const cJSON *item = tensors->child; item; item = item->next) {
        if (parse_entry(st, item, &index->entries[index->n]) < 0) goto done;
        index->n++;
    }
    rc = AD_OK;
done:
    if (rc < 0) ad_quant_index_free(index);
    cJSON_Delete(root);
    return rc;
}

int ad_quant_view(const ad_safetensors *st, const ad_quant_entry *e, ad_quant_tensor *out) {
    memset(out, 0, sizeof *out);
    out->spec = e->spec;
    out->rows = e->rows;
    out->cols = e->cols;
    const int64_t groups = e->cols / e->spec.group_size;
    const ad_st_entry *codes, *scales, *zeros = NULL;
    AD_TRY(expect_part(st, e->name, "qcodes", AD_U8, e->rows, ad_quant_row_bytes(&e->spec, e->cols),
                       &codes));
    AD_TRY(expect_part(st, e->name, "qscales", AD_F16, e->rows, groups, &scales));
    if (!e->spec.symmetric)
        AD_TRY(expect_part(st, e->name, "qzeros", AD_U8, e->rows, groups, &zeros));
    ad_tensor t;
    AD_TRY(ad_safetensors_view(st, codes, &t));
    out->codes = t.data;
    AD_TRY(ad_safetensors_view(st, scales, &t));
    out->scales = t.data;
    if (zeros) {
        AD_TRY(ad_safetensors_view(st, zeros, &t));
        out->zeros = t.data;
    }
    return AD_OK;
}

char *ad_quant_metadata_json(const ad_quant_entry *entries, int n) {
    cJSON *root = cJSON_CreateObject();
    cJSON *tensors = root ? cJSON_AddObjectToObject(root, "tensors") : NULL;
    if (!tensors || !cJSON_AddNumberToObject(root, "format_version", AD_QUANT_FORMAT_VERSION)) {
        cJSON_Delete(root);
        ad_fail("out of memory building quantization metadata");
        return NULL;
    }
    for (int i = 0; i < n; i++) {
        const ad_quant_entry *e = &entries[i];
        cJSON *t = cJSON_AddObjectToObject(tensors, e->name);
        cJSON *shape = t ? cJSON_AddArrayToObject(t, "shape") : NULL;
        if (!shape) continue;
        cJSON_AddNumberToObject(t, "bits", e->spec.bits);
        cJSON_AddNumberToObject(t, "group_size", e->spec.group_size);
        cJSON_AddBoolToObject(t, "symmetric", e->spec.symmetric);
        cJSON_AddStringToObject(t, "method", e->method);
        cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)e->rows));
        cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)e->cols));
    }
    char *json = cJSON_PrintUnformatted(root);
    cJSON_Delete(root);
    if (!json) ad_fail("out of memory printing quantization metadata");
    return json;
}

int ad_compact_model_write(const ad_compact_weight *w, int n, const char *config_dir,
                           const char *out_dir) {
    if (ad_path_exists(out_dir))
        return ad_fail("%s already exists; remove it or choose another output", out_dir);
    ad_st_write_item *items = ad_calloc((size_t)(3 * n + 1), sizeof *items, "compact model");
    ad_quant_entry *entries = ad_calloc((size_t)n + 1, sizeof *entries, "compact model");
    char **names = ad_calloc((size_t)(3 * n + 1), sizeof *names, "compact model");
    char tmp[4200], path[4400], *meta = NULL;
    int rc = AD_ERR, n_items = 0, n_entries = 0, n_names = 0;
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", out_dir, (long)getpid());
    if (!items || !entries || !names) goto done;
    for (int s = 0; s < n; s++) {
        if (!w[s].q) {
            /* In place: element i's two bytes land where elements < i lived, all read already. */
            int64_t numel = 1;
            for (int d = 0; d < w[s].ndim; d++)
                numel *= w[s].shape[d];
            unsigned char *bytes = (unsigned char *)w[s].values;
            for (int64_t i = 0; i < numel; i++) {
                float v;
                memcpy(&v, bytes + 4 * i, 4);
                const uint16_t b = ad_f32_to_bf16(v);
                memcpy(bytes + 2 * i, &b, 2);
            }
            items[n_items++] = (ad_st_write_item){w[s].name,
                                                  AD_BF16,
                                                  w[s].ndim,
                                                  {w[s].shape[0], w[s].shape[1], w[s].shape[2]},
                                                  w[s].values};
            continue;
        }
        const ad_quant_tensor *q = w[s].q;
        const int64_t groups = q->cols / q->spec.group_size;
        const char *suffix[3] = {"qcodes", "qscales", "qzeros"};
        for (int k = 0; k < (q->spec.symmetric ? 2 : 3); k++) {
            char *nm = ad_malloc(strlen(w[s].name) + 16, "name");
            if (!nm) goto done;
            sprintf(nm, "%s.%s", w[s].name, suffix[k]);
            names[n_names++] = nm;
            if (k == 0)
                items[n_items++] = (ad_st_write_item){
                    nm, AD_U8, 2, {q->rows, ad_quant_row_bytes(&q->spec, q->cols)}, q->codes};
            if (k == 1)
                items[n_items++] = (ad_st_write_item){nm, AD_F16, 2, {q->rows, groups}, q->scales};
            if (k == 2)
                items[n_items++] = (ad_st_write_item){nm, AD_U8, 2, {q->rows, groups}, q->zeros};
        }
        entries[n_entries] = (ad_quant_entry){
            .name = (char *)w[s].name, .spec = q->spec, .rows = q->rows, .cols = q->cols};
        snprintf(entries[n_entries].method, sizeof entries[n_entries].method, "%s",
                 w[s].method ? w[s].method : "rtn");
        n_entries++;
    }
    meta = ad_quant_metadata_json(entries, n_entries);
    if (!meta || ad_mkdir_p(tmp) < 0) goto done;
    ad_st_metadata md[] = {{"format", "pt"}, {AD_QUANT_METADATA_KEY, meta}};
    snprintf(path, sizeof path, "%s/model.safetensors", tmp);
    if (ad_safetensors_write(path, items, n_items, md, 2) < 0) goto done;
    static const char *files[] = {"config.json",
                                  "vocab.json",
                                  "merges.txt",
                                  "tokenizer_config.json",
                                  "preprocessor_config.json",
                                  "generation_config.json"};
    for (size_t i = 0; i < sizeof files / sizeof files[0]; i++)
        if (ad_copy_optional_file(config_dir, tmp, files[i]) < 0) goto done;
    if (ad_fsync_directory(tmp) < 0) goto done;
    if (rename(tmp, out_dir) != 0) {
        ad_fail("cannot rename %s to %s", tmp, out_dir);
        goto done;
    }
    rc = AD_OK;
done:
    if (rc < 0 && ad_path_exists(tmp) && ad_remove_tree(tmp) < 0)
        ad_warn("could not remove %s", tmp);
    for (int i = 0; names && i < n_names; i++)
        free(names[i]);
    free(names), free(items), free(entries), free(meta);
    return rc;
}
