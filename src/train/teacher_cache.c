#include "train/teacher_cache.h"

#include <dirent.h>
#include <fcntl.h>
#include <hdf5.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "core/progress.h"
#include "io/file.h"
#include "io/h5util.h"

#define CHUNK_ELEMENTS 16384 /* per chunk of a [P, k] dataset: 64 KB before compression */
#define TOKEN_CHUNK    4096

const char *ad_cache_source_name(ad_cache_source s) {
    return s == AD_CACHE_TEACHER ? "teacher" : "ref";
}

/* ---- identities ------------------------------------------------------------------------ */

static int cmp_str(const void *a, const void *b) {
    return strcmp(*(char *const *)a, *(char *const *)b);
}

int ad_teacher_identity(const char *dir, uint64_t *hash, double *seconds) {
    const double t0 = ad_now_seconds();
    uint64_t h = AD_FNV1A64_INIT;
    char *config = ad_path_join(dir, "config.json");
    if (!config) return AD_ERR;
    int rc = ad_file_fnv1a64(config, &h, NULL);
    free(config);
    AD_TRY(rc);
    DIR *d = opendir(dir);
    if (!d) return ad_fail("cannot list the model directory %s", dir);
    char **names = NULL;
    int n = 0, cap = 0;
    rc = AD_OK;
    for (struct dirent *e; rc == AD_OK && (e = readdir(d));) {
        size_t len = strlen(e->d_name);
        if (len < 12 || strcmp(e->d_name + len - 12, ".safetensors") != 0) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 8;
            char **g = ad_realloc(names, sizeof *g * (size_t)cap, "weight files");
            if (!g) {
                rc = AD_ERR;
                break;
            }
            names = g;
        }
        if (!(names[n] = ad_strdup(e->d_name, "weight files")))
            rc = AD_ERR;
        else
            n++;
    }
    closedir(d);
    if (rc == AD_OK && n == 0) rc = ad_fail("%s holds no .safetensors weights", dir);
    if (rc == AD_OK) qsort(names, (size_t)n, sizeof *names, cmp_str);
    for (int i = 0; i < n && rc == AD_OK; i++) {
        char *path = ad_path_join(dir, names[i]);
        /* The name goes in too: the same bytes under another shard name are another model. */
        h = ad_fnv1a64(h, names[i], strlen(names[i]) + 1);
        rc = path ? ad_file_fnv1a64(path, &h, NULL) : AD_ERR;
        free(path);
    }
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
    AD_TRY(rc);
    *hash = h;
    if (seconds) *seconds = ad_now_seconds() - t0;
    return AD_OK;
}

int ad_data_identity(const char *path, uint64_t *hash, double *seconds) {
    const double t0 = ad_now_seconds();
    uint64_t h = AD_FNV1A64_INIT;
    AD_TRY(ad_file_fnv1a64(path, &h, NULL));
    *hash = h;
    if (seconds) *seconds = ad_now_seconds() - t0;
    return AD_OK;
}

/* ---- top-k and the dense reconstruction ------------------------------------------------ */

/* a ranks before b: larger value, then smaller id (a total order, so ties are deterministic) */
static bool before(float va, int32_t ia, float vb, int32_t ib) {
    return va > vb || (va == vb && ia < ib);
}

/* Min-heap of the k best so far: the root is the worst kept entry. */
static void sift_down(float *v, int32_t *id, int n, int i) {
    for (;;) {
        int l = 2 * i + 1, r = l + 1, w = i;
        if (l < n && before(v[w], id[w], v[l], id[l])) w = l;
        if (r < n && before(v[w], id[w], v[r], id[r])) w = r;
        if (w == i) return;
        float tv = v[i];
        int32_t ti = id[i];
        v[i] = v[w], id[i] = id[w], v[w] = tv, id[w] = ti;
        i = w;
    }
}

void ad_teacher_topk(const float *logits, int vocab, int k, int32_t *ids, float *logprobs) {
    double max = -INFINITY, sum = 0;
    for (int j = 0; j < vocab; j++)
        if (logits[j] > max) max = logits[j];
    for (int j = 0; j < vocab; j++)
        sum += exp((double)logits[j] - max);
    const double lse = max + log(sum);
    for (int j = 0; j < k; j++)
        logprobs[j] = logits[j], ids[j] = j;
    for (int i = k / 2 - 1; i >= 0; i--)
        sift_down(logprobs, ids, k, i);
    for (int j = k; j < vocab; j++)
        if (before(logits[j], j, logprobs[0], ids[0])) {
            logprobs[0] = logits[j], ids[0] = j;
            sift_down(logprobs, ids, k, 0);
        }
    /* Heap sort: repeatedly move the worst to the end, which leaves the best first. */
    for (int n = k - 1; n > 0; n--) {
        float tv = logprobs[0];
        int32_t ti = ids[0];
        logprobs[0] = logprobs[n], ids[0] = ids[n], logprobs[n] = tv, ids[n] = ti;
        sift_down(logprobs, ids, n, 0);
    }
    for (int j = 0; j < k; j++)
        logprobs[j] = (float)((double)logits[ids[j]] - lse);
}

