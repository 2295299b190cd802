/* Per-op profile of a backend: every op of the table timed (the device synchronised before and
 * after, so each op's time is its own, launch latency included), counted, and credited with
 * its useful FLOPs and the bytes of its tensors, so a slow step shows which ops hold it back and
 * how far each is from the card's peak. GEMM-like ops are keyed by the weight they multiply
 * ("linear_backward language_model.model.layers.#.mlp.down_proj.weight"), other ops by name.
 * On CUDA builds each op is also an NVTX range, for Nsight Systems.
 *
 * Profiling changes the backend's op table in place (the original entries are kept and called);
 * it costs one synchronisation per op, so profile a few steps, not a whole run. */
#ifndef AUDISTILL_BACKEND_PROFILE_H
#define AUDISTILL_BACKEND_PROFILE_H

#include <stdbool.h>
#include <stdio.h>

#include "backend/backend.h"

/* Starts (or restarts, clearing the counts) profiling `be`. */
int ad_backend_profile_start(ad_backend *be);
/* Counts the ops' FLOPs (the same credits) without timing anything or synchronising: what
 * `train --benchmark` reports as TFLOP per step. Nothing when a profile runs already (it counts
 * them too). */
int ad_backend_count_flops(ad_backend *be);
/* Whether a timed profile runs (ad_backend_profile_start, not only counting FLOPs). */
bool ad_backend_profile_timing(const ad_backend *be);
/* FLOPs credited since the (re)start, or -1 when neither runs. */
double ad_backend_profile_flops(const ad_backend *be);
/* Restores the op table and frees the counts; nothing when not profiling. */
void ad_backend_profile_stop(ad_backend *be);
/* Writes the table, slowest first, at most max_rows rows (0: all), to `out`. Returns the
 * seconds spent in ops since the start, or -1 when not profiling (or only counting FLOPs). */
double ad_backend_profile_report(ad_backend *be, FILE *out, int max_rows);

#endif
