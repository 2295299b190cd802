/* Qwen2-Audio on a backend: loading, the activation state, the audio encoder + projector and the
 * Qwen2 decoder with its KV cache. Mirrors transformers' Qwen2AudioForConditionalGeneration
 * (modeling_qwen2_audio.py, qwen2/modeling_qwen2.py); every computation is a backend op. */
#include "model/model.h"

#include "compress/quant_io.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "io/file.h"
#include "io/safetensors.h"
#include "model/weights.h"

/* nn.LayerNorm's default eps, used by every LayerNorm of the Whisper-style encoder. */
#define ENCODER_LAYER_NORM_EPS 1e-5f

/* ---- weight loading ---------------------------------------------------------------------- */

typedef struct {
    const char *suffix;
    size_t offset;
} slot_name;

#define ENC(field, name)                                                                           \
    { name, offsetof(ad_encoder_layer, field) }
static const slot_name encoder_slots[] = {
    ENC(k_proj_w, "self_attn.k_proj.weight"),
    ENC(v_proj_w, "self_attn.v_proj.weight"),
    ENC(v_proj_b, "self_attn.v_proj.bias"),
    ENC(q_proj_w, "self_attn.q_proj.weight"),
    ENC(q_proj_b, "self_attn.q_proj.bias"),
    ENC(out_proj_w, "self_attn.out_proj.weight"),
    ENC(out_proj_b, "self_attn.out_proj.bias"),
    ENC(self_attn_layer_norm_w, "self_attn_layer_norm.weight"),
    ENC(self_attn_layer_norm_b, "self_attn_layer_norm.bias"),
    ENC(fc1_w, "fc1.weight"),
    ENC(fc1_b, "fc1.bias"),
    ENC(fc2_w, "fc2.weight"),
    ENC(fc2_b, "fc2.bias"),
    ENC(final_layer_norm_w, "final_layer_norm.weight"),
    ENC(final_layer_norm_b, "final_layer_norm.bias"),
};
#define DEC(field, name)                                                                           \
    { name, offsetof(ad_decoder_layer, field) }
static const slot_name decoder_slots[] = {
    DEC(q_proj_w, "self_attn.q_proj.weight"),
    DEC(q_proj_b, "self_attn.q_proj.bias"),
    DEC(k_proj_w, "self_attn.k_proj.weight"),
    DEC(k_proj_b, "self_attn.k_proj.bias"),
    DEC(v_proj_w, "self_attn.v_proj.weight"),
    DEC(v_proj_b, "self_attn.v_proj.bias"),
    DEC(o_proj_w, "self_attn.o_proj.weight"),
    DEC(gate_proj_w, "mlp.gate_proj.weight"),
    DEC(up_proj_w, "mlp.up_proj.weight"),
    DEC(down_proj_w, "mlp.down_proj.weight"),
    DEC(input_layernorm_w, "input_layernorm.weight"),
    DEC(post_attention_layernorm_w, "post_attention_layernorm.weight"),
};

static ad_tensor *find_layer_slot(void *layer, const slot_name *slots, size_t n,
                                  const char *suffix) {
    for (size_t i = 0; i < n; i++)
        if (strcmp(slots[i].suffix, suffix) == 0)
            return (ad_tensor *)((char *)layer + slots[i].offset);
    return NULL;
}

/* Where the weight called `name` (a checkpoint name from ad_weight_specs) lives in the model. */
static ad_tensor *weight_slot(ad_model *m, const char *name) {
    static const struct {
        const char *name;
        size_t offset;
    } globals[] = {
        {"audio_tower.conv1.weight", offsetof(ad_model, conv1_w)},
        {"audio_tower.conv1.bias", offsetof(ad_model, conv1_b)},
        {"audio_tower.conv2.weight", offsetof(ad_model, conv2_w)},
        {"audio_tower.conv2.bias", offsetof(ad_model, conv2_b)},
        {"audio_tower.embed_positions.weight", offsetof(ad_model, embed_positions)},
        {"audio_tower.layer_norm.weight", offsetof(ad_model, layer_norm_w)},
        {"audio_tower.layer_norm.bias", offsetof(ad_model, layer_norm_b)},
        {"multi_modal_projector.linear.weight", offsetof(ad_model, projector_w)},
        {"multi_modal_projector.linear.bias", offsetof(ad_model, projector_b)},
        {"language_model.model.embed_tokens.weight", offsetof(ad_model, embed_tokens)},
        {"language_model.model.norm.weight", offsetof(ad_model, norm_w)},
        {"language_model.lm_head.weight", offsetof(ad_model, lm_head)},
    };
    for (size_t i = 0; i < sizeof globals / sizeof globals[0]; i++)
        if (strcmp(globals[i].name, name) == 0) return (ad_tensor *)((char *)m + globals[i].offset);
    int layer, used = 0;
    if (sscanf(name, "audio_tower.layers.%d.%n", &layer, &used) == 1 && used > 0 && layer >= 0 &&
        layer < m->cfg.encoder_layers)
        return find_layer_slot(&m->encoder[layer], encoder_slots,
                               sizeof encoder_slots / sizeof encoder_slots[0], name + used);
    used = 0;
    if (sscanf(name, "language_model.model.layers.%d.%n", &layer, &used) == 1 && used > 0 &&
        layer >= 0 && layer < m->cfg.num_hidden_layers)
        return find_layer_slot(&m->decoder[layer], decoder_slots,
                               sizeof decoder_slots / sizeof decoder_slots[0], name + used);
    return NULL;
}

static void describe_shape(char *buf, size_t size, int ndim, const int64_t *shape) {
    size_t at = (size_t)snprintf(buf, size, "[");
    for (int d = 0; d < ndim && at < size; d++)
        at += (size_t)snprintf(buf + at, size - at, "%s%lld", d ? ", " : "", (long long)shape[d]);
    if (at < size) snprintf(buf + at, size - at, "]");
}

/* Moves a host quantized weight's codes, scales and zeros into one device allocation (codes,
 * then scales and zeros at 256-byte offsets) and repoints q at it; the host arrays are freed. */
static int quant_to_device(ad_backend *be, ad_quant_tensor *q) {
    const int64_t groups = q->rows * (q->cols / q->spec.group_size);
    const size_t code_bytes = (size_t)(q->rows * ad_quant_row_bytes(&q->spec, q->cols));
    const size_t scale_at = (code_bytes + 255) & ~(size_t)255;
    const size_t zero_at = (scale_at + sizeof(uint16_t) * (size_t)groups + 255) & ~(size_t)255;
    const size_t total = zero_at + (q->zeros ? (size_t)groups : 0);
    uint8_t *host = ad_calloc(total, 1, "quantized weight staging");
    if (!host) return AD_ERR;
    memcpy(host, q->codes, code_bytes);
    memcpy(host + scale_at, q->scales, sizeof(uint16_t) * (size_t)groups);
    if (q->zeros) memcpy(host + zero_at, q->zeros, (size_t)groups);
    void *dev = NULL;
    ad_tensor src, dst;
    int rc = be->alloc(be, total, &dev);
    if (rc == AD_OK) {
        ad_tensor_init(&src, host, AD_U8, AD_DEVICE_CPU, 1, (int64_t[]){(int64_t)total}, "codes");
        ad_tensor_init(&dst, dev, AD_U8, be->device, 1, (int64_t[]){(int64_t)total}, "codes");
        rc = be->upload(be, &dst, &src);
        if (rc < 0) be->release(be, dev);
    }
    free(host);
    AD_TRY(rc);
    const bool has_zeros = q->zeros != NULL;
    free(q->codes), free(q->scales), free(q->zeros);
    q->codes = dev;
    q->scales = (uint16_t *)((uint8_t *)dev + scale_at);
    q->zeros = has_zeros ? (uint8_t *)dev + zero_at : NULL;
    return AD_OK;
}

