#include "compress/importance.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

static double **alloc_rows(int n, const int *widths) {
    double **rows = ad_calloc((size_t)(n ? n : 1), sizeof *rows, "importance");
    if (!rows) return NULL;
    for (int i = 0; i < n; i++) {
        rows[i] = ad_calloc((size_t)(widths[i] ? widths[i] : 1), sizeof **rows, "importance");
        if (!rows[i]) return NULL;
    }
    return rows;
}

static void free_rows(double **rows, int n) {
    for (int i = 0; rows && i < n; i++)
        free(rows[i]);
    free(rows);
}

int ad_importance_init(ad_importance *imp, const ad_model_config *cfg) {
    memset(imp, 0, sizeof *imp);
    imp->n_dec = cfg->num_hidden_layers;
    imp->n_enc = cfg->encoder_layers;
    int dh[AD_MAX_LAYERS], df[AD_MAX_LAYERS], eh[AD_MAX_LAYERS], ef[AD_MAX_LAYERS];
    for (int l = 0; l < imp->n_dec; l++) {
        dh[l] = cfg->decoder_layer[l].num_attention_heads;
        df[l] = cfg->decoder_layer[l].intermediate_size;
    }
    for (int l = 0; l < imp->n_enc; l++) {
        eh[l] = cfg->encoder_layer[l].num_attention_heads;
        ef[l] = cfg->encoder_layer[l].ffn_dim;
    }
    imp->dec_influence = ad_calloc((size_t)imp->n_dec + 1, sizeof(double), "importance");
    imp->enc_influence = ad_calloc((size_t)imp->n_enc + 1, sizeof(double), "importance");
    imp->hidden = ad_calloc((size_t)cfg->hidden_size, sizeof(double), "importance");
    imp->dec_head = alloc_rows(imp->n_dec, dh);
    imp->dec_ffn = alloc_rows(imp->n_dec, df);
    imp->enc_head = alloc_rows(imp->n_enc, eh);
    imp->enc_ffn = alloc_rows(imp->n_enc, ef);
    if (!imp->dec_influence || !imp->enc_influence || !imp->hidden || !imp->dec_head ||
        !imp->dec_ffn || !imp->enc_head || !imp->enc_ffn) {
        ad_importance_free(imp);
        return AD_ERR;
    }
    return AD_OK;
}

void ad_importance_free(ad_importance *imp) {
    free(imp->dec_influence);
    free(imp->enc_influence);
    free(imp->hidden);
    free_rows(imp->dec_head, imp->n_dec);
    free_rows(imp->dec_ffn, imp->n_dec);
    free_rows(imp->enc_head, imp->n_enc);
    free_rows(imp->enc_ffn, imp->n_enc);
    memset(imp, 0, sizeof *imp);
}

/* A host copy of a device tensor (F32), for scoring. */
static float *host_copy(ad_backend *be, const ad_tensor *t) {
    int64_t n = ad_tensor_numel(t);
    float *h = ad_malloc(sizeof(float) * (size_t)(n ? n : 1), "importance activations");
    if (!h) return NULL;
    ad_tensor dst;
    ad_tensor_init(&dst, h, AD_F32, AD_DEVICE_CPU, t->ndim, t->shape, t->name);
    if (be->download(be, &dst, t) < 0) {
        free(h);
        return NULL;
    }
    return h;
}

static double one_minus_cos(const float *a, const float *b, int64_t n) {
    double ab = 0, aa = 0, bb = 0;
    for (int64_t i = 0; i < n; i++) {
        ab += (double)a[i] * b[i];
        aa += (double)a[i] * a[i];
        bb += (double)b[i] * b[i];
    }
    return aa > 0 && bb > 0 ? 1.0 - ab / sqrt(aa * bb) : 0.0;
}

/* A view with the shape of the last forward: records are carved for the graph's limits. */
static ad_tensor rows_view(const ad_tensor *t, int64_t rows, int64_t cols) {
    ad_tensor v;
    ad_tensor_init(&v, t->data, t->dtype, t->device, 2, (int64_t[]){rows, cols}, t->name);
    return v;
}

