/* Paired bootstrap against sacreBLEU 2.x's own PairedTest (fixture made with sacrebleu:
 * tests/fixtures/make_significance_fixtures.py). Fed sacreBLEU's resample indices, every
 * figure must equal sacreBLEU's (BLEU within 1e-5, chrF within 1e-3: sacreBLEU sums float32
 * statistics); p exactly;
 * with audistill's own draw of 1000 resamples, p and the CI must land within Monte Carlo error
 * of sacreBLEU's 1000-resample figures. */
#include <cjson/cJSON.h>

#include "eval/significance.h"
#include "io/file.h"
#include "io/npy.h"
#include "test.h"

static double field(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

static void check_against(const char *what, const ad_paired_result *got, const cJSON *want,
                          double tol) {
    CHECK_MSG(fabs(got->baseline - field(want, "baseline")) < tol, "%s baseline %.6f vs %.6f", what,
              got->baseline, field(want, "baseline"));
    CHECK_MSG(fabs(got->system - field(want, "system")) < tol, "%s system %.6f vs %.6f", what,
              got->system, field(want, "system"));
    CHECK_MSG(fabs(got->mean - field(want, "mean")) < tol, "%s mean %.6f vs %.6f", what, got->mean,
              field(want, "mean"));
    CHECK_MSG(fabs(got->ci - field(want, "ci")) < tol, "%s ci %.6f vs %.6f", what, got->ci,
              field(want, "ci"));
    CHECK_MSG(fabs(got->delta_lo - field(want, "delta_lo")) < tol, "%s delta_lo %.6f vs %.6f", what,
              got->delta_lo, field(want, "delta_lo"));
    CHECK_MSG(fabs(got->delta_hi - field(want, "delta_hi")) < tol, "%s delta_hi %.6f vs %.6f", what,
              got->delta_hi, field(want, "delta_hi"));
    CHECK_MSG(fabs(got->p - field(want, "p")) < 1e-12, "%s p %.6f vs %.6f", what, got->p,
              field(want, "p"));
}

static void check_lang(const char *lang, ad_bleu_tokenizer tok) {
    char path[512];
    char **base, **refs, **sys, *json;
    int nb, nr, ns;
    size_t len;
    snprintf(path, sizeof path, AUDISTILL_FIXTURES "/scoring/%s.hyp", lang);
    CHECK_OK(ad_read_lines(path, &base, &nb));
    snprintf(path, sizeof path, AUDISTILL_FIXTURES "/scoring/%s.ref", lang);
    CHECK_OK(ad_read_lines(path, &refs, &nr));
    snprintf(path, sizeof path, AUDISTILL_FIXTURES "/significance/%s.system", lang);
    CHECK_OK(ad_read_lines(path, &sys, &ns));
    snprintf(path, sizeof path, AUDISTILL_FIXTURES "/significance/%s.json", lang);
    CHECK_OK(ad_read_file(path, 1 << 20, &json, &len));
    ad_npy idx;
    snprintf(path, sizeof path, AUDISTILL_FIXTURES "/significance/%s.idx.npy", lang);
    CHECK_OK(ad_npy_read(path, &idx));
    cJSON *want = cJSON_Parse(json);
    const int n = (int)field(want, "n"), samples = (int)field(want, "samples");
    CHECK(want && ns == n && nb >= n && nr >= n && idx.dtype == AD_NPY_I4 && idx.ndim == 2 &&
          idx.shape[0] == samples && idx.shape[1] == n);
    if (!want || ns != n || idx.count != (int64_t)n * samples) return;

    ad_bleu_stats *b = calloc(2 * (size_t)n, sizeof *b);
    ad_chrf_stats *c = calloc(2 * (size_t)n, sizeof *c);
    for (int i = 0; i < n; i++) {
        ad_chrf_init(&c[i], 6, 0, 2.0), ad_chrf_init(&c[n + i], 6, 0, 2.0);
        CHECK_OK(ad_bleu_add(&b[i], base[i], refs[i], tok));
        CHECK_OK(ad_bleu_add(&b[n + i], sys[i], refs[i], tok));
        CHECK_OK(ad_chrf_add(&c[i], base[i], refs[i]));
        CHECK_OK(ad_chrf_add(&c[n + i], sys[i], refs[i]));
    }
    ad_paired_result r;
    char what[64];
    snprintf(what, sizeof what, "%s BLEU", lang);
    CHECK_OK(ad_paired_bootstrap_bleu(b, b + n, n, idx.data, samples, &r));
    check_against(what, &r, cJSON_GetObjectItem(want, "bleu"), 1e-5);
    printf("%s: delta %+.3f [%.3f, %.3f] p %.4f (sacreBLEU's indices)\n", what,
           r.system - r.baseline, r.delta_lo, r.delta_hi, r.p);
    snprintf(what, sizeof what, "%s chrF", lang);
    CHECK_OK(ad_paired_bootstrap_chrf(c, c + n, n, idx.data, samples, &r));
    check_against(what, &r, cJSON_GetObjectItem(want, "chrf"), 1e-3);

    /* audistill's own draw, 1000 resamples, against sacreBLEU's 1000 of its own draw: p's
     * Monte Carlo standard deviation is about sqrt(p(1-p)/1000) < 0.01 here. */
    ad_paired_result rb, rc;
    CHECK_OK(ad_paired_bootstrap_lines(base, sys, refs, n, tok, AD_BOOTSTRAP_SAMPLES,
                                       AD_BOOTSTRAP_SEED, &rb, &rc));
    const ad_paired_result *ours[2] = {&rb, &rc};
    const char *keys[2] = {"bleu", "chrf"};
    for (int k = 0; k < 2; k++) {
        const cJSON *d = cJSON_GetObjectItem(cJSON_GetObjectItem(want, keys[k]), "default_1000");
        CHECK_MSG(fabs(ours[k]->p - field(d, "p")) < 0.03, "%s %s own draw p %.4f, sacreBLEU %.4f",
                  lang, keys[k], ours[k]->p, field(d, "p"));
        CHECK_MSG(fabs(ours[k]->ci / field(d, "ci") - 1) < 0.15,
                  "%s %s own draw ci %.4f, sacreBLEU %.4f", lang, keys[k], ours[k]->ci,
                  field(d, "ci"));
        CHECK_MSG(fabs(ours[k]->mean - field(d, "mean")) < 0.3,
                  "%s %s own draw mean %.4f, sacreBLEU %.4f", lang, keys[k], ours[k]->mean,
                  field(d, "mean"));
        printf("%s %s own draw: p %.4f ci %.3f (sacreBLEU %.4f %.3f)\n", lang, keys[k], ours[k]->p,
               ours[k]->ci, field(d, "p"), field(d, "ci"));
    }
    free(b), free(c);
    ad_npy_free(&idx);
    cJSON_Delete(want);
    free(json);
    ad_free_lines(base, nb), ad_free_lines(refs, nr), ad_free_lines(sys, ns);
}

static void test_against_sacrebleu(void) {
    check_lang("de", AD_BLEU_TOK_13A);
    check_lang("zh", AD_BLEU_TOK_ZH);
}

/* The draw: in range, a pure function of the seed, and uniform enough that every segment is
 * drawn about as often as the others (chi-square with n-1 degrees of freedom). */
static void test_indices(void) {
    const int n = 50, samples = 400;
    int32_t *a = ad_bootstrap_indices(n, samples, 7), *b = ad_bootstrap_indices(n, samples, 7),
            *c = ad_bootstrap_indices(n, samples, 8);
    CHECK(a && b && c);
    if (!a || !b || !c) return;
    CHECK(memcmp(a, b, sizeof *a * (size_t)n * samples) == 0);
    CHECK(memcmp(a, c, sizeof *a * (size_t)n * samples) != 0);
    double count[50] = {0}, chi2 = 0, expect = (double)samples;
    bool in_range = true;
    for (int k = 0; k < n * samples; k++) {
        in_range &= a[k] >= 0 && a[k] < n;
        if (a[k] >= 0 && a[k] < n) count[a[k]]++;
    }
    for (int i = 0; i < n; i++)
        chi2 += (count[i] - expect) * (count[i] - expect) / expect;
    CHECK(in_range);
    CHECK_MSG(chi2 < 90, "chi-square %.1f with 49 degrees of freedom", chi2); /* p < 1e-3 */
    free(a), free(b), free(c);
    CHECK_FAILS_WITH(ad_bootstrap_indices(0, 10, 1) ? AD_OK : AD_ERR, "at least one segment");
    CHECK_FAILS_WITH(ad_bootstrap_indices(1 << 20, 1 << 10, 1) ? AD_OK : AD_ERR, "fewer resamples");
}

int main(void) {
    RUN(test_against_sacrebleu);
    RUN(test_indices);
    return test_report();
}