/* Copies a quantized weight's parts out of the file into memory the model owns and points
 * the slot (dtype AD_QGROUP) at them: host memory for the CPU backend's dequantizing matmul,
 * one device allocation for a device backend (m->quant_on_device). */
static int load_quantized(ad_model *m, const ad_safetensors *st, const ad_quant_entry *qe,
                          ad_tensor *slot) {
    ad_quant_tensor view, *q = ad_calloc(1, sizeof *q, "quantized weight");
    if (!q) return AD_ERR;
    void **g =
        ad_realloc(m->quant_owned, sizeof *g * (size_t)(m->n_quant_owned + 1), "quantized weights");
    if (!g) {
        free(q);
        return AD_ERR;
    }
    m->quant_owned = g;
    m->quant_owned[m->n_quant_owned++] = q;
    m->quant_on_device = m->be->device != AD_DEVICE_CPU;
    int rc = ad_quant_view(st, qe, &view);
    if (rc == AD_OK) rc = ad_quant_alloc(q, &qe->spec, qe->rows, qe->cols, qe->name);
    if (rc == AD_OK) {
        const int64_t groups = qe->rows * (qe->cols / qe->spec.group_size);
        memcpy(q->codes, view.codes, (size_t)(qe->rows * ad_quant_row_bytes(&qe->spec, qe->cols)));
        memcpy(q->scales, view.scales, sizeof(uint16_t) * (size_t)groups);
        if (q->zeros) memcpy(q->zeros, view.zeros, (size_t)groups);
        if (m->quant_on_device) rc = quant_to_device(m->be, q);
    }
    if (rc < 0) {
        /* Nothing of q on the device: free its host arrays here, so that ad_model_free (which
         * releases device copies) finds codes NULL. */
        if (m->quant_on_device) ad_quant_free(q);
        return rc;
    }
    AD_TRY(ad_tensor_init(slot, q->codes, AD_QGROUP, m->be->device, 2,
                          (int64_t[]){qe->rows, qe->cols}, NULL));
    slot->quant = q;
    return AD_OK;
}

/* Uploads the f32 values a quantized weight stands for into an ordinary slot. */
static int load_dequantized(ad_model *m, const ad_safetensors *st, const ad_quant_entry *qe,
                            ad_tensor *slot) {
    ad_quant_tensor view;
    AD_TRY(ad_quant_view(st, qe, &view));
    float *host = ad_malloc(sizeof(float) * (size_t)(qe->rows * qe->cols), qe->name);
    if (!host) return AD_ERR;
    ad_quant_dequantize_rows(&view, 0, qe->rows, host);
    ad_tensor src;
    ad_tensor_init(&src, host, AD_F32, AD_DEVICE_CPU, 2, (int64_t[]){qe->rows, qe->cols}, qe->name);
    int rc = m->be->upload(m->be, slot, &src);
    free(host);
    return rc;
}

/* How load_model stores the weights: wdt, except those `pick` chooses, in `picked` with an
 * fp32 host copy of the file's values kept (m->masters). */
typedef struct {
    ad_dtype wdt, picked;
    bool (*pick)(const ad_weight_spec *spec, void *ctx);
    void *ctx;
} weight_dtypes;

static bool picked(const weight_dtypes *d, const ad_weight_spec *sp) {
    return d->pick && d->pick(sp, d->ctx);
}

static int load_model(ad_model *m, ad_backend *be, const ad_model_config *cfg,
                      const char *weights_path, bool dequantize, const weight_dtypes *dt) {
    const ad_dtype wdt = dt->wdt;
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->be = be;
    ad_weight_spec *specs = NULL;
    int n_specs = 0;
    ad_safetensors st;
    memset(&st, 0, sizeof st);
    int *matched = NULL;
    char *part_used = NULL;
    ad_quant_index qindex = {0};
    char(*canon)[AD_WEIGHT_NAME_MAX * 2] = NULL;
    int rc = AD_ERR;

    m->encoder = ad_calloc((size_t)(cfg->encoder_layers + 1), sizeof *m->encoder, "encoder layers");
    m->decoder =
        ad_calloc((size_t)(cfg->num_hidden_layers + 1), sizeof *m->decoder, "decoder layers");
    if (!m->encoder || !m->decoder) goto done;
    if (ad_weight_specs(cfg, &specs, &n_specs) < 0) goto done;
    if (ad_safetensors_open(&st, weights_path) < 0) goto done;
    if (ad_quant_index_load(&st, &qindex) < 0) goto done;
    matched = ad_calloc((size_t)n_specs + 1, sizeof *matched, "weight matches");
    part_used = ad_calloc((size_t)st.n_entries + 1, sizeof *part_used, "weight matches");
    if (!part_used) goto done;
    canon = ad_calloc((size_t)st.n_entries + 1, sizeof *canon, "tensor names");
    if (!matched || !canon) goto done;
    for (int i = 0; i < st.n_entries; i++)
        ad_canonical_tensor_name(st.entries[i].name, canon[i], sizeof canon[i]);

    /* Match every expected tensor to the file and check its shape before anything is uploaded,
     * so a wrong checkpoint fails fast with the first problem named. */
    ad_arena_plan plan = {0};
    for (int s = 0; s < n_specs; s++) {
        const ad_weight_spec *sp = &specs[s];
        const ad_quant_entry *qe = ad_quant_index_find(&qindex, sp->name);
        if (qe) {
            /* A group-quantized weight: its parts (.qcodes/.qscales/.qzeros) stand for it. */
            if (sp->ndim != 2 || qe->rows != sp->shape[0] || qe->cols != sp->shape[1]) {
                ad_fail(
                    "%s: quantized tensor %s is [%lld, %lld] but config.json implies [%lld, %lld]",
                    weights_path, sp->name, (long long)qe->rows, (long long)qe->cols,
                    (long long)sp->shape[0], (long long)(sp->ndim > 1 ? sp->shape[1] : 1));
                goto done;
            }
            for (int i = 0; i < st.n_entries; i++) {
                size_t n = strlen(sp->name);
                if (!strncmp(st.entries[i].name, sp->name, n) && st.entries[i].name[n] == '.' &&
                    st.entries[i].name[n + 1] == 'q')
                    part_used[i] = 1;
            }
            matched[s] = -1;
            if (dequantize) {
                ad_arena_plan_tensor(&plan, wdt, sp->ndim, sp->shape);
                m->n_dequantized++;
            } else {
                m->n_quantized++;
            }
            continue;
        }
        int found = -1;
        for (int i = 0; i < st.n_entries && found < 0; i++)
            if (strcmp(canon[i], sp->name) == 0) found = i;
        if (found < 0) {
            ad_fail("%s: tensor %s is missing (config.json implies it with shape [%lld%s%s])",
                    weights_path, sp->name, (long long)sp->shape[0], sp->ndim > 1 ? ", ..." : "",
                    "");
            goto done;
        }
        const ad_st_entry *e = &st.entries[found];
        bool same = e->ndim == sp->ndim;
        for (int d = 0; same && d < e->ndim; d++)
            same = e->shape[d] == sp->shape[d];
        if (!same) {
            char got[96], want[96];
            describe_shape(got, sizeof got, e->ndim, e->shape);
            describe_shape(want, sizeof want, sp->ndim, sp->shape);
            ad_fail("%s: tensor %s has shape %s but config.json implies %s", weights_path, e->name,
                    got, want);
            goto done;
        }
        matched[s] = found;
        ad_arena_plan_tensor(&plan, picked(dt, sp) ? dt->picked : wdt, sp->ndim, sp->shape);
    }
    for (int i = 0; i < st.n_entries; i++) {
        bool used = false;
        used = part_used[i] != 0;
        for (int s = 0; s < n_specs && !used; s++)
            used = matched[s] == i;
        if (!used) {
            ad_fail("%s: tensor %s is not part of the model config.json describes (%d encoder "
                    "layers, %d decoder layers%s)",
                    weights_path, st.entries[i].name, cfg->encoder_layers, cfg->num_hidden_layers,
                    cfg->tie_word_embeddings ? ", tied lm_head" : "");
            goto done;
        }
    }

    m->weight_bytes = plan.bytes;
    if (be->alloc(be, plan.bytes ? plan.bytes : 1, &m->weight_memory) < 0) {
        ad_fail_context("allocating %zu bytes of weights for %s", plan.bytes, weights_path);
        goto done;
    }
    ad_arena arena;
    ad_arena_wrap(&arena, m->weight_memory, plan.bytes, "weights");
    for (int s = 0; s < n_specs; s++) {
        const ad_weight_spec *sp = &specs[s];
        ad_tensor *slot = weight_slot(m, sp->name);
        if (!slot) {
            ad_fail("internal: no slot for weight %s", sp->name);
            goto done;
        }
        if (matched[s] < 0 && !dequantize) {
            if (load_quantized(m, &st, ad_quant_index_find(&qindex, sp->name), slot) < 0) {
                ad_fail_context("%s: loading %s", weights_path, sp->name);
                goto done;
            }
            slot->name = sp->name;
            continue;
        }
        const bool keep_master = matched[s] >= 0 && picked(dt, sp);
        if (ad_arena_tensor(&arena, slot, keep_master ? dt->picked : wdt, sp->ndim, sp->shape,
                            sp->name) < 0)
            goto done;
        slot->device = be->device;
        slot->name = sp->name; /* the model keeps `specs` (error messages, op profiles) */
        if (matched[s] < 0) {
            if (load_dequantized(m, &st, ad_quant_index_find(&qindex, sp->name), slot) < 0) {
                ad_fail_context("%s: loading %s", weights_path, sp->name);
                goto done;
            }
            continue;
        }
        ad_tensor src;
        if (ad_safetensors_view(&st, &st.entries[matched[s]], &src) < 0 ||
            be->upload(be, slot, &src) < 0) {
            ad_fail_context("%s: loading %s", weights_path, sp->name);
            goto done;
        }
        if (keep_master) {
            if (!m->masters &&
                !(m->masters = ad_calloc((size_t)n_specs, sizeof *m->masters, "fp32 masters")))
                goto done;
            m->masters[s] = ad_malloc(sizeof(float) * (size_t)ad_weight_spec_numel(sp), sp->name);
            if (!m->masters[s] || ad_tensor_to_f32(&src, m->masters[s]) < 0) {
                ad_fail_context("%s: the fp32 values of %s", weights_path, sp->name);
                goto done;
            }
        }
    }
    if (cfg->tie_word_embeddings) m->lm_head = m->embed_tokens;
    rc = AD_OK;
done:
    free(canon);
    free(matched);
    free(part_used);
    ad_quant_index_free(&qindex);
    if (rc == AD_OK) {
        m->specs = specs;
        m->n_specs = n_specs;
    } else {
        free(specs);
    }
    if (st.entries || st.shards) ad_safetensors_close(&st);
    if (rc < 0) {
        for (int s = 0; m->masters && s < n_specs; s++)
            free(m->masters[s]); /* ad_model_free knows no specs yet */
        ad_model_free(m);
    }
    return rc;
}

