/* The optimizer as backend ops (`train.optimizer: device`): the gradient norm, clipping and
 * AdamW run on the weights where they live, with the Adam moments beside them, and nothing
 * crosses to the host per step; host copies are refreshed only for checkpoints and the final
 * model. The step is ad_dist_opt_step's (train/dist_step.h) computed with the table's ops.
 *
 * Over several ranks the gradients are summed where they are, by grad_comm: NCCL on GPUs, the
 * host communicator for the CPU backend (whose tensors are host memory). Scalars (the norm's
 * partial sums) go through host_comm.
 * - Plain: each gradient is allreduced in place, then every rank takes the one-process step on
 *   the full tensors (the same inputs everywhere, so the same weights).
 * - ZeRO-1 (zero): every tensor of n elements is cut into world slices of s = ceil(n / world)
 *   elements, rank r owning [r*s, min(r*s + s, n)). A rank holds only its slices' moments. A
 *   step reduce-scatters each gradient (rank r receives its slice summed), takes the global norm
 *   as the sum over ranks of the slices' sums of squares, runs AdamW on its slices and
 *   all-gathers each weight. Tensors the world does not divide go through a padded device
 *   scratch of world * s floats. Checkpoints hold the full moments, gathered first
 *   (ad_device_opt_gather_moments), so any rank count and either optimizer can resume them.
 * A student computing in bf16 (train/param_table.h) has bf16 GEMM weights: AdamW updates their
 * fp32 masters on the device (with ZeRO-1 a rank holds only its slices' masters) and writes the
 * bf16 weights in the same pass; ZeRO-1 all-gathers the bf16 weights (slices of even length, so
 * they travel as float words), and the masters are gathered for checkpoints like the moments. */
#ifndef AUDISTILL_TRAIN_DEVICE_OPT_H
#define AUDISTILL_TRAIN_DEVICE_OPT_H

#include <stdbool.h>
#include <stdint.h>

#include "dist/comm.h"
#include "train/optim.h"
#include "train/param_table.h"

/* Moves the optimizer onto t's backend: device moments (this rank's slices with zero) made from
 * the host ones (zeros or a checkpoint's), which ranks other than 0 then free, with their host
 * mirrors of the weights. grad_comm and
 * host_comm are NULL for one process; they are borrowed, not owned. Not for quantization-aware runs
 * (their masters are host-only). */
int ad_device_opt_init(ad_param_table *t, ad_comm *grad_comm, ad_comm *host_comm, bool zero);

/* Collective over the ranks. The gradients (this rank's share, pre-scaled so that the sum over
 * ranks is the global gradient) become the global ones, clipped to max_norm (0 = off), then
 * AdamW with step count t and learning rate lr. *norm receives the global norm before clipping;
 * when it is not finite nothing is updated (every rank sees the same norm). */
int ad_device_opt_step(ad_param_table *t, double max_norm, const ad_adamw_config *c, double lr,
                       int64_t step, double *norm);

/* Collective with zero: the full moments (and the masters of bf16 weights) into rank 0's host
 * copies (params[i].m / .v / .param), before a checkpoint; the other ranks free their host moments
 * and weight mirrors once their slices are on the device, since only rank 0 writes checkpoints (at
 * 7B, 61 GiB of host memory per other rank). Without zero, ad_params_sync_host brings them (rank 0
 * too). */
int ad_device_opt_gather_moments(ad_param_table *t);

/* Bytes of Adam moments this rank holds on the device. */
int64_t ad_device_opt_state_bytes(const ad_param_table *t);

#endif
