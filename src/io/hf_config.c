#include "io/hf_config.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "io/file.h"

#define MAX_CONFIG_BYTES (16u << 20)

void ad_model_config_defaults(ad_model_config *cfg) {
    memset(cfg, 0, sizeof *cfg);
    /* Qwen2AudioConfig's audio_config init_kwargs (= Qwen2AudioEncoderConfig defaults). */
    cfg->num_mel_bins = 128;
    cfg->encoder_layers = 32;
    cfg->encoder_attention_heads = 20;
    cfg->encoder_ffn_dim = 5120;
    cfg->d_model = 1280;
    cfg->max_source_positions = 1500;
    cfg->scale_embedding = false;
    strcpy(cfg->activation_function, "gelu");
    /* Qwen2Config defaults. */
    cfg->vocab_size = 151936;
    cfg->hidden_size = 4096;
    cfg->intermediate_size = 22016;
    cfg->num_hidden_layers = 32;
    cfg->num_attention_heads = 32;
    cfg->num_key_value_heads = 32;
    cfg->max_position_embeddings = 32768;
    cfg->rope_theta = 10000.0;
    cfg->rms_norm_eps = 1e-6;
    cfg->tie_word_embeddings = false;
    strcpy(cfg->hidden_act, "silu");
    cfg->bos_token_id = -1;
    cfg->eos_token_id = -1;
    cfg->pad_token_id = -1;
    cfg->audio_token_index = 151646;
}

/* Reads an optional integer field; absent or null keeps *out. */
static int get_int(const cJSON *obj, const char *key, const char *file, const char *section,
                   int min_value, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) return AD_OK;
    if (!cJSON_IsNumber(v) || floor(v->valuedouble) != v->valuedouble ||
        v->valuedouble < min_value || v->valuedouble > 2147483647.0)
        return ad_fail("%s: %s%s%s must be an integer >= %d", file, section, *section ? "." : "",
                       key, min_value);
    *out = (int)v->valuedouble;
    return AD_OK;
}

static int get_double(const cJSON *obj, const char *key, const char *file, const char *section,
                      double *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) return AD_OK;
    if (!cJSON_IsNumber(v) || !(v->valuedouble > 0.0) || !isfinite(v->valuedouble))
        return ad_fail("%s: %s.%s must be a positive number", file, section, key);
    *out = v->valuedouble;
    return AD_OK;
}

static int get_bool(const cJSON *obj, const char *key, const char *file, const char *section,
                    bool *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) return AD_OK;
    if (!cJSON_IsBool(v)) return ad_fail("%s: %s.%s must be true or false", file, section, key);
    *out = cJSON_IsTrue(v);
    return AD_OK;
}

static int get_string(const cJSON *obj, const char *key, const char *file, const char *section,
                      char *out, size_t size) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (!v || cJSON_IsNull(v)) return AD_OK;
    if (!cJSON_IsString(v) || strlen(v->valuestring) >= size)
        return ad_fail("%s: %s.%s must be a short string", file, section, key);
    strcpy(out, v->valuestring);
    return AD_OK;
}

/* eos_token_id may be an int or a list of ints (the first one is the stop token we record). */
static int get_token_id(const cJSON *obj, const char *key, const char *file, int *out) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    if (v && cJSON_IsArray(v)) v = cJSON_GetArrayItem(v, 0);
    if (!v || cJSON_IsNull(v)) return AD_OK;
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0) || v->valuedouble > 2147483647.0)
        return ad_fail("%s: text_config.%s must be a token id", file, key);
    *out = (int)v->valuedouble;
    return AD_OK;
}

static int parse_audio(const cJSON *a, const char *file, ad_model_config *c) {
    const char *s = "audio_config";
    AD_TRY(get_int(a, "num_mel_bins", file, s, 1, &c->num_mel_bins));
    AD_TRY(get_int(a, "encoder_layers", file, s, 0, &c->encoder_layers));
    AD_TRY(get_int(a, "encoder_attention_heads", file, s, 1, &c->encoder_attention_heads));
    AD_TRY(get_int(a, "encoder_ffn_dim", file, s, 1, &c->encoder_ffn_dim));
    AD_TRY(get_int(a, "d_model", file, s, 1, &c->d_model));
    AD_TRY(get_int(a, "max_source_positions", file, s, 1, &c->max_source_positions));
    AD_TRY(get_bool(a, "scale_embedding", file, s, &c->scale_embedding));
    AD_TRY(get_string(a, "activation_function", file, s, c->activation_function,
                      sizeof c->activation_function));
    return AD_OK;
}

