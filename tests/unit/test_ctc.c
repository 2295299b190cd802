/* CTC loss (train/ctc.h) against torch.nn.functional.ctc_loss and autograd (fixtures from
 * tests/fixtures/make_ctc_fixtures.py), against brute-force enumeration of every alignment on
 * tiny inputs, then on fresh random inputs: gradient rows sum to zero and central finite
 * differences of the loss match the analytic gradient. Plus the infeasible and error paths. */
#include <stdint.h>
#include <time.h>

#include "core/rng.h"
#include "io/safetensors.h"
#include "test.h"
#include "train/ctc.h"

static ad_safetensors fx;

static const char *CASES[] = {"no_repeats",   "adjacent_repeats", "tight_repeats", "long",
                              "empty_target", "blank_last",       "blank_middle",  "large_logits"};

/* The four ints of <case>.meta (T, V, L, blank) and the target ids, from the fixture file. */
static bool read_meta(const char *c, int meta[4], int32_t *target, int cap) {
    char name[96];
    ad_tensor t;
    snprintf(name, sizeof name, "%s.meta", c);
    const ad_st_entry *e = ad_safetensors_find(&fx, name);
    if (!e || ad_safetensors_view(&fx, e, &t) < 0 || t.dtype != AD_I32 || t.shape[0] != 4) {
        CHECK_MSG(false, "%s: missing or bad %s", c, name);
        return false;
    }
    memcpy(meta, t.data, 4 * sizeof(int));
    snprintf(name, sizeof name, "%s.target", c);
    e = ad_safetensors_find(&fx, name);
    const int n = meta[2] > 0 ? meta[2] : 1;
    if (!e || ad_safetensors_view(&fx, e, &t) < 0 || t.dtype != AD_I32 || t.shape[0] != n ||
        n > cap) {
        CHECK_MSG(false, "%s: missing or bad %s", c, name);
        return false;
    }
    memcpy(target, t.data, (size_t)n * sizeof(int32_t));
    return true;
}

static float *read_f32(const char *c, const char *part, int ndim, const int64_t *shape) {
    char name[96];
    snprintf(name, sizeof name, "%s.%s", c, part);
    int64_t n = 1;
    for (int i = 0; i < ndim; i++)
        n *= shape[i];
    float *dst = malloc(sizeof(float) * (size_t)n);
    if (dst && ad_safetensors_read_f32(&fx, name, ndim, shape, dst) == AD_OK) return dst;
    CHECK_MSG(false, "%s", ad_error());
    free(dst);
    return NULL;
}

/* torch computes in float64 from the same f32 logits and the fixture stores its results
 * rounded to f32 (~6e-8 relative), so 1e-5 relative on the loss and 1e-5 absolute on the
 * gradient (whose entries lie in [-1, 1]) leave room only for summation-order differences. */
static void test_against_torch(void) {
    double worst_rel = 0, worst_abs = 0;
    for (size_t c = 0; c < sizeof CASES / sizeof CASES[0]; c++) {
        int meta[4];
        int32_t target[64];
        if (!read_meta(CASES[c], meta, target, 64)) continue;
        const int T = meta[0], V = meta[1], L = meta[2], blank = meta[3];
        const int64_t shape[2] = {T, V}, one = 1;
        float *x = read_f32(CASES[c], "logits", 2, shape);
        float *g_ref = read_f32(CASES[c], "grad", 2, shape);
        float *nll_ref = read_f32(CASES[c], "nll", 1, &one);
        float *g = malloc(sizeof(float) * (size_t)(T * V));
        if (x && g_ref && nll_ref && g) {
            const float scales[2] = {1.0f, 0.25f};
            for (int i = 0; i < 2; i++) {
                double nll = 0;
                bool feasible = false;
                CHECK_OK(ad_ctc_loss(x, T, V, target, L, blank, scales[i], g, &nll, &feasible));
                CHECK_MSG(feasible, "%s: reported infeasible", CASES[c]);
                const double rel = fabs(nll - nll_ref[0]) / fabs((double)nll_ref[0]);
                worst_rel = fmax(worst_rel, rel);
                CHECK_MSG(rel <= 1e-5, "%s: nll %.9g vs torch %.9g (rel %.3g)", CASES[c], nll,
                          (double)nll_ref[0], rel);
                double err = 0;
                for (int j = 0; j < T * V; j++)
                    err = fmax(err, fabs(g[j] - scales[i] * (double)g_ref[j]));
                worst_abs = fmax(worst_abs, err / scales[i]);
                CHECK_MSG(err <= 1e-5 * scales[i], "%s: scale %g: gradient differs by %.3g",
                          CASES[c], (double)scales[i], err);
            }
        }
        free(x), free(g_ref), free(nll_ref), free(g);
    }
    printf("vs torch: worst nll relative error %.3g, worst gradient error %.3g\n", worst_rel,
           worst_abs);
}

