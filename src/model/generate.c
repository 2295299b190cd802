#include "model/generate.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/error.h"

/* transformers marks impossible candidates by adding -1e9 in float32; the same constant keeps
 * the same ordering (including its rounding) here. */
#define NEG_BIG (-1.0e9f)

typedef struct {
    ad_model_state *st;
    int V;
    float *logits; /* host [rows, V] */
    float *logp;   /* host [V] */
} decoder_ctx;

static bool is_stop(const ad_generate_params *p, int32_t tok) {
    for (int i = 0; i < p->n_stop; i++)
        if (p->stop_ids[i] == tok) return true;
    return false;
}

/* log_softmax of one row in float32, as torch computes it: x - max - log(sum(exp(x - max))). */
static void log_softmax(const float *x, int V, float *out) {
    float mx = x[0];
    for (int v = 1; v < V; v++)
        if (x[v] > mx) mx = x[v];
    double sum = 0.0;
    for (int v = 0; v < V; v++)
        sum += exp((double)(x[v] - mx));
    const float lse = (float)log(sum);
    for (int v = 0; v < V; v++)
        out[v] = (x[v] - mx) - lse;
}

static int fetch_logits(decoder_ctx *d, int rows) {
    ad_tensor host, dev;
    int64_t shape[2] = {rows, d->V};
    AD_TRY(ad_tensor_init(&host, d->logits, AD_F32, AD_DEVICE_CPU, 2, shape, "logits"));
    AD_TRY(ad_tensor_reshape(&d->st->logits, 1, (int64_t[]){d->st->logits.shape[0] * d->V}, &dev));
    AD_TRY(ad_tensor_slice(&dev, 0, 0, (int64_t)rows * d->V, &dev));
    AD_TRY(ad_tensor_reshape(&dev, 2, shape, &dev));
    return d->st->m->be->download(d->st->m->be, &host, &dev);
}

/* Prompt rows 0..n-1, right-padded to the longest; logits of each row's last token. */
static int prefill(decoder_ctx *d, const int32_t *const *prompts, const int *prompt_len, int n,
                   bool use_audio) {
    int T = 0;
    for (int i = 0; i < n; i++)
        if (prompt_len[i] > T) T = prompt_len[i];
    int32_t *ids = ad_calloc((size_t)n * (size_t)T, sizeof *ids, "prompt ids");
    int *rows = ad_calloc((size_t)n, sizeof *rows, "prompt rows");
    int rc = AD_ERR;
    if (!ids || !rows) goto done;
    for (int i = 0; i < n; i++) {
        memcpy(ids + (size_t)i * T, prompts[i], sizeof *ids * (size_t)prompt_len[i]);
        rows[i] = i * T + prompt_len[i] - 1;
    }
    ad_decode_input in = {ids, prompt_len, n, T, use_audio};
    ad_model_state_reset(d->st);
    if (ad_model_decode(d->st, &in, rows, n) < 0 || fetch_logits(d, n) < 0) goto done;
    rc = AD_OK;
done:
    free(ids);
    free(rows);
    return rc;
}

static int step(decoder_ctx *d, const int32_t *ids, const int *ones, int rows,
                const int *all_rows) {
    ad_decode_input in = {ids, ones, rows, 1, false};
    AD_TRY(ad_model_decode(d->st, &in, all_rows, rows));
    return fetch_logits(d, rows);
}

static int greedy(decoder_ctx *d, int n, const ad_generate_params *p, ad_generate_output *out,
                  int32_t *ids, int *ones, int *all_rows) {
    const int V = d->V, M = p->max_new_tokens;
    bool *done = ad_calloc((size_t)n, sizeof *done, "finished flags");
    if (!done) return AD_ERR;
    int rc = AD_ERR;
    for (int g = 0; g < M; g++) {
        bool all_done = true;
        for (int i = 0; i < n; i++) {
            if (done[i]) continue;
            const float *x = d->logits + (size_t)i * V;
            int best = 0;
            for (int v = 1; v < V; v++)
                if (x[v] > x[best]) best = v; /* first maximum, as torch.argmax */
            log_softmax(x, V, d->logp);
            out->score[i] += d->logp[best];
            out->tokens[(size_t)i * M + g] = best;
            out->len[i] = g + 1;
            ids[i] = best;
            if (is_stop(p, best)) done[i] = true;
            all_done = all_done && done[i];
        }
        if (all_done || g + 1 == M) break;
        if (step(d, ids, ones, n, all_rows) < 0) goto fail;
    }
    rc = AD_OK;
fail:
    free(done);
    return rc;
}