static int parse_text(const cJSON *t, const char *file, ad_model_config *c) {
    const char *s = "text_config";
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(t, "model_type");
    if (mt && (!cJSON_IsString(mt) || strcmp(mt->valuestring, "qwen2") != 0))
        return ad_fail("%s: text_config.model_type must be \"qwen2\"", file);
    AD_TRY(get_int(t, "vocab_size", file, s, 1, &c->vocab_size));
    AD_TRY(get_int(t, "hidden_size", file, s, 1, &c->hidden_size));
    AD_TRY(get_int(t, "intermediate_size", file, s, 1, &c->intermediate_size));
    AD_TRY(get_int(t, "num_hidden_layers", file, s, 0, &c->num_hidden_layers));
    AD_TRY(get_int(t, "num_attention_heads", file, s, 1, &c->num_attention_heads));
    /* num_key_value_heads: None means "same as num_attention_heads". */
    c->num_key_value_heads = -1;
    const cJSON *kv = cJSON_GetObjectItemCaseSensitive(t, "num_key_value_heads");
    if (!kv) c->num_key_value_heads = 32; /* Qwen2Config's default when the key is absent */
    AD_TRY(get_int(t, "num_key_value_heads", file, s, 1, &c->num_key_value_heads));
    if (c->num_key_value_heads < 0) c->num_key_value_heads = c->num_attention_heads;
    AD_TRY(get_int(t, "head_dim", file, s, 1, &c->head_dim));
    AD_TRY(get_int(t, "max_position_embeddings", file, s, 1, &c->max_position_embeddings));
    AD_TRY(get_double(t, "rms_norm_eps", file, s, &c->rms_norm_eps));
    AD_TRY(get_double(t, "rope_theta", file, s, &c->rope_theta));
    const cJSON *rp = cJSON_GetObjectItemCaseSensitive(t, "rope_parameters");
    if (cJSON_IsObject(rp)) {
        const cJSON *type = cJSON_GetObjectItemCaseSensitive(rp, "rope_type");
        if (type && cJSON_IsString(type) && strcmp(type->valuestring, "default") != 0)
            return ad_fail("%s: text_config.rope_parameters.rope_type '%s' is not supported "
                           "(only \"default\")",
                           file, type->valuestring);
        AD_TRY(get_double(rp, "rope_theta", file, "text_config.rope_parameters", &c->rope_theta));
    }
    const cJSON *rs = cJSON_GetObjectItemCaseSensitive(t, "rope_scaling");
    if (rs && !cJSON_IsNull(rs))
        return ad_fail("%s: text_config.rope_scaling is not supported", file);
    AD_TRY(get_bool(t, "tie_word_embeddings", file, s, &c->tie_word_embeddings));
    AD_TRY(get_string(t, "hidden_act", file, s, c->hidden_act, sizeof c->hidden_act));
    AD_TRY(get_token_id(t, "bos_token_id", file, &c->bos_token_id));
    AD_TRY(get_token_id(t, "eos_token_id", file, &c->eos_token_id));
    AD_TRY(get_token_id(t, "pad_token_id", file, &c->pad_token_id));
    return AD_OK;
}

