/* audistill prepare: a data set (ACL 60/60 layout or a manifest) to a prepared HDF5 set —
 * log-mel features, the prompt and target token ids per language, texts and talk ids — that
 * training, calibration and evaluation read. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "audio/mel.h"
#include "cli/cli.h"
#include "core/log.h"
#include "core/progress.h"
#include "data/dataset.h"
#include "data/prepared.h"
#include "io/audio_file.h"
#include "io/file.h"
#include "model/prompt.h"
#include "text/bpe.h"

static const char *usage =
    "audistill prepare --data ACL_ROOT --split SPLIT | --data MANIFEST.tsv|.yaml "
    "--tokenizer DIR --out SET.h5 [--langs de,zh] [--n-mels 128] [--chat]";

static void print_help(void) {
    printf(
        "usage: %s\n\n"
        "Reads every segment's audio (any format/rate; the offset/duration range of a talk when\n"
        "given), computes Whisper log-mel features once, tokenizes the prompt per target\n"
        "language (base template <|audio_bos|><|AUDIO|><|audio_eos|>Translate the English speech\n"
        "into German:/Chinese:, or --chat for the Instruct template) and every target text\n"
        "followed by its end token (<|endoftext|>, or <|im_end|> with --chat), and writes one\n"
        "HDF5 file (chunked, compressed; see src/data/prepared.h for the layout). The output is\n"
        "written under a temporary name and renamed when complete.\n",
        usage);
}

static int split_langs(char *spec, const char **langs) {
    int n = 0;
    for (char *tok = strtok(spec, ","); tok && n < AD_MAX_LANGS; tok = strtok(NULL, ","))
        langs[n++] = tok;
    return n;
}

int cmd_prepare(int argc, char **argv) {
    const char *data = NULL, *split = NULL, *tok_dir = NULL, *out = NULL;
    char langs_buf[64] = "de,zh";
    int n_mels = 128;
    ad_prompt_style style = AD_PROMPT_BASE;
    for (int i = 1; i < argc; i++) {
        bool v = i + 1 < argc;
        if (cli_is_help(argv[i])) {
            print_help();
            return 0;
        } else if (!strcmp(argv[i], "--data") && v)
            data = argv[++i];
        else if (!strcmp(argv[i], "--split") && v)
            split = argv[++i];
        else if (!strcmp(argv[i], "--tokenizer") && v)
            tok_dir = argv[++i];
        else if (!strcmp(argv[i], "--out") && v)
            out = argv[++i];
        else if (!strcmp(argv[i], "--langs") && v)
            snprintf(langs_buf, sizeof langs_buf, "%s", argv[++i]);
        else if (!strcmp(argv[i], "--n-mels") && v)
            n_mels = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--chat"))
            style = AD_PROMPT_CHAT;
        else
            return cli_usage_error("prepare", usage, "unexpected argument '%s'", argv[i]);
    }
    if (!data || !tok_dir || !out)
        return cli_usage_error("prepare", usage, "--data, --tokenizer and --out are required");
    if (n_mels < 1 || n_mels > 512)
        return cli_usage_error("prepare", usage, "--n-mels must be 1..512");
    const char *targets[AD_MAX_LANGS];
    int n_targets = split_langs(langs_buf, targets);
    for (int i = 0; i < n_targets; i++)
        if (!ad_prompt_default_task(targets[i]))
            return cli_usage_error("prepare", usage, "unknown language '%s'", targets[i]);
    ad_dataset ds = {0};
    ad_tokenizer *tok = NULL;
    ad_mel mel = {0};
    ad_prepared_writer *w = NULL;
    float *features = NULL, *rows = NULL;
    int rc = 1;
    if (ad_is_directory(data)) {
        if (!split) {
            cli_usage_error("prepare", usage, "--split is required with an ACL 60/60 directory");
            return 2;
        }
        const char *all[AD_MAX_LANGS + 1] = {"en"};
        int n_all = 1;
        for (int i = 0; i < n_targets; i++)
            if (strcmp(targets[i], "en") != 0) all[n_all++] = targets[i];
        if (ad_dataset_load_acl(data, split, n_all, all, NULL, &ds) < 0) goto done;
    } else if (ad_dataset_load_manifest(data, &ds) < 0) {
        goto done;
    }
    for (int i = 0; i < n_targets; i++)
        if (ad_dataset_lang(&ds, targets[i]) < 0) {
            ad_fail("%s has no %s texts", data, targets[i]);
            goto done;
        }
    if (ad_tokenizer_load(tok_dir, 1, &tok) < 0 || ad_mel_init(&mel, n_mels) < 0) goto done;
    const char *end_token = style == AD_PROMPT_CHAT ? "<|im_end|>" : "<|endoftext|>";
    const int32_t end_id = ad_tokenizer_token_id(tok, end_token);
    if (end_id < 0) {
        ad_fail("%s: the tokenizer has no %s", tok_dir, end_token);
        goto done;
    }
    const char *text_langs[AD_MAX_LANGS];
    for (int i = 0; i < ds.n_langs; i++)
        text_langs[i] = ds.langs[i];
    char tok_id[256];
    snprintf(tok_id, sizeof tok_id, "%s (%d ids)", tok_dir, ad_tokenizer_size(tok));
    ad_prepared_info info = {.n_mels = n_mels,
                             .hop_length = AD_MEL_HOP_LENGTH,
                             .sample_rate = AD_MEL_SAMPLE_RATE,
                             .source = data,
                             .tokenizer = tok_id,
                             .n_text_langs = ds.n_langs,
                             .text_langs = text_langs,
                             .n_target_langs = n_targets,
                             .target_langs = targets};
    if (ad_prepared_create(out, &info, &w) < 0) goto done;
    for (int l = 0; l < n_targets; l++) {
        /* The prompt around the audio placeholder, tokenized like the processor does. */
        char *text = ad_prompt_text(style, ad_prompt_default_task(targets[l]));
        char *mark = text ? strstr(text, "<|AUDIO|>") : NULL;
        int32_t *before = NULL, *after = NULL;
        int nb = 0, na = 0;
        int r = mark ? AD_OK : ad_fail("internal: the prompt has no <|AUDIO|>");
        if (r == AD_OK) r = ad_tokenizer_encode(tok, text, (size_t)(mark - text), &before, &nb);
        if (r == AD_OK) r = ad_tokenizer_encode(tok, mark + 9, strlen(mark + 9), &after, &na);
        if (r == AD_OK) r = ad_prepared_set_prompt(w, targets[l], text, before, nb, after, na);
        free(text), free(before), free(after);
        if (r < 0) goto done;
    }
    features = ad_malloc(sizeof(float) * (size_t)n_mels * AD_MEL_FRAMES, "features");
    rows = ad_malloc(sizeof(float) * (size_t)n_mels * AD_MEL_FRAMES, "features");
    if (!features || !rows) goto done;
    ad_progress progress;
    ad_progress_start(&progress, "prepare", ds.n_segments, "segments");
    int truncated = 0;
    for (int i = 0; i < ds.n_segments; i++) {
        const ad_segment *s = &ds.segments[i];
        float *samples = NULL;
        int64_t n = 0;
        if (ad_audio_read(s->audio, s->offset, s->duration, AD_MEL_SAMPLE_RATE, &samples, &n) < 0 ||
            ad_mel_compute(&mel, samples, n, features) < 0) {
            free(samples);
            ad_fail_context("segment %d (%s)", i + 1, s->audio);
            goto done;
        }
        free(samples);
        if (n > AD_MEL_CHUNK_SAMPLES) truncated++;
        const int valid = (int)ad_mel_valid_frames(n);
        /* Frames past valid+2 hold no signal: every bin there has the same (padding) value. */
        const int stored = valid + 2 < AD_MEL_FRAMES ? valid + 2 : AD_MEL_FRAMES;
        const float pad = features[AD_MEL_FRAMES - 1];
        for (int t = 0; t < stored; t++)
            for (int m = 0; m < n_mels; m++)
                rows[(size_t)t * n_mels + m] = features[(size_t)m * AD_MEL_FRAMES + t];
        int32_t *ids[AD_MAX_LANGS] = {0};
        int counts[AD_MAX_LANGS] = {0};
        int r = AD_OK;
        for (int l = 0; l < n_targets && r == AD_OK; l++) {
            const char *t = s->text[ad_dataset_lang(&ds, targets[l])];
            r = ad_tokenizer_encode(tok, t, strlen(t), &ids[l], &counts[l]);
            if (r == AD_OK) {
                int32_t *g = realloc(ids[l], sizeof(int32_t) * (size_t)(counts[l] + 1));
                if (!g)
                    r = ad_fail("out of memory");
                else
                    ids[l] = g, ids[l][counts[l]++] = end_id;
            }
        }
        const char *texts[AD_MAX_LANGS];
        for (int l = 0; l < ds.n_langs; l++)
            texts[l] = s->text[l];
        if (r == AD_OK)
            r = ad_prepared_append(w, rows, stored, valid, pad, s->talk, texts,
                                   (const int32_t *const *)ids, counts);
        for (int l = 0; l < n_targets; l++)
            free(ids[l]);
        if (r < 0) {
            ad_fail_context("segment %d (%s)", i + 1, s->audio);
            goto done;
        }
        ad_progress_update(&progress, i + 1, NULL);
    }
    ad_progress_finish(&progress);
    if (truncated)
        ad_warn("%d segment(s) longer than 30 s were truncated to the model's window", truncated);
    rc = ad_prepared_finish(w) < 0;
    w = NULL;
    if (!rc)
        printf("%s: %d segments, %d target language(s), %d mel bins\n", out, ds.n_segments,
               n_targets, n_mels);
done:
    if (rc) cli_fail("prepare");
    if (w) ad_prepared_abort(w);
    free(features), free(rows);
    ad_mel_free(&mel);
    ad_tokenizer_free(tok);
    ad_dataset_free(&ds);
    return rc;
}
