/* The Qwen2 tokenizer against references made by others: llama.cpp's 43 Qwen2 test cases and
 * transformers' Qwen2-Audio chat-template ids (../shared/ref), and 900 texts plus 250 id
 * sequences encoded and decoded by transformers' Qwen2TokenizerFast (committed fixtures,
 * tests/fixtures/make_tokenizer_fixtures.py). decode(encode(x)) must give back NFC(x). */
#include <cjson/cJSON.h>
#include <time.h>
#include <unistd.h>
#include <utf8proc.h>

#include "io/file.h"
#include "test.h"
#include "text/bpe.h"

static char ref[1024];

/* " 1 2 3" for ids (the .out and fixture spelling); caller frees. */
static char *ids_text(const int32_t *ids, int n) {
    char *s = malloc((size_t)n * 12 + 1);
    size_t w = 0;
    s[0] = '\0';
    for (int i = 0; i < n; i++)
        w += (size_t)sprintf(s + w, "%s%d", i ? " " : "", ids[i]);
    return s;
}

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
        char *got = ids_text(ids, m);
        /* llama.cpp's .out lines may start with a space before each id */
        const char *want = expect[cases];
        while (*want == ' ')
            want++;
        int same = strcmp(got, want) == 0;
        exact += same;
        CHECK_MSG(same, "case %d: got '%s', want '%s'", cases, got, want);
        free(got);
        free(ids);
        cases++;
        p = end ? end + strlen(sep) : NULL;
    }
    CHECK_MSG(cases == 43 && n_expect == 43, "%d cases read, %d expected", cases, n_expect);
    printf("llama.cpp vectors: %d of %d exact\n", exact, cases);
    free(text);
    ad_free_lines(expect, n_expect);
}

/* transformers' Qwen2-Audio integration test: the prompt text and its ids after the processor
 * expanded <|AUDIO|> ("151646 x 101"). The tokenizer gives one <|AUDIO|>; expanding it must
 * give the listed ids. */
static void test_chat_template(ad_tokenizer *t) {
    char path[1100];
    snprintf(path, sizeof path, "%s/qwen2-tokenizer/qwen2-audio-added-tokens.json", ref);
    char *json;
    size_t len;
    CHECK_OK(ad_read_file(path, 1 << 20, &json, &len));
    cJSON *root = cJSON_ParseWithLength(json, len);
    free(json);
    const cJSON *added = cJSON_GetObjectItemCaseSensitive(root, "added_tokens");
    const cJSON *ex = cJSON_GetObjectItemCaseSensitive(root, "chat_template_example");
    const cJSON *text = cJSON_GetObjectItemCaseSensitive(ex, "text");
    const cJSON *want = cJSON_GetObjectItemCaseSensitive(ex, "ids");
    if (!cJSON_IsObject(added) || !cJSON_IsString(text) || !cJSON_IsArray(want)) {
        CHECK_MSG(0, "%s: unexpected layout", path);
        cJSON_Delete(root);
        return;
    }
    int n_specials = 0;
    for (const cJSON *a = added->child; a; a = a->next, n_specials++)
        CHECK_MSG(ad_tokenizer_token_id(t, a->string) == a->valueint, "%s", a->string);
    CHECK(n_specials == 6);

    int32_t *ids;
    int n;
    CHECK_OK(ad_tokenizer_encode(t, text->valuestring, strlen(text->valuestring), &ids, &n));
    const int audio = ad_tokenizer_token_id(t, "<|AUDIO|>");
    int32_t expanded[512];
    int ne = 0, n_audio = 0;
    for (int i = 0; i < n && ne < 400; i++) {
        int repeat = ids[i] == audio ? 101 : 1;
        n_audio += ids[i] == audio;
        for (int r = 0; r < repeat; r++)
            expanded[ne++] = ids[i];
    }
    CHECK(n_audio == 1);
    int k = 0, same = 1;
    for (const cJSON *w = want->child; w; w = w->next) {
        int count = 1, id = w->valueint;
        if (cJSON_IsString(w) && sscanf(w->valuestring, "%d x %d", &id, &count) != 2) same = 0;
        for (int r = 0; r < count; r++, k++)
            same &= k < ne && expanded[k] == id;
    }
    CHECK_MSG(same && k == ne, "chat template ids differ (%d ids after expansion, %d listed)", ne,
              k);
    printf("chat template: %d ids, %d after expanding <|AUDIO|>, %s\n", n, ne,
           same && k == ne ? "exact" : "DIFFERENT");

    char *back;
    CHECK_OK(ad_tokenizer_decode(t, ids, n, 0, &back));
    CHECK(back && strcmp(back, text->valuestring) == 0);
    free(back);
    CHECK_OK(ad_tokenizer_decode(t, ids, n, 1, &back));
    CHECK(back && strcmp(back, "system\nYou are a helpful assistant.\nuser\nAudio 1: \nWhat's that "
                               "sound?\nassistant\n") == 0);
    free(back);
    free(ids);
    cJSON_Delete(root);

    CHECK(ad_tokenizer_token_id(t, "<|nope|>") == -1);
    CHECK(ad_tokenizer_token_id(t, "Hello") == 9707);
    int32_t bad = 999999;
    char *x;
    CHECK_FAILS_WITH(ad_tokenizer_decode(t, &bad, 1, 0, &x), "not in the vocabulary");
    CHECK_FAILS_WITH(ad_tokenizer_encode(t, "ok \xff\xfe", 5, &ids, &n), "not valid UTF-8");
    CHECK_FAILS_WITH(ad_tokenizer_encode(t, "\xed\xa0\x80", 3, &ids, &n), "not valid UTF-8");
}