/* Per-layer shapes of a pruned student: "audistill": {"decoder_layers": [{...}], ...}. */
static int parse_student_shapes(const cJSON *a, const char *file, ad_model_config *c) {
    AD_TRY(get_int(a, "head_dim", file, "audistill", 1, &c->head_dim));
    AD_TRY(get_int(a, "encoder_head_dim", file, "audistill", 1, &c->encoder_head_dim));
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(a, "decoder_layers");
    if (dec) {
        if (!cJSON_IsArray(dec) || cJSON_GetArraySize(dec) != c->num_hidden_layers)
            return ad_fail("%s: audistill.decoder_layers must be a list of %d layer shapes "
                           "(text_config.num_hidden_layers)",
                           file, c->num_hidden_layers);
        int i = 0;
        for (const cJSON *l = dec->child; l; l = l->next, i++) {
            char where[64];
            snprintf(where, sizeof where, "audistill.decoder_layers[%d]", i);
            ad_decoder_layer_shape *d = &c->decoder_layer[i];
            AD_TRY(get_int(l, "num_attention_heads", file, where, 1, &d->num_attention_heads));
            AD_TRY(get_int(l, "num_key_value_heads", file, where, 1, &d->num_key_value_heads));
            AD_TRY(get_int(l, "intermediate_size", file, where, 1, &d->intermediate_size));
        }
    }
    const cJSON *enc = cJSON_GetObjectItemCaseSensitive(a, "encoder_layers");
    if (enc) {
        if (!cJSON_IsArray(enc) || cJSON_GetArraySize(enc) != c->encoder_layers)
            return ad_fail("%s: audistill.encoder_layers must be a list of %d layer shapes "
                           "(audio_config.encoder_layers)",
                           file, c->encoder_layers);
        int i = 0;
        for (const cJSON *l = enc->child; l; l = l->next, i++) {
            char where[64];
            snprintf(where, sizeof where, "audistill.encoder_layers[%d]", i);
            ad_encoder_layer_shape *e = &c->encoder_layer[i];
            AD_TRY(get_int(l, "encoder_attention_heads", file, where, 1, &e->num_attention_heads));
            AD_TRY(get_int(l, "encoder_ffn_dim", file, where, 1, &e->ffn_dim));
        }
    }
    return AD_OK;
}

/* Every width, plain or heads x head_dim, is bounded so that tensor sizes, parameter counts
 * and memory plans stay far inside int64 (2^24 x 2^24 per matrix, times the layer cap). */
static int check_width(const char *file, const char *what, int layer, int64_t value) {
    if (value <= AD_MAX_WIDTH) return AD_OK;
    if (layer >= 0)
        return ad_fail("%s: layer %d: %s is %lld; widths above %d are not supported", file, layer,
                       what, (long long)value, AD_MAX_WIDTH);
    return ad_fail("%s: %s is %lld; widths above %d are not supported", file, what,
                   (long long)value, AD_MAX_WIDTH);
}

static int check_widths(const char *file, const ad_model_config *c) {
    const struct {
        const char *name;
        int64_t value;
    } plain[] = {
        {"audio_config.num_mel_bins", c->num_mel_bins},
        {"audio_config.encoder_ffn_dim", c->encoder_ffn_dim},
        {"audio_config.d_model", c->d_model},
        {"audio_config.max_source_positions", c->max_source_positions},
        {"text_config.vocab_size", c->vocab_size},
        {"text_config.hidden_size", c->hidden_size},
        {"text_config.intermediate_size", c->intermediate_size},
        {"text_config.max_position_embeddings", c->max_position_embeddings},
        {"text_config.num_attention_heads x head_dim",
         (int64_t)c->num_attention_heads * c->head_dim},
        {"text_config.num_key_value_heads x head_dim",
         (int64_t)c->num_key_value_heads * c->head_dim},
        {"audio_config.encoder_attention_heads x encoder_head_dim",
         (int64_t)c->encoder_attention_heads * c->encoder_head_dim},
    };
    for (size_t i = 0; i < sizeof plain / sizeof plain[0]; i++)
        AD_TRY(check_width(file, plain[i].name, -1, plain[i].value));
    for (int i = 0; i < c->num_hidden_layers; i++) {
        const ad_decoder_layer_shape *d = &c->decoder_layer[i];
        AD_TRY(check_width(file, "decoder num_attention_heads x head_dim", i,
                           (int64_t)d->num_attention_heads * c->head_dim));
        AD_TRY(check_width(file, "decoder num_key_value_heads x head_dim", i,
                           (int64_t)d->num_key_value_heads * c->head_dim));
        AD_TRY(check_width(file, "decoder intermediate_size", i, d->intermediate_size));
    }
    for (int i = 0; i < c->encoder_layers; i++) {
        const ad_encoder_layer_shape *e = &c->encoder_layer[i];
        AD_TRY(check_width(file, "encoder attention_heads x head_dim", i,
                           (int64_t)e->num_attention_heads * c->encoder_head_dim));
        AD_TRY(check_width(file, "encoder ffn_dim", i, e->ffn_dim));
    }
    return AD_OK;
}