int ad_model_load_config(ad_model *m, ad_backend *be, const ad_model_config *cfg,
                         const char *weights_path) {
    const weight_dtypes dt = {be->act_dtype, be->act_dtype, NULL, NULL};
    return load_model(m, be, cfg, weights_path, false, &dt);
}

static int load_dir(ad_model *m, ad_backend *be, const char *dir, bool dequantize,
                    const weight_dtypes *dt) {
    memset(m, 0, sizeof *m);
    char *config_path = ad_path_join(dir, "config.json");
    if (!config_path) return AD_ERR;
    ad_model_config cfg;
    int rc = ad_model_config_load(config_path, &cfg);
    free(config_path);
    AD_TRY(rc);
    return load_model(m, be, &cfg, dir, dequantize, dt);
}

int ad_model_load(ad_model *m, ad_backend *be, const char *dir) {
    const weight_dtypes dt = {be->act_dtype, be->act_dtype, NULL, NULL};
    return load_dir(m, be, dir, false, &dt);
}

static int check_float_dtype(const char *dir, ad_dtype weights) {
    if (weights != AD_F32 && weights != AD_BF16)
        return ad_fail("%s: weights can be loaded as F32 or BF16, not %s", dir,
                       ad_dtype_name(weights));
    return AD_OK;
}

int ad_model_load_as(ad_model *m, ad_backend *be, const char *dir, ad_dtype weights) {
    AD_TRY(check_float_dtype(dir, weights));
    const weight_dtypes dt = {weights, weights, NULL, NULL};
    return load_dir(m, be, dir, false, &dt);
}

int ad_model_load_mixed(ad_model *m, ad_backend *be, const char *dir, bool dequantize,
                        ad_dtype picked_dtype, bool (*pick)(const ad_weight_spec *spec, void *ctx),
                        void *ctx) {
    AD_TRY(check_float_dtype(dir, picked_dtype));
    const weight_dtypes dt = {be->act_dtype, picked_dtype, pick, ctx};
    return load_dir(m, be, dir, dequantize, &dt);
}

int ad_model_load_dequantized(ad_model *m, ad_backend *be, const char *dir) {
    const weight_dtypes dt = {be->act_dtype, be->act_dtype, NULL, NULL};
    return load_dir(m, be, dir, true, &dt);
}

/* The kept fp32 values of weight `name`, or NULL. */
static float **master_slot(const ad_model *m, const char *name) {
    for (int s = 0; m->masters && s < m->n_specs; s++)
        if (!strcmp(m->specs[s].name, name)) return &m->masters[s];
    return NULL;
}

const float *ad_model_master(const ad_model *m, const char *name) {
    float **slot = master_slot(m, name);
    return slot ? *slot : NULL;
}

float *ad_model_take_master(ad_model *m, const char *name) {
    float **slot = master_slot(m, name), *x = slot ? *slot : NULL;
    if (slot) *slot = NULL;
    return x;
}

void ad_model_free_masters(ad_model *m) {
    for (int s = 0; m->masters && s < m->n_specs; s++)
        free(m->masters[s]);
    free(m->masters);
    m->masters = NULL;
}

void ad_model_free(ad_model *m) {
    if (m->weight_memory) m->be->release(m->be, m->weight_memory);
    ad_model_free_masters(m);
    for (int i = 0; i < m->n_quant_owned; i++) {
        ad_quant_tensor *q = m->quant_owned[i];
        if (m->quant_on_device) {
            if (q->codes) m->be->release(m->be, q->codes); /* scales and zeros share it */
        } else {
            ad_quant_free(q);
        }
        free(q);
    }
    free(m->quant_owned);
    free(m->encoder);
    free(m->decoder);
    free(m->specs);
    memset(m, 0, sizeof *m);
}

/* ---- state and scratch ------------------------------------------------------------------- */

