/* The teacher pass behind `audistill teacher-cache`: the teacher runs through the training
 * graph (forward only, nothing trainable) on the loader's micro-batches in example order,
 * exactly as the trainer runs it online, and the top-k of every supervised row goes to the
 * cache. With translations, each (segment, language) is first decoded by the teacher (KV-cache
 * generation, the prompt and stop ids of the trainer's dev BLEU) and the teacher then runs
 * again with its own translation as the target. */
#include <inttypes.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

#include "backend/backend.h"
#include "core/log.h"
#include "core/progress.h"
#include "io/file.h"
#include "model/generate.h"
#include "model/train_graph.h"
#include "text/bpe.h"
#include "train/loader.h"
#include "train/teacher_cache.h"

const ad_field ad_teacher_cache_job_fields[] = {
    {.key = "teacher",
     .type = AD_FIELD_STRING,
     .offset = offsetof(ad_teacher_cache_job, teacher),
     .required = true,
     .help = "teacher model directory"},
    {.key = "data",
     .type = AD_FIELD_STRING,
     .offset = offsetof(ad_teacher_cache_job, data),
     .required = true,
     .help = "prepared set (audistill prepare) the students will train on"},
    {.key = "output",
     .type = AD_FIELD_STRING,
     .offset = offsetof(ad_teacher_cache_job, output),
     .required = true,
     .help = "the cache file (.h5)"},
    {.key = "langs",
     .type = AD_FIELD_STRING_LIST,
     .offset = offsetof(ad_teacher_cache_job, langs),
     .help = "target languages (default de, zh)"},
    {.key = "top_k",
     .type = AD_FIELD_INT,
     .offset = offsetof(ad_teacher_cache_job, top_k),
     .default_value = "32",
     .min = 1,
     .max = 1 << 30,
     .help = "log-probabilities kept per position (at most the vocabulary)"},
    {.key = "max_frames",
     .type = AD_FIELD_INT,
     .offset = offsetof(ad_teacher_cache_job, max_frames),
     .default_value = "3000",
     .min = 3,
     .max = 3000,
     .help = "longest clip in mel frames (must equal the training job's)"},
    {.key = "max_len",
     .type = AD_FIELD_INT,
     .offset = offsetof(ad_teacher_cache_job, max_len),
     .default_value = "512",
     .min = 8,
     .max = 1 << 20,
     .help = "longest prompt + target in tokens"},
    {.key = "batch",
     .type = AD_FIELD_INT,
     .offset = offsetof(ad_teacher_cache_job, batch),
     .default_value = "8",
     .min = 1,
     .max = 1e6,
     .help = "examples per teacher forward"},
    {.key = "threads",
     .type = AD_FIELD_INT,
     .offset = offsetof(ad_teacher_cache_job, threads),
     .default_value = "0",
     .min = 0,
     .max = 1024},
    {.key = "device",
     .type = AD_FIELD_ENUM,
     .offset = offsetof(ad_teacher_cache_job, device),
     .default_value = "cpu",
     .choices = "cpu|cuda"},
    {.key = "translations",
     .type = AD_FIELD_ENUM,
     .offset = offsetof(ad_teacher_cache_job, translations),
     .default_value = "none",
     .choices = "none|greedy|beam",
     .help = "also store the teacher's own translations and its top-k along them "
             "(sequence-level distillation: data.targets: teacher)"},
    {.key = "num_beams",
     .type = AD_FIELD_INT,
     .offset = offsetof(ad_teacher_cache_job, num_beams),
     .default_value = "4",
     .min = 1,
     .max = 64},
    {.key = "max_new_tokens",
     .type = AD_FIELD_INT,
     .offset = offsetof(ad_teacher_cache_job, max_new_tokens),
     .default_value = "128",
     .min = 1,
     .max = 1 << 16},
    {0},
};