static int validate(const char *file, ad_model_config *c) {
    if (c->num_hidden_layers > AD_MAX_LAYERS || c->encoder_layers > AD_MAX_LAYERS)
        return ad_fail("%s: more than %d layers are not supported", file, AD_MAX_LAYERS);
    if (strcmp(c->hidden_act, "silu") != 0)
        return ad_fail("%s: text_config.hidden_act '%s' is not supported (expected silu)", file,
                       c->hidden_act);
    if (strcmp(c->activation_function, "gelu") != 0)
        return ad_fail("%s: audio_config.activation_function '%s' is not supported (expected "
                       "gelu)",
                       file, c->activation_function);
    if (c->head_dim == 0) {
        if (c->hidden_size % c->num_attention_heads != 0)
            return ad_fail("%s: text_config.hidden_size %d is not divisible by "
                           "num_attention_heads %d",
                           file, c->hidden_size, c->num_attention_heads);
        c->head_dim = c->hidden_size / c->num_attention_heads;
    }
    if (c->encoder_head_dim == 0) {
        if (c->d_model % c->encoder_attention_heads != 0)
            return ad_fail("%s: audio_config.d_model %d is not divisible by "
                           "encoder_attention_heads %d",
                           file, c->d_model, c->encoder_attention_heads);
        c->encoder_head_dim = c->d_model / c->encoder_attention_heads;
    }
    if (c->head_dim % 2 != 0)
        return ad_fail("%s: head_dim %d must be even for rotary embeddings", file, c->head_dim);
    c->uniform = true;
    for (int i = 0; i < c->num_hidden_layers; i++) {
        ad_decoder_layer_shape *d = &c->decoder_layer[i];
        if (!d->num_attention_heads) d->num_attention_heads = c->num_attention_heads;
        if (!d->num_key_value_heads) d->num_key_value_heads = c->num_key_value_heads;
        if (!d->intermediate_size) d->intermediate_size = c->intermediate_size;
        if (d->num_attention_heads % d->num_key_value_heads != 0)
            return ad_fail("%s: decoder layer %d: num_attention_heads %d is not a multiple of "
                           "num_key_value_heads %d",
                           file, i, d->num_attention_heads, d->num_key_value_heads);
        if (d->num_attention_heads != c->num_attention_heads ||
            d->num_key_value_heads != c->num_key_value_heads ||
            d->intermediate_size != c->intermediate_size)
            c->uniform = false;
    }
    for (int i = 0; i < c->encoder_layers; i++) {
        ad_encoder_layer_shape *e = &c->encoder_layer[i];
        if (!e->num_attention_heads) e->num_attention_heads = c->encoder_attention_heads;
        if (!e->ffn_dim) e->ffn_dim = c->encoder_ffn_dim;
        if (e->num_attention_heads != c->encoder_attention_heads ||
            e->ffn_dim != c->encoder_ffn_dim)
            c->uniform = false;
    }
    if ((int64_t)c->head_dim * c->num_attention_heads != c->hidden_size ||
        (int64_t)c->encoder_head_dim * c->encoder_attention_heads != c->d_model)
        c->uniform = false;
    return check_widths(file, c);
}

