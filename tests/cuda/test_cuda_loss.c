/* The fused distillation loss on CUDA against cpu_distill_loss.c: every KL kind plus
 * cross-entropy only, skipped rows (negative targets), the gradient in place over the student
 * logits, bf16 logits, logits far below the rest (probabilities below float range, where the
 * skew mixtures must not divide by zero), and a target outside the vocabulary. Gradients at
 * TOL_F32; the loss sums at SUM_TOL. Both sides take identical inputs and sum in double; the
 * CPU's exponentials are double, CUDA's one float ex2.approx each (2 ulp, ~2.4e-7 relative per
 * probability, the same sign at worst). Skips without a GPU. */
#include "cuda_test_util.h"

#define S(...)  ((const int64_t[]){__VA_ARGS__})
#define SUM_TOL 2e-6

static void check_sums(const char *what, const ad_distill_sums *c, const ad_distill_sums *g) {
    const double vc[3] = {c->loss, c->kl, c->ce}, vg[3] = {g->loss, g->kl, g->ce};
    const char *names[3] = {"loss", "kl", "ce"};
    for (int i = 0; i < 3; i++) {
        const double err = fabs(vc[i] - vg[i]) / (fabs(vc[i]) > 1e-30 ? fabs(vc[i]) : 1.0);
        CHECK_MSG(err <= SUM_TOL, "%s: %s %.12g (cuda) vs %.12g (cpu)", what, names[i], vg[i],
                  vc[i]);
    }
    CHECK_MSG(c->rows == g->rows, "%s: rows %lld vs %lld", what, (long long)g->rows,
              (long long)c->rows);
}

/* Which logits one_loss pushes 300 below the rest on 16 entries of every row: at T = 2 their
 * probabilities are e^-150 and below, 0 as floats, while the other side keeps its mass there. */
typedef enum { FAR_NONE, FAR_STUDENT, FAR_TEACHER } far_logits;

static void push_far(pair *logits, int64_t V) {
    pair cols;
    pair_slice(logits, 1, V / 3, 16, &cols);
    CHECK_OK(g_cpu->fill(g_cpu, &cols.c, -300.0f));
    CHECK_OK(g_gpu->fill(g_gpu, &cols.g, -300.0f));
}

static void one_loss_at(const char *what, ad_kl_kind kind, float skew, far_logits far,
                        bool with_teacher, bool in_place, ad_dtype dt, int64_t V) {
    const int64_t N = 7;
    int32_t tv[7];
    for (int i = 0; i < N; i++)
        tv[i] = (int32_t)ad_rng_below(&g_rng, (uint32_t)V);
    tv[2] = -1; /* not supervised */
    tv[5] = -100;
    pair s, t, grad, targets;
    pair_make(&s, "student_logits", dt, 2, S(N, V), 3.0f, 0.0f);
    pair_make(&t, "teacher_logits", dt, 2, S(N, V), 3.0f, 0.0f);
    pair_make(&grad, "grad", AD_F32, 2, S(N, V), 1.0f, 0.0f);
    pair_ids(&targets, "targets", 1, S(N), tv);
    if (far != FAR_NONE) push_far(far == FAR_STUDENT ? &s : &t, V);
    ad_distill_params p = {0.6f, 2.0f, kind, skew, 1.0f / 5.0f};
    ad_distill_sums sc = {0, 0, 0, 0}, sg = {0, 0, 0, 0};
    pair *out = in_place ? &s : &grad;
    CHECK_OK(
        g_cpu->distill_loss(g_cpu, &out->c, &s.c, with_teacher ? &t.c : NULL, &targets.c, &p, &sc));
    CHECK_OK(
        g_gpu->distill_loss(g_gpu, &out->g, &s.g, with_teacher ? &t.g : NULL, &targets.g, &p, &sg));
    char label[128];
    snprintf(label, sizeof label, "distill_loss %s grad", what);
    expect_close(label, out, TOL_F32);
    check_sums(what, &sc, &sg);
    printf("  %-44s loss %.9g (cuda) %.9g (cpu), %lld rows\n", what, sg.loss, sc.loss,
           (long long)sg.rows);
    pair_free(&s);
    pair_free(&t);
    pair_free(&grad);
    pair_free(&targets);
}

static void one_loss(const char *what, ad_kl_kind kind, bool with_teacher, bool in_place,
                     ad_dtype dt, int64_t V) {
    one_loss_at(what, kind, 0.1f, FAR_NONE, with_teacher, in_place, dt, V);
}

