/* audistill score: BLEU, chrF and chrF++ exactly as sacreBLEU 2.x computes them, corpus and
 * sentence level; COMET through the external comet-score when it is installed. */
#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "cli/cli.h"
#include "eval/sacrebleu.h"
#include "eval/significance.h"
#include "io/file.h"

static const char *usage =
    "audistill score --hyp FILE --ref FILE --lang de|zh|en [--tokenize 13a|zh|none] "
    "[--sentence [--chrf-plus]] [--json] [--comet --src FILE] [--paired-bs BASELINE_HYP "
    "[--bs-samples N] [--bs-seed S]]";

static void print_help(void) {
    printf("usage: %s\n\n"
           "Scores one hypothesis line against the reference line with the same number (the\n"
           "files must have equally many lines). BLEU uses sacreBLEU's defaults: 13a tokenization\n"
           "(zh for Chinese), exp smoothing, mixed case; chrF has character order 6 and beta 2,\n"
           "chrF++ adds word order 2. --sentence also prints per-line BLEU (effective order, as\n"
           "sacrebleu.sentence_bleu) and chrF, and with --chrf-plus chrF++ too. --comet runs the "
           "external `comet-score` (pip\n"
           "install unbabel-comet) with --src and reports its system score: asking for COMET\n"
           "makes it required, so without comet-score the other scores are printed, the missing\n"
           "scorer is named, and the exit status is 1.\n\n"
           "--paired-bs BASELINE_HYP compares --hyp with another system's hypotheses of the same\n"
           "lines by paired bootstrap resampling, as `sacrebleu --paired-bs` does (BLEU and chrF;\n"
           "%d resamples, seed %d, unless --bs-samples / --bs-seed say otherwise): the baseline's\n"
           "and the system's scores, the difference with its 95%% interval over the resamples,\n"
           "the system's resampled mean and 95%% half-width, and sacreBLEU's p-value (the share\n"
           "of resampled differences, centred on zero, larger than the real one). The draw is\n"
           "audistill's own generator, so p matches sacreBLEU's within Monte Carlo error, not\n"
           "digit for digit.\n",
           usage, AD_BOOTSTRAP_SAMPLES, AD_BOOTSTRAP_SEED);
}

/* Runs `comet-score -s SRC -t HYP -r REF --quiet` (no shell, so any file name is safe) and
 * reads the system score from its last "score:" line. */
static int run_comet(const char *src, const char *hyp, const char *ref, int n_lines,
                     double *score) {
    char **s = NULL;
    int ns = 0;
    AD_TRY(ad_read_lines(src, &s, &ns));
    ad_free_lines(s, ns);
    if (ns != n_lines)
        return ad_fail("%s has %d lines but %s has %d: COMET needs one source line per "
                       "hypothesis",
                       src, ns, hyp, n_lines);
    int fd[2];
    if (pipe(fd) != 0) return ad_fail("cannot start comet-score: %s", strerror(errno));
    fflush(stdout), fflush(stderr);
    pid_t pid = fork();
    if (pid < 0) {
        close(fd[0]), close(fd[1]);
        return ad_fail("cannot start comet-score: %s", strerror(errno));
    }
    if (pid == 0) {
        int null = open("/dev/null", O_WRONLY);
        dup2(fd[1], STDOUT_FILENO);
        if (null >= 0) dup2(null, STDERR_FILENO);
        close(fd[0]), close(fd[1]);
        execlp("comet-score", "comet-score", "-s", src, "-t", hyp, "-r", ref, "--quiet",
               (char *)NULL);
        _exit(127);
    }
    close(fd[1]);
    FILE *out = fdopen(fd[0], "r");
    char line[4096];
    bool found = false;
    while (out && fgets(line, sizeof line, out)) {
        const char *p = strstr(line, "score:");
        char *end;
        double v = p ? strtod(p + 6, &end) : 0;
        if (p && end != p + 6) *score = v, found = true;
    }
    if (out)
        fclose(out);
    else
        close(fd[0]);
    int status;
    while (waitpid(pid, &status, 0) < 0)
        if (errno != EINTR) return ad_fail("waiting for comet-score: %s", strerror(errno));
    if (WIFEXITED(status) && WEXITSTATUS(status) == 127)
        return ad_fail("COMET is not available: install the external scorer (pip install "
                       "unbabel-comet) to get comet-score on PATH");
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
        return ad_fail("comet-score failed (status %d); run it by hand to see why",
                       WIFEXITED(status) ? WEXITSTATUS(status) : -1);
    if (!found) return ad_fail("comet-score printed no \"score:\" line");
    return AD_OK;
}