int ad_model_config_parse(const char *json, size_t len, const char *file, ad_model_config *cfg) {
    ad_model_config_defaults(cfg);
    cJSON *root = cJSON_ParseWithLength(json, len);
    if (!root)
        return ad_fail("%s: not valid JSON (near byte %ld)", file,
                       cJSON_GetErrorPtr() ? (long)(cJSON_GetErrorPtr() - json) : -1L);
    int rc = AD_ERR;
    if (!cJSON_IsObject(root)) {
        ad_fail("%s: expected a JSON object", file);
        goto done;
    }
    const cJSON *mt = cJSON_GetObjectItemCaseSensitive(root, "model_type");
    if (!mt) {
        ad_fail("%s: required key \"model_type\" is missing (expected \"qwen2_audio\")", file);
        goto done;
    }
    if (!cJSON_IsString(mt) || strcmp(mt->valuestring, "qwen2_audio") != 0) {
        ad_fail("%s: model_type is %s, expected \"qwen2_audio\"", file,
                cJSON_IsString(mt) ? mt->valuestring : "not a string");
        goto done;
    }
    const cJSON *audio = cJSON_GetObjectItemCaseSensitive(root, "audio_config");
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(root, "text_config");
    if (audio && !cJSON_IsNull(audio) && !cJSON_IsObject(audio)) {
        ad_fail("%s: audio_config must be an object", file);
        goto done;
    }
    if (text && !cJSON_IsNull(text) && !cJSON_IsObject(text)) {
        ad_fail("%s: text_config must be an object", file);
        goto done;
    }
    if (cJSON_IsObject(audio) && parse_audio(audio, file, cfg) < 0) goto done;
    if (cJSON_IsObject(text) && parse_text(text, file, cfg) < 0) goto done;
    if (get_int(root, "audio_token_index", file, "", 0, &cfg->audio_token_index) < 0) goto done;
    const cJSON *student = cJSON_GetObjectItemCaseSensitive(root, "audistill");
    if (cJSON_IsObject(student) && parse_student_shapes(student, file, cfg) < 0) goto done;
    if (validate(file, cfg) < 0) goto done;
    if (cfg->audio_token_index >= cfg->vocab_size) {
        ad_fail("%s: audio_token_index %d is outside the vocabulary (vocab_size %d)", file,
                cfg->audio_token_index, cfg->vocab_size);
        goto done;
    }
    rc = AD_OK;
done:
    cJSON_Delete(root);
    return rc;
}

int ad_model_config_load(const char *path, ad_model_config *cfg) {
    char *text;
    size_t len;
    AD_TRY(ad_read_file(path, MAX_CONFIG_BYTES, &text, &len));
    int rc = ad_model_config_parse(text, len, path, cfg);
    free(text);
    return rc;
}

void ad_added_tokens_free(ad_added_token *tokens, int n) {
    for (int i = 0; i < n; i++)
        free(tokens[i].content);
    free(tokens);
}

int ad_added_tokens_load(const char *path, ad_added_token **tokens, int *n) {
    *tokens = NULL;
    *n = 0;
    char *text;
    size_t len;
    AD_TRY(ad_read_file(path, MAX_CONFIG_BYTES, &text, &len));
    cJSON *root = cJSON_ParseWithLength(text, len);
    free(text);
    if (!root) return ad_fail("%s: not valid JSON", path);
    int rc = AD_ERR;
    const cJSON *dec = cJSON_GetObjectItemCaseSensitive(root, "added_tokens_decoder");
    if (!dec) {
        rc = AD_OK; /* no added tokens */
        goto done;
    }
    if (!cJSON_IsObject(dec)) {
        ad_fail("%s: added_tokens_decoder must be an object", path);
        goto done;
    }
    int count = cJSON_GetArraySize(dec);
    *tokens = ad_calloc((size_t)count, sizeof **tokens, "added tokens");
    if (!*tokens) goto done;
    for (const cJSON *kv = dec->child; kv; kv = kv->next) {
        char *end;
        long id = strtol(kv->string, &end, 10);
        const cJSON *content = cJSON_GetObjectItemCaseSensitive(kv, "content");
        if (*end != '\0' || id < 0 || id > 0x7fffffff || !cJSON_IsString(content)) {
            ad_fail("%s: added_tokens_decoder entry '%s' needs an integer id and a \"content\" "
                    "string",
                    path, kv->string);
            goto done;
        }
        ad_added_token *t = &(*tokens)[*n];
        t->id = (int)id;
        t->content = ad_strdup(content->valuestring, "added token");
        if (!t->content) goto done;
        t->special = cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(kv, "special"));
        (*n)++;
    }
    rc = AD_OK;
done:
    if (rc < 0) {
        ad_added_tokens_free(*tokens, *n);
        *tokens = NULL;
        *n = 0;
    }
    cJSON_Delete(root);
    return rc;
}

static void add_int(cJSON *o, const char *k, int v) {
    cJSON_AddNumberToObject(o, k, v);
}

