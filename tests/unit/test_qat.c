/* Quantization-aware training's quantizer (train/qat.h) against torch autograd's LSQ
 * (fixtures from tests/fixtures/make_qat_fixtures.py): the fake-quantized weight, the
 * straight-through weight gradient and the scale gradient, for 2/3/4/8 bits with symmetric
 * and zero-point groups. Then, on fresh random weights and scales that are not f16 values,
 * the exported codes dequantize to exactly the values the forward pass used. */
#include <stdint.h>
#include <time.h>

#include "compress/quant.h"
#include "core/rng.h"
#include "io/safetensors.h"
#include "test.h"
#include "train/qat.h"

#define ROWS 6
#define COLS 32

static ad_safetensors fx;

static const struct {
    const char *name;
    int bits, group;
    bool symmetric;
} CASES[] = {{"b2_g8_sym", 2, 8, true},
             {"b2_g16_asym", 2, 16, false},
             {"b3_g8_asym", 3, 8, false},
             {"b4_g16_sym", 4, 16, true},
             {"b8_g8_asym", 8, 8, false}};

static void read(const char *c, const char *part, int ndim, const int64_t *shape, float *dst) {
    char name[96];
    snprintf(name, sizeof name, "%s.%s", c, part);
    CHECK_MSG(ad_safetensors_read_f32(&fx, name, ndim, shape, dst) == AD_OK, "%s", ad_error());
}

static void test_against_torch(void) {
    for (size_t k = 0; k < sizeof CASES / sizeof CASES[0]; k++) {
        const int G = CASES[k].group, groups = COLS / G;
        float w[ROWS * COLS], go[ROWS * COLS], wq_ref[ROWS * COLS], gw_ref[ROWS * COLS];
        float scale[ROWS * COLS], gs_ref[ROWS * COLS], wq[ROWS * COLS], gs[ROWS * COLS];
        uint8_t zero[ROWS * COLS];
        const int64_t shape[2] = {ROWS, COLS}, gshape[2] = {ROWS, groups};
        read(CASES[k].name, "w", 2, shape, w);
        read(CASES[k].name, "grad_out", 2, shape, go);
        read(CASES[k].name, "w_q", 2, shape, wq_ref);
        read(CASES[k].name, "grad_w", 2, shape, gw_ref);
        read(CASES[k].name, "scale", 2, gshape, scale);
        read(CASES[k].name, "grad_scale", 2, gshape, gs_ref);
        char zname[96];
        snprintf(zname, sizeof zname, "%s.zero", CASES[k].name);
        const ad_st_entry *ze = ad_safetensors_find(&fx, zname);
        ad_tensor zt;
        CHECK(ze && ad_safetensors_view(&fx, ze, &zt) == AD_OK && zt.dtype == AD_U8);
        if (!ze) continue;
        memcpy(zero, zt.data, (size_t)(ROWS * groups));
        ad_qat_weight qw = {.spec = {CASES[k].bits, G, CASES[k].symmetric},
                            .rows = ROWS,
                            .cols = COLS,
                            .groups = groups,
                            .scale = scale,
                            .zero = CASES[k].symmetric ? NULL : zero};
        ad_qat_fake_quantize(&qw, w, wq);
        ad_qat_backward(&qw, w, go, gs); /* go becomes dL/dw in place */
        double e_wq = 0, e_gw = 0, e_gs = 0;
        int clamped = 0;
        for (int i = 0; i < ROWS * COLS; i++) {
            e_wq = fmax(e_wq, fabs(wq[i] - wq_ref[i]));
            e_gw = fmax(e_gw, fabs(go[i] - gw_ref[i]) / fmax(1.0, fabs(gw_ref[i])));
            clamped += gw_ref[i] == 0;
        }
        for (int i = 0; i < ROWS * groups; i++)
            e_gs = fmax(e_gs, fabs(gs[i] - gs_ref[i]) / fmax(1.0, fabs(gs_ref[i])));
        /* torch's grad_scale trick can move s by an ulp in the forward pass, and its weight
         * gradient is (g * s) / s; the scale gradients are sums of G float products. */
        CHECK_MSG(e_wq <= 1e-6, "%s: fake-quantized weight differs by %g", CASES[k].name, e_wq);
        CHECK_MSG(e_gw <= 1e-6, "%s: weight gradient differs by %g", CASES[k].name, e_gw);
        CHECK_MSG(e_gs <= 1e-5, "%s: scale gradient differs by %g", CASES[k].name, e_gs);
        CHECK_MSG(clamped > 0, "%s: the fixture must clamp some weights", CASES[k].name);
    }
}

