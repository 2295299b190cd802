/* Group quantization: bit packing for every width, round-to-nearest error within the analytic
 * bound (half a step, plus the f16 rounding of the scale) on fresh random weights, exact zeros,
 * sizes, and refusals. */
#include <unistd.h>

#include "compress/quant.h"
#include "core/rng.h"
#include "test.h"

static void test_packing(void) {
    ad_rng rng;
    ad_rng_init(&rng, (uint64_t)getpid(), 21);
    const int widths[] = {8, 4, 3, 2};
    for (int w = 0; w < 4; w++) {
        int bits = widths[w];
        uint8_t row[96] = {0};
        uint32_t codes[96 * 8 / 2];
        int n = 96 * 8 / bits;
        for (int j = 0; j < n; j++) {
            codes[j] = ad_rng_u32(&rng) & ((1u << bits) - 1);
            ad_quant_set_code(row, bits, j, codes[j]);
        }
        int bad = 0;
        for (int j = 0; j < n; j++)
            bad += ad_quant_get_code(row, bits, j) != codes[j];
        CHECK_MSG(bad == 0, "%d-bit: %d codes read back wrong", bits, bad);
    }
    /* The documented layouts, bit for bit. */
    uint8_t r4[1] = {0}, r3[3] = {0};
    ad_quant_set_code(r4, 4, 0, 0x3);
    ad_quant_set_code(r4, 4, 1, 0xa);
    CHECK(r4[0] == 0xa3);
    for (int j = 0; j < 8; j++)
        ad_quant_set_code(r3, 3, j, (uint32_t)j);
    /* codes 0..7 at 3 bits each, little-endian: 0b111110101100011010001000 */
    CHECK(r3[0] == 0x88 && r3[1] == 0xc6 && r3[2] == 0xfa);
}

static void test_rtn_bound(void) {
    ad_rng rng;
    ad_rng_init(&rng, (uint64_t)getpid(), 22);
    const int64_t rows = 17, cols = 256;
    float *w = malloc(sizeof(float) * rows * cols), *d = malloc(sizeof(float) * rows * cols);
    const int widths[] = {8, 4, 3, 2}, groups[] = {32, 64, 128};
    for (int bi = 0; bi < 4; bi++) {
        for (int gi = 0; gi < 3; gi++) {
            for (int sym = 0; sym < 2; sym++) {
                ad_quant_spec spec = {widths[bi], groups[gi], sym};
                for (int64_t i = 0; i < rows * cols; i++)
                    w[i] = ad_rng_normal(&rng) * (i % 7 == 0 ? 3.0f : 0.5f) + (sym ? 0 : 0.2f);
                w[5] = 0.0f; /* zero must survive exactly */
                ad_quant_tensor q;
                CHECK_OK(ad_quant_alloc(&q, &spec, rows, cols, "w"));
                CHECK_OK(ad_quant_rtn(&q, w));
                ad_quant_dequantize_rows(&q, 0, rows, d);
                int64_t G = spec.group_size, ng = cols / G, violations = 0;
                int maxq = (1 << spec.bits) - 1;
                for (int64_t r = 0; r < rows; r++) {
                    for (int64_t g = 0; g < ng; g++) {
                        float scale = ad_f16_to_f32(q.scales[r * ng + g]);
                        /* half a step, plus the grid's drift from storing the scale in f16 */
                        double bound = scale * (0.5 + (maxq + 1) * ldexp(1.0, -10)) + 1e-7;
                        for (int64_t i = 0; i < G; i++) {
                            int64_t k = r * cols + g * G + i;
                            if (fabs((double)w[k] - d[k]) > bound) violations++;
                        }
                    }
                }
                CHECK_MSG(violations == 0, "%d-bit g%d %s: %lld values beyond the bound", spec.bits,
                          spec.group_size, sym ? "sym" : "asym", (long long)violations);
                CHECK(d[5] == 0.0f);
                CHECK(ad_quant_bytes(&spec, rows, cols) ==
                      rows * cols * spec.bits / 8 + rows * ng * (sym ? 2 : 3));
                ad_quant_free(&q);
            }
        }
    }
    free(w);
    free(d);
}

static void test_refusals(void) {
    ad_quant_tensor q;
    ad_quant_spec bad_bits = {5, 32, true}, odd_group = {4, 12, true}, g64 = {4, 64, false};
    CHECK_FAILS_WITH(ad_quant_alloc(&q, &bad_bits, 4, 64, "w"), "5-bit");
    CHECK_FAILS_WITH(ad_quant_alloc(&q, &odd_group, 4, 48, "w"), "multiple of 8");
    CHECK_FAILS_WITH(ad_quant_alloc(&q, &g64, 4, 96, "layers.0.mlp.up_proj.weight"),
                     "layers.0.mlp.up_proj.weight: group size 64 does not divide the row width 96");
    ad_quant_spec ok = {4, 32, true};
    float w[64] = {0};
    w[3] = NAN;
    CHECK_OK(ad_quant_alloc(&q, &ok, 2, 32, "w"));
    CHECK_FAILS_WITH(ad_quant_rtn(&q, w), "NaN");
    ad_quant_free(&q);
}

int main(void) {
    RUN(test_packing);
    RUN(test_rtn_bound);
    RUN(test_refusals);
    return test_report();
}
