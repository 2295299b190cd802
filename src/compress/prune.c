#include "compress/prune.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "core/error.h"
#include "core/log.h"
#include "io/file.h"
#include "io/safetensors.h"
#include "model/weights.h"
#include "text/bpe.h"

/* ---- choosing ------------------------------------------------------------------------------ */

static int keep_alloc(ad_keep *k, int n) {
    k->n = n;
    k->index = ad_calloc((size_t)(n ? n : 1), sizeof(int), "prune plan");
    return k->index ? AD_OK : AD_ERR;
}

static int keep_all(ad_keep *k, int n) {
    AD_TRY(keep_alloc(k, n));
    for (int i = 0; i < n; i++)
        k->index[i] = i;
    return AD_OK;
}

static const double *sort_scores;
static int by_score_desc(const void *a, const void *b) {
    int x = *(const int *)a, y = *(const int *)b;
    if (sort_scores[x] != sort_scores[y]) return sort_scores[x] < sort_scores[y] ? 1 : -1;
    return x - y; /* ties: the earlier index wins, deterministically */
}
static int by_index(const void *a, const void *b) {
    return *(const int *)a - *(const int *)b;
}

/* The `want` highest-scoring of n items, in ascending index order. */
static int keep_top(ad_keep *k, const double *scores, int n, int want) {
    int *order = ad_malloc(sizeof(int) * (size_t)(n ? n : 1), "prune order");
    if (!order) return AD_ERR;
    for (int i = 0; i < n; i++)
        order[i] = i;
    sort_scores = scores;
    qsort(order, (size_t)n, sizeof(int), by_score_desc);
    qsort(order, (size_t)want, sizeof(int), by_index);
    k->n = want;
    k->index = order;
    return AD_OK;
}

static int need_scores(const ad_importance *imp, const char *what) {
    if (!imp) return ad_fail("prune: %s needs importance scores from calibration data", what);
    return AD_OK;
}

static int choose_layers(ad_keep *k, int have, int64_t target, const ad_int_list *drop,
                         const double *influence, const ad_importance *imp, const char *what) {
    if (drop->count) {
        AD_TRY(keep_alloc(k, have - drop->count));
        int n = 0;
        for (int i = 0; i < have; i++) {
            int dropped = 0;
            for (int j = 0; j < drop->count; j++)
                dropped |= drop->values[j] == i;
            if (!dropped) k->index[n++] = i;
        }
        return AD_OK;
    }
    if (!target || target == have) return keep_all(k, have);
    AD_TRY(need_scores(imp, what));
    /* Block influence: the layers that change their input least go first. */
    return keep_top(k, influence, have, (int)target);
}