static void test_infeasible(void) {
    int meta[4];
    int32_t target[8];
    if (!read_meta("infeasible", meta, target, 8)) return;
    const int T = meta[0], V = meta[1], L = meta[2], blank = meta[3];
    const int64_t shape[2] = {T, V}, one = 1;
    float *x = read_f32("infeasible", "logits", 2, shape);
    float *nll_ref = read_f32("infeasible", "nll", 1, &one);
    float g[64];
    if (x && nll_ref && T * V <= 64) {
        CHECK(isinf(nll_ref[0])); /* torch agrees no alignment exists */
        for (int j = 0; j < T * V; j++)
            g[j] = 7.0f;
        double nll = 0;
        bool feasible = true;
        CHECK_OK(ad_ctc_loss(x, T, V, target, L, blank, 1.0f, g, &nll, &feasible));
        CHECK(!feasible);
        CHECK(isinf(nll) && nll > 0);
        int nonzero = 0;
        for (int j = 0; j < T * V; j++)
            nonzero += g[j] != 0.0f;
        CHECK_MSG(nonzero == 0, "%d gradient entries not zeroed", nonzero);
        /* one frame more makes the same target feasible: [1, blank, 1, 2] */
        float x4[4 * 4] = {0};
        CHECK_OK(ad_ctc_loss(x4, 4, V, target, L, blank, 1.0f, NULL, &nll, &feasible));
        CHECK(feasible && isfinite(nll));
    }
    free(x), free(nll_ref);
}

static void test_errors(void) {
    float x[3 * 4] = {0}, g[3 * 4];
    double nll;
    bool feasible;
    const int32_t ok[2] = {1, 2}, has_blank[2] = {1, 0}, too_big[2] = {1, 4}, negative[1] = {-1};
    CHECK_FAILS_WITH(ad_ctc_loss(x, 3, 4, has_blank, 2, 0, 1, g, &nll, &feasible),
                     "position 1 is the blank");
    CHECK_FAILS_WITH(ad_ctc_loss(x, 3, 4, too_big, 2, 0, 1, g, &nll, &feasible),
                     "target token 4 at position 1 outside the vocabulary");
    CHECK_FAILS_WITH(ad_ctc_loss(x, 3, 4, negative, 1, 0, 1, g, &nll, &feasible),
                     "target token -1 at position 0");
    CHECK_FAILS_WITH(ad_ctc_loss(x, 3, 4, ok, 2, 4, 1, g, &nll, &feasible), "blank id 4");
    CHECK_FAILS_WITH(ad_ctc_loss(x, 0, 4, ok, 2, 0, 1, g, &nll, &feasible), "bad sizes");
    CHECK_FAILS_WITH(ad_ctc_loss(x, 3, 1, ok, 2, 0, 1, g, &nll, &feasible), "bad sizes");
    CHECK_FAILS_WITH(ad_ctc_loss(x, 3, 4, ok, -1, 0, 1, g, &nll, &feasible), "bad sizes");
    CHECK_FAILS_WITH(ad_ctc_loss(x, 3, 4, NULL, 2, 0, 1, g, &nll, &feasible), "NULL");
    x[2 * 4 + 3] = NAN;
    CHECK_FAILS_WITH(ad_ctc_loss(x, 3, 4, ok, 2, 0, 1, g, &nll, &feasible),
                     "logit at t 2, k 3 is not finite");
    x[2 * 4 + 3] = 0;
    x[1 * 4 + 0] = -INFINITY;
    CHECK_FAILS_WITH(ad_ctc_loss(x, 3, 4, ok, 2, 0, 1, g, &nll, &feasible),
                     "logit at t 1, k 0 is not finite");
}

