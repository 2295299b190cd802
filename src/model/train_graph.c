#include "model/train_graph.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"
#include "model/weights.h"

#define ENCODER_LN_EPS 1e-5f

/* A view of t's memory with another (smaller or equal) shape. */
static ad_tensor shaped(const ad_tensor *t, int ndim, int64_t d0, int64_t d1, int64_t d2) {
    ad_tensor v;
    const int64_t shape[3] = {d0, d1, d2};
    ad_tensor_init(&v, t->data, t->dtype, t->device, ndim, shape, t->name);
    return v;
}

/* ---- sizing and carving ------------------------------------------------------------------ */

typedef struct {
    ad_arena *arena; /* NULL while planning */
    ad_arena_plan plan;
    ad_device device;
} carver;

static int carve(carver *c, ad_tensor *t, ad_dtype dtype, int64_t d0, int64_t d1, int64_t d2,
                 const char *name) {
    const int64_t shape[3] = {d0, d1, d2};
    const int ndim = d2 ? 3 : d1 ? 2 : 1;
    if (!c->arena) {
        ad_arena_plan_tensor(&c->plan, dtype, ndim, shape);
        return ad_tensor_init(t, NULL, dtype, c->device, ndim, shape, name);
    }
    AD_TRY(ad_arena_tensor(c->arena, t, dtype, ndim, shape, name));
    t->device = c->device;
    return AD_OK;
}

typedef struct {
    int64_t enc_attn, enc_ffn, dec_q, dec_kv, dec_ffn;
} widths;

/* What a stack of layers keeps for the backward pass. */
typedef enum {
    KEEP_ONE_LAYER, /* forward only: one record at the widest widths, reused by every layer */
    KEEP_INPUTS,    /* recompute: every layer's input, and one shared record for the rest */
    KEEP_ALL        /* every layer its own record */
} keep_mode;

static keep_mode stack_keep(const ad_train_graph *g, bool gradient_passes) {
    if (g->train.keep_activations) return KEEP_ALL;
    if (!gradient_passes) return KEEP_ONE_LAYER;
    return g->train.recompute ? KEEP_INPUTS : KEEP_ALL;
}

/* A gradient passes through the encoder layers only when they train; through the decoder layers
 * when anything before lm_head trains. */
static keep_mode encoder_keep(const ad_train_graph *g) {
    return stack_keep(g, g->train.audio_encoder);
}
static keep_mode decoder_keep(const ad_train_graph *g) {
    const ad_trainable *t = &g->train;
    return stack_keep(g, t->decoder || t->embed_tokens || t->projector || t->audio_encoder);
}

static widths max_widths(const ad_model_config *cfg) {
    widths w = {0, 0, 0, 0, 0};
    for (int l = 0; l < cfg->encoder_layers; l++) {
        int64_t a = (int64_t)cfg->encoder_layer[l].num_attention_heads * cfg->encoder_head_dim;
        if (a > w.enc_attn) w.enc_attn = a;
        if (cfg->encoder_layer[l].ffn_dim > w.enc_ffn) w.enc_ffn = cfg->encoder_layer[l].ffn_dim;
    }
    for (int l = 0; l < cfg->num_hidden_layers; l++) {
        const ad_decoder_layer_shape *s = &cfg->decoder_layer[l];
        if ((int64_t)s->num_attention_heads * cfg->head_dim > w.dec_q)
            w.dec_q = (int64_t)s->num_attention_heads * cfg->head_dim;
        if ((int64_t)s->num_key_value_heads * cfg->head_dim > w.dec_kv)
            w.dec_kv = (int64_t)s->num_key_value_heads * cfg->head_dim;
        if (s->intermediate_size > w.dec_ffn) w.dec_ffn = s->intermediate_size;
    }
    return w;
}

/* The audio encoder's activations (the convolutions' buffers, the stream, the records). */
static int layout_encoder(ad_train_graph *g, carver *c, const widths *wd, ad_dtype gin) {
    const ad_model_config *cfg = &g->m->cfg;
    const ad_graph_limits *L = &g->lim;
    const widths w = *wd;
    const int64_t C = L->max_clips, T = L->max_frames, M = cfg->num_mel_bins, d = cfg->d_model;
    const int64_t H = cfg->hidden_size, n1 = (T - 1) / 2 + 1, tok = (n1 - 2) / 2 + 1;
    const keep_mode ek = encoder_keep(g);
    AD_TRY(carve(c, &g->feat, AD_F32, C, M, T, "features"));
    AD_TRY(carve(c, &g->featT, AD_F32, C, T, M, "features (time-major)"));
    AD_TRY(carve(c, &g->x0, AD_F32, C, T, M, "conv1 input"));
    AD_TRY(carve(c, &g->a1_pre, AD_F32, C, T, d, "conv1 output"));
    AD_TRY(carve(c, &g->a1c, AD_F32, C, T, d, "conv2 input"));
    AD_TRY(carve(c, &g->a2_pre, AD_F32, C, n1, d, "conv2 output"));
    AD_TRY(carve(c, &g->h, AD_F32, C, n1, d, "encoder stream"));
    AD_TRY(carve(c, &g->pooled, AD_F32, C, tok, d, "pooled"));
    AD_TRY(carve(c, &g->enc, AD_F32, C, tok, d, "encoder output"));
    AD_TRY(carve(c, &g->audio, AD_F32, C, tok, H, "audio features"));
    const bool enc_all = ek == KEEP_ALL;
    const int enc_records = enc_all ? cfg->encoder_layers : 1;
    for (int l = 1; ek == KEEP_INPUTS && l < cfg->encoder_layers; l++)
        AD_TRY(carve(c, &g->enc_rec[l].h_in, AD_F32, C, n1, d, "encoder layer input"));
    for (int l = 0; l < enc_records && l < cfg->encoder_layers; l++) {
        ad_encoder_record *r = &g->enc_rec[l];
        int64_t A = enc_all
                        ? (int64_t)cfg->encoder_layer[l].num_attention_heads * cfg->encoder_head_dim
                        : w.enc_attn;
        int64_t F = enc_all ? cfg->encoder_layer[l].ffn_dim : w.enc_ffn;
        AD_TRY(carve(c, &r->h_in, AD_F32, C, n1, d, "encoder layer input"));
        AD_TRY(carve(c, &r->xn1, gin, C, n1, d, "encoder ln1"));
        AD_TRY(carve(c, &r->q, gin, C, n1, A, "encoder q"));
        AD_TRY(carve(c, &r->k, gin, C, n1, A, "encoder k"));
        AD_TRY(carve(c, &r->v, gin, C, n1, A, "encoder v"));
        AD_TRY(carve(c, &r->att, AD_F32, C, n1, A, "encoder attention"));
        AD_TRY(carve(c, &r->h_mid, AD_F32, C, n1, d, "encoder mid"));
        AD_TRY(carve(c, &r->xn2, gin, C, n1, d, "encoder ln2"));
        AD_TRY(carve(c, &r->f_pre, AD_F32, C, n1, F, "encoder fc1"));
        AD_TRY(carve(c, &r->f_act, gin, C, n1, F, "encoder gelu"));
        if (ek != KEEP_ONE_LAYER)
            AD_TRY(carve(c, &r->softmax_stats, AD_F32, C, n1, A / cfg->encoder_head_dim,
                         "encoder softmax statistics"));
    }
    return AD_OK;
}