int ad_prune_plan_make(const ad_model_config *t, const ad_prune_recipe *r, const ad_importance *imp,
                       const int32_t *vocab_keep, int n_vocab_keep, ad_prune_plan *p) {
    memset(p, 0, sizeof *p);
    p->teacher = *t;
    int rc = AD_ERR;
    if (ad_prune_apply_shapes(t, r, &p->student) < 0) goto done;
    if (choose_layers(&p->dec_layers, t->num_hidden_layers, r->decoder_layers,
                      &r->drop_decoder_layers, imp ? imp->dec_influence : NULL, imp,
                      "decoder_layers") < 0 ||
        choose_layers(&p->enc_layers, t->encoder_layers, r->encoder_layers, &r->drop_encoder_layers,
                      imp ? imp->enc_influence : NULL, imp, "encoder_layers") < 0)
        goto done;
    for (int i = 0; i < p->dec_layers.n; i++) {
        const int L = p->dec_layers.index[i];
        const ad_decoder_layer_shape *ts = &t->decoder_layer[L];
        ad_decoder_layer_shape *ss = &p->student.decoder_layer[i];
        const int group = ts->num_attention_heads / ts->num_key_value_heads;
        const int groups_kept = ss->num_attention_heads / group;
        if (groups_kept == ts->num_key_value_heads) {
            if (keep_all(&p->dec_kv[i], ts->num_key_value_heads) < 0) goto done;
        } else {
            if (need_scores(imp, "decoder_heads") < 0) goto done;
            /* Heads go in whole key/value groups so the grouping stays intact. */
            double score[1024] = {0};
            for (int h = 0; h < ts->num_attention_heads; h++)
                score[h / group] += imp->dec_head[L][h];
            if (keep_top(&p->dec_kv[i], score, ts->num_key_value_heads, groups_kept) < 0) goto done;
        }
        if (keep_alloc(&p->dec_heads[i], groups_kept * group) < 0) goto done;
        for (int gk = 0; gk < groups_kept; gk++)
            for (int j = 0; j < group; j++)
                p->dec_heads[i].index[gk * group + j] = p->dec_kv[i].index[gk] * group + j;
        if (ss->intermediate_size == ts->intermediate_size) {
            if (keep_all(&p->dec_ffn[i], ts->intermediate_size) < 0) goto done;
        } else if (need_scores(imp, "decoder_ffn") < 0 ||
                   keep_top(&p->dec_ffn[i], imp->dec_ffn[L], ts->intermediate_size,
                            ss->intermediate_size) < 0) {
            goto done;
        }
    }
    for (int i = 0; i < p->enc_layers.n; i++) {
        const int E = p->enc_layers.index[i];
        const ad_encoder_layer_shape *ts = &t->encoder_layer[E];
        ad_encoder_layer_shape *ss = &p->student.encoder_layer[i];
        if (ss->num_attention_heads == ts->num_attention_heads) {
            if (keep_all(&p->enc_heads[i], ts->num_attention_heads) < 0) goto done;
        } else if (need_scores(imp, "encoder_heads") < 0 ||
                   keep_top(&p->enc_heads[i], imp->enc_head[E], ts->num_attention_heads,
                            ss->num_attention_heads) < 0) {
            goto done;
        }
        if (ss->ffn_dim == ts->ffn_dim) {
            if (keep_all(&p->enc_ffn[i], ts->ffn_dim) < 0) goto done;
        } else if (need_scores(imp, "encoder_ffn") < 0 ||
                   keep_top(&p->enc_ffn[i], imp->enc_ffn[E], ts->ffn_dim, ss->ffn_dim) < 0) {
            goto done;
        }
    }
    if (p->student.hidden_size == t->hidden_size) {
        if (keep_all(&p->hidden, t->hidden_size) < 0) goto done;
    } else if (need_scores(imp, "hidden") < 0 ||
               keep_top(&p->hidden, imp->hidden, t->hidden_size, p->student.hidden_size) < 0) {
        goto done;
    }
    if (vocab_keep) {
        if (r->vocab && r->vocab < n_vocab_keep) {
            ad_fail("prune: vocab %lld is smaller than the %d tokens the data, the prompt, the "
                    "special tokens and the single bytes need",
                    (long long)r->vocab, n_vocab_keep);
            goto done;
        }
        if (keep_alloc(&p->vocab, n_vocab_keep) < 0) goto done;
        memcpy(p->vocab.index, vocab_keep, sizeof(int) * (size_t)n_vocab_keep);
    } else if (r->vocab && r->vocab != t->vocab_size) {
        ad_fail("prune: vocab trimming needs the set of used tokens (calibration data)");
        goto done;
    } else if (keep_all(&p->vocab, t->vocab_size) < 0) {
        goto done;
    }
    /* The student's config: kept vocabulary renumbers the special ids. */
    p->student.vocab_size = p->vocab.n;
    int *ids[] = {&p->student.audio_token_index, &p->student.bos_token_id, &p->student.eos_token_id,
                  &p->student.pad_token_id};
    for (int k = 0; k < 4; k++) {
        if (*ids[k] < 0) continue;
        int found = -1;
        for (int i = 0; i < p->vocab.n && found < 0; i++)
            if (p->vocab.index[i] == *ids[k]) found = i;
        if (found < 0 && k == 0) {
            ad_fail("prune: the kept vocabulary lacks the audio token %d", *ids[k]);
            goto done;
        }
        *ids[k] = found;
    }
    rc = AD_OK;
done:
    if (rc < 0) ad_prune_plan_free(p);
    return rc;
}

void ad_prune_plan_free(ad_prune_plan *p) {
    ad_keep *all[] = {&p->dec_layers, &p->enc_layers, &p->hidden, &p->vocab};
    for (int i = 0; i < 4; i++)
        free(all[i]->index);
    for (int l = 0; l < AD_MAX_LAYERS; l++) {
        free(p->dec_heads[l].index), free(p->dec_kv[l].index), free(p->dec_ffn[l].index);
        free(p->enc_heads[l].index), free(p->enc_ffn[l].index);
    }
    memset(p, 0, sizeof *p);
}