void ad_teacher_dense_row(const int32_t *ids, const float *logprobs, int k, int vocab, float *row) {
    double kept = 0;
    for (int j = 0; j < k; j++)
        kept += exp((double)logprobs[j]);
    if (k < vocab) {
        double rest = 1.0 - kept;
        if (rest < AD_TEACHER_CACHE_REST_MIN) rest = AD_TEACHER_CACHE_REST_MIN;
        const float fill = (float)log(rest / (double)(vocab - k));
        for (int j = 0; j < vocab; j++)
            row[j] = fill;
    }
    for (int j = 0; j < k; j++)
        row[ids[j]] = logprobs[j];
}

/* ---- writer ---------------------------------------------------------------------------- */

typedef struct {
    hid_t group, ids, lps, tokens;
    int64_t rows, n_tokens;
    int next, next_text;
    int64_t *offset, *token_offset; /* [N + 1] */
    char **texts;
    uint64_t h_ids, h_lps, h_tokens;
} group_writer;

struct ad_teacher_cache_writer {
    char *final_path, *temp_path;
    hid_t file;
    ad_teacher_cache_info info;
    char langs[AD_TEACHER_CACHE_MAX_LANGS][16];
    char teacher_dir[1024], data_path[1024], translations[16];
    group_writer g[AD_CACHE_SOURCES][AD_TEACHER_CACHE_MAX_LANGS];
};

static void close_writer_handles(ad_teacher_cache_writer *w) {
    for (int s = 0; s < AD_CACHE_SOURCES; s++)
        for (int l = 0; l < AD_TEACHER_CACHE_MAX_LANGS; l++) {
            group_writer *g = &w->g[s][l];
            if (g->ids >= 0) H5Dclose(g->ids), g->ids = -1;
            if (g->lps >= 0) H5Dclose(g->lps), g->lps = -1;
            if (g->tokens >= 0) H5Dclose(g->tokens), g->tokens = -1;
            if (g->group >= 0) H5Gclose(g->group), g->group = -1;
        }
    if (w->file >= 0) H5Fclose(w->file), w->file = -1;
}

static void free_writer(ad_teacher_cache_writer *w) {
    for (int s = 0; s < AD_CACHE_SOURCES; s++)
        for (int l = 0; l < AD_TEACHER_CACHE_MAX_LANGS; l++) {
            group_writer *g = &w->g[s][l];
            for (int i = 0; g->texts && i < w->info.n_segments; i++)
                free(g->texts[i]);
            free(g->texts), free(g->offset), free(g->token_offset);
        }
    free(w->final_path), free(w->temp_path);
    free(w);
}

void ad_teacher_cache_abort(ad_teacher_cache_writer *w) {
    if (!w) return;
    close_writer_handles(w);
    if (w->temp_path) unlink(w->temp_path);
    free_writer(w);
}

static bool source_present(const ad_teacher_cache_info *info, int s) {
    return s == AD_CACHE_REF || info->with_teacher_targets;
}