typedef struct {
    float score;
    int index;
} scored;

/* Indices of the k largest scores (ties: lower index first, as a stable descending sort). */
static void top_k(const float *x, int n, int k, scored *best) {
    int have = 0;
    for (int i = 0; i < n; i++) {
        if (have == k && !(x[i] > best[k - 1].score)) continue;
        int at = have < k ? have++ : k - 1;
        while (at > 0 && x[i] > best[at - 1].score) {
            best[at] = best[at - 1];
            at--;
        }
        best[at] = (scored){x[i], i};
    }
}

typedef struct {
    int32_t *run_seq, *fin_seq, *cand_seq, *tmp_seq; /* [slots][M] */
    float *run_score, *fin_score;
    int *fin_len;
    bool *fin_done;
    bool unsatisfied;
} beam_item;

static int beam_search(decoder_ctx *d, int n, const ad_generate_params *p, ad_generate_output *out,
                       int32_t *ids, int *ones, int *all_rows) {
    const int V = d->V, M = p->max_new_tokens, nb = p->num_beams, R = n * nb;
    int n_eos = p->n_stop;
    const int K = (1 + n_eos > 2 ? 1 + n_eos : 2) * nb;
    const float lp = p->length_penalty;
    int rc = AD_ERR;
    beam_item *items = ad_calloc((size_t)n, sizeof *items, "beam state");
    float *cand = ad_malloc(sizeof *cand * (size_t)nb * (size_t)V, "beam candidates");
    scored *top = ad_malloc(sizeof *top * (size_t)(K + nb), "beam top-k");
    float *merged = ad_malloc(sizeof *merged * (size_t)(K + nb), "beam merge");
    float *run_next = ad_malloc(sizeof *run_next * (size_t)K, "beam running scores");
    float *fin_next = ad_malloc(sizeof *fin_next * (size_t)K, "beam finished scores");
    bool *hits = ad_malloc(sizeof *hits * (size_t)K, "beam stop flags");
    int *src_row = ad_malloc(sizeof *src_row * (size_t)R, "beam sources");
    float *logp_all = ad_malloc(sizeof *logp_all * (size_t)R * (size_t)V, "beam log-probs");
    if (!items || !cand || !top || !merged || !run_next || !fin_next || !hits || !src_row ||
        !logp_all)
        goto done;
    for (int b = 0; b < n; b++) {
        beam_item *it = &items[b];
        it->run_seq = ad_calloc((size_t)nb * M, sizeof(int32_t), "beam sequences");
        it->fin_seq = ad_calloc((size_t)nb * M, sizeof(int32_t), "beam sequences");
        it->cand_seq = ad_calloc((size_t)K * M, sizeof(int32_t), "beam sequences");
        it->tmp_seq = ad_calloc((size_t)(K + nb) * M, sizeof(int32_t), "beam sequences");
        it->run_score = ad_calloc((size_t)nb, sizeof(float), "beam scores");
        it->fin_score = ad_calloc((size_t)(K + nb), sizeof(float), "beam scores");
        it->fin_len = ad_calloc((size_t)(K + nb), sizeof(int), "beam lengths");
        it->fin_done = ad_calloc((size_t)(K + nb), sizeof(bool), "beam flags");
        if (!it->run_seq || !it->fin_seq || !it->cand_seq || !it->tmp_seq || !it->run_score ||
            !it->fin_score || !it->fin_len || !it->fin_done)
            goto done;
        for (int j = 0; j < nb; j++) {
            it->run_score[j] = j == 0 ? 0.0f : NEG_BIG;
            it->fin_score[j] = NEG_BIG;
        }
        it->unsatisfied = true;
    }
    /* Every beam starts from its prompt's cache row. */
    for (int r = 0; r < R; r++)
        src_row[r] = r / nb;
    if (ad_model_reorder_cache(d->st, src_row, R) < 0) goto done;
    for (int r = 0; r < R; r++)
        memcpy(logp_all + (size_t)r * V, d->logits + (size_t)(r / nb) * V, sizeof(float) * V);

    for (int g = 0; g < M; g++) {
        bool all_hit = true, any_unsatisfied = false, all_finished = true;
        for (int b = 0; b < n; b++) {
            beam_item *it = &items[b];
            for (int j = 0; j < nb; j++) {
                log_softmax(logp_all + (size_t)(b * nb + j) * V, V, cand + (size_t)j * V);
                for (int v = 0; v < V; v++)
                    cand[(size_t)j * V + v] += it->run_score[j];
            }
            top_k(cand, nb * V, K, top);
            for (int k = 0; k < K; k++) {
                const int src = top[k].index / V, tok = top[k].index % V;
                memcpy(it->cand_seq + (size_t)k * M, it->run_seq + (size_t)src * M,
                       sizeof(int32_t) * (size_t)g);
                it->cand_seq[(size_t)k * M + g] = tok;
                hits[k] = is_stop(p, tok) || g + 1 >= M;
                all_hit = all_hit && hits[k];
                run_next[k] = top[k].score + (hits[k] ? NEG_BIG : 0.0f);
            }
            /* Running beams for the next step: the best non-finished candidates. */
            scored *rtop = top + K;
            top_k(run_next, K, nb, rtop);
            for (int j = 0; j < nb; j++) {
                const int k = rtop[j].index;
                memcpy(it->run_seq + (size_t)j * M, it->cand_seq + (size_t)k * M,
                       sizeof(int32_t) * (size_t)(g + 1));
                it->run_score[j] = run_next[k];
                src_row[b * nb + j] = b * nb + top[k].index / V;
                ids[b * nb + j] = it->cand_seq[(size_t)k * M + g];
            }
            /* Finished hypotheses: merge the kept ones with candidates that just ended. */
            bool full = true;
            for (int j = 0; j < nb; j++)
                full = full && it->fin_done[j];
            const float denom = (float)pow((double)(g + 1), (double)lp);
            for (int k = 0; k < K; k++) {
                float s = top[k].score / denom;
                s += (full && p->early_stopping) ? NEG_BIG : 0.0f;
                s += it->unsatisfied ? 0.0f : NEG_BIG;
                s += (hits[k] && k < nb) ? 0.0f : NEG_BIG;
                fin_next[k] = s;
            }
            for (int j = 0; j < nb; j++)
                merged[j] = it->fin_score[j];
            for (int k = 0; k < K; k++)
                merged[nb + k] = fin_next[k];
            scored mtop[64];
            scored *mt = nb <= 64 ? mtop : NULL;
            if (!mt) {
                ad_fail("beam search supports at most 64 beams");
                goto done;
            }
            top_k(merged, nb + K, nb, mt);
            float new_score[64];
            int new_len[64];
            bool new_done[64];
            for (int j = 0; j < nb; j++) {
                const int m = mt[j].index;
                if (m < nb) {
                    memcpy(it->tmp_seq + (size_t)j * M, it->fin_seq + (size_t)m * M,
                           sizeof(int32_t) * (size_t)M);
                    new_len[j] = it->fin_len[m];
                    new_done[j] = it->fin_done[m];
                } else {
                    const int k = m - nb;
                    memcpy(it->tmp_seq + (size_t)j * M, it->cand_seq + (size_t)k * M,
                           sizeof(int32_t) * (size_t)(g + 1));
                    new_len[j] = g + 1;
                    new_done[j] = hits[k] && k < nb;
                }
                new_score[j] = merged[m];
            }
            memcpy(it->fin_seq, it->tmp_seq, sizeof(int32_t) * (size_t)nb * M);
            for (int j = 0; j < nb; j++) {
                it->fin_score[j] = new_score[j];
                it->fin_len[j] = new_len[j];
                it->fin_done[j] = new_done[j];
            }
            /* Early-stop heuristic (early_stopping=False): can the best running beam, at its
             * current length, still beat the worst finished one? */
            if (it->unsatisfied) {
                const float best = it->run_score[0] / (float)pow((double)(g + 1), (double)lp);
                float worst = it->fin_score[0];
                for (int j = 1; j < nb; j++)
                    if (it->fin_score[j] < worst) worst = it->fin_score[j];
                bool any = false;
                for (int j = 0; j < nb; j++)
                    any = any || best > (it->fin_done[j] ? worst : NEG_BIG);
                it->unsatisfied = any;
            }
            any_unsatisfied = any_unsatisfied || it->unsatisfied;
            for (int j = 0; j < nb; j++)
                all_finished = all_finished && it->fin_done[j];
        }
        const bool open_beam = !(all_finished && p->early_stopping);
        if (!(any_unsatisfied && open_beam && !all_hit)) break;
        if (ad_model_reorder_cache(d->st, src_row, R) < 0) goto done;
        if (step(d, ids, ones, R, all_rows) < 0) goto done;
        memcpy(logp_all, d->logits, sizeof(float) * (size_t)R * V);
    }
    for (int b = 0; b < n; b++) {
        beam_item *it = &items[b];
        out->len[b] = it->fin_len[0];
        out->score[b] = it->fin_score[0];
        memcpy(out->tokens + (size_t)b * M, it->fin_seq, sizeof(int32_t) * (size_t)it->fin_len[0]);
    }
    rc = AD_OK;
done:
    if (items)
        for (int b = 0; b < n; b++) {
            free(items[b].run_seq);
            free(items[b].fin_seq);
            free(items[b].cand_seq);
            free(items[b].tmp_seq);
            free(items[b].run_score);
            free(items[b].fin_score);
            free(items[b].fin_len);
            free(items[b].fin_done);
        }
    free(items);
    free(cand);
    free(top);
    free(merged);
    free(run_next);
    free(fin_next);
    free(hits);
    free(src_row);
    free(logp_all);
    return rc;
}

