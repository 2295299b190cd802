/* The Qwen2-Audio model on a backend: weights from a Hugging Face directory in one backend
 * allocation, and the forward pass (audio encoder, projector, Qwen2 decoder with a KV cache)
 * written once against the op table of backend.h. Host code here only does bookkeeping (shapes,
 * id and position arrays); every number the model computes comes from a backend op.
 *
 * Activations live in a state (ad_model_state) sized up front from the config and the caller's
 * limits; a forward call carves scratch from it and returns it, it never allocates. */
#ifndef AUDISTILL_MODEL_MODEL_H
#define AUDISTILL_MODEL_MODEL_H

#include <stdint.h>

#include "backend/backend.h"
#include "core/arena.h"
#include "io/hf_config.h"
#include "model/weights.h"

typedef struct {
    ad_tensor k_proj_w, v_proj_w, v_proj_b, q_proj_w, q_proj_b, out_proj_w, out_proj_b;
    ad_tensor self_attn_layer_norm_w, self_attn_layer_norm_b;
    ad_tensor fc1_w, fc1_b, fc2_w, fc2_b;
    ad_tensor final_layer_norm_w, final_layer_norm_b;
} ad_encoder_layer;

typedef struct {
    ad_tensor q_proj_w, q_proj_b, k_proj_w, k_proj_b, v_proj_w, v_proj_b, o_proj_w;
    ad_tensor gate_proj_w, up_proj_w, down_proj_w;
    ad_tensor input_layernorm_w, post_attention_layernorm_w;
} ad_decoder_layer;

typedef struct {
    ad_model_config cfg;
    ad_backend *be;
    void *weight_memory; /* one backend allocation holding every weight */
    size_t weight_bytes;
    /* audio_tower */
    ad_tensor conv1_w, conv1_b, conv2_w, conv2_b, embed_positions, layer_norm_w, layer_norm_b;
    ad_encoder_layer *encoder;
    /* multi_modal_projector */
    ad_tensor projector_w, projector_b;
    /* language_model */
    ad_tensor embed_tokens, norm_w, lm_head; /* lm_head aliases embed_tokens when tied */
    ad_decoder_layer *decoder;
    int n_quantized;    /* weights stored group-quantized (AD_QGROUP slots) */
    void **quant_owned; /* their ad_quant_tensor copies */
    int n_quant_owned;
    bool quant_on_device;  /* those copies point into one device allocation each */
    int n_dequantized;     /* ad_model_load_dequantized: group-quantized weights loaded as floats */
    ad_weight_spec *specs; /* the list the weight tensors' names point into */
    int n_specs;
    float **masters; /* ad_model_load_mixed: per spec, the picked weights' fp32 values (host) */
} ad_model;

/* Reads DIR/config.json and the checkpoint in DIR (single file or sharded index; checkpoint or
 * transformers-5 tensor names), checks every tensor against the shape the config implies, and
 * uploads them in the backend's activation dtype. */
int ad_model_load(ad_model *m, ad_backend *be, const char *dir);
/* The same with the unquantized weights stored as `weights` (F32 or BF16) instead of the
 * backend's activation dtype (a frozen teacher in bf16 on a GPU). */
int ad_model_load_as(ad_model *m, ad_backend *be, const char *dir, ad_dtype weights);
/* The same (dequantize: as ad_model_load_dequantized) with the unquantized weights `pick`
 * chooses stored as `picked` (F32 or BF16) and the file's values of each also kept in fp32 on
 * the host until ad_model_take_master takes them: a student computing in bf16 stores its GEMM
 * weights so, and its optimizer's fp32 masters are those exact values, not the rounded ones. */
int ad_model_load_mixed(ad_model *m, ad_backend *be, const char *dir, bool dequantize,
                        ad_dtype picked, bool (*pick)(const ad_weight_spec *spec, void *ctx),
                        void *ctx);
/* The fp32 host values ad_model_load_mixed kept for weight `name` (the caller frees them), or
 * NULL when it kept none. */
float *ad_model_take_master(ad_model *m, const char *name);
/* The same values left with the model (a frozen weight's, for checkpoints), or NULL. */
const float *ad_model_master(const ad_model *m, const char *name);
/* Frees the fp32 values nobody took (ranks that write no checkpoints need none). */
void ad_model_free_masters(ad_model *m);
/* The same from a parsed config and an opened checkpoint path. */
int ad_model_load_config(ad_model *m, ad_backend *be, const ad_model_config *cfg,
                         const char *weights_path);
/* The same, with every group-quantized weight expanded to the floats it stands for, in an
 * ordinary slot (quantization-aware training starts from these exact values on any backend). */
int ad_model_load_dequantized(ad_model *m, ad_backend *be, const char *dir);
void ad_model_free(ad_model *m);
/* The tensor holding the weight called `name` (a checkpoint name from ad_weight_specs), or
 * NULL. Training uses it to pair weights with gradients and optimizer state by name. */