static int layout(ad_train_graph *g, carver *c) {
    const ad_model_config *cfg = &g->m->cfg;
    const ad_graph_limits *L = &g->lim;
    const widths w = max_widths(cfg);
    const int64_t C = L->max_clips, T = L->max_frames, d = cfg->d_model;
    const int64_t H = cfg->hidden_size, V = cfg->vocab_size, S = L->max_supervised;
    const int64_t n1 = (T - 1) / 2 + 1, tok = (n1 - 2) / 2 + 1, N = C * L->max_len;
    const keep_mode dk = decoder_keep(g);
    /* read by GEMMs only, or by GEMMs and attention (a layer's q, k, v; the decoder's q and k
     * as rope's output), whose flash and GEMM paths round them to bf16 as well */
    const ad_dtype gin = L->gemm_inputs_bf16 ? AD_BF16 : AD_F32;
    /* A graph whose encoder output comes from another keeps only the projector's output. */
    if (L->encoder_elsewhere)
        AD_TRY(carve(c, &g->audio, AD_F32, C, tok, H, "audio features"));
    else
        AD_TRY(layout_encoder(g, c, &w, gin));
    AD_TRY(carve(c, &g->ids, AD_I32, N, 0, 0, "ids"));
    AD_TRY(carve(c, &g->pos, AD_I32, N, 0, 0, "positions"));
    AD_TRY(carve(c, &g->audio_rows, AD_I32, N, 0, 0, "audio rows"));
    AD_TRY(carve(c, &g->x, AD_F32, N, H, 0, "decoder stream"));
    AD_TRY(carve(c, &g->x_final, AD_F32, N, H, 0, "decoder output"));
    AD_TRY(carve(c, &g->hidden, AD_F32, N, H, 0, "final norm"));
    AD_TRY(carve(c, &g->sel_rows, AD_I32, S, 0, 0, "supervised rows"));
    AD_TRY(carve(c, &g->sel, AD_F32, S, H, 0, "supervised hidden"));
    AD_TRY(carve(c, &g->logits, AD_F32, S, V, 0, "logits"));
    AD_TRY(carve(c, &g->targets, AD_I32, S, 0, 0, "targets"));
    const bool dec_all = dk == KEEP_ALL;
    const int dec_records = dec_all ? cfg->num_hidden_layers : 1;
    for (int l = 1; dk == KEEP_INPUTS && l < cfg->num_hidden_layers; l++)
        AD_TRY(carve(c, &g->dec_rec[l].x_in, AD_F32, N, H, 0, "decoder layer input"));
    for (int l = 0; l < dec_records && l < cfg->num_hidden_layers; l++) {
        ad_decoder_record *r = &g->dec_rec[l];
        const ad_decoder_layer_shape *s = &cfg->decoder_layer[l];
        int64_t Q = dec_all ? (int64_t)s->num_attention_heads * cfg->head_dim : w.dec_q;
        int64_t KV = dec_all ? (int64_t)s->num_key_value_heads * cfg->head_dim : w.dec_kv;
        int64_t F = dec_all ? s->intermediate_size : w.dec_ffn;
        AD_TRY(carve(c, &r->x_in, AD_F32, N, H, 0, "decoder layer input"));
        AD_TRY(carve(c, &r->xn1, gin, N, H, 0, "decoder rms1"));
        AD_TRY(carve(c, &r->q, gin, N, Q, 0, "decoder q"));
        AD_TRY(carve(c, &r->k, gin, N, KV, 0, "decoder k"));
        AD_TRY(carve(c, &r->v, gin, N, KV, 0, "decoder v"));
        AD_TRY(carve(c, &r->att, AD_F32, N, Q, 0, "decoder attention"));
        AD_TRY(carve(c, &r->x_mid, AD_F32, N, H, 0, "decoder mid"));
        AD_TRY(carve(c, &r->xn2, gin, N, H, 0, "decoder rms2"));
        AD_TRY(carve(c, &r->gate, AD_F32, N, F, 0, "decoder gate"));
        AD_TRY(carve(c, &r->up, AD_F32, N, F, 0, "decoder up"));
        AD_TRY(carve(c, &r->act, gin, N, F, 0, "decoder silu*up"));
        if (dk != KEEP_ONE_LAYER)
            AD_TRY(carve(c, &r->softmax_stats, AD_F32, N, Q / cfg->head_dim, 0,
                         "decoder softmax statistics"));
    }
    if (!g->any_trainable) return AD_OK;
    AD_TRY(carve(c, &g->d_sel, AD_F32, S, H, 0, "d supervised hidden"));
    AD_TRY(carve(c, &g->d_hidden, AD_F32, N, H, 0, "d final norm"));
    AD_TRY(carve(c, &g->d_a, AD_F32, N, H, 0, "d stream"));
    AD_TRY(carve(c, &g->d_c, AD_F32, N, H, 0, "d scratch 2"));
    AD_TRY(carve(c, &g->d_ffn, AD_F32, N, w.dec_ffn, 0, "d ffn"));
    AD_TRY(carve(c, &g->d_ffn2, AD_F32, N, w.dec_ffn, 0, "d ffn 2"));
    AD_TRY(carve(c, &g->d_q, AD_F32, N, w.dec_q, 0, "dq"));
    AD_TRY(carve(c, &g->d_k, AD_F32, N, w.dec_kv, 0, "dk"));
    AD_TRY(carve(c, &g->d_v, AD_F32, N, w.dec_kv, 0, "dv"));
    AD_TRY(carve(c, &g->d_att, AD_F32, N, w.dec_q, 0, "d attention"));
    AD_TRY(carve(c, &g->d_audio, AD_F32, C, tok, H, "d audio"));
    AD_TRY(carve(c, &g->d_pooled, AD_F32, C, tok, d, "d pooled"));
    AD_TRY(carve(c, &g->d_enc_a, AD_F32, C, n1, d, "d encoder stream"));
    AD_TRY(carve(c, &g->d_enc_b, AD_F32, C, n1, d, "d encoder scratch"));
    AD_TRY(carve(c, &g->d_enc_c, AD_F32, C, n1, d, "d encoder scratch 2"));
    AD_TRY(carve(c, &g->d_enc_ffn, AD_F32, C, n1, w.enc_ffn, "d encoder ffn"));
    AD_TRY(carve(c, &g->d_enc_ffn2, AD_F32, C, n1, w.enc_ffn, "d encoder ffn 2"));
    AD_TRY(carve(c, &g->d_enc_q, AD_F32, C, n1, w.enc_attn, "d encoder q"));
    AD_TRY(carve(c, &g->d_enc_k, AD_F32, C, n1, w.enc_attn, "d encoder k"));
    AD_TRY(carve(c, &g->d_enc_v, AD_F32, C, n1, w.enc_attn, "d encoder v"));
    AD_TRY(carve(c, &g->d_enc_att, AD_F32, C, n1, w.enc_attn, "d encoder attention"));
    AD_TRY(carve(c, &g->d_conv2, AD_F32, C, T, d, "d conv2 input"));
    AD_TRY(carve(c, &g->d_conv1, AD_F32, C, T, d, "d conv1 output"));
    return AD_OK;
}

/* ---- gradients ---------------------------------------------------------------------------- */

static bool is_trainable(const ad_trainable *t, const char *name, ad_component comp);

bool ad_trainable_has(const ad_trainable *t, const char *name, ad_component comp) {
    return is_trainable(t, name, comp);
}

static bool is_trainable(const ad_trainable *t, const char *name, ad_component comp) {
    switch (comp) {
    case AD_COMPONENT_AUDIO_ENCODER:
        /* Positions are a fixed buffer in the reference (requires_grad False). */
        return t->audio_encoder && !strstr(name, "embed_positions");
    case AD_COMPONENT_PROJECTOR: return t->projector;
    case AD_COMPONENT_DECODER_LAYERS: return t->decoder;
    case AD_COMPONENT_EMBED_TOKENS: return t->embed_tokens;
    case AD_COMPONENT_LM_HEAD: return t->lm_head;
    default: return false;
    }
}

/* A gradient that only linear_backward writes: a 2-D weight other than the token embeddings
 * (which embedding_backward accumulates into, lm_head's too when tied). */
static bool grad_is_deferred(const ad_weight_spec *s) {
    return s->ndim == 2 && s->component != AD_COMPONENT_EMBED_TOKENS;
}

