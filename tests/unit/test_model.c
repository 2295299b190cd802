/* Model parity against transformers: tiny random Qwen2-Audio models (tests/fixtures/tiny_*,
 * made by make_fixtures.py) run through the CPU backend; the audio encoder output, projector
 * output, final hidden states and logits must match the reference within fp32 tolerances
 * (max abs <= 1e-4, relative L2 <= 1e-5), prompts must tokenize to the processor's ids, and bad
 * checkpoints must be refused with a message naming the problem. */
#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "io/file.h"
#include "io/hf_config.h"
#include "io/safetensors.h"
#include "model/model.h"
#include "model/prompt.h"
#include "model/weights.h"
#include "test.h"

#define MAX_ABS    1e-4
#define MAX_REL_L2 1e-5

static ad_backend *be;

typedef struct {
    float *data;
    int64_t shape[4];
    int ndim;
} ref_tensor;

static ref_tensor load_ref(ad_safetensors *st, const char *name) {
    ref_tensor r = {0};
    const ad_st_entry *e = ad_safetensors_find(st, name);
    if (!e) {
        fprintf(stderr, "reference tensor %s missing\n", name);
        exit(1);
    }
    ad_tensor t;
    if (ad_safetensors_view(st, e, &t) < 0) exit(1);
    r.ndim = t.ndim;
    memcpy(r.shape, t.shape, sizeof r.shape);
    r.data = malloc(sizeof(float) * (size_t)ad_tensor_numel(&t) + 1);
    if (!r.data || ad_tensor_to_f32(&t, r.data) < 0) exit(1);
    return r;
}

typedef struct {
    double max_abs, sq_diff, sq_ref;
} diff_stats;

static void diff_add(diff_stats *d, float got, float want) {
    double e = (double)got - (double)want;
    if (fabs(e) > d->max_abs || e != e) d->max_abs = e != e ? 1e30 : fabs(e);
    d->sq_diff += e * e;
    d->sq_ref += (double)want * want;
}

static void diff_check(const char *what, const diff_stats *d) {
    double rel = sqrt(d->sq_diff / (d->sq_ref > 0 ? d->sq_ref : 1));
    printf("  %-28s max abs %.3g, rel L2 %.3g\n", what, d->max_abs, rel);
    CHECK_MSG(d->max_abs <= MAX_ABS, "%s: max abs %.3g > %g", what, d->max_abs, MAX_ABS);
    CHECK_MSG(rel <= MAX_REL_L2, "%s: rel L2 %.3g > %g", what, rel, MAX_REL_L2);
}

static float *download(const ad_tensor *dev_view) {
    float *h = malloc(sizeof(float) * (size_t)ad_tensor_numel(dev_view));
    ad_tensor host;
    if (!h ||
        ad_tensor_init(&host, h, AD_F32, AD_DEVICE_CPU, dev_view->ndim, dev_view->shape, "host") <
            0 ||
        be->download(be, &host, dev_view) < 0) {
        fprintf(stderr, "download failed: %s\n", ad_error());
        exit(1);
    }
    return h;
}

static ad_tensor prefix_view(const ad_tensor *t, int ndim, const int64_t *shape) {
    ad_tensor v;
    ad_tensor_init(&v, t->data, t->dtype, t->device, ndim, shape, "view");
    return v;
}

