#include "train/param_table.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compress/recipe.h"
#include "core/error.h"

static int host_view(ad_tensor *t, float *data, const ad_tensor *like) {
    return ad_tensor_init(t, data, AD_F32, AD_DEVICE_CPU, like->ndim, like->shape, like->name);
}

/* Device gradients -> host mirrors; quantized weights' gradients through the quantizer. */
int ad_params_download_grads(ad_param_table *t) {
    for (int i = 0; t->mirrored && i < t->n_params; i++) {
        if (!t->dev_g[i]) continue;
        ad_tensor h;
        AD_TRY(host_view(&h, t->params[i].grad, t->dev_g[i]));
        AD_TRY(t->be->download(t->be, &h, t->dev_g[i]));
        if (t->qat_of[i])
            ad_qat_backward(t->qat_of[i], t->params[i].param, t->params[i].grad,
                            t->scale_of[i] >= 0 ? t->params[t->scale_of[i]].grad : NULL);
        if (t->qat_of[i] && t->scale_of[i] >= 0)
            ad_qat_log_scale_grad(t->qat_of[i], t->params[t->scale_of[i]].grad);
    }
    return AD_OK;
}

static void round_to_bf16(const float *x, float *out, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        out[i] = ad_bf16_to_f32(ad_f32_to_bf16(x[i]));
}

/* Host mirrors of the weights -> device (fake-quantized or bf16-rounded when training
 * quantization-aware). */
int ad_params_upload(ad_param_table *t) {
    for (int i = 0; t->qat.n && i < t->qat.n; i++)
        ad_qat_sync_scales(&t->qat.w[i]);
    for (int i = 0; t->mirrored && i < t->n_params; i++) {
        if (!t->dev_w[i]) continue;
        const ad_param_ref *p = &t->params[i];
        const float *src = p->param;
        if (t->qat_of[i]) {
            ad_qat_fake_quantize(t->qat_of[i], p->param, t->staging);
            src = t->staging;
        } else if (t->qat.n) {
            round_to_bf16(p->param, t->staging, p->n);
            src = t->staging;
        }
        ad_tensor h;
        AD_TRY(host_view(&h, (float *)src, t->dev_w[i]));
        AD_TRY(t->be->upload(t->be, t->dev_w[i], &h));
    }
    return AD_OK;
}

/* Quantization-aware training stores every weight the way the exported model does: the frozen
 * unquantized ones are rounded to bf16 once, here (the trainable ones at every upload). */
int ad_params_round_frozen(ad_model *m, ad_param_table *t) {
    for (int s = 0; t->qat.n && s < t->n_specs; s++) {
        ad_tensor *w = ad_model_weight(m, t->specs[s].name);
        bool trainable = false;
        for (int i = 0; i < t->n_params && !trainable; i++)
            trainable = t->dev_w[i] == w;
        if (trainable || ad_qat_find(&t->qat, t->specs[s].name)) continue;
        ad_tensor h;
        AD_TRY(host_view(&h, t->staging, w));
        AD_TRY(t->be->download(t->be, &h, w));
        round_to_bf16(t->staging, t->staging, ad_weight_spec_numel(&t->specs[s]));
        AD_TRY(t->be->upload(t->be, w, &h));
    }
    return AD_OK;
}

