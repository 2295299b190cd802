#include "io/safetensors.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_EXACT_JSON_INT 9007199254740992.0 /* 2^53: larger counts lose precision in JSON */

static const struct {
    const char *name;
    ad_dtype dtype;
} safetensors_dtypes[] = {
    {"F32", AD_F32}, {"BF16", AD_BF16}, {"F16", AD_F16}, {"I32", AD_I32},
    {"I8", AD_I8},   {"U8", AD_U8},     {"I64", AD_I64},
};

static int parse_st_dtype(const char *s, ad_dtype *out) {
    for (size_t i = 0; i < sizeof safetensors_dtypes / sizeof safetensors_dtypes[0]; i++) {
        if (strcmp(s, safetensors_dtypes[i].name) == 0) {
            *out = safetensors_dtypes[i].dtype;
            return AD_OK;
        }
    }
    return AD_ERR;
}

static int json_u64(const cJSON *item, uint64_t *out) {
    if (!cJSON_IsNumber(item)) return AD_ERR;
    double v = item->valuedouble;
    if (!(v >= 0.0) || v > MAX_EXACT_JSON_INT || floor(v) != v) return AD_ERR;
    *out = (uint64_t)v;
    return AD_OK;
}

void ad_safetensors_free_entries(ad_st_entry *entries, int n) {
    for (int i = 0; i < n; i++)
        free(entries[i].name);
    free(entries);
}

void ad_safetensors_free_metadata(ad_st_metadata *metadata, int n) {
    for (int i = 0; i < n; i++) {
        free(metadata[i].key);
        free(metadata[i].value);
    }
    free(metadata);
}

static int compare_by_begin(const void *a, const void *b) {
    const ad_st_entry *x = *(const ad_st_entry *const *)a, *y = *(const ad_st_entry *const *)b;
    return x->begin < y->begin   ? -1
           : x->begin > y->begin ? 1
                                 : (x->end > y->end) - (x->end < y->end);
}

static int parse_entry(const cJSON *item, const char *file, ad_st_entry *e) {
    const char *name = item->string;
    if (!cJSON_IsObject(item)) return ad_fail("%s: tensor '%s' is not a JSON object", file, name);
    const cJSON *dtype = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *shape = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsString(dtype))
        return ad_fail("%s: tensor '%s' has no string \"dtype\"", file, name);
    if (parse_st_dtype(dtype->valuestring, &e->dtype) < 0)
        return ad_fail("%s: tensor '%s' has unknown dtype '%s' (supported: F32, BF16, F16, I32, "
                       "I8, U8, I64)",
                       file, name, dtype->valuestring);
    if (!cJSON_IsArray(shape)) return ad_fail("%s: tensor '%s' has no \"shape\" array", file, name);
    int ndim = cJSON_GetArraySize(shape);
    if (ndim > AD_MAX_DIMS)
        return ad_fail("%s: tensor '%s' has %d dims, at most %d supported", file, name, ndim,
                       AD_MAX_DIMS);
    e->ndim = ndim;
    double numel = 1.0;
    uint64_t count = 1;
    for (int d = 0; d < ndim; d++) {
        uint64_t v;
        if (json_u64(cJSON_GetArrayItem(shape, d), &v) < 0)
            return ad_fail("%s: tensor '%s' shape[%d] is not a non-negative integer", file, name,
                           d);
        e->shape[d] = (int64_t)v;
        numel *= (double)v;
        count *= v;
    }
    if (numel > MAX_EXACT_JSON_INT)
        return ad_fail("%s: tensor '%s' has an impossible element count", file, name);
    if (!cJSON_IsArray(offsets) || cJSON_GetArraySize(offsets) != 2 ||
        json_u64(cJSON_GetArrayItem(offsets, 0), &e->begin) < 0 ||
        json_u64(cJSON_GetArrayItem(offsets, 1), &e->end) < 0)
        return ad_fail("%s: tensor '%s' needs \"data_offsets\": [begin, end] of non-negative "
                       "integers",
                       file, name);
    if (e->end < e->begin)
        return ad_fail("%s: tensor '%s' data_offsets end %llu < begin %llu", file, name,
                       (unsigned long long)e->end, (unsigned long long)e->begin);
    uint64_t expected = ad_dtype_bytes_for(e->dtype, (int64_t)count);
    if (e->end - e->begin != expected)
        return ad_fail("%s: tensor '%s' byte range is %llu bytes but shape x %s needs %llu", file,
                       name, (unsigned long long)(e->end - e->begin), dtype->valuestring,
                       (unsigned long long)expected);
    return AD_OK;
}