int ad_generate(ad_model_state *st, const int32_t *const *prompts, const int *prompt_len,
                int n_prompts, bool use_audio, const ad_generate_params *p,
                ad_generate_output *out) {
    const int nb = p->num_beams < 1 ? 1 : p->num_beams;
    const int R = n_prompts * nb;
    if (n_prompts < 1) return ad_fail("generate: no prompts");
    if (p->max_new_tokens < 1) return ad_fail("generate: max_new_tokens must be >= 1");
    if (nb > 64) return ad_fail("generate: at most 64 beams");
    if (R > st->lim.max_rows || R > st->lim.max_logit_rows)
        return ad_fail("generate: %d prompts x %d beams exceed the state's %d rows", n_prompts, nb,
                       st->lim.max_rows);
    for (int i = 0; i < n_prompts; i++)
        if (prompt_len[i] + p->max_new_tokens > st->lim.max_tokens)
            return ad_fail("generate: prompt %d has %d tokens; with %d new ones that exceeds the "
                           "state's %d",
                           i, prompt_len[i], p->max_new_tokens, st->lim.max_tokens);
    decoder_ctx d = {st, st->m->cfg.vocab_size, NULL, NULL};
    int32_t *ids = ad_calloc((size_t)R, sizeof *ids, "step ids");
    int *ones = ad_calloc((size_t)R, sizeof *ones, "step lengths");
    int *all_rows = ad_calloc((size_t)R, sizeof *all_rows, "step rows");
    d.logits = ad_malloc(sizeof(float) * (size_t)R * (size_t)d.V, "host logits");
    d.logp = ad_malloc(sizeof(float) * (size_t)d.V, "host log-probs");
    int rc = AD_ERR;
    if (!ids || !ones || !all_rows || !d.logits || !d.logp) goto done;
    for (int r = 0; r < R; r++) {
        ones[r] = 1;
        all_rows[r] = r;
    }
    for (int i = 0; i < n_prompts; i++) {
        out->len[i] = 0;
        out->score[i] = 0.0f;
    }
    if (prefill(&d, prompts, prompt_len, n_prompts, use_audio) < 0) goto done;
    if (nb == 1)
        rc = greedy(&d, n_prompts, p, out, ids, ones, all_rows);
    else {
        ad_generate_params q = *p;
        q.num_beams = nb;
        rc = beam_search(&d, n_prompts, &q, out, ids, ones, all_rows);
    }
done:
    free(ids);
    free(ones);
    free(all_rows);
    free(d.logits);
    free(d.logp);
    return rc;
}

int ad_stop_ids(const ad_model_config *cfg, const ad_tokenizer *tok, int32_t *stop) {
    int n = 0;
    if (cfg->eos_token_id >= 0) stop[n++] = cfg->eos_token_id;
    const char *ends[] = {"<|im_end|>", "<|endoftext|>"};
    for (int i = 0; tok && i < 2; i++) {
        const int id = ad_tokenizer_token_id(tok, ends[i]);
        bool dup = false;
        for (int k = 0; k < n; k++)
            dup |= stop[k] == id;
        if (id >= 0 && id < cfg->vocab_size && !dup) stop[n++] = id;
    }
    return n;
}
