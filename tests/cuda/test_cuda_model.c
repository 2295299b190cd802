/* The whole tiny model on the CUDA backend against the CPU reference: the training graph's
 * supervised logits, the fused loss and every parameter gradient for the gradient fixture's
 * batch (two clips of different lengths, right-padded prompts), then 20 distillation steps
 * (frozen teacher graph + student graph, KL + CE, AdamW on every trainable tensor) on both
 * backends from the same weights, comparing the loss of every step and the final weights.
 *
 * Two precisions:
 * - F32 weights on the GPU (act_dtype forced to F32): the same arithmetic in another order.
 *   Logits and gradients within 1e-4 relative L2 per tensor (a dozen chained fp32 ops, each
 *   within 1e-5 in the op tests); after 20 AdamW steps, losses within 1e-4 relative and
 *   weights within 1e-3 relative L2 (Adam divides by sqrt(v), which amplifies the tiny
 *   gradient differences of near-zero elements, so the bound is looser than one step's).
 * - BF16 weights (the backend's default): logits and gradients within 5e-2 relative L2, the
 *   error of rounding every weight to bf16 (2^-9 relative) carried through the layers.
 * - BF16 weights with bf16 GEMMs (ad_cuda_set_bf16_matmul, the training speed mode): every GEMM
 *   operand rounded to bf16 as well, within 8e-2; and the same bit for bit when the activations
 *   only GEMMs read are stored in bf16 (ad_graph_limits.gemm_inputs_bf16).
 *
 * And ad_model_load_mixed (a student computing in bf16): the weights it picks are BF16 on the
 * device, each element the file's value rounded to nearest even, and their fp32 masters on the
 * host are the file's values bit for bit (taken once); the rest load as F32 unchanged. */
#include "backend/cpu/cpu_backward.h"
#include "cuda_test_util.h"
#include "fixture_batch.h"
#include "model/train_graph.h"
#include "model/weights.h"
#include "train/optim.h"

static ad_safetensors ref;

/* Host F32 copy of any tensor of either backend. */
static float *to_host(ad_backend *be, const ad_tensor *t) {
    int64_t n = ad_tensor_numel(t);
    float *h = malloc(sizeof(float) * (size_t)n);
    if (t->device == AD_DEVICE_CPU && t->dtype == AD_F32) {
        memcpy(h, t->data, sizeof(float) * (size_t)n);
        return h;
    }
    ad_tensor dst;
    ad_tensor_init(&dst, h, AD_F32, AD_DEVICE_CPU, t->ndim, t->shape, "host copy");
    if (be->download(be, &dst, t) < 0) {
        fprintf(stderr, "download %s: %s\n", t->name ? t->name : "?", ad_error());
        exit(1);
    }
    return h;
}

static double rel_l2(const float *a, const float *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(a[i])) return INFINITY;
        num += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        den += (double)b[i] * b[i];
    }
    return den > 0 ? sqrt(num / den) : sqrt(num);
}

typedef struct {
    ad_backend *be;
    ad_model m, teacher;
    ad_train_graph g, t;
} side;

static const ad_trainable ALL = {.audio_encoder = true,
                                 .projector = true,
                                 .decoder = true,
                                 .embed_tokens = true,
                                 .lm_head = true};

static void side_init_with(side *s, ad_backend *be, const ad_batch *b, bool with_teacher,
                           bool gemm_inputs_bf16) {
    memset(s, 0, sizeof *s);
    s->be = be;
    ad_graph_limits lim = {.max_clips = b->n,
                           .max_frames = b->max_frames,
                           .max_len = b->max_len,
                           .max_supervised = 32,
                           .gemm_inputs_bf16 = gemm_inputs_bf16};
    if (ad_model_load(&s->m, be, AUDISTILL_FIXTURES "/tiny_a") < 0 ||
        ad_graph_init(&s->g, &s->m, &lim, &ALL) < 0) {
        fprintf(stderr, "%s: %s\n", be->name, ad_error());
        exit(1);
    }
    if (with_teacher) {
        ad_trainable none = {0};
        if (ad_model_load(&s->teacher, be, AUDISTILL_FIXTURES "/tiny_a") < 0 ||
            ad_graph_init(&s->t, &s->teacher, &lim, &none) < 0) {
            fprintf(stderr, "%s teacher: %s\n", be->name, ad_error());
            exit(1);
        }
    }
}

static void side_init(side *s, ad_backend *be, const ad_batch *b, bool with_teacher) {
    side_init_with(s, be, b, with_teacher, false);
}

