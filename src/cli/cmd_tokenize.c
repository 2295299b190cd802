/* audistill tokenize: the Qwen2 tokenizer on stdin lines, ids (or text with --decode) on stdout,
 * one output line per input line. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cli/cli.h"
#include "core/error.h"
#include "text/bpe.h"

static const char *usage = "audistill tokenize --tokenizer DIR [--decode [--skip-special]] "
                           "[--escapes] [--no-audio-specials]";

static void print_help(void) {
    printf(
        "usage: %s\n\n"
        "Reads lines on stdin and prints one line per input line: the token ids of the line's\n"
        "text separated by spaces, or with --decode the text of a line of space-separated ids.\n"
        "The ids are those of transformers' Qwen2TokenizerFast (NFC, added tokens split out\n"
        "first, the Qwen2 pre-tokenizer, byte-level BPE); no special tokens are added.\n\n"
        "  --tokenizer DIR       vocab.json and merges.txt, and optionally tokenizer_config.json\n"
        "                        (its added_tokens_decoder gives the added tokens)\n"
        "  --decode              ids to text; bytes that are not UTF-8 become U+FFFD\n"
        "  --skip-special        with --decode: leave out special tokens (<|im_end|>, ...)\n"
        "  --escapes             text is written with \\n \\r \\t \\\\ escapes, so that text with\n"
        "                        line breaks fits on one line (read when encoding, written when\n"
        "                        decoding); without it a line is taken as it is, less its line\n"
        "                        ending (\\n or \\r\\n)\n"
        "  --no-audio-specials   do not add Qwen2-Audio's six special tokens\n\n"
        "Qwen2-Audio's special tokens <|endoftext|> 151643, <|im_start|> 151644, <|im_end|>\n"
        "151645, <|AUDIO|> 151646, <|audio_bos|> 151647 and <|audio_eos|> 151648 are added by\n"
        "default, unless tokenizer_config.json already defines them, so that a directory with\n"
        "only vocab.json and merges.txt tokenizes Qwen2-Audio prompts correctly.\n",
        usage);
}

/* Undoes --escapes in place; returns the new length, or -1 at an unknown escape. */
static long unescape(char *s, size_t len) {
    size_t w = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '\\') {
            s[w++] = s[i];
            continue;
        }
        if (++i == len) return -1;
        switch (s[i]) {
        case 'n': s[w++] = '\n'; break;
        case 'r': s[w++] = '\r'; break;
        case 't': s[w++] = '\t'; break;
        case '\\': s[w++] = '\\'; break;
        default: return -1;
        }
    }
    return (long)w;
}

static void print_text(const char *s, size_t len, int escapes) {
    if (!escapes) {
        fwrite(s, 1, len, stdout);
        return;
    }
    for (size_t i = 0; i < len; i++) {
        switch (s[i]) {
        case '\n': fputs("\\n", stdout); break;
        case '\r': fputs("\\r", stdout); break;
        case '\t': fputs("\\t", stdout); break;
        case '\\': fputs("\\\\", stdout); break;
        default: putchar(s[i]);
        }
    }
}

/* Parses a line of space-separated ids into *ids (grown as needed). */
static int parse_ids(const char *line, int32_t **ids, size_t *cap, int *n) {
    *n = 0;
    const char *p = line;
    for (;;) {
        while (*p == ' ' || *p == '\t')
            p++;
        if (!*p) return AD_OK;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (end == p || (*end && *end != ' ' && *end != '\t') || errno || v < 0 || v > INT32_MAX)
            return ad_fail("expected space-separated non-negative integer ids, got '%.40s'", p);
        if ((size_t)*n == *cap) {
            size_t c = *cap ? *cap * 2 : 256;
            int32_t *g = ad_realloc(*ids, sizeof *g * c, "ids");
            if (!g) return AD_ERR;
            *ids = g;
            *cap = c;
        }
        (*ids)[(*n)++] = (int32_t)v;
        p = end;
    }
}

int cmd_tokenize(int argc, char **argv) {
    const char *dir = NULL;
    int decode = 0, specials = 1, skip_special = 0, escapes = 0;
    for (int i = 1; i < argc; i++) {
        if (cli_is_help(argv[i])) {
            print_help();
            return 0;
        } else if (!strcmp(argv[i], "--tokenizer") && i + 1 < argc) {
            dir = argv[++i];
        } else if (!strcmp(argv[i], "--decode")) {
            decode = 1;
        } else if (!strcmp(argv[i], "--skip-special")) {
            skip_special = 1;
        } else if (!strcmp(argv[i], "--escapes")) {
            escapes = 1;
        } else if (!strcmp(argv[i], "--no-audio-specials")) {
            specials = 0;
        } else {
            return cli_usage_error("tokenize", usage, "unexpected argument '%s'", argv[i]);
        }
    }
    if (!dir) return cli_usage_error("tokenize", usage, "--tokenizer DIR is required");
    if (skip_special && !decode)
        return cli_usage_error("tokenize", usage, "--skip-special applies to --decode only");
    ad_tokenizer *t;
    if (ad_tokenizer_load(dir, specials, &t) < 0) return cli_fail("tokenize");
    char *line = NULL;
    size_t cap = 0, ids_cap = 0;
    int32_t *ids = NULL;
    ssize_t len;
    int rc = 0;
    long line_no = 0;
    while (rc == 0 && (len = getline(&line, &cap, stdin)) >= 0) {
        line_no++;
        if (len && line[len - 1] == '\n') line[--len] = '\0';
        if (len && line[len - 1] == '\r') line[--len] = '\0';
        if (decode) {
            int n;
            char *text = NULL;
            size_t tlen;
            if (parse_ids(line, &ids, &ids_cap, &n) < 0 ||
                ad_tokenizer_decode_len(t, ids, n, skip_special, &text, &tlen) < 0) {
                rc = 1;
            } else {
                print_text(text, tlen, escapes);
                putchar('\n');
            }
            free(text);
        } else {
            long n_bytes = escapes ? unescape(line, (size_t)len) : (long)len;
            int32_t *out = NULL;
            int n;
            if (n_bytes < 0) {
                rc = ad_fail("unknown escape (--escapes knows \\n \\r \\t \\\\)");
            } else if (ad_tokenizer_encode(t, line, (size_t)n_bytes, &out, &n) < 0) {
                rc = 1;
            } else {
                for (int i = 0; i < n; i++)
                    printf("%s%d", i ? " " : "", out[i]);
                putchar('\n');
            }
            free(out);
        }
        if (rc) {
            ad_fail_context("stdin line %ld", line_no);
            rc = cli_fail("tokenize");
        }
    }
    free(line);
    free(ids);
    ad_tokenizer_free(t);
    if (rc == 0 && (ferror(stdin) || fflush(stdout) != 0)) {
        ad_fail("reading stdin or writing stdout failed");
        rc = cli_fail("tokenize");
    }
    return rc;
}
