#include "compress/recipe.h"

#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

#define BF16_BYTES 2

const ad_field ad_prune_recipe_fields[] = {
    {.key = "decoder_layers",
     .type = AD_FIELD_INT,
     .offset = offsetof(ad_prune_recipe, decoder_layers),
     .default_value = "0",
     .min = 0,
     .max = AD_MAX_LAYERS,
     .help = "decoder layers to keep, least important dropped (0 = all)"},
    {.key = "drop_decoder_layers",
     .type = AD_FIELD_INT_LIST,
     .offset = offsetof(ad_prune_recipe, drop_decoder_layers),
     .help = "explicit decoder layer indices to drop"},
    {.key = "encoder_layers",
     .type = AD_FIELD_INT,
     .offset = offsetof(ad_prune_recipe, encoder_layers),
     .default_value = "0",
     .min = 0,
     .max = AD_MAX_LAYERS,
     .help = "audio encoder layers to keep (0 = all)"},
    {.key = "drop_encoder_layers",
     .type = AD_FIELD_INT_LIST,
     .offset = offsetof(ad_prune_recipe, drop_encoder_layers),
     .help = "explicit encoder layer indices to drop"},
    {.key = "decoder_heads",
     .type = AD_FIELD_INT,
     .offset = offsetof(ad_prune_recipe, decoder_heads),
     .default_value = "0",
     .min = 0,
     .max = 4096,
     .help = "attention heads per decoder layer (0 = keep)"},
    {.key = "decoder_ffn",
     .type = AD_FIELD_INT,
     .offset = offsetof(ad_prune_recipe, decoder_ffn),
     .default_value = "0",
     .min = 0,
     .max = 1 << 20,
     .help = "decoder FFN width (0 = keep)"},
    {.key = "hidden",
     .type = AD_FIELD_INT,
     .offset = offsetof(ad_prune_recipe, hidden),
     .default_value = "0",
     .min = 0,
     .max = 1 << 20,
     .help = "decoder hidden size (0 = keep)"},
    {.key = "encoder_heads",
     .type = AD_FIELD_INT,
     .offset = offsetof(ad_prune_recipe, encoder_heads),
     .default_value = "0",
     .min = 0,
     .max = 4096,
     .help = "attention heads per encoder layer (0 = keep)"},
    {.key = "encoder_ffn",
     .type = AD_FIELD_INT,
     .offset = offsetof(ad_prune_recipe, encoder_ffn),
     .default_value = "0",
     .min = 0,
     .max = 1 << 20,
     .help = "encoder FFN width (0 = keep)"},
    {.key = "vocab",
     .type = AD_FIELD_INT,
     .offset = offsetof(ad_prune_recipe, vocab),
     .default_value = "0",
     .min = 0,
     .max = 1 << 24,
     .help = "vocabulary entries to keep (0 = all)"},
    {0},
};

static const ad_field quant_choice_fields[] = {
    {.key = "bits",
     .type = AD_FIELD_INT,
     .offset = offsetof(ad_quant_choice, bits),
     .default_value = "16",
     .min = 2,
     .max = 16,
     .help = "16 (bf16), 8, 4, 3 or 2"},
    {.key = "group_size",
     .type = AD_FIELD_INT,
     .offset = offsetof(ad_quant_choice, group_size),
     .default_value = "128",
     .min = 8,
     .max = 1 << 16},
    {.key = "symmetric",
     .type = AD_FIELD_BOOL,
     .offset = offsetof(ad_quant_choice, symmetric),
     .default_value = "false"},
    {.key = "method",
     .type = AD_FIELD_ENUM,
     .offset = offsetof(ad_quant_choice, method),
     .default_value = "rtn",
     .choices = "rtn|gptq"},
    {0},
};

const ad_field ad_quant_recipe_fields[] = {
    {.key = "decoder_linear",
     .type = AD_FIELD_SECTION,
     .offset = offsetof(ad_quant_recipe, decoder_linear),
     .section = quant_choice_fields,
     .help = "q/k/v/o and MLP weights of the decoder"},
    {.key = "encoder_linear",
     .type = AD_FIELD_SECTION,
     .offset = offsetof(ad_quant_recipe, encoder_linear),
     .section = quant_choice_fields,
     .help = "attention and FFN weights of the audio encoder, and the projector"},
    {.key = "embed_tokens",
     .type = AD_FIELD_SECTION,
     .offset = offsetof(ad_quant_recipe, embed_tokens),
     .section = quant_choice_fields},
    {.key = "lm_head",
     .type = AD_FIELD_SECTION,
     .offset = offsetof(ad_quant_recipe, lm_head),
     .section = quant_choice_fields},
    {0},
};

