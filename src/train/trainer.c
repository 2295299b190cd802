#include "train/trainer.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/backend.h"
#include "backend/device_peak.h"
#include "backend/profile.h"
#include "compress/quant_io.h"
#include "core/compare.h"
#include "core/log.h"
#include "core/progress.h"
#include "dist/comm.h"
#include "eval/sacrebleu.h"
#include "io/file.h"
#include "model/generate.h"
#include "model/train_graph.h"
#include "model/weights.h"
#include "text/bpe.h"
#include "train/cached_teacher.h"
#include "train/checkpoint.h"
#include "train/ctc_term.h"
#include "train/device_opt.h"
#include "train/dist_step.h"
#include "train/loader.h"
#include "train/memory_plan.h"
#include "train/metrics.h"
#include "train/optim.h"
#include "train/param_table.h"

static const ad_field data_fields[] = {
    {.key = "train",
     .type = AD_FIELD_STRING,
     .offset = offsetof(ad_train_data, train),
     .required = true,
     .help = "prepared training set (audistill prepare)"},
    {.key = "dev",
     .type = AD_FIELD_STRING,
     .offset = offsetof(ad_train_data, dev),
     .help = "prepared dev set for periodic evaluation"},
    {.key = "langs",
     .type = AD_FIELD_STRING_LIST,
     .offset = offsetof(ad_train_data, langs),
     .help = "target languages (default de, zh)"},
    {.key = "targets",
     .type = AD_FIELD_ENUM,
     .offset = offsetof(ad_train_data, targets),
     .default_value = "reference",
     .choices = "reference|teacher",
     .help = "teacher: train on the teacher's own translations from distill.teacher_cache "
             "(sequence-level distillation)"},
    {0},
};

static const ad_field train_fields[] = {
    {.key = "steps",
     .type = AD_FIELD_INT,
     .offset = offsetof(ad_train_options, steps),
     .default_value = "1000",
     .min = 1,
     .max = 1e9},
    {.key = "batch",
     .type = AD_FIELD_INT,
     .offset = offsetof(ad_train_options, batch),
     .default_value = "8",
     .min = 1,
     .max = 1e6,
     .help = "examples per optimizer step (all ranks)"},
    {.key = "micro_batch",
     .type = AD_FIELD_INT,
     .offset = offsetof(ad_train_options, micro_batch),
     .default_value = "8",
     .min = 1,
     .max = 1e6,
     .help = "examples per forward/backward (gradient accumulation)"},
    {.key = "lr",
     .type = AD_FIELD_FLOAT,
     .offset = offsetof(ad_train_options, lr),
     .default_value = "3e-4",
     .min = 0,
     .max = 10},
    {.key = "min_lr_ratio",
     .type = AD_FIELD_FLOAT,
     .offset = offsetof(ad_train_options, min_lr_ratio),
     .default_value = "0.1",
     .min = 0,
     .max = 1},
    {.key = "warmup",
     .type = AD_FIELD_INT,
     .offset = offsetof(ad_train_options, warmup),
     .default_value = "0",
     .min = 0,
     .max = 1e9},
    {.key = "schedule",
     .type = AD_FIELD_ENUM,
     .offset = offsetof(ad_train_options, schedule),
     .default_value = "cosine",
     .choices = "cosine|linear|constant"},
    {.key = "weight_decay",
     .type = AD_FIELD_FLOAT,
     .offset = offsetof(ad_train_options, weight_decay),
     .default_value = "0.01",
     .min = 0,
     .max = 10},
    {.key = "beta1",
     .type = AD_FIELD_FLOAT,
     .offset = offsetof(ad_train_options, beta1),
     .default_value = "0.9",
     .min = 0,
     .max = 0.999999},
    {.key = "beta2",
     .type = AD_FIELD_FLOAT,
     .offset = offsetof(ad_train_options, beta2),
     .default_value = "0.999",
     .min = 0,
     .max = 0.999999},
    {.key = "eps",
     .type = AD_FIELD_FLOAT,
     .offset = offsetof(ad_train_options, eps),
     .default_value = "1e-8",
     .min = 0,
     .max = 1},
    {.key = "clip",
     .type = AD_FIELD_FLOAT,
     .offset = offsetof(ad_train_options, clip),
     .default_value = "1.0",
     .min = 0,
     .max = 1e9,
     .help = "max global gradient norm (0 = off)"},
    {.key = "input_dropout",
     .type = AD_FIELD_FLOAT,
     .offset = offsetof(ad_train_options, input_dropout),
     .default_value = "0",
     .min = 0,
     .max = 0.9,
     .help = "probability of replacing a target token's teacher-forcing input by the pad "
             "token (labels unchanged): makes a decoder trained from scratch read the audio"},
    {.key = "seed",
     .type = AD_FIELD_INT,
     .offset = offsetof(ad_train_options, seed),
     .default_value = "1234"},
    {.key = "trainable",
     .type = AD_FIELD_ENUM,
     .offset = offsetof(ad_train_options, trainable),
     .default_value = "all",
     .choices = "all|decoder|no_audio_encoder|no_embeddings"},
    {.key = "log_every",
     .type = AD_FIELD_INT,
     .offset = offsetof(ad_train_options, log_every),
     .default_value = "10",
     .min = 1,
     .max = 1e9},
    {.key = "eval_every",
     .type = AD_FIELD_INT,
     .offset = offsetof(ad_train_options, eval_every),
     .default_value = "0",
     .min = 0,
     .max = 1e9,
     .help = "dev loss every N steps (0 = off)"},
    {.key = "eval_segments",
     .type = AD_FIELD_INT,
     .offset = offsetof(ad_train_options, eval_segments),
     .default_value = "32",
     .min = 1,
     .max = 1e9},
    {.key = "checkpoint_every",
     .type = AD_FIELD_INT,
     .offset = offsetof(ad_train_options, checkpoint_every),
     .default_value = "100",
     .min = 1,
     .max = 1e9},
    {.key = "keep_checkpoints",
     .type = AD_FIELD_INT,
     .offset = offsetof(ad_train_options, keep_checkpoints),
     .default_value = "3",
     .min = 1,
     .max = 1e6},
    {.key = "device",
     .type = AD_FIELD_ENUM,
     .offset = offsetof(ad_train_options, device),
     .default_value = "cpu",
     .choices = "cpu|cuda",
     .help = "cuda: the CUDA backend on GPU 0 (fp32 weights and activations)"},
    {.key = "optimizer",
     .type = AD_FIELD_ENUM,
     .offset = offsetof(ad_train_options, optimizer),
     .default_value = "host",
     .choices = "host|device",
     .help = "where clipping and AdamW run: host (on host mirrors of the weights and gradients "
             "of a device backend) or device (backend ops beside the weights, moments on the "
             "device, nothing copied per step; over several ranks the gradients are summed on "
             "the device, by NCCL on GPUs; zero: 1 shards the moments there; no QAT)"},
    {.key = "precision",
     .type = AD_FIELD_ENUM,
     .offset = offsetof(ad_train_options, precision),
     .default_value = "fp32",
     .choices = "fp32|bf16",
     .help = "fp32: every GEMM in fp32 (the CPU reference's numbers); bf16 (device: cuda): GEMM "
             "operands rounded to bf16 on tensor cores with fp32 accumulation, and the "
             "teacher's frozen weights kept in bf16 (half its memory); master weights, "
             "gradients, moments and activations stay fp32"},
    {.key = "student_weights",
     .type = AD_FIELD_ENUM,
     .offset = offsetof(ad_train_options, student_weights),
     .default_value = "auto",
     .choices = "auto|f32|bf16",
     .help = "the dtype of the student's GEMM weights on the device: bf16 (auto under "
             "precision bf16) stores them rounded, as every GEMM reads them, with the trained "
             "ones' fp32 masters on the host (optimizer host) or beside them on the device "
             "(optimizer device, whose AdamW pass writes both) and the frozen ones' fp32 values "
             "on the host for checkpoints; f32 (auto under fp32) rounds them again in every "
             "GEMM. The numbers are the same; bf16 saves the conversions and, with the "
             "host optimizer, half their device memory (with zero: 1 and optimizer device each "
             "rank keeps only its slices' masters)"},
    {.key = "attention",
     .type = AD_FIELD_ENUM,
     .offset = offsetof(ad_train_options, attention),
     .default_value = "auto",
     .choices = "auto|gemm|flash|kernel",
     .help = "how attention runs on the GPU (device: cuda): auto (what AUDISTILL_CUDA_ATTENTION "
             "says, else for training-size sequences the flash kernels under precision bf16 and "
             "batched GEMMs under fp32), gemm, flash (flash attention on "
             "the tensor cores: bf16 operands whatever the precision, no score matrix in memory; "
             "head dims 16/32/64/128 on sm_80+, others take auto's way) or kernel (the tiled fp32 "
             "kernels). The results agree to rounding"},
    {.key = "gemm_tuning",
     .type = AD_FIELD_BOOL,
     .offset = offsetof(ad_train_options, gemm_tuning),
     .default_value = "false",
     .help = "time up to 8 of cuBLASLt's candidate algorithms for each GEMM shape of the step "
             "on its first use (and, for a GEMM with a bias, the bias written first against the "
             "library's epilogue) and keep the fastest (device: cuda; also "
             "AUDISTILL_CUDA_GEMM_TUNE=1). A few milliseconds per shape once; the results may "
             "then differ in the last bits from run to run, as the timings choose"},
    {.key = "recompute",
     .type = AD_FIELD_BOOL,
     .offset = offsetof(ad_train_options, recompute),
     .default_value = "false",
     .help = "activation recomputation: keep only each layer's input and rebuild the layer's "
             "activations just before its backward (about one more forward pass of the student "
             "per step, for a fraction of the activation memory; the same results, bit for "
             "bit)"},
    {.key = "zero",
     .type = AD_FIELD_INT,
     .offset = offsetof(ad_train_options, zero),
     .default_value = "0",
     .min = 0,
     .max = 1,
     .help = "1: ZeRO-1, Adam moments sharded over the ranks (checkpoints stay unsharded)"},
    {.key = "threads",
     .type = AD_FIELD_INT,
     .offset = offsetof(ad_train_options, threads),
     .default_value = "0",
     .min = 0,
     .max = 1024},
    {.key = "max_len",
     .type = AD_FIELD_INT,
     .offset = offsetof(ad_train_options, max_len),
     .default_value = "512",
     .min = 8,
     .max = 1 << 20,
     .help = "longest prompt + target in tokens"},
    {.key = "max_frames",
     .type = AD_FIELD_INT,
     .offset = offsetof(ad_train_options, max_frames),
     .default_value = "3000",
     .min = 3,
     .max = 3000,
     .help = "longest clip in mel frames"},
    {0},
};

