/* The encoder-side CTC term of a training step: an auxiliary loss that makes the model's
 * states at the audio positions spell the clip's transcript. Without it a decoder trained from
 * scratch learns the target languages' prior and the clip's length, never what is said (see
 * experiments/demo_teacher). It reads lm_head at every audio position (no new parameters, so
 * the model keeps Qwen2-Audio's layout) with the <|AUDIO|> placeholder as the CTC blank, and
 * writes its gradient into those logit rows before the graph's backward pass. */
#ifndef AUDISTILL_TRAIN_CTC_TERM_H
#define AUDISTILL_TRAIN_CTC_TERM_H

#include <stdbool.h>
#include <stdint.h>

#include "backend/backend.h"
#include "model/train_graph.h"
#include "train/loader.h"

typedef struct {
    double nll;        /* summed over the transcripts */
    double tokens;     /* transcript tokens of the feasible ones */
    double infeasible; /* transcripts longer than their clip's audio positions allow */
} ad_ctc_sums;

typedef struct {
    float *logits, *grad; /* host copies of the audio rows */
    size_t cap;
} ad_ctc_term;

/* Copies the audio rows' logits to the host. Call after ad_graph_forward and before the
 * distillation loss, which overwrites the logits with their gradient. */
int ad_ctc_term_read(ad_ctc_term *t, ad_backend *be, const ad_train_graph *g);
/* Adds the CTC loss of every example of `b` to *sums; when `grad`, writes
 * weight * grad_scale * d(nll)/d(logits) into the graph's audio rows (the text rows are
 * untouched). `blank` is the model's <|AUDIO|> id. */
int ad_ctc_term_apply(ad_ctc_term *t, ad_backend *be, ad_train_graph *g, const ad_batch *b,
                      int blank, float weight, float grad_scale, bool grad, ad_ctc_sums *sums);
void ad_ctc_term_free(ad_ctc_term *t);

#endif
