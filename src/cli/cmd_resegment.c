/* audistill resegment: cut a hypothesis stream (a talk translated without reliable sentence
 * breaks) into one line per reference segment, as mwerSegmenter / mweralign does, so that it
 * can be scored line by line. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/error.h"
#include "core/log.h"
#include "eval/resegment.h"
#include "io/file.h"

static const char *usage =
    "audistill resegment --hyp STREAM_FILE --ref REF_FILE [--lang de|en|zh] -o OUT";

static void print_help(void) {
    printf("usage: %s\n\n"
           "Aligns the whole hypothesis (its line breaks are ignored: lines are stripped and\n"
           "joined) to the reference segments by minimum edit distance and writes exactly one\n"
           "hypothesis line per reference line to OUT. Equal to `mweralign -m none` (de, en:\n"
           "whitespace words, ASCII letters compared without case) and `mweralign -m cj -l zh`\n"
           "(zh: every Han character a token, runs of Latin-1 text one token). Unlike\n"
           "mweralign, a trailing empty reference line keeps its (empty) output line and output\n"
           "lines carry no trailing space. Memory: 4 bytes per hypothesis token and reference\n"
           "segment; split very long talks into documents. --lang defaults to de.\n",
           usage);
}

static int write_lines(const char *path, char *const *lines, int n) {
    ad_atomic_file f;
    AD_TRY(ad_atomic_open(&f, path));
    for (int i = 0; i < n; i++) {
        if (ad_atomic_write(&f, lines[i], strlen(lines[i])) < 0 ||
            ad_atomic_write(&f, "\n", 1) < 0) {
            ad_atomic_abort(&f);
            return AD_ERR;
        }
    }
    return ad_atomic_commit(&f);
}

int cmd_resegment(int argc, char **argv) {
    const char *hyp = NULL, *ref = NULL, *lang = "de", *out = NULL;
    for (int i = 1; i < argc; i++) {
        bool v = i + 1 < argc;
        if (cli_is_help(argv[i])) {
            print_help();
            return 0;
        } else if (!strcmp(argv[i], "--hyp") && v) {
            hyp = argv[++i];
        } else if (!strcmp(argv[i], "--ref") && v) {
            ref = argv[++i];
        } else if (!strcmp(argv[i], "--lang") && v) {
            lang = argv[++i];
        } else if ((!strcmp(argv[i], "-o") || !strcmp(argv[i], "--output")) && v) {
            out = argv[++i];
        } else {
            return cli_usage_error("resegment", usage, "unexpected argument '%s'", argv[i]);
        }
    }
    if (!hyp || !ref || !out)
        return cli_usage_error("resegment", usage, "--hyp, --ref and -o are required");
    ad_reseg_mode mode;
    if (!strcmp(lang, "zh"))
        mode = AD_RESEG_CHARS;
    else if (!strcmp(lang, "de") || !strcmp(lang, "en"))
        mode = AD_RESEG_WORDS;
    else
        return cli_usage_error("resegment", usage, "unknown language '%s' (de, en, zh)", lang);
    char **h = NULL, **r = NULL;
    int nh = 0, nr = 0, rc = 1;
    ad_reseg_result res = {0};
    if (ad_read_lines(hyp, &h, &nh) < 0 || ad_read_lines(ref, &r, &nr) < 0) goto done;
    if (nr == 0) {
        ad_fail("%s has no lines: nothing to align to", ref);
        goto done;
    }
    if (ad_resegment((const char *const *)r, nr, (const char *const *)h, nh, mode, &res) < 0) {
        ad_fail_context("aligning %s to %s", hyp, ref);
        goto done;
    }
    if (write_lines(out, res.lines, res.n_lines) < 0) goto done;
    ad_info("resegment: %lld hypothesis tokens onto %d segments (%lld reference tokens), "
            "%lld edits (AS-WER %.2f%%)",
            (long long)res.n_hyp_tokens, res.n_lines, (long long)res.n_ref_tokens,
            (long long)res.cost,
            res.n_ref_tokens ? 100.0 * (double)res.cost / (double)res.n_ref_tokens : 0.0);
    rc = 0;
done:
    if (rc) cli_fail("resegment");
    ad_reseg_free(&res);
    ad_free_lines(h, nh), ad_free_lines(r, nr);
    return rc;
}