/* Carves tensors from the state arena, or only adds them up when planning, so the size planned
 * and the tensors carved come from the same code. */
typedef struct {
    ad_arena *arena;     /* NULL when planning */
    ad_arena_plan *plan; /* NULL when carving */
    ad_device device;
} carver;

static int carve(carver *c, ad_tensor *t, ad_dtype dtype, int ndim, const int64_t *shape,
                 const char *name) {
    if (c->plan) {
        ad_arena_plan_tensor(c->plan, dtype, ndim, shape);
        return ad_tensor_init(t, NULL, dtype, c->device, ndim, shape, name);
    }
    AD_TRY(ad_arena_tensor(c->arena, t, dtype, ndim, shape, name));
    t->device = c->device;
    return AD_OK;
}

#define SHAPE(...) ((const int64_t[]){__VA_ARGS__})

static int max_encoder_attn(const ad_model_config *c) {
    int w = 0;
    for (int i = 0; i < c->encoder_layers; i++) {
        int a = c->encoder_layer[i].num_attention_heads * c->encoder_head_dim;
        if (a > w) w = a;
    }
    return w;
}
static int max_encoder_ffn(const ad_model_config *c) {
    int w = 0;
    for (int i = 0; i < c->encoder_layers; i++)
        if (c->encoder_layer[i].ffn_dim > w) w = c->encoder_layer[i].ffn_dim;
    return w;
}
static int max_decoder_q(const ad_model_config *c) {
    int w = 0;
    for (int i = 0; i < c->num_hidden_layers; i++) {
        int a = c->decoder_layer[i].num_attention_heads * c->head_dim;
        if (a > w) w = a;
    }
    return w;
}
static int max_decoder_kv(const ad_model_config *c) {
    int w = 0;
    for (int i = 0; i < c->num_hidden_layers; i++) {
        int a = c->decoder_layer[i].num_key_value_heads * c->head_dim;
        if (a > w) w = a;
    }
    return w;
}
static int max_decoder_ffn(const ad_model_config *c) {
    int w = 0;
    for (int i = 0; i < c->num_hidden_layers; i++)
        if (c->decoder_layer[i].intermediate_size > w) w = c->decoder_layer[i].intermediate_size;
    return w;
}

typedef struct {
    ad_tensor feat, featT, x0, a1, a1c, h, xn, q, k, v, att, tmp, f, pooled;
} encoder_scratch;

static int encoder_scratch_carve(carver *c, const ad_model_config *cfg, int64_t C, int64_t T,
                                 int64_t L_in, int64_t n1, int64_t tok, encoder_scratch *s) {
    const int64_t mel = cfg->num_mel_bins, d = cfg->d_model;
    const int64_t A = max_encoder_attn(cfg), F = max_encoder_ffn(cfg);
    const ad_dtype dt = AD_F32;
    AD_TRY(carve(c, &s->feat, dt, 3, SHAPE(C, mel, T), "features"));
    AD_TRY(carve(c, &s->featT, dt, 3, SHAPE(C, T, mel), "features (time major)"));
    AD_TRY(carve(c, &s->x0, dt, 3, SHAPE(C, L_in, mel), "conv1 input"));
    AD_TRY(carve(c, &s->a1, dt, 3, SHAPE(C, L_in, d), "conv1 output"));
    AD_TRY(carve(c, &s->a1c, dt, 3, SHAPE(C, 2 * n1, d), "conv2 input"));
    AD_TRY(carve(c, &s->h, dt, 3, SHAPE(C, n1, d), "encoder hidden"));
    AD_TRY(carve(c, &s->xn, dt, 3, SHAPE(C, n1, d), "encoder normed"));
    AD_TRY(carve(c, &s->q, dt, 3, SHAPE(C, n1, A), "encoder q"));
    AD_TRY(carve(c, &s->k, dt, 3, SHAPE(C, n1, A), "encoder k"));
    AD_TRY(carve(c, &s->v, dt, 3, SHAPE(C, n1, A), "encoder v"));
    AD_TRY(carve(c, &s->att, dt, 3, SHAPE(C, n1, A), "encoder attention"));
    AD_TRY(carve(c, &s->tmp, dt, 3, SHAPE(C, n1, d), "encoder branch"));
    AD_TRY(carve(c, &s->f, dt, 3, SHAPE(C, n1, F), "encoder ffn"));
    AD_TRY(carve(c, &s->pooled, dt, 3, SHAPE(C, tok, d), "pooled"));
    return AD_OK;
}

typedef struct {
    ad_tensor ids, pos, rows, x, xn, q, k, v, att, tmp, g, u, sel;
} decoder_scratch;

static int decoder_scratch_carve(carver *c, const ad_model_config *cfg, int64_t N, int64_t n_index,
                                 int64_t n_logits, decoder_scratch *s) {
    const int64_t H = cfg->hidden_size, Q = max_decoder_q(cfg), KV = max_decoder_kv(cfg),
                  F = max_decoder_ffn(cfg);
    const ad_dtype dt = AD_F32;
    AD_TRY(carve(c, &s->ids, AD_I32, 1, SHAPE(N), "token ids"));
    AD_TRY(carve(c, &s->pos, AD_I32, 1, SHAPE(N), "positions"));
    AD_TRY(carve(c, &s->rows, AD_I32, 1, SHAPE(n_index), "row indices"));
    AD_TRY(carve(c, &s->x, dt, 2, SHAPE(N, H), "decoder hidden"));
    AD_TRY(carve(c, &s->xn, dt, 2, SHAPE(N, H), "decoder normed"));
    AD_TRY(carve(c, &s->q, dt, 2, SHAPE(N, Q), "decoder q"));
    AD_TRY(carve(c, &s->k, dt, 2, SHAPE(N, KV), "decoder k"));
    AD_TRY(carve(c, &s->v, dt, 2, SHAPE(N, KV), "decoder v"));
    AD_TRY(carve(c, &s->att, dt, 2, SHAPE(N, Q), "decoder attention"));
    AD_TRY(carve(c, &s->tmp, dt, 2, SHAPE(N, H), "decoder branch"));
    AD_TRY(carve(c, &s->g, dt, 2, SHAPE(N, F), "decoder gate"));
    AD_TRY(carve(c, &s->u, dt, 2, SHAPE(N, F), "decoder up"));
    AD_TRY(carve(c, &s->sel, dt, 2, SHAPE(n_logits, H), "selected rows"));
    return AD_OK;
}

static int max_audio_tokens(const ad_model_limits *lim) {
    return lim->max_frames >= 3 ? ad_audio_tokens(lim->max_frames) : 1;
}

/* Everything the state holds: persistent tensors first, then the largest scratch of the three
 * phases (encoder, decoder, cache reorder). */
static int state_layout(ad_model_state *st, carver *c) {
    const ad_model_config *cfg = &st->m->cfg;
    const ad_model_limits *L = &st->lim;
    const int64_t tok = max_audio_tokens(L);
    for (int l = 0; l < cfg->num_hidden_layers; l++) {
        const int64_t kv = (int64_t)cfg->decoder_layer[l].num_key_value_heads * cfg->head_dim;
        AD_TRY(
            carve(c, &st->k_cache[l], AD_F32, 3, SHAPE(L->max_rows, L->max_tokens, kv), "k cache"));
        AD_TRY(
            carve(c, &st->v_cache[l], AD_F32, 3, SHAPE(L->max_rows, L->max_tokens, kv), "v cache"));
    }
    AD_TRY(carve(c, &st->audio, AD_F32, 3, SHAPE(L->max_clips, tok, cfg->hidden_size),
                 "audio features"));
    AD_TRY(carve(c, &st->encoder_out, AD_F32, 3, SHAPE(L->max_clips, tok, cfg->d_model),
                 "encoder output"));
    AD_TRY(carve(c, &st->logits, AD_F32, 2, SHAPE(L->max_logit_rows, cfg->vocab_size), "logits"));
    const int64_t N = (int64_t)L->max_rows * L->max_step_tokens;
    AD_TRY(carve(c, &st->hidden, AD_F32, 2, SHAPE(N, cfg->hidden_size), "final hidden"));
    return AD_OK;
}