/* Undoes the fixture's escapes (\\ \n \r \0) in place; returns the length. */
static size_t unescape(char *s) {
    size_t w = 0;
    for (const char *p = s; *p; p++) {
        if (p[0] == '\\' && p[1]) {
            p++;
            s[w++] = *p == 'n' ? '\n' : *p == 'r' ? '\r' : *p == '0' ? '\0' : *p;
        } else {
            s[w++] = *p;
        }
    }
    return w;
}

/* Fixture: one text per line, then a line of its ids. */
static void test_transformers_sentences(ad_tokenizer *t) {
    char **lines;
    int n;
    if (ad_read_lines(AUDISTILL_FIXTURES "/tokenizer/qwen2_sentences.txt", &lines, &n) < 0) {
        CHECK_MSG(0, "%s", ad_error());
        return;
    }
    int texts = 0, exact = 0, round = 0;
    for (int i = 0; i + 1 < n; i += 2) {
        char *s = lines[i];
        size_t w = unescape(s);
        int32_t *ids;
        int m;
        texts++;
        if (ad_tokenizer_encode(t, s, w, &ids, &m) < 0) {
            CHECK_MSG(0, "text %d: %s", i / 2, ad_error());
            continue;
        }
        char *got = ids_text(ids, m);
        int same = strcmp(got, lines[i + 1]) == 0;
        exact += same;
        CHECK_MSG(same, "text %d (fixture line %d): got '%.300s', want '%.300s'", i / 2, i + 1, got,
                  lines[i + 1]);
        free(got);
        utf8proc_uint8_t *nfc;
        utf8proc_ssize_t nn = utf8proc_map((const utf8proc_uint8_t *)s, (utf8proc_ssize_t)w, &nfc,
                                           UTF8PROC_STABLE | UTF8PROC_COMPOSE);
        char *back;
        size_t blen;
        if (nn >= 0 && ad_tokenizer_decode_len(t, ids, m, 0, &back, &blen) == AD_OK) {
            int ok = blen == (size_t)nn && memcmp(back, nfc, blen) == 0;
            round += ok;
            CHECK_MSG(ok, "text %d: decode(encode(x)) != NFC(x)", i / 2);
            free(back);
        } else {
            CHECK_MSG(0, "text %d: %s", i / 2, nn < 0 ? "NFC failed" : ad_error());
        }
        if (nn >= 0) free(nfc);
        free(ids);
    }
    printf("transformers texts: %d of %d exact, %d round trips equal NFC(x)\n", exact, texts,
           round);
    CHECK(texts >= 900);
    ad_free_lines(lines, n);
}

