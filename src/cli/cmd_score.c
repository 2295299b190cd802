/* audistill score: BLEU, chrF and chrF++ exactly as sacreBLEU 2.x computes them, corpus and
 * sentence level; COMET through the external comet-score when it is installed. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "cli/cli.h"
#include "eval/sacrebleu.h"
#include "io/file.h"

static const char *usage =
    "audistill score --hyp FILE --ref FILE --lang de|zh|en [--tokenize 13a|zh|none] "
    "[--sentence] [--json] [--comet --src FILE]";

static void print_help(void) {
    printf("usage: %s\n\n"
           "Scores one hypothesis line against the reference line with the same number (the\n"
           "files must have equally many lines). BLEU uses sacreBLEU's defaults: 13a tokenization\n"
           "(zh for Chinese), exp smoothing, mixed case; chrF has character order 6 and beta 2,\n"
           "chrF++ adds word order 2. --sentence also prints per-line BLEU (effective order, as\n"
           "sacrebleu.sentence_bleu) and chrF. --comet runs the external `comet-score` (pip\n"
           "install unbabel-comet) with --src; if it is not installed, that is said and the exit\n"
           "status is 1.\n",
           usage);
}

int cmd_score(int argc, char **argv) {
    const char *hyp = NULL, *ref = NULL, *lang = NULL, *tok_name = NULL, *src = NULL;
    bool sentence = false, json = false, comet = false;
    for (int i = 1; i < argc; i++) {
        bool v = i + 1 < argc;
        if (cli_is_help(argv[i])) {
            print_help();
            return 0;
        } else if (!strcmp(argv[i], "--hyp") && v)
            hyp = argv[++i];
        else if (!strcmp(argv[i], "--ref") && v)
            ref = argv[++i];
        else if (!strcmp(argv[i], "--lang") && v)
            lang = argv[++i];
        else if (!strcmp(argv[i], "--tokenize") && v)
            tok_name = argv[++i];
        else if (!strcmp(argv[i], "--src") && v)
            src = argv[++i];
        else if (!strcmp(argv[i], "--sentence"))
            sentence = true;
        else if (!strcmp(argv[i], "--json"))
            json = true;
        else if (!strcmp(argv[i], "--comet"))
            comet = true;
        else
            return cli_usage_error("score", usage, "unexpected argument '%s'", argv[i]);
    }
    if (!hyp || !ref || !lang)
        return cli_usage_error("score", usage, "--hyp, --ref and --lang are required");
    ad_bleu_tokenizer tok;
    if (tok_name) {
        if (!strcmp(tok_name, "13a"))
            tok = AD_BLEU_TOK_13A;
        else if (!strcmp(tok_name, "zh"))
            tok = AD_BLEU_TOK_ZH;
        else if (!strcmp(tok_name, "none"))
            tok = AD_BLEU_TOK_NONE;
        else
            return cli_usage_error("score", usage, "unknown tokenizer '%s'", tok_name);
    } else if (!strcmp(lang, "zh")) {
        tok = AD_BLEU_TOK_ZH, tok_name = "zh";
    } else if (!strcmp(lang, "de") || !strcmp(lang, "en")) {
        tok = AD_BLEU_TOK_13A, tok_name = "13a";
    } else {
        return cli_usage_error("score", usage,
                               "unknown language '%s' (de, zh, en; or give --tokenize)", lang);
    }
    char **h = NULL, **r = NULL;
    int nh = 0, nr = 0, rc = 1;
    if (ad_read_lines(hyp, &h, &nh) < 0 || ad_read_lines(ref, &r, &nr) < 0) goto done;
    if (nh != nr) {
        ad_fail("%s has %d lines but %s has %d: one hypothesis per reference line is needed "
                "(resegment a stream "
                "first: audistill resegment)",
                hyp, nh, ref, nr);
        goto done;
    }
    ad_bleu_stats bleu = {0};
    ad_chrf_stats chrf, chrfpp;
    ad_chrf_init(&chrf, 6, 0, 2.0);
    ad_chrf_init(&chrfpp, 6, 2, 2.0);
    for (int i = 0; i < nh; i++) {
        if (ad_bleu_add(&bleu, h[i], r[i], tok) < 0 || ad_chrf_add(&chrf, h[i], r[i]) < 0 ||
            ad_chrf_add(&chrfpp, h[i], r[i]) < 0) {
            ad_fail_context("line %d", i + 1);
            goto done;
        }
        if (sentence) {
            ad_bleu_stats s = {0};
            ad_chrf_stats c;
            ad_chrf_init(&c, 6, 0, 2.0);
            ad_bleu_add(&s, h[i], r[i], tok);
            ad_chrf_add(&c, h[i], r[i]);
            printf(json ? "{\"line\": %d, \"bleu\": %.6f, \"chrf\": %.6f}\n"
                        : "line %d\tBLEU %.2f\tchrF %.2f\n",
                   i + 1, ad_bleu_score(&s, true).score, ad_chrf_score(&c));
        }
    }
    ad_bleu_result b = ad_bleu_score(&bleu, false);
    const char *sig = "nrefs:1|case:mixed|eff:no|tok:%s|smooth:exp|version:2.x (audistill's "
                      "sacreBLEU implementation)";
    char signature[256];
    snprintf(signature, sizeof signature, sig, tok_name);
    if (json)
        printf("{\"bleu\": %.6f, \"chrf\": %.6f, \"chrf++\": %.6f, \"bp\": %.6f, \"sys_len\": "
               "%lld, \"ref_len\": %lld, "
               "\"lines\": %d, \"signature\": \"%s\"}\n",
               b.score, ad_chrf_score(&chrf), ad_chrf_score(&chrfpp), b.bp, (long long)b.sys_len,
               (long long)b.ref_len, nh, signature);
    else
        printf("BLEU = %.2f %.1f/%.1f/%.1f/%.1f (BP = %.3f ratio = %.3f hyp_len = %lld ref_len = "
               "%lld)\n"
               "chrF2 = %.2f\nchrF2++ = %.2f\nsignature: %s\n",
               b.score, b.precisions[0], b.precisions[1], b.precisions[2], b.precisions[3], b.bp,
               b.ref_len ? (double)b.sys_len / (double)b.ref_len : 0.0, (long long)b.sys_len,
               (long long)b.ref_len, ad_chrf_score(&chrf), ad_chrf_score(&chrfpp), signature);
    rc = 0;
    if (comet) {
        if (!src) {
            ad_fail("--comet needs --src (the English source lines)");
            rc = 1;
        } else if (system("command -v comet-score >/dev/null 2>&1") != 0) {
            ad_fail("COMET is not available: install the external scorer (pip install "
                    "unbabel-comet) to get "
                    "comet-score on PATH");
            rc = 1;
        } else {
            char cmd[8192];
            snprintf(cmd, sizeof cmd,
                     "comet-score -s '%s' -t '%s' -r '%s' --quiet 2>/dev/null | tail -1", src, hyp,
                     ref);
            printf("COMET (comet-score): ");
            fflush(stdout);
            rc = system(cmd) != 0;
            if (rc) ad_fail("comet-score failed");
        }
    }
done:
    if (rc) cli_fail("score");
    ad_free_lines(h, nh), ad_free_lines(r, nr);
    return rc;
}
