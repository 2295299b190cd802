/* Hugging Face config.json for qwen2_audio (audio_config + text_config) and the added tokens
 * of tokenizer_config.json. Fields absent from the file take transformers' defaults
 * (Qwen2Config, Qwen2AudioEncoderConfig as Qwen2AudioConfig builds it), so a config that
 * transformers accepts means the same model here. Students may differ per layer; those
 * shapes live in an "audistill" object that transformers ignores. */
#ifndef AUDISTILL_IO_HF_CONFIG_H
#define AUDISTILL_IO_HF_CONFIG_H

#include <stdbool.h>
#include <stddef.h>

#define AD_MAX_LAYERS 256
/* The widest tensor dimension accepted (Qwen2-Audio-7B's widest is its 156,032 vocabulary). */
#define AD_MAX_WIDTH (1 << 24)

typedef struct {
    int num_attention_heads;
    int num_key_value_heads;
    int intermediate_size;
} ad_decoder_layer_shape;

typedef struct {
    int num_attention_heads;
    int ffn_dim;
} ad_encoder_layer_shape;

typedef struct {
    /* audio_config */
    int num_mel_bins;
    int encoder_layers;
    int encoder_attention_heads;
    int encoder_ffn_dim;
    int d_model;
    int max_source_positions;
    bool scale_embedding;
    char activation_function[32];
    int encoder_head_dim; /* d_model / encoder_attention_heads unless a student records it */
    ad_encoder_layer_shape encoder_layer[AD_MAX_LAYERS];

    /* text_config */
    int vocab_size;
    int hidden_size;
    int intermediate_size;
    int num_hidden_layers;
    int num_attention_heads;
    int num_key_value_heads;
    int head_dim;
    int max_position_embeddings;
    double rope_theta;
    double rms_norm_eps;
    bool tie_word_embeddings;
    char hidden_act[32];
    int bos_token_id; /* -1 when null */
    int eos_token_id;
    int pad_token_id;
    ad_decoder_layer_shape decoder_layer[AD_MAX_LAYERS];

    /* top level */
    int audio_token_index;
    bool uniform; /* every layer has the config's global shape */
} ad_model_config;

/* The defaults transformers uses for Qwen2AudioConfig() with no arguments. */
void ad_model_config_defaults(ad_model_config *cfg);
int ad_model_config_parse(const char *json, size_t len, const char *file_name,
                          ad_model_config *cfg);
int ad_model_config_load(const char *path, ad_model_config *cfg);

/* config.json text for a model config (caller frees): the HF qwen2_audio fields, plus the
 * "audistill" object with per-layer shapes when the model is not uniform. `extra_audistill`
 * (may be NULL) is a JSON object text whose members are added to the "audistill" object. */
char *ad_model_config_to_json(const ad_model_config *cfg, const char *extra_audistill);

typedef struct {
    int id;
    char *content;
    bool special;
} ad_added_token;

/* Reads "added_tokens_decoder" from a tokenizer_config.json. Caller frees with
 * ad_added_tokens_free. */
int ad_added_tokens_load(const char *path, ad_added_token **tokens, int *n);
void ad_added_tokens_free(ad_added_token *tokens, int n);

#endif