static int hex_value(char c) {
    return c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* Fixture: ids TAB hex(decode) TAB hex(decode skipping special tokens). */
static void test_transformers_decode(ad_tokenizer *t) {
    char **lines;
    int n;
    if (ad_read_lines(AUDISTILL_FIXTURES "/tokenizer/qwen2_decode.txt", &lines, &n) < 0) {
        CHECK_MSG(0, "%s", ad_error());
        return;
    }
    int exact = 0;
    for (int i = 0; i < n; i++) {
        char *hex[2] = {strchr(lines[i], '\t'), NULL};
        if (hex[0]) hex[1] = strchr(hex[0] + 1, '\t');
        if (!hex[0] || !hex[1]) {
            CHECK_MSG(0, "decode fixture line %d: expected 3 tab-separated fields", i + 1);
            continue;
        }
        *hex[0]++ = '\0';
        *hex[1]++ = '\0';
        int32_t ids[64];
        int m = 0;
        for (char *p = lines[i], *e; m < 64; p = e) {
            long v = strtol(p, &e, 10);
            if (e == p) break;
            ids[m++] = (int32_t)v;
        }
        int same = 1;
        for (int skip = 0; skip < 2; skip++) {
            char *text;
            size_t len;
            if (ad_tokenizer_decode_len(t, ids, m, skip, &text, &len) < 0) {
                CHECK_MSG(0, "decode fixture line %d: %s", i + 1, ad_error());
                same = 0;
                continue;
            }
            const char *h = hex[skip];
            int ok = strlen(h) == 2 * len;
            for (size_t k = 0; ok && k < len; k++)
                ok = hex_value(h[2 * k]) * 16 + hex_value(h[2 * k + 1]) == (unsigned char)text[k];
            CHECK_MSG(ok, "decode fixture line %d (skip_special %d) differs", i + 1, skip);
            same &= ok;
            free(text);
        }
        exact += same;
    }
    printf("transformers decode: %d of %d exact\n", exact, n);
    CHECK(n >= 250);
    ad_free_lines(lines, n);
}

/* Added tokens from tokenizer_config.json instead of the built-in list: a special and a
 * non-special one (kept by skip_special, as in transformers). */
static void test_config_added_tokens(const char *dir) {
    char tmp[1100];
    snprintf(tmp, sizeof tmp, "%s/tokenizer.XXXXXX", AUDISTILL_TEST_TMP);
    if (ad_mkdir_p(AUDISTILL_TEST_TMP) < 0 || !mkdtemp(tmp)) {
        CHECK_MSG(0, "cannot make a directory under %s", AUDISTILL_TEST_TMP);
        return;
    }
    char src[1200], dst[1200];
    const char *files[] = {"vocab.json", "merges.txt"};
    for (int i = 0; i < 2; i++) {
        snprintf(src, sizeof src, "%s/%s", dir, files[i]);
        snprintf(dst, sizeof dst, "%s/%s", tmp, files[i]);
        CHECK(symlink(src, dst) == 0);
    }
    const char *config = "{\"added_tokens_decoder\": {"
                         "\"151643\": {\"content\": \"<|endoftext|>\", \"special\": true},"
                         "\"151657\": {\"content\": \"<tool_call>\", \"special\": false}}}";
    snprintf(dst, sizeof dst, "%s/tokenizer_config.json", tmp);
    CHECK_OK(ad_write_file_atomic(dst, config, strlen(config)));
    ad_tokenizer *t;
    if (ad_tokenizer_load(tmp, 0, &t) < 0) {
        CHECK_MSG(0, "%s", ad_error());
    } else {
        CHECK(ad_tokenizer_size(t) == 151658);
        CHECK(ad_tokenizer_token_id(t, "<tool_call>") == 151657);
        CHECK(ad_tokenizer_token_id(t, "<|im_start|>") == -1);
        int32_t *ids;
        int n;
        const char *s = "a<tool_call>b<|endoftext|><|im_start|>";
        CHECK_OK(ad_tokenizer_encode(t, s, strlen(s), &ids, &n));
        /* a, <tool_call>, b, <|endoftext|>, then "<|im_start|>" as ordinary text */
        CHECK(n > 4 && ids[0] == 64 && ids[1] == 151657 && ids[2] == 65 && ids[3] == 151643);
        for (int i = 4; i < n; i++)
            CHECK(ids[i] < 151643);
        char *back;
        CHECK_OK(ad_tokenizer_decode(t, ids, n, 1, &back));
        CHECK(back && strcmp(back, "a<tool_call>b<|im_start|>") == 0);
        free(back);
        free(ids);
        ad_tokenizer_free(t);
    }
    const char *bad = "{\"added_tokens_decoder\": {\"7\": {\"special\": true}}}";
    CHECK_OK(ad_write_file_atomic(dst, bad, strlen(bad)));
    CHECK_FAILS_WITH(ad_tokenizer_load(tmp, 0, &t), "content");
    for (int i = 0; i < 2; i++) {
        snprintf(dst, sizeof dst, "%s/%s", tmp, files[i]);
        unlink(dst);
    }
    snprintf(dst, sizeof dst, "%s/tokenizer_config.json", tmp);
    unlink(dst);
    CHECK_FAILS_WITH(ad_tokenizer_load(tmp, 1, &t), "vocab.json");
    rmdir(tmp);
}

/* BPE must stay O(n log n) on long runs without spaces (the reference takes ~0.3 s/MB); the
 * earlier rescan-per-merge took minutes for this much. Random letters, fresh each run. */
/* Generated ids past the vocabulary (the padded embedding rows) are dropped before decoding,
 * as transformers' decode() skips them; decode itself refuses them. */
static void test_unknown_ids(ad_tokenizer *t) {
    int32_t ids[] = {9707, 151700, 11, -3, 1879, 156031};
    char *want = NULL, *got = NULL;
    CHECK_OK(ad_tokenizer_decode(t, (int32_t[]){9707, 11, 1879}, 3, 1, &want));
    CHECK_FAILS_WITH(ad_tokenizer_decode(t, ids, 6, 1, &got), "not in the vocabulary");
    int n = ad_tokenizer_drop_unknown(t, ids, 6);
    CHECK(n == 3 && ids[0] == 9707 && ids[1] == 11 && ids[2] == 1879);
    CHECK_OK(ad_tokenizer_decode(t, ids, n, 1, &got));
    CHECK(want && got && strcmp(want, got) == 0);
    free(want), free(got);
}

static void test_long_run_speed(ad_tokenizer *t) {
    const size_t n = 300000;
    char *s = malloc(n);
    unsigned seed = (unsigned)time(NULL);
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1103515245u + 12345u;
        s[i] = (char)('a' + (seed >> 16) % 26);
    }
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    int32_t *ids;
    int m;
    CHECK_OK(ad_tokenizer_encode(t, s, n, &ids, &m));
    clock_gettime(CLOCK_MONOTONIC, &b);
    double secs = (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec);
    CHECK_MSG(secs < 10, "%zu letters without a space took %.1f s", n, secs);
    char *back;
    size_t len;
    CHECK_OK(ad_tokenizer_decode_len(t, ids, m, 0, &back, &len));
    CHECK(len == n && memcmp(back, s, n) == 0);
    printf("long run: %zu bytes -> %d ids in %.3f s\n", n, m, secs);
    free(back);
    free(ids);
    free(s);
}

