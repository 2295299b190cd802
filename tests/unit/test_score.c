/* BLEU/chrF/chrF++ against sacrebleu 2.x on 320 hard pairs per language (fixture made with
 * sacrebleu): corpus scores and every sentence score within 0.01, and every tokenized
 * hypothesis identical to sacreBLEU's 13a / zh tokenizer output. */
#include <cjson/cJSON.h>

#include "eval/sacrebleu.h"
#include "io/file.h"
#include "test.h"

static void check_lang(const char *lang, ad_bleu_tokenizer tok) {
    char path[512];
    char **h, **r, *json;
    int nh, nr;
    size_t len;
    snprintf(path, sizeof path, AUDISTILL_FIXTURES "/scoring/%s.hyp", lang);
    CHECK_OK(ad_read_lines(path, &h, &nh));
    snprintf(path, sizeof path, AUDISTILL_FIXTURES "/scoring/%s.ref", lang);
    CHECK_OK(ad_read_lines(path, &r, &nr));
    snprintf(path, sizeof path, AUDISTILL_FIXTURES "/scoring/%s.scores.json", lang);
    CHECK_OK(ad_read_file(path, 1 << 24, &json, &len));
    cJSON *want = cJSON_Parse(json);
    CHECK(want && nh == nr && nh >= 300);
    if (!want || nh != nr) return;
    ad_bleu_stats bleu = {0};
    ad_chrf_stats chrf, chrfpp;
    ad_chrf_init(&chrf, 6, 0, 2);
    ad_chrf_init(&chrfpp, 6, 2, 2);
    const cJSON *sb = cJSON_GetObjectItem(want, "sentence_bleu"),
                *sc = cJSON_GetObjectItem(want, "sentence_chrf"),
                *tk = cJSON_GetObjectItem(want, "tokenized_hyp");
    int bad_tok = 0, bad_sb = 0, bad_sc = 0;
    for (int i = 0; i < nh; i++) {
        CHECK_OK(ad_bleu_add(&bleu, h[i], r[i], tok));
        CHECK_OK(ad_chrf_add(&chrf, h[i], r[i]));
        CHECK_OK(ad_chrf_add(&chrfpp, h[i], r[i]));
        char *t = ad_bleu_tokenize(h[i], tok);
        if (!t || strcmp(t, cJSON_GetArrayItem(tk, i)->valuestring) != 0) {
            if (bad_tok++ < 3)
                fprintf(stderr, "%s line %d: tokenized '%s', sacreBLEU '%s'\n", lang, i + 1, t,
                        cJSON_GetArrayItem(tk, i)->valuestring);
        }
        free(t);
        ad_bleu_stats s = {0};
        ad_chrf_stats c;
        ad_chrf_init(&c, 6, 0, 2);
        ad_bleu_add(&s, h[i], r[i], tok);
        ad_chrf_add(&c, h[i], r[i]);
        bad_sb +=
            fabs(ad_bleu_score(&s, true).score - cJSON_GetArrayItem(sb, i)->valuedouble) > 0.01;
        bad_sc += fabs(ad_chrf_score(&c) - cJSON_GetArrayItem(sc, i)->valuedouble) > 0.01;
    }
    CHECK_MSG(bad_tok == 0, "%s: %d tokenizations differ", lang, bad_tok);
    CHECK_MSG(bad_sb == 0, "%s: %d sentence BLEU scores differ by more than 0.01", lang, bad_sb);
    CHECK_MSG(bad_sc == 0, "%s: %d sentence chrF scores differ by more than 0.01", lang, bad_sc);
    double b = ad_bleu_score(&bleu, false).score, c = ad_chrf_score(&chrf),
           cpp = ad_chrf_score(&chrfpp);
    CHECK_NEAR(b, cJSON_GetObjectItem(want, "bleu")->valuedouble, 0.01);
    CHECK_NEAR(c, cJSON_GetObjectItem(want, "chrf")->valuedouble, 0.01);
    CHECK_NEAR(cpp, cJSON_GetObjectItem(want, "chrf++")->valuedouble, 0.01);
    printf("%s: BLEU %.4f chrF %.4f chrF++ %.4f (sacrebleu %.4f %.4f %.4f)\n", lang, b, c, cpp,
           cJSON_GetObjectItem(want, "bleu")->valuedouble,
           cJSON_GetObjectItem(want, "chrf")->valuedouble,
           cJSON_GetObjectItem(want, "chrf++")->valuedouble);
    cJSON_Delete(want);
    free(json);
    ad_free_lines(h, nh), ad_free_lines(r, nr);
}

static void test_edge_cases(void) {
    ad_bleu_stats s = {0};
    CHECK_OK(ad_bleu_add(&s, "", "Ein Satz.", AD_BLEU_TOK_13A));
    CHECK(ad_bleu_score(&s, false).score == 0.0);
    ad_bleu_stats p = {0};
    CHECK_OK(
        ad_bleu_add(&p, "The cat sat on the mat.", "The cat sat on the mat.", AD_BLEU_TOK_13A));
    CHECK_NEAR(ad_bleu_score(&p, false).score, 100.0, 1e-9);
    char *t = ad_bleu_tokenize("Preis: 1.234,56 € (inkl.) &amp; 3-4", AD_BLEU_TOK_13A);
    CHECK(t && strcmp(t, "Preis : 1.234,56 € ( inkl . ) & 3 - 4") == 0);
    free(t);
    t = ad_bleu_tokenize("我们在北京。Hello, world—ok", AD_BLEU_TOK_ZH);
    /* U+2014 counts as a "Chinese" character in sacreBLEU's (mis-written) range table. */
    CHECK(t && strcmp(t, "我 们 在 北 京 。 Hello , world — ok") == 0);
    free(t);
    CHECK_FAILS_WITH(ad_bleu_add(&s, "\xff", "x", AD_BLEU_TOK_13A), "not valid UTF-8");
}

int main(void) {
    test_current = "de";
    check_lang("de", AD_BLEU_TOK_13A);
    test_current = "zh";
    check_lang("zh", AD_BLEU_TOK_ZH);
    RUN(test_edge_cases);
    return test_report();
}