int ad_params_build(ad_train_graph *g, const char *student_dir, bool learn_scales,
                    ad_param_table *t) {
    memset(t, 0, sizeof *t);
    t->be = g->be;
    AD_TRY(ad_qat_open(&t->qat, student_dir, learn_scales));
    t->mirrored = g->be->device != AD_DEVICE_CPU || t->qat.n > 0;
    AD_TRY(ad_weight_specs(&g->m->cfg, &t->specs, &t->n_specs));
    const size_t cap = (size_t)(t->n_specs + t->qat.n);
    t->params = ad_calloc(cap, sizeof *t->params, "parameters");
    t->dev_w = ad_calloc(cap, sizeof *t->dev_w, "parameters");
    t->dev_g = ad_calloc(cap, sizeof *t->dev_g, "parameters");
    t->qat_of = ad_calloc(cap, sizeof *t->qat_of, "parameters");
    t->scale_of = ad_calloc(cap, sizeof *t->scale_of, "parameters");
    if (!t->params || !t->dev_w || !t->dev_g || !t->qat_of || !t->scale_of) return AD_ERR;
    int64_t largest = 1;
    for (int i = 0; i < t->n_specs; i++) {
        const int64_t numel = ad_weight_spec_numel(&t->specs[i]);
        largest = numel > largest ? numel : largest;
        ad_tensor *w = ad_model_weight(g->m, t->specs[i].name),
                  *d = ad_model_weight(&g->grads, t->specs[i].name);
        if (!w || !d) return ad_fail("internal: no weight %s", t->specs[i].name);
        if (!d->data) continue;
        /* bf16: a student computing in bf16 (ad_model_load_mixed) on a device, its fp32 masters
         * kept on the host by the loader */
        float *master = w->dtype == AD_BF16 && t->mirrored
                            ? ad_model_take_master(g->m, t->specs[i].name)
                            : NULL;
        if (w->dtype != AD_F32 && !master)
            return ad_fail("training: the optimizer needs fp32 weights or their fp32 masters (%s "
                           "is %s)",
                           t->specs[i].name, ad_dtype_name(w->dtype));
        t->n_bf16 += master != NULL;
        t->dev_w[t->n_params] = w;
        t->dev_g[t->n_params] = d;
        t->qat_of[t->n_params] = ad_qat_find(&t->qat, t->specs[i].name);
        t->scale_of[t->n_params] = -1;
        ad_param_ref *p = &t->params[t->n_params++];
        p->name = t->specs[i].name;
        p->n = numel;
        if (master) {
            p->param = master; /* the file's values, not the rounded ones on the device */
            p->grad = ad_malloc(sizeof(float) * (size_t)p->n, "gradient mirror");
            if (!p->grad) return AD_ERR;
        } else if (t->mirrored) {
            p->param = ad_malloc(sizeof(float) * (size_t)p->n, "weight mirror");
            p->grad = ad_malloc(sizeof(float) * (size_t)p->n, "gradient mirror");
            if (!p->param || !p->grad) return AD_ERR;
            ad_tensor h;
            AD_TRY(host_view(&h, p->param, w));
            AD_TRY(g->be->download(g->be, &h, w));
        } else {
            p->param = w->data;
            p->grad = d->data;
        }
        p->decay = ad_param_decays(p->name, t->specs[i].ndim);
        p->m = ad_calloc((size_t)p->n, sizeof(float), "adam moments");
        p->v = ad_calloc((size_t)p->n, sizeof(float), "adam moments");
        if (!p->m || !p->v) return AD_ERR;
    }
    /* The scales come after every weight, so checkpoints list weights in the usual order. */
    const int n_weights = t->n_params;
    for (int i = 0; learn_scales && i < n_weights; i++) {
        const ad_qat_weight *q = t->qat_of[i];
        if (!q) continue;
        char *name = ad_malloc(strlen(q->name) + 16, "scale name");
        if (!name) return AD_ERR;
        sprintf(name, "%s.qat_log_scale", q->name);
        t->scale_of[i] = t->n_params;
        t->qat_of[t->n_params] = NULL;
        t->scale_of[t->n_params] = -1;
        ad_param_ref *p = &t->params[t->n_params++];
        p->name = name;
        p->n = q->rows * q->groups;
        p->param = q->log_scale;
        p->decay = false;
        p->grad = ad_calloc((size_t)p->n, sizeof(float), "scale gradient");
        p->m = ad_calloc((size_t)p->n, sizeof(float), "adam moments");
        p->v = ad_calloc((size_t)p->n, sizeof(float), "adam moments");
        if (!p->grad || !p->m || !p->v) return AD_ERR;
    }
    if (t->qat.n) {
        t->staging = ad_malloc(sizeof(float) * (size_t)largest, "upload staging");
        if (!t->staging) return AD_ERR;
    }
    return AD_OK;
}

/* A weight the GEMMs read as a matrix: the token embedding is gathered, not multiplied (kept
 * fp32, so its rows are the masters' exactly), and norms, biases and convolutions stay fp32. */