/* ---- applying ------------------------------------------------------------------------------ */

/* Rows of a head selection: head h covers rows h*dim .. h*dim+dim-1. */
static int expand_heads(const ad_keep *heads, int dim, ad_keep *rows) {
    AD_TRY(keep_alloc(rows, heads->n * dim));
    for (int i = 0; i < heads->n; i++)
        for (int d = 0; d < dim; d++)
            rows->index[i * dim + d] = heads->index[i] * dim + d;
    return AD_OK;
}

typedef struct {
    char teacher_name[AD_WEIGHT_NAME_MAX];
    const ad_keep *rows, *cols; /* NULL = all */
} source;

/* Where student tensor `name` comes from. Temporary keeps live in `tmp` (freed by caller). */
static int source_of(const ad_prune_plan *p, const char *name, source *s, ad_keep tmp[2]) {
    int layer, used = 0;
    s->rows = s->cols = NULL;
    const ad_keep *hid = &p->hidden;
    if (sscanf(name, "language_model.model.layers.%d.%n", &layer, &used) == 1 && used) {
        const char *rest = name + used;
        snprintf(s->teacher_name, sizeof s->teacher_name, "language_model.model.layers.%d.%s",
                 p->dec_layers.index[layer], rest);
        const int hd = p->teacher.head_dim;
        if (!strncmp(rest, "self_attn.q_proj", 16) || !strncmp(rest, "self_attn.k_proj", 16) ||
            !strncmp(rest, "self_attn.v_proj", 16)) {
            AD_TRY(expand_heads(rest[10] == 'q' ? &p->dec_heads[layer] : &p->dec_kv[layer], hd,
                                &tmp[0]));
            s->rows = &tmp[0];
            if (strstr(rest, "weight")) s->cols = hid;
        } else if (!strncmp(rest, "self_attn.o_proj", 16)) {
            AD_TRY(expand_heads(&p->dec_heads[layer], hd, &tmp[0]));
            s->rows = hid, s->cols = &tmp[0];
        } else if (!strncmp(rest, "mlp.gate_proj", 13) || !strncmp(rest, "mlp.up_proj", 11)) {
            s->rows = &p->dec_ffn[layer], s->cols = hid;
        } else if (!strncmp(rest, "mlp.down_proj", 13)) {
            s->rows = hid, s->cols = &p->dec_ffn[layer];
        } else {
            s->rows = hid; /* the two RMSNorm weights */
        }
        return AD_OK;
    }
    if (sscanf(name, "audio_tower.layers.%d.%n", &layer, &used) == 1 && used) {
        const char *rest = name + used;
        snprintf(s->teacher_name, sizeof s->teacher_name, "audio_tower.layers.%d.%s",
                 p->enc_layers.index[layer], rest);
        const int hd = p->teacher.encoder_head_dim;
        if (!strncmp(rest, "self_attn.q_proj", 16) || !strncmp(rest, "self_attn.k_proj", 16) ||
            !strncmp(rest, "self_attn.v_proj", 16)) {
            AD_TRY(expand_heads(&p->enc_heads[layer], hd, &tmp[0]));
            s->rows = &tmp[0];
        } else if (!strncmp(rest, "self_attn.out_proj.weight", 25)) {
            AD_TRY(expand_heads(&p->enc_heads[layer], hd, &tmp[0]));
            s->cols = &tmp[0];
        } else if (!strncmp(rest, "fc1", 3)) {
            s->rows = &p->enc_ffn[layer];
        } else if (!strncmp(rest, "fc2.weight", 10)) {
            s->cols = &p->enc_ffn[layer];
        }
        return AD_OK;
    }
    snprintf(s->teacher_name, sizeof s->teacher_name, "%s", name);
    if (!strcmp(name, "multi_modal_projector.linear.weight") ||
        !strcmp(name, "multi_modal_projector.linear.bias") ||
        !strcmp(name, "language_model.model.norm.weight"))
        s->rows = hid;
    else if (!strcmp(name, "language_model.model.embed_tokens.weight") ||
             !strcmp(name, "language_model.lm_head.weight"))
        s->rows = &p->vocab, s->cols = hid;
    return AD_OK;
}