int ad_importance_accumulate(ad_importance *imp, const ad_train_graph *g) {
    if (!g->records)
        return ad_fail("importance: the graph must keep activations (keep_activations)");
    ad_backend *be = g->be;
    const ad_model_config *cfg = &g->m->cfg;
    const int64_t H = cfg->hidden_size, hd = cfg->head_dim, R = g->rows, T = g->len, N = R * T;
    int rc = AD_ERR;
    float *cur = NULL, *next = NULL, *a = NULL;
    /* Decoder: valid positions are t < len[r]. */
    for (int l = 0; l < cfg->num_hidden_layers; l++) {
        const ad_decoder_record *r = &g->dec_rec[l];
        const ad_decoder_layer_shape *s = &cfg->decoder_layer[l];
        const int64_t Q = s->num_attention_heads * hd, F = s->intermediate_size;
        ad_tensor xin = rows_view(&r->x_in, N, H);
        ad_tensor xout = l + 1 < cfg->num_hidden_layers ? rows_view(&g->dec_rec[l + 1].x_in, N, H)
                                                        : rows_view(&g->x_final, N, H);
        if (!(cur = host_copy(be, &xin)) || !(next = host_copy(be, &xout))) goto done;
        for (int64_t i = 0; i < N; i++)
            if (i % T < g->row_len[i / T])
                imp->dec_influence[l] += one_minus_cos(cur + i * H, next + i * H, H);
        free(cur), free(next), cur = next = NULL;
        ad_tensor att = rows_view(&r->att, N, Q), act = rows_view(&r->act, N, F);
        if (!(a = host_copy(be, &att))) goto done;
        for (int64_t i = 0; i < N; i++) {
            if (i % T >= g->row_len[i / T]) continue;
            for (int h = 0; h < s->num_attention_heads; h++) {
                double sq = 0;
                for (int64_t d = 0; d < hd; d++)
                    sq += (double)a[i * Q + h * hd + d] * a[i * Q + h * hd + d];
                imp->dec_head[l][h] += sqrt(sq);
            }
        }
        free(a), a = NULL;
        if (!(a = host_copy(be, &act))) goto done;
        for (int64_t i = 0; i < N; i++)
            if (i % T < g->row_len[i / T])
                for (int64_t j = 0; j < F; j++)
                    imp->dec_ffn[l][j] += fabs(a[i * F + j]);
        free(a), a = NULL;
        ad_tensor norms[2] = {rows_view(&r->xn1, N, H), rows_view(&r->xn2, N, H)};
        for (int k = 0; k < 2; k++) {
            if (!(a = host_copy(be, &norms[k]))) goto done;
            for (int64_t i = 0; i < N; i++)
                if (i % T < g->row_len[i / T])
                    for (int64_t c = 0; c < H; c++)
                        imp->hidden[c] += fabs(a[i * H + c]);
            free(a), a = NULL;
        }
    }
    for (int64_t i = 0; i < N; i++)
        imp->dec_tokens += i % T < g->row_len[i / T];
    /* Encoder: valid frames are those below each clip's key length. */
    const int64_t C = g->n_clips, n1 = g->n1, d = cfg->d_model, ehd = cfg->encoder_head_dim,
                  M = C * n1;
    for (int l = 0; l < cfg->encoder_layers; l++) {
        const ad_encoder_record *r = &g->enc_rec[l];
        const int64_t A = (int64_t)cfg->encoder_layer[l].num_attention_heads * ehd,
                      F = cfg->encoder_layer[l].ffn_dim;
        ad_tensor hin = rows_view(&r->h_in, M, d);
        ad_tensor hout = l + 1 < cfg->encoder_layers ? rows_view(&g->enc_rec[l + 1].h_in, M, d)
                                                     : rows_view(&g->h, M, d);
        if (!(cur = host_copy(be, &hin)) || !(next = host_copy(be, &hout))) goto done;
        for (int64_t i = 0; i < M; i++)
            if (i % n1 < g->clip_key_len[i / n1])
                imp->enc_influence[l] += one_minus_cos(cur + i * d, next + i * d, d);
        free(cur), free(next), cur = next = NULL;
        ad_tensor att = rows_view(&r->att, M, A), act = rows_view(&r->f_act, M, F);
        if (!(a = host_copy(be, &att))) goto done;
        for (int64_t i = 0; i < M; i++) {
            if (i % n1 >= g->clip_key_len[i / n1]) continue;
            for (int h = 0; h < cfg->encoder_layer[l].num_attention_heads; h++) {
                double sq = 0;
                for (int64_t k = 0; k < ehd; k++)
                    sq += (double)a[i * A + h * ehd + k] * a[i * A + h * ehd + k];
                imp->enc_head[l][h] += sqrt(sq);
            }
        }
        free(a), a = NULL;
        if (!(a = host_copy(be, &act))) goto done;
        for (int64_t i = 0; i < M; i++)
            if (i % n1 < g->clip_key_len[i / n1])
                for (int64_t j = 0; j < F; j++)
                    imp->enc_ffn[l][j] += fabs(a[i * F + j]);
        free(a), a = NULL;
    }
    for (int64_t i = 0; i < M; i++)
        imp->enc_frames += i % n1 < g->clip_key_len[i / n1];
    rc = AD_OK;
done:
    free(cur);
    free(next);
    free(a);
    return rc;
}

void ad_importance_finish(ad_importance *imp) {
    const double dt = imp->dec_tokens ? (double)imp->dec_tokens : 1.0,
                 ef = imp->enc_frames ? (double)imp->enc_frames : 1.0;
    for (int l = 0; l < imp->n_dec; l++)
        imp->dec_influence[l] /= dt;
    for (int l = 0; l < imp->n_enc; l++)
        imp->enc_influence[l] /= ef;
    /* Width scores are compared within a layer only, so their scale does not matter; the
     * hidden score sums over all layers' normalised inputs. */
    (void)ef;
}

static cJSON *array_of(const double *v, int n) {
    cJSON *a = cJSON_CreateArray();
    for (int i = 0; a && i < n; i++)
        cJSON_AddItemToArray(a, cJSON_CreateNumber(v[i]));
    return a;
}

char *ad_importance_json(const ad_importance *imp, const ad_model_config *cfg) {
    cJSON *root = cJSON_CreateObject();
    cJSON_AddItemToObject(root, "decoder_block_influence",
                          array_of(imp->dec_influence, imp->n_dec));
    cJSON_AddItemToObject(root, "encoder_block_influence",
                          array_of(imp->enc_influence, imp->n_enc));
    cJSON *heads = cJSON_AddArrayToObject(root, "decoder_head_importance");
    for (int l = 0; l < imp->n_dec; l++)
        cJSON_AddItemToArray(heads,
                             array_of(imp->dec_head[l], cfg->decoder_layer[l].num_attention_heads));
    cJSON_AddNumberToObject(root, "calibration_tokens", (double)imp->dec_tokens);
    cJSON_AddNumberToObject(root, "calibration_frames", (double)imp->enc_frames);
    char *json = cJSON_Print(root);
    cJSON_Delete(root);
    if (!json) ad_fail("out of memory writing importance scores");
    return json;
}