/* Encoder + projector + decoder of the 2-clip batch against the reference. */
static void check_forward(const char *name) {
    char dir[512], ref_path[600];
    snprintf(dir, sizeof dir, "%s/%s", AUDISTILL_FIXTURES, name);
    snprintf(ref_path, sizeof ref_path, "%s/reference.safetensors", dir);
    printf("%s\n", name);
    ad_model m;
    CHECK_OK(ad_model_load(&m, be, dir));
    ad_safetensors rs;
    CHECK_OK(ad_safetensors_open(&rs, ref_path));
    ref_tensor feat = load_ref(&rs, "features"), flen = load_ref(&rs, "feature_lengths"),
               ntok = load_ref(&rs, "audio_tokens"), enc = load_ref(&rs, "encoder_out"),
               aud = load_ref(&rs, "audio_features"), ids = load_ref(&rs, "input_ids"),
               mask = load_ref(&rs, "attention_mask"), hid = load_ref(&rs, "hidden"),
               logits = load_ref(&rs, "logits");
    const int C = (int)feat.shape[0], T = (int)ids.shape[1];
    const int d = m.cfg.d_model, H = m.cfg.hidden_size, V = m.cfg.vocab_size;

    ad_model_limits lim = {.max_clips = C,
                           .max_frames = (int)feat.shape[2],
                           .max_rows = C,
                           .max_tokens = T,
                           .max_step_tokens = T,
                           .max_logit_rows = C * T};
    ad_model_state st;
    CHECK_OK(ad_model_state_init(&st, &m, &lim));
    ad_tensor features;
    CHECK_OK(ad_tensor_init(&features, feat.data, AD_F32, AD_DEVICE_CPU, 3, feat.shape, "feat"));
    int frames[8];
    for (int c = 0; c < C; c++)
        frames[c] = (int)flen.data[c];
    CHECK_OK(ad_model_encode(&st, &features, frames));
    const int tok = st.audio_tokens_max;
    const int64_t rtok = enc.shape[1]; /* the reference keeps all 2*max_source_positions */
    CHECK(tok <= rtok);
    ad_tensor ev = prefix_view(&st.encoder_out, 3, (int64_t[]){C, tok, d});
    ad_tensor av = prefix_view(&st.audio, 3, (int64_t[]){C, tok, H});
    float *eg = download(&ev), *ag = download(&av);
    diff_stats de = {0}, da = {0};
    for (int c = 0; c < C; c++) {
        CHECK(st.audio_tokens[c] == (int)ntok.data[c]);
        for (int t = 0; t < st.audio_tokens[c]; t++) {
            for (int j = 0; j < d; j++)
                diff_add(&de, eg[((size_t)c * tok + t) * d + j],
                         enc.data[((size_t)c * rtok + t) * d + j]);
            for (int j = 0; j < H; j++)
                diff_add(&da, ag[((size_t)c * tok + t) * H + j],
                         aud.data[((size_t)c * rtok + t) * H + j]);
        }
    }
    diff_check("encoder output", &de);
    diff_check("projector output", &da);

    /* The reference batch is left padded (as generate() wants); ours is right padded with
     * per-row lengths. Same positions per token, so every valid row must agree. */
    int32_t *rows_ids = calloc((size_t)C * T, sizeof *rows_ids);
    int len[8], *logit_rows = calloc((size_t)C * T, sizeof *logit_rows), n_rows = 0;
    for (int r = 0; r < C; r++) {
        len[r] = 0;
        for (int t = 0; t < T; t++)
            if (mask.data[(size_t)r * T + t] != 0)
                rows_ids[(size_t)r * T + len[r]++] = (int32_t)ids.data[(size_t)r * T + t];
        for (int t = 0; t < len[r]; t++)
            logit_rows[n_rows++] = r * T + t;
    }
    ad_decode_input in = {rows_ids, len, C, T, true};
    CHECK_OK(ad_model_decode(&st, &in, logit_rows, n_rows));
    ad_tensor hv = prefix_view(&st.hidden, 2, (int64_t[]){(int64_t)C * T, H});
    ad_tensor lv = prefix_view(&st.logits, 2, (int64_t[]){n_rows, V});
    float *hg = download(&hv), *lg = download(&lv);
    diff_stats dh = {0}, dl = {0};
    int k = 0;
    for (int r = 0; r < C; r++)
        for (int t = 0; t < len[r]; t++, k++) {
            const size_t ref_row = (size_t)r * T + (size_t)(T - len[r] + t);
            for (int j = 0; j < H; j++)
                diff_add(&dh, hg[((size_t)r * T + t) * H + j], hid.data[ref_row * H + j]);
            for (int v = 0; v < V; v++)
                diff_add(&dl, lg[(size_t)k * V + v], logits.data[ref_row * V + v]);
        }
    diff_check("final hidden states", &dh);
    diff_check("logits", &dl);

    /* The prompt of an audio-token count that disagrees with the audio is refused. */
    rows_ids[0] = m.cfg.audio_token_index;
    rows_ids[1] = m.cfg.audio_token_index;
    ad_model_state_reset(&st);
    CHECK_FAILS_WITH(ad_model_decode(&st, &in, logit_rows, 1), "do not match");

    free(eg);
    free(ag);
    free(hg);
    free(lg);
    free(rows_ids);
    free(logit_rows);
    ref_tensor all[] = {feat, flen, ntok, enc, aud, ids, mask, hid, logits};
    for (size_t i = 0; i < sizeof all / sizeof all[0]; i++)
        free(all[i].data);
    ad_safetensors_close(&rs);
    ad_model_state_free(&st);
    ad_model_free(&m);
}

