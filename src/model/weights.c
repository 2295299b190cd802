#include "model/weights.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

const char *ad_component_name(ad_component c) {
    static const char *names[AD_COMPONENT_COUNT] = {"audio_encoder", "projector", "decoder_layers",
                                                    "embed_tokens", "lm_head"};
    return (unsigned)c < AD_COMPONENT_COUNT ? names[c] : "?";
}

int64_t ad_weight_spec_numel(const ad_weight_spec *s) {
    int64_t n = 1;
    for (int d = 0; d < s->ndim; d++)
        n *= s->shape[d];
    return n;
}

typedef struct {
    ad_weight_spec *items;
    int n, cap;
} spec_list;

static int add(spec_list *l, ad_component comp, int ndim, int64_t d0, int64_t d1, int64_t d2,
               const char *fmt, ...) AD_PRINTF(7, 8);

static int add(spec_list *l, ad_component comp, int ndim, int64_t d0, int64_t d1, int64_t d2,
               const char *fmt, ...) {
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 256;
        ad_weight_spec *g = ad_realloc(l->items, sizeof *g * (size_t)cap, "weight specs");
        if (!g) return AD_ERR;
        l->items = g;
        l->cap = cap;
    }
    ad_weight_spec *s = &l->items[l->n++];
    memset(s, 0, sizeof *s);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->name, sizeof s->name, fmt, ap);
    va_end(ap);
    s->ndim = ndim;
    s->shape[0] = d0;
    s->shape[1] = d1;
    s->shape[2] = d2;
    s->component = comp;
    return AD_OK;
}

#define LINEAR(comp, out, in, bias, ...)                                                           \
    do {                                                                                           \
        if (add(&l, comp, 2, out, in, 0, __VA_ARGS__) < 0) goto fail;                              \
        if (bias) {                                                                                \
            char bias_name_[AD_WEIGHT_NAME_MAX];                                                   \
            snprintf(bias_name_, sizeof bias_name_, "%s", l.items[l.n - 1].name);                  \
            bias_name_[strlen(bias_name_) - strlen("weight")] = '\0';                              \
            if (add(&l, comp, 1, out, 0, 0, "%sbias", bias_name_) < 0) goto fail;                  \
        }                                                                                          \
    } while (0)

