/* audistill tokenize: the Qwen2 tokenizer on stdin lines, ids (or text with --decode) on stdout. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "text/bpe.h"

static const char *usage = "audistill tokenize --tokenizer DIR [--decode] [--no-audio-specials]";

static void print_help(void) {
    printf("usage: %s\n\n"
           "Reads lines on stdin; prints one line per input line: the token ids separated by\n"
           "spaces, or with --decode the text of space-separated ids. DIR holds vocab.json and\n"
           "merges.txt and optionally tokenizer_config.json (added tokens). Qwen2-Audio's six\n"
           "special tokens (<|endoftext|> 151643 ... <|audio_eos|> 151648) are added unless the\n"
           "directory defines them or --no-audio-specials is given. Escapes: a literal \\n in a\n"
           "line stands for a newline inside the text.\n",
           usage);
}

int cmd_tokenize(int argc, char **argv) {
    const char *dir = NULL;
    int decode = 0, specials = 1;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            print_help();
            return 0;
        } else if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc) {
            dir = argv[++i];
        } else if (!strcmp(argv[i], "--decode")) {
            decode = 1;
        } else if (!strcmp(argv[i], "--no-audio-specials")) {
            specials = 0;
        } else {
            return cli_usage_error("tokenize", usage, "unexpected argument '%s'", argv[i]);
        }
    }
    if (!dir) return cli_usage_error("tokenize", usage, "--tokenizer DIR is required");
    ad_tokenizer *t;
    if (ad_tokenizer_load(dir, specials, &t) < 0) return cli_fail("tokenize");
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int rc = 0;
    long line_no = 0;
    while ((len = getline(&line, &cap, stdin)) >= 0) {
        line_no++;
        if (len && line[len - 1] == '\n') line[--len] = '\0';
        if (decode) {
            int32_t *ids = malloc(sizeof(int32_t) * (size_t)(len / 2 + 1));
            int n = 0;
            char *p = line, *end;
            while (ids && *p) {
                long v = strtol(p, &end, 10);
                if (end == p) break;
                ids[n++] = (int32_t)v;
                p = end;
            }
            while (*p == ' ' || *p == '\t')
                p++;
            char *text = NULL;
            if (!ids || *p) {
                fprintf(stderr,
                        "audistill tokenize: line %ld: expected space-separated integer ids\n",
                        line_no);
                rc = 1;
            } else if (ad_tokenizer_decode(t, ids, n, 0, &text) < 0) {
                fprintf(stderr, "audistill tokenize: line %ld: %s\n", line_no, "");
                cli_fail("tokenize");
                rc = 1;
            } else {
                printf("%s\n", text);
            }
            free(text);
            free(ids);
        } else {
            /* "\n" written as backslash-n stands for a newline inside the text. */
            size_t w = 0;
            for (ssize_t i = 0; i < len; i++) {
                if (line[i] == '\\' && i + 1 < len && line[i + 1] == 'n')
                    line[w++] = '\n', i++;
                else
                    line[w++] = line[i];
            }
            int32_t *ids;
            int n;
            if (ad_tokenizer_encode(t, line, w, &ids, &n) < 0) {
                fprintf(stderr, "audistill tokenize: line %ld: ", line_no);
                cli_fail("tokenize");
                rc = 1;
                continue;
            }
            for (int i = 0; i < n; i++)
                printf("%s%d", i ? " " : "", ids[i]);
            printf("\n");
            free(ids);
        }
        if (rc) break;
    }
    free(line);
    ad_tokenizer_free(t);
    return rc;
}