typedef struct {
    const ad_teacher_cache_job *job;
    ad_backend *be;
    ad_model teacher;
    ad_train_graph g;
    ad_loader loader;
    ad_teacher_cache_writer *w;
    int n_langs, window;
    const char *langs[AD_LOADER_MAX_LANGS];
    float *host;  /* [ROW_BLOCK, V] logits brought to the host (device backends) */
    int32_t *ids; /* [max_supervised, k] */
    float *lps;
} cache_ctx;

#define ROW_BLOCK 256

/* Top-k of every supervised row of batch b (whose forward just ran), appended per example. */
static int store_batch(cache_ctx *c, const ad_batch *b, ad_cache_source src) {
    const int V = c->teacher.cfg.vocab_size, k = (int)c->job->top_k, S = c->g.n_supervised;
    const float *all = c->g.logits.data;
    for (int r0 = 0; r0 < S; r0 += ROW_BLOCK) {
        const int n = S - r0 < ROW_BLOCK ? S - r0 : ROW_BLOCK;
        const float *rows = all + (size_t)r0 * (size_t)V;
        if (c->g.logits.device != AD_DEVICE_CPU) {
            ad_tensor src_view, dst;
            ad_tensor_init(&src_view, (float *)all + (size_t)r0 * (size_t)V, AD_F32,
                           c->g.logits.device, 2, (int64_t[]){n, V}, "teacher logits");
            ad_tensor_init(&dst, c->host, AD_F32, AD_DEVICE_CPU, 2, (int64_t[]){n, V}, "host");
            AD_TRY(c->be->download(c->be, &dst, &src_view));
            rows = c->host;
        }
        for (int r = 0; r < n; r++)
            ad_teacher_topk(rows + (size_t)r * (size_t)V, V, k, c->ids + (size_t)(r0 + r) * k,
                            c->lps + (size_t)(r0 + r) * k);
    }
    int64_t row = 0;
    for (int i = 0; i < b->n; i++) {
        int64_t count = 0;
        for (int t = 0; t < b->max_len; t++)
            count += b->labels[(size_t)i * b->max_len + t] != AD_IGNORE_LABEL;
        AD_TRY(ad_teacher_cache_append(c->w, src, b->lang[i], b->segment[i], count,
                                       c->ids + (size_t)row * k, c->lps + (size_t)row * k));
        row += count;
    }
    if (row != S)
        return ad_fail("internal: %lld labelled rows, the graph returned %d", (long long)row, S);
    return AD_OK;
}

/* One pass of the teacher over every example, in order. */
static int teacher_pass(cache_ctx *c, ad_cache_source src) {
    const int64_t total = c->loader.n_examples;
    AD_TRY(ad_loader_seek(&c->loader, (ad_loader_cursor){0, 0}));
    int32_t *ex = ad_malloc(sizeof *ex * (size_t)c->job->batch, "batch");
    if (!ex) return AD_ERR;
    ad_batch b = {0};
    ad_progress pr;
    ad_progress_start(&pr, src == AD_CACHE_REF ? "teacher (references)" : "teacher (own targets)",
                      total, "examples");
    int rc = AD_OK;
    for (int64_t done = 0; done < total && rc == AD_OK;) {
        int want = (int)(total - done < c->job->batch ? total - done : c->job->batch), n;
        rc = ad_loader_next(&c->loader, want, 0, 1, ex, &n);
        if (rc == AD_OK) rc = ad_loader_fill(&c->loader, ex, n, &b);
        if (rc == AD_OK && b.max_len > c->g.lim.max_len)
            rc = ad_fail("an example of %s has %d tokens, more than max_len %d", c->job->data,
                         b.max_len, c->g.lim.max_len);
        if (rc == AD_OK) rc = ad_graph_forward(&c->g, &b);
        if (rc == AD_OK) rc = store_batch(c, &b, src);
        done += n;
        ad_progress_update(&pr, done, NULL);
    }
    ad_progress_finish(&pr);
    ad_batch_free(&b);
    free(ex);
    return rc;
}

