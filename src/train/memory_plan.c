#include "train/memory_plan.h"

#include <stdlib.h>
#include <string.h>

#include "backend/cuda_sizes.h"
#include "core/error.h"
#include "io/file.h"
#include "io/hf_config.h"
#include "model/model.h"
#include "model/train_graph.h"
#include "model/weights.h"
#include "train/param_table.h"

static int load_config(const char *dir, ad_model_config *cfg) {
    char *path = ad_path_join(dir, "config.json");
    int rc = path ? ad_model_config_load(path, cfg) : AD_ERR;
    free(path);
    return rc;
}

/* All parameters; *gemm of them are GEMM weights (the ones a bf16 student stores in bf16,
 * train/param_table.h), *trainable train, *trainable_gemm of those are GEMM weights. */
static int64_t count_params(const ad_model_config *cfg, const ad_trainable *train, int64_t *gemm,
                            int64_t *trainable, int64_t *trainable_gemm) {
    ad_weight_spec *specs;
    int n;
    if (ad_weight_specs(cfg, &specs, &n) < 0) return -1;
    int64_t total = 0;
    *gemm = *trainable = *trainable_gemm = 0;
    for (int i = 0; i < n; i++) {
        const int64_t k = ad_weight_spec_numel(&specs[i]);
        const bool is_gemm = ad_params_is_gemm_weight(&specs[i]);
        total += k;
        *gemm += is_gemm ? k : 0;
        if (!train || !ad_trainable_has(train, specs[i].name, specs[i].component)) continue;
        *trainable += k;
        *trainable_gemm += is_gemm ? k : 0;
    }
    free(specs);
    return total;
}

/* Whether the job's attention goes through the flash kernels under GEMMs in bf16 or not:
 * train.attention: flash; or auto, which leaves AUDISTILL_CUDA_ATTENTION in force and otherwise
 * takes them under bf16 GEMMs (cuda/backend_cuda.h). */
static bool job_flash(const ad_train_job *job, bool bf16) {
    const char *path = job->train.attention, *env = getenv(AD_CUDA_ATTENTION_ENV);
    if (!strcmp(path, "auto") && env && *env) path = env;
    return !strcmp(path, "flash") || (!strcmp(path, "auto") && bf16);
}

/* The CUDA backend's own buffers, which grow to the largest call and are kept (cuda/):
 * cuBLASLt's workspace; the bf16 copies of GEMM operands under precision bf16 (the largest
 * f32 weight, the largest activation matrix) or the f32 tiles of bf16 weights under fp32;
 * attention's score buffers (each capped, two of them, bf16 copies half that) and its bf16
 * copies of q, k, v and dO, of which the flash kernels need only dO's under bf16 (their dK/dV
 * kernel pipes its query tiles from it, at head dims from 32) besides two floats per query row;
 * under bf16, the f32 copy of a bf16 output whose bias is f32. The sizes are cuda/'s own
 * (backend/cuda_sizes.h). */