/* ---- prompts ----------------------------------------------------------------------------- */

static int piece_tokenize(void *ctx, const char *text, size_t len, int32_t **ids, int *n) {
    cJSON *pieces = ctx;
    for (cJSON *p = pieces->child; p; p = p->next) {
        if (strlen(p->string) != len || strncmp(p->string, text, len) != 0) continue;
        int k = cJSON_GetArraySize(p);
        int32_t *g = realloc(*ids, sizeof *g * (size_t)(*n + k + 1));
        if (!g) return ad_fail("out of memory");
        *ids = g;
        for (cJSON *v = p->child; v; v = v->next)
            (*ids)[(*n)++] = (int32_t)v->valuedouble;
        return AD_OK;
    }
    return ad_fail("no reference tokenization for piece '%.*s'", (int)len, text);
}

static void check_prompt(const char *name) {
    char dir[512], path[600];
    snprintf(dir, sizeof dir, "%s/%s", AUDISTILL_FIXTURES, name);
    snprintf(path, sizeof path, "%s/prompt_pieces.json", dir);
    char *json;
    size_t size;
    CHECK_OK(ad_read_file(path, 1 << 20, &json, &size));
    cJSON *pieces = cJSON_Parse(json);
    free(json);
    CHECK(pieces != NULL);
    snprintf(path, sizeof path, "%s/tokenizer_config.json", dir);
    ad_added_token *specials;
    int n_specials;
    CHECK_OK(ad_added_tokens_load(path, &specials, &n_specials));
    snprintf(path, sizeof path, "%s/config.json", dir);
    ad_model_config cfg;
    CHECK_OK(ad_model_config_load(path, &cfg));
    snprintf(path, sizeof path, "%s/reference.safetensors", dir);
    ad_safetensors rs;
    CHECK_OK(ad_safetensors_open(&rs, path));
    ref_tensor ntok = load_ref(&rs, "audio_tokens");
    const char *names[2] = {"prompt_ids_base", "prompt_ids_chat"};
    for (int style = 0; style < 2; style++) {
        ref_tensor want = load_ref(&rs, names[style]);
        char *text = ad_prompt_text((ad_prompt_style)style, ad_prompt_default_task("de"));
        int32_t *ids = NULL;
        int n = 0;
        CHECK_OK(ad_prompt_tokenize(text, specials, n_specials, cfg.audio_token_index,
                                    (int)ntok.data[1], piece_tokenize, pieces, &ids, &n));
        CHECK_MSG(n == want.shape[0], "%s: %d ids, reference %lld", names[style], n,
                  (long long)want.shape[0]);
        bool same = n == want.shape[0];
        for (int i = 0; same && i < n; i++)
            same = ids[i] == (int32_t)want.data[i];
        CHECK_MSG(same, "%s differs from the processor's ids", names[style]);
        free(ids);
        free(text);
        free(want.data);
    }
    /* Two audio placeholders (or none) are refused. */
    int32_t *ids = NULL;
    int n = 0;
    CHECK_FAILS_WITH(ad_prompt_tokenize("<|AUDIO|><|AUDIO|>", specials, n_specials,
                                        cfg.audio_token_index, 3, piece_tokenize, pieces, &ids, &n),
                     "exactly once");
    free(ntok.data);
    ad_safetensors_close(&rs);
    ad_added_tokens_free(specials, n_specials);
    cJSON_Delete(pieces);
}

/* ---- bad checkpoints --------------------------------------------------------------------- */

/* Writes DIR/model.safetensors from the fixture's tensors, dropping `drop` and replacing the
 * shape of `reshape` (its data truncated accordingly). */