static void print_paired(const char *metric, const ad_paired_result *p) {
    printf("%-6s baseline %.2f  system %.2f  difference %+.2f (95%% interval %+.2f .. %+.2f)  "
           "system %.2f +- %.2f  p = %.4f\n",
           metric, p->baseline, p->system, p->system - p->baseline, p->delta_lo, p->delta_hi,
           p->mean, p->ci, p->p);
}

int cmd_score(int argc, char **argv) {
    const char *hyp = NULL, *ref = NULL, *lang = NULL, *tok_name = NULL, *src = NULL,
               *paired = NULL;
    long long bs_samples = AD_BOOTSTRAP_SAMPLES, bs_seed = AD_BOOTSTRAP_SEED;
    bool sentence = false, json = false, comet = false, chrf_plus = false;
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
        else if (!strcmp(argv[i], "--chrf-plus"))
            chrf_plus = true;
        else if (!strcmp(argv[i], "--json"))
            json = true;
        else if (!strcmp(argv[i], "--comet"))
            comet = true;
        else if (!strcmp(argv[i], "--paired-bs") && v)
            paired = argv[++i];
        else if (!strcmp(argv[i], "--bs-samples") && v) {
            if (cli_parse_count(argv[++i], 1000000, &bs_samples) < 0 || bs_samples < 1)
                return cli_usage_error("score", usage,
                                       "--bs-samples must be a whole number from 1 to 1000000");
        } else if (!strcmp(argv[i], "--bs-seed") && v) {
            if (cli_parse_count(argv[++i], LLONG_MAX, &bs_seed) < 0)
                return cli_usage_error("score", usage,
                                       "--bs-seed must be a non-negative whole number");
        } else
            return cli_usage_error("score", usage, "unexpected argument '%s'", argv[i]);
    }
    if (!hyp || !ref || !lang)
        return cli_usage_error("score", usage, "--hyp, --ref and --lang are required");
    if (comet && !src)
        return cli_usage_error("score", usage, "--comet needs --src (the English source lines)");
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
    char **h = NULL, **r = NULL, **base = NULL, *paired_json = NULL;
    int nh = 0, nr = 0, nb = 0, rc = 1;
    ad_paired_result pb, pc;
    if (ad_read_lines(hyp, &h, &nh) < 0 || ad_read_lines(ref, &r, &nr) < 0) goto done;
    if (paired && ad_read_lines(paired, &base, &nb) < 0) goto done;
    if (paired && nb != nh) {
        ad_fail("%s (the baseline) has %d lines but %s has %d: a paired test needs both "
                "systems' hypotheses of the same lines",
                paired, nb, hyp, nh);
        goto done;
    }
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
            ad_bleu_stats sb = {0};
            ad_chrf_stats c, cpp;
            ad_chrf_init(&c, 6, 0, 2.0);
            ad_chrf_init(&cpp, 6, 2, 2.0);
            if (ad_bleu_add(&sb, h[i], r[i], tok) < 0 || ad_chrf_add(&c, h[i], r[i]) < 0 ||
                (chrf_plus && ad_chrf_add(&cpp, h[i], r[i]) < 0)) {
                ad_fail_context("line %d", i + 1);
                goto done;
            }
            const double sbleu = ad_bleu_score(&sb, true).score, schrf = ad_chrf_score(&c);
            if (json)
                printf(chrf_plus
                           ? "{\"line\": %d, \"bleu\": %.6f, \"chrf\": %.6f, \"chrf++\": %.6f}\n"
                           : "{\"line\": %d, \"bleu\": %.6f, \"chrf\": %.6f}\n",
                       i + 1, sbleu, schrf, ad_chrf_score(&cpp));
            else
                printf(chrf_plus ? "line %d\tBLEU %.2f\tchrF %.2f\tchrF++ %.2f\n"
                                 : "line %d\tBLEU %.2f\tchrF %.2f\n",
                       i + 1, sbleu, schrf, ad_chrf_score(&cpp));
        }
    }
    if (paired && ad_paired_bootstrap_lines(base, h, r, nh, tok, (int)bs_samples, (uint64_t)bs_seed,
                                            &pb, &pc) < 0) {
        ad_fail_context("paired bootstrap of %s against %s", hyp, paired);
        goto done;
    }
    /* COMET, when asked for, is required: without comet-score the other scores are still
     * printed, and the exit status says that the request was not met. */
    double comet_score = 0;
    int comet_rc = comet ? run_comet(src, hyp, ref, nh, &comet_score) : AD_OK;
    ad_bleu_result b = ad_bleu_score(&bleu, false);
    /* sacreBLEU's signatures, marked as this program's implementation of them. */
    const char *mark = "version:2.x (audistill's sacreBLEU implementation)";
    char signature[256], sig_chrf[256], sig_chrfpp[256], comet_json[64] = "";
    snprintf(signature, sizeof signature, "nrefs:1|case:mixed|eff:no|tok:%s|smooth:exp|%s",
             tok_name, mark);
    snprintf(sig_chrf, sizeof sig_chrf, "nrefs:1|case:mixed|eff:yes|nc:6|nw:0|space:no|%s", mark);
    snprintf(sig_chrfpp, sizeof sig_chrfpp, "nrefs:1|case:mixed|eff:yes|nc:6|nw:2|space:no|%s",
             mark);
    if (comet && comet_rc == AD_OK)
        snprintf(comet_json, sizeof comet_json, ", \"comet\": %.6f", comet_score);
    if (paired) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "samples", (double)bs_samples);
        cJSON_AddNumberToObject(o, "seed", (double)bs_seed);
        cJSON_AddItemToObject(o, "bleu", ad_paired_result_json(&pb));
        cJSON_AddItemToObject(o, "chrf", ad_paired_result_json(&pc));
        char *text = o ? cJSON_PrintUnformatted(o) : NULL;
        cJSON_Delete(o);
        const size_t size = text ? strlen(text) + 32 : 0;
        if (text && (paired_json = malloc(size)))
            snprintf(paired_json, size, ", \"paired_bs\": %s", text);
        free(text);
        if (!paired_json) {
            ad_fail("out of memory writing the paired test");
            goto done;
        }
    }
    if (json)
        printf("{\"bleu\": %.6f, \"chrf\": %.6f, \"chrf++\": %.6f, \"bp\": %.6f, \"sys_len\": "
               "%lld, \"ref_len\": %lld, \"lines\": %d%s, \"signature\": \"%s\", "
               "\"signature_chrf\": \"%s\", \"signature_chrf++\": \"%s\"%s}\n",
               b.score, ad_chrf_score(&chrf), ad_chrf_score(&chrfpp), b.bp, (long long)b.sys_len,
               (long long)b.ref_len, nh, comet_json, signature, sig_chrf, sig_chrfpp,
               paired_json ? paired_json : "");
    else
        printf("BLEU = %.2f %.1f/%.1f/%.1f/%.1f (BP = %.3f ratio = %.3f hyp_len = %lld ref_len = "
               "%lld)\n"
               "chrF2 = %.2f\nchrF2++ = %.2f\nBLEU signature: %s\nchrF2 signature: %s\n"
               "chrF2++ signature: %s\n",
               b.score, b.precisions[0], b.precisions[1], b.precisions[2], b.precisions[3], b.bp,
               b.ref_len ? (double)b.sys_len / (double)b.ref_len : 0.0, (long long)b.sys_len,
               (long long)b.ref_len, ad_chrf_score(&chrf), ad_chrf_score(&chrfpp), signature,
               sig_chrf, sig_chrfpp);
    if (!json && comet && comet_rc == AD_OK)
        printf("COMET = %.4f (comet-score, its default model)\n", comet_score);
    if (!json && paired) {
        printf("paired bootstrap against %s (%lld resamples, seed %lld):\n", paired, bs_samples,
               bs_seed);
        print_paired("BLEU", &pb);
        print_paired("chrF2", &pc);
    }
    rc = comet_rc == AD_OK ? 0 : 1;
done:
    if (rc) cli_fail("score");
    ad_free_lines(h, nh), ad_free_lines(r, nr), ad_free_lines(base, nb);
    free(paired_json);
    return rc;
}