int main(void) {
    const char *r = test_ref_dir();
    snprintf(ref, sizeof ref, "%s", r);
    char dir[1100];
    snprintf(dir, sizeof dir, "%s/qwen2-tokenizer", ref);
    if (!ad_is_directory(dir))
        TEST_SKIP("%s is absent: the Qwen2 vocabulary is a shared reference file", dir);
    struct timespec a, b;
    clock_gettime(CLOCK_MONOTONIC, &a);
    ad_tokenizer *t;
    if (ad_tokenizer_load(dir, 1, &t) < 0) {
        fprintf(stderr, "%s\n", ad_error());
        return 1;
    }
    clock_gettime(CLOCK_MONOTONIC, &b);
    printf("load: %d ids in %.3f s\n", ad_tokenizer_size(t),
           (double)(b.tv_sec - a.tv_sec) + 1e-9 * (double)(b.tv_nsec - a.tv_nsec));
    CHECK(ad_tokenizer_size(t) == 151649);
    test_current = "llama.cpp";
    test_llama_cpp_vectors(t);
    test_current = "chat template";
    test_chat_template(t);
    test_current = "transformers";
    test_transformers_sentences(t);
    test_current = "transformers decode";
    test_transformers_decode(t);
    test_current = "unknown ids";
    test_unknown_ids(t);
    test_current = "long run";
    test_long_run_speed(t);
    ad_tokenizer_free(t);
    test_current = "tokenizer_config.json";
    test_config_added_tokens(dir);
    return test_report();
}