static size_t cuda_scratch_bytes(const ad_model_config *c, const ad_graph_limits *lim, bool bf16,
                                 bool flash) {
    const size_t workspace = AD_CUDA_LT_WORKSPACE_BYTES,
                 score_cap = AD_CUDA_ATTENTION_SCRATCH_BYTES;
    const size_t clips = (size_t)lim->max_clips, enc_t = (size_t)(lim->max_frames + 1) / 2,
                 dec_t = (size_t)lim->max_len;
    size_t gemm = 4 * AD_CUDA_GEMM_TILE_FLOATS; /* fp32: a tile of a bf16 weight as f32 */
    if (bf16) {
        size_t widest =
            (size_t)c->hidden_size *
            (size_t)(c->vocab_size > c->intermediate_size ? c->vocab_size : c->intermediate_size);
        size_t acts_dec = clips * dec_t *
                          (size_t)(c->intermediate_size > c->hidden_size ? c->intermediate_size
                                                                         : c->hidden_size),
               acts_enc = clips * enc_t * (size_t)c->encoder_ffn_dim;
        gemm = 2 * widest + 2 * (acts_dec > acts_enc ? acts_dec : acts_enc);
    }
    const bool flash_dec = flash && ad_cuda_flash_head_dim(c->head_dim),
               flash_enc = flash && ad_cuda_flash_head_dim(c->encoder_head_dim);
    size_t scores_dec = flash_dec ? 0 : 4 * (size_t)c->num_attention_heads * dec_t * dec_t,
           scores_enc = flash_enc ? 0 : 4 * (size_t)c->encoder_attention_heads * enc_t * enc_t;
    size_t scores = scores_dec > scores_enc ? scores_dec : scores_enc;
    if (scores > score_cap) scores = score_cap;
    size_t attention = 2 * scores;
    /* elements of one attention's q (and dO) */
    const size_t q_dec = clips * dec_t * (size_t)c->num_attention_heads * (size_t)c->head_dim,
                 q_enc = clips * enc_t * (size_t)c->d_model;
    if (bf16) {
        const size_t qkv_dec = flash_dec ? 0 : q_dec, qkv_enc = flash_enc ? 0 : q_enc;
        attention += scores + 4 * 2 * (qkv_dec > qkv_enc ? qkv_dec : qkv_enc);
        const size_t dout_dec = flash_dec && c->head_dim >= 32 ? q_dec : 0,
                     dout_enc = flash_enc && c->encoder_head_dim >= 32 ? q_enc : 0;
        attention += 2 * (dout_dec > dout_enc ? dout_dec : dout_enc);
        /* q and v are stored in bf16 under bf16 GEMMs (train_graph.c), and the student's biases
         * train in f32: such a product is summed with its bias in an f32 copy first (gemm.cu) */
        const size_t v_dec = clips * dec_t * (size_t)c->num_key_value_heads * (size_t)c->head_dim;
        gemm += 4 * (v_dec > q_enc ? v_dec : q_enc);
    }
    const size_t rows_dec = clips * dec_t * (size_t)c->num_attention_heads,
                 rows_enc = clips * enc_t * (size_t)c->encoder_attention_heads;
    if (flash_dec || flash_enc) attention += 8 * (rows_dec > rows_enc ? rows_dec : rows_enc);
    return workspace + gemm + attention;
}

/* The job's two configs (teacher: NULL without one), read once for several plans. */
static int load_configs(const ad_train_job *job, ad_model_config *student,
                        ad_model_config *teacher) {
    AD_TRY(load_config(job->student, student));
    return job->teacher ? load_config(job->teacher, teacher) : AD_OK;
}

