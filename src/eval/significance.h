/* Is one system really better than another on this test set? Paired bootstrap resampling
 * (Koehn 2004) computed as sacreBLEU 2.x's `--paired-bs` computes it: each resample draws the
 * segments with replacement, both systems' corpus scores are recomputed from the summed
 * per-segment statistics of the same draw, and
 *   p = (#{resamples: |d_s| - mean|d| > |d|} + 1) / (resamples + 1)
 * where d is the real score difference and d_s a resample's. The system's mean and "95% CI"
 * half-width are sacreBLEU's estimate_ci over its resampled scores; the difference's own 95%
 * interval (same resamples, same order statistics) is added, as a reader asks "how much
 * better" as well as "is it". Only the index draw differs from sacreBLEU (its NumPy generator
 * against our Philox); with the same indices the figures are equal, which the tests check. */
#ifndef AUDISTILL_EVAL_SIGNIFICANCE_H
#define AUDISTILL_EVAL_SIGNIFICANCE_H

#include <stdint.h>

#include "eval/sacrebleu.h"

#define AD_BOOTSTRAP_SAMPLES 1000  /* sacreBLEU's default for --paired-bs */
#define AD_BOOTSTRAP_SEED    12345 /* sacreBLEU's default SACREBLEU_SEED */

typedef struct {
    double baseline, system;   /* corpus scores on all segments */
    double mean, ci;           /* the system's resampled mean and 95% half-width */
    double delta_lo, delta_hi; /* 95% interval of system - baseline over the resamples */
    double p;                  /* two-sided, as above */
    int n_segments, n_samples;
} ad_paired_result;

/* {"baseline", "system", "delta_lo", "delta_hi", "mean", "ci", "p"}: the form run.json and
 * `score --json` carry (report.c reads it back); NULL when out of memory. */
struct cJSON *ad_paired_result_json(const ad_paired_result *r);

/* n_samples rows of n indices in [0, n), drawn from (seed); caller frees. */
int32_t *ad_bootstrap_indices(int n, int n_samples, uint64_t seed);

/* Per-segment statistics of the two systems on the same references (sentence i of both
 * arrays is segment i); idx is n_samples x n as above. */
int ad_paired_bootstrap_bleu(const ad_bleu_stats *baseline, const ad_bleu_stats *system, int n,
                             const int32_t *idx, int n_samples, ad_paired_result *out);
int ad_paired_bootstrap_chrf(const ad_chrf_stats *baseline, const ad_chrf_stats *system, int n,
                             const int32_t *idx, int n_samples, ad_paired_result *out);

/* Convenience for files of lines: BLEU (tokenizer tok) and chrF of `system` against
 * `baseline`, both against `refs`, with AD_BOOTSTRAP_SAMPLES resamples of seed `seed`. */
int ad_paired_bootstrap_lines(char *const *baseline, char *const *system, char *const *refs, int n,
                              ad_bleu_tokenizer tok, int n_samples, uint64_t seed,
                              ad_paired_result *bleu, ad_paired_result *chrf);

#endif
