/* The op profile (backend/profile.h) on the CPU backend: results unchanged while profiling,
 * calls counted per op and weight (layer numbers folded), FLOPs credited by the formulas
 * (2*M*N*K for a linear, twice that for a backward with dx and dw), the table restored by stop,
 * and a profile that is not running reported as such; and counting FLOPs alone (what
 * `train --benchmark` reports) credits the same FLOPs without timing. */
#include "backend/profile.h"

#include <stdint.h>
#include <time.h>

#include "core/rng.h"
#include "core/tensor.h"
#include "test.h"

static float *randn(ad_rng *rng, int64_t n) {
    float *p = malloc(sizeof(float) * (size_t)n);
    for (int64_t i = 0; i < n; i++)
        p[i] = ad_rng_normal(rng);
    return p;
}

/* The report row whose key starts with `key` (exactly, up to the padding): calls and GFLOP. */
static int find_row(const char *report, const char *key, long *calls, double *gflop) {
    const size_t kl = strlen(key);
    for (const char *line = report; line && *line;
         line = strchr(line, '\n') ? strchr(line, '\n') + 1 : NULL) {
        if (strncmp(line, key, kl) == 0 && line[kl] == ' ') {
            double ms, pct;
            if (sscanf(line + kl, "%ld %lf %lf %lf", calls, &ms, &pct, gflop) == 4) return 1;
        }
    }
    return 0;
}