int ad_safetensors_parse_header(const char *header, size_t header_len, uint64_t data_size,
                                const char *file, int shard, ad_st_entry **entries, int *n_entries,
                                ad_st_metadata **metadata, int *n_metadata) {
    cJSON *root = cJSON_ParseWithLength(header, header_len);
    if (!root) return ad_fail("%s: header is not valid JSON", file);
    int rc = AD_ERR;
    int first_new = *n_entries;
    ad_st_entry **order = NULL;
    if (!cJSON_IsObject(root)) {
        ad_fail("%s: header is JSON but not an object", file);
        goto done;
    }
    int n_items = cJSON_GetArraySize(root);
    ad_st_entry *grown = ad_realloc(
        *entries, sizeof(ad_st_entry) * (size_t)(*n_entries + n_items + 1), "safetensors entries");
    if (!grown) goto done;
    *entries = grown;
    for (const cJSON *item = root->child; item; item = item->next) {
        if (strcmp(item->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(item)) {
                ad_fail("%s: __metadata__ is not an object", file);
                goto done;
            }
            if (!metadata) continue;
            for (const cJSON *kv = item->child; kv; kv = kv->next) {
                if (!cJSON_IsString(kv)) {
                    ad_fail("%s: __metadata__ value for '%s' is not a string", file, kv->string);
                    goto done;
                }
                ad_st_metadata *m =
                    ad_realloc(*metadata, sizeof **metadata * (size_t)(*n_metadata + 1),
                               "safetensors metadata");
                if (!m) goto done;
                *metadata = m;
                m[*n_metadata].key = ad_strdup(kv->string, "metadata");
                m[*n_metadata].value = ad_strdup(kv->valuestring, "metadata");
                (*n_metadata)++;
                if (!m[*n_metadata - 1].key || !m[*n_metadata - 1].value) goto done;
            }
            continue;
        }
        ad_st_entry *e = &(*entries)[*n_entries];
        memset(e, 0, sizeof *e);
        e->shard = shard;
        if (parse_entry(item, file, e) < 0) goto done;
        if (e->end > data_size) {
            ad_fail("%s: tensor '%s' byte range [%llu, %llu) ends past the data section (%llu "
                    "bytes): file truncated?",
                    file, item->string, (unsigned long long)e->begin, (unsigned long long)e->end,
                    (unsigned long long)data_size);
            goto done;
        }
        e->name = ad_strdup(item->string, "tensor name");
        if (!e->name) goto done;
        (*n_entries)++;
    }
    /* Overlap check on this file's entries. */
    int n_new = *n_entries - first_new;
    order = ad_malloc(sizeof *order * (size_t)(n_new + 1), "safetensors order");
    if (!order) goto done;
    for (int i = 0; i < n_new; i++)
        order[i] = &(*entries)[first_new + i];
    qsort(order, (size_t)n_new, sizeof *order, compare_by_begin);
    const ad_st_entry *furthest = NULL; /* the non-empty range that ends last so far */
    for (int i = 0; i < n_new; i++) {
        const ad_st_entry *e = order[i];
        if (e->end == e->begin) continue;
        if (furthest && e->begin < furthest->end) {
            ad_fail("%s: tensors '%s' and '%s' have overlapping byte ranges", file, furthest->name,
                    e->name);
            goto done;
        }
        if (!furthest || e->end > furthest->end) furthest = e;
    }
    rc = AD_OK;
done:
    free(order);
    cJSON_Delete(root);
    return rc;
}

static int compare_by_name(const void *a, const void *b) {
    return strcmp(((const ad_st_entry *)a)->name, ((const ad_st_entry *)b)->name);
}

static int open_shard(ad_safetensors *st, const char *path, int shard) {
    ad_mapped_file *m = &st->shards[shard];
    AD_TRY(ad_map_file(path, m));
    if (m->size < 8)
        return ad_fail("%s: %zu bytes, too short for a safetensors file (8-byte header length "
                       "missing)",
                       path, m->size);
    uint64_t header_len = 0;
    for (int i = 7; i >= 0; i--)
        header_len = (header_len << 8) | m->data[i];
    if (header_len > m->size - 8)
        return ad_fail("%s: header length %llu runs past the end of the %zu-byte file "
                       "(truncated or not a safetensors file)",
                       path, (unsigned long long)header_len, m->size);
    if (header_len > AD_SAFETENSORS_MAX_HEADER)
        return ad_fail("%s: header length %llu exceeds the %u-byte limit", path,
                       (unsigned long long)header_len, AD_SAFETENSORS_MAX_HEADER);
    st->data_offset[shard] = 8 + header_len;
    return ad_safetensors_parse_header(
        (const char *)m->data + 8, header_len, m->size - 8 - header_len, path, shard, &st->entries,
        &st->n_entries, shard == 0 ? &st->metadata : NULL, &st->n_metadata);
}