bool ad_params_is_gemm_weight(const ad_weight_spec *s) {
    const ad_weight_class c = ad_weight_class_of(s);
    return c == AD_WEIGHT_CLASS_ENCODER_LINEAR || c == AD_WEIGHT_CLASS_DECODER_LINEAR ||
           c == AD_WEIGHT_CLASS_LM_HEAD;
}

/* The fp32 values param i's device optimizer updates: dev_master[i] (with ZeRO-1 this rank's
 * slice alone) or dev_w[i]. */
static ad_tensor *params_master(ad_param_table *t, int i) {
    return t->dev_master && t->dev_master[i].data ? &t->dev_master[i] : t->dev_w[i];
}

void ad_params_free(ad_param_table *t) {
    for (int i = 0; t->dev_master && i < t->n_params; i++)
        if (t->dev_master[i].data) t->be->release(t->be, t->dev_master[i].data);
    free(t->dev_master);
    for (int i = 0; t->on_device && i < t->n_params; i++) {
        if (t->opt_m[i].data) t->be->release(t->be, t->opt_m[i].data);
        if (t->opt_v[i].data) t->be->release(t->be, t->opt_v[i].data);
    }
    if (t->zero_scratch.data) t->be->release(t->be, t->zero_scratch.data);
    free(t->opt_m), free(t->opt_v), free(t->slice_at);
    for (int i = 0; i < t->n_params; i++) {
        free(t->params[i].m), free(t->params[i].v);
        if (!t->dev_w[i]) /* a scale: its name and gradient are ours, its values the quantizer's */
            free((char *)t->params[i].name), free(t->params[i].grad);
        else if (t->mirrored)
            free(t->params[i].param), free(t->params[i].grad);
    }
    free(t->dev_w), free(t->dev_g), free(t->qat_of), free(t->scale_of), free(t->staging);
    free(t->params);
    free(t->specs);
    ad_qat_free(&t->qat);
    memset(t, 0, sizeof *t);
}

/* The host values of weight spec s: the optimizer's mirror (for a quantization-aware run, the
 * master, not the fake-quantized copy on the device), else a download into *owned. */
int ad_params_weight_values(ad_model *m, const ad_param_table *t, int s, const float **data,
                            float **owned) {
    const ad_tensor *w = ad_model_weight(m, t->specs[s].name);
    *owned = NULL;
    for (int i = 0; t->mirrored && i < t->n_params; i++)
        if (t->dev_w[i] == w) {
            *data = t->params[i].param;
            return AD_OK;
        }
    if (w->device == AD_DEVICE_CPU) {
        *data = w->data;
        return AD_OK;
    }
    const float *kept = ad_model_master(m, t->specs[s].name);
    if (kept) { /* a frozen weight stored bf16: the file's values */
        *data = kept;
        return AD_OK;
    }
    float *h =
        ad_malloc(sizeof(float) * (size_t)ad_weight_spec_numel(&t->specs[s]) + 4, "checkpoint");
    if (!h) return AD_ERR;
    ad_tensor ht;
    host_view(&ht, h, w);
    if (t->be->download(t->be, &ht, w) < 0) {
        free(h);
        return AD_ERR;
    }
    *owned = h, *data = h;
    return AD_OK;
}

/* Model tensors (all weights, HF names) and optimizer tensors (moments of the trainable ones,
 * and the learned quantization scales). Weights on a device are copied to host buffers in
 * *owned (n_specs entries, free each). */