/* The token every prepared target of language `lang` ends with (the end-of-turn token
 * `audistill prepare` appends), so that teacher targets look like reference targets; -1 when
 * they do not agree (sets not made by prepare). */
static int common_end_token(cache_ctx *c, int lang, int32_t *end) {
    *end = -1;
    for (int seg = 0; seg < c->loader.n_segments; seg++) {
        int32_t *ids = NULL;
        int n = 0;
        AD_TRY(ad_prepared_target_ids(c->loader.set, c->langs[lang], seg, &ids, &n));
        const int32_t last = n > 0 ? ids[n - 1] : -1;
        free(ids);
        if (last < 0 || (seg > 0 && last != *end)) {
            *end = -1;
            return AD_OK;
        }
        *end = last;
    }
    return AD_OK;
}

typedef struct {
    int64_t *offset[AD_LOADER_MAX_LANGS];
    int32_t *tokens[AD_LOADER_MAX_LANGS];
} translations;

static int translate_all(cache_ctx *c, translations *tr) {
    const ad_teacher_cache_job *job = c->job;
    const ad_model_config *cfg = &c->teacher.cfg;
    const int beams = !strcmp(job->translations, "beam") ? (int)job->num_beams : 1;
    const int max_new = (int)job->max_new_tokens, n_seg = c->loader.n_segments;
    ad_tokenizer *tok = NULL;
    char *vocab = ad_path_join(job->teacher, "vocab.json");
    bool have_tok = vocab && ad_path_exists(vocab);
    free(vocab);
    if (have_tok && ad_tokenizer_load(job->teacher, 1, &tok) < 0) return AD_ERR;
    if (!have_tok)
        ad_warn("%s has no tokenizer: translations are stored without text", job->teacher);
    int32_t stop[AD_MAX_STOP_IDS], end[AD_LOADER_MAX_LANGS];
    const int n_stop = ad_stop_ids(cfg, tok, stop);
    int rc = AD_OK;
    for (int l = 0; l < c->n_langs && rc == AD_OK; l++) {
        rc = common_end_token(c, l, &end[l]);
        if (rc == AD_OK && end[l] < 0) {
            ad_warn("the %s targets of %s do not all end with one token: teacher translations end "
                    "with the model's end-of-sequence id %d",
                    c->langs[l], job->data, cfg->eos_token_id);
            end[l] = cfg->eos_token_id;
        }
        tr->offset[l] = ad_calloc((size_t)n_seg + 1, sizeof *tr->offset[l], "translations");
        tr->tokens[l] =
            ad_malloc(sizeof *tr->tokens[l] * ((size_t)n_seg * (max_new + 1) + 1), "translations");
        if (!tr->offset[l] || !tr->tokens[l]) rc = AD_ERR;
    }
    if (rc < 0) {
        ad_tokenizer_free(tok);
        return rc;
    }
    ad_model_limits lim = {.max_clips = 1,
                           .max_frames = c->window,
                           .max_rows = beams,
                           .max_tokens = (int)job->max_len + max_new,
                           .max_step_tokens = (int)job->max_len,
                           .max_logit_rows = 2 * beams};
    ad_model_state st = {0};
    ad_batch b = {0};
    int32_t *gen = ad_malloc(sizeof *gen * (size_t)max_new, "translation");
    int gen_len = 0;
    float gen_score = 0;
    ad_generate_output out = {gen, &gen_len, &gen_score};
    ad_generate_params gp = {.num_beams = beams,
                             .length_penalty = 1,
                             .max_new_tokens = max_new,
                             .stop_ids = stop,
                             .n_stop = n_stop};
    rc = gen ? ad_model_state_init(&st, &c->teacher, &lim) : AD_ERR;
    ad_progress pr;
    ad_progress_start(&pr, "teacher translations", (int64_t)n_seg * c->n_langs, "examples");
    for (int seg = 0; seg < n_seg && rc == AD_OK; seg++)
        for (int l = 0; l < c->n_langs && rc == AD_OK; l++) {
            int32_t ex = seg * c->n_langs + l;
            char *text = NULL;
            rc = ad_loader_fill(&c->loader, &ex, 1, &b);
            if (rc < 0) break;
            ad_tensor feat;
            ad_tensor_init(&feat, b.features, AD_F32, AD_DEVICE_CPU, 3,
                           (int64_t[]){1, b.n_mels, b.max_frames}, "features");
            int prompt_len = ad_batch_prompt_len(&b, 0);
            if (prompt_len > lim.max_step_tokens) {
                rc = ad_fail("segment %d: a prompt of %d tokens exceeds max_len %d", seg,
                             prompt_len, lim.max_step_tokens);
                break;
            }
            const int32_t *prompts[1] = {b.ids};
            ad_model_state_reset(&st);
            rc = ad_model_encode(&st, &feat, b.frames);
            if (rc == AD_OK) rc = ad_generate(&st, prompts, &prompt_len, 1, true, &gp, &out);
            if (rc < 0) break;
            int n = gen_len;
            for (int s = 0; n > 0 && s < n_stop; s++)
                if (gen[n - 1] == stop[s]) {
                    n--;
                    break;
                }
            if (tok)
                rc =
                    ad_tokenizer_decode(tok, gen, ad_tokenizer_drop_unknown(tok, gen, n), 1, &text);
            int64_t at = tr->offset[l][seg];
            memcpy(tr->tokens[l] + at, gen, sizeof *gen * (size_t)n);
            tr->tokens[l][at + n] = end[l];
            tr->offset[l][seg + 1] = at + n + 1;
            if (rc == AD_OK)
                rc = ad_teacher_cache_add_translation(c->w, l, seg, tr->tokens[l] + at, n + 1,
                                                      text ? text : "");
            free(text);
            ad_progress_update(&pr, (int64_t)seg * c->n_langs + l + 1, NULL);
        }
    ad_progress_finish(&pr);
    free(gen);
    ad_batch_free(&b);
    if (st.m) ad_model_state_free(&st);
    ad_tokenizer_free(tok);
    return rc;
}

