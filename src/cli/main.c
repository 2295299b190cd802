/* Entry point: global options (--log-level, --version) and dispatch to one command. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "backend/cpu/cpu_tune.h"
#include "cli/cli.h"
#include "core/log.h"

#define EXIT_USAGE 2

static const cli_command commands[] = {
    {"inspect", cmd_inspect, "architecture, parameter counts and tensor check of a model"},
    {"plan", cmd_plan, "size on disk a compression recipe gives, from shapes alone"},
    {"prune", cmd_prune,
     "a pruned student (layers, heads, FFN, hidden, vocabulary) from a teacher"},
    {"quantize", cmd_quantize, "group-wise int8/4/3/2 weights (round-to-nearest or GPTQ)"},
    {"size", cmd_size, "bytes on disk, parameters and bits per weight of a model directory"},
    {"synth", cmd_synth, "synthetic speech-translation corpus (espeak-ng), ACL 60/60 layout"},
    {"segment", cmd_segment, "split a long recording into segments (energy VAD) as YAML"},
    {"features", cmd_features, "Whisper log-mel features of an audio file, as .npy"},
    {"tokenize", cmd_tokenize, "Qwen2 byte-level BPE: text lines to ids, or ids to text"},
    {"translate", cmd_translate, "speech to German or Chinese text with a (compressed) model"},
    {"score", cmd_score, "BLEU, chrF, chrF++ as sacreBLEU computes them (COMET if installed)"},
    {"resegment", cmd_resegment, "cut a hypothesis stream into reference segments (mwerSegmenter)"},
    {"report", cmd_report, "Markdown table and size/BLEU Pareto plot of several runs"},
    {"prepare", cmd_prepare, "audio + texts to a prepared HDF5 set (log-mel, token ids)"},
    {"train", cmd_train, "distill (KL + cross-entropy) or fine-tune a student from a YAML job"},
    {"teacher-cache", cmd_teacher_cache,
     "run a teacher once: its top-k log-probs (HDF5) for training"},
    {"run", cmd_run, "a job file's stages (prepare, prune, train, quantize, evaluate), resumable"},
};
static const int n_commands = (int)(sizeof commands / sizeof commands[0]);

int cli_parse_count(const char *text, long long max, long long *out) {
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || end == text || *end || v < 0 || v > max) return -1;
    *out = v;
    return 0;
}

bool cli_is_help(const char *arg) {
    return strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0;
}

int cli_fail(const char *command) {
    fprintf(stderr, "audistill %s: error: %s\n", command, ad_error());
    return 1;
}

int cli_usage_error(const char *command, const char *usage, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "audistill %s: ", command);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\nusage: %s\n", usage);
    return EXIT_USAGE;
}

int cli_config_job(int argc, char **argv, const char *command, const char *usage,
                   void (*help)(void), const ad_field *fields, void *job, ad_yaml_doc *doc) {
    const char *job_path = NULL;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            help();
            return 0;
        } else if (!strcmp(argv[i], "--config") && i + 1 < argc) {
            job_path = argv[++i];
        } else {
            return cli_usage_error(command, usage, "unexpected argument '%s'", argv[i]);
        }
    }
    if (!job_path) return cli_usage_error(command, usage, "--config JOB.yaml is required");
    if (ad_yaml_load(job_path, doc) < 0) return cli_fail(command);
    if (ad_yaml_bind(doc, doc->root, fields, job, "") < 0) {
        ad_yaml_free(doc);
        return cli_fail(command);
    }
    return -1;
}

static void print_usage(FILE *out) {
    fprintf(out,
            "audistill: compress Qwen2-Audio into small speech translators and measure them\n\n"
            "usage: audistill [--log-level error|warn|info|debug] <command> [options]\n\n"
            "commands:\n");
    for (int i = 0; i < n_commands; i++)
        fprintf(out, "  %-12s %s\n", commands[i].name, commands[i].summary);
    fprintf(out, "\n`audistill <command> --help` describes a command.\n");
}

int main(int argc, char **argv) {
    ad_cpu_tune_process(argv);
    int i = 1;
    while (i < argc && argv[i][0] == '-') {
        if (cli_is_help(argv[i])) {
            print_usage(stdout);
            return 0;
        }
        if (strcmp(argv[i], "--version") == 0) {
            printf("audistill %s\n", AUDISTILL_VERSION);
            return 0;
        }
        if (strcmp(argv[i], "--log-level") == 0 && i + 1 < argc) {
            ad_log_level level;
            if (ad_log_parse_level(argv[i + 1], &level) < 0) {
                fprintf(stderr, "audistill: %s\n", ad_error());
                return EXIT_USAGE;
            }
            ad_log_set_level(level);
            i += 2;
            continue;
        }
        fprintf(stderr, "audistill: unknown option '%s'\n\n", argv[i]);
        print_usage(stderr);
        return EXIT_USAGE;
    }
    if (i >= argc) {
        print_usage(stderr);
        return EXIT_USAGE;
    }
    for (int c = 0; c < n_commands; c++)
        if (strcmp(argv[i], commands[c].name) == 0) return commands[c].run(argc - i, argv + i);
    fprintf(stderr, "audistill: unknown command '%s'\n\n", argv[i]);
    print_usage(stderr);
    return EXIT_USAGE;
}