int ad_params_checkpoint_items(ad_model *m, const ad_param_table *t, ad_st_write_item **model_items,
                               ad_st_write_item **opt_items, char ***names, void ***owned) {
    *model_items = ad_calloc((size_t)t->n_specs, sizeof **model_items, "checkpoint");
    *opt_items = ad_calloc((size_t)(3 * t->n_params + 1), sizeof **opt_items, "checkpoint");
    *names = ad_calloc((size_t)(3 * t->n_params + 1), sizeof **names, "checkpoint");
    *owned = ad_calloc((size_t)t->n_specs, sizeof **owned, "checkpoint");
    if (!*model_items || !*opt_items || !*names || !*owned) return AD_ERR;
    for (int i = 0; i < t->n_specs; i++) {
        const ad_weight_spec *s = &t->specs[i];
        const float *data;
        float *copy;
        AD_TRY(ad_params_weight_values(m, t, i, &data, &copy));
        (*owned)[i] = copy;
        (*model_items)[i] = (ad_st_write_item){
            s->name, AD_F32, s->ndim, {s->shape[0], s->shape[1], s->shape[2]}, data};
    }
    int k_opt = 2 * t->n_params;
    for (int i = 0; i < t->n_params; i++) {
        const ad_param_ref *p = &t->params[i];
        for (int k = 0; k < 2; k++) {
            char *name = ad_malloc(strlen(p->name) + 16, "checkpoint");
            if (!name) return AD_ERR;
            sprintf(name, "%s.%s", p->name, k ? "exp_avg_sq" : "exp_avg");
            (*names)[2 * i + k] = name;
            (*opt_items)[2 * i + k] = (ad_st_write_item){name, AD_F32, 1, {p->n}, k ? p->v : p->m};
        }
        if (t->dev_w[i]) continue;
        /* A learned scale: log s (the parameter) and s (what the export uses) live with the
         * optimizer state. */
        (*opt_items)[k_opt++] = (ad_st_write_item){p->name, AD_F32, 1, {p->n}, p->param};
        for (int j = 0; j < t->n_params; j++)
            if (t->scale_of[j] == i) {
                char *name = ad_malloc(strlen(t->qat_of[j]->name) + 16, "checkpoint");
                if (!name) return AD_ERR;
                sprintf(name, "%s.qat_scale", t->qat_of[j]->name);
                (*names)[2 * t->n_params + i] = name;
                (*opt_items)[k_opt++] =
                    (ad_st_write_item){name, AD_F32, 1, {p->n}, t->qat_of[j]->scale};
            }
    }
    return k_opt;
}

int ad_params_load_moments(const char *ckpt_dir, ad_param_table *t) {
    char *path = ad_path_join(ckpt_dir, "optimizer.safetensors");
    ad_safetensors st;
    int rc = path ? ad_safetensors_open(&st, path) : AD_ERR;
    free(path);
    AD_TRY(rc);
    for (int i = 0; i < t->n_params && rc == AD_OK; i++) {
        ad_param_ref *p = &t->params[i];
        char name[256];
        snprintf(name, sizeof name, "%s.exp_avg", p->name);
        rc = ad_safetensors_read_f32(&st, name, 1, &p->n, p->m);
        snprintf(name, sizeof name, "%s.exp_avg_sq", p->name);
        if (rc == AD_OK) rc = ad_safetensors_read_f32(&st, name, 1, &p->n, p->v);
        if (rc == AD_OK && !t->dev_w[i]) /* a learned quantization scale (log s) */
            rc = ad_safetensors_read_f32(&st, p->name, 1, &p->n, p->param);
    }
    for (int i = 0; rc == AD_OK && i < t->qat.n; i++)
        ad_qat_sync_scales(&t->qat.w[i]);
    ad_safetensors_close(&st);
    return rc < 0 ? ad_fail_context("resuming the optimizer (was the trainable set changed?)")
                  : AD_OK;
}

int ad_params_sync_host(ad_param_table *t) {
    if (!t->host_stale) return AD_OK; /* e.g. the final model right after the last checkpoint */
    for (int i = 0; i < t->n_params; i++) {
        ad_param_ref *p = &t->params[i];
        ad_tensor h;
        const bool sliced_master = t->zero && t->dev_master && t->dev_master[i].data;
        if (t->mirrored && !sliced_master) { /* else the host weights are the backend's own, or
                                                 slices (ad_device_opt_gather_moments) */
            const ad_tensor *w = params_master(t, i);
            AD_TRY(host_view(&h, p->param, w));
            AD_TRY(t->be->download(t->be, &h, w));
        }
        if (t->zero) continue; /* slices: ad_device_opt_gather_moments */
        AD_TRY(host_view(&h, p->m, &t->opt_m[i]));
        AD_TRY(t->be->download(t->be, &h, &t->opt_m[i]));
        AD_TRY(host_view(&h, p->v, &t->opt_v[i]));
        AD_TRY(t->be->download(t->be, &h, &t->opt_v[i]));
    }
    t->host_stale = false;
    return AD_OK;
}
