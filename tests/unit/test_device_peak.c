/* The dense bf16 peaks behind the MFU of `train --benchmark` and check.sh: each card's name as
 * its driver reports it (nvidia-smi / cudaDeviceProp.name) against NVIDIA's data-sheet figure
 * (dense, bf16 with fp32 accumulation: half the "with sparsity" figure), the variants that
 * share a model number told apart, look-alike names not taken for another card, and the
 * AUDISTILL_PEAK_TFLOPS override (taken when set, refused when malformed). */
#include "backend/device_peak.h"

#include <stdlib.h>

#include "test.h"

typedef struct {
    const char *name;
    double tflops; /* 0: unknown */
} card;

static const card CARDS[] = {
    {"NVIDIA H100 80GB HBM3", 989.4}, /* SXM5: 1,979 with sparsity */
    {"NVIDIA H100 PCIe", 756.5},      /* 1,513 */
    {"NVIDIA H100 NVL", 835.5},       /* 1,671 */
    {"NVIDIA H200", 989.4},           /* SXM: 1,979 */
    {"NVIDIA H200 NVL", 835.5},       /* 1,671 */
    {"NVIDIA GH200 480GB", 989.4},    /* the Hopper of Grace Hopper */
    {"NVIDIA A100-SXM4-80GB", 312.0}, /* 624 */
    {"NVIDIA A100-PCIE-40GB", 312.0}, /* 624 */
    {"NVIDIA A100 80GB PCIe", 312.0}, /* 624 */
    {"NVIDIA A10", 125.0},            /* 250 */
    {"NVIDIA A30", 165.0},            /* 330 */
    {"NVIDIA L4", 121.0},             /* 242 */
    {"NVIDIA L40S", 362.05},          /* 733 */
    {"NVIDIA L40", 181.05},           /* 362 */
    {"NVIDIA B200", 2250.0},          /* 4,500 */
    {"NVIDIA GeForce RTX 4090", 0.0}, /* not in the table */
    {"NVIDIA A1000", 0.0},            /* neither A100 nor A10 */
    {"NVIDIA L4X", 0.0},              /* nor L4 */
    {"CUDA emulator on the CPU (tests/cuda_emu)", 0.0},
    {"", 0.0},
};

int main(void) {
    unsetenv(AD_PEAK_TFLOPS_ENV);
    for (size_t i = 0; i < sizeof CARDS / sizeof CARDS[0]; i++) {
        const double got = ad_device_peak_bf16_tflops(CARDS[i].name);
        CHECK_MSG(got == CARDS[i].tflops, "'%s': %g TFLOP/s, expected %g", CARDS[i].name, got,
                  CARDS[i].tflops);
        double run = -1;
        CHECK_OK(ad_device_peak_for_run(CARDS[i].name, &run));
        CHECK_MSG(run == CARDS[i].tflops, "'%s' for a run: %g", CARDS[i].name, run);
    }
    CHECK(ad_device_peak_bf16_tflops(NULL) == 0.0);

    /* the override wins over the table, and names a peak for unknown cards */
    double run = 0;
    setenv(AD_PEAK_TFLOPS_ENV, "400.5", 1);
    CHECK_OK(ad_device_peak_for_run("NVIDIA H100 80GB HBM3", &run));
    CHECK_NEAR(run, 400.5, 0);
    CHECK_OK(ad_device_peak_for_run("NVIDIA GeForce RTX 4090", &run));
    CHECK_NEAR(run, 400.5, 0);
    setenv(AD_PEAK_TFLOPS_ENV, "", 1); /* empty: as if unset */
    CHECK_OK(ad_device_peak_for_run("NVIDIA A100-SXM4-80GB", &run));
    CHECK_NEAR(run, 312.0, 0);
    const char *bad[] = {"fast", "0", "-3", "12x", "nan", "inf"};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        setenv(AD_PEAK_TFLOPS_ENV, bad[i], 1);
        CHECK_FAILS_WITH(ad_device_peak_for_run("NVIDIA H100 PCIe", &run), AD_PEAK_TFLOPS_ENV);
    }
    unsetenv(AD_PEAK_TFLOPS_ENV);
    return test_report();
}
