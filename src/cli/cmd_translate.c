/* audistill translate: speech in, translations out, one line per clip. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/log.h"
#include "io/audio_file.h"
#include "io/file.h"
#include "model/translator.h"

static const char *usage =
    "audistill translate --model DIR --lang de|zh|en [--beam N] [--prompt TEXT] "
    "[--max-new-tokens N] [--chat] [--threads N] [--device cpu|cuda] (AUDIO... | --list FILE)";

static void print_help(void) {
    printf(
        "usage: %s\n\n"
        "Translates each clip (WAV/FLAC/OGG, any rate or channel count; resampled to 16 kHz mono)\n"
        "and prints one line per clip. The model directory holds config.json, the safetensors\n"
        "weights and the tokenizer files. The prompt is the base-model template\n"
        "<|audio_bos|><|AUDIO|><|audio_eos|>TASK with TASK = \"Translate the English speech into\n"
        "German:\" (--lang de) or \"...Chinese:\" (--lang zh), or \"Transcribe the English "
        "speech:\"\n"
        "(--lang en, a transcription task) unless --prompt gives another task;\n"
        "--chat uses the Instruct chat template instead. Decoding is greedy (--beam 1, default)\n"
        "or beam search with transformers' generate() semantics. Clips longer than the model's\n"
        "30 s window are truncated with a warning: segment long talks first (audistill segment).\n"
        "--list FILE reads one audio path per line. --device cuda runs the model on GPU 0 (f32\n"
        "activations; a build without CUDA refuses it).\n",
        usage);
}

int cmd_translate(int argc, char **argv) {
    const char *model = NULL, *lang = NULL, *prompt = NULL, *list = NULL;
    ad_translator_options opt = {
        .num_beams = 1, .length_penalty = 1.0f, .max_new_tokens = 128, .style = AD_PROMPT_BASE};
    const char **audio = calloc((size_t)argc, sizeof *audio);
    int n_audio = 0;
    if (!audio) return 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        bool has_value = i + 1 < argc;
        if (cli_is_help(a)) {
            print_help();
            free(audio);
            return 0;
        } else if (!strcmp(a, "--model") && has_value)
            model = argv[++i];
        else if (!strcmp(a, "--lang") && has_value)
            lang = argv[++i];
        else if (!strcmp(a, "--prompt") && has_value)
            prompt = argv[++i];
        else if (!strcmp(a, "--list") && has_value)
            list = argv[++i];
        else if (!strcmp(a, "--beam") && has_value)
            opt.num_beams = atoi(argv[++i]);
        else if (!strcmp(a, "--max-new-tokens") && has_value)
            opt.max_new_tokens = atoi(argv[++i]);
        else if (!strcmp(a, "--threads") && has_value)
            opt.threads = atoi(argv[++i]);
        else if (!strcmp(a, "--device") && has_value)
            opt.device = argv[++i];
        else if (!strcmp(a, "--chat"))
            opt.style = AD_PROMPT_CHAT;
        else if (a[0] == '-') {
            free(audio);
            return cli_usage_error("translate", usage, "unknown option '%s'", a);
        } else
            audio[n_audio++] = a;
    }
    int rc = 2;
    char **lines = NULL;
    int n_lines = 0;
    if (!model || !lang) {
        cli_usage_error("translate", usage, "--model and --lang are required");
        goto out;
    }
    const char *task = prompt ? prompt : ad_prompt_default_task(lang);
    if (!task) {
        cli_usage_error("translate", usage,
                        "unknown language '%s' (de, zh or en, or give --prompt)", lang);
        goto out;
    }
    if (opt.device && strcmp(opt.device, "cpu") != 0 && strcmp(opt.device, "cuda") != 0) {
        cli_usage_error("translate", usage, "--device must be cpu or cuda, not '%s'", opt.device);
        goto out;
    }
    if (opt.num_beams < 1 || opt.num_beams > 64 || opt.max_new_tokens < 1 || opt.threads < 0) {
        cli_usage_error("translate", usage, "--beam must be 1..64, --max-new-tokens >= 1");
        goto out;
    }
    if (list) {
        if (ad_read_lines(list, &lines, &n_lines) < 0) {
            rc = cli_fail("translate");
            goto out;
        }
        const char **g = realloc(audio, sizeof *audio * (size_t)(n_audio + n_lines + 1));
        if (!g) goto out;
        audio = g;
        for (int i = 0; i < n_lines; i++)
            if (lines[i][0]) audio[n_audio++] = lines[i];
    }
    if (n_audio == 0) {
        cli_usage_error("translate", usage, "no audio given");
        goto out;
    }
    ad_translator t;
    if (ad_translator_open(&t, model, &opt) < 0) {
        rc = cli_fail("translate");
        goto out;
    }
    rc = 0;
    for (int i = 0; i < n_audio && rc == 0; i++) {
        float *samples = NULL;
        int64_t n = 0;
        char *text = NULL;
        if (ad_audio_read(audio[i], 0, 0, AD_MEL_SAMPLE_RATE, &samples, &n) < 0 ||
            ad_translator_run(&t, samples, n, task, &text) < 0) {
            ad_fail_context("%s", audio[i]);
            rc = cli_fail("translate");
        } else {
            /* One line per clip: a newline inside a translation would break that. */
            for (char *p = text; *p; p++)
                if (*p == '\n' || *p == '\r') *p = ' ';
            printf("%s\n", text);
            fflush(stdout);
        }
        free(samples);
        free(text);
    }
    ad_translator_close(&t);
out:
    ad_free_lines(lines, n_lines);
    free(audio);
    return rc;
}