static int gather(ad_backend *be, const ad_tensor *src, const ad_weight_spec *spec, const source *s,
                  float **out) {
    const int64_t src_rows = src->shape[0],
                  src_cols = src->ndim > 1 ? ad_tensor_numel(src) / src->shape[0] : 1;
    float *host = ad_malloc(sizeof(float) * (size_t)ad_tensor_numel(src), spec->name);
    float *dst = ad_malloc(sizeof(float) * (size_t)ad_weight_spec_numel(spec) + 1, spec->name);
    if (!host || !dst) {
        free(host), free(dst);
        return AD_ERR;
    }
    ad_tensor h;
    ad_tensor_init(&h, host, AD_F32, AD_DEVICE_CPU, src->ndim, src->shape, spec->name);
    if (be->download(be, &h, src) < 0) {
        free(host), free(dst);
        return AD_ERR;
    }
    const int64_t rows = spec->shape[0], cols = ad_weight_spec_numel(spec) / rows;
    /* Convolution weights [C_out, C_in, K] keep every input channel: a row is C_in*K values. */
    for (int64_t r = 0; r < rows; r++) {
        const int64_t sr = s->rows ? s->rows->index[r] : r;
        for (int64_t c = 0; c < cols; c++) {
            const int64_t sc = s->cols ? s->cols->index[c] : c;
            if (sr >= src_rows || sc >= src_cols) {
                free(host), free(dst);
                return ad_fail("internal: %s index (%lld, %lld) outside the teacher's [%lld, %lld]",
                               spec->name, (long long)sr, (long long)sc, (long long)src_rows,
                               (long long)src_cols);
            }
            dst[r * cols + c] = host[sr * src_cols + sc];
        }
    }
    free(host);
    *out = dst;
    return AD_OK;
}

/* merges.txt resolved to ids through the teacher's tokenizer (hash lookups: a linear search
 * per merge would be quadratic at Qwen2's 151k merges). A comment or unparsable line gets
 * ids -1. */
typedef struct {
    char **lines;
    int n;
    int32_t *a, *b, *ab;
} merge_table;

static void merge_table_free(merge_table *m) {
    ad_free_lines(m->lines, m->n);
    free(m->a), free(m->b), free(m->ab);
    memset(m, 0, sizeof *m);
}

static int merge_table_load(const char *teacher_dir, merge_table *m) {
    memset(m, 0, sizeof *m);
    ad_tokenizer *tok = NULL;
    char *mpath = ad_path_join(teacher_dir, "merges.txt");
    int rc = AD_ERR;
    if (!mpath || ad_read_lines(mpath, &m->lines, &m->n) < 0 ||
        ad_tokenizer_load(teacher_dir, 0, &tok) < 0)
        goto done;
    size_t n = (size_t)(m->n ? m->n : 1);
    m->a = ad_malloc(sizeof(int32_t) * n, "merges");
    m->b = ad_malloc(sizeof(int32_t) * n, "merges");
    m->ab = ad_malloc(sizeof(int32_t) * n, "merges");
    if (!m->a || !m->b || !m->ab) goto done;
    for (int i = 0; i < m->n; i++) {
        const char *line = m->lines[i], *sp = strchr(line, ' ');
        m->a[i] = m->b[i] = m->ab[i] = -1;
        if (line[0] == '#' || !sp || sp - line >= 512 || strlen(sp + 1) >= 512) continue;
        char a[512], b[512], ab[1024];
        snprintf(a, sizeof a, "%.*s", (int)(sp - line), line);
        snprintf(b, sizeof b, "%s", sp + 1);
        snprintf(ab, sizeof ab, "%s%s", a, b);
        m->a[i] = ad_tokenizer_token_id(tok, a);
        m->b[i] = ad_tokenizer_token_id(tok, b);
        m->ab[i] = ad_tokenizer_token_id(tok, ab);
    }
    rc = AD_OK;
done:
    if (rc < 0) merge_table_free(m);
    ad_tokenizer_free(tok);
    free(mpath);
    return rc;
}