static size_t scratch_bytes(const ad_model_state *st) {
    const ad_model_config *cfg = &st->m->cfg;
    const ad_model_limits *L = &st->lim;
    carver c = {NULL, NULL, st->m->be->device};
    size_t best = 0;
    ad_arena_plan p = {0};
    c.plan = &p;
    encoder_scratch es;
    const int64_t n1 = ad_audio_conv_frames(L->max_frames);
    if (encoder_scratch_carve(&c, cfg, L->max_clips, L->max_frames, L->max_frames, n1,
                              max_audio_tokens(L), &es) == 0 &&
        p.bytes > best)
        best = p.bytes;
    memset(&p, 0, sizeof p);
    decoder_scratch ds;
    const int64_t N = (int64_t)L->max_rows * L->max_step_tokens;
    int64_t n_index = N > L->max_logit_rows ? N : L->max_logit_rows;
    if (decoder_scratch_carve(&c, cfg, N, n_index, L->max_logit_rows, &ds) == 0 && p.bytes > best)
        best = p.bytes;
    memset(&p, 0, sizeof p);
    ad_tensor t;
    if (carve(&c, &t, AD_F32, 3,
              SHAPE(L->max_rows, L->max_tokens, max_decoder_kv(cfg) ? max_decoder_kv(cfg) : 1),
              "reorder") == 0 &&
        p.bytes > best)
        best = p.bytes;
    return best;
}

int ad_model_state_init(ad_model_state *st, ad_model *m, const ad_model_limits *lim) {
    memset(st, 0, sizeof *st);
    st->m = m;
    st->lim = *lim;
    const ad_model_config *cfg = &m->cfg;
    if (lim->max_clips < 1 || lim->max_rows < 1 || lim->max_tokens < 1 ||
        lim->max_step_tokens < 1 || lim->max_logit_rows < 1 || lim->max_frames < 3)
        return ad_fail("model state limits must be positive (max_frames >= 3)");
    if (lim->max_frames > 2 * cfg->max_source_positions)
        return ad_fail("max_frames %d exceeds the encoder's %d frames (2 * max_source_positions)",
                       lim->max_frames, 2 * cfg->max_source_positions);
    if (lim->max_step_tokens > lim->max_tokens)
        return ad_fail("max_step_tokens %d exceeds max_tokens %d", lim->max_step_tokens,
                       lim->max_tokens);
    const int n_layers = cfg->num_hidden_layers;
    st->k_cache = ad_calloc((size_t)n_layers + 1, sizeof *st->k_cache, "k cache views");
    st->v_cache = ad_calloc((size_t)n_layers + 1, sizeof *st->v_cache, "v cache views");
    st->cache_len = ad_calloc((size_t)lim->max_rows, sizeof *st->cache_len, "cache lengths");
    st->key_len = ad_calloc((size_t)lim->max_rows, sizeof *st->key_len, "key lengths");
    st->audio_tokens = ad_calloc((size_t)lim->max_clips, sizeof *st->audio_tokens, "audio tokens");
    const size_t N = (size_t)lim->max_rows * (size_t)lim->max_step_tokens;
    const size_t n_index = N > (size_t)lim->max_logit_rows ? N : (size_t)lim->max_logit_rows;
    st->host_ids = ad_calloc(N, sizeof *st->host_ids, "token ids");
    st->host_pos = ad_calloc(N, sizeof *st->host_pos, "positions");
    st->host_rows = ad_calloc(n_index, sizeof *st->host_rows, "row indices");
    if (!st->k_cache || !st->v_cache || !st->cache_len || !st->key_len || !st->audio_tokens ||
        !st->host_ids || !st->host_pos || !st->host_rows)
        goto fail;

    ad_arena_plan plan = {0};
    carver c = {NULL, &plan, m->be->device};
    if (state_layout(st, &c) < 0) goto fail;
    const size_t total = plan.bytes + scratch_bytes(st);
    if (m->be->alloc(m->be, total, &st->memory) < 0) {
        ad_fail_context("allocating %zu bytes of model activations", total);
        goto fail;
    }
    ad_arena_wrap(&st->arena, st->memory, total, "activations");
    c.plan = NULL;
    c.arena = &st->arena;
    if (state_layout(st, &c) < 0) goto fail;
    st->scratch_mark = ad_arena_mark(&st->arena);
    return AD_OK;
fail:
    ad_model_state_free(st);
    return AD_ERR;
}

void ad_model_state_free(ad_model_state *st) {
    if (st->memory) st->m->be->release(st->m->be, st->memory);
    free(st->k_cache);
    free(st->v_cache);
    free(st->cache_len);
    free(st->key_len);
    free(st->audio_tokens);
    free(st->host_ids);
    free(st->host_pos);
    free(st->host_rows);
    memset(st, 0, sizeof *st);
}

void ad_model_state_reset(ad_model_state *st) {
    memset(st->cache_len, 0, sizeof *st->cache_len * (size_t)st->lim.max_rows);
}

/* A contiguous tensor of a new shape over the start of `t`'s memory (t's capacity suffices). */
static ad_tensor view(const ad_tensor *t, int ndim, const int64_t *shape) {
    ad_tensor v;
    ad_tensor_init(&v, t->data, t->dtype, t->device, ndim, shape, t->name);
    return v;
}

static int upload_i32(ad_backend *be, ad_tensor *dst, const int32_t *host, int64_t n) {
    ad_tensor src, d = view(dst, 1, &n);
    AD_TRY(ad_tensor_init(&src, (void *)host, AD_I32, AD_DEVICE_CPU, 1, &n, "host indices"));
    AD_TRY(be->upload(be, &d, &src));
    *dst = d;
    return AD_OK;
}

/* ---- audio encoder ----------------------------------------------------------------------- */