/* Collapse a path (merge repeats, drop blanks) and compare with the target. */
static bool collapses_to(const int *path, int T, const int32_t *target, int L, int blank) {
    int n = 0;
    for (int t = 0; t < T; t++) {
        if (path[t] == blank || (t > 0 && path[t] == path[t - 1])) continue;
        if (n >= L || path[t] != target[n]) return false;
        n++;
    }
    return n == L;
}

/* Every one of the V^T alignments summed directly: independent of torch and of the
 * forward-backward recursion. Differences are double rounding, so the tolerances are tight. */
static void test_brute_force(void) {
    static const struct {
        int T, V, L, blank;
        int32_t target[4];
    } BF[] = {{6, 3, 2, 0, {1, 2}}, {6, 3, 2, 0, {1, 1}},    {5, 4, 3, 3, {0, 0, 1}},
              {4, 3, 0, 1, {0}},    {7, 3, 3, 0, {2, 1, 2}}, {5, 3, 3, 2, {1, 1, 1}}};
    ad_rng rng;
    ad_rng_init(&rng, 42, 0);
    for (size_t c = 0; c < sizeof BF / sizeof BF[0]; c++) {
        const int T = BF[c].T, V = BF[c].V, L = BF[c].L, blank = BF[c].blank;
        float x[7 * 4];
        double lp[7 * 4], occ[7 * 4] = {0}, P = 0;
        for (int t = 0; t < T; t++) {
            double sum = 0;
            for (int k = 0; k < V; k++) {
                x[t * V + k] = 2.0f * ad_rng_normal(&rng);
                sum += exp(x[t * V + k]);
            }
            for (int k = 0; k < V; k++)
                lp[t * V + k] = x[t * V + k] - log(sum);
        }
        int path[7] = {0};
        long n_paths = 1;
        for (int t = 0; t < T; t++)
            n_paths *= V;
        for (long p = 0; p < n_paths; p++) {
            long r = p;
            double logp = 0;
            for (int t = 0; t < T; t++, r /= V) {
                path[t] = (int)(r % V);
                logp += lp[t * V + path[t]];
            }
            if (!collapses_to(path, T, BF[c].target, L, blank)) continue;
            P += exp(logp);
            for (int t = 0; t < T; t++)
                occ[t * V + path[t]] += exp(logp);
        }
        float g[7 * 4];
        double nll;
        bool feasible;
        CHECK_OK(ad_ctc_loss(x, T, V, BF[c].target, L, blank, 1.0f, g, &nll, &feasible));
        CHECK_MSG(feasible && fabs(nll + log(P)) <= 1e-12 * fmax(1.0, fabs(nll)),
                  "case %zu: nll %.15g vs enumeration %.15g", c, nll, -log(P));
        double err = 0;
        for (int i = 0; i < T * V; i++)
            err = fmax(err, fabs(g[i] - (exp(lp[i]) - occ[i] / P)));
        CHECK_MSG(err <= 1e-6, "case %zu: gradient differs from enumeration by %.3g", c, err);
    }
}

/* Fresh random shapes, targets and logits each run; the seed is printed on failure and
 * AUDISTILL_TEST_SEED=<seed> replays it. */