static const ad_field distill_fields[] = {
    {.key = "alpha",
     .type = AD_FIELD_FLOAT,
     .offset = offsetof(ad_distill_options, alpha),
     .default_value = "0.5",
     .min = 0,
     .max = 1,
     .help = "weight of the KL term (needs a teacher)"},
    {.key = "temperature",
     .type = AD_FIELD_FLOAT,
     .offset = offsetof(ad_distill_options, temperature),
     .default_value = "1.0",
     .min = 0.01,
     .max = 100},
    {.key = "kind",
     .type = AD_FIELD_ENUM,
     .offset = offsetof(ad_distill_options, kind),
     .default_value = "forward",
     .choices = "forward|reverse|skew_forward|skew_reverse"},
    {.key = "skew",
     .type = AD_FIELD_FLOAT,
     .offset = offsetof(ad_distill_options, skew),
     .default_value = "0.1",
     .min = 0,
     .max = 0.99},
    {.key = "teacher_cache",
     .type = AD_FIELD_STRING,
     .offset = offsetof(ad_distill_options, teacher_cache),
     .help = "audistill teacher-cache file: the KL term reads its top-k instead of running the "
             "teacher (dev evaluation uses `teacher` when given, else cross-entropy only)"},
    {.key = "share_encoder",
     .type = AD_FIELD_BOOL,
     .offset = offsetof(ad_distill_options, share_encoder),
     .default_value = "true",
     .help = "when the student's audio encoder is frozen and equal to the teacher's (the same "
             "config and weights, as pruning the decoder leaves it), the teacher reuses the "
             "student's encoder output instead of running its own: one encoder forward per "
             "micro-batch instead of two, the same function of the same weights (bit for bit on "
             "the CPU backend)"},
    {0},
};

static const ad_field qat_fields[] = {
    {.key = "scales",
     .type = AD_FIELD_ENUM,
     .offset = offsetof(ad_qat_options, scales),
     .default_value = "learned",
     .choices = "learned|fixed",
     .help = "quantized students: learn the group scales (LSQ) or keep the student's"},
    {0},
};

static const ad_field ctc_fields[] = {
    {.key = "weight",
     .type = AD_FIELD_FLOAT,
     .offset = offsetof(ad_ctc_options, weight),
     .default_value = "0",
     .min = 0,
     .max = 100,
     .help = "weight of the CTC loss on the audio positions (0 = off), relative to the "
             "per-token cross-entropy"},
    {.key = "transcript",
     .type = AD_FIELD_STRING,
     .offset = offsetof(ad_ctc_options, transcript),
     .default_value = "en",
     .help = "the prepared language whose targets are the CTC transcripts (prepare --langs "
             "...,en)"},
    {0},
};

const ad_field ad_train_job_fields[] = {
    {.key = "student",
     .type = AD_FIELD_STRING,
     .offset = offsetof(ad_train_job, student),
     .required = true,
     .help = "student model directory (initial weights)"},
    {.key = "teacher",
     .type = AD_FIELD_STRING,
     .offset = offsetof(ad_train_job, teacher),
     .help = "teacher model directory (omit for cross-entropy only)"},
    {.key = "output",
     .type = AD_FIELD_STRING,
     .offset = offsetof(ad_train_job, output),
     .required = true,
     .help = "run directory: checkpoints, metrics, final model"},
    {.key = "output_dtype",
     .type = AD_FIELD_ENUM,
     .offset = offsetof(ad_train_job, output_dtype),
     .default_value = "f32",
     .choices = "f32|bf16",
     .help = "the final model's weights: f32 (the masters exactly) or bf16 (half the bytes); "
             "checkpoints stay f32"},
    {.key = "data",
     .type = AD_FIELD_SECTION,
     .offset = offsetof(ad_train_job, data),
     .section = data_fields},
    {.key = "train",
     .type = AD_FIELD_SECTION,
     .offset = offsetof(ad_train_job, train),
     .section = train_fields},
    {.key = "distill",
     .type = AD_FIELD_SECTION,
     .offset = offsetof(ad_train_job, distill),
     .section = distill_fields},
    {.key = "qat",
     .type = AD_FIELD_SECTION,
     .offset = offsetof(ad_train_job, qat),
     .section = qat_fields,
     .help = "quantization-aware training, used when the student is group-quantized"},
    {.key = "ctc",
     .type = AD_FIELD_SECTION,
     .offset = offsetof(ad_train_job, ctc),
     .section = ctc_fields,
     .help = "an auxiliary CTC loss that makes the states at the audio positions spell the "
             "transcript: for teachers trained from scratch"},
    {0},
};

/* Keys that may change between a checkpoint and its resumption (they change no result). */
static const char *const RESUMABLE_KEYS[] = {"train.steps",
                                             "train.device",
                                             "train.log_every",
                                             "train.eval_every",
                                             "train.checkpoint_every",
                                             "train.keep_checkpoints",
                                             "train.threads",
                                             "train.zero",
                                             "train.optimizer",
                                             "train.precision",
                                             "train.student_weights",
                                             "train.recompute",
                                             "train.attention",
                                             "distill.share_encoder",
                                             NULL};

/* ---- the job config as flat key=value lines, its hash ---------------------------------- */

static void flatten(const ad_yaml_node *n, const char *prefix, cJSON *out) {
    if (!n) return;
    if (n->kind == AD_YAML_MAPPING) {
        for (int i = 0; i < n->count; i++) {
            char key[512];
            snprintf(key, sizeof key, "%s%s%s", prefix, *prefix ? "." : "", n->keys[i]);
            flatten(n->children[i], key, out);
        }
    } else if (n->kind == AD_YAML_SEQUENCE) {
        char v[2048] = "[";
        size_t w = 1;
        for (int i = 0; i < n->count && w < sizeof v - 8; i++)
            w += (size_t)snprintf(v + w, sizeof v - w, "%s%s", i ? ", " : "",
                                  n->children[i]->kind == AD_YAML_SCALAR ? n->children[i]->value
                                                                         : "...");
        snprintf(v + w, sizeof v - w, "]");
        cJSON_AddStringToObject(out, prefix, v);
    } else {
        cJSON_AddStringToObject(out, prefix, n->value);
    }
}

/* The flat config as key/value pairs for checkpoint.h's hash and diff (strings stay cJSON's). */
static ad_kv *flat_pairs(const cJSON *flat, int *n) {
    *n = cJSON_GetArraySize(flat);
    ad_kv *kv = ad_calloc((size_t)*n + 1, sizeof *kv, "job config");
    int i = 0;
    for (const cJSON *item = flat->child; kv && item; item = item->next)
        if (cJSON_IsString(item)) kv[i++] = (ad_kv){item->string, item->valuestring};
    *n = i;
    return kv;
}

