#include "compress/quantize.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "compress/gptq.h"
#include "compress/quant_io.h"
#include "core/log.h"
#include "io/file.h"
#include "model/train_graph.h"
#include "model/weights.h"

static const ad_quant_choice *choice_for(const ad_quant_recipe *q, ad_weight_class c) {
    switch (c) {
    case AD_WEIGHT_CLASS_DECODER_LINEAR: return &q->decoder_linear;
    case AD_WEIGHT_CLASS_ENCODER_LINEAR: return &q->encoder_linear;
    case AD_WEIGHT_CLASS_EMBED_TOKENS: return &q->embed_tokens;
    case AD_WEIGHT_CLASS_LM_HEAD: return &q->lm_head;
    default: return NULL;
    }
}

/* The recorded activation that feeds weight `name`, and which of its rows are real. */
typedef struct {
    const ad_tensor *x;
    int64_t rows, cols;
    int kind; /* 0 decoder rows (t < len), 1 encoder rows (frame < key_len), 2 all rows, 3 clip
                 tokens */
} input_ref;

static int input_of(const ad_train_graph *g, const char *name, input_ref *in) {
    const ad_model_config *c = &g->m->cfg;
    int l, used = 0;
    if (sscanf(name, "language_model.model.layers.%d.%n", &l, &used) == 1 && used) {
        const ad_decoder_record *r = &g->dec_rec[l];
        const char *rest = name + used;
        const int64_t N = (int64_t)g->rows * g->len, hd = c->head_dim;
        in->kind = 0, in->rows = N;
        if (strstr(rest, "q_proj") || strstr(rest, "k_proj") || strstr(rest, "v_proj"))
            in->x = &r->xn1, in->cols = c->hidden_size;
        else if (strstr(rest, "o_proj"))
            in->x = &r->att, in->cols = (int64_t)c->decoder_layer[l].num_attention_heads * hd;
        else if (strstr(rest, "gate_proj") || strstr(rest, "up_proj"))
            in->x = &r->xn2, in->cols = c->hidden_size;
        else if (strstr(rest, "down_proj"))
            in->x = &r->act, in->cols = c->decoder_layer[l].intermediate_size;
        else
            return AD_ERR;
        return AD_OK;
    }
    if (sscanf(name, "audio_tower.layers.%d.%n", &l, &used) == 1 && used) {
        const ad_encoder_record *r = &g->enc_rec[l];
        const char *rest = name + used;
        in->kind = 1, in->rows = (int64_t)g->n_clips * g->n1;
        if (strstr(rest, "q_proj") || strstr(rest, "k_proj") || strstr(rest, "v_proj"))
            in->x = &r->xn1, in->cols = c->d_model;
        else if (strstr(rest, "out_proj"))
            in->x = &r->att,
            in->cols = (int64_t)c->encoder_layer[l].num_attention_heads * c->encoder_head_dim;
        else if (strstr(rest, "fc1"))
            in->x = &r->xn2, in->cols = c->d_model;
        else if (strstr(rest, "fc2"))
            in->x = &r->f_act, in->cols = c->encoder_layer[l].ffn_dim;
        else
            return AD_ERR;
        return AD_OK;
    }
    if (!strcmp(name, "multi_modal_projector.linear.weight")) {
        in->x = &g->enc, in->kind = 3, in->rows = (int64_t)g->n_clips * g->tok_max,
        in->cols = c->d_model;
        return AD_OK;
    }
    if (!strcmp(name, "language_model.lm_head.weight")) {
        in->x = &g->sel, in->kind = 2, in->rows = g->n_supervised, in->cols = c->hidden_size;
        return AD_OK;
    }
    return AD_ERR;
}

static bool row_valid(const ad_train_graph *g, const input_ref *in, int64_t i) {
    switch (in->kind) {
    case 0: return i % g->len < g->row_len[i / g->len];
    case 1: return i % g->n1 < g->clip_key_len[i / g->n1];
    case 3: return i % g->tok_max < g->clip_tokens[i / g->tok_max];
    default: return true;
    }
}