static int alloc_grads(ad_train_graph *g) {
    ad_model *m = g->m, *gr = &g->grads;
    const ad_model_config *cfg = &m->cfg;
    *gr = *m;
    gr->weight_memory = NULL;
    gr->encoder = ad_calloc((size_t)(cfg->encoder_layers ? cfg->encoder_layers : 1),
                            sizeof *gr->encoder, "gradient layers");
    gr->decoder = ad_calloc((size_t)(cfg->num_hidden_layers ? cfg->num_hidden_layers : 1),
                            sizeof *gr->decoder, "gradient layers");
    if (!gr->encoder || !gr->decoder) return AD_ERR;
    ad_weight_spec *specs;
    int n;
    AD_TRY(ad_weight_specs(cfg, &specs, &n));
    size_t bytes = 0;
    int n_deferred = 0;
    for (int i = 0; i < n; i++)
        if (is_trainable(&g->train, specs[i].name, specs[i].component)) {
            bytes += (size_t)ad_weight_spec_numel(&specs[i]) * sizeof(float) + AD_ARENA_ALIGN;
            n_deferred += grad_is_deferred(&specs[i]);
        }
    int rc = AD_OK;
    if (bytes) rc = g->be->alloc(g->be, bytes, &g->grad_memory);
    g->grad_bytes = bytes;
    g->deferred =
        ad_calloc((size_t)(n_deferred ? n_deferred : 1), sizeof *g->deferred, "deferred gradients");
    if (!g->deferred) rc = AD_ERR;
    ad_arena arena;
    ad_arena_wrap(&arena, g->grad_memory, bytes, "gradients");
    /* The others first, then the deferred ones: ad_graph_zero_grads fills one leading span. */
    for (int pass = 0; pass < 2; pass++) {
        for (int i = 0; i < n && rc == AD_OK; i++) {
            if (grad_is_deferred(&specs[i]) != (pass == 1)) continue;
            ad_tensor *w = ad_model_weight(m, specs[i].name),
                      *d = ad_model_weight(gr, specs[i].name);
            if (!w || !d) {
                rc = ad_fail("training graph: no slot for weight %s", specs[i].name);
                break;
            }
            *d = *w;
            d->data = NULL; /* frozen: no gradient */
            if (!is_trainable(&g->train, specs[i].name, specs[i].component)) continue;
            const int64_t numel = ad_weight_spec_numel(&specs[i]);
            void *p = ad_arena_alloc(&arena, (size_t)numel * sizeof(float), specs[i].name);
            if (!p) rc = AD_ERR;
            d->data = p;
            d->dtype = AD_F32;
            d->device = g->be->device;
            if (pass == 1) g->deferred[g->n_deferred++] = (ad_deferred_grad){p, numel, false};
        }
        if (pass == 0) g->eager_grad_bytes = ad_arena_mark(&arena);
    }
    if (cfg->tie_word_embeddings) gr->lm_head = gr->embed_tokens;
    free(specs);
    return rc;
}

int ad_graph_plan(const ad_model_config *cfg, const ad_graph_limits *lim, const ad_trainable *train,
                  size_t *activation_bytes, size_t *gradient_bytes) {
    ad_model m;
    memset(&m, 0, sizeof m);
    m.cfg = *cfg;
    ad_train_graph g;
    memset(&g, 0, sizeof g);
    g.m = &m;
    g.lim = *lim;
    g.train = *train;
    g.any_trainable = train->audio_encoder || train->projector || train->decoder ||
                      train->embed_tokens || train->lm_head;
    g.records = g.any_trainable || train->keep_activations;
    g.enc_rec = ad_calloc((size_t)(cfg->encoder_layers + 1), sizeof *g.enc_rec, "records");
    g.dec_rec = ad_calloc((size_t)(cfg->num_hidden_layers + 1), sizeof *g.dec_rec, "records");
    int rc = g.enc_rec && g.dec_rec ? AD_OK : AD_ERR;
    carver plan = {NULL, {0, 0}, AD_DEVICE_CPU};
    if (rc == AD_OK) rc = layout(&g, &plan);
    *activation_bytes = plan.plan.bytes;
    *gradient_bytes = 0;
    ad_weight_spec *specs = NULL;
    int n = 0;
    if (rc == AD_OK) rc = ad_weight_specs(cfg, &specs, &n);
    for (int i = 0; rc == AD_OK && i < n; i++)
        if (g.any_trainable && is_trainable(train, specs[i].name, specs[i].component))
            *gradient_bytes +=
                (size_t)ad_weight_spec_numel(&specs[i]) * sizeof(float) + AD_ARENA_ALIGN;
    free(specs);
    free(g.enc_rec);
    free(g.dec_rec);
    return rc;
}

static int fill_zero(ad_train_graph *g, void *data, int64_t numel, const char *what) {
    ad_tensor t;
    AD_TRY(ad_tensor_init(&t, data, AD_F32, g->be->device, 1, &numel, what));
    return g->be->fill(g->be, &t, 0.0f);
}

int ad_graph_zero_grads(ad_train_graph *g) {
    if (!g->grad_memory) return AD_OK;
    for (int i = 0; i < g->n_deferred; i++)
        g->deferred[i].pending = true;
    const int64_t n = (int64_t)(g->eager_grad_bytes / sizeof(float));
    return n ? fill_zero(g, g->grad_memory, n, "gradients") : AD_OK;
}

int ad_graph_settle_grads(ad_train_graph *g) {
    for (int i = 0; i < g->n_deferred; i++) {
        ad_deferred_grad *d = &g->deferred[i];
        if (!d->pending) continue;
        AD_TRY(fill_zero(g, d->data, d->numel, "deferred gradient"));
        d->pending = false;
    }
    return AD_OK;
}

/* The deferred gradient at `data`, or NULL (deferred[] ascends: the arena hands out addresses
 * in order). */