int ad_teacher_cache_create(const char *path, const ad_teacher_cache_info *info,
                            ad_teacher_cache_writer **out) {
    ad_h5_silence();
    *out = NULL;
    if (info->n_langs < 1 || info->n_langs > AD_TEACHER_CACHE_MAX_LANGS)
        return ad_fail("%s: between 1 and %d languages", path, AD_TEACHER_CACHE_MAX_LANGS);
    if (info->top_k < 1 || info->top_k > info->vocab_size)
        return ad_fail("%s: top_k %d is outside 1..%d (the vocabulary)", path, info->top_k,
                       info->vocab_size);
    ad_teacher_cache_writer *w = ad_calloc(1, sizeof *w, "teacher cache writer");
    if (!w) return AD_ERR;
    w->file = -1;
    for (int s = 0; s < AD_CACHE_SOURCES; s++)
        for (int l = 0; l < AD_TEACHER_CACHE_MAX_LANGS; l++)
            w->g[s][l] = (group_writer){.group = -1, .ids = -1, .lps = -1, .tokens = -1};
    w->info = *info;
    for (int l = 0; l < info->n_langs; l++)
        snprintf(w->langs[l], sizeof w->langs[l], "%s", info->langs[l]);
    snprintf(w->teacher_dir, sizeof w->teacher_dir, "%s",
             info->teacher_dir ? info->teacher_dir : "");
    snprintf(w->data_path, sizeof w->data_path, "%s", info->data_path ? info->data_path : "");
    snprintf(w->translations, sizeof w->translations, "%s",
             info->translations ? info->translations : "none");
    w->info.langs = NULL, w->info.teacher_dir = w->teacher_dir, w->info.data_path = w->data_path,
    w->info.translations = w->translations;
    w->file = ad_h5_create_temp(path, &w->final_path, &w->temp_path);
    if (w->file < 0) goto fail;
    const int k = info->top_k;
    hsize_t chunk[2] = {(hsize_t)(CHUNK_ELEMENTS / k > 0 ? CHUNK_ELEMENTS / k : 1), (hsize_t)k};
    for (int s = 0; s < AD_CACHE_SOURCES; s++) {
        if (!source_present(info, s)) continue;
        hid_t top = ad_h5_make_group(w->file, ad_cache_source_name(s));
        if (top < 0) goto fail;
        H5Gclose(top);
        for (int l = 0; l < info->n_langs; l++) {
            group_writer *g = &w->g[s][l];
            char name[64];
            snprintf(name, sizeof name, "%s/%s", ad_cache_source_name(s), w->langs[l]);
            g->group = ad_h5_make_group(w->file, name);
            if (g->group < 0) goto fail;
            g->ids = ad_h5_create_extendable(g->group, "topk_ids", H5T_STD_I32LE, 2, chunk);
            g->lps = ad_h5_create_extendable(g->group, "topk_logprobs", H5T_IEEE_F32LE, 2, chunk);
            g->offset = ad_calloc((size_t)info->n_segments + 1, sizeof *g->offset, "cache index");
            g->h_ids = g->h_lps = g->h_tokens = AD_FNV1A64_INIT;
            if (g->ids < 0 || g->lps < 0 || !g->offset) {
                ad_fail("%s: cannot create the datasets of /%s", w->temp_path, name);
                goto fail;
            }
            if (s == AD_CACHE_TEACHER) {
                hsize_t c[1] = {TOKEN_CHUNK};
                g->tokens = ad_h5_create_extendable(g->group, "tokens", H5T_STD_I32LE, 1, c);
                g->token_offset =
                    ad_calloc((size_t)info->n_segments + 1, sizeof *g->token_offset, "cache index");
                g->texts = ad_calloc((size_t)info->n_segments + 1, sizeof *g->texts, "texts");
                if (g->tokens < 0 || !g->token_offset || !g->texts) {
                    ad_fail("%s: cannot create /%s/tokens", w->temp_path, name);
                    goto fail;
                }
            }
        }
    }
    *out = w;
    return AD_OK;
fail:
    ad_teacher_cache_abort(w);
    return AD_ERR;
}

int ad_teacher_cache_append(ad_teacher_cache_writer *w, ad_cache_source src, int lang, int segment,
                            int64_t rows, const int32_t *ids, const float *logprobs) {
    if (src < 0 || src >= AD_CACHE_SOURCES || !source_present(&w->info, src) || lang < 0 ||
        lang >= w->info.n_langs)
        return ad_fail("teacher cache: no group for source %d, language %d", (int)src, lang);
    group_writer *g = &w->g[src][lang];
    if (segment != g->next || segment >= w->info.n_segments)
        return ad_fail("teacher cache: segment %d of /%s/%s out of order (expected %d)", segment,
                       ad_cache_source_name(src), w->langs[lang], g->next);
    const hsize_t k = (hsize_t)w->info.top_k;
    for (int64_t i = 0; i < rows * (int64_t)k; i++)
        if (ids[i] < 0 || ids[i] >= w->info.vocab_size)
            return ad_fail("teacher cache: id %d outside the vocabulary", ids[i]);
    AD_TRY(ad_h5_append_rows(g->ids, H5T_NATIVE_INT32, g->rows, rows, k, ids, "topk_ids"));
    AD_TRY(
        ad_h5_append_rows(g->lps, H5T_NATIVE_FLOAT, g->rows, rows, k, logprobs, "topk_logprobs"));
    g->h_ids = ad_fnv1a64(g->h_ids, ids, sizeof *ids * (size_t)rows * k);
    g->h_lps = ad_fnv1a64(g->h_lps, logprobs, sizeof *logprobs * (size_t)rows * k);
    g->rows += rows;
    g->offset[++g->next] = g->rows;
    return AD_OK;
}