static uint64_t config_hash(const cJSON *flat) {
    int n;
    ad_kv *kv = flat_pairs(flat, &n);
    const uint64_t h = kv ? ad_config_hash(kv, n, RESUMABLE_KEYS) : 0;
    free(kv);
    return h;
}

/* Lists the keys whose values differ (ignoring the resumable ones) into buf. */
static int config_diff(const cJSON *ckpt, const cJSON *job, char *buf, size_t size) {
    int na, nb;
    ad_kv *a = flat_pairs(ckpt, &na), *b = flat_pairs(job, &nb);
    const int n = a && b ? ad_config_diff(a, na, b, nb, RESUMABLE_KEYS, buf, size) : 0;
    free(a), free(b);
    return n;
}

static int copy_files(const char *from, const char *to) {
    static const char *names[] = {"vocab.json", "merges.txt", "tokenizer_config.json",
                                  "preprocessor_config.json", "generation_config.json"};
    for (size_t i = 0; i < sizeof names / sizeof names[0]; i++)
        AD_TRY(ad_copy_optional_file(from, to, names[i]));
    return AD_OK;
}

/* ---- the run ---------------------------------------------------------------------------- */

/* Before a GPU run: the memory plan (as --plan-memory prints it) against the device, and a
 * warning when the plan exceeds what is free, rather than an out-of-memory error mid-step. */
static void print_gpu_plan(const ad_train_job *job, ad_backend *be, int ranks) {
    ad_memory_plan plan;
    if (ad_train_memory_plan(job, ranks, &plan) < 0) {
        ad_warn("no memory plan for this job: %s", ad_error());
        ad_error_clear();
        return;
    }
    double total_gib = 0, free_gib = 0;
    size_t free_b = 0, total_b = 0;
    if (be->memory_info && be->memory_info(be, &free_b, &total_b) == AD_OK) {
        total_gib = (double)total_b / (1 << 30);
        free_gib = (double)free_b / (1 << 30);
    } else if (be->memory_info) {
        ad_error_clear(); /* the plan still prints, without the card's size */
    }
    ad_memory_plan_print(job, &plan, total_gib, stderr);
    const double need = (double)plan.device_bytes / (1 << 30);
    if (free_gib > 0 && need > free_gib)
        ad_warn("this job plans %.1f MiB on the GPU and %.1f MiB are free: expect it to run out "
                "of memory (audistill train --plan-memory shows the parts)",
                need * 1024, free_gib * 1024);
}

typedef struct {
    const ad_train_job *job;
    ad_backend *be;
    ad_model student, teacher;
    bool has_teacher;
    ad_train_graph sg, tg;
    ad_loader loader;
    ad_batch *micro;
    int n_micro_cap;
    ad_param_table params;
    ad_distill_params dp;
    ad_metrics metrics;
    ad_comm *comm;
    ad_dist_opt dist;   /* optimizer: host */
    ad_comm *grad_comm; /* optimizer: device over several ranks: sums the device gradients */
    cJSON *flat;
    const char *langs[AD_LOADER_MAX_LANGS];
    int n_langs;
    ad_cached_teacher cached; /* distill.teacher_cache */
    ad_ctc_term ctc;          /* ctc.weight > 0 */
    ad_ctc_sums ctc_sums;     /* this rank's, since the last log line */
    char tuning_path[4200];   /* train.gemm_tuning: this rank's choices, kept across runs */
} run_ctx;

void ad_train_limits(const ad_train_job *job, const ad_model_config *cfg, ad_graph_limits *lim) {
    const int frames = ad_model_window(cfg, job->train.max_frames);
    *lim = (ad_graph_limits){.max_clips = (int)job->train.micro_batch,
                             .max_frames = frames,
                             .max_len = (int)job->train.max_len,
                             .max_supervised = (int)(job->train.micro_batch * job->train.max_len),
                             /* precision bf16: the GEMMs round their operands to bf16 */
                             .gemm_inputs_bf16 = !strcmp(job->train.device, "cuda") &&
                                                 !strcmp(job->train.precision, "bf16")};
}

static ad_kl_kind kl_kind(const char *s) {
    if (!strcmp(s, "reverse")) return AD_KL_REVERSE;
    if (!strcmp(s, "skew_forward")) return AD_KL_SKEW_FORWARD;
    if (!strcmp(s, "skew_reverse")) return AD_KL_SKEW_REVERSE;
    return AD_KL_FORWARD;
}

/* Forward (+ teacher) and loss for one micro-batch; backward when `train`. */
static int micro_step(run_ctx *r, ad_batch *b, double grad_scale, bool train,
                      ad_distill_sums *sums) {
    ad_train_graph *g = &r->sg;
    /* The loaders' window keeps batches within the graph's frames; shrinking max_frames here
     * instead would change the features' row stride without moving them. */
    if (b->max_frames > g->lim.max_frames)
        return ad_fail("internal: a batch of %d frames exceeds the graph's %d (loader window not "
                       "set)",
                       b->max_frames, g->lim.max_frames);
    if (b->max_len > g->lim.max_len)
        return ad_fail("an example has %d tokens, more than train.max_len %d", b->max_len,
                       g->lim.max_len);
    AD_TRY(ad_graph_forward(g, b));
    const int S = g->n_supervised;
    const int64_t V = r->student.cfg.vocab_size;
    ad_tensor logits, targets, tlogits;
    ad_tensor_init(&logits, g->logits.data, AD_F32, g->logits.device, 2, (int64_t[]){S, V},
                   "student logits");
    ad_tensor_init(&targets, g->targets.data, AD_I32, g->targets.device, 1, (int64_t[]){S},
                   "targets");
    ad_distill_params p = r->dp;
    p.grad_scale = (float)grad_scale;
    const ad_tensor *teacher = NULL;
    if (r->cached.cache && train && p.alpha > 0) { /* the cache covers data.train only */
        AD_TRY(ad_cached_teacher_logits(&r->cached, b, S, &tlogits));
        teacher = &tlogits;
    } else if (r->has_teacher && p.alpha > 0) {
        AD_TRY(ad_graph_forward(&r->tg, b));
        ad_tensor_init(&tlogits, r->tg.logits.data, AD_F32, r->tg.logits.device, 2,
                       (int64_t[]){S, V}, "teacher logits");
        teacher = &tlogits;
    }
    const bool ctc = b->ctc_max > 0;
    if (ctc) AD_TRY(ad_ctc_term_read(&r->ctc, r->be, g));
    AD_TRY(r->be->distill_loss(r->be, &logits, &logits, teacher, &targets, &p, sums));
    if (ctc)
        AD_TRY(ad_ctc_term_apply(&r->ctc, r->be, g, b, r->student.cfg.audio_token_index,
                                 (float)r->job->ctc.weight, p.grad_scale, train, &r->ctc_sums));
    return train ? ad_graph_backward(g) : AD_OK;
}

static int evaluate(run_ctx *r, double *loss, double *kl, double *ce) {
    const ad_train_job *job = r->job;
    ad_loader dev;
    AD_TRY(ad_loader_open(&dev, job->data.dev, r->n_langs, r->langs,
                          r->student.cfg.audio_token_index, 0, false));
    ad_loader_set_window(&dev, r->sg.lim.max_frames);
    ad_distill_sums sums = {0};
    int rc = AD_OK;
    int64_t total = job->train.eval_segments * r->n_langs < dev.n_examples
                        ? job->train.eval_segments * r->n_langs
                        : dev.n_examples;
    int32_t ex[1024];
    ad_batch b = {0};
    for (int64_t done = 0; done < total && rc == AD_OK;) {
        int want = (int)(total - done < job->train.micro_batch ? total - done
                                                               : job->train.micro_batch),
            n;
        rc = ad_loader_next(&dev, want, 0, 1, ex, &n);
        if (rc == AD_OK) rc = ad_loader_fill(&dev, ex, n, &b);
        if (rc == AD_OK) rc = micro_step(r, &b, 0.0, false, &sums);
        done += n;
    }
    ad_batch_free(&b);
    ad_loader_close(&dev);
    AD_TRY(rc);
    *loss = sums.loss / (double)(sums.rows ? sums.rows : 1);
    *kl = sums.kl / (double)(sums.rows ? sums.rows : 1);
    *ce = sums.ce / (double)(sums.rows ? sums.rows : 1);
    return AD_OK;
}

#define EVAL_BLEU_SEGMENTS  16
#define EVAL_MAX_NEW_TOKENS 64

/* Greedy BLEU of the student on the first dev segments of the first language: decode with the
 * KV cache, detokenize with the student's tokenizer, score against the dev texts. */