int main(void) {
    ad_backend *be;
    CHECK_OK(ad_backend_cpu_create(&be, 1));
    ad_rng rng;
    ad_rng_init(&rng, (uint64_t)time(NULL), 0);
    const int64_t M = 7 + (int64_t)(ad_rng_uniform(&rng) * 5), K = 16, N = 12;
    float *x = randn(&rng, M * K), *w = randn(&rng, N * K), *y0 = calloc((size_t)(M * N), 4),
          *y1 = calloc((size_t)(M * N), 4), *dy = randn(&rng, M * N),
          *dx = calloc((size_t)(M * K), 4), *dw = calloc((size_t)(N * K), 4);
    ad_tensor tx, tw, tw2, ty0, ty1, tdy, tdx, tdw;
    CHECK_OK(ad_tensor_init(&tx, x, AD_F32, AD_DEVICE_CPU, 2, (int64_t[]){M, K}, "x"));
    CHECK_OK(ad_tensor_init(&tw, w, AD_F32, AD_DEVICE_CPU, 2, (int64_t[]){N, K},
                            "model.layers.3.mlp.up_proj.weight"));
    CHECK_OK(ad_tensor_init(&tw2, w, AD_F32, AD_DEVICE_CPU, 2, (int64_t[]){N, K},
                            "model.layers.12.mlp.up_proj.weight"));
    CHECK_OK(ad_tensor_init(&ty0, y0, AD_F32, AD_DEVICE_CPU, 2, (int64_t[]){M, N}, "y0"));
    CHECK_OK(ad_tensor_init(&ty1, y1, AD_F32, AD_DEVICE_CPU, 2, (int64_t[]){M, N}, "y1"));
    CHECK_OK(ad_tensor_init(&tdy, dy, AD_F32, AD_DEVICE_CPU, 2, (int64_t[]){M, N}, "dy"));
    CHECK_OK(ad_tensor_init(&tdx, dx, AD_F32, AD_DEVICE_CPU, 2, (int64_t[]){M, K}, "dx"));
    CHECK_OK(ad_tensor_init(&tdw, dw, AD_F32, AD_DEVICE_CPU, 2, (int64_t[]){N, K}, "dw"));

    int (*linear_before)(ad_backend *, ad_tensor *, const ad_tensor *, const ad_tensor *,
                         const ad_tensor *) = be->linear;
    CHECK(ad_backend_profile_report(be, stderr, 0) < 0);
    CHECK_OK(be->linear(be, &ty0, &tx, &tw, NULL));

    CHECK_OK(ad_backend_profile_start(be));
    CHECK(be->linear != linear_before);
    CHECK_OK(be->linear(be, &ty1, &tx, &tw, NULL));
    CHECK_MSG(memcmp(y0, y1, sizeof(float) * (size_t)(M * N)) == 0, "profiling changed a result");
    CHECK_OK(be->linear(be, &ty1, &tx, &tw2, NULL));
    CHECK_OK(be->linear_backward(be, &tdx, &tdw, NULL, &tdy, &tx, &tw, false));
    CHECK_OK(be->gelu(be, &ty1, &ty1));
    CHECK_OK(be->gelu(be, &ty1, &ty1));
    CHECK_OK(be->gelu(be, &ty1, &ty1));

    char *report = NULL;
    size_t report_size = 0;
    FILE *f = open_memstream(&report, &report_size);
    CHECK(f != NULL);
    const double seconds = ad_backend_profile_report(be, f, 0);
    fclose(f);
    CHECK(seconds >= 0);
    long calls = 0;
    double gflop = 0;
    const double gemm = 2.0 * (double)(M * N * K) / 1e9;
    CHECK_MSG(find_row(report, "linear model.layers.#.mlp.up_proj.weight", &calls, &gflop) &&
                  calls == 2 && fabs(gflop - 2 * gemm) < 1e-3 * gemm,
              "linear row: %ld calls, %g GFLOP (want 2, %g)\n%s", calls, gflop, 2 * gemm, report);
    CHECK_MSG(
        find_row(report, "linear_backward model.layers.#.mlp.up_proj.weight", &calls, &gflop) &&
            calls == 1 && fabs(gflop - 2 * gemm) < 1e-3 * gemm,
        "linear_backward row: %ld calls, %g GFLOP (want 1, %g)\n%s", calls, gflop, 2 * gemm,
        report);
    CHECK_MSG(find_row(report, "gelu", &calls, &gflop) && calls == 3 && gflop == 0,
              "gelu row: %ld calls\n%s", calls, report);
    free(report);

    /* A restart clears the counts. */
    CHECK_OK(ad_backend_profile_start(be));
    report = NULL;
    f = open_memstream(&report, &report_size);
    ad_backend_profile_report(be, f, 0);
    fclose(f);
    CHECK_MSG(!find_row(report, "gelu", &calls, &gflop), "counts survived a restart\n%s", report);
    free(report);

    /* Counting only (train --benchmark): the same FLOP credits, nothing timed, results
     * unchanged; a timing profile started on top counts from zero, and counting leaves it be. */
    ad_backend_profile_stop(be);
    CHECK(ad_backend_profile_flops(be) < 0);
    CHECK_OK(ad_backend_count_flops(be));
    CHECK_OK(be->linear(be, &ty1, &tx, &tw, NULL));
    CHECK_MSG(memcmp(y0, y1, sizeof(float) * (size_t)(M * N)) == 0, "counting changed a result");
    CHECK_OK(be->linear_backward(be, &tdx, &tdw, NULL, &tdy, &tx, &tw, false));
    CHECK_OK(be->gelu(be, &ty1, &ty1));
    const double counted = ad_backend_profile_flops(be), want = 3 * gemm * 1e9;
    CHECK_MSG(fabs(counted - want) <= 1e-9 * want, "counted %g FLOPs, want %g", counted, want);
    CHECK_MSG(ad_backend_profile_report(be, stderr, 0) < 0, "counting timed ops");
    CHECK_OK(ad_backend_profile_start(be));
    CHECK(ad_backend_profile_flops(be) == 0);
    CHECK_OK(ad_backend_count_flops(be));
    CHECK_OK(be->linear(be, &ty1, &tx, &tw, NULL));
    report = NULL;
    f = open_memstream(&report, &report_size);
    CHECK(ad_backend_profile_report(be, f, 0) >= 0);
    fclose(f);
    CHECK_MSG(find_row(report, "linear model.layers.#.mlp.up_proj.weight", &calls, &gflop) &&
                  calls == 1,
              "counting stopped the timing profile\n%s", report);
    CHECK(fabs(ad_backend_profile_flops(be) - gemm * 1e9) <= 1e-9 * gemm * 1e9);
    free(report);

    ad_backend_profile_stop(be);
    CHECK(be->linear == linear_before);
    CHECK(be->profile == NULL);
    CHECK(ad_backend_profile_report(be, stderr, 0) < 0);
    ad_backend_profile_stop(be); /* not running: nothing */
    /* A backend destroyed while profiling frees the profile (ASan's leak check). */
    CHECK_OK(ad_backend_profile_start(be));
    ad_backend_destroy(be);
    free(x), free(w), free(y0), free(y1), free(dy), free(dx), free(dw);
    return test_report();
}