typedef struct {
    double *H;
    int64_t count;
} hessian;

static int calibrate(ad_model *m, const ad_quantize_options *o, const ad_weight_spec *specs, int n,
                     bool *gptq, hessian *hs) {
    const char *langs[] = {"de", "zh"};
    ad_loader loader;
    AD_TRY(ad_loader_open(&loader, o->calibration, 2, langs, m->cfg.audio_token_index, 0, false));
    const int window = ad_model_window(&m->cfg, o->max_frames);
    ad_loader_set_window(&loader, window);
    ad_train_graph g = {0};
    ad_batch b = {0};
    int32_t *ex = ad_malloc(sizeof(int32_t) * (size_t)o->batch, "calibration");
    float *rows = NULL;
    int rc = ex ? AD_OK : AD_ERR;
    const int64_t total =
        (int64_t)o->segments * 2 < loader.n_examples ? (int64_t)o->segments * 2 : loader.n_examples;
    for (int64_t done = 0; done < total && rc == AD_OK;) {
        int want = (int)(total - done < o->batch ? total - done : o->batch), got;
        rc = ad_loader_next(&loader, want, 0, 1, ex, &got);
        if (rc == AD_OK) rc = ad_loader_fill(&loader, ex, got, &b);
        if (rc == AD_OK && !g.m) {
            ad_graph_limits lim = {.max_clips = o->batch,
                                   .max_frames = window,
                                   .max_len = 4 * b.max_len + 64,
                                   .max_supervised = o->batch * (4 * b.max_len + 64)};
            ad_trainable keep = {.keep_activations = true};
            rc = ad_graph_init(&g, m, &lim, &keep);
        }
        if (rc == AD_OK) rc = ad_graph_forward(&g, &b);
        for (int s = 0; s < n && rc == AD_OK; s++) {
            if (!gptq[s]) continue;
            input_ref in;
            if (input_of(&g, specs[s].name, &in) < 0) continue;
            /* Gather the real rows of this layer's input, then H += 2/n X^T X. */
            float *all =
                ad_malloc(sizeof(float) * (size_t)(in.rows * in.cols + 1), "calibration rows");
            rows = ad_malloc(sizeof(float) * (size_t)(in.rows * in.cols + 1), "calibration rows");
            if (!all || !rows) {
                free(all);
                rc = AD_ERR;
                break;
            }
            ad_tensor h;
            ad_tensor_init(&h, all, AD_F32, AD_DEVICE_CPU, 2, (int64_t[]){in.rows, in.cols},
                           "calibration");
            ad_tensor src;
            ad_tensor_init(&src, in.x->data, AD_F32, in.x->device, 2, (int64_t[]){in.rows, in.cols},
                           "activation");
            rc = m->be->download(m->be, &h, &src);
            int64_t k = 0;
            for (int64_t i = 0; rc == AD_OK && i < in.rows; i++)
                if (row_valid(&g, &in, i))
                    memcpy(rows + (k++) * in.cols, all + i * in.cols,
                           sizeof(float) * (size_t)in.cols);
            if (rc == AD_OK && k) rc = ad_gptq_hessian_add(hs[s].H, in.cols, rows, k, &hs[s].count);
            free(all), free(rows), rows = NULL;
        }
        done += got;
    }
    free(ex);
    ad_batch_free(&b);
    if (g.m) ad_graph_free(&g);
    ad_loader_close(&loader);
    return rc;
}