static void write_variant(const char *src_dir, const char *dst_dir, const char *drop,
                          const char *reshape, const char *config_from, const char *config_to) {
    char path[700];
    CHECK_OK(ad_mkdir_p(dst_dir));
    ad_safetensors st;
    snprintf(path, sizeof path, "%s/model.safetensors", src_dir);
    CHECK_OK(ad_safetensors_open(&st, path));
    ad_st_write_item *items = calloc((size_t)st.n_entries, sizeof *items);
    int n = 0;
    for (int i = 0; i < st.n_entries; i++) {
        const ad_st_entry *e = &st.entries[i];
        if (drop && strcmp(e->name, drop) == 0) continue;
        ad_tensor t;
        CHECK_OK(ad_safetensors_view(&st, e, &t));
        items[n] = (ad_st_write_item){e->name, e->dtype, e->ndim, {0}, t.data};
        memcpy(items[n].shape, e->shape, sizeof e->shape);
        if (reshape && strcmp(e->name, reshape) == 0) items[n].shape[0] -= 1;
        n++;
    }
    snprintf(path, sizeof path, "%s/model.safetensors", dst_dir);
    CHECK_OK(ad_safetensors_write(path, items, n, NULL, 0));
    free(items);
    ad_safetensors_close(&st);
    char *json;
    size_t size;
    snprintf(path, sizeof path, "%s/config.json", src_dir);
    CHECK_OK(ad_read_file(path, 1 << 20, &json, &size));
    if (config_from) {
        char *at = strstr(json, config_from);
        CHECK(at != NULL && strlen(config_from) == strlen(config_to));
        if (at) memcpy(at, config_to, strlen(config_to));
    }
    snprintf(path, sizeof path, "%s/config.json", dst_dir);
    CHECK_OK(ad_write_file_atomic(path, json, size));
    free(json);
}

static void check_bad_checkpoints(void) {
    char src[512], dst[512];
    snprintf(src, sizeof src, "%s/tiny_a", AUDISTILL_FIXTURES);
    ad_model m;
    const char *q = "language_model.model.layers.1.self_attn.q_proj.weight";

    snprintf(dst, sizeof dst, "%s/model_missing", AUDISTILL_TEST_TMP);
    write_variant(src, dst, q, NULL, NULL, NULL);
    CHECK_FAILS_WITH(ad_model_load(&m, be, dst), "q_proj.weight is missing");

    snprintf(dst, sizeof dst, "%s/model_shape", AUDISTILL_TEST_TMP);
    write_variant(src, dst, NULL, "audio_tower.layers.0.fc1.weight", NULL, NULL);
    CHECK_FAILS_WITH(ad_model_load(&m, be, dst),
                     "audio_tower.layers.0.fc1.weight has shape [31, 16] but config.json "
                     "implies [32, 16]");

    /* The config says a wider FFN than the weights have. */
    snprintf(dst, sizeof dst, "%s/model_config_ffn", AUDISTILL_TEST_TMP);
    write_variant(src, dst, NULL, NULL, "\"intermediate_size\": 40", "\"intermediate_size\": 48");
    CHECK_FAILS_WITH(ad_model_load(&m, be, dst), "mlp.gate_proj.weight has shape [40, 24] but "
                                                 "config.json implies [48, 24]");

    /* The config says fewer layers than the checkpoint holds. */
    snprintf(dst, sizeof dst, "%s/model_config_layers", AUDISTILL_TEST_TMP);
    write_variant(src, dst, NULL, NULL, "\"num_hidden_layers\": 2", "\"num_hidden_layers\": 1");
    CHECK_FAILS_WITH(ad_model_load(&m, be, dst), "is not part of the model config.json describes");
}

int main(void) {
    if (ad_backend_cpu_create(&be, 2) < 0) {
        fprintf(stderr, "backend: %s\n", ad_error());
        return 1;
    }
    RUN(check_bad_checkpoints);
    test_current = "forward tiny_a";
    check_forward("tiny_a");
    test_current = "forward tiny_b";
    check_forward("tiny_b");
    test_current = "prompt tiny_a";
    check_prompt("tiny_a");
    test_current = "prompt tiny_b";
    check_prompt("tiny_b");
    ad_backend_destroy(be);
    return test_report();
}