static int evaluate_bleu(run_ctx *r, double *bleu) {
    const ad_train_job *job = r->job;
    *bleu = -1;
    ad_tokenizer *tok = NULL;
    char *vocab = ad_path_join(job->student, "vocab.json");
    bool have = vocab && ad_path_exists(vocab);
    free(vocab);
    if (!have) return AD_OK; /* no tokenizer with the student: loss only */
    AD_TRY(ad_tokenizer_load(job->student, 1, &tok));
    ad_loader dev;
    int rc = ad_loader_open(&dev, job->data.dev, 1, r->langs, r->student.cfg.audio_token_index, 0,
                            false);
    if (rc < 0) {
        ad_tokenizer_free(tok);
        return rc;
    }
    ad_loader_set_window(&dev, r->sg.lim.max_frames);
    const ad_model_config *cfg = &r->student.cfg;
    ad_model_limits lim = {.max_clips = 1,
                           .max_frames = r->sg.lim.max_frames,
                           .max_rows = 1,
                           .max_tokens = r->sg.lim.max_len + EVAL_MAX_NEW_TOKENS,
                           .max_step_tokens = r->sg.lim.max_len,
                           .max_logit_rows = 2};
    ad_model_state st = {0};
    ad_batch b = {0};
    ad_bleu_stats stats = {0};
    int32_t stop[AD_MAX_STOP_IDS];
    const int n_stop = ad_stop_ids(cfg, tok, stop);
    int32_t gen_tokens[EVAL_MAX_NEW_TOKENS];
    int gen_len = 0;
    float gen_score = 0;
    ad_generate_output out = {gen_tokens, &gen_len, &gen_score};
    ad_generate_params gp = {.num_beams = 1,
                             .length_penalty = 1,
                             .max_new_tokens = EVAL_MAX_NEW_TOKENS,
                             .stop_ids = stop,
                             .n_stop = n_stop};
    ad_bleu_tokenizer btok = !strcmp(r->langs[0], "zh") ? AD_BLEU_TOK_ZH : AD_BLEU_TOK_13A;
    rc = ad_model_state_init(&st, &r->student, &lim);
    const int n = (int)(dev.n_segments < EVAL_BLEU_SEGMENTS ? dev.n_segments : EVAL_BLEU_SEGMENTS);
    for (int i = 0; i < n && rc == AD_OK; i++) {
        int32_t ex = i;
        char *text = NULL, *ref = NULL;
        rc = ad_loader_fill(&dev, &ex, 1, &b);
        if (rc < 0) break;
        ad_tensor feat;
        ad_tensor_init(&feat, b.features, AD_F32, AD_DEVICE_CPU, 3,
                       (int64_t[]){1, b.n_mels, b.max_frames}, "features");
        int prompt_len = ad_batch_prompt_len(&b, 0);
        const int32_t *prompts[1] = {b.ids};
        ad_model_state_reset(&st);
        rc = ad_model_encode(&st, &feat, b.frames);
        if (rc == AD_OK) rc = ad_generate(&st, prompts, &prompt_len, 1, true, &gp, &out);
        if (rc == AD_OK)
            rc = ad_tokenizer_decode(tok, gen_tokens,
                                     ad_tokenizer_drop_unknown(tok, gen_tokens, gen_len), 1, &text);
        if (rc == AD_OK) rc = ad_prepared_text(dev.set, r->langs[0], i, &ref);
        if (rc == AD_OK) rc = ad_bleu_add(&stats, text, ref, btok);
        free(text), free(ref);
    }
    if (rc == AD_OK) *bleu = ad_bleu_score(&stats, false).score;
    ad_batch_free(&b);
    if (st.m) ad_model_state_free(&st);
    ad_loader_close(&dev);
    ad_tokenizer_free(tok);
    return rc;
}

static int save_checkpoint_files(run_ctx *r, int64_t step) {
    AD_TRY(ad_params_sync_host(&r->params));
    ad_st_write_item *mi = NULL, *oi = NULL;
    char **names = NULL;
    void **owned = NULL;
    const int n_opt = ad_params_checkpoint_items(&r->student, &r->params, &mi, &oi, &names, &owned);
    int rc = n_opt < 0 ? AD_ERR : AD_OK;
    char *config = rc == AD_OK ? ad_model_config_to_json(&r->student.cfg, NULL) : NULL;
    cJSON *state = cJSON_CreateObject();
    cJSON_AddNumberToObject(state, "epoch", (double)r->loader.cursor.epoch);
    cJSON_AddNumberToObject(state, "position", (double)r->loader.cursor.position);
    char hash[32];
    snprintf(hash, sizeof hash, "%016llx", (unsigned long long)config_hash(r->flat));
    cJSON_AddStringToObject(state, "config_hash", hash);
    cJSON_AddItemToObject(state, "config", cJSON_Duplicate(r->flat, 1));
    char *state_text = cJSON_PrintUnformatted(state);
    cJSON_Delete(state);
    if (rc == AD_OK && config && state_text)
        rc = ad_checkpoint_save(r->job->output, step, mi, r->params.n_specs, oi, n_opt, config,
                                state_text, (int)r->job->train.keep_checkpoints);
    else
        rc = AD_ERR;
    for (int i = 0; names && i < 3 * r->params.n_params; i++)
        free(names[i]);
    for (int i = 0; owned && i < r->params.n_specs; i++)
        free(owned[i]);
    free(owned), free(names), free(mi), free(oi), free(config), free(state_text);
    return rc;
}

/* Collective: with ZeRO-1 the moment shards are gathered first; only rank 0 writes, always
 * the full state, so any rank count can resume. */
static int save_checkpoint(run_ctx *r, int64_t step) {
    float *fm, *fv;
    AD_TRY(ad_device_opt_gather_moments(&r->params));
    AD_TRY(ad_dist_opt_full_moments(&r->dist, &fm, &fv));
    int rc = AD_OK;
    if (r->comm->rank == 0) {
        for (int i = 0; fm && i < r->params.n_params; i++)
            r->params.params[i].m = fm + r->dist.offset[i],
            r->params.params[i].v = fv + r->dist.offset[i];
        rc = save_checkpoint_files(r, step);
        for (int i = 0; fm && i < r->params.n_params; i++)
            r->params.params[i].m = r->params.params[i].v = NULL;
    }
    free(fm), free(fv);
    return rc;
}

/* This rank's share of the global batch's gradients, scaled by 1 / (supervised tokens of the
 * whole global batch), so that their sum over the ranks is the single-process gradient; *sums
 * receives the loss sums of the whole global batch, *supervised its token count. */
static int forward_backward(run_ctx *r, const int32_t *ex, int n, ad_distill_sums *sums,
                            int64_t *supervised) {
    const int mb = (int)r->job->train.micro_batch, n_micro = (n + mb - 1) / mb;
    double count = 0;
    for (int k = 0; k < n_micro; k++) {
        AD_TRY(ad_loader_fill(&r->loader, ex + k * mb, n - k * mb < mb ? n - k * mb : mb,
                              &r->micro[k]));
        count += r->micro[k].supervised;
    }
    AD_TRY(r->comm->allreduce_sum_f64(r->comm, &count, 1));
    *supervised = (int64_t)count;
    *sums = (ad_distill_sums){0};
    r->ctc_sums = (ad_ctc_sums){0};
    for (int k = 0; k < n_micro; k++)
        AD_TRY(micro_step(r, &r->micro[k], 1.0 / (count > 0 ? count : 1), true, sums));
    if (n_micro == 0) /* a rank without examples: no backward wrote the deferred zeros */
        AD_TRY(ad_graph_settle_grads(&r->sg));
    double s[7] = {sums->loss,
                   sums->kl,
                   sums->ce,
                   (double)sums->rows,
                   r->ctc_sums.nll,
                   r->ctc_sums.tokens,
                   r->ctc_sums.infeasible};
    AD_TRY(r->comm->allreduce_sum_f64(r->comm, s, 7));
    *sums = (ad_distill_sums){s[0], s[1], s[2], (int64_t)s[3]};
    r->ctc_sums = (ad_ctc_sums){s[4], s[5], s[6]};
    return AD_OK;
}

/* Rank 0 decides which checkpoint (if any) the job resumes; every rank gets its path. */
static int agree_on_checkpoint(ad_comm *c, char **ckpt) {
    if (c->world == 1) return AD_OK;
    int64_t len = c->rank == 0 && *ckpt ? (int64_t)strlen(*ckpt) + 1 : 0;
    AD_TRY(c->broadcast(c, &len, sizeof len, 0));
    if (c->rank != 0) {
        free(*ckpt);
        *ckpt = len ? ad_calloc((size_t)len, 1, "checkpoint path") : NULL;
        if (len && !*ckpt) return AD_ERR;
    }
    return len ? c->broadcast(c, *ckpt, len, 0) : AD_OK;
}

/* One log line with the ranks, how the gradients are summed, and each rank's optimizer-state
 * bytes (ZeRO-1 divides them). Collective. */