static void side_free(side *s, bool with_teacher) {
    ad_graph_free(&s->g);
    ad_model_free(&s->m);
    if (with_teacher) {
        ad_graph_free(&s->t);
        ad_model_free(&s->teacher);
    }
}

/* One forward + loss + backward; returns the loss sums. teacher NULL: cross-entropy only. */
static ad_distill_sums step_loss(side *s, const ad_batch *b, bool distill) {
    ad_backend *be = s->be;
    ad_distill_sums sums = {0};
    CHECK_OK(ad_graph_zero_grads(&s->g));
    if (distill) CHECK_OK(ad_graph_forward(&s->t, b));
    CHECK_OK(ad_graph_forward(&s->g, b));
    const int S = s->g.n_supervised;
    const int64_t V = s->m.cfg.vocab_size;
    ad_tensor logits, targets, tlogits;
    ad_tensor_init(&logits, s->g.logits.data, AD_F32, be->device, 2, (int64_t[]){S, V}, "logits");
    ad_tensor_init(&targets, s->g.targets.data, AD_I32, be->device, 1, (int64_t[]){S}, "targets");
    ad_tensor_init(&tlogits, distill ? s->t.logits.data : NULL, AD_F32, be->device, 2,
                   (int64_t[]){S, V}, "teacher logits");
    ad_distill_params p = {.alpha = distill ? 0.5f : 0,
                           .temperature = distill ? 2.0f : 1.0f,
                           .kind = AD_KL_FORWARD,
                           .grad_scale = 1.0f / (float)S};
    CHECK_OK(
        be->distill_loss(be, &logits, &logits, distill ? &tlogits : NULL, &targets, &p, &sums));
    CHECK_OK(ad_graph_backward(&s->g));
    return sums;
}

static double compare_gradients(side *cpu, side *gpu, double tol, const char *label) {
    ad_weight_spec *specs;
    int n_specs;
    CHECK_OK(ad_weight_specs(&cpu->m.cfg, &specs, &n_specs));
    double worst = 0;
    const char *worst_name = "";
    int compared = 0;
    for (int i = 0; i < n_specs; i++) {
        const ad_tensor *gc = ad_model_weight(&cpu->g.grads, specs[i].name);
        const ad_tensor *gg = ad_model_weight(&gpu->g.grads, specs[i].name);
        CHECK(gc && gg && (gc->data == NULL) == (gg->data == NULL));
        if (!gc || !gg || !gc->data || !gg->data) continue;
        float *a = to_host(gpu->be, gg), *b = to_host(cpu->be, gc);
        double e = rel_l2(a, b, ad_tensor_numel(gc));
        CHECK_MSG(e <= tol, "%s gradient %s: relative L2 %.3g > %.1g", label, specs[i].name, e,
                  tol);
        if (e > worst || !isfinite(e)) worst = e, worst_name = specs[i].name;
        compared++;
        free(a);
        free(b);
    }
    printf("%s: %d parameter gradients, worst relative L2 %.3g (%s), tolerance %.1g\n", label,
           compared, worst, worst_name, tol);
    free(specs);
    return worst;
}

static void test_forward_backward(ad_dtype weights, bool bf16_matmul, double tol) {
    const char *label = weights == AD_F32 ? "f32 weights"
                        : bf16_matmul     ? "bf16 weights, bf16 GEMMs"
                                          : "bf16 weights";
    CHECK_OK(ad_cuda_set_bf16_matmul(g_gpu, bf16_matmul));
    ad_batch b;
    CHECK_OK(fixture_batch(&ref, &b));
    g_gpu->act_dtype = weights;
    side cpu, gpu;
    side_init(&cpu, g_cpu, &b, false);
    side_init(&gpu, g_gpu, &b, false);
    ad_distill_sums sc = {0}, sg = {0};
    /* Logits before the loss overwrites them with their gradient. */
    CHECK_OK(ad_graph_forward(&cpu.g, &b));
    CHECK_OK(ad_graph_forward(&gpu.g, &b));
    CHECK(cpu.g.n_supervised == gpu.g.n_supervised);
    float *lc = to_host(g_cpu, &cpu.g.logits), *lg = to_host(g_gpu, &gpu.g.logits);
    int64_t n = (int64_t)cpu.g.n_supervised * cpu.m.cfg.vocab_size;
    double le = rel_l2(lg, lc, n);
    printf("%s: supervised logits [%d x %lld] relative L2 %.3g\n", label, cpu.g.n_supervised,
           (long long)cpu.m.cfg.vocab_size, le);
    CHECK_MSG(le <= tol, "%s: logits relative L2 %.3g > %.1g", label, le, tol);
    free(lc);
    free(lg);
    sc = step_loss(&cpu, &b, false);
    sg = step_loss(&gpu, &b, false);
    printf("%s: cross-entropy %.7g (cpu) %.7g (cuda)\n", label, sc.loss, sg.loss);
    CHECK_MSG(fabs(sc.loss - sg.loss) <= tol * fabs(sc.loss), "%s: loss %.7g vs %.7g", label,
              sg.loss, sc.loss);
    CHECK(sc.rows == sg.rows);
    compare_gradients(&cpu, &gpu, tol, label);
    side_free(&cpu, false);
    side_free(&gpu, false);
    ad_batch_free(&b);
    CHECK_OK(ad_cuda_set_bf16_matmul(g_gpu, false));
}