int ad_model_encode(ad_model_state *st, const ad_tensor *features, const int *frames) {
    ad_model *m = st->m;
    ad_backend *be = m->be;
    const ad_model_config *cfg = &m->cfg;
    if (features->ndim != 3 || features->dtype != AD_F32 || features->device != AD_DEVICE_CPU ||
        !ad_tensor_is_contiguous(features))
        return ad_fail("encoder input must be contiguous host F32 [clips, mel bins, frames]");
    const int C = (int)features->shape[0], T = (int)features->shape[2];
    if (features->shape[1] != cfg->num_mel_bins)
        return ad_fail("encoder input has %lld mel bins, the model expects %d (num_mel_bins)",
                       (long long)features->shape[1], cfg->num_mel_bins);
    if (C < 1 || C > st->lim.max_clips)
        return ad_fail("encoder input has %d clips; the state allows 1..%d", C, st->lim.max_clips);
    if (T > st->lim.max_frames)
        return ad_fail("encoder input has %d frames; the state allows %d (at most "
                       "2 * max_source_positions = %d)",
                       T, st->lim.max_frames, 2 * cfg->max_source_positions);
    int n1 = 0;
    for (int c = 0; c < C; c++) {
        if (frames[c] < 3 || frames[c] > T)
            return ad_fail("clip %d: %d valid frames, expected 3..%d", c, frames[c], T);
        if (ad_audio_conv_frames(frames[c]) > n1) n1 = ad_audio_conv_frames(frames[c]);
    }
    /* The reference convolves all 2 * max_source_positions frames and masks attention keys
     * past each clip's n1 conv frames; pooling then reads only valid rows. So the valid outputs
     * depend on the first n1 conv2 rows, which read conv1 rows < 2*n1, which read input frames
     * <= 2*n1. Computing L_in = 2*n1 + 1 frames (conv1's zero padding only touches row 2*n1,
     * which is dropped) gives the same valid rows as the padded reference. */
    const int L_in = T < 2 * n1 + 1 ? T : 2 * n1 + 1;
    const int n2_in = L_in < 2 * n1 ? L_in : 2 * n1;
    const int tok = (n1 - 2) / 2 + 1;
    const int64_t d = cfg->d_model, H = cfg->hidden_size;

    ad_arena_reset(&st->arena, st->scratch_mark);
    carver c = {&st->arena, NULL, be->device};
    encoder_scratch s;
    AD_TRY(encoder_scratch_carve(&c, cfg, C, T, L_in, n1, tok, &s));
    AD_TRY(be->upload(be, &s.feat, features));
    AD_TRY(be->transpose(be, &s.featT, &s.feat));
    ad_tensor *x0 = &s.featT;
    if (L_in < T) {
        ad_tensor part;
        AD_TRY(ad_tensor_slice(&s.featT, 1, 0, L_in, &part));
        AD_TRY(be->copy(be, &s.x0, &part));
        x0 = &s.x0;
    }
    AD_TRY(be->conv1d(be, &s.a1, x0, &m->conv1_w, &m->conv1_b, 1, 1));
    AD_TRY(be->gelu(be, &s.a1, &s.a1));
    ad_tensor *a1c = &s.a1;
    if (n2_in < L_in) {
        ad_tensor part;
        AD_TRY(ad_tensor_slice(&s.a1, 1, 0, n2_in, &part));
        s.a1c = view(&s.a1c, 3, SHAPE(C, n2_in, d));
        AD_TRY(be->copy(be, &s.a1c, &part));
        a1c = &s.a1c;
    }
    AD_TRY(be->conv1d(be, &s.h, a1c, &m->conv2_w, &m->conv2_b, 2, 1));
    AD_TRY(be->gelu(be, &s.h, &s.h));
    ad_tensor pos;
    AD_TRY(ad_tensor_slice(&m->embed_positions, 0, 0, n1, &pos));
    AD_TRY(be->add(be, &s.h, &s.h, &pos));

    int *key_len = st->key_len;
    for (int i = 0; i < C; i++)
        key_len[i] = ad_audio_conv_frames(frames[i]);
    for (int l = 0; l < cfg->encoder_layers; l++) {
        const ad_encoder_layer *w = &m->encoder[l];
        const int heads = cfg->encoder_layer[l].num_attention_heads;
        const int64_t A = (int64_t)heads * cfg->encoder_head_dim;
        ad_tensor q = view(&s.q, 3, SHAPE(C, n1, A)), k = view(&s.k, 3, SHAPE(C, n1, A)),
                  v = view(&s.v, 3, SHAPE(C, n1, A)), att = view(&s.att, 3, SHAPE(C, n1, A));
        ad_tensor f = view(&s.f, 3, SHAPE(C, n1, cfg->encoder_layer[l].ffn_dim));
        AD_TRY(be->layernorm(be, &s.xn, &s.h, &w->self_attn_layer_norm_w,
                             &w->self_attn_layer_norm_b, ENCODER_LAYER_NORM_EPS));
        AD_TRY(be->linear(be, &q, &s.xn, &w->q_proj_w, &w->q_proj_b));
        AD_TRY(be->linear(be, &k, &s.xn, &w->k_proj_w, NULL));
        AD_TRY(be->linear(be, &v, &s.xn, &w->v_proj_w, &w->v_proj_b));
        ad_attention_params ap = {.n_heads = heads,
                                  .n_kv_heads = heads,
                                  .head_dim = cfg->encoder_head_dim,
                                  .causal = false,
                                  .q_offset = 0,
                                  .scale = 1.0f / sqrtf((float)cfg->encoder_head_dim),
                                  .key_len = key_len};
        AD_TRY(be->attention(be, &att, &q, &k, &v, &ap));
        AD_TRY(be->linear(be, &s.tmp, &att, &w->out_proj_w, &w->out_proj_b));
        AD_TRY(be->add(be, &s.h, &s.h, &s.tmp));
        AD_TRY(be->layernorm(be, &s.xn, &s.h, &w->final_layer_norm_w, &w->final_layer_norm_b,
                             ENCODER_LAYER_NORM_EPS));
        AD_TRY(be->linear(be, &f, &s.xn, &w->fc1_w, &w->fc1_b));
        AD_TRY(be->gelu(be, &f, &f));
        AD_TRY(be->linear(be, &s.tmp, &f, &w->fc2_w, &w->fc2_b));
        AD_TRY(be->add(be, &s.h, &s.h, &s.tmp));
    }
    /* Qwen2-Audio pools before its final LayerNorm (unlike Whisper, which has no pooling). */
    AD_TRY(be->avg_pool1d(be, &s.pooled, &s.h, 2, 2));
    ad_tensor enc = view(&st->encoder_out, 3, SHAPE(C, tok, d));
    ad_tensor audio = view(&st->audio, 3, SHAPE(C, tok, H));
    AD_TRY(be->layernorm(be, &enc, &s.pooled, &m->layer_norm_w, &m->layer_norm_b,
                         ENCODER_LAYER_NORM_EPS));
    AD_TRY(be->linear(be, &audio, &enc, &m->projector_w, &m->projector_b));
    st->n_clips = C;
    st->audio_tokens_max = tok;
    for (int i = 0; i < C; i++)
        st->audio_tokens[i] = ad_audio_tokens(frames[i]);
    ad_arena_reset(&st->arena, st->scratch_mark);
    return AD_OK;
}

/* ---- decoder ----------------------------------------------------------------------------- */