static int alloc_shards(ad_safetensors *st, int n) {
    st->shards = ad_calloc((size_t)n, sizeof *st->shards, "shards");
    st->data_offset = ad_calloc((size_t)n, sizeof *st->data_offset, "shards");
    if (!st->shards || !st->data_offset) return AD_ERR;
    st->n_shards = n;
    return AD_OK;
}

static int open_index(ad_safetensors *st, const char *index_path) {
    char *text = NULL;
    size_t len = 0;
    AD_TRY(ad_read_file(index_path, 64u << 20, &text, &len));
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root) return ad_fail("%s: not valid JSON", index_path);
    int rc = AD_ERR;
    char **files = NULL;
    int n_files = 0;
    char *dir = ad_path_dirname(index_path);
    const cJSON *map = cJSON_GetObjectItemCaseSensitive(root, "weight_map");
    if (!dir) goto done;
    if (!cJSON_IsObject(map)) {
        ad_fail("%s: no \"weight_map\" object", index_path);
        goto done;
    }
    for (const cJSON *kv = map->child; kv; kv = kv->next) {
        if (!cJSON_IsString(kv)) {
            ad_fail("%s: weight_map entry '%s' is not a file name", index_path, kv->string);
            goto done;
        }
        if (strchr(kv->valuestring, '/')) {
            ad_fail("%s: shard name '%s' must be a plain file name", index_path, kv->valuestring);
            goto done;
        }
        int known = 0;
        for (int i = 0; i < n_files; i++)
            known |= strcmp(files[i], kv->valuestring) == 0;
        if (known) continue;
        char **g = ad_realloc(files, sizeof *files * (size_t)(n_files + 1), "shard list");
        if (!g) goto done;
        files = g;
        files[n_files++] = kv->valuestring;
    }
    if (n_files == 0) {
        ad_fail("%s: weight_map is empty", index_path);
        goto done;
    }
    if (alloc_shards(st, n_files) < 0) goto done;
    for (int i = 0; i < n_files; i++) {
        char *path = ad_path_join(dir, files[i]);
        if (!path) goto done;
        if (!ad_path_exists(path)) {
            ad_fail("%s names shard %s, which does not exist", index_path, path);
            free(path);
            goto done;
        }
        int r = open_shard(st, path, i);
        free(path);
        if (r < 0) goto done;
    }
    /* Every tensor the index names must be in the shard it names. */
    for (const cJSON *kv = map->child; kv; kv = kv->next) {
        int found = 0;
        for (int i = 0; i < st->n_entries && !found; i++)
            found = strcmp(st->entries[i].name, kv->string) == 0 &&
                    strcmp(files[st->entries[i].shard], kv->valuestring) == 0;
        if (!found) {
            ad_fail("%s: tensor '%s' is not in shard %s as the index says", index_path, kv->string,
                    kv->valuestring);
            goto done;
        }
    }
    rc = AD_OK;
done:
    free(files);
    free(dir);
    cJSON_Delete(root);
    return rc;
}