static ad_deferred_grad *deferred_at(ad_train_graph *g, const void *data) {
    const uintptr_t want = (uintptr_t)data;
    int lo = 0, hi = g->n_deferred - 1;
    while (lo <= hi) {
        const int mid = lo + (hi - lo) / 2;
        const uintptr_t at = (uintptr_t)g->deferred[mid].data;
        if (at == want) return &g->deferred[mid];
        if (at < want)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    return NULL;
}

int ad_graph_init(ad_train_graph *g, ad_model *m, const ad_graph_limits *lim,
                  const ad_trainable *train) {
    memset(g, 0, sizeof *g);
    g->m = m;
    g->be = m->be;
    g->lim = *lim;
    g->train = *train;
    g->any_trainable = train->audio_encoder || train->projector || train->decoder ||
                       train->embed_tokens || train->lm_head;
    g->records = g->any_trainable || train->keep_activations;
    const ad_model_config *cfg = &m->cfg;
    if (lim->max_clips < 1 || lim->max_frames < 3 || lim->max_len < 2 || lim->max_supervised < 1)
        return ad_fail("training graph: limits must allow at least 1 clip, 3 frames, 2 tokens and "
                       "1 supervised row");
    if (lim->max_frames > 2 * cfg->max_source_positions)
        return ad_fail("training graph: %d frames exceed 2 * max_source_positions (%d)",
                       lim->max_frames, 2 * cfg->max_source_positions);
    if (lim->encoder_elsewhere && g->records)
        return ad_fail("training graph: a graph that keeps activations for a backward needs its "
                       "own encoder's (encoder_elsewhere is for forward-only graphs)");
    g->enc_rec = ad_calloc((size_t)(cfg->encoder_layers + 1), sizeof *g->enc_rec, "records");
    g->dec_rec = ad_calloc((size_t)(cfg->num_hidden_layers + 1), sizeof *g->dec_rec, "records");
    const int64_t N = (int64_t)lim->max_clips * lim->max_len;
    g->clip_tokens = ad_calloc((size_t)lim->max_clips, sizeof(int), "graph");
    g->clip_key_len = ad_calloc((size_t)lim->max_clips, sizeof(int), "graph");
    g->row_len = ad_calloc((size_t)lim->max_clips, sizeof(int), "graph");
    g->host_ids = ad_calloc((size_t)N, sizeof(int32_t), "graph");
    g->host_pos = ad_calloc((size_t)N, sizeof(int32_t), "graph");
    g->host_audio_rows = ad_calloc((size_t)N, sizeof(int32_t), "graph");
    g->host_audio_pad = ad_calloc((size_t)N, sizeof(int32_t), "graph");
    g->host_sel = ad_calloc((size_t)lim->max_supervised, sizeof(int32_t), "graph");
    g->host_targets = ad_calloc((size_t)lim->max_supervised, sizeof(int32_t), "graph");
    if (!g->enc_rec || !g->dec_rec || !g->clip_tokens || !g->clip_key_len || !g->row_len ||
        !g->host_ids || !g->host_pos || !g->host_audio_rows || !g->host_audio_pad || !g->host_sel ||
        !g->host_targets)
        goto fail;
    carver plan = {NULL, {0, 0}, g->be->device};
    if (layout(g, &plan) < 0) goto fail;
    if (g->be->alloc(g->be, plan.plan.bytes, &g->memory) < 0) goto fail;
    ad_arena_wrap(&g->arena, g->memory, plan.plan.bytes, "training activations");
    carver real = {&g->arena, {0, 0}, g->be->device};
    if (layout(g, &real) < 0) goto fail;
    /* Shared records: every layer uses record 0's buffers (with recompute, its own input). */
    if (encoder_keep(g) != KEEP_ALL)
        for (int l = 1; l < cfg->encoder_layers; l++) {
            const ad_tensor own = g->enc_rec[l].h_in;
            g->enc_rec[l] = g->enc_rec[0];
            if (encoder_keep(g) == KEEP_INPUTS) g->enc_rec[l].h_in = own;
        }
    if (decoder_keep(g) != KEEP_ALL)
        for (int l = 1; l < cfg->num_hidden_layers; l++) {
            const ad_tensor own = g->dec_rec[l].x_in;
            g->dec_rec[l] = g->dec_rec[0];
            if (decoder_keep(g) == KEEP_INPUTS) g->dec_rec[l].x_in = own;
        }
    if (g->any_trainable && (alloc_grads(g) < 0 || ad_graph_zero_grads(g) < 0)) goto fail;
    return AD_OK;
fail:
    ad_graph_free(g);
    return AD_ERR;
}

void ad_graph_free(ad_train_graph *g) {
    if (g->be) {
        if (g->memory) g->be->release(g->be, g->memory);
        if (g->grad_memory) g->be->release(g->be, g->grad_memory);
    }
    free(g->grads.encoder);
    free(g->grads.decoder);
    free(g->deferred);
    free(g->enc_rec);
    free(g->dec_rec);
    free(g->clip_tokens);
    free(g->clip_key_len);
    free(g->row_len);
    free(g->host_ids);
    free(g->host_pos);
    free(g->host_audio_rows);
    free(g->host_audio_pad);
    free(g->host_sel);
    free(g->host_targets);
    memset(g, 0, sizeof *g);
}

/* Layer l's recorded activations viewed at the last forward's shapes: the forward pass writes
 * them, the backward pass reads them. */
static ad_encoder_record encoder_views(const ad_train_graph *g, int l) {
    const ad_model_config *cfg = &g->m->cfg;
    const ad_encoder_record *r = &g->enc_rec[l];
    const int64_t C = g->n_clips, n1 = g->n1, d = cfg->d_model,
                  A = (int64_t)cfg->encoder_layer[l].num_attention_heads * cfg->encoder_head_dim,
                  F = cfg->encoder_layer[l].ffn_dim;
    return (ad_encoder_record){.h_in = shaped(&r->h_in, 3, C, n1, d),
                               .xn1 = shaped(&r->xn1, 3, C, n1, d),
                               .q = shaped(&r->q, 3, C, n1, A),
                               .k = shaped(&r->k, 3, C, n1, A),
                               .v = shaped(&r->v, 3, C, n1, A),
                               .att = shaped(&r->att, 3, C, n1, A),
                               .h_mid = shaped(&r->h_mid, 3, C, n1, d),
                               .xn2 = shaped(&r->xn2, 3, C, n1, d),
                               .f_pre = shaped(&r->f_pre, 3, C, n1, F),
                               .f_act = shaped(&r->f_act, 3, C, n1, F),
                               .softmax_stats =
                                   shaped(&r->softmax_stats, 3, C, A / cfg->encoder_head_dim, n1)};
}

static ad_decoder_record decoder_views(const ad_train_graph *g, int l) {
    const ad_model_config *cfg = &g->m->cfg;
    const ad_decoder_layer_shape *sh = &cfg->decoder_layer[l];
    const ad_decoder_record *r = &g->dec_rec[l];
    const int64_t R = g->rows, T = g->len, N = R * T, H = cfg->hidden_size, hd = cfg->head_dim,
                  Q = sh->num_attention_heads * hd, KV = sh->num_key_value_heads * hd,
                  F = sh->intermediate_size;
    return (ad_decoder_record){.x_in = shaped(&r->x_in, 2, N, H, 0),
                               .xn1 = shaped(&r->xn1, 2, N, H, 0),
                               .q = shaped(&r->q, 3, R, T, Q),
                               .k = shaped(&r->k, 3, R, T, KV),
                               .v = shaped(&r->v, 3, R, T, KV),
                               .att = shaped(&r->att, 3, R, T, Q),
                               .x_mid = shaped(&r->x_mid, 2, N, H, 0),
                               .xn2 = shaped(&r->xn2, 2, N, H, 0),
                               .gate = shaped(&r->gate, 2, N, F, 0),
                               .up = shaped(&r->up, 2, N, F, 0),
                               .act = shaped(&r->act, 2, N, F, 0),
                               .softmax_stats =
                                   shaped(&r->softmax_stats, 3, R, sh->num_attention_heads, T)};
}

static int upload_i32(ad_backend *be, ad_tensor *dst, const int32_t *host, int64_t n) {
    ad_tensor src, d = shaped(dst, 1, n, 0, 0);
    AD_TRY(ad_tensor_init(&src, (void *)host, AD_I32, AD_DEVICE_CPU, 1, &n, "host indices"));
    AD_TRY(be->upload(be, &d, &src));
    return AD_OK;
}

/* ---- forward ------------------------------------------------------------------------------ */

/* Layer l's attention: bidirectional over each clip's frames (encoder), causal over each
 * row's tokens (decoder). */
/* A stack with a backward passes its record's softmax statistics from the forward to it. */
static ad_tensor *softmax_stats_of(ad_tensor *view) {
    return view->data ? view : NULL;
}

static ad_attention_params encoder_attention(const ad_train_graph *g, int l, ad_encoder_record *a) {
    const ad_model_config *cfg = &g->m->cfg;
    const int heads = cfg->encoder_layer[l].num_attention_heads;
    return (ad_attention_params){.n_heads = heads,
                                 .n_kv_heads = heads,
                                 .head_dim = cfg->encoder_head_dim,
                                 .scale = 1.0f / sqrtf((float)cfg->encoder_head_dim),
                                 .key_len = g->clip_key_len,
                                 .softmax_stats = softmax_stats_of(&a->softmax_stats)};
}

static ad_attention_params decoder_attention(const ad_train_graph *g, int l, ad_decoder_record *a) {
    const ad_model_config *cfg = &g->m->cfg;
    const ad_decoder_layer_shape *sh = &cfg->decoder_layer[l];
    return (ad_attention_params){.n_heads = sh->num_attention_heads,
                                 .n_kv_heads = sh->num_key_value_heads,
                                 .head_dim = cfg->head_dim,
                                 .causal = true,
                                 .scale = 1.0f / sqrtf((float)cfg->head_dim),
                                 .key_len = g->row_len,
                                 .softmax_stats = softmax_stats_of(&a->softmax_stats)};
}

/* Encoder layer l on the stream h (in place), recording its activations; with h NULL
 * (recompute), only the activations its backward reads, rebuilt from the recorded input. */
static int encoder_layer_forward(ad_train_graph *g, int l, ad_tensor *h) {
    ad_backend *be = g->be;
    const ad_encoder_layer *w = &g->m->encoder[l];
    ad_encoder_record a = encoder_views(g, l);
    /* the input is recorded for a backward pass; forward only, the stream itself serves until
     * fc2 overwrites it */
    const bool record = encoder_keep(g) != KEEP_ONE_LAYER;
    if (h && record) AD_TRY(be->copy(be, &a.h_in, h));
    const ad_tensor *in = h && !record ? h : &a.h_in;
    AD_TRY(be->layernorm(be, &a.xn1, in, &w->self_attn_layer_norm_w, &w->self_attn_layer_norm_b,
                         ENCODER_LN_EPS));
    AD_TRY(be->linear(be, &a.q, &a.xn1, &w->q_proj_w, &w->q_proj_b));
    AD_TRY(be->linear(be, &a.k, &a.xn1, &w->k_proj_w, NULL));
    AD_TRY(be->linear(be, &a.v, &a.xn1, &w->v_proj_w, &w->v_proj_b));
    const ad_attention_params ap = encoder_attention(g, l, &a);
    AD_TRY(be->attention(be, &a.att, &a.q, &a.k, &a.v, &ap));
    AD_TRY(be->linear_residual(be, &a.h_mid, &a.att, &w->out_proj_w, &w->out_proj_b, in));
    AD_TRY(be->layernorm(be, &a.xn2, &a.h_mid, &w->final_layer_norm_w, &w->final_layer_norm_b,
                         ENCODER_LN_EPS));
    AD_TRY(be->linear(be, &a.f_pre, &a.xn2, &w->fc1_w, &w->fc1_b));
    AD_TRY(be->gelu(be, &a.f_act, &a.f_pre));
    if (!h) return AD_OK;
    return be->linear_residual(be, h, &a.f_act, &w->fc2_w, &w->fc2_b, &a.h_mid);
}

static int encoder_forward(ad_train_graph *g, const ad_batch *b) {
    ad_model *m = g->m;
    ad_backend *be = g->be;
    const ad_model_config *cfg = &m->cfg;
    const int64_t C = b->n, T = b->max_frames, M = cfg->num_mel_bins, d = cfg->d_model;
    const int64_t H = cfg->hidden_size;
    int n1 = 0;
    for (int c = 0; c < C; c++) {
        if (b->frames[c] < 3 || b->frames[c] > T)
            return ad_fail("clip %d: %d valid frames, expected 3..%lld", c, b->frames[c],
                           (long long)T);
        int conv = (b->frames[c] - 1) / 2 + 1;
        g->clip_key_len[c] = conv;
        g->clip_tokens[c] = ad_loader_audio_tokens(b->frames[c]);
        if (conv > n1) n1 = conv;
    }
    /* As in ad_model_encode: only frames that influence the valid outputs are computed. */
    const int L_in = T < 2 * n1 + 1 ? (int)T : 2 * n1 + 1;
    const int n2_in = L_in < 2 * n1 ? L_in : 2 * n1;
    const int tok = (n1 - 2) / 2 + 1;
    g->n_clips = (int)C, g->n1 = n1, g->L_in = L_in, g->n2_in = n2_in, g->tok_max = tok;
    g->encoded_batch = NULL;
    if (g->lim.encoder_elsewhere && !g->encoder_source)
        return ad_fail("internal: a graph made without encoder activations has no graph to take "
                       "the encoder output from (ad_graph_share_encoder)");
    if (g->encoder_source) {
        ad_train_graph *src = g->encoder_source;
        if (src->encoded_batch != b || src->n_clips != (int)C || src->n1 != n1 ||
            src->tok_max != tok)
            return ad_fail("internal: the shared audio encoder holds no output for this batch "
                           "(the graph computing it must run its forward first, once per "
                           "sharing forward)");
        src->encoded_batch = NULL;
        ad_tensor enc = shaped(&src->enc, 3, C, tok, d), audio = shaped(&g->audio, 3, C, tok, H);
        return be->linear(be, &audio, &enc, &m->projector_w, &m->projector_b);
    }
    ad_tensor host, feat = shaped(&g->feat, 3, C, M, T), featT = shaped(&g->featT, 3, C, T, M);
    AD_TRY(ad_tensor_init(&host, b->features, AD_F32, AD_DEVICE_CPU, 3, (int64_t[]){C, M, T},
                          "features"));
    AD_TRY(be->upload(be, &feat, &host));
    AD_TRY(be->transpose(be, &featT, &feat));
    ad_tensor x0 = shaped(&g->x0, 3, C, L_in, M), part;
    AD_TRY(ad_tensor_slice(&featT, 1, 0, L_in, &part));
    AD_TRY(be->copy(be, &x0, &part));
    ad_tensor a1_pre = shaped(&g->a1_pre, 3, C, L_in, d), a1c = shaped(&g->a1c, 3, C, n2_in, d);
    AD_TRY(be->conv1d(be, &a1_pre, &x0, &m->conv1_w, &m->conv1_b, 1, 1));
    /* gelu(conv1) for the rows conv2 reads, into its own buffer (a1_pre is kept for backward). */
    AD_TRY(ad_tensor_slice(&a1_pre, 1, 0, n2_in, &part));
    AD_TRY(be->copy(be, &a1c, &part));
    AD_TRY(be->gelu(be, &a1c, &a1c));
    ad_tensor a2_pre = shaped(&g->a2_pre, 3, C, n1, d), h = shaped(&g->h, 3, C, n1, d), pos;
    AD_TRY(be->conv1d(be, &a2_pre, &a1c, &m->conv2_w, &m->conv2_b, 2, 1));
    AD_TRY(be->gelu(be, &h, &a2_pre));
    AD_TRY(ad_tensor_slice(&m->embed_positions, 0, 0, n1, &pos));
    AD_TRY(be->add(be, &h, &h, &pos));
    for (int l = 0; l < cfg->encoder_layers; l++)
        AD_TRY(encoder_layer_forward(g, l, &h));
    ad_tensor pooled = shaped(&g->pooled, 3, C, tok, d), enc = shaped(&g->enc, 3, C, tok, d);
    ad_tensor audio = shaped(&g->audio, 3, C, tok, H);
    AD_TRY(be->avg_pool1d(be, &pooled, &h, 2, 2));
    AD_TRY(be->layernorm(be, &enc, &pooled, &m->layer_norm_w, &m->layer_norm_b, ENCODER_LN_EPS));
    AD_TRY(be->linear(be, &audio, &enc, &m->projector_w, &m->projector_b));
    g->encoded_batch = b;
    return AD_OK;
}

int ad_graph_share_encoder(ad_train_graph *g, ad_train_graph *source) {
    if (g == source || source->encoder_source)
        return ad_fail("internal: a graph can share only an encoder it does not share itself");
    if (source->train.audio_encoder)
        return ad_fail("internal: a training audio encoder cannot be shared (its output changes "
                       "with every step)");
    if (g->records)
        return ad_fail("internal: only a forward-only graph can take another's encoder output");
    const ad_graph_limits *a = &g->lim, *s = &source->lim;
    if (a->max_clips != s->max_clips || a->max_frames != s->max_frames ||
        g->m->cfg.d_model != source->m->cfg.d_model)
        return ad_fail("internal: graphs sharing an audio encoder need the same clip limits");
    if (!g->lim.encoder_elsewhere) { /* made again without encoder activations of its own */
        ad_model *m = g->m;
        ad_graph_limits lim = g->lim;
        const ad_trainable train = g->train;
        lim.encoder_elsewhere = true;
        ad_graph_free(g);
        AD_TRY(ad_graph_init(g, m, &lim, &train));
    }
    g->encoder_source = source;
    return AD_OK;
}

/* Decoder layer l on the stream x (in place), recording its activations; with x NULL
 * (recompute), only the activations its backward reads, rebuilt from the recorded input. */
static int decoder_layer_forward(ad_train_graph *g, int l, ad_tensor *x) {
    ad_backend *be = g->be;
    const ad_model_config *cfg = &g->m->cfg;
    const ad_decoder_layer *w = &g->m->decoder[l];
    const ad_decoder_layer_shape *sh = &cfg->decoder_layer[l];
    const int64_t N = (int64_t)g->rows * g->len, hd = cfg->head_dim;
    const int64_t Q = sh->num_attention_heads * hd, KV = sh->num_key_value_heads * hd;
    const float eps = (float)cfg->rms_norm_eps, theta = (float)cfg->rope_theta;
    ad_decoder_record a = decoder_views(g, l);
    ad_tensor v2 = shaped(&a.v, 2, N, KV, 0), att2 = shaped(&a.att, 2, N, Q, 0);
    ad_tensor pos = shaped(&g->pos, 2, g->rows, g->len, 0);
    /* the input is recorded for a backward pass; forward only, the stream itself serves until
     * down_proj overwrites it */
    const bool record = decoder_keep(g) != KEEP_ONE_LAYER;
    if (x && record) AD_TRY(be->copy(be, &a.x_in, x));
    const ad_tensor *in = x && !record ? x : &a.x_in;
    AD_TRY(be->rmsnorm(be, &a.xn1, in, &w->input_layernorm_w, eps));
    /* The projections stay f32 until rope has rotated them into the records, so bf16 records
     * are rounded once, as attention would have rounded them. Their f32 home is the attention
     * output, not yet written (KV <= Q: the heads are a multiple of the KV heads). */
    ad_tensor k_f32 = shaped(&a.att, 3, g->rows, g->len, KV), k_f32_2 = shaped(&a.att, 2, N, KV, 0);
    AD_TRY(be->linear(be, &att2, &a.xn1, &w->q_proj_w, &w->q_proj_b));
    AD_TRY(be->rope(be, &a.q, &a.att, &pos, sh->num_attention_heads, (int)hd, theta));
    AD_TRY(be->linear(be, &k_f32_2, &a.xn1, &w->k_proj_w, &w->k_proj_b));
    AD_TRY(be->rope(be, &a.k, &k_f32, &pos, sh->num_key_value_heads, (int)hd, theta));
    AD_TRY(be->linear(be, &v2, &a.xn1, &w->v_proj_w, &w->v_proj_b));
    const ad_attention_params ap = decoder_attention(g, l, &a);
    AD_TRY(be->attention(be, &a.att, &a.q, &a.k, &a.v, &ap));
    AD_TRY(be->linear_residual(be, &a.x_mid, &att2, &w->o_proj_w, NULL, in));
    AD_TRY(be->rmsnorm(be, &a.xn2, &a.x_mid, &w->post_attention_layernorm_w, eps));
    AD_TRY(be->linear(be, &a.gate, &a.xn2, &w->gate_proj_w, NULL));
    AD_TRY(be->linear(be, &a.up, &a.xn2, &w->up_proj_w, NULL));
    AD_TRY(be->silu_mul(be, &a.act, &a.gate, &a.up));
    if (!x) return AD_OK;
    return be->linear_residual(be, x, &a.act, &w->down_proj_w, NULL, &a.x_mid);
}

static int decoder_forward(ad_train_graph *g, const ad_batch *b) {
    ad_model *m = g->m;
    ad_backend *be = g->be;
    const ad_model_config *cfg = &m->cfg;
    const int R = b->n, T = b->max_len;
    const int64_t N = (int64_t)R * T, H = cfg->hidden_size, V = cfg->vocab_size;
    g->rows = R, g->len = T;
    int n_audio = 0, n_sel = 0;
    for (int r = 0; r < R; r++) {
        g->row_len[r] = b->len[r];
        int audio_in_row = 0;
        for (int t = 0; t < T; t++) {
            const int64_t i = (int64_t)r * T + t;
            const int32_t id = t < b->len[r] ? b->ids[i] : 0;
            if (id < 0 || id >= V)
                return ad_fail("token id %d at row %d position %d is outside the vocabulary (%lld)",
                               id, r, t, (long long)V);
            g->host_ids[i] = id;
            g->host_pos[i] = t;
            if (t < b->len[r] && id == cfg->audio_token_index)
                g->host_audio_rows[n_audio++] = (int32_t)i, audio_in_row++;
            if (b->labels[i] != AD_IGNORE_LABEL) {
                if (n_sel == g->lim.max_supervised)
                    return ad_fail("batch has more than %d supervised tokens (max_supervised)",
                                   g->lim.max_supervised);
                if (b->labels[i] < 0 || b->labels[i] >= V)
                    return ad_fail("label %d at row %d position %d is outside the vocabulary",
                                   b->labels[i], r, t);
                g->host_sel[n_sel] = (int32_t)i;
                g->host_targets[n_sel++] = b->labels[i];
            }
        }
        if (audio_in_row != g->clip_tokens[r])
            return ad_fail("row %d has %d <|AUDIO|> tokens but its clip gives %d", r, audio_in_row,
                           g->clip_tokens[r]);
    }
    g->n_audio = n_audio, g->n_text_rows = n_sel;
    if (n_sel == 0) return ad_fail("the micro-batch has no supervised tokens");
    if (b->ctc_max > 0) {
        /* CTC reads lm_head at every audio position, after the text rows; target -1 keeps them
         * out of the cross-entropy and KL. */
        if (n_sel + n_audio > g->lim.max_supervised)
            return ad_fail("batch has more than %d supervised and audio rows (max_supervised)",
                           g->lim.max_supervised);
        for (int i = 0; i < n_audio; i++)
            g->host_sel[n_sel + i] = g->host_audio_rows[i], g->host_targets[n_sel + i] = -1;
        n_sel += n_audio;
    }
    g->n_supervised = n_sel;
    ad_tensor ids = shaped(&g->ids, 1, N, 0, 0);
    AD_TRY(upload_i32(be, &g->ids, g->host_ids, N));
    AD_TRY(upload_i32(be, &g->pos, g->host_pos, N));
    ad_tensor x = shaped(&g->x, 2, N, H, 0);
    AD_TRY(be->embedding(be, &x, &m->embed_tokens, &ids));
    if (n_audio) {
        /* The projector's rows [n_clips, tok_max] go in one scatter (each call checks its
         * indices with a device sync): clip c's padding rows, past its clip_tokens, get -1. */
        const int64_t n_pad = (int64_t)g->n_clips * g->tok_max;
        if (n_pad > N)
            return ad_fail("internal: %lld padded audio rows exceed the graph's %lld",
                           (long long)n_pad, (long long)N);
        int64_t at = 0;
        for (int c = 0; c < g->n_clips; c++) {
            for (int t = 0; t < g->tok_max; t++)
                g->host_audio_pad[(int64_t)c * g->tok_max + t] =
                    t < g->clip_tokens[c] ? g->host_audio_rows[at + t] : -1;
            at += g->clip_tokens[c];
        }
        AD_TRY(upload_i32(be, &g->audio_rows, g->host_audio_pad, n_pad));
        ad_tensor src = shaped(&g->audio, 2, n_pad, H, 0),
                  rows = shaped(&g->audio_rows, 1, n_pad, 0, 0);
        AD_TRY(be->scatter_rows(be, &x, &src, &rows));
    }
    const float eps = (float)cfg->rms_norm_eps;
    for (int l = 0; l < cfg->num_hidden_layers; l++)
        AD_TRY(decoder_layer_forward(g, l, &x));
    ad_tensor x_final = shaped(&g->x_final, 2, N, H, 0), hidden = shaped(&g->hidden, 2, N, H, 0);
    AD_TRY(be->copy(be, &x_final, &x));
    AD_TRY(be->rmsnorm(be, &hidden, &x_final, &m->norm_w, eps));
    ad_tensor sel_rows = shaped(&g->sel_rows, 1, n_sel, 0, 0),
              sel = shaped(&g->sel, 2, n_sel, H, 0);
    ad_tensor logits = shaped(&g->logits, 2, n_sel, V, 0);
    AD_TRY(upload_i32(be, &g->sel_rows, g->host_sel, n_sel));
    AD_TRY(upload_i32(be, &g->targets, g->host_targets, n_sel));
    AD_TRY(be->embedding(be, &sel, &hidden, &sel_rows)); /* a row gather */
    return be->linear(be, &logits, &sel, &m->lm_head, NULL);
}

int ad_graph_forward(ad_train_graph *g, const ad_batch *b) {
    if (b->n < 1 || b->n > g->lim.max_clips || b->max_frames > g->lim.max_frames ||
        b->max_len > g->lim.max_len)
        return ad_fail(
            "micro-batch of %d examples, %d frames, %d tokens exceeds the graph's limits "
            "(%d, %d, %d)",
            b->n, b->max_frames, b->max_len, g->lim.max_clips, g->lim.max_frames, g->lim.max_len);
    if (b->n_mels != g->m->cfg.num_mel_bins)
        return ad_fail("batch has %d mel bins, the model expects %d", b->n_mels,
                       g->m->cfg.num_mel_bins);
    AD_TRY(encoder_forward(g, b));
    return decoder_forward(g, b);
}

/* ---- backward ----------------------------------------------------------------------------- */

static ad_tensor *grad_or_null(ad_tensor *t) {
    return t->data ? t : NULL;
}

/* linear_backward into the graph's gradients (dw, db: gradient slots, NULL data when frozen):
 * a deferred dw that is still zero by ad_graph_zero_grads is overwritten, not accumulated. */
static int linear_grads(ad_train_graph *g, ad_tensor *dx, ad_tensor *dw, ad_tensor *db,
                        const ad_tensor *dy, const ad_tensor *x, const ad_tensor *w) {
    ad_backend *be = g->be;
    dw = dw ? grad_or_null(dw) : NULL;
    ad_deferred_grad *d = dw ? deferred_at(g, dw->data) : NULL;
    const int rc =
        be->linear_backward(be, dx, dw, db ? grad_or_null(db) : NULL, dy, x, w, d && d->pending);
    if (rc == AD_OK && d) d->pending = false;
    return rc;
}

/* dx_sum (+)= the gradient of a linear's input (dy w); its weight and bias gradients accumulate.
 * After the first of the linears that share an input, dx_sum accumulates in the GEMM itself
 * (matmul with beta 1): no scratch written and no add pass over it. */
static int linear_back_add(ad_train_graph *g, ad_tensor *dx_sum, bool first, ad_tensor *dw,
                           ad_tensor *db, const ad_tensor *dy, const ad_tensor *x,
                           const ad_tensor *w) {
    if (first) return linear_grads(g, dx_sum, dw, db, dy, x, w);
    AD_TRY(linear_grads(g, NULL, dw, db, dy, x, w));
    ad_backend *be = g->be;
    const int64_t N = w->shape[0], K = w->shape[1], M = ad_tensor_numel(dy) / N;
    ad_tensor dy2, dx2;
    AD_TRY(ad_tensor_reshape(dy, 2, (int64_t[]){M, N}, &dy2));
    AD_TRY(ad_tensor_reshape(dx_sum, 2, (int64_t[]){M, K}, &dx2));
    return be->matmul(be, &dx2, &dy2, false, w, false, 1.0f, 1.0f);
}

static int encoder_backward(ad_train_graph *g) {
    ad_model *m = g->m, *gr = &g->grads;
    ad_backend *be = g->be;
    const ad_model_config *cfg = &m->cfg;
    const int64_t C = g->n_clips, n1 = g->n1, tok = g->tok_max, d = cfg->d_model,
                  H = cfg->hidden_size;
    ad_tensor daudio = shaped(&g->d_audio, 3, C, tok, H), denc = shaped(&g->d_pooled, 3, C, tok, d);
    ad_tensor enc = shaped(&g->enc, 3, C, tok, d), pooled = shaped(&g->pooled, 3, C, tok, d);
    AD_TRY(
        linear_grads(g, &denc, &gr->projector_w, &gr->projector_b, &daudio, &enc, &m->projector_w));
    if (!g->train.audio_encoder) return AD_OK;
    ad_tensor dpooled = shaped(&g->d_enc_c, 3, C, tok, d);
    AD_TRY(be->layernorm_backward(be, &dpooled, grad_or_null(&gr->layer_norm_w),
                                  grad_or_null(&gr->layer_norm_b), &denc, &pooled, &m->layer_norm_w,
                                  ENCODER_LN_EPS, false));
    ad_tensor dh = shaped(&g->d_enc_a, 3, C, n1, d);
    AD_TRY(be->avg_pool1d_backward(be, &dh, &dpooled, 2, 2));
    for (int l = cfg->encoder_layers - 1; l >= 0; l--) {
        const ad_encoder_layer *w = &m->encoder[l];
        ad_encoder_layer *dw = &gr->encoder[l];
        /* the shared record holds the last layer's activations from the forward pass */
        if (encoder_keep(g) == KEEP_INPUTS && l < cfg->encoder_layers - 1)
            AD_TRY(encoder_layer_forward(g, l, NULL));
        ad_encoder_record a = encoder_views(g, l);
        const int heads = cfg->encoder_layer[l].num_attention_heads;
        const int64_t A = (int64_t)heads * cfg->encoder_head_dim, F = cfg->encoder_layer[l].ffn_dim;
        ad_tensor df = shaped(&g->d_enc_ffn, 3, C, n1, F),
                  df2 = shaped(&g->d_enc_ffn2, 3, C, n1, F);
        ad_tensor dxn = shaped(&g->d_enc_c, 3, C, n1, d);
        /* MLP block: h = h_mid + fc2(gelu(fc1(ln2(h_mid)))) */
        AD_TRY(linear_grads(g, &df, &dw->fc2_w, &dw->fc2_b, &dh, &a.f_act, &w->fc2_w));
        AD_TRY(be->gelu_backward(be, &df2, &df, &a.f_pre));
        AD_TRY(linear_grads(g, &dxn, &dw->fc1_w, &dw->fc1_b, &df2, &a.xn2, &w->fc1_w));
        /* h = h_mid + fc2(...): the residual's gradient adds in the norm's backward */
        AD_TRY(be->layernorm_backward(be, &dh, grad_or_null(&dw->final_layer_norm_w),
                                      grad_or_null(&dw->final_layer_norm_b), &dxn, &a.h_mid,
                                      &w->final_layer_norm_w, ENCODER_LN_EPS, true));
        /* Attention block: h_mid = h_in + out_proj(attention(q, k, v)) */
        ad_tensor datt = shaped(&g->d_enc_att, 3, C, n1, A), dq = shaped(&g->d_enc_q, 3, C, n1, A);
        ad_tensor dk = shaped(&g->d_enc_k, 3, C, n1, A), dv = shaped(&g->d_enc_v, 3, C, n1, A);
        AD_TRY(
            linear_grads(g, &datt, &dw->out_proj_w, &dw->out_proj_b, &dh, &a.att, &w->out_proj_w));
        const ad_attention_params ap = encoder_attention(g, l, &a);
        AD_TRY(be->attention_backward(be, &dq, &dk, &dv, &datt, &a.att, &a.q, &a.k, &a.v, &ap));
        AD_TRY(linear_back_add(g, &dxn, true, &dw->q_proj_w, &dw->q_proj_b, &dq, &a.xn1,
                               &w->q_proj_w));
        AD_TRY(linear_back_add(g, &dxn, false, &dw->k_proj_w, NULL, &dk, &a.xn1, &w->k_proj_w));
        AD_TRY(linear_back_add(g, &dxn, false, &dw->v_proj_w, &dw->v_proj_b, &dv, &a.xn1,
                               &w->v_proj_w));
        AD_TRY(be->layernorm_backward(be, &dh, grad_or_null(&dw->self_attn_layer_norm_w),
                                      grad_or_null(&dw->self_attn_layer_norm_b), &dxn, &a.h_in,
                                      &w->self_attn_layer_norm_w, ENCODER_LN_EPS, true));
    }
    /* Positions are frozen; through gelu(conv2) and conv2, then gelu(conv1) and conv1. */
    ad_tensor a2_pre = shaped(&g->a2_pre, 3, C, n1, d), da2 = shaped(&g->d_enc_b, 3, C, n1, d);
    AD_TRY(be->gelu_backward(be, &da2, &dh, &a2_pre));
    ad_tensor a1c = shaped(&g->a1c, 3, C, g->n2_in, d),
              da1c = shaped(&g->d_conv2, 3, C, g->n2_in, d);
    AD_TRY(be->conv1d_backward(be, &da1c, grad_or_null(&gr->conv2_w), grad_or_null(&gr->conv2_b),
                               &da2, &a1c, &m->conv2_w, 2, 1));
    /* Rows of conv1's output past n2_in were not read by conv2: their gradient is zero. */
    ad_tensor da1 = shaped(&g->d_conv1, 3, C, g->L_in, d),
              a1_pre = shaped(&g->a1_pre, 3, C, g->L_in, d), part, pre_part;
    AD_TRY(be->fill(be, &da1, 0.0f));
    AD_TRY(ad_tensor_slice(&da1, 1, 0, g->n2_in, &part));
    AD_TRY(ad_tensor_slice(&a1_pre, 1, 0, g->n2_in, &pre_part));
    /* gelu' needs contiguous operands: a1c (no longer needed) takes the pre-activation rows,
     * and da1c is turned into the pre-activation gradient in place. */
    ad_tensor a1_pre_c = shaped(&g->a1c, 3, C, g->n2_in, d);
    AD_TRY(be->copy(be, &a1_pre_c, &pre_part));
    AD_TRY(be->gelu_backward(be, &da1c, &da1c, &a1_pre_c));
    AD_TRY(be->copy(be, &part, &da1c));
    ad_tensor x0 = shaped(&g->x0, 3, C, g->L_in, cfg->num_mel_bins);
    return be->conv1d_backward(be, NULL, grad_or_null(&gr->conv1_w), grad_or_null(&gr->conv1_b),
                               &da1, &x0, &m->conv1_w, 1, 1);
}

static int backward_pass(ad_train_graph *g) {
    if (!g->any_trainable) return ad_fail("training graph: nothing is trainable");
    ad_model *m = g->m, *gr = &g->grads;
    ad_backend *be = g->be;
    const ad_model_config *cfg = &m->cfg;
    const int R = g->rows, T = g->len, S = g->n_supervised;
    const int64_t N = (int64_t)R * T, H = cfg->hidden_size, hd = cfg->head_dim, V = cfg->vocab_size;
    const float eps = (float)cfg->rms_norm_eps, theta = (float)cfg->rope_theta;
    ad_tensor dlogits = shaped(&g->logits, 2, S, V, 0), sel = shaped(&g->sel, 2, S, H, 0);
    ad_tensor dsel = shaped(&g->d_sel, 2, S, H, 0), sel_rows = shaped(&g->sel_rows, 1, S, 0, 0);
    AD_TRY(linear_grads(g, &dsel, &gr->lm_head, NULL, &dlogits, &sel, &m->lm_head));
    const bool need_stream =
        g->train.decoder || g->train.embed_tokens || g->train.projector || g->train.audio_encoder;
    if (!need_stream) return AD_OK;
    ad_tensor dhidden = shaped(&g->d_hidden, 2, N, H, 0), dx = shaped(&g->d_a, 2, N, H, 0);
    ad_tensor dxn = shaped(&g->d_c, 2, N, H, 0);
    AD_TRY(be->fill(be, &dhidden, 0.0f));
    AD_TRY(be->scatter_rows(be, &dhidden, &dsel, &sel_rows));
    ad_tensor x_final = shaped(&g->x_final, 2, N, H, 0), pos = shaped(&g->pos, 2, R, T, 0);
    AD_TRY(be->rmsnorm_backward(be, &dx, grad_or_null(&gr->norm_w), &dhidden, &x_final, &m->norm_w,
                                eps, false));
    for (int l = cfg->num_hidden_layers - 1; l >= 0; l--) {
        const ad_decoder_layer *w = &m->decoder[l];
        ad_decoder_layer *dw = &gr->decoder[l];
        const ad_decoder_layer_shape *sh = &cfg->decoder_layer[l];
        /* the shared record holds the last layer's activations from the forward pass */
        if (decoder_keep(g) == KEEP_INPUTS && l < cfg->num_hidden_layers - 1)
            AD_TRY(decoder_layer_forward(g, l, NULL));
        ad_decoder_record a = decoder_views(g, l);
        const int64_t Q = sh->num_attention_heads * hd, KV = sh->num_key_value_heads * hd,
                      F = sh->intermediate_size;
        ad_tensor dact = shaped(&g->d_ffn, 2, N, F, 0), dup = shaped(&g->d_ffn2, 2, N, F, 0);
        /* MLP block: x = x_mid + down(silu(gate(xn2)) * up(xn2)), xn2 = rms(x_mid) */
        AD_TRY(linear_grads(g, &dact, &dw->down_proj_w, NULL, &dx, &a.act, &w->down_proj_w));
        AD_TRY(
            be->silu_mul_backward(be, &dact, &dup, &dact, &a.gate, &a.up)); /* dact becomes dgate */
        AD_TRY(
            linear_back_add(g, &dxn, true, &dw->gate_proj_w, NULL, &dact, &a.xn2, &w->gate_proj_w));
        AD_TRY(linear_back_add(g, &dxn, false, &dw->up_proj_w, NULL, &dup, &a.xn2, &w->up_proj_w));
        /* x = x_mid + down(...): the residual's gradient adds in the norm's backward */
        AD_TRY(be->rmsnorm_backward(be, &dx, grad_or_null(&dw->post_attention_layernorm_w), &dxn,
                                    &a.x_mid, &w->post_attention_layernorm_w, eps, true));
        /* Attention block: x_mid = x_in + o_proj(attention(rope(q), rope(k), v)) */
        ad_tensor datt = shaped(&g->d_att, 3, R, T, Q), datt2 = shaped(&datt, 2, N, Q, 0);
        ad_tensor dq = shaped(&g->d_q, 3, R, T, Q), dk = shaped(&g->d_k, 3, R, T, KV),
                  dv = shaped(&g->d_v, 3, R, T, KV);
        ad_tensor att2 = shaped(&a.att, 2, N, Q, 0);
        AD_TRY(linear_grads(g, &datt2, &dw->o_proj_w, NULL, &dx, &att2, &w->o_proj_w));
        const ad_attention_params ap = decoder_attention(g, l, &a);
        AD_TRY(be->attention_backward(be, &dq, &dk, &dv, &datt, &a.att, &a.q, &a.k, &a.v, &ap));
        AD_TRY(be->rope_backward(be, &dq, &pos, sh->num_attention_heads, (int)hd, theta));
        AD_TRY(be->rope_backward(be, &dk, &pos, sh->num_key_value_heads, (int)hd, theta));
        ad_tensor dq2 = shaped(&dq, 2, N, Q, 0), dk2 = shaped(&dk, 2, N, KV, 0),
                  dv2 = shaped(&dv, 2, N, KV, 0);
        AD_TRY(linear_back_add(g, &dxn, true, &dw->q_proj_w, &dw->q_proj_b, &dq2, &a.xn1,
                               &w->q_proj_w));
        AD_TRY(linear_back_add(g, &dxn, false, &dw->k_proj_w, &dw->k_proj_b, &dk2, &a.xn1,
                               &w->k_proj_w));
        AD_TRY(linear_back_add(g, &dxn, false, &dw->v_proj_w, &dw->v_proj_b, &dv2, &a.xn1,
                               &w->v_proj_w));
        AD_TRY(be->rmsnorm_backward(be, &dx, grad_or_null(&dw->input_layernorm_w), &dxn, &a.x_in,
                                    &w->input_layernorm_w, eps, true));
    }
    /* dx is now the gradient of the input embeddings (audio rows included). */
    if (g->n_audio && (g->train.projector || g->train.audio_encoder)) {
        /* the forward's padded rows: the padding rows' gradient is 0 */
        const int64_t n_pad = (int64_t)g->n_clips * g->tok_max;
        ad_tensor rows = shaped(&g->audio_rows, 1, n_pad, 0, 0),
                  daudio = shaped(&g->d_audio, 2, n_pad, H, 0);
        AD_TRY(be->gather_rows(be, &daudio, &dx, &rows));
        AD_TRY(encoder_backward(g));
    }
    if (g->train.embed_tokens) {
        /* Audio rows replaced their placeholder's embedding: no gradient flows to it. */
        for (int i = 0; i < g->n_audio; i++)
            g->host_ids[g->host_audio_rows[i]] = -1;
        ad_tensor ids = shaped(&g->ids, 1, N, 0, 0);
        AD_TRY(upload_i32(be, &g->ids, g->host_ids, N));
        AD_TRY(be->embedding_backward(be, &gr->embed_tokens, &dx, &ids));
    }
    return AD_OK;
}

int ad_graph_backward(ad_train_graph *g) {
    AD_TRY(backward_pass(g));
    /* The deferred gradients no GEMM wrote (the encoder's, for a micro-batch without audio). */
    return ad_graph_settle_grads(g);
}
