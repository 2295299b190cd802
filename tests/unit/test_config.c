/* HF config.json: the real Qwen2-Audio-7B config gives the published parameter counts; absent
 * fields take transformers' defaults; student per-layer shapes are read and validated; bad
 * configs are refused with the key named. Added tokens come from tokenizer_config.json. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

#include "io/file.h"
#include "io/hf_config.h"
#include "model/weights.h"
#include "test.h"

static void test_real_config_counts(void) {
    ad_model_config cfg;
    CHECK_OK(ad_model_config_load(AUDISTILL_FIXTURES "/qwen2_audio_7b/config.json", &cfg));
    CHECK(cfg.num_hidden_layers == 32 && cfg.hidden_size == 4096 && cfg.num_key_value_heads == 32);
    CHECK(cfg.intermediate_size == 11008 && cfg.vocab_size == 156032 && cfg.head_dim == 128);
    CHECK(cfg.rms_norm_eps == 1e-5 && cfg.rope_theta == 10000.0 && !cfg.tie_word_embeddings);
    CHECK(cfg.eos_token_id == 151645 && cfg.audio_token_index == 151646 && cfg.uniform);
    ad_weight_spec *specs;
    int n;
    CHECK_OK(ad_weight_specs(&cfg, &specs, &n));
    ad_param_counts k;
    ad_count_params(specs, n, &k);
    /* The published totals of Qwen/Qwen2-Audio-7B. */
    CHECK(k.total_params == 8397094912LL && k.total_tensors == 876);
    CHECK(k.params[AD_COMPONENT_AUDIO_ENCODER] == 636968960LL);
    CHECK(k.params[AD_COMPONENT_PROJECTOR] == 5246976LL);
    CHECK(k.params[AD_COMPONENT_DECODER_LAYERS] == 6476664832LL);
    CHECK(k.params[AD_COMPONENT_EMBED_TOKENS] == 639107072LL);
    CHECK(k.params[AD_COMPONENT_LM_HEAD] == 639107072LL);
    free(specs);
}

static int parse(const char *json, ad_model_config *cfg) {
    return ad_model_config_parse(json, strlen(json), "config.json", cfg);
}

static void test_defaults(void) {
    ad_model_config cfg;
    /* Qwen2AudioConfig() with nothing set: Qwen2Config and encoder defaults. */
    CHECK_OK(parse("{\"model_type\": \"qwen2_audio\"}", &cfg));
    CHECK(cfg.hidden_size == 4096 && cfg.intermediate_size == 22016 && cfg.vocab_size == 151936);
    CHECK(cfg.num_key_value_heads == 32 && cfg.rms_norm_eps == 1e-6 && cfg.d_model == 1280);
    CHECK(cfg.encoder_layers == 32 && cfg.num_mel_bins == 128 && cfg.max_source_positions == 1500);
    /* null num_key_value_heads means "same as the attention heads". */
    CHECK_OK(parse("{\"model_type\":\"qwen2_audio\",\"text_config\":{\"num_attention_heads\":8,"
                   "\"num_key_value_heads\":null,\"hidden_size\":64}}",
                   &cfg));
    CHECK(cfg.num_key_value_heads == 8 && cfg.head_dim == 8);
    /* transformers 5 writes rope_theta inside rope_parameters. */
    CHECK_OK(parse("{\"model_type\":\"qwen2_audio\",\"text_config\":{\"rope_parameters\":"
                   "{\"rope_theta\":500000.0,\"rope_type\":\"default\"}}}",
                   &cfg));
    CHECK(cfg.rope_theta == 500000.0);
}