int ad_teacher_cache_add_translation(ad_teacher_cache_writer *w, int lang, int segment,
                                     const int32_t *tokens, int n, const char *text) {
    if (!w->info.with_teacher_targets || lang < 0 || lang >= w->info.n_langs)
        return ad_fail("teacher cache: no translations for language %d", lang);
    group_writer *g = &w->g[AD_CACHE_TEACHER][lang];
    if (segment != g->next_text || segment >= w->info.n_segments)
        return ad_fail("teacher cache: translation of segment %d out of order (expected %d)",
                       segment, g->next_text);
    AD_TRY(ad_h5_append_rows(g->tokens, H5T_NATIVE_INT32, g->n_tokens, n, 0, tokens, "tokens"));
    g->h_tokens = ad_fnv1a64(g->h_tokens, tokens, sizeof *tokens * (size_t)n);
    g->n_tokens += n;
    g->token_offset[segment + 1] = g->n_tokens;
    if (!(g->texts[segment] = ad_strdup(text ? text : "", "translation"))) return AD_ERR;
    g->next_text++;
    return AD_OK;
}

static int write_hex_attr(hid_t loc, const char *name, uint64_t v) {
    char hex[20];
    snprintf(hex, sizeof hex, "%016" PRIx64, v);
    return ad_h5_write_string_attr(loc, name, hex);
}

int ad_teacher_cache_finish(ad_teacher_cache_writer *w) {
    const ad_teacher_cache_info *in = &w->info;
    char langs[128] = "";
    for (int l = 0; l < in->n_langs; l++)
        snprintf(langs + strlen(langs), sizeof langs - strlen(langs), "%s%s", l ? "," : "",
                 w->langs[l]);
    for (int s = 0; s < AD_CACHE_SOURCES; s++) {
        if (!source_present(in, s)) continue;
        for (int l = 0; l < in->n_langs; l++) {
            group_writer *g = &w->g[s][l];
            if (g->next != in->n_segments ||
                (s == AD_CACHE_TEACHER && g->next_text != in->n_segments)) {
                ad_fail("teacher cache: /%s/%s holds %d of %d segments", ad_cache_source_name(s),
                        w->langs[l], g->next, in->n_segments);
                goto fail;
            }
            if (ad_h5_write_array(g->group, "offset", H5T_STD_I64LE, H5T_NATIVE_INT64,
                                  in->n_segments + 1, g->offset) < 0 ||
                write_hex_attr(g->group, "checksum_ids", g->h_ids) < 0 ||
                write_hex_attr(g->group, "checksum_logprobs", g->h_lps) < 0)
                goto fail;
            if (s == AD_CACHE_TEACHER &&
                (ad_h5_write_array(g->group, "token_offset", H5T_STD_I64LE, H5T_NATIVE_INT64,
                                   in->n_segments + 1, g->token_offset) < 0 ||
                 ad_h5_write_strings(g->group, "text", g->texts, in->n_segments) < 0 ||
                 write_hex_attr(g->group, "checksum_tokens", g->h_tokens) < 0))
                goto fail;
        }
    }
    if (ad_h5_write_string_attr(w->file, "format", AD_TEACHER_CACHE_FORMAT) < 0 ||
        ad_h5_write_int_attr(w->file, "version", AD_TEACHER_CACHE_VERSION) < 0 ||
        ad_h5_write_int_attr(w->file, "top_k", in->top_k) < 0 ||
        ad_h5_write_int_attr(w->file, "vocab_size", in->vocab_size) < 0 ||
        ad_h5_write_int_attr(w->file, "segments", in->n_segments) < 0 ||
        ad_h5_write_int_attr(w->file, "max_frames", in->max_frames) < 0 ||
        ad_h5_write_string_attr(w->file, "langs", langs) < 0 ||
        ad_h5_write_string_attr(w->file, "sources",
                                in->with_teacher_targets ? "ref,teacher" : "ref") < 0 ||
        write_hex_attr(w->file, "teacher", in->teacher_hash) < 0 ||
        ad_h5_write_string_attr(w->file, "teacher_dir", in->teacher_dir) < 0 ||
        write_hex_attr(w->file, "data", in->data_hash) < 0 ||
        ad_h5_write_string_attr(w->file, "data_path", in->data_path) < 0 ||
        ad_h5_write_string_attr(w->file, "translations", in->translations) < 0)
        goto fail;
    if (H5Fflush(w->file, H5F_SCOPE_GLOBAL) < 0) {
        ad_fail("HDF5: cannot flush %s", w->temp_path);
        goto fail;
    }
    close_writer_handles(w);
    int rc = ad_commit_file(w->temp_path, w->final_path);
    if (rc < 0) goto fail;
    free_writer(w);
    return rc;
fail:
    ad_teacher_cache_abort(w);
    return AD_ERR;
}