/* vocab.json / merges.txt / tokenizer_config.json restricted to the kept ids, renumbered. */
int ad_vocab_write_tokenizer(const char *teacher_dir, const char *out_dir, int vocab_size,
                             const int32_t *keep_ids, int n_keep) {
    char *vpath = ad_path_join(teacher_dir, "vocab.json"), *text = NULL;
    size_t len;
    int rc = AD_ERR;
    cJSON *vocab = NULL, *out = NULL, *tc = NULL;
    int32_t *new_id = NULL;
    if (!vpath || ad_read_file(vpath, 64u << 20, &text, &len) < 0) goto done;
    vocab = cJSON_ParseWithLength(text, len);
    free(text), text = NULL;
    if (!cJSON_IsObject(vocab)) {
        ad_fail("%s is not a JSON object", vpath);
        goto done;
    }
    new_id = ad_malloc(sizeof(int32_t) * (size_t)vocab_size, "vocab map");
    if (!new_id) goto done;
    for (int i = 0; i < vocab_size; i++)
        new_id[i] = -1;
    for (int i = 0; i < n_keep; i++)
        new_id[keep_ids[i]] = i;
    out = cJSON_CreateObject();
    for (const cJSON *kv = vocab->child; kv; kv = kv->next) {
        int id = (int)kv->valuedouble;
        if (id < 0 || id >= vocab_size || new_id[id] < 0) continue;
        cJSON_AddNumberToObject(out, kv->string, new_id[id]);
    }
    char *json = cJSON_PrintUnformatted(out), *dst = ad_path_join(out_dir, "vocab.json");
    int w = json && dst ? ad_write_file_atomic(dst, json, strlen(json)) : AD_ERR;
    free(json), free(dst);
    if (w < 0) goto done;
    /* A merge survives when both parts and the result are kept: then the tokenizer can only
     * ever produce kept ids (and ad_vocab_keep_set keeps every merge a kept token is built by,
     * so the kept texts tokenize as before). */
    merge_table mt;
    if (merge_table_load(teacher_dir, &mt) < 0) goto done;
    size_t cap = 1024, used = 0;
    char *buf = ad_malloc(cap, "merges");
    if (!buf) {
        merge_table_free(&mt);
        goto done;
    }
    for (int i = 0; i < mt.n; i++) {
        const char *line = mt.lines[i];
        bool keep = line[0] == '#' ||
                    (mt.ab[i] >= 0 && mt.a[i] >= 0 && mt.b[i] >= 0 && mt.ab[i] < vocab_size &&
                     mt.a[i] < vocab_size && mt.b[i] < vocab_size && new_id[mt.ab[i]] >= 0 &&
                     new_id[mt.a[i]] >= 0 && new_id[mt.b[i]] >= 0);
        if (!keep) continue;
        size_t n = strlen(line);
        if (used + n + 2 > cap) {
            cap = (used + n + 2) * 2;
            char *g = ad_realloc(buf, cap, "merges");
            if (!g) {
                free(buf);
                merge_table_free(&mt);
                goto done;
            }
            buf = g;
        }
        memcpy(buf + used, line, n);
        used += n;
        buf[used++] = '\n';
    }
    merge_table_free(&mt);
    dst = ad_path_join(out_dir, "merges.txt");
    w = dst ? ad_write_file_atomic(dst, buf, used) : AD_ERR;
    free(dst), free(buf);
    if (w < 0) goto done;
    /* Added tokens keep their content under their new id. */
    char *tpath = ad_path_join(teacher_dir, "tokenizer_config.json");
    if (tpath && ad_path_exists(tpath)) {
        if (ad_read_file(tpath, 16u << 20, &text, &len) < 0) {
            free(tpath);
            goto done;
        }
        tc = cJSON_ParseWithLength(text, len);
        free(text), text = NULL;
        cJSON *dec = tc ? cJSON_GetObjectItemCaseSensitive(tc, "added_tokens_decoder") : NULL;
        if (cJSON_IsObject(dec)) {
            cJSON *renamed = cJSON_CreateObject();
            for (cJSON *kv = dec->child; kv; kv = kv->next) {
                int id = atoi(kv->string);
                if (id < 0 || id >= vocab_size || new_id[id] < 0) continue;
                char key[32];
                snprintf(key, sizeof key, "%d", new_id[id]);
                cJSON_AddItemToObject(renamed, key, cJSON_Duplicate(kv, 1));
            }
            cJSON_ReplaceItemInObjectCaseSensitive(tc, "added_tokens_decoder", renamed);
        }
        char *tjson = tc ? cJSON_Print(tc) : NULL;
        dst = ad_path_join(out_dir, "tokenizer_config.json");
        w = tjson && dst ? ad_write_file_atomic(dst, tjson, strlen(tjson))
                         : ad_fail("%s: not valid JSON", tpath);
        free(tjson), free(dst);
        if (w < 0) {
            free(tpath);
            goto done;
        }
    }
    free(tpath);
    rc = AD_OK;
done:
    cJSON_Delete(vocab), cJSON_Delete(out), cJSON_Delete(tc);
    free(vpath), free(new_id);
    return rc;
}

