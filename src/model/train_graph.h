/* The training graph: Qwen2-Audio's forward over whole micro-batches with every activation the
 * backward pass needs kept in one arena sized up front, and the explicit backward pass over
 * the op table (llm.c style: no autograd; a flat loop over layers forward, its mirror image
 * backward). Only the supervised rows (target tokens) reach lm_head. Parameter gradients
 * accumulate (+=) into a second set of tensors with the model's layout, so gradient
 * accumulation over micro-batches needs nothing extra (the first write after a zeroing
 * overwrites instead, for the large ones: see grad_memory).
 *
 * A graph with nothing trainable (the teacher) keeps one layer's worth of activations and
 * reuses it for every layer: forward only, no stored activations. So does a stack that no
 * gradient passes through (a frozen audio encoder), and with recompute every stack keeps only
 * its layers' inputs beside that one layer's worth. */
#ifndef AUDISTILL_MODEL_TRAIN_GRAPH_H
#define AUDISTILL_MODEL_TRAIN_GRAPH_H

#include <stdbool.h>

#include "core/arena.h"
#include "model/model.h"
#include "model/weights.h"
#include "train/loader.h"

typedef struct {
    bool audio_encoder; /* convolutions, encoder layers, final LayerNorm */
    bool projector;
    bool decoder; /* decoder layers and the final norm */
    bool embed_tokens;
    bool lm_head;
    bool keep_activations; /* record every layer even when nothing trains (importance scoring) */
    /* Activation recomputation: keep only each layer's input, and rebuild the layer's
     * activations from it just before its backward (one extra forward of the layers in exchange
     * for one layer's activations instead of all of them; the same results, bit for bit). */
    bool recompute;
} ad_trainable;

typedef struct {
    int max_clips;      /* examples per micro-batch */
    int max_frames;     /* mel frames per clip */
    int max_len;        /* tokens per row */
    int max_supervised; /* supervised rows per micro-batch */
    /* Activations that only GEMMs read (the norms' outputs, silu * up, gelu's output), and
     * every layer's q, k, v (the decoder's q and k as rope writes them from the f32
     * projections, so they are rounded once), stored in bf16: for a backend whose GEMMs and
     * attention round their operands to bf16 (CUDA's bf16 GEMMs, its flash and GEMM
     * attention), the same bits they would convert them to, without the conversions and at
     * half the memory and traffic. (CUDA's tiled fp32 attention kernels,
     * taken only when asked for or for fewer than 16 query rows, read the rounded values.)
     * Off on the CPU reference. */
    bool gemm_inputs_bf16;
    /* The audio encoder's output comes from another graph (ad_graph_share_encoder): none of the
     * encoder's activations are kept, only the projector's output. Forward-only graphs. */
    bool encoder_elsewhere;
} ad_graph_limits;

/* softmax_stats: the attention's per-row statistics from the forward for its backward
 * (ad_attention_params.softmax_stats), in the records of a stack that has a backward. */
typedef struct {
    ad_tensor h_in, xn1, q, k, v, att, h_mid, xn2, f_pre, f_act, softmax_stats;
} ad_encoder_record;

typedef struct {
    ad_tensor x_in, xn1, q, k, v, att, x_mid, xn2, gate, up, act, softmax_stats;
} ad_decoder_record;

/* A gradient whose zeros ad_graph_zero_grads deferred to its first write (see grad_memory). */
typedef struct {
    void *data;
    int64_t numel;
    bool pending; /* zeroed since its last write: the next one overwrites */
} ad_deferred_grad;