/* ---- reader ---------------------------------------------------------------------------- */

typedef struct {
    bool present;
    int64_t *offset, *token_offset;
    int32_t *ids, *tokens;
    float *lps;
    char **texts;
} group_reader;

struct ad_teacher_cache {
    char *path;
    int k, vocab, max_frames, n_segments, n_langs;
    char langs[AD_TEACHER_CACHE_MAX_LANGS][16];
    uint64_t teacher_hash, data_hash;
    group_reader g[AD_CACHE_SOURCES][AD_TEACHER_CACHE_MAX_LANGS];
};

void ad_teacher_cache_close(ad_teacher_cache *c) {
    if (!c) return;
    for (int s = 0; s < AD_CACHE_SOURCES; s++)
        for (int l = 0; l < AD_TEACHER_CACHE_MAX_LANGS; l++) {
            group_reader *g = &c->g[s][l];
            free(g->offset), free(g->token_offset), free(g->ids), free(g->tokens), free(g->lps);
            for (int i = 0; g->texts && i < c->n_segments; i++)
                free(g->texts[i]);
            free(g->texts);
        }
    free(c->path);
    free(c);
}

static int read_hex_attr(hid_t loc, const char *path, const char *where, const char *name,
                         uint64_t *out) {
    char buf[64], *end = NULL;
    if (ad_h5_read_string_attr(loc, name, buf, sizeof buf) < 0 || !buf[0])
        return ad_fail("%s: attribute %s%s is missing (damaged or not a teacher cache?)", path,
                       where, name);
    *out = strtoull(buf, &end, 16);
    if (strlen(buf) != 16 || *end)
        return ad_fail("%s: attribute %s%s is '%s', expected 16 hex digits", path, where, name,
                       buf);
    return AD_OK;
}

static int read_texts(hid_t g, const char *path, const char *name, int n, char ***out) {
    *out = ad_calloc((size_t)n + 1, sizeof **out, "translations");
    if (!*out) return AD_ERR;
    int rank;
    int64_t dims[2];
    AD_TRY(ad_h5_dims(g, path, name, &rank, dims));
    if (rank != 1 || dims[0] != n)
        return ad_fail("%s: %s has %lld entries, expected %d (truncated or inconsistent cache)",
                       path, name, (long long)dims[0], n);
    if (n == 0) return AD_OK;
    hid_t ds = H5Dopen2(g, "text", H5P_DEFAULT);
    hid_t type = H5Tcopy(H5T_C_S1);
    H5Tset_size(type, H5T_VARIABLE);
    H5Tset_cset(type, H5T_CSET_UTF8);
    char **raw = ad_calloc((size_t)n, sizeof *raw, "translations");
    int rc = ds >= 0 && raw && H5Dread(ds, type, H5S_ALL, H5S_ALL, H5P_DEFAULT, raw) >= 0 ? AD_OK
                                                                                          : AD_ERR;
    if (rc == AD_OK) {
        for (int i = 0; i < n && rc == AD_OK; i++)
            if (!((*out)[i] = ad_strdup(raw[i] ? raw[i] : "", "translation"))) rc = AD_ERR;
        hid_t space = H5Dget_space(ds);
        H5Dvlen_reclaim(type, space, H5P_DEFAULT, raw);
        H5Sclose(space);
    } else {
        ad_fail("%s: cannot read %s (damaged?)", path, name);
    }
    free(raw);
    H5Tclose(type);
    if (ds >= 0) H5Dclose(ds);
    return rc;
}

static int check_offsets(const char *path, const char *name, const int64_t *off, int n,
                         int64_t rows, const char *rows_name) {
    if (off[0] != 0) return ad_fail("%s: %s does not start at 0", path, name);
    for (int i = 0; i < n; i++)
        if (off[i + 1] < off[i])
            return ad_fail("%s: %s decreases at segment %d (damaged cache)", path, name, i);
    if (off[n] != rows)
        return ad_fail("%s: %s ends at %lld but %s has %lld rows (truncated or inconsistent "
                       "cache)",
                       path, name, (long long)off[n], rows_name, (long long)rows);
    return AD_OK;
}

