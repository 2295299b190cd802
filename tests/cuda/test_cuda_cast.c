/* The bf16 cast kernels against the host reference conversion, bit for bit, on random
 * values plus the edge cases (ties, NaN, inf, subnormals). Skips without a GPU. */
#include <stdint.h>

#include "../../cuda/backend_cuda.h"
#include "core/rng.h"
#include "core/tensor.h"
#include "test.h"

#define N_VALUES (1 << 20)

static void test_cast_matches_host(void) {
    float *host = malloc(sizeof(float) * N_VALUES);
    uint16_t *expected = malloc(sizeof(uint16_t) * N_VALUES);
    uint16_t *got = malloc(sizeof(uint16_t) * N_VALUES);
    float *back = malloc(sizeof(float) * N_VALUES);
    ad_rng rng;
    ad_rng_init(&rng, 1234, 0);
    for (int i = 0; i < N_VALUES; i++) {
        uint32_t bits = ad_rng_u32(&rng);
        memcpy(&host[i], &bits, sizeof bits); /* every bit pattern, NaNs and infs included */
    }
    const float edge[] = {1.00390625f, 1.01171875f, -0.0f, INFINITY, -INFINITY, NAN, 1e-40f};
    memcpy(host, edge, sizeof edge);
    for (int i = 0; i < N_VALUES; i++)
        expected[i] = ad_f32_to_bf16(host[i]);

    void *d_f32 = NULL, *d_bf16 = NULL;
    CHECK_OK(ad_cuda_malloc(&d_f32, sizeof(float) * N_VALUES));
    CHECK_OK(ad_cuda_malloc(&d_bf16, sizeof(uint16_t) * N_VALUES));
    CHECK_OK(ad_cuda_memcpy_h2d(d_f32, host, sizeof(float) * N_VALUES));
    CHECK_OK(ad_cuda_cast_f32_to_bf16(d_bf16, d_f32, N_VALUES));
    CHECK_OK(ad_cuda_memcpy_d2h(got, d_bf16, sizeof(uint16_t) * N_VALUES));
    int mismatches = 0;
    for (int i = 0; i < N_VALUES; i++)
        mismatches += got[i] != expected[i];
    CHECK_MSG(mismatches == 0, "%d of %d bf16 casts differ from the host", mismatches, N_VALUES);

    CHECK_OK(ad_cuda_cast_bf16_to_f32(d_f32, d_bf16, N_VALUES));
    CHECK_OK(ad_cuda_memcpy_d2h(back, d_f32, sizeof(float) * N_VALUES));
    mismatches = 0;
    for (int i = 0; i < N_VALUES; i++) {
        float want = ad_bf16_to_f32(expected[i]);
        mismatches += memcmp(&want, &back[i], sizeof want) != 0;
    }
    CHECK_MSG(mismatches == 0, "%d widening casts differ", mismatches);
    ad_cuda_free(d_f32);
    ad_cuda_free(d_bf16);
    free(host);
    free(expected);
    free(got);
    free(back);
}

int main(void) {
    if (ad_cuda_available() < 0) TEST_SKIP("%s", ad_error());
    char name[256];
    if (ad_cuda_describe(0, name, sizeof name) == AD_OK) printf("device: %s\n", name);
    RUN(test_cast_matches_host);
    return test_report();
}