static void test_kinds(void) {
    one_loss("forward KL", AD_KL_FORWARD, true, false, AD_F32, 3001);
    one_loss("reverse KL", AD_KL_REVERSE, true, false, AD_F32, 3001);
    one_loss("skew forward KL", AD_KL_SKEW_FORWARD, true, false, AD_F32, 3001);
    one_loss("skew reverse KL", AD_KL_SKEW_REVERSE, true, false, AD_F32, 3001);
    one_loss("cross-entropy only", AD_KL_FORWARD, false, false, AD_F32, 3001);
    /* A vocabulary of 5 chunks of at least 4096 (the last one shorter): the rows' statistics
     * and KL sums are merged across blocks. */
    const int64_t V = 5 * 4096 + 123;
    one_loss("forward KL, 5 vocabulary chunks", AD_KL_FORWARD, true, false, AD_F32, V);
    one_loss("reverse KL, 5 vocabulary chunks", AD_KL_REVERSE, true, false, AD_F32, V);
    one_loss("skew forward KL, 5 vocabulary chunks", AD_KL_SKEW_FORWARD, true, false, AD_F32, V);
    one_loss("skew reverse KL, 5 vocabulary chunks", AD_KL_SKEW_REVERSE, true, false, AD_F32, V);
    one_loss("cross-entropy only, 5 vocabulary chunks", AD_KL_FORWARD, false, false, AD_F32, V);
    one_loss("forward KL in place, 5 vocabulary chunks", AD_KL_FORWARD, true, true, AD_F32, V);
}

static void test_in_place_and_bf16(void) {
    /* F32 student logits overwritten by their gradient */
    const int64_t V = 5000;
    one_loss("forward KL, grad in place", AD_KL_FORWARD, true, true, AD_F32, V);
    /* bf16 logits (F32 gradient): the same values on both sides, so F32 tolerance */
    one_loss("reverse KL, bf16 logits", AD_KL_REVERSE, true, false, AD_BF16, V);
}

/* The skew mixtures at skew 0 are the plain KLs, whose mixture is one side's probability alone:
 * 0 as a float where that side's logits are far below. The forward kinds put the student far
 * below (the teacher keeps mass there), the reverse kinds the teacher. */
static void test_far_logits(void) {
    const int64_t V = 5000;
    one_loss_at("skew forward KL, skew 0, far student logits", AD_KL_SKEW_FORWARD, 0.0f,
                FAR_STUDENT, true, false, AD_F32, V);
    one_loss_at("skew forward KL, far student logits", AD_KL_SKEW_FORWARD, 0.1f, FAR_STUDENT, true,
                false, AD_F32, V);
    one_loss_at("skew reverse KL, skew 0, far teacher logits", AD_KL_SKEW_REVERSE, 0.0f,
                FAR_TEACHER, true, false, AD_F32, V);
    one_loss_at("skew reverse KL, far teacher logits", AD_KL_SKEW_REVERSE, 0.1f, FAR_TEACHER, true,
                false, AD_F32, V);
    one_loss_at("forward KL, far student logits", AD_KL_FORWARD, 0.0f, FAR_STUDENT, true, false,
                AD_F32, V);
    one_loss_at("reverse KL, far teacher logits", AD_KL_REVERSE, 0.0f, FAR_TEACHER, true, false,
                AD_F32, V);
}

static void test_bad_target(void) {
    const int64_t N = 3, V = 100;
    int32_t tv[3] = {4, 100, 7};
    pair s, grad, targets;
    pair_make(&s, "student_logits", AD_F32, 2, S(N, V), 1.0f, 0.0f);
    pair_make(&grad, "grad", AD_F32, 2, S(N, V), 1.0f, 0.0f);
    pair_ids(&targets, "targets", 1, S(N), tv);
    ad_distill_params p = {0.5f, 1.0f, AD_KL_FORWARD, 0.0f, 1.0f};
    ad_distill_sums sg = {0, 0, 0, 0};
    CHECK_FAILS_WITH(g_gpu->distill_loss(g_gpu, &grad.g, &s.g, NULL, &targets.g, &p, &sg),
                     "target 100 of row 1");
    pair_free(&s);
    pair_free(&grad);
    pair_free(&targets);
}

int main(void) {
    setup_backends(4242);
    RUN(test_kinds);
    RUN(test_in_place_and_bf16);
    RUN(test_far_logits);
    RUN(test_bad_target);
    teardown_backends();
    return test_report();
}