/* Whatever the (learned, not f16) scale, export + dequantize gives back the forward's weight. */
static void test_export_is_exact(void) {
    ad_rng rng;
    ad_rng_init(&rng, (uint64_t)time(NULL), 3);
    for (size_t k = 0; k < sizeof CASES / sizeof CASES[0]; k++) {
        const int G = CASES[k].group, rows = 5, cols = 4 * G, groups = cols / G;
        float *w = malloc(sizeof(float) * (size_t)(rows * cols)),
              *wq = malloc(sizeof(float) * (size_t)(rows * cols)),
              *back = malloc(sizeof(float) * (size_t)(rows * cols)),
              *scale = malloc(sizeof(float) * (size_t)(rows * groups));
        uint8_t *zero = malloc((size_t)(rows * groups));
        for (int i = 0; i < rows * cols; i++)
            w[i] = 0.05f * ad_rng_normal(&rng);
        for (int g = 0; g < rows * groups; g++) {
            scale[g] = (0.2f + ad_rng_uniform(&rng)) * 0.1f / (float)(1 << (CASES[k].bits - 1));
            zero[g] = (uint8_t)ad_rng_below(&rng, 1u << CASES[k].bits);
        }
        scale[0] = -1.0f; /* a learned scale gone negative is clamped, not used */
        ad_qat_weight qw = {.spec = {CASES[k].bits, G, CASES[k].symmetric},
                            .rows = rows,
                            .cols = cols,
                            .groups = groups,
                            .scale = scale,
                            .zero = CASES[k].symmetric ? NULL : zero};
        ad_qat_clamp_scales(&qw);
        CHECK(scale[0] > 0 && scale[0] < 1e-4f);
        ad_qat_fake_quantize(&qw, w, wq);
        ad_quant_tensor q;
        CHECK_OK(ad_quant_alloc(&q, &qw.spec, rows, cols, "w"));
        ad_qat_export(&qw, w, &q);
        ad_quant_dequantize_rows(&q, 0, rows, back);
        CHECK_MSG(memcmp(wq, back, sizeof(float) * (size_t)(rows * cols)) == 0,
                  "%s: exported codes do not give the trained weight", CASES[k].name);
        /* and it is a real quantization: at most 2^bits distinct values per group */
        int distinct_ok = 1;
        for (int r = 0; r < rows; r++)
            for (int g = 0; g < groups; g++) {
                float vals[256];
                int n = 0;
                for (int i = 0; i < G; i++) {
                    float v = wq[r * cols + g * G + i];
                    int seen = 0;
                    for (int j = 0; j < n && !seen; j++)
                        seen = vals[j] == v;
                    if (!seen && n < 256) vals[n++] = v;
                }
                distinct_ok &= n <= (1 << CASES[k].bits);
            }
        CHECK(distinct_ok);
        ad_quant_free(&q);
        free(w), free(wq), free(back), free(scale), free(zero);
    }
}

/* Learned scales live as log s: the optimizer's step is relative, the forward pass sees exp. */
static void test_log_scales(void) {
    float scale[4] = {0}, log_scale[4] = {logf(0.02f), logf(0.5f), -30.0f, 20.0f};
    ad_qat_weight qw = {.spec = {4, 8, true},
                        .rows = 1,
                        .cols = 32,
                        .groups = 4,
                        .scale = scale,
                        .log_scale = log_scale};
    ad_qat_sync_scales(&qw);
    CHECK_NEAR(scale[0], 0.02, 1e-8);
    CHECK_NEAR(scale[1], 0.5, 1e-7);
    CHECK(scale[2] > 0 && scale[2] < 1e-4f); /* clamped to f16's smallest normal */
    CHECK(scale[3] == 65504.0f);             /* and to its largest */
    float g[4] = {1, 2, 3, 4};
    ad_qat_log_scale_grad(&qw, g);
    CHECK(g[0] == ad_qat_scale(&qw, 0) * 1.0f && g[1] == 1.0f); /* 0.5 is an f16 value */
}

int main(void) {
    if (ad_safetensors_open(&fx, AUDISTILL_FIXTURES "/qat/lsq.safetensors") < 0) {
        fprintf(stderr, "%s\n", ad_error());
        return 1;
    }
    RUN(test_against_torch);
    RUN(test_export_is_exact);
    RUN(test_log_scales);
    ad_safetensors_close(&fx);
    return test_report();
}
