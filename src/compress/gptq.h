/* GPTQ (Frantar et al., 2023): quantize a linear weight column by column, pushing each
 * column's rounding error onto the columns not yet quantized through the inverse Hessian of
 * the layer's calibration inputs, so that the layer's outputs on that data move least. The
 * result is the same group format as round-to-nearest (compress/quant.h). */
#ifndef AUDISTILL_COMPRESS_GPTQ_H
#define AUDISTILL_COMPRESS_GPTQ_H

#include <stdint.h>

#include "compress/quant.h"

/* Accumulates H += 2/n * X^T X from calibration rows X [n_rows, cols] (call once per batch,
 * then ad_gptq_hessian_finish). H is [cols, cols] double, zeroed by the caller; *count
 * tracks the rows seen so far so the running mean stays exact across batches. */
int ad_gptq_hessian_add(double *H, int64_t cols, const float *X, int64_t n_rows, int64_t *count);

typedef struct {
    double damp_percent; /* dampening: this fraction of mean(diag H) added to the diagonal (0.01) */
} ad_gptq_options;

/* Quantizes W [q->rows, q->cols] into q using H [cols, cols] (modified: dampened and
 * replaced by the Cholesky factor of its inverse). Columns never activated (H_ii = 0) are
 * zeroed as in the reference implementation. */
int ad_gptq_quantize(ad_quant_tensor *q, const float *W, double *H, const ad_gptq_options *opts,
                     const char *name);

#endif
