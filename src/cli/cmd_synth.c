/* audistill synth: writes the synthetic speech-translation corpus (espeak-ng English speech,
 * rule-based German and Chinese references) in the ACL 60/60 layout. */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/error.h"
#include "data/synth_corpus.h"

static const char *usage =
    "audistill synth --out DIR [--seed N] [--train N] [--dev N] [--eval N] [--talks N] "
    "[--jobs N] [--espeak PROGRAM] [--force]";

static void print_help(void) {
    printf("usage: %s\n\n"
           "Writes a synthetic English->German/Chinese speech-translation corpus in the ACL\n"
           "60/60 layout: DIR/{train,dev,eval}/segmented_wavs/gold/sent_N.wav (16 kHz mono,\n"
           "espeak-ng with varied voices, rates, pitch and light white/pink noise) and\n"
           "DIR/<split>/text/txt/ACL.6060.<split>.en-xx.{en,de,zh}.txt (line N <-> sent_N).\n"
           "The eval sentences are also joined into --talks talks (0.3-1.0 s pauses):\n"
           "DIR/eval/full_wavs/talk_K.wav, DIR/eval/FILE_ORDER and the segmentation list\n"
           "DIR/eval/text/txt/ACL.6060.eval.en-xx.yaml with each sentence's exact offset.\n"
           "Sentences are distinct within and across splits, and text and audio depend only\n"
           "on the seed and the sizes. DIR appears complete or not at all.\n\n"
           "  --out DIR         output directory (must not exist unless --force)\n"
           "  --seed N          random seed (default 1)\n"
           "  --train/--dev/--eval N   sentences per split (default 5000/500/500)\n"
           "  --talks N         eval talks (default 3; 0: none)\n"
           "  --jobs N          espeak-ng processes at a time (default 2)\n"
           "  --espeak PROGRAM  the espeak-ng program (default espeak-ng from PATH)\n"
           "  --force           replace an existing DIR\n",
           usage);
}

int cmd_synth(int argc, char **argv) {
    ad_synth_corpus_options opt = {
        .seed = 1, .counts = {5000, 500, 500}, .talks = 3, .jobs = 2, .espeak = "espeak-ng"};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (cli_is_help(a)) {
            print_help();
            return 0;
        }
        if (strcmp(a, "--force") == 0) {
            opt.force = true;
            continue;
        }
        if (i + 1 >= argc) return cli_usage_error("synth", usage, "unexpected argument '%s'", a);
        const char *v = argv[++i];
        long long n = 0;
        if (strcmp(a, "--out") == 0) {
            opt.out_dir = v;
        } else if (strcmp(a, "--espeak") == 0) {
            opt.espeak = v;
        } else if (strcmp(a, "--seed") == 0) {
            if (cli_parse_count(v, LLONG_MAX, &n) < 0)
                return cli_usage_error("synth", usage, "--seed wants a non-negative integer");
            opt.seed = (uint64_t)n;
        } else if (strcmp(a, "--train") == 0 || strcmp(a, "--dev") == 0 ||
                   strcmp(a, "--eval") == 0 || strcmp(a, "--talks") == 0 ||
                   strcmp(a, "--jobs") == 0) {
            if (cli_parse_count(v, 10000000, &n) < 0)
                return cli_usage_error("synth", usage, "%s wants an integer 0..10000000, not '%s'",
                                       a, v);
            if (strcmp(a, "--train") == 0) opt.counts[AD_SYNTH_TRAIN] = (int)n;
            if (strcmp(a, "--dev") == 0) opt.counts[AD_SYNTH_DEV] = (int)n;
            if (strcmp(a, "--eval") == 0) opt.counts[AD_SYNTH_EVAL] = (int)n;
            if (strcmp(a, "--talks") == 0) opt.talks = (int)n;
            if (strcmp(a, "--jobs") == 0) opt.jobs = (int)n;
        } else {
            return cli_usage_error("synth", usage, "unexpected argument '%s'", a);
        }
    }
    if (!opt.out_dir) return cli_usage_error("synth", usage, "--out DIR is required");
    for (int s = 0; s < AD_SYNTH_SPLITS; s++)
        if (opt.counts[s] < 1)
            return cli_usage_error("synth", usage, "--%s must be at least 1",
                                   ad_synth_split_names[s]);
    if (opt.talks > opt.counts[AD_SYNTH_EVAL])
        return cli_usage_error("synth", usage, "--talks %d exceeds --eval %d", opt.talks,
                               opt.counts[AD_SYNTH_EVAL]);
    if (opt.jobs < 1 || opt.jobs > 64)
        return cli_usage_error("synth", usage, "--jobs must be 1..64");
    ad_synth_corpus_stats st;
    if (ad_synth_write_corpus(&opt, &st) < 0) return cli_fail("synth");
    printf("wrote %s: %d sentences (train %d, dev %d, eval %d), %.1f min of speech, "
           "%d talk%s (%.1f min), in %.1f s\n",
           opt.out_dir, st.sentences, opt.counts[0], opt.counts[1], opt.counts[2],
           st.audio_seconds / 60.0, opt.talks, opt.talks == 1 ? "" : "s", st.talk_seconds / 60.0,
           st.wall_seconds);
    return 0;
}