static cJSON *keep_json(const ad_keep *k) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < k->n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber(k->index[i]));
    return a;
}

int ad_prune_write_student(ad_model *teacher, const char *teacher_dir, const ad_prune_plan *p,
                           const char *out_dir, bool bf16) {
    char tmp_dir[4096];
    snprintf(tmp_dir, sizeof tmp_dir, "%s.tmp.%ld", out_dir, (long)getpid());
    if (ad_path_exists(out_dir))
        return ad_fail("%s already exists; remove it or choose another output", out_dir);
    AD_TRY(ad_mkdir_p(tmp_dir));
    ad_weight_spec *specs = NULL;
    int n = 0, rc = AD_ERR;
    ad_st_write_item *items = NULL;
    float **data = NULL;
    char *config = NULL, *extra = NULL;
    if (ad_weight_specs(&p->student, &specs, &n) < 0) goto done;
    items = ad_calloc((size_t)n, sizeof *items, "student tensors");
    data = ad_calloc((size_t)n, sizeof *data, "student tensors");
    if (!items || !data) goto done;
    for (int i = 0; i < n; i++) {
        source s;
        ad_keep tmp[2] = {{0, NULL}, {0, NULL}};
        int r = source_of(p, specs[i].name, &s, tmp);
        const ad_tensor *src = r == AD_OK ? ad_model_weight(teacher, s.teacher_name) : NULL;
        if (r == AD_OK && !src) r = ad_fail("internal: the teacher has no %s", s.teacher_name);
        if (r == AD_OK) r = gather(teacher->be, src, &specs[i], &s, &data[i]);
        free(tmp[0].index), free(tmp[1].index);
        if (r < 0) goto done;
        items[i] = (ad_st_write_item){specs[i].name,
                                      AD_F32,
                                      specs[i].ndim,
                                      {specs[i].shape[0], specs[i].shape[1], specs[i].shape[2]},
                                      data[i]};
    }
    char path[4200];
    snprintf(path, sizeof path, "%s/model.safetensors", tmp_dir);
    ad_st_metadata meta[] = {{"format", "pt"}};
    if (ad_safetensors_write_as(path, items, n, meta, 1, bf16 ? AD_BF16 : AD_F32) < 0) goto done;
    /* config.json: what was kept, so the student can be traced back to the teacher. */
    cJSON *x = cJSON_CreateObject();
    cJSON_AddStringToObject(x, "pruned_from", teacher_dir);
    cJSON_AddItemToObject(x, "kept_decoder_layers", keep_json(&p->dec_layers));
    cJSON_AddItemToObject(x, "kept_encoder_layers", keep_json(&p->enc_layers));
    if (p->vocab.n != p->teacher.vocab_size)
        cJSON_AddItemToObject(x, "kept_vocab", keep_json(&p->vocab));
    extra = cJSON_PrintUnformatted(x);
    cJSON_Delete(x);
    config = extra ? ad_model_config_to_json(&p->student, extra) : NULL;
    snprintf(path, sizeof path, "%s/config.json", tmp_dir);
    if (!config || ad_write_file_atomic(path, config, strlen(config)) < 0) goto done;
    if (p->vocab.n != p->teacher.vocab_size) {
        if (ad_vocab_write_tokenizer(teacher_dir, tmp_dir, p->teacher.vocab_size, p->vocab.index,
                                     p->vocab.n) < 0)
            goto done;
    } else if (ad_copy_optional_file(teacher_dir, tmp_dir, "vocab.json") < 0 ||
               ad_copy_optional_file(teacher_dir, tmp_dir, "merges.txt") < 0 ||
               ad_copy_optional_file(teacher_dir, tmp_dir, "tokenizer_config.json") < 0) {
        goto done;
    }
    if (ad_copy_optional_file(teacher_dir, tmp_dir, "preprocessor_config.json") < 0 ||
        ad_copy_optional_file(teacher_dir, tmp_dir, "generation_config.json") < 0)
        goto done;
    if (ad_fsync_directory(tmp_dir) < 0) goto done;
    if (rename(tmp_dir, out_dir) != 0) {
        ad_fail("cannot rename %s to %s", tmp_dir, out_dir);
        goto done;
    }
    rc = AD_OK;
done:
    /* Best effort: the message already says what failed. */
    if (rc < 0 && ad_remove_tree(tmp_dir) < 0) ad_warn("could not remove %s", tmp_dir);
    for (int i = 0; data && i < n; i++)
        free(data[i]);
    free(data), free(items), free(specs), free(config), free(extra);
    return rc;
}