typedef struct ad_train_graph {
    ad_model *m;
    ad_backend *be;
    ad_trainable train;
    bool any_trainable;
    bool records; /* every layer has its own activations (training or keep_activations) */
    ad_graph_limits lim;
    ad_model grads; /* gradient tensors, same layout as the weights; NULL data when frozen */
    /* The gradients: first eager_grad_bytes of those ad_graph_zero_grads fills, then the
     * deferred ones, the 2-D linear weights' (nearly all the bytes: 5.8 GB of fill per step at
     * 1.45 B trainable parameters). Their first weight-gradient GEMM after a zeroing writes them
     * with beta 0 (linear_backward's dw_overwrite), and the backward zeroes any it did not
     * reach at its end. */
    void *grad_memory;
    size_t grad_bytes, eager_grad_bytes;
    ad_deferred_grad *deferred; /* ascending addresses */
    int n_deferred;
    void *memory; /* activations */
    ad_arena arena;
    /* encoder activations */
    ad_tensor feat, featT, x0, a1_pre, a1c, a2_pre, h, pooled, enc, audio;
    ad_encoder_record *enc_rec; /* per layer (all alias [0] when nothing trains) */
    /* decoder activations */
    ad_tensor ids, pos, audio_rows, x, x_final, hidden, sel_rows, sel, logits, targets;
    ad_decoder_record *dec_rec;
    /* backward scratch */
    ad_tensor d_a, d_c, d_ffn, d_ffn2, d_q, d_k, d_v, d_att, d_enc_a, d_enc_b, d_enc_c, d_enc_ffn,
        d_enc_ffn2, d_enc_q, d_enc_k, d_enc_v, d_enc_att, d_pooled, d_audio, d_conv1, d_conv2,
        d_sel, d_hidden;
    /* the last forward's shapes, on the host */
    /* n_supervised: rows of `logits`, the n_text_rows target rows and then, when the batch
     * carries CTC transcripts, one row per audio position (n_audio, in row order). */
    int n_clips, n1, L_in, n2_in, tok_max, rows, len, n_supervised, n_text_rows, n_audio;
    int *clip_tokens, *clip_key_len, *row_len;
    /* host_audio_rows: the audio positions in row order (n_audio); host_audio_pad: the same per
     * clip at [c * tok_max, c * tok_max + clip_tokens[c]), -1 after (the device's audio_rows) */
    int32_t *host_ids, *host_pos, *host_audio_rows, *host_audio_pad, *host_sel, *host_targets;
    /* A shared audio encoder (ad_graph_share_encoder): this graph's forward takes the encoder
     * output that encoder_source's forward just computed for the same batch (its `enc`) and
     * runs only its own projector on it. encoded_batch: the batch whose encoder output `enc`
     * holds, until a graph sharing it takes it. */
    struct ad_train_graph *encoder_source;
    const ad_batch *encoded_batch;
} ad_train_graph;

int ad_graph_init(ad_train_graph *g, ad_model *m, const ad_graph_limits *lim,
                  const ad_trainable *train);
void ad_graph_free(ad_train_graph *g);
/* Whether weight `name` of `comp` gets a gradient under `t`. */
bool ad_trainable_has(const ad_trainable *t, const char *name, ad_component comp);
/* What ad_graph_init would allocate for a model of this config, without a model or a backend:
 * the activation arena and the fp32 gradients of the trainable weights (memory plans). */
int ad_graph_plan(const ad_model_config *cfg, const ad_graph_limits *lim, const ad_trainable *train,
                  size_t *activation_bytes, size_t *gradient_bytes);
/* Forward over a micro-batch: fills g->logits [n_supervised, vocab] (student logits of the
 * supervised rows, in row-major order of the batch) and g->targets [n_supervised] I32. */
int ad_graph_forward(ad_train_graph *g, const ad_batch *b);
/* Makes g's forward reuse source's audio encoder output (a teacher and a student whose frozen
 * encoder is the teacher's: ad_model_same_audio_encoder): source's forward over a batch must
 * come first, and each of its forwards serves one of g's. g is made again with
 * lim.encoder_elsewhere (no encoder activations of its own: its arena shrinks). Fails unless g
 * is forward-only, both graphs have the same clip limits and source's encoder does not train
 * (its output would stop being g's). */
int ad_graph_share_encoder(ad_train_graph *g, ad_train_graph *source);
/* Backward from d(loss)/d(logits), which the loss op wrote into g->logits in place;
 * accumulates into g->grads. On success every gradient holds its value (none deferred). */
int ad_graph_backward(ad_train_graph *g);
/* Sets every gradient to zero for the next accumulation. The 2-D linear weights' zeros are
 * deferred to the next backward (see grad_memory): until then, or ad_graph_settle_grads, their
 * memory still holds the old values. */
int ad_graph_zero_grads(ad_train_graph *g);
/* Writes the zeros ad_graph_zero_grads deferred and no backward has written since: for reading
 * the gradients without a backward after the zeroing (a rank without examples). */
int ad_graph_settle_grads(ad_train_graph *g);

#endif