int ad_quantize_model(ad_model *m, const char *model_dir, const ad_quant_recipe *recipe,
                      const ad_quantize_options *o, const char *out_dir) {
    if (m->n_quantized > 0)
        return ad_fail(
            "%s is already quantized (%d weights): quantize the unquantized model instead",
            model_dir, m->n_quantized);
    if (ad_path_exists(out_dir))
        return ad_fail("%s already exists; remove it or choose another output", out_dir);
    ad_weight_spec *specs;
    int n;
    AD_TRY(ad_weight_specs(&m->cfg, &specs, &n));
    bool *gptq = ad_calloc((size_t)n, sizeof *gptq, "quantize"),
         *quant = ad_calloc((size_t)n, sizeof *quant, "quantize");
    hessian *hs = ad_calloc((size_t)n, sizeof *hs, "quantize");
    ad_compact_weight *out = ad_calloc((size_t)n, sizeof *out, "quantize");
    ad_quant_tensor *qt = ad_calloc((size_t)n, sizeof *qt, "quantize");
    float **host = ad_calloc((size_t)n, sizeof *host, "quantize");
    int rc = AD_ERR;
    bool any_gptq = false;
    if (!gptq || !quant || !hs || !out || !qt || !host) goto done;
    for (int s = 0; s < n; s++) {
        const ad_quant_choice *c = choice_for(recipe, ad_weight_class_of(&specs[s]));
        if (!c || c->bits == 16) continue;
        ad_quant_spec qs = {(int)c->bits, (int)c->group_size, c->symmetric};
        if (ad_quant_check(&qs, specs[s].shape[0], specs[s].shape[1], specs[s].name) < 0) goto done;
        quant[s] = true;
        /* Embeddings are a lookup, not a product with inputs: GPTQ does not apply there. */
        gptq[s] = !strcmp(c->method, "gptq") &&
                  ad_weight_class_of(&specs[s]) != AD_WEIGHT_CLASS_EMBED_TOKENS;
        if (gptq[s]) {
            hs[s].H = ad_calloc((size_t)(specs[s].shape[1] * specs[s].shape[1]), sizeof(double),
                                "Hessian");
            if (!hs[s].H) goto done;
            any_gptq = true;
        }
    }
    if (any_gptq) {
        if (!o->calibration) {
            ad_fail("GPTQ needs calibration data (a prepared set)");
            goto done;
        }
        if (calibrate(m, o, specs, n, gptq, hs) < 0) goto done;
    }
    for (int s = 0; s < n; s++) {
        ad_tensor *w = ad_model_weight(m, specs[s].name);
        const int64_t numel = ad_weight_spec_numel(&specs[s]);
        host[s] = ad_malloc(sizeof(float) * (size_t)numel + 4, specs[s].name);
        ad_tensor h;
        if (!host[s]) goto done;
        ad_tensor_init(&h, host[s], AD_F32, AD_DEVICE_CPU, w->ndim, w->shape, specs[s].name);
        if (m->be->download(m->be, &h, w) < 0) goto done;
        out[s] = (ad_compact_weight){
            specs[s].name, specs[s].ndim, {specs[s].shape[0], specs[s].shape[1], specs[s].shape[2]},
            host[s],       NULL,          NULL};
        if (!quant[s]) continue;
        const ad_quant_choice *c = choice_for(recipe, ad_weight_class_of(&specs[s]));
        ad_quant_spec qs = {(int)c->bits, (int)c->group_size, c->symmetric};
        if (ad_quant_alloc(&qt[s], &qs, specs[s].shape[0], specs[s].shape[1], specs[s].name) < 0)
            goto done;
        int r;
        if (gptq[s] && hs[s].count > 0) {
            ad_gptq_options go = {.damp_percent = o->damp_percent};
            r = ad_gptq_quantize(&qt[s], host[s], hs[s].H, &go, specs[s].name);
        } else {
            if (gptq[s])
                ad_warn("%s: no calibration rows reached it; using round-to-nearest",
                        specs[s].name);
            r = ad_quant_rtn(&qt[s], host[s]);
        }
        if (r < 0) goto done;
        out[s].q = &qt[s];
        out[s].method = gptq[s] && hs[s].count ? "gptq" : "rtn";
    }
    rc = ad_compact_model_write(out, n, model_dir, out_dir);
done:
    for (int s = 0; s < n; s++) {
        free(hs ? hs[s].H : NULL);
        if (qt) ad_quant_free(&qt[s]);
        free(host ? host[s] : NULL);
    }
    free(gptq), free(quant), free(hs), free(out), free(qt), free(host);
    free(specs);
    return rc;
}