static int log_data_parallel(run_ctx *r) {
    ad_comm *c = r->comm;
    if (c->world == 1 && !r->job->train.zero) return AD_OK;
    const bool device = r->params.on_device;
    int64_t n = 0;
    for (int i = 0; i < r->params.n_params; i++)
        n += r->params.params[i].n;
    double *bytes = ad_calloc((size_t)c->world, sizeof *bytes, "optimizer bytes");
    if (!bytes) return AD_ERR;
    bytes[c->rank] = (double)(device ? ad_device_opt_state_bytes(&r->params)
                                     : ad_dist_opt_state_bytes(&r->dist));
    int rc = c->allreduce_sum_f64(c, bytes, c->world);
    char list[512] = "", how[256];
    for (int i = 0, w = 0; rc == AD_OK && i < c->world && w < (int)sizeof list - 24; i++)
        w += snprintf(list + w, sizeof list - (size_t)w, "%s%.0f", i ? " " : "", bytes[i]);
    if (device)
        snprintf(how, sizeof how,
                 ": gradients summed on the %s backend by the %s communicator, the optimizer on "
                 "every rank's device",
                 r->be->name, r->grad_comm ? r->grad_comm->name : c->name);
    else
        snprintf(how, sizeof how, " (%s communicator)", c->name);
    if (rc == AD_OK)
        ad_info("data parallel over %d ranks%s%s: optimizer state bytes per rank: %s (unsharded: "
                "%lld)",
                c->world, how, r->job->train.zero ? ", ZeRO-1" : "", list,
                (long long)(2 * sizeof(float) * n));
    free(bytes);
    return rc;
}

/* train.optimizer: device over several ranks: the gradients are summed where they are. On a
 * CUDA backend that is NCCL, bootstrapped through the host communicator; the CPU backend's
 * tensors are host memory, so the host communicator sums them itself. */
static int open_grad_comm(run_ctx *r) {
    if (r->comm->world == 1) return AD_OK;
    if (r->be->device == AD_DEVICE_CPU) {
        r->grad_comm = r->comm;
        return AD_OK;
    }
    if (ad_comm_nccl(r->comm, NULL, &r->grad_comm) < 0)
        return ad_fail_context("train.optimizer: device over %d ranks sums the gradients on the "
                               "GPUs through NCCL (optimizer: host sums them through %s on the "
                               "host)",
                               r->comm->world, r->comm->name);
    return AD_OK;
}

static int write_final_f32(run_ctx *r, const char *tmp) {
    AD_TRY(ad_params_sync_host(&r->params));
    AD_TRY(ad_mkdir_p(tmp));
    ad_st_write_item *mi = NULL, *oi = NULL;
    char **names = NULL;
    void **owned = NULL;
    int rc = ad_params_checkpoint_items(&r->student, &r->params, &mi, &oi, &names, &owned) < 0
                 ? AD_ERR
                 : AD_OK;
    char path[4400];
    snprintf(path, sizeof path, "%s/model.safetensors", tmp);
    ad_st_metadata meta[] = {{"format", "pt"}};
    const ad_dtype store = !strcmp(r->job->output_dtype, "bf16") ? AD_BF16 : AD_F32;
    if (rc == AD_OK) rc = ad_safetensors_write_as(path, mi, r->params.n_specs, meta, 1, store);
    char *config = ad_model_config_to_json(&r->student.cfg, NULL);
    snprintf(path, sizeof path, "%s/config.json", tmp);
    if (rc == AD_OK) rc = config ? ad_write_file_atomic(path, config, strlen(config)) : AD_ERR;
    if (rc == AD_OK) rc = copy_files(r->job->student, tmp);
    for (int i = 0; names && i < 3 * r->params.n_params; i++)
        free(names[i]);
    for (int i = 0; owned && i < r->params.n_specs; i++)
        free(owned[i]);
    free(owned), free(names), free(mi), free(oi), free(config);
    return rc;
}

/* A quantization-aware run ends as a compact model: the quantized weights' codes from the
 * masters and the (learned) scales, the rest in bf16 — the values the last step's forward used. */
static int write_final_quantized(run_ctx *r, const char *tmp) {
    const ad_param_table *t = &r->params;
    ad_compact_weight *out = ad_calloc((size_t)t->n_specs, sizeof *out, "final model");
    ad_quant_tensor *q = ad_calloc((size_t)t->n_specs, sizeof *q, "final model");
    float **copies = ad_calloc((size_t)t->n_specs, sizeof *copies, "final model");
    int rc = out && q && copies ? AD_OK : AD_ERR;
    for (int s = 0; s < t->n_specs && rc == AD_OK; s++) {
        const ad_weight_spec *sp = &t->specs[s];
        const int64_t numel = ad_weight_spec_numel(sp);
        const float *data;
        float *owned;
        rc = ad_params_weight_values(&r->student, t, s, &data, &owned);
        if (rc < 0) break;
        /* The writer converts kept weights to bf16 in place: always hand it a private copy. */
        copies[s] = owned ? owned : ad_malloc(sizeof(float) * (size_t)numel + 4, sp->name);
        if (!copies[s]) {
            rc = AD_ERR;
            break;
        }
        if (!owned) memcpy(copies[s], data, sizeof(float) * (size_t)numel);
        out[s] = (ad_compact_weight){
            sp->name, sp->ndim, {sp->shape[0], sp->shape[1], sp->shape[2]}, copies[s], NULL, NULL};
        const ad_qat_weight *w = ad_qat_find(&t->qat, sp->name);
        if (!w) continue;
        rc = ad_quant_alloc(&q[s], &w->spec, w->rows, w->cols, sp->name);
        if (rc < 0) break;
        ad_qat_export(w, copies[s], &q[s]);
        out[s].q = &q[s];
        out[s].method = "qat";
    }
    if (rc == AD_OK) rc = ad_compact_model_write(out, t->n_specs, r->job->student, tmp);
    for (int s = 0; s < t->n_specs; s++) {
        if (q) ad_quant_free(&q[s]);
        free(copies ? copies[s] : NULL);
    }
    free(out), free(q), free(copies);
    return rc;
}

static int write_final(run_ctx *r) {
    char dir[4200], tmp[4300];
    snprintf(dir, sizeof dir, "%s/final", r->job->output);
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", dir, (long)getpid());
    int rc = r->params.qat.n ? write_final_quantized(r, tmp) : write_final_f32(r, tmp);
    if (rc < 0) {
        if (ad_path_exists(tmp) && ad_remove_tree(tmp) < 0) ad_warn("could not remove %s", tmp);
        return rc;
    }
    if (ad_is_directory(dir)) {
        char old[4400];
        snprintf(old, sizeof old, "%s.old.%ld", dir, (long)getpid());
        if (rename(dir, old) != 0) return ad_fail("cannot move the previous %s aside", dir);
        if (ad_remove_tree(old) < 0) ad_warn("could not remove %s", old);
    }
    if (rename(tmp, dir) != 0) return ad_fail("cannot rename %s to %s", tmp, dir);
    return ad_fsync_directory(r->job->output);
}

/* distill.share_encoder: the teacher's graph takes the student's encoder output when the two
 * encoders are one (checked after any rounding of the student's frozen weights). */
static int share_teacher_encoder(run_ctx *r) {
    if (!r->job->distill.share_encoder) return AD_OK;
    if (r->sg.train.audio_encoder) {
        ad_info("the teacher runs its own audio encoder: the student's trains (train.trainable)");
        return AD_OK;
    }
    bool same;
    char why[AD_WEIGHT_NAME_MAX + 64];
    AD_TRY(ad_model_same_audio_encoder(&r->teacher, &r->student, &same, why, sizeof why));
    if (!same) {
        ad_info("the teacher runs its own audio encoder: the student's is not the same (%s)", why);
        return AD_OK;
    }
    const size_t own = r->tg.arena.capacity;
    AD_TRY(ad_graph_share_encoder(&r->tg, &r->sg));
    ad_info("the teacher reuses the student's audio encoder output (%s; distill.share_encoder): "
            "%.1f MiB fewer teacher activations",
            why, (double)(own - r->tg.arena.capacity) / (1024.0 * 1024.0));
    return AD_OK;
}

bool ad_train_student_bf16(const ad_train_options *o) {
    return !strcmp(o->student_weights, "bf16") ||
           (!strcmp(o->student_weights, "auto") && !strcmp(o->precision, "bf16"));
}

/* ad_model_load_mixed's choice for a student computing in bf16: its GEMM weights, trained or
 * frozen (the frozen ones' fp32 values stay on the host for checkpoints). */
static bool student_bf16_weight(const ad_weight_spec *s, void *unused) {
    (void)unused;
    return ad_params_is_gemm_weight(s);
}