ad_tensor *ad_model_weight(ad_model *m, const char *name);
/* Whether a and b hold the same audio encoder: the same encoder config and every encoder
 * weight's values equal bit for bit (as f32: a bf16 copy and an f32 copy of bf16 values are
 * equal), the projector excluded. A group-quantized encoder weight counts as different. Then
 * either model's encoder output is the other's. `why` gets the reason, for the log. */
int ad_model_same_audio_encoder(ad_model *a, ad_model *b, bool *same, char *why, size_t why_size);
/* Whether two configs give the audio encoder the same shape (its weights aside). */
bool ad_model_config_same_encoder(const ad_model_config *a, const ad_model_config *b);

/* Audio frames -> tokens, as Qwen2AudioEncoder._get_feat_extract_output_lengths. */
static inline int ad_audio_conv_frames(int mel_frames) {
    return (mel_frames - 1) / 2 + 1;
}
/* The mel frames a job sees: its max_frames, at most the encoder's 2 * max_source_positions. */
static inline int ad_model_window(const ad_model_config *cfg, int64_t max_frames) {
    const int64_t encoder = 2 * (int64_t)cfg->max_source_positions;
    return (int)(max_frames < encoder ? max_frames : encoder);
}
static inline int ad_audio_tokens(int mel_frames) {
    return (ad_audio_conv_frames(mel_frames) - 2) / 2 + 1;
}

typedef struct {
    int max_clips;       /* clips per encoder call */
    int max_frames;      /* mel frames per clip (at most 2 * max_source_positions) */
    int max_rows;        /* sequences decoded together (batch x beams) */
    int max_tokens;      /* tokens per sequence over its life: prompt + generated (KV cache) */
    int max_step_tokens; /* tokens per sequence in one decoder call (the prompt length) */
    int max_logit_rows;  /* rows of logits one decoder call may return */
} ad_model_limits;

typedef struct {
    ad_model *m;
    ad_model_limits lim;
    void *memory; /* one backend allocation */
    ad_arena arena;
    size_t scratch_mark;          /* everything after this is per-call scratch */
    ad_tensor *k_cache, *v_cache; /* per decoder layer [max_rows, max_tokens, kv_dim] */
    int *cache_len;               /* host: valid cache entries per row */
    ad_tensor audio;              /* [max_clips, max_audio_tokens, hidden]: projector output */
    ad_tensor encoder_out;        /* [max_clips, max_audio_tokens, d_model]: before projector */
    ad_tensor logits;             /* [max_logit_rows, vocab] */
    ad_tensor hidden;             /* [max_rows * max_step_tokens, hidden]: final norm output */
    int n_clips, audio_tokens_max;
    int *audio_tokens; /* host [max_clips]: valid audio rows per clip of the last encode */
    /* host staging for ids, positions, row indices and key lengths */
    int32_t *host_ids, *host_pos, *host_rows;
    int *key_len;
} ad_model_state;

int ad_model_state_init(ad_model_state *st, ad_model *m, const ad_model_limits *lim);
void ad_model_state_free(ad_model_state *st);
/* Forget the KV cache of every row. */
void ad_model_state_reset(ad_model_state *st);

/* Audio encoder + projector. features: host F32 [n_clips, num_mel_bins, T] as the processor
 * makes them (T <= max_frames), frames[c]: valid frames of clip c (the feature_attention_mask
 * sum). Only the frames that influence the valid outputs are computed; the result equals the
 * reference run on the padded input with its mask. Fills st->audio, st->encoder_out and
 * st->audio_tokens (valid rows per clip). */
int ad_model_encode(ad_model_state *st, const ad_tensor *features, const int *frames);

typedef struct {
    const int32_t *ids; /* [n_rows * n_tokens], row-major; entries past len[r] are ignored */
    const int *len;     /* tokens per row in this call (>= 1) */
    int n_rows, n_tokens;
    /* Replace the <|AUDIO|> positions, in row-major order, with the rows of st->audio from the
     * last ad_model_encode (clip after clip, as masked_scatter does). */
    bool use_audio;
} ad_decode_input;

/* One decoder pass for rows 0..n_rows-1: row r's tokens are appended to its KV cache at
 * positions cache_len[r]... Logits are computed for the (row, token) pairs listed in
 * logit_rows (flat index r * n_tokens + t) into st->logits[0..n_logit_rows). Rows with more
 * than one token must share the same cache length. The final hidden states of all tokens are
 * in st->hidden afterwards ([n_rows * n_tokens, hidden]). */
int ad_model_decode(ad_model_state *st, const ad_decode_input *in, const int *logit_rows,
                    int n_logit_rows);

/* Reorder KV cache rows: new row r = old row src[r] (r < n_rows), cache lengths included. */
int ad_model_reorder_cache(ad_model_state *st, const int *src, int n_rows);

#endif
