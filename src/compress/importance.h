/* Importance scores from calibration data, gathered from the activations the training graph
 * records (forward only): depth — block influence 1 - cos(layer input, layer output) per
 * decoder and encoder layer; width (Minitron style) — attention heads by the L2 norm of their
 * output, FFN neurons by mean |activation|, decoder hidden channels by the mean magnitude of
 * the normalised layer inputs. Everything is averaged over the real (unpadded) positions. */
#ifndef AUDISTILL_COMPRESS_IMPORTANCE_H
#define AUDISTILL_COMPRESS_IMPORTANCE_H

#include <stdint.h>

#include "model/train_graph.h"

typedef struct {
    int n_dec, n_enc;
    double *dec_influence; /* [n_dec] */
    double *enc_influence; /* [n_enc] */
    double **dec_head;     /* [n_dec][heads of the layer] */
    double **dec_ffn;      /* [n_dec][ffn of the layer] */
    double **enc_head;     /* [n_enc][heads] */
    double **enc_ffn;      /* [n_enc][ffn] */
    double *hidden;        /* [hidden_size] */
    int64_t dec_tokens, enc_frames;
} ad_importance;

int ad_importance_init(ad_importance *imp, const ad_model_config *cfg);
void ad_importance_free(ad_importance *imp);
/* Adds the statistics of the graph's last forward (which must keep activations). */
int ad_importance_accumulate(ad_importance *imp, const ad_train_graph *g);
/* Turns sums into means. */
void ad_importance_finish(ad_importance *imp);
/* Writes the scores as JSON (for the prune report). Caller frees. */
char *ad_importance_json(const ad_importance *imp, const ad_model_config *cfg);

#endif