const char *ad_weight_class_name(ad_weight_class c) {
    static const char *names[AD_WEIGHT_CLASS_COUNT] = {"decoder_linear", "encoder_linear",
                                                       "embed_tokens", "lm_head", "other"};
    return (unsigned)c < AD_WEIGHT_CLASS_COUNT ? names[c] : "?";
}

static bool ends_with(const char *s, const char *suffix) {
    size_t n = strlen(s), m = strlen(suffix);
    return n >= m && strcmp(s + n - m, suffix) == 0;
}

ad_weight_class ad_weight_class_of(const ad_weight_spec *spec) {
    if (spec->component == AD_COMPONENT_EMBED_TOKENS) return AD_WEIGHT_CLASS_EMBED_TOKENS;
    if (spec->component == AD_COMPONENT_LM_HEAD) return AD_WEIGHT_CLASS_LM_HEAD;
    if (spec->ndim != 2 || !ends_with(spec->name, ".weight") ||
        strstr(spec->name, "embed_positions"))
        return AD_WEIGHT_CLASS_OTHER;
    if (spec->component == AD_COMPONENT_DECODER_LAYERS) return AD_WEIGHT_CLASS_DECODER_LINEAR;
    return AD_WEIGHT_CLASS_ENCODER_LINEAR; /* encoder layers and the projector */
}

static int count_kept(int64_t have, int64_t target, const ad_int_list *drop, const char *what,
                      int64_t *kept) {
    if (target && drop->count)
        return ad_fail("prune: give either %s_layers or drop_%s_layers, not both", what, what);
    for (int i = 0; i < drop->count; i++) {
        if (drop->values[i] < 0 || drop->values[i] >= have)
            return ad_fail("prune: drop_%s_layers names layer %lld, but the model has %lld", what,
                           (long long)drop->values[i], (long long)have);
        for (int j = 0; j < i; j++)
            if (drop->values[j] == drop->values[i])
                return ad_fail("prune: drop_%s_layers lists layer %lld twice", what,
                               (long long)drop->values[i]);
    }
    if (target > have)
        return ad_fail("prune: %s_layers %lld exceeds the %lld layers the model has", what,
                       (long long)target, (long long)have);
    *kept = target ? target : have - drop->count;
    if (*kept < 1) return ad_fail("prune: no %s layer would remain", what);
    return AD_OK;
}

