#include "train/qat.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "compress/quant_io.h"
#include "core/error.h"
#include "io/safetensors.h"

/* Smallest positive normal f16: smaller scales would flush codes of ordinary weights. */
#define MIN_SCALE 6.103515625e-05f
#define MAX_SCALE 65504.0f

int ad_qat_open(ad_qat *q, const char *student_dir, bool learn_scales) {
    memset(q, 0, sizeof *q);
    q->learn_scales = learn_scales;
    ad_safetensors st;
    AD_TRY(ad_safetensors_open(&st, student_dir));
    ad_quant_index index = {0};
    int rc = ad_quant_index_load(&st, &index);
    if (rc == AD_OK && index.n > 0) {
        q->w = ad_calloc((size_t)index.n, sizeof *q->w, "quantization-aware weights");
        rc = q->w ? AD_OK : AD_ERR;
    }
    for (int i = 0; rc == AD_OK && i < index.n; i++) {
        const ad_quant_entry *e = &index.entries[i];
        ad_quant_tensor view;
        rc = ad_quant_view(&st, e, &view);
        if (rc < 0) break;
        ad_qat_weight *w = &q->w[q->n++];
        w->spec = e->spec;
        snprintf(w->method, sizeof w->method, "%s", e->method);
        w->rows = e->rows, w->cols = e->cols, w->groups = e->cols / e->spec.group_size;
        const int64_t ng = w->rows * w->groups;
        w->name = ad_malloc(strlen(e->name) + 1, "weight name");
        w->scale = ad_malloc(sizeof(float) * (size_t)ng, e->name);
        w->zero = e->spec.symmetric ? NULL : ad_malloc((size_t)ng, e->name);
        w->log_scale = learn_scales ? ad_malloc(sizeof(float) * (size_t)ng, e->name) : NULL;
        if (!w->name || !w->scale || (!e->spec.symmetric && !w->zero) ||
            (learn_scales && !w->log_scale)) {
            rc = AD_ERR;
            break;
        }
        strcpy(w->name, e->name);
        for (int64_t g = 0; g < ng; g++)
            w->scale[g] = ad_f16_to_f32(view.scales[g]);
        ad_qat_clamp_scales(w);
        for (int64_t g = 0; learn_scales && g < ng; g++)
            w->log_scale[g] = logf(w->scale[g]);
        if (w->zero) memcpy(w->zero, view.zeros, (size_t)ng);
    }
    ad_quant_index_free(&index);
    ad_safetensors_close(&st);
    if (rc < 0) {
        ad_qat_free(q);
        return ad_fail_context("reading the quantization of %s", student_dir);
    }
    return AD_OK;
}

void ad_qat_free(ad_qat *q) {
    for (int i = 0; i < q->n; i++)
        free(q->w[i].name), free(q->w[i].scale), free(q->w[i].zero), free(q->w[i].log_scale);
    free(q->w);
    memset(q, 0, sizeof *q);
}

const ad_qat_weight *ad_qat_find(const ad_qat *q, const char *name) {
    for (int i = 0; i < q->n; i++)
        if (!strcmp(q->w[i].name, name)) return &q->w[i];
    return NULL;
}

float ad_qat_scale(const ad_qat_weight *w, int64_t g) {
    return ad_f16_to_f32(ad_f32_to_f16(w->scale[g]));
}

static int zero_of(const ad_qat_weight *w, int64_t g) {
    return w->zero ? w->zero[g] : 1 << (w->spec.bits - 1);
}

void ad_qat_fake_quantize(const ad_qat_weight *w, const float *master, float *out) {
    const int G = w->spec.group_size;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < w->rows; r++)
        for (int64_t g = 0; g < w->groups; g++) {
            const float s = ad_qat_scale(w, r * w->groups + g);
            const int z = zero_of(w, r * w->groups + g);
            const int64_t at = r * w->cols + g * G;
            for (int i = 0; i < G; i++) {
                /* The same expression as ad_quant_dequantize_rows, so export is bit-exact. */
                const uint32_t c = ad_quant_encode(&w->spec, master[at + i], s, z);
                out[at + i] = s * (float)((int)c - z);
            }
        }
}

void ad_qat_backward(const ad_qat_weight *w, const float *master, float *grad, float *scale_grad) {
    const int G = w->spec.group_size;
    const int maxq = (1 << w->spec.bits) - 1, lo = w->spec.symmetric ? 1 : 0;
    const double lsq = 1.0 / sqrt((double)G * (double)(1 << (w->spec.bits - 1)));
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < w->rows; r++)
        for (int64_t g = 0; g < w->groups; g++) {
            const float s = ad_qat_scale(w, r * w->groups + g);
            const int z = zero_of(w, r * w->groups + g);
            const int64_t at = r * w->cols + g * G;
            double ds = 0;
            for (int i = 0; i < G; i++) {
                const float t = master[at + i] / s;
                const long c = lroundf(t) + z;
                if (c < lo || c > maxq) {
                    /* clamped: w_q = s * (bound - z) does not move with w */
                    ds += (double)grad[at + i] * (double)((c < lo ? lo : maxq) - z);
                    grad[at + i] = 0;
                } else {
                    ds += (double)grad[at + i] * ((double)lroundf(t) - (double)t);
                }
            }
            if (scale_grad) scale_grad[r * w->groups + g] = (float)(ds * lsq);
        }
}

void ad_qat_sync_scales(ad_qat_weight *w) {
    for (int64_t g = 0; w->log_scale && g < w->rows * w->groups; g++)
        w->scale[g] = expf(w->log_scale[g]);
    ad_qat_clamp_scales(w);
}

void ad_qat_log_scale_grad(const ad_qat_weight *w, float *scale_grad) {
    /* d/d(log s) = s * d/ds, with s the value the forward pass used */
    for (int64_t g = 0; g < w->rows * w->groups; g++)
        scale_grad[g] *= ad_qat_scale(w, g);
}

void ad_qat_clamp_scales(ad_qat_weight *w) {
    for (int64_t g = 0; g < w->rows * w->groups; g++)
        w->scale[g] = !(w->scale[g] > MIN_SCALE) ? MIN_SCALE : fminf(w->scale[g], MAX_SCALE);
}

void ad_qat_export(const ad_qat_weight *w, const float *master, ad_quant_tensor *q) {
    const int G = w->spec.group_size;
    const int64_t row_bytes = ad_quant_row_bytes(&w->spec, w->cols);
    for (int64_t r = 0; r < w->rows; r++)
        for (int64_t g = 0; g < w->groups; g++) {
            const int64_t k = r * w->groups + g;
            const float s = ad_qat_scale(w, k);
            const int z = zero_of(w, k);
            q->scales[k] = ad_f32_to_f16(s);
            if (q->zeros) q->zeros[k] = (uint8_t)z;
            for (int i = 0; i < G; i++)
                ad_quant_set_code(q->codes + r * row_bytes, w->spec.bits, g * G + i,
                                  ad_quant_encode(&w->spec, master[r * w->cols + g * G + i], s, z));
        }
}