static int plan_from_configs(const ad_train_job *job, int ranks, const ad_model_config *student,
                             const ad_model_config *teacher, ad_memory_plan *p) {
    memset(p, 0, sizeof *p);
    if (ranks < 1) return ad_fail("memory plan: %d ranks", ranks);
    p->ranks = ranks;
    ad_graph_limits lim;
    ad_train_limits(job, student, &lim);
    ad_trainable train, none = {0};
    ad_train_trainable(&job->train, &train);
    p->student_params = count_params(student, &train, &p->gemm_params, &p->trainable_params,
                                     &p->trainable_gemm_params);
    if (p->student_params < 0) return AD_ERR;
    size_t unused;
    AD_TRY(ad_graph_plan(student, &lim, &train, &p->student_activations, &p->gradients));
    if (job->teacher) {
        int64_t gemm, zero, zero_gemm;
        p->teacher_params = count_params(teacher, NULL, &gemm, &zero, &zero_gemm);
        if (p->teacher_params < 0) return AD_ERR;
        AD_TRY(ad_graph_plan(teacher, &lim, &none, &p->teacher_activations, &unused));
        if (job->distill.share_encoder && !train.audio_encoder &&
            ad_model_config_same_encoder(teacher, student)) {
            ad_graph_limits shared = lim;
            shared.encoder_elsewhere = true;
            AD_TRY(ad_graph_plan(teacher, &shared, &none, &p->teacher_activations_shared, &unused));
        }
    }
    const bool cuda = !strcmp(job->train.device, "cuda");
    const bool bf16 = !strcmp(job->train.precision, "bf16");
    /* train.precision: bf16 keeps the frozen teacher in bf16, and (train.student_weights) the
     * student's GEMM weights: the trained ones' fp32 masters are then the host mirrors or, with
     * the optimizer on the device, device copies (ZeRO-1: this rank's slices); the frozen ones'
     * fp32 values stay in rank 0's host memory for checkpoints */
    const size_t teacher_bytes = bf16 ? 2 : 4;
    p->student_bf16 = cuda && ad_train_student_bf16(&job->train);
    const size_t gemm16 = p->student_bf16 ? (size_t)p->gemm_params : 0,
                 masters16 = p->student_bf16 ? (size_t)p->trainable_gemm_params : 0,
                 frozen16 = gemm16 - masters16;
    const size_t weights =
        teacher_bytes * (size_t)p->teacher_params + 4 * (size_t)p->student_params - 2 * gemm16;
    const size_t adam = 8 * (size_t)p->trainable_params;
    /* ZeRO-1: each rank keeps its share of the moments (and, in the bf16 design, of the fp32
     * master weights); the full host copies for checkpoints are rank 0's. */
    const size_t shards = job->train.zero ? (size_t)ranks : 1;
    const size_t adam_here = (adam + shards - 1) / shards;
    p->scratch = cuda ? cuda_scratch_bytes(student, &lim, bf16, job_flash(job, bf16)) : 0;
    const size_t acts = p->student_activations + p->teacher_activations + p->scratch;
    if (cuda && !strcmp(job->train.optimizer, "device")) {
        /* Device: fp32 weights, gradients, activations and the moments. Host: the checkpoint
         * copies of the trainable weights and moments. */
        p->device_bytes =
            weights + (4 * masters16 + shards - 1) / shards + p->gradients + acts + adam_here;
        p->host_bytes = 4 * (size_t)p->trainable_params + adam + 4 * frozen16;
        p->host_bytes_others = 0; /* host copies freed after init: only rank 0 writes checkpoints */
    } else if (cuda) {
        /* Device: fp32 weights, gradients, activations. Host: the optimizer's mirrors. */
        p->device_bytes = weights + p->gradients + acts;
        p->host_bytes = 8 * (size_t)p->trainable_params + adam_here + 4 * frozen16;
        p->host_bytes_others = p->host_bytes - 4 * frozen16;
    } else {
        p->host_bytes = weights + p->gradients + acts + adam_here;
        p->host_bytes_others = p->host_bytes;
    }
    /* the bf16 design's GEMMs read bf16 weights, so its scratch is that of bf16 GEMMs */
    p->bf16_device_bytes = 2 * (size_t)(p->teacher_params + p->student_params) +
                           (4 * (size_t)p->trainable_params + adam + shards - 1) / shards +
                           p->gradients + p->student_activations + p->teacher_activations +
                           cuda_scratch_bytes(student, &lim, true, job_flash(job, true));
    return AD_OK;
}

int ad_train_memory_plan(const ad_train_job *job, int ranks, ad_memory_plan *p) {
    ad_model_config student, teacher;
    memset(p, 0, sizeof *p);
    AD_TRY(load_configs(job, &student, &teacher));
    return plan_from_configs(job, ranks, &student, &teacher, p);
}

static double gib(size_t b) {
    return (double)b / (1024.0 * 1024.0 * 1024.0);
}

typedef struct {
    ad_train_job job; /* the job, train.micro_batch varied */
    ad_model_config student, teacher;
    int ranks;
    double device_gib;
} fit_search;

static int plan_fits(fit_search *s, int64_t micro_batch, bool *fits) {
    s->job.train.micro_batch = micro_batch;
    ad_memory_plan p;
    AD_TRY(plan_from_configs(&s->job, s->ranks, &s->student, &s->teacher, &p));
    *fits = gib(p.device_bytes) <= s->device_gib;
    return AD_OK;
}

int ad_memory_plan_largest_micro_batch(const ad_train_job *job, int ranks, double device_gib,
                                       int64_t *largest) {
    *largest = 0;
    fit_search s = {.job = *job, .ranks = ranks, .device_gib = device_gib};
    AD_TRY(load_configs(job, &s.student, &s.teacher));
    int64_t fits_at = 0, fails_at = 1;
    bool fits;
    for (;;) { /* doubling to the first micro-batch that does not fit */
        AD_TRY(plan_fits(&s, fails_at, &fits));
        if (!fits) break;
        fits_at = fails_at;
        if (fails_at >= AD_PLAN_MAX_MICRO_BATCH) {
            *largest = fits_at;
            return AD_OK;
        }
        fails_at *= 2;
    }
    while (fails_at - fits_at > 1) {
        const int64_t mid = fits_at + (fails_at - fits_at) / 2;
        AD_TRY(plan_fits(&s, mid, &fits));
        if (fits)
            fits_at = mid;
        else
            fails_at = mid;
    }
    *largest = fits_at;
    return AD_OK;
}