static int read_group(ad_teacher_cache *c, hid_t file, int s, int l) {
    const char *path = c->path;
    group_reader *g = &c->g[s][l];
    char name[64], ds_name[96], ds2[96];
    snprintf(name, sizeof name, "%s/%s", ad_cache_source_name(s), c->langs[l]);
    if (H5Lexists(file, ad_cache_source_name(s), H5P_DEFAULT) <= 0 ||
        H5Lexists(file, name, H5P_DEFAULT) <= 0)
        return ad_fail("%s: group /%s is missing (truncated or inconsistent cache)", path, name);
    hid_t grp = H5Gopen2(file, name, H5P_DEFAULT);
    if (grp < 0) return ad_fail("%s: cannot open /%s (damaged?)", path, name);
    int rc = AD_ERR;
    int rank;
    int64_t dims[2], dims2[2], rows;
    snprintf(ds_name, sizeof ds_name, "/%s/offset", name);
    if (ad_h5_read_1d(grp, path, "offset", H5T_NATIVE_INT64, 8, c->n_segments + 1,
                      (void **)&g->offset, NULL) < 0)
        goto done;
    snprintf(ds_name, sizeof ds_name, "/%s/topk_ids", name);
    snprintf(ds2, sizeof ds2, "/%s/topk_logprobs", name);
    if (ad_h5_dims(grp, path, "topk_ids", &rank, dims) < 0) goto done;
    if (rank != 2 || dims[1] != c->k) {
        ad_fail("%s: %s has %lld columns but the top_k attribute is %d (inconsistent cache)", path,
                ds_name, (long long)(rank == 2 ? dims[1] : 0), c->k);
        goto done;
    }
    if (ad_h5_dims(grp, path, "topk_logprobs", &rank, dims2) < 0) goto done;
    if (rank != 2 || dims2[0] != dims[0] || dims2[1] != dims[1]) {
        ad_fail("%s: %s is [%lld, %lld] but %s is [%lld, %lld] (inconsistent cache)", path, ds2,
                (long long)dims2[0], (long long)dims2[1], ds_name, (long long)dims[0],
                (long long)dims[1]);
        goto done;
    }
    rows = dims[0];
    char off_name[96];
    snprintf(off_name, sizeof off_name, "/%s/offset", name);
    if (check_offsets(path, off_name, g->offset, c->n_segments, rows, ds_name) < 0) goto done;
    size_t count;
    if (ad_mul_overflows((size_t)rows, (size_t)c->k, &count) ||
        count > (size_t)1 << 40) { /* far beyond any prepared set: a damaged shape */
        ad_fail("%s: %s is too large (%lld x %d)", path, ds_name, (long long)rows, c->k);
        goto done;
    }
    g->ids = ad_malloc(sizeof *g->ids * (count ? count : 1), "teacher cache ids");
    g->lps = ad_malloc(sizeof *g->lps * (count ? count : 1), "teacher cache log-probs");
    if (!g->ids || !g->lps) goto done;
    hid_t d1 = H5Dopen2(grp, "topk_ids", H5P_DEFAULT),
          d2 = H5Dopen2(grp, "topk_logprobs", H5P_DEFAULT);
    int r1 = d1 >= 0 ? ad_h5_read_rows(d1, H5T_NATIVE_INT32, 0, rows, (hsize_t)c->k, g->ids, path,
                                       ds_name)
                     : ad_fail("%s: cannot open %s", path, ds_name);
    int r2 = r1 == AD_OK && d2 >= 0
                 ? ad_h5_read_rows(d2, H5T_NATIVE_FLOAT, 0, rows, (hsize_t)c->k, g->lps, path, ds2)
                 : AD_ERR;
    if (r1 == AD_OK && d2 < 0) ad_fail("%s: cannot open %s", path, ds2);
    if (d1 >= 0) H5Dclose(d1);
    if (d2 >= 0) H5Dclose(d2);
    if (r1 < 0 || r2 < 0) goto done;
    uint64_t want_ids, want_lps;
    char where[80];
    snprintf(where, sizeof where, "/%s/", name);
    if (read_hex_attr(grp, path, where, "checksum_ids", &want_ids) < 0 ||
        read_hex_attr(grp, path, where, "checksum_logprobs", &want_lps) < 0)
        goto done;
    if (ad_fnv1a64(AD_FNV1A64_INIT, g->ids, sizeof *g->ids * count) != want_ids ||
        ad_fnv1a64(AD_FNV1A64_INIT, g->lps, sizeof *g->lps * count) != want_lps) {
        ad_fail("%s: the data of /%s does not match its checksum (damaged cache: make it again)",
                path, name);
        goto done;
    }
    for (size_t i = 0; i < count; i++)
        if (g->ids[i] < 0 || g->ids[i] >= c->vocab || !isfinite(g->lps[i]) || g->lps[i] > 1e-3f) {
            ad_fail("%s: %s holds an invalid entry at row %lld (id %d, log-prob %g)", path, ds_name,
                    (long long)(i / (size_t)c->k), g->ids[i], (double)g->lps[i]);
            goto done;
        }
    if (s == AD_CACHE_TEACHER) {
        int64_t n_tokens;
        snprintf(ds_name, sizeof ds_name, "/%s/tokens", name);
        if (ad_h5_read_1d(grp, path, "token_offset", H5T_NATIVE_INT64, 8, c->n_segments + 1,
                          (void **)&g->token_offset, NULL) < 0 ||
            ad_h5_read_1d(grp, path, "tokens", H5T_NATIVE_INT32, 4, -1, (void **)&g->tokens,
                          &n_tokens) < 0)
            goto done;
        snprintf(off_name, sizeof off_name, "/%s/token_offset", name);
        if (check_offsets(path, off_name, g->token_offset, c->n_segments, n_tokens, ds_name) < 0)
            goto done;
        uint64_t want_tok;
        if (read_hex_attr(grp, path, where, "checksum_tokens", &want_tok) < 0) goto done;
        if (ad_fnv1a64(AD_FNV1A64_INIT, g->tokens, sizeof *g->tokens * (size_t)n_tokens) !=
            want_tok) {
            ad_fail("%s: /%s/tokens does not match its checksum (damaged cache)", path, name);
            goto done;
        }
        for (int64_t i = 0; i < n_tokens; i++)
            if (g->tokens[i] < 0 || g->tokens[i] >= c->vocab) {
                ad_fail("%s: %s[%lld] = %d is outside the vocabulary", path, ds_name, (long long)i,
                        g->tokens[i]);
                goto done;
            }
        /* Every target token is one supervised position: the two indices must agree. */
        for (int i = 1; i <= c->n_segments; i++)
            if (g->token_offset[i] != g->offset[i]) {
                ad_fail("%s: /%s: segment %d has %lld translation tokens but %lld cached "
                        "positions (inconsistent cache)",
                        path, name, i - 1, (long long)(g->token_offset[i] - g->token_offset[i - 1]),
                        (long long)(g->offset[i] - g->offset[i - 1]));
                goto done;
            }
        snprintf(ds_name, sizeof ds_name, "/%s/text", name);
        if (read_texts(grp, path, ds_name, c->n_segments, &g->texts) < 0) goto done;
    }
    g->present = true;
    rc = AD_OK;
done:
    H5Gclose(grp);
    return rc;
}

