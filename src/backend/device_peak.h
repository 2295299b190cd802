/* A GPU's dense bf16 tensor-core peak, by the name the driver gives it, for the MFU that
 * `audistill train --benchmark` and tests/gpu/check.sh report: the model FLOPs the op table
 * counted per second, over this peak. */
#ifndef AUDISTILL_BACKEND_DEVICE_PEAK_H
#define AUDISTILL_BACKEND_DEVICE_PEAK_H

/* NVIDIA's data-sheet figure in TFLOP/s (dense, bf16 inputs, fp32 accumulation, boost clock)
 * for a device name as cudaDeviceProp.name spells it ("NVIDIA H100 80GB HBM3", "NVIDIA A100-
 * SXM4-80GB", "NVIDIA H100 PCIe"); 0 for a name the table does not know, or NULL. */
double ad_device_peak_bf16_tflops(const char *device_name);

/* The peak of this run: AUDISTILL_PEAK_TFLOPS when set (a card the table lacks, or one held to
 * lower clocks), else the table's; 0 when neither knows. Fails on a variable that is not a
 * positive number. */
int ad_device_peak_for_run(const char *device_name, double *tflops);

#define AD_PEAK_TFLOPS_ENV "AUDISTILL_PEAK_TFLOPS"

#endif
