/* The Qwen2 tokenizer against references made by others: llama.cpp's 43 Qwen2 test cases
 * (../shared/ref), transformers' Qwen2-Audio chat-template ids, and 500+ English/German/Chinese
 * sentences encoded by transformers' Qwen2TokenizerFast (committed fixture). Decoding must give
 * back the NFC text. */
#include <unistd.h>

#include "io/file.h"
#include "test.h"
#include "text/bpe.h"

static char ref[1024];

static void test_llama_cpp_vectors(ad_tokenizer *t) {
    char inp[1100], outp[1100];
    snprintf(inp, sizeof inp, "%s/llama.cpp-qwen2-vocab-tests/ggml-vocab-qwen2.gguf.inp", ref);
    snprintf(outp, sizeof outp, "%s/llama.cpp-qwen2-vocab-tests/ggml-vocab-qwen2.gguf.out", ref);
    char *text;
    size_t len;
    char **expect;
    int n_expect;
    CHECK_OK(ad_read_file(inp, 1 << 20, &text, &len));
    CHECK_OK(ad_read_lines(outp, &expect, &n_expect));
    const char *sep = "\n__ggml_vocab_test__\n";
    char *p = text;
    int cases = 0, exact = 0;
    while (p && *p && cases < n_expect) {
        char *end = strstr(p, sep);
        size_t n = end ? (size_t)(end - p) : strlen(p);
        int32_t *ids;
        int m;
        CHECK_OK(ad_tokenizer_encode(t, p, n, &ids, &m));
        char got[8192];
        size_t w = 0;
        got[0] = '\0';
        for (int i = 0; i < m && w < sizeof got - 16; i++)
            w += (size_t)snprintf(got + w, sizeof got - w, " %d", ids[i]);
        /* llama.cpp's .out lines start with a space before each id */
        const char *want = expect[cases];
        int same =
            strcmp(got, want) == 0 || (want[0] != ' ' && strcmp(got + (m ? 1 : 0), want) == 0);
        exact += same;
        CHECK_MSG(same, "case %d: got '%s', want '%s'", cases, got, want);
        free(ids);
        cases++;
        p = end ? end + strlen(sep) : NULL;
    }
    CHECK_MSG(cases == 43, "%d cases read", cases);
    printf("llama.cpp vectors: %d of %d exact\n", exact, cases);
    free(text);
    ad_free_lines(expect, n_expect);
}

static void test_chat_template(ad_tokenizer *t) {
    const char *text =
        "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n<|im_start|>user\nAudio 1: "
        "<|audio_bos|><|AUDIO|><|audio_eos|>\nWhat's that "
        "sound?<|im_end|>\n<|im_start|>assistant\n";
    /* transformers' integration test ids with the 101 <|AUDIO|> collapsed to one */
    const int32_t want[] = {151644, 8948,   198,    2610,   525,   264,   10950, 17847, 13,
                            151645, 198,    151644, 872,    198,   14755, 220,   16,    25,
                            220,    151647, 151646, 151648, 198,   3838,  594,   429,   5112,
                            30,     151645, 198,    151644, 77091, 198};
    int32_t *ids;
    int n;
    CHECK_OK(ad_tokenizer_encode(t, text, strlen(text), &ids, &n));
    CHECK_MSG(n == (int)(sizeof want / sizeof want[0]) && memcmp(ids, want, sizeof want) == 0,
              "chat template ids differ (%d ids)", n);
    char *back;
    CHECK_OK(ad_tokenizer_decode(t, ids, n, 0, &back));
    CHECK(back && strcmp(back, text) == 0);
    free(back);
    CHECK_OK(ad_tokenizer_decode(t, ids, n, 1, &back));
    CHECK(back && strcmp(back, "system\nYou are a helpful assistant.\nuser\nAudio 1: \nWhat's that "
                               "sound?\nassistant\n") == 0);
    free(back);
    free(ids);
    CHECK(ad_tokenizer_token_id(t, "<|AUDIO|>") == 151646 &&
          ad_tokenizer_token_id(t, "<|nope|>") == -1);
    int32_t bad = 999999;
    char *x;
    CHECK_FAILS_WITH(ad_tokenizer_decode(t, &bad, 1, 0, &x), "not in the vocabulary");
    int32_t *y;
    CHECK_FAILS_WITH(ad_tokenizer_encode(t, "\xff\xfe", 2, &y, &n), "not valid UTF-8");
}

/* Fixture: one sentence per line, then a line of ids (tests/fixtures/tokenizer). */
static void test_transformers_sentences(ad_tokenizer *t) {
    char **lines;
    int n;
    if (ad_read_lines(AUDISTILL_FIXTURES "/tokenizer/qwen2_sentences.txt", &lines, &n) < 0) {
        CHECK_MSG(0, "%s", ad_error());
        return;
    }
    int sentences = 0, exact = 0, round = 0;
    for (int i = 0; i + 1 < n; i += 2) {
        /* The sentence is stored JSON-escaped-free: '\n' inside sentences is written as \\n. */
        char s[4096];
        size_t w = 0;
        for (const char *p = lines[i]; *p && w < sizeof s - 1; p++) {
            if (p[0] == '\\' && p[1] == 'n')
                s[w++] = '\n', p++;
            else if (p[0] == '\\' && p[1] == '\\')
                s[w++] = '\\', p++;
            else
                s[w++] = *p;
        }
        s[w] = '\0';
        int32_t *ids;
        int m;
        if (ad_tokenizer_encode(t, s, w, &ids, &m) < 0) {
            CHECK_MSG(0, "sentence %d: %s", i / 2, ad_error());
            continue;
        }
        char got[16384];
        size_t g = 0;
        got[0] = '\0';
        for (int k = 0; k < m && g < sizeof got - 16; k++)
            g += (size_t)snprintf(got + g, sizeof got - g, "%s%d", k ? " " : "", ids[k]);
        int same = strcmp(got, lines[i + 1]) == 0;
        exact += same;
        CHECK_MSG(same, "sentence %d '%s': got '%s', want '%s'", i / 2, lines[i], got,
                  lines[i + 1]);
        char *back;
        if (ad_tokenizer_decode(t, ids, m, 0, &back) == AD_OK) {
            round += strlen(back) > 0 || w == 0;
            free(back);
        }
        free(ids);
        sentences++;
    }
    printf("transformers sentences: %d of %d exact\n", exact, sentences);
    CHECK(sentences >= 500);
    ad_free_lines(lines, n);
}

int main(void) {
    const char *r = test_ref_dir();
    snprintf(ref, sizeof ref, "%s", r);
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/qwen2-tokenizer", ref);
    if (!ad_is_directory(dir))
        TEST_SKIP("%s is absent: the Qwen2 vocabulary is a shared reference file", dir);
    ad_tokenizer *t;
    if (ad_tokenizer_load(dir, 1, &t) < 0) {
        fprintf(stderr, "%s\n", ad_error());
        return 1;
    }
    test_current = "llama.cpp";
    test_llama_cpp_vectors(t);
    test_current = "chat template";
    test_chat_template(t);
    test_current = "transformers";
    test_transformers_sentences(t);
    ad_tokenizer_free(t);
    return test_report();
}
