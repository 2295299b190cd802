#include "train/ctc_term.h"

#include <math.h>
#include <stdlib.h>

#include "core/error.h"
#include "train/ctc.h"

static int rows_view(const ad_train_graph *g, ad_tensor *view) {
    const int64_t V = g->m->cfg.vocab_size, C = g->n_supervised - g->n_text_rows;
    void *data = (char *)g->logits.data + (size_t)g->n_text_rows * (size_t)V * sizeof(float);
    return ad_tensor_init(view, data, AD_F32, g->logits.device, 2, (int64_t[]){C, V}, "CTC logits");
}

int ad_ctc_term_read(ad_ctc_term *t, ad_backend *be, const ad_train_graph *g) {
    const int64_t V = g->m->cfg.vocab_size, C = g->n_supervised - g->n_text_rows;
    if (C <= 0) return ad_fail("internal: the CTC term needs a batch with transcripts");
    const size_t need = (size_t)C * (size_t)V;
    if (need > t->cap) {
        float *l = ad_realloc(t->logits, need * sizeof(float), "CTC logits");
        if (!l) return AD_ERR;
        t->logits = l;
        float *gr = ad_realloc(t->grad, need * sizeof(float), "CTC gradient");
        if (!gr) return AD_ERR;
        t->grad = gr;
        t->cap = need;
    }
    ad_tensor src, dst;
    AD_TRY(rows_view(g, &src));
    AD_TRY(ad_tensor_init(&dst, t->logits, AD_F32, AD_DEVICE_CPU, 2, (int64_t[]){C, V},
                          "CTC logits (host)"));
    return be->download(be, &dst, &src);
}

int ad_ctc_term_apply(ad_ctc_term *t, ad_backend *be, ad_train_graph *g, const ad_batch *b,
                      int blank, float weight, float grad_scale, bool grad, ad_ctc_sums *sums) {
    const int V = g->m->cfg.vocab_size;
    const int64_t C = g->n_supervised - g->n_text_rows;
    int64_t at = 0;
    for (int i = 0; i < b->n; i++) {
        const int T = g->clip_tokens[i];
        if (at + T > C) return ad_fail("internal: CTC rows exceed the graph's audio rows");
        const float *x = t->logits + (size_t)at * (size_t)V;
        float *gx = t->grad + (size_t)at * (size_t)V;
        double nll;
        bool feasible;
        if (ad_ctc_loss(x, T, V, b->ctc_ids + (size_t)i * (size_t)b->ctc_max, b->ctc_len[i], blank,
                        weight * grad_scale, grad ? gx : NULL, &nll, &feasible) < 0)
            return ad_fail_context(
                "CTC loss of segment %d (%d audio positions, %d transcript tokens)",
                b->segment ? b->segment[i] : i, T, b->ctc_len[i]);
        if (feasible) {
            sums->nll += nll;
            sums->tokens += b->ctc_len[i];
        } else {
            sums->infeasible += 1;
        }
        at += T;
    }
    if (at != C)
        return ad_fail("internal: %lld CTC rows for %lld audio positions", (long long)C,
                       (long long)at);
    if (!grad) return AD_OK;
    ad_tensor src, dst;
    AD_TRY(rows_view(g, &dst));
    AD_TRY(ad_tensor_init(&src, t->grad, AD_F32, AD_DEVICE_CPU, 2, (int64_t[]){C, V},
                          "CTC gradient (host)"));
    return be->upload(be, &dst, &src);
}

void ad_ctc_term_free(ad_ctc_term *t) {
    free(t->logits);
    free(t->grad);
    *t = (ad_ctc_term){0};
}