void ad_train_trainable(const ad_train_options *o, ad_trainable *t) {
    const char *mode = o->trainable;
    *t = (ad_trainable){.audio_encoder = true,
                        .projector = true,
                        .decoder = true,
                        .embed_tokens = true,
                        .lm_head = true};
    if (!strcmp(mode, "decoder"))
        *t = (ad_trainable){.decoder = true, .lm_head = true};
    else if (!strcmp(mode, "no_audio_encoder"))
        t->audio_encoder = false;
    else if (!strcmp(mode, "no_embeddings"))
        t->embed_tokens = false;
    t->recompute = o->recompute;
}

/* train --benchmark: each step's time with the device drained, then a summary. The op table
 * counts the FLOPs it is asked for (backend/profile.h), which gives TFLOP per step and per s. */
typedef struct {
    double start, *ms, tokens;
    double flops_warm, flops_last; /* counted after the first step and after the last */
    double peak_tflops;            /* the device's dense bf16 peak (0: unknown): MFU */
    int64_t n, cap;
} step_timer;

static int step_timer_init(step_timer *t, ad_backend *be, int64_t steps) {
    t->cap = steps;
    AD_TRY(ad_device_peak_for_run(be->device_name, &t->peak_tflops)); /* before any step runs */
    t->ms = ad_calloc((size_t)steps, sizeof *t->ms, "step times");
    if (!t->ms) return AD_ERR;
    return ad_backend_count_flops(be);
}

static int step_timer_stop(step_timer *t, ad_backend *be, int64_t supervised) {
    if (be->synchronize) AD_TRY(be->synchronize(be));
    if (t->n < t->cap) t->ms[t->n++] = 1e3 * (ad_now_seconds() - t->start);
    if (t->n > 1) t->tokens += (double)supervised; /* the first step is the warm-up */
    if (t->n == 1 && ad_backend_profile_timing(be)) {
        /* AUDISTILL_PROFILE: the warm-up step's one-time costs (first launches, allocations)
         * and the loading before it stay out of the op table */
        AD_TRY(ad_backend_profile_start(be));
    }
    t->flops_last = ad_backend_profile_flops(be);
    if (t->n == 1) t->flops_warm = t->flops_last;
    return AD_OK;
}

static int step_timer_report(step_timer *t, run_ctx *r) {
    if (r->comm->rank != 0) return AD_OK;
    const double first = t->ms[0];
    double total = 0;
    for (int64_t i = 1; i < t->n; i++)
        total += t->ms[i];
    if (t->n > 1) qsort(t->ms + 1, (size_t)(t->n - 1), sizeof *t->ms, ad_compare_doubles);
    const double median = t->n > 1 ? t->ms[1 + (t->n - 1) / 2] : first;
    size_t free_b = 0, total_b = 0;
    char mem[96] = "";
    if (r->be->memory_info && r->be->memory_info(r->be, &free_b, &total_b) == AD_OK)
        snprintf(mem, sizeof mem, ", device memory in use %.2f GiB of %.2f",
                 (double)(total_b - free_b) / (1 << 30), (double)total_b / (1 << 30));
    else if (r->be->memory_info)
        ad_error_clear(); /* the summary prints without it */
    /* the timed steps' mean count: batches differ in length */
    const double flops = t->n > 1 ? (t->flops_last - t->flops_warm) / (double)(t->n - 1) : 0;
    char rate[384] = "";
    const double peak = t->peak_tflops;
    if (flops > 0) {
        const double tflops = flops / 1e12 / (median / 1e3);
        const int n =
            snprintf(rate, sizeof rate, ", %.5g GFLOP per step in the table's ops, %.3g TFLOP/s",
                     flops / 1e9, tflops);
        /* MFU: the model FLOPs the op table counted (not the optimizer's) over the peak */
        if (peak > 0 && n > 0 && (size_t)n < sizeof rate)
            snprintf(rate + n, sizeof rate - (size_t)n,
                     ", MFU %.1f%% of %s (%.4g TFLOP/s dense bf16)", 100.0 * tflops / peak,
                     r->be->device_name[0] ? r->be->device_name : r->be->name, peak);
    }
    printf("benchmark: %lld steps on %s, median %.2f ms/step after the first (%.2f ms), %.0f "
           "supervised tokens/s%s%s\n",
           (long long)t->n, r->be->name, median, first, total > 0 ? 1e3 * t->tokens / total : 0.0,
           rate, mem);
    fflush(stdout);
    return AD_OK;
}