/* ---- vocabulary ------------------------------------------------------------------------------ */

static int cmp_i32(const void *a, const void *b) {
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return (x > y) - (x < y);
}

/* Number of Unicode code points of a UTF-8 string. */
static int code_points(const char *s) {
    int n = 0;
    for (; *s; s++)
        n += ((unsigned char)*s & 0xc0) != 0x80;
    return n;
}

int ad_vocab_keep_set(const char *teacher_dir, int vocab_size, const int32_t *used, int n_used,
                      int32_t **keep, int *n_keep) {
    *keep = NULL;
    *n_keep = 0;
    char *mark = ad_calloc((size_t)vocab_size, 1, "vocab marks");
    if (!mark) return AD_ERR;
    int rc = AD_ERR;
    char *vpath = ad_path_join(teacher_dir, "vocab.json"),
         *tpath = ad_path_join(teacher_dir, "tokenizer_config.json");
    char *text = NULL;
    size_t len;
    cJSON *vocab = NULL;
    for (int i = 0; i < n_used; i++) {
        if (used[i] < 0 || used[i] >= vocab_size) {
            ad_fail("vocabulary: used token %d outside the vocabulary (%d)", used[i], vocab_size);
            goto done;
        }
        mark[used[i]] = 1;
    }
    if (!vpath || ad_read_file(vpath, 64u << 20, &text, &len) < 0) goto done;
    vocab = cJSON_ParseWithLength(text, len);
    if (!cJSON_IsObject(vocab)) {
        ad_fail("%s is not a JSON object", vpath);
        goto done;
    }
    for (const cJSON *kv = vocab->child; kv; kv = kv->next) {
        int id = (int)kv->valuedouble;
        if (id >= 0 && id < vocab_size && code_points(kv->string) == 1)
            mark[id] = 1; /* single bytes */
    }
    ad_added_token *added = NULL;
    int n_added = 0;
    if (tpath && ad_path_exists(tpath)) {
        if (ad_added_tokens_load(tpath, &added, &n_added) < 0) goto done;
        for (int i = 0; i < n_added; i++)
            if (added[i].id < vocab_size) mark[added[i].id] = 1;
        ad_added_tokens_free(added, n_added);
    }
    /* Close the set under the merges that build its tokens: BPE reaches "Translate" through
     * "Tr", "Trans", ...; with those intermediates gone their merges go too, and the kept
     * texts fall apart into bytes the model never saw. Keeping every part of every merge that
     * yields a kept token makes the trimmed tokenizer choose the teacher's merges, in order,
     * on any kept text (its applicable merges are a subset, the teacher's choice among them). */
    merge_table mt;
    if (merge_table_load(teacher_dir, &mt) < 0) goto done;
    for (bool changed = true; changed;) {
        changed = false;
        for (int i = mt.n - 1; i >= 0; i--) {
            int32_t a = mt.a[i], b = mt.b[i], ab = mt.ab[i];
            if (ab < 0 || ab >= vocab_size || !mark[ab] || a < 0 || b < 0 || a >= vocab_size ||
                b >= vocab_size || (mark[a] && mark[b]))
                continue;
            mark[a] = mark[b] = 1;
            changed = true;
        }
    }
    merge_table_free(&mt);
    int count = 0;
    for (int i = 0; i < vocab_size; i++)
        count += mark[i];
    *keep = ad_malloc(sizeof(int32_t) * (size_t)(count ? count : 1), "vocab keep");
    if (!*keep) goto done;
    for (int i = 0; i < vocab_size; i++)
        if (mark[i]) (*keep)[(*n_keep)++] = i;
    qsort(*keep, (size_t)*n_keep, sizeof(int32_t), cmp_i32);
    rc = AD_OK;
done:
    cJSON_Delete(vocab);
    free(text), free(vpath), free(tpath), free(mark);
    return rc;
}