int ad_teacher_cache_open(const char *path, ad_teacher_cache **out) {
    ad_h5_silence();
    *out = NULL;
    if (!ad_path_exists(path))
        return ad_fail("teacher cache %s does not exist (run audistill teacher-cache)", path);
    if (H5Fis_hdf5(path) <= 0)
        return ad_fail("teacher cache %s is not a readable HDF5 file (truncated or damaged?)",
                       path);
    hid_t file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (file < 0)
        return ad_fail("teacher cache %s cannot be opened as HDF5 (truncated or damaged?)", path);
    ad_teacher_cache *c = ad_calloc(1, sizeof *c, "teacher cache");
    int rc = AD_ERR;
    if (!c || !(c->path = ad_strdup(path, "path"))) goto done;
    char buf[256];
    ad_h5_read_string_attr(file, "format", buf, sizeof buf);
    if (strcmp(buf, AD_TEACHER_CACHE_FORMAT) != 0) {
        ad_fail("%s is not an audistill teacher cache (format attribute '%s')", path, buf);
        goto done;
    }
    int64_t version, k, vocab, segments, frames;
    if (ad_h5_read_int_attr(file, path, "version", &version) < 0) goto done;
    if (version != AD_TEACHER_CACHE_VERSION) {
        ad_fail("%s: teacher-cache version %lld, this build reads version %d (make it again)", path,
                (long long)version, AD_TEACHER_CACHE_VERSION);
        goto done;
    }
    if (ad_h5_read_int_attr(file, path, "top_k", &k) < 0 ||
        ad_h5_read_int_attr(file, path, "vocab_size", &vocab) < 0 ||
        ad_h5_read_int_attr(file, path, "segments", &segments) < 0 ||
        ad_h5_read_int_attr(file, path, "max_frames", &frames) < 0 ||
        read_hex_attr(file, path, "", "teacher", &c->teacher_hash) < 0 ||
        read_hex_attr(file, path, "", "data", &c->data_hash) < 0)
        goto done;
    if (vocab < 1 || vocab > (1 << 30) || k < 1 || k > vocab || segments < 0 ||
        segments > (1 << 30) || frames < 1) {
        ad_fail("%s: attributes out of range (top_k %lld, vocab_size %lld, segments %lld, "
                "max_frames %lld)",
                path, (long long)k, (long long)vocab, (long long)segments, (long long)frames);
        goto done;
    }
    c->k = (int)k, c->vocab = (int)vocab, c->n_segments = (int)segments,
    c->max_frames = (int)frames;
    if (ad_h5_read_string_attr(file, "langs", buf, sizeof buf) < 0 || !buf[0]) {
        ad_fail("%s: attribute 'langs' is missing", path);
        goto done;
    }
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (c->n_langs == AD_TEACHER_CACHE_MAX_LANGS || strlen(t) >= sizeof c->langs[0]) {
            ad_fail("%s: attribute 'langs' is malformed", path);
            goto done;
        }
        snprintf(c->langs[c->n_langs++], sizeof c->langs[0], "%s", t);
    }
    if (ad_h5_read_string_attr(file, "sources", buf, sizeof buf) < 0 ||
        (strcmp(buf, "ref") != 0 && strcmp(buf, "ref,teacher") != 0)) {
        ad_fail("%s: attribute 'sources' is '%s', expected ref or ref,teacher", path, buf);
        goto done;
    }
    const int n_sources = strcmp(buf, "ref") ? 2 : 1;
    for (int s = 0; s < n_sources; s++)
        for (int l = 0; l < c->n_langs; l++)
            if (read_group(c, file, s, l) < 0) goto done;
    rc = AD_OK;
