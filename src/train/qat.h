/* Quantization-aware training: the student's group-quantized weights are trained through their
 * quantizer. Each quantized weight keeps an f32 master copy (what the optimizer updates), its
 * per-group scales (fixed, or learned as in LSQ, Esser et al. 2020) and its zero points
 * (fixed). The forward pass sees
 *     w_q = s * (clamp(round(w / s) + z, lo, 2^bits - 1) - z),   s rounded to f16,
 * which is exactly what ad_quant_encode + ad_quant_dequantize_rows give for the stored codes,
 * so the exported model (ad_qat_export) executes the very weights that were trained.
 * Gradients are straight-through: dL/dw = dL/dw_q where w is inside the grid's range and 0
 * where it was clamped; dL/ds (learned scales) is LSQ's, scaled by 1/sqrt(G * 2^(bits-1)).
 * Learned scales are optimized as log s: AdamW's step is about lr in parameter units, which
 * for scales of 1e-3..1e-1 would be a large relative jump; in log space it is a relative
 * change of about lr per step whatever the scale.
 * Training starts from a post-training quantized student (e.g. GPTQ): its dequantized values are
 * the masters, so step 0 is exactly that model. */
#ifndef AUDISTILL_TRAIN_QAT_H
#define AUDISTILL_TRAIN_QAT_H

#include <stdbool.h>
#include <stdint.h>

#include "compress/quant.h"

typedef struct {
    char *name; /* the weight (checkpoint name) */
    ad_quant_spec spec;
    char method[16]; /* how the student was quantized (gptq, rtn, qat) */
    int64_t rows, cols, groups;
    float *scale;     /* [rows * groups] f32 (the f16 rounding is applied when used) */
    float *log_scale; /* learned scales: the optimizer's parameter, scale = exp(log_scale) */
    uint8_t *zero;    /* [rows * groups], NULL for symmetric groups */
} ad_qat_weight;

typedef struct {
    int n;
    ad_qat_weight *w;
    bool learn_scales;
} ad_qat;

/* Reads the quantization of `student_dir`'s weights (an empty set when it is not quantized). */
int ad_qat_open(ad_qat *q, const char *student_dir, bool learn_scales);
void ad_qat_free(ad_qat *q);
const ad_qat_weight *ad_qat_find(const ad_qat *q, const char *name);
/* The f16 value the scale of group g stands for (what forward and export use). */
float ad_qat_scale(const ad_qat_weight *w, int64_t g);
/* out = w_q(master) over the whole weight. */
void ad_qat_fake_quantize(const ad_qat_weight *w, const float *master, float *out);
/* Straight-through backward: grad (dL/dw_q on entry) becomes dL/dw; scale_grad (may be NULL,
 * [rows * groups]) receives dL/ds. */
void ad_qat_backward(const ad_qat_weight *w, const float *master, float *grad, float *scale_grad);
/* Learned scales: scale = exp(log_scale), kept within f16's normal range (after a step). */
void ad_qat_sync_scales(ad_qat_weight *w);
/* The gradient with respect to log_scale from dL/ds, in place. */
void ad_qat_log_scale_grad(const ad_qat_weight *w, float *scale_grad);
/* Keeps scales positive and representable in f16. */
void ad_qat_clamp_scales(ad_qat_weight *w);
/* The codes (and f16 scales, zeros) of master: q must be allocated with w's spec and shape. */
void ad_qat_export(const ad_qat_weight *w, const float *master, ad_quant_tensor *q);

#endif
