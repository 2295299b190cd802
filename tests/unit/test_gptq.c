/* GPTQ against round-to-nearest on the same weights: on correlated calibration inputs its
 * output error ||X (W - W_q)^T|| must be clearly lower (the point of the method), its codes
 * obey the same format, and columns never activated are zeroed. */
#include <unistd.h>

#include "compress/gptq.h"
#include "core/rng.h"
#include "test.h"

static double output_error(const float *X, int64_t n, const float *W, const float *Wq, int64_t rows,
                           int64_t cols) {
    double total = 0;
    for (int64_t s = 0; s < n; s++) {
        for (int64_t r = 0; r < rows; r++) {
            double d = 0;
            for (int64_t c = 0; c < cols; c++)
                d += (double)X[s * cols + c] * (W[r * cols + c] - Wq[r * cols + c]);
            total += d * d;
        }
    }
    return total;
}

static void test_gptq_beats_rtn(void) {
    ad_rng rng;
    ad_rng_init(&rng, (uint64_t)getpid(), 31);
    const int64_t rows = 24, cols = 128, n = 512, k = 24;
    float *W = malloc(sizeof(float) * rows * cols), *X = malloc(sizeof(float) * n * cols);
    float *A = malloc(sizeof(float) * k * cols), *Wq = malloc(sizeof(float) * rows * cols);
    double *H = malloc(sizeof(double) * cols * cols);
    for (int64_t i = 0; i < rows * cols; i++)
        W[i] = ad_rng_normal(&rng) * 0.1f;
    /* Low-rank correlated activations plus a little noise, as real layer inputs are. */
    for (int64_t i = 0; i < k * cols; i++)
        A[i] = ad_rng_normal(&rng);
    for (int64_t s = 0; s < n; s++) {
        float z[24];
        for (int j = 0; j < k; j++)
            z[j] = ad_rng_normal(&rng);
        for (int64_t c = 0; c < cols; c++) {
            double v = 0.05 * ad_rng_normal(&rng);
            for (int j = 0; j < k; j++)
                v += z[j] * A[j * cols + c];
            X[s * cols + c] = (float)v;
        }
    }
    const int widths[] = {4, 3};
    for (int b = 0; b < 2; b++) {
        for (int sym = 0; sym < 2; sym++) {
            ad_quant_spec spec = {widths[b], 32, sym};
            ad_quant_tensor q;
            CHECK_OK(ad_quant_alloc(&q, &spec, rows, cols, "w"));
            CHECK_OK(ad_quant_rtn(&q, W));
            ad_quant_dequantize_rows(&q, 0, rows, Wq);
            double rtn = output_error(X, n, W, Wq, rows, cols);
            memset(H, 0, sizeof(double) * cols * cols);
            int64_t count = 0;
            /* two batches: the mean must still be exact */
            CHECK_OK(ad_gptq_hessian_add(H, cols, X, n / 2, &count));
            CHECK_OK(ad_gptq_hessian_add(H, cols, X + (n / 2) * cols, n - n / 2, &count));
            CHECK(count == n);
            ad_gptq_options opts = {.damp_percent = 0.01};
            CHECK_OK(ad_gptq_quantize(&q, W, H, &opts, "w"));
            ad_quant_dequantize_rows(&q, 0, rows, Wq);
            double gptq = output_error(X, n, W, Wq, rows, cols);
            printf("%d-bit %s: output error RTN %.4g, GPTQ %.4g (ratio %.3f)\n", spec.bits,
                   sym ? "symmetric" : "zero-point", rtn, gptq, gptq / rtn);
            CHECK_MSG(gptq < 0.8 * rtn, "GPTQ %.4g not clearly below RTN %.4g", gptq, rtn);
            ad_quant_free(&q);
        }
    }
    free(W);
    free(X);
    free(A);
    free(Wq);
    free(H);
}

static void test_dead_columns_and_refusal(void) {
    const int64_t rows = 4, cols = 32;
    float W[4 * 32], Wq[4 * 32], X[64 * 32];
    ad_rng rng;
    ad_rng_init(&rng, 5, 0);
    for (int i = 0; i < rows * cols; i++)
        W[i] = ad_rng_normal(&rng);
    for (int s = 0; s < 64; s++)
        for (int c = 0; c < cols; c++)
            X[s * cols + c] = c == 7 ? 0.0f : ad_rng_normal(&rng);
    double H[32 * 32] = {0};
    int64_t count = 0;
    CHECK_OK(ad_gptq_hessian_add(H, cols, X, 64, &count));
    ad_quant_spec spec = {4, 32, false};
    ad_quant_tensor q;
    CHECK_OK(ad_quant_alloc(&q, &spec, rows, cols, "w"));
    CHECK_OK(ad_gptq_quantize(&q, W, H, NULL, "w"));
    ad_quant_dequantize_rows(&q, 0, rows, Wq);
    for (int r = 0; r < rows; r++)
        CHECK(Wq[r * cols + 7] == 0.0f);
    W[3] = INFINITY;
    CHECK_FAILS_WITH(ad_gptq_quantize(&q, W, H, NULL, "layers.1.fc1.weight"),
                     "layers.1.fc1.weight: the weight has NaN");
    ad_quant_free(&q);
}

int main(void) {
    RUN(test_gptq_beats_rtn);
    RUN(test_dead_columns_and_refusal);
    return test_report();
}
