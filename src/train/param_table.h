/* The trainer's parameter table: which weights the optimizer updates and where their host
 * copies live, the moves between those copies and the backend (gradients down, weights up),
 * and the weights and optimizer state a checkpoint holds. */
#ifndef AUDISTILL_TRAIN_PARAM_TABLE_H
#define AUDISTILL_TRAIN_PARAM_TABLE_H

#include <stdbool.h>

#include "dist/comm.h"
#include "io/safetensors.h"
#include "model/train_graph.h"
#include "model/weights.h"
#include "train/optim.h"
#include "train/qat.h"

/* On a device backend the optimizer keeps host mirrors of the trainable weights and their
 * gradients: gradients come down after the backward pass, the updated weights go back up. For
 * the small models trained here that traffic is a few ms per step. With the optimizer on the
 * device (train/device_opt.h, `train.optimizer: device`) the norm, clipping and AdamW run as
 * backend ops on the weights where they live, with the moments beside them, and nothing moves
 * per step: the host mirrors and moments are refreshed (ad_params_sync_host) only before a
 * checkpoint or the final model is written.
 *
 * Quantization-aware training (a group-quantized student) mirrors on every backend: the
 * mirrors are the f32 masters, and what goes up is what the exported model will hold, the
 * fake-quantized weight (train/qat.h) or, for the weights kept unquantized, its bf16 value.
 * Learned scales are extra host-only parameters ("<weight>.qat_scale").
 *
 * A student computing in bf16 (`train.student_weights`) is loaded with its GEMM weights in bf16
 * on the device (ad_model_load_mixed), so no GEMM converts them again. The trained ones' fp32
 * masters are the file's values, which become the host mirrors (host optimizer: what goes up is
 * rounded on the way); the frozen ones' stay with the model for checkpoints. With the optimizer on
 * the device, fp32 device copies of the masters (dev_master; with ZeRO-1 only this rank's slice)
 * are what AdamW updates, writing the bf16 weights in the same pass (train/device_opt.h). */
typedef struct {
    ad_weight_spec *specs;
    int n_specs;
    ad_param_ref *params; /* trainable tensors (host memory) */
    int n_params;
    ad_backend *be;
    bool mirrored;                /* params live on a device: dev_w/dev_g are the device tensors */
    ad_tensor **dev_w, **dev_g;   /* NULL for the host-only scale parameters */
    ad_qat qat;                   /* qat.n > 0: quantization-aware training */
    const ad_qat_weight **qat_of; /* per param: its quantizer, or NULL */
    int *scale_of;                /* per param: the index of its scale parameter, or -1 */
    float *staging;               /* one weight's upload values */
    /* train/device_opt.h: the optimizer as backend ops */
    bool on_device;                 /* opt_m/opt_v in use */
    bool host_stale;                /* steps since the host copies were refreshed */
    ad_tensor *opt_m, *opt_v;       /* per param: its moments (zero: this rank's slice's) */
    ad_comm *grad_comm, *host_comm; /* several ranks (else NULL): borrowed */
    bool zero;                      /* ZeRO-1: moments of slices */
    int64_t *slice_at;              /* per param: where its slice starts (else 0) */
    ad_tensor zero_scratch;         /* zero: for tensors the ranks do not divide */
    int n_bf16; /* trainable weights the model holds in bf16 (fp32 masters on the host) */
    ad_tensor *dev_master; /* device optimizer, per param: the bf16 weight's fp32 master on the
                              device (this rank's slice with zero); data NULL: dev_w is f32 */
} ad_param_table;

/* The trainable weights of g's model (those with gradients), with AdamW moments; a
 * group-quantized student_dir makes it quantization-aware (learn_scales: LSQ scales). */
int ad_params_build(ad_train_graph *g, const char *student_dir, bool learn_scales,
                    ad_param_table *t);
void ad_params_free(ad_param_table *t);
/* Device gradients -> host mirrors; quantized weights' gradients through the quantizer. */
int ad_params_download_grads(ad_param_table *t);
/* Host mirrors -> device (fake-quantized or bf16-rounded when quantization-aware). */
int ad_params_upload(ad_param_table *t);
/* Quantization-aware: rounds the frozen unquantized weights to bf16 once. */
int ad_params_round_frozen(ad_model *m, ad_param_table *t);
/* A weight the GEMMs read as a matrix (encoder and decoder linears, the projector, an untied
 * lm_head): what a student computing in bf16 stores in bf16, trained or frozen. */
bool ad_params_is_gemm_weight(const ad_weight_spec *s);
/* Host values of weight spec s: the mirror (the master), the fp32 values ad_model_load_mixed
 * kept for a frozen bf16 weight, else a download into *owned. */
int ad_params_weight_values(ad_model *m, const ad_param_table *t, int s, const float **data,
                            float **owned);
/* Every weight (HF names) and the optimizer state (moments, learned scales) as write items;
 * returns the number of optimizer items. Free names[0 .. 3 * n_params) and owned[0 .. n_specs). */
int ad_params_checkpoint_items(ad_model *m, const ad_param_table *t, ad_st_write_item **model_items,
                               ad_st_write_item **opt_items, char ***names, void ***owned);
/* Restores the moments (and learned scales) from ckpt_dir/optimizer.safetensors. */
int ad_params_load_moments(const char *ckpt_dir, ad_param_table *t);

/* Device weights and moments -> host mirrors (before a checkpoint or the final model); with
 * ZeRO-1 the weights only (the moments: ad_device_opt_gather_moments). */
int ad_params_sync_host(ad_param_table *t);

#endif