int ad_model_decode(ad_model_state *st, const ad_decode_input *in, const int *logit_rows,
                    int n_logit_rows) {
    ad_model *m = st->m;
    ad_backend *be = m->be;
    const ad_model_config *cfg = &m->cfg;
    const int R = in->n_rows, T = in->n_tokens;
    if (R < 1 || R > st->lim.max_rows || T < 1 || T > st->lim.max_step_tokens)
        return ad_fail("decoder call with %d rows x %d tokens; the state allows %d x %d", R, T,
                       st->lim.max_rows, st->lim.max_step_tokens);
    if (n_logit_rows < 0 || n_logit_rows > st->lim.max_logit_rows)
        return ad_fail("%d logit rows requested; the state allows %d", n_logit_rows,
                       st->lim.max_logit_rows);
    const int64_t N = (int64_t)R * T, H = cfg->hidden_size, hd = cfg->head_dim;
    int past = st->cache_len[0];
    for (int r = 0; r < R; r++) {
        if (in->len[r] < 1 || in->len[r] > T)
            return ad_fail("decoder row %d has %d tokens, expected 1..%d", r, in->len[r], T);
        if (st->cache_len[r] + in->len[r] > st->lim.max_tokens)
            return ad_fail("decoder row %d: %d cached + %d new tokens exceed the KV cache of %d", r,
                           st->cache_len[r], in->len[r], st->lim.max_tokens);
        if (T > 1 && st->cache_len[r] != past)
            return ad_fail("decoder rows with several new tokens must share one cache length "
                           "(row %d has %d, row 0 has %d)",
                           r, st->cache_len[r], past);
    }
    int n_audio = 0;
    for (int64_t i = 0; i < N; i++) {
        const int r = (int)(i / T), t = (int)(i % T);
        const int32_t id = t < in->len[r] ? in->ids[i] : 0;
        if (id < 0 || id >= cfg->vocab_size)
            return ad_fail("token id %d at row %d position %d is outside the vocabulary (%d)", id,
                           r, t, cfg->vocab_size);
        st->host_ids[i] = id;
        st->host_pos[i] = st->cache_len[r] + t;
        if (in->use_audio && t < in->len[r] && id == cfg->audio_token_index)
            st->host_rows[n_audio++] = (int32_t)i;
    }
    if (in->use_audio) {
        int want = 0;
        for (int c = 0; c < st->n_clips; c++)
            want += st->audio_tokens[c];
        if (n_audio != want)
            return ad_fail("audio features and audio tokens do not match: the prompt has %d "
                           "<|AUDIO|> tokens, the %d clip(s) give %d",
                           n_audio, st->n_clips, want);
    }

    ad_arena_reset(&st->arena, st->scratch_mark);
    carver c = {&st->arena, NULL, be->device};
    decoder_scratch s;
    const int64_t n_index = N > n_logit_rows ? N : n_logit_rows;
    AD_TRY(decoder_scratch_carve(&c, cfg, N, n_index, n_logit_rows > 0 ? n_logit_rows : 1, &s));
    AD_TRY(upload_i32(be, &s.ids, st->host_ids, N));
    AD_TRY(upload_i32(be, &s.pos, st->host_pos, N));
    AD_TRY(be->embedding(be, &s.x, &m->embed_tokens, &s.ids));
    if (in->use_audio && n_audio > 0) {
        ad_tensor rows = s.rows;
        AD_TRY(upload_i32(be, &rows, st->host_rows, n_audio));
        int64_t at = 0;
        for (int k = 0; k < st->n_clips; k++) {
            const int64_t n = st->audio_tokens[k];
            ad_tensor src = view(&st->audio, 2, SHAPE(n, H)), idx;
            src.data = (char *)st->audio.data +
                       (size_t)k * (size_t)st->audio_tokens_max * (size_t)H * sizeof(float);
            AD_TRY(ad_tensor_slice(&rows, 0, at, n, &idx));
            AD_TRY(be->scatter_rows(be, &s.x, &src, &idx));
            at += n;
        }
    }
    ad_tensor pos2 = view(&s.pos, 2, SHAPE(R, T));
    int tk = 0;
    for (int r = 0; r < R; r++) {
        st->key_len[r] = st->cache_len[r] + in->len[r];
        if (st->key_len[r] > tk) tk = st->key_len[r];
    }
    const float eps = (float)cfg->rms_norm_eps, theta = (float)cfg->rope_theta;
    for (int l = 0; l < cfg->num_hidden_layers; l++) {
        const ad_decoder_layer *w = &m->decoder[l];
        const ad_decoder_layer_shape *sh = &cfg->decoder_layer[l];
        const int64_t Q = sh->num_attention_heads * hd, KV = sh->num_key_value_heads * hd;
        ad_tensor q = view(&s.q, 2, SHAPE(N, Q)), k = view(&s.k, 2, SHAPE(N, KV)),
                  v = view(&s.v, 2, SHAPE(N, KV)), att = view(&s.att, 3, SHAPE(R, T, Q));
        ad_tensor g = view(&s.g, 2, SHAPE(N, sh->intermediate_size)),
                  u = view(&s.u, 2, SHAPE(N, sh->intermediate_size));
        AD_TRY(be->rmsnorm(be, &s.xn, &s.x, &w->input_layernorm_w, eps));
        AD_TRY(be->linear(be, &q, &s.xn, &w->q_proj_w, &w->q_proj_b));
        AD_TRY(be->linear(be, &k, &s.xn, &w->k_proj_w, &w->k_proj_b));
        AD_TRY(be->linear(be, &v, &s.xn, &w->v_proj_w, &w->v_proj_b));
        ad_tensor q3 = view(&q, 3, SHAPE(R, T, Q)), k3 = view(&k, 3, SHAPE(R, T, KV)),
                  v3 = view(&v, 3, SHAPE(R, T, KV));
        AD_TRY(be->rope(be, &q3, &q3, &pos2, sh->num_attention_heads, (int)hd, theta));
        AD_TRY(be->rope(be, &k3, &k3, &pos2, sh->num_key_value_heads, (int)hd, theta));
        /* Append to the cache: one strided copy when the rows are aligned, else row by row. */
        ad_tensor kc, vc, rows_k, rows_v;
        AD_TRY(ad_tensor_slice(&st->k_cache[l], 0, 0, R, &kc));
        AD_TRY(ad_tensor_slice(&st->v_cache[l], 0, 0, R, &vc));
        bool aligned = true;
        for (int r = 1; r < R; r++)
            aligned = aligned && st->cache_len[r] == st->cache_len[0];
        if (aligned) {
            AD_TRY(ad_tensor_slice(&kc, 1, st->cache_len[0], T, &rows_k));
            AD_TRY(ad_tensor_slice(&vc, 1, st->cache_len[0], T, &rows_v));
            AD_TRY(be->copy(be, &rows_k, &k3));
            AD_TRY(be->copy(be, &rows_v, &v3));
        } else {
            for (int r = 0; r < R; r++) {
                ad_tensor dk, dv, sk, sv, tmp;
                AD_TRY(ad_tensor_slice(&kc, 0, r, 1, &tmp));
                AD_TRY(ad_tensor_slice(&tmp, 1, st->cache_len[r], T, &dk));
                AD_TRY(ad_tensor_slice(&vc, 0, r, 1, &tmp));
                AD_TRY(ad_tensor_slice(&tmp, 1, st->cache_len[r], T, &dv));
                AD_TRY(ad_tensor_slice(&k3, 0, r, 1, &sk));
                AD_TRY(ad_tensor_slice(&v3, 0, r, 1, &sv));
                AD_TRY(be->copy(be, &dk, &sk));
                AD_TRY(be->copy(be, &dv, &sv));
            }
        }
        ad_tensor keys, values;
        AD_TRY(ad_tensor_slice(&kc, 1, 0, tk, &keys));
        AD_TRY(ad_tensor_slice(&vc, 1, 0, tk, &values));
        ad_attention_params ap = {.n_heads = sh->num_attention_heads,
                                  .n_kv_heads = sh->num_key_value_heads,
                                  .head_dim = (int)hd,
                                  .causal = T > 1,
                                  .q_offset = T > 1 ? past : 0,
                                  .scale = 1.0f / sqrtf((float)hd),
                                  .key_len = st->key_len};
        AD_TRY(be->attention(be, &att, &q3, &keys, &values, &ap));
        ad_tensor att2 = view(&att, 2, SHAPE(N, Q));
        AD_TRY(be->linear(be, &s.tmp, &att2, &w->o_proj_w, NULL));
        AD_TRY(be->add(be, &s.x, &s.x, &s.tmp));
        AD_TRY(be->rmsnorm(be, &s.xn, &s.x, &w->post_attention_layernorm_w, eps));
        AD_TRY(be->linear(be, &g, &s.xn, &w->gate_proj_w, NULL));
        AD_TRY(be->linear(be, &u, &s.xn, &w->up_proj_w, NULL));
        AD_TRY(be->silu_mul(be, &g, &g, &u));
        AD_TRY(be->linear(be, &s.tmp, &g, &w->down_proj_w, NULL));
        AD_TRY(be->add(be, &s.x, &s.x, &s.tmp));
    }
    ad_tensor hidden = view(&st->hidden, 2, SHAPE(N, H));
    AD_TRY(be->rmsnorm(be, &hidden, &s.x, &m->norm_w, eps));
    for (int r = 0; r < R; r++)
        st->cache_len[r] += in->len[r];
    if (n_logit_rows > 0) {
        for (int i = 0; i < n_logit_rows; i++) {
            if (logit_rows[i] < 0 || logit_rows[i] >= N)
                return ad_fail("logit row %d is outside the %lld rows of this call", logit_rows[i],
                               (long long)N);
            st->host_rows[i] = logit_rows[i];
        }
        ad_tensor rows = s.rows, sel = view(&s.sel, 2, SHAPE(n_logit_rows, H));
        ad_tensor logits = view(&st->logits, 2, SHAPE(n_logit_rows, cfg->vocab_size));
        AD_TRY(upload_i32(be, &rows, st->host_rows, n_logit_rows));
        /* The embedding op is a row gather: it picks the rows whose logits are wanted. */
        AD_TRY(be->embedding(be, &sel, &hidden, &rows));
        AD_TRY(be->linear(be, &logits, &sel, &m->lm_head, NULL));
    }
    ad_arena_reset(&st->arena, st->scratch_mark);
    return AD_OK;
}