static int has_suffix(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

int ad_safetensors_open(ad_safetensors *st, const char *path) {
    memset(st, 0, sizeof *st);
    st->source = ad_strdup(path, "path");
    if (!st->source) return AD_ERR;
    int rc;
    if (ad_is_directory(path)) {
        char *index = ad_path_join(path, "model.safetensors.index.json");
        char *single = ad_path_join(path, "model.safetensors");
        if (!index || !single)
            rc = AD_ERR;
        else if (ad_path_exists(index))
            rc = open_index(st, index);
        else if (ad_path_exists(single))
            rc = alloc_shards(st, 1) < 0 ? AD_ERR : open_shard(st, single, 0);
        else
            rc = ad_fail("%s has neither model.safetensors.index.json nor model.safetensors", path);
        free(index);
        free(single);
    } else if (has_suffix(path, ".json")) {
        rc = open_index(st, path);
    } else {
        rc = alloc_shards(st, 1) < 0 ? AD_ERR : open_shard(st, path, 0);
    }
    if (rc == AD_OK) {
        qsort(st->entries, (size_t)st->n_entries, sizeof *st->entries, compare_by_name);
        for (int i = 1; i < st->n_entries; i++) {
            if (strcmp(st->entries[i].name, st->entries[i - 1].name) == 0) {
                rc = ad_fail("%s: tensor name '%s' appears more than once", path,
                             st->entries[i].name);
                break;
            }
        }
    }
    if (rc < 0) ad_safetensors_close(st);
    return rc;
}

void ad_safetensors_close(ad_safetensors *st) {
    for (int i = 0; i < st->n_shards; i++)
        ad_unmap_file(&st->shards[i]);
    free(st->shards);
    free(st->data_offset);
    ad_safetensors_free_entries(st->entries, st->n_entries);
    ad_safetensors_free_metadata(st->metadata, st->n_metadata);
    free(st->source);
    memset(st, 0, sizeof *st);
}

const ad_st_entry *ad_safetensors_find(const ad_safetensors *st, const char *name) {
    int lo = 0, hi = st->n_entries - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        int c = strcmp(st->entries[mid].name, name);
        if (c == 0) return &st->entries[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return NULL;
}

int ad_safetensors_view(const ad_safetensors *st, const ad_st_entry *e, ad_tensor *out) {
    const ad_mapped_file *m = &st->shards[e->shard];
    void *data = (void *)(m->data + st->data_offset[e->shard] + e->begin);
    return ad_tensor_init(out, data, e->dtype, AD_DEVICE_CPU, e->ndim, e->shape, e->name);
}

int ad_safetensors_read_f32(const ad_safetensors *st, const char *name, int ndim,
                            const int64_t *expected_shape, float *dst) {
    const ad_st_entry *e = ad_safetensors_find(st, name);
    if (!e) return ad_fail("%s: tensor '%s' is missing", st->source, name);
    int same = e->ndim == ndim;
    for (int d = 0; same && d < ndim; d++)
        same = e->shape[d] == expected_shape[d];
    if (!same) {
        char got[160], want[160];
        ad_tensor a, b;
        ad_tensor_init(&a, NULL, e->dtype, AD_DEVICE_CPU, e->ndim, e->shape, name);
        ad_tensor_init(&b, NULL, AD_F32, AD_DEVICE_CPU, ndim, expected_shape, name);
        return ad_fail("%s: tensor %s, expected shape %s", st->source,
                       ad_tensor_describe(&a, got, sizeof got),
                       ad_tensor_describe(&b, want, sizeof want));
    }
    if (e->dtype != AD_F32 && e->dtype != AD_BF16 && e->dtype != AD_F16)
        return ad_fail("%s: tensor '%s' is %s, expected a float dtype (F32, BF16, F16)", st->source,
                       name, ad_dtype_name(e->dtype));
    ad_tensor t;
    AD_TRY(ad_safetensors_view(st, e, &t));
    return ad_tensor_to_f32(&t, dst);
}

const char *ad_safetensors_metadata(const ad_safetensors *st, const char *key) {
    for (int i = 0; i < st->n_metadata; i++)
        if (strcmp(st->metadata[i].key, key) == 0) return st->metadata[i].value;
    return NULL;
}

uint64_t ad_safetensors_file_bytes(const ad_safetensors *st) {
    uint64_t total = 0;
    for (int i = 0; i < st->n_shards; i++)
        total += st->shards[i].size;
    return total;
}

static const char *st_dtype_name(ad_dtype dtype) {
    for (size_t i = 0; i < sizeof safetensors_dtypes / sizeof safetensors_dtypes[0]; i++)
        if (safetensors_dtypes[i].dtype == dtype) return safetensors_dtypes[i].name;
    return NULL;
}

int ad_safetensors_write(const char *path, const ad_st_write_item *items, int n_items,
                         const ad_st_metadata *metadata, int n_metadata) {
    cJSON *root = cJSON_CreateObject();
    if (!root) return ad_fail("out of memory building the safetensors header for %s", path);
    int rc = AD_ERR;
    char *json = NULL;
    uint64_t offset = 0;
    if (n_metadata > 0) {
        cJSON *meta = cJSON_AddObjectToObject(root, "__metadata__");
        for (int i = 0; meta && i < n_metadata; i++)
            if (!cJSON_AddStringToObject(meta, metadata[i].key, metadata[i].value)) meta = NULL;
        if (!meta) {
            ad_fail("out of memory building the safetensors header for %s", path);
            goto done;
        }
    }
    for (int i = 0; i < n_items; i++) {
        const ad_st_write_item *it = &items[i];
        const char *dname = st_dtype_name(it->dtype);
        if (!dname) {
            ad_fail("%s: tensor '%s' has dtype %s, which safetensors cannot store (pack it as U8)",
                    path, it->name, ad_dtype_name(it->dtype));
            goto done;
        }
        if (strcmp(it->name, "__metadata__") == 0 ||
            cJSON_GetObjectItemCaseSensitive(root, it->name)) {
            ad_fail("%s: tensor name '%s' is reserved or used twice", path, it->name);
            goto done;
        }
        int64_t numel = 1;
        for (int d = 0; d < it->ndim; d++)
            numel *= it->shape[d];
        uint64_t bytes = ad_dtype_bytes_for(it->dtype, numel);
        cJSON *e = cJSON_AddObjectToObject(root, it->name);
        cJSON *shape = e ? cJSON_AddArrayToObject(e, "shape") : NULL;
        cJSON *offs = e ? cJSON_AddArrayToObject(e, "data_offsets") : NULL;
        if (!e || !shape || !offs || !cJSON_AddStringToObject(e, "dtype", dname)) {
            ad_fail("out of memory building the safetensors header for %s", path);
            goto done;
        }
        for (int d = 0; d < it->ndim; d++)
            cJSON_AddItemToArray(shape, cJSON_CreateNumber((double)it->shape[d]));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)offset));
        cJSON_AddItemToArray(offs, cJSON_CreateNumber((double)(offset + bytes)));
        offset += bytes;
    }
    json = cJSON_PrintUnformatted(root);
    if (!json) {
        ad_fail("out of memory printing the safetensors header for %s", path);
        goto done;
    }
    size_t len = strlen(json);
    size_t padded = (len + 7) & ~(size_t)7;
    uint8_t len_bytes[8];
    for (int i = 0; i < 8; i++)
        len_bytes[i] = (uint8_t)((uint64_t)padded >> (8 * i));
    ad_atomic_file f;
    if (ad_atomic_open(&f, path) < 0) goto done;
    int w = ad_atomic_write(&f, len_bytes, 8);
    if (w == AD_OK) w = ad_atomic_write(&f, json, len);
    for (size_t i = len; w == AD_OK && i < padded; i++)
        w = ad_atomic_write(&f, " ", 1);
    for (int i = 0; w == AD_OK && i < n_items; i++) {
        int64_t numel = 1;
        for (int d = 0; d < items[i].ndim; d++)
            numel *= items[i].shape[d];
        w = ad_atomic_write(&f, items[i].data, ad_dtype_bytes_for(items[i].dtype, numel));
    }
    if (w < 0) {
        ad_atomic_abort(&f);
        goto done;
    }
    rc = ad_atomic_commit(&f);