typedef struct {
    const char *name;
    ad_tensor *w, *grad;
    float *m, *v; /* host (cpu) or device (cuda) */
    int64_t n;
    bool decay;
} opt_slot;

static int collect_slots(side *s, opt_slot **out) {
    ad_weight_spec *specs;
    int n_specs;
    CHECK_OK(ad_weight_specs(&s->m.cfg, &specs, &n_specs));
    opt_slot *slots = calloc((size_t)n_specs, sizeof *slots);
    int k = 0;
    for (int i = 0; i < n_specs; i++) {
        ad_tensor *gr = ad_model_weight(&s->g.grads, specs[i].name);
        if (!gr || !gr->data) continue;
        opt_slot *o = &slots[k++];
        o->name = strdup(specs[i].name);
        o->w = ad_model_weight(&s->m, specs[i].name);
        o->grad = gr;
        o->n = ad_tensor_numel(gr);
        o->decay = ad_param_decays(specs[i].name, specs[i].ndim);
        if (s->be->device == AD_DEVICE_CPU) {
            o->m = calloc((size_t)o->n, sizeof(float));
            o->v = calloc((size_t)o->n, sizeof(float));
        } else {
            CHECK_OK(s->be->alloc(s->be, sizeof(float) * (size_t)o->n, (void **)&o->m));
            CHECK_OK(s->be->alloc(s->be, sizeof(float) * (size_t)o->n, (void **)&o->v));
        }
    }
    free(specs);
    *out = slots;
    return k;
}

static void test_distillation_steps(void) {
    const int steps = 20;
    const ad_adamw_config ac = {.beta1 = 0.9, .beta2 = 0.999, .eps = 1e-8, .weight_decay = 0.01};
    const double lr = 2e-3;
    ad_batch b;
    CHECK_OK(fixture_batch(&ref, &b));
    g_gpu->act_dtype = AD_F32;
    side cpu, gpu;
    side_init(&cpu, g_cpu, &b, true);
    side_init(&gpu, g_gpu, &b, true);
    opt_slot *oc, *og;
    int nc = collect_slots(&cpu, &oc), ng = collect_slots(&gpu, &og);
    CHECK(nc == ng && nc > 0);
    double worst_loss = 0, first = 0, last = 0;
    for (int t = 1; t <= steps; t++) {
        ad_distill_sums sc = step_loss(&cpu, &b, true), sg = step_loss(&gpu, &b, true);
        double e = fabs(sc.loss - sg.loss) / fmax(fabs(sc.loss), 1e-12);
        worst_loss = fmax(worst_loss, e);
        if (t == 1) first = sc.loss / (double)sc.rows;
        last = sc.loss / (double)sc.rows;
        CHECK_MSG(e <= 1e-4, "step %d: loss %.7g (cuda) vs %.7g (cpu)", t, sg.loss, sc.loss);
        for (int i = 0; i < nc; i++) {
            ad_param_ref r = {.name = oc[i].name,
                              .param = oc[i].w->data,
                              .grad = oc[i].grad->data,
                              .m = oc[i].m,
                              .v = oc[i].v,
                              .n = oc[i].n,
                              .decay = oc[i].decay};
            ad_adamw_step(&r, 1, &ac, lr, t);
            CHECK_OK(ad_cuda_adamw_step(og[i].w->data, og[i].grad->data, og[i].m, og[i].v, og[i].n,
                                        lr, ac.beta1, ac.beta2, ac.eps, ac.weight_decay,
                                        og[i].decay, t, 1.0f, NULL));
        }
    }
    printf(
        "20 distillation steps: loss per row %.5g -> %.5g, worst per-step loss difference %.3g\n",
        first, last, worst_loss);
    CHECK_MSG(last < first, "distillation did not lower the loss (%.5g -> %.5g)", first, last);
    double worst_w = 0;
    const char *worst_name = "";
    for (int i = 0; i < nc; i++) {
        float *a = to_host(g_gpu, og[i].w), *c = to_host(g_cpu, oc[i].w);
        double e = rel_l2(a, c, oc[i].n);
        CHECK_MSG(e <= 1e-3, "weights of %s after %d steps: relative L2 %.3g", oc[i].name, steps,
                  e);
        if (e > worst_w || !isfinite(e)) worst_w = e, worst_name = oc[i].name;
        free(a);
        free(c);
    }
    printf("final weights of %d tensors: worst relative L2 %.3g (%s), tolerance 1e-3\n", nc,
           worst_w, worst_name);
    for (int i = 0; i < nc; i++) {
        free((void *)oc[i].name);
        free((void *)og[i].name);
        free(oc[i].m);
        free(oc[i].v);
        g_gpu->release(g_gpu, og[i].m);
        g_gpu->release(g_gpu, og[i].v);
    }
    free(oc);
    free(og);
    side_free(&cpu, true);
    side_free(&gpu, true);
    ad_batch_free(&b);
}