static void test_random_properties(void) {
    const char *env = getenv("AUDISTILL_TEST_SEED");
    const uint64_t seed = env ? strtoull(env, NULL, 10) : (uint64_t)time(NULL);
    ad_rng rng;
    ad_rng_init(&rng, seed, 1);
    const int failed_before = test_failed;
    for (int trial = 0; trial < 40; trial++) {
        const int V = 2 + (int)ad_rng_below(&rng, 30), blank = (int)ad_rng_below(&rng, V);
        int L = (int)ad_rng_below(&rng, 12);
        int32_t target[12];
        int repeats = 0;
        for (int i = 0; i < L; i++) {
            /* small V gives plenty of adjacent repeats */
            int k = (int)ad_rng_below(&rng, V - 1);
            target[i] = k >= blank ? k + 1 : k;
            repeats += i > 0 && target[i] == target[i - 1];
        }
        /* every fourth trial is tight (a single alignment), the rest have slack */
        const int T =
            L + repeats + (trial % 4 == 0 ? 0 : (int)ad_rng_below(&rng, 25)) + (L + repeats == 0);
        const float mag = 0.5f + 4.5f * ad_rng_uniform(&rng);
        float *x = malloc(sizeof(float) * (size_t)(T * V)),
              *g = malloc(sizeof(float) * (size_t)(T * V));
        if (!x || !g) {
            CHECK(false);
            free(x), free(g);
            return;
        }
        for (int i = 0; i < T * V; i++)
            x[i] = mag * ad_rng_normal(&rng);
        double nll;
        bool feasible;
        CHECK_OK(ad_ctc_loss(x, T, V, target, L, blank, 1.0f, g, &nll, &feasible));
        CHECK_MSG(feasible && isfinite(nll) && nll >= 0, "T %d V %d L %d: nll %g feasible %d", T, V,
                  L, nll, feasible);
        /* softmax and the occupancy each sum to 1 over a row; float rounding of V terms */
        double worst_row = 0;
        for (int t = 0; t < T; t++) {
            double sum = 0;
            for (int k = 0; k < V; k++)
                sum += g[t * V + k];
            worst_row = fmax(worst_row, fabs(sum));
        }
        CHECK_MSG(worst_row <= 1e-5, "T %d V %d L %d: a gradient row sums to %.3g", T, V, L,
                  worst_row);
        /* Central differences at one target label, one blank and one arbitrary entry. With
         * h ~ 1e-3 the truncation error is ~h^2 ~ 1e-7 and the loss is evaluated in double
         * from the exact perturbed f32 logits, so 1e-3 relative (with a 1e-6 floor for
         * near-zero entries) is loose for a right gradient and tight for a wrong one. */
        for (int probe = 0; probe < 3; probe++) {
            const int t = (int)ad_rng_below(&rng, T);
            int k = (int)ad_rng_below(&rng, V);
            if (probe == 0 && L > 0) k = target[ad_rng_below(&rng, L)];
            if (probe == 1) k = blank;
            const size_t i = (size_t)t * V + k;
            const float x0 = x[i], xp = x0 + 1e-3f, xm = x0 - 1e-3f;
            double np, nm;
            bool fp, fm;
            x[i] = xp;
            CHECK_OK(ad_ctc_loss(x, T, V, target, L, blank, 1.0f, NULL, &np, &fp));
            x[i] = xm;
            CHECK_OK(ad_ctc_loss(x, T, V, target, L, blank, 1.0f, NULL, &nm, &fm));
            x[i] = x0;
            const double fd = (np - nm) / ((double)xp - (double)xm);
            CHECK_MSG(fabs(fd - g[i]) <= 1e-3 * fabs(g[i]) + 1e-6,
                      "T %d V %d L %d blank %d, logit (%d, %d): finite difference %.9g vs "
                      "gradient %.9g",
                      T, V, L, blank, t, k, fd, (double)g[i]);
        }
        free(x), free(g);
    }
    if (test_failed > failed_before)
        fprintf(stderr, "test_random_properties: seed %llu\n", (unsigned long long)seed);
}

int main(void) {
    if (ad_safetensors_open(&fx, AUDISTILL_FIXTURES "/ctc/ctc.safetensors") < 0) {
        fprintf(stderr, "%s\n", ad_error());
        return 1;
    }
    RUN(test_against_torch);
    RUN(test_infeasible);
    RUN(test_errors);
    RUN(test_brute_force);
    RUN(test_random_properties);
    ad_safetensors_close(&fx);
    return test_report();
}