int ad_teacher_cache_run(const ad_yaml_doc *doc, const ad_teacher_cache_job *job) {
    cache_ctx c;
    memset(&c, 0, sizeof c);
    c.job = job;
    translations tr = {0};
    int rc = AD_ERR;
    const bool with_translations = strcmp(job->translations, "none") != 0;
    c.n_langs = job->langs.count ? job->langs.count : 2;
    if (c.n_langs > AD_LOADER_MAX_LANGS)
        return ad_fail("%s: at most %d languages", doc->file_name, AD_LOADER_MAX_LANGS);
    for (int i = 0; i < c.n_langs; i++)
        c.langs[i] = job->langs.count ? job->langs.values[i] : (i ? "zh" : "de");
    if (!ad_path_exists(job->data))
        return ad_fail("%s: data %s does not exist (run audistill prepare)", doc->file_name,
                       job->data);
    if (!ad_is_directory(job->teacher))
        return ad_fail("%s: teacher %s is not a model directory", doc->file_name, job->teacher);
    char what[4200];
    snprintf(what, sizeof what, "%s: device", doc->file_name);
    if (ad_backend_create_for(job->device, (int)job->threads, 0, what, &c.be) < 0) return AD_ERR;
    if (ad_model_load(&c.teacher, c.be, job->teacher) < 0) goto done;
    const int V = c.teacher.cfg.vocab_size;
    if (job->top_k > V) {
        ad_fail("%s: top_k %lld exceeds the teacher's vocabulary of %d", doc->file_name,
                (long long)job->top_k, V);
        goto done;
    }
    uint64_t th, dh;
    double ts, ds;
    if (ad_teacher_identity(job->teacher, &th, &ts) < 0 ||
        ad_data_identity(job->data, &dh, &ds) < 0)
        goto done;
    ad_info("teacher identity %016" PRIx64 " (%.2f s), data identity %016" PRIx64 " (%.2f s)", th,
            ts, dh, ds);
    c.window = ad_model_window(&c.teacher.cfg, job->max_frames);
    if (ad_loader_open(&c.loader, job->data, c.n_langs, c.langs, c.teacher.cfg.audio_token_index, 0,
                       false) < 0)
        goto done;
    ad_loader_set_window(&c.loader, c.window);
    int longest, seg;
    const char *lang;
    if (ad_loader_longest(&c.loader, &longest, &seg, &lang) < 0) goto done;
    if (longest > job->max_len) {
        ad_fail("%s: max_len is %lld but segment %d of %s (%s) needs %d tokens: raise max_len",
                doc->file_name, (long long)job->max_len, seg, job->data, lang, longest);
        goto done;
    }
    /* Teacher targets may be longer than the references: room for max_new_tokens + end. */
    const int graph_len =
        (int)job->max_len + (with_translations ? (int)job->max_new_tokens + 1 : 0);
    ad_graph_limits lim = {.max_clips = (int)job->batch,
                           .max_frames = c.window,
                           .max_len = graph_len,
                           .max_supervised = (int)job->batch * graph_len};
    ad_trainable none = {0};
    if (ad_graph_init(&c.g, &c.teacher, &lim, &none) < 0) goto done;
    c.host = ad_malloc(sizeof *c.host * (size_t)ROW_BLOCK * (size_t)V, "logits");
    c.ids = ad_malloc(sizeof *c.ids * (size_t)lim.max_supervised * (size_t)job->top_k, "top-k");
    c.lps = ad_malloc(sizeof *c.lps * (size_t)lim.max_supervised * (size_t)job->top_k, "top-k");
    if (!c.host || !c.ids || !c.lps) goto done;
    ad_teacher_cache_info info = {.top_k = (int)job->top_k,
                                  .vocab_size = V,
                                  .max_frames = c.window,
                                  .n_segments = c.loader.n_segments,
                                  .n_langs = c.n_langs,
                                  .langs = c.langs,
                                  .with_teacher_targets = with_translations,
                                  .teacher_hash = th,
                                  .data_hash = dh,
                                  .teacher_dir = job->teacher,
                                  .data_path = job->data,
                                  .translations = job->translations};
    char *dir = ad_path_dirname(job->output);
    rc = dir ? ad_mkdir_p(dir) : AD_ERR;
    free(dir);
    if (rc < 0 || ad_teacher_cache_create(job->output, &info, &c.w) < 0) {
        rc = AD_ERR;
        goto done;
    }
    rc = AD_ERR;
    const double t0 = ad_now_seconds();
    if (teacher_pass(&c, AD_CACHE_REF) < 0) goto done;
    ad_info("top-%lld of %lld examples in %.1f s", (long long)job->top_k,
            (long long)c.loader.n_examples, ad_now_seconds() - t0);
    if (with_translations) {
        const double t1 = ad_now_seconds();
        if (translate_all(&c, &tr) < 0) goto done;
        for (int l = 0; l < c.n_langs; l++)
            ad_loader_set_targets(&c.loader, l, tr.offset[l], tr.tokens[l]);
        if (teacher_pass(&c, AD_CACHE_TEACHER) < 0) goto done;
        ad_info("%s translations and their top-%lld in %.1f s", job->translations,
                (long long)job->top_k, ad_now_seconds() - t1);
    }
    rc = ad_teacher_cache_finish(c.w);
    c.w = NULL;
    if (rc == AD_OK) ad_info("wrote %s", job->output);
done:
    ad_teacher_cache_abort(c.w);
    for (int l = 0; l < AD_LOADER_MAX_LANGS; l++)
        free(tr.offset[l]), free(tr.tokens[l]);
    free(c.host), free(c.ids), free(c.lps);
    if (c.g.m) ad_graph_free(&c.g);
    if (c.loader.set) ad_loader_close(&c.loader);
    if (c.teacher.be) ad_model_free(&c.teacher);
    if (c.be) ad_backend_destroy(c.be);
    return rc;
}