void ad_memory_plan_print(const ad_train_job *job, const ad_memory_plan *p, double device_gib,
                          FILE *out) {
    fprintf(out,
            "memory plan: teacher %s (%.3f B parameters), student %s (%.3f B, %.3f B "
            "trainable), micro-batch %lld x %lld frames x %lld tokens\n",
            job->teacher ? job->teacher : "none", 1e-9 * (double)p->teacher_params, job->student,
            1e-9 * (double)p->student_params, 1e-9 * (double)p->trainable_params,
            (long long)job->train.micro_batch, (long long)job->train.max_frames,
            (long long)job->train.max_len);
    fprintf(out, "  student activations (kept for backward) %10.2f GiB\n",
            gib(p->student_activations));
    fprintf(out, "  teacher activations (one layer reused)  %10.2f GiB\n",
            gib(p->teacher_activations));
    if (p->teacher_activations_shared)
        fprintf(out,
                "    with the student's encoder output     %10.2f GiB (distill.share_encoder, "
                "if the encoders' weights are equal; not counted below)\n",
                gib(p->teacher_activations_shared));
    fprintf(out, "  fp32 gradients                          %10.2f GiB\n", gib(p->gradients));
    if (p->scratch)
        fprintf(out, "  CUDA scratch (GEMM copies, attention)   %10.2f GiB%s\n", gib(p->scratch),
                job_flash(job, !strcmp(job->train.precision, "bf16"))
                    ? " (attention: the flash kernels where the head dim allows)"
                    : "");
    fprintf(out, "  Adam moments (fp32 m, v)                %10.2f GiB",
            gib(8 * (size_t)p->trainable_params));
    if (job->train.zero && p->ranks > 1)
        fprintf(out, " (ZeRO-1 over %d ranks: %.2f GiB each)", p->ranks,
                gib(8 * (size_t)p->trainable_params / (size_t)p->ranks));
    fprintf(out, "\n");
    if (!strcmp(job->train.device, "cuda")) {
        fprintf(out,
                "  this job now (train.device cuda, %s, optimizer on the %s), per rank: "
                "GPU %.2f GiB, host %.2f GiB",
                p->student_bf16                        ? "bf16 teacher and student GEMM weights"
                : strcmp(job->train.precision, "bf16") ? "fp32 weights"
                                                       : "bf16 teacher, fp32 student weights",
                job->train.optimizer, gib(p->device_bytes), gib(p->host_bytes));
        if (p->ranks > 1 && p->host_bytes_others != p->host_bytes)
            fprintf(out, " (rank 0; %.2f on the others)", gib(p->host_bytes_others));
        if (device_gib > 0)
            fprintf(out, " -> %s a %.0f GiB GPU",
                    gib(p->device_bytes) <= device_gib ? "fits" : "does not fit", device_gib);
        fprintf(out, "\n");
        int64_t largest;
        if (device_gib > 0 &&
            ad_memory_plan_largest_micro_batch(job, p->ranks, device_gib, &largest) == AD_OK)
            fprintf(out,
                    "  largest micro-batch (of clips of %lld frames x %lld tokens) that fits, as "
                    "this job runs now: %lld%s\n",
                    (long long)job->train.max_frames, (long long)job->train.max_len,
                    (long long)largest, largest ? "" : " (not one clip)");
        else if (device_gib > 0)
            ad_error_clear(); /* the table above stands without it */
    } else
        fprintf(out, "  this job now (train.device cpu, fp32): host %.2f GiB\n",
                gib(p->host_bytes));
    fprintf(out,
            "  bf16 design (bf16 weights; fp32 master, moments, gradients on the GPU%s): GPU "
            "%.2f GiB",
            job->train.zero && p->ranks > 1 ? "; master and moments sharded" : "",
            gib(p->bf16_device_bytes));
    if (device_gib > 0)
        fprintf(out, " -> %s a %.0f GiB GPU",
                gib(p->bf16_device_bytes) <= device_gib ? "fits" : "does not fit", device_gib);
    fprintf(out, "\n");
}