/* ad_model_load_mixed's choice here: every weight whose name ends in "proj.weight" */
static bool pick_proj(const ad_weight_spec *s, void *ctx) {
    (void)ctx;
    const size_t n = strlen(s->name);
    return n > 11 && !strcmp(s->name + n - 11, "proj.weight");
}

static void test_load_mixed(void) {
    const ad_dtype act = g_gpu->act_dtype;
    g_gpu->act_dtype = AD_F32; /* as the trainer's backend: fp32 unless picked */
    ad_model m;
    CHECK_OK(ad_model_load_mixed(&m, g_gpu, AUDISTILL_FIXTURES "/tiny_a", false, AD_BF16, pick_proj,
                                 NULL));
    ad_safetensors st;
    CHECK_OK(ad_safetensors_open(&st, AUDISTILL_FIXTURES "/tiny_a/model.safetensors"));
    int n_picked = 0, n_kept = 0;
    int64_t wrong_rounding = 0, wrong_master = 0, wrong_kept = 0;
    for (int s = 0; s < m.n_specs; s++) {
        const ad_weight_spec *sp = &m.specs[s];
        const int64_t n = ad_weight_spec_numel(sp);
        float *file = malloc(sizeof(float) * (size_t)n), *dev = malloc(sizeof(float) * (size_t)n);
        CHECK_OK(ad_safetensors_read_f32(&st, sp->name, sp->ndim, sp->shape, file));
        ad_tensor *w = ad_model_weight(&m, sp->name), h;
        CHECK_OK(ad_tensor_init(&h, dev, AD_F32, AD_DEVICE_CPU, sp->ndim, sp->shape, sp->name));
        CHECK_OK(g_gpu->download(g_gpu, &h, w));
        float *master = ad_model_take_master(&m, sp->name);
        if (pick_proj(sp, NULL)) {
            n_picked++;
            CHECK_MSG(w->dtype == AD_BF16, "%s: %s, not BF16", sp->name, ad_dtype_name(w->dtype));
            CHECK_MSG(master != NULL, "%s: no fp32 master kept", sp->name);
            for (int64_t i = 0; i < n; i++) {
                wrong_rounding += dev[i] != ad_bf16_to_f32(ad_f32_to_bf16(file[i]));
                wrong_master += master && memcmp(&master[i], &file[i], sizeof(float)) != 0;
            }
            CHECK_MSG(ad_model_take_master(&m, sp->name) == NULL, "%s: master taken twice",
                      sp->name);
        } else {
            n_kept++;
            CHECK_MSG(w->dtype == AD_F32 && master == NULL, "%s: %s with a master %p", sp->name,
                      ad_dtype_name(w->dtype), (void *)master);
            for (int64_t i = 0; i < n; i++)
                wrong_kept += memcmp(&dev[i], &file[i], sizeof(float)) != 0;
        }
        free(master), free(file), free(dev);
    }
    printf("  load_mixed: %d weights picked (bf16), %d kept f32; %lld roundings, %lld masters, "
           "%lld kept values differ from the file\n",
           n_picked, n_kept, (long long)wrong_rounding, (long long)wrong_master,
           (long long)wrong_kept);
    CHECK_MSG(n_picked > 0 && n_kept > 0, "picked %d, kept %d", n_picked, n_kept);
    CHECK_MSG(wrong_rounding == 0 && wrong_master == 0 && wrong_kept == 0,
              "load_mixed: %lld / %lld / %lld values wrong", (long long)wrong_rounding,
              (long long)wrong_master, (long long)wrong_kept);
    ad_safetensors_close(&st);
    ad_model_free(&m); /* frees the masters nobody took (none here) */
    /* a dtype other than F32/BF16 is refused */
    CHECK_FAILS_WITH(ad_model_load_mixed(&m, g_gpu, AUDISTILL_FIXTURES "/tiny_a", false, AD_I32,
                                         pick_proj, NULL),
                     "F32 or BF16");
    g_gpu->act_dtype = act;
}