int ad_model_reorder_cache(ad_model_state *st, const int *src, int n_rows) {
    ad_backend *be = st->m->be;
    const ad_model_config *cfg = &st->m->cfg;
    if (n_rows < 1 || n_rows > st->lim.max_rows)
        return ad_fail("cache reorder of %d rows; the state has %d", n_rows, st->lim.max_rows);
    bool identity = true;
    for (int r = 0; r < n_rows; r++) {
        if (src[r] < 0 || src[r] >= n_rows)
            return ad_fail("cache reorder: source row %d out of range", src[r]);
        identity = identity && src[r] == r;
    }
    if (identity) return AD_OK;
    ad_arena_reset(&st->arena, st->scratch_mark);
    carver c = {&st->arena, NULL, be->device};
    ad_tensor tmp;
    const int kv_max = max_decoder_kv(cfg);
    AD_TRY(
        carve(&c, &tmp, AD_F32, 3, SHAPE(st->lim.max_rows, st->lim.max_tokens, kv_max), "reorder"));
    for (int l = 0; l < cfg->num_hidden_layers; l++) {
        for (int which = 0; which < 2; which++) {
            ad_tensor *cache = which ? &st->v_cache[l] : &st->k_cache[l];
            ad_tensor t =
                view(&tmp, 3, SHAPE(st->lim.max_rows, st->lim.max_tokens, cache->shape[2]));
            /* Gather the moved rows into tmp first so no source is overwritten early. */
            for (int pass = 0; pass < 2; pass++) {
                for (int r = 0; r < n_rows; r++) {
                    const int len = st->cache_len[src[r]];
                    if (src[r] == r || len == 0) continue;
                    ad_tensor a, b, row;
                    AD_TRY(ad_tensor_slice(pass ? &t : cache, 0, pass ? r : src[r], 1, &row));
                    AD_TRY(ad_tensor_slice(&row, 1, 0, len, &a));
                    AD_TRY(ad_tensor_slice(pass ? cache : &t, 0, r, 1, &row));
                    AD_TRY(ad_tensor_slice(&row, 1, 0, len, &b));
                    AD_TRY(be->copy(be, &b, &a));
                }
            }
        }
    }
    int *old = st->key_len; /* host scratch of max_rows ints */
    for (int r = 0; r < n_rows; r++)
        old[r] = st->cache_len[r];
    for (int r = 0; r < n_rows; r++)
        st->cache_len[r] = old[src[r]];
    ad_arena_reset(&st->arena, st->scratch_mark);
    return AD_OK;
}

ad_tensor *ad_model_weight(ad_model *m, const char *name) {
    return weight_slot(m, name);
}

bool ad_model_config_same_encoder(const ad_model_config *a, const ad_model_config *b) {
    if (a->num_mel_bins != b->num_mel_bins || a->encoder_layers != b->encoder_layers ||
        a->d_model != b->d_model || a->max_source_positions != b->max_source_positions ||
        a->scale_embedding != b->scale_embedding || a->encoder_head_dim != b->encoder_head_dim ||
        strcmp(a->activation_function, b->activation_function) != 0)
        return false;
    for (int l = 0; l < a->encoder_layers; l++)
        if (a->encoder_layer[l].num_attention_heads != b->encoder_layer[l].num_attention_heads ||
            a->encoder_layer[l].ffn_dim != b->encoder_layer[l].ffn_dim)
            return false;
    return true;
}

/* Downloads both weights as f32 and compares the bits (a bf16 and an f32 copy of the same
 * bf16 values are the same weight). */
static int same_weight_values(ad_model *a, ad_model *b, const ad_tensor *wa, const ad_tensor *wb,
                              int64_t n, bool *same) {
    float *ha = ad_malloc(sizeof(float) * (size_t)n, "encoder weight comparison"),
          *hb = ad_malloc(sizeof(float) * (size_t)n, "encoder weight comparison");
    ad_tensor ta, tb;
    int rc = ha && hb ? AD_OK : AD_ERR;
    if (rc == AD_OK)
        rc = ad_tensor_init(&ta, ha, AD_F32, AD_DEVICE_CPU, wa->ndim, wa->shape, wa->name);
    if (rc == AD_OK)
        rc = ad_tensor_init(&tb, hb, AD_F32, AD_DEVICE_CPU, wb->ndim, wb->shape, wb->name);
    if (rc == AD_OK) rc = a->be->download(a->be, &ta, wa);
    if (rc == AD_OK) rc = b->be->download(b->be, &tb, wb);
    if (rc == AD_OK) *same = memcmp(ha, hb, sizeof(float) * (size_t)n) == 0;
    free(ha);
    free(hb);
    return rc;
}

int ad_model_same_audio_encoder(ad_model *a, ad_model *b, bool *same, char *why, size_t why_size) {
    *same = false;
    if (!ad_model_config_same_encoder(&a->cfg, &b->cfg)) {
        snprintf(why, why_size, "the audio encoders' configs differ");
        return AD_OK;
    }
    for (int i = 0; i < a->n_specs; i++) {
        const ad_weight_spec *s = &a->specs[i];
        if (s->component != AD_COMPONENT_AUDIO_ENCODER) continue;
        const ad_tensor *wa = weight_slot(a, s->name), *wb = weight_slot(b, s->name);
        if (!wa || !wb)
            return ad_fail("internal: audio encoder weight %s has no slot in a model", s->name);
        if (wa->dtype == AD_QGROUP || wb->dtype == AD_QGROUP) {
            snprintf(why, why_size, "%s is group-quantized", s->name);
            return AD_OK;
        }
        const int64_t n = ad_tensor_numel(wa);
        bool equal = wa->ndim == wb->ndim && n == ad_tensor_numel(wb);
        for (int d = 0; equal && d < wa->ndim; d++)
            equal = wa->shape[d] == wb->shape[d];
        if (equal) AD_TRY(same_weight_values(a, b, wa, wb, n, &equal));
        if (!equal) {
            snprintf(why, why_size, "%s differs", s->name);
            return AD_OK;
        }
    }
    *same = true;
    snprintf(why, why_size, "every audio encoder weight is equal");
    return AD_OK;
}