static void test_student_shapes(void) {
    ad_model_config cfg;
    CHECK_OK(parse("{\"model_type\":\"qwen2_audio\",\"audio_config\":{\"encoder_layers\":1,"
                   "\"d_model\":16,\"encoder_attention_heads\":2,\"encoder_ffn_dim\":32},"
                   "\"text_config\":{\"num_hidden_layers\":2,\"hidden_size\":32,"
                   "\"num_attention_heads\":4,\"num_key_value_heads\":2,\"intermediate_size\":48,"
                   "\"vocab_size\":100},\"audio_token_index\":99,"
                   "\"audistill\":{\"head_dim\":8,\"decoder_layers\":[{\"num_attention_heads\":2,"
                   "\"num_key_value_heads\":1,\"intermediate_size\":20},{}]}}",
                   &cfg));
    CHECK(!cfg.uniform);
    CHECK(cfg.decoder_layer[0].num_attention_heads == 2 &&
          cfg.decoder_layer[0].intermediate_size == 20);
    CHECK(cfg.decoder_layer[1].num_attention_heads == 4 &&
          cfg.decoder_layer[1].intermediate_size == 48);
    ad_weight_spec *specs;
    int n;
    CHECK_OK(ad_weight_specs(&cfg, &specs, &n));
    int found = 0;
    for (int i = 0; i < n; i++) {
        if (strcmp(specs[i].name, "language_model.model.layers.0.self_attn.q_proj.weight") == 0)
            found += specs[i].shape[0] == 16 && specs[i].shape[1] == 32;
        if (strcmp(specs[i].name, "language_model.model.layers.0.mlp.down_proj.weight") == 0)
            found += specs[i].shape[0] == 32 && specs[i].shape[1] == 20;
        if (strcmp(specs[i].name, "language_model.model.layers.1.self_attn.k_proj.weight") == 0)
            found += specs[i].shape[0] == 16;
    }
    CHECK(found == 3);
    free(specs);
    CHECK_FAILS_WITH(
        parse("{\"model_type\":\"qwen2_audio\",\"text_config\":{\"num_hidden_layers\":2},"
              "\"audistill\":{\"decoder_layers\":[{}]}}",
              &cfg),
        "list of 2 layer shapes");
}

static void test_bad_configs(void) {
    ad_model_config cfg;
    CHECK_FAILS_WITH(parse("{\"text_config\": {}}", &cfg), "\"model_type\" is missing");
    CHECK_FAILS_WITH(parse("{\"model_type\": \"llama\"}", &cfg), "expected \"qwen2_audio\"");
    CHECK_FAILS_WITH(parse("{\"model_type\": \"qwen2_audio\",", &cfg), "not valid JSON");
    CHECK_FAILS_WITH(parse("[]", &cfg), "JSON object");
    CHECK_FAILS_WITH(
        parse("{\"model_type\":\"qwen2_audio\",\"text_config\":{\"hidden_size\":\"big\"}}", &cfg),
        "text_config.hidden_size must be an integer");
    CHECK_FAILS_WITH(
        parse("{\"model_type\":\"qwen2_audio\",\"text_config\":{\"num_hidden_layers\":2.5}}", &cfg),
        "num_hidden_layers");
    CHECK_FAILS_WITH(parse("{\"model_type\":\"qwen2_audio\",\"text_config\":{\"hidden_size\":100,"
                           "\"num_attention_heads\":3}}",
                           &cfg),
                     "not divisible");
    CHECK_FAILS_WITH(
        parse("{\"model_type\":\"qwen2_audio\",\"text_config\":{\"num_attention_heads\":32,"
              "\"num_key_value_heads\":5}}",
              &cfg),
        "not a multiple");
    CHECK_FAILS_WITH(
        parse("{\"model_type\":\"qwen2_audio\",\"text_config\":{\"hidden_act\":\"gelu\"}}", &cfg),
        "hidden_act");
    CHECK_FAILS_WITH(
        parse("{\"model_type\":\"qwen2_audio\",\"text_config\":{\"vocab_size\":1000}}", &cfg),
        "audio_token_index");
    CHECK_FAILS_WITH(parse("{\"model_type\":\"qwen2_audio\",\"audio_config\":[]}", &cfg),
                     "must be an object");
    /* Found by fuzzing: a huge token id must be refused, not converted. */
    CHECK_FAILS_WITH(
        parse("{\"model_type\":\"qwen2_audio\",\"text_config\":{\"eos_token_id\":3e74}}", &cfg),
        "eos_token_id must be a token id");
    /* Found by fuzzing: widths whose parameter count overflows int64 must be refused. */
    CHECK_FAILS_WITH(parse("{\"model_type\":\"qwen2_audio\",\"text_config\":{"
                           "\"hidden_size\":1076934336}}",
                           &cfg),
                     "text_config.hidden_size is 1076934336; widths above 16777216");
    CHECK_FAILS_WITH(parse("{\"model_type\":\"qwen2_audio\",\"text_config\":{"
                           "\"num_hidden_layers\":2,\"num_attention_heads\":1,"
                           "\"num_key_value_heads\":1},\"audistill\":{\"head_dim\":8388608,"
                           "\"decoder_layers\":[{},{\"num_attention_heads\":4}]}}",
                           &cfg),
                     "layer 1: decoder num_attention_heads x head_dim is 33554432");
    CHECK_FAILS_WITH(ad_model_config_load(AUDISTILL_TEST_TMP "/no-such-config.json", &cfg),
                     "cannot open");
}