/* ad_graph_limits.gemm_inputs_bf16 under bf16 GEMMs: the activations only GEMMs (and, for q, k,
 * v, attention) read stored in bf16 are the bits the GEMMs and the attention kernels would
 * round them to, so logits, loss and every gradient equal those of the graph that keeps them in
 * f32, bit for bit. */
static void test_gemm_inputs_bf16(void) {
    CHECK_OK(ad_cuda_set_bf16_matmul(g_gpu, true));
    ad_batch b;
    CHECK_OK(fixture_batch(&ref, &b));
    side f32in, bf16in;
    side_init_with(&f32in, g_gpu, &b, false, false);
    side_init_with(&bf16in, g_gpu, &b, false, true);
    const ad_encoder_record *e = &bf16in.g.enc_rec[0];
    const ad_decoder_record *d = &bf16in.g.dec_rec[0];
    CHECK_MSG(d->xn1.dtype == AD_BF16 && d->act.dtype == AD_BF16 && e->f_act.dtype == AD_BF16 &&
                  e->q.dtype == AD_BF16 && e->k.dtype == AD_BF16 && e->v.dtype == AD_BF16 &&
                  d->q.dtype == AD_BF16 && d->k.dtype == AD_BF16 && d->v.dtype == AD_BF16 &&
                  f32in.g.dec_rec[0].xn1.dtype == AD_F32 && f32in.g.dec_rec[0].q.dtype == AD_F32,
              "gemm_inputs_bf16 did not change the records' dtypes");
    const ad_distill_sums a = step_loss(&f32in, &b, false), c = step_loss(&bf16in, &b, false);
    CHECK_MSG(a.loss == c.loss, "loss %.9g with bf16 GEMM inputs, %.9g with f32", c.loss, a.loss);
    ad_weight_spec *specs;
    int n_specs, compared = 0, differ = 0;
    CHECK_OK(ad_weight_specs(&f32in.m.cfg, &specs, &n_specs));
    for (int i = 0; i < n_specs; i++) {
        const ad_tensor *ga = ad_model_weight(&f32in.g.grads, specs[i].name);
        const ad_tensor *gc = ad_model_weight(&bf16in.g.grads, specs[i].name);
        if (!ga || !gc || !ga->data || !gc->data) continue;
        float *x = to_host(g_gpu, ga), *y = to_host(g_gpu, gc);
        const size_t n = (size_t)ad_tensor_numel(ga);
        if (memcmp(x, y, n * sizeof *x) != 0) {
            differ++;
            CHECK_MSG(false, "gradient %s differs with bf16 GEMM inputs (relative L2 %.3g)",
                      specs[i].name, rel_l2(y, x, (int64_t)n));
        }
        compared++;
        free(x);
        free(y);
    }
    CHECK(compared > 0);
    printf("bf16 GEMM inputs: loss %.9g and %d parameter gradients, %d differing from f32 inputs "
           "(must be 0)\n",
           c.loss, compared, differ);
    free(specs);
    side_free(&f32in, false);
    side_free(&bf16in, false);
    ad_batch_free(&b);
    CHECK_OK(ad_cuda_set_bf16_matmul(g_gpu, false));
}

int main(void) {
    setup_backends(20261126);
    test_load_mixed();
    ad_cpu_register_backward(g_cpu);
    if (ad_safetensors_open(&ref, AUDISTILL_FIXTURES "/grad/tiny_a_ce.safetensors") < 0) {
        fprintf(stderr, "%s\n", ad_error());
        return 1;
    }
    test_forward_backward(AD_F32, false, 1e-4);
    test_forward_backward(AD_BF16, false, 5e-2);
    test_forward_backward(AD_BF16, true, 8e-2);
    test_gemm_inputs_bf16();
    test_distillation_steps();
    ad_safetensors_close(&ref);
    teardown_backends();
    return test_report();
}
