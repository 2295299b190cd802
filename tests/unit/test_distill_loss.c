/* The fused distillation loss against torch autograd (float64 reference, fixture) for every KL
 * kind and CE-only, against central finite differences on fresh random logits, in place, and
 * its refusals. */
#include <unistd.h>

#include "backend/cpu/cpu_distill_loss.h"
#include "core/rng.h"
#include "io/safetensors.h"
#include "test.h"

static int read_f32(ad_safetensors *st, const char *name, float *dst, int ndim,
                    const int64_t *shape) {
    return ad_safetensors_read_f32(st, name, ndim, shape, dst);
}

static void test_against_torch(void) {
    ad_safetensors st;
    CHECK_OK(ad_safetensors_open(&st, AUDISTILL_FIXTURES "/loss/distill_loss.safetensors"));
    const ad_st_entry *e = ad_safetensors_find(&st, "student");
    if (!e) return;
    const int64_t N = e->shape[0], V = e->shape[1];
    float *student = malloc(sizeof(float) * (size_t)(N * V)),
          *teacher = malloc(sizeof(float) * (size_t)(N * V));
    float *want = malloc(sizeof(float) * (size_t)(N * V)),
          *grad = malloc(sizeof(float) * (size_t)(N * V));
    float params[4], sums_ref[3];
    int64_t shape[2] = {N, V};
    CHECK_OK(read_f32(&st, "student", student, 2, shape));
    CHECK_OK(read_f32(&st, "teacher", teacher, 2, shape));
    CHECK_OK(read_f32(&st, "params", params, 1, (int64_t[]){4}));
    ad_tensor targets_view;
    CHECK_OK(ad_safetensors_view(&st, ad_safetensors_find(&st, "targets"), &targets_view));
    ad_tensor s, t, g;
    ad_tensor_init(&s, student, AD_F32, AD_DEVICE_CPU, 2, shape, "student");
    ad_tensor_init(&t, teacher, AD_F32, AD_DEVICE_CPU, 2, shape, "teacher");
    ad_tensor_init(&g, grad, AD_F32, AD_DEVICE_CPU, 2, shape, "grad");
    const char *kinds[] = {"forward", "reverse", "skew_forward", "skew_reverse", "ce_only"};
    for (int k = 0; k < 5; k++) {
        char name[64];
        snprintf(name, sizeof name, "%s.grad", kinds[k]);
        CHECK_OK(read_f32(&st, name, want, 2, shape));
        snprintf(name, sizeof name, "%s.sums", kinds[k]);
        CHECK_OK(read_f32(&st, name, sums_ref, 1, (int64_t[]){3}));
        ad_distill_params p = {.alpha = params[0],
                               .temperature = params[1],
                               .kind = (ad_kl_kind)(k < 4 ? k : 0),
                               .skew = params[2],
                               .grad_scale = params[3]};
        ad_distill_sums sums = {0};
        CHECK_OK(ad_cpu_distill_loss(NULL, &g, &s, k < 4 ? &t : NULL, &targets_view, &p, &sums));
        double max_err = 0, max_ref = 0;
        for (int64_t i = 0; i < N * V; i++) {
            max_err = fmax(max_err, fabs((double)grad[i] - want[i]));
            max_ref = fmax(max_ref, fabs((double)want[i]));
        }
        /* fp32 outputs of a float64 computation: relative error at float rounding level. */
        CHECK_MSG(max_err <= 1e-6 * max_ref + 1e-9, "%s: max grad error %.3g (max |grad| %.3g)",
                  kinds[k], max_err, max_ref);
        CHECK_MSG(fabs(sums.loss - sums_ref[0]) <= 1e-5 * fabs(sums_ref[0]), "%s loss %.9g vs %.9g",
                  kinds[k], sums.loss, sums_ref[0]);
        CHECK_MSG(fabs(sums.kl - sums_ref[1]) <= 1e-5 * fabs(sums_ref[1]) + 1e-6,
                  "%s kl %.9g vs %.9g", kinds[k], sums.kl, sums_ref[1]);
        CHECK_MSG(fabs(sums.ce - sums_ref[2]) <= 1e-5 * fabs(sums_ref[2]), "%s ce %.9g vs %.9g",
                  kinds[k], sums.ce, sums_ref[2]);
        CHECK(sums.rows == N - 1); /* one row has target -100 */
    }
    /* In place: the gradient overwrites the student logits and is the same. */
    ad_distill_params p = {.alpha = params[0],
                           .temperature = params[1],
                           .kind = AD_KL_FORWARD,
                           .skew = params[2],
                           .grad_scale = params[3]};
    CHECK_OK(read_f32(&st, "forward.grad", want, 2, shape));
    ad_distill_sums sums = {0};
    CHECK_OK(ad_cpu_distill_loss(NULL, &s, &s, &t, &targets_view, &p, &sums));
    double max_err = 0;
    for (int64_t i = 0; i < N * V; i++)
        max_err = fmax(max_err, fabs((double)student[i] - want[i]));
    CHECK_MSG(max_err <= 1e-7, "in place: max error %.3g", max_err);
    free(student);
    free(teacher);
    free(want);
    free(grad);
    ad_safetensors_close(&st);
}