done:
    free(json);
    cJSON_Delete(root);
    return rc;
}

int ad_safetensors_write_as(const char *path, const ad_st_write_item *items, int n_items,
                            const ad_st_metadata *metadata, int n_metadata, ad_dtype store) {
    if (store == AD_F32) return ad_safetensors_write(path, items, n_items, metadata, n_metadata);
    if (store != AD_BF16)
        return ad_fail("%s: float tensors can be stored as F32 or BF16 only", path);
    ad_st_write_item *copy = ad_calloc((size_t)n_items + 1, sizeof *copy, "bf16 tensors");
    uint16_t **halves = ad_calloc((size_t)n_items + 1, sizeof *halves, "bf16 tensors");
    int rc = copy && halves ? AD_OK : AD_ERR;
    for (int i = 0; i < n_items && rc == AD_OK; i++) {
        copy[i] = items[i];
        if (items[i].dtype != AD_F32) continue;
        int64_t numel = 1;
        for (int d = 0; d < items[i].ndim; d++)
            numel *= items[i].shape[d];
        if (!(halves[i] = ad_malloc(sizeof **halves * (size_t)numel + 2, items[i].name))) {
            rc = AD_ERR;
            break;
        }
        const float *f = items[i].data;
        for (int64_t k = 0; k < numel; k++)
            halves[i][k] = ad_f32_to_bf16(f[k]);
        copy[i].data = halves[i], copy[i].dtype = AD_BF16;
    }
    if (rc == AD_OK) rc = ad_safetensors_write(path, copy, n_items, metadata, n_metadata);
    for (int i = 0; halves && i < n_items; i++)
        free(halves[i]);
    free(halves), free(copy);
    return rc;
}