char *ad_model_config_to_json(const ad_model_config *c, const char *extra_audistill) {
    cJSON *root = cJSON_CreateObject();
    if (!root) goto oom;
    cJSON *arch = cJSON_AddArrayToObject(root, "architectures");
    cJSON_AddItemToArray(arch, cJSON_CreateString("Qwen2AudioForConditionalGeneration"));
    cJSON_AddStringToObject(root, "model_type", "qwen2_audio");
    add_int(root, "audio_token_index", c->audio_token_index);
    cJSON *a = cJSON_AddObjectToObject(root, "audio_config");
    cJSON_AddStringToObject(a, "model_type", "qwen2_audio_encoder");
    add_int(a, "num_mel_bins", c->num_mel_bins);
    add_int(a, "encoder_layers", c->encoder_layers);
    add_int(a, "encoder_attention_heads", c->encoder_attention_heads);
    add_int(a, "encoder_ffn_dim", c->encoder_ffn_dim);
    add_int(a, "d_model", c->d_model);
    add_int(a, "max_source_positions", c->max_source_positions);
    cJSON_AddBoolToObject(a, "scale_embedding", c->scale_embedding);
    cJSON_AddStringToObject(a, "activation_function", c->activation_function);
    cJSON *t = cJSON_AddObjectToObject(root, "text_config");
    cJSON_AddStringToObject(t, "model_type", "qwen2");
    add_int(t, "vocab_size", c->vocab_size);
    add_int(t, "hidden_size", c->hidden_size);
    add_int(t, "intermediate_size", c->intermediate_size);
    add_int(t, "num_hidden_layers", c->num_hidden_layers);
    add_int(t, "num_attention_heads", c->num_attention_heads);
    add_int(t, "num_key_value_heads", c->num_key_value_heads);
    add_int(t, "max_position_embeddings", c->max_position_embeddings);
    cJSON_AddNumberToObject(t, "rope_theta", c->rope_theta);
    cJSON *rp = cJSON_AddObjectToObject(t, "rope_parameters");
    cJSON_AddNumberToObject(rp, "rope_theta", c->rope_theta);
    cJSON_AddStringToObject(rp, "rope_type", "default");
    cJSON_AddNumberToObject(t, "rms_norm_eps", c->rms_norm_eps);
    cJSON_AddBoolToObject(t, "tie_word_embeddings", c->tie_word_embeddings);
    cJSON_AddStringToObject(t, "hidden_act", c->hidden_act);
    const struct {
        const char *key;
        int value;
    } ids[] = {{"bos_token_id", c->bos_token_id},
               {"eos_token_id", c->eos_token_id},
               {"pad_token_id", c->pad_token_id}};
    for (int i = 0; i < 3; i++) {
        if (ids[i].value >= 0)
            add_int(t, ids[i].key, ids[i].value);
        else
            cJSON_AddNullToObject(t, ids[i].key);
    }
    /* Per-layer shapes only when they differ from the global fields (a plain HF model
     * otherwise); head_dim is recorded whenever heads no longer divide the width evenly. */
    cJSON *ext = extra_audistill ? cJSON_Parse(extra_audistill) : cJSON_CreateObject();
    if (!ext || !cJSON_IsObject(ext)) {
        cJSON_Delete(ext);
        cJSON_Delete(root);
        ad_fail("internal: the extra audistill config is not a JSON object");
        return NULL;
    }
    if (!c->uniform) {
        add_int(ext, "head_dim", c->head_dim);
        add_int(ext, "encoder_head_dim", c->encoder_head_dim);
        cJSON *dl = cJSON_AddArrayToObject(ext, "decoder_layers");
        for (int i = 0; i < c->num_hidden_layers; i++) {
            cJSON *l = cJSON_CreateObject();
            add_int(l, "num_attention_heads", c->decoder_layer[i].num_attention_heads);
            add_int(l, "num_key_value_heads", c->decoder_layer[i].num_key_value_heads);
            add_int(l, "intermediate_size", c->decoder_layer[i].intermediate_size);
            cJSON_AddItemToArray(dl, l);
        }
        cJSON *el = cJSON_AddArrayToObject(ext, "encoder_layers");
        for (int i = 0; i < c->encoder_layers; i++) {
            cJSON *l = cJSON_CreateObject();
            add_int(l, "encoder_attention_heads", c->encoder_layer[i].num_attention_heads);
            add_int(l, "encoder_ffn_dim", c->encoder_layer[i].ffn_dim);
            cJSON_AddItemToArray(el, l);
        }
    }
    if (ext->child)
        cJSON_AddItemToObject(root, "audistill", ext);
    else
        cJSON_Delete(ext);
    char *json = cJSON_Print(root);
    cJSON_Delete(root);
    if (json) return json;
oom:
    ad_fail("out of memory writing a model config");
    return NULL;
}