static double total_loss(float *s, float *t, int32_t *y, int64_t N, int64_t V,
                         const ad_distill_params *p, float *scratch) {
    ad_tensor ts, tt, ty, tg;
    int64_t shape[2] = {N, V};
    ad_tensor_init(&ts, s, AD_F32, AD_DEVICE_CPU, 2, shape, "s");
    ad_tensor_init(&tt, t, AD_F32, AD_DEVICE_CPU, 2, shape, "t");
    ad_tensor_init(&ty, y, AD_I32, AD_DEVICE_CPU, 1, shape, "y");
    ad_tensor_init(&tg, scratch, AD_F32, AD_DEVICE_CPU, 2, shape, "g");
    ad_distill_sums sums = {0};
    ad_cpu_distill_loss(NULL, &tg, &ts, &tt, &ty, p, &sums);
    return sums.loss;
}

static void test_finite_differences(void) {
    ad_rng rng;
    ad_rng_init(&rng, (uint64_t)getpid(), 11);
    const int64_t N = 3, V = 37;
    float s[N * V], t[N * V], grad[N * V], scratch[N * V];
    int32_t y[N];
    for (int i = 0; i < N * V; i++)
        s[i] = 2 * ad_rng_normal(&rng), t[i] = 2 * ad_rng_normal(&rng);
    for (int i = 0; i < N; i++)
        y[i] = (int32_t)ad_rng_below(&rng, V);
    for (int kind = 0; kind < 4; kind++) {
        ad_distill_params p = {.alpha = 0.6f,
                               .temperature = 1.5f,
                               .kind = (ad_kl_kind)kind,
                               .skew = 0.3f,
                               .grad_scale = 1.0f};
        total_loss(s, t, y, N, V, &p, grad);
        double worst = 0;
        for (int i = 0; i < N * V; i += 7) {
            const float h = 1.0f / 256;
            float keep = s[i];
            s[i] = keep + h;
            double up = total_loss(s, t, y, N, V, &p, scratch);
            s[i] = keep - h;
            double down = total_loss(s, t, y, N, V, &p, scratch);
            s[i] = keep;
            double fd = (up - down) / (2.0 * h);
            worst = fmax(worst, fabs(fd - grad[i]) / fmax(1e-3, fabs(fd)));
        }
        CHECK_MSG(worst < 2e-3, "kind %d: worst relative FD error %.3g", kind, worst);
    }
}

static void test_refusals(void) {
    float s[6] = {0}, g[6];
    int32_t y[2] = {0, 5};
    ad_tensor ts, tg, ty, bad;
    ad_tensor_init(&ts, s, AD_F32, AD_DEVICE_CPU, 2, (int64_t[]){2, 3}, "s");
    ad_tensor_init(&tg, g, AD_F32, AD_DEVICE_CPU, 2, (int64_t[]){2, 3}, "g");
    ad_tensor_init(&ty, y, AD_I32, AD_DEVICE_CPU, 1, (int64_t[]){2}, "y");
    ad_distill_params p = {.alpha = 0.5f, .temperature = 1, .grad_scale = 1};
    ad_distill_sums sums = {0};
    CHECK_FAILS_WITH(ad_cpu_distill_loss(NULL, &tg, &ts, NULL, &ty, &p, &sums),
                     "outside the vocabulary");
    ad_tensor_init(&bad, g, AD_F32, AD_DEVICE_CPU, 2, (int64_t[]){3, 2}, "wrong");
    y[1] = 1;
    CHECK_FAILS_WITH(ad_cpu_distill_loss(NULL, &bad, &ts, NULL, &ty, &p, &sums), "expected [2, 3]");
    p.temperature = 0;
    CHECK_FAILS_WITH(ad_cpu_distill_loss(NULL, &tg, &ts, NULL, &ty, &p, &sums), "temperature > 0");
    p.temperature = 1;
    s[0] = NAN;
    CHECK_FAILS_WITH(ad_cpu_distill_loss(NULL, &tg, &ts, NULL, &ty, &p, &sums), "not finite");
}

int main(void) {
    RUN(test_against_torch);
    RUN(test_finite_differences);
    RUN(test_refusals);
    return test_report();
}
