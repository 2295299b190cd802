#include "eval/significance.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/compare.h"
#include "core/error.h"
#include "core/rng.h"

int32_t *ad_bootstrap_indices(int n, int n_samples, uint64_t seed) {
    if (n < 1 || n_samples < 1) {
        ad_fail("bootstrap: need at least one segment and one resample (got %d and %d)", n,
                n_samples);
        return NULL;
    }
    if ((size_t)n * (size_t)n_samples > ((size_t)1 << 28)) {
        ad_fail("bootstrap: %d segments x %d resamples is more than 2^28 indices (1 GiB); use "
                "fewer resamples",
                n, n_samples);
        return NULL;
    }
    int32_t *idx = ad_malloc(sizeof *idx * (size_t)n * (size_t)n_samples, "bootstrap indices");
    if (!idx) return NULL;
    ad_rng rng;
    ad_rng_init(&rng, seed, 0);
    for (size_t k = 0; k < (size_t)n * (size_t)n_samples; k++)
        idx[k] = (int32_t)ad_rng_below(&rng, (uint32_t)n);
    return idx;
}

cJSON *ad_paired_result_json(const ad_paired_result *r) {
    const char *keys[] = {"baseline", "system", "delta_lo", "delta_hi", "mean", "ci", "p"};
    const double values[] = {r->baseline, r->system, r->delta_lo, r->delta_hi,
                             r->mean,     r->ci,     r->p};
    cJSON *o = cJSON_CreateObject();
    for (int i = 0; o && i < 7; i++)
        if (!cJSON_AddNumberToObject(o, keys[i], values[i])) {
            cJSON_Delete(o);
            o = NULL;
        }
    return o;
}

/* A corpus score from the statistics of segments idx[0..n) (all n in order when idx is NULL). */
typedef double (*resampled_score_fn)(const void *stats, const int32_t *idx, int n);

static double bleu_of(const void *stats, const int32_t *idx, int n) {
    const ad_bleu_stats *s = stats;
    ad_bleu_stats sum = {0};
    for (int i = 0; i < n; i++) {
        const ad_bleu_stats *x = &s[idx ? idx[i] : i];
        for (int k = 0; k < AD_BLEU_MAX_ORDER; k++)
            sum.correct[k] += x->correct[k], sum.total[k] += x->total[k];
        sum.sys_len += x->sys_len, sum.ref_len += x->ref_len;
    }
    return ad_bleu_score(&sum, false).score;
}

static double chrf_of(const void *stats, const int32_t *idx, int n) {
    const ad_chrf_stats *s = stats;
    ad_chrf_stats sum;
    ad_chrf_init(&sum, s[0].char_order, s[0].word_order, s[0].beta);
    for (int i = 0; i < n; i++) {
        const ad_chrf_stats *x = &s[idx ? idx[i] : i];
        for (int k = 0; k < AD_CHRF_MAX_ORDER; k++)
            for (int j = 0; j < 3; j++)
                sum.stats[k][j] += x->stats[k][j];
    }
    return ad_chrf_score(&sum);
}

static int paired_bootstrap(const void *baseline, const void *system, int n, const int32_t *idx,
                            int n_samples, resampled_score_fn score, ad_paired_result *out) {
    memset(out, 0, sizeof *out);
    if (!baseline || !system || !idx || n < 1 || n_samples < 1)
        return ad_fail("paired bootstrap: need at least one segment and one resample (got %d and "
                       "%d)",
                       n, n_samples);
    double *sys = ad_malloc(sizeof(double) * 3 * (size_t)n_samples, "bootstrap scores");
    if (!sys) return AD_ERR;
    double *abs_diff = sys + n_samples, *diff = abs_diff + n_samples;
    out->n_segments = n, out->n_samples = n_samples;
    out->baseline = score(baseline, NULL, n);
    out->system = score(system, NULL, n);
    double mean_abs = 0, mean_sys = 0;
    for (int s = 0; s < n_samples; s++) {
        const int32_t *draw = idx + (size_t)s * (size_t)n;
        double b = score(baseline, draw, n);
        sys[s] = score(system, draw, n);
        diff[s] = sys[s] - b;
        abs_diff[s] = fabs(diff[s]);
        mean_abs += abs_diff[s], mean_sys += sys[s];
    }
    mean_abs /= n_samples, mean_sys /= n_samples;
    /* Resampled differences centred on zero stand for "no real difference"; the real one is
     * significant when few of them reach it. */
    const double real = fabs(out->system - out->baseline);
    int above = 0;
    for (int s = 0; s < n_samples; s++)
        above += abs_diff[s] - mean_abs > real;
    out->p = (above + 1.0) / (n_samples + 1.0);
    qsort(sys, (size_t)n_samples, sizeof *sys, ad_compare_doubles);
    qsort(diff, (size_t)n_samples, sizeof *diff, ad_compare_doubles);
    const int lo = n_samples / 40, hi = n_samples - lo - 1;
    out->mean = mean_sys;
    out->ci = 0.5 * (sys[hi] - sys[lo]);
    out->delta_lo = diff[lo], out->delta_hi = diff[hi];
    free(sys);
    return AD_OK;
}

int ad_paired_bootstrap_bleu(const ad_bleu_stats *baseline, const ad_bleu_stats *system, int n,
                             const int32_t *idx, int n_samples, ad_paired_result *out) {
    return paired_bootstrap(baseline, system, n, idx, n_samples, bleu_of, out);
}

int ad_paired_bootstrap_chrf(const ad_chrf_stats *baseline, const ad_chrf_stats *system, int n,
                             const int32_t *idx, int n_samples, ad_paired_result *out) {
    return paired_bootstrap(baseline, system, n, idx, n_samples, chrf_of, out);
}

int ad_paired_bootstrap_lines(char *const *baseline, char *const *system, char *const *refs, int n,
                              ad_bleu_tokenizer tok, int n_samples, uint64_t seed,
                              ad_paired_result *bleu, ad_paired_result *chrf) {
    if (n < 1) return ad_fail("paired bootstrap: no segments");
    ad_bleu_stats *b = ad_calloc(2 * (size_t)n, sizeof *b, "sentence BLEU statistics");
    ad_chrf_stats *c = ad_calloc(2 * (size_t)n, sizeof *c, "sentence chrF statistics");
    int32_t *idx = b && c ? ad_bootstrap_indices(n, n_samples, seed) : NULL;
    int rc = idx ? AD_OK : AD_ERR;
    for (int i = 0; i < n && rc == AD_OK; i++) {
        ad_chrf_init(&c[i], 6, 0, 2.0);
        ad_chrf_init(&c[n + i], 6, 0, 2.0);
        if (ad_bleu_add(&b[i], baseline[i], refs[i], tok) < 0 ||
            ad_bleu_add(&b[n + i], system[i], refs[i], tok) < 0 ||
            ad_chrf_add(&c[i], baseline[i], refs[i]) < 0 ||
            ad_chrf_add(&c[n + i], system[i], refs[i]) < 0)
            rc = ad_fail_context("segment %d", i + 1);
    }
    if (rc == AD_OK) rc = ad_paired_bootstrap_bleu(b, b + n, n, idx, n_samples, bleu);
    if (rc == AD_OK) rc = ad_paired_bootstrap_chrf(c, c + n, n, idx, n_samples, chrf);
    free(b), free(c), free(idx);
    return rc;
}