done:
    H5Fclose(file);
    if (rc < 0) {
        ad_teacher_cache_close(c);
        return AD_ERR;
    }
    *out = c;
    return AD_OK;
}

const char *ad_teacher_cache_path(const ad_teacher_cache *c) {
    return c->path;
}
int ad_teacher_cache_top_k(const ad_teacher_cache *c) {
    return c->k;
}
int ad_teacher_cache_vocab(const ad_teacher_cache *c) {
    return c->vocab;
}
int ad_teacher_cache_max_frames(const ad_teacher_cache *c) {
    return c->max_frames;
}
int ad_teacher_cache_segments(const ad_teacher_cache *c) {
    return c->n_segments;
}
uint64_t ad_teacher_cache_teacher_hash(const ad_teacher_cache *c) {
    return c->teacher_hash;
}
uint64_t ad_teacher_cache_data_hash(const ad_teacher_cache *c) {
    return c->data_hash;
}

int ad_teacher_cache_lang(const ad_teacher_cache *c, ad_cache_source src, const char *lang) {
    if (src < 0 || src >= AD_CACHE_SOURCES) return -1;
    for (int l = 0; l < c->n_langs; l++)
        if (!strcmp(c->langs[l], lang) && c->g[src][l].present) return l;
    return -1;
}

static const group_reader *group_at(const ad_teacher_cache *c, ad_cache_source src, int lang,
                                    int segment) {
    if (src < 0 || src >= AD_CACHE_SOURCES || lang < 0 || lang >= c->n_langs || segment < 0 ||
        segment >= c->n_segments || !c->g[src][lang].present)
        return NULL;
    return &c->g[src][lang];
}

int64_t ad_teacher_cache_count(const ad_teacher_cache *c, ad_cache_source src, int lang,
                               int segment) {
    const group_reader *g = group_at(c, src, lang, segment);
    return g ? g->offset[segment + 1] - g->offset[segment] : -1;
}

int ad_teacher_cache_read(const ad_teacher_cache *c, ad_cache_source src, int lang, int segment,
                          int32_t *ids, float *logprobs) {
    const group_reader *g = group_at(c, src, lang, segment);
    if (!g)
        return ad_fail("%s: no cached %s positions for language %d, segment %d", c->path,
                       ad_cache_source_name(src), lang, segment);
    const size_t first = (size_t)g->offset[segment] * (size_t)c->k,
                 n = (size_t)(g->offset[segment + 1] - g->offset[segment]) * (size_t)c->k;
    memcpy(ids, g->ids + first, sizeof *ids * n);
    memcpy(logprobs, g->lps + first, sizeof *logprobs * n);
    return AD_OK;
}

int ad_teacher_cache_translations(const ad_teacher_cache *c, int lang, const int64_t **offset,
                                  const int32_t **tokens) {
    const group_reader *g = group_at(c, AD_CACHE_TEACHER, lang, 0);
    if (!g && c->n_segments > 0)
        return ad_fail("%s holds no teacher translations for language %d (make the cache with "
                       "translations: greedy or beam)",
                       c->path, lang);
    if (!g) return ad_fail("%s holds no segments", c->path);
    *offset = g->token_offset;
    *tokens = g->tokens;
    return AD_OK;
}

int ad_teacher_cache_text(const ad_teacher_cache *c, int lang, int segment, char **text) {
    const group_reader *g = group_at(c, AD_CACHE_TEACHER, lang, segment);
    if (!g) return ad_fail("%s: no teacher translation for segment %d", c->path, segment);
    *text = ad_strdup(g->texts[segment], "translation");
    return *text ? AD_OK : AD_ERR;
}