int ad_prune_apply_shapes(const ad_model_config *t, const ad_prune_recipe *r, ad_model_config *s) {
    *s = *t;
    int64_t dec, enc;
    AD_TRY(count_kept(t->num_hidden_layers, r->decoder_layers, &r->drop_decoder_layers, "decoder",
                      &dec));
    AD_TRY(
        count_kept(t->encoder_layers, r->encoder_layers, &r->drop_encoder_layers, "encoder", &enc));
    s->num_hidden_layers = (int)dec;
    s->encoder_layers = (int)enc;
    if (r->hidden) {
        if (r->hidden > t->hidden_size)
            return ad_fail("prune: hidden %lld exceeds the teacher's %d", (long long)r->hidden,
                           t->hidden_size);
        s->hidden_size = (int)r->hidden;
    }
    if (r->vocab) {
        if (r->vocab > t->vocab_size)
            return ad_fail("prune: vocab %lld exceeds the teacher's %d", (long long)r->vocab,
                           t->vocab_size);
        s->vocab_size = (int)r->vocab;
    }
    /* Layer shapes: pruning targets apply to every kept layer (uniform widths). */
    for (int i = 0; i < s->num_hidden_layers; i++) {
        ad_decoder_layer_shape *d = &s->decoder_layer[i];
        *d = t->decoder_layer[i < t->num_hidden_layers ? i : 0];
        if (r->decoder_heads) {
            int group = t->num_attention_heads / t->num_key_value_heads;
            if (r->decoder_heads > t->num_attention_heads || r->decoder_heads % group != 0)
                return ad_fail("prune: decoder_heads %lld must be at most %d and a multiple of the "
                               "query heads per key/value head (%d)",
                               (long long)r->decoder_heads, t->num_attention_heads, group);
            d->num_attention_heads = (int)r->decoder_heads;
            d->num_key_value_heads = (int)(r->decoder_heads / group);
        }
        if (r->decoder_ffn) {
            if (r->decoder_ffn > t->intermediate_size)
                return ad_fail("prune: decoder_ffn %lld exceeds the teacher's %d",
                               (long long)r->decoder_ffn, t->intermediate_size);
            d->intermediate_size = (int)r->decoder_ffn;
        }
    }
    for (int i = 0; i < s->encoder_layers; i++) {
        ad_encoder_layer_shape *e = &s->encoder_layer[i];
        *e = t->encoder_layer[i < t->encoder_layers ? i : 0];
        if (r->encoder_heads) {
            if (r->encoder_heads > t->encoder_attention_heads)
                return ad_fail("prune: encoder_heads %lld exceeds the teacher's %d",
                               (long long)r->encoder_heads, t->encoder_attention_heads);
            e->num_attention_heads = (int)r->encoder_heads;
        }
        if (r->encoder_ffn) {
            if (r->encoder_ffn > t->encoder_ffn_dim)
                return ad_fail("prune: encoder_ffn %lld exceeds the teacher's %d",
                               (long long)r->encoder_ffn, t->encoder_ffn_dim);
            e->ffn_dim = (int)r->encoder_ffn;
        }
    }
    /* Global fields describe the (now uniform) layer shapes so a uniform student is plain HF. */
    if (s->num_hidden_layers) {
        s->num_attention_heads = s->decoder_layer[0].num_attention_heads;
        s->num_key_value_heads = s->decoder_layer[0].num_key_value_heads;
        s->intermediate_size = s->decoder_layer[0].intermediate_size;
    }
    if (s->encoder_layers) {
        s->encoder_attention_heads = s->encoder_layer[0].num_attention_heads;
        s->encoder_ffn_dim = s->encoder_layer[0].ffn_dim;
    }
    s->uniform = s->head_dim * s->num_attention_heads == s->hidden_size &&
                 s->encoder_head_dim * s->encoder_attention_heads == s->d_model;
    return AD_OK;
}

static const ad_quant_choice *choice_for(const ad_quant_recipe *q, ad_weight_class c) {
    switch (c) {
    case AD_WEIGHT_CLASS_DECODER_LINEAR: return &q->decoder_linear;
    case AD_WEIGHT_CLASS_ENCODER_LINEAR: return &q->encoder_linear;
    case AD_WEIGHT_CLASS_EMBED_TOKENS: return &q->embed_tokens;
    case AD_WEIGHT_CLASS_LM_HEAD: return &q->lm_head;
    default: return NULL;
    }
}

int ad_estimate_size(const ad_model_config *cfg, const ad_quant_recipe *quant,
                     ad_size_estimate *out) {
    memset(out, 0, sizeof *out);
    ad_weight_spec *specs;
    int n;
    AD_TRY(ad_weight_specs(cfg, &specs, &n));
    for (int i = 0; i < n; i++) {
        ad_weight_class c = ad_weight_class_of(&specs[i]);
        int64_t numel = ad_weight_spec_numel(&specs[i]);
        int64_t bytes = numel * BF16_BYTES;
        const ad_quant_choice *q = quant ? choice_for(quant, c) : NULL;
        if (q && q->bits != 16) {
            ad_quant_spec spec = {(int)q->bits, (int)q->group_size, q->symmetric};
            if (ad_quant_check(&spec, specs[i].shape[0], specs[i].shape[1], specs[i].name) < 0) {
                free(specs);
                return AD_ERR;
            }
            bytes = ad_quant_bytes(&spec, specs[i].shape[0], specs[i].shape[1]);
        }
        out->params[c] += numel;
        out->bytes[c] += bytes;
        out->total_params += numel;
        out->total_bytes += bytes;
    }
    free(specs);
    return AD_OK;
}