static void test_added_tokens(void) {
    char path[512];
    snprintf(path, sizeof path, "%s/tokenizer_config-%ld.json", AUDISTILL_TEST_TMP, (long)getpid());
    const char *json = "{\"added_tokens_decoder\": {\"151643\": {\"content\": \"<|endoftext|>\", "
                       "\"special\": true}, \"151646\": {\"content\": \"<|AUDIO|>\", \"special\": "
                       "true}, \"200\": {\"content\": \"plain\", \"special\": false}}}";
    CHECK_OK(ad_write_file_atomic(path, json, strlen(json)));
    ad_added_token *t;
    int n;
    CHECK_OK(ad_added_tokens_load(path, &t, &n));
    CHECK(n == 3 && t[1].id == 151646 && strcmp(t[1].content, "<|AUDIO|>") == 0 && t[1].special);
    CHECK(!t[2].special);
    ad_added_tokens_free(t, n);
    const char *bad = "{\"added_tokens_decoder\": {\"x1\": {\"content\": \"a\"}}}";
    CHECK_OK(ad_write_file_atomic(path, bad, strlen(bad)));
    CHECK_FAILS_WITH(ad_added_tokens_load(path, &t, &n), "integer id");
    unlink(path);
}

/* Writing a config and reading it back gives the same model, uniform or not. */
static void test_write_round_trip(void) {
    ad_model_config a, b;
    CHECK_OK(ad_model_config_load(AUDISTILL_FIXTURES "/qwen2_audio_7b/config.json", &a));
    char *json = ad_model_config_to_json(&a, NULL);
    CHECK(json && strstr(json, "\"audistill\"") == NULL);
    CHECK_OK(parse(json, &b));
    CHECK(memcmp(&a, &b, sizeof a) == 0);
    free(json);
    a.decoder_layer[3].intermediate_size = 8192;
    a.decoder_layer[5].num_attention_heads = 24;
    a.decoder_layer[5].num_key_value_heads = 24;
    a.uniform = false;
    json = ad_model_config_to_json(&a, "{\"note\": \"student\"}");
    CHECK(json && strstr(json, "\"note\"") != NULL);
    CHECK_OK(parse(json, &b));
    CHECK(!b.uniform && b.decoder_layer[3].intermediate_size == 8192 &&
          b.decoder_layer[5].num_attention_heads == 24);
    CHECK(b.decoder_layer[4].intermediate_size == 11008 && b.head_dim == 128);
    free(json);
}

/* The widest config accepted, at the layer cap, still counts its parameters within int64
 * (UBSan flags an overflow): at least the 11 square matrices per layer pair. */
static void test_widest_config_counts(void) {
    const int w = AD_MAX_WIDTH, layers = AD_MAX_LAYERS;
    char json[1024];
    snprintf(json, sizeof json,
             "{\"model_type\":\"qwen2_audio\",\"audio_config\":{\"num_mel_bins\":%d,"
             "\"encoder_layers\":%d,\"encoder_attention_heads\":1,\"encoder_ffn_dim\":%d,"
             "\"d_model\":%d,\"max_source_positions\":%d},\"text_config\":{"
             "\"vocab_size\":%d,\"hidden_size\":%d,\"intermediate_size\":%d,"
             "\"num_hidden_layers\":%d,\"num_attention_heads\":1,\"num_key_value_heads\":1,"
             "\"max_position_embeddings\":%d}}",
             w, layers, w, w, w, w, w, w, layers, w);
    ad_model_config cfg;
    CHECK(parse(json, &cfg) == 0);
    ad_weight_spec *specs = NULL;
    int n = 0;
    CHECK(ad_weight_specs(&cfg, &specs, &n) == 0);
    ad_param_counts counts;
    ad_count_params(specs, n, &counts);
    free(specs);
    CHECK(counts.total_params > (int64_t)layers * 11 * w * w);
    CHECK(counts.total_params < INT64_MAX / 4);
}

int main(void) {
    RUN(test_write_round_trip);
    RUN(test_real_config_counts);
    RUN(test_defaults);
    RUN(test_student_shapes);
    RUN(test_bad_configs);
    RUN(test_widest_config_counts);
    RUN(test_added_tokens);
    return test_report();
}