int ad_weight_specs(const ad_model_config *c, ad_weight_spec **specs, int *n) {
    spec_list l = {0};
    const ad_component A = AD_COMPONENT_AUDIO_ENCODER;
    const int64_t d = c->d_model;
    const char *at = "audio_tower";
    if (add(&l, A, 3, d, c->num_mel_bins, 3, "%s.conv1.weight", at) < 0 ||
        add(&l, A, 1, d, 0, 0, "%s.conv1.bias", at) < 0 ||
        add(&l, A, 3, d, d, 3, "%s.conv2.weight", at) < 0 ||
        add(&l, A, 1, d, 0, 0, "%s.conv2.bias", at) < 0 ||
        add(&l, A, 2, c->max_source_positions, d, 0, "%s.embed_positions.weight", at) < 0)
        goto fail;
    for (int i = 0; i < c->encoder_layers; i++) {
        const int64_t attn = (int64_t)c->encoder_layer[i].num_attention_heads * c->encoder_head_dim;
        const int64_t ffn = c->encoder_layer[i].ffn_dim;
        LINEAR(A, attn, d, 0, "%s.layers.%d.self_attn.k_proj.weight", at, i);
        LINEAR(A, attn, d, 1, "%s.layers.%d.self_attn.v_proj.weight", at, i);
        LINEAR(A, attn, d, 1, "%s.layers.%d.self_attn.q_proj.weight", at, i);
        LINEAR(A, d, attn, 1, "%s.layers.%d.self_attn.out_proj.weight", at, i);
        if (add(&l, A, 1, d, 0, 0, "%s.layers.%d.self_attn_layer_norm.weight", at, i) < 0 ||
            add(&l, A, 1, d, 0, 0, "%s.layers.%d.self_attn_layer_norm.bias", at, i) < 0)
            goto fail;
        LINEAR(A, ffn, d, 1, "%s.layers.%d.fc1.weight", at, i);
        LINEAR(A, d, ffn, 1, "%s.layers.%d.fc2.weight", at, i);
        if (add(&l, A, 1, d, 0, 0, "%s.layers.%d.final_layer_norm.weight", at, i) < 0 ||
            add(&l, A, 1, d, 0, 0, "%s.layers.%d.final_layer_norm.bias", at, i) < 0)
            goto fail;
    }
    if (add(&l, A, 1, d, 0, 0, "%s.layer_norm.weight", at) < 0 ||
        add(&l, A, 1, d, 0, 0, "%s.layer_norm.bias", at) < 0)
        goto fail;

    const int64_t h = c->hidden_size;
    LINEAR(AD_COMPONENT_PROJECTOR, h, d, 1, "multi_modal_projector.linear.weight");

    const ad_component D = AD_COMPONENT_DECODER_LAYERS;
    const char *lm = "language_model.model";
    if (add(&l, AD_COMPONENT_EMBED_TOKENS, 2, c->vocab_size, h, 0, "%s.embed_tokens.weight", lm) <
        0)
        goto fail;
    for (int i = 0; i < c->num_hidden_layers; i++) {
        const ad_decoder_layer_shape *s = &c->decoder_layer[i];
        const int64_t q = (int64_t)s->num_attention_heads * c->head_dim;
        const int64_t kv = (int64_t)s->num_key_value_heads * c->head_dim;
        const int64_t f = s->intermediate_size;
        LINEAR(D, q, h, 1, "%s.layers.%d.self_attn.q_proj.weight", lm, i);
        LINEAR(D, kv, h, 1, "%s.layers.%d.self_attn.k_proj.weight", lm, i);
        LINEAR(D, kv, h, 1, "%s.layers.%d.self_attn.v_proj.weight", lm, i);
        LINEAR(D, h, q, 0, "%s.layers.%d.self_attn.o_proj.weight", lm, i);
        LINEAR(D, f, h, 0, "%s.layers.%d.mlp.gate_proj.weight", lm, i);
        LINEAR(D, f, h, 0, "%s.layers.%d.mlp.up_proj.weight", lm, i);
        LINEAR(D, h, f, 0, "%s.layers.%d.mlp.down_proj.weight", lm, i);
        if (add(&l, D, 1, h, 0, 0, "%s.layers.%d.input_layernorm.weight", lm, i) < 0 ||
            add(&l, D, 1, h, 0, 0, "%s.layers.%d.post_attention_layernorm.weight", lm, i) < 0)
            goto fail;
    }
    if (add(&l, D, 1, h, 0, 0, "%s.norm.weight", lm) < 0) goto fail;
    if (!c->tie_word_embeddings &&
        add(&l, AD_COMPONENT_LM_HEAD, 2, c->vocab_size, h, 0, "language_model.lm_head.weight") < 0)
        goto fail;
    *specs = l.items;
    *n = l.n;
    return AD_OK;
fail:
    free(l.items);
    return AD_ERR;
}

const char *ad_canonical_tensor_name(const char *name, char *buf, size_t size) {
    static const struct {
        const char *from, *to;
    } prefixes[] = {
        {"model.audio_tower.", "audio_tower."},
        {"model.multi_modal_projector.", "multi_modal_projector."},
        {"model.language_model.", "language_model.model."},
        {"lm_head.", "language_model.lm_head."},
    };
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++) {
        size_t n = strlen(prefixes[i].from);
        if (strncmp(name, prefixes[i].from, n) == 0) {
            snprintf(buf, size, "%s%s", prefixes[i].to, name + n);
            return buf;
        }
    }
    snprintf(buf, size, "%s", name);
    return buf;
}

void ad_count_params(const ad_weight_spec *specs, int n, ad_param_counts *counts) {
    memset(counts, 0, sizeof *counts);
    for (int i = 0; i < n; i++) {
        int64_t numel = ad_weight_spec_numel(&specs[i]);
        counts->params[specs[i].component] += numel;
        counts->tensors[specs[i].component]++;
        counts->total_params += numel;
        counts->total_tensors++;
    }
}