int ad_train_run(const ad_yaml_doc *doc, const ad_train_job *job,
                 const ad_train_run_options *opts) {
    run_ctx r;
    memset(&r, 0, sizeof r);
    r.job = job;
    int rc = AD_ERR;
    char *ckpt = NULL, *state_text = NULL;
    cJSON *state = NULL;
    step_timer timer = {0}; /* --benchmark */
    if (job->train.batch % job->train.micro_batch != 0) {
        ad_fail("%s: train.batch %lld is not a multiple of train.micro_batch %lld", doc->file_name,
                (long long)job->train.batch, (long long)job->train.micro_batch);
        return AD_ERR;
    }
    r.n_langs = job->data.langs.count ? job->data.langs.count : 2;
    for (int i = 0; i < r.n_langs && i < AD_LOADER_MAX_LANGS; i++)
        r.langs[i] = job->data.langs.count ? job->data.langs.values[i] : (i ? "zh" : "de");
    r.flat = cJSON_CreateObject();
    flatten(doc->root, "", r.flat);
    /* Everything that can be checked is checked before any work starts. */
    if (!ad_path_exists(job->data.train)) {
        ad_fail("%s: data.train %s does not exist (run audistill prepare)", doc->file_name,
                job->data.train);
        goto done;
    }
    if (job->data.dev && !ad_path_exists(job->data.dev)) {
        ad_fail("%s: data.dev %s does not exist", doc->file_name, job->data.dev);
        goto done;
    }
    if (job->teacher && !ad_is_directory(job->teacher)) {
        ad_fail("%s: teacher %s is not a model directory", doc->file_name, job->teacher);
        goto done;
    }
    if (ad_comm_create(&r.comm) < 0 || ad_mkdir_p(job->output) < 0) goto done;
    if (opts->resume && r.comm->rank == 0) {
        if (ad_checkpoint_find(!strcmp(opts->resume, "auto") ? job->output : opts->resume, &ckpt) <
            0)
            goto done;
        if (!ckpt && strcmp(opts->resume, "auto") != 0) {
            ad_fail("%s holds no checkpoint", opts->resume);
            goto done;
        }
    }
    if (agree_on_checkpoint(r.comm, &ckpt) < 0) goto done;
    if (ckpt) {
        if (ad_checkpoint_state(ckpt, &state_text) < 0 || !(state = cJSON_Parse(state_text))) {
            ad_fail("checkpoint %s: state.json is damaged", ckpt);
            goto done;
        }
        const cJSON *cfg = cJSON_GetObjectItemCaseSensitive(state, "config");
        char diff[2048];
        if (cJSON_IsObject(cfg) && config_diff(cfg, r.flat, diff, sizeof diff) > 0 &&
            !opts->force) {
            ad_fail("checkpoint %s was made with a different job config: %s (use --force to resume "
                    "anyway)",
                    ckpt, diff);
            goto done;
        }
    }
    {
        char what[4200];
        snprintf(what, sizeof what, "%s: train.device", doc->file_name);
        /* one GPU per rank */
        if (ad_backend_create_for(job->train.device, (int)job->train.threads, r.comm->local_rank,
                                  what, &r.be) < 0)
            goto done;
        /* AUDISTILL_PROFILE=1: every op timed, the table printed at the end (backend/profile.h). */
        if (!strcmp(job->train.device, "cuda") && r.comm->rank == 0)
            print_gpu_plan(job, r.be, r.comm->world);
        if (!strcmp(job->train.precision, "bf16") &&
            (!r.be->set_bf16_matmul || r.be->set_bf16_matmul(r.be, true) < 0)) {
            ad_fail("%s: train.precision: bf16 needs bf16 GEMMs, which the %s backend does not "
                    "have (train.device: cuda; the CPU backend is the fp32 reference)",
                    doc->file_name, r.be->name);
            goto done;
        }
        if (ad_train_student_bf16(&job->train) && strcmp(job->train.precision, "bf16") != 0) {
            ad_fail("%s: train.student_weights: bf16 needs train.precision: bf16 (fp32 GEMMs "
                    "compute with the fp32 weights)",
                    doc->file_name);
            goto done;
        }
        if (strcmp(job->train.attention, "auto") != 0) {
            if (!r.be->set_attention) {
                ad_fail("%s: train.attention: %s needs train.device: cuda (the %s backend has one "
                        "attention)",
                        doc->file_name, job->train.attention, r.be->name);
                goto done;
            }
            if (r.be->set_attention(r.be, job->train.attention) < 0) goto done;
        }
        if (job->train.gemm_tuning) {
            if (!r.be->set_gemm_tuning) {
                ad_fail("%s: train.gemm_tuning: true needs train.device: cuda (the %s backend "
                        "has no GEMM algorithms to choose from)",
                        doc->file_name, r.be->name);
                goto done;
            }
            if (r.be->set_gemm_tuning(r.be, true) < 0) goto done;
            /* each rank times its own GPU; a resumed run (or a rerun into the same output)
             * computes with the algorithms chosen before */
            if (r.comm->rank == 0)
                snprintf(r.tuning_path, sizeof r.tuning_path, "%s/gemm_tuning.bin", job->output);
            else
                snprintf(r.tuning_path, sizeof r.tuning_path, "%s/gemm_tuning.rank%d.bin",
                         job->output, r.comm->rank);
            long loaded = 0;
            if (access(r.tuning_path, F_OK) == 0) {
                if (r.be->load_gemm_tuning(r.be, r.tuning_path, &loaded) < 0) goto done;
                if (loaded > 0)
                    ad_info("GEMM tuning: %ld choices loaded from %s", loaded, r.tuning_path);
            }
        }
        const char *prof = getenv("AUDISTILL_PROFILE");
        if (prof && *prof && strcmp(prof, "0") != 0 && ad_backend_profile_start(r.be) < 0)
            goto done;
    }
    /* The student starts from its directory, or from the checkpoint when resuming (which holds
     * the f32 masters of a quantization-aware run). A group-quantized student is trained
     * quantization-aware from the values its codes stand for. */
    if (ad_model_load_mixed(&r.student, r.be, ckpt ? ckpt : job->student, !ckpt, AD_BF16,
                            ad_train_student_bf16(&job->train) ? student_bf16_weight : NULL,
                            NULL) < 0)
        goto done;
    if (job->teacher) {
        /* frozen: in bf16 it costs half the memory, and its GEMMs round to bf16 anyway */
        const ad_dtype tw = strcmp(job->train.precision, "bf16") ? r.be->act_dtype : AD_BF16;
        if (ad_model_load_as(&r.teacher, r.be, job->teacher, tw) < 0) goto done;
        r.has_teacher = true;
        if (r.teacher.cfg.vocab_size != r.student.cfg.vocab_size) {
            ad_fail("teacher %s has a vocabulary of %d, the student %s of %d: distillation needs "
                    "the same vocabulary",
                    job->teacher, r.teacher.cfg.vocab_size, job->student, r.student.cfg.vocab_size);
            goto done;
        }
    } else if (job->distill.alpha > 0 && !job->distill.teacher_cache &&
               ad_yaml_get(ad_yaml_get(doc->root, "distill"), "alpha")) {
        ad_warn("distill.alpha is set but there is no teacher: training with cross-entropy only");
    }
    if (!strcmp(job->data.targets, "teacher") && !job->distill.teacher_cache) {
        ad_fail("%s: data.targets: teacher needs distill.teacher_cache (a cache made with "
                "translations)",
                doc->file_name);
        goto done;
    }
    const bool kl_teacher = r.has_teacher || job->distill.teacher_cache;
    r.dp = (ad_distill_params){.alpha = kl_teacher ? (float)job->distill.alpha : 0.0f,
                               .temperature = (float)job->distill.temperature,
                               .kind = kl_kind(job->distill.kind),
                               .skew = (float)job->distill.skew};
    ad_graph_limits lim;
    ad_train_limits(job, &r.student.cfg, &lim);
    ad_trainable tr;
    ad_train_trainable(&job->train, &tr);
    ad_trainable none = {0};
    if (ad_graph_init(&r.sg, &r.student, &lim, &tr) < 0 ||
        (r.has_teacher && ad_graph_init(&r.tg, &r.teacher, &lim, &none) < 0) ||
        ad_params_build(&r.sg, job->student, !strcmp(job->qat.scales, "learned"), &r.params) < 0)
        goto done;
    if (r.params.qat.n)
        ad_info("quantization-aware training: %d group-quantized weights (%s scales); the "
                "final model is stored in the same format",
                r.params.qat.n, job->qat.scales);
    if (ad_loader_open(&r.loader, job->data.train, r.n_langs, r.langs,
                       r.student.cfg.audio_token_index, (uint64_t)job->train.seed, true) < 0)
        goto done;
    ad_loader_set_window(&r.loader, lim.max_frames);
    if (job->ctc.weight > 0) {
        if (job->distill.teacher_cache) {
            ad_fail("%s: ctc.weight needs the teacher's rows at the audio positions, which a "
                    "teacher cache does not hold: use `teacher` or set ctc.weight to 0",
                    doc->file_name);
            goto done;
        }
        if (ad_loader_set_ctc(&r.loader, job->ctc.transcript) < 0) goto done;
        ad_info("CTC on the audio positions: weight %g, transcripts from %s's \"%s\" targets, "
                "blank <|AUDIO|> (%d)",
                job->ctc.weight, job->data.train, job->ctc.transcript,
                r.student.cfg.audio_token_index);
    }
    ad_loader_set_input_dropout(&r.loader, (float)job->train.input_dropout,
                                r.student.cfg.pad_token_id >= 0 ? r.student.cfg.pad_token_id
                                                                : r.student.cfg.eos_token_id);
    if (job->distill.teacher_cache &&
        ad_cached_teacher_open(&r.cached, doc->file_name, job, r.be, r.student.cfg.vocab_size,
                               lim.max_frames, &r.loader) < 0)
        goto done;
    {
        int longest, seg;
        const char *lang;
        if (ad_loader_longest(&r.loader, &longest, &seg, &lang) < 0) goto done;
        if (longest > lim.max_len) {
            ad_fail("%s: train.max_len is %d but segment %d of %s (%s) needs %d tokens (prompt, "
                    "audio placeholders and target): raise train.max_len to at least %d",
                    doc->file_name, lim.max_len, seg, job->data.train, lang, longest, longest);
            goto done;
        }
    }
    int64_t start_step = 0;
    if (ckpt) {
        const cJSON *step = cJSON_GetObjectItemCaseSensitive(state, "step"),
                    *ep = cJSON_GetObjectItemCaseSensitive(state, "epoch"),
                    *pos = cJSON_GetObjectItemCaseSensitive(state, "position");
        if (!cJSON_IsNumber(step) || !cJSON_IsNumber(ep) || !cJSON_IsNumber(pos)) {
            ad_fail("checkpoint %s: state.json lacks step/epoch/position", ckpt);
            goto done;
        }
        start_step = (int64_t)step->valuedouble;
        if (ad_params_load_moments(ckpt, &r.params) < 0 ||
            ad_loader_seek(&r.loader, (ad_loader_cursor){(int64_t)ep->valuedouble,
                                                         (int64_t)pos->valuedouble}) < 0)
            goto done;
        ad_info("resuming from %s (step %lld)", ckpt, (long long)start_step);
    }
    /* The device holds what the quantized model computes with, not the masters. */
    if (r.params.qat.n &&
        (ad_params_upload(&r.params) < 0 || ad_params_round_frozen(&r.student, &r.params) < 0))
        goto done;
    /* the frozen bf16 weights' fp32 values serve checkpoints, which rank 0 alone writes */
    if (r.comm->rank != 0) ad_model_free_masters(&r.student);
    if (r.params.n_bf16)
        ad_info("the student computes in bf16: its GEMM weights stored as bf16, the %d trained "
                "ones with fp32 masters on the %s",
                r.params.n_bf16,
                strcmp(job->train.optimizer, "device") ? "host"
                : job->train.zero                      ? "device (this rank's slices)"
                                                       : "device");
    if (!strcmp(job->train.optimizer, "device")) {
        if (open_grad_comm(&r) < 0 ||
            ad_device_opt_init(&r.params, r.grad_comm, r.comm, job->train.zero != 0) < 0 ||
            log_data_parallel(&r) < 0)
            goto done;
    } else if (ad_dist_opt_init(&r.dist, r.comm, job->train.zero != 0, r.params.params,
                                r.params.n_params) < 0 ||
               log_data_parallel(&r) < 0) {
        goto done;
    }
    if (r.has_teacher && share_teacher_encoder(&r) < 0) goto done;
    if (r.comm->rank == 0 && ad_metrics_open(&r.metrics, job->output) < 0) goto done;
    ad_info("training %s for %lld steps (%d trainable tensors, %s%s), batch %lld in micro-batches "
            "of %lld",
            job->student, (long long)job->train.steps, r.params.n_params,
            kl_teacher ? "distillation from " : "cross-entropy only",
            job->distill.teacher_cache ? job->distill.teacher_cache
            : r.has_teacher            ? job->teacher
                                       : "",
            (long long)job->train.batch, (long long)job->train.micro_batch);
    const int n_micro = (int)(job->train.batch / job->train.micro_batch);
    r.micro = ad_calloc((size_t)n_micro, sizeof *r.micro, "micro-batches");
    int32_t *ex = ad_malloc(sizeof(int32_t) * (size_t)job->train.batch, "batch");
    if (!r.micro || !ex) goto done;
    ad_schedule sched = {!strcmp(job->train.schedule, "linear")     ? AD_SCHEDULE_LINEAR
                         : !strcmp(job->train.schedule, "constant") ? AD_SCHEDULE_CONSTANT
                                                                    : AD_SCHEDULE_COSINE,
                         job->train.lr, job->train.warmup, job->train.steps,
                         job->train.min_lr_ratio};
    ad_adamw_config ac = {job->train.beta1, job->train.beta2, job->train.eps,
                          job->train.weight_decay};
    ad_progress progress;
    ad_progress_start(&progress, "train", job->train.steps, "steps");
    double t0 = ad_now_seconds(), tokens_since = 0, t_log = t0;
    if (opts->benchmark > 0 && step_timer_init(&timer, r.be, opts->benchmark) < 0) goto fail_loop;
    for (int64_t step = start_step; step < job->train.steps; step++) {
        timer.start = ad_now_seconds();
        int n;
        if (ad_loader_next(&r.loader, (int)job->train.batch, r.comm->rank, r.comm->world, ex, &n) <
            0)
            goto fail_loop;
        int64_t supervised;
        ad_distill_sums sums;
        if (forward_backward(&r, ex, n, &sums, &supervised) < 0) goto fail_loop;
        ad_dist_fault_point(r.comm, step + 1);
        if (!r.params.on_device && ad_params_download_grads(&r.params) < 0) goto fail_loop;
        const double loss = sums.loss / (double)(sums.rows ? sums.rows : 1),
                     ctc = r.ctc_sums.nll / (r.ctc_sums.tokens > 0 ? r.ctc_sums.tokens : 1);
        if (!isfinite(loss) || !isfinite(ctc)) {
            ad_fail(
                "step %lld: the loss is not finite (%g, CTC %g): stopping; the last checkpoint is "
                "intact",
                (long long)step + 1, loss, ctc);
            goto fail_loop;
        }
        const double lr = ad_schedule_lr(&sched, step);
        double norm;
        if (r.params.on_device
                ? ad_device_opt_step(&r.params, job->train.clip, &ac, lr, step + 1, &norm) < 0
                : ad_dist_opt_step(&r.dist, job->train.clip, &ac, lr, step + 1, &norm) < 0)
            goto fail_loop;
        if (!isfinite(norm)) {
            ad_fail("step %lld: the gradient norm is not finite: stopping; the last checkpoint is "
                    "intact",
                    (long long)step + 1);
            goto fail_loop;
        }
        if ((!r.params.on_device && ad_params_upload(&r.params) < 0) ||
            ad_graph_zero_grads(&r.sg) < 0)
            goto fail_loop;
        tokens_since += supervised;
        long tuned_saved = 0; /* new choices: written once, after the step that made them */
        if (r.tuning_path[0] && r.be->save_gemm_tuning(r.be, r.tuning_path, &tuned_saved) < 0)
            goto fail_loop;
        const int64_t done_steps = step + 1;
        if (opts->benchmark > 0 && step_timer_stop(&timer, r.be, supervised) < 0) goto fail_loop;
        if (done_steps % job->train.log_every == 0 || done_steps == job->train.steps) {
            const double now = ad_now_seconds(), tps = tokens_since / fmax(now - t_log, 1e-9);
            const char *tags[] = {"train/loss", "train/kl",        "train/ce",
                                  "train/lr",   "train/grad_norm", "train/tokens_per_s"};
            const double vals[] = {loss,
                                   sums.kl / (double)(sums.rows ? sums.rows : 1),
                                   sums.ce / (double)(sums.rows ? sums.rows : 1),
                                   lr,
                                   norm,
                                   tps};
            if (r.comm->rank == 0 && ad_metrics_write(&r.metrics, done_steps, 6, tags, vals) < 0)
                goto fail_loop;
            if (job->ctc.weight > 0 && r.comm->rank == 0) {
                const char *ctags[] = {"train/ctc", "train/ctc_infeasible"};
                const double cvals[] = {ctc, r.ctc_sums.infeasible};
                if (ad_metrics_write(&r.metrics, done_steps, 2, ctags, cvals) < 0) goto fail_loop;
            }
            char note[192], ctc_note[32] = "";
            if (job->ctc.weight > 0) snprintf(ctc_note, sizeof ctc_note, " ctc %.3f", ctc);
            snprintf(note, sizeof note, "loss %.4f (kl %.4f ce %.4f)%s lr %.2e |g| %.3f %.0f tok/s",
                     vals[0], vals[1], vals[2], ctc_note, lr, norm, tps);
            ad_progress_update(&progress, done_steps, note);
            if (!progress.enabled && !opts->quiet)
                ad_info("step %lld/%lld  %s", (long long)done_steps, (long long)job->train.steps,
                        note);
            tokens_since = 0, t_log = now;
        }
        if (opts->benchmark > 0 && timer.n == opts->benchmark) {
            ad_progress_finish(&progress);
            rc = step_timer_report(&timer, &r);
            goto fail_loop;
        }
        if (job->data.dev && job->train.eval_every && done_steps % job->train.eval_every == 0 &&
            r.comm->rank == 0) { /* the others wait for it at the next step's collectives */
            double dl, dk, dc;
            if (evaluate(&r, &dl, &dk, &dc) < 0) goto fail_loop;
            double bleu;
            if (evaluate_bleu(&r, &bleu) < 0) goto fail_loop;
            const char *tags[] = {"dev/loss", "dev/kl", "dev/ce", "dev/bleu"};
            const double vals[] = {dl, dk, dc, bleu};
            if (ad_metrics_write(&r.metrics, done_steps, bleu >= 0 ? 4 : 3, tags, vals) < 0)
                goto fail_loop;
            if (!opts->quiet)
                ad_info("step %lld dev loss %.4f (kl %.4f ce %.4f)%s%.2f", (long long)done_steps,
                        dl, dk, dc, bleu >= 0 ? ", greedy BLEU " : "", bleu >= 0 ? bleu : 0.0);
        }
        const bool stopping = opts->stop_after > 0 && done_steps - start_step >= opts->stop_after;
        if (done_steps % job->train.checkpoint_every == 0 || done_steps == job->train.steps ||
            stopping)
            if (save_checkpoint(&r, done_steps) < 0) goto fail_loop;
        if (stopping && done_steps < job->train.steps) {
            ad_progress_finish(&progress);
            ad_info("stopped after %lld steps as asked; resume with --resume auto",
                    (long long)opts->stop_after);
            rc = AD_OK;
            goto fail_loop;
        }
    }
    ad_progress_finish(&progress);
    if (r.comm->rank == 0 && write_final(&r) < 0) goto fail_loop;
    ad_info("done in %.1f s; final model in %s/final", ad_now_seconds() - t0, job->output);
    rc = AD_OK;
fail_loop:
    free(ex);
done:
    free(timer.ms);
    if (rc != AD_OK && r.comm && r.comm->world > 1) {
        /* the other ranks would wait for this one forever: end the whole job */
        ad_error_log("%s", ad_error());
        r.comm->abort(r.comm, 1);
    }
    ad_dist_opt_free(&r.dist);
    for (int k = 0; r.micro && k < (int)(job->train.batch / job->train.micro_batch); k++)
        ad_batch_free(&r.micro[k]);
    free(r.micro);
    ad_params_free(&r.params);
    if (r.sg.m) ad_graph_free(&r.sg);
    if (r.tg.m) ad_graph_free(&r.tg);
    if (r.loader.set) ad_loader_close(&r.loader);
    if (r.cached.cache) ad_cached_teacher_close(&r.cached);
    ad_ctc_term_free(&r.ctc);
    ad_metrics_close(&r.metrics);
    if (r.student.be) ad_model_free(&r.student);
    if (r.teacher.be) ad_model_free(&r.teacher);
    if (r.be && r.be->profile && (!r.comm || r.comm->rank == 0))
        ad_backend_profile_report(r.be, stderr, 0);
    if (r.grad_comm && r.grad_comm != r.comm) r.grad_comm->destroy(r.grad_comm);
    if (r.be) ad_backend_destroy(r.be);
    if (r.comm) r.comm->destroy(r.comm);
    cJSON_Delete(r.flat);
    cJSON_Delete(state);
    free(state_text), free(ckpt);
    return rc;
}
